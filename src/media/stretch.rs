//! Time-stretching of one decoded frame by whole pitch periods (the idea of WSOLA / NetEq's
//! accelerate and preemptive expand), so the playout delay can move without audible jumps.
//!
//! Removing or repeating exactly one pitch period of voiced speech, cross-faded, changes the
//! duration but not the pitch; in silence any length can go or come.

/// Shortest period searched: 2.5 ms at 48 kHz (a 400 Hz voice).
const MIN_LAG: usize = 120;
/// Longest period searched: 10 ms (a 100 Hz voice), so a step stays small.
const MAX_LAG: usize = 480;
/// Below this RMS (about -46 dBFS) a frame counts as silence and can be cut freely.
const SILENCE_RMS: f32 = 0.005;

fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// The lag in `min..=max` where `x` best resembles itself shifted (normalized correlation).
/// Multiples of the period score as well as the period itself, so the shortest lag scoring
/// within 1 % of the best wins: the smallest step that keeps the pitch.
fn best_lag(x: &[f32], min: usize, max: usize) -> usize {
    let score = |lag: usize| {
        let w = (x.len() - lag).min(lag);
        let (mut xy, mut xx, mut yy) = (0.0f32, 1e-9f32, 1e-9f32);
        for i in 0..w {
            xy += x[i] * x[i + lag];
            xx += x[i] * x[i];
            yy += x[i + lag] * x[i + lag];
        }
        xy / (xx * yy).sqrt()
    };
    // Each score is computed once (it is the costly part: up to 360 lags x 480 samples);
    // on the stack, as this runs on the media thread.
    let mut scores = [0.0f32; MAX_LAG - MIN_LAG + 1];
    let (min, max) = (min.max(MIN_LAG), max.min(MAX_LAG));
    if min > max {
        return min;
    }
    let scores = &mut scores[..=max - min];
    for (k, s) in scores.iter_mut().enumerate() {
        *s = score(min + k);
    }
    let best = scores.iter().copied().fold(f32::MIN, f32::max);
    scores
        .iter()
        .position(|&s| s >= best - 0.01 * best.abs())
        .map_or(min, |k| min + k)
}

fn lag_for(frame: &[f32], max: usize) -> Option<usize> {
    let cap = max.min(MAX_LAG).min(frame.len() / 2);
    if rms(frame) < SILENCE_RMS {
        return (cap >= 1).then_some(cap);
    }
    (cap >= MIN_LAG).then(|| best_lag(frame, MIN_LAG, cap))
}

/// Finds quiet frames: pauses, and frames far below the recent speech level (word ends,
/// breaths, weak consonants), where a stretch is least audible.
#[derive(Debug, Default)]
pub struct QuietDetector {
    /// Loudest recent frame RMS, slowly decaying (about 3 s half-life at 50 frames a second).
    loud: f32,
    last: f32,
}

impl QuietDetector {
    /// Notes a decoded frame's level.
    pub fn observe(&mut self, frame: &[f32]) {
        self.last = rms(frame);
        self.loud = (self.loud * 0.995).max(self.last);
    }

    /// Whether the frame just observed is quiet: silence, or under a sixth of the recent peak
    /// level (-16 dB).
    pub fn is_quiet(&self) -> bool {
        self.last < SILENCE_RMS.max(self.loud / 6.0)
    }
}

/// Writes `frame` shortened by up to `max` samples into `out`; returns how many were removed.
pub fn accelerate(frame: &[f32], max: usize, out: &mut Vec<f32>) -> usize {
    out.clear();
    let Some(lag) = lag_for(frame, max) else {
        out.extend_from_slice(frame);
        return 0;
    };
    // Cross-fade x[i] into x[i + lag] over one period, then continue after the removed period.
    for i in 0..lag {
        let w = i as f32 / lag as f32;
        out.push(frame[i] * (1.0 - w) + frame[i + lag] * w);
    }
    out.extend_from_slice(&frame[2 * lag..]);
    lag
}

/// Writes `frame` lengthened by up to `max` samples into `out`; returns how many were added.
pub fn expand(frame: &[f32], max: usize, out: &mut Vec<f32>) -> usize {
    out.clear();
    let Some(lag) = lag_for(frame, max) else {
        out.extend_from_slice(frame);
        return 0;
    };
    // Play one period, then a cross-fade from "what follows" back to "that period again".
    out.extend_from_slice(&frame[..lag]);
    for i in 0..lag {
        let w = i as f32 / lag as f32;
        out.push(frame[lag + i] * (1.0 - w) + frame[i] * w);
    }
    out.extend_from_slice(&frame[lag..]);
    lag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / 48_000.0).sin())
            .collect()
    }

    /// Largest jump between neighbouring samples: a click shows up as a big one.
    fn max_step(x: &[f32]) -> f32 {
        x.windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn quiet_frames_are_pauses_and_frames_far_below_recent_speech() {
        let mut q = QuietDetector::default();
        let loud = tone(200.0, 960);
        q.observe(&loud);
        assert!(!q.is_quiet());
        let soft: Vec<f32> = loud.iter().map(|v| v * 0.1).collect();
        q.observe(&soft);
        assert!(q.is_quiet(), "-20 dB under the recent peak");
        let silence = vec![0.0; 960];
        q.observe(&silence);
        assert!(q.is_quiet());
        let mut fresh = QuietDetector::default();
        fresh.observe(&soft);
        assert!(!fresh.is_quiet(), "soft but the loudest heard: speech");
    }

    #[test]
    fn voiced_frame_loses_and_gains_a_period_without_clicks() {
        let x = tone(200.0, 960); // period 240 samples
        let mut out = Vec::new();
        let removed = accelerate(&x, 480, &mut out);
        assert!(removed.abs_diff(240) <= 6, "{removed}");
        assert_eq!(out.len(), 960 - removed);
        assert!(max_step(&out) <= max_step(&x) * 1.05);
        let added = expand(&x, 480, &mut out);
        assert!(added.abs_diff(240) <= 6, "{added}");
        assert_eq!(out.len(), 960 + added);
        assert!(max_step(&out) <= max_step(&x) * 1.05);
    }

    #[test]
    fn silence_is_cut_by_the_asked_amount_and_small_asks_on_voice_do_nothing() {
        let x = vec![0.0; 960];
        let mut out = Vec::new();
        assert_eq!(accelerate(&x, 300, &mut out), 300);
        assert_eq!(out.len(), 660);
        let v = tone(200.0, 960);
        assert_eq!(expand(&v, 50, &mut out), 0);
        assert_eq!(out, v);
    }
}
