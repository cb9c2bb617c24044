//! Building the partitioned cut trees (see the crate documentation for the structure).

use std::collections::HashMap;
use std::mem::size_of;
use std::time::Instant;

use crate::{
    Address, BuildError, BuildStats, Classifier, DEPTH_MAX_SUPPORTED, ENTRIES_MAX_SUPPORTED, Entry,
    Key, LeafRef, Limits, MEMORY_MAX_SUPPORTED, PackedEntry, Probe, Range, Slot, Tree, WindowValue,
};

/// A node with at most this many entries becomes a leaf (scanned linearly).
const LEAF_ENTRIES: usize = 8;
/// A cut of a node of `n` entries may create at most `space_factor × n` child slots (HiCuts'
/// space measure). The first factor measured fastest; a build whose structure needs more than
/// `BYTES_PER_ENTRY_TARGET` bytes per entry is done again with the next: 2 takes a fifth less
/// memory on ClassBench for slightly deeper trees, 1 another fifth (acl1_1k: from 108 to 89
/// bytes per entry, at about 0.75 times the speed).
const SPACE_FACTORS: [usize; 3] = [4, 2, 1];
const BYTES_PER_ENTRY_TARGET: usize = 100;
/// ...and at most `replication_percent × n / 100` entry references in its children: entries
/// spanning several children are copied into each, and this bounds the copies per level. The
/// default's; small sets also try `REPLICATION_PERCENTS[1]` (more copies, shallower trees).
const REPLICATION_PERCENTS: [usize; 2] = [200, 300];
/// Most bits one node extracts: at most 2^16 children.
const CUT_BITS_MAX: u32 = 16;
/// Most bits a cut by a port's lowest bits extracts.
const LOW_CUT_BITS_MAX: u32 = 8;

/// Fields in cut order: source, destination, source port, destination port, protocol, ingress.
const FIELDS: usize = 6;
const SRC: usize = 0;
const DST: usize = 1;
const SPORT: usize = 2;
const DPORT: usize = 3;
const FIELD_NAMES: [&str; FIELDS] = ["src", "dst", "sport", "dport", "proto", "ingress"];

/// Where field `f` lives in the lookup's key words, and how wide it is.
#[derive(Debug, Clone, Copy)]
struct FieldLayout {
    width: u32,
    /// The key bit of the field's least significant bit (`Address::FIELD_LSB`).
    lsb: u32,
}

impl FieldLayout {
    /// The key bit just above the field's open bits when its top `cut_bits` are cut.
    fn open_top(self, cut_bits: u32) -> u32 {
        self.lsb + self.width - cut_bits
    }
}

fn field_layouts<A: Address>() -> [FieldLayout; FIELDS] {
    let widths = [A::BITS, A::BITS, 16, 16, 8, 16];
    std::array::from_fn(|field| FieldLayout {
        width: widths[field],
        lsb: A::FIELD_LSB[field],
    })
}

/// An entry as the builder sees it: one inclusive range per field, widened to 128 bits.
#[derive(Debug, Clone, Copy)]
struct BuildEntry {
    lo: [u128; FIELDS],
    hi: [u128; FIELDS],
    /// Whether the entry ignores TCP flags (the one field that is not a range, never cut).
    flags_any: bool,
}

impl BuildEntry {
    fn new<A: Address>(entry: &Entry<A>, entry_index: usize) -> Result<Self, BuildError> {
        let m = &entry.m;
        let ranges = [
            (m.src.lo.to_u128(), m.src.hi.to_u128()),
            (m.dst.lo.to_u128(), m.dst.hi.to_u128()),
            (u128::from(m.sport.lo), u128::from(m.sport.hi)),
            (u128::from(m.dport.lo), u128::from(m.dport.hi)),
            m.proto
                .map_or((0, u128::from(u8::MAX)), |p| (u128::from(p), u128::from(p))),
            m.ingress.map_or((0, u128::from(u16::MAX)), |i| {
                (u128::from(i), u128::from(i))
            }),
        ];
        let mut lo = [0; FIELDS];
        let mut hi = [0; FIELDS];
        for (field, (range_lo, range_hi)) in ranges.into_iter().enumerate() {
            if range_lo > range_hi {
                return Err(BuildError::EmptyRange {
                    entry_index,
                    field: FIELD_NAMES[field],
                });
            }
            lo[field] = range_lo;
            hi[field] = range_hi;
        }
        Ok(BuildEntry {
            lo,
            hi,
            flags_any: m.tcp_flags.is_none_or(|flags| flags == (0, 0)),
        })
    }

    /// Whether every key in `region` matches this entry.
    fn covers(&self, region: &Region) -> bool {
        self.flags_any
            && (0..FIELDS).all(|f| self.lo[f] <= region.lo[f] && region.hi[f] <= self.hi[f])
    }
}

/// The part of the key space a node sees: per field an inclusive range and the bits already
/// cut. A field with `cut_bits < width` spans an aligned block of `2^(width - cut_bits)` values.
#[derive(Debug, Clone, Copy)]
struct Region {
    lo: [u128; FIELDS],
    hi: [u128; FIELDS],
    cut_bits: [u32; FIELDS],
    /// Fields cut by their lowest bits above: the region's keys share those bits, which `lo`
    /// and `hi` do not say (they are a superset, which keeps every test conservative); a field
    /// is cut that way once.
    low_cut: [bool; FIELDS],
}

impl Region {
    fn everything(layouts: &[FieldLayout; FIELDS]) -> Self {
        let mut hi = [0; FIELDS];
        for (f, layout) in layouts.iter().enumerate() {
            hi[f] = u128::MAX >> (128 - layout.width);
        }
        Region {
            lo: [0; FIELDS],
            hi,
            cut_bits: [0; FIELDS],
            low_cut: [false; FIELDS],
        }
    }
}

/// A cut: extract `bits` bits of `field` below the bits already cut, or its lowest `bits` bits.
#[derive(Debug, Clone, Copy)]
struct Cut {
    field: usize,
    bits: u32,
    /// The field's lowest bits: children by value modulo `2^bits`, for fields of many small
    /// exact values (ports), which the highest bits do not tell apart.
    low: bool,
    /// Entry references the children would hold in all.
    refs: usize,
    /// Entries in the fullest child.
    fullest: usize,
}

struct Builder<'a> {
    entries: &'a [BuildEntry],
    layouts: [FieldLayout; FIELDS],
    max_depth: usize,
    max_memory_bytes: usize,
    space_factor: usize,
    replication_percent: usize,
    /// Bytes that do not grow while trees are built (entries, priorities).
    fixed_bytes: usize,
    trees: Vec<Tree>,
    slots: Vec<Slot>,
    refs: Vec<LeafRef>,
    /// Scratch for child counts, reused by every cut evaluation.
    counts: Vec<i64>,
    /// Scratch for a leaf's window choice: (window value, +1 or -1 entry) events.
    window_events: Vec<(u32, i32)>,
    /// The leaves built so far by their contents (window position, entries): identical leaves
    /// are stored once.
    leaf_slots: HashMap<(u32, Vec<LeafRef>), Slot>,
    stats: BuildStats,
}

pub(crate) fn build<A: Address>(
    entries: &[Entry<A>],
    limits: &Limits,
) -> Result<Classifier<A>, BuildError> {
    let started = Instant::now();
    let prepared = Prepared::new(entries, limits)?;
    // The default shape. A set of `CHOOSE_ENTRIES_MIN..=CHOOSE_ENTRIES_MAX` entries is also
    // built with the other partitionings, then the best of those with more replication, and
    // the structure that does the least work for keys drawn from the entries themselves wins
    // (one within the memory budget before one above it). Large sets keep the default, so that
    // they build well within a second.
    let (over_budget, mut classifier) = prepared.candidate(Shape::DEFAULT)?;
    if (CHOOSE_ENTRIES_MIN..=CHOOSE_ENTRIES_MAX).contains(&entries.len()) {
        let keys = model_keys(entries);
        let mut best = (
            (over_budget, classifier.modeled_work(&keys)),
            Shape::DEFAULT,
        );
        let mut consider = |shape: Shape, best: &mut ((bool, u64), Shape)| {
            // One that cannot be built within the limits is passed over.
            if let Ok((over_budget, other)) = prepared.candidate(shape) {
                let rank = (over_budget, other.modeled_work(&keys));
                if rank < best.0 {
                    *best = (rank, shape);
                    classifier = other;
                }
            }
        };
        for &partitioning in &Partitioning::ALL[1..] {
            let shape = Shape {
                partitioning,
                ..Shape::DEFAULT
            };
            consider(shape, &mut best);
        }
        let partitioning = best.1.partitioning;
        for &replication_percent in &REPLICATION_PERCENTS[1..] {
            let shape = Shape {
                partitioning,
                replication_percent,
            };
            consider(shape, &mut best);
        }
    }
    classifier.stats.entries = entries.len();
    classifier.stats.build_time = started.elapsed();
    Ok(classifier)
}

/// What every candidate structure of one entry list starts from.
struct Prepared<'a, A> {
    limits: &'a Limits,
    /// The entries in rank order.
    ranked: Vec<BuildEntry>,
    packed: Vec<PackedEntry<A>>,
    priorities: Vec<u32>,
    fixed_bytes: usize,
    target_bytes: usize,
}

impl<'a, A: Address> Prepared<'a, A> {
    fn new(entries: &[Entry<A>], limits: &'a Limits) -> Result<Self, BuildError> {
        check_limits(limits)?;
        if entries.len() > limits.max_entries {
            return Err(BuildError::TooManyEntries {
                count: entries.len(),
                max_entries: limits.max_entries,
            });
        }
        let build_entries = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| BuildEntry::new(entry, index))
            .collect::<Result<Vec<_>, _>>()?;
        // Ranks: positions in priority order; a stable sort keeps list order among equal
        // priorities.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&index| entries[index].priority);
        let fixed_bytes = entries.len() * (size_of::<PackedEntry<A>>() + size_of::<u32>());
        Ok(Prepared {
            limits,
            ranked: order.iter().map(|&index| build_entries[index]).collect(),
            packed: order
                .iter()
                .map(|&index| PackedEntry::new(&entries[index].m))
                .collect(),
            priorities: order.iter().map(|&index| entries[index].priority).collect(),
            fixed_bytes,
            target_bytes: fixed_bytes.max(BYTES_PER_ENTRY_TARGET * entries.len()),
        })
    }

    /// The classifier of `shape`, at the first space factor whose structure fits the memory
    /// target (or the last), and whether it is over the target.
    fn candidate(&self, shape: Shape) -> Result<(bool, Classifier<A>), BuildError> {
        let build = |space_factor| {
            build_trees::<A>(
                &self.ranked,
                self.limits,
                self.fixed_bytes,
                space_factor,
                shape,
            )
        };
        let mut builder = build(SPACE_FACTORS[0])?;
        for &space_factor in &SPACE_FACTORS[1..] {
            if builder.needed_bytes() <= self.target_bytes {
                break;
            }
            builder = build(space_factor)?;
        }
        let over_budget = builder.needed_bytes() > self.target_bytes;
        let classifier = builder.into_classifier(self.packed.clone(), self.priorities.clone());
        Ok((over_budget, classifier))
    }
}

/// Sets of at most this many entries are built in several shapes (six builds, each a few
/// milliseconds at 1k entries and tens at 10k).
const CHOOSE_ENTRIES_MAX: usize = 20_000;

/// What a candidate structure is built with besides the space factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    partitioning: Partitioning,
    replication_percent: usize,
}

impl Shape {
    /// The one large sets are built with.
    const DEFAULT: Shape = Shape {
        partitioning: Partitioning::Four,
        replication_percent: REPLICATION_PERCENTS[0],
    };
}

/// Keys the work of a candidate structure is counted on: this many per entry, at most
/// `MODEL_KEYS_MAX`.
const MODEL_KEYS_PER_ENTRY: usize = 8;
const MODEL_KEYS_MAX: usize = 4096;

/// Smaller sets are built with the default shape only: every shape is about as fast there.
const CHOOSE_ENTRIES_MIN: usize = 64;

/// Which fields of an entry are *narrow*: an address range of at most `2^(BITS/2)` addresses,
/// a destination port range of fewer than 256 ports.
#[derive(Debug, Clone, Copy)]
struct Narrow {
    src: bool,
    dst: bool,
    dport: bool,
}

/// Trees a partitioning makes at most.
const GROUPS_MAX: usize = 4;

/// How entries are grouped into trees, by their narrow fields. Cutting a narrow field
/// replicates few entries, and a wide entry in its own tree is not copied into every leaf of
/// the others (CutSplit's idea); but every tree is one more descent per lookup, so which
/// grouping is best depends on the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partitioning {
    /// Both addresses narrow; source only; destination only; neither.
    Four,
    /// Source narrow; destination narrow; neither.
    SourceFirst,
    /// Destination narrow; source narrow; neither.
    DestinationFirst,
    /// As `SourceFirst`, the first group split by a narrow destination port.
    SourceFirstByPort,
    /// As `DestinationFirst`, the first group split by a narrow destination port.
    DestinationFirstByPort,
}

impl Partitioning {
    /// The default first. Measured and dropped: fewer groups (either address narrow;
    /// everything in one tree), never better and up to minutes to build (wide entries copied
    /// into every leaf); the first group split three ways by ports, never chosen.
    const ALL: [Partitioning; 5] = [
        Partitioning::Four,
        Partitioning::SourceFirst,
        Partitioning::DestinationFirst,
        Partitioning::SourceFirstByPort,
        Partitioning::DestinationFirstByPort,
    ];

    /// The group of an entry, below `GROUPS_MAX`.
    fn group(self, narrow: Narrow) -> usize {
        let (first, second, by_port) = match self {
            Partitioning::Four => {
                return match (narrow.src, narrow.dst) {
                    (true, true) => 0,
                    (true, false) => 1,
                    (false, true) => 2,
                    (false, false) => 3,
                };
            }
            Partitioning::SourceFirst => (narrow.src, narrow.dst, false),
            Partitioning::DestinationFirst => (narrow.dst, narrow.src, false),
            Partitioning::SourceFirstByPort => (narrow.src, narrow.dst, true),
            Partitioning::DestinationFirstByPort => (narrow.dst, narrow.src, true),
        };
        // The first group, split by the port or not, then the second address's, then neither.
        let first_groups = 1 + usize::from(by_port);
        match (first, second) {
            (true, _) => usize::from(by_port && !narrow.dport),
            (false, true) => first_groups,
            (false, false) => first_groups + 1,
        }
    }
}

/// Keys drawn from the entries: points spread over the entries in rank order, each
/// a pseudo-random point inside its entry (as ClassBench draws its traces), the same for every
/// build of the same entries.
fn model_keys<A: Address>(entries: &[Entry<A>]) -> Vec<Key<A>> {
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut within = |lo: u128, hi: u128| {
        let span = hi - lo;
        let draw = u128::from(random.next()) << 64 | u128::from(random.next());
        lo + if span == u128::MAX {
            draw
        } else {
            draw % (span + 1)
        }
    };
    let count = (MODEL_KEYS_PER_ENTRY * entries.len()).min(MODEL_KEYS_MAX);
    (0..count)
        .filter_map(|index| entries.get(index * entries.len() / count))
        .map(|entry| {
            let m = &entry.m;
            let range = |r: Range<u16>| (u128::from(r.lo), u128::from(r.hi));
            let (sport_lo, sport_hi) = range(m.sport);
            let (dport_lo, dport_hi) = range(m.dport);
            Key {
                src: A::from_u128(within(m.src.lo.to_u128(), m.src.hi.to_u128())),
                dst: A::from_u128(within(m.dst.lo.to_u128(), m.dst.hi.to_u128())),
                sport: within(sport_lo, sport_hi) as u16,
                dport: within(dport_lo, dport_hi) as u16,
                proto: m.proto.unwrap_or_else(|| within(0, 255) as u8),
                ingress: m.ingress.unwrap_or(0),
                tcp_flags: m.tcp_flags.map_or(0, |(value, _)| value),
            }
        })
        .collect()
}

/// Marsaglia's xorshift64: deterministic, good enough to spread model keys.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One tree per non-empty group of `ranked` (by `shape`), cut with `space_factor`.
fn build_trees<'a, A: Address>(
    ranked: &'a [BuildEntry],
    limits: &Limits,
    fixed_bytes: usize,
    space_factor: usize,
    shape: Shape,
) -> Result<Builder<'a>, BuildError> {
    let mut builder = Builder {
        entries: ranked,
        layouts: field_layouts::<A>(),
        max_depth: limits.max_depth,
        max_memory_bytes: limits.max_memory_bytes,
        space_factor,
        replication_percent: shape.replication_percent,
        fixed_bytes,
        trees: Vec::new(),
        slots: Vec::new(),
        refs: Vec::new(),
        counts: Vec::new(),
        window_events: Vec::new(),
        leaf_slots: HashMap::new(),
        stats: BuildStats::default(),
    };
    builder.check_memory()?;
    for partition in partitions::<A>(ranked, shape.partitioning) {
        if let Some(&rank_min) = partition.first() {
            let region = Region::everything(&builder.layouts);
            let root = builder.node(&partition, &region, 0)?;
            builder.trees.push(Tree { root, rank_min });
        }
    }
    Ok(builder)
}

fn check_limits(limits: &Limits) -> Result<(), BuildError> {
    let checks = [
        ("max_entries", limits.max_entries, ENTRIES_MAX_SUPPORTED),
        ("max_depth", limits.max_depth, DEPTH_MAX_SUPPORTED),
        (
            "max_memory_bytes",
            limits.max_memory_bytes,
            MEMORY_MAX_SUPPORTED,
        ),
    ];
    for (field, value, max) in checks {
        if value == 0 || value > max {
            return Err(BuildError::InvalidLimit { field, value, max });
        }
    }
    Ok(())
}

/// Ranks grouped by `partitioning`.
fn partitions<A: Address>(
    ranked: &[BuildEntry],
    partitioning: Partitioning,
) -> [Vec<u32>; GROUPS_MAX] {
    let span = |entry: &BuildEntry, field: usize| entry.hi[field] - entry.lo[field];
    let mut groups: [Vec<u32>; GROUPS_MAX] = Default::default();
    for (rank, entry) in ranked.iter().enumerate() {
        let narrow = Narrow {
            src: span(entry, SRC) >> (A::BITS / 2) == 0,
            dst: span(entry, DST) >> (A::BITS / 2) == 0,
            dport: span(entry, DPORT) < 256,
        };
        groups[partitioning.group(narrow)].push(rank as u32);
    }
    groups
}

impl Builder<'_> {
    /// The classifier with this structure (its statistics without the build time).
    fn into_classifier<A: Address>(
        self,
        entries: Vec<PackedEntry<A>>,
        priorities: Vec<u32>,
    ) -> Classifier<A> {
        let Builder {
            mut trees,
            mut slots,
            mut refs,
            fixed_bytes,
            mut stats,
            ..
        } = self;
        trees.sort_by_key(|tree| tree.rank_min);
        slots.shrink_to_fit();
        refs.shrink_to_fit();
        stats.trees = trees.len();
        stats.memory_bytes = fixed_bytes
            + slots.len() * size_of::<Slot>()
            + refs.len() * size_of::<LeafRef>()
            + trees.len() * size_of::<Tree>()
            + size_of::<Classifier<A>>();
        Classifier {
            entries,
            priorities,
            trees,
            slots,
            refs,
            stats,
        }
    }

    /// Bytes of the structure built so far.
    fn needed_bytes(&self) -> usize {
        self.fixed_bytes
            + self.slots.len() * size_of::<Slot>()
            + self.refs.len() * size_of::<LeafRef>()
    }

    fn check_memory(&self) -> Result<(), BuildError> {
        let needed_bytes = self.needed_bytes();
        if needed_bytes > self.max_memory_bytes {
            return Err(BuildError::MemoryLimit {
                needed_bytes,
                max_memory_bytes: self.max_memory_bytes,
            });
        }
        Ok(())
    }

    /// Builds the subtree for `ranks` (increasing) restricted to `region`; returns its slot value.
    fn node(&mut self, ranks: &[u32], region: &Region, depth: usize) -> Result<Slot, BuildError> {
        let region = &self.zoom(ranks, region);
        // Entries after one that covers the whole region can never be the first match in it.
        let kept = ranks
            .iter()
            .position(|&rank| self.entries[rank as usize].covers(region))
            .map_or(ranks, |covering| &ranks[..=covering]);
        if kept.is_empty() {
            return Ok(Slot::EMPTY);
        }
        if kept.len() <= LEAF_ENTRIES || depth >= self.max_depth {
            return self.leaf(kept, region, depth);
        }
        match self.choose_cut(kept, region) {
            Some(cut) => self.cut_node(kept, region, depth, cut),
            None => self.leaf(kept, region, depth),
        }
    }

    /// `region` narrowed, per field, to the smallest aligned block holding every entry of
    /// `ranks` there, as if the bits they all share had been cut: cuts below then separate
    /// them, where cuts of those shared bits would separate nothing (a path of one-child
    /// nodes, or a leaf). A key outside the block matches none of these entries, so whichever
    /// child it is sent to, the leaf's full check finds no match, as it should.
    fn zoom(&self, ranks: &[u32], region: &Region) -> Region {
        let mut zoomed = *region;
        for (field, layout) in self.layouts.iter().enumerate() {
            let cut_bits = region.cut_bits[field];
            if cut_bits >= layout.width {
                continue;
            }
            let clipped = ranks.iter().map(|&rank| {
                let entry = &self.entries[rank as usize];
                (
                    entry.lo[field].max(region.lo[field]),
                    entry.hi[field].min(region.hi[field]),
                )
            });
            let Some((lo, hi)) = clipped.reduce(|(lo, hi), (l, h)| (lo.min(l), hi.max(h))) else {
                continue;
            };
            let differing = u128::BITS - (lo ^ hi).leading_zeros();
            let shared = layout.width - differing;
            if shared > cut_bits {
                let host = u128::MAX.checked_shr(u128::BITS - differing).unwrap_or(0);
                zoomed.lo[field] = lo & !host;
                zoomed.hi[field] = lo | host;
                zoomed.cut_bits[field] = shared;
            }
        }
        zoomed
    }

    fn leaf(&mut self, ranks: &[u32], region: &Region, depth: usize) -> Result<Slot, BuildError> {
        self.stats.depth_reached = self.stats.depth_reached.max(depth);
        let (window, refs) = self.leaf_refs(ranks, region);
        let content = (window, refs);
        if let Some(&slot) = self.leaf_slots.get(&content) {
            return Ok(slot);
        }
        let (window, refs) = content;
        let slot = Slot::leaf(self.refs.len() as u32, refs.len() as u32, window);
        self.refs.extend_from_slice(&refs);
        self.check_memory()?;
        self.stats.leaves += 1;
        self.stats.leaf_entry_refs += refs.len();
        self.stats.leaf_entries_max = self.stats.leaf_entries_max.max(refs.len());
        self.leaf_slots.insert((window, refs), slot);
        Ok(slot)
    }

    /// The leaf's references with the filter window that lets the fewest entries through for
    /// the worst key: the top 16 open bits of the field where the entries overlap least. Returns
    /// the window's position in the key and the references.
    fn leaf_refs(&mut self, ranks: &[u32], region: &Region) -> (u32, Vec<LeafRef>) {
        // (entries passed for the worst window value, window position, field, shift of the
        // value within the field)
        let mut best: Option<(i32, u32, usize, u32)> = None;
        let mut events = std::mem::take(&mut self.window_events);
        for (field, layout) in self.layouts.iter().enumerate() {
            let cut_bits = region.cut_bits[field];
            if cut_bits >= layout.width {
                continue;
            }
            // 16 bits ending at the open top, but neither below the field nor across a key
            // word: where the open bits are fewer, the window takes cut bits above them, the
            // same for every key in the region, so values keep their order.
            let top = layout.open_top(cut_bits);
            let word_floor = (top - 1) / 32 * 32;
            let pos = layout
                .lsb
                .max(word_floor)
                .max(top.saturating_sub(WindowValue::BITS));
            let value_shift = pos - layout.lsb;
            events.clear();
            for &rank in ranks {
                let (lo, hi) = self.window_range(rank, region, field, value_shift);
                events.push((u32::from(lo), 1));
                events.push((u32::from(hi) + 1, -1));
            }
            // At equal values the -1 sorts first: a range ending there does not overlap one
            // starting there.
            events.sort_unstable();
            let mut running = 0;
            let mut fullest = 0;
            for &(_, delta) in &events {
                running += delta;
                fullest = fullest.max(running);
            }
            if best.is_none_or(|(fewest, ..)| fullest < fewest) {
                best = Some((fullest, pos, field, value_shift));
            }
        }
        self.window_events = events;
        let refs = ranks
            .iter()
            .map(|&rank| {
                let (lo, hi) = best.map_or((0, WindowValue::MAX), |(_, _, field, value_shift)| {
                    self.window_range(rank, region, field, value_shift)
                });
                LeafRef {
                    rank,
                    window_lo: lo,
                    window_span: hi - lo,
                }
            })
            .collect();
        (best.map_or(0, |(_, pos, ..)| pos), refs)
    }

    /// The window values of entry `rank` in `region`: its range in `field` clipped to the
    /// region, shifted right by `value_shift` and cut to the window's width. The bits above the
    /// window are cut bits of the region, the same for all its values, so the cut keeps the
    /// clipped range in order.
    fn window_range(
        &self,
        rank: u32,
        region: &Region,
        field: usize,
        value_shift: u32,
    ) -> (WindowValue, WindowValue) {
        let entry = &self.entries[rank as usize];
        let lo = entry.lo[field].max(region.lo[field]);
        let hi = entry.hi[field].min(region.hi[field]);
        (
            (lo >> value_shift) as WindowValue,
            (hi >> value_shift) as WindowValue,
        )
    }

    /// Children of entry `rank` under a cut of `bits` bits on `field`: an inclusive index range.
    fn child_span(&self, rank: u32, region: &Region, field: usize, bits: u32) -> (usize, usize) {
        let entry = &self.entries[rank as usize];
        let shift = self.layouts[field].width - region.cut_bits[field] - bits;
        let base = region.lo[field];
        let lo = entry.lo[field].max(base) - base;
        let hi = entry.hi[field].min(region.hi[field]) - base;
        ((lo >> shift) as usize, (hi >> shift) as usize)
    }

    /// Children of entry `rank` under `cut`: `(first, last)`, wrapping past the last child when
    /// `first > last` (a low cut: a range of values is a cyclic range of residues).
    fn children(
        &self,
        rank: u32,
        region: &Region,
        field: usize,
        bits: u32,
        low: bool,
    ) -> (usize, usize) {
        if !low {
            return self.child_span(rank, region, field, bits);
        }
        let entry = &self.entries[rank as usize];
        let lo = entry.lo[field].max(region.lo[field]);
        let hi = entry.hi[field].min(region.hi[field]);
        let fanout = 1u128 << bits;
        if hi - lo + 1 >= fanout {
            (0, (fanout - 1) as usize)
        } else {
            ((lo % fanout) as usize, (hi % fanout) as usize)
        }
    }

    /// The cut that leaves the fewest entries in the fullest child within the space measure;
    /// `None` when no cut separates anything.
    fn choose_cut(&mut self, ranks: &[u32], region: &Region) -> Option<Cut> {
        let n = ranks.len();
        let mut best: Option<Cut> = None;
        for field in 0..FIELDS {
            let layout = self.layouts[field];
            let cut_bits = region.cut_bits[field];
            if cut_bits >= layout.width {
                continue;
            }
            let remaining = layout.width - cut_bits;
            // A cut never crosses a key word.
            let word_room = (layout.open_top(cut_bits) - 1) % 32 + 1;
            let bits_max = remaining.min(word_room).min(CUT_BITS_MAX);
            let mut field_best: Option<Cut> = None;
            for bits in 1..=bits_max {
                let (refs, fullest) = self.child_counts(ranks, region, field, bits, false);
                let too_many_refs = refs * 100 > self.replication_percent * n;
                if bits > 1 && (too_many_refs || (1 << bits) > self.space_factor * n) {
                    break;
                }
                field_best = Some(Cut {
                    field,
                    bits,
                    low: false,
                    refs,
                    fullest,
                });
                if fullest <= 1 {
                    break;
                }
            }
            // Ports also by their lowest bits, once.
            if (field == SPORT || field == DPORT) && !region.low_cut[field] {
                for bits in 1..=LOW_CUT_BITS_MAX {
                    let (refs, fullest) = self.child_counts(ranks, region, field, bits, true);
                    let too_many_refs = refs * 100 > self.replication_percent * n;
                    if too_many_refs || (1 << bits) > self.space_factor * n {
                        break;
                    }
                    let low_cut = Cut {
                        field,
                        bits,
                        low: true,
                        refs,
                        fullest,
                    };
                    if field_best.is_none_or(|b| (fullest, refs) < (b.fullest, b.refs)) {
                        field_best = Some(low_cut);
                    }
                }
            }
            if let Some(candidate) = field_best {
                let better =
                    best.is_none_or(|b| (candidate.fullest, candidate.refs) < (b.fullest, b.refs));
                if better {
                    best = Some(candidate);
                }
            }
        }
        best.filter(|cut| cut.fullest < n)
    }

    /// Entry references in all children and in the fullest child, for one cut.
    fn child_counts(
        &mut self,
        ranks: &[u32],
        region: &Region,
        field: usize,
        bits: u32,
        low: bool,
    ) -> (usize, usize) {
        let fanout = 1 << bits;
        let mut counts = std::mem::take(&mut self.counts);
        counts.clear();
        counts.resize(fanout + 1, 0);
        let mut refs = 0;
        for &rank in ranks {
            let (first, last) = self.children(rank, region, field, bits, low);
            for (from, to) in child_runs(first, last, fanout) {
                counts[from] += 1;
                counts[to + 1] -= 1;
                refs += to - from + 1;
            }
        }
        let mut running = 0;
        let mut fullest = 0;
        for count in &counts {
            running += count;
            fullest = fullest.max(running);
        }
        self.counts = counts;
        (refs, fullest as usize)
    }

    fn cut_node(
        &mut self,
        ranks: &[u32],
        region: &Region,
        depth: usize,
        cut: Cut,
    ) -> Result<Slot, BuildError> {
        let field = cut.field;
        let layout = self.layouts[field];
        let cut_bits = region.cut_bits[field];
        let fanout = 1usize << cut.bits;
        let child_shift = (layout.width - cut_bits).saturating_sub(cut.bits);

        // Children's entry lists, flat: child j holds lists[starts[j]..starts[j + 1]].
        let mut starts = vec![0usize; fanout + 1];
        let spans: Vec<(usize, usize)> = ranks
            .iter()
            .map(|&rank| self.children(rank, region, field, cut.bits, cut.low))
            .collect();
        for &(first, last) in &spans {
            for (from, to) in child_runs(first, last, fanout) {
                for child in from..=to {
                    starts[child + 1] += 1;
                }
            }
        }
        for child in 0..fanout {
            starts[child + 1] += starts[child];
        }
        let mut fill = starts.clone();
        let mut lists = vec![0u32; cut.refs];
        for (&rank, &(first, last)) in ranks.iter().zip(&spans) {
            for (from, to) in child_runs(first, last, fanout) {
                for child in from..=to {
                    lists[fill[child]] = rank;
                    fill[child] += 1;
                }
            }
        }

        let first_child = self.slots.len();
        self.slots.resize(first_child + fanout, Slot::EMPTY);
        self.check_memory()?;
        self.stats.nodes += 1;

        if cut.low {
            // Every child keeps the region (a superset of its keys), so children with the
            // same entries have the same subtree.
            let mut child_region = *region;
            child_region.low_cut[field] = true;
            let mut built: HashMap<&[u32], Slot> = HashMap::new();
            for child in 0..fanout {
                let list = &lists[starts[child]..starts[child + 1]];
                let value = match built.get(list) {
                    Some(&value) => value,
                    None => {
                        let value = self.node(list, &child_region, depth + 1)?;
                        built.insert(list, value);
                        value
                    }
                };
                self.slots[first_child + child] = value;
            }
            return Ok(Slot::node(
                first_child as u32,
                layout.lsb,
                cut.bits,
                ranks[0],
            ));
        }
        let child_lo = |child: usize| region.lo[field] + ((child as u128) << child_shift);
        let child_hi = |child: usize| child_lo(child) + ((1u128 << child_shift) - 1);
        let mut child = 0;
        while child < fanout {
            let list = &lists[starts[child]..starts[child + 1]];
            if list.is_empty() {
                child += 1;
                continue;
            }
            // Neighbours with the same entries, all spanning the neighbours whole in this
            // field, share one subtree: this field cannot separate them any further.
            let mut last = child;
            while last + 1 < fanout
                && lists[starts[last + 1]..starts[last + 2]] == *list
                && list.iter().all(|&rank| {
                    let entry = &self.entries[rank as usize];
                    entry.lo[field] <= child_lo(child) && child_hi(last + 1) <= entry.hi[field]
                })
            {
                last += 1;
            }
            let mut child_region = *region;
            child_region.lo[field] = child_lo(child);
            child_region.hi[field] = child_hi(last);
            child_region.cut_bits[field] = if last > child {
                layout.width
            } else {
                cut_bits + cut.bits
            };
            let value = self.node(list, &child_region, depth + 1)?;
            self.slots[first_child + child..=first_child + last].fill(value);
            child = last + 1;
        }
        Ok(Slot::node(
            first_child as u32,
            layout.open_top(cut_bits) - cut.bits,
            cut.bits,
            ranks[0],
        ))
    }
}

/// A lookup's work, counted: the cost model that chooses between candidate structures.
#[derive(Debug, Default)]
struct Work {
    trees: u64,
    nodes: u64,
    leaf_refs: u64,
    entry_checks: u64,
}

impl Probe for Work {
    fn tree(&mut self) {
        self.trees += 1;
    }
    fn node(&mut self) {
        self.nodes += 1;
    }
    fn leaf_ref(&mut self) {
        self.leaf_refs += 1;
    }
    fn entry_check(&mut self) -> bool {
        self.entry_checks += 1;
        true
    }
}

impl Work {
    /// Relative cost, in about half-nanoseconds on the development machine: a tree costs a
    /// mispredicted branch at its leaf, a node a dependent read, a leaf entry a compare, an
    /// entry check a read and its compares.
    fn cost(&self) -> u64 {
        6 * self.trees + 2 * self.nodes + self.leaf_refs + 3 * self.entry_checks
    }
}

impl<A: Address> Classifier<A> {
    /// The modelled work of looking up every key.
    fn modeled_work(&self, keys: &[Key<A>]) -> u64 {
        let mut work = Work::default();
        for key in keys {
            self.best_rank(key, &mut work);
        }
        work.cost()
    }
}

/// The child index runs of a `(first, last)` range that wraps past `fanout - 1` when
/// `first > last`.
fn child_runs(first: usize, last: usize, fanout: usize) -> impl Iterator<Item = (usize, usize)> {
    let (head, tail) = if first <= last {
        ((first, last), None)
    } else {
        ((first, fanout - 1), Some((0, last)))
    };
    std::iter::once(head).chain(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Match, linear_reference};

    /// Every partitioning gives the first-match answer, not only the one a build keeps: entries
    /// with narrow and wide addresses and ports, keys drawn from them and around them.
    #[test]
    fn every_partitioning_equals_the_linear_reference() {
        let mut random = Xorshift(0x5eed);
        let range = |bits: u32, random: &mut Xorshift| {
            let base = 0xc612_0000 | (random.next() as u32 & 0x0001_ffff);
            let host = u32::MAX
                .checked_shr(random.next() as u32 % (bits + 1))
                .unwrap_or(0);
            Range {
                lo: base & !host,
                hi: base | host,
            }
        };
        let entries: Vec<Entry<u32>> = (0..600)
            .map(|priority| {
                let port = |random: &mut Xorshift| match random.next() % 3 {
                    0 => Range {
                        lo: 0,
                        hi: u16::MAX,
                    },
                    1 => {
                        let port = random.next() as u16 % 1100;
                        Range { lo: port, hi: port }
                    }
                    _ => Range {
                        lo: 1024,
                        hi: u16::MAX,
                    },
                };
                Entry {
                    priority,
                    m: Match {
                        src: range(32, &mut random),
                        dst: range(32, &mut random),
                        sport: port(&mut random),
                        dport: port(&mut random),
                        proto: [None, Some(6), Some(17)][random.next() as usize % 3],
                        ingress: None,
                        tcp_flags: None,
                    },
                }
            })
            .collect();
        let mut keys = model_keys(&entries);
        keys.extend((0..2000).map(|_| Key {
            src: 0xc612_0000 | (random.next() as u32 & 0x0001_ffff),
            dst: 0xc612_0000 | (random.next() as u32 & 0x0001_ffff),
            sport: random.next() as u16 % 1100,
            dport: random.next() as u16 % 1100,
            proto: [6, 17][random.next() as usize % 2],
            ..Key::default()
        }));
        let limits = Limits::default();
        let prepared = Prepared::new(&entries, &limits).expect("prepares");
        for partitioning in Partitioning::ALL {
            let shape = Shape {
                partitioning,
                ..Shape::DEFAULT
            };
            let (_, classifier) = prepared.candidate(shape).expect("builds");
            for key in &keys {
                assert_eq!(
                    classifier.classify(key),
                    linear_reference(&entries, key),
                    "{partitioning:?}, {key:?}"
                );
            }
        }
    }
}
