//! Tells when a call goes silent because nothing arrives from the peer, and when it comes
//! back, so every face says so instead of sitting silent. Time is the engine's statistics.

use crate::media::{MediaPath, MediaStats};

/// Nothing from the peer for this long is worth telling, ms.
pub const NO_AUDIO_AFTER_MS: f64 = 3_000.0;

/// A change worth telling.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioNotice {
    /// Nothing has come from the peer for `seconds` (by `path`).
    Missing { seconds: u32, path: MediaPath },
    /// The peer is heard again.
    Back,
}

impl AudioNotice {
    /// One line for a person, about `peer`.
    pub fn describe(&self, peer: &str) -> String {
        match self {
            AudioNotice::Missing { seconds, path } => {
                let via = match path {
                    MediaPath::Direct => "directly",
                    MediaPath::Relay => "through the server",
                    MediaPath::Tcp => "through the server by TCP",
                };
                format!(
                    "no audio from {peer} for {seconds} s (sending {via}); the network between you may be blocking it"
                )
            }
            AudioNotice::Back => format!("audio from {peer} is back"),
        }
    }
}

/// Whether the current call has been told silent.
#[derive(Debug, Default)]
pub struct AudioWatch {
    missing: bool,
}

impl AudioWatch {
    /// A new call.
    pub fn reset(&mut self) {
        self.missing = false;
    }

    /// Looks at the latest statistics; a notice when the call just went silent or came back.
    pub fn check(&mut self, stats: &MediaStats) -> Option<AudioNotice> {
        let silent = stats.silent_for_ms >= NO_AUDIO_AFTER_MS;
        match (silent, self.missing) {
            (true, false) => {
                self.missing = true;
                Some(AudioNotice::Missing {
                    seconds: (stats.silent_for_ms / 1000.0) as u32,
                    path: stats.path,
                })
            }
            (false, true) => {
                self.missing = false;
                Some(AudioNotice::Back)
            }
            _ => None,
        }
    }

    /// Whether the call is silent now.
    pub fn missing(&self) -> bool {
        self.missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(silent_for_ms: f64) -> MediaStats {
        MediaStats {
            silent_for_ms,
            ..MediaStats::default()
        }
    }

    #[test]
    fn tells_once_when_silent_and_once_when_back() {
        let mut w = AudioWatch::default();
        assert_eq!(w.check(&at(500.0)), None);
        assert_eq!(
            w.check(&at(3_200.0)),
            Some(AudioNotice::Missing {
                seconds: 3,
                path: MediaPath::Direct
            })
        );
        assert!(w.missing());
        assert_eq!(w.check(&at(4_000.0)), None, "told once");
        assert_eq!(w.check(&at(20.0)), Some(AudioNotice::Back));
        assert_eq!(w.check(&at(20.0)), None);
    }
}
