// SPDX-License-Identifier: GPL-2.0
// Sink of the lab benchmark: counts per CPU and drops the generator's frames (UDP to port
// 9, the discard port, over IPv4 or IPv6 without extension headers) and, as an analyzer would
// take them, a router's mirror copies (GRE); counts the rest apart and passes it to the host's
// stack, so that a router resolving the host's address (ARP, neighbour discovery) gets its
// answer.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DISCARD_PORT 9

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} received SEC(".maps");

/* Mirror copies (GRE) dropped; nothing reads it but bpftool, when a run looks wrong. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tunnelled SEC(".maps");

/* Frames passed to the host; nothing reads it but bpftool, when a run looks wrong. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} other SEC(".maps");

static __always_inline int is_generated(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct udphdr *udp;
	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return 0;
		udp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return 0;
		udp = (void *)(ip6 + 1);
	} else {
		return 0;
	}
	return (void *)(udp + 1) <= end && udp->dest == bpf_htons(DISCARD_PORT);
}

/* GRE over IPv4 or IPv6 without extension headers: a mirror copy. */
static __always_inline int is_tunnelled(void *data, void *end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		return (void *)(ip + 1) <= end && ip->protocol == IPPROTO_GRE;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		return (void *)(ip6 + 1) <= end && ip6->nexthdr == IPPROTO_GRE;
	}
	return 0;
}

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	int generated = is_generated(data, end);
	int copy = !generated && is_tunnelled(data, end);
	void *map = generated ? (void *)&received : copy ? (void *)&tunnelled : (void *)&other;
	__u64 *count = bpf_map_lookup_elem(map, &zero);

	if (count)
		*count += 1;
	return generated || copy ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
