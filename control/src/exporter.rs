//! The flow exporter: one thread that takes the workers' flow records from their bounded queue,
//! names what decided them (rule id, rule-set version), sends them as IPFIX to every collector
//! (UDP) and to the API's `WatchFlows` watchers. Workers never wait for it: what the queue
//! cannot hold they count as lost.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use vfn_config::CollectorConfig;
use vfn_control::proto;
use vfn_dataplane::iface::Interfaces;
use vfn_dataplane::policy::{ActivePolicy, SharedPolicy};
use vfn_dataplane::telemetry::{
    DirectionStats, EndReason, FlowExportRecord, RunningStats, TcpFlagCounts,
};
use vfn_ipfix::{CryptoPan, Exporter, ExporterConfig, FlowAddresses, FlowExport, ShortText};

/// Rule sets remembered to name the rules of records judged under an older one.
const POLICY_HISTORY: usize = 8;
/// Records handled per wake-up at most, so that flushing keeps its pace.
const RECORDS_PER_TURN: usize = 4096;
/// Partly filled messages are sent at least this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Flow updates kept for watchers that read slowly.
pub const WATCH_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("telemetry.collectors[{index}]: {reason}")]
    Collector { index: usize, reason: String },
    #[error("telemetry.collectors[{index}].anonymize_key_file {path}: {reason}")]
    Key {
        index: usize,
        path: PathBuf,
        reason: String,
    },
}

/// Flow updates for `WatchFlows`.
pub type FlowWatchers = tokio::sync::broadcast::Sender<proto::FlowRecord>;

struct Collector {
    address: SocketAddr,
    exporter: Exporter,
    /// Datagrams the socket refused (a collector that is down, an unroutable address).
    send_errors: u64,
}

pub struct FlowExporter {
    records: Receiver<FlowExportRecord>,
    socket: Option<UdpSocket>,
    collectors: Vec<Collector>,
    watchers: FlowWatchers,
    policy: SharedPolicy,
    history: VecDeque<Arc<ActivePolicy>>,
    interfaces: Arc<Interfaces>,
    epoch_unix: SystemTime,
}

/// A Crypto-PAn key: 64 hex digits in a file.
fn read_key(index: usize, path: &Path) -> Result<CryptoPan, ExporterError> {
    let error = |reason: String| ExporterError::Key {
        index,
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let digits = text.trim();
    let mut key = [0u8; 32];
    if digits.len() != 64 {
        return Err(error("the key is 64 hex digits (32 bytes)".into()));
    }
    for (byte, pair) in key.iter_mut().zip(digits.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| error("not hex".into()))?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| error("not hex".into()))?;
    }
    Ok(CryptoPan::new(&key))
}

impl FlowExporter {
    /// Sets up the collectors (a refused one stops the start, naming it).
    pub fn new(
        records: Receiver<FlowExportRecord>,
        collectors: &[CollectorConfig],
        watchers: FlowWatchers,
        policy: SharedPolicy,
        interfaces: Arc<Interfaces>,
        epoch_unix: SystemTime,
    ) -> Result<FlowExporter, ExporterError> {
        let collectors = collectors
            .iter()
            .enumerate()
            .map(|(index, config)| {
                let anonymization = config
                    .anonymize_key_file
                    .as_ref()
                    .map(|path| read_key(index, path))
                    .transpose()?;
                let exporter = Exporter::new(ExporterConfig {
                    observation_domain_id: config.observation_domain,
                    message_size_max: config.message_size,
                    template_refresh_messages: config.template_refresh_messages,
                    template_refresh_seconds: config.template_refresh_s,
                    anonymization,
                })
                .map_err(|e| ExporterError::Collector {
                    index,
                    reason: e.to_string(),
                })?;
                Ok(Collector {
                    address: config.address,
                    exporter,
                    send_errors: 0,
                })
            })
            .collect::<Result<Vec<_>, ExporterError>>()?;
        let socket = if collectors.is_empty() {
            None
        } else {
            let socket = UdpSocket::bind(SocketAddr::from(([0u8; 16], 0)))
                .or_else(|_| UdpSocket::bind(SocketAddr::from(([0u8; 4], 0))))
                .map_err(|e| ExporterError::Collector {
                    index: 0,
                    reason: format!("opening a UDP socket: {e}"),
                })?;
            Some(socket)
        };
        Ok(FlowExporter {
            records,
            socket,
            collectors,
            watchers,
            policy,
            history: VecDeque::with_capacity(POLICY_HISTORY),
            interfaces,
            epoch_unix,
        })
    }

    /// Exports until `stop` is set, then sends what is left.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut last_flush = Instant::now();
        // A handle of our own, so that records are taken while `self` exports them.
        let records = self.records.clone();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(first) = records.recv_timeout(Duration::from_millis(100)) {
                self.export(&first);
                for record in records.try_iter().take(RECORDS_PER_TURN - 1) {
                    self.export(&record);
                }
            }
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                last_flush = Instant::now();
                self.flush();
            }
        }
        for record in records.try_iter() {
            self.export(&record);
        }
        self.flush();
    }

    fn unix_now_s(&self) -> u32 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
    }

    fn unix_millis(&self, ns: u64) -> u64 {
        (self.epoch_unix + Duration::from_nanos(ns))
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn flush(&mut self) {
        let now = self.unix_now_s();
        let Some(socket) = &self.socket else { return };
        for collector in &mut self.collectors {
            let address = collector.address;
            let errors = &mut collector.send_errors;
            collector.exporter.flush(now, |message| {
                send(socket, address, message, errors);
            });
        }
    }

    /// The rule set of `generation`, if it is in force or was recently.
    fn policy_of(&mut self, generation: u32) -> Option<Arc<ActivePolicy>> {
        if let Some(current) = self.policy.load_full()
            && !self
                .history
                .iter()
                .any(|p| p.generation == current.generation)
        {
            if self.history.len() == POLICY_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(current);
        }
        self.history
            .iter()
            .rev()
            .find(|p| p.generation == generation)
            .cloned()
    }

    fn export(&mut self, record: &FlowExportRecord) {
        let policy = (record.generation != 0)
            .then(|| self.policy_of(record.generation))
            .flatten();
        let version = policy.as_ref().map_or("", |p| p.rules.version.as_str());
        let rule = record
            .rule
            .and_then(|index| policy.as_ref()?.rules.rules.get(index as usize))
            .map_or("", |rule| rule.id.as_str());
        if !self.collectors.is_empty() {
            let export = self.ipfix_record(record, rule, version);
            let now = self.unix_now_s();
            if let Some(socket) = &self.socket {
                for collector in &mut self.collectors {
                    let address = collector.address;
                    let errors = &mut collector.send_errors;
                    collector.exporter.push(&export, now, |message| {
                        send(socket, address, message, errors);
                    });
                }
            }
        }
        if self.watchers.receiver_count() > 0 {
            let update = self.watch_record(record, rule, version);
            let _ = self.watchers.send(update);
        }
    }

    fn ipfix_record(&self, record: &FlowExportRecord, rule: &str, version: &str) -> FlowExport {
        let stats = &record.stats;
        let addresses = match (record.src, record.dst) {
            (IpAddr::V4(source), IpAddr::V4(destination)) => FlowAddresses::V4 {
                source,
                destination,
            },
            (source, destination) => FlowAddresses::V6 {
                source: v6(source),
                destination: v6(destination),
            },
        };
        let flags = stats.flag_counts();
        FlowExport {
            addresses,
            source_port: record.sport,
            destination_port: record.dport,
            protocol: record.proto,
            ingress_interface: record.ingress.into(),
            egress_interface: record.egress.into(),
            flow_start_ms: self.unix_millis(stats.first_ns()),
            flow_end_ms: self.unix_millis(stats.last_ns()),
            end_reason: match record.end_reason {
                EndReason::IdleTimeout => vfn_ipfix::FlowEndReason::IdleTimeout,
                EndReason::ActiveTimeout => vfn_ipfix::FlowEndReason::ActiveTimeout,
                EndReason::EndOfFlow => vfn_ipfix::FlowEndReason::EndOfFlowDetected,
                EndReason::ForcedEnd => vfn_ipfix::FlowEndReason::ForcedEnd,
                EndReason::LackOfResources => vfn_ipfix::FlowEndReason::LackOfResources,
            },
            tcp_control_bits: stats.flags().header_byte(),
            tcp_flag_counts: vfn_ipfix::TcpFlagCounts {
                fin: flags.fin.into(),
                syn: flags.syn.into(),
                rst: flags.rst.into(),
                psh: flags.psh.into(),
                ack: flags.ack.into(),
                urg: flags.urg.into(),
                ece: flags.ece.into(),
                cwr: flags.cwr.into(),
            },
            forward: ipfix_direction(stats.forward()),
            reverse: ipfix_direction(stats.reverse()),
            inter_arrival_us: ipfix_summary(stats.inter_arrival(), 1000),
            active_us: ipfix_summary(&stats.active_periods(), 1000),
            idle_us: ipfix_summary(stats.idle_periods(), 1000),
            rule_id: ShortText::truncated(rule),
            rule_set_version: ShortText::truncated(version),
        }
    }

    fn watch_record(
        &self,
        record: &FlowExportRecord,
        rule: &str,
        version: &str,
    ) -> proto::FlowRecord {
        let stats = &record.stats;
        let name = |index: u16| {
            self.interfaces
                .get(index)
                .map(|i| i.name.clone())
                .unwrap_or_default()
        };
        let flags = stats.flag_counts();
        proto::FlowRecord {
            source: record.src.to_string(),
            source_port: record.sport.into(),
            destination: record.dst.to_string(),
            destination_port: record.dport.into(),
            protocol: record.proto.into(),
            ingress: name(record.ingress),
            egress: name(record.egress),
            worker: record.worker.into(),
            flow_start_unix_millis: self.unix_millis(record.flow_start_ns),
            record_start_unix_millis: self.unix_millis(stats.first_ns()),
            record_end_unix_millis: self.unix_millis(stats.last_ns()),
            end_reason: end_reason_name(record.end_reason).into(),
            tcp_state: format!("{:?}", record.tcp).to_lowercase(),
            forward: Some(watch_direction(stats.forward())),
            reverse: Some(watch_direction(stats.reverse())),
            inter_arrival_micros: Some(watch_summary(stats.inter_arrival(), 1000)),
            active_micros: Some(watch_summary(&stats.active_periods(), 1000)),
            idle_micros: Some(watch_summary(stats.idle_periods(), 1000)),
            tcp_flags: Some(watch_flags(&flags)),
            verdict: verdict_name(record).into(),
            rule: rule.into(),
            rule_set_version: version.into(),
            generation: record.generation,
        }
    }
}

fn send(socket: &UdpSocket, address: SocketAddr, message: &[u8], errors: &mut u64) {
    if let Err(error) = socket.send_to(message, address) {
        *errors += 1;
        // Logged once per power of two, so that a dead collector does not flood the log.
        if errors.is_power_of_two() {
            tracing::warn!(%address, %error, failures = *errors, "sending IPFIX");
        }
    }
}

fn v6(address: IpAddr) -> std::net::Ipv6Addr {
    match address {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    }
}

/// `stats` of nanoseconds (or plain values with `per_unit` 1) in the exported unit.
fn ipfix_summary(stats: &RunningStats, per_unit: u64) -> vfn_ipfix::Summary {
    let unit = per_unit as f64;
    vfn_ipfix::Summary {
        min: stats.min() / per_unit,
        max: stats.max() / per_unit,
        mean: stats.mean() / unit,
        std_dev: stats.std_dev() / unit,
    }
}

fn ipfix_direction(direction: &DirectionStats) -> vfn_ipfix::DirectionStats {
    vfn_ipfix::DirectionStats {
        octets: direction.bytes(),
        packets: direction.packets(),
        packet_length: ipfix_summary(direction.lengths(), 1),
        inter_arrival_us: ipfix_summary(direction.inter_arrival(), 1000),
        initial_tcp_window: direction.initial_window(),
    }
}

fn watch_summary(stats: &RunningStats, per_unit: u64) -> proto::Summary {
    let summary = ipfix_summary(stats, per_unit);
    proto::Summary {
        min: summary.min,
        max: summary.max,
        mean: summary.mean,
        std_dev: summary.std_dev,
    }
}

fn watch_direction(direction: &DirectionStats) -> proto::FlowDirection {
    proto::FlowDirection {
        packets: direction.packets(),
        bytes: direction.bytes(),
        packet_length: Some(watch_summary(direction.lengths(), 1)),
        inter_arrival_micros: Some(watch_summary(direction.inter_arrival(), 1000)),
        initial_tcp_window: direction.initial_window().map(u32::from),
    }
}

fn watch_flags(flags: &TcpFlagCounts) -> proto::TcpFlagCounts {
    proto::TcpFlagCounts {
        fin: flags.fin.into(),
        syn: flags.syn.into(),
        rst: flags.rst.into(),
        psh: flags.psh.into(),
        ack: flags.ack.into(),
        urg: flags.urg.into(),
        ece: flags.ece.into(),
        cwr: flags.cwr.into(),
    }
}

pub fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::IdleTimeout => "idle_timeout",
        EndReason::ActiveTimeout => "active_timeout",
        EndReason::EndOfFlow => "end_of_flow",
        EndReason::ForcedEnd => "forced_end",
        EndReason::LackOfResources => "lack_of_resources",
    }
}

/// Whether a rule, the default action or no rule set let the flow pass.
pub fn verdict_name(record: &FlowExportRecord) -> &'static str {
    match (record.generation, record.rule) {
        (0, _) => "no-policy",
        (_, Some(_)) => "rule",
        (_, None) => "default",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_holds_64_hex_digits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        std::fs::write(&path, format!("{hex}\n")).expect("write");
        let key = read_key(0, &path).expect("a key");
        let address = std::net::Ipv4Addr::new(198, 18, 1, 2);
        assert_ne!(
            key.anonymize_ipv4(address),
            address,
            "addresses leave anonymized"
        );
        for bad in [&hex[..62], &hex.replace('0', "g")] {
            std::fs::write(&path, bad).expect("write");
            let error = read_key(3, &path).expect_err("refused").to_string();
            assert!(
                error.starts_with("telemetry.collectors[3].anonymize_key_file"),
                "{error}"
            );
        }
        let missing = read_key(0, &dir.path().join("none")).expect_err("missing");
        assert!(missing.to_string().contains("none"));
    }
}
