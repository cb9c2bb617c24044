//! Lab networks for the VFN: Linux network namespaces joined by veth pairs, and bounded
//! traffic primitives to drive real packets through them. Used by the `vfn lab` demo (which
//! starts the router in the router namespace) and by the end-to-end tests. Needs root.
//!
//! # The default lab ([`TopologySpec::default_lab`])
//!
//! ```text
//!   ns <lab>-c1                    ns <lab>-vfn                       ns <lab>-srv
//!  +-----------------+        +---------------------------+        +------------------------+
//!  | eth0            |        | vfn-c1    198.18.1.1      |        | eth0                   |
//!  |  198.18.1.2/24  |--veth--|           2001:2:0:1::1   |        |  198.18.3.2/24         |
//!  |  2001:2:0:1::2  |        |                           |        |  2001:2:0:3::2/64      |
//!  +-----------------+        |          the router       |--veth--|                        |
//!                             |                           |        | lo 198.19.0.1/32       |
//!   ns <lab>-c2               | vfn-c2    198.18.2.1      |        |    2001:2:0:ff::1/128  |
//!  +-----------------+        |           2001:2:0:2::1   |        |    ("remote" network,  |
//!  | eth0            |--veth--|                           |        |     static route via   |
//!  |  198.18.2.2/24  |        | vfn-srv   198.18.3.1      |        |     198.18.3.2 and     |
//!  |  2001:2:0:2::2  |        |           2001:2:0:3::1   |        |     2001:2:0:3::2)     |
//!  +-----------------+        +---------------------------+        +------------------------+
//! ```
//!
//! `<lab>` is `<prefix>-<pid>-<sequence>`, unique per lab instance. Host N has 198.18.N.2/24 and
//! 2001:2:0:N::2/64 on `eth0`, and routes only 198.18.0.0/15 via 198.18.N.1 and 2001:2::/48 via
//! 2001:2:0:N::1: there is no default route, so nothing leaves the lab ranges. Host interfaces
//! have checksum and segmentation offloads off (partially checksummed packets would reach
//! AF_XDP unfinished). Per-link MTUs are set with [`TopologySpec::with_link_mtu`].
//!
//! The router addresses 198.18.N.1 and 2001:2:0:N::1 belong to:
//! - [`RouterMode::External`]: the VFN process. The kernel in the router namespace has no
//!   addresses and IPv6 is disabled on the ports, so it stays silent.
//! - [`RouterMode::Kernel`]: the kernel, forwarding, with static routes to the remote
//!   addresses. A reference router to test the lab itself against.
//!
//! [`Topology`] spells out every namespace, interface, address, gateway, router port and MTU,
//! for generating the router's configuration.
//!
//! # Safety rails
//! - Every traffic primitive refuses destinations outside 198.18.0.0/15 and 2001:2::/48.
//! - Every loop and every external command has a deadline; nothing waits on a bare sleep.
//! - [`Lab`] deletes its namespaces on drop; [`remove_stale`] deletes those of crashed runs;
//!   [`install_interrupt_flag`] turns Ctrl-C into an orderly return so that drop runs.
//! - [`ChildGuard`] stops processes it started by PID, never by name.
//!
//! # Scenarios
//! [`scenarios`] drives real tools between the hosts (curl against python3's `http.server`,
//! sshpass and ssh against an `sshd` of the lab's own, nmap, hping3, socat): the benign and
//! hostile traffic that the anomaly models are trained on and tested against.

mod address;
mod command;
mod error;
mod interrupt;
mod lab;
mod netns;
pub mod scenarios;
mod setup;
mod topology;
mod traffic;
mod vfn;

pub use address::{
    IpCidr, LAB_IPV4_RANGE, LAB_IPV6_RANGE, ensure_lab_address, is_lab_address, is_lab_prefix,
};
pub use command::netns_command;
pub use error::LabError;
pub use interrupt::{install_interrupt_flag, interrupted, wait_until};
pub use lab::{CHILD_TERMINATION_GRACE, ChildGuard, Lab};
pub use netns::{NETNS_RUN_DIR, in_netns, list_namespaces, remove_stale};
pub use topology::{
    HOST_INTERFACE, HOSTS_MAX, Host, HostSpec, INTERFACE_NAME_LEN_MAX, LAB_PREFIX_LEN_MAX,
    LabInstance, MTU_DEFAULT, MTU_MAX, MTU_MIN, QUEUES_MAX, REMOTE_ADDRESSES_PER_HOST_MAX,
    ROLE_LEN_MAX, ROUTER_PORT_PREFIX, ROUTER_ROLE, Router, RouterMode, RouterPort, StaticRoute,
    Topology, TopologySpec,
};
pub use traffic::{
    Connect, FloodResult, PingOpts, PingResult, TRAFFIC_DEADLINE_MAX, TransferResult, UdpResult,
    interface_mac, ping, send_raw_frames, tcp_connect, tcp_transfer, udp_exchange, udp_flood,
};
pub use vfn::{Counters, RunningVfn, lab_config, vfn_binary, vfnctl_binary};
