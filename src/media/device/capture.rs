//! The microphone side: device audio to 48 kHz frames handed out one per tick.

use super::fill::{period48, targets, Diag};
use super::stream::{input_stream, ring_len};
use super::DeviceSlot;
use crate::media::codec::SAMPLE_RATE;
use crate::media::drift::{Adjust, FillController};
use crate::media::resample::Resampler;
use ringbuf::traits::Consumer;
use ringbuf::HeapCons;

/// Most capture audio held back to ride out a bursty device, ms: a little more than the
/// largest block a PulseAudio source delivers at once (the test microphone, its sine source,
/// is the burstiest seen).
const MAX_CAPTURE_GOAL_MS: usize = 2_500;

/// A microphone: device samples, mixed to mono in the callback, converted to 48 kHz here with a
/// drift-compensating ratio, and handed out one frame per tick from a buffer whose low-water
/// mark is held just above one frame (see [`FillController`]).
pub struct CaptureDevice {
    dev: DeviceSlot<HeapCons<f32>>,
    resampler: Resampler,
    scratch: Vec<f32>,
    fifo: Vec<f32>,
    control: FillController,
    /// Period and frame the targets were computed for.
    sized_for: (usize, usize),
    /// Waiting for enough audio before handing any out (start, reopen, after an underrun).
    priming: bool,
    /// The stream has handed out audio since it was opened (later primings are underruns).
    flowing: bool,
    /// Samples of silence sent while re-priming after an underrun.
    waited: usize,
    /// The goal was raised during this priming.
    regrown: bool,
    diag: Diag,
}

impl CaptureDevice {
    /// Opens the named (or default) capture device; without one, reads silence and retries.
    pub fn open(name: Option<String>) -> Self {
        let (goal, band, window) = targets(0, 960);
        let mut d = Self {
            dev: DeviceSlot::new(name, true),
            resampler: Resampler::adaptive(SAMPLE_RATE, SAMPLE_RATE),
            scratch: vec![0.0; ring_len(192_000)],
            fifo: Vec::with_capacity(ring_len(SAMPLE_RATE) * 2),
            control: FillController::new(960 + goal, band, window),
            sized_for: (0, 960),
            priming: true,
            flowing: false,
            waited: 0,
            regrown: false,
            diag: Diag::new(),
        };
        d.try_open();
        d
    }

    fn try_open(&mut self) {
        self.fifo.clear();
        self.priming = true;
        self.flowing = false;
        self.waited = 0;
        self.regrown = false;
        self.sized_for.0 = usize::MAX;
        if let Some(rate) = self.dev.reopen(input_stream) {
            self.resampler = Resampler::adaptive(rate, SAMPLE_RATE);
        }
    }

    /// Reopens the device after an error (or retries a missing one) every few seconds.
    pub fn maintain(&mut self) {
        if self.dev.needs_reopen() {
            self.try_open();
        }
    }

    /// Fills one frame. Until the device has delivered enough (its start-up, which through
    /// ALSA and PulseAudio is slow) and after an underrun, that is silence.
    pub fn read(&mut self, out: &mut [f32]) {
        let frame = out.len();
        let (Some(ring), Some(stream)) = (&mut self.dev.ring, &self.dev.stream) else {
            out.fill(0.0);
            return;
        };
        let n = ring.pop_slice(&mut self.scratch);
        self.resampler.process(&self.scratch[..n], &mut self.fifo);
        let period = period48(stream);
        if (period, frame) != self.sized_for && period > 0 {
            let (margin, band, window) = targets(period, frame);
            self.control = FillController::new(frame + margin, band, window);
            self.sized_for = (period, frame);
        }
        let level = self.fifo.len();
        self.diag.fill(level);
        if self.priming {
            if self.flowing && self.waited > 0 && level >= self.control.goal() {
                // The device is burstier than the goal allowed for: hold more from now on,
                // and keep priming up to the new goal (one longer gap, instead of many).
                // Twice the wait: a burst cycle is rarely regular to a frame, and a second
                // underrun costs far more than the extra delay.
                self.control
                    .grow(2 * self.waited, frame, MAX_CAPTURE_GOAL_MS * 48);
                self.waited = 0;
                self.regrown = true;
            }
            if level < self.control.goal() {
                out.fill(0.0);
                self.diag.padded += frame;
                if self.flowing && !self.regrown {
                    self.waited += frame;
                }
                self.diag
                    .report("capture", self.dev.stream.as_ref(), &self.control);
                return;
            }
            self.priming = false;
            self.regrown = false;
            self.control.reset();
            self.flowing = true;
            self.waited = 0;
        }
        if let Adjust::Skip(k) = self.control.observe(level) {
            let k = k.min(level.saturating_sub(frame));
            self.fifo.drain(..k);
            self.diag.trimmed += k;
        }
        self.resampler.set_correction(self.control.correction());
        if self.fifo.len() < frame {
            // Underrun: keep what there is, send silence, and wait for a full buffer again.
            out.fill(0.0);
            self.priming = true;
            self.diag.padded += frame;
            self.diag.underruns += 1;
        } else {
            out.copy_from_slice(&self.fifo[..frame]);
            self.fifo.drain(..frame);
        }
        self.diag
            .report("capture", self.dev.stream.as_ref(), &self.control);
    }

    /// Whether a microphone is open (the call sends silence while none is).
    pub fn is_open(&self) -> bool {
        self.dev.is_open()
    }

    /// Samples buffered between the microphone and the encoder (an estimate).
    pub fn latency_samples(&self) -> usize {
        self.fifo.len() + self.dev.queued48()
    }
}
