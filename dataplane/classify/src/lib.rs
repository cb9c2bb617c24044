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
//! rank is the answer. They are split into partitions by which address fields are *narrow* (at
//! most 2^16 addresses for IPv4, 2^64 for IPv6), and each partition gets its own tree, so wide
//! entries are not copied into every leaf of a tree that cuts the narrow fields (the idea of
//! CutSplit, Li et al. 2018). By default four: both narrow, source only, destination only,
//! neither. Every tree is one more descent per lookup, and entries that differ only in ports
//! crowd the leaves of an address tree, so a set of up to 20,000 entries is also built with
//! three groups (source narrow first, or destination narrow first), optionally with the first
//! group split by a narrow destination port (fewer than 256 ports), and the builder keeps the
//! structure that does the least work on keys drawn from the entries themselves, counted by
//! the lookup's own code (trees, nodes, leaf entries, entry checks).
//!
//! A tree node cuts one field into 2^k equal parts by extracting k bits of it (as HiCuts does
//! with power-of-two cuts): every node's region is an aligned block per field, so the child is
//! `(key_word >> shift) & mask`, and a cut never straddles a 32-bit key word (IPv6 addresses are
//! four words). A port may also be cut once by its lowest k bits (children by value modulo
//! 2^k), which tells apart small exact ports that share their high bits. Before cutting, each
//! field of a node's region is narrowed to the aligned block its entries share (the bits they
//! all have in common are skipped, as a Patricia trie skips a one-way path): a key outside
//! that block matches none of the node's entries, so wherever it goes the leaf check rejects
//! it. At each node the builder picks, per field, the largest k within two bounds (at most 4·n
//! child slots and 2·n entry references for a node of n entries) and takes the field whose
//! fullest child is smallest. A node of at most 8 entries, or at the depth limit, or
//! where no cut separates anything, is a leaf: a rank list scanned in order. While building, the
//! entries after the first one that covers a node's whole region are dropped (they can never
//! win there), neighbouring children with the same entries that all span them share one
//! subtree, and identical leaves are stored once. If the structure needs more than 100 bytes
//! per entry, it is built again with at most 2·n child slots per node, then with n.
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
//! On acl1, fw1 and ipc1 at 1k to 100k rules: builds in 15-290 ms, 50-97 bytes per rule, 9-47
//! million lookups per second on one core of a shared 2-vCPU VM; per lookup 1-3 trees and 1-10
//! nodes. [`BuildStats`] reports the numbers of a build.
//!
//! # Bounds
//!
//! [`Limits`] bounds the entry count, the tree depth and the bytes of the structure; `build`
//! refuses with a [`BuildError`] naming the limit instead of growing past them. The depth is
//! also bounded by construction: every cut consumes bits or is a port's one low cut, so a path
//! has at most 2·128 + 16 + 16 + 8 + 16 + 2 cuts even without the limit.

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
    pub trait SealedWords {}
    impl SealedWords for [u64; 2] {}
    impl SealedWords for [u32; 16] {}
}

/// An address type the classifier works on: `u32` (IPv4) or `u128` (IPv6).
pub trait Address:
    Copy + Ord + Hash + Debug + Default + Send + Sync + 'static + sealed::Sealed
{
    /// Width in bits.
    const BITS: u32;
    /// The key as words, the form a lookup extracts bits from.
    type KeyWords: KeyWords;
    /// Where each field's least significant bit is in the key words (bit `b` is bit `b % 32`
    /// of 32-bit word `b / 32`, least significant first), in the builder's field order: source, destination, source port,
    /// destination port, protocol, ingress. Each field has 16 bits or more of its own (the
    /// protocol is zero-extended), so 16 bits read from inside a field never reach the next.
    const FIELD_LSB: [u32; 6];
    /// The address widened to 128 bits (build time only).
    fn to_u128(self) -> u128;
    /// The low `BITS` bits of `value` (build time only).
    fn from_u128(value: u128) -> Self;
    /// `self - other`, modulo 2^BITS.
    fn wrapping_sub(self, other: Self) -> Self;
    /// `key` as words, each field from bit `FIELD_LSB[f]`.
    fn key_words(key: &Key<Self>) -> Self::KeyWords;
}

/// A key as words (see `Address::FIELD_LSB`).
pub trait KeyWords: Copy + Debug + sealed::SealedWords {
    /// The bits from key bit `pos` to the end of its word, in the low bits. A cut or a filter
    /// window never crosses a word.
    fn extract(&self, pos: u32) -> u32;
}

/// IPv4: the key in two registers, so that a level of a lookup selects its half instead of
/// reading the word from memory (a dependent read per level).
impl KeyWords for [u64; 2] {
    #[inline(always)]
    fn extract(&self, pos: u32) -> u32 {
        let half = std::hint::select_unpredictable(pos & 64 != 0, self[1], self[0]);
        (half >> (pos % 64)) as u32
    }
}

/// IPv6: sixteen words, so that any word index can be masked into range.
impl KeyWords for [u32; 16] {
    #[inline(always)]
    fn extract(&self, pos: u32) -> u32 {
        self[(pos / 32) as usize % 16] >> (pos % 32)
    }
}

impl Address for u32 {
    const BITS: u32 = 32;
    /// Source and destination in one half, the ports, protocol and ingress in the other.
    type KeyWords = [u64; 2];
    const FIELD_LSB: [u32; 6] = [0, 32, 64, 80, 96, 112];
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    fn from_u128(value: u128) -> u32 {
        value as u32
    }
    #[inline(always)]
    fn wrapping_sub(self, other: u32) -> u32 {
        u32::wrapping_sub(self, other)
    }
    #[inline(always)]
    fn key_words(key: &Key<u32>) -> [u64; 2] {
        [
            u64::from(key.src) | u64::from(key.dst) << 32,
            u64::from(key.sport)
                | u64::from(key.dport) << 16
                | u64::from(key.proto) << 32
                | u64::from(key.ingress) << 48,
        ]
    }
}

impl Address for u128 {
    const BITS: u32 = 128;
    /// Source and destination four words each (least significant first), then one word
    /// each for the ports, protocol and ingress.
    type KeyWords = [u32; 16];
    const FIELD_LSB: [u32; 6] = [0, 128, 256, 288, 320, 352];
    fn to_u128(self) -> u128 {
        self
    }
    fn from_u128(value: u128) -> u128 {
        value
    }
    #[inline(always)]
    fn wrapping_sub(self, other: u128) -> u128 {
        u128::wrapping_sub(self, other)
    }
    #[inline(always)]
    fn key_words(key: &Key<u128>) -> [u32; 16] {
        let mut words = [0; 16];
        for index in 0..4 {
            words[index] = (key.src >> (32 * index)) as u32;
            words[4 + index] = (key.dst >> (32 * index)) as u32;
        }
        words[8] = u32::from(key.sport);
        words[9] = u32::from(key.dport);
        words[10] = u32::from(key.proto);
        words[11] = u32::from(key.ingress);
        words
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

/// An entry in the form the lookup checks: per range its start and span (`hi - lo`), so that
/// one wrapping subtraction and one comparison test it; masks for the rest.
#[derive(Debug, Clone, Copy)]
#[repr(align(32))]
struct PackedEntry<A> {
    src_lo: A,
    src_span: A,
    dst_lo: A,
    dst_span: A,
    sport_lo: u16,
    sport_span: u16,
    dport_lo: u16,
    dport_span: u16,
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
            src_span: m.src.hi.wrapping_sub(m.src.lo),
            dst_lo: m.dst.lo,
            dst_span: m.dst.hi.wrapping_sub(m.dst.lo),
            sport_lo: m.sport.lo,
            sport_span: m.sport.hi.wrapping_sub(m.sport.lo),
            dport_lo: m.dport.lo,
            dport_span: m.dport.hi.wrapping_sub(m.dport.lo),
            ingress_value,
            ingress_mask,
            proto_value,
            proto_mask,
            flags_value,
            flags_mask,
        }
    }

    /// Same answer as `Match::matches` (for `lo <= hi`), without a branch: the tests are
    /// folded into one word, because which test fails varies from key to key and a
    /// mispredicted branch costs more than the remaining tests.
    #[inline(always)]
    fn matches(&self, key: &Key<A>) -> bool {
        let misses = u32::from(key.src.wrapping_sub(self.src_lo) > self.src_span)
            | u32::from(key.dst.wrapping_sub(self.dst_lo) > self.dst_span)
            | u32::from(key.sport.wrapping_sub(self.sport_lo) > self.sport_span)
            | u32::from(key.dport.wrapping_sub(self.dport_lo) > self.dport_span)
            | u32::from(key.proto & self.proto_mask != self.proto_value)
            | u32::from(key.ingress & self.ingress_mask != self.ingress_value)
            | u32::from(key.tcp_flags & self.flags_mask != self.flags_value);
        misses == 0
    }
}

/// A reference to a subtree, as the root of a tree or in a cut node's child array, with what is
/// needed to use it, so that each level of a lookup costs one memory read.
///
/// Bits 32-63: the offset of a node's first child slot in `slots`, or of a leaf's first entry
/// reference in `refs`. Bits 0-8: the key bit where the node's cut (or the leaf's filter
/// window) starts. Bit 31 clear, a node: the bits extracted minus one (bits 9-12) and a lower
/// bound of the best rank in the subtree (bits 13-30, saturated), so that a lookup that already
/// has a better rank stops there. Bit 31 set, a leaf: its reference count (bits 9-30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot(u64);

impl Slot {
    const LEAF_FLAG: u64 = 1 << 31;
    /// A leaf with no entry.
    const EMPTY: Slot = Slot(Self::LEAF_FLAG);
    /// Bits of the key position, of a node's rank bound and of a leaf's reference count.
    const POS_BITS: u32 = 9;
    const RANK_BOUND_BITS: u32 = 18;
    const COUNT_BITS: u32 = 22;

    fn node(first_child: u32, pos: u32, bits: u32, rank_min: u32) -> Slot {
        let rank_bound = rank_min.min((1 << Self::RANK_BOUND_BITS) - 1);
        let descriptor = u64::from(pos) | u64::from(bits - 1) << 9 | u64::from(rank_bound) << 13;
        Slot(u64::from(first_child) << 32 | descriptor)
    }

    /// A leaf of `count` references (below `2^COUNT_BITS`) from `offset`, its filter window
    /// at `window_pos`.
    fn leaf(offset: u32, count: u32, window_pos: u32) -> Slot {
        let descriptor = Self::LEAF_FLAG | u64::from(count) << 9 | u64::from(window_pos);
        Slot(u64::from(offset) << 32 | descriptor)
    }

    #[inline(always)]
    fn is_leaf(self) -> bool {
        self.0 & Self::LEAF_FLAG != 0
    }

    #[inline(always)]
    fn offset(self) -> usize {
        (self.0 >> 32) as usize
    }

    /// The key's bits at the slot's position (node: the child index; leaf: the window).
    #[inline(always)]
    fn extract<K: KeyWords>(self, words: &K) -> u32 {
        words.extract(self.0 as u32 & ((1 << Self::POS_BITS) - 1))
    }

    /// Index in `slots` of the child the key leads to (for a node).
    #[inline(always)]
    fn child_index<K: KeyWords>(self, words: &K) -> usize {
        let bits = ((self.0 >> 9) & 15) as u32 + 1;
        self.offset() + (self.extract(words) & ((1 << bits) - 1)) as usize
    }

    /// A lower bound of the best rank in the subtree (for a node).
    #[inline(always)]
    fn rank_bound(self) -> u32 {
        (self.0 >> 13) as u32 & ((1 << Self::RANK_BOUND_BITS) - 1)
    }

    /// The leaf's references, in `refs` (for a leaf).
    #[inline(always)]
    fn ref_range(self) -> std::ops::Range<usize> {
        let count = (self.0 >> 9) as usize & ((1 << Self::COUNT_BITS) - 1);
        self.offset()..self.offset() + count
    }
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

/// What a lookup reports of its work: the builder counts it to choose between structures
/// (`build::Work`); `classify` reports to `NoProbe`, which compiles to nothing.
trait Probe {
    /// A tree is searched.
    fn tree(&mut self);
    /// A cut node is passed.
    fn node(&mut self);
    /// A leaf entry's window is checked.
    fn leaf_ref(&mut self);
    /// A leaf entry is loaded and checked in full; returns `true`.
    fn entry_check(&mut self) -> bool;
}

struct NoProbe;

impl Probe for NoProbe {
    #[inline(always)]
    fn tree(&mut self) {}
    #[inline(always)]
    fn node(&mut self) {}
    #[inline(always)]
    fn leaf_ref(&mut self) {}
    #[inline(always)]
    fn entry_check(&mut self) -> bool {
        true
    }
}

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
        let best = self.best_rank(key, &mut NoProbe);
        self.priorities.get(best as usize).copied()
    }

    /// The best rank matching `key` (`RANK_NONE` if none), reporting the work to `probe`.
    #[inline(always)]
    fn best_rank<P: Probe>(&self, key: &Key<A>, probe: &mut P) -> u32 {
        let words = A::key_words(key);
        let mut best = RANK_NONE;
        for tree in &self.trees {
            if tree.rank_min >= best {
                break;
            }
            probe.tree();
            best = self.search(tree.root, key, &words, best, probe);
        }
        best
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
    fn search<P: Probe>(
        &self,
        mut slot: Slot,
        key: &Key<A>,
        words: &A::KeyWords,
        best: u32,
        probe: &mut P,
    ) -> u32 {
        for _ in 0..=DEPTH_MAX_SUPPORTED {
            if slot.is_leaf() {
                return self.scan_leaf(slot, key, words, best, probe);
            }
            if slot.rank_bound() >= best {
                return best;
            }
            probe.node();
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
    fn scan_leaf<P: Probe>(
        &self,
        slot: Slot,
        key: &Key<A>,
        words: &A::KeyWords,
        best: u32,
        probe: &mut P,
    ) -> u32 {
        let refs = self.refs.get(slot.ref_range()).unwrap_or(&[]);
        let window = slot.extract(words) as WindowValue;
        for &leaf_ref in refs {
            if leaf_ref.rank >= best {
                break;
            }
            probe.leaf_ref();
            if leaf_ref.may_match(window)
                && probe.entry_check()
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
