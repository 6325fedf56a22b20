//! The call log: who, when, which way, how long, how it ended.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fala_proto::call::Outcome;
use fala_proto::EndReason;
use serde::{Deserialize, Serialize};

/// Entries kept; older ones fall off so the file stays small.
pub const HISTORY_MAX: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallDirection {
    Outgoing,
    Incoming,
}

/// How a call ended, from this user's side, in a form that survives a language change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryOutcome {
    /// The call was connected (then ended somehow).
    Talked,
    /// An incoming call nobody here answered.
    Missed,
    /// It never connected, for this reason.
    Ended(EndReason),
    NotFound,
    ServerLost,
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub peer: String,
    /// Seconds since the Unix epoch when the call started (dialled or rang).
    pub started_unix: u64,
    pub direction: CallDirection,
    /// Conversation length when it connected.
    pub talked_secs: Option<u64>,
    pub outcome: HistoryOutcome,
}

impl HistoryEntry {
    /// Builds the entry for a call that just ended.
    pub fn new(
        peer: &str,
        started: SystemTime,
        direction: CallDirection,
        talked: Option<Duration>,
        outcome: &Outcome,
    ) -> Self {
        let outcome = match (talked, direction, outcome) {
            (Some(_), _, _) => HistoryOutcome::Talked,
            (None, CallDirection::Incoming, Outcome::Ended(EndReason::Cancelled))
            | (None, CallDirection::Incoming, Outcome::Ended(EndReason::NoAnswer)) => {
                HistoryOutcome::Missed
            }
            (None, _, Outcome::Ended(r)) => HistoryOutcome::Ended(*r),
            (None, _, Outcome::NotFound) => HistoryOutcome::NotFound,
            (None, _, Outcome::ServerLost) => HistoryOutcome::ServerLost,
            (None, _, Outcome::Refused { message, .. }) => HistoryOutcome::Refused(message.clone()),
            (None, _, Outcome::NotPrivate(why)) => HistoryOutcome::Refused(why.clone()),
        };
        HistoryEntry {
            peer: peer.to_string(),
            started_unix: started
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            direction,
            talked_secs: talked.map(|d| d.as_secs()),
            outcome,
        }
    }
}

/// Newest first, capped at [`HISTORY_MAX`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
}

impl History {
    pub fn push(&mut self, entry: HistoryEntry) {
        self.entries.insert(0, entry);
        self.entries.truncate(HISTORY_MAX);
    }
}

/// `YYYY-MM-DD HH:MM` in UTC, without a date library (civil-from-days, H. Hinnant).
pub fn format_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// `m:ss` for a duration.
pub fn clock(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(1_709_210_096), "2024-02-29 12:34 UTC");
    }

    #[test]
    fn unanswered_incoming_call_is_missed() {
        let e = HistoryEntry::new(
            "ana",
            UNIX_EPOCH,
            CallDirection::Incoming,
            None,
            &Outcome::Ended(EndReason::Cancelled),
        );
        assert_eq!(e.outcome, HistoryOutcome::Missed);
        let e = HistoryEntry::new(
            "ana",
            UNIX_EPOCH,
            CallDirection::Outgoing,
            Some(Duration::from_secs(61)),
            &Outcome::Ended(EndReason::PeerHungUp),
        );
        assert_eq!(e.outcome, HistoryOutcome::Talked);
        assert_eq!(e.talked_secs, Some(61));
    }

    #[test]
    fn history_keeps_newest_first_and_caps() {
        let mut h = History::default();
        for i in 0..(HISTORY_MAX + 5) {
            h.push(HistoryEntry::new(
                &format!("u{i}"),
                UNIX_EPOCH,
                CallDirection::Outgoing,
                None,
                &Outcome::NotFound,
            ));
        }
        assert_eq!(h.entries.len(), HISTORY_MAX);
        assert_eq!(h.entries[0].peer, format!("u{}", HISTORY_MAX + 4));
    }
}
