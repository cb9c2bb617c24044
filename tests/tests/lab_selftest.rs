//! Checks of the lab itself on a real kernel. Needs root (fails, never skips, without it).
//! The kernel routes in the router namespace (`RouterMode::Kernel`), so these tests need no
//! VFN. Serialized: they share the machine's namespace list.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use vfn_lab::{
    Lab, LabError, PingOpts, RouterMode, TopologySpec, in_netns, interface_mac, list_namespaces,
    ping, remove_stale, send_raw_frames, tcp_transfer, udp_exchange, wait_until,
};

static ROOT_TESTS: Mutex<()> = Mutex::new(());
const PREFIX: &str = "vfnlabst";
const DEADLINE: Duration = Duration::from_secs(10);

/// Fails loudly without root, then serializes the root tests.
fn root_test() -> MutexGuard<'static, ()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "lab_selftest needs root: it creates network namespaces"
    );
    ROOT_TESTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The default lab with the kernel as router, and a 2000-byte MTU on c1's link.
fn kernel_lab() -> Lab {
    remove_stale(PREFIX).expect("remove stale namespaces");
    let spec = TopologySpec::default_lab(PREFIX)
        .with_router_mode(RouterMode::Kernel)
        .with_link_mtu("c1", 2000)
        .expect("c1 is in the default lab");
    Lab::create(&spec).expect("create the kernel-routed lab")
}

fn fast_ping() -> PingOpts {
    PingOpts {
        interval: Duration::from_millis(20),
        ..PingOpts::default()
    }
}

#[test]
fn ping_crosses_the_kernel_router_and_reports_icmp_errors() {
    let _serial = root_test();
    let lab = kernel_lab();
    let c1 = lab.netns("c1").expect("c1");
    let srv = lab.topology().host("srv").expect("srv");
    let mut destinations = vec![srv.ipv4.addr(), srv.ipv6.addr()];
    destinations.extend(srv.remote_addresses.iter().map(|remote| remote.addr()));
    for destination in destinations {
        let result = ping(c1, destination, 3, &fast_ping()).expect("ping runs");
        assert!(result.all_received(), "{destination}: {result:?}");
    }

    let expired = PingOpts {
        ttl: Some(1),
        ..fast_ping()
    };
    let result = ping(c1, srv.ipv4.addr(), 1, &expired).expect("ping runs");
    assert_eq!(result.received, 0);
    assert!(
        result.output.contains("Time to live exceeded"),
        "{}",
        result.output
    );

    // 1800 bytes fit c1's 2000-byte link but not the server's 1500-byte one.
    let oversized = PingOpts {
        size: Some(1800),
        dont_fragment: true,
        ..fast_ping()
    };
    let result = ping(c1, srv.ipv4.addr(), 1, &oversized).expect("ping runs");
    assert!(result.output.contains("Frag needed"), "{}", result.output);
    let result = ping(c1, srv.ipv6.addr(), 1, &oversized).expect("ping runs");
    assert!(
        result.output.contains("Packet too big"),
        "{}",
        result.output
    );
}

#[test]
fn tcp_transfer_of_4_mib_arrives_intact_over_both_families() {
    let _serial = root_test();
    let lab = kernel_lab();
    let srv = lab.topology().host("srv").expect("srv");
    for server_addr in [srv.ipv4.addr(), srv.ipv6.addr()] {
        let result = tcp_transfer(
            lab.netns("c1").expect("c1"),
            &srv.netns,
            server_addr,
            5201,
            4 << 20,
            DEADLINE,
        )
        .expect("transfer completes");
        assert!(result.is_intact(), "{server_addr}: {result:?}");
        assert_eq!(result.bytes_received, 4 << 20);
    }
}

#[test]
fn udp_exchange_of_1000_datagrams_echoes_every_byte() {
    let _serial = root_test();
    let lab = kernel_lab();
    let srv = lab.topology().host("srv").expect("srv");
    for server_addr in [srv.ipv4.addr(), srv.ipv6.addr()] {
        let result = udp_exchange(
            lab.netns("c2").expect("c2"),
            &srv.netns,
            server_addr,
            7,
            1000,
            512,
            DEADLINE,
        )
        .expect("exchange completes");
        assert!(result.all_echoed(), "{server_addr}: {result:?}");
        assert_eq!(result.sent, 1000);
    }
}

#[test]
fn raw_frames_from_a_host_are_routed_to_a_server_socket() {
    let _serial = root_test();
    let lab = kernel_lab();
    let c1 = lab.topology().host("c1").expect("c1");
    let srv = lab.topology().host("srv").expect("srv");
    let router_mac =
        interface_mac(lab.netns("vfn").expect("router"), "vfn-c1").expect("router MAC");
    let c1_mac = interface_mac(&c1.netns, "eth0").expect("c1 MAC");
    let (IpAddr::V4(source), IpAddr::V4(destination)) = (c1.ipv4.addr(), srv.ipv4.addr()) else {
        unreachable!("ipv4 fields hold IPv4 addresses");
    };
    let port = 7000;
    let socket = in_netns(&srv.netns, || UdpSocket::bind((destination, port)))
        .expect("enter srv")
        .expect("bind in srv");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");

    let payloads: Vec<Vec<u8>> = (0..5)
        .map(|index| format!("raw frame {index}").into_bytes())
        .collect();
    let frames: Vec<Vec<u8>> = payloads
        .iter()
        .map(|payload| ipv4_udp_frame(router_mac, c1_mac, source, destination, port, payload))
        .collect();
    assert_eq!(
        send_raw_frames(&c1.netns, "eth0", &frames).expect("frames sent"),
        5
    );

    let mut received = BTreeSet::new();
    let mut buffer = [0u8; 256];
    while received.len() < payloads.len() {
        let count = socket
            .recv(&mut buffer)
            .expect("every frame arrives within 2 s");
        received.insert(buffer[..count].to_vec());
    }
    assert_eq!(received, payloads.into_iter().collect());

    let outside = ipv4_udp_frame(
        router_mac,
        c1_mac,
        source,
        Ipv4Addr::new(192, 0, 2, 1),
        port,
        b"no",
    );
    let refused = send_raw_frames(&c1.netns, "eth0", &[outside]);
    assert!(
        matches!(refused, Err(LabError::AddressOutsideLab { .. })),
        "{refused:?}"
    );
}

#[test]
fn processes_and_threads_run_inside_the_namespace_and_guards_stop_them() {
    let _serial = root_test();
    let lab = kernel_lab();
    let c1 = lab.netns("c1").expect("c1");
    let c1_inode = namespace_inode(&format!("/var/run/netns/{c1}"));
    let thread_inode =
        in_netns(c1, || namespace_inode("/proc/thread-self/ns/net")).expect("enter c1");
    assert_eq!(thread_inode, c1_inode);

    let mut sleeper = Command::new("sleep");
    sleeper.arg("30");
    let guard = lab.spawn_in("c1", sleeper).expect("spawn sleep in c1");
    let pid = guard.id();
    wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        namespace_inode(&format!("/proc/{pid}/ns/net")) == c1_inode
    })
    .expect("sleep enters c1");
    let started = Instant::now();
    let status = guard.stop().expect("stop sleep");
    assert_eq!(status.signal(), Some(libc_signal::SIGTERM));
    assert!(started.elapsed() < Duration::from_secs(2));

    // Ignores SIGTERM (kept across exec), so only the SIGKILL after the grace period ends it.
    let stubborn = lab
        .exec("c1", &["sh", "-c", "trap '' TERM; exec sleep 30"])
        .expect("command in c1");
    let guard = vfn_lab::ChildGuard::spawn(stubborn).expect("spawn stubborn sleep");
    let pid = guard.id();
    wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "sleep")
    })
    .expect("sh execs sleep");
    let started = Instant::now();
    let status = guard.stop().expect("kill stubborn sleep");
    assert_eq!(status.signal(), Some(libc_signal::SIGKILL));
    let took = started.elapsed();
    assert!(
        took >= vfn_lab::CHILD_TERMINATION_GRACE && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn external_mode_ports_are_silent_and_teardown_removes_everything() {
    let _serial = root_test();
    remove_stale(PREFIX).expect("remove stale namespaces");
    let lab = Lab::create(&TopologySpec::default_lab(PREFIX)).expect("create the external lab");
    let names: Vec<String> = lab.topology().namespaces().map(str::to_owned).collect();
    let existing = list_namespaces().expect("list");
    assert!(
        names.iter().all(|name| existing.contains(name)),
        "{names:?} in {existing:?}"
    );

    let port_addresses = lab
        .exec("vfn", &["ip", "-o", "address", "show", "dev", "vfn-srv"])
        .expect("command")
        .output()
        .expect("ip runs");
    assert!(port_addresses.status.success());
    assert_eq!(
        String::from_utf8_lossy(&port_addresses.stdout),
        "",
        "no kernel addresses"
    );
    let ipv6_disabled = lab
        .exec(
            "vfn",
            &["sysctl", "-n", "net.ipv6.conf.vfn-c1.disable_ipv6"],
        )
        .expect("command")
        .output()
        .expect("sysctl runs");
    assert_eq!(String::from_utf8_lossy(&ipv6_disabled.stdout).trim(), "1");
    let link = lab
        .exec("vfn", &["ip", "-o", "link", "show", "dev", "vfn-c1"])
        .expect("command")
        .output()
        .expect("ip runs");
    assert!(String::from_utf8_lossy(&link.stdout).contains("state UP"));

    lab.destroy().expect("destroy reports no errors");
    let existing = list_namespaces().expect("list");
    assert!(
        names.iter().all(|name| !existing.contains(name)),
        "left: {existing:?}"
    );

    let lab = kernel_lab();
    let names: Vec<String> = lab.topology().namespaces().map(str::to_owned).collect();
    drop(lab);
    let existing = list_namespaces().expect("list");
    assert!(
        names.iter().all(|name| !existing.contains(name)),
        "drop left: {existing:?}"
    );
}

#[test]
fn remove_stale_deletes_namespaces_of_dead_processes_only() {
    let _serial = root_test();
    // First, so that its own clean-up of stale namespaces does not take the one planted below.
    let lab = kernel_lab();
    let mut finished = Command::new("true").spawn().expect("run true");
    let dead_pid = finished.id();
    finished.wait().expect("reap true");
    let stale = format!("{PREFIX}-{dead_pid}-0-c1");
    let added = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .expect("ip runs");
    assert!(added.success(), "ip netns add {stale}");

    let removed = remove_stale(PREFIX).expect("remove stale");
    assert_eq!(
        removed,
        std::slice::from_ref(&stale),
        "only the planted namespace is stale"
    );
    let existing = list_namespaces().expect("list");
    assert!(
        !existing.contains(&stale),
        "{stale} still exists (removed {removed:?})"
    );
    assert!(
        lab.topology()
            .namespaces()
            .all(|name| existing.iter().any(|other| other == name))
    );
    assert!(
        removed
            .iter()
            .all(|name| !name.starts_with(&lab.topology().name))
    );
}

/// The identity of a network namespace file (a bind mount or a /proc link).
fn namespace_inode(path: &str) -> u64 {
    std::fs::metadata(path)
        .map(|metadata| metadata.ino())
        .unwrap_or(0)
}

/// Ethernet + IPv4 (valid header checksum, DF, TTL 64) + UDP (checksum 0: none, allowed in IPv4).
fn ipv4_udp_frame(
    destination_mac: [u8; 6],
    source_mac: [u8; 6],
    source: Ipv4Addr,
    destination: Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_length = u16::try_from(8 + payload.len()).expect("small payload");
    let total_length = 20 + udp_length;
    let mut ip_header = vec![0x45, 0];
    ip_header.extend(total_length.to_be_bytes());
    ip_header.extend([0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip_header.extend(source.octets());
    ip_header.extend(destination.octets());
    let header_checksum = vfn_dataplane::checksum::checksum(&ip_header);
    ip_header[10..12].copy_from_slice(&header_checksum.to_be_bytes());

    let mut frame = Vec::new();
    frame.extend(destination_mac);
    frame.extend(source_mac);
    frame.extend(0x0800u16.to_be_bytes());
    frame.extend(ip_header);
    frame.extend(40000u16.to_be_bytes());
    frame.extend(port.to_be_bytes());
    frame.extend(udp_length.to_be_bytes());
    frame.extend([0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Signal numbers, to read exit statuses without another dependency.
mod libc_signal {
    pub const SIGKILL: i32 = 9;
    pub const SIGTERM: i32 = 15;
}
