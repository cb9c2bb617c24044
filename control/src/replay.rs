//! `vfn replay`: a capture run offline through the same router on in-memory ports; what leaves
//! each port is written to `<output-dir>/<port>.pcap`. `vfn flows-from-pcap`: a capture run
//! through a worker in replay mode, its flow records written to a CSV file.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vfn_config::Config;
use vfn_dataplane::counters::DropReason;
use vfn_dataplane::mem_io::{MemIo, MemIoConfig};
use vfn_dataplane::neigh::NeighbourKey;
use vfn_dataplane::pcap::{self, PcapError};
use vfn_dataplane::policy::{PolicyLimits, TIMEOUT_MAX, Timeouts};
use vfn_dataplane::router::{Router, RouterError};
use vfn_dataplane::telemetry::{FlowExportRecord, RecordTimeouts, TelemetryConfig};
use vfn_dataplane::wire::LearnPolicy;
use vfn_dataplane::worker::BURST_MAX;

use crate::exporter::end_reason_name;

use crate::spec::{self, PlanError};

/// A neighbour known in advance: `PORT,ADDRESS,MAC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticNeighbour {
    pub interface: String,
    pub addr: IpAddr,
    pub mac: [u8; 6],
}

impl std::str::FromStr for StaticNeighbour {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let (Some(interface), Some(addr), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{text:?}: expected INTERFACE,ADDRESS,MAC"));
        };
        let addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let mac = vfn_dataplane::wire::parse_mac(mac)
            .ok_or_else(|| format!("{mac:?} is not a MAC address"))?;
        Ok(StaticNeighbour {
            interface: interface.to_owned(),
            addr,
            mac,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Pcap(#[from] PcapError),
    #[error("--port {0}: no such port in the config")]
    UnknownPort(String),
    #[error("--neighbour: {0} names no port or VLAN")]
    UnknownInterface(String),
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{path}: {source}")]
    OutputDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the capture spans {span:?}, beyond the longest flow timeout ({TIMEOUT_MAX:?}): flows \
         could end before it does"
    )]
    CaptureTooLong { span: Duration },
    #[error("{0} flow records lost: the export queue is too small (a bug)")]
    RecordsLost(u64),
}

/// Replays `input` as received on port `port_name`. The ingress port takes the destination MAC of
/// the capture's first frame as its own, so a capture taken on the router's link replays as
/// it was; the other ports get locally administered addresses.
pub fn replay(
    config: &Config,
    config_path: &Path,
    input: &Path,
    port_name: &str,
    neighbours: &[StaticNeighbour],
    output_dir: &Path,
) -> Result<Vec<(String, usize)>, ReplayError> {
    let frames = pcap::read(input)?;
    let ingress = config
        .ports
        .iter()
        .position(|p| p.name == port_name)
        .ok_or_else(|| ReplayError::UnknownPort(port_name.into()))?;
    let ingress_interface = config.ports[ingress].interface.clone();
    let first_destination: Option<[u8; 6]> = frames
        .first()
        .and_then(|f| f.data.get(0..6)?.try_into().ok());
    let plan = spec::plan(config, |name| {
        let index = config
            .ports
            .iter()
            .position(|p| p.interface == name)
            .unwrap_or(0);
        Ok(match first_destination {
            Some(mac) if name == ingress_interface => mac,
            _ => [0x02, 0, 0, 0, 0xff, index as u8],
        })
    })?;
    let mut router = Router::build(plan.router.clone(), Instant::now(), Box::new(|_| {}))?;
    let mut slow = router
        .take_slow_path()
        .expect("Router::build makes exactly one slow path");
    for neighbour in neighbours {
        let iface = router
            .interfaces
            .by_name(&neighbour.interface)
            .ok_or_else(|| ReplayError::UnknownInterface(neighbour.interface.clone()))?;
        slow.neighbours_mut().learned(
            NeighbourKey {
                iface,
                addr: neighbour.addr,
            },
            neighbour.mac,
            LearnPolicy::Create,
            Duration::ZERO,
        );
        slow.neighbours_mut().publish();
    }
    let io = MemIo::new(MemIoConfig {
        ports: plan.port_names.len(),
        frame_count: plan.xdp.frame_count,
        frame_size: plan.xdp.frame_size as usize,
        ring_size: plan.xdp.ring_size,
    });
    let rules = crate::policy::compile(config, config_path, &router.interfaces)?;
    router.policy.publish(rules);
    let mut worker = router.worker(io)?;
    let outputs = pcap::replay(&mut worker, &mut slow, ingress as u16, &frames);
    std::fs::create_dir_all(output_dir).map_err(|source| ReplayError::OutputDir {
        path: output_dir.display().to_string(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, frames) in plan.port_names.iter().zip(outputs) {
        let path: PathBuf = output_dir.join(format!("{name}.pcap"));
        pcap::write(&path, &frames)?;
        written.push((path.display().to_string(), frames.len()));
    }
    Ok(written)
}

/// Flows `vfn flows-from-pcap` keeps at most by default; its flow table (about 530 bytes per flow,
/// `docs/flows.md`) holds the smaller of this and the capture's frame count.
pub const FLOWS_MAX_DEFAULT: usize = 1 << 20;

/// What a capture's replay in flow-accounting mode counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowsReplayed {
    pub frames: usize,
    /// Flow records written (one flow may have several: one per TCP connection it held).
    pub records: usize,
    pub flows: usize,
    /// IP packets counted in the records.
    pub packets: u64,
    /// Frames the pipeline refused, by drop reason (non-IP frames, malformed packets).
    pub not_counted: Vec<(&'static str, u64)>,
    /// IP packets no flow counted: later fragments, ICMPv6 type 0 code 0, packets a full table
    /// refused.
    pub untracked: u64,
    /// Flows evicted from the full table; a flow that comes back counts as a new one.
    pub evicted: u64,
}

/// Replays the capture `input` through one worker in replay mode ([`PipelineMode::Replay`](vfn_dataplane::pipeline::PipelineMode::Replay): no
/// L2, address or route check, every IP packet counted in its flow at its capture time) with
/// every flow and record timeout longer than the capture, so each flow lasts to the end, where
/// its record ends (`forced_end`). Writes one CSV line per record to `output`, by first packet.
/// The flow table holds the smaller of `flows_max` and the capture's frame count.
pub fn flows_from_pcap(
    input: &Path,
    output: &Path,
    flows_max: usize,
) -> Result<FlowsReplayed, ReplayError> {
    let frames = pcap::read(input)?;
    let start = frames.first().map_or(Duration::ZERO, |f| f.timestamp);
    let end = frames.iter().map(|f| f.timestamp).max().unwrap_or(start);
    let span = end.saturating_sub(start);
    if span >= TIMEOUT_MAX {
        return Err(ReplayError::CaptureTooLong { span });
    }
    let flows = flows_max.min(frames.len()).max(1);
    let limits = PolicyLimits::default();
    let forever = Timeouts {
        tcp_established: TIMEOUT_MAX,
        tcp_transitory: TIMEOUT_MAX,
        udp: TIMEOUT_MAX,
        icmp: TIMEOUT_MAX,
        other: TIMEOUT_MAX,
    };
    let spec = pcap::replay_router_spec(PolicyLimits {
        flows,
        timeouts: forever,
        telemetry: TelemetryConfig {
            enabled: true,
            timeouts: RecordTimeouts {
                idle: TIMEOUT_MAX,
                active: TIMEOUT_MAX,
                ..RecordTimeouts::default()
            },
            // Drained after every frame: room for the records one frame's loop iteration can
            // end (one per expiry step, a few for the packet itself) and for the last records,
            // one per flow.
            queue_capacity: flows + limits.expiry_budget + BURST_MAX,
            ..TelemetryConfig::default()
        },
        ..limits
    });
    let mut router = Router::build(spec, Instant::now(), Box::new(|_| {}))?;
    let largest_frame = frames.iter().map(|f| f.data.len()).max().unwrap_or(0);
    let io = MemIo::new(MemIoConfig {
        ports: 1,
        frame_count: 64,
        // Every frame fits, however large the capture's (offloaded) frames are.
        frame_size: largest_frame.max(64),
        ring_size: 16,
    });
    let mut worker = router.worker(io)?;
    let mut records = pcap::replay_flows(&mut worker, 0, &frames, &router.flow_exports());
    // Most records end together at the end, in the flow table's (random) order: sorted, the
    // output is the same for the same capture. A flow's records keep their order (stable sort).
    records.sort_by_key(|r| (r.stats.first_ns(), r.src, r.sport, r.dst, r.dport, r.proto));
    let (_, policy_counters) = worker.policy_counters();
    let lost = policy_counters.flow_records_lost.get();
    if lost > 0 {
        return Err(ReplayError::RecordsLost(lost));
    }
    write_flows_csv(output, start, &records).map_err(|source| ReplayError::Output {
        path: output.display().to_string(),
        source,
    })?;
    let counters = worker.counters();
    Ok(FlowsReplayed {
        frames: frames.len(),
        records: records.len(),
        flows: records
            .iter()
            .map(|r| (r.src, r.sport, r.dst, r.dport, r.proto, r.flow_start_ns))
            .collect::<HashSet<_>>()
            .len(),
        packets: records.iter().map(|r| r.stats.packets()).sum(),
        not_counted: DropReason::ALL
            .iter()
            .map(|&reason| (reason.name(), counters.drops_for(reason)))
            .filter(|&(_, count)| count > 0)
            .collect(),
        untracked: policy_counters.packets_untracked.get(),
        evicted: policy_counters.flows_evicted.get(),
    })
}

/// Columns of `vfn flows-from-pcap`'s output (`docs/flows.md`, Replaying a capture).
const FLOWS_CSV_HEADER: &str = "src,sport,dst,dport,proto,fwd_packets,fwd_bytes,bwd_packets,\
                                bwd_bytes,first,last,flow_start,end_reason";

fn write_flows_csv(
    path: &Path,
    start: Duration,
    records: &[FlowExportRecord],
) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    writeln!(out, "{FLOWS_CSV_HEADER}")?;
    for record in records {
        let (forward, reverse) = (record.stats.forward(), record.stats.reverse());
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            record.src,
            record.sport,
            record.dst,
            record.dport,
            record.proto,
            forward.packets(),
            forward.bytes(),
            reverse.packets(),
            reverse.bytes(),
            epoch_seconds(start, record.stats.first_ns()),
            epoch_seconds(start, record.stats.last_ns()),
            epoch_seconds(start, record.flow_start_ns),
            end_reason_name(record.end_reason),
        )?;
    }
    out.flush()
}

/// `ns` after the capture's first frame as seconds since the Unix epoch, to the nanosecond
/// (like tshark's `frame.time_epoch`).
fn epoch_seconds(start: Duration, ns: u64) -> String {
    let time = start + Duration::from_nanos(ns);
    format!("{}.{:09}", time.as_secs(), time.subsec_nanos())
}
