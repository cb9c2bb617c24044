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

/// A slot value with this bit set is a leaf (an offset into `leaves`), otherwise a cut node (an
/// offset into `slots`).
const LEAF_FLAG: u32 = 1 << 31;
/// The shared empty leaf: `leaves[0] == 0`.
const EMPTY_LEAF: u32 = LEAF_FLAG;
/// No entry found yet: above every rank.
const RANK_NONE: u32 = u32::MAX;

/// One tree: the entries of one partition.
#[derive(Debug, Clone, Copy)]
struct Tree {
    /// Slot value of the root (node or leaf).
    root: u32,
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
    /// Cut nodes: a header word (key word index, shift, mask) followed by one slot per child.
    slots: Vec<u32>,
    /// Leaves: a count followed by that many ranks in increasing order.
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
    pub fn classify_burst(&self, keys: &[Key<A>], out: &mut [Option<u32>]) {
        for (key, answer) in keys.iter().zip(out.iter_mut()) {
            *answer = self.classify(key);
        }
    }

    /// Follows cut nodes from `slot` to a leaf; returns the leaf's slot value. Bounded by the
    /// depth limit the tree was built with.
    #[inline(always)]
    fn descend(&self, mut slot: u32, words: &[u32; KEY_WORDS]) -> u32 {
        for _ in 0..=DEPTH_MAX_SUPPORTED {
            if slot & LEAF_FLAG != 0 {
                return slot;
            }
            let header_index = slot as usize;
            let header = self.slots.get(header_index).copied().unwrap_or(EMPTY_LEAF);
            let word = words[(header & 0xff) as usize % KEY_WORDS];
            let child = ((word >> ((header >> 8) & 31)) & (header >> 16)) as usize;
            slot = self
                .slots
                .get(header_index + 1 + child)
                .copied()
                .unwrap_or(EMPTY_LEAF);
        }
        EMPTY_LEAF
    }

    /// The first entry of the leaf matching `key` if it ranks better than `best`, else `best`.
    #[inline(always)]
    fn scan_leaf(&self, slot: u32, key: &Key<A>, best: u32) -> u32 {
        let offset = (slot & !LEAF_FLAG) as usize;
        let count = self.leaves.get(offset).copied().unwrap_or(0) as usize;
        let ranks = self
            .leaves
            .get(offset + 1..offset + 1 + count)
            .unwrap_or(&[]);
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
            while slot & LEAF_FLAG == 0 {
                cost[1] += 1;
                let header = self.slots[slot as usize];
                let word = words[(header & 0xff) as usize];
                let child = ((word >> ((header >> 8) & 31)) & (header >> 16)) as usize;
                slot = self.slots[slot as usize + 1 + child];
            }
            let offset = (slot & !LEAF_FLAG) as usize;
            let count = self.leaves[offset] as usize;
            for &rank in &self.leaves[offset + 1..offset + 1 + count] {
                if rank >= best { break; }
                cost[2] += 1;
                if self.entries[rank as usize].matches(key) { best = rank; break; }
            }
        }
        cost[3] = best as usize;
        cost
    }
}
