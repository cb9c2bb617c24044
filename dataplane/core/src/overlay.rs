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
use ipnet::IpNet;

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

/// Mirror policies held at most.
pub const MIRROR_POLICIES_MAX: usize = 256;

/// What a mirror policy matches, in either direction of a flow: source and destination prefixes
/// (empty: any), a protocol, and port ranges (empty: any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowMatch {
    pub source: Vec<IpNet>,
    pub destination: Vec<IpNet>,
    pub protocol: Option<u8>,
    pub source_ports: Vec<(u16, u16)>,
    pub destination_ports: Vec<(u16, u16)>,
}

impl FlowMatch {
    /// Whether a packet from `src:sport` to `dst:dport` of `protocol` matches, as it is or with
    /// its ends swapped (a flow's replies).
    pub fn matches(&self, src: IpAddr, dst: IpAddr, protocol: u8, sport: u16, dport: u16) -> bool {
        self.protocol.is_none_or(|p| p == protocol)
            && (self.one_way(src, dst, sport, dport) || self.one_way(dst, src, dport, sport))
    }

    fn one_way(&self, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> bool {
        let address = |nets: &[IpNet], address: IpAddr| {
            nets.is_empty() || nets.iter().any(|net| net.contains(&address))
        };
        let port = |ranges: &[(u16, u16)], port: u16| {
            ranges.is_empty()
                || ranges
                    .iter()
                    .any(|&(first, last)| (first..=last).contains(&port))
        };
        address(&self.source, src)
            && address(&self.destination, dst)
            && port(&self.source_ports, sport)
            && port(&self.destination_ports, dport)
    }
}

/// A mirror policy: the packets it matches are copied to its session until it expires.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorPolicy {
    pub id: u64,
    pub session: String,
    /// The index of `session`.
    pub session_index: u16,
    pub matches: FlowMatch,
    /// Only flows with an anomaly score at least this (scores come with the anomaly models;
    /// until then no flow has one, and a policy with a minimum matches nothing).
    pub min_score: Option<f32>,
    /// Since the router's epoch.
    pub expires_at: Duration,
    /// Who added it, for events and audit.
    pub reason: String,
}

/// The overlay as workers see it.
#[derive(Debug, Default)]
pub struct Overlay {
    by_host: HashMap<IpAddr, DynamicEntry>,
    mirror_policies: Vec<MirrorPolicy>,
    /// Whether an entry or policy mirrors (a worker then keeps each received frame until it is
    /// judged).
    mirrors: bool,
}

impl Overlay {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty() && self.mirror_policies.is_empty()
    }

    /// The session of the first live mirror policy matching the packet, if any.
    #[inline]
    pub fn mirror_policy_session(
        &self,
        (src, dst, protocol, sport, dport): (IpAddr, IpAddr, u8, u16, u16),
        now: Duration,
    ) -> Option<u16> {
        self.mirror_policies
            .iter()
            .find(|policy| {
                policy.expires_at > now
                    && policy.min_score.is_none()
                    && policy.matches.matches(src, dst, protocol, sport, dport)
            })
            .map(|policy| policy.session_index)
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
    #[error("the overlay holds its maximum of {max} mirror policies")]
    PoliciesFull { max: usize },
    #[error("no mirror policy with id {0}")]
    NoSuchPolicy(u64),
}

/// The single writer of the overlay (the control side). A replaced overlay is kept for
/// [`crate::retire::RETIRE_AFTER`] (far longer than a burst), so that the last reference, and
/// the freeing, is the control side's and never a worker's.
#[derive(Debug)]
pub struct OverlayManager {
    shared: SharedOverlay,
    entries: Vec<DynamicEntry>,
    mirror_policies: Vec<MirrorPolicy>,
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
            mirror_policies: Vec::new(),
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
            DynamicAction::Mirror { session } => Some(self.session_index(session)?),
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

    fn session_index(&self, session: &str) -> Result<u16, OverlayError> {
        self.mirror_sessions
            .iter()
            .position(|name| name == session)
            .and_then(|index| u16::try_from(index).ok())
            .ok_or_else(|| OverlayError::UnknownSession(session.to_owned()))
    }

    /// Adds a mirror policy living `ttl` from `now`, copying what `matches` to `session`;
    /// returns its id.
    pub fn add_mirror_policy(
        &mut self,
        session: String,
        matches: FlowMatch,
        min_score: Option<f32>,
        ttl: Duration,
        reason: String,
        now: Duration,
    ) -> Result<u64, OverlayError> {
        if ttl.is_zero() {
            return Err(OverlayError::ZeroTtl);
        }
        let session_index = self.session_index(&session)?;
        if self.mirror_policies.len() >= MIRROR_POLICIES_MAX {
            return Err(OverlayError::PoliciesFull {
                max: MIRROR_POLICIES_MAX,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.mirror_policies.push(MirrorPolicy {
            id,
            session,
            session_index,
            matches,
            min_score,
            expires_at: now + ttl,
            reason,
        });
        self.publish(now);
        Ok(id)
    }

    pub fn remove_mirror_policy(
        &mut self,
        id: u64,
        now: Duration,
    ) -> Result<MirrorPolicy, OverlayError> {
        let index = self
            .mirror_policies
            .iter()
            .position(|p| p.id == id)
            .ok_or(OverlayError::NoSuchPolicy(id))?;
        let policy = self.mirror_policies.remove(index);
        self.publish(now);
        Ok(policy)
    }

    pub fn mirror_policies(&self) -> &[MirrorPolicy] {
        &self.mirror_policies
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

    /// Removes entries and mirror policies past their expiry and frees overlays retired long
    /// enough ago; returns the expired entries and policies (for events).
    pub fn expire(&mut self, now: Duration) -> (Vec<DynamicEntry>, Vec<MirrorPolicy>) {
        let (expired, live): (Vec<_>, Vec<_>) =
            self.entries.drain(..).partition(|e| e.expires_at <= now);
        self.entries = live;
        let (expired_policies, live): (Vec<_>, Vec<_>) = self
            .mirror_policies
            .drain(..)
            .partition(|p| p.expires_at <= now);
        self.mirror_policies = live;
        if !expired.is_empty() || !expired_policies.is_empty() {
            self.publish(now);
        }
        self.retired.release_due(now);
        (expired, expired_policies)
    }

    pub fn entries(&self) -> &[DynamicEntry] {
        &self.entries
    }

    fn publish(&mut self, now: Duration) {
        let by_host = self.entries.iter().map(|e| (e.host, e.clone())).collect();
        let mirrors = self.entries.iter().any(|e| e.mirror_session.is_some())
            || !self.mirror_policies.is_empty();
        let replaced = self.shared.swap(Arc::new(Overlay {
            by_host,
            mirror_policies: self.mirror_policies.clone(),
            mirrors,
        }));
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
        assert_eq!(manager.expire(now + Duration::from_secs(2)).0.len(), 1);
        assert!(shared.load().is_empty());
    }

    #[test]
    fn a_mirror_policy_matches_both_ways_until_it_expires() {
        let mut manager = OverlayManager::new(4, vec!["ids".into()]);
        let shared = manager.shared();
        let now = Duration::from_secs(10);
        let matches = FlowMatch {
            source: vec!["198.18.1.0/24".parse().expect("p")],
            protocol: Some(17),
            destination_ports: vec![(7000, 7099)],
            ..FlowMatch::default()
        };
        let id = manager
            .add_mirror_policy(
                "ids".into(),
                matches,
                None,
                Duration::from_secs(2),
                String::new(),
                now,
            )
            .expect("room");
        let client: IpAddr = "198.18.1.2".parse().expect("a");
        let server: IpAddr = "198.19.0.1".parse().expect("a");
        let overlay = shared.load();
        assert_eq!(
            overlay.mirror_policy_session((client, server, 17, 40000, 7050), now),
            Some(0)
        );
        assert_eq!(
            overlay.mirror_policy_session((server, client, 17, 7050, 40000), now),
            Some(0),
            "the reply"
        );
        assert_eq!(
            overlay.mirror_policy_session((client, server, 6, 40000, 7050), now),
            None
        );
        assert_eq!(
            overlay.mirror_policy_session((client, server, 17, 40000, 7100), now),
            None
        );
        assert_eq!(
            overlay.mirror_policy_session((server, server, 17, 40000, 7050), now),
            None
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(
            overlay.mirror_policy_session((client, server, 17, 40000, 7050), later),
            None
        );
        assert_eq!(manager.expire(later).1.len(), 1);
        assert!(shared.load().is_empty());
        assert_eq!(
            manager.remove_mirror_policy(id, later),
            Err(OverlayError::NoSuchPolicy(id))
        );
        assert_eq!(
            manager.add_mirror_policy(
                "nobody".into(),
                FlowMatch::default(),
                None,
                Duration::from_secs(1),
                String::new(),
                now
            ),
            Err(OverlayError::UnknownSession("nobody".into()))
        );
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
