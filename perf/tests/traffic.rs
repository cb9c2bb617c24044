//! The lab benchmark's generator and sink with nothing between them: every frame the generator
//! sends from a host's veth arrives at the sink on the other end, and is counted once. Needs
//! root (fails, never skips, without it): it makes network namespaces.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use vfn_lab::{
    HOST_INTERFACE, HostSpec, Lab, RouterMode, TopologySpec, in_netns, interface_mac, remove_stale,
};
use vfn_perf::traffic::{Generator, Sink, udp_frame};
use vfn_xdp::interface_index;

const PREFIX: &str = "vfntrafg";

static ROOT_TESTS: Mutex<()> = Mutex::new(());

fn root_test() -> MutexGuard<'static, ()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the traffic tests need root: they create network namespaces"
    );
    ROOT_TESTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One host linked to an empty router namespace: no router runs there.
fn lab() -> Lab {
    remove_stale(PREFIX).expect("remove stale namespaces");
    let spec = TopologySpec::new(PREFIX)
        .with_router_mode(RouterMode::External)
        .with_host(HostSpec::new("gen", 1));
    Lab::create(&spec).expect("create the lab")
}

/// Sends `count` frames of `flows` flows from the host to the router's port, in chunks of
/// `chunk`, and returns (frames the generator handled, frames the sink counted).
fn send_and_count(lab: &Lab, v6: bool, count: u32, chunk: u32, flows: u32) -> (u64, u64) {
    let host = lab.topology().host("gen").expect("host");
    let port = lab.topology().port("gen").expect("port");
    let router_netns = lab.topology().router.netns.clone();
    let host_mac = interface_mac(&host.netns, HOST_INTERFACE).expect("host MAC");
    let port_mac = interface_mac(&router_netns, &port.interface).expect("port MAC");
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (host.ipv6.addr(), port.ipv6.addr())
    } else {
        (host.ipv4.addr(), port.ipv4.addr())
    };
    let frame = udp_frame(
        host_mac,
        port_mac,
        src,
        dst,
        10_000,
        if v6 { 78 } else { 60 },
    )
    .expect("frame");

    // The sink is attached, read and detached from threads of the router's namespace.
    let sink = in_netns(&router_netns, || {
        let ifindex = interface_index(&port.interface).expect("port index");
        Sink::attach(ifindex).expect("attach the sink")
    })
    .expect("enter the router namespace");
    let sent = in_netns(&host.netns, || {
        let ifindex = interface_index(HOST_INTERFACE).expect("host index");
        let generator = Generator::new(ifindex, frame, flows).expect("load the generator");
        let mut left = count;
        while left > 0 {
            let now = left.min(chunk);
            generator.send(now).expect("send");
            left -= now;
        }
        generator.sent().expect("read the generator's counter")
    })
    .expect("enter the host namespace");
    let received = sink.received().expect("read the sink's counter");
    in_netns(&router_netns, move || drop(sink)).expect("detach the sink");
    (sent, received)
}

#[test]
fn every_frame_sent_is_counted_once_ipv4_and_ipv6() {
    let _serial = root_test();
    let lab = lab();
    let (sent, received) = send_and_count(&lab, false, 200_000, 200_000, 1_000);
    assert_eq!((sent, received), (200_000, 200_000), "IPv4, one call");
    let (sent, received) = send_and_count(&lab, true, 50_000, 1_000, 100_000);
    assert_eq!((sent, received), (50_000, 50_000), "IPv6, paced in chunks");
    lab.destroy().expect("remove the lab");
}
