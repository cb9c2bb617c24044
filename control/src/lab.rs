//! `vfn lab`: the router between two clients and a server in network namespaces it makes itself,
//! real traffic through it, a report, and everything removed afterwards (also on Ctrl-C).

use std::net::IpAddr;
use std::time::Duration;

use vfn_lab::{Lab, LabError, PingOpts, RunningVfn, TopologySpec};

const LAB_PREFIX: &str = "vfnlab";

/// One traffic check and its outcome.
struct Check {
    name: String,
    passed: bool,
    detail: String,
}

fn ping_check(lab: &Lab, from: &str, to: IpAddr) -> Result<Check, LabError> {
    let opts = PingOpts {
        interval: Duration::from_millis(50),
        deadline: Duration::from_secs(5),
        ..PingOpts::default()
    };
    let result = vfn_lab::ping(lab.netns(from)?, to, 5, &opts)?;
    Ok(Check {
        name: format!("ping {from} -> {to}"),
        passed: result.all_received(),
        detail: format!("{}/{} replies", result.received, result.transmitted),
    })
}

fn checks(lab: &Lab) -> Result<Vec<Check>, LabError> {
    let topology = lab.topology();
    let server = topology.host("srv")?;
    let remote: Vec<IpAddr> = server
        .remote_addresses
        .iter()
        .map(|cidr| cidr.addr())
        .collect();
    let c1 = topology.host("c1")?;
    let mut checks = Vec::new();
    for target in [
        c1.gateway_v4,
        c1.gateway_v6,
        server.ipv4.addr(),
        server.ipv6.addr(),
    ]
    .into_iter()
    .chain(remote)
    {
        checks.push(ping_check(lab, "c1", target)?);
        if vfn_lab::interrupted() {
            return Err(LabError::Interrupted);
        }
    }
    checks.push(ping_check(lab, "c2", server.ipv4.addr())?);
    for (port, addr) in [(5001, server.ipv4.addr()), (5002, server.ipv6.addr())] {
        const BYTES: usize = 8 << 20;
        let result = vfn_lab::tcp_transfer(
            lab.netns("c1")?,
            lab.netns("srv")?,
            addr,
            port,
            BYTES,
            Duration::from_secs(20),
        )?;
        checks.push(Check {
            name: format!("TCP c1 -> {addr}:{port}, 8 MiB"),
            passed: result.is_intact(),
            detail: format!(
                "{} bytes received, hash {}, {:.0} Mbit/s",
                result.bytes_received,
                if result.sent_hash == result.received_hash {
                    "matches"
                } else {
                    "DIFFERS"
                },
                result.bytes_received as f64 * 8.0 / result.elapsed.as_secs_f64().max(1e-9) / 1e6
            ),
        });
    }
    const DATAGRAMS: u32 = 1000;
    for (port, addr) in [(5003, server.ipv4.addr()), (5004, server.ipv6.addr())] {
        let result = vfn_lab::udp_exchange(
            lab.netns("c2")?,
            lab.netns("srv")?,
            addr,
            port,
            DATAGRAMS,
            512,
            Duration::from_secs(10),
        )?;
        checks.push(Check {
            name: format!("UDP c2 <-> {addr}:{port}, {DATAGRAMS} x 512 B echoed"),
            // All of them: a deadline that stops the sender early must not pass.
            passed: result.sent == DATAGRAMS && result.all_echoed(),
            detail: format!(
                "{}/{} echoed, bytes {}",
                result.received,
                result.sent,
                if result.bytes_match {
                    "match"
                } else {
                    "DIFFER"
                }
            ),
        });
    }
    Ok(checks)
}

fn print_counters(counters: &vfn_lab::Counters, port_names: &[String]) {
    println!("\nrouter counters:");
    println!(
        "  {:<6} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "port", "rx pkts", "tx pkts", "rx bytes", "drops", "to host"
    );
    for name in port_names {
        let get = |metric: &str| counters.total(metric, &[("port", name)]);
        let traffic = |metric: &str, direction: &str| {
            counters.total(metric, &[("port", name), ("direction", direction)])
        };
        println!(
            "  {:<6} {:>10} {:>10} {:>10} {:>8} {:>8}",
            name,
            traffic("vfn_port_packets_total", "rx"),
            traffic("vfn_port_packets_total", "tx"),
            traffic("vfn_port_bytes_total", "rx"),
            get("vfn_port_drops_total"),
            get("vfn_port_to_host_total"),
        );
    }
    println!(
        "  ICMP errors sent: {}",
        counters.total("vfn_icmp_errors_sent_total", &[])
    );
    println!(
        "  neighbour solicitations: {}",
        counters.total("vfn_neighbour_solicitations_total", &[])
    );
}

pub fn run(keep: bool) -> Result<(), String> {
    let interrupt = vfn_lab::install_interrupt_flag().map_err(|e| e.to_string())?;
    for stale in vfn_lab::remove_stale(LAB_PREFIX).map_err(|e| e.to_string())? {
        println!("removed a stale namespace of a crashed run: {stale}");
    }
    let lab = Lab::create(&TopologySpec::default_lab(LAB_PREFIX)).map_err(|e| e.to_string())?;
    println!("lab {} created:", lab.topology().name);
    for host in &lab.topology().hosts {
        println!(
            "  {:<4} {:<28} {} {}",
            host.role, host.netns, host.ipv4, host.ipv6
        );
    }
    let config = vfn_lab::lab_config(lab.topology()).map_err(|e| e.to_string())?;
    let port_names: Vec<String> = config.ports.iter().map(|p| p.name.clone()).collect();
    let binary = std::env::current_exe().map_err(|e| format!("finding the vfn binary: {e}"))?;
    let vfn = RunningVfn::start(&lab, &binary, &config, Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    println!(
        "router running in {} on {}",
        lab.topology().router.netns,
        port_names.join(", ")
    );

    let outcome = checks(&lab);
    if let Ok(checks) = &outcome {
        println!();
        for check in checks {
            println!(
                "  {} {:<48} {}",
                if check.passed { "PASS" } else { "FAIL" },
                check.name,
                check.detail
            );
        }
    }
    // Let the router write its counters once more.
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(counters) = vfn.counters() {
        print_counters(&counters, &port_names);
    }
    if keep && outcome.is_ok() {
        println!(
            "\nlab kept; namespaces: {}",
            lab.topology().namespaces().collect::<Vec<_>>().join(" ")
        );
        println!("press Ctrl-C to remove it");
        while !interrupt.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (status, _) = vfn.stop().map_err(|e| e.to_string())?;
    lab.destroy().map_err(|e| e.to_string())?;
    println!("\nrouter exited ({status}); lab removed");
    let checks = outcome.map_err(|e| e.to_string())?;
    let failed = checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        return Err(format!(
            "{failed} of {} traffic checks failed",
            checks.len()
        ));
    }
    println!("all {} traffic checks passed", checks.len());
    Ok(())
}
