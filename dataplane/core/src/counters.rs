//! Counters a worker writes and anyone may read: per port, per worker and per drop reason.
//!
//! Each worker owns its counters and is their only writer, so an update is a relaxed load and
//! store (no locked instruction); readers sum over workers.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Why a packet was dropped. Every variant has a counter.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($variant),* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant),*];
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, used in metrics and logs.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name),* }
            }

            /// One-line explanation for operators.
            pub fn help(self) -> &'static str {
                match self { $(DropReason::$variant => $help),* }
            }
        }
    };
}

drop_reasons! {
    EthernetTruncated => "ethernet_truncated", "frame shorter than an Ethernet header";
    NotForUs => "not_for_us", "unicast destination MAC is not the port's";
    UnknownVlan => "unknown_vlan", "802.1Q tag of no configured VLAN (or untagged on a VLAN-only port)";
    StackedVlan => "stacked_vlan", "QinQ (802.1ad) or stacked 802.1Q tags";
    UnsupportedEthertype => "unsupported_ethertype", "neither IPv4, IPv6 nor ARP (in replay mode: neither IPv4 nor IPv6)";
    Ipv4Truncated => "ipv4_truncated", "IPv4 header longer than the frame";
    Ipv4BadVersion => "ipv4_bad_version", "IP version field is not 4 in an IPv4 frame";
    Ipv4BadHeaderLength => "ipv4_bad_header_length", "IPv4 IHL below 5";
    Ipv4BadTotalLength => "ipv4_bad_total_length", "IPv4 total length below the header or beyond the frame";
    Ipv4BadChecksum => "ipv4_bad_checksum", "IPv4 header checksum mismatch";
    Ipv6Truncated => "ipv6_truncated", "IPv6 header longer than the frame";
    Ipv6BadVersion => "ipv6_bad_version", "IP version field is not 6 in an IPv6 frame";
    Ipv6BadPayloadLength => "ipv6_bad_payload_length", "IPv6 payload length beyond the frame, or a jumbogram";
    UdpBadLength => "udp_bad_length", "UDP length 0, below 8, or beyond the IP payload";
    TcpBadHeader => "tcp_bad_header", "TCP header truncated, data offset out of range, or a fragment overlapping it";
    IcmpTruncated => "icmp_truncated", "ICMP or ICMPv6 message shorter than its 8-byte header";
    MartianSource => "martian_source", "source address that must never be routed";
    MartianDestination => "martian_destination", "destination address that must never be routed";
    LinkLocalNotForwarded => "link_local_not_forwarded", "link-local source or destination";
    MulticastNotRouted => "multicast_not_routed", "multicast or broadcast destination";
    ReversePath => "reverse_path", "source fails the port's reverse-path check (spoofed)";
    TtlExceeded => "ttl_exceeded", "TTL or hop limit would reach zero";
    NoRoute => "no_route", "no route to the destination";
    PolicyDrop => "policy_drop", "a rule (or the rule set's isolation) drops it";
    PolicyDefault => "policy_default", "no rule matched and the rule set's default is deny";
    PolicyReject => "policy_reject", "a rule rejects it (the sender is told)";
    RateLimited => "rate_limited", "over a rule's or a dynamic entry's rate limit";
    Quarantined => "quarantined", "from or to a host a dynamic entry quarantines";
    FragmentWithoutFirst => "fragment_without_first", "a later fragment whose first fragment was not seen (or was dropped long ago)";
    DirectedBroadcast => "directed_broadcast", "to a connected subnet's network or broadcast address (RFC 2644)";
    TooBig => "too_big", "larger than the egress MTU with fragmentation forbidden";
    FragmentsTooMany => "fragments_too_many", "IPv4 packet would need more fragments than the worker makes";
    NeighbourFailed => "neighbour_failed", "next hop did not answer ARP/ND";
    NeighbourQueueFull => "neighbour_queue_full", "queue for an unresolved next hop is full";
    PuntQueueFull => "punt_queue_full", "slow path (router's own addresses) is busy";
    PuntRateLimited => "punt_rate_limited", "over the rate of frames for the router itself";
    PuntTooLarge => "punt_too_large", "packet for the router itself is larger than the slow path takes";
    TransmitRingFull => "transmit_ring_full", "egress port's transmit ring or share is full";
    NoFreeFrame => "no_free_frame", "no frame free for a generated packet";
    HandoffFull => "handoff_full", "the worker that owns the packet's flow has no free handoff slot (it is overloaded)";
    OutboundTooLarge => "outbound_too_large", "frame from the slow path larger than a frame buffer";
}

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, value: u64) {
        // Single writer: a relaxed load and store is exact and avoids a locked add.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(value),
            Ordering::Relaxed,
        );
    }

    /// Overwrites the value (single writer).
    #[inline]
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Traffic counters of one port on one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub drops: Counter,
    pub to_host: Counter,
}

/// All counters of one worker.
#[derive(Debug)]
pub struct WorkerCounters {
    pub ports: Box<[PortCounters]>,
    pub drops: [Counter; DropReason::COUNT],
    pub icmp_errors_sent: Counter,
    pub icmp_errors_rate_limited: Counter,
    /// Requests to resolve a neighbour lost to a full slow-path queue.
    pub resolve_requests_lost: Counter,
    pub bursts: Counter,
    pub idle_waits: Counter,
    /// Packets handed to the worker that owns their flow (`handoff.rs`).
    pub handed_off: Counter,
    /// Packets other workers handed to this one.
    pub handed_in: Counter,
}

impl WorkerCounters {
    pub fn new(port_count: usize) -> WorkerCounters {
        WorkerCounters {
            ports: (0..port_count).map(|_| PortCounters::default()).collect(),
            drops: std::array::from_fn(|_| Counter::default()),
            icmp_errors_sent: Counter::default(),
            icmp_errors_rate_limited: Counter::default(),
            resolve_requests_lost: Counter::default(),
            bursts: Counter::default(),
            idle_waits: Counter::default(),
            handed_off: Counter::default(),
            handed_in: Counter::default(),
        }
    }

    #[inline]
    pub fn count_drop(&self, port: usize, reason: DropReason) {
        self.drops[reason as usize].add(1);
        if let Some(port) = self.ports.get(port) {
            port.drops.add(1);
        }
    }

    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert!(names.iter().all(|n| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        }));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn every_reason_is_documented() {
        let doc = include_str!("../../../docs/dataplane.md");
        for reason in DropReason::ALL {
            let row = format!("| `{}` | {} |", reason.name(), reason.help());
            assert!(doc.contains(&row), "docs/dataplane.md lacks the row {row}");
        }
    }

    #[test]
    fn drop_counts_per_reason_and_port() {
        let counters = WorkerCounters::new(2);
        counters.count_drop(1, DropReason::NoRoute);
        counters.count_drop(1, DropReason::NoRoute);
        assert_eq!(counters.drops_for(DropReason::NoRoute), 2);
        assert_eq!(counters.ports[1].drops.get(), 2);
        assert_eq!(counters.ports[0].drops.get(), 0);
    }
}
