//! Every refusal of `build`, for both families: the variant, the route index it names, and
//! the message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vfn_lpm::{Ipv4Lpm, Ipv6Lpm, LpmError, LpmLimits, NEXT_HOP_INDEX_MAX};

const V4_NETWORK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const V6_NETWORK: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0);

fn v4_error(routes: &[(Ipv4Addr, u8, u32)], limits: LpmLimits) -> LpmError {
    Ipv4Lpm::build(routes, limits).expect_err("the routes are invalid")
}

fn v6_error(routes: &[(Ipv6Addr, u8, u32)], limits: LpmLimits) -> LpmError {
    Ipv6Lpm::build(routes, limits).expect_err("the routes are invalid")
}

#[test]
fn too_many_routes_names_the_first_route_beyond_the_limit() {
    let limits = LpmLimits { max_routes: 2 };
    let v4_routes = [
        (V4_NETWORK, 16, 0),
        (V4_NETWORK, 17, 1),
        (V4_NETWORK, 18, 2),
    ];
    let expected = LpmError::TooManyRoutes {
        route_index: 2,
        max_routes: 2,
    };
    assert_eq!(v4_error(&v4_routes, limits), expected);
    assert_eq!(
        expected.to_string(),
        "route 2: more routes than the limit of 2"
    );
    let v6_routes = [
        (V6_NETWORK, 32, 0),
        (V6_NETWORK, 33, 1),
        (V6_NETWORK, 34, 2),
    ];
    assert_eq!(v6_error(&v6_routes, limits), expected);
    assert!(Ipv4Lpm::build(&v4_routes[..2], limits).is_ok());
    assert!(Ipv6Lpm::build(&v6_routes[..2], limits).is_ok());
}

#[test]
fn prefix_length_longer_than_the_address() {
    let error = v4_error(
        &[(V4_NETWORK, 16, 0), (V4_NETWORK, 33, 1)],
        LpmLimits::IPV4_DEFAULT,
    );
    assert_eq!(
        error,
        LpmError::PrefixLengthTooLong {
            route_index: 1,
            prefix_len: 33,
            address_bits: 32,
        }
    );
    assert_eq!(
        error.to_string(),
        "route 1: prefix length 33 is longer than the 32-bit address"
    );
    assert_eq!(
        v6_error(&[(V6_NETWORK, 129, 0)], LpmLimits::IPV6_DEFAULT),
        LpmError::PrefixLengthTooLong {
            route_index: 0,
            prefix_len: 129,
            address_bits: 128,
        }
    );
}

#[test]
fn host_bits_set_beyond_the_prefix() {
    let with_host_bit = Ipv4Addr::new(198, 18, 0, 1);
    let error = v4_error(&[(with_host_bit, 31, 0)], LpmLimits::IPV4_DEFAULT);
    assert_eq!(
        error,
        LpmError::HostBitsSet {
            route_index: 0,
            network: IpAddr::V4(with_host_bit),
            prefix_len: 31,
        }
    );
    assert_eq!(
        error.to_string(),
        "route 0: network 198.18.0.1/31 has host bits set beyond the prefix length"
    );
    let v6_with_host_bit = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
    assert_eq!(
        v6_error(
            &[(V6_NETWORK, 48, 0), (v6_with_host_bit, 127, 1)],
            LpmLimits::IPV6_DEFAULT
        ),
        LpmError::HostBitsSet {
            route_index: 1,
            network: IpAddr::V6(v6_with_host_bit),
            prefix_len: 127,
        }
    );
    let default_with_host_bit = Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0);
    assert!(matches!(
        v6_error(&[(default_with_host_bit, 0, 0)], LpmLimits::IPV6_DEFAULT),
        LpmError::HostBitsSet { route_index: 0, .. }
    ));
}

#[test]
fn next_hop_index_above_the_maximum() {
    let too_large = NEXT_HOP_INDEX_MAX + 1;
    let error = v4_error(
        &[
            (V4_NETWORK, 16, NEXT_HOP_INDEX_MAX),
            (V4_NETWORK, 24, too_large),
        ],
        LpmLimits::IPV4_DEFAULT,
    );
    assert_eq!(
        error,
        LpmError::NextHopIndexTooLarge {
            route_index: 1,
            next_hop: too_large,
        }
    );
    assert_eq!(
        error.to_string(),
        format!("route 1: next hop index {too_large} exceeds the maximum {NEXT_HOP_INDEX_MAX}")
    );
    assert_eq!(
        v6_error(&[(V6_NETWORK, 48, u32::MAX)], LpmLimits::IPV6_DEFAULT),
        LpmError::NextHopIndexTooLarge {
            route_index: 0,
            next_hop: u32::MAX,
        }
    );
}

#[test]
fn duplicate_prefix_names_both_routes() {
    let error = v4_error(
        &[
            (V4_NETWORK, 16, 0),
            (V4_NETWORK, 24, 1),
            (V4_NETWORK, 16, 2),
        ],
        LpmLimits::IPV4_DEFAULT,
    );
    assert_eq!(
        error,
        LpmError::DuplicatePrefix {
            route_index: 2,
            first_route_index: 0,
            network: IpAddr::V4(V4_NETWORK),
            prefix_len: 16,
        }
    );
    assert_eq!(
        error.to_string(),
        "route 2: prefix 198.18.0.0/16 duplicates route 0"
    );
    assert_eq!(
        v6_error(
            &[(V6_NETWORK, 48, 0), (V6_NETWORK, 48, 0)],
            LpmLimits::IPV6_DEFAULT
        ),
        LpmError::DuplicatePrefix {
            route_index: 1,
            first_route_index: 0,
            network: IpAddr::V6(V6_NETWORK),
            prefix_len: 48,
        }
    );
}

#[test]
fn same_network_with_other_lengths_is_not_a_duplicate() {
    let v4_routes: Vec<_> = (16..=32)
        .map(|len| (V4_NETWORK, len, u32::from(len)))
        .collect();
    assert!(Ipv4Lpm::build(&v4_routes, LpmLimits::IPV4_DEFAULT).is_ok());
    let v6_routes: Vec<_> = (32..=128)
        .map(|len| (V6_NETWORK, len, u32::from(len)))
        .collect();
    assert!(Ipv6Lpm::build(&v6_routes, LpmLimits::IPV6_DEFAULT).is_ok());
}

#[test]
fn errors_are_std_errors() {
    let error: Box<dyn std::error::Error> = Box::new(LpmError::TooManyRoutes {
        route_index: 0,
        max_routes: 0,
    });
    assert_eq!(
        error.to_string(),
        "route 0: more routes than the limit of 0"
    );
}
