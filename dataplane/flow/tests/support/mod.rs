//! Packet builders shared by the integration tests (addresses from the test ranges
//! 198.18.0.0/15 and 2001:2::/48).

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support module"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vfn_flow::{
    Direction, FlowKey, FlowTable, InsertError, PROTO_TCP, PROTO_UDP, PacketTuple, TcpFlags,
    mapped_address,
};

pub const SYN_ACK: TcpFlags = TcpFlags::from_header_byte(0x12);

/// The `index`-th IPv4 address of 198.18.0.0/15, mapped.
pub fn ipv4(index: u32) -> u128 {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    mapped_address(IpAddr::V4(Ipv4Addr::from(base + (index & 0x1_ffff))))
}

/// The `index`-th IPv6 address of 2001:2::/48.
pub fn ipv6(index: u64) -> u128 {
    let base = u128::from("2001:2::".parse::<Ipv6Addr>().expect("valid prefix"));
    base | u128::from(index)
}

pub fn udp(src: u128, dst: u128, sport: u16, dport: u16) -> PacketTuple {
    PacketTuple {
        src,
        dst,
        sport,
        dport,
        proto: PROTO_UDP,
        ingress: 1,
    }
}

pub fn tcp(src: u128, dst: u128, sport: u16, dport: u16) -> PacketTuple {
    PacketTuple {
        src,
        dst,
        sport,
        dport,
        proto: PROTO_TCP,
        ingress: 1,
    }
}

/// The tuple of the reply to `tuple`.
pub fn reply(tuple: &PacketTuple) -> PacketTuple {
    PacketTuple {
        src: tuple.dst,
        dst: tuple.src,
        sport: tuple.dport,
        dport: tuple.sport,
        proto: tuple.proto,
        ingress: tuple.ingress + 1,
    }
}

/// Handles one packet the way a worker does: look up, else insert, then record it. Returns the
/// packet's direction, or the insert error.
pub fn packet<V: Copy>(
    table: &mut FlowTable<V>,
    tuple: &PacketTuple,
    flags: TcpFlags,
    value: V,
    now_ns: u64,
) -> Result<Direction, InsertError> {
    let (key, orientation) = FlowKey::from_packet(tuple);
    let hash = table.hash(&key);
    if let Some((entry, direction)) = table.get_mut(&key, hash, orientation) {
        entry.record_packet(now_ns, direction, flags);
        return Ok(direction);
    }
    let entry = table.insert(key, hash, orientation, value, now_ns)?;
    entry.record_packet(now_ns, Direction::Forward, flags);
    Ok(Direction::Forward)
}

/// A completed TCP handshake on `tuple`.
pub fn tcp_handshake<V: Copy>(
    table: &mut FlowTable<V>,
    tuple: &PacketTuple,
    value: V,
    now_ns: u64,
) {
    packet(table, tuple, TcpFlags::SYN, value, now_ns).expect("room for the SYN");
    packet(table, &reply(tuple), SYN_ACK, value, now_ns).expect("flow present");
    packet(table, tuple, TcpFlags::ACK, value, now_ns).expect("flow present");
}

pub fn contains<V: Copy>(table: &FlowTable<V>, tuple: &PacketTuple) -> bool {
    let (key, _) = FlowKey::from_packet(tuple);
    table.get(&key, table.hash(&key)).is_some()
}
