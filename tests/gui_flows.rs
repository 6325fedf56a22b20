//! The window's screens driven by their labels (egui_kittest, no display or GPU) against a
//! real in-process fala-server, with headless peers speaking the raw protocol.

mod support;

use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use fala::app::settings::Settings;
use fala::app::store::Store;
use fala::app::App;
use fala::client::history::{CallDirection, HistoryOutcome};
use fala::client::model::Registration;
use fala_proto::call::CallState;
use fala_proto::{CallId, ClientMsg, EndReason, ServerMsg};
use fala_server::{Config, Timeouts};
use support::{Raw, TestServer};

/// A tokio runtime for the server and peers, and the server itself.
struct World {
    rt: tokio::runtime::Runtime,
    server: Option<TestServer>,
}

impl World {
    fn new(config: Config) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(TestServer::start(config));
        World {
            rt,
            server: Some(server),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    fn window(&self, name: &str) -> Harness<'static, App> {
        let settings = Settings {
            plain: true,
            name: name.into(),
            server: self.addr().to_string(),
            // The peers here are raw protocol clients that offer no encryption.
            allow_unencrypted: true,
            ..Settings::default()
        };
        window_with(settings, self.rt.handle().clone())
    }

    fn peer(&self, name: &str, port: u16) -> Raw {
        self.rt.block_on(Raw::registered(self.addr(), name, port))
    }

    /// The next message `pred` accepts, skipping presence noise.
    fn expect(&self, peer: &mut Raw, pred: impl FnMut(&ServerMsg) -> bool) -> ServerMsg {
        self.rt.block_on(peer.recv_until(pred))
    }

    fn send(&self, peer: &mut Raw, msg: ClientMsg) {
        self.rt.block_on(peer.send(&msg));
    }
}

fn window_with(settings: Settings, rt: tokio::runtime::Handle) -> Harness<'static, App> {
    let app = App::new(settings, Store::none(), rt);
    Harness::builder()
        .with_size([820.0, 600.0])
        .build_ui_state(|ui, app: &mut App| app.show(ui), app)
}

/// Steps frames until `cond` holds (events arrive from other threads), or panics after 5 s.
fn wait(h: &mut Harness<'static, App>, what: &str, cond: impl Fn(&Harness<'static, App>) -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        h.step();
        if cond(h) {
            return;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn shows(h: &Harness<'static, App>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

fn wait_text(h: &mut Harness<'static, App>, text: &str) {
    wait(h, text, |h| shows(h, text));
}

/// Focuses the text field labelled `label` and types into it.
fn type_into(h: &mut Harness<'static, App>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.step();
    h.get_by_label(label).type_text(text);
    h.step();
}

/// Clicks the widget labelled `label` and lets the window handle it.
fn click(h: &mut Harness<'static, App>, label: &str) {
    h.get_by_label(label).click();
    h.step();
    h.step();
}

/// Presses a key and lets the window handle it.
fn press(h: &mut Harness<'static, App>, key: egui::Key) {
    h.key_press(key);
    h.step();
    h.step();
}

fn register(h: &mut Harness<'static, App>) {
    click(h, "Register");
    wait(h, "registered", |h| h.state().model().is_online());
}

fn incoming_id(msg: &ServerMsg) -> CallId {
    match msg {
        ServerMsg::IncomingCall { call_id, .. } | ServerMsg::Ringing { call_id, .. } => *call_id,
        other => panic!("not a call message: {other:?}"),
    }
}

/// The peer is told the call ended, and why.
fn expect_ended(w: &World, peer: &mut Raw, want: EndReason) {
    let ended = w.expect(peer, |m| matches!(m, ServerMsg::CallEnded { .. }));
    assert!(
        matches!(&ended, ServerMsg::CallEnded { reason, .. } if *reason == want),
        "expected {want:?}: {ended:?}"
    );
}

/// Bob (a raw peer) calls Ana (the window) and the window rings.
fn peer_calls_window(w: &World, h: &mut Harness<'static, App>, bob: &mut Raw) {
    w.send(
        bob,
        ClientMsg::Invite {
            to: "ana".into(),
            commit: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(h, "bob is calling you");
}

/// Ana (the window) finds Bob (a raw peer) and calls him; returns Bob's call id.
fn window_calls(w: &World, h: &mut Harness<'static, App>, bob: &mut Raw) -> CallId {
    type_into(h, "Find people", "bob");
    wait_text(h, "bob");
    click(h, "Call");
    let incoming = w.expect(bob, |m| matches!(m, ServerMsg::IncomingCall { .. }));
    wait_text(h, "Ringing bob");
    incoming_id(&incoming)
}

#[test]
fn finds_people_and_follows_their_presence() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    assert!(shows(&h, "Connect to a Fala server"));
    register(&mut h);
    wait_text(&mut h, "Online as ana");
    wait_text(&mut h, "Nobody else is online yet.");
    let bob = w.peer("bob", 5002);
    let mut carol = w.peer("carol", 5003);
    // They came after the first page: a search finds them (the directory is asked, not
    // pushed to everyone).
    type_into(&mut h, "Find people", "B");
    wait(&mut h, "bob found, not carol", |h| {
        shows(h, "bob") && !shows(h, "carol")
    });
    press(&mut h, egui::Key::Backspace);
    wait(&mut h, "everyone online", |h| {
        shows(h, "bob") && shows(h, "carol")
    });
    // Bob and Carol start a call: both show as busy (the results are watched live).
    w.send(
        &mut carol,
        ClientMsg::Invite {
            to: "bob".into(),
            commit: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait(&mut h, "two users in a call", |h| {
        h.query_all_by_label("in a call").count() == 2
    });
    type_into(&mut h, "Find people", "car");
    wait(&mut h, "bob not found", |h| {
        !shows(h, "bob") && shows(h, "carol")
    });
    drop(carol);
    wait_text(&mut h, "Nobody online has a name that starts like that.");
    drop(bob);
}

#[test]
fn taken_name_is_told_in_place() {
    let w = World::new(Config::default());
    let _other = w.peer("ana", 5001);
    let mut h = w.window("Ana");
    click(&mut h, "Register");
    // Another identity holds it; so does one that reads the same (Cyrillic А).
    wait_text(&mut h, "the name \"Ana\" belongs to someone else");
    h.state_mut().settings_mut().name = "\u{410}na".into();
    click(&mut h, "Register");
    wait_text(
        &mut h,
        "reads the same as \"ana\", which belongs to someone else",
    );
    assert!(h.state().model().on_connect_screen());
    // A bad name is refused before anything is sent.
    h.state_mut().settings_mut().name = "bob!".into();
    click(&mut h, "Register");
    wait_text(&mut h, "That name cannot be used");
}

#[test]
fn unreachable_local_address_offers_a_local_server_that_works() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let settings = Settings {
        plain: true,
        name: "ana".into(),
        server: addr.to_string(),
        ..Settings::default()
    };
    let mut h = window_with(settings, rt.handle().clone());
    click(&mut h, "Register");
    wait_text(&mut h, "No Fala server answers at");
    click(&mut h, "Start a local server");
    wait(&mut h, "registered on the local server", |h| {
        h.state().model().is_online()
    });
    assert_eq!(h.state().local_server_addr(), Some(addr));
    wait_text(&mut h, "Local server running on");
    // Someone else can use it too.
    let mut bob = rt.block_on(Raw::registered(addr, "bob", 5002));
    rt.block_on(bob.send(&ClientMsg::Lookup { name: "ana".into() }));
    let found = rt.block_on(bob.recv_until(|m| matches!(m, ServerMsg::UserFound { .. })));
    assert!(matches!(found, ServerMsg::UserFound { .. }));
}

/// The one-command demo: no server yet, "Start a local server", then "Test your sound" reaches
/// the echo user on that local server, which answers at once.
#[test]
fn the_local_server_hosts_the_sound_test() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let settings = Settings {
        plain: true,
        name: "ana".into(),
        server: addr.to_string(),
        ..Settings::default()
    };
    let mut h = window_with(settings, rt.handle().clone());
    click(&mut h, "Register");
    wait_text(&mut h, "No Fala server answers at");
    click(&mut h, "Start a local server");
    wait(&mut h, "registered on the local server", |h| {
        h.state().model().is_online()
    });
    click(&mut h, "Test your sound");
    wait_text(&mut h, "In a call with echo");
    click(&mut h, "Hang up");
    wait_text(&mut h, "Call with echo ended: you hung up");
}

#[test]
fn call_accepted_then_hung_up_from_the_window() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    let id = window_calls(&w, &mut h, &mut bob);
    w.send(
        &mut bob,
        ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(&mut h, "In a call with bob");
    // The seam is honest: no engine, no numbers.
    assert!(shows(&h, "Audio engine not connected"));
    assert!(shows(&h, "—"));
    assert!(shows(&h, "Hang-up key: Escape"));
    click(&mut h, "Mute");
    wait_text(&mut h, "Microphone muted");
    // Recording needs the engine: asking with a path (as the dialog would) says why not.
    let wav = std::env::temp_dir().join("fala-gui-test.wav");
    h.state_mut().record_to(wav);
    wait_text(&mut h, "Cannot record: audio engine not connected");
    // Disconnect is refused during a call.
    click(&mut h, "Disconnect");
    wait_text(&mut h, "Hang up first: you are in a call.");
    assert!(h.state().model().is_online());
    click(&mut h, "Hang up");
    expect_ended(&w, &mut bob, EndReason::PeerHungUp);
    wait_text(&mut h, "Call with bob ended: you hung up.");
    let entry = &h.state().history().entries[0];
    assert_eq!(entry.peer, "bob");
    assert_eq!(entry.direction, CallDirection::Outgoing);
    assert_eq!(entry.outcome, HistoryOutcome::Talked);
    // Now Disconnect unregisters.
    click(&mut h, "OK");
    click(&mut h, "Disconnect");
    wait(&mut h, "back on the connect screen", |h| {
        h.state().model().registration == Registration::Offline
    });
    wait_text(&mut h, "Register");
    // The window is offline at once; the server forgets "ana" when her connection closes, a
    // moment later: ask until it does (bounded).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        w.send(&mut bob, ClientMsg::Lookup { name: "ana".into() });
        let reply = w.expect(&mut bob, |m| {
            matches!(
                m,
                ServerMsg::UserNotFound { .. } | ServerMsg::UserFound { .. }
            )
        });
        if matches!(reply, ServerMsg::UserNotFound { .. }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still registered 3 s after Disconnect: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hang_up_hotkey_ends_the_call() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    let id = window_calls(&w, &mut h, &mut bob);
    w.send(
        &mut bob,
        ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(&mut h, "In a call with bob");
    press(&mut h, egui::Key::Escape);
    expect_ended(&w, &mut bob, EndReason::PeerHungUp);
    wait_text(&mut h, "you hung up");
}

#[test]
fn incoming_call_declined_with_the_button() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    peer_calls_window(&w, &mut h, &mut bob);
    assert!(shows(&h, "Press Y to accept or N to decline."));
    click(&mut h, "Decline");
    expect_ended(&w, &mut bob, EndReason::Declined);
    wait_text(&mut h, "Call with bob ended: declined.");
}

#[test]
fn incoming_call_accepted_with_y_then_peer_hangs_up() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    peer_calls_window(&w, &mut h, &mut bob);
    press(&mut h, egui::Key::Y);
    let connected = w.expect(&mut bob, |m| matches!(m, ServerMsg::CallConnected { .. }));
    let ServerMsg::CallConnected { call_id, media, .. } = connected else {
        unreachable!()
    };
    // Bob is told the window's own ephemeral media port.
    assert_eq!(Some(media.port()), h.state().media_port());
    wait_text(&mut h, "In a call with bob");
    w.send(&mut bob, ClientMsg::Hangup { call_id });
    wait_text(&mut h, "hung up by the other side");
    assert_eq!(
        h.state().history().entries[0].direction,
        CallDirection::Incoming
    );
}

#[test]
fn outgoing_call_cancelled() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    window_calls(&w, &mut h, &mut bob);
    click(&mut h, "Cancel");
    expect_ended(&w, &mut bob, EndReason::Cancelled);
    wait_text(&mut h, "Call with bob ended: cancelled.");
}

#[test]
fn calling_a_busy_user_says_busy() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    let mut bob = w.peer("bob", 5002);
    let mut carol = w.peer("carol", 5003);
    // Online before Ana: her first page of "Find people" has them.
    register(&mut h);
    w.send(
        &mut carol,
        ClientMsg::Invite {
            to: "bob".into(),
            commit: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    let id = incoming_id(&w.expect(&mut bob, |m| matches!(m, ServerMsg::IncomingCall { .. })));
    w.send(
        &mut bob,
        ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait(&mut h, "bob busy", |h| {
        h.query_all_by_label("in a call").count() == 2
    });
    type_into(&mut h, "Look up a name", "bob");
    click(&mut h, "Look up");
    wait_text(&mut h, "bob is online");
    // Two "Call" buttons now (list and look-up): either calls Bob.
    h.get_all_by_label("Call").next().unwrap().click();
    h.step();
    wait_text(&mut h, "Call with bob ended: busy: already in a call.");
}

#[test]
fn unanswered_call_ends_with_no_answer() {
    let config = Config {
        timeouts: Timeouts {
            ring: Duration::from_millis(400),
            ..Timeouts::default()
        },
        ..Config::default()
    };
    let w = World::new(config);
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    window_calls(&w, &mut h, &mut bob);
    wait_text(&mut h, "Call with bob ended: no answer.");
}

#[test]
fn peer_lost_during_a_call() {
    // Bob's socket closes with messages unread, which the kernel turns into a reset: the
    // server takes that for a broken path and would hold the call for Bob to come back; with
    // no grace the window hears of it at once.
    let w = World::new(Config {
        timeouts: Timeouts {
            resume: Duration::ZERO,
            ..Timeouts::default()
        },
        ..Config::default()
    });
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    let id = window_calls(&w, &mut h, &mut bob);
    w.send(
        &mut bob,
        ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(&mut h, "In a call with bob");
    drop(bob);
    wait_text(
        &mut h,
        "Call with bob ended: the other side's connection was lost.",
    );
}

#[test]
fn lookup_not_found_then_found() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    type_into(&mut h, "Look up a name", "zed");
    click(&mut h, "Look up");
    wait_text(&mut h, "zed is not online. Try another name.");
    let _zed = w.peer("zed", 5009);
    click(&mut h, "Look up");
    wait_text(&mut h, "zed is online");
}

#[test]
fn sound_test_calls_echo() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    click(&mut h, "Test your sound");
    wait(&mut h, "echo call started", |h| {
        h.state().model().calls.peer() == Some("echo")
    });
    // Until the echo service exists the server declines or does not know it: either way
    // the window says how it ended.
    wait_text(&mut h, "Call with echo ended");
}

#[test]
fn two_windows_call_each_other() {
    let w = World::new(Config::default());
    let mut ana = w.window("ana");
    let mut bob = w.window("bob");
    register(&mut ana);
    register(&mut bob);
    assert_ne!(ana.state().media_port(), bob.state().media_port());
    type_into(&mut ana, "Find people", "bo");
    wait_text(&mut ana, "bob");
    click(&mut ana, "Call");
    wait_text(&mut bob, "ana is calling you");
    click(&mut bob, "Accept");
    wait_text(&mut ana, "In a call with bob");
    wait_text(&mut bob, "In a call with ana");
    click(&mut bob, "Hang up");
    wait_text(&mut ana, "hung up by the other side");
    wait_text(&mut bob, "you hung up");
}

#[test]
fn lost_server_is_shown_and_the_window_registers_again() {
    let mut w = World::new(Config::default());
    let addr = w.addr();
    let mut h = w.window("ana");
    register(&mut h);
    let server = w.server.take().unwrap();
    w.rt.block_on(server.stop());
    wait_text(&mut h, "Lost the server");
    let listener = w.rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    w.server = Some({
        let _g = w.rt.enter();
        TestServer::start_on(listener, Config::default())
    });
    wait(&mut h, "registered again", |h| {
        h.state().model().is_online()
    });
    assert!(!shows(&h, "Lost the server"));
}

#[test]
fn settings_switch_language_and_theme() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    click(&mut h, "Settings");
    wait_text(&mut h, "Device lists come with the audio engine");
    click(&mut h, "Light");
    h.step();
    assert_eq!(
        h.state().settings().theme,
        fala::app::settings::Theme::Light
    );
    h.state_mut().settings_mut().language = fala::app::i18n::Lang::PortugueseBrazil;
    wait_text(&mut h, "Configurações");
    wait_text(&mut h, "Desconectar");
    assert!(matches!(h.state().model().calls.state(), CallState::Idle));
}

#[test]
fn idle_window_asks_for_no_frames_and_calls_tick_once_a_second() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    let _bob = w.peer("bob", 5002);
    register(&mut h);
    wait_text(&mut h, "bob");
    h.run();
    let delay = |h: &Harness<'static, App>| {
        h.output().viewport_output[&egui::ViewportId::ROOT].repaint_delay
    };
    assert_eq!(
        delay(&h),
        Duration::MAX,
        "an idle window must not schedule frames"
    );
    click(&mut h, "Call");
    h.run();
    let d = delay(&h);
    assert!(d > Duration::ZERO && d <= Duration::from_secs(1), "{d:?}");
}

#[test]
fn configured_hang_up_key_works() {
    let w = World::new(Config::default());
    let settings = Settings {
        plain: true,
        name: "ana".into(),
        server: w.addr().to_string(),
        hangup_key: "H".into(),
        allow_unencrypted: true,
        ..Settings::default()
    };
    let mut h = window_with(settings, w.rt.handle().clone());
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    let id = window_calls(&w, &mut h, &mut bob);
    w.send(
        &mut bob,
        ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(&mut h, "In a call with bob");
    assert!(shows(&h, "Hang-up key: H"));
    press(&mut h, egui::Key::Escape);
    assert!(
        h.state().model().calls.is_busy(),
        "Escape is not the key any more"
    );
    press(&mut h, egui::Key::H);
    wait_text(&mut h, "you hung up");
}

/// Bob's identity key is not the one an earlier call pinned (kept in the contact file): the
/// window does not connect the call, says why, and marks him in Contacts. Once the new key is
/// accepted, the call goes through, the key is pinned and the contact file is written again.
#[test]
fn a_changed_identity_is_refused_until_the_new_key_is_accepted() {
    let w = World::new(Config::default());
    let dir = std::env::temp_dir().join(format!("fala-gui-contacts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut earlier = fala::client::contacts::ContactBook::default();
    earlier.add("bob");
    earlier.check("bob", &[7; 32]);
    std::fs::write(
        dir.join("contacts.json"),
        serde_json::to_string(&earlier).unwrap(),
    )
    .unwrap();
    let settings = Settings {
        plain: true,
        name: "ana".into(),
        server: w.addr().to_string(),
        allow_unencrypted: true,
        ..Settings::default()
    };
    let app = App::new(settings, Store::at(&dir), w.rt.handle().clone());
    let mut h = Harness::builder()
        .with_size([820.0, 600.0])
        .build_ui_state(|ui, app: &mut App| app.show(ui), app);
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    // Bob (a contact, shown offline until now) comes online: his contact row's Call button
    // comes first; the online list has another.
    wait(&mut h, "bob online", |h| {
        h.state().model().users.values().any(|u| u.name == "bob")
    });
    h.get_all_by_label("Call").next().unwrap().click();
    h.step();
    let id = incoming_id(&w.expect(&mut bob, |m| matches!(m, ServerMsg::IncomingCall { .. })));
    w.send(
        &mut bob,
        ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(&mut h, "identity key has changed since your last call");
    expect_ended(&w, &mut bob, EndReason::PeerHungUp);
    wait_text(&mut h, "KEY CHANGED");
    click(&mut h, "Accept new key");
    wait_text(&mut h, "Call");
    h.get_all_by_label("Call").next().unwrap().click();
    h.step();
    let id = incoming_id(&w.expect(&mut bob, |m| matches!(m, ServerMsg::IncomingCall { .. })));
    w.send(
        &mut bob,
        ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(&mut h, "In a call with bob");
    assert!(shows(&h, "Safety number with bob"));
    // The saver writes the new pin (a moment after the change).
    let pinned = fala_proto::hex::encode(&bob.identity.public());
    wait(&mut h, "contacts.json has the new key", |_| {
        std::fs::read_to_string(dir.join("contacts.json")).is_ok_and(|t| t.contains(&pinned))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A commitment of the wrong length (a hostile server, say) is no reason to fall back to a
/// call in clear: accepting declines the call and says why, even where calls in clear are
/// allowed.
#[test]
fn an_unusable_key_commitment_declines_instead_of_going_clear() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    w.send(
        &mut bob,
        ClientMsg::Invite {
            to: "ana".into(),
            commit: Some(serde_bytes::ByteBuf::from(vec![1; 31])),
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(&mut h, "bob is calling you");
    click(&mut h, "Accept");
    expect_ended(&w, &mut bob, EndReason::Declined);
    wait_text(&mut h, "commitment is unusable");
}

/// Block on the ringing dialog: Bob's call is declined, the server refuses his next ones
/// without the window ringing, and Unblock (under Blocked) lets them ring again.
#[test]
fn a_blocked_caller_never_rings_until_unblocked() {
    let w = World::new(Config::default());
    let mut h = w.window("ana");
    register(&mut h);
    let mut bob = w.peer("bob", 5002);
    peer_calls_window(&w, &mut h, &mut bob);
    click(&mut h, "Block");
    expect_ended(&w, &mut bob, EndReason::Declined);
    assert!(h.state().model().contacts.is_blocked("bob"));
    // Bob calls again: refused by the server, as if declined; the window stays quiet.
    w.send(
        &mut bob,
        ClientMsg::Invite {
            to: "ana".into(),
            commit: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    expect_ended(&w, &mut bob, EndReason::Declined);
    for _ in 0..20 {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!shows(&h, "bob is calling you"));
    // Unblock, from the list of blocked people.
    click(&mut h, "Blocked (their calls are refused)");
    click(&mut h, "Unblock");
    assert!(!h.state().model().contacts.is_blocked("bob"));
    // The unblock travels on Ana's connection, Bob's invite on his (and only three invites a
    // minute may go to one callee): a look-up on Ana's connection, answered after the unblock,
    // says the server has it.
    type_into(&mut h, "Look up a name", "bob");
    click(&mut h, "Look up");
    wait_text(&mut h, "bob is online");
    w.send(
        &mut bob,
        ClientMsg::Invite {
            to: "ana".into(),
            commit: None,
            candidates: Vec::new(),
            hide_address: false,
        },
    );
    wait_text(&mut h, "bob is calling you");
}
