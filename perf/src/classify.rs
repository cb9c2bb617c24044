//! `classbench`: the packet classifier (`vfn-classify`) on ClassBench rule sets and traces,
//! against DPDK's `rte_acl` (`dpdk-test-acl`) on the same sets in the same run.
//!
//! Per set: build time, memory, lookups per second one key at a time and in bursts, each the
//! median of `--runs` rounds; a round builds and measures ours, then runs `dpdk-test-acl` once,
//! and the last column is the median of the rounds' ratios of our burst rate to rte_acl's, the
//! figure least moved by the machine's drift. Every trace line is first checked against a first-match scan
//! of the rules; a wrong answer stops the benchmark. `dpdk-test-acl` gets the same rules without
//! the flags column (our parser ignores that column too) and the trace as
//! `0xSRC 0xDST sport dport proto`; its build time is taken from the arrival of its output lines,
//! so it includes reading its rule and trace files.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vfn_classify::classbench::{self, TracePacket};
use vfn_classify::{Classifier, Entry, Key, Limits};

use crate::rulesets::{SetFiles, read, read_entries, set_files};

/// Keys per `classify_burst` call.
const BURST: usize = 32;
/// Minimum time of one lookup-rate measurement (whole passes over the trace).
const MEASURE_TIME: Duration = Duration::from_millis(300);
/// Passes over the trace per `dpdk-test-acl` run.
const DPDK_ITERATIONS: usize = 10;

#[derive(clap::Args)]
pub struct Args {
    /// Sets to measure (file names in the ClassBench directory, without `.gen`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "acl1_1k,fw1_1k,ipc1_1k,acl1_10k,fw1_10k,ipc1_10k,acl1_100k,fw1_100k,ipc1_100k"
    )]
    sets: Vec<String>,
    /// Measurements per figure; the table shows medians.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory of the ClassBench files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/classbench"))]
    dir: PathBuf,
    /// CPU to pin this process and `dpdk-test-acl` to.
    #[arg(long, default_value_t = 1)]
    core: usize,
    /// Skip the `dpdk-test-acl` comparison.
    #[arg(long)]
    no_dpdk: bool,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Counts trace lines whose answer differs from the first-match scan (each distinct key is
/// scanned once).
fn mismatches(
    classifier: &Classifier<u32>,
    entries: &[Entry<u32>],
    trace: &[TracePacket],
) -> usize {
    let mut expected: HashMap<Key<u32>, Option<u32>> = HashMap::new();
    trace
        .iter()
        .filter(|packet| {
            let want = *expected
                .entry(packet.key)
                .or_insert_with(|| classbench::first_match(entries, &packet.key));
            classifier.classify(&packet.key) != want
        })
        .count()
}

/// Lookups per second over whole passes of `keys`, one key per call.
fn rate_single(classifier: &Classifier<u32>, keys: &[Key<u32>]) -> f64 {
    let start = Instant::now();
    let mut lookups = 0usize;
    while start.elapsed() < MEASURE_TIME {
        for key in keys {
            black_box(classifier.classify(black_box(key)));
        }
        lookups += keys.len();
    }
    lookups as f64 / start.elapsed().as_secs_f64()
}

/// Lookups per second over whole passes of `keys`, `BURST` keys per call.
fn rate_burst(classifier: &Classifier<u32>, keys: &[Key<u32>]) -> f64 {
    let mut out = [None; BURST];
    let start = Instant::now();
    let mut lookups = 0usize;
    while start.elapsed() < MEASURE_TIME {
        for chunk in keys.chunks(BURST) {
            classifier.classify_burst(black_box(chunk), &mut out[..chunk.len()]);
            black_box(&out);
        }
        lookups += keys.len();
    }
    lookups as f64 / start.elapsed().as_secs_f64()
}

/// Median figures of one set.
struct Figures {
    rules: usize,
    build_ms: f64,
    bytes_per_rule: f64,
    single_mpps: f64,
    burst_mpps: f64,
    dpdk: Option<DpdkFigures>,
}

fn measure_set(args: &Args, set: &str) -> Result<Figures, String> {
    let files = set_files(&args.dir, set)?;
    let entries = read_entries(&files)?;
    let trace = classbench::parse_trace(&read(&files.trace)?)
        .map_err(|e| format!("{}: {e}", files.trace.display()))?;
    let keys: Vec<Key<u32>> = trace.iter().map(|packet| packet.key).collect();
    let runs = args.runs.max(1);

    // Rounds interleave the two classifiers, so that the machine's drift (runs minutes apart
    // differ by up to 2x here) hits both alike; the ratio is the median of per-round ratios.
    let dpdk_files = if args.no_dpdk {
        None
    } else {
        let scratch = ScratchDir(
            std::env::temp_dir().join(format!("vfn-perf-classbench-{}", std::process::id())),
        );
        std::fs::create_dir_all(&scratch.0).map_err(|e| format!("{}: {e}", scratch.0.display()))?;
        let converted = write_dpdk_files(&files, &scratch.0)?;
        Some((scratch, converted))
    };
    let mut build_ms = Vec::new();
    let mut single = Vec::new();
    let mut burst = Vec::new();
    let mut dpdk_build_ms = Vec::new();
    let mut dpdk_mpps = Vec::new();
    let mut ratios = Vec::new();
    let mut bytes_per_rule = 0.0;
    for round in 0..runs {
        let classifier = Classifier::build(&entries, &Limits::default())
            .map_err(|e| format!("{set}: build: {e}"))?;
        build_ms.push(classifier.build_stats().build_time.as_secs_f64() * 1e3);
        if round == 0 {
            eprintln!("{set}: {:?}", classifier.build_stats());
            let wrong = mismatches(&classifier, &entries, &trace);
            if wrong != 0 {
                return Err(format!(
                    "{set}: {wrong} trace lines classified differently from the first-match scan"
                ));
            }
            bytes_per_rule = classifier.memory_bytes() as f64 / entries.len().max(1) as f64;
        }
        single.push(rate_single(&classifier, &keys) / 1e6);
        let round_burst = rate_burst(&classifier, &keys) / 1e6;
        burst.push(round_burst);
        if let Some((_, (rules, trace, rule_count, trace_count))) = &dpdk_files {
            let (build, rate) = dpdk_once(args.core, rules, trace, *rule_count, *trace_count)
                .map_err(|e| format!("{set}: dpdk-test-acl: {e}"))?;
            dpdk_build_ms.push(build.as_secs_f64() * 1e3);
            dpdk_mpps.push(rate / 1e6);
            ratios.push(round_burst * 1e6 / rate);
        }
    }
    Ok(Figures {
        rules: entries.len(),
        build_ms: median(build_ms),
        bytes_per_rule,
        single_mpps: median(single),
        burst_mpps: median(burst),
        dpdk: dpdk_files.map(|_| DpdkFigures {
            build_ms: median(dpdk_build_ms),
            mpps: median(dpdk_mpps),
            burst_ratio: median(ratios),
        }),
    })
}

struct DpdkFigures {
    build_ms: f64,
    mpps: f64,
    /// Our burst rate over rte_acl's, median of the rounds' ratios.
    burst_ratio: f64,
}

/// A scratch directory, removed when dropped (also on error).
pub(crate) struct ScratchDir(pub(crate) PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The rule file without its flags column, the trace as hexadecimal addresses: the formats
/// `dpdk-test-acl` reads.
fn write_dpdk_files(
    files: &SetFiles,
    dir: &Path,
) -> Result<(PathBuf, PathBuf, usize, usize), String> {
    let mut rules = String::new();
    let mut rule_count = 0;
    for line in read(&files.rules)?
        .lines()
        .filter(|line| !line.trim().is_empty())
    {
        let columns: Vec<&str> = line.split('\t').take(5).collect();
        rules.push_str(&columns.join("\t"));
        rules.push('\n');
        rule_count += 1;
    }
    let mut trace = String::new();
    let text = read(&files.trace)?;
    let packets = classbench::parse_trace(&text).map_err(|e| e.to_string())?;
    for packet in &packets {
        let key = packet.key;
        let _ = writeln!(
            trace,
            "{:#010x} {:#010x} {} {} {}",
            key.src, key.dst, key.sport, key.dport, key.proto
        );
    }
    let rules_path = dir.join("rules");
    let trace_path = dir.join("trace");
    std::fs::write(&rules_path, rules).map_err(|e| format!("{}: {e}", rules_path.display()))?;
    std::fs::write(&trace_path, trace).map_err(|e| format!("{}: {e}", trace_path.display()))?;
    Ok((rules_path, trace_path, rule_count, packets.len()))
}

/// One `dpdk-test-acl` run: its build time (from the last configuration line to the build's
/// end, line-buffered through `stdbuf`) and its lookup rate.
fn dpdk_once(
    core: usize,
    rules: &Path,
    trace: &Path,
    rule_count: usize,
    trace_count: usize,
) -> Result<(Duration, f64), String> {
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg("dpdk-test-acl")
        .args([
            "--no-huge",
            "-m",
            "1024",
            "--no-pci",
            "-l",
            &core.to_string(),
        ])
        .arg(format!("--file-prefix=vfn-perf-{}", std::process::id()))
        .arg("--")
        .arg(format!("--rulesf={}", rules.display()))
        .arg(format!("--tracef={}", trace.display()))
        .arg(format!("--rulenum={}", rule_count + 1))
        .arg(format!("--tracenum={}", trace_count + 1))
        .arg(format!("--iter={DPDK_ITERATIONS}"))
        .args(["--alg=avx2", "--verbose=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start (install Debian's dpdk-dev package): {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut config_done = None;
    let mut build_done = None;
    let mut rate = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.starts_with("ipv6:") {
            config_done = Some(Instant::now());
        } else if line.starts_with("rte_acl_build") {
            build_done = Some(Instant::now());
        } else if line.starts_with("search_ip5tuples") {
            rate = line
                .split(", ")
                .find_map(|part| part.strip_suffix(" pkt/sec"))
                .and_then(|value| value.trim().parse::<f64>().ok());
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    match (config_done, build_done, rate) {
        (Some(start), Some(end), Some(rate)) => Ok((end - start, rate)),
        _ => Err("output without build and search lines".into()),
    }
}

pub fn run(args: &Args) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: args.core }) {
        eprintln!("warning: could not pin to core {}", args.core);
    }
    println!(
        "ClassBench, one core (core {}), medians of {} interleaved rounds; rte_acl: dpdk-test-acl --alg=avx2",
        args.core, args.runs
    );
    println!(
        "| set | rules | build ms | bytes/rule | Mlookups/s single | Mlookups/s burst {BURST} | ns/lookup (burst) | rte_acl build ms | rte_acl Mlookups/s | burst / rte_acl |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for set in &args.sets {
        match measure_set(args, set) {
            Ok(f) => {
                let (dpdk_build, dpdk_rate, ratio) = f.dpdk.as_ref().map_or(
                    ("-".to_string(), "-".to_string(), "-".to_string()),
                    |d| {
                        (
                            format!("{:.0}", d.build_ms),
                            format!("{:.2}", d.mpps),
                            format!("{:.2}", d.burst_ratio),
                        )
                    },
                );
                println!(
                    "| {set} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {dpdk_build} | {dpdk_rate} | {ratio} |",
                    f.rules,
                    f.build_ms,
                    f.bytes_per_rule,
                    f.single_mpps,
                    f.burst_mpps,
                    1e3 / f.burst_mpps
                );
            }
            Err(error) => {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
        }
    }
}
