//! `vfn-perf scoring`: what the anomaly models cost and how fast they act
//! (`docs/models.md`).
//!
//! - **Flows scored per second on one core**, per bundle in `models/trained/` and per batch
//!   size: the bundle's own scoring (transform, standardisation, both ONNX models through tract,
//!   calibration, persona probabilities) on its test vectors, cycled.
//! - **From a flow's Nth packet to the action**: the real scorer loop (`vfn_models::Scorer`) on a
//!   thread of its own; the benchmark plays a worker that queues a scan flow's snapshot (what a
//!   worker does at the packet that takes it) and times until the action is in the overlay the
//!   workers read (the dynamic entry added and published, with no other entry in force). The
//!   engine acts at the first flow over
//!   a threshold of 0, so that every snapshot leads to an action: this times the path, not the
//!   detection (the lab test times detection).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use vfn_dataplane::overlay::{DynamicAction, OverlayManager};
use vfn_dataplane::telemetry::{EndReason, FeatureSnapshot, SnapshotTrigger};
use vfn_flow::{Direction, FlowStats, PacketSample, TcpFlags};
use vfn_models::{
    BATCH_MAX, Engine, EngineConfig, ModelBundle, ScoreBuffers, Scorer, ScoringShared,
    ThreatAction, ThreatConfig,
};

use crate::pipeline::median_min_max;

#[derive(clap::Args)]
pub struct Args {
    /// The folder of the model bundles (each a folder with manifest.json).
    #[arg(long, default_value = "models/trained")]
    bundles: PathBuf,
    /// Flows scored per measurement.
    #[arg(long, default_value_t = 100_000)]
    flows: usize,
    /// Measurements per batch size (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The core the scoring (and the benchmark's "worker") runs on.
    #[arg(long, default_value_t = 1)]
    core: usize,
    /// The core of the scorer thread in the latency measurement.
    #[arg(long, default_value_t = 0)]
    scorer_core: usize,
    /// Snapshots timed to their action.
    #[arg(long, default_value_t = 2_000)]
    actions: usize,
}

const BATCH_SIZES: [usize; 5] = [1, 8, 32, 64, BATCH_MAX];

pub fn run(args: &Args) -> Result<(), String> {
    pin(args.core);
    let mut bundles: Vec<PathBuf> = std::fs::read_dir(&args.bundles)
        .map_err(|e| format!("{}: {e}", args.bundles.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("manifest.json").is_file())
        .collect();
    bundles.sort();
    println!(
        "flows scored per second on core {}, {} flows per measurement, median of {} (min, max)",
        args.core, args.flows, args.rounds
    );
    println!("| bundle | features | batch | flows/s median | min | max | µs per batch |");
    println!("|---|---|--:|--:|--:|--:|--:|");
    for path in &bundles {
        throughput(path, args)?;
    }
    let first = bundles.first().ok_or("no bundle found")?;
    latency(first, args)
}

fn pin(core: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("could not pin to core {core}");
    }
}

/// The raw rows of a bundle's test vectors.
fn test_rows(path: &Path) -> Result<Vec<Vec<f64>>, String> {
    let text = std::fs::read_to_string(path.join("manifest.json")).map_err(|e| e.to_string())?;
    let manifest: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    manifest["test_vectors"]
        .as_array()
        .ok_or("no test vectors")?
        .iter()
        .map(|vector| {
            vector["raw"]
                .as_array()
                .ok_or_else(|| "a test vector without raw values".to_owned())
                .map(|raw| raw.iter().filter_map(serde_json::Value::as_f64).collect())
        })
        .collect()
}

fn throughput(path: &Path, args: &Args) -> Result<(), String> {
    let bundle = ModelBundle::load_dir(path).map_err(|e| e.to_string())?;
    let rows = test_rows(path)?;
    let mut buffers = ScoreBuffers::default();
    let mut scores = Vec::with_capacity(BATCH_MAX);
    for batch in BATCH_SIZES {
        let raw: Vec<f64> = rows.iter().cycle().take(batch).flatten().copied().collect();
        let batches = args.flows.div_ceil(batch);
        let mut rates = Vec::with_capacity(args.rounds);
        for _ in 0..args.rounds.max(1) {
            let start = Instant::now();
            for _ in 0..batches {
                bundle
                    .score(&raw, &mut buffers, &mut scores)
                    .map_err(|e| e.to_string())?;
            }
            rates.push((batches * batch) as f64 / start.elapsed().as_secs_f64());
        }
        let (median, min, max) = median_min_max(rates);
        println!(
            "| {} | {} | {batch} | {median:.0} | {min:.0} | {max:.0} | {:.1} |",
            bundle.name(),
            bundle.block().name(),
            batch as f64 / median * 1e6
        );
    }
    Ok(())
}

/// A scan flow's record as a worker hands it over at its end: a SYN, and a RST from the
/// responder 200 µs later.
fn scan_snapshot(src: IpAddr, dport: u16) -> FeatureSnapshot {
    let mut stats = FlowStats::default();
    for (time_ns, direction, ip_length, flags) in [
        (
            1_000,
            Direction::Forward,
            44,
            TcpFlags::from_header_byte(0x02),
        ),
        (
            201_000,
            Direction::Reverse,
            40,
            TcpFlags::from_header_byte(0x14),
        ),
    ] {
        let sample = PacketSample {
            time_ns,
            direction,
            ip_length,
            tcp_flags: flags,
            tcp_window: Some(1024),
            initiator_egress: 1,
        };
        stats.record(&sample, 5_000_000_000);
    }
    FeatureSnapshot {
        worker: 0,
        src,
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 3, 2)),
        sport: 40_000,
        dport,
        proto: 6,
        trigger: SnapshotTrigger::RecordEnd(EndReason::EndOfFlow),
        stats,
    }
}

fn latency(path: &Path, args: &Args) -> Result<(), String> {
    let bundle = ModelBundle::load_dir(path).map_err(|e| e.to_string())?;
    let name = bundle.name().to_owned();
    let (snapshots, queue) = crossbeam_channel::bounded(4_096);
    let (acted, actions) = crossbeam_channel::bounded::<Instant>(args.actions);
    let epoch = Instant::now();
    let mut overlay = OverlayManager::new(args.actions, Vec::new());
    let engine = Engine::new(EngineConfig {
        threat: ThreatConfig {
            threshold: 0.0,
            ..ThreatConfig::default()
        },
        flows_to_act: 1,
        action: ThreatAction::Isolate,
        ..EngineConfig::default()
    });
    let scorer = Scorer::new(
        queue,
        ScoringShared::new(bundle),
        engine,
        Box::new(move |report| {
            // What the controller does with a decision, without the audit log's write.
            let now = epoch.elapsed();
            let Ok(id) = overlay.add(
                report.decision.source,
                DynamicAction::Quarantine,
                report.decision.ttl,
                "benchmark".into(),
                now,
            ) else {
                return false;
            };
            let timed = acted.try_send(Instant::now()).is_ok();
            // After the timing: the overlay stays at one entry, as the next action would find a
            // router with few (publishing copies the entries in force).
            let _ = overlay.remove(id, now);
            timed
        }),
        BATCH_MAX,
        epoch,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let scorer_core = args.scorer_core;
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(scorer_core);
            scorer.run(&stop);
        })
    };
    let mut microseconds = Vec::with_capacity(args.actions);
    for index in 0..args.actions {
        // A new source each time: the engine acts once per source while its action lasts.
        let source = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + index as u32));
        let snapshot = scan_snapshot(source, 22);
        let queued = Instant::now();
        snapshots
            .try_send(snapshot)
            .map_err(|_| "the scorer's queue is full")?;
        let done = actions
            .recv_timeout(Duration::from_secs(1))
            .map_err(|_| format!("no action for snapshot {index} within a second"))?;
        microseconds.push(done.duration_since(queued).as_secs_f64() * 1e6);
        // Apart, as snapshots of separate flows come: each finds the scorer idle.
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = thread.join();
    microseconds.sort_by(f64::total_cmp);
    let at = |q: f64| microseconds[((microseconds.len() - 1) as f64 * q) as usize];
    println!(
        "\nfrom a snapshot queued (a flow's Nth packet) to its action in the overlay, bundle \
         {name}, scorer on core {}, {} actions: median {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        args.scorer_core,
        microseconds.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
