//! A compiled rule set: the rules in priority order and their classifiers, immutable, shared by
//! all workers through `arc-swap`.

use std::time::Duration;

use vfn_classify::{Classifier, Key};

use crate::model::{Action, DefaultAction};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRule {
    pub id: String,
    pub action: Action,
    pub log: bool,
    /// Matches on per-packet fields (TCP flags, ICMP type or code): never cached per flow.
    pub per_packet: bool,
    /// The index of the session a `mirror` action copies to.
    pub mirror_session: Option<u16>,
}

/// The answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The first matching rule (its priority, an index into [`RuleSet::rules`]), or `None` for
    /// the default action.
    pub rule: Option<u32>,
    /// Whether every packet of the flow gets the same answer, so the flow table may keep it: no
    /// rule on per-packet fields, of higher priority than the answer, matches the flow's tuple.
    pub cacheable: bool,
}

/// Two classifiers per family: all entries, and the flow-tuple part of the per-packet rules'.
pub struct RuleSet {
    pub version: String,
    pub default_action: DefaultAction,
    /// Whether a rule mirrors (a worker then keeps each received frame until it is judged).
    pub mirrors: bool,
    pub rules: Vec<CompiledRule>,
    pub(crate) v4: Classifier<u32>,
    pub(crate) v6: Classifier<u128>,
    /// The flow-tuple part of the per-packet rules' entries (see [`RuleSet::classify_v4`]).
    pub(crate) per_packet_v4: Classifier<u32>,
    pub(crate) per_packet_v6: Classifier<u128>,
    pub build_time: Duration,
    pub entry_count: usize,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .field("entries", &self.entry_count)
            .finish()
    }
}

impl RuleSet {
    /// The decision for an IPv4 packet (ICMP type in `sport`, code in `dport`).
    #[inline]
    pub fn classify_v4(&self, key: &Key<u32>) -> Decision {
        decide(self.v4.classify(key), || self.per_packet_v4.classify(key))
    }

    /// The decision for an IPv6 packet (ICMPv6 type in `sport`, code in `dport`).
    #[inline]
    pub fn classify_v6(&self, key: &Key<u128>) -> Decision {
        decide(self.v6.classify(key), || self.per_packet_v6.classify(key))
    }

    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes()
            + self.v6.memory_bytes()
            + self.per_packet_v4.memory_bytes()
            + self.per_packet_v6.memory_bytes()
    }
}

/// The per-packet classifier holds the per-packet rules with those fields widened to anything,
/// so any packet of a flow matches it exactly when the flow's tuple does.
#[inline]
fn decide(rule: Option<u32>, per_packet: impl FnOnce() -> Option<u32>) -> Decision {
    let cacheable = match per_packet() {
        None => true,
        Some(p) => rule.is_some_and(|r| r < p),
    };
    Decision { rule, cacheable }
}
