//! `vfn-perf telemetry`: what flow telemetry costs the pipeline (issue 6). The in-memory pipeline
//! of `vfn-perf pipeline` ([`crate::pipeline::measure`]) at several counts of concurrent flows,
//! telemetry off and on, forwarding only and with ClassBench rule sets: packets per second per
//! core, ns per packet, what telemetry adds per packet, and the flow table's bytes per flow.
//!
//! Every configuration is measured once per round, the rounds one after the other, so that the
//! machine's drift reaches every configuration alike; within a round a row's two measurements
//! are adjacent (off then on, on then off in the next round), and its cost is the difference of
//! those two, whose median over the rounds the table shows. Every configuration has a flow table
//! of the same capacity, large enough for the most flows, so nothing is evicted; the warm-up puts
//! every flow in the table before the clock starts, and the measured packets all find theirs.
//! Flows take turns, one packet each: at 100,000 flows and more, every lookup misses the caches.

use std::path::PathBuf;

use vfn_flow::{FlowTable, RecordTimeouts, TableMemory, Timeouts};
use vfn_rules::RuleSetSpec;

use crate::pipeline::{Measurement, Setup, measure, synthetic, trace_flows};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Counts of concurrent flows: synthetic UDP flows for forwarding only, the rule set's trace
    /// (its 5-tuples, then the same with other source ports) with rules.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    flows: Vec<usize>,
    /// Rounds; each measures every configuration once.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// CPU to pin to.
    #[arg(long, default_value_t = 1)]
    core: usize,
    /// ClassBench sets to measure besides forwarding only, each rule allowing and the default
    /// allowing (`--rules ''`: forwarding only).
    #[arg(long, value_delimiter = ',', default_value = "acl1_10k")]
    rules: Vec<String>,
    /// The flow table's capacity (`PolicyLimits::flows`) in every configuration; default: the
    /// largest flow count rounded up to a power of two.
    #[arg(long)]
    table_flows: Option<usize>,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/classbench"))]
    classbench: PathBuf,
}

/// One row: a traffic (forwarding only, or a rule set) at one flow count, off and on.
struct Row<'a> {
    traffic: String,
    policy: Option<&'a RuleSetSpec>,
    templates: Vec<Vec<u8>>,
    /// Mpps per round, telemetry off and on.
    off: Vec<f64>,
    on: Vec<f64>,
    /// ns per packet on less off, per round.
    cost: Vec<f64>,
    /// Fewest packets forwarded per packet received, over every measurement.
    forwarded_share: f64,
    /// Flows in the table with telemetry on, fewest over the rounds.
    flows_in_table: usize,
}

pub fn run(args: &Args) -> Result<(), String> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: args.core }) {
        eprintln!("warning: could not pin to core {}", args.core);
    }
    let flow_counts: Vec<usize> = args.flows.iter().map(|&f| f.max(1)).collect();
    let table_flows = args.table_flows.unwrap_or_else(|| {
        flow_counts
            .iter()
            .max()
            .copied()
            .unwrap_or(1)
            .next_power_of_two()
    });
    let mut policies = Vec::new();
    for set in args.rules.iter().filter(|set| !set.is_empty()) {
        policies.push(crate::rulesets::classbench_policy(&args.classbench, set)?);
    }
    let mut rows = Vec::new();
    for &flows in &flow_counts {
        rows.push(Row::new("forwarding".into(), None, synthetic(flows)));
    }
    for (spec, tuples) in &policies {
        let traffic = format!("{} ({} rules)", spec.version, spec.rules.len());
        for &flows in &flow_counts {
            rows.push(Row::new(
                traffic.clone(),
                Some(spec),
                trace_flows(tuples, flows),
            ));
        }
    }
    println!(
        "in-memory pipeline, IPv4 64 B frames, 1 worker on core {}, flow table of {table_flows} flows, \
         {} rounds of {} s per configuration",
        args.core, args.rounds, args.seconds
    );
    for round in 0..args.rounds.max(1) {
        for row in &mut rows {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            let mut ns = [0.0; 2];
            for telemetry in order {
                let measured = row.measure(telemetry, args, table_flows)?;
                let mpps = measured.mpps();
                row.forwarded_share = row
                    .forwarded_share
                    .min(measured.forwarded as f64 / measured.received.max(1) as f64);
                if telemetry {
                    row.on.push(mpps);
                    row.flows_in_table = row.flows_in_table.min(measured.flows_in_table);
                } else {
                    row.off.push(mpps);
                }
                ns[usize::from(telemetry)] = 1e3 / mpps;
            }
            row.cost.push(ns[1] - ns[0]);
            eprintln!(
                "round {} {} {} flows: off {:.2} Mpps, on {:.2} Mpps",
                round + 1,
                row.traffic,
                row.templates.len(),
                row.off[round],
                row.on[round]
            );
        }
    }
    print_rates(&rows);
    print_memory(table_flows);
    Ok(())
}

impl<'a> Row<'a> {
    fn new(traffic: String, policy: Option<&'a RuleSetSpec>, templates: Vec<Vec<u8>>) -> Self {
        Row {
            traffic,
            policy,
            templates,
            off: Vec::new(),
            on: Vec::new(),
            cost: Vec::new(),
            forwarded_share: 1.0,
            flows_in_table: usize::MAX,
        }
    }

    fn measure(
        &self,
        telemetry: bool,
        args: &Args,
        table_flows: usize,
    ) -> Result<Measurement, String> {
        measure(Setup {
            templates: self.templates.clone(),
            policy: self.policy,
            telemetry,
            table_flows,
            seconds: args.seconds,
            two_workers: None,
            mirror_sessions: Vec::new(),
        })
    }
}

/// Median, min and max.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

fn print_rates(rows: &[Row<'_>]) {
    println!(
        "| traffic | flows | off Mpps median | min | max | on Mpps median | min | max | off ns/packet | on ns/packet | cost ns/packet median | min | max | on / off |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let off = spread(&row.off);
        let on = spread(&row.on);
        let cost = spread(&row.cost);
        let ratios: Vec<f64> = row
            .on
            .iter()
            .zip(&row.off)
            .map(|(on, off)| on / off)
            .collect();
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            row.traffic,
            row.templates.len(),
            off.0,
            off.1,
            off.2,
            on.0,
            on.1,
            on.2,
            1e3 / off.0,
            1e3 / on.0,
            cost.0,
            cost.1,
            cost.2,
            spread(&ratios).0,
        );
    }
    println!(
        "(off and on ns/packet: of the median rates; cost and on / off: medians of the rounds' own)"
    );
    for row in rows {
        if row.flows_in_table != row.templates.len() || row.forwarded_share < 0.999 {
            println!(
                "note: {} {} flows: {} flows in the table with telemetry on, {:.4} of the packets received forwarded",
                row.traffic,
                row.templates.len(),
                row.flows_in_table,
                row.forwarded_share
            );
        }
    }
}

fn print_memory(capacity: usize) {
    let per_flow = |bytes: usize| bytes as f64 / capacity as f64;
    println!(
        "| flow table of {capacity} flows | MiB | bytes/flow | entries | statistics | index | timer wheel | FIFO | free list |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for statistics in [false, true] {
        let memory = table_memory(capacity, statistics);
        println!(
            "| telemetry {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            if statistics { "on" } else { "off" },
            memory.total() as f64 / f64::from(1 << 20),
            per_flow(memory.total()),
            per_flow(memory.entries),
            per_flow(memory.statistics),
            per_flow(memory.index),
            per_flow(memory.wheel),
            per_flow(memory.fifo),
            per_flow(memory.free_list),
        );
    }
    println!("(as the tables report it: FlowTable::memory)");
}

/// What a flow table of `capacity` flows allocates, with or without statistics.
fn table_memory(capacity: usize, statistics: bool) -> TableMemory {
    let table = if statistics {
        FlowTable::<u64>::with_statistics(capacity, Timeouts::default(), RecordTimeouts::default())
    } else {
        FlowTable::<u64>::new(capacity, Timeouts::default())
    };
    table.map(|table| table.memory()).unwrap_or_default()
}
