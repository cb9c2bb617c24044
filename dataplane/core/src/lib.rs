//! The VFN's packet pipeline, free of I/O: the same code runs on AF_XDP rings (through
//! `vfn-xdp`) and on in-memory frames in tests and benchmarks (through [`mem_io::MemIo`]).
//!
//! A worker ([`worker::Worker`]) polls its ports in bursts, runs each packet through
//! [`pipeline::Pipeline`], which returns a closed [`pipeline::Verdict`], and acts on it: transmit,
//! drop with a counted reason, hand to the slow path ([`slowpath`], which answers for the router's
//! own addresses with smoltcp and resolves neighbours), or park until a neighbour is resolved.
//! Routes ([`fib`]) and neighbours ([`neigh`]) are shared between workers without locks, and
//! changed while the router runs through the slow path ([`change`]). The control side captures
//! frames ([`capture`]) and copies flow tables ([`flow_snapshot`]) through the workers, which
//! take part once per loop iteration, and receives the flows' records ([`telemetry`]).

pub mod capture;
pub mod change;
pub mod checksum;
pub mod counters;
pub mod fib;
pub mod flow_snapshot;
pub mod handoff;
pub mod icmp;
pub mod iface;
pub mod io;
pub mod mem_io;
pub mod mirror;
pub mod neigh;
pub mod overlay;
pub mod pcap;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod retire;
pub mod router;
pub mod slowpath;
pub mod telemetry;
pub mod warm;
pub mod wire;
pub mod worker;
