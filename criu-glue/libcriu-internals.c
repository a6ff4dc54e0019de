/* cryo's one dependency on libcriu's internals, and the checks around it.
 *
 * Why: a dump whose pages go to cryo's page server (pages.h) hands CRIU one
 * end of a socket pair, rpc.proto's criu_page_server_info.fd (CRIU's
 * --ps-socket). Dumps go through libcriu (criu_local_dump), and libcriu
 * (CRIU 4.2.1's lib/c/criu.c) has no call that sets that fd:
 * criu_local_set_page_server_address_port() sets an address and a port only.
 * So the fd is written into the RPC request libcriu builds, relying on two
 * things libcriu does not promise:
 *
 *  - its private struct criu_opts begins with the request's options,
 *    `CriuOpts *rpc;` (4.2.1; older releases have it too);
 *  - criu_local_set_page_server_address_port() allocates rpc->ps, a
 *    CriuPageServerInfo (and returns -ENOMEM even when it succeeds).
 *
 * CRIU takes the fd only when it runs as `criu swrk` (cr-service.c refuses
 * the request otherwise), which is how libcriu runs the service binary that
 * glue.c's prepare() gives it.
 *
 * The guards: at build time, the write is compiled only against libcriu
 * headers of the releases read (LAYOUT_CHECKED); with any other, no dump is
 * given a page-server fd and cryo dumps through files (the supervisor's
 * fallback when criu_glue_pages_start() fails, which asks here first). At
 * run time, the loaded libcriu's descriptors must describe CriuOpts and
 * CriuPageServerInfo as cryo was compiled with them, and the pointer found
 * in its options must be a CriuOpts (a libcriu.so swapped under a built
 * cryo); else the same. tests/unit/test-libcriu.c checks both, and reads
 * the fd back from the request libcriu sends.
 *
 * The other way CRIU 4.2.1 offers is a configuration file
 * (criu_local_set_config_file, saying "page-server" and "ps-socket N"):
 * documented, but a file to write for every dump, whose settings CRIU
 * applies over the RPC ones by rules of its own; every dump by cryo so far
 * has used the RPC field. When libcriu gains a setter for the fd, use it and
 * remove this file. */
#include "libcriu-internals.h"

#include <criu/rpc.pb-c.h>
#include <criu/version.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The releases whose lib/c/criu.c was read for the layout above. */
#define LAYOUT_CHECKED      (CRIU_VERSION_MAJOR == 4 && CRIU_VERSION_MINOR == 2)
#define LAYOUT_CHECKED_NAME "4.2"

#if LAYOUT_CHECKED

/* Whether the loaded libcriu's message, as its descriptor says, is the one
 * cryo was compiled with as far as the field name goes: same size, field of
 * that type at the same offset, its has_ flag too where it has one. */
static bool field_matches(const ProtobufCMessageDescriptor *d, size_t size, const char *name,
                          ProtobufCType type, size_t offset, size_t has_offset)
{
	const ProtobufCFieldDescriptor *f =
	    protobuf_c_message_descriptor_get_field_by_name(d, name);
	return d->sizeof_message == size && f && f->type == type && f->offset == offset &&
	       (has_offset == SIZE_MAX || f->quantifier_offset == has_offset);
}

/* libcriu's request options inside o, with their page-server part made:
 * 0 with *ret, -ENOMEM, or -EOPNOTSUPP if o or the loaded libcriu are not
 * as read (the top of this file). */
static int rpc_opts(criu_opts *o, CriuOpts **ret)
{
	if (!field_matches(&criu_opts__descriptor, sizeof(CriuOpts), "ps", PROTOBUF_C_TYPE_MESSAGE,
	                   offsetof(CriuOpts, ps), SIZE_MAX) ||
	    !field_matches(&criu_page_server_info__descriptor, sizeof(CriuPageServerInfo), "fd",
	                   PROTOBUF_C_TYPE_INT32, offsetof(CriuPageServerInfo, fd),
	                   offsetof(CriuPageServerInfo, has_fd)))
		return -EOPNOTSUPP;
	CriuOpts *rpc = *(CriuOpts **)o;
	/* A small number is no pointer: some other member came first. */
	if ((uintptr_t)rpc < 4096 || rpc->base.descriptor != &criu_opts__descriptor)
		return -EOPNOTSUPP;
	(void)criu_local_set_page_server_address_port(o, "", 0);
	if (!rpc->ps)
		return -ENOMEM;
	if (rpc->ps->base.descriptor != &criu_page_server_info__descriptor)
		return -EOPNOTSUPP;
	*ret = rpc;
	return 0;
}

static int failed(int r, struct cryo_error *err)
{
	if (r == -ENOMEM)
		return error_set(err, r, "cannot give CRIU the page-server fd: %s",
		                 strerror(ENOMEM));
	return error_set(err, -EOPNOTSUPP,
	                 "the libcriu loaded is not laid out as CRIU %s's, which cryo was built "
	                 "against, so cryo cannot give a dump its page-server fd",
	                 CRIU_VERSION);
}

int criu_glue_set_page_server_fd(criu_opts *o, int fd, struct cryo_error *err)
{
	CriuOpts *rpc;
	int r = rpc_opts(o, &rpc);
	if (r < 0)
		return failed(r, err);
	rpc->ps->has_fd = true;
	rpc->ps->fd = fd;
	return 0;
}

int criu_glue_page_server_fd_supported(struct cryo_error *err)
{
	criu_opts *o = NULL;
	if (criu_local_init_opts(&o) < 0)
		return failed(-ENOMEM, err);
	CriuOpts *rpc;
	int r = rpc_opts(o, &rpc);
	criu_local_free_opts(o);
	return r < 0 ? failed(r, err) : 0;
}

#else

static int failed(struct cryo_error *err)
{
	return error_set(err, -EOPNOTSUPP,
	                 "cryo was built against libcriu %s, whose private options it was not "
	                 "checked against (only CRIU %s's), so it cannot give a dump its "
	                 "page-server fd",
	                 CRIU_VERSION, LAYOUT_CHECKED_NAME);
}

int criu_glue_set_page_server_fd(criu_opts *o, int fd, struct cryo_error *err)
{
	(void)o;
	(void)fd;
	return failed(err);
}

int criu_glue_page_server_fd_supported(struct cryo_error *err)
{
	return failed(err);
}

#endif
