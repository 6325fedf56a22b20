//! The in-call screen's numbers: the engine's statistics as a person reads them, and a
//! good / fair / poor verdict.

use crate::media::MediaStats;

/// Live call statistics, as measured by the engine. Each is `None` until known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    pub rtt_ms: Option<f32>,
    /// Percent of the peer's packets that never arrived (0–100).
    pub loss_pct: Option<f32>,
    pub jitter_ms: Option<f32>,
    /// Current playout delay of the jitter buffer.
    pub jitter_buffer_ms: Option<f32>,
    /// Bitrate being sent, kbit/s.
    pub send_kbps: Option<f32>,
    /// Percent of the lost packets whose audio came back (redundant copies, FEC), 0–100;
    /// `None` while nothing was lost.
    pub restored_pct: Option<f32>,
    /// Redundant copies we add to each packet now (0–2).
    pub copies_sent: Option<u8>,
    /// Which way our audio goes (`None` before the engine reports).
    pub path: Option<crate::media::MediaPath>,
}

/// A rough verdict a person can read at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    Fair,
    Poor,
}

impl CallStats {
    /// Good / fair / poor from loss, delay and jitter (thresholds after ITU-T G.114 and common
    /// VoIP practice: under 150 ms one way feels natural, over 5 % loss is clearly audible).
    /// The loss that counts is what is still missing after restoring (at 10 % network loss a
    /// call restores ~90 % and sounds fair, not poor). `None` until the engine has measured
    /// loss and round trip.
    pub fn quality(&self) -> Option<Quality> {
        let loss = self.loss_pct? * (1.0 - self.restored_pct.unwrap_or(0.0) / 100.0);
        let rtt = self.rtt_ms?;
        let jitter = self.jitter_ms.unwrap_or(0.0);
        Some(if loss < 1.0 && rtt < 300.0 && jitter < 30.0 {
            Quality::Good
        } else if loss < 5.0 && rtt < 600.0 && jitter < 60.0 {
            Quality::Fair
        } else {
            Quality::Poor
        })
    }
}

impl From<&MediaStats> for CallStats {
    /// The engine's counters as the in-call screen shows them.
    fn from(s: &MediaStats) -> Self {
        let expected = s.packets_received as f64 + s.packets_lost.max(0) as f64;
        CallStats {
            rtt_ms: s.rtt_ms.map(|v| v as f32),
            loss_pct: (expected > 0.0)
                .then(|| (100.0 * s.packets_lost.max(0) as f64 / expected) as f32),
            jitter_ms: Some(s.jitter_ms as f32),
            jitter_buffer_ms: Some(s.jitter_buffer_ms as f32),
            send_kbps: Some(s.bitrate_kbps as f32),
            restored_pct: (s.packets_lost > 0).then(|| {
                let restored = (s.copy_recovered + s.fec_recovered) as f32;
                (100.0 * restored / s.packets_lost as f32).min(100.0)
            }),
            copies_sent: Some(s.copies_sent),
            path: Some(s.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_needs_measurements_and_follows_thresholds() {
        assert_eq!(CallStats::default().quality(), None);
        let mut s = CallStats {
            rtt_ms: Some(40.0),
            loss_pct: Some(0.2),
            jitter_ms: Some(5.0),
            ..CallStats::default()
        };
        assert_eq!(s.quality(), Some(Quality::Good));
        s.loss_pct = Some(3.0);
        assert_eq!(s.quality(), Some(Quality::Fair));
        s.loss_pct = Some(10.0);
        assert_eq!(s.quality(), Some(Quality::Poor));
        s.restored_pct = Some(95.0);
        assert_eq!(
            s.quality(),
            Some(Quality::Good),
            "0.5 % left after restoring"
        );
        s.rtt_ms = Some(900.0);
        assert_eq!(s.quality(), Some(Quality::Poor));
    }
}
