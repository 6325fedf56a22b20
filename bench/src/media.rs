//! `fala-bench media`: voice quality, latency and CPU of real calls through the impairment relay.
//!
//! For each netsim profile two [`MediaEngine`]s talk over real UDP on 127.0.0.1 through a seeded
//! [`Relay`], each playing the same espeak-ng speech clip and recording what it hears. Each
//! recording is aligned to the clip and scored with PESQ wideband and STOI by the Python `pesq`
//! and `pystoi` packages (installed into the bench's own venv). A baseline (fixed 100 ms buffer,
//! no FEC) runs on every profile, and the clip encoded and decoded offline with the same Opus
//! settings gives the ceiling.
//!
//! Mouth-to-ear pipeline latency, per direction, from the aligned WAVs: the speaker's WAV
//! source hands sample `i` to the encoder at `epoch_speaker + i / 48 kHz` (the tick that reads its
//! frame); a real-time microphone would have captured it one frame earlier. The hearer's WAV
//! sink writes sample `j` at `epoch_hearer + j / 48 kHz`. With `lag` the measured offset of the
//! heard speech in the recording (mean over 500 ms speech segments):
//! `latency = lag / 48 kHz + (epoch_hearer - epoch_speaker) + frame`. This covers packetization,
//! Opus look-ahead, send, network, jitter buffer and playout queue; it excludes sound-card
//! buffers (there are none here).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fala::media::codec::{VoiceDecoder, VoiceEncoder, MAX_PACKET};
use fala::media::engine::realtime_priority;
use fala::media::io::load_wav;
use fala::media::{
    CodecSettings, InputSpec, JitterMode, JitterSettings, MediaConfig, MediaEngine, MediaStats,
    OutputSpec,
};
use fala_testkit::netsim::{Impairment, Relay};
use std::net::UdpSocket;

/// The scorer run inside the venv.
const SCORE_PY: &str = include_str!("score.py");

/// Harvard sentences (public domain phonetically balanced test sentences): about 9 s.
const SENTENCES: &str = "The birch canoe slid on the smooth planks. Glue the sheet to the dark \
                         blue background. It is easy to tell the depth of a well. These days a \
                         chicken leg is a rare dish.";

/// Options of `fala-bench media`.
pub struct MediaArgs {
    /// Scratch folder for WAVs and the scorer.
    pub work_dir: PathBuf,
    /// The Python venv with pesq and pystoi (created when missing).
    pub venv: PathBuf,
    /// Relay seed.
    pub seed: u64,
    /// Profiles to run (all when empty).
    pub profiles: Vec<String>,
    /// Skip the fixed-buffer baseline rows.
    pub no_baseline: bool,
}

#[derive(Debug, Clone, Copy)]
enum Setup {
    Adaptive,
    Baseline,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Adaptive => "default (adaptive, FEC)",
            Setup::Baseline => "baseline (fixed 100 ms, no FEC)",
        }
    }
    fn codec(self) -> CodecSettings {
        match self {
            Setup::Adaptive => CodecSettings::default(),
            Setup::Baseline => CodecSettings {
                fec: false,
                ..CodecSettings::default()
            },
        }
    }
    fn jitter(self) -> JitterSettings {
        match self {
            Setup::Adaptive => JitterSettings::default(),
            Setup::Baseline => JitterSettings {
                mode: JitterMode::Fixed { delay_ms: 100 },
                ..JitterSettings::default()
            },
        }
    }
}

/// What the Python scorer says about one recording.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct Score {
    mean_lag_samples: f64,
    pesq_wb: f64,
    stoi: f64,
}

/// One table row.
struct Row {
    profile: String,
    mode: String,
    pesq: f64,
    stoi: f64,
    latency_ms: Option<f64>,
    estimate_ms: Option<f64>,
    jb_ms: Option<f64>,
    /// Lost, recovered from a redundant copy, from in-band FEC, concealed.
    losses: Option<(i64, u64, u64, u64)>,
    /// Send bitrate with RTP headers and tags, kb/s.
    kbps: Option<f64>,
    cpu: Option<f64>,
}

/// Runs the bench and prints the table.
pub fn run(args: MediaArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.work_dir)?;
    let work = args.work_dir.canonicalize()?;
    let python = ensure_venv(&args.venv)?;
    let score_py = work.join("score.py");
    std::fs::write(&score_py, SCORE_PY)?;
    let clip = make_clip(&work)?;
    let clip_s = load_wav(&clip)?.len() as f64 / 48_000.0;
    let scorer = Scorer {
        python,
        script: score_py,
        clip: clip.clone(),
    };

    let profiles: Vec<String> = if args.profiles.is_empty() {
        Impairment::PROFILES.iter().map(|s| s.to_string()).collect()
    } else {
        args.profiles.clone()
    };
    let mut rows = Vec::new();

    eprintln!("reference: offline Opus encode/decode of the {clip_s:.1} s clip");
    let reference = work.join("reference.wav");
    offline_reference(&clip, &reference)?;
    let r = scorer.score(&reference)?;
    let reference_pesq = r.pesq_wb;
    rows.push(Row {
        profile: "—".into(),
        mode: "reference (offline Opus, no network)".into(),
        pesq: r.pesq_wb,
        stoi: r.stoi,
        latency_ms: Some(r.mean_lag_samples / 48.0 + 20.0),
        estimate_ms: None,
        jb_ms: None,
        losses: None,
        kbps: None,
        cpu: None,
    });

    let mut clean_live = None;
    for profile in &profiles {
        let imp = Impairment::profile(profile).with_context(|| {
            format!(
                "unknown profile {profile}; known: {:?}",
                Impairment::PROFILES
            )
        })?;
        let modes: &[Setup] = if args.no_baseline {
            &[Setup::Adaptive]
        } else {
            &[Setup::Adaptive, Setup::Baseline]
        };
        for &mode in modes {
            eprintln!("{profile} / {}: live call, {clip_s:.1} s", mode.label());
            let call = live_call(&work, &clip, profile, imp, mode, args.seed)?;
            let row = call.score(&scorer, profile, mode)?;
            if profile == "clean" && matches!(mode, Setup::Adaptive) {
                clean_live = Some(row.pesq);
            }
            rows.push(row);
        }
    }

    print_table(&rows, reference_pesq, clean_live);
    Ok(())
}

/// Creates (or reuses) the venv and returns its python.
fn ensure_venv(venv: &Path) -> anyhow::Result<PathBuf> {
    let python = venv.join("bin/python");
    let check = |py: &Path| {
        Command::new(py)
            .args(["-c", "import pesq, pystoi, numpy, scipy"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && check(&python) {
        return Ok(python);
    }
    eprintln!(
        "creating {} with pesq, pystoi, numpy, scipy",
        venv.display()
    );
    let ok = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .status()
        .context("python3 -m venv")?;
    if !ok.success() {
        bail!("python3 -m venv {} failed", venv.display());
    }
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "pesq", "pystoi", "numpy", "scipy"])
        .status()
        .context("pip install")?;
    if !ok.success() || !check(&python) {
        bail!("could not install pesq/pystoi into {}", venv.display());
    }
    Ok(python)
}

/// espeak-ng speech, converted by sox to 48 kHz mono 16-bit, normalised to -3 dBFS, with half a
/// second of silence before and after (so the call's start-up is not part of the speech).
fn make_clip(work: &Path) -> anyhow::Result<PathBuf> {
    let raw = work.join("speech-raw.wav");
    let clip = work.join("speech48.wav");
    let ok = Command::new("espeak-ng")
        .arg("-w")
        .arg(&raw)
        .arg(SENTENCES)
        .status()
        .context("espeak-ng (apt-get install espeak-ng)")?;
    if !ok.success() {
        bail!("espeak-ng failed");
    }
    let ok = Command::new("sox")
        .arg(&raw)
        .args(["-r", "48000", "-c", "1", "-b", "16"])
        .arg(&clip)
        .args(["gain", "-n", "-3", "pad", "0.5", "0.5"])
        .status()
        .context("sox (apt-get install sox)")?;
    if !ok.success() {
        bail!("sox failed");
    }
    Ok(clip)
}

struct Scorer {
    python: PathBuf,
    script: PathBuf,
    clip: PathBuf,
}

impl Scorer {
    fn score(&self, heard: &Path) -> anyhow::Result<Score> {
        let out = Command::new(&self.python)
            .arg(&self.script)
            .arg(&self.clip)
            .arg(heard)
            .output()
            .context("running the scorer")?;
        if !out.status.success() {
            bail!(
                "scorer failed on {}: {}",
                heard.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

/// The clip through the same Opus settings as a clean call (no in-band FEC: a call starts
/// with a redundant copy instead, which does not change the Opus stream), every packet
/// decoded: the best any call can sound.
fn offline_reference(clip: &Path, out: &Path) -> anyhow::Result<()> {
    let settings = CodecSettings::default();
    let frame = settings.frame.samples();
    let mut enc = VoiceEncoder::new(settings)?;
    let mut dec = VoiceDecoder::new(settings.frame)?;
    let pcm = load_wav(clip)?;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(out, spec)?;
    let mut packet = vec![0u8; MAX_PACKET];
    let mut decoded = vec![0f32; 5760];
    let mut input = vec![0f32; frame];
    // A second of silence after the clip flushes the codec's look-ahead.
    for k in 0..(pcm.len() / frame + 50) {
        input.fill(0.0);
        let start = (k * frame).min(pcm.len());
        let end = ((k + 1) * frame).min(pcm.len());
        input[..end - start].copy_from_slice(&pcm[start..end]);
        let n = enc.encode(&input, &mut packet)?;
        let m = dec.decode(&packet[..n], &mut decoded)?;
        for s in &decoded[..m] {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
        }
    }
    w.finalize()?;
    Ok(())
}

/// Both sides of one call, recorded.
struct BenchCall {
    /// (speaker epoch, hearer epoch, hearer's recording, hearer's stats, mean JB delay,
    /// mean engine latency estimate) for A -> B and B -> A.
    directions: Vec<HeardSide>,
    cpu_percent: Option<f64>,
}

struct HeardSide {
    speaker_epoch: Instant,
    hearer_epoch: Instant,
    heard: PathBuf,
    stats: MediaStats,
    mean_jb_ms: f64,
    mean_estimate_ms: f64,
}

fn live_call(
    work: &Path,
    clip: &Path,
    profile: &str,
    imp: Impairment,
    mode: Setup,
    seed: u64,
) -> anyhow::Result<BenchCall> {
    let sa = UdpSocket::bind("127.0.0.1:0")?;
    let sb = UdpSocket::bind("127.0.0.1:0")?;
    let relay = Relay::start_with(
        sa.local_addr()?,
        sb.local_addr()?,
        imp,
        seed,
        realtime_priority,
    )?;
    let tag = format!("{profile}-{mode:?}").to_lowercase();
    let heard_a = work.join(format!("heard-{tag}-a.wav"));
    let heard_b = work.join(format!("heard-{tag}-b.wav"));
    let config = |socket, output: &Path| MediaConfig {
        socket,
        peer: relay.addr(),
        crypto: None,
        paths: Default::default(),
        input: InputSpec::Wav(clip.to_owned()),
        output: OutputSpec::Wav(output.to_owned()),
        codec: mode.codec(),
        jitter: mode.jitter(),
    };
    let a = MediaEngine::start(config(sa, &heard_a))?;
    let b = MediaEngine::start(config(sb, &heard_b))?;
    let tids = media_threads();
    let cpu_start = thread_cpu(&tids);
    let wall_start = Instant::now();
    let clip_s = load_wav(clip)?.len() as f64 / 48_000.0;
    let end = wall_start + Duration::from_secs_f64(clip_s + 1.0);
    // Mean of the published gauges over the call, after the first second (start-up).
    let (mut jb, mut est, mut n) = ([0.0f64; 2], [0.0f64; 2], 0u32);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        if wall_start.elapsed() < Duration::from_secs(1) {
            continue;
        }
        for (i, h) in [&a, &b].into_iter().enumerate() {
            let s = h.stats();
            jb[i] += s.jitter_buffer_ms;
            est[i] += s.latency_ms;
        }
        n += 1;
    }
    let cpu_end = thread_cpu(&tids);
    let wall = wall_start.elapsed().as_secs_f64();
    // `MediaEngine::start` returned, so both engines are running and have an epoch.
    let started = |h: &fala::media::MediaHandle| h.epoch().context("engine not started");
    let (ea, eb) = (started(&a)?, started(&b)?);
    let stats_a = a.stop();
    let stats_b = b.stop();
    drop(relay);
    let cpu_percent = match (cpu_start, cpu_end) {
        (Some(s), Some(e)) if !tids.is_empty() => Some((e - s) / wall * 100.0 / tids.len() as f64),
        _ => None,
    };
    let n = f64::from(n.max(1));
    Ok(BenchCall {
        directions: vec![
            HeardSide {
                speaker_epoch: eb,
                hearer_epoch: ea,
                heard: heard_a,
                stats: stats_a,
                mean_jb_ms: jb[0] / n,
                mean_estimate_ms: est[0] / n,
            },
            HeardSide {
                speaker_epoch: ea,
                hearer_epoch: eb,
                heard: heard_b,
                stats: stats_b,
                mean_jb_ms: jb[1] / n,
                mean_estimate_ms: est[1] / n,
            },
        ],
        cpu_percent,
    })
}

impl BenchCall {
    /// Scores both directions and averages them into a row; losses are summed.
    fn score(&self, scorer: &Scorer, profile: &str, mode: Setup) -> anyhow::Result<Row> {
        let mut row = Row {
            profile: profile.into(),
            mode: mode.label().into(),
            pesq: 0.0,
            stoi: 0.0,
            latency_ms: Some(0.0),
            estimate_ms: Some(0.0),
            jb_ms: Some(0.0),
            losses: Some((0, 0, 0, 0)),
            kbps: Some(0.0),
            cpu: self.cpu_percent,
        };
        let k = self.directions.len() as f64;
        for d in &self.directions {
            let s = scorer.score(&d.heard)?;
            let offset_ms = signed_ms(d.speaker_epoch, d.hearer_epoch);
            let latency = s.mean_lag_samples / 48.0 + offset_ms + 20.0;
            eprintln!(
                "  {}: PESQ {:.2} STOI {:.3} latency {:.1} ms (lag {:.1} ms, epochs {:+.1} ms) \
                 JB {:.1} ms estimate {:.1} ms lost {} copy {} fec {} concealed {} late {} stretched {:.0} ms target {:.1} ms",
                d.heard.display(),
                s.pesq_wb,
                s.stoi,
                latency,
                s.mean_lag_samples / 48.0,
                offset_ms,
                d.mean_jb_ms,
                d.mean_estimate_ms,
                d.stats.packets_lost,
                d.stats.copy_recovered,
                d.stats.fec_recovered,
                d.stats.concealed,
                d.stats.late,
                d.stats.stretched_ms,
                d.stats.jitter_target_ms,
            );
            row.pesq += s.pesq_wb / k;
            row.stoi += s.stoi / k;
            row.latency_ms = row.latency_ms.map(|v| v + latency / k);
            row.estimate_ms = row.estimate_ms.map(|v| v + d.mean_estimate_ms / k);
            row.jb_ms = row.jb_ms.map(|v| v + d.mean_jb_ms / k);
            row.losses = row.losses.map(|(l, r, f, c)| {
                (
                    l + d.stats.packets_lost,
                    r + d.stats.copy_recovered,
                    f + d.stats.fec_recovered,
                    c + d.stats.concealed,
                )
            });
            row.kbps = row.kbps.map(|v| v + d.stats.bitrate_kbps / k);
        }
        Ok(row)
    }
}

/// `later - earlier` in ms, negative when `later` is in fact earlier.
fn signed_ms(earlier: Instant, later: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(earlier.duration_since(later).as_secs_f64() * 1000.0),
    }
}

/// Thread ids of this process's media threads (named "fala-media").
fn media_threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "fala-media")
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// CPU seconds the threads ran so far: `/proc/self/task/TID/schedstat` (first field, ns on CPU),
/// or utime + stime from `stat` (clock ticks) where schedstat is missing.
fn thread_cpu(tids: &[String]) -> Option<f64> {
    let mut total = 0.0;
    for tid in tids {
        let base = Path::new("/proc/self/task").join(tid);
        if let Some(ns) = std::fs::read_to_string(base.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        {
            total += ns / 1e9;
            continue;
        }
        let stat = std::fs::read_to_string(base.join("stat")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        total += ticks / hz;
    }
    Some(total)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn print_table(rows: &[Row], reference_pesq: f64, clean_live: Option<f64>) {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| profile | mode | PESQ-WB | STOI | mouth-to-ear ms | engine estimate ms | \
         jitter buffer ms | lost / copy / FEC / concealed | send kb/s | CPU % of a core per call |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let losses = r.losses.map_or("—".into(), |(l, r, f, c)| {
            format!("{l} / {r} / {f} / {c}")
        });
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {:.3} | {} | {} | {} | {} | {} | {} |",
            r.profile,
            r.mode,
            r.pesq,
            r.stoi,
            opt(r.latency_ms, 1),
            opt(r.estimate_ms, 1),
            opt(r.jb_ms, 1),
            losses,
            opt(r.kbps, 0),
            opt(r.cpu, 2),
        );
    }
    print!("{t}");
    println!();
    println!("Targets: PESQ-WB ≥ 4.2 clean and ≥ 3.6 on loss10_jitter20 at default settings; clean within 0.1 of the reference; mouth-to-ear ≤ 35 ms on clean with 20 ms frames (Opus floor 26.5 ms); ≤ 2 % of one core per call.");
    if let Some(c) = clean_live {
        println!(
            "Clean live call vs reference: {c:.2} vs {reference_pesq:.2} (difference {:.2}, limit 0.10).",
            reference_pesq - c
        );
    }
    println!("Lost packets (by sequence number) and how their frames were recovered: from a redundant copy in a later packet, from in-band FEC, or concealed (concealment also covers late packets).");
    println!("Losses are summed over both directions; every other column is the mean of both directions. CPU: schedstat run time of the two fala-media threads over the call's wall time, per thread (= per call end).");
}
