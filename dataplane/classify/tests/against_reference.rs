//! The classifier against the linear first-match scan, on random entry sets and keys.

use proptest::prelude::*;
use vfn_classify::{Address, Classifier, Entry, Key, Limits, Match, Range, linear_reference};

/// Addresses are drawn near a few anchors so that prefixes nest and overlap.
const ANCHORS: [u128; 4] = [
    0,
    0x2001_0002_0000_0000_0000_0000_0000_0000,
    0xc612_0000_c612_0000_c612_0000_c612_0001,
    u128::MAX,
];
const PORTS: [u16; 7] = [0, 1, 53, 80, 1023, 1024, 65535];
const PROTOCOLS: [u8; 3] = [1, 6, 17];

/// An address of `bits` bits near an anchor.
fn address(bits: u32) -> impl Strategy<Value = u128> {
    (prop::sample::select(&ANCHORS[..]), any::<u128>(), 0..bits).prop_map(
        move |(anchor, noise, noise_bits)| {
            let value = anchor ^ (noise & (u128::MAX >> (128 - noise_bits.max(1))));
            value & (u128::MAX >> (128 - bits))
        },
    )
}

/// A prefix (mostly) or an arbitrary range of `bits`-bit addresses.
fn address_range(bits: u32) -> impl Strategy<Value = (u128, u128)> {
    prop_oneof![
        4 => (address(bits), 0..=bits).prop_map(move |(base, len)| {
            let host = (u128::MAX >> (128 - bits)).checked_shr(len).unwrap_or(0);
            (base & !host, (base & !host) | host)
        }),
        1 => (address(bits), address(bits)).prop_map(|(a, b)| (a.min(b), a.max(b))),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![prop::sample::select(&PORTS[..]), any::<u16>()]
}

fn port_range() -> impl Strategy<Value = Range<u16>> {
    prop_oneof![
        2 => Just(Range { lo: 0, hi: u16::MAX }),
        2 => port().prop_map(|p| Range { lo: p, hi: p }),
        2 => (port(), port()).prop_map(|(a, b)| Range { lo: a.min(b), hi: a.max(b) }),
    ]
}

/// Entries over `bits`-bit addresses (as `u128`), with priorities that repeat (one rule
/// expanding into several entries) and do not follow the list order.
fn entries(bits: u32, count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Entry<u128>>> {
    let entry = (
        address_range(bits),
        address_range(bits),
        port_range(),
        port_range(),
        prop::option::of(prop::sample::select(&PROTOCOLS[..])),
        prop::option::of(0u16..3),
        prop::option::weighted(0.2, (any::<u8>(), any::<u8>())),
        0u32..40,
    )
        .prop_map(
            |(src, dst, sport, dport, proto, ingress, flags, priority)| Entry {
                priority,
                m: Match {
                    src: Range {
                        lo: src.0,
                        hi: src.1,
                    },
                    dst: Range {
                        lo: dst.0,
                        hi: dst.1,
                    },
                    sport,
                    dport,
                    proto,
                    ingress,
                    // Mostly satisfiable: the value within the mask.
                    tcp_flags: flags.map(|(value, mask)| (value & mask, mask)),
                },
            },
        );
    prop::collection::vec(entry, count)
}

/// A key inside `m` chosen by `pick`.
fn key_inside(m: &Match<u128>, pick: u128, flags: u8) -> Key<u128> {
    let within = |lo: u128, hi: u128| lo + pick % (hi - lo).saturating_add(1).max(1);
    let within16 = |r: Range<u16>| within(u128::from(r.lo), u128::from(r.hi)) as u16;
    Key {
        src: within(m.src.lo, m.src.hi),
        dst: within(m.dst.lo, m.dst.hi),
        sport: within16(m.sport),
        dport: within16(m.dport),
        proto: m.proto.unwrap_or(pick as u8),
        ingress: m.ingress.unwrap_or(pick as u16 % 3),
        tcp_flags: m
            .tcp_flags
            .map_or(flags, |(value, mask)| value | (flags & !mask)),
    }
}

/// Keys: half inside some entry, half anywhere near the anchors.
fn keys(bits: u32, entries: &[Entry<u128>]) -> impl Strategy<Value = Vec<Key<u128>>> + use<> {
    let entries = entries.to_vec();
    let inside = (any::<prop::sample::Index>(), any::<u128>(), any::<u8>()).prop_map(
        move |(index, pick, flags)| {
            if entries.is_empty() {
                Key::default()
            } else {
                key_inside(&entries[index.index(entries.len())].m, pick, flags)
            }
        },
    );
    let anywhere = (
        address(bits),
        address(bits),
        port(),
        port(),
        any::<u8>(),
        0u16..3,
        any::<u8>(),
    )
        .prop_map(|(src, dst, sport, dport, proto, ingress, tcp_flags)| Key {
            src,
            dst,
            sport,
            dport,
            proto,
            ingress,
            tcp_flags,
        });
    prop::collection::vec(prop_oneof![inside, anywhere], 64)
}

fn narrow(entry: &Entry<u128>) -> Entry<u32> {
    let r = |range: Range<u128>| Range {
        lo: range.lo as u32,
        hi: range.hi as u32,
    };
    Entry {
        priority: entry.priority,
        m: Match {
            src: r(entry.m.src),
            dst: r(entry.m.dst),
            sport: entry.m.sport,
            dport: entry.m.dport,
            proto: entry.m.proto,
            ingress: entry.m.ingress,
            tcp_flags: entry.m.tcp_flags,
        },
    }
}

fn narrow_key(key: &Key<u128>) -> Key<u32> {
    Key {
        src: key.src as u32,
        dst: key.dst as u32,
        sport: key.sport,
        dport: key.dport,
        proto: key.proto,
        ingress: key.ingress,
        tcp_flags: key.tcp_flags,
    }
}

fn check<A: Address>(entries: &[Entry<A>], keys: &[Key<A>]) -> Result<(), TestCaseError> {
    let classifier = Classifier::build(entries, &Limits::default()).expect("valid entries");
    prop_assert_eq!(classifier.entry_count(), entries.len());
    let mut burst = vec![None; keys.len()];
    classifier.classify_burst(keys, &mut burst);
    for (key, burst_answer) in keys.iter().zip(&burst) {
        let expected = linear_reference(entries, key);
        prop_assert_eq!(classifier.classify(key), expected, "key {:?}", key);
        prop_assert_eq!(*burst_answer, expected, "burst, key {:?}", key);
    }
    Ok(())
}

fn entries_and_keys(
    bits: u32,
    count: std::ops::Range<usize>,
) -> impl Strategy<Value = (Vec<Entry<u128>>, Vec<Key<u128>>)> {
    entries(bits, count).prop_flat_map(move |entries| {
        let keys = keys(bits, &entries);
        (Just(entries), keys)
    })
}

proptest! {
    #[test]
    fn ipv4_equals_linear_reference((entries, keys) in entries_and_keys(32, 0..80)) {
        let entries: Vec<Entry<u32>> = entries.iter().map(narrow).collect();
        let keys: Vec<Key<u32>> = keys.iter().map(narrow_key).collect();
        check(&entries, &keys)?;
    }

    #[test]
    fn ipv6_equals_linear_reference((entries, keys) in entries_and_keys(128, 0..80)) {
        check(&entries, &keys)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Enough entries for deep trees, replication and leaf sharing.
    #[test]
    fn large_sets_equal_linear_reference((entries, keys) in entries_and_keys(32, 300..600)) {
        let entries: Vec<Entry<u32>> = entries.iter().map(narrow).collect();
        let keys: Vec<Key<u32>> = keys.iter().map(narrow_key).collect();
        check(&entries, &keys)?;
    }

    #[test]
    fn large_ipv6_sets_equal_linear_reference((entries, keys) in entries_and_keys(128, 300..600)) {
        check(&entries, &keys)?;
    }
}
