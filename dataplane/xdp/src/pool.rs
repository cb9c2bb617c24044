//! The worker's frame pool: where every frame is, the counts of `vfn_dataplane::io`'s
//! accounting, and the per-port shares. Pure bookkeeping, no rings and no memory: the
//! [`crate::XdpIo`] asks it before every ring operation and tells it after.
//!
//! Each frame has one [`Location`]. Every transition names the location it expects the frame to
//! be in and is refused (returns `false`, changes nothing) when the frame is elsewhere, so a
//! caller's mistake (releasing a frame twice, transmitting a frame it does not hold) can never
//! unbalance the accounting or hand the kernel a frame that userspace is still writing.

use vfn_dataplane::io::{FrameAccounting, FrameId, PortIndex, PortShare};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Location {
    Free,
    /// On the port's fill ring, or received on its RX ring and not taken yet.
    Fill(PortIndex),
    InHand,
    Parked,
    /// Queued for, on, or in flight from the port's TX ring until its completion.
    Transmit(PortIndex),
}

/// Frames one port holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortFrames {
    /// Lent for reception (at most `PortShare::fill_max`).
    pub fill: u32,
    /// Queued or in flight for transmission (at most `PortShare::transmit_max`).
    pub transmit: u32,
}

#[derive(Debug)]
pub(crate) struct FramePool {
    locations: Vec<Location>,
    /// Free frames, used as a stack: the most recently freed frame is the warmest in cache.
    free: Vec<FrameId>,
    ports: Vec<PortFrames>,
    share: PortShare,
    accounting: FrameAccounting,
}

impl FramePool {
    pub(crate) fn new(total: u32, port_count: usize, share: PortShare) -> FramePool {
        FramePool {
            locations: vec![Location::Free; total as usize],
            // Reversed so that frame 0 is handed out first.
            free: (0..total).rev().map(FrameId).collect(),
            ports: vec![PortFrames::default(); port_count],
            share,
            accounting: FrameAccounting {
                total,
                free: total,
                ..FrameAccounting::default()
            },
        }
    }

    pub(crate) fn accounting(&self) -> FrameAccounting {
        self.accounting
    }

    pub(crate) fn port_frames(&self, port: PortIndex) -> Option<PortFrames> {
        self.ports.get(usize::from(port)).copied()
    }

    /// How many more frames the port may be lent for reception.
    pub(crate) fn fill_room(&self, port: PortIndex) -> u32 {
        self.port_frames(port)
            .map_or(0, |frames| self.share.fill_max.saturating_sub(frames.fill))
    }

    /// How many more frames the port may hold for transmission.
    pub(crate) fn transmit_room(&self, port: PortIndex) -> u32 {
        self.port_frames(port).map_or(0, |frames| {
            self.share.transmit_max.saturating_sub(frames.transmit)
        })
    }

    /// Lends a free frame to the port's fill ring, within the port's share.
    pub(crate) fn lend_for_fill(&mut self, port: PortIndex) -> Option<FrameId> {
        if self.fill_room(port) == 0 {
            return None;
        }
        let frame = self.take_free()?;
        self.enter(frame, Location::Fill(port));
        Some(frame)
    }

    /// Takes back a frame lent to the port that the fill ring did not accept after all.
    pub(crate) fn unlend(&mut self, port: PortIndex, frame: FrameId) -> bool {
        self.relocate(frame, Location::Fill(port), Location::Free)
    }

    /// A frame lent to the port arrived on its RX ring and is now in the worker's hands.
    pub(crate) fn receive(&mut self, port: PortIndex, frame: FrameId) -> bool {
        self.relocate(frame, Location::Fill(port), Location::InHand)
    }

    pub(crate) fn allocate(&mut self) -> Option<FrameId> {
        let frame = self.take_free()?;
        self.enter(frame, Location::InHand);
        Some(frame)
    }

    pub(crate) fn release(&mut self, frame: FrameId) -> bool {
        self.relocate(frame, Location::InHand, Location::Free)
    }

    pub(crate) fn park(&mut self, frame: FrameId) -> bool {
        self.relocate(frame, Location::InHand, Location::Parked)
    }

    pub(crate) fn unpark(&mut self, frame: FrameId) -> bool {
        self.relocate(frame, Location::Parked, Location::InHand)
    }

    /// Moves a frame in hand to the port's transmit share, if the share has room.
    pub(crate) fn queue_transmit(&mut self, port: PortIndex, frame: FrameId) -> bool {
        self.transmit_room(port) > 0
            && self.relocate(frame, Location::InHand, Location::Transmit(port))
    }

    /// A frame of the port's transmit share is done: completed by the device, or dropped before
    /// reaching the ring.
    pub(crate) fn finish_transmit(&mut self, port: PortIndex, frame: FrameId) -> bool {
        self.relocate(frame, Location::Transmit(port), Location::Free)
    }

    /// Whether userspace owns the frame (in hand or parked): no ring holds it, so the kernel
    /// neither reads nor writes it and its buffer may be handed out.
    pub(crate) fn is_in_user_space(&self, frame: FrameId) -> bool {
        matches!(
            self.locations.get(frame.0 as usize),
            Some(Location::InHand | Location::Parked)
        )
    }

    fn take_free(&mut self) -> Option<FrameId> {
        let frame = self.free.pop()?;
        self.leave(frame, Location::Free);
        Some(frame)
    }

    fn relocate(&mut self, frame: FrameId, from: Location, to: Location) -> bool {
        if self.locations.get(frame.0 as usize) != Some(&from) {
            return false;
        }
        self.leave(frame, from);
        self.enter(frame, to);
        if to == Location::Free {
            self.free.push(frame);
        }
        true
    }

    fn leave(&mut self, frame: FrameId, from: Location) {
        debug_assert_eq!(self.locations.get(frame.0 as usize), Some(&from));
        *self.counter(from) -= 1;
        if let Some(port) = self.port_counter(from) {
            *port -= 1;
        }
    }

    fn enter(&mut self, frame: FrameId, to: Location) {
        if let Some(location) = self.locations.get_mut(frame.0 as usize) {
            *location = to;
        }
        *self.counter(to) += 1;
        if let Some(port) = self.port_counter(to) {
            *port += 1;
        }
    }

    fn counter(&mut self, location: Location) -> &mut u32 {
        match location {
            Location::Free => &mut self.accounting.free,
            Location::Fill(_) => &mut self.accounting.fill,
            Location::InHand => &mut self.accounting.in_hand,
            Location::Parked => &mut self.accounting.parked,
            Location::Transmit(_) => &mut self.accounting.transmit,
        }
    }

    fn port_counter(&mut self, location: Location) -> Option<&mut u32> {
        match location {
            Location::Fill(port) => self.ports.get_mut(usize::from(port)).map(|p| &mut p.fill),
            Location::Transmit(port) => self
                .ports
                .get_mut(usize::from(port))
                .map(|p| &mut p.transmit),
            Location::Free | Location::InHand | Location::Parked => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOTAL: u32 = 24;
    const PORTS: u16 = 2;

    fn pool() -> FramePool {
        FramePool::new(
            TOTAL,
            usize::from(PORTS),
            PortShare::split(TOTAL, PORTS.into(), 4),
        )
    }

    #[test]
    fn starts_all_free() {
        let pool = pool();
        assert_eq!(pool.accounting().free, TOTAL);
        assert!(pool.accounting().is_balanced());
        assert_eq!(pool.fill_room(0), 4);
        assert_eq!(pool.transmit_room(1), 3);
        assert_eq!(pool.fill_room(PORTS), 0, "unknown port has no room");
    }

    #[test]
    fn refuses_double_release_and_foreign_frames() {
        let mut pool = pool();
        let frame = pool.allocate().expect("a free frame");
        assert!(pool.release(frame));
        assert!(!pool.release(frame));
        assert!(!pool.release(FrameId(TOTAL)));
        assert!(!pool.park(frame));
        assert_eq!(pool.accounting().free, TOTAL);
    }

    #[test]
    fn frames_return_only_to_the_port_that_holds_them() {
        let mut pool = pool();
        let frame = pool.lend_for_fill(0).expect("a frame for port 0");
        assert!(!pool.receive(1, frame));
        assert!(pool.receive(0, frame));
        assert!(pool.queue_transmit(1, frame));
        assert!(!pool.finish_transmit(0, frame));
        assert!(pool.finish_transmit(1, frame));
        assert_eq!(pool.accounting().free, TOTAL);
    }

    #[test]
    fn a_full_transmit_share_leaves_the_fill_share_alone() {
        let mut pool = pool();
        let mut queued = 0;
        while let Some(frame) = pool.allocate() {
            if !pool.queue_transmit(1, frame) {
                assert!(pool.release(frame));
                break;
            }
            queued += 1;
        }
        assert_eq!(queued, 3);
        for _ in 0..4 {
            assert!(pool.lend_for_fill(0).is_some());
        }
        assert_eq!(pool.lend_for_fill(0), None, "fill share exhausted");
    }

    /// One step of the property test, on frame and port numbers that may be out of range.
    #[derive(Clone, Debug)]
    enum Op {
        Lend(u16),
        Unlend(u16, u32),
        Receive(u16, u32),
        Allocate,
        Release(u32),
        Park(u32),
        Unpark(u32),
        Transmit(u16, u32),
        Finish(u16, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let port = 0..PORTS + 1;
        let frame = 0..TOTAL + 2;
        prop_oneof![
            port.clone().prop_map(Op::Lend),
            (port.clone(), frame.clone()).prop_map(|(p, f)| Op::Unlend(p, f)),
            (port.clone(), frame.clone()).prop_map(|(p, f)| Op::Receive(p, f)),
            Just(Op::Allocate),
            frame.clone().prop_map(Op::Release),
            frame.clone().prop_map(Op::Park),
            frame.clone().prop_map(Op::Unpark),
            (port.clone(), frame.clone()).prop_map(|(p, f)| Op::Transmit(p, f)),
            (port, frame).prop_map(|(p, f)| Op::Finish(p, f)),
        ]
    }

    /// The oracle: a plain map from frame to location, and what each operation must do to it.
    struct Oracle {
        locations: Vec<Location>,
        share: PortShare,
    }

    impl Oracle {
        fn count(&self, wanted: impl Fn(Location) -> bool) -> u32 {
            self.locations.iter().filter(|l| wanted(**l)).count() as u32
        }

        fn moves(&mut self, frame: u32, from: Location, to: Location) -> bool {
            match self.locations.get_mut(frame as usize) {
                Some(location) if *location == from => {
                    *location = to;
                    true
                }
                _ => false,
            }
        }

        fn takes_free(&mut self, frame: Option<FrameId>, to: Location) -> bool {
            match frame {
                Some(frame) => self.moves(frame.0, Location::Free, to),
                None => self.count(|l| l == Location::Free) == 0,
            }
        }
    }

    proptest! {
        #[test]
        fn accounting_matches_the_oracle(ops in proptest::collection::vec(op(), 0..300)) {
            let mut pool = pool();
            let mut oracle = Oracle { locations: vec![Location::Free; TOTAL as usize], share: pool.share };
            for op in ops {
                let consistent = match op {
                    Op::Lend(port) => {
                        let lent = pool.lend_for_fill(port);
                        let full = port >= PORTS
                            || oracle.count(|l| l == Location::Fill(port)) >= oracle.share.fill_max;
                        if full { lent.is_none() } else { oracle.takes_free(lent, Location::Fill(port)) }
                    }
                    Op::Unlend(port, frame) => pool.unlend(port, FrameId(frame))
                        == oracle.moves(frame, Location::Fill(port), Location::Free),
                    Op::Receive(port, frame) => pool.receive(port, FrameId(frame))
                        == oracle.moves(frame, Location::Fill(port), Location::InHand),
                    Op::Allocate => {
                        let frame = pool.allocate();
                        oracle.takes_free(frame, Location::InHand)
                    }
                    Op::Release(frame) => pool.release(FrameId(frame))
                        == oracle.moves(frame, Location::InHand, Location::Free),
                    Op::Park(frame) => pool.park(FrameId(frame))
                        == oracle.moves(frame, Location::InHand, Location::Parked),
                    Op::Unpark(frame) => pool.unpark(FrameId(frame))
                        == oracle.moves(frame, Location::Parked, Location::InHand),
                    Op::Transmit(port, frame) => {
                        let full = oracle.count(|l| l == Location::Transmit(port))
                            >= oracle.share.transmit_max;
                        let queued = pool.queue_transmit(port, FrameId(frame));
                        queued == (!full && port < PORTS
                            && oracle.moves(frame, Location::InHand, Location::Transmit(port)))
                    }
                    Op::Finish(port, frame) => pool.finish_transmit(port, FrameId(frame))
                        == oracle.moves(frame, Location::Transmit(port), Location::Free),
                };
                prop_assert!(consistent, "pool and oracle disagree");
                let accounting = pool.accounting();
                prop_assert!(accounting.is_balanced());
                prop_assert_eq!(accounting.free, oracle.count(|l| l == Location::Free));
                prop_assert_eq!(accounting.fill, oracle.count(|l| matches!(l, Location::Fill(_))));
                prop_assert_eq!(accounting.in_hand, oracle.count(|l| l == Location::InHand));
                prop_assert_eq!(accounting.parked, oracle.count(|l| l == Location::Parked));
                prop_assert_eq!(
                    accounting.transmit,
                    oracle.count(|l| matches!(l, Location::Transmit(_)))
                );
                for port in 0..PORTS {
                    let frames = pool.port_frames(port).unwrap_or_default();
                    prop_assert_eq!(frames.fill, oracle.count(|l| l == Location::Fill(port)));
                    prop_assert_eq!(frames.transmit, oracle.count(|l| l == Location::Transmit(port)));
                    prop_assert!(frames.fill <= oracle.share.fill_max);
                    prop_assert!(frames.transmit <= oracle.share.transmit_max);
                }
                prop_assert_eq!(pool.free.len() as u32, accounting.free);
            }
        }
    }
}
