//! A hand-made capture replayed by `pcap::replay_flows` through a worker in replay mode: foreign
//! MAC addresses and VLANs, Ethernet padding, ARP, a timestamp that goes back, and the records
//! ended at the end of the capture.

use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use vfn_dataplane::counters::DropReason;
use vfn_dataplane::io::PacketIo;
use vfn_dataplane::mem_io::{MemIo, MemIoConfig};
use vfn_dataplane::pcap::{self, CapturedFrame};
use vfn_dataplane::policy::PolicyLimits;
use vfn_dataplane::router::Router;
use vfn_dataplane::telemetry::EndReason;

const HOST_A: [u8; 4] = [10, 1, 0, 1];
const HOST_B: [u8; 4] = [10, 2, 0, 1];
const MAC_A: [u8; 6] = [0x02, 0xa, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0xb, 0, 0, 0, 1];
const MS: u64 = 1_000_000;

fn tcp(from: ([u8; 6], [u8; 4], u16), to: ([u8; 6], [u8; 4], u16), flags: u8) -> Vec<u8> {
    let mut frame = Vec::new();
    let mut header = etherparse::TcpHeader::new(from.2, to.2, 1, 64_000);
    header.syn = flags & 0x02 != 0;
    header.ack = flags & 0x10 != 0;
    PacketBuilder::ethernet2(from.0, to.0)
        .ipv4(from.1, to.1, 64)
        .tcp_header(header)
        .write(&mut frame, &[])
        .expect("build");
    frame
}

fn at(ms: u64, data: Vec<u8>) -> CapturedFrame {
    CapturedFrame {
        // A capture's timestamps are times since the Unix epoch.
        timestamp: Duration::from_secs(1_700_000_000) + Duration::from_nanos(ms * MS),
        data,
    }
}

#[test]
fn a_capture_replays_into_flow_records() {
    let spec = pcap::replay_router_spec(PolicyLimits {
        flows: 16,
        ..PolicyLimits::default()
    });
    let mut router = Router::build(spec, Instant::now(), Box::new(|_| {})).expect("valid");
    let io = MemIo::new(MemIoConfig {
        ports: 1,
        frame_count: 16,
        frame_size: 2048,
        ring_size: 8,
    });
    let mut worker = router.worker(io).expect("policy state");

    let (a, b) = ((MAC_A, HOST_A, 40_000), (MAC_B, HOST_B, 22));
    let mut syn_ack = tcp(b, a, 0x12);
    // 54 bytes on the wire, padded to Ethernet's minimum: the padding is no IP byte.
    syn_ack.resize(60, 0);
    let mut tagged_udp = Vec::new();
    PacketBuilder::ethernet2(MAC_A, [0xff; 6])
        .single_vlan(etherparse::VlanId::try_new(7).expect("VLAN id"))
        .ipv4(HOST_A, [10, 2, 255, 255], 1)
        .udp(5353, 5353)
        .write(&mut tagged_udp, &[0; 12])
        .expect("build");
    let mut arp = tcp(a, b, 0x02);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let input = [
        at(0, tcp(a, b, 0x02)),
        at(100, syn_ack),
        // Stamped before the frame before it: replayed at that frame's time.
        at(50, tcp(a, b, 0x10)),
        at(200, arp),
        at(300, tagged_udp),
    ];
    let records = pcap::replay_flows(&mut worker, 0, &input, &router.flow_exports());

    let mut summary: Vec<_> = records
        .iter()
        .map(|r| {
            let (forward, reverse) = (r.stats.forward(), r.stats.reverse());
            (
                (r.src, r.sport, r.dst, r.dport, r.proto),
                (forward.packets(), forward.bytes()),
                (reverse.packets(), reverse.bytes()),
                (r.stats.first_ns(), r.stats.last_ns()),
                r.end_reason,
            )
        })
        .collect();
    // The records ended together at the end, in the table's order.
    summary.sort_by_key(|(_, _, _, times, _)| *times);
    let addr = |octets: [u8; 4]| std::net::IpAddr::from(octets);
    assert_eq!(
        summary,
        [
            (
                (addr(HOST_A), 40_000, addr(HOST_B), 22, 6),
                (2, 80),
                (1, 40),
                (0, 100 * MS),
                EndReason::ForcedEnd
            ),
            (
                (addr(HOST_A), 5353, addr([10, 2, 255, 255]), 5353, 17),
                (1, 40),
                (0, 0),
                (300 * MS, 300 * MS),
                EndReason::ForcedEnd
            ),
        ]
    );
    let counters = worker.counters();
    assert_eq!(counters.drops_for(DropReason::UnsupportedEthertype), 1);
    assert_eq!(
        counters.ports[0].tx_packets.get(),
        4,
        "sent back, discarded"
    );
    let accounting = worker.io().accounting();
    assert!(accounting.is_balanced(), "{accounting:?}");
}
