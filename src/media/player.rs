//! Sounds outside a call: the ringtone, the settings' test tone, and the settings' microphone
//! meter. Each runs on a thread of its own that opens its device there (cpal streams stay on
//! the thread that made them) and paces itself on an absolute 20 ms deadline.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::device::{CaptureDevice, PlaybackDevice};

/// Samples per 20 ms at 48 kHz.
const FRAME: usize = 960;
const TICK: Duration = Duration::from_millis(20);

/// A thread that stops soon after it is told (or dropped).
struct SoundThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SoundThread {
    fn spawn(
        name: &str,
        body: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<SoundThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&flag))?;
        Ok(SoundThread {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SoundThread {
    /// Tells the thread to stop without waiting for it: it may be inside a slow device call
    /// (opening or closing an ALSA stream can take seconds), and the window must not freeze.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.thread.take());
    }
}

/// Runs `step` every 20 ms until `stop` is set or `step` returns false.
fn paced(stop: &AtomicBool, mut step: impl FnMut() -> bool) {
    let mut deadline = Instant::now();
    while !stop.load(Ordering::Relaxed) && step() {
        deadline += TICK;
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        } else {
            deadline = now;
        }
    }
}

/// Plays a clip on an output device, once or looped, until dropped.
pub struct Player {
    _worker: SoundThread,
}

impl Player {
    /// `device`: part of an output device name, `None` for the default.
    pub fn start(
        device: Option<String>,
        clip: Arc<[f32]>,
        looped: bool,
    ) -> std::io::Result<Player> {
        let worker = SoundThread::spawn("fala-player", move |stop| {
            let mut out = PlaybackDevice::open(device, FRAME);
            let mut frame = [0.0f32; FRAME];
            let mut at = 0;
            // A one-shot clip is followed by 200 ms of silence so its tail drains through the
            // device before the stream closes.
            let total = clip.len() + 10 * FRAME;
            let mut written = 0;
            paced(stop, || {
                out.maintain();
                for s in frame.iter_mut() {
                    if looped && at >= clip.len() {
                        at = 0;
                    }
                    *s = clip.get(at).copied().unwrap_or(0.0);
                    at += 1;
                }
                out.write(&frame);
                written += FRAME;
                looped || written < total
            });
        })?;
        Ok(Player { _worker: worker })
    }
}

/// A sine tone, for the settings' test button.
pub fn tone(hz: f32, seconds: f32, amplitude: f32) -> Arc<[f32]> {
    let n = (seconds * 48_000.0) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            // 10 ms fades so the tone starts and stops without clicks.
            let fade = (t / 0.01).min(((n - i) as f32 / 48_000.0) / 0.01).min(1.0);
            amplitude * fade * (2.0 * std::f32::consts::PI * hz * t).sin()
        })
        .collect()
}

/// Reads an input device only to show its level (the settings' microphone meter).
pub struct MicMeter {
    _worker: SoundThread,
    peak: Arc<AtomicU32>,
}

impl MicMeter {
    pub fn start(device: Option<String>) -> std::io::Result<MicMeter> {
        let peak = Arc::new(AtomicU32::new(0));
        let level = peak.clone();
        let worker = SoundThread::spawn("fala-mic-meter", move |stop| {
            let mut input = CaptureDevice::open(device);
            let mut frame = [0.0f32; FRAME];
            paced(stop, || {
                input.maintain();
                input.read(&mut frame);
                let p = frame.iter().fold(0.0f32, |a, v| a.max(v.abs())).min(1.0);
                level.store(p.to_bits(), Ordering::Relaxed);
                true
            });
        })?;
        Ok(MicMeter {
            _worker: worker,
            peak,
        })
    }

    /// Peak of the last 20 ms, 0..=1.
    pub fn level(&self) -> f32 {
        f32::from_bits(self.peak.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_has_its_length_and_soft_edges() {
        let t = tone(440.0, 0.5, 0.3);
        assert_eq!(t.len(), 24_000);
        assert!(t[0].abs() < 0.01 && t[t.len() - 1].abs() < 0.01);
        let peak = t.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!((0.29..=0.3).contains(&peak));
    }
}
