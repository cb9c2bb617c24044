//! The lab benchmark's traffic generator and sink, both XDP programs (`perf/bpf`).
//!
//! The generator is run by `BPF_PROG_RUN` on live frames: each run sends one frame out of the
//! interface it is given, rewriting every header from a template (the kernel recycles frame
//! pages a receiver may have rewritten) and choosing one of `flows` flows by the UDP source port
//! and, past 32,768 flows, the low bits of the source address. One long call sends at the
//! kernel's speed, or at a pace the program keeps itself. The sink, attached to an interface,
//! counts and drops the generator's frames (UDP to port 9) and passes the others to the host's
//! stack (a router resolving the host's address gets its answer). Both count per CPU.

use std::ffi::c_int;

use etherparse::PacketBuilder;
use vfn_xdp::XdpError;
use vfn_xdp::bpf::{BpfObject, XdpAttachment, XdpHook, run_live_frames};

const TRAFGEN_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trafgen.bpf.o"));
const SINK_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sink.bpf.o"));
const XDP_FORWARDER_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdp_fwd.bpf.o"));

/// Bytes of the generator's template: Ethernet, IPv6 and UDP headers (IPv4 uses the first 42).
const TEMPLATE_LEN: usize = 62;
/// Frames the kernel handles per batch of a live-frames run.
const BATCH: u32 = 64;
/// The most distinct flows: 32,768 source ports times 32 source addresses.
pub const FLOWS_MAX: u32 = 1 << 20;

/// A UDP frame from `src` to `dst` (both IPv4 or both IPv6) of `len` bytes without the FCS
/// (at least the headers; 60 is the 64-byte minimum on the wire), source port `sport` (the
/// generator adds the flow's offset to it), destination port 9 (discard).
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    sport: u16,
    len: usize,
) -> Result<Vec<u8>, String> {
    use std::net::IpAddr::{V4, V6};
    let ethernet = PacketBuilder::ethernet2(src_mac, dst_mac);
    let (builder, headers) = match (src, dst) {
        (V4(src), V4(dst)) => (
            ethernet.ipv4(src.octets(), dst.octets(), 64).udp(sport, 9),
            42,
        ),
        (V6(src), V6(dst)) => (
            ethernet.ipv6(src.octets(), dst.octets(), 64).udp(sport, 9),
            62,
        ),
        _ => return Err(format!("{src} and {dst} are not of one family")),
    };
    if len < headers {
        return Err(format!(
            "a {len}-byte frame cannot hold its {headers} bytes of headers"
        ));
    }
    let mut frame = Vec::with_capacity(len);
    builder
        .write(&mut frame, &vec![0; len - headers])
        .map_err(|e| format!("building the frame: {e}"))?;
    Ok(frame)
}

/// The generator, loaded and configured for one frame template and flow count.
#[derive(Debug)]
pub struct Generator {
    object: BpfObject,
    program: c_int,
    ifindex: u32,
    frame: Vec<u8>,
}

impl Generator {
    /// Loads the generator to send `frame` (from [`udp_frame`]) as `flows` flows (1 to
    /// [`FLOWS_MAX`]) out of interface `ifindex`, as fast as it can or at `pace` frames per
    /// second (a run before the next frame is due drops its frame, so that one long call
    /// sends at that rate).
    pub fn new(
        ifindex: u32,
        frame: Vec<u8>,
        flows: u32,
        pace: Option<f64>,
    ) -> Result<Generator, String> {
        if !(1..=FLOWS_MAX).contains(&flows) {
            return Err(format!("{flows} flows: 1 to {FLOWS_MAX}"));
        }
        let interval_ns = match pace {
            None => 0,
            Some(pace) if pace >= 1.0 && pace.is_finite() => (1e9 / pace).max(1.0) as u64,
            Some(pace) => return Err(format!("a pace of {pace} frames per second")),
        };
        let object = BpfObject::load("trafgen", TRAFGEN_OBJECT).map_err(|e| e.to_string())?;
        let program = object.program_fd("trafgen").map_err(|e| e.to_string())?;
        // `struct config` of trafgen.bpf.c: the flow count, the template, six bytes of padding,
        // the interval between frames.
        let mut config = Vec::with_capacity(4 + TEMPLATE_LEN + 6 + 8);
        config.extend_from_slice(&flows.to_ne_bytes());
        let mut template = [0u8; TEMPLATE_LEN];
        let copied = frame.len().min(TEMPLATE_LEN);
        template[..copied].copy_from_slice(&frame[..copied]);
        config.extend_from_slice(&template);
        config.extend_from_slice(&[0; 6]);
        config.extend_from_slice(&interval_ns.to_ne_bytes());
        object
            .map("config")
            .and_then(|map| map.update(0, &config))
            .map_err(|e| e.to_string())?;
        Ok(Generator {
            object,
            program,
            ifindex,
            frame,
        })
    }

    /// Runs the generator `count` times in one call: `count` frames sent, or when paced those
    /// that were due. A call costs about 25 ms besides its frames here (the kernel sets up
    /// and tears down its frame pool), so long calls are what reach the generator's speed.
    /// Run it from a thread of the interface's namespace.
    pub fn send(&self, count: u32) -> Result<(), XdpError> {
        run_live_frames(self.program, self.ifindex, &self.frame, count, BATCH)
    }

    /// Frames the generator has sent (unless the kernel dropped them on the way).
    pub fn sent(&self) -> Result<u64, XdpError> {
        self.object.map("sent")?.per_cpu_sum(0)
    }
}

/// A program of an object, attached to an interface until dropped.
#[derive(Debug)]
struct Attached {
    // Detached before the object that holds the program is closed.
    _attachment: XdpAttachment,
    object: BpfObject,
}

impl Attached {
    /// Loads `elf` and attaches its program `name` to interface `ifindex` (native XDP, as on
    /// veth), from a thread of the interface's namespace.
    fn new(name: &str, elf: &[u8], ifindex: u32) -> Result<Attached, XdpError> {
        let object = BpfObject::load(name, elf)?;
        let program = object.program_fd(name)?;
        let attachment = XdpAttachment::attach(ifindex, program, XdpHook::Native)?;
        Ok(Attached {
            _attachment: attachment,
            object,
        })
    }
}

/// The sink, attached to an interface until dropped (from a thread of its namespace).
#[derive(Debug)]
pub struct Sink(Attached);

impl Sink {
    /// Attaches the sink to interface `ifindex`. Run it from a thread of the interface's
    /// namespace.
    pub fn attach(ifindex: u32) -> Result<Sink, XdpError> {
        Attached::new("sink", SINK_OBJECT, ifindex).map(Sink)
    }

    /// The generator's frames (UDP to port 9) received so far.
    pub fn received(&self) -> Result<u64, XdpError> {
        self.0.object.map("received")?.per_cpu_sum(0)
    }
}

/// The in-kernel XDP forwarder (`bpf_fib_lookup` and redirect), attached to a router's
/// ingress interface until dropped (from a thread of its namespace): the benchmark's practical
/// ceiling for a router.
#[derive(Debug)]
pub struct XdpForwarder {
    _attached: Attached,
}

impl XdpForwarder {
    /// Attaches the forwarder to interface `ifindex`. Run it from a thread of the interface's
    /// namespace.
    pub fn attach(ifindex: u32) -> Result<XdpForwarder, XdpError> {
        Attached::new("xdp_fwd", XDP_FORWARDER_OBJECT, ifindex).map(|attached| XdpForwarder {
            _attached: attached,
        })
    }
}
