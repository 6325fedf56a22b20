//! A framed signaling connection: whole messages in and out over one stream (TLS, or plain
//! TCP with `--plain`).

use bytes::BytesMut;
use fala_proto::{
    decode_body, encode_frame, split_frame, ClientMsg, FrameError, ServerMsg, SERVER_MSG_TYPES,
};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a connection failed.
#[derive(Debug, Error)]
pub enum ConnError {
    #[error("connection closed by the server")]
    Closed,
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame from the server: {0}")]
    Frame(#[from] FrameError),
}

/// A byte stream to the server: a TLS session or a plain TCP stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection that speaks Fala frames.
pub struct Connection {
    stream: Box<dyn Io>,
    buf: BytesMut,
}

impl Connection {
    pub fn new(stream: impl Io + 'static) -> Self {
        Connection {
            stream: Box::new(stream),
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Sends one message. Flushed: over TLS, bytes the socket could not take at once would
    /// otherwise wait inside the TLS layer until the next write.
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), ConnError> {
        let frame = encode_frame(msg)?;
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads the next message. Messages of a type this client does not know (from a newer
    /// server) are skipped, as the protocol asks; anything else malformed is an error.
    /// Cancel-safe: a partly read frame stays in the buffer.
    pub async fn recv(&mut self) -> Result<ServerMsg, ConnError> {
        loop {
            if let Some(body) = split_frame(&mut self.buf)? {
                match decode_body::<ServerMsg>(&body, SERVER_MSG_TYPES) {
                    Ok(msg) => return Ok(msg),
                    Err(FrameError::UnknownType(t)) => {
                        tracing::debug!("ignoring unknown server message {t:?}");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }
}
