//! The shape of a lab: which namespaces exist, how they are linked, which addresses they hold.
//!
//! [`TopologySpec`] is what a caller asks for; [`TopologySpec::resolve`] checks it and turns it
//! into a [`Topology`] with every name and address spelled out, from which both the setup plan and
//! the router's configuration are derived. Pure data: nothing here touches the system.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::LabError;
use crate::address::{IpCidr, is_lab_prefix};

/// The role of the router's namespace; hosts may not use it.
pub const ROUTER_ROLE: &str = "vfn";
/// The name of every host's interface towards the router.
pub const HOST_INTERFACE: &str = "eth0";
/// Router ports are named `vfn-<host role>`.
pub const ROUTER_PORT_PREFIX: &str = "vfn-";
/// Linux interface names are at most 15 bytes (IFNAMSIZ minus the NUL).
pub const INTERFACE_NAME_LEN_MAX: usize = 15;
/// A host role must fit into its router port name.
pub const ROLE_LEN_MAX: usize = INTERFACE_NAME_LEN_MAX - ROUTER_PORT_PREFIX.len();
/// Keeps namespace names short (`<prefix>-<pid>-<sequence>-<role>`).
pub const LAB_PREFIX_LEN_MAX: usize = 12;
pub const HOSTS_MAX: usize = 32;
pub const REMOTE_ADDRESSES_PER_HOST_MAX: usize = 16;
pub const MTU_DEFAULT: u32 = 1500;
/// IPv6 needs at least 1280; below it the kernel silently drops IPv6 from the link.
pub const MTU_MIN: u32 = 1280;
/// The largest MTU a veth accepts.
pub const MTU_MAX: u32 = 65535;

const _: () = assert!(ROLE_LEN_MAX >= ROUTER_ROLE.len());

/// Who owns the router addresses (198.18.N.1, 2001:2:0:N::1) in the router namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterMode {
    /// The VFN process owns them: the router ports get no kernel addresses and IPv6 is disabled
    /// on them, so the kernel in the router namespace stays silent.
    External,
    /// The kernel owns them and forwards (`ip_forward`, IPv6 `forwarding`), with static routes
    /// to the hosts' remote addresses: a reference router to check the lab itself against.
    Kernel,
}

/// One host namespace linked to the router by a veth pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// Short name: `[a-z0-9]`, at most [`ROLE_LEN_MAX`] bytes.
    pub role: String,
    /// N in the host's subnets 198.18.N.0/24 and 2001:2:0:N::/64; unique per lab.
    pub subnet: u8,
    /// MTU of both ends of the host's link.
    pub mtu: u32,
    /// Addresses put on the host's `lo`: networks "behind" the host that the router reaches
    /// through a static route via the host's link address.
    pub remote_addresses: Vec<IpCidr>,
    /// Turn GRO on on the host's interface (otherwise off). Needed when the router redirects
    /// XDP frames into this link: a veth hands such frames only to a peer with NAPI, which GRO
    /// enables. Applied after the link is up (kernel quirk: enabled earlier, the frames vanish).
    pub gro: bool,
}

impl HostSpec {
    pub fn new(role: &str, subnet: u8) -> Self {
        Self {
            role: role.to_owned(),
            subnet,
            mtu: MTU_DEFAULT,
            remote_addresses: Vec::new(),
            gro: false,
        }
    }

    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = mtu;
        self
    }

    pub fn with_remote_address(mut self, address: IpCidr) -> Self {
        self.remote_addresses.push(address);
        self
    }

    pub fn with_gro(mut self, gro: bool) -> Self {
        self.gro = gro;
        self
    }
}

/// What a caller asks for: a name prefix, who routes, and the hosts around the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologySpec {
    /// Prefix of every namespace name: `[a-z0-9]`, at most [`LAB_PREFIX_LEN_MAX`] bytes.
    pub prefix: String,
    pub router_mode: RouterMode,
    pub hosts: Vec<HostSpec>,
    /// Queues of every veth (both ends), 1..=[`QUEUES_MAX`]: a router worker per queue.
    pub queues: u32,
}

/// Most queues a lab veth gets.
pub const QUEUES_MAX: u32 = 8;

impl TopologySpec {
    /// A lab with no hosts yet and an external router.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            router_mode: RouterMode::External,
            hosts: Vec::new(),
            queues: 1,
        }
    }

    /// The default lab: clients `c1`, `c2` and server `srv` on subnets 1, 2 and 3, with the
    /// remote addresses 198.19.0.1/32 and 2001:2:0:ff::1/128 on the server's `lo`.
    pub fn default_lab(prefix: &str) -> Self {
        Self::new(prefix)
            .with_host(HostSpec::new("c1", 1))
            .with_host(HostSpec::new("c2", 2))
            .with_host(
                HostSpec::new("srv", 3)
                    .with_remote_address(IpCidr::host(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1))))
                    .with_remote_address(IpCidr::host(IpAddr::V6(Ipv6Addr::new(
                        0x2001, 2, 0, 0xff, 0, 0, 0, 1,
                    )))),
            )
    }

    pub fn with_router_mode(mut self, router_mode: RouterMode) -> Self {
        self.router_mode = router_mode;
        self
    }

    /// Gives every veth `queues` RX and TX queues, for a router with that many workers.
    pub fn with_queues(mut self, queues: u32) -> Result<Self, LabError> {
        if !(1..=QUEUES_MAX).contains(&queues) {
            return Err(LabError::InvalidSpec {
                field: "queues".into(),
                reason: format!("{queues} is not in 1..={QUEUES_MAX}"),
            });
        }
        self.queues = queues;
        Ok(self)
    }

    pub fn with_host(mut self, host: HostSpec) -> Self {
        self.hosts.push(host);
        self
    }

    /// Sets the MTU of the link between host `role` and the router.
    pub fn with_link_mtu(mut self, role: &str, mtu: u32) -> Result<Self, LabError> {
        let known = self.known_roles();
        let host = self
            .hosts
            .iter_mut()
            .find(|host| host.role == role)
            .ok_or_else(|| LabError::UnknownRole {
                role: role.to_owned(),
                known,
            })?;
        host.mtu = mtu;
        Ok(self)
    }

    /// Checks the specification and spells out every name and address for one lab instance.
    pub fn resolve(&self, instance: LabInstance) -> Result<Topology, LabError> {
        self.validate()?;
        let name = instance.lab_name(&self.prefix);
        let router_netns = namespace_name(&name, ROUTER_ROLE);
        let mut hosts = Vec::with_capacity(self.hosts.len());
        let mut ports = Vec::with_capacity(self.hosts.len());
        let mut static_routes = Vec::new();
        for spec in &self.hosts {
            let (router_v4, host_v4) = subnet_v4(spec.subnet);
            let (router_v6, host_v6) = subnet_v6(spec.subnet);
            let port = RouterPort {
                interface: format!("{ROUTER_PORT_PREFIX}{}", spec.role),
                host_role: spec.role.clone(),
                ipv4: router_v4,
                ipv6: router_v6,
                mtu: spec.mtu,
                queues: self.queues,
            };
            static_routes.extend(spec.remote_addresses.iter().map(|remote| StaticRoute {
                destination: remote.network(),
                next_hop: match remote.addr() {
                    IpAddr::V4(_) => host_v4.addr(),
                    IpAddr::V6(_) => host_v6.addr(),
                },
                interface: port.interface.clone(),
            }));
            hosts.push(Host {
                role: spec.role.clone(),
                netns: namespace_name(&name, &spec.role),
                interface: HOST_INTERFACE.to_owned(),
                ipv4: host_v4,
                ipv6: host_v6,
                gateway_v4: router_v4.addr(),
                gateway_v6: router_v6.addr(),
                remote_addresses: spec.remote_addresses.clone(),
                mtu: spec.mtu,
                gro: spec.gro,
            });
            ports.push(port);
        }
        Ok(Topology {
            name,
            instance,
            router: Router {
                netns: router_netns,
                mode: self.router_mode,
                ports,
                static_routes,
            },
            hosts,
        })
    }

    fn validate(&self) -> Result<(), LabError> {
        check_name("prefix", &self.prefix, LAB_PREFIX_LEN_MAX)?;
        if self.hosts.is_empty() || self.hosts.len() > HOSTS_MAX {
            return Err(invalid(
                "hosts",
                format!("{} hosts; a lab has 1 to {HOSTS_MAX}", self.hosts.len()),
            ));
        }
        for (index, host) in self.hosts.iter().enumerate() {
            validate_host(host)?;
            for earlier in &self.hosts[..index] {
                if earlier.role == host.role {
                    return Err(invalid(
                        "hosts.role",
                        format!("{:?} appears twice", host.role),
                    ));
                }
                if earlier.subnet == host.subnet {
                    return Err(invalid(
                        "hosts.subnet",
                        format!(
                            "{} is used by both {} and {}",
                            host.subnet, earlier.role, host.role
                        ),
                    ));
                }
            }
        }
        let links: Vec<IpCidr> = self
            .hosts
            .iter()
            .flat_map(|host| {
                [
                    subnet_v4(host.subnet).1.network(),
                    subnet_v6(host.subnet).1.network(),
                ]
            })
            .collect();
        let remotes: Vec<&IpCidr> = self
            .hosts
            .iter()
            .flat_map(|host| &host.remote_addresses)
            .collect();
        for (index, remote) in remotes.iter().enumerate() {
            let clash = remotes[..index]
                .iter()
                .copied()
                .chain(&links)
                .find(|other| other.overlaps(remote));
            if let Some(clash) = clash {
                return Err(invalid(
                    "hosts.remote_addresses",
                    format!("{remote} overlaps {clash}; the router could not tell them apart"),
                ));
            }
        }
        Ok(())
    }

    fn known_roles(&self) -> String {
        let roles: Vec<&str> = self.hosts.iter().map(|host| host.role.as_str()).collect();
        roles.join(", ")
    }
}

fn validate_host(host: &HostSpec) -> Result<(), LabError> {
    check_name("hosts.role", &host.role, ROLE_LEN_MAX)?;
    if host.role == ROUTER_ROLE {
        return Err(invalid(
            "hosts.role",
            format!("{ROUTER_ROLE:?} is the router's role"),
        ));
    }
    if !(MTU_MIN..=MTU_MAX).contains(&host.mtu) {
        return Err(invalid(
            "hosts.mtu",
            format!(
                "{} for {} is outside {MTU_MIN}..={MTU_MAX}",
                host.mtu, host.role
            ),
        ));
    }
    if host.remote_addresses.len() > REMOTE_ADDRESSES_PER_HOST_MAX {
        return Err(invalid(
            "hosts.remote_addresses",
            format!(
                "{} for {}; at most {REMOTE_ADDRESSES_PER_HOST_MAX}",
                host.remote_addresses.len(),
                host.role
            ),
        ));
    }
    if let Some(outside) = host
        .remote_addresses
        .iter()
        .find(|remote| !is_lab_prefix(remote))
    {
        return Err(invalid(
            "hosts.remote_addresses",
            format!(
                "{outside} of {} is not inside 198.18.0.0/15 or 2001:2::/48",
                host.role
            ),
        ));
    }
    Ok(())
}

fn check_name(field: &str, name: &str, len_max: usize) -> Result<(), LabError> {
    let well_formed = !name.is_empty()
        && name.len() <= len_max
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    if well_formed {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} must be 1 to {len_max} characters of [a-z0-9]"),
        ))
    }
}

fn invalid(field: &str, reason: String) -> LabError {
    LabError::InvalidSpec {
        field: field.to_owned(),
        reason,
    }
}

/// The router's and the host's address on link N: 198.18.N.1/24 and 198.18.N.2/24.
fn subnet_v4(subnet: u8) -> (IpCidr, IpCidr) {
    let router = Ipv4Addr::new(198, 18, subnet, 1);
    let host = Ipv4Addr::new(198, 18, subnet, 2);
    (
        with_len(IpAddr::V4(router), 24),
        with_len(IpAddr::V4(host), 24),
    )
}

/// The router's and the host's address on link N: 2001:2:0:N::1/64 and 2001:2:0:N::2/64.
fn subnet_v6(subnet: u8) -> (IpCidr, IpCidr) {
    let segment = u16::from(subnet);
    let router = Ipv6Addr::new(0x2001, 2, 0, segment, 0, 0, 0, 1);
    let host = Ipv6Addr::new(0x2001, 2, 0, segment, 0, 0, 0, 2);
    (
        with_len(IpAddr::V6(router), 64),
        with_len(IpAddr::V6(host), 64),
    )
}

fn with_len(addr: IpAddr, prefix_len: u8) -> IpCidr {
    IpCidr::from_parts(addr, prefix_len)
}

/// Identifies one lab among all labs on the machine: the creating process and its own count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabInstance {
    pub pid: u32,
    /// Distinguishes the labs of one process.
    pub sequence: u32,
}

impl LabInstance {
    /// `<prefix>-<pid>-<sequence>`: the common beginning of the lab's namespace names.
    pub fn lab_name(&self, prefix: &str) -> String {
        format!("{prefix}-{}-{}", self.pid, self.sequence)
    }
}

fn namespace_name(lab_name: &str, role: &str) -> String {
    format!("{lab_name}-{role}")
}

/// The pid encoded in a namespace name `<prefix>-<pid>-...` made by this crate, if `netns_name`
/// is one with this prefix.
pub(crate) fn creator_pid(prefix: &str, netns_name: &str) -> Option<u32> {
    let rest = netns_name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Everything about a lab instance, spelled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// `<prefix>-<pid>-<sequence>`, the beginning of every namespace name of this lab.
    pub name: String,
    pub instance: LabInstance,
    pub router: Router,
    pub hosts: Vec<Host>,
}

/// The router namespace and what the router must do there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    pub netns: String,
    pub mode: RouterMode,
    /// One port per host, in the order of [`Topology::hosts`].
    pub ports: Vec<RouterPort>,
    /// Routes to the hosts' remote addresses, via the hosts' link addresses.
    pub static_routes: Vec<StaticRoute>,
}

/// One router interface: the router end of a host's link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterPort {
    /// `vfn-<host role>`, in the router namespace.
    pub interface: String,
    pub host_role: String,
    /// The address the router owns on this link (198.18.N.1/24).
    pub ipv4: IpCidr,
    /// The address the router owns on this link (2001:2:0:N::1/64).
    pub ipv6: IpCidr,
    pub mtu: u32,
    /// RX and TX queues of the link (both ends).
    pub queues: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRoute {
    pub destination: IpCidr,
    pub next_hop: IpAddr,
    /// The router port the next hop is on.
    pub interface: String,
}

/// A host namespace and its one link to the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub role: String,
    pub netns: String,
    /// Always [`HOST_INTERFACE`].
    pub interface: String,
    /// 198.18.N.2/24
    pub ipv4: IpCidr,
    /// 2001:2:0:N::2/64
    pub ipv6: IpCidr,
    /// The router's address on this link, the host's next hop to all of 198.18.0.0/15.
    pub gateway_v4: IpAddr,
    /// The router's address on this link, the host's next hop to all of 2001:2::/48.
    pub gateway_v6: IpAddr,
    /// On the host's `lo`.
    pub remote_addresses: Vec<IpCidr>,
    pub mtu: u32,
    pub gro: bool,
}

impl Topology {
    pub fn host(&self, role: &str) -> Result<&Host, LabError> {
        self.hosts
            .iter()
            .find(|host| host.role == role)
            .ok_or_else(|| self.unknown_role(role))
    }

    /// The router port linked to host `role`.
    pub fn port(&self, role: &str) -> Result<&RouterPort, LabError> {
        self.router
            .ports
            .iter()
            .find(|port| port.host_role == role)
            .ok_or_else(|| self.unknown_role(role))
    }

    /// The namespace of `role`: a host role, or [`ROUTER_ROLE`].
    pub fn netns(&self, role: &str) -> Result<&str, LabError> {
        if role == ROUTER_ROLE {
            return Ok(&self.router.netns);
        }
        self.host(role).map(|host| host.netns.as_str())
    }

    /// The router namespace first, then the hosts in order.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.router.netns.as_str())
            .chain(self.hosts.iter().map(|host| host.netns.as_str()))
    }

    fn unknown_role(&self, role: &str) -> LabError {
        let roles: Vec<&str> = std::iter::once(ROUTER_ROLE)
            .chain(self.hosts.iter().map(|host| host.role.as_str()))
            .collect();
        LabError::UnknownRole {
            role: role.to_owned(),
            known: roles.join(", "),
        }
    }
}

impl fmt::Display for RouterMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::External => "external",
            Self::Kernel => "kernel",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: LabInstance = LabInstance {
        pid: 4321,
        sequence: 7,
    };

    fn resolved(spec: &TopologySpec) -> Topology {
        spec.resolve(INSTANCE).expect("valid spec")
    }

    fn spec_error(spec: &TopologySpec) -> String {
        spec.resolve(INSTANCE)
            .expect_err("invalid spec")
            .to_string()
    }

    #[test]
    fn default_lab_has_the_documented_names_and_addresses() {
        let topology = resolved(&TopologySpec::default_lab("vfnlab"));
        assert_eq!(topology.name, "vfnlab-4321-7");
        assert_eq!(topology.router.netns, "vfnlab-4321-7-vfn");
        assert_eq!(topology.router.mode, RouterMode::External);
        let srv = topology.host("srv").expect("srv");
        assert_eq!(srv.netns, "vfnlab-4321-7-srv");
        assert_eq!(srv.interface, "eth0");
        assert_eq!(srv.ipv4.to_string(), "198.18.3.2/24");
        assert_eq!(srv.ipv6.to_string(), "2001:2:0:3::2/64");
        assert_eq!(srv.gateway_v4.to_string(), "198.18.3.1");
        assert_eq!(srv.gateway_v6.to_string(), "2001:2:0:3::1");
        let remotes: Vec<String> = srv
            .remote_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(remotes, ["198.19.0.1/32", "2001:2:0:ff::1/128"]);
        let port = topology.port("c2").expect("c2 port");
        assert_eq!(port.interface, "vfn-c2");
        assert_eq!(port.ipv4.to_string(), "198.18.2.1/24");
        assert_eq!(port.ipv6.to_string(), "2001:2:0:2::1/64");
        assert_eq!(port.mtu, MTU_DEFAULT);
        let routes: Vec<String> = topology
            .router
            .static_routes
            .iter()
            .map(|route| {
                format!(
                    "{} via {} dev {}",
                    route.destination, route.next_hop, route.interface
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                "198.19.0.1/32 via 198.18.3.2 dev vfn-srv",
                "2001:2:0:ff::1/128 via 2001:2:0:3::2 dev vfn-srv"
            ]
        );
        let namespaces: Vec<&str> = topology.namespaces().collect();
        assert_eq!(
            namespaces,
            [
                "vfnlab-4321-7-vfn",
                "vfnlab-4321-7-c1",
                "vfnlab-4321-7-c2",
                "vfnlab-4321-7-srv"
            ]
        );
        assert_eq!(topology.netns("vfn").expect("router"), "vfnlab-4321-7-vfn");
        assert!(
            topology
                .netns("nope")
                .expect_err("unknown")
                .to_string()
                .contains("vfn, c1, c2, srv")
        );
    }

    #[test]
    fn link_mtu_applies_to_both_ends_and_unknown_roles_fail() {
        let spec = TopologySpec::default_lab("vfnlab")
            .with_link_mtu("c1", 2000)
            .expect("c1 exists");
        let topology = resolved(&spec);
        assert_eq!(topology.host("c1").expect("c1").mtu, 2000);
        assert_eq!(topology.port("c1").expect("c1 port").mtu, 2000);
        assert_eq!(topology.port("srv").expect("srv port").mtu, 1500);
        assert!(
            TopologySpec::default_lab("vfnlab")
                .with_link_mtu("c9", 2000)
                .is_err()
        );
    }

    #[test]
    fn hosts_can_be_added_beyond_the_default_lab() {
        let spec =
            TopologySpec::default_lab("vfnlab").with_host(HostSpec::new("ana", 9).with_gro(true));
        let topology = resolved(&spec);
        let analyzer = topology.host("ana").expect("analyzer");
        assert_eq!(analyzer.ipv4.to_string(), "198.18.9.2/24");
        assert!(analyzer.gro);
        assert_eq!(topology.port("ana").expect("port").interface, "vfn-ana");
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases = [
            (TopologySpec::new("vfnlab"), "hosts"),
            (TopologySpec::default_lab("Vfn-lab"), "prefix"),
            (
                TopologySpec::default_lab("averyveryverylongprefix"),
                "prefix",
            ),
            (
                TopologySpec::default_lab("vfnlab").with_host(HostSpec::new("c1", 9)),
                "hosts.role",
            ),
            (
                TopologySpec::default_lab("vfnlab").with_host(HostSpec::new("vfn", 9)),
                "hosts.role",
            ),
            (
                TopologySpec::default_lab("vfnlab").with_host(HostSpec::new("twelvechars1", 9)),
                "hosts.role",
            ),
            (
                TopologySpec::default_lab("vfnlab").with_host(HostSpec::new("c3", 1)),
                "hosts.subnet",
            ),
            (
                TopologySpec::default_lab("vfnlab")
                    .with_host(HostSpec::new("c3", 4).with_mtu(1279)),
                "hosts.mtu",
            ),
            (
                TopologySpec::default_lab("vfnlab")
                    .with_host(HostSpec::new("c3", 4).with_mtu(65536)),
                "hosts.mtu",
            ),
        ];
        for (spec, field) in cases {
            let message = spec_error(&spec);
            assert!(message.contains(&format!("{field}:")), "{field}: {message}");
        }
    }

    #[test]
    fn remote_addresses_stay_in_the_lab_and_apart() {
        let remote = |text: &str, len| IpCidr::new(text.parse().expect("addr"), len).expect("cidr");
        let outside = HostSpec::new("c3", 4).with_remote_address(remote("10.0.0.1", 32));
        assert!(
            spec_error(&TopologySpec::default_lab("vfnlab").with_host(outside))
                .contains("not inside")
        );
        let duplicate = HostSpec::new("c3", 4).with_remote_address(remote("198.19.0.0", 24));
        assert!(
            spec_error(&TopologySpec::default_lab("vfnlab").with_host(duplicate))
                .contains("overlaps")
        );
        let on_a_link = HostSpec::new("c3", 4).with_remote_address(remote("198.18.1.7", 32));
        assert!(
            spec_error(&TopologySpec::default_lab("vfnlab").with_host(on_a_link))
                .contains("overlaps")
        );
        let fine = HostSpec::new("c3", 4).with_remote_address(remote("198.19.1.1", 32));
        assert!(
            TopologySpec::default_lab("vfnlab")
                .with_host(fine)
                .resolve(INSTANCE)
                .is_ok()
        );
    }

    #[test]
    fn creator_pid_reads_back_what_the_naming_writes() {
        let topology = resolved(&TopologySpec::default_lab("vfnlab"));
        for netns in topology.namespaces() {
            assert_eq!(creator_pid("vfnlab", netns), Some(4321));
            assert_eq!(creator_pid("vfn", netns), None);
        }
        assert_eq!(creator_pid("vfnlab", "vfnlab-0-1-c1"), None);
        assert_eq!(creator_pid("vfnlab", "vfnlab-+5-1-c1"), None);
    }
}
