//! The speaker side: 48 kHz frames to the device's rate, queued for its callback.

use super::fill::{period48, targets, Diag};
use super::stream::{output_stream, ring_len};
use super::DeviceSlot;
use crate::media::codec::SAMPLE_RATE;
use crate::media::drift::{Adjust, FillController};
use crate::media::resample::Resampler;
use ringbuf::traits::{Observer, Producer};
use ringbuf::HeapProd;
use std::sync::atomic::Ordering;

/// A speaker: 48 kHz frames converted to the device rate with a drift-compensating ratio and
/// queued for its callback, the queue's low-water mark held just above empty.
pub struct PlaybackDevice {
    dev: DeviceSlot<HeapProd<f32>>,
    resampler: Resampler,
    scratch: Vec<f32>,
    control: FillController,
    sized_for: (usize, usize),
    /// Samples the engine usually writes at once (a frame; stretched frames vary around it).
    frame: usize,
    /// Samples of the device's silence fills (underruns) already answered.
    lost_seen: u64,
    /// Input still to be dropped to bring the level back into its band.
    skip: usize,
    diag: Diag,
}

impl PlaybackDevice {
    /// Opens the named (or default) playback device for writes of about `frame` samples;
    /// without one, discards and retries.
    pub fn open(name: Option<String>, frame: usize) -> Self {
        let (goal, band, window) = targets(0, frame);
        let mut d = Self {
            dev: DeviceSlot::new(name, false),
            resampler: Resampler::adaptive(SAMPLE_RATE, SAMPLE_RATE),
            scratch: Vec::with_capacity(ring_len(192_000)),
            control: FillController::new(goal, band, window),
            sized_for: (0, frame),
            frame,
            lost_seen: 0,
            skip: 0,
            diag: Diag::new(),
        };
        d.try_open();
        d
    }

    fn try_open(&mut self) {
        self.lost_seen = 0;
        self.skip = 0;
        self.sized_for.0 = usize::MAX;
        if let Some(rate) = self.dev.reopen(output_stream) {
            self.resampler = Resampler::adaptive(SAMPLE_RATE, rate);
        }
    }

    /// Reopens the device after an error (or retries a missing one) every few seconds.
    pub fn maintain(&mut self) {
        if self.dev.needs_reopen() {
            self.try_open();
        }
    }

    /// Queues 48 kHz samples (about a frame).
    pub fn write(&mut self, frame: &[f32]) {
        let (Some(ring), Some(stream)) = (&mut self.dev.ring, &self.dev.stream) else {
            return;
        };
        let to48 = |n: usize| n * SAMPLE_RATE as usize / stream.rate.max(1) as usize;
        let from48 = |n: usize| n * stream.rate.max(1) as usize / SAMPLE_RATE as usize;
        let period = period48(stream);
        if (period, self.frame) != self.sized_for && period > 0 {
            let (margin, band, window) = targets(period, self.frame);
            self.control = FillController::new(margin, band, window);
            self.sized_for = (period, self.frame);
        }
        let level = to48(ring.occupied_len());
        self.diag.fill(level);
        // The callback played silence since the last tick: an underrun (or the device's
        // start). Refill to the goal at once rather than starving on every period.
        let lost = stream.counters.lost.load(Ordering::Relaxed);
        if lost != self.lost_seen {
            self.lost_seen = lost;
            let missing = from48(self.control.goal().saturating_sub(level));
            for _ in 0..missing {
                if ring.try_push(0.0).is_err() {
                    break;
                }
            }
            self.skip = 0;
            self.control.reset();
            self.diag.underruns += 1;
        } else if let Adjust::Skip(k) = self.control.observe(level) {
            self.skip = from48(k);
        }
        self.resampler.set_correction(self.control.correction());
        self.scratch.clear();
        self.resampler.process(frame, &mut self.scratch);
        let dropped = self.skip.min(self.scratch.len());
        self.skip -= dropped;
        // A hard bound on delay, whatever happens (a device that stopped consuming).
        let cap = from48(
            self.control.goal() + 2 * self.control.band() + period + self.frame.max(frame.len()),
        );
        let room = cap.saturating_sub(ring.occupied_len());
        let keep = &self.scratch[dropped..];
        let pushed = ring.push_slice(&keep[..keep.len().min(room)]);
        self.diag.trimmed += self.scratch.len() - pushed;
        self.diag
            .report("playback", self.dev.stream.as_ref(), &self.control);
    }

    /// Whether a speaker is open (the call plays nowhere while none is).
    pub fn is_open(&self) -> bool {
        self.dev.is_open()
    }

    /// Samples queued ahead of the speaker, at 48 kHz.
    pub fn latency_samples(&self) -> usize {
        self.dev.queued48()
    }
}
