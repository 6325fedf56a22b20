//! Sound devices through cpal. The callbacks only move samples between the device buffer and a
//! preallocated lock-free ring (and set an atomic flag on error): no locks, allocation, logging
//! or Opus there. Rate conversion, channel mixing beyond a sum, and reopening a device that
//! failed all happen on the media thread.

use super::codec::SAMPLE_RATE;
use super::drift::{Adjust, FillController};
use super::resample::Resampler;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, Stream, StreamConfig};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ring capacity in seconds of audio: room for PulseAudio's start-up bursts (it can hand over
/// a second of audio at once) and any period size; the fill controller keeps the level low.
const RING_SECONDS: f32 = 2.0;
/// Least safety margin above the starving point of a device buffer, ms.
const MIN_MARGIN_MS: usize = 10;
/// Most capture audio held back to ride out a bursty device, ms (PulseAudio's sine source,
/// the test microphone, hands over 2 s blocks).
const MAX_CAPTURE_GOAL_MS: usize = 2_500;
/// Least excess above the goal tolerated before audio is skipped, ms.
const BAND_MS: usize = 60;
/// Period asked of the device, ms (cpal then double-buffers it): ALSA through PulseAudio
/// otherwise picks ~10 ms periods with a 2-period buffer, which overruns constantly.
const PERIOD_MS: u32 = 20;
/// A running device that delivers nothing for this long is reopened.
const STALL: Duration = Duration::from_secs(3);
/// Wait between attempts to reopen a failed or missing device.
const RETRY: Duration = Duration::from_secs(2);

/// Names of the capture and playback devices of the default host, for `fala devices`.
pub fn list_devices() -> (Vec<String>, Vec<String>) {
    let host = cpal::default_host();
    let names = |devs: Option<Vec<cpal::Device>>| -> Vec<String> {
        devs.unwrap_or_default()
            .iter()
            .filter_map(|d| d.description().ok().map(|n| n.name().to_owned()))
            .collect()
    };
    (
        names(host.input_devices().ok().map(Iterator::collect)),
        names(host.output_devices().ok().map(Iterator::collect)),
    )
}

fn find(name: Option<&str>, input: bool) -> Option<cpal::Device> {
    let host = cpal::default_host();
    if let Some(want) = name {
        let want = want.to_lowercase();
        let devices: Vec<cpal::Device> = if input {
            host.input_devices().ok()?.collect()
        } else {
            host.output_devices().ok()?.collect()
        };
        let found = devices.into_iter().find(|d| {
            d.description()
                .is_ok_and(|n| n.name().to_lowercase().contains(&want))
        });
        if found.is_some() {
            return found;
        }
        tracing::warn!(device = %want, "audio device not found, using the default");
    }
    if input {
        host.default_input_device()
    } else {
        host.default_output_device()
    }
}

struct OpenStream {
    _stream: Stream,
    failed: Arc<AtomicBool>,
    rate: u32,
    counters: Arc<Counters>,
    /// Frames counted at the last check, and when they last grew (stall detection).
    last_frames: u64,
    last_progress: Instant,
}

impl OpenStream {
    /// True when the stream reported a fatal error, or delivered audio once and then stopped
    /// for [`STALL`] (a start-up delay, before any audio, is no stall).
    fn is_dead(&mut self) -> bool {
        if self.failed.load(Ordering::Relaxed) {
            return true;
        }
        let frames = self.counters.frames.load(Ordering::Relaxed);
        if frames != self.last_frames {
            self.last_frames = frames;
            self.last_progress = Instant::now();
            return false;
        }
        frames > 0 && self.last_progress.elapsed() > STALL
    }
}

/// What the callback did, for diagnostics read on the media thread (atomics only).
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    frames: AtomicU64,
    last_frames: AtomicU64,
    lost: AtomicU64,
    errors: AtomicU64,
}

fn input_stream(device: &cpal::Device) -> Result<(OpenStream, HeapCons<f32>), String> {
    let supported = device.default_input_config().map_err(|e| e.to_string())?;
    open_stream(
        &supported,
        "capture",
        |rb| {
            let (p, c) = rb.split();
            (c, p)
        },
        |config, format, prod, f, c| match format {
            SampleFormat::F32 => build_input::<f32>(device, config, prod, f, c),
            SampleFormat::I16 => build_input::<i16>(device, config, prod, f, c),
            SampleFormat::I32 => build_input::<i32>(device, config, prod, f, c),
            SampleFormat::U16 => build_input::<u16>(device, config, prod, f, c),
            other => Err(format!("sample format {other} not supported")),
        },
    )
}

/// Opens a stream in the first configuration that plays. Each attempt gets a fresh ring:
/// `split` says which half the callback gets (`Give`) and which the engine keeps (`Keep`).
fn open_stream<Keep, Give>(
    supported: &cpal::SupportedStreamConfig,
    what: &str,
    split: impl Fn(HeapRb<f32>) -> (Keep, Give),
    mut build: impl FnMut(
        &StreamConfig,
        SampleFormat,
        Give,
        Arc<AtomicBool>,
        Arc<Counters>,
    ) -> Result<cpal::Stream, String>,
) -> Result<(OpenStream, Keep), String> {
    let format = supported.sample_format();
    let mut last = String::new();
    for config in configs(supported) {
        let (keep, give) = split(HeapRb::<f32>::new(ring_len(config.sample_rate)));
        let failed = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let stream = build(&config, format, give, failed.clone(), counters.clone());
        match stream.and_then(|s| s.play().map(|()| s).map_err(|e| e.to_string())) {
            Ok(stream) => {
                tracing::debug!(?config, %format, "{what} stream");
                let open = OpenStream {
                    _stream: stream,
                    failed,
                    rate: config.sample_rate,
                    counters,
                    last_frames: 0,
                    last_progress: Instant::now(),
                };
                return Ok((open, keep));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Configurations to try, best first: the default format with a ~20 ms period, then the
/// device's own choice of buffer.
fn configs(supported: &cpal::SupportedStreamConfig) -> Vec<StreamConfig> {
    let default = supported.config();
    let want = supported.sample_rate() * PERIOD_MS / 1000;
    let mut list = Vec::with_capacity(2);
    if let cpal::SupportedBufferSize::Range { min, max } = supported.buffer_size() {
        if (*min..=*max).contains(&want) {
            list.push(StreamConfig {
                buffer_size: cpal::BufferSize::Fixed(want),
                ..default
            });
        }
    }
    list.push(default);
    list
}

/// Errors after which the stream is gone and must be reopened; the rest (over- and underruns,
/// which cpal recovers from by itself) are only counted.
fn is_fatal(kind: cpal::ErrorKind) -> bool {
    matches!(
        kind,
        cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::HostUnavailable
    )
}

fn build_input<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut ring: HeapProd<f32>,
    failed: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Result<Stream, String>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let errs = counters.clone();
    let scale = 1.0 / channels as f32;
    device
        .build_input_stream::<T, _, _>(
            *config,
            move |data: &[T], _| {
                // Real-time callback: arithmetic and a lock-free push only.
                let mut lost = 0;
                for frame in data.chunks(channels) {
                    let mut sum = 0.0f32;
                    for s in frame {
                        sum += s.to_sample::<f32>();
                    }
                    if ring.try_push(sum * scale).is_err() {
                        lost += 1;
                    }
                }
                counters.callback((data.len() / channels) as u64, lost);
            },
            on_error(failed, errs),
            None,
        )
        .map_err(|e| e.to_string())
}

impl Counters {
    /// Records one callback of `frames` frames, `lost` of which found no room or no data.
    /// Atomics only: called from the real-time callback.
    fn callback(&self, frames: u64, lost: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.frames.fetch_add(frames, Ordering::Relaxed);
        self.last_frames.store(frames, Ordering::Relaxed);
        self.lost.fetch_add(lost, Ordering::Relaxed);
    }
}

/// The stream error callback: a lost device marks the stream dead (the owner reopens it);
/// anything else (over- and underruns, which cpal recovers from) is only counted.
fn on_error(failed: Arc<AtomicBool>, counters: Arc<Counters>) -> impl FnMut(cpal::Error) + Send {
    move |err: cpal::Error| {
        if is_fatal(err.kind()) {
            failed.store(true, Ordering::Relaxed);
        } else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn output_stream(device: &cpal::Device) -> Result<(OpenStream, HeapProd<f32>), String> {
    let supported = device.default_output_config().map_err(|e| e.to_string())?;
    open_stream(
        &supported,
        "playback",
        |rb| rb.split(),
        |config, format, cons, f, c| match format {
            SampleFormat::F32 => build_output::<f32>(device, config, cons, f, c),
            SampleFormat::I16 => build_output::<i16>(device, config, cons, f, c),
            SampleFormat::I32 => build_output::<i32>(device, config, cons, f, c),
            SampleFormat::U16 => build_output::<u16>(device, config, cons, f, c),
            other => Err(format!("sample format {other} not supported")),
        },
    )
}

fn build_output<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut ring: HeapCons<f32>,
    failed: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Result<Stream, String>
where
    T: SizedSample + FromSample<f32> + Send + 'static,
{
    let channels = usize::from(config.channels.max(1));
    let errs = counters.clone();
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |data: &mut [T], _| {
                // Real-time callback: a lock-free pop per frame, silence when the ring is short.
                let mut lost = 0;
                for frame in data.chunks_mut(channels) {
                    let v = ring.try_pop().unwrap_or_else(|| {
                        lost += 1;
                        0.0
                    });
                    frame.fill(T::from_sample(v));
                }
                counters.callback((data.len() / channels) as u64, lost);
            },
            on_error(failed, errs),
            None,
        )
        .map_err(|e| e.to_string())
}

/// Once-a-second diagnostics of a device path, logged at debug level from the media thread.
struct Diag {
    since: Instant,
    fill_min: usize,
    fill_max: usize,
    trimmed: usize,
    padded: usize,
    underruns: usize,
    last: (u64, u64, u64, u64),
}

impl Diag {
    fn new() -> Self {
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

    fn fill(&mut self, n: usize) {
        self.fill_min = self.fill_min.min(n);
        self.fill_max = self.fill_max.max(n);
    }

    fn report(&mut self, what: &str, stream: Option<&OpenStream>, control: &FillController) {
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

fn ring_len(rate: u32) -> usize {
    ((rate.max(8_000) as f32) * RING_SECONDS) as usize
}

/// The device's period (frames per callback) in 48 kHz samples, once a callback has run.
fn period48(stream: &OpenStream) -> usize {
    let frames = stream.counters.last_frames.load(Ordering::Relaxed) as usize;
    frames * SAMPLE_RATE as usize / stream.rate.max(1) as usize
}

/// Buffer targets for a device moving `period` samples (at 48 kHz) per callback while the tick
/// moves `frame`: (goal for the low-water mark beyond `base`, band above it, window in ticks).
fn targets(period: usize, frame: usize) -> (usize, usize, u32) {
    let margin = (MIN_MARGIN_MS * 48).max(period / 2);
    let band = (BAND_MS * 48).max(2 * period);
    let window = (4 * period / frame.max(1)).max(50) as u32;
    (margin, band, window)
}

/// Test hook: with `FALA_TEST_SLOW_DEVICE_MS` set, every device open first waits that long, as
/// some sound systems do (Bluetooth headsets, a busy PulseAudio). Tests use it to prove that no
/// window frame and no signaling heartbeat waits for a device.
fn test_hook_slow_open() {
    let delay_ms = std::env::var("FALA_TEST_SLOW_DEVICE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay_ms {
        std::thread::sleep(Duration::from_millis(ms.min(60_000)));
    }
}

/// The life of one device, the same for microphone and speaker: which one was asked for, the
/// open stream and its ring, and when to try again after a failure (the default device then).
struct DeviceSlot<R> {
    name: Option<String>,
    input: bool,
    stream: Option<OpenStream>,
    ring: Option<R>,
    retry_at: Instant,
    /// A failure was reported already (once per device, not once per retry).
    warned: bool,
}

impl<R: Observer> DeviceSlot<R> {
    fn new(name: Option<String>, input: bool) -> Self {
        Self {
            name,
            input,
            stream: None,
            ring: None,
            retry_at: Instant::now(),
            warned: false,
        }
    }

    fn kind(&self) -> &'static str {
        if self.input {
            "capture"
        } else {
            "playback"
        }
    }

    /// Closes the stream and opens the device again with `open`: the named one, or the
    /// default one once something failed. Returns the new stream's rate, or `None` (warned
    /// once; tried again after [`RETRY`]).
    fn reopen(
        &mut self,
        open: fn(&cpal::Device) -> Result<(OpenStream, R), String>,
    ) -> Option<u32> {
        self.stream = None;
        self.ring = None;
        self.retry_at = Instant::now() + RETRY;
        let name = if self.warned {
            None
        } else {
            self.name.as_deref()
        };
        let without = if self.input {
            "sending silence"
        } else {
            "the call goes on without sound"
        };
        test_hook_slow_open();
        let Some(device) = find(name, self.input) else {
            self.warn(&format!("no {} device: {without}", self.kind()));
            return None;
        };
        match open(&device) {
            Ok((stream, ring)) => {
                let rate = stream.rate;
                self.stream = Some(stream);
                self.ring = Some(ring);
                Some(rate)
            }
            Err(e) => {
                self.warn(&format!(
                    "{} device failed to open ({e}): {without}",
                    self.kind()
                ));
                None
            }
        }
    }

    fn warn(&mut self, msg: &str) {
        if !self.warned {
            tracing::warn!("{msg}");
            self.warned = true;
        }
    }

    /// Whether the stream failed (or never opened) and it is time to try again.
    fn needs_reopen(&mut self) -> bool {
        let failed = self.stream.as_mut().is_none_or(OpenStream::is_dead);
        if !failed || Instant::now() < self.retry_at {
            return false;
        }
        if self.stream.is_some() {
            tracing::warn!("{} device error: reopening", self.kind());
            self.warned = true;
        }
        true
    }

    /// Samples waiting in the ring, counted at 48 kHz.
    fn queued48(&self) -> usize {
        match (&self.ring, &self.stream) {
            (Some(r), Some(s)) => r.occupied_len() * SAMPLE_RATE as usize / s.rate.max(1) as usize,
            _ => 0,
        }
    }
}

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
    /// ALSA and PulseAudio takes a second or two) and after an underrun, that is silence.
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

    /// Samples buffered between the microphone and the encoder (an estimate).
    pub fn latency_samples(&self) -> usize {
        self.fifo.len() + self.dev.queued48()
    }
}

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

    /// Samples queued ahead of the speaker, at 48 kHz.
    pub fn latency_samples(&self) -> usize {
        self.dev.queued48()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_devices_never_panic() {
        // On a machine without sound this degrades to silence; with sound it still must not
        // panic, and reading always yields a whole frame.
        let mut c = CaptureDevice::open(Some("no such device at all".into()));
        let mut frame = [1.0f32; 960];
        c.read(&mut frame);
        c.maintain();
        let mut p = PlaybackDevice::open(Some("no such device at all".into()), 960);
        p.write(&frame);
        p.maintain();
        let _ = list_devices();
    }
}
