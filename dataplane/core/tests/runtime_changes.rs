//! Routes and neighbours changed while the router runs: the control side sends a change, the slow
//! path (stepped by hand) makes it, the control side reads the answer; frames in memory show
//! what the workers do before and after.

mod common;

use std::time::Duration;

use common::*;
use etherparse::PacketBuilder;
use vfn_dataplane::change::ChangeError;
use vfn_dataplane::counters::DropReason;
use vfn_dataplane::fib::{FibError, StaticRoute};
use vfn_dataplane::neigh::{NeighbourError, NeighbourKey, NeighbourState};
use vfn_dataplane::router::NeighbourListing;

const GATEWAY2_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 3];
const HOST_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 7];

fn route(prefix: &str, via: &str) -> StaticRoute {
    StaticRoute {
        prefix: prefix.parse().expect("prefix"),
        via: via.parse().expect("addr"),
        iface: None,
    }
}

fn key(iface: u16, addr: &str) -> NeighbourKey {
    NeighbourKey {
        iface,
        addr: addr.parse().expect("addr"),
    }
}

fn listed(bench: &Bench, key: NeighbourKey) -> Option<NeighbourListing> {
    bench
        .router
        .neighbours()
        .into_iter()
        .find(|n| n.iface == key.iface && n.addr == key.addr)
}

fn is_arp_request_for(frame: &[u8], target: [u8; 4]) -> bool {
    frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 1] && frame[38..42] == target
}

fn is_ipv4(frame: &[u8]) -> bool {
    frame[12..14] == [0x08, 0x00]
}

#[test]
fn replacing_the_routes_changes_forwarding_at_the_next_burst() {
    let mut bench = Bench::new();
    let to_198_20 = udp_to([198, 20, 0, 1], 64);
    let [out0, out1] = bench.exchange(0, &to_198_20);
    assert!(out1.is_empty());
    assert_eq!(out0.len(), 1, "net unreachable");
    assert_eq!(bench.worker.counters().drops_for(DropReason::NoRoute), 1);

    let pending = bench
        .router
        .request_routes(vec![
            route("198.20.0.0/16", "198.18.2.2"),
            route("2001:2:0:ff00::/56", "2001:2:0:2::2"),
        ])
        .expect("queued");
    let applied = bench.settle_change(pending).expect("accepted");
    assert_eq!((applied.routes_v4, applied.routes_v6), (1, 1));
    assert!(applied.memory_bytes > 0);
    assert_eq!(
        bench.router.routes(),
        vec![
            StaticRoute {
                iface: Some(1),
                ..route("198.20.0.0/16", "198.18.2.2")
            },
            StaticRoute {
                iface: Some(1),
                ..route("2001:2:0:ff00::/56", "2001:2:0:2::2")
            },
        ]
    );

    // The new IPv6 gateway is being solicited meanwhile.
    let [_, out1] = bench.exchange(0, &to_198_20);
    let forwarded: Vec<_> = out1.iter().filter(|f| is_ipv4(f)).collect();
    assert_eq!(forwarded.len(), 1, "forwarded by the new route");
    assert_eq!(
        &forwarded[0][0..6],
        &SERVER_MAC,
        "through the resolved gateway"
    );
    let [out0, out1] = bench.exchange(0, &udp_to([198, 19, 0, 1], 64));
    assert!(out1.is_empty(), "the replaced route is gone");
    assert_eq!(out0.len(), 1, "net unreachable");
    assert_eq!(bench.worker.counters().drops_for(DropReason::NoRoute), 2);
    bench.assert_balanced();
}

#[test]
fn a_refused_route_list_changes_nothing() {
    let mut bench = Bench::new();
    let routes = bench.router.routes();
    let neighbours = bench.router.neighbours();
    let pending = bench
        .router
        .request_routes(vec![
            route("198.20.0.0/16", "198.18.2.3"),
            route("198.21.0.0/16", "198.18.9.9"),
        ])
        .expect("queued");
    let refused = bench.settle_change(pending).expect_err("off-link gateway");
    assert!(
        matches!(
            &refused,
            ChangeError::Refused(FibError::GatewayNotOnLink { prefix, .. })
                if *prefix == "198.21.0.0/16".parse().expect("prefix")
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("198.21.0.0/16"), "{refused}");
    bench.settle();
    assert_eq!(bench.router.routes(), routes);
    assert_eq!(
        bench.router.neighbours(),
        neighbours,
        "the first route's gateway was not pinned"
    );

    let [_, out1] = bench.exchange(0, &udp_to([198, 19, 0, 1], 64));
    assert_eq!(out1.len(), 1, "the old routes still forward");
    let [out0, out1] = bench.exchange(0, &udp_to([198, 20, 0, 1], 64));
    assert!(out1.is_empty());
    assert_eq!(out0.len(), 1, "net unreachable");
    bench.assert_balanced();
}

#[test]
fn a_change_that_timed_out_is_never_made() {
    let mut bench = Bench::new();
    let routes = bench.router.routes();
    let pending = bench
        .router
        .request_routes(vec![route("198.20.0.0/16", "198.18.2.2")])
        .expect("queued");
    let timeout = Duration::from_millis(1);
    assert_eq!(pending.wait(timeout), Err(ChangeError::TimedOut(timeout)));
    bench.settle();
    assert_eq!(bench.router.routes(), routes);
}

#[test]
fn a_packet_waiting_for_a_new_gateway_survives_another_replacement() {
    let mut bench = Bench::new();
    let routes = vec![
        route("198.19.0.0/16", "198.18.2.2"),
        route("198.20.0.0/16", "198.18.2.3"),
    ];
    let pending = bench.router.request_routes(routes.clone()).expect("queued");
    bench.settle_change(pending).expect("accepted");
    let [_, out1] = bench.exchange(0, &udp_to([198, 20, 0, 1], 64));
    assert!(
        out1.iter().any(|f| is_arp_request_for(f, [198, 18, 2, 3])),
        "the new gateway is solicited"
    );
    assert!(!out1.iter().any(|f| is_ipv4(f)));
    assert_eq!(bench.worker.pending_len(), 1);

    // Waiting packets are keyed by neighbour, not by anything of the FIB: a swap leaves them be.
    let pending = bench
        .router
        .request_routes([routes, vec![route("198.21.0.0/16", "198.18.2.2")]].concat())
        .expect("queued");
    bench.settle_change(pending).expect("accepted");
    assert_eq!(bench.worker.pending_len(), 1);

    let reply = arp(
        2,
        GATEWAY2_MAC,
        [198, 18, 2, 3],
        P1_MAC,
        [198, 18, 2, 1],
        P1_MAC,
    );
    let [_, out1] = bench.exchange(1, &reply);
    let forwarded: Vec<_> = out1.iter().filter(|f| is_ipv4(f)).collect();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(&forwarded[0][0..6], &GATEWAY2_MAC);
    assert_eq!(bench.worker.pending_len(), 0);
    bench.assert_balanced();
}

#[test]
fn a_static_neighbour_is_used_without_resolution_and_survives_aging() {
    let mut bench = Bench::new();
    let host = key(1, "198.18.2.7");
    let pending = bench
        .router
        .request_static_neighbour(host, HOST_MAC)
        .expect("queued");
    bench.settle_change(pending).expect("accepted");
    assert_eq!(
        listed(&bench, host),
        Some(NeighbourListing {
            iface: 1,
            iface_name: "p1".into(),
            addr: host.addr,
            mac: Some(HOST_MAC),
            state: NeighbourState::Static,
        })
    );

    let to_host = udp_to([198, 18, 2, 7], 64);
    let [_, out1] = bench.exchange(0, &to_host);
    assert_eq!(out1.len(), 1, "forwarded at once, nothing solicited");
    assert_eq!(&out1[0][0..6], &HOST_MAC);

    // Ten minutes, in and out of use: never re-confirmed, never stale, never removed.
    let mut solicited = 0;
    for minute in 0..120 {
        bench.now += Duration::from_secs(5);
        let [_, out1] = if minute % 2 == 0 {
            bench.settle()
        } else {
            bench.exchange(0, &to_host)
        };
        solicited += out1
            .iter()
            .filter(|f| is_arp_request_for(f, [198, 18, 2, 7]))
            .count();
    }
    assert_eq!(solicited, 0);
    // Nor does what the network says change it.
    let claim = arp(
        2,
        GATEWAY2_MAC,
        [198, 18, 2, 7],
        P1_MAC,
        [198, 18, 2, 1],
        P1_MAC,
    );
    bench.exchange(1, &claim);
    let [_, out1] = bench.exchange(0, &to_host);
    assert_eq!(out1.len(), 1);
    assert_eq!(&out1[0][0..6], &HOST_MAC);
    assert_eq!(
        listed(&bench, host).map(|n| n.state),
        Some(NeighbourState::Static)
    );
    bench.assert_balanced();
}

#[test]
fn a_static_neighbour_is_checked() {
    let mut bench = Bench::new();
    let pending = bench
        .router
        .request_static_neighbour(key(1, "198.18.1.7"), HOST_MAC)
        .expect("queued");
    assert!(matches!(
        bench.settle_change(pending),
        Err(ChangeError::Refused(NeighbourError::NotOnLink { .. }))
    ));
    let pending = bench
        .router
        .request_static_neighbour(key(1, "198.18.2.7"), [0xff; 6])
        .expect("queued");
    assert_eq!(
        bench.settle_change(pending),
        Err(ChangeError::Refused(NeighbourError::NotUnicastMac))
    );
    assert_eq!(listed(&bench, key(1, "198.18.2.7")), None);
}

#[test]
fn a_deleted_gateway_is_resolved_again() {
    let mut bench = Bench::new();
    let gateway = key(1, "198.18.2.2");
    assert_eq!(
        listed(&bench, gateway).map(|n| n.state),
        Some(NeighbourState::Reachable)
    );
    let pending = bench
        .router
        .request_delete_neighbour(gateway)
        .expect("queued");
    bench.settle_change(pending).expect("accepted");
    assert_eq!(
        listed(&bench, gateway).map(|n| (n.state, n.mac)),
        Some((NeighbourState::Incomplete, None)),
        "a route's gateway keeps its entry"
    );

    let [_, out1] = bench.exchange(0, &udp_to([198, 19, 0, 1], 64));
    assert!(
        out1.iter()
            .any(|f| is_arp_request_for(f, [198, 18, 2, 2]) && f[0..6] == [0xff; 6]),
        "solicited by broadcast, as a stranger"
    );
    assert!(!out1.iter().any(|f| is_ipv4(f)));
    assert_eq!(bench.worker.pending_len(), 1);
    let reply = arp(
        2,
        GATEWAY2_MAC,
        [198, 18, 2, 2],
        P1_MAC,
        [198, 18, 2, 1],
        P1_MAC,
    );
    let [_, out1] = bench.exchange(1, &reply);
    let forwarded: Vec<_> = out1.iter().filter(|f| is_ipv4(f)).collect();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(&forwarded[0][0..6], &GATEWAY2_MAC, "at its new address");
    bench.assert_balanced();
}

#[test]
fn a_deleted_host_is_resolved_again_when_next_needed() {
    let mut bench = Bench::new();
    client_resolves_router(&mut bench);
    let client = key(0, "198.18.1.2");
    assert_eq!(
        listed(&bench, client).map(|n| n.mac),
        Some(Some(CLIENT_MAC))
    );
    let pending = bench
        .router
        .request_delete_neighbour(client)
        .expect("queued");
    bench.settle_change(pending).expect("accepted");
    assert_eq!(listed(&bench, client), None);
    let pending = bench
        .router
        .request_delete_neighbour(client)
        .expect("queued");
    assert_eq!(
        bench.settle_change(pending),
        Err(ChangeError::Refused(NeighbourError::NoSuchNeighbour(
            client
        )))
    );

    let mut from_server = Vec::new();
    PacketBuilder::ethernet2(SERVER_MAC, P1_MAC)
        .ipv4([198, 19, 0, 1], [198, 18, 1, 2], 64)
        .udp(2000, 1000)
        .write(&mut from_server, &[1; 20])
        .expect("build");
    let [out0, _] = bench.exchange(1, &from_server);
    assert!(
        out0.iter().any(|f| is_arp_request_for(f, [198, 18, 1, 2])),
        "resolved again"
    );
    assert_eq!(bench.worker.pending_len(), 1);
    assert_eq!(
        listed(&bench, client).map(|n| n.state),
        Some(NeighbourState::Incomplete)
    );
}
