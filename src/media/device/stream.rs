//! Opening a cpal stream and the real-time callbacks that feed it. The callbacks only move
//! samples between the device buffer and a preallocated lock-free ring, count what they did in
//! atomics and set an atomic flag when the device is lost: no locks, allocation or logging.

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, Stream, StreamConfig};
use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ring capacity in seconds of audio: room to spare over the bursts PulseAudio hands over at
/// start-up, and over any period size; the fill controller keeps the level low, so the size
/// costs memory, not delay.
const RING_SECONDS: f32 = 2.0;
/// Period asked of the device, ms (cpal then double-buffers it): left to choose, ALSA through
/// PulseAudio picks periods so short, and so few of them, that the buffer overruns constantly.
const PERIOD_MS: u32 = 20;
/// A running device that delivers nothing for this long is reopened.
const STALL: Duration = Duration::from_secs(3);

/// A playing stream and what the media thread reads of it. Dropping it closes the stream.
pub(super) struct OpenStream {
    _stream: Stream,
    failed: Arc<AtomicBool>,
    pub(super) rate: u32,
    pub(super) counters: Arc<Counters>,
    /// Frames counted at the last check, and when they last grew (stall detection).
    last_frames: u64,
    last_progress: Instant,
}

impl OpenStream {
    /// The stream reported a fatal error (the device vanished); the owner reopens it soon.
    pub(super) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// True when the stream reported a fatal error, or delivered audio once and then stopped
    /// for [`STALL`] (a start-up delay, before any audio, is no stall).
    pub(super) fn is_dead(&mut self) -> bool {
        if self.has_failed() {
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
pub(super) struct Counters {
    pub(super) calls: AtomicU64,
    pub(super) frames: AtomicU64,
    pub(super) last_frames: AtomicU64,
    pub(super) lost: AtomicU64,
    pub(super) errors: AtomicU64,
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

/// Ring length in samples for a device at `rate` (never below 8 kHz's worth).
pub(super) fn ring_len(rate: u32) -> usize {
    ((rate.max(8_000) as f32) * RING_SECONDS) as usize
}

/// Opens `device` for capture: the stream, and the ring half the media thread reads from.
pub(super) fn input_stream(device: &cpal::Device) -> Result<(OpenStream, HeapCons<f32>), String> {
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

/// Opens `device` for playback: the stream, and the ring half the media thread writes to.
pub(super) fn output_stream(device: &cpal::Device) -> Result<(OpenStream, HeapProd<f32>), String> {
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
