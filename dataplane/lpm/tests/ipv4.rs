//! IPv4 lookups on hand-written tables with explicit expected next hops.

use std::net::Ipv4Addr;

use vfn_lpm::{Ipv4Lpm, LpmLimits, NEXT_HOP_INDEX_MAX, NextHopIndex};

fn address(text: &str) -> Ipv4Addr {
    text.parse().expect("test addresses are valid")
}

fn table(routes: &[(&str, u8, NextHopIndex)]) -> Ipv4Lpm {
    let routes: Vec<_> = routes
        .iter()
        .map(|&(network, prefix_len, next_hop)| (address(network), prefix_len, next_hop))
        .collect();
    Ipv4Lpm::build(&routes, LpmLimits::IPV4_DEFAULT).expect("test routes are valid")
}

fn assert_lookups(table: &Ipv4Lpm, expected: &[(&str, Option<NextHopIndex>)]) {
    for &(text, next_hop) in expected {
        assert_eq!(table.lookup(address(text)), next_hop, "lookup of {text}");
    }
}

#[test]
fn empty_table_matches_nothing() {
    let empty = table(&[]);
    assert_eq!(empty.route_count(), 0);
    assert_lookups(
        &empty,
        &[
            ("0.0.0.0", None),
            ("198.18.0.1", None),
            ("255.255.255.255", None),
        ],
    );
}

#[test]
fn default_route_matches_every_address() {
    let default_only = table(&[("0.0.0.0", 0, 9)]);
    assert_lookups(
        &default_only,
        &[
            ("0.0.0.0", Some(9)),
            ("127.255.255.255", Some(9)),
            ("128.0.0.0", Some(9)),
            ("255.255.255.255", Some(9)),
        ],
    );
}

#[test]
fn host_routes_match_only_their_address() {
    let hosts = table(&[
        ("198.18.0.1", 32, 1),
        ("198.18.0.2", 32, 2),
        ("198.18.255.255", 32, 3),
        ("0.0.0.0", 32, 4),
        ("255.255.255.255", 32, 5),
    ]);
    assert_lookups(
        &hosts,
        &[
            ("198.18.0.0", None),
            ("198.18.0.1", Some(1)),
            ("198.18.0.2", Some(2)),
            ("198.18.0.3", None),
            ("198.18.255.254", None),
            ("198.18.255.255", Some(3)),
            ("198.19.0.0", None),
            ("0.0.0.0", Some(4)),
            ("0.0.0.1", None),
            ("255.255.255.254", None),
            ("255.255.255.255", Some(5)),
        ],
    );
}

#[test]
fn default_route_with_nested_overlapping_prefixes() {
    let nested = table(&[
        ("0.0.0.0", 0, 1),
        ("198.0.0.0", 8, 2),
        ("198.18.0.0", 15, 3),
        ("198.18.0.0", 16, 4),
        ("198.18.7.0", 24, 5),
        ("198.18.7.128", 25, 6),
        ("198.18.7.129", 32, 7),
    ]);
    assert_lookups(
        &nested,
        &[
            ("197.255.255.255", Some(1)),
            ("199.0.0.0", Some(1)),
            ("198.0.0.0", Some(2)),
            ("198.17.255.255", Some(2)),
            ("198.20.0.0", Some(2)),
            ("198.19.0.0", Some(3)),
            ("198.19.255.255", Some(3)),
            ("198.18.0.0", Some(4)),
            ("198.18.6.255", Some(4)),
            ("198.18.8.0", Some(4)),
            ("198.18.255.255", Some(4)),
            ("198.18.7.0", Some(5)),
            ("198.18.7.127", Some(5)),
            ("198.18.7.128", Some(6)),
            ("198.18.7.129", Some(7)),
            ("198.18.7.130", Some(6)),
            ("198.18.7.255", Some(6)),
        ],
    );
}

/// A route at each length where the 16-8-8 levels split or meet, alone and over a default.
#[test]
fn every_level_boundary_prefix_length() {
    const PATTERN: u32 = 0xc612_a5a5;
    for prefix_len in [0u8, 1, 8, 15, 16, 17, 23, 24, 25, 31, 32] {
        let host_mask = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        let first = PATTERN & !host_mask;
        let last = first | host_mask;
        let route = (Ipv4Addr::from_bits(first), prefix_len, 7);
        let default_route = (Ipv4Addr::UNSPECIFIED, 0, 1);
        let alone = Ipv4Lpm::build(&[route], LpmLimits::IPV4_DEFAULT).expect("valid route");
        let over_default = if prefix_len == 0 {
            alone.clone()
        } else {
            Ipv4Lpm::build(&[route, default_route], LpmLimits::IPV4_DEFAULT).expect("valid")
        };
        for inside in [first, first + host_mask / 2, last] {
            assert_eq!(
                alone.lookup_u32(inside),
                Some(7),
                "/{prefix_len} {inside:#x}"
            );
            assert_eq!(
                over_default.lookup_u32(inside),
                Some(7),
                "/{prefix_len} {inside:#x}"
            );
        }
        for outside in [first.checked_sub(1), last.checked_add(1)]
            .into_iter()
            .flatten()
        {
            assert_eq!(
                alone.lookup_u32(outside),
                None,
                "/{prefix_len} {outside:#x}"
            );
            assert_eq!(
                over_default.lookup_u32(outside),
                Some(1),
                "/{prefix_len} {outside:#x}"
            );
        }
    }
}

#[test]
fn sibling_prefixes_share_groups_without_leaking() {
    let siblings = table(&[
        ("198.18.1.0", 25, 1),
        ("198.18.1.128", 26, 2),
        ("198.18.1.192", 27, 3),
        ("198.18.1.224", 32, 4),
        ("198.18.2.0", 23, 5),
        ("198.18.0.0", 24, 6),
    ]);
    assert_lookups(
        &siblings,
        &[
            ("198.18.0.255", Some(6)),
            ("198.18.1.0", Some(1)),
            ("198.18.1.127", Some(1)),
            ("198.18.1.128", Some(2)),
            ("198.18.1.191", Some(2)),
            ("198.18.1.192", Some(3)),
            ("198.18.1.223", Some(3)),
            ("198.18.1.224", Some(4)),
            ("198.18.1.225", None),
            ("198.18.1.255", None),
            ("198.18.2.0", Some(5)),
            ("198.18.3.255", Some(5)),
            ("198.18.4.0", None),
        ],
    );
}

#[test]
fn input_order_does_not_change_results() {
    let shortest_first = [
        ("0.0.0.0", 0, 1),
        ("198.18.0.0", 15, 2),
        ("198.18.4.0", 22, 3),
        ("198.18.5.0", 24, 4),
        ("198.18.5.64", 26, 5),
        ("198.18.5.65", 32, 6),
    ];
    let mut longest_first = shortest_first;
    longest_first.reverse();
    let (forward, backward) = (table(&shortest_first), table(&longest_first));
    for probe in 0..=2048u32 {
        let address = (198 << 24 | 18 << 16) + probe * 3;
        assert_eq!(forward.lookup_u32(address), backward.lookup_u32(address));
    }
    assert_eq!(forward.lookup(address("198.18.5.65")), Some(6));
    assert_eq!(backward.lookup(address("198.18.5.66")), Some(5));
}

#[test]
fn lookup_and_lookup_u32_agree() {
    let routes = table(&[("198.18.0.0", 16, 1), ("198.18.128.0", 17, 2)]);
    for text in ["198.18.0.0", "198.18.127.255", "198.18.128.0", "198.19.0.0"] {
        let parsed = address(text);
        assert_eq!(routes.lookup(parsed), routes.lookup_u32(u32::from(parsed)));
    }
}

#[test]
fn extreme_next_hop_values_round_trip() {
    let extremes = table(&[
        ("198.18.0.0", 16, 0),
        ("198.19.0.0", 16, NEXT_HOP_INDEX_MAX),
    ]);
    assert_eq!(extremes.lookup(address("198.18.1.1")), Some(0));
    assert_eq!(
        extremes.lookup(address("198.19.1.1")),
        Some(NEXT_HOP_INDEX_MAX)
    );
}

#[test]
fn small_table_stays_small() {
    let small = table(&[
        ("0.0.0.0", 0, 0),
        ("10.0.0.0", 8, 1),
        ("172.16.0.0", 12, 2),
        ("192.168.0.0", 16, 3),
        ("198.18.0.0", 15, 4),
        ("198.18.1.0", 24, 5),
        ("198.18.1.1", 32, 6),
        ("198.18.2.0", 24, 7),
        ("203.0.113.0", 24, 8),
        ("203.0.113.7", 32, 9),
    ]);
    assert_eq!(small.route_count(), 10);
    // The top table plus 2 second-level and 2 third-level groups of 1 KiB.
    assert_eq!(small.memory_bytes(), 256 * 1024 + 4 * 1024);
}

#[test]
fn tables_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ipv4Lpm>();
}
