/* The unix stream connections of a process tree whose other end is held by
 * a process outside it (a client of a local server, say): CRIU dumps such a
 * socket only when told it is external, and a restore hands it in anew. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The most such connections one tree may hold for cryo to keep it. */
#define UNIXSK_MAX_OUTSIDE 120

/* The inodes of the unix stream sockets that the tree rooted at root holds
 * and whose peer no process of the tree holds, but for skip (0: none),
 * sorted, without repeats. The sockets are looked up in the network
 * namespace netns_fd (an fd of /proc/PID/ns/net), or in ours with -1.
 * free() *ret. */
int unixsk_outside(pid_t root, int netns_fd, uint64_t skip, uint64_t **ret, size_t *ret_n);
