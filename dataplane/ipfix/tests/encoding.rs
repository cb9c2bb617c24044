//! The exporter's messages, decoded back by a strict test collector: structure, sequence numbers,
//! template refresh, message size, and every field against a hand-written table of the templates
//! (the one in `docs/ipfix.md`).

#[path = "support/decoder.rs"]
mod decoder;
#[path = "support/records.rs"]
mod records;

use std::net::{Ipv4Addr, Ipv6Addr};

use decoder::{Collector, Message, Record, field};
use proptest::prelude::*;
use records::{record_v4, record_v6};
use vfn_ipfix::{
    ConfigError, CryptoPan, Exporter, ExporterConfig, FlowAddresses, FlowExport, MESSAGE_SIZE_MIN,
    SHORT_TEXT_LEN_MAX, ShortText, Summary, TEMPLATE_ID_IPV4, TEMPLATE_ID_IPV6,
    TEMPLATE_REFRESH_SECONDS_MAX,
};

const IANA: Option<u32> = None;
const REVERSE: Option<u32> = Some(29305);
const VFN: Option<u32> = Some(32473);
const NOW_S: u32 = 1_700_000_100;

/// The fields a record should decode to, in template order: the templates of `docs/ipfix.md`,
/// written out independently of the crate.
fn expected_fields(record: &FlowExport) -> Record {
    let (source, destination, source_id, destination_id) = match record.addresses {
        FlowAddresses::V4 {
            source,
            destination,
        } => (
            source.octets().to_vec(),
            destination.octets().to_vec(),
            8,
            12,
        ),
        FlowAddresses::V6 {
            source,
            destination,
        } => (
            source.octets().to_vec(),
            destination.octets().to_vec(),
            27,
            28,
        ),
    };
    let flags = &record.tcp_flag_counts;
    let mut fields: Record = vec![
        ((IANA, source_id), source),
        ((IANA, destination_id), destination),
        ((IANA, 7), record.source_port.to_be_bytes().to_vec()),
        ((IANA, 11), record.destination_port.to_be_bytes().to_vec()),
        ((IANA, 4), vec![record.protocol]),
        ((IANA, 1), record.forward.octets.to_be_bytes().to_vec()),
        ((IANA, 2), record.forward.packets.to_be_bytes().to_vec()),
        ((REVERSE, 1), record.reverse.octets.to_be_bytes().to_vec()),
        ((REVERSE, 2), record.reverse.packets.to_be_bytes().to_vec()),
        ((IANA, 152), record.flow_start_ms.to_be_bytes().to_vec()),
        ((IANA, 153), record.flow_end_ms.to_be_bytes().to_vec()),
        ((IANA, 6), vec![0, record.tcp_control_bits]),
        ((IANA, 136), vec![record.end_reason as u8]),
        ((IANA, 10), record.ingress_interface.to_be_bytes().to_vec()),
        ((IANA, 14), record.egress_interface.to_be_bytes().to_vec()),
    ];
    let counts = [
        flags.fin, flags.syn, flags.rst, flags.psh, flags.ack, flags.urg, flags.ece, flags.cwr,
    ];
    for (id, count) in (1..).zip(counts) {
        fields.push(((VFN, id), count.to_be_bytes().to_vec()));
    }
    let summaries: [(u16, &Summary); 7] = [
        (10, &record.forward.packet_length),
        (14, &record.reverse.packet_length),
        (20, &record.forward.inter_arrival_us),
        (24, &record.reverse.inter_arrival_us),
        (28, &record.inter_arrival_us),
        (40, &record.active_us),
        (44, &record.idle_us),
    ];
    for (first, summary) in summaries {
        fields.push(((VFN, first), summary.min.to_be_bytes().to_vec()));
        fields.push(((VFN, first + 1), summary.max.to_be_bytes().to_vec()));
        fields.push(((VFN, first + 2), summary.mean.to_be_bytes().to_vec()));
        fields.push(((VFN, first + 3), summary.std_dev.to_be_bytes().to_vec()));
    }
    for (id, window) in [
        (50, record.forward.initial_tcp_window),
        (51, record.reverse.initial_tcp_window),
    ] {
        let on_wire = window.map_or(u32::MAX, u32::from);
        fields.push(((VFN, id), on_wire.to_be_bytes().to_vec()));
    }
    fields.push(((VFN, 60), record.rule_id.as_str().as_bytes().to_vec()));
    fields.push((
        (VFN, 61),
        record.rule_set_version.as_str().as_bytes().to_vec(),
    ));
    fields
}

/// Bytes of the record on the wire: its fields and the two texts' one-byte length prefixes.
fn encoded_len(record: &FlowExport) -> usize {
    expected_fields(record)
        .iter()
        .map(|(_, value)| value.len())
        .sum::<usize>()
        + 2
}

fn template_id(record: &FlowExport) -> u16 {
    match record.addresses {
        FlowAddresses::V4 { .. } => TEMPLATE_ID_IPV4,
        FlowAddresses::V6 { .. } => TEMPLATE_ID_IPV6,
    }
}

fn exporter(config: ExporterConfig) -> Exporter {
    Exporter::new(config).expect("a valid configuration")
}

/// Pushes the records at `now`, flushes, and returns the messages that left.
fn export(exporter: &mut Exporter, records: &[FlowExport], now_s: u32) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    for record in records {
        exporter.push(record, now_s, |m| messages.push(m.to_vec()));
    }
    exporter.flush(now_s, |m| messages.push(m.to_vec()));
    messages
}

fn decode_all(collector: &mut Collector, messages: &[Vec<u8>]) -> Vec<Message> {
    messages
        .iter()
        .map(|m| {
            collector
                .decode(m)
                .expect("the collector decodes every message")
        })
        .collect()
}

#[test]
fn first_message_carries_the_templates_then_the_record() {
    let mut exporter = exporter(ExporterConfig {
        observation_domain_id: 77,
        ..Default::default()
    });
    let messages = export(&mut exporter, &[record_v4()], NOW_S);
    assert_eq!(messages.len(), 1);
    let message = Collector::default().decode(&messages[0]).unwrap();
    assert_eq!(usize::from(message.length), messages[0].len());
    assert_eq!(message.export_time_s, NOW_S);
    assert_eq!(message.sequence_number, 0);
    assert_eq!(message.observation_domain_id, 77);
    assert_eq!(message.template_ids(), [TEMPLATE_ID_IPV4, TEMPLATE_ID_IPV6]);
    assert_eq!(
        message.records(),
        [(TEMPLATE_ID_IPV4, expected_fields(&record_v4()))]
    );
    assert_eq!(exporter.sequence_number(), 1);
}

#[test]
fn every_field_of_an_ipv6_record_decodes_to_its_value() {
    let mut exporter = exporter(ExporterConfig::default());
    let messages = export(&mut exporter, &[record_v6()], NOW_S);
    let message = Collector::default().decode(&messages[0]).unwrap();
    let records = message.records();
    assert_eq!(records, [(TEMPLATE_ID_IPV6, expected_fields(&record_v6()))]);
    let address = field(&records[0].1, (IANA, 27));
    assert_eq!(address, "2001:2::1".parse::<Ipv6Addr>().unwrap().octets());
}

#[test]
fn records_of_both_families_share_a_message_in_one_set_per_run() {
    let mut exporter = exporter(ExporterConfig {
        message_size_max: 4000,
        ..Default::default()
    });
    let records = [record_v4(), record_v4(), record_v6(), record_v4()];
    let messages = export(&mut exporter, &records, NOW_S);
    assert_eq!(messages.len(), 1);
    let message = Collector::default().decode(&messages[0]).unwrap();
    let data_sets: Vec<(u16, usize)> = message
        .sets
        .iter()
        .filter_map(|set| match set {
            decoder::Set::Data {
                template_id,
                records,
            } => Some((*template_id, records.len())),
            decoder::Set::Templates(_) => None,
        })
        .collect();
    assert_eq!(
        data_sets,
        [
            (TEMPLATE_ID_IPV4, 2),
            (TEMPLATE_ID_IPV6, 1),
            (TEMPLATE_ID_IPV4, 1)
        ]
    );
}

#[test]
fn sequence_number_counts_the_data_records_sent_before_the_message() {
    let mut exporter = exporter(ExporterConfig {
        template_refresh_messages: 2,
        ..Default::default()
    });
    let records: Vec<FlowExport> = (0..11)
        .map(|i| if i % 3 == 0 { record_v6() } else { record_v4() })
        .collect();
    let messages = export(&mut exporter, &records, NOW_S);
    let decoded = decode_all(&mut Collector::default(), &messages);
    assert!(decoded.len() >= 4, "{} messages", decoded.len());
    let mut sent = 0;
    for message in &decoded {
        assert_eq!(message.sequence_number, sent);
        sent += message.records().len() as u32;
    }
    assert_eq!(sent, 11);
    assert_eq!(exporter.sequence_number(), 11);
    // A message with the templates only carries the count too.
    let mut templates_only = Vec::new();
    exporter.flush(NOW_S + 60, |m| templates_only.push(m.to_vec()));
    let message = Collector::default().decode(&templates_only[0]).unwrap();
    assert_eq!(message.sequence_number, 11);
    assert!(message.records().is_empty());
}

#[test]
fn templates_return_every_n_messages() {
    let mut exporter = exporter(ExporterConfig {
        template_refresh_messages: 3,
        ..Default::default()
    });
    let mut carried = Vec::new();
    for _ in 0..8 {
        let messages = export(&mut exporter, &[record_v4()], NOW_S);
        assert_eq!(messages.len(), 1);
        let message = Collector::default().decode(&messages[0]);
        // A collector that has not seen the templates cannot decode the data.
        carried.push(message.is_ok());
    }
    let expected = [true, false, false, true, false, false, true, false];
    assert_eq!(carried, expected);
}

#[test]
fn templates_return_after_the_refresh_time_even_without_records() {
    let mut exporter = exporter(ExporterConfig {
        template_refresh_seconds: 30,
        ..Default::default()
    });
    assert_eq!(export(&mut exporter, &[record_v4()], NOW_S).len(), 1);
    let mut messages = Vec::new();
    exporter.flush(NOW_S + 29, |m| messages.push(m.to_vec()));
    assert!(messages.is_empty(), "nothing to send, templates not due");
    exporter.flush(NOW_S + 30, |m| messages.push(m.to_vec()));
    let message = Collector::default().decode(&messages[0]).unwrap();
    assert_eq!(message.template_ids(), [TEMPLATE_ID_IPV4, TEMPLATE_ID_IPV6]);
    assert!(message.records().is_empty());
    assert_eq!(message.export_time_s, NOW_S + 30);
    // And a record due after the time brings them too.
    let messages = export(&mut exporter, &[record_v4()], NOW_S + 60);
    assert!(Collector::default().decode(&messages[0]).is_ok());
}

#[test]
fn templates_return_when_the_clock_goes_back() {
    let mut exporter = exporter(ExporterConfig::default());
    export(&mut exporter, &[record_v4()], NOW_S);
    let messages = export(&mut exporter, &[record_v4()], NOW_S - 5);
    assert!(Collector::default().decode(&messages[0]).is_ok());
}

#[test]
fn templates_leave_alone_when_they_crowd_out_the_record() {
    let mut exporter = exporter(ExporterConfig {
        message_size_max: MESSAGE_SIZE_MIN,
        ..Default::default()
    });
    let mut largest = record_v6();
    largest.rule_id = ShortText::new(&"r".repeat(SHORT_TEXT_LEN_MAX)).unwrap();
    largest.rule_set_version = ShortText::new(&"v".repeat(SHORT_TEXT_LEN_MAX)).unwrap();
    let messages = export(&mut exporter, &[largest, largest], NOW_S);
    let decoded = decode_all(&mut Collector::default(), &messages);
    let shapes: Vec<(usize, usize)> = decoded
        .iter()
        .map(|m| (m.template_ids().len(), m.records().len()))
        .collect();
    assert_eq!(shapes, [(2, 0), (0, 1), (0, 1)]);
    assert!(
        messages
            .iter()
            .all(|m| m.len() <= usize::from(MESSAGE_SIZE_MIN))
    );
    // The largest record fills the smallest message, or MESSAGE_SIZE_MIN could be smaller.
    let templates_len = messages[0].len();
    assert_eq!(
        usize::from(MESSAGE_SIZE_MIN),
        messages[1].len().max(templates_len)
    );
}

#[test]
fn flush_without_records_or_due_templates_sends_nothing() {
    let mut exporter = exporter(ExporterConfig::default());
    export(&mut exporter, &[record_v4()], NOW_S);
    let mut count = 0;
    exporter.flush(NOW_S + 1, |_| count += 1);
    assert_eq!(count, 0);
}

#[test]
fn configurations_out_of_bounds_are_refused() {
    let refused = |config: ExporterConfig| Exporter::new(config).unwrap_err();
    assert_eq!(
        refused(ExporterConfig {
            message_size_max: MESSAGE_SIZE_MIN - 1,
            ..Default::default()
        }),
        ConfigError::MessageSizeTooSmall {
            requested: MESSAGE_SIZE_MIN - 1,
            min: MESSAGE_SIZE_MIN
        }
    );
    assert_eq!(
        refused(ExporterConfig {
            template_refresh_messages: 0,
            ..Default::default()
        }),
        ConfigError::TemplateRefreshMessagesZero
    );
    for seconds in [0, TEMPLATE_REFRESH_SECONDS_MAX + 1] {
        assert_eq!(
            refused(ExporterConfig {
                template_refresh_seconds: seconds,
                ..Default::default()
            }),
            ConfigError::TemplateRefreshSecondsOutOfRange {
                requested: seconds,
                max: TEMPLATE_REFRESH_SECONDS_MAX
            }
        );
    }
    Exporter::new(ExporterConfig {
        message_size_max: u16::MAX,
        template_refresh_seconds: TEMPLATE_REFRESH_SECONDS_MAX,
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn anonymization_replaces_the_addresses_and_nothing_else() {
    let key = [7; 32];
    let cryptopan = CryptoPan::new(&key);
    let mut exporter = exporter(ExporterConfig {
        anonymization: Some(CryptoPan::new(&key)),
        ..Default::default()
    });
    let messages = export(&mut exporter, &[record_v4(), record_v6()], NOW_S);
    let records = Collector::default().decode(&messages[0]).unwrap().records();
    for ((_, decoded), original) in records.iter().zip([record_v4(), record_v6()]) {
        let mut anonymized = original;
        anonymized.addresses = match original.addresses {
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
        };
        assert_ne!(anonymized.addresses, original.addresses);
        assert_eq!(decoded, &expected_fields(&anonymized));
    }
    let source = field(&records[0].1, (IANA, 8));
    assert_ne!(source, Ipv4Addr::new(198, 18, 0, 1).octets());
}

/// The template id of the message's last set, if it is a data set: read from its set headers.
fn last_data_set(message: &[u8]) -> Option<u16> {
    let mut at = 16;
    let mut last = None;
    while at < message.len() {
        let id = u16::from_be_bytes([message[at], message[at + 1]]);
        let length = u16::from_be_bytes([message[at + 2], message[at + 3]]);
        last = (id >= 256).then_some(id);
        at += usize::from(length);
    }
    last
}

fn any_record() -> impl Strategy<Value = FlowExport> {
    let addresses = prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(s, d)| FlowAddresses::V4 {
            source: Ipv4Addr::from_bits(s),
            destination: Ipv4Addr::from_bits(d),
        }),
        (any::<u128>(), any::<u128>()).prop_map(|(s, d)| FlowAddresses::V6 {
            source: Ipv6Addr::from_bits(s),
            destination: Ipv6Addr::from_bits(d),
        }),
    ];
    let text = || proptest::string::string_regex("[a-z0-9.é-]{0,130}").expect("a valid regex");
    (addresses, any::<u64>(), any::<u16>(), text(), text()).prop_map(
        |(addresses, octets, port, rule_id, version)| FlowExport {
            addresses,
            source_port: port,
            rule_id: ShortText::truncated(&rule_id),
            rule_set_version: ShortText::truncated(&version),
            forward: vfn_ipfix::DirectionStats {
                octets,
                ..record_v4().forward
            },
            ..record_v4()
        },
    )
}

/// What the exporter is asked to do.
#[derive(Clone, Debug)]
enum Step {
    Push(Box<FlowExport>),
    Flush,
    Wait(u32),
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => any_record().prop_map(|record| Step::Push(Box::new(record))),
        1 => Just(Step::Flush),
        1 => (0..40u32).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Against the simplest model of a collector: every record arrives once, in order, in a
    /// message no larger than configured; sequence numbers count the records before; a message
    /// leaves only when the next record does not fit in it (or on flush); and no run of messages
    /// without templates outlasts the refresh count.
    #[test]
    fn any_sequence_of_records_arrives_whole_in_bounded_messages(
        message_size_max in MESSAGE_SIZE_MIN..=4000,
        refresh_messages in 1..5u32,
        steps in proptest::collection::vec(any_step(), 1..60),
    ) {
        let mut exporter = exporter(ExporterConfig {
            message_size_max,
            template_refresh_messages: refresh_messages,
            template_refresh_seconds: 20,
            ..Default::default()
        });
        let mut now = NOW_S;
        let mut pushed = Vec::new();
        let mut messages: Vec<Vec<u8>> = Vec::new();
        for step in steps {
            match step {
                Step::Push(record) => {
                    let before = messages.len();
                    exporter.push(&record, now, |m| messages.push(m.to_vec()));
                    if let Some(first) = messages.get(before) {
                        // It left only because this record did not fit in it (the message in
                        // progress, or the templates alone), with a set header unless it could
                        // have joined the last set.
                        let last_set = last_data_set(first);
                        let set_header_len =
                            if last_set == Some(template_id(&record)) { 0 } else { 4 };
                        prop_assert!(first.len() + set_header_len + encoded_len(&record)
                            > usize::from(message_size_max));
                    }
                    pushed.push(*record);
                }
                Step::Flush => exporter.flush(now, |m| messages.push(m.to_vec())),
                Step::Wait(seconds) => now += seconds,
            }
        }
        exporter.flush(now, |m| messages.push(m.to_vec()));

        let mut collector = Collector::default();
        let mut received = Vec::new();
        let mut last_with_templates: Option<(usize, bool)> = None;
        for (index, bytes) in messages.iter().enumerate() {
            prop_assert!(bytes.len() <= usize::from(message_size_max));
            let message = collector.decode(bytes).unwrap();
            prop_assert_eq!(message.sequence_number as usize, received.len());
            if !message.template_ids().is_empty() {
                last_with_templates = Some((index, message.records().is_empty()));
            } else {
                let (last, templates_alone) = last_with_templates.unwrap();
                let since = (index - last) as u32;
                prop_assert!(since < refresh_messages || (since == 1 && templates_alone));
            }
            received.extend(message.records());
        }
        let expected: Vec<(u16, Record)> =
            pushed.iter().map(|r| (template_id(r), expected_fields(r))).collect();
        prop_assert_eq!(received, expected);
        prop_assert_eq!(exporter.sequence_number() as usize, pushed.len());
    }
}
