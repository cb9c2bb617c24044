//! Worker-to-worker handoff: with several workers, both directions of a flow meet on one worker.
//!
//! Each worker receives on its own queue of every port, and a NIC (or veth) spreads packets over
//! queues by a hash that is usually not symmetric, so the two directions of a flow may arrive at
//! different workers whose flow tables would each see half of it: replies would miss the state
//! that lets them pass, and telemetry would report two one-way flows. So, whenever the flow table
//! is in use (a rule set, dynamic entries or flow telemetry), the worker that receives an IP
//! packet computes the worker that owns its flow and, when that is another worker, copies the
//! packet into one of the owner's handoff slots and frees its own frame. The owner takes handed
//! packets once per loop iteration, copies each into a frame of its own pool and processes it as
//! if it had received it on the same port (ports have the same index on every worker).
//!
//! The owner is a keyed hash of the unordered pair of IP addresses, so it is symmetric; for an
//! ICMP error, of the pair of the packet it quotes, so that the error meets the flow it belongs
//! to. Addresses rather than ports, because later fragments carry no ports and must meet their
//! first fragment's verdict: the same choice as symmetric RSS configured to hash addresses only
//! (`ethtool -N DEV rx-flow-hash udp4 sd`). The cost is that one pair of hosts is served by one
//! worker. A NIC already configured that way can spare the copies: [`FlowSteering::Nic`] trusts
//! it and hands nothing off.
//!
//! Slots are allocated when a worker is built: [`HANDOFF_SLOTS`] of a frame's size per worker,
//! circulating between its inbound queue and its free list. A sender that finds the owner's free
//! list empty (the owner is overloaded) drops the packet and counts it
//! ([`DropReason::HandoffFull`](crate::counters::DropReason::HandoffFull)); nobody waits.

use std::hash::Hasher;

use crossbeam_channel::{Receiver, Sender, bounded};
use siphasher::sip::SipHasher13;

use crate::io::PortIndex;
use crate::pipeline::{ethernet_layout, quoted_ip};
use crate::wire;

/// Packets in flight to one worker (and slots it owns).
pub const HANDOFF_SLOTS: usize = 1024;

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

/// A packet on its way to the worker that owns its flow.
pub struct Handed {
    /// The port it arrived on.
    pub port: PortIndex,
    pub len: usize,
    /// One of the owner's slots.
    pub bytes: Slot,
}

/// The keyed, symmetric hash that names a packet's owner; the same key on every worker.
#[derive(Clone, Debug)]
pub struct Steering {
    hasher: SipHasher13,
    workers: u64,
}

impl Steering {
    pub fn new(key: [u8; 16], workers: usize) -> Steering {
        Steering {
            hasher: SipHasher13::new_with_key(&key),
            workers: workers as u64,
        }
    }

    /// The worker that owns the flow of the IP packet in `frame` (an Ethernet frame); `None` for
    /// a frame that is not IP or too short to say (the receiving worker drops or punts it).
    #[inline]
    pub fn owner(&self, frame: &[u8]) -> Option<usize> {
        let (a, b) = flow_addresses(frame)?;
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let mut hasher = self.hasher;
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

/// A slot: a frame's worth of bytes.
type Slot = Box<[u8]>;

/// The queues of every worker, made when the router is built; each worker takes its end.
pub struct HandoffHub {
    steering: Steering,
    /// Per worker: packets handed to it.
    inbound: Vec<(Sender<Handed>, Receiver<Handed>)>,
    /// Per worker: its free slots, which senders take and it gives back.
    free: Vec<(Sender<Slot>, Receiver<Slot>)>,
}

impl HandoffHub {
    /// The queues of `workers` workers steered by `key` (the same on all of them).
    pub fn new(workers: usize, key: [u8; 16]) -> HandoffHub {
        HandoffHub {
            steering: Steering::new(key, workers),
            inbound: (0..workers).map(|_| bounded(HANDOFF_SLOTS)).collect(),
            free: (0..workers).map(|_| bounded(HANDOFF_SLOTS)).collect(),
        }
    }

    /// Worker `index`'s end, with its slots of `frame_capacity` bytes allocated now; `None` for an
    /// index beyond the workers the hub was made for.
    pub fn worker(&self, index: usize, frame_capacity: usize) -> Option<WorkerHandoff> {
        let (inbound_sender, inbound) = self.inbound.get(index)?;
        let (give_back, free) = &self.free[index];
        debug_assert!(inbound_sender.is_empty() && free.is_empty());
        for _ in 0..HANDOFF_SLOTS {
            // The list holds exactly HANDOFF_SLOTS: this never fails.
            let _ = give_back.try_send(vec![0u8; frame_capacity].into_boxed_slice());
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
                })
                .collect(),
        })
    }
}

struct Peer {
    inbound: Sender<Handed>,
    free: Receiver<Slot>,
    give_back: Sender<Slot>,
}

/// One worker's end of the handoff.
pub struct WorkerHandoff {
    index: usize,
    steering: Steering,
    inbound: Receiver<Handed>,
    give_back: Sender<Slot>,
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

    /// Copies `frame`, received on `port`, to worker `owner`; false when the owner has no free
    /// slot (or the frame does not fit one), and nothing was sent.
    pub fn send(&self, owner: usize, port: PortIndex, frame: &[u8]) -> bool {
        let Some(peer) = self.peers.get(owner) else {
            return false;
        };
        let Ok(mut bytes) = peer.free.try_recv() else {
            return false;
        };
        let Some(slot) = bytes.get_mut(..frame.len()) else {
            // Every worker's frames have the same size: only a misconfiguration gets here.
            let _ = peer.give_back.try_send(bytes);
            return false;
        };
        slot.copy_from_slice(frame);
        // A slot taken from the free list always has room in the inbound queue (both hold
        // HANDOFF_SLOTS, and a slot is in one or the other or in a worker's hands).
        peer.inbound
            .try_send(Handed {
                port,
                len: frame.len(),
                bytes,
            })
            .is_ok()
    }

    /// The next packet handed to this worker.
    #[inline]
    pub fn receive(&self) -> Option<Handed> {
        self.inbound.try_recv().ok()
    }

    /// Whether packets wait to be taken.
    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty()
    }

    /// Returns a slot taken by [`WorkerHandoff::receive`] to this worker's free list.
    pub fn give_back(&self, bytes: Slot) {
        // The list has room for every slot this worker owns.
        let _ = self.give_back.try_send(bytes);
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
        let steering = Steering::new([7; 16], 4);
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
        let steering = Steering::new([3; 16], 8);
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
        let steering = Steering::new([9; 16], 8);
        let first = ipv4_frame([198, 18, 0, 2], [198, 19, 0, 9], wire::PROTO_UDP, &[0; 8]);
        let mut later = first.clone();
        // Offset 185 * 8 bytes, no more fragments: its payload is no UDP header.
        later[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
        later[14 + 20..].copy_from_slice(&[0xff; 8]);
        assert_eq!(steering.owner(&later), steering.owner(&first));
    }

    #[test]
    fn frames_that_are_not_ip_have_no_owner() {
        let steering = Steering::new([1; 16], 2);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&wire::ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(steering.owner(&arp), None);
        assert_eq!(steering.owner(&[0u8; 10]), None);
        let truncated = &ipv4_frame([198, 18, 0, 1], [198, 18, 0, 2], wire::PROTO_UDP, &[])[..20];
        assert_eq!(steering.owner(truncated), None);
    }

    #[test]
    fn slots_circulate_and_an_overloaded_owner_refuses() {
        let hub = HandoffHub::new(2, [5; 16]);
        let zero = hub.worker(0, 64).expect("worker 0");
        let one = hub.worker(1, 64).expect("worker 1");
        assert!(hub.worker(2, 64).is_none());
        let frame = [0xabu8; 60];
        assert!(!zero.send(1, 3, &[0u8; 65]), "larger than a slot");
        for _ in 0..HANDOFF_SLOTS {
            assert!(zero.send(1, 3, &frame));
        }
        // Every slot of worker 1 is in its inbound queue: the next is refused.
        assert!(!zero.send(1, 3, &frame));
        let handed = one.receive().expect("handed");
        assert_eq!((handed.port, &handed.bytes[..handed.len]), (3, &frame[..]));
        one.give_back(handed.bytes);
        assert!(zero.send(1, 3, &frame));
        assert!(zero.receive().is_none());
    }
}
