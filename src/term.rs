//! `fala term`: the terminal face of the call core, following the original program's flow:
//! register, then 0 = disconnect, 1 = look a user up and call them; an incoming call asks
//! Y / N; while a call is up the hang-up key is shown. It prints what the window paints.

use std::io::BufRead;
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail};
use fala_proto::call::{CallEvent, CallState};
use fala_proto::Availability;
use tokio::sync::mpsc;

use crate::app::store::Store;
use crate::client::contacts::KeyCheck;
use crate::client::history::clock;
use crate::client::model::{Effect, Lookup, Notice};
use crate::client::{AudioState, ConnectRequest, LinkEvent, MediaOptions, Phone};
use crate::net::Event;

/// Options of the terminal client.
#[derive(Clone)]
pub struct TermOptions {
    pub connect: ConnectRequest,
    /// Key (typed, then Enter) that ends a call.
    pub hangup_key: String,
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
    phone: Phone,
    prompt: Prompt,
    hangup_key: String,
    /// The name found by the last lookup, offered for a call.
    found: Option<String>,
    /// Where the contacts (and their pinned identity keys) are kept.
    store: Store,
    /// Who we are (for the safety number).
    identity: std::sync::Arc<fala_proto::identity::Identity>,
}

/// Reads stdin lines on a thread of its own (stdin reads block) into a bounded channel.
fn stdin_lines() -> anyhow::Result<mpsc::Receiver<String>> {
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
        })?;
    Ok(rx)
}

/// Runs the terminal client until the user disconnects.
pub async fn run(opts: TermOptions, media: MediaOptions) -> anyhow::Result<()> {
    let mut phone = Phone::new(false, Some(media));
    let store = Store::default_location();
    phone.model_mut().contacts = store.load_contacts();
    let identity = opts.connect.identity.clone();
    let (server, name) = (opts.connect.server.clone(), opts.connect.name.clone());
    let mut events = phone.connect(opts.connect).map_err(|p| anyhow!("{p}"))?;
    let mut input = stdin_lines()?;
    let mut term = Term {
        phone,
        prompt: Prompt::Menu,
        hangup_key: opts.hangup_key.to_lowercase(),
        found: None,
        store,
        identity,
    };
    println!("Connecting to {server} as {name:?}...");
    let (mut stdin_open, mut media_open) = (true, true);
    let mut watch = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = watch.tick() => {
                if let Some(notice) = term.phone.audio_notice() {
                    println!("{notice}.");
                }
            }
            ev = events.signal.recv() => {
                let Some(ev) = ev else { break };
                if term.on_signal(ev)? {
                    break;
                }
            }
            ev = events.media.recv(), if media_open => match ev {
                Some(ev) => term.on_media(ev),
                None => media_open = false,
            },
            line = input.recv(), if stdin_open => match line {
                Some(line) => term.on_line(line.trim()),
                None => {
                    // End of input: leave as if the user pressed 0, unless a call is up.
                    stdin_open = false;
                    if !term.phone.model().calls.is_busy() {
                        let fx = term.phone.disconnect();
                        term.show(fx);
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

    /// Handles one signaling event; returns true when the client should exit.
    fn on_signal(&mut self, ev: Event) -> anyhow::Result<bool> {
        let fx = self
            .phone
            .on_signal(ev.clone(), Instant::now(), SystemTime::now());
        self.show(fx);
        match ev {
            Event::Registered {
                name,
                media,
                reconnected,
                resumed,
                ..
            } => {
                if reconnected {
                    println!("Reconnected and registered again as {name:?}.");
                    if resumed.is_some() {
                        println!("The call goes on.");
                    }
                } else {
                    println!("Registered as {name:?}; others send audio to {media}.");
                    self.menu();
                }
            }
            Event::Refused { message, .. } => bail!("registration refused: {message}"),
            Event::Unreachable { message } | Event::Untrusted { message } => bail!("{message}"),
            Event::ConnectionLost { message, retry_in } => println!(
                "Lost the server ({message}); retrying in {:.1} s...",
                retry_in.as_secs_f32()
            ),
            Event::Stopped => {
                println!("Disconnected.");
                return Ok(true);
            }
            Event::Server(_) => {}
        }
        Ok(false)
    }

    fn on_media(&mut self, ev: LinkEvent) {
        let was_opening = self
            .phone
            .media()
            .is_some_and(|m| *m.state() == AudioState::Opening);
        self.phone.on_media(&ev);
        match ev {
            LinkEvent::Failed { message, .. } if was_opening => println!("No audio: {message}"),
            LinkEvent::RecordingFailed(message) => println!("Recording failed: {message}"),
            LinkEvent::Stopped(stats) => println!(
                "Audio: {} packets sent, {} received, {} lost ({} restored), {:.0} ms mean \
                 latency.",
                stats.packets_sent,
                stats.packets_received,
                stats.packets_lost,
                stats.copy_recovered + stats.fec_recovered,
                stats.latency_ms
            ),
            _ => {}
        }
    }

    /// Prints what the phone did.
    fn show(&mut self, fx: Vec<Effect>) {
        for effect in fx {
            match effect {
                Effect::Call(event) => self.show_call(event),
                Effect::LookupAnswered if self.prompt == Prompt::LookupName => self.show_lookup(),
                Effect::ServerError(message) => println!("Server: {message}"),
                Effect::ContactsChanged => {
                    if let Err(e) = self.store.save_contacts(&self.phone.model().contacts) {
                        println!("Warning: {e}");
                    }
                }
                _ => {}
            }
        }
    }

    fn show_call(&mut self, event: CallEvent) {
        let model = self.phone.model();
        let peer = model.calls.peer().unwrap_or("").to_string();
        match event {
            CallEvent::RingingOut => println!(
                "Ringing {peer}... (type {} and Enter to cancel)",
                self.hangup_key
            ),
            CallEvent::Incoming => {
                if let CallState::RingingIn { identity, .. } = model.calls.state() {
                    let key = identity_label(identity);
                    if model.key_check == Some(KeyCheck::Changed) {
                        println!(
                            "WARNING: {peer}'s identity key has changed since your last call: \
                             this may be someone else, or someone listening in."
                        );
                    }
                    println!("Incoming call from {peer} (identity {key}). Accept? [Y/N]");
                }
            }
            CallEvent::Connected => {
                let link = self.phone.media();
                let how = match (link.map(|m| m.state()), link.and_then(|m| m.sas())) {
                    (Some(AudioState::Failed(e)), _) => format!("no audio: {e}"),
                    (_, Some(sas)) => format!("audio encrypted, code {sas}"),
                    (_, None) => "audio NOT encrypted".to_string(),
                };
                println!(
                    "Call with {peer} connected ({how}). Type {} and Enter to hang up.",
                    self.hangup_key
                );
                let mine = self.identity.public();
                if let Some(number) = model.contacts.safety_number(&mine, &peer) {
                    let verified = model.contacts.get(&peer).is_some_and(|c| c.verified);
                    let mark = if verified { " (verified)" } else { "" };
                    println!("Safety number with {peer}{mark}: {number}");
                }
            }
            CallEvent::Ended(outcome) => {
                let talked = match model.calls.state() {
                    CallState::Ended {
                        talked: Some(d), ..
                    } => format!(" after {}", clock(d.as_secs())),
                    _ => String::new(),
                };
                println!("Call ended{talked}: {}.", outcome.describe());
                if let Some(Notice::Security(why)) = &model.notice {
                    println!("Not private: {why}.");
                }
                self.menu();
            }
            CallEvent::AutoDeclined(_) => {}
        }
    }

    fn show_lookup(&mut self) {
        match &self.phone.model().lookup {
            Lookup::Found(user) => {
                let status = match user.status {
                    Availability::Available => "available",
                    Availability::InCall => "in a call",
                };
                println!(
                    "{} is online ({status}), identity {}. Call? [Y/N]",
                    user.name,
                    identity_label(&user.identity)
                );
                self.found = Some(user.name.clone());
                self.prompt = Prompt::CallChoice;
            }
            Lookup::NotFound(name) => {
                println!("{name:?} was not found. Type another name, or Enter to go back:")
            }
            Lookup::Idle | Lookup::Pending(_) => {}
        }
    }

    fn on_line(&mut self, line: &str) {
        let now = Instant::now();
        let key = line.to_lowercase();
        if let CallState::RingingIn { .. } = self.phone.model().calls.state() {
            let answered = match key.as_str() {
                "y" => self.phone.accept(),
                "n" => self.phone.decline(),
                _ => {
                    println!("Type Y to accept or N to decline.");
                    return;
                }
            };
            if let Ok(fx) = answered {
                self.show(fx);
            }
            return;
        }
        if self.phone.model().calls.is_busy() {
            if key == self.hangup_key {
                match self.phone.hangup(now) {
                    Ok(fx) => self.show(fx),
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
                let fx = self.phone.disconnect();
                self.show(fx);
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
                let fx = self.phone.lookup(line);
                self.show(fx);
            }
            (Prompt::CallChoice, "y") => {
                let peer = self.found.take().unwrap_or_default();
                match self.phone.dial(&peer, now, SystemTime::now()) {
                    Ok(fx) => {
                        println!("Calling {peer}...");
                        self.show(fx);
                    }
                    Err(e) => println!("{e}"),
                }
            }
            (Prompt::CallChoice, _) => self.menu(),
            (Prompt::Busy, _) => {}
        }
    }
}

/// An identity key as a person reads it (its fingerprint), or a note that it is not one.
fn identity_label(identity: &[u8]) -> String {
    <[u8; 32]>::try_from(identity)
        .map(|key| fala_proto::identity::fingerprint(&key))
        .unwrap_or_else(|_| "unknown".into())
}
