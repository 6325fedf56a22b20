//! The media thread's schedule: two absolute deadlines, each a multiple of samples after the
//! start (`epoch`), so scheduling jitter never accumulates into drift.
//!
//! - send: every frame, the [`SendPath`] captures, encodes and sends one frame;
//! - play: when the sink has been handed everything before the next frame, the
//!   [`ReceivePath`] drains the socket and plays one decision, whole. A packet arriving up to
//!   that instant still makes it, and the thread wakes about twice a frame.
//!
//! Between them: the control queue (recordings), the stall rule (a thread far behind skips
//! what it missed instead of bursting), and the published statistics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::receive_path::ReceivePath;
use super::send_path::SendPath;
use super::{Control, Levels, MediaError, MediaStats};
use crate::media::codec::CodecSettings;
use crate::media::io::{InputSpec, OutputSpec};
use crate::media::jitter::JitterSettings;
use crate::media::recorder::Recorder;
use crate::media::transport::Transport;

/// Behind a deadline by more than this, the thread counts as stalled.
const STALL: Duration = Duration::from_millis(100);
/// How often statistics are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

fn samples_to_duration(samples: u64) -> Duration {
    Duration::from_nanos(samples * 1_000_000_000 / 48_000)
}

/// What the media thread owns.
pub(super) struct Worker {
    transport: Transport,
    send: SendPath,
    receive: ReceivePath,
    frame: usize,
    stats: Arc<Mutex<MediaStats>>,
    busy: Duration,
    /// The call recording, when one is running.
    recorder: Option<Recorder>,
}

impl Worker {
    /// Opens both paths: the source (capture device) first, then the sink (playback device).
    pub(super) fn open(
        transport: Transport,
        (input, output): (&InputSpec, &OutputSpec),
        codec: CodecSettings,
        jitter: JitterSettings,
        (muted, levels, stats): (Arc<AtomicBool>, Arc<Levels>, Arc<Mutex<MediaStats>>),
    ) -> Result<Self, MediaError> {
        let send = SendPath::open(input, codec, muted, levels.clone())?;
        let receive = ReceivePath::open(output, codec.frame, jitter, levels)?;
        Ok(Self {
            transport,
            send,
            receive,
            frame: codec.frame.samples(),
            stats,
            busy: Duration::ZERO,
            recorder: None,
        })
    }

    pub(super) fn run(mut self, control: Receiver<Control>, stop: &AtomicBool, epoch: Instant) {
        let frame_time = samples_to_duration(self.frame as u64);
        let mut next_send = epoch;
        // The playout clock: samples handed to the sink since `play_anchor`. The next frame is
        // decided when the sink has played everything before it, not earlier: a packet that
        // arrives up to that instant still makes it.
        let mut play_anchor = epoch;
        let mut played: u64 = 0;
        let mut next_publish = epoch;
        while !stop.load(Ordering::Relaxed) {
            match control.try_recv() {
                Err(TryRecvError::Disconnected) => break,
                Ok(Control::Record(wav)) => {
                    if let Some(old) = self.recorder.take() {
                        old.finish();
                    }
                    self.recorder = wav.map(|w| Recorder::new(*w, self.frame));
                }
                Err(TryRecvError::Empty) => {}
            }
            let started = Instant::now();
            if started >= next_send {
                if started > next_send + STALL {
                    // Far behind (the machine stalled): the frames whose time has passed were
                    // never captured, as a microphone's would not be. Skip them rather than send
                    // a burst, so what follows goes out on time and a file source stays in real
                    // time. The RTP timestamp jumps too, and the peer fills the gap as it does
                    // for DTX.
                    let missed = (started - next_send).as_nanos() / frame_time.as_nanos();
                    let missed = u32::try_from(missed).unwrap_or(u32::MAX);
                    self.send.skip_frames(missed, &mut self.transport);
                    next_send += frame_time.saturating_mul(missed);
                }
                let now_us = started.duration_since(epoch).as_micros() as u64;
                self.send
                    .send(now_us, &mut self.transport, self.recorder.as_mut());
                next_send += frame_time;
            }
            let next_play = play_anchor + samples_to_duration(played);
            if started >= next_play {
                if started > next_play + STALL {
                    // Far behind: a device played silence meanwhile (it underran); a file gets
                    // that silence written, so it stays in real time. Go on from now.
                    let gap = (started - next_play).as_micros() as u64 * 48 / 1000;
                    self.receive.play_gap(gap, self.recorder.as_mut());
                    play_anchor = started;
                    played = 0;
                }
                played += self
                    .receive
                    .play(epoch, &mut self.transport, self.recorder.as_mut())
                    as u64;
            }
            if started >= next_publish {
                self.publish(epoch.elapsed());
                next_publish += PUBLISH_EVERY;
            }
            self.busy += started.elapsed();

            let wake = next_send.min(play_anchor + samples_to_duration(played));
            let now = Instant::now();
            if wake > now {
                std::thread::sleep(wake - now);
            }
        }
        self.publish(epoch.elapsed());
        if let Some(rec) = self.recorder.take() {
            rec.finish();
        }
        self.receive.finish();
    }

    fn publish(&mut self, elapsed: Duration) {
        let t = self.transport.stats();
        let j = self.receive.jitter_stats();
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rtt = t.rtt_ms;
        let latency_samples = self.send.latency_samples() + self.receive.latency_samples();
        let s = MediaStats {
            duration_s: secs,
            packets_sent: t.packets_sent,
            frames_held: t.frames_held,
            path: if self.transport.tunneled() {
                super::MediaPath::Tcp
            } else if t.relayed {
                super::MediaPath::Relay
            } else {
                super::MediaPath::Direct
            },
            path_changes: t.paths.route_changes,
            path_fallbacks: t.paths.fallbacks,
            tcp_switches: self.transport.tunnel_changes(),
            checks_sent: t.paths.checks_sent,
            checks_answered: t.paths.checks_answered,
            first_audio_ms: t.first_media_us.map(|us| us as f64 / 1000.0),
            longest_audio_gap_ms: t.longest_media_gap_us as f64 / 1000.0,
            silent_for_ms: {
                let now_us = elapsed.as_micros() as u64;
                now_us.saturating_sub(t.last_heard_us.unwrap_or(0)) as f64 / 1000.0
            },
            packets_received: t.packets_received,
            packets_lost: t.packets_lost,
            fec_recovered: j.fec_recovered,
            copy_recovered: j.copy_recovered,
            copies_sent: self.send.copies() as u8,
            concealed: j.concealed,
            late: j.late,
            duplicates: j.duplicates,
            dropped_auth: t.dropped_auth,
            dropped_replay: t.dropped_replay,
            dropped_foreign: t.dropped_foreign + t.dropped_ssrc,
            jitter_ms: t.jitter_ms,
            rtt_ms: rtt,
            jitter_buffer_ms: j.delay_ms,
            jitter_target_ms: j.target_ms,
            latency_ms: latency_samples as f64 / 48.0 + rtt.unwrap_or(0.0) / 2.0 + j.delay_ms,
            bitrate_kbps: t.bytes_sent as f64 * 8.0 / secs / 1000.0,
            peer_loss: t.peer_loss,
            stretched_ms: (j.accelerated_samples + j.expanded_samples) as f64 / 48.0,
            cpu_percent: self.busy.as_secs_f64() / secs * 100.0,
            microphone_missing: self.send.microphone_missing(),
            speaker_missing: self.receive.speaker_missing(),
        };
        if let Ok(mut slot) = self.stats.try_lock() {
            *slot = s;
        }
    }
}
