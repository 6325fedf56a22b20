//! Call screens: calling out, the incoming-call dialog, the call itself, and how it ended.

use std::time::Instant;

use fala_proto::call::CallState;

use super::widgets::{self, Tone};
use crate::app::call_stats::{CallStats, Quality};
use crate::app::i18n::fill;
use crate::app::App;
use crate::client::contacts::KeyCheck;
use crate::client::history::clock;
use crate::client::AudioState;
use crate::media::MediaPath;

/// "Calling NAME…" until the server answers, then "Ringing NAME…", with Cancel.
pub fn outgoing(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let ctx = ui.ctx().clone();
    let (text, since) = match app.model().calls.state() {
        CallState::Dialing { peer, since } => (fill(tr.calling, peer), *since),
        CallState::RingingOut { peer, since, .. } => (fill(tr.ringing, peer), *since),
        _ => return,
    };
    ui.vertical_centered(|ui| {
        ui.add_space(60.0);
        ui.heading(egui::RichText::new(text).size(26.0));
        ui.add_space(10.0);
        // How long it has been ringing, updated once a second (no animation: software
        // rendering makes every extra frame cost CPU).
        ui.label(egui::RichText::new(clock(since.elapsed().as_secs())).size(20.0));
        ui.add_space(20.0);
        if ui
            .add_sized([140.0, 36.0], egui::Button::new(tr.cancel))
            .clicked()
        {
            app.hangup(&ctx);
        }
        ui.weak(fill(tr.hang_up_hotkey, &app.settings.hangup_key));
    });
}

/// A modal with the caller's name, Accept and Decline (Y / N work too), and Block for an
/// unwanted caller.
pub fn incoming_dialog(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let ctx = ui.ctx().clone();
    let Some(peer) = app.model().calls.peer().map(str::to_string) else {
        return;
    };
    let mut choice = None;
    let mut block = false;
    egui::Modal::new(egui::Id::unique("incoming_call")).show(&ctx, |ui| {
        ui.set_width(320.0);
        ui.vertical_centered(|ui| {
            ui.heading(tr.incoming_title);
            ui.add_space(8.0);
            ui.label(egui::RichText::new(fill(tr.incoming_from, &peer)).size(20.0));
            ui.add_space(8.0);
            match app.model().key_check {
                Some(KeyCheck::Changed) => widgets::banner(
                    ui,
                    Tone::Error,
                    &tr.identity_changed_incoming.replace("{}", &peer),
                ),
                Some(KeyCheck::Known { verified: true }) => {
                    widgets::banner(ui, Tone::Info, &fill(tr.identity_verified, &peer))
                }
                _ => {}
            }
            ui.add_space(12.0);
            ui.horizontal(|ui| {
                ui.add_space(40.0);
                let accept = egui::Button::new(egui::RichText::new(tr.accept).strong())
                    .fill(egui::Color32::from_rgb(40, 140, 70));
                if ui.add_sized([110.0, 34.0], accept).clicked() {
                    choice = Some(true);
                }
                let decline =
                    egui::Button::new(tr.decline).fill(egui::Color32::from_rgb(170, 50, 50));
                if ui.add_sized([110.0, 34.0], decline).clicked() {
                    choice = Some(false);
                }
            });
            ui.add_space(6.0);
            ui.weak(tr.answer_keys);
            if ui.small_button(tr.block).clicked() {
                block = true;
            }
        });
    });
    if block {
        return app.block(&peer, &ctx);
    }
    match choice {
        Some(true) => app.accept(&ctx),
        Some(false) => app.decline(&ctx),
        None => {}
    }
}

/// Peer, timer, mute, meters, statistics, record and hang up.
pub fn in_call(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let ctx = ui.ctx().clone();
    let peer = app.model().calls.peer().unwrap_or_default().to_string();
    let talked = app
        .model()
        .calls
        .talk_time(Instant::now())
        .unwrap_or_default();
    ui.vertical_centered(|ui| {
        ui.add_space(12.0);
        ui.heading(egui::RichText::new(fill(tr.in_call_with, &peer)).size(24.0));
        ui.label(
            egui::RichText::new(clock(talked.as_secs()))
                .size(34.0)
                .strong(),
        );
    });
    ui.add_space(8.0);
    audio_banners(app, ui);
    identity_panel(app, ui, &peer);
    ui.columns(2, |cols| {
        egui::Frame::group(cols[0].style()).show(&mut cols[0], |ui| {
            ui.set_width(ui.available_width());
            let (input, output) =
                app.phone
                    .media()
                    .and_then(|m| m.running())
                    .map_or((0.0, 0.0), |call| {
                        let levels = call.levels();
                        (levels.input(), levels.output())
                    });
            widgets::level_meter(ui, tr.level_input, input);
            widgets::level_meter(ui, tr.level_output, output);
        });
        egui::Frame::group(cols[1].style()).show(&mut cols[1], |ui| {
            ui.set_width(ui.available_width());
            stats_grid(app, ui);
        });
    });
    ui.add_space(12.0);
    ui.horizontal(|ui| {
        let mute_label = if app.model().muted {
            tr.unmute
        } else {
            tr.mute
        };
        if ui
            .add_sized([110.0, 34.0], egui::Button::new(mute_label))
            .clicked()
        {
            app.toggle_mute();
        }
        if app.ui.recording.is_some() {
            if ui
                .add_sized([140.0, 34.0], egui::Button::new(tr.stop_recording))
                .clicked()
            {
                app.stop_recording();
            }
        } else if ui
            .add_sized([110.0, 34.0], egui::Button::new(tr.record))
            .clicked()
        {
            app.ask_record_path(&ctx);
        }
        let hang_up = egui::Button::new(egui::RichText::new(tr.hang_up).strong())
            .fill(egui::Color32::from_rgb(170, 50, 50));
        if ui.add_sized([130.0, 34.0], hang_up).clicked() {
            app.hangup(&ctx);
        }
        ui.weak(fill(tr.hang_up_hotkey, &app.settings.hangup_key));
    });
    if app.model().muted {
        ui.colored_label(ui.visuals().warn_fg_color, tr.muted);
    }
    if let Some(path) = &app.ui.recording {
        ui.label(fill(tr.recording_to, path.display()));
    }
    if let Some(e) = &app.ui.record_error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
}

/// Who is on the other end: a warning if their identity key changed, else the safety number
/// to compare once and a box to mark them verified.
fn identity_panel(app: &mut App, ui: &mut egui::Ui, peer: &str) {
    let tr = app.tr();
    if peer == crate::client::model::ECHO_USER {
        return;
    }
    if app.model().key_check == Some(KeyCheck::Changed) {
        widgets::banner(ui, Tone::Error, &fill(tr.identity_changed_in_call, peer));
        ui.add_space(8.0);
        return;
    }
    let Some(number) = app.safety_number(peer) else {
        return;
    };
    let mut verified = app.model().contacts.get(peer).is_some_and(|c| c.verified);
    egui::CollapsingHeader::new(fill(tr.safety_number_with, peer))
        .id_salt("safety_number")
        .default_open(!verified)
        .show(ui, |ui| {
            ui.label(
                egui::RichText::new(group_rows(&number))
                    .monospace()
                    .size(15.0),
            );
            ui.weak(tr.safety_number_help);
            if ui.checkbox(&mut verified, tr.mark_verified).changed() {
                app.set_contact_verified(peer, verified);
            }
        });
    ui.add_space(8.0);
}

/// Sixty digits as three rows of four groups, easier to read aloud.
fn group_rows(number: &str) -> String {
    let groups: Vec<&str> = number.split(' ').collect();
    groups
        .chunks(4)
        .map(|row| row.join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether audio runs (or why not) and the security code to compare.
fn audio_banners(app: &App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let link = app.phone.media();
    match link.map_or(&AudioState::NoEngine, |m| m.state()) {
        AudioState::NoEngine => widgets::banner(ui, Tone::Warning, tr.engine_missing),
        AudioState::Failed(why) => widgets::banner(ui, Tone::Warning, &fill(tr.audio_failed, why)),
        state => {
            match link.and_then(|m| m.sas()) {
                Some(code) => widgets::banner(ui, Tone::Info, &fill(tr.encrypted_code, code)),
                None => widgets::banner(ui, Tone::Warning, tr.not_encrypted),
            }
            if *state == AudioState::Opening {
                ui.add_space(4.0);
                widgets::banner(ui, Tone::Info, tr.audio_opening);
            }
            if let Some(missing) = missing_devices(app) {
                ui.add_space(4.0);
                widgets::banner(ui, Tone::Warning, missing);
            }
            if let Some(seconds) = silent_seconds(app) {
                ui.add_space(4.0);
                let text = fill(tr.no_audio_for, seconds.to_string());
                widgets::banner(ui, Tone::Warning, &text);
            }
        }
    }
    ui.add_space(8.0);
}

/// How long nothing has come from the peer, once that is long enough to say so.
fn silent_seconds(app: &App) -> Option<u32> {
    let stats = app.phone.media()?.running()?.stats();
    let silent = stats.silent_for_ms >= crate::client::audio_watch::NO_AUDIO_AFTER_MS;
    silent.then_some((stats.silent_for_ms / 1000.0) as u32)
}

/// One line when the call has no microphone or no speaker (none found, none would open, or
/// the one in use vanished and none is back yet), saying where to choose one.
fn missing_devices(app: &App) -> Option<&'static str> {
    let tr = app.tr();
    let stats = app.phone.media()?.running()?.stats();
    match (stats.microphone_missing, stats.speaker_missing) {
        (true, true) => Some(tr.no_sound_devices),
        (true, false) => Some(tr.no_microphone),
        (false, true) => Some(tr.no_speaker),
        (false, false) => None,
    }
}

/// "2 copies · 92 % restored": what the engine adds to each packet now, and how much of what
/// the network lost came back.
fn protection(tr: &crate::app::i18n::Strings, stats: &CallStats) -> String {
    let mode = match stats.copies_sent {
        None => return tr.no_value.to_string(),
        Some(0) => tr.protection_none.to_string(),
        Some(1) => format!("1 {}", tr.protection_copy),
        Some(n) => format!("{n} {}", tr.protection_copies),
    };
    match stats.restored_pct {
        Some(p) => format!("{mode} · {p:.0} % {}", tr.stat_restored),
        None => mode,
    }
}

fn stats_grid(app: &App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let stats = app
        .phone
        .media()
        .and_then(|m| m.running())
        .map(|call| CallStats::from(&call.stats()))
        .unwrap_or_default();
    let show = |v: Option<f32>, unit: &str, digits: usize| match v {
        Some(v) => format!("{v:.digits$} {unit}"),
        None => tr.no_value.to_string(),
    };
    egui::Grid::new("call_stats")
        .num_columns(2)
        .spacing([24.0, 4.0])
        .striped(true)
        .show(ui, |ui| {
            for (label, value) in [
                (tr.stat_rtt, show(stats.rtt_ms, "ms", 0)),
                (tr.stat_loss, show(stats.loss_pct, "%", 1)),
                (tr.stat_jitter, show(stats.jitter_ms, "ms", 1)),
                (tr.stat_buffer, show(stats.jitter_buffer_ms, "ms", 0)),
                (tr.stat_bitrate, show(stats.send_kbps, "kbit/s", 1)),
                (tr.stat_protection, protection(tr, &stats)),
                (
                    tr.stat_path,
                    match stats.path {
                        Some(MediaPath::Relay) => tr.path_relay.to_string(),
                        Some(MediaPath::Tcp) => tr.path_tcp.to_string(),
                        Some(MediaPath::Direct) => tr.path_direct.to_string(),
                        None => tr.no_value.to_string(),
                    },
                ),
            ] {
                ui.label(label);
                ui.monospace(value);
                ui.end_row();
            }
            ui.label(tr.stat_quality);
            match stats.quality() {
                Some(q) => {
                    let (word, color) = match q {
                        Quality::Good => (tr.quality_good, egui::Color32::from_rgb(60, 180, 90)),
                        Quality::Fair => (tr.quality_fair, egui::Color32::from_rgb(220, 170, 40)),
                        Quality::Poor => (tr.quality_poor, egui::Color32::from_rgb(220, 60, 60)),
                    };
                    ui.colored_label(color, word);
                }
                None => {
                    ui.monospace(tr.no_value);
                }
            }
            ui.end_row();
        });
}

/// How the last call ended, in words, until dismissed or the next call.
pub fn ended_banner(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let CallState::Ended {
        peer,
        outcome,
        talked,
        ..
    } = app.model().calls.state()
    else {
        return;
    };
    let mut text = format!("{} {}.", fill(tr.call_ended, peer), tr.outcome(outcome));
    if let Some(d) = talked {
        text.push(' ');
        text.push_str(&fill(tr.call_lasted, clock(d.as_secs())));
    }
    let mut dismiss = false;
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.horizontal(|ui| {
            ui.label(egui::RichText::new(text).strong());
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                dismiss = ui.button(tr.ok).clicked();
            });
        });
    });
    if dismiss {
        app.phone.model_mut().ended_dismissed = true;
    }
}
