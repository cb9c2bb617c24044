//! `vfn`: the VFN router.

mod controller;
mod endpoint;
mod events;
mod exporter;
mod lab;
mod policy;
mod replay;
mod routes;
mod run;
mod scorer;
mod server;
mod spec;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vfn_config::Config;

/// The VFN, a userspace router on AF_XDP.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log lines for people (default) or one JSON object per line for log collectors. The
    /// level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router on the ports of a config file (needs root and AF_XDP). Stops cleanly on
    /// SIGINT/SIGTERM, detaching its XDP programs.
    Run {
        /// The TOML config (see config/examples/full.toml for every key).
        #[arg(long)]
        config: PathBuf,
        /// Write counters here in Prometheus text format, refreshed every 200 ms and at exit.
        #[arg(long)]
        stats_file: Option<PathBuf>,
        /// Create this file once every port is attached and every worker runs.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Check a config file and exit: every error names its field.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Build a lab of network namespaces (two clients, a server, the router's own), start the
    /// router between them, send real traffic through it (ping v4/v6, a checked TCP transfer,
    /// UDP), print what passed and the router's counters, and remove everything (also on Ctrl-C).
    /// Needs root.
    Lab {
        /// Keep the lab and the router running until Ctrl-C after the traffic checks.
        #[arg(long)]
        keep: bool,
    },
    /// Replay a pcap capture through the router offline, in memory, as received on one port;
    /// write what leaves each port to OUTPUT_DIR/PORT.pcap.
    Replay {
        #[arg(long)]
        config: PathBuf,
        /// The capture (Ethernet link type).
        #[arg(long)]
        input: PathBuf,
        /// The port (name from the config) the capture was received on.
        #[arg(long)]
        port: String,
        /// A neighbour known in advance, INTERFACE,ADDRESS,MAC (repeatable); others are solicited
        /// and never answer offline.
        #[arg(long = "neighbour")]
        neighbours: Vec<replay::StaticNeighbour>,
        #[arg(long)]
        output_dir: PathBuf,
    },
    /// Count the flows of a pcap capture (Ethernet link type) as the workers' flow telemetry
    /// does, with the pipeline in replay mode: any MAC address and VLAN, no address or route
    /// check, the capture's timestamps as the clock, every timeout longer than the capture.
    /// Writes one CSV line per flow record (docs/flows.md, "Replaying a capture"). Needs
    /// neither root nor a config.
    FlowsFromPcap {
        #[arg(long)]
        input: PathBuf,
        /// The CSV file to write.
        #[arg(long)]
        output: PathBuf,
        /// Flows the flow table holds at most (about 530 bytes each); the table never holds
        /// more than the capture has frames.
        #[arg(long, default_value_t = replay::FLOWS_MAX_DEFAULT)]
        flows_max: usize,
    },
}

fn load(path: &PathBuf) -> Result<Config, String> {
    Config::load(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn print_flows_replayed(output: &std::path::Path, replayed: &replay::FlowsReplayed) {
    println!(
        "{}: {} records of {} flows, {} packets, from {} frames",
        output.display(),
        replayed.records,
        replayed.flows,
        replayed.packets,
        replayed.frames
    );
    for (reason, count) in &replayed.not_counted {
        println!("frames not counted, {reason}: {count}");
    }
    if replayed.untracked > 0 {
        println!(
            "IP packets in no flow (later fragments, ICMPv6 type 0, full table): {}",
            replayed.untracked
        );
    }
    if replayed.evicted > 0 {
        println!(
            "flows evicted from the full table: {} (raise --flows-max)",
            replayed.evicted
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        Command::Run {
            config,
            stats_file,
            ready_file,
        } => load(&config).and_then(|loaded| {
            let options = run::RunOptions {
                config_path: config.clone(),
                stats_file,
                ready_file,
                stats_interval: Duration::from_millis(200),
            };
            run::run(&loaded, &options).map_err(|e| e.to_string())
        }),
        Command::Check { config } => load(&config).and_then(|loaded| {
            let mut summary = policy::check(&loaded, &config).map_err(|e| e.to_string())?;
            if loaded.scoring.enabled {
                let models = scorer::load_models(&loaded, &config)
                    .map_err(|e| format!("scoring.models: {e}"))?;
                summary += &format!(
                    ", models {} ({} features)",
                    models.name(),
                    models.block().name()
                );
            }
            println!("{}: valid{summary}", config.display());
            Ok(())
        }),
        Command::Lab { keep } => lab::run(keep).map_err(|e| e.to_string()),
        Command::Replay {
            config,
            input,
            port,
            neighbours,
            output_dir,
        } => load(&config).and_then(|loaded| {
            let written = replay::replay(&loaded, &config, &input, &port, &neighbours, &output_dir)
                .map_err(|e| e.to_string())?;
            for (path, count) in written {
                println!("{path}: {count} frames");
            }
            Ok(())
        }),
        Command::FlowsFromPcap {
            input,
            output,
            flows_max,
        } => replay::flows_from_pcap(&input, &output, flows_max)
            .map(|replayed| print_flows_replayed(&output, &replayed))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vfn: {message}");
            ExitCode::FAILURE
        }
    }
}
