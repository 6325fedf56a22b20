//! Real-time audio: its own std thread on an absolute-deadline tick, never tokio.
//!
//! Capture -> Opus encoder -> (encryption) -> UDP; UDP -> (decryption) -> jitter buffer ->
//! decoder (FEC / concealment) -> playback. Each file has one job; the pure parts (jitter
//! buffer, stretcher, resampler) take time or samples as input so they are tested offline.

pub mod codec;
pub mod device;
pub mod drift;
pub mod engine;
pub mod io;
pub mod jitter;
pub mod player;
pub mod protection;
pub mod recorder;
pub mod relay_way;
pub mod resample;
pub mod rx_time;
pub mod stretch;
pub mod transport;

pub use codec::{CodecSettings, FrameMs};
pub use engine::{
    Levels, MediaConfig, MediaEngine, MediaError, MediaHandle, MediaPath, MediaStats,
};
pub use io::{InputSpec, OutputSpec};
pub use jitter::{JitterMode, JitterSettings};
pub use transport::PathSetup;
