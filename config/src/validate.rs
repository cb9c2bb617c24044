//! Semantic validation: from the file shape to the typed model, collecting every problem found
//! rather than stopping at the first, each named by the path of its key.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::error::{ConfigError, FieldError};
use crate::model::{
    ApiConfig, ApiTls, ApiToken, CollectorConfig, Config, DataplaneConfig, IcmpConfig,
    InterfaceRef, MetricsConfig, MirrorConfig, MirrorDestinationConfig, MirrorSessionConfig,
    PortConfig, RouteConfig, RpFilter, ScoringAction, ScoringConfig, StateConfig, TableConfig,
    TelemetryConfig, ThreatWeightsConfig, VlanConfig, WorkerConfig,
};
use crate::raw::{
    RawApi, RawConfig, RawDataplane, RawIcmp, RawMirror, RawMirrorSession, RawPort, RawRoute,
    RawScoring, RawState, RawTables, RawTelemetry, RawTunnel, RawVlan,
};

const BURST_SIZE: RangeInclusive<u32> = 1..=64;
const FRAME_SIZES: [u32; 2] = [2048, 4096];
const FRAMES_PER_WORKER: RangeInclusive<u32> = 1024..=262_144;
const RING_SIZE: RangeInclusive<u32> = 64..=16_384;
const IDLE_POLL_TIMEOUT_US: RangeInclusive<u32> = 0..=100_000;
const IDLE_SPIN_BURSTS: RangeInclusive<u32> = 0..=1_000_000;
const NEIGHBOURS: RangeInclusive<u32> = 16..=1_048_576;
const PENDING_PER_NEIGHBOUR: RangeInclusive<u32> = 0..=64;
const MAX_ROUTES_V4: RangeInclusive<u32> = 1..=16_777_216;
const MAX_ROUTES_V6: RangeInclusive<u32> = 1..=4_194_304;
const FLOWS: RangeInclusive<u32> = 1_024..=67_108_864;
const ICMP_ERRORS_PER_SECOND: RangeInclusive<u32> = 0..=1_000_000;
const ICMP_ERRORS_BURST: RangeInclusive<u32> = 1..=100_000;
const CORE_ID: RangeInclusive<u16> = 0..=1023;
/// Ports are few on a software router; the bound keeps per-port arrays in the dataplane small.
const PORT_COUNT_MAX: usize = 64;
/// Linux IFNAMSIZ (16) minus the terminating NUL; port names follow the same limit.
const NAME_LENGTH_MAX: usize = 15;
const MTU: RangeInclusive<u16> = 68..=9000;
const QUEUES: RangeInclusive<u16> = 1..=64;
const ADDRESS_COUNT_MAX: usize = 8;
const VLAN_COUNT_MAX: usize = 64;
const API_MESSAGE_BYTES: RangeInclusive<u32> = 65_536..=1 << 30;
const API_REQUESTS_PER_SECOND: RangeInclusive<u32> = 1..=100_000;
const API_TOKEN_COUNT_MAX: usize = 64;
const VLAN_ID: RangeInclusive<u16> = 1..=4094;
/// Connected prefixes quoted in an "is not on-link" error, so the message stays readable.
const LISTED_PREFIX_COUNT_MAX: usize = 8;

/// Converts and checks the whole file; `Err` lists every problem found.
pub(crate) fn validate(raw: &RawConfig) -> Result<Config, ConfigError> {
    let mut errors = Errors::default();
    let dataplane = dataplane(&mut errors, &raw.dataplane);
    let tables = tables(&mut errors, &raw.tables);
    let icmp = icmp(&mut errors, &raw.icmp);
    let workers = WorkerConfig {
        cores: cores(&mut errors, &raw.workers.cores),
        flow_steering: raw.workers.flow_steering,
    };
    let mut connected = Vec::new();
    let ports = ports(&mut errors, &raw.ports, &mut connected);
    let network = Network::new(&mut errors, &ports, &connected);
    let routes = routes(&mut errors, &raw.routes, &network, &tables);
    let policy = raw
        .policy
        .as_ref()
        .and_then(|policy| crate::policy::parse(policy, "policy", &mut errors.0));
    let api = api(&mut errors, &raw.api);
    let state = state(&mut errors, &raw.state);
    let telemetry = telemetry(&mut errors, &raw.telemetry);
    let mirror = mirror(&mut errors, &raw.mirror, &ports);
    let scoring = scoring(&mut errors, &raw.scoring, &telemetry, &mirror);
    if let Some(core) = scoring.core
        && workers
            .cores
            .iter()
            .any(|&worker| usize::from(worker) == core)
    {
        errors.push(
            "scoring.core",
            format!("core {core} is a worker's (workers.cores): the scorer never runs on one"),
        );
    }
    let metrics = MetricsConfig {
        enabled: raw.metrics.enabled,
        listen: raw.metrics.listen.parse().unwrap_or_else(|_| {
            errors.push(
                "metrics.listen",
                format!("{:?} is not an address and port", raw.metrics.listen),
            );
            MetricsConfig::default().listen
        }),
    };
    if errors.0.is_empty() {
        Ok(Config {
            dataplane,
            tables,
            icmp,
            workers,
            ports,
            routes,
            policy,
            api,
            state,
            metrics,
            telemetry,
            mirror,
            scoring,
        })
    } else {
        Err(ConfigError::Invalid(errors.0))
    }
}

/// The problems found so far. Checks that fail still return a placeholder value so that
/// validation goes on and reports the rest of the file too.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// `value` if it lies in `range`, else the nearest bound.
    fn ranged<T>(&mut self, path: &str, value: i64, range: RangeInclusive<T>) -> T
    where
        T: Copy + PartialOrd + TryFrom<i64> + Into<i64> + fmt::Display,
    {
        let (low, high) = (*range.start(), *range.end());
        match T::try_from(value) {
            Ok(converted) if range.contains(&converted) => converted,
            _ => {
                self.push(path, format!("{value} is out of range {low}..={high}"));
                if value < low.into() { low } else { high }
            }
        }
    }

    /// Like [`Self::ranged`], and the value must also be a power of two (the range bounds are).
    fn power_of_two(&mut self, path: &str, value: i64, range: RangeInclusive<u32>) -> u32 {
        let in_range = self.ranged(path, value, range);
        if i64::from(in_range) == value && !in_range.is_power_of_two() {
            self.push(path, format!("{value} is not a power of two"));
        }
        in_range
    }

    fn one_of(&mut self, path: &str, value: i64, allowed: &[u32]) -> u32 {
        if let Some(&found) = allowed
            .iter()
            .find(|&&candidate| i64::from(candidate) == value)
        {
            return found;
        }
        let listed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        self.push(path, format!("{value} is not one of {}", listed.join(", ")));
        allowed.first().copied().unwrap_or_default()
    }

    fn count_at_most(&mut self, path: &str, what: &str, count: usize, max: usize) {
        if count > max {
            self.push(path, format!("{count} {what} exceed the limit of {max}"));
        }
    }
}

/// Remembers that `key` was seen at `index`; returns where it was first seen if it was before.
fn first_seen<K: Hash + Eq>(seen: &mut HashMap<K, usize>, key: K, index: usize) -> Option<usize> {
    match seen.entry(key) {
        Entry::Occupied(entry) => Some(*entry.get()),
        Entry::Vacant(entry) => {
            entry.insert(index);
            None
        }
    }
}

fn dataplane(errors: &mut Errors, raw: &RawDataplane) -> DataplaneConfig {
    DataplaneConfig {
        xdp_mode: raw.xdp_mode,
        zero_copy: raw.zero_copy,
        burst_size: errors.ranged("dataplane.burst_size", raw.burst_size, BURST_SIZE),
        frame_size: errors.one_of("dataplane.frame_size", raw.frame_size, &FRAME_SIZES),
        frames_per_worker: errors.power_of_two(
            "dataplane.frames_per_worker",
            raw.frames_per_worker,
            FRAMES_PER_WORKER,
        ),
        ring_size: errors.power_of_two("dataplane.ring_size", raw.ring_size, RING_SIZE),
        idle_poll_timeout_us: errors.ranged(
            "dataplane.idle_poll_timeout_us",
            raw.idle_poll_timeout_us,
            IDLE_POLL_TIMEOUT_US,
        ),
        idle_spin_bursts: errors.ranged(
            "dataplane.idle_spin_bursts",
            raw.idle_spin_bursts,
            IDLE_SPIN_BURSTS,
        ),
    }
}

fn tables(errors: &mut Errors, raw: &RawTables) -> TableConfig {
    TableConfig {
        neighbours: errors.ranged("tables.neighbours", raw.neighbours, NEIGHBOURS),
        pending_per_neighbour: errors.ranged(
            "tables.pending_per_neighbour",
            raw.pending_per_neighbour,
            PENDING_PER_NEIGHBOUR,
        ),
        max_routes_v4: errors.ranged("tables.max_routes_v4", raw.max_routes_v4, MAX_ROUTES_V4),
        max_routes_v6: errors.ranged("tables.max_routes_v6", raw.max_routes_v6, MAX_ROUTES_V6),
        flows: errors.ranged("tables.flows", raw.flows, FLOWS),
    }
}

fn icmp(errors: &mut Errors, raw: &RawIcmp) -> IcmpConfig {
    IcmpConfig {
        errors_per_second: errors.ranged(
            "icmp.errors_per_second",
            raw.errors_per_second,
            ICMP_ERRORS_PER_SECOND,
        ),
        errors_burst: errors.ranged("icmp.errors_burst", raw.errors_burst, ICMP_ERRORS_BURST),
    }
}

/// An absolute path: the router may run from any working directory, and a relative socket or
/// state folder would move with it.
fn absolute_path(errors: &mut Errors, path: &str, text: &str) -> PathBuf {
    let value = PathBuf::from(text);
    if !value.is_absolute() {
        errors.push(path, format!("{text:?} is not an absolute path"));
    }
    value
}

fn uids(errors: &mut Errors, path: &str, raw: &[i64]) -> Vec<u32> {
    raw.iter()
        .enumerate()
        .map(|(index, &uid)| errors.ranged(&format!("{path}[{index}]"), uid, 0..=u32::MAX - 1))
        .collect()
}

fn api(errors: &mut Errors, raw: &RawApi) -> ApiConfig {
    ApiConfig {
        socket: absolute_path(errors, "api.socket", &raw.socket),
        socket_mode: errors.ranged("api.socket_mode", raw.socket_mode, 0..=0o777),
        writers: uids(errors, "api.writers", &raw.writers),
        readers: uids(errors, "api.readers", &raw.readers),
        max_message_bytes: errors.ranged(
            "api.max_message_bytes",
            raw.max_message_bytes,
            API_MESSAGE_BYTES,
        ),
        requests_per_second: errors.ranged(
            "api.requests_per_second",
            raw.requests_per_second,
            API_REQUESTS_PER_SECOND,
        ),
        tcp: api_tcp(errors, raw),
        tokens: api_tokens(errors, raw),
        tls: raw.tls.as_ref().map(|tls| ApiTls {
            cert: absolute_path(errors, "api.tls.cert", &tls.cert),
            key: absolute_path(errors, "api.tls.key", &tls.key),
            client_ca: absolute_path(errors, "api.tls.client_ca", &tls.client_ca),
        }),
    }
}

/// TCP needs tokens, and leaves the host only under TLS.
fn api_tcp(errors: &mut Errors, raw: &RawApi) -> Option<std::net::SocketAddr> {
    let text = raw.tcp.as_ref()?;
    let Ok(address) = text.parse::<std::net::SocketAddr>() else {
        errors.push("api.tcp", format!("{text:?} is not an address and port"));
        return None;
    };
    if raw.tokens.is_empty() {
        errors.push(
            "api.tcp",
            "TCP clients authenticate with a bearer token: give at least one [[api.tokens]]",
        );
    }
    if !address.ip().is_loopback() && raw.tls.is_none() {
        errors.push(
            "api.tcp",
            format!(
                "{address} is not a loopback address: listening beyond the host needs [api.tls]"
            ),
        );
    }
    Some(address)
}

fn api_tokens(errors: &mut Errors, raw: &RawApi) -> Vec<ApiToken> {
    errors.count_at_most(
        "api.tokens",
        "tokens",
        raw.tokens.len(),
        API_TOKEN_COUNT_MAX,
    );
    let mut seen = HashMap::new();
    raw.tokens
        .iter()
        .enumerate()
        .map(|(index, token)| {
            let path = format!("api.tokens[{index}]");
            if token.name.is_empty() || token.name.len() > 64 {
                errors.push(format!("{path}.name"), "must be 1 to 64 characters");
            }
            if let Some(first) = first_seen(&mut seen, token.name.as_str(), index) {
                errors.push(
                    format!("{path}.name"),
                    format!("duplicate token name (also api.tokens[{first}])"),
                );
            }
            ApiToken {
                name: token.name.clone(),
                role: token.role,
                file: absolute_path(errors, &format!("{path}.file"), &token.file),
            }
        })
        .collect()
}

/// A value of 0..=1 at `path`, or an error naming it.
fn unit_interval(errors: &mut Errors, path: &str, value: f64) -> f64 {
    if (0.0..=1.0).contains(&value) {
        value
    } else {
        errors.push(path, format!("{value} is not in 0..=1"));
        0.0
    }
}

fn scoring(
    errors: &mut Errors,
    raw: &RawScoring,
    telemetry: &TelemetryConfig,
    mirror: &MirrorConfig,
) -> ScoringConfig {
    if raw.enabled && !telemetry.enabled {
        errors.push(
            "scoring.enabled",
            "scoring needs flow telemetry: [telemetry] enabled = true",
        );
    }
    let weights = ThreatWeightsConfig {
        anomaly: unit_interval(errors, "scoring.weights.anomaly", raw.weights.anomaly),
        impact: unit_interval(errors, "scoring.weights.impact", raw.weights.impact),
        confidence: unit_interval(errors, "scoring.weights.confidence", raw.weights.confidence),
    };
    let total = weights.anomaly + weights.impact + weights.confidence;
    if (total - 1.0).abs() > 1e-6 {
        errors.push(
            "scoring.weights",
            format!("the weights add up to {total}, not 1"),
        );
    }
    if raw.segment_thresholds.len() > SEGMENT_THRESHOLDS_MAX {
        errors.push(
            "scoring.segment_thresholds",
            format!("more than {SEGMENT_THRESHOLDS_MAX} segments"),
        );
    }
    let segment_thresholds = raw
        .segment_thresholds
        .iter()
        .map(|(segment, &threshold)| {
            let path = format!("scoring.segment_thresholds.{segment}");
            (segment.clone(), unit_interval(errors, &path, threshold))
        })
        .collect();
    let action = match raw.action.as_str() {
        "isolate" => ScoringAction::Isolate,
        "mirror_flow" | "mirror_source" => {
            if !mirror.sessions.iter().any(|s| s.name == raw.mirror_session) {
                errors.push(
                    "scoring.mirror_session",
                    format!("{:?} is not a mirror session", raw.mirror_session),
                );
            }
            let session = raw.mirror_session.clone();
            match raw.action.as_str() {
                "mirror_flow" => ScoringAction::MirrorFlow { session },
                _ => ScoringAction::MirrorSource { session },
            }
        }
        "rate_limit" => ScoringAction::RateLimit {
            packets_per_second: errors
                .ranged("scoring.rate_limit_pps", raw.rate_limit_pps, 1..=u32::MAX)
                .into(),
            burst: errors
                .ranged(
                    "scoring.rate_limit_burst",
                    raw.rate_limit_burst,
                    1..=u32::MAX,
                )
                .into(),
        },
        other => {
            errors.push(
                "scoring.action",
                format!("{other:?} is not isolate, mirror_flow, mirror_source or rate_limit"),
            );
            ScoringAction::Isolate
        }
    };
    ScoringConfig {
        enabled: raw.enabled,
        models: raw.models.as_ref().map(PathBuf::from),
        core: raw
            .core
            .map(|core| usize::from(errors.ranged("scoring.core", core, CORE_ID))),
        nth_packet: errors.ranged("scoring.nth_packet", raw.nth_packet, 1..=1_000_000),
        queue: errors.ranged("scoring.queue", raw.queue, TELEMETRY_QUEUE),
        batch: errors.ranged("scoring.batch", raw.batch, 1..=256),
        threshold: unit_interval(errors, "scoring.threshold", raw.threshold),
        weights,
        segment_thresholds,
        flows_to_act: errors.ranged("scoring.flows_to_act", raw.flows_to_act, 1..=100_000),
        window_ms: errors.ranged("scoring.window_ms", raw.window_ms, 1..=3_600_000),
        action,
        action_ttl_ms: errors.ranged(
            "scoring.action_ttl_ms",
            raw.action_ttl_ms,
            1_000..=86_400_000,
        ),
        sources: errors.ranged("scoring.sources", raw.sources, 16..=1_048_576),
        record: raw.record.as_ref().map(PathBuf::from),
        record_rows: errors.ranged("scoring.record_rows", raw.record_rows, 1..=10_000_000),
    }
}

/// Segments with a threshold of their own at most.
const SEGMENT_THRESHOLDS_MAX: usize = 1024;

const TELEMETRY_TIMEOUT_MS: RangeInclusive<u32> = 100..=86_400_000;
const ACTIVITY_TIMEOUT_MS: RangeInclusive<u32> = 1..=3_600_000;
const TELEMETRY_QUEUE: RangeInclusive<u32> = 64..=1_048_576;
const COLLECTOR_COUNT_MAX: usize = 8;

fn telemetry(errors: &mut Errors, raw: &RawTelemetry) -> TelemetryConfig {
    errors.count_at_most(
        "telemetry.collectors",
        "collectors",
        raw.collectors.len(),
        COLLECTOR_COUNT_MAX,
    );
    TelemetryConfig {
        enabled: raw.enabled,
        idle_timeout_ms: errors.ranged(
            "telemetry.idle_timeout_ms",
            raw.idle_timeout_ms,
            TELEMETRY_TIMEOUT_MS,
        ),
        active_timeout_ms: errors.ranged(
            "telemetry.active_timeout_ms",
            raw.active_timeout_ms,
            TELEMETRY_TIMEOUT_MS,
        ),
        activity_timeout_ms: errors.ranged(
            "telemetry.activity_timeout_ms",
            raw.activity_timeout_ms,
            ACTIVITY_TIMEOUT_MS,
        ),
        queue: errors.ranged("telemetry.queue", raw.queue, TELEMETRY_QUEUE),
        collectors: raw
            .collectors
            .iter()
            .enumerate()
            .map(|(index, collector)| {
                let path = format!("telemetry.collectors[{index}]");
                CollectorConfig {
                    address: collector.address.parse().unwrap_or_else(|_| {
                        errors.push(
                            format!("{path}.address"),
                            format!("{:?} is not an address and port", collector.address),
                        );
                        std::net::SocketAddr::from(([0, 0, 0, 0], 0))
                    }),
                    observation_domain: errors.ranged(
                        &format!("{path}.observation_domain"),
                        collector.observation_domain,
                        0..=u32::MAX,
                    ),
                    message_size: errors.ranged(
                        &format!("{path}.message_size"),
                        collector.message_size,
                        512..=65_507,
                    ),
                    template_refresh_messages: errors.ranged(
                        &format!("{path}.template_refresh_messages"),
                        collector.template_refresh_messages,
                        1..=u32::MAX,
                    ),
                    template_refresh_s: errors.ranged(
                        &format!("{path}.template_refresh_s"),
                        collector.template_refresh_s,
                        1..=3600,
                    ),
                    anonymize_key_file: collector.anonymize_key_file.as_ref().map(|file| {
                        absolute_path(errors, &format!("{path}.anonymize_key_file"), file)
                    }),
                }
            })
            .collect(),
    }
}

const MIRROR_SESSION_COUNT_MAX: usize = 16;
const MIRROR_NAME_LENGTH_MAX: usize = 32;
const SNAP_LENGTH: RangeInclusive<u16> = 64..=9018;
const SAMPLE_EVERY: RangeInclusive<u32> = 1..=1_000_000;
const MIRROR_PACKETS_PER_SECOND: RangeInclusive<u32> = 0..=100_000_000;
const MIRROR_QUEUE: RangeInclusive<u32> = 1..=4096;
const ERSPAN_SESSION_ID: RangeInclusive<u16> = 0..=1023;

fn mirror(errors: &mut Errors, raw: &RawMirror, ports: &[PortConfig]) -> MirrorConfig {
    errors.count_at_most(
        "mirror.sessions",
        "sessions",
        raw.sessions.len(),
        MIRROR_SESSION_COUNT_MAX,
    );
    let router_addresses: Vec<IpAddr> = ports
        .iter()
        .flat_map(|port| {
            port.addresses
                .iter()
                .chain(port.vlans.iter().flat_map(|vlan| vlan.addresses.iter()))
        })
        .map(IpNet::addr)
        .collect();
    let mut seen = HashMap::new();
    let sessions = raw
        .sessions
        .iter()
        .enumerate()
        .map(|(index, session)| {
            let path = format!("mirror.sessions[{index}]");
            let name_ok = !session.name.is_empty()
                && session.name.len() <= MIRROR_NAME_LENGTH_MAX
                && session
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                errors.push(
                    format!("{path}.name"),
                    format!(
                        "{:?} must be 1..={MIRROR_NAME_LENGTH_MAX} characters of A-Z, a-z, 0-9, '_' and '-'",
                        session.name
                    ),
                );
            }
            if let Some(first) = first_seen(&mut seen, session.name.as_str(), index) {
                errors.push(
                    format!("{path}.name"),
                    format!("duplicate session name (also mirror.sessions[{first}])"),
                );
            }
            let destination = mirror_destination(errors, &path, session, ports, &router_addresses);
            MirrorSessionConfig {
                name: session.name.clone(),
                direction: session.direction,
                destination,
                snap_length: if session.snap_length == 0 {
                    0
                } else {
                    errors.ranged(&format!("{path}.snap_length"), session.snap_length, SNAP_LENGTH)
                },
                sample_every: errors.ranged(
                    &format!("{path}.sample_every"),
                    session.sample_every,
                    SAMPLE_EVERY,
                ),
                packets_per_second: u64::from(errors.ranged(
                    &format!("{path}.packets_per_second"),
                    session.packets_per_second,
                    MIRROR_PACKETS_PER_SECOND,
                )),
                queue: errors.ranged(&format!("{path}.queue"), session.queue, MIRROR_QUEUE),
            }
        })
        .collect();
    MirrorConfig { sessions }
}

/// Exactly one of `port`, `erspan` and `gre`: a port of the router, or a tunnel from one of the
/// router's addresses to a remote of the same family.
fn mirror_destination(
    errors: &mut Errors,
    path: &str,
    session: &RawMirrorSession,
    ports: &[PortConfig],
    router_addresses: &[IpAddr],
) -> MirrorDestinationConfig {
    let placeholder = MirrorDestinationConfig::Port(String::new());
    let tunnel = |errors: &mut Errors, kind: &str, raw: &RawTunnel| {
        mirror_tunnel(errors, &format!("{path}.{kind}"), raw, router_addresses)
    };
    match (&session.port, &session.erspan, &session.gre) {
        (Some(port), None, None) => {
            if !ports.iter().any(|p| p.name == *port) {
                errors.push(format!("{path}.port"), format!("no port {port:?}"));
            }
            MirrorDestinationConfig::Port(port.clone())
        }
        (None, Some(erspan), None) => {
            let session_id = match erspan.session_id {
                Some(id) => {
                    errors.ranged(&format!("{path}.erspan.session_id"), id, ERSPAN_SESSION_ID)
                }
                None => {
                    errors.push(format!("{path}.erspan.session_id"), "is required");
                    0
                }
            };
            tunnel(errors, "erspan", erspan).map_or(placeholder, |(source, remote)| {
                MirrorDestinationConfig::Erspan {
                    source,
                    remote,
                    session_id,
                }
            })
        }
        (None, None, Some(gre)) => {
            if gre.session_id.is_some() {
                errors.push(format!("{path}.gre.session_id"), "is for erspan only");
            }
            tunnel(errors, "gre", gre).map_or(placeholder, |(source, remote)| {
                MirrorDestinationConfig::Gre { source, remote }
            })
        }
        _ => {
            errors.push(
                path.to_string(),
                "needs exactly one destination: port, erspan or gre",
            );
            placeholder
        }
    }
}

/// A tunnel's endpoints: `source` an address of the router, `remote` of the same family.
fn mirror_tunnel(
    errors: &mut Errors,
    at: &str,
    raw: &RawTunnel,
    router_addresses: &[IpAddr],
) -> Option<(IpAddr, IpAddr)> {
    let mut parse = |field: &str, text: &str| {
        let parsed = text.parse::<IpAddr>();
        if parsed.is_err() {
            errors.push(
                format!("{at}.{field}"),
                format!("{text:?} is not an IP address"),
            );
        }
        parsed.ok()
    };
    let (source, remote) = (parse("source", &raw.source), parse("remote", &raw.remote));
    if let Some(source) = source
        && !router_addresses.contains(&source)
    {
        errors.push(
            format!("{at}.source"),
            format!("{source} is not an address of the router's ports"),
        );
    }
    let (source, remote) = (source?, remote?);
    if source.is_ipv4() != remote.is_ipv4() {
        errors.push(
            format!("{at}.remote"),
            "must be of the same address family as source",
        );
    }
    Some((source, remote))
}

fn state(errors: &mut Errors, raw: &RawState) -> StateConfig {
    StateConfig {
        dir: absolute_path(errors, "state.dir", &raw.dir),
        without_policy: raw.without_policy,
    }
}

fn cores(errors: &mut Errors, raw: &[i64]) -> Vec<u16> {
    if raw.is_empty() {
        errors.push("workers.cores", "at least one core is required");
    }
    let mut seen = HashMap::new();
    let mut cores = Vec::with_capacity(raw.len());
    for (index, &core) in raw.iter().enumerate() {
        let path = format!("workers.cores[{index}]");
        cores.push(errors.ranged(&path, core, CORE_ID));
        if let Some(first) = first_seen(&mut seen, core, index) {
            errors.push(
                path,
                format!("duplicate core {core} (also workers.cores[{first}])"),
            );
        }
    }
    cores
}

/// An interface address and the connected prefix it implies.
struct Connected {
    /// The address with host bits cleared.
    prefix: IpNet,
    address: IpNet,
    interface: InterfaceRef,
    /// Where the address is in the file, e.g. `ports[0].vlans[1].addresses[0]`.
    path: String,
}

fn ports(errors: &mut Errors, raw: &[RawPort], connected: &mut Vec<Connected>) -> Vec<PortConfig> {
    if raw.is_empty() {
        errors.push("ports", "at least one port is required");
    }
    errors.count_at_most("ports", "ports", raw.len(), PORT_COUNT_MAX);
    let mut names = HashMap::new();
    let mut interfaces = HashMap::new();
    let mut ports = Vec::with_capacity(raw.len());
    for (index, port) in raw.iter().enumerate() {
        let path = format!("ports[{index}]");
        if let Some(first) = first_seen(&mut names, port.name.as_str(), index) {
            errors.push(
                format!("{path}.name"),
                format!(
                    "duplicate port name {:?} (also ports[{first}].name)",
                    port.name
                ),
            );
        }
        if let Some(first) = first_seen(&mut interfaces, port.interface.as_str(), index) {
            errors.push(
                format!("{path}.interface"),
                format!(
                    "interface {:?} is already used by ports[{first}]",
                    port.interface
                ),
            );
        }
        ports.push(port_config(errors, &path, port, connected));
    }
    ports
}

fn port_config(
    errors: &mut Errors,
    path: &str,
    raw: &RawPort,
    connected: &mut Vec<Connected>,
) -> PortConfig {
    if let Err(reason) = check_port_name(&raw.name) {
        errors.push(format!("{path}.name"), reason);
    }
    if let Err(reason) = check_interface_name(&raw.interface) {
        errors.push(format!("{path}.interface"), reason);
    }
    let mtu = errors.ranged(&format!("{path}.mtu"), raw.mtu, MTU);
    let queues = errors.ranged(&format!("{path}.queues"), raw.queues, QUEUES);
    let interface = InterfaceRef {
        port: raw.name.clone(),
        vlan: None,
    };
    let addresses = interface_addresses(errors, path, &raw.addresses, &interface, connected);

    errors.count_at_most(
        &format!("{path}.vlans"),
        "VLANs",
        raw.vlans.len(),
        VLAN_COUNT_MAX,
    );
    let parent = Parent {
        name: &raw.name,
        mtu,
        rp_filter: raw.rp_filter,
    };
    let mut ids = HashMap::new();
    let mut vlans = Vec::with_capacity(raw.vlans.len());
    for (index, vlan) in raw.vlans.iter().enumerate() {
        let vlan_path = format!("{path}.vlans[{index}]");
        if let Some(first) = first_seen(&mut ids, vlan.id, index) {
            errors.push(
                format!("{vlan_path}.id"),
                format!(
                    "duplicate VLAN id {} (also {path}.vlans[{first}].id)",
                    vlan.id
                ),
            );
        }
        vlans.push(vlan_config(errors, &vlan_path, vlan, &parent, connected));
    }
    PortConfig {
        name: raw.name.clone(),
        interface: raw.interface.clone(),
        mtu,
        queues,
        rp_filter: raw.rp_filter,
        addresses,
        vlans,
    }
}

/// What a VLAN inherits from its port.
struct Parent<'a> {
    name: &'a str,
    mtu: u16,
    rp_filter: RpFilter,
}

fn vlan_config(
    errors: &mut Errors,
    path: &str,
    raw: &RawVlan,
    parent: &Parent<'_>,
    connected: &mut Vec<Connected>,
) -> VlanConfig {
    let id = errors.ranged(&format!("{path}.id"), raw.id, VLAN_ID);
    let mtu = match raw.mtu {
        None => parent.mtu,
        Some(raw_mtu) => {
            let mtu_path = format!("{path}.mtu");
            let mtu = errors.ranged(&mtu_path, raw_mtu, MTU);
            if mtu > parent.mtu {
                errors.push(
                    mtu_path,
                    format!("{mtu} exceeds the parent port's mtu {}", parent.mtu),
                );
            }
            mtu
        }
    };
    let interface = InterfaceRef {
        port: parent.name.to_owned(),
        vlan: Some(id),
    };
    VlanConfig {
        id,
        addresses: interface_addresses(errors, path, &raw.addresses, &interface, connected),
        mtu,
        rp_filter: raw.rp_filter.unwrap_or(parent.rp_filter),
    }
}

/// Port names appear in routes as `PORT.VLANID`, hence no dots; the limit matches Linux's.
fn check_port_name(name: &str) -> Result<(), String> {
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed"
        ));
    }
    if name.is_empty() || name.len() > NAME_LENGTH_MAX {
        return Err(format!(
            "{name:?} must be 1..={NAME_LENGTH_MAX} characters long"
        ));
    }
    Ok(())
}

/// The kernel's rules (`dev_valid_name()`), so that a bad name fails here and not at start-up.
fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_LENGTH_MAX {
        return Err(format!("{name:?} must be 1..={NAME_LENGTH_MAX} bytes long"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    match name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some(bad) => Err(format!(
            "{name:?} contains {bad:?}, which Linux interface names cannot contain"
        )),
        None => Ok(()),
    }
}

/// Parses the `addresses` list of a port or VLAN at `path` and records their connected prefixes.
fn interface_addresses(
    errors: &mut Errors,
    path: &str,
    raw: &[String],
    interface: &InterfaceRef,
    connected: &mut Vec<Connected>,
) -> Vec<IpNet> {
    let list_path = format!("{path}.addresses");
    errors.count_at_most(&list_path, "addresses", raw.len(), ADDRESS_COUNT_MAX);
    let mut addresses = Vec::with_capacity(raw.len());
    for (index, text) in raw.iter().enumerate() {
        let address_path = format!("{list_path}[{index}]");
        match parse_interface_address(text) {
            Ok(address) => {
                addresses.push(address);
                connected.push(Connected {
                    prefix: address.trunc(),
                    address,
                    interface: interface.clone(),
                    path: address_path,
                });
            }
            Err(reason) => errors.push(address_path, reason),
        }
    }
    addresses
}

fn parse_interface_address(text: &str) -> Result<IpNet, String> {
    let address: IpNet = text
        .parse()
        .map_err(|_| format!("{text:?} is not a valid address/prefix"))?;
    match unusable_address_reason(address) {
        Some(reason) => Err(format!("{address} {reason}")),
        None => Ok(address),
    }
}

/// Why `address` cannot be assigned to a router interface, if it cannot.
fn unusable_address_reason(address: IpNet) -> Option<&'static str> {
    let ip = address.addr();
    if address.prefix_len() == 0 {
        return Some("has prefix length 0, which would make every destination on-link");
    }
    if ip.is_unspecified() {
        return Some("is the unspecified address");
    }
    if ip.is_loopback() {
        return Some("is a loopback address");
    }
    if ip.is_multicast() {
        return Some("is a multicast address");
    }
    match address {
        IpNet::V4(v4) => {
            let host = v4.addr();
            if host.octets()[0] == 0 {
                return Some("is in 0.0.0.0/8 (\"this network\")");
            }
            if host.is_broadcast() {
                return Some("is the limited broadcast address");
            }
            // /31 and /32 have no network or broadcast address (RFC 3021).
            if v4.prefix_len() <= 30 && host == v4.network() {
                return Some("is the network address of its prefix (host bits all zero)");
            }
            if v4.prefix_len() <= 30 && host == v4.broadcast() {
                return Some("is the broadcast address of its prefix (host bits all one)");
            }
        }
        IpNet::V6(v6) => {
            let host = v6.addr();
            if host.is_unicast_link_local() {
                return Some(
                    "is link-local (fe80::/10); the VFN derives its own link-local address",
                );
            }
            // /127 and /128 have no subnet-router anycast address (RFC 6164).
            if v6.prefix_len() <= 126 && host == v6.network() {
                return Some(
                    "is the subnet-router anycast address of its prefix (host bits all zero)",
                );
            }
        }
    }
    None
}

/// The connected side of the router, as routes see it.
struct Network<'a> {
    connected: &'a [Connected],
    /// Indices into `connected`, sorted by network address then prefix length.
    by_prefix: Vec<usize>,
    by_interface: HashMap<&'a InterfaceRef, Vec<usize>>,
    ports: HashMap<&'a str, &'a PortConfig>,
}

impl<'a> Network<'a> {
    /// Indexes the connected prefixes and reports those that overlap.
    fn new(errors: &mut Errors, ports: &'a [PortConfig], connected: &'a [Connected]) -> Self {
        let mut by_prefix: Vec<usize> = (0..connected.len()).collect();
        by_prefix.sort_by_key(|&index| {
            let prefix = connected[index].prefix;
            (prefix.network(), prefix.prefix_len())
        });
        report_overlaps(errors, connected, &by_prefix);
        let mut by_interface: HashMap<&InterfaceRef, Vec<usize>> = HashMap::new();
        for (index, entry) in connected.iter().enumerate() {
            by_interface
                .entry(&entry.interface)
                .or_default()
                .push(index);
        }
        let mut by_name = HashMap::new();
        for port in ports {
            by_name.entry(port.name.as_str()).or_insert(port);
        }
        Self {
            connected,
            by_prefix,
            by_interface,
            ports: by_name,
        }
    }

    /// Resolves a route's `interface` value, `PORT` or `PORT.VLANID`.
    fn resolve_interface(&self, text: &str) -> Result<InterfaceRef, String> {
        let (port_name, vlan) = match text.split_once('.') {
            None => (text, None),
            Some((port_name, digits)) => {
                let id = digits
                    .parse::<u16>()
                    .ok()
                    .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("{text:?} is not PORT or PORT.VLANID"))?;
                (port_name, Some(id))
            }
        };
        let port = self
            .ports
            .get(port_name)
            .ok_or_else(|| format!("{text:?} names no port"))?;
        if let Some(id) = vlan
            && !port.vlans.iter().any(|configured| configured.id == id)
        {
            return Err(format!("{text:?}: port {port_name} has no VLAN {id}"));
        }
        Ok(InterfaceRef {
            port: port_name.to_owned(),
            vlan,
        })
    }

    /// Checks that `via` lies in a connected prefix of some interface.
    fn check_on_link_anywhere(&self, via: IpAddr) -> Result<(), String> {
        // Connected prefixes do not overlap (else an error is already reported), so the only
        // candidate is the last one whose network address is not above `via`.
        let after = self
            .by_prefix
            .partition_point(|&index| self.connected[index].prefix.network() <= via);
        let candidate = after
            .checked_sub(1)
            .map(|position| &self.connected[self.by_prefix[position]])
            .filter(|entry| entry.prefix.contains(&via));
        match candidate {
            Some(entry) => check_not_own_address(entry, via),
            None => Err(format!(
                "{via} is not on-link on any port (connected prefixes: {})",
                list_prefixes(
                    self.by_prefix.iter().map(|&index| &self.connected[index]),
                    via
                )
            )),
        }
    }

    /// Checks that `via` lies in a connected prefix of `interface`.
    fn check_on_link_at(&self, interface: &InterfaceRef, via: IpAddr) -> Result<(), String> {
        let entries = || {
            self.by_interface
                .get(interface)
                .into_iter()
                .flatten()
                .map(|&index| &self.connected[index])
        };
        match entries().find(|entry| entry.prefix.contains(&via)) {
            Some(entry) => check_not_own_address(entry, via),
            None => Err(format!(
                "{via} is not on-link on {interface} (connected prefixes: {})",
                list_prefixes(entries(), via)
            )),
        }
    }
}

/// Reports each connected prefix that overlaps another, at whichever of the two comes later in
/// the file. `by_prefix` is sorted by (network, prefix length).
fn report_overlaps(errors: &mut Errors, connected: &[Connected], by_prefix: &[usize]) {
    let mut overlaps = Vec::new();
    // Prefixes either nest or are disjoint. In this order, a prefix overlaps an earlier one iff
    // it lies inside the earlier prefix reaching furthest, which is the last one not reported.
    let mut cover: Option<usize> = None;
    for &index in by_prefix {
        match cover {
            Some(outer)
                if connected[outer]
                    .prefix
                    .contains(&connected[index].prefix.network()) =>
            {
                overlaps.push((outer.min(index), outer.max(index)));
            }
            _ => cover = Some(index),
        }
    }
    overlaps.sort_unstable();
    for (first, later) in overlaps {
        errors.push(
            connected[later].path.clone(),
            format!(
                "connected prefix {} overlaps {} of {}",
                connected[later].prefix, connected[first].prefix, connected[first].path
            ),
        );
    }
}

fn check_not_own_address(entry: &Connected, via: IpAddr) -> Result<(), String> {
    if entry.address.addr() == via {
        Err(format!(
            "{via} is this router's own address ({})",
            entry.path
        ))
    } else {
        Ok(())
    }
}

/// The prefixes of `via`'s family, for an error message, at most [`LISTED_PREFIX_COUNT_MAX`].
fn list_prefixes<'c>(entries: impl Iterator<Item = &'c Connected>, via: IpAddr) -> String {
    let same_family: Vec<String> = entries
        .filter(|entry| entry.prefix.addr().is_ipv4() == via.is_ipv4())
        .map(|entry| entry.prefix.to_string())
        .collect();
    if same_family.is_empty() {
        return format!("none of {}", family(via));
    }
    let shown = same_family.len().min(LISTED_PREFIX_COUNT_MAX);
    let mut listed = same_family[..shown].join(", ");
    if same_family.len() > shown {
        listed.push_str(&format!(" and {} more", same_family.len() - shown));
    }
    listed
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn routes(
    errors: &mut Errors,
    raw: &[RawRoute],
    network: &Network<'_>,
    tables: &TableConfig,
) -> Vec<RouteConfig> {
    let mut prefixes = HashMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (index, route) in raw.iter().enumerate() {
        let path = format!("routes[{index}]");
        let Some(config) = route_config(errors, &path, route, network) else {
            continue;
        };
        if let Some(first) = first_seen(&mut prefixes, config.prefix, index) {
            errors.push(
                format!("{path}.prefix"),
                format!(
                    "duplicate route {} (also routes[{first}].prefix)",
                    config.prefix
                ),
            );
        }
        routes.push(config);
    }
    let v4_count = routes
        .iter()
        .filter(|route| route.prefix.addr().is_ipv4())
        .count();
    let v6_count = routes.len() - v4_count;
    for (count, max, key, family) in [
        (v4_count, tables.max_routes_v4, "max_routes_v4", "IPv4"),
        (v6_count, tables.max_routes_v6, "max_routes_v6", "IPv6"),
    ] {
        if u64::try_from(count).unwrap_or(u64::MAX) > u64::from(max) {
            errors.push(
                "routes",
                format!("{count} {family} routes exceed tables.{key} = {max}"),
            );
        }
    }
    routes
}

/// `None` when the prefix or the gateway cannot be parsed (already reported).
fn route_config(
    errors: &mut Errors,
    path: &str,
    raw: &RawRoute,
    network: &Network<'_>,
) -> Option<RouteConfig> {
    let prefix = match raw.prefix.parse::<IpNet>() {
        Ok(prefix) if prefix.trunc() != prefix => {
            errors.push(
                format!("{path}.prefix"),
                format!(
                    "{prefix} has host bits set (the network is {})",
                    prefix.trunc()
                ),
            );
            Some(prefix.trunc())
        }
        Ok(prefix) => Some(prefix),
        Err(_) => {
            let text = &raw.prefix;
            errors.push(
                format!("{path}.prefix"),
                format!("{text:?} is not a valid prefix"),
            );
            None
        }
    };
    let via = match raw.via.parse::<IpAddr>() {
        Ok(via) => Some(via),
        Err(_) => {
            let text = &raw.via;
            errors.push(
                format!("{path}.via"),
                format!("{text:?} is not a valid address"),
            );
            None
        }
    };
    let interface = raw
        .interface
        .as_deref()
        .map(|text| network.resolve_interface(text));
    if let Some(Err(reason)) = &interface {
        errors.push(format!("{path}.interface"), reason.clone());
    }
    let (prefix, via) = (prefix?, via?);
    let on_link = if prefix.addr().is_ipv4() != via.is_ipv4() {
        Err(format!(
            "{via} is {} but the prefix {prefix} is {}",
            family(via),
            family(prefix.addr())
        ))
    } else {
        match &interface {
            None => network.check_on_link_anywhere(via),
            Some(Ok(interface)) => network.check_on_link_at(interface, via),
            // Already reported; there is no interface to check `via` against.
            Some(Err(_)) => Ok(()),
        }
    };
    if let Err(reason) = on_link {
        errors.push(format!("{path}.via"), reason);
    }
    Some(RouteConfig {
        prefix,
        via,
        interface: interface.and_then(Result::ok),
    })
}
