/* Migration's parts that do not belong to a running supervisor: what the
 * source offers, the target's pre-flight checks, and moving the image archive
 * over a channel. The exchange, in order:
 *
 *   source                                target (cryo serve)
 *   HELLO, OFFER, CPUINFO         ->
 *                                 <-      ACCEPT | REFUSE reason
 *   (link down, dump: frozen from here)
 *   DATA..., END size             ->      stored durably as a generation
 *                                 <-      RUNNING pid | FAILED reason
 *   DONE                          ->      (link up, gratuitous ARP)
 *
 * Until the source has RUNNING it can resume its own copy from the dump; the
 * target's copy stays off the network until DONE, and is stopped if DONE
 * does not come. Functions return 0 or a negative errno, with a reason in
 * err. */
#pragma once

#include "archive.h"
#include "channel.h"
#include "net.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct supervisor_config;

/* How long the source waits for the target's answers. */
#define MIGRATE_ANSWER_MS 30000
/* How long a restored copy waits for the source's DONE. */
#define MIGRATE_DONE_MS 30000

/* An offer's line for each regular file the program holds open for writing
 * (not O_APPEND): "SIZE PATH". These files travel in the image (copied while
 * the program is frozen, as a checkpoint copies them) and the target puts
 * them back at PATH before CRIU restores; it checks for them that it may
 * write PATH and has room, not that they are there. */
#define MIGRATE_HELD_KEY "held"

/* Adds what the target must check to offer: every file mapped by the tree of
 * root (path, size, XXH3-128), except those offer lists as MIGRATE_HELD_KEY,
 * and the expected size of its memory. */
int migrate_describe(pid_t root, struct manifest *offer, struct cryo_error *err);

/* The MIGRATE_HELD_KEY files' bytes in all. */
uint64_t migrate_held_bytes(const struct manifest *offer);

/* Whether path is one a target writes a file the program holds at: absolute,
 * shorter than PATH_MAX, without a '.', '..' or empty part. 0 or -EINVAL. */
int migrate_held_path_plain(const char *path);

/* Whether this machine lets a migration put a file back at path:
 * migrate_held_path_plain(), and what is there is a regular file (not a
 * symbolic link, a directory, a device...) or nothing, in a directory that
 * exists. The file is then written with O_NOFOLLOW. err names the path. */
int migrate_held_path_check(const char *path, struct cryo_error *err);

/* How many established TCP connections the tree of root holds. */
int migrate_count_connections(pid_t root);

/* What a target allows the offers it takes (cryo serve's options). Whoever
 * holds the key decides every other field of an offer; these are the
 * target's own limits on them. */
struct migrate_limits {
	char *const *bridges; /* the bridges workloads may attach to (--bridge) */
	size_t n_bridges;
	char *const *names; /* the workload names it takes (--allow); none: any */
	size_t n_names;
	/* the directories under which it writes the files a program holds
	 * open for writing (--files-under); none: wherever the source had them */
	char *const *file_dirs;
	size_t n_file_dirs;
};

/* Whether lim lets a migration write a file the program holds at path:
 * migrate_held_path_plain(), and with --files-under, under one of those
 * directories. err names the path (and the option). */
int migrate_held_path_allowed(const char *path, const struct migrate_limits *lim,
                              struct cryo_error *err);

/* Checks every field of an offer that the target obeys against its limits
 * and ranges (the name, the program's arguments and working directory, the
 * address, gateway and bridge, the supervisor's settings, the size, the
 * files it holds open for writing: plain paths, under lim's directories,
 * within its set.files_max), and
 * fills cfg's name, argv (allocated: the caller frees it, its strings point
 * into offer), policy, max_restarts, keep, every_ns, zstd_level,
 * incremental, lazy_restore and dump_via_memory, and net with cfg->net
 * pointing to it when the workload has an address. A refusal's reason
 * names the field. */
int migrate_check_offer(const struct manifest *offer, const struct migrate_limits *lim,
                        struct supervisor_config *cfg, struct net_config *net,
                        struct cryo_error *err);

/* The most the image archives of a checked offer may take in the target's
 * store: its memory as the source estimated it, with room for the images'
 * other files, twice for a pre-copy (a whole image, then what changed), and
 * the files it holds open for writing with a quarter more. */
uint64_t migrate_stream_cap(const struct manifest *offer);

/* The target's checks of an offer, short of the workload's name (the caller
 * holds its lock) and of migrate_check_offer's: CRIU, the CPU, the files it
 * maps, the working directory, the address, the bridge, the room in
 * state_dir for migrate_stream_cap(), and for each file it holds open for
 * writing migrate_held_path_check() and room in its file system. */
int migrate_check(const struct manifest *offer, const uint8_t *cpuinfo, size_t cpuinfo_len,
                  const char *state_dir, struct cryo_error *err);

struct incoming;

struct migrate_progress {
	void (*fn)(void *arg, uint64_t sent, uint64_t raw_done, uint64_t raw_total);
	void *arg;
};

/* Sends the image files of dir, the n_mem files in memory and manifest m as
 * an archive (compressed on two threads while it goes), then END. *sent
 * gets the archive's size. */
int migrate_send_image(struct channel *c, const char *dir, const struct mem_file *mem, size_t n_mem,
                       struct manifest *m, const struct migrate_progress *progress, uint64_t *sent,
                       struct cryo_error *err);

/* On the target, for a pre-copied migration: rebuilds the memory images of
 * in (an incremental generation) from those of base, the generation sent
 * before the freeze, whose extracted images are then removed. */
int migrate_rebuild(struct incoming *in, struct incoming *base, struct cryo_error *err);

/* A workload arriving on the target. */
struct incoming {
	struct channel *ch;
	uint64_t generation;
	char images[PATH_MAX];     /* its images, extracted while they arrived */
	struct manifest *manifest; /* the archive's */
	uint64_t bytes;            /* the archive's size */
	/* The archive becomes durable (fsync, rename, directory fsync) while
	 * the restore runs. */
	pthread_t sync;
	bool syncing, durable;
	bool confirmed; /* the source said DONE: the archive is a generation here */
	const struct migrate_limits *limits; /* the target's, set after migrate_receive() */
	int sync_result;
	int archive_fd;
	char tmp[PATH_MAX + 32], final[PATH_MAX], store_dir[PATH_MAX];
};

/* Receives an archive: stores it as generation gen of store_dir and
 * extracts it on the way (into memory when raw_estimate bytes fit there).
 * An archive longer than max_bytes is refused (-EFBIG) as soon as it passes
 * them. A damaged, forged, truncated or oversized stream leaves nothing
 * behind. */
int migrate_receive(struct incoming *in, struct channel *c, const char *store_dir, uint64_t gen,
                    uint64_t raw_estimate, uint64_t max_bytes, struct cryo_error *err);

/* Waits until the received archive is durable in the store. */
int migrate_wait_durable(struct incoming *in, struct cryo_error *err);

/* Removes the extracted images. An arrival the source did not confirm
 * leaves no generation: its archive is set aside as gen-N.cryo.unconfirmed
 * (never resumed by itself), or removed if it was not complete. */
void migrate_incoming_done(struct incoming *in);

/* Whether the tests injected this fault into migrations
 * (CRYO_INJECT_MIGRATE_FAULT): "late-done", "restore", "give-up". */
bool migrate_fault(const char *fault);

/* What follows prefix in an injected fault that starts with it, or NULL:
 * "offer:KEY=VALUE" makes the source send that value of KEY in its offer,
 * as a peer that holds the key could. */
const char *migrate_fault_arg(const char *prefix);
