//! Real-time audio: its own std thread on an absolute-deadline tick, never tokio.
//!
//! Capture -> Opus encoder -> (encryption) -> UDP; UDP -> (decryption) -> jitter buffer ->
//! decoder (FEC / concealment) -> playback. Each file has one job; the pure parts (jitter
//! buffer, stretcher) take time as an input so they are tested on simulated clocks.

pub mod jitter;
pub mod stretch;
