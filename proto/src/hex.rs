//! Bytes as text: lower-case hex for the keys clients keep in files, and the colon-separated
//! upper-case SHA-256 fingerprint people compare a server's certificate by (the server prints
//! it, clients pin it: both must write it the same way).

use sha2::{Digest, Sha256};

/// `bytes` as lower-case hex, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes written as hex (either case); `None` for anything else.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `AB:CD:…` over SHA-256 of a DER certificate.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_other_lengths_or_digits() {
        let bytes = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(encode(&bytes), "007fabff");
        assert_eq!(decode::<4>("007FABff"), Some(bytes));
        assert_eq!(decode::<4>("007fab"), None);
        assert_eq!(decode::<4>("007fabfg"), None);
        assert_eq!(certificate_fingerprint(b"").len(), 32 * 3 - 1);
    }
}
