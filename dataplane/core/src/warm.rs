//! Flow-table warming: a burst's flows looked up together before its first packet is processed.
//!
//! In a flow table larger than the caches, each packet's lookup misses three to five times (index
//! control bytes, index slot, entry, statistics), one miss waiting for the other, and the
//! pipeline's work between two packets' lookups keeps the processor from overlapping them. A
//! pass over the burst that does nothing but look each packet's flow up
//! ([`FlowTable::warm`](vfn_flow::FlowTable::warm)) lets the lookups of different packets run
//! side by side; the pipeline then finds its flows in the cache. Only TCP, UDP and SCTP packets
//! that are not later fragments, behind at most a VLAN tag and no IPv6 extension header, are
//! warmed (the bulk of traffic); the rest are looked up when processed, as before. A table small
//! enough for the cache gains nothing and is not warmed.

use vfn_flow::{PacketTuple, mapped_address};

use crate::pipeline::ethernet_layout;
use crate::wire;

/// Flows in the table from which a burst is warmed: below, the table's hot part fits the
/// processor's own caches (64-byte entries: 1 MiB).
pub const WARM_FLOWS_MIN: usize = 16_384;

/// The tuple the policy keys the flow of the packet in `frame` by, for the common protocols.
#[inline]
pub fn frame_tuple(frame: &[u8]) -> Option<PacketTuple> {
    let (_, l3) = ethernet_layout(frame).ok()?;
    let ip = frame.get(l3..)?;
    let (src, dst, proto, l4) = match wire::read_u16(frame, l3 - 2) {
        wire::ETHERTYPE_IPV4 => {
            let header_len = usize::from(ip.first()? & 0x0f) * 4;
            let fragment_word = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            if fragment_word & wire::ipv4::FRAGMENT_OFFSET_MASK != 0 {
                return None;
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                mapped_address(src.into()),
                mapped_address(dst.into()),
                *ip.get(wire::ipv4::PROTOCOL)?,
                ip.get(header_len..)?,
            )
        }
        wire::ETHERTYPE_IPV6 => {
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                u128::from_be_bytes(src),
                u128::from_be_bytes(dst),
                *ip.get(wire::ipv6::NEXT_HEADER)?,
                ip.get(wire::IPV6_HEADER_LEN..)?,
            )
        }
        _ => return None,
    };
    if !matches!(proto, wire::PROTO_TCP | wire::PROTO_UDP | wire::PROTO_SCTP) {
        return None;
    }
    Some(PacketTuple {
        src,
        dst,
        sport: u16::from_be_bytes([*l4.first()?, *l4.get(1)?]),
        dport: u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]),
        proto,
        ingress: 0,
    })
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;

    const MACS: ([u8; 6], [u8; 6]) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);

    #[test]
    fn tuples_hold_what_the_policy_keys_flows_by() {
        let mut udp4 = Vec::new();
        PacketBuilder::ethernet2(MACS.0, MACS.1)
            .single_vlan(7.try_into().expect("vlan"))
            .ipv4([198, 18, 0, 1], [198, 19, 0, 2], 64)
            .udp(4000, 53)
            .write(&mut udp4, &[0; 8])
            .expect("build");
        assert_eq!(
            frame_tuple(&udp4),
            Some(PacketTuple {
                src: mapped_address([198, 18, 0, 1].into()),
                dst: mapped_address([198, 19, 0, 2].into()),
                sport: 4000,
                dport: 53,
                proto: wire::PROTO_UDP,
                ingress: 0,
            })
        );
        let (src, dst) = (
            "2001:2::1".parse::<std::net::Ipv6Addr>().expect("a"),
            "2001:2::2".parse::<std::net::Ipv6Addr>().expect("a"),
        );
        let mut tcp6 = Vec::new();
        PacketBuilder::ethernet2(MACS.0, MACS.1)
            .ipv6(src.octets(), dst.octets(), 64)
            .tcp(40000, 443, 1, 1024)
            .write(&mut tcp6, &[])
            .expect("build");
        assert_eq!(
            frame_tuple(&tcp6),
            Some(PacketTuple {
                src: mapped_address(src.into()),
                dst: mapped_address(dst.into()),
                sport: 40000,
                dport: 443,
                proto: wire::PROTO_TCP,
                ingress: 0,
            })
        );
    }

    #[test]
    fn packets_keyed_otherwise_are_left_to_the_pipeline() {
        let mut ping = Vec::new();
        PacketBuilder::ethernet2(MACS.0, MACS.1)
            .ipv4([198, 18, 0, 1], [198, 19, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut ping, &[0; 8])
            .expect("build");
        assert_eq!(frame_tuple(&ping), None);
        let mut later_fragment = Vec::new();
        PacketBuilder::ethernet2(MACS.0, MACS.1)
            .ipv4([198, 18, 0, 1], [198, 19, 0, 2], 64)
            .udp(4000, 53)
            .write(&mut later_fragment, &[0; 8])
            .expect("build");
        // Offset 8 bytes: what follows the IP header is payload, not ports.
        later_fragment[14 + 7] = 1;
        assert_eq!(frame_tuple(&later_fragment), None);
        assert_eq!(frame_tuple(&later_fragment[..30]), None);
    }
}
