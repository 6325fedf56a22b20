//! Long-lived identities: one Ed25519 key pair per client, made on first run and kept.
//!
//! The public half is who you are to the server and to your contacts. A client proves it holds
//! the secret half by signing the server's per-connection challenge when it registers (so a
//! name bound to a key cannot be taken by anyone without it), and signs each call's ephemeral
//! media key with it (so a server that swaps keys is caught by a pinned contact key, without
//! anyone reading digits aloud).
//!
//! Every signed message starts with a label naming its purpose and the protocol version, so a
//! signature made for one purpose can never be replayed as another.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};
use thiserror::Error;

use crate::signal::CallId;

/// Length of a public identity key on the wire.
pub const IDENTITY_LEN: usize = 32;
/// Length of an Ed25519 signature on the wire.
pub const SIGNATURE_LEN: usize = 64;
/// Length of the server's registration challenge.
pub const CHALLENGE_LEN: usize = 32;

const REGISTER_LABEL: &[u8] = b"fala register v2\0";
const CALL_KEY_LABEL: &[u8] = b"fala call key v2\0";
const SAFETY_LABEL: &[u8] = b"fala safety number v2\0";
/// Hash iterations behind each half of a safety number: makes finding a second key with the
/// same 30 digits cost 2^99 hashes times this instead of 2^99 (as Signal does).
const SAFETY_ITERATIONS: usize = 5200;

/// Why an identity key or signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("an identity key must be {IDENTITY_LEN} bytes of a valid Ed25519 point")]
    BadKey,
    #[error("the signature does not match the identity key")]
    BadSignature,
    #[error("no randomness available")]
    Random,
}

/// Which side of a call signed an ephemeral key (part of what is signed, so a caller's
/// signature cannot be passed off as a callee's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallSide {
    Caller,
    Callee,
}

impl CallSide {
    fn byte(self) -> u8 {
        match self {
            CallSide::Caller => b'r',
            CallSide::Callee => b'e',
        }
    }
}

/// A client's identity key pair. The secret never leaves this type except as the seed to save.
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Identity({})", fingerprint(&self.public()))
    }
}

impl Identity {
    /// A new identity from the OS random generator.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| IdentityError::Random)?;
        Ok(Self::from_seed(seed))
    }

    /// The identity kept as this 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Identity {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The secret seed, to save (with owner-only permissions).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public identity key others see.
    pub fn public(&self) -> [u8; IDENTITY_LEN] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs a registration: proves to the server that asked with `challenge` that the holder
    /// of this key wants `name` (exactly as sent).
    pub fn sign_register(&self, challenge: &[u8], name: &str) -> [u8; SIGNATURE_LEN] {
        self.key.sign(&register_message(challenge, name)).to_bytes()
    }

    /// Signs this side's ephemeral media key for one call.
    pub fn sign_call_key(
        &self,
        call_id: CallId,
        side: CallSide,
        media_key: &[u8],
    ) -> [u8; SIGNATURE_LEN] {
        self.key
            .sign(&call_key_message(call_id, side, media_key))
            .to_bytes()
    }
}

fn register_message(challenge: &[u8], name: &str) -> Vec<u8> {
    [REGISTER_LABEL, challenge, name.as_bytes()].concat()
}

fn call_key_message(call_id: CallId, side: CallSide, media_key: &[u8]) -> Vec<u8> {
    [
        CALL_KEY_LABEL,
        &call_id.0.to_be_bytes(),
        &[side.byte()],
        media_key,
    ]
    .concat()
}

fn verify(identity: &[u8], message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
    let identity: [u8; IDENTITY_LEN] = identity.try_into().map_err(|_| IdentityError::BadKey)?;
    let key = VerifyingKey::from_bytes(&identity).map_err(|_| IdentityError::BadKey)?;
    if key.is_weak() {
        return Err(IdentityError::BadKey);
    }
    let signature: [u8; SIGNATURE_LEN] = signature
        .try_into()
        .map_err(|_| IdentityError::BadSignature)?;
    // Strict: refuses the malleable and small-order forms plain verification lets through.
    key.verify_strict(message, &Signature::from_bytes(&signature))
        .map_err(|_| IdentityError::BadSignature)
}

/// Checks a registration signature (see [`Identity::sign_register`]).
pub fn verify_register(
    identity: &[u8],
    challenge: &[u8],
    name: &str,
    signature: &[u8],
) -> Result<(), IdentityError> {
    verify(identity, &register_message(challenge, name), signature)
}

/// Checks the signature on a peer's ephemeral media key (see [`Identity::sign_call_key`]).
pub fn verify_call_key(
    identity: &[u8],
    call_id: CallId,
    side: CallSide,
    media_key: &[u8],
    signature: &[u8],
) -> Result<(), IdentityError> {
    verify(
        identity,
        &call_key_message(call_id, side, media_key),
        signature,
    )
}

/// A short, readable name for an identity key: the first 8 bytes in hex, in groups of four
/// (for logs and the contact details; comparing keys uses the safety number).
pub fn fingerprint(identity: &[u8; IDENTITY_LEN]) -> String {
    identity[..8]
        .chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Thirty digits standing for one identity key.
fn safety_half(identity: &[u8; IDENTITY_LEN]) -> String {
    let mut hash: Vec<u8> = [SAFETY_LABEL, identity.as_slice()].concat();
    for _ in 0..SAFETY_ITERATIONS {
        let mut h = Sha512::new();
        h.update(&hash);
        h.update(identity);
        hash = h.finalize().to_vec();
    }
    hash[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

/// The safety number of two people: sixty digits in twelve groups of five, the same on both
/// sides (the halves are put in order). Compared once, in person or over a call, it proves
/// that neither key was swapped by the server; after that the pinned keys keep proving it.
pub fn safety_number(a: &[u8; IDENTITY_LEN], b: &[u8; IDENTITY_LEN]) -> String {
    let (ha, hb) = (safety_half(a), safety_half(b));
    let (first, second) = if ha <= hb { (ha, hb) } else { (hb, ha) };
    let digits = first + &second;
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Identity {
        Identity::from_seed([n; 32])
    }

    #[test]
    fn a_registration_signature_holds_only_for_its_challenge_name_and_key() {
        let ana = id(1);
        let challenge = [7u8; CHALLENGE_LEN];
        let sig = ana.sign_register(&challenge, "ana");
        assert_eq!(
            verify_register(&ana.public(), &challenge, "ana", &sig),
            Ok(())
        );
        let other_challenge = [8u8; CHALLENGE_LEN];
        for (key, ch, name) in [
            (id(2).public(), challenge, "ana"),
            (ana.public(), other_challenge, "ana"),
            (ana.public(), challenge, "Ana"),
        ] {
            assert_eq!(
                verify_register(&key, &ch, name, &sig),
                Err(IdentityError::BadSignature)
            );
        }
        assert_eq!(
            verify_register(&[0u8; 5], &challenge, "ana", &sig),
            Err(IdentityError::BadKey)
        );
        assert_eq!(
            verify_register(&ana.public(), &challenge, "ana", &sig[..63]),
            Err(IdentityError::BadSignature)
        );
    }

    #[test]
    fn a_call_key_signature_is_bound_to_the_call_and_the_side() {
        let ana = id(1);
        let key = [9u8; 32];
        let sig = ana.sign_call_key(CallId(5), CallSide::Caller, &key);
        let check = |call, side, key: &[u8]| verify_call_key(&ana.public(), call, side, key, &sig);
        assert_eq!(check(CallId(5), CallSide::Caller, &key), Ok(()));
        assert!(check(CallId(6), CallSide::Caller, &key).is_err());
        assert!(check(CallId(5), CallSide::Callee, &key).is_err());
        assert!(check(CallId(5), CallSide::Caller, &[8u8; 32]).is_err());
        // A registration signature is no call signature, whatever the bytes.
        let reg = ana.sign_register(&[0u8; 32], "x");
        assert!(verify_call_key(&ana.public(), CallId(5), CallSide::Caller, &key, &reg).is_err());
    }

    #[test]
    fn small_order_identity_keys_are_refused() {
        // The identity point (encoded 1) has order 1: any "signature" would be meaningless.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(
            verify_register(&weak, &[0u8; 32], "ana", &[0u8; 64]),
            Err(IdentityError::BadKey)
        );
    }

    #[test]
    fn safety_numbers_are_symmetric_sixty_digits_and_differ_per_pair() {
        let (a, b, c) = (id(1).public(), id(2).public(), id(3).public());
        let ab = safety_number(&a, &b);
        assert_eq!(ab, safety_number(&b, &a));
        assert_eq!(ab.len(), 60 + 11);
        assert!(ab.chars().all(|ch| ch.is_ascii_digit() || ch == ' '));
        assert_ne!(ab, safety_number(&a, &c));
        assert_eq!(fingerprint(&a).len(), 19);
    }
}
