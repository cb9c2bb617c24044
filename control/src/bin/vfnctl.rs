//! `vfnctl`: the VFN's control API from the command line. Talks to the router's Unix socket
//! (`/run/vfn/api.sock`, or `--server`); prints tables for people and, with `-o json`, the
//! API's messages as JSON for scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_types::StatusExt;
use vfn_control::proto::control_client::ControlClient;
use vfn_control::proto::{self, dynamic_action};
use vfn_control::{audit, convert, persist};

#[derive(Parser)]
#[command(version, about = "Control a running VFN router through its API", long_about = None)]
struct Cli {
    /// The router's API: its Unix socket, or `http://HOST:PORT` / `https://HOST:PORT` for TCP
    /// (which needs --token-file).
    #[arg(long, global = true, default_value = "/run/vfn/api.sock")]
    server: String,
    /// A file holding the bearer token for TCP.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// For https: the CA that signed the router's certificate (PEM).
    #[arg(long, global = true, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// For https: this client's certificate (PEM) and key.
    #[arg(long, global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, global = true)]
    tls_key: Option<PathBuf>,
    /// For https: the name the router's certificate must carry (default: the host of --server).
    #[arg(long, global = true)]
    tls_domain: Option<String>,
    /// Output: tables for people, or the API's messages as JSON.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The segmentation rule set.
    #[command(subcommand)]
    Ruleset(RulesetCommand),
    /// Per-rule counters of the rule set in force.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Dynamic entries: quarantines, rate limits and mirrors of a host, with a time to live.
    #[command(subcommand)]
    Dynamic(DynamicCommand),
    /// Mirror policies: copy what they match to a mirror session, with a time to live.
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// Static routes and connected prefixes.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// The neighbour (ARP/ND) table and static entries.
    #[command(subcommand)]
    Neighbours(NeighboursCommand),
    /// Flows in the workers' flow tables (`flows`), or records of flows as they end, live
    /// (`flows observe`).
    Flows(FlowsArgs),
    /// Write what a port receives and sends to a pcap file (for Wireshark or tshark): the
    /// frames as the router sees them, which tcpdump cannot.
    Capture(CaptureArgs),
    /// Packets and bytes per port, drops by reason.
    Stats,
    /// Print what changes as it happens (rule sets, dynamic entries, drops, neighbours), one
    /// line per event, until Ctrl-C, COUNT events or SECONDS.
    Watch {
        #[arg(long)]
        count: Option<u64>,
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Anomaly scoring: the models in force, counters, the sources followed.
    #[command(subcommand)]
    Scoring(ScoringCommand),
}

#[derive(Subcommand)]
enum ScoringCommand {
    /// The models in force, the scorer's counters and the sources it follows (the highest last
    /// threat first), with each source's persona mix.
    Show,
    /// Load the model bundle in DIR (manifest.json and the ONNX files it names): validated
    /// whole by the router, then swapped in atomically.
    Load { dir: PathBuf },
}

#[derive(Subcommand)]
enum RulesetCommand {
    /// Apply a policy file (the shape of the config's policy section), replacing the rule set
    /// in force atomically.
    Apply {
        file: PathBuf,
        /// Validate and compile, show the diff, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse unless this is the version in force ("" for none): compare-and-set.
        #[arg(long)]
        expect: Option<String>,
    },
    /// Show the rule set in force, as a policy file.
    Get,
    /// What applying FILE would change (a dry run).
    Diff { file: PathBuf },
}

#[derive(Subcommand)]
enum RoutesCommand {
    List,
    /// Add a static route, or replace the one with the same prefix.
    Add {
        prefix: String,
        #[arg(long)]
        via: String,
        /// PORT or PORT.VLAN (default: where the gateway is on-link).
        #[arg(long, default_value = "")]
        interface: String,
    },
    /// Delete the static route of a prefix.
    Del {
        prefix: String,
    },
}

#[derive(Subcommand)]
enum NeighboursCommand {
    List,
    /// Add a static neighbour: never aged, never overridden by ARP or ND.
    Add {
        interface: String,
        address: String,
        mac: String,
    },
    /// Delete an entry (a gateway in use is resolved again at once).
    Del {
        interface: String,
        address: String,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Packets and bytes per rule.
    Counters,
}

#[derive(Subcommand)]
enum DynamicCommand {
    /// Add an entry for a host (replacing the host's entry, if any).
    Add(DynamicAdd),
    /// List the live entries.
    List,
    /// Remove an entry by id.
    Rm { id: u64 },
}

#[derive(Subcommand)]
enum MirrorCommand {
    /// Add a policy.
    Add(Box<MirrorAdd>),
    /// List the live policies.
    List,
    /// Remove a policy by id.
    Rm { id: u64 },
}

#[derive(Args)]
struct MirrorAdd {
    /// The mirror session (of the router's config) the copies go to.
    session: String,
    /// Source prefixes or addresses (either direction of a flow matches); repeatable.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Destination prefixes or addresses; repeatable.
    #[arg(long = "destination")]
    destinations: Vec<String>,
    /// Source segments of the rule set in force; repeatable.
    #[arg(long = "source-segment")]
    source_segments: Vec<String>,
    /// Destination segments of the rule set in force; repeatable.
    #[arg(long = "destination-segment")]
    destination_segments: Vec<String>,
    /// An IP protocol: tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    protocol: Option<String>,
    /// Source ports or ranges (`80`, `8000-8099`); repeatable; needs --protocol.
    #[arg(long = "sport", value_parser = parse_port_range)]
    source_ports: Vec<proto::PortRange>,
    /// Destination ports or ranges; repeatable; needs --protocol.
    #[arg(long = "dport", value_parser = parse_port_range)]
    destination_ports: Vec<proto::PortRange>,
    /// Only flows whose anomaly score is at least this (0..1).
    #[arg(long)]
    min_score: Option<f32>,
    /// Time to live: `500ms`, `30s`, `10m`, `2h`.
    #[arg(long, value_parser = parse_duration)]
    ttl: Duration,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    reason: String,
}

/// `80` or `8000-8099`.
fn parse_port_range(text: &str) -> Result<proto::PortRange, String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let port = |t: &str| {
        t.parse::<u16>()
            .map(u32::from)
            .map_err(|_| format!("{text:?} is not a port or port range"))
    };
    Ok(proto::PortRange {
        first: port(first)?,
        last: port(last)?,
    })
}

/// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
fn protocol_number(text: &str) -> Result<u32, String> {
    match text {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" => Ok(58),
        number => number
            .parse()
            .map_err(|_| format!("{number:?} is not tcp, udp, icmp, icmpv6 or a number")),
    }
}

#[derive(Args)]
struct DynamicAdd {
    /// An address, e.g. 198.18.1.7 or 2001:2::7.
    host: String,
    /// Drop every packet from or to the host.
    #[arg(long, group = "action")]
    quarantine: bool,
    /// At most this many packets per second from the host.
    #[arg(long, group = "action", value_name = "PACKETS_PER_SECOND")]
    rate_limit: Option<u64>,
    /// Burst of the rate limit, in packets (default: one second's worth).
    #[arg(long, requires = "rate_limit")]
    burst: Option<u64>,
    /// Copy the host's packets to this mirror session.
    #[arg(long, group = "action", value_name = "SESSION")]
    mirror: Option<String>,
    /// Time to live: `500ms`, `30s`, `10m`, `2h`.
    #[arg(long, value_parser = parse_duration)]
    ttl: Duration,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct FlowsArgs {
    #[command(subcommand)]
    observe: Option<FlowsCommand>,
    #[command(flatten)]
    filter: FlowFilter,
    /// At most this many (default 100, at most 10000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Subcommand)]
enum FlowsCommand {
    /// Print each flow record as it ends (idle or active timeout, FIN/RST, eviction), until
    /// Ctrl-C, COUNT records or SECONDS.
    Observe {
        #[command(flatten)]
        filter: FlowFilter,
        /// Only records of this verdict: rule, default or no-policy.
        #[arg(long)]
        verdict: Option<String>,
        /// Only records a rule of this id decided.
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        count: Option<u64>,
        #[arg(long)]
        seconds: Option<u64>,
    },
}

#[derive(Args)]
struct FlowFilter {
    /// Only flows with either address in this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Only flows with this port on either side.
    #[arg(long)]
    port: Option<u32>,
    /// Only flows of this IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    #[arg(long)]
    protocol: Option<u32>,
}

#[derive(Args)]
struct CaptureArgs {
    /// The port (its name in the config).
    port: String,
    /// The pcap file to write.
    #[arg(short = 'w', long)]
    write: PathBuf,
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    direction: Direction,
    /// Only frames with an address in this prefix.
    #[arg(long)]
    host: Option<String>,
    /// Only frames of this IP protocol number.
    #[arg(long)]
    protocol: Option<u32>,
    /// Only frames with this TCP/UDP/SCTP port on either side.
    #[arg(long)]
    l4_port: Option<u32>,
    /// Stop after this many frames.
    #[arg(short = 'c', long, default_value_t = 1000)]
    count: u32,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Bytes kept of each frame (0: whole frames).
    #[arg(long, default_value_t = 0)]
    snaplen: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Direction {
    Rx,
    Tx,
    Both,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the log's hash chain and that it ends at the head the router persisted: finds an
    /// edited, removed or truncated entry. Reads the files; the router need not run.
    Verify {
        /// The router's state folder (`[state] dir`).
        #[arg(long, default_value = "/var/lib/vfn")]
        state_dir: PathBuf,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit (ms, s, m, h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a number"))?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(format!("{text:?}: the unit is ms, s, m or h")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?}: too long"))
}

/// Adds the bearer token, if any, to every request.
#[derive(Clone)]
struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Client = ControlClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn connect(cli: &Cli) -> Result<Client, String> {
    let server = cli.server.clone();
    let channel = if server.starts_with("http://") || server.starts_with("https://") {
        let mut endpoint =
            Endpoint::from_shared(server.clone()).map_err(|e| format!("--server: {e}"))?;
        if server.starts_with("https://") {
            let read = |path: &Option<PathBuf>, what: &str| -> Result<Vec<u8>, String> {
                let path = path.as_ref().ok_or_else(|| format!("https needs {what}"))?;
                std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
            };
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(
                    &cli.tls_ca,
                    "--tls-ca",
                )?))
                .identity(tonic::transport::Identity::from_pem(
                    read(&cli.tls_cert, "--tls-cert")?,
                    read(&cli.tls_key, "--tls-key")?,
                ));
            if let Some(domain) = &cli.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| format!("connecting to {server}: {e:?}"))?
    } else {
        let socket = PathBuf::from(&server);
        // The URI is required by the API but unused: the connector dials the socket.
        Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    tokio::net::UnixStream::connect(socket)
                        .await
                        .map(TokioIo::new)
                }
            }))
            .await
            .map_err(|e| format!("connecting to {server}: {e}"))?
    };
    let token = match &cli.token_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(
                format!("Bearer {}", text.trim())
                    .parse()
                    .map_err(|_| format!("{}: not a usable token", path.display()))?,
            )
        }
        None => None,
    };
    Ok(ControlClient::with_interceptor(channel, Bearer(token)).max_decoding_message_size(1 << 30))
}

/// A refusal in words: the status, then one line per field the server named.
fn explain(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad_request) = status.get_error_details().bad_request() {
        for violation in &bad_request.field_violations {
            text.push_str(&format!(
                "\n  {}: {}",
                violation.field, violation.description
            ));
        }
    }
    text
}

fn json<T: serde::Serialize>(message: &T) -> String {
    serde_json::to_string_pretty(message).unwrap_or_default()
}

/// Prints `response` as JSON, or as `table` prints it.
fn show<T: serde::Serialize>(response: &T, output: Output, table: impl FnOnce(&T)) {
    match output {
        Output::Json => println!("{}", json(response)),
        Output::Table => table(response),
    }
}

fn print_apply(response: &proto::ApplyRuleSetResponse) {
    let verb = if response.applied {
        "applied"
    } else {
        "valid (dry run, nothing changed)"
    };
    println!(
        "{:?} -> {:?}: {verb}",
        response.version_before, response.version_after
    );
    if let Some(stats) = &response.stats {
        println!(
            "  {} rules, {} classifier entries, {} bytes, built in {:.1} ms",
            stats.rules,
            stats.entries,
            stats.memory_bytes,
            stats.build_micros as f64 / 1e3
        );
    }
    if let Some(diff) = &response.diff {
        for (sign, ids) in [
            ("+", &diff.added),
            ("-", &diff.removed),
            ("~", &diff.changed),
        ] {
            for id in ids {
                println!("  {sign} {id}");
            }
        }
        println!(
            "  {} added, {} removed, {} changed, {} moved, {} unchanged",
            diff.added.len(),
            diff.removed.len(),
            diff.changed.len(),
            diff.moved,
            diff.unchanged
        );
    }
    if response.applied {
        println!(
            "  live {:.1} ms after the request arrived",
            response.apply_micros as f64 / 1e3
        );
    }
}

fn print_route_change(response: &proto::RouteChangeResponse) {
    println!(
        "routes in force: {} IPv4, {} IPv6 (FIB {} bytes)",
        response.routes_v4, response.routes_v6, response.fib_memory_bytes
    );
}

fn action_text(action: Option<&proto::DynamicAction>) -> String {
    match action.and_then(|a| a.kind.as_ref()) {
        Some(dynamic_action::Kind::Quarantine(_)) => "quarantine".into(),
        Some(dynamic_action::Kind::RateLimit(limit)) => format!(
            "rate-limit {}/s burst {}",
            limit.packets_per_second, limit.burst
        ),
        Some(dynamic_action::Kind::MirrorSession(session)) => format!("mirror {session}"),
        None => "?".into(),
    }
}

/// Reads a server stream until `count` messages or `seconds` have passed (or it ends).
struct Bounded {
    remaining: Option<u64>,
    deadline: Option<tokio::time::Instant>,
}

impl Bounded {
    fn new(count: Option<u64>, seconds: Option<u64>) -> Bounded {
        Bounded {
            remaining: count,
            deadline: seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s)),
        }
    }

    /// The next message, or `None` at a bound or the stream's end.
    async fn next<T>(
        &mut self,
        stream: &mut tonic::Streaming<T>,
    ) -> Result<Option<T>, tonic::Status> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining -= 1;
        }
        match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, stream.message())
                .await
                .unwrap_or(Ok(None)),
            None => stream.message().await,
        }
    }
}

/// A flow record in one line for people.
fn flow_record_text(record: &proto::FlowRecord) -> String {
    let direction =
        |d: &Option<proto::FlowDirection>| d.as_ref().map_or((0, 0), |d| (d.packets, d.bytes));
    let (forward_packets, forward_bytes) = direction(&record.forward);
    let (reverse_packets, reverse_bytes) = direction(&record.reverse);
    format!(
        "{} {}:{} -> {}:{} proto {} {} pkts/{} B, back {} pkts/{} B, {} ms, {} ({}{})",
        audit::rfc3339(record.record_end_unix_millis.into()),
        record.source,
        record.source_port,
        record.destination,
        record.destination_port,
        record.protocol,
        forward_packets,
        forward_bytes,
        reverse_packets,
        reverse_bytes,
        record
            .record_end_unix_millis
            .saturating_sub(record.record_start_unix_millis),
        record.end_reason,
        record.verdict,
        if record.rule.is_empty() {
            String::new()
        } else {
            format!(" {}", record.rule)
        }
    )
}

/// An event in one line for people.
fn event_text(event: &proto::Event) -> String {
    use proto::event::Kind;
    let what = match &event.kind {
        Some(Kind::RuleSetApplied(e)) => format!(
            "rule set applied: {:?} -> {:?} by {} (generation {})",
            e.version_before, e.version_after, e.principal, e.generation
        ),
        Some(Kind::RuleSetRefused(e)) => format!(
            "rule set refused: {:?} from {}: {}",
            e.version, e.principal, e.reason
        ),
        Some(Kind::DynamicEntryAdded(e)) => format!(
            "dynamic entry {} added: {} {} for {:.1}s ({})",
            e.id,
            action_text(e.action.as_ref()),
            e.host,
            e.remaining_millis as f64 / 1e3,
            e.reason
        ),
        Some(Kind::DynamicEntryRemoved(e)) => {
            format!(
                "dynamic entry {} removed ({}) by {}",
                e.id, e.host, e.principal
            )
        }
        Some(Kind::DynamicEntryExpired(e)) => {
            format!("dynamic entry {} expired ({})", e.id, e.host)
        }
        Some(Kind::Drops(e)) => format!(
            "dropped {} packets ({}) in {} ms",
            e.packets, e.reason, e.interval_millis
        ),
        Some(Kind::NeighbourChanged(e)) => format!(
            "neighbour {} on interface {} {} {}",
            e.address, e.interface, e.change, e.mac
        ),
        Some(Kind::ThreatDetected(e)) => format!(
            "threat {:.3} from {} ({}, persona {}, {} flows; flow {} {}:{} -> {}:{}): {} for \
             {:.1}s ({} {})",
            e.threat,
            e.source,
            e.model,
            e.persona,
            e.evidence,
            e.flow_protocol,
            e.flow_src,
            e.flow_sport,
            e.flow_dst,
            e.flow_dport,
            e.action,
            e.ttl_millis as f64 / 1e3,
            if e.action == "mirror_flow" {
                "mirror policy"
            } else {
                "dynamic entry"
            },
            e.entry_id
        ),
        Some(Kind::ModelsLoaded(e)) => format!(
            "models {} loaded by {} (sha256 {})",
            e.name, e.principal, e.sha256
        ),
        Some(Kind::EventsLost(e)) => {
            format!("{} events lost (this watcher read too slowly)", e.count)
        }
        None => "?".into(),
    };
    format!("{} {what}", audit::rfc3339(event.time_unix_millis.into()))
}

async fn run(cli: Cli) -> Result<(), String> {
    let output = cli.output;
    let mut client = match &cli.command {
        // Reads files only: works with the router stopped.
        Command::Audit(AuditCommand::Verify { state_dir }) => {
            return verify_audit(state_dir, output);
        }
        _ => connect(&cli).await?,
    };
    let status = |s: tonic::Status| explain(&s);
    match cli.command {
        Command::Ruleset(RulesetCommand::Apply {
            file,
            dry_run,
            expect,
        }) => {
            let response = client
                .apply_rule_set(apply_request(&file, dry_run, expect)?)
                .await
                .map_err(status)?;
            show(response.get_ref(), output, print_apply);
        }
        Command::Ruleset(RulesetCommand::Diff { file }) => {
            let response = client
                .apply_rule_set(apply_request(&file, true, None)?)
                .await
                .map_err(status)?;
            show(response.get_ref(), output, print_apply);
        }
        Command::Ruleset(RulesetCommand::Get) => {
            let response = client
                .get_rule_set(proto::GetRuleSetRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if output == Output::Json {
                println!("{}", json(&response));
            } else if let Some(rule_set) = &response.rule_set {
                let spec = convert::rule_set_from_proto(rule_set).map_err(|violations| {
                    format!("the router sent a rule set this vfnctl cannot read: {violations:?}")
                })?;
                println!(
                    "# generation {}, applied by {}, sha256 {}",
                    response.generation, response.applied_by, response.hash
                );
                print!("{}", vfn_config::policy_to_toml(&spec));
            } else {
                println!("no rule set in force");
            }
        }
        Command::Rules(RulesCommand::Counters) => {
            let response = client
                .get_rule_counters(proto::GetRuleCountersRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!("rule set {:?}", response.version);
                println!("{:<32} {:>14} {:>16}", "RULE", "PACKETS", "BYTES");
                for counter in response.rules.iter().chain(&response.default_action) {
                    println!(
                        "{:<32} {:>14} {:>16}",
                        counter.id, counter.packets, counter.bytes
                    );
                }
            });
        }
        Command::Dynamic(DynamicCommand::Add(add)) => {
            let kind = if add.quarantine {
                dynamic_action::Kind::Quarantine(proto::Empty {})
            } else if let Some(packets_per_second) = add.rate_limit {
                dynamic_action::Kind::RateLimit(proto::DynamicRateLimit {
                    packets_per_second,
                    burst: add.burst.unwrap_or(0),
                })
            } else if let Some(session) = add.mirror {
                dynamic_action::Kind::MirrorSession(session)
            } else {
                return Err("give one action: --quarantine, --rate-limit or --mirror".into());
            };
            let response = client
                .add_dynamic_entry(proto::AddDynamicEntryRequest {
                    host: add.host,
                    action: Some(proto::DynamicAction { kind: Some(kind) }),
                    ttl_millis: u64::try_from(add.ttl.as_millis()).unwrap_or(u64::MAX),
                    reason: add.reason,
                })
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!("added dynamic entry {}", response.id);
            });
        }
        Command::Dynamic(DynamicCommand::List) => {
            let response = client
                .list_dynamic_entries(proto::ListDynamicEntriesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!(
                    "{:>6} {:<40} {:<28} {:>10} REASON",
                    "ID", "HOST", "ACTION", "TTL"
                );
                for entry in &response.entries {
                    println!(
                        "{:>6} {:<40} {:<28} {:>9.1}s {}",
                        entry.id,
                        entry.host,
                        action_text(entry.action.as_ref()),
                        entry.remaining_millis as f64 / 1e3,
                        entry.reason
                    );
                }
            });
        }
        Command::Dynamic(DynamicCommand::Rm { id }) => {
            client
                .remove_dynamic_entry(proto::RemoveDynamicEntryRequest { id })
                .await
                .map_err(status)?;
            if output == Output::Table {
                println!("removed dynamic entry {id}");
            }
        }
        Command::Mirror(MirrorCommand::Add(add)) => {
            let protocol = add.protocol.as_deref().map(protocol_number).transpose()?;
            let response = client
                .add_mirror_policy(proto::AddMirrorPolicyRequest {
                    policy: Some(proto::MirrorPolicy {
                        id: 0,
                        session: add.session,
                        source_prefixes: add.sources,
                        destination_prefixes: add.destinations,
                        protocol,
                        source_ports: add.source_ports,
                        destination_ports: add.destination_ports,
                        min_score: add.min_score,
                        reason: add.reason,
                        source_segments: add.source_segments,
                        destination_segments: add.destination_segments,
                    }),
                    ttl_millis: u64::try_from(add.ttl.as_millis()).unwrap_or(u64::MAX),
                })
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!("added mirror policy {}", response.id);
            });
        }
        Command::Mirror(MirrorCommand::List) => {
            let response = client
                .list_mirror_policies(proto::ListMirrorPoliciesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!("{:>6} {:<16} {:>10} MATCH", "ID", "SESSION", "TTL");
                for listed in &response.policies {
                    let Some(policy) = &listed.policy else {
                        continue;
                    };
                    let ranges = |list: &[proto::PortRange]| {
                        list.iter()
                            .map(|r| format!("{}-{}", r.first, r.last))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    println!(
                        "{:>6} {:<16} {:>9.1}s src {} dst {} proto {} sport {} dport {}{}",
                        policy.id,
                        policy.session,
                        listed.remaining_millis as f64 / 1e3,
                        policy.source_prefixes.join(","),
                        policy.destination_prefixes.join(","),
                        policy.protocol.map_or("any".into(), |p| p.to_string()),
                        ranges(&policy.source_ports),
                        ranges(&policy.destination_ports),
                        policy
                            .min_score
                            .map_or(String::new(), |s| format!(" score >= {s}")),
                    );
                }
            });
        }
        Command::Mirror(MirrorCommand::Rm { id }) => {
            client
                .remove_mirror_policy(proto::RemoveMirrorPolicyRequest { id })
                .await
                .map_err(status)?;
            if output == Output::Table {
                println!("removed mirror policy {id}");
            }
        }
        Command::Routes(RoutesCommand::List) => {
            let response = client
                .list_routes(proto::ListRoutesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!("{:<44} {:<40} {:<12}", "PREFIX", "VIA", "INTERFACE");
                for route in &response.routes {
                    let via = if route.connected {
                        "connected"
                    } else {
                        &route.via
                    };
                    println!("{:<44} {:<40} {:<12}", route.prefix, via, route.interface);
                }
            });
        }
        Command::Routes(RoutesCommand::Add {
            prefix,
            via,
            interface,
        }) => {
            let route = proto::Route {
                prefix,
                via,
                interface,
                connected: false,
            };
            let response = client
                .add_route(proto::AddRouteRequest { route: Some(route) })
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, print_route_change);
        }
        Command::Routes(RoutesCommand::Del { prefix }) => {
            let response = client
                .delete_route(proto::DeleteRouteRequest { prefix })
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, print_route_change);
        }
        Command::Neighbours(NeighboursCommand::List) => {
            let response = client
                .list_neighbours(proto::ListNeighboursRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!("{:<12} {:<40} {:<18} STATE", "INTERFACE", "ADDRESS", "MAC");
                for neighbour in &response.neighbours {
                    println!(
                        "{:<12} {:<40} {:<18} {}",
                        neighbour.interface, neighbour.address, neighbour.mac, neighbour.state
                    );
                }
            });
        }
        Command::Neighbours(NeighboursCommand::Add {
            interface,
            address,
            mac,
        }) => {
            let neighbour = proto::Neighbour {
                interface,
                address,
                mac,
                state: String::new(),
            };
            let response = client
                .add_neighbour(proto::AddNeighbourRequest {
                    neighbour: Some(neighbour),
                })
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |_| println!("static neighbour added"));
        }
        Command::Neighbours(NeighboursCommand::Del { interface, address }) => {
            let response = client
                .delete_neighbour(proto::DeleteNeighbourRequest { interface, address })
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |_| println!("neighbour deleted"));
        }
        Command::Flows(FlowsArgs {
            observe:
                Some(FlowsCommand::Observe {
                    filter,
                    verdict,
                    rule,
                    count,
                    seconds,
                }),
            ..
        }) => {
            let request = proto::WatchFlowsRequest {
                prefix: filter.prefix.unwrap_or_default(),
                port: filter.port,
                protocol: filter.protocol,
                verdict: verdict.unwrap_or_default(),
                rule: rule.unwrap_or_default(),
            };
            let mut stream = client
                .watch_flows(request)
                .await
                .map_err(status)?
                .into_inner();
            let mut bounded = Bounded::new(count, seconds);
            while let Some(update) = bounded.next(&mut stream).await.map_err(status)? {
                match (&update.kind, output) {
                    (_, Output::Json) => {
                        println!("{}", serde_json::to_string(&update).unwrap_or_default())
                    }
                    (Some(proto::flow_update::Kind::Record(record)), Output::Table) => {
                        println!("{}", flow_record_text(record))
                    }
                    (Some(proto::flow_update::Kind::Lost(count)), Output::Table) => {
                        println!("{count} flow records lost (this watcher read too slowly)")
                    }
                    (None, Output::Table) => {}
                }
            }
        }
        Command::Flows(FlowsArgs {
            observe: None,
            filter,
            limit,
        }) => {
            let response = client
                .query_flows(proto::QueryFlowsRequest {
                    prefix: filter.prefix.unwrap_or_default(),
                    port: filter.port,
                    protocol: filter.protocol,
                    limit,
                })
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!(
                    "{:<46} {:<46} {:>5} {:>10} {:>12} {:<12} {:<20} {:>6}",
                    "SOURCE", "DESTINATION", "PROTO", "PACKETS", "BYTES", "TCP", "RULE", "IDLE"
                );
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                for flow in &response.flows {
                    println!(
                        "{:<46} {:<46} {:>5} {:>10} {:>12} {:<12} {:<20} {:>5.1}s",
                        format!("{}:{}", flow.source, flow.source_port),
                        format!("{}:{}", flow.destination, flow.destination_port),
                        flow.protocol,
                        flow.packets,
                        flow.bytes,
                        flow.tcp_state,
                        if flow.rule.is_empty() {
                            "(default)"
                        } else {
                            &flow.rule
                        },
                        now.saturating_sub(flow.last_seen_unix_millis) as f64 / 1e3
                    );
                }
                println!(
                    "{} shown, {} matched{}",
                    response.flows.len(),
                    response.matched,
                    if response.left_out > 0 {
                        format!(", {} flows left out of the snapshot", response.left_out)
                    } else {
                        String::new()
                    }
                );
            });
        }
        Command::Capture(args) => capture(&mut client, args, output).await?,
        Command::Scoring(ScoringCommand::Load { dir }) => {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
            };
            let manifest = read("manifest.json")?;
            let (autoencoder, personas) =
                vfn_models::manifest_files(&manifest).map_err(|e| e.to_string())?;
            let response = client
                .load_models(proto::LoadModelsRequest {
                    autoencoder: read(&autoencoder)?,
                    personas: read(&personas)?,
                    manifest,
                })
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!(
                    "models {} loaded ({} features, personas {}), sha256 {}",
                    response.name,
                    response.features,
                    response.personas.join(", "),
                    response.sha256
                );
            });
        }
        Command::Scoring(ScoringCommand::Show) => {
            let response = client
                .get_scoring(proto::GetScoringRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                if !response.enabled {
                    println!("scoring is off");
                    return;
                }
                println!(
                    "models {} ({} features); {} flows scored in {} batches, {} failed; {} \
                     decisions ({} lost); snapshots {} queued, {} lost",
                    response.model,
                    response.features,
                    response.flows_scored,
                    response.batches,
                    response.failures,
                    response.decisions,
                    response.decisions_lost,
                    response.snapshots_queued,
                    response.snapshots_lost
                );
                print!(
                    "{:<40} {:>8} {:>7} {:>8} {:>6}",
                    "SOURCE", "FLOWS", "THREAT", "EVIDENCE", "ACTING"
                );
                for persona in &response.personas {
                    print!(" {persona:>14}");
                }
                println!();
                for source in &response.sources {
                    print!(
                        "{:<40} {:>8} {:>7.3} {:>8} {:>6}",
                        source.address,
                        source.flows_scored,
                        source.last_threat,
                        source.evidence,
                        if source.acting { "yes" } else { "no" }
                    );
                    for share in &source.personas {
                        print!(" {share:>14.3}");
                    }
                    println!();
                }
            });
        }
        Command::Stats => {
            let response = client
                .get_stats(proto::GetStatsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show(&response, output, |response| {
                println!("rule set generation {}", response.rule_set_generation);
                println!(
                    "{:<8} {:>6} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
                    "PORT",
                    "WORKER",
                    "RX PKTS",
                    "RX BYTES",
                    "TX PKTS",
                    "TX BYTES",
                    "DROPS",
                    "TO HOST"
                );
                for port in &response.ports {
                    println!(
                        "{:<8} {:>6} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
                        port.port,
                        port.worker,
                        port.rx_packets,
                        port.rx_bytes,
                        port.tx_packets,
                        port.tx_bytes,
                        port.drops,
                        port.to_host
                    );
                }
                println!(
                    "{:<6} {:>12} {:>12} {:>10} {:>12} {:>12} {:>12}",
                    "WORKER",
                    "BURSTS",
                    "IDLE WAITS",
                    "FLOWS",
                    "ICMP ERRORS",
                    "HANDED OFF",
                    "HANDED IN"
                );
                for worker in &response.workers {
                    println!(
                        "{:<6} {:>12} {:>12} {:>10} {:>12} {:>12} {:>12}",
                        worker.worker,
                        worker.bursts,
                        worker.idle_waits,
                        worker.flows_in_table,
                        worker.icmp_errors_sent,
                        worker.handed_off,
                        worker.handed_in
                    );
                }
                println!("{:<28} {:>6} {:>12}", "DROP REASON", "WORKER", "PACKETS");
                for drop in response.drops.iter().filter(|d| d.packets > 0) {
                    println!(
                        "{:<28} {:>6} {:>12}",
                        drop.reason, drop.worker, drop.packets
                    );
                }
            });
        }
        Command::Watch { count, seconds } => {
            let mut stream = client
                .watch_events(proto::WatchEventsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let mut bounded = Bounded::new(count, seconds);
            while let Some(event) = bounded.next(&mut stream).await.map_err(status)? {
                if output == Output::Json {
                    println!("{}", serde_json::to_string(&event).unwrap_or_default());
                } else {
                    println!("{}", event_text(&event));
                }
            }
        }
        Command::Audit(AuditCommand::Verify { state_dir }) => verify_audit(&state_dir, output)?,
    }
    Ok(())
}

/// Streams a capture into a pcap file, flushing as frames come so that a capture cut short
/// still leaves a readable file.
async fn capture(client: &mut Client, args: CaptureArgs, output: Output) -> Result<(), String> {
    use pcap_file::DataLink;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let request = proto::CaptureRequest {
        port: args.port,
        direction: match args.direction {
            Direction::Rx => proto::CaptureDirection::Received,
            Direction::Tx => proto::CaptureDirection::Sent,
            Direction::Both => proto::CaptureDirection::Both,
        }
        .into(),
        host: args.host.unwrap_or_default(),
        protocol: args.protocol,
        l4_port: args.l4_port,
        max_frames: args.count,
        max_seconds: args.seconds,
        snap_length: args.snaplen,
    };
    let file =
        std::fs::File::create(&args.write).map_err(|e| format!("{}: {e}", args.write.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let written = |e: pcap_file::PcapError| format!("{}: {e}", args.write.display());
    let mut writer = PcapWriter::with_header(file, header).map_err(written)?;
    let mut stream = client
        .capture(request)
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    let (mut frames, mut lost) = (0u64, 0u64);
    while let Some(frame) = stream.message().await.map_err(|s| explain(&s))? {
        let packet = PcapPacket::new(
            Duration::from_nanos(frame.time_unix_nanos),
            frame.original_length,
            &frame.data,
        );
        writer.write_packet(&packet).map_err(written)?;
        frames += 1;
        lost = frame.lost;
    }
    let summary = serde_json::json!({"file": args.write.display().to_string(), "frames": frames, "lost": lost});
    match output {
        Output::Json => println!("{summary}"),
        Output::Table => println!(
            "{frames} frames written to {}{}",
            args.write.display(),
            if lost > 0 {
                format!(" ({lost} lost: the capture's buffers were full)")
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}

fn apply_request(
    file: &Path,
    dry_run: bool,
    expected_version: Option<String>,
) -> Result<proto::ApplyRuleSetRequest, String> {
    let spec =
        vfn_config::load_policy_file(file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(proto::ApplyRuleSetRequest {
        rule_set: Some(convert::rule_set_to_proto(&spec)),
        expected_version,
        dry_run,
    })
}

fn verify_audit(state_dir: &Path, output: Output) -> Result<(), String> {
    let state = persist::load(state_dir).map_err(|e| e.to_string())?;
    let expected = state.map(|state| audit::AuditHead {
        hash: state.audit_head,
        entries: state.audit_entries,
    });
    let head = audit::verify(&state_dir.join(persist::AUDIT_FILE), expected.as_ref())
        .map_err(|e| e.to_string())?;
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({"entries": head.entries, "head": head.hash, "persisted_head": expected.is_some()})
        );
    } else {
        println!(
            "audit log intact: {} entries, head {}{}",
            head.entries,
            head.hash,
            if expected.is_some() {
                ", as persisted"
            } else {
                " (no persisted head to compare with)"
            }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vfnctl: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vfnctl: {message}");
            ExitCode::FAILURE
        }
    }
}
