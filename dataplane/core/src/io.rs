//! The packet I/O interface a worker drives, and the frame accounting every backend keeps.
//!
//! A backend owns one frame pool per worker (an AF_XDP UMEM, or an in-memory arena) shared by all
//! of that worker's ports, so forwarding from port A to port B hands over a frame index and copies
//! nothing. Every frame is, at any instant, in exactly one place:
//!
//! | place        | meaning                                                            |
//! |--------------|--------------------------------------------------------------------|
//! | `free`       | in the worker's free list                                          |
//! | `fill`       | lent to a port for reception (fill ring, or received and not taken) |
//! | `in_hand`    | taken by the worker (received or allocated), not yet given back     |
//! | `parked`     | waiting in a queue (a neighbour being resolved)                     |
//! | `transmit`   | queued or in flight on a port's transmit ring, until completion     |
//!
//! and `free + fill + in_hand + parked + transmit == total` holds after every call (asserted in
//! debug builds). Each port may hold at most a bounded share of the pool in `fill` and in
//! `transmit`, so a stalled port cannot starve the others.

use std::time::Duration;

/// Index of a port of this worker (its position in the configured port list).
pub type PortIndex = u16;

/// Index of a frame in a worker's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameId(pub u32);

/// A packet held by the worker: its frame and how many bytes of it are the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub frame: FrameId,
    pub len: u32,
}

/// Where the frames of one pool are. See the module documentation for the invariant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameAccounting {
    pub total: u32,
    pub free: u32,
    pub fill: u32,
    pub in_hand: u32,
    pub parked: u32,
    pub transmit: u32,
}

impl FrameAccounting {
    pub fn is_balanced(&self) -> bool {
        u64::from(self.free)
            + u64::from(self.fill)
            + u64::from(self.in_hand)
            + u64::from(self.parked)
            + u64::from(self.transmit)
            == u64::from(self.total)
    }
}

/// How many frames each port may hold, derived from the pool size so that the sum of all ports'
/// shares leaves frames for the worker's own hands (bursts, parked packets, generated packets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortShare {
    /// Frames a port may hold for reception.
    pub fill_max: u32,
    /// Frames a port may hold queued or in flight for transmission.
    pub transmit_max: u32,
}

impl PortShare {
    /// Splits `total` frames over `ports` ports: half of the pool for reception, a quarter for
    /// transmission, a quarter kept for the worker, each share capped by the ring size.
    pub fn split(total: u32, ports: u32, ring_size: u32) -> PortShare {
        let ports = ports.max(1);
        PortShare {
            fill_max: (total / 2 / ports).min(ring_size).max(1),
            transmit_max: (total / 4 / ports).min(ring_size).max(1),
        }
    }
}

/// Transmission refused: the port's ring is full or the port holds its whole share. The packet is
/// handed back, still in the caller's hands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransmitRefused(pub Packet);

/// What a worker needs from its ports. Implemented by the AF_XDP backend (`vfn-xdp`) and by
/// [`crate::mem_io::MemIo`]; the pipeline and worker loop are the same code on both.
pub trait PacketIo {
    /// Number of ports this worker serves.
    fn port_count(&self) -> usize;

    /// Usable bytes in one frame (the largest packet a frame holds).
    fn frame_capacity(&self) -> usize;

    /// Returns completed transmissions to the pool and tops up each port's reception share.
    /// Called once per loop iteration, before receiving.
    fn reclaim_and_refill(&mut self);

    /// Takes up to `out.len()` received packets from `port` into the worker's hands.
    fn receive(&mut self, port: PortIndex, out: &mut [Packet]) -> usize;

    /// The whole buffer of a frame in the worker's hands (`frame_capacity()` bytes).
    fn buffer(&mut self, frame: FrameId) -> &mut [u8];

    /// A free frame for a packet the worker generates, if the pool has one to spare.
    fn allocate(&mut self) -> Option<FrameId>;

    /// Queues a packet for transmission on `port`; it leaves the worker's hands on success.
    /// Queued packets are handed to the device by [`PacketIo::flush`].
    fn transmit(&mut self, port: PortIndex, packet: Packet) -> Result<(), TransmitRefused>;

    /// Hands every queued transmission to the device (and wakes it if it asks to be woken).
    fn flush(&mut self);

    /// Gives a frame in the worker's hands back to the pool.
    fn release(&mut self, frame: FrameId);

    /// Moves a frame from the worker's hands to a waiting queue (accounting only).
    fn park(&mut self, frame: FrameId);

    /// Moves a parked frame back into the worker's hands (accounting only).
    fn unpark(&mut self, frame: FrameId);

    /// Blocks for at most `timeout` until a port may have something to receive.
    fn wait(&mut self, timeout: Duration);

    /// Where the pool's frames are now.
    fn accounting(&self) -> FrameAccounting;
}
