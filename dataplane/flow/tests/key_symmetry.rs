//! A packet and its reply share one key, with opposite orientations, for every protocol and
//! both address families; through the table they are Forward and Reverse.

mod support;

use proptest::prelude::*;
use support::{ipv4, ipv6, reply};
use vfn_flow::{
    Direction, FlowKey, FlowTable, Orientation, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
    PacketTuple, TcpFlags, Timeouts,
};

fn address() -> impl Strategy<Value = u128> {
    prop_oneof![any::<u32>().prop_map(ipv4), any::<u64>().prop_map(ipv6)]
}

/// Tuples of every kind the parser produces: ported protocols, ICMP echo, portless.
fn tuple() -> impl Strategy<Value = PacketTuple> {
    let ported = (
        address(),
        address(),
        any::<u16>(),
        any::<u16>(),
        prop::sample::select(vec![PROTO_TCP, PROTO_UDP, 132]),
    )
        .prop_map(|(src, dst, sport, dport, proto)| PacketTuple {
            src,
            dst,
            sport,
            dport,
            proto,
            ingress: 3,
        });
    let echo = (
        address(),
        address(),
        any::<u16>(),
        prop::sample::select(vec![PROTO_ICMP, PROTO_ICMPV6]),
    )
        .prop_map(|(src, dst, id, proto)| PacketTuple::icmp_echo(src, dst, proto, id, 3));
    let portless = (
        address(),
        address(),
        prop::sample::select(vec![PROTO_ICMP, PROTO_ICMPV6, 47]),
    )
        .prop_map(|(src, dst, proto)| PacketTuple::portless(src, dst, proto, 3));
    prop_oneof![ported, echo, portless]
}

fn opposite(orientation: Orientation) -> Orientation {
    match orientation {
        Orientation::Canonical => Orientation::Swapped,
        Orientation::Swapped => Orientation::Canonical,
    }
}

proptest! {
    #[test]
    fn reply_has_the_same_key_and_the_opposite_orientation(packet in tuple()) {
        prop_assume!((packet.src, packet.sport) != (packet.dst, packet.dport));
        let (key, orientation) = FlowKey::from_packet(&packet);
        let (reply_key, reply_orientation) = FlowKey::from_packet(&reply(&packet));
        prop_assert_eq!(key, reply_key);
        prop_assert_eq!(reply_orientation, opposite(orientation));
        prop_assert_eq!(key.proto(), packet.proto);
        let low = (key.low_address(), key.low_port());
        let high = (key.high_address(), key.high_port());
        prop_assert!(low < high);
        prop_assert!(low == (packet.src, packet.sport) || low == (packet.dst, packet.dport));
    }

    #[test]
    fn table_sees_initiator_forward_and_reply_reverse(packet in tuple()) {
        prop_assume!((packet.src, packet.sport) != (packet.dst, packet.dport));
        let mut table = FlowTable::<u8>::new(4, Timeouts::default()).unwrap();
        let mut direction_of = |tuple: &PacketTuple| {
            support::packet(&mut table, tuple, TcpFlags::NONE, 0, 1).unwrap()
        };
        prop_assert_eq!(direction_of(&packet), Direction::Forward);
        prop_assert_eq!(direction_of(&reply(&packet)), Direction::Reverse);
        prop_assert_eq!(direction_of(&packet), Direction::Forward);
        prop_assert_eq!(table.len(), 1);
    }

    #[test]
    fn ingress_is_not_part_of_the_key(packet in tuple(), ingress in any::<u16>()) {
        let moved = PacketTuple { ingress, ..packet };
        prop_assert_eq!(FlowKey::from_packet(&packet), FlowKey::from_packet(&moved));
    }
}

#[test]
fn echo_request_and_reply_share_a_flow_but_identifiers_split() {
    let (a, b) = (ipv6(1), ipv6(2));
    let request = PacketTuple::icmp_echo(a, b, PROTO_ICMPV6, 77, 1);
    let echo_reply = PacketTuple::icmp_echo(b, a, PROTO_ICMPV6, 77, 2);
    let other_id = PacketTuple::icmp_echo(a, b, PROTO_ICMPV6, 78, 1);
    assert_eq!(
        FlowKey::from_packet(&request).0,
        FlowKey::from_packet(&echo_reply).0
    );
    assert_ne!(
        FlowKey::from_packet(&request).0,
        FlowKey::from_packet(&other_id).0
    );
}

#[test]
fn ipv4_and_ipv6_with_the_same_low_bits_are_different_flows() {
    let v4 = support::udp(ipv4(1), ipv4(2), 1, 2);
    let v6 = support::udp(
        ipv4(1) & u128::from(u32::MAX),
        ipv4(2) & u128::from(u32::MAX),
        1,
        2,
    );
    assert_ne!(FlowKey::from_packet(&v4).0, FlowKey::from_packet(&v6).0);
}
