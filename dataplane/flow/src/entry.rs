//! The hot per-flow entry: everything a packet of a known flow reads or writes.

use crate::key::{Direction, FlowKey, Orientation, PROTO_TCP};
use crate::tcp::{TcpFlags, TcpState, update_tcp_state};

/// One flow's hot state. It fits one 64-byte cache line when `V` takes at most 8 bytes, which
/// [`crate::FlowTable::new`] enforces at compile time.
///
/// Only `value` is public: the key, timestamps and state are maintained by the table and by
/// [`FlowEntry::record_packet`], because the table's expiry relies on how they change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry<V> {
    key: FlowKey,
    initiator: Orientation,
    tcp: TcpState,
    /// What the flow has shown so far: bits of the `marks` module.
    marks: u8,
    first_seen_ns: u64,
    last_seen_ns: u64,
    /// The caller's cached verdict for this flow (for example rule index, action and the
    /// rule-set generation that produced them).
    pub value: V,
}

const _: () = assert!(
    size_of::<FlowEntry<u64>>() == 64,
    "a flow entry must fit one cache line"
);

impl<V> FlowEntry<V> {
    pub(crate) fn new(key: FlowKey, initiator: Orientation, value: V, now_ns: u64) -> Self {
        Self {
            key,
            initiator,
            tcp: TcpState::None,
            marks: 0,
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            value,
        }
    }

    /// Records a packet of this flow seen at `now_ns` travelling in `direction`: refreshes the
    /// idle timer, notes that the flow has a reply and, for TCP, updates the state from
    /// `tcp_flags` (ignored for other protocols). Returns true when this packet ended the TCP
    /// connection ([`FlowEntry::connection_ended`] became true).
    ///
    /// Call it for every packet, including the first (right after insert, with
    /// [`Direction::Forward`]). `now_ns` must be monotonic and at least the time given to the
    /// table's last `insert` or `expire`: the expiry schedule relies on state changes coming with
    /// a fresh `last_seen_ns`.
    pub fn record_packet(
        &mut self,
        now_ns: u64,
        direction: Direction,
        tcp_flags: TcpFlags,
    ) -> bool {
        self.last_seen_ns = self.last_seen_ns.max(now_ns);
        if direction == Direction::Reverse {
            self.marks |= marks::REPLY_SEEN;
        }
        if self.key.proto() != PROTO_TCP {
            return false;
        }
        let before = self.tcp;
        self.tcp = update_tcp_state(before, direction, tcp_flags);
        if self.tcp == TcpState::SynSent && before != TcpState::SynSent {
            // A new connection on the same ports: the old one's teardown is forgotten.
            self.marks &= !(marks::FIN_FORWARD | marks::FIN_REVERSE | marks::CONNECTION_ENDED);
        }
        if tcp_flags.contains(TcpFlags::FIN) {
            self.marks |= match direction {
                Direction::Forward => marks::FIN_FORWARD,
                Direction::Reverse => marks::FIN_REVERSE,
            };
        }
        let fins_exchanged = self.marks & marks::FINS == marks::FINS;
        let last_ack = fins_exchanged
            && tcp_flags.contains(TcpFlags::ACK)
            && !tcp_flags.contains(TcpFlags::FIN);
        let ends = !self.connection_ended() && (self.tcp == TcpState::Closed || last_ack);
        if ends {
            self.marks |= marks::CONNECTION_ENDED;
        }
        ends
    }

    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// Orientation of the flow's first packet relative to the key.
    pub fn initiator(&self) -> Orientation {
        self.initiator
    }

    /// TCP state; always [`TcpState::None`] for other protocols.
    pub fn tcp(&self) -> TcpState {
        self.tcp
    }

    /// Whether a packet went in the reply direction.
    pub fn reply_seen(&self) -> bool {
        self.marks & marks::REPLY_SEEN != 0
    }

    /// Whether the TCP connection is over: a RST was seen, or both sides sent a FIN and a packet
    /// acknowledged the second (an ACK without FIN after both FINs). A new SYN from the
    /// initiator starts a new connection and clears it. Always false for other protocols.
    pub fn connection_ended(&self) -> bool {
        self.marks & marks::CONNECTION_ENDED != 0
    }

    /// Whether the TCP connection ended ([`FlowEntry::connection_ended`]) or both sides sent a
    /// FIN: a flow that expires in this state ended by its own teardown, not by a timeout.
    pub fn connection_closed(&self) -> bool {
        self.connection_ended() || self.marks & marks::FINS == marks::FINS
    }

    pub fn first_seen_ns(&self) -> u64 {
        self.first_seen_ns
    }

    pub fn last_seen_ns(&self) -> u64 {
        self.last_seen_ns
    }

    /// Established flows are protected from eviction when the table is full: TCP flows in state
    /// [`TcpState::Established`], other flows once a packet went in the reply direction.
    pub fn is_established(&self) -> bool {
        if self.key.proto() == PROTO_TCP {
            self.tcp == TcpState::Established
        } else {
            self.reply_seen()
        }
    }
}

/// Bits of [`FlowEntry::marks`].
mod marks {
    pub const REPLY_SEEN: u8 = 1 << 0;
    pub const FIN_FORWARD: u8 = 1 << 1;
    pub const FIN_REVERSE: u8 = 1 << 2;
    pub const FINS: u8 = FIN_FORWARD | FIN_REVERSE;
    pub const CONNECTION_ENDED: u8 = 1 << 3;
}
