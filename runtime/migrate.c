#include "migrate.h"
#include "cleanup.h"
#include "glue.h"
#include "net.h"
#include "pages.h"
#include "store.h"
#include "supervisor.h"
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <net/if.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- the offer ---------------------------------------------------------------- */

struct strset {
	char **v;
	size_t n;
};

static bool strset_add(struct strset *s, const char *str)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i], str))
			return false;
	char **v = realloc(s->v, (s->n + 1) * sizeof(*v));
	if (!v)
		return false;
	s->v = v;
	s->v[s->n] = strdup(str);
	return s->v[s->n] ? (s->n++, true) : false;
}

static void strset_free(struct strset *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

/* The files a restore will open by path: everything mapped from a file, as
 * path and, to hash what is mapped rather than what the path names now, its
 * /proc/PID/map_files entry (a string "PATH\tMAP_FILE"). */
static void collect_mapped(pid_t pid, struct strset *files, struct strset *seen)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char line[PATH_MAX + 128];
	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *p = strchr(line, '/');
		char range[64];
		unsigned long long ino = 0;
		if (!p || sscanf(line, "%63s %*s %*s %*s %llu", range, &ino) != 2 || !ino)
			continue;
		size_t l = strlen(p);
		/* Deleted files travel inside the image (CRIU's ghost files). */
		if (l > 10 && !strcmp(p + l - 10, " (deleted)"))
			continue;
		if (!strncmp(p, "/dev/", 5) || !strncmp(p, "/memfd:", 7) || !strncmp(p, "/SYSV", 5))
			continue;
		if (!strset_add(seen, p))
			continue;
		char entry[PATH_MAX + 128];
		snprintf(entry, sizeof(entry), "%s\t/proc/%d/map_files/%s", p, pid, range);
		strset_add(files, entry);
	}
}

/* Size and XXH3-128 of a file; path may be a /proc magic link. */
static int hash_file(const char *path, uint64_t *size, char hex[33])
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	void *data;
	size_t len;
	int r = util_map_fd(fd, &data, &len);
	if (r < 0)
		return r;
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
	if (data)
		munmap(data, len);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
	*size = len;
	return 0;
}

/* Calls fn on each "held" line of offer (HELD_KEY: "SIZE PATH"), stopping
 * at the first that does not return 0; -EPROTO for a line that is not
 * "SIZE PATH" (fn is not called for it). */
static int each_held(const struct manifest *offer,
                     int (*fn)(uint64_t size, const char *path, void *arg), void *arg)
{
	for (size_t i = 0; i < offer->n_entries; i++) {
		if (strcmp(offer->keys[i], MIGRATE_HELD_KEY) != 0)
			continue;
		const char *v = offer->values[i], *sp = strchr(v, ' ');
		char num[24];
		uint64_t size;
		if (!sp || (size_t)(sp - v) >= sizeof(num))
			return -EPROTO;
		memcpy(num, v, (size_t)(sp - v));
		num[sp - v] = '\0';
		if (util_parse_uint(num, UINT64_MAX, &size) < 0)
			return -EPROTO;
		int r = fn(size, sp + 1, arg);
		if (r != 0)
			return r;
	}
	return 0;
}

static int add_held_path(uint64_t size, const char *path, void *seen)
{
	(void)size;
	strset_add(seen, path);
	return 0;
}

int migrate_describe(pid_t root, struct manifest *offer, struct cryo_error *err)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n;
	int r = util_proc_tree(root, &pids, &n);
	if (r < 0)
		return error_set(err, r, "cannot list the program's processes: %s", strerror(-r));
	/* The files it holds open for writing travel with it, put back on the
	 * target before CRIU maps them: they need not be there already. */
	struct strset files = {0}, seen = {0};
	each_held(offer, add_held_path, &seen);
	for (size_t i = 0; i < n; i++)
		collect_mapped(pids[i], &files, &seen);
	for (size_t i = 0; i < files.n && r == 0; i++) {
		uint64_t size;
		char hex[33];
		char *tab = strchr(files.v[i], '\t');
		*tab = '\0';
		if (hash_file(tab + 1, &size, hex) < 0 && hash_file(files.v[i], &size, hex) < 0)
			continue; /* gone since: CRIU will say so */
		r = manifest_addf(offer, "mapped", "%s %" PRIu64 " %s", hex, size, files.v[i]);
	}
	strset_free(&files);
	strset_free(&seen);
	if (r == 0)
		r = manifest_addf(offer, "raw_estimate", "%" PRIu64,
		                  criu_glue_estimate_pages(root));
	return r < 0 ? error_set(err, r, "out of memory") : 0;
}

/* The socket inodes the tree's processes hold. */
static void collect_sockets(pid_t pid, struct strset *inodes)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	_cleanup_closedir_ DIR *d = opendir(path);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char link[64];
		ssize_t n = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
		if (n <= 8)
			continue;
		link[n] = '\0';
		unsigned long long ino;
		if (sscanf(link, "socket:[%llu]", &ino) == 1) {
			char num[32];
			snprintf(num, sizeof(num), "%llu", ino);
			strset_add(inodes, num);
		}
	}
}

int migrate_count_connections(pid_t root)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n;
	if (util_proc_tree(root, &pids, &n) < 0)
		return 0;
	struct strset inodes = {0};
	for (size_t i = 0; i < n; i++)
		collect_sockets(pids[i], &inodes);
	int count = 0;
	static const char *const tables[] = {"tcp", "tcp6"};
	for (size_t t = 0; t < 2; t++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/net/%s", root, tables[t]);
		_cleanup_fclose_ FILE *f = fopen(path, "re");
		char line[512];
		while (f && fgets(line, sizeof(line), f)) {
			unsigned st;
			char inode[32];
			/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
			if (sscanf(line, "%*s %*s %*s %x %*s %*s %*s %*s %*s %31s", &st, inode) !=
			    2)
				continue;
			if (st == 1 /* ESTABLISHED */ && !strset_add(&inodes, inode))
				count++;
		}
	}
	strset_free(&inodes);
	return count;
}

/* ---- pre-flight ----------------------------------------------------------------- */

int migrate_held_path_plain(const char *path)
{
	if (path[0] != '/' || strlen(path) >= PATH_MAX)
		return -EINVAL;
	for (const char *p = path; *p == '/';) {
		const char *c = p + 1, *end = strchrnul(c, '/');
		size_t len = (size_t)(end - c);
		if (len == 0 || (len == 1 && c[0] == '.') ||
		    (len == 2 && c[0] == '.' && c[1] == '.'))
			return -EINVAL;
		p = end;
	}
	return 0;
}

int migrate_held_path_check(const char *path, struct cryo_error *err)
{
	if (migrate_held_path_plain(path) < 0)
		return error_set(err, -EPERM,
		                 "the program holds a file at '%.100s', which is no plain absolute "
		                 "path (a target writes only those: no '.', '..' or empty part)",
		                 path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISREG(st.st_mode))
			return error_set(
			    err, -EEXIST,
			    "'%s', a file the program holds open for writing, is %s "
			    "here, not a regular file (a target writes only regular "
			    "files: remove it here)",
			    path, S_ISLNK(st.st_mode) ? "a symbolic link" : "something else");
		return 0;
	}
	if (errno != ENOENT)
		return error_set(err, -errno, "cannot look at '%s' here: %m", path);
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	if (stat(dir[0] ? dir : "/", &st) < 0 || !S_ISDIR(st.st_mode))
		return error_set(
		    err, -ENOENT,
		    "the directory of '%s', a file the program holds open for writing, "
		    "does not exist here (create it)",
		    path);
	return 0;
}

int migrate_held_path_allowed(const char *path, const struct migrate_limits *lim,
                              struct cryo_error *err)
{
	if (migrate_held_path_plain(path) < 0)
		return error_set(err, -EPERM,
		                 "the program holds a file at '%.100s', which is no plain absolute "
		                 "path (a target writes only those: no '.', '..' or empty part)",
		                 path);
	if (!lim || !lim->n_file_dirs)
		return 0;
	char allowed[256] = "";
	for (size_t i = 0, at = 0; i < lim->n_file_dirs; i++) {
		const char *d = lim->file_dirs[i];
		size_t n = strlen(d);
		if (!strcmp(d, "/") || (!strncmp(path, d, n) && path[n] == '/'))
			return 0;
		if (at < sizeof(allowed))
			at += (size_t)snprintf(allowed + at, sizeof(allowed) - at, "%s%s",
			                       i ? ", " : "", d);
	}
	return error_set(err, -EPERM,
	                 "the program holds '%.200s' open for writing, outside the directories "
	                 "this target writes such files under (it allows: %s; cryo serve "
	                 "--files-under DIR)",
	                 path, allowed);
}

static int sum_held(uint64_t size, const char *path, void *total)
{
	(void)path;
	uint64_t *t = total;
	*t = size > UINT64_MAX - *t ? UINT64_MAX : *t + size;
	return 0;
}

uint64_t migrate_held_bytes(const struct manifest *offer)
{
	uint64_t total = 0;
	each_held(offer, sum_held, &total);
	return total;
}

/* The limits a target holds every offer to, whoever sent it. */
#define OFFER_MAX_ARGS      65536
#define OFFER_MAX_ARG_BYTES 131072 /* the kernel's MAX_ARG_STRLEN */
#define OFFER_MAX_RESTARTS  1000000
#define OFFER_MAX_KEEP      1000000
#define OFFER_MAX_EVERY_NS  (UINT64_C(366) * 24 * 3600 * 1000000000)
#define OFFER_MAX_RAW       (UINT64_C(1) << 48) /* 256 TiB of memory */

/* The number key of offer, def when absent; a value that is no number or
 * lies outside min..max is refused, naming the field. */
static int offer_u64(const struct manifest *offer, const char *key, uint64_t def, uint64_t min,
                     uint64_t max, uint64_t *ret, struct cryo_error *err)
{
	const char *s = manifest_get(offer, key);
	uint64_t v = def;
	if (s && (util_parse_uint(s, UINT64_MAX, &v) < 0 || v < min || v > max))
		return error_set(
		    err, -ERANGE,
		    "the offer's %s '%.40s' is out of range: this target takes %" PRIu64
		    " to %" PRIu64,
		    key, s, min, max);
	*ret = v;
	return 0;
}

static bool listed(char *const *list, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i], s))
			return true;
	return false;
}

/* The offer's address, gateway and bridge. */
static int offer_net(const struct manifest *offer, const struct migrate_limits *lim,
                     struct net_config *net, bool *has_net, struct cryo_error *err)
{
	*net = (struct net_config){0};
	*has_net = false;
	const char *addr = manifest_get(offer, "net.addr");
	const char *gw = manifest_get(offer, "net.gateway");
	const char *br = manifest_get(offer, "net.bridge");
	if (!addr) {
		if (gw || br)
			return error_set(err, -EPROTO,
			                 "the offer has a net.%s but no net.addr to go with it",
			                 gw ? "gateway" : "bridge");
		return 0;
	}
	if (net_parse_cidr(addr, &net->addr, &net->prefix) < 0)
		return error_set(err, -EPROTO, "the offer's net.addr '%.60s' is invalid", addr);
	if (gw && (net_parse_ip(gw, &net->gateway) < 0 || net->gateway.family != net->addr.family))
		return error_set(err, -EPROTO,
		                 "the offer's net.gateway '%.60s' is invalid for net.addr '%s'", gw,
		                 addr);
	if (br) {
		if (!br[0] || strlen(br) >= IFNAMSIZ)
			return error_set(err, -EPROTO,
			                 "the offer's net.bridge '%.60s' is no interface name", br);
		if (!listed(lim->bridges, lim->n_bridges, br)) {
			char allowed[256] = "none";
			for (size_t i = 0, at = 0; i < lim->n_bridges && at < sizeof(allowed); i++)
				at += (size_t)snprintf(allowed + at, sizeof(allowed) - at, "%s%s",
				                       i ? ", " : "", lim->bridges[i]);
			return error_set(
			    err, -EPERM,
			    "the offer's net.bridge '%s' is not one this target lets "
			    "workloads attach to (it allows: %s; start cryo serve with "
			    "--bridge %s to allow it)",
			    br, allowed, br);
		}
		strcpy(net->bridge, br);
	}
	*has_net = true;
	return 0;
}

/* The offer's --files-skip paths: plain absolute paths, as cryo run takes
 * them, no more than a supervisor keeps. */
static int offer_files_skip(const struct manifest *offer, struct supervisor_config *cfg,
                            struct cryo_error *err)
{
	cfg->n_files_skip = 0;
	for (size_t i = 0; i < offer->n_entries; i++) {
		if (strcmp(offer->keys[i], "set.files_skip") != 0)
			continue;
		/* A trailing '/' as cryo run takes it. */
		const char *path = offer->values[i];
		char bare[PATH_MAX];
		size_t len = strnlen(path, PATH_MAX);
		while (len > 1 && path[len - 1] == '/')
			len--;
		bool plain = len > 0 && len < PATH_MAX && path[0] == '/';
		if (plain && len > 1) {
			memcpy(bare, path, len);
			bare[len] = '\0';
			plain = migrate_held_path_plain(bare) == 0;
		}
		if (!plain)
			return error_set(err, -EPROTO,
			                 "the offer's set.files_skip '%.100s' is no plain absolute "
			                 "path",
			                 path);
		if (cfg->n_files_skip == SUPERVISOR_FILES_SKIP_MAX)
			return error_set(err, -E2BIG,
			                 "the offer has more than %d set.files_skip lines",
			                 SUPERVISOR_FILES_SKIP_MAX);
		cfg->files_skip[cfg->n_files_skip++] = path;
	}
	return 0;
}

/* The files an offer says travel with the program: plain absolute paths,
 * no more in all than its own set.files_max. */
struct held_sum {
	uint64_t total, max;
	const struct migrate_limits *lim;
	struct cryo_error *err;
};

static int check_held_line(uint64_t size, const char *path, void *arg)
{
	struct held_sum *hs = arg;
	if (migrate_held_path_plain(path) < 0)
		return error_set(hs->err, -EPERM,
		                 "the offer's %s '%.100s' is no plain absolute path (a target "
		                 "writes only those: no '.', '..' or empty part)",
		                 MIGRATE_HELD_KEY, path);
	int r = migrate_held_path_allowed(path, hs->lim, hs->err);
	if (r < 0)
		return r;
	sum_held(size, path, &hs->total);
	if (hs->total > hs->max || hs->total > OFFER_MAX_RAW)
		return error_set(hs->err, -EFBIG,
		                 "the offer's %s files take more than its set.files_max (%" PRIu64
		                 " bytes)",
		                 MIGRATE_HELD_KEY, hs->max);
	return 0;
}

int migrate_check_offer(const struct manifest *offer, const struct migrate_limits *lim,
                        struct supervisor_config *cfg, struct net_config *net,
                        struct cryo_error *err)
{
	const char *name = manifest_get(offer, "name");
	if (!name || !util_name_is_valid(name))
		return error_set(err, -EPROTO, "the offer has no valid workload name");
	if (lim->n_names && !listed(lim->names, lim->n_names, name))
		return error_set(err, -EPERM,
		                 "this target does not take a workload named '%s' (cryo serve "
		                 "--allow)",
		                 name);
	cfg->name = name;

	size_t argc = 0;
	for (size_t i = 0; i < offer->n_entries; i++) {
		if (strcmp(offer->keys[i], "arg") != 0)
			continue;
		if (strlen(offer->values[i]) > OFFER_MAX_ARG_BYTES)
			return error_set(err, -E2BIG, "the offer's arg %zu is longer than %d bytes",
			                 argc, OFFER_MAX_ARG_BYTES);
		if (++argc > OFFER_MAX_ARGS)
			return error_set(err, -E2BIG, "the offer has more than %d args",
			                 OFFER_MAX_ARGS);
	}
	const char *arg0 = manifest_get(offer, "arg");
	if (!arg0 || !arg0[0])
		return error_set(err, -EPROTO, "the offer's arg names no program");
	const char *cwd = manifest_get(offer, "cwd");
	if (cwd && cwd[0] && (cwd[0] != '/' || strlen(cwd) >= PATH_MAX))
		return error_set(err, -EPROTO,
		                 "the offer's cwd '%.60s' is not an absolute path of less than %d "
		                 "bytes",
		                 cwd, PATH_MAX);

	uint64_t policy, max_restarts, keep, every, level, incremental, lazy, via_memory, flag,
	    files_max = 0, files = FILES_SNAPSHOT;
	int r = offer_u64(offer, "set.policy", RESTART_ON_FAILURE, 0, RESTART_NO, &policy, err);
	if (r == 0)
		r = offer_u64(offer, "set.max_restarts", 5, 0, OFFER_MAX_RESTARTS, &max_restarts,
		              err);
	if (r == 0)
		r = offer_u64(offer, "set.keep", 3, 1, OFFER_MAX_KEEP, &keep, err);
	if (r == 0)
		r = offer_u64(offer, "set.every_ns", 0, 0, OFFER_MAX_EVERY_NS, &every, err);
	if (r == 0 && every && every < 10000000)
		r = error_set(
		    err, -ERANGE,
		    "the offer's set.every_ns '%" PRIu64
		    "' is out of range: this target takes 0 (none) or 10000000 to %" PRIu64,
		    every, OFFER_MAX_EVERY_NS);
	if (r == 0)
		r = offer_u64(offer, "set.zstd_level", 3, 1, 19, &level, err);
	if (r == 0)
		r = offer_u64(offer, "set.files_max", SUPERVISOR_FILES_MAX_DEFAULT, 0, UINT64_MAX,
		              &files_max, err);
	if (r == 0)
		r = offer_u64(offer, "set.files", FILES_SNAPSHOT, FILES_SNAPSHOT, FILES_NONE,
		              &files, err);
	if (r == 0)
		r = offer_files_skip(offer, cfg, err);
	if (r == 0)
		r = offer_u64(offer, "set.incremental", 1, 0, 1, &incremental, err);
	if (r == 0)
		r = offer_u64(offer, "set.lazy_restore", 1, 0, 1, &lazy, err);
	if (r == 0)
		r = offer_u64(offer, "set.dump_via_memory", 1, 0, 1, &via_memory, err);
	if (r == 0)
		r = offer_u64(offer, "precopy", 0, 0, 1, &flag, err);
	if (r == 0)
		r = offer_u64(offer, "raw_estimate", 0, 0, OFFER_MAX_RAW, &flag, err);
	struct held_sum hs = {.max = files_max, .lim = lim, .err = err};
	if (r == 0 && (r = each_held(offer, check_held_line, &hs)) == -EPROTO)
		error_set(err, r, "the offer's %s lines are not 'SIZE PATH'", MIGRATE_HELD_KEY);
	bool has_net = false;
	if (r == 0)
		r = offer_net(offer, lim, net, &has_net, err);
	if (r < 0)
		return r;

	char **argv = calloc(argc + 1, sizeof(char *));
	if (!argv)
		return error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0, k = 0; i < offer->n_entries; i++)
		if (!strcmp(offer->keys[i], "arg"))
			argv[k++] = offer->values[i];
	cfg->argv = argv;
	cfg->policy = (enum restart_policy)policy;
	cfg->max_restarts = (unsigned)max_restarts;
	cfg->keep = (unsigned)keep;
	cfg->every_ns = every;
	cfg->zstd_level = (int)level;
	cfg->files_max = files_max;
	cfg->files = (enum files_policy)files;
	cfg->incremental = incremental;
	cfg->lazy_restore = lazy;
	cfg->dump_via_memory = via_memory;
	cfg->net = has_net ? net : NULL;
	return 0;
}

uint64_t migrate_stream_cap(const struct manifest *offer)
{
	/* The estimate counts the memory CRIU dumps (anonymous, shared and
	 * swapped); the archive adds CRIU's other images, deleted files that
	 * travel inside it and compression's worst case, and the program may
	 * grow a little before the dump. */
	uint64_t raw = manifest_get_u64(offer, "raw_estimate", 0);
	if (raw > OFFER_MAX_RAW)
		raw = OFFER_MAX_RAW;
	uint64_t cap = raw + raw / 4 + (UINT64_C(16) << 20);
	if (manifest_get_u64(offer, "precopy", 0) == 1)
		cap *= 2;
	/* The files it holds open for writing go once, with the frozen image
	 * (and may grow a little before it). */
	uint64_t held = migrate_held_bytes(offer);
	if (held > OFFER_MAX_RAW)
		held = OFFER_MAX_RAW;
	return cap + held + held / 4;
}

static int check_files(const struct manifest *offer, struct cryo_error *err)
{
	for (size_t i = 0; i < offer->n_entries; i++) {
		if (strcmp(offer->keys[i], "mapped") != 0)
			continue;
		char hex[33];
		uint64_t size;
		int off = 0;
		if (sscanf(offer->values[i], "%32s %" SCNu64 " %n", hex, &size, &off) != 2 || !off)
			return error_set(err, -EPROTO, "the offer lists a file oddly: '%s'",
			                 offer->values[i]);
		const char *path = offer->values[i] + off;
		uint64_t here_size;
		char here[33];
		int r = hash_file(path, &here_size, here);
		if (r < 0)
			return error_set(err, -ENOENT, "'%s', which the program maps, is %s here",
			                 path, r == -ENOENT ? "missing" : "unreadable");
		if (here_size != size || strcmp(here, hex) != 0)
			return error_set(err, -ESTALE,
			                 "'%s' differs here from the source's copy (%" PRIu64
			                 " bytes here, %" PRIu64
			                 " there): install the same version on both machines",
			                 path, here_size, size);
	}
	return 0;
}

static int check_cpu(const uint8_t *cpuinfo, size_t cpuinfo_len, struct cryo_error *err)
{
	char dir[] = "/tmp/cryo-cpuinfo-XXXXXX";
	if (!mkdtemp(dir))
		return error_set(err, -errno, "cannot make a temporary directory: %m");
	char path[64];
	snprintf(path, sizeof(path), "%s/cpuinfo.img", dir);
	int r = util_write_file_atomic(path, cpuinfo, cpuinfo_len);
	if (r == 0)
		r = criu_glue_cpuinfo_check(dir, err);
	else
		error_set(err, r, "cannot write '%s': %s", path, strerror(-r));
	util_rm_rf(dir);
	return r < 0 ? r : 0;
}

/* The files a target puts back, file system by file system: each must be
 * one it may write (migrate_held_path_check()), and their file system must
 * have room for what they add to the files there now, besides the image's
 * room when it is the state directory's. */
#define HELD_MAX_DEVS 16
struct held_room {
	struct cryo_error *err;
	dev_t state_dev;
	uint64_t state_need;
	size_t n;
	struct {
		dev_t dev;
		uint64_t need;
	} devs[HELD_MAX_DEVS];
};

static int check_held_room(uint64_t size, const char *path, void *arg)
{
	struct held_room *hr = arg;
	int r = migrate_held_path_check(path, hr->err);
	if (r < 0)
		return r;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	if (!dir[0])
		strcpy(dir, "/");
	struct stat st;
	struct statvfs sv;
	if (stat(dir, &st) < 0 || statvfs(dir, &sv) < 0)
		return 0; /* put back, it says why */
	uint64_t add = size;
	struct stat fst;
	if (lstat(path, &fst) == 0)
		add = (uint64_t)fst.st_size < size ? size - (uint64_t)fst.st_size : 0;
	size_t i = 0;
	while (i < hr->n && hr->devs[i].dev != st.st_dev)
		i++;
	if (i == hr->n) {
		if (hr->n == HELD_MAX_DEVS)
			return 0;
		hr->devs[hr->n].dev = st.st_dev;
		hr->devs[hr->n].need = st.st_dev == hr->state_dev ? hr->state_need : 0;
		hr->n++;
	}
	hr->devs[i].need += add;
	uint64_t have = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (have < hr->devs[i].need) {
		char a[32], b[32];
		return error_set(hr->err, -ENOSPC,
		                 "not enough room for the files the program holds open for writing "
		                 "in '%s' here: they need up to %s%s, %s are free",
		                 dir, util_format_bytes(hr->devs[i].need, a, sizeof(a)),
		                 st.st_dev == hr->state_dev ? " with the image" : "",
		                 util_format_bytes(have, b, sizeof(b)));
	}
	return 0;
}

int migrate_check(const struct manifest *offer, const uint8_t *cpuinfo, size_t cpuinfo_len,
                  const char *state_dir, struct cryo_error *err)
{
	int version = 0;
	if (criu_glue_version(&version) < 0 || version < CRIU_GLUE_MIN_VERSION)
		return error_set(
		    err, -ENOENT,
		    "CRIU 4.2 or newer is not installed on the target (run scripts/setup "
		    "there)");
	struct cryo_error cerr = {{0}};
	if (criu_glue_check(&cerr) < 0)
		return error_set(err, -ENOTSUP, "%s", cerr.msg);
	int r = check_cpu(cpuinfo, cpuinfo_len, err);
	if (r < 0)
		return r;
	r = check_files(offer, err);
	if (r < 0)
		return r;
	const char *cwd = manifest_get(offer, "cwd");
	struct stat st;
	if (cwd && cwd[0] && (stat(cwd, &st) < 0 || !S_ISDIR(st.st_mode)))
		return error_set(err, -ENOENT,
		                 "the program's working directory '%s' does not exist here", cwd);
	const char *addr = manifest_get(offer, "net.addr");
	if (addr) {
		struct net_ip a;
		unsigned prefix;
		if (net_parse_cidr(addr, &a, &prefix) < 0)
			return error_set(err, -EPROTO, "the offer's address '%s' is invalid", addr);
		if (net_address_in_use(&a))
			return error_set(err, -EADDRINUSE,
			                 "address %s is already assigned to an interface here",
			                 addr);
		const char *br = manifest_get(offer, "net.bridge");
		if (br && br[0] && !net_bridge_exists(br))
			return error_set(err, -ENODEV, "there is no bridge '%s' here (create it)",
			                 br);
	}
	/* The room the archives may take, as migrate_receive() holds them to. */
	uint64_t need = migrate_stream_cap(offer);
	struct statvfs sv;
	struct stat sst;
	if (statvfs(state_dir, &sv) == 0) {
		uint64_t have = (uint64_t)sv.f_bavail * sv.f_frsize;
		if (have < need) {
			char a[32], b[32];
			return error_set(
			    err, -ENOSPC,
			    "not enough room in '%s' here: the image may take up to %s (the "
			    "program's memory, uncompressed, and its other files), %s are free",
			    state_dir, util_format_bytes(need, a, sizeof(a)),
			    util_format_bytes(have, b, sizeof(b)));
		}
	}
	struct held_room room = {.err = err,
	                         .state_dev = stat(state_dir, &sst) == 0 ? sst.st_dev : 0,
	                         .state_need = need};
	r = each_held(offer, check_held_room, &room);
	return r == -EPROTO ? error_set(err, r, "the offer lists a file oddly") : r;
}

/* ---- the image -------------------------------------------------------------- */

struct writer {
	int fd;
	const char *dir;
	const struct mem_file *mem;
	size_t n_mem;
	struct manifest *m;
	struct image_write_stats stats;
	struct cryo_error err;
	int r;
};

static void *write_archive(void *arg)
{
	struct writer *w = arg;
	/* Level 1 on two threads: the program is frozen while this runs. */
	w->r = image_archive_write(w->fd, w->dir, w->mem, w->n_mem, w->m, 1, 2, NULL, &w->stats,
	                           &w->err);
	close(w->fd);
	return NULL;
}

static uint64_t dir_bytes(const char *dir)
{
	uint64_t total = 0;
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	struct stat st;
	while (d && (de = readdir(d)))
		if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
			total += (uint64_t)st.st_size;
	return total;
}

int migrate_send_image(struct channel *c, const char *dir, const struct mem_file *mem, size_t n_mem,
                       struct manifest *m, const struct migrate_progress *progress, uint64_t *sent,
                       struct cryo_error *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return error_set(err, -errno, "cannot make a pipe: %m");
	fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
	struct writer w = {.fd = p[1], .dir = dir, .mem = mem, .n_mem = n_mem, .m = m};
	pthread_t t;
	if (pthread_create(&t, NULL, write_archive, &w) != 0) {
		close(p[0]);
		close(p[1]);
		return error_set(err, -EAGAIN, "cannot start the compressor");
	}
	uint64_t raw_total = dir_bytes(dir), total = 0, last = 0;
	for (size_t i = 0; i < n_mem; i++)
		raw_total += mem[i].size;
	const size_t cap = CHANNEL_MAX_MSG;
	uint8_t *buf = malloc(cap);
	int r = buf ? 0 : error_set(err, -ENOMEM, "out of memory");
	while (r == 0) {
		/* Gather up to a whole message before sending it. */
		size_t got = 0;
		ssize_t n = 1;
		while (got < cap && (n = read(p[0], buf + got, cap - got)) != 0) {
			if (n < 0) {
				if (errno == EINTR)
					continue;
				r = error_set(err, -errno,
				              "cannot read the compressor's output: %m");
				break;
			}
			got += (size_t)n;
		}
		if (r == 0 && got)
			r = channel_send(c, MSG_DATA, buf, got, err);
		total += got;
		if (progress && progress->fn && (total - last >= (8u << 20) || n == 0)) {
			last = total;
			progress->fn(progress->arg, total,
			             __atomic_load_n(&w.stats.raw_bytes, __ATOMIC_RELAXED),
			             raw_total);
		}
		if (n == 0)
			break;
	}
	free(buf);
	/* A send that failed leaves the writer blocked: unblock it. */
	close(p[0]);
	pthread_join(t, NULL);
	if (r < 0)
		return r;
	if (w.r < 0)
		return error_set(err, w.r, "cannot archive the image: %s",
		                 w.err.msg[0] ? w.err.msg : strerror(-w.r));
	uint64_t le = htole64(total);
	r = channel_send(c, MSG_END, &le, sizeof(le), err);
	if (r == 0 && sent)
		*sent = total;
	return r;
}

struct extractor {
	int fd;
	const char *dir;
	struct manifest *m;
	struct cryo_error err;
	int r;
};

static void *extract(void *arg)
{
	struct extractor *x = arg;
	x->r = image_archive_read_stream(x->fd, x->dir, &x->m, &x->err);
	close(x->fd);
	return NULL;
}

static void *make_durable(void *arg)
{
	struct incoming *in = arg;
	int r = 0;
	if (fsync(in->archive_fd) < 0 || rename(in->tmp, in->final) < 0)
		r = -errno;
	close(in->archive_fd);
	in->archive_fd = -1;
	if (r == 0)
		r = util_fsync_dir(in->store_dir);
	in->sync_result = r;
	return NULL;
}

int migrate_receive(struct incoming *in, struct channel *c, const char *store_dir, uint64_t gen,
                    uint64_t raw_estimate, uint64_t max_bytes, struct cryo_error *err)
{
	*in = (struct incoming){.ch = c, .generation = gen, .archive_fd = -1};
	snprintf(in->store_dir, sizeof(in->store_dir), "%s", store_dir);
	image_store_path(store_dir, gen, in->final, sizeof(in->final));
	image_store_incoming_path(store_dir, gen, in->tmp, sizeof(in->tmp));
	char fallback[PATH_MAX];
	snprintf(fallback, sizeof(fallback), "%s/.incoming-images", store_dir);
	int r =
	    util_scratch_dir(raw_estimate, "incoming", fallback, in->images, sizeof(in->images));
	if (r < 0) {
		in->images[0] = '\0';
		return error_set(err, r, "cannot make a directory for the images on the target: %s",
		                 strerror(-r));
	}
	/* Made anew, never through a link (the workload's lock is held). */
	if (unlink(in->tmp) < 0 && errno != ENOENT)
		return error_set(err, -errno, "cannot remove '%s' on the target: %m", in->tmp);
	in->archive_fd = open(in->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (in->archive_fd < 0)
		return error_set(err, -errno, "cannot create '%s' on the target: %m", in->tmp);
	/* The archive goes to the store and, through a pipe, to the extractor. */
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return error_set(err, -errno, "cannot make a pipe: %m");
	fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
	struct extractor x = {.fd = p[0], .dir = in->images};
	pthread_t t;
	if (pthread_create(&t, NULL, extract, &x) != 0) {
		close(p[0]);
		close(p[1]);
		return error_set(err, -EAGAIN, "cannot start the extractor");
	}
	uint64_t total = 0;
	for (;;) {
		uint8_t type;
		const uint8_t *data;
		size_t n;
		r = channel_recv(c, &type, &data, &n, MIGRATE_ANSWER_MS, err);
		if (r < 0)
			break;
		if (type == MSG_DATA) {
			if (n > max_bytes - total) {
				char a[32];
				r = error_set(
				    err, -EFBIG,
				    "the image is larger than the offer said: more than %s, "
				    "the room the target checked for",
				    util_format_bytes(max_bytes, a, sizeof(a)));
				break;
			}
			r = util_write_all(in->archive_fd, data, n);
			if (r < 0) {
				error_set(err, r, "cannot write the image on the target: %s%s",
				          strerror(-r),
				          r == -ENOSPC ? " (the target's disk is full)" : "");
				break;
			}
			/* An extractor that stopped has its reason; it comes below. */
			(void)util_write_all(p[1], data, n);
			total += n;
			continue;
		}
		uint64_t le;
		if (type != MSG_END || n != sizeof(le)) {
			r = error_set(err, -EPROTO, "unexpected message %u in the image stream",
			              type);
			break;
		}
		memcpy(&le, data, sizeof(le));
		if (le64toh(le) != total)
			r = error_set(err, -EBADMSG,
			              "the image is truncated (%" PRIu64 " of %" PRIu64 " bytes)",
			              total, le64toh(le));
		break;
	}
	close(p[1]);
	pthread_join(t, NULL);
	if (r == 0 && x.r < 0)
		r = error_set(err, x.r, "the image does not verify: %s",
		              x.err.msg[0] ? x.err.msg : strerror(-x.r));
	if (r < 0) {
		manifest_free(x.m);
		return r;
	}
	in->manifest = x.m;
	in->bytes = total;
	if (pthread_create(&in->sync, NULL, make_durable, in) != 0) {
		make_durable(in);
		return migrate_wait_durable(in, err);
	}
	in->syncing = true;
	return 0;
}

int migrate_rebuild(struct incoming *in, struct incoming *base, struct cryo_error *err)
{
	if (manifest_get_u64(in->manifest, "base", 0) !=
	    manifest_get_u64(base->manifest, "generation", 0))
		return error_set(err, -EPROTO,
		                 "the image is not built on the one sent before the freeze");
	struct cryo_error ierr = {{0}};
	int r = image_store_apply_deltas(in->manifest, in->images, base->images, &ierr);
	util_rm_rf(base->images);
	base->images[0] = '\0';
	return r < 0 ? error_set(err, r, "cannot rebuild the image on the target: %s", ierr.msg)
	             : 0;
}

int migrate_wait_durable(struct incoming *in, struct cryo_error *err)
{
	if (in->syncing) {
		pthread_join(in->sync, NULL);
		in->syncing = false;
	}
	if (in->sync_result < 0)
		return error_set(err, in->sync_result,
		                 "cannot store the image durably on the target: %s",
		                 strerror(-in->sync_result));
	in->durable = true;
	return 0;
}

void migrate_incoming_done(struct incoming *in)
{
	if (in->syncing)
		migrate_wait_durable(in, NULL); /* a reason nobody reads */
	if (in->archive_fd >= 0)
		close(in->archive_fd);
	in->archive_fd = -1;
	if (!in->durable) {
		unlink(in->tmp);
	} else if (!in->confirmed) {
		char aside[PATH_MAX + 16];
		snprintf(aside, sizeof(aside), "%s.unconfirmed", in->final);
		rename(in->final, aside);
		util_fsync_dir(in->store_dir);
	}
	if (in->images[0])
		util_rm_rf(in->images);
	in->images[0] = '\0';
	manifest_free(in->manifest);
	in->manifest = NULL;
}

bool migrate_fault(const char *fault)
{
	const char *inject = getenv("CRYO_INJECT_MIGRATE_FAULT");
	return inject && !strcmp(inject, fault);
}

const char *migrate_fault_arg(const char *prefix)
{
	const char *inject = getenv("CRYO_INJECT_MIGRATE_FAULT");
	size_t n = strlen(prefix);
	return inject && !strncmp(inject, prefix, n) ? inject + n : NULL;
}
