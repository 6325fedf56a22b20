//! The window's sounds outside a call: the ringtone, the settings' test tone and microphone
//! meter, and the lists of devices to choose from. Each player opens its device on a thread of
//! its own, and devices are listed on a thread of their own, so nothing here waits for the
//! sound system.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::media::player::{tone, MicMeter, Player};

/// The ringtone played for incoming calls (see assets/README.md for how it was made).
pub const RINGTONE_WAV: &[u8] = include_bytes!("../../assets/ringtone.wav");

/// How often the device lists are refreshed while Settings shows them (listing opens the
/// sound system, which can take a while).
const DEVICE_REFRESH: Duration = Duration::from_secs(5);

/// Audio devices that can be chosen, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SoundError {
    #[error("audio engine not connected")]
    NoEngine,
    #[error("{0}")]
    Failed(String),
}

/// Sounds and device lists; all silent and empty when the window has no audio engine.
pub struct Sounds {
    enabled: bool,
    ringer: Option<Player>,
    test_tone: Option<Player>,
    /// The settings' meter and the input device it reads.
    mic_meter: Option<(Option<String>, MicMeter)>,
    devices: DeviceLists,
}

impl Sounds {
    pub fn new(enabled: bool) -> Self {
        Sounds {
            enabled,
            ringer: None,
            test_tone: None,
            mic_meter: None,
            devices: DeviceLists::default(),
        }
    }

    /// Whether there is an audio engine behind these sounds (and the calls).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Loops the ringtone until [`Sounds::stop_ringing`].
    pub fn start_ringing(&mut self) -> Result<(), SoundError> {
        if !self.enabled {
            return Err(SoundError::NoEngine);
        }
        let clip: Arc<[f32]> = crate::media::io::decode_wav(RINGTONE_WAV)
            .map_err(|e| SoundError::Failed(e.to_string()))?
            .into();
        let player =
            Player::start(None, clip, true).map_err(|e| SoundError::Failed(e.to_string()))?;
        self.ringer = Some(player);
        Ok(())
    }

    pub fn stop_ringing(&mut self) {
        self.ringer = None;
    }

    /// Plays a short tone on `output` (`None`: the default device).
    pub fn play_test_tone(&mut self, output: Option<String>) -> Result<(), SoundError> {
        if !self.enabled {
            return Err(SoundError::NoEngine);
        }
        let clip = tone(440.0, 1.0, 0.3);
        let player =
            Player::start(output, clip, false).map_err(|e| SoundError::Failed(e.to_string()))?;
        self.test_tone = Some(player);
        Ok(())
    }

    /// Keeps one meter on `input` (called every frame the settings show; `None` closes it).
    pub fn monitor_input(&mut self, input: Option<Option<String>>) {
        let wanted = input.filter(|_| self.enabled);
        let current = self.mic_meter.as_ref().map(|(device, _)| device.clone());
        if wanted == current {
            return;
        }
        self.mic_meter =
            wanted.and_then(|device| Some((device.clone(), MicMeter::start(device).ok()?)));
    }

    /// The settings' microphone meter, 0..=1.
    pub fn mic_level(&self) -> f32 {
        self.mic_meter.as_ref().map_or(0.0, |(_, m)| m.level())
    }

    /// Closes the meter and the test tone: a call is about to open the same devices.
    pub fn release_devices(&mut self) {
        self.mic_meter = None;
        self.test_tone = None;
    }

    /// The device lists as last read (empty until the first answer); asks for fresh ones when
    /// these are old. `wake` is called when an answer arrives.
    pub fn devices(&mut self, wake: impl Fn() + Send + Sync + 'static) -> &Devices {
        if self.enabled {
            self.devices.refresh(wake);
        }
        &self.devices.latest
    }
}

/// Wakes the window when an answer arrives.
type Wake = Box<dyn Fn() + Send + Sync>;
/// The lister thread's request queue and answer queue.
type Lister = (SyncSender<Wake>, Receiver<Devices>);

/// Device lists read on a thread of their own ("fala-devices"), on request.
#[derive(Default)]
struct DeviceLists {
    latest: Devices,
    asked_at: Option<Instant>,
    worker: Option<Lister>,
}

impl DeviceLists {
    fn refresh(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        if let Some((_, answers)) = &self.worker {
            loop {
                match answers.try_recv() {
                    Ok(devices) => self.latest = devices,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.worker = None;
                        break;
                    }
                }
            }
        }
        if self
            .asked_at
            .is_some_and(|at| at.elapsed() < DEVICE_REFRESH)
        {
            return;
        }
        if self.worker.is_none() {
            self.worker = spawn_lister();
        }
        if let Some((asks, _)) = &self.worker {
            // A full queue means a listing is under way already.
            let _ = asks.try_send(Box::new(wake));
            self.asked_at = Some(Instant::now());
        }
    }
}

/// The lister thread: one listing per request, answered with the lists and a wake-up call.
fn spawn_lister() -> Option<Lister> {
    let (ask_tx, ask_rx) = sync_channel::<Wake>(1);
    let (answer_tx, answer_rx) = sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("fala-devices".into())
        .spawn(move || {
            for wake in ask_rx {
                let (inputs, outputs) = crate::media::device::list_devices();
                if answer_tx.send(Devices { inputs, outputs }).is_err() {
                    break;
                }
                wake();
            }
        });
    match spawned {
        Ok(_) => Some((ask_tx, answer_rx)),
        Err(e) => {
            tracing::warn!("cannot list audio devices: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ringtone_is_a_wav_file() {
        assert_eq!(&RINGTONE_WAV[..4], b"RIFF");
        assert_eq!(&RINGTONE_WAV[8..12], b"WAVE");
    }
}
