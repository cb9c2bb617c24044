//! End to end: segmentation rules enforced by the `vfn` binary on real traffic between network
//! namespaces. Needs root; the tests run one at a time and fail loudly without root.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use vfn_config::{Config, PolicySource};
use vfn_lab::{Connect, Lab, PingOpts, RunningVfn, TopologySpec};
use vfn_rules::{
    Action, AddressMatch, DefaultAction, IsolateSpec, ManagementFlow, PortRange, Protocol,
    RateLimitSpec, RuleSetSpec, RuleSpec,
};

static SERIAL: Mutex<()> = Mutex::new(());
const READY: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(1500);

struct Setup {
    vfn: RunningVfn,
    lab: Lab,
    config: Config,
}

fn with_policy(config: &Config, spec: RuleSetSpec) -> Config {
    Config {
        policy: Some(PolicySource::Inline(spec)),
        ..config.clone()
    }
}

fn setup(prefix: &str, spec: RuleSetSpec) -> Setup {
    vfn_lab::remove_stale(prefix).expect("remove namespaces of crashed runs");
    let lab = Lab::create(&TopologySpec::default_lab(prefix)).expect("lab");
    let config = with_policy(&vfn_lab::lab_config(lab.topology()).expect("config"), spec);
    let vfn = RunningVfn::start(
        &lab,
        &vfn_lab::vfn_binary().expect("binary"),
        &config,
        READY,
    )
    .expect("router starts");
    Setup { vfn, lab, config }
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn prefixes(list: &[&str]) -> AddressMatch {
    let prefix = |text: &&str| {
        text.parse()
            .unwrap_or_else(|_| ipnet::IpNet::from(addr(text)))
    };
    AddressMatch {
        prefixes: list.iter().map(prefix).collect(),
        ..AddressMatch::default()
    }
}

fn tcp_rule(
    id: &str,
    source: &[&str],
    destination: &[&str],
    port: u16,
    action: Action,
) -> RuleSpec {
    RuleSpec {
        source: prefixes(source),
        destination: prefixes(destination),
        protocol: Some(Protocol::Tcp),
        destination_ports: vec![PortRange::single(port)],
        ..RuleSpec::new(id, action)
    }
}

impl Setup {
    /// `bytes` over TCP from `from` to srv's `port`; asserts they arrive intact.
    fn transfer(&self, from: &str, port: u16, bytes: usize) {
        let transfer = vfn_lab::tcp_transfer(
            self.lab.netns(from).expect("client"),
            self.lab.netns("srv").expect("srv"),
            addr(SRV),
            port,
            bytes,
            Duration::from_secs(30),
        )
        .expect("transfer runs");
        assert!(transfer.is_intact(), "{from} to port {port}: {transfer:?}");
    }

    fn connect(&self, from: &str, to_role: &str, to: &str, port: u16) -> Connect {
        let (client, server) = (
            self.lab.netns(from).expect("client"),
            self.lab.netns(to_role).expect("server"),
        );
        vfn_lab::tcp_connect(client, server, addr(to), port, true, SHORT).expect("connect runs")
    }
}

const C1: &str = "198.18.1.2";
const C2: &str = "198.18.2.2";
const SRV: &str = "198.18.3.2";
const C1_V6: &str = "2001:2:0:1::2";
const SRV_V6: &str = "2001:2:0:3::2";

#[test]
fn allow_drop_reject_and_replies_of_allowed_flows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = RuleSetSpec {
        version: "e2e-1".into(),
        default_action: DefaultAction::Deny,
        rules: vec![
            RuleSpec {
                protocol: Some(Protocol::Icmp {
                    icmp_type: Some(8),
                    code: None,
                }),
                source: prefixes(&["198.18.1.0/24"]),
                ..RuleSpec::new("ping-from-c1", Action::Allow)
            },
            RuleSpec {
                protocol: Some(Protocol::Icmp {
                    icmp_type: Some(8),
                    code: None,
                }),
                source: prefixes(&["198.18.2.0/24"]),
                ..RuleSpec::new("ping-from-c2", Action::Reject)
            },
            tcp_rule("web", &[C1], &[SRV], 8080, Action::Allow),
            tcp_rule("rejected", &[C1], &[SRV], 8081, Action::Reject),
            tcp_rule("dropped", &[C1], &[SRV], 8082, Action::Drop),
            tcp_rule("web6", &[C1_V6], &[SRV_V6], 8080, Action::Allow),
            tcp_rule("rejected6", &[C1_V6], &[SRV_V6], 8081, Action::Reject),
        ],
        ..RuleSetSpec::default()
    };
    let s = setup("vfnpol1", spec);
    let ping = vfn_lab::ping(
        s.lab.netns("c1").expect("c1"),
        addr(SRV),
        3,
        &PingOpts {
            interval: Duration::from_millis(50),
            ..PingOpts::default()
        },
    )
    .expect("ping");
    assert!(
        ping.all_received(),
        "allowed ping and its replies: {}",
        ping.output
    );
    let filtered = vfn_lab::ping(
        s.lab.netns("c2").expect("c2"),
        addr(SRV),
        2,
        &PingOpts {
            interval: Duration::from_millis(50),
            ..PingOpts::default()
        },
    )
    .expect("ping");
    assert_eq!(filtered.received, 0);
    assert!(
        filtered.output.contains("Packet filtered"),
        "ICMP administratively prohibited: {}",
        filtered.output
    );

    assert_eq!(
        s.connect("c1", "srv", SRV, 8080),
        Connect::Connected,
        "allowed; the SYN-ACK passes as a reply\n{}",
        s.vfn.log()
    );
    s.transfer("c1", 8080, 1 << 20);
    assert_eq!(
        s.connect("c1", "srv", SRV, 8081),
        Connect::Refused,
        "reject answers with a reset"
    );
    assert_eq!(
        s.connect("c1", "srv", SRV, 8082),
        Connect::TimedOut,
        "drop is silent"
    );
    assert_eq!(
        s.connect("srv", "c1", C1, 8080),
        Connect::TimedOut,
        "unsolicited, the other way"
    );
    assert_eq!(
        s.connect("c2", "srv", SRV, 8080),
        Connect::TimedOut,
        "the default denies"
    );
    assert_eq!(
        s.connect("c1", "srv", SRV_V6, 8080),
        Connect::Connected,
        "IPv6 allowed\n{}",
        s.vfn.log()
    );
    assert_eq!(
        s.connect("c1", "srv", SRV_V6, 8081),
        Connect::Refused,
        "IPv6 reject resets"
    );
    assert_eq!(
        s.connect("c1", "srv", SRV_V6, 8082),
        Connect::TimedOut,
        "IPv6 default deny"
    );
    let counters = s
        .vfn
        .wait_for_counters(Duration::from_secs(3), |c| c.drops("policy_reject") >= 3)
        .expect("counted");
    assert!(counters.drops("policy_drop") >= 1);
    assert!(counters.drops("policy_default") >= 2);
    assert!(counters.total("vfn_rule_packets_total", &[("rule", "web")]) > 100);
}

#[test]
fn rate_limit_holds_the_rate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = RuleSetSpec {
        version: "e2e-rate".into(),
        default_action: DefaultAction::Allow,
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Udp),
            destination_ports: vec![PortRange::single(7000)],
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
    let s = setup("vfnpol2", spec);
    // Warm up the neighbours so that the first packets are not queued behind ARP.
    vfn_lab::ping(
        s.lab.netns("c1").expect("c1"),
        addr(SRV),
        1,
        &PingOpts::default(),
    )
    .expect("ping");
    let seconds = 3;
    let result = vfn_lab::udp_flood(
        s.lab.netns("c1").expect("c1"),
        s.lab.netns("srv").expect("srv"),
        addr(SRV),
        7000,
        5000,
        Duration::from_secs(seconds),
    )
    .expect("flood runs");
    assert!(result.sent >= 14_000, "offered at 5x: {result:?}");
    let rate = (result.received.saturating_sub(100)) as f64 / result.elapsed.as_secs_f64();
    assert!(
        (900.0..=1100.0).contains(&rate),
        "arrivals less the burst: {rate:.0}/s, not within 10 % of 1000/s ({result:?})"
    );
}

#[test]
fn isolation_keeps_only_the_management_flows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = RuleSetSpec {
        version: "e2e-isolate".into(),
        default_action: DefaultAction::Allow,
        isolate: vec![IsolateSpec {
            id: "quarantine-c2".into(),
            target: prefixes(&[C2]),
            allow: vec![ManagementFlow {
                peer: prefixes(&[C1]),
                protocol: Some(Protocol::Tcp),
                ports: vec![PortRange::single(2222)],
                from_target: false,
            }],
            log: true,
        }],
        ..RuleSetSpec::default()
    };
    let s = setup("vfnpol3", spec);
    assert_eq!(
        s.connect("c1", "c2", C2, 2222),
        Connect::Connected,
        "the management flow\n{}",
        s.vfn.log()
    );
    assert_eq!(
        s.connect("c1", "c2", C2, 8080),
        Connect::TimedOut,
        "anything else to the target"
    );
    assert_eq!(
        s.connect("c2", "srv", SRV, 8080),
        Connect::TimedOut,
        "anything from the target"
    );
    assert_eq!(
        s.connect("c1", "srv", SRV, 8080),
        Connect::Connected,
        "others are not isolated"
    );
}

#[test]
fn sighup_swaps_the_rule_set_and_a_bad_one_changes_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let allow = RuleSetSpec {
        version: "allow".into(),
        default_action: DefaultAction::Deny,
        rules: vec![tcp_rule("web", &[C1], &[SRV], 8080, Action::Allow)],
        ..RuleSetSpec::default()
    };
    let s = setup("vfnpol4", allow.clone());
    assert_eq!(s.connect("c1", "srv", SRV, 8080), Connect::Connected);
    let deny = RuleSetSpec {
        version: "deny".into(),
        default_action: DefaultAction::Deny,
        ..RuleSetSpec::default()
    };
    s.vfn.reload(&with_policy(&s.config, deny)).expect("SIGHUP");
    s.vfn
        .wait_for_counters(Duration::from_secs(5), |c| {
            c.total("vfn_policy_generation", &[("version", "deny")]) >= 2
        })
        .expect("the new set is in force");
    assert_eq!(
        s.connect("c1", "srv", SRV, 8080),
        Connect::TimedOut,
        "denied after the swap"
    );
    // A rule naming an unknown segment: refused whole, the deny set stays.
    let mut bad = allow;
    bad.rules[0].destination = AddressMatch {
        segments: vec!["nowhere".into()],
        ..AddressMatch::default()
    };
    s.vfn.reload(&with_policy(&s.config, bad)).expect("SIGHUP");
    let refused = vfn_lab::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        s.vfn.log().contains("unknown segment")
    });
    assert!(refused.is_ok(), "the log says why: {}", s.vfn.log());
    assert_eq!(
        s.connect("c1", "srv", SRV, 8080),
        Connect::TimedOut,
        "still the deny set"
    );
}

/// The highest of a few rates at which a one-second UDP stream from c1 to the server loses
/// nothing through the router (at least the lowest tried).
fn lossless_rate(s: &Setup, port: u16) -> u64 {
    let mut lossless = 0;
    for rate in [2_000, 5_000, 10_000, 20_000, 40_000] {
        let result = vfn_lab::udp_flood(
            s.lab.netns("c1").expect("c1"),
            s.lab.netns("srv").expect("srv"),
            addr(SRV),
            port,
            rate,
            Duration::from_secs(1),
        )
        .expect("flood runs");
        if result.received < result.sent {
            break;
        }
        lossless = rate;
    }
    assert!(
        lossless > 0,
        "not even 2000 packets/s got through without loss\n{}",
        s.vfn.log()
    );
    lossless
}

#[test]
fn swapping_rule_sets_at_half_the_lossless_rate_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let udp_to = |first: u16, last: u16| RuleSpec {
        source: prefixes(&[C1]),
        destination: prefixes(&[SRV]),
        protocol: Some(Protocol::Udp),
        destination_ports: vec![PortRange { first, last }],
        ..RuleSpec::new("stream", Action::Allow)
    };
    // Two sets that disagree elsewhere but both allow the stream to port 7100.
    let set_a = RuleSetSpec {
        version: "A".into(),
        default_action: DefaultAction::Deny,
        rules: vec![
            tcp_rule("a-only", &[C1], &[SRV], 9, Action::Drop),
            udp_to(7100, 7100),
        ],
        ..RuleSetSpec::default()
    };
    let set_b = RuleSetSpec {
        version: "B".into(),
        default_action: DefaultAction::Deny,
        rules: vec![
            udp_to(7000, 7200),
            tcp_rule("b-only", &[C1], &[SRV], 10, Action::Reject),
        ],
        ..RuleSetSpec::default()
    };
    let s = setup("vfnpol5", set_a.clone());
    vfn_lab::ping(
        s.lab.netns("c1").expect("c1"),
        addr(SRV),
        1,
        &PingOpts::default(),
    )
    .expect("warm up");
    let rate = lossless_rate(&s, 7100) / 2;
    let (configs, stop) = (
        [with_policy(&s.config, set_a), with_policy(&s.config, set_b)],
        std::sync::atomic::AtomicBool::new(false),
    );
    let (result, swaps) = std::thread::scope(|scope| {
        let swapper = scope.spawn(|| {
            let mut swaps = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && swaps < 200 {
                s.vfn
                    .reload(&configs[(swaps % 2) as usize ^ 1])
                    .expect("SIGHUP");
                swaps += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            swaps
        });
        let result = vfn_lab::udp_flood(
            s.lab.netns("c1").expect("c1"),
            s.lab.netns("srv").expect("srv"),
            addr(SRV),
            7100,
            rate,
            Duration::from_secs(3),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (
            result.expect("flood runs"),
            swapper.join().expect("swapper"),
        )
    });
    assert!(swaps >= 50, "only {swaps} swaps");
    let counters = s
        .vfn
        .wait_for_counters(Duration::from_secs(3), |c| {
            c.total("vfn_policy_generation", &[]) >= 30
        })
        .expect("swaps took effect");
    assert_eq!(
        result.received,
        result.sent,
        "lost packets while swapping at {rate}/s ({result:?}); generation {}",
        counters.total("vfn_policy_generation", &[])
    );
}

/// Two workers, each on its own queue of every port: the kernel spreads a connection's two
/// directions over the queues by hashes of its own, so replies often arrive at the worker that did
/// not see the request. Handoff brings them to the flow's owner, where the state that lets them
/// pass is; without it, replies arriving at the other worker would meet the default deny.
#[test]
fn two_workers_pass_the_replies_of_every_allowed_flow() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = "vfnpol2w";
    vfn_lab::remove_stale(prefix).expect("remove namespaces of crashed runs");
    let spec = TopologySpec::default_lab(prefix)
        .with_queues(2)
        .expect("valid queue count");
    let lab = Lab::create(&spec).expect("lab");
    let config = vfn_lab::lab_config(lab.topology()).expect("config");
    assert_eq!(config.workers.cores.len(), 2);
    let opens = |id: &str, sources: &[&str], destinations: &[&str]| RuleSpec {
        source: prefixes(sources),
        destination: prefixes(destinations),
        protocol: Some(Protocol::Tcp),
        destination_ports: vec![PortRange {
            first: 8000,
            last: 8999,
        }],
        ..RuleSpec::new(id, Action::Allow)
    };
    let config = with_policy(
        &config,
        RuleSetSpec {
            version: "clients-open".into(),
            default_action: DefaultAction::Deny,
            rules: vec![
                opens("clients", &[C1, C2], &[SRV]),
                opens("clients6", &[C1_V6], &[SRV_V6]),
            ],
            ..RuleSetSpec::default()
        },
    );
    let vfn = RunningVfn::start(
        &lab,
        &vfn_lab::vfn_binary().expect("binary"),
        &config,
        READY,
    )
    .expect("router starts");
    let s = Setup { vfn, lab, config };

    // Each connection has its own source port, so its own queue on the way there.
    for n in 0..24 {
        for (client, server, port) in [
            ("c1", SRV, 8100 + n),
            ("c2", SRV, 8200 + n),
            ("c1", SRV_V6, 8300 + n),
        ] {
            assert_eq!(
                s.connect(client, "srv", server, port),
                Connect::Connected,
                "{client} -> {server} port {port}\n{}",
                s.vfn.log()
            );
        }
    }
    s.transfer("c2", 8400, 2 << 20);
    assert_eq!(
        s.connect("srv", "c1", C1, 8080),
        Connect::TimedOut,
        "unsolicited: no flow lets it through"
    );

    let counters = s
        .vfn
        .wait_for_counters(Duration::from_secs(3), |c| {
            c.total("vfn_handed_off_packets_total", &[]) > 0
                && c.total("vfn_handed_off_packets_total", &[])
                    == c.total("vfn_handed_in_packets_total", &[])
        })
        .unwrap_or_else(|e| panic!("both queues carried traffic, handed over: {e}"));
    for worker in ["0", "1"] {
        assert!(
            counters.total(
                "vfn_port_packets_total",
                &[("worker", worker), ("direction", "rx")]
            ) > 0,
            "worker {worker} received nothing: the kernel used one queue"
        );
    }
    assert_eq!(counters.drops("handoff_full"), 0);
}
