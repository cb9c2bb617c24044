//! Snapshots of the flow table taken by the worker, on the router in memory under a policy: the
//! records of flows made by traffic, a table walked over several loop iterations, truncation,
//! one snapshot at a time, abandoned snapshots, and the occupancy gauge.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use etherparse::PacketBuilder;
use vfn_dataplane::flow_snapshot::{
    FLOW_SLOTS_PER_POLL, FlowRecord, FlowSnapshot, SnapshotError, TcpState,
};
use vfn_rules::{Action, AddressMatch, DefaultAction, PortRange, Protocol, RuleSetSpec, RuleSpec};

const WAIT: Duration = Duration::from_secs(1);

/// Rule 0 allows DNS to the server network; anything else is allowed by default.
fn publish_dns(bench: &mut Bench) -> u32 {
    let spec = RuleSetSpec {
        version: "dns".into(),
        default_action: DefaultAction::Allow,
        rules: vec![RuleSpec {
            destination: AddressMatch {
                prefixes: vec!["198.19.0.0/16".parse().expect("p")],
                ..AddressMatch::default()
            },
            protocol: Some(Protocol::Udp),
            destination_ports: vec![PortRange::single(53)],
            ..RuleSpec::new("dns", Action::Allow)
        }],
        ..RuleSetSpec::default()
    };
    common::publish(&mut bench.router, &spec)
}

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4(CLIENT, SERVER, 64)
        .tcp(sport, dport, 1000, 8192)
        .syn()
        .write(&mut frame, &[])
        .expect("build");
    frame
}

/// Asks for a snapshot, polls the worker once and waits for it.
fn take(bench: &mut Bench, records_per_worker: usize) -> FlowSnapshot {
    let pending = bench
        .router
        .flow_snapshots()
        .request(records_per_worker)
        .expect("sent");
    bench.worker.poll_once(bench.now);
    pending.wait(WAIT).expect("the worker answers")
}

fn v4(octets: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(octets))
}

#[test]
fn flows_made_by_traffic_are_recorded_with_key_verdict_and_times() {
    let mut bench = Bench::new();
    client_resolves_router(&mut bench);
    let generation = publish_dns(&mut bench);
    bench.exchange(0, &udp(CLIENT, SERVER, 1000, 53));
    bench.now += Duration::from_secs(2);
    bench.exchange(1, &udp(SERVER, CLIENT, 53, 1000));
    bench.exchange(0, &syn(40000, 443));

    let snapshot = take(&mut bench, 16);
    assert!(!snapshot.is_truncated());
    let mut records: Vec<FlowRecord> = snapshot.records().copied().collect();
    records.sort_by_key(|record| record.proto);
    let first_ns = 1_000_000_000;
    let later_ns = 3_000_000_000;
    // The SYN's IP length: its frame less the Ethernet header.
    let syn_ip_length = syn(40000, 443).len() as u64 - 14;
    assert_eq!(
        records,
        [
            FlowRecord {
                worker: 0,
                src: v4(CLIENT),
                dst: v4(SERVER),
                sport: 40000,
                dport: 443,
                proto: 6,
                first_seen_ns: later_ns,
                last_seen_ns: later_ns,
                tcp: TcpState::SynSent,
                reply_seen: false,
                generation,
                rule: None,
                ingress: 0,
                packets: 1,
                bytes: syn_ip_length,
            },
            FlowRecord {
                worker: 0,
                src: v4(CLIENT),
                dst: v4(SERVER),
                sport: 1000,
                dport: 53,
                proto: 17,
                first_seen_ns: first_ns,
                last_seen_ns: later_ns,
                tcp: TcpState::None,
                reply_seen: true,
                generation,
                rule: Some(0),
                ingress: 0,
                // Two datagrams of 20 + 8 + 8 bytes of IP.
                packets: 2,
                bytes: 72,
            },
        ],
        "the initiator's view, whoever sent last"
    );
    let (_, policy_counters) = bench.worker.policy_counters();
    assert_eq!(policy_counters.flows_in_table.get(), 2);
    assert_eq!(bench.worker.flow_count(), 2);
}

#[test]
fn a_table_larger_than_one_iterations_share_is_copied_over_several() {
    let flow_count = FLOW_SLOTS_PER_POLL + 500;
    let mut bench = Bench::with_flow_capacity(flow_count);
    publish_dns(&mut bench);
    for batch in 0..flow_count.div_ceil(100) {
        for sport in batch * 100..flow_count.min(batch * 100 + 100) {
            let frame = udp(CLIENT, SERVER, 10_000 + sport as u16, 53);
            bench.worker.io_mut().inject(0, &frame).expect("room");
        }
        bench.settle();
    }
    assert_eq!(bench.worker.flow_count(), flow_count);
    let (_, policy_counters) = bench.worker.policy_counters();
    assert_eq!(policy_counters.flows_in_table.get(), flow_count as u64);

    let mut pending = bench
        .router
        .flow_snapshots()
        .request(flow_count)
        .expect("sent");
    assert!(!pending.is_ready(), "the worker has not polled yet");
    bench.worker.poll_once(bench.now);
    assert!(
        !pending.is_ready(),
        "one iteration copies part of the table"
    );
    bench.worker.poll_once(bench.now);
    assert!(pending.is_ready());
    let snapshot = pending.wait(Duration::ZERO).expect("ready");
    let mut sports: Vec<u16> = snapshot.records().map(|record| record.sport).collect();
    sports.sort_unstable();
    assert_eq!(
        sports,
        (10_000..10_000 + flow_count as u16).collect::<Vec<_>>(),
        "each flow once"
    );
    assert_eq!(snapshot.flows_left_out(), 0);
}

#[test]
fn truncation_is_reported_with_the_flows_left_out() {
    let mut bench = Bench::new();
    publish_dns(&mut bench);
    for sport in 0..5 {
        bench.exchange(0, &udp(CLIENT, SERVER, 2000 + sport, 53));
    }
    let snapshot = take(&mut bench, 2);
    assert_eq!(snapshot.records().count(), 2);
    assert_eq!(snapshot.flows_left_out(), 3);
    assert!(snapshot.is_truncated());
    let counted = take(&mut bench, 0);
    assert_eq!(
        (counted.records().count(), counted.flows_left_out()),
        (0, 5),
        "a count without records"
    );
}

#[test]
fn one_snapshot_at_a_time_and_abandoned_ones_are_thrown_away() {
    let mut bench = Bench::new();
    publish_dns(&mut bench);
    bench.exchange(0, &udp(CLIENT, SERVER, 1000, 53));
    let snapshots = bench.router.flow_snapshots();
    let pending = snapshots.request(8).expect("sent");
    assert_eq!(
        snapshots.request(8).expect_err("one runs"),
        SnapshotError::InProgress
    );
    assert_eq!(
        pending
            .wait(Duration::ZERO)
            .expect_err("the worker has not polled"),
        SnapshotError::TimedOut {
            answered: 0,
            workers: 1,
            timeout: Duration::ZERO
        }
    );
    assert_eq!(
        snapshots
            .request(8)
            .expect_err("still queued for the worker"),
        SnapshotError::WorkersBusy
    );
    // The worker answers the abandoned request; the next one gets its own answer.
    bench.worker.poll_once(bench.now);
    bench.exchange(0, &udp(CLIENT, SERVER, 1001, 53));
    let snapshot = take(&mut bench, 8);
    assert_eq!(snapshot.records().count(), 2, "the later table");
}
