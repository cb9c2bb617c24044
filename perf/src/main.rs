//! `vfn-perf`: benchmarks of the VFN.
//!
//! `pipeline` (the whole worker in memory), `telemetry` (what flow telemetry costs it),
//! `handoff` (what handing packets between workers costs), `mirror` (what mirroring costs),
//! `classbench` (the classifier against DPDK's rte_acl), `lab` (routers between lab namespaces,
//! with an XDP generator and sink), `apply` (rule-set apply latency through the control API,
//! under traffic, against `nft -f`) and `scoring` (the anomaly models' throughput and a flow's
//! Nth packet to action); each module says what it measures.

mod apply;
mod classify;
mod handoff;
mod lab;
mod mirror;
mod pipeline;
mod rulesets;
mod scoring;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks of the VFN")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forwarding rate of the in-memory pipeline, one core.
    Pipeline(pipeline::Args),
    /// What flow telemetry costs the in-memory pipeline: 1k to 1M flows, off and on, interleaved.
    Telemetry(telemetry::Args),
    /// What handing packets to the worker that owns their flow costs, in memory, one core.
    Handoff(pipeline::ComparisonArgs),
    /// What mirroring costs the in-memory pipeline, one core.
    Mirror(pipeline::ComparisonArgs),
    /// The packet classifier on ClassBench sets, against DPDK's rte_acl.
    Classbench(classify::Args),
    /// Routers between two lab namespaces, measured with an XDP generator and sink (root).
    Lab(lab::Args),
    /// Rule-set apply latency through the control API under traffic, against `nft -f` (root).
    Apply(apply::Args),
    /// The anomaly models: flows scored per second per core, and a flow's Nth packet to action.
    Scoring(scoring::Args),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Classbench(args) => {
            classify::run(&args);
            Ok(())
        }
        Command::Pipeline(args) => pipeline::run(&args),
        Command::Telemetry(args) => telemetry::run(&args),
        Command::Handoff(args) => handoff::run(&args),
        Command::Mirror(args) => mirror::run(&args),
        Command::Lab(args) => lab::run_all(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Scoring(args) => scoring::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vfn-perf: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
