//! End to end: the `vfn` binary routing real traffic between network namespaces over AF_XDP.
//! Needs root (namespaces, XDP); the tests run one at a time and fail loudly without root.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use vfn_dataplane::checksum;
use vfn_lab::{Counters, Lab, PingOpts, RunningVfn, TopologySpec};

/// Root tests share the machine's XDP and namespaces: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const READY_DEADLINE: Duration = Duration::from_secs(30);

struct Setup {
    // Field order is drop order: the router stops before the lab goes.
    vfn: RunningVfn,
    lab: Lab,
}

/// The default lab with c1's link at MTU 2000 (the server's stays 1500), and the router in it.
fn setup(prefix: &str) -> Setup {
    vfn_lab::remove_stale(prefix).expect("remove namespaces of crashed runs");
    let spec = TopologySpec::default_lab(prefix)
        .with_link_mtu("c1", 2000)
        .expect("valid MTU");
    let lab = Lab::create(&spec).expect("lab");
    let config = vfn_lab::lab_config(lab.topology()).expect("config");
    let binary = vfn_lab::vfn_binary().expect("vfn binary");
    let vfn = RunningVfn::start(&lab, &binary, &config, READY_DEADLINE).expect("router starts");
    Setup { vfn, lab }
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn ping(setup: &Setup, from: &str, to: IpAddr, opts: PingOpts) -> vfn_lab::PingResult {
    vfn_lab::ping(setup.lab.netns(from).expect("role"), to, 3, &opts).expect("ping runs")
}

fn quick() -> PingOpts {
    PingOpts {
        interval: Duration::from_millis(50),
        deadline: Duration::from_secs(5),
        ..PingOpts::default()
    }
}

#[test]
fn ping_and_tcp_through_the_router_v4_and_v6() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfne2ep");
    for to in [
        "198.18.1.1",
        "2001:2:0:1::1",
        "198.18.3.1",
        "2001:2:0:3::1",
        "198.18.3.2",
        "2001:2:0:3::2",
        "198.19.0.1",
        "2001:2:0:ff::1",
    ] {
        let result = ping(&s, "c1", addr(to), quick());
        assert!(
            result.all_received(),
            "ping c1 -> {to}: {}\nrouter log:\n{}",
            result.output,
            s.vfn.log()
        );
    }
    // c1's link takes 2000 bytes, the server's 1500: without DF the router fragments.
    let fragmented = ping(
        &s,
        "c1",
        addr("198.18.3.2"),
        PingOpts {
            size: Some(1600),
            ..quick()
        },
    );
    assert!(
        fragmented.all_received(),
        "fragmented ping: {}",
        fragmented.output
    );
    for (port, to) in [(6001, "198.18.3.2"), (6002, "2001:2:0:3::2")] {
        let result = vfn_lab::tcp_transfer(
            s.lab.netns("c1").expect("c1"),
            s.lab.netns("srv").expect("srv"),
            addr(to),
            port,
            4 << 20,
            Duration::from_secs(30),
        )
        .expect("transfer runs");
        assert!(result.is_intact(), "TCP to {to}: {result:?}");
        assert_eq!(result.bytes_received, 4 << 20);
    }
    let udp = vfn_lab::udp_exchange(
        s.lab.netns("c2").expect("c2"),
        s.lab.netns("srv").expect("srv"),
        addr("198.18.3.2"),
        6003,
        500,
        256,
        Duration::from_secs(10),
    )
    .expect("udp runs");
    assert_eq!(udp.sent, 500, "{udp:?}");
    assert!(udp.all_echoed(), "{udp:?}");
    // 8 MiB in segments of at most 1448 bytes left through the server's port.
    let segments = (8 << 20) / 1448;
    let counters = s.vfn.wait_for_counters(Duration::from_secs(3), |c| {
        c.total(
            "vfn_port_packets_total",
            &[("port", "p2"), ("direction", "tx")],
        ) >= segments
    });
    assert!(counters.is_ok(), "TCP segments counted on p2: {counters:?}");
}

#[test]
fn icmp_errors_reach_the_sender() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfne2ei");
    // Warm up neighbours so that the errors are the only thing under test.
    assert!(ping(&s, "c1", addr("198.18.3.2"), quick()).all_received());
    assert!(ping(&s, "c1", addr("2001:2:0:3::2"), quick()).all_received());

    let ttl1 = ping(
        &s,
        "c1",
        addr("198.19.0.1"),
        PingOpts {
            ttl: Some(1),
            ..quick()
        },
    );
    assert!(
        ttl1.output.contains("Time to live exceeded"),
        "{}",
        ttl1.output
    );
    assert!(ttl1.output.contains("From 198.18.1.1"), "{}", ttl1.output);
    let hop1 = ping(
        &s,
        "c1",
        addr("2001:2:0:ff::1"),
        PingOpts {
            ttl: Some(1),
            ..quick()
        },
    );
    assert!(hop1.output.contains("Time exceeded"), "{}", hop1.output);

    let no_route = ping(&s, "c1", addr("198.18.200.1"), quick());
    assert!(
        no_route.output.contains("Destination Net Unreachable"),
        "{}",
        no_route.output
    );
    let no_route6 = ping(&s, "c1", addr("2001:2:0:99::1"), quick());
    assert!(
        no_route6.output.contains("No route"),
        "{}",
        no_route6.output
    );

    // c1's link takes 2000 bytes, the server's 1500: DF packets of 1628 bytes draw the MTU.
    let big = PingOpts {
        size: Some(1600),
        dont_fragment: true,
        ..quick()
    };
    let frag = ping(&s, "c1", addr("198.18.3.2"), big.clone());
    assert!(
        frag.output.contains("Frag needed") && frag.output.contains("1500"),
        "{}",
        frag.output
    );
    let too_big = ping(&s, "c1", addr("2001:2:0:3::2"), big);
    assert!(
        too_big.output.contains("Packet too big") && too_big.output.contains("1500"),
        "{}",
        too_big.output
    );

    let counters = s
        .vfn
        .wait_for_counters(Duration::from_secs(3), |c| c.drops("too_big") >= 2)
        .expect("counted");
    assert!(counters.drops("ttl_exceeded") >= 2);
    assert!(counters.drops("no_route") >= 2);
    assert!(counters.total("vfn_icmp_errors_sent_total", &[]) >= 6);
}

/// A raw Ethernet frame from c1 to the router's port, carrying an IPv4/UDP packet to the server.
fn udp_frame(router_mac: [u8; 6], host_mac: [u8; 6], src: [u8; 4], payload: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(host_mac, router_mac)
        .ipv4(src, [198, 18, 3, 2], 64)
        .udp(7000, 7001)
        .write(&mut frame, &vec![0x42; payload])
        .expect("build");
    frame
}

fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = (usize::from(frame[14] & 0x0f) * 4).clamp(20, frame.len() - 14);
    frame[24..26].fill(0);
    let header_checksum = checksum::checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&header_checksum.to_be_bytes());
}

#[test]
fn spoofed_and_malformed_packets_are_dropped_and_counted_while_traffic_flows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfne2em");
    assert!(ping(&s, "c1", addr("198.18.3.2"), quick()).all_received());
    let router_mac =
        vfn_lab::interface_mac(s.lab.netns("vfn").expect("vfn"), "vfn-c1").expect("mac");
    let host_mac = vfn_lab::interface_mac(s.lab.netns("c1").expect("c1"), "eth0").expect("mac");
    let good = udp_frame(router_mac, host_mac, [198, 18, 1, 2], 40);
    let mutated = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = good.clone();
        f(&mut frame);
        frame
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "reverse_path",
            udp_frame(router_mac, host_mac, [198, 18, 2, 77], 40),
        ),
        ("ipv4_truncated", good[..14 + 12].to_vec()),
        (
            "ipv4_bad_header_length",
            mutated(&|f| {
                f[14] = 0x44;
                fix_ipv4_checksum(f)
            }),
        ),
        (
            "ipv4_bad_total_length",
            mutated(&|f| {
                f[16..18].copy_from_slice(&1000u16.to_be_bytes());
                fix_ipv4_checksum(f)
            }),
        ),
        (
            "ipv4_bad_version",
            mutated(&|f| {
                f[14] = 0x65;
                fix_ipv4_checksum(f)
            }),
        ),
        (
            "udp_bad_length",
            mutated(&|f| f[38..40].copy_from_slice(&0u16.to_be_bytes())),
        ),
        (
            "udp_bad_length",
            mutated(&|f| f[38..40].copy_from_slice(&5u16.to_be_bytes())),
        ),
        (
            "udp_bad_length",
            mutated(&|f| f[38..40].copy_from_slice(&200u16.to_be_bytes())),
        ),
    ];
    let before = s.vfn.counters().expect("counters");
    const REPEAT: usize = 10;
    let frames: Vec<Vec<u8>> = cases
        .iter()
        .flat_map(|(_, f)| std::iter::repeat_n(f.clone(), REPEAT))
        .collect();
    let c1 = s.lab.netns("c1").expect("c1");
    vfn_lab::send_raw_frames(c1, "eth0", &frames).expect("sent");
    // Good traffic keeps flowing.
    assert!(ping(&s, "c1", addr("198.18.3.2"), quick()).all_received());
    let expected =
        |reason: &str| (cases.iter().filter(|(r, _)| *r == reason).count() * REPEAT) as u64;
    let grown = |c: &Counters, reason: &str| c.drops(reason) - before.drops(reason);
    let after = s
        .vfn
        .wait_for_counters(Duration::from_secs(3), |c| {
            cases
                .iter()
                .all(|(reason, _)| grown(c, reason) >= expected(reason))
        })
        .expect("every malformed frame counted");
    for (reason, _) in &cases {
        assert_eq!(grown(&after, reason), expected(reason), "{reason}");
    }
}

#[test]
fn sigterm_detaches_and_a_restart_after_kill_9_works() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfne2ek");
    assert!(ping(&s, "c1", addr("198.18.3.2"), quick()).all_received());
    let Setup { vfn, lab } = s;
    let (status, _) = vfn.stop().expect("stops");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let vfn_ns = lab.netns("vfn").expect("vfn").to_owned();
    let show = |ifname: &str| {
        let out = vfn_lab::netns_command(&vfn_ns, &["ip", "-d", "link", "show", ifname])
            .output()
            .expect("ip runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for ifname in ["vfn-c1", "vfn-c2", "vfn-srv"] {
        assert!(
            !show(ifname).contains("prog/xdp"),
            "{ifname} still has an XDP program:\n{}",
            show(ifname)
        );
    }

    // Start again, kill -9 (the XDP programs stay behind), start again: it must work.
    let config = vfn_lab::lab_config(lab.topology()).expect("config");
    let binary = vfn_lab::vfn_binary().expect("binary");
    let first = RunningVfn::start(&lab, &binary, &config, READY_DEADLINE).expect("starts");
    first.kill().expect("SIGKILL");
    assert!(
        show("vfn-c1").contains("prog/xdp"),
        "a killed router leaves its program"
    );
    let second = RunningVfn::start(&lab, &binary, &config, READY_DEADLINE)
        .expect("starts over a stale program");
    let s = Setup { vfn: second, lab };
    assert!(
        ping(&s, "c1", addr("198.18.3.2"), quick()).all_received(),
        "{}",
        s.vfn.log()
    );
}

#[test]
fn two_workers_on_two_queues_forward_together() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    vfn_lab::remove_stale("vfne2eq").expect("remove namespaces of crashed runs");
    let spec = TopologySpec::default_lab("vfne2eq")
        .with_queues(2)
        .expect("valid queue count");
    let lab = Lab::create(&spec).expect("lab");
    let config = vfn_lab::lab_config(lab.topology()).expect("config");
    assert_eq!(config.workers.cores.len(), 2);
    let binary = vfn_lab::vfn_binary().expect("vfn binary");
    let vfn = RunningVfn::start(&lab, &binary, &config, READY_DEADLINE).expect("router starts");
    let s = Setup { vfn, lab };
    for to in ["198.18.3.2", "2001:2:0:3::2", "198.19.0.1"] {
        let result = ping(&s, "c1", addr(to), quick());
        assert!(
            result.all_received(),
            "ping c1 -> {to}: {}\nrouter log:\n{}",
            result.output,
            s.vfn.log()
        );
    }
    let result = vfn_lab::tcp_transfer(
        s.lab.netns("c2").expect("c2"),
        s.lab.netns("srv").expect("srv"),
        addr("198.18.3.2"),
        6010,
        2 << 20,
        Duration::from_secs(30),
    )
    .expect("transfer runs");
    assert!(result.is_intact(), "TCP with two workers: {result:?}");
    // Both workers poll and report (which queue a flow lands on is the kernel's choice).
    let second_worker_alive = |c: &Counters| {
        c.total("vfn_worker_idle_waits_total", &[("worker", "1")]) > 0
            || c.total(
                "vfn_port_packets_total",
                &[("worker", "1"), ("direction", "rx")],
            ) > 0
    };
    assert!(
        s.vfn
            .wait_for_counters(Duration::from_secs(3), second_worker_alive)
            .is_ok(),
        "{}",
        s.vfn.log()
    );
}
