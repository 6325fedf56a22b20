//! The echo service: a user named `echo`, hosted by the server, that accepts every call and
//! sends the caller's own audio back after a delay, so a lone user can hear how they sound.
//!
//! It is a real media peer: it takes part in the key exchange, decrypts each RTP packet from
//! the caller, re-stamps it with its own SSRC and encrypts it again towards the caller.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fala_proto::media_crypto::{KeyPair, Role, SessionKeys, TAG_LEN};
use fala_proto::rtp::{self, SeqExtender};
use fala_proto::{CallId, MediaAddr};
use serde_bytes::ByteBuf;
use tokio::net::UdpSocket;
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
    keys: Option<SessionKeys>,
    /// Our own SSRC for the returned stream.
    ssrc: u32,
    /// The caller's SSRC, latched from its first packet.
    peer_ssrc: Option<u32>,
    seq: SeqExtender,
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
}

impl EchoHandle {
    /// Starts echoing for a call; returns the echo's public key when the caller sent one.
    pub fn start(
        &self,
        call_id: CallId,
        peer: MediaAddr,
        peer_key: Option<&[u8]>,
    ) -> Option<ByteBuf> {
        let (keys, public) = match peer_key.map(|k| (KeyPair::generate(), k)) {
            Some((Ok(pair), k)) => {
                let public = ByteBuf::from(pair.public_bytes().to_vec());
                match pair.derive(Role::Callee, k) {
                    Ok(keys) => (Some(keys), Some(public)),
                    Err(e) => {
                        tracing::debug!(%call_id, "echo: unusable caller key: {e}");
                        (None, None)
                    }
                }
            }
            _ => (None, None),
        };
        let mut ssrc = [0u8; 4];
        let _ = getrandom::fill(&mut ssrc);
        let peer = SocketAddr::V4(peer.0);
        let mut calls = lock(&self.calls);
        calls.by_peer.insert(peer, call_id);
        calls.calls.insert(
            call_id,
            EchoCall {
                peer,
                keys,
                ssrc: u32::from_be_bytes(ssrc),
                peer_ssrc: None,
                seq: SeqExtender::default(),
            },
        );
        public
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

/// Binds the echo's UDP socket: the TCP port number if it is free, else any port.
pub(crate) async fn bind(ip: Ipv4Addr, preferred_port: u16) -> std::io::Result<UdpSocket> {
    match UdpSocket::bind((ip, preferred_port)).await {
        Ok(s) => Ok(s),
        Err(_) => UdpSocket::bind((ip, 0)).await,
    }
}

/// Starts the media task; it runs until the returned handle's socket task is aborted.
pub(crate) fn spawn(
    socket: UdpSocket,
    config: EchoConfig,
) -> std::io::Result<(EchoHandle, tokio::task::JoinHandle<()>)> {
    let port = socket.local_addr()?.port();
    let calls = Arc::new(Mutex::new(Calls::default()));
    let handle = EchoHandle {
        calls: calls.clone(),
        port,
    };
    let task = tokio::spawn(serve(socket, calls, config.delay));
    Ok((handle, task))
}

/// Receives, transforms and queues packets; sends each when its delay is over.
async fn serve(socket: UdpSocket, calls: Arc<Mutex<Calls>>, delay: Duration) {
    let mut queue: VecDeque<(Instant, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let next_due = queue.front().map(|(due, _, _)| *due);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((len, from)) = received else { continue };
                if queue.len() >= MAX_QUEUED {
                    continue;
                }
                if let Some(packet) = echo_packet(&calls, &buf[..len], from) {
                    queue.push_back((Instant::now() + delay, from, packet));
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

/// Turns one datagram from a caller into the packet to send back, or drops it (unknown
/// sender, RTCP, unparsable, wrong SSRC, failed authentication).
fn echo_packet(calls: &Mutex<Calls>, datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if rtp::is_rtcp(datagram) {
        return None;
    }
    let packet = rtp::parse(datagram).ok()?;
    let mut calls = lock(calls);
    let call_id = *calls.by_peer.get(&from)?;
    let call = calls.calls.get_mut(&call_id)?;
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
