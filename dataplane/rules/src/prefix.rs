//! Address sets as sorted disjoint ranges: union of prefixes, less `except` prefixes, back to the
//! smallest list of prefixes covering exactly the result (classifiers index prefixes).

/// Inclusive ranges of `bits`-bit addresses, sorted and disjoint.
pub type Ranges = Vec<(u128, u128)>;

/// The first and last `bits`-bit address of the prefix `network/len` (host bits ignored).
pub(crate) fn prefix_range(network: u128, len: u8, bits: u8) -> (u128, u128) {
    let host_bits = u32::from(bits - len.min(bits));
    let span = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (network & !span, (network & !span) | span)
}

/// The union of prefixes `(network, len)` as sorted disjoint ranges.
pub fn union(prefixes: &[(u128, u8)], bits: u8) -> Ranges {
    let mut ranges: Vec<(u128, u128)> = prefixes
        .iter()
        .map(|&(n, l)| prefix_range(n, l, bits))
        .collect();
    ranges.sort_unstable();
    let mut merged: Ranges = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// `ranges` less `removed` (both sorted and disjoint).
pub fn subtract(ranges: &Ranges, removed: &Ranges) -> Ranges {
    let mut out = Ranges::new();
    for &(lo, hi) in ranges {
        let mut start = lo;
        let mut open = true;
        for &(rlo, rhi) in removed {
            if rhi < start || rlo > hi {
                continue;
            }
            if rlo > start {
                out.push((start, rlo - 1));
            }
            if rhi >= hi {
                open = false;
                break;
            }
            start = rhi + 1;
        }
        if open {
            out.push((start, hi));
        }
    }
    out
}

/// The fewest prefixes `(network, len)` that cover exactly `[lo, hi]` of a `bits`-bit space.
pub fn to_prefixes(lo: u128, hi: u128, bits: u8) -> Vec<(u128, u8)> {
    let mut out = Vec::new();
    let mut start = lo;
    loop {
        // The largest aligned block at `start` that does not pass `hi`.
        let mut size_bits = if start == 0 {
            u32::from(bits)
        } else {
            start.trailing_zeros().min(u32::from(bits))
        };
        while size_bits > 0 {
            let last = if size_bits >= 128 {
                u128::MAX
            } else {
                start + ((1u128 << size_bits) - 1)
            };
            if last <= hi && last >= start {
                break;
            }
            size_bits -= 1;
        }
        out.push((start, bits - size_bits as u8));
        let last = if size_bits >= 128 {
            u128::MAX
        } else {
            start + ((1u128 << size_bits) - 1)
        };
        if last >= hi {
            return out;
        }
        start = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn union_merges_overlaps_and_neighbours() {
        // 10.0.0.0/25 + 10.0.0.128/25 + 10.0.0.5/32 = 10.0.0.0/24
        let base = 0x0a00_0000u128;
        let ranges = union(&[(base, 25), (base + 128, 25), (base + 5, 32)], 32);
        assert_eq!(ranges, vec![(base, base + 255)]);
    }

    #[test]
    fn except_punches_a_hole() {
        let base = 0xc612_0000u128; // 198.18.0.0
        let all = union(&[(base, 24)], 32);
        let hole = union(&[(base + 16, 28)], 32);
        assert_eq!(
            subtract(&all, &hole),
            vec![(base, base + 15), (base + 32, base + 255)]
        );
        let prefixes: Vec<_> = subtract(&all, &hole)
            .iter()
            .flat_map(|&(lo, hi)| to_prefixes(lo, hi, 32))
            .collect();
        assert_eq!(
            prefixes,
            vec![
                (base, 28),
                (base + 32, 27),
                (base + 64, 26),
                (base + 128, 25)
            ]
        );
    }

    #[test]
    fn whole_spaces() {
        assert_eq!(to_prefixes(0, u32::MAX as u128, 32), vec![(0, 0)]);
        assert_eq!(to_prefixes(0, u128::MAX, 128), vec![(0, 0)]);
        assert_eq!(union(&[(0, 0)], 128), vec![(0, u128::MAX)]);
    }

    proptest! {
        #[test]
        fn prefixes_cover_exactly_the_range(a in any::<u32>(), b in any::<u32>()) {
            let (lo, hi) = (u128::from(a.min(b)), u128::from(a.max(b)));
            let prefixes = to_prefixes(lo, hi, 32);
            prop_assert!(prefixes.len() <= 62);
            let mut next = lo;
            for (network, len) in prefixes {
                let (plo, phi) = prefix_range(network, len, 32);
                prop_assert_eq!(plo, next);
                prop_assert_eq!(plo, network);
                next = phi + 1;
            }
            prop_assert_eq!(next, hi + 1);
        }

        #[test]
        fn subtraction_is_set_difference(p in proptest::collection::vec((any::<u8>(), 0u8..=8), 1..6),
                                         e in proptest::collection::vec((any::<u8>(), 0u8..=8), 0..4),
                                         probe in any::<u8>()) {
            let to = |v: &[(u8, u8)]| v.iter().map(|&(n, l)| (u128::from(n), l)).collect::<Vec<_>>();
            let inside = |ranges: &Ranges, x: u128| ranges.iter().any(|&(lo, hi)| lo <= x && x <= hi);
            let a = union(&to(&p), 8);
            let b = union(&to(&e), 8);
            let x = u128::from(probe);
            prop_assert_eq!(inside(&subtract(&a, &b), x), inside(&a, x) && !inside(&b, x));
        }
    }
}
