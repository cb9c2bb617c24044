//! Crypto-PAn: prefix-preserving address anonymization (Xu, Fan, Ammar, Moon: "Prefix-Preserving
//! IP Address Anonymization", ICNP 2002), as the authors' reference implementation computes it
//! for IPv4, and its direct extension to the 128 bits of IPv6.
//!
//! Bit `i` of the image is bit `i` of the address XOR the first bit of
//! `AES(first i bits of the address, then the pad's bits from i on)`: it depends only on the
//! bits before it, so two addresses that share a k-bit prefix have images that share a k-bit
//! prefix, and no more when they differ in bit k (the image of a differing bit differs too).
//! The pad is the AES image of the key's second half.
//!
//! Cost: one AES block per address bit, 32 for IPv4 and 128 for IPv6, encrypted together. On the
//! development VM (AES-NI, release build): 0.14 µs per IPv4 address, 0.37 µs per IPv6 address.
//! Fine for an exporter thread, not meant for the packet path.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};

/// A keyed Crypto-PAn anonymizer. Its `Debug` shows no key material.
#[derive(Clone)]
pub struct CryptoPan {
    cipher: Aes128,
    /// The 128-bit pad, big-endian: completes each cipher input after the address's prefix.
    pad: u128,
}

impl CryptoPan {
    /// The anonymizer of a 32-byte key: the first 16 bytes are the AES key, the AES image of the
    /// last 16 the pad (as in the reference implementation). The same key gives the same images
    /// everywhere, so keep it secret and share it only with whoever may link records across
    /// exports.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut aes_key = [0; 16];
        let mut pad_seed = [0; 16];
        aes_key.copy_from_slice(&key[..16]);
        pad_seed.copy_from_slice(&key[16..]);
        let cipher = Aes128::new(&Array::from(aes_key));
        let pad = encrypt(&cipher, u128::from_be_bytes(pad_seed));
        Self { cipher, pad }
    }

    pub fn anonymize_ipv4(&self, address: Ipv4Addr) -> Ipv4Addr {
        // The address takes the first 32 bits of the block, as in the reference implementation.
        let top_aligned = u128::from(address.to_bits()) << 96;
        Ipv4Addr::from_bits((self.anonymize_prefix_bits::<32>(top_aligned) >> 96) as u32)
    }

    pub fn anonymize_ipv6(&self, address: Ipv6Addr) -> Ipv6Addr {
        Ipv6Addr::from_bits(self.anonymize_prefix_bits::<128>(address.to_bits()))
    }

    /// The image of the first `BITS` bits of `original` (the rest are zero).
    fn anonymize_prefix_bits<const BITS: usize>(&self, original: u128) -> u128 {
        const { assert!(BITS <= 128) };
        // The cipher inputs depend on the original only, not on each other's outputs: encrypting
        // them together lets AES-NI pipeline the blocks (IPv6: 0.37 µs instead of 2.7 µs one by
        // one).
        let mut blocks = [Array::default(); BITS];
        for (position, block) in blocks.iter_mut().enumerate() {
            let prefix_mask = match position {
                0 => 0,
                _ => u128::MAX << (128 - position),
            };
            let input = (original & prefix_mask) | (self.pad & !prefix_mask);
            *block = Array::from(input.to_be_bytes());
        }
        self.cipher.encrypt_blocks(&mut blocks);
        let mut flips = 0;
        for (position, block) in blocks.iter().enumerate() {
            let first_output_bit = u128::from(block[0] >> 7);
            flips |= first_output_bit << (127 - position);
        }
        original ^ flips
    }
}

fn encrypt(cipher: &Aes128, block: u128) -> u128 {
    let mut block = Array::from(block.to_be_bytes());
    cipher.encrypt_block(&mut block);
    u128::from_be_bytes(block.into())
}

impl fmt::Debug for CryptoPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CryptoPan { .. }")
    }
}
