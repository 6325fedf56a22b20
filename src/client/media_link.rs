//! The one media link of a client: the UDP socket bound for audio (and the address registered
//! for it), a fresh key pair offered with each invite or accept, the key schedule when the
//! call connects, and the media engine started and stopped for the call.
//!
//! Nothing here waits: the engine opens its devices on its own thread and the engine's stop
//! (which joins that thread) runs on a thread of its own. What happens later comes back as a
//! [`LinkEvent`] on a bounded channel, with a `notify` call to wake a window.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fala_proto::media_crypto::SessionKeys;
use fala_proto::media_session::RelayLeg;
use fala_proto::{Candidate, MediaAddr, CANDIDATES_MAX};
use thiserror::Error;
use tokio::sync::mpsc;

use super::model::StartMedia;
use super::net_watch::NetWatch;
use super::options::MediaOptions;
use crate::media::{MediaConfig, MediaEngine, MediaHandle, MediaStats, PathSetup};
use crate::net::{Command, TunnelSlot};

/// How long the media socket waits for the server's STUN answer, in all.
const DISCOVERY_TIME: Duration = Duration::from_millis(1500);
/// When the STUN request is sent again if unanswered (after the first, at once).
const DISCOVERY_RETRIES: [Duration; 2] = [Duration::from_millis(250), Duration::from_millis(750)];

/// Wakes whoever drains the events (a window's `request_repaint`).
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// Events queued at most; a call produces a handful.
const EVENT_QUEUE: usize = 16;

/// Which media address to register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advertise {
    /// The bound port at whatever IP the server sees us at.
    Seen,
    /// The bound port at this IPv4 (the window's "advertised IP").
    Ip(Ipv4Addr),
    /// Exactly this address (port forwarding, a test relay in between).
    Addr(SocketAddrV4),
}

/// What happened to the call's audio since the last look.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// The devices are open and audio flows. `call` counts the calls this link started, so a
    /// late word from an engine already stopped is told apart.
    Ready { call: u64 },
    /// Audio could not start (no device, a bad key, no thread); the call itself goes on.
    Failed { call: u64, message: String },
    /// A recording could not be started.
    RecordingFailed(String),
    /// The engine has stopped; its final statistics.
    Stopped(Box<MediaStats>),
    /// The lookup of our public media address ended: the address, if the server answered.
    AddressFound(Option<SocketAddr>),
}

/// Where the call's audio stands, for the faces to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioState {
    /// No call audio.
    Idle,
    /// This link has no audio engine (a window under test): nothing is sent or played.
    NoEngine,
    /// The engine is opening its devices.
    Opening,
    Running,
    Failed(String),
}

/// Why the link could not do what was asked at once.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LinkError {
    #[error("audio engine not connected")]
    NoEngine,
    #[error("no call to record")]
    NoCall,
    #[error("{0}")]
    Os(String),
}

/// The socket, keys and engine of one client's calls.
pub struct MediaLink {
    socket: UdpSocket,
    advertised: MediaAddr,
    /// `None`: no audio engine (a window under test); calls connect but play nothing.
    options: Option<MediaOptions>,
    running: Option<MediaHandle>,
    state: AudioState,
    /// Calls started so far: the number of the current one.
    call: u64,
    /// The short authentication string of the running call, when encrypted.
    sas: Option<String>,
    events: mpsc::Sender<LinkEvent>,
    notify: Option<Notify>,
    /// Offer our other addresses (host, server-reflexive) to the peer: not when the address
    /// to register was given exactly (port forwarding, a test forwarder in between).
    offer_candidates: bool,
    /// The address the server's STUN port saw the media socket at (our NAT's mapping).
    reflexive: Arc<Mutex<Option<SocketAddr>>>,
    /// A call's engine reads the socket: discovery must not.
    in_call: Arc<AtomicBool>,
    /// Counts our address changes, for a call to leave a direct path at once.
    net_watch: NetWatch,
    /// Media through the signaling connection when UDP is blocked: where it comes down...
    tunnel: TunnelSlot,
    /// ... and the signaling task's queue it goes up by, once attached.
    tunnel_up: Option<mpsc::Sender<Command>>,
    /// The server's STUN port did not answer our media socket: UDP to the server looks
    /// blocked, so calls start on the tunnel.
    udp_blocked: Arc<AtomicBool>,
}

impl MediaLink {
    /// Binds UDP `port` (0 = any) on every interface and works out the address to register.
    /// `options` says how calls sound; `None` runs calls without an audio engine.
    pub fn bind(
        port: u16,
        advertise: Advertise,
        options: Option<MediaOptions>,
        notify: Option<Notify>,
    ) -> std::io::Result<(MediaLink, mpsc::Receiver<LinkEvent>)> {
        let socket = bind_dual_stack(port)?;
        // Shared with discovery and the engine, which both only poll it.
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        let advertised = match advertise {
            Advertise::Seen => MediaAddr::new(Ipv4Addr::UNSPECIFIED, port),
            Advertise::Ip(ip) => MediaAddr::new(ip, port),
            Advertise::Addr(addr) => MediaAddr(addr),
        };
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let link = MediaLink {
            socket,
            advertised,
            options,
            running: None,
            state: AudioState::Idle,
            call: 0,
            sas: None,
            events,
            notify,
            offer_candidates: !matches!(advertise, Advertise::Addr(_)),
            reflexive: Arc::new(Mutex::new(None)),
            in_call: Arc::new(AtomicBool::new(false)),
            net_watch: NetWatch::start(),
            tunnel: TunnelSlot::default(),
            tunnel_up: None,
            udp_blocked: Arc::new(AtomicBool::new(false)),
        };
        Ok((link, rx))
    }

    /// Learns, off this thread, the address our NAT maps the media socket to: a STUN Binding
    /// request to the server's STUN port `stun`, sent again twice if unanswered. Stops
    /// reading as soon as a call's engine starts. [`LinkEvent::AddressFound`] tells the end;
    /// returns whether a lookup started.
    pub fn discover(&self, stun: MediaAddr) -> bool {
        if !self.offer_candidates {
            return false;
        }
        let Ok(socket) = self.socket.try_clone() else {
            return false;
        };
        let (found, in_call) = (self.reflexive.clone(), self.in_call.clone());
        let blocked = self.udp_blocked.clone();
        let report = self.reporter();
        let spawned = std::thread::Builder::new()
            .name("fala-stun".into())
            .spawn(move || {
                let addr = reflexive_address(&socket, SocketAddr::V4(stun.0), &in_call);
                // Unanswered for the whole time (not cut short by a call): UDP is blocked.
                let unanswered = addr.is_none() && !in_call.load(Ordering::Relaxed);
                blocked.store(unanswered, Ordering::Relaxed);
                if let (Some(addr), Ok(mut slot)) = (addr, found.lock()) {
                    tracing::debug!(%addr, "our public media address");
                    *slot = Some(addr);
                }
                report(LinkEvent::AddressFound(addr));
            });
        match spawned {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("cannot look up our public address: {e}");
                false
            }
        }
    }

    /// Our media socket's addresses the peer may try besides the registered one: the
    /// server-reflexive one, every interface's IPv4 address (not loopback), then its IPv6
    /// addresses when the socket takes IPv6 (not loopback or link-local: a link-local address
    /// means nothing without its interface). IPv6 often needs no NAT at all: two homes
    /// whose IPv4 sits behind symmetric NATs may still talk straight over IPv6. None with
    /// "always relay" (the peer must not learn them) or an exact advertised address.
    pub fn candidates(&self) -> Vec<Candidate> {
        let always_relay = self.options.as_ref().is_some_and(|o| o.always_relay);
        let Ok(local) = self.socket.local_addr() else {
            return Vec::new();
        };
        if always_relay || !self.offer_candidates {
            return Vec::new();
        }
        let ipv6 = local.is_ipv6();
        let usable = |ip: &IpAddr| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => {
                ipv6 && !v6.is_unicast_link_local()
                    && !v6.is_multicast()
                    && v6.to_ipv4_mapped().is_none()
            }
        };
        let mut ips: Vec<IpAddr> = crate::net::host_addresses()
            .unwrap_or_default()
            .into_iter()
            .filter(usable)
            .collect();
        // IPv4 first (the common case), each family in interface order.
        ips.sort_by_key(|ip| ip.is_ipv6());
        let mut out: Vec<Candidate> = ips
            .into_iter()
            .map(|ip| Candidate(SocketAddr::new(ip, local.port())))
            .collect();
        if let Some(addr) = self.reflexive.lock().ok().and_then(|r| *r) {
            out.insert(0, Candidate(addr));
        }
        out.dedup();
        out.truncate(CANDIDATES_MAX);
        out
    }

    /// Where the signaling task delivers media that comes down the connection.
    pub fn tunnel_slot(&self) -> TunnelSlot {
        self.tunnel.clone()
    }

    /// The signaling task's queue: calls can send media through the connection.
    pub fn attach_tunnel(&mut self, commands: mpsc::Sender<Command>) {
        self.tunnel_up = Some(commands);
    }

    /// The bound media address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The media address to register with the server.
    pub fn advertised(&self) -> MediaAddr {
        self.advertised
    }

    /// How calls sound (`None` without an engine); changes apply from the next call.
    pub fn options_mut(&mut self) -> Option<&mut MediaOptions> {
        self.options.as_mut()
    }

    /// The call connected: starts the engine towards the peer with the call's agreed keys
    /// (`None`: in clear). Returns at once; [`LinkEvent::Ready`] or [`LinkEvent::Failed`]
    /// follows.
    pub fn start(&mut self, call: &StartMedia, crypto: Option<SessionKeys>) {
        self.stop();
        self.call += 1;
        self.sas = crypto.as_ref().map(|c| c.sas());
        let Some(options) = &self.options else {
            self.state = AudioState::NoEngine;
            return;
        };
        let socket = match self.socket.try_clone() {
            Ok(s) => s,
            Err(e) => return self.fail(format!("cannot use the media socket: {e}")),
        };
        // The relay leg, if offered: everything through it when asked to, else a copy of each
        // report (so the relay can forward a relaying peer's packets to us).
        let relay = call.relay.as_ref().and_then(|r| {
            Some(RelayLeg {
                addr: SocketAddr::V4(r.media.0),
                token: r.token.as_slice().try_into().ok()?,
            })
        });
        self.in_call.store(true, Ordering::Relaxed);
        let config = MediaConfig {
            socket,
            peer: SocketAddr::V4(call.peer.0),
            crypto,
            paths: PathSetup {
                relay,
                always_relay: options.always_relay,
                candidates: call.candidates.iter().map(|c| c.0).collect(),
                controlling: call.outgoing,
                address_changes: Some(self.net_watch.changes()),
                tunnel: self.tunnel_up.clone().map(|up| self.tunnel.open(up)),
                udp_blocked: self.udp_blocked.load(Ordering::Relaxed),
            },
            input: options.input.clone(),
            output: options.output.clone(),
            codec: options.codec,
            jitter: options.jitter,
        };
        let (report, call) = (self.reporter(), self.call);
        let started = MediaEngine::spawn(
            config,
            Box::new(move |ready| {
                report(match ready {
                    Ok(_) => LinkEvent::Ready { call },
                    Err(e) => LinkEvent::Failed {
                        call,
                        message: e.to_string(),
                    },
                })
            }),
        );
        match started {
            Ok(handle) => {
                self.running = Some(handle);
                self.state = AudioState::Opening;
            }
            Err(e) => self.fail(e.to_string()),
        }
    }

    /// Stops the call's audio. The engine is joined on a thread of its own (closing devices
    /// can take a moment); [`LinkEvent::Stopped`] brings its final statistics.
    pub fn stop(&mut self) {
        self.in_call.store(false, Ordering::Relaxed);
        self.sas = None;
        self.state = AudioState::Idle;
        let Some(handle) = self.running.take() else {
            return;
        };
        let report = self.reporter();
        let spawned = std::thread::Builder::new()
            .name("fala-media-stop".into())
            .spawn(move || report(LinkEvent::Stopped(Box::new(handle.stop()))));
        if let Err(e) = spawned {
            tracing::warn!("cannot stop the media engine on a thread of its own: {e}");
        }
    }

    /// Takes in an event from the channel this link feeds, so [`MediaLink::state`] follows it.
    /// A late `Ready` or `Failed` from an engine already stopped is ignored.
    pub fn on_event(&mut self, ev: &LinkEvent) {
        let current = |call: &u64| *call == self.call && self.state == AudioState::Opening;
        match ev {
            LinkEvent::Ready { call } if current(call) => self.state = AudioState::Running,
            LinkEvent::Failed { call, message } if current(call) => {
                self.state = AudioState::Failed(message.clone());
                self.running = None;
            }
            _ => {}
        }
    }

    /// Where the call's audio stands.
    pub fn state(&self) -> &AudioState {
        &self.state
    }

    /// The running engine, for stats, levels and mute.
    pub fn running(&self) -> Option<&MediaHandle> {
        self.running.as_ref()
    }

    /// The code both people can compare to know nobody is in the middle, when encrypted.
    pub fn sas(&self) -> Option<&str> {
        self.sas.as_deref()
    }

    pub fn set_muted(&self, muted: bool) {
        if let Some(call) = &self.running {
            call.set_muted(muted);
        }
    }

    /// Records both directions of the running call to `path`; the file is created off the
    /// caller's thread and a failure comes back as [`LinkEvent::RecordingFailed`].
    pub fn start_recording(&self, path: PathBuf) -> Result<(), LinkError> {
        if self.options.is_none() {
            return Err(LinkError::NoEngine);
        }
        let call = self.running.as_ref().ok_or(LinkError::NoCall)?;
        let report = self.reporter();
        call.record(path, move |done| {
            if let Err(e) = done {
                report(LinkEvent::RecordingFailed(e.to_string()));
            }
        })
        .map_err(|e| LinkError::Os(e.to_string()))
    }

    pub fn stop_recording(&self) {
        if let Some(call) = &self.running {
            call.stop_recording();
        }
    }

    /// A failure known at once goes the same way as one from the media thread.
    fn fail(&mut self, message: String) {
        self.state = AudioState::Failed(message.clone());
        (self.reporter())(LinkEvent::Failed {
            call: self.call,
            message,
        });
    }

    /// Queues an event (dropped if nobody drains them: the queue holds far more than a call
    /// makes) and wakes the face.
    fn reporter(&self) -> impl Fn(LinkEvent) + Send + 'static {
        let (events, notify) = (self.events.clone(), self.notify.clone());
        move |ev| {
            if events.try_send(ev).is_err() {
                tracing::debug!("media event dropped: nobody is listening");
            }
            if let Some(notify) = &notify {
                notify();
            }
        }
    }
}

/// Binds UDP `port` on every interface, IPv6 and IPv4 alike (one dual-stack socket, so a call
/// can take an IPv6 path); IPv4 alone where the host has no IPv6.
fn bind_dual_stack(port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let dual = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).and_then(|s| {
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
        Ok(s)
    });
    match dual {
        Ok(socket) => Ok(socket.into()),
        Err(e) => {
            tracing::debug!("no dual-stack media socket ({e}); IPv4 only");
            UdpSocket::bind(("0.0.0.0", port))
        }
    }
}

/// Sends STUN Binding requests from `socket` to `server` until one is answered (or
/// [`DISCOVERY_TIME`] passes, or a call starts); the mapped address in the answer.
fn reflexive_address(
    socket: &UdpSocket,
    server: SocketAddr,
    in_call: &AtomicBool,
) -> Option<SocketAddr> {
    use fala_proto::stun;
    let mut id = [0u8; 12];
    getrandom::fill(&mut id).ok()?;
    let mut request = [0u8; stun::MAX_RESPONSE_LEN];
    let len = stun::binding_request(id, &mut request);
    let start = Instant::now();
    let mut retries = DISCOVERY_RETRIES.iter().peekable();
    let _ = socket.send_to(&request[..len], server);
    let mut buf = [0u8; 512];
    while start.elapsed() < DISCOVERY_TIME && !in_call.load(Ordering::Relaxed) {
        if retries.next_if(|t| start.elapsed() >= **t).is_some() {
            let _ = socket.send_to(&request[..len], server);
        }
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if crate::media::rx_time::canonical(from) == server => {
                if let Ok(addr) = stun::binding_response_address(&buf[..n], id) {
                    return Some(addr);
                }
            }
            // Anything else before a call is nobody's (a late packet of the last call).
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

impl Drop for MediaLink {
    /// A link dropped mid-call (the window signed out) still stops its engine off this thread.
    fn drop(&mut self) {
        self.stop();
    }
}
