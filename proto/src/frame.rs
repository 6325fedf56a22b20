//! Signaling frames: a u32 big-endian body length, then a MessagePack body (a map with named
//! fields, so fields can be added without breaking older peers).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

/// Largest body accepted or produced. Signaling messages are tiny; the cap bounds the memory a
/// single peer can make the other side reserve.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// What can be wrong with a frame or its body.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_LEN`]; the stream cannot be resynchronised.
    #[error("frame of {0} bytes is over the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(u32),
    /// A zero-length body is never valid.
    #[error("empty frame")]
    Empty,
    /// The body is not MessagePack, or not a map with a string `type` field.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body is well formed but its `type` is not one this side knows.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The `type` is known but its fields are missing or of the wrong kind.
    #[error("invalid {kind:?} message: {detail}")]
    InvalidFields { kind: String, detail: String },
    /// Encoding failed (only possible for messages over the size limit).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes one message as a complete frame (prefix + body).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(64);
    out.put_u32(0);
    {
        let mut writer = (&mut out).writer();
        rmp_serde::encode::write_named(&mut writer, msg)
            .map_err(|e| FrameError::Encode(e.to_string()))?;
    }
    let body_len = out.len() - LEN_PREFIX;
    if body_len > MAX_FRAME_LEN {
        return Err(FrameError::Encode(format!(
            "{body_len} bytes is over the {MAX_FRAME_LEN}-byte limit"
        )));
    }
    out[..LEN_PREFIX].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(out.freeze())
}

/// Takes one complete frame body off the front of `buf`, if a whole frame is there.
///
/// Returns `Ok(None)` when more bytes are needed. Checks the announced length before any body
/// arrives, so an oversized frame is refused without buffering it, and reserves nothing for
/// what was only announced.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len as usize > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        buf.advance(LEN_PREFIX);
        return Err(FrameError::Empty);
    }
    // Memory grows with the bytes that actually arrive, not with the length announced: four
    // bytes from a peer must not make this side reserve 64 KiB.
    if buf.len() < LEN_PREFIX + len as usize {
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    Ok(Some(buf.split_to(len as usize).freeze()))
}

/// Only the `type` field of a body, used to tell an unknown message from a malformed one.
#[derive(Deserialize)]
struct TypeTag {
    #[serde(rename = "type")]
    kind: StrOnly,
}

/// A MessagePack *str*, and nothing else: serde's `String` also takes `bin` bytes that happen
/// to be UTF-8, which the protocol does not allow for `type`.
struct StrOnly(String);

impl<'de> Deserialize<'de> for StrOnly {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StrOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StrOnly, E> {
                Ok(StrOnly(v.to_owned()))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Longest piece of peer-supplied text an error carries (a `type`, a decoder's complaint that
/// quotes a field): errors are logged and sent back, and must stay small whatever was sent.
pub const ERROR_TEXT_MAX: usize = 120;

/// `text` cut to at most `max` characters (with an ellipsis when cut).
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Whether `first` is a MessagePack map marker (fixmap, map 16, map 32).
fn is_map_marker(first: u8) -> bool {
    matches!(first, 0x80..=0x8f | 0xde | 0xdf)
}

/// Decodes a frame body into a message of one of the enums in [`crate::signal`].
///
/// Strict, so what is accepted is exactly what docs/PROTOCOL.md describes: the body must be one
/// MessagePack map and nothing after it, and its `type` must be a string (serde would
/// otherwise take an array as a struct, or a variant number as a `type`). `known` lists the
/// `type` values of `T`, so the error says whether the peer sent garbage, a message this side
/// does not know (e.g. from a newer version), or a known one with bad fields.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], known: &[&str]) -> Result<T, FrameError> {
    if !body.first().copied().is_some_and(is_map_marker) {
        return Err(FrameError::Malformed("the body must be a map".into()));
    }
    let TypeTag {
        kind: StrOnly(kind),
    } = rmp_serde::from_slice(body).map_err(|e| {
        FrameError::Malformed(format!(
            "the body needs a `type` field holding a string: {}",
            clip(&e.to_string(), ERROR_TEXT_MAX)
        ))
    })?;
    let kind = clip(&kind, ERROR_TEXT_MAX);
    let mut rest = body;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    let msg = match T::deserialize(&mut de) {
        Ok(msg) => msg,
        Err(err) if known.contains(&kind.as_str()) => {
            return Err(FrameError::InvalidFields {
                kind,
                detail: clip(&err.to_string(), ERROR_TEXT_MAX),
            })
        }
        Err(_) => return Err(FrameError::UnknownType(kind)),
    };
    drop(de);
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{ClientMsg, CLIENT_MSG_TYPES};

    #[test]
    fn split_waits_for_whole_frame() {
        let frame = encode_frame(&ClientMsg::List {
            after: None,
            limit: None,
        })
        .unwrap();
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            buf.put_u8(*b);
            let got = split_frame(&mut buf).unwrap();
            assert_eq!(got.is_some(), i + 1 == frame.len());
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_oversized_prefix_before_body() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(split_frame(&mut buf), Err(FrameError::TooLarge(u32::MAX)));
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(split_frame(&mut buf), Err(FrameError::Empty));
    }

    #[test]
    fn tells_malformed_from_unknown_from_invalid() {
        let garbage = [0xc1u8, 0x00];
        assert!(matches!(
            decode_body::<ClientMsg>(&garbage, CLIENT_MSG_TYPES),
            Err(FrameError::Malformed(_))
        ));
        #[derive(Serialize)]
        struct Fake<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            x: u8,
        }
        let unknown = rmp_serde::to_vec_named(&Fake {
            kind: "teleport",
            x: 1,
        })
        .unwrap();
        assert_eq!(
            decode_body::<ClientMsg>(&unknown, CLIENT_MSG_TYPES),
            Err(FrameError::UnknownType("teleport".into()))
        );
        let invalid = rmp_serde::to_vec_named(&Fake {
            kind: "lookup",
            x: 1,
        })
        .unwrap();
        assert!(matches!(
            decode_body::<ClientMsg>(&invalid, CLIENT_MSG_TYPES),
            Err(FrameError::InvalidFields { .. })
        ));
    }

    /// Whatever a peer sends, an error about it stays short (it is logged and sent back).
    #[test]
    fn errors_quote_at_most_a_little_of_what_was_sent() {
        let long = "x".repeat(50_000);
        let bodies = [
            // An unknown type 50 000 characters long.
            rmpv::Value::Map(vec![("type".into(), long.as_str().into())]),
            // A known type whose field quotes a long wrong value.
            rmpv::Value::Map(vec![
                ("type".into(), "ping".into()),
                ("nonce".into(), long.as_str().into()),
            ]),
        ];
        for body in bodies {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &body).unwrap();
            let err = decode_body::<ClientMsg>(&bytes, CLIENT_MSG_TYPES).unwrap_err();
            assert!(err.to_string().chars().count() < 400, "{err}");
        }
        assert_eq!(clip("abc", 2), "ab…");
        assert_eq!(clip("aé", 5), "aé");
    }

    /// What serde alone would take: `{type: 12}` (variant 12 is `bye`), `type` as bytes, an
    /// array in place of the map, and bytes after a valid map. Each is malformed.
    #[test]
    fn refuses_what_is_not_exactly_a_map_with_a_string_type() {
        let malformed = |body: &[u8]| {
            matches!(
                decode_body::<ClientMsg>(body, CLIENT_MSG_TYPES),
                Err(FrameError::Malformed(_))
            )
        };
        // {"type": 12}
        assert!(malformed(&[0x81, 0xa4, b't', b'y', b'p', b'e', 0x0c]));
        // {"type": b"bye"} (bin 8)
        assert!(malformed(&[
            0x81, 0xa4, b't', b'y', b'p', b'e', 0xc4, 3, b'b', b'y', b'e'
        ]));
        // ["bye"]
        assert!(malformed(&[0x91, 0xa3, b'b', b'y', b'e']));
        // {"type": "bye"} followed by a stray byte
        let mut body = rmp_serde::to_vec_named(&ClientMsg::Bye).unwrap();
        assert_eq!(
            decode_body::<ClientMsg>(&body, CLIENT_MSG_TYPES),
            Ok(ClientMsg::Bye)
        );
        body.push(0xc0);
        assert!(malformed(&body));
        // No type at all.
        assert!(malformed(&[0x80]));
    }
}

#[cfg(test)]
mod doc_example {
    use super::*;
    use crate::signal::ClientMsg;

    /// The hex dump in docs/PROTOCOL.md is this frame; if the encoding changes, so must the doc.
    #[test]
    fn hello_frame_matches_protocol_doc() {
        let frame = encode_frame(&ClientMsg::Hello {
            version: crate::signal::PROTOCOL_VERSION,
            agent: "py".into(),
        })
        .unwrap();
        let hex: Vec<String> = frame.iter().map(|b| format!("{b:02x}")).collect();
        println!("{}", hex.join(" "));
        assert_eq!(
            hex.join(" "),
            "00 00 00 1e 83 a4 74 79 70 65 a5 68 65 6c 6c 6f a7 76 65 72 73 69 6f 6e 02 a5 61 67 65 6e 74 a2 70 79"
        );
    }
}
