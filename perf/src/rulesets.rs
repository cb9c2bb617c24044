//! ClassBench sets (`../shared/classbench`) for the benchmarks: where a set's files are, and a
//! set as the VFN's rule model. `pipeline`, `lab` and `apply` enforce them; `classbench` reads
//! the same files.

use std::path::{Path, PathBuf};

use vfn_classify::Entry;
use vfn_classify::classbench;
use vfn_rules::{Action, AddressMatch, DefaultAction, PortRange, Protocol, RuleSetSpec, RuleSpec};

/// The files of one ClassBench set.
pub struct SetFiles {
    pub rules: PathBuf,
    pub trace: PathBuf,
}

/// The rule file is `<set>` or `<set>.gen`, the trace `<set>_trace` or `<set>_trace.gen`.
pub fn set_files(dir: &Path, set: &str) -> Result<SetFiles, String> {
    let existing = |name: String| {
        let plain = dir.join(&name);
        let generated = dir.join(format!("{name}.gen"));
        if plain.is_file() {
            Ok(plain)
        } else if generated.is_file() {
            Ok(generated)
        } else {
            Err(format!("{}: neither it nor .gen exists", plain.display()))
        }
    };
    Ok(SetFiles {
        rules: existing(set.to_string())?,
        trace: existing(format!("{set}_trace"))?,
    })
}

pub fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The entries of a set's rule file, in priority order.
pub fn read_entries(files: &SetFiles) -> Result<Vec<Entry<u32>>, String> {
    classbench::parse_rules(&read(&files.rules)?)
        .map_err(|e| format!("{}: {e}", files.rules.display()))
}

/// A flow of the trace: source, destination, protocol (TCP or UDP), source and destination port.
pub type Tuple = ([u8; 4], [u8; 4], u8, u16, u16);

/// ClassBench entries as rules, in their order, the rules of entry `index` doing
/// `action(index)`. An entry with ports but no protocol, which the VFN refuses (ports need TCP
/// or UDP), becomes a UDP rule (id `r<index>-udp`) then a TCP rule (`r<index>`); every other
/// entry becomes one rule, `r<index>`.
pub fn classbench_rules(entries: &[Entry<u32>], action: impl Fn(usize) -> Action) -> Vec<RuleSpec> {
    let prefix = |lo: u32, hi: u32| -> ipnet::IpNet {
        let len = 32 - (u64::from(hi - lo) + 1).trailing_zeros() as u8;
        ipnet::IpNet::new(std::net::IpAddr::from(lo.to_be_bytes()), len)
            .expect("ClassBench prefixes are prefixes")
    };
    let ports = |lo: u16, hi: u16| {
        if (lo, hi) == (0, u16::MAX) {
            Vec::new()
        } else {
            vec![PortRange {
                first: lo,
                last: hi,
            }]
        }
    };
    let mut rules = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let m = &entry.m;
        let base = RuleSpec {
            source: AddressMatch {
                prefixes: vec![prefix(m.src.lo, m.src.hi)],
                ..AddressMatch::default()
            },
            destination: AddressMatch {
                prefixes: vec![prefix(m.dst.lo, m.dst.hi)],
                ..AddressMatch::default()
            },
            source_ports: ports(m.sport.lo, m.sport.hi),
            destination_ports: ports(m.dport.lo, m.dport.hi),
            ..RuleSpec::new(format!("r{index}"), action(index))
        };
        let has_ports = !base.source_ports.is_empty() || !base.destination_ports.is_empty();
        match m.proto {
            Some(6) => rules.push(RuleSpec {
                protocol: Some(Protocol::Tcp),
                ..base
            }),
            Some(17) => rules.push(RuleSpec {
                protocol: Some(Protocol::Udp),
                ..base
            }),
            Some(other) => rules.push(RuleSpec {
                protocol: Some(Protocol::Number(other)),
                source_ports: Vec::new(),
                destination_ports: Vec::new(),
                ..base
            }),
            None if has_ports => {
                rules.push(RuleSpec {
                    id: format!("r{index}-udp"),
                    protocol: Some(Protocol::Udp),
                    ..base.clone()
                });
                rules.push(RuleSpec {
                    protocol: Some(Protocol::Tcp),
                    ..base
                });
            }
            None => rules.push(base),
        }
    }
    rules
}

/// A ClassBench set as a rule set in which every rule allows and the default allows (version:
/// the set's name); with it, the trace's routable 5-tuples, each once.
pub fn classbench_policy(dir: &Path, set: &str) -> Result<(RuleSetSpec, Vec<Tuple>), String> {
    let files = set_files(dir, set)?;
    let entries = read_entries(&files)?;
    let trace = classbench::parse_trace(&read(&files.trace)?)
        .map_err(|e| format!("{}: {e}", files.trace.display()))?;
    // Trace packets a router must drop before any rule (martian, multicast or link-local
    // addresses) would measure nothing: they are left out.
    let routable = |a: u32| {
        let first = a >> 24;
        first != 0 && first != 127 && first < 224 && a >> 16 != 0xa9fe
    };
    let mut seen = std::collections::HashSet::new();
    let tuples = trace
        .iter()
        .filter(|p| routable(p.key.src) && routable(p.key.dst))
        .map(|p| {
            (
                p.key.src.to_be_bytes(),
                p.key.dst.to_be_bytes(),
                if p.key.proto == 6 { 6 } else { 17 },
                p.key.sport,
                p.key.dport,
            )
        })
        .filter(|tuple| seen.insert(*tuple))
        .collect();
    Ok((
        RuleSetSpec {
            version: set.into(),
            default_action: DefaultAction::Allow,
            rules: classbench_rules(&entries, |_| Action::Allow),
            ..RuleSetSpec::default()
        },
        tuples,
    ))
}
