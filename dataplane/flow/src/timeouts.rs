//! Idle timeouts per flow class, and when a flow's statistics record ends while the flow goes on.

use crate::error::NewTableError;
use crate::key::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::tcp::TcpState;
use std::time::Duration;

/// The longest accepted timeout: keeps every deadline computation far from `u64` overflow.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a flow may stay idle (no packet) before it expires, by class.
///
/// The defaults follow Linux conntrack / nftables for the short-lived classes but cut the
/// established TCP timeout from 5 days to 1 hour: a bounded table cannot hold abandoned
/// connections for days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP in state `Established`.
    pub tcp_established: Duration,
    /// TCP in any other state: handshake (`None`, `SynSent`, `SynReceived`) or teardown
    /// (`Closing`, `Closed`).
    pub tcp_transitory: Duration,
    pub udp: Duration,
    /// ICMP and ICMPv6.
    pub icmp: Duration,
    /// Every other protocol (GRE, ESP, SCTP, ...).
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_established: Duration::from_secs(3600),
            tcp_transitory: Duration::from_secs(120),
            udp: Duration::from_secs(60),
            icmp: Duration::from_secs(30),
            other: Duration::from_secs(600),
        }
    }
}

/// Validated timeouts in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeoutsNs {
    tcp_established: u64,
    tcp_transitory: u64,
    udp: u64,
    icmp: u64,
    other: u64,
}

impl TimeoutsNs {
    pub(crate) fn new(timeouts: &Timeouts) -> Result<Self, NewTableError> {
        Ok(Self {
            tcp_established: checked_ns("tcp_established", timeouts.tcp_established)?,
            tcp_transitory: checked_ns("tcp_transitory", timeouts.tcp_transitory)?,
            udp: checked_ns("udp", timeouts.udp)?,
            icmp: checked_ns("icmp", timeouts.icmp)?,
            other: checked_ns("other", timeouts.other)?,
        })
    }

    /// The idle timeout of a flow of protocol `proto` in TCP state `tcp`.
    pub(crate) fn idle_timeout_ns(&self, proto: u8, tcp: TcpState) -> u64 {
        match proto {
            PROTO_TCP if tcp == TcpState::Established => self.tcp_established,
            PROTO_TCP => self.tcp_transitory,
            PROTO_UDP => self.udp,
            PROTO_ICMP | PROTO_ICMPV6 => self.icmp,
            _ => self.other,
        }
    }

    /// The shortest timeout a flow of protocol `proto` can switch to with its next packet: only a
    /// TCP flow changes class (established <-> transitory).
    pub(crate) fn shortest_timeout_ns(&self, proto: u8) -> u64 {
        match proto {
            PROTO_TCP => self.tcp_established.min(self.tcp_transitory),
            _ => self.idle_timeout_ns(proto, TcpState::None),
        }
    }
}

/// When a flow's statistics record ends and is handed over for export while the flow itself may
/// stay in the table (for the rules' state). Each record covers the packets since the previous
/// record of the same flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordTimeouts {
    /// A record ends this long after its last packet (or earlier, when the flow expires by its
    /// [`Timeouts`] class).
    pub idle: Duration,
    /// A record ends this long after its first packet even if packets keep coming: a long flow
    /// is reported periodically.
    pub active: Duration,
    /// A gap between packets longer than this ends an active period and counts as an idle
    /// period (CICFlowMeter's activity timeout).
    pub activity: Duration,
}

impl Default for RecordTimeouts {
    /// Idle 60 s (UDP's flow timeout: most records end with their flow), active 120 s
    /// (CICFlowMeter's flow timeout and nProbe's default lifetime), activity 5 s (CICFlowMeter).
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            active: Duration::from_secs(120),
            activity: Duration::from_secs(5),
        }
    }
}

/// Validated record timeouts in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordTimeoutsNs {
    pub(crate) idle: u64,
    pub(crate) active: u64,
    pub(crate) activity: u64,
}

impl RecordTimeoutsNs {
    pub(crate) fn new(timeouts: &RecordTimeouts) -> Result<Self, NewTableError> {
        Ok(Self {
            idle: checked_ns("record idle", timeouts.idle)?,
            active: checked_ns("record active", timeouts.active)?,
            activity: checked_ns("record activity", timeouts.activity)?,
        })
    }
}

fn checked_ns(field: &'static str, timeout: Duration) -> Result<u64, NewTableError> {
    if timeout.is_zero() || timeout > TIMEOUT_MAX {
        return Err(NewTableError::TimeoutOutOfRange { field, timeout });
    }
    // TIMEOUT_MAX is far below u64::MAX nanoseconds (584 years), so the conversion is exact.
    u64::try_from(timeout.as_nanos())
        .map_err(|_| NewTableError::TimeoutOutOfRange { field, timeout })
}
