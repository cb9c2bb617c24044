//! Records labelled training data through the VFN's own feature extractor: the default lab, the
//! router with `[scoring] record` on, servers on srv, and phases of traffic from c1 (normal, then
//! one attack per phase, then normal again) while c2 stays normal throughout. Every recorded
//! snapshot is labelled by who started its flow and when; the result is one CSV
//! (`models/data/README.md` describes its columns).
//!
//! ```text
//! vfn-record-lab --output models/data/lab-flows.csv [--seconds-per-phase N] [--rows-per-kind-max N]
//! ```
//!
//! Needs root and the tools of `vfn_lab::scenarios`; the router is `$VFN_BIN` or the `vfn` built
//! beside this program. Everything (namespaces, processes, files) is removed on every path,
//! Ctrl-C included.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vfn_lab::scenarios::{self, HttpServer, NormalTraffic, ScanKind, SshServer};
use vfn_lab::{Lab, LabError, RunningVfn, TopologySpec};

const PREFIX: &str = "vfnrec";
const READY: Duration = Duration::from_secs(30);
const HTTP_PORT: u16 = 80;
const SINK_PORT: u16 = 9000;
/// Records end this long after their last packet, so that they end within the run.
const IDLE_TIMEOUT_MS: u32 = 5_000;
/// After the last phase: the idle timeout and time for the last snapshots to be written.
const SETTLE: Duration = Duration::from_millis(IDLE_TIMEOUT_MS as u64 + 2_000);
/// A flow of c1 that starts up to this long after its attack phase ended still counts as the
/// attack's (its last probes, answered late).
const LABEL_GRACE_MS: f64 = 1_000.0;
/// c2's normal client runs in pieces this long, so that it stops soon after being told to.
const NORMAL_PIECE: Duration = Duration::from_secs(5);
/// 9 phases of 30 s, and a few seconds to set up and settle: under 5 minutes.
const SECONDS_PER_PHASE_DEFAULT: u64 = 30;
const SECONDS_PER_PHASE: std::ops::RangeInclusive<u64> = 5..=30;
/// The brute force's attempts (4 at a time), and the exfiltration's uploads: each a flow.
const SSH_ATTEMPTS: u32 = 160;
const EXFILTRATION_MIB: [usize; 4] = [20, 10, 5, 2];
const EXFILTRATION_ROUNDS: usize = 6;
/// c2 runs this many normal clients at once, throughout.
const C2_CLIENTS: u64 = 2;
/// The first normal phase lasts this many phases.
const FIRST_PHASE_LENGTH: u32 = 3;
const ROWS_PER_KIND_MAX_DEFAULT: usize = 6_000;
const NORMAL: &str = "normal";
const USAGE: &str = "usage: vfn-record-lab --output FILE [--seconds-per-phase 5..=30] \
                     [--rows-per-kind-max N]";

struct Options {
    output: PathBuf,
    seconds_per_phase: u64,
    rows_per_kind_max: usize,
}

/// What c1 does in a phase.
#[derive(Clone, Copy, Debug)]
enum Activity {
    Normal,
    SynScan,
    ConnectScan,
    SynFlood,
    SshBruteForce,
    Exfiltration,
}

impl Activity {
    /// The `kind` of the rows of c1's flows that start in this phase.
    fn kind(self) -> &'static str {
        match self {
            Activity::Normal => NORMAL,
            Activity::SynScan => "syn_scan",
            Activity::ConnectScan => "connect_scan",
            Activity::SynFlood => "syn_flood",
            Activity::SshBruteForce => "ssh_bruteforce",
            Activity::Exfiltration => "exfiltration",
        }
    }
}

/// A phase as it ran: c1's activity and the wall-clock milliseconds it ran in, `[start, end)`.
struct Phase {
    activity: Activity,
    start_unix_ms: f64,
    end_unix_ms: f64,
    outcome: String,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match record(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vfn-record-lab: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut output = None;
    let mut seconds_per_phase = SECONDS_PER_PHASE_DEFAULT;
    let mut rows_per_kind_max = ROWS_PER_KIND_MAX_DEFAULT;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--output" => output = Some(PathBuf::from(value()?)),
            "--seconds-per-phase" => {
                seconds_per_phase = value()?
                    .parse()
                    .ok()
                    .filter(|seconds| SECONDS_PER_PHASE.contains(seconds))
                    .ok_or("--seconds-per-phase takes 5 to 30")?;
            }
            "--rows-per-kind-max" => {
                rows_per_kind_max = value()?
                    .parse()
                    .ok()
                    .filter(|rows| *rows > 0)
                    .ok_or("--rows-per-kind-max takes a positive number")?;
            }
            "-h" | "--help" => return Err("records labelled flow features in the lab".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Options {
        output: output.ok_or("--output is required")?,
        seconds_per_phase,
        rows_per_kind_max,
    })
}

fn record(options: &Options) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    vfn_lab::install_interrupt_flag()?;
    let binary = vfn_lab::vfn_binary()?;
    vfn_lab::remove_stale(PREFIX)?;
    // Declared first, so dropped last: everything in the lab stops before it goes.
    let lab = Lab::create(&TopologySpec::default_lab(PREFIX))?;
    let scratch = scenarios::ScratchDir::create("record")?;
    let recording = scratch.path().join("features.csv");
    let mut config = vfn_lab::lab_config(lab.topology())?;
    config.telemetry.idle_timeout_ms = IDLE_TIMEOUT_MS;
    config.scoring.enabled = true;
    config.scoring.record = Some(recording.clone());
    // Scores, but never acts: an isolated c1 would make the later phases record nothing. No
    // source sends 100,000 flows over the threshold within a second here.
    config.scoring.flows_to_act = 100_000;
    config.scoring.window_ms = 1_000;
    let vfn = RunningVfn::start(&lab, &binary, &config, READY)?;
    let _http = HttpServer::start(&lab, "srv", HTTP_PORT)?;
    let _ssh = SshServer::start(&lab, "srv")?;
    let srv = host_ipv4(&lab, "srv")?;
    let c1 = host_ipv4(&lab, "c1")?;
    println!(
        "lab {} up, router {}",
        lab.topology().name,
        binary.display()
    );

    let stop = AtomicBool::new(false);
    let (phases, background) = thread::scope(|scope| {
        let background: Vec<_> = (0..C2_CLIENTS)
            .map(|client| {
                let stop = &stop;
                let lab = &lab;
                scope.spawn(move || normal_until_stopped(lab, "c2", srv, client, stop))
            })
            .collect();
        // Raised however the phases end, a panic included: the scope waits for c2's clients.
        let _stop = RaiseOnDrop(&stop);
        let phases = run_phases(&lab, srv, options.seconds_per_phase);
        stop.store(true, Ordering::SeqCst);
        let background: Vec<_> = background
            .into_iter()
            .map(|client| {
                client
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        (phases, background)
    });
    let phases = phases?;
    for (client, traffic) in background.into_iter().enumerate() {
        println!("c2 client {client} throughout: {:?}", traffic?);
    }
    println!("waiting {SETTLE:?} for the last records to end");
    sleep(SETTLE)?;
    let (status, _) = vfn.stop()?;
    println!("router stopped ({status})");

    let text = std::fs::read_to_string(&recording)
        .map_err(|e| format!("reading the recording {}: {e}", recording.display()))?;
    let labelled = label(&text, c1, &phases)?;
    let kept = cap_per_kind(labelled.rows, options.rows_per_kind_max);
    write_output(&options.output, &labelled.header, &kept)?;
    summarise(&phases, &kept, labelled.total, &options.output);
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// c1's phases, one after the other; each attack phase lasts at least `seconds` (c1 silent once
/// its attack is done), the first normal phase three times that.
fn run_phases(lab: &Lab, srv: IpAddr, seconds: u64) -> Result<Vec<Phase>, LabError> {
    let phase_length = Duration::from_secs(seconds);
    let plan = [
        (Activity::Normal, phase_length * FIRST_PHASE_LENGTH),
        (Activity::SynScan, phase_length),
        (Activity::ConnectScan, phase_length),
        (Activity::SynFlood, phase_length),
        (Activity::SshBruteForce, phase_length),
        (Activity::Exfiltration, phase_length),
        (Activity::Normal, phase_length),
    ];
    let mut phases = Vec::with_capacity(plan.len());
    for (index, (activity, length)) in plan.into_iter().enumerate() {
        let began = Instant::now();
        let start_unix_ms = unix_ms();
        println!("phase {}: {} ({length:?})", index + 1, activity.kind());
        let outcome = run_activity(lab, srv, activity, length, index as u64)?;
        let end_unix_ms = unix_ms();
        println!(
            "  {outcome} in {:.1} s",
            (end_unix_ms - start_unix_ms) / 1e3
        );
        phases.push(Phase {
            activity,
            start_unix_ms,
            end_unix_ms,
            outcome,
        });
        sleep(length.saturating_sub(began.elapsed()))?;
    }
    Ok(phases)
}

fn run_activity(
    lab: &Lab,
    srv: IpAddr,
    activity: Activity,
    length: Duration,
    seed: u64,
) -> Result<String, LabError> {
    Ok(match activity {
        Activity::Normal => {
            let traffic =
                scenarios::normal_client(lab, "c1", srv, HTTP_PORT, length, 0xc1_0000 + seed)?;
            format!("{traffic:?}")
        }
        Activity::SynScan => {
            let open = scenarios::nmap_scan(lab, "c1", srv, ScanKind::Syn, 1..=2000)?;
            format!("nmap -sS ports 1-2000: open {open:?}")
        }
        Activity::ConnectScan => {
            let open = scenarios::nmap_scan(lab, "c1", srv, ScanKind::Connect, 1..=1000)?;
            format!("nmap -sT ports 1-1000: open {open:?}")
        }
        Activity::SynFlood => {
            let flood = scenarios::syn_flood(lab, "c1", srv, HTTP_PORT, 3_000, 1_000)?;
            format!("hping3 -S to port {HTTP_PORT}: {flood:?}")
        }
        Activity::SshBruteForce => {
            let attempts = scenarios::ssh_login_attempts(lab, "c1", srv, SSH_ATTEMPTS, 4)?;
            format!("ssh logins: {attempts:?}")
        }
        Activity::Exfiltration => {
            let mut moved = Vec::new();
            for mebibytes in EXFILTRATION_MIB.repeat(EXFILTRATION_ROUNDS) {
                let transfer = scenarios::exfiltrate(lab, "c1", srv, SINK_PORT, mebibytes << 20)?;
                moved.push(transfer.received);
            }
            let total: usize = moved.iter().sum();
            format!(
                "{} socat uploads of {EXFILTRATION_MIB:?} MiB in turn: received {} of them \
                 whole, {total} bytes",
                moved.len(),
                moved
                    .iter()
                    .zip(EXFILTRATION_MIB.repeat(EXFILTRATION_ROUNDS))
                    .filter(|(received, mebibytes)| **received == *mebibytes << 20)
                    .count()
            )
        }
    })
}

/// Sets its flag when dropped.
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `normal_client` in pieces until `stop` is raised; the pieces' counts summed. `client` numbers
/// the clients of one host, so that their random choices differ.
fn normal_until_stopped(
    lab: &Lab,
    role: &str,
    srv: IpAddr,
    client: u64,
    stop: &AtomicBool,
) -> Result<NormalTraffic, LabError> {
    let mut total = NormalTraffic::default();
    // Bounded: the phases end within minutes, and the piece count bounds it regardless.
    for piece in 0..10_000u64 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let seed = 0xc2_0000 + (client << 16) + piece;
        let traffic = scenarios::normal_client(lab, role, srv, HTTP_PORT, NORMAL_PIECE, seed)?;
        for (sum, part) in [
            (&mut total.http_gets, traffic.http_gets),
            (&mut total.pings, traffic.pings),
            (&mut total.udp_exchanges, traffic.udp_exchanges),
            (&mut total.uploads, traffic.uploads),
        ] {
            sum.ok += part.ok;
            sum.failed += part.failed;
        }
    }
    Ok(total)
}

struct Labelled {
    /// The recording's header.
    header: String,
    /// Each recorded row with its kind.
    rows: Vec<(String, &'static str)>,
    total: usize,
}

/// Labels every row of the recording: the kind of the phase its flow started in when c1 started
/// it, else normal.
fn label(text: &str, c1: IpAddr, phases: &[Phase]) -> Result<Labelled, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("the recording is empty")?.to_owned();
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|column| *column == name)
            .ok_or(format!("the recording has no column {name}: {header}"))
    };
    let (first, src) = (column("first_unix_ms")?, column("src")?);
    let c1_text = c1.to_string();
    let mut rows = Vec::new();
    for (number, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != columns.len() {
            return Err(format!(
                "recording line {}: {} fields, the header has {}",
                number + 2,
                fields.len(),
                columns.len()
            ));
        }
        let first_unix_ms: f64 = fields[first].parse().map_err(|_| {
            format!(
                "recording line {}: first_unix_ms {:?}",
                number + 2,
                fields[first]
            )
        })?;
        let kind = if fields[src] == c1_text {
            phase_kind(phases, first_unix_ms)
        } else {
            NORMAL
        };
        rows.push((line.to_owned(), kind));
    }
    let total = rows.len();
    Ok(Labelled {
        header,
        rows,
        total,
    })
}

/// The kind of a flow of c1 that started at `first_unix_ms`: its phase's, or an attack's that
/// ended less than [`LABEL_GRACE_MS`] before, else normal.
fn phase_kind(phases: &[Phase], first_unix_ms: f64) -> &'static str {
    let within = phases
        .iter()
        .find(|phase| (phase.start_unix_ms..phase.end_unix_ms).contains(&first_unix_ms));
    let just_after = || {
        phases.iter().find(|phase| {
            !matches!(phase.activity, Activity::Normal)
                && (phase.end_unix_ms..phase.end_unix_ms + LABEL_GRACE_MS).contains(&first_unix_ms)
        })
    };
    within
        .or_else(just_after)
        .map_or(NORMAL, |phase| phase.activity.kind())
}

/// At most `max` rows per kind, evenly spread over the kind's rows (in recording order).
fn cap_per_kind(rows: Vec<(String, &'static str)>, max: usize) -> Vec<(String, &'static str)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, kind) in &rows {
        *counts.entry(kind).or_default() += 1;
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    rows.into_iter()
        .filter(|(_, kind)| {
            let count = counts[kind];
            let index = seen.entry(kind).or_default();
            let position = *index;
            *index += 1;
            // Row `position` is kept when it starts a new stride of count / max rows.
            count <= max || (position * max) / count != ((position + 1) * max) / count
        })
        .collect()
}

fn write_output(
    path: &Path,
    header: &str,
    rows: &[(String, &'static str)],
) -> Result<(), Box<dyn Error>> {
    let mut text = String::with_capacity(rows.len() * 256);
    text.push_str(header);
    text.push_str(",label,kind\n");
    for (row, kind) in rows {
        let label = u8::from(*kind != NORMAL);
        text.push_str(&format!("{row},{label},{kind}\n"));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn summarise(phases: &[Phase], rows: &[(String, &'static str)], total: usize, output: &Path) {
    println!("\nphases (wall clock, Unix ms):");
    for (index, phase) in phases.iter().enumerate() {
        println!(
            "  {} {:<14} [{:.0}, {:.0})  {}",
            index + 1,
            phase.activity.kind(),
            phase.start_unix_ms,
            phase.end_unix_ms,
            phase.outcome
        );
    }
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_trigger: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    for (row, kind) in rows {
        *per_kind.entry(kind).or_default() += 1;
        // trigger is the 8th column of the recording.
        let trigger = row.split(',').nth(7).unwrap_or("?").to_owned();
        *per_trigger
            .entry(trigger)
            .or_default()
            .entry(kind)
            .or_default() += 1;
    }
    println!(
        "\n{} rows written to {} ({total} recorded)",
        rows.len(),
        output.display()
    );
    println!("rows per kind:");
    for (kind, count) in &per_kind {
        println!("  {kind:<14} {count}");
    }
    println!("rows per trigger (by kind):");
    for (trigger, kinds) in &per_trigger {
        let sum: usize = kinds.values().sum();
        let detail: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("  {trigger:<22} {sum:>6}  ({})", detail.join(", "));
    }
}

/// Sleeps `duration`, waking to check for Ctrl-C.
fn sleep(duration: Duration) -> Result<(), LabError> {
    let from = Instant::now();
    let limit = duration + Duration::from_secs(1);
    vfn_lab::wait_until(limit, Duration::from_millis(100), || {
        from.elapsed() >= duration
    })?;
    Ok(())
}

fn host_ipv4(lab: &Lab, role: &str) -> Result<IpAddr, LabError> {
    Ok(lab.topology().host(role)?.ipv4.addr())
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(activity: Activity, start_unix_ms: f64, end_unix_ms: f64) -> Phase {
        Phase {
            activity,
            start_unix_ms,
            end_unix_ms,
            outcome: String::new(),
        }
    }

    #[test]
    fn rows_are_labelled_by_initiator_and_phase_with_grace() {
        let header = "first_unix_ms,taken_unix_ms,src,dst,sport,dport,proto,trigger,duration_us";
        let text = format!(
            "{header}\n\
             1500,1600,198.18.1.2,198.18.3.2,1,80,6,nth_packet,1\n\
             2000,2600,198.18.1.2,198.18.3.2,2,80,6,end_of_flow,1\n\
             3999,4000,198.18.1.2,198.18.3.2,3,80,6,end_of_flow,1\n\
             4000,4100,198.18.1.2,198.18.3.2,4,80,6,end_of_flow,1\n\
             2500,2600,198.18.2.2,198.18.3.2,5,80,6,end_of_flow,1\n\
             5500,5600,198.18.1.2,198.18.3.2,6,80,6,end_of_flow,1\n"
        );
        let phases = [
            phase(Activity::Normal, 1000.0, 2000.0),
            phase(Activity::SynScan, 2000.0, 3000.0),
            phase(Activity::Normal, 4500.0, 5000.0),
        ];
        let labelled = label(&text, "198.18.1.2".parse().expect("c1"), &phases).expect("valid");
        let kinds: Vec<&str> = labelled.rows.iter().map(|(_, kind)| *kind).collect();
        assert_eq!(
            kinds,
            [
                "normal", "syn_scan", "syn_scan", "normal", "normal", "normal"
            ],
            "an attack's grace second holds 3999 and not 4000, a normal phase has none; c2 \
             is always normal"
        );
        assert!(label("a,b\n1,2\n", "198.18.1.2".parse().expect("c1"), &phases).is_err());
        let short = format!("{header}\n1,2,3\n");
        assert!(label(&short, "198.18.1.2".parse().expect("c1"), &phases).is_err());
    }

    #[test]
    fn capping_keeps_evenly_spread_rows_of_large_kinds_only() {
        let mut rows: Vec<(String, &'static str)> =
            (0..100).map(|i| (i.to_string(), NORMAL)).collect();
        rows.extend((0..3).map(|i| (format!("a{i}"), "syn_scan")));
        let kept = cap_per_kind(rows, 10);
        let normal: Vec<&str> = kept
            .iter()
            .filter(|(_, kind)| *kind == NORMAL)
            .map(|(row, _)| row.as_str())
            .collect();
        assert_eq!(normal.len(), 10);
        assert_eq!(normal.first(), Some(&"9"));
        assert_eq!(normal.last(), Some(&"99"));
        assert_eq!(
            kept.iter().filter(|(_, kind)| *kind == "syn_scan").count(),
            3
        );
    }

    #[test]
    fn arguments_are_checked() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let options =
            parse_args(args(&["--output", "x.csv", "--seconds-per-phase", "10"]).into_iter())
                .expect("valid");
        assert_eq!(options.output, PathBuf::from("x.csv"));
        assert_eq!(options.seconds_per_phase, 10);
        assert!(parse_args(args(&[]).into_iter()).is_err());
        assert!(
            parse_args(args(&["--output", "x", "--seconds-per-phase", "99"]).into_iter()).is_err()
        );
        assert!(parse_args(args(&["--output"]).into_iter()).is_err());
        assert!(parse_args(args(&["--bogus"]).into_iter()).is_err());
    }
}
