//! `vfn-perf pipeline`: the whole worker (pipeline, counters, frame accounting, and with
//! `--rules` the segmentation policy: classifier, flow table) forwarding 64-byte IPv4 frames
//! between two in-memory ports, pinned to one core: packets per second per core and ns per
//! packet. The generating port copies a template into each frame as a NIC's DMA would, so that
//! copy is part of the measured cost. Frames never leave the process. `vfn-perf telemetry`
//! measures with the same code.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use vfn_dataplane::fib::{FibLimits, StaticRoute};
use vfn_dataplane::handoff::FlowSteering;
use vfn_dataplane::iface::{Interface, RpFilter};
use vfn_dataplane::mem_io::{MemIo, MemIoConfig};
use vfn_dataplane::mirror::MirrorSession;
use vfn_dataplane::neigh::{NeighbourKey, NeighbourTimers};
use vfn_dataplane::policy::PolicyLimits;
use vfn_dataplane::router::{Router, RouterSpec};
use vfn_dataplane::telemetry::TelemetryConfig;
use vfn_dataplane::wire::LearnPolicy;
use vfn_dataplane::worker::{Worker, WorkerConfig};
use vfn_rules::{CompileLimits, Context, RuleSetSpec};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Flow counts to measure: distinct synthetic flows, or with `--rules` distinct flows from
    /// the rule set's trace (its 5-tuples, then the same with other source ports). The flow
    /// table holds the default 262,144 flows, or the largest count if that is more.
    #[arg(long, value_delimiter = ',', default_value = "1,100000")]
    flows: Vec<usize>,
    /// Runs per flow count; the table shows median, min and max.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// CPU to pin to.
    #[arg(long, default_value_t = 1)]
    core: usize,
    /// A ClassBench set (e.g. acl1_10k) to enforce as the segmentation policy, traffic from its
    /// trace (each rule allows; the default allows).
    #[arg(long)]
    rules: Option<String>,
    /// Flow telemetry (statistics for every packet's flow, records for the exporter): `true`
    /// (the router's default) or `false`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    telemetry: bool,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/classbench"))]
    classbench: PathBuf,
}

const P0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const P1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 2];
const SERVER_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 2];

fn interface(name: &str, port: u16, mac: [u8; 6], v4: &str, rp_filter: RpFilter) -> Interface {
    Interface {
        name: name.into(),
        port,
        vlan: None,
        mac,
        mtu: 1500,
        rp_filter,
        ipv4: vec![v4.parse().expect("constant")],
        ipv6: Vec::new(),
    }
}

fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(64);
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC).ipv4(src, dst, 64);
    let written = match proto {
        6 => builder
            .tcp(sport, dport, 1, 8192)
            .write(&mut frame, &[0u8; 6]),
        _ => builder.udp(sport, dport).write(&mut frame, &[0u8; 18]),
    };
    written.expect("constant frame");
    frame
}

/// `flows` distinct flows from 198.18.0.0/17 behind p0 to 198.19.0.1 behind the gateway on p1:
/// sources 198.18.0.2 to 198.18.127.254 (not the router's 198.18.0.1, a martian source, nor the
/// subnet's broadcast address), then the same with the next source port.
pub(crate) fn synthetic(flows: usize) -> Vec<Vec<u8>> {
    const SOURCES: usize = (1 << 15) - 3;
    (0..flows)
        .map(|i| {
            let host = 2 + i % SOURCES;
            frame(
                [198, 18, (host >> 8) as u8, host as u8],
                [198, 19, 0, 1],
                17,
                1024 + (i / SOURCES) as u16,
                9,
            )
        })
        .collect()
}

/// Frames of `count` distinct flows: the trace's 5-tuples in order, each once, then the same
/// tuples again with other source ports (a rule may match those differently; every rule
/// allows) until there are `count`, or as many as 65,536 rounds give.
pub(crate) fn trace_flows(tuples: &[crate::rulesets::Tuple], count: usize) -> Vec<Vec<u8>> {
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut frames = Vec::with_capacity(count);
    'rounds: for round in 0..=u16::MAX {
        for &(src, dst, proto, sport, dport) in tuples {
            if frames.len() == count {
                break 'rounds;
            }
            let sport = sport.wrapping_add(round.wrapping_mul(7919));
            if seen.insert((src, dst, proto, sport, dport)) {
                frames.push(frame(src, dst, proto, sport, dport));
            }
        }
    }
    frames
}

/// The options of the benchmarks that compare configurations of the in-memory pipeline on
/// synthetic flows round by round (`vfn-perf handoff`, `vfn-perf mirror`).
#[derive(clap::Args)]
pub struct ComparisonArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Concurrent flows (synthetic UDP flows from as many sources, up to 32,765).
    #[arg(long, default_value_t = 1000)]
    pub flows: usize,
    /// Rounds; each measures every configuration once, the order changing from round to round.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// CPU to pin to.
    #[arg(long, default_value_t = 1)]
    pub core: usize,
}

impl ComparisonArgs {
    /// Pins this thread to the chosen core (a warning if it cannot).
    pub fn pin(&self) {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: self.core }) {
            eprintln!("warning: could not pin to core {}", self.core);
        }
    }

    /// A measurement of the synthetic flows, with a table that holds them all.
    pub fn setup<'a>(&self, policy: Option<&'a RuleSetSpec>, telemetry: bool) -> Setup<'a> {
        let flows = self.flows.max(1);
        Setup {
            templates: synthetic(flows),
            policy,
            telemetry,
            table_flows: flows.next_power_of_two().max(1024),
            seconds: self.seconds,
            two_workers: None,
            mirror_sessions: Vec::new(),
        }
    }
}

/// Median, min and max of `values` (at least one).
pub(crate) fn median_min_max(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

/// One measurement of [`measure`]: the traffic, the router's configuration, and how long.
pub(crate) struct Setup<'a> {
    /// Frames the generating port copies, round robin: one per flow.
    pub templates: Vec<Vec<u8>>,
    /// The segmentation policy; `None`: forwarding only (with telemetry, still a flow table).
    pub policy: Option<&'a RuleSetSpec>,
    pub telemetry: bool,
    /// The flow table's capacity (`PolicyLimits::flows`).
    pub table_flows: usize,
    pub seconds: f64,
    /// `None`: one worker. Some: two workers, both polled by this thread, steering flows so;
    /// all traffic arrives at the first (`vfn-perf handoff`).
    pub two_workers: Option<FlowSteering>,
    /// Mirror sessions the policy's rules may name (`vfn-perf mirror`).
    pub mirror_sessions: Vec<MirrorSession>,
}

/// What one [`measure`] saw.
pub(crate) struct Measurement {
    /// Packets sent on p1 in the measured time.
    pub forwarded: u64,
    /// Packets received on p0 in the measured time.
    pub received: u64,
    pub elapsed: Duration,
    /// Flows in the table after the warm-up (0 without telemetry and without rules).
    pub flows_in_table: usize,
    /// Packets handed from one worker to the other in the measured time.
    pub handed_off: u64,
    /// Mirror copies sent in the measured time (not in `forwarded`).
    pub mirror_copies: u64,
}

impl Measurement {
    pub fn mpps(&self) -> f64 {
        self.forwarded as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Forwards `setup.templates` for `setup.seconds` after a warm-up of at least 300 ms and one
/// pass over the templates (every flow in the table before the clock starts).
pub(crate) fn measure(setup: Setup<'_>) -> Result<Measurement, String> {
    let with_rules = setup.policy.is_some();
    let template_count = setup.templates.len() as u64;
    let spec = RouterSpec {
        port_count: 2,
        interfaces: vec![
            // ClassBench traces come from anywhere: no reverse-path check then.
            interface(
                "p0",
                0,
                P0_MAC,
                "198.18.0.1/17",
                if with_rules {
                    RpFilter::Off
                } else {
                    RpFilter::Strict
                },
            ),
            interface("p1", 1, P1_MAC, "198.18.128.1/24", RpFilter::Strict),
        ],
        routes: vec![StaticRoute {
            prefix: if with_rules {
                "0.0.0.0/0"
            } else {
                "198.19.0.0/16"
            }
            .parse()
            .expect("constant"),
            via: "198.18.128.2".parse().expect("constant"),
            iface: None,
        }],
        fib_limits: FibLimits::default(),
        neighbour_capacity: 64,
        neighbour_timers: NeighbourTimers::default(),
        worker: WorkerConfig {
            flow_steering: setup.two_workers.unwrap_or_default(),
            ..WorkerConfig::default()
        },
        policy: PolicyLimits {
            flows: setup.table_flows,
            workers: if setup.two_workers.is_some() { 2 } else { 1 },
            telemetry: TelemetryConfig {
                enabled: setup.telemetry,
                ..TelemetryConfig::default()
            },
            ..PolicyLimits::default()
        },
        dynamic_entries: 0,
        mirror_sessions: setup.mirror_sessions.clone(),
    };
    let mut router =
        Router::build(spec, Instant::now(), Box::new(|_| {})).map_err(|e| e.to_string())?;
    let mut slow = router.take_slow_path().ok_or("no slow path")?;
    let gateway = NeighbourKey {
        iface: 1,
        addr: "198.18.128.2".parse().expect("constant"),
    };
    slow.neighbours_mut()
        .learned(gateway, SERVER_MAC, LearnPolicy::Create, Duration::ZERO);
    slow.neighbours_mut().publish();
    if let Some(spec) = setup.policy {
        let interfaces = router.interfaces.clone();
        let lookup = |name: &str| interfaces.by_name(name);
        let session = |name: &str| {
            setup
                .mirror_sessions
                .iter()
                .position(|session| session.name == name)
                .and_then(|index| u16::try_from(index).ok())
        };
        let rules = vfn_rules::compile(
            spec,
            &Context {
                interface: &lookup,
                mirror_session: &session,
            },
            &CompileLimits::default(),
        )
        .map_err(|e| e.to_string())?;
        router.policy.publish(Some(rules));
    }
    let mut workers = Vec::with_capacity(2);
    for index in 0..if setup.two_workers.is_some() { 2 } else { 1 } {
        let mut io = MemIo::new(MemIoConfig {
            ports: 2,
            frame_count: 4096,
            frame_size: 2048,
            ring_size: 1024,
        });
        if index == 0 {
            io.generate(0, setup.templates.clone());
        }
        io.discard_sent(1);
        workers.push(router.worker(io).map_err(|e| e.to_string())?);
    }
    let poll_all = |workers: &mut [Worker<MemIo>], now: Duration| -> u64 {
        workers
            .iter_mut()
            .map(|worker| worker.poll_once(now) as u64)
            .sum()
    };
    let forwarded =
        |workers: &[Worker<MemIo>]| -> u64 { workers.iter().map(|w| w.io().sent_packets(1)).sum() };
    let copies = |router: &Router| -> u64 {
        router
            .mirror_counters()
            .iter()
            .flat_map(|worker| worker.sessions.iter())
            .map(|session| session.copies.get())
            .sum()
    };
    let handed_off = |workers: &[Worker<MemIo>]| -> u64 {
        workers.iter().map(|w| w.counters().handed_off.get()).sum()
    };
    // Warm up caches, branch predictors and the flow table: every flow is in the table before
    // the measured time, which sees established flows only.
    let warm_until = Instant::now() + Duration::from_millis(300);
    let mut warm_received = 0;
    while Instant::now() < warm_until || warm_received < template_count {
        warm_received += poll_all(&mut workers, Duration::ZERO);
    }
    let flows_in_table = workers.iter().map(Worker::flow_count).sum();
    let (forwarded_before, handed_before, copies_before) =
        (forwarded(&workers), handed_off(&workers), copies(&router));
    let mut received = 0;
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(setup.seconds);
    let mut now = Duration::ZERO;
    while now < deadline {
        // The clock is read once per burst, as the worker loop does.
        now = start.elapsed();
        received += poll_all(&mut workers, now);
    }
    let elapsed = start.elapsed();
    let mirror_copies = copies(&router) - copies_before;
    Ok(Measurement {
        // Copies leave by the same port as the forwarded packets.
        forwarded: forwarded(&workers) - forwarded_before - mirror_copies,
        received,
        elapsed,
        flows_in_table,
        handed_off: handed_off(&workers) - handed_before,
        mirror_copies,
    })
}

pub fn run(args: &Args) -> Result<(), String> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: args.core }) {
        eprintln!("warning: could not pin to core {}", args.core);
    }
    let policy = match &args.rules {
        Some(set) => Some(crate::rulesets::classbench_policy(&args.classbench, set)?),
        None => None,
    };
    match &policy {
        Some((spec, _)) => println!(
            "in-memory pipeline, IPv4 64 B frames, forwarding + {} rules ({}) + flow table, trace flows, telemetry {}, 1 worker on core {}",
            spec.rules.len(),
            spec.version,
            args.telemetry,
            args.core
        ),
        None => println!(
            "in-memory pipeline, IPv4 UDP 64 B frames, forwarding, telemetry {}, 1 worker on core {}",
            args.telemetry, args.core
        ),
    }
    // A table for the largest count: no flow is evicted.
    let table_flows = args
        .flows
        .iter()
        .fold(PolicyLimits::default().flows, |table, &f| table.max(f));
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>10}",
        "flows", "Mpps median", "Mpps min", "Mpps max", "ns/packet"
    );
    for &flows in &args.flows {
        let flows = flows.max(1);
        let templates = match &policy {
            Some((_, tuples)) => trace_flows(tuples, flows),
            None => synthetic(flows),
        };
        let actual = templates.len();
        let mut rates = Vec::with_capacity(args.runs);
        for _ in 0..args.runs.max(1) {
            let measured = measure(Setup {
                templates: templates.clone(),
                policy: policy.as_ref().map(|(spec, _)| spec),
                telemetry: args.telemetry,
                table_flows,
                seconds: args.seconds,
                two_workers: None,
                mirror_sessions: Vec::new(),
            })?;
            rates.push(measured.mpps());
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "{:>8} {:>12.2} {:>12.2} {:>12.2} {:>10.1}",
            actual,
            median,
            rates[0],
            rates[rates.len() - 1],
            1e3 / median
        );
    }
    Ok(())
}
