//! Per-worker flow table of the VFN: one table per worker, no sharing, no locks, no I/O (the
//! caller passes the time as `now_ns`, from a monotonic clock), no `unsafe`, and no allocation
//! after [`FlowTable::new`].
//!
//! # Per packet
//!
//! ```
//! use vfn_flow::{Direction, FlowKey, FlowTable, PacketTuple, TcpFlags, Timeouts, mapped_address};
//!
//! let mut table = FlowTable::<u32>::new(1024, Timeouts::default())?;
//! let tuple = PacketTuple {
//!     src: mapped_address("198.18.0.1".parse()?),
//!     dst: mapped_address("198.19.0.1".parse()?),
//!     sport: 40000, dport: 443, proto: vfn_flow::PROTO_TCP, ingress: 1,
//! };
//! let now_ns = 1_000;
//! let (key, orientation) = FlowKey::from_packet(&tuple);
//! let hash = table.hash(&key); // once per packet
//! match table.get_mut(&key, hash, orientation) {
//!     Some((flow, direction)) => flow.record_packet(now_ns, direction, TcpFlags::SYN),
//!     None => {
//!         let verdict = 7; // judged by the rules
//!         let flow = table.insert(key, hash, orientation, verdict, now_ns)?;
//!         flow.record_packet(now_ns, Direction::Forward, TcpFlags::SYN);
//!     }
//! }
//! table.expire(now_ns, 64, |expired| println!("expired {:?}", expired.key()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Keys
//!
//! [`FlowKey::from_packet`] orders the two endpoints `(address, port)` so that both directions of
//! a flow give the same key, and returns the packet's [`Orientation`] relative to that order; the
//! entry keeps its initiator's orientation, so [`FlowTable::get_mut`] tells each packet's
//! [`Direction`] relative to the initiator. IPv4 is mapped into IPv6; the ingress interface is not
//! part of the key. ICMP echo puts the identifier in both port fields; other ICMP messages put 0
//! in both, so type and code never split a flow ([`PacketTuple`] has the details).
//!
//! # Layout
//!
//! - A slab of [`FlowEntry`] values, one 64-byte cache line each (the value `V` takes at most 8
//!   bytes, checked at compile time), reserved for `capacity` entries.
//! - A `hashbrown::HashTable<u32>` of slab slots, reserved for `2 × capacity` entries. A lookup
//!   reads its control bytes, a slot number and one entry line. Inserts never grow it: hashbrown
//!   only grows when its growth allowance is spent, and with at most `capacity` live entries the
//!   allowance would first have to be eaten by `capacity` tombstones, which hashbrown leaves only
//!   when a whole 16-bucket group around a removed entry is full, rare at this load of at most
//!   44 % (and it would then rehash in place, still without allocating).
//!   [`FlowTable::index_bucket_count`] exposes the bucket count; the tests check that it never
//!   changes under floods and churn.
//! - Hashing is SipHash-1-3 with a 128-bit key drawn from the operating system per table: a keyed
//!   pseudo-random function, so an attacker who sends chosen tuples cannot aim them at a few
//!   buckets. Faster non-cryptographic hashes (foldhash, ahash) only hide a seed that a
//!   long-running, remotely timed process could leak. SipHash-1-3 costs about 16-20 ns for the
//!   37-byte key on the development VM (foldhash: about 10 ns), once per packet.
//!
//! # Walking
//!
//! [`FlowTable::for_each`] visits every flow at once. [`FlowTable::for_each_from`] walks the slab
//! a bounded number of slots per call with a [`FlowCursor`], so a worker can copy its table
//! between bursts; a flow present throughout the walk is visited exactly once.
//!
//! # Expiry
//!
//! A flow expires when it has been idle (no packet) for at least its [`Timeouts`] class:
//! established TCP, transitory TCP (handshake and teardown), UDP, ICMP, other. A hashed timer
//! wheel (1.05 ms ticks, 65 536 slots: a 68.7 s lap) holds every flow at a time no later than its
//! deadline; on a packet only `last_seen_ns` changes, and the wheel re-checks the flow when it
//! comes due (or once per lap for longer timeouts), rescheduling it if it was active. A TCP flow
//! can switch to a shorter timeout with its next packet, so it is re-checked at least every
//! `min(tcp_established, tcp_transitory)`. The deadline test itself is exact: a flow idle for
//! exactly its timeout is due. [`FlowTable::expire`] walks the wheel with a work budget, never
//! the whole table.
//!
//! # Full-table policy
//!
//! An insert into a full table evicts one flow, in this order of preference:
//! 1. a flow idle past its timeout that `expire` has not reached yet: up to
//!    [`EVICTION_CANDIDATES_MAX`] flows of the wheel slot where `expire` stands;
//! 2. the oldest flow that is not established ([`FlowEntry::is_established`]: TCP not in
//!    `Established`, UDP and other flows with packets in one direction only), from a FIFO of
//!    candidates: up to [`EVICTION_CANDIDATES_MAX`] flows from its front; established flows met
//!    there leave it;
//! 3. otherwise the insert fails with [`InsertError::TableFull`]: the caller counts it and treats
//!    the packet statelessly.
//!
//! Evicted flows are counted in [`FlowTable::evictions`]; they are not passed to `expire`'s
//! callback. Every flow enters the FIFO when inserted; the wheel's checks move flows that became
//! established out of it and flows that stopped being established (FIN, RST) back in, so a closing
//! TCP flow becomes a candidate within `tcp_transitory`. A flood of new flows therefore replaces
//! other new flows and never an established one.

mod entry;
mod error;
mod key;
mod links;
mod table;
mod tcp;
mod timeouts;
mod wheel;

pub use entry::FlowEntry;
pub use error::{InsertError, NewTableError};
pub use key::{
    Direction, FlowKey, Orientation, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    PacketTuple, mapped_address, unmapped_address,
};
pub use table::{
    CAPACITY_MAX, EVICTION_CANDIDATES_MAX, EvictionCounts, ExpireProgress, FlowCursor, FlowTable,
};
pub use tcp::{TcpFlags, TcpState, update_tcp_state};
pub use timeouts::{TIMEOUT_MAX, Timeouts};
