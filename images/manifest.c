/* The manifest: its key/value entries and file list in memory, and the text
 * form the archive stores (manifest.h, images/FORMAT.md). Taken out of the
 * archive's code so that the delta encoding, which writes manifest entries
 * too, needs nothing of the archive. */
#include "manifest.h"
#include "cleanup.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The manifest's own version (its first line). */
#define MANIFEST_VERSION 1

struct manifest *manifest_new(void)
{
	return calloc(1, sizeof(struct manifest));
}

void manifest_free(struct manifest *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_entries; i++) {
		free(m->keys[i]);
		free(m->values[i]);
	}
	for (size_t i = 0; i < m->n_files; i++)
		free(m->files[i].name);
	free(m->keys);
	free(m->values);
	free(m->files);
	free(m);
}

static bool key_is_valid(const char *key)
{
	if (!*key)
		return false;
	for (const char *p = key; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '_' &&
		    *p != '.')
			return false;
	return strcmp(key, "file") != 0;
}

int manifest_add(struct manifest *m, const char *key, const char *value)
{
	if (!key_is_valid(key))
		return -EINVAL;
	char **k = realloc(m->keys, (m->n_entries + 1) * sizeof(char *));
	if (!k)
		return -ENOMEM;
	m->keys = k;
	char **v = realloc(m->values, (m->n_entries + 1) * sizeof(char *));
	if (!v)
		return -ENOMEM;
	m->values = v;
	char *kd = strdup(key), *vd = strdup(value);
	if (!kd || !vd) {
		free(kd);
		free(vd);
		return -ENOMEM;
	}
	m->keys[m->n_entries] = kd;
	m->values[m->n_entries] = vd;
	m->n_entries++;
	return 0;
}

int manifest_addf(struct manifest *m, const char *key, const char *fmt, ...)
{
	va_list ap;
	_cleanup_free_ char *v = NULL;
	va_start(ap, fmt);
	int n = vasprintf(&v, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	return manifest_add(m, key, v);
}

const char *manifest_get(const struct manifest *m, const char *key)
{
	for (size_t i = 0; i < m->n_entries; i++)
		if (!strcmp(m->keys[i], key))
			return m->values[i];
	return NULL;
}

uint64_t manifest_get_u64(const struct manifest *m, const char *key, uint64_t def)
{
	uint64_t v;
	const char *s = manifest_get(m, key);
	return s && util_parse_uint(s, UINT64_MAX, &v) == 0 ? v : def;
}

int manifest_add_file(struct manifest *m, const char *name, uint64_t size, const uint8_t hash[16])
{
	struct manifest_file *f = realloc(m->files, (m->n_files + 1) * sizeof(*f));
	if (!f)
		return -ENOMEM;
	m->files = f;
	f = &m->files[m->n_files];
	f->name = strdup(name);
	if (!f->name)
		return -ENOMEM;
	f->size = size;
	memcpy(f->hash, hash, 16);
	m->n_files++;
	return 0;
}

/* Values are stored on one line: backslash, newline and other control
 * characters are escaped as \\, \n and \xHH. */
static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '\\')
			fputs("\\\\", f);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
}

static int unescape(const char *s, size_t len, char **ret)
{
	char *out = malloc(len + 1), *o = out;
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '\\') {
			*o++ = s[i];
			continue;
		}
		if (i + 1 < len && s[i + 1] == '\\') {
			*o++ = '\\';
			i++;
		} else if (i + 1 < len && s[i + 1] == 'n') {
			*o++ = '\n';
			i++;
		} else if (i + 3 < len && s[i + 1] == 'x' && isxdigit((unsigned char)s[i + 2]) &&
		           isxdigit((unsigned char)s[i + 3])) {
			char hex[3] = {s[i + 2], s[i + 3], 0};
			*o++ = (char)strtoul(hex, NULL, 16);
			i += 3;
		} else {
			free(out);
			return -EBADMSG;
		}
	}
	*o = '\0';
	*ret = out;
	return 0;
}

int manifest_to_text(const struct manifest *m, char **ret, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "cryo-manifest %d\n", MANIFEST_VERSION);
	for (size_t i = 0; i < m->n_entries; i++) {
		fprintf(f, "%s ", m->keys[i]);
		put_escaped(f, m->values[i]);
		fputc('\n', f);
	}
	for (size_t i = 0; i < m->n_files; i++) {
		fputs("file ", f);
		for (int j = 0; j < 16; j++)
			fprintf(f, "%02x", m->files[i].hash[j]);
		fprintf(f, " %llu ", (unsigned long long)m->files[i].size);
		put_escaped(f, m->files[i].name);
		fputc('\n', f);
	}
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

static int parse_file_line(struct manifest *m, const char *s, size_t len)
{
	uint8_t hash[16];
	if (len < 32 + 1)
		return -EBADMSG;
	for (int j = 0; j < 16; j++) {
		char hex[3] = {s[2 * j], s[2 * j + 1], 0};
		if (!isxdigit((unsigned char)hex[0]) || !isxdigit((unsigned char)hex[1]))
			return -EBADMSG;
		hash[j] = (uint8_t)strtoul(hex, NULL, 16);
	}
	if (s[32] != ' ')
		return -EBADMSG;
	const char *p = s + 33, *end = s + len;
	const char *sp = memchr(p, ' ', (size_t)(end - p));
	if (!sp || sp == p)
		return -EBADMSG;
	_cleanup_free_ char *num = strndup(p, (size_t)(sp - p));
	uint64_t size;
	if (!num || util_parse_uint(num, UINT64_MAX, &size) < 0)
		return -EBADMSG;
	_cleanup_free_ char *name = NULL;
	int r = unescape(sp + 1, (size_t)(end - sp - 1), &name);
	if (r < 0)
		return r;
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EBADMSG;
	return manifest_add_file(m, name, size, hash);
}

int manifest_from_text(const char *text, size_t len, struct manifest **ret)
{
	_cleanup_manifest_ struct manifest *m = manifest_new();
	if (!m)
		return -ENOMEM;
	const char *p = text, *end = text + len;
	bool first = true;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			return -EBADMSG;
		size_t ll = (size_t)(nl - p);
		if (first) {
			char want[32];
			int n = snprintf(want, sizeof(want), "cryo-manifest %d", MANIFEST_VERSION);
			if (ll != (size_t)n || memcmp(p, want, ll) != 0)
				return -EBADMSG;
			first = false;
		} else {
			const char *sp = memchr(p, ' ', ll);
			if (!sp)
				return -EBADMSG;
			_cleanup_free_ char *key = strndup(p, (size_t)(sp - p));
			if (!key)
				return -ENOMEM;
			int r;
			if (!strcmp(key, "file")) {
				r = parse_file_line(m, sp + 1, (size_t)(nl - sp - 1));
			} else {
				_cleanup_free_ char *value = NULL;
				r = unescape(sp + 1, (size_t)(nl - sp - 1), &value);
				if (r == 0)
					r = manifest_add(m, key, value);
				if (r == -EINVAL)
					r = -EBADMSG;
			}
			if (r < 0)
				return r;
		}
		p = nl + 1;
	}
	if (first)
		return -EBADMSG;
	*ret = TAKE_PTR(m);
	return 0;
}
