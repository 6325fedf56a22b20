//! `fala call` and `fala answer`: one call without a window, for scripts and tests.
//!
//! Both register, make or take exactly one call, run real media for it, and exit: success
//! after a normal hang-up by either side, an error with a one-line reason otherwise.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use fala_proto::call::{CallEvent, CallMachine, CallState, Outcome};
use fala_proto::media_crypto::Role;
use fala_proto::{EndReason, MediaAddr, ServerMsg};
use tokio::time::{sleep_until, Instant};

use crate::net::{self, Event, SignalConfig, SignalHandle};
use crate::phone::CallMedia;

/// What the headless client should do.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Call this user.
    Call(String),
    /// Wait for the first incoming call and accept it (or decline it).
    Answer { decline: bool },
}

/// Everything a headless run needs besides the media socket.
#[derive(Debug, Clone)]
pub struct Options {
    pub server: String,
    pub name: String,
    /// The media address to register (advertised).
    pub media: MediaAddr,
    /// Hang up this long after the call connects.
    pub hangup_after: Option<Duration>,
    /// Write the final media statistics here as JSON.
    pub stats: Option<PathBuf>,
}

/// Runs one call to its end.
pub async fn run(opts: Options, mode: Mode, mut media: CallMedia) -> anyhow::Result<()> {
    let (handle, mut events) = net::spawn(SignalConfig {
        server: opts.server.clone(),
        name: opts.name.clone(),
        media: opts.media,
        subscribe: false,
        notify: None,
    });
    let mut calls = CallMachine::new();
    let mut hangup_at: Option<Instant> = None;
    let result = loop {
        let deadline = hangup_at;
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = async { sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                hangup_at = None;
                if let Ok(Some(msg)) = calls.hangup(std::time::Instant::now()) {
                    handle.send(msg);
                }
                continue;
            }
        };
        let Some(ev) = ev else {
            break Err(anyhow!("signaling stopped unexpectedly"));
        };
        match ev {
            Event::Registered { name, media: m, .. } => {
                eprintln!("registered as {name:?}, media at {m}");
                if let Mode::Call(peer) = &mode {
                    if !calls.is_busy() && calls.peer().is_none() {
                        let key = media.offer_key();
                        if let Ok(msg) = calls.dial(peer, key, std::time::Instant::now()) {
                            handle.send(msg);
                        }
                    }
                }
            }
            Event::Refused { message, .. } => {
                break Err(anyhow!("registration refused: {message}"))
            }
            Event::Unreachable { message } => break Err(anyhow!(message)),
            Event::ConnectionLost { .. } => {
                calls.server_lost(std::time::Instant::now());
                break Err(anyhow!(Outcome::ServerLost.describe()));
            }
            Event::Stopped => break Err(anyhow!("signaling stopped unexpectedly")),
            Event::Server(msg) => {
                if let Some(done) = on_server(
                    &msg,
                    &mode,
                    &mut calls,
                    &mut media,
                    &handle,
                    &opts,
                    &mut hangup_at,
                )? {
                    break done;
                }
            }
        }
    };
    let stats = media.stop();
    if let (Some(path), Some(stats)) = (&opts.stats, &stats) {
        let json = serde_json::to_string_pretty(stats)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    handle.disconnect();
    // Let the bye reach the server before the runtime goes away.
    let _ = net::wait_for(&mut events, Duration::from_secs(2), |e| {
        (*e == Event::Stopped).then_some(())
    })
    .await;
    result
}

/// Handles one server message; `Some(result)` ends the run.
fn on_server(
    msg: &ServerMsg,
    mode: &Mode,
    calls: &mut CallMachine,
    media: &mut CallMedia,
    handle: &SignalHandle,
    opts: &Options,
    hangup_at: &mut Option<Instant>,
) -> anyhow::Result<Option<anyhow::Result<()>>> {
    let now = std::time::Instant::now();
    let (event, reply) = calls.on_server(msg, now);
    if let Some(reply) = reply {
        handle.send(reply);
    }
    match event {
        Some(CallEvent::Incoming) => {
            let decline = matches!(mode, Mode::Answer { decline: true });
            let msg = if decline {
                calls.decline()
            } else {
                let key = media.offer_key();
                calls.accept(None, key)
            };
            if let Ok(msg) = msg {
                handle.send(msg);
            }
        }
        Some(CallEvent::Connected) => {
            let (peer, peer_media, key) = match calls.state() {
                CallState::InCall {
                    peer, media, key, ..
                } => (peer.clone(), *media, key.clone()),
                _ => return Ok(None),
            };
            let role = if matches!(mode, Mode::Call(_)) {
                Role::Caller
            } else {
                Role::Callee
            };
            media.start(role, peer_media, key.as_deref().map(|k| k.as_slice()))?;
            match media.sas() {
                Some(sas) => eprintln!("call with {peer} connected, encrypted (code {sas})"),
                None => {
                    eprintln!("call with {peer} connected, NOT encrypted (the peer sent no key)")
                }
            }
            if let Some(after) = opts.hangup_after {
                *hangup_at = Some(Instant::now() + after);
            }
        }
        Some(CallEvent::Ended(outcome)) => {
            let talked = matches!(
                calls.state(),
                CallState::Ended {
                    talked: Some(_),
                    ..
                }
            );
            let ok = match &outcome {
                Outcome::Ended(EndReason::HungUp | EndReason::PeerHungUp) => talked,
                Outcome::Ended(EndReason::Declined) => {
                    matches!(mode, Mode::Answer { decline: true })
                }
                _ => false,
            };
            eprintln!("call ended: {}", outcome.describe());
            return Ok(Some(if ok {
                Ok(())
            } else {
                Err(anyhow!(outcome.describe()))
            }));
        }
        Some(CallEvent::RingingOut) => eprintln!("ringing {}", calls.peer().unwrap_or("")),
        Some(CallEvent::AutoDeclined(_)) | None => {}
    }
    if let ServerMsg::Error { message, .. } = msg {
        if !calls.is_busy() && matches!(mode, Mode::Call(_)) && calls.peer().is_none() {
            bail!("{message}");
        }
    }
    Ok(None)
}
