//! Dynamic entries: a small overlay consulted before the rule set. Entries with a time to live
//! (quarantine a host, rate-limit a source, mirror a host's traffic) that the VFN's own scoring and
//! the API add and remove without touching the versioned rule set. Bounded, expiring, and published
//! whole with `arc-swap` like the rule set; a worker treats an entry past its expiry as absent
//! even before the control side prunes it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hashbrown::HashMap;

use crate::retire::Retired;

/// What an entry does to the packets of its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DynamicAction {
    /// Drop every packet from or to the host.
    Quarantine,
    /// At most this many packets per second from the host (per worker), with a burst.
    RateLimit { packets_per_second: u64, burst: u64 },
    /// Copy the host's packets to a mirror session.
    Mirror { session: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicEntry {
    pub id: u64,
    pub host: IpAddr,
    pub action: DynamicAction,
    /// Since the router's epoch.
    pub expires_at: Duration,
    /// Who added it (scoring, an API client), for events and audit.
    pub reason: String,
    /// For a mirror entry, the index of its session.
    pub mirror_session: Option<u16>,
}

/// The overlay as workers see it.
#[derive(Debug, Default)]
pub struct Overlay {
    by_host: HashMap<IpAddr, DynamicEntry>,
    /// Whether an entry mirrors (a worker then keeps each received frame until it is judged).
    mirrors: bool,
}

impl Overlay {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    #[inline]
    pub fn mirrors(&self) -> bool {
        self.mirrors
    }

    /// The live entry of `host` at `now`, if any.
    #[inline]
    pub fn get(&self, host: IpAddr, now: Duration) -> Option<&DynamicEntry> {
        self.by_host
            .get(&host)
            .filter(|entry| entry.expires_at > now)
    }
}

pub type SharedOverlay = Arc<ArcSwap<Overlay>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    #[error("the overlay holds its maximum of {max} entries")]
    Full { max: usize },
    #[error("a time to live of zero expires at once")]
    ZeroTtl,
    #[error("no dynamic entry with id {0}")]
    NoSuchEntry(u64),
    #[error("no mirror session {0:?}")]
    UnknownSession(String),
}

/// The single writer of the overlay (the control side). A replaced overlay is kept for
/// [`crate::retire::RETIRE_AFTER`] (far longer than a burst), so that the last reference, and
/// the freeing, is the control side's and never a worker's.
#[derive(Debug)]
pub struct OverlayManager {
    shared: SharedOverlay,
    entries: Vec<DynamicEntry>,
    max_entries: usize,
    /// The router's mirror sessions, by index.
    mirror_sessions: Vec<String>,
    next_id: u64,
    retired: Retired<Overlay>,
}

impl OverlayManager {
    /// An empty overlay of at most `max_entries`, whose mirror entries may name
    /// `mirror_sessions` (by index).
    pub fn new(max_entries: usize, mirror_sessions: Vec<String>) -> OverlayManager {
        OverlayManager {
            shared: Arc::default(),
            entries: Vec::new(),
            max_entries,
            mirror_sessions,
            next_id: 1,
            retired: Retired::default(),
        }
    }

    pub fn shared(&self) -> SharedOverlay {
        self.shared.clone()
    }

    /// Adds (or replaces, for the same host) an entry living `ttl` from `now`; returns its id.
    pub fn add(
        &mut self,
        host: IpAddr,
        action: DynamicAction,
        ttl: Duration,
        reason: String,
        now: Duration,
    ) -> Result<u64, OverlayError> {
        if ttl.is_zero() {
            return Err(OverlayError::ZeroTtl);
        }
        let mirror_session = match &action {
            DynamicAction::Mirror { session } => Some(
                self.mirror_sessions
                    .iter()
                    .position(|name| name == session)
                    .and_then(|index| u16::try_from(index).ok())
                    .ok_or_else(|| OverlayError::UnknownSession(session.clone()))?,
            ),
            _ => None,
        };
        self.entries.retain(|e| e.host != host);
        if self.entries.len() >= self.max_entries {
            return Err(OverlayError::Full {
                max: self.max_entries,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(DynamicEntry {
            id,
            host,
            action,
            expires_at: now + ttl,
            reason,
            mirror_session,
        });
        self.publish(now);
        Ok(id)
    }

    pub fn remove(&mut self, id: u64, now: Duration) -> Result<DynamicEntry, OverlayError> {
        let index = self
            .entries
            .iter()
            .position(|e| e.id == id)
            .ok_or(OverlayError::NoSuchEntry(id))?;
        let entry = self.entries.remove(index);
        self.publish(now);
        Ok(entry)
    }

    /// Removes entries past their expiry and frees overlays retired long enough ago; returns the
    /// expired entries (for events).
    pub fn expire(&mut self, now: Duration) -> Vec<DynamicEntry> {
        let (expired, live): (Vec<_>, Vec<_>) =
            self.entries.drain(..).partition(|e| e.expires_at <= now);
        self.entries = live;
        if !expired.is_empty() {
            self.publish(now);
        }
        self.retired.release_due(now);
        expired
    }

    pub fn entries(&self) -> &[DynamicEntry] {
        &self.entries
    }

    fn publish(&mut self, now: Duration) {
        let by_host = self.entries.iter().map(|e| (e.host, e.clone())).collect();
        let mirrors = self.entries.iter().any(|e| e.mirror_session.is_some());
        let replaced = self.shared.swap(Arc::new(Overlay { by_host, mirrors }));
        self.retired.hold(replaced, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 2, 2));

    #[test]
    fn an_entry_lives_for_its_ttl_and_is_then_pruned() {
        let mut manager = OverlayManager::new(4, Vec::new());
        let shared = manager.shared();
        let now = Duration::from_secs(10);
        manager
            .add(
                HOST,
                DynamicAction::Quarantine,
                Duration::from_secs(2),
                "test".into(),
                now,
            )
            .expect("room");
        assert!(
            shared
                .load()
                .get(HOST, now + Duration::from_millis(1500))
                .is_some()
        );
        assert!(
            shared
                .load()
                .get(HOST, now + Duration::from_secs(2))
                .is_none(),
            "expired even before pruning"
        );
        assert_eq!(manager.expire(now + Duration::from_secs(2)).len(), 1);
        assert!(shared.load().is_empty());
    }

    #[test]
    fn bounded_and_one_entry_per_host() {
        let mut manager = OverlayManager::new(1, vec!["ids".into()]);
        let now = Duration::ZERO;
        manager
            .add(
                HOST,
                DynamicAction::Quarantine,
                Duration::from_secs(1),
                String::new(),
                now,
            )
            .expect("room");
        manager
            .add(
                HOST,
                DynamicAction::Mirror {
                    session: "ids".into(),
                },
                Duration::from_secs(1),
                String::new(),
                now,
            )
            .expect("replaces");
        assert_eq!(manager.entries().len(), 1);
        assert_eq!(manager.entries()[0].mirror_session, Some(0));
        assert!(manager.shared().load().mirrors());
        let other = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 2, 3));
        assert_eq!(
            manager.add(
                other,
                DynamicAction::Quarantine,
                Duration::from_secs(1),
                String::new(),
                now
            ),
            Err(OverlayError::Full { max: 1 })
        );
        assert_eq!(
            manager.add(
                other,
                DynamicAction::Quarantine,
                Duration::ZERO,
                String::new(),
                now
            ),
            Err(OverlayError::ZeroTtl)
        );
        assert_eq!(
            manager.add(
                HOST,
                DynamicAction::Mirror {
                    session: "other".into()
                },
                Duration::from_secs(1),
                String::new(),
                now
            ),
            Err(OverlayError::UnknownSession("other".into()))
        );
    }
}
