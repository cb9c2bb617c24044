//! The whole router in memory: workers, pipeline and slow path (smoltcp, neighbour resolution)
//! on MemIo ports, driven step by step with a virtual clock.

mod common;

use std::net::Ipv6Addr;
use std::time::Duration;

use common::*;
use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use vfn_dataplane::checksum;
use vfn_dataplane::counters::DropReason;
use vfn_dataplane::pcap;
use vfn_dataplane::wire;
use vfn_dataplane::worker::WorkerConfig;

#[test]
fn router_answers_arp_for_its_address() {
    let mut bench = Bench::new();
    let [out0, out1] = client_resolves_router(&mut bench);
    assert!(out1.is_empty());
    assert_eq!(out0.len(), 1, "one ARP reply");
    let reply = &out0[0];
    assert_eq!(&reply[0..6], &CLIENT_MAC);
    assert_eq!(&reply[12..14], &[0x08, 0x06]);
    assert_eq!(&reply[20..22], &[0, 2], "ARP reply");
    assert_eq!(&reply[22..28], &P0_MAC);
    assert_eq!(&reply[28..32], &[198, 18, 1, 1]);
    bench.assert_balanced();
}

#[test]
fn router_answers_ping_v4_and_v6() {
    let mut bench = Bench::new();
    // The pinger resolves the router first, so both stacks know each other.
    client_resolves_router(&mut bench);
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4([198, 18, 1, 2], [198, 18, 1, 1], 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut ping, b"hello")
        .expect("build");
    let [out0, _] = bench.exchange(0, &ping);
    assert_eq!(out0.len(), 1);
    let reply = SlicedPacket::from_ethernet(&out0[0]).expect("parses");
    let Some(TransportSlice::Icmpv4(icmp)) = reply.transport else {
        panic!("icmp")
    };
    assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(_)));
    assert_eq!(icmp.payload(), b"hello");

    let client: Ipv6Addr = "2001:2:0:1::2".parse().expect("a");
    let router: Ipv6Addr = "2001:2:0:1::1".parse().expect("a");
    let mut ns = vec![0u8; wire::SOLICITATION_FRAME_MAX];
    let len = wire::write_neighbour_solicitation(&mut ns, CLIENT_MAC, None, client, router, None);
    let [out0, _] = bench.exchange(0, &ns[..len]);
    assert_eq!(out0.len(), 1, "one neighbour advertisement");
    let na = SlicedPacket::from_ethernet(&out0[0]).expect("parses");
    let Some(TransportSlice::Icmpv6(icmp)) = na.transport else {
        panic!("icmpv6")
    };
    assert_eq!(
        icmp.icmp_type().type_u8(),
        wire::ICMPV6_NEIGHBOUR_ADVERTISEMENT
    );

    let mut ping6 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv6(client.octets(), router.octets(), 64)
        .icmpv6_echo_request(7, 1)
        .write(&mut ping6, b"hello6")
        .expect("build");
    let [out0, _] = bench.exchange(0, &ping6);
    assert_eq!(out0.len(), 1);
    let reply = SlicedPacket::from_ethernet(&out0[0]).expect("parses");
    let Some(TransportSlice::Icmpv6(icmp)) = reply.transport else {
        panic!("icmpv6")
    };
    assert!(matches!(icmp.icmp_type(), Icmpv6Type::EchoReply(_)));
    bench.assert_balanced();
}

#[test]
fn packets_wait_for_the_next_hop_then_leave_in_order() {
    let mut bench = Bench::new();
    let packets: Vec<Vec<u8>> = (0..5u8)
        .map(|i| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
                .ipv4([198, 18, 1, 2], [198, 18, 2, 50], 64)
                .udp(1000, 2000)
                .write(&mut f, &[i; 10])
                .expect("build");
            f
        })
        .collect();
    let mut sent1 = Vec::new();
    for p in &packets {
        let [_, out1] = bench.exchange(0, p);
        sent1.extend(out1);
    }
    // An ARP request for the on-link destination, broadcast from p1; three packets wait, two are
    // dropped (Linux's queue of 3).
    let requests: Vec<_> = sent1.iter().filter(|f| f[12..14] == [0x08, 0x06]).collect();
    assert_eq!(requests.len(), 1);
    assert_eq!(&requests[0][0..6], &[0xff; 6]);
    assert_eq!(&requests[0][38..42], &[198, 18, 2, 50]);
    assert_eq!(bench.worker.pending_len(), 3);
    let counters = bench.worker.counters();
    assert_eq!(counters.drops_for(DropReason::NeighbourQueueFull), 2);

    let reply = arp(
        2,
        SERVER_MAC,
        [198, 18, 2, 50],
        P1_MAC,
        [198, 18, 2, 1],
        P1_MAC,
    );
    let [_, out1] = bench.exchange(1, &reply);
    let forwarded: Vec<_> = out1.iter().filter(|f| f[12..14] == [0x08, 0x00]).collect();
    assert_eq!(forwarded.len(), 3);
    for (i, f) in forwarded.iter().enumerate() {
        assert_eq!(&f[0..6], &SERVER_MAC);
        assert_eq!(f[f.len() - 1], i as u8, "in arrival order");
    }
    assert_eq!(bench.worker.pending_len(), 0);
    bench.assert_balanced();
}

#[test]
fn time_exceeded_goes_back_to_the_sender() {
    let mut bench = Bench::new();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4([198, 18, 1, 2], [198, 19, 0, 1], 1)
        .udp(1000, 2000)
        .write(&mut f, &[1; 10])
        .expect("build");
    let [out0, out1] = bench.exchange(0, &f);
    assert!(out1.is_empty());
    assert_eq!(out0.len(), 1);
    let error = SlicedPacket::from_ethernet(&out0[0]).expect("parses");
    assert_eq!(&out0[0][0..6], &CLIENT_MAC);
    let Some(NetSlice::Ipv4(ip)) = &error.net else {
        panic!("ipv4")
    };
    assert_eq!(ip.header().source(), [198, 18, 1, 1]);
    let Some(TransportSlice::Icmpv4(icmp)) = &error.transport else {
        panic!("icmp")
    };
    assert!(matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)));
    assert_eq!(bench.worker.counters().icmp_errors_sent.get(), 1);
    bench.assert_balanced();
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut bench = Bench::new();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4([198, 18, 1, 2], [198, 18, 99, 1], 64)
        .udp(1000, 2000)
        .write(&mut f, &[1; 10])
        .expect("build");
    let mut errors = 0;
    for _ in 0..200 {
        bench.worker.io_mut().inject(0, &f).expect("room");
    }
    for _ in 0..10 {
        bench.worker.poll_once(bench.now);
        errors += bench.worker.io_mut().take_sent(0).len();
    }
    let default_burst = WorkerConfig::default().icmp_errors_burst as usize;
    assert_eq!(
        errors, default_burst,
        "the burst, then nothing within the same instant"
    );
    assert_eq!(
        bench.worker.counters().icmp_errors_rate_limited.get(),
        200 - default_burst as u64
    );
    assert_eq!(bench.worker.counters().drops_for(DropReason::NoRoute), 200);
    bench.assert_balanced();
}

#[test]
fn oversized_ipv4_without_df_is_fragmented_and_reassembles() {
    let mut bench = Bench::with_server_mtu(576);
    let payload: Vec<u8> = (0..1400u32).map(|i| (i * 7) as u8).collect();
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4([198, 18, 1, 2], [198, 19, 0, 1], 64)
        .udp(1000, 2000)
        .write(&mut frame, &payload)
        .expect("build");
    frame[14 + 6] &= !0x40; // clear DF
    frame[24..26].fill(0);
    let header_checksum = checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&header_checksum.to_be_bytes());
    let original_ip = frame[14..].to_vec();

    let [_, out1] = bench.exchange(0, &frame);
    // 8 (UDP) + 1400 bytes of IP payload in pieces of 552 (576 - 20, a multiple of 8): 3 fragments.
    assert_eq!(out1.len(), 3);
    let mut reassembled = vec![0u8; original_ip.len() - 20];
    let mut covered = 0;
    for (index, fragment) in out1.iter().enumerate() {
        assert_eq!(&fragment[0..6], &SERVER_MAC);
        let ip = &fragment[14..];
        assert!(ip.len() <= 576, "fragment {index} is {} bytes", ip.len());
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        assert_eq!(total, ip.len());
        assert!(
            checksum::is_valid(&ip[..20]),
            "fragment {index} header checksum"
        );
        assert_eq!(ip[8], 63, "TTL decremented once");
        let word = u16::from_be_bytes([ip[6], ip[7]]);
        let offset = usize::from(word & 0x1fff) * 8;
        let more = word & 0x2000 != 0;
        assert_eq!(more, index < 2, "MF on all but the last");
        assert_eq!(&ip[12..20], &original_ip[12..20], "addresses");
        assert_eq!(ip[9], original_ip[9], "protocol");
        reassembled[offset..offset + total - 20].copy_from_slice(&ip[20..]);
        covered += total - 20;
    }
    assert_eq!(covered, reassembled.len());
    assert_eq!(
        &reassembled[..],
        &original_ip[20..],
        "fragments reassemble to the original"
    );
    bench.assert_balanced();
}

#[test]
fn a_capture_replays_through_the_router_and_round_trips_as_pcap() {
    let mut bench = Bench::new();
    let input: Vec<pcap::CapturedFrame> = (0..20u64)
        .map(|i| pcap::CapturedFrame {
            timestamp: Duration::from_millis(1000 + i),
            data: udp_to([198, 19, 0, i as u8], 64),
        })
        .collect();
    let path = std::env::temp_dir().join(format!("vfn-replay-test-{}.pcap", std::process::id()));
    pcap::write(&path, &input).expect("writes");
    let read_back = pcap::read(&path).expect("reads");
    std::fs::remove_file(&path).expect("removes");
    assert_eq!(read_back, input);

    let output = pcap::replay(&mut bench.worker, &mut bench.slow, 0, &read_back);
    assert_eq!(output.len(), 2);
    assert!(output[0].is_empty());
    assert_eq!(output[1].len(), 20);
    for (sent, received) in output[1].iter().zip(&input) {
        assert_eq!(sent.timestamp, received.timestamp);
        assert_eq!(&sent.data[0..6], &SERVER_MAC);
        assert_eq!(sent.data[14 + 8], 63);
        assert_eq!(&sent.data[14 + 12..], &received.data[14 + 12..]);
    }
    bench.assert_balanced();
}

#[test]
fn a_neighbour_is_solicited_even_when_no_packet_may_wait() {
    let mut bench = Bench::build(
        1500,
        WorkerConfig {
            pending_per_neighbour: 0,
            ..WorkerConfig::default()
        },
    );
    let [_, out1] = bench.exchange(0, &udp_to([198, 18, 2, 50], 64));
    assert_eq!(
        bench
            .worker
            .counters()
            .drops_for(DropReason::NeighbourQueueFull),
        1
    );
    let requests: Vec<_> = out1
        .iter()
        .filter(|f| f[12..14] == [0x08, 0x06] && f[38..42] == [198, 18, 2, 50])
        .collect();
    assert_eq!(requests.len(), 1, "solicited all the same");
    bench.assert_balanced();
}

#[test]
fn frames_for_the_router_are_policed() {
    let mut bench = Bench::build(
        1500,
        WorkerConfig {
            punts_per_second: 0,
            punt_burst: 3,
            ..WorkerConfig::default()
        },
    );
    let mut replies = 0;
    for _ in 0..10 {
        replies += client_resolves_router(&mut bench)[0].len();
    }
    // The bench's own set-up used one punt (the gateway's ARP reply) of the burst of 3.
    assert_eq!(replies, 2);
    assert_eq!(
        bench
            .worker
            .counters()
            .drops_for(DropReason::PuntRateLimited),
        8
    );
    bench.assert_balanced();
}

fn ping_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(3, 4)
        .write(&mut frame, b"ping")
        .expect("build");
    frame
}

#[expect(clippy::panic, reason = "a test helper fails the test by panicking")]
fn assert_echo_reply(frame: &[u8], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) {
    assert_eq!(&frame[0..6], &dst_mac);
    let reply = SlicedPacket::from_ethernet(frame).expect("parses");
    let Some(NetSlice::Ipv4(ip)) = &reply.net else {
        panic!("ipv4")
    };
    assert_eq!(
        (ip.header().source(), ip.header().destination()),
        (src, dst)
    );
    let Some(TransportSlice::Icmpv4(icmp)) = &reply.transport else {
        panic!("icmp")
    };
    assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(_)));
}

#[test]
fn the_router_answers_on_every_address_and_to_senders_beyond_a_gateway() {
    let mut bench = Bench::new();
    // The client resolves the router, which learns the client.
    client_resolves_router(&mut bench);
    // The address of the other interface, pinged from p0's side: the reply leaves on p0.
    let [out0, out1] = bench.exchange(
        0,
        &ping_frame(CLIENT_MAC, P0_MAC, [198, 18, 1, 2], [198, 18, 2, 1]),
    );
    assert!(out1.is_empty());
    assert_eq!(out0.len(), 1);
    assert_echo_reply(&out0[0], CLIENT_MAC, [198, 18, 2, 1], [198, 18, 1, 2]);
    // A sender behind the gateway on p1: the reply goes back through the gateway.
    let [out0, out1] = bench.exchange(
        1,
        &ping_frame(SERVER_MAC, P1_MAC, [198, 19, 0, 1], [198, 18, 1, 1]),
    );
    assert!(out0.is_empty());
    assert_eq!(out1.len(), 1);
    assert_echo_reply(&out1[0], SERVER_MAC, [198, 18, 1, 1], [198, 19, 0, 1]);
    bench.assert_balanced();
}
