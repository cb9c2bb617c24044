//! End to end: every traffic scenario of `vfn_lab::scenarios` through a running `vfn` (the lab
//! config, everything allowed), briefly, with what each tool reports checked: curl gets whole
//! files, nmap finds srv's HTTP and SSH ports with both scan kinds, every ssh attempt is refused
//! by the server, hping3 sends its count, socat moves every byte, and a normal client's mix
//! succeeds. Needs root, curl, python3, openssh-server, sshpass, nmap, hping3 and socat; the
//! tests run one at a time and fail loudly without them.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vfn_lab::scenarios::{self, HttpServer, ScanKind, SshServer};
use vfn_lab::{Lab, RunningVfn, TopologySpec};

static SERIAL: Mutex<()> = Mutex::new(());
const READY: Duration = Duration::from_secs(30);
const SRV: &str = "198.18.3.2";
const HTTP_PORT: u16 = 80;
const SINK_PORT: u16 = 9000;

fn addr(text: &str) -> IpAddr {
    text.parse().expect("address")
}

#[test]
fn every_scenario_runs_through_the_router() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let prefix = "vfnscn";
    vfn_lab::remove_stale(prefix).expect("remove namespaces of crashed runs");
    let lab = Lab::create(&TopologySpec::default_lab(prefix)).expect("lab");
    let config = vfn_lab::lab_config(lab.topology()).expect("config");
    let binary = vfn_lab::vfn_binary().expect("vfn binary");
    let vfn = RunningVfn::start(&lab, &binary, &config, READY).expect("router starts");
    let http = HttpServer::start(&lab, "srv", HTTP_PORT).expect("http.server starts");
    let _ssh = SshServer::start(&lab, "srv").expect("sshd starts");
    let srv = addr(SRV);
    assert_eq!(http.addr(), srv);

    let paths: Vec<&str> = scenarios::HTTP_FILES.iter().map(|file| file.path).collect();
    let gets = scenarios::http_gets(
        &lab,
        "c1",
        srv,
        HTTP_PORT,
        &paths,
        8,
        Duration::from_millis(50),
    )
    .expect("curl runs");
    assert_eq!((gets.ok, gets.failed), (8, 0), "{gets:?}");
    let missing = scenarios::http_gets(
        &lab,
        "c1",
        srv,
        HTTP_PORT,
        &["no-such-file"],
        1,
        Duration::ZERO,
    )
    .expect("curl runs");
    assert_eq!((missing.ok, missing.failed), (0, 1), "a 404 is no success");

    for (kind, from) in [(ScanKind::Syn, "c1"), (ScanKind::Connect, "c2")] {
        let open = scenarios::nmap_scan(&lab, from, srv, kind, 1..=1024).expect("nmap runs");
        assert_eq!(open, vec![22, HTTP_PORT], "{kind:?} scan from {from}");
    }

    let attempts = scenarios::ssh_login_attempts(&lab, "c1", srv, 6, 3).expect("ssh runs");
    assert_eq!(
        (attempts.made, attempts.refused),
        (6, 6),
        "every attempt reaches sshd and is refused: {attempts:?}"
    );

    let flood = scenarios::syn_flood(&lab, "c1", srv, HTTP_PORT, 300, 1000).expect("hping3 runs");
    assert_eq!(flood.sent, 300, "{flood:?}");
    assert!(flood.replies > 0, "srv answers the SYNs: {flood:?}");

    let bytes = 4 << 20;
    let moved = scenarios::exfiltrate(&lab, "c1", srv, SINK_PORT, bytes).expect("socat runs");
    assert_eq!((moved.sent, moved.received), (bytes, bytes));

    let normal =
        scenarios::normal_client(&lab, "c2", srv, HTTP_PORT, Duration::from_secs(6), 0x6332)
            .expect("normal client runs");
    assert!(
        normal.http_gets.ok > 0 && normal.succeeded() >= 5 && normal.failed() == 0,
        "{normal:?}"
    );

    let counters = vfn.counters().expect("counters");
    assert!(
        counters.total("vfn_port_packets_total", &[("direction", "rx")]) > 10_000,
        "the traffic went through the router"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
