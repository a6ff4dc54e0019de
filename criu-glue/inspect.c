#include "inspect.h"
#include "cleanup.h"
#include "criu-proto.h"
#include "pb.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void criu_glue_summary_clear(struct criu_glue_summary *s)
{
	for (size_t i = 0; i < s->n_files; i++)
		free(s->files[i]);
	free(s->files);
	free(s->procs);
	memset(s, 0, sizeof(*s));
}

static int read_image(const char *dir, const char *name, uint8_t **buf, size_t *len)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return util_read_file(path, (char **)buf, len);
}

/* The comm of a task, from core-PID.img: core_entry.tc.comm. */
static void read_comm(const char *dir, uint32_t pid, char *comm, size_t len)
{
	char name[64];
	snprintf(name, sizeof(name), "core-%" PRIu32 ".img", pid);
	_cleanup_free_ uint8_t *buf = NULL;
	size_t blen, off, mlen;
	const uint8_t *msg;
	snprintf(comm, len, "?");
	if (read_image(dir, name, &buf, &blen) < 0)
		return;
	off = pb_entries_start(buf, blen);
	if (pb_next_entry(buf, blen, &off, &msg, &mlen) != 1)
		return;
	const uint8_t *p = msg, *end = msg + mlen;
	struct pb_field f, g;
	while (pb_next(&p, end, &f) == 1) {
		if (f.number != PB_CORE_ENTRY_TC || f.wire_type != 2)
			continue;
		const uint8_t *q = f.data, *qend = f.data + f.len;
		while (pb_next(&q, qend, &g) == 1)
			if (g.number == PB_TASK_CORE_ENTRY_COMM && g.wire_type == 2)
				snprintf(comm, len, "%.*s", (int)g.len, (const char *)g.data);
	}
}

static int read_pstree(const char *dir, struct criu_glue_summary *s)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len, mlen;
	const uint8_t *msg;
	int r = read_image(dir, "pstree.img", &buf, &len);
	if (r < 0)
		return r;
	size_t off = pb_entries_start(buf, len);
	while ((r = pb_next_entry(buf, len, &off, &msg, &mlen)) == 1) {
		struct criu_glue_process pr = {0};
		const uint8_t *p = msg, *end = msg + mlen;
		struct pb_field f;
		while ((r = pb_next(&p, end, &f)) == 1) {
			switch (f.number) {
			case PB_PSTREE_ENTRY_PID: pr.pid = (uint32_t)f.varint; break;
			case PB_PSTREE_ENTRY_PPID: pr.ppid = (uint32_t)f.varint; break;
			case PB_PSTREE_ENTRY_PGID: pr.pgid = (uint32_t)f.varint; break;
			case PB_PSTREE_ENTRY_SID: pr.sid = (uint32_t)f.varint; break;
			case PB_PSTREE_ENTRY_THREADS:
				/* Repeated: one field each, or packed, where every
				 * byte without the continuation bit ends one. */
				if (f.wire_type == 2) {
					for (size_t i = 0; i < f.len; i++)
						pr.threads += !(f.data[i] & 0x80);
				} else {
					pr.threads++;
				}
				break;
			default: break;
			}
		}
		if (r < 0)
			return r;
		read_comm(dir, pr.pid, pr.comm, sizeof(pr.comm));
		struct criu_glue_process *n = realloc(s->procs, (s->n_procs + 1) * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->procs = n;
		s->procs[s->n_procs++] = pr;
	}
	return r;
}

static int add_line(struct criu_glue_summary *s, const char *line)
{
	char **n = realloc(s->files, (s->n_files + 1) * sizeof(char *));
	if (!n)
		return -ENOMEM;
	s->files = n;
	if (!(s->files[s->n_files] = strdup(line)))
		return -ENOMEM;
	s->n_files++;
	return 0;
}

static const char *tcp_state(uint64_t st)
{
	static const char *const names[] = {"?",          "ESTABLISHED", "SYN_SENT",  "SYN_RECV",
	                                    "FIN_WAIT1",  "FIN_WAIT2",   "TIME_WAIT", "CLOSE",
	                                    "CLOSE_WAIT", "LAST_ACK",    "LISTEN",    "CLOSING"};
	return st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

/* An address from repeated uint32 fields, in the order they came. */
struct addr {
	uint32_t w[4];
	int n;
};

static void addr_add(struct addr *a, const struct pb_field *f)
{
	if (f->wire_type == 0 && a->n < 4) {
		a->w[a->n++] = (uint32_t)f->varint;
	} else if (f->wire_type == 2) {
		const uint8_t *p = f->data, *end = f->data + f->len;
		while (p < end && a->n < 4) {
			uint64_t x = 0;
			for (int sh = 0; p < end; sh += 7) {
				uint8_t b = *p++;
				x |= (uint64_t)(b & 0x7f) << sh;
				if (!(b & 0x80))
					break;
			}
			a->w[a->n++] = (uint32_t)x;
		}
	}
}

static void addr_format(const struct addr *a, int family, char *buf, size_t len)
{
	uint32_t raw[4] = {0};
	memcpy(raw, a->w, sizeof(uint32_t) * (size_t)a->n);
	if (!inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, raw, buf, (socklen_t)len))
		snprintf(buf, len, "?");
}

static void describe_inet(const uint8_t *m, size_t len, char *out, size_t outlen)
{
	const uint8_t *p = m, *end = m + len;
	struct pb_field f;
	uint64_t family = 0, type = 0, state = 0, sport = 0, dport = 0;
	struct addr src = {0}, dst = {0};
	while (pb_next(&p, end, &f) == 1) {
		switch (f.number) {
		case PB_INET_SK_ENTRY_FAMILY: family = f.varint; break;
		case PB_INET_SK_ENTRY_TYPE: type = f.varint; break;
		case PB_INET_SK_ENTRY_STATE: state = f.varint; break;
		case PB_INET_SK_ENTRY_SRC_PORT: sport = f.varint; break;
		case PB_INET_SK_ENTRY_DST_PORT: dport = f.varint; break;
		case PB_INET_SK_ENTRY_SRC_ADDR: addr_add(&src, &f); break;
		case PB_INET_SK_ENTRY_DST_ADDR: addr_add(&dst, &f); break;
		default: break;
		}
	}
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	addr_format(&src, (int)family, s, sizeof(s));
	addr_format(&dst, (int)family, d, sizeof(d));
	const char *proto = type == 1 ? "TCP" : type == 2 ? "UDP" : "inet";
	if (state == 10 || dport == 0)
		snprintf(out, outlen, "socket %s%s %s:%" PRIu64 " %s", proto,
		         family == AF_INET6 ? "6" : "", s, sport,
		         type == 1 ? tcp_state(state) : "");
	else
		snprintf(out, outlen, "socket %s%s %s:%" PRIu64 " -> %s:%" PRIu64 " %s", proto,
		         family == AF_INET6 ? "6" : "", s, sport, d, dport,
		         type == 1 ? tcp_state(state) : "");
}

static void describe_unix(const uint8_t *m, size_t len, char *out, size_t outlen)
{
	const uint8_t *p = m, *end = m + len;
	struct pb_field f;
	uint64_t type = 0, state = 0, peer = 0;
	char name[128] = "";
	while (pb_next(&p, end, &f) == 1) {
		switch (f.number) {
		case PB_UNIX_SK_ENTRY_TYPE: type = f.varint; break;
		case PB_UNIX_SK_ENTRY_STATE: state = f.varint; break;
		case PB_UNIX_SK_ENTRY_PEER: peer = f.varint; break;
		case PB_UNIX_SK_ENTRY_NAME:
			if (f.len > 0 && f.data[0] == '\0')
				snprintf(name, sizeof(name), "@%.*s", (int)f.len - 1,
				         (const char *)f.data + 1);
			else
				snprintf(name, sizeof(name), "%.*s", (int)f.len,
				         (const char *)f.data);
			break;
		default: break;
		}
	}
	snprintf(out, outlen, "socket unix %s %s%s%s",
	         type == 1   ? "stream"
	         : type == 2 ? "dgram"
	                     : "seqpacket",
	         type == 1 && state == 10 ? "LISTEN "
	         : peer                   ? "connected "
	                                  : "",
	         name[0] ? name : "(unnamed)", "");
}

static void describe_reg(const uint8_t *m, size_t len, char *out, size_t outlen)
{
	const uint8_t *p = m, *end = m + len;
	struct pb_field f;
	uint64_t pos = 0;
	char name[PATH_MAX / 16] = "?";
	while (pb_next(&p, end, &f) == 1) {
		if (f.number == PB_REG_FILE_ENTRY_POS)
			pos = f.varint;
		else if (f.number == PB_REG_FILE_ENTRY_NAME && f.wire_type == 2)
			snprintf(name, sizeof(name), "%.*s", (int)f.len, (const char *)f.data);
	}
	snprintf(out, outlen, "file %s (offset %" PRIu64 ")", name, pos);
}

static int read_files(const char *dir, struct criu_glue_summary *s)
{
	static const char *const kinds[] = {
	    [PB_FD_TYPES_PIPE] = "pipe",
	    [PB_FD_TYPES_FIFO] = "fifo",
	    [PB_FD_TYPES_EVENTFD] = "eventfd",
	    [PB_FD_TYPES_EVENTPOLL] = "epoll",
	    [PB_FD_TYPES_INOTIFY] = "inotify",
	    [PB_FD_TYPES_SIGNALFD] = "signalfd",
	    [PB_FD_TYPES_PACKETSK] = "packet socket",
	    [PB_FD_TYPES_TTY] = "tty",
	    [PB_FD_TYPES_FANOTIFY] = "fanotify",
	    [PB_FD_TYPES_NETLINKSK] = "netlink socket",
	    [PB_FD_TYPES_NS] = "namespace",
	    [PB_FD_TYPES_TUNF] = "tun",
	    [PB_FD_TYPES_EXT] = "external",
	    [PB_FD_TYPES_TIMERFD] = "timerfd",
	    [PB_FD_TYPES_MEMFD] = "memfd",
	    [PB_FD_TYPES_BPFMAP] = "bpf map",
	    [PB_FD_TYPES_PIDFD] = "pidfd",
	};
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len, mlen;
	const uint8_t *msg;
	int r = read_image(dir, "files.img", &buf, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	size_t off = pb_entries_start(buf, len);
	while ((r = pb_next_entry(buf, len, &off, &msg, &mlen)) == 1) {
		const uint8_t *p = msg, *end = msg + mlen;
		struct pb_field f;
		uint64_t type = 0;
		char line[512] = "";
		while (pb_next(&p, end, &f) == 1) {
			if (f.number == PB_FILE_ENTRY_TYPE && f.wire_type == 0)
				type = f.varint;
			else if (f.number == PB_FILE_ENTRY_REG && f.wire_type == 2)
				describe_reg(f.data, f.len, line, sizeof(line));
			else if (f.number == PB_FILE_ENTRY_ISK && f.wire_type == 2)
				describe_inet(f.data, f.len, line, sizeof(line));
			else if (f.number == PB_FILE_ENTRY_USK && f.wire_type == 2)
				describe_unix(f.data, f.len, line, sizeof(line));
		}
		if (!line[0])
			snprintf(line, sizeof(line), "%s",
			         type < sizeof(kinds) / sizeof(kinds[0]) && kinds[type]
			             ? kinds[type]
			             : "other");
		r = add_line(s, line);
		if (r < 0)
			return r;
	}
	return r;
}

bool criu_glue_is_memory_image(const char *name)
{
	return strncmp(name, "pages-", 6) == 0;
}

int criu_glue_describe(const char *images_dir, struct criu_glue_summary *ret)
{
	memset(ret, 0, sizeof(*ret));
	int r = read_pstree(images_dir, ret);
	if (r == 0)
		r = read_files(images_dir, ret);
	if (r < 0)
		criu_glue_summary_clear(ret);
	return r;
}
