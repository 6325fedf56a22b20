//! Audio helpers for end-to-end tests: speech to send, alignment and scoring of what arrived.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A speech WAV made by espeak-ng (installed by scripts/test.sh), created once per test binary.
pub fn speech_wav() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fala-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("speech.wav");
        let status = std::process::Command::new("espeak-ng")
            .arg("-w")
            .arg(&path)
            .arg("Hello, this is Fala. The quick brown fox jumps over the lazy dog.")
            .status()
            .expect("espeak-ng is needed for the speech tests (scripts/test.sh installs it)");
        assert!(status.success());
        path
    })
}

/// A fresh path in the per-process test folder.
pub fn temp_path(name: &str) -> PathBuf {
    let dir = speech_wav().parent().unwrap().to_path_buf();
    dir.join(name)
}

/// Loads any WAV as 48 kHz mono.
pub fn load(path: &Path) -> Vec<f32> {
    fala::media::io::load_wav(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Block averages of 6 samples: 48 kHz to 8 kHz, enough for alignment and correlation.
fn decimate(x: &[f32]) -> Vec<f32> {
    x.chunks(6)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect()
}

fn ncc(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 1e-12f64, 1e-12f64);
    for (x, y) in a.iter().zip(b) {
        ab += f64::from(*x) * f64::from(*y);
        aa += f64::from(*x) * f64::from(*x);
        bb += f64::from(*y) * f64::from(*y);
    }
    ab / (aa * bb).sqrt()
}

/// Best lag (8 kHz samples, may be negative) of `out` behind `reference[start..start + len]`
/// within `lo..hi`, and its correlation.
fn best_lag(
    reference: &[f32],
    start: usize,
    len: usize,
    out: &[f32],
    lo: i64,
    hi: i64,
) -> (i64, f64) {
    let part = &reference[start..start + len];
    (lo..hi)
        .filter_map(|lag| {
            let at = start as i64 + lag;
            (at >= 0 && at as usize + len <= out.len())
                .then(|| (lag, ncc(part, &out[at as usize..at as usize + len])))
        })
        .fold((0, f64::MIN), |b, c| if c.1 > b.1 { c } else { b })
}

/// How well `heard` reproduces `sent`.
#[derive(Debug)]
pub struct Score {
    /// Delay of the heard audio behind the sent audio, ms. Negative when the recording started
    /// after the audio began to arrive (each side's clock starts when *it* learns the call is up).
    pub delay_ms: f64,
    /// Energy-weighted mean correlation of 250 ms speech segments after alignment (each may
    /// move ±120 ms, since the adaptive buffer changes its delay during a call). Segments of the
    /// sent audio that fall outside the recording count as missing (correlation 0).
    pub correlation: f64,
}

/// Aligns `heard` to `sent` (delays from `-max_early_ms` to `max_delay_ms`) and scores it.
pub fn score(sent: &[f32], heard: &[f32], max_early_ms: i64, max_delay_ms: i64) -> Score {
    let r = decimate(sent);
    let h = decimate(heard);
    // Align on a stretch of speech from the middle (its start may be missing from `heard`).
    let probe_start = r.len() / 4;
    let probe_len = (r.len() / 2).min(12_000);
    let (lag, _) = best_lag(
        &r,
        probe_start,
        probe_len,
        &h,
        -max_early_ms * 8,
        max_delay_ms * 8,
    );
    let seg = 2_000;
    let (mut num, mut den) = (0.0, 0.0);
    for s in (0..r.len().saturating_sub(seg)).step_by(seg) {
        let part = &r[s..s + seg];
        let energy: f64 = part.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
        if energy < 1e-6 * seg as f64 {
            continue;
        }
        let (_, c) = best_lag(&r, s, seg, &h, lag - 960, lag + 960);
        num += c.max(0.0) * energy;
        den += energy;
    }
    Score {
        delay_ms: lag as f64 / 8.0,
        correlation: if den > 0.0 { num / den } else { 0.0 },
    }
}

/// Delay (ms, from `lo_ms` to `hi_ms`) of the stretch `from_s..to_s` of `sent` in `heard`, and
/// how well it matches there: for checking that timing holds from one part of a call to another.
pub fn delay_of_part(
    sent: &[f32],
    heard: &[f32],
    (from_s, to_s): (f64, f64),
    (lo_ms, hi_ms): (i64, i64),
) -> (f64, f64) {
    let r = decimate(sent);
    let h = decimate(heard);
    let start = ((from_s * 8_000.0) as usize).min(r.len());
    let len = ((to_s - from_s).max(0.0) * 8_000.0) as usize;
    let len = len.min(r.len() - start);
    let (lag, c) = best_lag(&r, start, len, &h, lo_ms * 8, hi_ms * 8);
    (lag as f64 / 8.0, c)
}

/// Share of the energy of `x` (48 kHz) near `hz`: Goertzel over 50 ms blocks (a ±20 Hz band,
/// tolerant of the small phase jumps playout stretching makes), energy-weighted.
pub fn tone_share(x: &[f32], hz: f64) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for block in x.chunks_exact(2_400) {
        let e: f64 = block.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
        num += goertzel_share(block, hz) * e;
        den += e;
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

fn goertzel_share(x: &[f32], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for v in x {
        let s0 = f64::from(*v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let total: f64 = x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
    if total <= 0.0 {
        return 0.0;
    }
    // A full-scale-relative tone of N samples gives power ≈ N² A² / 4 and total ≈ N A² / 2.
    2.0 * power / (x.len() as f64 * total)
}

/// RMS of a signal.
pub fn rms(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Per-second picture of a recording that should hold one steady tone.
#[derive(Debug)]
pub struct ToneSecond {
    /// RMS of the second.
    pub rms: f64,
    /// Lowest share of `hz` over the 50 ms blocks of the second (0 for a silent block).
    pub min_share: f64,
    /// Frequency from zero crossings, Hz.
    pub zc_hz: f64,
}

/// Splits `x` (48 kHz) into whole seconds and describes each (see [`ToneSecond`]).
pub fn tone_seconds(x: &[f32], hz: f64) -> Vec<ToneSecond> {
    x.chunks_exact(48_000)
        .map(|sec| {
            let min_share = sec
                .chunks_exact(2_400)
                .map(|b| goertzel_share(b, hz))
                .fold(f64::MAX, f64::min);
            let crossings = sec
                .windows(2)
                .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
                .count();
            ToneSecond {
                rms: rms(sec),
                min_share,
                zc_hz: crossings as f64 / 2.0,
            }
        })
        .collect()
}
