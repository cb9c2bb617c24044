//! Packet classifier of the VFN: the best-priority entry matching a packet's key, over entries
//! that match ranges of source and destination address, ports, protocol, ingress interface and
//! TCP flags.
//!
//! A [`Classifier`] is built once from a complete entry list ([`Classifier::build`]) and is
//! immutable afterwards (`Send + Sync`; replace it as a whole, e.g. behind an `ArcSwap`). The crate
//! does no I/O, has no `unsafe` and no dependency. A lookup allocates nothing, cannot panic, and
//! every loop in it is bounded (tree depth, leaf size). [`linear_reference`] is the oracle.
//!
//! # Structure: partitioned multi-bit cut trees
//!
//! Entries are sorted by priority; an entry's *rank* is its position, so the smallest matching
//! rank is the answer. They are split into up to four partitions by which address fields are
//! *narrow* (at most 2^16 addresses for IPv4, 2^64 for IPv6): both, source only, destination
//! only, neither. Each partition gets its own tree, so wide entries are not copied into every
//! leaf of a tree that cuts the narrow fields (the idea of CutSplit, Li et al. 2018).
//!
//! A tree node cuts one field into 2^k equal parts by extracting k bits of it (as HiCuts does
//! with power-of-two cuts): every node's region is an aligned block per field, so the child is
//! `(key_word >> shift) & mask`, and a cut never straddles a 32-bit key word (IPv6 addresses are
//! four words). At each node the builder picks, per field, the largest k within two bounds (at
//! most 4·n child slots and 2·n entry references for a node of n entries) and takes the field
//! whose fullest child is smallest. A node of at most 8 entries, or at the depth limit, or
//! where no cut separates anything, is a leaf: a rank list scanned in order. While building, the
//! entries after the first one that covers a node's whole region are dropped (they can never
//! win there), neighbouring children with the same entries that all span them share one
//! subtree, and identical leaves are stored once. If the structure needs more than 100 bytes
//! per entry, it is built again with at most 2·n child slots per node.
//!
//! Each child slot is 8 bytes holding the child's offset and its cut (or its leaf length), so a
//! level costs one memory read; a node's slot also holds a lower bound of its subtree's best
//! rank. A lookup visits the trees in order of their best rank and stops a tree's descent as
//! soon as the tree or subtree cannot beat the rank found. Each leaf entry carries the 16-bit
//! window of values it spans in one field (the field where the leaf's entries overlap least),
//! so a leaf scan checks most non-matching entries without loading them; the scan stops at the
//! first match or at a rank worse than the one found.
//!
//! # Measured (ClassBench, `vfn-perf classbench`, see `docs/benchmarks.md`)
//!
//! On acl1, fw1 and ipc1 at 1k to 100k rules: builds in 1-250 ms, 50-108 bytes per rule, 7-40
//! million lookups per second on one core of a shared 2-vCPU VM; per lookup 1-3 trees and 1-9
//! nodes. [`BuildStats`] reports the numbers of a build.
//!
//! # Bounds
//!
//! [`Limits`] bounds the entry count, the tree depth and the bytes of the structure; `build`
//! refuses with a [`BuildError`] naming the limit instead of growing past them. The depth is
//! also bounded by construction: every cut consumes bits, so a path has at most
//! 2·128 + 16 + 16 + 8 + 16 cuts even without the limit.

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
    /// The address widened to 128 bits (build time only).
    fn to_u128(self) -> u128;
    /// The address as 32-bit words, most significant first (`out.len() == WORDS`).
    fn write_words(self, out: &mut [u32]);
}

impl Address for u32 {
    const BITS: u32 = 32;
    const WORDS: usize = 1;
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
    /// Bytes of the whole structure (entries, nodes, leaves); at most
    /// [`MEMORY_MAX_SUPPORTED`].
    pub max_memory_bytes: usize,
}

/// The largest `Limits::max_memory_bytes`: node and leaf offsets are 32-bit.
pub const MEMORY_MAX_SUPPORTED: usize = 1 << 32;

/// The deepest tree `Limits::max_depth` may ask for.
pub const DEPTH_MAX_SUPPORTED: usize = 64;

/// The most entries `Limits::max_entries` may allow: a leaf's reference count, at most the entry
/// count, is a 22-bit field of its slot.
pub const ENTRIES_MAX_SUPPORTED: usize = (1 << 22) - 1;

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
#[repr(align(32))]
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

/// A reference to a subtree, as the root of a tree or in a cut node's child array, with what is
/// needed to use it, so that each level of a lookup costs one memory read.
///
/// Bits 0-31: the offset of a node's first child slot in `slots`, or of a leaf's first entry
/// reference in `refs`. Bit 63 clear, a node: the key word index (bits 32-35), the shift within
/// it (bits 36-40), the bits extracted minus one (bits 41-44) and a lower bound of the best rank
/// in the subtree (bits 45-62, saturated), so that a lookup that already has a better rank stops
/// there. Bit 63 set, a leaf: its filter window's key word (bits 32-35) and shift (bits 36-40)
/// and its reference count (bits 41-62).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot(u64);

impl Slot {
    const LEAF_FLAG: u64 = 1 << 63;
    /// A leaf with no entry.
    const EMPTY: Slot = Slot(Self::LEAF_FLAG);
    /// Bits of a node's rank bound and of a leaf's reference count.
    const RANK_BOUND_BITS: u32 = 18;
    const COUNT_BITS: u32 = 22;

    fn node(first_child: u32, word: u32, shift: u32, bits: u32, rank_min: u32) -> Slot {
        let rank_bound = rank_min.min((1 << Self::RANK_BOUND_BITS) - 1);
        let descriptor = u64::from(word)
            | u64::from(shift) << 4
            | u64::from(bits - 1) << 9
            | u64::from(rank_bound) << 13;
        Slot(descriptor << 32 | u64::from(first_child))
    }

    /// A leaf of `count` references (below `2^COUNT_BITS`) from `offset`.
    fn leaf(offset: u32, count: u32, window: Window) -> Slot {
        let descriptor =
            u64::from(window.word) | u64::from(window.shift) << 4 | u64::from(count) << 9;
        Slot(Self::LEAF_FLAG | descriptor << 32 | u64::from(offset))
    }

    #[inline(always)]
    fn is_leaf(self) -> bool {
        self.0 & Self::LEAF_FLAG != 0
    }

    #[inline(always)]
    fn offset(self) -> usize {
        self.0 as u32 as usize
    }

    /// The key word's bits at the slot's position (node: the child index; leaf: the window).
    #[inline(always)]
    fn extract(self, words: &[u32; KEY_WORDS]) -> u32 {
        let descriptor = (self.0 >> 32) as u32;
        words[(descriptor & 15) as usize] >> ((descriptor >> 4) & 31)
    }

    /// Index in `slots` of the child `words` leads to (for a node).
    #[inline(always)]
    fn child_index(self, words: &[u32; KEY_WORDS]) -> usize {
        let bits = ((self.0 >> 41) & 15) as u32 + 1;
        self.offset() + (self.extract(words) & ((1 << bits) - 1)) as usize
    }

    /// A lower bound of the best rank in the subtree (for a node).
    #[inline(always)]
    fn rank_bound(self) -> u32 {
        (self.0 >> 45) as u32 & ((1 << Self::RANK_BOUND_BITS) - 1)
    }

    /// The leaf's references, in `refs` (for a leaf).
    #[inline(always)]
    fn ref_range(self) -> std::ops::Range<usize> {
        let count = (self.0 >> 41) as usize & ((1 << Self::COUNT_BITS) - 1);
        self.offset()..self.offset() + count
    }
}

/// Where a leaf's filter window lies in the key words: 16 bits of word `word` from bit `shift`,
/// the most significant bits of one field that the leaf's region leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct Window {
    word: u8,
    shift: u8,
}

/// A filter window value.
type WindowValue = u16;

/// One entry of a leaf: its rank and the window values it can match, `lo..=lo + span`. A key
/// whose window value is outside cannot match the entry; that check loads nothing more, so most
/// entries that fail are passed over without loading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LeafRef {
    rank: u32,
    window_lo: WindowValue,
    window_span: WindowValue,
}

impl LeafRef {
    #[inline(always)]
    fn may_match(self, window: WindowValue) -> bool {
        window.wrapping_sub(self.window_lo) <= self.window_span
    }
}

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
    /// Leaves' entry references, each leaf's in increasing rank; identical leaves are stored
    /// once.
    refs: Vec<LeafRef>,
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
            best = self.search(tree.root, key, &words, best);
        }
        self.priorities.get(best as usize).copied()
    }

    /// `classify` for every key: `out[i]` is the answer for `keys[i]`. Extra `out` slots (or
    /// keys) beyond the shorter of the two are left alone.
    ///
    /// One key after the other: walking a group of keys through each tree one level at a time
    /// (so that their memory reads overlap) measured slower on ClassBench, whose structures fit
    /// the caches; branch mispredictions, not memory latency, bound the lookup there.
    pub fn classify_burst(&self, keys: &[Key<A>], out: &mut [Option<u32>]) {
        for (key, answer) in keys.iter().zip(out.iter_mut()) {
            *answer = self.classify(key);
        }
    }

    /// The best rank matching `key` in the subtree at `slot` if it beats `best`, else `best`.
    /// Follows cut nodes to a leaf, bounded by the deepest tree supported; stops at a node
    /// whose subtree cannot beat `best`.
    #[inline(always)]
    fn search(&self, mut slot: Slot, key: &Key<A>, words: &[u32; KEY_WORDS], best: u32) -> u32 {
        for _ in 0..=DEPTH_MAX_SUPPORTED {
            if slot.is_leaf() {
                return self.scan_leaf(slot, key, words, best);
            }
            if slot.rank_bound() >= best {
                return best;
            }
            slot = self
                .slots
                .get(slot.child_index(words))
                .copied()
                .unwrap_or(Slot::EMPTY);
        }
        best
    }

    /// The first entry of the leaf matching `key` if it ranks better than `best`, else `best`.
    #[inline(always)]
    fn scan_leaf(&self, slot: Slot, key: &Key<A>, words: &[u32; KEY_WORDS], best: u32) -> u32 {
        let refs = self.refs.get(slot.ref_range()).unwrap_or(&[]);
        let window = slot.extract(words) as WindowValue;
        for &leaf_ref in refs {
            if leaf_ref.rank >= best {
                break;
            }
            if leaf_ref.may_match(window)
                && self
                    .entries
                    .get(leaf_ref.rank as usize)
                    .is_some_and(|entry| entry.matches(key))
            {
                return leaf_ref.rank;
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
