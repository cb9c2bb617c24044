//! Worker-to-worker handoff: with several workers, both directions of a flow meet on one worker.
//!
//! Each worker receives on its own queue of every port, and a NIC (or veth) spreads packets over
//! queues by a hash that is usually not symmetric, so the two directions of a flow may arrive at
//! different workers whose flow tables would each see half of it: replies would miss the state
//! that lets them pass, and telemetry would report two one-way flows. So, whenever the flow table
//! is in use (a rule set, dynamic entries or flow telemetry), the worker that receives an IP
//! packet computes the worker that owns its flow and, when that is another worker, copies the
//! packet into a batch for the owner and frees its own frame; a batch goes to the owner when it
//! is full, or at the end of the sender's loop iteration if the owner has taken every batch sent
//! before (as VPP's handoff queues carry frames of buffers, not buffers: one queue operation per
//! batch). The owner takes handed batches once per
//! loop iteration, copies each packet into a frame of its own pool and processes it as if it had
//! received it on the same port (ports have the same index on every worker).
//!
//! The owner is a seeded hash of the unordered pair of IP addresses, so it is symmetric; for an
//! ICMP error, of the pair of the packet it quotes, so that the error meets the flow it belongs
//! to. Addresses rather than ports, because later fragments carry no ports and must meet their
//! first fragment's verdict: the same choice as symmetric RSS configured to hash addresses only
//! (`ethtool -N DEV rx-flow-hash udp4 sd`). The cost is that one pair of hosts is served by one
//! worker. A NIC already configured that way can spare the copies: [`FlowSteering::Nic`] trusts
//! it and hands nothing off.
//!
//! Batches are allocated when a worker is built: [`HANDOFF_BATCHES`] of [`HANDOFF_BATCH`] frames
//! per worker, circulating between its inbound queue and its free list. A sender that finds the
//! owner's free list empty (the owner is overloaded) drops the packet and counts it
//! ([`DropReason::HandoffFull`](crate::counters::DropReason::HandoffFull)); nobody waits.

use std::hash::{BuildHasher, Hasher};

use crossbeam_channel::{Receiver, Sender, bounded};
use hashbrown::DefaultHashBuilder;

use crate::io::PortIndex;
use crate::pipeline::{ethernet_layout, quoted_ip};
use crate::wire;

/// Packets in one batch handed from a worker to another.
pub const HANDOFF_BATCH: usize = 32;
/// Batches in flight to one worker (and batches it owns): 2,048 packets.
pub const HANDOFF_BATCHES: usize = 64;

/// How the two directions of a flow reach one worker when there are several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowSteering {
    /// The receiving worker hands each packet to its flow's owner (works on any NIC and veth).
    #[default]
    Handoff,
    /// The NIC's RSS already delivers both directions to one queue (symmetric hash of the
    /// addresses, configured by the operator): no handoff.
    Nic,
}

/// The keyed, symmetric hash that names a packet's owner; the same key on every worker. The
/// hash is foldhash (hashbrown's default), seeded at random per start: fast, and an outsider
/// who cannot learn the seed cannot aim a flood at one worker (a hash that must also resist
/// someone who learns outputs, as the flow table's SipHash does, costs several times more on
/// every packet, and a worker it would overload only drops, counted).
#[derive(Clone, Debug)]
pub struct Steering {
    hasher: DefaultHashBuilder,
    workers: u64,
}

impl Steering {
    pub fn new(hasher: DefaultHashBuilder, workers: usize) -> Steering {
        Steering {
            hasher,
            workers: workers as u64,
        }
    }

    /// The worker that owns the flow of the IP packet in `frame` (an Ethernet frame); `None` for
    /// a frame that is not IP or too short to say (the receiving worker drops or punts it).
    #[inline]
    pub fn owner(&self, frame: &[u8]) -> Option<usize> {
        let (a, b) = flow_addresses(frame)?;
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let mut hasher = self.hasher.build_hasher();
        hasher.write(low);
        hasher.write(high);
        // Multiply-shift maps the hash onto 0..workers without a division.
        Some(((u128::from(hasher.finish()) * u128::from(self.workers)) >> 64) as usize)
    }
}

/// The two addresses that name the flow of the IP packet in `frame`: its own, or those of the
/// packet an ICMP error quotes.
#[inline]
fn flow_addresses(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, l3) = ethernet_layout(frame).ok()?;
    let ip = frame.get(l3..)?;
    match wire::read_u16(frame, l3 - 2) {
        wire::ETHERTYPE_IPV4 => {
            let header_len = usize::from(ip.first()? & 0x0f) * 4;
            let fragment_word = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            let first = fragment_word & wire::ipv4::FRAGMENT_OFFSET_MASK == 0;
            let quoted = (first && ip[wire::ipv4::PROTOCOL] == wire::PROTO_ICMP)
                .then(|| quoted_ip(wire::PROTO_ICMP, ip.get(header_len..)?))
                .flatten()
                .and_then(ipv4_addresses);
            quoted.or_else(|| ipv4_addresses(ip))
        }
        wire::ETHERTYPE_IPV6 => {
            let layers = wire::ipv6_layers(ip)?;
            let first = layers.fragment.is_none_or(|f| f.offset == 0);
            let quoted = (first && layers.protocol == wire::PROTO_ICMPV6)
                .then(|| quoted_ip(wire::PROTO_ICMPV6, ip.get(layers.offset..)?))
                .flatten()
                .and_then(ipv6_addresses);
            quoted.or_else(|| ipv6_addresses(ip))
        }
        _ => None,
    }
}

fn ipv4_addresses(ip: &[u8]) -> Option<(&[u8], &[u8])> {
    Some((
        ip.get(wire::ipv4::SOURCE..wire::ipv4::SOURCE + 4)?,
        ip.get(wire::ipv4::DESTINATION..wire::ipv4::DESTINATION + 4)?,
    ))
    .filter(|_| ip[0] >> 4 == 4)
}

fn ipv6_addresses(ip: &[u8]) -> Option<(&[u8], &[u8])> {
    Some((
        ip.get(wire::ipv6::SOURCE..wire::ipv6::SOURCE + 16)?,
        ip.get(wire::ipv6::DESTINATION..wire::ipv6::DESTINATION + 16)?,
    ))
    .filter(|_| ip[0] >> 4 == 6)
}

/// A batch of packets on its way to the worker that owns their flows: up to [`HANDOFF_BATCH`]
/// frames, copied one after the other (a batch of small packets touches few cache lines).
pub struct Batch {
    count: usize,
    ports: [PortIndex; HANDOFF_BATCH],
    /// Where each packet ends in `bytes`; the first starts at 0, the others where the previous
    /// ends.
    ends: [usize; HANDOFF_BATCH],
    /// The largest frame a batch takes (the workers' frame size).
    frame_capacity: usize,
    /// Room for [`HANDOFF_BATCH`] frames of the largest size.
    bytes: Box<[u8]>,
}

impl Batch {
    fn new(frame_capacity: usize) -> Batch {
        Batch {
            count: 0,
            ports: [0; HANDOFF_BATCH],
            ends: [0; HANDOFF_BATCH],
            frame_capacity,
            bytes: vec![0u8; HANDOFF_BATCH * frame_capacity].into_boxed_slice(),
        }
    }

    fn used(&self) -> usize {
        self.count.checked_sub(1).map_or(0, |last| self.ends[last])
    }

    /// Appends `frame`, received on `port`; false when it is full or the frame does not fit.
    fn push(&mut self, port: PortIndex, frame: &[u8]) -> bool {
        let start = self.used();
        let Some(room) = self.bytes.get_mut(start..start + frame.len()) else {
            return false;
        };
        if self.count == HANDOFF_BATCH || frame.len() > self.frame_capacity {
            return false;
        }
        room.copy_from_slice(frame);
        self.ports[self.count] = port;
        self.ends[self.count] = start + frame.len();
        self.count += 1;
        true
    }

    fn is_full(&self) -> bool {
        self.count == HANDOFF_BATCH
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Packet `index`: the port it arrived on and its bytes.
    pub fn packet(&self, index: usize) -> Option<(PortIndex, &[u8])> {
        let start = index
            .checked_sub(1)
            .map_or(0, |previous| self.ends[previous]);
        (index < self.count).then(|| (self.ports[index], &self.bytes[start..self.ends[index]]))
    }
}

/// The queues of every worker, made when the router is built; each worker takes its end.
pub struct HandoffHub {
    steering: Steering,
    /// Per worker: batches handed to it.
    inbound: Vec<(Sender<Batch>, Receiver<Batch>)>,
    /// Per worker: its empty batches, which senders take and it gives back.
    free: Vec<(Sender<Batch>, Receiver<Batch>)>,
}

impl HandoffHub {
    /// The queues of `workers` workers, steered by a hash seeded now (the same on all of them).
    pub fn new(workers: usize) -> HandoffHub {
        HandoffHub {
            steering: Steering::new(DefaultHashBuilder::default(), workers),
            inbound: (0..workers).map(|_| bounded(HANDOFF_BATCHES)).collect(),
            free: (0..workers).map(|_| bounded(HANDOFF_BATCHES)).collect(),
        }
    }

    /// Worker `index`'s end, with its batches for frames of `frame_capacity` bytes allocated
    /// now; `None` for an index beyond the workers the hub was made for.
    pub fn worker(&self, index: usize, frame_capacity: usize) -> Option<WorkerHandoff> {
        let (inbound_sender, inbound) = self.inbound.get(index)?;
        let (give_back, free) = &self.free[index];
        debug_assert!(inbound_sender.is_empty() && free.is_empty());
        for _ in 0..HANDOFF_BATCHES {
            // The list holds exactly HANDOFF_BATCHES: this never fails.
            let _ = give_back.try_send(Batch::new(frame_capacity));
        }
        Some(WorkerHandoff {
            index,
            steering: self.steering.clone(),
            inbound: inbound.clone(),
            give_back: give_back.clone(),
            peers: self
                .inbound
                .iter()
                .zip(&self.free)
                .map(|((sender, _), (give_back, free))| Peer {
                    inbound: sender.clone(),
                    free: free.clone(),
                    give_back: give_back.clone(),
                    open: None,
                })
                .collect(),
        })
    }
}

struct Peer {
    inbound: Sender<Batch>,
    free: Receiver<Batch>,
    give_back: Sender<Batch>,
    /// The batch this worker is filling for the peer.
    open: Option<Batch>,
}

/// One worker's end of the handoff.
pub struct WorkerHandoff {
    index: usize,
    steering: Steering,
    inbound: Receiver<Batch>,
    give_back: Sender<Batch>,
    /// Every worker's queues, this one's included (never used), by worker index.
    peers: Box<[Peer]>,
}

impl WorkerHandoff {
    /// The worker that owns the packet in `frame`, when it is not this one.
    #[inline]
    pub fn other_owner(&self, frame: &[u8]) -> Option<usize> {
        self.steering
            .owner(frame)
            .filter(|&owner| owner != self.index)
    }

    /// Copies `frame`, received on `port`, into the batch for worker `owner`, sending the batch
    /// when it is full; false when the owner has no empty batch (or the frame does not fit one),
    /// and nothing was copied.
    pub fn send(&mut self, owner: usize, port: PortIndex, frame: &[u8]) -> bool {
        let Some(peer) = self.peers.get_mut(owner) else {
            return false;
        };
        if peer.open.is_none() {
            peer.open = peer.free.try_recv().ok();
        }
        let Some(batch) = &mut peer.open else {
            return false;
        };
        if !batch.push(port, frame) {
            return false;
        }
        if batch.is_full() {
            Self::send_open(peer);
        }
        true
    }

    /// Sends the batches begun for other workers that have taken everything sent to them
    /// before; once per loop iteration. A worker that is busy, or blocked in `poll(2)`, gets its
    /// packets in full batches instead, so that a few packets per iteration do not use up its
    /// batches while it is away.
    pub fn flush(&mut self) {
        for peer in &mut self.peers {
            if peer.open.as_ref().is_some_and(|batch| !batch.is_empty()) && peer.inbound.is_empty()
            {
                Self::send_open(peer);
            }
        }
    }

    fn send_open(peer: &mut Peer) {
        if let Some(batch) = peer.open.take() {
            // A batch taken from the free list always has room in the inbound queue (both hold
            // HANDOFF_BATCHES, and a batch is in one or the other or in a worker's hands); were
            // it refused, it goes back to the free list and its packets are lost.
            if let Err(refused) = peer.inbound.try_send(batch) {
                let _ = peer.give_back.try_send(refused.into_inner());
            }
        }
    }

    /// The next batch handed to this worker.
    #[inline]
    pub fn receive(&self) -> Option<Batch> {
        self.inbound.try_recv().ok()
    }

    /// Whether batches wait to be taken.
    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty()
    }

    /// Returns a batch taken by [`WorkerHandoff::receive`], emptied, to this worker's free list.
    pub fn give_back(&self, mut batch: Batch) {
        batch.count = 0;
        // The list has room for every batch this worker owns.
        let _ = self.give_back.try_send(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_frame(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&wire::ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = protocol;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(payload);
        frame
    }

    fn ipv6_frame(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&wire::ETHERTYPE_IPV6.to_be_bytes());
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        ip[6] = next;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(payload);
        frame
    }

    fn v6(last: u8) -> [u8; 16] {
        let mut address = [0u8; 16];
        address[..4].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
        address[15] = last;
        address
    }

    #[test]
    fn both_directions_have_one_owner_and_pairs_spread_over_workers() {
        let steering = Steering::new(DefaultHashBuilder::default(), 4);
        let mut seen = [0usize; 4];
        for host in 0..=255u8 {
            let there = ipv4_frame(
                [198, 18, 0, host],
                [198, 19, 0, 1],
                wire::PROTO_UDP,
                &[0; 8],
            );
            let back = ipv4_frame(
                [198, 19, 0, 1],
                [198, 18, 0, host],
                wire::PROTO_UDP,
                &[0; 8],
            );
            let owner = steering.owner(&there).expect("IPv4");
            assert_eq!(steering.owner(&back), Some(owner));
            seen[owner] += 1;
            let there = ipv6_frame(v6(host), v6(0), wire::PROTO_TCP, &[0; 20]);
            let back = ipv6_frame(v6(0), v6(host), wire::PROTO_TCP, &[0; 20]);
            assert_eq!(steering.owner(&there), steering.owner(&back));
        }
        // 256 pairs over 4 workers: each gets a fair share (binomial, far from 32 or 96).
        assert!(seen.iter().all(|&n| (32..96).contains(&n)), "{seen:?}");
    }

    #[test]
    fn an_icmp_error_goes_where_the_flow_it_quotes_goes() {
        let steering = Steering::new(DefaultHashBuilder::default(), 8);
        let flow = ipv4_frame([198, 18, 0, 2], [198, 19, 0, 9], wire::PROTO_UDP, &[0; 8]);
        // Time exceeded from a router on the way, quoting the flow's packet.
        let mut error = vec![11, 0, 0, 0, 0, 0, 0, 0];
        error.extend_from_slice(&flow[14..]);
        let from_router = ipv4_frame([198, 18, 5, 5], [198, 18, 0, 2], wire::PROTO_ICMP, &error);
        assert_eq!(steering.owner(&from_router), steering.owner(&flow));

        let flow = ipv6_frame(v6(2), v6(9), wire::PROTO_UDP, &[0; 8]);
        let mut error = vec![3, 0, 0, 0, 0, 0, 0, 0];
        error.extend_from_slice(&flow[14..]);
        let from_router = ipv6_frame(v6(77), v6(2), wire::PROTO_ICMPV6, &error);
        assert_eq!(steering.owner(&from_router), steering.owner(&flow));
    }

    #[test]
    fn a_later_fragment_goes_where_its_first_fragment_goes() {
        let steering = Steering::new(DefaultHashBuilder::default(), 8);
        let first = ipv4_frame([198, 18, 0, 2], [198, 19, 0, 9], wire::PROTO_UDP, &[0; 8]);
        let mut later = first.clone();
        // Offset 185 * 8 bytes, no more fragments: its payload is no UDP header.
        later[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
        later[14 + 20..].copy_from_slice(&[0xff; 8]);
        assert_eq!(steering.owner(&later), steering.owner(&first));
    }

    #[test]
    fn frames_that_are_not_ip_have_no_owner() {
        let steering = Steering::new(DefaultHashBuilder::default(), 2);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&wire::ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(steering.owner(&arp), None);
        assert_eq!(steering.owner(&[0u8; 10]), None);
        let truncated = &ipv4_frame([198, 18, 0, 1], [198, 18, 0, 2], wire::PROTO_UDP, &[])[..20];
        assert_eq!(steering.owner(truncated), None);
    }

    #[test]
    fn batches_circulate_and_an_overloaded_owner_refuses() {
        let hub = HandoffHub::new(2);
        let mut zero = hub.worker(0, 64).expect("worker 0");
        let one = hub.worker(1, 64).expect("worker 1");
        assert!(hub.worker(2, 64).is_none());
        assert!(!zero.send(1, 3, &[0u8; 65]), "larger than a slot");
        // A batch leaves when full, or at the flush.
        for n in 0..HANDOFF_BATCH + 1 {
            assert!(zero.send(1, 3, &[n as u8; 60]));
        }
        let full = one.receive().expect("a full batch");
        assert_eq!(full.len(), HANDOFF_BATCH);
        assert_eq!(full.packet(5), Some((3, &[5u8; 60][..])));
        assert!(
            one.receive().is_none(),
            "the open batch waits for the flush"
        );
        zero.flush();
        let last = one.receive().expect("the flushed batch");
        assert_eq!(last.packet(0), Some((3, &[HANDOFF_BATCH as u8; 60][..])));
        assert_eq!(last.packet(1), None);
        one.give_back(full);
        one.give_back(last);
        // Every batch of worker 1 filled and unread: the next packet is refused.
        for _ in 0..HANDOFF_BATCHES * HANDOFF_BATCH {
            assert!(zero.send(1, 3, &[0u8; 60]));
        }
        assert!(!zero.send(1, 3, &[0u8; 60]));
        assert!(zero.receive().is_none());
    }
}
