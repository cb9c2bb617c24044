//! Everything that can go wrong while opening, inspecting or detaching AF_XDP ports. None of these
//! arise on the hot path: receive, transmit, flush and reclaim do not fail, they count.

use std::{io, path::PathBuf};

use vfn_dataplane::io::PortIndex;

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("{what}: {source}")]
    Bpf {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("XDP option `{field}` = {value}: {requirement}")]
    InvalidOption {
        field: &'static str,
        value: u32,
        requirement: &'static str,
    },

    #[error("XDP options: {reason}")]
    IncompatibleOptions { reason: &'static str },

    #[error("{count} ports given: an XdpIo serves between 1 and {max} ports")]
    PortCount { count: usize, max: usize },

    #[error("port {interface} queue {queue_id} is listed twice")]
    DuplicatePort { interface: String, queue_id: u32 },

    #[error("interface name {name:?} is invalid: {reason}")]
    InterfaceName { name: String, reason: &'static str },

    #[error("interface {interface}: {source}")]
    InterfaceIndex {
        interface: String,
        #[source]
        source: io::Error,
    },

    #[error("interface {interface}: reading {}: {source}", path.display())]
    InterfaceAttribute {
        interface: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("interface {interface}: {} holds {value:?}, expected {expected}", path.display())]
    InterfaceAttributeParse {
        interface: String,
        path: PathBuf,
        value: String,
        expected: &'static str,
    },

    #[error("finding this thread's network namespace (/proc/thread-self/ns/net): {source}")]
    NetworkNamespace {
        #[source]
        source: io::Error,
    },

    #[error("creating the UMEM ({frame_count} frames of {frame_size} bytes): {reason}")]
    Umem {
        frame_count: u32,
        frame_size: u32,
        reason: String,
    },

    #[error("binding an AF_XDP socket to {interface} queue {queue_id} failed: {attempts}")]
    Bind {
        interface: String,
        queue_id: u32,
        /// Every mode tried and why it failed, in the order tried.
        attempts: String,
    },

    #[error("interface {interface}: sockets are bound but no XDP program is attached")]
    NoProgramAttached { interface: String },

    #[error(
        "interface {interface}: XDP program {program:?} (id {id}) is attached and it is not \
         libxdp's AF_XDP program; refusing to replace it, detach it first"
    )]
    ForeignProgram {
        interface: String,
        program: String,
        id: u32,
    },

    #[error("interface {interface}: libxdp {operation} failed: {source}")]
    Libxdp {
        interface: String,
        operation: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "interface {interface}: an XDP program is still attached after detaching {detached}; \
         giving up"
    )]
    DetachIncomplete { interface: String, detached: u32 },

    #[error("interface {interface} is in use by an XdpIo of this process; drop it first")]
    InterfaceInUse { interface: String },

    #[error("port index {port} out of range: this XdpIo has {count} ports")]
    NoSuchPort { port: PortIndex, count: usize },

    #[error("port {interface} queue {queue_id}: reading XDP statistics: {source}")]
    Statistics {
        interface: String,
        queue_id: u32,
        #[source]
        source: io::Error,
    },
}
