/* The numbers of CRIU's protobuf messages that criu-glue reads and writes by
 * hand (pb.h), in one place and named after the .proto they come from:
 * PB_<MESSAGE>_<FIELD> is the number of field <field> of message <message>,
 * PB_<ENUM>_<VALUE> a value of enum <enum>.
 *
 * Each entry of the lists below also names its .proto file (in CRIU's source,
 * images/) and spells the message and field as the file does, so that
 * tests/unit/test-criu-proto.c can check every number against the .proto
 * files of the CRIU in use (scripts/setup installs them in
 * /usr/local/share/cryo/criu-proto). A number read or written by hand is
 * added here, under its file, and used by its name. Internal to criu-glue. */
#pragma once

/* X(MESSAGE, FIELD, "file.proto", "message", "field", number) */
#define PB_FIELDS(X)                                                                               \
	/* pstree.proto: the process tree (inspect.c) */                                           \
	X(PSTREE_ENTRY, PID, "pstree.proto", "pstree_entry", "pid", 1)                             \
	X(PSTREE_ENTRY, PPID, "pstree.proto", "pstree_entry", "ppid", 2)                           \
	X(PSTREE_ENTRY, PGID, "pstree.proto", "pstree_entry", "pgid", 3)                           \
	X(PSTREE_ENTRY, SID, "pstree.proto", "pstree_entry", "sid", 4)                             \
	X(PSTREE_ENTRY, THREADS, "pstree.proto", "pstree_entry", "threads", 5)                     \
	/* core.proto: a task's comm (inspect.c) */                                                \
	X(CORE_ENTRY, TC, "core.proto", "core_entry", "tc", 3)                                     \
	X(TASK_CORE_ENTRY, COMM, "core.proto", "task_core_entry", "comm", 6)                       \
	/* fdinfo.proto: files.img, one file_entry per open file (inspect.c, glue.c) */            \
	X(FILE_ENTRY, TYPE, "fdinfo.proto", "file_entry", "type", 1)                               \
	X(FILE_ENTRY, REG, "fdinfo.proto", "file_entry", "reg", 3)                                 \
	X(FILE_ENTRY, ISK, "fdinfo.proto", "file_entry", "isk", 4)                                 \
	X(FILE_ENTRY, NSF, "fdinfo.proto", "file_entry", "nsf", 5)                                 \
	X(FILE_ENTRY, TFD, "fdinfo.proto", "file_entry", "tfd", 12)                                \
	X(FILE_ENTRY, USK, "fdinfo.proto", "file_entry", "usk", 16)                                \
	/* regfile.proto (inspect.c, preflight.c, remap.c) */                                      \
	X(REG_FILE_ENTRY, ID, "regfile.proto", "reg_file_entry", "id", 1)                          \
	X(REG_FILE_ENTRY, POS, "regfile.proto", "reg_file_entry", "pos", 3)                        \
	X(REG_FILE_ENTRY, NAME, "regfile.proto", "reg_file_entry", "name", 6)                      \
	/* remap-file-path.proto: remap-fpath.img, how CRIU reaches unlinked files (remap.c) */    \
	X(REMAP_FILE_PATH_ENTRY, ORIG_ID, "remap-file-path.proto", "remap_file_path_entry",        \
	  "orig_id", 1)                                                                            \
	X(REMAP_FILE_PATH_ENTRY, REMAP_ID, "remap-file-path.proto", "remap_file_path_entry",       \
	  "remap_id", 2)                                                                           \
	X(REMAP_FILE_PATH_ENTRY, REMAP_TYPE, "remap-file-path.proto", "remap_file_path_entry",     \
	  "remap_type", 3)                                                                         \
	/* mnt.proto: mountpoints-N.img, a mount namespace's mounts (mounts.c) */                  \
	X(MNT_ENTRY, MNT_ID, "mnt.proto", "mnt_entry", "mnt_id", 2)                                \
	X(MNT_ENTRY, PARENT_MNT_ID, "mnt.proto", "mnt_entry", "parent_mnt_id", 4)                  \
	X(MNT_ENTRY, MOUNTPOINT, "mnt.proto", "mnt_entry", "mountpoint", 7)                        \
	X(MNT_ENTRY, SOURCE, "mnt.proto", "mnt_entry", "source", 8)                                \
	X(MNT_ENTRY, EXT_KEY, "mnt.proto", "mnt_entry", "ext_key", 18)                             \
	/* sk-inet.proto (inspect.c) */                                                            \
	X(INET_SK_ENTRY, FAMILY, "sk-inet.proto", "inet_sk_entry", "family", 3)                    \
	X(INET_SK_ENTRY, TYPE, "sk-inet.proto", "inet_sk_entry", "type", 4)                        \
	X(INET_SK_ENTRY, STATE, "sk-inet.proto", "inet_sk_entry", "state", 6)                      \
	X(INET_SK_ENTRY, SRC_PORT, "sk-inet.proto", "inet_sk_entry", "src_port", 7)                \
	X(INET_SK_ENTRY, DST_PORT, "sk-inet.proto", "inet_sk_entry", "dst_port", 8)                \
	X(INET_SK_ENTRY, SRC_ADDR, "sk-inet.proto", "inet_sk_entry", "src_addr", 11)               \
	X(INET_SK_ENTRY, DST_ADDR, "sk-inet.proto", "inet_sk_entry", "dst_addr", 12)               \
	/* sk-unix.proto (inspect.c) */                                                            \
	X(UNIX_SK_ENTRY, TYPE, "sk-unix.proto", "unix_sk_entry", "type", 3)                        \
	X(UNIX_SK_ENTRY, STATE, "sk-unix.proto", "unix_sk_entry", "state", 4)                      \
	X(UNIX_SK_ENTRY, PEER, "sk-unix.proto", "unix_sk_entry", "peer", 8)                        \
	X(UNIX_SK_ENTRY, NAME, "sk-unix.proto", "unix_sk_entry", "name", 11)                       \
	/* timerfd.proto: a timer's value and interval (glue.c mends pending periodic timers) */   \
	X(TIMERFD_ENTRY, VSEC, "timerfd.proto", "timerfd_entry", "vsec", 7)                        \
	X(TIMERFD_ENTRY, VNSEC, "timerfd.proto", "timerfd_entry", "vnsec", 8)                      \
	X(TIMERFD_ENTRY, ISEC, "timerfd.proto", "timerfd_entry", "isec", 9)                        \
	X(TIMERFD_ENTRY, INSEC, "timerfd.proto", "timerfd_entry", "insec", 10)                     \
	/* stats.proto: stats-dump, the times of a dump (glue.c) */                                \
	X(STATS_ENTRY, DUMP, "stats.proto", "stats_entry", "dump", 1)                              \
	X(DUMP_STATS_ENTRY, FREEZING_TIME, "stats.proto", "dump_stats_entry", "freezing_time", 1)  \
	X(DUMP_STATS_ENTRY, FROZEN_TIME, "stats.proto", "dump_stats_entry", "frozen_time", 2)      \
	X(DUMP_STATS_ENTRY, MEMDUMP_TIME, "stats.proto", "dump_stats_entry", "memdump_time", 3)    \
	X(DUMP_STATS_ENTRY, MEMWRITE_TIME, "stats.proto", "dump_stats_entry", "memwrite_time", 4)  \
	X(DUMP_STATS_ENTRY, PAGES_WRITTEN, "stats.proto", "dump_stats_entry", "pages_written", 7)  \
	/* pagemap.proto: pagemap-*.img, read (lazy.c) and written (pages.c) */                    \
	X(PAGEMAP_HEAD, PAGES_ID, "pagemap.proto", "pagemap_head", "pages_id", 1)                  \
	X(PAGEMAP_ENTRY, VADDR, "pagemap.proto", "pagemap_entry", "vaddr", 1)                      \
	X(PAGEMAP_ENTRY, COMPAT_NR_PAGES, "pagemap.proto", "pagemap_entry", "compat_nr_pages", 2)  \
	X(PAGEMAP_ENTRY, IN_PARENT, "pagemap.proto", "pagemap_entry", "in_parent", 3)              \
	X(PAGEMAP_ENTRY, FLAGS, "pagemap.proto", "pagemap_entry", "flags", 4)                      \
	X(PAGEMAP_ENTRY, NR_PAGES, "pagemap.proto", "pagemap_entry", "nr_pages", 5)                \
	/* mm.proto and vma.proto: a task's memory areas (lazy.c) */                               \
	X(MM_ENTRY, VMAS, "mm.proto", "mm_entry", "vmas", 14)                                      \
	X(VMA_ENTRY, START, "vma.proto", "vma_entry", "start", 1)                                  \
	X(VMA_ENTRY, END, "vma.proto", "vma_entry", "end", 2)

/* X(ENUM, VALUE, "file.proto", "enum", "VALUE", number) */
#define PB_ENUM_VALUES(X)                                                                          \
	/* fdinfo.proto: file_entry.type (inspect.c names the kinds of file) */                    \
	X(FD_TYPES, PIPE, "fdinfo.proto", "fd_types", "PIPE", 2)                                   \
	X(FD_TYPES, FIFO, "fdinfo.proto", "fd_types", "FIFO", 3)                                   \
	X(FD_TYPES, EVENTFD, "fdinfo.proto", "fd_types", "EVENTFD", 6)                             \
	X(FD_TYPES, EVENTPOLL, "fdinfo.proto", "fd_types", "EVENTPOLL", 7)                         \
	X(FD_TYPES, INOTIFY, "fdinfo.proto", "fd_types", "INOTIFY", 8)                             \
	X(FD_TYPES, SIGNALFD, "fdinfo.proto", "fd_types", "SIGNALFD", 9)                           \
	X(FD_TYPES, PACKETSK, "fdinfo.proto", "fd_types", "PACKETSK", 10)                          \
	X(FD_TYPES, TTY, "fdinfo.proto", "fd_types", "TTY", 11)                                    \
	X(FD_TYPES, FANOTIFY, "fdinfo.proto", "fd_types", "FANOTIFY", 12)                          \
	X(FD_TYPES, NETLINKSK, "fdinfo.proto", "fd_types", "NETLINKSK", 13)                        \
	X(FD_TYPES, NS, "fdinfo.proto", "fd_types", "NS", 14)                                      \
	X(FD_TYPES, TUNF, "fdinfo.proto", "fd_types", "TUNF", 15)                                  \
	X(FD_TYPES, EXT, "fdinfo.proto", "fd_types", "EXT", 16)                                    \
	X(FD_TYPES, TIMERFD, "fdinfo.proto", "fd_types", "TIMERFD", 17)                            \
	X(FD_TYPES, MEMFD, "fdinfo.proto", "fd_types", "MEMFD", 18)                                \
	X(FD_TYPES, BPFMAP, "fdinfo.proto", "fd_types", "BPFMAP", 19)                              \
	X(FD_TYPES, PIDFD, "fdinfo.proto", "fd_types", "PIDFD", 20)                                \
	/* remap-file-path.proto: remap_file_path_entry.remap_type (remap.c) */                    \
	X(REMAP_TYPE, LINKED, "remap-file-path.proto", "remap_type", "LINKED", 0)                  \
	X(REMAP_TYPE, GHOST, "remap-file-path.proto", "remap_type", "GHOST", 1)

/* The names themselves, made from the lists (as enum constants: a macro
 * cannot define macros). */
#define PB_FIELD_CONSTANT(msg, field, file, msg_name, field_name, number)                          \
	PB_##msg##_##field = number,
enum { PB_FIELDS(PB_FIELD_CONSTANT) };
enum { PB_ENUM_VALUES(PB_FIELD_CONSTANT) };
#undef PB_FIELD_CONSTANT
