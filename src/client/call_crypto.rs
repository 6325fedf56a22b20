//! This client's side of each call's key agreement (see `fala_proto::call_keys`): the
//! commitment in an invite, the signed key in an accept, and at connect the checks and keys, or
//! the reason the call must not go on.

use std::sync::Arc;

use fala_proto::call_keys::{CalleeKeys, CallerKeys, SignedKey, COMMITMENT_LEN};
use fala_proto::identity::Identity;
use fala_proto::media_crypto::SessionKeys;
use fala_proto::CallId;

use super::model::StartMedia;

/// Where this call's agreement stands.
enum Agreement {
    /// Nothing offered: encryption is off, or no call.
    Idle,
    Caller(CallerKeys),
    Callee(CalleeKeys),
}

/// What a connected call runs with.
pub struct Agreed {
    /// The media keys; `None` for a call in clear (which policy allowed).
    pub keys: Option<SessionKeys>,
    /// For the caller: its key to reveal now.
    pub reveal: Option<SignedKey>,
}

/// One client's identity and its part in the agreement of the current call.
pub struct CallCrypto {
    identity: Arc<Identity>,
    agreement: Agreement,
}

impl CallCrypto {
    pub fn new(identity: Arc<Identity>) -> Self {
        CallCrypto {
            identity,
            agreement: Agreement::Idle,
        }
    }

    /// For an invite: a fresh key pair and its commitment (`None` when `encrypt` is off or the
    /// OS gave no randomness: the call is then offered in clear).
    pub fn offer_commitment(&mut self, encrypt: bool) -> Option<[u8; COMMITMENT_LEN]> {
        self.agreement = Agreement::Idle;
        if !encrypt {
            return None;
        }
        let keys = CallerKeys::generate().ok()?;
        let commitment = keys.commitment();
        self.agreement = Agreement::Caller(keys);
        Some(commitment)
    }

    /// For an accept: our signed key for a call whose invite carried `commitment`; `Ok(None)`
    /// when the caller offered a call in clear or `encrypt` is off. A commitment we cannot use
    /// (the wrong length: a hostile server, say) is an error, never a quiet fall back to clear.
    pub fn answer(
        &mut self,
        encrypt: bool,
        call_id: CallId,
        commitment: Option<&[u8]>,
    ) -> Result<Option<SignedKey>, String> {
        self.agreement = Agreement::Idle;
        let Some(commitment) = commitment.filter(|_| encrypt) else {
            return Ok(None);
        };
        let keys = CalleeKeys::generate(commitment)
            .map_err(|e| format!("the caller's key commitment is unusable: {e}"))?;
        let answer = keys.answer(&self.identity, call_id);
        self.agreement = Agreement::Callee(keys);
        Ok(Some(answer))
    }

    /// The call connected: checks the peer's key and derives ours, or says why the call must
    /// end. A call in clear goes on only if we offered nothing ourselves or `allow_clear`.
    pub fn complete(&mut self, call: &StartMedia, allow_clear: bool) -> Result<Agreed, String> {
        let agreement = std::mem::replace(&mut self.agreement, Agreement::Idle);
        let peer = match (&call.peer_key, &call.peer_signature) {
            (Some(key), Some(signature)) => Some((key.as_slice(), signature.as_slice())),
            _ => None,
        };
        let clear = Agreed {
            keys: None,
            reveal: None,
        };
        match (agreement, peer) {
            (Agreement::Idle, _) => Ok(clear),
            (_, None) if allow_clear => Ok(clear),
            (_, None) => Err(format!(
                "{} answered without encryption, and calls in clear are not allowed (Settings)",
                call.peer_name
            )),
            (Agreement::Caller(keys), Some(peer)) => {
                let (keys, reveal) = keys
                    .complete(&self.identity, call.call_id, &call.peer_identity, peer)
                    .map_err(|e| format!("the call's keys are not safe: {e}"))?;
                Ok(Agreed {
                    keys: Some(keys),
                    reveal: Some(reveal),
                })
            }
            (Agreement::Callee(keys), Some(peer)) => {
                let keys = keys
                    .complete(
                        &self.identity.public(),
                        call.call_id,
                        &call.peer_identity,
                        peer,
                    )
                    .map_err(|e| format!("the call's keys are not safe: {e}"))?;
                Ok(Agreed {
                    keys: Some(keys),
                    reveal: None,
                })
            }
        }
    }

    /// The call is over (or never started): forget its keys.
    pub fn forget(&mut self) {
        self.agreement = Agreement::Idle;
    }
}
