//! Flow telemetry on the worker: statistics per flow, kept in the worker's flow table beside the
//! rules' verdicts (one table, one lookup per packet), and a record for the exporter each time a
//! flow's record ends. `docs/flows.md` lists the features, their units and the end reasons.
//!
//! Records go from every worker to one exporter through a bounded queue ([`Router::flow_exports`]
//! is its receiving end): a worker only ever tries to send, and a record that finds the queue
//! full is counted as lost (`PolicyCounters::flow_records_lost`); forwarding never waits.
//!
//! [`Router::flow_exports`]: crate::router::Router::flow_exports

use std::net::IpAddr;

use crossbeam_channel::Sender;
use vfn_flow::{FlowEnd, FlowEntry, unmapped_address};

pub use vfn_flow::{
    DirectionStats, EndReason, FlowStats, RecordTimeouts, RunningStats, TcpFlagCounts, TcpState,
};

use crate::iface::IfIndex;
use crate::policy::{FlowVerdict, NO_RULE, PolicyCounters};

/// Flow telemetry's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Statistics for every forwarded IP packet's flow, with a rule set or without one, and
    /// records for the exporter. Off: the flow table serves the rule set alone and holds no
    /// statistics.
    pub enabled: bool,
    /// When a record ends while its flow goes on: idle and active timeouts, and the activity
    /// timeout that separates active periods.
    pub timeouts: RecordTimeouts,
    /// Records waiting for the exporter at most, all workers together (496 bytes each,
    /// allocated when the router is built).
    pub queue_capacity: usize,
    /// Snapshots of young flows for the anomaly scorer.
    pub scoring: ScoringFeed,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            timeouts: RecordTimeouts::default(),
            queue_capacity: 16_384,
            scoring: ScoringFeed::default(),
        }
    }
}

/// When workers hand a flow's statistics to the anomaly scorer (`docs/models.md`): at the
/// record's Nth packet, so that a verdict can come while the flow is young; each time the
/// record's packets double after that; and when the record ends (which, for a long flow, is at
/// least every active timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoringFeed {
    /// Off: no snapshot is taken. Needs telemetry on.
    pub enabled: bool,
    /// The record's packet, of either direction, at which its first snapshot is taken.
    pub nth_packet: u64,
    /// Snapshots waiting for the scorer at most, all workers together (allocated when the
    /// router is built).
    pub queue_capacity: usize,
}

impl Default for ScoringFeed {
    fn default() -> Self {
        ScoringFeed {
            enabled: false,
            nth_packet: 4,
            queue_capacity: 4_096,
        }
    }
}

/// Why a worker took a flow's snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotTrigger {
    /// The record reached [`ScoringFeed::nth_packet`] packets.
    NthPacket,
    /// The record's packets doubled since its last snapshot.
    Doubled,
    /// The record ended.
    RecordEnd(EndReason),
}

/// A flow's statistics so far, for the anomaly scorer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureSnapshot {
    pub worker: u16,
    /// The initiator's address.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// As in [`FlowExportRecord`].
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub trigger: SnapshotTrigger,
    /// The record's statistics when the snapshot was taken.
    pub stats: FlowStats,
}

/// One record of a flow, as a worker exports it: the flow as its initiator sent it, where it
/// came in and went out, what decided it, why the record ended, and its statistics.
///
/// A record covers the packets since the flow's previous record (delta records, as IPFIX
/// exporters do on an active timeout): `stats.first_ns()` and `stats.last_ns()` are the times of
/// its first and last packets, in nanoseconds since the router's epoch, and a collector adds up
/// the records of one flow (same key and `flow_start_ns`) for the flow's totals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowExportRecord {
    pub worker: u16,
    /// The initiator's address (the sender of the flow's first packet).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP, UDP and SCTP ports; an ICMP echo's identifier in both; for other ICMP messages 0 and
    /// `type << 8 | code`; 0 for other protocols.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// The interface the initiator's packets arrive on.
    pub ingress: IfIndex,
    /// The interface the initiator's packets leave by (as of the record's last packet).
    pub egress: IfIndex,
    /// The first packet of the flow's first record, in nanoseconds since the router's epoch.
    pub flow_start_ns: u64,
    pub end_reason: EndReason,
    /// The rule-set generation whose verdict the flow holds; 0 when no rule set judged it.
    pub generation: u32,
    /// The rule of that generation that allowed the flow; `None`: the default action, or no
    /// rule set.
    pub rule: Option<u32>,
    /// [`TcpState::None`] for other protocols.
    pub tcp: TcpState,
    pub stats: FlowStats,
}

impl FlowExportRecord {
    fn new(
        worker: u16,
        entry: &FlowEntry<FlowVerdict>,
        stats: &FlowStats,
        reason: EndReason,
    ) -> Self {
        let (src, sport, dst, dport, proto) = initiator_tuple(entry);
        let verdict = entry.value;
        FlowExportRecord {
            worker,
            src,
            dst,
            sport,
            dport,
            proto,
            ingress: verdict.ingress(),
            egress: stats.initiator_egress(),
            flow_start_ns: entry.first_seen_ns(),
            end_reason: reason,
            generation: verdict.generation(),
            rule: Some(verdict.rule()).filter(|&rule| rule != NO_RULE),
            tcp: entry.tcp(),
            stats: *stats,
        }
    }
}

/// A flow's initiator address and port, responder address and port, and protocol.
fn initiator_tuple(entry: &FlowEntry<FlowVerdict>) -> (IpAddr, u16, IpAddr, u16, u8) {
    let key = entry.key();
    let ((src, sport), (dst, dport)) = key.endpoints(entry.initiator());
    (
        unmapped_address(src),
        sport,
        unmapped_address(dst),
        dport,
        key.proto(),
    )
}

/// A worker's end of the export queue and of the scorer's queue.
#[derive(Debug, Default)]
pub(crate) struct FlowExporter {
    /// `None`: records have nowhere to go and count as lost.
    records: Option<Sender<FlowExportRecord>>,
    /// `None`: no snapshot is taken.
    snapshots: Option<Sender<FeatureSnapshot>>,
    nth_packet: u64,
    worker: u16,
}

impl FlowExporter {
    pub(crate) fn new(records: Sender<FlowExportRecord>, worker: u16) -> FlowExporter {
        FlowExporter {
            records: Some(records),
            worker,
            ..FlowExporter::default()
        }
    }

    /// Also sends snapshots to the scorer, the first at a record's `nth_packet`.
    pub(crate) fn with_snapshots(
        self,
        snapshots: Sender<FeatureSnapshot>,
        nth_packet: u64,
    ) -> FlowExporter {
        FlowExporter {
            snapshots: Some(snapshots),
            nth_packet: nth_packet.max(1),
            ..self
        }
    }

    /// Queues the record of `ended` unless it is empty, and its last snapshot; a full queue
    /// loses them, counted.
    pub(crate) fn export(&self, ended: &FlowEnd<'_, FlowVerdict>, counters: &PolicyCounters) {
        let Some(stats) = ended.stats.filter(|stats| !stats.is_empty()) else {
            return;
        };
        let record = FlowExportRecord::new(self.worker, ended.entry, stats, ended.reason);
        match &self.records {
            Some(records) if records.try_send(record).is_ok() => {
                counters.flow_records_exported.add(1);
            }
            _ => counters.flow_records_lost.add(1),
        }
        self.snapshot(
            ended.entry,
            stats,
            SnapshotTrigger::RecordEnd(ended.reason),
            counters,
        );
    }

    /// Takes the snapshot of a record that has just counted a packet, if its count is due: the
    /// Nth packet, 2N, 4N and so on.
    pub(crate) fn snapshot_if_due(
        &self,
        entry: &FlowEntry<FlowVerdict>,
        stats: &FlowStats,
        counters: &PolicyCounters,
    ) {
        let packets = stats.packets();
        let due = packets.is_multiple_of(self.nth_packet)
            && (packets / self.nth_packet).is_power_of_two();
        if !due {
            return;
        }
        let trigger = match packets == self.nth_packet {
            true => SnapshotTrigger::NthPacket,
            false => SnapshotTrigger::Doubled,
        };
        self.snapshot(entry, stats, trigger, counters);
    }

    fn snapshot(
        &self,
        entry: &FlowEntry<FlowVerdict>,
        stats: &FlowStats,
        trigger: SnapshotTrigger,
        counters: &PolicyCounters,
    ) {
        let Some(snapshots) = &self.snapshots else {
            return;
        };
        let (src, sport, dst, dport, proto) = initiator_tuple(entry);
        let snapshot = FeatureSnapshot {
            worker: self.worker,
            src,
            dst,
            sport,
            dport,
            proto,
            trigger,
            stats: *stats,
        };
        match snapshots.try_send(snapshot) {
            Ok(()) => counters.snapshots_queued.add(1),
            Err(_) => counters.snapshots_lost.add(1),
        }
    }

    pub(crate) fn takes_snapshots(&self) -> bool {
        self.snapshots.is_some()
    }
}
