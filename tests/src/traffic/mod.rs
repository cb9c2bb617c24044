//! Traffic primitives. Each is bounded in time (an explicit deadline) and count, refuses
//! destinations outside the lab ranges, and returns a structured result.

pub(crate) mod pattern;
mod ping;
mod probe;
mod raw;
mod tcp;
mod udp;

use std::io;
use std::time::{Duration, Instant};

pub use ping::{PingOpts, PingResult, ping};
pub use probe::{Connect, FloodResult, tcp_connect, udp_flood};
pub use raw::{interface_mac, send_raw_frames};
pub use tcp::{TransferResult, tcp_transfer};
pub use udp::{UdpResult, udp_exchange};

use crate::LabError;

/// The longest deadline any primitive accepts.
pub const TRAFFIC_DEADLINE_MAX: Duration = Duration::from_secs(600);

/// When a primitive given `deadline` must be done; rejects zero and overlong deadlines.
pub(crate) fn deadline_from_now(deadline: Duration) -> Result<Instant, LabError> {
    if deadline.is_zero() || deadline > TRAFFIC_DEADLINE_MAX {
        return Err(LabError::invalid_argument(
            "deadline",
            format!("{deadline:?} is outside (0, {TRAFFIC_DEADLINE_MAX:?}]"),
        ));
    }
    Ok(Instant::now() + deadline)
}

/// Time left until `until`, or a timeout error naming `what` if none is left.
fn time_left(until: Instant, what: &str, deadline: Duration) -> Result<Duration, LabError> {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(LabError::Timeout {
            what: what.to_owned(),
            limit: deadline,
        });
    }
    Ok(left)
}

/// Whether a socket operation gave up because its own timeout expired.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
