//! Packet classifier of the VFN: first match over an ordered list of 5-tuple range entries.
//!
//! DOC_PLACEHOLDER

mod build;
pub mod classbench;
mod error;

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

pub use error::BuildError;

/// Inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range<T> {
    pub lo: T,
    pub hi: T,
}

impl<T: Ord + Copy> Range<T> {
    /// Whether `value` lies in `lo..=hi`.
    pub fn contains(&self, value: T) -> bool {
        self.lo <= value && value <= self.hi
    }
}

/// What one classifier entry matches. A rule expands into one or more entries with the same
/// priority (a cross product of prefix and port lists); the rule compiler does that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match<A> {
    /// Source address range (a prefix in practice).
    pub src: Range<A>,
    /// Destination address range (a prefix in practice).
    pub dst: Range<A>,
    /// Source port range; ICMP type for ICMP rules.
    pub sport: Range<u16>,
    /// Destination port range; ICMP code for ICMP rules.
    pub dport: Range<u16>,
    /// IP protocol; `None` matches any.
    pub proto: Option<u8>,
    /// Logical interface index the packet arrived on; `None` matches any.
    pub ingress: Option<u16>,
    /// `(value, mask)`: matches when `tcp_flags & mask == value`; `None` matches any.
    pub tcp_flags: Option<(u8, u8)>,
}

impl<A: Address> Match<A> {
    /// Whether the key falls inside every field of this match.
    pub fn matches(&self, key: &Key<A>) -> bool {
        self.src.contains(key.src)
            && self.dst.contains(key.dst)
            && self.sport.contains(key.sport)
            && self.dport.contains(key.dport)
            && self.proto.is_none_or(|proto| proto == key.proto)
            && self.ingress.is_none_or(|ingress| ingress == key.ingress)
            && self
                .tcp_flags
                .is_none_or(|(value, mask)| key.tcp_flags & mask == value)
    }
}

/// One classifier entry; the lower `priority` value wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry<A> {
    pub priority: u32,
    pub m: Match<A>,
}

/// The fields of a packet that entries match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Key<A> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub ingress: u16,
    pub tcp_flags: u8,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u128 {}
}

/// An address type the classifier works on: `u32` (IPv4) or `u128` (IPv6).
pub trait Address:
    Copy + Ord + Hash + Debug + Default + Send + Sync + 'static + sealed::Sealed
{
    /// Width in bits.
    const BITS: u32;
    /// Width in 32-bit words.
    const WORDS: usize;
    /// The largest address.
    const MAX: Self;
    /// The address widened to 128 bits (build time only).
    fn to_u128(self) -> u128;
    /// The address as 32-bit words, most significant first (`out.len() == WORDS`).
    fn write_words(self, out: &mut [u32]);
}

impl Address for u32 {
    const BITS: u32 = 32;
    const WORDS: usize = 1;
    const MAX: Self = u32::MAX;
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    fn write_words(self, out: &mut [u32]) {
        if let Some(word) = out.first_mut() {
            *word = self;
        }
    }
}

impl Address for u128 {
    const BITS: u32 = 128;
    const WORDS: usize = 4;
    const MAX: Self = u128::MAX;
    fn to_u128(self) -> u128 {
        self
    }
    fn write_words(self, out: &mut [u32]) {
        for (index, word) in out.iter_mut().take(4).enumerate() {
            *word = (self >> (96 - 32 * index)) as u32;
        }
    }
}

/// The plain first-match scan: the smallest priority among the entries matching `key`. The
/// oracle the classifier is tested against.
pub fn linear_reference<A: Address>(entries: &[Entry<A>], key: &Key<A>) -> Option<u32> {
    entries
        .iter()
        .filter(|entry| entry.m.matches(key))
        .map(|entry| entry.priority)
        .min()
}

/// Bounds on what `Classifier::build` accepts and builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Entries in the list given to `build`.
    pub max_entries: usize,
    /// Levels of cut nodes on any path from a tree's root to a leaf (at most
    /// [`DEPTH_MAX_SUPPORTED`]). A node at this depth becomes a leaf whatever its size.
    pub max_depth: usize,
    /// Bytes of the whole structure (entries, nodes, leaves).
    pub max_memory_bytes: usize,
}

/// The deepest tree `Limits::max_depth` may ask for.
pub const DEPTH_MAX_SUPPORTED: usize = 64;

/// The most entries `Limits::max_entries` may allow: ranks are 31-bit in the structure.
pub const ENTRIES_MAX_SUPPORTED: usize = (1 << 31) - 1;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_depth: 24,
            max_memory_bytes: 1 << 30,
        }
    }
}

/// What a build produced and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildStats {
    pub build_time: Duration,
    pub memory_bytes: usize,
    pub entries: usize,
    /// One tree per non-empty partition (by which address fields are narrow).
    pub trees: usize,
    pub nodes: usize,
    pub leaves: usize,
    /// Entry references held by all leaves (`/ entries` is the replication factor).
    pub leaf_entry_refs: usize,
    /// The largest leaf.
    pub leaf_entries_max: usize,
    /// The deepest leaf, in cut nodes from its root.
    pub depth_reached: usize,
}

/// An entry in the form the lookup checks: one comparison per bound, masks for the rest.
#[derive(Debug, Clone, Copy)]
struct PackedEntry<A> {
    src_lo: A,
    src_hi: A,
    dst_lo: A,
    dst_hi: A,
    sport_lo: u16,
    sport_hi: u16,
    dport_lo: u16,
    dport_hi: u16,
    ingress_value: u16,
    ingress_mask: u16,
    proto_value: u8,
    proto_mask: u8,
    flags_value: u8,
    flags_mask: u8,
}

impl<A: Address> PackedEntry<A> {
    fn new(m: &Match<A>) -> Self {
        let (proto_value, proto_mask) = m.proto.map_or((0, 0), |proto| (proto, u8::MAX));
        let (ingress_value, ingress_mask) = m.ingress.map_or((0, 0), |ingress| (ingress, u16::MAX));
        let (flags_value, flags_mask) = m.tcp_flags.unwrap_or((0, 0));
        PackedEntry {
            src_lo: m.src.lo,
            src_hi: m.src.hi,
            dst_lo: m.dst.lo,
            dst_hi: m.dst.hi,
            sport_lo: m.sport.lo,
            sport_hi: m.sport.hi,
            dport_lo: m.dport.lo,
            dport_hi: m.dport.hi,
            ingress_value,
            ingress_mask,
            proto_value,
            proto_mask,
            flags_value,
            flags_mask,
        }
    }

    /// Same answer as `Match::matches`, without branches: every comparison is evaluated.
    #[inline(always)]
    fn matches(&self, key: &Key<A>) -> bool {
        (self.src_lo <= key.src)
            & (key.src <= self.src_hi)
            & (self.dst_lo <= key.dst)
            & (key.dst <= self.dst_hi)
            & (self.sport_lo <= key.sport)
            & (key.sport <= self.sport_hi)
            & (self.dport_lo <= key.dport)
            & (key.dport <= self.dport_hi)
            & (key.proto & self.proto_mask == self.proto_value)
            & (key.ingress & self.ingress_mask == self.ingress_value)
            & (key.tcp_flags & self.flags_mask == self.flags_value)
    }
}

/// The key's fields as 32-bit words, the unit a cut node extracts bits from: source address
/// words, destination address words, source port, destination port, protocol, ingress.
const KEY_WORDS: usize = 16;

fn key_words<A: Address>(key: &Key<A>) -> [u32; KEY_WORDS] {
    let mut words = [0; KEY_WORDS];
    let address_words = A::WORDS;
    key.src.write_words(&mut words[..address_words]);
    key.dst
        .write_words(&mut words[address_words..2 * address_words]);
    words[2 * address_words] = u32::from(key.sport);
    words[2 * address_words + 1] = u32::from(key.dport);
    words[2 * address_words + 2] = u32::from(key.proto);
    words[2 * address_words + 3] = u32::from(key.ingress);
    words
}

/// A reference to a subtree, as the root of a tree or in a cut node's child array: the offset
/// of a node's first child slot or of a leaf's first rank, with what is needed to use it, so
/// that each level of a lookup costs one memory read.
///
/// Bits 0-31: offset into `slots` (node) or `leaves` (leaf). Bits 32-63, the descriptor: for a
/// node, the child mask (bits 32-47, never 0), the shift within the key word (bits 48-52) and
/// the key word index (bits 53-60); for a leaf, bit 63 set and the rank count in bits 32-62.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot(u64);

impl Slot {
    const LEAF_FLAG: u64 = 1 << 63;
    /// A leaf with no entry.
    const EMPTY: Slot = Slot(Self::LEAF_FLAG);

    fn node(first_child: u32, word: u32, shift: u32, mask: u32) -> Slot {
        let descriptor = u64::from(mask) | u64::from(shift) << 16 | u64::from(word) << 21;
        Slot(descriptor << 32 | u64::from(first_child))
    }

    fn leaf(offset: u32, count: u32) -> Slot {
        Slot(Self::LEAF_FLAG | u64::from(count) << 32 | u64::from(offset))
    }

    #[inline(always)]
    fn is_leaf(self) -> bool {
        self.0 & Self::LEAF_FLAG != 0
    }

    #[inline(always)]
    fn offset(self) -> usize {
        self.0 as u32 as usize
    }

    /// Index in `slots` of the child `words` leads to (for a node).
    #[inline(always)]
    fn child_index(self, words: &[u32; KEY_WORDS]) -> usize {
        let descriptor = (self.0 >> 32) as u32;
        let word = words[(descriptor >> 21) as usize % KEY_WORDS];
        self.offset() + ((word >> ((descriptor >> 16) & 31)) & (descriptor & 0xffff)) as usize
    }

    /// The leaf's ranks, in `leaves` (for a leaf).
    #[inline(always)]
    fn rank_range(self) -> std::ops::Range<usize> {
        let count = ((self.0 >> 32) as u32 & !(1 << 31)) as usize;
        self.offset()..self.offset() + count
    }
}

/// Keys that `classify_burst` walks through a tree together.
pub const BURST_GROUP: usize = 32;

/// No entry found yet: above every rank.
const RANK_NONE: u32 = u32::MAX;

/// One tree: the entries of one partition.
#[derive(Debug, Clone, Copy)]
struct Tree {
    root: Slot,
    /// The best rank in the tree: a lookup that already has a better one skips the tree.
    rank_min: u32,
}

/// The classifier: immutable after `build`, shared between workers.
#[derive(Debug, Clone)]
pub struct Classifier<A> {
    /// Entries sorted by priority (stable), so the rank (index) order is the priority order.
    entries: Vec<PackedEntry<A>>,
    /// Priority of each rank.
    priorities: Vec<u32>,
    /// Trees in increasing `rank_min`.
    trees: Vec<Tree>,
    /// Cut nodes' children: each node's child slots are contiguous.
    slots: Vec<Slot>,
    /// Leaves' ranks, each leaf's in increasing order; identical leaves are stored once.
    leaves: Vec<u32>,
    stats: BuildStats,
}

/// IPv4 classifier.
pub type Classifier4 = Classifier<u32>;
/// IPv6 classifier.
pub type Classifier6 = Classifier<u128>;

impl<A: Address> Classifier<A> {
    /// Builds the classifier for `entries`; lower priority values win, and entries may share a
    /// priority.
    pub fn build(entries: &[Entry<A>], limits: &Limits) -> Result<Self, BuildError> {
        build::build(entries, limits)
    }

    /// The smallest priority among the entries matching `key`. No allocation, no panic.
    pub fn classify(&self, key: &Key<A>) -> Option<u32> {
        let words = key_words(key);
        let mut best = RANK_NONE;
        for tree in &self.trees {
            if tree.rank_min >= best {
                break;
            }
            let slot = self.descend(tree.root, &words);
            best = self.scan_leaf(slot, key, best);
        }
        self.priorities.get(best as usize).copied()
    }

    /// `classify` for every key: `out[i]` is the answer for `keys[i]`. Extra `out` slots (or
    /// keys) beyond the shorter of the two are left alone.
    ///
    /// Keys go through each tree in groups of [`BURST_GROUP`], one level at a time for the whole
    /// group, so that the memory reads of different keys overlap.
    pub fn classify_burst(&self, keys: &[Key<A>], out: &mut [Option<u32>]) {
        for (keys, out) in keys.chunks(BURST_GROUP).zip(out.chunks_mut(BURST_GROUP)) {
            self.classify_group(keys, out);
        }
    }

    fn classify_group(&self, keys: &[Key<A>], out: &mut [Option<u32>]) {
        let count = keys.len().min(out.len()).min(BURST_GROUP);
        let keys = &keys[..count];
        let mut words = [[0; KEY_WORDS]; BURST_GROUP];
        for (words, key) in words.iter_mut().zip(keys) {
            *words = key_words(key);
        }
        let mut best = [RANK_NONE; BURST_GROUP];
        let mut slots = [Slot::EMPTY; BURST_GROUP];
        for tree in &self.trees {
            let mut descending = false;
            for (slot, &best) in slots.iter_mut().zip(&best).take(count) {
                // A key that already has a better rank than the tree's best skips the tree.
                *slot = if tree.rank_min < best { tree.root } else { Slot::EMPTY };
                descending |= !slot.is_leaf();
            }
            for _ in 0..DEPTH_MAX_SUPPORTED {
                if !descending {
                    break;
                }
                descending = false;
                for (slot, words) in slots.iter_mut().zip(&words).take(count) {
                    if !slot.is_leaf() {
                        *slot = self.child(*slot, words);
                        descending |= !slot.is_leaf();
                    }
                }
            }
            for ((best, slot), key) in best.iter_mut().zip(&slots).zip(keys) {
                *best = self.scan_leaf(*slot, key, *best);
            }
        }
        for (answer, &best) in out.iter_mut().zip(&best).take(count) {
            *answer = self.priorities.get(best as usize).copied();
        }
    }

    #[inline(always)]
    fn child(&self, slot: Slot, words: &[u32; KEY_WORDS]) -> Slot {
        self.slots
            .get(slot.child_index(words))
            .copied()
            .unwrap_or(Slot::EMPTY)
    }

    /// Follows cut nodes from `slot` to a leaf. Bounded by the deepest tree supported.
    #[inline(always)]
    fn descend(&self, mut slot: Slot, words: &[u32; KEY_WORDS]) -> Slot {
        for _ in 0..DEPTH_MAX_SUPPORTED {
            if slot.is_leaf() {
                return slot;
            }
            slot = self.child(slot, words);
        }
        slot
    }

    /// The first entry of the leaf matching `key` if it ranks better than `best`, else `best`.
    #[inline(always)]
    fn scan_leaf(&self, slot: Slot, key: &Key<A>, best: u32) -> u32 {
        let ranks = self.leaves.get(slot.rank_range()).unwrap_or(&[]);
        for &rank in ranks {
            if rank >= best {
                break;
            }
            if self
                .entries
                .get(rank as usize)
                .is_some_and(|entry| entry.matches(key))
            {
                return rank;
            }
        }
        best
    }

    /// Bytes held by the structure (entries, priorities, nodes, leaves).
    pub fn memory_bytes(&self) -> usize {
        self.stats.memory_bytes
    }

    /// Entries the classifier was built from.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// What the build produced and what it cost.
    pub fn build_stats(&self) -> BuildStats {
        self.stats
    }
}

impl<A: Address> Classifier<A> {
    #[doc(hidden)]
    pub fn debug_cost(&self, key: &Key<A>) -> [usize; 4] {
        let words = key_words(key);
        let mut best = RANK_NONE;
        let mut cost = [0usize; 4];
        for tree in &self.trees {
            if tree.rank_min >= best {
                break;
            }
            cost[0] += 1;
            let mut slot = tree.root;
            while !slot.is_leaf() {
                cost[1] += 1;
                slot = self.child(slot, &words);
            }
            for &rank in &self.leaves[slot.rank_range()] {
                if rank >= best { break; }
                cost[2] += 1;
                if self.entries[rank as usize].matches(key) { best = rank; break; }
            }
        }
        cost[3] = best as usize;
        cost
    }
}
