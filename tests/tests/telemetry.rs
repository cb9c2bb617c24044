//! End to end: flow records of a running `vfn` exported as IPFIX to a real collector (`nfcapd`
//! of nfdump) in the router's namespace, read back by `nfdump` and decoded by `tshark`; and the
//! same records streamed by the API (`vfnctl flows observe`). Needs root, nfdump and tshark; the
//! tests run one at a time and fail loudly without them.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use vfn_config::{CollectorConfig, Config};
use vfn_lab::{ChildGuard, Lab, ROUTER_ROLE, RunningVfn, TopologySpec};

static SERIAL: Mutex<()> = Mutex::new(());
const READY: Duration = Duration::from_secs(30);

const C1: &str = "198.18.1.2";
const SRV: &str = "198.18.3.2";
const COLLECTOR_PORT: u16 = 9995;
/// A datagram of `udp_flood` on the wire: 20 bytes of IPv4, 8 of UDP, 64 of payload.
const FLOOD_IP_LENGTH: u64 = 92;

fn addr(text: &str) -> IpAddr {
    text.parse().expect("address")
}

/// A router with telemetry records ending after half a second of silence, exported to a
/// collector on the router namespace's loopback.
fn setup(prefix: &str) -> (Lab, RunningVfn, Config) {
    vfn_lab::remove_stale(prefix).expect("remove namespaces of crashed runs");
    let lab = Lab::create(&TopologySpec::default_lab(prefix)).expect("lab");
    let mut config = vfn_lab::lab_config(lab.topology()).expect("config");
    config.telemetry.idle_timeout_ms = 500;
    config.telemetry.collectors = vec![CollectorConfig {
        address: format!("127.0.0.1:{COLLECTOR_PORT}")
            .parse()
            .expect("address"),
        observation_domain: 7,
        message_size: 1400,
        template_refresh_messages: 100,
        template_refresh_s: 60,
        anonymize_key_file: None,
    }];
    let binary = vfn_lab::vfn_binary().expect("vfn binary");
    let vfn = RunningVfn::start(&lab, &binary, &config, READY).expect("router starts");
    (lab, vfn, config)
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("runs");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts `program args` in the router's namespace, stopped by its PID (SIGTERM) on drop.
fn in_router(lab: &Lab, program: &str, args: &[&str]) -> ChildGuard {
    let mut command = lab.exec(ROUTER_ROLE, &[]).expect("router namespace");
    command
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn(command).expect("starts")
}

/// The files nfcapd wrote under `dir`.
fn nfcapd_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("nfcapd."))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn records_reach_nfcapd_and_tshark_decodes_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, vfn, _config) = setup("vfntel1");
    let work = tempfile::tempdir().expect("temp dir");
    let flows_dir = work.path().join("flows");
    std::fs::create_dir(&flows_dir).expect("flows dir");
    let pcap = work.path().join("ipfix.pcap");
    let port = COLLECTOR_PORT.to_string();
    let collector = in_router(
        &lab,
        "nfcapd",
        &[
            "-b",
            "127.0.0.1",
            "-p",
            &port,
            "-w",
            &flows_dir.display().to_string(),
        ],
    );
    let filter = format!("udp port {COLLECTOR_PORT}");
    let capture = in_router(
        &lab,
        "tshark",
        &[
            "-i",
            "lo",
            "-f",
            &filter,
            "-w",
            &pcap.display().to_string(),
            "-q",
        ],
    );
    // Both listen before the first record leaves: nfcapd opens its current file and tshark
    // (dumpcap) its capture file once they run.
    let listening = vfn_lab::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        pcap.metadata().is_ok_and(|m| m.len() > 0)
            && std::fs::read_dir(&flows_dir).is_ok_and(|mut entries| entries.next().is_some())
    });
    assert!(listening.is_ok(), "nfcapd and tshark started");
    std::thread::sleep(Duration::from_millis(300));

    let flood = vfn_lab::udp_flood(
        lab.netns("c1").expect("c1"),
        lab.netns("srv").expect("srv"),
        addr(SRV),
        7200,
        1000,
        Duration::from_secs(1),
    )
    .expect("flood runs");
    assert!(flood.received > 500, "the router forwards: {flood:?}");
    // The record ends 0.5 s after the last datagram and is queued for the exporter, which
    // sends partly filled messages within a second.
    vfn.wait_for_counters(Duration::from_secs(10), |c| {
        c.total("vfn_flow_records_exported_total", &[]) >= 1
    })
    .expect("the flood's record is queued");
    std::thread::sleep(Duration::from_millis(2500));
    capture.stop().expect("tshark stops");
    // Stopped by its PID, nfcapd writes its file.
    collector.stop().expect("nfcapd stops");
    drop(vfn);

    let files = nfcapd_files(&flows_dir);
    assert!(!files.is_empty(), "nfcapd wrote a file");
    let mut rows = String::new();
    for file in &files {
        let output = run(Command::new("nfdump").args([
            "-r",
            file,
            "-q",
            "-o",
            "fmt:%sa|%da|%sp|%dp|%pr|%pkt|%byt|%opkt|%obyt",
        ]));
        rows.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    let flood_row: Vec<&str> = rows
        .lines()
        .find(|line| line.contains("7200") && line.contains(C1))
        .unwrap_or_else(|| panic!("the flood's record: {rows}"))
        .split('|')
        .map(str::trim)
        .collect();
    assert_eq!(flood_row[0], C1, "{rows}");
    assert_eq!(flood_row[1], SRV, "{rows}");
    assert_eq!(flood_row[3], "7200", "{rows}");
    assert_eq!(flood_row[4], "UDP", "{rows}");
    let packets: u64 = flood_row[5].parse().expect("packets");
    let bytes: u64 = flood_row[6].parse().expect("bytes");
    assert_eq!(packets, flood.received, "every datagram srv got: {rows}");
    assert_eq!(bytes, packets * FLOOD_IP_LENGTH, "IP lengths: {rows}");

    let decoded = run(Command::new("tshark").arg("-r").arg(&pcap).args([
        "-d",
        &format!("udp.port=={COLLECTOR_PORT},cflow"),
        "-V",
    ]));
    let text = String::from_utf8_lossy(&decoded.stdout);
    assert!(text.contains("IPFIX"), "tshark sees IPFIX");
    assert!(text.contains(SRV), "{text}");
    assert!(
        !text.contains("Malformed") && !text.contains("[Expert Info (Error"),
        "tshark decodes without errors"
    );
}

#[test]
fn vfnctl_flows_observe_shows_records_as_they_end() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, vfn, _config) = setup("vfntel2");
    let work = tempfile::tempdir().expect("temp dir");
    let observed = work.path().join("observed.jsonl");
    let mut observer = Command::new(vfn_lab::vfnctl_binary().expect("vfnctl"))
        .arg("--server")
        .arg(vfn.api_socket())
        .args([
            "-o",
            "json",
            "flows",
            "observe",
            "--prefix",
            SRV,
            "--seconds",
            "30",
        ])
        .stdout(std::fs::File::create(&observed).expect("file"))
        .spawn()
        .expect("observer runs");
    let flood = |port: u16| {
        vfn_lab::udp_flood(
            lab.netns("c1").expect("c1"),
            lab.netns("srv").expect("srv"),
            addr(SRV),
            port,
            200,
            Duration::from_millis(500),
        )
        .expect("flood runs")
    };
    let lines = || std::fs::read_to_string(&observed).unwrap_or_default();
    // The watcher subscribes once its call arrives: flood until it has seen a record.
    let subscribed =
        vfn_lab::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            flood(7301);
            std::thread::sleep(Duration::from_millis(1500));
            lines().contains("\"destination_port\":7301")
        });
    assert!(subscribed.is_ok(), "{}", lines());
    // Then one flood whose record it must show whole.
    let measured = flood(7300);
    let seen = vfn_lab::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        lines().contains("\"destination_port\":7300")
    });
    let _ = observer.kill();
    let _ = observer.wait();
    let text = lines();
    assert!(seen.is_ok(), "{text}");
    let received = measured.received;
    let record: serde_json::Value = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|update| update["kind"]["Record"].clone())
        .find(|record| record["destination_port"] == 7300)
        .expect("a record");
    assert_eq!(record["source"], C1);
    assert_eq!(record["end_reason"], "idle_timeout");
    assert_eq!(record["verdict"], "no-policy");
    assert_eq!(
        record["forward"]["packets"].as_u64(),
        Some(received),
        "{record}"
    );
    assert_eq!(
        record["forward"]["bytes"].as_u64(),
        Some(received * FLOOD_IP_LENGTH)
    );
    assert_eq!(record["ingress"], "p0");
    assert_eq!(record["egress"], "p2");
}
