//! The state of the export to one collector: the message being filled, the sequence number and
//! the template refresh schedule.

use crate::cryptopan::CryptoPan;
use crate::error::ConfigError;
use crate::message::{self, MESSAGE_HEADER_LEN, SET_HEADER_LEN};
use crate::record::{FlowAddresses, FlowExport};
use crate::template::{self, Family, RECORD_LEN_MAX, TEMPLATE_SET_LEN};

/// The default size of a message: fits a 1500-byte Ethernet MTU with IPv6, UDP and tunnel
/// headers to spare.
pub const MESSAGE_SIZE_DEFAULT: u16 = 1400;

/// The smallest message size an exporter accepts: one that holds the template set alone, and the
/// largest record alone.
pub const MESSAGE_SIZE_MIN: u16 = {
    let templates = MESSAGE_HEADER_LEN + TEMPLATE_SET_LEN;
    let record = MESSAGE_HEADER_LEN + SET_HEADER_LEN + RECORD_LEN_MAX;
    let min = if templates > record {
        templates
    } else {
        record
    };
    assert!(min <= u16::MAX as usize);
    min as u16
};

const _: () = assert!(MESSAGE_SIZE_MIN <= MESSAGE_SIZE_DEFAULT);

/// The longest a collector waits for the templates: one that starts, or restarts, between two
/// refreshes cannot decode a record before the next one.
pub const TEMPLATE_REFRESH_SECONDS_MAX: u32 = 3600;

/// How an [`Exporter`] frames its messages for one collector.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// Identifies this exporter's records at the collector (with the exporter's address).
    pub observation_domain_id: u32,
    /// The largest message, in bytes: the UDP payload. From [`MESSAGE_SIZE_MIN`]; the header's
    /// length field bounds it at 65 535.
    pub message_size_max: u16,
    /// The templates go out again in the first message after this many messages since they
    /// last did (1: with every message, or in a message of their own just before it when they
    /// and its first record do not fit together).
    pub template_refresh_messages: u32,
    /// ... or in the first message, or [`Exporter::flush`], this many seconds after they last
    /// did, whichever comes first. 1 to [`TEMPLATE_REFRESH_SECONDS_MAX`].
    pub template_refresh_seconds: u32,
    /// Replaces the addresses of every record with their Crypto-PAn image before they leave.
    pub anonymization: Option<CryptoPan>,
}

impl Default for ExporterConfig {
    /// A collector that restarts learns the templates within a minute, or within 100 messages
    /// when records flow fast; 100 messages of at least 2 records put one template set (about
    /// 800 bytes) in 140 KB of records.
    fn default() -> Self {
        Self {
            observation_domain_id: 0,
            message_size_max: MESSAGE_SIZE_DEFAULT,
            template_refresh_messages: 100,
            template_refresh_seconds: 60,
            anonymization: None,
        }
    }
}

/// Encodes flow records into IPFIX messages for one collector, and hands each complete message
/// to the caller, who sends it (one UDP datagram each).
///
/// The message is built in a buffer of `message_size_max` bytes allocated once, by
/// [`Exporter::new`]; encoding a record allocates nothing. Every record fits a message (the
/// configuration is refused otherwise), so encoding cannot fail.
#[derive(Debug)]
pub struct Exporter {
    config: ExporterConfig,
    /// The message being filled: empty, or a header followed by sets, at least one record in
    /// them.
    message: Vec<u8>,
    /// The data set being filled: the family of its template and where its header starts.
    open_set: Option<(Family, usize)>,
    records_in_message: u32,
    /// Data records sent in the messages before this one, modulo 2^32 (RFC 7011, 3.1).
    sequence_number: u32,
    templates_sent_at_s: Option<u32>,
    /// Messages sent since (and including) the last one that carried the templates.
    messages_since_templates: u32,
}

impl Exporter {
    pub fn new(config: ExporterConfig) -> Result<Self, ConfigError> {
        if config.message_size_max < MESSAGE_SIZE_MIN {
            return Err(ConfigError::MessageSizeTooSmall {
                requested: config.message_size_max,
                min: MESSAGE_SIZE_MIN,
            });
        }
        if config.template_refresh_messages == 0 {
            return Err(ConfigError::TemplateRefreshMessagesZero);
        }
        if !(1..=TEMPLATE_REFRESH_SECONDS_MAX).contains(&config.template_refresh_seconds) {
            return Err(ConfigError::TemplateRefreshSecondsOutOfRange {
                requested: config.template_refresh_seconds,
                max: TEMPLATE_REFRESH_SECONDS_MAX,
            });
        }
        Ok(Self {
            message: Vec::with_capacity(usize::from(config.message_size_max)),
            config,
            open_set: None,
            records_in_message: 0,
            sequence_number: 0,
            templates_sent_at_s: None,
            messages_since_templates: 0,
        })
    }

    /// Adds the record to the message being filled. When it does not fit, the message leaves
    /// first, through `emit`; so may a message that holds only the templates, when a refresh is
    /// due and they leave no room for the record. `now_unix_s` is the wall-clock time in seconds
    /// since the Unix epoch: the export time of those messages and the clock of the refresh.
    pub fn push(&mut self, record: &FlowExport, now_unix_s: u32, mut emit: impl FnMut(&[u8])) {
        let addresses = self.anonymized(record.addresses);
        let family = Family::of(&addresses);
        let record_len = template::record_len(record, family);
        if !self.message.is_empty() && !self.fits(family, record_len) {
            self.finish_message(now_unix_s, &mut emit);
        }
        if self.message.is_empty() {
            let templates_due = self.templates_due(now_unix_s);
            self.begin_message(now_unix_s, templates_due);
            if !self.fits(family, record_len) {
                // Only the templates can crowd out a record from a new message: they leave
                // alone, and the record begins the next message.
                self.finish_message(now_unix_s, &mut emit);
                self.begin_message(now_unix_s, false);
            }
        }
        debug_assert!(
            self.fits(family, record_len),
            "the configuration fits every record"
        );
        self.write_record(family, record, &addresses);
    }

    /// Sends the message being filled, if any record is in it. With none, sends a message with
    /// the templates alone if a refresh is due by time, so that a collector that starts while no
    /// flow ends still learns them. Call it on a timer (for example every second), so that
    /// records do not wait in a message that is slow to fill.
    pub fn flush(&mut self, now_unix_s: u32, mut emit: impl FnMut(&[u8])) {
        if self.message.is_empty() {
            if !self.templates_due(now_unix_s) {
                return;
            }
            self.begin_message(now_unix_s, true);
        }
        self.finish_message(now_unix_s, &mut emit);
    }

    /// Data records sent so far, modulo 2^32: the sequence number of the next message.
    pub fn sequence_number(&self) -> u32 {
        self.sequence_number
    }

    fn anonymized(&self, addresses: FlowAddresses) -> FlowAddresses {
        let Some(cryptopan) = &self.config.anonymization else {
            return addresses;
        };
        match addresses {
            FlowAddresses::V4 {
                source,
                destination,
            } => FlowAddresses::V4 {
                source: cryptopan.anonymize_ipv4(source),
                destination: cryptopan.anonymize_ipv4(destination),
            },
            FlowAddresses::V6 {
                source,
                destination,
            } => FlowAddresses::V6 {
                source: cryptopan.anonymize_ipv6(source),
                destination: cryptopan.anonymize_ipv6(destination),
            },
        }
    }

    /// A refresh is due on the first message, after `template_refresh_messages` messages, and
    /// after `template_refresh_seconds`; also when the clock went back since the templates left
    /// (the wrapping difference is then huge), since their age is then unknown.
    fn templates_due(&self, now_unix_s: u32) -> bool {
        match self.templates_sent_at_s {
            None => true,
            Some(sent_at_s) => {
                self.messages_since_templates >= self.config.template_refresh_messages
                    || now_unix_s.wrapping_sub(sent_at_s) >= self.config.template_refresh_seconds
            }
        }
    }

    fn begin_message(&mut self, now_unix_s: u32, with_templates: bool) {
        debug_assert!(self.message.is_empty());
        message::write_header(&mut self.message, self.config.observation_domain_id);
        if with_templates {
            template::write_template_set(&mut self.message);
            self.templates_sent_at_s = Some(now_unix_s);
            self.messages_since_templates = 0;
        }
    }

    /// Whether the record fits in the message, with a set header if it cannot join the open set.
    fn fits(&self, family: Family, record_len: usize) -> bool {
        let set_header_len = match self.open_set {
            Some((open, _)) if open == family => 0,
            _ => SET_HEADER_LEN,
        };
        self.message.len() + set_header_len + record_len
            <= usize::from(self.config.message_size_max)
    }

    fn write_record(&mut self, family: Family, record: &FlowExport, addresses: &FlowAddresses) {
        match self.open_set {
            Some((open, _)) if open == family => {}
            _ => {
                self.complete_open_set();
                let start = message::begin_set(&mut self.message, family.template_id());
                self.open_set = Some((family, start));
            }
        }
        template::write_record(record, addresses, &mut self.message);
        self.records_in_message += 1;
    }

    fn complete_open_set(&mut self) {
        if let Some((_, start)) = self.open_set.take() {
            message::complete_set(&mut self.message, start);
        }
    }

    fn finish_message(&mut self, now_unix_s: u32, emit: &mut impl FnMut(&[u8])) {
        self.complete_open_set();
        message::complete_header(&mut self.message, now_unix_s, self.sequence_number);
        debug_assert!(self.message.len() <= usize::from(self.config.message_size_max));
        emit(&self.message);
        self.sequence_number = self.sequence_number.wrapping_add(self.records_in_message);
        self.records_in_message = 0;
        self.messages_since_templates = self.messages_since_templates.saturating_add(1);
        self.message.clear();
    }
}
