//! The compiler: every validation error named, and compiled rule sets that agree with a direct
//! reading of the spec.

use std::net::IpAddr;

use proptest::prelude::*;
use vfn_classify::Key;

use crate::*;

fn interfaces(name: &str) -> Option<u16> {
    match name {
        "p0" => Some(0),
        "p1" => Some(1),
        "p0.100" => Some(2),
        _ => None,
    }
}

fn mirror_sessions(name: &str) -> Option<u16> {
    (name == "ids").then_some(0)
}

fn context() -> Context<'static> {
    Context {
        interface: &interfaces,
        mirror_session: &mirror_sessions,
    }
}

fn net(text: &str) -> ipnet::IpNet {
    text.parse().expect("prefix")
}

fn addresses(prefixes: &[&str]) -> AddressMatch {
    AddressMatch {
        prefixes: prefixes.iter().map(|p| net(p)).collect(),
        ..AddressMatch::default()
    }
}

fn tcp_to(id: &str, destination: &[&str], port: u16, action: Action) -> RuleSpec {
    RuleSpec {
        destination: addresses(destination),
        protocol: Some(Protocol::Tcp),
        destination_ports: vec![PortRange::single(port)],
        ..RuleSpec::new(id, action)
    }
}

fn compile_ok(spec: &RuleSetSpec) -> RuleSet {
    compile(spec, &context(), &CompileLimits::default()).expect("valid")
}

fn errors(spec: &RuleSetSpec) -> Vec<String> {
    compile(spec, &context(), &CompileLimits::default())
        .expect_err("invalid")
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn key4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Key<u32> {
    Key {
        src: u32::from_be_bytes(src),
        dst: u32::from_be_bytes(dst),
        sport,
        dport,
        proto,
        ingress: 0,
        tcp_flags: 0x02,
    }
}

#[test]
fn first_match_wins_and_default_applies() {
    let spec = RuleSetSpec {
        version: "1".into(),
        rules: vec![
            tcp_to("web-drop-one", &["198.18.3.66/32"], 80, Action::Drop),
            tcp_to("web", &["198.18.3.0/24"], 80, Action::Allow),
        ],
        ..RuleSetSpec::default()
    };
    let set = compile_ok(&spec);
    assert_eq!(
        set.classify_v4(&key4([198, 18, 1, 2], [198, 18, 3, 66], 6, 1000, 80))
            .rule,
        Some(0)
    );
    assert_eq!(
        set.classify_v4(&key4([198, 18, 1, 2], [198, 18, 3, 67], 6, 1000, 80))
            .rule,
        Some(1)
    );
    assert_eq!(
        set.classify_v4(&key4([198, 18, 1, 2], [198, 18, 3, 67], 6, 1000, 81))
            .rule,
        None
    );
    assert_eq!(
        set.classify_v4(&key4([198, 18, 1, 2], [198, 18, 3, 67], 17, 1000, 80))
            .rule,
        None
    );
    assert_eq!(set.default_action, DefaultAction::Deny);
}

#[test]
fn segments_and_except_expand_to_prefixes() {
    let spec = RuleSetSpec {
        segments: vec![SegmentSpec {
            name: "web".into(),
            prefixes: vec![net("198.18.3.0/24"), net("2001:2:0:3::/64")],
            criticality: 5,
        }],
        rules: vec![RuleSpec {
            destination: AddressMatch {
                segments: vec!["web".into()],
                except: vec![net("198.18.3.128/25")],
                ..AddressMatch::default()
            },
            ..RuleSpec::new("web", Action::Allow)
        }],
        ..RuleSetSpec::default()
    };
    let set = compile_ok(&spec);
    assert_eq!(
        set.classify_v4(&key4([1, 1, 1, 1], [198, 18, 3, 5], 6, 1, 2))
            .rule,
        Some(0)
    );
    assert_eq!(
        set.classify_v4(&key4([1, 1, 1, 1], [198, 18, 3, 200], 6, 1, 2))
            .rule,
        None,
        "excepted"
    );
    let v6: u128 = "2001:2:0:3::9"
        .parse::<std::net::Ipv6Addr>()
        .expect("a")
        .into();
    let key = Key {
        src: 1,
        dst: v6,
        sport: 1,
        dport: 2,
        proto: 17,
        ingress: 0,
        tcp_flags: 0,
    };
    assert_eq!(set.classify_v6(&key).rule, Some(0));
}

#[test]
fn icmp_type_is_per_packet_and_not_cacheable() {
    let spec = RuleSetSpec {
        rules: vec![
            RuleSpec {
                protocol: Some(Protocol::Icmp {
                    icmp_type: Some(8),
                    code: None,
                }),
                ..RuleSpec::new("ping", Action::Allow)
            },
            RuleSpec::new("rest", Action::Drop),
        ],
        ..RuleSetSpec::default()
    };
    let set = compile_ok(&spec);
    assert!(set.rules[0].per_packet);
    let request = set.classify_v4(&key4([1, 1, 1, 1], [2, 2, 2, 2], 1, 8, 0));
    assert_eq!(
        request,
        Decision {
            rule: Some(0),
            cacheable: false
        }
    );
    let reply = set.classify_v4(&key4([2, 2, 2, 2], [1, 1, 1, 1], 1, 0, 0));
    assert_eq!(
        reply,
        Decision {
            rule: Some(1),
            cacheable: false
        },
        "the per-packet rule could match the flow"
    );
    let tcp = set.classify_v4(&key4([1, 1, 1, 1], [2, 2, 2, 2], 6, 5, 6));
    assert_eq!(
        tcp,
        Decision {
            rule: Some(1),
            cacheable: true
        }
    );
}

#[test]
fn tcp_flags_rule_matches_per_packet() {
    let spec = RuleSetSpec {
        rules: vec![RuleSpec {
            tcp_flags: Some(TcpFlagsMatch {
                set: 0x02,
                clear: 0x10,
            }),
            ..tcp_to("syn-only", &["198.18.3.0/24"], 22, Action::Drop)
        }],
        ..RuleSetSpec::default()
    };
    let set = compile_ok(&spec);
    let mut key = key4([1, 1, 1, 1], [198, 18, 3, 2], 6, 1000, 22);
    key.tcp_flags = 0x02;
    assert_eq!(set.classify_v4(&key).rule, Some(0));
    key.tcp_flags = 0x12;
    assert_eq!(set.classify_v4(&key).rule, None);
}

#[test]
fn isolate_compiles_to_allow_then_drops() {
    let spec = RuleSetSpec {
        default_action: DefaultAction::Allow,
        isolate: vec![IsolateSpec {
            id: "q".into(),
            target: addresses(&["198.18.2.2/32"]),
            allow: vec![ManagementFlow {
                peer: addresses(&["198.18.1.2/32"]),
                protocol: Some(Protocol::Tcp),
                ports: vec![PortRange::single(22)],
                from_target: false,
            }],
            log: true,
        }],
        rules: vec![RuleSpec::new("everything", Action::Allow)],
        ..RuleSetSpec::default()
    };
    let set = compile_ok(&spec);
    let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["q/allow/0", "q/drop-from", "q/drop-to", "everything"]);
    let ssh_in = set.classify_v4(&key4([198, 18, 1, 2], [198, 18, 2, 2], 6, 40000, 22));
    assert_eq!(ssh_in.rule, Some(0));
    assert_eq!(
        set.classify_v4(&key4([198, 18, 2, 2], [198, 18, 3, 2], 6, 40000, 80))
            .rule,
        Some(1)
    );
    assert_eq!(
        set.classify_v4(&key4([198, 18, 3, 2], [198, 18, 2, 2], 6, 40000, 80))
            .rule,
        Some(2)
    );
    assert_eq!(
        set.classify_v4(&key4([198, 18, 1, 2], [198, 18, 3, 2], 6, 40000, 80))
            .rule,
        Some(3)
    );
}

#[test]
fn ingress_restricts_by_interface() {
    let spec = RuleSetSpec {
        rules: vec![RuleSpec {
            ingress: vec!["p1".into()],
            ..RuleSpec::new("from-p1", Action::Drop)
        }],
        ..RuleSetSpec::default()
    };
    let set = compile_ok(&spec);
    let mut key = key4([1, 1, 1, 1], [2, 2, 2, 2], 6, 1, 2);
    assert_eq!(set.classify_v4(&key).rule, None);
    key.ingress = 1;
    assert_eq!(set.classify_v4(&key).rule, Some(0));
}

#[test]
fn every_error_names_rule_field_and_reason() {
    let bad = RuleSetSpec {
        segments: vec![
            SegmentSpec {
                name: "a".into(),
                prefixes: vec![net("198.18.0.1/24")],
                criticality: 11,
            },
            SegmentSpec {
                name: "a".into(),
                prefixes: vec![],
                criticality: 0,
            },
        ],
        rules: vec![
            RuleSpec {
                destination: AddressMatch {
                    segments: vec!["db".into()],
                    ..AddressMatch::default()
                },
                ..RuleSpec::new("r1", Action::Allow)
            },
            RuleSpec::new("r1", Action::Allow),
            RuleSpec {
                protocol: Some(Protocol::Tcp),
                destination_ports: vec![PortRange {
                    first: 90,
                    last: 80,
                }],
                ..RuleSpec::new("r3", Action::Allow)
            },
            RuleSpec {
                destination_ports: vec![PortRange::single(80)],
                ..RuleSpec::new("r4", Action::Allow)
            },
            RuleSpec {
                source: addresses(&["198.18.0.0/15"]),
                destination: addresses(&["2001:2::/48"]),
                ..RuleSpec::new("r5", Action::Allow)
            },
            RuleSpec {
                ingress: vec!["p9".into()],
                ..RuleSpec::new("r6", Action::Allow)
            },
            RuleSpec {
                action: Action::RateLimit(RateLimitSpec {
                    packets_per_second: None,
                    bits_per_second: None,
                    burst_packets: 0,
                    burst_bytes: 0,
                    per_source: false,
                }),
                ..RuleSpec::new("r7", Action::Allow)
            },
            RuleSpec {
                source: AddressMatch {
                    prefixes: vec![net("198.18.0.0/24")],
                    except: vec![net("198.18.0.0/16")],
                    ..AddressMatch::default()
                },
                ..RuleSpec::new("r8", Action::Allow)
            },
            RuleSpec {
                tcp_flags: Some(TcpFlagsMatch { set: 2, clear: 0 }),
                ..RuleSpec::new("r9", Action::Allow)
            },
            RuleSpec {
                source: addresses(&["198.18.0.1/24"]),
                ..RuleSpec::new("", Action::Allow)
            },
        ],
        ..RuleSetSpec::default()
    };
    let found = errors(&bad);
    for expected in [
        "segments[0] (id \"a\"): prefixes[0]: 198.18.0.1/24 has host bits set (did you mean 198.18.0.0/24?)",
        "segments[0] (id \"a\"): criticality: 11 is not in 0..=10",
        "segments[1] (id \"a\"): name: duplicate segment name",
        "rules[0] (id \"r1\"): destination.segments[0]: unknown segment \"db\"",
        "rules[1] (id \"r1\"): id: duplicate id (also rules[0])",
        "rules[2] (id \"r3\"): destination_ports[0]: inverted range 90-80",
        "rules[3] (id \"r4\"): destination_ports: ports need protocol tcp or udp",
        "rules[4] (id \"r5\"): source/destination: source, destination and protocol share no address family: the rule can never match",
        "rules[5] (id \"r6\"): ingress[0]: no interface \"p9\"",
        "rules[6] (id \"r7\"): action.rate_limit: needs packets_per_second or bits_per_second",
        "rules[7] (id \"r8\"): source: the except prefixes leave no address",
        "rules[8] (id \"r9\"): tcp_flags: needs protocol tcp",
        "rules[9]: id: must be 1 to 128 characters",
        "rules[9]: source.prefixes[0]: 198.18.0.1/24 has host bits set (did you mean 198.18.0.0/24?)",
    ] {
        assert!(
            found.iter().any(|e| e == expected),
            "missing {expected:?} in {found:#?}"
        );
    }
}

#[test]
fn limits_are_enforced() {
    let many = RuleSetSpec {
        rules: (0..11)
            .map(|i| RuleSpec::new(format!("r{i}"), Action::Allow))
            .collect(),
        ..RuleSetSpec::default()
    };
    let limits = CompileLimits {
        max_rules: 10,
        ..CompileLimits::default()
    };
    let err = compile(&many, &context(), &limits).expect_err("over the limit");
    assert_eq!(
        err.errors[0].to_string(),
        "rule set: rules: 11 rules (with isolate entries) is over the limit of 10"
    );
    assert!(err.errors[0].over_limit, "told apart from a wrong rule");

    let wide = RuleSetSpec {
        rules: vec![RuleSpec {
            protocol: Some(Protocol::Tcp),
            source_ports: (0..8).map(|p| PortRange::single(p * 2)).collect(),
            destination_ports: (0..8).map(|p| PortRange::single(p * 2)).collect(),
            ..RuleSpec::new("cross", Action::Allow)
        }],
        ..RuleSetSpec::default()
    };
    let limits = CompileLimits {
        max_entries: 100,
        ..CompileLimits::default()
    };
    let err = compile(&wide, &context(), &limits).expect_err("64 x 2 families");
    assert!(
        err.errors[0]
            .reason
            .contains("limit of 100 classifier entries"),
        "{err}"
    );
    assert!(err.errors[0].over_limit);
}

/// A direct reading of the spec, the oracle for the property test: the first matching rule,
/// and whether a rule on TCP flags up to it matches the flow's tuple (so the answer may differ
/// between packets of the flow and must not be cached).
#[expect(
    clippy::too_many_arguments,
    reason = "the fields of a packet, spelled out for the oracle"
)]
fn reference(
    spec: &RuleSetSpec,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    flags: u8,
    ingress: u16,
) -> (Option<usize>, bool) {
    let side = |m: &AddressMatch, a: IpAddr| {
        m.is_any()
            || (m.prefixes.iter().any(|p| p.contains(&a))
                && !m.except.iter().any(|p| p.contains(&a)))
    };
    let ports = |list: &[PortRange], p: u16| {
        list.is_empty() || list.iter().any(|r| r.first <= p && p <= r.last)
    };
    let tuple_matches = |rule: &RuleSpec| {
        side(&rule.source, src)
            && side(&rule.destination, dst)
            && match rule.protocol {
                None => true,
                Some(Protocol::Tcp) => proto == 6,
                Some(Protocol::Udp) => proto == 17,
                Some(Protocol::Number(n)) => proto == n,
                Some(_) => false,
            }
            && ports(&rule.source_ports, sport)
            && ports(&rule.destination_ports, dport)
            && (rule.ingress.is_empty()
                || rule
                    .ingress
                    .iter()
                    .any(|name| interfaces(name) == Some(ingress)))
    };
    let flags_match = |rule: &RuleSpec| {
        rule.tcp_flags
            .is_none_or(|f| flags & (f.set | f.clear) == f.set)
    };
    let first = spec
        .rules
        .iter()
        .position(|rule| tuple_matches(rule) && flags_match(rule));
    // The matching rule itself counts: a rule on flags that matched decided by this packet.
    let limit = first.map_or(spec.rules.len(), |f| f + 1);
    let cacheable = !spec.rules[..limit]
        .iter()
        .any(|rule| rule.tcp_flags.is_some() && tuple_matches(rule));
    (first, cacheable)
}

/// Prefixes of 198.18.0.0/22 from /16 to /28; `except` prefixes are /30 to /32, so they never
/// swallow a whole side and every generated set compiles.
fn arb_prefix(lengths: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = ipnet::IpNet> {
    (0u8..4, any::<u8>(), lengths).prop_map(|(third, fourth, len)| {
        ipnet::IpNet::new(IpAddr::from([198, 18, third, fourth]), len)
            .expect("valid")
            .trunc()
    })
}

fn arb_rule(index: usize) -> impl Strategy<Value = RuleSpec> {
    (
        proptest::collection::vec(arb_prefix(16..=28), 0..3),
        proptest::collection::vec(arb_prefix(16..=28), 0..3),
        proptest::collection::vec(arb_prefix(30..=32), 0..2),
        prop_oneof![
            Just(None),
            Just(Some(Protocol::Tcp)),
            Just(Some(Protocol::Udp))
        ],
        proptest::collection::vec((0u16..100, 0u16..100), 0..3),
        (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                Just(None),
                Just(Some((0x02u8, 0x10u8))),
                Just(Some((0x01, 0)))
            ],
        ),
    )
        .prop_map(
            move |(src, dst, except, protocol, ports, (drop, on_p1, flags))| RuleSpec {
                source: AddressMatch {
                    except: if src.is_empty() { Vec::new() } else { except },
                    prefixes: src,
                    segments: Vec::new(),
                },
                destination: AddressMatch {
                    prefixes: dst,
                    ..AddressMatch::default()
                },
                destination_ports: if protocol.is_some() {
                    ports
                        .iter()
                        .map(|&(a, b)| PortRange {
                            first: a.min(b),
                            last: a.max(b),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                tcp_flags: flags
                    .filter(|_| protocol == Some(Protocol::Tcp))
                    .map(|(set, clear)| TcpFlagsMatch { set, clear }),
                ingress: if on_p1 { vec!["p1".into()] } else { Vec::new() },
                protocol,
                ..RuleSpec::new(
                    format!("r{index}"),
                    if drop { Action::Drop } else { Action::Allow },
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn compiled_sets_agree_with_the_spec(rules in (1usize..12).prop_flat_map(|n| (0..n).map(arb_rule).collect::<Vec<_>>()),
                                         packets in proptest::collection::vec((0u8..4, any::<u8>(), 0u8..4, any::<u8>(), prop_oneof![Just(6u8), Just(17u8), Just(1u8)], 0u16..100, any::<u8>(), 0u16..2), 32)) {
        let spec = RuleSetSpec { rules, ..RuleSetSpec::default() };
        let set = compile(&spec, &context(), &CompileLimits::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (s3, s4, d3, d4, proto, dport, flags, ingress) in packets {
            let (src, dst) = ([198, 18, s3, s4], [198, 18, d3, d4]);
            let (expected, cacheable) = reference(&spec, IpAddr::from(src), IpAddr::from(dst), proto, 7, dport, flags, ingress);
            let mut key = key4(src, dst, proto, 7, dport);
            key.tcp_flags = flags;
            key.ingress = ingress;
            let decision = set.classify_v4(&key);
            prop_assert_eq!(decision.rule.map(|r| r as usize), expected);
            prop_assert_eq!(decision.cacheable, cacheable, "cacheable for {:?}", key);
        }
    }
}

#[test]
fn a_mirror_rule_names_a_known_session() {
    let mirror = |session: &str| RuleSetSpec {
        version: "m".into(),
        rules: vec![RuleSpec::new(
            "watch",
            Action::Mirror {
                session: session.into(),
                then_allow: true,
            },
        )],
        ..RuleSetSpec::default()
    };
    let rules = compile(&mirror("ids"), &context(), &CompileLimits::default()).expect("known");
    assert_eq!(rules.rules[0].mirror_session, Some(0));
    assert!(rules.mirrors);
    let error = compile(&mirror("other"), &context(), &CompileLimits::default())
        .expect_err("unknown session");
    assert_eq!(error.errors.len(), 1, "{error}");
    assert_eq!(error.errors[0].field, "action.mirror.session", "{error}");
    assert!(
        error.to_string().contains("no mirror session \"other\""),
        "{error}"
    );
}
