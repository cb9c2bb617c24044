//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` folded to 16 bits, added to `initial` (not complemented).
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold(sum)
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum field value for `data` (whose own checksum field must be zero).
pub fn checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data, 0)
}

/// True when `data`, checksum field included, sums to all ones.
pub fn is_valid(data: &[u8]) -> bool {
    ones_complement_sum(data, 0) == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data changed from `old`
/// to `new`: HC' = ~(~HC + ~m + m').
#[inline]
pub fn update_word(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(u64::from(sum))
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1) for an upper-layer checksum.
pub fn ipv6_pseudo_header_sum(src: &[u8; 16], dst: &[u8; 16], length: u32, next_header: u8) -> u32 {
    let mut sum = u32::from(ones_complement_sum(src, 0));
    sum += u32::from(ones_complement_sum(dst, 0));
    sum += length >> 16;
    sum += length & 0xffff;
    sum += u32::from(next_header);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data, 0), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(ones_complement_sum(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
    }

    proptest! {
        // The incremental update must equal a full recomputation for any data and any change.
        #[test]
        fn incremental_equals_full(mut data in proptest::collection::vec(any::<u8>(), 4..64),
                                   word_index in 0usize..30, new in any::<u16>()) {
            let words = data.len() / 2;
            let index = 1 + word_index % (words - 1); // word 0 holds the checksum
            data[0] = 0;
            data[1] = 0;
            let before = checksum(&data);
            data[..2].copy_from_slice(&before.to_be_bytes());
            let old = u16::from_be_bytes([data[2 * index], data[2 * index + 1]]);
            data[2 * index..2 * index + 2].copy_from_slice(&new.to_be_bytes());
            let incremental = update_word(before, old, new);
            data[0] = 0;
            data[1] = 0;
            let full = checksum(&data);
            // 0x0000 and 0xffff are the same value in one's complement.
            prop_assert!(incremental == full || (incremental ^ full) == 0xffff && (full == 0 || full == 0xffff),
                "incremental {incremental:#06x} full {full:#06x}");
            data[..2].copy_from_slice(&incremental.to_be_bytes());
            prop_assert!(is_valid(&data));
        }
    }
}
