//! A client written in Python from docs/PROTOCOL.md alone (tests/interop/fala_client.py) runs
//! its scenario against a real server: the document is complete enough to implement from.

mod support;

use std::process::Command;

use fala_server::Config;
use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_written_from_the_protocol_doc_works() {
    let Some(python) = std::env::var_os("FALA_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set FALA_PYTHON (scripts/test.sh makes a venv with msgpack)"
        );
        eprintln!("skipped: set FALA_PYTHON to a python with msgpack (scripts/test.sh does)");
        return;
    };
    let server = TestServer::start(Config::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/fala_client.py");
    let addr = server.addr.to_string();
    let out =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(addr).output())
            .await
            .unwrap()
            .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client failed");
    assert!(
        text.lines().count() >= 10,
        "the scenario did not run all its steps"
    );
    server.stop().await;
}
