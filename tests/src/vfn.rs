//! The VFN router in a lab: its config generated from the [`Topology`], the process started in
//! the router namespace with its log and counters in a directory of the lab's own, and the
//! counters read back (Prometheus text written by `vfn run --stats-file`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use ipnet::IpNet;
use vfn_config::{
    ApiConfig, Config, DataplaneConfig, FlowSteering, IcmpConfig, MetricsConfig, PortConfig,
    RouteConfig, StateConfig, TableConfig, TelemetryConfig, WorkerConfig,
};

use crate::error::LabError;
use crate::interrupt::wait_until;
use crate::lab::{ChildGuard, Lab};
use crate::topology::{ROUTER_ROLE, Topology};

fn net(addr: IpAddr, prefix_len: u8) -> Result<IpNet, LabError> {
    IpNet::new(addr, prefix_len).map_err(|e| LabError::invalid_argument("topology", e.to_string()))
}

/// The router config for a topology: port `pN` on each router interface in host order, owning
/// the router's addresses, the routes to the hosts' remote addresses, and one worker on the last
/// CPU (the others are left to the hosts and the traffic).
pub fn lab_config(topology: &Topology) -> Result<Config, LabError> {
    let mut ports = Vec::with_capacity(topology.router.ports.len());
    for (index, port) in topology.router.ports.iter().enumerate() {
        let mut config = PortConfig::new(format!("p{index}"), port.interface.clone());
        config.queues = u16::try_from(port.queues)
            .map_err(|_| LabError::invalid_argument("queues", port.queues.to_string()))?;
        config.mtu = u16::try_from(port.mtu)
            .map_err(|_| LabError::invalid_argument("mtu", port.mtu.to_string()))?;
        config.addresses = vec![
            net(port.ipv4.addr(), port.ipv4.prefix_len())?,
            net(port.ipv6.addr(), port.ipv6.prefix_len())?,
        ];
        ports.push(config);
    }
    let mut routes = Vec::with_capacity(topology.router.static_routes.len());
    for route in &topology.router.static_routes {
        let destination = net(route.destination.addr(), route.destination.prefix_len())?.trunc();
        routes.push(RouteConfig {
            prefix: destination,
            via: route.next_hop,
            interface: None,
        });
    }
    // One worker per queue, on the last CPUs this process may run on (cgroups and taskset may
    // allow fewer than exist); with one queue the other CPUs are left to the hosts' traffic.
    let allowed =
        nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).map_err(|source| {
            LabError::Sys {
                context: "reading the CPU affinity".into(),
                source,
            }
        })?;
    let queues = topology.router.ports.first().map_or(1, |p| p.queues) as usize;
    let mut cores: Vec<u16> = (0..nix::sched::CpuSet::count())
        .rev()
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .take(queues)
        .map(|cpu| cpu as u16)
        .collect();
    cores.sort_unstable();
    if cores.len() < queues {
        return Err(LabError::invalid_argument(
            "queues",
            format!(
                "{queues} workers need as many CPUs; {} allowed",
                cores.len()
            ),
        ));
    }
    let config = Config {
        dataplane: DataplaneConfig::default(),
        tables: TableConfig::default(),
        icmp: IcmpConfig::default(),
        workers: WorkerConfig {
            cores,
            flow_steering: FlowSteering::default(),
        },
        ports,
        routes,
        policy: None,
        // Both are moved into the router's own directory when it starts (RunningVfn::start).
        api: ApiConfig::default(),
        state: StateConfig::default(),
        metrics: MetricsConfig::default(),
        telemetry: TelemetryConfig::default(),
        mirror: vfn_config::MirrorConfig::default(),
        scoring: vfn_config::ScoringConfig::default(),
    };
    config
        .validate()
        .map_err(|e| LabError::invalid_argument("config", e.to_string()))?;
    Ok(config)
}

/// The `vfn` binary next to the running test or program: `$VFN_BIN`, else `target/<profile>/vfn`
/// above the current executable (tests live in `target/<profile>/deps/`).
pub fn vfn_binary() -> Result<PathBuf, LabError> {
    workspace_binary("vfn", "VFN_BIN")
}

/// The `vfnctl` binary, found like [`vfn_binary`] (`$VFNCTL_BIN` first).
pub fn vfnctl_binary() -> Result<PathBuf, LabError> {
    workspace_binary("vfnctl", "VFNCTL_BIN")
}

fn workspace_binary(name: &str, variable: &str) -> Result<PathBuf, LabError> {
    if let Some(path) = std::env::var_os(variable) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(LabError::io("finding the current executable"))?;
    let candidates = exe.ancestors().skip(1).take(3).map(|dir| dir.join(name));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(LabError::invalid_argument(
        "binary",
        format!(
            "{name} not found near {}; build it first (cargo build -p vfn) or set {variable}",
            exe.display()
        ),
    ))
}

/// Counters of a running router, summed over workers.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Sample line (metric name with labels) to value.
    samples: HashMap<String, u64>,
}

impl Counters {
    pub fn parse(text: &str) -> Counters {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect();
        Counters { samples }
    }

    /// Sum of `metric` over all samples whose labels include every `label="value"` given.
    pub fn total(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        self.samples
            .iter()
            .filter(|(key, _)| {
                key.split('{').next() == Some(metric)
                    && labels
                        .iter()
                        .all(|(name, value)| key.contains(&format!("{name}=\"{value}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Packets dropped for `reason` (a snake_case drop reason name).
    pub fn drops(&self, reason: &str) -> u64 {
        self.total("vfn_drops_total", &[("reason", reason)])
    }
}

/// A `vfn run` process in the lab's router namespace, stopped (SIGTERM) on drop.
pub struct RunningVfn {
    child: Option<ChildGuard>,
    dir: PathBuf,
    /// Arguments added to `vfn run` (kept for restarts).
    extra_args: Vec<String>,
}

impl RunningVfn {
    /// Writes `config` and starts `binary run` in the router namespace; returns once the router
    /// reports ready (every port attached), or fails with its log after `deadline`. The API
    /// socket and the state folder are the router directory's (`api.sock`, `state/`), whatever
    /// `config` says, so that tests never touch the host's.
    pub fn start(
        lab: &Lab,
        binary: &Path,
        config: &Config,
        deadline: Duration,
    ) -> Result<RunningVfn, LabError> {
        Self::start_with(lab, binary, config, &[], deadline)
    }

    /// [`RunningVfn::start`], with `extra_args` added to `vfn run` (e.g. `--log-format json`).
    pub fn start_with(
        lab: &Lab,
        binary: &Path,
        config: &Config,
        extra_args: &[&str],
        deadline: Duration,
    ) -> Result<RunningVfn, LabError> {
        // A fresh directory of our own (create_dir fails on anything already there, a planted
        // symlink included), named after the lab, which is unique per process and lab.
        let dir = std::env::temp_dir().join(format!("{}-router", lab.topology().name));
        std::fs::create_dir(&dir).map_err(LabError::io(format!("creating {}", dir.display())))?;
        let mut running = RunningVfn {
            child: None,
            dir,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        running.spawn(lab, binary, config, deadline)?;
        Ok(running)
    }

    /// Stops the router (SIGTERM) and starts it again on the same directory, so with the state
    /// it persisted; returns once it is ready again.
    pub fn restart(
        &mut self,
        lab: &Lab,
        binary: &Path,
        config: &Config,
        deadline: Duration,
    ) -> Result<ExitStatus, LabError> {
        let status = match self.child.take() {
            Some(child) => child.stop()?,
            None => return Err(LabError::invalid_argument("router", "already stopped")),
        };
        self.spawn(lab, binary, config, deadline)?;
        Ok(status)
    }

    /// The API's Unix socket.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// The folder of the persisted state and the audit log.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `config` with the socket and state folder in the router's directory.
    fn own_config(&self, config: &Config) -> Config {
        let mut config = config.clone();
        config.api.socket = self.api_socket();
        config.state.dir = self.state_dir();
        config
    }

    fn spawn(
        &mut self,
        lab: &Lab,
        binary: &Path,
        config: &Config,
        deadline: Duration,
    ) -> Result<(), LabError> {
        let config_path = self.dir.join("vfn.toml");
        std::fs::write(&config_path, self.own_config(config).to_toml_string())
            .map_err(LabError::io("writing the router config"))?;
        let ready = self.dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vfn.log"))
            .map_err(LabError::io("creating the router log"))?;
        let log_err = log
            .try_clone()
            .map_err(LabError::io("creating the router log"))?;
        let mut command = lab.exec(ROUTER_ROLE, &[])?;
        command
            .arg(binary)
            .args(["run", "--config"])
            .arg(&config_path)
            .arg("--stats-file")
            .arg(self.dir.join("stats.prom"))
            .arg("--ready-file")
            .arg(&ready)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        self.child = Some(ChildGuard::spawn(command)?);
        let waited = wait_until(deadline, Duration::from_millis(20), || {
            ready.exists()
                || self
                    .child
                    .as_mut()
                    .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
        });
        if waited.is_err() || !ready.exists() {
            return Err(LabError::Timeout {
                what: format!("router ready; its log:\n{}", self.log()),
                limit: deadline,
            });
        }
        Ok(())
    }

    /// The router's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vfn.log")).unwrap_or_default()
    }

    /// The counters as last written (every 200 ms).
    pub fn counters(&self) -> Result<Counters, LabError> {
        let text = std::fs::read_to_string(self.dir.join("stats.prom"))
            .map_err(LabError::io("reading the router's counters"))?;
        Ok(Counters::parse(&text))
    }

    /// Waits until the counters satisfy `condition` (they refresh every 200 ms).
    pub fn wait_for_counters(
        &self,
        deadline: Duration,
        condition: impl Fn(&Counters) -> bool,
    ) -> Result<Counters, LabError> {
        let mut last = Counters::default();
        let result = wait_until(deadline, Duration::from_millis(50), || {
            last = self.counters().unwrap_or_default();
            condition(&last)
        });
        result.map(|_| last).map_err(|_| LabError::Timeout {
            what: format!("router counters; its log:\n{}", self.log()),
            limit: deadline,
        })
    }

    /// Stops the router with SIGTERM and returns its exit status and final counters.
    pub fn stop(mut self) -> Result<(ExitStatus, Counters), LabError> {
        let status = match self.child.take() {
            Some(child) => child.stop()?,
            None => return Err(LabError::invalid_argument("router", "already stopped")),
        };
        Ok((status, self.counters()?))
    }
}

impl RunningVfn {
    /// Rewrites the router's config and sends it SIGHUP: it reloads the policy (or, if the new
    /// one is invalid, keeps the one in force and logs why).
    pub fn reload(&self, config: &Config) -> Result<(), LabError> {
        // Written whole, then renamed: the router never reads half a file.
        let temporary = self.dir.join("vfn.toml.new");
        std::fs::write(&temporary, self.own_config(config).to_toml_string())
            .map_err(LabError::io("writing the router config"))?;
        std::fs::rename(&temporary, self.dir.join("vfn.toml"))
            .map_err(LabError::io("replacing the router config"))?;
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| LabError::invalid_argument("router", "already stopped"))?;
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(child.id())
                .map_err(|_| LabError::invalid_argument("pid", child.id().to_string()))?,
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).map_err(|source| {
            LabError::Sys {
                context: "SIGHUP to the router".into(),
                source,
            }
        })
    }

    /// Kills the router with SIGKILL, as a crash would: nothing of its own cleanup runs.
    pub fn kill(mut self) -> Result<ExitStatus, LabError> {
        let Some(mut child) = self.child.take() else {
            return Err(LabError::invalid_argument("router", "already stopped"));
        };
        child
            .child_mut()
            .kill()
            .map_err(LabError::io("SIGKILL to the router"))?;
        child
            .child_mut()
            .wait()
            .map_err(LabError::io("reaping the router"))
    }
}

impl Drop for RunningVfn {
    fn drop(&mut self) {
        // Stop the router before its files go.
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{LabInstance, TopologySpec};

    #[test]
    fn config_for_the_default_lab_is_valid_and_routes_the_remote_addresses() {
        let topology = TopologySpec::default_lab("t")
            .resolve(LabInstance {
                pid: 1,
                sequence: 0,
            })
            .expect("valid");
        let config = lab_config(&topology).expect("valid");
        assert_eq!(config.ports.len(), 3);
        assert_eq!(config.ports[2].interface, "vfn-srv");
        assert_eq!(config.routes.len(), topology.router.static_routes.len());
        assert!(!config.routes.is_empty());
        assert_eq!(
            Config::from_toml_str(&config.to_toml_string()).expect("round trip"),
            config
        );
    }

    #[test]
    fn counters_sum_over_workers_and_filter_by_label() {
        let counters = Counters::parse(
            "# HELP x\nvfn_drops_total{reason=\"no_route\",worker=\"0\"} 2\nvfn_drops_total{reason=\"no_route\",worker=\"1\"} 3\nvfn_drops_total{reason=\"ttl_exceeded\",worker=\"0\"} 1\n",
        );
        assert_eq!(counters.drops("no_route"), 5);
        assert_eq!(counters.total("vfn_drops_total", &[]), 6);
        assert_eq!(counters.drops("martian_source"), 0);
    }
}
