//! The echo service: a user named `echo`, hosted by the server, that accepts every call and
//! sends the caller's own audio back after a delay, so a lone user can hear how they sound.
//!
//! It is a real media peer: it takes part in the key exchange, decrypts each RTP packet from
//! the caller, re-stamps it with its own SSRC and encrypts it again towards the caller. It
//! answers each of the caller's reports at once with a receiver report of its own, because a
//! client sends no audio before something authentic came back from its peer (consent, see
//! `fala_proto::media_session`).
//!
//! Its socket is the server's UDP port, which also answers STUN Binding requests (clients
//! learn the public address their packets come from); that runs whether the echo user is
//! hosted or not.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fala_proto::call_keys::{CalleeKeys, SignedKey};
use fala_proto::identity::Identity;
use fala_proto::media_crypto::{SessionKeys, RTCP_OVERHEAD, TAG_LEN};
use fala_proto::rtcp;
use fala_proto::rtp::{self, SeqExtender};
use fala_proto::stun;
use fala_proto::{CallId, MediaAddr};
use tokio::net::UdpSocket;

use crate::relay::{self, LegAddr, Relay};
use tokio::time::{sleep_until, Instant};

/// Settings of the echo user.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// How long the caller's audio is held before it comes back (0 allowed).
    pub delay: Duration,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            delay: Duration::from_secs(1),
        }
    }
}

/// The name the echo user is registered under.
pub const ECHO_NAME: &str = "echo";

/// Packets held for delayed sending across all echo calls; past that new ones are dropped.
const MAX_QUEUED: usize = 20_000;

/// One echo call: who may send to us and how to answer.
struct EchoCall {
    peer: SocketAddr,
    /// The caller committed to a key: media is encrypted or not echoed at all.
    encrypted: bool,
    /// Our half of the key agreement, until the caller reveals its key.
    agreeing: Option<CalleeKeys>,
    keys: Option<SessionKeys>,
    /// Our own SSRC for the returned stream.
    ssrc: u32,
    /// The caller's SSRC, latched from its first packet.
    peer_ssrc: Option<u32>,
    seq: SeqExtender,
    /// SRTCP index of the last report we sent.
    rtcp_index: u32,
}

/// Shared between the hub (calls start and end) and the media task.
#[derive(Default)]
struct Calls {
    by_peer: HashMap<SocketAddr, CallId>,
    calls: HashMap<CallId, EchoCall>,
}

/// The hub's handle on the echo service.
#[derive(Clone)]
pub(crate) struct EchoHandle {
    calls: Arc<Mutex<Calls>>,
    pub port: u16,
    /// The echo's identity: signs its media keys.
    identity: Arc<Identity>,
}

impl EchoHandle {
    /// The echo's public identity key.
    pub fn identity(&self) -> [u8; fala_proto::identity::IDENTITY_LEN] {
        self.identity.public()
    }

    /// Starts echoing for a call (in clear until keys are agreed); returns the echo's signed
    /// media key when the caller committed to one.
    pub fn start(
        &self,
        call_id: CallId,
        peer: MediaAddr,
        commit: Option<&[u8]>,
    ) -> Option<SignedKey> {
        let agreeing = match commit.map(CalleeKeys::generate) {
            Some(Ok(keys)) => Some(keys),
            Some(Err(e)) => {
                tracing::debug!(%call_id, "echo: no key agreement: {e}");
                None
            }
            None => None,
        };
        let answer = agreeing.as_ref().map(|k| k.answer(&self.identity, call_id));
        let mut ssrc = [0u8; 4];
        let _ = getrandom::fill(&mut ssrc);
        let peer = SocketAddr::V4(peer.0);
        let mut calls = lock(&self.calls);
        calls.by_peer.insert(peer, call_id);
        calls.calls.insert(
            call_id,
            EchoCall {
                peer,
                encrypted: commit.is_some(),
                agreeing,
                keys: None,
                ssrc: u32::from_be_bytes(ssrc),
                peer_ssrc: None,
                seq: SeqExtender::default(),
                rtcp_index: 0,
            },
        );
        answer
    }

    /// The caller revealed its key: checks it and encrypts from now on. A bad reveal leaves
    /// the call without keys, so the echo neither decrypts nor sends anything.
    pub fn reveal(&self, call_id: CallId, caller_identity: &[u8], caller: (&[u8], &[u8])) {
        let me = self.identity.public();
        let mut calls = lock(&self.calls);
        let Some(call) = calls.calls.get_mut(&call_id) else {
            return;
        };
        let Some(agreeing) = call.agreeing.take() else {
            return;
        };
        match agreeing.complete(&me, call_id, caller_identity, caller) {
            Ok(keys) => call.keys = Some(keys),
            Err(e) => tracing::debug!(%call_id, "echo: caller's key refused: {e}"),
        }
    }

    /// Stops echoing for a call.
    pub fn end(&self, call_id: CallId) {
        let mut calls = lock(&self.calls);
        if let Some(call) = calls.calls.remove(&call_id) {
            if calls.by_peer.get(&call.peer) == Some(&call_id) {
                calls.by_peer.remove(&call.peer);
            }
        }
    }
}

fn lock(calls: &Mutex<Calls>) -> std::sync::MutexGuard<'_, Calls> {
    calls.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kernel receive buffer asked for the UDP port. One task serves every relayed call: while
/// it is not scheduled (a busy machine), the kernel must hold what arrives; the default
/// (about 200 KB, some 300 small datagrams) overflows in a few ms at 1 000 relayed calls.
/// The kernel caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;
const UDP_SEND_BUFFER: usize = 1 << 20;

/// Binds the server's UDP socket (echo, STUN, relay): the TCP port number if it is free,
/// else any port, with room in the kernel for bursts.
pub(crate) async fn bind(ip: Ipv4Addr, preferred_port: u16) -> std::io::Result<UdpSocket> {
    let socket = match bind_with_buffers(SocketAddr::from((ip, preferred_port))) {
        Ok(s) => s,
        Err(_) => bind_with_buffers(SocketAddr::from((ip, 0)))?,
    };
    UdpSocket::from_std(socket)
}

fn bind_with_buffers(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops sooner under load.
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!("UDP receive buffer left at its default: {e}");
    }
    let _ = socket.set_send_buffer_size(UDP_SEND_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    tracing::debug!(
        receive = socket.recv_buffer_size().unwrap_or(0),
        "UDP port's kernel receive buffer"
    );
    Ok(socket.into())
}

/// Starts the media task; it runs until the returned handle's socket task is aborted.
pub(crate) fn spawn(
    socket: UdpSocket,
    config: EchoConfig,
    identity: Arc<Identity>,
    relay: Relay,
) -> std::io::Result<(EchoHandle, tokio::task::JoinHandle<()>)> {
    let port = socket.local_addr()?.port();
    let calls = Arc::new(Mutex::new(Calls::default()));
    let handle = EchoHandle {
        calls: calls.clone(),
        port,
        identity,
    };
    let task = tokio::spawn(serve(socket, calls, config.delay, relay));
    Ok((handle, task))
}

/// Most STUN answers sent in one second: enough for every client of a big server to learn
/// its address, and a bound on what a spoofed flood can bounce off this port.
const STUN_ANSWERS_PER_SECOND: u32 = 10_000;

/// Answers STUN Binding requests (RFC 8489) on the server's UDP port, up to a budget per second.
struct StunResponder {
    window: Instant,
    answered: u32,
    out: [u8; stun::MAX_RESPONSE_LEN],
}

impl StunResponder {
    fn new() -> Self {
        StunResponder {
            window: Instant::now(),
            answered: 0,
            out: [0; stun::MAX_RESPONSE_LEN],
        }
    }

    /// The answer to a datagram from `from`, if it is a Binding request within the budget.
    fn answer(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) -> Option<&[u8]> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.answered = 0;
        }
        if self.answered >= STUN_ANSWERS_PER_SECOND {
            return None;
        }
        let n = stun::answer_binding(datagram, from, &mut self.out).ok()?;
        self.answered += 1;
        Some(&self.out[..n])
    }
}

/// Receives, transforms and queues packets; sends each when its delay is over. STUN requests
/// are answered, and relayed datagrams forwarded, at once.
async fn serve(socket: UdpSocket, calls: Arc<Mutex<Calls>>, delay: Duration, relay: Relay) {
    let mut queue: VecDeque<(Instant, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 2048];
    let mut stun_responder = StunResponder::new();
    loop {
        let next_due = queue.front().map(|(due, _, _)| *due);
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_err() {
                    continue;
                }
                // Everything waiting, without going back to the runtime between datagrams:
                // at a thousand relayed calls that round trip costs more than the work.
                for _ in 0..DRAIN_AT_MOST {
                    let (len, from) = match socket.try_recv_from(&mut buf) {
                        Ok(got) => got,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => continue,
                    };
                    let datagram = &buf[..len];
                    if relay::is_relayed(datagram) {
                        let now = std::time::Instant::now();
                        if let Some(to) = relay.route(datagram, LegAddr::Udp(from), now) {
                            send_now(&socket, &datagram[relay::TOKEN_LEN..], to).await;
                        }
                        continue;
                    }
                    if stun::is_stun(datagram) {
                        if let Some(answer) = stun_responder.answer(datagram, from, Instant::now()) {
                            send_now(&socket, answer, from).await;
                        }
                        continue;
                    }
                    if queue.len() >= MAX_QUEUED {
                        continue;
                    }
                    match echo_packet(&calls, datagram, from) {
                        Some(Reply::Now(packet)) => send_now(&socket, &packet, from).await,
                        Some(Reply::Later(packet)) => {
                            queue.push_back((Instant::now() + delay, from, packet));
                        }
                        None => {}
                    }
                }
            }
            _ = async { sleep_until(next_due.unwrap_or_else(Instant::now)).await }, if next_due.is_some() => {
                while queue.front().is_some_and(|(due, _, _)| *due <= Instant::now()) {
                    if let Some((_, to, packet)) = queue.pop_front() {
                        let _ = socket.send_to(&packet, to).await;
                    }
                }
            }
        }
    }
}

/// Datagrams handled per wake-up at most, so the echo's delayed packets still go out on time
/// under a flood.
const DRAIN_AT_MOST: usize = 256;

/// Sends at once when the kernel has room (nearly always), else waits for it.
async fn send_now(socket: &UdpSocket, datagram: &[u8], to: SocketAddr) {
    match socket.try_send_to(datagram, to) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let _ = socket.send_to(datagram, to).await;
        }
        _ => {}
    }
}

/// What goes back for one datagram.
enum Reply {
    /// A report answering the caller's: at once (it grants consent).
    Now(Vec<u8>),
    /// The caller's audio: after the echo's delay.
    Later(Vec<u8>),
}

/// Turns one datagram from a caller into what to send back, or drops it (unknown sender,
/// unparsable, wrong SSRC, failed authentication).
fn echo_packet(calls: &Mutex<Calls>, datagram: &[u8], from: SocketAddr) -> Option<Reply> {
    let mut calls = lock(calls);
    let call_id = *calls.by_peer.get(&from)?;
    let call = calls.calls.get_mut(&call_id)?;
    if call.encrypted && call.keys.is_none() {
        // Keys not agreed yet (or refused): nothing goes back in clear.
        return None;
    }
    if rtp::is_rtcp(datagram) {
        return answer_report(call, datagram).map(Reply::Now);
    }
    echo_audio(call, datagram).map(Reply::Later)
}

/// Answers an authentic report from the caller with an empty receiver report of our own.
fn answer_report(call: &mut EchoCall, datagram: &[u8]) -> Option<Vec<u8>> {
    let mut buf = datagram.to_vec();
    let mut len = buf.len();
    if let Some(keys) = &call.keys {
        len = keys.decrypt_rtcp(&mut buf, len).ok()?;
    }
    let report = rtcp::parse(&buf[..len]).ok()?;
    if *call.peer_ssrc.get_or_insert(report.ssrc) != report.ssrc {
        return None;
    }
    let answer = rtcp::Report {
        ssrc: call.ssrc,
        sender: None,
        block: None,
    };
    let mut out = vec![0u8; rtcp::MAX_REPORT_LEN + RTCP_OVERHEAD];
    let mut len = answer.write(&mut out).ok()?;
    if let Some(keys) = &call.keys {
        call.rtcp_index = call.rtcp_index.wrapping_add(1);
        len = keys.encrypt_rtcp(&mut out, len, call.rtcp_index).ok()?;
    }
    out.truncate(len);
    Some(out)
}

/// The caller's RTP packet, decrypted, re-stamped with our SSRC and encrypted again.
fn echo_audio(call: &mut EchoCall, datagram: &[u8]) -> Option<Vec<u8>> {
    let packet = rtp::parse(datagram).ok()?;
    if *call.peer_ssrc.get_or_insert(packet.header.ssrc) != packet.header.ssrc {
        return None;
    }
    let header_len = packet.header_len;
    let ext = call.seq.extend(packet.header.sequence);
    let mut out = Vec::with_capacity(datagram.len() + TAG_LEN);
    out.extend_from_slice(datagram);
    let mut len = out.len();
    if let Some(keys) = &call.keys {
        len = keys.decrypt_rtp(&mut out, len, header_len, ext).ok()?;
    }
    out[8..12].copy_from_slice(&call.ssrc.to_be_bytes());
    if let Some(keys) = &call.keys {
        out.resize(len + TAG_LEN, 0);
        len = keys.encrypt_rtp(&mut out, len, header_len, ext).ok()?;
    }
    out.truncate(len);
    Some(out)
}
