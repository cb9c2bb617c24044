//! IPv6: a 2^16-entry top table, then a Poptrie-style compressed trie with 6-bit strides, see
//! the crate docs.

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::ops::Range;

use crate::result_entry::{self, NO_ROUTE};
use crate::route::{Route, validate_and_sort};
use crate::{LpmError, LpmLimits, NextHopIndex};

/// Entries in the top table, indexed by the first 16 bits of the address.
const TOP_SLOTS: usize = 1 << 16;
const TOP_BITS: u32 = 16;
/// Address bits consumed per trie node: 6, so that a node's 64 slots fit one `u64` bitmap.
const STRIDE_BITS: u32 = 6;
const NODE_SLOTS: usize = 1 << STRIDE_BITS;
const ADDRESS_BITS: u32 = 128;

/// Depth (bits already consumed) of each trie level: 16, 22, .., 124.
#[inline]
fn node_depths() -> impl Iterator<Item = u32> {
    (TOP_BITS..ADDRESS_BITS).step_by(STRIDE_BITS as usize)
}

/// One trie node: 64 slots, each either a child node or a result.
#[derive(Debug, Clone, Copy, Default)]
struct Node {
    /// Bit `s` set: slot `s` continues in a child node.
    children: u64,
    /// Bit `s` set: slot `s` is a result slot whose result differs from the previous result
    /// slot's (or is the first result slot). Child slots never have their bit set.
    result_runs: u64,
    /// Index in `nodes` of the child of the lowest child slot; the others follow in slot order.
    child_base: u32,
    /// Index in `results` of the first run's result; the other runs follow in slot order.
    result_base: u32,
}

const _: () = assert!(size_of::<Node>() == 24);

/// An immutable IPv6 longest-prefix-match table.
#[derive(Clone)]
pub struct Ipv6Lpm {
    /// Indexed by `address >> 112`; results or node indices.
    top: Box<[u32; TOP_SLOTS]>,
    nodes: Vec<Node>,
    /// Result entries (never child entries) of all nodes' runs.
    results: Vec<u32>,
    route_count: usize,
}

impl std::fmt::Debug for Ipv6Lpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipv6Lpm")
            .field("route_count", &self.route_count)
            .field("node_count", &self.nodes.len())
            .field("result_count", &self.results.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl Ipv6Lpm {
    /// Builds the table from `(network, prefix_len, next_hop)` routes, in any order.
    ///
    /// Refuses (naming the route's index) prefix lengths above 128, networks with host bits set,
    /// duplicate prefixes, next hops above `NEXT_HOP_INDEX_MAX` and more routes than `limits`.
    pub fn build(
        routes: &[(Ipv6Addr, u8, NextHopIndex)],
        limits: LpmLimits,
    ) -> Result<Self, LpmError> {
        let sorted: Vec<Route<u128>> = validate_and_sort(routes, limits)?;
        TrieBuilder::new(&sorted).build()
    }

    /// The value of the longest prefix containing `address`.
    #[inline]
    pub fn lookup(&self, address: Ipv6Addr) -> Option<NextHopIndex> {
        self.lookup_u128(address.to_bits())
    }

    /// [`Self::lookup`] for an address as a host-order integer.
    #[inline]
    pub fn lookup_u128(&self, address: u128) -> Option<NextHopIndex> {
        let mut step = self.top_step(address);
        // Nodes sit at depths 16, 22, .., 124: the loop ends with the address, at most 19 nodes.
        for depth in node_depths() {
            match step {
                Step::Descend(node_index) => step = self.node_step(node_index, address, depth),
                Step::Found(next_hop) => return next_hop,
            }
        }
        step.found()
    }

    /// [`Self::lookup_u128`] for a burst of addresses (a receive burst: N of 16 to 64), walking
    /// one trie level at a time for all of them. Their memory accesses then overlap instead of
    /// each lookup's chain of node reads waiting on the previous lookup's mispredicted exit:
    /// 2 to 3 times the throughput of one-by-one lookups in `lpm_bench`.
    pub fn lookup_burst<const N: usize>(&self, addresses: &[u128; N]) -> [Option<NextHopIndex>; N] {
        let mut steps = addresses.map(|address| self.top_step(address));
        for depth in node_depths() {
            let mut descending = false;
            for (step, &address) in steps.iter_mut().zip(addresses) {
                if let Step::Descend(node_index) = *step {
                    *step = self.node_step(node_index, address, depth);
                    descending = true;
                }
            }
            if !descending {
                break;
            }
        }
        steps.map(Step::found)
    }

    #[inline]
    fn top_step(&self, address: u128) -> Step {
        let top_entry = self.top[(address >> (ADDRESS_BITS - TOP_BITS)) as usize];
        match result_entry::child_index(top_entry) {
            Some(node_index) => Step::Descend(node_index),
            None => Step::Found(result_entry::next_hop(top_entry)),
        }
    }

    /// Looks at the slot of `address` in node `node_index`, which sits at `depth`.
    #[inline]
    fn node_step(&self, node_index: usize, address: u128, depth: u32) -> Step {
        // Node indices come from the build; a miss would mean a corrupted table and reads as
        // "no route" rather than a panic on the hot path.
        let Some(node) = self.nodes.get(node_index) else {
            return Step::Found(None);
        };
        let slot = slot_at(address, depth);
        // Bits 0..=slot: counts the child or run that slot belongs to, itself included.
        let up_to_slot = u64::MAX >> (NODE_SLOTS as u32 - 1 - slot);
        if node.children & (1 << slot) != 0 {
            // At least the slot's own bit is counted, so the subtraction cannot wrap.
            let rank = (node.children & up_to_slot).count_ones() as usize;
            return Step::Descend(node.child_base as usize + rank - 1);
        }
        // The first result slot always starts a run, so a result slot counts at least one run;
        // wrapping instead of panicking keeps a corrupted table panic-free.
        let rank = (node.result_runs & up_to_slot).count_ones() as usize;
        let result_index = (node.result_base as usize + rank).wrapping_sub(1);
        Step::Found(
            self.results
                .get(result_index)
                .and_then(|&entry| result_entry::next_hop(entry)),
        )
    }

    /// Number of routes the table was built from.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// Heap bytes held by the table.
    pub fn memory_bytes(&self) -> usize {
        size_of_val(&*self.top)
            + self.nodes.capacity() * size_of::<Node>()
            + self.results.capacity() * size_of::<u32>()
    }
}

/// Where one step of a lookup leads: into a node, or to the answer.
#[derive(Clone, Copy)]
enum Step {
    Descend(usize),
    Found(Option<NextHopIndex>),
}

impl Step {
    /// The answer; a lookup still descending past the last depth hit a corrupted table.
    #[inline]
    fn found(self) -> Option<NextHopIndex> {
        match self {
            Self::Found(next_hop) => next_hop,
            Self::Descend(_) => None,
        }
    }
}

/// The 6 address bits starting at bit `depth` (from the most significant), for `depth <= 124`.
/// At depth 124 only 4 address bits remain; they are followed by two zero bits.
#[inline]
fn slot_at(address: u128, depth: u32) -> u32 {
    ((address << depth) >> (ADDRESS_BITS - STRIDE_BITS)) as u32
}

/// A node still to be filled: its routes are all longer than `depth` and lie inside the node's
/// block.
struct PendingNode {
    node_index: usize,
    depth: u32,
    /// Result of the longest route that contains the node's whole block.
    inherited: u32,
    /// Range in the sorted routes.
    routes: Range<usize>,
}

/// Builds the trie breadth first, so that each node's children can be reserved as one
/// contiguous block before they are filled.
struct TrieBuilder<'r> {
    /// Sorted by (network, prefix length): each route after every route containing it.
    routes: &'r [Route<u128>],
    table: Ipv6Lpm,
    pending: VecDeque<PendingNode>,
}

impl<'r> TrieBuilder<'r> {
    fn new(routes: &'r [Route<u128>]) -> Self {
        Self {
            routes,
            table: Ipv6Lpm {
                top: Box::new([NO_ROUTE; TOP_SLOTS]),
                nodes: Vec::new(),
                results: Vec::new(),
                route_count: routes.len(),
            },
            pending: VecDeque::new(),
        }
    }

    fn build(mut self) -> Result<Ipv6Lpm, LpmError> {
        self.fill_top()?;
        while let Some(pending) = self.pending.pop_front() {
            self.fill_node(pending)?;
        }
        self.table.nodes.shrink_to_fit();
        self.table.results.shrink_to_fit();
        Ok(self.table)
    }

    /// Writes routes up to /16 into the top table and queues one node per top slot holding
    /// longer routes.
    fn fill_top(&mut self) -> Result<(), LpmError> {
        let routes = self.routes;
        for route in routes
            .iter()
            .filter(|route| u32::from(route.prefix_len) <= TOP_BITS)
        {
            let first_slot = (route.network >> (ADDRESS_BITS - TOP_BITS)) as usize;
            let span = 1 << (TOP_BITS - u32::from(route.prefix_len));
            self.table.top[first_slot..first_slot + span]
                .fill(result_entry::result(route.next_hop));
        }
        for (slot, deeper) in group_longer_routes(routes, 0..routes.len(), 0, TOP_BITS) {
            let node_index = self.table.nodes.len();
            self.table.nodes.push(Node::default());
            let inherited = self.table.top[slot as usize];
            self.table.top[slot as usize] = child_entry(node_index, &routes[deeper.start])?;
            self.pending.push_back(PendingNode {
                node_index,
                depth: TOP_BITS,
                inherited,
                routes: deeper,
            });
        }
        Ok(())
    }

    /// Computes the 64 slots of one node, reserves its children and stores its result runs.
    fn fill_node(&mut self, pending: PendingNode) -> Result<(), LpmError> {
        let all_routes = self.routes;
        let first_route = &all_routes[pending.routes.start];
        let routes = &all_routes[pending.routes.clone()];
        let mut slots = [pending.inherited; NODE_SLOTS];
        let node_end = pending.depth + STRIDE_BITS;
        for route in routes
            .iter()
            .filter(|route| u32::from(route.prefix_len) <= node_end)
        {
            // At depth 124 a /128 keeps 2 "bits" of padding, so it still spans 4 slots.
            let first_slot = slot_at(route.network, pending.depth) as usize;
            let span = 1 << (node_end - u32::from(route.prefix_len));
            slots[first_slot..first_slot + span].fill(result_entry::result(route.next_hop));
        }

        let child_base = self.table.nodes.len();
        let mut children = 0u64;
        for (slot, deeper) in
            group_longer_routes(all_routes, pending.routes, pending.depth, STRIDE_BITS)
        {
            let child_index = child_base + children.count_ones() as usize;
            children |= 1 << slot;
            // Only checks that the index fits: children are reached through `child_base`.
            child_entry(child_index, &all_routes[deeper.start])?;
            self.table.nodes.push(Node::default());
            self.pending.push_back(PendingNode {
                node_index: child_index,
                depth: node_end,
                inherited: slots[slot as usize],
                routes: deeper,
            });
        }

        let result_base = self.table.results.len();
        let mut result_runs = 0u64;
        let mut previous_result = None;
        for (slot, &result) in slots.iter().enumerate() {
            if children & (1 << slot) == 0 && previous_result != Some(result) {
                result_runs |= 1 << slot;
                self.table.results.push(result);
                previous_result = Some(result);
            }
        }
        let node = Node {
            children,
            result_runs,
            child_base: index_u32(child_base, first_route)?,
            result_base: index_u32(result_base, first_route)?,
        };
        self.table.nodes[pending.node_index] = node;
        Ok(())
    }
}

/// The child entry for `node_index`, or the capacity error naming the route that needed it.
fn child_entry(node_index: usize, route: &Route<u128>) -> Result<u32, LpmError> {
    result_entry::child(node_index).ok_or_else(|| capacity_exceeded(route))
}

/// `index` as a node field, or the capacity error naming the route that needed it.
fn index_u32(index: usize, route: &Route<u128>) -> Result<u32, LpmError> {
    u32::try_from(index).map_err(|_| capacity_exceeded(route))
}

fn capacity_exceeded(route: &Route<u128>) -> LpmError {
    LpmError::CapacityExceeded {
        route_index: route.input_index,
    }
}

/// Splits the routes longer than `depth + stride_bits` in `range` by their `stride_bits`-bit slot
/// after `depth`, yielding `(slot, routes of that slot)` in slot order.
///
/// Each slot's longer routes are contiguous in the sorted order: a shorter route inside the
/// slot's block must start at the block's first address (its host bits are zero), so it sorts
/// before every longer route of the slot.
fn group_longer_routes(
    routes: &[Route<u128>],
    range: Range<usize>,
    depth: u32,
    stride_bits: u32,
) -> impl Iterator<Item = (u32, Range<usize>)> {
    let end_bits = depth + stride_bits;
    let slot_of = move |route: &Route<u128>| {
        ((route.network << depth) >> (ADDRESS_BITS - stride_bits)) as u32
    };
    let mut next = range.start;
    std::iter::from_fn(move || {
        let start = next
            + routes[next..range.end]
                .iter()
                .position(|route| u32::from(route.prefix_len) > end_bits)?;
        let slot = slot_of(&routes[start]);
        let end = start
            + routes[start..range.end]
                .iter()
                .position(|route| slot_of(route) != slot)
                .unwrap_or(range.end - start);
        next = end;
        Some((slot, start..end))
    })
}
