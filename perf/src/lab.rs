//! `vfn-perf lab`: routers forwarding between two lab hosts, measured with the XDP generator
//! and sink of `vfn_perf::traffic`, in one run, rows interleaved round by round.
//!
//! The lab: host `gen` (198.18.1.2, 2001:2:0:1::2) and host `sink` (198.18.2.2) linked to a
//! router namespace by veth pairs. The generator, on core `--generator-core`, sends from `gen`
//! to `sink` through the router; the sink, attached to `sink`'s interface, counts what arrives.
//! Rows so far:
//! - `generator`: the sink on the router's port facing `gen`, nothing forwarded: what the
//!   generator and the veth pair can do on this machine, the ceiling of every other row;
//! - `kernel`: Linux forwarding in the router namespace, moved off the generator's core by RPS
//!   on the router's ingress port to `--router-core`;
//! - `nft-linear`, `nft-set`, `conntrack`: the same with an nftables forward chain of 10,000
//!   rules none of which matches, with one rule and a 10,000-element set, or with connection
//!   tracking;
//! - `xdp`: the in-kernel XDP forwarder (`bpf_fib_lookup` and redirect) on the router's ingress
//!   port, the practical ceiling of a router here;
//! - `vfn`: the VFN (`target/release/vfn`, built beside this program) forwarding, no rules, one
//!   worker on `--router-core`, in a second lab of the same shape whose router namespace it
//!   owns (the kernel rows need the kernel to own theirs);
//! - `testpmd`: `dpdk-testpmd` (Debian's `dpdk-dev`) with the af_packet driver on the router's
//!   ports, MAC forwarding on `--router-core`, started for each of its measurements, in a third
//!   lab;
//! - `vfn-rules`: the VFN enforcing the ClassBench set `--rules` (every rule allows, the default
//!   allows), in a fourth lab;
//! - `af-xdp`: the VFN's AF_XDP backend alone moving frames from port to port (MACs rewritten,
//!   nothing else) on `--router-core`, in a fifth lab: the bound AF_XDP sets for the VFN.
//!
//! A figure is frames counted by the sink over the send time, at full load. Nothing leaves the
//! lab's namespaces; every address is in 198.18.0.0/15 or 2001:2::/48; the lab is removed when
//! the run ends, on error too.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use vfn_config::{MirrorDestinationConfig, MirrorDirection, MirrorSessionConfig, PolicySource};
use vfn_lab::{
    ChildGuard, HOST_INTERFACE, HostSpec, Lab, ROUTER_ROLE, RouterMode, RunningVfn, TopologySpec,
    in_netns, install_interrupt_flag, interface_mac, interrupted, lab_config, netns_command,
    remove_stale, vfn_binary,
};
use vfn_perf::traffic::{FLOWS_MAX, Generator, Sink, XdpForwarder, udp_frame};
use vfn_rules::{Action, DefaultAction, Protocol, RuleSetSpec, RuleSpec};
use vfn_xdp::interface_index;

/// Namespaces of this benchmark start with this (the labs of rows that own their router
/// namespace with `Row::own_lab`).
const PREFIX: &str = "vfnbench";
/// The loss a lossless run may have (the first frames of a flow may wait for a neighbour).
const LOSS_TOLERATED: f64 = 1e-4;
/// Bisection steps of the lossless rate: within 1/64 of the full-load rate.
const LOSSLESS_STEPS: usize = 6;

/// How long testpmd may take to open its ports and start forwarding.
const TESTPMD_START: Duration = Duration::from_secs(15);
/// Generator runs per call: a call costs about 25 ms besides its frames (the kernel's frame
/// pool), so calls are long (about half a second at full speed; as long paced, where the runs
/// of frames not yet due drop them) and the time is checked between them.
const CHUNK: u32 = 1 << 21;

#[derive(clap::Args)]
pub struct Args {
    /// Rows to measure, in this order each round.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "generator,kernel,nft-linear,nft-set,conntrack,xdp,testpmd,af-xdp,vfn,vfn-rules,vfn-features,vfn-mirror"
    )]
    rows: Vec<Row>,
    /// Seconds of traffic per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds; the table shows median, min and max.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Distinct flows (UDP source ports and addresses).
    #[arg(long, default_value_t = 1000)]
    flows: u32,
    /// Frame size without the FCS (60 is a 64-byte frame on the wire).
    #[arg(long, default_value_t = 60)]
    size: usize,
    /// IPv6 instead of IPv4 (frames of at least 62 bytes).
    #[arg(long)]
    ipv6: bool,
    /// The CPU of the generator (and of the sink's receive processing).
    #[arg(long, default_value_t = 0)]
    generator_core: usize,
    /// The CPU of the router under test.
    #[arg(long, default_value_t = 1)]
    router_core: usize,
    /// Also find each row's lossless rate (paced runs, bisection) every round.
    #[arg(long)]
    lossless: bool,
    /// Seconds of each paced run of the lossless search.
    #[arg(long, default_value_t = 1.0)]
    lossless_seconds: f64,
    /// The ClassBench set the `vfn-rules` row enforces.
    #[arg(long, default_value = "acl1_10k")]
    rules: String,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/classbench"))]
    classbench: std::path::PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Row {
    Generator,
    Kernel,
    /// Linux forwarding through an nftables forward chain of `NFT_RULES` rules, none matching.
    NftLinear,
    /// The same through one rule that looks the source up in a set of `NFT_RULES` elements.
    NftSet,
    /// Linux forwarding with connection tracking (a forward chain accepting by `ct state`).
    Conntrack,
    /// The in-kernel XDP forwarder on the router's ingress port.
    Xdp,
    /// The VFN forwarding (no rules), one worker on the router's core, in a lab of its own
    /// whose router namespace it owns.
    Vfn,
    /// DPDK's testpmd forwarding between af_packet ports (MAC mode), in a third lab.
    Testpmd,
    /// The VFN enforcing a ClassBench set of about 10k rules (default allow, so every flow is
    /// classified once and forwarded), in a fourth lab.
    VfnRules,
    /// The VFN enforcing the same rules with flow telemetry on (statistics per flow, records to
    /// the exporter), in a lab of its own. The other VFN rows run with telemetry off.
    VfnFeatures,
    /// The VFN forwarding with every packet mirrored as received to an ERSPAN II session whose
    /// analyzer is the sink host (the copies leave by the sink's port too), telemetry off.
    VfnMirror,
    /// The VFN's AF_XDP backend alone: frames moved from one port to the other, MACs rewritten,
    /// nothing else, on the router's core: the bound AF_XDP puts on the VFN here.
    AfXdp,
}

/// Rules of the nftables rows.
const NFT_RULES: usize = 10_000;

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::Generator => "generator to sink, no router (ceiling)",
            Row::Kernel => "Linux forwarding",
            Row::NftLinear => "Linux + nftables, 10k rules (linear)",
            Row::NftSet => "Linux + nftables, 10k-element set",
            Row::Conntrack => "Linux + conntrack",
            Row::Xdp => "in-kernel XDP forwarder (bpf_fib_lookup + redirect)",
            Row::Vfn => "VFN, forwarding only (AF_XDP, copy mode on veth)",
            Row::Testpmd => "dpdk-testpmd, af_packet, MAC forwarding",
            Row::VfnRules => "VFN, ClassBench rules (--rules), flow table",
            Row::VfnFeatures => "VFN, ClassBench rules (--rules), flow table and flow features",
            Row::VfnMirror => "VFN, every packet mirrored (ERSPAN to the sink host)",
            Row::AfXdp => "AF_XDP alone, port to port (the VFN's bound)",
        }
    }

    /// Whether the kernel in the router namespace forwards.
    fn kernel_forwards(self) -> bool {
        self.own_lab().is_none() && self != Row::Generator
    }

    /// The namespace prefix of the lab of a row whose router ports the kernel must not own.
    fn own_lab(self) -> Option<&'static str> {
        match self {
            Row::Vfn => Some("vfnbenchv"),
            Row::VfnRules => Some("vfnbenchr"),
            Row::VfnFeatures => Some("vfnbenchf"),
            Row::VfnMirror => Some("vfnbenchm"),
            Row::Testpmd => Some("vfnbencht"),
            Row::AfXdp => Some("vfnbencha"),
            _ => None,
        }
    }

    /// The router namespace's nftables ruleset for this row, if any. The rules match sources
    /// that the generator never uses (198.19.0.0/16, 2001:2:ff::/64), so each packet passes
    /// all of them and is forwarded.
    fn ruleset(self, ipv6: bool) -> Option<String> {
        let family = if ipv6 { "ip6" } else { "ip" };
        let address = |i: usize| {
            if ipv6 {
                format!("2001:2:ff::{:x}", i + 1)
            } else {
                format!("198.19.{}.{}", i / 256, i % 256)
            }
        };
        let address_type = if ipv6 { "ipv6_addr" } else { "ipv4_addr" };
        let chain = "type filter hook forward priority filter; policy accept;";
        let body = match self {
            Row::Generator
            | Row::Kernel
            | Row::Xdp
            | Row::Vfn
            | Row::Testpmd
            | Row::VfnRules
            | Row::VfnFeatures
            | Row::VfnMirror
            | Row::AfXdp => {
                return None;
            }
            Row::NftLinear => (0..NFT_RULES)
                .map(|i| format!("{family} saddr {} udp dport 9 drop\n", address(i)))
                .collect::<String>(),
            Row::NftSet => {
                let elements: Vec<String> = (0..NFT_RULES).map(address).collect();
                return Some(format!(
                    "table inet vfnbench {{\n set blocked {{ type {address_type}; elements = {{ {} }} }}\n chain forward {{ {chain}\n {family} saddr @blocked drop\n }}\n}}\n",
                    elements.join(", ")
                ));
            }
            Row::Conntrack => "ct state established,related accept\nct state new accept\n".into(),
        };
        Some(format!(
            "table inet vfnbench {{\n chain forward {{ {chain}\n{body} }}\n}}\n"
        ))
    }
}

/// Replaces the router namespace's nftables ruleset by `row`'s (none for rows without one).
fn apply_ruleset(lab: &Lab, args: &Args, row: Row) -> Result<(), String> {
    let router = &lab.topology().router.netns;
    run(netns_command(router, &["nft", "flush", "ruleset"]))?;
    let Some(ruleset) = row.ruleset(args.ipv6) else {
        return Ok(());
    };
    let path = std::env::temp_dir().join(format!("vfn-perf-lab-{}.nft", std::process::id()));
    std::fs::write(&path, ruleset).map_err(|e| format!("{}: {e}", path.display()))?;
    let loaded = run(netns_command(
        router,
        &["nft", "-f", &path.to_string_lossy()],
    ));
    let _ = std::fs::remove_file(&path);
    loaded
}

/// Runs `command`, failing with its output when it fails.
fn run(mut command: Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// RPS on the router's port facing `gen` to `core`: the port's receive (NAPI, in the
/// generator's softirq) hands each packet to `core`, where the kernel forwards it. Threaded
/// NAPI pinned to `core` instead measured a third of this (0.25 against 0.70 Mpps).
fn steer_router_receive(lab: &Lab, core: usize) -> Result<(), String> {
    if core >= 32 {
        return Err(format!("router core {core}: RPS masks here reach core 31"));
    }
    let port = receive_through_napi(lab)?;
    let rps = format!(
        "echo {:x} > /sys/class/net/{port}/queues/rx-0/rps_cpus",
        1u32 << core
    );
    run(netns_command(
        &lab.topology().router.netns,
        &["sh", "-c", &rps],
    ))
}

/// GRO on the router's port facing `gen`, so that veth receives there through NAPI: without a
/// NAPI receive queue (or an XDP program), veth refuses the generator's XDP frames. Returns the
/// port's name.
fn receive_through_napi(lab: &Lab) -> Result<String, String> {
    let port = lab
        .topology()
        .port("gen")
        .map_err(|e| e.to_string())?
        .interface
        .clone();
    let router = &lab.topology().router.netns;
    run(netns_command(
        router,
        &["ethtool", "-K", &port, "gro", "on"],
    ))?;
    Ok(port)
}

/// The frame the generator sends: from `gen` to `sink` through the router's port.
fn template(lab: &Lab, args: &Args) -> Result<Vec<u8>, String> {
    let topology = lab.topology();
    let sender = topology.host("gen").map_err(|e| e.to_string())?;
    let sink = topology.host("sink").map_err(|e| e.to_string())?;
    let port = topology.port("gen").map_err(|e| e.to_string())?;
    let gen_mac = interface_mac(&sender.netns, HOST_INTERFACE).map_err(|e| e.to_string())?;
    let port_mac =
        interface_mac(&topology.router.netns, &port.interface).map_err(|e| e.to_string())?;
    let (src, dst): (IpAddr, IpAddr) = if args.ipv6 {
        (sender.ipv6.addr(), sink.ipv6.addr())
    } else {
        (sender.ipv4.addr(), sink.ipv4.addr())
    };
    udp_frame(gen_mac, port_mac, src, dst, 10_000, args.size)
}

/// What one measurement saw.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    /// Frames the generator sent.
    sent: u64,
    /// Of those, frames the sink counted.
    received: u64,
    elapsed: Duration,
}

impl Outcome {
    /// Frames per second through the router.
    fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }

    /// Frames per second the generator sent (the kernel may have dropped some before the
    /// router: a veth whose receive queue is full drops what is redirected to it).
    fn offered(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }

    /// Whether the router lost at most `LOSS_TOLERATED` of what was sent.
    fn lossless(&self) -> bool {
        (self.sent - self.received.min(self.sent)) as f64 <= LOSS_TOLERATED * self.sent as f64
    }
}

/// One measurement of `row` for `seconds`, at full load (`pace` none) or paced at `pace`
/// frames per second: the sink attached where `row` needs it, the generator sending.
fn measure(
    lab: &Lab,
    args: &Args,
    row: Row,
    frame: &[u8],
    seconds: f64,
    pace: Option<f64>,
) -> Result<Outcome, String> {
    let topology = lab.topology();
    apply_ruleset(lab, args, row)?;
    let (sink_netns, sink_interface) = match row {
        Row::Generator => (
            topology.router.netns.clone(),
            topology
                .port("gen")
                .map_err(|e| e.to_string())?
                .interface
                .clone(),
        ),
        Row::Kernel
        | Row::NftLinear
        | Row::NftSet
        | Row::Conntrack
        | Row::Xdp
        | Row::Vfn
        | Row::VfnRules
        | Row::VfnFeatures
        | Row::VfnMirror
        | Row::AfXdp
        | Row::Testpmd => (
            topology
                .host("sink")
                .map_err(|e| e.to_string())?
                .netns
                .clone(),
            HOST_INTERFACE.to_string(),
        ),
    };
    let sink = in_netns(&sink_netns, || {
        interface_index(&sink_interface)
            .map_err(|e| e.to_string())
            .and_then(|ifindex| Sink::attach(ifindex).map_err(|e| e.to_string()))
    })
    .map_err(|e| e.to_string())??;
    let router_netns = topology.router.netns.clone();
    let forwarder = if row == Row::Xdp {
        let port = topology
            .port("gen")
            .map_err(|e| e.to_string())?
            .interface
            .clone();
        let attached = in_netns(&router_netns, || {
            interface_index(&port)
                .and_then(XdpForwarder::attach)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())??;
        Some(attached)
    } else {
        None
    };
    let gen_netns = topology
        .host("gen")
        .map_err(|e| e.to_string())?
        .netns
        .clone();
    let seconds = Duration::from_secs_f64(seconds);
    let (elapsed, sent) = in_netns(&gen_netns, || -> Result<(Duration, u64), String> {
        if !core_affinity::set_for_current(core_affinity::CoreId {
            id: args.generator_core,
        }) {
            return Err(format!(
                "cannot pin the generator to core {}",
                args.generator_core
            ));
        }
        let ifindex = interface_index(HOST_INTERFACE).map_err(|e| e.to_string())?;
        let generator =
            Generator::new(ifindex, frame.to_vec(), args.flows, pace).map_err(|e| e.to_string())?;
        let start = Instant::now();
        while start.elapsed() < seconds {
            if interrupted() {
                return Err("interrupted".to_string());
            }
            generator.send(CHUNK).map_err(|e| e.to_string())?;
        }
        let elapsed = start.elapsed();
        Ok((elapsed, generator.sent().map_err(|e| e.to_string())?))
    })
    .map_err(|e| e.to_string())??;
    // Frames still in flight arrive within a moment of the last call.
    std::thread::sleep(Duration::from_millis(100));
    let received = sink.received().map_err(|e| e.to_string())?;
    in_netns(&sink_netns, move || drop(sink)).map_err(|e| e.to_string())?;
    in_netns(&router_netns, move || drop(forwarder)).map_err(|e| e.to_string())?;
    Ok(Outcome {
        sent,
        received,
        elapsed,
    })
}

/// The highest paced rate `row` forwards without loss, by bisection between 0 and `full` (the
/// rate it forwarded at full load), `LOSSLESS_STEPS` measurements of `--lossless-seconds`.
fn lossless_rate(
    measure_at: &mut dyn FnMut(f64) -> Result<Outcome, String>,
    full: f64,
) -> Result<f64, String> {
    let (mut low, mut high) = (0.0, full);
    if measure_at(high)?.lossless() {
        return Ok(high);
    }
    for _ in 0..LOSSLESS_STEPS {
        let middle = (low + high) / 2.0;
        if measure_at(middle)?.lossless() {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// A lab of hosts `gen` (198.18.1.0/24) and `sink` (198.18.2.0/24) around a router namespace,
/// after removing what a killed run with the same prefix left.
fn create_lab(prefix: &str, mode: RouterMode) -> Result<Lab, String> {
    remove_stale(prefix).map_err(|e| e.to_string())?;
    let spec = TopologySpec::new(prefix)
        .with_router_mode(mode)
        .with_host(HostSpec::new("gen", 1))
        .with_host(HostSpec::new("sink", 2));
    Lab::create(&spec).map_err(|e| e.to_string())
}

/// `median | min | max` of frames per second, in Mpps.
fn median_min_max(values: Vec<f64>) -> String {
    let (median, min, max) = mpps_median_min_max(values);
    format!("{median:.3} | {min:.3} | {max:.3}")
}

/// Median, min and max of frames per second, in Mpps.
fn mpps_median_min_max(values: Vec<f64>) -> (f64, f64, f64) {
    let (median, min, max) = crate::pipeline::median_min_max(values);
    (median / 1e6, min / 1e6, max / 1e6)
}

pub fn run_all(args: &Args) -> Result<(), String> {
    if !(1..=FLOWS_MAX).contains(&args.flows) {
        return Err(format!("--flows {}: 1 to {FLOWS_MAX}", args.flows));
    }
    if args.rows.is_empty() || args.rounds == 0 {
        return Err("nothing to measure: give --rows and --rounds".into());
    }
    // Ctrl-C ends the measurement in progress and removes the lab, as an error does.
    install_interrupt_flag().map_err(|e| e.to_string())?;
    let lab = create_lab(PREFIX, RouterMode::Kernel)?;
    // Labs of their own for the rows whose router ports the kernel must not own; dropping a lab
    // (on an error below too) removes it.
    let mut own_labs = Vec::new();
    for &row in &args.rows {
        if let Some(prefix) = row.own_lab() {
            own_labs.push((row, create_lab(prefix, RouterMode::External)?));
        }
    }
    let result = measure_rows(&lab, &own_labs, args);
    let removed = std::iter::once(lab)
        .chain(own_labs.into_iter().map(|(_, lab)| lab))
        .map(|lab| lab.destroy().map_err(|e| e.to_string()))
        .collect::<Result<Vec<()>, String>>();
    let table = result?;
    removed?;
    println!(
        "lab benchmark: {} B frames ({}), {} flows, {} s per measurement, {} rounds; generator on core {}, router on core {}",
        args.size + 4,
        if args.ipv6 { "IPv6 UDP" } else { "IPv4 UDP" },
        args.flows,
        args.seconds,
        args.rounds,
        args.generator_core,
        args.router_core
    );
    if args.lossless {
        println!(
            "| row | Mpps median | Mpps min | Mpps max | lossless Mpps median | lossless min | lossless max | generator sent, Mpps median | where it ran |"
        );
        println!("|---|--:|--:|--:|--:|--:|--:|--:|---|");
    } else {
        println!(
            "| row | Mpps median | Mpps min | Mpps max | generator sent, Mpps median | where it ran |"
        );
        println!("|---|--:|--:|--:|--:|---|");
    }
    for (row, rates) in table {
        let placement = match row {
            Row::Generator => "generator and sink on the generator's core".to_string(),
            Row::Xdp => "XDP and the sink's receive on the generator's core (veth NAPI)".into(),
            Row::Vfn | Row::VfnRules | Row::VfnFeatures | Row::VfnMirror => format!(
                "VFN worker on core {}; ingress copy (veth NAPI) on core {}",
                args.router_core, args.generator_core
            ),
            Row::AfXdp => format!(
                "AF_XDP loop on core {}; ingress copy (veth NAPI) on core {}",
                args.router_core, args.generator_core
            ),
            Row::Testpmd => format!(
                "testpmd forwarding on core {}, its main thread on core {}; ingress NAPI on core {}",
                args.router_core, args.generator_core, args.generator_core
            ),
            Row::Kernel | Row::NftLinear | Row::NftSet | Row::Conntrack => format!(
                "ingress NAPI on core {}, forwarding (RPS) and the sink's receive on core {}",
                args.generator_core, args.router_core
            ),
        };
        let full: Vec<f64> = rates.iter().map(|rates| rates.full).collect();
        let offered: Vec<f64> = rates.iter().map(|rates| rates.offered).collect();
        let lossless: Vec<f64> = rates.iter().filter_map(|rates| rates.lossless).collect();
        let lossless = if lossless.is_empty() {
            String::new()
        } else {
            format!(" {} |", median_min_max(lossless))
        };
        let offered_mpps = mpps_median_min_max(offered).0;
        println!(
            "| {} | {} |{lossless} {offered_mpps:.3} | {placement} |",
            if row == Row::VfnRules {
                format!("VFN, the {} rules, flow table", args.rules)
            } else if row == Row::VfnFeatures {
                format!(
                    "VFN, the {} rules, flow table and flow features",
                    args.rules
                )
            } else {
                row.name().to_string()
            },
            median_min_max(full),
        );
    }
    Ok(())
}

/// One row's rates in one round, in frames per second.
#[derive(Clone, Copy, Debug)]
struct RoundRates {
    /// Through the router at full load.
    full: f64,
    /// What the generator sent at full load.
    offered: f64,
    /// With `--lossless`, the highest paced rate forwarded without loss.
    lossless: Option<f64>,
}

/// Per row, its rates round by round.
type Table = Vec<(Row, Vec<RoundRates>)>;

/// Every row once per round, rows in order, so that drift hits all rows alike.
fn measure_rows(lab: &Lab, own_labs: &[(Row, Lab)], args: &Args) -> Result<Table, String> {
    if args.rows.iter().any(|row| row.kernel_forwards()) {
        steer_router_receive(lab, args.router_core)?;
    }
    let frame = template(lab, args)?;
    // Per own lab: its frame, and the VFN running there for all the rounds (dropping it, on
    // return, error or not, stops it).
    let mut prepared = Vec::with_capacity(own_labs.len());
    for (row, own_lab) in own_labs {
        let vfn = match row {
            Row::Vfn => Some(start_vfn(own_lab, args, None, false)?),
            Row::VfnMirror => Some(start_mirroring_vfn(own_lab, args)?),
            Row::VfnRules | Row::VfnFeatures => {
                let (policy, _) =
                    crate::rulesets::classbench_policy(&args.classbench, &args.rules)?;
                Some(start_vfn(
                    own_lab,
                    args,
                    Some(policy),
                    *row == Row::VfnFeatures,
                )?)
            }
            _ => {
                receive_through_napi(own_lab)?;
                None
            }
        };
        prepared.push((*row, own_lab, template(own_lab, args)?, vfn));
    }
    let mut table: Table = args.rows.iter().map(|&row| (row, Vec::new())).collect();
    for _ in 0..args.rounds {
        for (row, rates) in &mut table {
            let own = prepared.iter().find(|(own_row, ..)| own_row == row);
            let (row_lab, row_frame) = match own {
                Some((_, own_lab, own_frame, _)) => (*own_lab, own_frame.as_slice()),
                None => (lab, frame.as_slice()),
            };
            // testpmd and the AF_XDP forwarder run only for their own measurements: they poll
            // the router's core.
            let _testpmd = match *row {
                Row::Testpmd => Some(start_testpmd(row_lab, args)?),
                _ => None,
            };
            let _forwarder = match *row {
                Row::AfXdp => Some(AfXdpForwarder::start(row_lab, args.router_core)?),
                _ => None,
            };
            let outcome = measure(row_lab, args, *row, row_frame, args.seconds, None)?;
            let full = outcome.rate();
            let lossless = if args.lossless {
                let mut at = |pace: f64| {
                    measure(
                        row_lab,
                        args,
                        *row,
                        row_frame,
                        args.lossless_seconds,
                        Some(pace),
                    )
                };
                Some(lossless_rate(&mut at, full)?)
            } else {
                None
            };
            rates.push(RoundRates {
                full,
                offered: outcome.offered(),
                lossless,
            });
        }
    }
    Ok(table)
}

/// The VFN on `lab`'s router namespace, one worker on the router's core, enforcing `policy` if
/// given, with flow telemetry if `telemetry`, ready to forward.
fn start_vfn(
    lab: &Lab,
    args: &Args,
    policy: Option<RuleSetSpec>,
    telemetry: bool,
) -> Result<RunningVfn, String> {
    let mut config = lab_config(lab.topology()).map_err(|e| e.to_string())?;
    config.telemetry.enabled = telemetry;
    config.workers.cores = vec![u16::try_from(args.router_core).map_err(|e| e.to_string())?];
    config.policy = policy.map(PolicySource::Inline);
    let binary = vfn_binary().map_err(|e| e.to_string())?;
    RunningVfn::start(lab, &binary, &config, Duration::from_secs(20)).map_err(|e| e.to_string())
}

/// The VFN of [`start_vfn`] without telemetry, mirroring every UDP packet as received to an
/// ERSPAN II session to the sink host, from the router's address on the sink's link.
fn start_mirroring_vfn(lab: &Lab, args: &Args) -> Result<RunningVfn, String> {
    let mut config = lab_config(lab.topology()).map_err(|e| e.to_string())?;
    config.telemetry.enabled = false;
    config.workers.cores = vec![u16::try_from(args.router_core).map_err(|e| e.to_string())?];
    config.mirror.sessions = vec![MirrorSessionConfig {
        name: "analyzer".into(),
        direction: MirrorDirection::Received,
        destination: MirrorDestinationConfig::Erspan {
            source: "198.18.2.1".parse().expect("constant"),
            remote: "198.18.2.2".parse().expect("constant"),
            session_id: 1,
        },
        snap_length: 0,
        sample_every: 1,
        packets_per_second: 0,
        queue: 4096,
    }];
    config.policy = Some(PolicySource::Inline(RuleSetSpec {
        version: "mirror-all".into(),
        default_action: DefaultAction::Allow,
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Udp),
            ..RuleSpec::new(
                "all-udp",
                Action::Mirror {
                    session: "analyzer".into(),
                    then_allow: true,
                },
            )
        }],
        ..RuleSetSpec::default()
    }));
    let binary = vfn_binary().map_err(|e| e.to_string())?;
    RunningVfn::start(lab, &binary, &config, Duration::from_secs(20)).map_err(|e| e.to_string())
}

/// testpmd on `lab`'s router ports (af_packet), forwarding in MAC mode to the sink's MAC on the
/// router's core, its main thread on the generator's; stopped when the guard is dropped.
fn start_testpmd(lab: &Lab, args: &Args) -> Result<ChildGuard, String> {
    let topology = lab.topology();
    let gen_port = &topology.port("gen").map_err(|e| e.to_string())?.interface;
    let sink_port = &topology.port("sink").map_err(|e| e.to_string())?.interface;
    let sink = topology.host("sink").map_err(|e| e.to_string())?;
    let sink_mac = interface_mac(&sink.netns, HOST_INTERFACE).map_err(|e| e.to_string())?;
    let peer = sink_mac
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let cores = format!("{},{}", args.generator_core, args.router_core);
    let prefix = format!("vfnbench-{}", std::process::id());
    let vdev0 = format!("net_af_packet0,iface={gen_port}");
    let vdev1 = format!("net_af_packet1,iface={sink_port}");
    let eth_peer = format!("--eth-peer=1,{peer}");
    let log_path = std::env::temp_dir().join(format!("{prefix}-testpmd.log"));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = lab
        .exec(
            ROUTER_ROLE,
            &[
                "dpdk-testpmd",
                "-l",
                &cores,
                "--main-lcore",
                &args.generator_core.to_string(),
                "--no-huge",
                "-m",
                "1024",
                "--no-pci",
                "--file-prefix",
                &prefix,
                "--vdev",
                &vdev0,
                "--vdev",
                &vdev1,
                "--",
                "--total-num-mbufs=16384",
                "--forward-mode=mac",
                &eth_peer,
                "--nb-cores=1",
                "--auto-start",
                "--stats-period=1",
            ],
        )
        .map_err(|e| e.to_string())?;
    command.stdout(log).stderr(log_err);
    let mut guard = ChildGuard::spawn(command).map_err(|e| e.to_string())?;
    // Ready once it says it forwards; its log goes once it is read (it keeps writing to the
    // open file), so that nothing is left behind.
    let started = Instant::now();
    let outcome = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("start packet forwarding") {
            break Ok(());
        }
        if !matches!(guard.try_wait(), Ok(None)) || started.elapsed() > TESTPMD_START {
            break Err(format!(
                "dpdk-testpmd did not start forwarding within {TESTPMD_START:?} (install dpdk-dev?); its log:\n{log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::fs::remove_file(&log_path);
    outcome?;
    Ok(guard)
}

/// The VFN's AF_XDP backend (`vfn_xdp::XdpIo`) alone on the router's ports of a lab: every
/// frame received on the port facing `gen` is sent out of the one facing `sink`, its MACs
/// rewritten, in bursts of 64, on one pinned thread, until dropped.
struct AfXdpForwarder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl AfXdpForwarder {
    fn start(lab: &Lab, core: usize) -> Result<AfXdpForwarder, String> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use vfn_dataplane::io::{Packet, PacketIo};
        use vfn_xdp::{XdpIo, XdpOptions, XdpPort};

        let topology = lab.topology();
        let router = topology.router.netns.clone();
        let ingress = topology
            .port("gen")
            .map_err(|e| e.to_string())?
            .interface
            .clone();
        let egress = topology
            .port("sink")
            .map_err(|e| e.to_string())?
            .interface
            .clone();
        let sink = topology.host("sink").map_err(|e| e.to_string())?;
        let sink_mac = interface_mac(&sink.netns, HOST_INTERFACE).map_err(|e| e.to_string())?;
        // Read through `ip netns exec`, which mounts the namespace's /sys: a thread that only
        // joined the namespace still sees the caller's.
        let egress_mac = interface_mac(&router, &egress).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            in_netns(&router, move || -> Result<(), String> {
                let opened = (|| {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        return Err(format!("cannot pin the AF_XDP forwarder to core {core}"));
                    }
                    let ports = [ingress, egress].map(|interface| XdpPort {
                        interface,
                        queue_id: 0,
                    });
                    XdpIo::open(&ports, &XdpOptions::default()).map_err(|e| e.to_string())
                })();
                let mut io = match opened {
                    Ok(opened) => {
                        let _ = ready_tx.send(Ok(()));
                        opened
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.clone()));
                        return Err(error);
                    }
                };
                let mut burst = [Packet {
                    frame: vfn_dataplane::io::FrameId(0),
                    len: 0,
                }; 64];
                while !thread_stop.load(Ordering::Relaxed) {
                    io.reclaim_and_refill();
                    let count = io.receive(0, &mut burst);
                    for &packet in &burst[..count] {
                        let buffer = io.buffer(packet.frame);
                        if let Some(macs) = buffer.get_mut(..12) {
                            macs[..6].copy_from_slice(&sink_mac);
                            macs[6..].copy_from_slice(&egress_mac);
                        }
                        if let Err(refused) = io.transmit(1, packet) {
                            io.release(refused.0.frame);
                        }
                    }
                    io.flush();
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(AfXdpForwarder {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(error)) => Err(format!("the AF_XDP forwarder: {error}")),
            Err(_) => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                Err("the AF_XDP forwarder did not open its ports within 10 s".into())
            }
        }
    }
}

impl Drop for AfXdpForwarder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Err(error)) => eprintln!("vfn-perf lab: the AF_XDP forwarder: {error}"),
                Err(_) => eprintln!("vfn-perf lab: the AF_XDP forwarder panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}
