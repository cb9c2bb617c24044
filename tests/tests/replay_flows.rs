//! The flows of real captures, `../shared/datasets/pcaps/*.pcap` from the workspace root, as
//! `vfn flows-from-pcap` counts them (the workers' flow telemetry, with the pipeline in replay
//! mode and every timeout longer than the capture), against an independent count: tshark's
//! dissection of every frame, aggregated here into bidirectional flows with the first packet's
//! sender as the initiator. Per capture: the same flows, and per flow the same packets and IP
//! bytes in each direction and the same first and last packet times. Needs tshark and the `vfn`
//! binary (`cargo build -p vfn`), not root; fails loudly without them or without the captures.
//!
//! Where the VFN differs from a plain count on purpose (`docs/flows.md`, Replaying a capture),
//! the reference applies the same rule: see [`reference_packet`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the captures are, from the workspace root.
const CAPTURES: &str = "../shared/datasets/pcaps";

/// A flow as its initiator sent it: the addresses and ports (or ICMP fields) of its first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlowId {
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    proto: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Totals {
    forward_packets: u64,
    forward_bytes: u64,
    reverse_packets: u64,
    reverse_bytes: u64,
    /// Nanoseconds since the Unix epoch.
    first_ns: u64,
    last_ns: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.forward_packets += other.forward_packets;
        self.forward_bytes += other.forward_bytes;
        self.reverse_packets += other.reverse_packets;
        self.reverse_bytes += other.reverse_bytes;
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn captures() -> Vec<PathBuf> {
    let dir = workspace().join(CAPTURES);
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
        .expect("the flow telemetry issue's captures");
    let mut captures: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pcap"))
        .collect();
    captures.sort();
    assert!(!captures.is_empty(), "{}: no .pcap file", dir.display());
    captures
}

/// Seconds since the epoch as tshark and `vfn flows-from-pcap` print them (`S.NNNNNNNNN`).
fn epoch_ns(text: &str) -> u64 {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let nanos: u64 = format!("{fraction:0<9}")[..9].parse().expect("fraction");
    seconds.parse::<u64>().expect("seconds") * 1_000_000_000 + nanos
}

/// The flows in the records of `vfn flows-from-pcap`: records of one flow (same key and flow
/// start) added up, as a collector does.
fn vfn_flows(capture: &Path, output: &Path) -> BTreeMap<FlowId, Totals> {
    let binary = vfn_lab::vfn_binary().expect("vfn binary");
    let run = Command::new(&binary)
        .arg("flows-from-pcap")
        .arg("--input")
        .arg(capture)
        .arg("--output")
        .arg(output)
        .output()
        .expect("vfn runs");
    assert!(
        run.status.success(),
        "vfn flows-from-pcap {}: {}",
        capture.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let csv = std::fs::read_to_string(output).expect("CSV written");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "src,sport,dst,dport,proto,fwd_packets,fwd_bytes,bwd_packets,bwd_bytes,first,last,\
             flow_start,end_reason"
        )
    );
    let mut flows: BTreeMap<(FlowId, u64), Totals> = BTreeMap::new();
    for line in lines {
        let columns: Vec<&str> = line.split(',').collect();
        assert_eq!(columns.len(), 13, "{line}");
        let number = |index: usize| -> u64 { columns[index].parse().expect(line) };
        let id = FlowId {
            src: columns[0].parse().expect(line),
            sport: number(1) as u16,
            dst: columns[2].parse().expect(line),
            dport: number(3) as u16,
            proto: number(4) as u8,
        };
        let record = Totals {
            forward_packets: number(5),
            forward_bytes: number(6),
            reverse_packets: number(7),
            reverse_bytes: number(8),
            first_ns: epoch_ns(columns[9]),
            last_ns: epoch_ns(columns[10]),
        };
        flows
            .entry((id, epoch_ns(columns[11])))
            .and_modify(|totals| totals.add(&record))
            .or_insert(record);
    }
    let mut by_id = BTreeMap::new();
    for ((id, _), totals) in flows {
        // No timeout passes within the capture: each conversation is one flow from start to end.
        assert!(
            by_id.insert(id, totals).is_none(),
            "{id:?} started twice in {}",
            capture.display()
        );
    }
    by_id
}

/// The fields tshark prints per frame, in order; the first occurrence of each, which for an ICMP
/// error is the outer packet's.
const FIELDS: [&str; 31] = [
    "frame.time_epoch",
    "frame.cap_len",
    "eth.type",
    "vlan.etype",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.len",
    "ip.hdr_len",
    "ip.checksum.status",
    "ip.frag_offset",
    "ip.flags.mf",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.plen",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.hdr_len",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "sctp.srcport",
    "sctp.dstport",
    "icmp.type",
    "icmp.code",
    "icmp.ident",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.echo.identifier",
    "frame.number",
];

/// One IP packet as the reference counts it.
struct ReferencePacket {
    time_ns: u64,
    id: FlowId,
    bytes: u64,
}

/// The packet of one tshark line ([`FIELDS`]), or `None` where the VFN counts no packet
/// (`docs/flows.md`, Replaying a capture), by the same rules:
/// - only IPv4 and IPv6 frames, untagged or behind one 802.1Q tag (ARP and other EtherTypes,
///   QinQ, are not counted);
/// - the parser's drops: an IPv4 header checksum that is wrong, an IP length beyond the captured
///   bytes, a TCP header shorter than 20 bytes or beyond the packet, a UDP length below 8 or
///   beyond the packet, an ICMP message shorter than 8 bytes;
/// - later fragments count in no flow (no ports), first fragments with their own IP length;
/// - ICMPv6 type 0 code 0 counts in no flow.
///
/// IPv6 extension headers are not handled here (the VFN keys on the protocol behind them): a
/// capture with them fails loudly, to be taught to this reference.
fn reference_packet(line: &str) -> Option<ReferencePacket> {
    let values: Vec<&str> = line.split('\t').collect();
    assert_eq!(values.len(), FIELDS.len(), "{line}");
    let field = |name: &str| -> &str {
        let index = FIELDS
            .iter()
            .position(|f| *f == name)
            .expect("a requested field");
        values[index]
    };
    let number = |name: &str| -> Option<u64> {
        let text = field(name);
        match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        }
    };
    const IPV4: u64 = 0x0800;
    const IPV6: u64 = 0x86dd;
    let (l3, ethertype) = match number("eth.type")? {
        0x8100 => (18, number("vlan.etype")?),
        ethertype => (14, ethertype),
    };
    // `first_of_fragments`: the first fragment of a fragmented packet, which need not hold the
    // whole transport payload.
    let (src, dst, proto, bytes, payload, first_of_fragments) = match ethertype {
        IPV4 => {
            let later_fragment = number("ip.frag_offset").unwrap_or(0) > 0;
            // tshark says 0 for a bad checksum (1 good, 2 unverified).
            if number("ip.checksum.status") == Some(0) || later_fragment {
                return None;
            }
            let (total, header) = (number("ip.len")?, number("ip.hdr_len")?);
            (
                field("ip.src"),
                field("ip.dst"),
                number("ip.proto")? as u8,
                total,
                total.checked_sub(header)?,
                number("ip.flags.mf") == Some(1),
            )
        }
        IPV6 => {
            let next = number("ipv6.nxt")?;
            assert!(
                !matches!(next, 0 | 43 | 44 | 60),
                "frame {}: IPv6 extension header {next}: teach this reference",
                field("frame.number")
            );
            let payload = number("ipv6.plen")?;
            (
                field("ipv6.src"),
                field("ipv6.dst"),
                next as u8,
                40 + payload,
                payload,
                false,
            )
        }
        _ => return None,
    };
    if l3 + bytes > number("frame.cap_len")? {
        return None;
    }
    let (sport, dport) = match proto {
        6 => {
            let header = number("tcp.hdr_len")?;
            if payload < 20 || header < 20 || (!first_of_fragments && header > payload) {
                return None;
            }
            (number("tcp.srcport")?, number("tcp.dstport")?)
        }
        17 => {
            let length = number("udp.length")?;
            if payload < 8 || length < 8 || (!first_of_fragments && length > payload) {
                return None;
            }
            (number("udp.srcport")?, number("udp.dstport")?)
        }
        132 => (number("sctp.srcport")?, number("sctp.dstport")?),
        1 | 58 => {
            if payload < 8 {
                return None;
            }
            let (kind, code, identifier, echo) = if proto == 1 {
                (
                    number("icmp.type")?,
                    number("icmp.code")?,
                    number("icmp.ident"),
                    [0, 8],
                )
            } else {
                (
                    number("icmpv6.type")?,
                    number("icmpv6.code")?,
                    number("icmpv6.echo.identifier"),
                    [128, 129],
                )
            };
            if echo.contains(&kind) {
                // An echo flow: the identifier in both ports.
                let identifier = identifier?;
                (identifier, identifier)
            } else if proto == 58 && kind == 0 && code == 0 {
                return None;
            } else {
                // Other ICMP messages: keyed by type and code, one flow per direction.
                (0, kind << 8 | code)
            }
        }
        _ => (0, 0),
    };
    Some(ReferencePacket {
        time_ns: epoch_ns(field("frame.time_epoch")),
        id: FlowId {
            src: src.parse().expect("source address"),
            sport: sport as u16,
            dst: dst.parse().expect("destination address"),
            dport: dport as u16,
            proto,
        },
        bytes,
    })
}

/// A flow's endpoints, the lower `(address, port)` first, and protocol: the same both ways round.
type CanonicalKey = (IpAddr, u16, IpAddr, u16, u8);

/// The flows tshark's dissection of `capture` makes, keyed both ways round: the first packet's
/// sender is the initiator.
fn reference_flows(capture: &Path) -> BTreeMap<FlowId, Totals> {
    let mut command = Command::new("tshark");
    command.args(["-n", "-r"]).arg(capture).args([
        // Checksums checked, fragments left as they are (as the VFN sees them).
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-T",
        "fields",
        "-E",
        "occurrence=f",
    ]);
    for field in FIELDS {
        command.args(["-e", field]);
    }
    let run = command
        .output()
        .expect("tshark (Debian's tshark package) installed");
    assert!(
        run.status.success(),
        "tshark {}: {}",
        capture.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let mut flows: BTreeMap<CanonicalKey, (FlowId, Totals)> = BTreeMap::new();
    // The VFN's clock never goes back: a frame stamped before its predecessor counts at the
    // predecessor's time.
    let mut now_ns = 0;
    for line in String::from_utf8(run.stdout).expect("UTF-8").lines() {
        let Some(packet) = reference_packet(line) else {
            continue;
        };
        now_ns = packet.time_ns.max(now_ns);
        let id = packet.id;
        let (low, high) = if (id.src, id.sport) <= (id.dst, id.dport) {
            ((id.src, id.sport), (id.dst, id.dport))
        } else {
            ((id.dst, id.dport), (id.src, id.sport))
        };
        let (initiator, totals) = flows
            .entry((low.0, low.1, high.0, high.1, id.proto))
            .or_insert((
                id,
                Totals {
                    forward_packets: 0,
                    forward_bytes: 0,
                    reverse_packets: 0,
                    reverse_bytes: 0,
                    first_ns: now_ns,
                    last_ns: now_ns,
                },
            ));
        if *initiator == id {
            totals.forward_packets += 1;
            totals.forward_bytes += packet.bytes;
        } else {
            totals.reverse_packets += 1;
            totals.reverse_bytes += packet.bytes;
        }
        totals.last_ns = now_ns;
    }
    flows.into_values().collect()
}

#[test]
fn every_capture_gives_the_flows_tshark_counts() {
    let output = tempfile::tempdir().expect("temporary directory");
    for capture in captures() {
        let name = capture.file_name().expect("file name").to_string_lossy();
        let vfn = vfn_flows(&capture, &output.path().join(format!("{name}.csv")));
        let reference = reference_flows(&capture);
        let flows: BTreeSet<&FlowId> = reference.keys().chain(vfn.keys()).collect();
        let differences: Vec<String> = flows
            .into_iter()
            .filter(|id| reference.get(id) != vfn.get(id))
            .map(|id| {
                format!(
                    "{id:?}: tshark {:?}, vfn {:?}",
                    reference.get(id),
                    vfn.get(id)
                )
            })
            .collect();
        assert!(
            differences.is_empty(),
            "{name}: {} flows by tshark, {} by the VFN; {} differ:\n{}",
            reference.len(),
            vfn.len(),
            differences.len(),
            differences.join("\n")
        );
        let packets: u64 = vfn
            .values()
            .map(|t| t.forward_packets + t.reverse_packets)
            .sum();
        println!("{name}: {} flows, {packets} packets: equal", vfn.len());
    }
}
