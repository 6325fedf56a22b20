//! The sending half of a media session: sequence numbers and timestamps, redundant copies of
//! the packets just sent (RFC 2198), and the packet written (and encrypted) into the outgoing
//! buffer.

use crate::media_crypto::{SessionKeys, TAG_LEN};
use crate::red::{self, RED_PAYLOAD_TYPE};
use crate::rtp::{self, RtpHeader, OPUS_PAYLOAD_TYPE, RTP_HEADER_LEN};

/// Largest RTP payload sent: redundant copies are left out rather than going past it, so a
/// packet never needs IP fragmentation on an ordinary 1280+ byte path MTU.
pub const MAX_PAYLOAD: usize = 1100;

/// The last packets sent, for redundant copies.
pub(super) struct SentHistory {
    /// (timestamp, length, bytes); the next push goes to `head`.
    packets: [(u32, usize, Box<[u8; red::MAX_BLOCK_LEN]>); red::MAX_COPIES],
    head: usize,
    count: usize,
}

impl SentHistory {
    pub(super) fn new() -> Self {
        Self {
            packets: std::array::from_fn(|_| (0, 0, Box::new([0; red::MAX_BLOCK_LEN]))),
            head: 0,
            count: 0,
        }
    }

    fn push(&mut self, timestamp: u32, payload: &[u8]) {
        if payload.len() > red::MAX_BLOCK_LEN {
            // Cannot be carried as a copy: nothing older can be either (copies are contiguous).
            self.count = 0;
            return;
        }
        let slot = &mut self.packets[self.head];
        slot.0 = timestamp;
        slot.1 = payload.len();
        slot.2[..payload.len()].copy_from_slice(payload);
        self.head = (self.head + 1) % red::MAX_COPIES;
        self.count = (self.count + 1).min(red::MAX_COPIES);
    }

    /// The `back`-th packet before the next one (1 = the last sent).
    fn get(&self, back: usize) -> (u32, &[u8]) {
        let idx = (self.head + red::MAX_COPIES - back) % red::MAX_COPIES;
        let (ts, len, data) = &self.packets[idx];
        (*ts, &data[..*len])
    }
}

/// Our outgoing stream: its identity and clocks, and what it sent last.
pub(super) struct Sender {
    pub(super) ssrc: u32,
    /// Extended sequence of the next packet; starts below 2^15 so the receiver's first guess at
    /// the rollover count is right even if the first packets are lost (nonce agreement).
    pub(super) next_ext_seq: u64,
    pub(super) timestamp: u32,
    /// Whether the next packet starts a talk spurt (after DTX silence), for the marker bit.
    talk_start: bool,
    history: SentHistory,
    red_buf: Box<[u8; 2048]>,
}

impl Sender {
    pub(super) fn new(ssrc: u32, first_seq: u16, first_timestamp: u32) -> Self {
        Self {
            ssrc,
            next_ext_seq: (1 << 16) + u64::from(first_seq % 0x8000),
            timestamp: first_timestamp,
            talk_start: true,
            history: SentHistory::new(),
            red_buf: Box::new([0; 2048]),
        }
    }

    /// Moves the RTP clock over samples that are not sent; the next packet starts a talkspurt.
    pub(super) fn skip_samples(&mut self, samples: u64) {
        self.timestamp = self.timestamp.wrapping_add(samples as u32);
        self.talk_start = true;
    }

    /// Writes one packet for `payload` with up to `copies` redundant copies into `out`
    /// (encrypted when `crypto` is set); returns its length, or `None` if it could not be
    /// written (the frame is then lost, as a failed send would be).
    pub(super) fn write_frame(
        &mut self,
        payload: &[u8],
        frame_samples: u32,
        copies: usize,
        crypto: Option<&SessionKeys>,
        out: &mut [u8],
    ) -> Option<usize> {
        let timestamp = self.timestamp;
        let n = self.copies_that_fit(payload.len(), timestamp, copies);
        let mut blocks: [(u32, &[u8]); red::MAX_COPIES] = [(0, &[]); red::MAX_COPIES];
        for (i, block) in blocks[..n].iter_mut().enumerate() {
            // Oldest first.
            let (ts, data) = self.history.get(n - i);
            *block = (timestamp.wrapping_sub(ts), data);
        }
        let (payload_type, body) = if n == 0 {
            (OPUS_PAYLOAD_TYPE, payload)
        } else {
            match red::write(
                OPUS_PAYLOAD_TYPE,
                &blocks[..n],
                payload,
                &mut self.red_buf[..],
            ) {
                Ok(len) => (RED_PAYLOAD_TYPE, &self.red_buf[..len]),
                Err(_) => (OPUS_PAYLOAD_TYPE, payload),
            }
        };
        let header = RtpHeader {
            marker: std::mem::take(&mut self.talk_start),
            payload_type,
            sequence: self.next_ext_seq as u16,
            timestamp,
            ssrc: self.ssrc,
        };
        let ext = self.next_ext_seq;
        self.next_ext_seq += 1;
        self.timestamp = self.timestamp.wrapping_add(frame_samples);
        let room = out.len() - TAG_LEN;
        let written = rtp::write_packet(&header, body, &mut out[..room]);
        self.history.push(timestamp, payload);
        let len = written.ok()?;
        match crypto {
            Some(c) => c.encrypt_rtp(out, len, RTP_HEADER_LEN, ext).ok(),
            None => Some(len),
        }
    }

    /// Copies must be of the immediately preceding sequence numbers: the newest ones whose
    /// timestamp offset and size fit.
    fn copies_that_fit(&self, primary_len: usize, timestamp: u32, wanted: usize) -> usize {
        let mut n = 0;
        let mut size = primary_len + 1;
        while n < wanted.min(self.history.count) {
            let (ts, data) = self.history.get(n + 1);
            size += 4 + data.len();
            if timestamp.wrapping_sub(ts) > red::MAX_TS_OFFSET || size > MAX_PAYLOAD {
                break;
            }
            n += 1;
        }
        n
    }
}
