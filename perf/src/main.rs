//! `vfn-perf`: benchmarks of the VFN that need no network.
//!
//! `pipeline` (the whole worker in memory) and `classbench` (the classifier against DPDK's
//! rte_acl); each module says what it measures.

mod classify;
mod pipeline;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks of the VFN that need no network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forwarding rate of the in-memory pipeline, one core.
    Pipeline(pipeline::Args),
    /// The packet classifier on ClassBench sets, against DPDK's rte_acl.
    Classbench(classify::Args),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Classbench(args) => {
            classify::run(&args);
            Ok(())
        }
        Command::Pipeline(args) => pipeline::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vfn-perf: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
