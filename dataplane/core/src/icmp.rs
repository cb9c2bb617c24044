//! Error replies the router originates: ICMP and ICMPv6 errors (RFC 1812 section 4.3, RFC 4443)
//! and the TCP resets of rules that reject (RFC 9293 section 3.10.7.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::wire::{
    self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV4_HEADER_LEN, IPV6_HEADER_LEN, PROTO_ICMP,
    PROTO_ICMPV6,
};

/// The errors the forwarding path reports to a packet's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReply {
    /// A rule rejects the packet: a TCP RST for TCP (from the packet's destination, as the peer
    /// would send it), ICMP / ICMPv6 administratively prohibited otherwise.
    Reject,
    /// TTL or hop limit exhausted in transit.
    TimeExceeded,
    /// No route to the destination network.
    NetUnreachable,
    /// The next hop did not answer address resolution.
    HostUnreachable,
    /// Larger than the egress MTU with fragmentation forbidden (IPv4 DF, or any IPv6).
    TooBig { mtu: u16 },
}

/// ICMP header length (type, code, checksum, 4 bytes of rest-of-header).
const ICMP_HEADER_LEN: usize = 8;
/// RFC 1812 4.3.2.3: an IPv4 error carries as much of the original as fits in 576 bytes.
const IPV4_ERROR_MAX: usize = 576;
/// RFC 4443 2.4(c): an ICMPv6 error must not exceed the minimum IPv6 MTU.
const IPV6_ERROR_MAX: usize = 1280;
/// Largest frame [`write_error`] writes.
pub const ERROR_FRAME_MAX: usize = wire::ETHERNET_HEADER_LEN + wire::VLAN_TAG_LEN + IPV6_ERROR_MAX;
/// Hop limit of the packets the router originates.
pub const ORIGINATED_TTL: u8 = 64;

/// The link-layer header of the error: back to the frame's sender, from the interface it came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorLink {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
}

/// Writes an Ethernet frame with the ICMP(v6) error `kind` about `original` (an IP packet, from its
/// header on) into `out` (at least [`ERROR_FRAME_MAX`] bytes), from `source`. Returns the frame
/// length, or `None` when no error may be sent about this packet: it is itself an ICMP error, a
/// non-first fragment, to a multicast or broadcast address, or from an address that does not name
/// a single host.
pub fn write_error(
    out: &mut [u8],
    original: &[u8],
    kind: ErrorReply,
    link: ErrorLink,
    source: IpAddr,
) -> Option<usize> {
    if kind == ErrorReply::Reject && carries_tcp(original) {
        return write_tcp_reset(out, original, link);
    }
    match (original.first()? >> 4, source) {
        (4, IpAddr::V4(source)) => write_error_v4(out, original, kind, link, source),
        (6, IpAddr::V6(source)) => write_error_v6(out, original, kind, link, source),
        _ => None,
    }
}

fn write_error_v4(
    out: &mut [u8],
    original: &[u8],
    kind: ErrorReply,
    link: ErrorLink,
    source: Ipv4Addr,
) -> Option<usize> {
    if original.len() < IPV4_HEADER_LEN {
        return None;
    }
    let header_len = usize::from(original[0] & 0x0f) * 4;
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(&original[12..16]).ok()?);
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&original[16..20]).ok()?);
    let fragment_offset =
        wire::read_u16(original, wire::ipv4::FLAGS_FRAGMENT) & wire::ipv4::FRAGMENT_OFFSET_MASK;
    let is_icmp_error = original[wire::ipv4::PROTOCOL] == PROTO_ICMP
        && original
            .get(header_len)
            .is_some_and(|&t| !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18));
    if is_icmp_error
        || fragment_offset != 0
        || dst.is_multicast()
        || dst.is_broadcast()
        || wire::is_martian_v4(src)
        || src.is_multicast()
        || src.is_broadcast()
    {
        return None;
    }
    let (icmp_type, code, rest) = match kind {
        ErrorReply::Reject => (3, 13, [0; 4]),
        ErrorReply::TimeExceeded => (11, 0, [0; 4]),
        ErrorReply::NetUnreachable => (3, 0, [0; 4]),
        ErrorReply::HostUnreachable => (3, 1, [0; 4]),
        ErrorReply::TooBig { mtu } => {
            let m = mtu.to_be_bytes();
            (3, 4, [0, 0, m[0], m[1]])
        }
    };
    let quoted = original
        .len()
        .min(IPV4_ERROR_MAX - IPV4_HEADER_LEN - ICMP_HEADER_LEN);
    let total = IPV4_HEADER_LEN + ICMP_HEADER_LEN + quoted;
    let l2 = wire::write_ethernet(out, link.dst_mac, link.src_mac, link.vlan, ETHERTYPE_IPV4);
    let ip = out.get_mut(l2..l2 + total)?;
    // Precedence internetwork control, as Linux sends errors.
    wire::write_ipv4_header(
        ip,
        0xc0,
        total,
        ORIGINATED_TTL,
        PROTO_ICMP,
        source.octets(),
        src.octets(),
    );
    let icmp = &mut ip[IPV4_HEADER_LEN..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&rest);
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&original[..quoted]);
    let icmp_checksum = checksum::checksum(icmp);
    wire::write_u16(icmp, 2, icmp_checksum);
    Some(l2 + total)
}

fn write_error_v6(
    out: &mut [u8],
    original: &[u8],
    kind: ErrorReply,
    link: ErrorLink,
    source: Ipv6Addr,
) -> Option<usize> {
    if original.len() < IPV6_HEADER_LEN {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&original[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&original[24..40]).ok()?);
    let is_icmp_error = wire::ipv6_layers(original).is_some_and(|layers| {
        layers.protocol == PROTO_ICMPV6
            && layers.fragment.is_none_or(|f| f.offset == 0)
            && original.get(layers.offset).is_some_and(|&t| t < 128)
    });
    let multicast_allowed = matches!(kind, ErrorReply::TooBig { .. });
    if is_icmp_error
        || (dst.is_multicast() && !multicast_allowed)
        || src.is_unspecified()
        || src.is_multicast()
    {
        return None;
    }
    let (icmp_type, code, rest) = match kind {
        ErrorReply::Reject => (1, 1, [0; 4]),
        ErrorReply::TimeExceeded => (3, 0, [0; 4]),
        ErrorReply::NetUnreachable => (1, 0, [0; 4]),
        ErrorReply::HostUnreachable => (1, 3, [0; 4]),
        ErrorReply::TooBig { mtu } => (2, 0, u32::from(mtu).to_be_bytes()),
    };
    let quoted = original
        .len()
        .min(IPV6_ERROR_MAX - IPV6_HEADER_LEN - ICMP_HEADER_LEN);
    let payload = ICMP_HEADER_LEN + quoted;
    let l2 = wire::write_ethernet(out, link.dst_mac, link.src_mac, link.vlan, ETHERTYPE_IPV6);
    let ip = out.get_mut(l2..l2 + IPV6_HEADER_LEN + payload)?;
    wire::write_ipv6_header(
        ip,
        payload,
        PROTO_ICMPV6,
        ORIGINATED_TTL,
        source.octets(),
        src.octets(),
    );
    let icmp = &mut ip[IPV6_HEADER_LEN..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&rest);
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&original[..quoted]);
    let sum = checksum::ipv6_pseudo_header_sum(
        &source.octets(),
        &src.octets(),
        payload as u32,
        PROTO_ICMPV6,
    );
    let icmp_checksum = !checksum::ones_complement_sum(icmp, sum);
    wire::write_u16(icmp, 2, icmp_checksum);
    Some(l2 + IPV6_HEADER_LEN + payload)
}

fn carries_tcp(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(wire::ipv4::PROTOCOL) == Some(&wire::PROTO_TCP),
        Some(6) => {
            wire::ipv6_layers(packet).is_some_and(|layers| layers.protocol == wire::PROTO_TCP)
        }
        _ => false,
    }
}

/// Writes into `out` an Ethernet frame with the TCP reset answering `original` (an IPv4 or
/// IPv6 packet carrying a whole TCP header), from the original destination to its source; `None`
/// when `original` is not such a packet or is itself a reset.
fn write_tcp_reset(out: &mut [u8], original: &[u8], link: ErrorLink) -> Option<usize> {
    const TCP_HEADER_LEN: usize = 20;
    // Lengths come from the IP header: `original` may be a truncated quote of a large segment,
    // of which only the TCP header is needed.
    let (header_len, payload_len, ethertype) = match original.first()? >> 4 {
        4 => {
            let header_len = usize::from(original[0] & 0x0f) * 4;
            let total = usize::from(wire::read_u16(original, wire::ipv4::TOTAL_LENGTH));
            if original.get(wire::ipv4::PROTOCOL) != Some(&wire::PROTO_TCP) {
                return None;
            }
            (header_len, total.checked_sub(header_len)?, ETHERTYPE_IPV4)
        }
        6 => {
            let layers = wire::ipv6_layers(original)?;
            if layers.protocol != wire::PROTO_TCP || layers.fragment.is_some_and(|f| f.offset != 0)
            {
                return None;
            }
            let end =
                IPV6_HEADER_LEN + usize::from(wire::read_u16(original, wire::ipv6::PAYLOAD_LENGTH));
            (
                layers.offset,
                end.checked_sub(layers.offset)?,
                ETHERTYPE_IPV6,
            )
        }
        _ => return None,
    };
    let tcp = original.get(header_len..header_len + TCP_HEADER_LEN)?;
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    if data_offset < TCP_HEADER_LEN || data_offset > payload_len || flags & 0x04 != 0 {
        return None;
    }
    let (syn, fin, ack) = (flags & 0x02 != 0, flags & 0x01 != 0, flags & 0x10 != 0);
    let segment_len = (payload_len - data_offset) as u32 + u32::from(syn) + u32::from(fin);
    let their_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let their_ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    // RFC 9293 3.10.7.1: acknowledge what was sent unless the segment carried an ACK.
    let (seq, ack_number, reset_flags) = if ack {
        (their_ack, 0, 0x04)
    } else {
        (0, their_seq.wrapping_add(segment_len), 0x14)
    };
    let l2 = wire::write_ethernet(out, link.dst_mac, link.src_mac, link.vlan, ethertype);
    let ip_len = if ethertype == ETHERTYPE_IPV4 {
        IPV4_HEADER_LEN
    } else {
        IPV6_HEADER_LEN
    };
    let frame = out.get_mut(l2..l2 + ip_len + TCP_HEADER_LEN)?;
    let (ip, reset) = frame.split_at_mut(ip_len);
    reset[0..2].copy_from_slice(&tcp[2..4]);
    reset[2..4].copy_from_slice(&tcp[0..2]);
    reset[4..8].copy_from_slice(&seq.to_be_bytes());
    reset[8..12].copy_from_slice(&ack_number.to_be_bytes());
    reset[12] = 5 << 4;
    reset[13] = reset_flags;
    reset[14..20].fill(0); // window, checksum, urgent pointer
    let pseudo = if ethertype == ETHERTYPE_IPV4 {
        wire::write_ipv4_header(
            ip,
            0,
            IPV4_HEADER_LEN + TCP_HEADER_LEN,
            ORIGINATED_TTL,
            wire::PROTO_TCP,
            original[16..20].try_into().ok()?,
            original[12..16].try_into().ok()?,
        );
        u32::from(checksum::ones_complement_sum(&ip[12..20], 0))
            + u32::from(wire::PROTO_TCP)
            + TCP_HEADER_LEN as u32
    } else {
        wire::write_ipv6_header(
            ip,
            TCP_HEADER_LEN,
            wire::PROTO_TCP,
            ORIGINATED_TTL,
            original[24..40].try_into().ok()?,
            original[8..24].try_into().ok()?,
        );
        let (source, destination): ([u8; 16], [u8; 16]) =
            (ip[8..24].try_into().ok()?, ip[24..40].try_into().ok()?);
        checksum::ipv6_pseudo_header_sum(
            &source,
            &destination,
            TCP_HEADER_LEN as u32,
            wire::PROTO_TCP,
        )
    };
    let tcp_checksum = !checksum::ones_complement_sum(reset, pseudo);
    wire::write_u16(reset, 16, tcp_checksum);
    Some(l2 + ip_len + TCP_HEADER_LEN)
}

/// Writes into `out` the echo reply (an IP packet, from its header on) to the echo request
/// `request` (an IP packet), or `None` when `request` is not a well-formed ICMP or ICMPv6 echo
/// request. The reply comes from the address the request was sent to, with the request's
/// identifier, sequence number and data, and without the request's IPv4 options.
pub fn write_echo_reply(out: &mut [u8], request: &[u8]) -> Option<usize> {
    match request.first()? >> 4 {
        4 => {
            let header_len = usize::from(request[0] & 0x0f) * 4;
            let total_len = usize::from(wire::read_u16(request, wire::ipv4::TOTAL_LENGTH));
            let icmp = request.get(header_len..total_len)?;
            if header_len < IPV4_HEADER_LEN
                || request[wire::ipv4::PROTOCOL] != PROTO_ICMP
                || icmp.len() < ICMP_HEADER_LEN
                || icmp[0] != 8
            {
                return None;
            }
            let len = IPV4_HEADER_LEN + icmp.len();
            let ip = out.get_mut(..len)?;
            // The request's type of service, its options left out.
            wire::write_ipv4_header(
                ip,
                request[1],
                len,
                ORIGINATED_TTL,
                PROTO_ICMP,
                request[16..20].try_into().ok()?,
                request[12..16].try_into().ok()?,
            );
            let reply = &mut ip[IPV4_HEADER_LEN..];
            reply.copy_from_slice(icmp);
            reply[0] = 0;
            wire::write_u16(reply, 2, 0);
            let icmp_checksum = checksum::checksum(reply);
            wire::write_u16(reply, 2, icmp_checksum);
            Some(len)
        }
        6 => {
            let payload_len = usize::from(wire::read_u16(request, wire::ipv6::PAYLOAD_LENGTH));
            let icmp = request.get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)?;
            if request[wire::ipv6::NEXT_HEADER] != PROTO_ICMPV6
                || icmp.len() < ICMP_HEADER_LEN
                || icmp[0] != 128
            {
                return None;
            }
            let len = IPV6_HEADER_LEN + payload_len;
            let ip = out.get_mut(..len)?;
            ip[..IPV6_HEADER_LEN].copy_from_slice(&request[..IPV6_HEADER_LEN]);
            ip[wire::ipv6::HOP_LIMIT] = ORIGINATED_TTL;
            ip[8..24].copy_from_slice(&request[24..40]);
            ip[24..40].copy_from_slice(&request[8..24]);
            let source: [u8; 16] = ip[8..24].try_into().ok()?;
            let destination: [u8; 16] = ip[24..40].try_into().ok()?;
            let reply = &mut ip[IPV6_HEADER_LEN..];
            reply.copy_from_slice(icmp);
            reply[0] = 129;
            wire::write_u16(reply, 2, 0);
            let sum = checksum::ipv6_pseudo_header_sum(
                &source,
                &destination,
                payload_len as u32,
                PROTO_ICMPV6,
            );
            let icmp_checksum = !checksum::ones_complement_sum(reply, sum);
            wire::write_u16(reply, 2, icmp_checksum);
            Some(len)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, Icmpv6Type, SlicedPacket, TransportSlice};

    const LINK: ErrorLink = ErrorLink {
        dst_mac: [2, 0, 0, 0, 0, 0xaa],
        src_mac: [2, 0, 0, 0, 0, 1],
        vlan: None,
    };

    fn udp_v4(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4([198, 18, 1, 2], [198, 19, 0, 1], 1)
            .udp(1000, 2000)
            .write(&mut out, &vec![0x5a; len])
            .expect("build");
        out
    }

    fn udp_v6(len: usize) -> Vec<u8> {
        let src: Ipv6Addr = "2001:2:0:1::2".parse().expect("addr");
        let dst: Ipv6Addr = "2001:2:0:ff00::1".parse().expect("addr");
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 1)
            .udp(1000, 2000)
            .write(&mut out, &vec![0x5a; len])
            .expect("build");
        out
    }

    fn source_v4() -> IpAddr {
        IpAddr::from([198, 18, 1, 1])
    }

    #[test]
    fn time_exceeded_v4_is_valid_and_quotes_the_original() {
        let original = udp_v4(100);
        let mut out = [0u8; ERROR_FRAME_MAX];
        let len = write_error(
            &mut out,
            &original,
            ErrorReply::TimeExceeded,
            LINK,
            source_v4(),
        )
        .expect("sent");
        let packet = SlicedPacket::from_ethernet(&out[..len]).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().source(), [198, 18, 1, 1]);
        assert_eq!(ip.header().destination(), [198, 18, 1, 2]);
        assert!(
            checksum::is_valid(ip.header().slice()),
            "IPv4 header checksum"
        );
        let Some(TransportSlice::Icmpv4(icmp)) = &packet.transport else {
            panic!("not icmp")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
        );
        assert!(checksum::is_valid(icmp.slice()), "ICMP checksum");
        assert_eq!(icmp.payload(), &original[..]);
    }

    #[test]
    fn frag_needed_carries_the_mtu_and_is_capped_at_576() {
        let original = udp_v4(1600);
        let mut out = [0u8; ERROR_FRAME_MAX];
        let len = write_error(
            &mut out,
            &original,
            ErrorReply::TooBig { mtu: 1500 },
            LINK,
            source_v4(),
        )
        .expect("sent");
        assert_eq!(len, 14 + 576);
        let packet = SlicedPacket::from_ethernet(&out[..len]).expect("parses");
        let Some(TransportSlice::Icmpv4(icmp)) = &packet.transport else {
            panic!("not icmp")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1500
                }
            )
        );
        assert!(checksum::is_valid(icmp.slice()));
    }

    #[test]
    fn unreachable_codes_v4() {
        let original = udp_v4(10);
        let mut out = [0u8; ERROR_FRAME_MAX];
        for (kind, code) in [
            (ErrorReply::NetUnreachable, 0),
            (ErrorReply::HostUnreachable, 1),
        ] {
            let len = write_error(&mut out, &original, kind, LINK, source_v4()).expect("sent");
            assert_eq!(&out[14 + 20..14 + 22], &[3, code]);
            assert!(len > 14 + 28);
        }
    }

    #[test]
    fn no_error_about_errors_fragments_or_broadcasts() {
        let mut out = [0u8; ERROR_FRAME_MAX];
        let mut error = vec![0u8; ERROR_FRAME_MAX];
        let len = write_error(
            &mut error,
            &udp_v4(10),
            ErrorReply::TimeExceeded,
            LINK,
            source_v4(),
        )
        .expect("sent");
        assert_eq!(
            write_error(
                &mut out,
                &error[14..len],
                ErrorReply::TimeExceeded,
                LINK,
                source_v4()
            ),
            None
        );
        let mut fragment = udp_v4(10);
        fragment[7] = 8; // offset 64 bytes
        assert_eq!(
            write_error(
                &mut out,
                &fragment,
                ErrorReply::TimeExceeded,
                LINK,
                source_v4()
            ),
            None
        );
        let mut broadcast = udp_v4(10);
        broadcast[16..20].copy_from_slice(&[255; 4]);
        assert_eq!(
            write_error(
                &mut out,
                &broadcast,
                ErrorReply::TimeExceeded,
                LINK,
                source_v4()
            ),
            None
        );
    }

    #[test]
    fn packet_too_big_v6_is_valid() {
        let original = udp_v6(1600);
        let mut out = [0u8; ERROR_FRAME_MAX];
        let source = IpAddr::V6("2001:2:0:1::1".parse().expect("addr"));
        let len = write_error(
            &mut out,
            &original,
            ErrorReply::TooBig { mtu: 1500 },
            LINK,
            source,
        )
        .expect("sent");
        assert_eq!(len, 14 + 1280);
        let packet = SlicedPacket::from_ethernet(&out[..len]).expect("parses");
        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!("not icmpv6")
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1500 });
        let src: Ipv6Addr = "2001:2:0:1::1".parse().expect("addr");
        let dst: Ipv6Addr = "2001:2:0:1::2".parse().expect("addr");
        let sum = checksum::ipv6_pseudo_header_sum(
            &src.octets(),
            &dst.octets(),
            icmp.slice().len() as u32,
            PROTO_ICMPV6,
        );
        assert_eq!(
            checksum::ones_complement_sum(icmp.slice(), sum),
            0xffff,
            "ICMPv6 checksum"
        );
    }

    #[test]
    fn time_exceeded_and_unreachable_v6_types() {
        let original = udp_v6(10);
        let mut out = [0u8; ERROR_FRAME_MAX];
        let source = IpAddr::V6("2001:2:0:1::1".parse().expect("addr"));
        for (kind, t, c) in [
            (ErrorReply::TimeExceeded, 3, 0),
            (ErrorReply::NetUnreachable, 1, 0),
            (ErrorReply::HostUnreachable, 1, 3),
        ] {
            write_error(&mut out, &original, kind, LINK, source).expect("sent");
            assert_eq!(&out[14 + 40..14 + 42], &[t, c]);
        }
    }

    #[test]
    fn echo_replies_v4_and_v6_are_valid() {
        let mut request = Vec::new();
        etherparse::PacketBuilder::ipv4([198, 19, 0, 1], [198, 18, 2, 1], 60)
            .icmpv4_echo_request(7, 9)
            .write(&mut request, b"payload")
            .expect("build");
        let mut out = [0u8; 256];
        let len = write_echo_reply(&mut out, &request).expect("a reply");
        let reply = SlicedPacket::from_ip(&out[..len]).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &reply.net else {
            panic!("ipv4")
        };
        assert_eq!(ip.header().source(), [198, 18, 2, 1]);
        assert_eq!(ip.header().destination(), [198, 19, 0, 1]);
        assert!(checksum::is_valid(ip.header().slice()));
        let Some(TransportSlice::Icmpv4(icmp)) = &reply.transport else {
            panic!("icmp")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 7, seq: 9 })
        );
        assert!(checksum::is_valid(icmp.slice()));
        assert_eq!(icmp.payload(), b"payload");

        let src: Ipv6Addr = "2001:2:0:ff::1".parse().expect("a");
        let dst: Ipv6Addr = "2001:2:0:2::1".parse().expect("a");
        let mut request6 = Vec::new();
        etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 60)
            .icmpv6_echo_request(7, 9)
            .write(&mut request6, b"payload")
            .expect("build");
        let mut out6 = [0u8; 256];
        let len = write_echo_reply(&mut out6, &request6).expect("a reply");
        let reply = SlicedPacket::from_ip(&out6[..len]).expect("parses");
        let Some(TransportSlice::Icmpv6(icmp)) = &reply.transport else {
            panic!("icmpv6")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv6Type::EchoReply(etherparse::IcmpEchoHeader { id: 7, seq: 9 })
        );
        let sum = checksum::ipv6_pseudo_header_sum(
            &dst.octets(),
            &src.octets(),
            icmp.slice().len() as u32,
            PROTO_ICMPV6,
        );
        assert_eq!(checksum::ones_complement_sum(icmp.slice(), sum), 0xffff);
        assert_eq!(
            write_echo_reply(&mut [0u8; 256], &udp_v4(10)),
            None,
            "not an echo request"
        );
    }

    #[test]
    fn no_error_about_an_icmpv6_error_behind_extension_headers() {
        let source = IpAddr::V6("2001:2:0:1::1".parse().expect("addr"));
        let mut out = [0u8; ERROR_FRAME_MAX];
        let len = write_error(
            &mut out,
            &udp_v6(10),
            ErrorReply::TimeExceeded,
            LINK,
            source,
        )
        .expect("sent");
        // The error with a destination-options header (8 bytes, padding) put in front of its ICMPv6.
        let mut error = out[14..len].to_vec();
        error[6] = 60;
        error.splice(40..40, [PROTO_ICMPV6, 0, 1, 4, 0, 0, 0, 0]);
        let layers = wire::ipv6_layers(&error).expect("parses");
        assert_eq!((layers.protocol, layers.offset), (PROTO_ICMPV6, 48));
        assert_eq!(
            write_error(&mut out, &error, ErrorReply::TimeExceeded, LINK, source),
            None
        );
        let layers = wire::ipv6_layers(&udp_v6(10)).expect("parses");
        assert_eq!(
            (layers.protocol, layers.offset, layers.fragment),
            (17, 40, None)
        );
    }

    #[test]
    fn reject_resets_tcp_and_prohibits_the_rest() {
        let mut syn = Vec::new();
        etherparse::PacketBuilder::ipv4([198, 18, 1, 2], [198, 18, 3, 2], 64)
            .tcp(40000, 23, 1000, 64240)
            .syn()
            .write(&mut syn, &[])
            .expect("build");
        let mut out = [0u8; ERROR_FRAME_MAX];
        let len =
            write_error(&mut out, &syn, ErrorReply::Reject, LINK, source_v4()).expect("a reset");
        let reset = SlicedPacket::from_ethernet(&out[..len]).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &reset.net else {
            panic!("ipv4")
        };
        assert_eq!(
            (ip.header().source(), ip.header().destination()),
            ([198, 18, 3, 2], [198, 18, 1, 2]),
            "from the destination"
        );
        assert!(checksum::is_valid(ip.header().slice()));
        let Some(TransportSlice::Tcp(tcp)) = &reset.transport else {
            panic!("tcp")
        };
        assert!(tcp.rst() && tcp.ack());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (23, 40000));
        assert_eq!(
            tcp.acknowledgment_number(),
            1001,
            "the SYN's sequence number plus one"
        );
        let expected = tcp
            .to_header()
            .calc_checksum_ipv4_raw([198, 18, 3, 2], [198, 18, 1, 2], &[])
            .expect("fits");
        assert_eq!(tcp.checksum(), expected);
        // Not TCP: administratively prohibited.
        let mut out = [0u8; ERROR_FRAME_MAX];
        let len = write_error(&mut out, &udp_v4(10), ErrorReply::Reject, LINK, source_v4())
            .expect("an error");
        assert_eq!(&out[14 + 20..14 + 22], &[3, 13]);
        assert!(len > 14 + 28);
        // A reset is never answered.
        let mut rst = Vec::new();
        etherparse::PacketBuilder::ipv4([198, 18, 1, 2], [198, 18, 3, 2], 64)
            .tcp(40000, 23, 1000, 0)
            .rst()
            .write(&mut rst, &[])
            .expect("build");
        assert_eq!(
            write_error(&mut out, &rst, ErrorReply::Reject, LINK, source_v4()),
            None
        );
    }

    #[test]
    fn a_large_segment_quoted_in_part_still_gets_its_reset() {
        let mut segment = Vec::new();
        etherparse::PacketBuilder::ipv6(
            [0x20, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2],
            [0x20, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .tcp(40000, 23, 5000, 64240)
        .write(&mut segment, &[7u8; 1400])
        .expect("build");
        // The worker hands over at most a quote of the original.
        let quote = &segment[..1000];
        let source = IpAddr::V6("2001:2:0:1::1".parse().expect("addr"));
        let mut out = [0u8; ERROR_FRAME_MAX];
        let len = write_error(&mut out, quote, ErrorReply::Reject, LINK, source).expect("a reset");
        let reset = SlicedPacket::from_ethernet(&out[..len]).expect("parses");
        let Some(TransportSlice::Tcp(tcp)) = &reset.transport else {
            panic!("tcp")
        };
        assert!(tcp.rst() && tcp.ack());
        assert_eq!(
            tcp.acknowledgment_number(),
            5000 + 1400,
            "acknowledges the whole segment"
        );
        let Some(etherparse::NetSlice::Ipv6(ip)) = &reset.net else {
            panic!("ipv6")
        };
        let expected = tcp
            .to_header()
            .calc_checksum_ipv6_raw(ip.header().source(), ip.header().destination(), &[])
            .expect("fits");
        assert_eq!(tcp.checksum(), expected);
    }
}
