//! nix32: the base-32 encoding of store path hashes and Nix hash strings.
//!
//! It is not RFC 4648: the alphabet omits `e o u t` and the first character
//! carries the *highest* bits of the last byte (Nix walks the digits from
//! the end). Decoding is strict: a string that no byte sequence encodes to
//! (e.g. `"zz"` for one byte) is refused, so that every hash has one spelling.

use thiserror::Error;

/// The 32 digits, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("invalid nix32 character {0:?} at position {1} (allowed: {alphabet})", alphabet = std::str::from_utf8(ALPHABET).unwrap())]
    BadChar(char, usize),
    #[error("nix32 string has length {0}, which no byte string encodes to")]
    BadLength(usize),
    #[error("nix32 string is not canonical: its high bits overflow the decoded length")]
    NonCanonical,
}

/// Number of nix32 characters for `n` bytes: ceil(8n/5).
pub const fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

/// Encode bytes as nix32.
pub fn encode(bytes: &[u8]) -> String {
    let n = bytes.len();
    let len = encoded_len(n);
    let mut out = String::with_capacity(len);
    for k in (0..len).rev() {
        let b = k * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = bytes[i] >> j;
        let hi = if i + 1 < n {
            ((bytes[i + 1] as u16) << (8 - j)) as u8
        } else {
            0
        };
        out.push(ALPHABET[((lo | hi) & 31) as usize] as char);
    }
    out
}

fn digit_value(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Decode a nix32 string of exactly `encoded_len(n)` characters into `n` bytes.
pub fn decode_len(s: &str, n: usize) -> Result<Vec<u8>, DecodeError> {
    if s.len() != encoded_len(n) {
        return Err(DecodeError::BadLength(s.len()));
    }
    decode(s).and_then(|v| {
        if v.len() == n {
            Ok(v)
        } else {
            Err(DecodeError::BadLength(s.len()))
        }
    })
}

/// Decode a nix32 string. The byte length is the largest `n` with
/// `encoded_len(n) == s.len()`; a length no `n` maps to is refused.
pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    let len = s.len();
    let n = len * 5 / 8;
    if encoded_len(n) != len {
        return Err(DecodeError::BadLength(len));
    }
    let mut out = vec![0u8; n];
    for (pos, c) in s.bytes().enumerate() {
        let digit = digit_value(c)
            .ok_or_else(|| DecodeError::BadChar(s[pos..].chars().next().unwrap_or('?'), pos))?;
        let k = len - 1 - pos;
        let b = k * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= digit << j;
        let carry = (digit as u16) >> (8 - j);
        if carry != 0 {
            if i + 1 < n {
                out[i + 1] |= carry as u8;
            } else {
                return Err(DecodeError::NonCanonical);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn vectors_from_formats_md() {
        assert_eq!(encode(&[0x1f]), "0z");
        let h = hex::decode("8a12321522fd91efbd60ebb2481af88580f61600").unwrap();
        assert_eq!(encode(&h), "00bgd045z0d4icpbc2yyz4gx48ak44la");
        let abc = Sha256::digest(b"abc");
        assert_eq!(
            encode(&abc),
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
    }

    #[test]
    fn decode_round_trips_vectors() {
        let h = hex::decode("8a12321522fd91efbd60ebb2481af88580f61600").unwrap();
        assert_eq!(decode("00bgd045z0d4icpbc2yyz4gx48ak44la").unwrap(), h);
        assert_eq!(decode("0z").unwrap(), vec![0x1f]);
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn decode_rejects_non_canonical_and_bad_chars() {
        assert_eq!(decode("zz"), Err(DecodeError::NonCanonical));
        assert_eq!(decode("8z"), Err(DecodeError::NonCanonical));
        assert!(matches!(decode("0e"), Err(DecodeError::BadChar('e', 1))));
        assert!(matches!(decode("0u"), Err(DecodeError::BadChar('u', 1))));
        assert_eq!(decode("0"), Err(DecodeError::BadLength(1)));
        assert_eq!(decode_len("0z", 2), Err(DecodeError::BadLength(2)));
    }

    #[test]
    fn every_single_byte_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(decode(&encode(&[b])).unwrap(), vec![b]);
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let s = encode(&bytes);
            proptest::prop_assert_eq!(s.len(), encoded_len(bytes.len()));
            proptest::prop_assert_eq!(decode(&s).unwrap(), bytes);
        }
    }
}
