//! The anomaly scorer's thread (`docs/models.md`): it takes the workers' feature snapshots from
//! their bounded queue in batches, scores them with the model bundle in force, and hands each
//! decision of the threat engine to the controller, which installs the action as a dynamic
//! entry. Never a worker: workers only ever `try_send` to it. A batch the models fail on is
//! counted and its flows get no score; nothing here waits for anyone but the queue.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use vfn_config::{Config, ScoringAction};
use vfn_dataplane::counters::Counter;
use vfn_dataplane::telemetry::FeatureSnapshot;
use vfn_models::{
    BATCH_MAX, Decision, Engine, EngineConfig, FEATURES_MAX, FlowContext, ModelBundle, ModelError,
    ScoreBuffers, SegmentImpact, ThreatAction, ThreatConfig, ThreatWeights,
};

use crate::controller::{Call, Controller};

/// The bundle built into the router: the one `models/train` trained on the shared datasets.
const BUILT_IN_BUNDLE: [&[u8]; 3] = [
    include_bytes!("../../models/trained/datasets-base/manifest.json"),
    include_bytes!("../../models/trained/datasets-base/autoencoder.onnx"),
    include_bytes!("../../models/trained/datasets-base/personas.onnx"),
];

/// The models `[scoring] models` names (relative to the config file), or the built-in bundle.
pub fn load_models(config: &Config, config_path: &Path) -> Result<ModelBundle, ModelError> {
    match &config.scoring.models {
        Some(dir) => {
            let base = config_path.parent().unwrap_or(Path::new("."));
            ModelBundle::load_dir(&base.join(dir))
        }
        None => {
            let [manifest, autoencoder, personas] = BUILT_IN_BUNDLE;
            ModelBundle::from_bytes(manifest, autoencoder, personas)
        }
    }
}

/// The threat engine's settings from `[scoring]`.
pub fn engine_config(config: &Config) -> EngineConfig {
    let scoring = &config.scoring;
    EngineConfig {
        threat: ThreatConfig {
            weights: ThreatWeights {
                anomaly: scoring.weights.anomaly,
                impact: scoring.weights.impact,
                confidence: scoring.weights.confidence,
            },
            threshold: scoring.threshold,
        },
        flows_to_act: scoring.flows_to_act,
        window: Duration::from_millis(scoring.window_ms.into()),
        action: match &scoring.action {
            ScoringAction::Isolate => ThreatAction::Isolate,
            ScoringAction::Mirror { session } => ThreatAction::Mirror {
                session: session.clone(),
            },
            ScoringAction::RateLimit {
                packets_per_second,
                burst,
            } => ThreatAction::RateLimit {
                packets_per_second: *packets_per_second,
                burst: *burst,
            },
        },
        action_ttl: Duration::from_millis(scoring.action_ttl_ms.into()),
        sources_max: scoring.sources as usize,
    }
}

/// What the scorer shares with the controller and the API.
#[derive(Clone)]
pub struct ScoringShared {
    /// The bundle in force; `LoadModels` swaps it whole.
    pub models: Arc<ArcSwap<ModelBundle>>,
    /// The segments of the rule set in force, published by the controller with each rule set.
    pub segments: Arc<ArcSwap<SegmentImpact>>,
    pub counters: Arc<ScorerCounters>,
    /// The sources followed, refreshed about once a second, for `GetScoring`.
    pub sources: Arc<ArcSwap<Vec<SourceReport>>>,
}

impl ScoringShared {
    pub fn new(models: ModelBundle) -> ScoringShared {
        ScoringShared {
            models: Arc::new(ArcSwap::from_pointee(models)),
            segments: Arc::default(),
            counters: Arc::default(),
            sources: Arc::default(),
        }
    }
}

/// The scorer's counters (one writer: the scorer thread).
#[derive(Debug, Default)]
pub struct ScorerCounters {
    pub flows_scored: Counter,
    pub batches: Counter,
    /// Batches the models failed to score.
    pub failures: Counter,
    pub decisions: Counter,
    /// Decisions the controller's queue could not take.
    pub decisions_lost: Counter,
    /// Flows whose source found the engine's table full.
    pub sources_untracked: Counter,
}

/// A source as `GetScoring` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceReport {
    pub address: IpAddr,
    pub personas: Vec<f64>,
    pub flows_scored: u64,
    pub last_threat: f64,
    pub evidence: u32,
    pub acting: bool,
}

/// Sources `GetScoring` reports at most.
pub const SOURCES_REPORTED_MAX: usize = 256;
const SOURCES_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the scorer waits for a first snapshot before it looks at `stop` again.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// A decision on its way to the controller, with the names it needs for the log and events.
pub struct ThreatReport {
    pub decision: Decision,
    pub model: String,
    pub persona: String,
}

pub struct Scorer {
    snapshots: Receiver<FeatureSnapshot>,
    shared: ScoringShared,
    engine: Engine,
    calls: Sender<Call>,
    batch: usize,
    epoch: Instant,
}

impl Scorer {
    pub fn new(
        snapshots: Receiver<FeatureSnapshot>,
        shared: ScoringShared,
        engine: Engine,
        calls: Sender<Call>,
        batch: usize,
        epoch: Instant,
    ) -> Scorer {
        Scorer {
            snapshots,
            shared,
            engine,
            calls,
            batch: batch.clamp(1, BATCH_MAX),
            epoch,
        }
    }

    pub fn run(mut self, stop: &AtomicBool) {
        let mut raw = Vec::with_capacity(self.batch * FEATURES_MAX);
        let mut flows = Vec::with_capacity(self.batch);
        let mut scores = Vec::with_capacity(self.batch);
        let mut buffers = ScoreBuffers::default();
        let mut segments = self.shared.segments.load_full();
        self.engine.set_segments(segments.clone());
        let mut next_report = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_report {
                next_report = Instant::now() + SOURCES_REPORT_INTERVAL;
                self.report_sources();
            }
            let Ok(first) = self.snapshots.recv_timeout(IDLE_WAIT) else {
                continue;
            };
            let latest = self.shared.segments.load_full();
            if !Arc::ptr_eq(&latest, &segments) {
                segments = latest;
                self.engine.set_segments(segments.clone());
            }
            let models = self.shared.models.load_full();
            let block = models.block();
            raw.clear();
            flows.clear();
            for snapshot in
                std::iter::once(first).chain(self.snapshots.try_iter().take(self.batch - 1))
            {
                let start = raw.len();
                raw.resize(start + block.len(), 0.0);
                block.raw_values(&snapshot.stats, snapshot.proto, &mut raw[start..]);
                flows.push(FlowContext {
                    src: snapshot.src,
                    dst: snapshot.dst,
                    sport: snapshot.sport,
                    dport: snapshot.dport,
                    proto: snapshot.proto,
                });
            }
            let counters = &self.shared.counters;
            counters.batches.add(1);
            if let Err(error) = models.score(&raw, &mut buffers, &mut scores) {
                counters.failures.add(1);
                tracing::warn!(%error, flows = flows.len(), "the models could not score a batch");
                continue;
            }
            counters.flows_scored.add(flows.len() as u64);
            let now = self.epoch.elapsed();
            let personas = models.persona_names().len();
            for (flow, score) in flows.iter().zip(&scores) {
                let untracked = self.engine.sources_untracked;
                let decision = self.engine.observe(flow, score, personas, now);
                counters
                    .sources_untracked
                    .add(self.engine.sources_untracked - untracked);
                let Some(decision) = decision else {
                    continue;
                };
                let report = ThreatReport {
                    model: models.name().to_owned(),
                    persona: models.persona_names()[decision.persona].clone(),
                    decision,
                };
                let call: Call =
                    Box::new(move |controller: &mut Controller| controller.act_on_threat(report));
                if self.calls.try_send(call).is_ok() {
                    counters.decisions.add(1);
                } else {
                    counters.decisions_lost.add(1);
                }
            }
        }
    }

    fn report_sources(&self) {
        let now = self.epoch.elapsed();
        let personas = self.shared.models.load().persona_names().len();
        let mut sources: Vec<SourceReport> = self
            .engine
            .sources()
            .map(|(address, view)| SourceReport {
                address: *address,
                personas: view.personas[..personas].to_vec(),
                flows_scored: view.flows_scored,
                last_threat: view.last_threat,
                evidence: view.evidence,
                acting: now < view.acting_until,
            })
            .collect();
        sources.sort_by(|a, b| b.last_threat.total_cmp(&a.last_threat));
        sources.truncate(SOURCES_REPORTED_MAX);
        self.shared.sources.store(Arc::new(sources));
    }
}
