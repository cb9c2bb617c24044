//! Routes and neighbours between the API's messages and the dataplane's types: interfaces by
//! name (`PORT` or `PORT.VLAN`), prefixes and addresses as text, each problem naming its field.

use std::net::IpAddr;

use ipnet::IpNet;
use vfn_control::convert::FieldViolation;
use vfn_control::proto;
use vfn_dataplane::fib::{NextHop, StaticRoute};
use vfn_dataplane::iface::IfIndex;
use vfn_dataplane::neigh::NeighbourState;

fn violation(field: &str, reason: String) -> FieldViolation {
    FieldViolation {
        field: field.into(),
        reason,
    }
}

/// A static route from its message; `index_of` finds an interface by name.
pub fn route_from_proto(
    route: &proto::Route,
    index_of: impl Fn(&str) -> Option<IfIndex>,
) -> Result<StaticRoute, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let prefix = match route.prefix.parse::<IpNet>() {
        Ok(prefix) if prefix.trunc() == prefix => Some(prefix),
        Ok(prefix) => {
            violations.push(violation(
                "route.prefix",
                format!(
                    "{prefix} has host bits set (did you mean {}?)",
                    prefix.trunc()
                ),
            ));
            None
        }
        Err(_) => {
            violations.push(violation(
                "route.prefix",
                format!("{:?} is not a prefix", route.prefix),
            ));
            None
        }
    };
    let via = route
        .via
        .parse::<IpAddr>()
        .map_err(|_| {
            violations.push(violation(
                "route.via",
                format!("{:?} is not an address", route.via),
            ))
        })
        .ok();
    let iface = if route.interface.is_empty() {
        Some(None)
    } else {
        index_of(&route.interface)
            .map(Some)
            .ok_or_else(|| {
                violations.push(violation(
                    "route.interface",
                    format!("no interface {:?}", route.interface),
                ))
            })
            .ok()
    };
    if route.connected {
        violations.push(violation(
            "route.connected",
            "connected prefixes come from the interfaces' addresses".into(),
        ));
    }
    match (prefix, via, iface, violations.is_empty()) {
        (Some(prefix), Some(via), Some(iface), true) => Ok(StaticRoute { prefix, via, iface }),
        _ => Err(violations),
    }
}

/// A static route as a message; `name_of` names an interface.
pub fn route_to_proto<'a>(
    route: &StaticRoute,
    name_of: impl Fn(IfIndex) -> Option<&'a str>,
) -> proto::Route {
    proto::Route {
        prefix: route.prefix.to_string(),
        via: route.via.to_string(),
        interface: route.iface.and_then(name_of).unwrap_or_default().to_owned(),
        connected: false,
    }
}

/// A connected prefix of an interface (its local and broadcast entries are not routes).
pub fn connected_to_proto<'a>(
    prefix: IpNet,
    next_hop: &NextHop,
    name_of: impl Fn(IfIndex) -> Option<&'a str>,
) -> Option<proto::Route> {
    let NextHop::Connected { iface } = next_hop else {
        return None;
    };
    Some(proto::Route {
        prefix: prefix.to_string(),
        via: String::new(),
        interface: name_of(*iface).unwrap_or_default().to_owned(),
        connected: true,
    })
}

pub fn state_name(state: NeighbourState) -> &'static str {
    match state {
        NeighbourState::Incomplete => "incomplete",
        NeighbourState::Reachable => "reachable",
        NeighbourState::Failed => "failed",
        NeighbourState::Static => "static",
    }
}

pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(name: &str) -> Option<IfIndex> {
        ["p0", "p1", "p1.7"]
            .iter()
            .position(|&n| n == name)
            .map(|i| i as IfIndex)
    }

    #[test]
    fn a_route_converts_both_ways() {
        let message = proto::Route {
            prefix: "198.18.8.0/24".into(),
            via: "198.18.2.2".into(),
            interface: "p1.7".into(),
            connected: false,
        };
        let route = route_from_proto(&message, index_of).expect("valid");
        assert_eq!(route.iface, Some(2));
        let names = ["p0", "p1", "p1.7"];
        assert_eq!(
            route_to_proto(&route, |i| names.get(usize::from(i)).copied()),
            message
        );
    }

    #[test]
    fn every_problem_is_named() {
        let message = proto::Route {
            prefix: "198.18.8.1/24".into(),
            via: "gateway".into(),
            interface: "p9".into(),
            connected: true,
        };
        let problems = route_from_proto(&message, index_of).expect_err("invalid");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "route.prefix",
                "route.via",
                "route.interface",
                "route.connected"
            ]
        );
        assert!(problems[0].reason.contains("198.18.8.0/24"));
    }

    #[test]
    fn macs_parse_and_print() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:0a"),
            Some([2, 0, 0x5e, 0x10, 0, 0x0a])
        );
        assert_eq!(mac_text([2, 0, 0x5e, 0x10, 0, 0x0a]), "02:00:5e:10:00:0a");
        for bad in [
            "02:00:5e:10:00",
            "02:00:5e:10:00:0a:01",
            "2:0:5e:10:0:a",
            "zz:00:5e:10:00:0a",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
