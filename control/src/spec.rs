//! From a validated config to what the dataplane is built from: the router's interfaces and
//! routes, the worker settings, and each worker's AF_XDP ports.

use std::time::Duration;

use ipnet::IpNet;
use vfn_config::{
    Config, RpFilter as ConfigRpFilter, XdpMode as ConfigXdpMode, ZeroCopy as ConfigZeroCopy,
};
use vfn_dataplane::fib::{FibLimits, StaticRoute};
use vfn_dataplane::handoff::FlowSteering;
use vfn_dataplane::iface::{Interface, RpFilter};
use vfn_dataplane::mirror::{MirrorDestination, MirrorDirection, MirrorSession, Tunnel};
use vfn_dataplane::neigh::NeighbourTimers;
use vfn_dataplane::policy::PolicyLimits;
use vfn_dataplane::router::RouterSpec;
use vfn_dataplane::telemetry::{RecordTimeouts, ScoringFeed, TelemetryConfig};
use vfn_dataplane::worker::WorkerConfig;
use vfn_xdp::{XdpMode, XdpOptions, XdpPort, ZeroCopy};

/// Dynamic entries (quarantines, rate limits, mirrors with a time to live) at most.
const DYNAMIC_ENTRIES_MAX: usize = 4_096;

/// Everything `vfn run` starts.
#[derive(Clone, Debug)]
pub struct Plan {
    pub router: RouterSpec,
    pub xdp: XdpOptions,
    /// Per worker: its core and one AF_XDP port per configured port (same order as the ports).
    pub workers: Vec<(usize, Vec<XdpPort>)>,
    pub port_names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "ports[{index}].queues: {queues} is fewer than the {workers} workers (each worker needs a queue of every port)"
    )]
    TooFewQueues {
        index: usize,
        queues: u16,
        workers: usize,
    },
    #[error("ports[{index}].interface: {reason}")]
    Interface { index: usize, reason: String },
    #[error("routes[{index}].interface: {name} names no port or VLAN")]
    RouteInterface { index: usize, name: String },
}

fn rp_filter(mode: ConfigRpFilter) -> RpFilter {
    match mode {
        ConfigRpFilter::Strict => RpFilter::Strict,
        ConfigRpFilter::Loose => RpFilter::Loose,
        ConfigRpFilter::Off => RpFilter::Off,
    }
}

fn split(addresses: &[IpNet]) -> (Vec<ipnet::Ipv4Net>, Vec<ipnet::Ipv6Net>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for address in addresses {
        match address {
            IpNet::V4(net) => v4.push(*net),
            IpNet::V6(net) => v6.push(*net),
        }
    }
    (v4, v6)
}

/// The config's mirror sessions as the dataplane takes them (port names validated by the config).
fn mirror_sessions(config: &Config) -> Vec<MirrorSession> {
    config
        .mirror
        .sessions
        .iter()
        .map(|session| MirrorSession {
            name: session.name.clone(),
            direction: match session.direction {
                vfn_config::MirrorDirection::Received => MirrorDirection::Received,
                vfn_config::MirrorDirection::Sent => MirrorDirection::Sent,
                vfn_config::MirrorDirection::Both => MirrorDirection::Both,
            },
            destination: match session.destination {
                vfn_config::MirrorDestinationConfig::Port(ref name) => MirrorDestination::Port(
                    // Validated by the config: the port exists; at most 64 ports.
                    config
                        .ports
                        .iter()
                        .position(|port| port.name == *name)
                        .unwrap_or(0) as u16,
                ),
                vfn_config::MirrorDestinationConfig::Erspan {
                    source,
                    remote,
                    session_id,
                } => MirrorDestination::Remote {
                    tunnel: Tunnel::ErspanII { session_id },
                    source,
                    remote,
                },
                vfn_config::MirrorDestinationConfig::Gre { source, remote } => {
                    MirrorDestination::Remote {
                        tunnel: Tunnel::Gre,
                        source,
                        remote,
                    }
                }
            },
            snap_length: session.snap_length,
            sample_every: session.sample_every,
            packets_per_second: session.packets_per_second,
            queue: session.queue,
        })
        .collect()
}

/// Plans the router. `mac_of` gives an interface's MAC address (the ports keep their own).
pub fn plan(
    config: &Config,
    mac_of: impl Fn(&str) -> Result<[u8; 6], String>,
) -> Result<Plan, PlanError> {
    let worker_count = config.workers.cores.len();
    let mut interfaces = Vec::new();
    for (index, port) in config.ports.iter().enumerate() {
        if usize::from(port.queues) < worker_count {
            return Err(PlanError::TooFewQueues {
                index,
                queues: port.queues,
                workers: worker_count,
            });
        }
        let mac =
            mac_of(&port.interface).map_err(|reason| PlanError::Interface { index, reason })?;
        // The config allows at most 64 ports.
        let port_index = index as u16;
        let (ipv4, ipv6) = split(&port.addresses);
        interfaces.push(Interface {
            name: port.name.clone(),
            port: port_index,
            vlan: None,
            mac,
            mtu: port.mtu,
            rp_filter: rp_filter(port.rp_filter),
            ipv4,
            ipv6,
        });
        for vlan in &port.vlans {
            let (ipv4, ipv6) = split(&vlan.addresses);
            interfaces.push(Interface {
                name: format!("{}.{}", port.name, vlan.id),
                port: port_index,
                vlan: Some(vlan.id),
                mac,
                mtu: vlan.mtu,
                rp_filter: rp_filter(vlan.rp_filter),
                ipv4,
                ipv6,
            });
        }
    }
    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        let iface = match &route.interface {
            None => None,
            Some(reference) => {
                let name = match reference.vlan {
                    Some(vlan) => format!("{}.{vlan}", reference.port),
                    None => reference.port.clone(),
                };
                let position = interfaces
                    .iter()
                    .position(|i| i.name == name)
                    .ok_or(PlanError::RouteInterface { index, name })?;
                // Bounded by the config's port and VLAN limits, far below u16::MAX.
                Some(position as u16)
            }
        };
        routes.push(StaticRoute {
            prefix: route.prefix,
            via: route.via,
            iface,
        });
    }

    let dataplane = &config.dataplane;
    let router = RouterSpec {
        port_count: config.ports.len(),
        interfaces,
        routes,
        fib_limits: FibLimits {
            max_routes_v4: config.tables.max_routes_v4 as usize,
            max_routes_v6: config.tables.max_routes_v6 as usize,
        },
        neighbour_capacity: config.tables.neighbours as usize,
        neighbour_timers: NeighbourTimers::default(),
        worker: WorkerConfig {
            burst_size: dataplane.burst_size as usize,
            idle_spin_iterations: dataplane.idle_spin_bursts,
            idle_wait: Duration::from_micros(u64::from(dataplane.idle_poll_timeout_us)),
            pending_per_neighbour: config.tables.pending_per_neighbour as usize,
            icmp_errors_per_second: u64::from(config.icmp.errors_per_second),
            icmp_errors_burst: u64::from(config.icmp.errors_burst),
            flow_steering: match config.workers.flow_steering {
                vfn_config::FlowSteering::Handoff => FlowSteering::Handoff,
                vfn_config::FlowSteering::Nic => FlowSteering::Nic,
            },
            ..WorkerConfig::default()
        },
        policy: PolicyLimits {
            flows: config.tables.flows as usize,
            workers: worker_count,
            telemetry: TelemetryConfig {
                enabled: config.telemetry.enabled,
                timeouts: RecordTimeouts {
                    idle: Duration::from_millis(config.telemetry.idle_timeout_ms.into()),
                    active: Duration::from_millis(config.telemetry.active_timeout_ms.into()),
                    activity: Duration::from_millis(config.telemetry.activity_timeout_ms.into()),
                },
                queue_capacity: config.telemetry.queue as usize,
                scoring: ScoringFeed {
                    enabled: config.scoring.enabled,
                    nth_packet: config.scoring.nth_packet.into(),
                    queue_capacity: config.scoring.queue as usize,
                },
            },
            ..PolicyLimits::default()
        },
        dynamic_entries: DYNAMIC_ENTRIES_MAX,
        mirror_sessions: mirror_sessions(config),
    };
    let xdp = XdpOptions {
        mode: match dataplane.xdp_mode {
            ConfigXdpMode::Native => XdpMode::Native,
            ConfigXdpMode::Skb => XdpMode::Skb,
            ConfigXdpMode::Auto => XdpMode::Auto,
        },
        zero_copy: match dataplane.zero_copy {
            ConfigZeroCopy::Auto => ZeroCopy::Auto,
            ConfigZeroCopy::On => ZeroCopy::On,
            ConfigZeroCopy::Off => ZeroCopy::Off,
        },
        frame_size: dataplane.frame_size,
        frame_count: dataplane.frames_per_worker,
        ring_size: dataplane.ring_size,
    };
    let workers = config
        .workers
        .cores
        .iter()
        .enumerate()
        .map(|(queue, &core)| {
            let ports = config
                .ports
                .iter()
                .map(|port| XdpPort {
                    interface: port.interface.clone(),
                    queue_id: queue as u32,
                })
                .collect();
            (usize::from(core), ports)
        })
        .collect();
    Ok(Plan {
        router,
        xdp,
        workers,
        port_names: config.ports.iter().map(|p| p.name.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_config() -> Config {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/lab.toml");
        Config::load(path).expect("example config is valid")
    }

    #[test]
    fn lab_example_plans_three_ports_one_worker() {
        let plan = plan(&lab_config(), |_| Ok([2, 0, 0, 0, 0, 1])).expect("plans");
        assert_eq!(plan.router.port_count, 3);
        assert_eq!(plan.router.interfaces.len(), 3);
        assert_eq!(plan.router.routes.len(), 2);
        assert_eq!(plan.workers.len(), 1);
        assert_eq!(plan.workers[0].1.len(), 3);
        assert_eq!(plan.workers[0].1[2].interface, "vfn-srv");
        assert_eq!(plan.port_names, vec!["p0", "p1", "p2"]);
    }

    #[test]
    fn flow_table_size_comes_from_the_config() {
        let mut config = lab_config();
        config.tables.flows = 4096;
        let plan = plan(&config, |_| Ok([2, 0, 0, 0, 0, 1])).expect("plans");
        assert_eq!(plan.router.policy.flows, 4096);
    }

    #[test]
    fn more_workers_than_queues_is_refused_naming_the_port() {
        let mut config = lab_config();
        config.workers.cores = vec![0, 1];
        let err = plan(&config, |_| Ok([2, 0, 0, 0, 0, 1])).expect_err("too few queues");
        assert!(err.to_string().starts_with("ports[0].queues"), "{err}");
    }

    #[test]
    fn missing_interface_names_the_port() {
        let err = plan(&lab_config(), |name| {
            Err(format!("{name}: no such interface"))
        })
        .expect_err("no mac");
        assert_eq!(
            err.to_string(),
            "ports[0].interface: vfn-c1: no such interface"
        );
    }
}
