/* The S3 client's configuration (file and environment) and the canonical
 * forms SigV4 signs: URI-encoded keys and sorted query strings. */
#include "s3.h"

#include "cleanup.h"
#include "error.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void s3_config_init(struct s3_config *cfg)
{
	*cfg = (struct s3_config){
	    .connect_ms = 5000,
	    .request_ms = 30000,
	    .low_speed_s = 30,
	    .multipart_from = 64ULL << 20,
	    .part_size = 16ULL << 20,
	};
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Copies value into field (of size len); -EINVAL if it does not fit. */
static int set_field(char *field, size_t len, const char *value, const char *name,
                     const char *origin, struct cryo_error *err)
{
	if (strlen(value) >= len)
		return error_set(err, -EINVAL, "%s: %s is longer than %zu bytes", origin, name,
		                 len - 1);
	strcpy(field, value);
	return 0;
}

static int set_endpoint(struct s3_config *cfg, const char *value, const char *origin,
                        struct cryo_error *err)
{
	if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0)
		return error_set(err, -EINVAL,
		                 "%s: endpoint '%s' is no http:// or https:// URL (such as "
		                 "https://s3.eu-west-1.amazonaws.com)",
		                 origin, value);
	int r = set_field(cfg->endpoint, sizeof(cfg->endpoint), value, "the endpoint", origin, err);
	if (r < 0)
		return r;
	size_t n = strlen(cfg->endpoint);
	while (n > 8 && cfg->endpoint[n - 1] == '/')
		cfg->endpoint[--n] = '\0';
	return 0;
}

int s3_config_parse(struct s3_config *cfg, const char *text, const char *origin,
                    struct cryo_error *err)
{
	_cleanup_free_ char *copy = strdup(text);
	if (!copy)
		return -ENOMEM;
	unsigned lineno = 0;
	for (char *line = copy, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *s = trim(line);
		if (!*s)
			continue;
		char where[600];
		snprintf(where, sizeof(where), "%.500s:%u", origin, lineno);
		char *eq = strchr(s, '=');
		if (!eq)
			return error_set(err, -EINVAL,
			                 "%s: no '=' in this line (lines are 'name = value')",
			                 where);
		*eq = '\0';
		char *name = trim(s), *value = trim(eq + 1);
		int r;
		if (strcmp(name, "endpoint") == 0)
			r = set_endpoint(cfg, value, where, err);
		else if (strcmp(name, "region") == 0)
			r = set_field(cfg->region, sizeof(cfg->region), value, name, where, err);
		else if (strcmp(name, "access_key_id") == 0)
			r = set_field(cfg->access_key, sizeof(cfg->access_key), value, name, where,
			              err);
		else if (strcmp(name, "secret_access_key") == 0)
			r = set_field(cfg->secret_key, sizeof(cfg->secret_key), value, name, where,
			              err);
		else
			r = error_set(err, -EINVAL,
			              "%s: unknown setting '%s' (known: endpoint, region, "
			              "access_key_id, secret_access_key)",
			              where, name);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Reads the configuration file path, refusing one that others could read or
 * change. missing_ok: a file that does not exist is no error. */
static int load_file(struct s3_config *cfg, const char *path, bool missing_ok,
                     struct cryo_error *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT && missing_ok)
			return 0;
		if (errno == ELOOP)
			return error_set(
			    err, -EPERM,
			    "%s is a symbolic link: name the file itself (a link could "
			    "be changed to point at another)",
			    path);
		return error_set(err, -errno, "cannot open %s: %s", path, strerror(errno));
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return error_set(err, -errno, "cannot stat %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return error_set(err, -EINVAL, "%s is not a regular file", path);
	if (st.st_uid != 0 && st.st_uid != geteuid())
		return error_set(err, -EPERM,
		                 "%s belongs to uid %u, neither root nor this user: it holds "
		                 "credentials, so only they may own it (chown root %s)",
		                 path, (unsigned)st.st_uid, path);
	if (st.st_mode & 077)
		return error_set(err, -EPERM,
		                 "%s holds credentials but others may read or change it (mode "
		                 "%04o): chmod 600 %s",
		                 path, (unsigned)(st.st_mode & 07777), path);
	if (st.st_size > 64 * 1024)
		return error_set(err, -EFBIG, "%s is larger than 64 KiB: not a configuration file",
		                 path);
	_cleanup_free_ char *text = calloc(1, (size_t)st.st_size + 1);
	if (!text)
		return -ENOMEM;
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, text + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return error_set(err, -errno, "cannot read %s: %s", path, strerror(errno));
		if (n == 0)
			break;
		got += (size_t)n;
	}
	text[got] = '\0';
	return s3_config_parse(cfg, text, path, err);
}

int s3_config_load(struct s3_config *cfg, const char *path, struct cryo_error *err)
{
	s3_config_init(cfg);
	int r = load_file(cfg, path ? path : S3_CONFIG_FILE, !path, err);
	if (r < 0)
		return r;
	const struct {
		const char *env;
		char *field;
		size_t len;
	} vars[] = {
	    {"AWS_REGION", cfg->region, sizeof(cfg->region)},
	    {"AWS_ACCESS_KEY_ID", cfg->access_key, sizeof(cfg->access_key)},
	    {"AWS_SECRET_ACCESS_KEY", cfg->secret_key, sizeof(cfg->secret_key)},
	};
	const char *v = getenv("AWS_ENDPOINT_URL");
	if (v && *v && (r = set_endpoint(cfg, v, "AWS_ENDPOINT_URL", err)) < 0)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(vars); i++) {
		v = getenv(vars[i].env);
		if (v && *v &&
		    (r = set_field(vars[i].field, vars[i].len, v, vars[i].env, "environment",
		                   err)) < 0)
			return r;
	}
	const char *file = path ? path : S3_CONFIG_FILE;
	if (!cfg->endpoint[0])
		return error_set(err, -EINVAL,
		                 "no object store named: set AWS_ENDPOINT_URL or 'endpoint' in %s",
		                 file);
	if (!cfg->access_key[0] || !cfg->secret_key[0])
		return error_set(
		    err, -EINVAL,
		    "no credentials for the object store at %s: set AWS_ACCESS_KEY_ID and "
		    "AWS_SECRET_ACCESS_KEY, or access_key_id and secret_access_key in "
		    "%s (mode 600)",
		    cfg->endpoint, file);
	if (!cfg->region[0])
		strcpy(cfg->region, "us-east-1");
	return 0;
}

/* RFC 3986's unreserved characters, whatever the locale. */
static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

char *s3_uri_encode(const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *o = out;
	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (unreserved(*p) || (keep_slash && *p == '/')) {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = '\0';
	return out;
}

struct encoded_param {
	char *name, *value;
};

static int compare_params(const void *a, const void *b)
{
	const struct encoded_param *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

char *s3_query_canonical(const struct s3_param *params, size_t n)
{
	struct encoded_param *e = calloc(n ? n : 1, sizeof(*e));
	char *out = NULL;
	if (!e)
		return NULL;
	size_t len = 1;
	for (size_t i = 0; i < n; i++) {
		e[i].name = s3_uri_encode(params[i].name, false);
		e[i].value = s3_uri_encode(params[i].value ? params[i].value : "", false);
		if (!e[i].name || !e[i].value)
			goto done;
		len += strlen(e[i].name) + strlen(e[i].value) + 2;
	}
	qsort(e, n, sizeof(*e), compare_params);
	out = malloc(len);
	if (!out)
		goto done;
	char *o = out;
	for (size_t i = 0; i < n; i++)
		o += sprintf(o, "%s%s=%s", i ? "&" : "", e[i].name, e[i].value);
	*o = '\0';
done:
	for (size_t i = 0; i < n; i++) {
		free(e[i].name);
		free(e[i].value);
	}
	free(e);
	return out;
}
