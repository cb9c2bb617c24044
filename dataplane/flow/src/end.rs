//! The end of a flow's record: why it ended, and what the table hands over when it does.

use crate::entry::FlowEntry;
use crate::stats::FlowStats;

/// Why a record ended: IPFIX's `flowEndReason` (RFC 5102, information element 136).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// No packet for the record's idle timeout, or the flow expired by its class timeout.
    IdleTimeout,
    /// The record reached its active timeout; the flow goes on in a new record.
    ActiveTimeout,
    /// The TCP connection ended: a RST, or both FINs and the last acknowledgement (also when a
    /// flow whose FINs were both seen expires).
    EndOfFlow,
    /// Ended by the table's owner: the flow's rule set no longer allows it, or the worker stops.
    ForcedEnd,
    /// Evicted from a full table to make room for a new flow.
    LackOfResources,
}

impl EndReason {
    /// The reason's value in IPFIX's `flowEndReason`.
    pub fn ipfix_code(self) -> u8 {
        match self {
            EndReason::IdleTimeout => 1,
            EndReason::ActiveTimeout => 2,
            EndReason::EndOfFlow => 3,
            EndReason::ForcedEnd => 4,
            EndReason::LackOfResources => 5,
        }
    }

    /// The reason a flow that went quiet ended with: its own teardown if both sides closed it,
    /// otherwise a timeout.
    pub(crate) fn of_quiet<V>(entry: &FlowEntry<V>) -> EndReason {
        if entry.connection_closed() {
            EndReason::EndOfFlow
        } else {
            EndReason::IdleTimeout
        }
    }
}

/// A record that ended, as the table hands it over (to export it) just before it forgets it.
#[derive(Clone, Copy, Debug)]
pub struct FlowEnd<'a, V> {
    pub entry: &'a FlowEntry<V>,
    /// The record's statistics: `None` for a table without statistics; empty when no packet was
    /// recorded since the previous record ended.
    pub stats: Option<&'a FlowStats>,
    pub reason: EndReason,
    /// Whether the flow left the table; false when only its record ended and the flow goes on
    /// (its next packets start a new record).
    pub flow_removed: bool,
}
