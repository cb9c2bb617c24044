//! The anomaly scorer's loop (`docs/models.md`), for a thread of its own, never a worker: it
//! takes the workers' feature snapshots from their bounded queue in batches, scores them with the
//! model bundle in force, and hands each decision of the threat engine to its caller (the
//! router's controller installs it as a dynamic entry). Workers only ever `try_send` to it. A
//! batch the models fail on is counted and its flows get no score; nothing here waits for
//! anyone but the queue.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use vfn_dataplane::counters::Counter;
use vfn_dataplane::telemetry::{EndReason, FeatureSnapshot, SnapshotTrigger};

use crate::bundle::{BATCH_MAX, ModelBundle, ScoreBuffers};
use crate::engine::{Decision, Engine, FlowContext, SegmentImpact};
use crate::features::{FEATURES_MAX, FeatureBlock};

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

/// The block a recording holds: the widest, so that any model can be trained from it.
const RECORDED_BLOCK: &str = "cic";

/// Appends every snapshot's raw features to a CSV file (`[scoring] record`), up to a number of
/// rows: training data recorded through the VFN's own extractor (`models/data/README.md`).
pub struct FeatureRecorder {
    out: BufWriter<File>,
    block: FeatureBlock,
    rows_left: u32,
    /// The router's epoch in milliseconds since the Unix epoch.
    epoch_unix_ms: f64,
    values: Vec<f64>,
}

impl FeatureRecorder {
    /// Opens `path` for appending; a new or empty file gets the header first.
    pub fn create(
        path: &Path,
        rows: u32,
        epoch_unix: std::time::SystemTime,
    ) -> Result<FeatureRecorder, String> {
        let block = FeatureBlock::named(RECORDED_BLOCK).map_err(|e| e.to_string())?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(true);
        let mut out = BufWriter::new(file);
        if empty {
            let names: Vec<&str> = block.features().map(|f| f.name()).collect();
            writeln!(
                out,
                "first_unix_ms,taken_unix_ms,src,dst,sport,dport,proto,trigger,{}",
                names.join(",")
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let epoch_unix_ms = epoch_unix
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64() * 1e3);
        Ok(FeatureRecorder {
            out,
            values: vec![0.0; block.len()],
            block,
            rows_left: rows,
            epoch_unix_ms,
        })
    }

    fn record(&mut self, snapshot: &FeatureSnapshot) -> std::io::Result<()> {
        if self.rows_left == 0 {
            return Ok(());
        }
        self.rows_left -= 1;
        let stats = &snapshot.stats;
        self.block
            .raw_values(stats, snapshot.proto, &mut self.values);
        let unix_ms = |ns: u64| self.epoch_unix_ms + ns as f64 / 1e6;
        write!(
            self.out,
            "{:.3},{:.3},{},{},{},{},{},{}",
            unix_ms(stats.first_ns()),
            unix_ms(stats.last_ns()),
            snapshot.src,
            snapshot.dst,
            snapshot.sport,
            snapshot.dport,
            snapshot.proto,
            trigger_name(snapshot.trigger)
        )?;
        for value in &self.values {
            write!(self.out, ",{value}")?;
        }
        writeln!(self.out)
    }
}

fn trigger_name(trigger: SnapshotTrigger) -> &'static str {
    match trigger {
        SnapshotTrigger::NthPacket => "nth_packet",
        SnapshotTrigger::Doubled => "doubled",
        SnapshotTrigger::RecordEnd(EndReason::IdleTimeout) => "end_idle_timeout",
        SnapshotTrigger::RecordEnd(EndReason::ActiveTimeout) => "end_active_timeout",
        SnapshotTrigger::RecordEnd(EndReason::EndOfFlow) => "end_of_flow",
        SnapshotTrigger::RecordEnd(EndReason::ForcedEnd) => "end_forced",
        SnapshotTrigger::RecordEnd(EndReason::LackOfResources) => "end_lack_of_resources",
    }
}

/// Where decisions go: true when taken, false when the receiver could not (counted as lost).
pub type DecisionSink = Box<dyn FnMut(ThreatReport) -> bool + Send>;

pub struct Scorer {
    snapshots: Receiver<FeatureSnapshot>,
    shared: ScoringShared,
    engine: Engine,
    on_decision: DecisionSink,
    batch: usize,
    epoch: Instant,
    recorder: Option<FeatureRecorder>,
}

impl Scorer {
    pub fn new(
        snapshots: Receiver<FeatureSnapshot>,
        shared: ScoringShared,
        engine: Engine,
        on_decision: DecisionSink,
        batch: usize,
        epoch: Instant,
    ) -> Scorer {
        Scorer {
            snapshots,
            shared,
            engine,
            on_decision,
            batch: batch.clamp(1, BATCH_MAX),
            epoch,
            recorder: None,
        }
    }

    /// Also records every snapshot's features.
    pub fn with_recorder(self, recorder: FeatureRecorder) -> Scorer {
        Scorer {
            recorder: Some(recorder),
            ..self
        }
    }

    /// Records a batch's snapshots; a write error stops the recording, logged once.
    fn record(&mut self, snapshots: &[FeatureSnapshot]) {
        let Some(recorder) = &mut self.recorder else {
            return;
        };
        let written = snapshots
            .iter()
            .try_for_each(|snapshot| recorder.record(snapshot))
            .and_then(|()| recorder.out.flush());
        if let Err(error) = written {
            tracing::error!(%error, "recording features failed; recording stops");
            self.recorder = None;
        }
    }

    pub fn run(mut self, stop: &AtomicBool) {
        let mut raw = Vec::with_capacity(self.batch * FEATURES_MAX);
        let mut flows = Vec::with_capacity(self.batch);
        let mut scores = Vec::with_capacity(self.batch);
        let mut buffers = ScoreBuffers::default();
        let mut batch = Vec::with_capacity(self.batch);
        let mut scoring_with = self.shared.models.load_full();
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
            if !Arc::ptr_eq(&models, &scoring_with) {
                // Another model's personas are other clusters: the mixes start again.
                self.engine.reset_personas();
                scoring_with = models.clone();
            }
            let block = models.block();
            raw.clear();
            flows.clear();
            batch.clear();
            batch.push(first);
            batch.extend(self.snapshots.try_iter().take(self.batch - 1));
            self.record(&batch);
            for snapshot in &batch {
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
                let source = decision.source;
                let report = ThreatReport {
                    model: models.name().to_owned(),
                    persona: models.persona_names()[decision.persona].clone(),
                    decision,
                };
                if (self.on_decision)(report) {
                    counters.decisions.add(1);
                } else {
                    // Not acted on: the source's next hostile flow may decide again.
                    self.engine.undo_decision(source);
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
                evidence: view.evidence(now, self.engine.window()),
                acting: now < view.acting_until,
            })
            .collect();
        sources.sort_by(|a, b| b.last_threat.total_cmp(&a.last_threat));
        sources.truncate(SOURCES_REPORTED_MAX);
        self.shared.sources.store(Arc::new(sources));
    }
}
