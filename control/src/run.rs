//! `vfn run`: the router on AF_XDP ports. One pinned worker thread per configured core, the slow
//! path on its own thread, counters written to the stats file; SIGINT or SIGTERM stop everything
//! and the XDP programs are detached as the workers' ports close.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vfn_config::Config;
use vfn_dataplane::iface::Interface;
use vfn_dataplane::io::PacketIo;
use vfn_dataplane::neigh::NeighbourChange;
use vfn_dataplane::policy::{ActivePolicy, RuleMatch};
use vfn_dataplane::router::{Router, RouterError};
use vfn_dataplane::wire;
use vfn_models::{Engine, FeatureRecorder, Scorer, ScoringShared};
use vfn_xdp::{XdpError, XdpIo};

use crate::controller::{Call, Controller, Scoring};
use crate::endpoint::MetricsEndpoint;
use crate::events::{DropReports, Events};
use crate::exporter::{FlowExporter, WATCH_CAPACITY};
use crate::server::{ApiServer, CALL_QUEUE_CAPACITY, DataplaneView};
use crate::spec::{self, PlanError};
use crate::stats::{self, Metrics, Sources};
use vfn_control::proto::{self, event::Kind};

pub struct RunOptions {
    /// The config file, for the policy file's relative path and for reloading on SIGHUP.
    pub config_path: PathBuf,
    /// Where to write counters (Prometheus text), refreshed every `stats_interval` and at exit.
    pub stats_file: Option<PathBuf>,
    /// Created once every port is attached and every worker runs.
    pub ready_file: Option<PathBuf>,
    pub stats_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("scoring.models: {0}")]
    Models(vfn_models::ModelError),
    #[error("scoring.record: {0}")]
    Record(String),
    #[error("worker {worker} (core {core}): {source}")]
    Xdp {
        worker: usize,
        core: usize,
        source: XdpError,
    },
    #[error(
        "workers.cores: core {core} is not available to this process (available: {available:?})"
    )]
    Core { core: usize, available: Vec<usize> },
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "interface {interface}: MTU {mtu} needs {needed}-byte frames, but a frame holds {capacity} bytes (raise dataplane.frame_size or lower the MTU)"
    )]
    MtuTooLarge {
        interface: String,
        mtu: u16,
        needed: usize,
        capacity: usize,
    },
    #[error("thread {0} ended unexpectedly; stopping")]
    ThreadEnded(String),
    #[error("ports[{index}].mtu: {mtu} is above the MTU {device_mtu} of interface {interface}")]
    MtuAboveDevice {
        index: usize,
        interface: String,
        mtu: u16,
        device_mtu: u32,
    },
    #[error("ports[{index}].interface: {source}")]
    Interface { index: usize, source: XdpError },
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Start(#[from] crate::controller::StartError),
    #[error(transparent)]
    Api(#[from] crate::server::ServeError),
    #[error(transparent)]
    Metrics(#[from] crate::endpoint::EndpointError),
    #[error(transparent)]
    Exporter(#[from] crate::exporter::ExporterError),
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
}

/// Logs a neighbour change and tells the API's watchers.
fn report_neighbour_change(events: &Events, change: NeighbourChange) {
    let (key, change, mac) = match change {
        NeighbourChange::Resolved { key, mac } => {
            let mac = crate::routes::mac_text(mac);
            tracing::info!(interface = key.iface, address = %key.addr, %mac, "neighbour resolved");
            (key, "resolved", mac)
        }
        NeighbourChange::Failed { key } => {
            tracing::warn!(interface = key.iface, address = %key.addr, "neighbour failed");
            (key, "failed", String::new())
        }
        NeighbourChange::Removed { key } => {
            tracing::debug!(interface = key.iface, address = %key.addr, "neighbour removed");
            (key, "removed", String::new())
        }
    };
    events.emit(Kind::NeighbourChanged(proto::NeighbourChanged {
        interface: key.iface.into(),
        address: key.addr.to_string(),
        change: change.into(),
        mac,
    }));
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), RunError> {
    stats::write_atomically(path, text).map_err(|source| RunError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Every interface's largest frame (MTU plus its Ethernet header) must fit one frame buffer.
fn check_mtus(interfaces: &[Interface], capacity: usize) -> Result<(), RunError> {
    for iface in interfaces {
        let needed = usize::from(iface.mtu) + wire::ethernet_header_len(iface.vlan);
        if needed > capacity {
            return Err(RunError::MtuTooLarge {
                interface: iface.name.clone(),
                mtu: iface.mtu,
                needed,
                capacity,
            });
        }
    }
    Ok(())
}

pub fn run(config: &Config, options: &RunOptions) -> Result<(), RunError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once; XDP programs left then are replaced at
        // the next start.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .map_err(RunError::Signal)?;
        signal_hook::flag::register(signal, stop.clone()).map_err(RunError::Signal)?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(RunError::Signal)?;
    let mut plan = spec::plan(config, |name| {
        vfn_xdp::interface_mac(name).map_err(|e| e.to_string())
    })?;
    // What the API changed last time wins over the config, before any port is attached.
    let persisted = crate::controller::load_state(config)?;
    if let Some(routes) = crate::controller::persisted_routes(persisted.as_ref(), |name| {
        plan.router
            .interfaces
            .iter()
            .position(|iface| iface.name == name)
            .and_then(|index| u16::try_from(index).ok())
    })? {
        tracing::info!(routes = routes.len(), "persisted routes in force");
        plan.router.routes = routes;
    }
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    for &(core, _) in &plan.workers {
        if !available.contains(&core) {
            return Err(RunError::Core { core, available });
        }
    }

    for (index, port) in config.ports.iter().enumerate() {
        let device_mtu = vfn_xdp::interface_mtu(&port.interface)
            .map_err(|source| RunError::Interface { index, source })?;
        if u32::from(port.mtu) > device_mtu {
            return Err(RunError::MtuAboveDevice {
                index,
                interface: port.interface.clone(),
                mtu: port.mtu,
                device_mtu,
            });
        }
    }

    // The models are validated before anything starts, like the ports.
    let models = config
        .scoring
        .enabled
        .then(|| crate::scorer::load_models(config, &options.config_path))
        .transpose()
        .map_err(RunError::Models)?;

    let epoch = Instant::now();
    let events = Events::new();
    let neighbour_events = events.clone();
    let router = Router::build(
        plan.router.clone(),
        epoch,
        Box::new(move |change| report_neighbour_change(&neighbour_events, change)),
    )?;
    // The rule set is in force before the first packet is received.
    let apply_duration = stats::apply_duration_histogram();
    let mut controller = Controller::start(
        router,
        config,
        &options.config_path,
        persisted,
        events.clone(),
        apply_duration.clone(),
    )?;
    let (calls, call_queue) = crossbeam_channel::bounded(CALL_QUEUE_CAPACITY);
    let scorer = models.map(|models| {
        let shared = ScoringShared::new(models);
        controller.start_scoring(Scoring {
            shared: shared.clone(),
            segment_thresholds: config.scoring.segment_thresholds.clone(),
        });
        tracing::info!(models = %shared.models.load().name(), "scoring on");
        Scorer::new(
            controller.router.feature_snapshots(),
            shared,
            Engine::new(crate::scorer::engine_config(config)),
            crate::scorer::decisions_to(calls.clone()),
            config.scoring.batch as usize,
            epoch,
        )
    });
    let scorer = match (scorer, &config.scoring.record) {
        (Some(scorer), Some(path)) => {
            let base = options.config_path.parent().unwrap_or(Path::new("."));
            let recorder = FeatureRecorder::create(
                &base.join(path),
                config.scoring.record_rows,
                std::time::SystemTime::now() - epoch.elapsed(),
            )
            .map_err(RunError::Record)?;
            Some(scorer.with_recorder(recorder))
        }
        (scorer, _) => scorer,
    };
    let epoch_unix = std::time::SystemTime::now() - epoch.elapsed();
    let (flow_watchers, _) = tokio::sync::broadcast::channel(WATCH_CAPACITY);
    let exporter = FlowExporter::new(
        controller.router.flow_exports(),
        &config.telemetry.collectors,
        flow_watchers.clone(),
        controller.router.policy.shared(),
        controller.router.interfaces.clone(),
        epoch_unix,
    )?;
    let dataplane = DataplaneView {
        flows: controller.router.flow_snapshots(),
        capture: controller.router.capture_hub(),
        policy: controller.router.policy.shared(),
        interfaces: controller.router.interfaces.clone(),
        port_names: plan.port_names.clone(),
        epoch_unix,
        flow_watchers,
    };
    let api = ApiServer::bind(&config.api, calls, events, dataplane)?;
    let endpoint = MetricsEndpoint::bind(&config.metrics)?;
    // Ports are opened before any thread starts, so a failure leaves nothing running.
    let mut workers = Vec::with_capacity(plan.workers.len());
    for (index, (core, ports)) in plan.workers.iter().enumerate() {
        let io = XdpIo::open(ports, &plan.xdp).map_err(|source| RunError::Xdp {
            worker: index,
            core: *core,
            source,
        })?;
        for mode in io.port_modes() {
            tracing::info!(worker = index, ?mode, "port attached");
        }
        check_mtus(&plan.router.interfaces, io.frame_capacity())?;
        workers.push((*core, controller.router.worker(io)?));
    }
    let mut slow_path = controller
        .router
        .take_slow_path()
        .expect("Router::build makes exactly one slow path");
    controller.sources = Sources {
        port_names: plan.port_names.clone(),
        workers: workers.iter().map(|(_, w)| w.counters()).collect(),
        rules: workers.iter().map(|(_, w)| w.policy_counters()).collect(),
        slow_path: slow_path.counters(),
        mirror_sessions: controller
            .router
            .mirror_sessions
            .iter()
            .map(|session| session.name.clone())
            .collect(),
        mirrors: controller.router.mirror_counters().to_vec(),
        scorer: controller
            .scoring
            .as_ref()
            .map(|scoring| scoring.shared.counters.clone()),
    };
    let metrics = Arc::new(Metrics::new(
        controller.sources.clone(),
        controller.router.policy.shared(),
        apply_duration,
    ));

    let mut threads: Vec<(String, JoinHandle<()>)> = Vec::new();
    let mut spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(body)
            .map(|handle| threads.push((name, handle)))
            .map_err(RunError::Thread)
    };
    let mut spawned = Ok(());
    for (index, (core, mut worker)) in workers.into_iter().enumerate() {
        let stop = stop.clone();
        spawned = spawn(
            format!("vfn-worker-{index}"),
            Box::new(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    tracing::warn!(worker = index, core, "could not pin the worker");
                }
                tracing::info!(worker = index, core, "worker running");
                worker.run(&stop);
                // Dropping the worker closes its sockets and detaches the XDP programs.
            }),
        );
        if spawned.is_err() {
            break;
        }
    }
    if spawned.is_ok() {
        let stop = stop.clone();
        spawned = spawn(
            "vfn-slow-path".into(),
            Box::new(move || slow_path.run(&stop)),
        );
    }
    if spawned.is_ok() {
        let stop = stop.clone();
        spawned = spawn("vfn-exporter".into(), Box::new(move || exporter.run(&stop)));
    }
    if let (true, Some(scorer)) = (spawned.is_ok(), scorer) {
        let stop = stop.clone();
        // The configured core, else the first one no worker polls: never a worker's.
        let core = config.scoring.core.or_else(|| {
            available
                .iter()
                .copied()
                .find(|core| plan.workers.iter().all(|(worker, _)| worker != core))
        });
        spawned = spawn(
            "vfn-scorer".into(),
            Box::new(move || {
                match core {
                    Some(core)
                        if core_affinity::set_for_current(core_affinity::CoreId { id: core }) =>
                    {
                        tracing::info!(core, "scorer running");
                    }
                    _ => tracing::warn!(?core, "the scorer runs unpinned: no core of its own"),
                }
                scorer.run(&stop)
            }),
        );
    }
    if spawned.is_ok() {
        let stop = stop.clone();
        let metrics = endpoint.map(|endpoint| (endpoint, metrics.clone()));
        spawned = spawn(
            "vfn-api".into(),
            Box::new(move || {
                if let Err(error) = api.run(stop, metrics) {
                    tracing::error!(%error, "the API server failed");
                }
            }),
        );
    }
    let outcome = spawned.and_then(|()| {
        supervise(
            &stop,
            &reload,
            &threads,
            options,
            &mut controller,
            &call_queue,
            &metrics,
        )
    });

    // Every way out stops and joins every thread, so every port is closed and detached.
    stop.store(true, Ordering::Relaxed);
    tracing::info!("stopping");
    for (name, thread) in threads {
        if thread.join().is_err() {
            tracing::error!(thread = name, "panicked");
        }
    }
    if let Some(path) = &options.stats_file
        && let Err(error) = stats::write_atomically(path, &metrics.render())
    {
        tracing::warn!(path = %path.display(), %error, "writing the final counters");
    }
    if let Some(path) = &options.ready_file {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

/// Runs until a signal sets `stop` or a thread ends on its own (a panic): writes the ready file,
/// then the counters every `stats_interval`. A failed counter write is logged, not fatal.
/// Matches of rules that log, as log lines (at most a bounded number per call: the queue is
/// bounded too, and what it drops is counted).
fn log_rule_matches(
    matches: &crossbeam_channel::Receiver<RuleMatch>,
    policy: Option<&ActivePolicy>,
) {
    const PER_CALL: usize = 256;
    for event in matches.try_iter().take(PER_CALL) {
        let rule = policy
            .filter(|p| p.generation == event.generation)
            .and_then(|p| p.rules.rules.get(event.rule as usize))
            .map_or("(a replaced rule set)", |r| r.id.as_str());
        tracing::info!(
            rule,
            src = %event.src,
            dst = %event.dst,
            proto = event.proto,
            sport = event.sport,
            dport = event.dport,
            ingress = event.ingress,
            "rule matched"
        );
    }
}

/// Calls answered per turn of the supervisor loop, so that counters and expiry keep their pace.
const CALLS_PER_TURN: usize = 16;

/// Watches the ports' carrier (`/sys/class/net/IFACE/carrier`, 1 when the link is up) and
/// publishes it to the workers, which send no mirror copy to a port without it.
struct LinkWatch {
    interfaces: Vec<String>,
    up: Vec<bool>,
    next: Instant,
}

/// How often the carrier is read.
const LINK_WATCH_INTERVAL: Duration = Duration::from_millis(100);

impl LinkWatch {
    fn new(interfaces: &[String]) -> LinkWatch {
        LinkWatch {
            interfaces: interfaces.to_vec(),
            up: vec![true; interfaces.len()],
            next: Instant::now(),
        }
    }

    fn step(&mut self, states: &vfn_dataplane::mirror::LinkStates) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + LINK_WATCH_INTERVAL;
        for (port, (interface, up)) in self.interfaces.iter().zip(&mut self.up).enumerate() {
            // An interface set down has no readable carrier: down too.
            let carrier = std::fs::read_to_string(format!("/sys/class/net/{interface}/carrier"))
                .is_ok_and(|text| text.trim() == "1");
            if carrier != *up {
                *up = carrier;
                tracing::info!(interface, up = carrier, "port link changed");
                // At most 64 ports.
                states.set(port as u16, carrier);
            }
        }
    }
}

fn supervise(
    stop: &AtomicBool,
    reload: &AtomicBool,
    threads: &[(String, JoinHandle<()>)],
    options: &RunOptions,
    controller: &mut Controller,
    calls: &crossbeam_channel::Receiver<Call>,
    metrics: &Metrics,
) -> Result<(), RunError> {
    // Logged before the ready file exists, so that whoever waits for the file finds the line.
    tracing::info!(ports = ?controller.sources.port_names, workers = controller.sources.workers.len(), "vfn running");
    if let Some(path) = &options.ready_file {
        write_file(path, "ready\n")?;
    }
    let matches = controller.router.rule_matches();
    let mut drop_reports = DropReports::new();
    let mut links = LinkWatch::new(&controller.port_interfaces);
    let mut stats_failing = false;
    let mut next_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some((name, _)) = threads.iter().find(|(_, handle)| handle.is_finished()) {
            return Err(RunError::ThreadEnded(name.clone()));
        }
        if reload.swap(false, Ordering::Relaxed) {
            controller.reload(&options.config_path);
        }
        controller.router.policy.collect();
        log_rule_matches(&matches, controller.router.policy.current().as_deref());
        controller.expire();
        drop_reports.report(&controller.sources, &controller.events);
        links.step(&controller.router.link_states);
        if Instant::now() >= next_stats {
            next_stats = Instant::now() + options.stats_interval;
            if let Some(path) = &options.stats_file {
                match stats::write_atomically(path, &metrics.render()) {
                    Ok(()) => stats_failing = false,
                    Err(error) if !stats_failing => {
                        stats_failing = true;
                        tracing::warn!(path = %path.display(), %error, "writing the counters");
                    }
                    Err(_) => {}
                }
            }
        }
        // Waiting for a call is the loop's pause: a call is answered as soon as it arrives.
        if let Ok(call) = calls.recv_timeout(Duration::from_millis(20)) {
            call(controller);
            for call in calls.try_iter().take(CALLS_PER_TURN - 1) {
                call(controller);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfn_dataplane::iface::RpFilter;

    fn iface(mtu: u16, vlan: Option<u16>) -> Interface {
        Interface {
            name: "p0.7".into(),
            port: 0,
            vlan,
            mac: [2, 0, 0, 0, 0, 1],
            mtu,
            rp_filter: RpFilter::Strict,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
        }
    }

    #[test]
    fn an_mtu_whose_frames_do_not_fit_is_refused_naming_the_interface() {
        assert!(check_mtus(&[iface(3822, Some(7))], 3840).is_ok());
        let err = check_mtus(&[iface(3823, Some(7))], 3840).expect_err("3841-byte frames");
        assert!(
            err.to_string()
                .starts_with("interface p0.7: MTU 3823 needs 3841-byte frames"),
            "{err}"
        );
    }
}
