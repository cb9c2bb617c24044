//! `vfn-perf`: benchmarks of the VFN that need no network.
//!
//! `pipeline`: the whole worker (pipeline, counters, frame accounting) forwarding 64-byte UDP
//! between two in-memory ports, pinned to one core: packets per second per core and ns per
//! packet. The generating port copies a template into each frame as a NIC's DMA would, so that
//! copy is part of the measured cost.

mod classify;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use etherparse::PacketBuilder;
use vfn_dataplane::fib::{FibLimits, StaticRoute};
use vfn_dataplane::iface::{Interface, RpFilter};
use vfn_dataplane::mem_io::{MemIo, MemIoConfig};
use vfn_dataplane::neigh::{NeighbourKey, NeighbourTimers};
use vfn_dataplane::policy::PolicyLimits;
use vfn_dataplane::router::{Router, RouterSpec};
use vfn_dataplane::wire::LearnPolicy;
use vfn_dataplane::worker::WorkerConfig;

#[derive(Parser)]
#[command(about = "Benchmarks of the VFN that need no network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forwarding rate of the in-memory pipeline, one core.
    Pipeline {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Flow counts to measure (distinct source address and port pairs).
        #[arg(long, value_delimiter = ',', default_value = "1,100000")]
        flows: Vec<usize>,
        /// Runs per flow count; the table shows median, min and max.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// CPU to pin to.
        #[arg(long, default_value_t = 1)]
        core: usize,
    },
    /// The packet classifier on ClassBench sets, against DPDK's rte_acl.
    Classbench(classify::Args),
}

const P0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const P1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 2];
const SERVER_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 2];

fn interface(name: &str, port: u16, mac: [u8; 6], v4: &str) -> Interface {
    Interface {
        name: name.into(),
        port,
        vlan: None,
        mac,
        mtu: 1500,
        rp_filter: RpFilter::Strict,
        ipv4: vec![v4.parse().expect("constant")],
        ipv6: Vec::new(),
    }
}

/// 64-byte frames (with FCS: 60 here) of `flows` distinct flows from 198.18.0.0/16 behind p0 to
/// 198.19.0.0/16 behind the gateway on p1.
fn templates(flows: usize) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let src = [198, 18, (i >> 8) as u8 & 0x7f, i as u8];
            let mut frame = Vec::with_capacity(64);
            PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
                .ipv4(src, [198, 19, 0, 1], 64)
                .udp(1024 + (i >> 15) as u16, 9)
                .write(&mut frame, &[0u8; 18])
                .expect("constant frame");
            frame
        })
        .collect()
}

/// Forwards for `seconds`; returns packets forwarded and the elapsed time.
fn measure(flows: usize, seconds: f64) -> (u64, Duration) {
    let spec = RouterSpec {
        port_count: 2,
        interfaces: vec![
            interface("p0", 0, P0_MAC, "198.18.0.1/17"),
            interface("p1", 1, P1_MAC, "198.18.128.1/24"),
        ],
        routes: vec![StaticRoute {
            prefix: "198.19.0.0/16".parse().expect("constant"),
            via: "198.18.128.2".parse().expect("constant"),
            iface: None,
        }],
        fib_limits: FibLimits::default(),
        neighbour_capacity: 64,
        neighbour_timers: NeighbourTimers::default(),
        worker: WorkerConfig::default(),
        policy: PolicyLimits::default(),
        dynamic_entries: 0,
    };
    let mut router = Router::build(spec, Instant::now(), Box::new(|_| {})).expect("constant spec");
    let mut slow = router.take_slow_path().expect("one slow path");
    let gateway = NeighbourKey {
        iface: 1,
        addr: "198.18.128.2".parse().expect("constant"),
    };
    slow.neighbours_mut()
        .learned(gateway, SERVER_MAC, LearnPolicy::Create, Duration::ZERO);
    slow.neighbours_mut().publish();

    let mut io = MemIo::new(MemIoConfig {
        ports: 2,
        frame_count: 4096,
        frame_size: 2048,
        ring_size: 1024,
    });
    io.generate(0, templates(flows));
    io.discard_sent(1);
    let mut worker = router.worker(io).expect("the default flow table builds");
    // Warm up caches and branch predictors.
    let warm_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < warm_until {
        worker.poll_once(Duration::ZERO);
    }
    let before = worker.io().sent_packets(1);
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(seconds);
    let mut now = Duration::ZERO;
    while now < deadline {
        // The clock is read once per burst, as the worker loop does.
        now = start.elapsed();
        worker.poll_once(now);
    }
    let elapsed = start.elapsed();
    (worker.io().sent_packets(1) - before, elapsed)
}

fn main() {
    match Cli::parse().command {
        Command::Classbench(args) => classify::run(&args),
        Command::Pipeline {
            seconds,
            flows,
            runs,
            core,
        } => {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                eprintln!("warning: could not pin to core {core}");
            }
            println!(
                "in-memory pipeline, IPv4 UDP 64 B frames, forwarding only, 1 worker pinned to core {core}"
            );
            println!(
                "{:>8} {:>12} {:>12} {:>12} {:>10}",
                "flows", "Mpps median", "Mpps min", "Mpps max", "ns/packet"
            );
            for &flow_count in &flows {
                let mut rates: Vec<f64> = (0..runs.max(1))
                    .map(|_| {
                        let (packets, elapsed) = measure(flow_count.max(1), seconds);
                        packets as f64 / elapsed.as_secs_f64() / 1e6
                    })
                    .collect();
                rates.sort_by(f64::total_cmp);
                let median = rates[rates.len() / 2];
                println!(
                    "{:>8} {:>12.2} {:>12.2} {:>12.2} {:>10.1}",
                    flow_count,
                    median,
                    rates[0],
                    rates[rates.len() - 1],
                    1e3 / median
                );
            }
        }
    }
}
