//! The router's metrics, with `prometheus-client`: a collector reads the workers' counters at
//! scrape time and sums nothing on the packet path (each worker counts in its own cells; no
//! atomic is shared between workers). The same text goes to the metrics endpoint (`[metrics]`)
//! and to the stats file (`vfn run --stats-file`) that `vfn lab` and the end-to-end tests read.
//! Names are prefixed `vfn_`, in base units (packets, bytes, seconds).

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vfn_dataplane::counters::{DropReason, PortCounters, WorkerCounters};
use vfn_dataplane::mirror::{CopyLost, MirrorCounters, SessionCounters};
use vfn_dataplane::policy::{
    ActivePolicy, PolicyCounters, RuleCounter, RuleCounters, SharedPolicy,
};
use vfn_dataplane::slowpath::SlowPathCounters;
use vfn_models::ScorerCounters;

/// What is counted, and the names to show it by.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub port_names: Vec<String>,
    pub workers: Vec<Arc<WorkerCounters>>,
    /// Per worker: per-rule counters and policy counters.
    pub rules: Vec<(Arc<RuleCounters>, Arc<PolicyCounters>)>,
    pub slow_path: Arc<SlowPathCounters>,
    /// Mirror session names, by index.
    pub mirror_sessions: Vec<String>,
    /// Per worker: its mirroring counters, by session.
    pub mirrors: Vec<Arc<MirrorCounters>>,
    /// The anomaly scorer's counters, when scoring is on.
    pub scorer: Option<Arc<ScorerCounters>>,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

/// What each rule of a rule set decided, summed over the workers.
pub struct RuleTotals {
    /// In the rule set's order.
    pub rules: Vec<Traffic>,
    /// Packets no rule matched.
    pub default: Traffic,
}

impl Sources {
    /// Per rule of `policy`, what the workers that count for its generation counted.
    pub fn rule_totals(&self, policy: &ActivePolicy) -> RuleTotals {
        let current: Vec<&RuleCounters> = self
            .rules
            .iter()
            .map(|(rules, _)| rules.as_ref())
            .filter(|rules| rules.generation() == policy.generation)
            .collect();
        let sum = |pick: &dyn Fn(&RuleCounters) -> Option<&RuleCounter>| {
            current.iter().filter_map(|rules| pick(rules)).fold(
                Traffic::default(),
                |total, counter| Traffic {
                    packets: total.packets + counter.packets.get(),
                    bytes: total.bytes + counter.bytes.get(),
                },
            )
        };
        RuleTotals {
            rules: (0..policy.rules.rules.len())
                .map(|index| sum(&|rules| rules.rules.get(index)))
                .collect(),
            default: sum(&|rules| Some(&rules.default)),
        }
    }
}

/// The collector: reads `sources` and the rule set in force at every scrape.
#[derive(Debug)]
struct Collected {
    sources: Sources,
    policy: SharedPolicy,
}

/// A label set of `N` pairs.
type Labels<const N: usize> = [(&'static str, Cow<'static, str>); N];

/// Encodes one counter family (`name` without `_total`, which the encoder adds).
/// A counter family of one sample without labels.
fn unlabelled_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    let no_labels: Labels<0> = [];
    counters(encoder, name, help, [(no_labels, value)])
}

fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn worker_label(index: usize) -> (&'static str, Cow<'static, str>) {
    ("worker", Cow::Owned(index.to_string()))
}

impl Collected {
    fn mirrors(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let sessions = || {
            self.sources
                .mirrors
                .iter()
                .enumerate()
                .flat_map(|(w, worker)| {
                    worker
                        .sessions
                        .iter()
                        .zip(&self.sources.mirror_sessions)
                        .map(move |(counters, name)| (w, name, counters))
                })
        };
        type SessionField = fn(&SessionCounters) -> u64;
        let fields: [(&str, &str, SessionField); 3] = [
            (
                "vfn_mirror_selected_packets",
                "Packets a mirror session selected (before sampling).",
                |c| c.selected.get(),
            ),
            ("vfn_mirror_copies", "Copies a mirror session sent.", |c| {
                c.copies.get()
            }),
            (
                "vfn_mirror_copy_bytes",
                "Bytes of the copies a mirror session sent (with their tunnel headers).",
                |c| c.copy_bytes.get(),
            ),
        ];
        for (name, help, field) in fields {
            let samples = sessions().map(|(w, session, counters)| {
                let labels: Labels<2> = [("session", Cow::Owned(session.clone())), worker_label(w)];
                (labels, field(counters))
            });
            counters(encoder, name, help, samples)?;
        }
        let lost = sessions().flat_map(|(w, session, counters)| {
            CopyLost::ALL.iter().map(move |&reason| {
                let labels: Labels<3> = [
                    ("session", Cow::Owned(session.clone())),
                    ("reason", Cow::Borrowed(reason.name())),
                    worker_label(w),
                ];
                (labels, counters.lost[reason as usize].get())
            })
        });
        counters(
            encoder,
            "vfn_mirror_lost",
            "Copies a mirror session selected and could not send, by reason.",
            lost,
        )
    }

    fn ports(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        type PortField = fn(&PortCounters) -> u64;
        let traffic: [(&str, &str, PortField, PortField); 2] = [
            (
                "vfn_port_packets",
                "Packets received (direction rx) and sent (tx) on a port.",
                |p| p.rx_packets.get(),
                |p| p.tx_packets.get(),
            ),
            (
                "vfn_port_bytes",
                "Bytes of the frames received (rx) and sent (tx) on a port.",
                |p| p.rx_bytes.get(),
                |p| p.tx_bytes.get(),
            ),
        ];
        let ports = || {
            self.sources
                .workers
                .iter()
                .enumerate()
                .flat_map(|(w, worker)| {
                    worker.ports.iter().enumerate().map(move |(p, counters)| {
                        let name = self.sources.port_names.get(p).map_or("?", String::as_str);
                        (w, name.to_owned(), counters)
                    })
                })
        };
        for (name, help, rx, tx) in traffic {
            let samples = ports().flat_map(|(w, port, counters)| {
                [("rx", rx(counters)), ("tx", tx(counters))].map(|(direction, value)| {
                    let labels: Labels<3> = [
                        ("port", Cow::Owned(port.clone())),
                        worker_label(w),
                        ("direction", Cow::Borrowed(direction)),
                    ];
                    (labels, value)
                })
            });
            counters(encoder, name, help, samples)?;
        }
        type CountField = fn(&PortCounters) -> u64;
        let others: [(&str, &str, CountField); 2] = [
            (
                "vfn_port_drops",
                "Packets received on a port and dropped.",
                |p| p.drops.get(),
            ),
            (
                "vfn_port_to_host",
                "Packets received on a port for the router itself.",
                |p| p.to_host.get(),
            ),
        ];
        for (name, help, field) in others {
            let samples = ports().map(|(w, port, counters)| {
                let labels: Labels<2> = [("port", Cow::Owned(port)), worker_label(w)];
                (labels, field(counters))
            });
            counters(encoder, name, help, samples)?;
        }
        Ok(())
    }

    fn workers(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let drops = self
            .sources
            .workers
            .iter()
            .enumerate()
            .flat_map(|(w, worker)| {
                DropReason::ALL.iter().map(move |&reason| {
                    let labels: Labels<2> =
                        [("reason", Cow::Borrowed(reason.name())), worker_label(w)];
                    (labels, worker.drops_for(reason))
                })
            });
        counters(encoder, "vfn_drops", "Packets dropped, by reason.", drops)?;
        type WorkerField = fn(&WorkerCounters) -> u64;
        let fields: [(&str, &str, WorkerField); 6] = [
            ("vfn_icmp_errors_sent", "ICMP errors sent.", |w| {
                w.icmp_errors_sent.get()
            }),
            (
                "vfn_icmp_errors_rate_limited",
                "ICMP errors not sent for the rate limit.",
                |w| w.icmp_errors_rate_limited.get(),
            ),
            (
                "vfn_resolve_requests_lost",
                "Neighbour resolution requests lost to a full slow-path queue.",
                |w| w.resolve_requests_lost.get(),
            ),
            (
                "vfn_worker_idle_waits",
                "Times a worker blocked in poll(2) for lack of traffic.",
                |w| w.idle_waits.get(),
            ),
            (
                "vfn_handed_off_packets",
                "Packets a worker received and handed to the worker owning their flow.",
                |w| w.handed_off.get(),
            ),
            (
                "vfn_handed_in_packets",
                "Packets other workers handed to this worker, which owns their flow.",
                |w| w.handed_in.get(),
            ),
        ];
        for (name, help, field) in fields {
            let samples = self.sources.workers.iter().enumerate().map(|(w, worker)| {
                let labels: Labels<1> = [worker_label(w)];
                (labels, field(worker))
            });
            counters(encoder, name, help, samples)?;
        }
        Ok(())
    }

    fn slow_path(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let slow = &self.sources.slow_path;
        for (name, help, value) in [
            (
                "vfn_slow_path_frames_in",
                "Frames for the router handled by the slow path.",
                slow.frames_in.get(),
            ),
            (
                "vfn_slow_path_frames_out",
                "Frames the slow path sent (replies, solicitations).",
                slow.frames_out.get(),
            ),
            (
                "vfn_slow_path_outbound_full",
                "Slow-path frames dropped for a full queue.",
                slow.outbound_queue_full.get(),
            ),
            (
                "vfn_neighbour_table_full",
                "Neighbours not resolved for a full table.",
                slow.neighbour_table_full.get(),
            ),
            (
                "vfn_neighbour_solicitations",
                "ARP requests and neighbour solicitations sent.",
                slow.solicitations.get(),
            ),
            (
                "vfn_local_output_unroutable",
                "Replies of the router with no route back.",
                slow.local_output_unroutable.get(),
            ),
            (
                "vfn_local_output_unresolved",
                "Replies of the router dropped while their next hop was resolved.",
                slow.local_output_unresolved.get(),
            ),
        ] {
            unlabelled_counter(encoder, name, help, value)?;
        }
        Ok(())
    }

    fn policy(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        type PolicyField = fn(&PolicyCounters) -> u64;
        let fields: [(&str, &str, PolicyField); 13] = [
            (
                "vfn_flows_evicted",
                "Flows evicted from a full flow table for a new one (their records exported).",
                |p| p.flows_evicted.get(),
            ),
            (
                "vfn_flow_records_exported",
                "Flow records queued for the exporter.",
                |p| p.flow_records_exported.get(),
            ),
            (
                "vfn_flow_records_lost",
                "Flow records lost to a full export queue.",
                |p| p.flow_records_lost.get(),
            ),
            (
                "vfn_packets_untracked",
                "Forwarded packets no flow took (later fragments, a full table, ...).",
                |p| p.packets_untracked.get(),
            ),
            (
                "vfn_flows_created",
                "Flows a rule allowed and the flow table took.",
                |p| p.flows_created.get(),
            ),
            (
                "vfn_flow_table_full",
                "Allowed flows the full flow table could not take.",
                |p| p.flow_table_full.get(),
            ),
            (
                "vfn_flows_rejudged",
                "Flows judged again under a new rule set.",
                |p| p.flows_rejudged.get(),
            ),
            (
                "vfn_flows_expired",
                "Flows removed after their idle timeout.",
                |p| p.flows_expired.get(),
            ),
            (
                "vfn_mirrored",
                "Packets a mirror action or entry selected.",
                |p| p.mirrored.get(),
            ),
            ("vfn_rule_log_events", "Matches of rules that log.", |p| {
                p.log_events.get()
            }),
            (
                "vfn_rule_log_events_lost",
                "Matches of rules that log not queued (queue full).",
                |p| p.log_events_lost.get(),
            ),
            (
                "vfn_scoring_snapshots_queued",
                "Feature snapshots of flows queued for the anomaly scorer.",
                |p| p.snapshots_queued.get(),
            ),
            (
                "vfn_scoring_snapshots_lost",
                "Feature snapshots lost to the scorer's full queue.",
                |p| p.snapshots_lost.get(),
            ),
        ];
        for (name, help, field) in fields {
            let samples = self
                .sources
                .rules
                .iter()
                .enumerate()
                .map(|(w, (_, policy))| {
                    let labels: Labels<1> = [worker_label(w)];
                    (labels, field(policy))
                });
            counters(encoder, name, help, samples)?;
        }
        let mut occupancy = encoder.encode_descriptor(
            "vfn_flows_in_table",
            "Flows in a worker's flow table.",
            None,
            MetricType::Gauge,
        )?;
        for (w, (_, policy)) in self.sources.rules.iter().enumerate() {
            let labels: Labels<1> = [worker_label(w)];
            let flows = i64::try_from(policy.flows_in_table.get()).unwrap_or(i64::MAX);
            ConstGauge::new(flows).encode(occupancy.encode_family(&labels)?)?;
        }
        let mut table_bytes = encoder.encode_descriptor(
            "vfn_flow_table_bytes",
            "Memory a worker's flow table allocated at start (entries, statistics, index, timers).",
            None,
            MetricType::Gauge,
        )?;
        for (w, (_, policy)) in self.sources.rules.iter().enumerate() {
            let labels: Labels<1> = [worker_label(w)];
            let bytes = i64::try_from(policy.flow_table_bytes.get()).unwrap_or(i64::MAX);
            ConstGauge::new(bytes).encode(table_bytes.encode_family(&labels)?)?;
        }

        let Some(policy) = self.policy.load_full() else {
            return Ok(());
        };
        let mut generation = encoder.encode_descriptor(
            "vfn_policy_generation",
            "The rule set in force: its publication count since start, labelled by version.",
            None,
            MetricType::Gauge,
        )?;
        let labels: Labels<1> = [("version", Cow::Owned(policy.rules.version.clone()))];
        ConstGauge::new(i64::from(policy.generation)).encode(generation.encode_family(&labels)?)?;
        let totals = self.sources.rule_totals(&policy);
        let per_rule = || {
            policy
                .rules
                .rules
                .iter()
                .map(|rule| rule.id.as_str())
                .zip(totals.rules.iter().copied())
                .chain([("default", totals.default)])
        };
        type TrafficField = fn(&Traffic) -> u64;
        let rule_fields: [(&str, &str, TrafficField); 2] = [
            (
                "vfn_rule_packets",
                "Packets a rule decided (the default action as rule \"default\").",
                |t| t.packets,
            ),
            (
                "vfn_rule_bytes",
                "Bytes of the packets a rule decided.",
                |t| t.bytes,
            ),
        ];
        for (name, help, field) in rule_fields {
            let samples = per_rule().map(|(id, traffic)| {
                let labels: Labels<1> = [("rule", Cow::Owned(id.to_owned()))];
                (labels, field(&traffic))
            });
            counters(encoder, name, help, samples)?;
        }
        Ok(())
    }
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.ports(&mut encoder)?;
        self.workers(&mut encoder)?;
        self.policy(&mut encoder)?;
        self.mirrors(&mut encoder)?;
        self.scoring(&mut encoder)?;
        self.slow_path(&mut encoder)
    }
}

impl Collected {
    fn scoring(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let Some(scorer) = &self.sources.scorer else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "vfn_scoring_flows_scored",
                "Flow snapshots the models scored.",
                scorer.flows_scored.get(),
            ),
            (
                "vfn_scoring_batches",
                "Batches of snapshots run through the models.",
                scorer.batches.get(),
            ),
            (
                "vfn_scoring_failures",
                "Batches the models failed to score (their flows got no score).",
                scorer.failures.get(),
            ),
            (
                "vfn_scoring_decisions",
                "Sources the scorer decided to act on.",
                scorer.decisions.get(),
            ),
            (
                "vfn_scoring_decisions_lost",
                "Decisions the controller's full queue could not take.",
                scorer.decisions_lost.get(),
            ),
            (
                "vfn_scoring_sources_untracked",
                "Scored flows whose source the scorer's full table could not follow.",
                scorer.sources_untracked.get(),
            ),
        ] {
            unlabelled_counter(encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// The registry of every metric, shared by the stats file and the metrics endpoint.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

/// How long rule sets took from request to live: 0.5 ms to 8 s.
pub fn apply_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Metrics {
    pub fn new(sources: Sources, policy: SharedPolicy, apply_duration: Histogram) -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "vfn_rule_set_apply_duration_seconds",
            "Rule sets applied: from the request's arrival (or the signal) to live.",
            apply_duration,
        );
        registry.register_collector(Box::new(Collected { sources, policy }));
        Metrics { registry }
    }

    /// The metrics in the text exposition format (OpenMetrics).
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "encoding the metrics");
        }
        text
    }
}

/// Writes `text` to `path` atomically (a reader sees the old or the new file, never a part).
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_port_direction_and_reason() {
        let worker = Arc::new(WorkerCounters::new(2));
        worker.ports[1].rx_packets.add(7);
        worker.ports[1].tx_bytes.add(640);
        worker.count_drop(1, DropReason::NoRoute);
        let sources = Sources {
            port_names: vec!["p0".into(), "p1".into()],
            workers: vec![worker],
            ..Sources::default()
        };
        let metrics = Metrics::new(sources, SharedPolicy::default(), apply_duration_histogram());
        let text = metrics.render();
        assert!(
            text.contains("vfn_port_packets_total{port=\"p1\",worker=\"0\",direction=\"rx\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("vfn_port_bytes_total{port=\"p1\",worker=\"0\",direction=\"tx\"} 640\n"),
            "{text}"
        );
        assert!(text.contains("vfn_drops_total{reason=\"no_route\",worker=\"0\"} 1\n"));
        assert_eq!(text.matches("vfn_drops_total{").count(), DropReason::COUNT);
        assert!(text.contains("# TYPE vfn_rule_set_apply_duration_seconds histogram"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
