//! Addresses with prefix lengths, and the safety rail that keeps lab traffic inside the ranges
//! reserved for it: 198.18.0.0/15 (RFC 2544 benchmarking) and 2001:2::/48 (RFC 5180).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::LabError;

/// An address together with a prefix length, as `ip addr add` takes it (`198.18.1.2/24`).
/// The address may have host bits set; [`IpCidr::network`] clears them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// The IPv4 range every lab address and every lab destination lies in.
pub const LAB_IPV4_RANGE: IpCidr = IpCidr {
    addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)),
    prefix_len: 15,
};

/// The IPv6 range every lab address and every lab destination lies in.
pub const LAB_IPV6_RANGE: IpCidr = IpCidr {
    addr: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0)),
    prefix_len: 48,
};

impl IpCidr {
    /// Fails if `prefix_len` is longer than the address (32 bits for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, LabError> {
        let bits_max = address_bits(addr);
        if prefix_len > bits_max {
            return Err(LabError::invalid_argument(
                "prefix_len",
                format!("{prefix_len} is longer than the {bits_max} bits of {addr}"),
            ));
        }
        Ok(Self { addr, prefix_len })
    }

    /// For prefix lengths fixed in this crate's code, where a bad one is a programming error.
    pub(crate) fn from_parts(addr: IpAddr, prefix_len: u8) -> Self {
        assert!(
            prefix_len <= address_bits(addr),
            "prefix length {prefix_len} too long for {addr}"
        );
        Self { addr, prefix_len }
    }

    /// A single address: /32 for IPv4, /128 for IPv6.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix_len: address_bits(addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The same prefix with the host bits cleared (`198.18.1.2/24` -> `198.18.1.0/24`).
    pub fn network(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(self.prefix_len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(self.prefix_len))),
        };
        Self {
            addr,
            prefix_len: self.prefix_len,
        }
    }

    /// Whether `candidate` lies inside this prefix; never for the other address family.
    pub fn contains(&self, candidate: IpAddr) -> bool {
        match (self.addr, candidate) {
            (IpAddr::V4(own), IpAddr::V4(other)) => {
                let mask = mask_v4(self.prefix_len);
                u32::from(own) & mask == u32::from(other) & mask
            }
            (IpAddr::V6(own), IpAddr::V6(other)) => {
                let mask = mask_v6(self.prefix_len);
                u128::from(own) & mask == u128::from(other) & mask
            }
            _ => false,
        }
    }

    /// Whether every address of this prefix lies inside `outer`.
    pub fn is_within(&self, outer: &IpCidr) -> bool {
        self.prefix_len >= outer.prefix_len && outer.contains(self.addr)
    }

    /// Whether the two prefixes share at least one address.
    pub fn overlaps(&self, other: &IpCidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.addr, self.prefix_len)
    }
}

fn address_bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask_v4(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

fn mask_v6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// Whether `addr` lies in 198.18.0.0/15 or 2001:2::/48.
pub fn is_lab_address(addr: IpAddr) -> bool {
    LAB_IPV4_RANGE.contains(addr) || LAB_IPV6_RANGE.contains(addr)
}

/// Whether the whole prefix lies in 198.18.0.0/15 or 2001:2::/48.
pub fn is_lab_prefix(prefix: &IpCidr) -> bool {
    prefix.is_within(&LAB_IPV4_RANGE) || prefix.is_within(&LAB_IPV6_RANGE)
}

/// The safety rail every traffic primitive passes its destinations through.
pub fn ensure_lab_address(addr: IpAddr) -> Result<(), LabError> {
    if is_lab_address(addr) {
        Ok(())
    } else {
        Err(LabError::AddressOutsideLab { address: addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str, prefix_len: u8) -> IpCidr {
        IpCidr::new(text.parse().expect("test address"), prefix_len).expect("test prefix")
    }

    #[test]
    fn lab_ranges_contain_their_edges_and_nothing_beyond() {
        for inside in [
            "198.18.0.0",
            "198.19.255.255",
            "2001:2::",
            "2001:2:0:ffff::1",
        ] {
            assert!(is_lab_address(inside.parse().expect("addr")), "{inside}");
        }
        for outside in [
            "198.17.255.255",
            "198.20.0.0",
            "8.8.8.8",
            "2001:3::1",
            "2001:2:1::1",
            "::ffff:198.18.1.2",
            "fe80::1",
        ] {
            assert!(!is_lab_address(outside.parse().expect("addr")), "{outside}");
            assert!(matches!(
                ensure_lab_address(outside.parse().expect("addr")),
                Err(LabError::AddressOutsideLab { .. })
            ));
        }
    }

    #[test]
    fn network_clears_host_bits_and_display_round_trips() {
        assert_eq!(cidr("198.18.1.2", 24).network(), cidr("198.18.1.0", 24));
        assert_eq!(
            cidr("2001:2:0:1::2", 64).network().to_string(),
            "2001:2:0:1::/64"
        );
        assert_eq!(cidr("198.18.1.2", 0).network().to_string(), "0.0.0.0/0");
        assert_eq!(
            IpCidr::host("198.19.0.1".parse().expect("addr")).to_string(),
            "198.19.0.1/32"
        );
    }

    #[test]
    fn contains_respects_family_and_prefix() {
        let subnet = cidr("198.18.1.0", 24);
        assert!(subnet.contains("198.18.1.255".parse().expect("addr")));
        assert!(!subnet.contains("198.18.2.1".parse().expect("addr")));
        assert!(!subnet.contains("2001:2::1".parse().expect("addr")));
        assert!(cidr("0.0.0.0", 0).contains("1.2.3.4".parse().expect("addr")));
        assert!(cidr("198.18.0.0", 15).overlaps(&cidr("198.19.0.1", 32)));
        assert!(!cidr("198.18.1.0", 24).overlaps(&cidr("198.18.2.0", 24)));
        assert!(cidr("198.19.0.1", 32).is_within(&LAB_IPV4_RANGE));
        assert!(!cidr("198.18.0.0", 14).is_within(&LAB_IPV4_RANGE));
        assert!(!is_lab_prefix(&cidr("2001:2::", 32)));
        assert!(is_lab_prefix(&cidr("2001:2:0:ff::1", 128)));
        // Looks similar, but the third group is outside the /48.
        assert!(!is_lab_prefix(&cidr("2001:2:ff::1", 128)));
    }

    #[test]
    fn prefix_longer_than_address_is_rejected() {
        assert!(IpCidr::new("198.18.0.1".parse().expect("addr"), 33).is_err());
        assert!(IpCidr::new("2001:2::1".parse().expect("addr"), 129).is_err());
        assert!(IpCidr::new("2001:2::1".parse().expect("addr"), 128).is_ok());
    }
}
