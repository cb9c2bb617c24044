//! Route validation shared by both families, and the build order it produces.

use std::net::IpAddr;

use crate::{LpmError, LpmLimits, NEXT_HOP_INDEX_MAX, NextHopIndex};

/// An address family's key: the address as a host-order integer.
pub(crate) trait PrefixKey: Copy + Ord {
    /// Width of the address (32 or 128).
    const BITS: u8;
    /// Whether bits beyond the first `prefix_len` are set; `prefix_len <= BITS`.
    fn has_host_bits(self, prefix_len: u8) -> bool;
}

impl PrefixKey for u32 {
    const BITS: u8 = 32;
    fn has_host_bits(self, prefix_len: u8) -> bool {
        // A shift by the full width (a /32) leaves no host bits.
        self.checked_shl(u32::from(prefix_len)).unwrap_or(0) != 0
    }
}

impl PrefixKey for u128 {
    const BITS: u8 = 128;
    fn has_host_bits(self, prefix_len: u8) -> bool {
        self.checked_shl(u32::from(prefix_len)).unwrap_or(0) != 0
    }
}

/// A validated route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route<K> {
    pub network: K,
    pub prefix_len: u8,
    pub next_hop: NextHopIndex,
    /// Position in the caller's slice, for error messages.
    pub input_index: usize,
}

/// Checks every route and returns them sorted by (network, prefix length).
///
/// In that order a route comes after every route containing it: a containing route has a
/// smaller or equal network, and on equal networks a shorter prefix. Builders rely on this to
/// expand prefixes by plain overwriting.
pub(crate) fn validate_and_sort<A, K>(
    routes: &[(A, u8, NextHopIndex)],
    limits: LpmLimits,
) -> Result<Vec<Route<K>>, LpmError>
where
    A: Copy + Into<IpAddr> + Into<K>,
    K: PrefixKey,
{
    if routes.len() > limits.max_routes {
        return Err(LpmError::TooManyRoutes {
            route_index: limits.max_routes,
            max_routes: limits.max_routes,
        });
    }
    let mut checked = Vec::with_capacity(routes.len());
    for (input_index, &(address, prefix_len, next_hop)) in routes.iter().enumerate() {
        checked.push(check_route(input_index, address, prefix_len, next_hop)?);
    }
    checked.sort_unstable_by_key(|route| (route.network, route.prefix_len, route.input_index));
    if let Some(pair) = checked
        .windows(2)
        .find(|pair| (pair[0].network, pair[0].prefix_len) == (pair[1].network, pair[1].prefix_len))
    {
        let (first, duplicate) = (pair[0], pair[1]);
        return Err(LpmError::DuplicatePrefix {
            route_index: duplicate.input_index,
            first_route_index: first.input_index,
            network: routes[duplicate.input_index].0.into(),
            prefix_len: duplicate.prefix_len,
        });
    }
    Ok(checked)
}

fn check_route<A, K>(
    input_index: usize,
    address: A,
    prefix_len: u8,
    next_hop: NextHopIndex,
) -> Result<Route<K>, LpmError>
where
    A: Copy + Into<IpAddr> + Into<K>,
    K: PrefixKey,
{
    if prefix_len > K::BITS {
        return Err(LpmError::PrefixLengthTooLong {
            route_index: input_index,
            prefix_len,
            address_bits: K::BITS,
        });
    }
    let network: K = address.into();
    if network.has_host_bits(prefix_len) {
        return Err(LpmError::HostBitsSet {
            route_index: input_index,
            network: address.into(),
            prefix_len,
        });
    }
    if next_hop > NEXT_HOP_INDEX_MAX {
        return Err(LpmError::NextHopIndexTooLarge {
            route_index: input_index,
            next_hop,
        });
    }
    Ok(Route {
        network,
        prefix_len,
        next_hop,
        input_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_the_bits_after_the_prefix() {
        assert!(!0u32.has_host_bits(0));
        assert!(1u32.has_host_bits(31));
        assert!(!1u32.has_host_bits(32));
        assert!(!0x8000_0000u32.has_host_bits(1));
        assert!(0x8000_0000u32.has_host_bits(0));
        assert!(1u128.has_host_bits(127));
        assert!(!1u128.has_host_bits(128));
        assert!((1u128 << 127).has_host_bits(0));
    }
}
