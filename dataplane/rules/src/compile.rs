//! The compiler: validates a whole [`RuleSetSpec`] (every error names the rule, the field and
//! the reason; an invalid set produces no rule set at all) and builds the classifiers.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Instant;

use ipnet::IpNet;
use vfn_classify::{Address, Classifier, Entry, Limits as ClassifierLimits, Match, Range};

use crate::model::*;
use crate::prefix;
use crate::ruleset::{CompiledRule, RuleSet};

/// Bounds of a rule set; every one configurable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileLimits {
    pub max_rules: usize,
    pub max_segments: usize,
    pub max_prefixes_per_segment: usize,
    /// Prefixes one side of a rule expands to (its prefixes, segments, less `except`).
    pub max_prefixes_per_rule: usize,
    pub max_port_ranges_per_rule: usize,
    /// Classifier entries in all (rules expand into the cross product of their lists).
    pub max_entries: usize,
    pub max_id_len: usize,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_rules: 100_000,
            max_segments: 4_096,
            max_prefixes_per_segment: 65_536,
            max_prefixes_per_rule: 4_096,
            max_port_ranges_per_rule: 64,
            max_entries: 1_000_000,
            max_id_len: 128,
        }
    }
}

/// One reason a rule set is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// Where: `rules[3]`, `isolate[0]`, `segments[2]` or `rule set`.
    pub place: String,
    /// The rule's (or segment's, or isolate entry's) id or name, empty when it has none.
    pub id: String,
    pub field: String,
    pub reason: String,
    /// Refused for a limit (rules, segments, prefixes, ranges, entries), not for being wrong.
    pub over_limit: bool,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.id.is_empty() {
            write!(f, "{}: {}: {}", self.place, self.field, self.reason)
        } else {
            write!(
                f,
                "{} (id {:?}): {}: {}",
                self.place, self.id, self.field, self.reason
            )
        }
    }
}

/// The rule set was refused; nothing changed. Every error found is listed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rule set refused:\n{}", .errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct CompileError {
    pub errors: Vec<RuleError>,
}

/// What the rules may refer to outside themselves.
pub struct Context<'a> {
    /// The logical interface index of an interface name (`PORT` or `PORT.VLAN`).
    pub interface: &'a dyn Fn(&str) -> Option<u16>,
    /// The index of a mirror session by name (`None`: no such session).
    pub mirror_session: &'a dyn Fn(&str) -> Option<u16>,
}

impl Context<'_> {
    /// A context without mirror sessions.
    pub fn without_mirrors<'a>(interface: &'a dyn Fn(&str) -> Option<u16>) -> Context<'a> {
        Context {
            interface,
            mirror_session: &|_| None,
        }
    }
}

/// One rule before expansion, whatever it came from.
struct Flat<'a> {
    place: String,
    id: String,
    source: &'a AddressMatch,
    destination: &'a AddressMatch,
    source_ports: &'a [PortRange],
    destination_ports: &'a [PortRange],
    protocol: Option<Protocol>,
    ingress: &'a [String],
    tcp_flags: Option<TcpFlagsMatch>,
    log: bool,
    action: Action,
}

struct Errors {
    list: Vec<RuleError>,
}

impl Errors {
    fn push(&mut self, place: &str, id: &str, field: impl Into<String>, reason: impl Into<String>) {
        self.list.push(RuleError {
            place: place.into(),
            id: id.into(),
            field: field.into(),
            reason: reason.into(),
            over_limit: false,
        });
    }

    fn push_over_limit(
        &mut self,
        place: &str,
        id: &str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.push(place, id, field, reason);
        if let Some(last) = self.list.last_mut() {
            last.over_limit = true;
        }
    }
}

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;

/// Prefixes `(network, length)` of one family.
type Prefixes = Vec<(u128, u8)>;

/// Address sides of one rule, per family, as (source, destination) prefix lists (`None`: the
/// family is excluded).
struct Sides {
    v4: Option<(Prefixes, Prefixes)>,
    v6: Option<(Prefixes, Prefixes)>,
}

/// Validates `spec` whole and builds its classifiers.
pub fn compile(
    spec: &RuleSetSpec,
    context: &Context<'_>,
    limits: &CompileLimits,
) -> Result<RuleSet, CompileError> {
    let started = Instant::now();
    let mut errors = Errors { list: Vec::new() };
    let segments = check_segments(spec, limits, &mut errors);
    let flat = flatten(spec);
    if flat.len() > limits.max_rules {
        errors.push_over_limit(
            "rule set",
            "",
            "rules",
            format!(
                "{} rules (with isolate entries) is over the limit of {}",
                flat.len(),
                limits.max_rules
            ),
        );
    }
    let mut ids = HashMap::new();
    let mut entries4: Vec<Entry<u32>> = Vec::new();
    let mut entries6: Vec<Entry<u128>> = Vec::new();
    let mut rules = Vec::with_capacity(flat.len());
    for (priority, rule) in flat.iter().enumerate() {
        let before = errors.list.len();
        check_rule(rule, &mut ids, limits, &mut errors);
        let sides = resolve_sides(rule, &segments, limits, &mut errors);
        let ingress = resolve_ingress(rule, context, &mut errors);
        let per_packet = rule.tcp_flags.is_some()
            || matches!(rule.protocol, Some(Protocol::Icmp { icmp_type, code } | Protocol::Icmpv6 { icmp_type, code }) if icmp_type.is_some() || code.is_some());
        if errors.list.len() == before {
            let budget = limits
                .max_entries
                .saturating_sub(entries4.len() + entries6.len());
            let added = expand(
                rule,
                priority as u32,
                &sides,
                &ingress,
                budget,
                &mut entries4,
                &mut entries6,
            );
            if !added {
                errors.push_over_limit(
                    &rule.place,
                    &rule.id,
                    "rule",
                    format!(
                        "expands past the limit of {} classifier entries in all",
                        limits.max_entries
                    ),
                );
            }
        }
        let mirror_session = resolve_mirror_session(rule, context, &mut errors);
        rules.push(CompiledRule {
            id: rule.id.clone(),
            action: rule.action.clone(),
            log: rule.log,
            per_packet,
            mirror_session,
        });
    }
    if !errors.list.is_empty() {
        return Err(CompileError {
            errors: errors.list,
        });
    }
    let classifier_limits = ClassifierLimits {
        max_entries: limits.max_entries,
        ..ClassifierLimits::default()
    };
    let per_packet4: Vec<Entry<u32>> = entries4
        .iter()
        .filter(|e| rules[e.priority as usize].per_packet)
        .map(tuple_only)
        .collect();
    let per_packet6: Vec<Entry<u128>> = entries6
        .iter()
        .filter(|e| rules[e.priority as usize].per_packet)
        .map(tuple_only)
        .collect();
    let v4 = build("IPv4 classifier", &entries4, &classifier_limits)?;
    let v6 = build("IPv6 classifier", &entries6, &classifier_limits)?;
    let per_packet_v4 = build(
        "IPv4 per-packet classifier",
        &per_packet4,
        &classifier_limits,
    )?;
    let per_packet_v6 = build(
        "IPv6 per-packet classifier",
        &per_packet6,
        &classifier_limits,
    )?;
    Ok(RuleSet {
        version: spec.version.clone(),
        default_action: spec.default_action,
        mirrors: rules.iter().any(|rule| rule.mirror_session.is_some()),
        rules,
        v4,
        v6,
        per_packet_v4,
        per_packet_v6,
        build_time: started.elapsed(),
        entry_count: entries4.len() + entries6.len(),
    })
}

fn build<A: Address>(
    what: &str,
    entries: &[Entry<A>],
    limits: &ClassifierLimits,
) -> Result<Classifier<A>, CompileError> {
    Classifier::build(entries, limits).map_err(|e| CompileError {
        errors: vec![RuleError {
            place: "rule set".into(),
            id: String::new(),
            field: what.into(),
            reason: e.to_string(),
            over_limit: matches!(e, vfn_classify::BuildError::TooManyEntries { .. }),
        }],
    })
}

/// The part of an entry that stays the same for all packets of a flow: per-packet fields
/// (TCP flags, ICMP type and code) widened to anything.
fn tuple_only<A: Copy>(entry: &Entry<A>) -> Entry<A> {
    let mut m = entry.m;
    m.tcp_flags = None;
    if matches!(m.proto, Some(ICMP | ICMPV6)) {
        m.sport = Range {
            lo: 0,
            hi: u16::MAX,
        };
        m.dport = Range {
            lo: 0,
            hi: u16::MAX,
        };
    }
    Entry {
        priority: entry.priority,
        m,
    }
}

fn check_segments<'a>(
    spec: &'a RuleSetSpec,
    limits: &CompileLimits,
    errors: &mut Errors,
) -> HashMap<&'a str, &'a SegmentSpec> {
    if spec.segments.len() > limits.max_segments {
        errors.push_over_limit(
            "rule set",
            "",
            "segments",
            format!(
                "{} segments is over the limit of {}",
                spec.segments.len(),
                limits.max_segments
            ),
        );
    }
    let mut by_name = HashMap::new();
    for (index, segment) in spec.segments.iter().enumerate() {
        let place = format!("segments[{index}]");
        if segment.name.is_empty() || segment.name.len() > limits.max_id_len {
            errors.push(
                &place,
                &segment.name,
                "name",
                format!("must be 1 to {} characters", limits.max_id_len),
            );
        }
        if by_name.insert(segment.name.as_str(), segment).is_some() {
            errors.push(&place, &segment.name, "name", "duplicate segment name");
        }
        if segment.prefixes.len() > limits.max_prefixes_per_segment {
            errors.push_over_limit(
                &place,
                &segment.name,
                "prefixes",
                format!(
                    "{} prefixes is over the limit of {}",
                    segment.prefixes.len(),
                    limits.max_prefixes_per_segment
                ),
            );
        }
        if segment.criticality > 10 {
            errors.push(
                &place,
                &segment.name,
                "criticality",
                format!("{} is not in 0..=10", segment.criticality),
            );
        }
        for (i, prefix) in segment.prefixes.iter().enumerate() {
            if prefix.trunc() != *prefix {
                errors.push(
                    &place,
                    &segment.name,
                    format!("prefixes[{i}]"),
                    format!(
                        "{prefix} has host bits set (did you mean {}?)",
                        prefix.trunc()
                    ),
                );
            }
        }
    }
    by_name
}

/// Any address, the other side of an isolate entry's drop rules.
static ANYWHERE: AddressMatch = AddressMatch {
    prefixes: Vec::new(),
    segments: Vec::new(),
    except: Vec::new(),
};

fn flatten(spec: &RuleSetSpec) -> Vec<Flat<'_>> {
    const ANY_PORTS: &[PortRange] = &[];
    let mut flat = Vec::new();
    for (index, isolate) in spec.isolate.iter().enumerate() {
        let place = format!("isolate[{index}]");
        for (flow_index, flow) in isolate.allow.iter().enumerate() {
            let (source, destination) = if flow.from_target {
                (&isolate.target, &flow.peer)
            } else {
                (&flow.peer, &isolate.target)
            };
            flat.push(Flat {
                place: format!("{place}.allow[{flow_index}]"),
                id: format!("{}/allow/{flow_index}", isolate.id),
                source,
                destination,
                source_ports: ANY_PORTS,
                destination_ports: &flow.ports,
                protocol: flow.protocol,
                ingress: &[],
                tcp_flags: None,
                log: isolate.log,
                action: Action::Allow,
            });
        }
        for (suffix, source, destination) in [
            ("drop-from", &isolate.target, &ANYWHERE),
            ("drop-to", &ANYWHERE, &isolate.target),
        ] {
            flat.push(Flat {
                place: place.clone(),
                id: format!("{}/{suffix}", isolate.id),
                source,
                destination,
                source_ports: ANY_PORTS,
                destination_ports: ANY_PORTS,
                protocol: None,
                ingress: &[],
                tcp_flags: None,
                log: isolate.log,
                action: Action::Drop,
            });
        }
    }
    for (index, rule) in spec.rules.iter().enumerate() {
        flat.push(Flat {
            place: format!("rules[{index}]"),
            id: rule.id.clone(),
            source: &rule.source,
            destination: &rule.destination,
            source_ports: &rule.source_ports,
            destination_ports: &rule.destination_ports,
            protocol: rule.protocol,
            ingress: &rule.ingress,
            tcp_flags: rule.tcp_flags,
            log: rule.log,
            action: rule.action.clone(),
        });
    }
    flat
}

fn check_rule(
    rule: &Flat<'_>,
    ids: &mut HashMap<String, String>,
    limits: &CompileLimits,
    errors: &mut Errors,
) {
    let (place, id) = (rule.place.as_str(), rule.id.as_str());
    if id.is_empty() || id.len() > limits.max_id_len {
        errors.push(
            place,
            id,
            "id",
            format!("must be 1 to {} characters", limits.max_id_len),
        );
    } else if let Some(first) = ids.insert(id.to_owned(), place.to_owned()) {
        errors.push(place, id, "id", format!("duplicate id (also {first})"));
    }
    for (field, ranges) in [
        ("source_ports", rule.source_ports),
        ("destination_ports", rule.destination_ports),
    ] {
        if ranges.len() > limits.max_port_ranges_per_rule {
            errors.push_over_limit(
                place,
                id,
                field,
                format!(
                    "{} ranges is over the limit of {}",
                    ranges.len(),
                    limits.max_port_ranges_per_rule
                ),
            );
        }
        for (i, range) in ranges.iter().enumerate() {
            if range.first > range.last {
                errors.push(
                    place,
                    id,
                    format!("{field}[{i}]"),
                    format!("inverted range {}-{}", range.first, range.last),
                );
            }
        }
        if !ranges.is_empty() && !matches!(rule.protocol, Some(Protocol::Tcp | Protocol::Udp)) {
            errors.push(place, id, field, "ports need protocol tcp or udp");
        }
    }
    if rule.tcp_flags.is_some() && rule.protocol != Some(Protocol::Tcp) {
        errors.push(place, id, "tcp_flags", "needs protocol tcp");
    }
    if let Some(flags) = rule.tcp_flags
        && flags.set & flags.clear != 0
    {
        errors.push(
            place,
            id,
            "tcp_flags",
            format!(
                "flags {:#04x} are both required set and clear",
                flags.set & flags.clear
            ),
        );
    }
    if let Action::RateLimit(rate) = &rule.action {
        if rate.packets_per_second.is_none() && rate.bits_per_second.is_none() {
            errors.push(
                place,
                id,
                "action.rate_limit",
                "needs packets_per_second or bits_per_second",
            );
        }
        if rate.packets_per_second == Some(0) || rate.bits_per_second == Some(0) {
            errors.push(
                place,
                id,
                "action.rate_limit",
                "a rate of 0 drops everything: use action drop",
            );
        }
    }
    if let Action::Mirror { session, .. } = &rule.action
        && session.is_empty()
    {
        errors.push(
            place,
            id,
            "action.mirror.session",
            "must name a mirror session",
        );
    }
}

/// Splits `prefixes` by family, `(network, len)` pairs, checking host bits.
fn split_prefixes(
    prefixes: &[IpNet],
    field: &str,
    rule: &Flat<'_>,
    errors: &mut Errors,
) -> (Prefixes, Prefixes) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (i, prefix) in prefixes.iter().enumerate() {
        if prefix.trunc() != *prefix {
            errors.push(
                &rule.place,
                &rule.id,
                format!("{field}[{i}]"),
                format!(
                    "{prefix} has host bits set (did you mean {}?)",
                    prefix.trunc()
                ),
            );
            continue;
        }
        match prefix {
            IpNet::V4(net) => v4.push((u128::from(u32::from(net.network())), net.prefix_len())),
            IpNet::V6(net) => v6.push((u128::from(net.network()), net.prefix_len())),
        }
    }
    (v4, v6)
}

/// One side's prefixes per family: `None` for a family the side excludes entirely.
fn resolve_side(
    side: &AddressMatch,
    field: &str,
    rule: &Flat<'_>,
    segments: &HashMap<&str, &SegmentSpec>,
    limits: &CompileLimits,
    errors: &mut Errors,
) -> (Option<Prefixes>, Option<Prefixes>) {
    let (mut v4, mut v6) =
        split_prefixes(&side.prefixes, &format!("{field}.prefixes"), rule, errors);
    for (i, name) in side.segments.iter().enumerate() {
        match segments.get(name.as_str()) {
            Some(segment) => {
                let (s4, s6) = split_prefixes(
                    &segment.prefixes,
                    &format!("{field}.segments[{i}]"),
                    rule,
                    errors,
                );
                v4.extend(s4);
                v6.extend(s6);
            }
            None => errors.push(
                &rule.place,
                &rule.id,
                format!("{field}.segments[{i}]"),
                format!("unknown segment {name:?}"),
            ),
        }
    }
    let (e4, e6) = split_prefixes(&side.except, &format!("{field}.except"), rule, errors);
    let any = side.is_any();
    let family =
        |included: Vec<(u128, u8)>, except: Vec<(u128, u8)>, bits: u8| -> Option<Vec<(u128, u8)>> {
            let included = if any { vec![(0, 0)] } else { included };
            if included.is_empty() {
                return None;
            }
            let ranges = prefix::subtract(
                &prefix::union(&included, bits),
                &prefix::union(&except, bits),
            );
            Some(
                ranges
                    .iter()
                    .flat_map(|&(lo, hi)| prefix::to_prefixes(lo, hi, bits))
                    .collect(),
            )
        };
    let (v4, v6) = (family(v4, e4, 32), family(v6, e6, 128));
    let count = v4.as_ref().map_or(0, Vec::len) + v6.as_ref().map_or(0, Vec::len);
    if count > limits.max_prefixes_per_rule {
        errors.push_over_limit(
            &rule.place,
            &rule.id,
            field,
            format!(
                "expands to {count} prefixes, over the limit of {}",
                limits.max_prefixes_per_rule
            ),
        );
    }
    if count == 0 && (v4.is_some() || v6.is_some()) {
        errors.push(
            &rule.place,
            &rule.id,
            field,
            "the except prefixes leave no address",
        );
    }
    (v4, v6)
}

fn resolve_sides(
    rule: &Flat<'_>,
    segments: &HashMap<&str, &SegmentSpec>,
    limits: &CompileLimits,
    errors: &mut Errors,
) -> Sides {
    let (s4, s6) = resolve_side(rule.source, "source", rule, segments, limits, errors);
    let (d4, d6) = resolve_side(
        rule.destination,
        "destination",
        rule,
        segments,
        limits,
        errors,
    );
    let (allow4, allow6) = match rule.protocol {
        Some(Protocol::Icmp { .. }) => (true, false),
        Some(Protocol::Icmpv6 { .. }) => (false, true),
        _ => (true, true),
    };
    let v4 = s4.zip(d4).filter(|_| allow4);
    let v6 = s6.zip(d6).filter(|_| allow6);
    if v4.is_none() && v6.is_none() {
        errors.push(
            &rule.place,
            &rule.id,
            "source/destination",
            "source, destination and protocol share no address family: the rule can never match",
        );
    }
    Sides { v4, v6 }
}

/// The session a mirror rule copies to; an unknown name is an error.
fn resolve_mirror_session(
    rule: &Flat<'_>,
    context: &Context<'_>,
    errors: &mut Errors,
) -> Option<u16> {
    let Action::Mirror { session, .. } = &rule.action else {
        return None;
    };
    if session.is_empty() {
        // Reported by check_rule.
        return None;
    }
    let index = (context.mirror_session)(session);
    if index.is_none() {
        errors.push(
            &rule.place,
            &rule.id,
            "action.mirror.session",
            format!("no mirror session {session:?}"),
        );
    }
    index
}

fn resolve_ingress(
    rule: &Flat<'_>,
    context: &Context<'_>,
    errors: &mut Errors,
) -> Vec<Option<u16>> {
    if rule.ingress.is_empty() {
        return vec![None];
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(rule.ingress.len());
    for (i, name) in rule.ingress.iter().enumerate() {
        match (context.interface)(name) {
            Some(index) if seen.insert(index) => out.push(Some(index)),
            Some(_) => {}
            None => errors.push(
                &rule.place,
                &rule.id,
                format!("ingress[{i}]"),
                format!("no interface {name:?}"),
            ),
        }
    }
    out
}

fn protocol_fields(
    protocol: Option<Protocol>,
) -> (Option<u8>, Option<Range<u16>>, Option<Range<u16>>) {
    let exact_or_any = |value: Option<u8>| match value {
        Some(v) => Range {
            lo: u16::from(v),
            hi: u16::from(v),
        },
        None => Range {
            lo: 0,
            hi: u16::MAX,
        },
    };
    match protocol {
        None => (None, None, None),
        Some(Protocol::Tcp) => (Some(TCP), None, None),
        Some(Protocol::Udp) => (Some(UDP), None, None),
        Some(Protocol::Number(n)) => (Some(n), None, None),
        // ICMP type and code are classified in the port fields.
        Some(Protocol::Icmp { icmp_type, code }) => (
            Some(ICMP),
            Some(exact_or_any(icmp_type)),
            Some(exact_or_any(code)),
        ),
        Some(Protocol::Icmpv6 { icmp_type, code }) => (
            Some(ICMPV6),
            Some(exact_or_any(icmp_type)),
            Some(exact_or_any(code)),
        ),
    }
}

/// Adds the cross product of the rule's lists as classifier entries; `false` when that would
/// pass `budget` entries (nothing is added then).
fn expand(
    rule: &Flat<'_>,
    priority: u32,
    sides: &Sides,
    ingress: &[Option<u16>],
    budget: usize,
    entries4: &mut Vec<Entry<u32>>,
    entries6: &mut Vec<Entry<u128>>,
) -> bool {
    let (proto, icmp_type, icmp_code) = protocol_fields(rule.protocol);
    let ports = |list: &[PortRange], icmp: Option<Range<u16>>| -> Vec<Range<u16>> {
        match icmp {
            Some(range) => vec![range],
            None if list.is_empty() => vec![Range {
                lo: 0,
                hi: u16::MAX,
            }],
            None => list
                .iter()
                .map(|r| Range {
                    lo: r.first,
                    hi: r.last,
                })
                .collect(),
        }
    };
    let sports = ports(rule.source_ports, icmp_type);
    let dports = ports(rule.destination_ports, icmp_code);
    let tcp_flags = rule.tcp_flags.map(|f| (f.set, f.set | f.clear));
    let per_pair = sports.len() * dports.len() * ingress.len();
    let count = |side: &Option<(Prefixes, Prefixes)>| {
        side.as_ref()
            .map_or(0, |(s, d)| s.len() * d.len() * per_pair)
    };
    if count(&sides.v4) + count(&sides.v6) > budget {
        return false;
    }
    let range = |(network, len): (u128, u8), bits: u8| prefix::prefix_range(network, len, bits);
    if let Some((sources, destinations)) = &sides.v4 {
        for &s in sources {
            for &d in destinations {
                let ((slo, shi), (dlo, dhi)) = (range(s, 32), range(d, 32));
                for sport in &sports {
                    for dport in &dports {
                        for &port in ingress {
                            entries4.push(Entry {
                                priority,
                                m: Match {
                                    src: Range {
                                        lo: slo as u32,
                                        hi: shi as u32,
                                    },
                                    dst: Range {
                                        lo: dlo as u32,
                                        hi: dhi as u32,
                                    },
                                    sport: *sport,
                                    dport: *dport,
                                    proto,
                                    ingress: port,
                                    tcp_flags,
                                },
                            });
                        }
                    }
                }
            }
        }
    }
    if let Some((sources, destinations)) = &sides.v6 {
        for &s in sources {
            for &d in destinations {
                let ((slo, shi), (dlo, dhi)) = (range(s, 128), range(d, 128));
                for sport in &sports {
                    for dport in &dports {
                        for &port in ingress {
                            entries6.push(Entry {
                                priority,
                                m: Match {
                                    src: Range { lo: slo, hi: shi },
                                    dst: Range { lo: dlo, hi: dhi },
                                    sport: *sport,
                                    dport: *dport,
                                    proto,
                                    ingress: port,
                                    tcp_flags,
                                },
                            });
                        }
                    }
                }
            }
        }
    }
    true
}
