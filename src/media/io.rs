//! Where the engine's samples come from and go to: sound devices, WAV files, a tone, silence.
//!
//! Every source yields exactly one 48 kHz mono frame per send and every sink takes what is
//! played as it is played, so the engine's clock alone paces the call and a file records what
//! was heard in real time, gaps included (as silence).

use super::codec::SAMPLE_RATE;
use super::device::{CaptureDevice, PlaybackDevice};
use super::resample::resample_all;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// What the microphone side of a call reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InputSpec {
    /// A capture device by (part of its) name; `None` = the system default.
    Device(Option<String>),
    /// A WAV file (any rate and channel count), played from the start of the call, then silence.
    Wav(PathBuf),
    /// A sine tone, for tests and level checks.
    Tone {
        /// Frequency in Hz.
        hz: f32,
        /// Peak amplitude, 0..=1.
        amplitude: f32,
    },
    /// Nothing.
    Silence,
}

/// Where the speaker side of a call goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutputSpec {
    /// A playback device by (part of its) name; `None` = the system default.
    Device(Option<String>),
    /// A WAV file (48 kHz mono 16-bit) of what was heard, in real time.
    Wav(PathBuf),
    /// Discard.
    Null,
}

/// A source or sink could not be opened.
#[derive(Debug, Error)]
pub enum IoError {
    /// A WAV file could not be read or written.
    #[error("WAV file {path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What hound said.
        source: hound::Error,
    },
}

/// Loads a WAV file as 48 kHz mono samples in -1..1 (channels averaged, rate converted).
pub fn load_wav(path: &Path) -> Result<Vec<f32>, IoError> {
    let err = |source| IoError::Wav {
        path: path.to_owned(),
        source,
    };
    let reader = hound::WavReader::open(path).map_err(err)?;
    wav_to_mono48(reader).map_err(err)
}

/// Decodes WAV bytes held in memory (a built-in sound such as the ringtone) as 48 kHz mono.
pub fn decode_wav(bytes: &[u8]) -> Result<Vec<f32>, hound::Error> {
    wav_to_mono48(hound::WavReader::new(std::io::Cursor::new(bytes))?)
}

/// Averages channels and converts the rate: every sound inside Fala is 48 kHz mono.
fn wav_to_mono48<R: std::io::Read>(
    mut reader: hound::WavReader<R>,
) -> Result<Vec<f32>, hound::Error> {
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let mono: Vec<f32> = interleaved
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    Ok(if spec.sample_rate == SAMPLE_RATE {
        mono
    } else {
        resample_all(&mono, spec.sample_rate.max(1), SAMPLE_RATE)
    })
}

/// A source of one frame per tick.
pub(crate) enum Source {
    Device(Box<CaptureDevice>),
    Samples {
        data: Vec<f32>,
        at: usize,
    },
    Tone {
        phase: f32,
        step: f32,
        amplitude: f32,
    },
    Silence,
}

impl Source {
    /// Opens the source; a missing device degrades to silence inside [`CaptureDevice`].
    pub(crate) fn open(spec: &InputSpec) -> Result<Self, IoError> {
        Ok(match spec {
            InputSpec::Device(name) => Source::Device(Box::new(CaptureDevice::open(name.clone()))),
            InputSpec::Wav(path) => Source::Samples {
                data: load_wav(path)?,
                at: 0,
            },
            InputSpec::Tone { hz, amplitude } => Source::Tone {
                phase: 0.0,
                step: 2.0 * std::f32::consts::PI * hz / SAMPLE_RATE as f32,
                amplitude: *amplitude,
            },
            InputSpec::Silence => Source::Silence,
        })
    }

    /// Fills `out` with the next frame.
    pub(crate) fn read(&mut self, out: &mut [f32]) {
        match self {
            Source::Device(d) => d.read(out),
            Source::Samples { data, at } => {
                let start = (*at).min(data.len());
                let n = out.len().min(data.len() - start);
                out[..n].copy_from_slice(&data[start..start + n]);
                out[n..].fill(0.0);
                *at = start + out.len();
            }
            Source::Tone {
                phase,
                step,
                amplitude,
            } => {
                for s in out.iter_mut() {
                    *s = phase.sin() * *amplitude;
                    *phase = (*phase + *step) % (2.0 * std::f32::consts::PI);
                }
            }
            Source::Silence => out.fill(0.0),
        }
    }

    /// Passes over `samples` the schedule missed (a stall). A device drops what it could not
    /// hold by itself; a file or a tone moves on, so it stays in real time.
    pub(crate) fn skip(&mut self, samples: u64) {
        match self {
            Source::Samples { data, at } => {
                *at = (*at as u64 + samples).min(data.len() as u64) as usize;
            }
            Source::Tone { phase, step, .. } => {
                let turns = (*step as f64 * samples as f64) % std::f64::consts::TAU;
                *phase = ((*phase as f64 + turns) % std::f64::consts::TAU) as f32;
            }
            Source::Device(_) | Source::Silence => {}
        }
    }

    /// Capture buffering the source adds before the encoder sees a sample, in samples.
    /// A microphone was asked for and none is open (files and tones never miss).
    pub(crate) fn device_missing(&self) -> bool {
        matches!(self, Source::Device(d) if !d.is_open())
    }

    pub(crate) fn latency_samples(&self) -> usize {
        match self {
            Source::Device(d) => d.latency_samples(),
            _ => 0,
        }
    }
}

/// A sink of decoded audio, written a frame (as stretched) at a time.
pub(crate) enum Sink {
    Device(Box<PlaybackDevice>),
    Wav(Box<hound::WavWriter<std::io::BufWriter<std::fs::File>>>),
    Null,
}

impl Sink {
    /// Opens the sink for writes of about `frame` samples; a missing device degrades to
    /// discarding inside [`PlaybackDevice`].
    pub(crate) fn open(spec: &OutputSpec, frame: usize) -> Result<Self, IoError> {
        Ok(match spec {
            OutputSpec::Device(name) => {
                Sink::Device(Box::new(PlaybackDevice::open(name.clone(), frame)))
            }
            OutputSpec::Wav(path) => {
                let spec = hound::WavSpec {
                    channels: 1,
                    sample_rate: SAMPLE_RATE,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                };
                let w = hound::WavWriter::create(path, spec).map_err(|source| IoError::Wav {
                    path: path.clone(),
                    source,
                })?;
                Sink::Wav(Box::new(w))
            }
            OutputSpec::Null => Sink::Null,
        })
    }

    /// Takes the next samples. Write errors on a file are reported once by the caller through the
    /// return value; a device never fails here.
    pub(crate) fn write(&mut self, frame: &[f32]) -> Result<(), hound::Error> {
        match self {
            Sink::Device(d) => {
                d.write(frame);
                Ok(())
            }
            Sink::Wav(w) => {
                for s in frame {
                    w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
                }
                Ok(())
            }
            Sink::Null => Ok(()),
        }
    }

    /// Whether the sink keeps time only by what it is written (a file): time the engine missed
    /// must then be written as silence. A device's own clock goes on without it.
    pub(crate) fn keeps_time(&self) -> bool {
        matches!(self, Sink::Wav(_))
    }

    /// Playout buffering after the engine hands a sample over, in samples.
    /// A speaker was asked for and none is open.
    pub(crate) fn device_missing(&self) -> bool {
        matches!(self, Sink::Device(d) if !d.is_open())
    }

    pub(crate) fn latency_samples(&self) -> usize {
        match self {
            Sink::Device(d) => d.latency_samples(),
            _ => 0,
        }
    }

    /// Keeps a device healthy (reopen after an error); called before each write.
    pub(crate) fn maintain(&mut self) {
        if let Sink::Device(d) = self {
            d.maintain();
        }
    }

    /// Flushes and closes a file.
    pub(crate) fn finish(self) -> Result<(), hound::Error> {
        match self {
            Sink::Wav(w) => w.finalize(),
            _ => Ok(()),
        }
    }
}

impl Source {
    /// Keeps a device healthy (reopen after an error); called before each read.
    pub(crate) fn maintain(&mut self) {
        if let Source::Device(d) = self {
            d.maintain();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_at_any_rate_and_channels_loads_as_48k_mono() {
        let dir = std::env::temp_dir().join(format!("fala-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stereo22k.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 22_050,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..22_050 {
            let v = ((i as f32 * 0.1).sin() * 10_000.0) as i16;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let s = load_wav(&path).unwrap();
        assert_eq!(s.len(), 48_000);
        let peak = s.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!((peak - 10_000.0 / 32768.0).abs() < 0.03, "{peak}");

        let mut src = Source::open(&InputSpec::Wav(path.clone())).unwrap();
        let mut frame = [1.0f32; 960];
        for _ in 0..60 {
            src.read(&mut frame);
        }
        assert!(frame.iter().all(|v| *v == 0.0), "silence after the file");
        assert!(load_wav(&dir.join("missing.wav")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
