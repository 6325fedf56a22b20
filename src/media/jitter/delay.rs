//! The delay estimate: how late packets arrive compared with the fastest possible arrival, and
//! how long after that the frames are actually heard.
//!
//! Every arrival's transit (receiver time minus sender timestamp) is compared with the smallest
//! transit of the last two seconds, carried forward by the clock drift between the two ends;
//! the difference (the *relative delay*) goes into a histogram that slowly forgets, whose 95th
//! percentile is the part of the target that covers arrival jitter. The delay in force is
//! measured on each played frame and filtered; outside a dead zone around the target it turns
//! into time-stretching advice.

use super::Stretch;

/// Histogram resolution and reach of relative delays.
const BIN_MS: f64 = 1.0;
const BINS: usize = 600;
/// Per-packet forgetting factor: about 10 s of memory at 50 packets a second.
const FORGET: f64 = 0.998;
/// Transits remembered for the moving minimum (2 s of 20 ms packets).
const TRANSIT_WINDOW: usize = 100;
/// Largest clock drift believed, as a rate (0.2 %: sound cards are within 0.01-0.1 %).
const MAX_DRIFT: f64 = 0.002;
/// Quantile of relative delay the target covers.
const QUANTILE: f64 = 0.95;
/// Delay above target (ms, or a quarter of the target if more) that starts accelerating ...
const ACCEL_ZONE_MS: f64 = 8.0;
/// ... and how close to the target (ms, or an eighth of it) it stops.
const ACCEL_STOP_MS: f64 = 5.0;

/// Arrival statistics and the measured playout delay.
pub(super) struct DelayEstimate {
    /// (transit, arrival time) of recent packets, ms.
    transits: [(f64, f64); TRANSIT_WINDOW],
    transit_count: usize,
    /// Smallest (transit, arrival time) of the block of packets being collected, and of the
    /// last complete block: the slope between block minima estimates the clock drift.
    block_min: Option<(f64, f64)>,
    last_block_min: Option<(f64, f64)>,
    /// Estimated drift: ms of transit gained per ms (positive: receiver clock fast).
    drift: f64,
    /// Relative-delay histogram, in units of `hist_unit`: instead of multiplying every bin by
    /// [`FORGET`] per packet (600 multiplications), each new packet adds a weight that grows by
    /// 1 / FORGET, which keeps the same proportions; the bins are rescaled now and then.
    hist: [f64; BINS],
    /// Weight the next packet adds, and the sum of all bins.
    hist_unit: f64,
    hist_total: f64,
    /// Measured playout delay, filtered, ms.
    delay_filt: Option<f64>,
    /// Accelerating until the delay is back near the target.
    accelerating: bool,
}

impl DelayEstimate {
    /// An estimate that has seen nothing yet.
    pub(super) fn new() -> Self {
        Self {
            transits: [(0.0, 0.0); TRANSIT_WINDOW],
            transit_count: 0,
            block_min: None,
            last_block_min: None,
            drift: 0.0,
            hist: [0.0; BINS],
            hist_unit: 1.0,
            hist_total: 0.0,
            delay_filt: None,
            accelerating: false,
        }
    }

    /// Forgets the playout delay in force and any acceleration under way (the stream starts
    /// over). The arrival statistics are kept.
    pub(super) fn restart_playout(&mut self) {
        self.delay_filt = None;
        self.accelerating = false;
    }

    /// Takes in the transit of an arriving packet (ms, receiver time minus sender timestamp)
    /// and adds its relative delay to the histogram.
    pub(super) fn observe(&mut self, transit: f64, now_ms: f64) {
        self.transits[self.transit_count % TRANSIT_WINDOW] = (transit, now_ms);
        self.transit_count += 1;
        self.track_drift(transit, now_ms);
        let rel = transit - self.min_transit(now_ms).unwrap_or(transit);
        let bin = ((rel / BIN_MS) as usize).min(BINS - 1);
        self.add_to_histogram(bin);
    }

    /// The fastest transit a packet could have at `now_ms`: the minimum of recent transits,
    /// each carried forward by the estimated clock drift. Without the drift term, a receiver
    /// clock 0.1 % fast makes every new transit 2 ms longer than the window's minimum, the
    /// newest packet always looks "late" by that much, and the playout point slides into the
    /// arrivals before the delay measured against the stale minimum ever drops below target.
    pub(super) fn min_transit(&self, now_ms: f64) -> Option<f64> {
        let n = self.transit_count.min(TRANSIT_WINDOW);
        self.transits[..n]
            .iter()
            .map(|&(tr, t)| tr + self.drift * (now_ms - t))
            .reduce(f64::min)
    }

    /// The relative delay (ms) that [`QUANTILE`] of recent arrivals stayed within, rounded up
    /// to a whole bin; 0 before any arrival.
    pub(super) fn quantile_ms(&self) -> f64 {
        let total = self.hist_total;
        if total <= 0.0 {
            return 0.0;
        }
        let mut acc = 0.0;
        for (i, v) in self.hist.iter().enumerate() {
            acc += v;
            if acc >= QUANTILE * total {
                return (i as f64 + 1.0) * BIN_MS;
            }
        }
        0.0
    }

    /// Measures the delay at which a frame will be heard (ms after its fastest possible
    /// arrival) and returns it filtered; `None` while no transit is known. `ext_ts` is the
    /// frame's extended timestamp in samples, `pending` the audio queued ahead of it.
    pub(super) fn measure(&mut self, now_us: u64, pending: usize, ext_ts: i64) -> Option<f64> {
        let now_ms = now_us as f64 / 1000.0;
        let min_transit = self.min_transit(now_ms)?;
        let delay = now_ms + pending as f64 / 48.0 - ext_ts as f64 / 48.0 - min_transit;
        let d = match self.delay_filt {
            Some(f) => 0.7 * f + 0.3 * delay,
            None => delay,
        };
        self.delay_filt = Some(d);
        Some(d)
    }

    /// Time-stretch advice for a frame heard at the filtered delay `d`, given the `target` and
    /// the part of it that is `room` for loss recovery (ms).
    pub(super) fn advise(&mut self, d: f64, target: f64, room: f64) -> Stretch {
        // Dead zone: accelerate only well above the target, expand a little below it. Once
        // accelerating, keep on until the delay is back near the target (hysteresis): a
        // start-up offset or a spike is removed entirely instead of parking just under the
        // edge of the zone.
        let high = target + (0.25 * target).max(ACCEL_ZONE_MS);
        // Expand as soon as the delay is below target, asking for enough to land a little
        // above it: a stretch moves whole pitch periods (several ms), so waiting until the delay
        // is well below target lets the buffer run dry first under clock drift.
        // Half a millisecond under target: the target's 1 ms histogram bin is rounded up, so
        // this still leaves the packet popped at least 0.5 ms after it arrived, and a slow
        // drain (clock drift, 0.02 ms per frame at 0.1 %) is caught before the buffer runs dry.
        let low = target - 0.5;
        if d > high {
            self.accelerating = true;
        } else if d <= target + (0.125 * target).max(ACCEL_STOP_MS) {
            self.accelerating = false;
        }
        if self.accelerating {
            Stretch::Accelerate(((d - target) * 48.0) as usize)
        } else if d < low - room {
            Stretch::Expand(((target + ACCEL_STOP_MS - d) * 48.0) as usize)
        } else if d < low {
            // Short only of the room for recovery: not needed this instant (see
            // [`Stretch::ExpandInPause`]).
            Stretch::ExpandInPause(((target + ACCEL_STOP_MS - d) * 48.0) as usize)
        } else {
            Stretch::None
        }
    }

    /// Moves the measured delay by a stretch that really happened (`samples` added, or removed
    /// if negative), so the next frame is not stretched again for the same cause.
    pub(super) fn shift(&mut self, samples: i64) {
        if let Some(d) = &mut self.delay_filt {
            *d += samples as f64 / 48.0;
        }
    }

    /// Collects block minima of transit and updates the drift estimate once per block.
    fn track_drift(&mut self, transit: f64, now_ms: f64) {
        let m = match self.block_min {
            Some((tr, t)) if tr <= transit => (tr, t),
            _ => (transit, now_ms),
        };
        self.block_min = Some(m);
        if !self.transit_count.is_multiple_of(TRANSIT_WINDOW) {
            return;
        }
        if let Some((tr0, t0)) = self.last_block_min {
            if m.1 - t0 > 500.0 {
                let raw = ((m.0 - tr0) / (m.1 - t0)).clamp(-MAX_DRIFT, MAX_DRIFT);
                self.drift = 0.7 * self.drift + 0.3 * raw;
            }
        }
        self.last_block_min = Some(m);
        self.block_min = None;
    }

    /// Adds one arrival to `bin`, with the growing weight that stands for forgetting the older
    /// ones; now and then rescales every bin so the weights never grow without bound.
    fn add_to_histogram(&mut self, bin: usize) {
        self.hist_unit /= FORGET;
        if self.hist_unit > 1e12 {
            for v in &mut self.hist {
                *v /= self.hist_unit;
            }
            self.hist_total /= self.hist_unit;
            self.hist_unit = 1.0;
        }
        self.hist[bin] += self.hist_unit;
        self.hist_total += self.hist_unit;
    }
}
