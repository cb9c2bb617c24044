//! The two templates (IPv4 and IPv6 keys) and the data records they describe.
//!
//! One list, [`FIELDS`], drives both the template records and every data record, so the two
//! cannot disagree: the templates differ only in the length and element id of the two address
//! fields. `docs/ipfix.md` has the same list as a table, with units.

use crate::record::{FlowAddresses, FlowExport, SHORT_TEXT_LEN_MAX, ShortText, Summary};

/// The template of records with IPv4 addresses. Data sets carry their template's id.
pub const TEMPLATE_ID_IPV4: u16 = 256;
/// The template of records with IPv6 addresses.
pub const TEMPLATE_ID_IPV6: u16 = 257;

/// The private enterprise number of the VFN's own information elements (the flow statistics).
///
/// 32473 is the number RFC 5612 reserves for documentation and examples: no organisation owns
/// it, so no collector gives its elements a meaning of their own. A deployment that wants its
/// collectors to name these elements registers a number with IANA and changes this constant.
pub const VFN_ENTERPRISE_NUMBER: u32 = 32473;

/// The enterprise number of RFC 5103's reverse information elements: the IANA element with
/// the same id, for the reverse direction of a biflow.
pub const REVERSE_ENTERPRISE_NUMBER: u32 = 29305;

/// The set id of template sets (RFC 7011, 3.3.2).
const TEMPLATE_SET_ID: u16 = 2;

/// The field length that announces a variable-length field (RFC 7011, 7).
const VARIABLE_LENGTH: u16 = 0xFFFF;

/// The bit of a field specifier's element id that says an enterprise number follows.
const ENTERPRISE_BIT: u16 = 0x8000;

/// `initial_tcp_window` on the wire when the direction had no TCP packet: a value no window
/// field can hold.
const INITIAL_TCP_WINDOW_NONE: u32 = u32::MAX;

/// The address family of a record, which chooses its template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(addresses: &FlowAddresses) -> Self {
        match addresses {
            FlowAddresses::V4 { .. } => Family::V4,
            FlowAddresses::V6 { .. } => Family::V6,
        }
    }

    pub(crate) const fn template_id(self) -> u16 {
        match self {
            Family::V4 => TEMPLATE_ID_IPV4,
            Family::V6 => TEMPLATE_ID_IPV6,
        }
    }
}

/// One field of a record: the value it carries decides its element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    SourceAddress,
    DestinationAddress,
    SourcePort,
    DestinationPort,
    Protocol,
    ForwardOctets,
    ForwardPackets,
    ReverseOctets,
    ReversePackets,
    FlowStart,
    FlowEnd,
    TcpControlBits,
    FlowEndReason,
    IngressInterface,
    EgressInterface,
    TcpFlagCount(TcpFlag),
    Summary(Series, Statistic),
    ForwardInitialTcpWindow,
    ReverseInitialTcpWindow,
    RuleId,
    RuleSetVersion,
}

/// A TCP flag; its value is the element id of its count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpFlag {
    Fin = 1,
    Syn = 2,
    Rst = 3,
    Psh = 4,
    Ack = 5,
    Urg = 6,
    Ece = 7,
    Cwr = 8,
}

/// A series the record summarises (see [`Summary`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Series {
    ForwardPacketLength,
    ReversePacketLength,
    ForwardInterArrival,
    ReverseInterArrival,
    FlowInterArrival,
    Active,
    Idle,
}

/// A statistic of a series; its value is its element id's offset from the series' first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Statistic {
    Min = 0,
    Max = 1,
    Mean = 2,
    StdDev = 3,
}

use Field::Summary as S;
use Series::*;
use Statistic::*;

/// Every field of both templates, in record order.
#[rustfmt::skip]
const FIELDS: [Field; 55] = [
    Field::SourceAddress,
    Field::DestinationAddress,
    Field::SourcePort,
    Field::DestinationPort,
    Field::Protocol,
    Field::ForwardOctets,
    Field::ForwardPackets,
    Field::ReverseOctets,
    Field::ReversePackets,
    Field::FlowStart,
    Field::FlowEnd,
    Field::TcpControlBits,
    Field::FlowEndReason,
    Field::IngressInterface,
    Field::EgressInterface,
    Field::TcpFlagCount(TcpFlag::Fin),
    Field::TcpFlagCount(TcpFlag::Syn),
    Field::TcpFlagCount(TcpFlag::Rst),
    Field::TcpFlagCount(TcpFlag::Psh),
    Field::TcpFlagCount(TcpFlag::Ack),
    Field::TcpFlagCount(TcpFlag::Urg),
    Field::TcpFlagCount(TcpFlag::Ece),
    Field::TcpFlagCount(TcpFlag::Cwr),
    S(ForwardPacketLength, Min), S(ForwardPacketLength, Max), S(ForwardPacketLength, Mean), S(ForwardPacketLength, StdDev),
    S(ReversePacketLength, Min), S(ReversePacketLength, Max), S(ReversePacketLength, Mean), S(ReversePacketLength, StdDev),
    S(ForwardInterArrival, Min), S(ForwardInterArrival, Max), S(ForwardInterArrival, Mean), S(ForwardInterArrival, StdDev),
    S(ReverseInterArrival, Min), S(ReverseInterArrival, Max), S(ReverseInterArrival, Mean), S(ReverseInterArrival, StdDev),
    S(FlowInterArrival, Min), S(FlowInterArrival, Max), S(FlowInterArrival, Mean), S(FlowInterArrival, StdDev),
    S(Active, Min), S(Active, Max), S(Active, Mean), S(Active, StdDev),
    S(Idle, Min), S(Idle, Max), S(Idle, Mean), S(Idle, StdDev),
    Field::ForwardInitialTcpWindow,
    Field::ReverseInitialTcpWindow,
    Field::RuleId,
    Field::RuleSetVersion,
];

/// Who defines an element, its id, and its length in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FieldSpecifier {
    element_id: u16,
    enterprise_number: Option<u32>,
    /// Bytes in a record, or [`VARIABLE_LENGTH`].
    length: u16,
}

const fn iana(element_id: u16, length: u16) -> FieldSpecifier {
    FieldSpecifier {
        element_id,
        enterprise_number: None,
        length,
    }
}

const fn reverse(element_id: u16, length: u16) -> FieldSpecifier {
    FieldSpecifier {
        element_id,
        enterprise_number: Some(REVERSE_ENTERPRISE_NUMBER),
        length,
    }
}

const fn vfn(element_id: u16, length: u16) -> FieldSpecifier {
    FieldSpecifier {
        element_id,
        enterprise_number: Some(VFN_ENTERPRISE_NUMBER),
        length,
    }
}

impl Field {
    const fn specifier(self, family: Family) -> FieldSpecifier {
        match (self, family) {
            (Field::SourceAddress, Family::V4) => iana(8, 4), // sourceIPv4Address
            (Field::SourceAddress, Family::V6) => iana(27, 16), // sourceIPv6Address
            (Field::DestinationAddress, Family::V4) => iana(12, 4), // destinationIPv4Address
            (Field::DestinationAddress, Family::V6) => iana(28, 16), // destinationIPv6Address
            (Field::SourcePort, _) => iana(7, 2),             // sourceTransportPort
            (Field::DestinationPort, _) => iana(11, 2),       // destinationTransportPort
            (Field::Protocol, _) => iana(4, 1),               // protocolIdentifier
            (Field::ForwardOctets, _) => iana(1, 8),          // octetDeltaCount
            (Field::ForwardPackets, _) => iana(2, 8),         // packetDeltaCount
            (Field::ReverseOctets, _) => reverse(1, 8),       // reverseOctetDeltaCount
            (Field::ReversePackets, _) => reverse(2, 8),      // reversePacketDeltaCount
            (Field::FlowStart, _) => iana(152, 8),            // flowStartMilliseconds
            (Field::FlowEnd, _) => iana(153, 8),              // flowEndMilliseconds
            (Field::TcpControlBits, _) => iana(6, 2),         // tcpControlBits
            (Field::FlowEndReason, _) => iana(136, 1),        // flowEndReason
            (Field::IngressInterface, _) => iana(10, 4),      // ingressInterface
            (Field::EgressInterface, _) => iana(14, 4),       // egressInterface
            (Field::TcpFlagCount(flag), _) => vfn(flag as u16, 8),
            (Field::Summary(series, statistic), _) => {
                vfn(series.first_element_id() + statistic as u16, 8)
            }
            (Field::ForwardInitialTcpWindow, _) => vfn(50, 4),
            (Field::ReverseInitialTcpWindow, _) => vfn(51, 4),
            (Field::RuleId, _) => vfn(60, VARIABLE_LENGTH),
            (Field::RuleSetVersion, _) => vfn(61, VARIABLE_LENGTH),
        }
    }

    /// Appends the field's value; `addresses` are the record's, anonymized or not.
    fn write(self, record: &FlowExport, addresses: &FlowAddresses, out: &mut Vec<u8>) {
        match self {
            Field::SourceAddress => match addresses {
                FlowAddresses::V4 { source, .. } => out.extend_from_slice(&source.octets()),
                FlowAddresses::V6 { source, .. } => out.extend_from_slice(&source.octets()),
            },
            Field::DestinationAddress => match addresses {
                FlowAddresses::V4 { destination, .. } => {
                    out.extend_from_slice(&destination.octets())
                }
                FlowAddresses::V6 { destination, .. } => {
                    out.extend_from_slice(&destination.octets())
                }
            },
            Field::SourcePort => out.extend_from_slice(&record.source_port.to_be_bytes()),
            Field::DestinationPort => out.extend_from_slice(&record.destination_port.to_be_bytes()),
            Field::Protocol => out.push(record.protocol),
            Field::ForwardOctets => out.extend_from_slice(&record.forward.octets.to_be_bytes()),
            Field::ForwardPackets => out.extend_from_slice(&record.forward.packets.to_be_bytes()),
            Field::ReverseOctets => out.extend_from_slice(&record.reverse.octets.to_be_bytes()),
            Field::ReversePackets => out.extend_from_slice(&record.reverse.packets.to_be_bytes()),
            Field::FlowStart => out.extend_from_slice(&record.flow_start_ms.to_be_bytes()),
            Field::FlowEnd => out.extend_from_slice(&record.flow_end_ms.to_be_bytes()),
            Field::TcpControlBits => {
                out.extend_from_slice(&u16::from(record.tcp_control_bits).to_be_bytes())
            }
            Field::FlowEndReason => out.push(record.end_reason as u8),
            Field::IngressInterface => {
                out.extend_from_slice(&record.ingress_interface.to_be_bytes())
            }
            Field::EgressInterface => out.extend_from_slice(&record.egress_interface.to_be_bytes()),
            Field::TcpFlagCount(flag) => out.extend_from_slice(&flag.count(record).to_be_bytes()),
            Field::Summary(series, statistic) => {
                out.extend_from_slice(&statistic.value(series.of(record)))
            }
            Field::ForwardInitialTcpWindow => {
                out.extend_from_slice(&window_on_wire(record.forward.initial_tcp_window))
            }
            Field::ReverseInitialTcpWindow => {
                out.extend_from_slice(&window_on_wire(record.reverse.initial_tcp_window))
            }
            Field::RuleId => write_text(&record.rule_id, out),
            Field::RuleSetVersion => write_text(&record.rule_set_version, out),
        }
    }
}

impl TcpFlag {
    fn count(self, record: &FlowExport) -> u64 {
        let counts = &record.tcp_flag_counts;
        match self {
            TcpFlag::Fin => counts.fin,
            TcpFlag::Syn => counts.syn,
            TcpFlag::Rst => counts.rst,
            TcpFlag::Psh => counts.psh,
            TcpFlag::Ack => counts.ack,
            TcpFlag::Urg => counts.urg,
            TcpFlag::Ece => counts.ece,
            TcpFlag::Cwr => counts.cwr,
        }
    }
}

impl Series {
    /// The element id of the series' minimum; maximum, mean and standard deviation follow.
    const fn first_element_id(self) -> u16 {
        match self {
            ForwardPacketLength => 10,
            ReversePacketLength => 14,
            ForwardInterArrival => 20,
            ReverseInterArrival => 24,
            FlowInterArrival => 28,
            Active => 40,
            Idle => 44,
        }
    }

    fn of(self, record: &FlowExport) -> &Summary {
        match self {
            ForwardPacketLength => &record.forward.packet_length,
            ReversePacketLength => &record.reverse.packet_length,
            ForwardInterArrival => &record.forward.inter_arrival_us,
            ReverseInterArrival => &record.reverse.inter_arrival_us,
            FlowInterArrival => &record.inter_arrival_us,
            Active => &record.active_us,
            Idle => &record.idle_us,
        }
    }
}

impl Statistic {
    /// The statistic on the wire: unsigned64 for the extremes, float64 for the others.
    fn value(self, summary: &Summary) -> [u8; 8] {
        match self {
            Min => summary.min.to_be_bytes(),
            Max => summary.max.to_be_bytes(),
            Mean => summary.mean.to_be_bytes(),
            StdDev => summary.std_dev.to_be_bytes(),
        }
    }
}

fn window_on_wire(window: Option<u16>) -> [u8; 4] {
    window
        .map_or(INITIAL_TCP_WINDOW_NONE, u32::from)
        .to_be_bytes()
}

/// RFC 7011, 7: a text shorter than 255 bytes takes a one-byte length prefix.
fn write_text(text: &ShortText, out: &mut Vec<u8>) {
    let bytes = text.as_str().as_bytes();
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Bytes of a record of the family, variable-length fields excluded.
const fn fixed_record_len(family: Family) -> usize {
    let mut len = 0;
    let mut index = 0;
    while index < FIELDS.len() {
        let length = FIELDS[index].specifier(family).length;
        if length != VARIABLE_LENGTH {
            len += length as usize;
        }
        index += 1;
    }
    len
}

const FIXED_RECORD_LEN_V4: usize = fixed_record_len(Family::V4);
const FIXED_RECORD_LEN_V6: usize = fixed_record_len(Family::V6);

/// Bytes of the two variable-length fields' length prefixes.
const TEXT_PREFIXES_LEN: usize = 2;

/// Bytes of the largest record: IPv6, both texts as long as they can be.
pub(crate) const RECORD_LEN_MAX: usize =
    FIXED_RECORD_LEN_V6 + TEXT_PREFIXES_LEN + 2 * SHORT_TEXT_LEN_MAX;

/// Bytes of the record once encoded.
pub(crate) fn record_len(record: &FlowExport, family: Family) -> usize {
    let fixed = match family {
        Family::V4 => FIXED_RECORD_LEN_V4,
        Family::V6 => FIXED_RECORD_LEN_V6,
    };
    fixed
        + TEXT_PREFIXES_LEN
        + record.rule_id.as_str().len()
        + record.rule_set_version.as_str().len()
}

/// Appends the record's fields in template order.
pub(crate) fn write_record(record: &FlowExport, addresses: &FlowAddresses, out: &mut Vec<u8>) {
    for field in FIELDS {
        field.write(record, addresses, out);
    }
}

/// Bytes of a template record: its header, then 4 bytes per field and 4 more per enterprise
/// number (the same for both families).
const fn template_record_len() -> usize {
    let mut len = 4;
    let mut index = 0;
    while index < FIELDS.len() {
        len += match FIELDS[index].specifier(Family::V4).enterprise_number {
            Some(_) => 8,
            None => 4,
        };
        index += 1;
    }
    len
}

/// Bytes of the template set that carries both templates.
pub(crate) const TEMPLATE_SET_LEN: usize =
    crate::message::SET_HEADER_LEN + 2 * template_record_len();

/// Appends the template set that defines both templates.
pub(crate) fn write_template_set(out: &mut Vec<u8>) {
    out.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
    out.extend_from_slice(&(TEMPLATE_SET_LEN as u16).to_be_bytes());
    for family in [Family::V4, Family::V6] {
        out.extend_from_slice(&family.template_id().to_be_bytes());
        out.extend_from_slice(&(FIELDS.len() as u16).to_be_bytes());
        for field in FIELDS {
            let specifier = field.specifier(family);
            match specifier.enterprise_number {
                Some(enterprise_number) => {
                    out.extend_from_slice(&(specifier.element_id | ENTERPRISE_BIT).to_be_bytes());
                    out.extend_from_slice(&specifier.length.to_be_bytes());
                    out.extend_from_slice(&enterprise_number.to_be_bytes());
                }
                None => {
                    out.extend_from_slice(&specifier.element_id.to_be_bytes());
                    out.extend_from_slice(&specifier.length.to_be_bytes());
                }
            }
        }
    }
}

const _: () = assert!(TEMPLATE_SET_LEN <= u16::MAX as usize);
const _: () = assert!(
    SHORT_TEXT_LEN_MAX < 255,
    "texts take the one-byte length prefix"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_fields_share_an_element() {
        for family in [Family::V4, Family::V6] {
            for (index, field) in FIELDS.iter().enumerate() {
                let specifier = field.specifier(family);
                for other in &FIELDS[index + 1..] {
                    let other = other.specifier(family);
                    assert!(
                        (specifier.element_id, specifier.enterprise_number)
                            != (other.element_id, other.enterprise_number),
                        "{field:?} and another field are both {specifier:?}"
                    );
                }
                assert!(specifier.element_id & ENTERPRISE_BIT == 0);
            }
        }
    }

    #[test]
    fn templates_differ_only_in_the_addresses() {
        for field in FIELDS {
            let (v4, v6) = (field.specifier(Family::V4), field.specifier(Family::V6));
            match field {
                Field::SourceAddress | Field::DestinationAddress => {
                    assert_eq!((v4.length, v6.length), (4, 16))
                }
                _ => assert_eq!(v4, v6),
            }
        }
    }

    #[test]
    fn written_template_set_has_the_computed_length() {
        let mut out = Vec::new();
        write_template_set(&mut out);
        assert_eq!(out.len(), TEMPLATE_SET_LEN);
        assert_eq!(&out[2..4], &(TEMPLATE_SET_LEN as u16).to_be_bytes());
    }
}
