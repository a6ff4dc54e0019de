#include "supervisor.h"
#include "cleanup.h"
#include "delta.h"
#include "glue.h"
#include "lazy.h"
#include "pages.h"
#include "channel.h"
#include "migrate.h"
#include "net.h"
#include "log.h"
#include "protocol.h"
#include "store.h"
#include "chain.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <limits.h>
#include <linux/sched.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CRYO_LIBEXECDIR
#define CRYO_LIBEXECDIR "/usr/local/libexec"
#endif

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
	EV_LAZY,         /* the lazy pages are all in place, or cannot be */
	EV_LAZY_CHECKED, /* the memory is checked */
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

struct supervisor {
	const struct supervisor_config *cfg;
	int epfd, sigfd, timerfd, commands_fd;

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
	/* The page server's memory, kept from one checkpoint to the next
	 * while the program runs (see criu-glue/pages.h). */
	struct criu_glue_spare spare;
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
};

/* A lazy restore whose memory is still on its way: the archive being
 * decompressed (images), its pages put in place from it (glue). */
struct lazy_restore {
	struct image_chain *images;
	struct criu_glue_lazy *glue;
	int efd; /* eventfd: the pages are in place, then: the check is done */
	char dir[PATH_MAX];
	uint64_t gen, t0;
	/* Once the pages are in place, a thread checks the memory (all of it
	 * verified, an incremental generation's rebuilt images too, the page
	 * index built), away from the supervisor's loop. */
	pthread_t checker;
	bool checked;  /* the check began */
	bool checking; /* in checker, to be joined */
	int glue_r, check_r;
	struct cryo_error cerr;
	struct cryo_error ierr;
	struct page_index *idx;
	unsigned chain;
	uint64_t bad;
};

static int lazy_end(struct supervisor *s, bool abort);
static int lazy_settle(struct supervisor *s, char *why, size_t why_len);
static void standby_prepare(struct supervisor *s);

const char *checkpoint_trigger_name(enum checkpoint_trigger t)
{
	switch (t) {
	case TRIGGER_PROGRAM: return "program";
	case TRIGGER_COMMAND: return "command";
	case TRIGGER_TIMER: return "timer";
	case TRIGGER_STOP: return "stop";
	case TRIGGER_MIGRATE: return "migrate";
	}
	return "unknown";
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int ep_add(struct supervisor *s, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = {.events = events, .data.u64 = tag};
	return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void ep_mod(struct supervisor *s, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = {.events = events, .data.u64 = tag};
	epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
}

static void ep_del(struct supervisor *s, int fd)
{
	if (fd >= 0)
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
}

/* cryo-init is found beside the cryo binary (a build tree) or in libexec. */
static int find_init(char *buf, size_t len)
{
	const char *env = getenv("CRYO_INIT");
	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return access(buf, X_OK) == 0 ? 0 : -ENOENT;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(buf, len, "%s/cryo-init", self);
			if (access(buf, X_OK) == 0)
				return 0;
		}
	}
	snprintf(buf, len, "%s/cryo/cryo-init", CRYO_LIBEXECDIR);
	return access(buf, X_OK) == 0 ? 0 : -ENOENT;
}

/* ---- the program's pipes and socket --------------------------------------- */

/* The program's ends of a new set of stdio pipes and control socket. They go
 * to the program (fork, dup2) or to CRIU (inherit-fd: posix_spawn's dup2
 * passes them whether O_CLOEXEC or not; a standby's are, so that nothing
 * else inherits them). */
struct program_ends {
	int fds[4]; /* stdin (read end), stdout, stderr (write ends), control */
};

static void program_ends_close(struct program_ends *e)
{
	for (int i = 0; i < 4; i++)
		close_fd(&e->fds[i]);
}

/* A new set of stdio pipes and control socket: ours (stdin's write end,
 * stdout's and stderr's read ends, control: O_CLOEXEC, non-blocking) and
 * the program's. */
static int new_channels(struct supervisor *s, int ours[4], struct program_ends *e)
{
	int in[2], out[2], err[2], sp[2];
	if (pipe2(in, 0) < 0)
		return -errno;
	if (pipe2(out, 0) < 0) {
		int r = -errno;
		close(in[0]);
		close(in[1]);
		return r;
	}
	if (pipe2(err, 0) < 0 || net_socketpair(&s->net, sp) < 0) {
		int r = -errno;
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		return r;
	}
	ours[0] = in[1];
	ours[1] = out[0];
	ours[2] = err[0];
	ours[3] = sp[0];
	for (int i = 0; i < 4; i++) {
		fcntl(ours[i], F_SETFD, FD_CLOEXEC);
		fcntl(ours[i], F_SETFL, fcntl(ours[i], F_GETFL) | O_NONBLOCK);
	}
	e->fds[0] = in[0];
	e->fds[1] = out[1];
	e->fds[2] = err[1];
	e->fds[3] = sp[1];
	return 0;
}

/* Makes ours the channels to the program whose ends are e. */
static void use_channels(struct supervisor *s, const int ours[4], const struct program_ends *e)
{
	s->stdin_w = ours[0];
	s->stdout_r = ours[1];
	s->stderr_r = ours[2];
	s->control = ours[3];
	s->control_len = 0;
	s->ino_stdin = util_fd_inode(e->fds[0]);
	s->ino_stdout = util_fd_inode(e->fds[1]);
	s->ino_stderr = util_fd_inode(e->fds[2]);
	s->ino_control = util_fd_inode(e->fds[3]);
}

static int make_channels(struct supervisor *s, struct program_ends *e)
{
	int ours[4];
	int r = new_channels(s, ours, e);
	if (r == 0)
		use_channels(s, ours, e);
	return r;
}

static void update_stdin_events(struct supervisor *s);
static void set_state(struct supervisor *s, const char *state);

static void watch_channels(struct supervisor *s)
{
	ep_add(s, s->stdout_r, EPOLLIN, EV_STDOUT);
	ep_add(s, s->stderr_r, EPOLLIN, EV_STDERR);
	ep_add(s, s->control, EPOLLIN, EV_CONTROL);
	ep_add(s, s->stdin_w, 0, EV_STDIN_PIPE);
	if (s->stdin_eof && s->stdin_len == 0)
		close_fd(&s->stdin_w);
	update_stdin_events(s);
}

/* Copies what is readable on from to our own fd to. Returns false at EOF. */
static bool forward_output(int from, int to)
{
	char buf[65536];
	for (int i = 0; i < 16; i++) {
		ssize_t n = read(from, buf, sizeof(buf));
		if (n < 0)
			return errno == EAGAIN || errno == EINTR;
		if (n == 0)
			return false;
		/* Our own stdout may be gone; the program must not notice. */
		(void)util_write_all(to, buf, (size_t)n);
	}
	return true;
}

/* Reads the rest of a dead program's output, then closes our ends. */
static void drain_channels(struct supervisor *s)
{
	ep_del(s, s->stdout_r);
	ep_del(s, s->stderr_r);
	ep_del(s, s->control);
	ep_del(s, s->stdin_w);
	uint64_t deadline = util_now_ns() + 2000000000ULL;
	while ((s->stdout_r >= 0 || s->stderr_r >= 0) && util_now_ns() < deadline) {
		struct pollfd p[2] = {{.fd = s->stdout_r, .events = POLLIN},
		                      {.fd = s->stderr_r, .events = POLLIN}};
		if (poll(p, 2, 100) < 0 && errno != EINTR)
			break;
		if (p[0].revents && !forward_output(s->stdout_r, STDOUT_FILENO))
			close_fd(&s->stdout_r);
		if (p[1].revents && !forward_output(s->stderr_r, STDERR_FILENO))
			close_fd(&s->stderr_r);
	}
	close_fd(&s->stdout_r);
	close_fd(&s->stderr_r);
	close_fd(&s->control);
	close_fd(&s->stdin_w);
}

/* Our stdin feeds the program's: read when our buffer is empty, write when it
 * is not. A stdin epoll cannot watch (a file, /dev/null) counts as always
 * readable. */
static void update_stdin_events(struct supervisor *s)
{
	bool want_read = s->stdin_len == 0 && !s->stdin_eof;
	if (s->stdin_pollable)
		ep_mod(s, STDIN_FILENO, want_read ? EPOLLIN : 0, EV_STDIN);
	if (s->stdin_w >= 0) {
		bool want_write = s->stdin_len > 0 || (want_read && !s->stdin_pollable);
		ep_mod(s, s->stdin_w, want_write ? EPOLLOUT : 0, EV_STDIN_PIPE);
	}
}

static void pump_stdin(struct supervisor *s)
{
	if (s->stdin_len == 0 && !s->stdin_eof) {
		ssize_t n = read(STDIN_FILENO, s->stdin_buf, sizeof(s->stdin_buf));
		if (n > 0) {
			s->stdin_len = (size_t)n;
			s->stdin_off = 0;
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			s->stdin_eof = true;
			if (s->stdin_pollable) {
				ep_del(s, STDIN_FILENO);
				s->stdin_pollable = false;
			}
		}
	}
	while (s->stdin_len > 0 && s->stdin_w >= 0) {
		ssize_t n = write(s->stdin_w, s->stdin_buf + s->stdin_off, s->stdin_len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			s->stdin_len = 0; /* the program closed its stdin */
			break;
		}
		s->stdin_off += (size_t)n;
		s->stdin_len -= (size_t)n;
	}
	if (s->stdin_eof && s->stdin_len == 0 && s->stdin_w >= 0) {
		ep_del(s, s->stdin_w);
		close_fd(&s->stdin_w);
	}
	update_stdin_events(s);
}

/* ---- starting, and finding the program ------------------------------------ */

static pid_t program_pid(const struct supervisor *s)
{
	char path[64], buf[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", s->init_pid, s->init_pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return (pid_t)atoi(buf);
}

/* The program's host PID goes into dir/pid while it runs, for people and
 * tests; it takes a moment for cryo-init to fork it. */
static void publish_pid(struct supervisor *s)
{
	pid_t pid = 0;
	for (int i = 0; i < 400 && !(pid = program_pid(s)); i++)
		usleep(5000);
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", pid);
	(void)util_write_file_atomic(s->cfg->paths.pid_file, buf, (size_t)n);
}

static pid_t clone_newpid(void)
{
	struct clone_args args = {.flags = CLONE_NEWPID, .exit_signal = SIGCHLD};
	return (pid_t)syscall(SYS_clone3, &args, sizeof(args));
}

static int start_fresh(struct supervisor *s)
{
	char init[PATH_MAX];
	if (find_init(init, sizeof(init)) < 0) {
		log_error(
		    "cannot start '%s': cryo-init is missing (looked beside cryo and in %s/cryo; "
		    "reinstall cryo)",
		    s->cfg->name, CRYO_LIBEXECDIR);
		return -ENOENT;
	}
	struct program_ends e;
	int r = make_channels(s, &e);
	if (r < 0) {
		log_error("cannot start '%s': cannot create its pipes: %s", s->cfg->name,
		          strerror(-r));
		return r;
	}
	size_t argc = 0;
	while (s->cfg->argv[argc])
		argc++;

	pid_t pid = clone_newpid();
	if (pid < 0) {
		r = -errno;
		program_ends_close(&e);
		log_error("cannot start '%s': clone3(CLONE_NEWPID): %s", s->cfg->name,
		          strerror(-r));
		return r;
	}
	if (pid == 0) {
		/* The namespace's init: its network, stdio and the control socket
		 * in place, nothing else open, default signals. */
		if (s->net.fd >= 0 && setns(s->net.fd, CLONE_NEWNET) < 0)
			_exit(127);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		int high[4];
		for (int i = 0; i < 4; i++)
			high[i] = fcntl(e.fds[i], F_DUPFD, 10);
		for (int i = 0; i < 4; i++)
			if (high[i] < 0 || dup2(high[i], i) < 0)
				_exit(127);
		syscall(SYS_close_range, 4U, ~0U, 0U);
		setenv(CRYO_CONTROL_FD_ENV, "3", 1);
		char **argv = calloc(argc + 2, sizeof(char *));
		if (!argv)
			_exit(127);
		argv[0] = init;
		for (size_t i = 0; i < argc; i++)
			argv[i + 1] = s->cfg->argv[i];
		execv(init, argv);
		_exit(127);
	}
	program_ends_close(&e);
	s->init_pid = pid;
	s->running = true;
	watch_channels(s);
	publish_pid(s);
	set_state(s, "running");
	return 0;
}

/* ---- checkpoint ------------------------------------------------------------- */

static void send_msg(struct supervisor *s, uint32_t type, int64_t value, uint64_t generation)
{
	if (s->control < 0)
		return;
	struct cryo_msg m = {
	    .magic = CRYO_MSG_MAGIC, .type = type, .value = value, .generation = generation};
	/* A full socket means a program that does not read: it loses a notice. */
	(void)send(s->control, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void fill_manifest(struct supervisor *s, struct manifest *m, uint64_t gen,
                          enum checkpoint_trigger trigger, const struct criu_glue_dump_stats *st)
{
	struct utsname u;
	uname(&u);
	uint64_t now = util_realtime_ns();
	/* The program's working directory; after a migration's dump the
	 * program is gone, and the one read before it stands. */
	char cwd[PATH_MAX];
	char link[64];
	snprintf(link, sizeof(link), "/proc/%d/cwd", program_pid(s));
	ssize_t n = readlink(link, cwd, sizeof(cwd) - 1);
	if (n > 0) {
		cwd[n] = '\0';
		snprintf(s->cwd, sizeof(s->cwd), "%s", cwd);
	}

	manifest_add(m, "name", s->cfg->name);
	manifest_addf(m, "generation", "%" PRIu64, gen);
	manifest_addf(m, "time", "%" PRIu64, now / UINT64_C(1000000000));
	manifest_add(m, "trigger", checkpoint_trigger_name(trigger));
	for (char **a = s->cfg->argv; *a; a++)
		manifest_add(m, "arg", *a);
	manifest_add(m, "cwd", s->cwd);
	manifest_addf(m, "criu_version", "%d.%d.%d", s->criu_version / 10000,
	              s->criu_version / 100 % 100, s->criu_version % 100);
	manifest_add(m, "kernel", u.release);
	manifest_add(m, "machine", u.machine);
	manifest_add(m, "hostname", u.nodename);
	manifest_addf(m, "frozen_us", "%" PRIu32, st->frozen_us);
	manifest_addf(m, "ino.stdin", "%" PRIu64, s->ino_stdin);
	manifest_addf(m, "ino.stdout", "%" PRIu64, s->ino_stdout);
	manifest_addf(m, "ino.stderr", "%" PRIu64, s->ino_stderr);
	manifest_addf(m, "ino.control", "%" PRIu64, s->ino_control);
	if (s->net.fd >= 0) {
		const struct net_config *nc = &s->net.cfg;
		char cidr[64], gw[INET6_ADDRSTRLEN] = "";
		net_format_cidr(nc, cidr, sizeof(cidr));
		manifest_add(m, "net.addr", cidr);
		if (nc->gateway.family)
			manifest_add(m, "net.gateway", net_format_ip(&nc->gateway, gw, sizeof(gw)));
		if (nc->bridge[0])
			manifest_add(m, "net.bridge", nc->bridge);
	}
}

/* How the program is dumped into images: its control socket's and network
 * namespace's other ends stay outside, its TCP connections are dumped. With
 * its own namespace no CRIU network lock is needed: a checkpoint's copy
 * restores its connections closed after a crash, and a migration takes the
 * namespace off the network itself. */
static struct criu_glue_dump_opts dump_opts(struct supervisor *s, const char *images,
                                            bool leave_running)
{
	return (struct criu_glue_dump_opts){
	    .pid = s->init_pid,
	    .images_dir = images,
	    .log_dir = s->cfg->paths.dir,
	    .log_name = "criu-dump.log",
	    .external_unix = &s->ino_control,
	    .n_external_unix = 1,
	    .external_net = s->net.fd >= 0 ? s->net.ino : 0,
	    .external_net_key = NET_CRIU_KEY,
	    .leave_running = leave_running,
	    .tcp_established = true,
	    .network_lock_skip = s->net.fd >= 0,
	    .page_server_fd = -1,
	};
}

/* Incremental generations in a row before a full one: each restore rebuilds
 * the whole chain. */
#define MAX_CHAIN 8

/* What the remover thread does after a checkpoint. */
struct removal {
	char *images;      /* the dump files, removed */
	const char *store; /* the store, whose generation gen leaves the page cache */
	uint64_t gen;
};

static void *remove_main(void *arg)
{
	struct removal *rm = arg;
	util_rm_rf(rm->images);
	image_store_uncache(rm->store, rm->gen);
	free(rm->images);
	free(rm);
	return NULL;
}

static void remove_wait(struct supervisor *s)
{
	if (s->removing)
		pthread_join(s->remover, NULL);
	s->removing = false;
}

/* After a checkpoint, in a thread of its own: its dump files go (freeing a
 * large file takes the file system tens of milliseconds), and its archive
 * leaves the page cache (7 to 10 ms per 128 MiB here); the reply need wait for
 * neither. */
static void remove_later(struct supervisor *s, const char *dir, uint64_t gen)
{
	remove_wait(s);
	struct removal *rm = malloc(sizeof(*rm));
	if (rm && (rm->images = strdup(dir))) {
		rm->store = s->cfg->paths.dir;
		rm->gen = gen;
		if (pthread_create(&s->remover, NULL, remove_main, rm) == 0)
			s->removing = true;
		else
			remove_main(rm); /* here, then */
		return;
	}
	free(rm);
	util_rm_rf(dir);
	image_store_uncache(s->cfg->paths.dir, gen);
}

/* Checkpoints the running program. On any failure the program runs on and
 * the stored generations are as they were. Returns the new generation, or a
 * negative errno with the reason in why. */
/* With early_reply (cryo_checkpoint_async()), the program is told RESULT 0 as
 * soon as it has been dumped, and *replied says whether that happened. */
static int64_t checkpoint(struct supervisor *s, enum checkpoint_trigger trigger, bool early_reply,
                          bool *replied, char *why, size_t why_len)
{
	const struct supervisor_config *cfg = s->cfg;
	if (!s->running) {
		snprintf(why, why_len, "the program is not running");
		return -ESRCH;
	}
	int r = lazy_settle(s, why, why_len);
	if (r < 0)
		return r;
	/* The last dump's files are gone before this dump needs memory. */
	remove_wait(s);
	uint64_t t0 = util_now_ns();
	uint64_t gen;
	r = image_store_next_generation(cfg->paths.dir, &gen);
	if (r < 0) {
		snprintf(why, why_len, "cannot read '%s': %s", cfg->paths.dir, strerror(-r));
		return r;
	}
	/* A number told to the program is never reused, even if its image
	 * could not be stored. */
	if (gen <= s->last_attempted)
		gen = s->last_attempted + 1;
	s->last_attempted = gen;
	char images[PATH_MAX];
	r = image_store_dump_path(cfg->paths.dir, gen, images, sizeof(images));
	if (r < 0) {
		snprintf(why, why_len, "state directory path too long: %s", cfg->paths.dir);
		return r;
	}
	util_rm_rf(images);
	if (mkdir(images, 0700) < 0) {
		r = -errno;
		snprintf(why, why_len, "cannot create '%s': %s", images, strerror(-r));
		return r;
	}
	set_state(s, "checkpointing");
	struct cryo_error cerr = {{0}};
	/* Pages go to memory made ready now, while the program still runs
	 * (see criu-glue/pages.h), unless that memory is not to be had. */
	struct criu_glue_pages *pages = NULL;
	struct delta_dir dd = {0};
	if (cfg->dump_via_memory) {
		/* Not when the estimate failed, nor when the pages would take
		 * half of the memory left. */
		uint64_t expect = criu_glue_estimate_pages(s->init_pid);
		if (expect > 0 && expect < util_mem_available() / 2 &&
		    criu_glue_pages_start(expect + (expect >> 5), &s->spare, &pages, &cerr) < 0) {
			log_debug("%s; dumping '%s' through files instead", cerr.msg, cfg->name);
			pages = NULL;
		}
		if (!pages)
			criu_glue_spare_drop(&s->spare);
	}
	struct criu_glue_dump_opts o = dump_opts(s, images, true);
	o.page_server_fd = pages ? criu_glue_pages_fd(pages) : -1;
	struct criu_glue_dump_stats st = {0};
	/* Where the time went, for --verbose: start, dump, eager pages, memory
	 * images read, stored (compressed, written, fsynced). */
	uint64_t tp[5] = {t0};
	r = criu_glue_dump(&o, &st, &cerr);
	tp[1] = util_now_ns();
	if (r == 0 && pages)
		r = criu_glue_pages_finish(pages, &cerr);
	if (r < 0) {
		snprintf(why, why_len, "%s", cerr.msg);
		goto out;
	}
	const struct mem_file *mem = NULL;
	size_t n_mem = 0;
	if (pages)
		criu_glue_pages_files(pages, &mem, &n_mem);
	/* What a lazy restore needs at once, set apart while the files are
	 * whole. */
	r = criu_glue_eager_write(images, mem, n_mem, &cerr);
	if (r < 0) {
		snprintf(why, why_len, "%s", cerr.msg);
		goto out;
	}
	tp[2] = util_now_ns();
	const struct page_index *base =
	    cfg->incremental && s->index && s->chain < MAX_CHAIN ? s->index : NULL;
	if (pages) {
		criu_glue_pages_files(pages, &mem, &n_mem);
		r = delta_prepare_mem(mem, n_mem, gen, base, cfg->incremental, &dd);
		if (r < 0) {
			snprintf(why, why_len, "cannot read the memory images: %s", strerror(-r));
			goto out;
		}
		mem = dd.files;
		n_mem = dd.n_files;
	} else {
		r = delta_prepare_dir(images, gen, base, cfg->incremental, &dd);
		if (r < 0) {
			snprintf(why, why_len, "cannot read the memory images in '%s': %s", images,
			         strerror(-r));
			goto out;
		}
		mem = dd.files;
		n_mem = dd.n_files;
	}
	tp[3] = util_now_ns();
	/* cryo_checkpoint_async(): the program may run on now; it learns about
	 * durability from the DURABLE message that follows. */
	if (early_reply) {
		send_msg(s, CRYO_MSG_RESULT, 0, gen);
		*replied = true;
	}

	struct manifest *m = manifest_new();
	if (!m) {
		r = -ENOMEM;
		snprintf(why, why_len, "out of memory");
		goto out;
	}
	fill_manifest(s, m, gen, trigger, &st);
	if (dd.incremental) {
		delta_describe(&dd, page_index_generation(base), m);
		manifest_addf(m, "chain", "%u", s->chain + 1);
	}
	struct cryo_error ierr = {{0}};
	struct image_write_stats ws = {0};
	if (!s->writer)
		s->writer = image_writer_new(); /* without it, the archive's own */
	r = image_store_commit(cfg->paths.dir, gen, images, mem, n_mem, m, cfg->zstd_level, 2,
	                       s->writer, &ws, &ierr);
	tp[4] = util_now_ns();
	manifest_free(m);
	if (r < 0) {
		snprintf(why, why_len, "cannot store the image: %s",
		         ierr.msg[0] ? ierr.msg : strerror(-r));
		goto out;
	}
	r = image_store_prune(cfg->paths.dir, cfg->keep);
	if (r < 0)
		log_error("checkpoint %" PRIu64
		          " of '%s' is stored, but older generations could not "
		          "be pruned: %s",
		          gen, cfg->name, strerror(-r));
	r = 0;
	if (cfg->incremental) {
		s->chain = dd.incremental ? s->chain + 1 : 0;
		page_index_free(s->index);
		s->index = TAKE_PTR(dd.index);
	}
	s->restarts_in_a_row = 0;
	s->current_generation = gen;
	s->have_last = true;
	s->last = (struct last_checkpoint){
	    .generation = gen,
	    .time_ns = util_realtime_ns(),
	    .size = ws.archive_bytes,
	    .raw_size = ws.raw_bytes,
	    .frozen_us = st.frozen_us,
	    .duration_ns = util_now_ns() - t0,
	    .trigger = trigger,
	};
out:
	delta_dir_clear(&dd);
	const char *via = !pages ? "through files"
	                  : criu_glue_pages_reused(pages)
	                      ? "through cryo's page server, into the last checkpoint's memory"
	                      : "through cryo's page server";
	criu_glue_pages_free(pages, &s->spare);
	if (r == 0) {
		remove_later(s, images, gen);
		double ms[4];
		for (int i = 0; i < 4; i++)
			ms[i] = (double)(tp[i + 1] - tp[i]) / 1e6;
		log_debug("checkpoint %" PRIu64 " of '%s' (%s): CRIU %.1f ms (frozen %.1f), eager "
		          "pages %.1f, memory images read %.1f, compressed and written %.1f, fsync "
		          "%.1f",
		          gen, cfg->name, via, ms[0], (double)st.frozen_us / 1e3, ms[1], ms[2],
		          ms[3] - (double)ws.sync_ns / 1e6, (double)ws.sync_ns / 1e6);
	} else {
		util_rm_rf(images);
	}
	if (s->running)
		set_state(s, "running");
	if (r == 0 && trigger != TRIGGER_STOP && trigger != TRIGGER_MIGRATE)
		standby_prepare(s);
	return r < 0 ? r : (int64_t)gen;
}

static void log_checkpoint(struct supervisor *s, enum checkpoint_trigger trigger)
{
	char size[32];
	void (*log)(const char *, ...) = trigger == TRIGGER_TIMER ? log_debug : log_info;
	log("checkpoint %" PRIu64 " of '%s' stored (%s, %s, frozen %.1f ms, durable after %.1f ms)",
	    s->last.generation, s->cfg->name, checkpoint_trigger_name(trigger),
	    util_format_bytes(s->last.size, size, sizeof(size)), (double)s->last.frozen_us / 1000,
	    (double)s->last.duration_ns / 1e6);
}

static void handle_control(struct supervisor *s)
{
	for (;;) {
		ssize_t n = read(s->control, s->control_buf + s->control_len,
		                 sizeof(s->control_buf) - s->control_len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			n = 0;
		}
		if (n == 0) {
			/* The program closed its control socket: it will not call us. */
			ep_del(s, s->control);
			return;
		}
		s->control_len += (size_t)n;
		if (s->control_len < sizeof(struct cryo_msg))
			continue;
		struct cryo_msg req;
		memcpy(&req, s->control_buf, sizeof(req));
		s->control_len = 0;
		bool async = req.type == CRYO_MSG_CHECKPOINT_ASYNC;
		if (req.magic != CRYO_MSG_MAGIC || (req.type != CRYO_MSG_CHECKPOINT && !async)) {
			log_error("'%s' sent garbage on its control socket; ignored", s->cfg->name);
			send_msg(s, CRYO_MSG_RESULT, -EPROTO, s->current_generation);
			continue;
		}
		char why[600];
		bool replied = false;
		int64_t g = checkpoint(s, TRIGGER_PROGRAM, async, &replied, why, sizeof(why));
		if (g < 0)
			log_error(
			    "cannot checkpoint '%s': %s; the program runs on, generation %" PRIu64
			    " stays the newest",
			    s->cfg->name, why, s->current_generation);
		else
			log_checkpoint(s, TRIGGER_PROGRAM);
		if (replied)
			send_msg(s, CRYO_MSG_DURABLE, g, s->current_generation);
		else
			send_msg(s, CRYO_MSG_RESULT, g < 0 ? g : 0,
			         g < 0 ? s->current_generation : (uint64_t)g);
		/* One request per turn of the loop: a program that asks again at
		 * once must not starve its own output and the commands. */
		return;
	}
}

/* ---- restore ---------------------------------------------------------------- */

/* Restores generation gen. Returns 0, -EBADMSG for a damaged image, or
 * another negative errno when CRIU could not restore it. */
/* Where a generation is extracted for CRIU to read: memory (/dev/shm) when
 * its raw images fit comfortably there and in RAM, else beside the images. */
static int make_restore_dir(struct supervisor *s, uint64_t gen, char *dir, size_t len)
{
	const struct supervisor_config *cfg = s->cfg;
	struct manifest *m = NULL;
	struct cryo_error ierr = {{0}};
	uint64_t raw = UINT64_MAX;
	if (image_store_read_manifest(cfg->paths.dir, gen, &m, &ierr) == 0) {
		raw = 0;
		for (size_t i = 0; i < m->n_files; i++)
			raw += m->files[i].size;
		manifest_free(m);
	}
	char tag[128], fallback[PATH_MAX];
	snprintf(tag, sizeof(tag), "restore-%s", cfg->name);
	snprintf(fallback, sizeof(fallback), "%s/.restore", cfg->paths.dir);
	int r = util_scratch_dir(raw, tag, fallback, dir, len);
	if (r < 0)
		log_error("cannot restore '%s': cannot create '%s': %s", cfg->name, dir,
		          strerror(-r));
	return r;
}

/* The inodes of the program's stdin, stdout, stderr and control socket when
 * the image was taken (fill_manifest()). */
static void manifest_inodes(const struct manifest *m, uint64_t ino[4])
{
	static const char *const keys[4] = {"ino.stdin", "ino.stdout", "ino.stderr", "ino.control"};
	for (int i = 0; i < 4; i++)
		ino[i] = manifest_get_u64(m, keys[i], 0);
}

/* ---- the next restore, made ready -------------------------------------------- */

/* The channels of the next restore and a CRIU service process holding the
 * program's ends, made while the program runs (after a checkpoint, and once
 * a restore's memory is all back): after a crash CRIU's work starts at once,
 * without CRIU's start (exec, its libraries) on the way. */
struct standby {
	struct criu_glue_restorer *criu;
	int ours[4];
	struct program_ends e;
	int netfd; /* our network namespace, for CRIU; or -1 */
};

static void standby_free(struct standby *sb)
{
	if (!sb)
		return;
	criu_glue_restorer_free(sb->criu);
	for (int i = 0; i < 4; i++)
		close_fd(&sb->ours[i]);
	program_ends_close(&sb->e);
	close_fd(&sb->netfd);
	free(sb);
}

/* What a restore passes to CRIU, made new: the channels (ours not in use
 * yet; the program's ends O_CLOEXEC, for CRIU alone) and a copy of our
 * network namespace's fd, or -1 without one. On failure nothing is left
 * open and why says what failed. */
static int restore_ends(struct supervisor *s, int ours[4], struct program_ends *e, int *netfd,
                        char *why, size_t why_len)
{
	int r = new_channels(s, ours, e);
	if (r < 0) {
		snprintf(why, why_len, "cannot create its pipes: %s", strerror(-r));
		return r;
	}
	for (int i = 0; i < 4; i++)
		fcntl(e->fds[i], F_SETFD, FD_CLOEXEC);
	*netfd = -1;
	if (s->net.fd >= 0 && (*netfd = fcntl(s->net.fd, F_DUPFD_CLOEXEC, 3)) < 0) {
		r = -errno;
		for (int i = 0; i < 4; i++)
			close_fd(&ours[i]);
		program_ends_close(e);
		snprintf(why, why_len, "cannot pass the network namespace: %s", strerror(-r));
		return r;
	}
	return 0;
}

/* Makes the next restore ready, unless it is or no restore is to come. */
static void standby_prepare(struct supervisor *s)
{
	if (s->standby || !s->running || s->stopping || s->cfg->policy == RESTART_NO)
		return;
	struct standby *sb = calloc(1, sizeof(*sb));
	if (!sb)
		return;
	struct cryo_error cerr = {{0}};
	if (restore_ends(s, sb->ours, &sb->e, &sb->netfd, cerr.msg, sizeof(cerr.msg)) < 0) {
		free(sb);
	} else {
		int fds[5];
		size_t n = 0;
		for (int i = 0; i < 4; i++)
			fds[n++] = sb->e.fds[i];
		if (sb->netfd >= 0)
			fds[n++] = sb->netfd;
		if (criu_glue_restorer_start(fds, n, &sb->criu, &cerr) == 0) {
			s->standby = sb;
			return;
		}
		standby_free(sb);
	}
	/* The restore starts CRIU itself then. */
	log_debug("the next restore of '%s' is not made ready: %s", s->cfg->name, cerr.msg);
}

/* Restores the images in dir, whose stdio and control socket had the inodes
 * ino (stdin, stdout, stderr, control). The program becomes our child. With
 * tcp_established its connections come back open (a migration), else closed
 * (after a crash, the peers have moved on). why gets CRIU's reason. */
static int restore_dir(struct supervisor *s, const char *dir, const uint64_t ino[4],
                       bool tcp_established, bool lazy, char *why, size_t why_len)
{
	const struct supervisor_config *cfg = s->cfg;
	struct program_ends e;
	int netfd = -1;
	struct criu_glue_restorer *criu = NULL;
	struct standby *sb = TAKE_PTR(s->standby);
	if (sb) {
		use_channels(s, sb->ours, &sb->e);
		e = sb->e;
		netfd = sb->netfd;
		criu = sb->criu;
		free(sb);
	} else {
		int ours[4];
		int r = restore_ends(s, ours, &e, &netfd, why, why_len);
		if (r < 0)
			return r;
		use_channels(s, ours, &e);
	}
	static const char *const kinds[4] = {"pipe", "pipe", "pipe", "socket"};
	struct criu_glue_inherit inherit[5];
	size_t n = 4;
	for (int i = 0; i < 4; i++) {
		inherit[i].fd = e.fds[i];
		snprintf(inherit[i].key, sizeof(inherit[i].key), "%s:[%" PRIu64 "]", kinds[i],
		         ino[i]);
	}
	if (netfd >= 0) {
		inherit[n].fd = netfd;
		snprintf(inherit[n].key, sizeof(inherit[n].key), "%s", NET_CRIU_KEY);
		n++;
	}
	struct criu_glue_restore_opts o = {
	    .images_dir = dir,
	    .log_dir = cfg->paths.dir,
	    .log_name = "criu-restore.log",
	    .inherit = inherit,
	    .n_inherit = n,
	    .tcp_established = tcp_established,
	    .tcp_close = !tcp_established,
	    .lazy_pages = lazy,
	    .restorer = criu,
	};
	struct cryo_error cerr = {{0}};
	pid_t pid;
	int r = criu_glue_restore(&o, &pid, &cerr);
	program_ends_close(&e);
	if (netfd >= 0)
		close(netfd);
	if (r < 0) {
		close_fd(&s->stdin_w);
		close_fd(&s->stdout_r);
		close_fd(&s->stderr_r);
		close_fd(&s->control);
		snprintf(why, why_len, "%s", cerr.msg);
		return r;
	}
	s->init_pid = pid;
	s->running = true;
	watch_channels(s);
	return 0;
}

/* ---- lazy restore ------------------------------------------------------------ */

/* Where the page server finds a memory image's bytes: in the archive's
 * decompression, once it got that far. */
static int64_t lazy_get(void *ctx, const char *name, uint64_t off, uint64_t len, struct iovec *iov,
                        int max_iov, int *n_iov)
{
	struct lazy_restore *lz = ctx;
	return image_chain_get(lz->images, name, off, len, iov, max_iov, n_iov);
}

static void lazy_put(void *ctx, const char *name, uint64_t off, uint64_t len)
{
	struct lazy_restore *lz = ctx;
	image_chain_release(lz->images, name, off, len);
}

static void lazy_free(struct lazy_restore *lz)
{
	if (!lz)
		return;
	if (lz->images)
		image_chain_cancel(lz->images);
	criu_glue_lazy_free(lz->glue);
	image_chain_free(lz->images);
	if (lz->efd >= 0)
		close(lz->efd);
	if (lz->dir[0])
		util_rm_rf(lz->dir);
	free(lz);
}

static void *lazy_check_main(void *arg)
{
	struct lazy_restore *lz = arg;
	lz->check_r = image_chain_finish(lz->images, &lz->idx, &lz->chain, &lz->bad, &lz->ierr);
	uint64_t one = 1;
	if (write(lz->efd, &one, sizeof(one)) < 0) {
		/* An eventfd of ours: it does not fail. */
	}
	return NULL;
}

/* The pages are in place (or cannot be): what the glue says, then the
 * memory's check in a thread (its end comes as EV_LAZY_CHECKED). */
static void lazy_check_start(struct supervisor *s)
{
	struct lazy_restore *lz = s->lazy;
	if (!lz || lz->checked)
		return;
	lz->checked = true;
	uint64_t v;
	if (read(lz->efd, &v, sizeof(v)) < 0) {
		/* Not fired yet (lazy_settle() timed out): checked as it stands. */
	}
	lz->glue_r = criu_glue_lazy_finish(lz->glue, &lz->cerr);
	if (lz->glue_r < 0)
		image_chain_cancel(lz->images);
	lz->bad = lz->gen;
	ep_mod(s, lz->efd, EPOLLIN, EV_LAZY_CHECKED);
	if (pthread_create(&lz->checker, NULL, lazy_check_main, lz) == 0) {
		lz->checking = true;
		return;
	}
	lazy_check_main(lz); /* no thread to be had: here, then */
}

/* Ends the lazy restore in progress, if any. Without abort, once the pages
 * are in place: waits for the memory's check; if not all the memory came, or
 * intact, the program cannot run on (what never came reads as zeros) and is
 * killed, to be restored again. With abort: the program is gone already. */
static int lazy_end(struct supervisor *s, bool abort)
{
	const struct supervisor_config *cfg = s->cfg;
	if (!abort)
		lazy_check_start(s);
	struct lazy_restore *lz = TAKE_PTR(s->lazy);
	if (!lz)
		return 0;
	ep_del(s, lz->efd);
	if (abort && lz->images)
		image_chain_cancel(lz->images);
	if (lz->checking)
		pthread_join(lz->checker, NULL);
	int r = 0;
	if (!abort) {
		r = lz->glue_r;
		int ri = lz->check_r;
		if (ri == -EBADMSG) {
			log_error("generation %" PRIu64
			          " of '%s' turned out damaged while its memory "
			          "was coming back (%s); set aside as gen-%012" PRIu64
			          ".cryo.damaged, restoring again",
			          lz->bad, cfg->name, lz->ierr.msg, lz->bad);
			image_store_set_aside(cfg->paths.dir, lz->bad);
			r = ri;
		} else if (r < 0) {
			log_error(
			    "the memory of '%s' could not be restored lazily: %s; restoring again",
			    cfg->name, lz->cerr.msg);
		} else if (ri < 0) {
			log_error("the memory of '%s' could not be checked (%s); restoring again",
			          cfg->name, lz->ierr.msg[0] ? lz->ierr.msg : strerror(-ri));
			r = ri;
		}
		if (r < 0) {
			/* Gone before its userfaultfds close (lazy_free()): its faults
			 * would read zeros then. The namespace's init exits after every
			 * process in it; its status stays for handle_exit(). */
			if (s->running) {
				kill(s->init_pid, SIGKILL);
				siginfo_t si;
				while (waitid(P_PID, (id_t)s->init_pid, &si, WEXITED | WNOWAIT) <
				           0 &&
				       errno == EINTR)
					;
			}
		} else {
			struct criu_glue_lazy_stats st;
			criu_glue_lazy_stats(lz->glue, &st);
			log_debug("all the memory of '%s' is back, %.1f ms after its restore began "
			          "(%" PRIu64 " lazy pages; %" PRIu64
			          " faults brought %.1f MB, the "
			          "background %.1f MB, in %.1f ms: %.1f ms getting pages, %.1f ms "
			          "copying; %" PRIu64 " zero pages, %" PRIu64 " map changes)",
			          cfg->name, (double)(util_now_ns() - lz->t0) / 1e6, st.lazy_pages,
			          st.faults, (double)st.fault_bytes / 1e6,
			          (double)st.background_bytes / 1e6, (double)st.ns / 1e6,
			          (double)st.get_ns / 1e6, (double)st.copy_ns / 1e6, st.zero_pages,
			          st.events);
			page_index_free(s->index);
			s->index = TAKE_PTR(lz->idx);
			s->chain = lz->chain;
		}
	}
	page_index_free(lz->idx);
	lazy_free(lz);
	if (r == 0 && !abort)
		standby_prepare(s);
	return r;
}

/* Before anything dumps the program: its memory must be all there. */
static int lazy_settle(struct supervisor *s, char *why, size_t why_len)
{
	if (!s->lazy)
		return 0;
	struct pollfd p = {s->lazy->efd, POLLIN, 0};
	int n;
	while ((n = poll(&p, 1, 120000)) < 0 && errno == EINTR)
		;
	if (n == 0)
		return util_fail(why, why_len, -EBUSY,
		                 "its memory is still being restored after 120 s");
	int r = lazy_end(s, false);
	return r < 0 ? util_fail(why, why_len, r,
	                         "its memory could not be restored in full; it is being "
	                         "restored again")
	             : 0;
}

/* Restores generation gen with its memory to follow (from the generations
 * it is built on too, if it is incremental). Returns 0, or -EBADMSG for a
 * damaged image, or -EAGAIN when it is not to be restored this way (an
 * image of format 1 or without its eager pages, a lazy-pages socket that
 * cannot be set up): the caller restores it in full. */
static int restore_lazily(struct supervisor *s, uint64_t gen)
{
	const struct supervisor_config *cfg = s->cfg;
	struct manifest *m = NULL;
	struct cryo_error ierr = {{0}};
	if (image_store_read_manifest(cfg->paths.dir, gen, &m, &ierr) < 0)
		return -EAGAIN; /* the full restore says what is wrong */
	uint64_t ino[4];
	manifest_inodes(m, ino);
	manifest_free(m);
	struct lazy_restore *lz = calloc(1, sizeof(*lz));
	if (!lz)
		return -EAGAIN;
	*lz = (struct lazy_restore){.efd = -1, .gen = gen, .t0 = util_now_ns()};
	char why[600] = "";
	struct cryo_error cerr = {{0}};
	int r = make_restore_dir(s, gen, lz->dir, sizeof(lz->dir));
	if (r < 0) {
		lz->dir[0] = '\0';
		goto full;
	}
	uint64_t bad = gen;
	r = image_chain_open(cfg->paths.dir, gen, lz->dir, cfg->incremental, &lz->images, &bad,
	                     &ierr);
	if (r == 0) {
		bad = gen;
		r = image_chain_wait_files(lz->images, &ierr);
	}
	if (r == -EBADMSG) {
		log_error("generation %" PRIu64 " of '%s' is damaged (%s); set aside as "
		          "gen-%012" PRIu64 ".cryo.damaged",
		          bad, cfg->name, ierr.msg, bad);
		lazy_free(lz);
		image_store_set_aside(cfg->paths.dir, bad);
		return r;
	}
	if (r < 0) {
		snprintf(why, sizeof(why), "%s", ierr.msg[0] ? ierr.msg : strerror(-r));
		goto full;
	}
	r = criu_glue_eager_apply(lz->dir, &cerr);
	if (r == 0) {
		lz->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		struct criu_glue_lazy_opts o = {
		    .images_dir = lz->dir,
		    .work_dir = cfg->paths.dir,
		    .source = {lazy_get, lazy_put, lz},
		    .notify_fd = lz->efd,
		};
		r = lz->efd < 0 ? -errno : criu_glue_lazy_start(&o, &lz->glue, &cerr);
	}
	if (r < 0) {
		snprintf(why, sizeof(why), "%s", cerr.msg[0] ? cerr.msg : strerror(-r));
		goto full;
	}
	r = restore_dir(s, lz->dir, ino, false, true, why, sizeof(why));
	if (r < 0)
		goto full;
	criu_glue_lazy_go(lz->glue);
	ep_add(s, lz->efd, EPOLLIN, EV_LAZY);
	s->lazy = lz;
	/* The page index comes when all the memory is in (lazy_end()). */
	page_index_free(s->index);
	s->index = NULL;
	return 0;
full:
	if (why[0])
		log_info("cannot restore generation %" PRIu64 " of '%s' lazily (%s); restoring "
		         "it in full",
		         gen, cfg->name, why);
	lazy_free(lz);
	return -EAGAIN;
}

/* After a crash or for cryo restore: its TCP connections come back closed. */
static int restore_generation(struct supervisor *s, uint64_t gen)
{
	const struct supervisor_config *cfg = s->cfg;
	/* A program that died while its memory was still coming. */
	lazy_end(s, true);
	int r = cfg->lazy_restore ? restore_lazily(s, gen) : -EAGAIN;
	if (r == 0)
		goto restored;
	if (r != -EAGAIN)
		return r;
	char dir[PATH_MAX];
	r = make_restore_dir(s, gen, dir, sizeof(dir));
	if (r < 0)
		return r;
	struct manifest *m = NULL;
	struct cryo_error ierr = {{0}};
	r = image_store_extract(cfg->paths.dir, gen, dir, &m, &ierr);
	if (r < 0) {
		util_rm_rf(dir);
		if (r == -EBADMSG)
			log_error("generation %" PRIu64 " of '%s' is damaged (%s); set aside as "
			          "gen-%012" PRIu64 ".cryo.damaged",
			          gen, cfg->name, ierr.msg, gen);
		else
			log_error("cannot read generation %" PRIu64 " of '%s': %s", gen, cfg->name,
			          ierr.msg[0] ? ierr.msg : strerror(-r));
		if (r == -EBADMSG)
			image_store_set_aside(cfg->paths.dir, gen);
		return r;
	}
	uint64_t ino[4];
	manifest_inodes(m, ino);
	unsigned chain = (unsigned)manifest_get_u64(m, "chain", 0);
	manifest_free(m);
	char why[600];
	r = restore_dir(s, dir, ino, false, false, why, sizeof(why));
	if (r == 0 && cfg->incremental) {
		/* The rebuilt memory images are the base of the next incremental
		 * checkpoint (the program runs already). */
		page_index_free(s->index);
		s->index = NULL;
		if (delta_index_dir(dir, gen, &s->index) < 0)
			s->index = NULL;
		s->chain = chain;
	}
	util_rm_rf(dir);
	if (r < 0) {
		log_error("cannot restore generation %" PRIu64 " of '%s': %s", gen, cfg->name, why);
		return r;
	}
	standby_prepare(s);
restored:
	s->current_generation = gen;
	send_msg(s, CRYO_MSG_RESULT, 1, gen);
	publish_pid(s);
	set_state(s, "running");
	return 0;
}

/* Restores the newest intact generation (or cfg->resume_generation), falling
 * back to older ones. Returns -ENOENT when there is none. */
static int restore_newest(struct supervisor *s, uint64_t only)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n;
	int r = image_store_list(s->cfg->paths.dir, &gens, &n);
	if (r < 0) {
		log_error("cannot list the images of '%s' in '%s': %s", s->cfg->name,
		          s->cfg->paths.dir, strerror(-r));
		return r;
	}
	set_state(s, "restoring");
	bool tried = false;
	for (size_t i = n; i-- > 0;) {
		if ((only && gens[i] != only) || gens[i] < s->min_generation)
			continue;
		tried = true;
		uint64_t t0 = util_now_ns();
		if (restore_generation(s, gens[i]) == 0) {
			log_info("restored '%s' from generation %" PRIu64
			         " in %.1f ms (program PID %d%s)",
			         s->cfg->name, gens[i], (double)(util_now_ns() - t0) / 1e6,
			         program_pid(s), s->lazy ? "; its memory follows lazily" : "");
			return 0;
		}
		if (only)
			break;
		if (i > 0 && gens[i - 1] >= s->min_generation)
			log_info("trying generation %" PRIu64 " of '%s' instead", gens[i - 1],
			         s->cfg->name);
	}
	set_state(s, "failed");
	if (only && !tried) {
		log_error("'%s' has no generation %" PRIu64 " in '%s' (see: cryo images %s)",
		          s->cfg->name, only, s->cfg->paths.dir, s->cfg->name);
		return -ENOENT;
	}
	return tried ? -EIO : -ENOENT;
}

/* ---- the commands socket (cryo checkpoint/status/stop) ---------------------- */

static int listen_commands(struct supervisor *s)
{
	const char *path = s->cfg->paths.socket;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path); /* we hold the workload's lock: a socket left here is stale */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	chmod(path, 0600);
	s->commands_fd = fd;
	return ep_add(s, fd, EPOLLIN, EV_COMMANDS);
}

static void reply_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_line(int fd, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)send(fd, buf, (size_t)n, MSG_NOSIGNAL);
}

static void json_escape(const char *in, char *out, size_t len)
{
	size_t o = 0;
	for (; *in && o + 7 < len; in++) {
		unsigned char c = (unsigned char)*in;
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(out + o, len - o, "\\%c", c);
		else if (c < 0x20)
			o += (size_t)snprintf(out + o, len - o, "\\u%04x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
}

static void reply_checkpoint(struct supervisor *s, int fd, int64_t g, const char *why)
{
	if (g < 0) {
		char esc[1200];
		json_escape(why, esc, sizeof(esc));
		reply_line(fd, "{\"ok\":false,\"errno\":%d,\"error\":\"%s\"}", (int)-g, esc);
		return;
	}
	reply_line(fd,
	           "{\"ok\":true,\"generation\":%" PRIu64 ",\"size\":%" PRIu64
	           ",\"raw_size\":%" PRIu64 ",\"frozen_us\":%" PRIu64 ",\"duration_us\":%" PRIu64
	           "}",
	           s->last.generation, s->last.size, s->last.raw_size, s->last.frozen_us,
	           s->last.duration_ns / 1000);
}

/* The supervisor's view of its workload as one JSON object. */
static void format_status(struct supervisor *s, char *buf, size_t len)
{
	char last[512] = "null";
	if (s->have_last)
		snprintf(last, sizeof(last),
		         "{\"generation\":%" PRIu64 ",\"time\":%" PRIu64 ",\"size\":%" PRIu64
		         ",\"frozen_us\":%" PRIu64 ",\"trigger\":\"%s\"}",
		         s->last.generation, s->last.time_ns / UINT64_C(1000000000), s->last.size,
		         s->last.frozen_us, checkpoint_trigger_name(s->last.trigger));
	char moved[200] = "";
	if (s->moved_to[0])
		snprintf(moved, sizeof(moved), ",\"moved_to\":\"%s\"", s->moved_to);
	snprintf(buf, len,
	         "{\"ok\":true,\"name\":\"%s\",\"state\":\"%s\",\"supervisor_pid\":%d,"
	         "\"pid\":%d,\"restarts\":%u,\"generation\":%" PRIu64 ",\"last_checkpoint\":%s%s}",
	         s->cfg->name, s->state, getpid(), s->running ? program_pid(s) : 0,
	         s->restarts_total, s->current_generation, last, moved);
}

static void reply_status(struct supervisor *s, int fd)
{
	char buf[1024];
	format_status(s, buf, sizeof(buf));
	reply_line(fd, "%s", buf);
}

/* Sets the workload's state and publishes it in dir/status.json, where
 * cryo status reads it without waiting for a busy supervisor. */
static void set_state(struct supervisor *s, const char *state)
{
	char buf[1024], path[PATH_MAX], tmp[PATH_MAX + 8];
	s->state = state;
	format_status(s, buf, sizeof(buf));
	size_t n = strlen(buf);
	buf[n++] = '\n';
	snprintf(path, sizeof(path), "%s/status.json", s->cfg->paths.dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* Not fsynced: it describes this boot's processes only. */
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0 && util_write_all(fd, buf, n) == 0)
		(void)rename(tmp, path);
}

static void request_stop(struct supervisor *s, int sig)
{
	s->stopping = true;
	if (s->running)
		kill(s->init_pid, sig);
}

/* ---- migration -------------------------------------------------------------- */

/* Connects to host:port within timeout_ms. */
static int connect_to(const char *target, int timeout_ms, char *why, size_t len)
{
	struct addrinfo *ai = NULL;
	char cause[200];
	int g = net_resolve(target, false, &ai, cause, sizeof(cause));
	if (g == -EINVAL) {
		snprintf(why, len, "'%s' is not HOST:PORT", target);
		return g;
	}
	if (g < 0) {
		snprintf(why, len, "cannot resolve '%s': %s", target, cause);
		return g;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int r = fd < 0 ? -errno : 0;
	if (r == 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		r = -errno;
		if (r == -EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int err = 0;
			socklen_t el = sizeof(err);
			if (poll(&p, 1, timeout_ms) <= 0)
				r = -ETIMEDOUT;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err)
				r = -(err ? err : errno);
			else
				r = 0;
		}
	}
	freeaddrinfo(ai);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		snprintf(why, len, "cannot connect to %s: %s (is cryo serve running there?)",
		         target, strerror(-r));
		return r;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

struct migration_out {
	struct supervisor *s;
	int client; /* the cryo migrate that asked, for progress lines */
	uint64_t t0;
	char phases[512];
	size_t phases_len;
	uint64_t phase_t0;
};

static void phase_done(struct migration_out *mo, const char *name)
{
	uint64_t now = util_now_ns();
	int n = snprintf(mo->phases + mo->phases_len, sizeof(mo->phases) - mo->phases_len,
	                 "%s\"%s\":%.1f", mo->phases_len ? "," : "", name,
	                 (double)(now - mo->phase_t0) / 1e6);
	if (n > 0 && (size_t)n < sizeof(mo->phases) - mo->phases_len)
		mo->phases_len += (size_t)n;
	reply_line(mo->client, "{\"event\":\"phase\",\"phase\":\"%s\",\"ms\":%.1f}", name,
	           (double)(now - mo->phase_t0) / 1e6);
	mo->phase_t0 = now;
}

static void report_progress(void *arg, uint64_t sent, uint64_t raw_done, uint64_t raw_total)
{
	struct migration_out *mo = arg;
	reply_line(mo->client,
	           "{\"event\":\"progress\",\"sent\":%" PRIu64 ",\"raw_done\":%" PRIu64
	           ",\"raw_total\":%" PRIu64 ",\"ms\":%.1f}",
	           sent, raw_done, raw_total, (double)(util_now_ns() - mo->phase_t0) / 1e6);
}

/* Where a migration's dump goes: memory when it fits comfortably. */
static int make_migrate_dir(struct supervisor *s, char *dir, size_t len)
{
	char tag[128], fallback[PATH_MAX];
	snprintf(tag, sizeof(tag), "migrate-%s", s->cfg->name);
	snprintf(fallback, sizeof(fallback), "%s/.migrate", s->cfg->paths.dir);
	return util_scratch_dir(criu_glue_estimate_pages(s->init_pid), tag, fallback, dir, len);
}

/* The settings that travel with the workload. */
static void add_settings(const struct supervisor_config *cfg, struct manifest *m)
{
	manifest_addf(m, "set.policy", "%d", (int)cfg->policy);
	manifest_addf(m, "set.max_restarts", "%u", cfg->max_restarts);
	manifest_addf(m, "set.keep", "%u", cfg->keep);
	manifest_addf(m, "set.every_ns", "%" PRIu64, cfg->every_ns);
	manifest_addf(m, "set.zstd_level", "%d", cfg->zstd_level);
	manifest_addf(m, "set.incremental", "%d", cfg->incremental);
	manifest_addf(m, "set.lazy_restore", "%d", cfg->lazy_restore);
	manifest_addf(m, "set.dump_via_memory", "%d", cfg->dump_via_memory);
}

static int read_cpuinfo(char **ret, size_t *ret_len, char *why, size_t len)
{
	char dir[] = "/tmp/cryo-cpuinfo-XXXXXX";
	if (!mkdtemp(dir)) {
		snprintf(why, len, "cannot make a temporary directory: %m");
		return -errno;
	}
	struct cryo_error err = {{0}};
	int r = criu_glue_cpuinfo_dump(dir, &err);
	if (r == 0) {
		char path[64];
		snprintf(path, sizeof(path), "%s/cpuinfo.img", dir);
		r = util_read_file(path, ret, ret_len);
		if (r < 0)
			snprintf(err.msg, sizeof(err.msg), "cannot read '%s': %s", path,
			         strerror(-r));
	}
	util_rm_rf(dir);
	if (r < 0)
		snprintf(why, len, "%s", err.msg);
	return r;
}

/* Asks the target whether it can take the program; *gen gets the generation
 * number the target will store it as. */
static int offer(struct migration_out *mo, struct channel *c, bool precopy, uint64_t *gen,
                 char *why, size_t len)
{
	struct supervisor *s = mo->s;
	struct manifest *m = manifest_new();
	if (!m) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	struct criu_glue_dump_stats none = {0};
	fill_manifest(s, m, 0, TRIGGER_MIGRATE, &none);
	add_settings(s->cfg, m);
	if (precopy)
		manifest_add(m, "precopy", "1");
	_cleanup_free_ char *text = NULL, *cpu = NULL;
	size_t text_len, cpu_len;
	int r = migrate_describe(s->init_pid, m, why, len);
	if (r == 0)
		r = manifest_to_text(m, &text, &text_len);
	manifest_free(m);
	if (r == 0)
		r = read_cpuinfo(&cpu, &cpu_len, why, len);
	if (r == 0)
		r = channel_send(c, MSG_OFFER, text, text_len, why, len);
	if (r == 0)
		r = channel_send(c, MSG_CPUINFO, cpu, cpu_len, why, len);
	if (r < 0)
		return r;
	uint8_t type;
	const uint8_t *data;
	size_t n;
	r = channel_recv(c, &type, &data, &n, MIGRATE_ANSWER_MS, why, len);
	if (r < 0)
		return r;
	if (type == MSG_REFUSE) {
		snprintf(why, len, "the target refused: %.*s", (int)n, (const char *)data);
		return -EPERM;
	}
	uint64_t le;
	if (type != MSG_ACCEPT || n != sizeof(le)) {
		snprintf(why, len, "the target answered the offer with message %u", type);
		return -EPROTO;
	}
	memcpy(&le, data, sizeof(le));
	*gen = le64toh(le);
	return 0;
}

/* Waits for the target's answer to an image: want, or FAILED and its reason
 * (the restore may take a while). */
static int await_answer(struct channel *c, uint8_t want, char *why, size_t len)
{
	uint8_t type;
	const uint8_t *data;
	size_t n;
	int r = channel_recv(c, &type, &data, &n, 4 * MIGRATE_ANSWER_MS, why, len);
	if (r < 0 || type == want)
		return r;
	if (type == MSG_FAILED)
		snprintf(why, len, "%.*s", (int)n, (const char *)data);
	else
		snprintf(why, len, "the target answered with message %u", type);
	return -EIO;
}

/* Pre-copy: a dump taken while the program runs on (and stays on the
 * network) is sent whole before the freeze; the image taken frozen then
 * only carries the pages that changed since. *index gets the pages of the
 * one sent. */
static int precopy(struct migration_out *mo, struct channel *c, uint64_t gen,
                   struct page_index **index, char *why, size_t len)
{
	struct supervisor *s = mo->s;
	char dir[PATH_MAX];
	int r = make_migrate_dir(s, dir, sizeof(dir));
	if (r < 0) {
		snprintf(why, len, "cannot make a directory for the dump: %s", strerror(-r));
		return r;
	}
	struct criu_glue_dump_opts o = dump_opts(s, dir, true);
	struct criu_glue_dump_stats st = {0};
	struct cryo_error cerr = {{0}};
	struct delta_dir dd = {0};
	struct manifest *m = NULL;
	r = criu_glue_dump(&o, &st, &cerr);
	if (r < 0) {
		snprintf(why, len, "%s", cerr.msg);
		goto out;
	}
	r = delta_prepare_dir(dir, gen, NULL, true, &dd);
	if (r == 0 && !(m = manifest_new()))
		r = -ENOMEM;
	if (r < 0) {
		snprintf(why, len, "cannot read the dumped memory: %s", strerror(-r));
		goto out;
	}
	fill_manifest(s, m, gen, TRIGGER_MIGRATE, &st);
	add_settings(s->cfg, m);
	struct migrate_progress progress = {report_progress, mo};
	r = migrate_send_image(c, dir, dd.files, dd.n_files, m, &progress, NULL, why, len);
	if (r == 0)
		r = await_answer(c, MSG_ACCEPT, why, len);
	if (r == 0)
		*index = TAKE_PTR(dd.index);
out:
	manifest_free(m);
	delta_dir_clear(&dd);
	util_rm_rf(dir);
	return r;
}

/* Whether the tests injected this fault into migrations
 * (CRYO_INJECT_MIGRATE_FAULT). */
static bool migrate_fault(const char *fault)
{
	const char *inject = getenv("CRYO_INJECT_MIGRATE_FAULT");
	return inject && !strcmp(inject, fault);
}

/* After a failed migration: the program runs here again, from its dump. */
static int resume_here(struct supervisor *s, const char *dir, char *why, size_t len)
{
	uint64_t ino[4] = {s->ino_stdin, s->ino_stdout, s->ino_stderr, s->ino_control};
	char cause[600];
	int r = restore_dir(s, dir, ino, true, false, cause, sizeof(cause));
	if (r < 0) {
		size_t used = strlen(why);
		snprintf(why + used, len - used, "; resuming it here failed too: %s", cause);
		return r;
	}
	if (s->net.fd >= 0 && net_set_up(&s->net, true, cause, sizeof(cause)) == 0)
		net_announce(&s->net, cause, sizeof(cause));
	send_msg(s, CRYO_MSG_RESULT, 1, s->current_generation);
	publish_pid(s);
	set_state(s, "running");
	return 0;
}

/* The generations left here would resume a second copy: they go. */
static void forget_generations(struct supervisor *s)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	if (image_store_list(s->cfg->paths.dir, &gens, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX];
		image_store_path(s->cfg->paths.dir, gens[i], path, sizeof(path));
		unlink(path);
	}
	util_fsync_dir(s->cfg->paths.dir);
}

/* cryo migrate: moves the program to the cryo serve at target. On any
 * failure before the target runs it, the program runs here again. */
static void migrate_out(struct supervisor *s, int client, const char *target, const char *key_file,
                        bool with_precopy)
{
	const struct supervisor_config *cfg = s->cfg;
	struct migration_out mo = {.s = s, .client = client, .t0 = util_now_ns()};
	mo.phase_t0 = mo.t0;
	char why[900] = "", dir[PATH_MAX] = "";
	uint8_t key[CHANNEL_KEY_BYTES];
	struct channel ch = {.fd = -1};
	bool frozen = false;
	uint64_t t_freeze = 0, frozen_ns = 0, sent = 0;
	struct criu_glue_dump_stats st = {0};
	struct page_index *base = NULL;
	struct delta_dir dd = {0};
	int r;

	if (!s->running) {
		snprintf(why, sizeof(why), "the program is not running");
		r = -ESRCH;
		goto out;
	}
	r = lazy_settle(s, why, sizeof(why));
	if (r < 0)
		goto out;
	r = channel_load_key(key_file, key, why, sizeof(why));
	if (r < 0)
		goto out;
	/* Without its own namespace its address stays here: connections
	 * could not live on there. */
	int conns = s->net.fd < 0 ? migrate_count_connections(s->init_pid) : 0;
	if (conns > 0) {
		snprintf(why, sizeof(why),
		         "it holds %d open TCP connection%s and its address cannot move with it "
		         "(start it with cryo run --net ADDR/PREFIX to migrate connections)",
		         conns, conns == 1 ? "" : "s");
		r = -EADDRNOTAVAIL;
		goto out;
	}
	int fd = connect_to(target, 5000, why, sizeof(why));
	if (fd < 0) {
		r = fd;
		goto out;
	}
	r = channel_open(&ch, fd, key, true, 10000, why, sizeof(why));
	sodium_memzero(key, sizeof(key));
	if (r < 0)
		goto out;
	phase_done(&mo, "connect");
	set_state(s, "migrating");
	uint64_t gen = 0;
	r = offer(&mo, &ch, with_precopy, &gen, why, sizeof(why));
	if (r < 0)
		goto out;
	phase_done(&mo, "preflight");
	if (with_precopy) {
		r = precopy(&mo, &ch, gen, &base, why, sizeof(why));
		if (r < 0)
			goto out;
		phase_done(&mo, "precopy");
		gen++;
	}

	/* Frozen from here: off the network, then dumped (and gone). */
	r = make_migrate_dir(s, dir, sizeof(dir));
	if (r < 0) {
		snprintf(why, sizeof(why), "cannot make a directory for the dump: %s",
		         strerror(-r));
		dir[0] = '\0';
		goto out;
	}
	if (s->net.fd >= 0) {
		r = net_set_up(&s->net, false, why, sizeof(why));
		if (r < 0)
			goto out;
	}
	t_freeze = util_now_ns();
	struct criu_glue_dump_opts o = dump_opts(s, dir, false);
	struct cryo_error cerr = {{0}};
	r = criu_glue_dump(&o, &st, &cerr);
	if (r < 0) {
		/* CRIU let the program run on. */
		snprintf(why, sizeof(why), "%s", cerr.msg);
		if (s->net.fd >= 0)
			net_set_up(&s->net, true, cerr.msg, sizeof(cerr.msg));
		goto out;
	}
	frozen = true;
	/* CRIU ended the tree; it was our child. */
	while (waitpid(s->init_pid, NULL, 0) < 0 && errno == EINTR)
		;
	s->running = false;
	s->init_pid = 0;
	drain_channels(s);
	close_fd(&s->stdin_w);
	close_fd(&s->stdout_r);
	close_fd(&s->stderr_r);
	close_fd(&s->control);
	phase_done(&mo, "dump");

	/* With a pre-copy, only the pages that changed since go. */
	const struct mem_file *mem = NULL;
	size_t n_mem = 0;
	if (base) {
		r = delta_prepare_dir(dir, gen, base, false, &dd);
		if (r < 0) {
			snprintf(why, sizeof(why), "cannot read the dumped memory: %s",
			         strerror(-r));
			goto out;
		}
		mem = dd.files;
		n_mem = dd.n_files;
	}
	struct manifest *m = manifest_new();
	if (!m) {
		r = -ENOMEM;
		snprintf(why, sizeof(why), "out of memory");
		goto out;
	}
	fill_manifest(s, m, gen, TRIGGER_MIGRATE, &st);
	add_settings(cfg, m);
	if (dd.incremental) {
		delta_describe(&dd, page_index_generation(base), m);
		manifest_add(m, "chain", "1");
	}
	struct migrate_progress progress = {report_progress, &mo};
	r = migrate_send_image(&ch, dir, mem, n_mem, m, &progress, &sent, why, sizeof(why));
	manifest_free(m);
	if (r < 0) {
		/* The target may have said why it stopped listening. */
		uint8_t t;
		const uint8_t *d;
		size_t dn;
		char ignored[128];
		if (channel_recv(&ch, &t, &d, &dn, 1000, ignored, sizeof(ignored)) == 0 &&
		    t == MSG_FAILED)
			snprintf(why, sizeof(why), "the target stopped: %.*s", (int)dn,
			         (const char *)d);
		goto out;
	}
	phase_done(&mo, "transfer");
	r = await_answer(&ch, MSG_RUNNING, why, sizeof(why));
	if (r < 0)
		goto out;
	frozen_ns = util_now_ns() - t_freeze;
	/* From here the target's copy is the program, once it hears so. A
	 * DONE that could not be sent never reached it (a part of a message
	 * does not authenticate), and a target that does not hear DONE stops
	 * its copy: the program runs here again. */
	/* Tests hold DONE back, so that a target that gave up meanwhile has
	 * closed the connection before it is sent. */
	if (migrate_fault("late-done"))
		usleep(300000);
	r = channel_send(&ch, MSG_DONE, NULL, 0, why, sizeof(why));
	if (r < 0) {
		char cause[sizeof(why)];
		snprintf(cause, sizeof(cause), "%s", why);
		snprintf(why, sizeof(why),
		         "the target gave up before it heard that the program may run there (%s)",
		         cause);
		goto out;
	}
	phase_done(&mo, "restore");
	r = 0;
out:
	page_index_free(base);
	if (r < 0 && frozen) {
		frozen_ns = util_now_ns() - t_freeze;
		/* The memory images went into memory for the delta: back to the
		 * directory CRIU restores from. */
		if (dd.n_maps && delta_dir_restore_files(&dd, dir) < 0)
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
			         "; its dump could not be put back together");
		if (resume_here(s, dir, why, sizeof(why)) == 0)
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
			         "; '%s' runs here again after %.1f ms frozen", cfg->name,
			         (double)frozen_ns / 1e6);
		else
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
			         " (its dump is kept in '%s')", dir);
	} else if (r < 0) {
		snprintf(why + strlen(why), sizeof(why) - strlen(why), "; '%s' was not paused",
		         cfg->name);
	}
	delta_dir_clear(&dd);
	if (ch.buf)
		channel_close(&ch);
	if (ch.fd >= 0)
		close(ch.fd);
	if (dir[0] && (r == 0 || s->running))
		util_rm_rf(dir);
	char esc[2000];
	if (r < 0) {
		if (s->running)
			set_state(s, "running");
		log_error("migration of '%s' to %s failed: %s", cfg->name, target, why);
		json_escape(why, esc, sizeof(esc));
		reply_line(client, "{\"ok\":false,\"errno\":%d,\"error\":\"%s\"}", -r, esc);
		return;
	}
	log_info("'%s' moved to %s (frozen %.1f ms, %" PRIu64 " bytes sent)", cfg->name, target,
	         (double)frozen_ns / 1e6, sent);
	forget_generations(s);
	json_escape(target, esc, sizeof(esc));
	reply_line(client,
	           "{\"ok\":true,\"to\":\"%s\",\"frozen_ms\":%.1f,\"criu_frozen_ms\":%.1f,"
	           "\"bytes\":%" PRIu64 ",\"total_ms\":%.1f,\"phases\":{%s}}",
	           esc, (double)frozen_ns / 1e6, (double)st.frozen_us / 1e3, sent,
	           (double)(util_now_ns() - mo.t0) / 1e6, mo.phases);
	s->stopping = true;
	s->leave = true;
	json_escape(target, s->moved_to, sizeof(s->moved_to));
	set_state(s, "migrated");
}

/* A copy that arrived by migration: restores it from the images extracted
 * on arrival, tells the source it runs once its archive is durable here, and
 * waits for the source's go-ahead before joining the network. */
static int arrive(struct supervisor *s)
{
	const struct supervisor_config *cfg = s->cfg;
	struct incoming *in = cfg->incoming;
	struct channel *c = in->ch;
	char why[700], msg[800];
	uint64_t ino[4];
	manifest_inodes(in->manifest, ino);
	set_state(s, "restoring");
	uint64_t t0 = util_now_ns();
	/* Tests make a target's restore fail here (as a CRIU that cannot
	 * restore would), to see the source take its program back. */
	int r = migrate_fault("restore")
	            ? util_fail(why, sizeof(why), -EIO, "CRIU restore failed (injected)")
	            : restore_dir(s, in->images, ino, true, false, why, sizeof(why));
	if (r == 0 && cfg->incremental) {
		page_index_free(s->index);
		s->index = NULL;
		if (delta_index_dir(in->images, in->generation, &s->index) < 0)
			s->index = NULL;
		s->chain = (unsigned)manifest_get_u64(in->manifest, "chain", 0);
	}
	util_rm_rf(in->images);
	in->images[0] = '\0';
	if (r < 0) {
		int n = snprintf(msg, sizeof(msg), "cannot restore on the target: %s", why);
		log_error("%s (see criu-restore.log in '%s')", msg, cfg->paths.dir);
		channel_send(c, MSG_FAILED, msg, (size_t)n, why, sizeof(why));
		set_state(s, "failed");
		return r;
	}
	s->current_generation = in->generation;
	log_info("restored '%s' from generation %" PRIu64 " in %.1f ms (program PID %d)", cfg->name,
	         in->generation, (double)(util_now_ns() - t0) / 1e6, program_pid(s));
	r = migrate_wait_durable(in, why, sizeof(why));
	int32_t pid = (int32_t)program_pid(s);
	if (r == 0)
		r = channel_send(c, MSG_RUNNING, &pid, sizeof(pid), why, sizeof(why));
	else
		channel_send(c, MSG_FAILED, why, strlen(why), msg, sizeof(msg));
	uint8_t type = 0;
	const uint8_t *data;
	size_t n;
	/* Tests make a target give up right after RUNNING (as one whose
	 * wait for DONE ran out would), resetting the connection. */
	if (r == 0 && migrate_fault("give-up")) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(c->fd);
		c->fd = -1;
		r = util_fail(why, sizeof(why), -ETIMEDOUT, "gave up waiting (injected)");
	}
	if (r == 0)
		r = channel_recv(c, &type, &data, &n, MIGRATE_DONE_MS, why, sizeof(why));
	if (r == 0 && type != MSG_DONE) {
		snprintf(why, sizeof(why), "unexpected message %u", type);
		r = -EPROTO;
	}
	if (r < 0) {
		log_error("'%s' was restored here, but the migration was not completed (%s): this "
		          "copy is stopped%s",
		          cfg->name, why,
		          in->durable ? ", its image set aside (.unconfirmed)" : "");
		s->stopping = true;
		kill(s->init_pid, SIGKILL);
		waitpid(s->init_pid, NULL, 0);
		s->running = false;
		set_state(s, "failed");
		return r;
	}
	in->confirmed = true;
	if (s->net.fd >= 0) {
		if (net_set_up(&s->net, true, why, sizeof(why)) < 0 ||
		    net_announce(&s->net, why, sizeof(why)) < 0)
			log_error("'%s' arrived, but its network: %s", cfg->name, why);
	}
	send_msg(s, CRYO_MSG_RESULT, 1, in->generation);
	publish_pid(s);
	set_state(s, "running");
	log_info("'%s' arrived by migration and runs (program PID %d)", cfg->name, pid);
	return 0;
}

static void handle_command(struct supervisor *s)
{
	_cleanup_close_ int fd = accept4(s->commands_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	/* A client that says nothing, or too much, is dropped. */
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char buf[PATH_MAX + 512];
	size_t len = 0;
	while (len < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	buf[len] = '\0';
	char *nl = strchr(buf, '\n');
	if (!nl) {
		reply_line(fd, "{\"ok\":false,\"errno\":%d,\"error\":\"malformed request\"}",
		           EPROTO);
		return;
	}
	*nl = '\0';
	char why[600] = "";
	if (!strcmp(buf, "checkpoint")) {
		int64_t g = checkpoint(s, TRIGGER_COMMAND, false, NULL, why, sizeof(why));
		if (g >= 0)
			log_checkpoint(s, TRIGGER_COMMAND);
		else
			log_error("cannot checkpoint '%s': %s; the program runs on", s->cfg->name,
			          why);
		reply_checkpoint(s, fd, g, why);
	} else if (!strcmp(buf, "status")) {
		reply_status(s, fd);
	} else if (!strcmp(buf, "stop")) {
		request_stop(s, SIGTERM);
		reply_line(fd, "{\"ok\":true}");
	} else if (!strcmp(buf, "stop-checkpoint")) {
		int64_t g = checkpoint(s, TRIGGER_STOP, false, NULL, why, sizeof(why));
		if (g >= 0) {
			log_checkpoint(s, TRIGGER_STOP);
			request_stop(s, SIGTERM);
		} else {
			log_error("cannot checkpoint '%s' before stopping it: %s; it runs on",
			          s->cfg->name, why);
		}
		reply_checkpoint(s, fd, g, why);
	} else if (!strncmp(buf, "migrate\t", 8)) {
		/* migrate TAB target TAB key-file */
		char *target = buf + 8, *key = strchr(target, '\t');
		if (!key) {
			reply_line(fd,
			           "{\"ok\":false,\"errno\":%d,\"error\":\"malformed request\"}",
			           EPROTO);
			return;
		}
		*key++ = '\0';
		/* and optionally TAB flags */
		char *flags = strchr(key, '\t');
		if (flags)
			*flags++ = '\0';
		migrate_out(s, fd, target, key, flags && !strcmp(flags, "precopy"));
	} else if (!strcmp(buf, "kill")) {
		request_stop(s, SIGKILL);
		reply_line(fd, "{\"ok\":true}");
	} else {
		reply_line(fd, "{\"ok\":false,\"errno\":%d,\"error\":\"unknown request\"}", EINVAL);
	}
}

/* ---- the program's end ----------------------------------------------------- */

/* Decides what follows the program's exit. Returns 1 to go on (restored or
 * restarted), or 0 with *status set when cryo run should exit. */
static int handle_exit(struct supervisor *s, int wstatus, int *status)
{
	const struct supervisor_config *cfg = s->cfg;
	s->running = false;
	s->init_pid = 0;
	lazy_end(s, true);
	unlink(cfg->paths.pid_file);
	drain_channels(s);

	/* The page server's memory goes back to the kernel now, in a thread
	 * (unmapping a GB takes ~60 ms): the restore that follows finds it
	 * free and warm, where fresh memory costs much more on a VM (restores
	 * in scripts/bench were slower with it held until after them). */
	criu_glue_spare_drop_later(&s->spare);
	image_writer_free(s->writer);
	s->writer = NULL;
	int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
	bool failed = code != 0;
	*status = code;
	char how[64];
	if (code > 128 && code < 128 + 65)
		snprintf(how, sizeof(how), "was killed by signal %d (%s)", code - 128,
		         strsignal(code - 128));
	else
		snprintf(how, sizeof(how), "exited with status %d", code);

	if (s->stopping || cfg->policy == RESTART_NO ||
	    (!failed && cfg->policy != RESTART_ALWAYS)) {
		set_state(s, "stopped");
		if (failed && !s->stopping)
			log_info("'%s' %s", cfg->name, how);
		return 0;
	}
	if (s->restarts_in_a_row >= cfg->max_restarts) {
		set_state(s, "failed");
		log_error(
		    "'%s' %s, after %u restarts in a row without a successful checkpoint; giving "
		    "up (images kept in '%s'; resume with: cryo restore %s)",
		    cfg->name, how, s->restarts_in_a_row, cfg->paths.dir, cfg->name);
		return 0;
	}
	s->restarts_in_a_row++;
	s->restarts_total++;
	log_info("'%s' %s; restoring the newest checkpoint", cfg->name, how);
	int r = restore_newest(s, 0);
	if (r == 0)
		return 1;
	if (r == -ENOENT) {
		log_info("'%s' has no checkpoint yet: starting it afresh", cfg->name);
		return start_fresh(s) == 0 ? 1 : 0;
	}
	log_error("no generation of '%s' could be restored; giving up (images kept in '%s'; see "
	          "criu-restore.log there)",
	          cfg->name, cfg->paths.dir);
	*status = code ? code : 1;
	return 0;
}

static int handle_signals(struct supervisor *s, int *status)
{
	struct signalfd_siginfo si;
	while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD: break;
		case SIGINT:
		case SIGTERM:
		case SIGHUP:
			/* A second request is not polite any more. */
			request_stop(s, s->stopping ? SIGKILL : (int)si.ssi_signo);
			break;
		default: break;
		}
	}
	/* Only our own child: libcriu waits for its criu helper itself. */
	while (s->running) {
		int ws;
		pid_t w = waitpid(s->init_pid, &ws, WNOHANG);
		if (w <= 0)
			break;
		if (!handle_exit(s, ws, status))
			return 0;
	}
	return 1;
}

/* The network of the generation a resume starts from, if it had one. */
static bool image_net_config(struct supervisor *s, struct net_config *ret)
{
	uint64_t gen = s->cfg->resume_generation;
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	if (!gen && (image_store_list(s->cfg->paths.dir, &gens, &n) < 0 || n == 0))
		return false;
	if (!gen)
		gen = gens[n - 1];
	struct manifest *m = NULL;
	struct cryo_error ierr = {{0}};
	if (image_store_read_manifest(s->cfg->paths.dir, gen, &m, &ierr) < 0)
		return false;
	*ret = (struct net_config){0};
	const char *addr = manifest_get(m, "net.addr"), *gw = manifest_get(m, "net.gateway"),
	           *br = manifest_get(m, "net.bridge");
	bool ok = addr && net_parse_cidr(addr, &ret->addr, &ret->prefix) == 0;
	if (ok && gw)
		net_parse_ip(gw, &ret->gateway);
	if (ok && br)
		snprintf(ret->bridge, sizeof(ret->bridge), "%s", br);
	manifest_free(m);
	return ok;
}

/* ---- the loop ----------------------------------------------------------------- */

int supervisor_run(const struct supervisor_config *cfg, int lock_fd)
{
	(void)lock_fd;
	struct supervisor s = {
	    .cfg = cfg,
	    .epfd = -1,
	    .sigfd = -1,
	    .timerfd = -1,
	    .commands_fd = -1,
	    .stdin_w = -1,
	    .stdout_r = -1,
	    .stderr_r = -1,
	    .control = -1,
	    .net = NET_NS_INIT,
	    .state = "starting",
	};
	int status = 1, r;

	r = criu_glue_version(&s.criu_version);
	if (r < 0 || s.criu_version < CRIU_GLUE_MIN_VERSION) {
		const char *bin = criu_glue_binary();
		if (!bin)
			log_error("CRIU is not installed; run scripts/setup (or set CRYO_CRIU to "
			          "its path)");
		else if (r < 0)
			log_error(
			    "'%s' does not say its version (%s): is it CRIU? run scripts/setup, "
			    "or set CRYO_CRIU",
			    bin, strerror(-r));
		else
			log_error("CRIU at '%s' is version %d.%d.%d; cryo needs 4.2 or newer (run "
			          "scripts/setup)",
			          bin, s.criu_version / 10000, s.criu_version / 100 % 100,
			          s.criu_version % 100);
		return -ENOENT;
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	s.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	s.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s.sigfd < 0 || s.epfd < 0) {
		log_error("cannot set up the supervisor: %m");
		return -errno;
	}
	ep_add(&s, s.sigfd, EPOLLIN, EV_SIGNAL);

	/* Our stdin: a pipe or terminal is watched; anything else is read as
	 * if always ready (a file) or is empty. */
	fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
	if (ep_add(&s, STDIN_FILENO, 0, EV_STDIN) == 0)
		s.stdin_pollable = true;
	else if (fcntl(STDIN_FILENO, F_GETFD) < 0)
		s.stdin_eof = true;

	/* We hold the workload's lock: what an earlier supervisor left half
	 * written is nobody's (cryo serve swept before an arrival). */
	if (!cfg->incoming)
		image_store_sweep(cfg->paths.dir);
	util_scratch_sweep();
	r = listen_commands(&s);
	if (r < 0) {
		log_error("cannot listen on '%s': %s (is the state directory writable?)",
		          cfg->paths.socket, strerror(-r));
		goto out;
	}
	if (cfg->every_ns) {
		s.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		struct itimerspec its = {
		    .it_value = {(time_t)(cfg->every_ns / 1000000000ULL),
		                 (long)(cfg->every_ns % 1000000000ULL)},
		    .it_interval = {(time_t)(cfg->every_ns / 1000000000ULL),
		                    (long)(cfg->every_ns % 1000000000ULL)},
		};
		if (s.timerfd < 0 || timerfd_settime(s.timerfd, 0, &its, NULL) < 0) {
			log_error("cannot create the checkpoint timer: %m");
			goto out;
		}
		ep_add(&s, s.timerfd, EPOLLIN, EV_TIMER);
	}

	/* Resumed images bring their address unless --net says otherwise. */
	struct net_config image_net;
	const struct net_config *net = cfg->net;
	if (!net && cfg->resume && image_net_config(&s, &image_net))
		net = &image_net;
	if (net) {
		char why[400];
		/* A migrated copy stays off the network until the source is gone. */
		r = net_create(cfg->name, net, !cfg->incoming, &s.net, why, sizeof(why));
		/* Peers may remember the address elsewhere (it moved, or it
		 * comes back): tell them where it is now. */
		if (r == 0 && !cfg->incoming && net_announce(&s.net, why, sizeof(why)) < 0)
			log_error("'%s': %s", cfg->name, why);
		if (r < 0) {
			log_error("cannot set up the network of '%s': %s", cfg->name, why);
			if (cfg->incoming)
				channel_send(cfg->incoming->ch, MSG_FAILED, why, strlen(why), why,
				             sizeof(why));
			goto out;
		}
	}
	if (cfg->incoming) {
		if (arrive(&s) < 0)
			goto out;
	} else if (cfg->resume) {
		r = restore_newest(&s, cfg->resume_generation);
		if (r == -ENOENT && !cfg->resume_generation) {
			log_error("'%s' has no images in '%s' to restore", cfg->name,
			          cfg->paths.dir);
			goto out;
		}
		if (r < 0) {
			if (r != -ENOENT)
				log_error("could not restore '%s' (images kept in '%s'; see "
				          "criu-restore.log there)",
				          cfg->name, cfg->paths.dir);
			goto out;
		}
	} else {
		/* Images of an earlier run stay until this run's first checkpoint
		 * is durable, but a crash before then must not resume them. */
		if (image_store_next_generation(cfg->paths.dir, &s.min_generation) < 0)
			s.min_generation = UINT64_MAX;
		if (start_fresh(&s) < 0)
			goto out;
	}

	for (;;) {
		struct epoll_event ev[16];
		int n = epoll_wait(s.epfd, ev, 16, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("epoll_wait: %m");
			break;
		}
		for (int i = 0; i < n; i++) {
			switch (ev[i].data.u64) {
			case EV_SIGNAL:
				if (!handle_signals(&s, &status))
					goto out;
				break;
			case EV_CONTROL:
				if (s.running)
					handle_control(&s);
				break;
			case EV_STDOUT:
				if (s.stdout_r >= 0 && !forward_output(s.stdout_r, STDOUT_FILENO))
					ep_del(&s, s.stdout_r);
				break;
			case EV_STDERR:
				if (s.stderr_r >= 0 && !forward_output(s.stderr_r, STDERR_FILENO))
					ep_del(&s, s.stderr_r);
				break;
			case EV_STDIN:
			case EV_STDIN_PIPE: pump_stdin(&s); break;
			case EV_TIMER: {
				uint64_t ticks;
				(void)!read(s.timerfd, &ticks, sizeof(ticks));
				if (!s.running || s.stopping)
					break;
				char why[600];
				int64_t g =
				    checkpoint(&s, TRIGGER_TIMER, false, NULL, why, sizeof(why));
				if (g >= 0)
					log_checkpoint(&s, TRIGGER_TIMER);
				else
					log_error("periodic checkpoint of '%s' failed: %s; the "
					          "program runs on",
					          cfg->name, why);
				break;
			}
			case EV_COMMANDS: handle_command(&s); break;
			case EV_LAZY: lazy_check_start(&s); break;
			case EV_LAZY_CHECKED: lazy_end(&s, false); break;
			}
		}
		if (s.leave) {
			status = 0;
			goto out;
		}
	}
out:
	if (s.running) {
		/* We are leaving: the namespace goes with us. */
		kill(s.init_pid, SIGKILL);
		waitpid(s.init_pid, NULL, 0);
		unlink(cfg->paths.pid_file);
	}
	lazy_end(&s, true);
	remove_wait(&s);
	drain_channels(&s);
	if (s.commands_fd >= 0) {
		unlink(cfg->paths.socket);
		close(s.commands_fd);
	}
	if (strcmp(s.state, "failed") != 0 && strcmp(s.state, "starting") != 0 &&
	    strcmp(s.state, "migrated") != 0)
		set_state(&s, "stopped");
	standby_free(s.standby);
	net_destroy(&s.net);
	criu_glue_spare_drop(&s.spare);
	image_writer_free(s.writer);
	page_index_free(s.index);
	close_fd(&s.timerfd);
	close_fd(&s.sigfd);
	close_fd(&s.epfd);
	return s.state && !strcmp(s.state, "starting") ? -EIO : status;
}
