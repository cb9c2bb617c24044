//! Offline replay: frames from a pcap file run through the very same worker on a [`MemIo`], and
//! what leaves each port is written to a pcap file of its own ([`replay`]); or, with the
//! pipeline in replay mode, the flow records of the capture ([`replay_flows`]).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::time::Duration;

use crossbeam_channel::Receiver;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};

use crate::fib::FibLimits;
use crate::iface::{Interface, RpFilter};
use crate::io::{PacketIo, PortIndex};
use crate::mem_io::MemIo;
use crate::neigh::NeighbourTimers;
use crate::pipeline::PipelineMode;
use crate::policy::PolicyLimits;
use crate::router::RouterSpec;
use crate::slowpath::SlowPath;
use crate::telemetry::FlowExportRecord;
use crate::worker::{Worker, WorkerConfig};

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format {
        path: String,
        source: pcap_file::PcapError,
    },
    #[error("{path}: link type {link:?} is not Ethernet")]
    NotEthernet { path: String, link: DataLink },
}

/// A captured frame and its capture time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    pub timestamp: Duration,
    pub data: Vec<u8>,
}

/// Reads every frame of an Ethernet pcap file.
pub fn read(path: &Path) -> Result<Vec<CapturedFrame>, PcapError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| PcapError::Io {
        path: name.clone(),
        source,
    })?;
    let mut reader = PcapReader::new(BufReader::new(file)).map_err(|source| PcapError::Format {
        path: name.clone(),
        source,
    })?;
    let link = reader.header().datalink;
    if link != DataLink::ETHERNET {
        return Err(PcapError::NotEthernet { path: name, link });
    }
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|source| PcapError::Format {
            path: name.clone(),
            source,
        })?;
        frames.push(CapturedFrame {
            timestamp: packet.timestamp,
            data: packet.data.into_owned(),
        });
    }
    Ok(frames)
}

/// Writes frames to an Ethernet pcap file.
pub fn write(path: &Path, frames: &[CapturedFrame]) -> Result<(), PcapError> {
    let name = path.display().to_string();
    let file = File::create(path).map_err(|source| PcapError::Io {
        path: name.clone(),
        source,
    })?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(BufWriter::new(file), header).map_err(|source| {
        PcapError::Format {
            path: name.clone(),
            source,
        }
    })?;
    for frame in frames {
        let packet = PcapPacket::new(frame.timestamp, frame.data.len() as u32, &frame.data);
        writer
            .write_packet(&packet)
            .map_err(|source| PcapError::Format {
                path: name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// A replay's clock: each frame's capture time since the capture's first frame. A frame stamped
/// earlier than the frame before it is replayed at that frame's time: the workers' clock never
/// goes back (the flow table's expiry relies on it).
struct CaptureClock {
    start: Duration,
    now: Duration,
}

impl CaptureClock {
    fn new(input: &[CapturedFrame]) -> CaptureClock {
        CaptureClock {
            start: input.first().map_or(Duration::ZERO, |f| f.timestamp),
            now: Duration::ZERO,
        }
    }

    fn at(&mut self, frame: &CapturedFrame) -> Duration {
        self.now = self.now.max(frame.timestamp.saturating_sub(self.start));
        self.now
    }
}

/// Runs `input` (frames received on `port`, in capture order) through `worker` and its slow path
/// and returns what left each port, stamped with the capture time of the frame that caused it.
/// The capture's timestamps are the clock, so timers (neighbour resolution, ICMP rate limits) run
/// as they would have. A frame larger than a frame buffer is not replayed.
pub fn replay(
    worker: &mut Worker<MemIo>,
    slow_path: &mut SlowPath,
    port: PortIndex,
    input: &[CapturedFrame],
) -> Vec<Vec<CapturedFrame>> {
    let port_count = worker.io().port_count();
    let mut output: Vec<Vec<CapturedFrame>> = vec![Vec::new(); port_count];
    let mut clock = CaptureClock::new(input);
    for frame in input {
        let now = clock.at(frame);
        // Each poll takes everything injected before it, so the port always has room.
        let _ = worker.io_mut().inject(port, &frame.data);
        // Twice: the second poll sends what the slow path answered to the first.
        for _ in 0..2 {
            worker.poll_once(now);
            slow_path.step(now);
        }
        for (egress, out) in output.iter_mut().enumerate() {
            for data in worker.io_mut().take_sent(egress as PortIndex) {
                out.push(CapturedFrame {
                    timestamp: frame.timestamp,
                    data,
                });
            }
        }
    }
    output
}

/// A router of one port, `capture`, whose worker runs the pipeline's replay mode (no L2 or
/// route checks): the set-up of [`replay_flows`], with `policy` sizing its flow table and records.
pub fn replay_router_spec(policy: PolicyLimits) -> RouterSpec {
    RouterSpec {
        port_count: 1,
        interfaces: vec![Interface {
            name: "capture".into(),
            port: 0,
            vlan: None,
            mac: [0x02, 0, 0, 0, 0, 1],
            mtu: 1500,
            rp_filter: RpFilter::Off,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
        }],
        routes: Vec::new(),
        fib_limits: FibLimits::default(),
        neighbour_capacity: 1,
        neighbour_timers: NeighbourTimers::default(),
        worker: WorkerConfig {
            pipeline: PipelineMode::Replay,
            ..WorkerConfig::default()
        },
        policy,
        dynamic_entries: 0,
        mirror_sessions: Vec::new(),
    }
}

/// Runs `input` (frames received on `port`, in capture order) through `worker`, whose pipeline
/// is in replay mode ([`PipelineMode::Replay`]), one frame per loop iteration at its capture
/// time, then ends every flow's record ([`Worker::end_flow_records`]). Returns the records in
/// the order they ended, taken from `records` (the router's export queue,
/// [`Router::flow_exports`]) after every frame: the queue needs room for one frame's records and
/// then one record per flow in the table. Record times count from the capture's first frame.
/// What the worker sends back out of `port` is discarded. A frame larger than a frame buffer is
/// not replayed.
///
/// [`PipelineMode::Replay`]: crate::pipeline::PipelineMode::Replay
/// [`Router::flow_exports`]: crate::router::Router::flow_exports
pub fn replay_flows(
    worker: &mut Worker<MemIo>,
    port: PortIndex,
    input: &[CapturedFrame],
    records: &Receiver<FlowExportRecord>,
) -> Vec<FlowExportRecord> {
    worker.io_mut().discard_sent(port);
    let mut clock = CaptureClock::new(input);
    let mut ended = Vec::new();
    for frame in input {
        // Each poll takes the frame injected before it, so the port always has room.
        let _ = worker.io_mut().inject(port, &frame.data);
        worker.poll_once(clock.at(frame));
        ended.extend(records.try_iter());
    }
    worker.end_flow_records();
    ended.extend(records.try_iter());
    ended
}
