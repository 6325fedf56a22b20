//! The send path of a call: capture one frame, mute and meter it, encode it with the loss
//! protection the peer's reports call for, and hand it to the transport (or skip it during
//! DTX silence).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{peak, Levels, MediaError};
use crate::media::codec::{CodecSettings, VoiceEncoder, MAX_PACKET};
use crate::media::io::{InputSpec, Source};
use crate::media::protection::LossProtection;
use crate::media::recorder::Recorder;
use crate::media::transport::Transport;

/// Microphone to network, one frame at a time.
pub(super) struct SendPath {
    source: Source,
    encoder: VoiceEncoder,
    protection: LossProtection,
    codec: CodecSettings,
    frame: usize,
    /// The encoder's look-ahead, samples (part of the mouth-to-ear delay).
    lookahead: usize,
    muted: Arc<AtomicBool>,
    levels: Arc<Levels>,
    capture: Vec<f32>,
    packet: Vec<u8>,
    /// Near-empty (DTX) frames in a row.
    dtx_run: u32,
}

impl SendPath {
    /// Opens the source (a device opens here, on the media thread) and the encoder.
    pub(super) fn open(
        input: &InputSpec,
        codec: CodecSettings,
        muted: Arc<AtomicBool>,
        levels: Arc<Levels>,
    ) -> Result<Self, MediaError> {
        let frame = codec.frame.samples();
        let mut encoder = VoiceEncoder::new(codec)?;
        let lookahead = encoder.lookahead();
        Ok(Self {
            source: Source::open(input)?,
            encoder,
            protection: LossProtection::new(codec.fec, codec.max_copies),
            codec,
            frame,
            lookahead,
            muted,
            levels,
            capture: vec![0.0; frame],
            packet: vec![0; MAX_PACKET],
            dtx_run: 0,
        })
    }

    /// Samples of delay before a captured sample is sent: the source's buffering, the frame
    /// and the encoder's look-ahead.
    pub(super) fn latency_samples(&self) -> usize {
        self.source.latency_samples() + self.frame + self.lookahead
    }

    /// No microphone is open: the peer hears silence.
    pub(super) fn microphone_missing(&self) -> bool {
        self.source.device_missing()
    }

    /// Redundant copies the protection puts in each packet now.
    pub(super) fn copies(&self) -> usize {
        self.protection.current().copies
    }

    /// Captures, encodes and sends one frame.
    pub(super) fn send(
        &mut self,
        now_us: u64,
        transport: &mut Transport,
        recorder: Option<&mut Recorder>,
    ) {
        self.source.maintain();
        self.source.read(&mut self.capture);
        if self.muted.load(Ordering::Relaxed) {
            self.capture.fill(0.0);
        }
        self.levels
            .input
            .store(peak(&self.capture).to_bits(), Ordering::Relaxed);
        if let Some(rec) = recorder {
            rec.captured(&self.capture);
        }
        if let Some(lost) = transport.take_peer_report() {
            self.protection.on_report(now_us, lost);
            self.encoder
                .set_inband_fec(self.protection.current().inband_fec_perc);
        }
        let copies = self.protection.current().copies;
        match self.encoder.encode(&self.capture, &mut self.packet) {
            // With DTX, Opus marks silence with packets of 1-2 bytes: send one every 400 ms
            // (so the peer keeps its comfort noise) and skip the rest.
            Ok(n) if self.codec.dtx && n <= 2 && !self.dtx_run.is_multiple_of(20) => {
                self.dtx_run += 1;
                transport.skip_frame(self.frame as u32);
            }
            Ok(n) => {
                self.dtx_run = if n <= 2 { self.dtx_run + 1 } else { 0 };
                transport.send_frame(now_us, &self.packet[..n], self.frame as u32, copies);
            }
            Err(_) => transport.skip_frame(self.frame as u32),
        }
    }

    /// Frames the send schedule missed in a stall: skipped in the source and the RTP clock.
    pub(super) fn skip_frames(&mut self, frames: u32, transport: &mut Transport) {
        let samples = u64::from(frames) * self.frame as u64;
        self.source.skip(samples);
        transport.skip_samples(samples);
    }
}
