//! One client connection: read frames, check limits, apply each message to the hub, write
//! whatever the hub queued for this connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fala_proto::identity::{verify_register, IdentityError, CHALLENGE_LEN, IDENTITY_LEN};
use fala_proto::{
    decode_body, encode_frame, split_frame, ClientMsg, ErrorCode, FrameError, ServerMsg,
    CANDIDATES_MAX, CLIENT_MSG_TYPES, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use crate::calls::InviteOutcome;
use crate::hub::{ConnId, Hub};
use crate::limits::{ConnLimiter, TokenBucket, Verdict};
use crate::per_ip::Slot;

/// Starting size of a connection's read buffer; signaling frames are small, and idle clients
/// should cost little memory.
const READ_BUF_START: usize = 256;

/// What a handled message means for the connection.
enum Next {
    Continue,
    /// Flush what is queued, then close.
    Close,
}

/// Runs one connection to its end, then frees everything it held.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    hub: Arc<Hub>,
    stream: S,
    (conn, ip_slot, hello_by): (ConnId, Slot, Instant),
    rx: mpsc::Receiver<Bytes>,
) {
    let mut session = Session {
        hub: hub.clone(),
        conn,
        hello_done: false,
        challenge: new_challenge(),
        limiter: ConnLimiter::new(&hub.config.limits, std_now()),
        ip_slot,
        path_lost: false,
        tunnel: None,
        media_budget: TokenBucket::new(MEDIA_BURST, MEDIA_PER_SECOND, std_now()),
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut rx = rx;
    let result = session.run(&mut rd, &mut wr, &mut rx, hello_by).await;
    if let Err(e) = result {
        tracing::debug!(conn, "connection error: {e}");
    }
    // A client lost without a word mid-call gets time to come back from its new network.
    let grace = hub.config.timeouts.resume;
    let hold = session.path_lost && !grace.is_zero();
    let held = hub.lock().disconnect(conn, hold);
    if let Some((key, since)) = held {
        let hub = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            hub.lock().resume_expired(&key, since);
        });
    }
    // Deliver what was queued before the end (a final error or shutdown notice), briefly.
    let _ = timeout(Duration::from_secs(1), async {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    })
    .await;
    // Closing a socket with unread input makes the kernel send a reset, which can destroy the
    // final error before the client reads it; read and discard the rest first (a lingering
    // close), bounded in time and bytes.
    let _ = timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 1024];
        let mut left = 1 << 20;
        while left > 0 {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
}

/// A fresh registration challenge from the OS random generator.
fn new_challenge() -> [u8; CHALLENGE_LEN] {
    let mut challenge = [0u8; CHALLENGE_LEN];
    // The OS generator failing is not something a server can work around.
    getrandom::fill(&mut challenge).expect("OS random generator");
    challenge
}

fn std_now() -> std::time::Instant {
    Instant::now().into_std()
}

struct Session {
    hub: Arc<Hub>,
    conn: ConnId,
    hello_done: bool,
    /// What this connection's `register` must sign (sent in `welcome`).
    challenge: [u8; CHALLENGE_LEN],
    limiter: ConnLimiter,
    /// This connection's place among its address's connections, and their shared invites.
    ip_slot: Slot,
    /// The connection died under the client (a reset, a read or write that failed or timed
    /// out, silence), rather than being closed by it or by us: a network change, maybe, so
    /// its call is held for it to come back. A client that closes cleanly (quit, crashed:
    /// the kernel closes for it) or says `bye` left, and its peer is told at once.
    path_lost: bool,
    /// Once a `media` message came: the relay (kept, not looked up under the hub's lock for
    /// every datagram) and this connection's outgoing queue, for the relay to send media down
    /// (weakly: it must not keep the queue open).
    tunnel: Option<(crate::relay::Relay, mpsc::WeakSender<Bytes>)>,
    /// `media` messages taken; beyond, they are dropped without a word (a lost datagram).
    media_budget: TokenBucket,
}

/// `media` messages one connection may send at once, and per second: a call's 50 packets
/// and its reports and checks, with room to spare; the relay leg's byte rate applies too.
const MEDIA_BURST: u32 = 100;
const MEDIA_PER_SECOND: f64 = 150.0;

impl Session {
    async fn run(
        &mut self,
        rd: &mut (impl AsyncRead + Unpin),
        wr: &mut (impl AsyncWrite + Unpin),
        rx: &mut mpsc::Receiver<Bytes>,
        hello_by: Instant,
    ) -> std::io::Result<()> {
        let timeouts = self.hub.config.timeouts.clone();
        let mut buf = BytesMut::with_capacity(READ_BUF_START);
        // One timer for the life of the connection: the hello deadline counts from the
        // connect and nothing moves it (a byte every few seconds must not hold a connection
        // open); after hello, only a whole message moves the idle deadline.
        let silence = tokio::time::sleep_until(hello_by);
        tokio::pin!(silence);
        let mut out = Vec::new();
        loop {
            tokio::select! {
                frame = rx.recv() => match frame {
                    Some(frame) => {
                        // Coalesce whatever else is queued into one write.
                        out.clear();
                        out.extend_from_slice(&frame);
                        while out.len() < 16 * 1024 {
                            match rx.try_recv() {
                                Ok(more) => out.extend_from_slice(&more),
                                Err(_) => break,
                            }
                        }
                        // A client that stops reading must not pin this session (and its
                        // name): a write that cannot finish in time drops the connection.
                        // Flushed, or a TLS layer could keep what the socket did not take
                        // at once until the next message (seen under load).
                        let write = async {
                            wr.write_all(&out).await?;
                            wr.flush().await
                        };
                        match timeout(timeouts.write, write).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                self.path_lost = true;
                                return Err(e);
                            }
                            Err(_) => {
                                tracing::debug!(conn = self.conn, "client stopped reading; dropping it");
                                self.path_lost = true;
                                return Ok(());
                            }
                        }
                        if out.capacity() > 64 * 1024 {
                            out = Vec::new();
                        }
                    }
                    None => return Ok(()),
                },
                n = rd.read_buf(&mut buf) => {
                    // A TLS peer that closed without close_notify (its process died and the
                    // kernel closed for it) closed all the same; anything else broke.
                    let n = n.inspect_err(|e| {
                        self.path_lost = e.kind() != std::io::ErrorKind::UnexpectedEof;
                    })?;
                    if n == 0 {
                        return Ok(());
                    }
                    let (next, whole) = self.drain_frames(&mut buf);
                    if let Next::Close = next {
                        return Ok(());
                    }
                    if whole > 0 && self.hello_done {
                        silence.as_mut().reset(Instant::now() + timeouts.idle);
                    }
                }
                _ = &mut silence => {
                    let (code, msg) = if self.hello_done {
                        self.path_lost = true;
                        (ErrorCode::IdleTimeout, format!("nothing received for {} s", timeouts.idle.as_secs()))
                    } else {
                        (ErrorCode::HelloTimeout, format!("no hello within {} s", timeouts.hello.as_secs()))
                    };
                    self.reply(&ServerMsg::error(code, msg));
                    return Ok(());
                }
            }
        }
    }

    fn reply(&self, msg: &ServerMsg) {
        self.hub.lock().send(self.conn, msg);
    }

    /// The state, locked to handle a request of type `kind`: errors sent meanwhile name it.
    fn answering(&self, kind: &'static str) -> Answering<'_> {
        let mut state = self.hub.lock();
        state.replying_to = Some(kind);
        Answering(state)
    }

    /// Handles every complete frame in `buf`; says how many there were.
    fn drain_frames(&mut self, buf: &mut BytesMut) -> (Next, usize) {
        let mut whole = 0;
        while let Some(next) = self.next_frame(buf) {
            if let Next::Close = next {
                return (Next::Close, whole);
            }
            whole += 1;
        }
        (Next::Continue, whole)
    }

    /// Handles the first complete frame in `buf`, if there is one.
    fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Next> {
        let body = match split_frame(buf) {
            Ok(Some(body)) => body,
            Ok(None) => return None,
            Err(FrameError::TooLarge(len)) => {
                let msg = format!("frame of {len} bytes is over the limit; closing");
                self.reply(&ServerMsg::error(ErrorCode::FrameTooLarge, msg));
                return Some(Next::Close);
            }
            Err(e) => return Some(self.bad_frame(ErrorCode::Malformed, e.to_string(), None)),
        };
        let clip = |t: &str| fala_proto::clip(t, fala_proto::ERROR_TEXT_MAX);
        Some(match decode_body::<ClientMsg>(&body, CLIENT_MSG_TYPES) {
            Ok(msg) => self.handle(msg),
            Err(FrameError::UnknownType(t)) => self.bad_frame(
                ErrorCode::UnknownMessage,
                format!("unknown message type {t:?}"),
                Some(clip(&t)),
            ),
            Err(e @ FrameError::InvalidFields { .. }) => {
                let kind = match &e {
                    FrameError::InvalidFields { kind, .. } => Some(clip(kind)),
                    _ => None,
                };
                self.bad_frame(ErrorCode::InvalidMessage, e.to_string(), kind)
            }
            Err(e) => self.bad_frame(ErrorCode::Malformed, e.to_string(), None),
        })
    }

    /// Reports a bad frame (naming the request type when there was one); too many of them
    /// close the connection.
    fn bad_frame(&mut self, code: ErrorCode, message: String, request: Option<String>) -> Next {
        tracing::debug!(conn = self.conn, ?code, "bad frame: {message}");
        let error = |message: String| ServerMsg::Error {
            code,
            message,
            request: request.clone(),
            call_id: None,
        };
        self.reply(&error(message));
        if self.limiter.bad_frame(&self.hub.config.limits) {
            self.reply(&error("too many bad frames; closing".into()));
            return Next::Close;
        }
        Next::Continue
    }

    fn handle(&mut self, msg: ClientMsg) -> Next {
        if !self.hello_done {
            return self.handle_hello(msg);
        }
        if let ClientMsg::Media { data } = &msg {
            // Media is not a request: it has its own budget, and the relay's token and rate.
            self.tunnel_media(data);
            return Next::Continue;
        }
        let kind = msg.kind();
        let limits = &self.hub.config.limits;
        let is_invite = matches!(msg, ClientMsg::Invite { .. });
        let now = std_now();
        let rate_limited = |text: String| ServerMsg::error(ErrorCode::RateLimited, text);
        match self.limiter.check(limits, is_invite, now) {
            Verdict::Pass if is_invite && !self.ip_slot.try_invite(now) => {
                let text = "too many invites from your address; slow down";
                self.answering(kind)
                    .send(self.conn, &rate_limited(text.into()));
                return Next::Continue;
            }
            Verdict::Pass => {}
            Verdict::Drop { notify } => {
                if notify {
                    let what = if is_invite { "invites" } else { "messages" };
                    let text = format!("too many {what}; slow down");
                    self.answering(kind).send(self.conn, &rate_limited(text));
                }
                return Next::Continue;
            }
            Verdict::Close => {
                let text = "rate limit exceeded for too long; closing";
                self.answering(kind)
                    .send(self.conn, &rate_limited(text.into()));
                return Next::Close;
            }
        }
        let conn = self.conn;
        let open_list = self.hub.config.open_list;
        let mut state = self.answering(kind);
        match msg {
            ClientMsg::Hello { .. } => {
                state.send(
                    conn,
                    &ServerMsg::error(ErrorCode::InvalidMessage, "hello was already received"),
                );
            }
            ClientMsg::Register {
                name,
                media,
                identity,
                signature,
                resume,
            } => {
                // Checked before taking the lock: a signature costs tens of microseconds.
                drop(state);
                let checked = verify_register(&identity, &self.challenge, &name, &signature)
                    .and_then(|()| {
                        <[u8; IDENTITY_LEN]>::try_from(identity.as_slice())
                            .map_err(|_| IdentityError::BadKey)
                    });
                let mut state = self.answering(kind);
                match checked {
                    Ok(identity) => state.register(conn, &name, media, identity, resume),
                    Err(e) => {
                        let msg = format!("registration refused: {e}");
                        state.send(conn, &ServerMsg::error(ErrorCode::InvalidIdentity, msg));
                    }
                }
            }
            ClientMsg::Lookup { name } => state.lookup(conn, &name),
            ClientMsg::List { .. } | ClientMsg::Subscribe if !open_list => {
                let msg = "this server does not hand out the whole online list: \
                           find people with search and follow contacts with watch";
                state.send(conn, &ServerMsg::error(ErrorCode::NotOffered, msg));
            }
            ClientMsg::List { after, limit } => state.list(conn, after.as_deref(), limit),
            ClientMsg::Search { prefix, after } => state.search(conn, &prefix, after.as_deref()),
            ClientMsg::Watch { names } => state.watch(conn, &names),
            ClientMsg::Subscribe => state.subscribe(conn),
            ClientMsg::Unsubscribe => state.unsubscribe(conn),
            ClientMsg::Invite { candidates, .. } | ClientMsg::Accept { candidates, .. }
                if candidates.len() > CANDIDATES_MAX =>
            {
                let msg = format!("at most {CANDIDATES_MAX} candidate addresses");
                state.send(conn, &ServerMsg::error(ErrorCode::InvalidMessage, msg));
            }
            ClientMsg::Invite {
                to,
                commit,
                candidates,
                hide_address,
            } => {
                let addresses = (candidates, hide_address);
                let invite = state.invite(conn, &to, (commit, addresses), now);
                if let InviteOutcome::Ringing(call_id) = invite {
                    drop(state);
                    self.arm_ring_timer(call_id);
                }
            }
            ClientMsg::Accept {
                call_id,
                media,
                key,
                signature,
                candidates,
                hide_address,
            } => {
                let addresses = (candidates, hide_address);
                state.accept(conn, call_id, media, (key, signature), addresses)
            }
            ClientMsg::Reveal {
                call_id,
                key,
                signature,
            } => state.reveal(conn, call_id, key, signature),
            ClientMsg::Decline { call_id } => state.decline(conn, call_id),
            ClientMsg::Cancel { call_id } => state.cancel(conn, call_id),
            ClientMsg::Hangup { call_id } => state.hangup(conn, call_id),
            ClientMsg::Ping { nonce } => state.send(conn, &ServerMsg::Pong { nonce }),
            ClientMsg::Block { name } => state.block(conn, &name),
            ClientMsg::Unblock { name } => state.unblock(conn, &name),
            ClientMsg::Bye => return Next::Close,
            ClientMsg::Media { .. } => {}
        }
        Next::Continue
    }

    /// A relayed datagram that came through this connection goes on to the call's other leg.
    fn tunnel_media(&mut self, data: &[u8]) {
        let now = std_now();
        if !self.media_budget.try_take(now) || !crate::relay::is_relayed(data) {
            return;
        }
        if self.tunnel.is_none() {
            let state = self.hub.lock();
            let queue = state.conns.get(&self.conn).and_then(|c| c.tx.as_ref());
            let relay = state.relay.as_ref().map(|(r, _)| r);
            self.tunnel = relay.zip(queue).map(|(r, tx)| (r.clone(), tx.downgrade()));
        }
        if let Some((relay, queue)) = &self.tunnel {
            relay.forward_from_tunnel(data, queue, now);
        }
    }

    fn handle_hello(&mut self, msg: ClientMsg) -> Next {
        match msg {
            ClientMsg::Hello { version, agent } if version == PROTOCOL_VERSION => {
                self.hello_done = true;
                let agent = fala_proto::clip(&agent, fala_proto::ERROR_TEXT_MAX);
                tracing::debug!(conn = self.conn, %agent, "hello");
                let welcome = self.hub.welcome(&self.challenge);
                self.hub.lock().send(self.conn, &welcome);
                Next::Continue
            }
            ClientMsg::Hello { version, .. } => {
                let msg = format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}");
                let error = ServerMsg::error(ErrorCode::UnsupportedVersion, msg);
                self.answering("hello").send(self.conn, &error);
                Next::Close
            }
            other => self.bad_frame(
                ErrorCode::HelloRequired,
                "the first message must be hello".into(),
                Some(other.kind().to_string()),
            ),
        }
    }

    fn arm_ring_timer(&self, call_id: fala_proto::CallId) {
        let hub = self.hub.clone();
        let ring = hub.config.timeouts.ring;
        tokio::spawn(async move {
            tokio::time::sleep(ring).await;
            hub.lock().ring_timeout(call_id);
        });
    }
}

/// Writes one message directly to a socket that never gets a session (server full).
pub(crate) async fn refuse(mut stream: impl AsyncWrite + Unpin, msg: &ServerMsg) {
    if let Ok(frame) = encode_frame(msg) {
        let _ = timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    }
    let _ = stream.shutdown().await;
}

/// The state, locked while one request is handled; lets go of the request's name on drop so
/// no later error names it by mistake.
struct Answering<'a>(std::sync::MutexGuard<'a, crate::hub::State>);

impl std::ops::Deref for Answering<'_> {
    type Target = crate::hub::State;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Answering<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.replying_to = None;
    }
}
