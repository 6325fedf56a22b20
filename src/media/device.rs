//! Sound devices through cpal. The callbacks only move samples between the device buffer and a
//! preallocated lock-free ring (and set an atomic flag on error): no locks, allocation, logging
//! or Opus there. Rate conversion, channel mixing beyond a sum, and reopening a device that
//! failed all happen on the media thread.

use super::codec::SAMPLE_RATE;
use super::resample::Resampler;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, Stream, StreamConfig};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ring capacity in seconds of audio: roomy, since the media thread drains it every 20 ms.
const RING_SECONDS: f32 = 0.5;
/// Capture audio kept ahead of the encoder at most; older samples are dropped to bound delay.
const MAX_CAPTURE_BACKLOG: usize = 4 * 960;
/// Playback audio queued at most in the ring; beyond this new audio is dropped.
const MAX_PLAYBACK_QUEUE_MS: u32 = 120;
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
}

fn input_stream(device: &cpal::Device, ring: HeapProd<f32>) -> Result<OpenStream, String> {
    let supported = device.default_input_config().map_err(|e| e.to_string())?;
    let format = supported.sample_format();
    let config: StreamConfig = supported.config();
    let failed = Arc::new(AtomicBool::new(false));
    let stream = match format {
        SampleFormat::F32 => build_input::<f32>(device, &config, ring, failed.clone()),
        SampleFormat::I16 => build_input::<i16>(device, &config, ring, failed.clone()),
        SampleFormat::I32 => build_input::<i32>(device, &config, ring, failed.clone()),
        SampleFormat::U16 => build_input::<u16>(device, &config, ring, failed.clone()),
        other => return Err(format!("sample format {other} not supported")),
    }?;
    stream.play().map_err(|e| e.to_string())?;
    Ok(OpenStream {
        _stream: stream,
        failed,
        rate: config.sample_rate,
    })
}

fn build_input<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut ring: HeapProd<f32>,
    failed: Arc<AtomicBool>,
) -> Result<Stream, String>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let scale = 1.0 / channels as f32;
    device
        .build_input_stream::<T, _, _>(
            *config,
            move |data: &[T], _| {
                // Real-time callback: arithmetic and a lock-free push only.
                for frame in data.chunks(channels) {
                    let mut sum = 0.0f32;
                    for s in frame {
                        sum += s.to_sample::<f32>();
                    }
                    let _ = ring.try_push(sum * scale);
                }
            },
            move |_err| failed.store(true, Ordering::Relaxed),
            None,
        )
        .map_err(|e| e.to_string())
}

fn output_stream(device: &cpal::Device, ring: HeapCons<f32>) -> Result<OpenStream, String> {
    let supported = device.default_output_config().map_err(|e| e.to_string())?;
    let format = supported.sample_format();
    let config: StreamConfig = supported.config();
    let failed = Arc::new(AtomicBool::new(false));
    let stream = match format {
        SampleFormat::F32 => build_output::<f32>(device, &config, ring, failed.clone()),
        SampleFormat::I16 => build_output::<i16>(device, &config, ring, failed.clone()),
        SampleFormat::I32 => build_output::<i32>(device, &config, ring, failed.clone()),
        SampleFormat::U16 => build_output::<u16>(device, &config, ring, failed.clone()),
        other => return Err(format!("sample format {other} not supported")),
    }?;
    stream.play().map_err(|e| e.to_string())?;
    Ok(OpenStream {
        _stream: stream,
        failed,
        rate: config.sample_rate,
    })
}

fn build_output<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut ring: HeapCons<f32>,
    failed: Arc<AtomicBool>,
) -> Result<Stream, String>
where
    T: SizedSample + FromSample<f32> + Send + 'static,
{
    let channels = usize::from(config.channels.max(1));
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |data: &mut [T], _| {
                // Real-time callback: a lock-free pop per frame, silence when the ring is short.
                for frame in data.chunks_mut(channels) {
                    let v = ring.try_pop().unwrap_or(0.0);
                    frame.fill(T::from_sample(v));
                }
            },
            move |_err| failed.store(true, Ordering::Relaxed),
            None,
        )
        .map_err(|e| e.to_string())
}

fn ring_len(rate: u32) -> usize {
    ((rate.max(8_000) as f32) * RING_SECONDS) as usize
}

/// A microphone: device samples, mixed to mono in the callback, converted to 48 kHz here.
pub struct CaptureDevice {
    name: Option<String>,
    stream: Option<OpenStream>,
    ring: Option<HeapCons<f32>>,
    resampler: Resampler,
    scratch: Vec<f32>,
    fifo: Vec<f32>,
    retry_at: Instant,
    warned: bool,
}

impl CaptureDevice {
    /// Opens the named (or default) capture device; without one, reads silence and retries.
    pub fn open(name: Option<String>) -> Self {
        let mut d = Self {
            name,
            stream: None,
            ring: None,
            resampler: Resampler::new(SAMPLE_RATE, SAMPLE_RATE),
            scratch: vec![0.0; ring_len(192_000)],
            fifo: Vec::with_capacity(MAX_CAPTURE_BACKLOG * 4),
            retry_at: Instant::now(),
            warned: false,
        };
        d.try_open();
        d
    }

    fn try_open(&mut self) {
        self.stream = None;
        self.ring = None;
        self.retry_at = Instant::now() + RETRY;
        // After a failure, fall back to the default device.
        let name = if self.warned {
            None
        } else {
            self.name.as_deref()
        };
        let Some(device) = find(name, true) else {
            self.warn("no capture device: sending silence");
            return;
        };
        let rate = device
            .default_input_config()
            .map_or(SAMPLE_RATE, |c| c.sample_rate());
        let (prod, cons) = HeapRb::<f32>::new(ring_len(rate)).split();
        match input_stream(&device, prod) {
            Ok(s) => {
                self.resampler = Resampler::new(s.rate, SAMPLE_RATE);
                self.stream = Some(s);
                self.ring = Some(cons);
            }
            Err(e) => self.warn(&format!(
                "capture device failed to open ({e}): sending silence"
            )),
        }
    }

    fn warn(&mut self, msg: &str) {
        if !self.warned {
            tracing::warn!("{msg}");
            self.warned = true;
        }
    }

    /// Reopens the device after an error (or retries a missing one) every few seconds.
    pub fn maintain(&mut self) {
        let failed = self
            .stream
            .as_ref()
            .is_none_or(|s| s.failed.load(Ordering::Relaxed));
        if failed && Instant::now() >= self.retry_at {
            if self.stream.is_some() {
                tracing::warn!("capture device error: reopening");
                self.warned = true;
            }
            self.try_open();
        }
    }

    /// Fills one frame; a shortfall is silence.
    pub fn read(&mut self, out: &mut [f32]) {
        if let Some(ring) = &mut self.ring {
            let n = ring.pop_slice(&mut self.scratch);
            self.resampler.process(&self.scratch[..n], &mut self.fifo);
        }
        if self.fifo.len() > MAX_CAPTURE_BACKLOG {
            let drop = self.fifo.len() - out.len();
            self.fifo.drain(..drop);
        }
        let n = out.len().min(self.fifo.len());
        out[..n].copy_from_slice(&self.fifo[..n]);
        out[n..].fill(0.0);
        self.fifo.drain(..n);
    }

    /// Samples buffered between the microphone and the encoder (an estimate).
    pub fn latency_samples(&self) -> usize {
        self.fifo.len() + self.ring.as_ref().map_or(0, |r| r.occupied_len())
    }
}

/// A speaker: 48 kHz frames converted to the device rate and queued for its callback.
pub struct PlaybackDevice {
    name: Option<String>,
    stream: Option<OpenStream>,
    ring: Option<HeapProd<f32>>,
    resampler: Resampler,
    scratch: Vec<f32>,
    retry_at: Instant,
    warned: bool,
}

impl PlaybackDevice {
    /// Opens the named (or default) playback device; without one, discards and retries.
    pub fn open(name: Option<String>) -> Self {
        let mut d = Self {
            name,
            stream: None,
            ring: None,
            resampler: Resampler::new(SAMPLE_RATE, SAMPLE_RATE),
            scratch: Vec::with_capacity(ring_len(192_000)),
            retry_at: Instant::now(),
            warned: false,
        };
        d.try_open();
        d
    }

    fn try_open(&mut self) {
        self.stream = None;
        self.ring = None;
        self.retry_at = Instant::now() + RETRY;
        let name = if self.warned {
            None
        } else {
            self.name.as_deref()
        };
        let Some(device) = find(name, false) else {
            if !self.warned {
                tracing::warn!("no playback device: the call goes on without sound");
                self.warned = true;
            }
            return;
        };
        let rate = device
            .default_output_config()
            .map_or(SAMPLE_RATE, |c| c.sample_rate());
        let (prod, cons) = HeapRb::<f32>::new(ring_len(rate)).split();
        match output_stream(&device, cons) {
            Ok(s) => {
                self.resampler = Resampler::new(SAMPLE_RATE, s.rate);
                self.stream = Some(s);
                self.ring = Some(prod);
            }
            Err(e) => {
                if !self.warned {
                    tracing::warn!("playback device failed to open ({e}): no sound");
                    self.warned = true;
                }
            }
        }
    }

    /// Reopens the device after an error (or retries a missing one) every few seconds.
    pub fn maintain(&mut self) {
        let failed = self
            .stream
            .as_ref()
            .is_none_or(|s| s.failed.load(Ordering::Relaxed));
        if failed && Instant::now() >= self.retry_at {
            if self.stream.is_some() {
                tracing::warn!("playback device error: reopening");
                self.warned = true;
            }
            self.try_open();
        }
    }

    /// Queues one 48 kHz frame.
    pub fn write(&mut self, frame: &[f32]) {
        let (Some(ring), Some(stream)) = (&mut self.ring, &self.stream) else {
            return;
        };
        self.scratch.clear();
        self.resampler.process(frame, &mut self.scratch);
        let max_queue = (stream.rate * MAX_PLAYBACK_QUEUE_MS / 1000) as usize;
        let room = max_queue.saturating_sub(ring.occupied_len());
        ring.push_slice(&self.scratch[..self.scratch.len().min(room)]);
    }

    /// Samples queued ahead of the speaker, at 48 kHz.
    pub fn latency_samples(&self) -> usize {
        match (&self.ring, &self.stream) {
            (Some(r), Some(s)) => r.occupied_len() * SAMPLE_RATE as usize / s.rate.max(1) as usize,
            _ => 0,
        }
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
        let mut p = PlaybackDevice::open(Some("no such device at all".into()));
        p.write(&frame);
        p.maintain();
        let _ = list_devices();
    }
}
