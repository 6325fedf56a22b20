//! The signaling task: connect, hello, register, then relay commands and events; reconnect
//! with backoff when the server goes away, and register the same name again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use fala_proto::identity::Identity;
use fala_proto::{CallId, ClientMsg, ErrorCode, MediaAddr, ServerMsg, PROTOCOL_VERSION};
use serde_bytes::ByteBuf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::conn::{ConnError, Connection};
use super::tls::{self, KnownServers};
use super::tunnel::TunnelSlot;

/// How the connection to the server is protected.
#[derive(Clone, Debug)]
pub enum Security {
    /// TLS, with the server's certificate pinned on first use in these known servers.
    Tls(Arc<KnownServers>),
    /// Plain TCP (`--plain`): for servers started with `--plain` (tests, interop, a proxy).
    Plain,
}

/// How to reach the server and who to be there.
#[derive(Clone)]
pub struct SignalConfig {
    /// `host:port` of fala-server.
    pub server: String,
    pub security: Security,
    pub name: String,
    /// Proves the name is ours: signs the server's challenge.
    pub identity: Arc<Identity>,
    /// Media address to register (`0.0.0.0:port` lets the server fill in the IP it sees).
    pub media: MediaAddr,
    /// Called after every event is queued, e.g. to wake the window (`request_repaint`).
    pub notify: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Where media that comes down the connection goes (the call's tunnel end).
    pub tunnel: TunnelSlot,
}

/// What the program asks of the signaling task.
#[derive(Debug, Clone)]
pub enum Command {
    /// Send this message to the server.
    Send(ClientMsg),
    /// Say goodbye and stop (the original's "0").
    Disconnect,
    /// Send this relayed datagram (`token ‖ datagram`) through the connection; dropped while
    /// offline, and when it waited longer than [`MEDIA_STALE`] (queued while connecting).
    Media(Vec<u8>, Instant),
}

/// What the signaling task reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Registered under `name`; `media` is the address others will send audio to.
    /// `reconnected` is true when this follows a lost connection.
    Registered {
        name: String,
        media: MediaAddr,
        /// The server's STUN port, if it told it: where the media socket learns its public
        /// address.
        stun: Option<MediaAddr>,
        reconnected: bool,
        /// After a reconnect in the middle of a call: the call, when the server kept it for
        /// us (it goes on); `None` when it ended meanwhile.
        resumed: Option<CallId>,
    },
    /// The server refused the registration (name taken or invalid): the task has stopped.
    Refused { code: ErrorCode, message: String },
    /// The server could not be reached at first; the task has stopped.
    Unreachable { message: String },
    /// The server presented another certificate than the one pinned for it: the task has
    /// stopped (a man in the middle, or a server that changed its certificate).
    Untrusted { message: String },
    /// The connection dropped after registration; the task retries after `retry_in`. A call
    /// goes on meanwhile: the server holds it for a while, and the reconnect asks for it
    /// back (see `resumed`).
    ConnectionLost { message: String, retry_in: Duration },
    /// Any other server message.
    Server(ServerMsg),
    /// The task has ended (after a disconnect or a fatal error).
    Stopped,
}

/// The program's handle on a running signaling task.
#[derive(Clone)]
pub struct SignalHandle {
    commands: mpsc::Sender<Command>,
}

impl SignalHandle {
    /// Queues a message to the server. Fails only if the task has stopped or is overwhelmed.
    pub fn send(&self, msg: ClientMsg) -> bool {
        self.commands.try_send(Command::Send(msg)).is_ok()
    }

    /// Asks the task to say goodbye and stop.
    pub fn disconnect(&self) {
        let _ = self.commands.try_send(Command::Disconnect);
    }

    /// The raw sender, for callers that want to await room in the queue.
    pub fn sender(&self) -> &mpsc::Sender<Command> {
        &self.commands
    }
}

/// Capacity of the command and event queues: enough for bursts of presence events.
const QUEUE: usize = 256;
/// Time allowed to connect and finish registering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff bounds for reconnecting.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How often the connection's health is looked at: our address still ours, and, in a call,
/// the server still answering.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// In a call, a ping goes this often...
const CALL_PING_EVERY: Duration = Duration::from_secs(1);
/// ... and a server silent this long is given up for a new connection: a call waits on a
/// dead path (a network change) no longer than this before asking the server for it back.
const CALL_SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// A write that cannot finish in this long means a dead path: the connection is given up
/// (a blocked write must not stall the health checks, nor a call's resume).
const WRITE_LIMIT: Duration = Duration::from_secs(3);
/// Media that waited longer than this in the queue is old news: dropped, not sent.
const MEDIA_STALE: Duration = Duration::from_millis(200);

/// Starts the signaling task on the current tokio runtime.
pub fn spawn(config: SignalConfig) -> (SignalHandle, mpsc::Receiver<Event>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(QUEUE);
    let task = Task {
        config,
        events: ev_tx,
        commands: cmd_rx,
        call: None,
        hangup_pending: None,
    };
    tokio::spawn(task.run());
    (SignalHandle { commands: cmd_tx }, ev_rx)
}

struct Task {
    config: SignalConfig,
    events: mpsc::Sender<Event>,
    commands: mpsc::Receiver<Command>,
    /// The answered call we are in, as the messages through here tell: asked back when a
    /// lost connection is made again.
    call: Option<CallId>,
    /// The user hung up that call while we were offline: said once we are back.
    hangup_pending: Option<CallId>,
}

/// The socket under the current connection, to look at its address and to abort it.
#[derive(Clone, Copy)]
struct SocketInfo {
    fd: std::os::fd::RawFd,
    local_ip: IpAddr,
}

impl SocketInfo {
    /// Whether our end's address is still one of this host's (a network change takes it).
    fn address_still_ours(&self) -> bool {
        if self.local_ip.is_loopback() {
            return true;
        }
        super::host_addresses()
            .map(|all| all.contains(&self.local_ip))
            .unwrap_or(true)
    }

    /// Makes the close of the socket a reset rather than an orderly close: the server then
    /// knows the path broke (and holds our call) instead of taking it for a goodbye. Must be
    /// called while the connection still owns the socket.
    fn abort_on_close(&self) {
        // SAFETY: the fd belongs to the live connection the caller still holds; the borrow
        // ends before that connection is dropped.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
    }
}

/// How one connected period ended.
enum End {
    /// The user disconnected (or dropped every handle).
    Disconnected,
    /// The server refused the registration for good.
    Refused(ErrorCode, String),
    /// The connection was lost; retry.
    Lost(String),
    /// The server is not the one this client met before (its certificate changed): stop.
    Untrusted(String),
}

impl Task {
    async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
        if let Some(notify) = &self.config.notify {
            notify();
        }
    }

    async fn run(mut self) {
        let mut registered_once = false;
        let mut backoff = BACKOFF_START;
        loop {
            let end = match self.connect_and_register(registered_once).await {
                Ok((conn, heartbeat, socket)) => {
                    registered_once = true;
                    backoff = BACKOFF_START;
                    self.serve(conn, heartbeat, socket).await
                }
                Err(End::Lost(message)) if !registered_once => {
                    self.emit(Event::Unreachable { message }).await;
                    break;
                }
                Err(end) => end,
            };
            match end {
                End::Disconnected => break,
                End::Untrusted(message) => {
                    self.emit(Event::Untrusted { message }).await;
                    break;
                }
                End::Refused(code, message) if !registered_once || code != ErrorCode::NameTaken => {
                    self.emit(Event::Refused { code, message }).await;
                    break;
                }
                // After a drop our old session may still hold the name until the server
                // notices it is gone; keep trying, like any other loss.
                End::Refused(_, message) | End::Lost(message) => {
                    let retry_in = jittered(backoff);
                    self.emit(Event::ConnectionLost { message, retry_in }).await;
                    if self.wait_or_disconnect(retry_in).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.emit(Event::Stopped).await;
    }

    /// Sleeps for `d` unless the user disconnects first (returns true then). Other commands
    /// cannot be served while offline; they are dropped, and the caller's call machine has
    /// already been told the connection is gone.
    async fn wait_or_disconnect(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Disconnect) => return true,
                    Some(Command::Send(ClientMsg::Hangup { call_id })) if self.call == Some(call_id) => {
                        self.hangup_pending = Some(call_id);
                    }
                    Some(Command::Send(_) | Command::Media(..)) => {}
                },
            }
        }
    }

    async fn connect_and_register(
        &mut self,
        again: bool,
    ) -> Result<(Connection, Duration, SocketInfo), End> {
        use std::os::fd::AsRawFd;
        let lost = |e: &dyn std::fmt::Display| End::Lost(e.to_string());
        let attempt = async {
            let stream = TcpStream::connect(&self.config.server)
                .await
                .map_err(|e| End::Lost(format!("cannot reach {}: {e}", self.config.server)))?;
            let _ = stream.set_nodelay(true);
            let socket = SocketInfo {
                fd: stream.as_raw_fd(),
                local_ip: stream.local_addr().map_err(|e| lost(&e))?.ip(),
            };
            let mut conn = match &self.config.security {
                Security::Plain => Connection::new(stream),
                Security::Tls(known) => {
                    known.ready().await;
                    let tls = tls::connect(stream, &self.config.server, known).await;
                    match tls {
                        Ok(stream) => {
                            save_pins(known.clone()).await;
                            Connection::new(stream)
                        }
                        Err(e @ tls::TlsError::Changed { .. }) => {
                            return Err(End::Untrusted(e.to_string()))
                        }
                        Err(e) => return Err(End::Lost(e.to_string())),
                    }
                }
            };
            let hello = ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                agent: format!("fala {}", env!("CARGO_PKG_VERSION")),
            };
            conn.send(&hello).await.map_err(|e| lost(&e))?;
            let (heartbeat, challenge) = match conn.recv().await.map_err(|e| lost(&e))? {
                ServerMsg::Welcome {
                    heartbeat_ms,
                    challenge,
                    ..
                } => (Duration::from_millis(heartbeat_ms.max(100)), challenge),
                ServerMsg::Error { code, message, .. } => return Err(End::Refused(code, message)),
                other => return Err(End::Lost(format!("unexpected reply to hello: {other:?}"))),
            };
            let identity = &self.config.identity;
            let name = self.config.name.clone();
            let register = ClientMsg::Register {
                signature: ByteBuf::from(identity.sign_register(&challenge, &name).to_vec()),
                identity: ByteBuf::from(identity.public().to_vec()),
                name,
                media: self.config.media,
                resume: self.call.filter(|_| again),
            };
            conn.send(&register).await.map_err(|e| lost(&e))?;
            match conn.recv().await.map_err(|e| lost(&e))? {
                ServerMsg::Registered {
                    name,
                    media,
                    stun,
                    call,
                } => Ok((conn, heartbeat, socket, name, (media, stun, call))),
                ServerMsg::Error { code, message, .. } => Err(End::Refused(code, message)),
                other => Err(End::Lost(format!(
                    "unexpected reply to register: {other:?}"
                ))),
            }
        };
        let (conn, heartbeat, socket, name, (media, stun, call)) =
            timeout(CONNECT_TIMEOUT, attempt).await.map_err(|_| {
                End::Lost(format!("{} did not answer in time", self.config.server))
            })??;
        self.call = call;
        self.emit(Event::Registered {
            name,
            media,
            stun,
            reconnected: again,
            resumed: call,
        })
        .await;
        Ok((conn, heartbeat, socket))
    }

    /// Follows the call we are in from what goes through here.
    fn note_sent(&mut self, msg: &ClientMsg) {
        match msg {
            ClientMsg::Hangup { call_id } | ClientMsg::Decline { call_id }
                if self.call == Some(*call_id) =>
            {
                self.call = None
            }
            ClientMsg::Bye => self.call = None,
            _ => {}
        }
    }

    fn note_received(&mut self, msg: &ServerMsg) {
        match msg {
            ServerMsg::CallConnected { call_id, .. } => self.call = Some(*call_id),
            ServerMsg::CallEnded { call_id, .. } if self.call == Some(*call_id) => self.call = None,
            _ => {}
        }
    }

    /// Relays commands and server messages until the connection ends. A connection lost in
    /// the middle of a call is aborted (see [`SocketInfo::abort_on_close`]).
    async fn serve(
        &mut self,
        mut conn: Connection,
        heartbeat: Duration,
        socket: SocketInfo,
    ) -> End {
        let end = self.relay_until_end(&mut conn, heartbeat, socket).await;
        if matches!(end, End::Lost(_)) && self.call.is_some() {
            socket.abort_on_close();
        }
        end
    }

    async fn relay_until_end(
        &mut self,
        conn: &mut Connection,
        heartbeat: Duration,
        socket: SocketInfo,
    ) -> End {
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nonce = 0u64;
        let mut last_heard = Instant::now();
        let mut last_ping = Instant::now();
        if let Some(call_id) = self.hangup_pending.take().filter(|c| self.call == Some(*c)) {
            let hangup = ClientMsg::Hangup { call_id };
            self.note_sent(&hangup);
            if let Err(e) = send_within(conn, &hangup).await {
                return End::Lost(e);
            }
        }
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Disconnect) => {
                        let _ = conn.send(&ClientMsg::Bye).await;
                        self.call = None;
                        return End::Disconnected;
                    }
                    Some(Command::Send(msg)) => {
                        self.note_sent(&msg);
                        if let Err(e) = send_within(conn, &msg).await {
                            return End::Lost(e);
                        }
                    }
                    Some(Command::Media(datagram, queued)) if queued.elapsed() <= MEDIA_STALE => {
                        let media = ClientMsg::Media { data: ByteBuf::from(datagram) };
                        if let Err(e) = send_within(conn, &media).await {
                            return End::Lost(e);
                        }
                    }
                    Some(Command::Media(..)) => {}
                },
                msg = conn.recv() => match msg {
                    Ok(ServerMsg::Pong { .. }) => last_heard = Instant::now(),
                    Ok(ServerMsg::Media { data }) => {
                        last_heard = Instant::now();
                        self.config.tunnel.deliver(data.into_vec());
                    }
                    Ok(ServerMsg::Shutdown { message }) => {
                        self.emit(Event::Server(ServerMsg::Shutdown { message: message.clone() })).await;
                        return End::Lost(format!("server shut down: {message}"));
                    }
                    Ok(msg) => {
                        last_heard = Instant::now();
                        self.note_received(&msg);
                        self.emit(Event::Server(msg)).await;
                    }
                    Err(ConnError::Closed) => return End::Lost("the server closed the connection".into()),
                    Err(e) => return End::Lost(e.to_string()),
                },
                _ = watch.tick() => {
                    // In a call a dead path is found within seconds (the call is held for
                    // us only so long); otherwise three silent heartbeats are enough.
                    let (ping_every, silence_limit) = match self.call {
                        Some(_) => (CALL_PING_EVERY, CALL_SILENCE_LIMIT),
                        None => (heartbeat, heartbeat * 3),
                    };
                    if last_heard.elapsed() > silence_limit {
                        return End::Lost("the server stopped answering".into());
                    }
                    if !socket.address_still_ours() {
                        return End::Lost("our network address changed".into());
                    }
                    if last_ping.elapsed() >= ping_every {
                        last_ping = Instant::now();
                        nonce += 1;
                        if let Err(e) = send_within(conn, &ClientMsg::Ping { nonce }).await {
                            return End::Lost(e);
                        }
                    }
                }
            }
        }
    }
}

/// Sends one message, giving up after [`WRITE_LIMIT`]; why it failed, in words.
async fn send_within(conn: &mut Connection, msg: &ClientMsg) -> Result<(), String> {
    match timeout(WRITE_LIMIT, conn.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the server stopped taking what we send".into()),
    }
}

/// Writes a server pinned for the first time to the known-servers file, off the runtime's
/// thread (a failure only costs the pin: the next connection pins it again).
async fn save_pins(known: Arc<KnownServers>) {
    let saved = tokio::task::spawn_blocking(move || known.save()).await;
    if let Ok(Err(e)) = saved {
        tracing::warn!("cannot remember the server's certificate: {e}");
    }
}

/// Spreads reconnect attempts of many clients apart after a server restart.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let frac = u16::from_le_bytes(b) as f64 / u16::MAX as f64;
    d.mul_f64(0.75 + 0.5 * frac)
}

/// Waits for the first event that `pick` accepts, up to `within`; for scripts and tests.
pub async fn wait_for<T>(
    events: &mut mpsc::Receiver<Event>,
    within: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Option<T> {
    timeout(within, async {
        while let Some(ev) = events.recv().await {
            if let Some(v) = pick(&ev) {
                return Some(v);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}
