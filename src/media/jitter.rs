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
//!   cost 25 ms on every call, measured on a clean loopback).
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

use fala_proto::rtp::SeqExtender;

/// Packets held at most: 1.28 s of 20 ms frames, far above the maximum delay.
const CAPACITY: usize = 64;
/// Largest payload kept; bigger packets are dropped (Opus at our rates is far smaller).
const MAX_PAYLOAD: usize = 1500;
/// Histogram resolution and reach of relative delays.
const BIN_MS: f64 = 1.0;
const BINS: usize = 600;
/// Per-packet forgetting factor: about 10 s of memory at 50 packets a second.
const FORGET: f64 = 0.998;
/// Transits remembered for the moving minimum (2 s of 20 ms packets).
const TRANSIT_WINDOW: usize = 100;
/// Largest clock drift believed, as a rate (0.2 %: sound cards are within 0.01-0.1 %).
const MAX_DRIFT: f64 = 0.002;
/// Quantile of relative delay the target covers.
const QUANTILE: f64 = 0.95;
/// Delay above target (ms, or a quarter of the target if more) that starts accelerating ...
const ACCEL_ZONE_MS: f64 = 8.0;
/// ... and how close to the target (ms, or an eighth of it) it stops.
const ACCEL_STOP_MS: f64 = 5.0;
/// Forgetting factor of the loss rate, per played frame (about 2 s of memory).
const LOSS_FORGET: f64 = 0.99;
/// Loss rate above which the target makes room for FEC, and below which it stops.
const FEC_ROOM_ON: f64 = 0.02;
const FEC_ROOM_OFF: f64 = 0.005;
/// Forgetting factor of the double-loss rate (about 10 s of memory: pairs are rarer) ...
const DOUBLE_LOSS_FORGET: f64 = 0.998;
/// ... above which the target makes room for a second frame, and below which it stops.
const DOUBLE_ROOM_ON: f64 = 0.003;
const DOUBLE_ROOM_OFF: f64 = 0.001;
/// Loss rate above which a second frame of room is kept (two copies coming), and below which
/// it goes.
const TWO_ROOM_ON: f64 = 0.05;
const TWO_ROOM_OFF: f64 = 0.03;
/// Added to the target: on a clean loopback the 95th percentile of relative delay falls in
/// the first 1 ms bin, and every few seconds a packet came 1.2-1.6 ms after the fastest (a
/// thread woken a little late somewhere on the way). With no margin, that packet missed its
/// turn by a fraction of a millisecond, and half of the 10 s bench calls concealed a frame for
/// it (-0.15 PESQ each time, plus 20 ms of delay to take out again).
const MARGIN_MS: f64 = 1.5;
/// How long the buffer watches a new stream before it starts playing, ms: five packets of 20 ms
/// bound its jitter well enough to start near the right delay. With the start on the dot and
/// the margin above, measured on the bench: clean 31.5 -> 29.1 ms mouth-to-ear and no
/// concealment; under loss and jitter no worse on average over six seeds, where single calls
/// vary by ±0.2 PESQ (docs/BENCHMARKS-media.md). The price is the stream's first 100 ms, when
/// nobody has started talking yet.
const START_OBSERVE_MS: f64 = 100.0;
/// At the start, a packet that has waited more than this past the target is dropped rather than
/// played: its extra delay would stay with the call (it is below the acceleration zone), while
/// the next packet can start on the target. (A 10 s clean call held 9.7 ms instead of 2.5.)
const START_SLACK_MS: f64 = 1.0;
/// Packets for which a copy two packets deep counts as "the sender sends two copies".
const TWO_COPIES_MEMORY: u64 = 100;

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

struct Slot {
    ext_seq: Option<u64>,
    /// Filled from a redundant copy carried by a later packet: the packet itself was lost.
    copy: bool,
    timestamp: u32,
    len: usize,
    data: Box<[u8]>,
}

/// The adaptive jitter buffer. See the module docs for the policy.
pub struct JitterBuffer {
    settings: JitterSettings,
    frame_samples: u32,
    slots: Vec<Slot>,
    held: usize,
    seq: SeqExtender,
    newest: Option<u64>,
    /// Next extended sequence to play, once started.
    next_seq: Option<u64>,
    /// Timestamp of the next frame to play (sender's clock).
    play_ts: u32,
    /// Last played timestamp extended to 64 bits, to measure delay across wraps.
    ts_base: Option<(u32, i64)>,
    /// (transit, arrival time) of recent packets, ms.
    transits: [(f64, f64); TRANSIT_WINDOW],
    transit_count: usize,
    /// Smallest (transit, arrival time) of the block of packets being collected, and of the
    /// last complete block: the slope between block minima estimates the clock drift.
    block_min: Option<(f64, f64)>,
    last_block_min: Option<(f64, f64)>,
    /// Estimated drift: ms of transit gained per ms (positive: receiver clock fast).
    drift: f64,
    /// Relative-delay histogram, in units of `hist_unit`: instead of multiplying every bin by
    /// [`FORGET`] per packet (600 multiplications), each new packet adds a weight that grows by
    /// 1 / FORGET, which keeps the same proportions; the bins are rescaled now and then.
    hist: [f64; BINS],
    /// Weight the next packet adds, and the sum of all bins.
    hist_unit: f64,
    hist_total: f64,
    delay_filt: Option<f64>,
    /// Accelerating until the delay is back near the target.
    accelerating: bool,
    /// The frame concealed while waiting for it (its time has been played already).
    /// (frame, how many frames of concealment were played waiting for it).
    waited: Option<(u64, u32)>,
    /// Recent share of frames lost (exponentially forgetting).
    loss_rate: f64,
    /// Recent share of frames lost right after a lost frame (slowly forgetting).
    double_loss_rate: f64,
    /// The last played frame was lost.
    last_lost: bool,
    /// Frames played so far (the loss rates start as plain means).
    frames_seen: u64,
    /// Copies reaching two packets back were seen until this extended sequence number: only
    /// then can a second frame of room restore a pair of losses.
    two_copies_until: u64,
    /// Frames of room the target keeps for recovery (0, 1 or 2): the packet after a lost one
    /// (FEC, or the first copy) or the one after that (the second copy) is usually here when
    /// the lost frame's turn comes.
    fec_room: u8,
    /// Most audio ever queued ahead at a pop, ms (the caller's tick size).
    pop_lead_ms: f64,
    /// When the first packet of the stream arrived (receiver's clock, ms).
    first_arrival_ms: Option<f64>,
    /// Before playout starts: the timestamp (ms, extended) of the packet after the last one
    /// dropped for having waited too long.
    start_next_ts_ms: Option<f64>,
    /// Before playout starts: the first sequence number whose fate the loss rates have not
    /// learned yet (from the first packet seen).
    start_cursor: Option<u64>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for frames of `frame_samples` at 48 kHz (960 for 20 ms).
    pub fn new(settings: JitterSettings, frame_samples: u32) -> Self {
        let slots = (0..CAPACITY)
            .map(|_| Slot {
                ext_seq: None,
                copy: false,
                timestamp: 0,
                len: 0,
                data: vec![0; MAX_PAYLOAD].into_boxed_slice(),
            })
            .collect();
        let mut jb = Self {
            settings,
            frame_samples,
            slots,
            held: 0,
            seq: SeqExtender::default(),
            newest: None,
            next_seq: None,
            play_ts: 0,
            ts_base: None,
            transits: [(0.0, 0.0); TRANSIT_WINDOW],
            transit_count: 0,
            block_min: None,
            last_block_min: None,
            drift: 0.0,
            hist: [0.0; BINS],
            hist_unit: 1.0,
            hist_total: 0.0,
            delay_filt: None,
            accelerating: false,
            waited: None,
            loss_rate: 0.0,
            double_loss_rate: 0.0,
            last_lost: false,
            frames_seen: 0,
            two_copies_until: 0,
            fec_room: 0,
            pop_lead_ms: 0.0,
            first_arrival_ms: None,
            start_next_ts_ms: None,
            start_cursor: None,
            stats: JitterStats::default(),
        };
        jb.stats.target_ms = jb.target_ms();
        jb
    }

    fn frame_ms(&self) -> f64 {
        f64::from(self.frame_samples) / 48.0
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
            JitterMode::Adaptive => {
                let total = self.hist_total;
                let mut p95 = 0.0;
                if total > 0.0 {
                    let mut acc = 0.0;
                    for (i, v) in self.hist.iter().enumerate() {
                        acc += v;
                        if acc >= QUANTILE * total {
                            p95 = (i as f64 + 1.0) * BIN_MS;
                            break;
                        }
                    }
                }
                // The packet is whole on arrival: the 95th percentile alone is the target. Under
                // loss, one or two more frames, so that when a frame turns out lost the packets
                // carrying its copies (or FEC) are usually already here.
                // Plus the audio still queued when a frame is popped (the caller's granularity):
                // a packet must be here at the pop, which comes that long before the frame is
                // heard. 0 in the engine, which pops exactly when the sink needs the frame (it
                // was up to 5 ms with the old fixed tick); up to a frame in the 20 ms-tick
                // scenario tests.
                // Plus a small margin for the rare packet just past the percentile (see
                // [`MARGIN_MS`]).
                (p95 + MARGIN_MS + self.pop_lead_ms + self.room_ms()).clamp(
                    f64::from(self.settings.min_delay_ms),
                    f64::from(self.settings.max_delay_ms).max(frame),
                )
            }
        }
    }

    /// The part of the target that is room for loss recovery (not arrival jitter); always 0 in
    /// fixed mode, whose loss handling stops before setting any.
    fn room_ms(&self) -> f64 {
        f64::from(self.fec_room) * self.frame_ms()
    }

    fn slot_of(ext: u64) -> usize {
        (ext % CAPACITY as u64) as usize
    }

    /// The fastest transit a packet could have at `now_ms`: the minimum of recent transits,
    /// each carried forward by the estimated clock drift. Without the drift term, a receiver
    /// clock 0.1 % fast makes every new transit 2 ms longer than the window's minimum, the
    /// newest packet always looks "late" by that much, and the playout point slides into the
    /// arrivals before the delay measured against the stale minimum ever drops below target.
    fn min_transit(&self, now_ms: f64) -> Option<f64> {
        let n = self.transit_count.min(TRANSIT_WINDOW);
        self.transits[..n]
            .iter()
            .map(|&(tr, t)| tr + self.drift * (now_ms - t))
            .reduce(f64::min)
    }

    /// Collects block minima of transit and updates the drift estimate once per block.
    fn track_drift(&mut self, transit: f64, now_ms: f64) {
        let m = match self.block_min {
            Some((tr, t)) if tr <= transit => (tr, t),
            _ => (transit, now_ms),
        };
        self.block_min = Some(m);
        if !self.transit_count.is_multiple_of(TRANSIT_WINDOW) {
            return;
        }
        if let Some((tr0, t0)) = self.last_block_min {
            if m.1 - t0 > 500.0 {
                let raw = ((m.0 - tr0) / (m.1 - t0)).clamp(-MAX_DRIFT, MAX_DRIFT);
                self.drift = 0.7 * self.drift + 0.3 * raw;
            }
        }
        self.last_block_min = Some(m);
        self.block_min = None;
    }

    fn reset(&mut self) {
        for s in &mut self.slots {
            s.ext_seq = None;
        }
        self.held = 0;
        self.next_seq = None;
        self.newest = None;
        self.seq = SeqExtender::default();
        self.ts_base = None;
        self.delay_filt = None;
        self.accelerating = false;
        self.waited = None;
        self.first_arrival_ms = None;
        self.start_next_ts_ms = None;
        self.start_cursor = None;
    }

    /// Extends a timestamp to 64 bits near the last one seen (wrap-safe), in samples.
    fn extend_ts(&self, ts: u32) -> i64 {
        match self.ts_base {
            Some((base, ext)) => ext + i64::from(ts.wrapping_sub(base) as i32),
            None => i64::from(ts),
        }
    }

    /// Offers a received packet. `now_us` is the arrival time on the receiver's clock.
    pub fn insert(&mut self, now_us: u64, seq: u16, timestamp: u32, payload: &[u8]) {
        if payload.len() > MAX_PAYLOAD {
            return;
        }
        let ext = self.seq.peek(seq);
        if self.is_past(ext) {
            self.stats.late += 1;
            return;
        }
        if self
            .next_seq
            .is_some_and(|next| ext >= next + CAPACITY as u64)
        {
            // The stream jumped far ahead (peer restarted, long outage): start over.
            self.reset();
        }
        let ext = self.seq.extend(seq);
        if let Some(newest) = self.newest {
            if ext + CAPACITY as u64 <= newest {
                self.stats.late += 1;
                return;
            }
        }
        let idx = Self::slot_of(ext);
        let slot = &mut self.slots[idx];
        if slot.ext_seq == Some(ext) && !slot.copy {
            self.stats.duplicates += 1;
            return;
        }
        // (A copy already standing in for this packet is simply replaced by the original.)
        self.store(ext, timestamp, payload, false);
        self.stats.inserted += 1;
        self.newest = Some(self.newest.map_or(ext, |n| n.max(ext)));
        if self.ts_base.is_none() {
            self.ts_base = Some((timestamp, i64::from(timestamp)));
        }

        // Relative delay: this packet's transit minus the fastest recent one.
        let now_ms = now_us as f64 / 1000.0;
        self.first_arrival_ms.get_or_insert(now_ms);
        if self.next_seq.is_none() {
            self.start_cursor.get_or_insert(ext);
        }
        let transit = now_ms - self.extend_ts(timestamp) as f64 / 48.0;
        self.transits[self.transit_count % TRANSIT_WINDOW] = (transit, now_ms);
        self.transit_count += 1;
        self.track_drift(transit, now_ms);
        let rel = transit - self.min_transit(now_ms).unwrap_or(transit);
        let bin = ((rel / BIN_MS) as usize).min(BINS - 1);
        self.hist_unit /= FORGET;
        if self.hist_unit > 1e12 {
            for v in &mut self.hist {
                *v /= self.hist_unit;
            }
            self.hist_total /= self.hist_unit;
            self.hist_unit = 1.0;
        }
        self.hist[bin] += self.hist_unit;
        self.hist_total += self.hist_unit;
        self.stats.target_ms = self.target_ms();
    }

    /// Offers a redundant copy of an earlier packet (RFC 2198) that came inside a later one.
    /// It fills the slot only if the packet itself is missing and its turn has not passed; it
    /// says nothing about network delay, so the delay statistics ignore it.
    pub fn insert_copy(&mut self, seq: u16, timestamp: u32, payload: &[u8]) {
        // The fixed baseline models a simple phone: no FEC, no redundancy.
        let fixed = matches!(self.settings.mode, JitterMode::Fixed { .. });
        if fixed || payload.len() > MAX_PAYLOAD || self.newest.is_none() {
            return;
        }
        let ext = self.seq.peek(seq);
        let newest = self.newest.unwrap_or(ext);
        if ext >= newest || ext + CAPACITY as u64 <= newest {
            return;
        }
        if newest - ext >= 2 {
            self.two_copies_until = newest + TWO_COPIES_MEMORY;
        }
        if self.is_past(ext) {
            return;
        }
        // Its time was already filled by concealment while we waited for it: playing it now
        // would push every later frame back by a frame. A late *original* is played (the
        // network got slower and the delay must grow), but a copy arriving late only means the
        // original was lost; the copy that matters is the next frame's, on time.
        if self
            .waited
            .is_some_and(|(s, n)| ext >= s && ext < s + u64::from(n))
        {
            return;
        }
        if self.slots[Self::slot_of(ext)].ext_seq.is_some() {
            return;
        }
        self.store(ext, timestamp, payload, true);
    }

    /// Whether `ext` is behind the stream's first frame still to come: behind the next frame to
    /// play once playing, and before that behind the start's cursor (packets the start has
    /// already dropped and counted, or older than the first one seen). A packet or copy for it
    /// is late: taken in before the start, it would be counted again (a straggler made the
    /// frames after it count as lost twice; a copy of a dropped packet, a loss that did not
    /// happen).
    fn is_past(&self, ext: u64) -> bool {
        match self.next_seq {
            Some(next) => ext < next,
            None => self.start_cursor.is_some_and(|c| ext < c),
        }
    }

    /// Puts a packet (or a copy standing in for one) into its slot.
    fn store(&mut self, ext: u64, timestamp: u32, payload: &[u8], copy: bool) {
        let slot = &mut self.slots[Self::slot_of(ext)];
        if slot.ext_seq.is_none() {
            self.held += 1;
        }
        slot.ext_seq = Some(ext);
        slot.copy = copy;
        slot.timestamp = timestamp;
        slot.len = payload.len();
        slot.data[..payload.len()].copy_from_slice(payload);
    }

    fn take(&mut self, ext: u64) -> Option<usize> {
        let idx = Self::slot_of(ext);
        (self.slots[idx].ext_seq == Some(ext)).then_some(idx)
    }

    /// Decides what to play for the next frame. `pending_samples` is decoded audio still queued
    /// ahead of this frame (so delay is measured where the frame will actually be heard).
    pub fn pop(&mut self, now_us: u64, pending_samples: usize) -> (Decision<'_>, Stretch) {
        let frame = self.frame_samples;
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

        if let Some(idx) = self.take(next) {
            let ts = self.slots[idx].timestamp;
            let gap = ts.wrapping_sub(self.play_ts) as i32;
            if gap > (frame / 2) as i32 && gap < 48_000 {
                // Sender skipped frames (DTX): fill the gap, nothing is lost.
                self.play_ts = self.play_ts.wrapping_add(frame);
                return (Decision::Dtx, Stretch::None);
            }
            self.slots[idx].ext_seq = None;
            self.held -= 1;
            self.next_seq = Some(next + 1);
            self.waited = None;
            // A copy stands in for a lost packet: the network lost it all the same, and the
            // loss rate (which makes room for recovery in the target) must see that.
            let copy = self.slots[idx].copy;
            if copy {
                self.stats.copy_recovered += 1;
            }
            self.note_loss(copy);
            self.play_ts = ts.wrapping_add(frame);
            let ext_ts = self.extend_ts(ts);
            self.ts_base = Some((ts, ext_ts));
            let stretch = self.measure(now_us, pending_samples, ext_ts, target);
            let slot = &self.slots[idx];
            return (Decision::Normal(&slot.data[..slot.len]), stretch);
        }

        if self.held == 0 {
            // Nothing behind it: late or lost, we cannot tell yet. Conceal and wait for it; if
            // it comes next tick it plays then (the delay grows by a frame, as it must when
            // packets come that late).
            self.play_ts = self.play_ts.wrapping_add(frame);
            self.stats.concealed += 1;
            self.waited = match self.waited {
                Some((s, n)) if s == next => Some((s, n + 1)),
                _ => Some((next, 1)),
            };
            return (Decision::Conceal, Stretch::None);
        }
        self.stats.lost += 1;
        self.note_loss(true);
        self.next_seq = Some(next + 1);
        if let Some((s, n)) = self.waited.take().filter(|&(s, _)| s == next) {
            // Lost after all, and its time was already filled by the concealment played while
            // waiting: go straight on to the next frame. (Recovering it from FEC now would
            // play it one frame late and add 20 ms of delay for every loss.) A burst waited
            // out for n frames covers the next n lost frames the same way; counting only one
            // added 20 ms of delay per further frame of every burst, which was then
            // accelerated away (~250 ms of stretching per 10 s on the bursty profile).
            if n > 1 {
                self.waited = Some((s + 1, n - 1));
            }
            return self.pop(now_us, pending_samples);
        }
        self.play_ts = self.play_ts.wrapping_add(frame);
        self.stats.concealed += 1;
        let fec = matches!(self.settings.mode, JitterMode::Adaptive);
        if fec {
            if let Some(idx) = self.take(next + 1) {
                self.stats.fec_recovered += 1;
                self.stats.concealed -= 1;
                let slot = &self.slots[idx];
                return (Decision::Fec(&slot.data[..slot.len]), Stretch::None);
            }
        }
        (Decision::Conceal, Stretch::None)
    }

    /// Chooses the first packet to play, or `Err` to go on buffering. The buffer first watches
    /// the stream for [`START_OBSERVE_MS`]: one packet says nothing about jitter (its target
    /// would be 0, and every later packet would come late), a few bound it. Then playout starts
    /// with the earliest packet that has waited out the target, after dropping those that have
    /// waited past it (more than [`START_SLACK_MS`]) while the buffer watched: playing them
    /// would start the call with their extra delay.
    ///
    /// `Err` while buffering, with how soon the first packet will be ready if one is held and the
    /// watching is over.
    ///
    /// Frames missing or replaced by copies in the stretch watched count as lost for the loss
    /// rates right away (and dropped packets as received), so a lossy stream starts with its
    /// room for recovery already in the target, instead of growing it by stretching later.
    fn start(&mut self, now_us: u64, pending_samples: usize) -> Result<u64, Option<f64>> {
        let now_ms = now_us as f64 / 1000.0;
        let observed = now_ms - self.first_arrival_ms.ok_or(None)?;
        if observed < START_OBSERVE_MS {
            return Err(None);
        }
        let min_transit = self.min_transit(now_ms).unwrap_or(0.0);
        let waited = |ts_ms: f64| now_ms - ts_ms - min_transit + pending_samples as f64 / 48.0;
        // Packets are dropped only in the first two frames after the watching: enough for a
        // caller that times its silence to the millisecond (the engine) to start on the next
        // packet, and a caller with a coarse tick, which would find every next packet just as
        // far past its turn, still starts.
        let may_drop = observed < START_OBSERVE_MS + 2.0 * self.frame_ms();
        loop {
            let Some(first) = self.earliest() else {
                // Nothing held. After a drop, the next packet is due a frame after it: the
                // silence played meanwhile ends when it is, whatever the caller's step.
                let target = self.target_ms();
                return Err(self.start_next_ts_ms.map(|ts| target - waited(ts)));
            };
            if let Some(cursor) = self.start_cursor.filter(|&c| c < first) {
                for _ in cursor..first.min(cursor + CAPACITY as u64) {
                    self.note_loss(true);
                }
            }
            self.start_cursor = Some(first);
            let target = self.target_ms();
            let idx = Self::slot_of(first);
            let ts = self.extend_ts(self.slots[idx].timestamp) as f64 / 48.0;
            let waited = waited(ts);
            if may_drop && waited > target + START_SLACK_MS {
                self.note_loss(self.slots[idx].copy);
                self.start_cursor = Some(first + 1);
                self.slots[idx].ext_seq = None;
                self.held -= 1;
                self.start_next_ts_ms = Some(ts + self.frame_ms());
                continue;
            }
            if waited + 0.5 < target {
                return Err(Some(target - waited));
            }
            self.next_seq = Some(first);
            self.play_ts = self.slots[idx].timestamp;
            return Ok(first);
        }
    }

    /// Updates the loss rates with one played frame, and how much room the target makes for
    /// recovery: one frame while frames are being lost, two while losses come in pairs (at
    /// 10 % random loss, one frame in a hundred) and the sender sends two copies, which can
    /// then restore both if the packet after them is here in time. (Without a second copy the
    /// second frame of room would buy nothing but delay.)
    fn note_loss(&mut self, lost: bool) {
        // A plain mean over the first frames, then forgetting: the rates are right within a
        // fraction of a second of the start, when the room is most needed and cheapest to make.
        self.frames_seen += 1;
        let n = self.frames_seen as f64;
        let learn = |rate: &mut f64, forget: f64, hit: bool| {
            let w = (1.0 / n).max(1.0 - forget);
            *rate += w * (f64::from(u8::from(hit)) - *rate);
        };
        learn(&mut self.loss_rate, LOSS_FORGET, lost);
        let double = lost && self.last_lost;
        self.last_lost = lost;
        learn(&mut self.double_loss_rate, DOUBLE_LOSS_FORGET, double);
        if !matches!(self.settings.mode, JitterMode::Adaptive) {
            return;
        }
        // On above the upper threshold, off below the lower one, unchanged in between.
        let latch = |on: bool, off: bool, was: bool| on || (was && !off);
        let one = latch(
            self.loss_rate > FEC_ROOM_ON,
            self.loss_rate < FEC_ROOM_OFF,
            self.fec_room >= 1,
        );
        let two_copies = self.newest.is_some_and(|n| n < self.two_copies_until);
        // Pairs of losses: seen often, or likely (at 5 % random loss, one frame in 400).
        let two = two_copies
            && latch(
                self.double_loss_rate > DOUBLE_ROOM_ON || self.loss_rate > TWO_ROOM_ON,
                self.double_loss_rate < DOUBLE_ROOM_OFF && self.loss_rate < TWO_ROOM_OFF,
                self.fec_room == 2,
            );
        self.fec_room = u8::from(one) + u8::from(one && two);
    }

    fn earliest(&self) -> Option<u64> {
        self.slots.iter().filter_map(|s| s.ext_seq).min()
    }

    /// Measures the delay at which this frame will be heard and advises a stretch.
    fn measure(&mut self, now_us: u64, pending: usize, ext_ts: i64, target: f64) -> Stretch {
        let now_ms = now_us as f64 / 1000.0;
        let Some(min_transit) = self.min_transit(now_ms) else {
            return Stretch::None;
        };
        let delay = now_ms + pending as f64 / 48.0 - ext_ts as f64 / 48.0 - min_transit;
        let d = match self.delay_filt {
            Some(f) => 0.7 * f + 0.3 * delay,
            None => delay,
        };
        self.delay_filt = Some(d);
        self.stats.delay_ms = d;
        // Dead zone: accelerate only well above the target, expand a little below it. Once
        // accelerating, keep on until the delay is back near the target (hysteresis): a
        // start-up offset or a spike is removed entirely instead of parking just under the
        // edge of the zone.
        let high = target + (0.25 * target).max(ACCEL_ZONE_MS);
        // Expand as soon as the delay is below target, asking for enough to land a little
        // above it: a stretch moves whole pitch periods (several ms), so waiting until the delay
        // is well below target lets the buffer run dry first (measured with 0.1 % clock drift).
        // Half a millisecond under target: the target's 1 ms histogram bin is rounded up, so
        // this still leaves the packet popped at least 0.5 ms after it arrived, and a slow
        // drain (clock drift, 0.02 ms per frame at 0.1 %) is caught before the buffer runs dry.
        let low = target - 0.5;
        if d > high {
            self.accelerating = true;
        } else if d <= target + (0.125 * target).max(ACCEL_STOP_MS) {
            self.accelerating = false;
        }
        let room = self.room_ms();
        if self.accelerating {
            Stretch::Accelerate(((d - target) * 48.0) as usize)
        } else if d < low - room {
            Stretch::Expand(((target + ACCEL_STOP_MS - d) * 48.0) as usize)
        } else if d < low {
            Stretch::ExpandInPause(((target + ACCEL_STOP_MS - d) * 48.0) as usize)
        } else {
            Stretch::None
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
        if let Some(d) = &mut self.delay_filt {
            *d += samples as f64 / 48.0;
        }
    }
}

#[cfg(test)]
mod tests;
