//! The receive path of a call: drain the socket into the jitter buffer, take one decision
//! (decode, copy, FEC, conceal, stretch), and hand the whole piece of audio to the sink and
//! the recording.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{peak, Levels, MediaError, MAX_GAP_FILL, MIN_SILENCE, QUANTUM, ROOM_WAIT_FRAMES};
use crate::media::codec::{FrameMs, VoiceDecoder};
use crate::media::io::{OutputSpec, Sink};
use crate::media::jitter::{Decision, JitterBuffer, JitterSettings, JitterStats, Stretch};
use crate::media::recorder::Recorder;
use crate::media::stretch;
use crate::media::transport::Transport;

/// Network to speaker, one decision at a time.
pub(super) struct ReceivePath {
    sink: Sink,
    decoder: VoiceDecoder,
    jb: JitterBuffer,
    frame: usize,
    levels: Arc<Levels>,
    decoded: Vec<f32>,
    stretched: Vec<f32>,
    playout: Vec<f32>,
    /// How loud the peer has been lately, to find quiet frames to grow the delay in.
    quiet: stretch::QuietDetector,
    /// Frames the jitter buffer has been asking, without a break, to grow the delay in a pause.
    room_wait: u32,
    sink_failed: bool,
}

impl ReceivePath {
    /// Opens the sink (a device opens here, on the media thread) and the decoder.
    pub(super) fn open(
        output: &OutputSpec,
        frame: FrameMs,
        jitter: JitterSettings,
        levels: Arc<Levels>,
    ) -> Result<Self, MediaError> {
        let samples = frame.samples();
        Ok(Self {
            sink: Sink::open(output, samples)?,
            decoder: VoiceDecoder::new(frame)?,
            jb: JitterBuffer::new(jitter, samples as u32),
            frame: samples,
            levels,
            decoded: vec![0.0; 5760],
            stretched: Vec::with_capacity(4 * samples),
            playout: Vec::with_capacity(8 * samples),
            quiet: stretch::QuietDetector::default(),
            room_wait: 0,
            sink_failed: false,
        })
    }

    /// Samples of delay the sink adds after a sample is handed to it.
    pub(super) fn latency_samples(&self) -> usize {
        self.sink.latency_samples()
    }

    /// No speaker is open: nothing is heard.
    pub(super) fn speaker_missing(&self) -> bool {
        self.sink.device_missing()
    }

    pub(super) fn jitter_stats(&self) -> JitterStats {
        self.jb.stats()
    }

    /// Decides and plays the next piece of audio: drains the socket (packets carry their
    /// kernel arrival times), takes one decision from the jitter buffer (a frame, stretched or
    /// not; or silence while buffering) and hands all of it to the sink at once. Returns the
    /// samples played, which set when this runs next.
    pub(super) fn play(
        &mut self,
        epoch: Instant,
        transport: &mut Transport,
        recorder: Option<&mut Recorder>,
    ) -> usize {
        self.sink.maintain();
        let now_us = epoch.elapsed().as_micros() as u64;
        let jb = &mut self.jb;
        transport.poll(now_us, |r| match r.copy {
            false => jb.insert(r.arrival_us, r.seq, r.timestamp, r.payload),
            true => jb.insert_copy(r.seq, r.timestamp, r.payload),
        });
        self.playout.clear();
        self.decode_one(now_us);
        if self.playout.is_empty() {
            self.playout.resize(QUANTUM, 0.0);
        }
        let out = &self.playout[..];
        self.levels
            .output
            .store(peak(out).to_bits(), Ordering::Relaxed);
        if let Err(e) = self.sink.write(out) {
            if !self.sink_failed {
                tracing::warn!("output file write failed: {e}");
                self.sink_failed = true;
            }
        }
        if let Some(rec) = recorder {
            rec.played(out);
        }
        transport.maybe_report(now_us);
        self.playout.len()
    }

    /// Playout time lost in a stall: silence in a file sink and in a call recording (a device
    /// has already played it), at most [`MAX_GAP_FILL`] of it.
    pub(super) fn play_gap(&mut self, samples: u64, mut recorder: Option<&mut Recorder>) {
        let mut left = samples.min(MAX_GAP_FILL);
        tracing::warn!(
            "media thread stalled for {} ms; the gap is silence",
            samples / 48
        );
        if !self.sink.keeps_time() && recorder.is_none() {
            return;
        }
        self.playout.clear();
        self.playout.resize(self.playout.capacity(), 0.0);
        while left > 0 {
            let n = (left as usize).min(self.playout.len());
            let silence = &self.playout[..n];
            if self.sink.keeps_time() {
                let _ = self.sink.write(silence);
            }
            if let Some(rec) = recorder.as_deref_mut() {
                rec.played(silence);
            }
            left -= n as u64;
        }
    }

    /// Flushes the sink (a WAV file gets its header completed).
    pub(super) fn finish(self) {
        if let Err(e) = self.sink.finish() {
            tracing::warn!("could not finish the output file: {e}");
        }
    }

    /// Pulls one decision from the jitter buffer and appends its audio to the playout queue.
    fn decode_one(&mut self, now_us: u64) {
        let frame = self.frame;
        let (decision, advice) = self.jb.pop(now_us, self.playout.len());
        let dec = &mut self.decoder;
        let buf = &mut self.decoded;
        let n = match decision {
            // Silence while buffering: a quantum, or just enough to start on the dot once the
            // first packet is due (at least 1 ms, so the thread does not spin).
            Decision::Buffering { ready_in_ms } => {
                let n = ready_in_ms.map_or(QUANTUM, |ms| {
                    ((ms * 48.0).ceil() as usize).clamp(MIN_SILENCE, QUANTUM)
                });
                buf[..n].fill(0.0);
                Ok(n)
            }
            Decision::Normal(p) => dec.decode(p, buf).or_else(|_| dec.conceal(buf)),
            Decision::Fec(next) => dec.decode_fec(next, buf).or_else(|_| dec.conceal(buf)),
            Decision::Conceal | Decision::Dtx => dec.conceal(buf),
        };
        let n = match n {
            Ok(n) if n > 0 => n,
            _ => {
                buf[..frame].fill(0.0);
                frame
            }
        };
        let pcm = &self.decoded[..n];
        self.quiet.observe(pcm);
        // A stretch that can wait (room for loss recovery) happens in a quiet frame (a pause, or
        // far below the recent speech level); once the buffer has asked for longer than the
        // limit without a break, in every frame until done.
        let (advice, wait_limit) = match advice {
            Stretch::ExpandInPause(max) => (Stretch::Expand(max), Some(ROOM_WAIT_FRAMES)),
            now => (now, None),
        };
        let go = match wait_limit {
            None => {
                self.room_wait = 0;
                true
            }
            Some(limit) => {
                self.room_wait += 1;
                self.quiet.is_quiet() || self.room_wait > limit
            }
        };
        let moved = match advice {
            _ if !go => 0,
            Stretch::Accelerate(max) => {
                -(stretch::accelerate(pcm, max, &mut self.stretched) as i64)
            }
            Stretch::Expand(max) => stretch::expand(pcm, max, &mut self.stretched) as i64,
            _ => 0,
        };
        if moved == 0 {
            self.playout.extend_from_slice(pcm);
        } else {
            self.playout.extend_from_slice(&self.stretched);
            self.jb.on_stretched(moved);
        }
    }
}
