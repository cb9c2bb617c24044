//! `vfn-perf apply`: how long a rule set takes from request to live through the control API
//! (`ApplyRuleSet`), with traffic flowing through the router, and the packets that traffic loses
//! during the swap; beside it, in the same run, `nft -f` loading the same rules.
//!
//! The lab is `vfn_lab`'s default one (hosts c1, c2 and srv around the router namespace); the VFN
//! (`target/release/vfn`) runs there with the lab's config (one worker, on the last CPU) and a
//! policy that allows only the stream: UDP from c1 to srv port `STREAM_PORT`, default deny. The
//! stream's lossless rate is found first: one-second paced streams of doubling rate, then a
//! bisection between the last rate without loss and the first with.
//!
//! Per ClassBench set (`--sets`), the set's rules in two versions that differ in every rule's
//! action (A: the rules of even entries allow and of odd ones drop; B: the opposite), each led by
//! the rule that allows the stream, default deny, cut to the VFN's limit of 100,000 rules. B is
//! applied once, unmeasured; then each round applies the other version while a stream runs at
//! half the lossless rate, so every measured apply replaces a set of the same size, and records:
//! - the latency on the client, from sending the request to the answer (the router answers once
//!   the new set is live), and the server's own figures from the answer: `apply_micros` (request
//!   received to set live) and `build_micros` (the compile);
//! - the stream's datagrams sent less those that reached srv's UDP stack (`/proc/net/snmp`
//!   there: nothing else sends UDP to srv), the stream covering the swap: it starts `LEAD` before
//!   the request and runs at least `TAIL` past the answer. Datagrams that reached srv but found
//!   the stream's receiving socket full (this process's thread fell behind) are counted apart:
//!   they are not the router's loss.
//!
//! The anchor, in each round after the swap: the same rules as an nftables forward chain (same
//! order, prefixes, port ranges, protocol, accept or drop; policy drop), loaded by `nft -f` into
//! an empty namespace the benchmark creates, then replaced by the other version with one file
//! that starts with `flush ruleset` (nft's atomic replacement: one transaction). Each is timed
//! from starting `nft` to its exit; the namespace is deleted after the round.
//!
//! The stream's addresses are in 198.18.0.0/15 and it stays in the lab's namespaces (the
//! ClassBench addresses are only rule content). Every stream and call is bounded in time; the lab
//! and the namespace are removed when the run ends, on error or Ctrl-C too.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tonic::transport::{Channel, Endpoint, Uri};
use vfn_config::PolicySource;
use vfn_control::convert::rule_set_to_proto;
use vfn_control::proto::{self, control_client::ControlClient};
use vfn_lab::{
    ChildGuard, FloodResult, Lab, RunningVfn, TopologySpec, in_netns, install_interrupt_flag,
    interrupted, lab_config, remove_stale, udp_flood, vfn_binary,
};
use vfn_rules::{
    Action, AddressMatch, CompileLimits, DefaultAction, PortRange, Protocol, RuleSetSpec, RuleSpec,
};

use crate::classify::ScratchDir;
use crate::rulesets::{classbench_rules, read_entries, set_files};

/// Namespaces of this benchmark start with this.
const PREFIX: &str = "vfnapply";
/// The stream: UDP from c1 to srv, this port.
const STREAM_PORT: u16 = 7100;
const C1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const SRV: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
/// How long the router may take to attach its ports.
const READY: Duration = Duration::from_secs(30);
/// The stream runs this long before the request is sent...
const LEAD: Duration = Duration::from_millis(500);
/// ...and at least this long after the answer.
const TAIL: Duration = Duration::from_millis(500);
/// The longest stream that covers a swap.
const STREAM_MAX: Duration = Duration::from_secs(120);
/// The longest an apply or an `nft` run may take.
const CALL_LIMIT: Duration = Duration::from_secs(120);
/// The lossless search: streams of this length...
const SEARCH_STREAM: Duration = Duration::from_secs(1);
/// ...from this rate, doubling up to at most this one (`udp_flood` paces up to 200,000/s)...
const SEARCH_RATE_FIRST: u64 = 2_000;
const SEARCH_RATE_MAX: u64 = 128_000;
/// ...then this many bisection steps.
const SEARCH_BISECTIONS: usize = 3;
/// How often a running `nft` is checked for its exit.
const NFT_POLL: Duration = Duration::from_micros(100);

#[derive(clap::Args)]
pub struct Args {
    /// ClassBench sets, one row each (cut to the VFN's 100,000 rules).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "acl1_1k,acl1_10k,acl1_100k"
    )]
    sets: Vec<String>,
    /// Measured swaps per set (and `nft -f` loads and replacements).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The shortest stream per swap, in seconds; longer when the unmeasured first apply of a set
    /// says the swap needs it (`LEAD`, four times that apply, `TAIL`).
    #[arg(long, default_value_t = 2.0)]
    stream_seconds: f64,
    /// Skip the `nft -f` anchor.
    #[arg(long)]
    no_nft: bool,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/classbench"))]
    classbench: PathBuf,
}

/// One set in both versions, as rules and as the API's message.
struct Versions {
    set: String,
    /// Rules per version (the stream's rule included).
    rules: usize,
    specs: [RuleSetSpec; 2],
    messages: [proto::RuleSet; 2],
}

/// What one measured swap saw.
struct Swap {
    /// Request sent to answer received, on the client.
    client: Duration,
    /// Request received to set live, as the router reports it.
    server: Duration,
    /// Of that, compiling the set.
    build: Duration,
    stream: FloodResult,
    /// UDP datagrams that reached srv's stack during the stream, and of those, the ones its
    /// receiving socket dropped because its buffer was full.
    arrivals: UdpArrivals,
}

impl Swap {
    /// Datagrams sent that never reached srv: lost on the way, through the router.
    fn lost(&self) -> u64 {
        self.stream.sent.saturating_sub(self.arrivals.datagrams)
    }

    /// Datagrams that reached srv but not the stream's socket (the benchmark's receiver fell
    /// behind).
    fn receiver_overflows(&self) -> u64 {
        self.arrivals.buffer_full
    }
}

/// `nft -f` timings of one round: loading into an empty namespace, replacing the other version.
struct NftRound {
    load: Duration,
    replace: Duration,
}

/// A row of the table: one set, every round.
struct Row {
    set: String,
    rules: usize,
    swaps: Vec<Swap>,
    nft: Vec<NftRound>,
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.rounds == 0 || args.sets.is_empty() {
        return Err("nothing to measure: give --sets and --rounds".into());
    }
    if !(0.1..=60.0).contains(&args.stream_seconds) {
        return Err(format!(
            "--stream-seconds {}: 0.1 to 60",
            args.stream_seconds
        ));
    }
    // Ctrl-C ends the step in progress and removes the lab, as an error does.
    install_interrupt_flag().map_err(|e| e.to_string())?;
    let sets = args
        .sets
        .iter()
        .map(|set| versions(&args.classbench, set))
        .collect::<Result<Vec<_>, _>>()?;
    remove_stale(PREFIX).map_err(|e| e.to_string())?;
    let lab = Lab::create(&TopologySpec::default_lab(PREFIX)).map_err(|e| e.to_string())?;
    // The router is stopped inside, before the lab goes; the lab's teardown finishes even
    // after Ctrl-C.
    let measured = measure(&lab, args, &sets);
    let removed = lab.destroy().map_err(|e| e.to_string());
    let (rate, rows) = measured?;
    removed?;
    print_table(args, rate, &rows);
    Ok(())
}

/// Starts the router, finds the stream's rate, and measures every set.
fn measure(lab: &Lab, args: &Args, sets: &[Versions]) -> Result<(StreamRate, Vec<Row>), String> {
    let mut config = lab_config(lab.topology()).map_err(|e| e.to_string())?;
    config.policy = Some(PolicySource::Inline(RuleSetSpec {
        version: "stream-only".into(),
        default_action: DefaultAction::Deny,
        rules: vec![stream_rule()],
        ..RuleSetSpec::default()
    }));
    let binary = vfn_binary().map_err(|e| e.to_string())?;
    let vfn = RunningVfn::start(lab, &binary, &config, READY).map_err(|e| e.to_string())?;
    let mut api = Api::connect(&vfn.api_socket())?;
    let stream = Stream::new(lab)?;
    // The first packets of a flow may wait for a neighbour: warm up, then search.
    stream.run(1_000, Duration::from_millis(300))?;
    let rate = stream.lossless_rate()?;
    eprintln!(
        "apply: lossless {} packets/s; streams at {}/s",
        rate.lossless,
        rate.stream()
    );
    let scratch =
        ScratchDir(std::env::temp_dir().join(format!("vfn-perf-apply-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| format!("{}: {e}", scratch.0.display()))?;
    let mut rows = Vec::with_capacity(sets.len());
    for versions in sets {
        rows.push(
            measure_set(args, &mut api, &stream, rate, versions, &scratch.0).map_err(|e| {
                format!(
                    "{}: {e}; the router's log:\n{}",
                    versions.set,
                    tail(&vfn.log())
                )
            })?,
        );
    }
    Ok((rate, rows))
}

/// The rounds of one set: its first apply (unmeasured), then per round a swap under the stream
/// and the `nft -f` anchor.
fn measure_set(
    args: &Args,
    api: &mut Api,
    stream: &Stream,
    rate: StreamRate,
    versions: &Versions,
    scratch: &Path,
) -> Result<Row, String> {
    let first = api.apply(versions.messages[1].clone())?;
    let stream_length = Duration::from_secs_f64(args.stream_seconds)
        .max(LEAD + 4 * first.client + TAIL)
        .min(STREAM_MAX);
    eprintln!(
        "apply: {} ({} rules): first apply {:.1} ms; streams of {:.1} s",
        versions.set,
        versions.rules,
        first.client.as_secs_f64() * 1e3,
        stream_length.as_secs_f64()
    );
    let nft_files = if args.no_nft {
        None
    } else {
        Some(nft_files(versions, scratch)?)
    };
    let mut row = Row {
        set: versions.set.clone(),
        rules: versions.rules,
        swaps: Vec::with_capacity(args.rounds),
        nft: Vec::with_capacity(args.rounds),
    };
    for round in 0..args.rounds {
        // Round 0 applies A over B, round 1 B over A, ...
        let (to, from) = (round % 2, (round + 1) % 2);
        row.swaps.push(swap_under_stream(
            api,
            stream,
            rate.stream(),
            stream_length,
            versions.messages[to].clone(),
        )?);
        if let Some(files) = &nft_files {
            row.nft
                .push(nft_round(&files.load[from], &files.replace[to])?);
        }
    }
    Ok(row)
}

/// Applies `message` while the stream runs: the stream starts `LEAD` before the request and must
/// outlast the answer by `TAIL`.
fn swap_under_stream(
    api: &mut Api,
    stream: &Stream,
    rate: u64,
    length: Duration,
    message: proto::RuleSet,
) -> Result<Swap, String> {
    let before = stream.arrivals()?;
    let swap = std::thread::scope(|scope| {
        let started = Instant::now();
        let streaming = scope.spawn(|| stream.run(rate, length));
        std::thread::sleep(LEAD);
        let applied = api.apply(message);
        let answered = started.elapsed();
        let flood = streaming
            .join()
            .map_err(|_| "the stream's thread panicked".to_string())??;
        let applied = applied?;
        if answered + TAIL > length {
            return Err(format!(
                "the answer came {:.2} s into a stream of {:.2} s: give --stream-seconds more",
                answered.as_secs_f64(),
                length.as_secs_f64()
            ));
        }
        Ok(Swap {
            client: applied.client,
            server: applied.server,
            build: applied.build,
            stream: flood,
            arrivals: UdpArrivals::default(),
        })
    })?;
    let after = stream.arrivals()?;
    Ok(Swap {
        arrivals: UdpArrivals {
            datagrams: after.datagrams.saturating_sub(before.datagrams),
            buffer_full: after.buffer_full.saturating_sub(before.buffer_full),
        },
        ..swap
    })
}

// ---- Rule sets ----

/// The rule that lets the stream through, first in every set.
fn stream_rule() -> RuleSpec {
    let host = |address: Ipv4Addr| AddressMatch {
        prefixes: vec![IpNet::from(IpAddr::V4(address))],
        ..AddressMatch::default()
    };
    RuleSpec {
        source: host(C1),
        destination: host(SRV),
        protocol: Some(Protocol::Udp),
        destination_ports: vec![PortRange::single(STREAM_PORT)],
        ..RuleSpec::new("stream", Action::Allow)
    }
}

/// Set `set` in its two versions (see the module documentation).
fn versions(dir: &Path, set: &str) -> Result<Versions, String> {
    let entries = read_entries(&set_files(dir, set)?)?;
    let rules_max = CompileLimits::default().max_rules;
    let version = |name: &str, allow_parity: usize| {
        let action = |index: usize| {
            if index % 2 == allow_parity {
                Action::Allow
            } else {
                Action::Drop
            }
        };
        let mut rules = vec![stream_rule()];
        rules.extend(
            classbench_rules(&entries, action)
                .into_iter()
                .take(rules_max - 1),
        );
        RuleSetSpec {
            version: format!("{set}-{name}"),
            default_action: DefaultAction::Deny,
            rules,
            ..RuleSetSpec::default()
        }
    };
    let specs = [version("a", 0), version("b", 1)];
    Ok(Versions {
        set: set.into(),
        rules: specs[0].rules.len(),
        messages: [rule_set_to_proto(&specs[0]), rule_set_to_proto(&specs[1])],
        specs,
    })
}

// ---- The control API ----

/// A client of the router's API on its Unix socket, with a runtime of its own.
struct Api {
    runtime: tokio::runtime::Runtime,
    client: ControlClient<Channel>,
}

/// What one apply took.
struct Applied {
    client: Duration,
    server: Duration,
    build: Duration,
}

impl Api {
    fn connect(socket: &Path) -> Result<Api, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for the API client: {e}"))?;
        let socket = socket.to_owned();
        let shown = socket.display().to_string();
        // The URI is required but unused: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://localhost");
        let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }));
        let channel = runtime
            .block_on(async { tokio::time::timeout(CALL_LIMIT, connecting).await })
            .map_err(|_| format!("connecting to {shown}: no answer within {CALL_LIMIT:?}"))?
            .map_err(|e| format!("connecting to {shown}: {e}"))?;
        Ok(Api {
            runtime,
            client: ControlClient::new(channel),
        })
    }

    /// Applies `message` (encoding it is part of the request: it is timed).
    fn apply(&mut self, message: proto::RuleSet) -> Result<Applied, String> {
        let version = message.version.clone();
        let request = proto::ApplyRuleSetRequest {
            rule_set: Some(message),
            expected_version: None,
            dry_run: false,
        };
        let started = Instant::now();
        let answer = self
            .runtime
            .block_on(async {
                tokio::time::timeout(CALL_LIMIT, self.client.apply_rule_set(request)).await
            })
            .map_err(|_| format!("ApplyRuleSet {version}: no answer within {CALL_LIMIT:?}"))?
            .map_err(|status| {
                format!(
                    "ApplyRuleSet {version}: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?
            .into_inner();
        let client = started.elapsed();
        if !answer.applied || answer.version_after != version {
            return Err(format!(
                "ApplyRuleSet {version}: answered applied {} for version {:?}",
                answer.applied, answer.version_after
            ));
        }
        Ok(Applied {
            client,
            server: Duration::from_micros(answer.apply_micros),
            build: Duration::from_micros(answer.stats.map_or(0, |stats| stats.build_micros)),
        })
    }
}

// ---- The stream ----

/// The measurement stream, c1 to srv through the router.
struct Stream {
    client: String,
    server: String,
}

/// The stream's lossless rate, packets per second.
#[derive(Clone, Copy)]
struct StreamRate {
    lossless: u64,
}

impl StreamRate {
    /// The rate of the streams that cover swaps: half the lossless rate.
    fn stream(self) -> u64 {
        (self.lossless / 2).max(1)
    }
}

impl Stream {
    fn new(lab: &Lab) -> Result<Stream, String> {
        let netns = |role: &str| {
            lab.netns(role)
                .map(str::to_owned)
                .map_err(|e| e.to_string())
        };
        Ok(Stream {
            client: netns("c1")?,
            server: netns("srv")?,
        })
    }

    /// srv's UDP counters so far: nothing but the stream sends UDP to srv in this lab.
    fn arrivals(&self) -> Result<UdpArrivals, String> {
        // /proc/thread-self/net, not /proc/self/net: the namespace of this thread, which
        // joined srv's, rather than of the process's main thread.
        let text = in_netns(&self.server, || {
            std::fs::read_to_string("/proc/thread-self/net/snmp")
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}'s /proc/net/snmp: {e}", self.server))?;
        UdpArrivals::parse(&text)
            .ok_or_else(|| format!("{}'s /proc/net/snmp: no Udp lines", self.server))
    }

    /// `length` of paced 64-byte datagrams at `rate` per second.
    fn run(&self, rate: u64, length: Duration) -> Result<FloodResult, String> {
        udp_flood(
            &self.client,
            &self.server,
            IpAddr::V4(SRV),
            STREAM_PORT,
            rate,
            length,
        )
        .map_err(|e| format!("the stream at {rate}/s: {e}"))
    }

    /// The highest rate at which a one-second stream loses nothing (its socket received every
    /// datagram sent): doubling from
    /// `SEARCH_RATE_FIRST` to the first loss (or `SEARCH_RATE_MAX`), then bisecting.
    fn lossless_rate(&self) -> Result<StreamRate, String> {
        let lossless = |rate: u64| -> Result<bool, String> {
            let result = self.run(rate, SEARCH_STREAM)?;
            Ok(result.received >= result.sent)
        };
        let mut low = 0;
        let mut high = None;
        let mut rate = SEARCH_RATE_FIRST;
        while rate <= SEARCH_RATE_MAX {
            if !lossless(rate)? {
                high = Some(rate);
                break;
            }
            low = rate;
            rate *= 2;
        }
        if low == 0 {
            return Err(format!(
                "the stream lost packets at {SEARCH_RATE_FIRST}/s already"
            ));
        }
        if let Some(mut high) = high {
            for _ in 0..SEARCH_BISECTIONS {
                let middle = (low + high) / 2;
                if lossless(middle)? {
                    low = middle;
                } else {
                    high = middle;
                }
            }
        }
        Ok(StreamRate { lossless: low })
    }
}

/// Counters of a namespace's UDP stack (`/proc/net/snmp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct UdpArrivals {
    /// Datagrams received: delivered to a socket (`InDatagrams`) or not (`InErrors`, which
    /// counts `RcvbufErrors`).
    datagrams: u64,
    /// Datagrams dropped because the socket's receive buffer was full (`RcvbufErrors`).
    buffer_full: u64,
}

impl UdpArrivals {
    /// From the two `Udp:` lines of `/proc/net/snmp`: names, then values.
    fn parse(snmp: &str) -> Option<UdpArrivals> {
        let mut lines = snmp.lines().filter(|line| line.starts_with("Udp:"));
        let (names, values) = (lines.next()?, lines.next()?);
        let field = |wanted: &str| {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(name, _)| *name == wanted)
                .and_then(|(_, value)| value.parse::<u64>().ok())
        };
        Some(UdpArrivals {
            datagrams: field("InDatagrams")? + field("InErrors")?,
            buffer_full: field("RcvbufErrors")?,
        })
    }
}

// ---- nftables ----

/// One set's `nft -f` files: each version alone (`load`), and each replacing whatever is there
/// (`replace`: `flush ruleset`, then the version).
struct NftFiles {
    load: [PathBuf; 2],
    replace: [PathBuf; 2],
}

fn nft_files(versions: &Versions, scratch: &Path) -> Result<NftFiles, String> {
    let mut load = Vec::with_capacity(2);
    let mut replace = Vec::with_capacity(2);
    for spec in &versions.specs {
        let ruleset = nft_ruleset(spec)?;
        let write = |name: String, text: &str| {
            let path = scratch.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok::<_, String>(path)
        };
        load.push(write(format!("{}.nft", spec.version), &ruleset)?);
        replace.push(write(
            format!("{}-replace.nft", spec.version),
            &format!("flush ruleset\n{ruleset}"),
        )?);
    }
    let pair = |paths: Vec<PathBuf>| -> Result<[PathBuf; 2], String> {
        paths.try_into().map_err(|_| "two versions".to_string())
    };
    Ok(NftFiles {
        load: pair(load)?,
        replace: pair(replace)?,
    })
}

/// `spec` as an nftables table: one forward chain, its rules in order, the default as policy.
fn nft_ruleset(spec: &RuleSetSpec) -> Result<String, String> {
    let policy = match spec.default_action {
        DefaultAction::Allow => "accept",
        DefaultAction::Deny => "drop",
    };
    let mut text = format!(
        "table inet vfnapply {{\n chain forward {{\n  type filter hook forward priority filter; policy {policy};\n"
    );
    for rule in &spec.rules {
        let _ = writeln!(text, "  {}", nft_rule(rule)?);
    }
    text.push_str(" }\n}\n");
    Ok(text)
}

/// One rule in nft's words. Only what ClassBench rules use (one IPv4 prefix per side, a port
/// range per side, a protocol; allow or drop) is translated; anything else is an error.
fn nft_rule(rule: &RuleSpec) -> Result<String, String> {
    let unsupported = |what: &str| format!("rule {}: {what} has no nft translation here", rule.id);
    if !rule.ingress.is_empty() || rule.tcp_flags.is_some() || rule.log {
        return Err(unsupported("ingress, TCP flags or log"));
    }
    let mut words = Vec::new();
    let mut ipv4_any = false;
    for (key, side) in [("saddr", &rule.source), ("daddr", &rule.destination)] {
        if !side.segments.is_empty() || !side.except.is_empty() {
            return Err(unsupported("a segment or an exception"));
        }
        match side.prefixes.as_slice() {
            [] => {}
            [IpNet::V4(prefix)] if prefix.prefix_len() == 0 => ipv4_any = true,
            [IpNet::V4(prefix)] => words.push(format!("ip {key} {prefix}")),
            _ => return Err(unsupported("an IPv6 prefix or several prefixes")),
        }
    }
    // Any IPv4 address on both sides: the rule still matches IPv4 only.
    if ipv4_any && words.is_empty() {
        words.push("meta nfproto ipv4".to_string());
    }
    let range = |range: &PortRange| {
        if range.first == range.last {
            range.first.to_string()
        } else {
            format!("{}-{}", range.first, range.last)
        }
    };
    match &rule.protocol {
        Some(protocol @ (Protocol::Tcp | Protocol::Udp)) => {
            let name = if *protocol == Protocol::Tcp {
                "tcp"
            } else {
                "udp"
            };
            if rule.source_ports.is_empty() && rule.destination_ports.is_empty() {
                words.push(format!("meta l4proto {name}"));
            }
            for (key, ports) in [
                ("sport", &rule.source_ports),
                ("dport", &rule.destination_ports),
            ] {
                match ports.as_slice() {
                    [] => {}
                    [one] => words.push(format!("{name} {key} {}", range(one))),
                    _ => return Err(unsupported("several port ranges")),
                }
            }
        }
        Some(Protocol::Number(number)) => words.push(format!("meta l4proto {number}")),
        Some(_) => return Err(unsupported("an ICMP match")),
        None => {}
    }
    words.push(
        match rule.action {
            Action::Allow => "accept",
            Action::Drop => "drop",
            _ => return Err(unsupported("an action other than allow or drop")),
        }
        .to_string(),
    );
    Ok(words.join(" "))
}

/// A network namespace of the benchmark's own, deleted when dropped.
struct Namespace(String);

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let name = format!("{PREFIX}-{}-nft", std::process::id());
        let mut command = Command::new("ip");
        command.args(["netns", "add", &name]);
        run_bounded(command, None, Stop::OnInterrupt)?;
        Ok(Namespace(name))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let mut command = Command::new("ip");
        command.args(["netns", "del", &self.0]);
        if let Err(error) = run_bounded(command, None, Stop::AtLimitOnly) {
            eprintln!("vfn-perf apply: removing namespace {}: {error}", self.0);
        }
    }
}

/// Into a fresh namespace: `load` timed, then `replace` over it timed; the namespace deleted.
fn nft_round(load: &Path, replace: &Path) -> Result<NftRound, String> {
    let namespace = Namespace::create()?;
    let nft = |file: &Path| {
        let log = file.with_extension("err");
        let mut command = Command::new("nft");
        command.arg("-f").arg(file);
        in_netns(&namespace.0, || {
            run_bounded(command, Some(&log), Stop::OnInterrupt)
        })
        .map_err(|e| e.to_string())?
    };
    let load = nft(load)?;
    let replace = nft(replace)?;
    drop(namespace);
    Ok(NftRound { load, replace })
}

/// When [`run_bounded`] gives up on a command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// At `CALL_LIMIT`, or at once after Ctrl-C.
    OnInterrupt,
    /// At `CALL_LIMIT` only: for removing what the run made, which must happen after Ctrl-C too.
    AtLimitOnly,
}

/// Runs `command` to its exit, at most `CALL_LIMIT` (and not past Ctrl-C, unless `stop` says
/// so); returns how long it ran. Its error output goes to `log` if given (read back on failure),
/// else nowhere.
fn run_bounded(mut command: Command, log: Option<&Path>, stop: Stop) -> Result<Duration, String> {
    let shown = format!("{command:?}");
    command.stdin(Stdio::null()).stdout(Stdio::null());
    match log {
        Some(path) => {
            let file =
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            command.stderr(file);
        }
        None => {
            command.stderr(Stdio::null());
        }
    }
    let started = Instant::now();
    // Dropping the guard (on every early return) stops the process by its PID.
    let mut child = ChildGuard::spawn(command).map_err(|e| e.to_string())?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > CALL_LIMIT {
            return Err(format!("{shown}: still running after {CALL_LIMIT:?}"));
        }
        if stop == Stop::OnInterrupt && interrupted() {
            return Err(format!("{shown}: interrupted"));
        }
        std::thread::sleep(NFT_POLL);
    };
    let elapsed = started.elapsed();
    if !status.success() {
        let output = log
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        return Err(format!("{shown}: {status}\n{}", tail(&output)));
    }
    Ok(elapsed)
}

// ---- The table ----

/// The last 40 lines of `text`.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Median, min and max of `values` (at least one).
fn median_min_max(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |index: usize| values.get(index).copied().unwrap_or(f64::NAN);
    (
        at(values.len() / 2),
        at(0),
        at(values.len().saturating_sub(1)),
    )
}

fn print_table(args: &Args, rate: StreamRate, rows: &[Row]) {
    println!(
        "rule-set apply: VFN ApplyRuleSet over its Unix socket under a UDP stream (c1 to srv, 64 B datagrams) at {}/s, half the lossless {}/s; {} rounds per set; nft -f in a namespace of its own",
        rate.stream(),
        rate.lossless,
        args.rounds
    );
    println!(
        "| set | rules | VFN apply ms median | min | max | server ms median | of which compile ms | lost in the swap median | min | max | sent per stream | receiver overflows max | nft -f load ms | nft -f replace ms | VFN / nft replace |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let per_swap =
            |figure: &dyn Fn(&Swap) -> f64| median_min_max(row.swaps.iter().map(figure).collect());
        let client = per_swap(&|swap| milliseconds(swap.client));
        let server = per_swap(&|swap| milliseconds(swap.server));
        let build = per_swap(&|swap| milliseconds(swap.build));
        let lost = per_swap(&|swap| swap.lost() as f64);
        let sent = per_swap(&|swap| swap.stream.sent as f64);
        let overflows = per_swap(&|swap| swap.receiver_overflows() as f64);
        let nft = if row.nft.is_empty() {
            " - | - | - |".to_string()
        } else {
            let load = median_min_max(row.nft.iter().map(|n| milliseconds(n.load)).collect());
            let replace = median_min_max(row.nft.iter().map(|n| milliseconds(n.replace)).collect());
            // The ratio of each round, then their median: the figure drift moves least.
            let ratio = median_min_max(
                row.swaps
                    .iter()
                    .zip(&row.nft)
                    .map(|(swap, nft)| swap.client.as_secs_f64() / nft.replace.as_secs_f64())
                    .collect(),
            );
            format!(" {:.1} | {:.1} | {:.2} |", load.0, replace.0, ratio.0)
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |{nft}",
            row.set,
            row.rules,
            client.0,
            client.1,
            client.2,
            server.0,
            build.0,
            lost.0,
            lost.1,
            lost.2,
            sent.0,
            overflows.2,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classbench_rules_translate_to_nft_words() {
        let rule = RuleSpec {
            source: AddressMatch {
                prefixes: vec!["10.1.0.0/16".parse().expect("prefix")],
                ..AddressMatch::default()
            },
            destination: AddressMatch {
                prefixes: vec!["0.0.0.0/0".parse().expect("prefix")],
                ..AddressMatch::default()
            },
            protocol: Some(Protocol::Tcp),
            source_ports: Vec::new(),
            destination_ports: vec![PortRange {
                first: 1024,
                last: 65535,
            }],
            ..RuleSpec::new("r1", Action::Drop)
        };
        assert_eq!(
            nft_rule(&rule).expect("translated"),
            "ip saddr 10.1.0.0/16 tcp dport 1024-65535 drop"
        );
        let any = RuleSpec {
            source: rule.destination.clone(),
            destination: rule.destination.clone(),
            protocol: Some(Protocol::Number(1)),
            ..RuleSpec::new("r2", Action::Allow)
        };
        assert_eq!(
            nft_rule(&any).expect("translated"),
            "meta nfproto ipv4 meta l4proto 1 accept"
        );
        assert_eq!(
            nft_rule(&stream_rule()).expect("translated"),
            "ip saddr 198.18.1.2/32 ip daddr 198.18.3.2/32 udp dport 7100 accept"
        );
        let udp_any_port = RuleSpec {
            protocol: Some(Protocol::Udp),
            ..RuleSpec::new("r3", Action::Allow)
        };
        assert_eq!(
            nft_rule(&udp_any_port).expect("translated"),
            "meta l4proto udp accept"
        );
        let reject = RuleSpec::new("r4", Action::Reject);
        assert!(nft_rule(&reject).is_err());
    }

    #[test]
    fn udp_arrivals_count_delivered_and_refused_datagrams() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 2 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 1000 3 7 0 6 0 1 0 0\nUdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n";
        assert_eq!(
            UdpArrivals::parse(snmp),
            Some(UdpArrivals {
                datagrams: 1007,
                buffer_full: 6
            })
        );
        assert_eq!(UdpArrivals::parse("Ip: Forwarding\nIp: 2\n"), None);
    }
}
