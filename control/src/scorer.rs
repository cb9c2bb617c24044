//! Scoring as the router starts it (`docs/models.md`): the model bundle `[scoring]` names or the
//! one built in, and the threat engine's settings. The scorer's loop is `vfn_models::Scorer`.

use std::path::Path;
use std::time::Duration;

use crossbeam_channel::Sender;
use vfn_config::{Config, ScoringAction};
use vfn_models::{
    DecisionSink, EngineConfig, ModelBundle, ModelError, ThreatAction, ThreatConfig, ThreatWeights,
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
            ScoringAction::MirrorFlow { session } => ThreatAction::MirrorFlow {
                session: session.clone(),
            },
            ScoringAction::MirrorSource { session } => ThreatAction::MirrorSource {
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

/// Decisions go to the controller through the API's call queue, which it serves between calls:
/// the controller stays the single writer of dynamic entries.
pub fn decisions_to(calls: Sender<Call>) -> DecisionSink {
    Box::new(move |report| {
        let call: Call =
            Box::new(move |controller: &mut Controller| controller.act_on_threat(report));
        calls.try_send(call).is_ok()
    })
}
