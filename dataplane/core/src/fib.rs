//! The forwarding information base: longest-prefix match over IPv4 and IPv6 (`vfn-lpm`), each
//! prefix pointing at a next hop. Built off the hot path from the interfaces' connected prefixes,
//! the router's own addresses and static routes; published whole with `arc-swap`, so a burst sees
//! one FIB. Next hops through a gateway carry the gateway's neighbour slot, which neighbour
//! resolution updates in place.
//!
//! While the router runs, the static routes are replaced whole by the [`FibPublisher`], run by
//! the slow path because gateways need neighbour slots and the slow path is the neighbour table's
//! single writer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use hashbrown::{HashMap, HashSet};
use ipnet::IpNet;
use vfn_lpm::{Ipv4Lpm, Ipv6Lpm, LpmError, LpmLimits, NextHopIndex};

use crate::iface::{IfIndex, Interfaces};
use crate::neigh::{NeighbourKey, NeighbourManager, NeighbourSlot, TableFull};
use crate::retire::Retired;

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
    #[error("routes replaced more than {max} times within a second; try again shortly")]
    ReplacedTooOften { max: usize },
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
    /// The interfaces' routes first, then the static routes in the order given.
    routes: Vec<(IpNet, NextHop)>,
    interface_route_count: usize,
}

/// The slot of a gateway not pinned yet: a placeholder while [`Fib::build`] checks the routes.
const SLOT_UNASSIGNED: NeighbourSlot = NeighbourSlot::MAX;

/// The FIB as workers see it: swapped whole, loaded once per burst.
pub type SharedFib = Arc<ArcSwap<Fib>>;

impl Fib {
    /// Builds a FIB. Gateways get pinned neighbour entries (created if needed) from `neighbours`,
    /// last: a refused route list changes nothing.
    pub fn build(
        ifaces: &Interfaces,
        static_routes: &[StaticRoute],
        neighbours: &mut NeighbourManager,
        limits: FibLimits,
        now: Duration,
    ) -> Result<Fib, FibError> {
        let mut routes = interface_routes(ifaces);
        let interface_route_count = routes.len();
        let mut gateways = Vec::with_capacity(static_routes.len());
        for route in static_routes {
            let gateway = static_gateway(ifaces, route)?;
            gateways.push(gateway);
            routes.push((
                route.prefix,
                NextHop::Gateway {
                    iface: gateway.iface,
                    gateway: gateway.addr,
                    slot: SLOT_UNASSIGNED,
                },
            ));
        }
        refuse_duplicates(ifaces, &routes)?;
        let (v4, v6, mut next_hops) = build_tables(&routes, limits)?;

        let slots = neighbours
            .pin_all(&gateways, now)
            .map_err(|refused| FibError::Neighbours {
                prefix: static_routes[refused.index].prefix,
                source: refused.full,
            })?;
        let slot_of: HashMap<NeighbourKey, NeighbourSlot> =
            gateways.iter().copied().zip(slots).collect();
        let assign = |next_hop: &mut NextHop| {
            if let NextHop::Gateway {
                iface,
                gateway,
                slot,
            } = next_hop
            {
                let key = NeighbourKey {
                    iface: *iface,
                    addr: *gateway,
                };
                *slot = slot_of.get(&key).copied().unwrap_or(SLOT_UNASSIGNED);
            }
        };
        next_hops.iter_mut().for_each(assign);
        routes.iter_mut().for_each(|(_, next_hop)| assign(next_hop));
        Ok(Fib {
            v4,
            v6,
            next_hops,
            routes,
            interface_route_count,
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

    /// Every route with its next hop: [`Fib::interface_routes`], then [`Fib::static_routes`].
    pub fn routes(&self) -> &[(IpNet, NextHop)] {
        &self.routes
    }

    /// The routes the interfaces make: connected prefixes, the router's own addresses, the
    /// network and broadcast addresses of connected subnets.
    pub fn interface_routes(&self) -> &[(IpNet, NextHop)] {
        &self.routes[..self.interface_route_count]
    }

    /// The static routes, in the order given, each with the interface it was found on.
    pub fn static_routes(&self) -> impl Iterator<Item = StaticRoute> + '_ {
        self.routes[self.interface_route_count..]
            .iter()
            .filter_map(|&(prefix, next_hop)| match next_hop {
                NextHop::Gateway { iface, gateway, .. } => Some(StaticRoute {
                    prefix,
                    via: gateway,
                    iface: Some(iface),
                }),
                NextHop::Local { .. } | NextHop::Connected { .. } | NextHop::Broadcast { .. } => {
                    None
                }
            })
    }

    /// The neighbours the static routes go through.
    fn gateways(&self) -> impl Iterator<Item = NeighbourKey> + '_ {
        self.static_routes().filter_map(|route| {
            Some(NeighbourKey {
                iface: route.iface?,
                addr: route.via,
            })
        })
    }

    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes() + self.v6.memory_bytes()
    }

    /// The static routes per family and the memory of the lookup tables.
    pub fn summary(&self) -> RoutesApplied {
        let routes_v4 = self
            .static_routes()
            .filter(|route| route.prefix.addr().is_ipv4())
            .count();
        RoutesApplied {
            routes_v4,
            routes_v6: self.static_routes().count() - routes_v4,
            memory_bytes: self.memory_bytes(),
        }
    }
}

/// What a replacement of the static routes put in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutesApplied {
    /// Static routes per family (the interfaces' own routes not counted).
    pub routes_v4: usize,
    pub routes_v6: usize,
    /// The lookup tables of the whole FIB.
    pub memory_bytes: usize,
}

/// FIBs replaced within [`RETIRE_AFTER`](crate::retire::RETIRE_AFTER) that the publisher holds
/// at most: each may be large (about 100 MiB with a million routes), so replacements beyond this
/// are refused until the oldest is freed.
pub const RETIRED_FIBS_MAX: usize = 8;

/// The single writer of the FIB once the router runs (the slow path's, which also writes the
/// neighbour table). Builds the new FIB whole, publishes it with one swap (every burst that
/// starts afterwards sees only the new FIB), and keeps the replaced one for
/// [`RETIRE_AFTER`](crate::retire::RETIRE_AFTER), so that a worker still reading it in mid-burst
/// never frees it.
#[derive(Debug)]
pub struct FibPublisher {
    shared: SharedFib,
    limits: FibLimits,
    retired: Retired<Fib>,
}

impl FibPublisher {
    pub fn new(fib: Fib, limits: FibLimits) -> FibPublisher {
        FibPublisher {
            shared: Arc::new(ArcSwap::from_pointee(fib)),
            limits,
            retired: Retired::default(),
        }
    }

    /// The FIB as workers load it.
    pub fn shared(&self) -> SharedFib {
        self.shared.clone()
    }

    /// The FIB in force.
    pub fn load(&self) -> Guard<Arc<Fib>> {
        self.shared.load()
    }

    /// Replaces the static routes with `routes`, or refuses them and changes nothing. Gateways
    /// that no route uses any more are unpinned: their entries age like any other.
    pub fn replace(
        &mut self,
        ifaces: &Interfaces,
        routes: &[StaticRoute],
        neighbours: &mut NeighbourManager,
        now: Duration,
    ) -> Result<RoutesApplied, FibError> {
        self.retired.release_due(now);
        if self.retired.len() >= RETIRED_FIBS_MAX {
            return Err(FibError::ReplacedTooOften {
                max: RETIRED_FIBS_MAX,
            });
        }
        let fib = Fib::build(ifaces, routes, neighbours, self.limits, now)?;
        let applied = fib.summary();
        let in_use: HashSet<NeighbourKey> = fib.gateways().collect();
        let replaced = self.shared.swap(Arc::new(fib));
        for gateway in replaced.gateways().filter(|key| !in_use.contains(key)) {
            neighbours.unpin(&gateway);
        }
        self.retired.hold(replaced, now);
        Ok(applied)
    }

    /// Frees replaced FIBs retired long enough ago.
    pub fn release_retired(&mut self, now: Duration) {
        self.retired.release_due(now);
    }

    /// Replaced FIBs still held.
    pub fn retired_count(&self) -> usize {
        self.retired.len()
    }
}

/// Connected prefixes, the router's own addresses and the network and broadcast addresses of
/// connected subnets.
fn interface_routes(ifaces: &Interfaces) -> Vec<(IpNet, NextHop)> {
    let mut routes = Vec::new();
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
    routes
}

fn refuse_duplicates(ifaces: &Interfaces, routes: &[(IpNet, NextHop)]) -> Result<(), FibError> {
    let mut seen: HashMap<IpNet, NextHop> = HashMap::with_capacity(routes.len());
    for &(prefix, next_hop) in routes {
        if let Some(existing) = seen.insert(prefix, next_hop) {
            return Err(FibError::Duplicate {
                prefix,
                existing: describe(ifaces, &existing),
            });
        }
    }
    Ok(())
}

/// The lookup tables of `routes` and the distinct next hops they index.
fn build_tables(
    routes: &[(IpNet, NextHop)],
    limits: FibLimits,
) -> Result<(Ipv4Lpm, Ipv6Lpm, Vec<NextHop>), FibError> {
    let mut next_hops: Vec<NextHop> = Vec::new();
    let mut next_hop_index: HashMap<NextHop, NextHopIndex> = HashMap::new();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for &(prefix, next_hop) in routes {
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
    Ok((v4, v6, next_hops))
}

/// The neighbour a static route goes through: its gateway on the interface named, or on the
/// first interface where the gateway is on-link.
fn static_gateway(ifaces: &Interfaces, route: &StaticRoute) -> Result<NeighbourKey, FibError> {
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
    Ok(NeighbourKey {
        iface,
        addr: route.via,
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
    fn static_routes_are_listed_apart_from_the_interfaces_routes() {
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
        let listed: Vec<StaticRoute> = fib.static_routes().collect();
        assert_eq!(
            listed,
            routes
                .iter()
                .map(|r| StaticRoute {
                    iface: Some(1),
                    ..r.clone()
                })
                .collect::<Vec<_>>()
        );
        assert!(
            fib.interface_routes()
                .iter()
                .all(|(_, hop)| !matches!(hop, NextHop::Gateway { .. }))
        );
        assert_eq!(
            fib.interface_routes().len() + listed.len(),
            fib.routes().len()
        );
        let summary = fib.summary();
        assert_eq!((summary.routes_v4, summary.routes_v6), (1, 1));
        assert_eq!(summary.memory_bytes, fib.memory_bytes());
    }

    #[test]
    fn a_refused_route_list_pins_no_gateway() {
        let (ifaces, mut neighbours) = setup();
        let err = Fib::build(
            &ifaces,
            &[
                route("198.19.0.0/16", "198.18.2.2"),
                route("198.18.1.0/24", "198.18.2.3"),
            ],
            &mut neighbours,
            FibLimits::default(),
            Duration::ZERO,
        )
        .expect_err("duplicate");
        assert!(matches!(err, FibError::Duplicate { .. }), "{err}");
        let err = Fib::build(
            &ifaces,
            &[
                route("198.19.0.0/16", "198.18.2.2"),
                route("198.20.0.0/16", "198.18.2.3"),
            ],
            &mut neighbours,
            FibLimits {
                max_routes_v4: 3,
                ..FibLimits::default()
            },
            Duration::ZERO,
        )
        .expect_err("too many routes");
        assert!(matches!(err, FibError::Lpm { family: 4, .. }), "{err}");
        assert!(neighbours.is_empty(), "no gateway pinned");
    }

    #[test]
    fn no_room_for_a_gateway_names_its_route_and_pins_none() {
        let ifaces = setup().0;
        let mut neighbours =
            NeighbourManager::new(NeighbourTable::new(1), NeighbourTimers::default());
        let err = Fib::build(
            &ifaces,
            &[
                route("198.19.0.0/16", "198.18.2.2"),
                route("198.20.0.0/16", "198.18.2.2"),
                route("198.21.0.0/16", "198.18.2.3"),
            ],
            &mut neighbours,
            FibLimits::default(),
            Duration::ZERO,
        )
        .expect_err("one slot, two gateways");
        assert_eq!(
            err,
            FibError::Neighbours {
                prefix: "198.21.0.0/16".parse().expect("prefix"),
                source: TableFull { capacity: 1 },
            }
        );
        assert!(neighbours.is_empty());
    }

    fn publisher(ifaces: &Interfaces, neighbours: &mut NeighbourManager) -> FibPublisher {
        let fib = Fib::build(
            ifaces,
            &[route("198.19.0.0/16", "198.18.2.2")],
            neighbours,
            FibLimits::default(),
            Duration::ZERO,
        )
        .expect("valid");
        FibPublisher::new(fib, FibLimits::default())
    }

    #[test]
    fn a_replacement_is_published_whole_and_the_old_fib_retired_by_the_publisher() {
        let (ifaces, mut neighbours) = setup();
        let mut publisher = publisher(&ifaces, &mut neighbours);
        let shared = publisher.shared();
        let old = Arc::downgrade(&shared.load_full());
        let now = Duration::from_secs(5);
        let applied = publisher
            .replace(
                &ifaces,
                &[
                    route("198.20.0.0/16", "198.18.2.2"),
                    route("2001:2:0:ff00::/56", "2001:2:0:2::2"),
                ],
                &mut neighbours,
                now,
            )
            .expect("valid");
        assert_eq!((applied.routes_v4, applied.routes_v6), (1, 1));
        let fib = shared.load();
        let addr = |a: &str| a.parse::<IpAddr>().expect("addr");
        assert_eq!(fib.lookup(addr("198.19.0.1")), None);
        assert!(matches!(
            fib.lookup(addr("198.20.0.1")),
            Some(NextHop::Gateway { iface: 1, .. })
        ));
        assert!(old.upgrade().is_some(), "held by the publisher");
        publisher.release_retired(now + Duration::from_millis(999));
        assert_eq!(publisher.retired_count(), 1);
        publisher.release_retired(now + Duration::from_secs(1));
        assert_eq!(publisher.retired_count(), 0);
        assert!(old.upgrade().is_none(), "freed by the publisher");
    }

    #[test]
    fn a_refused_replacement_changes_nothing() {
        let (ifaces, mut neighbours) = setup();
        let mut publisher = publisher(&ifaces, &mut neighbours);
        let before = publisher.shared().load_full();
        let err = publisher
            .replace(
                &ifaces,
                &[
                    route("198.19.0.0/16", "198.18.2.2"),
                    route("198.20.0.0/16", "198.18.9.9"),
                ],
                &mut neighbours,
                Duration::from_secs(5),
            )
            .expect_err("off-link");
        assert!(matches!(err, FibError::GatewayNotOnLink { .. }), "{err}");
        assert!(Arc::ptr_eq(&before, &publisher.shared().load_full()));
        assert_eq!(publisher.retired_count(), 0);
        assert_eq!(neighbours.len(), 1);
    }

    #[test]
    fn a_gateway_kept_keeps_its_slot_and_one_dropped_is_unpinned() {
        let (ifaces, mut neighbours) = setup();
        let mut publisher = publisher(&ifaces, &mut neighbours);
        let slot_of = |fib: &Fib, a: &str| match fib.lookup(a.parse().expect("addr")) {
            Some(&NextHop::Gateway { slot, .. }) => slot,
            other => panic!("{other:?}"),
        };
        let kept = slot_of(&publisher.load(), "198.19.0.1");
        publisher
            .replace(
                &ifaces,
                &[
                    route("198.19.0.0/16", "198.18.2.2"),
                    route("198.20.0.0/16", "198.18.2.3"),
                ],
                &mut neighbours,
                Duration::ZERO,
            )
            .expect("valid");
        assert_eq!(slot_of(&publisher.load(), "198.19.0.1"), kept);
        publisher
            .replace(
                &ifaces,
                &[route("198.19.0.0/16", "198.18.2.2")],
                &mut neighbours,
                Duration::ZERO,
            )
            .expect("valid");
        let (mut solicit, mut changes) = (Vec::new(), Vec::new());
        for s in 0..=7 {
            neighbours.poll(Duration::from_secs(s), &mut solicit, &mut changes);
        }
        assert_eq!(neighbours.len(), 1, "the dropped gateway failed and went");
        assert!(changes.contains(&crate::neigh::NeighbourChange::Removed {
            key: NeighbourKey {
                iface: 1,
                addr: "198.18.2.3".parse().expect("addr")
            }
        }));
    }

    #[test]
    fn replacements_are_bounded_by_the_fibs_held_for_retirement() {
        let (ifaces, mut neighbours) = setup();
        let mut publisher = publisher(&ifaces, &mut neighbours);
        let routes = [route("198.19.0.0/16", "198.18.2.2")];
        let now = Duration::from_secs(5);
        for _ in 0..RETIRED_FIBS_MAX {
            publisher
                .replace(&ifaces, &routes, &mut neighbours, now)
                .expect("room");
        }
        assert_eq!(
            publisher.replace(&ifaces, &routes, &mut neighbours, now),
            Err(FibError::ReplacedTooOften {
                max: RETIRED_FIBS_MAX
            })
        );
        publisher
            .replace(
                &ifaces,
                &routes,
                &mut neighbours,
                now + Duration::from_secs(1),
            )
            .expect("the retired ones are freed");
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
