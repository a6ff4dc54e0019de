/* The mounts of a workload's mount namespace that are gone from ours, left
 * out of its images before a restore (mounts.c). */
#pragma once

#include "error.h"

#include <stddef.h>

/* Leaves out of the images in images_dir (their mountpoints-N.img) each of
 * the workload's mounts that CRIU would bind again from one of ours that is
 * gone, and the mounts under it; *dropped is how many. Returns 0, or a
 * negative errno with err saying why (an image that cannot be read or
 * rewritten). Images without a mount namespace are left as they are. */
int criu_glue_drop_gone_mounts(const char *images_dir, size_t *dropped, struct cryo_error *err);
