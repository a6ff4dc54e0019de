/* The one place where cryo depends on libcriu's internals (libcriu-internals.c
 * says which, and for which versions): giving a dump's CRIU the socket of
 * cryo's page server (pages.h), for which libcriu has no call. Internal to
 * criu-glue. */
#pragma once

#include "error.h"

#include <criu/criu.h>

/* Whether the dump options of this libcriu can carry a page-server fd: 0, or
 * -EOPNOTSUPP with the reason in err (a libcriu whose private layout cryo
 * was not checked against). Starts no CRIU; costs a few allocations. */
int criu_glue_page_server_fd_supported(struct cryo_error *err);

/* Makes the dump o describes send its pages on fd (CRIU's --ps-socket) to
 * the page server at the other end, instead of writing pages images. fd
 * must survive the exec of criu (no O_CLOEXEC). Returns 0, -ENOMEM, or
 * -EOPNOTSUPP with the reason in err. At most once per o. */
int criu_glue_set_page_server_fd(criu_opts *o, int fd, struct cryo_error *err);
