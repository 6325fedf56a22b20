//! "Find people": the server's directory search as the window uses it. The user types the
//! start of a name; one `search` is in flight at a time (a query typed meanwhile is sent when
//! the answer comes, so fast typing costs one request per round trip, not per key), pages
//! after the first come on request, and the shown page is asked again when it is older than
//! [`REFRESH_AFTER`] and the window is drawn anyway (an idle window asks for nothing).

use std::time::{Duration, Instant};

use fala_proto::name::name_key;
use fala_proto::{ClientMsg, UserInfo};

/// How old the shown results may get before the next frame asks for them again.
pub const REFRESH_AFTER: Duration = Duration::from_secs(10);

/// What the search in flight asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    /// The first page for this query.
    First(String),
    /// The page after the shown ones.
    Next,
}

/// The directory search's state. Time is an argument, never read here.
#[derive(Debug, Default)]
pub struct Directory {
    /// What the user typed last.
    query: String,
    /// The query the shown results answer (`None` before the first answer).
    shown_for: Option<String>,
    results: Vec<UserInfo>,
    more: bool,
    asked: Option<Asked>,
    /// When the shown first page arrived.
    refreshed: Option<Instant>,
}

impl Directory {
    /// Forgets everything (a new registration starts afresh).
    pub fn reset(&mut self) {
        let query = std::mem::take(&mut self.query);
        *self = Directory {
            query,
            ..Directory::default()
        };
    }

    /// What the user typed last.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The query the shown results answer, once some arrived.
    pub fn shown_for(&self) -> Option<&str> {
        self.shown_for.as_deref()
    }

    /// The shown results, in the server's order.
    pub fn results(&self) -> &[UserInfo] {
        &self.results
    }

    /// Whether the server has more results after the shown ones.
    pub fn has_more(&self) -> bool {
        self.more
    }

    /// Whether a search is in flight.
    pub fn searching(&self) -> bool {
        self.asked.is_some()
    }

    /// The user typed `query`: searches for it now, or after the search in flight.
    pub fn set_query(&mut self, query: &str) -> Option<ClientMsg> {
        let query = query.trim();
        if name_key(query) == name_key(&self.query) && self.shown_for.is_some() {
            self.query = query.to_string();
            return None;
        }
        self.query = query.to_string();
        self.ask_first()
    }

    /// Asks for the first page of the current query, unless a search is in flight.
    pub fn ask_first(&mut self) -> Option<ClientMsg> {
        if self.asked.is_some() {
            return None;
        }
        self.asked = Some(Asked::First(self.query.clone()));
        Some(ClientMsg::Search {
            prefix: self.query.clone(),
            after: None,
        })
    }

    /// The user asked for more results.
    pub fn ask_more(&mut self) -> Option<ClientMsg> {
        if self.asked.is_some() || !self.more {
            return None;
        }
        let prefix = self.shown_for.clone()?;
        let after = self.results.last()?.name.clone();
        self.asked = Some(Asked::Next);
        Some(ClientMsg::Search {
            prefix,
            after: Some(after),
        })
    }

    /// Asks the shown first page again when it is older than [`REFRESH_AFTER`] (people come
    /// and go; only the watched ones are followed live).
    pub fn refresh_if_stale(&mut self, now: Instant) -> Option<ClientMsg> {
        let stale = self
            .refreshed
            .is_some_and(|at| now.saturating_duration_since(at) >= REFRESH_AFTER);
        if stale {
            self.ask_first()
        } else {
            None
        }
    }

    /// A page of results arrived. Returns the next search to send when the query changed
    /// meanwhile.
    pub fn on_results(
        &mut self,
        users: &[UserInfo],
        more: bool,
        now: Instant,
    ) -> Option<ClientMsg> {
        match self.asked.take() {
            Some(Asked::First(query)) => {
                self.results = users.to_vec();
                self.refreshed = Some(now);
                let stale_query = name_key(&query) != name_key(&self.query);
                self.shown_for = Some(query);
                self.more = more;
                if stale_query {
                    return self.ask_first();
                }
            }
            Some(Asked::Next) => {
                self.results.extend_from_slice(users);
                self.more = more;
            }
            // Not ours (another face's request, or an answer after a reset): ignored.
            None => {}
        }
        None
    }

    /// The server refused the search in flight (rate limited, say): nothing is pending any
    /// more, and the shown results stay.
    pub fn on_refused(&mut self) {
        self.asked = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fala_proto::Availability;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            status: Availability::Available,
            identity: Default::default(),
        }
    }

    fn prefix_of(msg: Option<ClientMsg>) -> Option<(String, Option<String>)> {
        match msg {
            Some(ClientMsg::Search { prefix, after }) => Some((prefix, after)),
            _ => None,
        }
    }

    #[test]
    fn typing_fast_sends_one_search_per_answer_and_ends_on_the_last_query() {
        let t0 = Instant::now();
        let mut d = Directory::default();
        assert_eq!(prefix_of(d.set_query("a")), Some(("a".into(), None)));
        assert_eq!(d.set_query("an"), None);
        assert_eq!(d.set_query("ana"), None);
        // The answer for "a" is shown, and the last query goes out.
        let next = d.on_results(&[user("ana"), user("anton")], false, t0);
        assert_eq!(prefix_of(next), Some(("ana".into(), None)));
        assert_eq!(d.shown_for(), Some("a"));
        assert_eq!(d.on_results(&[user("ana")], false, t0), None);
        assert_eq!(d.shown_for(), Some("ana"));
        assert_eq!(d.results().len(), 1);
        assert!(!d.searching());
        // The same query again (case folded) asks nothing.
        assert_eq!(d.set_query(" ANA "), None);
    }

    #[test]
    fn more_pages_append_after_the_last_name() {
        let t0 = Instant::now();
        let mut d = Directory::default();
        d.set_query("p");
        assert_eq!(d.ask_more(), None, "nothing shown yet");
        d.on_results(&[user("pa"), user("pb")], true, t0);
        assert_eq!(
            prefix_of(d.ask_more()),
            Some(("p".into(), Some("pb".into())))
        );
        assert_eq!(d.ask_more(), None, "one request at a time");
        d.on_results(&[user("pc")], false, t0);
        let names: Vec<_> = d.results().iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["pa", "pb", "pc"]);
        assert_eq!(d.ask_more(), None, "no more");
    }

    #[test]
    fn the_shown_page_is_asked_again_only_when_stale() {
        let t0 = Instant::now();
        let mut d = Directory::default();
        assert_eq!(d.refresh_if_stale(t0), None, "nothing to refresh yet");
        d.set_query("");
        d.on_results(&[user("bob")], false, t0);
        assert_eq!(d.refresh_if_stale(t0 + Duration::from_secs(9)), None);
        let again = d.refresh_if_stale(t0 + REFRESH_AFTER);
        assert_eq!(prefix_of(again), Some((String::new(), None)));
        assert_eq!(
            d.refresh_if_stale(t0 + REFRESH_AFTER * 2),
            None,
            "in flight"
        );
        d.on_refused();
        assert_eq!(d.results().len(), 1, "a refusal keeps what is shown");
        assert!(d.refresh_if_stale(t0 + REFRESH_AFTER * 2).is_some());
    }

    #[test]
    fn an_answer_nobody_asked_for_is_ignored() {
        let mut d = Directory::default();
        assert_eq!(d.on_results(&[user("x")], true, Instant::now()), None);
        assert!(d.results().is_empty());
        assert_eq!(d.shown_for(), None);
    }
}
