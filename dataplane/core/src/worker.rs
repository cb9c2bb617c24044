//! The worker loop: poll every port in bursts, run the pipeline, act on each verdict, flush.
//!
//! One worker per core, pinned by the caller. A worker owns its [`PacketIo`] (one frame pool for
//! all its ports), its counters, its queue of packets waiting for a neighbour and its ICMP error
//! budget. It reads the FIB and the neighbour index once per burst and allocates nothing after
//! start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::capture::{CaptureCopy, FrameDirection, WorkerCapture};
use crate::counters::{DropReason, WorkerCounters};
use crate::fib::SharedFib;
use crate::flow_snapshot::WorkerFlowSnapshots;
use crate::handoff::{FlowSteering, WorkerHandoff};
use crate::icmp::{self, ErrorLink, ErrorReply};
use crate::iface::IfIndex;
use crate::io::{FrameId, Packet, PacketIo, PortIndex, TransmitRefused};
use crate::mirror::{self, CopiedFrame, CopyLost, MirrorDestination, TunnelLink, WorkerMirror};
use crate::neigh::{NeighbourKey, NeighbourTable, Resolution};
use crate::overlay::SharedOverlay;
use crate::pipeline::{BurstView, Pipeline, PipelineMode, Verdict};
use crate::policy::{PolicyCounters, PolicyState, RuleCounters, SharedPolicy};
use crate::ratelimit::TokenBucket;
use crate::slowpath::{HostFrame, Outbound, ToSlowPath};
use crate::warm::{self, WARM_FLOWS_MIN};
use crate::wire::{self, IPV4_HEADER_LEN};

/// Largest burst taken from one RX ring.
pub const BURST_MAX: usize = 64;
/// Frames taken from the slow path per loop iteration.
const OUTBOUND_PER_ITERATION: usize = 32;
/// Most fragments made of one IPv4 packet: a 4096-byte frame at the smallest MTU (68) needs 85.
const FRAGMENTS_MAX: usize = 96;

/// Sets total length, fragment offset and More Fragments of an IPv4 header (keeping DF clear, as
/// only packets without it are fragmented) and recomputes its checksum.
fn write_fragment_header(header: &mut [u8], total_len: usize, offset: usize, more: bool) {
    wire::write_u16(header, wire::ipv4::TOTAL_LENGTH, total_len as u16);
    let flags = if more {
        wire::ipv4::FLAG_MORE_FRAGMENTS
    } else {
        0
    };
    wire::write_u16(
        header,
        wire::ipv4::FLAGS_FRAGMENT,
        flags | (offset / 8) as u16,
    );
    wire::write_u16(header, wire::ipv4::CHECKSUM, 0);
    let sum = crate::checksum::checksum(header);
    wire::write_u16(header, wire::ipv4::CHECKSUM, sum);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Packets per RX burst, 1..=[`BURST_MAX`].
    pub burst_size: usize,
    /// Empty iterations before the worker blocks in [`PacketIo::wait`].
    pub idle_spin_iterations: u32,
    /// Longest block when idle.
    pub idle_wait: Duration,
    /// Packets queued per unresolved neighbour (Linux: 3).
    pub pending_per_neighbour: usize,
    /// Packets queued for all unresolved neighbours together.
    pub pending_max: usize,
    /// How long a packet may wait for its neighbour.
    pub pending_timeout: Duration,
    pub icmp_errors_per_second: u64,
    pub icmp_errors_burst: u64,
    /// Frames for the router itself handed to the slow path, per second and in a burst.
    pub punts_per_second: u64,
    pub punt_burst: u64,
    /// A router (the default), or a flow meter over a replayed capture.
    pub pipeline: PipelineMode,
    /// How both directions of a flow reach one worker when there are several.
    pub flow_steering: FlowSteering,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            burst_size: BURST_MAX,
            idle_spin_iterations: 64,
            idle_wait: Duration::from_millis(1),
            pending_per_neighbour: 3,
            pending_max: 256,
            pending_timeout: Duration::from_secs(3),
            icmp_errors_per_second: 1000,
            icmp_errors_burst: 50,
            punts_per_second: 10_000,
            punt_burst: 1_000,
            pipeline: PipelineMode::Route,
            flow_steering: FlowSteering::Handoff,
        }
    }
}

/// A packet waiting for its next hop's address.
#[derive(Clone, Copy, Debug)]
struct Pending {
    key: NeighbourKey,
    packet: Packet,
    egress: PortIndex,
    /// The port it came in on, charged with the drop if resolution fails.
    ingress: PortIndex,
    /// Fragment to this MTU when sending (an IPv4 packet larger than the egress MTU).
    fragment_mtu: Option<u16>,
    since: Duration,
}

/// The channels between a worker and the slow path.
pub struct SlowPathLink {
    pub to_slow_path: Sender<ToSlowPath>,
    pub outbound: Receiver<Outbound>,
}

pub struct Worker<P: PacketIo> {
    io: P,
    pipeline: Pipeline,
    fib: SharedFib,
    neighbours: Arc<NeighbourTable>,
    counters: Arc<WorkerCounters>,
    config: WorkerConfig,
    link: SlowPathLink,
    pending: Vec<Pending>,
    icmp_budget: TokenBucket,
    /// Frames for the router itself that the slow path is offered (a flood of ARP or of
    /// link-scope multicast must not starve it).
    punt_budget: TokenBucket,
    /// Copy of an original packet while its ICMP error is written over the same frame.
    quote: Box<[u8]>,
    /// A fragment's payload on its way from the original frame to a fresh one.
    scratch: Box<[u8]>,
    idle_iterations: u32,
    policy: WorkerPolicy,
    capture: WorkerCapture,
    /// Packets to and from the workers that own their flows (`None`: one worker, or the NIC
    /// steers).
    handoff: Option<WorkerHandoff>,
    /// Copies of packets for analyzers.
    mirror: WorkerMirror,
    /// The router's clock origin, shared with the slow path and the control side.
    epoch: Instant,
}

/// The segmentation policy as one worker sees it.
pub struct WorkerPolicy {
    pub shared: SharedPolicy,
    /// The generation this worker uses, read by the publisher to retire old sets.
    pub seen: Arc<AtomicU32>,
    pub overlay: SharedOverlay,
    pub state: PolicyState,
    /// Requests for copies of the flow table.
    pub snapshots: WorkerFlowSnapshots,
}

impl<P: PacketIo> Worker<P> {
    #[expect(
        clippy::too_many_arguments,
        reason = "built in one place, by Router::worker"
    )]
    pub fn new(
        io: P,
        pipeline: Pipeline,
        fib: SharedFib,
        neighbours: Arc<NeighbourTable>,
        config: WorkerConfig,
        link: SlowPathLink,
        policy: WorkerPolicy,
        capture: WorkerCapture,
        handoff: Option<WorkerHandoff>,
        mirror: WorkerMirror,
        epoch: Instant,
    ) -> Worker<P> {
        let counters = Arc::new(WorkerCounters::new(io.port_count()));
        let frame_capacity = io.frame_capacity();
        let config = WorkerConfig {
            burst_size: config.burst_size.clamp(1, BURST_MAX),
            ..config
        };
        Worker {
            io,
            pipeline,
            fib,
            neighbours,
            counters,
            pending: Vec::with_capacity(config.pending_max),
            icmp_budget: TokenBucket::new(config.icmp_errors_per_second, config.icmp_errors_burst),
            punt_budget: TokenBucket::new(config.punts_per_second, config.punt_burst),
            quote: vec![0u8; icmp::ERROR_FRAME_MAX].into_boxed_slice(),
            scratch: vec![0u8; frame_capacity].into_boxed_slice(),
            config,
            link,
            idle_iterations: 0,
            policy,
            capture,
            handoff,
            mirror,
            epoch,
        }
    }

    /// This worker's per-rule counters and policy counters.
    pub fn policy_counters(&self) -> (Arc<RuleCounters>, Arc<PolicyCounters>) {
        (
            self.policy.state.counters.clone(),
            self.policy.state.policy_counters.clone(),
        )
    }

    /// The generation of the rule set the last burst used (0: none).
    pub fn policy_generation(&self) -> u32 {
        self.policy.seen.load(Ordering::Acquire)
    }

    /// Flows in this worker's table.
    pub fn flow_count(&self) -> usize {
        self.policy.state.flow_count()
    }

    pub fn counters(&self) -> Arc<WorkerCounters> {
        self.counters.clone()
    }

    pub fn io(&self) -> &P {
        &self.io
    }

    pub fn io_mut(&mut self) -> &mut P {
        &mut self.io
    }

    /// Packets waiting for a neighbour.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Polls until `stop` is set, blocking briefly when idle; then hands every flow's record to
    /// the exporter.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let processed = self.poll_once(self.epoch.elapsed());
            if processed == 0
                && self.pending.is_empty()
                && self.link.outbound.is_empty()
                && self.handoff.as_ref().is_none_or(WorkerHandoff::is_empty)
            {
                self.idle_iterations = self.idle_iterations.saturating_add(1);
                if self.idle_iterations > self.config.idle_spin_iterations {
                    self.counters.idle_waits.add(1);
                    self.io.wait(self.config.idle_wait);
                }
            } else {
                self.idle_iterations = 0;
            }
        }
        self.end_flow_records();
    }

    /// Ends every flow's record and hands the records to the exporter with
    /// [`EndReason::ForcedEnd`](crate::telemetry::EndReason::ForcedEnd), as many as its queue
    /// takes; the flows stay. Walks the whole table: for a worker that stops.
    pub fn end_flow_records(&mut self) {
        self.policy.state.end_records();
    }

    /// One iteration at time `now`: every port's burst, waiting packets, slow-path frames, flush.
    /// Returns the number of packets received.
    pub fn poll_once(&mut self, now: Duration) -> usize {
        self.io.reclaim_and_refill();
        self.capture.begin(now);
        self.mirror.begin_iteration();
        let fib = self.fib.load();
        let neighbour_index = self.neighbours.index();
        // A guard, not a counted reference: the publisher keeps replaced sets alive until every
        // worker has moved on, so no worker frees one.
        let policy = self.policy.shared.load();
        self.policy.seen.store(
            policy.as_ref().map_or(0, |p| p.generation),
            Ordering::Release,
        );
        let overlay = self.policy.overlay.load();
        let view = BurstView {
            fib: &fib,
            neighbours: &neighbour_index,
            policy: policy.as_deref(),
            overlay: &overlay,
            now,
        };
        let mut burst = [Packet {
            frame: FrameId(0),
            len: 0,
        }; BURST_MAX];
        let uses_flows =
            view.policy.is_some() || !view.overlay.is_empty() || self.policy.state.tracks_flows();
        // Only the flow table needs both directions of a flow on one worker.
        let steer = self.handoff.is_some() && uses_flows;
        let warm = uses_flows && self.policy.state.flow_count() >= WARM_FLOWS_MIN;
        let mut received = 0;
        for port in 0..self.io.port_count() as PortIndex {
            let count = self.io.receive(port, &mut burst[..self.config.burst_size]);
            if count == 0 {
                continue;
            }
            self.counters.bursts.add(1);
            let port_counters = &self.counters.ports[usize::from(port)];
            port_counters.rx_packets.add(count as u64);
            port_counters
                .rx_bytes
                .add(burst[..count].iter().map(|p| u64::from(p.len)).sum());
            if warm {
                let mut tuples = [None; BURST_MAX];
                for (tuple, packet) in tuples.iter_mut().zip(&burst[..count]) {
                    *tuple =
                        warm::frame_tuple(&self.io.buffer(packet.frame)[..packet.len as usize]);
                }
                self.policy.state.warm(&tuples[..count]);
            }
            for &packet in &burst[..count] {
                // As it arrived: the pipeline rewrites it in place.
                if let Some(copy) = self.capture_frame(port, FrameDirection::Received, packet) {
                    self.capture.deliver(copy);
                }
                if steer && self.hand_off(port, packet) {
                    continue;
                }
                self.process_and_act(&view, port, packet, now);
            }
            received += count;
        }
        // What this burst handed to other workers leaves now, what they handed here is taken.
        if let Some(handoff) = &mut self.handoff {
            handoff.flush();
        }
        received += self.take_handed(&view, now);
        if !self.pending.is_empty() {
            self.service_pending(&view, now);
        }
        self.policy.state.expire(now);
        self.policy.snapshots.step(self.policy.state.flows());
        self.policy
            .state
            .policy_counters
            .flows_in_table
            .set(self.policy.state.flow_count() as u64);
        self.send_outbound();
        self.io.flush();
        self.capture.end();
        received
    }

    /// Hands `packet`, received on `port`, to the worker that owns its flow if that is another
    /// one; true when the packet left this worker (handed off, or dropped for want of room).
    #[inline]
    fn hand_off(&mut self, port: PortIndex, packet: Packet) -> bool {
        let Some(handoff) = &mut self.handoff else {
            return false;
        };
        let frame = &self.io.buffer(packet.frame)[..packet.len as usize];
        let Some(owner) = handoff.other_owner(frame) else {
            return false;
        };
        if handoff.send(owner, port, frame) {
            self.counters.handed_off.add(1);
        } else {
            self.counters
                .count_drop(usize::from(port), DropReason::HandoffFull);
        }
        self.io.release(packet.frame);
        true
    }

    /// Processes the packets other workers handed to this one, whole batches until at least a
    /// burst per port is taken; returns how many packets it took.
    fn take_handed(&mut self, view: &BurstView<'_>, now: Duration) -> usize {
        let limit = self.config.burst_size * self.io.port_count();
        let mut taken = 0;
        while taken < limit {
            let Some(batch) = self.handoff.as_ref().and_then(WorkerHandoff::receive) else {
                break;
            };
            for index in 0..batch.len() {
                let Some((port, bytes)) = batch.packet(index) else {
                    break;
                };
                let Some(frame) = self.io.allocate() else {
                    self.counters
                        .count_drop(usize::from(port), DropReason::NoFreeFrame);
                    continue;
                };
                self.io.buffer(frame)[..bytes.len()].copy_from_slice(bytes);
                self.counters.handed_in.add(1);
                let packet = Packet {
                    frame,
                    len: bytes.len() as u32,
                };
                self.process_and_act(view, port, packet, now);
            }
            taken += batch.len();
            if let Some(handoff) = &self.handoff {
                handoff.give_back(batch);
            }
        }
        taken
    }

    /// Runs `packet`, received on `port`, through the pipeline and acts on the verdict, copying
    /// it for the mirror session the policy selects.
    #[inline]
    fn process_and_act(
        &mut self,
        view: &BurstView<'_>,
        port: PortIndex,
        packet: Packet,
        now: Duration,
    ) {
        let len = packet.len as usize;
        // The pipeline rewrites the frame in place: a session that copies frames as received
        // needs them kept first, as long as some rule mirrors.
        let mirrors =
            view.overlay.mirrors() || view.policy.is_some_and(|policy| policy.rules.mirrors);
        if self.mirror.keeps_received(mirrors) {
            self.mirror.stage(&self.io.buffer(packet.frame)[..len]);
        }
        let verdict = self.pipeline.process(
            view,
            &mut self.policy.state,
            self.io.buffer(packet.frame),
            len,
            port,
        );
        if let Some(session) = self.policy.state.take_mirror() {
            self.mirror_packet(view, session, port, packet, verdict, now);
        }
        self.act(port, packet, verdict, now);
    }

    /// Copies a packet `session` selected, once sampled in: as received (staged by
    /// [`Worker::process_and_act`]) and as it will be sent, per the session's direction.
    fn mirror_packet(
        &mut self,
        view: &BurstView<'_>,
        session: u16,
        port: PortIndex,
        packet: Packet,
        verdict: Verdict,
        now: Duration,
    ) {
        let Some(direction) = self.mirror.session(session).map(|s| s.direction) else {
            return;
        };
        if !self.mirror.sample(session) {
            return;
        }
        if direction.includes_received() {
            self.send_staged_copy(view, session, port, now);
        }
        if direction.includes_sent()
            && let Verdict::Forward { port: egress, len } = verdict
        {
            self.mirror.stage(&self.io.buffer(packet.frame)[..len]);
            self.send_staged_copy(view, session, egress, now);
        }
    }

    /// Sends the staged frame (received on or sent by `frame_port`) to `session`'s destination;
    /// a copy that cannot go is counted and its frame returns to the pool.
    fn send_staged_copy(
        &mut self,
        view: &BurstView<'_>,
        session: u16,
        frame_port: PortIndex,
        now: Duration,
    ) {
        if !self.mirror.admit(session, now) {
            return;
        }
        let sequence = self.mirror.next_sequence(session);
        let Some(frame) = self.io.allocate() else {
            self.mirror.lost(session, CopyLost::NoFreeFrame);
            return;
        };
        let Some(config) = self.mirror.session(session) else {
            self.io.release(frame);
            return;
        };
        let staged = self.mirror.staged();
        let written = match config.destination {
            MirrorDestination::Port(egress) => {
                let buf = self.io.buffer(frame);
                let len = config.copied_len(staged.len(), buf.len());
                buf[..len].copy_from_slice(&staged[..len]);
                Ok((egress, len))
            }
            MirrorDestination::Remote {
                tunnel,
                source,
                remote,
            } => match self.pipeline.route_to(view, remote) {
                None => Err(CopyLost::NoRoute),
                Some((iface, key, resolution)) => match resolution {
                    Some(Resolution::Reachable(dst_mac)) => {
                        let link = TunnelLink {
                            dst_mac,
                            src_mac: iface.mac,
                            vlan: iface.vlan,
                            mtu: iface.mtu,
                        };
                        mirror::write_tunnelled(
                            self.io.buffer(frame),
                            link,
                            config,
                            (tunnel, source, remote),
                            sequence,
                            CopiedFrame {
                                bytes: staged,
                                port: frame_port,
                            },
                        )
                        .map(|len| (iface.port, len))
                        .ok_or(CopyLost::TooSmall)
                    }
                    _ => {
                        // Resolved for the next copy; this one is lost.
                        let _ = self.link.to_slow_path.try_send(ToSlowPath::Resolve(key));
                        Err(CopyLost::Unresolved)
                    }
                },
            },
        };
        let written = written.and_then(|(egress, len)| {
            if self.mirror.link_up(egress) {
                Ok((egress, len))
            } else {
                Err(CopyLost::LinkDown)
            }
        });
        let (egress, len) = match written {
            Ok(written) => written,
            Err(reason) => {
                self.mirror.lost(session, reason);
                self.io.release(frame);
                return;
            }
        };
        let copy = Packet {
            frame,
            len: len as u32,
        };
        match self.io.transmit(egress, copy) {
            Ok(()) => {
                self.mirror.sent(session, len);
                let counters = &self.counters.ports[usize::from(egress)];
                counters.tx_packets.add(1);
                counters.tx_bytes.add(len as u64);
            }
            Err(TransmitRefused(copy)) => {
                self.mirror.lost(session, CopyLost::TransmitRingFull);
                self.io.release(copy.frame);
            }
        }
    }

    /// A copy of `packet` if the running capture takes it, to deliver or give back.
    fn capture_frame(
        &mut self,
        port: PortIndex,
        direction: FrameDirection,
        packet: Packet,
    ) -> Option<CaptureCopy> {
        if !self.capture.wants(port, direction) {
            return None;
        }
        let frame = self.io.buffer(packet.frame).get(..packet.len as usize)?;
        self.capture.copy(port, direction, frame)
    }

    fn act(&mut self, port: PortIndex, packet: Packet, verdict: Verdict, now: Duration) {
        match verdict {
            Verdict::Forward { port: egress, len } => self.transmit(
                port,
                egress,
                Packet {
                    frame: packet.frame,
                    len: len as u32,
                },
            ),
            Verdict::Drop(reason) => {
                self.counters.count_drop(usize::from(port), reason);
                self.io.release(packet.frame);
            }
            Verdict::ToHost { iface, start, len } => {
                self.counters.ports[usize::from(port)].to_host.add(1);
                if !self.punt_budget.try_take(now) {
                    self.counters
                        .count_drop(usize::from(port), DropReason::PuntRateLimited);
                    self.io.release(packet.frame);
                    return;
                }
                let buf = self.io.buffer(packet.frame);
                match HostFrame::copy_from(&buf[start..start + len]) {
                    None => self
                        .counters
                        .count_drop(usize::from(port), DropReason::PuntTooLarge),
                    Some(frame) => {
                        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self
                            .link
                            .to_slow_path
                            .try_send(ToSlowPath::Frame { iface, frame })
                        {
                            self.counters
                                .count_drop(usize::from(port), DropReason::PuntQueueFull);
                        }
                    }
                }
                self.io.release(packet.frame);
            }
            Verdict::Error {
                reason,
                error,
                iface,
                ip_start,
                ip_len,
            } => {
                self.counters.count_drop(usize::from(port), reason);
                self.send_error(
                    port,
                    packet.frame,
                    error,
                    iface,
                    ip_start..ip_start + ip_len,
                    now,
                );
            }
            Verdict::AwaitNeighbour {
                port: egress,
                len,
                key,
            } => self.park(Pending {
                key,
                packet: Packet {
                    frame: packet.frame,
                    len: len as u32,
                },
                egress,
                ingress: port,
                fragment_mtu: None,
                since: now,
            }),
            Verdict::Fragment {
                port: egress,
                len,
                mtu,
                waiting_for,
            } => {
                let packet = Packet {
                    frame: packet.frame,
                    len: len as u32,
                };
                match waiting_for {
                    None => self.transmit_fragments(port, egress, packet, mtu),
                    Some(key) => self.park(Pending {
                        key,
                        packet,
                        egress,
                        ingress: port,
                        fragment_mtu: Some(mtu),
                        since: now,
                    }),
                }
            }
        }
    }

    fn transmit(&mut self, ingress_port: PortIndex, egress: PortIndex, packet: Packet) {
        // Copied while the frame is still the worker's; kept only if the port takes it.
        let copy = self.capture_frame(egress, FrameDirection::Sent, packet);
        match self.io.transmit(egress, packet) {
            Ok(()) => {
                let counters = &self.counters.ports[usize::from(egress)];
                counters.tx_packets.add(1);
                counters.tx_bytes.add(u64::from(packet.len));
                if let Some(copy) = copy {
                    self.capture.deliver(copy);
                }
            }
            Err(TransmitRefused(packet)) => {
                if let Some(copy) = copy {
                    self.capture.give_back(copy);
                }
                self.counters
                    .count_drop(usize::from(ingress_port), DropReason::TransmitRingFull);
                self.io.release(packet.frame);
            }
        }
    }

    /// Sends an IPv4 packet (Ethernet header written, TTL decremented) as fragments of at most
    /// `mtu` bytes. The original frame becomes the first fragment and keeps the IP options; the
    /// others get fresh frames with the base header only (RFC 791: options without the copy flag
    /// belong in the first fragment; copied options are not repeated here).
    fn transmit_fragments(
        &mut self,
        ingress: PortIndex,
        egress: PortIndex,
        packet: Packet,
        mtu: u16,
    ) {
        let buf = self.io.buffer(packet.frame);
        let l2 = if wire::read_u16(buf, 12) == wire::ETHERTYPE_VLAN {
            18
        } else {
            14
        };
        let header_len = usize::from(buf[l2] & 0x0f) * 4;
        let total_len = usize::from(wire::read_u16(buf, l2 + wire::ipv4::TOTAL_LENGTH));
        let fragment_word = wire::read_u16(buf, l2 + wire::ipv4::FLAGS_FRAGMENT);
        let base_offset = usize::from(fragment_word & wire::ipv4::FRAGMENT_OFFSET_MASK) * 8;
        let last_has_more = fragment_word & wire::ipv4::FLAG_MORE_FRAGMENTS != 0;
        let mtu = usize::from(mtu);
        // Fragment payloads are multiples of 8 bytes but for the last (the MTU is at least 68).
        let first_payload = mtu.saturating_sub(header_len) / 8 * 8;
        let other_payload = mtu.saturating_sub(IPV4_HEADER_LEN) / 8 * 8;
        let payload_len = total_len.saturating_sub(header_len);
        let fragments = 1 + payload_len
            .saturating_sub(first_payload)
            .div_ceil(other_payload.max(8));
        if first_payload == 0 || fragments > FRAGMENTS_MAX || l2 + total_len > buf.len() {
            self.counters
                .count_drop(usize::from(ingress), DropReason::FragmentsTooMany);
            self.io.release(packet.frame);
            return;
        }
        // The base headers every later fragment starts from.
        let mut headers = [0u8; wire::ETHERNET_HEADER_LEN + wire::VLAN_TAG_LEN + IPV4_HEADER_LEN];
        headers[..l2 + IPV4_HEADER_LEN].copy_from_slice(&buf[..l2 + IPV4_HEADER_LEN]);
        headers[l2] = 0x45;

        let mut later = [Packet {
            frame: FrameId(0),
            len: 0,
        }; FRAGMENTS_MAX];
        let mut later_count = 0;
        let mut position = first_payload;
        while position < payload_len {
            let size = other_payload.min(payload_len - position);
            let start = l2 + header_len + position;
            self.scratch[..size]
                .copy_from_slice(&self.io.buffer(packet.frame)[start..start + size]);
            let Some(frame) = self.io.allocate() else {
                self.counters
                    .count_drop(usize::from(ingress), DropReason::NoFreeFrame);
                break;
            };
            let more = position + size < payload_len || last_has_more;
            let fragment = self.io.buffer(frame);
            fragment[..l2 + IPV4_HEADER_LEN].copy_from_slice(&headers[..l2 + IPV4_HEADER_LEN]);
            fragment[l2 + IPV4_HEADER_LEN..l2 + IPV4_HEADER_LEN + size]
                .copy_from_slice(&self.scratch[..size]);
            write_fragment_header(
                &mut fragment[l2..l2 + IPV4_HEADER_LEN],
                IPV4_HEADER_LEN + size,
                base_offset + position,
                more,
            );
            later[later_count] = Packet {
                frame,
                len: (l2 + IPV4_HEADER_LEN + size) as u32,
            };
            later_count += 1;
            position += size;
        }
        let first = self.io.buffer(packet.frame);
        write_fragment_header(
            &mut first[l2..l2 + header_len],
            header_len + first_payload,
            base_offset,
            true,
        );
        self.transmit(
            ingress,
            egress,
            Packet {
                frame: packet.frame,
                len: (l2 + header_len + first_payload) as u32,
            },
        );
        for &fragment in &later[..later_count] {
            self.transmit(ingress, egress, fragment);
        }
    }

    /// Writes the ICMP error about the IP packet at `original` of `frame` over the same frame and
    /// sends it back through `iface` to the frame's sender, within the error budget; otherwise,
    /// or when no error may be sent about this packet, the frame is released.
    fn send_error(
        &mut self,
        port: PortIndex,
        frame: FrameId,
        error: ErrorReply,
        iface: IfIndex,
        original: std::ops::Range<usize>,
        now: Duration,
    ) {
        if !self.icmp_budget.try_take(now) {
            self.counters.icmp_errors_rate_limited.add(1);
            self.io.release(frame);
            return;
        }
        let Some(ingress) = self.pipeline.interfaces().get(iface) else {
            self.io.release(frame);
            return;
        };
        let buf = self.io.buffer(frame);
        let link = ErrorLink {
            dst_mac: [buf[6], buf[7], buf[8], buf[9], buf[10], buf[11]],
            src_mac: ingress.mac,
            vlan: ingress.vlan,
        };
        let quoted = original.len().min(self.quote.len());
        self.quote[..quoted].copy_from_slice(&buf[original.start..original.start + quoted]);
        let family_of = if self.quote[0] >> 4 == 4 {
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        };
        let egress = ingress.port;
        let written = ingress.source_address_for(family_of).and_then(|source| {
            icmp::write_error(
                self.io.buffer(frame),
                &self.quote[..quoted],
                error,
                link,
                source,
            )
        });
        match written {
            Some(len) => {
                self.counters.icmp_errors_sent.add(1);
                self.transmit(
                    port,
                    egress,
                    Packet {
                        frame,
                        len: len as u32,
                    },
                );
            }
            None => self.io.release(frame),
        }
    }

    fn park(&mut self, pending: Pending) {
        let key = pending.key;
        let queued_for_key = self.pending.iter().filter(|p| p.key == key).count();
        if queued_for_key == 0 {
            // The slow path creates the entry and solicits at once (a known entry costs it a
            // lookup). Asked even when the packet cannot wait, so that a full queue never
            // keeps a neighbour from being resolved; the next packet asks again if this is lost.
            if self
                .link
                .to_slow_path
                .try_send(ToSlowPath::Resolve(key))
                .is_err()
            {
                self.counters.resolve_requests_lost.add(1);
            }
        }
        if queued_for_key >= self.config.pending_per_neighbour
            || self.pending.len() >= self.config.pending_max
        {
            self.counters
                .count_drop(usize::from(pending.ingress), DropReason::NeighbourQueueFull);
            self.io.release(pending.packet.frame);
            return;
        }
        self.io.park(pending.packet.frame);
        self.pending.push(pending);
    }

    fn service_pending(&mut self, view: &BurstView<'_>, now: Duration) {
        let mut index = 0;
        while index < self.pending.len() {
            let entry = self.pending[index];
            let resolution = self.neighbours.lookup(view.neighbours, &entry.key);
            let expired = now.saturating_sub(entry.since) > self.config.pending_timeout;
            match resolution {
                Some(Resolution::Reachable(mac)) => {
                    self.pending.remove(index);
                    self.io.unpark(entry.packet.frame);
                    self.io.buffer(entry.packet.frame)[0..6].copy_from_slice(&mac);
                    match entry.fragment_mtu {
                        None => self.transmit(entry.ingress, entry.egress, entry.packet),
                        Some(mtu) => {
                            self.transmit_fragments(entry.ingress, entry.egress, entry.packet, mtu)
                        }
                    }
                }
                // Packets that arrive once the entry has failed get an ICMP host unreachable from
                // the pipeline; the few that were already waiting are dropped and counted.
                _ if expired || resolution == Some(Resolution::Failed) => {
                    self.pending.remove(index);
                    self.io.unpark(entry.packet.frame);
                    self.counters
                        .count_drop(usize::from(entry.ingress), DropReason::NeighbourFailed);
                    self.io.release(entry.packet.frame);
                }
                _ => index += 1,
            }
        }
    }

    fn send_outbound(&mut self) {
        for _ in 0..OUTBOUND_PER_ITERATION {
            let Ok(outbound) = self.link.outbound.try_recv() else {
                break;
            };
            let Some(frame) = self.io.allocate() else {
                self.counters
                    .count_drop(usize::from(outbound.port), DropReason::NoFreeFrame);
                continue;
            };
            let data = outbound.frame.as_slice();
            let buf = self.io.buffer(frame);
            if data.len() > buf.len() {
                self.counters
                    .count_drop(usize::from(outbound.port), DropReason::OutboundTooLarge);
                self.io.release(frame);
                continue;
            }
            buf[..data.len()].copy_from_slice(data);
            self.transmit(
                outbound.port,
                outbound.port,
                Packet {
                    frame,
                    len: data.len() as u32,
                },
            );
        }
    }
}
