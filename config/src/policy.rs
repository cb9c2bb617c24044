//! The `[policy]` section (or a policy file of the same shape): the segmentation rule set as TOML,
//! mapped onto `vfn_rules::model`. Syntax and value formats are checked here, each error naming
//! its key by path; rule semantics (unknown segments, duplicate ids, families, limits) are the rule
//! compiler's, which names the rule the same way.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vfn_rules::model::{
    Action, AddressMatch, DefaultAction, IsolateSpec, ManagementFlow, PortRange, Protocol,
    RateLimitSpec, RuleSetSpec, RuleSpec, SegmentSpec, TcpFlagsMatch,
};

use crate::error::{ConfigError, FieldError};

/// Where the rule set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// Written in the config file's `[policy]` section.
    Inline(RuleSetSpec),
    /// In a file of its own (`[policy] file = "..."`), read at start and on SIGHUP; a relative
    /// path is relative to the config file.
    File(PathBuf),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<RawSegment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolate: Vec<RawIsolate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSegment {
    pub name: String,
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub criticality: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawAddresses {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// A port or a range `"first-last"`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPort {
    Number(i64),
    Range(String),
}

/// `"tcp"`, `"udp"`, `"icmp"`, `"icmpv6"` or a protocol number.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawProtocol {
    Number(i64),
    Name(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub id: String,
    #[serde(default)]
    pub source: RawAddresses,
    #[serde(default)]
    pub destination: RawAddresses,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<RawProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ports: Vec<RawPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<RawPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    #[serde(default)]
    pub log: bool,
    pub action: RawAction,
}

/// `"allow"`, `"drop"`, `"reject"`, `{ rate_limit = {...} }` or `{ mirror = {...} }`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawAction {
    Name(String),
    Table(RawActionTable),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawActionTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RawRateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<RawMirror>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_per_second: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits_per_second: Option<i64>,
    /// Packets allowed in a burst (default: one second's worth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_packets: Option<i64>,
    /// Bytes allowed in a burst (default: one second's worth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<i64>,
    /// `"rule"` (one budget for the rule) or `"source"` (one per source address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMirror {
    pub session: String,
    /// `"allow"` or `"drop"` after copying.
    #[serde(default = "allow")]
    pub then: String,
}

fn allow() -> String {
    "allow".into()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIsolate {
    pub id: String,
    pub target: RawAddresses,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<RawManagementFlow>,
    #[serde(default)]
    pub log: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManagementFlow {
    pub peer: RawAddresses,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<RawProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<RawPort>,
    #[serde(default)]
    pub from_target: bool,
}

/// Collects problems with their paths.
struct Problems<'a> {
    list: &'a mut Vec<FieldError>,
}

impl Problems<'_> {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.list.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

/// The policy section at `path` (e.g. `policy`) of a config, or of a policy file (`path` empty).
pub(crate) fn parse(
    raw: &RawPolicy,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<PolicySource> {
    let mut problems = Problems { list: errors };
    let at = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    if let Some(file) = &raw.file {
        let inline = raw.version.is_some()
            || raw.default.is_some()
            || !raw.segments.is_empty()
            || !raw.isolate.is_empty()
            || !raw.rules.is_empty();
        if inline {
            problems.push(
                at("file"),
                "a policy is either in a file of its own or written here, not both",
            );
        }
        return Some(PolicySource::File(PathBuf::from(file)));
    }
    Some(PolicySource::Inline(spec(raw, &at, &mut problems)))
}

fn spec(raw: &RawPolicy, at: &dyn Fn(&str) -> String, problems: &mut Problems<'_>) -> RuleSetSpec {
    let default_action = match raw.default.as_deref() {
        None | Some("deny") => DefaultAction::Deny,
        Some("allow") => DefaultAction::Allow,
        Some(other) => {
            problems.push(
                at("default"),
                format!("{other:?} is neither \"allow\" nor \"deny\""),
            );
            DefaultAction::Deny
        }
    };
    let segments = raw
        .segments
        .iter()
        .enumerate()
        .map(|(i, segment)| {
            let path = at(&format!("segments[{i}]"));
            SegmentSpec {
                name: segment.name.clone(),
                prefixes: prefixes(&segment.prefixes, &format!("{path}.prefixes"), problems),
                criticality: u8::try_from(segment.criticality).unwrap_or_else(|_| {
                    problems.push(
                        format!("{path}.criticality"),
                        format!("{} is out of range 0..=10", segment.criticality),
                    );
                    0
                }),
            }
        })
        .collect();
    let isolate = raw
        .isolate
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let path = at(&format!("isolate[{i}]"));
            IsolateSpec {
                id: entry.id.clone(),
                target: addresses(&entry.target, &format!("{path}.target"), problems),
                allow: entry
                    .allow
                    .iter()
                    .enumerate()
                    .map(|(j, flow)| {
                        let flow_path = format!("{path}.allow[{j}]");
                        ManagementFlow {
                            peer: addresses(&flow.peer, &format!("{flow_path}.peer"), problems),
                            protocol: flow
                                .protocol
                                .as_ref()
                                .and_then(|p| protocol(p, None, None, &flow_path, problems)),
                            ports: ports(&flow.ports, &format!("{flow_path}.ports"), problems),
                            from_target: flow.from_target,
                        }
                    })
                    .collect(),
                log: entry.log,
            }
        })
        .collect();
    let rules = raw
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| rule_spec(rule, &at(&format!("rules[{i}]")), problems))
        .collect();
    RuleSetSpec {
        version: raw.version.clone().unwrap_or_default(),
        default_action,
        segments,
        isolate,
        rules,
    }
}

fn rule_spec(raw: &RawRule, path: &str, problems: &mut Problems<'_>) -> RuleSpec {
    let icmp_type = raw
        .icmp_type
        .and_then(|v| byte(v, &format!("{path}.icmp_type"), problems));
    let icmp_code = raw
        .icmp_code
        .and_then(|v| byte(v, &format!("{path}.icmp_code"), problems));
    let protocol = raw
        .protocol
        .as_ref()
        .and_then(|p| protocol(p, icmp_type, icmp_code, path, problems));
    if (icmp_type.is_some() || icmp_code.is_some())
        && !matches!(
            protocol,
            Some(Protocol::Icmp { .. } | Protocol::Icmpv6 { .. })
        )
    {
        problems.push(
            format!("{path}.icmp_type"),
            "icmp_type and icmp_code need protocol \"icmp\" or \"icmpv6\"",
        );
    }
    RuleSpec {
        id: raw.id.clone(),
        source: addresses(&raw.source, &format!("{path}.source"), problems),
        destination: addresses(&raw.destination, &format!("{path}.destination"), problems),
        source_ports: ports(&raw.source_ports, &format!("{path}.source_ports"), problems),
        destination_ports: ports(
            &raw.destination_ports,
            &format!("{path}.destination_ports"),
            problems,
        ),
        protocol,
        ingress: raw.ingress.clone(),
        tcp_flags: raw
            .tcp_flags
            .as_deref()
            .and_then(|text| match tcp_flags(text) {
                Ok(flags) => Some(flags),
                Err(reason) => {
                    problems.push(format!("{path}.tcp_flags"), reason);
                    None
                }
            }),
        log: raw.log,
        action: action(&raw.action, &format!("{path}.action"), problems),
    }
}

fn byte(value: i64, path: &str, problems: &mut Problems<'_>) -> Option<u8> {
    u8::try_from(value)
        .map_err(|_| problems.push(path, format!("{value} is out of range 0..=255")))
        .ok()
}

/// A prefix `a.b.c.d/len` or a bare address (a host); the error is the reason, for a message
/// that names the field.
pub fn parse_prefix(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or prefix"))
}

fn prefixes(texts: &[String], path: &str, problems: &mut Problems<'_>) -> Vec<IpNet> {
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            parse_prefix(text)
                .map_err(|reason| problems.push(format!("{path}[{i}]"), reason))
                .ok()
        })
        .collect()
}

fn addresses(raw: &RawAddresses, path: &str, problems: &mut Problems<'_>) -> AddressMatch {
    AddressMatch {
        prefixes: prefixes(&raw.prefixes, &format!("{path}.prefixes"), problems),
        segments: raw.segments.clone(),
        except: prefixes(&raw.except, &format!("{path}.except"), problems),
    }
}

fn port_range(raw: &RawPort) -> Result<PortRange, String> {
    let port =
        |value: i64| u16::try_from(value).map_err(|_| format!("{value} is not a port (0..=65535)"));
    match raw {
        RawPort::Number(value) => Ok(PortRange::single(port(*value)?)),
        RawPort::Range(text) => {
            let parse = |part: &str| {
                part.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{text:?} is not a port or a range \"first-last\""))
                    .and_then(port)
            };
            match text.split_once('-') {
                Some((first, last)) => Ok(PortRange {
                    first: parse(first)?,
                    last: parse(last)?,
                }),
                None => Ok(PortRange::single(parse(text)?)),
            }
        }
    }
}

fn ports(raw: &[RawPort], path: &str, problems: &mut Problems<'_>) -> Vec<PortRange> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, port)| {
            port_range(port)
                .map_err(|reason| problems.push(format!("{path}[{i}]"), reason))
                .ok()
        })
        .collect()
}

fn protocol(
    raw: &RawProtocol,
    icmp_type: Option<u8>,
    code: Option<u8>,
    path: &str,
    problems: &mut Problems<'_>,
) -> Option<Protocol> {
    let path = format!("{path}.protocol");
    match raw {
        RawProtocol::Name(name) => match name.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp { icmp_type, code }),
            "icmpv6" => Some(Protocol::Icmpv6 { icmp_type, code }),
            other => {
                problems.push(
                    path,
                    format!("{other:?} is not tcp, udp, icmp, icmpv6 or a protocol number"),
                );
                None
            }
        },
        RawProtocol::Number(n) => match u8::try_from(*n) {
            Ok(6) => Some(Protocol::Tcp),
            Ok(17) => Some(Protocol::Udp),
            Ok(1) => Some(Protocol::Icmp { icmp_type, code }),
            Ok(58) => Some(Protocol::Icmpv6 { icmp_type, code }),
            Ok(number) => Some(Protocol::Number(number)),
            Err(_) => {
                problems.push(path, format!("{n} is out of range 0..=255"));
                None
            }
        },
    }
}

const TCP_FLAG_NAMES: [(&str, u8); 8] = [
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ece", 0x40),
    ("cwr", 0x80),
];

/// `"syn,!ack"`: flags that must be set, `!` before those that must be clear.
pub(crate) fn tcp_flags(text: &str) -> Result<TcpFlagsMatch, String> {
    let mut flags = TcpFlagsMatch { set: 0, clear: 0 };
    for item in text.split(',').map(str::trim) {
        let (clear, name) = match item.strip_prefix('!') {
            Some(name) => (true, name),
            None => (false, item),
        };
        let bit = TCP_FLAG_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, bit)| bit)
            .ok_or_else(|| format!("{item:?} is not a TCP flag (fin, syn, rst, psh, ack, urg, ece, cwr, each optionally after !)"))?;
        if clear {
            flags.clear |= bit
        } else {
            flags.set |= bit
        }
    }
    Ok(flags)
}

fn tcp_flags_text(flags: TcpFlagsMatch) -> String {
    TCP_FLAG_NAMES
        .iter()
        .filter_map(|&(name, bit)| {
            if flags.set & bit != 0 {
                Some(name.to_owned())
            } else if flags.clear & bit != 0 {
                Some(format!("!{name}"))
            } else {
                None
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn action(raw: &RawAction, path: &str, problems: &mut Problems<'_>) -> Action {
    match raw {
        RawAction::Name(name) => match name.as_str() {
            "allow" => Action::Allow,
            "drop" => Action::Drop,
            "reject" => Action::Reject,
            other => {
                problems.push(path, format!("{other:?} is not allow, drop, reject, {{ rate_limit = ... }} or {{ mirror = ... }}"));
                Action::Drop
            }
        },
        RawAction::Table(table) => match (&table.rate_limit, &table.mirror) {
            (Some(rate), None) => {
                let number = |value: Option<i64>, key: &str, problems: &mut Problems<'_>| {
                    value.and_then(|v| {
                        u64::try_from(v)
                            .map_err(|_| {
                                problems.push(
                                    format!("{path}.rate_limit.{key}"),
                                    format!("{v} is negative"),
                                )
                            })
                            .ok()
                    })
                };
                let packets_per_second =
                    number(rate.packets_per_second, "packets_per_second", problems);
                let bits_per_second = number(rate.bits_per_second, "bits_per_second", problems);
                let per_source = match rate.per.as_deref() {
                    None | Some("rule") => false,
                    Some("source") => true,
                    Some(other) => {
                        problems.push(
                            format!("{path}.rate_limit.per"),
                            format!("{other:?} is neither \"rule\" nor \"source\""),
                        );
                        false
                    }
                };
                Action::RateLimit(rate_limit_spec(
                    packets_per_second,
                    bits_per_second,
                    number(rate.burst_packets, "burst_packets", problems),
                    number(rate.burst_bytes, "burst_bytes", problems),
                    per_source,
                ))
            }
            (None, Some(mirror)) => Action::Mirror {
                session: mirror.session.clone(),
                then_allow: match mirror.then.as_str() {
                    "allow" => true,
                    "drop" => false,
                    other => {
                        problems.push(
                            format!("{path}.mirror.then"),
                            format!("{other:?} is neither \"allow\" nor \"drop\""),
                        );
                        true
                    }
                },
            },
            _ => {
                problems.push(path, "exactly one of rate_limit and mirror");
                Action::Drop
            }
        },
    }
}

/// A rate limit whose bursts, when not given, are one second's worth of its rates.
pub fn rate_limit_spec(
    packets_per_second: Option<u64>,
    bits_per_second: Option<u64>,
    burst_packets: Option<u64>,
    burst_bytes: Option<u64>,
    per_source: bool,
) -> RateLimitSpec {
    RateLimitSpec {
        packets_per_second,
        bits_per_second,
        burst_packets: burst_packets.or(packets_per_second).unwrap_or(0),
        burst_bytes: burst_bytes.or(bits_per_second.map(|b| b / 8)).unwrap_or(0),
        per_source,
    }
}

/// Reads a policy file (the `[policy]` keys at its top level).
pub fn load_policy_file(path: &Path) -> Result<RuleSetSpec, ConfigError> {
    let text = crate::read_bounded(path)?;
    let raw: RawPolicy = toml::from_str(&text)?;
    let mut errors = Vec::new();
    if raw.file.is_some() {
        errors.push(FieldError {
            path: "file".into(),
            reason: "a policy file cannot name another policy file".into(),
        });
    }
    let mut problems = Problems { list: &mut errors };
    let spec = spec(&raw, &|key: &str| key.to_owned(), &mut problems);
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

/// A rule set as a policy file (the `[policy]` keys at the top level): `load_policy_file` reads
/// it back to an equal rule set.
pub fn policy_to_toml(spec: &RuleSetSpec) -> String {
    toml::to_string(&to_raw(&PolicySource::Inline(spec.clone())))
        .expect("the file-shaped structs use only types TOML can represent")
}

/// The file shape of a policy (for writing configs back out).
pub(crate) fn to_raw(source: &PolicySource) -> RawPolicy {
    match source {
        PolicySource::File(path) => RawPolicy {
            file: Some(path.display().to_string()),
            ..RawPolicy::default()
        },
        PolicySource::Inline(spec) => RawPolicy {
            file: None,
            version: Some(spec.version.clone()),
            default: Some(match spec.default_action {
                DefaultAction::Allow => "allow".into(),
                DefaultAction::Deny => "deny".into(),
            }),
            segments: spec
                .segments
                .iter()
                .map(|s| RawSegment {
                    name: s.name.clone(),
                    prefixes: s.prefixes.iter().map(ToString::to_string).collect(),
                    criticality: s.criticality.into(),
                })
                .collect(),
            isolate: spec
                .isolate
                .iter()
                .map(|entry| RawIsolate {
                    id: entry.id.clone(),
                    target: raw_addresses(&entry.target),
                    allow: entry
                        .allow
                        .iter()
                        .map(|flow| RawManagementFlow {
                            peer: raw_addresses(&flow.peer),
                            protocol: flow.protocol.map(raw_protocol),
                            ports: raw_ports(&flow.ports),
                            from_target: flow.from_target,
                        })
                        .collect(),
                    log: entry.log,
                })
                .collect(),
            rules: spec.rules.iter().map(raw_rule).collect(),
        },
    }
}

fn raw_addresses(addresses: &AddressMatch) -> RawAddresses {
    let texts = |list: &[IpNet]| list.iter().map(ToString::to_string).collect();
    RawAddresses {
        prefixes: texts(&addresses.prefixes),
        segments: addresses.segments.clone(),
        except: texts(&addresses.except),
    }
}

fn raw_ports(ports: &[PortRange]) -> Vec<RawPort> {
    ports
        .iter()
        .map(|r| {
            if r.first == r.last {
                RawPort::Number(r.first.into())
            } else {
                RawPort::Range(format!("{}-{}", r.first, r.last))
            }
        })
        .collect()
}

fn raw_protocol(protocol: Protocol) -> RawProtocol {
    RawProtocol::Name(
        match protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp { .. } => "icmp",
            Protocol::Icmpv6 { .. } => "icmpv6",
            Protocol::Number(n) => return RawProtocol::Number(n.into()),
        }
        .into(),
    )
}

fn raw_rule(rule: &RuleSpec) -> RawRule {
    let (icmp_type, icmp_code) = match rule.protocol {
        Some(Protocol::Icmp { icmp_type, code } | Protocol::Icmpv6 { icmp_type, code }) => {
            (icmp_type, code)
        }
        _ => (None, None),
    };
    RawRule {
        id: rule.id.clone(),
        source: raw_addresses(&rule.source),
        destination: raw_addresses(&rule.destination),
        protocol: rule.protocol.map(raw_protocol),
        icmp_type: icmp_type.map(i64::from),
        icmp_code: icmp_code.map(i64::from),
        source_ports: raw_ports(&rule.source_ports),
        destination_ports: raw_ports(&rule.destination_ports),
        ingress: rule.ingress.clone(),
        tcp_flags: rule.tcp_flags.map(tcp_flags_text),
        log: rule.log,
        action: match &rule.action {
            Action::Allow => RawAction::Name("allow".into()),
            Action::Drop => RawAction::Name("drop".into()),
            Action::Reject => RawAction::Name("reject".into()),
            Action::RateLimit(rate) => RawAction::Table(RawActionTable {
                rate_limit: Some(RawRateLimit {
                    packets_per_second: rate.packets_per_second.map(|v| v as i64),
                    bits_per_second: rate.bits_per_second.map(|v| v as i64),
                    burst_packets: Some(rate.burst_packets as i64),
                    burst_bytes: Some(rate.burst_bytes as i64),
                    per: Some(if rate.per_source { "source" } else { "rule" }.into()),
                }),
                mirror: None,
            }),
            Action::Mirror {
                session,
                then_allow,
            } => RawAction::Table(RawActionTable {
                rate_limit: None,
                mirror: Some(RawMirror {
                    session: session.clone(),
                    then: if *then_allow { "allow" } else { "drop" }.into(),
                }),
            }),
        },
    }
}
