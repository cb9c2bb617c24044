//! The 32-bit table entry shared by both families.
//!
//! The two high bits say what an entry is, the low 30 bits carry its payload:
//! - `0`: no route covers the slot;
//! - `RESULT_FLAG | next_hop`: the longest prefix covering the slot has value `next_hop`;
//! - `CHILD_FLAG | index`: the slot is decided deeper, by the group or node `index`.

use crate::NextHopIndex;

/// Low bits of an entry: the next hop of a result, or the index of a child.
pub(crate) const PAYLOAD_MASK: u32 = (1 << 30) - 1;
/// Set in entries that hold a route's next hop.
const RESULT_FLAG: u32 = 1 << 30;
/// Set in entries that point to a deeper group or node.
const CHILD_FLAG: u32 = 1 << 31;

/// The entry of a slot no route covers.
pub(crate) const NO_ROUTE: u32 = 0;

/// Entry holding `next_hop`, which the caller has checked against `NEXT_HOP_INDEX_MAX`.
#[inline]
pub(crate) const fn result(next_hop: NextHopIndex) -> u32 {
    RESULT_FLAG | (next_hop & PAYLOAD_MASK)
}

/// Entry pointing to child `index`, or `None` when the index does not fit in the payload.
#[inline]
pub(crate) fn child(index: usize) -> Option<u32> {
    let index = u32::try_from(index).ok()?;
    (index <= PAYLOAD_MASK).then_some(CHILD_FLAG | index)
}

/// The child index of `entry`, or `None` when it is a result.
#[inline]
pub(crate) const fn child_index(entry: u32) -> Option<usize> {
    if entry & CHILD_FLAG != 0 {
        Some((entry & PAYLOAD_MASK) as usize)
    } else {
        None
    }
}

/// The next hop of a result entry (`None` for [`NO_ROUTE`]); only meaningful for non-child entries.
#[inline]
pub(crate) fn next_hop(entry: u32) -> Option<NextHopIndex> {
    (entry & RESULT_FLAG != 0).then_some(entry & PAYLOAD_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_round_trips_every_bit_of_the_payload() {
        for next_hop_value in [0, 1, 0x2aaa_aaaa, PAYLOAD_MASK] {
            let entry = result(next_hop_value);
            assert_eq!(child_index(entry), None);
            assert_eq!(next_hop(entry), Some(next_hop_value));
        }
        assert_eq!(next_hop(NO_ROUTE), None);
        assert_eq!(child_index(NO_ROUTE), None);
    }

    #[test]
    fn child_round_trips_and_rejects_indices_beyond_the_payload() {
        let largest = PAYLOAD_MASK as usize;
        assert_eq!(child(largest).and_then(child_index), Some(largest));
        assert_eq!(child(0).and_then(child_index), Some(0));
        assert_eq!(child(largest + 1), None);
    }
}
