//! The segmentation policy on the worker: the published rule set, the dynamic overlay, and the
//! per-worker state that makes rules stateful (flow table), enforces `rate_limit`, remembers the
//! verdicts of first fragments, and counts per rule. The same flow table holds each flow's
//! statistics for telemetry ([`crate::telemetry`]), with a rule set or without one.
//!
//! Rule sets are published whole with `arc-swap`; a worker loads once per burst and records the
//! generation it uses. The publisher keeps every replaced set until every worker has moved past
//! it, so the last reference is always dropped on the control side, never on a worker.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use vfn_flow::{
    Direction, EndReason, FlowKey, FlowSlot, FlowTable, Orientation, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_SCTP, PROTO_TCP, PROTO_UDP, PacketSample, PacketTuple, TcpFlags, mapped_address,
    unmapped_address,
};
use vfn_rules::{Action, DefaultAction, Key, RateLimitSpec, RuleSet};

use crate::counters::{Counter, DropReason};
use crate::overlay::{DynamicAction, Overlay};
use crate::ratelimit::TokenBucket;
use crate::telemetry::{FeatureSnapshot, FlowExportRecord, FlowExporter, TelemetryConfig};

/// The flow classes' idle timeouts ([`PolicyLimits::timeouts`]) and their upper bound.
pub use vfn_flow::{TIMEOUT_MAX, Timeouts};

/// A rule set as published, with its generation (1, 2, ...; 0 is "no rule set").
#[derive(Debug)]
pub struct ActivePolicy {
    pub generation: u32,
    pub rules: RuleSet,
}

/// The rule set as workers see it; `None`: no policy, everything is forwarded statelessly.
pub type SharedPolicy = Arc<ArcSwapOption<ActivePolicy>>;

/// The single writer of the rule set: publishes, and retires replaced sets only once every worker
/// has loaded a newer one.
#[derive(Debug, Default)]
pub struct PolicyPublisher {
    shared: SharedPolicy,
    generation: u32,
    retired: Vec<Arc<ActivePolicy>>,
    seen: Vec<Arc<AtomicU32>>,
}

impl PolicyPublisher {
    pub fn new() -> PolicyPublisher {
        PolicyPublisher::default()
    }

    pub fn shared(&self) -> SharedPolicy {
        self.shared.clone()
    }

    /// A cell in which a new worker records the generation it uses.
    pub fn register_worker(&mut self) -> Arc<AtomicU32> {
        let cell = Arc::new(AtomicU32::new(self.generation));
        self.seen.push(cell.clone());
        cell
    }

    /// Publishes `rules` (or no rule set); returns the new generation. Every burst that starts
    /// after this returns sees the new set.
    pub fn publish(&mut self, rules: Option<RuleSet>) -> u32 {
        self.generation = self.generation.wrapping_add(1).max(1);
        let next = rules.map(|rules| {
            Arc::new(ActivePolicy {
                generation: self.generation,
                rules,
            })
        });
        if let Some(previous) = self.shared.swap(next) {
            self.retired.push(previous);
        }
        self.collect();
        self.generation
    }

    /// Drops retired sets that no worker can still be using.
    pub fn collect(&mut self) {
        let oldest_in_use = self
            .seen
            .iter()
            .map(|cell| cell.load(Ordering::Acquire))
            .min()
            .unwrap_or(self.generation);
        self.retired.retain(|set| set.generation >= oldest_in_use);
    }

    pub fn current(&self) -> Option<Arc<ActivePolicy>> {
        self.shared.load_full()
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Sets still held for workers that have not moved on.
    pub fn retired_count(&self) -> usize {
        self.retired.len()
    }
}

/// What the flow table keeps per flow (8 bytes, so an entry fits a cache line): the verdict of
/// the initiator's tuple under one rule-set generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowVerdict {
    generation: u32,
    /// The rule index (or [`NO_RULE`]) in the low [`RULE_BITS`] bits, then whether every packet
    /// of the initiator's direction gets this verdict (no per-packet rule applies), then the
    /// interface the initiator's packets arrive on.
    packed: u32,
}

/// Bits of a rule index in a flow verdict: rule sets hold at most [`RULES_MAX`] rules.
const RULE_BITS: u32 = 18;
/// The default action, in place of a rule index.
pub const NO_RULE: u32 = (1 << RULE_BITS) - 1;
/// Rules a rule set may hold for the flow table to name them.
pub const RULES_MAX: usize = NO_RULE as usize;
const CACHEABLE: u32 = 1 << RULE_BITS;
const INGRESS_SHIFT: u32 = RULE_BITS + 1;
/// Interfaces a flow verdict can name (13 bits; the config allows far fewer).
pub const INTERFACES_MAX: usize = 1 << (32 - INGRESS_SHIFT);

impl FlowVerdict {
    fn new(generation: u32, rule: u32, ingress: u16, cacheable: bool) -> FlowVerdict {
        let cacheable = if cacheable { CACHEABLE } else { 0 };
        FlowVerdict {
            generation,
            packed: rule.min(NO_RULE) | cacheable | (u32::from(ingress) << INGRESS_SHIFT),
        }
    }

    /// The rule-set generation that gave this verdict; 0 for a flow opened without a rule set.
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// The rule that allowed the flow, or [`NO_RULE`] for the default action.
    pub(crate) fn rule(&self) -> u32 {
        self.packed & NO_RULE
    }

    fn cacheable(&self) -> bool {
        self.packed & CACHEABLE != 0
    }

    /// The interface the initiator's packets arrive on.
    pub(crate) fn ingress(&self) -> u16 {
        (self.packed >> INGRESS_SHIFT) as u16
    }
}

const _: () = assert!(size_of::<FlowVerdict>() == 8);
const _: () = assert!(
    RULES_MAX >= 100_000,
    "the default rule limit must fit a flow verdict"
);

/// How a packet is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Pass,
    Drop(DropReason),
    /// Drop and tell the sender (TCP RST or ICMP administratively prohibited).
    Reject,
}

/// Where a packet stands among the fragments of its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    Whole,
    First { id: u32 },
    Later { id: u32 },
}

/// The fields the policy reads from one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketFacts {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// TCP/UDP ports; ICMP type and code.
    pub sport: u16,
    pub dport: u16,
    /// The identifier of an ICMP(v6) echo request or reply.
    pub echo_id: Option<u16>,
    pub tcp_flags: u8,
    /// The TCP header's window field (0 for other protocols).
    pub tcp_window: u16,
    pub ingress: u16,
    /// The interface the route to `dst` leaves by.
    pub egress: u16,
    /// The interface the route back to `src` leaves through (`None`: no route back): replies of
    /// a flow must arrive where its initiator's destination lives.
    pub back_iface: Option<u16>,
    pub bytes: u32,
    pub fragment: Fragment,
    /// An ICMP(v6) error: the tuple of the packet it quotes (sent by this error's destination).
    pub quoted: Option<Quoted>,
}

impl PacketFacts {
    /// A whole, unfragmented packet of `proto` from `src` to `dst` with nothing else known:
    /// no ports, flags, ingress, route back, size or quoted packet.
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8) -> PacketFacts {
        PacketFacts {
            src,
            dst,
            proto,
            sport: 0,
            dport: 0,
            echo_id: None,
            tcp_flags: 0,
            tcp_window: 0,
            ingress: 0,
            egress: 0,
            back_iface: None,
            bytes: 0,
            fragment: Fragment::Whole,
            quoted: None,
        }
    }
}

/// The addresses, protocol and ports (echo identifier) of the packet an ICMP error quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub echo_id: Option<u16>,
}

/// A packet matched a rule that logs: an event for the control side (bounded queue; when it is
/// full the event is counted as lost and the packet goes on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    pub generation: u32,
    /// The rule's index in that generation's set.
    pub rule: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub ingress: u16,
    /// Since the router's epoch.
    pub at: Duration,
}

/// Counters of one rule on one worker.
#[derive(Debug, Default)]
pub struct RuleCounter {
    pub packets: Counter,
    pub bytes: Counter,
    /// Nanoseconds since the router's epoch; 0: never.
    pub last_hit_ns: Counter,
}

/// One worker's per-rule counters, for the generation they count; reset when it changes.
#[derive(Debug)]
pub struct RuleCounters {
    generation: AtomicU32,
    pub rules: Box<[RuleCounter]>,
    /// Packets no rule matched (the default action).
    pub default: RuleCounter,
}

impl RuleCounters {
    fn new(max_rules: usize) -> RuleCounters {
        RuleCounters {
            generation: AtomicU32::new(0),
            rules: (0..max_rules).map(|_| RuleCounter::default()).collect(),
            default: RuleCounter::default(),
        }
    }

    /// The generation these counters count for.
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Per-worker policy counters that are not drops.
#[derive(Debug, Default)]
pub struct PolicyCounters {
    pub flows_created: Counter,
    pub flow_table_full: Counter,
    pub flows_rejudged: Counter,
    pub flows_expired: Counter,
    pub mirrored: Counter,
    pub log_events: Counter,
    /// Rule-match events not queued because the queue was full.
    pub log_events_lost: Counter,
    /// Flows in the worker's table now: a gauge, set once per loop iteration.
    pub flows_in_table: Counter,
    /// Bytes the worker's flow table allocated at start (a gauge, [`vfn_flow::TableMemory`]).
    pub flow_table_bytes: Counter,
    /// Flows removed from a full table to make room for new ones.
    pub flows_evicted: Counter,
    /// Flow records queued for the exporter.
    pub flow_records_exported: Counter,
    /// Flow records lost because the exporter's queue was full.
    pub flow_records_lost: Counter,
    /// Feature snapshots queued for the anomaly scorer.
    pub snapshots_queued: Counter,
    /// Feature snapshots lost because the scorer's queue was full.
    pub snapshots_lost: Counter,
    /// Forwarded packets telemetry could not count in a flow: later fragments, packets of a
    /// flow that arrived on an unexpected interface, and packets refused by a full table.
    pub packets_untracked: Counter,
}

/// Bounds of the per-worker policy state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyLimits {
    pub flows: usize,
    pub timeouts: Timeouts,
    /// Rules the counters have room for (the rule set limit).
    pub max_rules: usize,
    /// Token buckets for per-source rate limits (a direct-mapped cache).
    pub source_buckets: usize,
    /// First-fragment verdicts remembered (a direct-mapped cache).
    pub fragments: usize,
    /// How long a first fragment's verdict waits for the later fragments.
    pub fragment_ttl: Duration,
    /// Flows expired per burst at most.
    pub expiry_budget: usize,
    /// Workers sharing each rate limit (each enforces its share of the rate).
    pub workers: usize,
    /// Statistics per flow in the same table, and records for the exporter.
    pub telemetry: TelemetryConfig,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            flows: 262_144,
            timeouts: Timeouts::default(),
            max_rules: 100_000,
            source_buckets: 16_384,
            fragments: 4_096,
            fragment_ttl: Duration::from_secs(2),
            expiry_budget: 64,
            workers: 1,
            telemetry: TelemetryConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct BucketSlot {
    owner: u64,
    bucket: PacketByteBucket,
}

/// A packet-rate and a byte-rate bucket together (either may be unlimited).
#[derive(Clone, Copy, Debug)]
struct PacketByteBucket {
    packets: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl PacketByteBucket {
    /// Buckets for `rate`, each worker enforcing its share; `full` starts them with their burst,
    /// otherwise with room for one packet (a per-source slot taken over by another source must
    /// not hand out a fresh burst).
    fn new(rate: &RateLimitSpec, workers: u64, full: bool) -> PacketByteBucket {
        let share = |value: u64| (value / workers.max(1)).max(1);
        let bucket = |per_second: u64, burst: u64| {
            let (rate, burst) = (share(per_second), share(burst.max(1)));
            // Debt-based: one token lets one packet of any size through.
            TokenBucket::with_tokens(rate, burst, if full { burst } else { 1 })
        };
        PacketByteBucket {
            packets: rate
                .packets_per_second
                .map(|pps| bucket(pps, rate.burst_packets)),
            bytes: rate
                .bits_per_second
                .map(|bps| bucket(bps / 8, rate.burst_bytes)),
        }
    }

    /// Admits a packet of `bytes` when both buckets allow it, and only then takes from both (the
    /// byte bucket into debt for a packet larger than its balance).
    fn admit(&mut self, bytes: u32, now: Duration) -> bool {
        let packets_ok = self.packets.as_mut().is_none_or(|b| b.has(1, now));
        let bytes_ok = self.bytes.as_mut().is_none_or(|b| b.has_any(now));
        if !(packets_ok && bytes_ok) {
            return false;
        }
        if let Some(bucket) = self.packets.as_mut() {
            bucket.take(1);
        }
        if let Some(bucket) = self.bytes.as_mut() {
            bucket.take(u64::from(bytes));
        }
        true
    }
}

/// A first fragment's verdict, for the later fragments of its datagram.
#[derive(Clone, Copy, Debug)]
struct FragmentSlot {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
    /// The first fragment's generation and what decided it: a rule (counted and rate-limited
    /// again for each later fragment), `None` when it passed as a reply of an allowed flow.
    generation: u32,
    pass: bool,
    rule: Option<u32>,
    expires_at: Duration,
}

/// One worker's policy state.
pub struct PolicyState {
    flows: FlowTable<FlowVerdict>,
    rule_buckets: Vec<Option<PacketByteBucket>>,
    source_buckets: Box<[Option<BucketSlot>]>,
    fragments: Box<[Option<FragmentSlot>]>,
    hasher: hashbrown::DefaultHashBuilder,
    limits: PolicyLimits,
    /// Generation the rule buckets and counters belong to.
    generation: u32,
    pub counters: Arc<RuleCounters>,
    pub policy_counters: Arc<PolicyCounters>,
    events: Option<crossbeam_channel::Sender<RuleMatch>>,
    exporter: FlowExporter,
    /// The mirror session the packet being judged is copied to, for the worker to take.
    mirror_to: Option<u16>,
}

/// A packet counted in its flow: where the flow is, the packet's direction in it, and whether
/// the packet ended its TCP connection.
#[derive(Clone, Copy, Debug)]
struct TrackedPacket {
    slot: FlowSlot,
    direction: Direction,
    ends_connection: bool,
}

impl PolicyState {
    pub fn new(limits: PolicyLimits) -> Result<PolicyState, vfn_flow::NewTableError> {
        let telemetry = &limits.telemetry;
        let flows = if telemetry.enabled {
            FlowTable::with_statistics(limits.flows, limits.timeouts, telemetry.timeouts)?
        } else {
            FlowTable::new(limits.flows, limits.timeouts)?
        };
        let policy_counters = Arc::new(PolicyCounters::default());
        policy_counters
            .flow_table_bytes
            .set(flows.memory().total() as u64);
        Ok(PolicyState {
            flows,
            rule_buckets: Vec::with_capacity(limits.max_rules),
            source_buckets: vec![None; limits.source_buckets.max(1)].into_boxed_slice(),
            fragments: vec![None; limits.fragments.max(1)].into_boxed_slice(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            limits,
            generation: 0,
            counters: Arc::new(RuleCounters::new(limits.max_rules)),
            policy_counters,
            events: None,
            exporter: FlowExporter::default(),
            mirror_to: None,
        })
    }

    /// Sends the records of flows to `records`, marked as this `worker`'s. Without it, records
    /// count as lost.
    pub fn with_flow_exports(
        self,
        records: crossbeam_channel::Sender<FlowExportRecord>,
        worker: u16,
    ) -> PolicyState {
        PolicyState {
            exporter: FlowExporter::new(records, worker),
            ..self
        }
    }

    /// Sends snapshots of flows to the anomaly scorer's `snapshots` queue, the first at a
    /// record's `nth_packet` (`ScoringFeed`).
    pub fn with_feature_snapshots(
        mut self,
        snapshots: crossbeam_channel::Sender<FeatureSnapshot>,
        nth_packet: u64,
    ) -> PolicyState {
        self.exporter = std::mem::take(&mut self.exporter).with_snapshots(snapshots, nth_packet);
        self
    }

    /// Whether every forwarded packet's flow is tracked, with a rule set or without one.
    pub fn tracks_flows(&self) -> bool {
        self.limits.telemetry.enabled
    }

    /// Sends matches of rules that log to `events`.
    pub fn with_events(self, events: crossbeam_channel::Sender<RuleMatch>) -> PolicyState {
        PolicyState {
            events: Some(events),
            ..self
        }
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Brings the flows of a burst's `tuples` into the cache ([`crate::warm`]): keys and hashes
    /// first, then the lookups one after the other, whose misses overlap.
    #[inline]
    pub fn warm(&self, tuples: &[Option<PacketTuple>]) {
        let mut keys = [None; crate::worker::BURST_MAX];
        for (slot, tuple) in keys.iter_mut().zip(tuples) {
            *slot = tuple.map(|tuple| {
                let (key, _) = FlowKey::from_packet(&tuple);
                (key, self.flows.hash(&key))
            });
        }
        self.flows.warm(&keys);
    }

    /// The mirror session the last packet judged is to be copied to (taken once).
    pub fn take_mirror(&mut self) -> Option<u16> {
        self.mirror_to.take()
    }

    /// The flow table, for snapshots.
    pub(crate) fn flows(&self) -> &FlowTable<FlowVerdict> {
        &self.flows
    }

    /// Expires idle flows and ends the records due, a bounded amount per call (once per loop
    /// iteration).
    pub fn expire(&mut self, now: Duration) {
        let (exporter, counters) = (&self.exporter, &*self.policy_counters);
        self.flows
            .expire(nanos(now), self.limits.expiry_budget, |ended| {
                if ended.flow_removed {
                    counters.flows_expired.add(1);
                }
                exporter.export(&ended, counters);
            });
    }

    /// Ends every flow's record, for a worker that stops: the records go to the exporter with
    /// [`EndReason::ForcedEnd`] (as many as the queue takes). Walks the whole table.
    pub fn end_records(&mut self) {
        let (exporter, counters) = (&self.exporter, &*self.policy_counters);
        self.flows.end_records(EndReason::ForcedEnd, |ended| {
            exporter.export(&ended, counters)
        });
    }

    /// The verdict for one packet under `policy` and `overlay` at `now`. A packet that passes is
    /// counted in its flow's statistics when telemetry is on.
    pub fn judge(
        &mut self,
        policy: Option<&ActivePolicy>,
        overlay: &Overlay,
        facts: &PacketFacts,
        now: Duration,
    ) -> Judgement {
        self.mirror_to = None;
        if !overlay.is_empty()
            && let Some(judgement) = self.judge_overlay(overlay, facts, now)
        {
            return judgement;
        }
        let (judgement, flow) = match policy {
            None => (Judgement::Pass, self.track_unjudged(facts, now)),
            Some(policy) => self.judge_by_rules(policy, facts, now),
        };
        if judgement == Judgement::Pass && self.tracks_flows() {
            match flow {
                Some(flow) => self.record_statistics(flow, facts, now),
                None => self.policy_counters.packets_untracked.add(1),
            }
        }
        judgement
    }

    /// The judgement of the rule set, and the flow that counts the packet if it passes.
    fn judge_by_rules(
        &mut self,
        policy: &ActivePolicy,
        facts: &PacketFacts,
        now: Duration,
    ) -> (Judgement, Option<TrackedPacket>) {
        if policy.generation != self.generation {
            self.start_generation(policy);
        }
        match facts.fragment {
            Fragment::Later { id } => return (self.later_fragment(policy, facts, id, now), None),
            Fragment::Whole | Fragment::First { .. } => {}
        }
        let (judgement, rule, flow) = self.judge_stateful(policy, facts, now);
        if let Fragment::First { id } = facts.fragment {
            self.remember_fragment(
                facts,
                id,
                policy.generation,
                judgement == Judgement::Pass,
                rule,
                now,
            );
        }
        (judgement, flow)
    }

    /// Without a rule set, telemetry still counts the packet in its flow (later fragments
    /// excepted: they carry no ports). A flow opened here holds generation 0, "not judged", so a
    /// rule set published later judges it with its next packet like any flow after a swap.
    fn track_unjudged(&mut self, facts: &PacketFacts, now: Duration) -> Option<TrackedPacket> {
        if !self.tracks_flows() || matches!(facts.fragment, Fragment::Later { .. }) {
            return None;
        }
        self.track(
            facts,
            now,
            FlowVerdict::new(0, NO_RULE, facts.ingress, false),
        )
    }

    /// Counts a packet whose verdict does not come from the flow table (there is no rule set,
    /// or the rules judged an ICMP message alone) in its flow, opening the flow with `verdict`
    /// if it is new.
    fn track(
        &mut self,
        facts: &PacketFacts,
        now: Duration,
        verdict: FlowVerdict,
    ) -> Option<TrackedPacket> {
        if is_icmp_message(facts.proto, facts.echo_id) && facts.sport == 0 && facts.dport == 0 {
            // ICMPv6 type 0 code 0 (reserved) would share the key of echo identifier 0, a
            // flow whose verdict passes its replies: never opened from here.
            return None;
        }
        let (key, orientation) = FlowKey::from_packet(&flow_tuple(facts));
        let hash = self.flows.hash(&key);
        match self.flows.locate(&key, hash, orientation) {
            Some((slot, direction)) => {
                let flags = TcpFlags::from_header_byte(facts.tcp_flags);
                let ends_connection =
                    self.flows
                        .entry_mut(slot)
                        .record_packet(nanos(now), direction, flags);
                Some(TrackedPacket {
                    slot,
                    direction,
                    ends_connection,
                })
            }
            None => self.open_flow(key, orientation, hash, verdict, facts, now),
        }
    }

    /// Inserts the flow of a packet that found none and records the packet on it; `None` when
    /// the table is full and no flow may be evicted (counted).
    fn open_flow(
        &mut self,
        key: FlowKey,
        orientation: Orientation,
        hash: u64,
        verdict: FlowVerdict,
        facts: &PacketFacts,
        now: Duration,
    ) -> Option<TrackedPacket> {
        let now_ns = nanos(now);
        let (exporter, counters) = (&self.exporter, &*self.policy_counters);
        let inserted = self
            .flows
            .insert_flow(key, hash, orientation, verdict, now_ns, |evicted| {
                counters.flows_evicted.add(1);
                exporter.export(&evicted, counters);
            });
        let Ok(slot) = inserted else {
            counters.flow_table_full.add(1);
            return None;
        };
        counters.flows_created.add(1);
        let flags = TcpFlags::from_header_byte(facts.tcp_flags);
        let ends_connection =
            self.flows
                .entry_mut(slot)
                .record_packet(now_ns, Direction::Forward, flags);
        Some(TrackedPacket {
            slot,
            direction: Direction::Forward,
            ends_connection,
        })
    }

    /// Adds a packet that passed to its flow's statistics; a packet that ends its TCP
    /// connection ends the record.
    fn record_statistics(&mut self, flow: TrackedPacket, facts: &PacketFacts, now: Duration) {
        let sample = PacketSample {
            time_ns: nanos(now),
            direction: flow.direction,
            ip_length: facts.bytes,
            tcp_flags: TcpFlags::from_header_byte(facts.tcp_flags),
            tcp_window: (facts.proto == PROTO_TCP).then_some(facts.tcp_window),
            initiator_egress: match flow.direction {
                Direction::Forward => facts.egress,
                Direction::Reverse => facts.ingress,
            },
        };
        let (exporter, counters) = (&self.exporter, &*self.policy_counters);
        self.flows
            .record_statistics(flow.slot, &sample, flow.ends_connection, |ended| {
                exporter.export(&ended, counters)
            });
        // A packet that ended its connection ended the record too: the record's end snapshot
        // covers it.
        if exporter.takes_snapshots()
            && !flow.ends_connection
            && let Some(stats) = self.flows.statistics(flow.slot)
        {
            exporter.snapshot_if_due(self.flows.entry(flow.slot), stats, counters);
        }
    }

    fn judge_overlay(
        &mut self,
        overlay: &Overlay,
        facts: &PacketFacts,
        now: Duration,
    ) -> Option<Judgement> {
        let tuple = (facts.src, facts.dst, facts.proto, facts.sport, facts.dport);
        if let Some(session) = overlay.mirror_policy_session(tuple, now) {
            self.policy_counters.mirrored.add(1);
            self.mirror_to = Some(session);
        }
        for (host, is_source) in [(facts.src, true), (facts.dst, false)] {
            let Some(entry) = overlay.get(host, now) else {
                continue;
            };
            match &entry.action {
                DynamicAction::Quarantine => return Some(Judgement::Drop(DropReason::Quarantined)),
                DynamicAction::RateLimit {
                    packets_per_second,
                    burst,
                } if is_source => {
                    let rate = RateLimitSpec {
                        packets_per_second: Some(*packets_per_second),
                        bits_per_second: None,
                        burst_packets: *burst,
                        burst_bytes: 0,
                        per_source: false,
                    };
                    let workers = self.limits.workers as u64;
                    let slot = self.source_slot(
                        entry.id ^ 0x5eed_0000_0000_0000,
                        facts.src,
                        &rate,
                        workers,
                    );
                    if !slot.admit(facts.bytes, now) {
                        return Some(Judgement::Drop(DropReason::RateLimited));
                    }
                }
                DynamicAction::RateLimit { .. } => {}
                DynamicAction::Mirror { .. } => {
                    self.policy_counters.mirrored.add(1);
                    self.mirror_to = entry.mirror_session;
                }
            }
        }
        None
    }

    /// A new rule set: rule buckets and counters start over (flows are re-judged lazily).
    fn start_generation(&mut self, policy: &ActivePolicy) {
        self.generation = policy.generation;
        let workers = self.limits.workers as u64;
        self.rule_buckets.clear();
        self.rule_buckets
            .extend(
                policy
                    .rules
                    .rules
                    .iter()
                    .take(self.limits.max_rules)
                    .map(|rule| match &rule.action {
                        Action::RateLimit(rate) if !rate.per_source => {
                            Some(PacketByteBucket::new(rate, workers, true))
                        }
                        _ => None,
                    }),
            );
        self.source_buckets.fill(None);
        let counters = &self.counters;
        for counter in counters
            .rules
            .iter()
            .take(policy.rules.rules.len())
            .chain(std::iter::once(&counters.default))
        {
            counter.packets.set(0);
            counter.bytes.set(0);
            counter.last_hit_ns.set(0);
        }
        counters
            .generation
            .store(policy.generation, Ordering::Release);
    }

    /// The judgement of a packet, the rule that gave it (`None`: passed as a reply or as
    /// related), and the flow that counts the packet.
    fn judge_stateful(
        &mut self,
        policy: &ActivePolicy,
        facts: &PacketFacts,
        now: Duration,
    ) -> (Judgement, Option<u32>, Option<TrackedPacket>) {
        if is_icmp_message(facts.proto, facts.echo_id) {
            return self.judge_icmp_message(policy, facts, now);
        }
        let tuple = flow_tuple(facts);
        let (key, orientation) = FlowKey::from_packet(&tuple);
        let hash = self.flows.hash(&key);
        let now_ns = nanos(now);
        let flags = TcpFlags::from_header_byte(facts.tcp_flags);
        let Some((slot, direction)) = self.flows.locate(&key, hash, orientation) else {
            return self.judge_new(policy, facts, now, Some((key, orientation, hash)));
        };
        let entry = self.flows.entry_mut(slot);
        let verdict = entry.value;
        let initiator = entry.initiator();
        // A flow's packets arrive where its two ends live: the initiator's on the interface the
        // flow started on, the replies where the route back to their source leads. Anything
        // else is judged on its own, without the flow's state.
        let arrived_right = match direction {
            Direction::Forward => facts.ingress == verdict.ingress(),
            Direction::Reverse => facts.back_iface.is_some_and(|iface| iface == facts.ingress),
        };
        if !arrived_right {
            return self.judge_new(policy, facts, now, None);
        }
        let flow = TrackedPacket {
            slot,
            direction,
            ends_connection: entry.record_packet(now_ns, direction, flags),
        };
        if verdict.generation == policy.generation {
            return match direction {
                // The reply of a flow a rule allowed.
                Direction::Reverse => {
                    self.mirror_reply(policy, verdict);
                    (Judgement::Pass, None, Some(flow))
                }
                Direction::Forward => self.forward(policy, verdict, facts, now, flow),
            };
        }
        // A new rule set: the flow is judged again on its initiator's tuple, both directions.
        self.policy_counters.flows_rejudged.add(1);
        let initiator_facts = initiator_view(&key, initiator, facts, verdict.ingress());
        let decision = classify(&policy.rules, &initiator_facts, verdict.ingress());
        let rule = decision.rule.unwrap_or(NO_RULE);
        if !allows(policy, rule) {
            let (exporter, counters) = (&self.exporter, &*self.policy_counters);
            self.flows.end_flow(slot, EndReason::ForcedEnd, |ended| {
                exporter.export(&ended, counters)
            });
            // Mid-flow packets of a flow the set no longer allows are not a new flow.
            return (
                self.act(policy, rule, facts, now).or_drop(),
                Some(rule),
                None,
            );
        }
        let renewed = FlowVerdict::new(
            policy.generation,
            rule,
            verdict.ingress(),
            decision.cacheable,
        );
        self.flows.entry_mut(slot).value = renewed;
        match direction {
            Direction::Reverse => {
                self.mirror_reply(policy, renewed);
                (Judgement::Pass, None, Some(flow))
            }
            Direction::Forward => self.forward(policy, renewed, facts, now, flow),
        }
    }

    /// A reply belongs to its flow: when a mirror rule allowed the flow, the reply is copied
    /// too.
    fn mirror_reply(&mut self, policy: &ActivePolicy, verdict: FlowVerdict) {
        if policy.rules.mirrors
            && let Some(compiled) = policy.rules.rules.get(verdict.rule() as usize)
        {
            self.mirror_to = compiled.mirror_session;
        }
    }

    /// ICMP other than echo keeps no state for the rules: an error quoting a live flow of its
    /// destination is related to it and passes (PMTU discovery keeps working under a default
    /// deny); anything else is judged by the rules alone. Telemetry counts a message that passes
    /// in a flow of its own, keyed by type and code, which no rule ever looks up.
    fn judge_icmp_message(
        &mut self,
        policy: &ActivePolicy,
        facts: &PacketFacts,
        now: Duration,
    ) -> (Judgement, Option<u32>, Option<TrackedPacket>) {
        let (judgement, rule) = if facts
            .quoted
            .is_some_and(|quoted| self.is_live_flow(&quoted, facts.dst))
        {
            (Judgement::Pass, None)
        } else {
            let (judgement, rule, _) = self.judge_new(policy, facts, now, None);
            (judgement, rule)
        };
        let flow = if judgement == Judgement::Pass && self.tracks_flows() {
            let verdict = FlowVerdict::new(
                policy.generation,
                rule.unwrap_or(NO_RULE),
                facts.ingress,
                false,
            );
            self.track(facts, now, verdict)
        } else {
            None
        };
        (judgement, rule, flow)
    }

    /// A packet of the initiator's direction of an allowed flow: the flow's rule, unless a rule
    /// on per-packet fields of higher priority matches this packet (per-packet rules may drop
    /// or reject packets of established flows; they never open them).
    fn forward(
        &mut self,
        policy: &ActivePolicy,
        verdict: FlowVerdict,
        facts: &PacketFacts,
        now: Duration,
        flow: TrackedPacket,
    ) -> (Judgement, Option<u32>, Option<TrackedPacket>) {
        let mut rule = verdict.rule();
        if !verdict.cacheable()
            && let Some(own) = classify(&policy.rules, facts, facts.ingress).rule
            && own < rule
        {
            rule = own;
        }
        (self.act(policy, rule, facts, now), Some(rule), Some(flow))
    }

    /// A packet without flow state: classified, acted on, and when it passes and `new_flow`
    /// (its key, orientation and hash, looked up and missed) is given, the start of a flow.
    fn judge_new(
        &mut self,
        policy: &ActivePolicy,
        facts: &PacketFacts,
        now: Duration,
        new_flow: Option<(FlowKey, Orientation, u64)>,
    ) -> (Judgement, Option<u32>, Option<TrackedPacket>) {
        let decision = classify(&policy.rules, facts, facts.ingress);
        let rule = decision.rule.unwrap_or(NO_RULE);
        let judgement = self.act(policy, rule, facts, now);
        // Only a packet that passes opens a flow (a rate-limited one dropped does not). When
        // the table is full, it is judged without state: replies are judged as flows of their
        // own.
        let flow = match new_flow {
            Some((key, orientation, hash))
                if judgement == Judgement::Pass && allows(policy, rule) =>
            {
                let verdict =
                    FlowVerdict::new(policy.generation, rule, facts.ingress, decision.cacheable);
                self.open_flow(key, orientation, hash, verdict, facts, now)
            }
            _ => None,
        };
        (judgement, Some(rule), flow)
    }

    /// Whether `quoted`, a packet `receiver` sent, belongs to a flow in the table.
    fn is_live_flow(&self, quoted: &Quoted, receiver: IpAddr) -> bool {
        // Flows of ICMP messages other than echo are telemetry's alone: no rule relies on them.
        if quoted.src != receiver || is_icmp_message(quoted.proto, quoted.echo_id) {
            return false;
        }
        let facts = PacketFacts {
            sport: quoted.sport,
            dport: quoted.dport,
            echo_id: quoted.echo_id,
            ..PacketFacts::new(quoted.src, quoted.dst, quoted.proto)
        };
        let (key, _) = FlowKey::from_packet(&flow_tuple(&facts));
        let hash = self.flows.hash(&key);
        self.flows.get(&key, hash).is_some()
    }

    /// Applies rule `rule` (or the default action) to one packet and counts it.
    fn act(
        &mut self,
        policy: &ActivePolicy,
        rule: u32,
        facts: &PacketFacts,
        now: Duration,
    ) -> Judgement {
        let counter = match self.counters.rules.get(rule as usize) {
            Some(counter) => counter,
            None => &self.counters.default,
        };
        counter.packets.add(1);
        counter.bytes.add(u64::from(facts.bytes));
        counter.last_hit_ns.set(nanos(now).max(1));
        let Some(compiled) = policy.rules.rules.get(rule as usize) else {
            return match policy.rules.default_action {
                DefaultAction::Allow => Judgement::Pass,
                DefaultAction::Deny => Judgement::Drop(DropReason::PolicyDefault),
            };
        };
        if compiled.log {
            self.policy_counters.log_events.add(1);
            let event = RuleMatch {
                generation: policy.generation,
                rule,
                src: facts.src,
                dst: facts.dst,
                proto: facts.proto,
                sport: facts.sport,
                dport: facts.dport,
                ingress: facts.ingress,
                at: now,
            };
            if self
                .events
                .as_ref()
                .is_some_and(|events| events.try_send(event).is_err())
            {
                self.policy_counters.log_events_lost.add(1);
            }
        }
        match &compiled.action {
            Action::Allow => Judgement::Pass,
            Action::Drop => Judgement::Drop(DropReason::PolicyDrop),
            Action::Reject => Judgement::Reject,
            Action::Mirror { then_allow, .. } => {
                self.policy_counters.mirrored.add(1);
                self.mirror_to = compiled.mirror_session;
                if *then_allow {
                    Judgement::Pass
                } else {
                    Judgement::Drop(DropReason::PolicyDrop)
                }
            }
            Action::RateLimit(rate) => {
                let admitted = if rate.per_source {
                    let workers = self.limits.workers as u64;
                    self.source_slot(u64::from(rule), facts.src, rate, workers)
                        .admit(facts.bytes, now)
                } else {
                    // A rule past the buckets' room (a set larger than the limits) fails closed.
                    match self.rule_buckets.get_mut(rule as usize) {
                        Some(Some(bucket)) => bucket.admit(facts.bytes, now),
                        _ => false,
                    }
                };
                if admitted {
                    Judgement::Pass
                } else {
                    Judgement::Drop(DropReason::RateLimited)
                }
            }
        }
    }

    /// The bucket of (`owner`, `source`) in the direct-mapped cache; a slot taken over by another
    /// pair starts full (the keyed hash keeps a sender from choosing whom it evicts).
    fn source_slot(
        &mut self,
        owner: u64,
        source: IpAddr,
        rate: &RateLimitSpec,
        workers: u64,
    ) -> &mut PacketByteBucket {
        let tag = self.hasher.hash_one((owner, source));
        let index = (tag as usize) % self.source_buckets.len();
        let slot = &mut self.source_buckets[index];
        if slot.is_some_and(|s| s.owner != tag) {
            *slot = None;
        }
        &mut slot
            .get_or_insert_with(|| BucketSlot {
                owner: tag,
                bucket: PacketByteBucket::new(rate, workers, false),
            })
            .bucket
    }

    fn fragment_index(&self, facts: &PacketFacts, id: u32) -> usize {
        (self
            .hasher
            .hash_one((facts.src, facts.dst, facts.proto, id)) as usize)
            % self.fragments.len()
    }

    fn remember_fragment(
        &mut self,
        facts: &PacketFacts,
        id: u32,
        generation: u32,
        pass: bool,
        rule: Option<u32>,
        now: Duration,
    ) {
        let index = self.fragment_index(facts, id);
        self.fragments[index] = Some(FragmentSlot {
            src: facts.src,
            dst: facts.dst,
            proto: facts.proto,
            id,
            generation,
            pass,
            rule,
            expires_at: now + self.limits.fragment_ttl,
        });
    }

    /// A later fragment gets its first fragment's verdict under the same rule set: its rule
    /// counts it and rate-limits it again; a new set, or no first, drops it.
    fn later_fragment(
        &mut self,
        policy: &ActivePolicy,
        facts: &PacketFacts,
        id: u32,
        now: Duration,
    ) -> Judgement {
        let index = self.fragment_index(facts, id);
        let slot = match self.fragments[index] {
            Some(slot)
                if slot.src == facts.src
                    && slot.dst == facts.dst
                    && slot.proto == facts.proto
                    && slot.id == id
                    && slot.expires_at > now
                    && slot.generation == policy.generation =>
            {
                slot
            }
            _ => return Judgement::Drop(DropReason::FragmentWithoutFirst),
        };
        match (slot.pass, slot.rule) {
            (false, _) => Judgement::Drop(DropReason::PolicyDrop),
            (true, None) => Judgement::Pass,
            (true, Some(rule)) => match self.act(policy, rule, facts, now) {
                Judgement::Reject => Judgement::Drop(DropReason::PolicyReject),
                judgement => judgement,
            },
        }
    }
}

impl Judgement {
    /// A judgement for a packet of a flow its rule set no longer allows: never a pass.
    fn or_drop(self) -> Judgement {
        match self {
            Judgement::Pass => Judgement::Drop(DropReason::PolicyDrop),
            other => other,
        }
    }
}

/// `d` in nanoseconds (saturating: 584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether a rule lets a flow be established.
fn allows(policy: &ActivePolicy, rule: u32) -> bool {
    match policy.rules.rules.get(rule as usize) {
        None => policy.rules.default_action == DefaultAction::Allow,
        Some(compiled) => match &compiled.action {
            Action::Allow | Action::RateLimit(_) => true,
            Action::Mirror { then_allow, .. } => *then_allow,
            Action::Drop | Action::Reject => false,
        },
    }
}

/// Whether a packet of `proto` is an ICMP or ICMPv6 message other than echo.
fn is_icmp_message(proto: u8, echo_id: Option<u16>) -> bool {
    echo_id.is_none() && matches!(proto, PROTO_ICMP | PROTO_ICMPV6)
}

fn flow_tuple(facts: &PacketFacts) -> PacketTuple {
    let (src, dst) = (mapped_address(facts.src), mapped_address(facts.dst));
    match (facts.proto, facts.echo_id) {
        (_, Some(id)) => PacketTuple::icmp_echo(src, dst, facts.proto, id, facts.ingress),
        (PROTO_TCP | PROTO_UDP | PROTO_SCTP, _) => PacketTuple {
            src,
            dst,
            sport: facts.sport,
            dport: facts.dport,
            proto: facts.proto,
            ingress: facts.ingress,
        },
        // The facts hold an ICMP message's type and code in the ports.
        (PROTO_ICMP | PROTO_ICMPV6, None) => PacketTuple::icmp_message(
            src,
            dst,
            facts.proto,
            facts.sport as u8,
            facts.dport as u8,
            facts.ingress,
        ),
        _ => PacketTuple::portless(src, dst, facts.proto, facts.ingress),
    }
}

/// The initiator's side of a flow, as a packet of its own: from the key, the orientation the
/// initiator had, and (for what the key does not hold) the packet at hand.
fn initiator_view(
    key: &FlowKey,
    initiator: Orientation,
    facts: &PacketFacts,
    ingress: u16,
) -> PacketFacts {
    let ((src, sport), (dst, dport)) = key.endpoints(initiator);
    let (sport, dport) = match facts.echo_id {
        // An echo flow's initiator sends echo requests.
        Some(_) => (if facts.src.is_ipv4() { 8 } else { 128 }, 0),
        None => (sport, dport),
    };
    PacketFacts {
        src: unmapped_address(src),
        dst: unmapped_address(dst),
        sport,
        dport,
        // The first packet of a TCP flow is a SYN.
        tcp_flags: if facts.proto == PROTO_TCP { 0x02 } else { 0 },
        ingress,
        ..*facts
    }
}

fn classify(rules: &RuleSet, facts: &PacketFacts, ingress: u16) -> vfn_rules::Decision {
    match (facts.src, facts.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => rules.classify_v4(&Key {
            src: u32::from(src),
            dst: u32::from(dst),
            sport: facts.sport,
            dport: facts.dport,
            proto: facts.proto,
            ingress,
            tcp_flags: facts.tcp_flags,
        }),
        (IpAddr::V6(src), IpAddr::V6(dst)) => rules.classify_v6(&Key {
            src: u128::from(src),
            dst: u128::from(dst),
            sport: facts.sport,
            dport: facts.dport,
            proto: facts.proto,
            ingress,
            tcp_flags: facts.tcp_flags,
        }),
        // One packet has one family; a mix cannot be built by the pipeline.
        _ => vfn_rules::Decision {
            rule: None,
            cacheable: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfn_rules::{CompileLimits, Context, RuleSetSpec};

    fn empty_set() -> RuleSet {
        let none = |_: &str| None;
        vfn_rules::compile(
            &RuleSetSpec::default(),
            &Context::without_mirrors(&none),
            &CompileLimits::default(),
        )
        .expect("valid")
    }

    #[test]
    fn a_replaced_set_lives_until_every_worker_has_moved_on() {
        let mut publisher = PolicyPublisher::new();
        let (first, second) = (publisher.register_worker(), publisher.register_worker());
        let one = publisher.publish(Some(empty_set()));
        first.store(one, Ordering::Release);
        second.store(one, Ordering::Release);
        let worker_view = publisher.shared().load_full().expect("a set");
        let two = publisher.publish(Some(empty_set()));
        assert_eq!(publisher.retired_count(), 1, "generation {one} is kept");
        first.store(two, Ordering::Release);
        publisher.collect();
        assert_eq!(
            publisher.retired_count(),
            1,
            "the second worker still uses {one}"
        );
        second.store(two, Ordering::Release);
        publisher.collect();
        assert_eq!(publisher.retired_count(), 0);
        // The publisher let go first; the test's reference stands for a worker's guard, which
        // the publisher never left to be the last.
        assert_eq!(Arc::strong_count(&worker_view), 1);
    }

    #[test]
    fn a_flow_verdict_packs_rule_ingress_and_cacheability() {
        let verdict = FlowVerdict::new(7, 100_000, 4_000, true);
        assert_eq!(
            (
                verdict.generation,
                verdict.rule(),
                verdict.ingress(),
                verdict.cacheable()
            ),
            (7, 100_000, 4_000, true)
        );
        let default = FlowVerdict::new(u32::MAX, NO_RULE, 0, false);
        assert_eq!(
            (default.rule(), default.ingress(), default.cacheable()),
            (NO_RULE, 0, false)
        );
    }
}
