//! Calls between two homes behind real NATs. Network namespaces, veth pairs and nftables build
//! a "public" network with the real `fala-server` on it and two homes behind routers that
//! translate addresses the ways home and carrier NATs do (RFC 4787); the real `fala call` and
//! `fala answer` run in the homes, speech in from a WAV file and what each side heard
//! recorded and scored. Both homes use the same private network (192.168.1.0/24), and both
//! clients the same port, as two real homes often would.
//!
//! Needs root (to make namespaces), `ip` and `nft`: CI runs as root and installs them.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::audio::{load, score, speech_wav, temp_path};
use support::{finish, stderr};

/// How a home's router translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// Endpoint-independent mapping that keeps the port when it is free (`masquerade`).
    KeepsPort,
    /// Endpoint-independent mapping to another port (`snat` to a port range): one public
    /// port per client socket, whatever the destination.
    NewPort,
    /// Address-and-port-dependent mapping: a new random port for every destination
    /// (`masquerade fully-random`): "symmetric".
    Symmetric,
    /// Outgoing UDP dropped (some offices); TCP goes out masqueraded.
    UdpBlocked,
}

impl Nat {
    /// The router's nftables rules; `wan_ip` is its public address.
    fn rules(self, wan_ip: &str) -> String {
        let translate = match self {
            Nat::KeepsPort => "masquerade".to_string(),
            // (Port ranges need a protocol; the signaling's TCP is masqueraded.)
            Nat::NewPort => {
                format!(
                    "meta l4proto udp snat to {wan_ip}:20000-29999\n    oifname \"wan\" masquerade"
                )
            }
            Nat::Symmetric => "masquerade fully-random".to_string(),
            Nat::UdpBlocked => "masquerade".to_string(),
        };
        let block = match self {
            Nat::UdpBlocked => "\n    iifname \"lan\" meta l4proto udp drop",
            _ => "",
        };
        // Like every home router, a firewall drops what comes unasked from outside. (Without
        // it Linux would also track the peer's early probe to the router itself, and then
        // give our own client another port: a lab artefact, not what homes do.)
        format!(
            "table ip nat {{\n  chain post {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"wan\" {translate}\n  }}\n}}\n\
             table inet filter {{\n  chain input {{\n    type filter hook input priority filter; policy accept;\n    iifname \"wan\" ct state new drop\n  }}\n  \
             chain forward {{\n    type filter hook forward priority filter; policy accept;\n    iifname \"wan\" ct state new drop{block}\n  }}\n}}\n"
        )
    }
}

/// The public network, the server's host and the two homes. Namespaces are removed on drop.
struct Lab {
    public: String,
    server_host: String,
    homes: [String; 2],
    routers: [String; 2],
    server: Option<Child>,
}

const SERVER: &str = "100.64.0.2:7400";
const MEDIA_PORT: &str = "40000";

/// Runs a command to completion; panics with its error output if it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (the NAT tests need `ip` and `nft`)", args[0]));
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip -n NS ARGS…`
fn ip(ns: &str, args: &[&str]) {
    run(&[&["ip", "-n", ns][..], args].concat());
}

fn sysctl(ns: &str, setting: &str) {
    run(&["ip", "netns", "exec", ns, "sysctl", "-qw", setting]);
}

/// A veth pair from namespace `a` to namespace `b`, each end named, addressed and up.
fn veth((a, a_if, a_addr): (&str, &str, &str), (b, b_if, b_addr): (&str, &str, &str)) {
    ip(
        a,
        &[
            "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
        ],
    );
    for (ns, name, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        ip(ns, &["addr", "add", addr, "dev", name]);
        ip(ns, &["link", "set", name, "up"]);
    }
}

fn run_with_input(args: &[&str], input: &str) {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}\n{input}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    /// Builds the networks: home `i` (192.168.1.2) behind router `i` (public 100.64.{i+1}.2),
    /// both routers and the server's host (100.64.0.2, one address like most servers) on the
    /// public namespace, which routes between them.
    fn new(tag: &str, nats: [Nat; 2]) -> Lab {
        assert!(
            is_root(),
            "the NAT tests make network namespaces: run them as root (CI does)"
        );
        let id = format!("fala{}{tag}", std::process::id() % 100_000);
        let lab = Lab {
            public: format!("{id}-pub"),
            server_host: format!("{id}-srv"),
            homes: [format!("{id}-ha"), format!("{id}-hb")],
            routers: [format!("{id}-ra"), format!("{id}-rb")],
            server: None,
        };
        for ns in lab.all() {
            run(&["ip", "netns", "add", ns]);
            ip(ns, &["link", "set", "lo", "up"]);
        }
        let (p, srv) = (lab.public.as_str(), lab.server_host.as_str());
        sysctl(p, "net.ipv4.ip_forward=1");
        veth((p, "srv", "100.64.0.1/24"), (srv, "eth0", "100.64.0.2/24"));
        ip(srv, &["route", "add", "default", "via", "100.64.0.1"]);
        for (i, nat) in nats.iter().enumerate() {
            let (r, h) = (lab.routers[i].as_str(), lab.homes[i].as_str());
            let net = i + 1;
            let (public_side, wan_ip) = (format!("100.64.{net}.1"), format!("100.64.{net}.2"));
            let pub_if = format!("p{i}");
            veth(
                (p, &pub_if, &format!("{public_side}/24")),
                (r, "wan", &format!("{wan_ip}/24")),
            );
            veth((r, "lan", "192.168.1.1/24"), (h, "eth0", "192.168.1.2/24"));
            ip(r, &["route", "add", "default", "via", &public_side]);
            sysctl(r, "net.ipv4.ip_forward=1");
            run_with_input(
                &["ip", "netns", "exec", r, "nft", "-f", "-"],
                &nat.rules(&wan_ip),
            );
            ip(h, &["route", "add", "default", "via", "192.168.1.1"]);
            // Deleting the first address keeps a second one.
            sysctl(h, "net.ipv4.conf.eth0.promote_secondaries=1");
        }
        lab
    }

    /// Gives both homes IPv6 as well, without NAT (as most IPv6 homes have it): home `i` gets
    /// 2001:db8:{i+1}:1::2 behind router `i`, whose stateful firewall (the `inet` table, for
    /// both families) still drops what comes unasked from outside.
    fn add_ipv6(&self) {
        let p = self.public.as_str();
        sysctl(p, "net.ipv6.conf.all.forwarding=1");
        for i in 0..2 {
            let (r, h) = (self.routers[i].as_str(), self.homes[i].as_str());
            let net = i + 1;
            let (public_side, wan) = (
                format!("2001:db8:0:{net}::1"),
                format!("2001:db8:0:{net}::2"),
            );
            let (lan, home) = (
                format!("2001:db8:{net}:1::1"),
                format!("2001:db8:{net}:1::2"),
            );
            let add = |ns: &str, addr: &str, dev: &str| {
                ip(
                    ns,
                    &[
                        "-6",
                        "addr",
                        "add",
                        &format!("{addr}/64"),
                        "dev",
                        dev,
                        "nodad",
                    ],
                );
            };
            add(p, &public_side, &format!("p{i}"));
            add(r, &wan, "wan");
            add(r, &lan, "lan");
            add(h, &home, "eth0");
            sysctl(r, "net.ipv6.conf.all.forwarding=1");
            ip(r, &["-6", "route", "add", "default", "via", &public_side]);
            ip(h, &["-6", "route", "add", "default", "via", &lan]);
            ip(
                p,
                &[
                    "-6",
                    "route",
                    "add",
                    &format!("2001:db8:{net}::/48"),
                    "via",
                    &wan,
                ],
            );
        }
    }

    fn all(&self) -> impl Iterator<Item = &str> {
        [self.public.as_str(), self.server_host.as_str()]
            .into_iter()
            .chain(self.routers.iter().map(String::as_str))
            .chain(self.homes.iter().map(String::as_str))
    }

    /// Starts the real server in the public namespace and waits until home A reaches it.
    fn start_server(&mut self, data: &Path) {
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server_host,
                server_binary().to_str().unwrap(),
            ])
            .args([
                "--listen",
                "0.0.0.0:7400",
                "--plain",
                "--no-echo",
                "--data-dir",
            ])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fala-server");
        self.server = Some(server);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let reached = Command::new("ip")
                .args(["netns", "exec", &self.homes[0], "bash", "-c"])
                .arg("exec 3<>/dev/tcp/100.64.0.2/7400")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if reached {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not come up in the public namespace");
    }

    /// `fala` with `args` in home `i`, with that person's own config folder.
    fn fala(&self, i: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.homes[i], env!("CARGO_BIN_EXE_fala")]);
        support::person_config_dir(&mut cmd, args);
        cmd.args(args)
            .args(["--plain", "--media-port", MEDIA_PORT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for ns in self.all() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `fala-server`, built next to `fala` by the workspace's build.
fn server_binary() -> PathBuf {
    let fala = Path::new(env!("CARGO_BIN_EXE_fala"));
    let server = fala.with_file_name("fala-server");
    assert!(
        server.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        server.display()
    );
    server
}

/// What one side of a call left behind.
struct Side {
    out: Output,
    heard: PathBuf,
    stats: serde_json::Value,
}

/// Something done to the networks `at` seconds into a call.
type DuringCall<'a> = Option<(f64, &'a dyn Fn(&Lab))>;

/// Ana (home A) calls Bob (home B) for `seconds`; both send the test speech. `during` runs
/// while the call is up.
fn call(lab: &mut Lab, tag: &str, seconds: u32, during: DuringCall<'_>) -> [Side; 2] {
    let data = temp_path(&format!("{tag}-server"));
    lab.start_server(&data);
    let speech = speech_wav().to_str().unwrap();
    let files = |who: &str| {
        (
            temp_path(&format!("{tag}-{who}.wav")),
            temp_path(&format!("{tag}-{who}.json")),
        )
    };
    let ((ana_wav, ana_json), (bob_wav, bob_json)) = (files("ana"), files("bob"));
    let bob = lab
        .fala(
            1,
            &[
                "answer",
                "--name",
                "bob",
                "--server",
                SERVER,
                "--input",
                speech,
                "--output",
                bob_wav.to_str().unwrap(),
                "--stats",
                bob_json.to_str().unwrap(),
            ],
        )
        .spawn()
        .expect("start fala answer");
    std::thread::sleep(Duration::from_millis(700));
    let seconds = seconds.to_string();
    let ana = lab
        .fala(
            0,
            &[
                "call",
                "bob",
                "--name",
                "ana",
                "--server",
                SERVER,
                "--input",
                speech,
                "--output",
                ana_wav.to_str().unwrap(),
                "--stats",
                ana_json.to_str().unwrap(),
                "--hangup-after",
                &seconds,
            ],
        )
        .spawn()
        .expect("start fala call");
    if let Some((at, action)) = during {
        std::thread::sleep(Duration::from_secs_f64(at));
        action(lab);
    }
    let limit = Duration::from_secs(60);
    let (ana, bob) = (finish(ana, limit), finish(bob, limit));
    let stats = |p: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    };
    [
        Side {
            stats: stats(&ana_json),
            out: ana,
            heard: ana_wav,
        },
        Side {
            stats: stats(&bob_json),
            out: bob,
            heard: bob_wav,
        },
    ]
}

/// Both sides exited well, heard the other's speech, and took `path`.
fn assert_speech_both_ways(tag: &str, sides: &[Side; 2], path: &str) {
    let sent = load(speech_wav());
    for (who, side) in ["ana", "bob"].iter().zip(sides) {
        assert!(
            side.out.status.success(),
            "{tag}: {who}: {}",
            stderr(&side.out)
        );
        let s = score(&sent, &load(&side.heard), 500, 800);
        eprintln!(
            "{tag}: {who} heard {s:?}; path {}, first audio after {} ms, {} path changes, stats {}",
            side.stats["path"],
            side.stats["first_audio_ms"],
            side.stats["path_changes"],
            side.stats
        );
        assert!(s.correlation > 0.75, "{tag}: {who} heard {s:?}");
        assert_eq!(side.stats["path"], path, "{tag}: {who}: {}", side.stats);
    }
}

/// A 6 s call between homes behind `nats`: speech both ways, on `path`.
fn speech_between(tag: &str, nats: [Nat; 2], label: &str, path: &str) {
    let mut lab = Lab::new(tag, nats);
    let sides = call(&mut lab, &format!("nat-{tag}"), 6, None);
    assert_speech_both_ways(label, &sides, path);
}

#[test]
fn homes_behind_port_keeping_nats_talk_directly() {
    speech_between(
        "kk",
        [Nat::KeepsPort, Nat::KeepsPort],
        "keeps-port both",
        "direct",
    );
}

#[test]
fn homes_behind_port_changing_nats_talk_directly() {
    speech_between(
        "nn",
        [Nat::NewPort, Nat::NewPort],
        "new-port both",
        "direct",
    );
}

#[test]
fn homes_behind_symmetric_nats_talk_through_the_relay() {
    speech_between(
        "ss",
        [Nat::Symmetric, Nat::Symmetric],
        "symmetric both",
        "relay",
    );
}

/// Both homes behind symmetric NATs for IPv4 (a relay call), but with IPv6 too: the clients
/// offer their IPv6 addresses, the checks open both homes' firewalls, and the call goes
/// straight over IPv6.
#[test]
fn homes_with_ipv6_talk_directly_even_behind_symmetric_ipv4_nats() {
    let mut lab = Lab::new("v6", [Nat::Symmetric, Nat::Symmetric]);
    lab.add_ipv6();
    let sides = call(&mut lab, "nat-v6", 6, None);
    assert_speech_both_ways("ipv6, symmetric ipv4 both", &sides, "direct");
}

#[test]
fn a_symmetric_nat_facing_a_port_keeping_one_uses_the_relay_and_still_talks() {
    let nats = [Nat::Symmetric, Nat::KeepsPort];
    speech_between("sk", nats, "symmetric and keeps-port", "relay");
}

/// The direct path breaks in mid-call (the home router starts dropping the peer's UDP, as a
/// router that reboots or loses its mapping would): the call goes on through the relay, and
/// the gap is measured.
#[test]
fn a_call_survives_its_direct_path_breaking_in_mid_call() {
    let mut lab = Lab::new("br", [Nat::KeepsPort, Nat::KeepsPort]);
    let break_direct = |lab: &Lab| {
        let rules = "add rule inet filter forward ip saddr 100.64.2.2 meta l4proto udp drop\n\
                     add rule inet filter forward ip daddr 100.64.2.2 meta l4proto udp drop\n";
        run_with_input(
            &["ip", "netns", "exec", &lab.routers[0], "nft", "-f", "-"],
            rules,
        );
    };
    let sides = call(&mut lab, "nat-br", 10, Some((4.0, &break_direct)));
    for (who, side) in ["ana", "bob"].iter().zip(&sides) {
        assert!(side.out.status.success(), "{who}: {}", stderr(&side.out));
        let s = &side.stats;
        let gap = s["longest_audio_gap_ms"].as_f64().unwrap();
        let received = s["packets_received"].as_u64().unwrap();
        eprintln!(
            "direct path broken: {who}: longest gap {gap:.0} ms, path {}, {} fallbacks, {received} packets; stats {s}",
            s["path"], s["path_fallbacks"]
        );
        assert_eq!(s["path"], "relay", "{who} ended on the relay");
        assert!(gap < 5_000.0, "{who}: the call stalled for {gap} ms");
        // 10 s of audio: all but the gap arrived.
        assert!(received > 300, "{who} received only {received} packets");
    }
    let fallbacks: u64 = sides
        .iter()
        .map(|s| s.stats["path_fallbacks"].as_u64().unwrap())
        .sum();
    assert!(
        fallbacks >= 1,
        "the broken direct path was left for the relay"
    );
}

/// Ana's own address changes in mid-call (her laptop moves to another network: the old
/// address goes, a new one comes): her signaling connection dies with the old address, her
/// media now leaves from a new address and NAT mapping. The call goes on: the client notices,
/// sends media through the relay at once, registers again from the new address asking for
/// the call back, and the hang-up at the end still reaches Bob through the server. The gap
/// each side heard is measured.
#[test]
fn a_call_survives_a_change_of_one_sides_own_address() {
    let mut lab = Lab::new("mv", [Nat::KeepsPort, Nat::NewPort]);
    let move_ana = |lab: &Lab| {
        let home = lab.homes[0].as_str();
        ip(home, &["addr", "add", "192.168.1.3/24", "dev", "eth0"]);
        ip(home, &["addr", "del", "192.168.1.2/24", "dev", "eth0"]);
    };
    let sides = call(&mut lab, "nat-mv", 10, Some((4.0, &move_ana)));
    for (who, side) in ["ana", "bob"].iter().zip(&sides) {
        let err = stderr(&side.out);
        assert!(side.out.status.success(), "{who}: {err}");
        let s = &side.stats;
        let gap = s["longest_audio_gap_ms"].as_f64().unwrap();
        let received = s["packets_received"].as_u64().unwrap();
        eprintln!(
            "own address moved: {who}: longest gap {gap:.0} ms, path {}, {} fallbacks, {received} packets; stats {s}\n{err}",
            s["path"], s["path_fallbacks"]
        );
        assert!(gap < 3_000.0, "{who}: the call stalled for {gap} ms");
        assert!(received > 300, "{who} received only {received} packets");
    }
    let ana_err = stderr(&sides[0].out);
    assert!(
        ana_err.contains("registered again"),
        "ana came back to the server: {ana_err}"
    );
}

/// A home whose network drops all outgoing UDP (some offices): Ana's media goes through her
/// signaling connection to the server's relay (the TCP fallback), Bob's by UDP to the relay,
/// and they hear each other.
#[test]
fn a_home_without_udp_talks_through_the_servers_tcp_connection() {
    let mut lab = Lab::new("ub", [Nat::UdpBlocked, Nat::KeepsPort]);
    let sides = call(&mut lab, "nat-ub", 6, None);
    let sent = load(speech_wav());
    for ((who, side), path) in ["ana", "bob"].iter().zip(&sides).zip(["tcp", "relay"]) {
        let err = stderr(&side.out);
        assert!(side.out.status.success(), "{who}: {err}");
        let s = score(&sent, &load(&side.heard), 500, 800);
        eprintln!(
            "udp blocked: {who} heard {s:?}; path {}, first audio after {} ms; stats {}",
            side.stats["path"], side.stats["first_audio_ms"], side.stats
        );
        assert!(s.correlation > 0.75, "{who} heard {s:?}");
        assert_eq!(side.stats["path"], path, "{who}: {}", side.stats);
    }
}

/// UDP stops getting out of Ana's home in mid-call and comes back 8 s later (an office
/// firewall that changes its mind; the flows already open still let UDP in): her media moves
/// to the TCP connection within seconds (Bob's reports stop echoing hers), and back to UDP
/// once a probe gets through; the call goes on throughout.
#[test]
fn a_call_moves_to_tcp_when_udp_stops_and_back_when_it_returns() {
    let mut lab = Lab::new("ut", [Nat::Symmetric, Nat::KeepsPort]);
    let block_then_unblock = |lab: &Lab| {
        let router = lab.routers[0].as_str();
        let nft = |rules: &str| {
            run_with_input(&["ip", "netns", "exec", router, "nft", "-f", "-"], rules);
        };
        nft("add table inet cut\nadd chain inet cut gate { type filter hook forward priority -10; }\n\
             add rule inet cut gate iifname \"lan\" meta l4proto udp drop\n");
        std::thread::sleep(Duration::from_secs(8));
        nft("delete table inet cut\n");
    };
    let sides = call(&mut lab, "nat-ut", 20, Some((3.0, &block_then_unblock)));
    for (who, side) in ["ana", "bob"].iter().zip(&sides) {
        assert!(side.out.status.success(), "{who}: {}", stderr(&side.out));
        let s = &side.stats;
        let gap = s["longest_audio_gap_ms"].as_f64().unwrap();
        eprintln!(
            "udp cut for 8 s: {who}: longest gap {gap:.0} ms, path {}, {} moves to and from tcp; stats {s}",
            s["path"], s["tcp_switches"]
        );
        assert!(gap < 5_000.0, "{who}: the call stalled for {gap} ms");
        assert!(s["packets_received"].as_u64().unwrap() > 20 * 50 - 300);
    }
    let ana = &sides[0].stats;
    assert!(
        ana["tcp_switches"].as_u64().unwrap() >= 2,
        "to TCP and back: {ana}"
    );
    assert_eq!(ana["path"], "relay", "back on UDP: {ana}");
}
