//! A machine with no sound server at all: the window still registers, the sound test still
//! connects to the echo user, and the call screen says in one line what is missing and where to
//! choose a device (instead of a silent call and a warning only in the log).

use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use fala::app::settings::Settings;
use fala::app::store::Store;
use fala::app::App;

fn shows(h: &Harness<'static, App>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

fn wait_text(h: &mut Harness<'static, App>, text: &str, within: Duration) {
    let until = Instant::now() + within;
    while !shows(h, text) {
        assert!(Instant::now() < until, "timed out waiting for: {text}");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn click(h: &mut Harness<'static, App>, label: &str) {
    h.get_by_label(label).click();
    h.step();
    h.step();
}

#[test]
fn without_a_sound_server_the_sound_test_says_what_is_missing() {
    // Only this process: cpal's ALSA default device reaches PulseAudio, and there is none.
    std::env::set_var("PULSE_SERVER", "unix:/nonexistent/fala-no-sound-server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let settings = Settings {
        name: "ana".into(),
        plain: true,
        server: addr.to_string(),
        ..Settings::default()
    };
    let app = App::new(settings, Store::none(), rt.handle().clone()).with_audio();
    let mut h = Harness::builder()
        .with_size([820.0, 600.0])
        .build_ui_state(|ui, app: &mut App| app.show(ui), app);
    click(&mut h, "Register");
    wait_text(&mut h, "No Fala server answers at", Duration::from_secs(10));
    click(&mut h, "Start a local server");
    wait_text(&mut h, "Test your sound", Duration::from_secs(10));
    click(&mut h, "Test your sound");
    wait_text(&mut h, "In a call with echo", Duration::from_secs(10));
    // Opening devices that are not there can take a moment; then one line says so.
    wait_text(
        &mut h,
        "No sound device found (no microphone, no speaker). Choose them in Settings, under Audio.",
        Duration::from_secs(15),
    );
    assert!(
        !shows(&h, "No audio in this call"),
        "the call itself goes on"
    );
    click(&mut h, "Hang up");
    wait_text(
        &mut h,
        "Call with echo ended: you hung up",
        Duration::from_secs(10),
    );
}

/// A PulseAudio server of this test's own (a null sink and its monitor as the microphone), so
/// the test can kill it mid-call without touching the one the other tests use.
struct PrivateSoundServer {
    daemon: std::process::Child,
    dir: std::path::PathBuf,
}

impl PrivateSoundServer {
    fn start() -> PrivateSoundServer {
        let dir = std::env::temp_dir().join(format!("fala-private-pulse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("native");
        let config = dir.join("default.pa");
        std::fs::write(
            &config,
            format!(
                "load-module module-native-protocol-unix auth-anonymous=1 socket={}\n\
                 load-module module-null-sink sink_name=spk rate=48000 channels=2\n\
                 set-default-sink spk\nset-default-source spk.monitor\n",
                socket.display()
            ),
        )
        .unwrap();
        let daemon = std::process::Command::new("pulseaudio")
            .args(["-n", "-F"])
            .arg(&config)
            .args([
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--realtime=no",
                "--high-priority=no",
                "--log-target=stderr",
            ])
            .env("HOME", &dir)
            .env("XDG_RUNTIME_DIR", &dir)
            .env("PULSE_RUNTIME_PATH", dir.join("pulse"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pulseaudio (installed by scripts/test.sh)");
        let until = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < until,
                "the private sound server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateSoundServer { daemon, dir }
    }

    /// Points a client at this server only (another server's runtime folder in the
    /// environment would keep its streams alive when this one dies).
    fn serve(&self, cmd: &mut std::process::Command) {
        cmd.env(
            "PULSE_SERVER",
            format!("unix:{}", self.dir.join("native").display()),
        )
        .env("XDG_RUNTIME_DIR", &self.dir)
        .env("PULSE_RUNTIME_PATH", self.dir.join("pulse"));
    }

    /// Kills the server at once, as a crash would.
    fn kill(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

impl Drop for PrivateSoundServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_sound_server_that_dies_mid_call_leaves_the_call_able_to_go_on_and_stop() {
    let mut sound = PrivateSoundServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let config = fala_server::Config {
        echo: Some(fala_server::EchoConfig::default()),
        ..fala_server::Config::default()
    };
    rt.spawn(fala_server::run(listener, config, std::future::pending()));
    let stats = std::env::temp_dir().join(format!("fala-dying-sound-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&stats);
    // The headless client calls the echo user with the system's default devices, which are
    // this test's sound server, and hangs up 10 s after its audio starts.
    let mut call = std::process::Command::new(env!("CARGO_BIN_EXE_fala"));
    sound.serve(&mut call);
    // A config folder of its own: the test never writes the user's identity or settings.
    let config = std::env::temp_dir().join(format!("fala-no-sound-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&config);
    call.env("FALA_CONFIG_DIR", &config);
    let mut call = call
        .args([
            "call",
            "echo",
            "--name",
            "ana",
            "--plain",
            "--server",
            &addr.to_string(),
        ])
        .args(["--hangup-after", "10", "--stats"])
        .arg(&stats)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    sound.kill();
    // The call still ends on time, the engine stops (its final statistics are written), and
    // they say the devices went missing.
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = call.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = call.kill();
            panic!("fala call did not finish after its sound server died");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    call.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    let text = std::fs::read_to_string(&stats)
        .unwrap_or_else(|e| panic!("no final statistics ({e}): the engine never stopped\n{err}"));
    let stats: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stats["microphone_missing"], true, "{text}");
    assert_eq!(stats["speaker_missing"], true, "{text}");
    assert!(stats["packets_sent"].as_u64().unwrap() > 200, "{text}");
}
