//! Flow identity: the packet's 5-tuple and the canonical key both directions share.

use std::net::{IpAddr, Ipv6Addr};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP (IPv4).
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// IP protocol number of SCTP (its ports are where TCP's and UDP's are).
pub const PROTO_SCTP: u8 = 132;

/// A flow's addresses and ports as seen in one packet.
///
/// Addresses are IPv6; IPv4 addresses are mapped into IPv6 (`::ffff:a.b.c.d`, see
/// [`mapped_address`]) so that one key type serves both families.
///
/// Ports by protocol (the parser fills them, [`FlowKey::from_packet`] applies no special case):
/// - TCP, UDP and any protocol with ports: the source and destination ports.
/// - ICMP / ICMPv6 echo request and echo reply: the echo identifier in **both** `sport` and
///   `dport` ([`PacketTuple::icmp_echo`]), so a request and its reply give the same key.
/// - Any other ICMP / ICMPv6 message: 0 in `sport`, `type << 8 | code` in `dport`
///   ([`PacketTuple::icmp_message`], as NetFlow and IPFIX exporters report ICMP): one flow per
///   sender, receiver, type and code, which never shares an echo flow's key (those have equal
///   ports) except for type 0 code 0, a reserved ICMPv6 type.
/// - Protocols without ports (GRE, ESP, OSPF, ...): 0 in both ([`PacketTuple::portless`]): all
///   packets of the protocol between two addresses are one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketTuple {
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Interface the packet arrived on; not part of the key (replies arrive on another one).
    pub ingress: u16,
}

impl PacketTuple {
    /// Tuple of an ICMP or ICMPv6 echo request or reply: the identifier fills both port fields.
    pub fn icmp_echo(src: u128, dst: u128, proto: u8, identifier: u16, ingress: u16) -> Self {
        Self {
            src,
            dst,
            sport: identifier,
            dport: identifier,
            proto,
            ingress,
        }
    }

    /// Tuple of an ICMP or ICMPv6 message other than echo: type and code in the destination
    /// port, 0 in the source port.
    pub fn icmp_message(
        src: u128,
        dst: u128,
        proto: u8,
        icmp_type: u8,
        code: u8,
        ingress: u16,
    ) -> Self {
        Self {
            src,
            dst,
            sport: 0,
            dport: u16::from(icmp_type) << 8 | u16::from(code),
            proto,
            ingress,
        }
    }

    /// Tuple of a packet of a protocol without ports (GRE, ESP, ...): both port fields are 0.
    pub fn portless(src: u128, dst: u128, proto: u8, ingress: u16) -> Self {
        Self {
            src,
            dst,
            sport: 0,
            dport: 0,
            proto,
            ingress,
        }
    }
}

/// An address as a [`PacketTuple`] stores it: IPv6 as is, IPv4 mapped to `::ffff:a.b.c.d`.
pub fn mapped_address(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address a [`PacketTuple`] stores as `address`: IPv4 for an IPv4-mapped address, IPv6
/// otherwise (the inverse of [`mapped_address`]).
pub fn unmapped_address(address: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(address);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// How a packet's (source, destination) relate to the key's (low, high) endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Orientation {
    /// The packet's source is the key's low endpoint.
    Canonical,
    /// The packet's source is the key's high endpoint.
    Swapped,
}

/// A packet's direction relative to the packet that created its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Same orientation as the flow's initiator.
    Forward,
    /// The reply direction.
    Reverse,
}

impl Direction {
    /// The direction of a packet with orientation `packet` in a flow started with `initiator`.
    pub fn between(initiator: Orientation, packet: Orientation) -> Self {
        if initiator == packet {
            Self::Forward
        } else {
            Self::Reverse
        }
    }
}

/// Byte offsets inside [`FlowKey`]: addresses and ports big-endian.
mod field {
    pub const LOW_ADDRESS: usize = 0;
    pub const HIGH_ADDRESS: usize = 16;
    pub const LOW_PORT: usize = 32;
    pub const HIGH_PORT: usize = 34;
    pub const PROTO: usize = 36;
    pub const SIZE: usize = 37;
    const _: () = assert!(HIGH_PORT == LOW_PORT + 2 && PROTO == HIGH_PORT + 2 && SIZE == PROTO + 1);
}

/// Canonical flow key: both directions of a flow give the same key.
///
/// The two endpoints `(address, port)` are ordered: the smaller one (address first, then port)
/// is the low endpoint. The key has no `Hash` implementation on purpose: the flow table hashes its
/// bytes with its own secret key ([`crate::FlowTable::hash`]).
///
/// The key is one 37-byte array (alignment 1, no padding) so that a [`crate::FlowEntry`] fits one
/// cache line and the hash reads it in one pass.
#[derive(Clone, Copy, Debug, Eq)]
pub struct FlowKey {
    bytes: [u8; field::SIZE],
}

/// Compares the key as four word loads: the derived comparison of a 37-byte array calls
/// `memcmp`, a third of the lookup time in `flow_bench`.
impl PartialEq for FlowKey {
    fn eq(&self, other: &Self) -> bool {
        self.words() == other.words()
    }
}

impl FlowKey {
    fn words(&self) -> (u128, u128, u32, u8) {
        (
            u128::from_ne_bytes(self.read(field::LOW_ADDRESS)),
            u128::from_ne_bytes(self.read(field::HIGH_ADDRESS)),
            // Both ports: HIGH_PORT follows LOW_PORT.
            u32::from_ne_bytes(self.read(field::LOW_PORT)),
            self.bytes[field::PROTO],
        )
    }

    /// The key of a packet's flow, and the packet's orientation relative to the key.
    ///
    /// A packet whose source and destination endpoints are equal is [`Orientation::Canonical`]
    /// in both directions: its replies cannot be told apart.
    pub fn from_packet(tuple: &PacketTuple) -> (Self, Orientation) {
        let source = (tuple.src, tuple.sport);
        let destination = (tuple.dst, tuple.dport);
        if source <= destination {
            (
                Self::new(source, destination, tuple.proto),
                Orientation::Canonical,
            )
        } else {
            (
                Self::new(destination, source, tuple.proto),
                Orientation::Swapped,
            )
        }
    }

    fn new(low: (u128, u16), high: (u128, u16), proto: u8) -> Self {
        let mut key = Self {
            bytes: [0; field::SIZE],
        };
        key.write(field::LOW_ADDRESS, low.0.to_be_bytes());
        key.write(field::HIGH_ADDRESS, high.0.to_be_bytes());
        key.write(field::LOW_PORT, low.1.to_be_bytes());
        key.write(field::HIGH_PORT, high.1.to_be_bytes());
        key.write(field::PROTO, [proto]);
        key
    }

    fn write<const N: usize>(&mut self, offset: usize, value: [u8; N]) {
        // One copy of N bytes: a loop of byte stores was a tenth of a tracked packet's cost.
        self.bytes[offset..offset + N].copy_from_slice(&value);
    }

    fn read<const N: usize>(&self, offset: usize) -> [u8; N] {
        std::array::from_fn(|index| self.bytes[offset + index])
    }

    /// Address of the low endpoint (IPv4 mapped).
    pub fn low_address(&self) -> u128 {
        u128::from_be_bytes(self.read(field::LOW_ADDRESS))
    }

    /// Address of the high endpoint (IPv4 mapped).
    pub fn high_address(&self) -> u128 {
        u128::from_be_bytes(self.read(field::HIGH_ADDRESS))
    }

    /// Port (or echo identifier) of the low endpoint.
    pub fn low_port(&self) -> u16 {
        u16::from_be_bytes(self.read(field::LOW_PORT))
    }

    /// Port (or echo identifier) of the high endpoint.
    pub fn high_port(&self) -> u16 {
        u16::from_be_bytes(self.read(field::HIGH_PORT))
    }

    /// The (source, destination) endpoints, `(address, port)`, of a packet of this flow with
    /// `orientation`: with the initiator's orientation, the flow as its initiator sent it.
    pub fn endpoints(&self, orientation: Orientation) -> ((u128, u16), (u128, u16)) {
        let low = (self.low_address(), self.low_port());
        let high = (self.high_address(), self.high_port());
        match orientation {
            Orientation::Canonical => (low, high),
            Orientation::Swapped => (high, low),
        }
    }

    /// IP protocol number.
    pub fn proto(&self) -> u8 {
        self.bytes[field::PROTO]
    }

    /// The key as the table hashes it.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv4_is_mapped_into_ipv6() {
        let mapped = mapped_address(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(
            mapped,
            u128::from("::ffff:198.18.0.1".parse::<Ipv6Addr>().unwrap())
        );
    }

    #[test]
    fn key_orders_endpoints_by_address_then_port() {
        let tuple = PacketTuple {
            src: 7,
            dst: 7,
            sport: 90,
            dport: 80,
            proto: PROTO_UDP,
            ingress: 1,
        };
        let (key, orientation) = FlowKey::from_packet(&tuple);
        assert_eq!(orientation, Orientation::Swapped);
        assert_eq!((key.low_address(), key.high_address()), (7, 7));
        assert_eq!(
            (key.low_port(), key.high_port(), key.proto()),
            (80, 90, PROTO_UDP)
        );
    }

    #[test]
    fn unmapping_inverts_mapping_for_both_families() {
        for address in ["198.18.0.1", "2001:2::1", "::1"] {
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(unmapped_address(mapped_address(address)), address);
        }
    }

    #[test]
    fn endpoints_give_back_the_packet_of_either_orientation() {
        let tuple = PacketTuple {
            src: 9,
            dst: 3,
            sport: 40000,
            dport: 80,
            proto: PROTO_TCP,
            ingress: 1,
        };
        let (key, orientation) = FlowKey::from_packet(&tuple);
        assert_eq!(key.endpoints(orientation), ((9, 40000), (3, 80)));
        let (reply_key, reply_orientation) = FlowKey::from_packet(&PacketTuple {
            src: 3,
            dst: 9,
            sport: 80,
            dport: 40000,
            ..tuple
        });
        assert_eq!(reply_key, key);
        assert_eq!(key.endpoints(reply_orientation), ((3, 80), (9, 40000)));
    }

    #[test]
    fn identical_endpoints_are_canonical_both_ways() {
        let tuple = PacketTuple::portless(5, 5, 47, 0);
        assert_eq!(FlowKey::from_packet(&tuple).1, Orientation::Canonical);
    }
}
