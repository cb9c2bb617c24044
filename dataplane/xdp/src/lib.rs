//! The VFN's AF_XDP backend: [`XdpIo`] implements [`vfn_dataplane::io::PacketIo`] over AF_XDP
//! sockets (via xsk-rs and libxdp), one UMEM per worker shared by all of the worker's ports.
//!
//! - `pool`: where each frame is (the accounting of `vfn_dataplane::io`), pure bookkeeping.
//! - `xdp_io`: the sockets and rings, moving descriptors as the pool decides.
//! - `attach`: libxdp's XDP program on our interfaces, stale ones included.
//! - `interface`: MAC, MTU, index and queue count of an interface.
//! - `bpf`: the lab benchmark's own BPF programs (generator, sink): load, attach, run on live
//!   frames, read their counters.
//!
//! Architecture invariant: receive, transmit, flush and reclaim allocate nothing and cannot
//! panic in release builds; every array they use is sized in [`XdpIo::open`].

// This crate is the one place of the VFN where `unsafe` lives: UMEM access, the xsk rings and
// libxdp are C interfaces and shared memory with the kernel. Every unsafe block says why it is
// sound, and the rest of the workspace stays `unsafe`-free.
#![allow(unsafe_code)]

mod attach;
pub mod bpf;
mod error;
mod interface;
mod options;
mod pool;
mod xdp_io;

pub use attach::{AttachedMode, detach_stale};
pub use error::XdpError;
pub use interface::{interface_index, interface_mac, interface_mtu, interface_queue_count};
pub use options::{
    FRAME_COUNT_MAX, FRAME_COUNT_PER_PORT_MIN, PORT_COUNT_MAX, RING_SIZE_MAX, RING_SIZE_MIN,
    XdpMode, XdpOptions, XdpPort, ZeroCopy,
};
pub use pool::PortFrames;
pub use xdp_io::{PortMode, XdpIo, XdpPortStats};
