//! IPFIX (RFC 7011) export of the VFN's flow records: encoding only. The crate opens no socket
//! and reads no clock: the caller passes the time, and sends each message the [`Exporter`] hands
//! it as one UDP datagram to its collector. No `unsafe`; nothing allocates after
//! [`Exporter::new`].
//!
//! ```
//! use std::net::Ipv4Addr;
//! use vfn_ipfix::{Exporter, ExporterConfig, FlowAddresses, FlowEndReason, FlowExport, ShortText};
//!
//! let mut exporter = Exporter::new(ExporterConfig::default())?;
//! let record = FlowExport {
//!     addresses: FlowAddresses::V4 {
//!         source: Ipv4Addr::new(198, 18, 0, 1),
//!         destination: Ipv4Addr::new(198, 19, 0, 1),
//!     },
//!     source_port: 40000,
//!     destination_port: 443,
//!     protocol: 6,
//!     ingress_interface: 1,
//!     egress_interface: 2,
//!     flow_start_ms: 1_700_000_000_000,
//!     flow_end_ms: 1_700_000_000_250,
//!     end_reason: FlowEndReason::EndOfFlowDetected,
//!     tcp_control_bits: 0x1b,
//!     tcp_flag_counts: Default::default(),
//!     forward: Default::default(),
//!     reverse: Default::default(),
//!     inter_arrival_us: Default::default(),
//!     active_us: Default::default(),
//!     idle_us: Default::default(),
//!     rule_id: ShortText::new("allow-web")?,
//!     rule_set_version: ShortText::new("v42")?,
//! };
//! let mut datagrams = Vec::new();
//! let now_unix_s = 1_700_000_001;
//! exporter.push(&record, now_unix_s, |message| datagrams.push(message.to_vec()));
//! exporter.flush(now_unix_s, |message| datagrams.push(message.to_vec())); // on a timer
//! assert_eq!(datagrams.len(), 1); // the templates, then the record
//! assert_eq!(exporter.sequence_number(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Messages
//!
//! Records are packed into messages of at most `message_size_max` bytes (1400 by default),
//! grouped into one data set per run of records of the same family. Two templates describe them,
//! [`TEMPLATE_ID_IPV4`] and [`TEMPLATE_ID_IPV6`]: the same fields but for the addresses. Standard
//! IANA elements carry the flow's key, counts, times, `tcpControlBits` and `flowEndReason`;
//! RFC 5103 reverse elements ([`REVERSE_ENTERPRISE_NUMBER`]) the reverse direction's counts;
//! elements of [`VFN_ENTERPRISE_NUMBER`] the statistics, the rule and the rule-set version.
//! `docs/ipfix.md` lists every field.
//!
//! - **Sequence number**: the count of data records sent before the message, modulo 2^32, per
//!   exporter (RFC 7011, 3.1). A collector tells lost records from its gaps.
//! - **Templates**: in the first message, then again after `template_refresh_messages` messages
//!   or `template_refresh_seconds`, whichever comes first (UDP has no other way to tell a
//!   collector that starts late). They lead the message that carries them; when they and the
//!   next record do not fit together, they leave in a message of their own.
//! - **Bounds**: a configuration whose messages could not hold the largest record (IPv6, both
//!   texts of [`SHORT_TEXT_LEN_MAX`] bytes) is refused by [`Exporter::new`], so encoding a record
//!   never fails.
//!
//! # Anonymization
//!
//! With a [`CryptoPan`] in the configuration, every address leaves as its Crypto-PAn image:
//! prefix-preserving (addresses that share a k-bit prefix have images that share exactly k bits),
//! keyed, and the same for the same key. Everything else, ports included, leaves as it is.

mod cryptopan;
mod error;
mod exporter;
mod message;
mod record;
mod template;

pub use cryptopan::CryptoPan;
pub use error::{ConfigError, TextTooLong};
pub use exporter::{
    Exporter, ExporterConfig, MESSAGE_SIZE_DEFAULT, MESSAGE_SIZE_MIN, TEMPLATE_REFRESH_SECONDS_MAX,
};
pub use record::{
    DirectionStats, FlowAddresses, FlowEndReason, FlowExport, SHORT_TEXT_LEN_MAX, ShortText,
    Summary, TcpFlagCounts,
};
pub use template::{
    REVERSE_ENTERPRISE_NUMBER, TEMPLATE_ID_IPV4, TEMPLATE_ID_IPV6, VFN_ENTERPRISE_NUMBER,
};
