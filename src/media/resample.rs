//! A small streaming sample-rate converter (windowed sinc), for WAV files and sound cards that
//! do not run at 48 kHz. Runs on the media thread (or at load time), never in a callback.

use std::f64::consts::PI;

/// Zero crossings of the sinc kernel on each side: a good trade-off for speech.
const HALF_TAPS: usize = 16;

/// Converts a mono stream from one rate to another, chunk by chunk.
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Position of the next output sample, in input samples relative to `hist[0]`.
    pos: f64,
    /// Input not yet fully consumed (history for the kernel).
    hist: Vec<f32>,
    /// Kernel cutoff relative to the input Nyquist (below 1 when downsampling).
    cutoff: f64,
}

impl Resampler {
    /// A converter from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Self {
        let step = f64::from(from) / f64::from(to);
        Self {
            step,
            pos: HALF_TAPS as f64,
            hist: vec![0.0; HALF_TAPS],
            cutoff: (1.0 / step).min(1.0) * 0.95,
        }
    }

    /// True when no conversion is needed.
    pub fn is_identity(&self) -> bool {
        self.step == 1.0
    }

    /// Appends the converted samples of `input` to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        self.hist.extend_from_slice(input);
        let radius = HALF_TAPS as f64 / self.cutoff;
        while self.pos + radius + 1.0 < self.hist.len() as f64 {
            let centre = self.pos.floor() as isize;
            let frac = self.pos - centre as f64;
            let r = radius.ceil() as isize;
            let mut acc = 0.0f64;
            let mut norm = 0.0f64;
            for k in -r..=r {
                let idx = centre + k;
                if idx < 0 {
                    continue;
                }
                let t = (k as f64 - frac) * self.cutoff;
                let sinc = if t.abs() < 1e-9 {
                    1.0
                } else {
                    (PI * t).sin() / (PI * t)
                };
                let x = (k as f64 - frac) / (radius + 1.0);
                let window = if x.abs() >= 1.0 {
                    0.0
                } else {
                    0.5 + 0.5 * (PI * x).cos()
                };
                let w = sinc * window;
                acc += w * f64::from(self.hist[idx as usize]);
                norm += w;
            }
            out.push((acc / norm.max(1e-9)) as f32);
            self.pos += self.step;
        }
        // Drop input no longer needed, keeping the kernel's reach behind `pos`.
        let keep_from = (self.pos - radius - 2.0).floor().max(0.0) as usize;
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
    let tail = (2.0 * HALF_TAPS as f64 / r.cutoff) as usize + 8;
    r.process(&vec![0.0; tail], &mut out);
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
