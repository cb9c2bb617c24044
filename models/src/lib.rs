//! The VFN's anomaly models: the feature vectors of `models/features.json`, a bundle of ONNX
//! models (an autoencoder and behavioural clusters) run with tract, threat scores, the decisions
//! they lead to, and the scorer's loop that feeds them from the workers' snapshots. No network
//! I/O: files are read for bundles and written for recordings only. `docs/models.md` explains
//! it all.

mod bundle;
mod engine;
mod features;
mod scorer;
mod threat;

pub use bundle::{
    BATCH_MAX, FlowScore, ModelBundle, PERSONAS_MAX, ScoreBuffers, TestVectorMismatch,
    manifest_files,
};
pub use engine::{
    Decision, Engine, EngineConfig, FlowContext, SOURCES_MAX_DEFAULT, Segment, SegmentImpact,
    SourceView, ThreatAction,
};
pub use features::{FEATURES_MAX, Feature, FeatureBlock, Transform};
pub use scorer::{
    DecisionSink, FeatureRecorder, SOURCES_REPORTED_MAX, Scorer, ScorerCounters, ScoringShared,
    SourceReport, ThreatReport,
};
pub use threat::{ThreatConfig, ThreatTerms, ThreatWeights};

/// Why a model bundle, or the definition of its features, is refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the feature definition is invalid: {0}")]
    Definition(String),
    #[error("no feature block is called {0:?}")]
    UnknownBlock(String),
    #[error("manifest.json: {0}")]
    Manifest(String),
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    #[error("{model}: the ONNX model cannot be loaded: {reason}")]
    Onnx { model: &'static str, reason: String },
    #[error("{model}: {what} has shape {found}, the bundle needs {expected}")]
    Shape {
        model: &'static str,
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("{model}: running the model failed: {reason}")]
    Run { model: &'static str, reason: String },
    #[error("test vector {index}: {mismatch}")]
    TestVector {
        index: usize,
        mismatch: TestVectorMismatch,
    },
}
