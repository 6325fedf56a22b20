//! End-to-end media encryption: an ephemeral X25519 exchange through signaling, HKDF-SHA256,
//! and ChaCha20-Poly1305 over RTP payloads and RTCP bodies.
//!
//! The RTP header stays in clear (and is authenticated as associated data) so packet
//! captures still decode sequence numbers and timestamps while the voice stays private.
//! Each direction has its own key, so nonces never repeat across the two senders; within one
//! direction the nonce is SSRC + extended sequence (RTP) or SSRC + an explicit 32-bit index
//! with a distinct marker byte (RTCP), so the two streams never share a nonce either.
//!
//! The signaling server relays the public keys and could swap them (a man in the middle); the
//! short authentication string lets the two people compare a code by voice to rule that out.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};

/// Length of an X25519 public key as carried in the signaling `key` fields.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Poly1305 tag appended to every encrypted packet.
pub const TAG_LEN: usize = 16;
/// Explicit index appended after the tag of an encrypted RTCP packet.
pub const RTCP_INDEX_LEN: usize = 4;
/// Bytes an encrypted RTCP packet grows by.
pub const RTCP_OVERHEAD: usize = TAG_LEN + RTCP_INDEX_LEN;
/// Domain separation for the key schedule; bump on any change of the scheme.
const HKDF_SALT_LABEL: &[u8] = b"fala media v2";

/// Why a key exchange or a packet failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CryptoError {
    /// The peer's key is not 32 bytes.
    #[error("public key must be 32 bytes")]
    BadPublicKey,
    /// The peer's key is a low-order point: the shared secret would be predictable.
    #[error("peer public key is not contributory")]
    NonContributory,
    /// The OS random generator failed.
    #[error("no randomness available")]
    Random,
    /// Packet too short, or the tag does not match (tampered, wrong key, replay of garbage).
    #[error("packet failed authentication")]
    Auth,
    /// The buffer has no room for the tag.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// Which end of the call we are: fixes the order of the public keys in the key schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent the invite.
    Caller,
    /// Accepted it.
    Callee,
}

/// An ephemeral key pair, made fresh for every call and consumed by [`KeyPair::derive`].
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl KeyPair {
    /// A new key pair from the OS random generator.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Ok(Self::from_secret_bytes(bytes))
    }

    /// A key pair from given secret bytes (tests, or a caller with its own randomness).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public key to put in the signaling message.
    pub fn public_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public.to_bytes()
    }

    /// Runs the exchange with the peer's public key and derives this call's session keys.
    /// `context` is bound into every key and the code: for a call, the caller's identity key
    /// then the callee's (see [`crate::call_keys`]), so the code covers who is talking, not only
    /// the ephemeral keys.
    pub fn derive(
        self,
        role: Role,
        peer_public: &[u8],
        context: &[u8],
    ) -> Result<SessionKeys, CryptoError> {
        let peer: [u8; 32] = peer_public
            .try_into()
            .map_err(|_| CryptoError::BadPublicKey)?;
        let peer = PublicKey::from(peer);
        let shared = self.secret.diffie_hellman(&peer);
        if !shared.was_contributory() {
            return Err(CryptoError::NonContributory);
        }
        let (caller, callee) = match role {
            Role::Caller => (self.public.to_bytes(), peer.to_bytes()),
            Role::Callee => (peer.to_bytes(), self.public.to_bytes()),
        };
        let mut salt = Vec::with_capacity(HKDF_SALT_LABEL.len() + 64 + context.len());
        salt.extend_from_slice(HKDF_SALT_LABEL);
        salt.extend_from_slice(&caller);
        salt.extend_from_slice(&callee);
        salt.extend_from_slice(context);
        let hk = Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes());
        let expand = |label: &[u8], out: &mut [u8]| {
            let mut info = Vec::with_capacity(label.len() + 64);
            info.extend_from_slice(label);
            info.extend_from_slice(&caller);
            info.extend_from_slice(&callee);
            // Lengths here are far below HKDF's 255 * 32 limit.
            hk.expand(&info, out).map_err(|_| CryptoError::Random)
        };
        let mut k_caller = [0u8; 32];
        let mut k_callee = [0u8; 32];
        let mut sas = [0u8; 4];
        expand(b"caller to callee", &mut k_caller)?;
        expand(b"callee to caller", &mut k_callee)?;
        expand(b"sas", &mut sas)?;
        let mut check_key = [0u8; 32];
        expand(b"path checks", &mut check_key)?;
        let (send, recv) = match role {
            Role::Caller => (k_caller, k_callee),
            Role::Callee => (k_callee, k_caller),
        };
        Ok(SessionKeys {
            send: ChaCha20Poly1305::new(Key::from_slice(&send)),
            recv: ChaCha20Poly1305::new(Key::from_slice(&recv)),
            sas: u32::from_be_bytes(sas) % 1_000_000,
            check_key,
        })
    }
}

/// The keys of one call: one cipher per direction and the short authentication string.
#[derive(Clone)]
pub struct SessionKeys {
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
    sas: u32,
    /// Authenticates the connectivity checks of [`crate::path_check`] (both directions).
    check_key: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SessionKeys").finish_non_exhaustive()
    }
}

fn rtp_nonce(ssrc: u32, ext_seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&ssrc.to_be_bytes());
    // 48 bits of extended sequence: 2^48 packets of 20 ms outlast any call.
    n[6..].copy_from_slice(&ext_seq.to_be_bytes()[2..]);
    Nonce::from(n)
}

fn rtcp_nonce(ssrc: u32, index: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&ssrc.to_be_bytes());
    n[4] = 0x80; // RTCP nonce space, disjoint from RTP's (whose byte 4 is always 0)
    n[8..].copy_from_slice(&index.to_be_bytes());
    Nonce::from(n)
}

fn ssrc_at(buf: &[u8], at: usize) -> Result<u32, CryptoError> {
    buf.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(CryptoError::Auth)
}

impl SessionKeys {
    /// The key of the call's connectivity checks ([`crate::path_check`]).
    pub fn check_key(&self) -> &[u8; 32] {
        &self.check_key
    }

    /// The six-digit code both people can read to each other, e.g. `"042 917"`.
    pub fn sas(&self) -> String {
        format!("{:03} {:03}", self.sas / 1000, self.sas % 1000)
    }

    /// Encrypts in place the RTP packet `buf[..len]` whose header is `buf[..header_len]`,
    /// appending the tag; returns the new length. `ext_seq` is the sender's extended sequence.
    pub fn encrypt_rtp(
        &self,
        buf: &mut [u8],
        len: usize,
        header_len: usize,
        ext_seq: u64,
    ) -> Result<usize, CryptoError> {
        if header_len < 12 || header_len > len || buf.len() < len + TAG_LEN {
            return Err(CryptoError::BufferTooSmall);
        }
        let nonce = rtp_nonce(ssrc_at(buf, 8)?, ext_seq);
        let (aad, rest) = buf.split_at_mut(header_len);
        let tag = self
            .send
            .encrypt_in_place_detached(&nonce, aad, &mut rest[..len - header_len])
            .map_err(|_| CryptoError::BufferTooSmall)?;
        buf[len..len + TAG_LEN].copy_from_slice(&tag);
        Ok(len + TAG_LEN)
    }

    /// Decrypts in place an RTP packet received as `buf[..len]`; returns the plaintext length
    /// (header + payload). Fails with [`CryptoError::Auth`] on any mismatch.
    pub fn decrypt_rtp(
        &self,
        buf: &mut [u8],
        len: usize,
        header_len: usize,
        ext_seq: u64,
    ) -> Result<usize, CryptoError> {
        if header_len < 12 || len > buf.len() || len < header_len + TAG_LEN {
            return Err(CryptoError::Auth);
        }
        let nonce = rtp_nonce(ssrc_at(buf, 8)?, ext_seq);
        let body_end = len - TAG_LEN;
        let tag = Tag::clone_from_slice(&buf[body_end..len]);
        let (aad, rest) = buf.split_at_mut(header_len);
        self.recv
            .decrypt_in_place_detached(&nonce, aad, &mut rest[..body_end - header_len], &tag)
            .map_err(|_| CryptoError::Auth)?;
        Ok(body_end)
    }

    /// Encrypts in place an RTCP packet `buf[..len]`: the 8-byte header stays clear as AAD, the
    /// body is encrypted, then tag and `index` (big endian) are appended. Returns the new length.
    pub fn encrypt_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        index: u32,
    ) -> Result<usize, CryptoError> {
        if len < 8 || buf.len() < len + RTCP_OVERHEAD {
            return Err(CryptoError::BufferTooSmall);
        }
        let nonce = rtcp_nonce(ssrc_at(buf, 4)?, index);
        let (aad, rest) = buf.split_at_mut(8);
        let tag = self
            .send
            .encrypt_in_place_detached(&nonce, aad, &mut rest[..len - 8])
            .map_err(|_| CryptoError::BufferTooSmall)?;
        buf[len..len + TAG_LEN].copy_from_slice(&tag);
        buf[len + TAG_LEN..len + RTCP_OVERHEAD].copy_from_slice(&index.to_be_bytes());
        Ok(len + RTCP_OVERHEAD)
    }

    /// Decrypts in place an RTCP packet received as `buf[..len]`; returns the plaintext length.
    pub fn decrypt_rtcp(&self, buf: &mut [u8], len: usize) -> Result<usize, CryptoError> {
        if len > buf.len() || len < 8 + RTCP_OVERHEAD {
            return Err(CryptoError::Auth);
        }
        let index = ssrc_at(buf, len - RTCP_INDEX_LEN)?;
        let nonce = rtcp_nonce(ssrc_at(buf, 4)?, index);
        let body_end = len - RTCP_OVERHEAD;
        let tag = Tag::clone_from_slice(&buf[body_end..body_end + TAG_LEN]);
        let (aad, rest) = buf.split_at_mut(8);
        self.recv
            .decrypt_in_place_detached(&nonce, aad, &mut rest[..body_end - 8], &tag)
            .map_err(|_| CryptoError::Auth)?;
        Ok(body_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{parse, write_packet, RtpHeader};
    use proptest::prelude::*;

    fn pair() -> (SessionKeys, SessionKeys) {
        let a = KeyPair::from_secret_bytes([1; 32]);
        let b = KeyPair::from_secret_bytes([2; 32]);
        let (pa, pb) = (a.public_bytes(), b.public_bytes());
        (
            a.derive(Role::Caller, &pb, &[]).unwrap(),
            b.derive(Role::Callee, &pa, &[]).unwrap(),
        )
    }

    fn rtp(buf: &mut [u8]) -> usize {
        let h = RtpHeader {
            marker: false,
            payload_type: 111,
            sequence: 5,
            timestamp: 960,
            ssrc: 42,
        };
        write_packet(&h, b"hello opus", buf).unwrap()
    }

    #[test]
    fn rtp_roundtrip_keeps_header_clear() {
        let (a, b) = pair();
        let mut buf = [0u8; 64];
        let n = rtp(&mut buf);
        let plain = buf;
        let m = a.encrypt_rtp(&mut buf, n, 12, 0x1_0005).unwrap();
        assert_eq!(m, n + TAG_LEN);
        assert_eq!(buf[..12], plain[..12]);
        assert_ne!(&buf[12..n], &plain[12..n]);
        assert_eq!(parse(&buf[..m]).unwrap().header.sequence, 5);
        let k = b.decrypt_rtp(&mut buf, m, 12, 0x1_0005).unwrap();
        assert_eq!(&buf[..k], &plain[..n]);
        // And the other direction uses the other key.
        let n = rtp(&mut buf);
        let m = b.encrypt_rtp(&mut buf, n, 12, 9).unwrap();
        assert!(b.clone().decrypt_rtp(&mut buf.clone(), m, 12, 9).is_err());
        assert_eq!(a.decrypt_rtp(&mut buf, m, 12, 9), Ok(n));
    }

    #[test]
    fn tamper_and_wrong_key_are_rejected() {
        let (a, b) = pair();
        let mut buf = [0u8; 64];
        let n = rtp(&mut buf);
        let m = a.encrypt_rtp(&mut buf, n, 12, 7).unwrap();
        for i in 0..m {
            let mut t = buf;
            t[i] ^= 1;
            assert_eq!(
                b.decrypt_rtp(&mut t, m, 12, 7),
                Err(CryptoError::Auth),
                "byte {i}"
            );
        }
        // Wrong sequence (replayed under another index) fails too.
        assert_eq!(
            b.decrypt_rtp(&mut buf.clone(), m, 12, 8),
            Err(CryptoError::Auth)
        );
        // A third party with its own key pair cannot read it.
        let c = KeyPair::from_secret_bytes([3; 32]);
        let eve = c
            .derive(
                Role::Callee,
                &KeyPair::from_secret_bytes([1; 32]).public_bytes(),
                &[],
            )
            .unwrap();
        assert_eq!(eve.decrypt_rtp(&mut buf, m, 12, 7), Err(CryptoError::Auth));
    }

    #[test]
    fn rtcp_roundtrip_and_tamper() {
        let (a, b) = pair();
        let r = crate::rtcp::Report {
            ssrc: 99,
            sender: None,
            block: Some(Default::default()),
        };
        let mut buf = [0u8; 128];
        let n = r.write(&mut buf).unwrap();
        let m = a.encrypt_rtcp(&mut buf, n, 3).unwrap();
        assert!(crate::rtp::is_rtcp(&buf[..m]));
        let mut t = buf;
        t[m - 1] ^= 1; // the index is authenticated through the nonce
        assert_eq!(b.decrypt_rtcp(&mut t, m), Err(CryptoError::Auth));
        let k = b.decrypt_rtcp(&mut buf, m).unwrap();
        assert_eq!(crate::rtcp::parse(&buf[..k]).unwrap(), r);
    }

    #[test]
    fn sas_matches_and_keys_are_checked() {
        let (a, b) = pair();
        assert_eq!(a.sas(), b.sas());
        assert_eq!(a.sas().len(), 7);
        let k = KeyPair::from_secret_bytes([1; 32]);
        assert_eq!(
            k.derive(Role::Caller, &[0; 31], &[]).err(),
            Some(CryptoError::BadPublicKey)
        );
        let k = KeyPair::from_secret_bytes([1; 32]);
        assert_eq!(
            k.derive(Role::Caller, &[0; 32], &[]).err(),
            Some(CryptoError::NonContributory)
        );
        assert!(KeyPair::generate().is_ok());
        assert!(format!("{a:?}").len() < 40);
    }

    proptest! {
        #[test]
        fn decrypt_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100), hl in 0usize..40, seq: u64) {
            let (_, b) = pair();
            let mut buf = bytes.clone();
            let n = buf.len();
            let _ = b.decrypt_rtp(&mut buf, n, hl, seq);
            let mut buf = bytes;
            let _ = b.decrypt_rtcp(&mut buf, n);
        }
    }
}
