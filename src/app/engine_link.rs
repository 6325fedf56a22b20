//! The window's audio: the real media engine behind the [`MediaLink`] seam.
//!
//! Every method returns at once: the engine, the ringtone player and the microphone meter
//! each run on threads of their own; this type only starts, stops and reads them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use fala_proto::media_crypto::{KeyPair, Role};

use super::media_link::{
    AudioChoice, CallMedia, CallStats, Devices, Levels, MediaError, MediaLink,
};
use crate::media::player::{tone, MicMeter, Player};
use crate::media::{
    CodecSettings, FrameMs, InputSpec, JitterSettings, MediaConfig, MediaEngine, MediaHandle,
    OutputSpec,
};

/// The real audio engine for the window.
#[derive(Default)]
pub struct EngineLink {
    /// This call's key pair, made when the window sends an invite or accept.
    keys: Option<KeyPair>,
    call: Option<MediaHandle>,
    ringer: Option<Player>,
    test_tone: Option<Player>,
    /// The settings' meter and the input device it reads.
    mic_meter: Option<(Option<String>, MicMeter)>,
    /// Device names, listed at most every few seconds (listing opens the sound system).
    devices: std::sync::Mutex<Option<(std::time::Instant, Devices)>>,
    /// The six-digit code of the running call, when encrypted.
    sas: Option<String>,
}

impl EngineLink {
    pub fn new() -> Self {
        Self::default()
    }
}

fn engine_error(e: impl std::fmt::Display) -> MediaError {
    MediaError::Engine(e.to_string())
}

/// Codec settings from the user's choices.
fn codec(audio: &AudioChoice) -> CodecSettings {
    CodecSettings {
        bitrate: audio.bitrate_kbps.clamp(6, 510) * 1000,
        max_copies: audio.max_copies.min(2),
        frame: if audio.frame_ms < 20 {
            FrameMs::Ten
        } else {
            FrameMs::Twenty
        },
        ..CodecSettings::default()
    }
}

impl MediaLink for EngineLink {
    fn is_connected(&self) -> bool {
        true
    }

    fn local_key(&mut self) -> Option<Vec<u8>> {
        self.keys = KeyPair::generate().ok();
        self.keys.as_ref().map(|k| k.public_bytes().to_vec())
    }

    fn start(&mut self, call: CallMedia) -> Result<(), MediaError> {
        self.stop_call();
        // A meter or test tone would hold the same devices the call needs.
        self.mic_meter = None;
        self.test_tone = None;
        let role = if call.outgoing {
            Role::Caller
        } else {
            Role::Callee
        };
        let crypto = match (self.keys.take(), &call.peer_key) {
            (Some(keys), Some(peer)) => Some(keys.derive(role, peer).map_err(engine_error)?),
            _ => None,
        };
        self.sas = crypto.as_ref().map(|c| c.sas());
        let config = MediaConfig {
            socket: call.socket,
            peer: SocketAddr::V4(call.peer.0),
            crypto,
            input: InputSpec::Device(call.audio.input_device.clone()),
            output: OutputSpec::Device(call.audio.output_device.clone()),
            codec: codec(&call.audio),
            jitter: JitterSettings::default(),
        };
        self.call = Some(MediaEngine::start(config).map_err(engine_error)?);
        Ok(())
    }

    fn stop(&mut self) {
        self.stop_call();
    }

    fn set_muted(&mut self, muted: bool) {
        if let Some(call) = &self.call {
            call.set_muted(muted);
        }
    }

    fn stats(&self) -> Option<CallStats> {
        let s = self.call.as_ref()?.stats();
        let expected = s.packets_received as f64 + s.packets_lost.max(0) as f64;
        Some(CallStats {
            rtt_ms: s.rtt_ms.map(|v| v as f32),
            loss_pct: (expected > 0.0)
                .then(|| (100.0 * s.packets_lost.max(0) as f64 / expected) as f32),
            jitter_ms: Some(s.jitter_ms as f32),
            jitter_buffer_ms: Some(s.jitter_buffer_ms as f32),
            send_kbps: Some(s.bitrate_kbps as f32),
            restored_pct: (s.packets_lost > 0).then(|| {
                let restored = (s.copy_recovered + s.fec_recovered) as f32;
                (100.0 * restored / s.packets_lost as f32).min(100.0)
            }),
            copies_sent: Some(s.copies_sent),
        })
    }

    fn levels(&self) -> Levels {
        if let Some(call) = &self.call {
            let l = call.levels();
            return Levels {
                input: l.input(),
                output: l.output(),
            };
        }
        Levels {
            input: self.mic_meter.as_ref().map_or(0.0, |(_, m)| m.level()),
            output: 0.0,
        }
    }

    fn start_recording(&mut self, path: &Path) -> Result<(), MediaError> {
        let call = self
            .call
            .as_ref()
            .ok_or_else(|| engine_error("no call to record"))?;
        call.record(path).map_err(engine_error)
    }

    fn stop_recording(&mut self) {
        if let Some(call) = &self.call {
            call.stop_recording();
        }
    }

    fn start_ringing(&mut self, wav: &'static [u8]) -> Result<(), MediaError> {
        let clip: Arc<[f32]> = crate::media::io::decode_wav(wav)
            .map_err(engine_error)?
            .into();
        self.ringer = Some(Player::start(None, clip, true).map_err(engine_error)?);
        Ok(())
    }

    fn stop_ringing(&mut self) {
        self.ringer = None;
    }

    fn play_test_tone(&mut self, audio: &AudioChoice) -> Result<(), MediaError> {
        let clip = tone(440.0, 1.0, 0.3);
        self.test_tone =
            Some(Player::start(audio.output_device.clone(), clip, false).map_err(engine_error)?);
        Ok(())
    }

    /// Called every frame the settings screen is open: keeps one meter on the chosen device.
    fn monitor_input(&mut self, audio: Option<&AudioChoice>) {
        let wanted = audio
            .filter(|_| self.call.is_none())
            .map(|a| a.input_device.clone());
        let current = self.mic_meter.as_ref().map(|(device, _)| device.clone());
        if wanted == current {
            return;
        }
        self.mic_meter =
            wanted.and_then(|device| Some((device.clone(), MicMeter::start(device).ok()?)));
    }

    fn security_code(&self) -> Option<String> {
        self.sas.clone()
    }

    fn devices(&self) -> Devices {
        const REFRESH: std::time::Duration = std::time::Duration::from_secs(5);
        let mut cache = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, devices)) = cache.as_ref() {
            if at.elapsed() < REFRESH {
                return devices.clone();
            }
        }
        let (inputs, outputs) = crate::media::device::list_devices();
        let devices = Devices { inputs, outputs };
        *cache = Some((std::time::Instant::now(), devices.clone()));
        devices
    }
}

impl EngineLink {
    /// Stops the call's engine off the UI thread: joining the media thread waits for its
    /// devices to close, which can take a moment with some sound servers.
    fn stop_call(&mut self) {
        if let Some(call) = self.call.take() {
            let _ = std::thread::Builder::new()
                .name("fala-media-stop".into())
                .spawn(move || {
                    call.stop();
                });
        }
        self.sas = None;
    }
}
