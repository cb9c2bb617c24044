//! End to end: the control API of a running `vfn`, driven by `vfnctl` (the real CLI, over the
//! router's Unix socket), with real traffic between lab namespaces showing what is in force.
//! Needs root; the tests run one at a time and fail loudly without root.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vfn_config::{Config, PolicySource};
use vfn_lab::{Connect, Lab, RunningVfn, TopologySpec};
use vfn_rules::{Action, AddressMatch, DefaultAction, PortRange, Protocol, RuleSetSpec, RuleSpec};

static SERIAL: Mutex<()> = Mutex::new(());
const READY: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(1500);

const C1: &str = "198.18.1.2";
const SRV: &str = "198.18.3.2";

struct Setup {
    vfn: RunningVfn,
    lab: Lab,
    config: Config,
    /// Policy files the test writes for `vfnctl ruleset apply`.
    files: tempfile::TempDir,
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn host(text: &str) -> AddressMatch {
    AddressMatch {
        prefixes: vec![ipnet::IpNet::from(addr(text))],
        ..AddressMatch::default()
    }
}

fn web_rule(id: &str, action: Action) -> RuleSpec {
    RuleSpec {
        source: host(C1),
        destination: host(SRV),
        protocol: Some(Protocol::Tcp),
        destination_ports: vec![PortRange::single(8080)],
        ..RuleSpec::new(id, action)
    }
}

/// Allows c1 to reach the server's port 8080, denies the rest.
fn allow_web(version: &str) -> RuleSetSpec {
    RuleSetSpec {
        version: version.into(),
        default_action: DefaultAction::Deny,
        rules: vec![web_rule("web", Action::Allow)],
        ..RuleSetSpec::default()
    }
}

fn deny_all(version: &str) -> RuleSetSpec {
    RuleSetSpec {
        version: version.into(),
        default_action: DefaultAction::Deny,
        ..RuleSetSpec::default()
    }
}

/// A set the compiler refuses: its rule names a segment that does not exist.
fn unknown_segment(version: &str) -> RuleSetSpec {
    RuleSetSpec {
        rules: vec![RuleSpec {
            destination: AddressMatch {
                segments: vec!["nowhere".into()],
                ..AddressMatch::default()
            },
            ..RuleSpec::new("x", Action::Drop)
        }],
        ..deny_all(version)
    }
}

/// A lab and a router with `spec` in force; `tune` adjusts the config, and may write files the
/// config names in the folder it is given.
fn setup(prefix: &str, spec: RuleSetSpec, tune: impl FnOnce(&mut Config, &Path)) -> Setup {
    vfn_lab::remove_stale(prefix).expect("remove namespaces of crashed runs");
    let files = tempfile::tempdir().expect("temp dir");
    let lab = Lab::create(&TopologySpec::default_lab(prefix)).expect("lab");
    let mut config = vfn_lab::lab_config(lab.topology()).expect("config");
    config.policy = Some(PolicySource::Inline(spec));
    tune(&mut config, files.path());
    let vfn = RunningVfn::start(&lab, &vfn_binary(), &config, READY).expect("router starts");
    Setup {
        vfn,
        lab,
        config,
        files,
    }
}

fn vfn_binary() -> PathBuf {
    vfn_lab::vfn_binary().expect("vfn binary")
}

impl Setup {
    fn web(&self) -> Connect {
        let (client, server) = (
            self.lab.netns("c1").expect("client"),
            self.lab.netns("srv").expect("server"),
        );
        vfn_lab::tcp_connect(client, server, addr(SRV), 8080, true, SHORT).expect("connect runs")
    }

    /// Runs `vfnctl --server SOCKET ARGS` as root.
    fn vfnctl(&self, args: &[&str]) -> Output {
        self.vfnctl_as(None, args)
    }

    /// Runs vfnctl as `uid` (and the same gid) when given, through setpriv.
    fn vfnctl_as(&self, uid: Option<u32>, args: &[&str]) -> Output {
        let binary = vfn_lab::vfnctl_binary().expect("vfnctl binary");
        let mut command = match uid {
            None => Command::new(&binary),
            Some(uid) => {
                // A copy others may run: the build folder may be closed to them.
                let copy = self.files.path().join("vfnctl");
                if !copy.exists() {
                    std::fs::copy(&binary, &copy).expect("copy vfnctl");
                }
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(copy);
                command
            }
        };
        command
            .arg("--server")
            .arg(self.vfn.api_socket())
            .args(args)
            .output()
            .expect("vfnctl runs")
    }

    /// Writes `spec` as a policy file for vfnctl.
    fn policy_file(&self, name: &str, spec: &RuleSetSpec) -> String {
        let path = self.files.path().join(name);
        std::fs::write(&path, vfn_config::policy_to_toml(spec)).expect("write policy");
        path.display().to_string()
    }

    fn rule_set(&self) -> serde_json::Value {
        json(&self.vfnctl(&["-o", "json", "ruleset", "get"]))
    }
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "vfnctl failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "vfnctl should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&succeeded(output)).expect("JSON")
}

#[test]
fn apply_dry_run_compare_and_set_and_a_refused_set() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfnapi1", allow_web("v1"), |_, _| {});
    assert_eq!(s.rule_set()["rule_set"]["version"], "v1");
    assert_eq!(s.rule_set()["applied_by"], "config");
    assert_eq!(s.web(), Connect::Connected);

    let deny = s.policy_file("deny.toml", &deny_all("v2"));
    let dry = succeeded(&s.vfnctl(&["ruleset", "apply", &deny, "--dry-run"]));
    assert!(dry.contains("dry run") && dry.contains("- web"), "{dry}");
    assert_eq!(
        s.rule_set()["rule_set"]["version"],
        "v1",
        "a dry run changes nothing"
    );
    assert_eq!(s.web(), Connect::Connected);

    let stale = failed(&s.vfnctl(&["ruleset", "apply", &deny, "--expect", "v0"]));
    assert!(stale.contains("FailedPrecondition"), "{stale}");
    assert_eq!(
        s.web(),
        Connect::Connected,
        "a stale writer changes nothing"
    );

    // Two problems the compiler finds, each reported with its rule and field.
    let mut bad = allow_web("v3");
    bad.rules[0].destination = AddressMatch {
        segments: vec!["nowhere".into()],
        ..AddressMatch::default()
    };
    bad.rules.push(RuleSpec {
        protocol: Some(Protocol::Tcp),
        destination_ports: vec![PortRange {
            first: 9000,
            last: 8000,
        }],
        ..RuleSpec::new("inverted", Action::Drop)
    });
    let refused = failed(&s.vfnctl(&["ruleset", "apply", &s.policy_file("bad.toml", &bad)]));
    assert!(refused.contains("InvalidArgument"), "{refused}");
    assert!(
        refused.contains("rules[0] (id web).destination") && refused.contains("nowhere"),
        "{refused}"
    );
    assert!(refused.contains("rules[1] (id inverted)"), "{refused}");
    assert_eq!(s.rule_set()["rule_set"]["version"], "v1", "refused whole");
    assert_eq!(s.web(), Connect::Connected);

    let applied = json(&s.vfnctl(&["-o", "json", "ruleset", "apply", &deny, "--expect", "v1"]));
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["version_before"], "v1");
    assert_eq!(applied["diff"]["removed"][0], "web");
    assert_eq!(
        s.web(),
        Connect::TimedOut,
        "the new set is live when apply answers"
    );

    // What `ruleset get` prints is a policy file that reads back to the set applied.
    let shown = succeeded(&s.vfnctl(&["ruleset", "get"]));
    let path = s.files.path().join("shown.toml");
    std::fs::write(&path, &shown).expect("write");
    assert_eq!(
        vfn_config::load_policy_file(&path).expect("a policy file"),
        deny_all("v2")
    );

    // The counters API sums what the workers counted: the refused SYNs met the default action.
    let counters = json(&s.vfnctl(&["-o", "json", "rules", "counters"]));
    assert_eq!(counters["version"], "v2");
    assert!(
        counters["default_action"]["packets"].as_u64().unwrap_or(0) >= 1,
        "{counters}"
    );
    // The Prometheus endpoint, in the router's namespace, says the same.
    let scrape = s
        .lab
        .exec(vfn_lab::ROUTER_ROLE, &[])
        .expect("router namespace")
        .args([
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9469/metrics', timeout=5).read().decode())",
        ])
        .output()
        .expect("scrape");
    let scraped = vfn_lab::Counters::parse(&String::from_utf8_lossy(&scrape.stdout));
    assert!(
        scraped.total("vfn_rule_packets_total", &[("rule", "default")]) >= 1,
        "{}",
        String::from_utf8_lossy(&scrape.stdout)
    );
    assert_eq!(
        scraped.total("vfn_rule_set_apply_duration_seconds_count", &[]),
        2,
        "two sets applied: v1 at start, v2"
    );
    let stats = json(&s.vfnctl(&["-o", "json", "stats"]));
    assert!(
        stats["workers"][0]["bursts"].as_u64() > Some(0),
        "the worker counted its bursts: {stats}"
    );
    assert!(
        stats["ports"]
            .as_array()
            .is_some_and(|ports| ports.iter().any(|p| p["rx_packets"].as_u64() > Some(0))),
        "{stats}"
    );
}

#[test]
fn roles_come_from_the_peer_uid() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const READER: u32 = 65_534;
    const STRANGER: u32 = 65_533;
    let s = setup("vfnapi2", allow_web("v1"), |config, _| {
        config.api.readers = vec![READER];
        // Open to every local user, so that the roles alone decide.
        config.api.socket_mode = 0o666;
    });
    let got = json(&s.vfnctl_as(Some(READER), &["-o", "json", "ruleset", "get"]));
    assert_eq!(got["rule_set"]["version"], "v1", "a reader reads");
    let deny = s.policy_file("deny.toml", &deny_all("v2"));
    std::fs::set_permissions(
        s.files.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let refused = failed(&s.vfnctl_as(Some(READER), &["ruleset", "apply", &deny]));
    assert!(
        refused.contains("PermissionDenied") && refused.contains("reader role"),
        "{refused}"
    );
    let refused = failed(&s.vfnctl_as(
        Some(READER),
        &["dynamic", "add", C1, "--quarantine", "--ttl", "5s"],
    ));
    assert!(refused.contains("PermissionDenied"), "{refused}");
    let stranger = failed(&s.vfnctl_as(Some(STRANGER), &["ruleset", "get"]));
    assert!(
        stranger.contains("PermissionDenied") && stranger.contains("no role"),
        "{stranger}"
    );
    assert_eq!(s.rule_set()["rule_set"]["version"], "v1", "nothing changed");
    assert_eq!(s.web(), Connect::Connected);
}

#[test]
fn the_default_socket_mode_keeps_other_users_out() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfnapi3", allow_web("v1"), |config, _| {
        config.api.readers = vec![65_534];
    });
    std::fs::set_permissions(
        s.files.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let mode = std::fs::metadata(s.vfn.api_socket())
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("socket");
    assert_eq!(mode, 0o660);
    let refused = failed(&s.vfnctl_as(Some(65_534), &["ruleset", "get"]));
    assert!(refused.contains("connecting to"), "{refused}");
}

#[test]
fn a_restart_comes_back_with_the_persisted_policy_and_the_audit_chain_holds() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = setup("vfnapi4", allow_web("v1"), |_, _| {});
    let deny = s.policy_file("deny.toml", &deny_all("v2"));
    succeeded(&s.vfnctl(&["ruleset", "apply", &deny]));
    let bad = s.policy_file("bad.toml", &unknown_segment("v3"));
    failed(&s.vfnctl(&["ruleset", "apply", &bad]));
    assert_eq!(s.web(), Connect::TimedOut);

    // The config still says v1 (allow); the persisted v2 (deny) wins.
    let config = s.config.clone();
    s.vfn
        .restart(&s.lab, &vfn_binary(), &config, READY)
        .expect("restart");
    let got = s.rule_set();
    assert_eq!(got["rule_set"]["version"], "v2", "{got}");
    assert_eq!(got["applied_by"], "uid:0");
    assert_eq!(
        s.web(),
        Connect::TimedOut,
        "forwards by the persisted policy"
    );

    let state = s.vfn.state_dir();
    let state_arg = state.display().to_string();
    let verified = succeeded(&s.vfnctl(&["audit", "verify", "--state-dir", &state_arg]));
    // config v1 at start, v2 applied, v3 refused.
    assert!(
        verified.contains("intact: 3 entries") && verified.contains("as persisted"),
        "{verified}"
    );
    let log_path = state.join("audit.jsonl");
    let log = std::fs::read_to_string(&log_path).expect("audit log");
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    assert_eq!(entries[1]["principal"], "uid:0");
    assert_eq!(entries[1]["action"], "ApplyRuleSet");
    assert_eq!(entries[1]["version_before"], "v1");
    assert_eq!(entries[1]["version_after"], "v2");
    assert_eq!(entries[1]["result"], "ok");
    assert_eq!(entries[2]["result"], "refused");
    assert!(
        entries[2]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("nowhere")),
        "{log}"
    );

    let edited = log.replacen("\"uid:0\"", "\"uid:1000\"", 1);
    std::fs::write(&log_path, &edited).expect("edit");
    let refused = failed(&s.vfnctl(&["audit", "verify", "--state-dir", &state_arg]));
    assert!(
        refused.contains("line 2") && refused.contains("edited"),
        "{refused}"
    );

    let truncated: String = log.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log_path, truncated).expect("truncate");
    let refused = failed(&s.vfnctl(&["audit", "verify", "--state-dir", &state_arg]));
    assert!(refused.contains("ends at entry 2"), "{refused}");
}

/// Waits until `condition` holds, checking every 100 ms; returns when it first held.
fn until(deadline: Duration, mut condition: impl FnMut() -> bool) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if condition() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_quarantine_holds_for_its_time_to_live_then_expires() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfnapi5", allow_web("v1"), |_, _| {});
    assert_eq!(s.web(), Connect::Connected);
    let ttl = Duration::from_secs(4);
    let added_at = Instant::now();
    let added = json(&s.vfnctl(&[
        "-o",
        "json",
        "dynamic",
        "add",
        C1,
        "--quarantine",
        "--ttl",
        "4s",
        "--reason",
        "test",
    ]));
    let id = added["id"].as_u64().expect("an id");
    let listed = json(&s.vfnctl(&["-o", "json", "dynamic", "list"]));
    assert_eq!(listed["entries"][0]["id"].as_u64(), Some(id), "{listed}");
    assert_eq!(listed["entries"][0]["host"], C1);
    assert_eq!(s.web(), Connect::TimedOut, "quarantined");
    assert!(
        added_at.elapsed() + Duration::from_millis(500) < ttl,
        "the check ran early enough"
    );
    // Half a second before its expiry the entry is still listed; a second after, it is gone.
    let before_expiry = ttl - Duration::from_millis(500);
    std::thread::sleep(before_expiry.saturating_sub(added_at.elapsed()));
    let listed = json(&s.vfnctl(&["-o", "json", "dynamic", "list"]));
    assert_eq!(listed["entries"][0]["id"].as_u64(), Some(id), "{listed}");
    std::thread::sleep((ttl + Duration::from_secs(1)).saturating_sub(added_at.elapsed()));
    let listed = json(&s.vfnctl(&["-o", "json", "dynamic", "list"]));
    assert!(
        listed["entries"].as_array().is_none_or(Vec::is_empty),
        "{listed}"
    );
    assert_eq!(s.web(), Connect::Connected, "the quarantine expired");

    // Removed by hand before its time.
    let again = json(&s.vfnctl(&[
        "-o",
        "json",
        "dynamic",
        "add",
        C1,
        "--quarantine",
        "--ttl",
        "60s",
    ]));
    assert_eq!(s.web(), Connect::TimedOut);
    let id = again["id"].as_u64().expect("an id").to_string();
    succeeded(&s.vfnctl(&["dynamic", "rm", &id]));
    assert!(
        until(Duration::from_secs(3), || s.web() == Connect::Connected).is_some(),
        "removed entries stop at once"
    );
    let missing = failed(&s.vfnctl(&["dynamic", "rm", &id]));
    assert!(missing.contains("NotFound"), "{missing}");
}

/// The Python of the virtual environment `tests/bootstrap.sh` makes with the pinned packages of
/// `tests/python/requirements.txt` (`$VFN_PYTHON` overrides).
fn python() -> PathBuf {
    let python = std::env::var_os("VFN_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python3"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "{} is missing: tests/bootstrap.sh test makes it (or set VFN_PYTHON)",
        python.display()
    );
    python
}

#[test]
fn an_independent_python_client_drives_the_api() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfnapi6", deny_all("v0"), |_, _| {});
    assert_eq!(s.web(), Connect::TimedOut);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(python())
        .arg(root.join("tests/python/api_client.py"))
        .arg(root.join("control/proto"))
        .arg(s.vfn.api_socket())
        .args([C1, SRV])
        .output()
        .expect("python runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains("ok: BadRequest names the rule"),
        "{printed}"
    );
    // What the Python client applied is in force: the web flow passes now.
    assert_eq!(s.rule_set()["rule_set"]["version"], "py-1");
    assert_eq!(s.web(), Connect::Connected);
}

#[test]
fn watchers_see_rule_sets_dynamic_entries_and_drops() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("vfnapi7", allow_web("v1"), |_, _| {});
    let watched = s.files.path().join("watch.jsonl");
    let mut watcher = std::process::Command::new(vfn_lab::vfnctl_binary().expect("vfnctl"))
        .arg("--server")
        .arg(s.vfn.api_socket())
        .args(["-o", "json", "watch", "--seconds", "30"])
        .stdout(std::fs::File::create(&watched).expect("watch file"))
        .spawn()
        .expect("watcher runs");
    let seen = |kind: &str| {
        std::fs::read_to_string(&watched)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&format!("\"{kind}\"")))
            .count()
    };
    // The watcher subscribes once its call arrives: apply until it has seen one.
    let first = s.policy_file("v2.toml", &allow_web("v2"));
    let second = s.policy_file("v3.toml", &allow_web("v3"));
    let subscribed = until(Duration::from_secs(10), || {
        succeeded(&s.vfnctl(&["ruleset", "apply", &first]));
        succeeded(&s.vfnctl(&["ruleset", "apply", &second]));
        std::thread::sleep(Duration::from_millis(200));
        seen("RuleSetApplied") > 0
    });
    assert!(subscribed.is_some(), "the watcher saw an applied rule set");

    let bad = s.policy_file("bad.toml", &unknown_segment("bad"));
    failed(&s.vfnctl(&["ruleset", "apply", &bad]));
    succeeded(&s.vfnctl(&["dynamic", "add", C1, "--quarantine", "--ttl", "3s"]));
    // Quarantined packets are dropped and reported within a second or two.
    assert_eq!(s.web(), Connect::TimedOut);
    let reported = until(Duration::from_secs(8), || {
        seen("RuleSetRefused") > 0
            && seen("DynamicEntryAdded") > 0
            && seen("DynamicEntryExpired") > 0
            && std::fs::read_to_string(&watched)
                .unwrap_or_default()
                .contains("\"reason\":\"quarantined\"")
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(
        reported.is_some(),
        "{}",
        std::fs::read_to_string(&watched).unwrap_or_default()
    );
}

const WRITER_TOKEN: &str = "writer-secret-0123456789abcdef";
const READER_TOKEN: &str = "reader-secret-0123456789abcdef";
const API_TCP: &str = "127.0.0.1:50051";

/// Listens on loopback TCP too, with a writer and a reader token.
fn with_tcp(config: &mut Config, files: &Path) {
    let mut tokens = Vec::new();
    for (name, role, secret) in [
        ("dse", vfn_config::ApiRole::Writer, WRITER_TOKEN),
        ("grafana", vfn_config::ApiRole::Reader, READER_TOKEN),
    ] {
        let file = files.join(format!("{name}.token"));
        std::fs::write(&file, format!("{secret}\n")).expect("token file");
        tokens.push(vfn_config::ApiToken {
            name: name.into(),
            role,
            file,
        });
    }
    config.api.tcp = Some(API_TCP.parse().expect("address"));
    config.api.tokens = tokens;
}

/// Makes a CA, a server certificate for localhost and a client certificate, with openssl.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=vfn test CA",
            ],
        ]
        .concat(),
    );
    // A client that signed its own certificate: no CA of the router's vouches for it.
    openssl(
        &[
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout",
                "stranger.key",
                "-out",
                "stranger.pem",
                "-days",
                "2",
                "-subj",
                "/CN=stranger",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=clientAuth",
            ],
        ]
        .concat(),
    );
    for (name, extensions) in [
        (
            "server",
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).expect("extensions");
        let (keyout, csr, pem, ext, subject) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN={name}"),
        );
        openssl(
            &[
                &["req"][..],
                &key,
                &["-keyout", &keyout, "-out", &csr, "-subj", &subject],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

impl Setup {
    /// Runs vfnctl in the router's namespace (where its loopback TCP listener is).
    fn vfnctl_in_router(&self, args: &[&str]) -> Output {
        self.lab
            .exec(vfn_lab::ROUTER_ROLE, &[])
            .expect("router namespace")
            .arg(vfn_lab::vfnctl_binary().expect("vfnctl"))
            .args(args)
            .output()
            .expect("vfnctl runs")
    }

    fn token_file(&self, secret: &str) -> String {
        let path = self
            .files
            .path()
            .join(format!("client-{}.token", &secret[..6]));
        std::fs::write(&path, secret).expect("token");
        path.display().to_string()
    }
}

#[test]
fn tcp_needs_a_bearer_token_and_tls_a_client_certificate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = setup("vfnapi8", allow_web("v1"), with_tcp);
    let http = format!("http://{API_TCP}");
    let writer = s.token_file(WRITER_TOKEN);
    let reader = s.token_file(READER_TOKEN);
    let wrong = s.token_file("wrong-secret-0123456789abcdef");

    let refused = failed(&s.vfnctl_in_router(&["--server", &http, "ruleset", "get"]));
    assert!(refused.contains("Unauthenticated"), "{refused}");
    let refused =
        failed(&s.vfnctl_in_router(&["--server", &http, "--token-file", &wrong, "ruleset", "get"]));
    assert!(refused.contains("Unauthenticated"), "{refused}");
    let got = succeeded(&s.vfnctl_in_router(&[
        "--server",
        &http,
        "--token-file",
        &reader,
        "-o",
        "json",
        "ruleset",
        "get",
    ]));
    assert!(got.contains("\"v1\""), "{got}");
    let deny = s.policy_file("deny.toml", &deny_all("v2"));
    let refused = failed(&s.vfnctl_in_router(&[
        "--server",
        &http,
        "--token-file",
        &reader,
        "ruleset",
        "apply",
        &deny,
    ]));
    assert!(refused.contains("PermissionDenied"), "{refused}");
    succeeded(&s.vfnctl_in_router(&[
        "--server",
        &http,
        "--token-file",
        &writer,
        "ruleset",
        "apply",
        &deny,
    ]));
    assert_eq!(s.rule_set()["applied_by"], "token:dse");
    assert_eq!(s.web(), Connect::TimedOut);

    // The same listener under TLS: a client certificate from the configured CA is required.
    let dir = s.files.path().to_owned();
    certificates(&dir);
    let mut config = s.config.clone();
    config.api.tls = Some(vfn_config::ApiTls {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: dir.join("ca.pem"),
    });
    s.vfn
        .restart(&s.lab, &vfn_binary(), &config, READY)
        .expect("restart with TLS");
    let https = format!("https://localhost:{}", &API_TCP[API_TCP.len() - 5..]);
    let file = |name: &str| dir.join(name).display().to_string();
    let tls = [
        "--server",
        &https,
        "--token-file",
        &writer,
        "--tls-ca",
        &file("ca.pem"),
        "--tls-cert",
        &file("client.pem"),
        "--tls-key",
        &file("client.key"),
    ];
    let got =
        succeeded(&s.vfnctl_in_router(&[&tls[..], &["-o", "json", "ruleset", "get"]].concat()));
    assert!(
        got.contains("\"v2\""),
        "the persisted set, over mTLS: {got}"
    );
    let foreign = [
        "--server",
        &https,
        "--token-file",
        &writer,
        "--tls-ca",
        &file("ca.pem"),
        "--tls-cert",
        &file("stranger.pem"),
        "--tls-key",
        &file("stranger.key"),
    ];
    failed(&s.vfnctl_in_router(&[&foreign[..], &["ruleset", "get"]].concat()));
    // Plain HTTP to the TLS listener gets nowhere.
    failed(&s.vfnctl_in_router(&["--server", &http, "--token-file", &writer, "ruleset", "get"]));
}

fn pings(s: &Setup, to: &str) -> bool {
    let opts = vfn_lab::PingOpts {
        interval: Duration::from_millis(50),
        deadline: Duration::from_secs(2),
        ..vfn_lab::PingOpts::default()
    };
    vfn_lab::ping(s.lab.netns("c1").expect("c1"), addr(to), 2, &opts)
        .expect("ping runs")
        .received
        > 0
}

#[test]
fn routes_and_neighbours_change_at_runtime_and_persist() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const REMOTE: &str = "198.19.0.1";
    let allow_all = RuleSetSpec {
        version: "open".into(),
        default_action: DefaultAction::Allow,
        ..RuleSetSpec::default()
    };
    let mut s = setup("vfnapi9", allow_all, |_, _| {});
    assert!(
        pings(&s, REMOTE),
        "the lab's route to the server's remote address"
    );
    let routes = json(&s.vfnctl(&["-o", "json", "routes", "list"]));
    let listed = routes["routes"].as_array().cloned().unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|r| r["prefix"] == "198.19.0.1/32" && r["via"] == "198.18.3.2"),
        "{routes}"
    );
    assert!(
        listed.iter().any(|r| r["prefix"] == "198.18.1.0/24"
            && r["connected"] == true
            && r["interface"] == "p0"),
        "{routes}"
    );

    succeeded(&s.vfnctl(&["routes", "del", "198.19.0.1/32"]));
    assert!(!pings(&s, REMOTE), "no route after the delete");
    let refused = failed(&s.vfnctl(&["routes", "add", "198.19.0.0/24", "--via", "198.18.9.9"]));
    assert!(
        refused.contains("InvalidArgument") && refused.contains("not on-link"),
        "{refused}"
    );
    let refused = failed(&s.vfnctl(&["routes", "add", "198.19.0.1/24", "--via", "198.18.3.2"]));
    assert!(refused.contains("host bits"), "{refused}");

    // The change outlives a restart: the config still has the route, the persisted list wins.
    let config = s.config.clone();
    s.vfn
        .restart(&s.lab, &vfn_binary(), &config, READY)
        .expect("restart");
    assert!(!pings(&s, REMOTE), "still deleted after the restart");
    succeeded(&s.vfnctl(&["routes", "add", "198.19.0.1/32", "--via", "198.18.3.2"]));
    assert!(pings(&s, REMOTE), "routed again");

    let neighbours = json(&s.vfnctl(&["-o", "json", "neighbours", "list"]));
    assert!(
        neighbours["neighbours"].as_array().is_some_and(|list| list
            .iter()
            .any(|n| n["address"] == "198.18.3.2" && n["state"] == "reachable")),
        "{neighbours}"
    );
    succeeded(&s.vfnctl(&[
        "neighbours",
        "add",
        "p0",
        "198.18.1.77",
        "02:00:5e:00:00:77",
    ]));
    let neighbours = json(&s.vfnctl(&["-o", "json", "neighbours", "list"]));
    assert!(
        neighbours["neighbours"].as_array().is_some_and(|list| list
            .iter()
            .any(|n| n["address"] == "198.18.1.77"
                && n["state"] == "static"
                && n["mac"] == "02:00:5e:00:00:77")),
        "{neighbours}"
    );
    let refused = failed(&s.vfnctl(&[
        "neighbours",
        "add",
        "p0",
        "198.18.2.77",
        "02:00:5e:00:00:77",
    ]));
    assert!(refused.contains("not on-link"), "{refused}");
    succeeded(&s.vfnctl(&["neighbours", "del", "p0", "198.18.1.77"]));
    let neighbours = json(&s.vfnctl(&["-o", "json", "neighbours", "list"]));
    assert!(
        !neighbours.to_string().contains("198.18.1.77"),
        "{neighbours}"
    );
    let audit = std::fs::read_to_string(s.vfn.state_dir().join("audit.jsonl")).expect("audit");
    for action in ["DeleteRoute", "AddRoute", "AddNeighbour", "DeleteNeighbour"] {
        assert!(
            audit.contains(&format!("\"action\":\"{action}\"")),
            "{action}: {audit}"
        );
    }
}

#[test]
fn flows_and_captures_show_what_passes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut web = allow_web("v1");
    // Pings pass too, so that the capture sees both directions.
    web.rules.push(RuleSpec {
        protocol: Some(Protocol::Icmp {
            icmp_type: None,
            code: None,
        }),
        ..RuleSpec::new("ping", Action::Allow)
    });
    // And a UDP stream, whose flow stays open (its record holds every datagram).
    web.rules.push(RuleSpec {
        protocol: Some(Protocol::Udp),
        destination_ports: vec![PortRange::single(7400)],
        ..RuleSpec::new("stream", Action::Allow)
    });
    let s = setup("vfnapi10", web, |_, _| {});
    assert_eq!(s.web(), Connect::Connected);
    let flows = json(&s.vfnctl(&["-o", "json", "flows", "--port", "8080"]));
    let found = flows["flows"].as_array().cloned().unwrap_or_default();
    assert!(
        found.iter().any(|f| f["source"] == C1
            && f["destination"] == SRV
            && f["destination_port"] == 8080
            && f["protocol"] == 6
            && f["rule"] == "web"
            && f["ingress"] == "p0"),
        "{flows}"
    );
    let stream = vfn_lab::udp_flood(
        s.lab.netns("c1").expect("c1"),
        s.lab.netns("srv").expect("srv"),
        addr(SRV),
        7400,
        200,
        Duration::from_millis(500),
    )
    .expect("flood runs");
    let flows = json(&s.vfnctl(&["-o", "json", "flows", "--port", "7400"]));
    let flow = &flows["flows"][0];
    assert_eq!(flow["rule"], "stream", "{flows}");
    // Each datagram is 20 + 8 + 64 bytes of IP; none was answered.
    assert_eq!(flow["packets"].as_u64(), Some(stream.received), "{flows}");
    assert_eq!(
        flow["bytes"].as_u64(),
        Some(stream.received * 92),
        "{flows}"
    );
    let none = json(&s.vfnctl(&["-o", "json", "flows", "--prefix", "198.18.2.0/24"]));
    assert_eq!(none["matched"].as_u64(), Some(0), "{none}");

    // Pings from c1: on p0 the router receives each request and sends each reply, so any six
    // frames in a row are three of each.
    let pcap = s.files.path().join("p0.pcap");
    let mut capture = Command::new(vfn_lab::vfnctl_binary().expect("vfnctl"))
        .arg("--server")
        .arg(s.vfn.api_socket())
        .args([
            "capture",
            "p0",
            "--protocol",
            "1",
            "-c",
            "6",
            "--seconds",
            "15",
            "-w",
        ])
        .arg(&pcap)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("capture runs");
    // The capture starts when its call arrives: ping until it has its six frames.
    let done = until(Duration::from_secs(12), || {
        pings(&s, SRV);
        matches!(capture.try_wait(), Ok(Some(_)))
    });
    if done.is_none() {
        let _ = capture.kill();
    }
    let finished = capture.wait_with_output().expect("capture ends");
    assert!(
        done.is_some() && finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stdout)
    );
    let fields = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args([
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
            "-e",
            "ip.ttl",
        ])
        .output()
        .expect("tshark runs");
    assert!(
        fields.status.success(),
        "{}",
        String::from_utf8_lossy(&fields.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&fields.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    // Requests as received (TTL 64 from c1), replies as sent (TTL 63 after the router).
    let requests = lines
        .iter()
        .filter(|l| *l == &format!("{C1}\t{SRV}\t8\t64"))
        .count();
    let replies = lines
        .iter()
        .filter(|l| *l == &format!("{SRV}\t{C1}\t0\t63"))
        .count();
    assert_eq!((requests, replies), (3, 3), "{lines:?}");
}

#[test]
fn a_start_without_policy_fails_closed_when_told_logs_json_and_sighup_applies_as_sighup() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    vfn_lab::remove_stale("vfnapi11").expect("remove namespaces of crashed runs");
    let lab = Lab::create(&TopologySpec::default_lab("vfnapi11")).expect("lab");
    let mut config = vfn_lab::lab_config(lab.topology()).expect("config");
    config.state.without_policy = vfn_config::WithoutPolicy::Drop;
    // This router logs JSON lines, for log collectors.
    let vfn = RunningVfn::start_with(
        &lab,
        &vfn_binary(),
        &config,
        &["--log-format", "json"],
        READY,
    )
    .expect("router starts");
    let s = Setup {
        vfn,
        lab,
        config,
        files: tempfile::tempdir().expect("temp dir"),
    };
    let log = s.vfn.log();
    // Every line of the router's own is JSON; libbpf and libxdp print to stderr themselves.
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| !line.starts_with("libbpf:") && !line.starts_with("libxdp:"))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "vfn running" && line["level"] == "INFO"),
        "{log}"
    );
    let got = s.rule_set();
    assert_eq!(got["rule_set"]["version"], "fail-closed", "{got}");
    assert_eq!(
        s.web(),
        Connect::TimedOut,
        "nothing is forwarded without a policy"
    );

    // SIGHUP applies the config's policy like ApplyRuleSet, as principal `sighup`.
    let mut config = s.config.clone();
    config.policy = Some(PolicySource::Inline(allow_web("from-file")));
    s.vfn.reload(&config).expect("SIGHUP");
    let applied = until(Duration::from_secs(5), || {
        s.rule_set()["rule_set"]["version"] == "from-file"
    });
    assert!(applied.is_some(), "{}", s.vfn.log());
    assert_eq!(s.rule_set()["applied_by"], "sighup");
    assert_eq!(s.web(), Connect::Connected);
    let audit = std::fs::read_to_string(s.vfn.state_dir().join("audit.jsonl")).expect("audit");
    assert!(
        audit.contains("\"principal\":\"sighup\",\"action\":\"reload\""),
        "{audit}"
    );
}
