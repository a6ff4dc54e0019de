/* criu-glue's names for CRIU's protobuf numbers (criu-glue/criu-proto.h),
 * checked against CRIU's own .proto files: every field number and enum value
 * must be the one its .proto gives. The files are read from the directory in
 * CRYO_CRIU_PROTO_DIR (meson passes its option criu_proto_dir, where
 * scripts/setup installs the .proto files of the CRIU it uses, with their
 * version in VERSION); where they are missing, or are another CRIU's than
 * the libcriu cryo is built against, those cases are skipped with the
 * reason. The small .proto parser they use is checked first, on a text of
 * its own. */
#include "cleanup.h"
#include "criu-proto.h"
#include "error.h"
#include "test.h"
#include "util.h"

#include <criu/version.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Records a failed check with a message of its own (CHECK() gives only the
 * condition's text). */
static void __attribute__((format(printf, 3, 4)))
fail_at(const char *file, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	test_note_failure(file, line, msg);
	test_failures++;
}
#define FAIL(...) fail_at(__FILE__, __LINE__, __VA_ARGS__)

/* ---- just enough of a .proto parser to find numbers ---------------------------------------- */

struct token {
	const char *s;
	size_t len;
};

static bool token_is(const struct token *t, const char *s)
{
	return t->len == strlen(s) && memcmp(t->s, s, t->len) == 0;
}

static bool word_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-' || c == '+';
}

/* The next token at *p: a word (names, numbers, dotted names), a quoted
 * string, or a single other character. Comments and blanks are skipped.
 * Returns false at the end of the text (or in an unterminated comment or
 * string, which the caller's count of braces then reports). */
static bool next_token(const char **p, struct token *t)
{
	const char *s = *p;
	for (;;) {
		while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
			s++;
		if (s[0] == '/' && s[1] == '/') {
			s += strcspn(s, "\n");
		} else if (s[0] == '/' && s[1] == '*') {
			const char *end = strstr(s + 2, "*/");
			if (!end)
				return false;
			s = end + 2;
		} else {
			break;
		}
	}
	if (!*s)
		return false;
	const char *start = s;
	if (*s == '"' || *s == '\'') {
		char quote = *s++;
		while (*s && *s != quote)
			s += s[0] == '\\' && s[1] ? 2 : 1;
		if (!*s)
			return false;
		s++;
	} else if (word_char(*s)) {
		while (word_char(*s))
			s++;
	} else {
		s++;
	}
	*t = (struct token){start, (size_t)(s - start)};
	*p = s;
	return true;
}

enum scope_kind { SCOPE_MESSAGE, SCOPE_ENUM, SCOPE_OTHER };

/* A block: a message or enum with its full (dotted, if nested) name; a
 * oneof takes its message's kind and name, since its fields are the
 * message's; anything else (service, extend, an option's value) is OTHER. */
struct scope {
	enum scope_kind kind;
	char name[256];
};

#define MAX_DEPTH 32
#define MAX_STMT  64

/* The scope a block opened by the statement stmt[0..n) makes inside parent
 * (NULL at the top). */
static struct scope open_scope(const struct token *stmt, size_t n, const struct scope *parent)
{
	struct scope s = {SCOPE_OTHER, ""};
	if (n != 2)
		return s;
	if (token_is(&stmt[0], "oneof") && parent && parent->kind == SCOPE_MESSAGE)
		return *parent;
	if (!token_is(&stmt[0], "message") && !token_is(&stmt[0], "enum"))
		return s;
	s.kind = token_is(&stmt[0], "message") ? SCOPE_MESSAGE : SCOPE_ENUM;
	int n_name = parent && parent->kind == SCOPE_MESSAGE
	                 ? snprintf(s.name, sizeof(s.name), "%s.%.*s", parent->name,
	                            (int)stmt[1].len, stmt[1].s)
	                 : snprintf(s.name, sizeof(s.name), "%.*s", (int)stmt[1].len, stmt[1].s);
	/* No name in CRIU's files comes near the limit; a cut one would name
	 * another message, so its fields are not read, and their constants
	 * fail as not found. */
	if (n_name < 0 || (size_t)n_name >= sizeof(s.name))
		s.kind = SCOPE_OTHER;
	return s;
}

/* The name and number a statement stmt[0..n) declares ("TYPE NAME = N [...]"
 * in a message, "NAME = N [...]" in an enum): the words around its first '='
 * outside brackets. Returns false for any other statement. */
static bool declared(const struct token *stmt, size_t n, struct token *name, long *number)
{
	static const char *const not_members[] = {"option", "reserved", "extensions",
	                                          "syntax", "import",   "package"};
	if (n < 3)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(not_members); i++)
		if (token_is(&stmt[0], not_members[i]))
			return false;
	int depth = 0;
	for (size_t i = 1; i + 1 < n; i++) {
		const struct token *t = &stmt[i];
		if (token_is(t, "[") || token_is(t, "(") || token_is(t, "<"))
			depth++;
		else if (token_is(t, "]") || token_is(t, ")") || token_is(t, ">"))
			depth--;
		else if (depth == 0 && token_is(t, "=")) {
			char buf[32], *end;
			if (stmt[i + 1].len >= sizeof(buf))
				return false;
			memcpy(buf, stmt[i + 1].s, stmt[i + 1].len);
			buf[stmt[i + 1].len] = '\0';
			errno = 0;
			*number = strtol(buf, &end, 0);
			if (errno || *end)
				return false;
			*name = stmt[i - 1];
			return true;
		}
	}
	return false;
}

/* Finds member of type (a message's field, or with is_enum an enum's value;
 * a nested type is named "outer.inner") in the .proto text. Returns 0 with
 * *number, -ENOENT if the text does not declare it, -EBADMSG if the text's
 * blocks do not balance. */
static int proto_lookup(const char *text, bool is_enum, const char *type, const char *member,
                        long *number)
{
	struct scope stack[MAX_DEPTH];
	struct token stmt[MAX_STMT], t, name;
	size_t depth = 0, n = 0;
	bool found = false;
	long value;
	for (const char *p = text; next_token(&p, &t);) {
		if (token_is(&t, "{")) {
			if (depth == MAX_DEPTH)
				return -EBADMSG;
			stack[depth] = open_scope(stmt, n, depth ? &stack[depth - 1] : NULL);
			depth++;
			n = 0;
		} else if (token_is(&t, "}")) {
			if (depth == 0 || n != 0)
				return -EBADMSG;
			depth--;
		} else if (token_is(&t, ";")) {
			const struct scope *in = depth ? &stack[depth - 1] : NULL;
			if (in && in->kind == (is_enum ? SCOPE_ENUM : SCOPE_MESSAGE) &&
			    strcmp(in->name, type) == 0 && declared(stmt, n, &name, &value) &&
			    token_is(&name, member)) {
				*number = value;
				found = true;
			}
			n = 0;
		} else {
			if (n == MAX_STMT)
				return -EBADMSG;
			stmt[n++] = t;
		}
	}
	if (depth != 0 || n != 0)
		return -EBADMSG;
	return found ? 0 : -ENOENT;
}

/* ---- the parser on a text of its own -----------------------------------------------------------
 */

static const char sample[] = "// SPDX-License-Identifier: MIT\n"
                             "syntax = \"proto2\";\n"
                             "import \"opts.proto\";\n"
                             "// message hidden { required uint32 x = 9; }\n"
                             "/* message hidden { required uint32 y = 8; } */\n"
                             "message outer {\n"
                             "\trequired uint32\ta\t=  1 [(criu).hex = true, default = 3];\n"
                             "\tmessage inner {\n"
                             "\t\toptional string b = 7;\n"
                             "\t}\n"
                             "\tenum kind {\n"
                             "\t\tZERO = 0;\n"
                             "\t\tBIG = 0x10;\n"
                             "\t\tNEG = -2;\n"
                             "\t\toption allow_alias = true;\n"
                             "\t}\n"
                             "\toneof choice {\n"
                             "\t\tint32 c = 12;\n"
                             "\t\tinner d = 13;\n"
                             "\t}\n"
                             "\tmap<string, int32> e = 14;\n"
                             "\treserved 20, 21;\n"
                             "\toptional string f = 15 [default = \"g = 99; }\"];\n"
                             "\trepeated inner vmas\t\t= 16;\n"
                             "}\n"
                             "enum top { ONE = 1; PIDFD           = 20; }\n"
                             "extend outer { optional uint32 ext = 1000; }\n";

/* The number the sample gives, or a negative errno. */
static long sample_number(bool is_enum, const char *type, const char *member)
{
	long v;
	int r = proto_lookup(sample, is_enum, type, member, &v);
	return r < 0 ? r : v;
}

static void test_parser(void)
{
	CHECK(sample_number(false, "outer", "a") == 1);
	CHECK(sample_number(false, "outer.inner", "b") == 7);
	CHECK(sample_number(true, "outer.kind", "ZERO") == 0);
	CHECK(sample_number(true, "outer.kind", "BIG") == 16);
	CHECK(sample_number(true, "outer.kind", "NEG") == -2);
	/* A oneof's fields are its message's. */
	CHECK(sample_number(false, "outer", "c") == 12);
	CHECK(sample_number(false, "outer", "d") == 13);
	CHECK(sample_number(false, "outer", "e") == 14);
	CHECK(sample_number(false, "outer", "f") == 15);
	CHECK(sample_number(false, "outer", "vmas") == 16);
	CHECK(sample_number(true, "top", "ONE") == 1);
	CHECK(sample_number(true, "top", "PIDFD") == 20);

	/* Not declared where asked: in a comment, in another message, in a
	 * nested message asked by its short name, an enum's value asked as a
	 * field, an option, a reserved number, a field of an extend block. */
	CHECK(sample_number(false, "hidden", "x") == -ENOENT);
	CHECK(sample_number(false, "hidden", "y") == -ENOENT);
	CHECK(sample_number(false, "outer", "b") == -ENOENT);
	CHECK(sample_number(false, "inner", "b") == -ENOENT);
	CHECK(sample_number(false, "outer.kind", "BIG") == -ENOENT);
	CHECK(sample_number(false, "outer", "BIG") == -ENOENT);
	CHECK(sample_number(true, "outer", "a") == -ENOENT);
	CHECK(sample_number(true, "outer.kind", "allow_alias") == -ENOENT);
	CHECK(sample_number(false, "outer", "ext") == -ENOENT);
	CHECK(sample_number(false, "outer", "g") == -ENOENT);
	CHECK(sample_number(false, "outer", "reserved") == -ENOENT);

	long v;
	CHECK(proto_lookup("message m { required uint32 a = 1;", false, "m", "a", &v) == -EBADMSG);
	CHECK(proto_lookup("message m { required uint32 a = 1; }}", false, "m", "a", &v) ==
	      -EBADMSG);
	CHECK(proto_lookup("message m { required uint32 a = 1 }", false, "m", "a", &v) == -EBADMSG);
	CHECK(proto_lookup("message m { /* a = 1; }", false, "m", "a", &v) == -EBADMSG);
}

/* ---- criu-proto.h against CRIU's files ------------------------------------------------------- */

struct entry {
	const char *constant, *file, *type, *member;
	long number;
};

#define FIELD_ENTRY(msg, field, file, msg_name, field_name, number)                                \
	{"PB_" #msg "_" #field, file, msg_name, field_name, number},
static const struct entry fields[] = {PB_FIELDS(FIELD_ENTRY)};
static const struct entry enum_values[] = {PB_ENUM_VALUES(FIELD_ENTRY)};
#undef FIELD_ENTRY

/* The directory with the .proto files of the CRIU cryo is built against,
 * or NULL with the reason the case is skipped in err. */
static const char *proto_dir(struct cryo_error *err)
{
	const char *dir = getenv("CRYO_CRIU_PROTO_DIR");
	if (!dir || !*dir) {
		error_set(err, -ENOENT, "CRYO_CRIU_PROTO_DIR is not set (meson sets it)");
		return NULL;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/VERSION", dir);
	_cleanup_free_ char *version = NULL;
	size_t n;
	if (util_read_file(path, &version, &n) < 0) {
		error_set(err, -ENOENT,
		          "no CRIU .proto files in '%s' (scripts/setup installs them)", dir);
		return NULL;
	}
	version[strcspn(version, "\n")] = '\0';
	if (strcmp(version, CRIU_VERSION) != 0) {
		error_set(err, -ESTALE,
		          "the .proto files in '%s' are CRIU %s's, libcriu's headers CRIU %s's "
		          "(scripts/setup installs the ones of the CRIU it uses)",
		          dir, version, CRIU_VERSION);
		return NULL;
	}
	return dir;
}

static void check_entries(const struct entry *e, size_t n, bool is_enum)
{
	struct cryo_error err = {{0}};
	const char *dir = proto_dir(&err);
	if (!dir)
		SKIP("%s", err.msg);
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", dir, e[i].file);
		_cleanup_free_ char *text = NULL;
		size_t len;
		int r = util_read_file(path, &text, &len);
		if (r < 0) {
			FAIL("%s: cannot read '%s': %s", e[i].constant, path, strerror(-r));
			continue;
		}
		long number = 0;
		r = proto_lookup(text, is_enum, e[i].type, e[i].member, &number);
		if (r == -ENOENT)
			FAIL("%s: %s has no %s %s in %s", e[i].constant, e[i].file,
			     is_enum ? "enum value" : "field", e[i].member, e[i].type);
		else if (r < 0)
			FAIL("%s: cannot parse '%s' (its blocks do not balance)", e[i].constant,
			     path);
		else if (number != e[i].number)
			FAIL("%s is %ld, but %s has %s.%s = %ld", e[i].constant, e[i].number,
			     e[i].file, e[i].type, e[i].member, number);
	}
}

static void test_field_numbers(void)
{
	check_entries(fields, ARRAY_SIZE(fields), false);
}

static void test_enum_values(void)
{
	check_entries(enum_values, ARRAY_SIZE(enum_values), true);
}

TEST_MAIN(test_parser, test_field_numbers, test_enum_values)
