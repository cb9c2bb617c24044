//! Deterministic test data and its fingerprint: both ends of a transfer can produce or check
//! the same bytes without shipping a reference copy.

/// xorshift64 (Marsaglia): fast, deterministic, good enough to make reordered, duplicated or
/// corrupted bytes show up in the hash.
pub(crate) struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    /// A zero state would stay zero forever, so seed 0 is replaced by a fixed odd constant.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// Fills `buffer` eight bytes per step (little endian). The stream is the same however it
    /// is cut into buffers, as long as every buffer but the last has a length divisible by 8.
    pub(crate) fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// FNV-1a, 64 bit: a streaming hash, fed in pieces of any size.
pub(crate) struct Fnv1a64 {
    hash: u64,
}

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Self {
        Self {
            hash: Self::OFFSET_BASIS,
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(bytes: &[u8]) -> u64 {
        let mut hash = Fnv1a64::new();
        hash.update(bytes);
        hash.finish()
    }

    #[test]
    fn fnv1a64_matches_reference_vectors_and_streams() {
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
        let mut pieces = Fnv1a64::new();
        pieces.update(b"foo");
        pieces.update(b"bar");
        assert_eq!(pieces.finish(), fnv(b"foobar"));
    }

    #[test]
    fn xorshift_stream_is_independent_of_buffer_cuts() {
        let mut whole = vec![0u8; 100];
        XorShift64::new(7).fill(&mut whole);
        let mut cut = vec![0u8; 100];
        let mut generator = XorShift64::new(7);
        let (first, rest) = cut.split_at_mut(16);
        generator.fill(first);
        generator.fill(rest);
        assert_eq!(whole, cut);
        assert_ne!(whole[..8], whole[8..16]);
    }

    #[test]
    fn xorshift_never_sticks_at_zero_and_differs_by_seed() {
        let mut zero_seeded = XorShift64::new(0);
        assert_ne!(zero_seeded.next_u64(), 0);
        assert_ne!(XorShift64::new(1).next_u64(), XorShift64::new(2).next_u64());
    }
}
