//! The model fed event by event: presence, look-ups, calls in and out, lost servers.

use super::*;
use fala_proto::{Availability, CallId, Candidate, EndReason};
use std::time::Duration;

fn user(name: &str) -> UserInfo {
    UserInfo {
        name: name.into(),
        identity: ByteBuf::from(vec![7; 32]),
        status: Availability::Available,
    }
}

fn online() -> (Model, Instant, SystemTime) {
    let mut m = Model::new(true);
    let fx = register_ana(&mut m);
    // No contacts to watch yet; the directory's first page is asked for.
    assert_eq!(
        fx,
        vec![Effect::Send(ClientMsg::Search {
            prefix: String::new(),
            after: None
        })]
    );
    (m, Instant::now(), SystemTime::UNIX_EPOCH)
}

/// Registers as "ana"; returns what the model does at once.
fn register_ana(m: &mut Model) -> Vec<Effect> {
    m.connecting("127.0.0.1:7400", "ana", true);
    m.on_event(
        Event::Registered {
            name: "ana".into(),
            media: "127.0.0.1:4000".parse().unwrap(),
            stun: None,
            reconnected: false,
            resumed: None,
        },
        Instant::now(),
        SystemTime::UNIX_EPOCH,
    )
}

fn results(names: &[&str], more: bool) -> Event {
    Event::Server(ServerMsg::SearchResults {
        users: names.iter().map(|n| user(n)).collect(),
        more,
    })
}

fn watch(names: &[&str]) -> Effect {
    Effect::Send(ClientMsg::Watch {
        names: names.iter().map(|n| n.to_string()).collect(),
    })
}

#[test]
fn search_results_are_watched_and_shown_without_me_or_the_echo() {
    let (mut m, t, w) = online();
    let fx = m.on_event(results(&["ana", "Bob", "echo"], false), t, w);
    assert_eq!(fx, vec![watch(&["bob", "echo"])]);
    let names =
        |m: &Model| -> Vec<String> { m.found_people().iter().map(|u| u.name.clone()).collect() };
    assert_eq!(names(&m), ["Bob"]);
    m.on_event(
        Event::Server(ServerMsg::UserStatus {
            name: "bob".into(),
            status: Availability::InCall,
        }),
        t,
        w,
    );
    assert_eq!(m.found_people()[0].status, Availability::InCall);
    m.on_event(
        Event::Server(ServerMsg::UserLeft { name: "BOB".into() }),
        t,
        w,
    );
    assert!(names(&m).is_empty(), "gone from the results when gone");
    // He comes back: the watch tells, and he shows again.
    m.on_event(
        Event::Server(ServerMsg::UserJoined { user: user("Bob") }),
        t,
        w,
    );
    assert_eq!(names(&m), ["Bob"]);
}

#[test]
fn unreachable_local_server_offers_to_start_one() {
    let mut m = Model::new(true);
    m.connecting("127.0.0.1:7400", "ana", true);
    m.on_event(
        Event::Unreachable {
            message: "refused".into(),
        },
        Instant::now(),
        SystemTime::UNIX_EPOCH,
    );
    assert!(matches!(
        m.problem,
        Some(ConnectProblem::Unreachable {
            offer_local_server: true,
            ..
        })
    ));
    assert_eq!(m.registration, Registration::Offline);
}

#[test]
fn incoming_call_rings_connects_and_logs() {
    let (mut m, t, w) = online();
    let id = CallId(9);
    let fx = m.on_event(
        Event::Server(ServerMsg::IncomingCall {
            call_id: id,
            caller: "bob".into(),
            identity: ByteBuf::from(vec![8; 32]),
            commit: Some(ByteBuf::from(vec![5; 32])),
        }),
        t,
        w,
    );
    assert!(fx.contains(&Effect::StartRinging));
    assert!(fx.contains(&Effect::NotifyIncoming("bob".into())));
    assert_eq!(m.disconnect(), vec![]);
    assert_eq!(m.notice, Some(Notice::HangUpFirst));
    let fx = m.accept(None, (Vec::new(), false)).unwrap();
    assert!(matches!(fx[1], Effect::Send(ClientMsg::Accept { .. })));
    let fx = m.on_event(
        Event::Server(ServerMsg::CallConnected {
            call_id: id,
            peer: "bob".into(),
            media: "127.0.0.1:5002".parse().unwrap(),
            identity: ByteBuf::from(vec![8; 32]),
            key: Some(ByteBuf::from(vec![7])),
            signature: Some(ByteBuf::from(vec![6; 64])),
            relay: Some(RelayOffer {
                media: "127.0.0.1:7400".parse().unwrap(),
                token: ByteBuf::from(vec![0x40; 8]),
            }),
            candidates: vec![Candidate("198.51.100.7:5002".parse().unwrap())],
        }),
        t,
        w,
    );
    assert!(fx.contains(&Effect::StartMedia(StartMedia {
        call_id: id,
        peer_name: "bob".into(),
        peer: "127.0.0.1:5002".parse().unwrap(),
        peer_identity: vec![8; 32],
        peer_key: Some(vec![7]),
        peer_signature: Some(vec![6; 64]),
        outgoing: false,
        relay: Some(RelayOffer {
            media: "127.0.0.1:7400".parse().unwrap(),
            token: ByteBuf::from(vec![0x40; 8]),
        }),
        candidates: vec![Candidate("198.51.100.7:5002".parse().unwrap())],
    })));
    let later = t + std::time::Duration::from_secs(65);
    let fx = m.on_event(
        Event::Server(ServerMsg::CallEnded {
            call_id: id,
            peer: "bob".into(),
            reason: EndReason::PeerHungUp,
        }),
        later,
        w,
    );
    assert!(fx.contains(&Effect::StopMedia));
    let logged = fx.iter().find_map(|e| match e {
        Effect::Log(entry) => Some(entry.clone()),
        _ => None,
    });
    let entry = logged.expect("logged");
    assert_eq!(entry.direction, CallDirection::Incoming);
    assert_eq!(entry.talked_secs, Some(65));
    assert!(!m.ended_dismissed);
}

#[test]
fn cancel_while_dialing_ends_at_once_and_is_logged() {
    let (mut m, t, w) = online();
    m.dial("bob", (None, (Vec::new(), false)), t, w).unwrap();
    let fx = m.hangup(t).unwrap();
    assert!(fx.iter().any(|e| matches!(e, Effect::Log(_))));
    assert!(!m.calls.is_busy());
}

#[test]
fn connection_lost_ends_the_call_and_keeps_the_name() {
    let (mut m, t, w) = online();
    m.dial("bob", (None, (Vec::new(), false)), t, w).unwrap();
    m.on_event(
        Event::ConnectionLost {
            message: "gone".into(),
            retry_in: std::time::Duration::from_secs(1),
        },
        t,
        w,
    );
    assert!(matches!(
        m.calls.state(),
        CallState::Ended {
            outcome: Outcome::ServerLost,
            ..
        }
    ));
    assert_eq!(m.my_name(), Some("ana"));
    assert!(matches!(m.registration, Registration::Reconnecting { .. }));
}

/// A model in an answered call with bob (in clear, no relay).
fn in_call_with_bob(id: CallId) -> (Model, Instant, SystemTime) {
    let (mut m, t, w) = online();
    let incoming = ServerMsg::IncomingCall {
        call_id: id,
        caller: "bob".into(),
        identity: ByteBuf::from(vec![8; 32]),
        commit: None,
    };
    m.on_event(Event::Server(incoming), t, w);
    m.accept(None, (Vec::new(), false)).unwrap();
    let connected = ServerMsg::CallConnected {
        call_id: id,
        peer: "bob".into(),
        media: "127.0.0.1:5002".parse().unwrap(),
        identity: ByteBuf::from(vec![8; 32]),
        key: None,
        signature: None,
        relay: None,
        candidates: Vec::new(),
    };
    m.allow_unencrypted = true;
    m.on_event(Event::Server(connected), t, w);
    assert!(matches!(m.calls.state(), CallState::InCall { .. }));
    (m, t, w)
}

fn lost() -> Event {
    Event::ConnectionLost {
        message: "our network address changed".into(),
        retry_in: std::time::Duration::from_millis(250),
    }
}

fn back(resumed: Option<CallId>) -> Event {
    Event::Registered {
        name: "ana".into(),
        media: "127.0.0.1:4000".parse().unwrap(),
        stun: None,
        reconnected: true,
        resumed,
    }
}

#[test]
fn an_answered_call_survives_a_lost_connection_when_the_server_kept_it() {
    let id = CallId(11);
    let (mut m, t, w) = in_call_with_bob(id);
    let fx = m.on_event(lost(), t, w);
    assert!(!fx.contains(&Effect::StopMedia), "{fx:?}");
    assert!(matches!(m.calls.state(), CallState::InCall { .. }));
    assert!(matches!(m.registration, Registration::Reconnecting { .. }));
    let fx = m.on_event(back(Some(id)), t, w);
    assert!(!fx.contains(&Effect::StopMedia), "{fx:?}");
    assert!(matches!(m.calls.state(), CallState::InCall { .. }));

    // Lost again, and this time the server had ended it meanwhile.
    m.on_event(lost(), t, w);
    let fx = m.on_event(back(None), t, w);
    assert!(fx.contains(&Effect::StopMedia), "{fx:?}");
    assert!(matches!(
        m.calls.state(),
        CallState::Ended {
            outcome: Outcome::ServerLost,
            ..
        }
    ));
}

#[test]
fn hanging_up_while_reconnecting_ends_the_call_at_once() {
    let id = CallId(12);
    let (mut m, t, w) = in_call_with_bob(id);
    m.on_event(lost(), t, w);
    let fx = m.hangup(t).unwrap();
    // The hang-up is still handed to the signaling task, which says it once back.
    assert!(fx.contains(&Effect::Send(ClientMsg::Hangup { call_id: id })));
    assert!(fx.contains(&Effect::StopMedia), "{fx:?}");
    assert!(!m.calls.is_busy());
}

#[test]
fn lookup_reports_not_found_then_found() {
    let (mut m, t, w) = online();
    m.lookup("zed");
    m.on_event(
        Event::Server(ServerMsg::UserNotFound { name: "zed".into() }),
        t,
        w,
    );
    assert_eq!(m.lookup, Lookup::NotFound("zed".into()));
    m.lookup("bob");
    m.on_event(
        Event::Server(ServerMsg::UserFound { user: user("Bob") }),
        t,
        w,
    );
    assert!(matches!(m.lookup, Lookup::Found(_)));
}

#[test]
fn contacts_and_results_are_watched_and_more_pages_come_on_request() {
    let (mut m, t, w) = online();
    m.contacts.add("Dora");
    assert_eq!(m.contacts_changed(), vec![watch(&["dora"])]);
    assert_eq!(m.contacts_changed(), vec![], "unchanged: nothing sent");
    let fx = m.on_event(results(&["Bob", "carol"], true), t, w);
    assert_eq!(fx, vec![watch(&["bob", "carol", "dora"])]);
    // Dora is online: the watch says so, and her contact row shows it.
    m.on_event(
        Event::Server(ServerMsg::Watching {
            users: vec![user("Bob"), user("carol"), user("Dora")],
        }),
        t,
        w,
    );
    assert!(m.users.contains_key("dora"));
    assert_eq!(
        m.search_more(),
        vec![Effect::Send(ClientMsg::Search {
            prefix: String::new(),
            after: Some("carol".into())
        })]
    );
    let fx = m.on_event(results(&["erin"], false), t, w);
    assert_eq!(fx, vec![watch(&["bob", "carol", "dora", "erin"])]);
    assert_eq!(m.found_people().len(), 3, "bob, carol, erin");
    assert_eq!(m.search_more(), vec![], "no more");
    // Typing narrows: one search, then the watch follows the new results.
    assert_eq!(
        m.search("car"),
        vec![Effect::Send(ClientMsg::Search {
            prefix: "car".into(),
            after: None
        })]
    );
    let fx = m.on_event(results(&["carol"], false), t, w);
    assert_eq!(fx, vec![watch(&["carol", "dora"])]);
    // Nothing is asked again before the results are stale, and then once.
    assert_eq!(m.refresh_directory(t + Duration::from_secs(1)), vec![]);
    assert_eq!(m.refresh_directory(t + REFRESH_AFTER).len(), 1);
    assert_eq!(m.refresh_directory(t + REFRESH_AFTER * 2), vec![]);
}

/// Faces that only look people up (terminal, headless) neither watch nor search.
#[test]
fn a_client_without_presence_neither_watches_nor_searches() {
    let mut m = Model::new(false);
    let fx = register_ana(&mut m);
    assert_eq!(fx, vec![]);
    m.contacts.add("bob");
    assert_eq!(m.contacts_changed(), vec![]);
}

/// A call offered in clear is declined at once unless calls in clear are allowed; then it
/// rings like any other.
#[test]
fn a_call_in_clear_is_declined_unless_allowed() {
    let clear_call = |id| {
        Event::Server(ServerMsg::IncomingCall {
            call_id: CallId(id),
            caller: "eve".into(),
            identity: ByteBuf::from(vec![4; 32]),
            commit: None,
        })
    };
    let (mut m, t, w) = online();
    let fx = m.on_event(clear_call(1), t, w);
    assert!(fx.contains(&Effect::Send(ClientMsg::Decline { call_id: CallId(1) })));
    assert!(!fx.contains(&Effect::StartRinging));
    assert!(matches!(&m.notice, Some(Notice::Security(why)) if why.contains("eve")));
    let (mut m, t, w) = online();
    m.allow_unencrypted = true;
    let fx = m.on_event(clear_call(2), t, w);
    assert!(fx.contains(&Effect::StartRinging));
    assert!(!fx
        .iter()
        .any(|e| matches!(e, Effect::Send(ClientMsg::Decline { .. }))));
}

/// Calling someone whose identity key is not the pinned one: the call is hung up as it
/// connects, logged as not connected (never talked), audio never starts, and the reason stays
/// on screen; the server's confirmation changes nothing after that.
#[test]
fn a_changed_identity_ends_an_outgoing_call_before_audio() {
    let (mut m, t, w) = online();
    m.contacts.check("bob", &[1; 32]);
    m.dial("bob", (None, (Vec::new(), false)), t, w).unwrap();
    let id = CallId(3);
    m.on_event(
        Event::Server(ServerMsg::Ringing {
            call_id: id,
            peer: "bob".into(),
        }),
        t,
        w,
    );
    let fx = m.on_event(
        Event::Server(ServerMsg::CallConnected {
            call_id: id,
            peer: "bob".into(),
            media: "127.0.0.1:5002".parse().unwrap(),
            identity: ByteBuf::from(vec![2; 32]),
            key: None,
            signature: None,
            relay: None,
            candidates: Vec::new(),
        }),
        t,
        w,
    );
    assert!(fx.contains(&Effect::Send(ClientMsg::Hangup { call_id: id })));
    assert!(!fx.iter().any(|e| matches!(e, Effect::StartMedia(_))));
    assert!(!fx
        .iter()
        .any(|e| matches!(e, Effect::Call(CallEvent::Connected))));
    let logged = fx.iter().find_map(|e| match e {
        Effect::Log(entry) => Some(entry.clone()),
        _ => None,
    });
    assert!(matches!(
        logged.map(|l| l.outcome),
        Some(crate::client::history::HistoryOutcome::Refused(why)) if why.contains("identity key has changed")
    ));
    assert!(matches!(&m.notice, Some(Notice::Security(_))));
    assert_eq!(
        m.contacts.check("bob", &[1; 32]),
        KeyCheck::Known { verified: false }
    );
    // The server confirms the hang-up: nothing more happens.
    let fx = m.on_event(
        Event::Server(ServerMsg::CallEnded {
            call_id: id,
            peer: "bob".into(),
            reason: EndReason::HungUp,
        }),
        t,
        w,
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::Log(_))));
}

/// Blocked people are told to the server at every registration; a call of theirs that
/// crosses the `block` is declined without a ring; blocking a ringing caller declines them.
#[test]
fn blocked_callers_never_ring() {
    let call_from = |id, who: &str| {
        Event::Server(ServerMsg::IncomingCall {
            call_id: CallId(id),
            caller: who.into(),
            identity: ByteBuf::from(vec![4; 32]),
            commit: None,
        })
    };
    let mut m = Model::new(true);
    m.allow_unencrypted = true;
    m.contacts.set_blocked("Eve", true);
    let fx = register_ana(&mut m);
    assert_eq!(fx[0], Effect::Send(ClientMsg::Block { name: "Eve".into() }));
    let (t, w) = (Instant::now(), SystemTime::UNIX_EPOCH);
    let fx = m.on_event(call_from(1, "eve"), t, w);
    assert!(fx.contains(&Effect::Send(ClientMsg::Decline { call_id: CallId(1) })));
    assert!(!fx.contains(&Effect::StartRinging));
    assert!(!fx.iter().any(|e| matches!(e, Effect::NotifyIncoming(_))));
    m.on_event(
        Event::Server(ServerMsg::CallEnded {
            call_id: CallId(1),
            peer: "eve".into(),
            reason: EndReason::Declined,
        }),
        t,
        w,
    );
    // Mallory rings; blocking her declines the call and tells the server.
    let fx = m.on_event(call_from(2, "mallory"), t, w);
    assert!(fx.contains(&Effect::StartRinging));
    let fx = m.block("Mallory");
    assert!(fx.contains(&Effect::Send(ClientMsg::Block {
        name: "Mallory".into()
    })));
    assert!(fx.contains(&Effect::Send(ClientMsg::Decline { call_id: CallId(2) })));
    assert!(fx.contains(&Effect::StopRinging));
    assert!(fx.contains(&Effect::ContactsChanged));
    let fx = m.unblock("eve");
    assert!(fx.contains(&Effect::Send(ClientMsg::Unblock { name: "eve".into() })));
    assert!(!m.contacts.is_blocked("eve"));
}
