/* What the supervisor's files share (runtime/supervisor/): its state, and
 * the functions one file offers the others. Not for use outside. */
#pragma once

#include "../supervisor.h"
#include "archive.h"
#include "delta.h"
#include "glue.h"
#include "json.h"
#include "pages.h"
#include "protocol.h"
#include "unixsk.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>

/* epoll tags */
enum {
	EV_SIGNAL = 1,
	EV_CONTROL,
	EV_STDOUT,
	EV_STDERR,
	EV_STDIN,
	EV_STDIN_PIPE,
	EV_TIMER,
	EV_COMMANDS,
	EV_LAZY,           /* the lazy pages are all in place, or cannot be */
	EV_LAZY_CHECKED,   /* the memory is checked */
	EV_STDOUT_OUT,     /* our own stdout takes more */
	EV_STDERR_OUT,     /* our own stderr takes more */
	EV_LEASE,          /* --lease: the lease is lost */
	EV_SYNCED,         /* --store-sync: the store took more generations */
	EV_CLIENT = 0x100, /* + the slot of a client of the commands socket */
};

/* Clients of the commands socket served at once; one more is told so. */
#define COMMANDS_MAX_CLIENTS 32

/* A client of the commands socket: its request as it arrives, and its reply
 * (with a migration's progress lines) as its socket takes it. Nothing waits
 * for a client: one that says nothing for COMMANDS_IDLE_NS, or lets more
 * than COMMANDS_OUT_MAX of reply pile up, is dropped. */
#define COMMANDS_IDLE_NS (10 * UINT64_C(1000000000))
#define COMMANDS_OUT_MAX (1u << 20)
struct client {
	struct supervisor *s;
	int fd;
	unsigned slot;
	bool answered; /* its request was handled: it goes once its reply is out */
	bool dropped;  /* gone or dropped: what is still sent to it goes nowhere */
	bool deferred; /* its reply waits for the store (--store-sync) */
	uint64_t deadline_ns;
	size_t in_len;
	char *out;
	size_t out_len, out_off, out_cap;
	char in[PATH_MAX + 512];
};

/* Our own stdout or stderr, where the program's output goes (and our log
 * lines, on stderr). Nothing waits for its reader: what it does not take now
 * waits in buf, and while buf is full the program's pipe is not read, so a
 * slow reader slows the program (its pipe fills), never the loop. */
#define OUTBUF_SIZE (256u * 1024)
struct outbuf {
	int fd;         /* ours: a description of our own, non-blocking where it can wait */
	bool pollable;  /* a pipe, terminal or socket: EAGAIN waits for EPOLLOUT */
	bool is_socket; /* sent with MSG_DONTWAIT (its description cannot be our own) */
	bool broken;    /* the reader went away: output goes nowhere */
	bool watched;   /* in the epoll set */
	char *buf;
	size_t off, len; /* what waits: buf[off, len) */
};

struct last_checkpoint {
	uint64_t generation;
	uint64_t time_ns; /* CLOCK_REALTIME */
	uint64_t size;
	uint64_t raw_size;
	uint64_t frozen_us;
	uint64_t duration_ns;
	enum checkpoint_trigger trigger;
};

/* What the supervisor keeps of the held files from one checkpoint to the
 * next, for the next to store only the blocks that changed: the hash of
 * each 4 KiB block of each file's copy in generation `generation`, and the
 * memory their blocks are read through, kept (touched once; fresh memory
 * costs ~5 us a page on these VMs, inside the freeze). */
struct held_blocks {
	char *path;
	dev_t dev;
	ino_t ino;
	uint64_t size;
	size_t index;                    /* its file-INDEX.data in that generation */
	struct page_hash *hashes, *next; /* next: the following capture's, filled in */
	size_t cap, next_cap;            /* blocks they have room for */
};
struct files_memory {
	uint64_t generation; /* 0: none */
	struct held_blocks *files;
	size_t n;
	uint8_t *buf, *buf2, *out; /* reading (two threads) and writing, FILES_BUF_SIZE each */
};
#define FILES_BUF_SIZE (1u << 20)

struct supervisor {
	const struct supervisor_config *cfg;
	int epfd, sigfd, timerfd, commands_fd;
	/* cfg->paths.dir, opened once: the pid file and status.json are made
	 * in it with openat(), never through a link. */
	int dir_fd;
	struct client *clients[COMMANDS_MAX_CLIENTS];

	/* The last stored checkpoint's dump files, being removed. */
	pthread_t remover;
	bool removing;

	/* The running tree: the namespace's init (our child) and the program. */
	pid_t init_pid;
	bool running;
	bool stopping; /* we asked it to end: do not restore */
	bool leave;    /* the program moved away: the supervisor ends */

	/* Our ends of the program's stdio and control socket, and the inodes
	 * of the program's ends, which its next image will refer to. */
	int stdin_w, stdout_r, stderr_r, control;
	uint64_t ino_stdin, ino_stdout, ino_stderr, ino_control;
	bool stdin_pollable, stdin_eof;
	bool stdin_tty;        /* a terminal: read only while we are in its foreground */
	bool stdin_background; /* ... and we are not now */
	struct outbuf out[2];  /* our stdout and stderr */
	char stdin_buf[65536];
	size_t stdin_len, stdin_off;
	char control_buf[sizeof(struct cryo_msg)];
	size_t control_len;

	uint64_t min_generation; /* older ones belong to an earlier run (--fresh) */
	unsigned restarts_in_a_row;
	unsigned restarts_total;
	uint64_t current_generation; /* last taken or restored */
	uint64_t last_attempted;     /* last generation number handed out */
	/* The page index of the newest generation, the base of the next
	 * incremental one, and how many incremental ones lead to it. */
	struct page_index *index;
	unsigned chain;
	/* The held files' blocks in the newest generation (files.c). */
	struct files_memory held;
	/* The page server's memory, kept from one checkpoint to the next
	 * while the program runs (see criu-glue/pages.h). */
	struct criu_glue_spare spare;
	/* The write tracking between dumps (criu-glue/pages.h). */
	struct criu_glue_track track;
	/* The page hashes of the last checkpoint's memory images, by file:
	 * the next one does not hash again the pages it shares with it. */
	struct page_hashes {
		char name[64];
		struct page_hash *hashes;
		size_t n;
	} * hashes;
	size_t n_hashes;
	/* The archive writer's contexts and memory, likewise. */
	struct image_writer *writer;
	struct last_checkpoint last;
	bool have_last;
	int criu_version;
	struct net_ns net;  /* with --net: the namespace the program lives in */
	char moved_to[128]; /* where cryo migrate sent the program */
	char cwd[PATH_MAX]; /* the program's working directory, as last read */
	const char *state;  /* "running", "checkpointing", "restoring", "stopped", "failed" */
	struct lazy_restore *lazy; /* the memory of a lazy restore, still coming */
	struct standby *standby;   /* the next restore, made ready */
	int ready_fd;              /* cfg->ready_fd until it is told */
	struct uploader *uploader; /* --store: the thread that copies generations */
	struct lease *lease;       /* --lease: its keeper */
	int sync_fd;               /* --store-sync: the uploader wakes the loop (EV_SYNCED) */
	struct sync_waits *sync;   /* --store-sync: the news waiting for the store */
};

/* The program's ends of a new set of stdio pipes and control socket. They go
 * to the program (fork, dup2) or to CRIU (inherit-fd: posix_spawn's dup2
 * passes them whether O_CLOEXEC or not; a standby's are, so that nothing
 * else inherits them). */
struct program_ends {
	int fds[4]; /* stdin (read end), stdout, stderr (write ends), control */
};

struct standby;      /* standby.c */
struct lazy_restore; /* restore-lazy.c */
struct channel;
struct page_index;

static inline void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static inline int ep_add(struct supervisor *s, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = {.events = events, .data.u64 = tag};
	return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static inline void ep_mod(struct supervisor *s, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = {.events = events, .data.u64 = tag};
	epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
}

static inline void ep_del(struct supervisor *s, int fd)
{
	if (fd >= 0)
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
}

/* The files, each using only those above it. */

/* ---- channels.c: the program's stdio pipes and control socket ---- */

/* Closes the program's ends (those not handed over yet). */
void program_ends_close(struct program_ends *e);

/* A new set of stdio pipes and control socket: ours (stdin's write end,
 * stdout's and stderr's read ends, control: O_CLOEXEC, non-blocking) and
 * the program's. */
int channels_new(struct supervisor *s, int ours[4], struct program_ends *e);

/* Makes ours the channels to the program whose ends are e. */
void channels_use(struct supervisor *s, const int ours[4], const struct program_ends *e);

/* A new set of channels, ours in use at once (a fresh start). */
int channels_make(struct supervisor *s, struct program_ends *e);

/* Puts our ends of the channels in the loop's epoll set. */
void channels_watch(struct supervisor *s);

/* Our stdout and stderr for the program's output and our log lines, never
 * waiting for their readers; and at the end, what is left of them goes out
 * (within a deadline). */
int channels_output_open(struct supervisor *s);
void channels_output_close(struct supervisor *s);

/* The program's stdout (which 0) or stderr (1) is readable: into our buffer
 * as far as it has room, and on to ours. */
void channels_forward(struct supervisor *s, int which);

/* Our stdout (0) or stderr (1) takes more. */
void channels_output_ready(struct supervisor *s, int which);

/* Whether cryo's terminal is ours to read now (we are in its foreground);
 * rechecked every second while it is not, and on SIGCONT. */
void channels_stdin_check(struct supervisor *s);

/* Reads the rest of a dead program's output, then closes our ends. */
void channels_drain(struct supervisor *s);

/* Moves what cryo run's stdin has to the program's, as far as the pipe
 * takes it; at our EOF the program's stdin ends too. */
void channels_pump_stdin(struct supervisor *s);

/* Sends a message on the program's control socket (a result, or the news
 * that an image is durable); a program that does not read loses it. */
void program_send(struct supervisor *s, uint32_t type, int64_t value, uint64_t generation);

/* ---- status.c: what the supervisor publishes and replies ---- */

/* The program's host PID: cryo-init's one child; 0 while there is none. */
pid_t program_pid(const struct supervisor *s);

/* The program's host PID goes into dir/pid while it runs under this
 * supervisor, for people and tests; it takes a moment for cryo-init to fork
 * it. program_unpublish_pid() removes the file when the program ends, moves
 * away or the supervisor leaves, so that a PID read there is never one the
 * kernel has handed to another process since. */
void program_publish_pid(struct supervisor *s);
void program_unpublish_pid(struct supervisor *s);

/* Sends o as one line to a client of the commands socket, and drops o. It
 * never waits: what the client's socket does not take now is sent as it
 * reads (commands_send()). */
void status_reply(struct client *c, struct json_object *o);

/* Replies {"ok":false,"errno":-r,"error":reason}. */
void status_reply_error(struct client *c, int r, const char *reason);

/* Replies {"ok":true}. */
void status_reply_ok(struct client *c);

/* The supervisor's view of its workload as one JSON object. */
struct json_object *status_json(struct supervisor *s);

/* Sets the workload's state and publishes it in dir/status.json, where
 * cryo status reads it without waiting for a busy supervisor. */
void supervisor_set_state(struct supervisor *s, const char *state);

/* ---- program.c: starting and stopping the program ---- */

/* Whether the program has ended (or its init has), though the loop has not
 * handled its end yet: a checkpoint that failed meanwhile failed for that. */
bool program_gone(const struct supervisor *s);

/* Starts the program afresh: a new PID namespace whose init is cryo-init,
 * with its channels, its network and CRYO_CONTROL_FD set. */
int program_start(struct supervisor *s);

/* Stops the program with sig, for good: no restore follows its end. */
void supervisor_request_stop(struct supervisor *s, int sig);

/* ---- standby.c: a restore's CRIU, and the next one made ready ---- */

/* Where a generation is extracted for CRIU to read: memory (/dev/shm) when
 * its raw images fit comfortably there and in RAM, else beside the images. */
int restore_make_dir(struct supervisor *s, uint64_t gen, char *dir, size_t len);

/* The inodes a restore hands in anew: the program's stdin, stdout, stderr
 * and control socket, and its unix stream connections to processes outside
 * the workload (unixsk.h), as they were when the image was taken. */
struct program_inodes {
	uint64_t std[4];
	uint64_t outside[UNIXSK_MAX_OUTSIDE];
	size_t n_outside;
};

/* The manifest's key for the connections to processes outside: their
 * inodes, separated by spaces. */
#define MANIFEST_UNIX_OUTSIDE "unix.outside"

/* A checkpoint's inodes (checkpoint_fill_manifest(), MANIFEST_UNIX_OUTSIDE). */
void restore_manifest_inodes(const struct manifest *m, struct program_inodes *ino);

/* Ends a standby's CRIU and closes what it held. */
void standby_free(struct standby *sb);

/* Makes the next restore ready, unless it is or no restore is to come. */
void standby_prepare(struct supervisor *s);

/* Restores the images in dir, described by manifest m: the inodes its stdio,
 * control socket and unix connections to processes outside had (those
 * connections come back ended: the program reads their end, a client
 * reconnects), and the files it held, put back first (files.c). The
 * program becomes our child. With
 * tcp_established its connections come back open (a migration), else closed
 * (after a crash, the peers have moved on). With lazy (a lazy restore's page
 * server) the memory follows; a failure of lazy gives the restore up
 * (-ECANCELED). A stop asked for meanwhile (SIGTERM, SIGINT, SIGHUP) gives it
 * up too (-EINTR); nothing of a restore that failed is left running. err
 * gets CRIU's reason. */
int restore_dir(struct supervisor *s, const char *dir, const struct manifest *m,
                bool tcp_established, struct criu_glue_lazy *lazy, struct cryo_error *err);

/* ---- files.c: the files the program holds open for writing ---- */

/* One file held open for writing without O_APPEND. */
struct held_file {
	char *path;
	uint64_t size;
	dev_t dev;
	ino_t ino;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	/* With a files_memory: what file-N.data holds (stored bytes: the
	 * whole file, or a delta against base_index's copy in the base), and
	 * the hash of each block (owned by this capture: a whole copy's, made
	 * after the freeze; borrowed from the files_memory: a delta's). */
	uint64_t stored;
	bool delta;
	size_t base_index;
	uint8_t digest[16];
	struct page_hash *hashes;
	bool own_hashes;
};

/* What a checkpoint copies of them (the argument of files_capture()). */
struct files_capture {
	pid_t root;         /* the tree's root */
	const char *images; /* the dump's directory: file-N.data go there; NULL: listed only */
	uint64_t max;       /* the most bytes copied in all (--files-max) */
	/* Its --files-copy and --files-skip; NULL: every file. */
	const struct supervisor_config *policy;
	struct held_file *files;
	size_t n;
	uint64_t total;
	int images_fd; /* while capturing */
	/* NULL: every file copied whole (a migration). Else a file whose copy
	 * in generation base (mem's, the memory's base too) is known by the
	 * same path, device and inode is stored as the blocks that differ
	 * from it. */
	struct files_memory *mem;
	uint64_t base;
};

/* A criu_glue_frozen_hook: copies each regular file the tree rooted at
 * fc->root holds open for writing without O_APPEND (but those fc->policy
 * leaves out: all with --files-copy none, those under a --files-skip path)
 * into fc->images as file-N.data (whole, or with fc->mem as said there the
 * blocks changed), and lists them in fc. -EFBIG (err names the file and
 * --files-max) past fc->max bytes (of the files' sizes, whatever is stored
 * of them). */
int files_capture(void *fc, struct cryo_error *err);
void files_capture_clear(struct files_capture *fc);

/* After the freeze, with fc->mem: hashes the blocks of each file copied
 * whole, for the next checkpoint. Whether any file is stored as a delta
 * (the generation must then be built on fc->base) in *deltas. */
int files_capture_finish(struct files_capture *fc, bool *deltas, struct cryo_error *err);

/* Once generation gen is stored: fc's blocks become mem's, the base of
 * the next checkpoint. */
void files_memory_take(struct files_memory *mem, struct files_capture *fc, uint64_t gen);
/* Forgets every file (after the program's end: a restore starts whole). */
void files_memory_forget(struct files_memory *mem);
void files_memory_free(struct files_memory *mem);

/* Lists the files captured in manifest m ("held_file" lines, and a
 * "file_delta" line for each stored as a delta: images/delta.h). */
int files_describe(const struct files_capture *fc, struct manifest *m);

/* Parses a "held_file" value; ret->path points into value. */
int files_parse(const char *value, struct held_file *ret, size_t *index);

/* Puts back every file manifest m lists, from its copy in images, exactly
 * (content, size, mode, owner) at its path, before CRIU reopens it there. */
int files_restore(const struct manifest *m, const char *images, struct cryo_error *err);

/* ---- restore-lazy.c: a restore whose memory follows ---- */

/* The pages are in place (or cannot be): what the glue says, then the
 * memory's check in a thread (its end comes as EV_LAZY_CHECKED). */
void lazy_check_start(struct supervisor *s);

/* Ends the lazy restore in progress, if any. Without abort, once the pages
 * are in place: waits for the memory's check; if not all the memory came, or
 * intact, the program cannot run on (what never came reads as zeros) and is
 * killed, to be restored again. With abort: the program is gone already. */
int lazy_end(struct supervisor *s, bool abort);

/* Before anything dumps the program: its memory must be all there. */
int lazy_settle(struct supervisor *s, struct cryo_error *err);

/* Restores generation gen with its memory to follow (from the generations
 * it is built on too, if it is incremental). Returns 0, or -EBADMSG for a
 * damaged image, or -EAGAIN when it is not to be restored this way (an
 * image of format 1 or without its eager pages, a lazy-pages socket that
 * cannot be set up): the caller restores it in full. */
int restore_lazily(struct supervisor *s, uint64_t gen);

/* ---- restore.c: choosing the generation to restore ---- */

/* Whether a generation this run may restore is stored (after cryo run
 * --fresh, one of this run's). */
bool restore_has_generation(struct supervisor *s);

/* Restores the newest intact generation (or cfg->resume_generation), falling
 * back to older ones. Returns -ENOENT when there is none. */
int restore_newest(struct supervisor *s, uint64_t only);

/* ---- checkpoint.c: checkpoints ---- */

/* What a generation's manifest says besides its files: the workload, the
 * program, the machine, and the inodes of the program's channels, which the
 * restore must give back. */
void checkpoint_fill_manifest(struct supervisor *s, struct manifest *m, uint64_t gen,
                              enum checkpoint_trigger trigger,
                              const struct criu_glue_dump_stats *st);

/* How the program is dumped into images: its control socket's and network
 * namespace's other ends stay outside. With move_connections (a migration's
 * frozen dump) its TCP connections are dumped to come back open, without a
 * CRIU network lock when it has its own namespace (held off the network
 * meanwhile); else CRIU leaves them untouched and a restore brings them back
 * closed (CRIU's --tcp-close). */
struct criu_glue_dump_opts checkpoint_dump_opts(struct supervisor *s, const char *images,
                                                bool leave_running, bool move_connections);

/* Waits for the last checkpoint's remover thread, if one runs. */
void checkpoint_remove_wait(struct supervisor *s);

/* Checkpoints the running program. On any failure the program runs on and
 * the stored generations are as they were. Returns the new generation, or a
 * negative errno with the reason in err.
 * With early_reply (cryo_checkpoint_async()), the program is told RESULT 0 as
 * soon as it has been dumped, and *replied says whether that happened. */
/* Forgets the last checkpoint's page hashes (the program is gone). */
void checkpoint_forget_hashes(struct supervisor *s);
int64_t checkpoint_take(struct supervisor *s, enum checkpoint_trigger trigger, bool early_reply,
                        bool *replied, struct cryo_error *err);

/* Logs a stored checkpoint: at info, or at debug (--verbose) for a periodic
 * one and for one whose command was told (told: cryo checkpoint or cryo stop
 * --checkpoint got the reply and prints it, so that each checkpoint is
 * reported once on a terminal that shows both). */
void checkpoint_log(struct supervisor *s, enum checkpoint_trigger trigger, bool told);

/* Answers the program's request on its control socket (cryo_checkpoint()
 * or cryo_checkpoint_async()): one per turn of the loop. */
void checkpoint_handle_control(struct supervisor *s);

/* ---- migrate-out.c: cryo migrate, the source ---- */

/* cryo migrate: moves the program to the cryo serve at target. On any
 * failure before the target runs it, the program runs here again. */
void migrate_out(struct supervisor *s, struct client *client, const char *target,
                 const char *key_file, bool with_precopy);

/* ---- migrate-in.c: cryo serve, the target ---- */

/* A copy that arrived by migration: restores it from the images extracted
 * on arrival, tells the source it runs once its archive is durable here, and
 * waits for the source's go-ahead before joining the network. */
int migrate_arrive(struct supervisor *s);

/* ---- commands.c: the commands socket ---- */

/* Listens on the commands socket, without waiting for anyone. */
int commands_listen(struct supervisor *s);

/* Accepts the clients waiting on the commands socket. */
void commands_accept(struct supervisor *s);

/* A client's socket is ready (events from epoll): reads its request and
 * handles it once it is whole, or sends more of its reply. */
void commands_client_event(struct supervisor *s, unsigned slot, uint32_t events);

/* Queues len bytes for client c and sends what its socket takes now. */
void commands_send(struct client *c, const char *buf, size_t len);

/* Milliseconds until the first client's deadline (for epoll_wait), -1 for
 * none; and drops the clients past theirs. */
int commands_timeout_ms(struct supervisor *s);
void commands_expire(struct supervisor *s);

/* The supervisor ends: what its socket takes now goes to each client, and
 * the clients go. */
void commands_close_all(struct supervisor *s);

/* fetch.c: store_fetch_into() for this supervisor's workload. */
int64_t store_fetch(struct supervisor *s, uint64_t upto, struct cryo_error *err);

/* upload.c: with --store, a thread copies each durable generation to the
 * object store and deletes the pruned ones there. upload_start() does
 * nothing without --store; upload_wake() tells the thread that the local
 * store changed (it never waits); upload_stop() gives the thread a last pass
 * within a deadline, false if it had to leave it behind. */
struct cryo_error;
int upload_start(struct supervisor *s, struct cryo_error *err);
void upload_wake(struct supervisor *s);
bool upload_stop(struct supervisor *s);
/* The newest generation the store holds with every generation it is built
 * on (with --lease: published); 0 for none. Any thread. */
uint64_t upload_synced(struct supervisor *s);

/* store-sync.c: with --store-sync, a checkpoint's news of durability waits
 * until upload_synced() reaches its generation, STORE_SYNC_NS at most (then
 * it is a failure, -ETIMEDOUT). store_sync_start() does nothing without
 * --store-sync (call it before upload_start()). store_sync_program() and
 * store_sync_client() keep the news for the program (async: DURABLE, else
 * RESULT) or for client c (reply, owned from then on), and return false
 * without --store-sync (send it now). store_sync_check() sends what may go
 * (on EV_SYNCED, and each turn of the loop for the deadlines, which
 * store_sync_timeout_ms() folds into epoll's timeout). */
struct sync_waits;
int store_sync_start(struct supervisor *s);
bool store_sync_program(struct supervisor *s, uint64_t gen, bool async);
bool store_sync_client(struct supervisor *s, struct client *c, uint64_t gen,
                       struct json_object *reply);
void store_sync_check(struct supervisor *s);
int store_sync_timeout_ms(struct supervisor *s, int timeout);
/* A client gone, or the program (its news go nowhere now). */
void store_sync_forget_client(struct supervisor *s, struct client *c);
void store_sync_forget_program(struct supervisor *s);
void store_sync_free(struct supervisor *s);

/* lease.c: with --lease, the workload runs only while this supervisor holds
 * its etcd lease (a keeper thread renews it; one that cannot stops the
 * program for good before the lease can expire, and wakes the loop through
 * EV_LEASE), and only the holder publishes generations.
 * lease_start() does nothing without --lease; else it takes the lease (with
 * --standby, waiting until it is free; a stop signal meanwhile: -EINTR) and
 * puts the generation last published in *published (0: none). It logs its
 * own errors. */
struct lease;
struct etcd_client;
int lease_start(struct supervisor *s, uint64_t *published);
/* The chain the published record named when the lease was taken, with its
 * ETags (none without --lease or a record). */
size_t lease_published_chain(struct supervisor *s, const struct store_expect **ret);
/* The lease is lost: the program has been killed, and must not come back. */
bool lease_lost(struct supervisor *s);
/* Why it was lost (or why renewing fails now). */
const char *lease_reason(struct supervisor *s);
/* For the uploader's thread (l NULL: no lease). Whether the lease is held
 * with the margin to spare: puts and deletes in the store are made only
 * then. */
bool lease_valid(struct lease *l);
const char *lease_url(struct lease *l);
uint64_t lease_published(struct lease *l);
/* Publishes generation gen (record: the value of the published key) through
 * c if our lease still holds the owner key; -ENOLCK (and the program
 * fenced) if it does not. */
int lease_publish(struct lease *l, struct etcd_client *c, uint64_t gen, const char *record,
                  struct cryo_error *err);
/* Stops the keeper and lets the lease go (revoked, unless lost). With
 * uploader_left, the uploader still runs and uses it: it is not freed. */
void lease_stop(struct supervisor *s, bool uploader_left);
