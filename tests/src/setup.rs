//! Building a lab: a [`Topology`] becomes a list of steps (pure, so the order and content of
//! every command is unit-tested), which an executor runs through a [`CommandRunner`] while
//! recording what it made, so that a failure half way can be undone.

use std::net::IpAddr;

use crate::LabError;
use crate::address::IpCidr;
use crate::command::{OnInterrupt, SETUP_COMMAND_TIME_LIMIT, run_checked, run_checked_with};
use crate::interrupt::check_interrupted;
use crate::topology::{Host, RouterMode, RouterPort, Topology};

/// Runs one command line to completion; fails unless it succeeds. Returns its stdout.
pub(crate) trait CommandRunner {
    fn run(&mut self, argv: &[String]) -> Result<String, LabError>;
}

/// Runs commands for real, each with [`SETUP_COMMAND_TIME_LIMIT`].
pub(crate) struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&mut self, argv: &[String]) -> Result<String, LabError> {
        run_checked(argv, SETUP_COMMAND_TIME_LIMIT)
    }
}

/// Runs teardown commands for real: like [`SystemRunner`], but an interrupt (Ctrl-C) does not
/// stop them, or the namespaces would stay behind.
pub(crate) struct TeardownRunner;

impl CommandRunner for TeardownRunner {
    fn run(&mut self, argv: &[String]) -> Result<String, LabError> {
        run_checked_with(argv, SETUP_COMMAND_TIME_LIMIT, OnInterrupt::Finish)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SetupStep {
    /// `ip netns add`; the executor records the name for teardown once it exists.
    AddNamespace { netns: String },
    /// A veth pair made in the creating namespace under temporary names unique to this
    /// process and lab, then moved into the two namespaces. Unique temporary names keep
    /// parallel labs from clashing while both ends still share the creating namespace.
    AddVethPair(VethPair),
    /// Any other command line.
    Run(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VethPair {
    pub(crate) host_temporary: String,
    pub(crate) host_netns: String,
    pub(crate) router_temporary: String,
    pub(crate) router_netns: String,
    pub(crate) queues: u32,
}

/// Every step that builds `topology`, in order.
pub(crate) fn setup_plan(topology: &Topology) -> Vec<SetupStep> {
    let router = &topology.router;
    let mut plan: Vec<SetupStep> = topology
        .namespaces()
        .map(|netns| SetupStep::AddNamespace {
            netns: netns.to_owned(),
        })
        .collect();
    plan.push(ip(&router.netns, &["link", "set", "lo", "up"]));
    if router.mode == RouterMode::Kernel {
        plan.push(sysctl(&router.netns, "net.ipv4.ip_forward", "1"));
        plan.push(sysctl(&router.netns, "net.ipv6.conf.all.forwarding", "1"));
        // Ports inherit this as they arrive. A forwarding kernel sends neighbour solicitations
        // only from a link-local address that has passed DAD; skipping DAD spares the first
        // forwarded IPv6 packets a two-second wait.
        plan.push(sysctl(
            &router.netns,
            "net.ipv6.conf.default.accept_dad",
            "0",
        ));
    }
    for host in &topology.hosts {
        plan.push(ip(&host.netns, &["link", "set", "lo", "up"]));
        for remote in &host.remote_addresses {
            plan.push(add_address(&host.netns, remote, "lo"));
        }
    }
    for (link_index, (host, port)) in topology.hosts.iter().zip(&router.ports).enumerate() {
        plan.extend(link_steps(topology, link_index, host, port));
    }
    if router.mode == RouterMode::Kernel {
        for route in &router.static_routes {
            plan.push(ip(
                &router.netns,
                &[
                    "route",
                    "add",
                    &route.destination.to_string(),
                    "via",
                    &route.next_hop.to_string(),
                    "dev",
                    &route.interface,
                ],
            ));
        }
    }
    plan
}

/// The link between `host` and its router `port`: the router end is up before the host end,
/// so that the host's link has carrier when its routes are added.
fn link_steps(
    topology: &Topology,
    link_index: usize,
    host: &Host,
    port: &RouterPort,
) -> Vec<SetupStep> {
    let router_netns = &topology.router.netns;
    let host_temporary = temporary_name(topology, link_index, 'h');
    let router_temporary = temporary_name(topology, link_index, 'r');
    let host_mtu = host.mtu.to_string();
    let port_mtu = port.mtu.to_string();
    let rename_host_end = ip(
        &host.netns,
        &[
            "link",
            "set",
            &host_temporary,
            "name",
            &host.interface,
            "mtu",
            &host_mtu,
        ],
    );
    let rename_router_end = ip(
        router_netns,
        &[
            "link",
            "set",
            &router_temporary,
            "name",
            &port.interface,
            "mtu",
            &port_mtu,
        ],
    );
    let mut steps = vec![
        SetupStep::AddVethPair(VethPair {
            host_temporary,
            host_netns: host.netns.clone(),
            router_temporary,
            router_netns: router_netns.clone(),
            queues: port.queues,
        }),
        rename_host_end,
        rename_router_end,
    ];
    match topology.router.mode {
        RouterMode::External => steps.push(sysctl(
            router_netns,
            &format!("net.ipv6.conf.{}.disable_ipv6", port.interface),
            "1",
        )),
        RouterMode::Kernel => {
            steps.push(add_address(router_netns, &port.ipv4, &port.interface));
            steps.push(add_address(router_netns, &port.ipv6, &port.interface));
        }
    }
    steps.push(ip(router_netns, &["link", "set", &port.interface, "up"]));
    // Partially checksummed packets would reach AF_XDP unfinished; segmentation offloads
    // would hand it frames larger than the MTU.
    steps.push(ethtool(
        &host.netns,
        &host.interface,
        &[
            "rx", "off", "tx", "off", "tso", "off", "gso", "off", "gro", "off",
        ],
    ));
    steps.push(add_address(&host.netns, &host.ipv4, &host.interface));
    steps.push(add_address(&host.netns, &host.ipv6, &host.interface));
    steps.push(ip(&host.netns, &["link", "set", &host.interface, "up"]));
    if host.gro {
        // Only now: GRO enabled on a veth that is still down loses XDP-redirected frames.
        steps.push(ethtool(&host.netns, &host.interface, &["gro", "on"]));
    }
    for (range, gateway) in [
        (crate::address::LAB_IPV4_RANGE, host.gateway_v4),
        (crate::address::LAB_IPV6_RANGE, host.gateway_v6),
    ] {
        steps.push(add_route(&host.netns, &range, gateway, &host.interface));
    }
    steps
}

/// `vt<pid><sequence><link><end>` in fixed-width hex: 14 bytes, within the 15 allowed.
/// Linux pids fit 22 bits; the sequence wraps after 4096 labs of one process, long after the
/// earlier temporary names are gone.
fn temporary_name(topology: &Topology, link_index: usize, end: char) -> String {
    let instance = topology.instance;
    format!(
        "vt{:06x}{:03x}{:02x}{end}",
        instance.pid & 0xff_ffff,
        instance.sequence & 0xfff,
        link_index & 0xff
    )
}

fn ip(netns: &str, args: &[&str]) -> SetupStep {
    let mut argv = vec!["ip".to_owned(), "-n".to_owned(), netns.to_owned()];
    argv.extend(args.iter().map(|arg| (*arg).to_owned()));
    SetupStep::Run(argv)
}

fn in_netns_argv(netns: &str, args: &[&str]) -> SetupStep {
    let mut argv = ["ip", "netns", "exec", netns].map(str::to_owned).to_vec();
    argv.extend(args.iter().map(|arg| (*arg).to_owned()));
    SetupStep::Run(argv)
}

fn sysctl(netns: &str, key: &str, value: &str) -> SetupStep {
    in_netns_argv(netns, &["sysctl", "-q", "-w", &format!("{key}={value}")])
}

fn ethtool(netns: &str, interface: &str, features: &[&str]) -> SetupStep {
    let mut args = vec!["ethtool", "-K", interface];
    args.extend_from_slice(features);
    in_netns_argv(netns, &args)
}

/// IPv6 addresses skip duplicate address detection: usable at once, and the lab is private.
fn add_address(netns: &str, address: &IpCidr, interface: &str) -> SetupStep {
    let address = address.to_string();
    let mut args = vec!["address", "add", address.as_str(), "dev", interface];
    if address.contains(':') {
        args.push("nodad");
    }
    ip(netns, &args)
}

fn add_route(netns: &str, destination: &IpCidr, gateway: IpAddr, interface: &str) -> SetupStep {
    ip(
        netns,
        &[
            "route",
            "add",
            &destination.to_string(),
            "via",
            &gateway.to_string(),
            "dev",
            interface,
        ],
    )
}

/// Runs `plan`, appending each namespace to `created` as soon as it exists, so that the caller
/// can delete them whether or not the plan completes.
pub(crate) fn execute(
    plan: &[SetupStep],
    runner: &mut impl CommandRunner,
    created: &mut Vec<String>,
) -> Result<(), LabError> {
    for step in plan {
        check_interrupted()?;
        match step {
            SetupStep::AddNamespace { netns } => {
                runner.run(&["ip", "netns", "add", netns].map(str::to_owned))?;
                created.push(netns.clone());
            }
            SetupStep::AddVethPair(pair) => add_veth_pair(pair, runner)?,
            SetupStep::Run(argv) => {
                runner.run(argv)?;
            }
        }
    }
    Ok(())
}

fn add_veth_pair(pair: &VethPair, runner: &mut impl CommandRunner) -> Result<(), LabError> {
    let owned = |args: &[&str]| args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
    let queues = pair.queues.to_string();
    let mut add = owned(&["ip", "link", "add", &pair.host_temporary]);
    let multi_queue = owned(&["numtxqueues", &queues, "numrxqueues", &queues]);
    if pair.queues > 1 {
        add.extend(multi_queue.iter().cloned());
    }
    add.extend(owned(&[
        "type",
        "veth",
        "peer",
        "name",
        &pair.router_temporary,
    ]));
    if pair.queues > 1 {
        add.extend(multi_queue);
    }
    runner.run(&add)?;
    let moved = runner
        .run(&owned(&[
            "ip",
            "link",
            "set",
            &pair.host_temporary,
            "netns",
            &pair.host_netns,
        ]))
        .and_then(|_| {
            runner.run(&owned(&[
                "ip",
                "link",
                "set",
                &pair.router_temporary,
                "netns",
                &pair.router_netns,
            ]))
        });
    if moved.is_err() {
        // Whichever end is still here: deleting it deletes the pair. The other name is then
        // unknown here, so its failure is expected and ignored.
        for name in [&pair.host_temporary, &pair.router_temporary] {
            let _ = runner.run(&owned(&["ip", "link", "del", name]));
        }
    }
    moved.map(drop)
}

/// Deletes `namespaces` in reverse order of creation; returns the errors, one per failure.
pub(crate) fn delete_namespaces(
    namespaces: &[String],
    runner: &mut impl CommandRunner,
) -> Vec<LabError> {
    namespaces
        .iter()
        .rev()
        .filter_map(|netns| {
            runner
                .run(&["ip", "netns", "del", netns].map(str::to_owned))
                .err()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{LabInstance, TopologySpec};

    const INSTANCE: LabInstance = LabInstance {
        pid: 0x1234,
        sequence: 2,
    };

    fn plan(spec: &TopologySpec) -> Vec<SetupStep> {
        setup_plan(&spec.resolve(INSTANCE).expect("valid spec"))
    }

    fn command_lines(plan: &[SetupStep]) -> Vec<String> {
        plan.iter()
            .filter_map(|step| match step {
                SetupStep::Run(argv) => Some(argv.join(" ")),
                _ => None,
            })
            .collect()
    }

    fn position(lines: &[String], wanted: &str) -> usize {
        let found = lines.iter().position(|line| line == wanted);
        assert!(found.is_some(), "missing `{wanted}` in {lines:#?}");
        found.unwrap_or_default()
    }

    #[test]
    fn external_mode_leaves_the_router_ports_without_addresses_and_ipv6() {
        let steps = plan(&TopologySpec::default_lab("lab"));
        let lines = command_lines(&steps);
        let router = "lab-4660-2-vfn";
        assert!(lines.contains(&format!(
            "ip netns exec {router} sysctl -q -w net.ipv6.conf.vfn-c1.disable_ipv6=1"
        )));
        assert!(
            !lines
                .iter()
                .any(|line| line.starts_with(&format!("ip -n {router} address")))
        );
        assert!(
            !lines
                .iter()
                .any(|line| line.contains("forwarding") || line.contains("ip_forward"))
        );
        assert!(
            !lines
                .iter()
                .any(|line| line.starts_with(&format!("ip -n {router} route")))
        );
        let disable = position(
            &lines,
            &format!("ip netns exec {router} sysctl -q -w net.ipv6.conf.vfn-srv.disable_ipv6=1"),
        );
        let up = position(&lines, &format!("ip -n {router} link set vfn-srv up"));
        assert!(disable < up, "IPv6 must be off before the port comes up");
    }

    #[test]
    fn kernel_mode_gives_the_kernel_the_router_addresses_and_routes() {
        let steps = plan(&TopologySpec::default_lab("lab").with_router_mode(RouterMode::Kernel));
        let lines = command_lines(&steps);
        let router = "lab-4660-2-vfn";
        for expected in [
            format!("ip netns exec {router} sysctl -q -w net.ipv4.ip_forward=1"),
            format!("ip netns exec {router} sysctl -q -w net.ipv6.conf.all.forwarding=1"),
            format!("ip netns exec {router} sysctl -q -w net.ipv6.conf.default.accept_dad=0"),
            format!("ip -n {router} address add 198.18.2.1/24 dev vfn-c2"),
            format!("ip -n {router} address add 2001:2:0:2::1/64 dev vfn-c2 nodad"),
            format!("ip -n {router} route add 198.19.0.1/32 via 198.18.3.2 dev vfn-srv"),
            format!("ip -n {router} route add 2001:2:0:ff::1/128 via 2001:2:0:3::2 dev vfn-srv"),
        ] {
            position(&lines, &expected);
        }
        assert!(!lines.iter().any(|line| line.contains("disable_ipv6")));
        let no_dad = position(
            &lines,
            &format!("ip netns exec {router} sysctl -q -w net.ipv6.conf.default.accept_dad=0"),
        );
        let first_port = position(
            &lines,
            &format!("ip -n {router} link set vt00123400200r name vfn-c1 mtu 1500"),
        );
        assert!(
            no_dad < first_port,
            "ports inherit the default only when they arrive"
        );
    }

    #[test]
    fn hosts_get_addresses_offloads_off_and_only_lab_routes() {
        let steps = plan(
            &TopologySpec::default_lab("lab")
                .with_link_mtu("c1", 2000)
                .expect("c1"),
        );
        let lines = command_lines(&steps);
        let c1 = "lab-4660-2-c1";
        let offloads = position(
            &lines,
            &format!("ip netns exec {c1} ethtool -K eth0 rx off tx off tso off gso off gro off"),
        );
        let up = position(&lines, &format!("ip -n {c1} link set eth0 up"));
        let route_v4 = position(
            &lines,
            &format!("ip -n {c1} route add 198.18.0.0/15 via 198.18.1.1 dev eth0"),
        );
        let route_v6 = position(
            &lines,
            &format!("ip -n {c1} route add 2001:2::/48 via 2001:2:0:1::1 dev eth0"),
        );
        let router_up = position(&lines, "ip -n lab-4660-2-vfn link set vfn-c1 up");
        assert!(offloads < up && router_up < up && up < route_v4 && up < route_v6);
        position(
            &lines,
            &format!("ip -n {c1} address add 2001:2:0:1::2/64 dev eth0 nodad"),
        );
        position(
            &lines,
            &format!("ip -n {c1} link set vt00123400200h name eth0 mtu 2000"),
        );
        position(
            &lines,
            "ip -n lab-4660-2-vfn link set vt00123400200r name vfn-c1 mtu 2000",
        );
        position(
            &lines,
            "ip -n lab-4660-2-srv address add 198.19.0.1/32 dev lo",
        );
        position(
            &lines,
            "ip -n lab-4660-2-srv address add 2001:2:0:ff::1/128 dev lo nodad",
        );
        assert!(
            !lines
                .iter()
                .any(|line| line.contains("default") || line.contains("gro on"))
        );
        for netns in ["lab-4660-2-vfn", c1, "lab-4660-2-c2", "lab-4660-2-srv"] {
            position(&lines, &format!("ip -n {netns} link set lo up"));
        }
    }

    #[test]
    fn gro_is_enabled_only_after_the_link_is_up() {
        let spec = TopologySpec::default_lab("lab")
            .with_host(crate::HostSpec::new("ana", 9).with_gro(true));
        let lines = command_lines(&plan(&spec));
        let ana = "lab-4660-2-ana";
        let up = position(&lines, &format!("ip -n {ana} link set eth0 up"));
        let gro = position(
            &lines,
            &format!("ip netns exec {ana} ethtool -K eth0 gro on"),
        );
        assert!(up < gro);
    }

    #[test]
    fn namespaces_come_first_and_temporary_names_are_unique_and_short() {
        let steps = plan(&TopologySpec::default_lab("lab"));
        assert!(
            steps[..4]
                .iter()
                .all(|step| matches!(step, SetupStep::AddNamespace { .. }))
        );
        let mut names: Vec<&String> = steps
            .iter()
            .filter_map(|step| match step {
                SetupStep::AddVethPair(pair) => {
                    Some([&pair.host_temporary, &pair.router_temporary])
                }
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(names.len(), 6);
        assert!(
            names
                .iter()
                .all(|name| name.len() <= crate::INTERFACE_NAME_LEN_MAX)
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 6);
    }

    /// Records every command; fails the one whose line starts with `fail_on`.
    struct FakeRunner {
        fail_on: &'static str,
        lines: Vec<String>,
    }

    impl CommandRunner for FakeRunner {
        fn run(&mut self, argv: &[String]) -> Result<String, LabError> {
            let line = argv.join(" ");
            self.lines.push(line.clone());
            if line.starts_with(self.fail_on) {
                return Err(LabError::CommandFailed {
                    command: line,
                    status: "exit status: 2".to_owned(),
                    stderr: "injected".to_owned(),
                });
            }
            Ok(String::new())
        }
    }

    #[test]
    fn failure_half_way_reports_what_to_delete_and_removes_a_stray_veth() {
        let steps = plan(&TopologySpec::default_lab("lab"));
        // The router end of the second link fails to move.
        let mut runner = FakeRunner {
            fail_on: "ip link set vt00123400201r netns",
            lines: Vec::new(),
        };
        let mut created = Vec::new();
        let error = execute(&steps, &mut runner, &mut created).expect_err("injected failure");
        assert!(error.to_string().contains("injected"));
        assert_eq!(
            created,
            [
                "lab-4660-2-vfn",
                "lab-4660-2-c1",
                "lab-4660-2-c2",
                "lab-4660-2-srv"
            ]
        );
        let tail = &runner.lines[runner.lines.len() - 2..];
        assert_eq!(
            tail,
            ["ip link del vt00123400201h", "ip link del vt00123400201r"]
        );

        let mut teardown = FakeRunner {
            fail_on: "ip netns del lab-4660-2-c1",
            lines: Vec::new(),
        };
        let errors = delete_namespaces(&created, &mut teardown);
        assert_eq!(errors.len(), 1, "one failure does not stop the others");
        assert_eq!(
            teardown.lines,
            [
                "ip netns del lab-4660-2-srv",
                "ip netns del lab-4660-2-c2",
                "ip netns del lab-4660-2-c1",
                "ip netns del lab-4660-2-vfn"
            ]
        );
    }

    #[test]
    fn failure_before_any_namespace_leaves_nothing_to_delete() {
        let steps = plan(&TopologySpec::default_lab("lab"));
        let mut runner = FakeRunner {
            fail_on: "ip netns add",
            lines: Vec::new(),
        };
        let mut created = Vec::new();
        assert!(execute(&steps, &mut runner, &mut created).is_err());
        assert!(created.is_empty());
        assert_eq!(runner.lines.len(), 1);
    }
}
