//! Recording a call to a WAV file: both directions mixed to one 48 kHz mono track, written by
//! the media thread (never by an audio callback) as each playout quantum is produced.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// The WAV writer a recording owns.
pub type WavOut = hound::WavWriter<BufWriter<File>>;

/// Opens a 48 kHz mono 16-bit WAV file for a recording, readable by its owner only (it holds
/// a conversation).
pub fn create_wav(path: &Path) -> Result<WavOut, hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let file = crate::private_files::create(path)?;
    hound::WavWriter::new(BufWriter::new(file), spec)
}

/// Mixes what the microphone captured with what was played, quantum by quantum.
pub struct Recorder {
    wav: WavOut,
    /// Captured samples waiting to be mixed (capture runs per frame, playout per quantum).
    mic: VecDeque<f32>,
    failed: bool,
}

impl Recorder {
    /// `frame` is the capture frame size; the mic queue holds a few frames, preallocated.
    pub fn new(wav: WavOut, frame: usize) -> Self {
        Recorder {
            wav,
            mic: VecDeque::with_capacity(4 * frame),
            failed: false,
        }
    }

    /// Queues one captured frame (the bounded queue drops the oldest when full).
    pub fn captured(&mut self, frame: &[f32]) {
        for &s in frame {
            if self.mic.len() == self.mic.capacity() {
                self.mic.pop_front();
            }
            self.mic.push_back(s);
        }
    }

    /// Writes one played quantum mixed with the oldest captured samples.
    pub fn played(&mut self, out: &[f32]) {
        if self.failed {
            return;
        }
        for &s in out {
            let mixed = (s + self.mic.pop_front().unwrap_or(0.0)).clamp(-1.0, 1.0);
            if self.wav.write_sample((mixed * 32767.0) as i16).is_err() {
                self.failed = true;
                tracing::warn!("call recording: write failed, recording stopped");
                return;
            }
        }
    }

    /// Completes the WAV header.
    pub fn finish(self) {
        if let Err(e) = self.wav.finalize() {
            tracing::warn!("call recording: could not finish the file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_both_directions_into_one_track() {
        let path = std::env::temp_dir().join(format!("fala-rec-{}.wav", std::process::id()));
        let mut r = Recorder::new(create_wav(&path).unwrap(), 960);
        r.captured(&[0.25; 960]);
        r.played(&[0.5; 240]);
        r.played(&[0.0; 960]);
        r.played(&[0.0; 240]);
        r.finish();
        let samples: Vec<i16> = hound::WavReader::open(&path)
            .unwrap()
            .samples()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(samples.len(), 1440);
        assert_eq!(samples[0], (0.75f32 * 32767.0) as i16);
        assert_eq!(samples[300], (0.25f32 * 32767.0) as i16);
        assert_eq!(samples[1300], 0);
        let _ = std::fs::remove_file(path);
    }
}
