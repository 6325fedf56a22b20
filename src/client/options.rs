//! How a client's calls sound: where audio comes from and goes to, codec and playout settings,
//! and whether media is encrypted. The command line and the window's settings both end here.

use crate::media::{CodecSettings, InputSpec, JitterSettings, OutputSpec};

/// Everything the media link needs to start a call's engine.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    pub input: InputSpec,
    pub output: OutputSpec,
    pub codec: CodecSettings,
    pub jitter: JitterSettings,
    /// Offer and accept encrypted media (on unless turned off for packet captures).
    pub encrypt: bool,
    /// Take calls whose other side offers no encryption (off: they are refused).
    pub allow_unencrypted: bool,
    /// Send and receive media through the server's relay whenever it offers one, never
    /// directly, and ask the server to show the peer the relay instead of our addresses.
    pub always_relay: bool,
}

impl Default for MediaOptions {
    /// The system's default devices, the engine's default codec and playout, encrypted.
    fn default() -> Self {
        MediaOptions {
            input: InputSpec::Device(None),
            output: OutputSpec::Device(None),
            codec: CodecSettings::default(),
            jitter: JitterSettings::default(),
            encrypt: true,
            allow_unencrypted: false,
            always_relay: false,
        }
    }
}
