/* Stands in for `criu swrk FD` in test-libcriu, so that the RPC request
 * libcriu builds for a dump can be read without a CRIU: reads that one
 * request, writes what it asks into "request.txt" in the request's work
 * directory (an fd this process inherited, as CRIU's own would), and
 * answers that the dump succeeded. */
#include <criu/rpc.pb-c.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* What the request's page-server part gives, one line. */
static void describe_ps(FILE *out, const CriuPageServerInfo *ps)
{
	if (!ps) {
		fprintf(out, "no page server\n");
		return;
	}
	fprintf(out, "page server address '%s' port %d", ps->address ? ps->address : "(none)",
	        ps->has_port ? ps->port : -1);
	struct stat st;
	if (ps->has_fd && fstat(ps->fd, &st) == 0)
		fprintf(out, " fd %d %s %llu", ps->fd,
		        S_ISSOCK(st.st_mode) ? "socket" : "not-socket",
		        (unsigned long long)st.st_ino);
	else if (ps->has_fd)
		fprintf(out, " fd %d not-open", ps->fd);
	fprintf(out, "\n");
}

int main(int argc, char **argv)
{
	if (argc != 3 || strcmp(argv[1], "swrk") != 0)
		return 2;
	int sk = atoi(argv[2]);
	ssize_t len = recv(sk, NULL, 0, MSG_PEEK | MSG_TRUNC);
	uint8_t *buf = len > 0 ? malloc((size_t)len) : NULL;
	if (!buf || recv(sk, buf, (size_t)len, 0) != len)
		return 3;
	CriuReq *req = criu_req__unpack(NULL, (size_t)len, buf);
	free(buf);
	if (!req || !req->opts || !req->opts->has_work_dir_fd)
		return 4;
	int fd = openat(req->opts->work_dir_fd, "request.txt",
	                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!out)
		return 5;
	fprintf(out, "%s pid %d\n", req->type == CRIU_REQ_TYPE__DUMP ? "dump" : "other",
	        req->opts->has_pid ? req->opts->pid : -1);
	describe_ps(out, req->opts->ps);
	if (fclose(out) != 0)
		return 6;

	CriuDumpResp dump = CRIU_DUMP_RESP__INIT;
	CriuResp resp = CRIU_RESP__INIT;
	resp.type = req->type;
	resp.success = true;
	resp.dump = &dump;
	size_t n = criu_resp__get_packed_size(&resp);
	uint8_t *packed = malloc(n);
	if (!packed)
		return 7;
	criu_resp__pack(&resp, packed);
	bool sent = send(sk, packed, n, MSG_NOSIGNAL) == (ssize_t)n;
	free(packed);
	criu_req__free_unpacked(req, NULL);
	return sent ? 0 : 8;
}
