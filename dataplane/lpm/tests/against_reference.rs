//! Differential tests: both tables against a linear scan for the longest matching prefix, on
//! random route sets whose prefixes cluster around a few base addresses (so that many routes
//! share groups and trie nodes, nest and neighbour each other) and on random lookups, including
//! every route's first and last address and the addresses just outside it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use vfn_lpm::{Ipv4Lpm, Ipv6Lpm, LpmError, LpmLimits, NEXT_HOP_INDEX_MAX, NextHopIndex};

/// Addresses per `Ipv6Lpm::lookup_burst` call: small, so that most cases hold a few bursts.
const BURST_SIZE: usize = 8;

/// A route or probe address as `(bits, closeness)`: the address is `base ^ (bits >> closeness)`,
/// so a large `closeness` lands next to a base and a small one anywhere.
type Scatter<K> = (usize, K, u32);

/// Routes as (network, prefix length, next hop) in a key type wide enough for both families.
type ReferenceRoute = (u128, u8, NextHopIndex);

/// The longest prefix containing `address` among `routes`, by scanning them all.
fn reference_lookup(
    routes: &[ReferenceRoute],
    address: u128,
    address_bits: u32,
) -> Option<NextHopIndex> {
    routes
        .iter()
        .filter(|&&(network, prefix_len, _)| {
            let host_bits = address_bits - u32::from(prefix_len);
            (network ^ address).checked_shr(host_bits).unwrap_or(0) == 0
        })
        .max_by_key(|&&(_, prefix_len, _)| prefix_len)
        .map(|&(_, _, next_hop)| next_hop)
}

/// Masks host bits and drops repeated prefixes (keeping the first), as `build` requires.
fn unique_routes(
    raw: impl Iterator<Item = (u128, u8, NextHopIndex)>,
    address_bits: u32,
) -> Vec<ReferenceRoute> {
    let mut by_prefix = BTreeMap::new();
    for (address, prefix_len, next_hop) in raw {
        let host_bits = address_bits - u32::from(prefix_len);
        let network = address
            .checked_shr(host_bits)
            .unwrap_or(0)
            .checked_shl(host_bits)
            .unwrap_or(0);
        by_prefix.entry((network, prefix_len)).or_insert(next_hop);
    }
    by_prefix
        .into_iter()
        .map(|((network, prefix_len), next_hop)| (network, prefix_len, next_hop))
        .collect()
}

/// First and last address of every route, and their outside neighbours.
fn route_edges(routes: &[ReferenceRoute], address_bits: u32) -> Vec<u128> {
    let address_max = u128::MAX >> (128 - address_bits);
    let mut edges = Vec::new();
    for &(network, prefix_len, _) in routes {
        let host_mask = address_max.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        let last = network | host_mask;
        edges.extend([Some(network), Some(last), network.checked_sub(1)]);
        edges.push(last.checked_add(1).filter(|&next| next <= address_max));
    }
    edges.into_iter().flatten().collect()
}

fn scatter_v4(bases: &[u32], (base_index, bits, closeness): Scatter<u32>) -> u128 {
    let base = bases.get(base_index % bases.len()).copied().unwrap_or(0);
    u128::from(base ^ bits.checked_shr(closeness).unwrap_or(0))
}

fn scatter_v6(bases: &[u128], (base_index, bits, closeness): Scatter<u128>) -> u128 {
    let base = bases.get(base_index % bases.len()).copied().unwrap_or(0);
    base ^ bits.checked_shr(closeness).unwrap_or(0)
}

fn next_hop() -> impl Strategy<Value = NextHopIndex> {
    prop_oneof![0..16u32, Just(NEXT_HOP_INDEX_MAX), 0..=NEXT_HOP_INDEX_MAX]
}

fn v4_case() -> impl Strategy<Value = (Vec<ReferenceRoute>, Vec<u128>)> {
    let scatter = || (any::<usize>(), any::<u32>(), 0..=32u32);
    (
        prop::collection::vec(any::<u32>(), 1..4),
        prop::collection::vec((scatter(), 0..=32u8, next_hop()), 0..96),
        prop::collection::vec(scatter(), 0..128),
    )
        .prop_map(|(bases, raw_routes, raw_probes)| {
            let raw = raw_routes
                .into_iter()
                .map(|(at, prefix_len, next_hop)| (scatter_v4(&bases, at), prefix_len, next_hop));
            let routes = unique_routes(raw, 32);
            let mut probes = route_edges(&routes, 32);
            probes.extend(raw_probes.into_iter().map(|at| scatter_v4(&bases, at)));
            (routes, probes)
        })
}

fn v6_case() -> impl Strategy<Value = (Vec<ReferenceRoute>, Vec<u128>)> {
    let scatter = || (any::<usize>(), any::<u128>(), 0..=128u32);
    (
        prop::collection::vec(any::<u128>(), 1..4),
        prop::collection::vec((scatter(), 0..=128u8, next_hop()), 0..96),
        prop::collection::vec(scatter(), 0..128),
    )
        .prop_map(|(bases, raw_routes, raw_probes)| {
            let raw = raw_routes
                .into_iter()
                .map(|(at, prefix_len, next_hop)| (scatter_v6(&bases, at), prefix_len, next_hop));
            let routes = unique_routes(raw, 128);
            let mut probes = route_edges(&routes, 128);
            probes.extend(raw_probes.into_iter().map(|at| scatter_v6(&bases, at)));
            (routes, probes)
        })
}

fn v4_input(routes: &[ReferenceRoute]) -> Vec<(Ipv4Addr, u8, NextHopIndex)> {
    routes
        .iter()
        .map(|&(network, prefix_len, next_hop)| {
            let network = u32::try_from(network).expect("IPv4 routes are generated as u32");
            (Ipv4Addr::from_bits(network), prefix_len, next_hop)
        })
        .collect()
}

fn v6_input(routes: &[ReferenceRoute]) -> Vec<(Ipv6Addr, u8, NextHopIndex)> {
    routes
        .iter()
        .map(|&(network, prefix_len, next_hop)| {
            (Ipv6Addr::from_bits(network), prefix_len, next_hop)
        })
        .collect()
}

proptest! {
    #[test]
    fn ipv4_matches_the_linear_scan((routes, probes) in v4_case(), reversed in any::<bool>()) {
        let mut input = v4_input(&routes);
        if reversed {
            input.reverse();
        }
        let table = Ipv4Lpm::build(&input, LpmLimits::IPV4_DEFAULT).expect("unique, masked routes");
        prop_assert_eq!(table.route_count(), routes.len());
        for probe in probes {
            let address = u32::try_from(probe).expect("IPv4 probes are generated as u32");
            prop_assert_eq!(
                table.lookup_u32(address),
                reference_lookup(&routes, probe, 32),
                "address {}", Ipv4Addr::from_bits(address)
            );
        }
    }

    #[test]
    fn ipv6_matches_the_linear_scan((routes, probes) in v6_case(), reversed in any::<bool>()) {
        let mut input = v6_input(&routes);
        if reversed {
            input.reverse();
        }
        let table = Ipv6Lpm::build(&input, LpmLimits::IPV6_DEFAULT).expect("unique, masked routes");
        prop_assert_eq!(table.route_count(), routes.len());
        for &probe in &probes {
            prop_assert_eq!(
                table.lookup_u128(probe),
                reference_lookup(&routes, probe, 128),
                "address {}", Ipv6Addr::from_bits(probe)
            );
        }
        for burst in probes.as_chunks::<BURST_SIZE>().0 {
            let expected = burst.map(|probe| reference_lookup(&routes, probe, 128));
            prop_assert_eq!(table.lookup_burst(burst), expected);
        }
    }

    #[test]
    fn a_repeated_prefix_is_refused_with_both_indices((routes, _) in v6_case(), pick in any::<usize>()) {
        prop_assume!(!routes.is_empty());
        let mut input = v6_input(&routes);
        let repeated_index = pick % input.len();
        let mut repeated = input[repeated_index];
        repeated.2 = repeated.2.wrapping_add(1) & NEXT_HOP_INDEX_MAX;
        input.push(repeated);
        let error = Ipv6Lpm::build(&input, LpmLimits::IPV6_DEFAULT).expect_err("a prefix repeats");
        prop_assert_eq!(error, LpmError::DuplicatePrefix {
            route_index: input.len() - 1,
            first_route_index: repeated_index,
            network: repeated.0.into(),
            prefix_len: repeated.1,
        });
    }
}
