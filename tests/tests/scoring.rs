//! End to end: anomaly scoring in a running `vfn` in the default lab, with the bundle trained on
//! lab recordings (`models/trained/lab-cic`). c1 scans srv with nmap while c2 goes on with its
//! normal traffic (web, pings, UDP exchanges, uploads); the scorer isolates c1 within a bounded
//! time (a dynamic entry, announced on WatchEvents and audited), c2's traffic is untouched, and
//! the isolation expires on time. With `mirror_flow`, the flow that tipped the decision gets a
//! mirror policy instead. Models are swapped through the API, and a bundle that does not fit is
//! refused. Needs root, nmap and curl; the tests run one at a time and fail loudly without them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vfn_config::{
    Config, MirrorDestinationConfig, MirrorDirection, MirrorSessionConfig, ScoringAction,
};
use vfn_lab::scenarios::{HttpServer, ScanKind, nmap_scan, normal_client};
use vfn_lab::{ChildGuard, Connect, Lab, RunningVfn, TopologySpec};

static SERIAL: Mutex<()> = Mutex::new(());
const READY: Duration = Duration::from_secs(30);
const C1: &str = "198.18.1.2";
const C2: &str = "198.18.2.2";
const SRV: &str = "198.18.3.2";
const HTTP_PORT: u16 = 8000;
/// How long an isolation lasts.
const ISOLATION: Duration = Duration::from_secs(10);
/// The bound on detection: from the scan's start to c1 isolated.
const DETECTION_MAX: Duration = Duration::from_secs(5);

fn addr(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn bundle(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/trained")
        .join(name)
}

struct Setup {
    vfn: RunningVfn,
    lab: Lab,
}

/// The lab with scoring on (the lab-cic bundle, isolating for [`ISOLATION`]), `tune`d.
fn setup(prefix: &str, tune: impl FnOnce(&mut Config)) -> Setup {
    vfn_lab::remove_stale(prefix).expect("remove namespaces of crashed runs");
    let lab = Lab::create(&TopologySpec::default_lab(prefix)).expect("lab");
    let mut config: Config = vfn_lab::lab_config(lab.topology()).expect("config");
    config.scoring.enabled = true;
    config.scoring.models = Some(bundle("lab-cic"));
    config.scoring.action = ScoringAction::Isolate;
    config.scoring.action_ttl_ms = ISOLATION.as_millis() as u32;
    tune(&mut config);
    let binary = vfn_lab::vfn_binary().expect("vfn binary");
    let vfn = RunningVfn::start(&lab, &binary, &config, READY).expect("router starts");
    Setup { vfn, lab }
}

impl Setup {
    fn vfnctl(&self, args: &[&str]) -> Output {
        Command::new(vfn_lab::vfnctl_binary().expect("vfnctl"))
            .arg("--server")
            .arg(self.vfn.api_socket())
            .args(args)
            .output()
            .expect("vfnctl runs")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.vfnctl(&[&["-o", "json"], args].concat());
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).expect("json")
    }

    /// `vfnctl watch` into `file`, for `seconds` at most; stopped by PID on drop.
    fn watch(&self, file: &Path, seconds: u64) -> ChildGuard {
        let mut command = Command::new(vfn_lab::vfnctl_binary().expect("vfnctl"));
        command
            .arg("--server")
            .arg(self.vfn.api_socket())
            .args(["-o", "json", "watch", "--seconds", &seconds.to_string()])
            .stdout(std::fs::File::create(file).expect("watch file"))
            .stderr(Stdio::null());
        ChildGuard::spawn(command).expect("watcher runs")
    }

    fn connect(&self, client: &str) -> Connect {
        vfn_lab::tcp_connect(
            self.lab.netns(client).expect("client"),
            self.lab.netns("srv").expect("server"),
            addr(SRV),
            9,
            true,
            Duration::from_secs(1),
        )
        .expect("connect runs")
    }
}

/// The events in `file` of `kind` (the JSON name of the event's variant), each as JSON.
fn events(file: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| event["kind"][kind].as_object().cloned().map(Into::into))
        .collect()
}

fn until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_port_scan_gets_its_source_isolated_while_the_other_client_goes_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfnscore1", |_| {});
    let files = tempfile::tempdir().expect("temporary folder");
    let watched = files.path().join("events.jsonl");
    let _watcher = s.watch(&watched, 60);
    let _http = HttpServer::start(&s.lab, "srv", HTTP_PORT).expect("web server");
    // The watcher subscribes once its call arrives.
    std::thread::sleep(Duration::from_secs(1));

    std::thread::scope(|scope| {
        let normal = scope.spawn(|| {
            normal_client(
                &s.lab,
                "c2",
                addr(SRV),
                HTTP_PORT,
                Duration::from_secs(25),
                7,
            )
            .expect("c2's normal traffic runs")
        });
        // c2 alone first: nothing is acted on.
        std::thread::sleep(Duration::from_secs(4));
        assert!(events(&watched, "ThreatDetected").is_empty());

        let scan_start = Instant::now();
        let scan = scope.spawn(|| nmap_scan(&s.lab, "c1", addr(SRV), ScanKind::Syn, 1..=1000));
        let detected = until(DETECTION_MAX, || {
            events(&watched, "ThreatDetected")
                .into_iter()
                .find(|e| e["source"] == C1)
        });
        let detected = detected.unwrap_or_else(|| {
            panic!(
                "c1 not isolated within {DETECTION_MAX:?}: {}\n{}",
                String::from_utf8_lossy(&s.vfnctl(&["scoring", "show"]).stdout),
                s.vfn.log()
            )
        });
        println!(
            "c1 isolated {:?} after the scan started: {detected}",
            scan_start.elapsed()
        );
        assert_eq!(detected["action"], "isolate");
        let entry_id = detected["entry_id"].as_u64().expect("entry id");
        let listed = s.json(&["dynamic", "list"]);
        let entry = listed["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["id"].as_u64() == Some(entry_id))
            .unwrap_or_else(|| panic!("entry {entry_id} listed: {listed}"))
            .clone();
        assert_eq!(entry["host"], C1);
        assert!(
            entry["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("scorer: threat")),
            "{entry}"
        );
        assert_eq!(s.connect("c1"), Connect::TimedOut, "c1 is cut off");
        assert_eq!(s.connect("c2"), Connect::Connected, "c2 is not");

        // While the scan goes on (nmap gives up on the silent host after its host timeout),
        // each expiry is followed by a new isolation; once it is over, the last one expires on
        // time and c1 is back.
        scan.join().expect("scan thread").expect("nmap runs");
        let last = events(&watched, "ThreatDetected")
            .last()
            .and_then(|e| e["entry_id"].as_u64())
            .expect("an isolation");
        let expired = until(ISOLATION + Duration::from_secs(2), || {
            events(&watched, "DynamicEntryExpired")
                .into_iter()
                .find(|e| e["id"].as_u64() == Some(last))
        });
        assert!(expired.is_some(), "the isolation expires on time");
        assert_eq!(s.connect("c1"), Connect::Connected, "c1 is back");

        let normal = normal.join().expect("c2 thread");
        println!("c2: {normal:?}");
        assert!(normal.succeeded() > 20, "{normal:?}");
        assert_eq!(normal.failed(), 0, "c2's traffic untouched: {normal:?}");
    });
    assert!(
        events(&watched, "ThreatDetected")
            .iter()
            .all(|e| e["source"] == C1),
        "only c1 was acted on"
    );
    let audit = std::fs::read_to_string(s.vfn.state_dir().join("audit.jsonl")).expect("audit");
    assert!(
        audit
            .lines()
            .any(|line| line.contains("\"scorer\"") && line.contains("ThreatDetected")),
        "the action is audited"
    );
    let scoring = s.json(&["scoring", "show"]);
    assert_eq!(scoring["model"], "lab-cic");
    assert!(
        scoring["flows_scored"].as_u64().unwrap_or(0) > 100,
        "{scoring}"
    );
    let sources = scoring["sources"].as_array().expect("sources");
    assert!(sources.iter().any(|source| source["address"] == C2));
}

#[test]
fn models_are_swapped_through_the_api_and_a_bundle_that_does_not_fit_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfnscore2", |_| {});
    assert_eq!(s.json(&["scoring", "show"])["model"], "lab-cic");

    let loaded = s.vfnctl(&[
        "scoring",
        "load",
        bundle("datasets-base").to_str().expect("path"),
    ]);
    assert!(loaded.status.success(), "{loaded:?}");
    assert!(
        String::from_utf8_lossy(&loaded.stdout).starts_with("models datasets-base loaded"),
        "{loaded:?}"
    );
    assert_eq!(s.json(&["scoring", "show"])["features"], "base");

    // The lab bundle's manifest (26 features) with the base bundle's models (10 inputs).
    let misfit = tempfile::tempdir().expect("temporary folder");
    std::fs::copy(
        bundle("lab-cic").join("manifest.json"),
        misfit.path().join("manifest.json"),
    )
    .expect("manifest");
    for model in ["autoencoder.onnx", "personas.onnx"] {
        std::fs::copy(
            bundle("datasets-base").join(model),
            misfit.path().join(model),
        )
        .expect("model");
    }
    let refused = s.vfnctl(&["scoring", "load", misfit.path().to_str().expect("path")]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("autoencoder: its input has shape") && message.contains("[rows, 26]"),
        "{message}"
    );
    assert_eq!(
        s.json(&["scoring", "show"])["model"],
        "datasets-base",
        "a refused bundle changes nothing"
    );
    let audit = std::fs::read_to_string(s.vfn.state_dir().join("audit.jsonl")).expect("audit");
    assert_eq!(
        audit
            .lines()
            .filter(|line| line.contains("LoadModels"))
            .count(),
        2,
        "the load and the refusal are audited"
    );
}

#[test]
fn mirror_flow_copies_the_flow_that_tipped_the_decision_for_a_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfnscore3", |config| {
        config.mirror.sessions = vec![MirrorSessionConfig {
            name: "analyzer".into(),
            direction: MirrorDirection::Received,
            destination: MirrorDestinationConfig::Gre {
                source: addr("198.18.2.1"),
                remote: addr(C2),
            },
            snap_length: 0,
            sample_every: 1,
            packets_per_second: 0,
            queue: 64,
        }];
        config.scoring.action = ScoringAction::MirrorFlow {
            session: "analyzer".into(),
        };
    });
    let files = tempfile::tempdir().expect("temporary folder");
    let watched = files.path().join("events.jsonl");
    let _watcher = s.watch(&watched, 30);
    std::thread::sleep(Duration::from_secs(1));
    let detected = std::thread::scope(|scope| {
        let scan = scope.spawn(|| nmap_scan(&s.lab, "c1", addr(SRV), ScanKind::Syn, 1..=300));
        let detected = until(DETECTION_MAX, || {
            events(&watched, "ThreatDetected")
                .into_iter()
                .find(|e| e["source"] == C1)
        })
        .expect("c1's scan is acted on while it runs");
        scan.join().expect("scan thread").expect("nmap runs");
        detected
    });
    assert_eq!(detected["action"], "mirror_flow");
    let listed = s.json(&["mirror", "list"]);
    let policy = listed["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|listed| &listed["policy"])
        .find(|policy| policy["id"] == detected["entry_id"])
        .unwrap_or_else(|| panic!("the policy is listed: {listed}"))
        .clone();
    assert_eq!(policy["session"], "analyzer");
    assert_eq!(policy["source_prefixes"][0], format!("{C1}/32"));
    assert_eq!(policy["destination_prefixes"][0], format!("{SRV}/32"));
    assert_eq!(policy["protocol"], 6);
    assert_eq!(
        policy["destination_ports"][0]["first"],
        detected["flow_dport"]
    );
    assert_eq!(
        s.connect("c1"),
        Connect::Connected,
        "mirroring cuts nothing off"
    );
}
