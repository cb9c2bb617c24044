//! An in-memory [`PacketIo`] over a preallocated frame arena, with the same frame accounting and
//! per-port shares as the AF_XDP backend. Tests inject frames and collect what was sent; the
//! in-memory benchmark lets ports generate traffic from templates and discard what they send.

use std::collections::VecDeque;
use std::time::Duration;

use crate::io::{
    FrameAccounting, FrameId, Packet, PacketIo, PortIndex, PortShare, TransmitRefused,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemIoConfig {
    pub ports: usize,
    pub frame_count: u32,
    pub frame_size: usize,
    pub ring_size: u32,
}

impl Default for MemIoConfig {
    fn default() -> Self {
        MemIoConfig {
            ports: 2,
            frame_count: 4096,
            frame_size: 2048,
            ring_size: 1024,
        }
    }
}

/// Injection refused: the port holds its whole reception share (a NIC would drop the frame), or
/// the frame is larger than a frame buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("port {port} cannot take the frame: {why}")]
pub struct InjectRefused {
    pub port: PortIndex,
    pub why: &'static str,
}

#[derive(Debug)]
struct MemPort {
    /// Received and not yet taken by the worker (counted in `fill`).
    received: VecDeque<Packet>,
    /// Queued by `transmit`, handed over by `flush` (counted in `transmit`).
    queued: Vec<Packet>,
    /// Sent, waiting to be collected or discarded (counted in `transmit`).
    sent: VecDeque<Packet>,
    /// Templates a generating port copies into fresh frames, round robin.
    templates: Vec<Vec<u8>>,
    next_template: usize,
    /// Discard sent frames at the next reclaim instead of keeping them for collection.
    discard_sent: bool,
    sent_packets: u64,
}

impl MemPort {
    fn transmit_held(&self) -> u32 {
        (self.queued.len() + self.sent.len()) as u32
    }
}

/// Where one frame is (the places of [`FrameAccounting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Free,
    Fill,
    InHand,
    Parked,
    Transmit,
}

/// The place of every frame and their counts. Every move names where the frame must be, so a
/// double release or a stray transmit fails a debug assertion instead of corrupting the pool.
#[derive(Debug)]
struct Ledger {
    places: Vec<Place>,
    accounting: FrameAccounting,
}

impl Ledger {
    fn count(&mut self, place: Place) -> &mut u32 {
        match place {
            Place::Free => &mut self.accounting.free,
            Place::Fill => &mut self.accounting.fill,
            Place::InHand => &mut self.accounting.in_hand,
            Place::Parked => &mut self.accounting.parked,
            Place::Transmit => &mut self.accounting.transmit,
        }
    }

    #[inline]
    fn move_frame(&mut self, frame: FrameId, from: Place, to: Place) {
        let index = frame.0 as usize;
        debug_assert_eq!(
            self.places.get(index),
            Some(&from),
            "frame {index} moved from the wrong place"
        );
        if let Some(place) = self.places.get_mut(index) {
            *place = to;
        }
        *self.count(from) -= 1;
        *self.count(to) += 1;
        debug_assert!(
            self.accounting.is_balanced(),
            "frame accounting: {:?}",
            self.accounting
        );
    }
}

#[derive(Debug)]
pub struct MemIo {
    arena: Box<[u8]>,
    frame_size: usize,
    free: Vec<FrameId>,
    ports: Vec<MemPort>,
    share: PortShare,
    ledger: Ledger,
}

impl MemIo {
    pub fn new(config: MemIoConfig) -> MemIo {
        let frame_count = config.frame_count.max(1);
        let share = PortShare::split(frame_count, config.ports as u32, config.ring_size);
        let ring = config.ring_size as usize;
        MemIo {
            arena: vec![0u8; frame_count as usize * config.frame_size].into_boxed_slice(),
            frame_size: config.frame_size,
            free: (0..frame_count).rev().map(FrameId).collect(),
            ports: (0..config.ports)
                .map(|_| MemPort {
                    received: VecDeque::with_capacity(ring),
                    queued: Vec::with_capacity(ring),
                    sent: VecDeque::with_capacity(ring),
                    templates: Vec::new(),
                    next_template: 0,
                    discard_sent: false,
                    sent_packets: 0,
                })
                .collect(),
            share,
            ledger: Ledger {
                places: vec![Place::Free; frame_count as usize],
                accounting: FrameAccounting {
                    total: frame_count,
                    free: frame_count,
                    ..FrameAccounting::default()
                },
            },
        }
    }

    pub fn share(&self) -> PortShare {
        self.share
    }

    /// A frame arrives on `port`, as a NIC would deliver it into a fill-ring frame.
    pub fn inject(&mut self, port: PortIndex, frame: &[u8]) -> Result<(), InjectRefused> {
        if frame.len() > self.frame_size {
            return Err(InjectRefused {
                port,
                why: "larger than a frame buffer",
            });
        }
        let index = usize::from(port);
        if index >= self.ports.len() {
            return Err(InjectRefused {
                port,
                why: "no such port",
            });
        }
        if self.ports[index].received.len() as u32 >= self.share.fill_max {
            return Err(InjectRefused {
                port,
                why: "reception share full",
            });
        }
        let id = self.free.pop().ok_or(InjectRefused {
            port,
            why: "no free frame",
        })?;
        self.slice(id)[..frame.len()].copy_from_slice(frame);
        self.ports[index].received.push_back(Packet {
            frame: id,
            len: frame.len() as u32,
        });
        self.ledger.move_frame(id, Place::Free, Place::Fill);
        Ok(())
    }

    /// Makes `port` receive copies of `templates`, round robin, whenever it is polled (a traffic
    /// generator for benchmarks).
    pub fn generate(&mut self, port: PortIndex, templates: Vec<Vec<u8>>) {
        if let Some(p) = self.ports.get_mut(usize::from(port)) {
            p.templates = templates
                .into_iter()
                .filter(|t| t.len() <= self.frame_size)
                .collect();
        }
    }

    /// Makes `port` discard what it sends at the next reclaim (a sink for benchmarks).
    pub fn discard_sent(&mut self, port: PortIndex) {
        if let Some(p) = self.ports.get_mut(usize::from(port)) {
            p.discard_sent = true;
        }
    }

    /// What `port` has sent since the last call, as byte vectors; the frames return to the pool.
    pub fn take_sent(&mut self, port: PortIndex) -> Vec<Vec<u8>> {
        let Some(p) = self.ports.get_mut(usize::from(port)) else {
            return Vec::new();
        };
        let sent: Vec<Packet> = p.sent.drain(..).collect();
        let mut out = Vec::with_capacity(sent.len());
        for packet in sent {
            out.push(self.slice(packet.frame)[..packet.len as usize].to_vec());
            self.free.push(packet.frame);
            self.ledger
                .move_frame(packet.frame, Place::Transmit, Place::Free);
        }
        out
    }

    /// Packets `port` has sent in all.
    pub fn sent_packets(&self, port: PortIndex) -> u64 {
        self.ports
            .get(usize::from(port))
            .map_or(0, |p| p.sent_packets)
    }

    fn slice(&mut self, id: FrameId) -> &mut [u8] {
        let start = id.0 as usize * self.frame_size;
        &mut self.arena[start..start + self.frame_size]
    }
}

impl PacketIo for MemIo {
    fn port_count(&self) -> usize {
        self.ports.len()
    }

    fn frame_capacity(&self) -> usize {
        self.frame_size
    }

    fn reclaim_and_refill(&mut self) {
        for p in &mut self.ports {
            if p.discard_sent {
                for packet in p.sent.drain(..) {
                    self.free.push(packet.frame);
                    self.ledger
                        .move_frame(packet.frame, Place::Transmit, Place::Free);
                }
            }
        }
    }

    fn receive(&mut self, port: PortIndex, out: &mut [Packet]) -> usize {
        let index = usize::from(port);
        let Some(p) = self.ports.get_mut(index) else {
            return 0;
        };
        let mut count = 0;
        while count < out.len() {
            let Some(packet) = p.received.pop_front() else {
                break;
            };
            out[count] = packet;
            count += 1;
            self.ledger
                .move_frame(packet.frame, Place::Fill, Place::InHand);
        }
        // A generating port delivers fresh copies of its templates.
        while count < out.len() && !self.ports[index].templates.is_empty() {
            let Some(id) = self.free.pop() else { break };
            let p = &mut self.ports[index];
            let template_index = p.next_template;
            p.next_template = (template_index + 1) % p.templates.len();
            let len = p.templates[template_index].len();
            let start = id.0 as usize * self.frame_size;
            self.arena[start..start + len]
                .copy_from_slice(&self.ports[index].templates[template_index]);
            out[count] = Packet {
                frame: id,
                len: len as u32,
            };
            count += 1;
            self.ledger.move_frame(id, Place::Free, Place::InHand);
        }
        count
    }

    fn buffer(&mut self, frame: FrameId) -> &mut [u8] {
        self.slice(frame)
    }

    fn allocate(&mut self) -> Option<FrameId> {
        let id = self.free.pop()?;
        self.ledger.move_frame(id, Place::Free, Place::InHand);
        Some(id)
    }

    fn transmit(&mut self, port: PortIndex, packet: Packet) -> Result<(), TransmitRefused> {
        let share = self.share;
        let Some(p) = self.ports.get_mut(usize::from(port)) else {
            return Err(TransmitRefused(packet));
        };
        if p.transmit_held() >= share.transmit_max {
            return Err(TransmitRefused(packet));
        }
        p.queued.push(packet);
        self.ledger
            .move_frame(packet.frame, Place::InHand, Place::Transmit);
        Ok(())
    }

    fn flush(&mut self) {
        for p in &mut self.ports {
            p.sent_packets += p.queued.len() as u64;
            p.sent.extend(p.queued.drain(..));
        }
    }

    fn release(&mut self, frame: FrameId) {
        self.ledger.move_frame(frame, Place::InHand, Place::Free);
        self.free.push(frame);
    }

    fn park(&mut self, frame: FrameId) {
        self.ledger.move_frame(frame, Place::InHand, Place::Parked);
    }

    fn unpark(&mut self, frame: FrameId) {
        self.ledger.move_frame(frame, Place::Parked, Place::InHand);
    }

    fn wait(&mut self, _timeout: Duration) {}

    fn accounting(&self) -> FrameAccounting {
        self.ledger.accounting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> MemIo {
        MemIo::new(MemIoConfig {
            ports: 2,
            frame_count: 16,
            frame_size: 128,
            ring_size: 64,
        })
    }

    #[test]
    fn inject_receive_transmit_collect_keeps_accounting() {
        let mut io = io();
        io.inject(0, &[1, 2, 3]).expect("room");
        let mut burst = [Packet {
            frame: FrameId(0),
            len: 0,
        }; 4];
        assert_eq!(io.receive(0, &mut burst), 1);
        assert_eq!(&io.buffer(burst[0].frame)[..3], &[1, 2, 3]);
        assert_eq!(io.accounting().in_hand, 1);
        io.transmit(1, burst[0]).expect("room");
        io.flush();
        assert_eq!(io.take_sent(1), vec![vec![1, 2, 3]]);
        assert_eq!(io.accounting().free, 16);
    }

    #[test]
    fn a_stalled_port_holds_at_most_its_share() {
        let mut io = io();
        let share = io.share();
        let mut refused = 0;
        for _ in 0..16 {
            let Some(frame) = io.allocate() else { break };
            match io.transmit(1, Packet { frame, len: 60 }) {
                Ok(()) => {}
                Err(TransmitRefused(p)) => {
                    io.release(p.frame);
                    refused += 1;
                }
            }
            io.flush();
        }
        assert!(refused > 0);
        assert_eq!(io.accounting().transmit, share.transmit_max);
        // The other port still receives.
        io.inject(0, &[9; 60]).expect("frames left for port 0");
    }

    #[test]
    #[should_panic(expected = "moved from the wrong place")]
    #[cfg(debug_assertions)]
    fn a_double_release_is_caught() {
        let mut io = io();
        let frame = io.allocate().expect("a frame");
        io.release(frame);
        io.release(frame);
    }

    #[test]
    fn reception_share_is_bounded() {
        let mut io = io();
        let share = io.share();
        for _ in 0..share.fill_max {
            io.inject(0, &[0; 60]).expect("within share");
        }
        assert!(io.inject(0, &[0; 60]).is_err());
        io.inject(1, &[0; 60]).expect("other port unaffected");
    }

    #[test]
    fn generator_and_sink_recycle_frames() {
        let mut io = MemIo::new(MemIoConfig {
            ports: 2,
            frame_count: 64,
            frame_size: 128,
            ring_size: 64,
        });
        io.generate(0, vec![vec![7; 64]]);
        io.discard_sent(1);
        let mut burst = [Packet {
            frame: FrameId(0),
            len: 0,
        }; 4];
        for _ in 0..100 {
            io.reclaim_and_refill();
            let n = io.receive(0, &mut burst);
            assert_eq!(n, 4);
            for packet in &burst[..n] {
                io.transmit(1, *packet).expect("room");
            }
            io.flush();
        }
        io.reclaim_and_refill();
        assert_eq!(io.sent_packets(1), 400);
        assert_eq!(io.accounting().free, 64);
    }
}
