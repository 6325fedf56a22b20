//! Opus encoder and decoder with Fala's settings: 48 kHz mono, VoIP application, in-band FEC
//! driven by the loss the peer reports, optional DTX.

use opus::{Application, Bitrate, Channels, Decoder, Encoder};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Media sampling rate everywhere inside the engine.
pub const SAMPLE_RATE: u32 = 48_000;
/// Largest Opus packet we produce (well above 48 kb/s x 20 ms = 120 bytes).
pub const MAX_PACKET: usize = 1275;

/// An Opus call failed.
#[derive(Debug, Error)]
#[error("opus: {0}")]
pub struct CodecError(#[from] opus::Error);

/// Frame duration: 20 ms is the usual trade-off; 10 ms halves packetization delay for more
/// overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameMs {
    /// 10 ms frames.
    Ten,
    /// 20 ms frames.
    Twenty,
}

impl FrameMs {
    /// The frame for a length asked in milliseconds: 20 for 20 or more, 10 below.
    pub fn from_ms(ms: u32) -> FrameMs {
        if ms < 20 {
            FrameMs::Ten
        } else {
            FrameMs::Twenty
        }
    }

    /// Samples per frame at 48 kHz.
    pub fn samples(self) -> usize {
        match self {
            FrameMs::Ten => 480,
            FrameMs::Twenty => 960,
        }
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CodecSettings {
    /// Target bitrate, bits per second.
    pub bitrate: u32,
    /// Frame duration.
    pub frame: FrameMs,
    /// Loss protection: in-band FEC (LBRR) and redundant copies of earlier packets, as much
    /// as the loss the peer reports calls for ([`super::protection`]). Off = none of it.
    pub fec: bool,
    /// Discontinuous transmission: near-empty packets during silence.
    pub dtx: bool,
    /// Encoder complexity 0..=10.
    pub complexity: u8,
    /// Most redundant copies of earlier packets to add under loss (0-2): each multiplies the
    /// send bitrate while it is in use; 0 leaves only in-band FEC.
    #[serde(default = "two")]
    pub max_copies: u8,
}

fn two() -> u8 {
    2
}

impl Default for CodecSettings {
    /// 64 kb/s: in-band FEC takes bits from the main signal in the first seconds of every
    /// call, and at 48 kb/s that left the clean-network ceiling under the 4.2 PESQ-WB bar
    /// (docs/BENCHMARKS-media.md). 80 kb/s with headers is nothing on any link a call uses;
    /// under heavy loss two copies make it about 165 kb/s.
    fn default() -> Self {
        Self {
            bitrate: 64_000,
            frame: FrameMs::Twenty,
            fec: true,
            dtx: false,
            complexity: 9,
            max_copies: 2,
        }
    }
}

/// The Opus encoder, configured.
pub struct VoiceEncoder {
    enc: Encoder,
    settings: CodecSettings,
    /// In-band FEC expected-loss percentage in force (`None`: FEC off).
    inband_fec: Option<i32>,
}

impl VoiceEncoder {
    /// Makes an encoder with `settings`; in-band FEC starts as [`LossProtection`] starts a call.
    ///
    /// [`LossProtection`]: super::protection::LossProtection
    pub fn new(settings: CodecSettings) -> Result<Self, CodecError> {
        let mut enc = Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        enc.set_bitrate(Bitrate::Bits(settings.bitrate.clamp(6_000, 510_000) as i32))?;
        enc.set_dtx(settings.dtx)?;
        enc.set_complexity(i32::from(settings.complexity.min(10)))?;
        enc.set_inband_fec(false)?;
        enc.set_packet_loss_perc(0)?;
        let mut me = Self {
            enc,
            settings,
            inband_fec: None,
        };
        me.set_inband_fec(
            super::protection::LossProtection::new(settings.fec, settings.max_copies)
                .current()
                .inband_fec_perc,
        );
        Ok(me)
    }

    /// Samples of look-ahead the encoder adds (part of mouth-to-ear latency).
    pub fn lookahead(&mut self) -> usize {
        self.enc.get_lookahead().map_or(312, |v| v.max(0) as usize)
    }

    /// Turns in-band FEC (LBRR) on with this expected loss in percent, or off (`None`). Always
    /// off when the settings disable loss protection.
    pub fn set_inband_fec(&mut self, perc: Option<i32>) {
        let want = if self.settings.fec {
            perc.map(|p| p.clamp(1, 100))
        } else {
            None
        };
        if want == self.inband_fec {
            return;
        }
        let applied = self.enc.set_inband_fec(want.is_some()).is_ok()
            && self.enc.set_packet_loss_perc(want.unwrap_or(0)).is_ok();
        if applied {
            self.inband_fec = want;
        }
    }

    /// Encodes one frame into `out`; returns the packet length.
    pub fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, CodecError> {
        Ok(self.enc.encode_float(pcm, out)?)
    }
}

/// The Opus decoder with concealment and FEC entry points.
pub struct VoiceDecoder {
    dec: Decoder,
    frame: usize,
}

impl VoiceDecoder {
    /// Makes a decoder for frames of `frame` duration.
    pub fn new(frame: FrameMs) -> Result<Self, CodecError> {
        Ok(Self {
            dec: Decoder::new(SAMPLE_RATE, Channels::Mono)?,
            frame: frame.samples(),
        })
    }

    /// Decodes a packet into `out` (at least 120 ms long); returns samples written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, CodecError> {
        Ok(self.dec.decode_float(packet, out, false)?)
    }

    /// Recovers the frame before `next` from `next`'s in-band FEC (falls back to concealment
    /// inside libopus when `next` carries none). Writes exactly one frame.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [f32]) -> Result<usize, CodecError> {
        Ok(self.dec.decode_float(next, &mut out[..self.frame], true)?)
    }

    /// Conceals one lost frame (packet loss concealment). Writes exactly one frame.
    pub fn conceal(&mut self, out: &mut [f32]) -> Result<usize, CodecError> {
        Ok(self.dec.decode_float(&[], &mut out[..self.frame], false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_conceal_fec() {
        let settings = CodecSettings::default();
        let mut enc = VoiceEncoder::new(settings).unwrap();
        enc.set_inband_fec(Some(20));
        let mut dec = VoiceDecoder::new(settings.frame).unwrap();
        let mut pkt = [0u8; MAX_PACKET];
        let mut out = vec![0f32; 5760];
        let mut packets = Vec::new();
        for f in 0..10 {
            let pcm: Vec<f32> = (0..960)
                .map(|i| 0.3 * ((f * 960 + i) as f32 * 0.05).sin())
                .collect();
            let n = enc.encode(&pcm, &mut pkt).unwrap();
            assert!(n > 10 && n < 400, "{n}");
            packets.push(pkt[..n].to_vec());
        }
        assert_eq!(dec.decode(&packets[0], &mut out).unwrap(), 960);
        assert_eq!(dec.conceal(&mut out).unwrap(), 960);
        assert_eq!(dec.decode_fec(&packets[2], &mut out).unwrap(), 960);
        assert_eq!(dec.decode(&packets[2], &mut out).unwrap(), 960);
        assert!(enc.lookahead() > 0);
        assert_eq!(FrameMs::Ten.samples(), 480);
    }
}
