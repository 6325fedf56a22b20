//! What capture and playback share about the level of their device buffer: the fill
//! controller's targets for a device's period, and a once-a-second report of how the level and
//! the callback moved.

use super::stream::OpenStream;
use crate::media::codec::SAMPLE_RATE;
use crate::media::drift::FillController;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Least safety margin above the starving point of a device buffer, ms.
const MIN_MARGIN_MS: usize = 10;
/// Least excess above the goal tolerated before audio is skipped, ms.
const BAND_MS: usize = 60;

/// The device's period (frames per callback) in 48 kHz samples, once a callback has run.
pub(super) fn period48(stream: &OpenStream) -> usize {
    let frames = stream.counters.last_frames.load(Ordering::Relaxed) as usize;
    frames * SAMPLE_RATE as usize / stream.rate.max(1) as usize
}

/// Buffer targets for a device moving `period` samples (at 48 kHz) per callback while the tick
/// moves `frame`: (goal for the low-water mark beyond `base`, band above it, window in ticks).
pub(super) fn targets(period: usize, frame: usize) -> (usize, usize, u32) {
    let margin = (MIN_MARGIN_MS * 48).max(period / 2);
    let band = (BAND_MS * 48).max(2 * period);
    let window = (4 * period / frame.max(1)).max(50) as u32;
    (margin, band, window)
}

/// Once-a-second diagnostics of a device path, logged at debug level from the media thread.
pub(super) struct Diag {
    since: Instant,
    fill_min: usize,
    fill_max: usize,
    pub(super) trimmed: usize,
    pub(super) padded: usize,
    pub(super) underruns: usize,
    last: (u64, u64, u64, u64),
}

impl Diag {
    pub(super) fn new() -> Self {
        Self {
            since: Instant::now(),
            fill_min: usize::MAX,
            fill_max: 0,
            trimmed: 0,
            padded: 0,
            underruns: 0,
            last: (0, 0, 0, 0),
        }
    }

    pub(super) fn fill(&mut self, n: usize) {
        self.fill_min = self.fill_min.min(n);
        self.fill_max = self.fill_max.max(n);
    }

    pub(super) fn report(
        &mut self,
        what: &str,
        stream: Option<&OpenStream>,
        control: &FillController,
    ) {
        let elapsed = self.since.elapsed();
        if elapsed < Duration::from_secs(1) {
            return;
        }
        let now = stream.map_or((0, 0, 0, 0), |s| {
            let c = &s.counters;
            (
                c.calls.load(Ordering::Relaxed),
                c.frames.load(Ordering::Relaxed),
                c.lost.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed),
            )
        });
        // Counters restart with a reopened stream.
        let last = if now.1 < self.last.1 {
            (0, 0, 0, 0)
        } else {
            self.last
        };
        let secs = elapsed.as_secs_f64();
        tracing::debug!(
            "{what}: {:.1} callbacks/s, {:.0} frames/s (period {}), callback short {}, \
             errors {}, level {}..{} (goal {}), correction {:+.0} ppm, trimmed {}, padded {}, \
             underruns {}",
            (now.0 - last.0) as f64 / secs,
            (now.1 - last.1) as f64 / secs,
            stream.map_or(0, |s| s.counters.last_frames.load(Ordering::Relaxed)),
            now.2 - last.2,
            now.3 - last.3,
            if self.fill_min == usize::MAX {
                0
            } else {
                self.fill_min
            },
            self.fill_max,
            control.goal(),
            control.correction() * 1e6,
            self.trimmed,
            self.padded,
            self.underruns,
        );
        *self = Self::new();
        self.last = now;
    }
}
