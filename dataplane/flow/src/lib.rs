//! Per-worker flow table of the VFN: one table per worker, no sharing, no locks, no I/O (the
//! caller passes the time as `now_ns`, from a monotonic clock), no `unsafe`, and no allocation
//! after [`FlowTable::new`].
//!
//! # Per packet
//!
//! ```
//! use vfn_flow::{
//!     Direction, FlowKey, FlowTable, PacketSample, PacketTuple, RecordTimeouts, TcpFlags,
//!     Timeouts, mapped_address,
//! };
//!
//! let mut table =
//!     FlowTable::<u32>::with_statistics(1024, Timeouts::default(), RecordTimeouts::default())?;
//! let tuple = PacketTuple {
//!     src: mapped_address("198.18.0.1".parse()?),
//!     dst: mapped_address("198.19.0.1".parse()?),
//!     sport: 40000, dport: 443, proto: vfn_flow::PROTO_TCP, ingress: 1,
//! };
//! let now_ns = 1_000;
//! let (key, orientation) = FlowKey::from_packet(&tuple);
//! let hash = table.hash(&key); // once per packet
//! let (slot, direction) = match table.locate(&key, hash, orientation) {
//!     Some(found) => found,
//!     None => {
//!         let verdict = 7; // judged by the rules
//!         let on_evicted = |ended: vfn_flow::FlowEnd<'_, u32>| println!("evicted {:?}", ended.reason);
//!         let slot = table.insert_flow(key, hash, orientation, verdict, now_ns, on_evicted)?;
//!         (slot, Direction::Forward)
//!     }
//! };
//! let ends_connection = table.entry_mut(slot).record_packet(now_ns, direction, TcpFlags::SYN);
//! let sample = PacketSample {
//!     time_ns: now_ns,
//!     direction,
//!     ip_length: 60,
//!     tcp_flags: TcpFlags::SYN,
//!     tcp_window: Some(64240),
//!     initiator_egress: 2,
//! };
//! table.record_statistics(slot, &sample, ends_connection, |ended| println!("{:?}", ended.reason));
//! table.expire(now_ns, 64, |ended| println!("ended {:?}: {:?}", ended.entry.key(), ended.reason));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Keys
//!
//! [`FlowKey::from_packet`] orders the two endpoints `(address, port)` so that both directions of
//! a flow give the same key, and returns the packet's [`Orientation`] relative to that order; the
//! entry keeps its initiator's orientation, so [`FlowTable::get_mut`] tells each packet's
//! [`Direction`] relative to the initiator. IPv4 is mapped into IPv6; the ingress interface is not
//! part of the key. ICMP echo puts the identifier in both port fields; other ICMP messages put
//! their type and code in the destination port; protocols without ports put 0 in both
//! ([`PacketTuple`] has the details).
//!
//! # Layout
//!
//! - A slab of [`FlowEntry`] values, one 64-byte cache line each (the value `V` takes at most 8
//!   bytes, checked at compile time), reserved for `capacity` entries.
//! - With [`FlowTable::with_statistics`], a parallel array of [`FlowStats`] records indexed by
//!   the same slot, allocated and written whole at start-up: the cold part of each flow, touched
//!   only by [`FlowTable::record_statistics`] and when a record ends.
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
//! # Statistics
//!
//! A table made by [`FlowTable::with_statistics`] keeps one record per flow: packets, bytes,
//! packet lengths and inter-arrival times per direction and overall, TCP flag counts, initial
//! windows, active and idle periods ([`FlowStats`]; running values, Welford's algorithm for means
//! and variances, nothing stored per packet). Per packet, one lookup serves both parts:
//! [`FlowTable::locate`] gives a [`FlowSlot`], [`FlowEntry::record_packet`] updates the hot entry
//! and [`FlowTable::record_statistics`] the record. A record ends, and is handed to the caller
//! as a [`FlowEnd`] with an [`EndReason`] (IPFIX's `flowEndReason`), when:
//! - its flow expires ([`EndReason::IdleTimeout`], or [`EndReason::EndOfFlow`] for a TCP
//!   connection both sides closed), is evicted ([`EndReason::LackOfResources`]), or is ended by
//!   the caller ([`FlowTable::end_flow`], [`FlowTable::end_records`]): the flow leaves the table
//!   or the records are flushed;
//! - its own timeouts pass ([`RecordTimeouts`]: idle since its last packet, active since its
//!   first), or the packet recorded ends the TCP connection (a RST, or the acknowledgement of
//!   the second FIN): the flow stays, for the caller's state, and its next packets start a new
//!   record. Each record counts the packets since the previous one (delta records).
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
//! `min(tcp_established, tcp_transitory)`; with statistics, every flow is re-checked at least
//! every `min(record idle, record active)`, so a record that starts with a flow's next packet
//! never ends late. The deadline tests themselves are exact: a flow idle for exactly its timeout
//! is due. [`FlowTable::expire`] walks the wheel with a work budget, never the whole table.
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
//! Evicted flows are counted in [`FlowTable::evictions`] and handed, with their records, to the
//! callback of [`FlowTable::insert_flow`]. Every flow enters the FIFO when inserted; the wheel's checks move flows that became
//! established out of it and flows that stopped being established (FIN, RST) back in, so a closing
//! TCP flow becomes a candidate within `tcp_transitory`. A flood of new flows therefore replaces
//! other new flows and never an established one.

mod end;
mod entry;
mod error;
mod key;
mod links;
mod stats;
mod table;
mod tcp;
mod timeouts;
mod wheel;

pub use end::{EndReason, FlowEnd};
pub use entry::FlowEntry;
pub use error::{InsertError, NewTableError};
pub use key::{
    Direction, FlowKey, Orientation, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    PacketTuple, mapped_address, unmapped_address,
};
pub use stats::{DirectionStats, FlowStats, PacketSample, RunningStats, TcpFlagCounts};
pub use table::{
    CAPACITY_MAX, EVICTION_CANDIDATES_MAX, EvictionCounts, ExpireProgress, FlowCursor, FlowSlot,
    FlowTable, TableMemory,
};
pub use tcp::{TcpFlags, TcpState, update_tcp_state};
pub use timeouts::{RecordTimeouts, TIMEOUT_MAX, Timeouts};
