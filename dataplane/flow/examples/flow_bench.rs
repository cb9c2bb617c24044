//! Lookups per second of the flow table: 1 flow, 100 k and 1 M flows, random access.
//!
//! Run with `cargo run --release -p vfn-flow --example flow_bench`. Each lookup is what a worker
//! does for a packet of a known flow: build the key from the tuple, hash it, find the entry and
//! record the packet. Keys are derived from a pseudo-random flow number, so the loop reads no
//! memory besides the table.

use std::hint::black_box;
use std::time::Instant;
use vfn_flow::{
    Direction, FlowKey, FlowTable, NewTableError, PacketTuple, TcpFlags, Timeouts, mapped_address,
};

const LOOKUPS: u64 = 5_000_000;

/// Flow `index`: UDP from 198.18.0.0/15 (v4, even) or 2001:2::/48 (v6, odd) to one server.
fn tuple(index: u64) -> PacketTuple {
    let src = if index.is_multiple_of(2) {
        mapped_address(std::net::Ipv4Addr::from(0xc612_0000 | (index as u32 & 0x1_ffff)).into())
    } else {
        0x2001_0002_0000_0000_0000_0000_0000_0000 | u128::from(index)
    };
    let server = mapped_address(std::net::Ipv4Addr::new(198, 19, 255, 1).into());
    PacketTuple {
        src,
        dst: server,
        sport: (index >> 17) as u16,
        dport: 53,
        proto: 17,
        ingress: 1,
    }
}

/// SplitMix64: a fast, well-mixed sequence of flow numbers.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn bench(flow_count: u64) -> Result<(), NewTableError> {
    let mut table = FlowTable::<u64>::new(flow_count as usize, Timeouts::default())?;
    let started = Instant::now();
    for index in 0..flow_count {
        let (key, orientation) = FlowKey::from_packet(&tuple(index));
        let hash = table.hash(&key);
        if let Ok(entry) = table.insert(key, hash, orientation, index, 1) {
            entry.record_packet(1, Direction::Forward, TcpFlags::NONE);
        }
    }
    let insert_ns = started.elapsed().as_nanos() as f64 / flow_count as f64;
    assert_eq!(table.len() as u64, flow_count, "every flow inserted");

    let mut state = 42;
    let mut found = 0u64;
    let started = Instant::now();
    for lookup in 0..LOOKUPS {
        let index = next_random(&mut state) % flow_count;
        let (key, orientation) = FlowKey::from_packet(&tuple(index));
        let hash = table.hash(&key);
        if let Some((entry, direction)) = table.get_mut(&key, hash, orientation) {
            entry.record_packet(2 + lookup, direction, TcpFlags::NONE);
            found += entry.value & 1;
        }
    }
    let elapsed = started.elapsed();
    black_box(found);
    let lookup_ns = elapsed.as_nanos() as f64 / LOOKUPS as f64;
    println!(
        "{flow_count:>9} flows: {:>6.1} M lookups/s ({lookup_ns:>5.1} ns each), insert {insert_ns:>5.1} ns",
        1e3 / lookup_ns
    );
    Ok(())
}

fn main() -> Result<(), NewTableError> {
    let (key, _) = FlowKey::from_packet(&tuple(7));
    let table = FlowTable::<u64>::new(1, Timeouts::default())?;
    let started = Instant::now();
    let mut sum = 0u64;
    for _ in 0..LOOKUPS {
        sum = sum.wrapping_add(table.hash(black_box(&key)));
    }
    black_box(sum);
    println!(
        "hash (SipHash-1-3, 37 bytes): {:.1} ns",
        started.elapsed().as_nanos() as f64 / LOOKUPS as f64
    );
    for flow_count in [1, 100_000, 1_000_000] {
        bench(flow_count)?;
    }
    Ok(())
}
