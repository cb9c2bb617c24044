//! Idle timeouts per flow class.

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

fn checked_ns(field: &'static str, timeout: Duration) -> Result<u64, NewTableError> {
    if timeout.is_zero() || timeout > TIMEOUT_MAX {
        return Err(NewTableError::TimeoutOutOfRange { field, timeout });
    }
    // TIMEOUT_MAX is far below u64::MAX nanoseconds (584 years), so the conversion is exact.
    u64::try_from(timeout.as_nanos())
        .map_err(|_| NewTableError::TimeoutOutOfRange { field, timeout })
}
