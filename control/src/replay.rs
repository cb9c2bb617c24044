//! `vfn replay`: a capture run offline through the same router on in-memory ports; what leaves
//! each port is written to `<output-dir>/<port>.pcap`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vfn_config::Config;
use vfn_dataplane::mem_io::{MemIo, MemIoConfig};
use vfn_dataplane::neigh::NeighbourKey;
use vfn_dataplane::pcap::{self, PcapError};
use vfn_dataplane::router::{Router, RouterError};
use vfn_dataplane::wire::LearnPolicy;

use crate::spec::{self, PlanError};

/// A neighbour known in advance: `PORT,ADDRESS,MAC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticNeighbour {
    pub interface: String,
    pub addr: IpAddr,
    pub mac: [u8; 6],
}

impl std::str::FromStr for StaticNeighbour {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let (Some(interface), Some(addr), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{text:?}: expected INTERFACE,ADDRESS,MAC"));
        };
        let addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let mac = vfn_dataplane::wire::parse_mac(mac)
            .ok_or_else(|| format!("{mac:?} is not a MAC address"))?;
        Ok(StaticNeighbour {
            interface: interface.to_owned(),
            addr,
            mac,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Pcap(#[from] PcapError),
    #[error("--port {0}: no such port in the config")]
    UnknownPort(String),
    #[error("--neighbour: {0} names no port or VLAN")]
    UnknownInterface(String),
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{path}: {source}")]
    OutputDir {
        path: String,
        source: std::io::Error,
    },
}

/// Replays `input` as received on port `port_name`. The ingress port takes the destination MAC of
/// the capture's first frame as its own, so a capture taken on the router's link replays as
/// it was; the other ports get locally administered addresses.
pub fn replay(
    config: &Config,
    config_path: &Path,
    input: &Path,
    port_name: &str,
    neighbours: &[StaticNeighbour],
    output_dir: &Path,
) -> Result<Vec<(String, usize)>, ReplayError> {
    let frames = pcap::read(input)?;
    let ingress = config
        .ports
        .iter()
        .position(|p| p.name == port_name)
        .ok_or_else(|| ReplayError::UnknownPort(port_name.into()))?;
    let ingress_interface = config.ports[ingress].interface.clone();
    let first_destination: Option<[u8; 6]> = frames
        .first()
        .and_then(|f| f.data.get(0..6)?.try_into().ok());
    let plan = spec::plan(config, |name| {
        let index = config
            .ports
            .iter()
            .position(|p| p.interface == name)
            .unwrap_or(0);
        Ok(match first_destination {
            Some(mac) if name == ingress_interface => mac,
            _ => [0x02, 0, 0, 0, 0xff, index as u8],
        })
    })?;
    let mut router = Router::build(plan.router.clone(), Instant::now(), Box::new(|_| {}))?;
    let mut slow = router
        .take_slow_path()
        .expect("Router::build makes exactly one slow path");
    for neighbour in neighbours {
        let iface = router
            .interfaces
            .by_name(&neighbour.interface)
            .ok_or_else(|| ReplayError::UnknownInterface(neighbour.interface.clone()))?;
        slow.neighbours_mut().learned(
            NeighbourKey {
                iface,
                addr: neighbour.addr,
            },
            neighbour.mac,
            LearnPolicy::Create,
            Duration::ZERO,
        );
        slow.neighbours_mut().publish();
    }
    let io = MemIo::new(MemIoConfig {
        ports: plan.port_names.len(),
        frame_count: plan.xdp.frame_count,
        frame_size: plan.xdp.frame_size as usize,
        ring_size: plan.xdp.ring_size,
    });
    let rules = crate::policy::compile(config, config_path, &router.interfaces)?;
    router.policy.publish(rules);
    let mut worker = router.worker(io)?;
    let outputs = pcap::replay(&mut worker, &mut slow, ingress as u16, &frames);
    std::fs::create_dir_all(output_dir).map_err(|source| ReplayError::OutputDir {
        path: output_dir.display().to_string(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, frames) in plan.port_names.iter().zip(outputs) {
        let path: PathBuf = output_dir.join(format!("{name}.pcap"));
        pcap::write(&path, &frames)?;
        written.push((path.display().to_string(), frames.len()));
    }
    Ok(written)
}
