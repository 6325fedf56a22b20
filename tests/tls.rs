//! Signaling over TLS with the real binaries: clients pin the server's certificate the first
//! time they meet it, and refuse the server (a man in the middle, or a changed certificate)
//! when another certificate answers at that address later.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use fala::app::settings::Settings;
use fala::app::store::Store;
use fala::app::App;
use fala_server::tls::TlsIdentity;
use fala_server::Config;
use support::audio::speech_wav;
use support::TestServer;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn certificate() -> TlsIdentity {
    fala_server::tls::make(&["localhost".into(), "127.0.0.1".into()]).unwrap()
}

/// A TLS server on `addr` (port 0: any) presenting `identity`.
fn tls_server(rt: &tokio::runtime::Runtime, addr: &str, identity: &TlsIdentity) -> TestServer {
    let _entered = rt.enter();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr.parse().unwrap()).unwrap();
    let listener = socket.listen(128).unwrap();
    let config = Config {
        tls: Some(identity.config.clone()),
        ..Config::default()
    };
    TestServer::start_on(listener, config)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fala-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `fala ARGS --server SERVER` with its files in `dir`, waited for (at most 40 s).
fn fala(dir: &Path, server: &str, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_fala"))
        .args(args)
        .args(["--server", server])
        .env("FALA_CONFIG_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fala")
}

fn finish(child: std::process::Child) -> Output {
    support::finish(child, Duration::from_secs(40))
}

use support::stderr;

fn pinned(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("known_servers.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_default()
}

#[test]
fn a_call_over_tls_pins_the_server_and_a_changed_certificate_is_refused() {
    let rt = runtime();
    let real = certificate();
    let server = tls_server(&rt, "127.0.0.1:0", &real);
    let addr = server.addr.to_string();
    let (ana_dir, bob_dir) = (temp_dir("ana"), temp_dir("bob"));
    let speech = speech_wav().to_str().unwrap();
    let media = ["--input", speech, "--output", "/dev/null"];
    let bob = fala(
        &bob_dir,
        &addr,
        &[
            &["answer", "--name", "bob", "--hangup-after", "1"][..],
            &media,
        ]
        .concat(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let ana = finish(fala(
        &ana_dir,
        &addr,
        &[&["call", "bob", "--name", "ana"][..], &media].concat(),
    ));
    let bob = finish(bob);
    assert!(ana.status.success(), "ana: {}", stderr(&ana));
    assert!(bob.status.success(), "bob: {}", stderr(&bob));
    // Each pinned the server's certificate under the address it was given.
    for dir in [&ana_dir, &bob_dir] {
        assert_eq!(
            pinned(dir)[&addr],
            real.fingerprint.as_str(),
            "{}",
            dir.display()
        );
    }

    // Another certificate answers at the same address: a man in the middle, as far as Ana can
    // tell. She is refused, and told both fingerprints.
    rt.block_on(server.stop());
    let impostor = certificate();
    let _impostor = tls_server(&rt, &addr, &impostor);
    let out = finish(fala(
        &ana_dir,
        &addr,
        &[&["call", "bob", "--name", "ana"][..], &media].concat(),
    ));
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("presented a different certificate than before"),
        "{err}"
    );
    assert!(
        err.contains(&real.fingerprint) && err.contains(&impostor.fingerprint),
        "{err}"
    );
    // The pin is unchanged.
    assert_eq!(pinned(&ana_dir)[&addr], real.fingerprint.as_str());
    let _ = std::fs::remove_dir_all(ana_dir);
    let _ = std::fs::remove_dir_all(bob_dir);
}

#[test]
fn a_plain_client_and_a_tls_server_say_what_is_wrong() {
    let rt = runtime();
    let server = tls_server(&rt, "127.0.0.1:0", &certificate());
    let plain_server = rt.block_on(TestServer::start(Config::default()));
    let dir = temp_dir("mismatch");
    // TLS client, plain server: the handshake fails and the error says to try --plain.
    let out = finish(fala(
        &dir,
        &plain_server.addr.to_string(),
        &["call", "bob", "--name", "ana"],
    ));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--plain"), "{}", stderr(&out));
    // Plain client, TLS server: refused too, never registered.
    let out = finish(fala(
        &dir,
        &server.addr.to_string(),
        &["call", "bob", "--name", "ana", "--plain"],
    ));
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("registered as"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_window_registers_over_tls() {
    let rt = runtime();
    let server = tls_server(&rt, "127.0.0.1:0", &certificate());
    let settings = Settings {
        name: "ana".into(),
        server: server.addr.to_string(),
        ..Settings::default()
    };
    assert!(!settings.plain, "TLS is the default");
    let app = App::new(settings, Store::none(), rt.handle().clone());
    let mut h = Harness::builder()
        .with_size([820.0, 600.0])
        .build_ui_state(|ui, app: &mut App| app.show(ui), app);
    h.get_by_label("Register").click();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !h.state().model().is_online() {
        assert!(
            std::time::Instant::now() < until,
            "never registered over TLS"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.step();
    assert!(h
        .query_all_by_label_contains("Online as ana")
        .next()
        .is_some());
}
