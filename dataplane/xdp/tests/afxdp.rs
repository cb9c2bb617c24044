//! AF_XDP end to end, on veth pairs between network namespaces this test creates and removes.
//! Needs root; the tests take a lock, so they run one at a time.
//!
//! Topology: nsA (a0) <-> (r0) nsR (r1) <-> (b0) nsB. The XdpIo runs on a thread of this process
//! that has entered nsR; Python AF_PACKET sockets send raw Ethernet frames (EtherType 0x88B5,
//! local experimental, so no stack answers them) from nsA and check them in nsB. No IP traffic:
//! IPv6 is disabled in every namespace so that not even link-local autoconfiguration is sent.
#![expect(clippy::panic, reason = "test helpers fail the test by panicking")]

use std::{
    fs::File,
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};
use vfn_dataplane::io::{FrameAccounting, FrameId, Packet, PacketIo, PortShare, TransmitRefused};
use vfn_xdp::{AttachedMode, XdpIo, XdpMode, XdpOptions, XdpPort, ZeroCopy, detach_stale};

const FRAMES_SENT: u32 = 1000;
const FORWARD_DEADLINE: Duration = Duration::from_secs(30);
const RECEIVER_TIMEOUT_SECONDS: u32 = 15;
const HOLDER_ENV: &str = "VFN_XDP_HOLD_INTERFACE";

/// The frames of the forwarding test, built identically by the sender and the receiver:
/// sequence number and a pattern derived from it, lengths 60 to 1470 bytes.
const FRAME_PY: &str = r#"
import socket, sys, time
ETHERTYPE = 0x88B5
def frame(i, dst, src):
    body = bytes(((i * 7) + k) & 0xFF for k in range(46 + (i * 37) % 1400))
    return dst + src + ETHERTYPE.to_bytes(2, "big") + b"VFN-XDP" + i.to_bytes(4, "big") + body
def mac(text):
    return bytes.fromhex(text.replace(":", ""))
"#;

const SENDER_PY: &str = r#"
ifname, count, dst, src = sys.argv[1], int(sys.argv[2]), mac(sys.argv[3]), mac(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for i in range(count):
    s.send(frame(i, dst, src))
    if i % 64 == 63:
        time.sleep(0.002)
"#;

const RECEIVER_PY: &str = r#"
ifname, count, dst, src = sys.argv[1], int(sys.argv[2]), mac(sys.argv[3]), mac(sys.argv[4])
timeout = float(sys.argv[5])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
s.setsockopt(socket.SOL_SOCKET, 33, 1 << 25)  # SO_RCVBUFFORCE: hold a whole burst
s.bind((ifname, ETHERTYPE))
s.settimeout(0.2)
print("ready", flush=True)
seen, corrupt, duplicate = set(), 0, 0
deadline = time.time() + timeout
while len(seen) < count and time.time() < deadline:
    try:
        data = s.recv(4096)
    except socket.timeout:
        continue
    i = int.from_bytes(data[21:25], "big") if data[14:21] == b"VFN-XDP" else -1
    if 0 <= i < count and data == frame(i, dst, src):
        duplicate += i in seen
        seen.add(i)
    else:
        corrupt += 1
print(f"intact={len(seen)} corrupt={corrupt} duplicate={duplicate}", flush=True)
"#;

/// Root tests attach XDP programs and make namespaces: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Checks for root and takes the lock that keeps root tests apart.
fn require_root() -> std::sync::MutexGuard<'static, ()> {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Shows the backend's log (modes chosen, stale programs detached) with --nocapture.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("vfn_xdp=debug")
        .with_test_writer()
        .try_init();
    assert!(
        // /proc/self belongs to the process's effective user.
        std::fs::metadata("/proc/self").is_ok_and(|proc_self| proc_self.uid() == 0),
        "needs root: these tests create network namespaces and attach XDP programs"
    );
    serial
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} {args:?}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Network namespaces named `xdpt-<pid>-<test>-<name>`, removed (with their veths) on drop.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    fn new(test: &str) -> Lab {
        Lab {
            prefix: format!("xdpt-{}-{test}", std::process::id()),
            namespaces: Vec::new(),
        }
    }

    fn namespace(&mut self, name: &str) -> String {
        let namespace = format!("{}-{name}", self.prefix);
        run("ip", &["netns", "add", &namespace]);
        self.namespaces.push(namespace.clone());
        run(
            "ip",
            &[
                "netns",
                "exec",
                &namespace,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        namespace
    }

    /// A single-queue veth pair (so every frame arrives on queue 0), up, checksum offload off.
    fn veth(&self, namespace: &str, name: &str, peer_namespace: &str, peer: &str) {
        run(
            "ip",
            &[
                "-n",
                namespace,
                "link",
                "add",
                name,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                peer_namespace,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
            ],
        );
        for (ns, interface) in [(namespace, name), (peer_namespace, peer)] {
            run("ip", &["-n", ns, "link", "set", interface, "up"]);
            run(
                "ip",
                &[
                    "netns", "exec", ns, "ethtool", "-K", interface, "rx", "off", "tx", "off",
                ],
            );
        }
    }

    fn mac(&self, namespace: &str, interface: &str) -> String {
        let path = format!("/sys/class/net/{interface}/address");
        run("ip", &["netns", "exec", namespace, "cat", &path])
            .trim()
            .to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

fn xdp_attached(namespace: &str, interface: &str) -> bool {
    run(
        "ip",
        &["-n", namespace, "-d", "link", "show", "dev", interface],
    )
    .contains("prog/xdp")
}

/// Runs `body` on a thread that has entered the network namespace, so that interface names and
/// indices are the namespace's.
fn in_namespace<'scope, T: Send + 'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    namespace: &str,
    body: impl FnOnce() -> T + Send + 'scope,
) -> thread::ScopedJoinHandle<'scope, T> {
    let path = format!("/var/run/netns/{namespace}");
    scope.spawn(move || {
        let file = File::open(&path).expect("open the namespace file");
        setns(file, CloneFlags::CLONE_NEWNET).expect("setns into the namespace");
        body()
    })
}

fn in_namespace_now<T: Send>(namespace: &str, body: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        in_namespace(scope, namespace, body)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A child process killed (SIGKILL, by its own pid) and reaped on drop, whatever happens.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, read on a thread so that waiting for one can time out.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

fn wait_for_line(lines: &mpsc::Receiver<String>, wanted: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(wanted) => return line,
            Ok(_) => {}
            Err(error) => panic!("no line containing {wanted:?} within {timeout:?}: {error}"),
        }
    }
}

fn python_in(namespace: &str, script: &str, args: &[String]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace, "python3", "-c"])
        .arg(format!("{FRAME_PY}{script}"))
        .args(args);
    command
}

fn options(mode: XdpMode) -> XdpOptions {
    XdpOptions {
        mode,
        zero_copy: ZeroCopy::Auto,
        frame_size: 2048,
        frame_count: 4096,
        ring_size: 2048,
    }
}

fn router_ports() -> [XdpPort; 2] {
    ["r0", "r1"].map(|interface| XdpPort {
        interface: interface.to_owned(),
        queue_id: 0,
    })
}

/// Reclaims until nothing is in flight (bounded in time), then returns the accounting.
fn settle(io: &mut XdpIo) -> FrameAccounting {
    let deadline = Instant::now() + Duration::from_secs(3);
    while io.accounting().transmit > 0 && Instant::now() < deadline {
        io.flush();
        io.reclaim_and_refill();
        thread::sleep(Duration::from_millis(1));
    }
    io.accounting()
}

fn assert_settled(accounting: FrameAccounting) {
    assert!(accounting.is_balanced(), "{accounting:?}");
    assert_eq!(
        accounting.free + accounting.fill,
        accounting.total,
        "{accounting:?}"
    );
    assert_eq!(
        (accounting.in_hand, accounting.parked, accounting.transmit),
        (0, 0, 0),
        "{accounting:?}"
    );
}

struct Forwarded {
    forwarded: u64,
    dropped: u64,
    accounting: FrameAccounting,
}

/// Transmits, flushing and reclaiming while the port refuses (a bounded number of times), and
/// releases the frame if it never fits.
fn transmit_retrying(io: &mut XdpIo, port: u16, packet: Packet) -> bool {
    let mut pending = packet;
    for _ in 0..1000 {
        match io.transmit(port, pending) {
            Ok(()) => return true,
            Err(TransmitRefused(refused)) => pending = refused,
        }
        io.flush();
        io.reclaim_and_refill();
    }
    io.release(pending.frame);
    false
}

/// The worker loop of the test: port 0 to port 1, each frame unchanged (same frame, no copy).
fn forward(io: &mut XdpIo, stop: &AtomicBool) -> Forwarded {
    let deadline = Instant::now() + FORWARD_DEADLINE;
    let mut burst = [Packet {
        frame: FrameId(0),
        len: 0,
    }; 64];
    let (mut forwarded, mut dropped) = (0, 0);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        io.reclaim_and_refill();
        let received = io.receive(0, &mut burst);
        for &packet in &burst[..received] {
            if transmit_retrying(io, 1, packet) {
                forwarded += 1;
            } else {
                dropped += 1;
            }
        }
        io.flush();
        if received == 0 {
            io.wait(Duration::from_millis(1));
        }
    }
    Forwarded {
        forwarded,
        dropped,
        accounting: settle(io),
    }
}

fn forward_a_to_b(options: XdpOptions, test: &str) {
    let _serial = require_root();
    let mut lab = Lab::new(test);
    let (ns_a, ns_r, ns_b) = (lab.namespace("a"), lab.namespace("r"), lab.namespace("b"));
    lab.veth(&ns_a, "a0", &ns_r, "r0");
    lab.veth(&ns_r, "r1", &ns_b, "b0");
    let (dst, src) = (lab.mac(&ns_b, "b0"), lab.mac(&ns_a, "a0"));
    let frame_args = |extra: &[String]| {
        let mut args = vec![FRAMES_SENT.to_string(), dst.clone(), src.clone()];
        args.extend_from_slice(extra);
        args
    };

    let mut receiver_args = vec!["b0".to_owned()];
    receiver_args.extend(frame_args(&[RECEIVER_TIMEOUT_SECONDS.to_string()]));
    let mut receiver = ChildGuard(
        python_in(&ns_b, RECEIVER_PY, &receiver_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the receiver"),
    );
    let receiver_lines = stdout_lines(&mut receiver.0);
    wait_for_line(&receiver_lines, "ready", Duration::from_secs(10));

    let stop = AtomicBool::new(false);
    let (ready_sender, ready) = mpsc::channel();
    let (result, modes, stats) = thread::scope(|scope| {
        let router = in_namespace(scope, &ns_r, || {
            let mut io = XdpIo::open(&router_ports(), &options).expect("open r0 and r1");
            let modes: Vec<_> = io.port_modes().collect();
            let _ = ready_sender.send(());
            let result = forward(&mut io, &stop);
            let stats = io.port_stats(1).expect("port 1 statistics");
            (result, modes, stats)
        });
        // Whatever happens below, the router stops.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the router opened its ports");
        let mut sender_args = vec!["a0".to_owned()];
        sender_args.extend(frame_args(&[]));
        let sent = python_in(&ns_a, SENDER_PY, &sender_args)
            .status()
            .expect("run the sender");
        assert!(sent.success(), "sender failed");
        let summary = wait_for_line(
            &receiver_lines,
            "intact=",
            Duration::from_secs(u64::from(RECEIVER_TIMEOUT_SECONDS) + 5),
        );
        println!("receiver: {summary}");
        assert_eq!(
            summary,
            format!("intact={FRAMES_SENT} corrupt=0 duplicate=0"),
            "every frame arrives once, byte-exact"
        );
        stop.store(true, Ordering::Relaxed);
        router
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    println!(
        "forwarded {} dropped {} modes {modes:?} port 1 {stats:?}",
        result.forwarded, result.dropped
    );
    let expected = match options.mode {
        XdpMode::Skb => AttachedMode::Skb,
        XdpMode::Native | XdpMode::Auto => AttachedMode::Native,
    };
    assert!(
        modes.iter().all(|m| m.attached == expected && !m.zero_copy),
        "{modes:?}"
    );
    assert_eq!(result.dropped, 0);
    assert!(result.forwarded >= u64::from(FRAMES_SENT));
    assert_settled(result.accounting);
    assert!(
        !xdp_attached(&ns_r, "r0") && !xdp_attached(&ns_r, "r1"),
        "detached on drop"
    );
}

#[test]
fn forwards_a_to_b_in_skb_mode() {
    forward_a_to_b(options(XdpMode::Skb), "skb");
}

#[test]
fn forwards_a_to_b_in_native_mode_with_4096_byte_frames() {
    let options = XdpOptions {
        frame_size: 4096,
        ..options(XdpMode::Native)
    };
    forward_a_to_b(options, "drv");
}

/// A port whose link is down keeps its frames on its TX ring (the kernel answers ENETDOWN and
/// consumes nothing). With only the peer down, veth drops and completes every frame, so nothing
/// stalls: that is why r1 itself goes down here.
#[test]
fn a_stalled_port_does_not_starve_the_others() {
    let _serial = require_root();
    let mut lab = Lab::new("stall");
    let (ns_a, ns_r, ns_b) = (lab.namespace("a"), lab.namespace("r"), lab.namespace("b"));
    lab.veth(&ns_a, "a0", &ns_r, "r0");
    lab.veth(&ns_r, "r1", &ns_b, "b0");
    let options = options(XdpMode::Skb);
    let share = PortShare::split(options.frame_count, 2, options.ring_size);

    in_namespace_now(&ns_r, || {
        let mut io = XdpIo::open(&router_ports(), &options).expect("open r0 and r1");
        assert_eq!(io.port_frames(0).map(|f| f.fill), Some(share.fill_max));
        run("ip", &["-n", &ns_r, "link", "set", "r1", "down"]);

        let mut refused = false;
        for _ in 0..options.frame_count {
            io.reclaim_and_refill();
            let frame = io
                .allocate()
                .expect("the pool keeps frames beyond the shares");
            let capacity = io.frame_capacity();
            let buffer = io.buffer(frame);
            assert_eq!(buffer.len(), capacity);
            buffer[..14].copy_from_slice(&[
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0, 1, 0x88, 0xB5,
            ]);
            buffer[14..60].fill(0x5A);
            if let Err(TransmitRefused(packet)) = io.transmit(1, Packet { frame, len: 60 }) {
                io.release(packet.frame);
                refused = true;
                break;
            }
            io.flush();
        }
        let stalled = io.port_frames(1).expect("port 1");
        let accounting = io.accounting();
        println!("stalled: {stalled:?} {accounting:?} {:?}", io.port_stats(1));
        assert!(
            refused,
            "transmit refused once the stalled port held its share"
        );
        assert_eq!(stalled.transmit, share.transmit_max);
        io.reclaim_and_refill();
        assert_eq!(
            io.port_frames(0).map(|f| f.fill),
            Some(share.fill_max),
            "port 0 keeps its whole reception share"
        );
        assert!(io.accounting().free > 0);

        run("ip", &["-n", &ns_r, "link", "set", "r1", "up"]);
        assert_settled(settle(&mut io));
    });
}

/// Not a test on its own: `drop_detaches_and_stale_programs_are_replaced` runs this binary again
/// with `HOLDER_ENV` set, in a namespace, to hold an XdpIo until it is killed with SIGKILL.
/// Ignored so that a normal run does not report it as a passing test.
#[test]
#[ignore = "a helper process of drop_detaches_and_stale_programs_are_replaced"]
fn stale_program_holder() {
    let Ok(interface) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let port = XdpPort {
        interface,
        queue_id: 0,
    };
    let _io = XdpIo::open(&[port], &options(XdpMode::Skb)).expect("holder opens its port");
    println!("holding");
    thread::sleep(Duration::from_secs(60));
}

/// Starts a process that opens r0 in the namespace and kills it with SIGKILL once it holds it,
/// leaving libxdp's program attached with nobody to detach it.
fn leave_stale_program(namespace: &str) {
    let exe = std::env::current_exe().expect("path of this test binary");
    let mut holder = ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(exe)
            .args([
                "--exact",
                "stale_program_holder",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLDER_ENV, "r0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the holder"),
    );
    let lines = stdout_lines(&mut holder.0);
    wait_for_line(&lines, "holding", Duration::from_secs(20));
    holder.0.kill().expect("SIGKILL the holder");
    holder.0.wait().expect("reap the holder");
    assert!(
        xdp_attached(namespace, "r0"),
        "the killed holder's program stays attached"
    );
}

#[test]
fn drop_detaches_and_stale_programs_are_replaced() {
    let _serial = require_root();
    let mut lab = Lab::new("stale");
    let (ns_a, ns_r) = (lab.namespace("a"), lab.namespace("r"));
    lab.veth(&ns_a, "a0", &ns_r, "r0");
    let port = [XdpPort {
        interface: "r0".to_owned(),
        queue_id: 0,
    }];

    for mode in [XdpMode::Skb, XdpMode::Native] {
        in_namespace_now(&ns_r, || {
            let io = XdpIo::open(&port, &options(mode)).expect("open r0");
            assert!(xdp_attached(&ns_r, "r0"));
            drop(io);
        });
        assert!(!xdp_attached(&ns_r, "r0"), "{mode:?}: drop detaches");
    }

    leave_stale_program(&ns_r);
    in_namespace_now(&ns_r, || {
        let io = XdpIo::open(&port, &options(XdpMode::Native)).expect("open over a stale program");
        assert_eq!(
            io.port_modes().map(|m| m.attached).collect::<Vec<_>>(),
            [AttachedMode::Native],
            "the stale SKB program was replaced"
        );
    });
    assert!(
        !xdp_attached(&ns_r, "r0"),
        "drop detaches after replacing a stale program"
    );

    leave_stale_program(&ns_r);
    let detached = in_namespace_now(&ns_r, || detach_stale("r0")).expect("detach_stale");
    assert_eq!(detached, 1);
    assert!(!xdp_attached(&ns_r, "r0"));
}
