//! The start of a stream: watch the first packets, then start playing on the target.
//!
//! One packet says nothing about jitter (its target would be 0, and every later packet would
//! come late); a few bound it. So the buffer first watches a new stream for
//! [`START_OBSERVE_MS`], then starts with the earliest packet that has waited out the target,
//! after dropping those that waited past it while the buffer watched: playing them would start
//! the call with their extra delay, which stays (it is below the acceleration zone).

use super::store::{self, SlotId};
use super::JitterBuffer;

/// How long the buffer watches a new stream before it starts playing, ms: five packets of 20 ms
/// bound its jitter well enough to start near the right delay. The price is the stream's first
/// 100 ms, when nobody has started talking yet.
const START_OBSERVE_MS: f64 = 100.0;
/// At the start, a packet that has waited more than this past the target is dropped rather than
/// played: its extra delay would stay with the call (it is below the acceleration zone), while
/// the next packet can start on the target.
const START_SLACK_MS: f64 = 1.0;

/// What the buffer knows about a stream before it starts playing it.
#[derive(Default)]
pub(super) struct StartWatch {
    /// When the first packet of the stream arrived (receiver's clock, ms).
    first_arrival_ms: Option<f64>,
    /// The timestamp (ms, extended) of the packet after the last one dropped for having waited
    /// too long.
    next_ts_ms: Option<f64>,
    /// The first sequence number whose fate the loss rates have not learned yet (from the first
    /// packet seen).
    cursor: Option<u64>,
}

impl StartWatch {
    /// The first sequence number the start has not dealt with yet: anything before it was
    /// dropped and counted, or is older than the first packet seen.
    pub(super) fn cursor(&self) -> Option<u64> {
        self.cursor
    }
}

impl JitterBuffer {
    /// Notes an original packet `ext` arriving at `now_ms`, for the start's watching.
    pub(super) fn watch_arrival(&mut self, now_ms: f64, ext: u64) {
        self.start.first_arrival_ms.get_or_insert(now_ms);
        if self.next_seq.is_none() {
            self.start.cursor.get_or_insert(ext);
        }
    }

    /// Chooses the first packet to play, or `Err` to go on buffering, with how soon the first
    /// packet will be ready if one is held and the watching is over. See the module docs.
    ///
    /// Frames missing or replaced by copies in the stretch watched count as lost for the loss
    /// rates right away (and dropped packets as received), so a lossy stream starts with its
    /// room for recovery already in the target, instead of growing it by stretching later.
    pub(super) fn start(
        &mut self,
        now_us: u64,
        pending_samples: usize,
    ) -> Result<u64, Option<f64>> {
        let now_ms = now_us as f64 / 1000.0;
        let observed = now_ms - self.start.first_arrival_ms.ok_or(None)?;
        if observed < START_OBSERVE_MS {
            return Err(None);
        }
        let min_transit = self.delay.min_transit(now_ms).unwrap_or(0.0);
        // How long a frame stamped `ts_ms` will have waited past its fastest arrival once heard.
        let waited = |ts_ms: f64| now_ms - ts_ms - min_transit + pending_samples as f64 / 48.0;
        // Packets are dropped only in the first two frames after the watching: enough for a
        // caller that times its silence to the millisecond (the engine) to start on the next
        // packet, and a caller with a coarse tick, which would find every next packet just as
        // far past its turn, still starts.
        let may_drop = observed < START_OBSERVE_MS + 2.0 * self.frame_ms();
        loop {
            let Some((first, at)) = self.store.earliest() else {
                // Nothing held. After a drop, the next packet is due a frame after it: the
                // silence played meanwhile ends when it is, whatever the caller's step.
                let target = self.target_ms();
                return Err(self.start.next_ts_ms.map(|ts| target - waited(ts)));
            };
            self.count_missing_before(first);
            self.start.cursor = Some(first);
            let target = self.target_ms();
            let ts = self.extend_ts(self.store.timestamp(at)) as f64 / 48.0;
            let waited = waited(ts);
            if may_drop && waited > target + START_SLACK_MS {
                self.drop_stale_start(first, at, ts);
                continue;
            }
            if waited + 0.5 < target {
                return Err(Some(target - waited));
            }
            self.next_seq = Some(first);
            self.play_ts = self.store.timestamp(at);
            return Ok(first);
        }
    }

    /// Counts the frames between the start's cursor and `first` (the earliest packet held) as
    /// lost: they never came, or only as copies that were not kept.
    fn count_missing_before(&mut self, first: u64) {
        if let Some(cursor) = self.start.cursor.filter(|&c| c < first) {
            for _ in cursor..first.min(cursor + store::CAPACITY as u64) {
                self.note_loss(true);
            }
        }
    }

    /// Drops `first`, at `at` and stamped `ts_ms`, for having waited too long to start on: it
    /// counts as received (or lost, if only its copy came), and the next packet is due a frame
    /// after it.
    fn drop_stale_start(&mut self, first: u64, at: SlotId, ts_ms: f64) {
        self.note_loss(self.store.is_copy(at));
        self.start.cursor = Some(first + 1);
        self.store.free(at);
        self.start.next_ts_ms = Some(ts_ms + self.frame_ms());
    }
}
