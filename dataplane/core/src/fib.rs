//! The forwarding information base: longest-prefix match over IPv4 and IPv6 (`vfn-lpm`), each
//! prefix pointing at a next hop. Built off the hot path from the interfaces' connected prefixes,
//! the router's own addresses and static routes; published whole with `arc-swap`, so a burst sees
//! one FIB. Next hops through a gateway carry the gateway's neighbour slot, which neighbour
//! resolution updates in place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use ipnet::IpNet;
use vfn_lpm::{Ipv4Lpm, Ipv6Lpm, LpmError, LpmLimits, NextHopIndex};

use crate::iface::{IfIndex, Interfaces};
use crate::neigh::{NeighbourKey, NeighbourManager, NeighbourSlot, TableFull};

/// Where a matching packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// One of the router's own addresses: the slow path answers.
    Local { iface: IfIndex },
    /// On-link: the destination is its own neighbour on `iface`.
    Connected { iface: IfIndex },
    /// The network or broadcast address of a connected subnet: never forwarded.
    Broadcast { iface: IfIndex },
    /// Through `gateway` on `iface`, whose neighbour entry is `slot`.
    Gateway {
        iface: IfIndex,
        gateway: IpAddr,
        slot: NeighbourSlot,
    },
}

impl NextHop {
    pub fn iface(&self) -> IfIndex {
        match *self {
            NextHop::Local { iface }
            | NextHop::Connected { iface }
            | NextHop::Broadcast { iface }
            | NextHop::Gateway { iface, .. } => iface,
        }
    }
}

/// A configured route: traffic to `prefix` goes through `via`, on `iface` if given (otherwise on
/// the interface where `via` is on-link).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRoute {
    pub prefix: IpNet,
    pub via: IpAddr,
    pub iface: Option<IfIndex>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FibError {
    #[error("route {prefix}: gateway {via} is not on-link on {where_}")]
    GatewayNotOnLink {
        prefix: IpNet,
        via: IpAddr,
        where_: String,
    },
    #[error("route {prefix}: gateway {via} is not of the prefix's address family")]
    FamilyMismatch { prefix: IpNet, via: IpAddr },
    #[error("route {prefix}: interface index {iface} does not exist")]
    NoSuchInterface { prefix: IpNet, iface: IfIndex },
    #[error("route {prefix}: the prefix is already {existing}")]
    Duplicate { prefix: IpNet, existing: String },
    #[error("route {prefix}: {source}")]
    Neighbours { prefix: IpNet, source: TableFull },
    #[error("IPv{family} table: {message}")]
    Lpm { family: u8, message: String },
    #[error("more than {max} distinct next hops")]
    TooManyNextHops { max: u32 },
}

/// Limits of the FIB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibLimits {
    pub max_routes_v4: usize,
    pub max_routes_v6: usize,
}

impl Default for FibLimits {
    fn default() -> Self {
        FibLimits {
            max_routes_v4: 1 << 20,
            max_routes_v6: 128 << 10,
        }
    }
}

/// An immutable FIB.
#[derive(Debug)]
pub struct Fib {
    v4: Ipv4Lpm,
    v6: Ipv6Lpm,
    next_hops: Vec<NextHop>,
    routes: Vec<(IpNet, NextHop)>,
}

/// The FIB as workers see it: swapped whole, loaded once per burst.
pub type SharedFib = Arc<ArcSwap<Fib>>;

impl Fib {
    /// Builds a FIB. Gateways get pinned neighbour entries (created if needed) from `neighbours`.
    pub fn build(
        ifaces: &Interfaces,
        static_routes: &[StaticRoute],
        neighbours: &mut NeighbourManager,
        limits: FibLimits,
        now: Duration,
    ) -> Result<Fib, FibError> {
        let mut routes: Vec<(IpNet, NextHop)> = Vec::new();
        for (index, iface) in ifaces.iter() {
            for net in &iface.ipv4 {
                routes.push((IpNet::V4(net.trunc()), NextHop::Connected { iface: index }));
                routes.push((
                    IpNet::from(IpAddr::V4(net.addr())),
                    NextHop::Local { iface: index },
                ));
                // /31 and /32 have no network or broadcast address (RFC 3021).
                if net.prefix_len() <= 30 {
                    for edge in [net.network(), net.broadcast()] {
                        routes.push((
                            IpNet::from(IpAddr::V4(edge)),
                            NextHop::Broadcast { iface: index },
                        ));
                    }
                }
            }
            for net in &iface.ipv6 {
                routes.push((IpNet::V6(net.trunc()), NextHop::Connected { iface: index }));
                routes.push((
                    IpNet::from(IpAddr::V6(net.addr())),
                    NextHop::Local { iface: index },
                ));
            }
        }
        for route in static_routes {
            let next_hop = static_next_hop(ifaces, route, neighbours, now)?;
            routes.push((route.prefix, next_hop));
        }

        let mut seen: HashMap<IpNet, NextHop> = HashMap::with_capacity(routes.len());
        for &(prefix, next_hop) in &routes {
            if let Some(existing) = seen.insert(prefix, next_hop) {
                return Err(FibError::Duplicate {
                    prefix,
                    existing: describe(ifaces, &existing),
                });
            }
        }

        let mut next_hops: Vec<NextHop> = Vec::new();
        let mut next_hop_index: HashMap<NextHop, NextHopIndex> = HashMap::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for &(prefix, next_hop) in &routes {
            let index = match next_hop_index.get(&next_hop) {
                Some(&index) => index,
                None => {
                    let index = NextHopIndex::try_from(next_hops.len())
                        .ok()
                        .filter(|&i| i <= vfn_lpm::NEXT_HOP_INDEX_MAX)
                        .ok_or(FibError::TooManyNextHops {
                            max: vfn_lpm::NEXT_HOP_INDEX_MAX,
                        })?;
                    next_hops.push(next_hop);
                    next_hop_index.insert(next_hop, index);
                    index
                }
            };
            match prefix {
                IpNet::V4(net) => v4.push((net.network(), net.prefix_len(), index)),
                IpNet::V6(net) => v6.push((net.network(), net.prefix_len(), index)),
            }
        }
        let v4 = Ipv4Lpm::build(
            &v4,
            LpmLimits {
                max_routes: limits.max_routes_v4,
            },
        )
        .map_err(|e: LpmError| FibError::Lpm {
            family: 4,
            message: e.to_string(),
        })?;
        let v6 = Ipv6Lpm::build(
            &v6,
            LpmLimits {
                max_routes: limits.max_routes_v6,
            },
        )
        .map_err(|e: LpmError| FibError::Lpm {
            family: 6,
            message: e.to_string(),
        })?;
        Ok(Fib {
            v4,
            v6,
            next_hops,
            routes,
        })
    }

    #[inline]
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<&NextHop> {
        let index = self.v4.lookup(addr)?;
        self.next_hops.get(index as usize)
    }

    #[inline]
    pub fn lookup_v6(&self, addr: Ipv6Addr) -> Option<&NextHop> {
        let index = self.v6.lookup(addr)?;
        self.next_hops.get(index as usize)
    }

    pub fn lookup(&self, addr: IpAddr) -> Option<&NextHop> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    /// Every route with its next hop, in build order.
    pub fn routes(&self) -> &[(IpNet, NextHop)] {
        &self.routes
    }

    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes() + self.v6.memory_bytes()
    }
}

fn static_next_hop(
    ifaces: &Interfaces,
    route: &StaticRoute,
    neighbours: &mut NeighbourManager,
    now: Duration,
) -> Result<NextHop, FibError> {
    let prefix = route.prefix;
    if matches!(prefix, IpNet::V4(_)) != route.via.is_ipv4() {
        return Err(FibError::FamilyMismatch {
            prefix,
            via: route.via,
        });
    }
    let iface = match route.iface {
        Some(iface) => {
            let candidate = ifaces
                .get(iface)
                .ok_or(FibError::NoSuchInterface { prefix, iface })?;
            if !candidate.is_on_link(route.via) {
                return Err(FibError::GatewayNotOnLink {
                    prefix,
                    via: route.via,
                    where_: candidate.name.clone(),
                });
            }
            iface
        }
        None => ifaces
            .iter()
            .find(|(_, iface)| iface.is_on_link(route.via))
            .map(|(index, _)| index)
            .ok_or_else(|| FibError::GatewayNotOnLink {
                prefix,
                via: route.via,
                where_: "any interface".into(),
            })?,
    };
    let slot = neighbours
        .pin(
            NeighbourKey {
                iface,
                addr: route.via,
            },
            now,
        )
        .map_err(|source| FibError::Neighbours { prefix, source })?;
    Ok(NextHop::Gateway {
        iface,
        gateway: route.via,
        slot,
    })
}

fn describe(ifaces: &Interfaces, next_hop: &NextHop) -> String {
    let name = ifaces
        .get(next_hop.iface())
        .map(|i| i.name.as_str())
        .unwrap_or("?");
    match next_hop {
        NextHop::Local { .. } => format!("a local address on {name}"),
        NextHop::Connected { .. } => format!("connected on {name}"),
        NextHop::Broadcast { .. } => format!("a subnet's network or broadcast address on {name}"),
        NextHop::Gateway { gateway, .. } => format!("routed via {gateway} on {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::tests::iface;
    use crate::neigh::{NeighbourTable, NeighbourTimers};

    fn setup() -> (Interfaces, NeighbourManager) {
        let ifaces = Interfaces::new(
            2,
            vec![
                iface("p0", 0, None, "198.18.1.1/24", "2001:2:0:1::1/64"),
                iface("p1", 1, None, "198.18.2.1/24", "2001:2:0:2::1/64"),
            ],
        )
        .expect("valid");
        (
            ifaces,
            NeighbourManager::new(NeighbourTable::new(16), NeighbourTimers::default()),
        )
    }

    fn route(prefix: &str, via: &str) -> StaticRoute {
        StaticRoute {
            prefix: prefix.parse().expect("prefix"),
            via: via.parse().expect("addr"),
            iface: None,
        }
    }

    #[test]
    fn connected_local_and_static_routes() {
        let (ifaces, mut neighbours) = setup();
        let routes = [
            route("198.19.0.0/16", "198.18.2.2"),
            route("2001:2:0:ff00::/56", "2001:2:0:2::2"),
        ];
        let fib = Fib::build(
            &ifaces,
            &routes,
            &mut neighbours,
            FibLimits::default(),
            Duration::ZERO,
        )
        .expect("valid");
        let v4 = |s: &str| fib.lookup(s.parse().expect("addr")).copied();
        assert_eq!(v4("198.18.1.1"), Some(NextHop::Local { iface: 0 }));
        assert_eq!(v4("198.18.1.77"), Some(NextHop::Connected { iface: 0 }));
        assert_eq!(v4("198.18.1.0"), Some(NextHop::Broadcast { iface: 0 }));
        assert_eq!(v4("198.18.1.255"), Some(NextHop::Broadcast { iface: 0 }));
        assert_eq!(v4("198.18.2.9"), Some(NextHop::Connected { iface: 1 }));
        assert!(matches!(
            v4("198.19.200.1"),
            Some(NextHop::Gateway { iface: 1, .. })
        ));
        assert_eq!(v4("198.20.0.1"), None);
        assert_eq!(v4("2001:2:0:1::1"), Some(NextHop::Local { iface: 0 }));
        assert!(matches!(
            v4("2001:2:0:ff01::5"),
            Some(NextHop::Gateway { iface: 1, .. })
        ));
        assert_eq!(v4("2001:2:0:9::1"), None);
        assert_eq!(neighbours.len(), 2, "gateways are pinned");
    }

    #[test]
    fn gateway_must_be_on_link() {
        let (ifaces, mut neighbours) = setup();
        let err = Fib::build(
            &ifaces,
            &[route("198.19.0.0/16", "198.18.9.2")],
            &mut neighbours,
            FibLimits::default(),
            Duration::ZERO,
        )
        .expect_err("off-link");
        assert!(matches!(err, FibError::GatewayNotOnLink { .. }), "{err}");
    }

    #[test]
    fn family_must_match() {
        let (ifaces, mut neighbours) = setup();
        let err = Fib::build(
            &ifaces,
            &[route("198.19.0.0/16", "2001:2:0:2::2")],
            &mut neighbours,
            FibLimits::default(),
            Duration::ZERO,
        )
        .expect_err("mismatch");
        assert!(matches!(err, FibError::FamilyMismatch { .. }), "{err}");
    }

    #[test]
    fn duplicate_of_connected_prefix_is_refused() {
        let (ifaces, mut neighbours) = setup();
        let err = Fib::build(
            &ifaces,
            &[route("198.18.1.0/24", "198.18.2.2")],
            &mut neighbours,
            FibLimits::default(),
            Duration::ZERO,
        )
        .expect_err("duplicate");
        assert!(matches!(err, FibError::Duplicate { .. }), "{err}");
    }
}
