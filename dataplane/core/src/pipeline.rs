//! The forwarding decision for one packet, as a router does it (RFC 1812, RFC 8200, RFC 4861).
//!
//! [`Pipeline::process`] reads a received frame, rewrites it in place when it is forwarded
//! (Ethernet header with the egress VLAN tag, TTL or hop limit, IPv4 checksum per RFC 1624) and
//! returns a closed [`Verdict`]. It reads the FIB and the neighbour index of the current burst,
//! never allocates, and never panics on any input: every malformed packet becomes a counted
//! [`DropReason`]. In [`PipelineMode::Replay`] it is a flow meter instead: the same parser and
//! policy, none of a router's checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use etherparse::err::{ipv4 as ipv4_err, ipv6 as ipv6_err};
use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};

use crate::checksum;
use crate::counters::DropReason;
use crate::fib::{Fib, NextHop};
use crate::icmp::ErrorReply;
use crate::iface::{IfIndex, Interface, Interfaces, RpFilter};
use crate::io::PortIndex;
use crate::neigh::{NeighbourIndex, NeighbourKey, NeighbourTable, Resolution};
use crate::overlay::Overlay;
use crate::policy::{ActivePolicy, Fragment, Judgement, PacketFacts, PolicyState, Quoted};
use crate::wire::{self, ETHERNET_HEADER_LEN, IPV6_HEADER_LEN, VLAN_TAG_LEN, ipv4, ipv6};

/// What the worker does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the first `len` bytes of the frame, rewritten in place, on `port`.
    Forward { port: PortIndex, len: usize },
    /// Rewritten for `port` except the destination MAC: park until `key` resolves, then write its
    /// MAC into bytes 0..6 and transmit `len` bytes.
    AwaitNeighbour {
        port: PortIndex,
        len: usize,
        key: NeighbourKey,
    },
    /// Like `Forward` (or `AwaitNeighbour` when `waiting_for` is set), but the IPv4 packet is
    /// larger than the egress MTU and may be fragmented: the worker splits it into fragments of
    /// at most `mtu` bytes (RFC 791, RFC 1812 section 4.2.2.7).
    Fragment {
        port: PortIndex,
        len: usize,
        mtu: u16,
        waiting_for: Option<NeighbourKey>,
    },
    /// For the router itself (ARP, NDP, ping to its addresses): an untagged Ethernet frame at
    /// `start..start + len` of the buffer, received on `iface`.
    ToHost {
        iface: IfIndex,
        start: usize,
        len: usize,
    },
    /// Dropped with `reason`; report `error` to the source with the original IP packet at
    /// `ip_start..ip_start + ip_len`, through `iface` to the frame's source MAC.
    Error {
        reason: DropReason,
        error: ErrorReply,
        iface: IfIndex,
        ip_start: usize,
        ip_len: usize,
    },
    /// Dropped and counted.
    Drop(DropReason),
}

/// What a burst shares: one FIB, one neighbour index, one rule set and one overlay for all its
/// packets, and one reading of the clock.
pub struct BurstView<'a> {
    pub fib: &'a Fib,
    pub neighbours: &'a NeighbourIndex,
    pub policy: Option<&'a ActivePolicy>,
    pub overlay: &'a Overlay,
    pub now: Duration,
}

/// The parsed link layer of a received frame.
struct Link {
    iface: IfIndex,
    l3: usize,
    /// Sent to a group or broadcast address: may be for us, never forwarded.
    group_destination: bool,
}

/// What the pipeline does with frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PipelineMode {
    /// A router's checks and forwarding (`docs/dataplane.md`).
    #[default]
    Route,
    /// Flow accounting of a capture taken on another network (`vfn flows-from-pcap`), whose
    /// MAC addresses, VLANs and IP addresses are not the router's. Every IP packet the parser
    /// accepts, whatever its destination MAC or VLAN, is judged by the policy, which counts it
    /// in its flow, and sent back unchanged out of the port it arrived on. No address,
    /// reverse-path, TTL, route, MTU or neighbour check; nothing goes to the router itself
    /// and no ICMP error is sent. Frames of any other EtherType, ARP included, are dropped as
    /// [`DropReason::UnsupportedEthertype`].
    Replay,
}

/// Packet processing of one worker: the interfaces, the shared neighbour slots and the mode.
#[derive(Debug, Clone)]
pub struct Pipeline {
    ifaces: Arc<Interfaces>,
    neighbours: Arc<NeighbourTable>,
    mode: PipelineMode,
}

type Decision<T> = Result<T, Verdict>;

impl Pipeline {
    pub fn new(
        ifaces: Arc<Interfaces>,
        neighbours: Arc<NeighbourTable>,
        mode: PipelineMode,
    ) -> Pipeline {
        Pipeline {
            ifaces,
            neighbours,
            mode,
        }
    }

    pub fn interfaces(&self) -> &Arc<Interfaces> {
        &self.ifaces
    }

    /// Decides the fate of the frame in `buf[..len]` received on `port`. `buf` is the whole frame
    /// buffer (its spare room lets an egress VLAN tag be inserted).
    #[inline]
    pub fn process(
        &self,
        view: &BurstView<'_>,
        policy: &mut PolicyState,
        buf: &mut [u8],
        len: usize,
        port: PortIndex,
    ) -> Verdict {
        match self.decide(view, policy, buf, len, port) {
            Ok(verdict) | Err(verdict) => verdict,
        }
    }

    fn decide(
        &self,
        view: &BurstView<'_>,
        policy: &mut PolicyState,
        buf: &mut [u8],
        len: usize,
        port: PortIndex,
    ) -> Decision<Verdict> {
        let len = len.min(buf.len());
        if self.mode == PipelineMode::Replay {
            return self.replay(view, policy, buf, len, port);
        }
        let link = self.link(&buf[..len], port)?;
        match wire::read_u16(buf, link.l3 - 2) {
            wire::ETHERTYPE_ARP => Ok(self.to_host(buf, len, &link)),
            wire::ETHERTYPE_IPV4 => self.ipv4(view, policy, buf, len, &link),
            wire::ETHERTYPE_IPV6 => self.ipv6(view, policy, buf, len, &link),
            _ => Err(Verdict::Drop(DropReason::UnsupportedEthertype)),
        }
    }

    #[inline]
    fn link(&self, frame: &[u8], port: PortIndex) -> Decision<Link> {
        let (vlan, l3) = ethernet_layout(frame)?;
        let group_destination = frame[0] & 1 == 1;
        if !group_destination && frame[0..6] != self.ifaces.port_mac(port) {
            return Err(Verdict::Drop(DropReason::NotForUs));
        }
        let iface = self
            .ifaces
            .ingress(port, vlan)
            .ok_or(Verdict::Drop(DropReason::UnknownVlan))?;
        Ok(Link {
            iface,
            l3,
            group_destination,
        })
    }

    /// Replay mode ([`PipelineMode::Replay`]): the frame's IP packet, if the parser accepts it,
    /// is judged by the policy and the frame goes back out unchanged.
    fn replay(
        &self,
        view: &BurstView<'_>,
        policy: &mut PolicyState,
        buf: &[u8],
        len: usize,
        port: PortIndex,
    ) -> Decision<Verdict> {
        let frame = &buf[..len];
        let (_, l3) = ethernet_layout(frame)?;
        // The capture's VLANs are not the router's: every frame arrives on the port itself.
        let iface = self
            .ifaces
            .ingress(port, None)
            .ok_or(Verdict::Drop(DropReason::UnknownVlan))?;
        let path = PacketPath {
            ingress: iface,
            egress: iface,
            back: Some(iface),
        };
        // A packet the rules reject is dropped: the capture's hosts are not on the router's links.
        let drop = |reason, _| Verdict::Drop(reason);
        let ip = &frame[l3..];
        match wire::read_u16(frame, l3 - 2) {
            wire::ETHERTYPE_IPV4 => {
                let packet = Ipv4Packet::parse(ip)?;
                judge(view, policy, || packet.facts(ip, path), drop)?;
            }
            wire::ETHERTYPE_IPV6 => {
                let packet = Ipv6Packet::parse(ip)?;
                let transport = Ipv6Transport::parse(&ip[..packet.total_len])?;
                judge(view, policy, || packet.facts(ip, &transport, path), drop)?;
            }
            _ => return Err(Verdict::Drop(DropReason::UnsupportedEthertype)),
        }
        Ok(Verdict::Forward { port, len })
    }

    /// Hands the frame to the slow path untagged: a tag is removed by moving the MAC addresses
    /// over it, so the frame then starts 4 bytes later.
    fn to_host(&self, buf: &mut [u8], len: usize, link: &Link) -> Verdict {
        let start = link.l3 - ETHERNET_HEADER_LEN;
        if start > 0 {
            buf.copy_within(0..12, start);
        }
        Verdict::ToHost {
            iface: link.iface,
            start,
            len: len - start,
        }
    }

    fn interface(&self, index: IfIndex) -> Decision<&Interface> {
        // Indices come from `Interfaces` itself; a miss would be a bug, handled as a drop.
        self.ifaces
            .get(index)
            .ok_or(Verdict::Drop(DropReason::UnknownVlan))
    }

    fn ipv4(
        &self,
        view: &BurstView<'_>,
        policy: &mut PolicyState,
        buf: &mut [u8],
        len: usize,
        link: &Link,
    ) -> Decision<Verdict> {
        let l3 = link.l3;
        let packet = Ipv4Packet::parse(&buf[l3..len])?;
        let (src, dst, total_len) = (packet.src, packet.dst, packet.total_len);

        if wire::is_martian_v4(src) || src.is_multicast() || src.is_broadcast() {
            return Err(Verdict::Drop(DropReason::MartianSource));
        }
        let fib = view.fib;
        let dst_route = fib.lookup_v4(dst).copied();
        if let Some(NextHop::Local { .. }) = dst_route {
            return Ok(self.to_host(buf, l3 + total_len, link));
        }
        if link.group_destination || dst.is_multicast() || dst.is_broadcast() {
            return Err(Verdict::Drop(DropReason::MulticastNotRouted));
        }
        if src.is_link_local() || dst.is_link_local() {
            return Err(Verdict::Drop(DropReason::LinkLocalNotForwarded));
        }
        if wire::is_martian_v4(dst) {
            return Err(Verdict::Drop(DropReason::MartianDestination));
        }
        let ingress = self.interface(link.iface)?;
        let back = fib.lookup_v4(src).copied();
        source_check(ingress.rp_filter, link.iface, back.as_ref())?;
        let error = |reason, error| Verdict::Error {
            reason,
            error,
            iface: link.iface,
            ip_start: l3,
            ip_len: total_len,
        };
        let ttl = buf[l3 + ipv4::TTL];
        if ttl <= 1 {
            return Err(error(DropReason::TtlExceeded, ErrorReply::TimeExceeded));
        }
        let next_hop = dst_route.ok_or(error(DropReason::NoRoute, ErrorReply::NetUnreachable))?;
        if let NextHop::Broadcast { .. } = next_hop {
            return Err(Verdict::Drop(DropReason::DirectedBroadcast));
        }
        let path = PacketPath {
            ingress: link.iface,
            egress: next_hop.iface(),
            back: back.map(|n| n.iface()),
        };
        judge(view, policy, || packet.facts(&buf[l3..], path), error)?;
        let egress = self.interface(next_hop.iface())?;
        let fragment_mtu = if total_len > usize::from(egress.mtu) {
            if packet.fragment_word & ipv4::FLAG_DONT_FRAGMENT != 0 {
                return Err(error(
                    DropReason::TooBig,
                    ErrorReply::TooBig { mtu: egress.mtu },
                ));
            }
            Some(egress.mtu)
        } else {
            None
        };
        let (key, resolution) = self.resolve(view, next_hop, IpAddr::V4(dst));
        if resolution == Some(Resolution::Failed) {
            return Err(error(
                DropReason::NeighbourFailed,
                ErrorReply::HostUnreachable,
            ));
        }

        // Decrement the TTL: the word at TTL holds (TTL, protocol); RFC 1624 update.
        let old_word = wire::read_u16(buf, l3 + ipv4::TTL);
        buf[l3 + ipv4::TTL] = ttl - 1;
        let new_word = wire::read_u16(buf, l3 + ipv4::TTL);
        let old_checksum = wire::read_u16(buf, l3 + ipv4::CHECKSUM);
        wire::write_u16(
            buf,
            l3 + ipv4::CHECKSUM,
            checksum::update_word(old_checksum, old_word, new_word),
        );

        let verdict = self.rewrite_link(
            buf,
            l3,
            total_len,
            egress,
            wire::ETHERTYPE_IPV4,
            key,
            resolution,
        )?;
        Ok(match (fragment_mtu, verdict) {
            (Some(mtu), Verdict::Forward { port, len }) => Verdict::Fragment {
                port,
                len,
                mtu,
                waiting_for: None,
            },
            (Some(mtu), Verdict::AwaitNeighbour { port, len, key }) => Verdict::Fragment {
                port,
                len,
                mtu,
                waiting_for: Some(key),
            },
            (_, verdict) => verdict,
        })
    }

    fn ipv6(
        &self,
        view: &BurstView<'_>,
        policy: &mut PolicyState,
        buf: &mut [u8],
        len: usize,
        link: &Link,
    ) -> Decision<Verdict> {
        let l3 = link.l3;
        let packet = Ipv6Packet::parse(&buf[l3..len])?;
        let (src, dst, total_len) = (packet.src, packet.dst, packet.total_len);

        if src.is_multicast() || src.is_loopback() || is_ipv4_mapped(src) {
            return Err(Verdict::Drop(DropReason::MartianSource));
        }
        let ingress = self.interface(link.iface)?;
        let fib = view.fib;
        let dst_route = fib.lookup_v6(dst).copied();
        let for_us = if dst.is_multicast() {
            // Link-scope groups (all-nodes, solicited-node, all-routers) carry NDP.
            dst.segments()[0] & 0xff0f == 0xff02
        } else if dst.is_unicast_link_local() {
            dst == ingress.link_local()
        } else {
            matches!(dst_route, Some(NextHop::Local { .. }))
        };
        if for_us {
            return Ok(self.to_host(buf, l3 + total_len, link));
        }
        if src.is_unspecified() {
            return Err(Verdict::Drop(DropReason::MartianSource));
        }
        if link.group_destination || dst.is_multicast() {
            return Err(Verdict::Drop(DropReason::MulticastNotRouted));
        }
        if src.is_unicast_link_local() || dst.is_unicast_link_local() {
            return Err(Verdict::Drop(DropReason::LinkLocalNotForwarded));
        }
        if dst.is_unspecified() || dst.is_loopback() || is_ipv4_mapped(dst) {
            return Err(Verdict::Drop(DropReason::MartianDestination));
        }
        let back = fib.lookup_v6(src).copied();
        source_check(ingress.rp_filter, link.iface, back.as_ref())?;
        let error = |reason, error| Verdict::Error {
            reason,
            error,
            iface: link.iface,
            ip_start: l3,
            ip_len: total_len,
        };
        let hop_limit = buf[l3 + ipv6::HOP_LIMIT];
        if hop_limit <= 1 {
            return Err(error(DropReason::TtlExceeded, ErrorReply::TimeExceeded));
        }
        let next_hop = dst_route.ok_or(error(DropReason::NoRoute, ErrorReply::NetUnreachable))?;
        let transport = Ipv6Transport::parse(&buf[l3..l3 + total_len])?;
        let path = PacketPath {
            ingress: link.iface,
            egress: next_hop.iface(),
            back: back.map(|n| n.iface()),
        };
        judge(
            view,
            policy,
            || packet.facts(&buf[l3..], &transport, path),
            error,
        )?;
        let egress = self.interface(next_hop.iface())?;
        if total_len > usize::from(egress.mtu) {
            return Err(error(
                DropReason::TooBig,
                ErrorReply::TooBig { mtu: egress.mtu },
            ));
        }
        let (key, resolution) = self.resolve(view, next_hop, IpAddr::V6(dst));
        if resolution == Some(Resolution::Failed) {
            return Err(error(
                DropReason::NeighbourFailed,
                ErrorReply::HostUnreachable,
            ));
        }
        buf[l3 + ipv6::HOP_LIMIT] = hop_limit - 1;
        self.rewrite_link(
            buf,
            l3,
            total_len,
            egress,
            wire::ETHERTYPE_IPV6,
            key,
            resolution,
        )
    }

    /// The neighbour a next hop leads to and what is known of it (`None`: no entry yet).
    #[inline]
    /// The way to `dst` for a packet the router originates (a tunnelled mirror copy): the
    /// egress interface and the next hop's neighbour key and resolution; `None` without a route.
    pub fn route_to(
        &self,
        view: &BurstView<'_>,
        dst: IpAddr,
    ) -> Option<(&Interface, NeighbourKey, Option<Resolution>)> {
        let next_hop = *view.fib.lookup(dst)?;
        let (key, resolution) = self.resolve(view, next_hop, dst);
        Some((self.ifaces.get(key.iface)?, key, resolution))
    }

    fn resolve(
        &self,
        view: &BurstView<'_>,
        next_hop: NextHop,
        dst: IpAddr,
    ) -> (NeighbourKey, Option<Resolution>) {
        match next_hop {
            NextHop::Gateway {
                iface,
                gateway,
                slot,
            } => (
                NeighbourKey {
                    iface,
                    addr: gateway,
                },
                Some(self.neighbours.resolution(slot)),
            ),
            // Local and broadcast destinations are handled before a neighbour is needed.
            NextHop::Connected { iface }
            | NextHop::Local { iface }
            | NextHop::Broadcast { iface } => {
                let key = NeighbourKey { iface, addr: dst };
                (key, self.neighbours.lookup(view.neighbours, &key))
            }
        }
    }

    /// Writes the egress Ethernet header in front of the IP packet at `buf[l3..l3 + ip_len]`,
    /// moving the packet when the header length changes (a VLAN tag added or removed).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the arguments are the decision"
    )]
    fn rewrite_link(
        &self,
        buf: &mut [u8],
        l3: usize,
        ip_len: usize,
        egress: &Interface,
        ethertype: u16,
        key: NeighbourKey,
        resolution: Option<Resolution>,
    ) -> Decision<Verdict> {
        let header_len = wire::ethernet_header_len(egress.vlan);
        let len = header_len + ip_len;
        if len > buf.len() {
            // Only an added tag can grow a frame past its buffer.
            return Err(Verdict::Drop(DropReason::TooBig));
        }
        if header_len != l3 {
            buf.copy_within(l3..l3 + ip_len, header_len);
        }
        let dst_mac = match resolution {
            Some(Resolution::Reachable(mac)) => mac,
            _ => [0; 6],
        };
        wire::write_ethernet(buf, dst_mac, egress.mac, egress.vlan, ethertype);
        Ok(match resolution {
            Some(Resolution::Reachable(_)) => Verdict::Forward {
                port: egress.port,
                len,
            },
            _ => Verdict::AwaitNeighbour {
                port: egress.port,
                len,
                key,
            },
        })
    }
}

/// The 802.1Q VLAN id of a frame (`None`: untagged) and where its L3 header starts. Frames
/// shorter than their Ethernet header and QinQ or stacked tags are dropped.
#[inline]
pub(crate) fn ethernet_layout(frame: &[u8]) -> Decision<(Option<u16>, usize)> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(Verdict::Drop(DropReason::EthernetTruncated));
    }
    match wire::read_u16(frame, 12) {
        wire::ETHERTYPE_QINQ => Err(Verdict::Drop(DropReason::StackedVlan)),
        wire::ETHERTYPE_VLAN => {
            if frame.len() < ETHERNET_HEADER_LEN + VLAN_TAG_LEN {
                return Err(Verdict::Drop(DropReason::EthernetTruncated));
            }
            if matches!(
                wire::read_u16(frame, 16),
                wire::ETHERTYPE_VLAN | wire::ETHERTYPE_QINQ
            ) {
                return Err(Verdict::Drop(DropReason::StackedVlan));
            }
            Ok((
                Some(wire::read_u16(frame, 14) & 0x0fff),
                ETHERNET_HEADER_LEN + VLAN_TAG_LEN,
            ))
        }
        _ => Ok((None, ETHERNET_HEADER_LEN)),
    }
}

/// The interfaces a packet arrives on and leaves by, and the one the route back to its source
/// leaves by (`None`: no route back): what the policy reads besides the packet.
#[derive(Clone, Copy, Debug)]
struct PacketPath {
    ingress: IfIndex,
    egress: IfIndex,
    back: Option<IfIndex>,
}

/// An IPv4 packet the parser accepted.
#[derive(Clone, Copy, Debug)]
struct Ipv4Packet {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    header_len: usize,
    total_len: usize,
    /// Flags and fragment offset.
    fragment_word: u16,
    identification: u16,
}

impl Ipv4Packet {
    /// Checks the IPv4 header at the start of `ip` (which runs to the frame's end) as RFC 1812
    /// section 5.2.2 asks (version, header length, total length within the frame, checksum),
    /// then the transport header of an unfragmented packet or first fragment.
    #[inline]
    fn parse(ip: &[u8]) -> Decision<Ipv4Packet> {
        let header = Ipv4HeaderSlice::from_slice(ip).map_err(|e| {
            Verdict::Drop(match e {
                ipv4_err::HeaderSliceError::Len(_) => DropReason::Ipv4Truncated,
                ipv4_err::HeaderSliceError::Content(ipv4_err::HeaderError::UnexpectedVersion {
                    ..
                }) => DropReason::Ipv4BadVersion,
                ipv4_err::HeaderSliceError::Content(
                    ipv4_err::HeaderError::HeaderLengthSmallerThanHeader { .. },
                ) => DropReason::Ipv4BadHeaderLength,
            })
        })?;
        let header_len = header.slice().len();
        let total_len = usize::from(header.total_len());
        if total_len < header_len || total_len > ip.len() {
            return Err(Verdict::Drop(DropReason::Ipv4BadTotalLength));
        }
        if !checksum::is_valid(header.slice()) {
            return Err(Verdict::Drop(DropReason::Ipv4BadChecksum));
        }
        let packet = Ipv4Packet {
            src: header.source_addr(),
            dst: header.destination_addr(),
            protocol: header.protocol().0,
            header_len,
            total_len,
            fragment_word: wire::read_u16(ip, ipv4::FLAGS_FRAGMENT),
            identification: header.identification(),
        };
        // RFC 1858: a TCP fragment at offset 8 bytes can rewrite the flags of the first.
        if packet.protocol == wire::PROTO_TCP
            && packet.fragment_word & ipv4::FRAGMENT_OFFSET_MASK == 1
        {
            return Err(Verdict::Drop(DropReason::TcpBadHeader));
        }
        if packet.is_first_fragment() {
            check_l4(
                packet.protocol,
                &ip[header_len..total_len],
                !packet.has_more_fragments(),
            )?;
        }
        Ok(packet)
    }

    /// An unfragmented packet or the first fragment: the one that holds the transport header.
    fn is_first_fragment(&self) -> bool {
        self.fragment_word & ipv4::FRAGMENT_OFFSET_MASK == 0
    }

    fn has_more_fragments(&self) -> bool {
        self.fragment_word & ipv4::FLAG_MORE_FRAGMENTS != 0
    }

    fn fragment(&self) -> Fragment {
        let id = u32::from(self.identification);
        match (self.is_first_fragment(), self.has_more_fragments()) {
            (false, _) => Fragment::Later { id },
            (true, true) => Fragment::First { id },
            (true, false) => Fragment::Whole,
        }
    }

    /// The policy's facts of this packet, which starts `ip`, on `path`.
    #[inline]
    fn facts(&self, ip: &[u8], path: PacketPath) -> PacketFacts {
        PacketFacts {
            src: IpAddr::V4(self.src),
            dst: IpAddr::V4(self.dst),
            proto: self.protocol,
            ingress: path.ingress,
            egress: path.egress,
            back_iface: path.back,
            bytes: self.total_len as u32,
            fragment: self.fragment(),
            ..transport_facts(
                self.protocol,
                &ip[self.header_len..self.total_len],
                self.is_first_fragment(),
                (8, 0),
            )
        }
    }
}

/// An IPv6 packet whose fixed header the parser accepted.
#[derive(Clone, Copy, Debug)]
struct Ipv6Packet {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    /// The fixed header and the payload.
    total_len: usize,
}

impl Ipv6Packet {
    /// Checks the IPv6 header at the start of `ip` (which runs to the frame's end): version,
    /// payload length within the frame, no jumbogram; and the transport header when no
    /// extension header comes first ([`Ipv6Transport::parse`] checks the others).
    #[inline]
    fn parse(ip: &[u8]) -> Decision<Ipv6Packet> {
        let header = Ipv6HeaderSlice::from_slice(ip).map_err(|e| {
            Verdict::Drop(match e {
                ipv6_err::HeaderSliceError::Len(_) => DropReason::Ipv6Truncated,
                ipv6_err::HeaderSliceError::Content(_) => DropReason::Ipv6BadVersion,
            })
        })?;
        let payload_len = usize::from(header.payload_length());
        let total_len = IPV6_HEADER_LEN + payload_len;
        // A payload length of 0 with a hop-by-hop header would be a jumbogram: not supported.
        if total_len > ip.len() || (payload_len == 0 && header.next_header().0 == 0) {
            return Err(Verdict::Drop(DropReason::Ipv6BadPayloadLength));
        }
        check_l4(
            header.next_header().0,
            &ip[IPV6_HEADER_LEN..total_len],
            true,
        )?;
        Ok(Ipv6Packet {
            src: header.source_addr(),
            dst: header.destination_addr(),
            total_len,
        })
    }

    /// The policy's facts of this packet, which starts `ip`, with its upper layer `transport`,
    /// on `path`.
    #[inline]
    fn facts(&self, ip: &[u8], transport: &Ipv6Transport, path: PacketPath) -> PacketFacts {
        PacketFacts {
            src: IpAddr::V6(self.src),
            dst: IpAddr::V6(self.dst),
            proto: transport.protocol,
            ingress: path.ingress,
            egress: path.egress,
            back_iface: path.back,
            bytes: self.total_len as u32,
            fragment: transport.fragment,
            ..transport_facts(
                transport.protocol,
                &ip[transport.offset..self.total_len],
                transport.has_header,
                (128, 129),
            )
        }
    }
}

/// The upper layer of an IPv6 packet, past its extension headers.
#[derive(Clone, Copy, Debug)]
struct Ipv6Transport {
    protocol: u8,
    /// Where it starts in the packet.
    offset: usize,
    fragment: Fragment,
    /// False for a later fragment: its upper-layer bytes are the middle of the payload.
    has_header: bool,
}

impl Ipv6Transport {
    /// Walks the extension headers of `packet` (exactly one IPv6 packet) and checks the
    /// transport header behind them.
    #[inline]
    fn parse(packet: &[u8]) -> Decision<Ipv6Transport> {
        let layers =
            wire::ipv6_layers(packet).ok_or(Verdict::Drop(DropReason::Ipv6BadPayloadLength))?;
        let (fragment, has_header) = match layers.fragment {
            None => (Fragment::Whole, true),
            Some(f) if f.offset == 0 && f.more => (Fragment::First { id: f.id }, true),
            Some(f) if f.offset == 0 => (Fragment::Whole, true),
            Some(f) => (Fragment::Later { id: f.id }, false),
        };
        // Without extension headers `Ipv6Packet::parse` checked the transport header.
        if has_header && layers.offset != IPV6_HEADER_LEN {
            // Behind extension headers too: a first fragment must hold the whole transport
            // header (RFC 7112), or rules would read ports and flags that are not there.
            let complete = !matches!(fragment, Fragment::First { .. });
            check_l4(layers.protocol, &packet[layers.offset..], complete)?;
        }
        Ok(Ipv6Transport {
            protocol: layers.protocol,
            offset: layers.offset,
            fragment,
            has_header,
        })
    }
}

/// Applies the segmentation policy: a drop, or a reject (reported like an error), ends the packet.
/// A packet that passes counts in its flow's statistics when telemetry is on.
#[inline]
fn judge(
    view: &BurstView<'_>,
    policy: &mut PolicyState,
    facts: impl FnOnce() -> PacketFacts,
    error: impl Fn(DropReason, ErrorReply) -> Verdict,
) -> Decision<()> {
    // Without rules or telemetry the facts are not even gathered.
    if view.policy.is_none() && view.overlay.is_empty() && !policy.tracks_flows() {
        return Ok(());
    }
    match policy.judge(view.policy, view.overlay, &facts(), view.now) {
        Judgement::Pass => Ok(()),
        Judgement::Drop(reason) => Err(Verdict::Drop(reason)),
        Judgement::Reject => Err(error(DropReason::PolicyReject, ErrorReply::Reject)),
    }
}

/// The transport fields the policy reads (ports, ICMP type and code, the echo identifier, TCP
/// flags and window) from `l4`, the packet's transport header on; zero when the packet has none
/// (a later fragment, a protocol without ports). `echo` is the (request, reply) type pair of the
/// family.
#[inline]
fn transport_facts(protocol: u8, l4: &[u8], has_header: bool, echo: (u8, u8)) -> PacketFacts {
    let unspecified = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let mut facts = PacketFacts::new(unspecified, unspecified, protocol);
    if !has_header {
        return facts;
    }
    match protocol {
        wire::PROTO_TCP | wire::PROTO_UDP | wire::PROTO_SCTP if l4.len() >= 4 => {
            facts.sport = wire::read_u16(l4, 0);
            facts.dport = wire::read_u16(l4, 2);
            if protocol == wire::PROTO_TCP && l4.len() >= 16 {
                facts.tcp_flags = l4[13];
                facts.tcp_window = wire::read_u16(l4, 14);
            }
        }
        wire::PROTO_ICMP | wire::PROTO_ICMPV6 if l4.len() >= 2 => {
            facts.sport = u16::from(l4[0]);
            facts.dport = u16::from(l4[1]);
            if (l4[0] == echo.0 || l4[0] == echo.1) && l4.len() >= 8 {
                facts.echo_id = Some(wire::read_u16(l4, 4));
            }
            facts.quoted = quoted_packet(protocol, l4);
        }
        _ => {}
    }
    facts
}

/// The packet an ICMP or ICMPv6 error (`icmp`, from its header on) quotes: its addresses,
/// protocol and ports (or echo identifier), when the error carries enough of it.
fn quoted_packet(protocol: u8, icmp: &[u8]) -> Option<Quoted> {
    let inner = quoted_ip(protocol, icmp)?;
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match inner.first()? >> 4 {
        4 => {
            let header_len = usize::from(inner[0] & 0x0f) * 4;
            let src: [u8; 4] = inner.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = inner.get(16..20)?.try_into().ok()?;
            (
                src.into(),
                dst.into(),
                *inner.get(ipv4::PROTOCOL)?,
                inner.get(header_len..)?,
            )
        }
        6 => {
            let src: [u8; 16] = inner.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = inner.get(24..40)?.try_into().ok()?;
            (
                src.into(),
                dst.into(),
                *inner.get(ipv6::NEXT_HEADER)?,
                inner.get(IPV6_HEADER_LEN..)?,
            )
        }
        _ => return None,
    };
    let ports = (
        wire::read_u16(l4.get(..4)?, 0),
        wire::read_u16(l4.get(..4)?, 2),
    );
    let echo_id = match (proto, l4.first()) {
        (wire::PROTO_ICMP, Some(0 | 8)) | (wire::PROTO_ICMPV6, Some(128 | 129)) => {
            Some(wire::read_u16(l4.get(..8)?, 4))
        }
        _ => None,
    };
    Some(Quoted {
        src,
        dst,
        proto,
        sport: ports.0,
        dport: ports.1,
        echo_id,
    })
}

/// The IP packet an ICMP or ICMPv6 error (`icmp`, from its header on) quotes, from its IP header
/// to the end of the message; `None` for a message that is not an error.
#[inline]
pub(crate) fn quoted_ip(protocol: u8, icmp: &[u8]) -> Option<&[u8]> {
    const ICMP_HEADER_LEN: usize = 8;
    let is_error = match protocol {
        wire::PROTO_ICMP => matches!(icmp.first(), Some(3 | 4 | 5 | 11 | 12)),
        _ => matches!(icmp.first(), Some(1..=4)),
    };
    icmp.get(ICMP_HEADER_LEN..).filter(|_| is_error)
}

/// Checks the UDP or TCP header of a packet whose transport header starts `payload`. `complete`:
/// the packet is not a fragment, so the whole segment must be there.
#[inline]
fn check_l4(protocol: u8, payload: &[u8], complete: bool) -> Decision<()> {
    match protocol {
        wire::PROTO_UDP => {
            if payload.len() < 8 {
                return Err(Verdict::Drop(DropReason::UdpBadLength));
            }
            let udp_len = usize::from(wire::read_u16(payload, 4));
            if udp_len < 8 || (complete && udp_len > payload.len()) {
                return Err(Verdict::Drop(DropReason::UdpBadLength));
            }
        }
        wire::PROTO_TCP => {
            if payload.len() < 20 {
                return Err(Verdict::Drop(DropReason::TcpBadHeader));
            }
            let data_offset = usize::from(payload[12] >> 4) * 4;
            if data_offset < 20 || (complete && data_offset > payload.len()) {
                return Err(Verdict::Drop(DropReason::TcpBadHeader));
            }
        }
        // An ICMP message has at least its 8-byte header (type, code, checksum, and the rest
        // the policy reads, such as the echo identifier).
        wire::PROTO_ICMP | wire::PROTO_ICMPV6 if payload.len() < 8 => {
            return Err(Verdict::Drop(DropReason::IcmpTruncated));
        }
        _ => {}
    }
    Ok(())
}

#[inline]
fn is_ipv4_mapped(addr: Ipv6Addr) -> bool {
    let s = addr.segments();
    s[..5] == [0; 5] && s[5] == 0xffff
}

/// A packet claiming one of the router's own addresses as source is never forwarded (RFC 1812
/// section 5.3.7); then the reverse-path check of RFC 3704: strict, the route back must use the
/// ingress interface; loose, some route back must exist.
#[inline]
fn source_check(mode: RpFilter, ingress: IfIndex, back: Option<&NextHop>) -> Decision<()> {
    let passes = match (mode, back) {
        (_, Some(NextHop::Local { .. })) => return Err(Verdict::Drop(DropReason::MartianSource)),
        (RpFilter::Off, _) => true,
        (_, None) => false,
        (RpFilter::Loose, Some(_)) => true,
        (RpFilter::Strict, Some(next_hop)) => next_hop.iface() == ingress,
    };
    if passes {
        Ok(())
    } else {
        Err(Verdict::Drop(DropReason::ReversePath))
    }
}

#[cfg(test)]
pub(crate) mod tests;
