/* Small helpers shared by every layer: whole-buffer I/O, durable files,
 * directories and number parsing. All return 0 or a negative errno. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Writes all of buf, retrying on EINTR and short writes. */
int util_write_all(int fd, const void *buf, size_t len);

/* Reads exactly len bytes; -EIO if the file ends first (a truncation). */
int util_read_exact(int fd, void *buf, size_t len);

/* Copies the first len bytes of file src to the start of file dst
 * (copy_file_range, else read and write); -EIO if src ends first. */
int util_copy_bytes(int src, int dst, uint64_t len);

/* Reads a whole small file into a NUL-terminated heap buffer. */
int util_read_file(const char *path, char **ret, size_t *ret_len);

/* Writes path atomically: a temporary file beside it, fsync, rename, fsync of
 * the directory. */
int util_write_file_atomic(const char *path, const void *buf, size_t len);

/* Replaces file name in directory dfd with buf: written to name.tmp, made
 * anew (whatever had that name, a symbolic link included, is removed first,
 * and the file is created with O_EXCL | O_NOFOLLOW), then renamed over name.
 * With durable, the file and the directory are fsynced. */
int util_write_file_at(int dfd, const char *name, const void *buf, size_t len, mode_t mode,
                       bool durable);

/* fsyncs the directory that holds path (or path itself if it is one). */
int util_fsync_dir(const char *dir);

/* mkdir -p with mode 0700 for new directories. */
int util_mkdir_p(const char *path);

struct cryo_error;

/* Whether directory path (absolute, without symbolic links: a realpath()) is
 * one only root and this user can change: it and every directory above it
 * owned by root or the effective user, none writable by group or others
 * except a parent with the sticky bit (as /tmp); path itself may be sticky
 * only with sticky_ok. -EPERM (or the error of lstat) with the directory
 * at fault and the command that fixes it in err. */
int util_check_trusted_dir(const char *path, bool sticky_ok, struct cryo_error *err);

/* rm -rf of a directory tree that cryo created; symlinks are not followed. */
int util_rm_rf(const char *path);

/* Parses "500ms", "30s", "5m", "2h" or a bare number of seconds into
 * nanoseconds. */
int util_parse_duration(const char *s, uint64_t *ret_ns);

/* Parses a size in bytes: a whole number, bare or with K, M or G (or KiB,
 * MiB, GiB: powers of 1024). */
int util_parse_size(const char *s, uint64_t *ret);

/* Parses a non-negative decimal integer that fits in max. */
int util_parse_uint(const char *s, uint64_t max, uint64_t *ret);

/* CLOCK_MONOTONIC and CLOCK_REALTIME in nanoseconds. */
uint64_t util_now_ns(void);
uint64_t util_realtime_ns(void);

/* MemAvailable from /proc/meminfo, in bytes (0 if unknown). */
uint64_t util_mem_available(void);

/* The PIDs of root and its descendants (children of any of their threads),
 * root first, parents before children; at most 4096. free() *ret. */
int util_proc_tree(pid_t root, pid_t **ret, size_t *ret_n);

/* Makes a fresh directory for bytes of scratch data: in memory, as
 * /dev/shm/cryo-TAG-PID-XXXXXX, when they fit comfortably there and in RAM,
 * else fallback (emptied and made anew). The path goes into dir. */
int util_scratch_dir(uint64_t bytes, const char *tag, const char *fallback, char *dir, size_t len);

/* Removes the scratch directories in /dev/shm of processes that are gone (a
 * supervisor killed in the middle of a dump, a restore or an arrival), of
 * those owned by the effective user only. */
void util_scratch_sweep(void);

/* Maps the regular file name (relative to dfd) read-only into *data, its
 * size into *len; an empty file maps to NULL. munmap() it when done. */
int util_map_file(int dfd, const char *name, void **data, size_t *len);

/* The same for an open file. */
int util_map_fd(int fd, void **data, size_t *len);

/* The inode of an open fd (st_ino), or 0. */
uint64_t util_fd_inode(int fd);

/* Formats a path into buf (len bytes); -ENAMETOOLONG when it does not fit,
 * and buf must not be used then. */
int util_format_path(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats a byte count as "12.3 MiB" into buf. */
const char *util_format_bytes(uint64_t bytes, char *buf, size_t len);

/* Valid workload name: [A-Za-z0-9._-], 1-64 chars, not starting with '.' or
 * '-'. */
bool util_name_is_valid(const char *name);
