//! Whole calls through the real `fala` binary and a real server on 127.0.0.1: speech in from
//! WAV files, what each side heard recorded and scored; exit codes and one-line reasons; the
//! echo service; a call through the impairment relay; real sound devices via PulseAudio.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fala::media::engine::realtime_priority;
use fala_server::{Config, EchoConfig};
use fala_testkit::netsim::{Impairment, Relay};
use support::audio::{
    delay_of_part, load, rms, score, speech_wav, temp_path, tone_seconds, tone_share,
};
use support::{finish, stderr, TestServer};

/// A server on its own runtime, alive while the value is.
struct Server {
    rt: tokio::runtime::Runtime,
    server: Option<TestServer>,
}

impl Server {
    fn start(config: Config) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(TestServer::start(config));
        Server {
            rt,
            server: Some(server),
        }
    }

    fn addr(&self) -> String {
        self.server.as_ref().unwrap().addr.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.stop());
        }
    }
}

/// `fala` with these arguments, over plain TCP (the test server is plain; tests/tls.rs covers
/// TLS).
fn fala(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fala"));
    support::person_config_dir(&mut cmd, args);
    cmd.args(args)
        .arg("--plain")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

fn spawn(args: &[&str]) -> Child {
    fala(args).spawn().expect("start fala")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const LIMIT: Duration = Duration::from_secs(40);

/// `score` aligns at 8 kHz: each delay it reports may be off by a sample there, either way.
const ALIGN_RESOLUTION_MS: f64 = 2.0 * 0.125;

/// Look-ahead of the encoder a call uses with default settings, ms (6.5 for Opus VoIP).
fn encoder_lookahead_ms() -> f64 {
    let mut enc = fala::media::codec::VoiceEncoder::new(fala::media::CodecSettings::default())
        .expect("default Opus settings");
    enc.lookahead() as f64 / 48.0
}

/// Starts Bob answering the first call with the test speech as his microphone, recording what
/// he hears to `out`; `extra` options are appended.
fn bob_answers(server: &str, out: &Path, extra: &[&str]) -> Child {
    let mut args = vec![
        "answer",
        "--name",
        "bob",
        "--server",
        server,
        "--input",
        path(speech_wav()),
        "--output",
        path(out),
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// Ana's command to call Bob; `extra` options are appended.
fn ana_calls_bob(server: &str, extra: &[&str]) -> Command {
    fala(
        &[
            &["call", "bob", "--name", "ana", "--server", server][..],
            extra,
        ]
        .concat(),
    )
}

/// Ana calls Bob; both play speech and record what they hear. Returns both outputs.
fn speech_call(
    server: &str,
    extra_ana: &[&str],
    extra_bob: &[&str],
    tag: &str,
) -> (PathBuf, PathBuf, Output, Output) {
    let speech = path(speech_wav());
    let (ana_out, bob_out) = (
        temp_path(&format!("{tag}-ana.wav")),
        temp_path(&format!("{tag}-bob.wav")),
    );
    let bob_stats = temp_path(&format!("{tag}-bob.json"));
    let bob = bob_answers(
        server,
        &bob_out,
        &[&["--stats", path(&bob_stats)][..], extra_bob].concat(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let ana_args = [
        &[
            "--input",
            speech,
            "--output",
            path(&ana_out),
            "--hangup-after",
            "6",
        ][..],
        extra_ana,
    ]
    .concat();
    let ana = finish(
        ana_calls_bob(server, &ana_args)
            .spawn()
            .expect("start fala"),
        LIMIT,
    );
    let bob = finish(bob, LIMIT);
    (ana_out, bob_out, ana, bob)
}

#[test]
fn call_and_answer_carry_speech_both_ways_encrypted() {
    let server = Server::start(Config::default());
    let (ana_out, bob_out, ana, bob) = speech_call(&server.addr(), &[], &[], "direct");
    assert!(ana.status.success(), "ana: {}", stderr(&ana));
    assert!(bob.status.success(), "bob: {}", stderr(&bob));
    assert!(stderr(&ana).contains("encrypted (code"), "{}", stderr(&ana));
    let sent = load(speech_wav());
    let mut delays = Vec::new();
    for (who, out) in [("ana", &ana_out), ("bob", &bob_out)] {
        let heard = load(out);
        // Recorded in real time from the moment the call connected: about 6 s.
        let secs = heard.len() as f64 / 48_000.0;
        assert!((5.0..7.5).contains(&secs), "{who} recorded {secs} s");
        let s = score(&sent, &heard, 500, 800);
        eprintln!("{who}: {s:?}");
        assert!(
            s.correlation > 0.75,
            "{who} heard garbled or missing audio: {s:?}"
        );
        delays.push(s.delay_ms);
    }
    // Each side's recording starts when it learns the call is up, so one delay can be negative;
    // their sum is the round trip file to file, whatever the offset between the two starts.
    // A WAV source hands a whole frame to the encoder at the frame's start, and a packet can
    // play the moment it arrives, so on loopback the only delay no schedule can remove is the
    // encoder's look-ahead, once per direction. Less than that means the recordings are
    // misaligned. (Clean runs measure 18-26 ms: a few ms of jitter-buffer wait per direction.)
    let round_trip = delays[0] + delays[1];
    let floor = 2.0 * encoder_lookahead_ms() - ALIGN_RESOLUTION_MS;
    assert!(
        (floor..500.0).contains(&round_trip),
        "round trip {round_trip} ms ({delays:?}), floor {floor} ms"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(temp_path("direct-bob.json")).unwrap())
            .unwrap();
    assert!(stats["packets_received"].as_u64().unwrap() > 200, "{stats}");
    assert_eq!(stats["dropped_auth"].as_u64(), Some(0));
    assert!(stats["latency_ms"].as_f64().unwrap() > 0.0);
}

/// Through the server's relay ("always relay"): on both sides, and on the caller's only (then
/// the callee's checks go unanswered and it stays on the relay too). Speech arrives both
/// ways, and each side says which path it used.
#[test]
fn calls_through_the_relay_carry_speech_both_ways() {
    let server = Server::start(Config::default());
    let sent = load(speech_wav());
    for (tag, bob_relays) in [("relay-both", true), ("relay-ana", false)] {
        let bob_extra: &[&str] = if bob_relays { &["--always-relay"] } else { &[] };
        let ana_stats = temp_path(&format!("{tag}-ana.json"));
        let (ana_out, bob_out, ana, bob) = speech_call(
            &server.addr(),
            &["--always-relay", "--stats", path(&ana_stats)],
            bob_extra,
            tag,
        );
        assert!(ana.status.success(), "ana: {}", stderr(&ana));
        assert!(bob.status.success(), "bob: {}", stderr(&bob));
        for (who, out) in [("ana", &ana_out), ("bob", &bob_out)] {
            let s = score(&sent, &load(out), 500, 800);
            eprintln!("{tag}: {who} heard {s:?}");
            assert!(s.correlation > 0.75, "{tag}: {who} heard {s:?}");
        }
        let stats = |p: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let (a, b) = (
            stats(&ana_stats),
            stats(&temp_path(&format!("{tag}-bob.json"))),
        );
        // Ana answers no check (the peer must not learn her address from her), so Bob stays
        // on the relay too.
        assert_eq!(a["path"], "relay", "{a}");
        assert_eq!(b["path"], "relay", "{b}");
        assert_eq!(b["checks_answered"], 0, "{b}");
        assert_eq!(a["checks_sent"], 0, "{a}");
        assert!(a["packets_received"].as_u64().unwrap() > 200, "{a}");
        assert!(b["packets_received"].as_u64().unwrap() > 200, "{b}");
    }
}

/// Sends a signal to a child (`kill -STOP` / `-CONT`).
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} failed");
}

/// Reads a child's stderr on a thread: each line goes to the channel as it comes.
fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The callee's whole process freezes for 400 ms in mid-call (what a stalled machine does to
/// an audio thread). Files stay in real time across it: the callee's recording gets the lost
/// time as silence, and the caller hears the rest of the callee's speech at the same delay as
/// before (the frames the callee could not capture in time are skipped, not sent late).
#[test]
fn a_stalled_client_keeps_its_files_in_real_time() {
    let server = Server::start(Config::default());
    let addr = server.addr();
    let speech = path(speech_wav());
    let (ana_out, bob_out) = (temp_path("stall-ana.wav"), temp_path("stall-bob.wav"));
    let ana_stats = temp_path("stall-ana.json");
    let mut bob = bob_answers(&addr, &bob_out, &[]);
    let bob_err = stderr_lines(&mut bob);
    std::thread::sleep(Duration::from_millis(300));
    let ana = ana_calls_bob(
        &addr,
        &[
            "--input",
            speech,
            "--output",
            path(&ana_out),
            "--hangup-after",
            "5",
            "--stats",
            path(&ana_stats),
        ],
    )
    .spawn()
    .expect("start fala");
    let connected = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = connected.saturating_duration_since(std::time::Instant::now());
        let line = bob_err.recv_timeout(left).expect("bob never connected");
        if line.contains("connected") {
            break;
        }
    }
    // 1.2 s into the call, in the middle of the speech.
    std::thread::sleep(Duration::from_millis(1_200));
    signal(&bob, "-STOP");
    std::thread::sleep(Duration::from_millis(400));
    signal(&bob, "-CONT");
    let ana = finish(ana, LIMIT);
    let bob = finish(bob, LIMIT);
    let bob_log: Vec<String> = bob_err.try_iter().collect();
    assert!(ana.status.success(), "ana: {}", stderr(&ana));
    assert!(bob.status.success(), "bob: {bob_log:?}");

    // Both record from the moment the call connects to the hang-up, in real time.
    let (heard_by_ana, heard_by_bob) = (load(&ana_out), load(&bob_out));
    let secs = |x: &[f32]| x.len() as f64 / 48_000.0;
    eprintln!(
        "ana recorded {:.3} s, bob {:.3} s",
        secs(&heard_by_ana),
        secs(&heard_by_bob)
    );
    assert!(
        (secs(&heard_by_ana) - secs(&heard_by_bob)).abs() < 0.15,
        "the stalled side's recording lost time: ana {} s, bob {} s",
        secs(&heard_by_ana),
        secs(&heard_by_bob)
    );
    // What ana heard of bob's speech: the part before the stall and the part well after it
    // arrive at the same delay. Each is the best-matching of a few 0.3 s pieces: the playout
    // stretches a few ms here and there (at the start, after the stall), which shifts one
    // long piece against itself and blurs its match without moving the delay.
    let sent = load(speech_wav());
    let best_of = |pieces: &[(f64, f64)]| {
        pieces
            .iter()
            .map(|p| delay_of_part(&sent, &heard_by_ana, *p, (-500, 1_500)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
    };
    let before = best_of(&[(0.2, 0.5), (0.45, 0.75), (0.7, 1.0)]);
    let after = best_of(&[(2.2, 2.5), (2.5, 2.8), (2.8, 3.1), (3.1, 3.4)]);
    eprintln!("ana hears bob: before the stall {before:?}, after {after:?}");
    eprintln!(
        "ana's stats: {}",
        std::fs::read_to_string(&ana_stats).unwrap_or_default()
    );
    assert!(before.1 > 0.7 && after.1 > 0.7, "{before:?} {after:?}");
    assert!(
        (after.0 - before.0).abs() < 60.0,
        "bob's speech after the stall is {} ms later than before",
        after.0 - before.0
    );
}

#[test]
fn failures_exit_non_zero_with_one_line_reasons() {
    let server = Server::start(Config::default());
    let addr = server.addr();
    let speech = path(speech_wav());
    let quiet = ["--input", speech, "--output", "/dev/null"];
    // Nobody by that name.
    let out = finish(
        spawn(
            &[
                &["call", "ghost", "--name", "ana", "--server", &addr][..],
                &quiet,
            ]
            .concat(),
        ),
        LIMIT,
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("fala: ") && last.contains("not found"),
        "{err}"
    );
    // Declined: the caller fails, the one who declined succeeds.
    let bob = spawn(
        &[
            &["answer", "--decline", "--name", "bob", "--server", &addr][..],
            &quiet,
        ]
        .concat(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let ana = finish(
        ana_calls_bob(&addr, &quiet).spawn().expect("start fala"),
        LIMIT,
    );
    let bob = finish(bob, LIMIT);
    assert!(bob.status.success(), "{}", stderr(&bob));
    assert!(!ana.status.success());
    assert!(
        stderr(&ana).lines().last().unwrap().contains("declined"),
        "{}",
        stderr(&ana)
    );
    // A name already taken.
    let holder = spawn(&[&["answer", "--name", "cris", "--server", &addr][..], &quiet].concat());
    std::thread::sleep(Duration::from_millis(300));
    let dup = finish(
        spawn(&[&["answer", "--name", "CRIS", "--server", &addr][..], &quiet].concat()),
        LIMIT,
    );
    assert!(
        stderr(&dup)
            .lines()
            .last()
            .unwrap()
            .contains("belongs to someone else"),
        "{}",
        stderr(&dup)
    );
    // No server at all.
    let free = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let none = finish(
        spawn(
            &[
                &[
                    "call",
                    "x",
                    "--name",
                    "ana",
                    "--server",
                    &format!("127.0.0.1:{free}"),
                ][..],
                &quiet,
            ]
            .concat(),
        ),
        LIMIT,
    );
    assert!(
        stderr(&none)
            .lines()
            .last()
            .unwrap()
            .contains("cannot reach"),
        "{}",
        stderr(&none)
    );
    let mut holder = holder;
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn echo_service_plays_the_caller_back_after_its_delay() {
    let server = Server::start(Config {
        echo: Some(EchoConfig {
            delay: Duration::from_millis(500),
        }),
        ..Config::default()
    });
    let out = temp_path("echo.wav");
    let speech = path(speech_wav());
    let run = finish(
        spawn(&[
            "call",
            "echo",
            "--name",
            "ana",
            "--server",
            &server.addr(),
            "--input",
            speech,
            "--output",
            path(&out),
            "--hangup-after",
            "6",
        ]),
        LIMIT,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("encrypted"), "{}", stderr(&run));
    let s = score(&load(speech_wav()), &load(&out), 0, 1500);
    eprintln!("echo: {s:?}");
    assert!(s.correlation > 0.75, "{s:?}");
    // Half a second of echo delay plus the way there and back.
    assert!((500.0..900.0).contains(&s.delay_ms), "{s:?}");
}

/// A free UDP port on 127.0.0.1 (bound and released: racy in theory, fine on a test machine).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn call_through_a_lossy_jittery_relay_stays_intelligible() {
    let server = Server::start(Config::default());
    let (pa, pb) = (free_port(), free_port());
    let a: SocketAddr = format!("127.0.0.1:{pa}").parse().unwrap();
    let b: SocketAddr = format!("127.0.0.1:{pb}").parse().unwrap();
    let relay = Relay::start_with(
        a,
        b,
        Impairment::profile("loss10_jitter20").unwrap(),
        7,
        realtime_priority,
    )
    .unwrap();
    let via = relay.addr().to_string();
    let (pa, pb) = (pa.to_string(), pb.to_string());
    let (ana_out, bob_out, ana, bob) = speech_call(
        &server.addr(),
        &["--media-port", &pa, "--advertise", &via],
        &["--media-port", &pb, "--advertise", &via],
        "relay",
    );
    assert!(
        ana.status.success() && bob.status.success(),
        "{} / {}",
        stderr(&ana),
        stderr(&bob)
    );
    let sent = load(speech_wav());
    for (who, out) in [("ana", ana_out), ("bob", bob_out)] {
        let s = score(&sent, &load(&out), 500, 1000);
        eprintln!("{who} through loss10_jitter20: {s:?}");
        assert!(s.correlation > 0.7, "{who}: {s:?}");
    }
    assert!(
        relay
            .counters()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 10,
        "the relay did not drop anything"
    );
}

/// Both clients use real sound devices of a private PulseAudio server (scripts/test.sh starts
/// one): the caller's microphone is a 440 Hz sine source, its speaker a null sink whose
/// monitor we record; the callee plays speech from a file and records what it hears.
#[test]
fn call_with_real_devices_through_pulseaudio() {
    if std::env::var_os("PULSE_SERVER").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test with PulseAudio (scripts/test.sh)"
        );
        eprintln!("skipped: no PULSE_SERVER (run scripts/test.sh for the private sound server)");
        return;
    }
    let server = Server::start(Config::default());
    let addr = server.addr();
    let bob_out = temp_path("device-bob.wav");
    let speaker = temp_path("device-speaker.raw");
    let bob = bob_answers(&addr, &bob_out, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let mut rec = Command::new("parec")
        .args([
            "--device=spk2.monitor",
            "--format=s16le",
            "--rate=48000",
            "--channels=1",
            "--raw",
        ])
        .stdout(std::fs::File::create(&speaker).unwrap())
        .spawn()
        .expect("parec");
    let mut ana_cmd = ana_calls_bob(&addr, &["--hangup-after", "8"]);
    ana_cmd
        .env("PULSE_SOURCE", "sine")
        .env("PULSE_SINK", "spk2");
    let ana = finish(ana_cmd.spawn().unwrap(), LIMIT);
    let bob = finish(bob, LIMIT);
    let _ = rec.kill();
    let _ = rec.wait();
    assert!(ana.status.success(), "{}", stderr(&ana));
    assert!(bob.status.success(), "{}", stderr(&bob));
    // The caller's real microphone (the sine source) reached the callee.
    let heard = load(&bob_out);
    let seconds = tone_seconds(&heard, 440.0);
    for (i, s) in seconds.iter().enumerate() {
        eprintln!("callee second {i}: {s:?}");
    }
    // After the device's start-up (ALSA through PulseAudio takes a second or two, and the
    // sine source hands over 2 s blocks the capture buffer must learn to ride out), every
    // second carries the tone at its pitch: no silent second, no dropped or padded stretches.
    for (i, s) in seconds.iter().enumerate().skip(2) {
        let sec = &heard[i * 48_000..(i + 1) * 48_000];
        assert!(
            s.rms > 0.05 && tone_share(sec, 440.0) > 0.8 && (430.0..450.0).contains(&s.zc_hz),
            "second {i} of the microphone's tone is broken: {s:?}"
        );
    }
    let tail = &heard[heard.len() / 2..];
    let share = tone_share(tail, 440.0);
    eprintln!(
        "callee heard: rms {:.4}, 440 Hz share {share:.2}",
        rms(tail)
    );
    assert!(
        rms(tail) > 0.01 && share > 0.5,
        "the microphone's tone did not arrive: rms {} share {share}",
        rms(tail)
    );
    // The callee's speech came out of the caller's real speaker.
    let raw = std::fs::read(&speaker).unwrap();
    let played: Vec<f32> = raw
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    for (i, sec) in played.chunks(48_000).enumerate() {
        eprintln!("speaker second {i}: rms {:.4}", rms(sec));
    }
    eprintln!(
        "speaker: {} s recorded, rms {:.4}",
        played.len() as f64 / 48_000.0,
        rms(&played)
    );
    assert!(
        rms(&played) > 0.005,
        "nothing came out of the caller's speaker"
    );
}
