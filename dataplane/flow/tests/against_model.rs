//! The table against a `HashMap` model under random packets, removals and expiry calls: same
//! flows, values, directions, timestamps and TCP states, and `expire` reports exactly the flows
//! idle for at least their timeout (never one that is not, all of them once it catches up).

mod support;

use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;
use support::{ipv4, ipv6, reply};
use vfn_flow::{
    Direction, FlowKey, FlowTable, InsertError, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PacketTuple,
    TcpFlags, TcpState, Timeouts, update_tcp_state,
};

const UNIVERSE: usize = 24;

fn timeouts() -> Timeouts {
    Timeouts {
        tcp_established: Duration::from_secs(10),
        tcp_transitory: Duration::from_millis(2_500),
        udp: Duration::from_secs(3),
        icmp: Duration::from_millis(1_000),
        other: Duration::from_millis(1_700),
    }
}

fn timeout_ns(proto: u8, tcp: TcpState) -> u64 {
    let timeouts = timeouts();
    let timeout = match proto {
        PROTO_TCP if tcp == TcpState::Established => timeouts.tcp_established,
        PROTO_TCP => timeouts.tcp_transitory,
        PROTO_UDP => timeouts.udp,
        PROTO_ICMP => timeouts.icmp,
        _ => timeouts.other,
    };
    timeout.as_nanos() as u64
}

/// A fixed set of flows, IPv4 and IPv6, of each timeout class.
fn universe() -> Vec<PacketTuple> {
    (0..UNIVERSE as u32)
        .map(|index| {
            let (src, dst) = if index % 2 == 0 {
                (ipv4(index), ipv4(1000 + index))
            } else {
                (ipv6(u64::from(index)), ipv6(1000 + u64::from(index)))
            };
            match index % 4 {
                0 => support::tcp(src, dst, 40000 + index as u16, 80),
                1 => support::udp(src, dst, 5000, 53),
                2 => PacketTuple::icmp_echo(src, dst, PROTO_ICMP, index as u16, 1),
                _ => PacketTuple::portless(src, dst, 47, 1),
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Operation {
    Packet {
        flow: usize,
        reply: bool,
        flags: u8,
        value: u16,
        elapsed_ns: u64,
    },
    Remove {
        flow: usize,
    },
    Expire {
        budget: usize,
        elapsed_ns: u64,
    },
}

fn elapsed_ns() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        0..2_000_000u64,
        0..4_000_000_000u64,
        prop::sample::select(vec![
            1_000_000_000,
            1_700_000_000,
            2_500_000_000,
            3_000_000_000
        ]),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    let flags = prop::sample::select(vec![0x02u8, 0x12, 0x10, 0x11, 0x04, 0x18]);
    prop_oneof![
        6 => (0..UNIVERSE, any::<bool>(), flags, any::<u16>(), elapsed_ns()).prop_map(
            |(flow, reply, flags, value, elapsed_ns)| Operation::Packet { flow, reply, flags, value, elapsed_ns }
        ),
        1 => (0..UNIVERSE).prop_map(|flow| Operation::Remove { flow }),
        2 => (0..40usize, elapsed_ns()).prop_map(|(budget, elapsed_ns)| Operation::Expire { budget, elapsed_ns }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelFlow {
    value: u16,
    initiator_reply: bool,
    first_seen_ns: u64,
    last_seen_ns: u64,
    tcp: TcpState,
}

struct Harness {
    table: FlowTable<u16>,
    model: HashMap<usize, ModelFlow>,
    flows: Vec<PacketTuple>,
    now_ns: u64,
}

impl Harness {
    fn tuple(&self, flow: usize, reply_direction: bool) -> PacketTuple {
        if reply_direction {
            reply(&self.flows[flow])
        } else {
            self.flows[flow]
        }
    }

    fn packet(
        &mut self,
        flow: usize,
        is_reply: bool,
        flags: TcpFlags,
        value: u16,
    ) -> Result<(), TestCaseError> {
        let tuple = self.tuple(flow, is_reply);
        let direction = support::packet(&mut self.table, &tuple, flags, value, self.now_ns)
            .expect("capacity covers the universe");
        let now_ns = self.now_ns;
        let proto = tuple.proto;
        match self.model.get_mut(&flow) {
            Some(model) => {
                let expected = if model.initiator_reply == is_reply {
                    Direction::Forward
                } else {
                    Direction::Reverse
                };
                prop_assert_eq!(direction, expected);
                model.last_seen_ns = now_ns;
                if proto == PROTO_TCP {
                    model.tcp = update_tcp_state(model.tcp, direction, flags);
                }
            }
            None => {
                prop_assert_eq!(direction, Direction::Forward);
                let tcp = if proto == PROTO_TCP {
                    update_tcp_state(TcpState::None, Direction::Forward, flags)
                } else {
                    TcpState::None
                };
                let model = ModelFlow {
                    value,
                    initiator_reply: is_reply,
                    first_seen_ns: now_ns,
                    last_seen_ns: now_ns,
                    tcp,
                };
                self.model.insert(flow, model);
            }
        }
        Ok(())
    }

    fn flow_of(&self, key: &FlowKey) -> usize {
        self.flows
            .iter()
            .position(|tuple| FlowKey::from_packet(tuple).0 == *key)
            .expect("keys come from the universe")
    }

    fn is_due(&self, model: &ModelFlow, flow: usize) -> bool {
        model.last_seen_ns + timeout_ns(self.flows[flow].proto, model.tcp) <= self.now_ns
    }

    fn expire(&mut self, budget: usize) -> Result<(), TestCaseError> {
        let mut expired = Vec::new();
        let progress = self.table.expire(self.now_ns, budget, |ended| {
            expired.push(*ended.entry.key())
        });
        prop_assert!(progress.work <= budget);
        prop_assert_eq!(progress.expired, expired.len());
        for key in expired {
            let flow = self.flow_of(&key);
            let Some(model) = self.model.remove(&flow) else {
                return Err(TestCaseError::fail(format!(
                    "expired flow {flow} not in the table"
                )));
            };
            prop_assert!(self.is_due(&model, flow), "expired flow {} too early", flow);
        }
        if progress.caught_up {
            for (&flow, model) in &self.model {
                prop_assert!(
                    !self.is_due(model, flow),
                    "flow {} due but not expired",
                    flow
                );
            }
        }
        Ok(())
    }

    fn check_agreement(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.table.len(), self.model.len());
        for (flow, tuple) in self.flows.iter().enumerate() {
            let (key, _) = FlowKey::from_packet(tuple);
            let entry = self.table.get(&key, self.table.hash(&key));
            match (entry, self.model.get(&flow)) {
                (None, None) => {}
                (Some(entry), Some(model)) => {
                    prop_assert_eq!(entry.value, model.value);
                    prop_assert_eq!(entry.first_seen_ns(), model.first_seen_ns);
                    prop_assert_eq!(entry.last_seen_ns(), model.last_seen_ns);
                    prop_assert_eq!(entry.tcp(), model.tcp);
                }
                (entry, model) => {
                    prop_assert!(false, "flow {}: table {:?}, model {:?}", flow, entry, model)
                }
            }
        }
        let mut visited = 0;
        self.table.for_each(|_| visited += 1);
        prop_assert_eq!(visited, self.model.len());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn table_matches_model(operations in prop::collection::vec(operation(), 1..200)) {
        let mut harness = Harness {
            table: FlowTable::new(UNIVERSE, timeouts()).unwrap(),
            model: HashMap::new(),
            flows: universe(),
            now_ns: 5_000_000_000,
        };
        for operation in operations {
            match operation {
                Operation::Packet { flow, reply, flags, value, elapsed_ns } => {
                    harness.now_ns += elapsed_ns;
                    harness.packet(flow, reply, TcpFlags::from_header_byte(flags), value)?;
                }
                Operation::Remove { flow } => {
                    let (key, _) = FlowKey::from_packet(&harness.flows[flow]);
                    let removed = harness.table.remove(&key, harness.table.hash(&key));
                    let model = harness.model.remove(&flow);
                    prop_assert_eq!(removed.map(|entry| entry.value), model.map(|model| model.value));
                }
                Operation::Expire { budget, elapsed_ns } => {
                    harness.now_ns += elapsed_ns;
                    harness.expire(budget)?;
                }
            }
            harness.check_agreement()?;
        }
        // Enough budget catches up: a lap of ticks plus every flow.
        harness.expire(70_000 + UNIVERSE * 4)?;
    }
}

#[test]
fn insert_of_a_present_flow_is_refused() {
    let mut table = FlowTable::<u8>::new(2, timeouts()).unwrap();
    let (key, orientation) = FlowKey::from_packet(&universe()[0]);
    let hash = table.hash(&key);
    table.insert(key, hash, orientation, 1, 0).unwrap();
    assert_eq!(
        table.insert(key, hash, orientation, 2, 0),
        Err(InsertError::AlreadyPresent)
    );
    assert_eq!(table.get(&key, hash).map(|entry| entry.value), Some(1));
}
