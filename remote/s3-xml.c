/* S3's XML replies, read through libxml2: errors, the upload id of a
 * multipart upload, the ETag of its completion, and object listings.
 * Elements are matched by local name, whatever their namespace (AWS sets
 * one, some stores none). */
#include "s3.h"

#include <errno.h>
#include <openssl/evp.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* No network, no entity expansion, and no message on stderr: a library layer
 * does not write to the terminal. */
static xmlDocPtr parse(const char *xml, size_t len)
{
	if (!xml || len == 0 || len > INT32_MAX)
		return NULL;
	return xmlReadMemory(xml, (int)len, "s3-reply.xml", NULL,
	                     XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

static bool named(xmlNodePtr n, const char *name)
{
	return n && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* The first element below n (depth first) called name. */
static xmlNodePtr find(xmlNodePtr n, const char *name)
{
	for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next) {
		if (named(c, name))
			return c;
		xmlNodePtr d = find(c, name);
		if (d)
			return d;
	}
	return NULL;
}

/* n's text, malloc()ed ("" for an empty element); NULL without n. */
static char *text(xmlNodePtr n)
{
	if (!n)
		return NULL;
	xmlChar *t = xmlNodeGetContent(n);
	char *s = strdup(t ? (const char *)t : "");
	xmlFree(t);
	return s;
}

static void copy_text(xmlNodePtr n, char *out, size_t len)
{
	char *t = text(n);
	snprintf(out, len, "%s", t ? t : "");
	free(t);
}

/* An ETag without the quotes S3 puts around it (also as &quot;). */
static void unquote_etag(const char *in, char *out, size_t len)
{
	size_t n = strlen(in);
	if (n >= 2 && in[0] == '"' && in[n - 1] == '"')
		in++, n -= 2;
	if (n >= len)
		n = len - 1;
	memcpy(out, in, n);
	out[n] = '\0';
}

bool s3_xml_error(const char *xml, size_t len, char *code, size_t code_len, char *msg,
                  size_t msg_len)
{
	code[0] = msg[0] = '\0';
	xmlDocPtr doc = parse(xml, len);
	xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
	bool ok = named(root, "Error");
	if (ok) {
		copy_text(find(root, "Code"), code, code_len);
		copy_text(find(root, "Message"), msg, msg_len);
	}
	xmlFreeDoc(doc);
	return ok;
}

char *s3_xml_field(const char *xml, size_t len, const char *root_name, const char *name)
{
	xmlDocPtr doc = parse(xml, len);
	xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
	char *s = named(root, root_name) ? text(find(root, name)) : NULL;
	xmlFreeDoc(doc);
	return s;
}

static int add_object(struct s3_list *l, xmlNodePtr contents)
{
	char *key = text(find(contents, "Key"));
	if (!key)
		return -EBADMSG;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		struct s3_object *items = realloc(l->items, cap * sizeof(*items));
		if (!items) {
			free(key);
			return -ENOMEM;
		}
		l->items = items;
		l->cap = cap;
	}
	struct s3_object *o = &l->items[l->n++];
	*o = (struct s3_object){.key = key};
	char buf[96];
	copy_text(find(contents, "Size"), buf, sizeof(buf));
	o->size = strtoull(buf, NULL, 10);
	copy_text(find(contents, "ETag"), buf, sizeof(buf));
	unquote_etag(buf, o->etag, sizeof(o->etag));
	return 0;
}

int s3_xml_list(const char *xml, size_t len, struct s3_list *l, bool *truncated, char **next_token)
{
	*truncated = false;
	*next_token = NULL;
	xmlDocPtr doc = parse(xml, len);
	xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
	int r = 0;
	if (!named(root, "ListBucketResult")) {
		r = -EBADMSG;
		goto done;
	}
	for (xmlNodePtr c = root->children; c && r == 0; c = c->next) {
		if (named(c, "Contents")) {
			r = add_object(l, c);
		} else if (named(c, "IsTruncated")) {
			char *t = text(c);
			*truncated = t && strcmp(t, "true") == 0;
			free(t);
		} else if (named(c, "NextContinuationToken")) {
			free(*next_token);
			*next_token = text(c);
		}
	}
	/* A listing cut short must say where to go on. */
	if (r == 0 && *truncated && (!*next_token || !**next_token))
		r = -EBADMSG;
done:
	if (r < 0) {
		free(*next_token);
		*next_token = NULL;
	}
	xmlFreeDoc(doc);
	return r;
}

void s3_list_clear(struct s3_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i].key);
	free(l->items);
	*l = (struct s3_list){0};
}

void s3_multipart_etag(const unsigned char (*md5s)[16], size_t n, char *out)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, md5s, 16 * n) != 1 || EVP_DigestFinal_ex(ctx, digest, &len) != 1)
		len = 0;
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; i < len; i++)
		sprintf(out + 2 * i, "%02x", digest[i]);
	sprintf(out + 2 * len, "-%zu", n);
}
