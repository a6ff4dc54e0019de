#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int cli_request_events(const struct workload_paths *p, const char *request, int timeout_ms,
                       void (*on_event)(struct json_object *event, void *ctx), void *ctx,
                       struct json_object **reply)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(p->socket) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, p->socket);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return errno == ENOENT ? -ENOENT : -ECONNREFUSED;
	_cleanup_free_ char *line = NULL;
	if (asprintf(&line, "%s\n", request) < 0)
		return -ENOMEM;
	if (util_write_all(fd, line, strlen(line)) < 0)
		return -ECONNRESET;

	size_t cap = 4096, len = 0;
	_cleanup_free_ char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		/* Hand over complete event lines; stop at the first other one. */
		char *nl;
		while ((nl = memchr(buf, '\n', len))) {
			*nl = '\0';
			struct json_object *o = cryo_json_parse(buf);
			if (!o)
				return -EPROTO;
			if (!on_event || !cryo_json_str(o, "event")) {
				*reply = o;
				return 0;
			}
			on_event(o, ctx);
			json_object_put(o);
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len);
		}
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int k = poll(&pfd, 1, timeout_ms);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k == 0 ? -ETIMEDOUT : -errno;
		if (len + 1 >= cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb)
				return -ENOMEM;
			buf = nb;
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -ECONNRESET; /* the supervisor went away mid-answer */
		len += (size_t)r;
	}
}

int cli_request(const struct workload_paths *p, const char *request, int timeout_ms,
                struct json_object **reply)
{
	return cli_request_events(p, request, timeout_ms, NULL, NULL, reply);
}

const char *cli_reply_error(struct json_object *reply)
{
	if (cryo_json_bool(reply, "ok"))
		return NULL;
	const char *why = cryo_json_str(reply, "error");
	return why ? why : "unknown error";
}

/* Why a supervisor could not be asked (r from cli_request), in one line. */
static void unreachable_reason(const struct workload_paths *p, const char *name, int r, char *buf,
                               size_t len)
{
	if (r == -ENOENT || r == -ECONNREFUSED)
		snprintf(
		    buf, len,
		    "'%s' is not running: no supervisor in '%s' (start it with cryo run --name "
		    "%s -- PROG, or resume it with cryo restore %s)",
		    name, p->dir, name, name);
	else if (r == -ETIMEDOUT)
		snprintf(buf, len,
		         "the supervisor of '%s' did not answer in time; try again, or see cryo "
		         "status %s",
		         name, name);
	else if (r == -EPROTO)
		snprintf(buf, len,
		         "the supervisor of '%s' answered with something that is not JSON; is "
		         "this cryo older or newer than the one that runs it?",
		         name);
	else
		snprintf(buf, len,
		         "lost the supervisor of '%s' while waiting for its answer (%s); see cryo "
		         "status %s",
		         name, strerror(-r), name);
}

void cli_report_unreachable(const struct workload_paths *p, const char *name, int r)
{
	char why[PATH_MAX + 512];
	unreachable_reason(p, name, r, why, sizeof(why));
	log_error("%s", why);
}

void cli_fail(bool json, int r, const char *fmt, ...)
{
	char why[PATH_MAX + 512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (!json) {
		log_error("%s", why);
		return;
	}
	_cleanup_json_ struct json_object *o = json_object_new_object();
	cryo_json_add(o, "ok", json_object_new_boolean(false));
	cryo_json_add(o, "errno", json_object_new_int(-r));
	cryo_json_add(o, "error", json_object_new_string(why));
	printf("%s\n", cryo_json_text(o));
}

bool cli_reply_done(const struct workload_paths *p, const char *name, int r,
                    struct json_object *reply, bool json, const char *what, const char *suffix,
                    int *status)
{
	*status = 1;
	if (r < 0) {
		/* With --json, as a refusal is: {"ok":false,...} on stdout. */
		char why[PATH_MAX + 512];
		unreachable_reason(p, name, r, why, sizeof(why));
		cli_fail(json, r, "%s", why);
		return true;
	}
	const char *why = cli_reply_error(reply);
	if (json) {
		printf("%s\n", cryo_json_text(reply));
		*status = why ? 1 : 0;
		return true;
	}
	if (why) {
		log_error("cannot %s '%s': %s%s", what, name, why, suffix);
		return true;
	}
	return false;
}

int cli_require_root(const char *verb)
{
	if (geteuid() == 0)
		return 0;
	log_error(
	    "'cryo %s' must run as root: CRIU needs CAP_SYS_ADMIN and CAP_SYS_PTRACE (try: sudo "
	    "cryo %s ...)",
	    verb, verb);
	return -EPERM;
}

int cli_workload(const char *state_dir_opt, const char *name, struct workload_paths *p)
{
	const char *sd = workload_state_dir(state_dir_opt);
	if (!util_name_is_valid(name)) {
		log_error(
		    "invalid workload name '%s': use 1-64 letters, digits, '.', '_' or '-', not "
		    "starting with '.' or '-'",
		    name);
		return -EINVAL;
	}
	int r = workload_paths_init(p, sd, name);
	if (r < 0)
		log_error("state directory path '%s' is too long", sd);
	return r;
}

int cli_parse(int argc, char **argv, const char *verb, void (*usage)(FILE *),
              const struct option *extra, int (*on_option)(int, const char *, void *), void *ctx,
              int min_args, int max_args, const char *what, struct cli_args *out)
{
	struct option opts[16] = {
	    {"state-dir", required_argument, NULL, 1},
	    {"help", no_argument, NULL, 3},
	    {"json", no_argument, NULL, 2},
	};
	/* cryo serve prints nothing but its log: --json would mean nothing
	 * there, so it is refused as any unknown option is. */
	size_t n = strcmp(verb, "serve") != 0 ? 3 : 2, first_extra = n;
	for (; extra && extra[n - first_extra].name && n < ARRAY_SIZE(opts) - 1; n++)
		opts[n] = extra[n - first_extra];
	*out = (struct cli_args){0};
	optind = 1;
	opterr = 0;
	int c, r;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 1: out->state_dir = optarg; break;
		case 2: out->json = true; break;
		case 3:
			usage(stdout);
			out->help = true;
			return 0;
		case '?':
			log_error("unknown option '%s' for 'cryo %s' (see cryo %s --help)",
			          argv[optind - 1], verb, verb);
			return -EINVAL;
		default:
			r = on_option ? on_option(c, optarg, ctx) : -EINVAL;
			if (r < 0)
				return r;
		}
	}
	int n_args = argc - optind;
	if (n_args < min_args || n_args > max_args) {
		log_error("give %s", what);
		return -EINVAL;
	}
	out->first = optind;
	return 0;
}

/* What cli.h says. */
bool cli_held_file(const struct manifest *m, size_t i, struct cli_held *h)
{
	unsigned long long idx, size;
	int at = -1;
	if (strcmp(m->keys[i], "held_file") != 0 ||
	    sscanf(m->values[i], "%llu %llu %*o %*u %*u %n", &idx, &size, &at) != 2 || at < 0)
		return false;
	char name[32];
	snprintf(name, sizeof(name), "file-%llu.data", idx);
	*h = (struct cli_held){.path = m->values[i] + at, .size = size};
	for (size_t k = 0; k < m->n_files; k++)
		if (!strcmp(m->files[k].name, name))
			h->stored = m->files[k].size;
	size_t len = strlen(name);
	for (size_t k = 0; k < m->n_entries; k++)
		if (!strcmp(m->keys[k], "file_delta") && !strncmp(m->values[k], name, len) &&
		    m->values[k][len] == ' ')
			h->base = manifest_get_u64(m, "base", 0);
	return true;
}

struct json_object *cli_held_json(const struct manifest *m)
{
	struct json_object *held = json_object_new_array();
	struct cli_held h;
	for (size_t i = 0; i < m->n_entries; i++) {
		if (!cli_held_file(m, i, &h))
			continue;
		struct json_object *f = json_object_new_object();
		cryo_json_add(f, "path", json_object_new_string(h.path));
		cryo_json_add(f, "size", json_object_new_uint64(h.size));
		cryo_json_add(f, "stored", json_object_new_uint64(h.stored));
		cryo_json_add(f, "base", json_object_new_uint64(h.base));
		json_object_array_add(held, f);
	}
	return held;
}
