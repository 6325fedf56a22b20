//! Adaptive playout (jitter) buffer, in the spirit of WebRTC NetEq: a pure state machine.
//!
//! Time is an input (microseconds on the receiver's clock); nothing here reads a clock, does
//! I/O, logs or allocates after construction, so scenario tests run minutes of simulated calls
//! in milliseconds and get the same answer every time.
//!
//! How it decides:
//! - Packets are stored by extended sequence number (wraparound-safe), reordered, and late or
//!   duplicate ones are dropped and counted.
//! - Every arrival adds its *relative delay* (transit time minus the smallest transit of the last
//!   two seconds, each carried forward by the clock drift estimated from the slope of 2 s
//!   block minima) to a histogram that slowly forgets; the target
//!   playout delay is its 95th percentile, as in NetEq. Delay is counted from the moment the
//!   packet could have arrived at the earliest to the moment its first sample is heard, so a
//!   whole packet is already there at delay 0: no extra frame or fixed floor is added (they
//!   would only add delay to every call).
//! - A new stream is watched for 100 ms before it plays, so the first target already knows
//!   some of its jitter; playout then starts with the packet whose turn has come, and the
//!   ones older than that are dropped.
//! - The playout delay actually in force is measured on each played packet (how long after the
//!   fastest possible arrival it is heard). Outside a dead zone around the target, the tick asks
//!   the caller to time-stretch that frame ([`Stretch`]), by at most one pitch period, so delay
//!   moves smoothly; clock drift between the two ends is absorbed the same way.
//! - A missing packet with a later one already here is lost: decoded from the next packet's
//!   in-band FEC when that one directly follows, concealed otherwise. A missing packet with
//!   nothing behind it may just be late: the tick conceals without giving up on it.
//!
//! Where it lives: [`JitterBuffer`] here holds the playout cursor and answers the caller; it is
//! made of the packet store (`store`), the delay estimate (`delay`), the loss rates and the
//! room they keep for recovery (`loss`), the stream's start (`start`), and what one turn plays
//! once started (`playout`).

mod delay;
mod loss;
mod playout;
mod start;
mod store;

use delay::DelayEstimate;
use loss::LossTracker;
use start::StartWatch;
use store::PacketStore;

/// Added to the target: while the 95th percentile of relative delay sits in the first 1 ms bin
/// (a clean network), now and then a packet still comes a little after the fastest (a thread
/// woken a little late somewhere on the way). With no margin, that packet misses its turn by a
/// fraction of a millisecond and is concealed, which is heard, and leaves a frame of delay to
/// take out again.
const MARGIN_MS: f64 = 1.5;

/// How the buffer chooses its delay.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum JitterMode {
    /// Target from measured arrival delay; lost packets come back from redundant copies or
    /// in-band FEC.
    Adaptive,
    /// Constant target, no FEC and no redundant copies: the baseline to compare against.
    Fixed {
        /// Playout delay to hold, ms.
        delay_ms: u32,
    },
}

/// Jitter buffer settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JitterSettings {
    /// Adaptive or fixed.
    pub mode: JitterMode,
    /// Lowest adaptive target, ms (0: as low as the measured arrival delay allows).
    pub min_delay_ms: u32,
    /// Highest adaptive target, ms.
    pub max_delay_ms: u32,
}

impl Default for JitterSettings {
    fn default() -> Self {
        Self {
            mode: JitterMode::Adaptive,
            min_delay_ms: 0,
            max_delay_ms: 400,
        }
    }
}

/// What to decode this tick.
#[derive(Debug, PartialEq)]
pub enum Decision<'a> {
    /// Still filling up before the first frame: play silence. `ready_in_ms`: how soon the first
    /// packet will have waited out the target, when one is due (so the caller can start on the
    /// dot instead of a whole silence step late).
    Buffering {
        /// Milliseconds until playout can start, if known.
        ready_in_ms: Option<f64>,
    },
    /// Decode this packet normally.
    Normal(&'a [u8]),
    /// The frame was lost: recover it from this (the following) packet's in-band FEC.
    Fec(&'a [u8]),
    /// The frame was lost or is late: let the decoder conceal it.
    Conceal,
    /// The sender is in discontinuous transmission: comfort noise / concealment, not a loss.
    Dtx,
}

/// Playout-rate advice for the frame decoded this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stretch {
    /// Play it as it is.
    None,
    /// Shorten it by up to this many samples (delay is above target).
    Accelerate(usize),
    /// Lengthen it by up to this many samples (delay is below target).
    Expand(usize),
    /// Lengthen it by up to this many samples only if it is a pause (silence). The delay is
    /// short only of the room kept for recovering lost packets: not needed this instant, so it
    /// is added where it cannot be heard (speech pauses come every second or two) instead of
    /// stretching speech.
    ExpandInPause(usize),
}

/// Counters and gauges for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub inserted: u64,
    /// Packets that came after their turn.
    pub late: u64,
    /// Packets seen twice.
    pub duplicates: u64,
    /// Frames declared lost.
    pub lost: u64,
    /// Lost frames recovered from in-band FEC.
    pub fec_recovered: u64,
    /// Lost packets replaced by a redundant copy from a later packet, in time to be played.
    pub copy_recovered: u64,
    /// Frames produced by concealment (losses and underruns).
    pub concealed: u64,
    /// Samples removed / added by time-stretching.
    pub accelerated_samples: u64,
    /// Samples added by time-stretching.
    pub expanded_samples: u64,
    /// Current target playout delay, ms.
    pub target_ms: f64,
    /// Measured playout delay, ms (filtered).
    pub delay_ms: f64,
}

/// The adaptive jitter buffer. See the module docs for the policy.
pub struct JitterBuffer {
    settings: JitterSettings,
    frame_samples: u32,
    store: PacketStore,
    delay: DelayEstimate,
    loss: LossTracker,
    start: StartWatch,
    /// Next extended sequence to play, once started.
    next_seq: Option<u64>,
    /// Timestamp of the next frame to play (sender's clock).
    play_ts: u32,
    /// Last played timestamp extended to 64 bits, to measure delay across wraps.
    ts_base: Option<(u32, i64)>,
    /// The frame concealed while waiting for it (its time has been played already).
    /// (frame, how many frames of concealment were played waiting for it).
    waited: Option<(u64, u32)>,
    /// Most audio ever queued ahead at a pop, ms (the caller's tick size).
    pop_lead_ms: f64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for frames of `frame_samples` at 48 kHz (960 for 20 ms).
    pub fn new(settings: JitterSettings, frame_samples: u32) -> Self {
        let adaptive = matches!(settings.mode, JitterMode::Adaptive);
        let mut jb = Self {
            settings,
            frame_samples,
            store: PacketStore::new(),
            delay: DelayEstimate::new(),
            loss: LossTracker::new(adaptive),
            start: StartWatch::default(),
            next_seq: None,
            play_ts: 0,
            ts_base: None,
            waited: None,
            pop_lead_ms: 0.0,
            stats: JitterStats::default(),
        };
        jb.stats.target_ms = jb.target_ms();
        jb
    }

    /// Counters and gauges.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Target playout delay right now, ms.
    pub fn target_ms(&self) -> f64 {
        let frame = self.frame_ms();
        match self.settings.mode {
            JitterMode::Fixed { delay_ms } => f64::from(delay_ms),
            // The packet is whole on arrival: the 95th percentile alone is the target. Under
            // loss, one or two more frames, so that when a frame turns out lost the packets
            // carrying its copies (or FEC) are usually already here.
            // Plus the audio still queued when a frame is popped (the caller's granularity):
            // a packet must be here at the pop, which comes that long before the frame is
            // heard. 0 in the engine, which pops exactly when the sink needs the frame; up to a
            // frame in the 20 ms-tick scenario tests.
            // Plus a small margin for the rare packet just past the percentile (see
            // [`MARGIN_MS`]).
            JitterMode::Adaptive => {
                (self.delay.quantile_ms() + MARGIN_MS + self.pop_lead_ms + self.room_ms()).clamp(
                    f64::from(self.settings.min_delay_ms),
                    f64::from(self.settings.max_delay_ms).max(frame),
                )
            }
        }
    }

    /// Offers a received packet. `now_us` is the arrival time on the receiver's clock.
    pub fn insert(&mut self, now_us: u64, seq: u16, timestamp: u32, payload: &[u8]) {
        if !store::fits(payload) {
            return;
        }
        let ext = self.store.peek_ext(seq);
        if self.is_past(ext) {
            self.stats.late += 1;
            return;
        }
        if self
            .next_seq
            .is_some_and(|next| store::out_of_reach(next, ext))
        {
            // The stream jumped far ahead (peer restarted, long outage): start over.
            self.restart();
        }
        let ext = self.store.extend(seq);
        if self.store.is_too_old(ext) {
            self.stats.late += 1;
            return;
        }
        if self.store.holds_original(ext) {
            self.stats.duplicates += 1;
            return;
        }
        // (A copy already standing in for this packet is simply replaced by the original.)
        self.store.put(ext, timestamp, payload, false);
        self.stats.inserted += 1;
        self.store.note_newest(ext);
        if self.ts_base.is_none() {
            self.ts_base = Some((timestamp, i64::from(timestamp)));
        }

        // Relative delay: this packet's transit minus the fastest recent one.
        let now_ms = now_us as f64 / 1000.0;
        self.watch_arrival(now_ms, ext);
        let transit = now_ms - self.extend_ts(timestamp) as f64 / 48.0;
        self.delay.observe(transit, now_ms);
        self.stats.target_ms = self.target_ms();
    }

    /// Offers a redundant copy of an earlier packet (RFC 2198) that came inside a later one.
    /// It fills the slot only if the packet itself is missing and its turn has not passed; it
    /// says nothing about network delay, so the delay statistics ignore it.
    pub fn insert_copy(&mut self, seq: u16, timestamp: u32, payload: &[u8]) {
        // The fixed baseline models a simple phone: no FEC, no redundancy.
        let fixed = matches!(self.settings.mode, JitterMode::Fixed { .. });
        if fixed || !store::fits(payload) {
            return;
        }
        let Some(newest) = self.store.newest() else {
            return;
        };
        let ext = self.store.peek_ext(seq);
        if ext >= newest || self.store.is_too_old(ext) {
            return;
        }
        if newest - ext >= 2 {
            self.loss.note_two_copies(newest);
        }
        if self.is_past(ext) {
            return;
        }
        // Its time was already filled by concealment while we waited for it: playing it now
        // would push every later frame back by a frame. A late *original* is played (the
        // network got slower and the delay must grow), but a copy arriving late only means the
        // original was lost; the copy that matters is the next frame's, on time.
        if self.was_waited_out(ext) {
            return;
        }
        if self.store.is_slot_taken(ext) {
            return;
        }
        self.store.put(ext, timestamp, payload, true);
    }

    /// Decides what to play for the next frame. `pending_samples` is decoded audio still queued
    /// ahead of this frame (so delay is measured where the frame will actually be heard).
    pub fn pop(&mut self, now_us: u64, pending_samples: usize) -> (Decision<'_>, Stretch) {
        // The caller pops when less than one of its ticks of audio is queued, so the largest
        // queue seen at a pop is its tick size: the most a pop can precede the frame's playout.
        self.pop_lead_ms = self.pop_lead_ms.max(pending_samples as f64 / 48.0);
        let next = match self.next_seq {
            Some(n) => n,
            None => match self.start(now_us, pending_samples) {
                Ok(first) => first,
                Err(ready_in_ms) => {
                    self.stats.target_ms = self.target_ms();
                    return (Decision::Buffering { ready_in_ms }, Stretch::None);
                }
            },
        };
        let target = self.target_ms();
        self.stats.target_ms = target;
        match self.store.find(next) {
            Some(at) => self.play(next, at, now_us, pending_samples, target),
            None => self.replace_missing(next, now_us, pending_samples),
        }
    }

    /// Tells the buffer how many samples a stretch really added (+) or removed (-), so the
    /// delay estimate moves at once and the next tick does not stretch again for the same cause.
    pub fn on_stretched(&mut self, samples: i64) {
        if samples > 0 {
            self.stats.expanded_samples += samples as u64;
        } else {
            self.stats.accelerated_samples += samples.unsigned_abs();
        }
        self.delay.shift(samples);
    }

    /// Updates the loss rates, and the room for recovery, with one frame played or lost.
    fn note_loss(&mut self, lost: bool) {
        self.loss.note_loss(lost, self.store.newest());
    }

    /// Whether `ext` is behind the stream's first frame still to come: behind the next frame to
    /// play once playing, and before that behind the start's cursor (packets the start has
    /// already dropped and counted, or older than the first one seen). A packet or copy for it
    /// is late: taken in before the start, it would be counted again (a straggler made the
    /// frames after it count as lost twice; a copy of a dropped packet, a loss that did not
    /// happen).
    fn is_past(&self, ext: u64) -> bool {
        self.next_seq
            .or(self.start.cursor())
            .is_some_and(|first| ext < first)
    }

    /// Forgets the stream's packets and position, to start over on a new one. The arrival
    /// statistics, the loss rates and the pop lead are not reset.
    fn restart(&mut self) {
        self.store.reset();
        self.delay.restart_playout();
        self.start = StartWatch::default();
        self.next_seq = None;
        self.ts_base = None;
        self.waited = None;
    }

    /// The part of the target that is room for loss recovery (not arrival jitter); always 0 in
    /// fixed mode, whose loss handling stops before setting any.
    fn room_ms(&self) -> f64 {
        f64::from(self.loss.room_frames()) * self.frame_ms()
    }

    /// Duration of one frame, ms.
    fn frame_ms(&self) -> f64 {
        f64::from(self.frame_samples) / 48.0
    }
}

#[cfg(test)]
mod tests;
