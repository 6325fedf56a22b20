//! Connectivity checks between the two sides of a call: STUN Binding requests and responses
//! (RFC 8489) sent from the media socket straight to each of the peer's candidate addresses,
//! as ICE does (RFC 8445), authenticated with a key of the call's key exchange.
//!
//! A request is a Binding request with, in order, ICE-CONTROLLING (from the caller) or
//! ICE-CONTROLLED (from the callee) with 8 bytes of tie-breaker, USE-CANDIDATE (only when the
//! caller nominates the path), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT; the answer is a Binding
//! success response with the same transaction id, XOR-MAPPED-ADDRESS (where the request came
//! from, as the peer saw it), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT. The integrity key is
//! [`crate::media_crypto::SessionKeys::check_key`]: both sides have it, nobody else does, so a
//! check that verifies came from the peer. A call in clear has no key and its checks carry no
//! integrity (anyone could forge its media anyway).
//!
//! Both sides share the key, so the role attribute is what tells a side its own request
//! (looped back by a NAT, or reaching a host of the same private address at home) from the
//! peer's: a request carrying our own role is not the peer's.
//!
//! Nothing here allocates or panics on what arrives.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::stun::{
    self, put_attr_header, put_fingerprint, read_address, write_address, write_header, StunError,
    TransactionId, ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_USE_CANDIDATE,
    ATTR_XOR_MAPPED_ADDRESS, BINDING_REQUEST, BINDING_SUCCESS, HEADER_LEN,
};

/// ICE-CONTROLLED and ICE-CONTROLLING (RFC 8445 §16.1).
const ATTR_ICE_CONTROLLED: u16 = 0x8029;
const ATTR_ICE_CONTROLLING: u16 = 0x802A;

/// Bytes of the integrity key.
pub const CHECK_KEY_LEN: usize = 32;
/// Longest check message written here (a request with role, nomination, integrity and
/// fingerprint is 20 + 12 + 4 + 36 + 8 = 80 bytes; a response with an IPv6 address 88).
pub const MAX_CHECK_LEN: usize = 96;
/// Bytes of a MESSAGE-INTEGRITY-SHA256 value.
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A check message that arrived and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The peer checks the path from `from`; `nominate` asks us to use it. `controlling`:
    /// sent by the caller (`None`: no role attribute).
    Request {
        id: [u8; 12],
        nominate: bool,
        controlling: Option<bool>,
    },
    /// The peer answers our request `id`: it saw it come from `mapped`.
    Response { id: [u8; 12], mapped: SocketAddr },
}

/// Writes a check request; returns its length.
pub fn write_request(
    id: [u8; 12],
    (controlling, nominate): (bool, bool),
    key: Option<&[u8; CHECK_KEY_LEN]>,
    out: &mut [u8; MAX_CHECK_LEN],
) -> usize {
    write_header(out, BINDING_REQUEST, TransactionId::Modern(id), 0);
    let role = if controlling {
        ATTR_ICE_CONTROLLING
    } else {
        ATTR_ICE_CONTROLLED
    };
    let at = put_attr_header(out, HEADER_LEN, role, 8);
    // The tie-breaker settles role conflicts in ICE; here the roles come from the call, so
    // any value does: the id's first bytes.
    out[at..at + 8].copy_from_slice(&id[..8]);
    let mut len = at + 8;
    if nominate {
        len = put_attr_header(out, len, ATTR_USE_CANDIDATE, 0);
    }
    finish(out, len, key)
}

/// Writes the answer to request `id`, which came from `mapped`; returns its length.
pub fn write_response(
    id: [u8; 12],
    mapped: SocketAddr,
    key: Option<&[u8; CHECK_KEY_LEN]>,
    out: &mut [u8; MAX_CHECK_LEN],
) -> usize {
    write_header(out, BINDING_SUCCESS, TransactionId::Modern(id), 0);
    let at = put_attr_header(out, HEADER_LEN, ATTR_XOR_MAPPED_ADDRESS, 0);
    let n = write_address(&mut out[at..], mapped, Some(id));
    out[at - 2..at].copy_from_slice(&(n as u16).to_be_bytes());
    finish(out, at + n, key)
}

/// Appends the integrity (when keyed) and the fingerprint to the message of `len` bytes.
fn finish(out: &mut [u8; MAX_CHECK_LEN], len: usize, key: Option<&[u8; CHECK_KEY_LEN]>) -> usize {
    let mut len = len;
    if let Some(key) = key {
        // RFC 8489 §14.6: the header's length counts up to the end of the integrity attribute.
        set_length(out, len + 4 + MAC_LEN);
        let mac = mac_over(key, &out[..len]);
        let at = put_attr_header(out, len, ATTR_MESSAGE_INTEGRITY_SHA256, MAC_LEN);
        out[at..at + MAC_LEN].copy_from_slice(&mac);
        len = at + MAC_LEN;
    } else {
        set_length(out, len);
    }
    put_fingerprint(out, len)
}

/// Sets the header's attribute length for a message of `total` bytes.
fn set_length(out: &mut [u8], total: usize) {
    out[2..4].copy_from_slice(&((total - HEADER_LEN) as u16).to_be_bytes());
}

fn mac_over(key: &[u8; CHECK_KEY_LEN], message: &[u8]) -> [u8; MAC_LEN] {
    // HMAC takes keys of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Why a STUN datagram is not a check we take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Stun(#[from] StunError),
    #[error("not a Binding request or success response")]
    NotACheck,
    #[error("the message integrity is missing or wrong")]
    Integrity,
    #[error("a response without a mapped address")]
    NoAddress,
}

/// Reads a check message, verifying its integrity with `key` (a keyed call takes nothing
/// without it; a call in clear takes messages with or without one, unchecked).
pub fn parse(datagram: &[u8], key: Option<&[u8; CHECK_KEY_LEN]>) -> Result<Check, CheckError> {
    let msg = stun::parse(datagram)?;
    let TransactionId::Modern(id) = msg.id else {
        return Err(CheckError::NotACheck);
    };
    let mut nominate = false;
    let mut controlling = None;
    let mut mapped = None;
    let mut verified = key.is_none();
    let mut offset = HEADER_LEN;
    for attr in stun::attributes(msg.attributes) {
        let (kind, value) = attr?;
        match kind {
            ATTR_USE_CANDIDATE => nominate = true,
            ATTR_ICE_CONTROLLING => controlling = Some(true),
            ATTR_ICE_CONTROLLED => controlling = Some(false),
            ATTR_XOR_MAPPED_ADDRESS => mapped = read_address(value, Some(id)),
            ATTR_MESSAGE_INTEGRITY_SHA256 => {
                if let Some(key) = key {
                    verified = verify(datagram, offset, value, key);
                }
                // Nothing after the integrity counts but the fingerprint (RFC 8489 §14.6).
                break;
            }
            ATTR_FINGERPRINT => break,
            _ => {}
        }
        offset += 4 + value.len().div_ceil(4) * 4;
    }
    if !verified {
        return Err(CheckError::Integrity);
    }
    match msg.method_class {
        BINDING_REQUEST => Ok(Check::Request {
            id,
            nominate,
            controlling,
        }),
        BINDING_SUCCESS => Ok(Check::Response {
            id,
            mapped: mapped.ok_or(CheckError::NoAddress)?,
        }),
        _ => Err(CheckError::NotACheck),
    }
}

/// Whether the integrity value at `offset` (its attribute header's position) is right.
fn verify(datagram: &[u8], offset: usize, value: &[u8], key: &[u8; CHECK_KEY_LEN]) -> bool {
    if value.len() != MAC_LEN {
        return false;
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&datagram[..HEADER_LEN]);
    set_length(&mut header, offset + 4 + MAC_LEN);
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&header);
    mac.update(&datagram[HEADER_LEN..offset]);
    mac.verify_slice(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_keyed_request_and_response_read_back() {
        let mut buf = [0u8; MAX_CHECK_LEN];
        let n = write_request([1; 12], (true, true), Some(&KEY), &mut buf);
        assert_eq!(
            parse(&buf[..n], Some(&KEY)),
            Ok(Check::Request {
                id: [1; 12],
                nominate: true,
                controlling: Some(true)
            })
        );
        let n = write_request([2; 12], (false, false), Some(&KEY), &mut buf);
        assert_eq!(
            parse(&buf[..n], Some(&KEY)),
            Ok(Check::Request {
                id: [2; 12],
                nominate: false,
                controlling: Some(false)
            })
        );
        for mapped in ["203.0.113.7:40000", "[2001:db8::1]:5"] {
            let mapped: SocketAddr = mapped.parse().unwrap();
            let n = write_response([3; 12], mapped, Some(&KEY), &mut buf);
            assert_eq!(
                parse(&buf[..n], Some(&KEY)),
                Ok(Check::Response {
                    id: [3; 12],
                    mapped
                })
            );
        }
    }

    #[test]
    fn a_wrong_key_a_missing_integrity_or_a_changed_byte_is_refused() {
        let mut buf = [0u8; MAX_CHECK_LEN];
        let n = write_request([1; 12], (true, true), Some(&KEY), &mut buf);
        assert_eq!(parse(&buf[..n], Some(&[8; 32])), Err(CheckError::Integrity));
        let mut plain = [0u8; MAX_CHECK_LEN];
        let m = write_request([1; 12], (true, true), None, &mut plain);
        assert_eq!(parse(&plain[..m], Some(&KEY)), Err(CheckError::Integrity));
        // A flipped transaction-id bit: the fingerprint catches it first; with the
        // fingerprint redone, the integrity does.
        let mut forged = buf;
        forged[10] ^= 1;
        let fixed = put_fingerprint(&mut forged, n - 8);
        assert_eq!(
            parse(&forged[..fixed], Some(&KEY)),
            Err(CheckError::Integrity)
        );
    }

    #[test]
    fn a_call_in_clear_takes_checks_without_integrity() {
        let mut buf = [0u8; MAX_CHECK_LEN];
        let n = write_request([9; 12], (false, false), None, &mut buf);
        assert!(matches!(
            parse(&buf[..n], None),
            Ok(Check::Request {
                nominate: false,
                ..
            })
        ));
    }

    #[test]
    fn the_integrity_is_the_rfc_8489_one() {
        // Recomputed independently of `finish`: HMAC-SHA256 over the message before the
        // attribute, with the header length pointing at the end of the attribute.
        let mut buf = [0u8; MAX_CHECK_LEN];
        let n = write_request([5; 12], (true, false), Some(&KEY), &mut buf);
        let mi_at = n - 8 - 36;
        assert_eq!(&buf[mi_at..mi_at + 2], &0x001Cu16.to_be_bytes());
        let mut copy = buf[..mi_at].to_vec();
        copy[2..4].copy_from_slice(&((mi_at + 36 - 20) as u16).to_be_bytes());
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&KEY).unwrap();
        mac.update(&copy);
        assert_eq!(
            &buf[mi_at + 4..mi_at + 36],
            &mac.finalize().into_bytes()[..]
        );
    }

    proptest! {
        #[test]
        fn any_datagram_is_parsed_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes, Some(&KEY));
            let _ = parse(&bytes, None);
        }
    }
}
