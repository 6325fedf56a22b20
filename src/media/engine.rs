//! The media engine: one named std thread ("fala-media") on absolute deadlines.
//!
//! Two schedules, each a multiple of samples after the start (`epoch`), so scheduling jitter
//! never accumulates into drift:
//! - send: every frame (20 ms) capture one frame -> Opus -> (redundancy, encrypt) -> UDP;
//! - play: when the sink has been handed everything before the next frame, drain UDP (packets
//!   carry the kernel's arrival time) -> (decrypt) -> jitter buffer -> one decision (decode,
//!   copy, FEC, conceal, stretch) -> the whole frame to the sink at once. A packet arriving up
//!   to that instant still makes it, and the thread wakes about twice a frame. (A fixed 5 ms
//!   tick woke 200 times a second, and on this VM a wake-up costs ~20 us: 0.4 % of a core.)
//!
//! While nothing can play yet, playout moves in 5 ms steps of silence ([`QUANTUM`]); once the
//! first packet is due, the last step is cut to end when it is, so the first frame starts on
//! its target (to the millisecond) rather than up to 5 ms after. The thread never blocks on
//! anyone: control arrives on a bounded channel polled with `try_recv`, mute and meters are
//! atomics, stats are published with `try_lock`.

use super::codec::{CodecError, CodecSettings, VoiceDecoder, VoiceEncoder, MAX_PACKET};
use super::io::{InputSpec, IoError, OutputSpec, Sink, Source};
use super::jitter::{Decision, JitterBuffer, JitterSettings, Stretch};
use super::protection::LossProtection;
use super::recorder::Recorder;
use super::stretch;
use super::transport::Transport;
use fala_proto::media_crypto::SessionKeys;
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Silence played at a time while nothing can play yet (5 ms at 48 kHz).
pub const QUANTUM: usize = 240;

/// Shortest silence played while buffering (1 ms).
const MIN_SILENCE: usize = 48;

/// Longest stall written out as silence to a file sink (10 s): a suspended laptop must not
/// fill the disk with hours of it.
const MAX_GAP_FILL: u64 = 10 * 48_000;

/// Most frames a non-urgent expansion (room for loss recovery) waits for a quiet frame: speech
/// has one every few hundred ms, and the room protects nothing until it is there.
const ROOM_WAIT_FRAMES: u32 = 15;

fn samples_to_duration(samples: u64) -> Duration {
    Duration::from_nanos(samples * 1_000_000_000 / 48_000)
}

/// Everything a call's media needs.
pub struct MediaConfig {
    /// UDP socket already bound by the caller (the client binds its media port at registration).
    pub socket: UdpSocket,
    /// Where the peer's media goes (and the only address media is accepted from).
    pub peer: SocketAddr,
    /// Session keys from the key exchange; `None` sends clear RTP.
    pub crypto: Option<SessionKeys>,
    /// Microphone side.
    pub input: InputSpec,
    /// Speaker side.
    pub output: OutputSpec,
    /// Opus settings.
    pub codec: CodecSettings,
    /// Playout buffer settings.
    pub jitter: JitterSettings,
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
    /// RTP packets sent.
    pub packets_sent: u64,
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
    Stop,
    /// Start recording the call to this file, or stop (and finish) the current recording.
    Record(Option<Box<super::recorder::WavOut>>),
}

/// A running engine. Dropping it stops the thread too.
pub struct MediaHandle {
    control: SyncSender<Control>,
    thread: Option<JoinHandle<()>>,
    muted: Arc<AtomicBool>,
    levels: Arc<Levels>,
    stats: Arc<Mutex<MediaStats>>,
    local: SocketAddr,
    epoch: Instant,
}

impl MediaHandle {
    /// When the schedules started: frame `n` is sent at `epoch + n * frame`, so a WAV source's
    /// sample `i` is read at about `epoch + i / 48 kHz` (rounded down to its frame); a WAV
    /// sink's sample `i` plays at `epoch + i / 48 kHz` (written at most a frame before). Benches
    /// turn positions in the files into wall-clock times with it.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Latest stats (published every 100 ms).
    pub fn stats(&self) -> MediaStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Mutes the microphone (silence is still sent, so the peer's buffer keeps its timing).
    /// Records both directions of the call, mixed, to a 48 kHz mono WAV file until
    /// [`MediaHandle::stop_recording`] or the end of the call. The file is created here; the
    /// media thread writes it.
    pub fn record(&self, path: &std::path::Path) -> Result<(), MediaError> {
        let wav = super::recorder::create_wav(path).map_err(|e| {
            MediaError::Io(IoError::Wav {
                path: path.to_owned(),
                source: e,
            })
        })?;
        self.control
            .try_send(Control::Record(Some(Box::new(wav))))
            .map_err(|_| MediaError::Thread)
    }

    /// Stops a recording started with [`MediaHandle::record`].
    pub fn stop_recording(&self) {
        let _ = self.control.try_send(Control::Record(None));
    }

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
        // The channel holds up to 4 messages; Stop only goes once, so this never blocks long.
        let _ = self.control.try_send(Control::Stop);
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

impl MediaEngine {
    /// Starts the media thread; returns once sources, sinks and codec are open.
    pub fn start(config: MediaConfig) -> Result<MediaHandle, MediaError> {
        let local = config.socket.local_addr()?;
        let transport = Transport::new(config.socket, config.peer, config.crypto)?;
        let (control, control_rx) = sync_channel(4);
        let (ready_tx, ready_rx) = sync_channel::<Result<Instant, MediaError>>(1);
        let muted = Arc::new(AtomicBool::new(false));
        let levels = Arc::new(Levels::default());
        let stats = Arc::new(Mutex::new(MediaStats::default()));
        let shared = (muted.clone(), levels.clone(), stats.clone());
        let (input, output, codec, jitter) =
            (config.input, config.output, config.codec, config.jitter);
        let thread = std::thread::Builder::new()
            .name("fala-media".into())
            .spawn(move || {
                realtime_priority();
                // Devices are opened here: cpal streams may not move between threads.
                match Worker::new(transport, &input, &output, codec, jitter, shared) {
                    Ok(w) => {
                        let epoch = Instant::now();
                        let _ = ready_tx.send(Ok(epoch));
                        w.run(control_rx, epoch);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(epoch)) => Ok(MediaHandle {
                control,
                thread: Some(thread),
                muted,
                levels,
                stats,
                local,
                epoch,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
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

struct Worker {
    transport: Transport,
    source: Source,
    sink: Sink,
    encoder: VoiceEncoder,
    decoder: VoiceDecoder,
    protection: LossProtection,
    jb: JitterBuffer,
    codec: CodecSettings,
    frame: usize,
    lookahead: usize,
    muted: Arc<AtomicBool>,
    levels: Arc<Levels>,
    stats: Arc<Mutex<MediaStats>>,
    capture: Vec<f32>,
    packet: Vec<u8>,
    decoded: Vec<f32>,
    stretched: Vec<f32>,
    playout: Vec<f32>,
    dtx_run: u32,
    busy: Duration,
    /// The call recording, when one is running.
    recorder: Option<Recorder>,
    /// How loud the peer has been lately, to find quiet frames to grow the delay in.
    quiet: stretch::QuietDetector,
    /// Frames the jitter buffer has been asking, without a break, to grow the delay in a pause.
    room_wait: u32,
    sink_failed: bool,
}

impl Worker {
    fn new(
        transport: Transport,
        input: &InputSpec,
        output: &OutputSpec,
        codec: CodecSettings,
        jitter: JitterSettings,
        (muted, levels, stats): (Arc<AtomicBool>, Arc<Levels>, Arc<Mutex<MediaStats>>),
    ) -> Result<Self, MediaError> {
        let frame = codec.frame.samples();
        let mut encoder = VoiceEncoder::new(codec)?;
        let lookahead = encoder.lookahead();
        Ok(Self {
            transport,
            source: Source::open(input)?,
            sink: Sink::open(output, frame)?,
            encoder,
            decoder: VoiceDecoder::new(codec.frame)?,
            protection: LossProtection::new(codec.fec, codec.max_copies),
            jb: JitterBuffer::new(jitter, frame as u32),
            codec,
            frame,
            lookahead,
            muted,
            levels,
            stats,
            capture: vec![0.0; frame],
            packet: vec![0; MAX_PACKET],
            decoded: vec![0.0; 5760],
            stretched: Vec::with_capacity(4 * frame),
            playout: Vec::with_capacity(8 * frame),
            dtx_run: 0,
            busy: Duration::ZERO,
            recorder: None,
            quiet: stretch::QuietDetector::default(),
            room_wait: 0,
            sink_failed: false,
        })
    }

    fn run(mut self, control: Receiver<Control>, epoch: Instant) {
        let frame_time = samples_to_duration(self.frame as u64);
        let mut next_send = epoch;
        // The playout clock: samples handed to the sink since `play_anchor`. The next frame is
        // decided when the sink has played everything before it, not earlier: a packet that
        // arrives up to that instant still makes it.
        let mut play_anchor = epoch;
        let mut played: u64 = 0;
        let mut next_publish = epoch;
        let stall = Duration::from_millis(100);
        loop {
            match control.try_recv() {
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => break,
                Ok(Control::Record(wav)) => {
                    if let Some(old) = self.recorder.take() {
                        old.finish();
                    }
                    self.recorder = wav.map(|w| Recorder::new(*w, self.frame));
                }
                Err(TryRecvError::Empty) => {}
            }
            let started = Instant::now();
            if started >= next_send {
                if started > next_send + stall {
                    // Far behind (the machine stalled): the frames whose time has passed were
                    // never captured, as a microphone's would not be. Skip them rather than send
                    // a burst, so what follows goes out on time and a file source stays in real
                    // time. The RTP timestamp jumps too, and the peer fills the gap as it does
                    // for DTX.
                    let missed = (started - next_send).as_nanos() / frame_time.as_nanos();
                    let missed = u32::try_from(missed).unwrap_or(u32::MAX);
                    self.skip_frames(missed);
                    next_send += frame_time.saturating_mul(missed);
                }
                self.send(started.duration_since(epoch).as_micros() as u64);
                next_send += frame_time;
            }
            let next_play = play_anchor + samples_to_duration(played);
            if started >= next_play {
                if started > next_play + stall {
                    // Far behind: a device played silence meanwhile (it underran); a file gets
                    // that silence written, so it stays in real time. Go on from now.
                    let gap = (started - next_play).as_micros() as u64 * 48 / 1000;
                    self.play_gap(gap);
                    play_anchor = started;
                    played = 0;
                }
                played += self.play(epoch) as u64;
            }
            if started >= next_publish {
                self.publish(epoch.elapsed());
                next_publish += Duration::from_millis(100);
            }
            self.busy += started.elapsed();

            let wake = next_send.min(play_anchor + samples_to_duration(played));
            let now = Instant::now();
            if wake > now {
                std::thread::sleep(wake - now);
            }
        }
        self.publish(epoch.elapsed());
        if let Some(rec) = self.recorder.take() {
            rec.finish();
        }
        if let Err(e) = self.sink.finish() {
            tracing::warn!("could not finish the output file: {e}");
        }
    }

    /// Decides and plays the next piece of audio: drains the socket (packets carry their
    /// kernel arrival times), takes one decision from the jitter buffer (a frame, stretched or
    /// not; or silence while buffering) and hands all of it to the sink at once. Returns the
    /// samples played, which set when this runs next.
    fn play(&mut self, epoch: Instant) -> usize {
        self.sink.maintain();
        let now_us = epoch.elapsed().as_micros() as u64;
        let jb = &mut self.jb;
        self.transport.poll(now_us, |r| match r.copy {
            false => jb.insert(r.arrival_us, r.seq, r.timestamp, r.payload),
            true => jb.insert_copy(r.seq, r.timestamp, r.payload),
        });
        self.playout.clear();
        self.decode_one(now_us);
        if self.playout.is_empty() {
            self.playout.resize(QUANTUM, 0.0);
        }
        let out = &self.playout[..];
        self.levels
            .output
            .store(peak(out).to_bits(), Ordering::Relaxed);
        if let Err(e) = self.sink.write(out) {
            if !self.sink_failed {
                tracing::warn!("output file write failed: {e}");
                self.sink_failed = true;
            }
        }
        if let Some(rec) = &mut self.recorder {
            rec.played(out);
        }
        self.transport.maybe_report(now_us);
        self.playout.len()
    }

    /// Frames the send schedule missed in a stall: skipped in the source and the RTP clock.
    fn skip_frames(&mut self, frames: u32) {
        let samples = u64::from(frames) * self.frame as u64;
        self.source.skip(samples);
        self.transport.skip_samples(samples);
    }

    /// Playout time lost in a stall: silence in a file sink and in a call recording (a device
    /// has already played it), at most [`MAX_GAP_FILL`] of it.
    fn play_gap(&mut self, samples: u64) {
        let mut left = samples.min(MAX_GAP_FILL);
        tracing::warn!(
            "media thread stalled for {} ms; the gap is silence",
            samples / 48
        );
        if !self.sink.keeps_time() && self.recorder.is_none() {
            return;
        }
        self.playout.clear();
        self.playout.resize(self.playout.capacity(), 0.0);
        while left > 0 {
            let n = (left as usize).min(self.playout.len());
            let silence = &self.playout[..n];
            if self.sink.keeps_time() {
                let _ = self.sink.write(silence);
            }
            if let Some(rec) = &mut self.recorder {
                rec.played(silence);
            }
            left -= n as u64;
        }
    }

    /// Captures, encodes and sends one frame.
    fn send(&mut self, now_us: u64) {
        self.source.maintain();
        self.source.read(&mut self.capture);
        if self.muted.load(Ordering::Relaxed) {
            self.capture.fill(0.0);
        }
        self.levels
            .input
            .store(peak(&self.capture).to_bits(), Ordering::Relaxed);
        if let Some(rec) = &mut self.recorder {
            rec.captured(&self.capture);
        }
        if let Some(lost) = self.transport.take_peer_report() {
            self.protection.on_report(now_us, lost);
            self.encoder
                .set_inband_fec(self.protection.current().inband_fec_perc);
        }
        let copies = self.protection.current().copies;
        match self.encoder.encode(&self.capture, &mut self.packet) {
            // With DTX, Opus marks silence with packets of 1-2 bytes: send one every 400 ms
            // (so the peer keeps its comfort noise) and skip the rest.
            Ok(n) if self.codec.dtx && n <= 2 && !self.dtx_run.is_multiple_of(20) => {
                self.dtx_run += 1;
                self.transport.skip_frame(self.frame as u32);
            }
            Ok(n) => {
                self.dtx_run = if n <= 2 { self.dtx_run + 1 } else { 0 };
                self.transport
                    .send_frame(&self.packet[..n], self.frame as u32, copies);
            }
            Err(_) => self.transport.skip_frame(self.frame as u32),
        }
    }

    /// Pulls one decision from the jitter buffer and appends its audio to the playout queue.
    fn decode_one(&mut self, now_us: u64) {
        let frame = self.frame;
        let (decision, advice) = self.jb.pop(now_us, self.playout.len());
        let dec = &mut self.decoder;
        let buf = &mut self.decoded;
        let n = match decision {
            // Silence while buffering: a quantum, or just enough to start on the dot once the
            // first packet is due (at least 1 ms, so the thread does not spin).
            Decision::Buffering { ready_in_ms } => {
                let n = ready_in_ms.map_or(QUANTUM, |ms| {
                    ((ms * 48.0).ceil() as usize).clamp(MIN_SILENCE, QUANTUM)
                });
                buf[..n].fill(0.0);
                Ok(n)
            }
            Decision::Normal(p) => dec.decode(p, buf).or_else(|_| dec.conceal(buf)),
            Decision::Fec(next) => dec.decode_fec(next, buf).or_else(|_| dec.conceal(buf)),
            Decision::Conceal | Decision::Dtx => dec.conceal(buf),
        };
        let n = match n {
            Ok(n) if n > 0 => n,
            _ => {
                buf[..frame].fill(0.0);
                frame
            }
        };
        let pcm = &self.decoded[..n];
        self.quiet.observe(pcm);
        // A stretch that can wait (room for loss recovery) happens in a quiet frame (a pause, or
        // far below the recent speech level); once the buffer has asked for longer than the
        // limit without a break, in every frame until done.
        let (advice, wait_limit) = match advice {
            Stretch::ExpandInPause(max) => (Stretch::Expand(max), Some(ROOM_WAIT_FRAMES)),
            now => (now, None),
        };
        let go = match wait_limit {
            None => {
                self.room_wait = 0;
                true
            }
            Some(limit) => {
                self.room_wait += 1;
                self.quiet.is_quiet() || self.room_wait > limit
            }
        };
        let moved = match advice {
            _ if !go => 0,
            Stretch::Accelerate(max) => {
                -(stretch::accelerate(pcm, max, &mut self.stretched) as i64)
            }
            Stretch::Expand(max) => stretch::expand(pcm, max, &mut self.stretched) as i64,
            _ => 0,
        };
        if moved == 0 {
            self.playout.extend_from_slice(pcm);
        } else {
            self.playout.extend_from_slice(&self.stretched);
            self.jb.on_stretched(moved);
        }
    }

    fn publish(&mut self, elapsed: Duration) {
        let t = self.transport.stats();
        let j = self.jb.stats();
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rtt = t.rtt_ms;
        let latency_samples = self.source.latency_samples()
            + self.frame
            + self.lookahead
            + self.sink.latency_samples();
        let s = MediaStats {
            duration_s: secs,
            packets_sent: t.packets_sent,
            packets_received: t.packets_received,
            packets_lost: t.packets_lost,
            fec_recovered: j.fec_recovered,
            copy_recovered: j.copy_recovered,
            copies_sent: self.protection.current().copies as u8,
            concealed: j.concealed,
            late: j.late,
            duplicates: j.duplicates,
            dropped_auth: t.dropped_auth,
            dropped_foreign: t.dropped_foreign + t.dropped_ssrc,
            jitter_ms: t.jitter_ms,
            rtt_ms: rtt,
            jitter_buffer_ms: j.delay_ms,
            jitter_target_ms: j.target_ms,
            latency_ms: latency_samples as f64 / 48.0 + rtt.unwrap_or(0.0) / 2.0 + j.delay_ms,
            bitrate_kbps: t.bytes_sent as f64 * 8.0 / secs / 1000.0,
            peer_loss: t.peer_loss,
            stretched_ms: (j.accelerated_samples + j.expanded_samples) as f64 / 48.0,
            cpu_percent: self.busy.as_secs_f64() / secs * 100.0,
        };
        if let Ok(mut slot) = self.stats.try_lock() {
            *slot = s;
        }
    }
}
