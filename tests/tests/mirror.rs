//! End to end: mirror sessions of a running `vfn` in the default lab, with host c2 as the
//! analyzer. tshark captures what c1 sends, what srv receives and the ERSPAN copies that reach
//! c2; the copies decode without errors and carry the frames as the router received them (as c1
//! sent them) and as it sent them (as srv received them), byte for byte. Sampling and the rate
//! cap hold within 10 % over 20,000 packets; with the analyzer's link down, forwarding goes on
//! and the lost copies are counted. Needs root and tshark; the tests run one at a time and fail
//! loudly without them.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use vfn_config::{
    Config, MirrorDestinationConfig, MirrorDirection, MirrorSessionConfig, PolicySource,
};
use vfn_lab::{ChildGuard, Counters, HOST_INTERFACE, Lab, RunningVfn, TopologySpec};
use vfn_rules::{
    Action, AddressMatch, DefaultAction, PortRange, Protocol, RuleSetSpec, RuleSpec, SegmentSpec,
};

static SERIAL: Mutex<()> = Mutex::new(());
const READY: Duration = Duration::from_secs(30);
const C1: &str = "198.18.1.2";
const SRV: &str = "198.18.3.2";
/// The router's address on c2's link, and c2, the analyzer.
const ROUTER_ON_C2: &str = "198.18.2.1";
const ANALYZER: &str = "198.18.2.2";

fn addr(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn session(name: &str, direction: MirrorDirection, session_id: u16) -> MirrorSessionConfig {
    MirrorSessionConfig {
        name: name.into(),
        direction,
        destination: MirrorDestinationConfig::Erspan {
            source: addr(ROUTER_ON_C2),
            remote: addr(ANALYZER),
            session_id,
        },
        snap_length: 0,
        sample_every: 1,
        packets_per_second: 0,
        queue: 64,
    }
}

/// UDP from c1 to srv port `port` mirrored to `session`, everything allowed.
fn mirror_rule(port: u16, session: &str) -> RuleSpec {
    RuleSpec {
        source: AddressMatch {
            prefixes: vec![format!("{C1}/32").parse().expect("prefix")],
            ..AddressMatch::default()
        },
        protocol: Some(Protocol::Udp),
        destination_ports: vec![PortRange::single(port)],
        ..RuleSpec::new(
            format!("watch-{port}"),
            Action::Mirror {
                session: session.into(),
                then_allow: true,
            },
        )
    }
}

fn setup(
    prefix: &str,
    sessions: Vec<MirrorSessionConfig>,
    rules: Vec<RuleSpec>,
) -> (Lab, RunningVfn) {
    vfn_lab::remove_stale(prefix).expect("remove namespaces of crashed runs");
    let lab = Lab::create(&TopologySpec::default_lab(prefix)).expect("lab");
    let mut config: Config = vfn_lab::lab_config(lab.topology()).expect("config");
    config.mirror.sessions = sessions;
    config.policy = Some(PolicySource::Inline(RuleSetSpec {
        version: "mirror".into(),
        default_action: DefaultAction::Allow,
        // Mirror policies may name it.
        segments: vec![SegmentSpec {
            name: "servers".into(),
            prefixes: vec!["198.18.3.0/24".parse().expect("prefix")],
            criticality: 5,
        }],
        rules,
        ..RuleSetSpec::default()
    }));
    let binary = vfn_lab::vfn_binary().expect("vfn binary");
    let vfn = RunningVfn::start(&lab, &binary, &config, READY).expect("router starts");
    (lab, vfn)
}

/// tshark capturing `filter` on the host interface of `role` into `file` (pcap), stopped by
/// its PID.
fn capture(lab: &Lab, role: &str, filter: &str, file: &Path) -> ChildGuard {
    let mut command = lab.exec(role, &[]).expect("namespace");
    command
        .args([
            "tshark",
            "-i",
            HOST_INTERFACE,
            "-f",
            filter,
            "-F",
            "pcap",
            "-q",
            "-w",
        ])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn(command).expect("tshark starts")
}

/// A UDP stream from c1 to srv `port` at `rate` datagrams per second for `duration`.
fn stream(lab: &Lab, port: u16, rate: u64, duration: Duration) -> vfn_lab::FloodResult {
    vfn_lab::udp_flood(
        lab.netns("c1").expect("c1"),
        lab.netns("srv").expect("srv"),
        addr(SRV),
        port,
        rate,
        duration,
    )
    .expect("the stream runs")
}

/// Makes the router resolve the analyzer (c2) by sending it traffic: a copy whose tunnel's next
/// hop is not resolved yet is lost, and counted, while the router asks.
fn resolve_analyzer(lab: &Lab) {
    vfn_lab::udp_flood(
        lab.netns("c1").expect("c1"),
        lab.netns("c2").expect("c2"),
        addr(ANALYZER),
        9,
        100,
        Duration::from_millis(200),
    )
    .expect("the stream to the analyzer runs");
}

/// Stops the captures once the last frames had time to arrive.
fn stop_captures(captures: Vec<ChildGuard>) {
    std::thread::sleep(Duration::from_millis(500));
    for guard in captures {
        guard.stop().expect("tshark stops");
    }
}

/// Starts the captures `(role, filter, file)` and waits until each has its file.
fn start_captures(lab: &Lab, captures: &[(&str, &str, &Path)]) -> Vec<ChildGuard> {
    let guards = captures
        .iter()
        .map(|(role, filter, file)| capture(lab, role, filter, file))
        .collect();
    let started = vfn_lab::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        captures
            .iter()
            .all(|(_, _, file)| file.metadata().is_ok_and(|m| m.len() > 0))
    });
    assert!(started.is_ok(), "the captures started");
    // dumpcap writes the file header before it captures.
    std::thread::sleep(Duration::from_millis(300));
    guards
}

/// Asserts that tshark decodes each of the `count` copies in `file`: `field` (of the tunnel's
/// header) reads `value`, the inner datagram goes to UDP `port`, nothing is malformed.
fn assert_copies_decode(file: &Path, field: &str, value: &str, port: u16, count: usize) {
    let decoded = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args([
            "-T",
            "fields",
            "-e",
            field,
            "-e",
            "udp.dstport",
            "-e",
            "_ws.malformed",
        ])
        .output()
        .expect("tshark runs");
    assert!(decoded.status.success(), "{decoded:?}");
    let text = String::from_utf8_lossy(&decoded.stdout);
    assert_eq!(text.lines().count(), count, "{text}");
    let port = port.to_string();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.first(), Some(&value), "{field}: {line}");
        assert_eq!(
            fields.get(1),
            Some(&port.as_str()),
            "the inner datagram decoded: {line}"
        );
        assert!(
            fields.get(2).is_none_or(|f| f.is_empty()),
            "malformed: {line}"
        );
    }
}

fn frames(file: &Path) -> Vec<Vec<u8>> {
    vfn_dataplane::pcap::read(file)
        .expect("a pcap file")
        .into_iter()
        .map(|frame| frame.data)
        .collect()
}

/// The frame an ERSPAN II copy (Ethernet, IPv4 without options, GRE with a sequence number,
/// the ERSPAN header) carries.
fn erspan_inner(copy: &[u8]) -> Vec<u8> {
    copy[14 + 20 + 8 + 8..].to_vec()
}

fn total(counters: &Counters, metric: &str, session: &str) -> u64 {
    counters.total(metric, &[("session", session)])
}

#[test]
fn erspan_copies_decode_and_carry_the_frames_as_received_and_as_sent() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, vfn) = setup(
        "vfnmir1",
        vec![session("ids", MirrorDirection::Both, 3)],
        vec![mirror_rule(7300, "ids")],
    );
    resolve_analyzer(&lab);
    let work = tempfile::tempdir().expect("temp dir");
    let (copies_file, sent_file, received_file) = (
        work.path().join("erspan.pcap"),
        work.path().join("c1.pcap"),
        work.path().join("srv.pcap"),
    );
    let captures = start_captures(
        &lab,
        &[
            ("c2", "ip proto 47", &copies_file),
            ("c1", "udp port 7300", &sent_file),
            ("srv", "udp port 7300", &received_file),
        ],
    );
    let flood = stream(&lab, 7300, 200, Duration::from_secs(1));
    assert_eq!(flood.received, flood.sent, "every datagram forwarded");
    stop_captures(captures);

    let (copies, sent_by_c1, received_by_srv) = (
        frames(&copies_file),
        frames(&sent_file),
        frames(&received_file),
    );
    assert_eq!(sent_by_c1.len() as u64, flood.sent, "c1's capture");
    assert_eq!(
        received_by_srv.len() as u64,
        flood.received,
        "srv's capture"
    );
    assert_eq!(
        copies.len(),
        sent_by_c1.len() + received_by_srv.len(),
        "a copy each way"
    );
    // Each copy carries one of the frames, and every frame has its copy.
    let mut inner: Vec<Vec<u8>> = copies.iter().map(|copy| erspan_inner(copy)).collect();
    let mut expected: Vec<Vec<u8>> = sent_by_c1.into_iter().chain(received_by_srv).collect();
    inner.sort();
    expected.sort();
    assert!(
        inner == expected,
        "the copies carry exactly the frames, as received and as sent"
    );

    assert_copies_decode(&copies_file, "erspan.spanid", "3", 7300, copies.len());

    // The analyzer's link goes down: forwarding goes on, copies are lost and counted.
    let down = lab
        .exec("c2", &["ip", "link", "set", "dev", HOST_INTERFACE, "down"])
        .expect("namespace")
        .status()
        .expect("ip runs");
    assert!(down.success());
    // The router reads the carrier every 100 ms.
    let seen = vfn_lab::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        vfn.log().contains("port link changed")
    });
    assert!(
        seen.is_ok(),
        "the router saw the link go down:\n{}",
        vfn.log()
    );
    let before = vfn.counters().expect("counters");
    // A stream at 50,000 datagrams per second, every one selected, none copied.
    let flood = stream(&lab, 7300, 50_000, Duration::from_secs(1));
    assert!(
        flood.sent >= 45_000 && flood.received * 100 >= flood.sent * 99,
        "forwarding untouched: {flood:?}"
    );
    let counters = vfn
        .wait_for_counters(Duration::from_secs(3), |c| {
            c.total(
                "vfn_mirror_lost_total",
                &[("session", "ids"), ("reason", "link_down")],
            ) > 0
        })
        .unwrap_or_else(|e| panic!("lost copies counted: {e}\n{}", vfn.log()));
    assert_eq!(
        total(&counters, "vfn_mirror_copies_total", "ids"),
        total(&before, "vfn_mirror_copies_total", "ids"),
        "no copy sent to the port without carrier"
    );
    assert!(
        total(&counters, "vfn_mirror_selected_packets_total", "ids")
            >= total(&before, "vfn_mirror_selected_packets_total", "ids") + flood.received
    );
}

#[test]
fn sampling_and_the_rate_cap_hold_over_20000_packets() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sampled = MirrorSessionConfig {
        sample_every: 10,
        ..session("sampled", MirrorDirection::Received, 1)
    };
    let capped = MirrorSessionConfig {
        packets_per_second: 2_000,
        queue: 4096,
        ..session("capped", MirrorDirection::Received, 2)
    };
    let (lab, vfn) = setup(
        "vfnmir2",
        vec![sampled, capped],
        vec![mirror_rule(7301, "sampled"), mirror_rule(7302, "capped")],
    );
    let flood = |port: u16| stream(&lab, port, 11_000, Duration::from_secs(2));
    let sampled_flood = flood(7301);
    let capped_flood = flood(7302);
    assert!(sampled_flood.sent >= 20_000, "{sampled_flood:?}");
    assert!(capped_flood.sent >= 20_000, "{capped_flood:?}");
    let counters = vfn
        .wait_for_counters(Duration::from_secs(3), |c| {
            c.total(
                "vfn_mirror_selected_packets_total",
                &[("session", "capped")],
            ) >= capped_flood.received
        })
        .unwrap_or_else(|e| panic!("counted: {e}\n{}", vfn.log()));
    let within_10_percent =
        |value: u64, expected: f64| (value as f64 - expected).abs() <= 0.1 * expected;
    let selected = total(&counters, "vfn_mirror_selected_packets_total", "sampled");
    let copies = total(&counters, "vfn_mirror_copies_total", "sampled");
    // Every datagram the router received; srv's socket may have missed a few.
    assert!(
        (sampled_flood.received..=sampled_flood.sent).contains(&selected),
        "every datagram selected: {selected} of {sampled_flood:?}"
    );
    assert!(
        within_10_percent(copies, selected as f64 / 10.0),
        "one in 10: {copies} of {selected}"
    );
    let copies = total(&counters, "vfn_mirror_copies_total", "capped");
    let seconds = capped_flood.elapsed.as_secs_f64();
    assert!(
        within_10_percent(copies, 2_000.0 * seconds),
        "2,000 per second for {seconds:.2} s: {copies}"
    );
    assert!(
        counters.total(
            "vfn_mirror_lost_total",
            &[("session", "capped"), ("reason", "rate_limited")]
        ) > 0
    );
}

/// `vfnctl ARGS` against the router, its standard output.
fn vfnctl(vfn: &RunningVfn, args: &[&str]) -> String {
    let output = Command::new(vfn_lab::vfnctl_binary().expect("vfnctl"))
        .arg("--server")
        .arg(vfn.api_socket())
        .args(args)
        .output()
        .expect("vfnctl runs");
    assert!(
        output.status.success(),
        "vfnctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_mirror_policy_copies_for_its_time_to_live_then_goes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Plain GRE this time.
    let gre = MirrorSessionConfig {
        destination: MirrorDestinationConfig::Gre {
            source: addr(ROUTER_ON_C2),
            remote: addr(ANALYZER),
        },
        ..session("ids", MirrorDirection::Received, 0)
    };
    let (lab, vfn) = setup("vfnmir3", vec![gre], Vec::new());
    resolve_analyzer(&lab);
    let short_stream = || stream(&lab, 7400, 200, Duration::from_millis(300));
    let copies = || {
        vfn.counters()
            .map(|c| total(&c, "vfn_mirror_copies_total", "ids"))
            .unwrap_or(0)
    };
    let added = std::time::Instant::now();
    let out = vfnctl(
        &vfn,
        &[
            "mirror",
            "add",
            "ids",
            "--source",
            C1,
            "--destination-segment",
            "servers",
            "--protocol",
            "udp",
            "--dport",
            "7400",
            "--ttl",
            "3s",
            "--reason",
            "suspicious",
        ],
    );
    assert!(out.contains("added mirror policy"), "{out}");
    let work = tempfile::tempdir().expect("temp dir");
    let copies_file = work.path().join("gre.pcap");
    let captures = start_captures(&lab, &[("c2", "ip proto 47", &copies_file)]);
    let sent = short_stream();
    stop_captures(captures);
    let counted = vfn_lab::wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        copies() >= sent.received
    });
    assert!(
        counted.is_ok(),
        "a copy of each datagram: {} of {sent:?}",
        copies()
    );
    // tshark decodes the GRE copies down to the datagrams they carry.
    assert_copies_decode(
        &copies_file,
        "gre.proto",
        "0x6558",
        7400,
        sent.sent as usize,
    );

    // Half a second before it expires the policy is listed; a second after, it is gone.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(added.elapsed()));
    let listed = vfnctl(&vfn, &["-o", "json", "mirror", "list"]);
    assert!(
        listed.contains("\"session\":\"ids\"") || listed.contains("\"session\": \"ids\""),
        "{listed}"
    );
    std::thread::sleep(Duration::from_millis(4000).saturating_sub(added.elapsed()));
    let listed = vfnctl(&vfn, &["-o", "json", "mirror", "list"]);
    assert!(!listed.contains("ids"), "{listed}");
    let before = copies();
    let sent = short_stream();
    assert!(sent.received > 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(copies(), before, "nothing copied after the policy expired");
}

#[test]
fn copies_to_an_analyzer_port_leave_it_as_received() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // c2's port (p1) as a port dedicated to an analyzer.
    let tap = MirrorSessionConfig {
        destination: MirrorDestinationConfig::Port("p1".into()),
        ..session("tap", MirrorDirection::Received, 0)
    };
    let (lab, _vfn) = setup("vfnmir4", vec![tap], vec![mirror_rule(7310, "tap")]);
    let work = tempfile::tempdir().expect("temp dir");
    let (copies_file, sent_file) = (work.path().join("c2.pcap"), work.path().join("c1.pcap"));
    let captures = start_captures(
        &lab,
        &[
            ("c2", "udp port 7310", &copies_file),
            ("c1", "udp port 7310", &sent_file),
        ],
    );
    let flood = stream(&lab, 7310, 200, Duration::from_millis(500));
    assert_eq!(flood.received, flood.sent, "every datagram forwarded");
    stop_captures(captures);
    let mut copies = frames(&copies_file);
    let mut sent_by_c1 = frames(&sent_file);
    assert_eq!(sent_by_c1.len() as u64, flood.sent);
    copies.sort();
    sent_by_c1.sort();
    assert!(
        copies == sent_by_c1,
        "the frames c1 sent, byte for byte, out of the analyzer port"
    );
}
