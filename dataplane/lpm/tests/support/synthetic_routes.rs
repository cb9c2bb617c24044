//! Deterministic Internet-like route sets and probe addresses, shared by the scale test and the
//! `lpm_bench` example (which includes this file by path). No `rand`: a xorshift generator.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Marsaglia's xorshift64: enough spread for synthetic tables, reproducible from its seed.
pub struct Xorshift(u64);

impl Xorshift {
    /// `seed` must not be zero (zero is xorshift's only fixed point), so it is forced odd.
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn next_u128(&mut self) -> u128 {
        u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())
    }

    /// A number below `bound` (> 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// Prefix lengths with weights in per mille, roughly the shape of the global IPv4 BGP table,
/// with more /25../32 than real tables so that third-level groups are exercised.
const IPV4_LENGTH_WEIGHTS: &[(u8, u64)] = &[
    (8, 1),
    (12, 1),
    (14, 2),
    (15, 2),
    (16, 13),
    (17, 8),
    (18, 13),
    (19, 25),
    (20, 40),
    (21, 40),
    (22, 115),
    (23, 100),
    (24, 605),
    (25, 6),
    (26, 6),
    (27, 6),
    (28, 4),
    (29, 4),
    (30, 4),
    (32, 5),
];

/// Prefix lengths with weights in per mille, roughly the shape of the global IPv6 BGP table.
const IPV6_LENGTH_WEIGHTS: &[(u8, u64)] = &[
    (19, 1),
    (20, 2),
    (24, 3),
    (28, 10),
    (29, 50),
    (30, 10),
    (32, 130),
    (33, 10),
    (34, 10),
    (36, 40),
    (40, 60),
    (44, 80),
    (46, 30),
    (47, 30),
    (48, 440),
    (52, 10),
    (56, 30),
    (60, 5),
    (64, 40),
    (128, 10),
];

fn pick_length(weights: &[(u8, u64)], random: &mut Xorshift) -> u8 {
    let total: u64 = weights.iter().map(|&(_, weight)| weight).sum();
    let mut remaining = random.below(total);
    for &(prefix_len, weight) in weights {
        if remaining < weight {
            return prefix_len;
        }
        remaining -= weight;
    }
    weights.last().map_or(0, |&(prefix_len, _)| prefix_len)
}

/// `count` distinct IPv4 unicast routes (first octet 1..=223), next hops `0..count`. Gives up
/// after `4 × count` draws, so it may return fewer routes for absurd counts.
pub fn ipv4_routes(count: usize, random: &mut Xorshift) -> Vec<(Ipv4Addr, u8, u32)> {
    let mut seen = HashSet::with_capacity(count);
    let mut routes = Vec::with_capacity(count);
    for _ in 0..count.saturating_mul(4) {
        if routes.len() == count {
            break;
        }
        let prefix_len = pick_length(IPV4_LENGTH_WEIGHTS, random);
        let first_octet = 1 + random.below(223) as u32;
        let address = first_octet << 24 | (random.next_u64() as u32 & 0x00ff_ffff);
        let network = address & (u32::MAX << (32 - u32::from(prefix_len)));
        if seen.insert((network, prefix_len)) {
            routes.push((
                Ipv4Addr::from_bits(network),
                prefix_len,
                routes.len() as u32,
            ));
        }
    }
    routes
}

/// `count` distinct IPv6 routes inside 2000::/3, next hops `0..count`. Routes of /32 and longer
/// fall into a pool of `count / 8` allocations (/32s), about eight per allocation as in real
/// tables. Gives up after `4 × count` draws.
pub fn ipv6_routes(count: usize, random: &mut Xorshift) -> Vec<(Ipv6Addr, u8, u32)> {
    let global_unicast = |bits: u128| 0x2000 << 112 | bits >> 3;
    let allocations: Vec<u128> = (0..(count / 8).max(1))
        .map(|_| global_unicast(random.next_u128()) & (u128::MAX << 96))
        .collect();
    let mut seen = HashSet::with_capacity(count);
    let mut routes = Vec::with_capacity(count);
    for _ in 0..count.saturating_mul(4) {
        if routes.len() == count {
            break;
        }
        let prefix_len = pick_length(IPV6_LENGTH_WEIGHTS, random);
        let address = if prefix_len >= 32 {
            let allocation = allocations[random.below(allocations.len() as u64) as usize];
            allocation | (random.next_u128() >> 32)
        } else {
            global_unicast(random.next_u128())
        };
        let network = address & (u128::MAX << (128 - u32::from(prefix_len)));
        if seen.insert((network, prefix_len)) {
            routes.push((
                Ipv6Addr::from_bits(network),
                prefix_len,
                routes.len() as u32,
            ));
        }
    }
    routes
}

/// `count` addresses, each inside a randomly chosen one of `prefixes` (network as a host-order
/// integer, prefix length) with random host bits: the lookups a router actually sees, reaching
/// the routes' full depth. Empty when there are no prefixes.
pub fn addresses_inside(
    prefixes: &[(u128, u8)],
    address_bits: u32,
    count: usize,
    random: &mut Xorshift,
) -> Vec<u128> {
    if prefixes.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|_| {
            let (network, prefix_len) = prefixes[random.below(prefixes.len() as u64) as usize];
            let host_mask = (u128::MAX >> (128 - address_bits))
                .checked_shr(u32::from(prefix_len))
                .unwrap_or(0);
            network | (random.next_u128() & host_mask)
        })
        .collect()
}
