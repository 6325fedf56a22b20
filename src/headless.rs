//! `fala call` and `fala answer`: the headless face of the call core, one call for scripts and
//! tests.
//!
//! Both register, make or take exactly one call, run real media for it, and exit: success
//! after a normal hang-up by either side, an error with a one-line reason otherwise. Whatever
//! ends the run, the engine stops and finishes its files before the process exits.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};
use fala_proto::call::{CallEvent, CallState, Outcome};
use fala_proto::EndReason;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use crate::app::store::Store;
use crate::client::contacts::KeyCheck;
use crate::client::model::{Effect, Notice};
use crate::client::{ConnectRequest, LinkEvent, MediaOptions, Phone, PhoneEvents};
use crate::media::MediaStats;
use crate::net::{self, Event};

/// What the headless client should do.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Call this user.
    Call(String),
    /// Wait for the first incoming call and accept it (or decline it).
    Answer { decline: bool },
}

/// Everything a headless run needs.
#[derive(Clone)]
pub struct Options {
    pub connect: ConnectRequest,
    pub mode: Mode,
    pub media: MediaOptions,
    /// Hang up this long after the call's audio starts.
    pub hangup_after: Option<Duration>,
    /// Write the final media statistics here as JSON.
    pub stats: Option<PathBuf>,
}

/// Longest wait for the engine to stop and finish its files after the call.
const ENGINE_STOP: Duration = Duration::from_secs(10);

/// One run: the phone, the script it follows, and what it is waiting for.
struct Run {
    phone: Phone,
    mode: Mode,
    hangup_after: Option<Duration>,
    hangup_at: Option<Instant>,
    /// An engine was started and has not reported stopping (or failing) yet.
    engine_running: bool,
    stats: Option<MediaStats>,
    /// Where the contacts (and their pinned identity keys) are kept.
    store: Store,
}

/// How often the call's audio is checked for silence.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Runs one call to its end.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let mut phone = Phone::new(false, Some(opts.media));
    let store = Store::default_location();
    phone.model_mut().contacts = store.load_contacts();
    let mut events = phone.connect(opts.connect).map_err(|p| anyhow!("{p}"))?;
    let mut run = Run {
        phone,
        mode: opts.mode,
        hangup_after: opts.hangup_after,
        hangup_at: None,
        engine_running: false,
        stats: None,
        store,
    };
    let mut result = run.until_done(&mut events).await;
    run.finish(&mut events.media).await;
    if let (Ok(()), Some(stats)) = (&result, &run.stats) {
        if stats.packets_received == 0 {
            // Both sides said "connected" and nothing came: not a successful call.
            result = Err(anyhow!(
                "the call carried no audio: nothing arrived from the other side in {:.0} s",
                stats.duration_s
            ));
        }
    }
    if let (Some(path), Some(stats)) = (&opts.stats, &run.stats) {
        let json = serde_json::to_string_pretty(stats)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    run.phone.leave();
    // Let the bye reach the server before the runtime goes away.
    let _ = net::wait_for(&mut events.signal, Duration::from_secs(2), |e| {
        (*e == Event::Stopped).then_some(())
    })
    .await;
    result
}

impl Run {
    /// Follows signaling, media and the hang-up timer until the call is over (or fails).
    async fn until_done(&mut self, events: &mut PhoneEvents) -> anyhow::Result<()> {
        let mut media_open = true;
        let mut watch = tokio::time::interval(WATCH_EVERY);
        loop {
            let deadline = self.hangup_at;
            tokio::select! {
                _ = watch.tick() => self.watch_audio(),
                ev = events.signal.recv() => {
                    let Some(ev) = ev else {
                        return Err(anyhow!("signaling stopped unexpectedly"));
                    };
                    if let Some(done) = self.on_signal(ev) {
                        return done;
                    }
                }
                ev = events.media.recv(), if media_open => match ev {
                    Some(ev) => self.on_media(ev)?,
                    None => media_open = false,
                },
                _ = async { sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                    self.hangup_at = None;
                    if let Ok(fx) = self.phone.hangup(std::time::Instant::now()) {
                        if let Some(done) = self.show(fx) {
                            return done;
                        }
                    }
                }
            }
        }
    }

    /// Says on standard error when nothing has arrived from the peer for a while, and when it
    /// comes back.
    fn watch_audio(&mut self) {
        if let Some(notice) = self.phone.audio_notice() {
            eprintln!("warning: {notice}");
        }
    }

    /// In `call` mode with no call yet: calls the peer.
    fn dial_if_calling(&mut self) -> Option<anyhow::Result<()>> {
        let Mode::Call(peer) = &self.mode else {
            return None;
        };
        let calls = &self.phone.model().calls;
        if calls.is_busy() || calls.peer().is_some() {
            return None;
        }
        let peer = peer.clone();
        let dialed = self
            .phone
            .dial(&peer, std::time::Instant::now(), SystemTime::now());
        match dialed {
            Ok(fx) => self.show(fx),
            Err(_) => None,
        }
    }

    /// One signaling event; `Some(result)` ends the run.
    fn on_signal(&mut self, ev: Event) -> Option<anyhow::Result<()>> {
        let fx = self
            .phone
            .on_signal(ev.clone(), std::time::Instant::now(), SystemTime::now());
        if let Some(done) = self.show(fx) {
            return Some(done);
        }
        match ev {
            Event::Registered {
                reconnected: true, ..
            } => {
                eprintln!("registered again; the call goes on");
                None
            }
            Event::Registered { name, media, .. } => {
                eprintln!("registered as {name:?}, media at {media}");
                if self.phone.discovering() {
                    // The invite carries our public address: wait for it (at most 1.5 s).
                    return None;
                }
                self.dial_if_calling()
            }
            Event::Refused { message, .. } => Some(Err(anyhow!("registration refused: {message}"))),
            Event::Unreachable { message } | Event::Untrusted { message } => {
                Some(Err(anyhow!(message)))
            }
            // The call goes on (its audio does not pass the signaling) while the connection is
            // made again; the server holds the call meanwhile.
            Event::ConnectionLost { message, .. }
                if matches!(self.phone.model().calls.state(), CallState::InCall { .. }) =>
            {
                eprintln!("lost the server ({message}); reconnecting, the call goes on");
                None
            }
            Event::ConnectionLost { .. } => Some(Err(anyhow!(Outcome::ServerLost.describe()))),
            Event::Stopped => Some(Err(anyhow!("signaling stopped unexpectedly"))),
            Event::Server(_) => None,
        }
    }

    /// Acts on what the phone did; `Some(result)` ends the run.
    fn show(&mut self, fx: Vec<Effect>) -> Option<anyhow::Result<()>> {
        for effect in fx {
            match effect {
                Effect::StartMedia(_) => self.engine_running = true,
                Effect::ContactsChanged => {
                    if let Err(e) = self.store.save_contacts(&self.phone.model().contacts) {
                        eprintln!("warning: {e}");
                    }
                }
                Effect::Call(event) => {
                    if let Some(done) = self.on_call(event) {
                        return Some(done);
                    }
                }
                Effect::ServerError(message) => {
                    let calls = &self.phone.model().calls;
                    let nothing_placed = !calls.is_busy() && calls.peer().is_none();
                    if nothing_placed && matches!(self.mode, Mode::Call(_)) {
                        return Some(Err(anyhow!(message)));
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn on_call(&mut self, event: CallEvent) -> Option<anyhow::Result<()>> {
        let peer = self.phone.model().calls.peer().unwrap_or("").to_string();
        match event {
            CallEvent::Incoming if self.phone.model().key_check == Some(KeyCheck::Changed) => {
                // Nobody is there to read a warning: a changed identity is refused.
                let why = format!(
                    "refused a call from {peer}: their identity key has changed since your last call"
                );
                eprintln!("{why}");
                let _ = self.phone.decline().map(|fx| self.show(fx));
                return Some(Err(anyhow!(why)));
            }
            CallEvent::Incoming => {
                let answered = match self.mode {
                    Mode::Answer { decline: true } => self.phone.decline(),
                    _ => self.phone.accept(),
                };
                if let Ok(fx) = answered {
                    return self.show(fx);
                }
            }
            CallEvent::Connected => match self.phone.media().and_then(|m| m.sas()) {
                Some(sas) => eprintln!("call with {peer} connected, encrypted (code {sas})"),
                None => {
                    eprintln!("call with {peer} connected, NOT encrypted (the peer sent no key)")
                }
            },
            CallEvent::Ended(outcome) => {
                if let Some(Notice::Security(why)) = &self.phone.model().notice {
                    eprintln!("call ended: {why}");
                    return Some(Err(anyhow!("{why}")));
                }
                let talked = matches!(
                    self.phone.model().calls.state(),
                    CallState::Ended {
                        talked: Some(_),
                        ..
                    }
                );
                let ok = match &outcome {
                    Outcome::Ended(EndReason::HungUp | EndReason::PeerHungUp) => talked,
                    Outcome::Ended(EndReason::Declined) => {
                        matches!(self.mode, Mode::Answer { decline: true })
                    }
                    _ => false,
                };
                eprintln!("call ended: {}", outcome.describe());
                return Some(if ok {
                    Ok(())
                } else {
                    Err(anyhow!(outcome.describe()))
                });
            }
            CallEvent::RingingOut => eprintln!("ringing {peer}"),
            CallEvent::AutoDeclined(_) => {}
        }
        None
    }

    /// Audio is ready (the hang-up timer starts), failed (the run fails), or stopped.
    fn on_media(&mut self, ev: LinkEvent) -> anyhow::Result<()> {
        self.phone.on_media(&ev);
        match ev {
            LinkEvent::Ready { .. } => {
                if let Some(after) = self.hangup_after {
                    self.hangup_at = Some(Instant::now() + after);
                }
            }
            LinkEvent::Failed { message, .. } => {
                self.engine_running = false;
                return Err(anyhow!("no audio: {message}"));
            }
            LinkEvent::RecordingFailed(message) => return Err(anyhow!(message)),
            LinkEvent::Stopped(stats) => {
                self.engine_running = false;
                self.stats = Some(*stats);
            }
            LinkEvent::AddressFound(_) => {
                if let Some(Err(e)) = self.dial_if_calling() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Hangs up a call still up, and waits for the engine to stop and finish its files.
    async fn finish(&mut self, media: &mut mpsc::Receiver<LinkEvent>) {
        if self.phone.model().calls.is_busy() {
            if let Ok(fx) = self.phone.hangup(std::time::Instant::now()) {
                let _ = self.show(fx);
            }
        }
        // The server confirms a hang-up later, and nobody reads its answer any more.
        self.phone.stop_audio();
        let waited = timeout(ENGINE_STOP, async {
            while self.engine_running {
                match media.recv().await {
                    Some(ev) => {
                        let _ = self.on_media(ev);
                    }
                    None => break,
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!("the media engine did not stop in time");
        }
    }
}
