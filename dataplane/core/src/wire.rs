//! Wire constants and the few headers the router writes itself (Ethernet with an optional 802.1Q
//! tag, ARP requests, neighbour solicitations). Parsing on the hot path is in [`crate::pipeline`].

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;

pub const ETHERNET_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
pub use vfn_flow::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

pub const ARP_LEN: usize = 28;
pub const ICMPV6_NEIGHBOUR_SOLICITATION: u8 = 135;
pub const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;

/// Field offsets inside an IPv4 header.
pub mod ipv4 {
    pub const TOTAL_LENGTH: usize = 2;
    pub const FLAGS_FRAGMENT: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SOURCE: usize = 12;
    pub const DESTINATION: usize = 16;
    pub const FLAG_DONT_FRAGMENT: u16 = 0x4000;
    pub const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
    pub const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;
}

/// Field offsets inside an IPv6 header.
pub mod ipv6 {
    pub const PAYLOAD_LENGTH: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SOURCE: usize = 8;
    pub const DESTINATION: usize = 24;
}

/// IPv4 addresses that never appear on the wire as a source or destination of routed traffic
/// (RFC 1812 section 5.3.7, RFC 6890): "this network" 0/8, loopback 127/8, reserved 240/4 but for
/// the limited broadcast address (whose own rules differ by direction).
#[inline]
pub fn is_martian_v4(addr: Ipv4Addr) -> bool {
    let first = addr.octets()[0];
    first == 0 || first == 127 || (first >= 240 && !addr.is_broadcast())
}

/// A MAC address written as six two-digit hexadecimal bytes separated by colons
/// (`02:00:5e:10:aa:ff`, as Linux prints them), or `None`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        // from_str_radix alone would take a sign ("+f").
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// An IPv6 fragment header's fields (RFC 8200 section 4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Fragment {
    pub id: u32,
    /// In bytes.
    pub offset: u16,
    pub more: bool,
}

/// The layers of an IPv6 packet past its extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Layers {
    /// The upper-layer protocol (or, in a later fragment, what the fragment carries).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    pub fragment: Option<Ipv6Fragment>,
}

/// Extension headers walked at most to find an IPv6 packet's upper layer.
const EXTENSION_HEADERS_MAX: usize = 8;

/// Walks hop-by-hop, routing, destination-options and fragment headers; `None` when they run
/// past the packet or there are more than `EXTENSION_HEADERS_MAX` (8).
pub fn ipv6_layers(packet: &[u8]) -> Option<Ipv6Layers> {
    let mut next = *packet.get(ipv6::NEXT_HEADER)?;
    let mut offset = IPV6_HEADER_LEN;
    let mut fragment = None;
    for _ in 0..EXTENSION_HEADERS_MAX {
        match next {
            0 | 43 | 60 => {
                let length = (usize::from(*packet.get(offset + 1)?) + 1) * 8;
                next = *packet.get(offset)?;
                offset += length;
            }
            44 => {
                let word = u16::from_be_bytes([*packet.get(offset + 2)?, *packet.get(offset + 3)?]);
                let id = u32::from_be_bytes(packet.get(offset + 4..offset + 8)?.try_into().ok()?);
                fragment = Some(Ipv6Fragment {
                    id,
                    offset: word & 0xfff8,
                    more: word & 1 != 0,
                });
                next = *packet.get(offset)?;
                offset += 8;
                // A later fragment carries the middle of the payload: no header to walk on.
                if word & 0xfff8 != 0 {
                    return Some(Ipv6Layers {
                        protocol: next,
                        offset,
                        fragment,
                    });
                }
            }
            protocol => {
                return (offset <= packet.len()).then_some(Ipv6Layers {
                    protocol,
                    offset,
                    fragment,
                });
            }
        }
    }
    None
}

#[inline]
pub fn read_u16(buf: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([buf[offset], buf[offset + 1]])
}

#[inline]
pub fn write_u16(buf: &mut [u8], offset: usize, value: u16) {
    buf[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

/// Length of an Ethernet header with or without an 802.1Q tag.
#[inline]
pub fn ethernet_header_len(vlan: Option<u16>) -> usize {
    ETHERNET_HEADER_LEN + if vlan.is_some() { VLAN_TAG_LEN } else { 0 }
}

/// Writes an Ethernet header (tagged when `vlan` is set) at the start of `buf`; returns its length.
/// `buf` must hold [`ethernet_header_len`] bytes.
#[inline]
pub fn write_ethernet(
    buf: &mut [u8],
    dst: [u8; 6],
    src: [u8; 6],
    vlan: Option<u16>,
    ethertype: u16,
) -> usize {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    match vlan {
        Some(id) => {
            write_u16(buf, 12, ETHERTYPE_VLAN);
            write_u16(buf, 14, id & 0x0fff);
            write_u16(buf, 16, ethertype);
            ETHERNET_HEADER_LEN + VLAN_TAG_LEN
        }
        None => {
            write_u16(buf, 12, ethertype);
            ETHERNET_HEADER_LEN
        }
    }
}

/// Writes the 20-byte header of an IPv4 packet the router originates at the start of `ip`: no
/// options, identification 0 with DF set (an atomic datagram, RFC 6864, never fragmented), TTL
/// `ttl`, the header checksum computed.
pub fn write_ipv4_header(
    ip: &mut [u8],
    tos: u8,
    total_len: usize,
    ttl: u8,
    protocol: u8,
    source: [u8; 4],
    destination: [u8; 4],
) {
    ip[0] = 0x45;
    ip[1] = tos;
    write_u16(ip, ipv4::TOTAL_LENGTH, total_len as u16);
    ip[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
    ip[ipv4::TTL] = ttl;
    ip[ipv4::PROTOCOL] = protocol;
    write_u16(ip, ipv4::CHECKSUM, 0);
    ip[ipv4::SOURCE..ipv4::SOURCE + 4].copy_from_slice(&source);
    ip[ipv4::DESTINATION..ipv4::DESTINATION + 4].copy_from_slice(&destination);
    let sum = checksum::checksum(&ip[..IPV4_HEADER_LEN]);
    write_u16(ip, ipv4::CHECKSUM, sum);
}

/// Writes the 40-byte header of an IPv6 packet the router originates at the start of `ip`:
/// traffic class and flow label 0.
pub fn write_ipv6_header(
    ip: &mut [u8],
    payload_len: usize,
    next_header: u8,
    hop_limit: u8,
    source: [u8; 16],
    destination: [u8; 16],
) {
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    write_u16(ip, ipv6::PAYLOAD_LENGTH, payload_len as u16);
    ip[ipv6::NEXT_HEADER] = next_header;
    ip[ipv6::HOP_LIMIT] = hop_limit;
    ip[ipv6::SOURCE..ipv6::SOURCE + 16].copy_from_slice(&source);
    ip[ipv6::DESTINATION..ipv6::DESTINATION + 16].copy_from_slice(&destination);
}

/// The solicited-node multicast address of `target` (RFC 4291 section 2.7.1).
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ])
}

/// The Ethernet address of an IPv6 multicast group (RFC 2464 section 7).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let g = group.octets();
    [0x33, 0x33, g[12], g[13], g[14], g[15]]
}

/// Largest frame the builders below write.
pub const SOLICITATION_FRAME_MAX: usize = ETHERNET_HEADER_LEN + VLAN_TAG_LEN + IPV6_HEADER_LEN + 32;

/// Writes an ARP request for `target` into `buf` (at least [`SOLICITATION_FRAME_MAX`] bytes),
/// broadcast, or unicast to `unicast_to` when re-confirming a known neighbour. Returns the length.
pub fn write_arp_request(
    buf: &mut [u8],
    src_mac: [u8; 6],
    vlan: Option<u16>,
    src_ip: Ipv4Addr,
    target: Ipv4Addr,
    unicast_to: Option<[u8; 6]>,
) -> usize {
    let l2 = write_ethernet(
        buf,
        unicast_to.unwrap_or(BROADCAST_MAC),
        src_mac,
        vlan,
        ETHERTYPE_ARP,
    );
    let arp = &mut buf[l2..l2 + ARP_LEN];
    write_u16(arp, 0, 1); // hardware type: Ethernet
    write_u16(arp, 2, ETHERTYPE_IPV4);
    arp[4] = 6;
    arp[5] = 4;
    write_u16(arp, 6, 1); // request
    arp[8..14].copy_from_slice(&src_mac);
    arp[14..18].copy_from_slice(&src_ip.octets());
    arp[18..24].fill(0);
    arp[24..28].copy_from_slice(&target.octets());
    l2 + ARP_LEN
}

/// Writes a neighbour solicitation for `target` (RFC 4861 section 4.3) with our link-layer
/// address option, to the solicited-node group, or unicast to `unicast_to`. Returns the length.
pub fn write_neighbour_solicitation(
    buf: &mut [u8],
    src_mac: [u8; 6],
    vlan: Option<u16>,
    src_ip: Ipv6Addr,
    target: Ipv6Addr,
    unicast_to: Option<[u8; 6]>,
) -> usize {
    let (dst_ip, dst_mac) = match unicast_to {
        Some(mac) => (target, mac),
        None => {
            let group = solicited_node(target);
            (group, ipv6_multicast_mac(group))
        }
    };
    let l2 = write_ethernet(buf, dst_mac, src_mac, vlan, ETHERTYPE_IPV6);
    const ICMP_LEN: usize = 32; // header 4 + reserved 4 + target 16 + option 8
    let ip = &mut buf[l2..l2 + IPV6_HEADER_LEN + ICMP_LEN];
    // Hop limit 255: neighbour discovery messages must arrive with it (RFC 4861 section 7.1.1).
    write_ipv6_header(
        ip,
        ICMP_LEN,
        PROTO_ICMPV6,
        255,
        src_ip.octets(),
        dst_ip.octets(),
    );
    let icmp = &mut ip[IPV6_HEADER_LEN..];
    icmp[0] = ICMPV6_NEIGHBOUR_SOLICITATION;
    icmp[1] = 0;
    icmp[2..8].fill(0);
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 1; // source link-layer address option
    icmp[25] = 1; // length in units of 8 bytes
    icmp[26..32].copy_from_slice(&src_mac);
    let sum = checksum::ipv6_pseudo_header_sum(
        &src_ip.octets(),
        &dst_ip.octets(),
        ICMP_LEN as u32,
        PROTO_ICMPV6,
    );
    let csum = !checksum::ones_complement_sum(icmp, sum);
    write_u16(icmp, 2, csum);
    l2 + IPV6_HEADER_LEN + ICMP_LEN
}

/// What an ARP packet or a neighbour solicitation/advertisement says about its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourHint {
    pub addr: std::net::IpAddr,
    pub mac: [u8; 6],
    pub policy: LearnPolicy,
}

/// What a binding heard on the wire may do to the neighbour table (Linux with `arp_accept=0`,
/// RFC 4861 section 7.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearnPolicy {
    /// A request for one of our addresses: its sender will talk to us, create the entry.
    Create,
    /// Update an entry that exists; create none (replies, advertisements, others' requests).
    Update,
    /// An advertisement without the Override flag: only completes an entry being resolved.
    FillIncomplete,
}

/// The sender binding an ARP packet (request or reply) announces. `is_ours` says whether an IPv4
/// address belongs to the router.
pub fn arp_hint(arp: &[u8], is_ours: impl Fn(Ipv4Addr) -> bool) -> Option<NeighbourHint> {
    if arp.len() < ARP_LEN
        || read_u16(arp, 0) != 1
        || read_u16(arp, 2) != ETHERTYPE_IPV4
        || arp[4] != 6
        || arp[5] != 4
    {
        return None;
    }
    let mac: [u8; 6] = arp[8..14].try_into().ok()?;
    let sender = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    let target = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    if sender.is_unspecified() || mac[0] & 1 == 1 {
        return None;
    }
    let is_request = read_u16(arp, 6) == 1;
    let policy = if is_request && is_ours(target) {
        LearnPolicy::Create
    } else {
        LearnPolicy::Update
    };
    Some(NeighbourHint {
        addr: sender.into(),
        mac,
        policy,
    })
}

/// The binding a neighbour solicitation (its source and source link-layer option) or
/// advertisement (its target and target link-layer option) announces. `ip` is the IPv6 packet.
/// Messages that fail the validity checks of RFC 4861 sections 7.1.1 and 7.1.2 (hop limit 255,
/// code 0, ICMPv6 checksum, option lengths) teach nothing.
pub fn ndp_hint(ip: &[u8], is_ours: impl Fn(Ipv6Addr) -> bool) -> Option<NeighbourHint> {
    if ip.len() < IPV6_HEADER_LEN + 24
        || ip[ipv6::NEXT_HEADER] != PROTO_ICMPV6
        || ip[ipv6::HOP_LIMIT] != 255
    {
        return None;
    }
    let payload_len = usize::from(read_u16(ip, ipv6::PAYLOAD_LENGTH));
    let icmp = ip.get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)?;
    let source: [u8; 16] = ip[ipv6::SOURCE..ipv6::SOURCE + 16].try_into().ok()?;
    let destination: [u8; 16] = ip[ipv6::DESTINATION..ipv6::DESTINATION + 16]
        .try_into()
        .ok()?;
    let sum =
        checksum::ipv6_pseudo_header_sum(&source, &destination, payload_len as u32, PROTO_ICMPV6);
    if icmp.len() < 24 || icmp[1] != 0 || checksum::ones_complement_sum(icmp, sum) != 0xffff {
        return None;
    }
    let target: [u8; 16] = icmp[8..24].try_into().ok()?;
    let (wanted_option, addr, policy) = match icmp[0] {
        ICMPV6_NEIGHBOUR_SOLICITATION => {
            let policy = if is_ours(Ipv6Addr::from(target)) {
                LearnPolicy::Create
            } else {
                LearnPolicy::Update
            };
            (1, Ipv6Addr::from(source), policy)
        }
        ICMPV6_NEIGHBOUR_ADVERTISEMENT => {
            let overrides = icmp[4] & 0x20 != 0;
            (
                2,
                Ipv6Addr::from(target),
                if overrides {
                    LearnPolicy::Update
                } else {
                    LearnPolicy::FillIncomplete
                },
            )
        }
        _ => return None,
    };
    if addr.is_unspecified() || addr.is_multicast() {
        return None;
    }
    let mut options = &icmp[24..];
    while options.len() >= 8 {
        let length = usize::from(options[1]) * 8;
        if length == 0 || length > options.len() {
            return None;
        }
        if options[0] == wanted_option && length == 8 {
            let mac: [u8; 6] = options[2..8].try_into().ok()?;
            return Some(NeighbourHint {
                addr: addr.into(),
                mac,
                policy,
            });
        }
        options = &options[length..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

    // Byte fixture: an ARP request from 02:00:00:00:00:01 198.18.1.1 for 198.18.1.2.
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06, // Ethernet
        0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 1, 198, 18, 1, 1, // ARP: sender
        0, 0, 0, 0, 0, 0, 198, 18, 1, 2, // target
    ];

    #[test]
    fn arp_request_matches_fixture_and_parses_back() {
        let mut buf = [0u8; SOLICITATION_FRAME_MAX];
        let len = write_arp_request(
            &mut buf,
            MAC,
            None,
            Ipv4Addr::new(198, 18, 1, 1),
            Ipv4Addr::new(198, 18, 1, 2),
            None,
        );
        assert_eq!(&buf[..len], &ARP_REQUEST[..]);
        let hint = arp_hint(&buf[14..len], |a| a == Ipv4Addr::new(198, 18, 1, 2)).expect("valid");
        assert_eq!(
            hint,
            NeighbourHint {
                addr: "198.18.1.1".parse().expect("addr"),
                mac: MAC,
                policy: LearnPolicy::Create
            }
        );
    }

    #[test]
    fn arp_with_bad_hardware_type_is_ignored() {
        let mut arp = ARP_REQUEST;
        arp[15] = 6;
        assert_eq!(arp_hint(&arp[14..], |_| true), None);
    }

    #[test]
    fn vlan_tag_is_written() {
        let mut buf = [0u8; SOLICITATION_FRAME_MAX];
        let len = write_arp_request(
            &mut buf,
            MAC,
            Some(100),
            Ipv4Addr::new(198, 18, 1, 1),
            Ipv4Addr::new(198, 18, 1, 2),
            None,
        );
        assert_eq!(len, 46);
        assert_eq!(&buf[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x06]);
    }

    #[test]
    fn neighbour_solicitation_is_valid_and_parses_back() {
        let mut buf = [0u8; SOLICITATION_FRAME_MAX];
        let src: Ipv6Addr = "2001:2:0:1::1".parse().expect("addr");
        let target: Ipv6Addr = "2001:2:0:1::2".parse().expect("addr");
        let len = write_neighbour_solicitation(&mut buf, MAC, None, src, target, None);
        assert_eq!(&buf[0..6], &[0x33, 0x33, 0xff, 0, 0, 2]);
        let ip = &buf[14..len];
        assert_eq!(&ip[24..40], &solicited_node(target).octets());
        // The ICMPv6 checksum verifies over the pseudo-header.
        let sum = checksum::ipv6_pseudo_header_sum(
            &src.octets(),
            &solicited_node(target).octets(),
            32,
            PROTO_ICMPV6,
        );
        assert_eq!(checksum::ones_complement_sum(&ip[40..], sum), 0xffff);
        let hint = ndp_hint(ip, |a| a == target).expect("valid");
        assert_eq!(
            hint,
            NeighbourHint {
                addr: src.into(),
                mac: MAC,
                policy: LearnPolicy::Create
            }
        );
    }

    #[test]
    fn solicitation_without_link_layer_option_gives_no_hint() {
        let mut buf = [0u8; SOLICITATION_FRAME_MAX];
        let len = write_neighbour_solicitation(
            &mut buf,
            MAC,
            None,
            "2001:2::1".parse().expect("a"),
            "2001:2::2".parse().expect("a"),
            None,
        );
        let ip = &mut buf[14..len];
        ip[IPV6_HEADER_LEN + 24] = 5; // some other option type
        assert_eq!(ndp_hint(ip, |_| true), None);
    }

    #[test]
    fn mac_text_is_parsed_strictly() {
        assert_eq!(
            parse_mac("02:00:5e:10:aa:FF"),
            Some([0x02, 0x00, 0x5e, 0x10, 0xaa, 0xff])
        );
        for bad in [
            "",
            "02:00:5e:10:aa",
            "02:00:5e:10:aa:ff:01",
            "2:00:5e:10:aa:ff",
            "zz:00:00:00:00:00",
            "02:00:5e:10:aa:+f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
