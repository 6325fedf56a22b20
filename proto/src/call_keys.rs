//! How the two sides of a call agree on keys through a server they need not trust.
//!
//! 1. The caller makes an ephemeral X25519 key pair and sends only its **commitment** (a hash of
//!    the public key) in `invite`.
//! 2. The callee makes its own pair and sends the public key, **signed with its identity key**,
//!    in `accept`.
//! 3. The caller checks that signature against the callee's identity, then **reveals** its own
//!    public key, signed with its identity, in `reveal`.
//! 4. The callee checks the reveal against the commitment and the caller's identity.
//!
//! Both derive the media keys and the 6-digit code from the two ephemeral keys *and* both
//! identity keys. A server that swaps keys must commit to its fake caller key before it sees
//! the callee's key, and give the caller its fake callee key before it sees the caller's, so
//! it cannot search for a pair of keys whose codes match: the codes differ with probability
//! 1 − 10⁻⁶. And a swapped key is signed by the wrong identity, which a pinned contact
//! catches without anyone reading digits (as in ZRTP, RFC 6189, with Signal-style identities).

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::identity::{verify_call_key, CallSide, Identity, IdentityError, IDENTITY_LEN};
use crate::media_crypto::{CryptoError, KeyPair, Role, SessionKeys, PUBLIC_KEY_LEN};
use crate::signal::CallId;

/// Length of a commitment to a public key.
pub const COMMITMENT_LEN: usize = 32;

const COMMIT_LABEL: &[u8] = b"fala commit v2\0";

/// Why a call's keys could not be agreed. Each means the media would not be private between
/// the two people the call claims to connect, so the call must not go on encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AgreementError {
    #[error("the caller's key does not match the one it committed to: it was changed on the way")]
    CommitmentMismatch,
    #[error("the other side's media key is not signed by its identity ({0})")]
    Signature(IdentityError),
    #[error("a key or commitment has the wrong length")]
    BadLength,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A public media key and its identity signature, as sent in `accept` or `reveal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedKey {
    pub key: [u8; PUBLIC_KEY_LEN],
    pub signature: [u8; crate::identity::SIGNATURE_LEN],
}

/// The commitment to a caller's public media key.
pub fn commitment(key: &[u8]) -> [u8; COMMITMENT_LEN] {
    let mut h = Sha256::new();
    h.update(COMMIT_LABEL);
    h.update(key);
    h.finalize().into()
}

/// What binds the keys and the code to the two identities: caller's then callee's.
fn context(caller: &[u8], callee: &[u8]) -> Vec<u8> {
    [caller, callee].concat()
}

fn identity_bytes(identity: &[u8]) -> Result<[u8; IDENTITY_LEN], AgreementError> {
    identity.try_into().map_err(|_| AgreementError::BadLength)
}

/// The caller's part of one call.
pub struct CallerKeys {
    pair: KeyPair,
}

impl CallerKeys {
    pub fn generate() -> Result<Self, AgreementError> {
        Ok(CallerKeys {
            pair: KeyPair::generate()?,
        })
    }

    /// From a known secret (tests).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        CallerKeys {
            pair: KeyPair::from_secret_bytes(secret),
        }
    }

    /// What goes in `invite.commit`.
    pub fn commitment(&self) -> [u8; COMMITMENT_LEN] {
        commitment(&self.pair.public_bytes())
    }

    /// The callee answered (`call_connected` with its key and signature): checks the signature
    /// against the callee's identity, derives the session keys and returns them with the
    /// reveal to send.
    pub fn complete(
        self,
        me: &Identity,
        call_id: CallId,
        callee_identity: &[u8],
        callee: (&[u8], &[u8]),
    ) -> Result<(SessionKeys, SignedKey), AgreementError> {
        let (callee_key, callee_signature) = callee;
        identity_bytes(callee_identity)?;
        verify_call_key(
            callee_identity,
            call_id,
            CallSide::Callee,
            callee_key,
            callee_signature,
        )
        .map_err(AgreementError::Signature)?;
        let reveal = SignedKey {
            key: self.pair.public_bytes(),
            signature: me.sign_call_key(call_id, CallSide::Caller, &self.pair.public_bytes()),
        };
        let keys = self.pair.derive(
            Role::Caller,
            callee_key,
            &context(&me.public(), callee_identity),
        )?;
        Ok((keys, reveal))
    }
}

/// The callee's part of one call.
pub struct CalleeKeys {
    pair: KeyPair,
    commitment: [u8; COMMITMENT_LEN],
}

impl CalleeKeys {
    /// A fresh pair for a call whose invite carried `commitment`.
    pub fn generate(commitment: &[u8]) -> Result<Self, AgreementError> {
        Self::with_pair(KeyPair::generate()?, commitment)
    }

    /// From a known secret (tests).
    pub fn from_secret_bytes(secret: [u8; 32], commitment: &[u8]) -> Result<Self, AgreementError> {
        Self::with_pair(KeyPair::from_secret_bytes(secret), commitment)
    }

    fn with_pair(pair: KeyPair, commitment: &[u8]) -> Result<Self, AgreementError> {
        Ok(CalleeKeys {
            pair,
            commitment: commitment
                .try_into()
                .map_err(|_| AgreementError::BadLength)?,
        })
    }

    /// What goes in `accept`: our public key, signed.
    pub fn answer(&self, me: &Identity, call_id: CallId) -> SignedKey {
        let key = self.pair.public_bytes();
        SignedKey {
            key,
            signature: me.sign_call_key(call_id, CallSide::Callee, &key),
        }
    }

    /// The caller revealed its key (`call_connected` on our side): checks it against the
    /// commitment and the caller's identity, and derives the session keys.
    pub fn complete(
        self,
        me: &[u8; IDENTITY_LEN],
        call_id: CallId,
        caller_identity: &[u8],
        caller: (&[u8], &[u8]),
    ) -> Result<SessionKeys, AgreementError> {
        let (caller_key, caller_signature) = caller;
        identity_bytes(caller_identity)?;
        if commitment(caller_key) != self.commitment {
            return Err(AgreementError::CommitmentMismatch);
        }
        verify_call_key(
            caller_identity,
            call_id,
            CallSide::Caller,
            caller_key,
            caller_signature,
        )
        .map_err(AgreementError::Signature)?;
        Ok(self
            .pair
            .derive(Role::Callee, caller_key, &context(caller_identity, me))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: CallId = CallId(42);

    struct People {
        ana: Identity,
        bob: Identity,
    }

    fn people() -> People {
        People {
            ana: Identity::from_seed([1; 32]),
            bob: Identity::from_seed([2; 32]),
        }
    }

    /// An honest server: both sides get the same code and can talk.
    #[test]
    fn an_honest_exchange_gives_both_sides_the_same_code() {
        let p = people();
        let caller = CallerKeys::generate().unwrap();
        let callee = CalleeKeys::generate(&caller.commitment()).unwrap();
        let answer = callee.answer(&p.bob, CALL);
        let (ana_keys, reveal) = caller
            .complete(
                &p.ana,
                CALL,
                &p.bob.public(),
                (&answer.key, &answer.signature),
            )
            .unwrap();
        let bob_keys = callee
            .complete(
                &p.bob.public(),
                CALL,
                &p.ana.public(),
                (&reveal.key, &reveal.signature),
            )
            .unwrap();
        assert_eq!(ana_keys.sas(), bob_keys.sas());
    }

    /// A server that swaps the caller's key after the commitment is caught by the commitment.
    #[test]
    fn a_revealed_key_that_does_not_match_the_commitment_is_refused() {
        let p = people();
        let caller = CallerKeys::generate().unwrap();
        let callee = CalleeKeys::generate(&caller.commitment()).unwrap();
        let fake = KeyPair::generate().unwrap().public_bytes();
        let fake_sig = p.ana.sign_call_key(CALL, CallSide::Caller, &fake);
        // Even with Ana's real signature over the fake key (she never makes one), the
        // commitment does not match.
        assert_eq!(
            callee
                .complete(&p.bob.public(), CALL, &p.ana.public(), (&fake, &fake_sig))
                .err(),
            Some(AgreementError::CommitmentMismatch)
        );
    }

    /// A server that swaps keys consistently (its own commitment, its own keys, signed by its
    /// own identity posing as the peer's) gets through only by also swapping the identity
    /// keys, which a pinned contact catches — and the codes on the two sides then differ.
    #[test]
    fn a_man_in_the_middle_must_swap_identities_and_then_the_codes_differ() {
        let p = people();
        let mallory = Identity::from_seed([9; 32]);
        // Ana -> Mallory (posing as Bob): Ana's real commitment goes to Mallory.
        let ana = CallerKeys::generate().unwrap();
        let to_mallory = CalleeKeys::generate(&ana.commitment()).unwrap();
        // Mallory -> Bob (posing as Ana): Mallory's own commitment.
        let m_caller = CallerKeys::generate().unwrap();
        let bob = CalleeKeys::generate(&m_caller.commitment()).unwrap();
        let bob_answer = bob.answer(&p.bob, CALL);
        // Mallory must sign with some identity; with Bob's real identity it cannot (no secret),
        // so Ana sees Mallory's identity in place of Bob's.
        let m_answer = to_mallory.answer(&mallory, CALL);
        assert!(matches!(
            CallerKeys::from_secret_bytes([3; 32]).complete(
                &p.ana,
                CALL,
                &p.bob.public(),
                (&m_answer.key, &m_answer.signature)
            ),
            Err(AgreementError::Signature(_))
        ));
        let (ana_keys, ana_reveal) = ana
            .complete(
                &p.ana,
                CALL,
                &mallory.public(),
                (&m_answer.key, &m_answer.signature),
            )
            .unwrap();
        let m_left = to_mallory
            .complete(
                &mallory.public(),
                CALL,
                &p.ana.public(),
                (&ana_reveal.key, &ana_reveal.signature),
            )
            .unwrap();
        let (m_right, m_reveal) = m_caller
            .complete(
                &mallory,
                CALL,
                &p.bob.public(),
                (&bob_answer.key, &bob_answer.signature),
            )
            .unwrap();
        let bob_keys = bob
            .complete(
                &p.bob.public(),
                CALL,
                &mallory.public(),
                (&m_reveal.key, &m_reveal.signature),
            )
            .unwrap();
        // Each side shares a code with Mallory, and the two people's codes differ.
        assert_eq!(ana_keys.sas(), m_left.sas());
        assert_eq!(bob_keys.sas(), m_right.sas());
        assert_ne!(ana_keys.sas(), bob_keys.sas());
    }

    #[test]
    fn a_signature_for_another_call_or_side_is_refused() {
        let p = people();
        let caller = CallerKeys::generate().unwrap();
        let callee = CalleeKeys::generate(&caller.commitment()).unwrap();
        let answer = callee.answer(&p.bob, CallId(7));
        assert!(matches!(
            caller.complete(
                &p.ana,
                CALL,
                &p.bob.public(),
                (&answer.key, &answer.signature)
            ),
            Err(AgreementError::Signature(_))
        ));
        assert_eq!(
            CalleeKeys::generate(&[0; 31]).err(),
            Some(AgreementError::BadLength)
        );
    }
}
