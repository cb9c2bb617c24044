//! IPv4: a 2^16-entry top table and 256-entry groups below it (16-8-8), see the crate docs.

use std::net::Ipv4Addr;

use crate::result_entry::{self, NO_ROUTE};
use crate::route::{Route, validate_and_sort};
use crate::{LpmError, LpmLimits, NextHopIndex};

/// Entries in the top table, indexed by the first 16 bits of the address.
const TOP_SLOTS: usize = 1 << 16;
/// Entries in a group, indexed by 8 more bits.
const GROUP_SLOTS: usize = 1 << 8;
/// Prefix lengths decided in the top table and in second-level groups.
const TOP_BITS: u8 = 16;
const SECOND_LEVEL_END_BITS: u8 = 24;

/// An immutable IPv4 longest-prefix-match table.
#[derive(Clone)]
pub struct Ipv4Lpm {
    /// Indexed by `address >> 16`; results or group indices.
    top: Box<[u32; TOP_SLOTS]>,
    /// All groups back to back, group `g` at `g * 256..(g + 1) * 256`.
    groups: Vec<u32>,
    route_count: usize,
}

impl std::fmt::Debug for Ipv4Lpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipv4Lpm")
            .field("route_count", &self.route_count)
            .field("group_count", &(self.groups.len() / GROUP_SLOTS))
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl Ipv4Lpm {
    /// Builds the table from `(network, prefix_len, next_hop)` routes, in any order.
    ///
    /// Refuses (naming the route's index) prefix lengths above 32, networks with host bits set,
    /// duplicate prefixes, next hops above `NEXT_HOP_INDEX_MAX` and more routes than `limits`.
    pub fn build(
        routes: &[(Ipv4Addr, u8, NextHopIndex)],
        limits: LpmLimits,
    ) -> Result<Self, LpmError> {
        let sorted: Vec<Route<u32>> = validate_and_sort(routes, limits)?;
        let mut table = Self {
            top: Box::new([NO_ROUTE; TOP_SLOTS]),
            groups: Vec::new(),
            route_count: sorted.len(),
        };
        for route in &sorted {
            table.insert(route)?;
        }
        table.groups.shrink_to_fit();
        Ok(table)
    }

    /// The value of the longest prefix containing `address`.
    #[inline]
    pub fn lookup(&self, address: Ipv4Addr) -> Option<NextHopIndex> {
        self.lookup_u32(address.to_bits())
    }

    /// [`Self::lookup`] for an address as a host-order integer.
    #[inline]
    pub fn lookup_u32(&self, address: u32) -> Option<NextHopIndex> {
        let top_entry = self.top[(address >> 16) as usize];
        let Some(second_group) = result_entry::child_index(top_entry) else {
            return result_entry::next_hop(top_entry);
        };
        let second_entry = self.group_entry(second_group, (address >> 8) as u8);
        let Some(third_group) = result_entry::child_index(second_entry) else {
            return result_entry::next_hop(second_entry);
        };
        result_entry::next_hop(self.group_entry(third_group, address as u8))
    }

    /// Number of routes the table was built from.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// Heap bytes held by the table.
    pub fn memory_bytes(&self) -> usize {
        size_of_val(&*self.top) + self.groups.capacity() * size_of::<u32>()
    }

    #[inline]
    fn group_entry(&self, group: usize, slot: u8) -> u32 {
        // Group indices come from `allocate_group`, so the entry exists; a miss would mean a
        // corrupted table and reads as "no route" rather than a panic on the hot path.
        self.groups
            .get(group * GROUP_SLOTS + usize::from(slot))
            .copied()
            .unwrap_or(NO_ROUTE)
    }

    /// Writes `route` over every entry it covers. Routes arrive sorted by (network, prefix
    /// length), so every route containing this one has already been written and every entry
    /// written here ends up with its longest prefix.
    fn insert(&mut self, route: &Route<u32>) -> Result<(), LpmError> {
        let entry = result_entry::result(route.next_hop);
        let network = route.network;
        let top_slot = (network >> 16) as usize;
        if route.prefix_len <= TOP_BITS {
            let span = 1 << (TOP_BITS - route.prefix_len);
            fill(&mut self.top[top_slot..top_slot + span], entry);
            return Ok(());
        }
        let second_group = self.child_group(Level::Top(top_slot), route)?;
        let second_slot = second_group * GROUP_SLOTS + ((network >> 8) & 0xff) as usize;
        if route.prefix_len <= SECOND_LEVEL_END_BITS {
            let span = 1 << (SECOND_LEVEL_END_BITS - route.prefix_len);
            fill(&mut self.groups[second_slot..second_slot + span], entry);
            return Ok(());
        }
        let third_group = self.child_group(Level::Group(second_slot), route)?;
        let third_slot = third_group * GROUP_SLOTS + (network & 0xff) as usize;
        let span = 1 << (32 - route.prefix_len);
        fill(&mut self.groups[third_slot..third_slot + span], entry);
        Ok(())
    }

    /// The group below the entry at `level`, allocated on first use as 256 copies of the result
    /// the entry held (the longest shorter prefix covering it).
    fn child_group(&mut self, level: Level, route: &Route<u32>) -> Result<usize, LpmError> {
        let entry = match level {
            Level::Top(slot) => self.top[slot],
            Level::Group(slot) => self.groups[slot],
        };
        if let Some(group) = result_entry::child_index(entry) {
            return Ok(group);
        }
        let group = self.groups.len() / GROUP_SLOTS;
        let child_entry = result_entry::child(group).ok_or(LpmError::CapacityExceeded {
            route_index: route.input_index,
        })?;
        self.groups.resize(self.groups.len() + GROUP_SLOTS, entry);
        match level {
            Level::Top(slot) => self.top[slot] = child_entry,
            Level::Group(slot) => self.groups[slot] = child_entry,
        }
        Ok(group)
    }
}

/// Where a parent entry lives: an index into the top table or into the flat group array.
#[derive(Clone, Copy)]
enum Level {
    Top(usize),
    Group(usize),
}

/// Overwrites entries with a route's result. None of them can point to a group: a group exists
/// only below a longer route, and longer routes inside this one are inserted after it.
fn fill(entries: &mut [u32], entry: u32) {
    debug_assert!(
        entries
            .iter()
            .all(|&existing| result_entry::child_index(existing).is_none()),
        "a route was inserted after a longer route inside it"
    );
    entries.fill(entry);
}
