//! Assembly: from interfaces and routes to a FIB, a neighbour table, a slow path and workers,
//! wired together with bounded channels. The same assembly serves the AF_XDP router, replay and
//! the in-memory tests and benchmarks.
//!
//! Routes and neighbours change while the router runs through the slow path, their single
//! writer ([`crate::change`]): `request_*` sends a change and returns at once, `wait` on the
//! result awaits the answer; `replace_routes` and the like do both.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::capture::CaptureHub;
use crate::change::{self, ChangeError, PendingChange, Reply};
use crate::fib::{Fib, FibError, FibLimits, FibPublisher, RoutesApplied, SharedFib, StaticRoute};
use crate::flow_snapshot::FlowSnapshots;
use crate::handoff::{FlowSteering, HandoffHub};
use crate::iface::{IfIndex, Interface, InterfaceError, Interfaces};
use crate::io::PacketIo;
use crate::mirror::{
    LinkStates, MIRROR_SESSIONS_MAX, MirrorCounters, MirrorDestination, MirrorSession, WorkerMirror,
};
use crate::neigh::{
    NeighbourChange, NeighbourError, NeighbourKey, NeighbourManager, NeighbourState,
    NeighbourTable, NeighbourTimers,
};
use crate::overlay::OverlayManager;
use crate::pipeline::Pipeline;
use crate::policy::{PolicyLimits, PolicyPublisher, PolicyState, RuleMatch};
use crate::slowpath::{
    CONTROL_CAPACITY, ControlRequest, OUTBOUND_CAPACITY, Outbound, SlowPath, TO_SLOW_PATH_CAPACITY,
    ToSlowPath,
};
use crate::telemetry::{FeatureSnapshot, FlowExportRecord};
use crate::worker::{SlowPathLink, Worker, WorkerConfig, WorkerPolicy};

/// Rule-match events waiting for the control side at most.
const RULE_MATCHES_CAPACITY: usize = 4_096;

/// Everything the router is made of, validated by the caller's config layer.
#[derive(Clone, Debug)]
pub struct RouterSpec {
    pub port_count: usize,
    pub interfaces: Vec<Interface>,
    pub routes: Vec<StaticRoute>,
    pub fib_limits: FibLimits,
    pub neighbour_capacity: usize,
    pub neighbour_timers: NeighbourTimers,
    pub worker: WorkerConfig,
    /// Per-worker policy state: flow table (with telemetry's statistics), rate-limit and
    /// fragment caches.
    pub policy: PolicyLimits,
    /// Dynamic entries at most.
    pub dynamic_entries: usize,
    /// Mirror sessions, at most [`MIRROR_SESSIONS_MAX`]; rules name them by index.
    pub mirror_sessions: Vec<MirrorSession>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("interfaces: {0}")]
    Interfaces(#[from] InterfaceError),
    #[error("routes: {0}")]
    Fib(#[from] FibError),
    #[error("flow table: {0}")]
    Flows(#[from] vfn_flow::NewTableError),
    #[error("mirror session {name}: {reason}")]
    MirrorSession { name: String, reason: String },
}

/// Why a replacement of the routes was not made.
pub type RouteChangeError = ChangeError<FibError>;
/// Why a change of a neighbour was not made.
pub type NeighbourChangeError = ChangeError<NeighbourError>;

/// A neighbour as listed for the control side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourListing {
    pub iface: IfIndex,
    pub iface_name: String,
    pub addr: IpAddr,
    /// Known for reachable and static neighbours.
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
}

/// The shared parts of a running router and the factory of its workers.
pub struct Router {
    pub interfaces: Arc<Interfaces>,
    pub fib: SharedFib,
    pub neighbours: Arc<NeighbourTable>,
    worker_config: WorkerConfig,
    policy_limits: PolicyLimits,
    /// Publishes rule sets to the workers; the control side's.
    pub policy: PolicyPublisher,
    /// Adds and expires dynamic entries; the control side's.
    pub overlay: OverlayManager,
    /// The clock origin of workers, slow path and control side.
    pub epoch: Instant,
    to_slow_path: Sender<ToSlowPath>,
    /// Changes of routes and neighbours for the slow path.
    control: Sender<ControlRequest>,
    outbound: Receiver<Outbound>,
    rule_matches: (Sender<RuleMatch>, Receiver<RuleMatch>),
    /// Records of flows from every worker, for the exporter.
    flow_exports: (Sender<FlowExportRecord>, Receiver<FlowExportRecord>),
    feature_snapshots: (Sender<FeatureSnapshot>, Receiver<FeatureSnapshot>),
    /// Workers built so far; the next one's number.
    worker_count: u16,
    capture: CaptureHub,
    flow_snapshots: FlowSnapshots,
    /// Hands packets to the workers that own their flows (several workers steered by handoff).
    handoff: Option<HandoffHub>,
    /// Where mirrored packets go, by index.
    pub mirror_sessions: Arc<[MirrorSession]>,
    /// Each worker's mirroring counters, by worker.
    mirror_counters: Vec<Arc<MirrorCounters>>,
    /// Whether each port's link is up (carrier), as the control side last saw it.
    pub link_states: LinkStates,
    slow_path: Option<SlowPath>,
}

impl Router {
    /// Builds the router; `on_change` hears of neighbour changes. Times count from `epoch`.
    pub fn build(
        spec: RouterSpec,
        epoch: Instant,
        on_change: Box<dyn FnMut(NeighbourChange) + Send>,
    ) -> Result<Router, RouterError> {
        if spec.mirror_sessions.len() > MIRROR_SESSIONS_MAX {
            return Err(RouterError::MirrorSession {
                name: String::new(),
                reason: format!("more than {MIRROR_SESSIONS_MAX} sessions"),
            });
        }
        for session in &spec.mirror_sessions {
            let refused = |reason: String| RouterError::MirrorSession {
                name: session.name.clone(),
                reason,
            };
            session.validate().map_err(|e| refused(e.to_string()))?;
            if let MirrorDestination::Port(port) = session.destination
                && usize::from(port) >= spec.port_count
            {
                return Err(refused(format!("no port {port}")));
            }
        }
        let interfaces = Arc::new(Interfaces::new(spec.port_count, spec.interfaces)?);
        let neighbours = NeighbourTable::new(spec.neighbour_capacity);
        let mut manager = NeighbourManager::new(neighbours.clone(), spec.neighbour_timers);
        let fib = Fib::build(
            &interfaces,
            &spec.routes,
            &mut manager,
            spec.fib_limits,
            epoch.elapsed(),
        )?;
        manager.publish();
        let (to_slow_path, inbox) = bounded(TO_SLOW_PATH_CAPACITY);
        let (control, control_inbox) = bounded(CONTROL_CAPACITY);
        let (outbox, outbound) = bounded(OUTBOUND_CAPACITY);
        let publisher = FibPublisher::new(fib, spec.fib_limits);
        let telemetry = spec.policy.telemetry;
        let flow_exports = bounded(if telemetry.enabled {
            telemetry.queue_capacity
        } else {
            0
        });
        let scoring = telemetry.scoring;
        let feature_snapshots = bounded(if telemetry.enabled && scoring.enabled {
            scoring.queue_capacity
        } else {
            0
        });
        let fib = publisher.shared();
        let handoff = (spec.policy.workers > 1
            && spec.worker.flow_steering == FlowSteering::Handoff)
            .then(|| HandoffHub::new(spec.policy.workers));
        let slow_path = SlowPath::new(
            interfaces.clone(),
            manager,
            publisher,
            inbox,
            control_inbox,
            outbox,
            epoch,
            on_change,
        );
        Ok(Router {
            interfaces,
            fib,
            neighbours,
            worker_config: spec.worker,
            policy_limits: spec.policy,
            policy: PolicyPublisher::new(),
            overlay: OverlayManager::new(
                spec.dynamic_entries,
                spec.mirror_sessions
                    .iter()
                    .map(|s| s.name.clone())
                    .collect(),
            ),
            epoch,
            to_slow_path,
            control,
            outbound,
            rule_matches: bounded(RULE_MATCHES_CAPACITY),
            flow_exports,
            feature_snapshots,
            worker_count: 0,
            capture: CaptureHub::new(spec.port_count, epoch),
            flow_snapshots: FlowSnapshots::new(spec.policy.flows),
            handoff,
            mirror_sessions: spec.mirror_sessions.into(),
            mirror_counters: Vec::new(),
            link_states: LinkStates::new(spec.port_count),
            slow_path: Some(slow_path),
        })
    }

    /// A worker over `io`, which must serve the router's ports in order.
    pub fn worker<P: PacketIo>(&mut self, io: P) -> Result<Worker<P>, RouterError> {
        let mut state = PolicyState::new(self.policy_limits)?
            .with_events(self.rule_matches.0.clone())
            .with_flow_exports(self.flow_exports.0.clone(), self.worker_count);
        let telemetry = self.policy_limits.telemetry;
        if telemetry.enabled && telemetry.scoring.enabled {
            state = state.with_feature_snapshots(
                self.feature_snapshots.0.clone(),
                telemetry.scoring.nth_packet,
            );
        }
        let policy = WorkerPolicy {
            shared: self.policy.shared(),
            seen: self.policy.register_worker(),
            overlay: self.overlay.shared(),
            state,
            snapshots: self.flow_snapshots.register_worker(),
        };
        let capture = self.capture.register_worker(io.frame_capacity());
        let mirror = WorkerMirror::new(
            self.mirror_sessions.clone(),
            self.link_states.clone(),
            io.frame_capacity(),
            u32::from(self.worker_count),
            self.policy_limits.workers as u32,
        );
        self.mirror_counters.push(mirror.counters());
        let handoff = self
            .handoff
            .as_ref()
            .and_then(|hub| hub.worker(usize::from(self.worker_count), io.frame_capacity()));
        self.worker_count = self.worker_count.saturating_add(1);
        Ok(Worker::new(
            io,
            Pipeline::new(
                self.interfaces.clone(),
                self.neighbours.clone(),
                self.worker_config.pipeline,
            ),
            self.fib.clone(),
            self.neighbours.clone(),
            self.worker_config,
            SlowPathLink {
                to_slow_path: self.to_slow_path.clone(),
                outbound: self.outbound.clone(),
            },
            policy,
            capture,
            handoff,
            mirror,
            self.epoch,
        ))
    }

    /// Mirroring counters of the workers built so far, by worker.
    pub fn mirror_counters(&self) -> &[Arc<MirrorCounters>] {
        &self.mirror_counters
    }

    /// Starts packet captures on the workers built so far (and stops them).
    pub fn capture_hub(&self) -> CaptureHub {
        self.capture.clone()
    }

    /// Takes copies of the flow tables of the workers built so far.
    pub fn flow_snapshots(&self) -> FlowSnapshots {
        self.flow_snapshots.clone()
    }

    /// Matches of rules that log, from every worker.
    pub fn rule_matches(&self) -> Receiver<RuleMatch> {
        self.rule_matches.1.clone()
    }

    /// The records of flows from every worker (`docs/flows.md`), for one exporter: a bounded
    /// queue that workers never wait for; what it cannot take is counted per worker in
    /// `PolicyCounters::flow_records_lost`. Nothing comes when telemetry is off.
    pub fn flow_exports(&self) -> Receiver<FlowExportRecord> {
        self.flow_exports.1.clone()
    }

    /// Snapshots of young flows from every worker (`ScoringFeed`), for the anomaly scorer: a
    /// bounded queue that workers never wait for; what it cannot take is counted per worker in
    /// `PolicyCounters::snapshots_lost`. Nothing comes unless scoring is on.
    pub fn feature_snapshots(&self) -> Receiver<FeatureSnapshot> {
        self.feature_snapshots.1.clone()
    }

    /// The slow path, to run on its own thread (or step by hand); there is one.
    pub fn take_slow_path(&mut self) -> Option<SlowPath> {
        self.slow_path.take()
    }

    /// Replaces every static route with `routes` and waits up to `timeout` for the slow path to
    /// take the change. Atomic: a refused list changes nothing, an accepted one is in force for
    /// every burst that starts after the answer.
    pub fn replace_routes(
        &self,
        routes: Vec<StaticRoute>,
        timeout: Duration,
    ) -> Result<RoutesApplied, RouteChangeError> {
        self.request_routes(routes)?.wait(timeout)
    }

    /// Sends a replacement of the static routes to the slow path without waiting.
    pub fn request_routes(
        &self,
        routes: Vec<StaticRoute>,
    ) -> Result<PendingChange<RoutesApplied, FibError>, RouteChangeError> {
        self.request(|reply| ControlRequest::ReplaceRoutes { routes, reply })
    }

    /// The static routes in force, in the order given, each with the interface it leaves by.
    /// (The interfaces' own routes are in `fib.load().interface_routes()`.)
    pub fn routes(&self) -> Vec<StaticRoute> {
        self.fib.load().static_routes().collect()
    }

    /// Every neighbour the workers see, by interface and address.
    pub fn neighbours(&self) -> Vec<NeighbourListing> {
        self.neighbours
            .entries()
            .into_iter()
            .map(|entry| NeighbourListing {
                iface: entry.key.iface,
                iface_name: self
                    .interfaces
                    .get(entry.key.iface)
                    .map_or_else(String::new, |iface| iface.name.clone()),
                addr: entry.key.addr,
                mac: entry.mac,
                state: entry.state,
            })
            .collect()
    }

    /// Makes `key` a static neighbour at `mac` (never solicited, aged or overridden) and waits
    /// up to `timeout` for the slow path to take the change.
    pub fn add_static_neighbour(
        &self,
        key: NeighbourKey,
        mac: [u8; 6],
        timeout: Duration,
    ) -> Result<(), NeighbourChangeError> {
        self.request_static_neighbour(key, mac)?.wait(timeout)
    }

    /// Sends a static neighbour to the slow path without waiting.
    pub fn request_static_neighbour(
        &self,
        key: NeighbourKey,
        mac: [u8; 6],
    ) -> Result<PendingChange<(), NeighbourError>, NeighbourChangeError> {
        self.request(|reply| ControlRequest::AddStaticNeighbour { key, mac, reply })
    }

    /// Forgets the neighbour `key`, static or learned, so that it is resolved again, and waits
    /// up to `timeout` for the slow path to take the change.
    pub fn delete_neighbour(
        &self,
        key: NeighbourKey,
        timeout: Duration,
    ) -> Result<(), NeighbourChangeError> {
        self.request_delete_neighbour(key)?.wait(timeout)
    }

    /// Sends the deletion of a neighbour to the slow path without waiting.
    pub fn request_delete_neighbour(
        &self,
        key: NeighbourKey,
    ) -> Result<PendingChange<(), NeighbourError>, NeighbourChangeError> {
        self.request(|reply| ControlRequest::DeleteNeighbour { key, reply })
    }

    fn request<T, E>(
        &self,
        make: impl FnOnce(Reply<T, E>) -> ControlRequest,
    ) -> Result<PendingChange<T, E>, ChangeError<E>> {
        let (reply, pending) = change::request();
        match self.control.try_send(make(reply)) {
            Ok(()) => Ok(pending),
            Err(TrySendError::Full(_)) => Err(ChangeError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(ChangeError::SlowPathGone),
        }
    }
}
