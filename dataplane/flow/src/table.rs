//! The flow table: entries in a fixed slab, statistics records beside them, a hash index of slab
//! slots, a timer wheel for expiry and a FIFO of eviction candidates.

use crate::end::{EndReason, FlowEnd};
use crate::entry::FlowEntry;
use crate::error::{InsertError, NewTableError};
use crate::key::{Direction, FlowKey, Orientation};
use crate::links::LinkArena;
use crate::stats::{FlowStats, PacketSample};
use crate::timeouts::{RecordTimeouts, RecordTimeoutsNs, Timeouts, TimeoutsNs};
use crate::wheel::{SLOT_COUNT, TimerWheel, WheelStep};
use hashbrown::HashTable;
use siphasher::sip::SipHasher13;

/// The largest accepted capacity (64 M flows, 4 GiB of entries): slots are `u32`, shared with
/// the timer wheel's sentinels.
pub const CAPACITY_MAX: usize = 1 << 26;

/// How many flows one eviction looks at, per source (timer wheel, then the FIFO of flows that
/// are not established).
pub const EVICTION_CANDIDATES_MAX: usize = 32;

/// An entry alone in its cache line: a lookup touches one line of the slab.
#[repr(align(64))]
struct CacheLine<T>(T);

/// Flows evicted by inserts into a full table, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictionCounts {
    /// Flows idle past their timeout that `expire` had not reached yet.
    pub idle: u64,
    /// Active flows that were not established.
    pub unestablished: u64,
}

/// What one [`FlowTable::expire`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireProgress {
    /// Units of work done, at most the budget: one per flow looked at, one per tick passed.
    pub work: usize,
    /// Flows expired (and passed to `on_end` with `flow_removed`).
    pub expired: usize,
    /// Records ended while their flow goes on (idle or active record timeout).
    pub records_ended: usize,
    /// True when every flow due by `now_ns` has been expired; false when the budget ran out first.
    pub caught_up: bool,
}

/// Names a flow of the table until the table next changes (an insert, a removal, `expire`): the
/// updates of one packet use it after one lookup. From [`FlowTable::locate`] or
/// [`FlowTable::insert_flow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSlot(u32);

/// Where a walk of the table by [`FlowTable::for_each_from`] stands: the next slab slot to look
/// at. [`FlowCursor::default`] starts a walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCursor {
    next_slot: u32,
}

/// The memory a flow table allocated, by part, in bytes. All of it is allocated when the table
/// is made; the entries' slab is reserved then and touched as flows arrive, the rest is written
/// then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableMemory {
    /// The slab: each entry in a 64-byte line of its own.
    pub entries: usize,
    /// One [`FlowStats`] per slot, with statistics only.
    pub statistics: usize,
    /// The hash index (hashbrown), made with room for twice the capacity.
    pub index: usize,
    /// The timer wheel: a link per flow and per slot.
    pub wheel: usize,
    /// The FIFO of flows not established: a link per flow, and its sentinel.
    pub fifo: usize,
    /// The free list: a slot number per flow.
    pub free_list: usize,
}

impl TableMemory {
    pub fn total(&self) -> usize {
        self.entries + self.statistics + self.index + self.wheel + self.fifo + self.free_list
    }
}

/// One worker's flow table. See the crate documentation for the design and the full-table
/// policy.
pub struct FlowTable<V> {
    /// Slab of entries; grows by `push` up to `capacity` (within its reservation), then slots are
    /// reused from `free_slots`.
    entries: Vec<CacheLine<FlowEntry<V>>>,
    /// Statistics records, one per slot beside `entries`, written whole by `new` so that no page
    /// is first touched on the packet path; empty for a table without statistics.
    records: Vec<FlowStats>,
    record_timeouts: Option<RecordTimeoutsNs>,
    free_slots: Vec<u32>,
    /// Slots of live entries, hashed by key.
    index: HashTable<u32>,
    /// Every live slot is scheduled in the wheel no later than its real deadline.
    wheel: TimerWheel,
    /// FIFO of flows that may not be established, oldest first; its sentinel is node `capacity`.
    unestablished: LinkArena,
    timeouts: TimeoutsNs,
    capacity: u32,
    hasher: SipHasher13,
    evictions: EvictionCounts,
}

impl<V: Copy> FlowTable<V> {
    /// A table for `capacity` flows (1 to [`CAPACITY_MAX`]), with every allocation made here:
    /// the slab, the free list, the index (sized for twice the capacity, so inserts never make
    /// it grow), the timer wheel (8 bytes per flow plus 512 KiB) and the FIFO (8 bytes per flow).
    /// The hash key is drawn from the operating system's random source. The table keeps no
    /// statistics ([`FlowTable::with_statistics`] does).
    pub fn new(capacity: usize, timeouts: Timeouts) -> Result<Self, NewTableError> {
        Self::build(capacity, timeouts, None)
    }

    /// Like [`FlowTable::new`], with a statistics record per flow ([`FlowStats`], allocated and
    /// written here for the whole capacity) that ends by `records`' timeouts, by the end of a
    /// TCP connection, or with its flow.
    pub fn with_statistics(
        capacity: usize,
        timeouts: Timeouts,
        records: RecordTimeouts,
    ) -> Result<Self, NewTableError> {
        Self::build(capacity, timeouts, Some(records))
    }

    fn build(
        capacity: usize,
        timeouts: Timeouts,
        records: Option<RecordTimeouts>,
    ) -> Result<Self, NewTableError> {
        const {
            assert!(
                size_of::<FlowEntry<V>>() <= 64,
                "the flow value must take at most 8 bytes so that an entry fits one cache line"
            );
        };
        let capacity_u32 = u32::try_from(capacity)
            .ok()
            .filter(|&capacity| capacity > 0 && capacity as usize <= CAPACITY_MAX)
            .ok_or(NewTableError::CapacityOutOfRange {
                requested: capacity,
                max: CAPACITY_MAX,
            })?;
        let timeouts = TimeoutsNs::new(&timeouts)?;
        let record_timeouts = records.as_ref().map(RecordTimeoutsNs::new).transpose()?;
        let record_count = if record_timeouts.is_some() {
            capacity
        } else {
            0
        };
        let mut hash_key = [0; 16];
        getrandom::fill(&mut hash_key).map_err(NewTableError::Randomness)?;
        Ok(Self {
            entries: Vec::with_capacity(capacity),
            records: vec![FlowStats::default(); record_count],
            record_timeouts,
            free_slots: Vec::with_capacity(capacity),
            index: HashTable::with_capacity(2 * capacity),
            wheel: TimerWheel::new(capacity_u32),
            unestablished: LinkArena::new(capacity_u32 + 1),
            timeouts,
            capacity: capacity_u32,
            hasher: SipHasher13::new_with_key(&hash_key),
            evictions: EvictionCounts::default(),
        })
    }

    /// What the table allocated, by part.
    pub fn memory(&self) -> TableMemory {
        TableMemory {
            entries: self.entries.capacity() * size_of::<CacheLine<FlowEntry<V>>>(),
            statistics: self.records.capacity() * size_of::<FlowStats>(),
            index: self.index.allocation_size(),
            wheel: self.wheel.memory_bytes(),
            fifo: self.unestablished.memory_bytes(),
            free_list: self.free_slots.capacity() * size_of::<u32>(),
        }
    }

    /// The key's hash under this table's secret key (SipHash-1-3): compute it once per packet and
    /// pass it to [`FlowTable::get_mut`] and [`FlowTable::insert`].
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash(key.as_bytes())
    }

    fn find_slot(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(hash, |&slot| entries[slot as usize].0.key() == key)
            .copied()
    }

    /// Reads the index, the entries and the statistics records of the flows of `keys` (with
    /// their hashes) and throws them away, so that they are in the cache when the packets are
    /// processed: the flows of a burst, before its first packet is processed. The lookups of
    /// different packets do not wait for each other, so the processor overlaps their cache
    /// misses, which it cannot when each lookup sits amid a packet's processing; the records are
    /// read in a second pass, for the same reason.
    #[inline]
    pub fn warm<const N: usize>(&self, keys: &[Option<(FlowKey, u64)>; N]) {
        let mut slots = [u32::MAX; N];
        for (slot, key) in slots.iter_mut().zip(keys) {
            if let Some((key, hash)) = key {
                *slot = self.find_slot(key, *hash).unwrap_or(u32::MAX);
            }
        }
        let mut touched = 0;
        for slot in slots {
            if let Some(record) = self.records.get(slot as usize) {
                touched ^= record.touch();
            }
        }
        std::hint::black_box(touched);
    }

    /// The flow of `key`, if present.
    pub fn get(&self, key: &FlowKey, hash: u64) -> Option<&FlowEntry<V>> {
        let slot = self.find_slot(key, hash)?;
        Some(&self.entries[slot as usize].0)
    }

    /// Finds the flow of a packet with `orientation` (from [`FlowKey::from_packet`]) and gives the
    /// packet's direction relative to the flow's initiator. Call
    /// [`FlowEntry::record_packet`] on the entry for the packet.
    pub fn get_mut(
        &mut self,
        key: &FlowKey,
        hash: u64,
        orientation: Orientation,
    ) -> Option<(&mut FlowEntry<V>, Direction)> {
        let (slot, direction) = self.locate(key, hash, orientation)?;
        Some((self.entry_mut(slot), direction))
    }

    /// Like [`FlowTable::get_mut`], naming the flow by its slot for the packet's later updates
    /// ([`FlowTable::entry_mut`], [`FlowTable::record_statistics`]).
    pub fn locate(
        &self,
        key: &FlowKey,
        hash: u64,
        orientation: Orientation,
    ) -> Option<(FlowSlot, Direction)> {
        let slot = self.find_slot(key, hash)?;
        let initiator = self.entries[slot as usize].0.initiator();
        Some((FlowSlot(slot), Direction::between(initiator, orientation)))
    }

    /// The flow in `slot`.
    pub fn entry(&self, slot: FlowSlot) -> &FlowEntry<V> {
        &self.entries[slot.0 as usize].0
    }

    /// The flow in `slot`, to record a packet or change its value.
    pub fn entry_mut(&mut self, slot: FlowSlot) -> &mut FlowEntry<V> {
        &mut self.entries[slot.0 as usize].0
    }

    /// The current record of the flow in `slot`; `None` for a table without statistics.
    pub fn statistics(&self, slot: FlowSlot) -> Option<&FlowStats> {
        self.records.get(slot.0 as usize)
    }

    /// Adds `packet` to the record of the flow in `slot` (nothing for a table without
    /// statistics). A record already due by its timeouts (`expire` has not reached it yet) ends
    /// first, so that a record never spans more than its timeouts allow. `ends_connection`, what
    /// [`FlowEntry::record_packet`] returned for the packet, ends the record with
    /// [`EndReason::EndOfFlow`], packet included; the flow's later packets (a last
    /// retransmission, a new connection on the same ports) start a new one. `on_end` gets each
    /// record that ends (at most two).
    pub fn record_statistics(
        &mut self,
        slot: FlowSlot,
        packet: &PacketSample,
        ends_connection: bool,
        mut on_end: impl FnMut(FlowEnd<'_, V>),
    ) {
        let Some(timeouts) = self.record_timeouts else {
            return;
        };
        if let Some(reason) = self.record_end_due(slot.0, packet.time_ns) {
            self.end_record(slot.0, reason, &mut on_end);
        }
        self.records[slot.0 as usize].record(packet, timeouts.activity);
        if ends_connection {
            self.end_record(slot.0, EndReason::EndOfFlow, &mut on_end);
        }
    }

    /// Inserts the flow of a packet that [`FlowTable::get_mut`] did not find; that packet, with
    /// `initiator` orientation, is the flow's initiator. The entry starts with `first_seen_ns` and
    /// `last_seen_ns` at `now_ns` and TCP state `None`: call [`FlowEntry::record_packet`] on it
    /// with [`Direction::Forward`] for the packet.
    ///
    /// When the table is full, a flow is evicted by the crate's full-table policy, or the insert
    /// fails with [`InsertError::TableFull`].
    pub fn insert(
        &mut self,
        key: FlowKey,
        hash: u64,
        initiator: Orientation,
        value: V,
        now_ns: u64,
    ) -> Result<&mut FlowEntry<V>, InsertError> {
        let slot = self.insert_flow(key, hash, initiator, value, now_ns, |_| {})?;
        Ok(self.entry_mut(slot))
    }

    /// Like [`FlowTable::insert`], naming the new flow by its slot and handing the flow evicted
    /// to make room, if any, to `on_evicted` ([`EndReason::LackOfResources`], or the reason of a
    /// flow found idle past its timeout).
    pub fn insert_flow(
        &mut self,
        key: FlowKey,
        hash: u64,
        initiator: Orientation,
        value: V,
        now_ns: u64,
        on_evicted: impl FnOnce(FlowEnd<'_, V>),
    ) -> Result<FlowSlot, InsertError> {
        debug_assert_eq!(
            hash,
            self.hash(&key),
            "the hash must come from this table's `hash`"
        );
        if self.find_slot(&key, hash).is_some() {
            return Err(InsertError::AlreadyPresent);
        }
        if self.index.is_empty() {
            self.wheel.restart_at(now_ns);
        }
        if self.len() == self.capacity() && !self.evict_one(now_ns, on_evicted) {
            return Err(InsertError::TableFull);
        }
        let slot = self.free_slots.pop().unwrap_or(self.entries.len() as u32);
        let entry = FlowEntry::new(key, initiator, value, now_ns);
        if slot as usize == self.entries.len() {
            self.entries.push(CacheLine(entry));
        } else {
            self.entries[slot as usize] = CacheLine(entry);
        }
        if let Some(stats) = self.records.get_mut(slot as usize) {
            *stats = FlowStats::default();
        }
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hash, slot, |&slot| {
            hasher.hash(entries[slot as usize].0.key().as_bytes())
        });
        self.wheel
            .schedule(slot, self.next_check_ns(slot, &entry, now_ns));
        self.unestablished.push_back(self.capacity, slot);
        Ok(FlowSlot(slot))
    }

    /// Removes the flow of `key` and returns it.
    pub fn remove(&mut self, key: &FlowKey, hash: u64) -> Option<FlowEntry<V>> {
        let slot = self.find_slot(key, hash)?;
        Some(self.remove_slot(slot))
    }

    /// Removes the flow in `slot`, handing it with its record to `on_end` for `reason`.
    pub fn end_flow(
        &mut self,
        slot: FlowSlot,
        reason: EndReason,
        on_end: impl FnOnce(FlowEnd<'_, V>),
    ) {
        self.end_slot(slot.0, reason, on_end);
    }

    /// Ends the record of every flow that has one with packets, handing each to `on_end` with
    /// `reason`; the flows stay. This walks the whole table: it is for a worker that stops, never
    /// for its loop.
    pub fn end_records(&mut self, reason: EndReason, mut on_end: impl FnMut(FlowEnd<'_, V>)) {
        if self.records.is_empty() {
            return;
        }
        for &slot in &self.index {
            let stats = &mut self.records[slot as usize];
            if stats.is_empty() {
                continue;
            }
            on_end(FlowEnd {
                entry: &self.entries[slot as usize].0,
                stats: Some(&*stats),
                reason,
                flow_removed: false,
            });
            *stats = FlowStats::default();
        }
    }

    /// Expires the flows idle for at least their timeout at `now_ns` and ends the records due by
    /// the record timeouts, handing each to `on_end`, with at most `budget` units of work (see
    /// [`ExpireProgress::work`]). Flows left over by an exhausted budget are expired by the next
    /// calls, the most overdue first. The work does not depend on the table's size: the timer
    /// wheel yields only flows scheduled up to `now_ns`, about once per `min(timeout, 68.7 s)` for
    /// each live flow (a wheel lap; TCP also at least once per `tcp_transitory`; with
    /// statistics, at least once per `min(record idle, record active)`), plus one unit per
    /// 1.05 ms tick passed (at most one lap after a long pause). `now_ns` must not go backwards.
    pub fn expire(
        &mut self,
        now_ns: u64,
        budget: usize,
        mut on_end: impl FnMut(FlowEnd<'_, V>),
    ) -> ExpireProgress {
        let mut progress = ExpireProgress::default();
        if self.index.is_empty() {
            self.wheel.restart_at(now_ns);
            progress.caught_up = true;
            return progress;
        }
        while progress.work < budget {
            match self.wheel.step(now_ns) {
                WheelStep::CaughtUp => {
                    progress.caught_up = true;
                    break;
                }
                WheelStep::NextTick => progress.work += 1,
                WheelStep::Visit(slot) => {
                    progress.work += 1;
                    match self.visit(slot, now_ns, &mut on_end) {
                        Visited::Expired => progress.expired += 1,
                        Visited::RecordEnded => progress.records_ended += 1,
                        Visited::Kept => {}
                    }
                }
            }
        }
        progress
    }

    /// Visits every flow, in no particular order; the work is bounded by the index size.
    pub fn for_each(&self, mut f: impl FnMut(&FlowEntry<V>)) {
        for &slot in &self.index {
            f(&self.entries[slot as usize].0);
        }
    }

    /// Visits the flows of the slab slots from `cursor` on, looking at no more than `slots_max`
    /// slots (at least one), and returns where the walk stands, or `None` when it has looked at
    /// every slot. A walk is bounded work per call whatever the table's size, and the table may
    /// change between calls: entries never move between slots, so a flow present from the
    /// walk's start to its end is visited exactly once; a flow inserted or removed meanwhile may
    /// be visited or not.
    pub fn for_each_from(
        &self,
        cursor: FlowCursor,
        slots_max: usize,
        mut f: impl FnMut(&FlowEntry<V>, Option<&FlowStats>),
    ) -> Option<FlowCursor> {
        let start = cursor.next_slot as usize;
        let end = start
            .saturating_add(slots_max.max(1))
            .min(self.entries.len());
        for slot in start..end {
            // A slot holds a live flow exactly when the wheel schedules it.
            if self.wheel.is_scheduled(slot as u32) {
                f(&self.entries[slot].0, self.records.get(slot));
            }
        }
        // The slab never holds more than `capacity` slots, which fits `u32`.
        (end < self.entries.len()).then_some(FlowCursor {
            next_slot: end as u32,
        })
    }

    /// Number of flows in the table.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Buckets of the hash index, allocated by [`FlowTable::new`]: constant for the table's life
    /// because the index is sized for twice the capacity and so never grows.
    pub fn index_bucket_count(&self) -> usize {
        self.index.num_buckets()
    }

    /// Flows evicted so far by inserts into a full table.
    pub fn evictions(&self) -> EvictionCounts {
        self.evictions
    }

    fn idle_deadline_ns(&self, entry: &FlowEntry<V>) -> u64 {
        let timeout = self
            .timeouts
            .idle_timeout_ns(entry.key().proto(), entry.tcp());
        entry.last_seen_ns().saturating_add(timeout)
    }

    /// When the wheel must look at the flow in `slot` again: its deadline or its record's, or
    /// earlier if its next packet could switch it to a shorter timeout (a TCP flow leaving
    /// `Established`) or start a record. Never later than the real deadlines, whatever packets
    /// come after `now_ns`: a record that starts later ends later.
    fn next_check_ns(&self, slot: u32, entry: &FlowEntry<V>, now_ns: u64) -> u64 {
        let shortest = self.timeouts.shortest_timeout_ns(entry.key().proto());
        let check = self
            .idle_deadline_ns(entry)
            .min(now_ns.saturating_add(shortest));
        let Some(timeouts) = self.record_timeouts else {
            return check;
        };
        let check = check.min(now_ns.saturating_add(timeouts.idle.min(timeouts.active)));
        match self
            .records
            .get(slot as usize)
            .filter(|stats| !stats.is_empty())
        {
            Some(stats) => check
                .min(stats.last_ns().saturating_add(timeouts.idle))
                .min(stats.first_ns().saturating_add(timeouts.active)),
            None => check,
        }
    }

    /// Why the record of the flow in `slot` is due to end at `now_ns`, if it is.
    fn record_end_due(&self, slot: u32, now_ns: u64) -> Option<EndReason> {
        let timeouts = self.record_timeouts?;
        let stats = self
            .records
            .get(slot as usize)
            .filter(|stats| !stats.is_empty())?;
        if stats.last_ns().saturating_add(timeouts.idle) <= now_ns {
            Some(EndReason::of_quiet(&self.entries[slot as usize].0))
        } else if stats.first_ns().saturating_add(timeouts.active) <= now_ns {
            Some(EndReason::ActiveTimeout)
        } else {
            None
        }
    }

    /// Hands the record of the flow in `slot` to `on_end` and starts a new one; the flow stays.
    fn end_record(&mut self, slot: u32, reason: EndReason, on_end: impl FnOnce(FlowEnd<'_, V>)) {
        let stats = &mut self.records[slot as usize];
        on_end(FlowEnd {
            entry: &self.entries[slot as usize].0,
            stats: Some(&*stats),
            reason,
            flow_removed: false,
        });
        *stats = FlowStats::default();
    }

    /// Expires the flow in `slot` if it is due, or ends its record if that is due; then
    /// reschedules a flow that stays and updates its membership of the eviction FIFO.
    fn visit(
        &mut self,
        slot: u32,
        now_ns: u64,
        on_end: &mut impl FnMut(FlowEnd<'_, V>),
    ) -> Visited {
        let entry = self.entries[slot as usize].0;
        if self.idle_deadline_ns(&entry) <= now_ns {
            self.end_slot(slot, EndReason::of_quiet(&entry), on_end);
            return Visited::Expired;
        }
        let mut visited = Visited::Kept;
        if let Some(reason) = self.record_end_due(slot, now_ns) {
            self.end_record(slot, reason, on_end);
            visited = Visited::RecordEnded;
        }
        self.wheel
            .reschedule_visited(slot, self.next_check_ns(slot, &entry, now_ns));
        match (entry.is_established(), self.unestablished.is_linked(slot)) {
            (true, true) => self.unestablished.unlink(slot),
            (false, false) => self.unestablished.push_back(self.capacity, slot),
            _ => {}
        }
        visited
    }

    /// Makes room for one flow by the full-table policy, handing the flow evicted to `on_evicted`;
    /// false when no flow may be evicted.
    fn evict_one(&mut self, now_ns: u64, on_evicted: impl FnOnce(FlowEnd<'_, V>)) -> bool {
        let mut candidate = self.wheel.cursor_slot_front();
        for _ in 0..EVICTION_CANDIDATES_MAX {
            let Some(slot) = candidate else { break };
            let entry = &self.entries[slot as usize].0;
            if self.idle_deadline_ns(entry) <= now_ns {
                let reason = EndReason::of_quiet(entry);
                self.end_slot(slot, reason, on_evicted);
                self.evictions.idle += 1;
                return true;
            }
            candidate = self.wheel.next_in_slot(slot);
        }
        let sentinel = self.capacity;
        for _ in 0..EVICTION_CANDIDATES_MAX {
            let slot = self.unestablished.next(sentinel);
            if slot == sentinel {
                break;
            }
            let entry = &self.entries[slot as usize].0;
            if entry.is_established() {
                self.unestablished.unlink(slot);
                continue;
            }
            let reason = if self.idle_deadline_ns(entry) <= now_ns {
                self.evictions.idle += 1;
                EndReason::of_quiet(entry)
            } else {
                self.evictions.unestablished += 1;
                EndReason::LackOfResources
            };
            self.end_slot(slot, reason, on_evicted);
            return true;
        }
        false
    }

    /// Removes the flow in `slot` and hands it, with its record, to `on_end`.
    fn end_slot(&mut self, slot: u32, reason: EndReason, on_end: impl FnOnce(FlowEnd<'_, V>)) {
        let entry = self.remove_slot(slot);
        // The record stays in its slot until an insert reuses the slot.
        on_end(FlowEnd {
            entry: &entry,
            stats: self.records.get(slot as usize),
            reason,
            flow_removed: true,
        });
    }

    fn remove_slot(&mut self, slot: u32) -> FlowEntry<V> {
        let entry = self.entries[slot as usize].0;
        self.wheel.cancel(slot);
        self.unestablished.unlink(slot);
        let hash = self.hash(entry.key());
        let removed = self
            .index
            .find_entry(hash, |&candidate| candidate == slot)
            .map(|found| found.remove());
        debug_assert!(
            removed.is_ok(),
            "slot {slot} missing from the index: a wrong hash was inserted"
        );
        self.free_slots.push(slot);
        entry
    }
}

/// What a visit of the wheel did to a flow.
enum Visited {
    Expired,
    RecordEnded,
    Kept,
}

/// The wheel's sentinels follow the flows' nodes: both must fit `u32`.
const _: () = assert!(CAPACITY_MAX as u64 + SLOT_COUNT as u64 <= u32::MAX as u64);
