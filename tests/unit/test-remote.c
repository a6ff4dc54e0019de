/* remote/'s pure parts: the S3 client's configuration (text, file, the
 * environment), the canonical forms SigV4 signs, S3's XML replies, and the
 * JSON of etcd's gateway, requests and replies (with the omissions etcd
 * makes). The services themselves are exercised by tests/bats/96-remote. */
#include "error.h"
#include "etcd.h"
#include "http.h"
#include "s3.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_uri_encode(void)
{
	char *s = s3_uri_encode("a b/c~d_e-f.g", true);
	CHECK(s && strcmp(s, "a%20b/c~d_e-f.g") == 0);
	free(s);
	s = s3_uri_encode("a b/c+=&\xc3\xa9", false);
	CHECK(s && strcmp(s, "a%20b%2Fc%2B%3D%26%C3%A9") == 0);
	free(s);
	s = s3_uri_encode("", false);
	CHECK(s && strcmp(s, "") == 0);
	free(s);
}

static void test_query_canonical(void)
{
	/* A parameter without a value still gets its '=' (curl signs the query as
	 * written, and S3 signs "uploads="). */
	struct s3_param uploads[] = {{"uploads", NULL}};
	char *q = s3_query_canonical(uploads, 1);
	CHECK(q && strcmp(q, "uploads=") == 0);
	free(q);
	/* Sorted by name; values encoded, '/' included. */
	struct s3_param list[] = {
	    {"prefix", "img/a b"}, {"list-type", "2"}, {"continuation-token", "x+y/z="}};
	q = s3_query_canonical(list, 3);
	CHECK(q &&
	      strcmp(q, "continuation-token=x%2By%2Fz%3D&list-type=2&prefix=img%2Fa%20b") == 0);
	free(q);
	struct s3_param part[] = {{"uploadId", "u-1"}, {"partNumber", "10"}};
	q = s3_query_canonical(part, 2);
	CHECK(q && strcmp(q, "partNumber=10&uploadId=u-1") == 0);
	free(q);
	q = s3_query_canonical(NULL, 0);
	CHECK(q && strcmp(q, "") == 0);
	free(q);
}

static void test_config_parse(void)
{
	struct s3_config cfg;
	struct cryo_error err = {""};
	s3_config_init(&cfg);
	CHECK(cfg.part_size >= S3_MIN_PART && cfg.multipart_from >= cfg.part_size);
	CHECK(cfg.connect_ms > 0 && cfg.request_ms > 0 && cfg.low_speed_s > 0);
	CHECK(s3_config_parse(&cfg,
	                      "# cryo's store\n"
	                      "endpoint = https://s3.example.net:9000//\n"
	                      "  region=eu-west-3   # Paris\n"
	                      "\n"
	                      "access_key_id = acct:user\n"
	                      "secret_access_key = s3cr=t\n",
	                      "s3.conf", &err) == 0);
	CHECK(strcmp(cfg.endpoint, "https://s3.example.net:9000") == 0);
	CHECK(strcmp(cfg.region, "eu-west-3") == 0);
	CHECK(strcmp(cfg.access_key, "acct:user") == 0);
	CHECK(strcmp(cfg.secret_key, "s3cr=t") == 0);

	CHECK(s3_config_parse(&cfg, "region = x\nsecret = y\n", "s3.conf", &err) == -EINVAL);
	CHECK(strstr(err.msg, "s3.conf:2") && strstr(err.msg, "unknown setting 'secret'"));
	CHECK(s3_config_parse(&cfg, "endpoint\n", "s3.conf", &err) == -EINVAL);
	CHECK(strstr(err.msg, "s3.conf:1") && strstr(err.msg, "no '='"));
	CHECK(s3_config_parse(&cfg, "endpoint = ftp://x\n", "s3.conf", &err) == -EINVAL);
	CHECK(strstr(err.msg, "no http:// or https:// URL"));
	char longer[400];
	memset(longer, 'k', sizeof(longer));
	memcpy(longer, "region=", 7);
	longer[sizeof(longer) - 1] = '\0';
	CHECK(s3_config_parse(&cfg, longer, "s3.conf", &err) == -EINVAL);
	CHECK(strstr(err.msg, "longer than"));
}

static void unset_aws(void)
{
	unsetenv("AWS_ENDPOINT_URL");
	unsetenv("AWS_REGION");
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void write_conf(const char *path, mode_t mode, const char *text)
{
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	CHECK(fchmod(fd, mode) == 0);
	close(fd);
}

static void test_config_load(void)
{
	char dir[] = "/tmp/cryo-test-remote.XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char path[128], link[128];
	snprintf(path, sizeof(path), "%s/s3.conf", dir);
	snprintf(link, sizeof(link), "%s/link.conf", dir);
	struct s3_config cfg;
	struct cryo_error err = {""};
	unset_aws();

	write_conf(path, 0600,
	           "endpoint = http://127.0.0.1:9\naccess_key_id = file-key\n"
	           "secret_access_key = file-secret\n");
	CHECK(s3_config_load(&cfg, path, &err) == 0);
	CHECK(strcmp(cfg.endpoint, "http://127.0.0.1:9") == 0);
	CHECK(strcmp(cfg.region, "us-east-1") == 0);
	CHECK(strcmp(cfg.secret_key, "file-secret") == 0);

	/* The environment wins over the file. */
	setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
	setenv("AWS_REGION", "eu-north-1", 1);
	CHECK(s3_config_load(&cfg, path, &err) == 0);
	CHECK(strcmp(cfg.secret_key, "env-secret") == 0);
	CHECK(strcmp(cfg.access_key, "file-key") == 0);
	CHECK(strcmp(cfg.region, "eu-north-1") == 0);
	unset_aws();

	/* Credentials others can read are refused, with the fix. */
	write_conf(path, 0644, "endpoint = http://127.0.0.1:9\n");
	CHECK(s3_config_load(&cfg, path, &err) == -EPERM);
	CHECK(strstr(err.msg, "mode 0644") && strstr(err.msg, "chmod 600"));
	write_conf(path, 0640, "endpoint = http://127.0.0.1:9\n");
	CHECK(s3_config_load(&cfg, path, &err) == -EPERM);

	/* So is a symbolic link (it could be pointed elsewhere). */
	write_conf(path, 0600, "endpoint = http://127.0.0.1:9\n");
	CHECK(symlink(path, link) == 0);
	CHECK(s3_config_load(&cfg, link, &err) == -EPERM);
	CHECK(strstr(err.msg, "symbolic link"));

	/* Missing credentials name what to set. */
	CHECK(s3_config_load(&cfg, path, &err) == -EINVAL);
	CHECK(strstr(err.msg, "AWS_ACCESS_KEY_ID") && strstr(err.msg, "AWS_SECRET_ACCESS_KEY"));
	write_conf(path, 0600, "region = x\n");
	CHECK(s3_config_load(&cfg, path, &err) == -EINVAL);
	CHECK(strstr(err.msg, "AWS_ENDPOINT_URL"));

	/* A file named but absent is an error; from the environment alone is fine
	 * when no file is named (unless the default one exists here). */
	char absent[160];
	snprintf(absent, sizeof(absent), "%s/absent.conf", dir);
	CHECK(s3_config_load(&cfg, absent, &err) == -ENOENT);
	CHECK(strstr(err.msg, absent));
	setenv("AWS_ENDPOINT_URL", "http://localhost:1/", 1);
	setenv("AWS_ACCESS_KEY_ID", "k", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "s", 1);
	if (access(S3_CONFIG_FILE, F_OK) != 0) {
		CHECK(s3_config_load(&cfg, NULL, &err) == 0);
		CHECK(strcmp(cfg.endpoint, "http://localhost:1") == 0);
	}
	unset_aws();

	unlink(link);
	unlink(path);
	rmdir(dir);
}

static void test_xml_error(void)
{
	const char *xml = "<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>NoSuchBucket</Code>"
	                  "<Message>The specified bucket does not exist.</Message>"
	                  "<BucketName>b</BucketName></Error>";
	char code[64], msg[128];
	CHECK(s3_xml_error(xml, strlen(xml), code, sizeof(code), msg, sizeof(msg)));
	CHECK(strcmp(code, "NoSuchBucket") == 0);
	CHECK(strcmp(msg, "The specified bucket does not exist.") == 0);
	const char *other = "<ListBucketResult/>";
	CHECK(!s3_xml_error(other, strlen(other), code, sizeof(code), msg, sizeof(msg)));
	CHECK(!s3_xml_error("<Error><Code>", 12, code, sizeof(code), msg, sizeof(msg)));
	CHECK(!s3_xml_error(NULL, 0, code, sizeof(code), msg, sizeof(msg)));
	CHECK(code[0] == '\0' && msg[0] == '\0');
}

static void test_xml_field(void)
{
	const char *init =
	    "<?xml version=\"1.0\"?><InitiateMultipartUploadResult "
	    "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>b</Bucket>"
	    "<Key>k</Key><UploadId>ZmFrZQ-1</UploadId></InitiateMultipartUploadResult>";
	char *s = s3_xml_field(init, strlen(init), "InitiateMultipartUploadResult", "UploadId");
	CHECK(s && strcmp(s, "ZmFrZQ-1") == 0);
	free(s);
	CHECK(s3_xml_field(init, strlen(init), "Error", "UploadId") == NULL);
	CHECK(s3_xml_field(init, strlen(init), "InitiateMultipartUploadResult", "Nope") == NULL);
	/* The quotes of an ETag come as &quot; in some stores' XML. */
	const char *done = "<CompleteMultipartUploadResult><ETag>&quot;abc-2&quot;</ETag>"
	                   "</CompleteMultipartUploadResult>";
	s = s3_xml_field(done, strlen(done), "CompleteMultipartUploadResult", "ETag");
	CHECK(s && strcmp(s, "\"abc-2\"") == 0);
	free(s);
	/* No external entities, no network. */
	const char *xxe = "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
	                  "<R><UploadId>&x;</UploadId></R>";
	s = s3_xml_field(xxe, strlen(xxe), "R", "UploadId");
	CHECK(!s || !strstr(s, "root:"));
	free(s);
}

static void test_xml_list(void)
{
	const char *page1 =
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
	    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	    "<Name>b</Name><Prefix>img/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>"
	    "<IsTruncated>true</IsTruncated><NextContinuationToken>tok/2=</NextContinuationToken>"
	    "<Contents><Key>img/a &amp; "
	    "b</Key><LastModified>2026-12-07T12:00:00.000Z</LastModified>"
	    "<ETag>\"0123456789abcdef0123456789abcdef\"</ETag><Size>1419</Size>"
	    "<StorageClass>STANDARD</StorageClass></Contents>"
	    "<Contents><Key>img/big</Key><ETag>&quot;1f48a6339b120e2c074d08b68ffc14e7-3&quot;</"
	    "ETag>"
	    "<Size>12345678</Size></Contents></ListBucketResult>";
	struct s3_list l = {0};
	bool truncated = false;
	char *token = NULL;
	CHECK(s3_xml_list(page1, strlen(page1), &l, &truncated, &token) == 0);
	CHECK(truncated && token && strcmp(token, "tok/2=") == 0);
	CHECK(l.n == 2);
	if (l.n == 2) {
		CHECK(strcmp(l.items[0].key, "img/a & b") == 0 && l.items[0].size == 1419);
		CHECK(strcmp(l.items[0].etag, "0123456789abcdef0123456789abcdef") == 0);
		CHECK(strcmp(l.items[1].etag, "1f48a6339b120e2c074d08b68ffc14e7-3") == 0);
		CHECK(l.items[1].size == 12345678);
	}
	free(token);
	/* The last page adds to the same list. */
	const char *page2 = "<ListBucketResult><IsTruncated>false</IsTruncated>"
	                    "<Contents><Key>img/c</Key><ETag>\"e\"</ETag><Size>0</Size></Contents>"
	                    "</ListBucketResult>";
	CHECK(s3_xml_list(page2, strlen(page2), &l, &truncated, &token) == 0);
	CHECK(!truncated && !token && l.n == 3);
	/* An empty listing. */
	const char *empty = "<ListBucketResult><KeyCount>0</KeyCount></ListBucketResult>";
	CHECK(s3_xml_list(empty, strlen(empty), &l, &truncated, &token) == 0 && l.n == 3);
	s3_list_clear(&l);
	CHECK(l.n == 0 && l.items == NULL);

	/* Cut short without saying where to go on; no listing; no XML. */
	const char *lost = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
	CHECK(s3_xml_list(lost, strlen(lost), &l, &truncated, &token) == -EBADMSG && !token);
	const char *err = "<Error><Code>AccessDenied</Code></Error>";
	CHECK(s3_xml_list(err, strlen(err), &l, &truncated, &token) == -EBADMSG);
	CHECK(s3_xml_list("{\"json\":1}", 10, &l, &truncated, &token) == -EBADMSG);
	const char *nokey =
	    "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>";
	CHECK(s3_xml_list(nokey, strlen(nokey), &l, &truncated, &token) == -EBADMSG);
	s3_list_clear(&l);
}

static void test_multipart_etag(void)
{
	/* The MD5s of "" and "abc"; python3: md5(md5(b'').digest() +
	 * md5(b'abc').digest()). */
	const unsigned char md5s[2][16] = {{0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9,
	                                    0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e},
	                                   {0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6,
	                                    0x96, 0x3f, 0x7d, 0x28, 0xe1, 0x7f, 0x72}};
	char etag[48];
	s3_multipart_etag(md5s, 2, etag);
	CHECK(strcmp(etag, "66027c6d92d43d01c4f2aa8759629be3-2") == 0);
}

static void test_http_buf(void)
{
	struct http_buf b = {.max = 8};
	CHECK(http_buf_append(&b, "abcd", 4) && b.len == 4 && strcmp(b.data, "abcd") == 0);
	CHECK(http_buf_append(&b, "efgh", 4) && b.len == 8);
	CHECK(!http_buf_append(&b, "i", 1) && b.overflow && b.len == 8);
	http_buf_clear(&b);
	CHECK(b.data == NULL && b.len == 0 && !b.overflow);
}

static void test_transport_errors(void)
{
	struct cryo_error err = {""};
	struct http_deadlines d = {.connect_ms = 1000, .total_ms = 2500, .low_speed_s = 7};
	CHECK(http_transport_error(CURLE_COULDNT_CONNECT, "Failed to connect", "etcd",
	                           "http://127.0.0.1:9", &d, "the etcd address",
	                           &err) == -ECONNREFUSED);
	CHECK(strcmp(err.msg, "cannot reach etcd at http://127.0.0.1:9 (Failed to connect): is it "
	                      "running? check the etcd address") == 0);
	CHECK(http_transport_error(CURLE_OPERATION_TIMEDOUT, "", "the object store", "http://s3",
	                           &d, "AWS_ENDPOINT_URL", &err) == -ETIMEDOUT);
	CHECK(strstr(err.msg, "the object store at http://s3 did not answer within 2.500 s (") &&
	      strstr(err.msg, "check AWS_ENDPOINT_URL"));
	/* A stream has no overall deadline: it stalls. */
	d.total_ms = 0;
	CHECK(http_transport_error(CURLE_OPERATION_TIMEDOUT, "too slow", "the object store",
	                           "http://s3", &d, "AWS_ENDPOINT_URL", &err) == -ETIMEDOUT);
	CHECK(strstr(err.msg, "stalled (under 1 KiB/s for 7 s: too slow)"));
	CHECK(http_transport_error(CURLE_COULDNT_RESOLVE_HOST, "", "etcd", "http://nohost", &d,
	                           "the etcd address", &err) == -EHOSTUNREACH);
	CHECK(http_transport_error(CURLE_SSL_CONNECT_ERROR, "", "etcd", "https://x", &d,
	                           "the etcd address", &err) == -EIO);
	CHECK(strstr(err.msg, "request to etcd at https://x failed: "));
	CHECK(strchr(err.msg, '\n') == NULL);
}

static struct json_object *at(struct json_object *o, const char *path)
{
	/* "a.0.b": keys and array indexes. */
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", path);
	char *save = NULL;
	for (char *t = strtok_r(buf, ".", &save); t && o; t = strtok_r(NULL, ".", &save)) {
		if (json_object_is_type(o, json_type_array))
			o = json_object_array_get_idx(o, (size_t)atoi(t));
		else if (!json_object_object_get_ex(o, t, &o))
			o = NULL;
	}
	return o;
}

static const char *at_str(struct json_object *o, const char *path)
{
	o = at(o, path);
	return o && json_object_is_type(o, json_type_string) ? json_object_get_string(o) : "";
}

static void test_etcd_requests(void)
{
	char *text = etcd_json_acquire("cryo/owner/web", "host-a", 9041999139311034886LL);
	struct json_object *o = text ? json_tokener_parse(text) : NULL;
	CHECK(o != NULL);
	CHECK(strcmp(at_str(o, "compare.0.target"), "CREATE") == 0);
	CHECK(strcmp(at_str(o, "compare.0.result"), "EQUAL") == 0);
	CHECK(strcmp(at_str(o, "compare.0.key"), "Y3J5by9vd25lci93ZWI=") == 0);
	CHECK(strcmp(at_str(o, "compare.0.create_revision"), "0") == 0);
	CHECK(strcmp(at_str(o, "success.0.request_put.key"), "Y3J5by9vd25lci93ZWI=") == 0);
	CHECK(strcmp(at_str(o, "success.0.request_put.value"), "aG9zdC1h") == 0);
	/* int64 as a string: a JSON number would lose digits in some parsers. */
	CHECK(strcmp(at_str(o, "success.0.request_put.lease"), "9041999139311034886") == 0);
	CHECK(strcmp(at_str(o, "failure.0.request_range.key"), "Y3J5by9vd25lci93ZWI=") == 0);
	json_object_put(o);
	free(text);

	text = etcd_json_put_if_owner("cryo/owner/web", 42, "cryo/pub/web", "gen-7");
	o = text ? json_tokener_parse(text) : NULL;
	CHECK(o != NULL);
	CHECK(strcmp(at_str(o, "compare.0.target"), "LEASE") == 0);
	CHECK(strcmp(at_str(o, "compare.0.key"), "Y3J5by9vd25lci93ZWI=") == 0);
	CHECK(strcmp(at_str(o, "compare.0.lease"), "42") == 0);
	CHECK(strcmp(at_str(o, "success.0.request_put.key"), "Y3J5by9wdWIvd2Vi") == 0);
	CHECK(strcmp(at_str(o, "success.0.request_put.value"), "Z2VuLTc=") == 0);
	/* The published record outlives its writer's lease. */
	CHECK(at(o, "success.0.request_put.lease") == NULL);
	CHECK(strcmp(at_str(o, "failure.0.request_range.key"), "Y3J5by9vd25lci93ZWI=") == 0);
	json_object_put(o);
	free(text);
}

static void test_etcd_replies(void)
{
	int64_t id = 0, ttl = 0;
	CHECK(etcd_parse_grant("{\"header\":{\"revision\":\"1\"},\"ID\":\"9041999139311034886\","
	                       "\"TTL\":\"5\"}",
	                       &id, &ttl) == 0);
	CHECK(id == 9041999139311034886LL && ttl == 5);
	CHECK(etcd_parse_grant("{\"header\":{},\"TTL\":\"5\"}", &id, &ttl) == -EBADMSG);
	CHECK(etcd_parse_grant("{\"ID\":\"x1\",\"TTL\":\"5\"}", &id, &ttl) == -EBADMSG);
	CHECK(etcd_parse_grant("not json", &id, &ttl) == -EBADMSG);

	CHECK(etcd_parse_keepalive("{\"result\":{\"header\":{},\"ID\":\"7\",\"TTL\":\"4\"}}",
	                           &ttl) == 0 &&
	      ttl == 4);
	/* A lease that is gone is renewed to no TTL at all (field left out). */
	CHECK(etcd_parse_keepalive("{\"result\":{\"header\":{},\"ID\":\"7\"}}", &ttl) == -ENOLCK);
	CHECK(etcd_parse_keepalive("{\"header\":{}}", &ttl) == -EBADMSG);

	struct etcd_kv kv = {0};
	bool ok = false;
	CHECK(etcd_parse_txn("{\"header\":{\"revision\":\"2\"},\"succeeded\":true,\"responses\":"
	                     "[{\"response_put\":{\"header\":{}}}]}",
	                     &ok, &kv) == 0);
	CHECK(ok && kv.value == NULL);
	/* A failed transaction has no "succeeded"; its range shows the holder. */
	CHECK(etcd_parse_txn("{\"header\":{},\"responses\":[{\"response_range\":{\"header\":{},"
	                     "\"kvs\":[{\"key\":\"Y3J5by9vd25lci93ZWI=\",\"create_revision\":\"2\","
	                     "\"mod_revision\":\"3\",\"version\":\"1\",\"value\":\"aG9zdC1h\","
	                     "\"lease\":\"9041999139311034886\"}],\"count\":\"1\"}}]}",
	                     &ok, &kv) == 0);
	CHECK(!ok && kv.value && strcmp(kv.value, "host-a") == 0 && kv.value_len == 6);
	CHECK(kv.lease == 9041999139311034886LL && kv.create_revision == 2 && kv.mod_revision == 3);
	/* A failed one whose range is empty (the key went meanwhile). */
	CHECK(etcd_parse_txn("{\"header\":{},\"responses\":[{\"response_range\":{\"header\":{}}}]}",
	                     &ok, &kv) == 0);
	CHECK(!ok && kv.value == NULL);
	CHECK(etcd_parse_txn("{\"responses\":[]}", &ok, &kv) == -EBADMSG);
	CHECK(etcd_parse_txn("{\"header\":{},\"responses\":[{\"response_range\":{\"kvs\":[{"
	                     "\"value\":\"!!\"}]}}]}",
	                     &ok, &kv) == -EBADMSG);

	CHECK(etcd_parse_range("{\"header\":{}}", &kv) == -ENOENT);
	/* A key with an empty value and no lease: both fields left out. */
	CHECK(etcd_parse_range(
	          "{\"header\":{},\"kvs\":[{\"key\":\"aw==\",\"create_revision\":\"5\"}],"
	          "\"count\":\"1\"}",
	          &kv) == 0);
	CHECK(kv.value && kv.value[0] == '\0' && kv.lease == 0 && kv.create_revision == 5);
	etcd_kv_clear(&kv);

	char msg[128];
	int code = 0;
	CHECK(etcd_parse_error("{\"error\":\"etcdserver: requested lease not found\",\"code\":5,"
	                       "\"message\":\"etcdserver: requested lease not found\"}",
	                       msg, sizeof(msg), &code));
	CHECK(code == 5 && strcmp(msg, "etcdserver: requested lease not found") == 0);
	CHECK(etcd_parse_error("{\"error\":{\"grpc_code\":5,\"http_code\":404,\"message\":"
	                       "\"etcdserver: requested lease not found\"}}",
	                       msg, sizeof(msg), &code));
	CHECK(code == 5 && strstr(msg, "lease not found"));
	CHECK(!etcd_parse_error("{\"header\":{}}", msg, sizeof(msg), &code));
	CHECK(!etcd_parse_error(NULL, msg, sizeof(msg), &code));
}

TEST_MAIN(test_uri_encode, test_query_canonical, test_config_parse, test_config_load,
          test_xml_error, test_xml_field, test_xml_list, test_multipart_etag, test_http_buf,
          test_transport_errors, test_etcd_requests, test_etcd_replies)
