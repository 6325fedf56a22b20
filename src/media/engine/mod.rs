//! The media engine: one named std thread ("fala-media") per call, on absolute deadlines
//! (`worker.rs`), with a send path (`send_path.rs`: capture -> Opus -> redundancy, encryption ->
//! UDP) and a receive path (`receive_path.rs`: UDP -> jitter buffer -> decode, conceal, stretch
//! -> the whole frame to the sink at once).
//!
//! The thread wakes on the send grid and when the sink has played everything before the next
//! frame: about twice a frame, rather than on a fixed short tick, because each wake-up costs.
//! It never blocks on anyone: control arrives on a bounded channel polled with `try_recv`, stop,
//! mute and meters are atomics, stats are published with `try_lock`. [`MediaEngine::spawn`]
//! returns before the devices are open and reports readiness by callback.

mod receive_path;
mod send_path;
mod worker;

use super::codec::{CodecError, CodecSettings};
use super::io::{InputSpec, IoError, OutputSpec};
use super::jitter::JitterSettings;
use super::transport::{PathSetup, Transport};
use fala_proto::media_crypto::SessionKeys;
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;
use thiserror::Error;
use worker::Worker;

/// Silence played at a time while nothing can play yet (5 ms at 48 kHz); once the first packet
/// is due, the last step is cut to end when it is, so the first frame starts on its target.
pub const QUANTUM: usize = 240;

/// Shortest silence played while buffering (1 ms).
const MIN_SILENCE: usize = 48;

/// Longest stall written out as silence to a file sink (10 s): a suspended laptop must not
/// fill the disk with hours of it.
const MAX_GAP_FILL: u64 = 10 * 48_000;

/// Most frames a non-urgent expansion (room for loss recovery) waits for a quiet frame: speech
/// has one every few hundred ms, and the room protects nothing until it is there.
const ROOM_WAIT_FRAMES: u32 = 15;

/// Everything a call's media needs.
pub struct MediaConfig {
    /// UDP socket already bound by the caller (the client binds its media port at registration).
    pub socket: UdpSocket,
    /// The peer's address from `call_connected.media`: the first one checked, and where media
    /// goes when no relay is offered.
    pub peer: SocketAddr,
    /// Session keys from the key exchange; `None` sends clear RTP.
    pub crypto: Option<SessionKeys>,
    /// The relay and the peer's other addresses: which ways the call may take.
    pub paths: PathSetup,
    /// Microphone side.
    pub input: InputSpec,
    /// Speaker side.
    pub output: OutputSpec,
    /// Opus settings.
    pub codec: CodecSettings,
    /// Playout buffer settings.
    pub jitter: JitterSettings,
}

/// Which way a call's media goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaPath {
    /// Straight to the peer's address.
    #[default]
    Direct,
    /// Through the server's relay.
    Relay,
    /// Through the server's relay, by the signaling connection (UDP does not get through).
    Tcp,
}

/// The engine could not start.
#[derive(Debug, Error)]
pub enum MediaError {
    /// Opus refused the settings.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A file could not be opened.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The socket could not be configured, or the thread not spawned.
    #[error("media setup: {0}")]
    Os(#[from] std::io::Error),
    /// The media thread ended before it was ready.
    #[error("media thread failed to start")]
    Thread,
}

/// A snapshot of the call's media, for the UI and `--stats FILE.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaStats {
    /// Seconds since the engine started.
    pub duration_s: f64,
    /// Which way media goes: straight to the peer, or through the server's relay.
    pub path: MediaPath,
    /// Times the path changed during the call (relay → direct when a check succeeds, back to
    /// the relay when the direct path falls silent).
    pub path_changes: u64,
    /// Times a direct path fell silent and the call went back to the relay.
    pub path_fallbacks: u64,
    /// Times the relay's datagrams moved between UDP and the TCP connection.
    pub tcp_switches: u32,
    /// Connectivity checks sent, and answered.
    pub checks_sent: u64,
    pub checks_answered: u64,
    /// From the engine's start (when the call connected) to the first audio packet, ms.
    pub first_audio_ms: Option<f64>,
    /// The longest time without an audio packet from the peer once audio had come, ms
    /// (a broken path; with DTX also pauses in speech).
    pub longest_audio_gap_ms: f64,
    /// How long nothing at all (audio, reports, checks) has come from the peer (since the
    /// start, if nothing came yet), ms: the "no audio" warnings read it. Reports come every
    /// second even in DTX pauses, so this grows only when the path is broken.
    pub silent_for_ms: f64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Frames held back because the peer had not answered yet (no media goes to an address
    /// before something authentic came from it).
    pub frames_held: u64,
    /// RTP packets accepted from the peer.
    pub packets_received: u64,
    /// Packets missing by sequence number (RFC 3550 cumulative loss).
    pub packets_lost: i64,
    /// Lost frames recovered from in-band FEC.
    pub fec_recovered: u64,
    /// Lost packets replaced by a redundant copy carried in a later packet.
    pub copy_recovered: u64,
    /// Redundant copies of earlier packets we put in each packet now (0-2), from the loss the
    /// peer reports.
    pub copies_sent: u8,
    /// Frames synthesized by concealment (losses and underruns).
    pub concealed: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Packets dropped for failing authentication.
    pub dropped_auth: u64,
    /// Authentic packets dropped as replays (seen before, or too old for the window).
    pub dropped_replay: u64,
    /// Packets dropped for coming from the wrong address or SSRC.
    pub dropped_foreign: u64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, ms.
    pub rtt_ms: Option<f64>,
    /// Playout delay held by the jitter buffer, ms.
    pub jitter_buffer_ms: f64,
    /// Its current target, ms.
    pub jitter_target_ms: f64,
    /// Estimated mouth-to-ear delay of the pipeline, ms: capture buffering + frame + encoder
    /// look-ahead + network (RTT / 2) + jitter buffer + playout buffering.
    pub latency_ms: f64,
    /// Send bitrate including RTP headers (and tags), kb/s.
    pub bitrate_kbps: f64,
    /// Loss the peer reports for our stream, 0..=1.
    pub peer_loss: f64,
    /// Audio removed / added by time-stretching, ms.
    pub stretched_ms: f64,
    /// Share of one core the media thread used, percent.
    pub cpu_percent: f64,
    /// A microphone was asked for and none is open now (missing, refused, or vanished and
    /// not back yet): the peer hears silence.
    pub microphone_missing: bool,
    /// A speaker was asked for and none is open now: nothing is heard.
    pub speaker_missing: bool,
}

/// Peak levels for meters, written by the media thread, read by anyone (f32 bits in atomics).
#[derive(Debug, Default)]
pub struct Levels {
    input: AtomicU32,
    output: AtomicU32,
}

impl Levels {
    /// Peak of the last captured frame, 0..=1.
    pub fn input(&self) -> f32 {
        f32::from_bits(self.input.load(Ordering::Relaxed))
    }
    /// Peak of the last played frame, 0..=1.
    pub fn output(&self) -> f32 {
        f32::from_bits(self.output.load(Ordering::Relaxed))
    }
}

fn peak(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |a, v| a.max(v.abs())).min(1.0)
}

enum Control {
    /// Start recording the call to this file, or stop (and finish) the current recording.
    Record(Option<Box<super::recorder::WavOut>>),
}

/// A running engine. Dropping it stops the thread too.
pub struct MediaHandle {
    control: SyncSender<Control>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    muted: Arc<AtomicBool>,
    levels: Arc<Levels>,
    stats: Arc<Mutex<MediaStats>>,
    local: SocketAddr,
    /// Set by the media thread once its devices are open and the schedules start.
    epoch: Arc<OnceLock<Instant>>,
}

impl MediaHandle {
    /// When the schedules started: frame `n` is sent at `epoch + n * frame`, so a WAV source's
    /// sample `i` is read at about `epoch + i / 48 kHz` (rounded down to its frame); a WAV
    /// sink's sample `i` plays at `epoch + i / 48 kHz` (written at most a frame before). Benches
    /// turn positions in the files into wall-clock times with it.
    /// `None` until the engine is ready.
    pub fn epoch(&self) -> Option<Instant> {
        self.epoch.get().copied()
    }

    /// Latest stats (published every 100 ms).
    pub fn stats(&self) -> MediaStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records both directions of the call, mixed, to a 48 kHz mono WAV file until
    /// [`MediaHandle::stop_recording`] or the end of the call. The file is created on a thread
    /// of its own (a slow or network disk must not stall the caller), then handed to the media
    /// thread, which writes it; `done` hears whether that worked.
    pub fn record(
        &self,
        path: std::path::PathBuf,
        done: impl FnOnce(Result<(), MediaError>) + Send + 'static,
    ) -> Result<(), MediaError> {
        let control = self.control.clone();
        std::thread::Builder::new()
            .name("fala-record".into())
            .spawn(move || {
                let created = super::recorder::create_wav(&path).map_err(|e| {
                    MediaError::Io(IoError::Wav {
                        path: path.clone(),
                        source: e,
                    })
                });
                done(created.and_then(|wav| {
                    control
                        .try_send(Control::Record(Some(Box::new(wav))))
                        .map_err(|_| MediaError::Thread)
                }));
            })?;
        Ok(())
    }

    /// Stops a recording started with [`MediaHandle::record`].
    pub fn stop_recording(&self) {
        let _ = self.control.try_send(Control::Record(None));
    }

    /// Mutes the microphone (silence is still sent, so the peer's buffer keeps its timing).
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// Meter levels; clone the `Arc` into a GUI to poll it each frame.
    pub fn levels(&self) -> Arc<Levels> {
        self.levels.clone()
    }

    /// The local media address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops the thread, flushes the output file, and returns the final stats.
    pub fn stop(mut self) -> MediaStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        // A flag, not a message: the control queue may be full of requests the thread has not
        // read yet (it may still be opening devices).
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MediaHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Namespace for starting engines.
pub struct MediaEngine;

/// Told once, from the media thread, whether the engine opened its devices and codec (with the
/// instant its schedules start) or why it could not.
pub type ReadyCallback = Box<dyn FnOnce(Result<Instant, MediaError>) + Send>;

impl MediaEngine {
    /// Starts the media thread and returns at once: opening devices can take seconds on some
    /// sound systems, and no caller (a UI thread, a signaling runtime) may wait for it. The
    /// thread reports through `on_ready`; until then the handle can already be muted, asked to
    /// record, or stopped.
    pub fn spawn(config: MediaConfig, on_ready: ReadyCallback) -> Result<MediaHandle, MediaError> {
        let local = config.socket.local_addr()?;
        let transport = Transport::new(config.socket, config.peer, config.crypto, config.paths)?;
        let (control, control_rx) = sync_channel(4);
        let stop = Arc::new(AtomicBool::new(false));
        let muted = Arc::new(AtomicBool::new(false));
        let levels = Arc::new(Levels::default());
        let stats = Arc::new(Mutex::new(MediaStats::default()));
        let epoch = Arc::new(OnceLock::new());
        let stopping = stop.clone();
        let shared = (muted.clone(), levels.clone(), stats.clone());
        let started = epoch.clone();
        let (input, output, codec, jitter) =
            (config.input, config.output, config.codec, config.jitter);
        let thread = std::thread::Builder::new()
            .name("fala-media".into())
            .spawn(move || {
                realtime_priority();
                // Devices are opened here: cpal streams may not move between threads.
                match Worker::open(transport, (&input, &output), codec, jitter, shared) {
                    Ok(w) => {
                        let now = Instant::now();
                        let _ = started.set(now);
                        on_ready(Ok(now));
                        w.run(control_rx, &stopping, now);
                    }
                    Err(e) => on_ready(Err(e)),
                }
            })?;
        Ok(MediaHandle {
            control,
            stop,
            thread: Some(thread),
            muted,
            levels,
            stats,
            local,
            epoch,
        })
    }

    /// Starts the media thread and waits until it is ready: for tests and the bench, which
    /// measure from [`MediaHandle::epoch`] and have no window to keep drawing.
    pub fn start(config: MediaConfig) -> Result<MediaHandle, MediaError> {
        let (ready_tx, ready_rx) = sync_channel::<Result<Instant, MediaError>>(1);
        let handle = Self::spawn(
            config,
            Box::new(move |ready| {
                let _ = ready_tx.send(ready);
            }),
        )?;
        match ready_rx.recv() {
            Ok(Ok(_)) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MediaError::Thread),
        }
    }
}

/// Asks for real-time scheduling (SCHED_FIFO, low priority) for the calling thread, as audio
/// threads do (PulseAudio and WebRTC ask rtkit for the same). On a loaded machine an ordinary
/// thread wakes several ms late, and every late send or playout is jitter the peer's
/// buffer must cover with delay. The thread sleeps between deadlines and its work at each is
/// bounded, so it cannot starve the machine. Best effort: without the privilege the call
/// simply runs at normal priority.
pub fn realtime_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 10 };
        // Threads this one creates (cpal's device threads, opened from here) must NOT inherit
        // the real-time policy: a device thread that busy-polls at real-time priority starves
        // everything else on its core, this thread included, so the call could never stop.
        let policy = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
        // SAFETY: plain libc call on the current thread (0) with a valid pointer.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc != 0 {
            tracing::debug!("no real-time priority for the media thread; running normally");
        }
    }
}
