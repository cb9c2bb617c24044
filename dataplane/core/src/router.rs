//! Assembly: from interfaces and routes to a FIB, a neighbour table, a slow path and workers,
//! wired together with bounded channels. The same assembly serves the AF_XDP router, replay and
//! the in-memory tests and benchmarks.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::fib::{Fib, FibError, FibLimits, SharedFib, StaticRoute};
use crate::iface::{Interface, InterfaceError, Interfaces};
use crate::io::PacketIo;
use crate::neigh::{NeighbourChange, NeighbourManager, NeighbourTable, NeighbourTimers};
use crate::overlay::OverlayManager;
use crate::pipeline::Pipeline;
use crate::policy::{PolicyLimits, PolicyPublisher, PolicyState, RuleMatch};

/// Rule-match events waiting for the control side at most.
const RULE_MATCHES_CAPACITY: usize = 4_096;
use crate::slowpath::{OUTBOUND_CAPACITY, Outbound, SlowPath, TO_SLOW_PATH_CAPACITY, ToSlowPath};
use crate::worker::{SlowPathLink, Worker, WorkerConfig, WorkerPolicy};

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
    /// Per-worker policy state: flow table, rate-limit and fragment caches.
    pub policy: PolicyLimits,
    /// Dynamic entries at most.
    pub dynamic_entries: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("interfaces: {0}")]
    Interfaces(#[from] InterfaceError),
    #[error("routes: {0}")]
    Fib(#[from] FibError),
    #[error("flow table: {0}")]
    Flows(#[from] vfn_flow::NewTableError),
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
    outbound: Receiver<Outbound>,
    rule_matches: (Sender<RuleMatch>, Receiver<RuleMatch>),
    slow_path: Option<SlowPath>,
}

impl Router {
    /// Builds the router; `on_change` hears of neighbour changes. Times count from `epoch`.
    pub fn build(
        spec: RouterSpec,
        epoch: Instant,
        on_change: Box<dyn FnMut(NeighbourChange) + Send>,
    ) -> Result<Router, RouterError> {
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
        let (outbox, outbound) = bounded(OUTBOUND_CAPACITY);
        let fib: SharedFib = Arc::new(ArcSwap::from_pointee(fib));
        let slow_path = SlowPath::new(
            interfaces.clone(),
            manager,
            fib.clone(),
            inbox,
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
            overlay: OverlayManager::new(spec.dynamic_entries),
            epoch,
            to_slow_path,
            outbound,
            rule_matches: bounded(RULE_MATCHES_CAPACITY),
            slow_path: Some(slow_path),
        })
    }

    /// A worker over `io`, which must serve the router's ports in order.
    pub fn worker<P: PacketIo>(&mut self, io: P) -> Result<Worker<P>, RouterError> {
        let policy = WorkerPolicy {
            shared: self.policy.shared(),
            seen: self.policy.register_worker(),
            overlay: self.overlay.shared(),
            state: PolicyState::new(self.policy_limits)?.with_events(self.rule_matches.0.clone()),
        };
        Ok(Worker::new(
            io,
            Pipeline::new(self.interfaces.clone(), self.neighbours.clone()),
            self.fib.clone(),
            self.neighbours.clone(),
            self.worker_config,
            SlowPathLink {
                to_slow_path: self.to_slow_path.clone(),
                outbound: self.outbound.clone(),
            },
            policy,
            self.epoch,
        ))
    }

    /// Matches of rules that log, from every worker.
    pub fn rule_matches(&self) -> Receiver<RuleMatch> {
        self.rule_matches.1.clone()
    }

    /// The slow path, to run on its own thread (or step by hand); there is one.
    pub fn take_slow_path(&mut self) -> Option<SlowPath> {
        self.slow_path.take()
    }
}
