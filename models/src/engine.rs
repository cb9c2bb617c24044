//! From scores to decisions, on the scorer thread: each flow's threat against its destination
//! segment's threshold, evidence per source over a window, and one action per source while the
//! previous one lasts. Also each source's persona mix. Pure: time is given, nothing is sent.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use ipnet::IpNet;
use vfn_flow::mapped_address;

use crate::bundle::{FlowScore, PERSONAS_MAX};
use crate::threat::{ThreatConfig, ThreatTerms};

/// Sources the engine follows at most, by default.
pub const SOURCES_MAX_DEFAULT: usize = 65_536;

/// What a decision does to its source, for the action's time to live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThreatAction {
    /// Copy the flow that tipped the decision, both directions, to a mirror session.
    MirrorFlow { session: String },
    /// Copy every packet from or to the source to a mirror session.
    MirrorSource { session: String },
    /// At most so many packets per second from the source (per worker), with a burst.
    RateLimit { packets_per_second: u64, burst: u64 },
    /// Drop every packet from or to the source.
    Isolate,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    pub threat: ThreatConfig,
    /// Flows of one source whose threat reaches the threshold within `window` before the engine
    /// acts (each flow counts once, whatever its snapshots): a single odd flow of a normal host
    /// does not, a scan's hundreds do.
    pub flows_to_act: u32,
    pub window: Duration,
    pub action: ThreatAction,
    pub action_ttl: Duration,
    pub sources_max: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threat: ThreatConfig::default(),
            flows_to_act: 5,
            window: Duration::from_secs(10),
            action: ThreatAction::Isolate,
            action_ttl: Duration::from_secs(300),
            sources_max: SOURCES_MAX_DEFAULT,
        }
    }
}

/// A flow as the engine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowContext {
    /// The initiator.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// A segment as scoring sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub name: String,
    pub criticality: u8,
    /// Its own threshold, instead of [`ThreatConfig::threshold`].
    pub threshold: Option<f64>,
}

/// The segments of the rule set in force by prefix: the segment of an address is that of the
/// longest prefix of any segment holding it.
#[derive(Clone, Debug, Default)]
pub struct SegmentImpact {
    /// Per prefix length (IPv4 counted as IPv4-mapped IPv6, length + 96), longest first: the
    /// masked prefixes of that length and their segments.
    by_length: Vec<(u8, HashMap<u128, usize>)>,
    segments: Vec<Segment>,
}

fn masked(address: u128, length: u8) -> u128 {
    match length {
        0 => 0,
        _ => address & (u128::MAX << (128 - u32::from(length))),
    }
}

impl SegmentImpact {
    pub fn new(segments: impl IntoIterator<Item = (Segment, Vec<IpNet>)>) -> SegmentImpact {
        let mut impact = SegmentImpact::default();
        for (segment, prefixes) in segments {
            let index = impact.segments.len();
            impact.segments.push(segment);
            for prefix in prefixes {
                let (address, length) = match prefix {
                    IpNet::V4(v4) => (IpAddr::V4(v4.network()), v4.prefix_len() + 96),
                    IpNet::V6(v6) => (IpAddr::V6(v6.network()), v6.prefix_len()),
                };
                let at = match impact.by_length.iter().position(|(l, _)| *l == length) {
                    Some(at) => at,
                    None => {
                        impact.by_length.push((length, HashMap::new()));
                        impact.by_length.len() - 1
                    }
                };
                let table = &mut impact.by_length[at].1;
                // Where two segments hold the same prefix, the more critical one counts.
                let entry = table
                    .entry(masked(mapped_address(address), length))
                    .or_insert(index);
                if impact.segments[index].criticality > impact.segments[*entry].criticality {
                    *entry = index;
                }
            }
        }
        impact
            .by_length
            .sort_by_key(|(length, _)| std::cmp::Reverse(*length));
        impact
    }

    pub fn segment_of(&self, address: IpAddr) -> Option<&Segment> {
        let address = mapped_address(address);
        self.by_length
            .iter()
            .find_map(|(length, table)| table.get(&masked(address, *length)))
            .map(|&index| &self.segments[index])
    }
}

/// A decision to act on a source.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub source: IpAddr,
    pub action: ThreatAction,
    pub ttl: Duration,
    /// The flow that tipped the decision, and its scores.
    pub flow: FlowContext,
    pub terms: ThreatTerms,
    pub threat: f64,
    pub threshold: f64,
    /// The flow's most probable persona.
    pub persona: usize,
    /// The destination's segment.
    pub segment: Option<String>,
    /// High-threat flows of the source in the window, this one included.
    pub evidence: u32,
}

/// What the engine knows of a source.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SourceView {
    /// The source's persona mix: the mean of its snapshots' persona probabilities, the last 32
    /// weighing most.
    pub personas: [f64; PERSONAS_MAX],
    /// Snapshots scored (a flow gives several: `ScoringFeed`).
    pub flows_scored: u64,
    pub last_threat: f64,
    /// High-threat flows in the window that started at `window_start`.
    evidence: u32,
    window_start: Duration,
    /// The last flows that counted as evidence, so that a flow's later snapshots (2N, 4N, its
    /// end) do not count again.
    evidence_flows: [u64; EVIDENCE_FLOWS],
    /// Where the next flow goes in `evidence_flows`.
    evidence_next: usize,
    /// Until when the last decision's action lasts.
    pub acting_until: Duration,
    last_seen: Duration,
}

/// Flows remembered per source to count each once: more than the snapshots one flow gives
/// while other flows of the source are scored in between, in practice.
const EVIDENCE_FLOWS: usize = 8;

impl SourceView {
    /// High-threat flows in the current window at `now`: 0 once the window has passed.
    pub fn evidence(&self, now: Duration, window: Duration) -> u32 {
        if now.saturating_sub(self.window_start) >= window {
            0
        } else {
            self.evidence
        }
    }
}

/// A flow's identity among its source's flows (its 5-tuple, hashed).
fn flow_id(flow: &FlowContext) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default()
        .hash_one((flow.dst, flow.sport, flow.dport, flow.proto))
        | 1
}

/// Flows after which a source's persona mix becomes a moving average.
const PERSONA_MEMORY: u64 = 32;

#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    segments: Arc<SegmentImpact>,
    sources: HashMap<IpAddr, SourceView>,
    /// When the full table was last swept of quiet sources (at most once a window).
    last_sweep: Option<Duration>,
    /// Flows whose source found the table full.
    pub sources_untracked: u64,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        let sources = HashMap::with_capacity(config.sources_max);
        Engine {
            config,
            segments: Arc::default(),
            sources,
            last_sweep: None,
            sources_untracked: 0,
        }
    }

    pub fn window(&self) -> Duration {
        self.config.window
    }

    /// Forgets every source's persona mix: the personas of another model are other clusters.
    pub fn reset_personas(&mut self) {
        for source in self.sources.values_mut() {
            source.personas = [0.0; PERSONAS_MAX];
            source.flows_scored = 0;
        }
    }

    /// A decision that could not be carried out: its source may be acted on again at once.
    pub fn undo_decision(&mut self, source: IpAddr) {
        if let Some(view) = self.sources.get_mut(&source) {
            view.acting_until = Duration::ZERO;
        }
    }

    /// The segments of a newly published rule set.
    pub fn set_segments(&mut self, segments: Arc<SegmentImpact>) {
        self.segments = segments;
    }

    pub fn sources(&self) -> impl Iterator<Item = (&IpAddr, &SourceView)> {
        self.sources.iter()
    }

    /// Takes in one flow's score at `now`; a decision when the flow's source is to be acted on.
    pub fn observe(
        &mut self,
        flow: &FlowContext,
        score: &FlowScore,
        personas: usize,
        now: Duration,
    ) -> Option<Decision> {
        let segment = self.segments.segment_of(flow.dst);
        let terms = ThreatTerms::of(score, segment.map_or(0, |s| s.criticality));
        let threat = terms.threat(&self.config.threat.weights);
        let threshold = segment
            .and_then(|s| s.threshold)
            .unwrap_or(self.config.threat.threshold);
        let segment = segment.map(|s| s.name.clone());
        let sweep_due = self
            .last_sweep
            .is_none_or(|last| now.saturating_sub(last) >= self.config.window);
        if !self.sources.contains_key(&flow.src)
            && self.sources.len() >= self.config.sources_max
            && sweep_due
        {
            self.last_sweep = Some(now);
            self.forget_quiet_sources(now);
        }
        if !self.sources.contains_key(&flow.src) && self.sources.len() >= self.config.sources_max {
            self.sources_untracked += 1;
            return None;
        }
        let source = self.sources.entry(flow.src).or_default();
        source.flows_scored += 1;
        let weight = 1.0 / source.flows_scored.min(PERSONA_MEMORY) as f64;
        for (mix, p) in source.personas[..personas]
            .iter_mut()
            .zip(&score.persona_probabilities[..personas])
        {
            *mix += weight * (p - *mix);
        }
        source.last_threat = threat;
        source.last_seen = now;
        if threat < threshold {
            return None;
        }
        if source.evidence(now, self.config.window) == 0 {
            source.window_start = now;
            source.evidence = 0;
            source.evidence_flows = [0; EVIDENCE_FLOWS];
        }
        let id = flow_id(flow);
        if source.evidence_flows.contains(&id) {
            return None;
        }
        source.evidence_flows[source.evidence_next] = id;
        source.evidence_next = (source.evidence_next + 1) % EVIDENCE_FLOWS;
        source.evidence += 1;
        if source.evidence < self.config.flows_to_act || now < source.acting_until {
            return None;
        }
        source.acting_until = now + self.config.action_ttl;
        Some(Decision {
            source: flow.src,
            action: self.config.action.clone(),
            ttl: self.config.action_ttl,
            flow: *flow,
            terms,
            threat,
            threshold,
            persona: score.persona(personas),
            segment,
            evidence: source.evidence,
        })
    }

    /// Forgets sources with nothing in a window and no action in force.
    fn forget_quiet_sources(&mut self, now: Duration) {
        let (window, ttl) = (self.config.window, self.config.action_ttl);
        self.sources.retain(|_, source| {
            now < source.acting_until || now.saturating_sub(source.last_seen) < window.max(ttl)
        });
    }
}
