//! Mirror sessions on the whole router in memory: what a mirror rule selects is copied, as
//! received and as sent, in ERSPAN II or GRE to a remote analyzer or out of a port as it is;
//! sampling and the rate cap hold; copies that cannot go are counted and never hold up
//! forwarding.

mod common;

use common::*;
use vfn_dataplane::io::PacketIo;
use vfn_dataplane::mirror::{
    CopyLost, MirrorDestination, MirrorDirection, MirrorSession, PROTO_GRE, Tunnel,
};
use vfn_dataplane::overlay::{DynamicAction, OverlayError};
use vfn_rules::{Action, AddressMatch, DefaultAction, PortRange, Protocol, RuleSetSpec, RuleSpec};

/// The analyzer, behind the gateway on p1.
const ANALYZER: [u8; 4] = [198, 19, 9, 9];

fn tunnel_session(tunnel: Tunnel, direction: MirrorDirection) -> MirrorSession {
    MirrorSession {
        name: "ids".into(),
        direction,
        destination: MirrorDestination::Remote {
            tunnel,
            source: "198.18.2.1".parse().expect("a"),
            remote: ANALYZER.into(),
        },
        snap_length: 0,
        sample_every: 1,
        packets_per_second: 0,
        queue: 64,
    }
}

/// UDP to port 7000 is mirrored to session "ids" and allowed; everything else allowed.
fn mirror_udp_7000() -> RuleSetSpec {
    RuleSetSpec {
        version: "mirror".into(),
        default_action: DefaultAction::Allow,
        rules: vec![RuleSpec {
            destination: AddressMatch {
                prefixes: vec!["198.19.0.0/16".parse().expect("p")],
                ..AddressMatch::default()
            },
            protocol: Some(Protocol::Udp),
            destination_ports: vec![PortRange::single(7000)],
            ..RuleSpec::new(
                "watch",
                Action::Mirror {
                    session: "ids".into(),
                    then_allow: true,
                },
            )
        }],
        ..RuleSetSpec::default()
    }
}

fn mirroring_bench(session: MirrorSession) -> Bench {
    let mut bench = Bench::with_mirror_sessions(vec![session]);
    client_resolves_router(&mut bench);
    publish(&mut bench.router, &mirror_udp_7000());
    bench
}

/// The frames among `sent` that are GRE to the analyzer, and the others.
fn split_copies(sent: Vec<Vec<u8>>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    sent.into_iter()
        .partition(|f| f.len() > 34 && f[23] == PROTO_GRE && f[30..34] == ANALYZER)
}

/// The frame an ERSPAN II copy carries, and its session id and sequence number.
fn erspan_inner(copy: &[u8]) -> (&[u8], u16, u32) {
    let gre = &copy[34..];
    assert_eq!(
        &gre[..4],
        &[0x10, 0, 0x88, 0xbe],
        "GRE with a sequence, ERSPAN II"
    );
    let sequence = u32::from_be_bytes(gre[4..8].try_into().expect("4 bytes"));
    let session = u16::from_be_bytes([gre[10], gre[11]]) & 0x3ff;
    (&gre[16..], session, sequence)
}

#[test]
fn a_mirror_rule_copies_frames_as_received_and_as_sent_in_erspan() {
    let mut bench = mirroring_bench(tunnel_session(
        Tunnel::ErspanII { session_id: 5 },
        MirrorDirection::Both,
    ));
    let request = udp(CLIENT, SERVER, 40_000, 7000);
    let [_, out1] = bench.exchange(0, &request);
    let (copies, forwarded) = split_copies(out1);
    assert_eq!(forwarded.len(), 1, "the request itself");
    assert_eq!(copies.len(), 2, "as received and as sent");
    let (received, session, first_sequence) = erspan_inner(&copies[0]);
    assert_eq!(received, &request[..], "as received, byte for byte");
    assert_eq!(session, 5);
    let (sent, _, second_sequence) = erspan_inner(&copies[1]);
    assert_eq!(sent, &forwarded[0][..], "as sent, byte for byte");
    assert_eq!(second_sequence, first_sequence + 1);
    // The copy is a packet of the router's, to the analyzer through the gateway.
    assert_eq!(&copies[0][0..6], &SERVER_MAC, "to the gateway");
    assert_eq!(&copies[0][6..12], &P1_MAC);
    assert_eq!(
        &copies[0][26..30],
        &[198, 18, 2, 1],
        "from the session's source"
    );

    // The reply belongs to the mirrored flow.
    let reply = udp(SERVER, CLIENT, 7000, 40_000);
    let [out0, out1] = bench.exchange(1, &reply);
    assert_eq!(out0.len(), 1, "the reply itself");
    let (copies, _) = split_copies(out1);
    assert_eq!(copies.len(), 2);
    assert_eq!(erspan_inner(&copies[0]).0, &reply[..]);
    assert_eq!(erspan_inner(&copies[1]).0, &out0[0][..]);

    // Traffic no mirror rule selects is not copied.
    let [_, out1] = bench.exchange(0, &udp(CLIENT, SERVER, 40_000, 7001));
    assert_eq!(split_copies(out1).0.len(), 0);
    let counters = &bench.router.mirror_counters()[0].sessions[0];
    assert_eq!((counters.selected.get(), counters.copies.get()), (2, 4));
    bench.assert_balanced();
}

#[test]
fn gre_carries_the_frame_cut_to_the_snap_length() {
    let mut session = tunnel_session(Tunnel::Gre, MirrorDirection::Received);
    session.snap_length = 64;
    let mut bench = mirroring_bench(session);
    let mut big = udp(CLIENT, SERVER, 40_000, 7000);
    big.extend_from_slice(&[0x33; 200]);
    // Lengths of the IP and UDP headers grown to match the longer payload.
    let ip_len = (big.len() - 14) as u16;
    big[16..18].copy_from_slice(&ip_len.to_be_bytes());
    big[24..26].copy_from_slice(&[0, 0]);
    let checksum = vfn_dataplane::checksum::checksum(&big[14..34]);
    big[24..26].copy_from_slice(&checksum.to_be_bytes());
    big[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    big[40..42].copy_from_slice(&[0, 0]);
    let [_, out1] = bench.exchange(0, &big);
    let (copies, forwarded) = split_copies(out1);
    assert_eq!(forwarded.len(), 1, "forwarded whole");
    assert_eq!(copies.len(), 1, "as received only");
    assert_eq!(
        &copies[0][34..38],
        &[0, 0, 0x65, 0x58],
        "GRE carrying Ethernet"
    );
    assert_eq!(&copies[0][38..], &big[..64], "the first 64 bytes");
}

#[test]
fn every_nth_packet_is_copied_and_the_rate_cap_holds() {
    let mut session = tunnel_session(Tunnel::Gre, MirrorDirection::Received);
    session.sample_every = 10;
    let mut bench = mirroring_bench(session);
    let mut copies = 0;
    for sport in 0..100u16 {
        let [_, out1] = bench.exchange(0, &udp(CLIENT, SERVER, 40_000 + sport, 7000));
        copies += split_copies(out1).0.len();
    }
    assert_eq!(copies, 10, "one of every 10");

    // A cap of 50 per second: a burst of 5, then nothing more at the same instant.
    let mut session = tunnel_session(Tunnel::Gre, MirrorDirection::Received);
    session.packets_per_second = 50;
    let mut bench = mirroring_bench(session);
    let mut copies = 0;
    for sport in 0..100u16 {
        let [_, out1] = bench.exchange(0, &udp(CLIENT, SERVER, 40_000 + sport, 7000));
        copies += split_copies(out1).0.len();
    }
    assert_eq!(copies, 5, "the burst");
    let counters = &bench.router.mirror_counters()[0].sessions[0];
    assert_eq!(counters.lost[CopyLost::RateLimited as usize].get(), 95);
    // A second later, 50 more tokens (at most the burst of 5).
    bench.now += std::time::Duration::from_secs(1);
    let [_, out1] = bench.exchange(0, &udp(CLIENT, SERVER, 50_000, 7000));
    assert_eq!(split_copies(out1).0.len(), 1);
    bench.assert_balanced();
}

#[test]
fn copies_to_a_port_leave_it_as_they_are() {
    let session = MirrorSession {
        destination: MirrorDestination::Port(0),
        ..tunnel_session(Tunnel::Gre, MirrorDirection::Sent)
    };
    let mut bench = mirroring_bench(session);
    let [out0, out1] = bench.exchange(0, &udp(CLIENT, SERVER, 40_000, 7000));
    assert_eq!(out1.len(), 1, "forwarded");
    assert_eq!(out0, out1, "the frame as sent, out of p0 too");
}

#[test]
fn an_unreachable_analyzer_loses_copies_and_forwarding_goes_on() {
    let session = MirrorSession {
        destination: MirrorDestination::Remote {
            tunnel: Tunnel::Gre,
            source: "198.18.2.1".parse().expect("a"),
            // On p1's subnet, never answering ARP.
            remote: "198.18.2.77".parse().expect("a"),
        },
        ..tunnel_session(Tunnel::Gre, MirrorDirection::Received)
    };
    let mut bench = mirroring_bench(session);
    for sport in 0..20u16 {
        let [_, out1] = bench.exchange(0, &udp(CLIENT, SERVER, 40_000 + sport, 7000));
        let forwarded = out1.iter().filter(|f| f.len() > 34 && f[23] == 17).count();
        assert_eq!(forwarded, 1, "packet {sport} forwarded");
    }
    let counters = &bench.router.mirror_counters()[0].sessions[0];
    assert_eq!(counters.copies.get(), 0);
    assert_eq!(counters.lost[CopyLost::Unresolved as usize].get(), 20);
    bench.assert_balanced();
    assert_eq!(bench.worker.io().accounting().parked, 0);
}

#[test]
fn a_dynamic_entry_mirrors_its_host_for_its_time_to_live() {
    let mut bench = mirroring_bench(tunnel_session(Tunnel::Gre, MirrorDirection::Received));
    let now = bench.now;
    bench
        .router
        .overlay
        .add(
            std::net::IpAddr::from(CLIENT),
            DynamicAction::Mirror {
                session: "ids".into(),
            },
            std::time::Duration::from_secs(2),
            "test".into(),
            now,
        )
        .expect("a known session");
    // Port 7001: no rule mirrors it; the entry does, both ways.
    let [_, out1] = bench.exchange(0, &udp(CLIENT, SERVER, 40_000, 7001));
    assert_eq!(split_copies(out1).0.len(), 1, "from the host");
    let [out0, out1] = bench.exchange(1, &udp(SERVER, CLIENT, 7001, 40_000));
    assert_eq!(out0.len(), 1, "the reply forwarded");
    assert_eq!(split_copies(out1).0.len(), 1, "to the host");
    // Past its time to live, nothing is copied, even before the entry is pruned.
    bench.now = now + std::time::Duration::from_secs(2);
    let [_, out1] = bench.exchange(0, &udp(CLIENT, SERVER, 40_001, 7001));
    assert_eq!(split_copies(out1).0.len(), 0);
    assert_eq!(
        bench.router.overlay.add(
            std::net::IpAddr::from(CLIENT),
            DynamicAction::Mirror {
                session: "nobody".into(),
            },
            std::time::Duration::from_secs(2),
            "test".into(),
            now,
        ),
        Err(OverlayError::UnknownSession("nobody".into()))
    );
}

#[test]
fn a_slow_analyzer_loses_copies_and_forwarding_goes_on() {
    // The analyzer's port (p0 here) never takes its frames: its share of the pool fills.
    let session = MirrorSession {
        destination: MirrorDestination::Port(0),
        ..tunnel_session(Tunnel::Gre, MirrorDirection::Received)
    };
    let mut bench = mirroring_bench(session);
    let mut forwarded = 0;
    for sport in 0..300u16 {
        bench
            .worker
            .io_mut()
            .inject(0, &udp(CLIENT, SERVER, 40_000 + sport, 7000))
            .expect("room");
        bench.worker.poll_once(bench.now);
        forwarded += bench.worker.io_mut().take_sent(1).len();
    }
    assert_eq!(forwarded, 300, "every packet forwarded");
    let counters = &bench.router.mirror_counters()[0].sessions[0];
    let lost = counters.lost[CopyLost::TransmitRingFull as usize].get();
    assert!(lost > 0, "the port's share filled");
    assert_eq!(counters.copies.get() + lost, 300);
    let accounting = bench.worker.io().accounting();
    assert!(accounting.is_balanced(), "{accounting:?}");
    assert_eq!(
        accounting.in_hand, 0,
        "lost copies' frames went back: {accounting:?}"
    );
}
