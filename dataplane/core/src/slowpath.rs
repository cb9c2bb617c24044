//! The slow path: one thread, off the workers, that speaks for the router's own addresses and
//! resolves neighbours.
//!
//! Workers hand it frames for the router (ARP, NDP, ping) and neighbour misses through a bounded
//! channel; it answers with smoltcp (one smoltcp interface per logical interface), learns neighbour
//! bindings from ARP and NDP, runs the [`NeighbourManager`] timers, and hands the frames to send
//! (replies, ARP requests, neighbour solicitations) back to a worker, which owns the ports.
//! Nothing here is on the per-packet fast path; queues on both sides are bounded and a full queue
//! drops and counts.
//!
//! Being the single writer of the neighbour table, it is also the one that changes routes (their
//! gateways need neighbour entries) and neighbours for the control side: requests come through a
//! queue of their own, so that a flood of frames for the router cannot crowd them out.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use smoltcp::iface::{Config as StackConfig, Interface as Stack, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::change::Reply;
use crate::counters::Counter;
use crate::fib::{FibError, FibPublisher, NextHop, RoutesApplied, StaticRoute};
use crate::icmp;
use crate::iface::{IfIndex, Interface, Interfaces};
use crate::io::PortIndex;
use crate::neigh::{
    self, NeighbourChange, NeighbourError, NeighbourKey, NeighbourManager, Resolution, Solicitation,
};
use crate::wire::{self, ETHERNET_HEADER_LEN, VLAN_TAG_LEN};

/// Largest frame exchanged with the slow path. Larger frames for the router are dropped (a ping
/// to the router larger than this goes unanswered).
pub const HOST_FRAME_MAX: usize = 2048;

/// A frame in a fixed buffer, passed by value through bounded channels (no allocation).
#[derive(Clone)]
pub struct HostFrame {
    len: u16,
    bytes: [u8; HOST_FRAME_MAX],
}

impl HostFrame {
    /// A copy of `data`, or `None` when it is larger than [`HOST_FRAME_MAX`].
    pub fn copy_from(data: &[u8]) -> Option<HostFrame> {
        let mut frame = HostFrame {
            len: 0,
            bytes: [0; HOST_FRAME_MAX],
        };
        frame.bytes.get_mut(..data.len())?.copy_from_slice(data);
        frame.len = data.len() as u16;
        Some(frame)
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for HostFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostFrame({} bytes)", self.len)
    }
}

/// What workers tell the slow path.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "sent by value through a bounded channel whose slots are allocated once; boxing would allocate per punt"
)]
pub enum ToSlowPath {
    /// A frame for the router, untagged, received on `iface`.
    Frame { iface: IfIndex, frame: HostFrame },
    /// A packet waits for this neighbour.
    Resolve(NeighbourKey),
}

/// A change the control side asks of the slow path, answered through its reply.
#[derive(Debug)]
pub enum ControlRequest {
    /// Replace every static route with `routes`, or refuse them and change nothing.
    ReplaceRoutes {
        routes: Vec<StaticRoute>,
        reply: Reply<RoutesApplied, FibError>,
    },
    /// Make `key` a static neighbour at `mac`.
    AddStaticNeighbour {
        key: NeighbourKey,
        mac: [u8; 6],
        reply: Reply<(), NeighbourError>,
    },
    /// Forget `key` (static or learned): it is resolved again.
    DeleteNeighbour {
        key: NeighbourKey,
        reply: Reply<(), NeighbourError>,
    },
}

/// A frame the slow path wants sent on `port` (already tagged for its VLAN).
#[derive(Debug)]
pub struct Outbound {
    pub port: PortIndex,
    pub frame: HostFrame,
}

/// Counters of the slow path.
#[derive(Debug, Default)]
pub struct SlowPathCounters {
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub outbound_queue_full: Counter,
    pub neighbour_table_full: Counter,
    pub solicitations: Counter,
    /// Router-originated replies with no route back, or a route that leads nowhere to send.
    pub local_output_unroutable: Counter,
    /// Router-originated replies dropped while their next hop was being resolved.
    pub local_output_unresolved: Counter,
}

/// Bounds of the channels between workers and the slow path.
pub const TO_SLOW_PATH_CAPACITY: usize = 1024;
pub const OUTBOUND_CAPACITY: usize = 1024;
/// Changes from the control side waiting for the slow path (the control side waits for each).
pub const CONTROL_CAPACITY: usize = 16;
/// Frames one smoltcp poll may emit (a reply, maybe an ARP request of its own).
const STACK_TX_MAX: usize = 8;

/// A smoltcp device over one punted frame in and a few frames out.
struct PuntDevice {
    rx: Option<HostFrame>,
    tx: Vec<HostFrame>,
    mtu: usize,
}

struct PuntRx(HostFrame);
struct PuntTx<'a>(&'a mut Vec<HostFrame>);

impl smoltcp::phy::RxToken for PuntRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0.as_slice())
    }
}

impl smoltcp::phy::TxToken for PuntTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = HostFrame {
            len: len.min(HOST_FRAME_MAX) as u16,
            bytes: [0; HOST_FRAME_MAX],
        };
        let result = f(&mut frame.bytes[..usize::from(frame.len)]);
        self.0.push(frame);
        result
    }
}

impl Device for PuntDevice {
    type RxToken<'a> = PuntRx;
    type TxToken<'a> = PuntTx<'a>;

    fn receive(&mut self, _now: smoltcp::time::Instant) -> Option<(PuntRx, PuntTx<'_>)> {
        if self.tx.len() >= STACK_TX_MAX {
            return None;
        }
        let frame = self.rx.take()?;
        Some((PuntRx(frame), PuntTx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<PuntTx<'_>> {
        (self.tx.len() < STACK_TX_MAX).then_some(PuntTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// The router's own IP stack on one logical interface.
struct HostStack {
    stack: Stack,
    device: PuntDevice,
}

impl HostStack {
    fn new(iface: &Interface, now: smoltcp::time::Instant, seed: u64) -> HostStack {
        let mut device = PuntDevice {
            rx: None,
            tx: Vec::with_capacity(STACK_TX_MAX),
            mtu: (usize::from(iface.mtu) + ETHERNET_HEADER_LEN).min(HOST_FRAME_MAX - VLAN_TAG_LEN),
        };
        let mut config = StackConfig::new(HardwareAddress::Ethernet(EthernetAddress(iface.mac)));
        config.random_seed = seed;
        let mut stack = Stack::new(config, &mut device, now);
        stack.update_ip_addrs(|addrs| {
            let cidrs = iface
                .ipv4
                .iter()
                .map(|net| IpCidr::new(IpAddr::V4(net.addr()).into(), net.prefix_len()))
                .chain(iface.ipv6.iter().map(|net| IpCidr::new(IpAddr::V6(net.addr()).into(), net.prefix_len())))
                .chain(std::iter::once(IpCidr::new(IpAddr::V6(iface.link_local()).into(), 64)));
            for cidr in cidrs {
                // Capacity is smoltcp's IFACE_MAX_ADDR_COUNT (8); the config allows at most 8
                // addresses with the link-local one, so a full list only loses extras.
                if addrs.push(cidr).is_err() {
                    tracing::warn!(interface = %iface.name, %cidr, "more addresses than the host stack holds");
                }
            }
        });
        HostStack { stack, device }
    }
}

/// The slow path's state; [`SlowPath::run`] is its thread.
pub struct SlowPath {
    ifaces: Arc<Interfaces>,
    neighbours: NeighbourManager,
    stacks: Vec<HostStack>,
    sockets: SocketSet<'static>,
    fib: FibPublisher,
    inbox: Receiver<ToSlowPath>,
    control: Receiver<ControlRequest>,
    outbox: Sender<Outbound>,
    counters: Arc<SlowPathCounters>,
    epoch: Instant,
    solicitations: Vec<Solicitation>,
    changes: Vec<NeighbourChange>,
    on_change: Box<dyn FnMut(NeighbourChange) + Send>,
}

impl SlowPath {
    /// `outbox` is shared by all workers: whichever takes a frame sends it, since every worker
    /// serves every port. `control` brings the control side's changes. `on_change` hears of
    /// neighbour changes (logging, events).
    #[expect(
        clippy::too_many_arguments,
        reason = "built in one place, by Router::build"
    )]
    pub fn new(
        ifaces: Arc<Interfaces>,
        neighbours: NeighbourManager,
        fib: FibPublisher,
        inbox: Receiver<ToSlowPath>,
        control: Receiver<ControlRequest>,
        outbox: Sender<Outbound>,
        epoch: Instant,
        on_change: Box<dyn FnMut(NeighbourChange) + Send>,
    ) -> SlowPath {
        let now = smoltcp::time::Instant::from_micros(0);
        let stacks = ifaces
            .iter()
            .map(|(index, iface)| HostStack::new(iface, now, 0x5eed ^ u64::from(index)))
            .collect();
        SlowPath {
            ifaces,
            neighbours,
            stacks,
            sockets: SocketSet::new(Vec::new()),
            fib,
            inbox,
            control,
            outbox,
            counters: Arc::default(),
            epoch,
            solicitations: Vec::new(),
            changes: Vec::new(),
            on_change,
        }
    }

    pub fn counters(&self) -> Arc<SlowPathCounters> {
        self.counters.clone()
    }

    pub fn neighbours(&self) -> &NeighbourManager {
        &self.neighbours
    }

    pub fn neighbours_mut(&mut self) -> &mut NeighbourManager {
        &mut self.neighbours
    }

    /// Runs until `stop`: handles messages as they come, and changes and timers at least every
    /// 10 ms.
    pub fn run(&mut self, stop: &AtomicBool) {
        const TICK: Duration = Duration::from_millis(10);
        let mut next_tick = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            match self.inbox.recv_timeout(TICK) {
                Ok(message) => {
                    let now = self.epoch.elapsed();
                    self.handle(message, now);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = self.epoch.elapsed();
            self.handle_changes(now);
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
        }
    }

    /// Handles every message and change waiting, then the timers, without blocking (for tests
    /// and replay).
    pub fn step(&mut self, now: Duration) {
        while let Ok(message) = self.inbox.try_recv() {
            self.handle(message, now);
        }
        self.handle_changes(now);
        self.tick(now);
    }

    /// Makes the changes the control side asked for (at most a queue's worth), each answered.
    fn handle_changes(&mut self, now: Duration) {
        for request in self.control.try_iter().take(CONTROL_CAPACITY) {
            match request {
                ControlRequest::ReplaceRoutes { routes, reply } => reply.answer_with(|| {
                    self.fib
                        .replace(&self.ifaces, &routes, &mut self.neighbours, now)
                }),
                ControlRequest::AddStaticNeighbour { key, mac, reply } => reply.answer_with(|| {
                    neigh::check_static(&self.ifaces, &key, mac)?;
                    if let Some(change) = self.neighbours.add_static(key, mac, now)? {
                        self.changes.push(change);
                    }
                    Ok(())
                }),
                ControlRequest::DeleteNeighbour { key, reply } => {
                    reply.answer_with(|| self.neighbours.forget(&key, now, &mut self.changes))
                }
            }
            // Workers find new and removed entries (parked packets, connected hosts) at once.
            self.neighbours.publish();
        }
    }

    /// Handles one message from a worker.
    pub fn handle(&mut self, message: ToSlowPath, now: Duration) {
        match message {
            ToSlowPath::Frame { iface, frame } => {
                self.counters.frames_in.add(1);
                self.learn(iface, frame.as_slice(), now);
                self.answer(iface, frame, now);
            }
            ToSlowPath::Resolve(key) => match self.neighbours.resolve(key, now) {
                Ok(Some(solicitation)) => self.solicit(solicitation),
                Ok(None) => {}
                Err(_) => self.counters.neighbour_table_full.add(1),
            },
        }
    }

    /// Timers: neighbour solicitations and expiry, then publication of the neighbour index;
    /// replaced FIBs retired long enough ago are freed.
    pub fn tick(&mut self, now: Duration) {
        self.neighbours
            .poll(now, &mut self.solicitations, &mut self.changes);
        self.neighbours.publish();
        self.fib.release_retired(now);
        let solicitations = std::mem::take(&mut self.solicitations);
        for solicitation in &solicitations {
            self.solicit(*solicitation);
        }
        self.solicitations = solicitations;
        self.solicitations.clear();
        for change in self.changes.drain(..) {
            (self.on_change)(change);
        }
    }

    fn learn(&mut self, iface_index: IfIndex, frame: &[u8], now: Duration) {
        let Some(iface) = self.ifaces.get(iface_index) else {
            return;
        };
        let payload = frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default();
        let hint = match wire::read_u16(frame, 12) {
            wire::ETHERTYPE_ARP => wire::arp_hint(payload, |a| iface.owns(a.into())),
            wire::ETHERTYPE_IPV6 => wire::ndp_hint(payload, |a| iface.owns(a.into())),
            _ => None,
        };
        let Some(hint) = hint else { return };
        let on_link = iface.is_on_link(hint.addr)
            || matches!(hint.addr, IpAddr::V6(a) if a.is_unicast_link_local());
        if !on_link {
            return;
        }
        let key = NeighbourKey {
            iface: iface_index,
            addr: hint.addr,
        };
        if let Some(change) = self.neighbours.learned(key, hint.mac, hint.policy, now) {
            (self.on_change)(change);
        }
    }

    fn answer(&mut self, iface_index: IfIndex, frame: HostFrame, now: Duration) {
        if self.needs_routed_echo(iface_index, frame.as_slice()) {
            self.routed_echo_reply(frame.as_slice(), now);
            return;
        }
        let Some(host) = self.stacks.get_mut(usize::from(iface_index)) else {
            return;
        };
        host.device.rx = Some(frame);
        let timestamp = smoltcp::time::Instant::from_micros(now.as_micros() as i64);
        host.stack
            .poll(timestamp, &mut host.device, &mut self.sockets);
        host.device.rx = None;
        let replies = std::mem::take(&mut host.device.tx);
        for reply in &replies {
            self.send(iface_index, reply.as_slice());
        }
        if let Some(host) = self.stacks.get_mut(usize::from(iface_index)) {
            host.device.tx = replies;
            host.device.tx.clear();
        }
    }

    /// smoltcp answers a ping on the interface it came in on, for that interface's addresses, to
    /// an on-link sender. Any other ping for the router (to the address of another interface, or
    /// from beyond a gateway) is answered here and the reply routed like the router's own
    /// traffic.
    fn needs_routed_echo(&self, iface_index: IfIndex, frame: &[u8]) -> bool {
        let Some(iface) = self.ifaces.get(iface_index) else {
            return false;
        };
        let ip = frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default();
        let (src, dst, is_echo_request): (IpAddr, IpAddr, bool) = match wire::read_u16(frame, 12) {
            wire::ETHERTYPE_IPV4 if ip.len() >= wire::IPV4_HEADER_LEN + 8 => {
                let header_len = usize::from(ip[0] & 0x0f) * 4;
                let src: [u8; 4] = [ip[12], ip[13], ip[14], ip[15]];
                let dst: [u8; 4] = [ip[16], ip[17], ip[18], ip[19]];
                (
                    src.into(),
                    dst.into(),
                    ip[wire::ipv4::PROTOCOL] == wire::PROTO_ICMP && ip.get(header_len) == Some(&8),
                )
            }
            wire::ETHERTYPE_IPV6 if ip.len() >= wire::IPV6_HEADER_LEN + 8 => {
                let src: [u8; 16] = ip[8..24].try_into().unwrap_or_default();
                let dst: [u8; 16] = ip[24..40].try_into().unwrap_or_default();
                let is_request = ip[wire::ipv6::NEXT_HEADER] == wire::PROTO_ICMPV6
                    && ip[wire::IPV6_HEADER_LEN] == 128;
                (src.into(), dst.into(), is_request)
            }
            _ => return false,
        };
        let owned_here = iface.owns(dst) || matches!(dst, IpAddr::V6(a) if a.is_multicast());
        let on_link =
            iface.is_on_link(src) || matches!(src, IpAddr::V6(a) if a.is_unicast_link_local());
        is_echo_request && !(owned_here && on_link)
    }

    /// Answers an echo request itself and sends the reply through the FIB and the neighbour
    /// table; a reply to a neighbour not yet resolved is dropped (the ping is repeated) and the
    /// neighbour solicited.
    fn routed_echo_reply(&mut self, frame: &[u8], now: Duration) {
        let mut out = [0u8; HOST_FRAME_MAX];
        let header_room = ETHERNET_HEADER_LEN + VLAN_TAG_LEN;
        let request = frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default();
        let Some(ip_len) = icmp::write_echo_reply(&mut out[header_room..], request) else {
            return;
        };
        let reply_to: IpAddr = match out[header_room] >> 4 {
            4 => <[u8; 4]>::try_from(&out[header_room + 16..header_room + 20])
                .map(IpAddr::from)
                .unwrap_or(IpAddr::from([0u8; 4])),
            _ => <[u8; 16]>::try_from(&out[header_room + 24..header_room + 40])
                .map(IpAddr::from)
                .unwrap_or(IpAddr::from([0u8; 16])),
        };
        let next_hop = self.fib.load().lookup(reply_to).copied();
        let (iface_index, neighbour) = match next_hop {
            Some(NextHop::Connected { iface }) => (iface, reply_to),
            Some(NextHop::Gateway { iface, gateway, .. }) => (iface, gateway),
            _ => {
                self.counters.local_output_unroutable.add(1);
                return;
            }
        };
        let Some(egress) = self.ifaces.get(iface_index) else {
            return;
        };
        let key = NeighbourKey {
            iface: iface_index,
            addr: neighbour,
        };
        let Some(Resolution::Reachable(mac)) = self.neighbours.resolution_of(&key) else {
            self.counters.local_output_unresolved.add(1);
            if let Ok(Some(solicitation)) = self.neighbours.resolve(key, now) {
                self.solicit(solicitation);
            }
            return;
        };
        let (port, header_len) = (egress.port, wire::ethernet_header_len(egress.vlan));
        let start = header_room - header_len;
        let ethertype = if reply_to.is_ipv4() {
            wire::ETHERTYPE_IPV4
        } else {
            wire::ETHERTYPE_IPV6
        };
        wire::write_ethernet(&mut out[start..], mac, egress.mac, egress.vlan, ethertype);
        self.enqueue(port, &out[start..header_room + ip_len]);
    }

    fn solicit(&mut self, solicitation: Solicitation) {
        let key = solicitation.key;
        let Some(iface) = self.ifaces.get(key.iface) else {
            return;
        };
        let mut buf = [0u8; wire::SOLICITATION_FRAME_MAX];
        let len = match key.addr {
            IpAddr::V4(target) => {
                let Some(source) = iface
                    .ipv4
                    .iter()
                    .find(|net| net.contains(&target))
                    .or(iface.ipv4.first())
                else {
                    return;
                };
                wire::write_arp_request(
                    &mut buf,
                    iface.mac,
                    iface.vlan,
                    source.addr(),
                    target,
                    solicitation.known_mac,
                )
            }
            IpAddr::V6(target) => {
                let source = iface
                    .ipv6
                    .iter()
                    .find(|net| net.contains(&target))
                    .map(|net| net.addr())
                    .unwrap_or_else(|| iface.link_local());
                wire::write_neighbour_solicitation(
                    &mut buf,
                    iface.mac,
                    iface.vlan,
                    source,
                    target,
                    solicitation.known_mac,
                )
            }
        };
        self.counters.solicitations.add(1);
        self.enqueue(iface.port, &buf[..len]);
    }

    /// Sends an untagged frame from the host stack out of `iface`, adding its VLAN tag.
    fn send(&mut self, iface_index: IfIndex, untagged: &[u8]) {
        let Some(iface) = self.ifaces.get(iface_index) else {
            return;
        };
        let (port, vlan) = (iface.port, iface.vlan);
        match vlan {
            None => self.enqueue(port, untagged),
            Some(id) => {
                if untagged.len() < ETHERNET_HEADER_LEN
                    || untagged.len() + VLAN_TAG_LEN > HOST_FRAME_MAX
                {
                    return;
                }
                let mut tagged = [0u8; HOST_FRAME_MAX];
                tagged[..12].copy_from_slice(&untagged[..12]);
                wire::write_u16(&mut tagged, 12, wire::ETHERTYPE_VLAN);
                wire::write_u16(&mut tagged, 14, id);
                tagged[16..untagged.len() + VLAN_TAG_LEN].copy_from_slice(&untagged[12..]);
                self.enqueue(port, &tagged[..untagged.len() + VLAN_TAG_LEN]);
            }
        }
    }

    fn enqueue(&mut self, port: PortIndex, frame: &[u8]) {
        let Some(frame) = HostFrame::copy_from(frame) else {
            return;
        };
        match self.outbox.try_send(Outbound { port, frame }) {
            Ok(()) => self.counters.frames_out.add(1),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.outbound_queue_full.add(1)
            }
        }
    }
}
