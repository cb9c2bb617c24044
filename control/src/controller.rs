//! The control side's single writer: everything that changes the router's state (rule sets,
//! dynamic entries) runs here, one request at a time, on the supervisor thread. The API hands it
//! calls through a bounded queue; SIGHUP and the start-up policy go through the same code. Each
//! change is validated whole, written to the audit log, persisted, and only then published;
//! a refused request changes nothing and is audited too.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfn_config::{Config, WithoutPolicy};
use vfn_control::audit::{self, AuditEvent, AuditHead, AuditLog};
use vfn_control::convert::{self, FieldViolation};
use vfn_control::persist::{self, AUDIT_FILE};
use vfn_control::proto;
use vfn_dataplane::change::ChangeError;
use vfn_dataplane::fib::{FibError, StaticRoute};
use vfn_dataplane::iface::IfIndex;
use vfn_dataplane::neigh::{NeighbourError, NeighbourKey};
use vfn_dataplane::overlay::{DynamicAction, OverlayError};
use vfn_dataplane::router::Router;
use vfn_models::{
    ModelBundle, ModelError, ScoringShared, Segment, SegmentImpact, ThreatAction, ThreatReport,
};
use vfn_rules::{CompileError, CompileLimits, DefaultAction, RuleSetSpec};

use prometheus_client::metrics::histogram::Histogram;

use crate::events::Events;
use crate::stats::Sources;
use vfn_control::proto::event::Kind;

/// A request for the controller, with its reply inside.
pub type Call = Box<dyn FnOnce(&mut Controller) + Send>;

/// Why a request was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid: {}", summary(.0))]
    Invalid(Vec<FieldViolation>),
    #[error("over a limit: {}", summary(.0))]
    OverLimit(Vec<FieldViolation>),
    /// Compare-and-set lost, or the router cannot take the request in its present shape.
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    TimedOut(String),
    /// Writing the audit log or the state failed: the request was not applied.
    #[error("not applied: {0}")]
    Storage(String),
}

fn summary(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The rule set in force as it was applied.
struct Applied {
    spec: RuleSetSpec,
    hash: String,
    applied_by: String,
}

pub struct Controller {
    pub router: Router,
    /// The workers' counters; empty until the workers exist.
    pub sources: Sources,
    applied: Option<Applied>,
    audit: AuditLog,
    state_dir: PathBuf,
    limits: CompileLimits,
    /// The router's mirror sessions by index, which rules name.
    mirror_session_names: Vec<String>,
    /// The Linux interface of each port, by port.
    pub port_interfaces: Vec<String>,
    pub events: Events,
    /// Request (or signal) to live, per rule set applied.
    apply_duration: Histogram,
    /// Whether the API changed the routes: they are persisted then, and win at the next start.
    routes_changed: bool,
    /// The anomaly scorer's shared state, when scoring is on.
    pub scoring: Option<Scoring>,
}

/// Scoring as the controller sees it: the scorer's shared state, and the config's thresholds of
/// segments, which it publishes with each rule set's segments.
pub struct Scoring {
    pub shared: ScoringShared,
    pub segment_thresholds: Vec<(String, f64)>,
}

/// The principal of the scorer's actions in the audit log and events.
const SCORER: &str = "scorer";

/// How long a route or neighbour change may wait for the slow path.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The state folder, created if missing, and what was persisted there.
pub fn load_state(config: &Config) -> Result<Option<proto::PersistedState>, StartError> {
    let dir = &config.state.dir;
    std::fs::create_dir_all(dir).map_err(|source| StartError::StateDir {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(persist::load(dir)?)
}

/// The routes the API persisted, to build the router with instead of the config's; `None` when
/// the API never changed them.
pub fn persisted_routes(
    persisted: Option<&proto::PersistedState>,
    index_of: impl Fn(&str) -> Option<IfIndex>,
) -> Result<Option<Vec<StaticRoute>>, StartError> {
    let Some(state) = persisted.filter(|state| state.routes_changed) else {
        return Ok(None);
    };
    state
        .routes
        .iter()
        .map(|route| crate::routes::route_from_proto(route, &index_of))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(StartError::PersistedRoutes)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("state: {0}")]
    Persist(#[from] persist::PersistError),
    #[error("audit log: {0}")]
    Audit(#[from] audit::AuditError),
    #[error("creating the state folder {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("the persisted rule set does not convert: {}", summary(.0))]
    PersistedInvalid(Vec<FieldViolation>),
    #[error(
        "the persisted rule set no longer compiles (delete {path} to start from the config): {source}"
    )]
    PersistedRefused { path: String, source: CompileError },
    #[error("a persisted route does not fit this router's interfaces: {}", summary(.0))]
    PersistedRoutes(Vec<FieldViolation>),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl Controller {
    /// Takes over `router`, opens the audit log and publishes the policy to start with: the
    /// persisted rule set if there is one, else the config's, else what `[state] without_policy`
    /// says. Runs before any port is attached, so the first packet meets that policy.
    pub fn start(
        router: Router,
        config: &Config,
        config_path: &Path,
        persisted: Option<proto::PersistedState>,
        events: Events,
        apply_duration: Histogram,
    ) -> Result<Controller, StartError> {
        let state_dir = config.state.dir.clone();
        let head = persisted
            .as_ref()
            .map(|state| AuditHead {
                hash: state.audit_head.clone(),
                entries: state.audit_entries,
            })
            .unwrap_or_default();
        let audit_path = state_dir.join(AUDIT_FILE);
        if head.entries > 0
            && let Err(error) = audit::verify(&audit_path, Some(&head))
        {
            // The log is evidence, not configuration: the router goes on and keeps saying so.
            tracing::error!(%error, "the audit log does not verify against the persisted head");
        }
        let mirror_session_names = router
            .mirror_sessions
            .iter()
            .map(|session| session.name.clone())
            .collect();
        let mut controller = Controller {
            router,
            sources: Sources {
                port_names: Vec::new(),
                workers: Vec::new(),
                rules: Vec::new(),
                slow_path: Arc::default(),
                mirror_sessions: Vec::new(),
                mirrors: Vec::new(),
                scorer: None,
            },
            applied: None,
            audit: AuditLog::open(&audit_path, head)?,
            state_dir,
            limits: CompileLimits::default(),
            mirror_session_names,
            port_interfaces: config
                .ports
                .iter()
                .map(|port| port.interface.clone())
                .collect(),
            events,
            apply_duration,
            routes_changed: persisted.as_ref().is_some_and(|state| state.routes_changed),
            scoring: None,
        };
        if let Some(spec) = persisted.as_ref().and_then(|state| state.rule_set.as_ref()) {
            let spec = convert::rule_set_from_proto(spec).map_err(StartError::PersistedInvalid)?;
            let rules = crate::policy::compile_spec(
                &spec,
                &controller.router.interfaces,
                &controller.mirror_session_names,
                &controller.limits,
            )
            .map_err(|source| StartError::PersistedRefused {
                path: controller
                    .state_dir
                    .join(persist::STATE_FILE)
                    .display()
                    .to_string(),
                source,
            })?;
            let applied_by = persisted.map(|state| state.applied_by).unwrap_or_default();
            tracing::info!(version = %spec.version, %applied_by, "persisted rule set in force");
            controller.router.policy.publish(Some(rules));
            controller.applied = Some(Applied {
                hash: convert::rule_set_hash(&spec),
                spec,
                applied_by,
            });
            return Ok(controller);
        }
        let spec = match crate::policy::load_spec(config, config_path)? {
            Some(spec) => spec,
            None if config.state.without_policy == WithoutPolicy::Drop => RuleSetSpec {
                version: "fail-closed".into(),
                default_action: DefaultAction::Deny,
                ..RuleSetSpec::default()
            },
            None => return Ok(controller),
        };
        controller.apply(spec, "config", "start", None, Instant::now())?;
        Ok(controller)
    }

    /// The version in force, "" when none is.
    fn version(&self) -> &str {
        self.applied
            .as_ref()
            .map_or("", |a| a.spec.version.as_str())
    }

    fn refuse(&mut self, event: AuditEvent, error: ControlError) -> ControlError {
        let event = AuditEvent {
            result: "refused".into(),
            reason: error.to_string(),
            ..event
        };
        if matches!(event.action.as_str(), "ApplyRuleSet" | "reload" | "start") {
            self.events
                .emit(Kind::RuleSetRefused(proto::RuleSetRefused {
                    principal: event.principal.clone(),
                    version: event.version_after.clone(),
                    reason: event.reason.clone(),
                }));
        }
        if let Err(storage_error) = self.record(event, None) {
            tracing::error!(%storage_error, "recording a refusal");
        }
        tracing::warn!(%error, "request refused");
        error
    }

    /// Appends `event` to the audit log and persists the state with the log's new head and the
    /// rule set `next` (with who applied it), or else the one in force.
    fn record(
        &mut self,
        event: AuditEvent,
        next: Option<(&RuleSetSpec, &str)>,
    ) -> Result<(), ControlError> {
        let head = self
            .audit
            .append(event)
            .map_err(|e| ControlError::Storage(e.to_string()))?
            .clone();
        let (rule_set, applied_by) = match next {
            Some((spec, principal)) => (Some(spec), principal),
            None => self
                .applied
                .as_ref()
                .map_or((None, ""), |a| (Some(&a.spec), a.applied_by.as_str())),
        };
        let state = proto::PersistedState {
            rule_set: rule_set.map(convert::rule_set_to_proto),
            applied_by: applied_by.into(),
            audit_head: head.hash,
            audit_entries: head.entries,
            routes: if self.routes_changed {
                self.static_routes()
            } else {
                Vec::new()
            },
            routes_changed: self.routes_changed,
        };
        persist::save(&self.state_dir, &state).map_err(|e| ControlError::Storage(e.to_string()))
    }

    /// Validates, compiles and (unless `dry_run`) applies `request` for `principal`.
    pub fn apply_request(
        &mut self,
        principal: &str,
        request: proto::ApplyRuleSetRequest,
        received: Instant,
    ) -> Result<proto::ApplyRuleSetResponse, ControlError> {
        let event = AuditEvent {
            principal: principal.into(),
            action: "ApplyRuleSet".into(),
            version_before: self.version().into(),
            ..AuditEvent::default()
        };
        let Some(message) = request.rule_set.as_ref() else {
            let error = ControlError::Invalid(vec![FieldViolation {
                field: "rule_set".into(),
                reason: "missing".into(),
            }]);
            return Err(self.refuse(event, error));
        };
        let spec = match convert::rule_set_from_proto(message) {
            Ok(spec) => spec,
            Err(violations) => return Err(self.refuse(event, ControlError::Invalid(violations))),
        };
        let event = AuditEvent {
            version_after: spec.version.clone(),
            rule_set_hash: convert::rule_set_hash(&spec),
            ..event
        };
        if let Some(expected) = &request.expected_version
            && expected != self.version()
        {
            let error = ControlError::Precondition(format!(
                "expected version {expected:?} is not the version in force, {:?}",
                self.version()
            ));
            return Err(self.refuse(event, error));
        }
        if request.dry_run {
            let rules = self.compile(&spec).map_err(|error| {
                tracing::info!(%error, "dry run refused");
                error
            })?;
            return Ok(self.response(&spec, &rules, event.rule_set_hash, false, received));
        }
        self.apply(spec, principal, "ApplyRuleSet", Some(event), received)
    }

    fn compile(&self, spec: &RuleSetSpec) -> Result<vfn_rules::RuleSet, ControlError> {
        crate::policy::compile_spec(
            spec,
            &self.router.interfaces,
            &self.mirror_session_names,
            &self.limits,
        )
        .map_err(|e| {
            let over_limit = e.errors.iter().any(|error| error.over_limit);
            let violations = e
                .errors
                .into_iter()
                .map(|error| FieldViolation {
                    field: if error.id.is_empty() {
                        format!("{}.{}", error.place, error.field)
                    } else {
                        format!("{} (id {}).{}", error.place, error.id, error.field)
                    },
                    reason: error.reason,
                })
                .collect();
            if over_limit {
                ControlError::OverLimit(violations)
            } else {
                ControlError::Invalid(violations)
            }
        })
    }

    fn response(
        &self,
        spec: &RuleSetSpec,
        rules: &vfn_rules::RuleSet,
        hash: String,
        applied: bool,
        received: Instant,
    ) -> proto::ApplyRuleSetResponse {
        proto::ApplyRuleSetResponse {
            version_before: self.version().into(),
            version_after: spec.version.clone(),
            applied,
            stats: Some(proto::RuleSetStats {
                rules: u32::try_from(rules.rules.len()).unwrap_or(u32::MAX),
                entries: rules.entry_count as u64,
                memory_bytes: rules.memory_bytes() as u64,
                build_micros: u64::try_from(rules.build_time.as_micros()).unwrap_or(u64::MAX),
            }),
            diff: Some(convert::diff(self.applied.as_ref().map(|a| &a.spec), spec)),
            hash,
            apply_micros: u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Compiles `spec`, audits, persists and publishes it; audits a refusal.
    fn apply(
        &mut self,
        spec: RuleSetSpec,
        principal: &str,
        action: &str,
        event: Option<AuditEvent>,
        received: Instant,
    ) -> Result<proto::ApplyRuleSetResponse, ControlError> {
        let event = event.unwrap_or_else(|| AuditEvent {
            principal: principal.into(),
            action: action.into(),
            version_before: self.version().into(),
            version_after: spec.version.clone(),
            rule_set_hash: convert::rule_set_hash(&spec),
            ..AuditEvent::default()
        });
        let rules = match self.compile(&spec) {
            Ok(rules) => rules,
            Err(error) => return Err(self.refuse(event, error)),
        };
        let mut response =
            self.response(&spec, &rules, event.rule_set_hash.clone(), true, received);
        let accepted = AuditEvent {
            result: "ok".into(),
            ..event
        };
        self.record(accepted, Some((&spec, principal)))?;
        let generation = self.router.policy.publish(Some(rules));
        tracing::info!(version = %spec.version, generation, principal, "rule set applied");
        self.events
            .emit(Kind::RuleSetApplied(proto::RuleSetApplied {
                principal: principal.into(),
                version_before: response.version_before.clone(),
                version_after: spec.version.clone(),
                hash: response.hash.clone(),
                generation,
            }));
        self.applied = Some(Applied {
            hash: response.hash.clone(),
            spec,
            applied_by: principal.into(),
        });
        self.publish_segments();
        response.apply_micros = u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.apply_duration
            .observe(received.elapsed().as_secs_f64());
        Ok(response)
    }

    /// Applies the config file's policy again (SIGHUP), as principal `sighup`.
    pub fn reload(&mut self, config_path: &Path) {
        let outcome = crate::policy::reload(config_path)
            .map_err(|e| {
                let event = AuditEvent {
                    principal: "sighup".into(),
                    action: "reload".into(),
                    version_before: self.version().into(),
                    ..AuditEvent::default()
                };
                self.refuse(
                    event,
                    ControlError::Invalid(vec![FieldViolation {
                        field: config_path.display().to_string(),
                        reason: e.to_string(),
                    }]),
                )
            })
            .and_then(|spec| self.apply(spec, "sighup", "reload", None, Instant::now()));
        match outcome {
            Ok(response) => tracing::info!(version = response.version_after, "policy reloaded"),
            Err(error) => {
                tracing::error!(%error, "policy reload refused; the rule set in force stays")
            }
        }
    }

    pub fn rule_set(&self) -> proto::GetRuleSetResponse {
        proto::GetRuleSetResponse {
            rule_set: self
                .applied
                .as_ref()
                .map(|a| convert::rule_set_to_proto(&a.spec)),
            hash: self
                .applied
                .as_ref()
                .map_or(String::new(), |a| a.hash.clone()),
            generation: self.router.policy.generation(),
            applied_by: self
                .applied
                .as_ref()
                .map_or(String::new(), |a| a.applied_by.clone()),
        }
    }

    pub fn rule_counters(&self) -> proto::GetRuleCountersResponse {
        let Some(policy) = self.router.policy.current() else {
            return proto::GetRuleCountersResponse::default();
        };
        let totals = self.sources.rule_totals(&policy);
        let counter = |id: &str, traffic: crate::stats::Traffic| proto::RuleCounter {
            id: id.into(),
            packets: traffic.packets,
            bytes: traffic.bytes,
        };
        proto::GetRuleCountersResponse {
            version: policy.rules.version.clone(),
            rules: policy
                .rules
                .rules
                .iter()
                .zip(totals.rules)
                .map(|(rule, traffic)| counter(&rule.id, traffic))
                .collect(),
            default_action: Some(counter("default", totals.default)),
        }
    }

    pub fn add_dynamic(
        &mut self,
        principal: &str,
        request: proto::AddDynamicEntryRequest,
    ) -> Result<proto::AddDynamicEntryResponse, ControlError> {
        let event = AuditEvent {
            principal: principal.into(),
            action: "AddDynamicEntry".into(),
            version_before: self.version().into(),
            version_after: self.version().into(),
            ..AuditEvent::default()
        };
        let mut violations = Vec::new();
        let host = request
            .host
            .parse::<IpAddr>()
            .map_err(|_| {
                violations.push(FieldViolation {
                    field: "host".into(),
                    reason: format!("{:?} is not an address", request.host),
                })
            })
            .ok();
        let action = convert::dynamic_action_from_proto(request.action.as_ref())
            .map_err(|violation| violations.push(violation))
            .ok();
        if request.ttl_millis == 0 {
            violations.push(FieldViolation {
                field: "ttl_millis".into(),
                reason: "a time to live of zero expires at once".into(),
            });
        }
        let (Some(host), Some(action), true) = (host, action, violations.is_empty()) else {
            return Err(self.refuse(event, ControlError::Invalid(violations)));
        };
        let id = self.install_dynamic(
            event,
            principal,
            host,
            action,
            request.ttl_millis,
            &request.reason,
        )?;
        Ok(proto::AddDynamicEntryResponse { id })
    }

    /// Starts scoring: the scorer's state, and the segments of the rule set in force.
    pub fn start_scoring(&mut self, scoring: Scoring) {
        self.scoring = Some(scoring);
        self.publish_segments();
    }

    /// Publishes the segments of the rule set in force, with their criticality and thresholds,
    /// to the scorer.
    fn publish_segments(&self) {
        let Some(scoring) = &self.scoring else {
            return;
        };
        let segments = self
            .applied
            .as_ref()
            .map_or(&[][..], |a| &a.spec.segments[..]);
        let impact = SegmentImpact::new(segments.iter().map(|segment| {
            let threshold = scoring
                .segment_thresholds
                .iter()
                .find(|(name, _)| *name == segment.name)
                .map(|(_, threshold)| *threshold);
            let scored = Segment {
                name: segment.name.clone(),
                criticality: segment.criticality,
                threshold,
            };
            (scored, segment.prefixes.clone())
        }));
        scoring.shared.segments.store(Arc::new(impact));
    }

    /// Installs the action the scorer decided on as a dynamic entry, as principal `scorer`:
    /// audited, logged and announced like any dynamic entry, plus a `ThreatDetected` event.
    pub fn act_on_threat(&mut self, report: ThreatReport) {
        let decision = &report.decision;
        let action_name = match &decision.action {
            ThreatAction::Isolate => "isolate",
            ThreatAction::MirrorFlow { .. } => "mirror_flow",
            ThreatAction::MirrorSource { .. } => "mirror_source",
            ThreatAction::RateLimit { .. } => "rate_limit",
        };
        let (flow, terms) = (&decision.flow, &decision.terms);
        let reason = format!(
            "threat {:.3} over {:.3} (anomaly {:.3}, impact {:.3}, confidence {:.3}), persona {}, \
             {} flows, model {}, flow {} {}:{} -> {}:{}",
            decision.threat,
            decision.threshold,
            terms.anomaly,
            terms.impact,
            terms.confidence,
            report.persona,
            decision.evidence,
            report.model,
            flow.proto,
            flow.src,
            flow.sport,
            flow.dst,
            flow.dport,
        );
        let ttl_millis = u64::try_from(decision.ttl.as_millis()).unwrap_or(u64::MAX);
        match self.install_threat_action(&decision.action, decision, ttl_millis, &reason) {
            Ok(entry_id) => {
                tracing::warn!(
                    source = %decision.source,
                    action = action_name,
                    entry_id,
                    threat = decision.threat,
                    persona = %report.persona,
                    %reason,
                    "threat detected: acting on the source"
                );
                self.events
                    .emit(Kind::ThreatDetected(proto::ThreatDetected {
                        source: decision.source.to_string(),
                        action: action_name.into(),
                        entry_id,
                        ttl_millis,
                        threat: decision.threat,
                        threshold: decision.threshold,
                        anomaly: terms.anomaly,
                        impact: terms.impact,
                        confidence: terms.confidence,
                        persona: report.persona.clone(),
                        segment: decision.segment.clone().unwrap_or_default(),
                        evidence: decision.evidence,
                        model: report.model.clone(),
                        flow_src: flow.src.to_string(),
                        flow_dst: flow.dst.to_string(),
                        flow_sport: flow.sport.into(),
                        flow_dport: flow.dport.into(),
                        flow_protocol: flow.proto.into(),
                    }));
            }
            Err(error) => {
                tracing::error!(%error, source = %decision.source, "the scorer's action was refused");
            }
        }
    }

    /// Installs a decision's action: a dynamic entry for the source, or, to mirror the flow, a
    /// mirror policy matching it in both directions. Returns the entry's or the policy's id.
    fn install_threat_action(
        &mut self,
        action: &ThreatAction,
        decision: &vfn_models::Decision,
        ttl_millis: u64,
        reason: &str,
    ) -> Result<u64, ControlError> {
        let entry = match action {
            ThreatAction::MirrorFlow { session } => {
                let flow = &decision.flow;
                // Ports where the protocol has them (an ICMP flow's are its identifier or type).
                let has_ports = matches!(flow.proto, 6 | 17 | 132);
                let single = |port: u16| {
                    has_ports
                        .then(|| proto::PortRange {
                            first: port.into(),
                            last: port.into(),
                        })
                        .into_iter()
                        .collect()
                };
                let request = proto::AddMirrorPolicyRequest {
                    policy: Some(proto::MirrorPolicy {
                        session: session.clone(),
                        source_prefixes: vec![flow.src.to_string()],
                        destination_prefixes: vec![flow.dst.to_string()],
                        protocol: Some(flow.proto.into()),
                        source_ports: single(flow.sport),
                        destination_ports: single(flow.dport),
                        reason: reason.into(),
                        ..proto::MirrorPolicy::default()
                    }),
                    ttl_millis,
                };
                return self
                    .add_mirror_policy(SCORER, request)
                    .map(|response| response.id);
            }
            // An entry an operator made for the host wins: the scorer's would replace it.
            _ if self.router.overlay.entries().iter().any(|entry| {
                entry.host == decision.source && !entry.reason.starts_with(SCORER)
            }) =>
            {
                return Err(ControlError::Precondition(format!(
                    "{} has a dynamic entry of an operator's; the scorer leaves it",
                    decision.source
                )));
            }
            ThreatAction::Isolate => DynamicAction::Quarantine,
            ThreatAction::MirrorSource { session } => DynamicAction::Mirror {
                session: session.clone(),
            },
            ThreatAction::RateLimit {
                packets_per_second,
                burst,
            } => DynamicAction::RateLimit {
                packets_per_second: *packets_per_second,
                burst: *burst,
            },
        };
        let event = AuditEvent {
            principal: SCORER.into(),
            action: "ThreatDetected".into(),
            version_before: self.version().into(),
            version_after: self.version().into(),
            ..AuditEvent::default()
        };
        self.install_dynamic(event, SCORER, decision.source, entry, ttl_millis, reason)
    }

    /// Validates a model bundle whole and swaps it in for the scorer's next batch.
    pub fn load_models(
        &mut self,
        principal: &str,
        request: proto::LoadModelsRequest,
    ) -> Result<proto::LoadModelsResponse, ControlError> {
        // The request's encoding holds the three parts, each with its length.
        let sha256 = convert::sha256_hex(&prost::Message::encode_to_vec(&request));
        let event = AuditEvent {
            principal: principal.into(),
            action: "LoadModels".into(),
            version_before: self.version().into(),
            version_after: self.version().into(),
            ..AuditEvent::default()
        };
        let Some(scoring) = &self.scoring else {
            let error = ControlError::Precondition(
                "scoring is off: [scoring] enabled = false in the config".into(),
            );
            return Err(self.refuse(event, error));
        };
        let shared = scoring.shared.clone();
        let bundle = match ModelBundle::from_bytes(
            &request.manifest,
            &request.autoencoder,
            &request.personas,
        ) {
            Ok(bundle) => bundle,
            Err(error) => {
                let violation = FieldViolation {
                    field: model_error_field(&error),
                    reason: error.to_string(),
                };
                return Err(self.refuse(event, ControlError::Invalid(vec![violation])));
            }
        };
        let response = proto::LoadModelsResponse {
            name: bundle.name().into(),
            features: bundle.block().name().into(),
            personas: bundle.persona_names().to_vec(),
            sha256: sha256.clone(),
        };
        let accepted = AuditEvent {
            result: "ok".into(),
            reason: format!(
                "models {} (features {}), sha256 {sha256}",
                response.name, response.features
            ),
            ..event
        };
        self.record(accepted, None)?;
        shared.models.store(Arc::new(bundle));
        tracing::info!(name = %response.name, principal, sha256, "models loaded");
        self.events.emit(Kind::ModelsLoaded(proto::ModelsLoaded {
            principal: principal.into(),
            name: response.name.clone(),
            sha256,
        }));
        Ok(response)
    }

    /// The scorer's models, counters and sources.
    pub fn get_scoring(&self) -> proto::GetScoringResponse {
        let Some(scoring) = &self.scoring else {
            return proto::GetScoringResponse::default();
        };
        let shared = &scoring.shared;
        let models = shared.models.load();
        let counters = &shared.counters;
        let workers = &self.sources.rules;
        proto::GetScoringResponse {
            enabled: true,
            model: models.name().into(),
            features: models.block().name().into(),
            personas: models.persona_names().to_vec(),
            flows_scored: counters.flows_scored.get(),
            batches: counters.batches.get(),
            failures: counters.failures.get(),
            decisions: counters.decisions.get(),
            decisions_lost: counters.decisions_lost.get(),
            snapshots_queued: workers.iter().map(|(_, w)| w.snapshots_queued.get()).sum(),
            snapshots_lost: workers.iter().map(|(_, w)| w.snapshots_lost.get()).sum(),
            sources: shared
                .sources
                .load()
                .iter()
                .map(|source| proto::ScoredSource {
                    address: source.address.to_string(),
                    personas: source.personas.clone(),
                    flows_scored: source.flows_scored,
                    last_threat: source.last_threat,
                    evidence: source.evidence,
                    acting: source.acting,
                })
                .collect(),
        }
    }

    /// Adds a dynamic entry that passed validation: audited (refused if the log cannot take
    /// it), logged and announced.
    fn install_dynamic(
        &mut self,
        event: AuditEvent,
        principal: &str,
        host: IpAddr,
        action: DynamicAction,
        ttl_millis: u64,
        reason: &str,
    ) -> Result<u64, ControlError> {
        let described = describe(host, &action, ttl_millis, reason);
        let now = self.router.epoch.elapsed();
        let ttl = Duration::from_millis(ttl_millis);
        let id =
            match self
                .router
                .overlay
                .add(host, action, ttl, format!("{principal}: {reason}"), now)
            {
                Ok(id) => id,
                Err(error @ OverlayError::UnknownSession(_)) => {
                    let violation = FieldViolation {
                        field: "action.mirror_session".into(),
                        reason: error.to_string(),
                    };
                    return Err(self.refuse(event, ControlError::Invalid(vec![violation])));
                }
                Err(error) => {
                    let violation = FieldViolation {
                        field: "host".into(),
                        reason: error.to_string(),
                    };
                    return Err(self.refuse(event, ControlError::OverLimit(vec![violation])));
                }
            };
        let accepted = AuditEvent {
            result: "ok".into(),
            reason: described,
            ..event
        };
        if let Err(error) = self.record(accepted, None) {
            // An entry the log does not show never stays in force.
            let _ = self.router.overlay.remove(id, now);
            return Err(error);
        }
        tracing::info!(id, %host, principal, "dynamic entry added");
        if let Some(entry) = self.list_dynamic().entries.into_iter().find(|e| e.id == id) {
            self.events.emit(Kind::DynamicEntryAdded(entry));
        }
        Ok(id)
    }

    pub fn list_dynamic(&self) -> proto::ListDynamicEntriesResponse {
        let now = self.router.epoch.elapsed();
        proto::ListDynamicEntriesResponse {
            entries: self
                .router
                .overlay
                .entries()
                .iter()
                .filter(|entry| entry.expires_at > now)
                .map(|entry| proto::DynamicEntry {
                    id: entry.id,
                    host: entry.host.to_string(),
                    action: Some(convert::dynamic_action_to_proto(&entry.action)),
                    remaining_millis: u64::try_from((entry.expires_at - now).as_millis())
                        .unwrap_or(u64::MAX),
                    reason: entry.reason.clone(),
                })
                .collect(),
        }
    }

    /// Adds a mirror policy for its time to live; audited.
    pub fn add_mirror_policy(
        &mut self,
        principal: &str,
        request: proto::AddMirrorPolicyRequest,
    ) -> Result<proto::AddMirrorPolicyResponse, ControlError> {
        let policy = request.policy.unwrap_or_default();
        let event = self.event(
            principal,
            "AddMirrorPolicy",
            format!(
                "to {} for {} ms: {}",
                policy.session, request.ttl_millis, policy.reason
            ),
        );
        let segments = self
            .applied
            .as_ref()
            .map_or(&[][..], |applied| &applied.spec.segments[..]);
        let (matches, mut violations) = match convert::flow_match_from_proto(&policy, segments) {
            Ok(matches) => (Some(matches), Vec::new()),
            Err(violations) => (None, violations),
        };
        if request.ttl_millis == 0 {
            violations.push(FieldViolation {
                field: "ttl_millis".into(),
                reason: "a time to live of zero expires at once".into(),
            });
        }
        let (Some(matches), true) = (matches, violations.is_empty()) else {
            return Err(self.refuse(event, ControlError::Invalid(violations)));
        };
        let now = self.router.epoch.elapsed();
        let added = self.router.overlay.add_mirror_policy(
            policy.session.clone(),
            matches,
            policy.min_score,
            Duration::from_millis(request.ttl_millis),
            format!("{principal}: {}", policy.reason),
            now,
        );
        let id = match added {
            Ok(id) => id,
            Err(error @ OverlayError::UnknownSession(_)) => {
                let violation = FieldViolation {
                    field: "policy.session".into(),
                    reason: error.to_string(),
                };
                return Err(self.refuse(event, ControlError::Invalid(vec![violation])));
            }
            Err(error) => {
                let violation = FieldViolation {
                    field: "policy".into(),
                    reason: error.to_string(),
                };
                return Err(self.refuse(event, ControlError::OverLimit(vec![violation])));
            }
        };
        let accepted = AuditEvent {
            result: "ok".into(),
            reason: format!("id {id} {}", event.reason),
            ..event
        };
        if let Err(error) = self.record(accepted, None) {
            // A policy the log does not show never stays in force.
            let _ = self.router.overlay.remove_mirror_policy(id, now);
            return Err(error);
        }
        tracing::info!(id, session = %policy.session, principal, "mirror policy added");
        Ok(proto::AddMirrorPolicyResponse { id })
    }

    pub fn list_mirror_policies(&self) -> proto::ListMirrorPoliciesResponse {
        let now = self.router.epoch.elapsed();
        proto::ListMirrorPoliciesResponse {
            policies: self
                .router
                .overlay
                .mirror_policies()
                .iter()
                .filter(|policy| policy.expires_at > now)
                .map(|policy| proto::ListedMirrorPolicy {
                    policy: Some(convert::mirror_policy_to_proto(policy)),
                    remaining_millis: u64::try_from((policy.expires_at - now).as_millis())
                        .unwrap_or(u64::MAX),
                })
                .collect(),
        }
    }

    pub fn remove_mirror_policy(&mut self, principal: &str, id: u64) -> Result<(), ControlError> {
        let event = self.event(principal, "RemoveMirrorPolicy", format!("id {id}"));
        let now = self.router.epoch.elapsed();
        match self.router.overlay.remove_mirror_policy(id, now) {
            Ok(_) => {
                let removed = AuditEvent {
                    result: "ok".into(),
                    ..event
                };
                if let Err(error) = self.record(removed, None) {
                    tracing::error!(%error, "recording a removal");
                }
                Ok(())
            }
            Err(error) => Err(self.refuse(event, ControlError::NotFound(error.to_string()))),
        }
    }

    pub fn remove_dynamic(&mut self, principal: &str, id: u64) -> Result<(), ControlError> {
        let event = AuditEvent {
            principal: principal.into(),
            action: "RemoveDynamicEntry".into(),
            version_before: self.version().into(),
            version_after: self.version().into(),
            ..AuditEvent::default()
        };
        let now = self.router.epoch.elapsed();
        match self.router.overlay.remove(id, now) {
            Ok(entry) => {
                self.events
                    .emit(Kind::DynamicEntryRemoved(proto::DynamicEntryGone {
                        id,
                        host: entry.host.to_string(),
                        principal: principal.into(),
                    }));
                let reason = format!("id {id}, host {}", entry.host);
                let removed = AuditEvent {
                    result: "ok".into(),
                    reason,
                    ..event
                };
                if let Err(error) = self.record(removed, None) {
                    tracing::error!(%error, "recording a removal");
                }
                Ok(())
            }
            Err(error) => Err(self.refuse(event, ControlError::NotFound(error.to_string()))),
        }
    }

    /// Removes expired dynamic entries and mirror policies, logging and auditing each.
    pub fn expire(&mut self) {
        let (entries, policies) = self.router.overlay.expire(self.router.epoch.elapsed());
        for policy in policies {
            tracing::info!(id = policy.id, session = %policy.session, "mirror policy expired");
            let event = AuditEvent {
                principal: "expiry".into(),
                action: "MirrorPolicyExpired".into(),
                version_before: self.version().into(),
                version_after: self.version().into(),
                result: "ok".into(),
                reason: format!("id {}, session {}", policy.id, policy.session),
                ..AuditEvent::default()
            };
            if let Err(error) = self.record(event, None) {
                tracing::error!(%error, "recording an expiry");
            }
        }
        for entry in entries {
            tracing::info!(id = entry.id, host = %entry.host, "dynamic entry expired");
            self.events
                .emit(Kind::DynamicEntryExpired(proto::DynamicEntryGone {
                    id: entry.id,
                    host: entry.host.to_string(),
                    principal: String::new(),
                }));
            let event = AuditEvent {
                principal: "expiry".into(),
                action: "DynamicEntryExpired".into(),
                version_before: self.version().into(),
                version_after: self.version().into(),
                result: "ok".into(),
                reason: format!("id {}, host {}", entry.id, entry.host),
                ..AuditEvent::default()
            };
            if let Err(error) = self.record(event, None) {
                tracing::error!(%error, "recording an expiry");
            }
        }
    }

    fn interface_name(&self, index: IfIndex) -> Option<&str> {
        self.router
            .interfaces
            .get(index)
            .map(|iface| iface.name.as_str())
    }

    fn static_routes(&self) -> Vec<proto::Route> {
        self.router
            .routes()
            .iter()
            .map(|route| crate::routes::route_to_proto(route, |i| self.interface_name(i)))
            .collect()
    }

    pub fn list_routes(&self) -> proto::ListRoutesResponse {
        let fib = self.router.fib.load();
        let connected = fib
            .interface_routes()
            .iter()
            .filter_map(|(prefix, next_hop)| {
                crate::routes::connected_to_proto(*prefix, next_hop, |i| self.interface_name(i))
            });
        proto::ListRoutesResponse {
            routes: connected.chain(self.static_routes()).collect(),
        }
    }

    /// Replaces the static routes with `routes` (all or nothing), audits and persists.
    fn change_routes(
        &mut self,
        event: AuditEvent,
        routes: Vec<StaticRoute>,
    ) -> Result<proto::RouteChangeResponse, ControlError> {
        let applied = match self.router.replace_routes(routes, CHANGE_TIMEOUT) {
            Ok(applied) => applied,
            Err(error) => {
                let error = change_error(error, "route");
                return Err(self.refuse(event, error));
            }
        };
        self.routes_changed = true;
        self.record(
            AuditEvent {
                result: "ok".into(),
                ..event
            },
            None,
        )?;
        Ok(proto::RouteChangeResponse {
            routes_v4: u32::try_from(applied.routes_v4).unwrap_or(u32::MAX),
            routes_v6: u32::try_from(applied.routes_v6).unwrap_or(u32::MAX),
            fib_memory_bytes: applied.memory_bytes as u64,
        })
    }

    fn event(&self, principal: &str, action: &str, reason: String) -> AuditEvent {
        AuditEvent {
            principal: principal.into(),
            action: action.into(),
            version_before: self.version().into(),
            version_after: self.version().into(),
            reason,
            ..AuditEvent::default()
        }
    }

    pub fn add_route(
        &mut self,
        principal: &str,
        request: proto::AddRouteRequest,
    ) -> Result<proto::RouteChangeResponse, ControlError> {
        let message = request.route.unwrap_or_default();
        let event = self.event(
            principal,
            "AddRoute",
            format!(
                "{} via {} {}",
                message.prefix, message.via, message.interface
            ),
        );
        let route = match crate::routes::route_from_proto(&message, |name| {
            self.router.interfaces.by_name(name)
        }) {
            Ok(route) => route,
            Err(violations) => return Err(self.refuse(event, ControlError::Invalid(violations))),
        };
        let mut routes = self.router.routes();
        routes.retain(|existing| existing.prefix != route.prefix);
        routes.push(route);
        self.change_routes(event, routes)
    }

    pub fn delete_route(
        &mut self,
        principal: &str,
        prefix: &str,
    ) -> Result<proto::RouteChangeResponse, ControlError> {
        let event = self.event(principal, "DeleteRoute", prefix.into());
        let mut routes = self.router.routes();
        let before = routes.len();
        routes.retain(|route| route.prefix.to_string() != prefix);
        if routes.len() == before {
            let error = ControlError::NotFound(format!("no static route {prefix}"));
            return Err(self.refuse(event, error));
        }
        self.change_routes(event, routes)
    }

    pub fn list_neighbours(&self) -> proto::ListNeighboursResponse {
        proto::ListNeighboursResponse {
            neighbours: self
                .router
                .neighbours()
                .into_iter()
                .map(|entry| proto::Neighbour {
                    interface: entry.iface_name,
                    address: entry.addr.to_string(),
                    mac: entry.mac.map(crate::routes::mac_text).unwrap_or_default(),
                    state: crate::routes::state_name(entry.state).into(),
                })
                .collect(),
        }
    }

    /// The neighbour key of an interface name and address, or the problems with them.
    fn neighbour_key(
        &self,
        interface: &str,
        address: &str,
    ) -> Result<NeighbourKey, Vec<FieldViolation>> {
        let iface = self.router.interfaces.by_name(interface);
        let addr = address.parse::<IpAddr>().ok();
        match (iface, addr) {
            (Some(iface), Some(addr)) => Ok(NeighbourKey { iface, addr }),
            _ => Err([
                iface.is_none().then(|| FieldViolation {
                    field: "interface".into(),
                    reason: format!("no interface {interface:?}"),
                }),
                addr.is_none().then(|| FieldViolation {
                    field: "address".into(),
                    reason: format!("{address:?} is not an address"),
                }),
            ]
            .into_iter()
            .flatten()
            .collect()),
        }
    }

    pub fn add_neighbour(
        &mut self,
        principal: &str,
        request: proto::AddNeighbourRequest,
    ) -> Result<proto::AddNeighbourResponse, ControlError> {
        let message = request.neighbour.unwrap_or_default();
        let event = self.event(
            principal,
            "AddNeighbour",
            format!(
                "{} {} at {}",
                message.interface, message.address, message.mac
            ),
        );
        let key = self.neighbour_key(&message.interface, &message.address);
        let mac = crate::routes::parse_mac(&message.mac);
        let (key, mac) = match (key, mac) {
            (Ok(key), Some(mac)) => (key, mac),
            (key, mac) => {
                let mut violations = key.err().unwrap_or_default();
                if mac.is_none() {
                    violations.push(FieldViolation {
                        field: "mac".into(),
                        reason: format!(
                            "{:?} is not a MAC address (02:00:5e:10:00:0a)",
                            message.mac
                        ),
                    });
                }
                return Err(self.refuse(event, ControlError::Invalid(violations)));
            }
        };
        if let Err(error) = self.router.add_static_neighbour(key, mac, CHANGE_TIMEOUT) {
            let error = change_error(error, "neighbour");
            return Err(self.refuse(event, error));
        }
        self.record(
            AuditEvent {
                result: "ok".into(),
                ..event
            },
            None,
        )?;
        Ok(proto::AddNeighbourResponse {})
    }

    pub fn delete_neighbour(
        &mut self,
        principal: &str,
        request: proto::DeleteNeighbourRequest,
    ) -> Result<proto::DeleteNeighbourResponse, ControlError> {
        let event = self.event(
            principal,
            "DeleteNeighbour",
            format!("{} {}", request.interface, request.address),
        );
        let key = match self.neighbour_key(&request.interface, &request.address) {
            Ok(key) => key,
            Err(violations) => return Err(self.refuse(event, ControlError::Invalid(violations))),
        };
        if let Err(error) = self.router.delete_neighbour(key, CHANGE_TIMEOUT) {
            let error = change_error(error, "neighbour");
            return Err(self.refuse(event, error));
        }
        self.record(
            AuditEvent {
                result: "ok".into(),
                ..event
            },
            None,
        )?;
        Ok(proto::DeleteNeighbourResponse {})
    }

    pub fn stats(&self) -> proto::GetStatsResponse {
        let mut response = proto::GetStatsResponse {
            rule_set_generation: self.router.policy.generation(),
            ..proto::GetStatsResponse::default()
        };
        for (worker_index, worker) in self.sources.workers.iter().enumerate() {
            let worker_number = u32::try_from(worker_index).unwrap_or(u32::MAX);
            for (port, counters) in worker.ports.iter().enumerate() {
                response.ports.push(proto::PortStats {
                    port: self
                        .sources
                        .port_names
                        .get(port)
                        .cloned()
                        .unwrap_or_default(),
                    worker: worker_number,
                    rx_packets: counters.rx_packets.get(),
                    rx_bytes: counters.rx_bytes.get(),
                    tx_packets: counters.tx_packets.get(),
                    tx_bytes: counters.tx_bytes.get(),
                    drops: counters.drops.get(),
                    to_host: counters.to_host.get(),
                });
            }
            response.workers.push(proto::WorkerStats {
                worker: worker_number,
                bursts: worker.bursts.get(),
                idle_waits: worker.idle_waits.get(),
                flows_in_table: self
                    .sources
                    .rules
                    .get(worker_index)
                    .map_or(0, |(_, policy)| policy.flows_in_table.get()),
                icmp_errors_sent: worker.icmp_errors_sent.get(),
                handed_off: worker.handed_off.get(),
                handed_in: worker.handed_in.get(),
            });
            for &reason in vfn_dataplane::counters::DropReason::ALL {
                response.drops.push(proto::DropCount {
                    reason: reason.name().into(),
                    worker: worker_number,
                    packets: worker.drops_for(reason),
                });
            }
        }
        response
    }
}

/// Whether a refusal is for a limit (table sizes, change rate) rather than for being wrong.
trait OverLimit {
    fn over_limit(&self) -> bool;
}

impl OverLimit for FibError {
    fn over_limit(&self) -> bool {
        matches!(
            self,
            FibError::Neighbours { .. }
                | FibError::Lpm { .. }
                | FibError::TooManyNextHops { .. }
                | FibError::ReplacedTooOften { .. }
        )
    }
}

impl OverLimit for NeighbourError {
    fn over_limit(&self) -> bool {
        matches!(self, NeighbourError::TableFull(_))
    }
}

/// Why the slow path did not make a change, as a refusal.
fn change_error<E: std::fmt::Display + OverLimit>(
    error: ChangeError<E>,
    field: &str,
) -> ControlError {
    match error {
        ChangeError::Refused(reason) => {
            let violations = vec![FieldViolation {
                field: field.into(),
                reason: reason.to_string(),
            }];
            if reason.over_limit() {
                ControlError::OverLimit(violations)
            } else {
                ControlError::Invalid(violations)
            }
        }
        ChangeError::QueueFull => ControlError::Busy("the slow path's change queue is full".into()),
        ChangeError::TimedOut(after) => ControlError::TimedOut(format!(
            "the slow path did not take the change within {after:?}; nothing changed"
        )),
        ChangeError::SlowPathGone => ControlError::Busy("the router is stopping".into()),
    }
}

/// The request field a refused model bundle's error is about.
fn model_error_field(error: &ModelError) -> String {
    match error {
        ModelError::Onnx { model, .. }
        | ModelError::Shape { model, .. }
        | ModelError::Run { model, .. } => (*model).into(),
        ModelError::TestVector { index, .. } => format!("manifest.test_vectors[{index}]"),
        ModelError::Definition(_) | ModelError::UnknownBlock(_) => "manifest.features".into(),
        ModelError::Manifest(_) | ModelError::Read { .. } => "manifest".into(),
    }
}

/// A dynamic entry in words, for the audit log.
fn describe(host: IpAddr, action: &DynamicAction, ttl_millis: u64, reason: &str) -> String {
    let what = match action {
        DynamicAction::Quarantine => "quarantine".to_owned(),
        DynamicAction::RateLimit {
            packets_per_second,
            burst,
        } => format!("rate limit {packets_per_second} packets/s, burst {burst}"),
        DynamicAction::Mirror { session } => format!("mirror to {session}"),
    };
    format!("{what} {host} for {ttl_millis} ms: {reason}")
}
