//! Packet capture on the workers: AF_XDP takes frames before the kernel's taps, so tcpdump does
//! not see them, and the workers copy what a capture asks for.
//!
//! The control side starts a capture through the [`CaptureHub`]: one port, received or sent
//! frames or both, a filter, a snap length. One capture runs at a time, router-wide. Starting
//! it allocates each worker a pool of [`CAPTURE_FRAMES_PER_WORKER`] buffers of the snap length
//! and publishes it with `arc-swap`; a worker loads it once per loop iteration (nothing else
//! happens when no capture runs). For each frame the capture wants, the worker takes a free
//! buffer, copies the frame's first bytes and queues the buffer for the [`CaptureSession`], which
//! copies it out and gives it back. A worker that finds no free buffer (the session reads too
//! slowly) counts the frame lost and goes on: forwarding never waits for a capture, and the
//! worker allocates, frees and locks nothing.
//!
//! Received frames are copied as they arrived, before the pipeline rewrites them in place; sent
//! frames as handed to the port, after the rewrite, whatever made them (forwarded packets, ICMP
//! errors, fragments, frames of the slow path).
//!
//! Stopping (dropping the session) unpublishes the capture and frees its buffers on the control
//! side. A worker in mid-iteration may still hold the capture, so the hub keeps it for
//! [`crate::retire::RETIRE_AFTER`] and frees what remains of it itself, at the next start or
//! stop: a worker never frees it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwapOption, Guard};
use crossbeam_channel::{Receiver, Select, Sender, bounded};
use ipnet::IpNet;

use crate::counters::Counter;
use crate::io::PortIndex;
use crate::policy::nanos;
use crate::retire::Retired;
use crate::wire::{
    self, ETHERNET_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, IPV4_HEADER_LEN,
    IPV6_HEADER_LEN, PROTO_SCTP, PROTO_TCP, PROTO_UDP, VLAN_TAG_LEN,
};

/// Buffers each worker gets for a capture: frames copied and not yet read by the session.
pub const CAPTURE_FRAMES_PER_WORKER: usize = 1_024;

/// What a buffer is written with when the capture starts: not zero, so that the allocation is
/// written on the control side and the kernel does not map its pages at a worker's first copy.
const BUFFER_FILL: u8 = 0xa5;

/// Which frames of the port a capture takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureDirection {
    Received,
    Sent,
    Both,
}

impl CaptureDirection {
    fn includes(self, direction: FrameDirection) -> bool {
        matches!(
            (self, direction),
            (CaptureDirection::Both, _)
                | (CaptureDirection::Received, FrameDirection::Received)
                | (CaptureDirection::Sent, FrameDirection::Sent)
        )
    }
}

/// Whether a captured frame was received or sent on its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameDirection {
    Received,
    Sent,
}

/// Which frames a capture keeps: all conditions set must hold. With none set every frame is
/// kept, ARP and neighbour discovery included; with any set, only IP packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureFilter {
    /// The source or the destination address is in this prefix.
    pub host: Option<IpNet>,
    /// The IP protocol (for IPv6, the upper layer past the extension headers).
    pub protocol: Option<u8>,
    /// The TCP, UDP or SCTP source or destination port (later fragments have none).
    pub port: Option<u16>,
}

impl CaptureFilter {
    /// Whether the filter keeps `frame`, an Ethernet frame (untagged or with one 802.1Q tag).
    pub fn matches(&self, frame: &[u8]) -> bool {
        if *self == CaptureFilter::default() {
            return true;
        }
        let Some(fields) = IpFields::of_frame(frame) else {
            return false;
        };
        self.host
            .is_none_or(|net| net.contains(&fields.src) || net.contains(&fields.dst))
            && self
                .protocol
                .is_none_or(|protocol| fields.protocol == Some(protocol))
            && self.port.is_none_or(|port| {
                fields
                    .ports
                    .is_some_and(|(source, destination)| source == port || destination == port)
            })
    }
}

/// What a capture filter reads of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IpFields {
    src: IpAddr,
    dst: IpAddr,
    /// `None` when IPv6 extension headers run past the frame or are too many.
    protocol: Option<u8>,
    /// Source and destination ports of TCP, UDP and SCTP, when the frame holds them.
    ports: Option<(u16, u16)>,
}

fn be16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_be_bytes([
        *bytes.get(offset)?,
        *bytes.get(offset + 1)?,
    ]))
}

fn address<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset + N)?.try_into().ok()
}

impl IpFields {
    fn of_frame(frame: &[u8]) -> Option<IpFields> {
        let (ethertype, l3) = match be16(frame, 12)? {
            ETHERTYPE_VLAN => (be16(frame, 16)?, ETHERNET_HEADER_LEN + VLAN_TAG_LEN),
            ethertype => (ethertype, ETHERNET_HEADER_LEN),
        };
        let packet = frame.get(l3..)?;
        match ethertype {
            ETHERTYPE_IPV4 => IpFields::of_ipv4(packet),
            ETHERTYPE_IPV6 => IpFields::of_ipv6(packet),
            _ => None,
        }
    }

    fn of_ipv4(packet: &[u8]) -> Option<IpFields> {
        let first = *packet.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < IPV4_HEADER_LEN || packet.len() < header_len {
            return None;
        }
        let protocol = packet[wire::ipv4::PROTOCOL];
        let fragment_offset =
            be16(packet, wire::ipv4::FLAGS_FRAGMENT)? & wire::ipv4::FRAGMENT_OFFSET_MASK;
        Some(IpFields {
            src: IpAddr::V4(Ipv4Addr::from(address::<4>(packet, wire::ipv4::SOURCE)?)),
            dst: IpAddr::V4(Ipv4Addr::from(address::<4>(
                packet,
                wire::ipv4::DESTINATION,
            )?)),
            protocol: Some(protocol),
            ports: (fragment_offset == 0)
                .then(|| ports(packet, protocol, header_len))
                .flatten(),
        })
    }

    fn of_ipv6(packet: &[u8]) -> Option<IpFields> {
        if packet.len() < IPV6_HEADER_LEN || packet[0] >> 4 != 6 {
            return None;
        }
        let layers = wire::ipv6_layers(packet);
        let first_or_whole = layers
            .is_some_and(|layers| layers.fragment.is_none_or(|fragment| fragment.offset == 0));
        Some(IpFields {
            src: IpAddr::V6(Ipv6Addr::from(address::<16>(packet, wire::ipv6::SOURCE)?)),
            dst: IpAddr::V6(Ipv6Addr::from(address::<16>(
                packet,
                wire::ipv6::DESTINATION,
            )?)),
            protocol: layers.map(|layers| layers.protocol),
            ports: layers
                .filter(|_| first_or_whole)
                .and_then(|layers| ports(packet, layers.protocol, layers.offset)),
        })
    }
}

/// The ports of a TCP, UDP or SCTP header at `offset` of `packet` (all three start with them).
fn ports(packet: &[u8], protocol: u8, offset: usize) -> Option<(u16, u16)> {
    matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
        .then(|| Some((be16(packet, offset)?, be16(packet, offset + 2)?)))
        .flatten()
}

/// What to capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureSpec {
    pub port: PortIndex,
    pub direction: CaptureDirection,
    pub filter: CaptureFilter,
    /// Bytes kept of each frame, at most a frame buffer's size; 0 keeps whole frames.
    pub snap_len: usize,
}

/// A frame a capture kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Nanoseconds since the router's epoch: the start of the loop iteration that received or
    /// sent the frame.
    pub time_ns: u64,
    pub port: PortIndex,
    pub direction: FrameDirection,
    /// The whole frame's length.
    pub original_len: u32,
    /// Its first bytes, up to the snap length.
    pub data: Vec<u8>,
}

/// Why a capture was not started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    #[error("a capture already runs (on port {port}); only one runs at a time")]
    AlreadyRunning { port: PortIndex },
    #[error("no port {port}: the router has {port_count}")]
    NoSuchPort { port: PortIndex, port_count: usize },
    #[error("no worker to capture on")]
    NoWorkers,
}

/// One copied frame in a buffer of a worker's pool.
#[derive(Debug)]
struct CaptureBuffer {
    time_ns: u64,
    port: PortIndex,
    direction: FrameDirection,
    original_len: u32,
    /// Bytes of `data` in use.
    len: usize,
    data: Box<[u8]>,
}

/// A bounded queue of buffers whose two ends live together, so it never disconnects.
#[derive(Debug)]
struct BufferQueue {
    sender: Sender<CaptureBuffer>,
    receiver: Receiver<CaptureBuffer>,
}

impl BufferQueue {
    fn new() -> BufferQueue {
        let (sender, receiver) = bounded(CAPTURE_FRAMES_PER_WORKER);
        BufferQueue { sender, receiver }
    }

    /// Queues `buffer`. Both queues of a pool have room for all its buffers, so this never
    /// fails (were it to, the buffer would be freed here).
    fn put(&self, buffer: CaptureBuffer) {
        let _ = self.sender.try_send(buffer);
    }

    fn take(&self) -> Option<CaptureBuffer> {
        self.receiver.try_recv().ok()
    }
}

/// One worker's buffers for a capture.
#[derive(Debug)]
struct CapturePool {
    free: BufferQueue,
    filled: BufferQueue,
    /// Frames the worker could not copy for want of a free buffer; the worker writes it.
    lost: Counter,
}

impl CapturePool {
    fn new(snap_len: usize) -> CapturePool {
        let pool = CapturePool {
            free: BufferQueue::new(),
            filled: BufferQueue::new(),
            lost: Counter::default(),
        };
        for _ in 0..CAPTURE_FRAMES_PER_WORKER {
            pool.free.put(CaptureBuffer {
                time_ns: 0,
                port: 0,
                direction: FrameDirection::Received,
                original_len: 0,
                len: 0,
                data: vec![BUFFER_FILL; snap_len].into_boxed_slice(),
            });
        }
        pool
    }

    /// Frees every buffer queued (control side).
    fn drain(&self) {
        while self.free.take().or_else(|| self.filled.take()).is_some() {}
    }
}

/// The running capture as workers see it.
#[derive(Debug)]
struct ActiveCapture {
    /// With the snap length in force.
    spec: CaptureSpec,
    /// One per worker, by worker number.
    pools: Box<[CapturePool]>,
}

#[derive(Debug, Default)]
struct HubState {
    workers: usize,
    /// The largest frame a worker handles, which bounds the snap length.
    frame_size_max: usize,
    retired: Retired<ActiveCapture>,
}

#[derive(Debug)]
struct HubShared {
    active: Arc<ArcSwapOption<ActiveCapture>>,
    state: Mutex<HubState>,
    port_count: usize,
    epoch: Instant,
}

impl HubShared {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Every change under the lock is a single assignment or push: a panic leaves it whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts captures; clones share the router's one capture.
#[derive(Clone, Debug)]
pub struct CaptureHub {
    shared: Arc<HubShared>,
}

impl CaptureHub {
    /// The hub of a router with `port_count` ports, timing frames from `epoch`.
    pub(crate) fn new(port_count: usize, epoch: Instant) -> CaptureHub {
        CaptureHub {
            shared: Arc::new(HubShared {
                active: Arc::default(),
                state: Mutex::default(),
                port_count,
                epoch,
            }),
        }
    }

    /// A new worker's view of the captures; workers are numbered in registration order.
    /// `frame_size` is the largest frame it handles.
    pub(crate) fn register_worker(&self, frame_size: usize) -> WorkerCapture {
        let mut state = self.shared.lock();
        let worker = state.workers;
        state.workers += 1;
        state.frame_size_max = state.frame_size_max.max(frame_size);
        WorkerCapture {
            active: self.shared.active.clone(),
            worker,
            burst: None,
            now_ns: 0,
        }
    }

    /// Starts capturing by `spec`, unless a capture runs. The buffers are allocated here: the
    /// workers of the router when it starts take part.
    pub fn start(&self, spec: CaptureSpec) -> Result<CaptureSession, CaptureError> {
        let port_count = self.shared.port_count;
        if usize::from(spec.port) >= port_count {
            return Err(CaptureError::NoSuchPort {
                port: spec.port,
                port_count,
            });
        }
        let mut state = self.shared.lock();
        state.retired.release_due(self.shared.epoch.elapsed());
        if let Some(running) = self.shared.active.load().as_ref() {
            return Err(CaptureError::AlreadyRunning {
                port: running.spec.port,
            });
        }
        if state.workers == 0 {
            return Err(CaptureError::NoWorkers);
        }
        let snap_len = match spec.snap_len {
            0 => state.frame_size_max,
            asked => asked.min(state.frame_size_max),
        };
        let capture = Arc::new(ActiveCapture {
            spec: CaptureSpec { snap_len, ..spec },
            pools: (0..state.workers)
                .map(|_| CapturePool::new(snap_len))
                .collect(),
        });
        self.shared.active.store(Some(capture.clone()));
        Ok(CaptureSession {
            hub: self.shared.clone(),
            capture,
            next_worker: 0,
        })
    }
}

/// The control side's end of the running capture: frames as they come, without blocking. Each
/// worker's frames come in order; frames of different workers are interleaved (their times
/// tell the order). Dropping it stops the capture.
#[derive(Debug)]
pub struct CaptureSession {
    hub: Arc<HubShared>,
    capture: Arc<ActiveCapture>,
    /// Where the next read starts, so that no worker's frames wait behind another's.
    next_worker: usize,
}

impl CaptureSession {
    /// The capture in force (the snap length as bounded by the frame size).
    pub fn spec(&self) -> &CaptureSpec {
        &self.capture.spec
    }

    /// The next captured frame, if one is waiting.
    pub fn try_next(&mut self) -> Option<CapturedFrame> {
        let pools = &self.capture.pools;
        for step in 0..pools.len() {
            let worker = (self.next_worker + step) % pools.len();
            let pool = &pools[worker];
            if let Some(buffer) = pool.filled.take() {
                self.next_worker = worker + 1;
                let frame = CapturedFrame {
                    time_ns: buffer.time_ns,
                    port: buffer.port,
                    direction: buffer.direction,
                    original_len: buffer.original_len,
                    data: buffer.data[..buffer.len].to_vec(),
                };
                pool.free.put(buffer);
                return Some(frame);
            }
        }
        None
    }

    /// The next captured frame, waiting up to `timeout` for one.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<CapturedFrame> {
        if let Some(frame) = self.try_next() {
            return Some(frame);
        }
        let mut select = Select::new();
        for pool in &self.capture.pools {
            select.recv(&pool.filled.receiver);
        }
        select.ready_timeout(timeout).ok()?;
        self.try_next()
    }

    /// Frames the workers could not copy because every buffer was taken.
    pub fn frames_lost(&self) -> u64 {
        self.capture.pools.iter().map(|pool| pool.lost.get()).sum()
    }

    /// Stops the capture (as dropping the session does).
    pub fn stop(self) {}
}

impl Drop for CaptureSession {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        // The running capture is this one: one runs at a time and stops only here.
        self.hub.active.store(None);
        let now = self.hub.epoch.elapsed();
        state.retired.hold(self.capture.clone(), now);
        for pool in &self.capture.pools {
            pool.drain();
        }
        state.retired.release_due(now);
    }
}

// The control side uses these from its own threads.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<CaptureHub>();
    send_and_sync::<CaptureSession>();
};

/// One worker's view of the captures: loaded once per loop iteration.
pub struct WorkerCapture {
    active: Arc<ArcSwapOption<ActiveCapture>>,
    worker: usize,
    /// The capture running during this loop iteration; `None` between iterations and when
    /// none runs.
    burst: Option<Guard<Option<Arc<ActiveCapture>>>>,
    /// The iteration's time.
    now_ns: u64,
}

impl WorkerCapture {
    /// Loads the running capture for the loop iteration at `now`.
    #[inline]
    pub(crate) fn begin(&mut self, now: Duration) {
        let loaded = self.active.load();
        if loaded.is_some() {
            self.burst = Some(loaded);
            self.now_ns = nanos(now);
        }
    }

    /// Lets go of the capture at the end of the loop iteration.
    #[inline]
    pub(crate) fn end(&mut self) {
        self.burst = None;
    }

    fn running(&self) -> Option<&ActiveCapture> {
        self.burst.as_ref()?.as_deref()
    }

    /// Whether the running capture takes frames of `port` in `direction`.
    #[inline]
    pub(crate) fn wants(&self, port: PortIndex, direction: FrameDirection) -> bool {
        self.running().is_some_and(|capture| {
            capture.spec.port == port && capture.spec.direction.includes(direction)
        })
    }

    /// A copy of `frame`, which [`WorkerCapture::wants`], if the filter keeps it and a buffer is
    /// free (else the frame is counted lost). Hand it to [`WorkerCapture::deliver`] or
    /// [`WorkerCapture::give_back`] in the same loop iteration.
    pub(crate) fn copy(
        &self,
        port: PortIndex,
        direction: FrameDirection,
        frame: &[u8],
    ) -> Option<CaptureCopy> {
        let capture = self.running()?;
        if !capture.spec.filter.matches(frame) {
            return None;
        }
        let pool = capture.pools.get(self.worker)?;
        let Some(mut buffer) = pool.free.take() else {
            pool.lost.add(1);
            return None;
        };
        let kept = frame.len().min(buffer.data.len());
        buffer.data[..kept].copy_from_slice(&frame[..kept]);
        buffer.len = kept;
        buffer.time_ns = self.now_ns;
        buffer.port = port;
        buffer.direction = direction;
        buffer.original_len = frame.len() as u32;
        Some(CaptureCopy(buffer))
    }

    /// Queues a copy for the session.
    pub(crate) fn deliver(&self, copy: CaptureCopy) {
        if let Some(pool) = self.pool() {
            pool.filled.put(copy.0);
        }
    }

    /// Returns an unused copy (its frame was not sent after all) to the free buffers.
    pub(crate) fn give_back(&self, copy: CaptureCopy) {
        if let Some(pool) = self.pool() {
            pool.free.put(copy.0);
        }
    }

    fn pool(&self) -> Option<&CapturePool> {
        self.running()?.pools.get(self.worker)
    }
}

/// A frame copied by a worker, on its way to the session.
pub(crate) struct CaptureCopy(CaptureBuffer);

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn udp_v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut frame, &[0; 8])
            .expect("build");
        frame
    }

    fn tcp_v6_tagged(sport: u16, dport: u16) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(etherparse::VlanId::try_new(7).expect("vlan"))
            .ipv6(
                "2001:2::1".parse::<Ipv6Addr>().expect("a").octets(),
                "2001:2::2".parse::<Ipv6Addr>().expect("a").octets(),
                64,
            )
            .tcp(sport, dport, 1, 1024)
            .write(&mut frame, &[0; 4])
            .expect("build");
        frame
    }

    fn filter(host: Option<&str>, protocol: Option<u8>, port: Option<u16>) -> CaptureFilter {
        CaptureFilter {
            host: host.map(|prefix| prefix.parse().expect("prefix")),
            protocol,
            port,
        }
    }

    #[test]
    fn an_empty_filter_keeps_every_frame() {
        let arp = [0u8; 42];
        assert!(CaptureFilter::default().matches(&arp));
        assert!(CaptureFilter::default().matches(&[]));
        assert!(!filter(None, Some(PROTO_UDP), None).matches(&arp));
    }

    #[test]
    fn host_matches_source_or_destination_in_the_prefix() {
        let frame = udp_v4([198, 18, 1, 2], [198, 19, 0, 1], 1000, 53);
        assert!(filter(Some("198.18.1.0/24"), None, None).matches(&frame));
        assert!(filter(Some("198.19.0.1/32"), None, None).matches(&frame));
        assert!(!filter(Some("198.18.2.0/24"), None, None).matches(&frame));
        assert!(!filter(Some("2001:2::/48"), None, None).matches(&frame));
    }

    #[test]
    fn protocol_and_port_match_either_port_of_tcp_udp_or_sctp() {
        let frame = udp_v4([198, 18, 1, 2], [198, 19, 0, 1], 1000, 53);
        assert!(filter(None, Some(PROTO_UDP), Some(53)).matches(&frame));
        assert!(filter(None, None, Some(1000)).matches(&frame));
        assert!(!filter(None, Some(PROTO_TCP), None).matches(&frame));
        assert!(!filter(None, None, Some(54)).matches(&frame));
        let mut sctp = frame.clone();
        sctp[14 + wire::ipv4::PROTOCOL] = PROTO_SCTP;
        assert!(filter(None, Some(PROTO_SCTP), Some(53)).matches(&sctp));
    }

    #[test]
    fn a_tagged_ipv6_frame_is_read_past_its_tag() {
        let frame = tcp_v6_tagged(40000, 443);
        assert!(filter(Some("2001:2::/48"), Some(PROTO_TCP), Some(443)).matches(&frame));
        assert!(!filter(Some("2001:2::/48"), Some(PROTO_TCP), Some(80)).matches(&frame));
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut frame = udp_v4([198, 18, 1, 2], [198, 19, 0, 1], 1000, 53);
        frame[14 + wire::ipv4::FLAGS_FRAGMENT + 1] = 1;
        assert!(!filter(None, None, Some(53)).matches(&frame));
        assert!(filter(None, Some(PROTO_UDP), None).matches(&frame));
    }

    #[test]
    fn truncated_frames_match_no_condition() {
        let frame = udp_v4([198, 18, 1, 2], [198, 19, 0, 1], 1000, 53);
        for len in 0..14 + 20 + 4 {
            assert!(
                !filter(None, None, Some(53)).matches(&frame[..len]),
                "{len} bytes"
            );
        }
        assert!(filter(Some("198.18.1.2/32"), None, None).matches(&frame[..14 + 20]));
    }
}
