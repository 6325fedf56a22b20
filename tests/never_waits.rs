//! Nothing waits for a sound device. With every device open taking 3 s (the device layer's
//! test hook, as some sound systems really do), a window keeps drawing frames and stays
//! registered through a call's start, and `fala answer` keeps its signaling heartbeat going.
//! The server here drops a client silent for 2 s, so a runtime stalled by a device open (which
//! is how it used to be) loses its registration and its call.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use fala::app::settings::Settings;
use fala::app::store::Store;
use fala::app::App;
use fala_proto::call::CallState;
use fala_server::{Config, Timeouts};
use support::audio::{speech_wav, temp_path};
use support::TestServer;

/// Every device open waits this long (capture, then playback: twice per call).
const SLOW_OPEN_MS: &str = "3000";

/// A server that asks for a ping every 500 ms and drops a client silent for 2 s.
fn strict_server(rt: &tokio::runtime::Runtime) -> TestServer {
    let config = Config {
        timeouts: Timeouts {
            idle: Duration::from_secs(2),
            heartbeat: Duration::from_millis(500),
            ..Timeouts::default()
        },
        ..Config::default()
    };
    rt.block_on(TestServer::start(config))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn window(app: App) -> Harness<'static, App> {
    Harness::builder()
        .with_size([820.0, 600.0])
        .build_ui_state(|ui, app: &mut App| app.show(ui), app)
}

fn settings(name: &str, server: &TestServer) -> Settings {
    Settings {
        name: name.into(),
        plain: true,
        server: server.addr.to_string(),
        ..Settings::default()
    }
}

fn shows(h: &Harness<'static, App>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Steps both windows until `cond` holds; panics after 10 s.
fn step_until(
    windows: &mut [&mut Harness<'static, App>],
    what: &str,
    cond: impl Fn(&[&mut Harness<'static, App>]) -> bool,
) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        for w in windows.iter_mut() {
            w.step();
        }
        if cond(windows) {
            return;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_window_keeps_drawing_while_its_devices_take_seconds_to_open() {
    // Only this process opens devices slowly (each test runs in a process of its own).
    std::env::set_var("FALA_TEST_SLOW_DEVICE_MS", SLOW_OPEN_MS);
    let rt = runtime();
    let server = strict_server(&rt);
    let mut ana =
        window(App::new(settings("ana", &server), Store::none(), rt.handle().clone()).with_audio());
    let mut bob = window(App::new(
        settings("bob", &server),
        Store::none(),
        rt.handle().clone(),
    ));
    for w in [&mut ana, &mut bob] {
        w.get_by_label("Register").click();
    }
    step_until(&mut [&mut ana, &mut bob], "both registered", |w| {
        w.iter().all(|h| h.state().model().is_online())
    });
    step_until(&mut [&mut ana, &mut bob], "ana sees bob", |w| {
        shows(w[1], "ana")
    });
    bob.get_by_label("Call").click();
    // Ana's ringtone opens its device (slowly) on a thread of its own.
    step_until(&mut [&mut ana, &mut bob], "ana rings", |w| {
        shows(w[0], "bob is calling you")
    });
    ana.get_by_label("Accept").click();
    // From the click on: the call connects and the engine opens the microphone, then the
    // speaker (about 6 s). Every frame meanwhile is drawn at once, and both stay registered
    // and in the call (a stalled signaling thread would be dropped after 2 s).
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut frames = 0;
    let (mut saw_call, mut saw_opening) = (false, false);
    while started.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        ana.step();
        slowest = slowest.max(t.elapsed());
        frames += 1;
        bob.step();
        saw_call |= shows(&ana, "In a call with bob") && shows(&bob, "In a call with ana");
        saw_opening |= shows(&ana, "Opening the sound devices");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{frames} frames while the devices opened, slowest {slowest:?}");
    assert!(saw_call, "the call never connected");
    assert!(
        saw_opening,
        "the window said nothing while the devices opened"
    );
    assert!(
        slowest < Duration::from_millis(1_000),
        "a frame waited {slowest:?}: the UI thread waited for a device"
    );
    assert!(frames > 100, "only {frames} frames in 8 s");
    for (h, peer) in [(&ana, "bob"), (&bob, "ana")] {
        assert!(h.state().model().is_online());
        assert!(
            matches!(h.state().model().calls.state(), CallState::InCall { peer: p, .. } if p == peer),
            "{:?}",
            h.state().model().calls.state()
        );
    }
    // The devices are open by now: the call runs.
    step_until(&mut [&mut ana, &mut bob], "audio running", |w| {
        !shows(w[0], "Opening the sound devices")
    });
    // The devices did open (slowly): nothing says one is missing.
    for _ in 0..10 {
        ana.step();
    }
    for line in [
        "No sound device found",
        "No microphone found",
        "No speaker found",
    ] {
        assert!(!shows(&ana, line), "{line}");
    }
    ana.get_by_label("Hang up").click();
    step_until(&mut [&mut ana, &mut bob], "call over", |w| {
        shows(w[1], "hung up by the other side")
    });
}

#[test]
fn fala_answer_keeps_its_heartbeat_while_its_devices_take_seconds_to_open() {
    let rt = runtime();
    let server = strict_server(&rt);
    let addr = server.addr.to_string();
    let fala = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fala"));
        support::person_config_dir(&mut cmd, args);
        cmd.args(args)
            .args(["--server", &addr, "--plain"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    // Bob answers with the system's default devices, each taking 3 s to open, and hangs up a
    // second after his audio starts.
    let bob = fala(&["answer", "--name", "bob", "--hangup-after", "1"])
        .env("FALA_TEST_SLOW_DEVICE_MS", SLOW_OPEN_MS)
        .spawn()
        .expect("start fala answer");
    std::thread::sleep(Duration::from_millis(500));
    let speech = speech_wav();
    let heard = temp_path("never-waits-ana.wav");
    let started = Instant::now();
    let ana = fala(&[
        "call",
        "bob",
        "--name",
        "ana",
        "--input",
        speech.to_str().unwrap(),
        "--output",
        heard.to_str().unwrap(),
    ])
    .spawn()
    .expect("start fala call");
    let wait = |child: std::process::Child| {
        let id = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        rx.recv_timeout(Duration::from_secs(40))
            .unwrap_or_else(|_| {
                let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
                panic!("fala did not finish in 40 s");
            })
            .unwrap()
    };
    let ana = wait(ana);
    let took = started.elapsed();
    let bob = wait(bob);
    let (ana_err, bob_err) = (
        String::from_utf8_lossy(&ana.stderr).into_owned(),
        String::from_utf8_lossy(&bob.stderr).into_owned(),
    );
    eprintln!("ana:\n{ana_err}\nbob:\n{bob_err}\ncall took {took:?}");
    // The call lasted the devices' opening and Bob's second, and ended as a hang-up: had Bob's
    // runtime waited for his devices, the server would have dropped him after 2 s of silence.
    assert!(
        took >= Duration::from_secs(6),
        "the devices did not open slowly: {took:?}"
    );
    assert!(bob.status.success(), "bob: {bob_err}");
    assert!(ana.status.success(), "ana: {ana_err}");
    assert!(
        ana_err.contains("call ended: hung up by the other side"),
        "{ana_err}"
    );
}
