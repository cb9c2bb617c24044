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

/// Runs the generator `count` times (paced at `pace` frames per second, or not) from the host
/// to the router's port, in calls of `chunk`, and returns (frames the generator sent, frames
/// the sink counted, the seconds the calls took).
fn send_and_count(
    lab: &Lab,
    v6: bool,
    count: u32,
    chunk: u32,
    flows: u32,
    pace: Option<f64>,
) -> (u64, u64, f64) {
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
    let (sent, seconds) = in_netns(&host.netns, || {
        let ifindex = interface_index(HOST_INTERFACE).expect("host index");
        let generator = Generator::new(ifindex, frame, flows, pace).expect("load the generator");
        let start = std::time::Instant::now();
        let mut left = count;
        while left > 0 {
            let now = left.min(chunk);
            generator.send(now).expect("send");
            left -= now;
        }
        let seconds = start.elapsed().as_secs_f64();
        (
            generator.sent().expect("read the generator's counter"),
            seconds,
        )
    })
    .expect("enter the host namespace");
    let received = sink.received().expect("read the sink's counter");
    in_netns(&router_netns, move || drop(sink)).expect("detach the sink");
    (sent, received, seconds)
}

#[test]
fn every_frame_sent_is_counted_once_ipv4_and_ipv6() {
    let _serial = root_test();
    let lab = lab();
    let (sent, received, _) = send_and_count(&lab, false, 200_000, 200_000, 1_000, None);
    assert_eq!((sent, received), (200_000, 200_000), "IPv4, one call");
    let (sent, received, _) = send_and_count(&lab, true, 50_000, 1_000, 100_000, None);
    assert_eq!(
        (sent, received),
        (50_000, 50_000),
        "IPv6, in calls of 1,000"
    );
    lab.destroy().expect("remove the lab");
}

/// Paced, the generator never sends faster than asked (frames at least the interval apart),
/// and every frame it sends arrives. The lower bound is loose: it only shows that frames went
/// out at a rate of that order, whatever else the machine does meanwhile.
#[test]
fn a_paced_generator_keeps_its_pace() {
    let _serial = root_test();
    let lab = lab();
    let pace = 200_000.0;
    let (sent, received, seconds) =
        send_and_count(&lab, false, 1 << 21, 1 << 21, 1_000, Some(pace));
    assert_eq!(sent, received, "every paced frame arrives");
    let most = pace * seconds + 1.0;
    assert!(
        sent as f64 <= most,
        "{sent} frames in {seconds:.3} s at {pace} per second"
    );
    assert!(
        sent as f64 >= most / 4.0,
        "{sent} frames in {seconds:.3} s at {pace} per second"
    );
    lab.destroy().expect("remove the lab");
}
