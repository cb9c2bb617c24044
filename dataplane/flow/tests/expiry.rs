//! Expiry: each timeout class is honoured to the nanosecond, every call stays within its budget,
//! and every expired flow is eventually reported, also after long pauses.

mod support;

use std::time::Duration;
use support::{SYN_ACK, ipv4, ipv6, packet, reply, tcp_handshake};
use vfn_flow::{
    FlowKey, FlowTable, NewTableError, PROTO_ICMP, PacketTuple, TcpFlags, TcpState, Timeouts,
};

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_000 * SECOND;
/// Enough for one lap of the wheel (65 536 ticks) plus the flows of these tests.
const BUDGET_ALL: usize = 200_000;

/// Transitory TCP shorter than one lap of the wheel (68.7 s): a flow that leaves `Established`
/// must be re-checked sooner than the lap would.
fn timeouts() -> Timeouts {
    Timeouts {
        tcp_established: Duration::from_secs(3600),
        tcp_transitory: Duration::from_secs(20),
        udp: Duration::from_secs(60),
        icmp: Duration::from_secs(30),
        other: Duration::from_secs(600),
    }
}

fn expired_keys(table: &mut FlowTable<u32>, now_ns: u64) -> Vec<FlowKey> {
    let mut keys = Vec::new();
    let progress = table.expire(now_ns, BUDGET_ALL, |ended| keys.push(*ended.entry.key()));
    assert!(progress.caught_up, "budget too small for the test");
    keys
}

fn key(tuple: &PacketTuple) -> FlowKey {
    FlowKey::from_packet(tuple).0
}

/// Runs `setup` for a flow between `(src, dst)` that it leaves idle from `START`, and for a twin
/// flow one nanosecond later; `setup` returns the tuple of the flow it made. At
/// `START + timeout` only the first flow expires, the twin one nanosecond later.
fn assert_expires_exactly(
    timeout: Duration,
    setup: impl Fn(&mut FlowTable<u32>, u128, u128, u64) -> PacketTuple,
) {
    let mut table = FlowTable::new(16, timeouts()).expect("valid configuration");
    let flow = setup(&mut table, ipv4(1), ipv4(2), START);
    let twin = setup(&mut table, ipv6(1), ipv6(2), START + 1);
    let timeout_ns = timeout.as_nanos() as u64;
    assert_eq!(expired_keys(&mut table, START + timeout_ns - 1), []);
    assert_eq!(expired_keys(&mut table, START + timeout_ns), [key(&flow)]);
    assert_eq!(expired_keys(&mut table, START + timeout_ns), []);
    assert_eq!(
        expired_keys(&mut table, START + timeout_ns + 1),
        [key(&twin)]
    );
    assert!(table.is_empty());
}

#[test]
fn tcp_established_idle_timeout() {
    assert_expires_exactly(timeouts().tcp_established, |table, src, dst, now| {
        let tuple = support::tcp(src, dst, 1000, 80);
        tcp_handshake(table, &tuple, 0, now - 50 * SECOND);
        packet(table, &tuple, TcpFlags::ACK, 0, now).unwrap();
        tuple
    });
}

#[test]
fn tcp_handshake_uses_the_transitory_timeout() {
    assert_expires_exactly(timeouts().tcp_transitory, |table, src, dst, now| {
        let tuple = support::tcp(src, dst, 1000, 80);
        packet(table, &tuple, TcpFlags::SYN, 0, now).unwrap();
        let entry = table.get(&key(&tuple), table.hash(&key(&tuple))).unwrap();
        assert_eq!(entry.tcp(), TcpState::SynSent);
        tuple
    });
}

#[test]
fn tcp_closing_uses_the_transitory_timeout_even_after_a_long_establishment() {
    assert_expires_exactly(timeouts().tcp_transitory, |table, src, dst, now| {
        let tuple = support::tcp(src, dst, 1000, 80);
        tcp_handshake(table, &tuple, 0, now - 1000 * SECOND);
        // Keep it alive, with expiry running, until the FIN.
        for second in (1..1000).rev().step_by(7) {
            packet(
                table,
                &reply(&tuple),
                TcpFlags::ACK,
                0,
                now - second * SECOND,
            )
            .unwrap();
            table.expire(now - second * SECOND, BUDGET_ALL, |_| {
                panic!("an active flow expired")
            });
        }
        packet(table, &tuple, TcpFlags::FIN | TcpFlags::ACK, 0, now).unwrap();
        tuple
    });
}

#[test]
fn tcp_reset_uses_the_transitory_timeout() {
    assert_expires_exactly(timeouts().tcp_transitory, |table, src, dst, now| {
        let tuple = support::tcp(src, dst, 1000, 80);
        tcp_handshake(table, &tuple, 0, now - 10 * SECOND);
        packet(table, &reply(&tuple), TcpFlags::RST, 0, now).unwrap();
        tuple
    });
}

#[test]
fn udp_timeout_counts_from_the_last_packet_of_either_direction() {
    assert_expires_exactly(timeouts().udp, |table, src, dst, now| {
        let tuple = support::udp(src, dst, 5353, 53);
        packet(table, &tuple, TcpFlags::NONE, 0, now - 40 * SECOND).unwrap();
        packet(table, &reply(&tuple), TcpFlags::NONE, 0, now).unwrap();
        tuple
    });
}

#[test]
fn icmp_timeout() {
    assert_expires_exactly(timeouts().icmp, |table, src, dst, now| {
        let echo = PacketTuple::icmp_echo(src, dst, PROTO_ICMP, 9, 1);
        packet(table, &echo, TcpFlags::NONE, 0, now).unwrap();
        echo
    });
}

#[test]
fn other_protocol_timeout() {
    assert_expires_exactly(timeouts().other, |table, src, dst, now| {
        let gre = PacketTuple::portless(src, dst, 47, 1);
        packet(table, &gre, TcpFlags::NONE, 0, now).unwrap();
        gre
    });
}

#[test]
fn every_call_stays_within_budget_and_all_expired_flows_are_reported() {
    const FLOWS: u32 = 20_000;
    const BUDGET: usize = 100;
    let mut table = FlowTable::new(FLOWS as usize, timeouts()).unwrap();
    for index in 0..FLOWS {
        // Spread over 20 s so that the flows fall in many wheel slots.
        let now = START + u64::from(index) * (SECOND / 1000);
        packet(
            &mut table,
            &support::udp(ipv4(index), ipv4(100_000), 1, 53),
            TcpFlags::NONE,
            index,
            now,
        )
        .unwrap();
    }
    let now = START + 200 * SECOND;
    let (mut reported, mut calls) = (0, 0);
    loop {
        let mut expired_this_call = 0;
        let progress = table.expire(now, BUDGET, |_| expired_this_call += 1);
        assert!(
            progress.work <= BUDGET,
            "call {calls} did {} units of work",
            progress.work
        );
        assert_eq!(progress.expired, expired_this_call);
        reported += expired_this_call;
        calls += 1;
        if progress.caught_up {
            break;
        }
        assert!(calls < 10_000, "expiry does not converge");
    }
    assert_eq!(reported, FLOWS as usize);
    assert!(table.is_empty());
}

#[test]
fn flows_left_behind_by_a_long_pause_are_all_reported() {
    let mut table = FlowTable::new(64, timeouts()).unwrap();
    for index in 0..50 {
        let now = START + u64::from(index) * 3 * SECOND;
        packet(
            &mut table,
            &support::udp(ipv4(index), ipv4(900), 7, 7),
            TcpFlags::NONE,
            index,
            now,
        )
        .unwrap();
    }
    // Ten hours without any expire call: ~500 laps of the wheel.
    let now = START + 36_000 * SECOND;
    let mut reported = 0;
    for _ in 0..1_000 {
        let progress = table.expire(now, 1_000, |_| reported += 1);
        assert!(progress.work <= 1_000);
        if progress.caught_up {
            break;
        }
    }
    assert_eq!(reported, 50);
}

#[test]
fn active_flows_are_never_expired() {
    let mut table = FlowTable::new(8, timeouts()).unwrap();
    let established = support::tcp(ipv4(1), ipv4(2), 3333, 22);
    let udp = support::udp(ipv4(3), ipv4(4), 5000, 5001);
    tcp_handshake(&mut table, &established, 1, START);
    for step in 1..=2_000 {
        let now = START + step * 29 * SECOND;
        packet(&mut table, &udp, TcpFlags::NONE, 2, now).unwrap();
        if step % 100 == 0 {
            packet(&mut table, &reply(&established), TcpFlags::ACK, 1, now).unwrap();
        }
        let progress = table.expire(now, BUDGET_ALL, |ended| panic!("expired {:?}", ended.entry));
        assert!(progress.caught_up);
    }
    assert_eq!(table.len(), 2);
}

#[test]
fn handshake_then_silence_expires_with_the_established_timeout() {
    let mut table = FlowTable::new(4, timeouts()).unwrap();
    let tuple = support::tcp(ipv4(1), ipv4(2), 1, 2);
    packet(&mut table, &tuple, TcpFlags::SYN, 0, START).unwrap();
    packet(&mut table, &reply(&tuple), SYN_ACK, 0, START).unwrap();
    packet(&mut table, &tuple, TcpFlags::ACK, 0, START).unwrap();
    let established_ns = timeouts().tcp_established.as_nanos() as u64;
    for minute in 1..60 {
        assert_eq!(expired_keys(&mut table, START + minute * 60 * SECOND), []);
    }
    assert_eq!(expired_keys(&mut table, START + established_ns - 1), []);
    assert_eq!(
        expired_keys(&mut table, START + established_ns),
        [key(&tuple)]
    );
}

#[test]
fn bad_timeouts_and_capacities_are_refused_with_the_field_named() {
    let zero = Timeouts {
        udp: Duration::ZERO,
        ..timeouts()
    };
    let error = FlowTable::<u32>::new(8, zero).err().unwrap();
    assert!(matches!(
        error,
        NewTableError::TimeoutOutOfRange { field: "udp", .. }
    ));
    assert!(error.to_string().contains("`udp`"), "{error}");
    let long = Timeouts {
        tcp_established: Duration::from_secs(30 * 24 * 3600),
        ..timeouts()
    };
    let error = FlowTable::<u32>::new(8, long).err().unwrap();
    assert!(matches!(
        error,
        NewTableError::TimeoutOutOfRange {
            field: "tcp_established",
            ..
        }
    ));
    for capacity in [0, vfn_flow::CAPACITY_MAX + 1] {
        let error = FlowTable::<u32>::new(capacity, timeouts()).err().unwrap();
        assert!(
            matches!(error, NewTableError::CapacityOutOfRange { requested, .. } if requested == capacity)
        );
    }
}
