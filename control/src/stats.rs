//! Counters rendered in the Prometheus text exposition format, written atomically to a file
//! (`vfn run --stats-file`) that operators, `vfn lab` and the end-to-end tests read.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use vfn_dataplane::counters::{DropReason, WorkerCounters};
use vfn_dataplane::policy::{ActivePolicy, PolicyCounters, RuleCounter, RuleCounters};
use vfn_dataplane::slowpath::SlowPathCounters;

/// What is counted, and the names to show it by.
pub struct Sources {
    pub port_names: Vec<String>,
    pub workers: Vec<Arc<WorkerCounters>>,
    /// Per worker: per-rule counters and policy counters.
    pub rules: Vec<(Arc<RuleCounters>, Arc<PolicyCounters>)>,
    pub slow_path: Arc<SlowPathCounters>,
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
}

/// The counters as Prometheus text, one sample per port or reason and worker; per rule of the
/// rule set in force (`policy`), summed over the workers that count for it.
pub fn render(sources: &Sources, policy: Option<&ActivePolicy>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    type PortField = fn(&vfn_dataplane::counters::PortCounters) -> u64;
    let port_fields: [(&str, &str, PortField); 6] = [
        (
            "vfn_port_rx_packets_total",
            "Packets received on a port.",
            |p| p.rx_packets.get(),
        ),
        (
            "vfn_port_rx_bytes_total",
            "Bytes received on a port.",
            |p| p.rx_bytes.get(),
        ),
        (
            "vfn_port_tx_packets_total",
            "Packets sent on a port.",
            |p| p.tx_packets.get(),
        ),
        ("vfn_port_tx_bytes_total", "Bytes sent on a port.", |p| {
            p.tx_bytes.get()
        }),
        (
            "vfn_port_drops_total",
            "Packets received on a port and dropped.",
            |p| p.drops.get(),
        ),
        (
            "vfn_port_to_host_total",
            "Packets received on a port for the router itself.",
            |p| p.to_host.get(),
        ),
    ];
    for (name, help, field) in port_fields {
        family(&mut out, name, help);
        for (worker_index, worker) in sources.workers.iter().enumerate() {
            for (port, counters) in worker.ports.iter().enumerate() {
                let port_name = sources.port_names.get(port).map_or("?", String::as_str);
                let _ = writeln!(
                    out,
                    "{name}{{port=\"{port_name}\",worker=\"{worker_index}\"}} {}",
                    field(counters)
                );
            }
        }
    }
    family(&mut out, "vfn_drops_total", "Packets dropped, by reason.");
    for (worker_index, worker) in sources.workers.iter().enumerate() {
        for &reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "vfn_drops_total{{reason=\"{}\",worker=\"{worker_index}\"}} {}",
                reason.name(),
                worker.drops_for(reason)
            );
        }
    }
    type WorkerField = fn(&WorkerCounters) -> u64;
    let worker_fields: [(&str, &str, WorkerField); 4] = [
        ("vfn_icmp_errors_sent_total", "ICMP errors sent.", |w| {
            w.icmp_errors_sent.get()
        }),
        (
            "vfn_icmp_errors_rate_limited_total",
            "ICMP errors not sent for the rate limit.",
            |w| w.icmp_errors_rate_limited.get(),
        ),
        (
            "vfn_resolve_requests_lost_total",
            "Neighbour resolution requests lost to a full slow-path queue.",
            |w| w.resolve_requests_lost.get(),
        ),
        (
            "vfn_worker_idle_waits_total",
            "Times a worker blocked in poll(2) for lack of traffic.",
            |w| w.idle_waits.get(),
        ),
    ];
    for (name, help, field) in worker_fields {
        family(&mut out, name, help);
        for (worker_index, worker) in sources.workers.iter().enumerate() {
            let _ = writeln!(out, "{name}{{worker=\"{worker_index}\"}} {}", field(worker));
        }
    }
    render_policy(&mut out, sources, policy);
    let slow = &sources.slow_path;
    for (name, help, value) in [
        (
            "vfn_slow_path_frames_in_total",
            "Frames for the router handled by the slow path.",
            slow.frames_in.get(),
        ),
        (
            "vfn_slow_path_frames_out_total",
            "Frames the slow path sent (replies, solicitations).",
            slow.frames_out.get(),
        ),
        (
            "vfn_slow_path_outbound_full_total",
            "Slow-path frames dropped for a full queue.",
            slow.outbound_queue_full.get(),
        ),
        (
            "vfn_neighbour_table_full_total",
            "Neighbours not resolved for a full table.",
            slow.neighbour_table_full.get(),
        ),
        (
            "vfn_neighbour_solicitations_total",
            "ARP requests and neighbour solicitations sent.",
            slow.solicitations.get(),
        ),
        (
            "vfn_local_output_unroutable_total",
            "Replies of the router with no route back.",
            slow.local_output_unroutable.get(),
        ),
        (
            "vfn_local_output_unresolved_total",
            "Replies of the router dropped while their next hop was resolved.",
            slow.local_output_unresolved.get(),
        ),
    ] {
        family(&mut out, name, help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

fn render_policy(out: &mut String, sources: &Sources, policy: Option<&ActivePolicy>) {
    type PolicyField = fn(&PolicyCounters) -> u64;
    let fields: [(&str, &str, PolicyField); 7] = [
        (
            "vfn_flows_created_total",
            "Flows a rule allowed and the flow table took.",
            |p| p.flows_created.get(),
        ),
        (
            "vfn_flow_table_full_total",
            "Allowed flows the full flow table could not take.",
            |p| p.flow_table_full.get(),
        ),
        (
            "vfn_flows_rejudged_total",
            "Flows judged again under a new rule set.",
            |p| p.flows_rejudged.get(),
        ),
        (
            "vfn_flows_expired_total",
            "Flows removed after their idle timeout.",
            |p| p.flows_expired.get(),
        ),
        (
            "vfn_mirrored_total",
            "Packets a mirror action or entry selected.",
            |p| p.mirrored.get(),
        ),
        (
            "vfn_rule_log_events_total",
            "Matches of rules that log.",
            |p| p.log_events.get(),
        ),
        (
            "vfn_rule_log_events_lost_total",
            "Matches of rules that log not queued (queue full).",
            |p| p.log_events_lost.get(),
        ),
    ];
    for (name, help, field) in fields {
        family(out, name, help);
        for (worker_index, (_, counters)) in sources.rules.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{worker=\"{worker_index}\"}} {}",
                field(counters)
            );
        }
    }
    let Some(policy) = policy else { return };
    let _ = writeln!(out, "# HELP vfn_policy_generation The rule set in force.");
    let _ = writeln!(out, "# TYPE vfn_policy_generation gauge");
    let _ = writeln!(
        out,
        "vfn_policy_generation{{version=\"{}\"}} {}",
        policy.rules.version, policy.generation
    );
    let totals = sources.rule_totals(policy);
    type TrafficField = fn(&Traffic) -> u64;
    let rule_fields: [(&str, &str, TrafficField); 2] = [
        (
            "vfn_rule_packets_total",
            "Packets a rule decided (the default action as rule \"default\").",
            |t| t.packets,
        ),
        (
            "vfn_rule_bytes_total",
            "Bytes of the packets a rule decided.",
            |t| t.bytes,
        ),
    ];
    for (name, help, field) in rule_fields {
        family(out, name, help);
        for (rule, traffic) in policy.rules.rules.iter().zip(&totals.rules) {
            let _ = writeln!(out, "{name}{{rule=\"{}\"}} {}", rule.id, field(traffic));
        }
        let _ = writeln!(out, "{name}{{rule=\"default\"}} {}", field(&totals.default));
    }
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
    fn renders_every_port_and_reason() {
        let worker = Arc::new(WorkerCounters::new(2));
        worker.ports[1].rx_packets.add(7);
        worker.count_drop(1, DropReason::NoRoute);
        let text = render(
            &Sources {
                port_names: vec!["p0".into(), "p1".into()],
                workers: vec![worker],
                rules: Vec::new(),
                slow_path: Arc::default(),
            },
            None,
        );
        assert!(
            text.contains("vfn_port_rx_packets_total{port=\"p1\",worker=\"0\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("vfn_drops_total{reason=\"no_route\",worker=\"0\"} 1\n"));
        assert_eq!(text.matches("vfn_drops_total{").count(), DropReason::COUNT);
    }
}
