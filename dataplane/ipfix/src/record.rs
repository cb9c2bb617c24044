//! The flow record this crate exports: plain data, filled by the caller from its flow table.
//! Nothing here allocates: a record is `Copy`, so a bounded queue of records between the workers
//! and the exporter thread holds them inline.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::TextTooLong;

/// The longest rule id or rule-set version a record carries, in bytes: the longest rule id the
/// rule compiler accepts (`vfn-rules`' default `max_id_len`). Below 255, so that the IPFIX
/// variable-length encoding of the text always takes its one-byte length form.
pub const SHORT_TEXT_LEN_MAX: usize = 128;

/// One flow, or the part of a flow between two exports, as it leaves the VFN.
///
/// Every count and statistic covers the same interval, from `flow_start_ms` to `flow_end_ms`.
/// "Forward" is the direction of the flow's initiator (the first packet seen), "reverse" the
/// other one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowExport {
    /// The initiator's address (source) and its peer's (destination).
    pub addresses: FlowAddresses,
    /// The initiator's port, or what the flow table keys in its place for protocols without
    /// ports (0; the identifier for ICMP echo).
    pub source_port: u16,
    /// The peer's port, keyed the same way.
    pub destination_port: u16,
    /// The IP protocol number (IPv6: the upper-layer protocol).
    pub protocol: u8,
    /// The logical interface the initiator's packets came in on.
    pub ingress_interface: u32,
    /// The logical interface the initiator's packets left by.
    pub egress_interface: u32,
    /// The first packet of the interval, in milliseconds since the Unix epoch.
    pub flow_start_ms: u64,
    /// The last packet of the interval, in milliseconds since the Unix epoch.
    pub flow_end_ms: u64,
    pub end_reason: FlowEndReason,
    /// The OR of the TCP flags byte (FIN = 0x01 ... CWR = 0x80) of every packet, both directions;
    /// 0 for other protocols.
    pub tcp_control_bits: u8,
    /// Packets with each TCP flag set, both directions.
    pub tcp_flag_counts: TcpFlagCounts,
    /// The initiator's direction.
    pub forward: DirectionStats,
    /// Its peer's direction.
    pub reverse: DirectionStats,
    /// Time between consecutive packets of the flow, either direction, in microseconds.
    pub inter_arrival_us: Summary,
    /// Periods of activity, in microseconds, as the flow table delimits them.
    pub active_us: Summary,
    /// Periods without a packet between the active ones, in microseconds.
    pub idle_us: Summary,
    /// The rule that decided the flow (empty if none did).
    pub rule_id: ShortText,
    /// The version of the rule set that rule belongs to.
    pub rule_set_version: ShortText,
}

/// The two endpoints of a flow; one type per family, so that a record cannot mix them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowAddresses {
    V4 {
        source: Ipv4Addr,
        destination: Ipv4Addr,
    },
    V6 {
        source: Ipv6Addr,
        destination: Ipv6Addr,
    },
}

/// What one direction of a flow carried.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirectionStats {
    /// Bytes of IP packets (IP total length, headers included, link layer excluded).
    pub octets: u64,
    /// IP packets.
    pub packets: u64,
    /// IP total length of the packets, in bytes.
    pub packet_length: Summary,
    /// Time between consecutive packets of this direction, in microseconds.
    pub inter_arrival_us: Summary,
    /// The window field of the direction's first TCP packet (unscaled), if there was one.
    pub initial_tcp_window: Option<u16>,
}

/// Minimum, maximum, mean and standard deviation of a series, as the caller computed them
/// (all zero for an empty series).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub std_dev: f64,
}

/// Packets of a flow with each TCP flag set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlagCounts {
    pub fin: u64,
    pub syn: u64,
    pub rst: u64,
    pub psh: u64,
    pub ack: u64,
    pub urg: u64,
    pub ece: u64,
    pub cwr: u64,
}

/// Why the flow (or this part of it) was exported: the IANA `flowEndReason` values (RFC 5102).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FlowEndReason {
    /// No packet for the idle timeout.
    IdleTimeout = 1,
    /// The flow has lasted the active timeout and goes on; a later record continues it.
    ActiveTimeout = 2,
    /// The end of the flow was seen (TCP FIN or RST).
    EndOfFlowDetected = 3,
    /// Ended from outside the flow, for example because the router stops.
    ForcedEnd = 4,
    /// Evicted to make room in a full flow table.
    LackOfResources = 5,
}

/// UTF-8 text of at most [`SHORT_TEXT_LEN_MAX`] bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortText {
    len: u8,
    bytes: [u8; SHORT_TEXT_LEN_MAX],
}

impl ShortText {
    pub const EMPTY: ShortText = ShortText {
        len: 0,
        bytes: [0; SHORT_TEXT_LEN_MAX],
    };

    /// The text, or an error if it is longer than [`SHORT_TEXT_LEN_MAX`] bytes.
    pub fn new(text: &str) -> Result<Self, TextTooLong> {
        if text.len() > SHORT_TEXT_LEN_MAX {
            return Err(TextTooLong { len: text.len() });
        }
        Ok(Self::copy_of(text))
    }

    /// The longest prefix of the text that fits, cut at a character boundary: for names the
    /// rules do not bound, where a shortened name is better than no record.
    pub fn truncated(text: &str) -> Self {
        let mut end = text.len().min(SHORT_TEXT_LEN_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self::copy_of(&text[..end])
    }

    /// The text, which the caller has checked to fit.
    fn copy_of(text: &str) -> Self {
        debug_assert!(text.len() <= SHORT_TEXT_LEN_MAX);
        let len = text.len().min(SHORT_TEXT_LEN_MAX);
        let mut short = Self::EMPTY;
        short.bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        short.len = len as u8;
        short
    }

    pub fn as_str(&self) -> &str {
        // Always valid: the bytes were copied from a `&str` cut at a character boundary.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Default for ShortText {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_keeps_text_up_to_the_bound() {
        let text = "r".repeat(SHORT_TEXT_LEN_MAX);
        assert_eq!(ShortText::new(&text).unwrap().as_str(), text);
        assert_eq!(ShortText::new("").unwrap(), ShortText::EMPTY);
    }

    #[test]
    fn short_text_refuses_text_past_the_bound() {
        let text = "r".repeat(SHORT_TEXT_LEN_MAX + 1);
        assert_eq!(
            ShortText::new(&text),
            Err(TextTooLong {
                len: SHORT_TEXT_LEN_MAX + 1
            })
        );
    }

    #[test]
    fn truncation_cuts_at_a_character_boundary() {
        // One-byte characters up to one short of the bound, then a two-byte one across it.
        let text = format!("{}é and more", "a".repeat(SHORT_TEXT_LEN_MAX - 1));
        let short = ShortText::truncated(&text);
        assert_eq!(short.as_str(), "a".repeat(SHORT_TEXT_LEN_MAX - 1));
        assert_eq!(ShortText::truncated("allow-web").as_str(), "allow-web");
    }
}
