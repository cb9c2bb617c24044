//! Wireshark's IPFIX dissector reads the exporter's messages: every standard field decodes to the
//! record's value and nothing is flagged malformed. The messages go to a pcap of UDP datagrams
//! to port 4739 (IANA's IPFIX port). tshark is required: without it the test fails.

#[path = "support/records.rs"]
mod records;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use records::{START_MS, record_v4, record_v6};
use vfn_ipfix::{Exporter, ExporterConfig};

const TSHARK: &str = "/usr/bin/tshark";
const IPFIX_PORT: u16 = 4739;
const NOW_S: u32 = 1_700_000_100;

/// Writes each message as one UDP datagram from 198.18.0.1 to 198.18.0.2 (lab addresses).
fn write_pcap(path: &Path, messages: &[Vec<u8>]) {
    let file = std::fs::File::create(path).expect("a pcap file in the test directory");
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(file, header).expect("pcap header written");
    for (index, message) in messages.iter().enumerate() {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .udp(50_000, IPFIX_PORT)
            .write(&mut frame, message)
            .expect("an IPFIX message fits a UDP datagram");
        let time = Duration::from_secs(u64::from(NOW_S)) + Duration::from_millis(index as u64);
        let packet = PcapPacket::new(time, frame.len() as u32, &frame);
        writer.write_packet(&packet).expect("pcap packet written");
    }
}

fn tshark(pcap: &Path, arguments: &[&str]) -> String {
    let output = Command::new(TSHARK)
        .env("TZ", "UTC")
        .arg("-r")
        .arg(pcap)
        .args(["-d", "udp.port==4739,cflow"])
        .args(arguments)
        .output()
        .expect("tshark must be installed at /usr/bin/tshark for this test");
    assert!(output.status.success(), "tshark: {output:?}");
    String::from_utf8(output.stdout).expect("tshark prints UTF-8")
}

#[test]
fn tshark_decodes_both_templates_and_every_standard_field() {
    let mut exporter = Exporter::new(ExporterConfig {
        observation_domain_id: 77,
        ..Default::default()
    })
    .unwrap();
    let mut messages = Vec::new();
    for record in [record_v4(), record_v6(), record_v4()] {
        exporter.push(&record, NOW_S, |m| messages.push(m.to_vec()));
    }
    exporter.flush(NOW_S, |m| messages.push(m.to_vec()));
    // The templates and the first record fill the first message; the next two share the second.
    assert_eq!(messages.len(), 2);
    let directory = tempfile::tempdir().unwrap();
    let pcap = directory.path().join("ipfix.pcap");
    write_pcap(&pcap, &messages);

    let verbose = tshark(&pcap, &["-V"]);
    for problem in ["Malformed", "Expert Info"] {
        assert!(
            !verbose.contains(problem),
            "tshark reports {problem}:\n{verbose}"
        );
    }
    // tshark knows the documentation enterprise number, not its elements: it shows each of the
    // 40 fields of every record as a value of its own.
    let enterprise_fields = verbose
        .matches("Enterprise Private entry: (Example Enterprise Number for Documentation Use)")
        .count();
    assert_eq!(enterprise_fields, 3 * 40);

    let fields = [
        "cflow.od_id",
        "cflow.exporttime",
        "cflow.sequence",
        "cflow.template_id",
        "cflow.srcaddr",
        "cflow.dstaddr",
        "cflow.srcaddrv6",
        "cflow.dstaddrv6",
        "cflow.srcport",
        "cflow.dstport",
        "cflow.protocol",
        "cflow.octets",
        "cflow.packets",
        "cflow.abstimestart",
        "cflow.abstimeend",
        "cflow.tcpflags",
        "cflow.flow_end_reason",
        "cflow.inputint",
        "cflow.outputint",
    ];
    let mut arguments = vec!["-T", "fields", "-E", "separator=|"];
    for field in fields {
        arguments.extend(["-e", field]);
    }
    let rows = tshark(&pcap, &arguments);
    // START_MS and START_MS + 4 321 ms; octets and packets: forward, then RFC 5103 reverse.
    let start = "Nov 14, 2023 22:13:20.123000000 UTC";
    let end = "Nov 14, 2023 22:13:24.444000000 UTC";
    assert_eq!(START_MS, 1_700_000_000_123);
    let expected = [
        format!(
            "77|{NOW_S}|0|256,257|198.18.0.1|198.19.7.9|||40001|443|6|10000,20000|11,21|\
             {start}|{end}|0x001b|3|3|5"
        ),
        format!(
            "77|{NOW_S}|1||198.18.0.1|198.19.7.9|2001:2::1|2001:2:0:7::9|5353,40001|53,443|17,6|\
             10000,20000,10000,20000|11,21,11,21|{start},{start}|{end},{end}|0x0000,0x001b|1,3|\
             3,3|5,5"
        ),
    ];
    assert_eq!(rows.lines().collect::<Vec<_>>(), expected);
}
