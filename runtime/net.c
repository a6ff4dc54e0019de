#include "net.h"
#include "cleanup.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/icmp6.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <netlink/route/nexthop.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

int net_parse_ip(const char *s, struct net_ip *ip)
{
	struct net_ip r = {0};
	if (inet_pton(AF_INET, s, &r.v4) == 1)
		r.family = AF_INET;
	else if (inet_pton(AF_INET6, s, &r.v6) == 1)
		r.family = AF_INET6;
	else
		return -EINVAL;
	*ip = r;
	return 0;
}

int net_parse_cidr(const char *s, struct net_ip *addr, unsigned *prefix)
{
	char buf[64];
	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	struct net_ip ip;
	if (net_parse_ip(buf, &ip) < 0)
		return -EINVAL;
	unsigned max = ip.family == AF_INET6 ? 128 : 32, p = max;
	if (slash) {
		char *end;
		unsigned long v = strtoul(slash + 1, &end, 10);
		if (!slash[1] || *end || v < 1 || v > max)
			return -EINVAL;
		p = (unsigned)v;
	}
	*addr = ip;
	*prefix = p;
	return 0;
}

static size_t ip_len(const struct net_ip *ip)
{
	return ip->family == AF_INET6 ? sizeof(ip->v6) : sizeof(ip->v4);
}

const char *net_format_ip(const struct net_ip *ip, char *buf, size_t len)
{
	if (!inet_ntop(ip->family, &ip->v6, buf, (socklen_t)len))
		snprintf(buf, len, "?");
	return buf;
}

void net_format_cidr(const struct net_config *c, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];
	snprintf(buf, len, "%s/%u", net_format_ip(&c->addr, a, sizeof(a)), c->prefix);
}

static void nl_sock_freep(struct nl_sock **s)
{
	if (*s)
		nl_socket_free(*s);
}
#define _cleanup_nl_sock_ __attribute__((cleanup(nl_sock_freep)))

static struct nl_sock *route_socket(void)
{
	struct nl_sock *sk = nl_socket_alloc();
	if (sk && nl_connect(sk, NETLINK_ROUTE) < 0) {
		nl_socket_free(sk);
		sk = NULL;
	}
	return sk;
}

/* Runs fn inside namespace fd and comes back. */
static int in_netns(int fd, int (*fn)(void *), void *arg)
{
	_cleanup_close_ int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0)
		return -errno;
	if (setns(fd, CLONE_NEWNET) < 0)
		return -errno;
	int r = fn(arg);
	if (setns(self, CLONE_NEWNET) < 0)
		abort(); /* a supervisor stuck in the wrong namespace must not go on */
	return r;
}

static int link_set_up(struct nl_sock *sk, const char *name, bool up)
{
	struct rtnl_link *link = NULL, *chg = NULL;
	int r = rtnl_link_get_kernel(sk, 0, name, &link);
	if (r < 0)
		return -ENODEV;
	chg = rtnl_link_alloc();
	if (!chg) {
		rtnl_link_put(link);
		return -ENOMEM;
	}
	if (up)
		rtnl_link_set_flags(chg, IFF_UP);
	else
		rtnl_link_unset_flags(chg, IFF_UP);
	r = rtnl_link_change(sk, link, chg, 0);
	rtnl_link_put(chg);
	rtnl_link_put(link);
	return r < 0 ? -EIO : 0;
}

static int link_index(struct nl_sock *sk, const char *name, bool *is_bridge)
{
	struct rtnl_link *link = NULL;
	if (rtnl_link_get_kernel(sk, 0, name, &link) < 0)
		return -ENODEV;
	int idx = rtnl_link_get_ifindex(link);
	if (is_bridge) {
		const char *type = rtnl_link_get_type(link);
		*is_bridge = type && !strcmp(type, "bridge");
	}
	rtnl_link_put(link);
	return idx;
}

static int add_route(struct nl_sock *sk, int family, const char *dst, int ifindex,
                     const struct net_ip *gw)
{
	struct nl_addr *d = NULL, *g = NULL;
	struct rtnl_route *rt = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	int r = -ENOMEM;
	if (!rt || !nh || nl_addr_parse(dst, family, &d) < 0)
		goto out;
	rtnl_route_set_family(rt, (uint8_t)family);
	rtnl_route_set_dst(rt, d);
	rtnl_route_nh_set_ifindex(nh, ifindex);
	if (gw && gw->family) {
		g = nl_addr_build(gw->family, &gw->v6, ip_len(gw));
		if (!g)
			goto out;
		rtnl_route_nh_set_gateway(nh, g);
	} else {
		rtnl_route_set_scope(rt, RT_SCOPE_LINK);
	}
	rtnl_route_add_nexthop(rt, nh);
	nh = NULL; /* the route owns it now */
	r = rtnl_route_add(sk, rt, NLM_F_CREATE | NLM_F_REPLACE) < 0 ? -EIO : 0;
out:
	if (nh)
		rtnl_route_nh_free(nh);
	if (rt)
		rtnl_route_put(rt);
	nl_addr_put(d);
	nl_addr_put(g);
	return r;
}

/* A bridge whose address nobody set takes the lowest address of its ports,
 * and takes another one whenever a port with a lower address comes or goes.
 * A workload's host end could be that port (its address starts with 0xfe,
 * above real NICs, but veths and an empty bridge have random ones), and the
 * bridge's address would then change when the workload leaves: peers that
 * knew the old one lose the host for a while (their neighbour entries point
 * to an address nobody has; a migration's answers to its source got lost
 * that way for 30 s and more). So the bridge keeps its current address: set
 * explicitly, it no longer follows its ports. */
static int keep_bridge_address(struct nl_sock *sk, int br)
{
	struct rtnl_link *link = NULL;
	if (rtnl_link_get_kernel(sk, br, NULL, &link) < 0)
		return -ENODEV;
	struct nl_addr *cur = rtnl_link_get_addr(link);
	int r = 0;
	if (cur && nl_addr_get_len(cur) == 6) {
		struct rtnl_link *chg = rtnl_link_alloc();
		r = -ENOMEM;
		if (chg) {
			rtnl_link_set_addr(chg, cur);
			r = rtnl_link_change(sk, link, chg, 0) < 0 ? -EIO : 0;
			rtnl_link_put(chg);
		}
	}
	rtnl_link_put(link);
	return r;
}

static int write_sysctl(const char *path, const char *value)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return util_write_all(fd, value, strlen(value));
}

/* The gateway of a routed IPv6 workload: fe80::1 on the host end. */
#define ROUTED_GATEWAY_V6 ((struct in6_addr){.s6_addr = {0xfe, 0x80, [15] = 1}})

/* Gives interface name the address ip/prefix (IPv6: without duplicate
 * address detection). */
static int add_address(struct nl_sock *sk, const char *name, const struct net_ip *ip,
                       unsigned prefix)
{
	int idx = link_index(sk, name, NULL);
	if (idx < 0)
		return idx;
	struct rtnl_addr *a = rtnl_addr_alloc();
	struct nl_addr *local = nl_addr_build(ip->family, &ip->v6, ip_len(ip));
	int r = -ENOMEM;
	if (a && local) {
		nl_addr_set_prefixlen(local, (int)prefix);
		rtnl_addr_set_ifindex(a, idx);
		rtnl_addr_set_local(a, local);
		if (ip->family == AF_INET6)
			rtnl_addr_set_flags(a, IFA_F_NODAD);
		r = rtnl_addr_add(sk, a, 0) < 0 ? -EIO : 0;
	}
	nl_addr_put(local);
	if (a)
		rtnl_addr_put(a);
	return r;
}

struct inside {
	const struct net_ns *n;
	struct cryo_error *err;
};

/* Inside the namespace: lo and eth0 up, the address, the default route. */
static int setup_inside(void *arg)
{
	struct inside *in = arg;
	const struct net_config *c = &in->n->cfg;
	_cleanup_nl_sock_ struct nl_sock *sk = route_socket();
	if (!sk)
		return error_set(in->err, -ENOMEM, "cannot open a netlink socket");
	/* IPv6: no duplicate address detection, which would keep the
	 * addresses unusable for a second after every start and arrival
	 * (the address moves with the workload; there is no duplicate). */
	if (c->addr.family == AF_INET6 &&
	    write_sysctl("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0") < 0)
		return error_set(in->err, -EIO,
		                 "cannot turn off duplicate address detection on eth0");
	if (link_set_up(sk, "lo", true) < 0 || link_set_up(sk, "eth0", true) < 0)
		return error_set(in->err, -EIO, "cannot bring up the workload's interfaces");
	int idx = link_index(sk, "eth0", NULL);
	if (idx < 0)
		return error_set(in->err, idx, "the workload's eth0 is missing");
	int r = add_address(sk, "eth0", &c->addr, c->prefix);
	if (r < 0)
		return error_set(in->err, r, "cannot assign the workload's address");
	/* Routed without a gateway: every destination is asked for on eth0,
	 * and the host end answers (its own addresses, and through proxy ARP
	 * what it routes elsewhere). */
	bool routed = !c->bridge[0] && !c->gateway.family;
	bool v6 = c->addr.family == AF_INET6;
	/* Routed IPv6: through the host end's fe80::1. */
	struct net_ip via = routed && v6
	                        ? (struct net_ip){.family = AF_INET6, .v6 = ROUTED_GATEWAY_V6}
	                        : c->gateway;
	if ((routed || c->gateway.family) &&
	    add_route(sk, c->addr.family, v6 ? "::/0" : "0.0.0.0/0", idx, &via) < 0)
		return error_set(in->err, -EIO,
		                 "cannot add the workload's default route (is the gateway inside "
		                 "its subnet?)");
	return 0;
}

int net_create(const char *name, const struct net_config *c, bool up, struct net_ns *ret,
               struct cryo_error *err)
{
	struct net_ns n = {.fd = -1, .cfg = *c};
	uint64_t h = XXH3_64bits(name, strlen(name));
	snprintf(n.host_if, sizeof(n.host_if), "cryo-%08x", (unsigned)(h >> 32));
	/* Locally administered, from the name and address: the same on every
	 * host, so a moved workload keeps its MAC as well as its address. */
	uint64_t mh = XXH3_64bits_withSeed(&c->addr.v6, ip_len(&c->addr), h);
	n.mac[0] = 0x02;
	memcpy(n.mac + 1, &mh, 5);

	_cleanup_nl_sock_ struct nl_sock *sk = route_socket();
	if (!sk)
		return error_set(err, -ENOMEM, "cannot open a netlink socket");
	int br = -1;
	if (c->bridge[0]) {
		bool is_bridge = false;
		br = link_index(sk, c->bridge, &is_bridge);
		if (br < 0 || !is_bridge)
			return error_set(err, -ENODEV,
			                 "there is no bridge '%s' here (create it, or leave out "
			                 "--bridge for a routed address)",
			                 c->bridge);
	}
	if (link_index(sk, n.host_if, NULL) >= 0)
		return error_set(err, -EEXIST,
		                 "interface '%s' exists already: another workload named '%s' has a "
		                 "network here",
		                 n.host_if, name);

	/* The namespace: made by unsharing, kept by its fd. */
	_cleanup_close_ int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0 || unshare(CLONE_NEWNET) < 0)
		return error_set(err, -errno, "cannot create a network namespace: %m");
	n.fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	int saved = errno;
	if (setns(self, CLONE_NEWNET) < 0)
		abort();
	if (n.fd < 0)
		return error_set(err, -saved, "cannot open the new network namespace: %s",
		                 strerror(saved));
	struct stat st;
	fstat(n.fd, &st);
	n.ino = (uint64_t)st.st_ino;

	struct rtnl_link *veth = rtnl_link_veth_alloc();
	if (!veth) {
		close(n.fd);
		return error_set(err, -ENOMEM, "out of memory");
	}
	struct rtnl_link *peer = rtnl_link_veth_get_peer(veth);
	rtnl_link_set_name(veth, n.host_if);
	rtnl_link_set_name(peer, "eth0");
	rtnl_link_set_ns_fd(peer, n.fd);
	struct nl_addr *mac = nl_addr_build(AF_LLC, n.mac, 6);
	if (mac)
		rtnl_link_set_addr(peer, mac);
	/* The host end starts with 0xfe, above any real NIC's address: a
	 * bridge takes the lowest address of its ports as its own, and must
	 * not take this one (its address would change when the workload
	 * leaves, and its peers would lose it). */
	uint8_t host_mac[6] = {0xfe};
	memcpy(host_mac + 1, n.mac + 1, 5);
	struct nl_addr *hmac = nl_addr_build(AF_LLC, host_mac, 6);
	if (hmac)
		rtnl_link_set_addr(veth, hmac);
	int r = rtnl_link_add(sk, veth, NLM_F_CREATE | NLM_F_EXCL);
	nl_addr_put(mac);
	nl_addr_put(hmac);
	rtnl_link_put(peer);
	rtnl_link_veth_release(veth);
	if (r < 0) {
		close(n.fd);
		return error_set(err, -EIO, "cannot create the veth pair '%s': %s", n.host_if,
		                 nl_geterror(r));
	}
	if (br >= 0) {
		int idx = link_index(sk, n.host_if, NULL);
		if (idx < 0 || keep_bridge_address(sk, br) < 0 ||
		    rtnl_link_enslave_ifindex(sk, br, idx) < 0) {
			net_destroy(&n);
			return error_set(err, -EIO, "cannot attach '%s' to bridge '%s'", n.host_if,
			                 c->bridge);
		}
	} else if (c->addr.family == AF_INET6) {
		/* Routed IPv6: the host end holds fe80::1, the workload's
		 * gateway, usable at once (no duplicate address detection). */
		char path[128];
		snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/accept_dad", n.host_if);
		r = write_sysctl(path, "0");
		/* It keeps it while the link is down (a migration's freeze). */
		snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/keep_addr_on_down",
		         n.host_if);
		if (r == 0)
			r = write_sysctl(path, "1");
		if (r == 0)
			r = add_address(
			    sk, n.host_if,
			    &(struct net_ip){.family = AF_INET6, .v6 = ROUTED_GATEWAY_V6}, 64);
		if (r < 0) {
			net_destroy(&n);
			return error_set(err, r, "cannot give '%s' the address fe80::1", n.host_if);
		}
	} else {
		/* Routed: the host answers ARP for the workload's gateway and
		 * forwards its packets. */
		char path[128];
		snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/proxy_arp", n.host_if);
		if (write_sysctl(path, "1") < 0 ||
		    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1") < 0) {
			net_destroy(&n);
			return error_set(err, -EIO,
			                 "cannot enable proxy ARP and forwarding for '%s'",
			                 n.host_if);
		}
	}
	struct inside in = {&n, err};
	r = in_netns(n.fd, setup_inside, &in);
	if (r == 0 && up)
		r = net_set_up(&n, true, err);
	if (r < 0) {
		net_destroy(&n);
		return r;
	}
	*ret = n;
	return 0;
}

int net_set_up(struct net_ns *n, bool up, struct cryo_error *err)
{
	_cleanup_nl_sock_ struct nl_sock *sk = route_socket();
	if (!sk)
		return error_set(err, -ENOMEM, "cannot open a netlink socket");
	if (link_set_up(sk, n->host_if, up) < 0)
		return error_set(err, -EIO, "cannot bring '%s' %s", n->host_if, up ? "up" : "down");
	if (up && !n->cfg.bridge[0]) {
		/* The host route goes away whenever the link is down. */
		char dst[INET6_ADDRSTRLEN + 8];
		bool v6 = n->cfg.addr.family == AF_INET6;
		net_format_ip(&n->cfg.addr, dst, sizeof(dst));
		strcat(dst, v6 ? "/128" : "/32");
		int idx = link_index(sk, n->host_if, NULL);
		if (idx < 0 || add_route(sk, n->cfg.addr.family, dst, idx, NULL) < 0)
			return error_set(err, -EIO, "cannot route %s to '%s'", dst, n->host_if);
	}
	return 0;
}

/* The carrier of a veth whose peer just came up follows a little later (the
 * kernel's link watch); waits for it, up to 2 s. */
static void wait_running(int fd)
{
	struct ifreq ifr = {0};
	strcpy(ifr.ifr_name, "eth0");
	for (int i = 0; i < 200; i++) {
		if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_RUNNING))
			break;
		usleep(10000);
	}
}

/* Sends msg twice, in case the first one meets a port still coming up. */
static int send_twice(int fd, const void *msg, size_t len, const void *to, socklen_t to_len)
{
	for (int i = 0; i < 2; i++) {
		if (i)
			usleep(20000);
		if (sendto(fd, msg, len, 0, to, to_len) < 0)
			return -errno;
	}
	return 0;
}

/* A gratuitous ARP: a request for our own address, which every host updates. */
static int announce_v4(const struct net_ns *n, unsigned idx)
{
	_cleanup_close_ int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
	if (fd < 0)
		return -errno;
	struct __attribute__((packed)) {
		uint16_t htype, ptype;
		uint8_t hlen, plen;
		uint16_t op;
		uint8_t sha[6];
		uint32_t spa;
		uint8_t tha[6];
		uint32_t tpa;
	} arp = {
	    .htype = htons(1),
	    .ptype = htons(ETH_P_IP),
	    .hlen = 6,
	    .plen = 4,
	    .op = htons(1),
	    .spa = n->cfg.addr.v4.s_addr,
	    .tpa = n->cfg.addr.v4.s_addr,
	};
	memcpy(arp.sha, n->mac, 6);
	struct sockaddr_ll to = {
	    .sll_family = AF_PACKET,
	    .sll_protocol = htons(ETH_P_ARP),
	    .sll_ifindex = (int)idx,
	    .sll_halen = 6,
	};
	memset(to.sll_addr, 0xff, 6);
	wait_running(fd);
	return send_twice(fd, &arp, sizeof(arp), &to, sizeof(to));
}

/* An unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes,
 * with the override flag and our link-layer address; the kernel fills in
 * the ICMPv6 checksum. */
static int announce_v6(const struct net_ns *n, unsigned idx)
{
	_cleanup_close_ int fd = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6);
	if (fd < 0)
		return -errno;
	int hops = 255;
	struct sockaddr_in6 src = {.sin6_family = AF_INET6, .sin6_addr = n->cfg.addr.v6};
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops)) < 0 ||
	    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof(idx)) < 0 ||
	    bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
		return -errno;
	struct __attribute__((packed)) {
		struct nd_neighbor_advert na;
		uint8_t opt_type, opt_len, mac[6];
	} m = {
	    .na.nd_na_type = ND_NEIGHBOR_ADVERT,
	    .na.nd_na_flags_reserved = ND_NA_FLAG_OVERRIDE,
	    .na.nd_na_target = n->cfg.addr.v6,
	    .opt_type = ND_OPT_TARGET_LINKADDR,
	    .opt_len = 1,
	};
	memcpy(m.mac, n->mac, 6);
	struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_scope_id = idx};
	inet_pton(AF_INET6, "ff02::1", &to.sin6_addr);
	wait_running(fd);
	return send_twice(fd, &m, sizeof(m), &to, sizeof(to));
}

static int announce_inside(void *arg)
{
	struct inside *in = arg;
	const struct net_ns *n = in->n;
	unsigned idx = if_nametoindex("eth0");
	if (!idx)
		return error_set(in->err, -ENODEV, "the workload's eth0 is missing");
	bool v6 = n->cfg.addr.family == AF_INET6;
	int r = v6 ? announce_v6(n, idx) : announce_v4(n, idx);
	if (r < 0)
		return error_set(in->err, r, "cannot send %s: %s",
		                 v6 ? "a neighbour advertisement" : "a gratuitous ARP",
		                 strerror(-r));
	return 0;
}

int net_announce(struct net_ns *n, struct cryo_error *err)
{
	struct inside in = {n, err};
	return in_netns(n->fd, announce_inside, &in);
}

/* What net_neigh_list() and net_neigh_add() do inside the namespace. */
struct neigh_job {
	struct net_neigh *list; /* listing: out; adding: in */
	size_t n, max;
	int r;
	struct cryo_error *err;
};

static void neigh_collect(struct nl_object *obj, void *arg)
{
	struct neigh_job *j = arg;
	struct rtnl_neigh *ne = (struct rtnl_neigh *)obj;
	int state = rtnl_neigh_get_state(ne);
	struct nl_addr *dst = rtnl_neigh_get_dst(ne), *ll = rtnl_neigh_get_lladdr(ne);
	if (j->n == j->max || !dst || !ll || nl_addr_get_len(ll) != 6 ||
	    !(state & (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT)))
		return;
	struct net_neigh *e = &j->list[j->n];
	e->ip.family = nl_addr_get_family(dst);
	if (e->ip.family == AF_INET && nl_addr_get_len(dst) == 4)
		memcpy(&e->ip.v4, nl_addr_get_binary_addr(dst), 4);
	else if (e->ip.family == AF_INET6 && nl_addr_get_len(dst) == 16)
		memcpy(&e->ip.v6, nl_addr_get_binary_addr(dst), 16);
	else
		return;
	memcpy(e->lladdr, nl_addr_get_binary_addr(ll), 6);
	j->n++;
}

static int neigh_list_inside(void *arg)
{
	struct neigh_job *j = arg;
	_cleanup_nl_sock_ struct nl_sock *sk = route_socket();
	if (!sk)
		return -ENOMEM;
	int idx = link_index(sk, "eth0", NULL);
	if (idx < 0)
		return idx;
	struct nl_cache *cache = NULL;
	if (rtnl_neigh_alloc_cache(sk, &cache) < 0)
		return -EIO;
	struct rtnl_neigh *filter = rtnl_neigh_alloc();
	if (!filter) {
		nl_cache_free(cache);
		return -ENOMEM;
	}
	rtnl_neigh_set_ifindex(filter, idx);
	nl_cache_foreach_filter(cache, (struct nl_object *)filter, neigh_collect, j);
	rtnl_neigh_put(filter);
	nl_cache_free(cache);
	return 0;
}

int net_neigh_list(const struct net_ns *n, struct net_neigh *out, size_t max)
{
	struct neigh_job j = {.list = out, .max = max};
	int r = in_netns(n->fd, neigh_list_inside, &j);
	return r < 0 ? r : (int)j.n;
}

static int neigh_add_inside(void *arg)
{
	struct neigh_job *j = arg;
	_cleanup_nl_sock_ struct nl_sock *sk = route_socket();
	if (!sk)
		return error_set(j->err, -ENOMEM, "cannot open a netlink socket");
	int idx = link_index(sk, "eth0", NULL);
	if (idx < 0)
		return error_set(j->err, idx, "the workload's eth0 is missing");
	for (size_t i = 0; i < j->n; i++) {
		const struct net_neigh *e = &j->list[i];
		struct rtnl_neigh *ne = rtnl_neigh_alloc();
		struct nl_addr *dst = nl_addr_build(e->ip.family, &e->ip.v6, ip_len(&e->ip));
		struct nl_addr *ll = nl_addr_build(AF_LLC, e->lladdr, 6);
		int r = -ENOMEM;
		if (ne && dst && ll) {
			rtnl_neigh_set_ifindex(ne, idx);
			rtnl_neigh_set_family(ne, e->ip.family);
			rtnl_neigh_set_dst(ne, dst);
			rtnl_neigh_set_lladdr(ne, ll);
			rtnl_neigh_set_state(ne, NUD_STALE);
			r = rtnl_neigh_add(sk, ne, NLM_F_CREATE | NLM_F_REPLACE);
		}
		if (ne)
			rtnl_neigh_put(ne);
		nl_addr_put(dst);
		nl_addr_put(ll);
		if (r < 0) {
			char ip[INET6_ADDRSTRLEN];
			return error_set(j->err, -EIO, "cannot add the neighbour entry for %s: %s",
			                 net_format_ip(&e->ip, ip, sizeof(ip)),
			                 r == -ENOMEM ? "out of memory" : nl_geterror(r));
		}
	}
	return 0;
}

int net_neigh_add(struct net_ns *n, const struct net_neigh *e, size_t count, struct cryo_error *err)
{
	struct neigh_job j = {.list = (struct net_neigh *)e, .n = count, .err = err};
	return in_netns(n->fd, neigh_add_inside, &j);
}

void net_neigh_format(const struct net_neigh *e, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	const uint8_t *m = e->lladdr;
	snprintf(buf, len, "%s %02x:%02x:%02x:%02x:%02x:%02x",
	         net_format_ip(&e->ip, ip, sizeof(ip)), m[0], m[1], m[2], m[3], m[4], m[5]);
}

int net_neigh_parse(const char *s, struct net_neigh *e)
{
	char ip[INET6_ADDRSTRLEN + 1];
	unsigned m[6];
	int end = 0;
	if (sscanf(s, "%46s %2x:%2x:%2x:%2x:%2x:%2x%n", ip, &m[0], &m[1], &m[2], &m[3], &m[4],
	           &m[5], &end) != 7 ||
	    s[end] != '\0' || net_parse_ip(ip, &e->ip) < 0)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		e->lladdr[i] = (uint8_t)m[i];
	return 0;
}

void net_destroy(struct net_ns *n)
{
	if (n->fd < 0)
		return;
	struct nl_sock *sk = route_socket();
	struct rtnl_link *link = NULL;
	if (sk && rtnl_link_get_kernel(sk, 0, n->host_if, &link) == 0) {
		(void)rtnl_link_delete(sk, link);
		rtnl_link_put(link);
	}
	if (sk)
		nl_socket_free(sk);
	close(n->fd);
	n->fd = -1;
}

static int make_pair(void *arg)
{
	return socketpair(AF_UNIX, SOCK_STREAM, 0, arg) < 0 ? -errno : 0;
}

int net_socketpair(const struct net_ns *n, int sp[2])
{
	if (n->fd < 0)
		return make_pair(sp);
	return in_netns(n->fd, make_pair, sp);
}

int net_resolve(const char *spec, bool passive, struct addrinfo **ret, struct cryo_error *err)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	if (!colon || (!passive && colon == spec) || !colon[1] ||
	    (size_t)(colon - spec) >= sizeof(host))
		return -EINVAL;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	/* "[IPv6]:PORT" */
	size_t hl = strlen(host);
	if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
	int g = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, ret);
	if (g != 0)
		return error_set(err, -EHOSTUNREACH, "%s", gai_strerror(g));
	return 0;
}

bool net_address_in_use(const struct net_ip *addr)
{
	struct ifaddrs *ifs;
	if (getifaddrs(&ifs) < 0)
		return false;
	bool found = false;
	for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != addr->family)
			continue;
		const void *a = addr->family == AF_INET6
		                    ? (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr
		                    : (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr;
		found = memcmp(a, &addr->v6, ip_len(addr)) == 0;
	}
	freeifaddrs(ifs);
	return found;
}

bool net_bridge_exists(const char *name)
{
	_cleanup_nl_sock_ struct nl_sock *sk = route_socket();
	bool is_bridge = false;
	return sk && link_index(sk, name, &is_bridge) >= 0 && is_bridge;
}
