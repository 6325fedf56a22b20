//! Pinned identities with the real `fala` binary: the first call pins the peer's identity key
//! in the caller's contacts.json; when the name later belongs to someone else (here: reclaimed
//! after its owner left, with a reclaim period of zero), the caller refuses to connect and
//! says why.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fala_server::{Config, NamesConfig};
use support::audio::speech_wav;
use support::TestServer;

fn fala(server: &str, config_dir: &Path, args: &[&str]) -> Child {
    let speech = speech_wav().to_str().unwrap().to_string();
    Command::new(env!("CARGO_BIN_EXE_fala"))
        .env("FALA_CONFIG_DIR", config_dir)
        .args(args)
        .args(["--server", server, "--plain"])
        .args(["--input", &speech, "--output", "/dev/null"])
        .args(["--hangup-after", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .expect("start fala")
}

fn finish(child: Child) -> Output {
    support::finish(child, Duration::from_secs(30))
}

fn last_line(out: &Output) -> String {
    support::last_stderr_line(out)
}

fn person(root: &Path, who: &str) -> PathBuf {
    root.join(who)
}

/// Ana calls "bob" twice; in between, the name passes to another identity.
fn call_bob(server: &str, ana: &Path, bob: &Path) -> (Output, Output) {
    let answering = fala(server, bob, &["answer", "--name", "bob"]);
    std::thread::sleep(Duration::from_millis(500));
    let calling = fala(server, ana, &["call", "bob", "--name", "ana"]);
    (finish(calling), finish(answering))
}

#[test]
fn a_name_that_changed_hands_is_not_called() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = Config {
        names: NamesConfig {
            reclaim_after: Duration::ZERO,
            ..NamesConfig::default()
        },
        ..Config::default()
    };
    let server = rt.block_on(TestServer::start(config));
    let addr = server.addr.to_string();
    let root = std::env::temp_dir().join(format!("fala-pinning-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (ana, bob, other) = (
        person(&root, "ana"),
        person(&root, "bob"),
        person(&root, "other"),
    );

    // First call: Bob's key is pinned in Ana's contacts.
    let (ana_out, bob_out) = call_bob(&addr, &ana, &bob);
    assert!(ana_out.status.success(), "{}", last_line(&ana_out));
    assert!(bob_out.status.success(), "{}", last_line(&bob_out));
    let bob_entry = |dir: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join("contacts.json")).expect("contacts written");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["bob"].clone()
    };
    let pinned = bob_entry(&ana)["identity"].clone();
    assert!(pinned.is_string(), "{pinned}");

    // Bob is gone; someone else (another identity key) now holds "bob".
    let (ana_out, _) = call_bob(&addr, &ana, &other);
    assert!(!ana_out.status.success(), "{}", last_line(&ana_out));
    let why = last_line(&ana_out);
    assert!(why.contains("identity key has changed"), "{why}");
    // The change is noted; the pinned key stays Bob's.
    let entry = bob_entry(&ana);
    assert_eq!(entry["identity"], pinned);
    assert!(entry["changed_to"].is_string(), "{entry}");
    assert_ne!(entry["changed_to"], pinned);

    rt.block_on(server.stop());
    let _ = std::fs::remove_dir_all(&root);
}
