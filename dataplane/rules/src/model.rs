//! The rule model: what the config file and, later, the API carry. Plain data; the compiler
//! ([`crate::compile()`]) validates it whole and turns it into classifiers.

use ipnet::IpNet;

/// A versioned rule set. Rules are ordered: the first match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSetSpec {
    pub version: String,
    /// What a packet no rule matches gets: `Deny` for allow-lists, `Allow` for block-lists.
    pub default_action: DefaultAction,
    pub segments: Vec<SegmentSpec>,
    /// Isolated hosts or segments, compiled into rules placed before `rules`.
    pub isolate: Vec<IsolateSpec>,
    pub rules: Vec<RuleSpec>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultAction {
    Allow,
    #[default]
    Deny,
}

/// A named set of prefixes: a VM, a subnet, a tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpec {
    pub name: String,
    pub prefixes: Vec<IpNet>,
    /// How much damage reaching this segment does, 0 (none) to 10 (crown jewels); used by scoring.
    pub criticality: u8,
}

/// Addresses a rule matches: any address when both lists are empty; otherwise the union of the
/// prefixes and the named segments' prefixes, less the `except` prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressMatch {
    pub prefixes: Vec<IpNet>,
    pub segments: Vec<String>,
    pub except: Vec<IpNet>,
}

impl AddressMatch {
    pub fn is_any(&self) -> bool {
        self.prefixes.is_empty() && self.segments.is_empty()
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP for IPv4 only; type and code when given.
    Icmp {
        icmp_type: Option<u8>,
        code: Option<u8>,
    },
    /// ICMPv6 for IPv6 only.
    Icmpv6 {
        icmp_type: Option<u8>,
        code: Option<u8>,
    },
    /// Any other IP protocol by number.
    Number(u8),
}

/// TCP flags that must be set and flags that must be clear (bits as in the TCP header:
/// FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlagsMatch {
    pub set: u8,
    pub clear: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Drop,
    /// Drop and tell the sender: TCP RST for TCP, ICMP administratively prohibited otherwise.
    Reject,
    /// Allow within a rate, drop beyond it: packets/s and/or bits/s with a burst, for the whole
    /// rule or per source address.
    RateLimit(RateLimitSpec),
    /// Copy to a mirror session, then allow or drop.
    Mirror {
        session: String,
        then_allow: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSpec {
    pub packets_per_second: Option<u64>,
    pub bits_per_second: Option<u64>,
    /// Packets (for the packet rate) and bytes (for the bit rate) allowed in a burst.
    pub burst_packets: u64,
    pub burst_bytes: u64,
    pub per_source: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// Stable identifier, unique in the set.
    pub id: String,
    pub source: AddressMatch,
    pub destination: AddressMatch,
    /// Empty: any port. Only with TCP or UDP.
    pub source_ports: Vec<PortRange>,
    pub destination_ports: Vec<PortRange>,
    pub protocol: Option<Protocol>,
    /// Interfaces (`PORT` or `PORT.VLAN`) the packet must arrive on; empty: any.
    pub ingress: Vec<String>,
    pub tcp_flags: Option<TcpFlagsMatch>,
    /// Matches become events.
    pub log: bool,
    pub action: Action,
}

impl RuleSpec {
    /// A rule that matches everything and does `action`.
    pub fn new(id: impl Into<String>, action: Action) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            source: AddressMatch::default(),
            destination: AddressMatch::default(),
            source_ports: Vec::new(),
            destination_ports: Vec::new(),
            protocol: None,
            ingress: Vec::new(),
            tcp_flags: None,
            log: false,
            action,
        }
    }
}

/// A host or segment cut off from everything but its management flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsolateSpec {
    pub id: String,
    pub target: AddressMatch,
    pub allow: Vec<ManagementFlow>,
    pub log: bool,
}

/// A flow an isolated target keeps: between the target and `peer`, started by the peer towards
/// the target's `ports` (or by the target when `from_target`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagementFlow {
    pub peer: AddressMatch,
    pub protocol: Option<Protocol>,
    pub ports: Vec<PortRange>,
    pub from_target: bool,
}
