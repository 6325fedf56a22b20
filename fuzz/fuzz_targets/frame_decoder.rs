//! Feeds arbitrary bytes to the frame splitter and both message decoders, as a server or a
//! client would receive them from a socket, in arbitrary chunkings.
#![no_main]

use bytes::BytesMut;
use fala_proto::{decode_body, split_frame, ClientMsg, ServerMsg, CLIENT_MSG_TYPES, SERVER_MSG_TYPES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let chunk = data.first().map(|b| (*b as usize % 64) + 1).unwrap_or(1);
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match split_frame(&mut buf) {
                Ok(Some(body)) => {
                    let _ = decode_body::<ClientMsg>(&body, CLIENT_MSG_TYPES);
                    let _ = decode_body::<ServerMsg>(&body, SERVER_MSG_TYPES);
                }
                Ok(None) => break,
                Err(_) => {
                    buf.clear();
                    break;
                }
            }
        }
    }
});
