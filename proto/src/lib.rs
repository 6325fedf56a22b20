//! Fala's wire formats, shared by the client and the server.
//!
//! This crate holds data and codecs only: no sockets, no async runtime and no clock, so every
//! rule in it can be tested with plain bytes and fed by any transport.

#![forbid(unsafe_code)]

pub mod call;
pub mod call_keys;
pub mod frame;
pub mod hex;
pub mod identity;
pub mod media_crypto;
pub mod media_session;
pub mod name;
pub mod path_check;
pub mod red;
pub mod rtcp;
pub mod rtp;
pub mod signal;
pub mod stun;

pub use frame::{clip, decode_body, encode_frame, split_frame, FrameError, ERROR_TEXT_MAX};
pub use signal::*;
