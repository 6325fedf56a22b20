//! STUN Binding (RFC 8489), without I/O: what a client sends to learn the address its
//! packets come from (its server-reflexive address, as the NAT in front of it maps it), and
//! how a server answers.
//!
//! Only Binding is spoken. A server answers a request with the source address it saw, in
//! XOR-MAPPED-ADDRESS (and, for RFC 3489 clients that send no magic cookie, in
//! MAPPED-ADDRESS), followed by a FINGERPRINT; a request carrying a comprehension-required
//! attribute this code does not know gets error 420 with UNKNOWN-ATTRIBUTES, as §6.3.1 asks.
//! Nothing here panics or allocates on what arrives: every length is checked against the
//! datagram.
//!
//! STUN shares a UDP port with RTP and RTCP: its first byte is 0–3, theirs 128–191 (RFC 7983).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The magic cookie of RFC 5389 and later (absent from RFC 3489 messages).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The longest message written here (a response with both address attributes and a
/// fingerprint, or a 420 listing a few attributes), with room to spare.
pub const MAX_RESPONSE_LEN: usize = 128;

pub(crate) const BINDING_REQUEST: u16 = 0x0001;
pub(crate) const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;

const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
const ATTR_REALM: u16 = 0x0014;
const ATTR_NONCE: u16 = 0x0015;
pub(crate) const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const ATTR_USERHASH: u16 = 0x001E;
pub(crate) const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_PRIORITY: u16 = 0x0024;
pub(crate) const ATTR_USE_CANDIDATE: u16 = 0x0025;
pub(crate) const ATTR_FINGERPRINT: u16 = 0x8028;

/// XORed into the CRC-32 of a FINGERPRINT ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Most unknown attributes listed in a 420 (the rest are left out).
const MAX_UNKNOWN_LISTED: usize = 8;

/// Why a datagram is not a STUN message this code takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("not a STUN message (first two bits)")]
    NotStun,
    #[error("the length field does not match the datagram")]
    BadLength,
    #[error("an attribute runs past the end")]
    BadAttribute,
    #[error("the fingerprint does not match")]
    BadFingerprint,
    #[error("not a Binding request")]
    NotBindingRequest,
    #[error("not an answer to our request")]
    NotOurs,
    #[error("no usable address in the answer")]
    NoAddress,
    #[error("the output buffer is too small")]
    BufferTooSmall,
}

/// Whether a datagram on a shared media port is STUN rather than RTP or RTCP (RFC 7983: the
/// first byte is 0–3).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| *b < 4)
}

/// A STUN transaction id: 12 bytes after the cookie (RFC 8489), or the 16 bytes of an RFC 3489
/// message, which has no cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionId {
    Modern([u8; 12]),
    Classic([u8; 16]),
}

/// One parsed message's header and where its attributes are.
pub(crate) struct Parsed<'a> {
    pub method_class: u16,
    pub id: TransactionId,
    pub attributes: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Attributes as (type, value), stopping at the first malformed one (reported as an error
/// by the caller's `try` of the iterator's result).
pub(crate) fn attributes(mut rest: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), StunError>> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < 4 {
            rest = &[];
            return Some(Err(StunError::BadAttribute));
        }
        let kind = be16(rest, 0);
        let len = usize::from(be16(rest, 2));
        let padded = len.div_ceil(4) * 4;
        if rest.len() < 4 + padded {
            rest = &[];
            return Some(Err(StunError::BadAttribute));
        }
        let value = &rest[4..4 + len];
        rest = &rest[4 + padded..];
        Some(Ok((kind, value)))
    })
}

pub(crate) fn parse(datagram: &[u8]) -> Result<Parsed<'_>, StunError> {
    if datagram.len() < HEADER_LEN {
        return Err(StunError::TooShort);
    }
    if !is_stun(datagram) {
        return Err(StunError::NotStun);
    }
    let method_class = be16(datagram, 0);
    let len = usize::from(be16(datagram, 2));
    if len % 4 != 0 || HEADER_LEN + len != datagram.len() {
        return Err(StunError::BadLength);
    }
    let id = if be32(datagram, 4) == MAGIC_COOKIE {
        let mut id = [0; 12];
        id.copy_from_slice(&datagram[8..20]);
        TransactionId::Modern(id)
    } else {
        let mut id = [0; 16];
        id.copy_from_slice(&datagram[4..20]);
        TransactionId::Classic(id)
    };
    let attrs = &datagram[HEADER_LEN..];
    // Every attribute well formed; a fingerprint, if any, last and right.
    let mut offset = HEADER_LEN;
    for attr in attributes(attrs) {
        let (kind, value) = attr?;
        if kind == ATTR_FINGERPRINT {
            let end = offset + 8;
            if end != datagram.len() || value.len() != 4 {
                return Err(StunError::BadFingerprint);
            }
            if be32(value, 0) != crc32fast::hash(&datagram[..offset]) ^ FINGERPRINT_XOR {
                return Err(StunError::BadFingerprint);
            }
        }
        offset += 4 + value.len().div_ceil(4) * 4;
    }
    Ok(Parsed {
        method_class,
        id,
        attributes: attrs,
    })
}

/// Writes the header of a message with `attr_len` bytes of attributes to follow.
pub(crate) fn write_header(out: &mut [u8], method_class: u16, id: TransactionId, attr_len: usize) {
    out[0..2].copy_from_slice(&method_class.to_be_bytes());
    out[2..4].copy_from_slice(&(attr_len as u16).to_be_bytes());
    match id {
        TransactionId::Modern(id) => {
            out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            out[8..20].copy_from_slice(&id);
        }
        TransactionId::Classic(id) => out[4..20].copy_from_slice(&id),
    }
}

/// Writes an address attribute's value (family, port, address), XORed for
/// XOR-MAPPED-ADDRESS; returns its length.
pub(crate) fn write_address(out: &mut [u8], addr: SocketAddr, xor: Option<[u8; 12]>) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&cookie);
    if let Some(id) = xor {
        mask[4..].copy_from_slice(&id);
    }
    let port = match xor {
        Some(_) => addr.port() ^ (MAGIC_COOKIE >> 16) as u16,
        None => addr.port(),
    };
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = if xor.is_some() { b ^ mask[i] } else { *b };
            }
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = if xor.is_some() { b ^ mask[i] } else { *b };
            }
            20
        }
    }
}

/// Reads an address attribute's value, undoing the XOR for XOR-MAPPED-ADDRESS.
pub(crate) fn read_address(value: &[u8], xor: Option<[u8; 12]>) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    if let Some(id) = xor {
        mask[4..].copy_from_slice(&id);
    }
    let x = xor.is_some();
    let port = be16(value, 2) ^ if x { (MAGIC_COOKIE >> 16) as u16 } else { 0 };
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = value[4 + i] ^ if x { mask[i] } else { 0 };
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (0x02, 20) => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = value[4 + i] ^ if x { mask[i] } else { 0 };
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Appends an attribute header for `len` value bytes at `at`; returns the value's range start.
pub(crate) fn put_attr_header(out: &mut [u8], at: usize, kind: u16, len: usize) -> usize {
    out[at..at + 2].copy_from_slice(&kind.to_be_bytes());
    out[at + 2..at + 4].copy_from_slice(&(len as u16).to_be_bytes());
    at + 4
}

/// Appends a FINGERPRINT to the message of `len` bytes in `out` (fixing the header's length
/// first, as the CRC covers it); returns the new length.
pub(crate) fn put_fingerprint(out: &mut [u8], len: usize) -> usize {
    let total_attrs = len + 8 - HEADER_LEN;
    out[2..4].copy_from_slice(&(total_attrs as u16).to_be_bytes());
    let crc = crc32fast::hash(&out[..len]) ^ FINGERPRINT_XOR;
    let at = put_attr_header(out, len, ATTR_FINGERPRINT, 4);
    out[at..at + 4].copy_from_slice(&crc.to_be_bytes());
    len + 8
}

/// The attributes a server without authentication may meet in a Binding request and
/// ignore (the ones ICE and the long-term credential mechanism add).
fn known(kind: u16) -> bool {
    matches!(
        kind,
        ATTR_MAPPED_ADDRESS
            | ATTR_USERNAME
            | ATTR_MESSAGE_INTEGRITY
            | ATTR_MESSAGE_INTEGRITY_SHA256
            | ATTR_REALM
            | ATTR_NONCE
            | ATTR_USERHASH
            | ATTR_XOR_MAPPED_ADDRESS
            | ATTR_PRIORITY
            | ATTR_USE_CANDIDATE
    )
}

/// A server's answer to a datagram from `from`: for a Binding request, the success response
/// with `from` as the mapped address (or a 420 for unknown comprehension-required
/// attributes), written to `out`; returns its length. Anything else (responses, indications,
/// other methods, malformed messages) gets no answer, as RFC 8489 says.
pub fn answer_binding(
    datagram: &[u8],
    from: SocketAddr,
    out: &mut [u8; MAX_RESPONSE_LEN],
) -> Result<usize, StunError> {
    let msg = parse(datagram)?;
    if msg.method_class != BINDING_REQUEST {
        return Err(StunError::NotBindingRequest);
    }
    let mut unknown = [0u16; MAX_UNKNOWN_LISTED];
    let mut n_unknown = 0;
    for (kind, _) in attributes(msg.attributes).flatten() {
        if kind < 0x8000 && !known(kind) && n_unknown < MAX_UNKNOWN_LISTED {
            unknown[n_unknown] = kind;
            n_unknown += 1;
        }
    }
    let mut len = HEADER_LEN;
    if n_unknown > 0 {
        // ERROR-CODE 420 "Unknown Attribute", then the list (padded to 4 bytes).
        let reason = b"Unknown Attribute";
        let at = put_attr_header(out, len, ATTR_ERROR_CODE, 4 + reason.len());
        out[at..at + 4].copy_from_slice(&[0, 0, 4, 20]);
        out[at + 4..at + 4 + reason.len()].copy_from_slice(reason);
        len = at + (4 + reason.len()).div_ceil(4) * 4;
        out[at + 4 + reason.len()..len].fill(0);
        let at = put_attr_header(out, len, ATTR_UNKNOWN_ATTRIBUTES, 2 * n_unknown);
        for (i, kind) in unknown[..n_unknown].iter().enumerate() {
            out[at + 2 * i..at + 2 * i + 2].copy_from_slice(&kind.to_be_bytes());
        }
        let end = at + (2 * n_unknown).div_ceil(4) * 4;
        out[at + 2 * n_unknown..end].fill(0);
        len = end;
        write_header(out, BINDING_ERROR, msg.id, len - HEADER_LEN);
    } else {
        match msg.id {
            TransactionId::Modern(id) => {
                let at = put_attr_header(out, len, ATTR_XOR_MAPPED_ADDRESS, 0);
                let n = write_address(&mut out[at..], from, Some(id));
                put_attr_header(out, len, ATTR_XOR_MAPPED_ADDRESS, n);
                len = at + n;
            }
            TransactionId::Classic(_) => {
                let at = put_attr_header(out, len, ATTR_MAPPED_ADDRESS, 0);
                let n = write_address(&mut out[at..], from, None);
                put_attr_header(out, len, ATTR_MAPPED_ADDRESS, n);
                len = at + n;
            }
        }
        write_header(out, BINDING_SUCCESS, msg.id, len - HEADER_LEN);
    }
    if matches!(msg.id, TransactionId::Modern(_)) {
        len = put_fingerprint(out, len);
    }
    Ok(len)
}

/// Writes a Binding request with transaction id `id` (and a FINGERPRINT); returns its length.
pub fn binding_request(id: [u8; 12], out: &mut [u8; MAX_RESPONSE_LEN]) -> usize {
    write_header(out, BINDING_REQUEST, TransactionId::Modern(id), 0);
    put_fingerprint(out, HEADER_LEN)
}

/// The mapped address in the success response to our request `id`.
pub fn binding_response_address(datagram: &[u8], id: [u8; 12]) -> Result<SocketAddr, StunError> {
    let msg = parse(datagram)?;
    if msg.method_class != BINDING_SUCCESS || msg.id != TransactionId::Modern(id) {
        return Err(StunError::NotOurs);
    }
    let mut mapped = None;
    for attr in attributes(msg.attributes) {
        match attr? {
            (ATTR_XOR_MAPPED_ADDRESS, v) => {
                return read_address(v, Some(id)).ok_or(StunError::NoAddress)
            }
            (ATTR_MAPPED_ADDRESS, v) => mapped = read_address(v, None),
            _ => {}
        }
    }
    mapped.ok_or(StunError::NoAddress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 5769 §2.1: a sample request (with USERNAME, MESSAGE-INTEGRITY and SOFTWARE).
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    /// RFC 5769 §2.2: the IPv4 response's XOR-MAPPED-ADDRESS value, for 192.0.2.1:32853.
    const RFC5769_XOR_ADDRESS_V4: [u8; 8] = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];

    #[test]
    fn the_rfc5769_request_is_answered_with_its_address() {
        let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let n = answer_binding(&RFC5769_REQUEST, from, &mut out).unwrap();
        // Success, the request's transaction id, XOR-MAPPED-ADDRESS as in the RFC's sample
        // response, then a fingerprint that checks.
        assert_eq!(&out[0..2], &[0x01, 0x01]);
        assert_eq!(&out[4..20], &RFC5769_REQUEST[4..20]);
        assert_eq!(&out[20..24], &[0x00, 0x20, 0x00, 0x08]);
        assert_eq!(&out[24..32], &RFC5769_XOR_ADDRESS_V4);
        let mut id = [0; 12];
        id.copy_from_slice(&RFC5769_REQUEST[8..20]);
        assert_eq!(binding_response_address(&out[..n], id), Ok(from));
    }

    #[test]
    fn our_request_and_an_ipv6_answer_round_trip() {
        let id = [7u8; 12];
        let mut req = [0u8; MAX_RESPONSE_LEN];
        let n = binding_request(id, &mut req);
        assert_eq!(n, 28);
        assert!(is_stun(&req[..n]));
        let from: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let m = answer_binding(&req[..n], from, &mut out).unwrap();
        assert_eq!(binding_response_address(&out[..m], id), Ok(from));
        assert_eq!(
            binding_response_address(&out[..m], [8; 12]),
            Err(StunError::NotOurs)
        );
        // A flipped bit breaks the fingerprint.
        out[25] ^= 1;
        assert_eq!(
            binding_response_address(&out[..m], id),
            Err(StunError::BadFingerprint)
        );
    }

    #[test]
    fn a_classic_rfc3489_request_gets_mapped_address() {
        let mut req = [0u8; 20];
        req[1] = 0x01;
        req[4..20].copy_from_slice(&[9; 16]);
        let from: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let n = answer_binding(&req, from, &mut out).unwrap();
        assert_eq!(n, 32, "no fingerprint for a classic client");
        assert_eq!(&out[4..20], &[9; 16]);
        assert_eq!(&out[20..24], &[0x00, 0x01, 0x00, 0x08]);
        assert_eq!(&out[24..32], &[0, 1, 0x0f, 0xa0, 203, 0, 113, 5]);
    }

    #[test]
    fn an_unknown_required_attribute_gets_420_and_others_get_nothing() {
        let mut req = [0u8; MAX_RESPONSE_LEN];
        write_header(&mut req, BINDING_REQUEST, TransactionId::Modern([1; 12]), 8);
        req[20..24].copy_from_slice(&[0x00, 0x77, 0x00, 0x04]);
        let from: SocketAddr = "198.51.100.1:9".parse().unwrap();
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let n = answer_binding(&req[..28], from, &mut out).unwrap();
        assert_eq!(&out[0..2], &[0x01, 0x11]);
        assert_eq!(&out[24..28], &[0, 0, 4, 20]);
        assert!(out[..n].windows(4).any(|w| w == [0x00, 0x0a, 0x00, 0x02]));
        assert!(
            parse(&out[..n]).is_ok(),
            "well formed, fingerprint included"
        );
        // A response, an indication, RTP: no answer.
        let mut resp = req;
        resp[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        assert!(answer_binding(&resp[..20], from, &mut out).is_err());
        let rtp = [0x80u8; 40];
        assert_eq!(
            answer_binding(&rtp, from, &mut out),
            Err(StunError::NotStun)
        );
        // A length field that does not match.
        let mut bad = req;
        bad[3] = 12;
        assert_eq!(
            answer_binding(&bad[..28], from, &mut out),
            Err(StunError::BadLength)
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = [0u8; MAX_RESPONSE_LEN];
            let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
            let _ = answer_binding(&bytes, from, &mut out);
            let _ = binding_response_address(&bytes, [0; 12]);
        }

        /// Headers that pass the first checks, with attributes that may lie about lengths.
        #[test]
        fn never_panics_past_the_header(
            kind: u16,
            classic: bool,
            attrs in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut msg = vec![0u8; 20];
            msg[0..2].copy_from_slice(&(kind & 0x3fff).to_be_bytes());
            let len = attrs.len() / 4 * 4;
            msg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            if !classic {
                msg[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            msg.extend_from_slice(&attrs[..len]);
            let mut out = [0u8; MAX_RESPONSE_LEN];
            let from: SocketAddr = "[::1]:1".parse().unwrap();
            if let Ok(n) = answer_binding(&msg, from, &mut out) {
                prop_assert!(n <= MAX_RESPONSE_LEN);
            }
        }
    }
}
