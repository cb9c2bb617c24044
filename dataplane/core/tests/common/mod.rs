//! The router in memory for integration tests: two ports, a gateway behind p1, MemIo, the slow
//! path stepped by hand with a virtual clock.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use vfn_dataplane::change::{ChangeError, PendingChange};
use vfn_dataplane::fib::{FibLimits, StaticRoute};
use vfn_dataplane::iface::{Interface, RpFilter};
use vfn_dataplane::io::PacketIo;
use vfn_dataplane::mem_io::{MemIo, MemIoConfig};
use vfn_dataplane::mirror::MirrorSession;
use vfn_dataplane::neigh::NeighbourTimers;
use vfn_dataplane::policy::PolicyLimits;
use vfn_dataplane::router::{Router, RouterSpec};
use vfn_dataplane::slowpath::SlowPath;
use vfn_dataplane::worker::{Worker, WorkerConfig};
use vfn_rules::{CompileLimits, Context, RuleSetSpec};

pub const P0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const P1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 2];
pub const SERVER_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 2];
/// A client behind p0 and a server (a remote address) behind p1.
pub const CLIENT: [u8; 4] = [198, 18, 1, 2];
pub const SERVER: [u8; 4] = [198, 19, 0, 1];

pub struct Bench {
    pub worker: Worker<MemIo>,
    pub slow: SlowPath,
    pub router: Router,
    pub now: Duration,
}

pub fn interface(name: &str, port: u16, mac: [u8; 6], v4: &str, v6: &str) -> Interface {
    Interface {
        name: name.into(),
        port,
        vlan: None,
        mac,
        mtu: 1500,
        rp_filter: RpFilter::Strict,
        ipv4: vec![v4.parse().expect("fixture")],
        ipv6: vec![v6.parse().expect("fixture")],
    }
}

impl Bench {
    pub fn new() -> Bench {
        Bench::with_server_mtu(1500)
    }

    pub fn with_server_mtu(server_mtu: u16) -> Bench {
        Bench::build(server_mtu, WorkerConfig::default())
    }

    pub fn build(server_mtu: u16, worker: WorkerConfig) -> Bench {
        Bench::build_with(server_mtu, worker, RpFilter::Strict)
    }

    /// A bench whose ports check reverse paths with `rp_filter`.
    pub fn build_with(server_mtu: u16, worker: WorkerConfig, rp_filter: RpFilter) -> Bench {
        Bench::build_with_policy(server_mtu, worker, rp_filter, small_policy_limits(1024))
    }

    /// A bench whose worker's flow table holds `flows`.
    pub fn with_flow_capacity(flows: usize) -> Bench {
        Bench::with_policy_limits(small_policy_limits(flows))
    }

    /// A bench whose worker's policy state (flow table, telemetry) has `policy`'s limits.
    pub fn with_policy_limits(policy: PolicyLimits) -> Bench {
        Bench::build_with_policy(1500, WorkerConfig::default(), RpFilter::Strict, policy)
    }

    /// A bench with these mirror sessions.
    pub fn with_mirror_sessions(mirror_sessions: Vec<MirrorSession>) -> Bench {
        Bench::build_with_mirrors(
            1500,
            WorkerConfig::default(),
            RpFilter::Strict,
            small_policy_limits(1024),
            mirror_sessions,
        )
    }

    fn build_with_policy(
        server_mtu: u16,
        worker: WorkerConfig,
        rp_filter: RpFilter,
        policy: PolicyLimits,
    ) -> Bench {
        Bench::build_with_mirrors(server_mtu, worker, rp_filter, policy, Vec::new())
    }

    fn build_with_mirrors(
        server_mtu: u16,
        worker: WorkerConfig,
        rp_filter: RpFilter,
        policy: PolicyLimits,
        mirror_sessions: Vec<MirrorSession>,
    ) -> Bench {
        let spec = RouterSpec {
            port_count: 2,
            interfaces: vec![
                Interface {
                    rp_filter,
                    ..interface("p0", 0, P0_MAC, "198.18.1.1/24", "2001:2:0:1::1/64")
                },
                Interface {
                    mtu: server_mtu,
                    rp_filter,
                    ..interface("p1", 1, P1_MAC, "198.18.2.1/24", "2001:2:0:2::1/64")
                },
            ],
            routes: vec![StaticRoute {
                prefix: "198.19.0.0/16".parse().expect("p"),
                via: "198.18.2.2".parse().expect("a"),
                iface: None,
            }],
            fib_limits: FibLimits::default(),
            neighbour_capacity: 64,
            neighbour_timers: NeighbourTimers::default(),
            worker,
            policy,
            dynamic_entries: 16,
            mirror_sessions,
        };
        let mut router = Router::build(spec, Instant::now(), Box::new(|_| {})).expect("valid");
        let slow = router.take_slow_path().expect("one slow path");
        let io = MemIo::new(MemIoConfig {
            ports: 2,
            frame_count: 1024,
            frame_size: 2048,
            ring_size: 256,
        });
        let mut bench = Bench {
            worker: router.worker(io).expect("policy state"),
            slow,
            router,
            now: Duration::from_secs(1),
        };
        // The router solicits its gateway at once; the server answers.
        let [_, out1] = bench.settle();
        assert!(
            out1.iter()
                .any(|f| f[12..14] == [0x08, 0x06] && f[38..42] == [198, 18, 2, 2]),
            "gateway solicited"
        );
        bench.exchange(
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
        bench
    }

    /// Delivers `frame` on `port`, runs worker and slow path until quiet, returns what each port sent.
    pub fn exchange(&mut self, port: u16, frame: &[u8]) -> [Vec<Vec<u8>>; 2] {
        self.worker.io_mut().inject(port, frame).expect("room");
        self.settle()
    }

    pub fn settle(&mut self) -> [Vec<Vec<u8>>; 2] {
        for _ in 0..4 {
            self.worker.poll_once(self.now);
            self.slow.step(self.now);
        }
        self.worker.poll_once(self.now);
        [
            self.worker.io_mut().take_sent(0),
            self.worker.io_mut().take_sent(1),
        ]
    }

    /// Lets the slow path make a change the control side sent; returns the answer.
    pub fn settle_change<T, E>(
        &mut self,
        pending: PendingChange<T, E>,
    ) -> Result<T, ChangeError<E>> {
        self.slow.step(self.now);
        pending.wait(Duration::from_secs(1))
    }

    pub fn assert_balanced(&self) {
        let accounting = self.worker.io().accounting();
        assert!(accounting.is_balanced(), "{accounting:?}");
        assert_eq!(accounting.in_hand, 0, "{accounting:?}");
    }
}

/// Policy limits with a flow table of `flows`.
pub fn small_policy_limits(flows: usize) -> PolicyLimits {
    PolicyLimits {
        flows,
        ..PolicyLimits::default()
    }
}

pub fn arp(
    op: u16,
    sender_mac: [u8; 6],
    sender: [u8; 4],
    target_mac: [u8; 6],
    target: [u8; 4],
    dst: [u8; 6],
) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&sender_mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
    f[22..28].copy_from_slice(&sender_mac);
    f[28..32].copy_from_slice(&sender);
    f[32..38].copy_from_slice(&target_mac);
    f[38..42].copy_from_slice(&target);
    f
}

/// A UDP packet from the client (on p0) to `dst`.
pub fn udp_to(dst: [u8; 4], ttl: u8) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4([198, 18, 1, 2], dst, ttl)
        .udp(1000, 2000)
        .write(&mut frame, &[9; 20])
        .expect("build");
    frame
}

/// The client's ARP request for the router: the router learns the client and answers.
pub fn client_resolves_router(bench: &mut Bench) -> [Vec<Vec<u8>>; 2] {
    bench.exchange(
        0,
        &arp(
            1,
            CLIENT_MAC,
            [198, 18, 1, 2],
            [0; 6],
            [198, 18, 1, 1],
            [0xff; 6],
        ),
    )
}

/// A UDP datagram with 8 bytes of payload between the client and the server, framed for the port
/// its source sits behind (a source other than the client is behind p1).
pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let (src_mac, dst_mac) = if src == CLIENT {
        (CLIENT_MAC, P0_MAC)
    } else {
        (SERVER_MAC, P1_MAC)
    };
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut frame, &[0x22; 8])
        .expect("build");
    frame
}

/// Compiles `spec` against `router`'s interfaces and mirror sessions and publishes it; returns
/// its generation.
pub fn publish(router: &mut Router, spec: &RuleSetSpec) -> u32 {
    let interfaces = router.interfaces.clone();
    let sessions = router.mirror_sessions.clone();
    let interface = |name: &str| interfaces.by_name(name);
    let mirror_session = |name: &str| {
        sessions
            .iter()
            .position(|session| session.name == name)
            .and_then(|index| u16::try_from(index).ok())
    };
    let rules = vfn_rules::compile(
        spec,
        &Context {
            interface: &interface,
            mirror_session: &mirror_session,
        },
        &CompileLimits::default(),
    )
    .expect("valid rule set");
    router.policy.publish(Some(rules))
}
