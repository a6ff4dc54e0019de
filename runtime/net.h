/* A workload's own network identity: a network namespace holding one
 * interface, eth0, with the workload's IPv4 or IPv6 address, joined to the
 * host by a veth pair whose host end is attached to a bridge or routed. Set up through
 * libnl-route. Functions return 0 or a negative errno with a one-line reason
 * in err. */
#pragma once

#include "error.h"

#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An IPv4 or IPv6 address. */
struct net_ip {
	int family; /* AF_INET, AF_INET6, or 0: none */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	};
};

struct net_config {
	struct net_ip addr;
	unsigned prefix;
	struct net_ip gateway; /* family 0: none (routed mode uses the host end) */
	char bridge[IFNAMSIZ]; /* empty: routed */
};

struct net_ns {
	int fd;       /* the namespace (O_CLOEXEC), -1 when none */
	uint64_t ino; /* its inode: how CRIU names it */
	char host_if[IFNAMSIZ];
	uint8_t mac[6];
	struct net_config cfg;
};

#define NET_NS_INIT                                                                                \
	{                                                                                          \
		.fd = -1                                                                           \
	}

/* CRIU's key for the namespace, at dump (external) and restore (inherit). */
#define NET_CRIU_KEY "cryo-net"

/* Parses an IPv4 or IPv6 address. */
int net_parse_ip(const char *s, struct net_ip *ip);

/* Parses "ADDRESS/N" (N defaults to 32 for IPv4, 128 for IPv6). */
int net_parse_cidr(const char *s, struct net_ip *addr, unsigned *prefix);

/* The address as text, in buf (INET6_ADDRSTRLEN bytes suffice). */
const char *net_format_ip(const struct net_ip *ip, char *buf, size_t len);

/* Writes "ADDRESS/N". */
void net_format_cidr(const struct net_config *c, char *buf, size_t len);

/* Creates the namespace and its interfaces for workload name. The host end
 * stays down unless up is set (a migrated copy waits for its go-ahead). */
int net_create(const char *name, const struct net_config *c, bool up, struct net_ns *ret,
               struct cryo_error *err);

/* Brings the host end up or down: the workload's traffic flows or stops. */
int net_set_up(struct net_ns *n, bool up, struct cryo_error *err);

/* Announces the address from inside the namespace (a gratuitous ARP, or an
 * unsolicited neighbour advertisement for IPv6), so that peers and switches
 * on the segment learn where it went. */
int net_announce(struct net_ns *n, struct cryo_error *err);

/* A neighbour of the workload on eth0: a peer's (or gateway's) address and
 * its link-layer address. */
struct net_neigh {
	struct net_ip ip;
	uint8_t lladdr[6];
};

/* The most neighbour entries a migration carries. */
#define NET_NEIGH_MAX 64

/* The manifest's key for one carried neighbour entry: "ADDRESS MAC". */
#define NET_NEIGH_KEY "net.neigh"

/* The neighbour entries of the namespace's eth0 that know a link-layer
 * address (reachable, stale, being confirmed or permanent), at most max of
 * them, in out. Returns how many, or a negative errno. Read them while the
 * link is up: a link that goes down loses them. */
int net_neigh_list(const struct net_ns *n, struct net_neigh *out, size_t max);

/* Puts entries into the namespace's eth0 as stale: the kernel sends to each
 * peer at once with the address it had, and confirms it meanwhile (a reply,
 * else a unicast probe), instead of first asking the segment who has it (an
 * ARP request or neighbour solicitation, which while the link is down is
 * lost, and is asked again only a second later). */
int net_neigh_add(struct net_ns *n, const struct net_neigh *e, size_t count,
                  struct cryo_error *err);

/* "ADDRESS MAC" and back (-EINVAL: not of that form). */
void net_neigh_format(const struct net_neigh *e, char *buf, size_t len);
int net_neigh_parse(const char *s, struct net_neigh *e);

/* Deletes the interfaces and lets the namespace go. */
void net_destroy(struct net_ns *n);

/* socketpair(AF_UNIX, SOCK_STREAM) made inside n when it has a namespace
 * (CRIU finds a task's unix sockets only in the task's namespace). */
int net_socketpair(const struct net_ns *n, int sp[2]);

/* Resolves "HOST:PORT" (an IPv6 HOST in brackets) for a TCP socket; with passive, HOST may be empty
 * (to listen on every address). -EINVAL when spec is not of that form, -EHOSTUNREACH with the
 * resolver's reason in err. */
int net_resolve(const char *spec, bool passive, struct addrinfo **ret, struct cryo_error *err);

/* Whether addr is assigned to an interface of the caller's namespace. */
bool net_address_in_use(const struct net_ip *addr);

/* Whether a bridge of that name exists in the caller's namespace. */
bool net_bridge_exists(const char *name);
