//! The validated configuration as consumers see it.
//!
//! Values here are only guaranteed to satisfy the schema's checks when they come out of
//! [`Config::from_toml_str`](crate::Config::from_toml_str) or [`Config::load`](crate::Config::load);
//! a configuration built in code can be checked with [`Config::validate`](crate::Config::validate).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// L3 MTU of a port when the file does not give one.
pub const DEFAULT_PORT_MTU: u16 = 1500;
/// Number of RX/TX queue pairs used on a port when the file does not give one.
pub const DEFAULT_PORT_QUEUES: u16 = 1;

/// The whole router configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub dataplane: DataplaneConfig,
    pub tables: TableConfig,
    pub icmp: IcmpConfig,
    pub workers: WorkerConfig,
    pub ports: Vec<PortConfig>,
    pub routes: Vec<RouteConfig>,
    /// The segmentation rule set, if any (`[policy]`); without one, everything is forwarded.
    pub policy: Option<crate::policy::PolicySource>,
    pub api: ApiConfig,
    pub state: StateConfig,
    pub metrics: MetricsConfig,
    pub telemetry: TelemetryConfig,
    /// Mirror sessions (`[[mirror.sessions]]`), which rules and dynamic entries copy to.
    pub mirror: MirrorConfig,
    /// Anomaly scoring (`[scoring]`): the models, the threat score and the action it leads to.
    pub scoring: ScoringConfig,
}

/// Anomaly scoring (`[scoring]`, `docs/models.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringConfig {
    /// Off (the default): no snapshot is taken and no model is loaded. Needs telemetry on.
    pub enabled: bool,
    /// The model bundle's folder (`manifest.json` and the ONNX files it names); a relative path
    /// is relative to the config file. `None` (the default): the bundle built into the router,
    /// `models/trained/datasets-base`.
    pub models: Option<PathBuf>,
    /// The core the scorer thread is pinned to; default: the first core no worker polls (none
    /// left: not pinned, and the log says so).
    pub core: Option<usize>,
    /// A flow record's first snapshot is taken at this packet, 1..=1000000 (default 4).
    pub nth_packet: u32,
    /// Snapshots waiting for the scorer, all workers together, 64..=1048576 (default 4096).
    pub queue: u32,
    /// Flows scored per model run at most, 1..=256 (default 64).
    pub batch: u32,
    /// The threat at which a flow counts against its source, 0..=1 (default 0.8).
    pub threshold: f64,
    pub weights: ThreatWeightsConfig,
    /// Thresholds of their own for named segments of the rule set in force.
    pub segment_thresholds: Vec<(String, f64)>,
    /// Flows of one source over the threshold within `window_ms` before it is acted on,
    /// 1..=100000 (default 5).
    pub flows_to_act: u32,
    /// 1..=3600000 ms (default 10 s).
    pub window_ms: u32,
    pub action: ScoringAction,
    /// How long an action lasts, 1000..=86400000 ms (default 300 s).
    pub action_ttl_ms: u32,
    /// Sources followed at most, 16..=1048576 (default 65536).
    pub sources: u32,
    /// A CSV file the scorer appends every snapshot's features to (the `cic` block, raw), to
    /// train models on traffic recorded through the VFN; `None` (default): nothing recorded.
    /// A relative path is relative to the config file.
    pub record: Option<PathBuf>,
    /// Rows recorded at most, 1..=10000000 (default 1000000); later snapshots are not written.
    pub record_rows: u32,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            models: None,
            core: None,
            nth_packet: 4,
            queue: 4_096,
            batch: 64,
            threshold: 0.8,
            weights: ThreatWeightsConfig::default(),
            segment_thresholds: Vec::new(),
            flows_to_act: 5,
            window_ms: 10_000,
            action: ScoringAction::Isolate,
            action_ttl_ms: 300_000,
            sources: 65_536,
            record: None,
            record_rows: 1_000_000,
        }
    }
}

/// The weights of the threat score's terms; each 0..=1, together 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatWeightsConfig {
    pub anomaly: f64,
    pub impact: f64,
    pub confidence: f64,
}

impl Default for ThreatWeightsConfig {
    fn default() -> Self {
        Self {
            anomaly: 0.6,
            impact: 0.1,
            confidence: 0.3,
        }
    }
}

/// What scoring does to a source it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoringAction {
    /// Drop every packet from or to the source.
    Isolate,
    /// Copy the flow that tipped the decision (both directions) to a mirror session.
    MirrorFlow { session: String },
    /// Copy every packet from or to the source to a mirror session.
    MirrorSource { session: String },
    /// At most so many packets per second from the source, with a burst.
    RateLimit { packets_per_second: u64, burst: u64 },
}

/// Mirroring (`[mirror]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorConfig {
    /// At most 16.
    pub sessions: Vec<MirrorSessionConfig>,
}

/// What a mirror session copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorDirection {
    /// Frames as the router received them.
    Received,
    /// Frames as the router sent them.
    Sent,
    #[default]
    Both,
}

/// Where a mirror session's copies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorDestinationConfig {
    /// Out of this port (a `[[ports]]` name), dedicated to an analyzer.
    Port(String),
    /// ERSPAN type II over GRE from `source` (an address of the router) to `remote`.
    Erspan {
        source: IpAddr,
        remote: IpAddr,
        session_id: u16,
    },
    /// Ethernet over GRE (transparent Ethernet bridging) from `source` to `remote`.
    Gre { source: IpAddr, remote: IpAddr },
}

/// A mirror session (`[[mirror.sessions]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSessionConfig {
    /// 1..=32 characters of `[A-Za-z0-9_-]`, unique.
    pub name: String,
    pub direction: MirrorDirection,
    pub destination: MirrorDestinationConfig,
    /// Bytes of each frame copied: 0 (the whole frame, default) or 64..=9018.
    pub snap_length: u16,
    /// One copy of every this many selected packets, 1..=1000000 (default 1).
    pub sample_every: u32,
    /// Copies per second at most, all workers together; 0 (default): no cap.
    pub packets_per_second: u64,
    /// Copies a worker queues per loop iteration at most, 1..=4096 (default 64).
    pub queue: u32,
}

/// Flow telemetry (`[telemetry]`): statistics per flow on the workers, records exported as IPFIX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    pub enabled: bool,
    /// A flow's record ends this long after its last packet, 100..=86400000 ms (default 60 s).
    pub idle_timeout_ms: u32,
    /// A long flow is reported this long after its record's first packet, 100..=86400000 ms
    /// (default 120 s).
    pub active_timeout_ms: u32,
    /// A gap between packets longer than this ends an active period, 1..=3600000 ms (default
    /// 5 s, CICFlowMeter's).
    pub activity_timeout_ms: u32,
    /// Records waiting for the exporter, all workers together, 64..=1048576 (default 16384).
    pub queue: u32,
    /// IPFIX collectors; at most 8.
    pub collectors: Vec<CollectorConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_ms: 60_000,
            active_timeout_ms: 120_000,
            activity_timeout_ms: 5_000,
            queue: 16_384,
            collectors: Vec::new(),
        }
    }
}

/// An IPFIX collector: UDP to `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorConfig {
    pub address: std::net::SocketAddr,
    /// The observation domain id in the messages' headers (default 1).
    pub observation_domain: u32,
    /// Largest message, in bytes (default 1400: one datagram on an Ethernet path).
    pub message_size: u16,
    /// Templates are sent again after this many messages (default 100) or seconds (default 60).
    pub template_refresh_messages: u32,
    pub template_refresh_s: u32,
    /// A file holding a 32-byte key as 64 hex digits: addresses are anonymized with Crypto-PAn
    /// (prefix-preserving) before they leave. Default: addresses as they are.
    pub anonymize_key_file: Option<PathBuf>,
}

/// The Prometheus endpoint (`[metrics]`): `GET /metrics` over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Address and port to listen on (in the router's network namespace).
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9469)),
        }
    }
}

/// The gRPC control API (`[api]`), served on a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The socket's path; its folder is created if missing.
    pub socket: PathBuf,
    /// The socket's permission bits, at most 0o777 (default 0o660: owner and group).
    pub socket_mode: u32,
    /// Uids (of the peer, from SO_PEERCRED) with the `writer` role: may change state. Root and
    /// the router's own uid always are writers.
    pub writers: Vec<u32>,
    /// Uids with the `reader` role: may get, list, watch and capture.
    pub readers: Vec<u32>,
    /// Largest request or response, in bytes, 65536..=1073741824 (default 64 MiB: a rule set of
    /// 100k rules fits).
    pub max_message_bytes: u32,
    /// Requests per second accepted over all clients, 1..=100000; more are refused with
    /// RESOURCE_EXHAUSTED.
    pub requests_per_second: u32,
    /// Also listen on TCP here: a loopback address, or any address with `tls`. Every TCP request
    /// needs a bearer token of `tokens`.
    pub tcp: Option<std::net::SocketAddr>,
    /// Bearer tokens for TCP clients; at most 64.
    pub tokens: Vec<ApiToken>,
    /// TLS on the TCP listener, with client certificates required (mTLS).
    pub tls: Option<ApiTls>,
}

/// A bearer token: its name (the principal in the audit log), its role, and the file that holds
/// the secret (read at start; at least 16 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: ApiRole,
    pub file: PathBuf,
}

/// What a client may do: readers get, list, watch and dry-run; writers also change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    Reader,
    Writer,
}

/// PEM files of the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// The server's certificate chain.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by one of these.
    pub client_ca: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/vfn/api.sock"),
            socket_mode: 0o660,
            writers: Vec::new(),
            readers: Vec::new(),
            max_message_bytes: 64 * 1024 * 1024,
            requests_per_second: 200,
            tcp: None,
            tokens: Vec::new(),
            tls: None,
        }
    }
}

/// What the router keeps across restarts (`[state]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The folder of the persisted rule set and audit head (`state.pb`) and the audit log
    /// (`audit.jsonl`); created if missing.
    pub dir: PathBuf,
    /// What a start with no policy at all (none persisted, none in the config) does.
    pub without_policy: WithoutPolicy,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/vfn"),
            without_policy: WithoutPolicy::Forward,
        }
    }
}

/// The choice for a start without any policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithoutPolicy {
    /// Fail open: forward everything, like a plain router, until a rule set is applied.
    #[default]
    Forward,
    /// Fail closed: drop every forwarded packet until a rule set is applied.
    Drop,
}

/// How the XDP program is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver; fails if the driver has no XDP support.
    Native,
    /// Generic (SKB) mode; works everywhere, slower.
    Skb,
    /// Try native first, fall back to SKB.
    #[default]
    Auto,
}

/// Whether AF_XDP sockets bind in zero-copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopy {
    /// Zero-copy if the driver supports it, copy mode otherwise.
    #[default]
    Auto,
    /// Zero-copy or fail.
    On,
    /// Always copy mode.
    Off,
}

/// Reverse-path filtering applied to packets received on an interface (RFC 3704).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpFilter {
    /// The route back to the source must leave through the receiving interface.
    #[default]
    Strict,
    /// Some route back to the source must exist.
    Loose,
    /// No source check.
    Off,
}

/// AF_XDP socket and worker loop parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub xdp_mode: XdpMode,
    pub zero_copy: ZeroCopy,
    /// Packets per RX burst, 1..=64.
    pub burst_size: u32,
    /// UMEM frame size in bytes: 2048 or 4096.
    pub frame_size: u32,
    /// UMEM frames per worker, a power of two in 1024..=262144.
    pub frames_per_worker: u32,
    /// Entries of each AF_XDP ring (rx, tx, fill, completion), a power of two in 64..=16384.
    pub ring_size: u32,
    /// Longest time an idle worker blocks in poll(2), in microseconds, 0..=100000.
    pub idle_poll_timeout_us: u32,
    /// Consecutive empty polls before an idle worker blocks, 0..=1000000.
    pub idle_spin_bursts: u32,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            xdp_mode: XdpMode::Auto,
            zero_copy: ZeroCopy::Auto,
            burst_size: 64,
            frame_size: 4096,
            frames_per_worker: 8192,
            ring_size: 2048,
            idle_poll_timeout_us: 1000,
            idle_spin_bursts: 64,
        }
    }
}

/// Capacities of the forwarding tables, allocated once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Neighbour (ARP/ND) table entries, 16..=1048576.
    pub neighbours: u32,
    /// Packets held per unresolved neighbour, 0..=64.
    pub pending_per_neighbour: u32,
    /// IPv4 routes, 1..=16777216.
    pub max_routes_v4: u32,
    /// IPv6 routes, 1..=4194304.
    pub max_routes_v6: u32,
    /// Flows each worker keeps for the segmentation policy, 1024..=67108864.
    pub flows: u32,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            neighbours: 4096,
            pending_per_neighbour: 3,
            max_routes_v4: 1_048_576,
            max_routes_v6: 131_072,
            flows: 262_144,
        }
    }
}

/// Rate limit of ICMP errors the router generates (a token bucket per worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpConfig {
    /// Token refill rate, 0..=1000000; 0 disables generated ICMP errors.
    pub errors_per_second: u32,
    /// Bucket depth, 1..=100000.
    pub errors_burst: u32,
}

impl Default for IcmpConfig {
    fn default() -> Self {
        Self {
            errors_per_second: 1000,
            errors_burst: 50,
        }
    }
}

/// Worker threads. There is no default: which cores the router may own is a deployment decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// CPU ids, one pinned worker per core; non-empty, unique, each below 1024.
    pub cores: Vec<u16>,
    /// How both directions of a flow reach one worker when there are several.
    pub flow_steering: FlowSteering,
}

/// How both directions of a flow reach one worker (`docs/dataplane.md`, "Several workers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowSteering {
    /// The receiving worker hands each packet to the worker that owns its flow.
    #[default]
    Handoff,
    /// The NIC's RSS is configured to hash both directions alike (by addresses): no handoff.
    Nic,
}

/// A physical (or veth) interface the router owns.
#[derive(Debug, Clone, PartialEq)]
pub struct PortConfig {
    /// Name used in routes and logs: 1..=15 characters of `[A-Za-z0-9_-]`.
    pub name: String,
    /// Linux interface name.
    pub interface: String,
    /// L3 MTU, 68..=9000.
    pub mtu: u16,
    /// RX/TX queue pairs of the interface, 1..=64, at least one per worker (worker i binds
    /// queue i).
    pub queues: u16,
    pub rp_filter: RpFilter,
    /// Interface addresses with their prefix length (host bits set); at most 8.
    pub addresses: Vec<IpNet>,
    /// 802.1Q sub-interfaces; at most 64.
    pub vlans: Vec<VlanConfig>,
}

impl PortConfig {
    /// A port with default MTU, queues and filter, and no addresses or VLANs.
    pub fn new(name: impl Into<String>, interface: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            interface: interface.into(),
            mtu: DEFAULT_PORT_MTU,
            queues: DEFAULT_PORT_QUEUES,
            rp_filter: RpFilter::default(),
            addresses: Vec::new(),
            vlans: Vec::new(),
        }
    }
}

/// An 802.1Q sub-interface of a port. Omitted `mtu` and `rp_filter` in the file are resolved to
/// the parent port's values, so they are always present here.
#[derive(Debug, Clone, PartialEq)]
pub struct VlanConfig {
    /// VLAN id, 1..=4094, unique within the port.
    pub id: u16,
    /// At most 8.
    pub addresses: Vec<IpNet>,
    /// At most the parent port's MTU.
    pub mtu: u16,
    pub rp_filter: RpFilter,
}

/// A static route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Destination network, host bits zero.
    pub prefix: IpNet,
    /// Next-hop gateway, same family as `prefix`, on-link on some port or VLAN.
    pub via: IpAddr,
    /// Egress interface; when absent the router picks the one whose connected prefix holds `via`.
    pub interface: Option<InterfaceRef>,
}

/// A port, or one VLAN of a port; written `PORT` or `PORT.VLANID` (e.g. `p0.100`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceRef {
    pub port: String,
    pub vlan: Option<u16>,
}

impl fmt::Display for InterfaceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vlan {
            Some(vlan) => write!(f, "{}.{vlan}", self.port),
            None => f.write_str(&self.port),
        }
    }
}
