//! Conversions between the control API's messages and the models they carry: rule sets
//! (`vfn_rules::model`) and dynamic actions (`vfn_dataplane::overlay`); the canonical hash of a
//! rule set; and the comparison of two rule sets.
//!
//! Converting a message refuses only what the model cannot represent (an unparsable prefix, a
//! port above 65535, a oneof left unset), naming each problem's field by path the way the rule
//! compiler names its rules: `rules[3] (id web).destination.prefixes[0]`. What the model can
//! hold but a rule set must not (unknown segments, inverted ranges, duplicate ids, a criticality
//! above 10) is the compiler's to refuse, so that the API and the config file share one set of
//! checks.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use prost::Message;
use sha2::{Digest, Sha256};
use vfn_config::{parse_prefix, rate_limit_spec};
use vfn_dataplane::overlay::{DynamicAction, FlowMatch, MirrorPolicy};
use vfn_dataplane::wire::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use vfn_rules::model::{
    Action, AddressMatch, DefaultAction, IsolateSpec, ManagementFlow, PortRange, Protocol,
    RuleSetSpec, RuleSpec, SegmentSpec, TcpFlagsMatch,
};

use crate::proto;
use crate::proto::{action, dynamic_action, protocol};

/// One problem with a request: the field by path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub reason: String,
}

impl FieldViolation {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldViolation {
        FieldViolation {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The rule set a message describes, or every problem that keeps it from being one.
pub fn rule_set_from_proto(message: &proto::RuleSet) -> Result<RuleSetSpec, Vec<FieldViolation>> {
    let mut violations = Violations::default();
    let spec = violations.rule_set(message);
    if violations.list.is_empty() {
        Ok(spec)
    } else {
        Err(violations.list)
    }
}

/// The message of a rule set; [`rule_set_from_proto`] turns it back into an equal spec.
pub fn rule_set_to_proto(spec: &RuleSetSpec) -> proto::RuleSet {
    proto::RuleSet {
        version: spec.version.clone(),
        default_action: match spec.default_action {
            DefaultAction::Deny => proto::DefaultAction::Deny,
            DefaultAction::Allow => proto::DefaultAction::Allow,
        }
        .into(),
        segments: spec.segments.iter().map(segment_to_proto).collect(),
        isolate: spec.isolate.iter().map(isolate_to_proto).collect(),
        rules: spec.rules.iter().map(rule_to_proto).collect(),
    }
}

/// Lowercase hex SHA-256 of the rule set's canonical encoding (the encoded
/// [`rule_set_to_proto`]: prost writes fields in tag order and the messages hold no maps, so
/// equal specs encode to equal bytes).
pub fn rule_set_hash(spec: &RuleSetSpec) -> String {
    sha256_hex(&rule_set_to_proto(spec).encode_to_vec())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What replacing `old` (`None`: no set in force) by `new` changes, comparing rules and isolate
/// entries by id. Rule ids and isolate ids are separate namespaces (the compiler derives the
/// isolate entries' rule ids as `ID/allow/N`, `ID/drop-from`, `ID/drop-to`), so isolate entries
/// are listed as `isolate:ID`. Entries are in priority order (isolate entries first, as
/// compiled); `added` and `changed` follow `new`'s order, `removed` follows `old`'s. An entry of
/// identical content is `moved` when its index among the identical entries differs between the
/// sets, `unchanged` otherwise. Segments, the default action and the version are not compared.
pub fn diff(old: Option<&RuleSetSpec>, new: &RuleSetSpec) -> proto::RuleSetDiff {
    let old_entries = old.map(entries).unwrap_or_default();
    let new_entries = entries(new);
    let old_by_key: HashMap<_, _> = old_entries.iter().map(|e| (e.key(), *e)).collect();
    let new_by_key: HashMap<_, _> = new_entries.iter().map(|e| (e.key(), *e)).collect();

    let mut added = Vec::new();
    let mut changed = Vec::new();
    for entry in &new_entries {
        match old_by_key.get(&entry.key()) {
            None => added.push(entry.key().label()),
            Some(previous) if previous != entry => changed.push(entry.key().label()),
            Some(_) => {}
        }
    }
    let removed = old_entries
        .iter()
        .filter(|e| !new_by_key.contains_key(&e.key()))
        .map(|e| e.key().label())
        .collect();

    let old_identical = identical_keys(&old_entries, &new_by_key);
    let new_identical = identical_keys(&new_entries, &old_by_key);
    // Both lists hold the same keys, so each moved entry leaves exactly one index (its old one)
    // where the lists differ.
    let moved = old_identical
        .iter()
        .zip(&new_identical)
        .filter(|(before, after)| before != after)
        .count();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    proto::RuleSetDiff {
        added,
        removed,
        changed,
        moved: count(moved),
        unchanged: count(old_identical.len() - moved),
    }
}

/// A dynamic entry's action from its message (field `action`). A rate limit's burst of 0 means
/// one second's worth: `packets_per_second` packets.
pub fn dynamic_action_from_proto(
    action: Option<&proto::DynamicAction>,
) -> Result<DynamicAction, FieldViolation> {
    match action.and_then(|a| a.kind.as_ref()) {
        None => Err(FieldViolation::new(
            "action",
            "must be one of quarantine, rate_limit and mirror_session",
        )),
        Some(dynamic_action::Kind::Quarantine(_)) => Ok(DynamicAction::Quarantine),
        Some(dynamic_action::Kind::RateLimit(rate)) if rate.packets_per_second == 0 => {
            Err(FieldViolation::new(
                "action.rate_limit.packets_per_second",
                "a rate of 0 drops everything: use quarantine",
            ))
        }
        Some(dynamic_action::Kind::RateLimit(rate)) => Ok(DynamicAction::RateLimit {
            packets_per_second: rate.packets_per_second,
            burst: if rate.burst == 0 {
                rate.packets_per_second
            } else {
                rate.burst
            },
        }),
        Some(dynamic_action::Kind::MirrorSession(session)) if session.is_empty() => Err(
            FieldViolation::new("action.mirror_session", "must name a mirror session"),
        ),
        Some(dynamic_action::Kind::MirrorSession(session)) => Ok(DynamicAction::Mirror {
            session: session.clone(),
        }),
    }
}

/// The message of a dynamic action; [`dynamic_action_from_proto`] turns it back into an equal one.
/// Prefixes and port ranges a mirror policy may list at most, each.
const MIRROR_POLICY_LIST_MAX: usize = 64;

/// What a mirror policy message matches, its segments' prefixes taken from `segments` (the
/// rule set in force), or every problem with it.
pub fn flow_match_from_proto(
    policy: &proto::MirrorPolicy,
    segments: &[SegmentSpec],
) -> Result<FlowMatch, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut segment_prefixes = |field: &str, names: &[String]| -> Vec<IpNet> {
        names
            .iter()
            .enumerate()
            .flat_map(
                |(i, name)| match segments.iter().find(|segment| segment.name == *name) {
                    Some(segment) => segment.prefixes.clone(),
                    None => {
                        violations.push(FieldViolation::new(
                            format!("{field}[{i}]"),
                            format!("no segment {name:?} in the rule set in force"),
                        ));
                        Vec::new()
                    }
                },
            )
            .collect()
    };
    let source_segments = segment_prefixes("policy.source_segments", &policy.source_segments);
    let destination_segments =
        segment_prefixes("policy.destination_segments", &policy.destination_segments);
    let mut prefixes = |field: &str, list: &[String]| -> Vec<IpNet> {
        if list.len() > MIRROR_POLICY_LIST_MAX {
            violations.push(FieldViolation::new(
                field,
                format!("{} entries, at most {MIRROR_POLICY_LIST_MAX}", list.len()),
            ));
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, text)| match parse_prefix(text) {
                Ok(net) => Some(net),
                Err(reason) => {
                    violations.push(FieldViolation::new(format!("{field}[{i}]"), reason));
                    None
                }
            })
            .collect()
    };
    let mut source = prefixes("policy.source_prefixes", &policy.source_prefixes);
    source.extend(source_segments);
    let mut destination = prefixes("policy.destination_prefixes", &policy.destination_prefixes);
    destination.extend(destination_segments);
    let protocol = match policy.protocol {
        None => None,
        Some(number) => match u8::try_from(number) {
            Ok(number) => Some(number),
            Err(_) => {
                violations.push(FieldViolation::new(
                    "policy.protocol",
                    format!("{number} is not an IP protocol number (0..=255)"),
                ));
                None
            }
        },
    };
    let mut ports = |field: &str, list: &[proto::PortRange]| -> Vec<(u16, u16)> {
        if !list.is_empty() && !matches!(protocol, Some(PROTO_TCP | PROTO_UDP | PROTO_SCTP)) {
            violations.push(FieldViolation::new(
                field,
                "ports need protocol 6 (TCP), 17 (UDP) or 132 (SCTP)",
            ));
        }
        if list.len() > MIRROR_POLICY_LIST_MAX {
            violations.push(FieldViolation::new(
                field,
                format!("{} entries, at most {MIRROR_POLICY_LIST_MAX}", list.len()),
            ));
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, range)| {
                match (u16::try_from(range.first), u16::try_from(range.last)) {
                    (Ok(first), Ok(last)) if first <= last => Some((first, last)),
                    _ => {
                        violations.push(FieldViolation::new(
                            format!("{field}[{i}]"),
                            format!("{}-{} is not a port range", range.first, range.last),
                        ));
                        None
                    }
                }
            })
            .collect()
    };
    let source_ports = ports("policy.source_ports", &policy.source_ports);
    let destination_ports = ports("policy.destination_ports", &policy.destination_ports);
    if policy
        .min_score
        .is_some_and(|score| !(0.0..=1.0).contains(&score))
    {
        violations.push(FieldViolation::new("policy.min_score", "must be in 0..=1"));
    }
    if violations.is_empty() {
        Ok(FlowMatch {
            source,
            destination,
            protocol,
            source_ports,
            destination_ports,
        })
    } else {
        Err(violations)
    }
}

/// A mirror policy as the API lists it.
pub fn mirror_policy_to_proto(policy: &MirrorPolicy) -> proto::MirrorPolicy {
    let ranges = |list: &[(u16, u16)]| {
        list.iter()
            .map(|&(first, last)| proto::PortRange {
                first: first.into(),
                last: last.into(),
            })
            .collect()
    };
    proto::MirrorPolicy {
        id: policy.id,
        session: policy.session.clone(),
        source_prefixes: policy
            .matches
            .source
            .iter()
            .map(ToString::to_string)
            .collect(),
        destination_prefixes: policy
            .matches
            .destination
            .iter()
            .map(ToString::to_string)
            .collect(),
        protocol: policy.matches.protocol.map(u32::from),
        source_ports: ranges(&policy.matches.source_ports),
        destination_ports: ranges(&policy.matches.destination_ports),
        min_score: policy.min_score,
        reason: policy.reason.clone(),
        // Listed as the prefixes they were resolved to.
        source_segments: Vec::new(),
        destination_segments: Vec::new(),
    }
}

pub fn dynamic_action_to_proto(action: &DynamicAction) -> proto::DynamicAction {
    let kind = match action {
        DynamicAction::Quarantine => dynamic_action::Kind::Quarantine(proto::Empty {}),
        DynamicAction::RateLimit {
            packets_per_second,
            burst,
        } => dynamic_action::Kind::RateLimit(proto::DynamicRateLimit {
            packets_per_second: *packets_per_second,
            burst: *burst,
        }),
        DynamicAction::Mirror { session } => dynamic_action::Kind::MirrorSession(session.clone()),
    };
    proto::DynamicAction { kind: Some(kind) }
}

/// Where an entry of a list is, as the compiler names it: `rules[3] (id web)` (`label` "id "),
/// `segments[1] (web)` (`label` ""), or `rules[3]` alone for an entry without an id.
fn place(list: &str, index: usize, label: &str, id: &str) -> String {
    if id.is_empty() {
        format!("{list}[{index}]")
    } else {
        format!("{list}[{index}] ({label}{id})")
    }
}

/// Converts a message while collecting its problems. Where a value cannot be converted, a
/// placeholder stands in for it: the result is discarded whenever a problem was found.
#[derive(Default)]
struct Violations {
    list: Vec<FieldViolation>,
}

impl Violations {
    fn push(&mut self, field: String, reason: impl Into<String>) {
        self.list.push(FieldViolation::new(field, reason));
    }

    fn rule_set(&mut self, message: &proto::RuleSet) -> RuleSetSpec {
        let default_action = match proto::DefaultAction::try_from(message.default_action) {
            Ok(proto::DefaultAction::Deny) => DefaultAction::Deny,
            Ok(proto::DefaultAction::Allow) => DefaultAction::Allow,
            Ok(proto::DefaultAction::Unspecified) | Err(_) => {
                self.push(
                    "default_action".into(),
                    "must be DEFAULT_ACTION_DENY or DEFAULT_ACTION_ALLOW",
                );
                DefaultAction::Deny
            }
        };
        RuleSetSpec {
            version: message.version.clone(),
            default_action,
            segments: (message.segments.iter().enumerate())
                .map(|(index, segment)| {
                    self.segment(segment, &place("segments", index, "", &segment.name))
                })
                .collect(),
            isolate: (message.isolate.iter().enumerate())
                .map(|(index, entry)| {
                    self.isolate(entry, &place("isolate", index, "id ", &entry.id))
                })
                .collect(),
            rules: (message.rules.iter().enumerate())
                .map(|(index, rule)| self.rule(rule, &place("rules", index, "id ", &rule.id)))
                .collect(),
        }
    }

    fn segment(&mut self, message: &proto::Segment, path: &str) -> SegmentSpec {
        SegmentSpec {
            name: message.name.clone(),
            prefixes: self.prefixes(&message.prefixes, &format!("{path}.prefixes")),
            criticality: self.byte(message.criticality, || format!("{path}.criticality")),
        }
    }

    fn isolate(&mut self, message: &proto::Isolate, path: &str) -> IsolateSpec {
        IsolateSpec {
            id: message.id.clone(),
            target: self.addresses(message.target.as_ref(), &format!("{path}.target")),
            allow: (message.allow.iter().enumerate())
                .map(|(index, flow)| self.management_flow(flow, &format!("{path}.allow[{index}]")))
                .collect(),
            log: message.log,
        }
    }

    fn management_flow(&mut self, message: &proto::ManagementFlow, path: &str) -> ManagementFlow {
        ManagementFlow {
            peer: self.addresses(message.peer.as_ref(), &format!("{path}.peer")),
            protocol: self.protocol(message.protocol.as_ref(), &format!("{path}.protocol")),
            ports: self.ports(&message.ports, &format!("{path}.ports")),
            from_target: message.from_target,
        }
    }

    fn rule(&mut self, message: &proto::Rule, path: &str) -> RuleSpec {
        RuleSpec {
            id: message.id.clone(),
            source: self.addresses(message.source.as_ref(), &format!("{path}.source")),
            destination: self
                .addresses(message.destination.as_ref(), &format!("{path}.destination")),
            source_ports: self.ports(&message.source_ports, &format!("{path}.source_ports")),
            destination_ports: self.ports(
                &message.destination_ports,
                &format!("{path}.destination_ports"),
            ),
            protocol: self.protocol(message.protocol.as_ref(), &format!("{path}.protocol")),
            ingress: message.ingress.clone(),
            tcp_flags: message.tcp_flags.map(|flags| TcpFlagsMatch {
                set: self.byte(flags.set, || format!("{path}.tcp_flags.set")),
                clear: self.byte(flags.clear, || format!("{path}.tcp_flags.clear")),
            }),
            log: message.log,
            action: self.action(message.action.as_ref(), &format!("{path}.action")),
        }
    }

    /// Absent addresses are any address, as an empty message is.
    fn addresses(&mut self, message: Option<&proto::Addresses>, path: &str) -> AddressMatch {
        let Some(message) = message else {
            return AddressMatch::default();
        };
        AddressMatch {
            prefixes: self.prefixes(&message.prefixes, &format!("{path}.prefixes")),
            segments: message.segments.clone(),
            except: self.prefixes(&message.except, &format!("{path}.except")),
        }
    }

    fn prefixes(&mut self, texts: &[String], path: &str) -> Vec<IpNet> {
        (texts.iter().enumerate())
            .filter_map(|(index, text)| {
                parse_prefix(text)
                    .map_err(|reason| self.push(format!("{path}[{index}]"), reason))
                    .ok()
            })
            .collect()
    }

    fn ports(&mut self, ranges: &[proto::PortRange], path: &str) -> Vec<PortRange> {
        (ranges.iter().enumerate())
            .map(|(index, range)| PortRange {
                first: self.port(range.first, || format!("{path}[{index}].first")),
                last: self.port(range.last, || format!("{path}[{index}].last")),
            })
            .collect()
    }

    /// Absent: any protocol.
    fn protocol(&mut self, message: Option<&proto::Protocol>, path: &str) -> Option<Protocol> {
        let kind = match message?.kind {
            Some(kind) => kind,
            None => {
                self.push(
                    path.to_owned(),
                    "must be one of tcp, udp, icmp, icmpv6 and number (or absent: any protocol)",
                );
                return None;
            }
        };
        Some(match kind {
            protocol::Kind::Tcp(_) => Protocol::Tcp,
            protocol::Kind::Udp(_) => Protocol::Udp,
            protocol::Kind::Icmp(icmp) => {
                let (icmp_type, code) = self.icmp(icmp, &format!("{path}.icmp"));
                Protocol::Icmp { icmp_type, code }
            }
            protocol::Kind::Icmpv6(icmp) => {
                let (icmp_type, code) = self.icmp(icmp, &format!("{path}.icmpv6"));
                Protocol::Icmpv6 { icmp_type, code }
            }
            // Kept as given, 6 included (not turned into `Tcp` as the config file's names are):
            // the spec must survive the round trip unchanged.
            protocol::Kind::Number(number) => {
                Protocol::Number(self.byte(number, || format!("{path}.number")))
            }
        })
    }

    /// ICMP type and code.
    fn icmp(&mut self, message: proto::Icmp, path: &str) -> (Option<u8>, Option<u8>) {
        (
            message
                .r#type
                .map(|icmp_type| self.byte(icmp_type, || format!("{path}.type"))),
            message
                .code
                .map(|code| self.byte(code, || format!("{path}.code"))),
        )
    }

    fn action(&mut self, message: Option<&proto::Action>, path: &str) -> Action {
        match message.and_then(|m| m.kind.as_ref()) {
            None => {
                self.push(
                    path.to_owned(),
                    "must be one of allow, drop, reject, rate_limit and mirror",
                );
                Action::Drop
            }
            Some(action::Kind::Allow(_)) => Action::Allow,
            Some(action::Kind::Drop(_)) => Action::Drop,
            Some(action::Kind::Reject(_)) => Action::Reject,
            Some(action::Kind::RateLimit(rate)) => Action::RateLimit(rate_limit_spec(
                rate.packets_per_second,
                rate.bits_per_second,
                rate.burst_packets,
                rate.burst_bytes,
                rate.per_source,
            )),
            Some(action::Kind::Mirror(mirror)) => Action::Mirror {
                session: mirror.session.clone(),
                then_allow: !mirror.then_drop,
            },
        }
    }

    fn byte(&mut self, value: u32, path: impl FnOnce() -> String) -> u8 {
        u8::try_from(value).unwrap_or_else(|_| {
            self.push(path(), format!("{value} is out of range 0..=255"));
            0
        })
    }

    fn port(&mut self, value: u32, path: impl FnOnce() -> String) -> u16 {
        u16::try_from(value).unwrap_or_else(|_| {
            self.push(path(), format!("{value} is not a port (0..=65535)"));
            0
        })
    }
}

fn segment_to_proto(segment: &SegmentSpec) -> proto::Segment {
    proto::Segment {
        name: segment.name.clone(),
        prefixes: prefix_texts(&segment.prefixes),
        criticality: segment.criticality.into(),
    }
}

fn isolate_to_proto(entry: &IsolateSpec) -> proto::Isolate {
    proto::Isolate {
        id: entry.id.clone(),
        target: Some(addresses_to_proto(&entry.target)),
        allow: (entry.allow.iter())
            .map(|flow| proto::ManagementFlow {
                peer: Some(addresses_to_proto(&flow.peer)),
                protocol: flow.protocol.map(protocol_to_proto),
                ports: ports_to_proto(&flow.ports),
                from_target: flow.from_target,
            })
            .collect(),
        log: entry.log,
    }
}

fn rule_to_proto(rule: &RuleSpec) -> proto::Rule {
    proto::Rule {
        id: rule.id.clone(),
        source: Some(addresses_to_proto(&rule.source)),
        destination: Some(addresses_to_proto(&rule.destination)),
        source_ports: ports_to_proto(&rule.source_ports),
        destination_ports: ports_to_proto(&rule.destination_ports),
        protocol: rule.protocol.map(protocol_to_proto),
        ingress: rule.ingress.clone(),
        tcp_flags: rule.tcp_flags.map(|flags| proto::TcpFlags {
            set: flags.set.into(),
            clear: flags.clear.into(),
        }),
        log: rule.log,
        action: Some(action_to_proto(&rule.action)),
    }
}

fn prefix_texts(prefixes: &[IpNet]) -> Vec<String> {
    prefixes.iter().map(ToString::to_string).collect()
}

fn addresses_to_proto(addresses: &AddressMatch) -> proto::Addresses {
    proto::Addresses {
        prefixes: prefix_texts(&addresses.prefixes),
        segments: addresses.segments.clone(),
        except: prefix_texts(&addresses.except),
    }
}

fn ports_to_proto(ranges: &[PortRange]) -> Vec<proto::PortRange> {
    (ranges.iter())
        .map(|range| proto::PortRange {
            first: range.first.into(),
            last: range.last.into(),
        })
        .collect()
}

fn protocol_to_proto(protocol: Protocol) -> proto::Protocol {
    let icmp = |icmp_type: Option<u8>, code: Option<u8>| proto::Icmp {
        r#type: icmp_type.map(u32::from),
        code: code.map(u32::from),
    };
    let kind = match protocol {
        Protocol::Tcp => protocol::Kind::Tcp(proto::Empty {}),
        Protocol::Udp => protocol::Kind::Udp(proto::Empty {}),
        Protocol::Icmp { icmp_type, code } => protocol::Kind::Icmp(icmp(icmp_type, code)),
        Protocol::Icmpv6 { icmp_type, code } => protocol::Kind::Icmpv6(icmp(icmp_type, code)),
        Protocol::Number(number) => protocol::Kind::Number(number.into()),
    };
    proto::Protocol { kind: Some(kind) }
}

fn action_to_proto(rule_action: &Action) -> proto::Action {
    let kind = match rule_action {
        Action::Allow => action::Kind::Allow(proto::Empty {}),
        Action::Drop => action::Kind::Drop(proto::Empty {}),
        Action::Reject => action::Kind::Reject(proto::Empty {}),
        Action::RateLimit(rate) => action::Kind::RateLimit(proto::RateLimit {
            packets_per_second: rate.packets_per_second,
            bits_per_second: rate.bits_per_second,
            burst_packets: Some(rate.burst_packets),
            burst_bytes: Some(rate.burst_bytes),
            per_source: rate.per_source,
        }),
        Action::Mirror {
            session,
            then_allow,
        } => action::Kind::Mirror(proto::Mirror {
            session: session.clone(),
            then_drop: !then_allow,
        }),
    };
    proto::Action { kind: Some(kind) }
}

/// How [`diff`] identifies an entry: rule ids and isolate ids are separate namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key<'a> {
    Rule(&'a str),
    Isolate(&'a str),
}

impl Key<'_> {
    fn label(self) -> String {
        match self {
            Key::Rule(id) => id.to_owned(),
            Key::Isolate(id) => format!("isolate:{id}"),
        }
    }
}

/// An entry of a rule set as [`diff`] compares it (equal when the contents are).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry<'a> {
    Rule(&'a RuleSpec),
    Isolate(&'a IsolateSpec),
}

impl<'a> Entry<'a> {
    fn key(&self) -> Key<'a> {
        match *self {
            Entry::Rule(rule) => Key::Rule(&rule.id),
            Entry::Isolate(entry) => Key::Isolate(&entry.id),
        }
    }
}

/// The keys of `entries` whose entry `other` holds with the same content, in `entries`' order.
fn identical_keys<'a>(entries: &[Entry<'a>], other: &HashMap<Key<'_>, Entry<'_>>) -> Vec<Key<'a>> {
    entries
        .iter()
        .filter(|entry| other.get(&entry.key()) == Some(*entry))
        .map(Entry::key)
        .collect()
}

/// The entries of `spec` in priority order, the first of each key only (the compiler refuses
/// duplicate ids; a diff of an uncompiled set still must not count an id twice).
fn entries(spec: &RuleSetSpec) -> Vec<Entry<'_>> {
    let mut seen = HashSet::new();
    (spec.isolate.iter().map(Entry::Isolate))
        .chain(spec.rules.iter().map(Entry::Rule))
        .filter(|entry| seen.insert(entry.key()))
        .collect()
}

#[cfg(test)]
mod tests {
    use vfn_rules::model::RateLimitSpec;

    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test prefixes are valid")
    }

    fn violation(field: &str, reason: &str) -> FieldViolation {
        FieldViolation::new(field, reason)
    }

    /// A spec using every variant of every enum and every optional field, set and unset.
    fn rich_spec() -> RuleSetSpec {
        let web = AddressMatch {
            prefixes: Vec::new(),
            segments: vec!["web".into()],
            except: vec![net("198.18.1.7/32")],
        };
        RuleSetSpec {
            version: "2025-01-01.1".into(),
            default_action: DefaultAction::Allow,
            segments: vec![
                SegmentSpec {
                    name: "web".into(),
                    prefixes: vec![net("198.18.1.0/24"), net("2001:2::/64")],
                    criticality: 4,
                },
                SegmentSpec {
                    name: "db".into(),
                    prefixes: vec![net("198.18.2.0/24")],
                    criticality: 10,
                },
            ],
            isolate: vec![IsolateSpec {
                id: "q".into(),
                target: AddressMatch {
                    prefixes: vec![net("198.18.1.9/32")],
                    ..AddressMatch::default()
                },
                allow: vec![
                    ManagementFlow {
                        peer: AddressMatch {
                            prefixes: vec![net("10.0.0.0/8")],
                            ..AddressMatch::default()
                        },
                        protocol: Some(Protocol::Tcp),
                        ports: vec![PortRange::single(22), PortRange::ANY],
                        from_target: false,
                    },
                    ManagementFlow {
                        peer: AddressMatch::default(),
                        protocol: None,
                        ports: Vec::new(),
                        from_target: true,
                    },
                ],
                log: true,
            }],
            rules: vec![
                RuleSpec {
                    source: web.clone(),
                    destination: AddressMatch {
                        prefixes: vec![net("198.18.2.0/24"), net("2001:3::/48")],
                        segments: vec!["db".into()],
                        except: Vec::new(),
                    },
                    source_ports: vec![PortRange {
                        first: 1024,
                        last: 65535,
                    }],
                    destination_ports: vec![PortRange::single(5432)],
                    protocol: Some(Protocol::Tcp),
                    ingress: vec!["eth0".into(), "eth1.100".into()],
                    tcp_flags: Some(TcpFlagsMatch {
                        set: 0x02,
                        clear: 0x10,
                    }),
                    log: true,
                    ..RuleSpec::new("web-db", Action::Allow)
                },
                RuleSpec {
                    protocol: Some(Protocol::Udp),
                    destination_ports: vec![PortRange::single(53)],
                    ..RuleSpec::new("dns", Action::Reject)
                },
                RuleSpec {
                    protocol: Some(Protocol::Icmp {
                        icmp_type: Some(8),
                        code: Some(0),
                    }),
                    ..RuleSpec::new(
                        "ping",
                        Action::RateLimit(RateLimitSpec {
                            packets_per_second: Some(100),
                            bits_per_second: None,
                            burst_packets: 7,
                            burst_bytes: 0,
                            per_source: true,
                        }),
                    )
                },
                RuleSpec {
                    protocol: Some(Protocol::Icmpv6 {
                        icmp_type: Some(128),
                        code: None,
                    }),
                    ..RuleSpec::new(
                        "ping6",
                        Action::RateLimit(RateLimitSpec {
                            packets_per_second: None,
                            bits_per_second: Some(8_000_000),
                            burst_packets: 0,
                            burst_bytes: 1_000_000,
                            per_source: false,
                        }),
                    )
                },
                RuleSpec {
                    protocol: Some(Protocol::Number(47)),
                    ..RuleSpec::new(
                        "gre",
                        Action::Mirror {
                            session: "tap".into(),
                            then_allow: true,
                        },
                    )
                },
                RuleSpec {
                    source: web,
                    ..RuleSpec::new(
                        "web-out",
                        Action::Mirror {
                            session: "tap".into(),
                            then_allow: false,
                        },
                    )
                },
                RuleSpec::new("rest", Action::Drop),
            ],
        }
    }

    /// A valid message to break one field of.
    fn rule_message(id: &str) -> proto::Rule {
        rule_to_proto(&RuleSpec::new(id, Action::Allow))
    }

    fn message_with_rules(rules: Vec<proto::Rule>) -> proto::RuleSet {
        proto::RuleSet {
            rules,
            ..rule_set_to_proto(&RuleSetSpec::default())
        }
    }

    #[test]
    fn rich_spec_round_trips() {
        let spec = rich_spec();
        assert_eq!(rule_set_from_proto(&rule_set_to_proto(&spec)), Ok(spec));
    }

    #[test]
    fn empty_spec_round_trips() {
        let spec = RuleSetSpec::default();
        assert_eq!(rule_set_from_proto(&rule_set_to_proto(&spec)), Ok(spec));
    }

    #[test]
    fn round_trip_survives_the_wire() {
        let spec = rich_spec();
        let bytes = rule_set_to_proto(&spec).encode_to_vec();
        let decoded = proto::RuleSet::decode(bytes.as_slice()).expect("own encoding decodes");
        assert_eq!(rule_set_from_proto(&decoded), Ok(spec));
    }

    #[test]
    fn absent_messages_take_their_meaning() {
        let message = message_with_rules(vec![proto::Rule {
            source: None,
            destination: None,
            protocol: None,
            tcp_flags: None,
            ..rule_message("any")
        }]);
        let spec = rule_set_from_proto(&message).expect("valid");
        assert_eq!(spec.rules, vec![RuleSpec::new("any", Action::Allow)]);
    }

    #[test]
    fn a_plain_address_is_a_host_prefix() {
        let mut rule = rule_message("host");
        rule.destination = Some(proto::Addresses {
            prefixes: vec!["198.18.1.7".into(), "2001:2::7".into()],
            ..proto::Addresses::default()
        });
        let spec = rule_set_from_proto(&message_with_rules(vec![rule])).expect("valid");
        assert_eq!(
            spec.rules[0].destination.prefixes,
            vec![net("198.18.1.7/32"), net("2001:2::7/128")]
        );
    }

    #[test]
    fn rate_limit_bursts_default_to_one_second() {
        let mut rule = rule_message("slow");
        rule.action = Some(proto::Action {
            kind: Some(action::Kind::RateLimit(proto::RateLimit {
                packets_per_second: Some(50),
                bits_per_second: Some(80_000),
                burst_packets: None,
                burst_bytes: None,
                per_source: false,
            })),
        });
        let spec = rule_set_from_proto(&message_with_rules(vec![rule])).expect("valid");
        assert_eq!(
            spec.rules[0].action,
            Action::RateLimit(RateLimitSpec {
                packets_per_second: Some(50),
                bits_per_second: Some(80_000),
                burst_packets: 50,
                burst_bytes: 10_000,
                per_source: false,
            })
        );
    }

    #[test]
    fn unspecified_and_unknown_default_actions_are_refused() {
        for value in [proto::DefaultAction::Unspecified as i32, 7] {
            let message = proto::RuleSet {
                default_action: value,
                ..proto::RuleSet::default()
            };
            assert_eq!(
                rule_set_from_proto(&message),
                Err(vec![violation(
                    "default_action",
                    "must be DEFAULT_ACTION_DENY or DEFAULT_ACTION_ALLOW"
                )])
            );
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut message = rule_set_to_proto(&rich_spec());
        message.segments[1].criticality = 256;
        message.segments[0].prefixes[1] = "2001:2::/129".into();
        message.isolate[0].allow[0].ports[1].last = 65536;
        message.isolate[0].allow[1].protocol = Some(proto::Protocol { kind: None });
        let web_db = &mut message.rules[0];
        if let Some(destination) = &mut web_db.destination {
            destination.prefixes[0] = "198.18.2.0/x".into();
            destination.except = vec!["nowhere".into()];
        }
        web_db.source_ports[0].first = 70_000;
        web_db.tcp_flags = Some(proto::TcpFlags {
            set: 0x100,
            clear: 0x10,
        });
        message.rules[2].protocol = Some(proto::Protocol {
            kind: Some(protocol::Kind::Icmp(proto::Icmp {
                r#type: Some(300),
                code: Some(256),
            })),
        });
        message.rules[4].protocol = Some(proto::Protocol {
            kind: Some(protocol::Kind::Number(256)),
        });
        message.rules[5].action = None;
        message.rules[6].action = Some(proto::Action { kind: None });
        message.rules[6].id = String::new();

        let fields: Vec<String> = rule_set_from_proto(&message)
            .expect_err("invalid")
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "segments[0] (web).prefixes[1]",
                "segments[1] (db).criticality",
                "isolate[0] (id q).allow[0].ports[1].last",
                "isolate[0] (id q).allow[1].protocol",
                "rules[0] (id web-db).destination.prefixes[0]",
                "rules[0] (id web-db).destination.except[0]",
                "rules[0] (id web-db).source_ports[0].first",
                "rules[0] (id web-db).tcp_flags.set",
                "rules[2] (id ping).protocol.icmp.type",
                "rules[2] (id ping).protocol.icmp.code",
                "rules[4] (id gre).protocol.number",
                "rules[5] (id web-out).action",
                "rules[6].action",
            ]
        );
    }

    #[test]
    fn problems_name_the_value_and_the_range() {
        let mut rule = rule_message("web");
        rule.destination_ports = vec![proto::PortRange {
            first: 80,
            last: 65_536,
        }];
        rule.destination = Some(proto::Addresses {
            prefixes: vec!["web".into()],
            ..proto::Addresses::default()
        });
        assert_eq!(
            rule_set_from_proto(&message_with_rules(vec![rule])),
            Err(vec![
                violation(
                    "rules[0] (id web).destination.prefixes[0]",
                    "\"web\" is not an address or prefix"
                ),
                violation(
                    "rules[0] (id web).destination_ports[0].last",
                    "65536 is not a port (0..=65535)"
                ),
            ])
        );
    }

    #[test]
    fn what_the_model_holds_is_left_to_the_compiler() {
        let mut message = rule_set_to_proto(&rich_spec());
        // Inverted range, criticality over 10, unknown segment, ports without tcp or udp,
        // duplicate id: each the compiler's to refuse.
        message.rules[0].source_ports[0] = proto::PortRange {
            first: 2000,
            last: 1000,
        };
        message.segments[0].criticality = 11;
        message.rules[1].source = Some(proto::Addresses {
            segments: vec!["nowhere".into()],
            ..proto::Addresses::default()
        });
        message.rules[2].destination_ports = vec![proto::PortRange { first: 1, last: 1 }];
        message.rules[3].id = "dns".into();
        assert!(rule_set_from_proto(&message).is_ok());
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let hash = rule_set_hash(&rich_spec());
        assert_eq!(hash.len(), 64);
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
    }

    #[test]
    fn equal_specs_hash_equal() {
        assert_eq!(rule_set_hash(&rich_spec()), rule_set_hash(&rich_spec()));
        let decoded = rule_set_from_proto(&rule_set_to_proto(&rich_spec())).expect("valid");
        assert_eq!(rule_set_hash(&decoded), rule_set_hash(&rich_spec()));
    }

    #[test]
    fn any_change_changes_the_hash() {
        let original = rule_set_hash(&rich_spec());
        let mut port = rich_spec();
        port.rules[1].destination_ports = vec![PortRange::single(54)];
        let mut order = rich_spec();
        order.rules.swap(0, 1);
        let mut version = rich_spec();
        version.version = "2".into();
        for changed in [port, order, version] {
            assert_ne!(rule_set_hash(&changed), original);
        }
    }

    fn labels(list: &[&str]) -> Vec<String> {
        list.iter().map(|&s| s.to_owned()).collect()
    }

    #[test]
    fn diff_from_nothing_adds_everything() {
        assert_eq!(
            diff(None, &rich_spec()),
            proto::RuleSetDiff {
                added: labels(&[
                    "isolate:q",
                    "web-db",
                    "dns",
                    "ping",
                    "ping6",
                    "gre",
                    "web-out",
                    "rest"
                ]),
                ..proto::RuleSetDiff::default()
            }
        );
    }

    #[test]
    fn diff_of_a_set_with_itself_is_unchanged() {
        let mut other_metadata = rich_spec();
        other_metadata.version = "2".into();
        other_metadata.default_action = DefaultAction::Deny;
        other_metadata.segments.pop();
        assert_eq!(
            diff(Some(&rich_spec()), &other_metadata),
            proto::RuleSetDiff {
                unchanged: 8,
                ..proto::RuleSetDiff::default()
            }
        );
    }

    #[test]
    fn diff_sorts_entries_into_added_removed_changed_and_moved() {
        let old = rich_spec();
        let mut new = rich_spec();
        // Old order: web-db dns ping ping6 gre web-out rest.
        new.rules
            .retain(|rule| rule.id != "ping6" && rule.id != "dns");
        new.rules[0].log = false; // web-db changed
        new.isolate[0].log = false; // isolate:q changed
        new.rules
            .insert(0, RuleSpec::new("new-first", Action::Drop));
        new.rules.push(RuleSpec::new("new-last", Action::Allow));
        let gre = new.rules.remove(3);
        new.rules.insert(1, gre);
        // New order: new-first gre web-db ping web-out rest new-last.
        assert_eq!(
            diff(Some(&old), &new),
            proto::RuleSetDiff {
                added: labels(&["new-first", "new-last"]),
                removed: labels(&["dns", "ping6"]),
                changed: labels(&["isolate:q", "web-db"]),
                // Identical entries, old order: ping gre web-out rest; new: gre ping web-out rest.
                moved: 2,
                unchanged: 2,
            }
        );
    }

    #[test]
    fn diff_keeps_isolate_ids_apart_from_rule_ids() {
        let old = rich_spec();
        let mut new = rich_spec();
        new.isolate.clear();
        new.rules.push(RuleSpec::new("q", Action::Drop));
        let result = diff(Some(&old), &new);
        assert_eq!(result.added, labels(&["q"]));
        assert_eq!(result.removed, labels(&["isolate:q"]));
        assert_eq!(result.unchanged, 7);
    }

    #[test]
    fn dynamic_actions_round_trip() {
        for action in [
            DynamicAction::Quarantine,
            DynamicAction::RateLimit {
                packets_per_second: 100,
                burst: 20,
            },
            DynamicAction::Mirror {
                session: "tap".into(),
            },
        ] {
            assert_eq!(
                dynamic_action_from_proto(Some(&dynamic_action_to_proto(&action))),
                Ok(action)
            );
        }
    }

    #[test]
    fn a_dynamic_burst_of_zero_is_one_second() {
        let message = proto::DynamicAction {
            kind: Some(dynamic_action::Kind::RateLimit(proto::DynamicRateLimit {
                packets_per_second: 100,
                burst: 0,
            })),
        };
        assert_eq!(
            dynamic_action_from_proto(Some(&message)),
            Ok(DynamicAction::RateLimit {
                packets_per_second: 100,
                burst: 100
            })
        );
    }

    #[test]
    fn dynamic_actions_without_effect_are_refused() {
        let with_kind = |kind| proto::DynamicAction { kind: Some(kind) };
        let no_kind = proto::DynamicAction { kind: None };
        let zero_rate = with_kind(dynamic_action::Kind::RateLimit(proto::DynamicRateLimit {
            packets_per_second: 0,
            burst: 10,
        }));
        let no_session = with_kind(dynamic_action::Kind::MirrorSession(String::new()));
        let refused_field = |message: Option<&proto::DynamicAction>| {
            dynamic_action_from_proto(message).map_err(|violation| violation.field)
        };
        assert_eq!(refused_field(None), Err("action".to_owned()));
        assert_eq!(refused_field(Some(&no_kind)), Err("action".to_owned()));
        assert_eq!(
            refused_field(Some(&zero_rate)),
            Err("action.rate_limit.packets_per_second".to_owned())
        );
        assert_eq!(
            refused_field(Some(&no_session)),
            Err("action.mirror_session".to_owned())
        );
    }

    #[test]
    fn a_mirror_policy_message_becomes_a_match_or_names_each_bad_field() {
        let policy = proto::MirrorPolicy {
            session: "ids".into(),
            source_prefixes: vec!["198.18.1.0/24".into(), "198.18.9.9".into()],
            protocol: Some(17),
            destination_ports: vec![proto::PortRange {
                first: 7000,
                last: 7099,
            }],
            ..proto::MirrorPolicy::default()
        };
        let segments = [SegmentSpec {
            name: "web".into(),
            prefixes: vec!["198.19.0.0/24".parse().expect("p")],
            criticality: 3,
        }];
        let with_segment = proto::MirrorPolicy {
            destination_segments: vec!["web".into()],
            ..policy.clone()
        };
        let matches = flow_match_from_proto(&with_segment, &segments).expect("valid");
        assert_eq!(matches.destination, segments[0].prefixes);
        assert_eq!(matches.source.len(), 2);
        assert_eq!(matches.destination_ports, vec![(7000, 7099)]);
        let bad = proto::MirrorPolicy {
            source_prefixes: vec!["198.18.1.300/24".into()],
            protocol: None,
            min_score: Some(1.5),
            ..policy
        };
        let bad = proto::MirrorPolicy {
            destination_segments: vec!["db".into()],
            ..bad
        };
        let fields: Vec<String> = flow_match_from_proto(&bad, &segments)
            .expect_err("invalid")
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "policy.destination_segments[0]",
                "policy.source_prefixes[0]",
                "policy.destination_ports",
                "policy.min_score"
            ]
        );
    }
}
