//! Segmentation rules on the whole router in memory: stateful allow, default deny, reject,
//! rate limits, per-packet rules, fragments, isolation, dynamic quarantine, and rule-set swaps.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use vfn_dataplane::checksum;
use vfn_dataplane::counters::DropReason;
use vfn_dataplane::overlay::DynamicAction;
use vfn_rules::{
    Action, AddressMatch, CompileLimits, Context, DefaultAction, PortRange, Protocol,
    RateLimitSpec, RuleSetSpec, RuleSpec, TcpFlagsMatch,
};

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let (src_mac, dst_mac) = if src == CLIENT {
        (CLIENT_MAC, P0_MAC)
    } else {
        (SERVER_MAC, P1_MAC)
    };
    let mut builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 8192);
    if syn {
        builder = builder.syn();
    }
    if ack {
        builder = builder.ack(1);
    }
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0x11; 8]).expect("build");
    frame
}

/// Sends `frame` into the port its source sits behind; true when it left through the other.
fn passes(bench: &mut Bench, frame: &[u8]) -> bool {
    let ingress = if frame[6..12] == CLIENT_MAC { 0 } else { 1 };
    let out = bench.exchange(ingress, frame);
    !out[1 - ingress as usize].is_empty()
}

fn allow_web() -> RuleSetSpec {
    RuleSetSpec {
        version: "web".into(),
        default_action: DefaultAction::Deny,
        rules: vec![RuleSpec {
            destination: AddressMatch {
                prefixes: vec!["198.19.0.0/16".parse().expect("p")],
                ..AddressMatch::default()
            },
            protocol: Some(Protocol::Tcp),
            destination_ports: vec![PortRange::single(80)],
            ..RuleSpec::new("web", Action::Allow)
        }],
        ..RuleSetSpec::default()
    }
}

#[test]
fn replies_of_allowed_flows_pass_and_unsolicited_packets_do_not() {
    let mut bench = Bench::new();
    publish(&mut bench.router, &allow_web());
    assert!(
        passes(&mut bench, &tcp(CLIENT, SERVER, 40000, 80, true, false)),
        "allowed SYN"
    );
    assert!(
        passes(&mut bench, &tcp(SERVER, CLIENT, 80, 40000, true, true)),
        "its SYN-ACK, a reply"
    );
    assert!(passes(
        &mut bench,
        &tcp(CLIENT, SERVER, 40000, 80, false, true)
    ));
    assert!(
        !passes(&mut bench, &tcp(SERVER, CLIENT, 81, 40000, true, false)),
        "unsolicited from the server"
    );
    assert!(
        !passes(&mut bench, &tcp(CLIENT, SERVER, 40001, 22, true, false)),
        "not allowed"
    );
    assert_eq!(
        bench.worker.counters().drops_for(DropReason::PolicyDefault),
        2
    );
    assert_eq!(bench.worker.flow_count(), 1);
    bench.assert_balanced();
}

#[test]
fn reject_answers_tcp_with_a_reset_and_udp_with_prohibited() {
    let mut bench = Bench::new();
    let mut spec = allow_web();
    spec.rules
        .push(RuleSpec::new("reject-rest", Action::Reject));
    publish(&mut bench.router, &spec);
    let [out0, out1] = bench.exchange(0, &tcp(CLIENT, SERVER, 40000, 23, true, false));
    assert!(out1.is_empty());
    assert_eq!(out0.len(), 1, "a reset back to the client");
    let reset = SlicedPacket::from_ethernet(&out0[0]).expect("parses");
    let Some(TransportSlice::Tcp(segment)) = reset.transport else {
        panic!("tcp")
    };
    assert!(segment.rst());
    assert_eq!(
        (segment.source_port(), segment.destination_port()),
        (23, 40000)
    );
    let [out0, _] = bench.exchange(0, &udp(CLIENT, SERVER, 5000, 53));
    assert_eq!(out0.len(), 1);
    assert_eq!(
        &out0[0][14 + 20..14 + 22],
        &[3, 13],
        "ICMP administratively prohibited"
    );
    assert_eq!(
        bench.worker.counters().drops_for(DropReason::PolicyReject),
        2
    );
    bench.assert_balanced();
}

#[test]
fn rate_limit_admits_the_burst_then_the_rate() {
    let mut bench = Bench::new();
    let spec = RuleSetSpec {
        default_action: DefaultAction::Deny,
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Udp),
            ..RuleSpec::new(
                "limited",
                Action::RateLimit(RateLimitSpec {
                    packets_per_second: Some(1000),
                    bits_per_second: None,
                    burst_packets: 100,
                    burst_bytes: 0,
                    per_source: false,
                }),
            )
        }],
        ..RuleSetSpec::default()
    };
    publish(&mut bench.router, &spec);
    let frame = udp(CLIENT, SERVER, 5000, 9);
    let mut forwarded = 0;
    for _ in 0..300 {
        bench.worker.io_mut().inject(0, &frame).expect("room");
        bench.worker.poll_once(bench.now);
        forwarded += bench.worker.io_mut().take_sent(1).len();
    }
    assert_eq!(forwarded, 100, "the burst");
    bench.now += Duration::from_millis(50);
    for _ in 0..300 {
        bench.worker.io_mut().inject(0, &frame).expect("room");
        bench.worker.poll_once(bench.now);
        forwarded += bench.worker.io_mut().take_sent(1).len();
    }
    assert_eq!(forwarded, 150, "50 ms at 1000/s");
    assert_eq!(
        bench.worker.counters().drops_for(DropReason::RateLimited),
        450
    );
    bench.assert_balanced();
}

#[test]
fn per_packet_rules_are_judged_on_every_packet() {
    let mut bench = Bench::new();
    let spec = RuleSetSpec {
        default_action: DefaultAction::Allow,
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Tcp),
            tcp_flags: Some(TcpFlagsMatch {
                set: 0x01,
                clear: 0,
            }),
            ..RuleSpec::new("no-fin", Action::Drop)
        }],
        ..RuleSetSpec::default()
    };
    publish(&mut bench.router, &spec);
    assert!(passes(
        &mut bench,
        &tcp(CLIENT, SERVER, 40000, 80, true, false)
    ));
    let mut fin = tcp(CLIENT, SERVER, 40000, 80, false, true);
    fin[14 + 20 + 13] |= 0x01;
    // Recompute the TCP checksum is not needed: the router does not verify it.
    assert!(!passes(&mut bench, &fin), "the same flow, a FIN: dropped");
    assert!(
        passes(&mut bench, &tcp(CLIENT, SERVER, 40000, 80, false, true)),
        "and the next ACK passes"
    );
}

#[test]
fn a_swap_rejudges_established_flows_both_ways() {
    let mut bench = Bench::new();
    publish(&mut bench.router, &allow_web());
    assert!(passes(
        &mut bench,
        &tcp(CLIENT, SERVER, 40000, 80, true, false)
    ));
    assert!(passes(
        &mut bench,
        &tcp(SERVER, CLIENT, 80, 40000, true, true)
    ));
    let deny_all = RuleSetSpec {
        version: "none".into(),
        default_action: DefaultAction::Deny,
        ..RuleSetSpec::default()
    };
    publish(&mut bench.router, &deny_all);
    assert!(
        !passes(&mut bench, &tcp(SERVER, CLIENT, 80, 40000, false, true)),
        "the reply direction too"
    );
    assert!(!passes(
        &mut bench,
        &tcp(CLIENT, SERVER, 40000, 80, false, true)
    ));
    publish(&mut bench.router, &allow_web());
    assert!(
        passes(&mut bench, &tcp(CLIENT, SERVER, 40000, 80, false, true)),
        "allowed again"
    );
    let (_, counters) = bench.worker.policy_counters();
    assert!(counters.flows_rejudged.get() >= 1);
}

#[test]
fn isolation_keeps_only_management_flows() {
    let mut bench = Bench::new();
    let spec = RuleSetSpec {
        default_action: DefaultAction::Allow,
        isolate: vec![vfn_rules::IsolateSpec {
            id: "q".into(),
            target: AddressMatch {
                prefixes: vec!["198.18.1.2/32".parse().expect("p")],
                ..AddressMatch::default()
            },
            allow: vec![vfn_rules::ManagementFlow {
                peer: AddressMatch {
                    prefixes: vec!["198.19.0.0/16".parse().expect("p")],
                    ..AddressMatch::default()
                },
                protocol: Some(Protocol::Tcp),
                ports: vec![PortRange::single(22)],
                from_target: false,
            }],
            log: false,
        }],
        ..RuleSetSpec::default()
    };
    publish(&mut bench.router, &spec);
    assert!(
        passes(&mut bench, &tcp(SERVER, CLIENT, 50000, 22, true, false)),
        "management SSH in"
    );
    assert!(
        passes(&mut bench, &tcp(CLIENT, SERVER, 22, 50000, true, true)),
        "its replies"
    );
    assert!(
        !passes(&mut bench, &tcp(CLIENT, SERVER, 40000, 80, true, false)),
        "anything out"
    );
    assert!(
        !passes(&mut bench, &tcp(SERVER, CLIENT, 50001, 80, true, false)),
        "anything else in"
    );
}

#[test]
fn a_dynamic_quarantine_holds_for_its_time_to_live() {
    let mut bench = Bench::new();
    let now = bench.router.epoch.elapsed();
    bench.now = now;
    bench
        .router
        .overlay
        .add(
            CLIENT.into(),
            DynamicAction::Quarantine,
            Duration::from_secs(2),
            "test".into(),
            now,
        )
        .expect("room");
    let frame = udp(CLIENT, SERVER, 5000, 9);
    assert!(!passes(&mut bench, &frame));
    assert_eq!(
        bench.worker.counters().drops_for(DropReason::Quarantined),
        1
    );
    bench.now = now + Duration::from_millis(1500);
    assert!(
        !passes(&mut bench, &frame),
        "still quarantined half a second before expiry"
    );
    bench.now = now + Duration::from_millis(2001);
    assert!(passes(&mut bench, &frame), "expired");
}

fn fragment(offset_words: u16, more: bool, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = udp(CLIENT, SERVER, 5000, 9);
    frame.truncate(14 + 20);
    frame.extend_from_slice(payload);
    let total = (20 + payload.len()) as u16;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame[18..20].copy_from_slice(&id.to_be_bytes());
    let word = offset_words | if more { 0x2000 } else { 0 };
    frame[20..22].copy_from_slice(&word.to_be_bytes());
    frame[24..26].fill(0);
    let header_checksum = checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&header_checksum.to_be_bytes());
    frame
}

/// Allows UDP to port 9 and denies everything else.
fn udp_port_9_only() -> RuleSetSpec {
    RuleSetSpec {
        default_action: DefaultAction::Deny,
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Udp),
            destination_ports: vec![PortRange::single(9)],
            ..RuleSpec::new("udp9", Action::Allow)
        }],
        ..RuleSetSpec::default()
    }
}

/// A first fragment's payload: a UDP header (port 5000 to 9, length 40) and 16 bytes of data.
fn first_fragment_payload() -> Vec<u8> {
    let mut payload = vec![0x13, 0x88, 0x00, 0x09, 0x00, 40, 0, 0];
    payload.extend_from_slice(&[0x33; 16]);
    payload
}

#[test]
fn later_fragments_follow_their_first() {
    let mut bench = Bench::new();
    let spec = udp_port_9_only();
    publish(&mut bench.router, &spec);
    let first_payload = first_fragment_payload();
    assert!(passes(&mut bench, &fragment(0, true, 7, &first_payload)));
    assert!(
        passes(&mut bench, &fragment(3, false, 7, &[0x44; 16])),
        "its later fragment"
    );
    assert!(
        !passes(&mut bench, &fragment(3, false, 8, &[0x44; 16])),
        "a later fragment of no first"
    );
    assert_eq!(
        bench
            .worker
            .counters()
            .drops_for(DropReason::FragmentWithoutFirst),
        1
    );
    let mut denied = first_payload;
    denied[3] = 10; // port 10
    assert!(!passes(&mut bench, &fragment(0, true, 9, &denied)));
    assert!(
        !passes(&mut bench, &fragment(3, false, 9, &[0x44; 16])),
        "follows its denied first"
    );
}

/// One thread publishes two disagreeing rule sets in turn, 100 times, while the worker forwards
/// new flows: every burst's verdicts are all set A's or all set B's, and a burst that starts after
/// a publication has returned never sees an older set.
#[test]
fn swaps_under_traffic_are_atomic_per_burst() {
    let mut bench = Bench::new();
    let only = |first: u16, last: u16, version: &str| RuleSetSpec {
        version: version.into(),
        default_action: DefaultAction::Deny,
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Udp),
            destination_ports: vec![PortRange { first, last }],
            ..RuleSpec::new("only", Action::Allow)
        }],
        ..RuleSetSpec::default()
    };
    let interfaces = bench.router.interfaces.clone();
    let lookup = |name: &str| interfaces.by_name(name);
    let context = Context::without_mirrors(&lookup);
    let compile = |spec: &RuleSetSpec| {
        vfn_rules::compile(spec, &context, &CompileLimits::default()).expect("valid")
    };
    let (set_a, set_b) = (only(1000, 1999, "A"), only(2000, 2999, "B"));
    let mut publisher = std::mem::take(&mut bench.router.policy);
    let first = publisher.publish(Some(compile(&set_a)));
    let published = Arc::new(AtomicU32::new(first));
    let done = Arc::new(AtomicBool::new(false));
    let sets: Vec<_> = (0..100)
        .map(|i| compile(if i % 2 == 0 { &set_b } else { &set_a }))
        .collect();
    let swapper = {
        let (published, done) = (published.clone(), done.clone());
        std::thread::spawn(move || {
            for rules in sets {
                let generation = publisher.publish(Some(rules));
                published.store(generation, Ordering::Release);
                std::thread::sleep(Duration::from_micros(200));
            }
            done.store(true, Ordering::Release);
            publisher
        })
    };
    let (mut bursts, mut sport) = (0, 0u16);
    while !done.load(Ordering::Acquire) && bursts < 100_000 {
        let before = published.load(Ordering::Acquire);
        for dport in [1000, 1001, 2000, 2001] {
            sport = sport.wrapping_add(1);
            bench
                .worker
                .io_mut()
                .inject(0, &udp(CLIENT, SERVER, sport, dport))
                .expect("room");
        }
        bench.worker.poll_once(bench.now);
        let sent = bench.worker.io_mut().take_sent(1);
        let dports: Vec<u16> = sent
            .iter()
            .map(|f| u16::from_be_bytes([f[14 + 22], f[14 + 23]]))
            .collect();
        // Generation g holds set A when odd (the first publication is A, then B, A, ...).
        let a_verdicts = dports == [1000, 1001];
        let b_verdicts = dports == [2000, 2001];
        assert!(a_verdicts || b_verdicts, "a burst saw a mix: {dports:?}");
        let used = bench.worker.policy_generation();
        assert!(
            used >= before,
            "a burst started after generation {before} was published used {used}"
        );
        assert_eq!(
            a_verdicts,
            used % 2 == 1,
            "generation {used} holds set {}",
            if used % 2 == 1 { "A" } else { "B" }
        );
        bursts += 1;
    }
    let publisher = swapper.join().expect("swapper");
    assert!(
        bursts > 10,
        "the pipeline ran during the swaps ({bursts} bursts)"
    );
    assert!(publisher.generation() >= 101);
    bench.assert_balanced();
}

#[test]
fn matches_of_rules_that_log_become_events() {
    let mut bench = Bench::new();
    let mut spec = allow_web();
    spec.rules[0].log = true;
    let generation = publish(&mut bench.router, &spec);
    let events = bench.router.rule_matches();
    assert!(passes(
        &mut bench,
        &tcp(CLIENT, SERVER, 40000, 80, true, false)
    ));
    assert!(
        !passes(&mut bench, &tcp(CLIENT, SERVER, 40001, 22, true, false)),
        "no event: the default"
    );
    let event = events.try_recv().expect("one event");
    assert_eq!(
        (event.generation, event.rule, event.dport),
        (generation, 0, 80)
    );
    assert_eq!(event.src, std::net::IpAddr::from(CLIENT));
    assert!(events.try_recv().is_err());
}

/// An ICMP error from `from` (behind `mac` on the port it sits at) to `to`, quoting `quoted`.
fn icmp_error(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    from: [u8; 4],
    to: [u8; 4],
    icmp_type: u8,
    code: u8,
    quoted: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::new();
    let mut body = vec![icmp_type, code, 0, 0, 0, 0, 0x05, 0xdc];
    body.extend_from_slice(&quoted[14..14 + 28]);
    let body_checksum = checksum::checksum(&body);
    body[2..4].copy_from_slice(&body_checksum.to_be_bytes());
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(from, to, 64)
        .write(&mut frame, etherparse::IpNumber::ICMP, &body)
        .expect("build");
    frame
}

#[test]
fn icmp_errors_of_live_flows_pass_under_a_default_deny() {
    let mut bench = Bench::new();
    publish(&mut bench.router, &allow_web());
    let syn = tcp(CLIENT, SERVER, 40000, 80, true, false);
    assert!(passes(&mut bench, &syn));
    // The server side says "fragmentation needed" about the client's segment: related, passes.
    let related = icmp_error(SERVER_MAC, P1_MAC, SERVER, CLIENT, 3, 4, &syn);
    assert!(
        passes(&mut bench, &related),
        "PMTU discovery works under default deny"
    );
    // The same error quoting a flow that does not exist: judged by the rules, denied.
    let unrelated = icmp_error(
        SERVER_MAC,
        P1_MAC,
        SERVER,
        CLIENT,
        3,
        4,
        &tcp(CLIENT, SERVER, 40999, 80, true, false),
    );
    assert!(!passes(&mut bench, &unrelated));
    // Non-echo ICMP does not ride on an allowed echo flow (no state for it).
    let mut spec = allow_web();
    spec.rules.push(RuleSpec {
        protocol: Some(Protocol::Icmp {
            icmp_type: Some(8),
            code: None,
        }),
        ..RuleSpec::new("ping", Action::Allow)
    });
    publish(&mut bench.router, &spec);
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4(CLIENT, SERVER, 64)
        .icmpv4_echo_request(0, 1)
        .write(&mut ping, b"x")
        .expect("build");
    assert!(passes(&mut bench, &ping));
    let mut redirect = Vec::new();
    PacketBuilder::ethernet2(SERVER_MAC, P1_MAC)
        .ipv4(SERVER, CLIENT, 64)
        .icmpv4_raw(5, 1, [0; 4])
        .write(&mut redirect, &[0; 28])
        .expect("build");
    assert!(
        !passes(&mut bench, &redirect),
        "a redirect is not a reply of the echo flow"
    );
}

#[test]
fn a_reply_arriving_where_the_initiator_is_does_not_pass_as_a_reply() {
    let mut bench = Bench::build_with(
        1500,
        vfn_dataplane::worker::WorkerConfig::default(),
        vfn_dataplane::iface::RpFilter::Off,
    );
    publish(&mut bench.router, &allow_web());
    assert!(passes(
        &mut bench,
        &tcp(CLIENT, SERVER, 40000, 80, true, false)
    ));
    // A forged "reply" injected from the client's side (p0), with reverse-path checks off.
    let mut forged = tcp(SERVER, CLIENT, 80, 40000, true, true);
    forged[0..6].copy_from_slice(&P0_MAC);
    let out = bench.exchange(0, &forged);
    assert!(
        out[0].is_empty() && out[1].is_empty(),
        "not a reply: it came from the wrong side"
    );
    assert!(bench.worker.counters().drops_for(DropReason::PolicyDefault) >= 1);
    // The real reply, from the server's side, passes.
    assert!(passes(
        &mut bench,
        &tcp(SERVER, CLIENT, 80, 40000, true, true)
    ));
}

#[test]
fn a_first_packet_dropped_by_a_rate_limit_opens_no_flow() {
    let mut bench = Bench::new();
    let spec = RuleSetSpec {
        default_action: DefaultAction::Deny,
        rules: vec![RuleSpec {
            source: AddressMatch {
                prefixes: vec!["198.18.1.0/24".parse().expect("p")],
                ..AddressMatch::default()
            },
            protocol: Some(Protocol::Udp),
            ..RuleSpec::new(
                "one",
                Action::RateLimit(RateLimitSpec {
                    packets_per_second: Some(1),
                    bits_per_second: None,
                    burst_packets: 1,
                    burst_bytes: 0,
                    per_source: false,
                }),
            )
        }],
        ..RuleSetSpec::default()
    };
    publish(&mut bench.router, &spec);
    assert!(
        passes(&mut bench, &udp(CLIENT, SERVER, 5000, 9)),
        "the burst"
    );
    assert!(
        !passes(&mut bench, &udp(CLIENT, SERVER, 5001, 9)),
        "over the rate"
    );
    assert_eq!(bench.worker.flow_count(), 1, "only the flow that passed");
    assert!(
        !passes(&mut bench, &udp(SERVER, CLIENT, 9, 5001)),
        "so its 'reply' is no reply"
    );
}

#[test]
fn rules_on_tcp_flags_refine_established_flows() {
    let mut bench = Bench::new();
    let spec = RuleSetSpec {
        default_action: DefaultAction::Deny,
        rules: vec![
            RuleSpec {
                protocol: Some(Protocol::Tcp),
                tcp_flags: Some(TcpFlagsMatch {
                    set: 0x04,
                    clear: 0,
                }),
                ..RuleSpec::new("no-rst", Action::Drop)
            },
            RuleSpec {
                protocol: Some(Protocol::Tcp),
                destination_ports: vec![PortRange::single(22)],
                tcp_flags: Some(TcpFlagsMatch {
                    set: 0x02,
                    clear: 0x10,
                }),
                ..RuleSpec::new("new-ssh", Action::Allow)
            },
        ],
        ..RuleSetSpec::default()
    };
    publish(&mut bench.router, &spec);
    assert!(
        !passes(&mut bench, &tcp(CLIENT, SERVER, 40000, 22, false, true)),
        "no flow without a SYN"
    );
    assert!(
        passes(&mut bench, &tcp(CLIENT, SERVER, 40000, 22, true, false)),
        "the SYN opens it"
    );
    assert!(passes(
        &mut bench,
        &tcp(SERVER, CLIENT, 22, 40000, true, true)
    ));
    assert!(
        passes(&mut bench, &tcp(CLIENT, SERVER, 40000, 22, false, true)),
        "the ACKs of the open flow pass"
    );
    let mut rst = tcp(CLIENT, SERVER, 40000, 22, false, true);
    rst[14 + 20 + 13] |= 0x04;
    assert!(
        !passes(&mut bench, &rst),
        "a higher-priority per-packet drop still applies"
    );
}

#[test]
fn later_fragments_of_an_older_rule_set_are_dropped() {
    let mut bench = Bench::new();
    let spec = udp_port_9_only();
    publish(&mut bench.router, &spec);
    let first_payload = first_fragment_payload();
    assert!(passes(&mut bench, &fragment(0, true, 11, &first_payload)));
    publish(&mut bench.router, &spec);
    assert!(
        !passes(&mut bench, &fragment(3, false, 11, &[0x44; 16])),
        "its first was judged by the previous set"
    );
    assert_eq!(
        bench
            .worker
            .counters()
            .drops_for(DropReason::FragmentWithoutFirst),
        1
    );
}

#[test]
fn a_bit_rate_limit_admits_full_size_packets_at_its_rate() {
    let mut bench = Bench::new();
    let spec = RuleSetSpec {
        default_action: DefaultAction::Deny,
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Udp),
            ..RuleSpec::new(
                "100kbit",
                // A burst smaller than one packet still lets packets through, in debt.
                Action::RateLimit(RateLimitSpec {
                    packets_per_second: None,
                    bits_per_second: Some(100_000),
                    burst_packets: 0,
                    burst_bytes: 1000,
                    per_source: false,
                }),
            )
        }],
        ..RuleSetSpec::default()
    };
    publish(&mut bench.router, &spec);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, P0_MAC)
        .ipv4(CLIENT, SERVER, 64)
        .udp(5000, 9)
        .write(&mut frame, &[0u8; 1222])
        .expect("build");
    let mut forwarded = 0;
    let start = bench.now;
    // One packet (1250 bytes of IP) per millisecond offered for a second: 100 kbit/s is 10 of them.
    for ms in 0..1000 {
        bench.now = start + Duration::from_millis(ms);
        bench.worker.io_mut().inject(0, &frame).expect("room");
        bench.worker.poll_once(bench.now);
        forwarded += bench.worker.io_mut().take_sent(1).len();
    }
    assert!(
        (10..=11).contains(&forwarded),
        "{forwarded} packets of 1250 bytes in 1 s at 100 kbit/s"
    );
}
