/* A file held in memory as a list of segments: how CRIU's page images reach
 * the image archive without being written to disk and read back. The
 * segments belong to whoever made the list. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* pages pages of a file, from page number page on, that are those of
 * another file from page number from on (a dump that shares them with the
 * one before: criu-glue/pages.h). */
struct mem_span {
	uint64_t page, from, pages;
};

struct mem_file {
	const char *name;
	const struct iovec *iov;
	size_t n_iov;
	uint64_t size; /* the sum of the segments' lengths */
};
