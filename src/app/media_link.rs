//! The one seam between the window and the audio engine.
//!
//! The window's logic only ever talks to audio through [`MediaLink`]: it starts media when a
//! call connects, stops it when the call ends, and reads levels and statistics to draw the
//! in-call screen. The real engine (`fala::media`, cpal + Opus) is built on another branch and
//! plugs in by implementing this trait; until then [`NoEngine`] says so honestly: no numbers
//! are made up, meters stay at zero and the screen shows "audio engine not connected".

use std::net::UdpSocket;
use std::path::{Path, PathBuf};

use fala_proto::MediaAddr;
use thiserror::Error;

/// The ringtone played for incoming calls (see assets/README.md for how it was made).
pub const RINGTONE_WAV: &[u8] = include_bytes!("../../assets/ringtone.wav");

/// Everything the engine needs to start sending and receiving audio for one call.
#[derive(Debug)]
pub struct CallMedia {
    /// The UDP socket registered with the server (a clone; the window keeps its own).
    pub socket: UdpSocket,
    /// Where the peer receives audio.
    pub peer: MediaAddr,
    /// The peer's public media key from `incoming_call` / `call_connected`, if it sent one.
    pub peer_key: Option<Vec<u8>>,
    /// We placed the call (the caller's key comes first in the key schedule).
    pub outgoing: bool,
    /// Audio choices from Settings, read when the call starts.
    pub audio: AudioChoice,
}

/// The user's audio settings as the engine needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChoice {
    /// `None` = the system default device.
    pub input_device: Option<String>,
    pub output_device: Option<String>,
    /// 10 or 20.
    pub frame_ms: u32,
    pub bitrate_kbps: u32,
    /// Most redundant copies per packet under loss (0-2).
    pub max_copies: u8,
}

/// Live call statistics, as measured by the engine. Each is `None` until known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    pub rtt_ms: Option<f32>,
    /// Percent of the peer's packets that never arrived (0–100).
    pub loss_pct: Option<f32>,
    pub jitter_ms: Option<f32>,
    /// Current playout delay of the jitter buffer.
    pub jitter_buffer_ms: Option<f32>,
    /// Bitrate being sent, kbit/s.
    pub send_kbps: Option<f32>,
    /// Percent of the lost packets whose audio came back (redundant copies, FEC), 0–100;
    /// `None` while nothing was lost.
    pub restored_pct: Option<f32>,
    /// Redundant copies we add to each packet now (0–2).
    pub copies_sent: Option<u8>,
}

/// A rough verdict a person can read at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    Fair,
    Poor,
}

impl CallStats {
    /// Good / fair / poor from loss, delay and jitter (thresholds after ITU-T G.114 and common
    /// VoIP practice: under 150 ms one way feels natural, over 5 % loss is clearly audible).
    /// The loss that counts is what is still missing after restoring (at 10 % network loss a
    /// call restores ~90 % and sounds fair, not poor). `None` until the engine has measured
    /// loss and round trip.
    pub fn quality(&self) -> Option<Quality> {
        let loss = self.loss_pct? * (1.0 - self.restored_pct.unwrap_or(0.0) / 100.0);
        let rtt = self.rtt_ms?;
        let jitter = self.jitter_ms.unwrap_or(0.0);
        Some(if loss < 1.0 && rtt < 300.0 && jitter < 30.0 {
            Quality::Good
        } else if loss < 5.0 && rtt < 600.0 && jitter < 60.0 {
            Quality::Fair
        } else {
            Quality::Poor
        })
    }
}

/// Input and output loudness, 0.0 (silence) to 1.0 (full scale), for the meters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Levels {
    pub input: f32,
    pub output: f32,
}

/// Audio devices the engine can open, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MediaError {
    #[error("audio engine not connected")]
    NotConnected,
    #[error("{0}")]
    Engine(String),
}

/// What the window needs from an audio engine. Calls come from the UI thread and must return
/// quickly: an engine does its work on threads of its own.
pub trait MediaLink: Send {
    /// False for [`NoEngine`]: the window then shows that audio is not connected.
    fn is_connected(&self) -> bool;
    /// This side's public media key to send in `invite` / `accept`, if the engine encrypts.
    fn local_key(&mut self) -> Option<Vec<u8>>;
    /// The call connected: start capturing, encoding, sending, receiving and playing.
    fn start(&mut self, call: CallMedia) -> Result<(), MediaError>;
    /// The call is over: stop everything the call started (recording too).
    fn stop(&mut self);
    fn set_muted(&mut self, muted: bool);
    /// Statistics of the running call, `None` when no call is running.
    fn stats(&self) -> Option<CallStats>;
    /// Meter levels: of the call while one runs, else of the microphone when the settings'
    /// meter is open ([`MediaLink::monitor_input`]).
    fn levels(&self) -> Levels;
    /// Records both directions of the running call to a WAV file.
    fn start_recording(&mut self, path: &Path) -> Result<(), MediaError>;
    fn stop_recording(&mut self);
    /// Plays `wav` in a loop until [`MediaLink::stop_ringing`] (the ringtone).
    fn start_ringing(&mut self, wav: &'static [u8]) -> Result<(), MediaError>;
    fn stop_ringing(&mut self);
    /// Plays a short tone on the chosen output device (settings' test button).
    fn play_test_tone(&mut self, audio: &AudioChoice) -> Result<(), MediaError>;
    /// Opens (or closes) the chosen input device just to feed the settings' level meter.
    fn monitor_input(&mut self, audio: Option<&AudioChoice>);
    fn devices(&self) -> Devices;
    /// The running call's short authentication string when its media is encrypted.
    fn security_code(&self) -> Option<String> {
        None
    }
}

/// The stand-in used until the audio engine is wired in: it does nothing and says so.
#[derive(Debug, Default)]
pub struct NoEngine {
    /// Kept so tests can see the window asked for the right things at the right times.
    pub started: Option<(MediaAddr, Option<Vec<u8>>)>,
    pub muted: bool,
    pub ringing: bool,
    pub recording: Option<PathBuf>,
}

impl MediaLink for NoEngine {
    fn is_connected(&self) -> bool {
        false
    }
    fn local_key(&mut self) -> Option<Vec<u8>> {
        None
    }
    fn start(&mut self, call: CallMedia) -> Result<(), MediaError> {
        self.started = Some((call.peer, call.peer_key));
        Ok(())
    }
    fn stop(&mut self) {
        self.started = None;
        self.recording = None;
        self.muted = false;
    }
    fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }
    fn stats(&self) -> Option<CallStats> {
        None
    }
    fn levels(&self) -> Levels {
        Levels::default()
    }
    fn start_recording(&mut self, _path: &Path) -> Result<(), MediaError> {
        Err(MediaError::NotConnected)
    }
    fn stop_recording(&mut self) {
        self.recording = None;
    }
    fn start_ringing(&mut self, _wav: &'static [u8]) -> Result<(), MediaError> {
        self.ringing = true;
        Err(MediaError::NotConnected)
    }
    fn stop_ringing(&mut self) {
        self.ringing = false;
    }
    fn play_test_tone(&mut self, _audio: &AudioChoice) -> Result<(), MediaError> {
        Err(MediaError::NotConnected)
    }
    fn monitor_input(&mut self, _audio: Option<&AudioChoice>) {}
    fn devices(&self) -> Devices {
        Devices::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_needs_measurements_and_follows_thresholds() {
        assert_eq!(CallStats::default().quality(), None);
        let mut s = CallStats {
            rtt_ms: Some(40.0),
            loss_pct: Some(0.2),
            jitter_ms: Some(5.0),
            ..CallStats::default()
        };
        assert_eq!(s.quality(), Some(Quality::Good));
        s.loss_pct = Some(3.0);
        assert_eq!(s.quality(), Some(Quality::Fair));
        s.loss_pct = Some(10.0);
        assert_eq!(s.quality(), Some(Quality::Poor));
        s.restored_pct = Some(95.0);
        assert_eq!(
            s.quality(),
            Some(Quality::Good),
            "0.5 % left after restoring"
        );
        s.rtt_ms = Some(900.0);
        assert_eq!(s.quality(), Some(Quality::Poor));
    }

    #[test]
    fn ringtone_is_a_wav_file() {
        assert_eq!(&RINGTONE_WAV[..4], b"RIFF");
        assert_eq!(&RINGTONE_WAV[8..12], b"WAVE");
    }
}
