//! IPv6 lookups on hand-written tables with explicit expected next hops.

use std::net::Ipv6Addr;

use vfn_lpm::{Ipv6Lpm, LpmLimits, NEXT_HOP_INDEX_MAX, NextHopIndex};

fn address(text: &str) -> Ipv6Addr {
    text.parse().expect("test addresses are valid")
}

fn table(routes: &[(&str, u8, NextHopIndex)]) -> Ipv6Lpm {
    let routes: Vec<_> = routes
        .iter()
        .map(|&(network, prefix_len, next_hop)| (address(network), prefix_len, next_hop))
        .collect();
    Ipv6Lpm::build(&routes, LpmLimits::IPV6_DEFAULT).expect("test routes are valid")
}

fn assert_lookups(table: &Ipv6Lpm, expected: &[(&str, Option<NextHopIndex>)]) {
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
        &[("::", None), ("2001:2::1", None), ("ffff::", None)],
    );
}

#[test]
fn default_route_matches_every_address() {
    let default_only = table(&[("::", 0, 9)]);
    assert_lookups(
        &default_only,
        &[
            ("::", Some(9)),
            ("2001:2::1", Some(9)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(9)),
        ],
    );
}

#[test]
fn host_routes_match_only_their_address() {
    let hosts = table(&[
        ("2001:2::1", 128, 1),
        ("2001:2::2", 128, 2),
        ("2001:2::ffff", 128, 3),
        ("::", 128, 4),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128, 5),
    ]);
    assert_lookups(
        &hosts,
        &[
            ("2001:2::", None),
            ("2001:2::1", Some(1)),
            ("2001:2::2", Some(2)),
            ("2001:2::3", None),
            ("2001:2::fffe", None),
            ("2001:2::ffff", Some(3)),
            ("2001:2::1:0", None),
            ("::", Some(4)),
            ("::1", None),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", None),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(5)),
        ],
    );
}

#[test]
fn default_route_with_nested_overlapping_prefixes() {
    let nested = table(&[
        ("::", 0, 1),
        ("2000::", 3, 2),
        ("2001::", 16, 3),
        ("2001:2::", 48, 4),
        ("2001:2:0:7::", 64, 5),
        ("2001:2:0:7:8000::", 65, 6),
        ("2001:2:0:7:8000::1", 128, 7),
    ]);
    assert_lookups(
        &nested,
        &[
            ("1fff:ffff::", Some(1)),
            ("4000::", Some(1)),
            ("2000::", Some(2)),
            ("2002::", Some(2)),
            ("2001::", Some(3)),
            ("2001:1:ffff::", Some(3)),
            ("2001:3::", Some(3)),
            ("2001:2::", Some(4)),
            ("2001:2:0:6:ffff:ffff:ffff:ffff", Some(4)),
            ("2001:2:0:8::", Some(4)),
            ("2001:2:0:7::", Some(5)),
            ("2001:2:0:7:7fff:ffff:ffff:ffff", Some(5)),
            ("2001:2:0:7:8000::", Some(6)),
            ("2001:2:0:7:8000::1", Some(7)),
            ("2001:2:0:7:8000::2", Some(6)),
            ("2001:2:0:7:ffff:ffff:ffff:ffff", Some(6)),
        ],
    );
}

/// A route of every length 0..=128, alone and over a default route, so that every node depth
/// (16 + 6k) and every position inside a node's stride is a prefix boundary once.
#[test]
fn every_prefix_length_boundary() {
    const PATTERN: u128 = 0x2001_0002_a5a5_5a5a_c3c3_3c3c_9696_6969;
    for prefix_len in 0..=128u8 {
        let host_mask = u128::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        let first = PATTERN & !host_mask;
        let last = first | host_mask;
        let route = (Ipv6Addr::from_bits(first), prefix_len, 7);
        let default_route = (Ipv6Addr::UNSPECIFIED, 0, 1);
        let alone = Ipv6Lpm::build(&[route], LpmLimits::IPV6_DEFAULT).expect("valid route");
        let over_default = if prefix_len == 0 {
            alone.clone()
        } else {
            Ipv6Lpm::build(&[route, default_route], LpmLimits::IPV6_DEFAULT).expect("valid")
        };
        for inside in [first, first + host_mask / 2, last] {
            assert_eq!(
                alone.lookup_u128(inside),
                Some(7),
                "/{prefix_len} {inside:#x}"
            );
            assert_eq!(
                over_default.lookup_u128(inside),
                Some(7),
                "/{prefix_len} {inside:#x}"
            );
        }
        for outside in [first.checked_sub(1), last.checked_add(1)]
            .into_iter()
            .flatten()
        {
            assert_eq!(
                alone.lookup_u128(outside),
                None,
                "/{prefix_len} {outside:#x}"
            );
            assert_eq!(
                over_default.lookup_u128(outside),
                Some(1),
                "/{prefix_len} {outside:#x}"
            );
        }
    }
}

/// Routes ending inside the same 6-bit stride (depth 64..70) with different spans, plus
/// children below some slots: result runs must be split around child slots.
#[test]
fn routes_sharing_one_node_keep_their_own_slots() {
    let shared = table(&[
        ("2001:2:0:1::", 64, 1),
        ("2001:2:0:1:4000::", 66, 2),
        ("2001:2:0:1:4400::", 70, 3),
        ("2001:2:0:1:4800::", 69, 4),
        ("2001:2:0:1:4c00::", 80, 5),
        ("2001:2:0:1:fc00::", 70, 6),
    ]);
    assert_lookups(
        &shared,
        &[
            ("2001:2:0:1::", Some(1)),
            ("2001:2:0:1:3fff:ffff:ffff:ffff", Some(1)),
            ("2001:2:0:1:4000::", Some(2)),
            ("2001:2:0:1:43ff:ffff:ffff:ffff", Some(2)),
            ("2001:2:0:1:4400::", Some(3)),
            ("2001:2:0:1:47ff:ffff:ffff:ffff", Some(3)),
            ("2001:2:0:1:4800::", Some(4)),
            ("2001:2:0:1:4fff:ffff:ffff:ffff", Some(4)),
            ("2001:2:0:1:4c00::", Some(5)),
            ("2001:2:0:1:4c00:ffff:ffff:ffff", Some(5)),
            ("2001:2:0:1:4c01::", Some(4)),
            ("2001:2:0:1:5000::", Some(2)),
            ("2001:2:0:1:7fff:ffff:ffff:ffff", Some(2)),
            ("2001:2:0:1:8000::", Some(1)),
            ("2001:2:0:1:fbff:ffff:ffff:ffff", Some(1)),
            ("2001:2:0:1:fc00::", Some(6)),
            ("2001:2:0:1:ffff:ffff:ffff:ffff", Some(6)),
            ("2001:2:0:2::", None),
        ],
    );
}

#[test]
fn input_order_does_not_change_results() {
    let shortest_first = [
        ("::", 0, 1),
        ("2001:2::", 47, 2),
        ("2001:2:1::", 48, 3),
        ("2001:2:1:ff00::", 56, 4),
        ("2001:2:1:ff40::", 58, 5),
        ("2001:2:1:ff40::1", 128, 6),
    ];
    let mut longest_first = shortest_first;
    longest_first.reverse();
    let (forward, backward) = (table(&shortest_first), table(&longest_first));
    let base = address("2001:2:1:ff00::").to_bits();
    for probe in 0..=2048u128 {
        for shift in [0, 60, 64, 70, 72, 80] {
            let address = base ^ (probe << shift);
            assert_eq!(forward.lookup_u128(address), backward.lookup_u128(address));
        }
    }
    assert_eq!(forward.lookup(address("2001:2:1:ff40::1")), Some(6));
    assert_eq!(backward.lookup(address("2001:2:1:ff40::2")), Some(5));
}

#[test]
fn lookup_and_lookup_u128_agree() {
    let routes = table(&[("2001:2::", 32, 1), ("2001:2:8000::", 33, 2)]);
    for text in ["2001:2::", "2001:2:7fff::", "2001:2:8000::", "2001:3::"] {
        let parsed = address(text);
        assert_eq!(
            routes.lookup(parsed),
            routes.lookup_u128(u128::from(parsed))
        );
    }
}

#[test]
fn burst_lookup_answers_each_address_like_a_single_lookup() {
    let nested = table(&[
        ("2001:2::", 48, 1),
        ("2001:2::1", 128, 2),
        ("2001:2:0:8000::", 49, 3),
        ("3000::", 4, 4),
    ]);
    let addresses = [
        "2001:2::1",
        "2001:2::2",
        "2001:2:0:8000::1",
        "2001:3::",
        "3fff::",
        "::",
    ]
    .map(|text| address(text).to_bits());
    assert_eq!(
        nested.lookup_burst(&addresses),
        [Some(2), Some(1), Some(3), None, Some(4), None]
    );
    assert_eq!(nested.lookup_burst(&[]), []);
}

#[test]
fn extreme_next_hop_values_round_trip() {
    let extremes = table(&[("2001:2::", 48, 0), ("2001:2:1::", 48, NEXT_HOP_INDEX_MAX)]);
    assert_eq!(extremes.lookup(address("2001:2::1")), Some(0));
    assert_eq!(
        extremes.lookup(address("2001:2:1::1")),
        Some(NEXT_HOP_INDEX_MAX)
    );
}

#[test]
fn small_table_stays_small() {
    let small = table(&[
        ("::", 0, 0),
        ("2001:2::", 48, 1),
        ("2001:2::1", 128, 2),
        ("2001:2:1::", 48, 3),
        ("2001:db8::", 32, 4),
        ("fc00::", 7, 5),
        ("fe80::", 10, 6),
        ("2002::", 16, 7),
        ("2400::", 12, 8),
        ("2001:2:1:2::", 64, 9),
    ]);
    assert_eq!(small.route_count(), 10);
    // The 256 KiB top table plus a few hundred bytes of nodes and results.
    let above_top = small.memory_bytes() - 256 * 1024;
    assert!(above_top < 2048, "{above_top} bytes beyond the top table");
}

#[test]
fn tables_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ipv6Lpm>();
}
