//! The neighbour table (ARP for IPv4, NDP for IPv6): bounded, shared by all workers without locks.
//!
//! The slow-path thread is the only writer ([`NeighbourManager`]). Each entry lives in a fixed
//! slot whose state and MAC address are one atomic word, so a resolved neighbour becomes visible to
//! every worker with one store, and routes through a gateway point straight at its slot. The map
//! from (interface, address) to slot is an immutable snapshot published with `arc-swap`; workers
//! load it once per burst. A freed slot is only reused after a quarantine (1 s) far longer than a
//! burst (microseconds), so a worker reads another neighbour's address through an older snapshot
//! only if it stalls mid-burst for longer than that.
//!
//! Besides what ARP and NDP teach, the control side adds static neighbours (never solicited, aged
//! or overridden) and deletes neighbours, through the slow path.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use hashbrown::{HashMap, HashSet};

use crate::iface::{IfIndex, Interfaces};
use crate::wire::LearnPolicy;

/// A neighbour is an address on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NeighbourKey {
    pub iface: IfIndex,
    pub addr: IpAddr,
}

/// Index of a slot in the neighbour table.
pub type NeighbourSlot = u32;

/// What a worker may do with packets for a neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Send to this MAC address.
    Reachable([u8; 6]),
    /// Resolution in progress: queue the packet (bounded) and wait.
    Incomplete,
    /// Resolution failed recently: drop and report the host unreachable.
    Failed,
}

const STATE_SHIFT: u32 = 48;
const STATE_INCOMPLETE: u64 = 0;
const STATE_REACHABLE: u64 = 1;
const STATE_FAILED: u64 = 2;
const STATE_MASK: u64 = 0x3;
const MAC_MASK: u64 = (1 << STATE_SHIFT) - 1;
/// Set by a worker the first time it uses a reachable entry after the manager cleared it: the
/// manager re-confirms used entries and lets unused ones go stale (RFC 4861 section 7.3).
const USED: u64 = 1 << 63;
/// Set on a reachable entry that was configured, not learned; workers ignore it (they read it as
/// reachable), listings show it.
const STATIC: u64 = 1 << 62;
const _: () = assert!(STATIC & (USED | (STATE_MASK << STATE_SHIFT) | MAC_MASK) == 0);

fn encode(resolution: Resolution) -> u64 {
    match resolution {
        Resolution::Incomplete => STATE_INCOMPLETE << STATE_SHIFT,
        Resolution::Failed => STATE_FAILED << STATE_SHIFT,
        Resolution::Reachable(mac) => {
            let mut word = [0u8; 8];
            word[2..].copy_from_slice(&mac);
            (STATE_REACHABLE << STATE_SHIFT) | u64::from_be_bytes(word)
        }
    }
}

/// What a listing shows of an entry's word.
fn listed(word: u64) -> (NeighbourState, Option<[u8; 6]>) {
    match decode(word) {
        Resolution::Reachable(mac) if word & STATIC != 0 => (NeighbourState::Static, Some(mac)),
        Resolution::Reachable(mac) => (NeighbourState::Reachable, Some(mac)),
        Resolution::Incomplete => (NeighbourState::Incomplete, None),
        Resolution::Failed => (NeighbourState::Failed, None),
    }
}

fn decode(word: u64) -> Resolution {
    match (word >> STATE_SHIFT) & STATE_MASK {
        STATE_REACHABLE => {
            let bytes = (word & MAC_MASK).to_be_bytes();
            Resolution::Reachable([bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
        }
        STATE_FAILED => Resolution::Failed,
        _ => Resolution::Incomplete,
    }
}

/// The map from neighbour to slot, as of one publication.
#[derive(Debug, Default)]
pub struct NeighbourIndex {
    map: HashMap<NeighbourKey, NeighbourSlot>,
}

impl NeighbourIndex {
    #[inline]
    pub fn slot(&self, key: &NeighbourKey) -> Option<NeighbourSlot> {
        self.map.get(key).copied()
    }
}

/// The state of a neighbour as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighbourState {
    /// Being resolved (or a route's gateway not resolved yet).
    Incomplete,
    /// Resolved by ARP or NDP (possibly stale and being re-confirmed).
    Reachable,
    /// Did not answer; packets to it are refused for a while.
    Failed,
    /// Configured: never solicited, aged or overridden.
    Static,
}

/// A neighbour as listed for the control side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub key: NeighbourKey,
    pub state: NeighbourState,
    /// Known for reachable and static neighbours.
    pub mac: Option<[u8; 6]>,
}

/// The shared part: slots and the published index.
#[derive(Debug)]
pub struct NeighbourTable {
    slots: Box<[AtomicU64]>,
    index: ArcSwap<NeighbourIndex>,
}

impl NeighbourTable {
    pub fn new(capacity: usize) -> Arc<NeighbourTable> {
        Arc::new(NeighbourTable {
            slots: (0..capacity)
                .map(|_| AtomicU64::new(encode(Resolution::Incomplete)))
                .collect(),
            index: ArcSwap::from_pointee(NeighbourIndex::default()),
        })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The current index; load once per burst.
    #[inline]
    pub fn index(&self) -> Guard<Arc<NeighbourIndex>> {
        self.index.load()
    }

    /// What is known of the neighbour in `slot`; marks a reachable entry used (one write per
    /// entry per confirmation period, not per packet).
    #[inline]
    pub fn resolution(&self, slot: NeighbourSlot) -> Resolution {
        let Some(cell) = self.slots.get(slot as usize) else {
            return Resolution::Failed;
        };
        let word = cell.load(Ordering::Acquire);
        if word & USED == 0 && (word >> STATE_SHIFT) & STATE_MASK == STATE_REACHABLE {
            cell.fetch_or(USED, Ordering::Relaxed);
        }
        decode(word)
    }

    /// The word of `slot`, read without marking the entry used.
    fn peek(&self, slot: NeighbourSlot) -> Option<u64> {
        self.slots
            .get(slot as usize)
            .map(|cell| cell.load(Ordering::Acquire))
    }

    /// Every published entry, by interface and address. Reading marks nothing used, so listing
    /// keeps no entry alive.
    pub fn entries(&self) -> Vec<NeighbourEntry> {
        let index = self.index();
        let mut entries: Vec<NeighbourEntry> = index
            .map
            .iter()
            .filter_map(|(&key, &slot)| {
                let (state, mac) = listed(self.peek(slot)?);
                Some(NeighbourEntry { key, state, mac })
            })
            .collect();
        entries.sort_unstable_by_key(|entry| (entry.key.iface, entry.key.addr));
        entries
    }

    /// Whether the entry in `slot` was used since the last call (which clears the mark).
    fn take_used(&self, slot: NeighbourSlot) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|cell| cell.fetch_and(!USED, Ordering::Relaxed) & USED != 0)
    }

    /// Resolution of a neighbour through an index snapshot; `None` when it has no entry.
    #[inline]
    pub fn lookup(&self, index: &NeighbourIndex, key: &NeighbourKey) -> Option<Resolution> {
        index.slot(key).map(|slot| self.resolution(slot))
    }

    fn set(&self, slot: NeighbourSlot, resolution: Resolution) {
        self.store(slot, encode(resolution));
    }

    fn set_static(&self, slot: NeighbourSlot, mac: [u8; 6]) {
        self.store(slot, encode(Resolution::Reachable(mac)) | STATIC);
    }

    fn store(&self, slot: NeighbourSlot, word: u64) {
        if let Some(cell) = self.slots.get(slot as usize) {
            cell.store(word, Ordering::Release);
        }
    }
}

/// Timers of neighbour resolution (defaults close to Linux's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourTimers {
    /// Time between two solicitations of the same neighbour.
    pub retransmit: Duration,
    /// Solicitations before giving up.
    pub max_probes: u32,
    /// How long a confirmation keeps a neighbour reachable before it is probed again.
    pub reachable: Duration,
    /// How long a failed neighbour keeps its entry (packets to it are refused at once).
    pub failed_hold: Duration,
    /// How long an unused stale entry stays before it is removed (Linux: gc_stale_time).
    pub stale_removal: Duration,
    /// How long a freed slot waits before reuse (longer than any burst).
    pub reuse_quarantine: Duration,
}

impl Default for NeighbourTimers {
    fn default() -> Self {
        NeighbourTimers {
            retransmit: Duration::from_secs(1),
            max_probes: 3,
            reachable: Duration::from_secs(30),
            failed_hold: Duration::from_secs(3),
            stale_removal: Duration::from_secs(60),
            reuse_quarantine: Duration::from_secs(1),
        }
    }
}

/// Re-confirms a used entry's `mac` with a unicast solicitation (the first probe); the next is
/// due at `next_at`.
fn start_probe(
    key: NeighbourKey,
    mac: [u8; 6],
    next_at: Duration,
    solicit: &mut Vec<Solicitation>,
) -> EntryState {
    solicit.push(Solicitation {
        key,
        known_mac: Some(mac),
    });
    EntryState::Probing {
        mac,
        probes: 1,
        next_at,
    }
}

/// A solicitation the slow path must send: ARP request or neighbour solicitation for `key`,
/// broadcast/multicast, or unicast to `known_mac` when re-confirming a neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solicitation {
    pub key: NeighbourKey,
    pub known_mac: Option<[u8; 6]>,
}

/// A change worth an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighbourChange {
    Resolved { key: NeighbourKey, mac: [u8; 6] },
    Failed { key: NeighbourKey },
    Removed { key: NeighbourKey },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryState {
    /// Being resolved: `probes` sent, the next one due at `next_at`.
    Incomplete { probes: u32, next_at: Duration },
    /// Confirmed at `confirmed_at`.
    Reachable {
        mac: [u8; 6],
        confirmed_at: Duration,
    },
    /// Unconfirmed for too long and unused since: still usable; probed when used again,
    /// removed when unused for [`NeighbourTimers::stale_removal`].
    Stale { mac: [u8; 6], since: Duration },
    /// Unconfirmed for too long and in use: still used, probed by unicast.
    Probing {
        mac: [u8; 6],
        probes: u32,
        next_at: Duration,
    },
    /// Unreachable until `until`.
    Failed { until: Duration },
    /// Configured at `mac`: never solicited, aged or overridden by ARP or NDP.
    Static { mac: [u8; 6] },
}

/// The MAC address an entry in `state` sends to, if any.
fn known_mac(state: EntryState) -> Option<[u8; 6]> {
    match state {
        EntryState::Reachable { mac, .. }
        | EntryState::Stale { mac, .. }
        | EntryState::Probing { mac, .. }
        | EntryState::Static { mac } => Some(mac),
        EntryState::Incomplete { .. } | EntryState::Failed { .. } => None,
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: NeighbourKey,
    state: EntryState,
    /// Next hops of routes: never removed, re-resolved after failure.
    pinned: bool,
}

/// The table is full: no slot for a new neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("neighbour table full ({capacity} entries)")]
pub struct TableFull {
    pub capacity: usize,
}

/// [`NeighbourManager::pin_all`] found no room for `keys[index]` (nor for the keys after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoomFor {
    pub index: usize,
    pub full: TableFull,
}

/// Why a change of a neighbour asked by the control side was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NeighbourError {
    #[error("interface index {0} does not exist")]
    NoSuchInterface(IfIndex),
    #[error("{addr} is not on-link on {iface}")]
    NotOnLink { addr: IpAddr, iface: String },
    #[error("{addr} is the router's own address on {iface}")]
    OwnAddress { addr: IpAddr, iface: String },
    #[error("a static neighbour needs a unicast MAC address (not zero, multicast or broadcast)")]
    NotUnicastMac,
    #[error("no neighbour {} on interface index {}", .0.addr, .0.iface)]
    NoSuchNeighbour(NeighbourKey),
    #[error(transparent)]
    TableFull(#[from] TableFull),
}

/// Checks a static neighbour: on-link on its interface (or IPv6 link-local, as learning
/// requires), not one of the router's addresses, at a unicast MAC address.
pub fn check_static(
    ifaces: &Interfaces,
    key: &NeighbourKey,
    mac: [u8; 6],
) -> Result<(), NeighbourError> {
    let iface = ifaces
        .get(key.iface)
        .ok_or(NeighbourError::NoSuchInterface(key.iface))?;
    let on_link = iface.is_on_link(key.addr)
        || matches!(key.addr, IpAddr::V6(a) if a.is_unicast_link_local());
    if !on_link {
        return Err(NeighbourError::NotOnLink {
            addr: key.addr,
            iface: iface.name.clone(),
        });
    }
    if iface.owns(key.addr) {
        return Err(NeighbourError::OwnAddress {
            addr: key.addr,
            iface: iface.name.clone(),
        });
    }
    let multicast = mac[0] & 1 != 0;
    if multicast || mac == [0; 6] {
        return Err(NeighbourError::NotUnicastMac);
    }
    Ok(())
}

/// The single writer of the neighbour table, run by the slow-path thread. Times are durations
/// since a fixed start (the caller's clock), so the logic is testable without waiting.
#[derive(Debug)]
pub struct NeighbourManager {
    table: Arc<NeighbourTable>,
    timers: NeighbourTimers,
    entries: Vec<Option<Entry>>,
    map: HashMap<NeighbourKey, NeighbourSlot>,
    free: Vec<NeighbourSlot>,
    quarantined: VecDeque<(NeighbourSlot, Duration)>,
    dirty: bool,
}

impl NeighbourManager {
    pub fn new(table: Arc<NeighbourTable>, timers: NeighbourTimers) -> NeighbourManager {
        let capacity = table.capacity();
        NeighbourManager {
            table,
            timers,
            entries: vec![None; capacity],
            map: HashMap::with_capacity(capacity),
            // Pop from the end: lowest slots first.
            free: (0..capacity as NeighbourSlot).rev().collect(),
            quarantined: VecDeque::with_capacity(capacity),
            dirty: false,
        }
    }

    pub fn table(&self) -> &Arc<NeighbourTable> {
        &self.table
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A worker needs `key`: create an entry if there is none. Returns the solicitation to send
    /// at once for a new entry (later ones come from [`NeighbourManager::poll`]).
    pub fn resolve(
        &mut self,
        key: NeighbourKey,
        now: Duration,
    ) -> Result<Option<Solicitation>, TableFull> {
        if self.map.contains_key(&key) {
            return Ok(None);
        }
        let slot = self.insert(key, false, now)?;
        if let Some(entry) = self.entries[slot as usize].as_mut() {
            entry.state = EntryState::Incomplete {
                probes: 1,
                next_at: now + self.timers.retransmit,
            };
        }
        Ok(Some(Solicitation {
            key,
            known_mac: None,
        }))
    }

    /// What is known of `key` now (the manager's own view, ahead of the published index).
    pub fn resolution_of(&self, key: &NeighbourKey) -> Option<Resolution> {
        self.map.get(key).map(|&slot| self.table.resolution(slot))
    }

    /// A route's gateway: an entry that is never removed. Returns its slot for the FIB.
    pub fn pin(&mut self, key: NeighbourKey, now: Duration) -> Result<NeighbourSlot, TableFull> {
        if let Some(&slot) = self.map.get(&key) {
            if let Some(entry) = self.entries[slot as usize].as_mut() {
                entry.pinned = true;
            }
            return Ok(slot);
        }
        self.insert(key, true, now)
    }

    /// Pins every key of `keys` (the gateways of a route list, in order), all or none: when the
    /// table has no room for all of them, nothing changes.
    pub fn pin_all(
        &mut self,
        keys: &[NeighbourKey],
        now: Duration,
    ) -> Result<Vec<NeighbourSlot>, NoRoomFor> {
        self.release_quarantined(now);
        let mut new_keys = HashSet::new();
        for (index, key) in keys.iter().enumerate() {
            if !self.map.contains_key(key)
                && new_keys.insert(*key)
                && new_keys.len() > self.free.len()
            {
                return Err(NoRoomFor {
                    index,
                    full: TableFull {
                        capacity: self.table.capacity(),
                    },
                });
            }
        }
        keys.iter()
            .enumerate()
            .map(|(index, &key)| self.pin(key, now).map_err(|full| NoRoomFor { index, full }))
            .collect()
    }

    /// No route uses `key` as its gateway any more: its entry ages like any other.
    pub fn unpin(&mut self, key: &NeighbourKey) {
        if let Some(entry) = self
            .map
            .get(key)
            .and_then(|&slot| self.entries[slot as usize].as_mut())
        {
            entry.pinned = false;
        }
    }

    /// Makes `key` a static neighbour at `mac` (Linux: `nud permanent`): used at once, never
    /// solicited, aged or overridden by ARP or NDP, until [`NeighbourManager::forget`].
    pub fn add_static(
        &mut self,
        key: NeighbourKey,
        mac: [u8; 6],
        now: Duration,
    ) -> Result<Option<NeighbourChange>, TableFull> {
        let slot = match self.map.get(&key) {
            Some(&slot) => slot,
            None => self.insert(key, false, now)?,
        };
        let Some(entry) = self.entries[slot as usize].as_mut() else {
            return Ok(None);
        };
        let known = known_mac(entry.state);
        entry.state = EntryState::Static { mac };
        self.table.set_static(slot, mac);
        Ok((known != Some(mac)).then_some(NeighbourChange::Resolved { key, mac }))
    }

    /// Forgets what is known of `key`, static or learned. A route's gateway keeps its entry and
    /// is solicited again at once; any other entry is removed, and resolved again when a packet
    /// needs it.
    pub fn forget(
        &mut self,
        key: &NeighbourKey,
        now: Duration,
        changes: &mut Vec<NeighbourChange>,
    ) -> Result<(), NeighbourError> {
        let slot = *self
            .map
            .get(key)
            .ok_or(NeighbourError::NoSuchNeighbour(*key))?;
        let Some(entry) = self.entries[slot as usize].as_mut() else {
            return Err(NeighbourError::NoSuchNeighbour(*key));
        };
        if entry.pinned {
            entry.state = EntryState::Incomplete {
                probes: 0,
                next_at: now,
            };
            self.table.set(slot, Resolution::Incomplete);
        } else {
            self.remove(slot as usize, *key, now, changes);
        }
        Ok(())
    }

    fn insert(
        &mut self,
        key: NeighbourKey,
        pinned: bool,
        now: Duration,
    ) -> Result<NeighbourSlot, TableFull> {
        self.release_quarantined(now);
        let slot = self.free.pop().ok_or(TableFull {
            capacity: self.table.capacity(),
        })?;
        self.entries[slot as usize] = Some(Entry {
            key,
            state: EntryState::Incomplete {
                probes: 0,
                next_at: now,
            },
            pinned,
        });
        self.table.set(slot, Resolution::Incomplete);
        self.map.insert(key, slot);
        self.dirty = true;
        Ok(slot)
    }

    /// An ARP or NDP message told us `key` is at `mac`; `policy` says what that may change.
    pub fn learned(
        &mut self,
        key: NeighbourKey,
        mac: [u8; 6],
        policy: LearnPolicy,
        now: Duration,
    ) -> Option<NeighbourChange> {
        let slot = match (self.map.get(&key), policy) {
            (Some(&slot), _) => slot,
            (None, LearnPolicy::Create) => self.insert(key, false, now).ok()?,
            (None, _) => return None,
        };
        let entry = self.entries[slot as usize].as_mut()?;
        let was = entry.state;
        if matches!(was, EntryState::Static { .. }) {
            // Configured by the operator: what the network says does not change it.
            return None;
        }
        if policy == LearnPolicy::FillIncomplete
            && !matches!(
                was,
                EntryState::Incomplete { .. } | EntryState::Failed { .. }
            )
        {
            return None;
        }
        entry.state = EntryState::Reachable {
            mac,
            confirmed_at: now,
        };
        self.table.set(slot, Resolution::Reachable(mac));
        (known_mac(was) != Some(mac)).then_some(NeighbourChange::Resolved { key, mac })
    }

    /// Advances timers: solicitations due go to `solicit`, state changes to `changes`. Bounded by
    /// the table size.
    pub fn poll(
        &mut self,
        now: Duration,
        solicit: &mut Vec<Solicitation>,
        changes: &mut Vec<NeighbourChange>,
    ) {
        let timers = self.timers;
        for slot in 0..self.entries.len() {
            let Some(entry) = self.entries[slot].as_mut() else {
                continue;
            };
            let key = entry.key;
            match entry.state {
                EntryState::Incomplete { probes, next_at } if now >= next_at => {
                    if probes >= timers.max_probes {
                        entry.state = EntryState::Failed {
                            until: now + timers.failed_hold,
                        };
                        self.table.set(slot as NeighbourSlot, Resolution::Failed);
                        changes.push(NeighbourChange::Failed { key });
                    } else {
                        entry.state = EntryState::Incomplete {
                            probes: probes + 1,
                            next_at: now + timers.retransmit,
                        };
                        solicit.push(Solicitation {
                            key,
                            known_mac: None,
                        });
                    }
                }
                EntryState::Reachable { mac, confirmed_at }
                    if now >= confirmed_at + timers.reachable =>
                {
                    if self.table.take_used(slot as NeighbourSlot) {
                        entry.state = start_probe(key, mac, now + timers.retransmit, solicit);
                    } else {
                        entry.state = EntryState::Stale { mac, since: now };
                    }
                }
                EntryState::Stale { mac, since } => {
                    if self.table.take_used(slot as NeighbourSlot) {
                        entry.state = start_probe(key, mac, now + timers.retransmit, solicit);
                    } else if !entry.pinned && now >= since + timers.stale_removal {
                        self.remove(slot, key, now, changes);
                    }
                }
                EntryState::Probing {
                    mac,
                    probes,
                    next_at,
                } if now >= next_at => {
                    if probes >= timers.max_probes {
                        entry.state = EntryState::Failed {
                            until: now + timers.failed_hold,
                        };
                        self.table.set(slot as NeighbourSlot, Resolution::Failed);
                        changes.push(NeighbourChange::Failed { key });
                    } else {
                        entry.state = EntryState::Probing {
                            mac,
                            probes: probes + 1,
                            next_at: now + timers.retransmit,
                        };
                        solicit.push(Solicitation {
                            key,
                            known_mac: Some(mac),
                        });
                    }
                }
                EntryState::Failed { until } if now >= until => {
                    if entry.pinned {
                        // A gateway is retried for as long as routes use it.
                        entry.state = EntryState::Incomplete {
                            probes: 0,
                            next_at: now,
                        };
                        self.table
                            .set(slot as NeighbourSlot, Resolution::Incomplete);
                    } else {
                        self.remove(slot, key, now, changes);
                    }
                }
                _ => {}
            }
        }
        self.release_quarantined(now);
    }

    /// Drops the entry in `slot`; the slot is reused after the quarantine.
    fn remove(
        &mut self,
        slot: usize,
        key: NeighbourKey,
        now: Duration,
        changes: &mut Vec<NeighbourChange>,
    ) {
        self.entries[slot] = None;
        self.map.remove(&key);
        self.quarantined.push_back((slot as NeighbourSlot, now));
        self.dirty = true;
        changes.push(NeighbourChange::Removed { key });
    }

    fn release_quarantined(&mut self, now: Duration) {
        while let Some(&(slot, since)) = self.quarantined.front() {
            if now < since + self.timers.reuse_quarantine {
                break;
            }
            self.quarantined.pop_front();
            self.free.push(slot);
        }
    }

    /// Publishes the index if entries were added or removed since the last publication.
    pub fn publish(&mut self) {
        if self.dirty {
            self.table.index.store(Arc::new(NeighbourIndex {
                map: self.map.clone(),
            }));
            self.dirty = false;
        }
    }

    /// Every entry with its resolution, for listing (marks nothing used).
    pub fn entries(&self) -> impl Iterator<Item = (NeighbourKey, Resolution)> + '_ {
        self.entries.iter().enumerate().filter_map(|(slot, entry)| {
            let word = self.table.peek(slot as NeighbourSlot)?;
            entry.map(|e| (e.key, decode(word)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn key(last: u8) -> NeighbourKey {
        NeighbourKey {
            iface: 0,
            addr: IpAddr::from([198, 18, 1, last]),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn manager(capacity: usize) -> NeighbourManager {
        NeighbourManager::new(NeighbourTable::new(capacity), NeighbourTimers::default())
    }

    fn slot_of(m: &NeighbourManager, key: NeighbourKey) -> NeighbourSlot {
        m.table().index().slot(&key).expect("published")
    }

    #[test]
    fn resolve_solicits_at_once_then_learns() {
        let mut m = manager(4);
        let first = m.resolve(key(2), secs(0)).expect("room");
        assert_eq!(
            first,
            Some(Solicitation {
                key: key(2),
                known_mac: None
            })
        );
        assert_eq!(
            m.resolve(key(2), secs(0)).expect("room"),
            None,
            "one entry, one solicitation"
        );
        m.publish();
        let table = m.table().clone();
        assert_eq!(
            table.lookup(&table.index(), &key(2)),
            Some(Resolution::Incomplete)
        );
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        m.poll(secs(0), &mut solicit, &mut changes);
        assert!(
            solicit.is_empty(),
            "the next probe waits for the retransmit time"
        );
        m.poll(secs(1), &mut solicit, &mut changes);
        assert_eq!(solicit.len(), 1);
        assert_eq!(
            m.learned(key(2), MAC, LearnPolicy::Update, secs(1)),
            Some(NeighbourChange::Resolved {
                key: key(2),
                mac: MAC
            })
        );
        assert_eq!(
            table.resolution(slot_of(&m, key(2))),
            Resolution::Reachable(MAC)
        );
    }

    #[test]
    fn unanswered_neighbour_fails_after_max_probes_then_is_removed() {
        let mut m = manager(4);
        m.resolve(key(2), secs(0)).expect("room");
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        for s in 0..3 {
            m.poll(secs(s), &mut solicit, &mut changes);
        }
        assert_eq!(solicit.len(), 2, "with the first, three solicitations");
        m.poll(secs(3), &mut solicit, &mut changes);
        assert_eq!(changes, vec![NeighbourChange::Failed { key: key(2) }]);
        m.publish();
        let table = m.table().clone();
        assert_eq!(
            table.lookup(&table.index(), &key(2)),
            Some(Resolution::Failed)
        );
        m.poll(secs(6), &mut solicit, &mut changes);
        m.publish();
        assert_eq!(table.lookup(&table.index(), &key(2)), None);
        assert!(m.is_empty());
    }

    #[test]
    fn table_is_bounded_and_freed_slots_are_reused_after_quarantine() {
        let mut m = manager(1);
        m.resolve(key(2), secs(0)).expect("room");
        assert_eq!(m.resolve(key(3), secs(0)), Err(TableFull { capacity: 1 }));
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        for s in 0..=6 {
            m.poll(secs(s), &mut solicit, &mut changes);
        }
        assert!(m.is_empty());
        assert_eq!(
            m.resolve(key(3), secs(6)),
            Err(TableFull { capacity: 1 }),
            "still quarantined"
        );
        assert!(m.resolve(key(3), secs(8)).is_ok());
    }

    #[test]
    fn pinned_gateway_is_retried_not_removed() {
        let mut m = manager(2);
        m.pin(key(1), secs(0)).expect("room");
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        for s in 0..=7 {
            m.poll(secs(s), &mut solicit, &mut changes);
        }
        assert_eq!(m.len(), 1);
        assert!(solicit.len() > 3, "re-solicited after the failed hold");
    }

    #[test]
    fn a_used_neighbour_is_reconfirmed_by_unicast_and_stays_usable() {
        let mut m = manager(2);
        m.resolve(key(2), secs(0)).expect("room");
        m.learned(key(2), MAC, LearnPolicy::Update, secs(0));
        m.publish();
        let slot = slot_of(&m, key(2));
        assert_eq!(
            m.table().resolution(slot),
            Resolution::Reachable(MAC),
            "a worker uses it"
        );
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        m.poll(secs(31), &mut solicit, &mut changes);
        assert_eq!(
            solicit,
            vec![Solicitation {
                key: key(2),
                known_mac: Some(MAC)
            }]
        );
        assert_eq!(m.table().resolution(slot), Resolution::Reachable(MAC));
        assert_eq!(
            m.learned(key(2), MAC, LearnPolicy::Update, secs(31)),
            None,
            "same MAC is no change"
        );
    }

    #[test]
    fn an_unused_neighbour_goes_stale_unprobed_then_is_removed() {
        let mut m = manager(2);
        m.resolve(key(2), secs(0)).expect("room");
        m.learned(key(2), MAC, LearnPolicy::Update, secs(0));
        m.publish();
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        m.poll(secs(31), &mut solicit, &mut changes);
        assert!(solicit.is_empty(), "nobody used it: no probe");
        let slot = slot_of(&m, key(2));
        assert_eq!(
            m.table().resolution(slot),
            Resolution::Reachable(MAC),
            "stale is still usable"
        );
        // Used while stale: probed at the next poll.
        m.poll(secs(32), &mut solicit, &mut changes);
        assert_eq!(
            solicit,
            vec![Solicitation {
                key: key(2),
                known_mac: Some(MAC)
            }]
        );
        // Answered, then left alone: stale after 30 s, removed 60 s later.
        m.learned(key(2), MAC, LearnPolicy::Update, secs(33));
        for s in [64, 100, 124] {
            m.poll(secs(s), &mut solicit, &mut changes);
        }
        assert_eq!(
            changes.last(),
            Some(&NeighbourChange::Removed { key: key(2) })
        );
        assert!(m.is_empty());
    }

    #[test]
    fn advertisement_without_override_only_completes_resolution() {
        let mut m = manager(2);
        let other = [2, 0, 0, 0, 0, 0x77];
        m.learned(key(2), MAC, LearnPolicy::Create, secs(0));
        assert_eq!(
            m.learned(key(2), other, LearnPolicy::FillIncomplete, secs(1)),
            None,
            "keeps the known MAC"
        );
        m.resolve(key(3), secs(1)).expect("room");
        assert!(
            m.learned(key(3), other, LearnPolicy::FillIncomplete, secs(1))
                .is_some()
        );
        assert_eq!(
            m.learned(key(4), other, LearnPolicy::FillIncomplete, secs(1)),
            None,
            "creates nothing"
        );
    }

    #[test]
    fn learning_creates_only_when_asked() {
        let mut m = manager(2);
        assert_eq!(m.learned(key(7), MAC, LearnPolicy::Update, secs(0)), None);
        assert!(m.is_empty());
        assert!(
            m.learned(key(7), MAC, LearnPolicy::Create, secs(0))
                .is_some()
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_static_neighbour_is_never_solicited_aged_or_overridden() {
        let mut m = manager(4);
        let other = [2, 0, 0, 0, 0, 0x77];
        assert_eq!(
            m.add_static(key(5), MAC, secs(0)),
            Ok(Some(NeighbourChange::Resolved {
                key: key(5),
                mac: MAC
            }))
        );
        m.publish();
        let slot = slot_of(&m, key(5));
        assert_eq!(m.table().resolution(slot), Resolution::Reachable(MAC));
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        for s in (0..=600).step_by(5) {
            m.poll(secs(s), &mut solicit, &mut changes);
        }
        assert!(solicit.is_empty(), "never re-confirmed");
        assert!(changes.is_empty(), "never stale, failed or removed");
        assert_eq!(
            m.learned(key(5), other, LearnPolicy::Create, secs(600)),
            None,
            "ARP and NDP do not override it"
        );
        assert_eq!(m.table().resolution(slot), Resolution::Reachable(MAC));
        assert_eq!(
            m.table().entries(),
            vec![NeighbourEntry {
                key: key(5),
                state: NeighbourState::Static,
                mac: Some(MAC)
            }]
        );
    }

    #[test]
    fn a_learned_neighbour_made_static_keeps_its_slot_and_reports_only_a_new_mac() {
        let mut m = manager(4);
        m.learned(key(5), MAC, LearnPolicy::Create, secs(0));
        m.publish();
        let slot = slot_of(&m, key(5));
        assert_eq!(m.add_static(key(5), MAC, secs(1)), Ok(None), "same MAC");
        let other = [2, 0, 0, 0, 0, 0x77];
        assert!(
            m.add_static(key(5), other, secs(1))
                .expect("room")
                .is_some()
        );
        m.publish();
        assert_eq!(slot_of(&m, key(5)), slot);
        assert_eq!(m.table().resolution(slot), Resolution::Reachable(other));
    }

    #[test]
    fn forgetting_removes_an_entry_but_resolves_a_gateway_again() {
        let mut m = manager(4);
        let mut changes = Vec::new();
        m.add_static(key(5), MAC, secs(0)).expect("room");
        m.forget(&key(5), secs(1), &mut changes).expect("known");
        assert_eq!(changes, vec![NeighbourChange::Removed { key: key(5) }]);
        assert!(m.is_empty());
        assert_eq!(
            m.forget(&key(5), secs(1), &mut changes),
            Err(NeighbourError::NoSuchNeighbour(key(5)))
        );

        let gateway = m.pin(key(1), secs(0)).expect("room");
        m.learned(key(1), MAC, LearnPolicy::Update, secs(0));
        m.forget(&key(1), secs(2), &mut changes).expect("known");
        assert_eq!(m.len(), 1, "a gateway keeps its entry");
        assert_eq!(m.table().resolution(gateway), Resolution::Incomplete);
        let mut solicit = Vec::new();
        m.poll(secs(2), &mut solicit, &mut changes);
        assert_eq!(
            solicit,
            vec![Solicitation {
                key: key(1),
                known_mac: None
            }],
            "solicited again at once"
        );
    }

    #[test]
    fn pinning_a_route_list_is_all_or_nothing() {
        let mut m = manager(3);
        m.pin(key(1), secs(0)).expect("room");
        let refused = m
            .pin_all(&[key(1), key(2), key(2), key(3), key(4)], secs(0))
            .expect_err("no room for the fourth neighbour");
        assert_eq!(refused.index, 4);
        assert_eq!(m.len(), 1, "nothing pinned");
        let slots = m
            .pin_all(&[key(2), key(1), key(2), key(3)], secs(0))
            .expect("room");
        assert_eq!(slots[0], slots[2]);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn an_unpinned_gateway_ages_like_any_neighbour() {
        let mut m = manager(2);
        m.pin(key(1), secs(0)).expect("room");
        m.unpin(&key(1));
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        for s in 0..=7 {
            m.poll(secs(s), &mut solicit, &mut changes);
        }
        assert!(m.is_empty(), "failed, then removed");
    }

    #[test]
    fn listing_marks_nothing_used() {
        let mut m = manager(2);
        m.resolve(key(2), secs(0)).expect("room");
        m.learned(key(2), MAC, LearnPolicy::Update, secs(0));
        m.publish();
        for _ in 0..3 {
            assert_eq!(m.table().entries()[0].state, NeighbourState::Reachable);
            assert_eq!(m.entries().count(), 1);
        }
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        m.poll(secs(31), &mut solicit, &mut changes);
        assert!(solicit.is_empty(), "unused: goes stale without a probe");
    }

    #[test]
    fn a_static_neighbour_must_be_on_link_not_ours_and_unicast() {
        let ifaces = Interfaces::new(
            1,
            vec![crate::iface::tests::iface(
                "p0",
                0,
                None,
                "198.18.1.1/24",
                "2001:2:0:1::1/64",
            )],
        )
        .expect("valid");
        let at = |iface: IfIndex, addr: &str| NeighbourKey {
            iface,
            addr: addr.parse().expect("addr"),
        };
        assert_eq!(check_static(&ifaces, &at(0, "198.18.1.9"), MAC), Ok(()));
        assert_eq!(check_static(&ifaces, &at(0, "fe80::9"), MAC), Ok(()));
        assert_eq!(
            check_static(&ifaces, &at(3, "198.18.1.9"), MAC),
            Err(NeighbourError::NoSuchInterface(3))
        );
        assert!(matches!(
            check_static(&ifaces, &at(0, "198.18.2.9"), MAC),
            Err(NeighbourError::NotOnLink { .. })
        ));
        assert!(matches!(
            check_static(&ifaces, &at(0, "198.18.1.1"), MAC),
            Err(NeighbourError::OwnAddress { .. })
        ));
        for mac in [[0; 6], [0xff; 6], [0x01, 0, 0x5e, 0, 0, 1]] {
            assert_eq!(
                check_static(&ifaces, &at(0, "198.18.1.9"), mac),
                Err(NeighbourError::NotUnicastMac)
            );
        }
    }

    #[test]
    fn encoding_round_trips() {
        for r in [
            Resolution::Incomplete,
            Resolution::Failed,
            Resolution::Reachable([0xff; 6]),
            Resolution::Reachable(MAC),
        ] {
            assert_eq!(decode(encode(r)), r);
        }
    }
}
