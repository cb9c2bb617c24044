//! A small TCP state machine driven by header flags only.
//!
//! It decides a flow's timeout class and whether the flow counts as established for the
//! full-table policy; it is not a firewall: sequence numbers are not checked, so anyone who knows
//! a flow's 4-tuple can move it along (for example close it with a RST).

use crate::key::Direction;
use std::ops::BitOr;

/// The flags byte of a TCP header (byte 13), of which the state machine reads FIN, SYN, RST and
/// ACK; the flow statistics count all eight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const NONE: Self = Self(0);
    pub const FIN: Self = Self(0x01);
    pub const SYN: Self = Self(0x02);
    pub const RST: Self = Self(0x04);
    pub const PSH: Self = Self(0x08);
    pub const ACK: Self = Self(0x10);
    pub const URG: Self = Self(0x20);
    pub const ECE: Self = Self(0x40);
    pub const CWR: Self = Self(0x80);

    /// Flags as found in the TCP header's flags byte.
    pub const fn from_header_byte(byte: u8) -> Self {
        Self(byte)
    }

    /// The flags as the TCP header's flags byte holds them.
    pub const fn header_byte(self) -> u8 {
        self.0
    }

    /// True when every flag of `flags` is set in `self`.
    pub const fn contains(self, flags: Self) -> bool {
        self.0 & flags.0 == flags.0
    }
}

impl BitOr for TcpFlags {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Connection state of a TCP flow, as far as the flags show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// No handshake seen: the flow was picked up mid-stream (or is not TCP).
    #[default]
    None,
    /// The initiator sent a SYN.
    SynSent,
    /// The responder answered with SYN-ACK.
    SynReceived,
    /// The initiator acknowledged the SYN-ACK, or a mid-stream flow carried an ACK in the reply
    /// direction.
    Established,
    /// A FIN was seen in either direction.
    Closing,
    /// A RST was seen.
    Closed,
}

/// The state after a packet with `flags` travelling in `direction`.
///
/// | from                      | packet                         | to            |
/// |---------------------------|--------------------------------|---------------|
/// | any                       | RST                            | `Closed`      |
/// | `None`, `Closing`, `Closed` | SYN without ACK, forward     | `SynSent` (a new connection reusing the ports) |
/// | `SynSent`                 | SYN-ACK, reverse               | `SynReceived` |
/// | `SynReceived`             | ACK without SYN or FIN, forward| `Established` |
/// | `None`                    | ACK without SYN or FIN, reverse| `Established` (mid-stream pickup: both sides talk) |
/// | any but `Closed`          | FIN                            | `Closing`     |
/// | otherwise                 |                                | unchanged     |
///
/// A SYN opened from the responder's side of an existing flow is ignored: the flow stays in its
/// state until it expires and the next SYN creates a fresh flow.
pub fn update_tcp_state(state: TcpState, direction: Direction, flags: TcpFlags) -> TcpState {
    use Direction::{Forward, Reverse};
    use TcpState::{Closed, Closing, Established, None, SynReceived, SynSent};
    if flags.contains(TcpFlags::RST) {
        return Closed;
    }
    let syn = flags.contains(TcpFlags::SYN);
    let ack = flags.contains(TcpFlags::ACK);
    let fin = flags.contains(TcpFlags::FIN);
    match (state, direction) {
        (None | Closing | Closed, Forward) if syn && !ack => SynSent,
        (SynSent, Reverse) if syn && ack => SynReceived,
        (SynReceived, Forward) | (None, Reverse) if ack && !syn && !fin => Established,
        (Closed, _) => Closed,
        _ if fin => Closing,
        _ => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Forward, Reverse};

    const SYN_ACK: TcpFlags = TcpFlags::from_header_byte(0x12);
    const FIN_ACK: TcpFlags = TcpFlags::from_header_byte(0x11);

    fn drive(packets: &[(Direction, TcpFlags)]) -> TcpState {
        packets
            .iter()
            .fold(TcpState::None, |state, &(direction, flags)| {
                update_tcp_state(state, direction, flags)
            })
    }

    #[test]
    fn three_way_handshake_establishes() {
        let handshake = [
            (Forward, TcpFlags::SYN),
            (Reverse, SYN_ACK),
            (Forward, TcpFlags::ACK),
        ];
        assert_eq!(drive(&handshake[..1]), TcpState::SynSent);
        assert_eq!(drive(&handshake[..2]), TcpState::SynReceived);
        assert_eq!(drive(&handshake), TcpState::Established);
    }

    #[test]
    fn syn_ack_from_the_initiator_does_not_advance() {
        assert_eq!(
            drive(&[(Forward, TcpFlags::SYN), (Forward, SYN_ACK)]),
            TcpState::SynSent
        );
    }

    #[test]
    fn responder_ack_without_syn_ack_does_not_establish() {
        let packets = [(Forward, TcpFlags::SYN), (Reverse, TcpFlags::ACK)];
        assert_eq!(drive(&packets), TcpState::SynSent);
    }

    #[test]
    fn mid_stream_pickup_needs_an_ack_in_the_reply_direction() {
        assert_eq!(
            drive(&[(Forward, TcpFlags::ACK), (Forward, TcpFlags::ACK)]),
            TcpState::None
        );
        assert_eq!(
            drive(&[(Forward, TcpFlags::ACK), (Reverse, TcpFlags::ACK)]),
            TcpState::Established
        );
    }

    #[test]
    fn fin_closes_from_either_side() {
        let established = [
            (Forward, TcpFlags::SYN),
            (Reverse, SYN_ACK),
            (Forward, TcpFlags::ACK),
        ];
        for direction in [Forward, Reverse] {
            let state = update_tcp_state(drive(&established), direction, FIN_ACK);
            assert_eq!(state, TcpState::Closing);
        }
    }

    #[test]
    fn rst_closes_any_state_and_a_new_syn_reopens() {
        let state = update_tcp_state(
            TcpState::Established,
            Reverse,
            TcpFlags::RST | TcpFlags::ACK,
        );
        assert_eq!(state, TcpState::Closed);
        assert_eq!(update_tcp_state(state, Reverse, FIN_ACK), TcpState::Closed);
        assert_eq!(
            update_tcp_state(state, Forward, TcpFlags::SYN),
            TcpState::SynSent
        );
        assert_eq!(
            update_tcp_state(TcpState::Closing, Forward, TcpFlags::SYN),
            TcpState::SynSent
        );
    }

    #[test]
    fn syn_on_an_established_flow_is_ignored() {
        for direction in [Forward, Reverse] {
            let state = update_tcp_state(TcpState::Established, direction, TcpFlags::SYN);
            assert_eq!(state, TcpState::Established);
        }
    }
}
