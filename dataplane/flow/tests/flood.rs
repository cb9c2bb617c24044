//! A flood of new flows (ten times the capacity) leaves every established flow in place, and the
//! table never grows: its hash index keeps the bucket count `new` gave it.

mod support;

use std::time::Duration;
use support::{ipv4, ipv6, packet, reply, tcp_handshake};
use vfn_flow::{EVICTION_CANDIDATES_MAX, FlowTable, InsertError, PacketTuple, TcpFlags, Timeouts};

const CAPACITY: usize = 1_000;
const SECOND: u64 = 1_000_000_000;
const START: u64 = 10 * SECOND;

fn established_tcp(index: u32) -> PacketTuple {
    support::tcp(ipv4(index), ipv4(50_000), 20_000 + index as u16, 443)
}

fn replied_udp(index: u32) -> PacketTuple {
    support::udp(ipv6(u64::from(index)), ipv6(50_000), 30_000, 53)
}

/// A spoofed SYN or a one-way UDP packet from a random-looking source.
fn flood_packet(index: u32) -> PacketTuple {
    let src = ipv6(1 << 40 | u64::from(index));
    if index.is_multiple_of(2) {
        support::tcp(src, ipv4(50_000), index as u16, 443)
    } else {
        support::udp(src, ipv4(50_000), index as u16, 53)
    }
}

/// Fills `established` flows (TCP handshakes and UDP flows with a reply) into a table of
/// `CAPACITY`, then floods it with ten times its capacity of new flows, running expiry as a worker
/// does. Returns the table and the number of refused flood inserts.
fn flood(established: u32) -> (FlowTable<u32>, usize) {
    let mut table = FlowTable::new(CAPACITY, Timeouts::default()).expect("valid configuration");
    let buckets = table.index_bucket_count();
    let memory = table.memory();
    establish(&mut table, established, START);
    let mut refused = 0;
    for index in 0..10 * CAPACITY as u32 {
        // 10 000 new flows per second, all within every timeout.
        let now = START + u64::from(index) * (SECOND / 10_000);
        let result = packet(
            &mut table,
            &flood_packet(index),
            TcpFlags::SYN,
            u32::MAX,
            now,
        );
        assert!(
            matches!(result, Ok(_) | Err(InsertError::TableFull)),
            "flood packet {index}: {result:?}"
        );
        refused += usize::from(result.is_err());
        let progress = table.expire(now, 64, |_| {});
        assert_eq!(progress.expired, 0, "a flow expired during the flood");
        assert_eq!(table.index_bucket_count(), buckets, "the index grew");
        assert_eq!(table.memory(), memory, "the table allocated");
        assert!(table.len() <= CAPACITY);
    }
    (table, refused)
}

/// Flows `0..count`: even ones TCP after a handshake, odd ones UDP with a reply; the flow's value
/// is its index.
fn establish(table: &mut FlowTable<u32>, count: u32, now: u64) {
    for index in 0..count {
        if index.is_multiple_of(2) {
            tcp_handshake(table, &established_tcp(index), index, now);
        } else {
            packet(table, &replied_udp(index), TcpFlags::NONE, index, now)
                .expect("room for the flow");
            packet(
                table,
                &reply(&replied_udp(index)),
                TcpFlags::NONE,
                index,
                now,
            )
            .expect("flow present");
        }
    }
}

fn assert_established_intact(table: &FlowTable<u32>, established: u32) {
    for index in 0..established {
        let tuple = if index.is_multiple_of(2) {
            established_tcp(index)
        } else {
            replied_udp(index)
        };
        let (key, _) = vfn_flow::FlowKey::from_packet(&tuple);
        let entry = table.get(&key, table.hash(&key));
        assert_eq!(
            entry.map(|entry| entry.value),
            Some(index),
            "established flow {index} lost"
        );
    }
}

#[test]
fn flood_replaces_only_new_flows() {
    let established = 800;
    let (table, refused) = flood(established);
    assert_established_intact(&table, established);
    assert_eq!(table.len(), CAPACITY);
    // The established flows still sit at the front of the eviction FIFO (the wheel has not
    // checked them yet): each refused insert moves up to EVICTION_CANDIDATES_MAX of them out.
    assert!(
        refused <= established as usize / EVICTION_CANDIDATES_MAX + 1,
        "{refused} refused"
    );
    let evictions = table.evictions();
    assert_eq!(evictions.idle, 0);
    let flood_inserted = 10 * CAPACITY - refused;
    let free_at_start = CAPACITY - established as usize;
    assert_eq!(
        evictions.unestablished as usize,
        flood_inserted - free_at_start
    );
}

#[test]
fn flood_after_the_wheel_checked_the_flows_is_never_refused() {
    let mut table = FlowTable::new(CAPACITY, Timeouts::default()).unwrap();
    establish(&mut table, 800, START);
    // Past the flows' first check by the wheel (within one 68.7 s lap), which moves them out of
    // the eviction FIFO; the UDP timeout is 60 s, so they are kept active until then.
    let later = START + 70 * SECOND;
    establish(&mut table, 800, START + 50 * SECOND);
    let progress = table.expire(later, 200_000, |ended| panic!("expired {:?}", ended.entry));
    assert!(progress.caught_up);
    for index in 0..10 * CAPACITY as u32 {
        packet(
            &mut table,
            &flood_packet(index),
            TcpFlags::SYN,
            u32::MAX,
            later,
        )
        .unwrap();
    }
    assert_established_intact(&table, 800);
}

#[test]
fn full_of_established_flows_refuses_every_new_flow() {
    let (table, refused) = flood(CAPACITY as u32);
    assert_eq!(refused, 10 * CAPACITY);
    assert_established_intact(&table, CAPACITY as u32);
    assert_eq!(table.evictions(), Default::default());
}

#[test]
fn idle_flows_are_evicted_before_active_unestablished_ones() {
    let timeouts = Timeouts {
        udp: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let mut table = FlowTable::new(4, timeouts).unwrap();
    let idle = support::udp(ipv4(1), ipv4(2), 1, 1);
    packet(&mut table, &idle, TcpFlags::NONE, 0, START).unwrap();
    for index in 0..3 {
        packet(
            &mut table,
            &flood_packet(index * 2),
            TcpFlags::SYN,
            1,
            START + 2 * SECOND,
        )
        .unwrap();
    }
    // No expire call: the idle UDP flow is overdue but still in the table, and the oldest.
    let newcomer = flood_packet(100);
    packet(&mut table, &newcomer, TcpFlags::SYN, 2, START + 2 * SECOND).unwrap();
    assert!(!support::contains(&table, &idle));
    assert!(support::contains(&table, &newcomer));
    assert_eq!(table.evictions().idle, 1);
}

#[test]
fn the_table_reports_what_it_allocated() {
    let table: FlowTable<u32> = FlowTable::new(CAPACITY, Timeouts::default()).expect("valid");
    let memory = table.memory();
    assert_eq!(memory.entries, CAPACITY * 64, "an entry per 64-byte line");
    assert_eq!(memory.statistics, 0);
    // At least a 4-byte slot and a control byte per bucket, twice the capacity in buckets.
    assert!(memory.index >= table.index_bucket_count() * 5, "{memory:?}");
    assert!(table.index_bucket_count() >= 2 * CAPACITY);
    assert_eq!(memory.free_list, CAPACITY * 4);
    let with_statistics: FlowTable<u32> = FlowTable::with_statistics(
        CAPACITY,
        Timeouts::default(),
        vfn_flow::RecordTimeouts::default(),
    )
    .expect("valid");
    let statistics = with_statistics.memory().statistics;
    assert_eq!(statistics, CAPACITY * size_of::<vfn_flow::FlowStats>());
    assert_eq!(
        with_statistics.memory().total(),
        memory.total() + statistics
    );
}
