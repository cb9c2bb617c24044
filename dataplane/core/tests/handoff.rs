//! Two workers in memory whose ports spread a flow's directions over both (as a NIC's
//! asymmetric RSS does): handoff brings both directions to one worker, so replies find the state
//! that lets them pass and telemetry sees one flow; without it (steering left to a NIC that does
//! not do it) they do not.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vfn_dataplane::counters::DropReason;
use vfn_dataplane::fib::{FibLimits, StaticRoute};
use vfn_dataplane::handoff::FlowSteering;
use vfn_dataplane::io::PacketIo;
use vfn_dataplane::mem_io::{MemIo, MemIoConfig};
use vfn_dataplane::neigh::NeighbourTimers;
use vfn_dataplane::policy::PolicyLimits;
use vfn_dataplane::router::{Router, RouterSpec};
use vfn_dataplane::slowpath::SlowPath;
use vfn_dataplane::telemetry::TelemetryConfig;
use vfn_dataplane::worker::{Worker, WorkerConfig};
use vfn_rules::{Action, AddressMatch, DefaultAction, PortRange, Protocol, RuleSetSpec, RuleSpec};

/// Flows between the client and as many servers behind the gateway.
const FLOWS: u8 = 64;

struct TwoWorkers {
    workers: [Worker<MemIo>; 2],
    slow: SlowPath,
    router: Router,
    now: Duration,
}

impl TwoWorkers {
    fn new(flow_steering: FlowSteering, telemetry: bool) -> TwoWorkers {
        let spec = RouterSpec {
            port_count: 2,
            interfaces: vec![
                interface("p0", 0, P0_MAC, "198.18.1.1/24", "2001:2:0:1::1/64"),
                interface("p1", 1, P1_MAC, "198.18.2.1/24", "2001:2:0:2::1/64"),
            ],
            routes: vec![StaticRoute {
                prefix: "198.19.0.0/16".parse().expect("p"),
                via: "198.18.2.2".parse().expect("a"),
                iface: None,
            }],
            fib_limits: FibLimits::default(),
            neighbour_capacity: 64,
            neighbour_timers: NeighbourTimers::default(),
            worker: WorkerConfig {
                flow_steering,
                ..WorkerConfig::default()
            },
            policy: PolicyLimits {
                flows: 1024,
                workers: 2,
                telemetry: TelemetryConfig {
                    enabled: telemetry,
                    ..TelemetryConfig::default()
                },
                ..PolicyLimits::default()
            },
            dynamic_entries: 16,
            mirror_sessions: Vec::new(),
        };
        let mut router = Router::build(spec, Instant::now(), Box::new(|_| {})).expect("valid");
        let slow = router.take_slow_path().expect("one slow path");
        let io = || {
            MemIo::new(MemIoConfig {
                ports: 2,
                frame_count: 1024,
                frame_size: 2048,
                ring_size: 256,
            })
        };
        let workers = [
            router.worker(io()).expect("worker 0"),
            router.worker(io()).expect("worker 1"),
        ];
        let mut bench = TwoWorkers {
            workers,
            slow,
            router,
            now: Duration::from_secs(1),
        };
        // The gateway (behind p1) and the client (behind p0) make themselves known.
        bench.settle();
        bench.deliver(
            0,
            1,
            &arp(
                2,
                SERVER_MAC,
                [198, 18, 2, 2],
                P1_MAC,
                [198, 18, 2, 1],
                P1_MAC,
            ),
        );
        bench.deliver(
            0,
            0,
            &arp(1, CLIENT_MAC, CLIENT, [0; 6], [198, 18, 1, 1], [0xff; 6]),
        );
        bench.settle();
        bench
    }

    /// Runs both workers and the slow path until quiet; returns what each port sent (both
    /// workers together).
    fn settle(&mut self) -> [Vec<Vec<u8>>; 2] {
        for _ in 0..4 {
            for worker in &mut self.workers {
                worker.poll_once(self.now);
            }
            self.slow.step(self.now);
        }
        for worker in &mut self.workers {
            worker.poll_once(self.now);
        }
        let mut sent = [Vec::new(), Vec::new()];
        for worker in &mut self.workers {
            for (port, out) in sent.iter_mut().enumerate() {
                out.extend(worker.io_mut().take_sent(port as u16));
            }
        }
        sent
    }

    /// `frame` arrives at `worker` on `port`; returns what each port sent.
    fn deliver(&mut self, worker: usize, port: u16, frame: &[u8]) -> [Vec<Vec<u8>>; 2] {
        self.workers[worker]
            .io_mut()
            .inject(port, frame)
            .expect("room");
        self.settle()
    }

    /// One request from the client to server `n` arriving at worker `n % 2`, and its reply at
    /// the other worker; whether each left by the port towards its destination.
    fn exchange(&mut self, n: u8) -> (bool, bool) {
        let server = [198, 19, 0, n];
        let there = self.deliver(usize::from(n % 2), 0, &udp(CLIENT, server, 40_000, 7_000));
        let back = self.deliver(
            usize::from(1 - n % 2),
            1,
            &udp(server, CLIENT, 7_000, 40_000),
        );
        (there[1].len() == 1, back[0].len() == 1)
    }

    fn counter(&self, read: impl Fn(&Worker<MemIo>) -> u64) -> [u64; 2] {
        [read(&self.workers[0]), read(&self.workers[1])]
    }

    fn assert_balanced(&self) {
        for worker in &self.workers {
            let accounting = worker.io().accounting();
            assert!(accounting.is_balanced(), "{accounting:?}");
            assert_eq!(accounting.in_hand, 0, "{accounting:?}");
        }
    }
}

/// Only the client may open flows, to UDP port 7000 of the servers.
fn client_opens_udp_7000() -> RuleSetSpec {
    RuleSetSpec {
        version: "client-opens".into(),
        default_action: DefaultAction::Deny,
        rules: vec![RuleSpec {
            destination: AddressMatch {
                prefixes: vec!["198.19.0.0/16".parse().expect("p")],
                ..AddressMatch::default()
            },
            protocol: Some(Protocol::Udp),
            destination_ports: vec![PortRange::single(7_000)],
            ..RuleSpec::new("client-opens", Action::Allow)
        }],
        ..RuleSetSpec::default()
    }
}

#[test]
fn replies_arriving_at_the_other_worker_pass_under_a_default_deny() {
    let mut bench = TwoWorkers::new(FlowSteering::Handoff, false);
    publish(&mut bench.router, &client_opens_udp_7000());
    for n in 1..=FLOWS {
        assert_eq!(bench.exchange(n), (true, true), "flow to server {n}");
    }
    // Unsolicited: no flow lets it through, whichever worker judges it.
    let unsolicited = udp([198, 19, 0, 1], CLIENT, 7_001, 40_000);
    assert!(bench.deliver(0, 1, &unsolicited)[0].is_empty());
    assert!(bench.deliver(1, 1, &unsolicited)[0].is_empty());

    let flows = bench.counter(|w| w.flow_count() as u64);
    assert_eq!(flows[0] + flows[1], u64::from(FLOWS), "one entry per flow");
    assert!(
        flows.iter().all(|&n| n > 0),
        "both workers own flows: {flows:?}"
    );
    let handed_off = bench.counter(|w| w.counters().handed_off.get());
    let handed_in = bench.counter(|w| w.counters().handed_in.get());
    // Each flow's request or reply (or both) arrived away from its owner.
    assert!(
        handed_off[0] + handed_off[1] >= u64::from(FLOWS),
        "{handed_off:?}"
    );
    assert_eq!(handed_off[0], handed_in[1]);
    assert_eq!(handed_off[1], handed_in[0]);
    let default_drops = bench.counter(|w| w.counters().drops_for(DropReason::PolicyDefault));
    assert_eq!(default_drops[0] + default_drops[1], 2);
    bench.assert_balanced();
}

#[test]
fn without_handoff_replies_at_the_other_worker_are_dropped() {
    // The test above can fail: here nothing brings the directions together.
    let mut bench = TwoWorkers::new(FlowSteering::Nic, false);
    publish(&mut bench.router, &client_opens_udp_7000());
    let replies = (1..=FLOWS).filter(|&n| bench.exchange(n).1).count();
    assert_eq!(replies, 0);
    let handed_off = bench.counter(|w| w.counters().handed_off.get());
    assert_eq!(handed_off, [0, 0]);
}

#[test]
fn telemetry_sees_one_flow_per_pair_of_directions() {
    let mut bench = TwoWorkers::new(FlowSteering::Handoff, true);
    for n in 1..=FLOWS {
        assert_eq!(bench.exchange(n), (true, true), "flow to server {n}");
    }
    let flows = bench.counter(|w| w.flow_count() as u64);
    assert_eq!(flows[0] + flows[1], u64::from(FLOWS));

    let mut split = TwoWorkers::new(FlowSteering::Nic, true);
    for n in 1..=FLOWS {
        split.exchange(n);
    }
    let flows = split.counter(|w| w.flow_count() as u64);
    assert_eq!(
        flows[0] + flows[1],
        2 * u64::from(FLOWS),
        "two one-way flows each"
    );
}

#[test]
fn stateless_forwarding_hands_nothing_off() {
    let mut bench = TwoWorkers::new(FlowSteering::Handoff, false);
    for n in 1..=FLOWS {
        assert_eq!(bench.exchange(n), (true, true));
    }
    assert_eq!(bench.counter(|w| w.counters().handed_off.get()), [0, 0]);
    assert_eq!(bench.counter(|w| w.flow_count() as u64), [0, 0]);
}
