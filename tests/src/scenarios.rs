//! Traffic made by real tools between lab hosts: the benign and hostile flows that the anomaly
//! models are trained on (`vfn-record-lab`) and tested against. Servers (python3's
//! `http.server`, OpenSSH's `sshd`, a `socat` sink) are guards that stop their process by PID on
//! drop; clients (`curl`, `sshpass` + `ssh`, `nmap`, `hping3`, `socat`) run one bounded command
//! at a time, and every function returns what happened as counts. A tool that is not installed
//! is a [`LabError::MissingTool`] naming its Debian package.
//!
//! Like the primitives of `traffic`, every function refuses destinations outside the lab ranges
//! and is bounded in count and time: each command has a time limit, and every loop a count.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::LabError;
use crate::address::ensure_lab_address;
use crate::command::{describe, run_bounded, run_checked};
use crate::interrupt::{check_interrupted, wait_until};
use crate::lab::{ChildGuard, Lab};
use crate::traffic::pattern::XorShift64;
use crate::traffic::{PingOpts, TRAFFIC_DEADLINE_MAX, deadline_from_now, ping, udp_exchange};

/// A program a scenario runs, and the Debian package that installs it.
#[derive(Clone, Copy, Debug)]
struct Tool {
    program: &'static str,
    package: &'static str,
}

const CURL: Tool = Tool {
    program: "curl",
    package: "curl",
};
const PYTHON3: Tool = Tool {
    program: "python3",
    package: "python3",
};
/// By its absolute path: sshd refuses to start otherwise (it re-executes itself).
const SSHD: Tool = Tool {
    program: "/usr/sbin/sshd",
    package: "openssh-server",
};
const SSH_KEYGEN: Tool = Tool {
    program: "ssh-keygen",
    package: "openssh-client",
};
const SSH: Tool = Tool {
    program: "ssh",
    package: "openssh-client",
};
const SSHPASS: Tool = Tool {
    program: "sshpass",
    package: "sshpass",
};
const NMAP: Tool = Tool {
    program: "nmap",
    package: "nmap",
};
const HPING3: Tool = Tool {
    program: "hping3",
    package: "hping3",
};
const SOCAT: Tool = Tool {
    program: "socat",
    package: "socat",
};
const SS: Tool = Tool {
    program: "ss",
    package: "iproute2",
};

/// The files an [`HttpServer`] serves, pseudo-random bytes each.
pub const HTTP_FILES: [HttpFile; 4] = [
    HttpFile {
        path: "1k.bin",
        bytes: 1024,
    },
    HttpFile {
        path: "20k.bin",
        bytes: 20 * 1024,
    },
    HttpFile {
        path: "200k.bin",
        bytes: 200 * 1024,
    },
    HttpFile {
        path: "2m.bin",
        bytes: 2 * 1024 * 1024,
    },
];
/// The port [`SshServer`] listens on.
pub const SSH_PORT: u16 = 22;
/// The password every [`ssh_login_attempts`] attempt gives; no login can succeed anyway.
const WRONG_PASSWORD: &str = "vfn-lab-wrong-password";

/// Bounds of the arguments.
pub const HTTP_GETS_MAX: u32 = 10_000;
pub const SSH_ATTEMPTS_MAX: u32 = 10_000;
pub const SSH_PARALLEL_MAX: u32 = 32;
pub const SYN_FLOOD_COUNT_MAX: u32 = 100_000;
/// hping3's `--flood` (no interval) is not offered: every flood is paced.
pub const SYN_FLOOD_INTERVAL_US_MIN: u32 = 100;
pub const EXFILTRATION_BYTES_MAX: usize = 1 << 30;
/// Longest pause between requests of [`http_gets`].
pub const HTTP_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// How long a server may take to listen.
const SERVER_READY_LIMIT: Duration = Duration::from_secs(10);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// curl's own `--max-time` for one request; the command is killed a little later.
const CURL_MAX_TIME: Duration = Duration::from_secs(20);
/// Time allowed beyond a tool's own limit for it to start and exit.
const EXIT_SLACK: Duration = Duration::from_secs(5);
/// ssh gives up connecting after this (`ConnectTimeout`); one attempt is killed after
/// [`SSH_ATTEMPT_LIMIT`].
const SSH_CONNECT_TIMEOUT_S: u32 = 3;
const SSH_ATTEMPT_LIMIT: Duration = Duration::from_secs(15);
/// nmap's `--host-timeout`; the command is killed [`EXIT_SLACK`] later.
const NMAP_HOST_TIMEOUT: Duration = Duration::from_secs(30);
/// What one exfiltration needs at least, and per MiB sent on top.
const EXFILTRATION_BASE_LIMIT: Duration = Duration::from_secs(10);
const EXFILTRATION_LIMIT_PER_MIB: Duration = Duration::from_secs(1);
/// How long the sink may take to see the end of the stream after the sender exits.
const SINK_DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Actions of one [`normal_client`] at most, whatever its duration.
const NORMAL_ACTIONS_MAX: u32 = 100_000;
/// Pause between a normal client's actions.
const NORMAL_PAUSE_MS: RangeInclusive<u64> = 50..=800;

/// Numbers the scratch directories of this process.
static SCRATCH_SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// One file an [`HttpServer`] serves: its path under the server's root and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpFile {
    pub path: &'static str,
    pub bytes: usize,
}

/// Successes and failures of one kind of exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: u32,
    pub failed: u32,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
    }

    pub fn total(&self) -> u32 {
        self.ok + self.failed
    }
}

/// What [`ssh_login_attempts`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SshAttempts {
    /// Attempts started.
    pub made: u32,
    /// Attempts the server answered "Permission denied": a password was tried and refused.
    pub refused: u32,
    /// Attempts that ended otherwise (no connection, killed at the time limit).
    pub other: u32,
}

/// How [`nmap_scan`] probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanKind {
    /// `-sS`: half-open, raw SYNs, each answered port reset by the scanner.
    Syn,
    /// `-sT`: full connections through the kernel.
    Connect,
}

/// What [`syn_flood`] sent, as hping3 counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodSent {
    pub sent: u32,
    /// Replies (SYN-ACK or RST) that came back.
    pub replies: u32,
}

/// What [`exfiltrate`] moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exfiltration {
    pub sent: usize,
    /// Counted by the sink.
    pub received: usize,
}

/// What [`normal_client`] did, per kind of exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NormalTraffic {
    /// HTTP GETs of a whole file.
    pub http_gets: Tally,
    /// Short runs of pings, every echo answered.
    pub pings: Tally,
    /// Short UDP exchanges, every datagram echoed.
    pub udp_exchanges: Tally,
    /// Small HTTP POSTs, answered with any status (`http.server` answers 501).
    pub uploads: Tally,
}

impl NormalTraffic {
    pub fn succeeded(&self) -> u32 {
        self.kinds().iter().map(|tally| tally.ok).sum()
    }

    pub fn failed(&self) -> u32 {
        self.kinds().iter().map(|tally| tally.failed).sum()
    }

    fn kinds(&self) -> [Tally; 4] {
        [self.http_gets, self.pings, self.udp_exchanges, self.uploads]
    }
}

/// `python3 -m http.server` on `role`'s IPv4 address, serving [`HTTP_FILES`] from a directory of
/// its own. Stopped (by PID) and its directory removed on drop.
#[derive(Debug)]
pub struct HttpServer {
    addr: IpAddr,
    port: u16,
    // Fields drop in order: the server stops before its files go.
    _process: ChildGuard,
    _dir: ScratchDir,
}

impl HttpServer {
    /// Writes the files, starts the server and returns once it listens.
    pub fn start(lab: &Lab, role: &str, port: u16) -> Result<HttpServer, LabError> {
        require(PYTHON3)?;
        require(SS)?;
        let addr = ipv4_of(lab, role)?;
        let dir = ScratchDir::create("http")?;
        let root = dir.path.join("www");
        std::fs::create_dir(&root).map_err(LabError::io(format!("creating {}", root.display())))?;
        let mut generator = XorShift64::new(0x6874_7470);
        for file in HTTP_FILES {
            let mut bytes = vec![0u8; file.bytes];
            generator.fill(&mut bytes);
            let path = root.join(file.path);
            std::fs::write(&path, bytes)
                .map_err(LabError::io(format!("writing {}", path.display())))?;
        }
        let mut command = lab.exec(role, &[PYTHON3.program, "-m", "http.server", "--bind"])?;
        command
            .arg(addr.to_string())
            .arg("--directory")
            .arg(&root)
            .arg(port.to_string());
        let log = dir.path.join("http.log");
        let process = spawn_logged(command, &log)?;
        let mut server = HttpServer {
            addr,
            port,
            _process: process,
            _dir: dir,
        };
        wait_listening(lab.netns(role)?, port, &mut server._process, &log)?;
        Ok(server)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// `curl` GETs of `paths` (taken in turn) from `from` to `server_addr:port`, `count` of them,
/// `interval` apart. Returns how many got HTTP 200 and the whole file: for the paths of
/// [`HTTP_FILES`], exactly its size.
pub fn http_gets(
    lab: &Lab,
    from: &str,
    server_addr: IpAddr,
    port: u16,
    paths: &[&str],
    count: u32,
    interval: Duration,
) -> Result<Tally, LabError> {
    ensure_lab_address(server_addr)?;
    require(CURL)?;
    if paths.is_empty() {
        return Err(LabError::invalid_argument("paths", "none given"));
    }
    if count > HTTP_GETS_MAX {
        return Err(LabError::invalid_argument(
            "count",
            format!("{count} is above {HTTP_GETS_MAX}"),
        ));
    }
    if interval > HTTP_INTERVAL_MAX {
        return Err(LabError::invalid_argument(
            "interval",
            format!("{interval:?} is above {HTTP_INTERVAL_MAX:?}"),
        ));
    }
    let netns = lab.netns(from)?;
    let mut tally = Tally::default();
    for (index, path) in (0..count).zip(paths.iter().cycle()) {
        if index > 0 {
            pause(interval)?;
        }
        tally.add(http_get(netns, server_addr, port, path)?);
    }
    Ok(tally)
}

/// One GET; `Ok(false)` for anything but a 200 with the whole file.
fn http_get(netns: &str, addr: IpAddr, port: u16, path: &str) -> Result<bool, LabError> {
    let url = format!("http://{}/{path}", SocketAddr::new(addr, port));
    let mut command = curl_command(netns);
    command.args(["-w", "%{http_code} %{size_download}", &url]);
    let Some(output) = run_counted(command, None, CURL_MAX_TIME + EXIT_SLACK)? else {
        return Ok(false);
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let (code, size) = (fields.next(), fields.next().and_then(|s| s.parse().ok()));
    let expected = HTTP_FILES
        .iter()
        .find(|file| file.path == path)
        .map(|file| file.bytes);
    Ok(output.status.success()
        && code == Some("200")
        && size.is_some()
        && expected.is_none_or(|bytes| size == Some(bytes)))
}

/// A small POST of `bytes` pseudo-random bytes; `Ok(true)` when any HTTP status came back.
fn http_post(
    netns: &str,
    addr: IpAddr,
    port: u16,
    bytes: usize,
    seed: u64,
) -> Result<bool, LabError> {
    let url = format!("http://{}/upload", SocketAddr::new(addr, port));
    let mut body = vec![0u8; bytes];
    XorShift64::new(seed).fill(&mut body);
    let mut command = curl_command(netns);
    command.args([
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "--data-binary",
        "@-",
        &url,
    ]);
    let Some(output) = run_counted(command, Some(body), CURL_MAX_TIME + EXIT_SLACK)? else {
        return Ok(false);
    };
    let code = String::from_utf8_lossy(&output.stdout);
    Ok(code.trim().len() == 3 && code.trim() != "000")
}

fn curl_command(netns: &str) -> Command {
    let max_time = CURL_MAX_TIME.as_secs().to_string();
    let mut command = crate::netns_command(netns, &[CURL.program]);
    command.args(["-s", "-o", "/dev/null", "--max-time", &max_time]);
    command
}

/// OpenSSH's `sshd` on `role`'s IPv4 address, port [`SSH_PORT`], with its own config and host
/// key in a directory of its own. Password authentication is offered, but no login can
/// succeed: root is refused (`PermitRootLogin no`) and so is every other user (`DenyUsers *`).
/// Stopped (by PID) and its directory removed on drop.
#[derive(Debug)]
pub struct SshServer {
    addr: IpAddr,
    _process: ChildGuard,
    _dir: ScratchDir,
}

impl SshServer {
    pub fn start(lab: &Lab, role: &str) -> Result<SshServer, LabError> {
        require(SSHD)?;
        require(SSH_KEYGEN)?;
        require(SS)?;
        let addr = ipv4_of(lab, role)?;
        // sshd's privilege separation directory; Debian's service creates it at boot.
        let separation = Path::new("/run/sshd");
        if !separation.is_dir() {
            std::fs::create_dir_all(separation)
                .map_err(LabError::io("creating /run/sshd for sshd"))?;
        }
        let dir = ScratchDir::create("sshd")?;
        let key = dir.path.join("host_ed25519_key");
        let key_text = key.to_string_lossy().into_owned();
        run_checked(
            &[
                SSH_KEYGEN.program,
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "vfn-lab",
                "-f",
                &key_text,
            ]
            .map(str::to_owned),
            Duration::from_secs(10),
        )?;
        let config = dir.path.join("sshd_config");
        std::fs::write(&config, sshd_config(addr))
            .map_err(LabError::io(format!("writing {}", config.display())))?;
        let mut command = lab.exec(role, &[SSHD.program, "-D", "-e", "-f"])?;
        command.arg(&config).arg("-h").arg(&key);
        let log = dir.path.join("sshd.log");
        let process = spawn_logged(command, &log)?;
        let mut server = SshServer {
            addr,
            _process: process,
            _dir: dir,
        };
        wait_listening(lab.netns(role)?, SSH_PORT, &mut server._process, &log)?;
        Ok(server)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }
}

fn sshd_config(addr: IpAddr) -> String {
    format!(
        "# vfn-lab: a password prompt that never lets anyone in.\n\
         ListenAddress {addr}\n\
         Port {SSH_PORT}\n\
         PidFile none\n\
         PasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin no\n\
         DenyUsers *\n\
         AuthorizedKeysFile none\n\
         StrictModes no\n\
         UseDNS no\n\
         MaxAuthTries 3\n\
         MaxStartups 64:30:128\n\
         LoginGraceTime 10\n"
    )
}

/// `attempts` password logins as root from `from` to `target`'s sshd with a wrong password
/// (`sshpass`, `ssh`), `parallel` at a time; each attempt is killed after 15 s. All fail to log
/// in by design.
pub fn ssh_login_attempts(
    lab: &Lab,
    from: &str,
    target: IpAddr,
    attempts: u32,
    parallel: u32,
) -> Result<SshAttempts, LabError> {
    ensure_lab_address(target)?;
    require(SSHPASS)?;
    require(SSH)?;
    if attempts > SSH_ATTEMPTS_MAX {
        return Err(LabError::invalid_argument(
            "attempts",
            format!("{attempts} is above {SSH_ATTEMPTS_MAX}"),
        ));
    }
    if !(1..=SSH_PARALLEL_MAX).contains(&parallel) {
        return Err(LabError::invalid_argument(
            "parallel",
            format!("{parallel} is outside 1..={SSH_PARALLEL_MAX}"),
        ));
    }
    let netns = lab.netns(from)?;
    let mut result = SshAttempts::default();
    while result.made < attempts {
        check_interrupted()?;
        let batch = parallel.min(attempts - result.made);
        let outcomes: Vec<Result<Option<Output>, LabError>> = thread::scope(|scope| {
            let running: Vec<_> = (0..batch)
                .map(|_| scope.spawn(|| ssh_attempt(netns, target)))
                .collect();
            running
                .into_iter()
                .map(|attempt| {
                    attempt
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        for outcome in outcomes {
            result.made += 1;
            let refused = outcome?.is_some_and(|output| {
                String::from_utf8_lossy(&output.stderr).contains("Permission denied")
            });
            if refused {
                result.refused += 1;
            } else {
                result.other += 1;
            }
        }
    }
    Ok(result)
}

fn ssh_attempt(netns: &str, target: IpAddr) -> Result<Option<Output>, LabError> {
    let connect_timeout = format!("ConnectTimeout={SSH_CONNECT_TIMEOUT_S}");
    let destination = format!("root@{target}");
    let mut command = crate::netns_command(netns, &[SSHPASS.program, "-p", WRONG_PASSWORD]);
    command
        .args([SSH.program, "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "PubkeyAuthentication=no"])
        .args(["-o", &connect_timeout])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .args(["-o", "LogLevel=ERROR"])
        .args([destination.as_str(), "true"]);
    run_counted(command, None, SSH_ATTEMPT_LIMIT)
}

/// `nmap` from `from` against `target`'s TCP `ports`, one retry, 30 s at most; returns the ports
/// nmap reported open, in increasing order.
pub fn nmap_scan(
    lab: &Lab,
    from: &str,
    target: IpAddr,
    kind: ScanKind,
    ports: RangeInclusive<u16>,
) -> Result<Vec<u16>, LabError> {
    ensure_lab_address(target)?;
    require(NMAP)?;
    if ports.is_empty() || *ports.start() == 0 {
        return Err(LabError::invalid_argument(
            "ports",
            format!("{ports:?} is not a range within 1..=65535"),
        ));
    }
    let host_timeout = format!("{}s", NMAP_HOST_TIMEOUT.as_secs());
    let port_list = format!("{}-{}", ports.start(), ports.end());
    let target_text = target.to_string();
    let scan = match kind {
        ScanKind::Syn => "-sS",
        ScanKind::Connect => "-sT",
    };
    let mut args = vec![NMAP.program, scan, "-n", "-Pn", "--max-retries", "1"];
    args.extend(["--host-timeout", &host_timeout, "-T4", "-p", &port_list]);
    args.extend(["-oG", "-"]);
    if target.is_ipv6() {
        args.push("-6");
    }
    args.push(&target_text);
    let command = lab.exec(from, &args)?;
    let description = describe(&command);
    let output = run_bounded(command, None, NMAP_HOST_TIMEOUT + EXIT_SLACK)?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(LabError::CommandFailed {
            command: description,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    parse_grepable_open_ports(&text).ok_or_else(|| LabError::UnexpectedOutput {
        command: description,
        reason: "no \"# Nmap done\" line".to_owned(),
        output: text,
    })
}

/// The open TCP ports of nmap's grepable output (`-oG`); `None` unless the scan finished.
fn parse_grepable_open_ports(text: &str) -> Option<Vec<u16>> {
    if !text.lines().any(|line| line.starts_with("# Nmap done")) {
        return None;
    }
    let mut open: Vec<u16> = text
        .lines()
        .filter_map(|line| line.split('\t').find_map(|f| f.strip_prefix("Ports: ")))
        .flat_map(|ports| ports.split(", "))
        .filter_map(|entry| {
            // port/state/protocol/owner/service/rpc info/version/
            let mut fields = entry.trim().split('/');
            let port = fields.next()?.parse().ok()?;
            (fields.next()? == "open" && fields.next()? == "tcp").then_some(port)
        })
        .collect();
    open.sort_unstable();
    open.dedup();
    Some(open)
}

/// `hping3 -S` from `from` to `target:port`: `count` SYNs, `interval_us` apart, from changing
/// source ports. Returns what hping3 counted.
pub fn syn_flood(
    lab: &Lab,
    from: &str,
    target: IpAddr,
    port: u16,
    count: u32,
    interval_us: u32,
) -> Result<FloodSent, LabError> {
    ensure_lab_address(target)?;
    require(HPING3)?;
    if !(1..=SYN_FLOOD_COUNT_MAX).contains(&count) {
        return Err(LabError::invalid_argument(
            "count",
            format!("{count} is outside 1..={SYN_FLOOD_COUNT_MAX}"),
        ));
    }
    if interval_us < SYN_FLOOD_INTERVAL_US_MIN {
        return Err(LabError::invalid_argument(
            "interval_us",
            format!("{interval_us} is below {SYN_FLOOD_INTERVAL_US_MIN}"),
        ));
    }
    let sending = Duration::from_micros(u64::from(count) * u64::from(interval_us));
    if sending > TRAFFIC_DEADLINE_MAX {
        return Err(LabError::invalid_argument(
            "count",
            format!(
                "{count} SYNs {interval_us} µs apart take longer than {TRAFFIC_DEADLINE_MAX:?}"
            ),
        ));
    }
    let (port_text, count_text) = (port.to_string(), count.to_string());
    let interval_text = format!("u{interval_us}");
    let target_text = target.to_string();
    let command = lab.exec(
        from,
        &[
            HPING3.program,
            "-S",
            "-p",
            &port_text,
            "-c",
            &count_text,
            "-i",
            &interval_text,
            "-n",
            "-q",
            &target_text,
        ],
    )?;
    let description = describe(&command);
    let output = run_bounded(command, None, sending + EXIT_SLACK * 2)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_hping_summary(&text).ok_or_else(|| LabError::UnexpectedOutput {
        command: description,
        reason: format!("no \"packets transmitted\" summary ({})", output.status),
        output: text,
    })
}

/// "N packets transmitted, M packets received, ..." of hping3's statistics.
fn parse_hping_summary(text: &str) -> Option<FloodSent> {
    let line = text
        .lines()
        .find(|line| line.contains("packets transmitted"))?;
    let mut fields = line.split(',').map(str::trim);
    let sent = fields
        .next()?
        .strip_suffix(" packets transmitted")?
        .parse()
        .ok()?;
    let replies = fields
        .next()?
        .strip_suffix(" packets received")?
        .parse()
        .ok()?;
    Some(FloodSent { sent, replies })
}

/// `bytes` random bytes from `from` to `target:port` over one TCP connection (`head -c BYTES
/// /dev/urandom | socat`), into a `socat` sink started on the target's host for this transfer
/// alone, which counts what arrives.
pub fn exfiltrate(
    lab: &Lab,
    from: &str,
    target: IpAddr,
    port: u16,
    bytes: usize,
) -> Result<Exfiltration, LabError> {
    ensure_lab_address(target)?;
    require(SOCAT)?;
    require(SS)?;
    if bytes > EXFILTRATION_BYTES_MAX {
        return Err(LabError::invalid_argument(
            "bytes",
            format!("{bytes} is above {EXFILTRATION_BYTES_MAX}"),
        ));
    }
    let sink_role = role_of(lab, target)?;
    let sink_netns = lab.netns(&sink_role)?;
    let listen = format!("TCP-LISTEN:{port},bind={},reuseaddr", socat_host(target));
    let mut command = lab.exec(&sink_role, &[SOCAT.program, "-u", &listen, "STDOUT"])?;
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut sink = ChildGuard::spawn(command)?;
    let stdout = sink.child_mut().stdout.take();
    let counter = thread::spawn(move || count_bytes(stdout));
    let no_log = Path::new("/dev/null");
    wait_listening(sink_netns, port, &mut sink, no_log)?;

    let limit = EXFILTRATION_BASE_LIMIT
        + EXFILTRATION_LIMIT_PER_MIB * u32::try_from(bytes >> 20).unwrap_or(u32::MAX);
    // Only numbers and an address go into the shell line.
    let pipeline = format!(
        "head -c {bytes} /dev/urandom | {} -u STDIN TCP:{}:{port},connect-timeout=5",
        SOCAT.program,
        socat_host(target)
    );
    let sender = lab.exec(from, &["sh", "-c", &pipeline])?;
    let description = describe(&sender);
    let output = run_bounded(sender, None, limit)?;
    if !output.status.success() {
        return Err(LabError::CommandFailed {
            command: description,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    // The sink exits at the end of the stream; a sink that does not is stopped.
    let _ = wait_until(SINK_DRAIN_LIMIT, READY_POLL_INTERVAL, || {
        !matches!(sink.try_wait(), Ok(None))
    });
    drop(sink);
    let received = counter
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    Ok(Exfiltration {
        sent: bytes,
        received,
    })
}

fn socat_host(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn count_bytes(pipe: Option<impl Read>) -> usize {
    let Some(mut pipe) = pipe else {
        return 0;
    };
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0;
    // A read error ends the count: the sink was stopped.
    while let Ok(count) = pipe.read(&mut buffer) {
        if count == 0 {
            break;
        }
        total += count;
    }
    total
}

/// A benign host from `from` towards `server_addr`, until `duration` has passed: HTTP GETs of
/// [`HTTP_FILES`] (small ones most often) from the [`HttpServer`] on `http_port`, short runs of
/// pings, short UDP exchanges with an echo in the server's namespace, and now and then a small
/// HTTP POST, with random pauses of 50 to 800 ms between them. Every choice comes from `seed`.
/// The last action may end up to one action's time limit after `duration`.
pub fn normal_client(
    lab: &Lab,
    from: &str,
    server_addr: IpAddr,
    http_port: u16,
    duration: Duration,
    seed: u64,
) -> Result<NormalTraffic, LabError> {
    ensure_lab_address(server_addr)?;
    require(CURL)?;
    let until = deadline_from_now(duration)?;
    let client = lab.netns(from)?;
    let server_role = role_of(lab, server_addr)?;
    let server = lab.netns(&server_role)?;
    let mut random = XorShift64::new(seed);
    let mut traffic = NormalTraffic::default();
    for _ in 0..NORMAL_ACTIONS_MAX {
        if Instant::now() >= until {
            break;
        }
        check_interrupted()?;
        let choice = random.next_u64() % 100;
        let amount = random.next_u64();
        match choice {
            0..55 => {
                let file = pick_file(amount);
                let ok = http_get(client, server_addr, http_port, file.path)?;
                traffic.http_gets.add(ok);
            }
            55..70 => {
                let opts = PingOpts {
                    interval: Duration::from_millis(200),
                    deadline: Duration::from_secs(3),
                    ..PingOpts::default()
                };
                let count = 2 + (amount % 4) as u32;
                let ok =
                    counted(ping(client, server_addr, count, &opts).map(|r| r.all_received()))?;
                traffic.pings.add(ok);
            }
            70..85 => {
                let datagrams = 2 + (amount % 9) as u32;
                let size = 64 + ((amount >> 8) % 449) as usize;
                let exchange = udp_exchange(
                    client,
                    server,
                    server_addr,
                    0,
                    datagrams,
                    size,
                    Duration::from_secs(5),
                );
                traffic
                    .udp_exchanges
                    .add(counted(exchange.map(|r| r.all_echoed()))?);
            }
            _ => {
                let bytes = 1024 + (amount % (7 * 1024)) as usize;
                let ok = http_post(client, server_addr, http_port, bytes, amount)?;
                traffic.uploads.add(ok);
            }
        }
        let pause_ms = NORMAL_PAUSE_MS.start()
            + random.next_u64() % (NORMAL_PAUSE_MS.end() - NORMAL_PAUSE_MS.start() + 1);
        let left = until.saturating_duration_since(Instant::now());
        pause(Duration::from_millis(pause_ms).min(left))?;
    }
    Ok(traffic)
}

/// One of [`HTTP_FILES`]: 1 KB 40 %, 20 KB 30 %, 200 KB 20 %, 2 MB 10 % of the time.
fn pick_file(random: u64) -> HttpFile {
    let index = match random % 10 {
        0..4 => 0,
        4..7 => 1,
        7..9 => 2,
        _ => 3,
    };
    HTTP_FILES[index]
}

/// An exchange's outcome as a count: a failed exchange is counted, but an interrupt, a missing
/// tool or a bad argument (a bug of the caller) ends the run.
fn counted(result: Result<bool, LabError>) -> Result<bool, LabError> {
    match result {
        Ok(ok) => Ok(ok),
        Err(
            error @ (LabError::Interrupted
            | LabError::MissingTool { .. }
            | LabError::InvalidArgument { .. }
            | LabError::AddressOutsideLab { .. }),
        ) => Err(error),
        Err(_) => Ok(false),
    }
}

/// Runs a client command to its end; `None` if it was killed at `limit` (a failed exchange, not
/// an error).
fn run_counted(
    command: Command,
    stdin: Option<Vec<u8>>,
    limit: Duration,
) -> Result<Option<Output>, LabError> {
    match run_bounded(command, stdin, limit) {
        Ok(output) => Ok(Some(output)),
        Err(LabError::CommandTimedOut { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Sleeps `duration`, waking to check the interrupt flag.
fn pause(duration: Duration) -> Result<(), LabError> {
    let until = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Fails with [`LabError::MissingTool`] unless `tool` is an executable file (an absolute path)
/// or one on `PATH`.
fn require(tool: Tool) -> Result<(), LabError> {
    let found = if tool.program.contains('/') {
        is_executable(Path::new(tool.program))
    } else {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| is_executable(&dir.join(tool.program)))
        })
    };
    if found {
        Ok(())
    } else {
        Err(LabError::MissingTool {
            program: tool.program,
            package: tool.package,
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `role`'s IPv4 address.
fn ipv4_of(lab: &Lab, role: &str) -> Result<IpAddr, LabError> {
    Ok(lab.topology().host(role)?.ipv4.addr())
}

/// The host role that has `addr` on its link to the router.
fn role_of(lab: &Lab, addr: IpAddr) -> Result<String, LabError> {
    lab.topology()
        .hosts
        .iter()
        .find(|host| host.ipv4.addr() == addr || host.ipv6.addr() == addr)
        .map(|host| host.role.clone())
        .ok_or_else(|| {
            LabError::invalid_argument("address", format!("no host of this lab has {addr}"))
        })
}

/// Starts `command` with stdout and stderr appended to `log`, guarded.
fn spawn_logged(mut command: Command, log: &Path) -> Result<ChildGuard, LabError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(LabError::io(format!("creating {}", log.display())))?;
    let file_err = file
        .try_clone()
        .map_err(LabError::io(format!("opening {}", log.display())))?;
    command.stdin(Stdio::null()).stdout(file).stderr(file_err);
    ChildGuard::spawn(command)
}

/// Waits until something listens on TCP `port` in `netns` (`ss`), failing early with `log` if
/// `process` exits first.
fn wait_listening(
    netns: &str,
    port: u16,
    process: &mut ChildGuard,
    log: &Path,
) -> Result<(), LabError> {
    let filter = format!("sport = :{port}");
    let mut exited = None;
    let listening = wait_until(SERVER_READY_LIMIT, READY_POLL_INTERVAL, || {
        if let Ok(Some(status)) = process.try_wait() {
            exited = Some(status);
            return true;
        }
        let command = crate::netns_command(netns, &[SS.program, "-H", "-l", "-t", "-n", &filter]);
        run_bounded(command, None, Duration::from_secs(5))
            .is_ok_and(|output| !output.stdout.is_empty())
    });
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    if let Some(status) = exited {
        return Err(LabError::CommandFailed {
            command: format!("a server on port {port} in {netns}"),
            status: status.to_string(),
            stderr: log_text(),
        });
    }
    listening.map(|_| ()).map_err(|_| LabError::Timeout {
        what: format!(
            "a listener on TCP port {port} in {netns}; its log:\n{}",
            log_text()
        ),
        limit: SERVER_READY_LIMIT,
    })
}

/// A directory of this process's own under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new directory, named after `what`, this process and a sequence number.
    pub fn create(what: &str) -> Result<ScratchDir, LabError> {
        let sequence = SCRATCH_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("vfn-lab-{what}-{}-{sequence}", std::process::id());
        let path = std::env::temp_dir().join(name);
        // create_dir fails on anything already there, a planted symlink included.
        std::fs::create_dir(&path).map_err(LabError::io(format!("creating {}", path.display())))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("vfn-lab: removing {}: {error}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grepable_output_gives_the_open_tcp_ports() {
        let text = "# Nmap 7.93 scan initiated as: nmap -sS -oG - 198.18.3.2\n\
                    Host: 198.18.3.2 ()\tStatus: Up\n\
                    Host: 198.18.3.2 ()\tPorts: 80/open/tcp//http///, 22/open/tcp//ssh///, \
                    25/filtered/tcp//smtp///\tIgnored State: closed (997)\n\
                    # Nmap done at Mon -- 1 IP address (1 host up) scanned in 0.12 seconds\n";
        assert_eq!(parse_grepable_open_ports(text), Some(vec![22, 80]));
        let nothing_open = "Host: 198.18.3.2 ()\tStatus: Up\n# Nmap done at x\n";
        assert_eq!(parse_grepable_open_ports(nothing_open), Some(vec![]));
        assert_eq!(parse_grepable_open_ports("Host: 198.18.3.2 ()\n"), None);
    }

    #[test]
    fn hping_summary_is_parsed() {
        let text = "HPING 198.18.3.2 (eth0 198.18.3.2): S set, 40 headers + 0 data bytes\n\n\
                    --- 198.18.3.2 hping statistic ---\n\
                    300 packets transmitted, 298 packets received, 1% packet loss\n\
                    round-trip min/avg/max = 0.1/0.2/0.9 ms\n";
        assert_eq!(
            parse_hping_summary(text),
            Some(FloodSent {
                sent: 300,
                replies: 298
            })
        );
        assert_eq!(parse_hping_summary("hping3: no such device\n"), None);
    }

    #[test]
    fn file_choice_favours_small_files_and_covers_all() {
        let mut counts = [0u32; 4];
        let mut random = XorShift64::new(7);
        for _ in 0..10_000 {
            let file = pick_file(random.next_u64());
            let index = HTTP_FILES
                .iter()
                .position(|f| *f == file)
                .expect("known file");
            counts[index] += 1;
        }
        assert!(
            counts.windows(2).all(|pair| pair[0] > pair[1]),
            "{counts:?}"
        );
        assert!(counts[3] > 500, "{counts:?}");
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let missing = Tool {
            program: "vfn-lab-no-such-tool",
            package: "no-such-package",
        };
        let error = require(missing).expect_err("not installed");
        assert_eq!(
            error.to_string(),
            "`vfn-lab-no-such-tool` not found; install no-such-package: apt-get install \
             no-such-package"
        );
        assert!(
            require(Tool {
                program: "/nonexistent/sshd",
                package: "openssh-server",
            })
            .is_err()
        );
        assert!(
            require(Tool {
                program: "sh",
                package: "dash",
            })
            .is_ok()
        );
    }

    #[test]
    fn sshd_config_lets_nobody_in() {
        let config = sshd_config("198.18.3.2".parse().expect("address"));
        for line in [
            "ListenAddress 198.18.3.2",
            "PasswordAuthentication yes",
            "UsePAM no",
            "PermitRootLogin no",
            "DenyUsers *",
            "PidFile none",
        ] {
            assert!(
                config.lines().any(|l| l == line),
                "{line} missing:\n{config}"
            );
        }
    }
}
