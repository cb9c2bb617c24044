//! The threat score of a flow: a weighted sum of three terms in 0..=1 (`docs/models.md`).

use crate::bundle::FlowScore;

/// The terms of a flow's threat score, each in 0..=1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThreatTerms {
    /// The autoencoder's calibrated anomaly ([`FlowScore::anomaly`]).
    pub anomaly: f64,
    /// The criticality of the destination's segment over the highest criticality (10); 0
    /// outside every segment.
    pub impact: f64,
    /// How much the two models agree that the flow is hostile: the smaller of the anomaly and
    /// the persona risk ([`FlowScore::persona_risk`]). High only when both say so.
    pub confidence: f64,
}

/// Segment criticality ranges over 0..=10 (the rules' model).
const CRITICALITY_MAX: f64 = 10.0;

impl ThreatTerms {
    pub fn of(score: &FlowScore, criticality: u8) -> ThreatTerms {
        ThreatTerms {
            anomaly: score.anomaly,
            impact: (f64::from(criticality) / CRITICALITY_MAX).min(1.0),
            confidence: score.anomaly.min(score.persona_risk),
        }
    }

    pub fn threat(&self, weights: &ThreatWeights) -> f64 {
        weights.anomaly * self.anomaly
            + weights.impact * self.impact
            + weights.confidence * self.confidence
    }
}

/// The weights of the threat score's terms: each at least 0, together 1, so the score stays in
/// 0..=1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThreatWeights {
    pub anomaly: f64,
    pub impact: f64,
    pub confidence: f64,
}

impl Default for ThreatWeights {
    fn default() -> Self {
        ThreatWeights {
            anomaly: 0.6,
            impact: 0.1,
            confidence: 0.3,
        }
    }
}

/// When a flow's threat score calls for an action.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreatConfig {
    pub weights: ThreatWeights,
    /// The threshold where the destination's segment has none of its own.
    pub threshold: f64,
}

impl Default for ThreatConfig {
    fn default() -> Self {
        ThreatConfig {
            weights: ThreatWeights::default(),
            threshold: 0.8,
        }
    }
}
