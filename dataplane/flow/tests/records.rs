//! Statistics records: each ends exactly when due (idle, active, the end of a TCP connection, its
//! flow's expiry or eviction) with the right reason, holds exactly the packets since the previous
//! record, and the flow goes on when only its record ended.

mod support;

use proptest::prelude::*;
use std::time::Duration;
use support::{SYN_ACK, ipv4, ipv6, reply};
use vfn_flow::{
    Direction, EndReason, FlowEnd, FlowKey, FlowStats, FlowTable, PROTO_TCP, PacketSample,
    PacketTuple, RecordTimeouts, TcpFlags, TcpState, Timeouts,
};

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_000 * SECOND;
/// Enough for one lap of the wheel (65 536 ticks) plus the flows of these tests.
const BUDGET_ALL: usize = 200_000;

fn timeouts() -> Timeouts {
    Timeouts {
        tcp_established: Duration::from_secs(3600),
        tcp_transitory: Duration::from_secs(20),
        udp: Duration::from_secs(60),
        icmp: Duration::from_secs(30),
        other: Duration::from_secs(600),
    }
}

fn record_timeouts() -> RecordTimeouts {
    RecordTimeouts {
        idle: Duration::from_secs(10),
        active: Duration::from_secs(30),
        activity: Duration::from_secs(2),
    }
}

/// A record as the table handed it over.
#[derive(Clone, Copy, Debug)]
struct Ended {
    key: FlowKey,
    reason: EndReason,
    flow_removed: bool,
    stats: Option<FlowStats>,
}

impl Ended {
    fn of(ended: &FlowEnd<'_, u32>) -> Ended {
        Ended {
            key: *ended.entry.key(),
            reason: ended.reason,
            flow_removed: ended.flow_removed,
            stats: ended.stats.copied(),
        }
    }

    fn packets(&self) -> u64 {
        self.stats.map_or(0, |stats| stats.packets())
    }
}

struct Harness {
    table: FlowTable<u32>,
    ended: Vec<Ended>,
}

impl Harness {
    fn new(capacity: usize) -> Harness {
        Harness {
            table: FlowTable::with_statistics(capacity, timeouts(), record_timeouts())
                .expect("valid configuration"),
            ended: Vec::new(),
        }
    }

    /// One packet of `ip_length` bytes, handled as a worker does: one lookup, the hot entry,
    /// then the record.
    fn send(&mut self, tuple: &PacketTuple, flags: TcpFlags, now: u64, ip_length: u32) {
        let (key, orientation) = FlowKey::from_packet(tuple);
        let hash = self.table.hash(&key);
        let ended = &mut self.ended;
        let (slot, direction) = match self.table.locate(&key, hash, orientation) {
            Some(found) => found,
            None => {
                let slot = self
                    .table
                    .insert_flow(key, hash, orientation, 0, now, |evicted| {
                        ended.push(Ended::of(&evicted))
                    })
                    .expect("room");
                (slot, Direction::Forward)
            }
        };
        let ends_connection = self
            .table
            .entry_mut(slot)
            .record_packet(now, direction, flags);
        let sample = PacketSample {
            time_ns: now,
            direction,
            ip_length,
            tcp_flags: flags,
            tcp_window: (tuple.proto == PROTO_TCP).then_some(tuple.sport),
            initiator_egress: 2,
        };
        self.table
            .record_statistics(slot, &sample, ends_connection, |end| {
                ended.push(Ended::of(&end))
            });
    }

    fn expire(&mut self, now: u64) -> Vec<Ended> {
        let ended = &mut self.ended;
        let progress = self
            .table
            .expire(now, BUDGET_ALL, |end| ended.push(Ended::of(&end)));
        assert!(progress.caught_up, "budget too small for the test");
        std::mem::take(&mut self.ended)
    }

    fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }
}

fn web() -> PacketTuple {
    support::tcp(ipv4(1), ipv4(2), 40000, 80)
}

fn handshake(harness: &mut Harness, tuple: &PacketTuple, now: u64) {
    harness.send(tuple, TcpFlags::SYN, now, 60);
    harness.send(&reply(tuple), SYN_ACK, now + 1_000, 60);
    harness.send(tuple, TcpFlags::ACK, now + 2_000, 52);
}

#[test]
fn a_record_ends_at_its_active_timeout_and_the_flow_goes_on() {
    let mut harness = Harness::new(8);
    let tuple = support::udp(ipv4(1), ipv4(2), 5000, 53);
    let mut records = Vec::new();
    for second in 0..=65 {
        let now = START + second * SECOND;
        let packet = if second % 2 == 0 {
            tuple
        } else {
            reply(&tuple)
        };
        harness.send(&packet, TcpFlags::NONE, now, 100);
        records.extend(harness.expire(now));
    }
    let spans: Vec<_> = records
        .iter()
        .map(|ended| {
            let stats = ended.stats.expect("statistics");
            (
                ended.reason,
                ended.flow_removed,
                stats.first_ns(),
                stats.last_ns(),
                stats.packets(),
            )
        })
        .collect();
    // Each record ends 30 s after its first packet: the packet of that instant opens the next.
    assert_eq!(
        spans,
        [
            (
                EndReason::ActiveTimeout,
                false,
                START,
                START + 29 * SECOND,
                30
            ),
            (
                EndReason::ActiveTimeout,
                false,
                START + 30 * SECOND,
                START + 59 * SECOND,
                30
            ),
        ]
    );
    assert_eq!(harness.table.len(), 1);
    let rest = harness.expire(START + 200 * SECOND);
    assert_eq!(rest.len(), 1);
    assert_eq!(
        (rest[0].reason, rest[0].flow_removed, rest[0].packets()),
        (EndReason::IdleTimeout, true, 6)
    );
}

#[test]
fn a_quiet_record_ends_at_its_idle_timeout_while_the_established_flow_stays() {
    let mut harness = Harness::new(8);
    let tuple = web();
    handshake(&mut harness, &tuple, START);
    let last = START + 2_000;
    assert!(harness.expire(last + 10 * SECOND - 1).is_empty());
    let ended = harness.expire(last + 10 * SECOND);
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (ended[0].reason, ended[0].flow_removed, ended[0].packets()),
        (EndReason::IdleTimeout, false, 3)
    );
    assert_eq!(harness.table.len(), 1, "the flow stays");
    let later = last + 100 * SECOND;
    harness.send(&tuple, TcpFlags::ACK | TcpFlags::PSH, later, 1500);
    let ended = harness.expire(later + 10 * SECOND);
    let stats = ended[0].stats.expect("statistics");
    assert_eq!(
        (stats.first_ns(), stats.packets(), stats.bytes()),
        (later, 1, 1500)
    );
    assert_eq!(
        stats.forward().initial_window(),
        Some(40000),
        "the record's first packet"
    );
}

#[test]
fn a_packet_after_a_due_record_ends_it_before_expire_does() {
    let mut harness = Harness::new(8);
    let tuple = support::udp(ipv4(1), ipv4(2), 5000, 53);
    harness.send(&tuple, TcpFlags::NONE, START, 100);
    harness.send(&tuple, TcpFlags::NONE, START + 15 * SECOND, 200);
    let ended = harness.take_ended();
    assert_eq!(ended.len(), 1, "the quiet record, without a call to expire");
    let stats = ended[0].stats.expect("statistics");
    assert_eq!(
        (ended[0].reason, stats.packets(), stats.bytes()),
        (EndReason::IdleTimeout, 1, 100)
    );
    let (key, orientation) = FlowKey::from_packet(&tuple);
    let (slot, _) = harness
        .table
        .locate(&key, harness.table.hash(&key), orientation)
        .expect("flow");
    let current = harness.table.statistics(slot).expect("statistics");
    assert_eq!(
        (current.first_ns(), current.bytes()),
        (START + 15 * SECOND, 200)
    );
}

#[test]
fn a_fin_exchange_ends_the_record_with_the_last_ack() {
    let mut harness = Harness::new(8);
    let tuple = web();
    handshake(&mut harness, &tuple, START);
    let fin_ack = TcpFlags::FIN | TcpFlags::ACK;
    let closing = [
        (tuple, fin_ack),
        (reply(&tuple), TcpFlags::ACK),
        (reply(&tuple), fin_ack),
    ];
    for (index, (packet, flags)) in closing.iter().enumerate() {
        harness.send(packet, *flags, START + SECOND + index as u64, 52);
        assert!(harness.take_ended().is_empty(), "not over yet");
    }
    harness.send(&tuple, TcpFlags::ACK, START + 2 * SECOND, 52);
    let ended = harness.take_ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (ended[0].reason, ended[0].flow_removed),
        (EndReason::EndOfFlow, false)
    );
    let stats = ended[0].stats.expect("statistics");
    assert_eq!(stats.packets(), 7);
    let flags = stats.flag_counts();
    assert_eq!((flags.syn, flags.fin, flags.ack), (2, 2, 6));
    assert_eq!(
        (
            stats.forward().initial_window(),
            stats.reverse().initial_window()
        ),
        (Some(40000), Some(80))
    );
    // A last retransmission starts a record of its own, and a new SYN a new connection.
    harness.send(&tuple, TcpFlags::ACK, START + 3 * SECOND, 52);
    assert!(harness.take_ended().is_empty());
    harness.send(&tuple, TcpFlags::SYN, START + 4 * SECOND, 60);
    let (key, _) = FlowKey::from_packet(&tuple);
    let entry = harness
        .table
        .get(&key, harness.table.hash(&key))
        .expect("flow");
    assert_eq!(entry.tcp(), TcpState::SynSent);
    assert!(!entry.connection_ended());
}

#[test]
fn a_simultaneous_close_ends_with_the_first_ack_after_both_fins() {
    let mut harness = Harness::new(8);
    let tuple = web();
    handshake(&mut harness, &tuple, START);
    harness.send(&tuple, TcpFlags::FIN | TcpFlags::ACK, START + SECOND, 52);
    harness.send(
        &reply(&tuple),
        TcpFlags::FIN | TcpFlags::ACK,
        START + SECOND,
        52,
    );
    assert!(harness.take_ended().is_empty());
    harness.send(&reply(&tuple), TcpFlags::ACK, START + SECOND + 1, 52);
    assert_eq!(harness.take_ended()[0].reason, EndReason::EndOfFlow);
}

#[test]
fn a_rst_ends_the_record_at_once() {
    let mut harness = Harness::new(8);
    let tuple = web();
    handshake(&mut harness, &tuple, START);
    harness.send(
        &reply(&tuple),
        TcpFlags::RST | TcpFlags::ACK,
        START + SECOND,
        40,
    );
    let ended = harness.take_ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (ended[0].reason, ended[0].flow_removed, ended[0].packets()),
        (EndReason::EndOfFlow, false, 4)
    );
    // A second RST ends nothing more.
    harness.send(&tuple, TcpFlags::RST, START + SECOND + 1, 40);
    assert!(harness.take_ended().is_empty());
}

#[test]
fn a_flow_closed_by_both_fins_ends_by_its_teardown_when_quiet() {
    let mut harness = Harness::new(8);
    let tuple = web();
    handshake(&mut harness, &tuple, START);
    harness.send(&tuple, TcpFlags::FIN | TcpFlags::ACK, START + SECOND, 52);
    harness.send(
        &reply(&tuple),
        TcpFlags::FIN | TcpFlags::ACK,
        START + SECOND,
        52,
    );
    // The record idles out first (10 s), the flow later (transitory TCP, 20 s).
    let record = harness.expire(START + 11 * SECOND);
    assert_eq!(
        (
            record[0].reason,
            record[0].flow_removed,
            record[0].packets()
        ),
        (EndReason::EndOfFlow, false, 5)
    );
    let flow = harness.expire(START + 21 * SECOND);
    assert_eq!(
        (flow[0].reason, flow[0].flow_removed, flow[0].packets()),
        (EndReason::EndOfFlow, true, 0)
    );
    assert!(harness.table.is_empty());
}

#[test]
fn an_eviction_hands_over_the_evicted_record() {
    let mut harness = Harness::new(2);
    for index in 0..3 {
        let tuple = support::udp(ipv6(index), ipv6(100), 5000, 53);
        harness.send(&tuple, TcpFlags::NONE, START + index, 80);
        harness.send(&tuple, TcpFlags::NONE, START + index + 10, 80);
    }
    let ended = harness.take_ended();
    assert_eq!(ended.len(), 1);
    let oldest = support::udp(ipv6(0), ipv6(100), 5000, 53);
    assert_eq!(ended[0].key, FlowKey::from_packet(&oldest).0);
    assert_eq!(
        (ended[0].reason, ended[0].flow_removed, ended[0].packets()),
        (EndReason::LackOfResources, true, 2)
    );
    assert_eq!(harness.table.evictions().unestablished, 1);
}

#[test]
fn ending_records_flushes_every_one_and_keeps_the_flows() {
    let mut harness = Harness::new(8);
    handshake(&mut harness, &web(), START);
    let quiet = support::udp(ipv4(3), ipv4(4), 1, 2);
    harness.send(&quiet, TcpFlags::NONE, START, 28);
    harness.expire(START + 11 * SECOND);
    harness.send(&web(), TcpFlags::ACK, START + 12 * SECOND, 52);
    let mut ended = Vec::new();
    harness
        .table
        .end_records(EndReason::ForcedEnd, |end| ended.push(Ended::of(&end)));
    assert_eq!(ended.len(), 1, "only the record with packets");
    assert_eq!(
        (ended[0].reason, ended[0].flow_removed, ended[0].packets()),
        (EndReason::ForcedEnd, false, 1)
    );
    assert_eq!(harness.table.len(), 2);
}

#[test]
fn a_table_without_statistics_hands_over_none() {
    let mut table = FlowTable::<u32>::new(8, timeouts()).expect("valid configuration");
    let tuple = support::udp(ipv4(1), ipv4(2), 1, 2);
    let (key, orientation) = FlowKey::from_packet(&tuple);
    let hash = table.hash(&key);
    let slot = table
        .insert_flow(key, hash, orientation, 0, START, |_| {})
        .expect("room");
    assert!(table.statistics(slot).is_none());
    let mut ended = Vec::new();
    table.expire(START + 61 * SECOND, BUDGET_ALL, |end| {
        ended.push(Ended::of(&end))
    });
    assert_eq!(ended.len(), 1);
    assert!(ended[0].stats.is_none() && ended[0].flow_removed);
}

#[test]
fn record_timeouts_are_validated() {
    let zero = RecordTimeouts {
        activity: Duration::ZERO,
        ..record_timeouts()
    };
    assert!(FlowTable::<u32>::with_statistics(8, timeouts(), zero).is_err());
}

/// What a record should hold, by a simple model of the timeouts.
#[derive(Clone, Copy, Debug, Default)]
struct ModelRecord {
    first: u64,
    last: u64,
    packets: u64,
}

proptest! {
    /// Under random packets and pauses on a few UDP flows, with `expire` called before and after
    /// each packet, every record ends at the first call at or after its deadline (flow expiry
    /// first, then record idle, then active), with exactly the packets the model counted.
    #[test]
    fn records_end_exactly_when_due(
        steps in proptest::collection::vec((0..4u64, 0..25_000u64, any::<bool>()), 1..120)
    ) {
        let udp_ns = timeouts().udp.as_nanos() as u64;
        let records = record_timeouts();
        let (idle_ns, active_ns) = (records.idle.as_nanos() as u64, records.active.as_nanos() as u64);
        let flows: Vec<PacketTuple> =
            (0..4).map(|index| support::udp(ipv6(index), ipv6(99), 7000, 53)).collect();
        let mut harness = Harness::new(8);
        let mut model: Vec<Option<(u64, ModelRecord)>> = vec![None; 4];
        let mut now = START;
        let check = |harness: &mut Harness, model: &mut Vec<Option<(u64, ModelRecord)>>, now: u64| {
            let mut expected = Vec::new();
            for (index, state) in model.iter_mut().enumerate() {
                let Some((flow_last, record)) = state else { continue };
                let ending = if *flow_last + udp_ns <= now {
                    Some((EndReason::IdleTimeout, true))
                } else if record.packets > 0 && record.last + idle_ns <= now {
                    Some((EndReason::IdleTimeout, false))
                } else if record.packets > 0 && record.first + active_ns <= now {
                    Some((EndReason::ActiveTimeout, false))
                } else {
                    None
                };
                if let Some((reason, removed)) = ending {
                    expected.push((FlowKey::from_packet(&flows[index]).0, reason, removed, *record));
                    *record = ModelRecord::default();
                    if removed {
                        *state = None;
                    }
                }
            }
            let mut got: Vec<_> = harness
                .expire(now)
                .into_iter()
                .map(|ended| {
                    let stats = ended.stats.expect("statistics");
                    let record = ModelRecord { first: stats.first_ns(), last: stats.last_ns(), packets: stats.packets() };
                    (ended.key, ended.reason, ended.flow_removed, record)
                })
                .collect();
            let order = |entry: &(FlowKey, EndReason, bool, ModelRecord)| entry.0.low_address();
            got.sort_by_key(order);
            expected.sort_by_key(order);
            let summary = |list: &[(FlowKey, EndReason, bool, ModelRecord)]| -> Vec<_> {
                list.iter()
                    .map(|(key, reason, removed, record)| {
                        let (first, last) = if record.packets > 0 { (record.first, record.last) } else { (0, 0) };
                        (key.low_address(), *reason, *removed, first, last, record.packets)
                    })
                    .collect()
            };
            prop_assert_eq!(summary(&got), summary(&expected), "at {}", now);
            Ok(())
        };
        for (flow, gap_ms, answer) in steps {
            now += gap_ms * 1_000_000;
            check(&mut harness, &mut model, now)?;
            let tuple = if answer { reply(&flows[flow as usize]) } else { flows[flow as usize] };
            harness.send(&tuple, TcpFlags::NONE, now, 100);
            let state = model[flow as usize].get_or_insert((now, ModelRecord::default()));
            state.0 = now;
            if state.1.packets == 0 {
                state.1.first = now;
            }
            state.1.last = now;
            state.1.packets += 1;
            check(&mut harness, &mut model, now)?;
        }
    }
}
