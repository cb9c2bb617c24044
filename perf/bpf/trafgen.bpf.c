// SPDX-License-Identifier: GPL-2.0
// Traffic generator of the lab benchmark: run by BPF_PROG_RUN with live frames
// (BPF_F_TEST_XDP_LIVE_FRAMES), each run sends one frame out of the interface it is
// given (XDP_TX), or, paced, drops it when the next frame is not yet due. The kernel recycles frame pages that a receiver has rewritten, so
// every run writes the whole header from the template in `config`, then makes the
// frame one of `flows` flows by its UDP source port and, past 32,768 flows, the low
// bits of its source address.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Ethernet, IPv4 and UDP headers; with IPv6 instead, 20 bytes more. */
#define HEADER_IPV4 42
#define HEADER_IPV6 62

struct config {
	__u32 flows;
	__u8 header[HEADER_IPV6];
	__u8 pad[6];
	/* Nanoseconds between frames sent, 0 for as fast as possible. */
	__u64 interval_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sent SEC(".maps");

/* When the next paced frame is due, per CPU (the generator runs on one). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next_due SEC(".maps");

/* Ones' complement sum of `len` 16-bit words. */
static __always_inline __u32 sum16(const __u16 *words, int len)
{
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < len; i++)
		sum += words[i];
	return sum;
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* RFC 1624: the checksum after a 16-bit field goes from `old` to `new`. */
static __always_inline __u16 csum_replace(__u16 check, __u16 old, __u16 new)
{
	return ~fold((__u16)~check + (__u32)(__u16)~old + new);
}

SEC("xdp")
int trafgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	__u64 *count = bpf_map_lookup_elem(&sent, &zero);
	if (!cfg || !count)
		return XDP_ABORTED;
	/* Paced: a run before the next frame is due drops its frame instead of sending it, so
	 * that one long call sends at the rate asked for. */
	if (cfg->interval_ns) {
		__u64 *due = bpf_map_lookup_elem(&next_due, &zero);
		__u64 now = bpf_ktime_get_ns();
		if (!due)
			return XDP_ABORTED;
		if (now < *due)
			return XDP_DROP;
		*due = (*due + cfg->interval_ns > now ? *due : now) + cfg->interval_ns;
	}
	if (data + HEADER_IPV4 > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, cfg->header, HEADER_IPV4);

	__u32 flows = cfg->flows ? cfg->flows : 1;
	__u32 flow = (__u32)(*count % flows);
	*count += 1;
	__u16 port_offset = flow & 0x7fff;
	__u16 host_offset = flow >> 15;

	struct ethhdr *eth = data;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		struct udphdr *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return XDP_ABORTED;
		udp->source = bpf_htons(bpf_ntohs(udp->source) + port_offset);
		udp->check = 0;
		__u16 *src_low = (__u16 *)&ip->saddr + 1;
		*src_low = bpf_htons(bpf_ntohs(*src_low) + host_offset);
		ip->check = 0;
		ip->check = ~fold(sum16((__u16 *)ip, sizeof(*ip) / 2));
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		if (data + HEADER_IPV6 > end)
			return XDP_ABORTED;
		__builtin_memcpy(data + HEADER_IPV4, cfg->header + HEADER_IPV4,
				 HEADER_IPV6 - HEADER_IPV4);
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct udphdr *udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end)
			return XDP_ABORTED;
		__u16 old_port = udp->source;
		__u16 new_port = bpf_htons(bpf_ntohs(old_port) + port_offset);
		__u16 *src_low = &ip6->saddr.in6_u.u6_addr16[7];
		__u16 old_host = *src_low;
		__u16 new_host = bpf_htons(bpf_ntohs(old_host) + host_offset);
		udp->source = new_port;
		*src_low = new_host;
		udp->check = csum_replace(csum_replace(udp->check, old_port, new_port),
					  old_host, new_host);
	} else {
		return XDP_ABORTED;
	}
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
