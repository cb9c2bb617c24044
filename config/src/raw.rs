//! The file as serde sees it: only syntax, types and key names are checked here.
//!
//! Integers are `i64` (TOML's integer type) and addresses are strings, so that a value out of
//! range or a malformed address reaches semantic validation, which names it by its path instead
//! of failing the whole parse. Defaults come from the typed model, their single source.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{
    ApiConfig, ApiRole, Config, DEFAULT_PORT_MTU, DEFAULT_PORT_QUEUES, DataplaneConfig,
    FlowSteering, IcmpConfig, MetricsConfig, MirrorConfig, MirrorDestinationConfig,
    MirrorDirection, PortConfig, RouteConfig, RpFilter, ScoringAction, ScoringConfig, StateConfig,
    TableConfig, TelemetryConfig, ThreatWeightsConfig, VlanConfig, WithoutPolicy, XdpMode,
    ZeroCopy,
};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub dataplane: RawDataplane,
    #[serde(default)]
    pub tables: RawTables,
    #[serde(default)]
    pub icmp: RawIcmp,
    pub workers: RawWorkers,
    pub ports: Vec<RawPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::RawPolicy>,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub scoring: RawScoring,
    #[serde(default, skip_serializing_if = "RawMirror::is_empty")]
    pub mirror: RawMirror,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawMirror {
    pub sessions: Vec<RawMirrorSession>,
}

impl RawMirror {
    fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMirrorSession {
    pub name: String,
    #[serde(default)]
    pub direction: MirrorDirection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erspan: Option<RawTunnel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gre: Option<RawTunnel>,
    #[serde(default)]
    pub snap_length: i64,
    #[serde(default = "default_sample_every")]
    pub sample_every: i64,
    #[serde(default)]
    pub packets_per_second: i64,
    #[serde(default = "default_mirror_queue")]
    pub queue: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTunnel {
    pub source: String,
    pub remote: String,
    /// ERSPAN only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<i64>,
}

fn default_sample_every() -> i64 {
    1
}

fn default_mirror_queue() -> i64 {
    64
}

impl From<&MirrorConfig> for RawMirror {
    fn from(mirror: &MirrorConfig) -> Self {
        Self {
            sessions: mirror
                .sessions
                .iter()
                .map(|session| {
                    let tunnel = |source: &IpAddr, remote: &IpAddr, session_id: Option<u16>| {
                        Some(RawTunnel {
                            source: source.to_string(),
                            remote: remote.to_string(),
                            session_id: session_id.map(i64::from),
                        })
                    };
                    let (port, erspan, gre) = match &session.destination {
                        MirrorDestinationConfig::Port(port) => (Some(port.clone()), None, None),
                        MirrorDestinationConfig::Erspan {
                            source,
                            remote,
                            session_id,
                        } => (None, tunnel(source, remote, Some(*session_id)), None),
                        MirrorDestinationConfig::Gre { source, remote } => {
                            (None, None, tunnel(source, remote, None))
                        }
                    };
                    RawMirrorSession {
                        name: session.name.clone(),
                        direction: session.direction,
                        port,
                        erspan,
                        gre,
                        snap_length: session.snap_length.into(),
                        sample_every: session.sample_every.into(),
                        packets_per_second: i64::try_from(session.packets_per_second)
                            .unwrap_or(i64::MAX),
                        queue: session.queue.into(),
                    }
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub enabled: bool,
    pub idle_timeout_ms: i64,
    pub active_timeout_ms: i64,
    pub activity_timeout_ms: i64,
    pub queue: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub collectors: Vec<RawCollector>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawScoring {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<i64>,
    pub nth_packet: i64,
    pub queue: i64,
    pub batch: i64,
    pub threshold: f64,
    pub weights: ThreatWeightsConfig,
    pub segment_thresholds: BTreeMap<String, f64>,
    pub flows_to_act: i64,
    pub window_ms: i64,
    /// `isolate`, `mirror_flow`, `mirror_source` or `rate_limit`.
    pub action: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mirror_session: String,
    pub rate_limit_pps: i64,
    pub rate_limit_burst: i64,
    pub action_ttl_ms: i64,
    pub sources: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    pub record_rows: i64,
}

impl Default for RawScoring {
    fn default() -> Self {
        Self::from(&ScoringConfig::default())
    }
}

/// The rate limit `[scoring]` takes when `action = "rate_limit"` names none.
const DEFAULT_SCORING_RATE: (u64, u64) = (100, 20);

impl From<&ScoringConfig> for RawScoring {
    fn from(scoring: &ScoringConfig) -> Self {
        let (action, mirror_session, (pps, burst)) = match &scoring.action {
            ScoringAction::Isolate => ("isolate", String::new(), DEFAULT_SCORING_RATE),
            ScoringAction::MirrorFlow { session } => {
                ("mirror_flow", session.clone(), DEFAULT_SCORING_RATE)
            }
            ScoringAction::MirrorSource { session } => {
                ("mirror_source", session.clone(), DEFAULT_SCORING_RATE)
            }
            ScoringAction::RateLimit {
                packets_per_second,
                burst,
            } => ("rate_limit", String::new(), (*packets_per_second, *burst)),
        };
        Self {
            enabled: scoring.enabled,
            models: scoring.models.as_ref().map(|p| p.display().to_string()),
            core: scoring.core.map(|core| core as i64),
            nth_packet: scoring.nth_packet.into(),
            queue: scoring.queue.into(),
            batch: scoring.batch.into(),
            threshold: scoring.threshold,
            weights: scoring.weights,
            segment_thresholds: scoring.segment_thresholds.iter().cloned().collect(),
            flows_to_act: scoring.flows_to_act.into(),
            window_ms: scoring.window_ms.into(),
            action: action.into(),
            mirror_session,
            rate_limit_pps: pps as i64,
            rate_limit_burst: burst as i64,
            action_ttl_ms: scoring.action_ttl_ms.into(),
            sources: scoring.sources.into(),
            record: scoring.record.as_ref().map(|p| p.display().to_string()),
            record_rows: scoring.record_rows.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCollector {
    pub address: String,
    #[serde(default = "default_observation_domain")]
    pub observation_domain: i64,
    #[serde(default = "default_message_size")]
    pub message_size: i64,
    #[serde(default = "default_refresh_messages")]
    pub template_refresh_messages: i64,
    #[serde(default = "default_refresh_s")]
    pub template_refresh_s: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymize_key_file: Option<String>,
}

fn default_observation_domain() -> i64 {
    1
}

fn default_message_size() -> i64 {
    1400
}

fn default_refresh_messages() -> i64 {
    100
}

fn default_refresh_s() -> i64 {
    60
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self::from(&TelemetryConfig::default())
    }
}

impl From<&TelemetryConfig> for RawTelemetry {
    fn from(telemetry: &TelemetryConfig) -> Self {
        Self {
            enabled: telemetry.enabled,
            idle_timeout_ms: telemetry.idle_timeout_ms.into(),
            active_timeout_ms: telemetry.active_timeout_ms.into(),
            activity_timeout_ms: telemetry.activity_timeout_ms.into(),
            queue: telemetry.queue.into(),
            collectors: telemetry
                .collectors
                .iter()
                .map(|c| RawCollector {
                    address: c.address.to_string(),
                    observation_domain: c.observation_domain.into(),
                    message_size: c.message_size.into(),
                    template_refresh_messages: c.template_refresh_messages.into(),
                    template_refresh_s: c.template_refresh_s.into(),
                    anonymize_key_file: c
                        .anonymize_key_file
                        .as_ref()
                        .map(|p| p.display().to_string()),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub enabled: bool,
    pub listen: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawApi {
    pub socket: String,
    pub socket_mode: i64,
    pub writers: Vec<i64>,
    pub readers: Vec<i64>,
    pub max_message_bytes: i64,
    pub requests_per_second: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<RawToken>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToken {
    pub name: String,
    pub role: ApiRole,
    pub file: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawState {
    pub dir: String,
    pub without_policy: WithoutPolicy,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawDataplane {
    pub xdp_mode: XdpMode,
    pub zero_copy: ZeroCopy,
    pub burst_size: i64,
    pub frame_size: i64,
    pub frames_per_worker: i64,
    pub ring_size: i64,
    pub idle_poll_timeout_us: i64,
    pub idle_spin_bursts: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawTables {
    pub neighbours: i64,
    pub pending_per_neighbour: i64,
    pub max_routes_v4: i64,
    pub max_routes_v6: i64,
    pub flows: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawIcmp {
    pub errors_per_second: i64,
    pub errors_burst: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkers {
    pub cores: Vec<i64>,
    #[serde(default)]
    pub flow_steering: FlowSteering,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPort {
    pub name: String,
    pub interface: String,
    #[serde(default = "default_port_mtu")]
    pub mtu: i64,
    #[serde(default = "default_port_queues")]
    pub queues: i64,
    #[serde(default)]
    pub rp_filter: RpFilter,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<RawVlan>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVlan {
    pub id: i64,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `None`: the parent port's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<i64>,
    /// `None`: the parent port's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rp_filter: Option<RpFilter>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub prefix: String,
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

fn default_port_mtu() -> i64 {
    DEFAULT_PORT_MTU.into()
}

fn default_port_queues() -> i64 {
    DEFAULT_PORT_QUEUES.into()
}

impl Default for RawDataplane {
    fn default() -> Self {
        Self::from(&DataplaneConfig::default())
    }
}

impl Default for RawTables {
    fn default() -> Self {
        Self::from(&TableConfig::default())
    }
}

impl Default for RawIcmp {
    fn default() -> Self {
        Self::from(&IcmpConfig::default())
    }
}

impl Default for RawApi {
    fn default() -> Self {
        Self::from(&ApiConfig::default())
    }
}

impl Default for RawState {
    fn default() -> Self {
        Self::from(&StateConfig::default())
    }
}

impl From<&ApiConfig> for RawApi {
    fn from(api: &ApiConfig) -> Self {
        Self {
            socket: api.socket.display().to_string(),
            socket_mode: api.socket_mode.into(),
            writers: api.writers.iter().map(|&uid| uid.into()).collect(),
            readers: api.readers.iter().map(|&uid| uid.into()).collect(),
            max_message_bytes: api.max_message_bytes.into(),
            requests_per_second: api.requests_per_second.into(),
            tcp: api.tcp.map(|address| address.to_string()),
            tokens: api
                .tokens
                .iter()
                .map(|token| RawToken {
                    name: token.name.clone(),
                    role: token.role,
                    file: token.file.display().to_string(),
                })
                .collect(),
            tls: api.tls.as_ref().map(|tls| RawTls {
                cert: tls.cert.display().to_string(),
                key: tls.key.display().to_string(),
                client_ca: tls.client_ca.display().to_string(),
            }),
        }
    }
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self::from(&MetricsConfig::default())
    }
}

impl From<&MetricsConfig> for RawMetrics {
    fn from(metrics: &MetricsConfig) -> Self {
        Self {
            enabled: metrics.enabled,
            listen: metrics.listen.to_string(),
        }
    }
}

impl From<&StateConfig> for RawState {
    fn from(state: &StateConfig) -> Self {
        Self {
            dir: state.dir.display().to_string(),
            without_policy: state.without_policy,
        }
    }
}

impl From<&Config> for RawConfig {
    fn from(config: &Config) -> Self {
        Self {
            dataplane: RawDataplane::from(&config.dataplane),
            tables: RawTables::from(&config.tables),
            icmp: RawIcmp::from(&config.icmp),
            workers: RawWorkers {
                cores: config
                    .workers
                    .cores
                    .iter()
                    .map(|&core| core.into())
                    .collect(),
                flow_steering: config.workers.flow_steering,
            },
            ports: config.ports.iter().map(RawPort::from).collect(),
            routes: config.routes.iter().map(RawRoute::from).collect(),
            policy: config.policy.as_ref().map(crate::policy::to_raw),
            api: RawApi::from(&config.api),
            state: RawState::from(&config.state),
            metrics: RawMetrics::from(&config.metrics),
            telemetry: RawTelemetry::from(&config.telemetry),
            mirror: RawMirror::from(&config.mirror),
            scoring: RawScoring::from(&config.scoring),
        }
    }
}

impl From<&DataplaneConfig> for RawDataplane {
    fn from(dataplane: &DataplaneConfig) -> Self {
        Self {
            xdp_mode: dataplane.xdp_mode,
            zero_copy: dataplane.zero_copy,
            burst_size: dataplane.burst_size.into(),
            frame_size: dataplane.frame_size.into(),
            frames_per_worker: dataplane.frames_per_worker.into(),
            ring_size: dataplane.ring_size.into(),
            idle_poll_timeout_us: dataplane.idle_poll_timeout_us.into(),
            idle_spin_bursts: dataplane.idle_spin_bursts.into(),
        }
    }
}

impl From<&TableConfig> for RawTables {
    fn from(tables: &TableConfig) -> Self {
        Self {
            neighbours: tables.neighbours.into(),
            pending_per_neighbour: tables.pending_per_neighbour.into(),
            max_routes_v4: tables.max_routes_v4.into(),
            max_routes_v6: tables.max_routes_v6.into(),
            flows: tables.flows.into(),
        }
    }
}

impl From<&IcmpConfig> for RawIcmp {
    fn from(icmp: &IcmpConfig) -> Self {
        Self {
            errors_per_second: icmp.errors_per_second.into(),
            errors_burst: icmp.errors_burst.into(),
        }
    }
}

impl From<&PortConfig> for RawPort {
    fn from(port: &PortConfig) -> Self {
        Self {
            name: port.name.clone(),
            interface: port.interface.clone(),
            mtu: port.mtu.into(),
            queues: port.queues.into(),
            rp_filter: port.rp_filter,
            addresses: port.addresses.iter().map(ToString::to_string).collect(),
            vlans: port.vlans.iter().map(RawVlan::from).collect(),
        }
    }
}

impl From<&VlanConfig> for RawVlan {
    fn from(vlan: &VlanConfig) -> Self {
        Self {
            id: vlan.id.into(),
            addresses: vlan.addresses.iter().map(ToString::to_string).collect(),
            mtu: Some(vlan.mtu.into()),
            rp_filter: Some(vlan.rp_filter),
        }
    }
}

impl From<&RouteConfig> for RawRoute {
    fn from(route: &RouteConfig) -> Self {
        Self {
            prefix: route.prefix.to_string(),
            via: route.via.to_string(),
            interface: route.interface.as_ref().map(ToString::to_string),
        }
    }
}
