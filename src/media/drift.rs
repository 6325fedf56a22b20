//! Keeps the buffer between a sound device and the 20 ms media tick at a steady fill level.
//!
//! A device runs on its own clock and moves audio in periods (ALSA through PulseAudio hands over
//! tens of milliseconds at once), while the engine moves one frame per tick. The buffer between
//! them therefore saw-tooths; what matters is its *low-water mark*: the least audio it held at a
//! tick during the last window. Below one frame's worth the tick starves (a gap); far above it is
//! delay. The controller watches the low-water mark per window and answers with
//!
//! - a small rate correction for the resampler (a PI controller, at most ±[`MAX_CORRECTION`]),
//!   which absorbs clock drift and slowly steers the level to its goal without audible effect;
//! - a one-off skip when the level is far above the band (a burst at start-up, a stall that has
//!   recovered): dropping that audio at once is better than holding it as delay for seconds.
//!
//! Underruns (the level at zero) are handled by the caller re-priming the buffer; the controller
//! only needs to be told with [`FillController::reset`]. Pure: levels in, decisions out, so it is
//! tested offline.

/// Largest rate correction applied, relative (0.5 %: 9 cents of pitch, inaudible on speech).
pub const MAX_CORRECTION: f64 = 0.005;

/// What the caller should do with the buffer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjust {
    /// Nothing beyond the rate correction.
    None,
    /// Drop this many samples (oldest first for capture; newest input for playback).
    Skip(usize),
}

/// Watches a buffer's low-water mark and steers it to a goal.
#[derive(Debug, Clone)]
pub struct FillController {
    goal: usize,
    band: usize,
    window: u32,
    ticks: u32,
    low: usize,
    /// Low-water mark of the previous window (excess must persist two windows to be skipped).
    prev_low: usize,
    integral: f64,
    correction: f64,
}

/// Proportional gain: relative correction per sample of error (480 samples too many, i.e. 10 ms
/// at 48 kHz, are worked off in about 4 s).
const KP: f64 = 5e-6;
/// Integral gain per window: the drift estimate builds up over tens of seconds.
const KI: f64 = 5e-7;

impl FillController {
    /// `goal`: low-water mark wanted, in samples; `band`: excess above the goal tolerated before
    /// audio is skipped; `window`: ticks per decision.
    pub fn new(goal: usize, band: usize, window: u32) -> Self {
        Self {
            goal,
            band,
            window: window.max(1),
            ticks: 0,
            low: usize::MAX,
            prev_low: usize::MAX,
            integral: 0.0,
            correction: 0.0,
        }
    }

    /// The low-water mark wanted, samples.
    pub fn goal(&self) -> usize {
        self.goal
    }

    /// Excess above the goal tolerated before audio is skipped, samples.
    pub fn band(&self) -> usize {
        self.band
    }

    /// Relative rate correction for the resampler: positive means the buffer holds too much, so
    /// the side filling it should produce fewer samples (the resampler steps faster).
    pub fn correction(&self) -> f64 {
        self.correction
    }

    /// Raises the goal after an underrun that took `by` samples of waiting to recover from: the
    /// device delivers in bursts further apart than the goal allowed for. The window widens to
    /// cover several such bursts, and the band to half the goal, so one burst's peak is never
    /// mistaken for excess. Bounded by `max_goal`; the goal never shrinks within a stream.
    pub fn grow(&mut self, by: usize, frame: usize, max_goal: usize) {
        self.goal = (self.goal + by).min(max_goal.max(self.goal));
        self.band = self.band.max(self.goal / 2);
        let ticks = 3 * self.goal / frame.max(1);
        self.window = self.window.max(u32::try_from(ticks).unwrap_or(u32::MAX));
        self.reset();
    }

    /// Starts a fresh window (after re-priming or reopening) keeping the drift estimate.
    pub fn reset(&mut self) {
        self.ticks = 0;
        self.low = usize::MAX;
        self.prev_low = usize::MAX;
        self.correction = self.integral;
    }

    /// Records the buffer level at one tick; at the end of each window, updates the correction
    /// and says whether to skip audio.
    pub fn observe(&mut self, level: usize) -> Adjust {
        self.low = self.low.min(level);
        self.ticks += 1;
        if self.ticks < self.window {
            return Adjust::None;
        }
        let low = self.low;
        let lasting = low.min(self.prev_low);
        self.ticks = 0;
        self.low = usize::MAX;
        self.prev_low = low;
        if lasting > self.goal + self.band {
            // Far too much for two windows running (not one burst's peak): drop the excess
            // now, and do not let it wind up the integral.
            self.correction = self.integral;
            self.prev_low = low - (lasting - self.goal);
            return Adjust::Skip(lasting - self.goal);
        }
        let err = low as f64 - self.goal as f64;
        self.integral = (self.integral + KI * err).clamp(-MAX_CORRECTION, MAX_CORRECTION);
        self.correction = (KP * err + self.integral).clamp(-MAX_CORRECTION, MAX_CORRECTION);
        Adjust::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device delivering `period` samples at a time at `rate_ppm` off nominal, into a buffer
    /// the tick drains by 960 per tick after resampling with the controller's correction.
    /// Returns (underrun ticks after settling, low-water marks per window after settling).
    fn simulate(
        period: usize,
        rate_ppm: f64,
        start_level: usize,
        secs: usize,
    ) -> (usize, Vec<f64>) {
        let frame = 960.0;
        let mut c = FillController::new(960 + (period / 2).max(480), (2 * period).max(2880), 50);
        let mut level = start_level as f64;
        let mut device_acc = 0.0;
        let mut underruns = 0;
        let mut lows = Vec::new();
        let mut low = f64::MAX;
        let ticks = secs * 50;
        for t in 0..ticks {
            // Device time passes: whole periods arrive; the resampler turns each input sample
            // into (1 - correction) output samples.
            device_acc += frame * (1.0 + rate_ppm * 1e-6);
            while device_acc >= period as f64 {
                device_acc -= period as f64;
                level += period as f64 * (1.0 - c.correction());
            }
            low = low.min(level);
            if let Adjust::Skip(n) = c.observe(level as usize) {
                level -= n as f64;
            }
            if level < frame {
                if t > ticks / 2 {
                    underruns += 1;
                }
                level = 0.0;
                c.reset();
            } else {
                level -= frame;
            }
            if (t + 1) % 50 == 0 {
                if t > ticks / 2 {
                    lows.push(low);
                }
                low = f64::MAX;
            }
        }
        (underruns, lows)
    }

    #[test]
    fn bursty_device_settles_near_the_goal_without_underruns() {
        // PulseAudio through ALSA: 1024-frame periods (21.3 ms), a clock 300 ppm fast, and a
        // start-up burst of a whole second.
        let (underruns, lows) = simulate(1024, 300.0, 48_000, 120);
        assert_eq!(underruns, 0);
        for l in &lows {
            assert!((900.0..2400.0).contains(l), "low-water {l} ({lows:?})");
        }
    }

    #[test]
    fn slow_device_clock_is_compensated() {
        // 400 ppm slow with big 4096-frame periods: the integral takes over the drift.
        let (underruns, lows) = simulate(4096, -400.0, 8192, 180);
        assert_eq!(underruns, 0);
        for l in &lows {
            assert!((900.0..4500.0).contains(l), "low-water {l} ({lows:?})");
        }
    }

    #[test]
    fn underruns_from_second_long_bursts_grow_the_goal_once() {
        // A source handing over 2 s of audio every 2 s (PulseAudio's sine source does):
        // the consumer re-primes after each underrun and grows the goal by the wait.
        let frame = 960usize;
        let mut c = FillController::new(1440, 2880, 50);
        let (mut level, mut priming, mut waited) = (0usize, true, 0usize);
        let mut underruns_late = 0;
        for t in 0..50 * 60 {
            if t % 100 == 0 {
                level += 96_000;
            }
            if priming {
                if level < c.goal() {
                    waited += frame;
                    continue;
                }
                priming = false;
                if t > 100 {
                    c.grow(waited, frame, 3 * 48_000);
                }
                waited = 0;
            }
            if let Adjust::Skip(n) = c.observe(level) {
                level -= n.min(level.saturating_sub(frame));
            }
            if level < frame {
                priming = true;
                if t > 50 * 20 {
                    underruns_late += 1;
                }
            } else {
                level -= frame;
            }
        }
        assert_eq!(underruns_late, 0, "goal {}", c.goal());
        assert!(c.goal() <= 3 * 48_000);
    }

    #[test]
    fn correction_is_bounded_and_excess_is_skipped() {
        let mut c = FillController::new(1000, 2000, 5);
        let mut skipped = None;
        for _ in 0..10 {
            if let Adjust::Skip(n) = c.observe(50_000) {
                skipped = Some(n);
            }
        }
        assert_eq!(skipped, Some(49_000));
        for _ in 0..10_000 {
            c.observe(2_900);
        }
        assert!(c.correction() > 0.0 && c.correction() <= MAX_CORRECTION);
        for _ in 0..100_000 {
            c.observe(0);
        }
        assert!(c.correction() >= -MAX_CORRECTION && c.correction() < 0.0);
    }
}
