//! A small streaming sample-rate converter (windowed sinc), for WAV files and sound cards that
//! do not run at 48 kHz, with a fine-tunable ratio so a device's clock drift can be followed.
//! Runs on the media thread (or at load time), never in a callback.
//!
//! The kernel is tabulated once per converter (polyphase, linearly interpolated between
//! phases), so a sample costs a few dozen multiply-adds whatever the ratio.

use std::f64::consts::PI;

/// Zero crossings of the sinc kernel on each side: a good trade-off for speech.
const HALF_TAPS: usize = 16;
/// Kernel phases tabulated between two input samples.
const PHASES: usize = 256;

/// Converts a mono stream from one rate to another, chunk by chunk.
pub struct Resampler {
    /// Nominal input samples per output sample.
    base: f64,
    /// Input samples per output sample now (`base` times the drift correction).
    step: f64,
    /// Position of the next output sample, in input samples relative to `hist[0]`.
    pos: f64,
    /// Input not yet fully consumed (history for the kernel).
    hist: Vec<f32>,
    /// Kernel reach on each side, in input samples.
    reach: usize,
    /// `PHASES + 1` rows of `2 * reach + 1` normalised weights.
    table: Vec<f32>,
    /// Copies input to output (same rate, never corrected).
    identity: bool,
}

impl Resampler {
    /// A converter from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Self {
        let mut r = Self::adaptive(from, to);
        r.identity = from == to;
        r
    }

    /// A converter whose ratio may be corrected while it runs ([`Resampler::set_correction`]),
    /// for sound devices: it never takes the copying shortcut, so corrections are seamless.
    pub fn adaptive(from: u32, to: u32) -> Self {
        let step = f64::from(from.max(1)) / f64::from(to.max(1));
        // Kernel cutoff relative to the input Nyquist (below 1 when downsampling).
        let cutoff = (1.0 / step).min(1.0) * 0.95;
        let radius = HALF_TAPS as f64 / cutoff;
        let reach = radius.ceil() as usize;
        let taps = 2 * reach + 1;
        let mut table = Vec::with_capacity((PHASES + 1) * taps);
        for p in 0..=PHASES {
            let frac = p as f64 / PHASES as f64;
            let row: Vec<f64> = (0..taps)
                .map(|i| {
                    let d = i as f64 - reach as f64 - frac;
                    let t = d * cutoff;
                    let sinc = if t.abs() < 1e-9 {
                        1.0
                    } else {
                        (PI * t).sin() / (PI * t)
                    };
                    let x = d / (radius + 1.0);
                    let window = if x.abs() >= 1.0 {
                        0.0
                    } else {
                        0.5 + 0.5 * (PI * x).cos()
                    };
                    sinc * window
                })
                .collect();
            let norm: f64 = row.iter().sum();
            table.extend(row.iter().map(|w| (w / norm) as f32));
        }
        Self {
            base: step,
            step,
            pos: reach as f64,
            hist: vec![0.0; reach],
            reach,
            table,
            identity: false,
        }
    }

    /// True when no conversion is needed.
    pub fn is_identity(&self) -> bool {
        self.identity
    }

    /// Sets the relative correction of the ratio: positive consumes input faster (fewer output
    /// samples per input sample). Ignored by a plain same-rate converter.
    pub fn set_correction(&mut self, correction: f64) {
        self.step = self.base * (1.0 + correction);
    }

    /// Output samples per input sample now.
    pub fn ratio(&self) -> f64 {
        1.0 / self.step
    }

    /// Appends the converted samples of `input` to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.identity {
            out.extend_from_slice(input);
            return;
        }
        self.hist.extend_from_slice(input);
        let taps = 2 * self.reach + 1;
        while self.pos.floor() as usize + self.reach < self.hist.len() {
            let centre = self.pos.floor() as usize;
            let phase = (self.pos - centre as f64) * PHASES as f64;
            let p = (phase as usize).min(PHASES - 1);
            let t = (phase - p as f64) as f32;
            let row0 = &self.table[p * taps..(p + 1) * taps];
            let row1 = &self.table[(p + 1) * taps..(p + 2) * taps];
            let x = &self.hist[centre - self.reach..=centre + self.reach];
            let mut acc = 0.0f32;
            for ((a, b), v) in row0.iter().zip(row1).zip(x) {
                acc += (a + (b - a) * t) * v;
            }
            out.push(acc);
            self.pos += self.step;
        }
        // Drop input no longer needed, keeping the kernel's reach behind `pos`.
        let keep_from = (self.pos.floor() as usize).saturating_sub(self.reach);
        if keep_from > 0 {
            self.hist.drain(..keep_from);
            self.pos -= keep_from as f64;
        }
    }
}

/// Converts a whole buffer (for files loaded before a call).
pub fn resample_all(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    let mut r = Resampler::new(from, to);
    let mut out =
        Vec::with_capacity((input.len() as f64 * f64::from(to) / f64::from(from)) as usize + 64);
    r.process(input, &mut out);
    // Flush the kernel's tail.
    r.process(&vec![0.0; 2 * r.reach + 8], &mut out);
    out.resize(
        (input.len() as f64 * f64::from(to) / f64::from(from)).round() as usize,
        0.0,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_survives_44k1_to_48k_and_back() {
        let f = 1000.0;
        let x: Vec<f32> = (0..44_100)
            .map(|i| (2.0 * std::f32::consts::PI * f * i as f32 / 44_100.0).sin() * 0.5)
            .collect();
        let y = resample_all(&x, 44_100, 48_000);
        assert_eq!(y.len(), 48_000);
        // Compare with the ideal 48 kHz sine away from the edges (allowing the kernel delay).
        let mut err = 0.0f64;
        let mut sig = 0.0f64;
        for (i, v) in y.iter().enumerate().take(40_000).skip(1_000) {
            let ideal =
                (2.0 * std::f64::consts::PI * f64::from(f) * i as f64 / 48_000.0).sin() * 0.5;
            err += (f64::from(*v) - ideal).powi(2);
            sig += ideal * ideal;
        }
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 40.0, "snr {snr}");
        let z = resample_all(&y, 48_000, 16_000);
        assert_eq!(z.len(), 16_000);
    }
}

#[cfg(test)]
mod drift_tests {
    use super::*;

    #[test]
    fn corrected_ratio_changes_the_count_and_stays_clean() {
        // 48 kHz to 48 kHz, consuming 0.2 % faster: 0.2 % fewer samples, and each is the input
        // sine read at the corrected position.
        let f = 440.0f64;
        let x: Vec<f32> = (0..48_000)
            .map(|i| (2.0 * std::f64::consts::PI * f * f64::from(i) / 48_000.0).sin() as f32)
            .collect();
        let mut r = Resampler::adaptive(48_000, 48_000);
        r.set_correction(0.002);
        assert!((r.ratio() - 1.0 / 1.002).abs() < 1e-12);
        let mut y = Vec::new();
        for chunk in x.chunks(640) {
            r.process(chunk, &mut y);
        }
        assert!((47_850..47_910).contains(&y.len()), "{}", y.len());
        let (mut err, mut sig) = (0.0f64, 0.0f64);
        for (i, v) in y.iter().enumerate().skip(100).take(40_000) {
            let ideal = (2.0 * std::f64::consts::PI * f * i as f64 * 1.002 / 48_000.0).sin();
            err += (f64::from(*v) - ideal).powi(2);
            sig += ideal * ideal;
        }
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 40.0, "snr {snr}");
    }
}
