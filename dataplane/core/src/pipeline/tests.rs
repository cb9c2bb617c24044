//! Verdicts and rewritten bytes of the pipeline on byte-built frames.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use etherparse::{PacketBuilder, SlicedPacket};

use super::*;
use crate::fib::{Fib, FibLimits, StaticRoute};
use crate::iface::tests::iface;
use crate::neigh::{NeighbourManager, NeighbourTable, NeighbourTimers};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 2];
pub const SERVER_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 2];
pub const P0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const P1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// Two ports: p0 (198.18.1.1/24, 2001:2:0:1::1/64) with VLAN 100 (198.18.10.1/24), and p1
/// (198.18.2.1/24, 2001:2:0:2::1/64, MTU 1400). 198.19.0.0/16 and 2001:2:0:ff00::/56 via the
/// server 198.18.2.2 / 2001:2:0:2::2, whose MACs are resolved; so is 198.18.1.2 on p0.
pub struct Lab {
    pub pipeline: Pipeline,
    pub fib: Fib,
    pub manager: NeighbourManager,
    /// The rule set in force, if any.
    pub policy: Option<crate::policy::ActivePolicy>,
    pub overlay: crate::overlay::Overlay,
    pub state: std::cell::RefCell<crate::policy::PolicyState>,
}

impl Lab {
    pub fn new() -> Lab {
        let mut p1 = iface("p1", 1, None, "198.18.2.1/24", "2001:2:0:2::1/64");
        p1.mtu = 1400;
        let mut vlan = iface(
            "p0.100",
            0,
            Some(100),
            "198.18.10.1/24",
            "2001:2:0:10::1/64",
        );
        vlan.mac = P0_MAC;
        let ifaces = Arc::new(
            Interfaces::new(
                2,
                vec![
                    iface("p0", 0, None, "198.18.1.1/24", "2001:2:0:1::1/64"),
                    p1,
                    vlan,
                ],
            )
            .expect("valid"),
        );
        let table = NeighbourTable::new(64);
        let mut manager = NeighbourManager::new(table.clone(), NeighbourTimers::default());
        let routes = [
            StaticRoute {
                prefix: "198.19.0.0/16".parse().expect("p"),
                via: "198.18.2.2".parse().expect("a"),
                iface: None,
            },
            StaticRoute {
                prefix: "2001:2:0:ff00::/56".parse().expect("p"),
                via: "2001:2:0:2::2".parse().expect("a"),
                iface: None,
            },
        ];
        let fib = Fib::build(
            &ifaces,
            &routes,
            &mut manager,
            FibLimits::default(),
            Duration::ZERO,
        )
        .expect("fib");
        let now = Duration::ZERO;
        for (iface, addr, mac) in [
            (1, "198.18.2.2", SERVER_MAC),
            (1, "2001:2:0:2::2", SERVER_MAC),
            (0, "198.18.1.2", CLIENT_MAC),
            (0, "2001:2:0:1::2", CLIENT_MAC),
            (2, "198.18.10.2", CLIENT_MAC),
        ] {
            manager.learned(
                NeighbourKey {
                    iface,
                    addr: addr.parse().expect("a"),
                },
                mac,
                crate::wire::LearnPolicy::Create,
                now,
            );
        }
        manager.publish();
        Lab {
            pipeline: Pipeline::new(ifaces, table, PipelineMode::Route),
            fib,
            manager,
            policy: None,
            overlay: crate::overlay::Overlay::default(),
            state: std::cell::RefCell::new(
                crate::policy::PolicyState::new(crate::policy::PolicyLimits {
                    flows: 1024,
                    max_rules: 64,
                    ..Default::default()
                })
                .expect("state"),
            ),
        }
    }

    /// Runs one frame received on `port` through the pipeline; returns the verdict and the buffer.
    pub fn run(&self, port: PortIndex, frame: &[u8]) -> (Verdict, Vec<u8>) {
        self.run_in(port, frame, 2048)
    }

    /// Runs `frame` in a buffer of `capacity` bytes (at least the frame).
    pub fn run_in(&self, port: PortIndex, frame: &[u8], capacity: usize) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; capacity.max(frame.len())];
        buf[..frame.len()].copy_from_slice(frame);
        let index = self.manager.table().index();
        let view = BurstView {
            fib: &self.fib,
            neighbours: &index,
            policy: self.policy.as_ref(),
            overlay: &self.overlay,
            now: Duration::from_secs(1),
        };
        let verdict = self.pipeline.process(
            &view,
            &mut self.state.borrow_mut(),
            &mut buf,
            frame.len(),
            port,
        );
        (verdict, buf)
    }
}

pub fn udp4(src: [u8; 4], dst: [u8; 4], ttl: u8, payload: usize) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4(src, dst, ttl)
        .udp(1000, 2000)
        .write(&mut out, &vec![0xab; payload])
        .expect("build");
    out
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().expect("addr").octets()
}

pub fn udp6(src: &str, dst: &str, hop_limit: u8, payload: usize) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv6(v6(src), v6(dst), hop_limit)
        .udp(1000, 2000)
        .write(&mut out, &vec![0xab; payload])
        .expect("build");
    out
}

const CLIENT: [u8; 4] = [198, 18, 1, 2];
const REMOTE: [u8; 4] = [198, 19, 0, 1];

fn drop_reason(lab: &Lab, port: PortIndex, frame: &[u8]) -> DropReason {
    match lab.run(port, frame).0 {
        Verdict::Drop(reason) => reason,
        other => panic!("expected a drop, got {other:?}"),
    }
}

fn icmp_error(lab: &Lab, frame: &[u8]) -> (DropReason, ErrorReply) {
    match lab.run(0, frame).0 {
        Verdict::Error {
            reason,
            error,
            iface,
            ip_start,
            ip_len,
        } => {
            assert_eq!(iface, 0);
            assert_eq!(ip_start, 14);
            assert_eq!(ip_len, frame.len() - 14);
            (reason, error)
        }
        other => panic!("expected an ICMP error, got {other:?}"),
    }
}

#[test]
fn forwards_ipv4_with_ttl_checksum_and_macs_rewritten() {
    let lab = Lab::new();
    let frame = udp4(CLIENT, REMOTE, 64, 100);
    let (verdict, out) = lab.run(0, &frame);
    assert_eq!(
        verdict,
        Verdict::Forward {
            port: 1,
            len: frame.len()
        }
    );
    assert_eq!(&out[0..6], &SERVER_MAC);
    assert_eq!(&out[6..12], &P1_MAC);
    let packet = SlicedPacket::from_ethernet(&out[..frame.len()]).expect("parses");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("ipv4")
    };
    assert_eq!(ip.header().ttl(), 63);
    // The incremental update equals a full recomputation.
    assert_eq!(
        ip.header().header_checksum(),
        ip.header().to_header().calc_header_checksum()
    );
    // Everything after the TTL and checksum is untouched.
    assert_eq!(&out[14 + 12..frame.len()], &frame[14 + 12..]);
}

#[test]
fn forwards_ipv6_with_hop_limit_decremented() {
    let lab = Lab::new();
    let frame = udp6("2001:2:0:1::2", "2001:2:0:ff00::1", 64, 100);
    let (verdict, out) = lab.run(0, &frame);
    assert_eq!(
        verdict,
        Verdict::Forward {
            port: 1,
            len: frame.len()
        }
    );
    assert_eq!(&out[0..6], &SERVER_MAC);
    assert_eq!(out[14 + 7], 63);
    assert_eq!(&out[14 + 8..frame.len()], &frame[14 + 8..]);
}

#[test]
fn ethernet_padding_is_not_forwarded() {
    let lab = Lab::new();
    let mut frame = udp4(CLIENT, REMOTE, 64, 2);
    let ip_end = frame.len();
    frame.resize(60, 0);
    assert_eq!(
        lab.run(0, &frame).0,
        Verdict::Forward {
            port: 1,
            len: ip_end
        }
    );
}

#[test]
fn connected_destination_uses_its_own_neighbour() {
    let lab = Lab::new();
    let mut frame = udp4([198, 18, 2, 2], CLIENT, 64, 10);
    frame[0..6].copy_from_slice(&P1_MAC);
    let (verdict, out) = lab.run(1, &frame);
    assert_eq!(
        verdict,
        Verdict::Forward {
            port: 0,
            len: frame.len()
        }
    );
    assert_eq!(&out[0..6], &CLIENT_MAC);
}

#[test]
fn ttl_one_is_time_exceeded() {
    let lab = Lab::new();
    assert_eq!(
        icmp_error(&lab, &udp4(CLIENT, REMOTE, 1, 10)),
        (DropReason::TtlExceeded, ErrorReply::TimeExceeded)
    );
    assert_eq!(
        icmp_error(&lab, &udp4(CLIENT, REMOTE, 0, 10)),
        (DropReason::TtlExceeded, ErrorReply::TimeExceeded)
    );
    assert_eq!(
        icmp_error(&lab, &udp6("2001:2:0:1::2", "2001:2:0:ff00::1", 1, 10)),
        (DropReason::TtlExceeded, ErrorReply::TimeExceeded)
    );
}

#[test]
fn no_route_is_net_unreachable() {
    let lab = Lab::new();
    assert_eq!(
        icmp_error(&lab, &udp4(CLIENT, [198, 18, 200, 1], 64, 10)),
        (DropReason::NoRoute, ErrorReply::NetUnreachable)
    );
    assert_eq!(
        icmp_error(&lab, &udp6("2001:2:0:1::2", "2001:2:0:9::1", 64, 10)),
        (DropReason::NoRoute, ErrorReply::NetUnreachable)
    );
}

#[test]
fn oversize_with_dont_fragment_is_too_big_without_is_to_be_fragmented() {
    let lab = Lab::new();
    let mut frame = udp4(CLIENT, REMOTE, 64, 1500);
    assert_eq!(frame[14 + 6] & 0x40, 0x40, "built with DF");
    assert_eq!(
        icmp_error(&lab, &frame),
        (DropReason::TooBig, ErrorReply::TooBig { mtu: 1400 })
    );
    frame[14 + 6] &= !0x40;
    let header = &mut frame[14..34];
    header[10..12].fill(0);
    let csum = crate::checksum::checksum(header);
    header[10..12].copy_from_slice(&csum.to_be_bytes());
    let (verdict, out) = lab.run(0, &frame);
    assert_eq!(
        verdict,
        Verdict::Fragment {
            port: 1,
            len: frame.len(),
            mtu: 1400,
            waiting_for: None
        }
    );
    assert_eq!(out[14 + 8], 63, "rewritten like any forwarded packet");
    assert_eq!(
        icmp_error(&lab, &udp6("2001:2:0:1::2", "2001:2:0:ff00::1", 64, 1400)),
        (DropReason::TooBig, ErrorReply::TooBig { mtu: 1400 })
    );
}

#[test]
fn reverse_path_strict_loose_off() {
    let mut lab = Lab::new();
    // 198.18.2.77 lives behind p1; arriving on p0 it is spoofed.
    let spoofed = udp4([198, 18, 2, 77], REMOTE, 64, 10);
    assert_eq!(drop_reason(&lab, 0, &spoofed), DropReason::ReversePath);
    // A source with no route back at all.
    let unroutable = udp4([198, 18, 99, 1], REMOTE, 64, 10);
    assert_eq!(drop_reason(&lab, 0, &unroutable), DropReason::ReversePath);
    // Claiming the router's own address is martian whatever the mode.
    let own_source = udp4([198, 18, 1, 1], REMOTE, 64, 10);
    assert_eq!(drop_reason(&lab, 0, &own_source), DropReason::MartianSource);

    let mut ifaces: Vec<Interface> = lab
        .pipeline
        .interfaces()
        .iter()
        .map(|(_, i)| i.clone())
        .collect();
    ifaces[0].rp_filter = RpFilter::Loose;
    lab.pipeline = Pipeline::new(
        Arc::new(Interfaces::new(2, ifaces.clone()).expect("valid")),
        lab.manager.table().clone(),
        PipelineMode::Route,
    );
    assert!(
        matches!(lab.run(0, &spoofed).0, Verdict::Forward { .. }),
        "loose: a route back exists"
    );
    assert_eq!(
        drop_reason(&lab, 0, &unroutable),
        DropReason::ReversePath,
        "loose: no route back"
    );
    ifaces[0].rp_filter = RpFilter::Off;
    lab.pipeline = Pipeline::new(
        Arc::new(Interfaces::new(2, ifaces).expect("valid")),
        lab.manager.table().clone(),
        PipelineMode::Route,
    );
    assert!(
        matches!(lab.run(0, &unroutable).0, Verdict::Forward { .. }),
        "off"
    );
    assert_eq!(
        drop_reason(&lab, 0, &own_source),
        DropReason::MartianSource,
        "off still refuses our own source"
    );
}

#[test]
fn martian_and_link_local_addresses_are_never_forwarded() {
    let lab = Lab::new();
    for (src, dst, reason) in [
        ([127, 0, 0, 1], REMOTE, DropReason::MartianSource),
        ([0, 1, 2, 3], REMOTE, DropReason::MartianSource),
        ([224, 0, 0, 1], REMOTE, DropReason::MartianSource),
        ([240, 0, 0, 1], REMOTE, DropReason::MartianSource),
        (CLIENT, [127, 0, 0, 1], DropReason::MartianDestination),
        (CLIENT, [0, 0, 0, 1], DropReason::MartianDestination),
        (CLIENT, [239, 1, 1, 1], DropReason::MulticastNotRouted),
        (CLIENT, [255, 255, 255, 255], DropReason::MulticastNotRouted),
        ([169, 254, 1, 1], REMOTE, DropReason::LinkLocalNotForwarded),
        (CLIENT, [169, 254, 1, 1], DropReason::LinkLocalNotForwarded),
        (CLIENT, [198, 18, 2, 255], DropReason::DirectedBroadcast),
        (CLIENT, [198, 18, 2, 0], DropReason::DirectedBroadcast),
    ] {
        assert_eq!(
            drop_reason(&lab, 0, &udp4(src, dst, 64, 10)),
            reason,
            "{src:?} -> {dst:?}"
        );
    }
    for (src, dst, reason) in [
        ("::1", "2001:2:0:ff00::1", DropReason::MartianSource),
        ("ff02::1", "2001:2:0:ff00::1", DropReason::MartianSource),
        (
            "::ffff:198.18.1.2",
            "2001:2:0:ff00::1",
            DropReason::MartianSource,
        ),
        ("::", "2001:2:0:ff00::1", DropReason::MartianSource),
        (
            "fe80::2",
            "2001:2:0:ff00::1",
            DropReason::LinkLocalNotForwarded,
        ),
        (
            "2001:2:0:1::2",
            "fe80::9",
            DropReason::LinkLocalNotForwarded,
        ),
        ("2001:2:0:1::2", "::1", DropReason::MartianDestination),
        ("2001:2:0:1::2", "ff05::1", DropReason::MulticastNotRouted),
    ] {
        assert_eq!(
            drop_reason(&lab, 0, &udp6(src, dst, 64, 10)),
            reason,
            "{src} -> {dst}"
        );
    }
}

#[test]
fn malformed_frames_are_dropped_with_their_reason() {
    let lab = Lab::new();
    let good = udp4(CLIENT, REMOTE, 64, 20);
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = good.clone();
        f(&mut frame);
        frame
    };
    let fix_checksum = |frame: &mut Vec<u8>| {
        let ihl = usize::from(frame[14] & 0x0f).max(5) * 4;
        let end = (14 + ihl).min(frame.len());
        frame[24..26].fill(0);
        let csum = crate::checksum::checksum(&frame[14..end]);
        frame[24..26].copy_from_slice(&csum.to_be_bytes());
    };
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..10].to_vec(), DropReason::EthernetTruncated),
        (good[..14 + 12].to_vec(), DropReason::Ipv4Truncated),
        (
            mutate(&|f| {
                f[14] = 0x44;
                fix_checksum(f)
            }),
            DropReason::Ipv4BadHeaderLength,
        ),
        (
            mutate(&|f| {
                f[14] = 0x55;
                fix_checksum(f)
            }),
            DropReason::Ipv4BadVersion,
        ),
        (
            mutate(&|f| {
                f[16..18].copy_from_slice(&2000u16.to_be_bytes());
                fix_checksum(f)
            }),
            DropReason::Ipv4BadTotalLength,
        ),
        (
            mutate(&|f| {
                f[16..18].copy_from_slice(&10u16.to_be_bytes());
                fix_checksum(f)
            }),
            DropReason::Ipv4BadTotalLength,
        ),
        (mutate(&|f| f[24] ^= 0xff), DropReason::Ipv4BadChecksum),
        (
            mutate(&|f| f[38..40].copy_from_slice(&0u16.to_be_bytes())),
            DropReason::UdpBadLength,
        ),
        (
            mutate(&|f| f[38..40].copy_from_slice(&7u16.to_be_bytes())),
            DropReason::UdpBadLength,
        ),
        (
            mutate(&|f| f[38..40].copy_from_slice(&29u16.to_be_bytes())),
            DropReason::UdpBadLength,
        ),
        (
            mutate(&|f| f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes())),
            DropReason::UnsupportedEthertype,
        ),
        (
            mutate(&|f| f[0..6].copy_from_slice(&[0x02, 9, 9, 9, 9, 9])),
            DropReason::NotForUs,
        ),
        (
            mutate(&|f| f[0..6].copy_from_slice(&[0xff; 6])),
            DropReason::MulticastNotRouted,
        ),
    ];
    for (frame, reason) in cases {
        assert_eq!(drop_reason(&lab, 0, &frame), reason);
    }
    let v6 = udp6("2001:2:0:1::2", "2001:2:0:ff00::1", 64, 20);
    assert_eq!(
        drop_reason(&lab, 0, &v6[..14 + 30]),
        DropReason::Ipv6Truncated
    );
    let mut long = v6.clone();
    long[18..20].copy_from_slice(&500u16.to_be_bytes());
    assert_eq!(
        drop_reason(&lab, 0, &long),
        DropReason::Ipv6BadPayloadLength
    );
    let mut bad_version = v6.clone();
    bad_version[14] = 0x40;
    assert_eq!(
        drop_reason(&lab, 0, &bad_version),
        DropReason::Ipv6BadVersion
    );
    let mut udp_zero = v6;
    udp_zero[14 + 44..14 + 46].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(drop_reason(&lab, 0, &udp_zero), DropReason::UdpBadLength);

    let mut tcp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4(CLIENT, REMOTE, 64)
        .tcp(1, 2, 3, 4)
        .write(&mut tcp, &[])
        .expect("build");
    assert!(matches!(lab.run(0, &tcp).0, Verdict::Forward { .. }));
    tcp[14 + 20 + 12] = 0x40; // data offset 4 words
    assert_eq!(drop_reason(&lab, 0, &tcp), DropReason::TcpBadHeader);
}

#[test]
fn never_panics_on_any_prefix_of_a_frame() {
    let lab = Lab::new();
    for frame in [
        udp4(CLIENT, REMOTE, 64, 40),
        udp6("2001:2:0:1::2", "2001:2:0:ff00::1", 64, 40),
    ] {
        for len in 0..=frame.len() {
            let _ = lab.run(0, &frame[..len]);
        }
    }
}

/// Frames that get past the Ethernet layer: to the port's MAC, with an EtherType the pipeline
/// reads (sometimes behind a VLAN tag), the IP version nibble mostly right and the IPv4 header
/// checksum mostly valid, so that the fuzzing reaches the IP and transport checks.
fn plausible_frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    (
        prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100]),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..160),
        any::<bool>(),
    )
        .prop_map(|(ethertype, tagged_vlan_100, mut payload, fix)| {
            let mut frame = P0_MAC.to_vec();
            frame.extend_from_slice(&CLIENT_MAC);
            if tagged_vlan_100 {
                frame.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
            }
            frame.extend_from_slice(&ethertype.to_be_bytes());
            if fix && !payload.is_empty() {
                let is_ipv6 = ethertype == 0x86dd;
                payload[0] = if is_ipv6 {
                    0x60 | (payload[0] & 0x0f)
                } else {
                    0x45
                };
                if !is_ipv6 && payload.len() >= 20 {
                    payload[10..12].fill(0);
                    let csum = crate::checksum::checksum(&payload[..20]);
                    payload[10..12].copy_from_slice(&csum.to_be_bytes());
                }
            }
            frame.extend_from_slice(&payload);
            frame
        })
}

proptest::proptest! {
    #[test]
    fn never_panics_on_random_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let lab = Lab::new();
        let mut frame = bytes;
        if frame.len() >= 14 {
            frame[0..6].copy_from_slice(&P0_MAC);
        }
        let _ = lab.run(0, &frame);
    }

    /// Whatever the frame, the verdict's lengths stay inside the buffer, also when the buffer is
    /// exactly the frame (no room for a VLAN tag to be added).
    #[test]
    fn never_panics_and_stays_in_bounds_on_plausible_frames(frame in plausible_frame(), exact in proptest::prelude::any::<bool>()) {
        let lab = Lab::new();
        let capacity = if exact { frame.len() } else { 2048 };
        for port in [0, 1] {
            let (verdict, buf) = lab.run_in(port, &frame, capacity);
            match verdict {
                Verdict::Forward { len, .. } | Verdict::AwaitNeighbour { len, .. } | Verdict::Fragment { len, .. } => {
                    proptest::prop_assert!(len <= buf.len());
                }
                Verdict::ToHost { start, len, .. } => proptest::prop_assert!(start + len <= buf.len()),
                Verdict::Error { ip_start, ip_len, .. } => proptest::prop_assert!(ip_start + ip_len <= buf.len()),
                Verdict::Drop(_) => {}
            }
        }
    }
}

#[test]
fn no_room_for_an_egress_tag_is_a_counted_drop() {
    let lab = Lab::new();
    let mut reply = udp4(REMOTE, [198, 18, 10, 2], 64, 30);
    reply[0..6].copy_from_slice(&P1_MAC);
    assert_eq!(
        lab.run_in(1, &reply, reply.len()).0,
        Verdict::Drop(DropReason::TooBig)
    );
}

fn tagged(vlan: u16, inner: &[u8]) -> Vec<u8> {
    let mut frame = inner[..12].to_vec();
    frame.extend_from_slice(&[0x81, 0x00]);
    frame.extend_from_slice(&vlan.to_be_bytes());
    frame.extend_from_slice(&inner[12..]);
    frame
}

#[test]
fn vlan_ingress_is_untagged_on_egress_and_back() {
    let lab = Lab::new();
    let inner = udp4([198, 18, 10, 2], REMOTE, 64, 30);
    let frame = tagged(100, &inner);
    let (verdict, out) = lab.run(0, &frame);
    assert_eq!(
        verdict,
        Verdict::Forward {
            port: 1,
            len: inner.len()
        }
    );
    assert_eq!(&out[12..14], &[0x08, 0x00], "tag removed");
    assert_eq!(&out[14 + 12..inner.len()], &inner[14 + 12..]);

    // From the server to a host on VLAN 100: the tag is added.
    let mut reply = udp4(REMOTE, [198, 18, 10, 2], 64, 30);
    reply[0..6].copy_from_slice(&P1_MAC);
    let (verdict, out) = lab.run(1, &reply);
    assert_eq!(
        verdict,
        Verdict::Forward {
            port: 0,
            len: reply.len() + 4
        }
    );
    assert_eq!(&out[0..6], &CLIENT_MAC);
    assert_eq!(&out[6..12], &P0_MAC);
    assert_eq!(&out[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
    assert_eq!(out[18 + 8], 63);
    assert_eq!(&out[18 + 12..reply.len() + 4], &reply[14 + 12..]);
}

#[test]
fn unknown_vlan_and_stacked_tags_are_dropped() {
    let lab = Lab::new();
    let inner = udp4([198, 18, 10, 2], REMOTE, 64, 30);
    assert_eq!(
        drop_reason(&lab, 0, &tagged(101, &inner)),
        DropReason::UnknownVlan
    );
    let mut to_p1 = tagged(100, &inner);
    to_p1[0..6].copy_from_slice(&P1_MAC);
    assert_eq!(
        drop_reason(&lab, 1, &to_p1),
        DropReason::UnknownVlan,
        "VLAN 100 exists on p0 only"
    );
    assert_eq!(
        drop_reason(&lab, 0, &tagged(100, &tagged(100, &inner))),
        DropReason::StackedVlan
    );
    let mut qinq = tagged(100, &inner);
    qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
    assert_eq!(drop_reason(&lab, 0, &qinq), DropReason::StackedVlan);
}

#[test]
fn arp_ping_and_neighbour_discovery_go_to_the_host_stack() {
    let lab = Lab::new();
    let mut arp = vec![0u8; 42];
    crate::wire::write_arp_request(
        &mut arp,
        CLIENT_MAC,
        None,
        [198, 18, 1, 2].into(),
        [198, 18, 1, 1].into(),
        None,
    );
    assert_eq!(
        lab.run(0, &arp).0,
        Verdict::ToHost {
            iface: 0,
            start: 0,
            len: 42
        }
    );

    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4(CLIENT, [198, 18, 1, 1], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, &[1, 2, 3])
        .expect("build");
    assert_eq!(
        lab.run(0, &ping).0,
        Verdict::ToHost {
            iface: 0,
            start: 0,
            len: ping.len()
        }
    );
    // The router's address on another interface is the router's too.
    let mut other = ping.clone();
    other[30..34].copy_from_slice(&[198, 18, 2, 1]);
    let mut header = other[14..34].to_vec();
    header[10..12].fill(0);
    let csum = crate::checksum::checksum(&header);
    other[24..26].copy_from_slice(&csum.to_be_bytes());
    assert!(matches!(
        lab.run(0, &other).0,
        Verdict::ToHost { iface: 0, .. }
    ));

    let mut ns = vec![0u8; 86];
    let len = crate::wire::write_neighbour_solicitation(
        &mut ns,
        CLIENT_MAC,
        None,
        "2001:2:0:1::2".parse().expect("a"),
        "2001:2:0:1::1".parse().expect("a"),
        None,
    );
    assert_eq!(
        lab.run(0, &ns[..len]).0,
        Verdict::ToHost {
            iface: 0,
            start: 0,
            len
        }
    );

    // A tagged frame reaches the host stack untagged.
    let tagged_arp = tagged(100, &arp);
    let (verdict, out) = lab.run(0, &tagged_arp);
    assert_eq!(
        verdict,
        Verdict::ToHost {
            iface: 2,
            start: 4,
            len: 42
        }
    );
    assert_eq!(&out[4..4 + 42], &arp[..]);
}

#[test]
fn unresolved_next_hop_waits_and_failed_one_is_unreachable() {
    let mut lab = Lab::new();
    let frame = udp4(CLIENT, [198, 18, 2, 50], 64, 10);
    let key = NeighbourKey {
        iface: 1,
        addr: IpAddr::from([198, 18, 2, 50]),
    };
    let (verdict, out) = lab.run(0, &frame);
    assert_eq!(
        verdict,
        Verdict::AwaitNeighbour {
            port: 1,
            len: frame.len(),
            key
        }
    );
    assert_eq!(
        &out[6..12],
        &P1_MAC,
        "rewritten but for the destination MAC"
    );
    assert_eq!(out[14 + 8], 63);

    lab.manager.resolve(key, Duration::ZERO).expect("room");
    let (mut solicit, mut changes) = (Vec::new(), Vec::new());
    for s in 0..=3 {
        lab.manager
            .poll(Duration::from_secs(s), &mut solicit, &mut changes);
    }
    lab.manager.publish();
    assert_eq!(
        icmp_error(&lab, &frame),
        (DropReason::NeighbourFailed, ErrorReply::HostUnreachable)
    );
}

/// The lab's interfaces and neighbours with the pipeline in replay mode.
fn replay_lab() -> Lab {
    let mut lab = Lab::new();
    lab.pipeline = Pipeline::new(
        lab.pipeline.interfaces().clone(),
        lab.manager.table().clone(),
        PipelineMode::Replay,
    );
    lab
}

#[test]
fn replay_mode_counts_any_parsed_ip_packet_and_sends_it_back_unchanged() {
    let lab = replay_lab();
    let foreign = |mut frame: Vec<u8>| {
        frame[0..6].copy_from_slice(&[0x02, 9, 9, 9, 9, 9]);
        frame
    };
    let mut padded = udp4([10, 0, 0, 9], [10, 0, 0, 10], 64, 2);
    padded.resize(60, 0);
    // Each would be dropped, answered or kept by a router; each is a flow of its own here.
    let frames = [
        foreign(udp4([10, 0, 0, 1], [10, 0, 0, 2], 64, 10)),
        tagged(101, &udp4([10, 0, 0, 1], [10, 0, 0, 3], 64, 10)),
        udp4([10, 0, 0, 1], [10, 0, 0, 4], 1, 10),
        udp4([0, 0, 0, 0], [255, 255, 255, 255], 64, 10),
        udp4(CLIENT, [224, 0, 0, 251], 64, 10),
        udp4(CLIENT, [198, 18, 1, 1], 64, 10),
        udp4([127, 0, 0, 1], [169, 254, 0, 1], 64, 10),
        padded,
        foreign(udp6("fe80::1", "ff02::fb", 1, 10)),
        udp6("2001:db8::1", "2001:2:0:1::1", 64, 10),
    ];
    for (count, frame) in frames.iter().enumerate() {
        for port in [0, 1] {
            let (verdict, out) = lab.run(port, frame);
            assert_eq!(
                verdict,
                Verdict::Forward {
                    port,
                    len: frame.len()
                },
                "frame {count} on port {port}"
            );
            assert_eq!(&out[..frame.len()], &frame[..], "frame {count} unchanged");
        }
        assert_eq!(lab.state.borrow().flow_count(), count + 1);
    }
}

#[test]
fn replay_mode_counts_nothing_the_parser_refuses() {
    let lab = replay_lab();
    let mut bad_checksum = udp4(CLIENT, REMOTE, 64, 20);
    bad_checksum[24] ^= 0xff;
    let mut short_udp = udp4(CLIENT, REMOTE, 64, 20);
    short_udp[38..40].copy_from_slice(&7u16.to_be_bytes());
    let mut arp_frame = udp4(CLIENT, REMOTE, 64, 20);
    arp_frame[12..14].copy_from_slice(&[0x08, 0x06]);
    let good = udp4(CLIENT, REMOTE, 64, 20);
    let cases = [
        (good[..10].to_vec(), DropReason::EthernetTruncated),
        (tagged(100, &tagged(100, &good)), DropReason::StackedVlan),
        (arp_frame, DropReason::UnsupportedEthertype),
        (good[..14 + 12].to_vec(), DropReason::Ipv4Truncated),
        (bad_checksum, DropReason::Ipv4BadChecksum),
        (short_udp, DropReason::UdpBadLength),
        (
            udp6("2001:db8::1", "2001:db8::2", 64, 20)[..14 + 30].to_vec(),
            DropReason::Ipv6Truncated,
        ),
    ];
    for (frame, reason) in cases {
        assert_eq!(drop_reason(&lab, 0, &frame), reason);
    }
    assert_eq!(lab.state.borrow().flow_count(), 0);
}
