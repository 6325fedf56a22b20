//! How much loss protection the sender adds, chosen from the loss the peer reports: a pure
//! state machine with time as an input.
//!
//! Levels, cheapest first (a call starts at one copy: the network is not known yet):
//! - none: a clean network; every bit goes to the speech (in-band FEC alone costs speech
//!   quality and encoder CPU);
//! - in-band FEC (Opus LBRR): a coarse copy of the previous frame inside the same bitrate, for
//!   rare single losses;
//! - one full copy of the previous packet (RFC 2198 redundancy, [`fala_proto::red`]);
//! - two full copies (the two previous packets): survives any two losses in a row.
//!
//! Full copies restore a lost frame exactly, where in-band FEC restores a coarse version
//! (docs/BENCHMARKS-media.md has the offline comparison). Copies cost bandwidth (2x or 3x the
//! Opus bitrate), so they are used only while loss is reported.
//!
//! Reports arrive about once a second and a 1 s report of 50 packets moves in 2 % steps, so
//! the loss is smoothed over about two reports; protection rises at once when the smoothed
//! loss calls for more, and falls only after [`HOLD_US`] without a report asking for the
//! current level, so a bursty network does not flap between levels.

/// A level stays at least this long after the last report that asked for it.
pub const HOLD_US: u64 = 10_000_000;
/// Smoothed loss at or above which one copy is sent ...
const ONE_COPY_AT: f64 = 0.015;
/// ... and two copies.
const TWO_COPIES_AT: f64 = 0.06;
/// Weight of a new report in the smoothed loss.
const ALPHA: f64 = 0.5;
/// At the start of a call, before any report, the network is unknown: one copy is sent (in-band
/// FEC with this expected loss if copies are capped to 0) ...
const START_HINT_PERC: i32 = 5;
/// ... for this long, or longer if the reports show loss (three clean reports are evidence
/// enough of a clean network; a loss asks for its level for [`HOLD_US`]). Costs 2x the
/// bitrate for 3 s of every call; on a lossy path the first second, before any report, is
/// where most of the damage happens otherwise.
const START_HOLD_US: u64 = 3_000_000;

/// What the sender does right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// In-band FEC on, with this expected loss in percent (the encoder's LBRR strength);
    /// `None` = off.
    pub inband_fec_perc: Option<i32>,
    /// Full copies of earlier packets carried in each packet (0, 1 or 2).
    pub copies: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    None = 0,
    InbandFec = 1,
    OneCopy = 2,
    TwoCopies = 3,
}

/// The policy. See the module docs.
#[derive(Debug, Clone)]
pub struct LossProtection {
    enabled: bool,
    max_copies: usize,
    /// Smoothed loss; `None` before the first report (which is then taken as it is).
    smoothed: Option<f64>,
    /// When each level was last asked for (indexed by `Level as usize`).
    asked_at: [Option<u64>; 4],
    level: Level,
    /// In-band FEC strength while at that level: from the loss that asked for it.
    fec_perc: i32,
}

impl LossProtection {
    /// A policy for a new call; `enabled = false` keeps every protection off (the baseline).
    /// `max_copies` caps the copies (bandwidth); where the loss calls for more, in-band FEC
    /// makes up for what is missing.
    pub fn new(enabled: bool, max_copies: u8) -> Self {
        let asked_at = [None; 4];
        Self {
            enabled,
            max_copies: usize::from(max_copies.min(2)),
            smoothed: None,
            asked_at,
            level: if enabled { Level::OneCopy } else { Level::None },
            fec_perc: START_HINT_PERC,
        }
    }

    /// Feeds one receiver report: `fraction_lost` as in RTCP (0..=255 of 256) at `now_us`.
    pub fn on_report(&mut self, now_us: u64, fraction_lost: u8) {
        if !self.enabled {
            return;
        }
        let f = f64::from(fraction_lost) / 256.0;
        let smoothed = self.smoothed.map_or(f, |s| ALPHA * f + (1.0 - ALPHA) * s);
        self.smoothed = Some(smoothed);
        // Twice the loss plus 3 points: the expected-loss setting also sets how finely the LBRR
        // copy is quantized, and a recovered frame is only as good as that copy.
        let perc = (smoothed.max(f) * 100.0).round() as i32;
        let asked = if smoothed >= TWO_COPIES_AT {
            Level::TwoCopies
        } else if smoothed >= ONE_COPY_AT {
            Level::OneCopy
        } else if f > 0.0 || smoothed > 0.002 {
            Level::InbandFec
        } else {
            Level::None
        };
        if asked != Level::None {
            self.fec_perc = (2 * perc + 3).clamp(2, 30);
        }
        self.asked_at[asked as usize] = Some(now_us);
        self.level = [
            Level::TwoCopies,
            Level::OneCopy,
            Level::InbandFec,
            Level::None,
        ]
        .into_iter()
        .find(|&l| {
            l == Level::None
                || (l == Level::OneCopy && now_us < START_HOLD_US)
                || self.asked_at[l as usize].is_some_and(|t| now_us.saturating_sub(t) < HOLD_US)
        })
        .unwrap_or(Level::None);
    }

    /// What to send now.
    pub fn current(&self) -> Protection {
        let copies = match self.level {
            Level::None | Level::InbandFec => 0,
            Level::OneCopy => 1,
            Level::TwoCopies => 2,
        };
        let copies = copies.min(self.max_copies);
        let fec = match self.level {
            Level::None => false,
            Level::InbandFec => true,
            // Copies replace in-band FEC; without any (capped to 0), FEC is all there is.
            Level::OneCopy | Level::TwoCopies => copies == 0,
        };
        Protection {
            inband_fec_perc: fec.then_some(self.fec_perc),
            copies,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn report(p: &mut LossProtection, t_s: u64, loss_perc: u32) -> Protection {
        p.on_report(t_s * S, (loss_perc * 256 / 100).min(255) as u8);
        p.current()
    }

    #[test]
    fn starts_with_one_copy_then_drops_it_on_a_clean_network() {
        let mut p = LossProtection::new(true, 2);
        assert_eq!(p.current().inband_fec_perc, None);
        assert_eq!(p.current().copies, 1);
        for t in 1..3 {
            assert_eq!(report(&mut p, t, 0).copies, 1, "held at {t} s");
        }
        let clean = report(&mut p, 3, 0);
        assert_eq!(clean.inband_fec_perc, None);
        assert_eq!(clean.copies, 0);
    }

    #[test]
    fn heavy_loss_gets_two_copies_at_once_and_keeps_them_through_a_quiet_spell() {
        let mut p = LossProtection::new(true, 2);
        let hit = report(&mut p, 1, 12);
        assert_eq!(hit.copies, 2);
        assert_eq!(hit.inband_fec_perc, None, "copies replace in-band FEC");
        // Bursty: a few clean seconds do not drop protection.
        for t in 2..11 {
            assert_eq!(report(&mut p, t, 0).copies, 2, "at {t} s");
        }
        // After the hold, down to what the recent reports asked for.
        let later = report(&mut p, 12, 0);
        assert!(later.copies < 2, "{later:?}");
        let mut t = 12;
        while p.current()
            != (Protection {
                inband_fec_perc: None,
                copies: 0,
            })
        {
            t += 1;
            report(&mut p, t, 0);
            assert!(t < 40, "protection never fell");
        }
    }

    #[test]
    fn moderate_loss_gets_one_copy_and_a_single_blip_only_fec() {
        let mut p = LossProtection::new(true, 2);
        for t in 1..20 {
            report(&mut p, t, 0);
        }
        let blip = report(&mut p, 20, 2);
        assert_eq!(blip.copies, 0);
        assert!(blip.inband_fec_perc.is_some());
        let mut steady = blip;
        for t in 21..25 {
            steady = report(&mut p, t, 3);
        }
        assert_eq!(steady.copies, 1);
    }

    #[test]
    fn capped_copies_fall_back_to_inband_fec() {
        let start = LossProtection::new(true, 0).current();
        assert_eq!(start.inband_fec_perc, Some(START_HINT_PERC));
        let mut p = LossProtection::new(true, 1);
        assert_eq!(report(&mut p, 1, 12).copies, 1);
        let mut p = LossProtection::new(true, 0);
        let capped = report(&mut p, 1, 12);
        assert_eq!(capped.copies, 0);
        assert!(capped.inband_fec_perc.unwrap() >= 20, "{capped:?}");
    }

    #[test]
    fn disabled_never_protects() {
        let mut p = LossProtection::new(false, 2);
        assert_eq!(
            report(&mut p, 1, 30),
            Protection {
                inband_fec_perc: None,
                copies: 0
            }
        );
    }
}
