//! Logical interfaces: a port, or an 802.1Q VLAN on a port, each with its own addresses, MTU and
//! reverse-path mode. Routes and neighbours refer to interfaces, frames arrive on ports.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::io::PortIndex;

/// Index of a logical interface.
pub type IfIndex = u16;

/// Reverse-path filtering (RFC 3704): strict, the route back to the source must leave through the
/// interface the packet came in on; loose, any route back must exist; off, no check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpFilter {
    Strict,
    Loose,
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// `PORT` or `PORT.VLAN`, as the config names it.
    pub name: String,
    pub port: PortIndex,
    pub vlan: Option<u16>,
    pub mac: [u8; 6],
    /// L3 MTU: the largest IP packet that leaves through this interface.
    pub mtu: u16,
    pub rp_filter: RpFilter,
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
}

impl Interface {
    /// The EUI-64 link-local address derived from the MAC (RFC 4291 appendix A).
    pub fn link_local(&self) -> Ipv6Addr {
        let m = self.mac;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            m[0] ^ 0x02,
            m[1],
            m[2],
            0xff,
            0xfe,
            m[3],
            m[4],
            m[5],
        ])
    }

    /// The address the router uses as source on this interface for `family_of`'s family.
    pub fn source_address_for(&self, family_of: IpAddr) -> Option<IpAddr> {
        match family_of {
            IpAddr::V4(_) => self.ipv4.first().map(|net| IpAddr::V4(net.addr())),
            IpAddr::V6(_) => Some(IpAddr::V6(
                self.ipv6
                    .first()
                    .map(|net| net.addr())
                    .unwrap_or_else(|| self.link_local()),
            )),
        }
    }

    /// True when `addr` is one of this interface's addresses (its IPv6 link-local one included).
    pub fn owns(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.ipv4.iter().any(|net| net.addr() == a),
            IpAddr::V6(a) => a == self.link_local() || self.ipv6.iter().any(|net| net.addr() == a),
        }
    }

    /// True when `addr` is inside one of this interface's connected prefixes.
    pub fn is_on_link(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.ipv4.iter().any(|net| net.contains(&a)),
            IpAddr::V6(a) => self.ipv6.iter().any(|net| net.contains(&a)),
        }
    }
}

const NO_INTERFACE: IfIndex = IfIndex::MAX;
const VLAN_IDS: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterfaceError {
    #[error("interface {name}: port {port} is not below the port count {port_count}")]
    PortOutOfRange {
        name: String,
        port: PortIndex,
        port_count: usize,
    },
    #[error("interface {name}: VLAN id {vlan} is not in 1..=4094")]
    BadVlan { name: String, vlan: u16 },
    #[error("interface {name}: port {port} VLAN {vlan:?} is already interface {other}")]
    Duplicate {
        name: String,
        port: PortIndex,
        vlan: Option<u16>,
        other: String,
    },
    #[error("interface {name}: VLAN interfaces of a port must share the port's MAC")]
    MacMismatch { name: String },
    #[error("too many interfaces: {count} (at most {max})")]
    TooMany { count: usize, max: usize },
}

/// All logical interfaces, with the O(1) map from (port, VLAN tag) to interface used on ingress.
#[derive(Debug)]
pub struct Interfaces {
    list: Vec<Interface>,
    port_macs: Vec<[u8; 6]>,
    /// Per port, 4096 entries indexed by VLAN id; entry 0 is the untagged interface.
    ingress: Vec<Box<[IfIndex]>>,
}

impl Interfaces {
    pub fn new(port_count: usize, list: Vec<Interface>) -> Result<Interfaces, InterfaceError> {
        // Every index must fit both the ingress map (NO_INTERFACE is its sentinel) and a flow
        // verdict's ingress field.
        let max = (usize::from(NO_INTERFACE) - 1).min(crate::policy::INTERFACES_MAX);
        if list.len() > max {
            return Err(InterfaceError::TooMany {
                count: list.len(),
                max,
            });
        }
        let mut ingress: Vec<Box<[IfIndex]>> = (0..port_count)
            .map(|_| vec![NO_INTERFACE; VLAN_IDS].into_boxed_slice())
            .collect();
        let mut port_macs: Vec<Option<[u8; 6]>> = vec![None; port_count];
        for (index, iface) in list.iter().enumerate() {
            let port = usize::from(iface.port);
            if port >= port_count {
                return Err(InterfaceError::PortOutOfRange {
                    name: iface.name.clone(),
                    port: iface.port,
                    port_count,
                });
            }
            let slot = match iface.vlan {
                None => 0,
                Some(vlan @ 1..=4094) => usize::from(vlan),
                Some(vlan) => {
                    return Err(InterfaceError::BadVlan {
                        name: iface.name.clone(),
                        vlan,
                    });
                }
            };
            let existing = ingress[port][slot];
            if existing != NO_INTERFACE {
                return Err(InterfaceError::Duplicate {
                    name: iface.name.clone(),
                    port: iface.port,
                    vlan: iface.vlan,
                    other: list[usize::from(existing)].name.clone(),
                });
            }
            match port_macs[port] {
                Some(mac) if mac != iface.mac => {
                    return Err(InterfaceError::MacMismatch {
                        name: iface.name.clone(),
                    });
                }
                _ => port_macs[port] = Some(iface.mac),
            }
            // `index` fits: checked against NO_INTERFACE above.
            ingress[port][slot] = index as IfIndex;
        }
        Ok(Interfaces {
            list,
            port_macs: port_macs
                .into_iter()
                .map(|mac| mac.unwrap_or_default())
                .collect(),
            ingress,
        })
    }

    /// The interface a frame belongs to, from its port and 802.1Q VLAN id (None: untagged; a
    /// priority tag, VLAN 0, counts as untagged).
    #[inline]
    pub fn ingress(&self, port: PortIndex, vlan: Option<u16>) -> Option<IfIndex> {
        let slot = usize::from(vlan.unwrap_or(0) & 0x0fff);
        let index = *self.ingress.get(usize::from(port))?.get(slot)?;
        (index != NO_INTERFACE).then_some(index)
    }

    #[inline]
    pub fn get(&self, index: IfIndex) -> Option<&Interface> {
        self.list.get(usize::from(index))
    }

    #[inline]
    pub fn port_mac(&self, port: PortIndex) -> [u8; 6] {
        self.port_macs
            .get(usize::from(port))
            .copied()
            .unwrap_or_default()
    }

    pub fn port_count(&self) -> usize {
        self.port_macs.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (IfIndex, &Interface)> {
        // At most NO_INTERFACE - 1 entries: checked in `new`.
        self.list
            .iter()
            .enumerate()
            .map(|(i, iface)| (i as IfIndex, iface))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<IfIndex> {
        self.iter()
            .find(|(_, iface)| iface.name == name)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn iface(name: &str, port: PortIndex, vlan: Option<u16>, v4: &str, v6: &str) -> Interface {
        Interface {
            name: name.into(),
            port,
            vlan,
            mac: [0x02, 0, 0, 0, 0, port as u8 + 1],
            mtu: 1500,
            rp_filter: RpFilter::Strict,
            ipv4: vec![v4.parse().expect("fixture")],
            ipv6: vec![v6.parse().expect("fixture")],
        }
    }

    #[test]
    fn more_interfaces_than_a_flow_verdict_can_name_are_refused() {
        let one = iface("p0", 0, None, "198.18.1.1/24", "2001:2:0:1::1/64");
        let count = crate::policy::INTERFACES_MAX + 1;
        let err = Interfaces::new(1, vec![one; count]).expect_err("too many");
        assert!(
            matches!(err, InterfaceError::TooMany { max, .. } if max == count - 1),
            "{err}"
        );
    }

    #[test]
    fn ingress_maps_port_and_vlan() {
        let list = vec![
            iface("p0", 0, None, "198.18.1.1/24", "2001:2:0:1::1/64"),
            iface(
                "p0.100",
                0,
                Some(100),
                "198.18.10.1/24",
                "2001:2:0:10::1/64",
            ),
            iface("p1", 1, None, "198.18.2.1/24", "2001:2:0:2::1/64"),
        ];
        let ifaces = Interfaces::new(2, list).expect("valid");
        assert_eq!(ifaces.ingress(0, None), Some(0));
        assert_eq!(
            ifaces.ingress(0, Some(0)),
            Some(0),
            "priority tag is untagged"
        );
        assert_eq!(ifaces.ingress(0, Some(100)), Some(1));
        assert_eq!(ifaces.ingress(0, Some(101)), None);
        assert_eq!(ifaces.ingress(1, Some(100)), None);
        assert_eq!(ifaces.ingress(2, None), None);
    }

    #[test]
    fn duplicate_vlan_is_refused() {
        let list = vec![
            iface("p0.5", 0, Some(5), "198.18.1.1/24", "2001:2:0:1::1/64"),
            iface("again", 0, Some(5), "198.18.2.1/24", "2001:2:0:2::1/64"),
        ];
        assert!(matches!(
            Interfaces::new(1, list),
            Err(InterfaceError::Duplicate { .. })
        ));
    }

    #[test]
    fn link_local_is_eui64() {
        let i = iface("p0", 0, None, "198.18.1.1/24", "2001:2:0:1::1/64");
        assert_eq!(
            i.link_local(),
            "fe80::ff:fe00:1".parse::<Ipv6Addr>().expect("addr")
        );
    }
}
