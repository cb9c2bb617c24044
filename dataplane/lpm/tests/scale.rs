//! 100k-route tables of each family, quick enough for debug builds, checked against an
//! exact-match reference (one hash lookup per prefix length, longest first). The 1M-route IPv4
//! build is timed by the release-mode `lpm_bench` example instead.

#[path = "support/synthetic_routes.rs"]
mod synthetic_routes;

use std::collections::HashMap;

use synthetic_routes::{Xorshift, addresses_inside, ipv4_routes, ipv6_routes};
use vfn_lpm::{Ipv4Lpm, Ipv6Lpm, LpmLimits, NextHopIndex};

const ROUTE_COUNT: usize = 100_000;
const PROBE_COUNT: usize = 20_000;

/// Longest match by trying every prefix length from the longest: slow but obviously right.
struct ExactMatchReference {
    by_prefix: HashMap<(u128, u8), NextHopIndex>,
    address_bits: u32,
}

impl ExactMatchReference {
    fn new(
        prefixes: &[(u128, u8)],
        next_hops: impl Iterator<Item = NextHopIndex>,
        address_bits: u32,
    ) -> Self {
        Self {
            by_prefix: prefixes.iter().copied().zip(next_hops).collect(),
            address_bits,
        }
    }

    fn lookup(&self, address: u128) -> Option<NextHopIndex> {
        (0..=self.address_bits).rev().find_map(|prefix_len| {
            let host_bits = self.address_bits - prefix_len;
            let network = address
                .checked_shr(host_bits)
                .unwrap_or(0)
                .checked_shl(host_bits)
                .unwrap_or(0);
            let prefix_len = u8::try_from(prefix_len).ok()?;
            self.by_prefix.get(&(network, prefix_len)).copied()
        })
    }
}

#[test]
fn ipv4_table_of_100k_routes_matches_the_reference() {
    let mut random = Xorshift::new(0x5eed_0004);
    let routes = ipv4_routes(ROUTE_COUNT, &mut random);
    assert_eq!(routes.len(), ROUTE_COUNT);
    let table =
        Ipv4Lpm::build(&routes, LpmLimits::IPV4_DEFAULT).expect("generated routes are valid");
    assert_eq!(table.route_count(), ROUTE_COUNT);

    let prefixes: Vec<(u128, u8)> = routes
        .iter()
        .map(|&(network, prefix_len, _)| (u128::from(network.to_bits()), prefix_len))
        .collect();
    let reference = ExactMatchReference::new(&prefixes, routes.iter().map(|route| route.2), 32);
    let mut probes = addresses_inside(&prefixes, 32, PROBE_COUNT, &mut random);
    probes.extend((0..PROBE_COUNT / 4).map(|_| u128::from(random.next_u64() as u32)));
    for probe in probes {
        let address = u32::try_from(probe).expect("IPv4 probes fit 32 bits");
        assert_eq!(
            table.lookup_u32(address),
            reference.lookup(probe),
            "address {address:#010x}"
        );
    }

    // The documented bound: the top table plus at most one group per route and one per /16.
    let group_bytes = 1024 * (ROUTE_COUNT + 65_536);
    assert!(table.memory_bytes() <= 256 * 1024 + group_bytes);
}

#[test]
fn ipv6_table_of_100k_routes_matches_the_reference() {
    let mut random = Xorshift::new(0x5eed_0006);
    let routes = ipv6_routes(ROUTE_COUNT, &mut random);
    assert_eq!(routes.len(), ROUTE_COUNT);
    let table =
        Ipv6Lpm::build(&routes, LpmLimits::IPV6_DEFAULT).expect("generated routes are valid");
    assert_eq!(table.route_count(), ROUTE_COUNT);

    let prefixes: Vec<(u128, u8)> = routes
        .iter()
        .map(|&(network, prefix_len, _)| (network.to_bits(), prefix_len))
        .collect();
    let reference = ExactMatchReference::new(&prefixes, routes.iter().map(|route| route.2), 128);
    let mut probes = addresses_inside(&prefixes, 128, PROBE_COUNT / 4, &mut random);
    probes.extend((0..PROBE_COUNT / 16).map(|_| random.next_u128()));
    for probe in probes {
        assert_eq!(
            table.lookup_u128(probe),
            reference.lookup(probe),
            "address {probe:#034x}"
        );
    }

    // The documented bound: 540 bytes per route beyond the top table.
    assert!(table.memory_bytes() <= 256 * 1024 + 540 * ROUTE_COUNT);
}
