//! Why a route list was refused. Plain data: building the message allocates nothing.

use std::fmt;
use std::net::IpAddr;

use crate::{NEXT_HOP_INDEX_MAX, NextHopIndex};

/// A route list that cannot become a table. `route_index` is the offending route's position in
/// the slice given to `build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LpmError {
    /// The list holds more routes than `LpmLimits::max_routes`; `route_index` is the first route
    /// beyond the limit.
    TooManyRoutes {
        route_index: usize,
        max_routes: usize,
    },
    /// The prefix length is longer than the address (32 for IPv4, 128 for IPv6).
    PrefixLengthTooLong {
        route_index: usize,
        prefix_len: u8,
        address_bits: u8,
    },
    /// The network address has bits set beyond the prefix length (e.g. `10.0.0.1/8`).
    HostBitsSet {
        route_index: usize,
        network: IpAddr,
        prefix_len: u8,
    },
    /// The value is larger than [`NEXT_HOP_INDEX_MAX`].
    NextHopIndexTooLarge {
        route_index: usize,
        next_hop: NextHopIndex,
    },
    /// The same network and prefix length appear twice; `first_route_index` is the other one.
    DuplicatePrefix {
        route_index: usize,
        first_route_index: usize,
        network: IpAddr,
        prefix_len: u8,
    },
    /// The table needs more groups or nodes than an entry can address (2^30). Only reachable
    /// with limits far above the defaults.
    CapacityExceeded { route_index: usize },
}

impl fmt::Display for LpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyRoutes {
                route_index,
                max_routes,
            } => write!(
                f,
                "route {route_index}: more routes than the limit of {max_routes}"
            ),
            Self::PrefixLengthTooLong {
                route_index,
                prefix_len,
                address_bits,
            } => write!(
                f,
                "route {route_index}: prefix length {prefix_len} is longer than the {address_bits}-bit address"
            ),
            Self::HostBitsSet {
                route_index,
                network,
                prefix_len,
            } => write!(
                f,
                "route {route_index}: network {network}/{prefix_len} has host bits set beyond the prefix length"
            ),
            Self::NextHopIndexTooLarge {
                route_index,
                next_hop,
            } => write!(
                f,
                "route {route_index}: next hop index {next_hop} exceeds the maximum {NEXT_HOP_INDEX_MAX}"
            ),
            Self::DuplicatePrefix {
                route_index,
                first_route_index,
                network,
                prefix_len,
            } => write!(
                f,
                "route {route_index}: prefix {network}/{prefix_len} duplicates route {first_route_index}"
            ),
            Self::CapacityExceeded { route_index } => write!(
                f,
                "route {route_index}: the table needs more than 2^30 groups or nodes"
            ),
        }
    }
}

impl std::error::Error for LpmError {}
