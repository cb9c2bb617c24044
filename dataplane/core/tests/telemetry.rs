//! Flow telemetry on the whole router in memory: features of hand-made flows with known timings
//! and sizes, the end of TCP connections, idle and active record timeouts, the export queue when
//! it is full, a flood of new flows, keying of ICMP, tracking without a rule set, and the
//! snapshots of young flows for the anomaly scorer.

mod common;

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use etherparse::{IcmpEchoHeader, Icmpv4Type, PacketBuilder};
use vfn_dataplane::checksum;
use vfn_dataplane::policy::PolicyLimits;
use vfn_dataplane::telemetry::{
    EndReason, FeatureSnapshot, FlowExportRecord, RecordTimeouts, RunningStats, ScoringFeed,
    SnapshotTrigger, TcpState, TelemetryConfig,
};
use vfn_rules::{Action, AddressMatch, DefaultAction, PortRange, Protocol, RuleSetSpec, RuleSpec};

const CLIENT: [u8; 4] = [198, 18, 1, 2];
const SERVER: [u8; 4] = [198, 19, 0, 1];
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;

/// Policy limits with telemetry's record `timeouts` and an expiry budget that catches up in one
/// loop iteration (the tests jump in time).
fn limits(timeouts: RecordTimeouts, queue_capacity: usize) -> PolicyLimits {
    PolicyLimits {
        expiry_budget: 1_000_000,
        telemetry: TelemetryConfig {
            timeouts,
            queue_capacity,
            ..TelemetryConfig::default()
        },
        ..small_policy_limits(1024)
    }
}

/// A bench with telemetry's defaults whose client the router has resolved, so that replies go
/// out at once.
fn bench_with(limits: PolicyLimits) -> Bench {
    let mut bench = Bench::with_policy_limits(limits);
    client_resolves_router(&mut bench);
    bench
}

fn macs(from_client: bool) -> ([u8; 6], [u8; 6], [u8; 4], [u8; 4]) {
    if from_client {
        (CLIENT_MAC, P0_MAC, CLIENT, SERVER)
    } else {
        (SERVER_MAC, P1_MAC, SERVER, CLIENT)
    }
}

/// A UDP packet between the client's port 5000 and the server's port 53 with `payload` bytes:
/// its IP length is 28 + `payload`.
fn udp(from_client: bool, sport: u16, payload: usize) -> Vec<u8> {
    let (src_mac, dst_mac, src, dst) = macs(from_client);
    let (sport, dport) = if from_client {
        (sport, 53)
    } else {
        (53, sport)
    };
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut frame, &vec![0x5a; payload])
        .expect("build");
    frame
}

/// A TCP segment between the client's port `sport` and the server's port 80 with `flags`,
/// `window` and `payload` bytes: its IP length is 40 + `payload`.
fn tcp(from_client: bool, sport: u16, flags: u8, window: u16, payload: usize) -> Vec<u8> {
    let (src_mac, dst_mac, src, dst) = macs(from_client);
    let (sport, dport) = if from_client {
        (sport, 80)
    } else {
        (80, sport)
    };
    let mut builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, window);
    if flags & FIN != 0 {
        builder = builder.fin();
    }
    if flags & SYN != 0 {
        builder = builder.syn();
    }
    if flags & RST != 0 {
        builder = builder.rst();
    }
    if flags & PSH != 0 {
        builder = builder.psh();
    }
    if flags & ACK != 0 {
        builder = builder.ack(1);
    }
    let mut frame = Vec::new();
    builder
        .write(&mut frame, &vec![0x11; payload])
        .expect("build");
    frame
}

/// Sends `frame` at `offset` after `start` into the port its source sits behind; true when it
/// left through the other.
fn send_at(bench: &mut Bench, start: Duration, offset_ns: u64, frame: &[u8]) -> bool {
    bench.now = start + Duration::from_nanos(offset_ns);
    let ingress = if frame[6..12] == CLIENT_MAC { 0 } else { 1 };
    let out = bench.exchange(ingress, frame);
    !out[1 - ingress as usize].is_empty()
}

/// The client's TCP handshake with the server from port 40000, a millisecond apart from `start`;
/// every segment passes.
fn handshake(bench: &mut Bench, start: Duration) {
    for (offset, from_client, flags) in
        [(0, true, SYN), (MS, false, SYN | ACK), (2 * MS, true, ACK)]
    {
        assert!(
            send_at(
                bench,
                start,
                offset,
                &tcp(from_client, 40000, flags, 1000, 0)
            ),
            "handshake segment at {offset} ns"
        );
    }
}

/// One loop iteration at `start + offset_ns`: expiry catches up.
fn expire_at(bench: &mut Bench, start: Duration, offset_ns: u64) {
    bench.now = start + Duration::from_nanos(offset_ns);
    bench.worker.poll_once(bench.now);
}

fn records(bench: &Bench) -> Vec<FlowExportRecord> {
    bench.router.flow_exports().try_iter().collect()
}

fn nanos(at: Duration) -> u64 {
    u64::try_from(at.as_nanos()).expect("in range")
}

/// Deny by default; allow the client's TCP to port 80 (rule 0) and UDP to port 53 (rule 1).
fn allow_web_and_dns() -> RuleSetSpec {
    let to_server = |id: &str, protocol, port| RuleSpec {
        source: AddressMatch {
            prefixes: vec!["198.18.1.0/24".parse().expect("p")],
            ..AddressMatch::default()
        },
        protocol: Some(protocol),
        destination_ports: vec![PortRange::single(port)],
        ..RuleSpec::new(id, Action::Allow)
    };
    RuleSetSpec {
        version: "web-and-dns".into(),
        default_action: DefaultAction::Deny,
        rules: vec![
            to_server("web", Protocol::Tcp, 80),
            to_server("dns", Protocol::Udp, 53),
        ],
        ..RuleSetSpec::default()
    }
}

/// The statistics of `values` computed the plain way (two passes, sample variance), against
/// which the running ones are checked.
fn assert_stats(stats: &RunningStats, values: &[u64], what: &str) {
    let count = values.len() as f64;
    let mean = values.iter().sum::<u64>() as f64 / count.max(1.0);
    let squares: f64 = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
    let std_dev = if values.len() < 2 {
        0.0
    } else {
        (squares / (count - 1.0)).sqrt()
    };
    let min = values.iter().copied().min().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    assert_eq!(
        (stats.count(), stats.min(), stats.max()),
        (values.len() as u64, min, max),
        "{what}: count, min, max"
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(
        close(stats.mean(), mean),
        "{what}: mean {} != {mean}",
        stats.mean()
    );
    assert!(
        close(stats.std_dev(), std_dev),
        "{what}: std {} != {std_dev}",
        stats.std_dev()
    );
}

#[test]
fn features_of_a_hand_made_udp_flow_without_rules() {
    let mut bench = bench_with(limits(RecordTimeouts::default(), 64));
    let start = bench.now;
    // (time, from the client, UDP payload): IP lengths 38, 48, 58, 78, 128, 28. The gap before
    // 7 s is longer than the activity timeout (5 s): two active periods, one idle period.
    let packets: [(u64, bool, usize); 6] = [
        (0, true, 10),
        (10 * MS, false, 20),
        (30 * MS, true, 30),
        (60 * MS, true, 50),
        (7_000 * MS, false, 100),
        (7_500 * MS, true, 0),
    ];
    for &(at, from_client, payload) in &packets {
        assert!(send_at(
            &mut bench,
            start,
            at,
            &udp(from_client, 5000, payload)
        ));
    }
    assert!(records(&bench).is_empty(), "no record before a timeout");
    assert_eq!(bench.worker.flow_count(), 1);
    // The UDP flow and its record both time out 60 s after the last packet.
    expire_at(&mut bench, start, 7_500 * MS + 60 * SECOND - 1);
    assert!(records(&bench).is_empty());
    expire_at(&mut bench, start, 7_500 * MS + 60 * SECOND);
    let records = records(&bench);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    let interfaces = &bench.router.interfaces;
    assert_eq!(
        (
            record.src,
            record.dst,
            record.sport,
            record.dport,
            record.proto
        ),
        (IpAddr::from(CLIENT), IpAddr::from(SERVER), 5000, 53, 17)
    );
    assert_eq!(
        (Some(record.ingress), Some(record.egress)),
        (interfaces.by_name("p0"), interfaces.by_name("p1"))
    );
    assert_eq!(
        (
            record.end_reason,
            record.generation,
            record.rule,
            record.tcp,
            record.worker
        ),
        (EndReason::IdleTimeout, 0, None, TcpState::None, 0)
    );
    let stats = &record.stats;
    let start_ns = nanos(start);
    assert_eq!(
        (record.flow_start_ns, stats.first_ns(), stats.last_ns()),
        (start_ns, start_ns, start_ns + 7_500 * MS)
    );
    let (forward, reverse) = (stats.forward(), stats.reverse());
    assert_eq!((forward.packets(), forward.bytes()), (4, 202));
    assert_eq!((reverse.packets(), reverse.bytes()), (2, 176));
    assert_stats(forward.lengths(), &[38, 58, 78, 28], "forward lengths");
    assert_eq!(forward.lengths().mean(), 50.5);
    assert!((forward.lengths().std_dev() - (1475.0f64 / 3.0).sqrt()).abs() < 1e-9);
    assert_stats(reverse.lengths(), &[48, 128], "reverse lengths");
    assert_stats(
        forward.inter_arrival(),
        &[30 * MS, 30 * MS, 7_440 * MS],
        "forward gaps",
    );
    assert_stats(reverse.inter_arrival(), &[6_990 * MS], "reverse gaps");
    assert_stats(
        stats.inter_arrival(),
        &[10 * MS, 20 * MS, 30 * MS, 6_940 * MS, 500 * MS],
        "gaps",
    );
    assert_stats(&stats.active_periods(), &[60 * MS, 500 * MS], "active");
    assert_stats(stats.idle_periods(), &[6_940 * MS], "idle");
    assert_eq!(
        (forward.initial_window(), stats.flags().header_byte()),
        (None, 0)
    );
    assert_eq!(bench.worker.flow_count(), 0);
    bench.assert_balanced();
}

#[test]
fn a_tcp_flow_under_rules_ends_with_its_last_ack_and_names_its_rule() {
    let mut bench = bench_with(limits(RecordTimeouts::default(), 64));
    let generation = publish(&mut bench.router, &allow_web_and_dns());
    let start = bench.now;
    let segments: [(bool, u8, u16, usize); 9] = [
        (true, SYN, 64_240, 0),
        (false, SYN | ACK, 65_160, 0),
        (true, ACK, 502, 0),
        (true, PSH | ACK, 502, 100),
        (false, ACK, 509, 0),
        (true, FIN | ACK, 502, 0),
        (false, ACK, 509, 0),
        (false, FIN | ACK, 509, 0),
        (true, ACK, 502, 0),
    ];
    for (index, &(from_client, flags, window, payload)) in segments.iter().enumerate() {
        let frame = tcp(from_client, 40000, flags, window, payload);
        assert!(
            send_at(&mut bench, start, index as u64 * MS, &frame),
            "segment {index}"
        );
        let exported = records(&bench);
        if index + 1 < segments.len() {
            assert!(exported.is_empty(), "ended early, at segment {index}");
            continue;
        }
        // The last ACK ends the record at once; the flow stays for the rules' state.
        assert_eq!(exported.len(), 1);
        let record = &exported[0];
        assert_eq!(
            (
                record.end_reason,
                record.generation,
                record.rule,
                record.tcp
            ),
            (EndReason::EndOfFlow, generation, Some(0), TcpState::Closing)
        );
        assert_eq!((record.sport, record.dport, record.proto), (40000, 80, 6));
        let (forward, reverse) = (record.stats.forward(), record.stats.reverse());
        assert_eq!((forward.packets(), reverse.packets()), (5, 4));
        assert_eq!((forward.bytes(), reverse.bytes()), (5 * 40 + 100, 4 * 40));
        assert_eq!(
            (forward.initial_window(), reverse.initial_window()),
            (Some(64_240), Some(65_160))
        );
        let (fwd_flags, rev_flags) = (forward.flag_counts(), reverse.flag_counts());
        assert_eq!(
            (
                fwd_flags.syn,
                fwd_flags.ack,
                fwd_flags.psh,
                fwd_flags.fin,
                fwd_flags.rst
            ),
            (1, 4, 1, 1, 0)
        );
        assert_eq!((rev_flags.syn, rev_flags.ack, rev_flags.fin), (1, 4, 1));
        let all = record.stats.flag_counts();
        assert_eq!((all.syn, all.fin, all.ack), (2, 2, 8));
        assert_eq!(record.stats.flags().header_byte(), FIN | SYN | PSH | ACK);
        assert_stats(forward.lengths(), &[40, 40, 140, 40, 40], "forward lengths");
        assert_stats(
            forward.inter_arrival(),
            &[2 * MS, MS, 2 * MS, 3 * MS],
            "gaps",
        );
    }
    assert_eq!(bench.worker.flow_count(), 1);
    bench.assert_balanced();
}

#[test]
fn a_rst_ends_the_record_and_replies_still_pass_as_the_flows() {
    let mut bench = bench_with(limits(RecordTimeouts::default(), 64));
    publish(&mut bench.router, &allow_web_and_dns());
    let start = bench.now;
    handshake(&mut bench, start);
    assert!(send_at(
        &mut bench,
        start,
        3 * MS,
        &tcp(false, 40000, RST | ACK, 0, 0)
    ));
    let exported = records(&bench);
    assert_eq!(exported.len(), 1);
    assert_eq!(
        (exported[0].end_reason, exported[0].stats.packets()),
        (EndReason::EndOfFlow, 4)
    );
    // The flow keeps its state (and verdict) until its transitory timeout: a late reply passes
    // and starts a new record.
    assert!(send_at(
        &mut bench,
        start,
        4 * MS,
        &tcp(false, 40000, RST, 0, 0)
    ));
    assert!(records(&bench).is_empty());
    bench.assert_balanced();
}

#[test]
fn a_long_flow_is_reported_at_each_active_timeout_and_goes_on() {
    let timeouts = RecordTimeouts {
        active: Duration::from_secs(2),
        ..RecordTimeouts::default()
    };
    let mut bench = bench_with(limits(timeouts, 64));
    let start = bench.now;
    let mut exported = Vec::new();
    for step in 0..=10u64 {
        assert!(send_at(
            &mut bench,
            start,
            step * 500 * MS,
            &udp(step % 2 == 0, 5000, 10)
        ));
        exported.extend(records(&bench));
    }
    let start_ns = nanos(start);
    let spans: Vec<_> = exported
        .iter()
        .map(|r| {
            (
                r.end_reason,
                r.stats.first_ns() - start_ns,
                r.stats.last_ns() - start_ns,
                r.stats.packets(),
            )
        })
        .collect();
    // A record spans 2 s from its first packet: the packet at 2 s opens the next one.
    assert_eq!(
        spans,
        [
            (EndReason::ActiveTimeout, 0, 1_500 * MS, 4),
            (EndReason::ActiveTimeout, 2 * SECOND, 3_500 * MS, 4),
        ]
    );
    assert!(exported.iter().all(|r| r.flow_start_ns == start_ns));
    assert_eq!(bench.worker.flow_count(), 1, "the flow goes on");
    expire_at(&mut bench, start, 5 * SECOND + 60 * SECOND);
    let last = records(&bench);
    assert_eq!(
        (last.len(), last[0].end_reason, last[0].stats.packets()),
        (1, EndReason::IdleTimeout, 3)
    );
}

#[test]
fn a_quiet_established_flow_reports_its_record_and_keeps_its_state() {
    let timeouts = RecordTimeouts {
        idle: Duration::from_secs(10),
        ..RecordTimeouts::default()
    };
    let mut bench = bench_with(limits(timeouts, 64));
    publish(&mut bench.router, &allow_web_and_dns());
    let start = bench.now;
    handshake(&mut bench, start);
    expire_at(&mut bench, start, 2 * MS + 10 * SECOND);
    let exported = records(&bench);
    assert_eq!(
        (
            exported.len(),
            exported[0].end_reason,
            exported[0].stats.packets()
        ),
        (1, EndReason::IdleTimeout, 3)
    );
    // Under the default deny, the server's packet passes only as the flow's reply.
    assert!(send_at(
        &mut bench,
        start,
        20 * SECOND,
        &tcp(false, 40000, ACK, 1000, 10)
    ));
    assert_eq!(bench.worker.flow_count(), 1);
}

#[test]
fn records_the_full_queue_cannot_take_are_counted_and_forwarding_goes_on() {
    let mut bench = bench_with(limits(RecordTimeouts::default(), 2));
    let start = bench.now;
    for flow in 0..5 {
        assert!(
            send_at(&mut bench, start, 0, &udp(true, 6000 + flow, 10)),
            "forwarded whatever the queue"
        );
    }
    expire_at(&mut bench, start, 61 * SECOND);
    assert_eq!(records(&bench).len(), 2);
    let (_, counters) = bench.worker.policy_counters();
    assert_eq!(
        (
            counters.flow_records_exported.get(),
            counters.flow_records_lost.get()
        ),
        (2, 3)
    );
    bench.assert_balanced();
}

#[test]
fn a_flood_of_new_flows_leaves_established_flows_with_their_verdicts() {
    for with_rules in [false, true] {
        let capacity = 64;
        let mut bench = bench_with(PolicyLimits {
            flows: capacity,
            ..limits(RecordTimeouts::default(), 16_384)
        });
        let generation = if with_rules {
            publish(&mut bench.router, &allow_web_and_dns())
        } else {
            0
        };
        let start = bench.now;
        let established = 8u16;
        for index in 0..established {
            let port = 40000 + index;
            for frame in [
                tcp(true, port, SYN, 1000, 0),
                tcp(false, port, SYN | ACK, 1000, 0),
                tcp(true, port, ACK, 1000, 0),
                udp(true, port, 10),
                udp(false, port, 10),
            ] {
                assert!(send_at(&mut bench, start, 0, &frame));
            }
        }
        let flood = 10 * capacity as u16;
        for index in 0..flood {
            let frame = tcp(true, 10_000 + index, SYN, 1000, 0);
            assert!(send_at(&mut bench, start, MS, &frame), "flood SYN {index}");
        }
        let (_, counters) = bench.worker.policy_counters();
        let evicted = u64::from(flood) - (capacity as u64 - 2 * u64::from(established));
        assert_eq!(
            (counters.flows_evicted.get(), counters.flow_table_full.get()),
            (evicted, 0),
            "rules: {with_rules}"
        );
        let flood_records = records(&bench);
        assert_eq!(flood_records.len() as u64, evicted);
        assert!(
            flood_records
                .iter()
                .all(|r| r.end_reason == EndReason::LackOfResources
                    && (10_000..40_000).contains(&r.sport)),
            "only flood flows were evicted"
        );
        // Replies of established flows pass as theirs (under a default deny, only so).
        for index in 0..established {
            let port = 40000 + index;
            assert!(send_at(
                &mut bench,
                start,
                2 * MS,
                &tcp(false, port, ACK, 1000, 5)
            ));
            assert!(send_at(&mut bench, start, 2 * MS, &udp(false, port, 5)));
        }
        // A stopping worker ends every record.
        bench.worker.run(&AtomicBool::new(true));
        let kept: Vec<_> = records(&bench)
            .into_iter()
            .filter(|r| r.sport >= 40000)
            .collect();
        assert_eq!(kept.len(), 2 * usize::from(established));
        for record in &kept {
            let expected_packets = if record.proto == 6 { 4 } else { 3 };
            let expected_rule = match (with_rules, record.proto) {
                (false, _) => None,
                (true, 6) => Some(0),
                (true, _) => Some(1),
            };
            assert_eq!(
                (
                    record.end_reason,
                    record.stats.packets(),
                    record.generation,
                    record.rule
                ),
                (
                    EndReason::ForcedEnd,
                    expected_packets,
                    generation,
                    expected_rule
                ),
                "{record:?}"
            );
        }
        bench.assert_balanced();
    }
}

#[test]
fn icmp_is_keyed_by_echo_identifier_or_by_type_and_code() {
    let mut bench = bench_with(limits(RecordTimeouts::default(), 64));
    let start = bench.now;
    let echo = |from_client: bool, kind: Icmpv4Type| {
        let (src_mac, dst_mac, src, dst) = macs(from_client);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src, dst, 64)
            .icmpv4(kind)
            .write(&mut frame, &[0; 16])
            .expect("build");
        frame
    };
    let header = IcmpEchoHeader { id: 7, seq: 1 };
    assert!(send_at(
        &mut bench,
        start,
        0,
        &echo(true, Icmpv4Type::EchoRequest(header))
    ));
    assert!(send_at(
        &mut bench,
        start,
        MS,
        &echo(false, Icmpv4Type::EchoReply(header))
    ));
    // A port unreachable from the server (type 3, code 3), quoting nothing of a live flow.
    let mut unreachable = Vec::new();
    PacketBuilder::ethernet2(SERVER_MAC, P1_MAC)
        .ipv4(SERVER, CLIENT, 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut unreachable, &[0; 28])
        .expect("build");
    assert!(send_at(&mut bench, start, 2 * MS, &unreachable));
    assert_eq!(bench.worker.flow_count(), 2);
    expire_at(&mut bench, start, 2 * MS + 30 * SECOND);
    let mut keys: Vec<_> = records(&bench)
        .iter()
        .map(|r| {
            (
                r.src,
                r.sport,
                r.dport,
                r.stats.forward().packets(),
                r.stats.reverse().packets(),
            )
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            (IpAddr::from(CLIENT), 7, 7, 1, 1),
            (IpAddr::from(SERVER), 0, 3 << 8 | 3, 1, 0),
        ]
    );
}

#[test]
fn a_flow_a_new_rule_set_no_longer_allows_ends_forced() {
    let mut bench = bench_with(limits(RecordTimeouts::default(), 64));
    let first = publish(&mut bench.router, &allow_web_and_dns());
    let start = bench.now;
    assert!(send_at(&mut bench, start, 0, &udp(true, 5000, 10)));
    assert!(send_at(&mut bench, start, MS, &udp(false, 5000, 10)));
    publish(
        &mut bench.router,
        &RuleSetSpec {
            default_action: DefaultAction::Deny,
            ..RuleSetSpec::default()
        },
    );
    assert!(!send_at(&mut bench, start, 2 * MS, &udp(true, 5000, 10)));
    let exported = records(&bench);
    assert_eq!(exported.len(), 1);
    assert_eq!(
        (
            exported[0].end_reason,
            exported[0].generation,
            exported[0].rule,
            exported[0].stats.packets()
        ),
        (EndReason::ForcedEnd, first, Some(1), 2)
    );
    assert_eq!(bench.worker.flow_count(), 0);
}

#[test]
fn telemetry_off_keeps_no_flow_without_rules() {
    let mut bench = bench_with(PolicyLimits {
        telemetry: TelemetryConfig {
            enabled: false,
            ..TelemetryConfig::default()
        },
        ..small_policy_limits(64)
    });
    let start = bench.now;
    assert!(send_at(&mut bench, start, 0, &udp(true, 5000, 10)));
    assert_eq!(bench.worker.flow_count(), 0);
    bench.worker.run(&AtomicBool::new(true));
    assert!(records(&bench).is_empty());
}

/// An IPv4 fragment from the client to the server (UDP) at `offset_words` × 8 bytes.
fn fragment(offset_words: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = udp(true, 5000, 0);
    frame.truncate(14 + 20);
    frame.extend_from_slice(payload);
    let total = (20 + payload.len()) as u16;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    let word = offset_words | if more { 0x2000 } else { 0 };
    frame[20..22].copy_from_slice(&word.to_be_bytes());
    frame[24..26].fill(0);
    let header_checksum = checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&header_checksum.to_be_bytes());
    frame
}

#[test]
fn a_later_fragment_counts_as_untracked_and_its_first_in_the_flow() {
    let mut bench = bench_with(limits(RecordTimeouts::default(), 64));
    let start = bench.now;
    // A UDP header (port 5000 to 53, length 40) and 16 bytes of data, then the last 16 bytes.
    let mut first = vec![0x13, 0x88, 0x00, 0x35, 0x00, 40, 0, 0];
    first.extend_from_slice(&[0x33; 16]);
    assert!(send_at(&mut bench, start, 0, &fragment(0, true, &first)));
    assert!(send_at(
        &mut bench,
        start,
        MS,
        &fragment(3, false, &[0x44; 16])
    ));
    let (_, counters) = bench.worker.policy_counters();
    assert_eq!(counters.packets_untracked.get(), 1);
    expire_at(&mut bench, start, 61 * SECOND);
    let exported = records(&bench);
    assert_eq!(exported.len(), 1);
    assert_eq!(
        (
            exported[0].dport,
            exported[0].stats.packets(),
            exported[0].stats.bytes()
        ),
        (53, 1, 44)
    );
}

/// Limits with the scorer's feed on: first snapshot at the record's 4th packet, `queue`
/// snapshots waiting at most.
fn scoring_limits(queue: usize) -> PolicyLimits {
    let mut limits = limits(RecordTimeouts::default(), 64);
    limits.telemetry.scoring = ScoringFeed {
        enabled: true,
        nth_packet: 4,
        queue_capacity: queue,
    };
    limits
}

fn snapshots(bench: &Bench) -> Vec<FeatureSnapshot> {
    bench.router.feature_snapshots().try_iter().collect()
}

#[test]
fn a_flow_is_snapshot_at_its_4th_packet_then_at_8_and_16_and_at_its_end() {
    let mut bench = bench_with(scoring_limits(64));
    publish(&mut bench.router, &allow_web_and_dns());
    let start = bench.now;
    handshake(&mut bench, start);
    for packet in 0..17u64 {
        let from_client = packet % 2 == 0;
        let offset = (3 + packet) * MS;
        assert!(send_at(
            &mut bench,
            start,
            offset,
            &tcp(from_client, 40000, ACK, 1000, 100)
        ));
    }
    assert!(send_at(
        &mut bench,
        start,
        30 * MS,
        &tcp(true, 40000, RST, 0, 0)
    ));
    let taken = snapshots(&bench);
    let seen: Vec<(SnapshotTrigger, u64)> = taken
        .iter()
        .map(|snapshot| (snapshot.trigger, snapshot.stats.packets()))
        .collect();
    assert_eq!(
        seen,
        [
            (SnapshotTrigger::NthPacket, 4),
            (SnapshotTrigger::Doubled, 8),
            (SnapshotTrigger::Doubled, 16),
            (SnapshotTrigger::RecordEnd(EndReason::EndOfFlow), 21),
        ]
    );
    let first = &taken[0];
    assert_eq!(
        (first.src, first.dst, first.sport, first.dport, first.proto),
        (IpAddr::from(CLIENT), IpAddr::from(SERVER), 40000, 80, 6),
        "the initiator's tuple"
    );
    // SYN, SYN+ACK, ACK and one data segment from the client.
    assert_eq!(first.stats.forward().packets(), 3);
    assert_eq!(first.stats.reverse().packets(), 1);
    assert_eq!(
        taken[3].stats,
        records(&bench)[0].stats,
        "the end is the exported record"
    );
    bench.assert_balanced();
}

#[test]
fn a_connection_refused_in_two_packets_is_snapshot_at_its_end_only() {
    let mut bench = bench_with(scoring_limits(64));
    let start = bench.now;
    assert!(send_at(
        &mut bench,
        start,
        0,
        &tcp(true, 40001, SYN, 1000, 0)
    ));
    assert!(send_at(
        &mut bench,
        start,
        MS,
        &tcp(false, 40001, RST | ACK, 0, 0)
    ));
    let taken = snapshots(&bench);
    assert_eq!(taken.len(), 1);
    assert_eq!(
        (taken[0].trigger, taken[0].stats.packets()),
        (SnapshotTrigger::RecordEnd(EndReason::EndOfFlow), 2)
    );
    bench.assert_balanced();
}

#[test]
fn snapshots_the_full_queue_cannot_take_are_counted_and_forwarding_goes_on() {
    let mut bench = bench_with(scoring_limits(2));
    let start = bench.now;
    for flow in 0..5 {
        for packet in 0..4 {
            assert!(
                send_at(&mut bench, start, packet * MS, &udp(true, 7000 + flow, 10)),
                "forwarded whatever the queue"
            );
        }
    }
    assert_eq!(snapshots(&bench).len(), 2);
    let (_, counters) = bench.worker.policy_counters();
    assert_eq!(
        (
            counters.snapshots_queued.get(),
            counters.snapshots_lost.get()
        ),
        (2, 3)
    );
    bench.assert_balanced();
}

#[test]
fn no_snapshot_is_taken_with_the_feed_off() {
    let mut bench = bench_with(limits(RecordTimeouts::default(), 64));
    let start = bench.now;
    for packet in 0..8 {
        assert!(send_at(
            &mut bench,
            start,
            packet * MS,
            &udp(true, 7100, 10)
        ));
    }
    expire_at(&mut bench, start, 61 * SECOND);
    assert_eq!(records(&bench).len(), 1);
    assert!(snapshots(&bench).is_empty());
    let (_, counters) = bench.worker.policy_counters();
    assert_eq!(
        (
            counters.snapshots_queued.get(),
            counters.snapshots_lost.get()
        ),
        (0, 0),
        "none taken, so none lost either"
    );
}
