//! Sound devices through cpal. The callbacks only move samples between the device buffer and a
//! preallocated lock-free ring (and set an atomic flag on error): no locks, allocation, logging
//! or Opus there. Rate conversion, channel mixing beyond a sum, and reopening a device that
//! failed all happen on the media thread.
//!
//! Here: finding a device by name and the life of one device (`DeviceSlot`). Opening a stream
//! and its callbacks are in `stream`, the buffer targets and diagnostics both directions share
//! in `fill`, and the two directions in `capture` and `playback`. What the device constants
//! were measured against is in docs/BENCHMARKS-media.md ("Where the device and timestamp rules
//! come from").

mod capture;
mod fill;
mod playback;
mod stream;

pub use capture::CaptureDevice;
pub use playback::PlaybackDevice;

use super::codec::SAMPLE_RATE;
use cpal::traits::{DeviceTrait, HostTrait};
use ringbuf::traits::Observer;
use std::time::{Duration, Instant};
use stream::OpenStream;

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

/// The first device whose name contains `name` (any case), else the default device.
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
struct DeviceSlot<R: Send + 'static> {
    name: Option<String>,
    input: bool,
    stream: Option<OpenStream>,
    ring: Option<R>,
    retry_at: Instant,
    /// A failure was reported already (once per device, not once per retry).
    warned: bool,
}

impl<R: Observer + Send + 'static> DeviceSlot<R> {
    /// Whether a stream is open and has not failed: false while the device is missing, would
    /// not open, or vanished (until a retry opens it or the default one).
    fn is_open(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| !s.has_failed())
    }

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
        self.close();
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

    /// Closes the stream, off this thread (see [`close_elsewhere`]).
    fn close(&mut self) {
        close_elsewhere(self.stream.take(), self.ring.take());
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

impl<R: Send + 'static> Drop for DeviceSlot<R> {
    /// The end of a call closes its devices off the media thread too.
    fn drop(&mut self) {
        close_elsewhere(self.stream.take(), self.ring.take());
    }
}

/// Closes a stream on a thread of its own. Closing joins cpal's device thread, and a device
/// that vanished can leave that thread stuck for good: when the sound server dies mid-call,
/// ALSA's PulseAudio plugin deadlocks inside it. The call must go on (and be able to stop)
/// whatever happens there.
fn close_elsewhere<R: Send + 'static>(stream: Option<OpenStream>, ring: Option<R>) {
    if stream.is_none() {
        return;
    }
    let closed = std::thread::Builder::new()
        .name("fala-device-close".into())
        .spawn(move || drop((stream, ring)));
    if let Err(e) = closed {
        // The spawn dropped the stream here instead.
        tracing::warn!("no thread to close a sound device on: {e}");
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
