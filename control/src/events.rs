//! The event stream of `WatchEvents`: what changes in the router, broadcast to every watcher
//! through a bounded channel. Sending never blocks; a watcher that falls behind loses the oldest
//! events and is told how many.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vfn_control::proto::{self, event::Kind};
use vfn_dataplane::counters::DropReason;

use crate::stats::Sources;

/// Events kept for watchers that read slowly.
pub const EVENTS_CAPACITY: usize = 1024;

/// How often drops are reported, as the count since the last report.
pub const DROPS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Events(tokio::sync::broadcast::Sender<proto::Event>);

impl Events {
    pub fn new() -> Events {
        Events(tokio::sync::broadcast::channel(EVENTS_CAPACITY).0)
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<proto::Event> {
        self.0.subscribe()
    }

    /// Sends `kind` to every watcher (to none, if none watches).
    pub fn emit(&self, kind: Kind) {
        let time_unix_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let _ = self.0.send(proto::Event {
            time_unix_millis,
            kind: Some(kind),
        });
    }
}

/// Turns the workers' drop counters into `Drops` events: per reason, what was dropped since the
/// last report.
pub struct DropReports {
    reported: Vec<u64>,
    last: Instant,
}

impl DropReports {
    pub fn new() -> DropReports {
        DropReports {
            reported: vec![0; DropReason::ALL.len()],
            last: Instant::now(),
        }
    }

    /// Emits the drops since the last report, if [`DROPS_INTERVAL`] has passed.
    pub fn report(&mut self, sources: &Sources, events: &Events) {
        let interval = self.last.elapsed();
        if interval < DROPS_INTERVAL {
            return;
        }
        self.last = Instant::now();
        for (&reason, reported) in DropReason::ALL.iter().zip(&mut self.reported) {
            let total: u64 = sources.workers.iter().map(|w| w.drops_for(reason)).sum();
            let packets = total.saturating_sub(*reported);
            *reported = total;
            if packets > 0 {
                events.emit(Kind::Drops(proto::Drops {
                    reason: reason.name().into(),
                    packets,
                    interval_millis: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
                }));
            }
        }
    }
}
