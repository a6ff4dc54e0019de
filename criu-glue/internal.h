/* What the files of criu-glue share among themselves. */
#pragma once

#include "glue.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* CRIU's page-server protocol (criu/page-xfer.c). Dump direction: CRIU
 * sends PS_IOV_OPEN2 per pagemap, then PS_IOV_ADD_F (flags in the command's
 * high bits) followed by the pages, and PS_IOV_CLOSE or FORCE_CLOSE, which
 * wants an int32 0 back (pages.c). */
#define PS_IOV_ADD    1
#define PS_IOV_HOLE   2
#define PS_IOV_OPEN   3
#define PS_IOV_OPEN2  4
#define PS_IOV_PARENT 5
#define PS_IOV_ADD_F  6
/* The write tracking of the image's task, a userfaultfd attached as
 * SCM_RIGHTS (CRIU with criu-glue/criu-patches/, see pages.h). */
#define PS_IOV_UFFD        8
#define PS_IOV_CLOSE       0x1023
#define PS_IOV_FORCE_CLOSE 0x1024
#define PS_CMD_BITS        16
#define PS_TYPE_PID        1
#define PS_TYPE_SHMEM      2
/* pagemap_entry flags */
#define PE_PARENT  (1u << 0)
#define PE_LAZY    (1u << 1)
#define PE_PRESENT (1u << 2)

#define PAGE_SIZE 4096u

struct ps_iov {
	uint32_t cmd;
	uint32_t pad;
	uint64_t nr_pages;
	uint64_t vaddr;
	uint64_t dst_id;
};
_Static_assert(sizeof(struct ps_iov) == 32, "CRIU's struct page_server_iov");

/* Fills err after CRIU failed at what ("dump", "restore", ...): the first
 * error line of its log log_dir/log_name, or what else is known (pid: the
 * dumped tree, to name what CRIU cannot dump; 0 if none). Returns -ENOSPC
 * when the disk is full, else -EIO. */
int criu_glue_failed(struct cryo_error *err, pid_t pid, const char *what, const char *log_dir,
                     const char *log_name);

/* The fd a lazy restore's page server writes to when it ended, well or not
 * (its notify_fd; lazy.c): criu_glue_restore() polls it, without reading. */
int criu_glue_lazy_notify_fd(const struct criu_glue_lazy *l);

/* After a dump of the tree rooted at root that left it running: whether
 * images_dir/files.img holds a file that criu_glue_find_unrestorable() would
 * have refused (opened after it looked): -EOPNOTSUPP with err naming it,
 * else 0 (preflight.c). */
int preflight_check_dumped(const char *images_dir, pid_t root, struct cryo_error *err);

/* The links CRIU makes for files unlinked while open that have another hard
 * link (link_remap.N, beside where the file was), as remap.c handles them:
 * each with the file's former name and the inode the link was on when cryo
 * saw or made it. */
struct remap_link {
	uint32_t id;     /* CRIU's file id of the link (the N of link_remap.N) */
	char *path;      /* the link */
	char *orig_path; /* the name the file had when the program opened it */
	dev_t dev;
	ino_t ino;
};

struct remap_links {
	struct remap_link *v;
	size_t n;
};

/* While CRIU holds the tree frozen after writing its images (post-dump, the
 * links there): keeps, into images_dir, the content, owner and mode of the
 * file behind each link_remap.N that CRIU's images there name, and notes
 * the links in l. 0, or a negative errno with err saying why. */
int remap_capture(const char *images_dir, struct remap_links *l, struct cryo_error *err);

/* Before a restore from images_dir: makes each link_remap.N that
 * remap_capture() kept anew, with the content, owner and mode the file had,
 * noting in l what it made. 0 (nothing to do included), or a negative errno
 * with err saying why and nothing left made. */
int remap_recreate(const char *images_dir, struct remap_links *l, struct cryo_error *err);

/* Removes each link of l still there on the inode noted (CRIU removes its
 * links after a dump that leaves the tree running and after a restore that
 * succeeds, not otherwise); with names_too (after a restore that failed, no
 * program running), also the file's former name or CRIU's stand-in
 * NAME.cr_link where CRIU left one on that inode. Then empties l. */
void remap_links_drop(struct remap_links *l, bool names_too);

/* Dumps that must take turns (dump-lock.c): CRIU's parasite makes
 * "proc.crtools" in the working directory of the tree's root unless the
 * root's /proc is one of its own PID namespace. */
bool dump_lock_own_proc(pid_t pid);

/* The locks a dump holds: its working directory's (-1: none needed or to be
 * had) and its slot among the machine's (one per CPU; -1: none to be had). */
struct dump_lock {
	int dir;
	int slot;
};

/* Before a dump of the tree rooted at root: takes the lock of root's working
 * directory unless its dump makes nothing there (root's /proc is its own),
 * then a slot. Whatever cannot be had is left out: the dump goes ahead. */
void dump_lock_take(pid_t root, struct dump_lock *l);

/* Once CRIU froze the tree: takes the directory's lock if root's /proc is no
 * longer its own (its slot given up first). */
void dump_lock_recheck(pid_t root, struct dump_lock *l);

/* Lets both go. */
void dump_lock_release(struct dump_lock *l);
