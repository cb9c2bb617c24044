//! Longest-prefix-match tables: the FIB lookup structure of the VFN.
//!
//! Both tables are built once from a complete route list ([`Ipv4Lpm::build`],
//! [`Ipv6Lpm::build`]) and are immutable afterwards, so they can be shared between workers
//! (`Send + Sync`) and replaced as a whole (for example behind an `ArcSwap`). The crate does no
//! I/O, has no `unsafe` and no runtime dependency. A lookup never allocates, never panics and
//! never loops over routes.
//!
//! Every route carries an opaque [`NextHopIndex`] chosen by the caller (at most
//! [`NEXT_HOP_INDEX_MAX`]); a lookup returns the value of the longest prefix containing the
//! address, or `None` when no prefix (not even a default route) contains it.
//!
//! # IPv4: 16-8-8 direct tables ([`Ipv4Lpm`])
//!
//! A top table of 2^16 entries is indexed by the address's first 16 bits. Each entry is either a
//! result (a next hop or "no route") or the index of a *group*: 256 entries indexed by the next
//! 8 bits. Group entries are again results or, in second-level groups, the index of a
//! third-level group indexed by the last 8 bits. Shorter prefixes are expanded into every entry
//! they cover; groups are allocated on demand, only below /16 and /24 blocks that contain a longer
//! route, and start as copies of the result they replace.
//!
//! - Lookup cost: 1 memory access for results decided by prefixes up to /16, 2 up to /24,
//!   at most 3 for /25 to /32. No loop.
//! - Memory: `4 × 65_536 + 1_024 × groups` bytes, where `groups` counts the /16 blocks holding a
//!   route longer than /16 plus the /24 blocks holding a route longer than /24; so
//!   `groups <= min(routes, 65_536) + routes`. The 1 M-route table of the `lpm_bench` example
//!   (3.5 % of routes longer than /24) takes 91 MiB; the worst case (every route a /25../32 in
//!   its own /24) is 64 MiB plus 1 KiB per route.
//!
//! # IPv6: 16-bit direct table, then a compressed 6-bit multibit trie ([`Ipv6Lpm`])
//!
//! A top table of 2^16 entries (results or node indices, as for IPv4) is followed by a
//! Poptrie-style trie (Asai & Ohara, SIGCOMM 2015) with a stride of 6 bits, so one node covers 64
//! slots with two 64-bit bitmaps instead of 64 entries: `children` marks slots that lead to a
//! deeper node, `result_runs` marks the slots where a run of equal results starts. The k-th child
//! (counted with a popcount) lives at `child_base + k`, and the result of any other slot is that
//! of the last run started at or before it, at `result_base + runs - 1`. Children of a node are contiguous in
//! one flat `Vec`, results in another: no allocation per node.
//!
//! - Lookup cost: 1 access to the top table, then one 24-byte node per 6 bits below /16 until the
//!   first slot without a longer route below it, then 1 access to the result: at most
//!   `1 + 19 + 1` accesses for a /128, `1 + 6 + 1` for a result decided within a /52.
//! - Memory: `4 × 65_536 + 24 × nodes + 4 × results` bytes. A node exists for each block at depth
//!   16 + 6k that contains a route longer than that depth, so `nodes <= 19 × routes`; a node
//!   stores one result per run of equal results, and only the two ends of a route ending in the
//!   node start new runs, so `results <= nodes + 2 × routes`. Memory is thus at most
//!   `256 KiB + 540 B × routes`; the 100 k-route table of `lpm_bench` takes 7.3 MiB (77 B/route).
//!
//! For bursts of packets, [`Ipv6Lpm::lookup_burst`] walks one trie level at a time for the whole
//! burst, so that the node reads of different addresses overlap.
//!
//! # Speed (`lpm_bench` example, release, 2-core shared VM: noisy, orders of magnitude only)
//!
//! | lookup                               | baseline x86-64 | `-C target-cpu=x86-64-v2` |
//! |--------------------------------------|-----------------|---------------------------|
//! | IPv4, 256 hot addresses              | 2-3 ns          | 2 ns                      |
//! | IPv4, random over 1 M routes (91 MiB)| 17-32 ns        | 17 ns                     |
//! | IPv6, 256 hot addresses              | 42-57 ns        | 27 ns                     |
//! | IPv6, same, bursts of 32             | 25-36 ns        | 20 ns                     |
//! | IPv6, random inside 100 k routes     | 130-370 ns      | 108 ns                    |
//! | IPv6, same, bursts of 32             | 72-87 ns        | 52 ns                     |
//!
//! Random IPv4 lookups over a 1 M-route table are bound by cache and TLB misses (two dependent
//! reads). The IPv6 trie counts children with `u64::count_ones`, a single instruction only when
//! the build enables `popcnt` (x86-64-v2 and later); without it each node costs a dozen more
//! dependent instructions.
//!
//! # Building
//!
//! Routes are validated (prefix length, host bits, duplicates, next-hop range, route limit; each
//! error names the route's index in the input slice), then sorted by (network, prefix length).
//! In that order every route comes after all routes that contain it, so writing each route over
//! the entries it covers leaves every entry with its longest prefix (controlled prefix expansion)
//! without tracking prefix lengths per entry. Building is `O(routes × log routes)` for the sort,
//! plus at most 2^16 entry writes per prefix length up to /16, plus 256 entry writes per IPv4
//! group or one pass over its routes per IPv6 node (at most 19 per route). In release builds
//! 1 M IPv4 routes take about 0.1 s and 100 k IPv6 routes about 0.03 s.

mod error;
mod ipv4;
mod ipv6;
mod result_entry;
mod route;

pub use error::LpmError;
pub use ipv4::Ipv4Lpm;
pub use ipv6::Ipv6Lpm;

/// Value stored per prefix: an opaque next-hop index chosen by the caller.
pub type NextHopIndex = u32;

/// Largest [`NextHopIndex`] a table can store: the two high bits of a table entry are its kind.
pub const NEXT_HOP_INDEX_MAX: NextHopIndex = result_entry::PAYLOAD_MASK;

const _: () = assert!(NEXT_HOP_INDEX_MAX >= (1 << 20) - 1);

/// Bounds on a table's input, checked by `build` before any work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LpmLimits {
    /// Most routes one table accepts. Memory grows linearly with it (see the crate docs).
    pub max_routes: usize,
}

impl LpmLimits {
    /// Room for a full Internet IPv4 table with headroom: 2^20 routes.
    pub const IPV4_DEFAULT: Self = Self {
        max_routes: 1_048_576,
    };
    /// Room for a full Internet IPv6 table with headroom: 2^17 routes.
    pub const IPV6_DEFAULT: Self = Self {
        max_routes: 131_072,
    };
}

impl Default for LpmLimits {
    /// The IPv4 default, the larger of the two.
    fn default() -> Self {
        Self::IPV4_DEFAULT
    }
}
