//! The call core as every face drives it: the [`Model`], the signaling task's handle and the
//! [`MediaLink`], with the model's own effects (send to the server, start and stop audio)
//! carried out here once. A face feeds it signaling and media events and the user's actions,
//! and shows what it returns: the window paints, `fala term` prints, `fala call/answer` act
//! and exit.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fala_proto::call::CallError;
use fala_proto::identity::Identity;
use fala_proto::name::validate_name;
use fala_proto::ClientMsg;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use super::audio_watch::AudioWatch;
use super::call_crypto::CallCrypto;
use super::media_link::{Advertise, LinkEvent, MediaLink, Notify};
use super::model::{ConnectProblem, Effect, Model, Notice};
use super::options::MediaOptions;
use crate::net::{self, Event, Security, SignalConfig, SignalHandle};

/// Who to be, where, and how to be reached for audio.
#[derive(Clone)]
pub struct ConnectRequest {
    /// `host:port` of fala-server.
    pub server: String,
    /// TLS (pinning the server's certificate on first use) or plain TCP.
    pub security: Security,
    pub name: String,
    /// Who we are: proves the name and signs each call's media key.
    pub identity: Arc<Identity>,
    /// UDP port to receive audio on (0 = any free port).
    pub media_port: u16,
    pub advertise: Advertise,
    /// The server is on this machine: if nobody answers, the window offers to start one.
    pub server_is_local: bool,
    /// Called after every signaling or media event is queued (a window's `request_repaint`).
    pub notify: Option<Notify>,
}

/// What a connected phone reports, for its face to drain: signaling events (feed them to
/// [`Phone::on_signal`]) and media events (feed them to [`Phone::on_media`]).
pub struct PhoneEvents {
    pub signal: mpsc::Receiver<Event>,
    pub media: mpsc::Receiver<LinkEvent>,
}

/// The model, its connection to the server and its media link.
pub struct Phone {
    model: Model,
    /// How calls sound; `None` runs calls without an audio engine (a window under test).
    options: Option<MediaOptions>,
    signal: Option<SignalHandle>,
    media: Option<MediaLink>,
    /// Our identity and the current call's key agreement, once connected.
    crypto: Option<CallCrypto>,
    /// The media socket is learning its public address.
    discovering: bool,
    /// Says when nothing arrives from the peer.
    audio_watch: AudioWatch,
}

/// Whether calls in clear go on: when allowed, or when we do not encrypt ourselves.
fn allows_clear(options: &MediaOptions) -> bool {
    options.allow_unencrypted || !options.encrypt
}

impl Phone {
    /// A phone that follows presence when `presence` is set (the window's list), with calls
    /// that sound as `options` say (no audio engine when `None`).
    pub fn new(presence: bool, options: Option<MediaOptions>) -> Phone {
        let mut model = Model::new(presence);
        model.allow_unencrypted = options.as_ref().is_some_and(allows_clear);
        Phone {
            model,
            options,
            signal: None,
            media: None,
            discovering: false,
            audio_watch: AudioWatch::default(),
            crypto: None,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// For what only the face decides (dismissing the last call's outcome).
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// The media link, once connected.
    pub fn media(&self) -> Option<&MediaLink> {
        self.media.as_ref()
    }

    /// How the next calls sound (the window's settings change it between calls).
    pub fn set_media_options(&mut self, options: MediaOptions) {
        if self.options.is_none() {
            return;
        }
        if let Some(link) = self.media.as_mut().and_then(MediaLink::options_mut) {
            *link = options.clone();
        }
        self.model.allow_unencrypted = allows_clear(&options);
        self.options = Some(options);
    }

    /// Checks the name, binds the media socket and starts the signaling task on the current
    /// tokio runtime. A local problem is kept in the model and returned.
    pub fn connect(&mut self, req: ConnectRequest) -> Result<PhoneEvents, ConnectProblem> {
        let checked = validate_name(&req.name)
            .map_err(|e| ConnectProblem::NameInvalid(e.to_string()))
            .and_then(|name| {
                let bound = MediaLink::bind(
                    req.media_port,
                    req.advertise,
                    self.options.clone(),
                    req.notify.clone(),
                )
                .map_err(|e| {
                    ConnectProblem::MediaPort(format!(
                        "cannot bind UDP port {}: {e}",
                        req.media_port
                    ))
                })?;
                Ok((name, bound))
            });
        let (name, (mut media, media_events)) = match checked {
            Ok(ok) => ok,
            Err(problem) => {
                self.model.refuse_locally(problem.clone());
                return Err(problem);
            }
        };
        let (handle, signal_events) = net::spawn(SignalConfig {
            server: req.server.clone(),
            security: req.security,
            name: name.clone(),
            identity: req.identity.clone(),
            media: media.advertised(),
            notify: req.notify,
            tunnel: media.tunnel_slot(),
        });
        media.attach_tunnel(handle.sender().clone());
        self.model
            .connecting(&req.server, &name, req.server_is_local);
        self.signal = Some(handle);
        self.media = Some(media);
        self.crypto = Some(CallCrypto::new(req.identity));
        Ok(PhoneEvents {
            signal: signal_events,
            media: media_events,
        })
    }

    /// One signaling event. The model moves, the core carries out its own effects, and every
    /// effect is returned so the face can show it. After [`Event::Stopped`] the phone is
    /// offline: the signaling handle and the media link (and any call audio) are gone.
    pub fn on_signal(&mut self, ev: Event, now: Instant, wall: SystemTime) -> Vec<Effect> {
        let stopped = ev == Event::Stopped;
        if let (
            Event::Registered {
                stun: Some(stun), ..
            },
            Some(media),
        ) = (&ev, &self.media)
        {
            self.discovering = media.discover(*stun);
        }
        let fx = self.model.on_event(ev, now, wall);
        let fx = self.run(fx);
        if stopped {
            self.signal = None;
            self.media = None;
        }
        fx
    }

    /// A line to tell the person when the running call just went silent (nothing from the
    /// peer for a few seconds) or came back; call it a few times a second.
    pub fn audio_notice(&mut self) -> Option<String> {
        let stats = self.media.as_ref()?.running()?.stats();
        let notice = self.audio_watch.check(&stats)?;
        let peer = self.model.calls.peer().unwrap_or("the other side");
        Some(notice.describe(peer))
    }

    /// Whether the media socket is still learning its public address (a call placed now
    /// would offer the peer one address less).
    pub fn discovering(&self) -> bool {
        self.discovering
    }

    /// One media event (the face shows it too).
    pub fn on_media(&mut self, ev: &LinkEvent) {
        if let LinkEvent::AddressFound(_) = ev {
            self.discovering = false;
        }
        if let Some(media) = &mut self.media {
            media.on_event(ev);
        }
    }

    /// Media is encrypted unless the options turn it off (packet captures).
    fn encrypt(&self) -> bool {
        self.options.as_ref().is_none_or(|o| o.encrypt)
    }

    /// Our media socket's other addresses, for the peer to check, and whether the peer is to
    /// see the relay instead of them ("always relay").
    fn candidates(&self) -> (Vec<fala_proto::Candidate>, bool) {
        let hide = self.options.as_ref().is_some_and(|o| o.always_relay);
        let candidates = self
            .media
            .as_ref()
            .map(|m| m.candidates())
            .unwrap_or_default();
        (candidates, hide)
    }

    /// Starts calling `peer`, committing to a fresh media key.
    pub fn dial(
        &mut self,
        peer: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Vec<Effect>, CallError> {
        let encrypt = self.encrypt();
        let commitment = self
            .crypto
            .as_mut()
            .and_then(|c| c.offer_commitment(encrypt));
        let candidates = self.candidates();
        let fx = self.model.dial(peer, (commitment, candidates), now, wall)?;
        Ok(self.run(fx))
    }

    /// Accepts the ringing call, answering with a fresh signed media key. A call whose key
    /// agreement cannot even start is declined instead, and the user told why.
    pub fn accept(&mut self) -> Result<Vec<Effect>, CallError> {
        let encrypt = self.encrypt();
        let answer = match (self.model.ringing_commitment(), self.crypto.as_mut()) {
            (Some((call_id, commitment)), Some(crypto)) => {
                crypto.answer(encrypt, call_id, commitment.as_deref())
            }
            _ => Ok(None),
        };
        match answer {
            Ok(answer) => {
                let candidates = self.candidates();
                let fx = self.model.accept(answer, candidates)?;
                Ok(self.run(fx))
            }
            Err(why) => {
                let fx = self.model.decline()?;
                self.model.notice = Some(Notice::Security(why));
                Ok(self.run(fx))
            }
        }
    }

    pub fn decline(&mut self) -> Result<Vec<Effect>, CallError> {
        let fx = self.model.decline()?;
        Ok(self.run(fx))
    }

    /// Hang up, cancel or decline, whichever fits the call's state.
    pub fn hangup(&mut self, now: Instant) -> Result<Vec<Effect>, CallError> {
        let fx = self.model.hangup(now)?;
        Ok(self.run(fx))
    }

    pub fn lookup(&mut self, name: &str) -> Vec<Effect> {
        let fx = self.model.lookup(name);
        self.run(fx)
    }

    /// Refuses `name`'s calls (a ringing one from them is declined).
    pub fn block(&mut self, name: &str) -> Vec<Effect> {
        let fx = self.model.block(name);
        self.run(fx)
    }

    /// Takes `name`'s calls again.
    pub fn unblock(&mut self, name: &str) -> Vec<Effect> {
        let fx = self.model.unblock(name);
        self.run(fx)
    }

    /// "Find people" typed `query`.
    pub fn search(&mut self, query: &str) -> Vec<Effect> {
        let fx = self.model.search(query);
        self.run(fx)
    }

    /// The next page of search results.
    pub fn search_more(&mut self) -> Vec<Effect> {
        let fx = self.model.search_more();
        self.run(fx)
    }

    /// Asks stale search results again (a frame is being drawn anyway).
    pub fn refresh_directory(&mut self, now: Instant) -> Vec<Effect> {
        let fx = self.model.refresh_directory(now);
        self.run(fx)
    }

    /// Adds `name` to the contact list and follows their presence.
    pub fn add_contact(&mut self, name: &str) -> Vec<Effect> {
        self.model.contacts.add(name);
        let fx = self.model.contacts_changed();
        self.run(fx)
    }

    /// Takes `name` off the contact list (their pinned key stays) and stops following them.
    pub fn remove_contact(&mut self, name: &str) -> Vec<Effect> {
        self.model.contacts.remove(name);
        let fx = self.model.contacts_changed();
        self.run(fx)
    }

    /// Unregisters, unless a call is up (the model then says to hang up first).
    pub fn disconnect(&mut self) -> Vec<Effect> {
        let fx = self.model.disconnect();
        self.run(fx)
    }

    /// Says goodbye to the server whatever the model's state (the window is closing).
    pub fn leave(&self) {
        if let Some(signal) = &self.signal {
            signal.disconnect();
        }
    }

    pub fn set_muted(&mut self, muted: bool) {
        self.model.muted = muted;
        if let Some(media) = &self.media {
            media.set_muted(muted);
        }
    }

    /// Stops the call's audio now, whatever the model's state (a face that is exiting).
    pub fn stop_audio(&mut self) {
        if let Some(media) = &mut self.media {
            media.stop();
        }
    }

    /// Records the running call to `path` (created off this thread).
    pub fn start_recording(
        &self,
        path: std::path::PathBuf,
    ) -> Result<(), super::media_link::LinkError> {
        self.media
            .as_ref()
            .ok_or(super::media_link::LinkError::NoCall)?
            .start_recording(path)
    }

    pub fn stop_recording(&self) {
        if let Some(media) = &self.media {
            media.stop_recording();
        }
    }

    /// Carries out the effects that belong to the core; returns them all for the face.
    fn run(&mut self, mut fx: Vec<Effect>) -> Vec<Effect> {
        let mut refused = None;
        for effect in &fx {
            match effect {
                Effect::Send(msg) => self.send(msg.clone()),
                Effect::Disconnect => self.leave(),
                Effect::StartMedia(call) => {
                    let allow_clear = self.model.allow_unencrypted;
                    let agreed = match self.crypto.as_mut() {
                        Some(crypto) => crypto.complete(call, allow_clear),
                        None => Err("not connected".to_string()),
                    };
                    match agreed {
                        Ok(agreed) => {
                            if let Some(reveal) = agreed.reveal {
                                self.send(ClientMsg::Reveal {
                                    call_id: call.call_id,
                                    key: ByteBuf::from(reveal.key.to_vec()),
                                    signature: ByteBuf::from(reveal.signature.to_vec()),
                                });
                            }
                            if let Some(media) = &mut self.media {
                                self.audio_watch.reset();
                                media.start(call, agreed.keys);
                                media.set_muted(self.model.muted);
                            }
                        }
                        Err(reason) => refused = Some(reason),
                    }
                }
                Effect::StopMedia => self.stop_audio(),
                _ => {}
            }
        }
        if let Some(reason) = refused {
            // Not private: the call ends here, and the person is told why.
            tracing::warn!("{reason}");
            let mut more = Vec::new();
            self.model.refuse_call(reason, Instant::now(), &mut more);
            let more = self.run(more);
            fx.extend(more);
        }
        fx
    }

    fn send(&self, msg: ClientMsg) {
        let sent = self.signal.as_ref().is_some_and(|s| s.send(msg));
        if !sent {
            tracing::warn!("signaling queue full or closed; message dropped");
        }
    }
}
