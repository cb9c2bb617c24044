//! A walk of the table in bounded steps while packets, removals and expiry change it: every flow
//! present from the walk's start to its end is visited exactly once, only flows in the table at
//! the time are visited, and none that was never in it during the walk.

mod support;

use proptest::prelude::*;
use std::time::Duration;
use support::{ipv4, udp};
use vfn_flow::{FlowCursor, FlowKey, FlowTable, PacketTuple, TcpFlags, Timeouts};

const UNIVERSE: usize = 40;

fn timeouts() -> Timeouts {
    Timeouts {
        udp: Duration::from_secs(3),
        ..Timeouts::default()
    }
}

fn universe() -> Vec<PacketTuple> {
    (0..UNIVERSE as u32)
        .map(|index| udp(ipv4(index), ipv4(1000 + index), 5000, 53))
        .collect()
}

#[derive(Clone, Debug)]
enum Operation {
    Packet { flow: usize, elapsed_ns: u64 },
    Remove { flow: usize },
    Expire { elapsed_ns: u64 },
    Walk { slots: usize },
}

fn operation() -> impl Strategy<Value = Operation> {
    let elapsed_ns = prop_oneof![Just(0u64), 0..4_000_000_000u64];
    prop_oneof![
        4 => (0..UNIVERSE, elapsed_ns.clone())
            .prop_map(|(flow, elapsed_ns)| Operation::Packet { flow, elapsed_ns }),
        1 => (0..UNIVERSE).prop_map(|flow| Operation::Remove { flow }),
        1 => elapsed_ns.prop_map(|elapsed_ns| Operation::Expire { elapsed_ns }),
        3 => (0..12usize).prop_map(|slots| Operation::Walk { slots }),
    ]
}

struct Walk {
    cursor: Option<FlowCursor>,
    present_at_start: Vec<bool>,
    /// Inserted, removed or expired since the walk started.
    changed: Vec<bool>,
    visits: Vec<u32>,
    /// A visit of a flow no longer in the table (a freed slot taken for live).
    visited_absent: bool,
}

fn flow_of(flows: &[PacketTuple], key: &FlowKey) -> usize {
    flows
        .iter()
        .position(|tuple| FlowKey::from_packet(tuple).0 == *key)
        .expect("keys come from the universe")
}

fn present(table: &FlowTable<u16>, tuple: &PacketTuple) -> bool {
    support::contains(table, tuple)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_walk_visits_each_flow_present_throughout_exactly_once(
        initial in prop::collection::vec(any::<bool>(), UNIVERSE),
        operations in prop::collection::vec(operation(), 1..120),
    ) {
        let flows = universe();
        let mut table = FlowTable::<u16>::new(UNIVERSE, timeouts()).unwrap();
        let mut now_ns = 1_000_000_000;
        for (flow, _) in initial.iter().enumerate().filter(|(_, insert)| **insert) {
            support::packet(&mut table, &flows[flow], TcpFlags::NONE, 0, now_ns).unwrap();
        }
        let mut walk = Walk {
            cursor: Some(FlowCursor::default()),
            present_at_start: flows.iter().map(|tuple| present(&table, tuple)).collect(),
            changed: vec![false; UNIVERSE],
            visits: vec![0; UNIVERSE],
            visited_absent: false,
        };
        let finishing = std::iter::repeat_n(Operation::Walk { slots: UNIVERSE }, UNIVERSE);
        for operation in operations.into_iter().chain(finishing) {
            match operation {
                Operation::Packet { flow, elapsed_ns } => {
                    now_ns += elapsed_ns;
                    walk.changed[flow] |= !present(&table, &flows[flow]);
                    support::packet(&mut table, &flows[flow], TcpFlags::NONE, 0, now_ns).unwrap();
                }
                Operation::Remove { flow } => {
                    let (key, _) = FlowKey::from_packet(&flows[flow]);
                    walk.changed[flow] |= table.remove(&key, table.hash(&key)).is_some();
                }
                Operation::Expire { elapsed_ns } => {
                    now_ns += elapsed_ns;
                    table.expire(now_ns, 64, |ended| walk.changed[flow_of(&flows, ended.entry.key())] = true);
                }
                Operation::Walk { slots } => {
                    if let Some(cursor) = walk.cursor {
                        walk.cursor = table.for_each_from(cursor, slots, |entry, _| {
                            let flow = flow_of(&flows, entry.key());
                            walk.visits[flow] += 1;
                            walk.visited_absent |= !present(&table, &flows[flow]);
                        });
                    }
                }
            }
        }
        prop_assert!(walk.cursor.is_none(), "the walk ends");
        prop_assert!(!walk.visited_absent, "only flows in the table are visited");
        for flow in 0..UNIVERSE {
            if walk.present_at_start[flow] && !walk.changed[flow] {
                prop_assert_eq!(walk.visits[flow], 1, "flow {} present throughout", flow);
            }
            if !walk.present_at_start[flow] && !walk.changed[flow] {
                prop_assert_eq!(walk.visits[flow], 0, "flow {} never in the table", flow);
            }
        }
    }
}

#[test]
fn a_walk_in_small_steps_sees_what_for_each_sees() {
    let flows = universe();
    let mut table = FlowTable::<u16>::new(UNIVERSE, timeouts()).unwrap();
    for (index, tuple) in flows.iter().enumerate() {
        support::packet(&mut table, tuple, TcpFlags::NONE, index as u16, 1).unwrap();
    }
    for tuple in flows.iter().step_by(3) {
        let (key, _) = FlowKey::from_packet(tuple);
        table.remove(&key, table.hash(&key));
    }
    let mut all = Vec::new();
    table.for_each(|entry| all.push(entry.value));
    let mut walked = Vec::new();
    let mut cursor = Some(FlowCursor::default());
    let mut calls = 0;
    while let Some(at) = cursor {
        cursor = table.for_each_from(at, 7, |entry, _| walked.push(entry.value));
        calls += 1;
    }
    all.sort_unstable();
    walked.sort_unstable();
    assert_eq!(walked, all);
    assert_eq!(calls, UNIVERSE.div_ceil(7), "seven slots per call");
    let mut visited = 0;
    let next = table.for_each_from(FlowCursor::default(), 0, |_, _| visited += 1);
    assert!(visited <= 1);
    assert_ne!(
        next,
        Some(FlowCursor::default()),
        "a budget of zero still moves on"
    );
}
