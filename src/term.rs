//! `fala term`: the terminal client, following the original program's flow: register, then
//! 0 = disconnect, 1 = look a user up and call them; an incoming call asks Y / N; while a call
//! is up the hang-up key is shown.

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fala_proto::call::{CallEvent, CallMachine, CallState};
use fala_proto::{ClientMsg, ServerMsg};
use tokio::sync::mpsc;

use crate::net::{self, Event, SignalConfig, SignalHandle};
use crate::phone::CallMedia;
use fala_proto::media_crypto::Role;

/// Options of the terminal client.
#[derive(Debug, Clone)]
pub struct TermOptions {
    pub signal: SignalConfigParts,
    /// Key (typed, then Enter) that ends a call.
    pub hangup_key: String,
}

/// The parts of a [`SignalConfig`] a command line gives.
#[derive(Debug, Clone)]
pub struct SignalConfigParts {
    pub server: String,
    pub name: String,
    pub media: fala_proto::MediaAddr,
}

/// What the terminal is waiting for the user to type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prompt {
    Menu,
    LookupName,
    CallChoice,
    Busy,
}

struct Term {
    handle: SignalHandle,
    media: CallMedia,
    /// Whether we placed the current call (decides the key-schedule role).
    outgoing: bool,
    calls: CallMachine,
    prompt: Prompt,
    hangup_key: String,
    /// The name found by the last lookup, offered for a call.
    found: Option<String>,
}

/// Reads stdin lines on a thread of its own (stdin reads block) into a bounded channel.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("fala-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        })
        .expect("spawn stdin thread");
    rx
}

/// Runs the terminal client until the user disconnects.
pub async fn run(opts: TermOptions, media: CallMedia) -> anyhow::Result<()> {
    let config = SignalConfig {
        server: opts.signal.server.clone(),
        name: opts.signal.name.clone(),
        media: opts.signal.media,
        subscribe: false,
        notify: None,
    };
    let (handle, mut events) = net::spawn(config);
    let mut input = stdin_lines();
    let mut term = Term {
        handle,
        media,
        outgoing: false,
        calls: CallMachine::new(),
        prompt: Prompt::Menu,
        hangup_key: opts.hangup_key.to_lowercase(),
        found: None,
    };
    println!(
        "Connecting to {} as {:?}...",
        opts.signal.server, opts.signal.name
    );
    let mut stdin_open = true;
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                if term.on_event(ev)? {
                    break;
                }
            }
            line = input.recv(), if stdin_open => match line {
                Some(line) => term.on_line(line.trim()),
                None => {
                    // End of input: leave as if the user pressed 0, unless a call is up.
                    stdin_open = false;
                    if !term.calls.is_busy() {
                        term.handle.disconnect();
                    }
                }
            },
        }
    }
    Ok(())
}

impl Term {
    fn menu(&mut self) {
        self.prompt = Prompt::Menu;
        println!("Press 0 to disconnect, 1 to look up a user and call them.");
    }

    /// Handles one event; returns true when the client should exit.
    fn on_event(&mut self, ev: Event) -> anyhow::Result<bool> {
        let now = Instant::now();
        match ev {
            Event::Registered {
                name,
                media,
                reconnected,
            } => {
                if reconnected {
                    println!("Reconnected and registered again as {name:?}.");
                } else {
                    println!("Registered as {name:?}; others send audio to {media}.");
                    self.menu();
                }
            }
            Event::Refused { message, .. } => bail!("registration refused: {message}"),
            Event::Unreachable { message } => bail!("{message}"),
            Event::ConnectionLost { message, retry_in } => {
                if let Some(CallEvent::Ended(outcome)) = self.calls.server_lost(now) {
                    self.media.stop();
                    println!("Call ended: {}.", outcome.describe());
                }
                println!(
                    "Lost the server ({message}); retrying in {:.1} s...",
                    retry_in.as_secs_f32()
                );
            }
            Event::Stopped => {
                println!("Disconnected.");
                return Ok(true);
            }
            Event::Server(msg) => self.on_server(msg, now),
        }
        Ok(false)
    }

    fn on_server(&mut self, msg: ServerMsg, now: Instant) {
        let (event, reply) = self.calls.on_server(&msg, now);
        if let Some(reply) = reply {
            self.handle.send(reply);
        }
        match (&msg, event) {
            (_, Some(CallEvent::RingingOut)) => {
                println!(
                    "Ringing {}... (type {} and Enter to cancel)",
                    self.calls.peer().unwrap_or(""),
                    self.hangup_key
                );
            }
            (ServerMsg::IncomingCall { caller, media, .. }, Some(CallEvent::Incoming)) => {
                println!("Incoming call from {caller} ({media}). Accept? [Y/N]");
            }
            (_, Some(CallEvent::Connected)) => self.start_audio(),
            (_, Some(CallEvent::Ended(outcome))) => {
                if let Some(stats) = self.media.stop() {
                    println!(
                        "Audio: {} packets sent, {} received, {} lost ({} restored), {:.0} ms \
                         mean latency.",
                        stats.packets_sent,
                        stats.packets_received,
                        stats.packets_lost,
                        stats.copy_recovered + stats.fec_recovered,
                        stats.latency_ms
                    );
                }
                let talked = match self.calls.state() {
                    CallState::Ended {
                        talked: Some(d), ..
                    } => format!(" after {}", clock(*d)),
                    _ => String::new(),
                };
                println!("Call ended{talked}: {}.", outcome.describe());
                self.menu();
            }
            (_, Some(CallEvent::AutoDeclined(_))) => {}
            (ServerMsg::UserFound { user }, None) if self.prompt == Prompt::LookupName => {
                let status = match user.status {
                    fala_proto::Availability::Available => "available",
                    fala_proto::Availability::InCall => "in a call",
                };
                println!(
                    "{} is online ({status}) at {}. Call? [Y/N]",
                    user.name, user.media
                );
                self.found = Some(user.name.clone());
                self.prompt = Prompt::CallChoice;
            }
            (ServerMsg::UserNotFound { name }, None) if self.prompt == Prompt::LookupName => {
                println!("{name:?} was not found. Type another name, or Enter to go back:");
            }
            (ServerMsg::Error { message, .. }, None) => println!("Server: {message}"),
            _ => {}
        }
    }

    fn on_line(&mut self, line: &str) {
        let now = Instant::now();
        let key = line.to_lowercase();
        if let CallState::RingingIn { .. } = self.calls.state() {
            let msg = match key.as_str() {
                "y" => {
                    self.outgoing = false;
                    let key = self.media.offer_key();
                    self.calls.accept(None, key).ok()
                }
                "n" => self.calls.decline().ok(),
                _ => {
                    println!("Type Y to accept or N to decline.");
                    None
                }
            };
            if let Some(msg) = msg {
                self.handle.send(msg);
            }
            return;
        }
        if self.calls.is_busy() {
            if key == self.hangup_key {
                match self.calls.hangup(now) {
                    Ok(Some(msg)) => {
                        self.handle.send(msg);
                    }
                    Ok(None) => {
                        println!("Call cancelled.");
                        self.menu();
                    }
                    Err(e) => println!("{e}"),
                }
            } else {
                println!("In a call: type {} and Enter to hang up.", self.hangup_key);
            }
            return;
        }
        match (self.prompt, key.as_str()) {
            (Prompt::Menu, "0") => {
                println!("Disconnecting...");
                self.handle.disconnect();
                self.prompt = Prompt::Busy;
            }
            (Prompt::Menu, "1") => {
                self.prompt = Prompt::LookupName;
                println!("Name to look up:");
            }
            (Prompt::Menu, "") => {}
            (Prompt::Menu, _) => self.menu(),
            (Prompt::LookupName, "") => self.menu(),
            (Prompt::LookupName, _) => {
                self.handle.send(ClientMsg::Lookup {
                    name: line.to_string(),
                });
            }
            (Prompt::CallChoice, "y") => {
                let peer = self.found.take().unwrap_or_default();
                self.outgoing = true;
                let key = self.media.offer_key();
                match self.calls.dial(&peer, key, now) {
                    Ok(msg) => {
                        println!("Calling {peer}...");
                        self.handle.send(msg);
                    }
                    Err(e) => println!("{e}"),
                }
            }
            (Prompt::CallChoice, _) => self.menu(),
            (Prompt::Busy, _) => {}
        }
    }
}

impl Term {
    /// The call is up: start real audio with the peer and tell the user how to end it.
    fn start_audio(&mut self) {
        let CallState::InCall {
            peer, media, key, ..
        } = self.calls.state().clone()
        else {
            return;
        };
        let role = if self.outgoing {
            Role::Caller
        } else {
            Role::Callee
        };
        let how = match self
            .media
            .start(role, media, key.as_deref().map(|k| k.as_slice()))
        {
            Ok(()) => match self.media.sas() {
                Some(sas) => format!("audio encrypted, code {sas}"),
                None => "audio NOT encrypted".to_string(),
            },
            Err(e) => format!("no audio: {e}"),
        };
        println!(
            "Call with {peer} connected ({how}). Type {} and Enter to hang up.",
            self.hangup_key
        );
    }
}

/// `m:ss` for a call duration.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// Binds the media socket the client will receive audio on (ephemeral port when 0).
pub fn bind_media(port: u16) -> anyhow::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind(("0.0.0.0", port))
        .with_context(|| format!("cannot bind UDP port {port}"))
}
