//! Builds an Internet-like table of 1M IPv4 and one of 100k IPv6 routes (deterministic xorshift
//! seed), then times 10M lookups per probe set: build time, heap bytes, ns/lookup, Mlookups/s.
//!
//! Run in release: `cargo run --release -p vfn-lpm --example lpm_bench`. Timings are throughput
//! (independent lookups overlap in the CPU), not latency.

#[path = "../tests/support/synthetic_routes.rs"]
mod synthetic_routes;

use std::hint::black_box;
use std::time::{Duration, Instant};

use synthetic_routes::{Xorshift, addresses_inside, ipv4_routes, ipv6_routes};
use vfn_lpm::{Ipv4Lpm, Ipv6Lpm, LpmError, LpmLimits};

const IPV4_ROUTE_COUNT: usize = 1_000_000;
const IPV6_ROUTE_COUNT: usize = 100_000;
const LOOKUP_COUNT: usize = 10_000_000;
/// Probe addresses are generated once and cycled: 1M of them keeps generation out of the
/// timing while still missing the caches like traffic to many destinations would.
const PROBE_COUNT: usize = 1 << 20;
/// A working set that stays in the L1/L2 caches: the lookup's own cost, without memory latency.
const HOT_PROBE_COUNT: usize = 256;
/// Addresses per `Ipv6Lpm::lookup_burst` call.
const BURST_SIZE: usize = 32;

fn main() -> Result<(), LpmError> {
    let mut random = Xorshift::new(0x5eed_1e55_0b5e_55ed);
    bench_ipv4(&mut random)?;
    bench_ipv6(&mut random)
}

fn bench_ipv4(random: &mut Xorshift) -> Result<(), LpmError> {
    let routes = ipv4_routes(IPV4_ROUTE_COUNT, random);
    let started = Instant::now();
    let table = Ipv4Lpm::build(&routes, LpmLimits::IPV4_DEFAULT)?;
    let build_time = started.elapsed();
    print_build(
        "IPv4",
        table.route_count(),
        build_time,
        table.memory_bytes(),
    );
    let uniform: Vec<u32> = (0..PROBE_COUNT).map(|_| random.next_u64() as u32).collect();
    let prefixes: Vec<(u128, u8)> = routes
        .iter()
        .map(|&(network, prefix_len, _)| (u128::from(network.to_bits()), prefix_len))
        .collect();
    let inside: Vec<u32> = addresses_inside(&prefixes, 32, PROBE_COUNT, random)
        .into_iter()
        .map(|address| address as u32)
        .collect();
    for (label, probes) in [
        ("uniform random addresses", &uniform[..]),
        ("addresses inside routes", &inside[..]),
        (
            "256 hot addresses inside routes",
            &inside[..HOT_PROBE_COUNT],
        ),
    ] {
        time_lookups(label, || {
            let mut matched = 0;
            for &address in probes.iter().cycle().take(LOOKUP_COUNT) {
                matched += usize::from(black_box(table.lookup_u32(black_box(address))).is_some());
            }
            matched
        });
    }
    Ok(())
}

fn bench_ipv6(random: &mut Xorshift) -> Result<(), LpmError> {
    let routes = ipv6_routes(IPV6_ROUTE_COUNT, random);
    let started = Instant::now();
    let table = Ipv6Lpm::build(&routes, LpmLimits::IPV6_DEFAULT)?;
    let build_time = started.elapsed();
    print_build(
        "IPv6",
        table.route_count(),
        build_time,
        table.memory_bytes(),
    );
    // Uniform IPv6 addresses almost all stop in the empty top table, so only global unicast
    // space (2000::/3) is probed uniformly.
    let global_unicast: Vec<u128> = (0..PROBE_COUNT)
        .map(|_| 0x2000 << 112 | random.next_u128() >> 3)
        .collect();
    let prefixes: Vec<(u128, u8)> = routes
        .iter()
        .map(|&(network, prefix_len, _)| (network.to_bits(), prefix_len))
        .collect();
    let inside = addresses_inside(&prefixes, 128, PROBE_COUNT, random);
    for (label, probes) in [
        ("uniform addresses in 2000::/3", &global_unicast[..]),
        ("addresses inside routes", &inside[..]),
        (
            "256 hot addresses inside routes",
            &inside[..HOT_PROBE_COUNT],
        ),
    ] {
        time_lookups(label, || {
            let mut matched = 0;
            for &address in probes.iter().cycle().take(LOOKUP_COUNT) {
                matched += usize::from(black_box(table.lookup_u128(black_box(address))).is_some());
            }
            matched
        });
        time_lookups(&format!("{label}, bursts of {BURST_SIZE}"), || {
            let mut matched = 0;
            let bursts = probes.as_chunks::<BURST_SIZE>().0;
            for burst in bursts.iter().cycle().take(LOOKUP_COUNT / BURST_SIZE) {
                let next_hops = black_box(table.lookup_burst(black_box(burst)));
                matched += next_hops
                    .iter()
                    .filter(|next_hop| next_hop.is_some())
                    .count();
            }
            matched
        });
    }
    Ok(())
}

fn print_build(family: &str, route_count: usize, elapsed: Duration, memory_bytes: usize) {
    println!(
        "{family}: built {route_count} routes in {:.1} ms, {memory_bytes} bytes ({:.1} MiB, {:.0} B/route)",
        elapsed.as_secs_f64() * 1e3,
        memory_bytes as f64 / (1024.0 * 1024.0),
        memory_bytes as f64 / route_count as f64,
    );
}

/// Times `run`, which makes `LOOKUP_COUNT` lookups and returns how many matched a route.
fn time_lookups(label: &str, run: impl FnOnce() -> usize) {
    let started = Instant::now();
    let matched = run();
    let ns_per_lookup = started.elapsed().as_nanos() as f64 / LOOKUP_COUNT as f64;
    println!(
        "  {label}: {LOOKUP_COUNT} lookups, {matched} matched: {ns_per_lookup:.2} ns/lookup, {:.1} Mlookups/s",
        1e3 / ns_per_lookup,
    );
}
