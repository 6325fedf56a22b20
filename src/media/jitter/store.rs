//! The packet store: packets waiting for their turn, kept by extended sequence number.
//!
//! Fixed storage allocated once: a ring of slots indexed by extended sequence number modulo its
//! capacity, so storing, finding and freeing a packet never allocates and wraparound of the
//! 16-bit sequence number is handled by the [`SeqExtender`] alone.

use fala_proto::rtp::SeqExtender;

/// Packets held at most: 1.28 s of 20 ms frames, far above the maximum delay.
pub(super) const CAPACITY: usize = 64;
/// Largest payload kept; bigger packets are dropped (Opus at our rates is far smaller).
const MAX_PAYLOAD: usize = 1500;

/// Whether a payload is small enough to be kept.
pub(super) fn fits(payload: &[u8]) -> bool {
    payload.len() <= MAX_PAYLOAD
}

/// Whether `ext` is so far past `from` that the store cannot hold both.
pub(super) fn out_of_reach(from: u64, ext: u64) -> bool {
    ext >= from + CAPACITY as u64
}

/// Where a held packet sits. Its bytes stay readable after [`PacketStore::free`] until another
/// packet is put into the same slot: a pop frees the packet it plays and hands out its payload
/// in the same call.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlotId(usize);

struct Slot {
    ext_seq: Option<u64>,
    /// Filled from a redundant copy carried by a later packet: the packet itself was lost.
    copy: bool,
    timestamp: u32,
    len: usize,
    data: Box<[u8]>,
}

/// Packets received and not played yet, with the sequence-number state that places them.
pub(super) struct PacketStore {
    slots: Vec<Slot>,
    held: usize,
    seq: SeqExtender,
    /// Highest extended sequence number of an original packet taken in (copies do not count:
    /// they are always older than the packet that carried them).
    newest: Option<u64>,
}

impl PacketStore {
    /// An empty store with all its slots allocated.
    pub(super) fn new() -> Self {
        let slots = (0..CAPACITY)
            .map(|_| Slot {
                ext_seq: None,
                copy: false,
                timestamp: 0,
                len: 0,
                data: vec![0; MAX_PAYLOAD].into_boxed_slice(),
            })
            .collect();
        Self {
            slots,
            held: 0,
            seq: SeqExtender::default(),
            newest: None,
        }
    }

    /// Forgets every packet and the sequence numbering (the stream starts over).
    pub(super) fn reset(&mut self) {
        for s in &mut self.slots {
            s.ext_seq = None;
        }
        self.held = 0;
        self.newest = None;
        self.seq = SeqExtender::default();
    }

    /// Extended sequence number of `seq`, without taking it as seen.
    pub(super) fn peek_ext(&self, seq: u16) -> u64 {
        self.seq.peek(seq)
    }

    /// Extended sequence number of `seq`, taking it as seen (it may become the highest).
    pub(super) fn extend(&mut self, seq: u16) -> u64 {
        self.seq.extend(seq)
    }

    /// Highest extended sequence number of an original packet taken in so far.
    pub(super) fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Records that the original packet `ext` has been taken in.
    pub(super) fn note_newest(&mut self, ext: u64) {
        self.newest = Some(self.newest.map_or(ext, |n| n.max(ext)));
    }

    /// Whether `ext` is so far behind the newest packet that its slot belongs to newer ones.
    pub(super) fn is_too_old(&self, ext: u64) -> bool {
        self.newest
            .is_some_and(|newest| ext + CAPACITY as u64 <= newest)
    }

    /// Whether no packet is held.
    pub(super) fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Whether the original packet `ext` (not a copy standing in for it) is already held.
    pub(super) fn holds_original(&self, ext: u64) -> bool {
        let slot = &self.slots[Self::index_of(ext)];
        slot.ext_seq == Some(ext) && !slot.copy
    }

    /// Whether the slot `ext` would go to holds any packet, `ext` or another.
    pub(super) fn is_slot_taken(&self, ext: u64) -> bool {
        self.slots[Self::index_of(ext)].ext_seq.is_some()
    }

    /// Puts a packet (or a copy standing in for one) into its slot.
    pub(super) fn put(&mut self, ext: u64, timestamp: u32, payload: &[u8], copy: bool) {
        let slot = &mut self.slots[Self::index_of(ext)];
        if slot.ext_seq.is_none() {
            self.held += 1;
        }
        slot.ext_seq = Some(ext);
        slot.copy = copy;
        slot.timestamp = timestamp;
        slot.len = payload.len();
        slot.data[..payload.len()].copy_from_slice(payload);
    }

    /// Where packet `ext` is, if it is held.
    pub(super) fn find(&self, ext: u64) -> Option<SlotId> {
        let idx = Self::index_of(ext);
        (self.slots[idx].ext_seq == Some(ext)).then_some(SlotId(idx))
    }

    /// The held packet with the lowest extended sequence number, and where it is.
    pub(super) fn earliest(&self) -> Option<(u64, SlotId)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(idx, s)| s.ext_seq.map(|ext| (ext, SlotId(idx))))
            .min_by_key(|&(ext, _)| ext)
    }

    /// Sender timestamp of the packet at `at`.
    pub(super) fn timestamp(&self, at: SlotId) -> u32 {
        self.slots[at.0].timestamp
    }

    /// Whether the packet at `at` is a redundant copy standing in for a lost packet.
    pub(super) fn is_copy(&self, at: SlotId) -> bool {
        self.slots[at.0].copy
    }

    /// Payload of the packet at `at`.
    pub(super) fn payload(&self, at: SlotId) -> &[u8] {
        let slot = &self.slots[at.0];
        &slot.data[..slot.len]
    }

    /// Frees the slot at `at` (played or dropped); its bytes stay until the slot is reused.
    pub(super) fn free(&mut self, at: SlotId) {
        self.slots[at.0].ext_seq = None;
        self.held -= 1;
    }

    /// The slot `ext` goes to: the ring reuses a slot every [`CAPACITY`] sequence numbers.
    fn index_of(ext: u64) -> usize {
        (ext % CAPACITY as u64) as usize
    }
}
