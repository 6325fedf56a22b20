//! The media side of one client's calls: the UDP socket bound at start-up, a fresh key pair
//! offered with each invite or accept, and the media engine started when a call connects and
//! stopped when it ends. The terminal client, the headless commands and the window share it.

use std::net::{SocketAddr, UdpSocket};

use fala_proto::media_crypto::{KeyPair, Role};
use fala_proto::MediaAddr;
use serde_bytes::ByteBuf;
use thiserror::Error;

use crate::media::{
    CodecSettings, InputSpec, JitterSettings, MediaConfig, MediaEngine, MediaError, MediaHandle,
    MediaStats, OutputSpec,
};

/// How a client's calls sound: where audio comes from and goes to, and codec settings.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    pub input: InputSpec,
    pub output: OutputSpec,
    pub codec: CodecSettings,
    pub jitter: JitterSettings,
    /// Offer and accept encrypted media (on unless turned off for interop tests).
    pub encrypt: bool,
}

impl Default for MediaOptions {
    fn default() -> Self {
        MediaOptions {
            input: InputSpec::Device(None),
            output: OutputSpec::Device(None),
            codec: CodecSettings::default(),
            jitter: JitterSettings::default(),
            encrypt: true,
        }
    }
}

/// Why media could not start.
#[derive(Debug, Error)]
pub enum PhoneError {
    #[error("cannot use the media socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("the peer's media key is unusable: {0}")]
    Key(#[from] fala_proto::media_crypto::CryptoError),
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// Owns the media socket and the running engine, if any.
pub struct CallMedia {
    socket: UdpSocket,
    pub options: MediaOptions,
    keys: Option<KeyPair>,
    running: Option<MediaHandle>,
    /// The short authentication string of the running call, when encrypted.
    sas: Option<String>,
}

impl CallMedia {
    /// Takes the socket the client bound (and advertised) at start-up.
    pub fn new(socket: UdpSocket, options: MediaOptions) -> Self {
        CallMedia {
            socket,
            options,
            keys: None,
            running: None,
            sas: None,
        }
    }

    /// The bound media address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Makes this call's key pair and returns the public key to put in an invite or accept.
    /// `None` when encryption is off or the OS gave no randomness (the call then runs in clear,
    /// which the peer sees as a missing key).
    pub fn offer_key(&mut self) -> Option<ByteBuf> {
        if !self.options.encrypt {
            return None;
        }
        self.keys = KeyPair::generate().ok();
        self.keys
            .as_ref()
            .map(|k| ByteBuf::from(k.public_bytes().to_vec()))
    }

    /// Starts audio with the peer once the call is connected. Encrypted when both sides gave a
    /// key; in clear otherwise (an older or key-less peer).
    pub fn start(
        &mut self,
        role: Role,
        peer: MediaAddr,
        peer_key: Option<&[u8]>,
    ) -> Result<(), PhoneError> {
        let own_keys = self.keys.take();
        self.stop();
        let crypto = match (own_keys, peer_key) {
            (Some(keys), Some(peer_key)) => Some(keys.derive(role, peer_key)?),
            _ => None,
        };
        self.sas = crypto.as_ref().map(|c| c.sas());
        let config = MediaConfig {
            socket: self.socket.try_clone()?,
            peer: SocketAddr::V4(peer.0),
            crypto,
            input: self.options.input.clone(),
            output: self.options.output.clone(),
            codec: self.options.codec,
            jitter: self.options.jitter,
        };
        self.running = Some(MediaEngine::start(config)?);
        Ok(())
    }

    /// Stops audio; returns the call's final statistics if it was running.
    pub fn stop(&mut self) -> Option<MediaStats> {
        self.keys = None;
        self.running.take().map(MediaHandle::stop)
    }

    /// The running engine, for stats, levels and mute.
    pub fn running(&self) -> Option<&MediaHandle> {
        self.running.as_ref()
    }

    /// The code both people can compare to know nobody is in the middle, when encrypted.
    pub fn sas(&self) -> Option<&str> {
        self.sas.as_deref()
    }
}
