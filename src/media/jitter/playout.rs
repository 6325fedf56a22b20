//! One turn of playout once the stream has started: the packet whose turn it is, a gap in the
//! sender's timestamps (DTX), a wait for a packet that may only be late, or a lost frame
//! recovered from FEC or concealed.

use super::store::SlotId;
use super::{Decision, JitterBuffer, JitterMode, Stretch};

impl JitterBuffer {
    /// Plays packet `next`, held at `at`; if the sender's timestamps skip ahead to it (DTX), fills
    /// one frame of the gap instead and keeps the packet for a later turn.
    pub(super) fn play(
        &mut self,
        next: u64,
        at: SlotId,
        now_us: u64,
        pending_samples: usize,
        target: f64,
    ) -> (Decision<'_>, Stretch) {
        let ts = self.store.timestamp(at);
        if self.is_dtx_gap(ts) {
            // Sender skipped frames (DTX): fill the gap, nothing is lost.
            self.play_ts = self.play_ts.wrapping_add(self.frame_samples);
            return (Decision::Dtx, Stretch::None);
        }
        // A copy stands in for a lost packet: the network lost it all the same, and the
        // loss rate (which makes room for recovery in the target) must see that.
        let copy = self.store.is_copy(at);
        self.store.free(at);
        self.next_seq = Some(next + 1);
        self.waited = None;
        if copy {
            self.stats.copy_recovered += 1;
        }
        self.note_loss(copy);
        self.play_ts = ts.wrapping_add(self.frame_samples);
        let ext_ts = self.extend_ts(ts);
        self.ts_base = Some((ts, ext_ts));
        let stretch = self.advise_stretch(now_us, pending_samples, ext_ts, target);
        (Decision::Normal(self.store.payload(at)), stretch)
    }

    /// Fills the turn of packet `next`, which is not here: it waits for it while nothing later
    /// is held, and otherwise takes it as lost.
    pub(super) fn replace_missing(
        &mut self,
        next: u64,
        now_us: u64,
        pending_samples: usize,
    ) -> (Decision<'_>, Stretch) {
        if self.store.is_empty() {
            // Nothing behind it: late or lost, we cannot tell yet. Conceal and wait for it; if
            // it comes next tick it plays then (the delay grows by a frame, as it must when
            // packets come that late).
            return self.conceal_waiting_for(next);
        }
        self.stats.lost += 1;
        self.note_loss(true);
        self.next_seq = Some(next + 1);
        if let Some((s, n)) = self.waited.take().filter(|&(s, _)| s == next) {
            // Lost after all, and its time was already filled by the concealment played while
            // waiting: go straight on to the next frame. (Recovering it from FEC now would
            // play it one frame late and add a frame of delay for every loss.) A burst waited
            // out for n frames covers the next n lost frames the same way; counting only one
            // added a frame of delay per further frame of every burst, which was then
            // accelerated away.
            if n > 1 {
                self.waited = Some((s + 1, n - 1));
            }
            return self.pop(now_us, pending_samples);
        }
        self.play_ts = self.play_ts.wrapping_add(self.frame_samples);
        self.stats.concealed += 1;
        let fec = matches!(self.settings.mode, JitterMode::Adaptive);
        if fec {
            if let Some(at) = self.store.find(next + 1) {
                self.stats.fec_recovered += 1;
                self.stats.concealed -= 1;
                return (Decision::Fec(self.store.payload(at)), Stretch::None);
            }
        }
        (Decision::Conceal, Stretch::None)
    }

    /// Conceals the turn of packet `next` while it may still come, and remembers how many
    /// frames have been played waiting for it.
    fn conceal_waiting_for(&mut self, next: u64) -> (Decision<'static>, Stretch) {
        self.play_ts = self.play_ts.wrapping_add(self.frame_samples);
        self.stats.concealed += 1;
        self.waited = match self.waited {
            Some((s, n)) if s == next => Some((s, n + 1)),
            _ => Some((next, 1)),
        };
        (Decision::Conceal, Stretch::None)
    }

    /// Measures the delay at which the frame stamped `ext_ts` will be heard and advises a
    /// stretch.
    fn advise_stretch(&mut self, now_us: u64, pending: usize, ext_ts: i64, target: f64) -> Stretch {
        let Some(delay) = self.delay.measure(now_us, pending, ext_ts) else {
            return Stretch::None;
        };
        self.stats.delay_ms = delay;
        self.delay.advise(delay, target, self.room_ms())
    }

    /// Whether the turn of `ext` was already played as concealment while waiting for it.
    pub(super) fn was_waited_out(&self, ext: u64) -> bool {
        self.waited
            .is_some_and(|(s, n)| ext >= s && ext < s + u64::from(n))
    }

    /// Whether a packet stamped `ts` comes after a gap in the sender's timestamps (DTX) rather
    /// than right after the frame last played. A jump of a second or more, or backwards, is not
    /// waited out: the packet plays at once and the timeline follows it.
    fn is_dtx_gap(&self, ts: u32) -> bool {
        let gap = ts.wrapping_sub(self.play_ts) as i32;
        gap > (self.frame_samples / 2) as i32 && gap < 48_000
    }

    /// Extends a timestamp to 64 bits near the last one seen (wrap-safe), in samples.
    pub(super) fn extend_ts(&self, ts: u32) -> i64 {
        match self.ts_base {
            Some((base, ext)) => ext + i64::from(ts.wrapping_sub(base) as i32),
            None => i64::from(ts),
        }
    }
}
