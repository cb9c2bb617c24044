//! The scorer's loop on a thread, fed like the workers feed it: a scanning source is acted on
//! within a bounded time, a source of ordinary web flows is not, every snapshot is recorded when
//! recording is on, and the counters add up.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vfn_dataplane::telemetry::{EndReason, FeatureSnapshot, SnapshotTrigger};
use vfn_flow::{Direction, FlowStats, PacketSample, TcpFlags};
use vfn_models::{
    Engine, EngineConfig, FeatureBlock, FeatureRecorder, ModelBundle, Scorer, ScoringShared,
    ThreatReport,
};

const SCANNER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
const SYN: u8 = 0x02;
const RST_ACK: u8 = 0x14;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;

/// A flow record from `(microseconds, from the initiator, IP length, TCP flags)` packets.
fn record(packets: &[(u64, bool, u32, u8)]) -> FlowStats {
    let mut stats = FlowStats::default();
    for &(us, forward, ip_length, flags) in packets {
        let sample = PacketSample {
            time_ns: us * 1_000,
            direction: if forward {
                Direction::Forward
            } else {
                Direction::Reverse
            },
            ip_length,
            tcp_flags: TcpFlags::from_header_byte(flags),
            tcp_window: Some(64_240),
            initiator_egress: 1,
        };
        stats.record(&sample, 5_000_000_000);
    }
    stats
}

fn snapshot(src: Ipv4Addr, sport: u16, dport: u16, stats: FlowStats) -> FeatureSnapshot {
    FeatureSnapshot {
        worker: 0,
        src: src.into(),
        dst: SERVER.into(),
        sport,
        dport,
        proto: 6,
        trigger: SnapshotTrigger::RecordEnd(EndReason::EndOfFlow),
        stats,
    }
}

/// A closed port's answer to a SYN scan's probe.
fn probe(port: u16) -> FeatureSnapshot {
    snapshot(
        SCANNER,
        40_000,
        port,
        record(&[(0, true, 44, SYN), (150, false, 40, RST_ACK)]),
    )
}

/// A web request of 400 bytes answered with 20 kB, the connection closed by both.
fn web_flow(sport: u16) -> FeatureSnapshot {
    let mut packets = vec![
        (0, true, 60, SYN),
        (300, false, 60, SYN | ACK),
        (600, true, 52, ACK),
        (900, true, 452, PSH_ACK),
    ];
    for segment in 0..14u64 {
        packets.push((2_000 + segment * 100, false, 1_500, ACK));
        if segment % 2 == 1 {
            packets.push((2_050 + segment * 100, true, 52, ACK));
        }
    }
    packets.extend([
        (4_000, false, 52, FIN_ACK),
        (4_300, true, 52, FIN_ACK),
        (4_600, false, 52, ACK),
    ]);
    snapshot(CLIENT, sport, 80, record(&packets))
}

fn bundle() -> ModelBundle {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("trained/datasets-base");
    ModelBundle::load_dir(&dir).expect("bundle")
}

#[test]
fn a_scanner_is_acted_on_within_a_second_and_a_web_client_is_not() {
    let (snapshots, queue) = crossbeam_channel::bounded(1_024);
    let (decided, decisions) = crossbeam_channel::bounded::<ThreatReport>(16);
    let shared = ScoringShared::new(bundle());
    let recording = tempfile::NamedTempFile::new().expect("temporary file");
    let scorer = Scorer::new(
        queue,
        shared.clone(),
        Engine::new(EngineConfig::default()),
        Box::new(move |report| decided.try_send(report).is_ok()),
        64,
        Instant::now(),
    )
    .with_recorder(
        FeatureRecorder::create(recording.path(), 1_000, std::time::SystemTime::now())
            .expect("recorder"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || scorer.run(&stop))
    };
    for sport in 0..50 {
        snapshots
            .try_send(web_flow(50_000 + sport))
            .expect("queued");
    }
    let start = Instant::now();
    for port in 1..=100 {
        snapshots.try_send(probe(port)).expect("queued");
    }
    let report = decisions
        .recv_timeout(Duration::from_secs(1))
        .expect("the scanner is acted on within a second");
    let acted_after = start.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    thread.join().expect("scorer thread");

    assert_eq!(
        report.decision.source,
        IpAddr::from(SCANNER),
        "{acted_after:?}"
    );
    assert_eq!(report.model, "datasets-base");
    assert!(report.decision.threat >= report.decision.threshold);
    assert!(
        decisions
            .try_iter()
            .all(|r| r.decision.source != IpAddr::from(CLIENT)),
        "the web client is left alone"
    );
    let counters = &shared.counters;
    assert_eq!(counters.flows_scored.get(), 150);
    assert_eq!(counters.failures.get(), 0);
    assert_eq!(counters.decisions.get(), 1, "one action while it lasts");

    let text = std::fs::read_to_string(recording.path()).expect("recording");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    let cic = FeatureBlock::named("cic").expect("cic");
    let names: Vec<&str> = cic.features().map(|f| f.name()).collect();
    assert_eq!(
        header,
        format!(
            "first_unix_ms,taken_unix_ms,src,dst,sport,dport,proto,trigger,{}",
            names.join(",")
        )
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 150, "every snapshot recorded");
    let probe_row: Vec<&str> = rows[60].split(',').collect();
    assert_eq!(
        &probe_row[2..8],
        [
            "198.18.1.2",
            "198.18.3.2",
            "40000",
            "11",
            "6",
            "end_of_flow"
        ]
    );
    // fwd_packets, bwd_packets, fwd_bytes, bwd_bytes (raw), then rst_count.
    assert_eq!(&probe_row[9..13], ["1", "1", "44", "40"]);
    assert_eq!(probe_row[8 + 21], "1", "one RST");
}
