//! Mirror sessions: copies of selected packets for an analyzer, written by the workers.
//!
//! A session names what it copies (the frames as the router received them, as it sent them, or
//! both) and where the copies go: out of a port of the router dedicated to an analyzer, as they
//! are, or to a remote analyzer in a tunnel (ERSPAN type II over GRE, or Ethernet over plain GRE,
//! protocol 0x6558), routed like any packet the router originates. Copies are truncated to the
//! session's snap length and always to what fits the egress MTU, sampled (every Nth packet
//! the session selects) and capped (packets per second, per worker a share). A copy that cannot
//! go (no free frame, the egress port's ring full, the tunnel's next hop unresolved, over the
//! cap) is dropped and counted, and the packet it copies is forwarded as if it had not been
//! selected: mirroring never holds up forwarding.
//!
//! This module holds the sessions and the encapsulation, without I/O; the worker makes the
//! copies ([`crate::worker`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::counters::Counter;
use crate::io::PortIndex;
use crate::ratelimit::TokenBucket;
use crate::wire::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV4_HEADER_LEN, IPV6_HEADER_LEN};

/// Mirror sessions a router holds at most.
pub const MIRROR_SESSIONS_MAX: usize = 16;
/// IP protocol number of GRE.
pub const PROTO_GRE: u8 = 47;
/// GRE protocol type of ERSPAN type II.
pub const GRE_PROTOCOL_ERSPAN_II: u16 = 0x88be;
/// GRE protocol type of transparent Ethernet bridging (an Ethernet frame inside).
pub const GRE_PROTOCOL_ETHERNET: u16 = 0x6558;
/// GRE header with the sequence number present (ERSPAN type II requires it).
const GRE_SEQUENCED_LEN: usize = 8;
const GRE_PLAIN_LEN: usize = 4;
const GRE_FLAG_SEQUENCE: u16 = 0x1000;
const ERSPAN_II_LEN: usize = 8;
/// Largest ERSPAN session id (10 bits).
pub const ERSPAN_SESSION_ID_MAX: u16 = 1023;
/// Hop limit of the tunnelled copies.
const TUNNEL_TTL: u8 = 64;

/// What a session copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorDirection {
    /// Frames as the router received them, before any rewrite.
    Received,
    /// Frames as the router sent them.
    Sent,
    Both,
}

impl MirrorDirection {
    pub fn includes_received(self) -> bool {
        matches!(self, MirrorDirection::Received | MirrorDirection::Both)
    }

    pub fn includes_sent(self) -> bool {
        matches!(self, MirrorDirection::Sent | MirrorDirection::Both)
    }
}

/// The tunnel a session's copies travel in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// ERSPAN type II over GRE with a sequence number; `session_id` (0..=1023) lets the
    /// analyzer tell sessions apart.
    ErspanII { session_id: u16 },
    /// Plain GRE carrying the Ethernet frame (transparent Ethernet bridging).
    Gre,
}

/// Where a session's copies go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorDestination {
    /// Out of this port, dedicated to an analyzer, as they are.
    Port(PortIndex),
    /// In `tunnel` from `source` (an address of the router) to `remote`, routed.
    Remote {
        tunnel: Tunnel,
        source: IpAddr,
        remote: IpAddr,
    },
}

/// A mirror session as the workers use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorSession {
    pub name: String,
    pub direction: MirrorDirection,
    pub destination: MirrorDestination,
    /// Bytes of each frame copied at most (the rest is cut off); 0: the whole frame.
    pub snap_length: u16,
    /// Copy one of every this many packets the session selects (1: every one).
    pub sample_every: u32,
    /// Copies per second at most, all workers together (0: no cap).
    pub packets_per_second: u64,
    /// Copies a worker queues for transmission per loop iteration at most.
    pub queue: u32,
}

/// Why a session was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MirrorSessionError {
    #[error("sample_every: must be at least 1")]
    SampleEvery,
    #[error("queue: must be at least 1")]
    Queue,
    #[error("erspan session_id: {0} is above {ERSPAN_SESSION_ID_MAX}")]
    SessionId(u16),
    #[error("source and remote: must be of the same address family")]
    Families,
}

impl MirrorSession {
    /// Checks what the config layer cannot: the fields' relations.
    pub fn validate(&self) -> Result<(), MirrorSessionError> {
        if self.sample_every == 0 {
            return Err(MirrorSessionError::SampleEvery);
        }
        if self.queue == 0 {
            return Err(MirrorSessionError::Queue);
        }
        if let MirrorDestination::Remote {
            tunnel,
            source,
            remote,
        } = self.destination
        {
            if let Tunnel::ErspanII { session_id } = tunnel
                && session_id > ERSPAN_SESSION_ID_MAX
            {
                return Err(MirrorSessionError::SessionId(session_id));
            }
            if source.is_ipv4() != remote.is_ipv4() {
                return Err(MirrorSessionError::Families);
            }
        }
        Ok(())
    }

    /// Bytes of `frame_len` that a copy carries: the snap length, then what `room` (the bytes an
    /// encapsulated copy may take after its own headers) allows.
    pub fn copied_len(&self, frame_len: usize, room: usize) -> usize {
        let snap = if self.snap_length == 0 {
            frame_len
        } else {
            usize::from(self.snap_length)
        };
        frame_len.min(snap).min(room)
    }
}

/// The Ethernet header of a tunnelled copy: towards the tunnel's next hop, from the egress port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelLink {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    /// The egress interface's MTU: the outer IP packet's largest size.
    pub mtu: u16,
}

/// What is known of the copied frame for the ERSPAN header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopiedFrame<'a> {
    /// The frame, from its Ethernet header on (truncated to what the copy may carry, or not).
    pub bytes: &'a [u8],
    /// The port it was received on or sent by (the ERSPAN index).
    pub port: PortIndex,
}

/// Bytes the encapsulation adds in front of the copied frame, outer Ethernet header excluded.
fn tunnel_overhead(tunnel: Tunnel, remote: IpAddr) -> usize {
    let ip = if remote.is_ipv4() {
        IPV4_HEADER_LEN
    } else {
        IPV6_HEADER_LEN
    };
    ip + match tunnel {
        Tunnel::ErspanII { .. } => GRE_SEQUENCED_LEN + ERSPAN_II_LEN,
        Tunnel::Gre => GRE_PLAIN_LEN,
    }
}

/// Writes a tunnelled copy of `frame` into `out`: Ethernet (`link`), IP from `source` to
/// `remote`, GRE (with `sequence` for ERSPAN), the ERSPAN II header for ERSPAN, then as much of
/// the frame as `session` and the MTU allow. Returns the copy's length, or `None` when `out` or
/// the MTU leaves no room for the headers, or the addresses are of different families.
pub fn write_tunnelled(
    out: &mut [u8],
    link: TunnelLink,
    session: &MirrorSession,
    (tunnel, source, remote): (Tunnel, IpAddr, IpAddr),
    sequence: u32,
    frame: CopiedFrame<'_>,
) -> Option<usize> {
    let overhead = tunnel_overhead(tunnel, remote);
    let l2 = wire::ethernet_header_len(link.vlan);
    let room = usize::from(link.mtu)
        .checked_sub(overhead)?
        .min(out.len().checked_sub(l2 + overhead)?);
    let copied = session.copied_len(frame.bytes.len(), room);
    let ip_len = overhead + copied;
    let ethertype = if remote.is_ipv4() {
        ETHERTYPE_IPV4
    } else {
        ETHERTYPE_IPV6
    };
    wire::write_ethernet(out, link.dst_mac, link.src_mac, link.vlan, ethertype);
    let ip = &mut out[l2..l2 + ip_len];
    let gre_start = match (source, remote) {
        (IpAddr::V4(source), IpAddr::V4(remote)) => {
            wire::write_ipv4_header(
                ip,
                0,
                ip_len,
                TUNNEL_TTL,
                PROTO_GRE,
                source.octets(),
                remote.octets(),
            );
            IPV4_HEADER_LEN
        }
        (IpAddr::V6(source), IpAddr::V6(remote)) => {
            wire::write_ipv6_header(
                ip,
                ip_len - IPV6_HEADER_LEN,
                PROTO_GRE,
                TUNNEL_TTL,
                source.octets(),
                remote.octets(),
            );
            IPV6_HEADER_LEN
        }
        _ => return None,
    };
    let gre = &mut ip[gre_start..];
    let inner_start = match tunnel {
        Tunnel::Gre => {
            wire::write_u16(gre, 0, 0);
            wire::write_u16(gre, 2, GRE_PROTOCOL_ETHERNET);
            GRE_PLAIN_LEN
        }
        Tunnel::ErspanII { session_id } => {
            wire::write_u16(gre, 0, GRE_FLAG_SEQUENCE);
            wire::write_u16(gre, 2, GRE_PROTOCOL_ERSPAN_II);
            gre[4..8].copy_from_slice(&sequence.to_be_bytes());
            let erspan = &mut gre[GRE_SEQUENCED_LEN..GRE_SEQUENCED_LEN + ERSPAN_II_LEN];
            // Version 1 (type II); the VLAN and the trunk encapsulation say whether the copied
            // frame carries its 802.1Q tag ("En" 3: preserved) or had none (0).
            let tag = (wire::read_u16(frame.bytes, 12) == wire::ETHERTYPE_VLAN
                && frame.bytes.len() >= 16)
                .then(|| wire::read_u16(frame.bytes, 14) & 0x0fff);
            wire::write_u16(erspan, 0, 1 << 12 | tag.unwrap_or(0));
            let encapsulation: u16 = if tag.is_some() { 3 } else { 0 };
            let truncated = u16::from(copied < frame.bytes.len());
            wire::write_u16(
                erspan,
                2,
                encapsulation << 11 | truncated << 10 | (session_id & ERSPAN_SESSION_ID_MAX),
            );
            // Reserved 12 bits, then the 20-bit index: the port.
            erspan[4..8].copy_from_slice(&u32::from(frame.port).to_be_bytes());
            GRE_SEQUENCED_LEN + ERSPAN_II_LEN
        }
    };
    gre[inner_start..inner_start + copied].copy_from_slice(&frame.bytes[..copied]);
    Some(l2 + ip_len)
}

macro_rules! copy_losses {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Why a copy a session selected was not sent. Every reason has a counter per session.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum CopyLost { $($variant),* }

        impl CopyLost {
            pub const ALL: &'static [CopyLost] = &[$(CopyLost::$variant),*];
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, used in metrics.
            pub fn name(self) -> &'static str {
                match self { $(CopyLost::$variant => $name),* }
            }

            /// One-line explanation for operators.
            pub fn help(self) -> &'static str {
                match self { $(CopyLost::$variant => $help),* }
            }
        }
    };
}

copy_losses! {
    RateLimited => "rate_limited", "over the session's packets-per-second cap";
    QueueFull => "queue_full", "over the copies a worker queues per loop iteration";
    NoFreeFrame => "no_free_frame", "no frame free for the copy";
    TransmitRingFull => "transmit_ring_full", "the egress port's ring or share is full (a slow or absent analyzer)";
    LinkDown => "link_down", "the egress port has no carrier (its link, or the analyzer's end of it, is down)";
    NoRoute => "no_route", "no route to the tunnel's remote end";
    Unresolved => "unresolved", "the tunnel's next hop is not resolved (asked for)";
    TooSmall => "too_small", "the egress MTU leaves no room for the tunnel's headers";
}

/// Whether each port's link is up, by port: written by the control side, which watches the
/// carrier, read by the workers before they send a copy (a copy sent to a port without carrier
/// is dropped by the kernel unseen: counted as lost here instead). Ports start up.
#[derive(Clone, Debug)]
pub struct LinkStates(Arc<[AtomicBool]>);

impl LinkStates {
    pub fn new(ports: usize) -> LinkStates {
        LinkStates((0..ports).map(|_| AtomicBool::new(true)).collect())
    }

    pub fn set(&self, port: PortIndex, up: bool) {
        if let Some(state) = self.0.get(usize::from(port)) {
            state.store(up, Ordering::Relaxed);
        }
    }

    pub fn is_up(&self, port: PortIndex) -> bool {
        self.0
            .get(usize::from(port))
            .is_none_or(|state| state.load(Ordering::Relaxed))
    }
}

/// One session's counters on one worker (single writer: the worker).
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Packets the session selected (before sampling).
    pub selected: Counter,
    /// Copies sent.
    pub copies: Counter,
    pub copy_bytes: Counter,
    pub lost: [Counter; CopyLost::COUNT],
}

/// One worker's mirroring counters, by session index.
#[derive(Debug)]
pub struct MirrorCounters {
    pub sessions: Box<[SessionCounters]>,
}

impl MirrorCounters {
    pub fn new(sessions: usize) -> MirrorCounters {
        MirrorCounters {
            sessions: (0..sessions).map(|_| SessionCounters::default()).collect(),
        }
    }
}

/// A session's state on one worker.
#[derive(Debug)]
struct SessionState {
    /// Packets selected so far, for sampling.
    selected: u64,
    /// Copies queued in this loop iteration.
    queued: u32,
    /// This worker's share of the session's rate.
    bucket: Option<TokenBucket>,
    /// ERSPAN sequence numbers: this worker's count, interleaved with the other workers'.
    sent: u32,
}

/// One worker's mirroring: the sessions, their sampling, caps and counters, and a staging buffer
/// for the frame being copied (the frame as received, kept while the pipeline rewrites it, or
/// as sent, while a fresh frame takes its copy).
pub struct WorkerMirror {
    sessions: Arc<[MirrorSession]>,
    links: LinkStates,
    state: Box<[SessionState]>,
    counters: Arc<MirrorCounters>,
    /// Whether some session copies frames as received.
    copies_received: bool,
    staged: Box<[u8]>,
    staged_len: usize,
    worker: u32,
    workers: u32,
}

impl WorkerMirror {
    /// Worker `worker` of `workers`, with frames of `frame_capacity` bytes.
    pub fn new(
        sessions: Arc<[MirrorSession]>,
        links: LinkStates,
        frame_capacity: usize,
        worker: u32,
        workers: u32,
    ) -> WorkerMirror {
        let workers = workers.max(1);
        let state = sessions
            .iter()
            .map(|session| SessionState {
                selected: 0,
                queued: 0,
                bucket: (session.packets_per_second > 0).then(|| {
                    let share = (session.packets_per_second / u64::from(workers)).max(1);
                    // A burst of a tenth of a second's share, at least one copy.
                    TokenBucket::new(share, (share / 10).max(1))
                }),
                sent: 0,
            })
            .collect();
        let copies_received = sessions
            .iter()
            .any(|session| session.direction.includes_received());
        WorkerMirror {
            counters: Arc::new(MirrorCounters::new(sessions.len())),
            staged: vec![
                0u8;
                if sessions.is_empty() {
                    0
                } else {
                    frame_capacity
                }
            ]
            .into_boxed_slice(),
            staged_len: 0,
            sessions,
            links,
            state,
            copies_received,
            worker,
            workers,
        }
    }

    /// Whether `port`'s link is up.
    pub fn link_up(&self, port: PortIndex) -> bool {
        self.links.is_up(port)
    }

    pub fn counters(&self) -> Arc<MirrorCounters> {
        self.counters.clone()
    }

    /// Starts a loop iteration: every session's queue is empty again.
    pub fn begin_iteration(&mut self) {
        for state in &mut self.state {
            state.queued = 0;
        }
    }

    /// Whether the frame must be kept as received before it is judged: some session copies
    /// received frames and something may select it.
    pub fn keeps_received(&self, selection_possible: bool) -> bool {
        self.copies_received && selection_possible
    }

    /// Keeps a copy of `frame` (cut to the buffer, which holds a whole frame).
    pub fn stage(&mut self, frame: &[u8]) {
        let len = frame.len().min(self.staged.len());
        self.staged[..len].copy_from_slice(&frame[..len]);
        self.staged_len = len;
    }

    /// The frame kept by [`WorkerMirror::stage`].
    pub fn staged(&self) -> &[u8] {
        &self.staged[..self.staged_len]
    }

    pub fn session(&self, index: u16) -> Option<&MirrorSession> {
        self.sessions.get(usize::from(index))
    }

    /// Counts a packet `session` selected; true when it is the one of its sample to copy.
    pub fn sample(&mut self, session: u16) -> bool {
        let (Some(state), Some(config), Some(counters)) = (
            self.state.get_mut(usize::from(session)),
            self.sessions.get(usize::from(session)),
            self.counters.sessions.get(usize::from(session)),
        ) else {
            return false;
        };
        counters.selected.add(1);
        state.selected += 1;
        (state.selected - 1) % u64::from(config.sample_every) == 0
    }

    /// Whether a copy for `session` may be queued now (its queue and its rate); counts the
    /// refusal.
    pub fn admit(&mut self, session: u16, now: Duration) -> bool {
        let index = usize::from(session);
        let (Some(state), Some(config)) = (self.state.get_mut(index), self.sessions.get(index))
        else {
            return false;
        };
        let refused = if state.queued >= config.queue {
            Some(CopyLost::QueueFull)
        } else if state
            .bucket
            .as_mut()
            .is_some_and(|bucket| !bucket.try_take(now))
        {
            Some(CopyLost::RateLimited)
        } else {
            None
        };
        match refused {
            Some(reason) => {
                self.lost(session, reason);
                false
            }
            None => {
                state.queued += 1;
                true
            }
        }
    }

    /// The next ERSPAN sequence number of `session`: each worker numbers its copies, the
    /// numbers of the workers interleaved, so that they never repeat.
    pub fn next_sequence(&mut self, session: u16) -> u32 {
        let Some(state) = self.state.get_mut(usize::from(session)) else {
            return 0;
        };
        let sequence = state
            .sent
            .wrapping_mul(self.workers)
            .wrapping_add(self.worker);
        state.sent = state.sent.wrapping_add(1);
        sequence
    }

    pub fn sent(&self, session: u16, bytes: usize) {
        if let Some(counters) = self.counters.sessions.get(usize::from(session)) {
            counters.copies.add(1);
            counters.copy_bytes.add(bytes as u64);
        }
    }

    pub fn lost(&self, session: u16, reason: CopyLost) {
        if let Some(counters) = self.counters.sessions.get(usize::from(session)) {
            counters.lost[reason as usize].add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(tunnel: Tunnel, snap_length: u16) -> MirrorSession {
        MirrorSession {
            name: "analyzer".into(),
            direction: MirrorDirection::Both,
            destination: MirrorDestination::Remote {
                tunnel,
                source: "198.18.9.1".parse().expect("a"),
                remote: "198.18.9.2".parse().expect("a"),
            },
            snap_length,
            sample_every: 1,
            packets_per_second: 0,
            queue: 64,
        }
    }

    const LINK: TunnelLink = TunnelLink {
        dst_mac: [2, 0, 0, 0, 0, 9],
        src_mac: [2, 0, 0, 0, 0, 1],
        vlan: None,
        mtu: 1500,
    };

    fn endpoints(session: &MirrorSession) -> (Tunnel, IpAddr, IpAddr) {
        match session.destination {
            MirrorDestination::Remote {
                tunnel,
                source,
                remote,
            } => (tunnel, source, remote),
            MirrorDestination::Port(_) => unreachable!("a tunnel session"),
        }
    }

    #[test]
    fn erspan_ii_carries_the_frame_after_its_headers() {
        let frame: Vec<u8> = (0..100u8).collect();
        let session = session(Tunnel::ErspanII { session_id: 7 }, 0);
        let mut out = [0u8; 2048];
        let len = write_tunnelled(
            &mut out,
            LINK,
            &session,
            endpoints(&session),
            42,
            CopiedFrame {
                bytes: &frame,
                port: 3,
            },
        )
        .expect("fits");
        assert_eq!(len, 14 + 20 + 8 + 8 + 100);
        let ip = &out[14..len];
        assert_eq!(wire::read_u16(ip, 2) as usize, len - 14, "total length");
        assert_eq!(ip[9], PROTO_GRE);
        assert_eq!(crate::checksum::checksum(&ip[..20]), 0, "header checksum");
        assert_eq!(
            &ip[20..24],
            &[0x10, 0, 0x88, 0xbe],
            "GRE with a sequence number"
        );
        assert_eq!(&ip[24..28], &42u32.to_be_bytes());
        assert_eq!(
            &ip[28..32],
            &[0x10, 0, 0, 7],
            "version 1, untagged, session 7"
        );
        assert_eq!(&ip[32..36], &3u32.to_be_bytes(), "index: the port");
        assert_eq!(&ip[36..], &frame[..]);
    }

    #[test]
    fn copies_are_cut_to_the_snap_length_and_the_mtu() {
        let frame = vec![0xabu8; 1514];
        let mut out = [0u8; 2048];
        let snapped = session(Tunnel::ErspanII { session_id: 1 }, 128);
        let len = write_tunnelled(
            &mut out,
            LINK,
            &snapped,
            endpoints(&snapped),
            0,
            CopiedFrame {
                bytes: &frame,
                port: 0,
            },
        )
        .expect("fits");
        assert_eq!(len, 14 + 36 + 128);
        assert_eq!(out[14 + 30] & 0x04, 0x04, "the truncated bit");
        let whole = session(Tunnel::Gre, 0);
        let len = write_tunnelled(
            &mut out,
            LINK,
            &whole,
            endpoints(&whole),
            0,
            CopiedFrame {
                bytes: &frame,
                port: 0,
            },
        )
        .expect("fits");
        assert_eq!(len - 14, 1500, "the outer packet fills the MTU exactly");
        assert_eq!(
            &out[14 + 20..14 + 24],
            &[0, 0, 0x65, 0x58],
            "GRE carrying Ethernet"
        );
    }

    #[test]
    fn an_ipv6_tunnel_has_an_ipv6_header() {
        let mut session = session(Tunnel::Gre, 0);
        session.destination = MirrorDestination::Remote {
            tunnel: Tunnel::Gre,
            source: "2001:2::1".parse().expect("a"),
            remote: "2001:2::9".parse().expect("a"),
        };
        let mut out = [0u8; 256];
        let len = write_tunnelled(
            &mut out,
            LINK,
            &session,
            endpoints(&session),
            0,
            CopiedFrame {
                bytes: &[1; 60],
                port: 0,
            },
        )
        .expect("fits");
        assert_eq!(len, 14 + 40 + 4 + 60);
        assert_eq!(wire::read_u16(&out, 12), ETHERTYPE_IPV6);
        assert_eq!(out[14 + 6], PROTO_GRE);
        assert_eq!(wire::read_u16(&out, 14 + 4), 64, "payload length");
    }

    #[test]
    fn sessions_with_impossible_fields_are_refused() {
        let mut bad = session(Tunnel::ErspanII { session_id: 1024 }, 0);
        assert_eq!(bad.validate(), Err(MirrorSessionError::SessionId(1024)));
        bad = session(Tunnel::Gre, 0);
        bad.sample_every = 0;
        assert_eq!(bad.validate(), Err(MirrorSessionError::SampleEvery));
        bad = session(Tunnel::Gre, 0);
        bad.destination = MirrorDestination::Remote {
            tunnel: Tunnel::Gre,
            source: "198.18.9.1".parse().expect("a"),
            remote: "2001:2::9".parse().expect("a"),
        };
        assert_eq!(bad.validate(), Err(MirrorSessionError::Families));
        assert_eq!(session(Tunnel::Gre, 0).validate(), Ok(()));
    }
}
