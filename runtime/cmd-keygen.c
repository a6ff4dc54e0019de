/* cryo keygen [FILE]: make the key that cryo migrate and cryo serve share. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEYGEN_DEFAULT "/etc/cryo/key"
#define KEYGEN_BYTES   32

static void usage(FILE *f)
{
	fputs("usage: cryo keygen [FILE]\n"
	      "\n"
	      "Writes a new random key of 32 bytes to FILE (default " KEYGEN_DEFAULT "), of\n"
	      "mode 600, for cryo migrate --key-file and cryo serve --key-file: the same\n"
	      "file on every machine of the cluster. Its directory is made, of mode 700, if\n"
	      "it is missing. An existing FILE is never overwritten (the machines that hold\n"
	      "it would no longer match): remove it first to make a new key.\n",
	      f);
}

int cmd_keygen(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		log_error("unknown option '%s' for 'cryo keygen' (see cryo keygen --help)",
		          argv[optind - 1]);
		return CLI_EXIT_USAGE;
	}
	if (argc - optind > 1) {
		log_error("give at most one file: cryo keygen [FILE]");
		return CLI_EXIT_USAGE;
	}
	const char *file = optind < argc ? argv[optind] : KEYGEN_DEFAULT;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", file);
	const char *d = dirname(dir);
	/* Only its owner may list or replace what the directory holds. */
	if (mkdir(d, 0700) == 0) {
		if (chmod(d, 0700) < 0) {
			log_error("cannot make '%s' of mode 700: %m", d);
			return 1;
		}
	} else if (errno != EEXIST) {
		log_error("cannot create the directory '%s': %m", d);
		return 1;
	}
	uint8_t key[KEYGEN_BYTES];
	if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
		log_error("cannot get random bytes: %m");
		return 1;
	}
	/* Made anew, never through a link nor over an existing key. */
	_cleanup_close_ int fd =
	    open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST) {
		log_error("'%s' exists: cryo keygen never overwrites a key (the machines that hold "
		          "it would no longer match); remove it first to make a new one",
		          file);
		return 1;
	}
	if (fd < 0) {
		log_error("cannot create '%s': %m", file);
		return 1;
	}
	int r = fchmod(fd, 0600) < 0 ? -errno : util_write_all(fd, key, sizeof(key));
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0)
		r = util_fsync_dir(d);
	explicit_bzero(key, sizeof(key));
	if (r < 0) {
		log_error("cannot write '%s': %s", file, strerror(-r));
		unlink(file);
		return 1;
	}
	printf("wrote a new key to '%s' (mode 600): copy it to every machine that migrates "
	       "with it, over a channel you already trust\n",
	       file);
	return 0;
}
