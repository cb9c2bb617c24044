//! [`XdpIo`]: a worker's AF_XDP ports over one shared UMEM, implementing
//! [`vfn_dataplane::io::PacketIo`].
//!
//! Every socket of a worker is created from the same UMEM, each with its own fill and completion
//! ring, so a frame received on port A is transmitted on port B without a copy and comes back on
//! B's completion ring. The [`FramePool`] decides and records where each frame goes; this module
//! moves descriptors between the pool and the rings. Everything is allocated in [`XdpIo::open`]:
//! receive, transmit, flush and reclaim only move descriptors between preallocated arrays.

use std::{num::NonZeroU32, os::fd::AsRawFd, str::FromStr, time::Duration};

use vfn_dataplane::io::{
    FrameAccounting, FrameId, Packet, PacketIo, PortIndex, PortShare, TransmitRefused,
};
use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
    config::{BindFlags, FrameSize, Interface, QueueSize, SocketConfig, UmemConfig, XdpFlags},
    socket::SocketCreateError,
    umem::frame::DataMut,
};

use crate::{
    attach::{self, AttachedMode, InterfaceClaim},
    error::XdpError,
    interface::{NetnsId, interface_index},
    options::{self, XdpMode, XdpOptions, XdpPort, ZeroCopy},
    pool::{FramePool, PortFrames},
};

/// Copy-mode transmission sends at most this many descriptors per wakeup (the kernel's
/// `TX_BATCH_SIZE` in `net/xdp/xsk.c`).
const COPY_MODE_TX_BATCH: u32 = 32;

/// How long `open` waits for a queue that is busy (see `create_socket`): 20 × 25 ms.
const BIND_BUSY_RETRIES: u32 = 20;
const BIND_BUSY_PAUSE: Duration = Duration::from_millis(25);

/// How a port ended up attached and bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMode {
    pub attached: AttachedMode,
    pub zero_copy: bool,
}

/// A port's drop counters: the kernel's socket statistics and our own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpPortStats {
    /// Received packets the kernel dropped for reasons other than the two below.
    pub rx_dropped: u64,
    /// Received packets dropped because the RX ring was full (the worker is too slow).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty (no frame to receive into).
    pub rx_fill_ring_empty: u64,
    /// Received packets dropped for an invalid descriptor.
    pub rx_invalid_descriptors: u64,
    /// Transmissions the kernel dropped for an invalid descriptor.
    pub tx_invalid_descriptors: u64,
    /// Packets queued by `transmit` that found no room in the TX ring at `flush` (ours).
    pub tx_ring_full_drops: u64,
    /// Wakeups of the TX ring that failed with an unexpected error (ours).
    pub tx_wakeup_errors: u64,
}

struct Port {
    interface: String,
    queue_id: u32,
    mode: PortMode,
    rings: Rings,
    /// Packets accepted by `transmit` and not yet produced to the TX ring. Its capacity is the
    /// port's transmit share, reserved at open; it never grows.
    pending: Vec<FrameDesc>,
    tx_ring_full_drops: u64,
    tx_wakeup_errors: u64,
}

/// One worker's AF_XDP ports over one UMEM. Use and drop it in the network namespace it was
/// opened in: interface indices are per namespace.
pub struct XdpIo {
    ports: Vec<Port>,
    /// One claim per distinct interface; dropped after the sockets (see `Drop`).
    claims: Vec<InterfaceClaim>,
    pool: FramePool,
    /// One descriptor per frame, indexed by `FrameId`.
    descriptors: Vec<FrameDesc>,
    /// Descriptors in transit between a ring and the pool, one ring's worth.
    scratch: Vec<FrameDesc>,
    poll_fds: Vec<libc::pollfd>,
    /// log2 of the frame size (2048 or 4096): a descriptor's frame is its address shifted.
    frame_shift: u32,
    frame_capacity: usize,
    ring_size: u32,
    umem: Umem,
}

// A worker's XdpIo may be opened on one thread and run on another.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<XdpIo>();
};

impl std::fmt::Debug for XdpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpIo")
            .field("ports", &self.port_modes().collect::<Vec<_>>())
            .field("accounting", &self.pool.accounting())
            .finish_non_exhaustive()
    }
}

/// Sockets bound for every port, over one UMEM.
struct Bound {
    umem: Umem,
    descriptors: Vec<FrameDesc>,
    rings: Vec<Rings>,
    zero_copy: bool,
    frame_capacity: usize,
}

/// A bound socket's rings; the socket lives as long as any of them.
struct Rings {
    tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    completion: CompQueue,
}

impl XdpIo {
    /// Opens one AF_XDP socket per port, all over one UMEM of `options.frame_count` frames,
    /// attaching libxdp's XDP program to each interface (replacing one that a killed run left
    /// behind). Must run in the network namespace that holds the interfaces. A queue id beyond
    /// the interface's queues fails with "Invalid argument" (see `interface_queue_count`).
    pub fn open(ports: &[XdpPort], options: &XdpOptions) -> Result<XdpIo, XdpError> {
        options::validate(ports, options)?;
        let netns = NetnsId::of_current_thread()?;
        let mut ifindices = Vec::with_capacity(ports.len());
        let mut claims = Vec::new();
        for (index, port) in ports.iter().enumerate() {
            let ifindex = interface_index(&port.interface)?;
            ifindices.push(ifindex);
            let first_on_interface = !ports[..index]
                .iter()
                .any(|earlier| earlier.interface == port.interface);
            if first_on_interface {
                claims.push(InterfaceClaim::new(&port.interface, ifindex, netns)?);
            }
        }
        let bound = bind_all(ports, options)?;

        let port_count = u32::try_from(ports.len()).unwrap_or(u32::MAX);
        let share = PortShare::split(options.frame_count, port_count, options.ring_size);
        let mut states = Vec::with_capacity(ports.len());
        for ((port, ifindex), rings) in ports.iter().zip(ifindices).zip(bound.rings) {
            let attached = attach::attached_mode(&port.interface, ifindex)?.ok_or_else(|| {
                XdpError::NoProgramAttached {
                    interface: port.interface.clone(),
                }
            })?;
            let mode = PortMode {
                attached,
                zero_copy: bound.zero_copy,
            };
            tracing::info!(
                interface = port.interface,
                queue_id = port.queue_id,
                attached = ?mode.attached,
                zero_copy = mode.zero_copy,
                "AF_XDP port ready"
            );
            states.push(Port {
                interface: port.interface.clone(),
                queue_id: port.queue_id,
                mode,
                rings,
                pending: Vec::with_capacity(share.transmit_max as usize),
                tx_ring_full_drops: 0,
                tx_wakeup_errors: 0,
            });
        }
        let poll_fds = states
            .iter()
            .map(|port| libc::pollfd {
                fd: port.rings.rx.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut io = XdpIo {
            pool: FramePool::new(options.frame_count, states.len(), share),
            ports: states,
            claims,
            descriptors: bound.descriptors,
            scratch: vec![FrameDesc::default(); options.ring_size as usize],
            poll_fds,
            frame_shift: options.frame_size.trailing_zeros(),
            frame_capacity: bound.frame_capacity,
            ring_size: options.ring_size,
            umem: bound.umem,
        };
        io.reclaim_and_refill();
        Ok(io)
    }

    /// How each port ended up attached (native or SKB) and bound (zero-copy or copy).
    pub fn port_modes(&self) -> impl Iterator<Item = PortMode> + '_ {
        self.ports.iter().map(|port| port.mode)
    }

    /// The frames a port holds for reception and transmission right now.
    pub fn port_frames(&self, port: PortIndex) -> Option<PortFrames> {
        self.pool.port_frames(port)
    }

    /// The port's drop counters (reads the kernel's socket statistics).
    pub fn port_stats(&self, port: PortIndex) -> Result<XdpPortStats, XdpError> {
        let Some(state) = self.ports.get(usize::from(port)) else {
            return Err(XdpError::NoSuchPort {
                port,
                count: self.ports.len(),
            });
        };
        let kernel =
            state
                .rings
                .rx
                .fd()
                .xdp_statistics()
                .map_err(|source| XdpError::Statistics {
                    interface: state.interface.clone(),
                    queue_id: state.queue_id,
                    source,
                })?;
        Ok(XdpPortStats {
            rx_dropped: kernel.rx_dropped(),
            rx_ring_full: kernel.rx_ring_full(),
            rx_fill_ring_empty: kernel.rx_fill_ring_empty_descs(),
            rx_invalid_descriptors: kernel.rx_invalid_descs(),
            tx_invalid_descriptors: kernel.tx_invalid_descs(),
            tx_ring_full_drops: state.tx_ring_full_drops,
            tx_wakeup_errors: state.tx_wakeup_errors,
        })
    }

    /// The data segment of a frame userspace owns, or `None` for any other frame.
    fn user_frame_data(&mut self, frame: FrameId) -> Option<DataMut<'_>> {
        if !self.pool.is_in_user_space(frame) {
            return None;
        }
        let descriptor = self.descriptors.get_mut(frame.0 as usize)?;
        // SAFETY: the descriptor comes from this UMEM's own frame list (built at open, updated
        // only from this UMEM's rings); the frame is in user space, i.e. on no ring, so the kernel
        // neither reads nor writes it; and `&mut self` makes this the only userspace access while
        // the returned borrow lives.
        Some(unsafe { self.umem.data_mut(descriptor) })
    }

    /// Whether `transmit` may queue `len` bytes on the port: the packet fits a frame, and
    /// neither the port's transmit share nor its TX ring is full.
    fn transmit_has_room(&mut self, port: PortIndex, len: usize) -> bool {
        let Some(state) = self.ports.get_mut(usize::from(port)) else {
            debug_assert!(false, "transmit on port {port} of {}", self.ports.len());
            return false;
        };
        debug_assert!(len <= self.frame_capacity, "packet of {len} bytes");
        let queued = u32::try_from(state.pending.len()).unwrap_or(u32::MAX);
        len <= self.frame_capacity
            && state.pending.len() < state.pending.capacity()
            && self.pool.transmit_room(port) > 0
            && state.rings.tx.nb_free(queued + 1) > queued
    }

    fn check_balanced(&self) {
        debug_assert!(
            self.pool.accounting().is_balanced(),
            "frame accounting unbalanced: {:?}",
            self.pool.accounting()
        );
    }

    fn reclaim_completions(&mut self) {
        for (index, port) in self.ports.iter_mut().enumerate() {
            let port_index = index as PortIndex;
            // SAFETY: the scratch descriptors are overwritten with frames of this UMEM, the one
            // the completion ring belongs to.
            let completed = unsafe { port.rings.completion.consume(&mut self.scratch) };
            for descriptor in self.scratch.iter().take(completed) {
                let frame = frame_of(descriptor, self.frame_shift);
                if !self.pool.finish_transmit(port_index, frame) {
                    tracing::error!(
                        interface = port.interface,
                        frame = frame.0,
                        "completion ring returned a frame this port was not transmitting"
                    );
                }
            }
        }
    }

    fn refill(&mut self) {
        for (index, port) in self.ports.iter_mut().enumerate() {
            let port_index = index as PortIndex;
            let room = self.pool.fill_room(port_index);
            if room == 0 {
                continue;
            }
            let wanted = room.min(port.rings.fill.nb_free(room)) as usize;
            let mut lent = 0;
            for slot in self.scratch.iter_mut().take(wanted) {
                let Some(frame) = self.pool.lend_for_fill(port_index) else {
                    break;
                };
                // The pool and the descriptor list have the same length: always found.
                let Some(descriptor) = self.descriptors.get(frame.0 as usize) else {
                    self.pool.unlend(port_index, frame);
                    break;
                };
                *slot = *descriptor;
                lent += 1;
            }
            // SAFETY: the frames were free (on no ring, not in the worker's hands) and are now
            // recorded as lent to this port; they belong to this UMEM.
            let produced = unsafe { port.rings.fill.produce(&self.scratch[..lent]) };
            // The ring reported room for all of them; any it refused go back to the pool.
            for descriptor in &self.scratch[produced..lent] {
                self.pool
                    .unlend(port_index, frame_of(descriptor, self.frame_shift));
            }
            if port.rings.fill.needs_wakeup() {
                // Only wakes the kernel; an error here leaves the wakeup to the next refill.
                let _ = port.rings.fill.wakeup(port.rings.rx.fd_mut(), 0);
            }
        }
    }
}

/// The frame a descriptor points into. Frames are at most 2^18 (`FRAME_COUNT_MAX`), so the index
/// fits; an address outside the UMEM maps to an index the pool refuses.
fn frame_of(descriptor: &FrameDesc, frame_shift: u32) -> FrameId {
    FrameId(u32::try_from(descriptor.addr() >> frame_shift).unwrap_or(u32::MAX))
}

/// Binds every port over one fresh UMEM: zero-copy first when allowed (the first socket decides
/// for the whole UMEM, so a fallback to copy mode starts over), then copy mode.
fn bind_all(ports: &[XdpPort], options: &XdpOptions) -> Result<Bound, XdpError> {
    let try_zero_copy = options.zero_copy != ZeroCopy::Off && options.mode != XdpMode::Skb;
    if try_zero_copy {
        match bind_all_with(ports, options, true) {
            Ok(bound) => return Ok(bound),
            Err(error) if options.zero_copy == ZeroCopy::On => return Err(error),
            Err(error) => {
                tracing::info!(%error, "zero-copy unavailable, binding in copy mode");
            }
        }
    }
    bind_all_with(ports, options, false)
}

fn bind_all_with(
    ports: &[XdpPort],
    options: &XdpOptions,
    zero_copy: bool,
) -> Result<Bound, XdpError> {
    let umem_error = |reason: String| XdpError::Umem {
        frame_count: options.frame_count,
        frame_size: options.frame_size,
        reason,
    };
    let frame_size = FrameSize::new(options.frame_size).map_err(|e| umem_error(e.to_string()))?;
    let ring_size = QueueSize::new(options.ring_size).map_err(|e| umem_error(e.to_string()))?;
    let umem_config = UmemConfig::builder()
        .frame_size(frame_size)
        .fill_queue_size(ring_size)
        .comp_queue_size(ring_size)
        .frame_headroom(0)
        .build()
        .map_err(|e| umem_error(e.to_string()))?;
    let frame_count =
        NonZeroU32::new(options.frame_count).ok_or_else(|| umem_error("no frames".to_owned()))?;
    let (umem, descriptors) =
        Umem::new(umem_config, frame_count, false).map_err(|e| umem_error(describe(&e)))?;
    let mut rings = Vec::with_capacity(ports.len());
    for port in ports {
        rings.push(bind_port(&umem, port, options.mode, ring_size, zero_copy)?);
    }
    Ok(Bound {
        umem,
        descriptors,
        rings,
        zero_copy,
        frame_capacity: umem_config.mtu() as usize,
    })
}

/// Binds one port, in native mode first when `mode` allows a fallback to SKB mode.
fn bind_port(
    umem: &Umem,
    port: &XdpPort,
    mode: XdpMode,
    ring_size: QueueSize,
    zero_copy: bool,
) -> Result<Rings, XdpError> {
    let interface = Interface::from_str(&port.interface).map_err(|_| XdpError::InterfaceName {
        name: port.interface.clone(),
        reason: "contains NUL",
    })?;
    let attach_modes: &[AttachedMode] = match mode {
        XdpMode::Native => &[AttachedMode::Native],
        XdpMode::Skb => &[AttachedMode::Skb],
        // Zero-copy needs the driver's XDP support, so SKB mode is no fallback for it.
        XdpMode::Auto if zero_copy => &[AttachedMode::Native],
        XdpMode::Auto => &[AttachedMode::Native, AttachedMode::Skb],
    };
    let copy_flag = if zero_copy {
        BindFlags::XDP_ZEROCOPY
    } else {
        BindFlags::XDP_COPY
    };
    let mut attempts = Vec::new();
    for &attach_mode in attach_modes {
        let xdp_flags = match attach_mode {
            AttachedMode::Native => XdpFlags::XDP_FLAGS_DRV_MODE,
            AttachedMode::Skb => XdpFlags::XDP_FLAGS_SKB_MODE,
        };
        let config = SocketConfig::builder()
            .rx_queue_size(ring_size)
            .tx_queue_size(ring_size)
            .xdp_flags(xdp_flags)
            .bind_flags(copy_flag | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let copy = if zero_copy { "zero-copy" } else { "copy" };
        match create_socket(config, umem, &interface, port.queue_id) {
            Ok(socket) => return Ok(socket),
            Err(reason) => attempts.push(format!("{attach_mode:?}/{copy}: {reason}")),
        }
    }
    Err(XdpError::Bind {
        interface: port.interface.clone(),
        queue_id: port.queue_id,
        attempts: attempts.join("; "),
    })
}

/// Creates a socket, retrying for a bounded time while the queue is busy: the kernel releases a
/// closed socket's hold on its queue in deferred work, so a socket closed a moment ago (a previous
/// run, killed or not) can still hold it.
fn create_socket(
    config: SocketConfig,
    umem: &Umem,
    interface: &Interface,
    queue_id: u32,
) -> Result<Rings, String> {
    let mut busy_retries = 0;
    loop {
        // SAFETY: xsk-rs requires XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD only when this UMEM already
        // has a socket on the same (interface, queue); `options::validate` rejected duplicate
        // ports, so every socket of this UMEM is on a pair of its own.
        match unsafe { Socket::new(config, umem, interface, queue_id) } {
            Ok((tx, rx, Some((fill, completion)))) => {
                return Ok(Rings {
                    tx,
                    rx,
                    fill,
                    completion,
                });
            }
            Ok((_, _, None)) => return Err("the queue is already bound from this UMEM".to_owned()),
            Err(error) if is_busy(&error) && busy_retries < BIND_BUSY_RETRIES => {
                busy_retries += 1;
                std::thread::sleep(BIND_BUSY_PAUSE);
            }
            Err(error) => return Err(describe(&error)),
        }
    }
}

fn is_busy(error: &SocketCreateError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
        == Some(libc::EBUSY)
}

/// An error and its source: xsk-rs keeps the errno in the source.
fn describe(error: &dyn std::error::Error) -> String {
    match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

impl Drop for XdpIo {
    fn drop(&mut self) {
        // Deleting the sockets first lets libxdp drop its reference to the XDP program (and
        // detach it when it counts no other socket); the claims then detach whatever is left once
        // no XdpIo of this process uses the interface.
        self.ports.clear();
        self.claims.clear();
    }
}

impl PacketIo for XdpIo {
    fn port_count(&self) -> usize {
        self.ports.len()
    }

    fn frame_capacity(&self) -> usize {
        self.frame_capacity
    }

    fn reclaim_and_refill(&mut self) {
        self.reclaim_completions();
        self.refill();
        self.check_balanced();
    }

    fn receive(&mut self, port: PortIndex, out: &mut [Packet]) -> usize {
        let Some(state) = self.ports.get_mut(usize::from(port)) else {
            debug_assert!(false, "receive on port {port} of {}", self.ports.len());
            return 0;
        };
        let batch = out.len().min(self.scratch.len());
        // SAFETY: the scratch descriptors are overwritten with frames of this UMEM, the one the
        // RX ring belongs to.
        let received = unsafe { state.rings.rx.consume(&mut self.scratch[..batch]) };
        let mut taken = 0;
        for descriptor in self.scratch.iter().take(received) {
            let frame = frame_of(descriptor, self.frame_shift);
            // `received` is at most `out.len()`, so there is always a slot.
            let Some(slot) = out.get_mut(taken) else {
                break;
            };
            if !self.pool.receive(port, frame) {
                tracing::error!(
                    interface = state.interface,
                    frame = frame.0,
                    "RX ring returned a frame not lent to this port"
                );
                continue;
            }
            if let Some(own) = self.descriptors.get_mut(frame.0 as usize) {
                // libxdp's program never moves the packet start, so the kernel hands back the
                // address we lent; keeping its descriptor keeps the received length.
                debug_assert_eq!(own.addr(), descriptor.addr());
                *own = *descriptor;
            }
            *slot = Packet {
                frame,
                len: u32::try_from(descriptor.lengths().data()).unwrap_or(u32::MAX),
            };
            taken += 1;
        }
        self.check_balanced();
        taken
    }

    fn buffer(&mut self, frame: FrameId) -> &mut [u8] {
        let capacity = self.frame_capacity;
        let Some(mut data) = self.user_frame_data(frame) else {
            debug_assert!(false, "buffer of frame {} which is not in hand", frame.0);
            return &mut [];
        };
        data.cursor().set_pos(capacity);
        let contents = data.contents_mut();
        let (start, len) = (contents.as_mut_ptr(), contents.len());
        // SAFETY: `start..start + len` is the frame's data segment inside the UMEM mapping, which
        // lives as long as `self.umem`; the frame is in user space (checked by user_frame_data), so
        // no ring and hence no kernel access overlaps it, and the returned borrow of `self` keeps
        // every other userspace access out until it ends. `DataMut` only borrowed this memory.
        unsafe { std::slice::from_raw_parts_mut(start, len) }
    }

    fn allocate(&mut self) -> Option<FrameId> {
        let frame = self.pool.allocate();
        self.check_balanced();
        frame
    }

    fn transmit(&mut self, port: PortIndex, packet: Packet) -> Result<(), TransmitRefused> {
        if !self.transmit_has_room(port, packet.len as usize) {
            return Err(TransmitRefused(packet));
        }
        let Some(mut data) = self.user_frame_data(packet.frame) else {
            debug_assert!(
                false,
                "transmit of frame {} which is not in hand",
                packet.frame.0
            );
            return Err(TransmitRefused(packet));
        };
        data.cursor().set_pos(packet.len as usize);
        if !self.pool.queue_transmit(port, packet.frame) {
            debug_assert!(
                false,
                "transmit of frame {} which is parked",
                packet.frame.0
            );
            return Err(TransmitRefused(packet));
        }
        if let (Some(state), Some(descriptor)) = (
            self.ports.get_mut(usize::from(port)),
            self.descriptors.get(packet.frame.0 as usize),
        ) {
            state.pending.push(*descriptor);
        }
        self.check_balanced();
        Ok(())
    }

    fn flush(&mut self) {
        for (index, port) in self.ports.iter_mut().enumerate() {
            let port_index = index as PortIndex;
            if !port.pending.is_empty() {
                let queued = u32::try_from(port.pending.len()).unwrap_or(u32::MAX);
                // `produce` is all-or-nothing: ask for no more than the ring has room for.
                let fits = port.rings.tx.nb_free(queued).min(queued) as usize;
                // SAFETY: the pending frames are recorded as transmitting on this port, so no
                // other ring holds them and userspace no longer touches them; they belong to this
                // UMEM.
                let produced = unsafe { port.rings.tx.produce(&port.pending[..fits]) };
                for descriptor in &port.pending[produced..] {
                    if self
                        .pool
                        .finish_transmit(port_index, frame_of(descriptor, self.frame_shift))
                    {
                        port.tx_ring_full_drops += 1;
                    }
                }
                port.pending.clear();
            }
            kick_until_drained(port, self.ring_size);
        }
        self.check_balanced();
    }

    fn release(&mut self, frame: FrameId) {
        let released = self.pool.release(frame);
        debug_assert!(
            released,
            "release of frame {} which is not in hand",
            frame.0
        );
        self.check_balanced();
    }

    fn park(&mut self, frame: FrameId) {
        let parked = self.pool.park(frame);
        debug_assert!(parked, "park of frame {} which is not in hand", frame.0);
        self.check_balanced();
    }

    fn unpark(&mut self, frame: FrameId) {
        let unparked = self.pool.unpark(frame);
        debug_assert!(unparked, "unpark of frame {} which is not parked", frame.0);
        self.check_balanced();
    }

    fn wait(&mut self, timeout: Duration) {
        let nfds = libc::nfds_t::try_from(self.poll_fds.len()).unwrap_or(0);
        // SAFETY: `poll_fds` is an initialised array of `nfds` pollfds that outlives the call; the
        // kernel writes only their `revents`.
        // An error (EINTR) only ends the wait early: the caller polls the rings either way.
        let _ = unsafe { libc::poll(self.poll_fds.as_mut_ptr(), nfds, poll_timeout_ms(timeout)) };
    }

    fn accounting(&self) -> FrameAccounting {
        self.pool.accounting()
    }
}

/// Wakes the TX ring until the kernel has taken everything on it, as long as each wakeup makes
/// progress: copy mode sends at most [`COPY_MODE_TX_BATCH`] descriptors per wakeup, while
/// zero-copy drivers send asynchronously (no progress seen, one wakeup). A stalled link makes no
/// progress either, so it costs one wakeup per flush.
fn kick_until_drained(port: &mut Port, ring_size: u32) {
    let kicks_max = ring_size / COPY_MODE_TX_BATCH + 1;
    let mut outstanding = ring_size.saturating_sub(port.rings.tx.nb_free_exact());
    for _ in 0..kicks_max {
        if outstanding == 0 || !port.rings.tx.needs_wakeup() {
            return;
        }
        if port.rings.tx.wakeup().is_err() {
            port.tx_wakeup_errors += 1;
            return;
        }
        let now = ring_size.saturating_sub(port.rings.tx.nb_free_exact());
        if now >= outstanding {
            return;
        }
        outstanding = now;
    }
}

/// poll(2) takes whole milliseconds; a non-zero timeout below one millisecond waits one.
fn poll_timeout_ms(timeout: Duration) -> libc::c_int {
    if timeout.is_zero() {
        return 0;
    }
    libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_rounds_sub_millisecond_waits_up() {
        assert_eq!(poll_timeout_ms(Duration::ZERO), 0);
        assert_eq!(poll_timeout_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_timeout_ms(Duration::from_micros(2500)), 2);
        assert_eq!(
            poll_timeout_ms(Duration::from_secs(u64::MAX)),
            libc::c_int::MAX
        );
    }
}
