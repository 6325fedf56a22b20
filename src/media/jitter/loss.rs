//! Loss and the room the target keeps for recovering lost frames.
//!
//! A lost frame can come back from the next packet's in-band FEC or from a redundant copy in a
//! later packet, but only if that packet is already here when the lost frame's turn comes. So
//! while frames are being lost the target grows by a frame (or two, when losses come in pairs
//! and the sender sends two copies); when losses stop, the room goes again.

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
/// Packets for which a copy two packets deep counts as "the sender sends two copies".
const TWO_COPIES_MEMORY: u64 = 100;

/// Recent loss rates and the room for recovery they call for.
pub(super) struct LossTracker {
    /// Whether the room is kept at all: the fixed baseline recovers nothing, so it keeps none.
    keeps_room: bool,
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
}

impl LossTracker {
    /// A tracker that has seen no frame yet; `keeps_room` is false for the fixed baseline.
    pub(super) fn new(keeps_room: bool) -> Self {
        Self {
            keeps_room,
            loss_rate: 0.0,
            double_loss_rate: 0.0,
            last_lost: false,
            frames_seen: 0,
            two_copies_until: 0,
            fec_room: 0,
        }
    }

    /// Frames of room the target keeps for recovery right now (0, 1 or 2).
    pub(super) fn room_frames(&self) -> u8 {
        self.fec_room
    }

    /// A copy reaching two or more packets behind `newest` arrived: the sender sends two copies,
    /// so a second frame of room can restore a pair of losses for a while.
    pub(super) fn note_two_copies(&mut self, newest: u64) {
        self.two_copies_until = newest + TWO_COPIES_MEMORY;
    }

    /// Updates the loss rates with one played frame, and how much room the target makes for
    /// recovery: one frame while frames are being lost, two while losses come in pairs (at
    /// 10 % random loss, one frame in a hundred) and the sender sends two copies, which can
    /// then restore both if the packet after them is here in time. (Without a second copy the
    /// second frame of room would buy nothing but delay.) `newest` is the highest sequence
    /// number received.
    pub(super) fn note_loss(&mut self, lost: bool, newest: Option<u64>) {
        self.learn_rates(lost);
        if !self.keeps_room {
            return;
        }
        let one = latch(
            self.loss_rate > FEC_ROOM_ON,
            self.loss_rate < FEC_ROOM_OFF,
            self.fec_room >= 1,
        );
        let two_copies = newest.is_some_and(|n| n < self.two_copies_until);
        // Pairs of losses: seen often, or likely (at 5 % random loss, one frame in 400).
        let two = two_copies
            && latch(
                self.double_loss_rate > DOUBLE_ROOM_ON || self.loss_rate > TWO_ROOM_ON,
                self.double_loss_rate < DOUBLE_ROOM_OFF && self.loss_rate < TWO_ROOM_OFF,
                self.fec_room == 2,
            );
        self.fec_room = u8::from(one) + u8::from(one && two);
    }

    /// Adds one frame to the loss and double-loss rates. A plain mean over the first frames,
    /// then forgetting: the rates are right within a fraction of a second of the start, when
    /// the room is most needed and cheapest to make.
    fn learn_rates(&mut self, lost: bool) {
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
    }
}

/// A switch with hysteresis: on above the upper threshold, off below the lower one, unchanged
/// in between.
fn latch(above_on: bool, below_off: bool, was_on: bool) -> bool {
    above_on || (was_on && !below_off)
}
