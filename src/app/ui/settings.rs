//! Settings: audio devices (with a mic meter and a test tone), hang-up key, frame size,
//! bitrate, loss protection, language and theme. Changes are saved by the app at the end of the frame.

use super::widgets::{self, Tone};
use crate::app::i18n::{fill, Lang};
use crate::app::settings::{Theme, BITRATES_KBPS, HANGUP_KEYS, MAX_COPIES};
use crate::app::App;

pub fn draw(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    ui.heading(tr.settings_heading);
    ui.add_space(8.0);
    egui::ScrollArea::vertical()
        .id_salt("settings")
        .show(ui, |ui| {
            ui.strong(tr.audio);
            let wake = ui.ctx().clone();
            let devices = app.sounds.devices(move || wake.request_repaint()).clone();
            egui::Grid::new("audio_settings")
                .num_columns(2)
                .spacing([16.0, 8.0])
                .show(ui, |ui| {
                    ui.label(tr.input_device);
                    device_combo(
                        ui,
                        "input",
                        &mut app.settings.input_device,
                        &devices.inputs,
                        tr.system_default,
                    );
                    ui.end_row();
                    ui.label(tr.output_device);
                    device_combo(
                        ui,
                        "output",
                        &mut app.settings.output_device,
                        &devices.outputs,
                        tr.system_default,
                    );
                    ui.end_row();
                });
            if !app.sounds.enabled() {
                widgets::banner(ui, Tone::Info, tr.devices_placeholder);
            }
            app.ui.settings_drawn = true;
            let monitoring = app.sounds.enabled() && !app.model().calls.is_busy();
            let input = app.settings.input_device.clone();
            app.sounds.monitor_input(monitoring.then_some(input));
            if monitoring {
                // The meter moves only while the engine feeds it.
                ui.ctx().request_repaint_after(crate::app::LIVE_REPAINT);
            }
            widgets::level_meter(ui, tr.mic_level, app.sounds.mic_level());
            if ui.button(tr.test_tone).clicked() {
                let output = app.settings.output_device.clone();
                app.ui.media_note = app
                    .sounds
                    .play_test_tone(output)
                    .err()
                    .map(|e| e.to_string());
            }
            if let Some(note) = &app.ui.media_note {
                ui.colored_label(ui.visuals().warn_fg_color, note);
            }
            ui.add_space(12.0);

            egui::Grid::new("call_settings")
                .num_columns(2)
                .spacing([16.0, 8.0])
                .show(ui, |ui| {
                    ui.label(tr.hotkey);
                    egui::ComboBox::from_id_salt("hangup_key")
                        .selected_text(app.settings.hangup_key.clone())
                        .show_ui(ui, |ui| {
                            for key in HANGUP_KEYS {
                                ui.selectable_value(
                                    &mut app.settings.hangup_key,
                                    key.to_string(),
                                    key,
                                );
                            }
                        });
                    ui.end_row();
                    ui.label(tr.frame_size);
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut app.settings.frame_ms, 10, "10 ms");
                        ui.radio_value(&mut app.settings.frame_ms, 20, "20 ms");
                    });
                    ui.end_row();
                    ui.label(tr.bitrate);
                    egui::ComboBox::from_id_salt("bitrate")
                        .selected_text(format!("{} kbit/s", app.settings.bitrate_kbps))
                        .show_ui(ui, |ui| {
                            for kbps in BITRATES_KBPS {
                                ui.selectable_value(
                                    &mut app.settings.bitrate_kbps,
                                    kbps,
                                    format!("{kbps} kbit/s"),
                                );
                            }
                        });
                    ui.end_row();
                    ui.label(tr.loss_protection);
                    let choice = |copies: u8| {
                        let i = MAX_COPIES.iter().position(|&c| c == copies).unwrap_or(0);
                        tr.loss_protection_choices[i]
                    };
                    egui::ComboBox::from_id_salt("loss_protection")
                        .selected_text(choice(app.settings.max_copies))
                        .show_ui(ui, |ui| {
                            for copies in MAX_COPIES {
                                ui.selectable_value(
                                    &mut app.settings.max_copies,
                                    copies,
                                    choice(copies),
                                );
                            }
                        });
                    ui.end_row();
                    ui.label(tr.language);
                    egui::ComboBox::from_id_salt("language")
                        .selected_text(app.settings.language.native_name())
                        .show_ui(ui, |ui| {
                            for lang in Lang::ALL {
                                ui.selectable_value(
                                    &mut app.settings.language,
                                    lang,
                                    lang.native_name(),
                                );
                            }
                        });
                    ui.end_row();
                    ui.label(tr.theme);
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut app.settings.theme, Theme::Light, tr.theme_light);
                        ui.radio_value(&mut app.settings.theme, Theme::Dark, tr.theme_dark);
                    });
                    ui.end_row();
                });
            ui.add_space(8.0);
            ui.weak(tr.settings_apply_next_call);
            if let Some(e) = &app.ui.settings_error {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    fill(tr.settings_save_failed, e),
                );
            }
        });
}

/// A device picker: the system default, then the engine's devices by name.
fn device_combo(
    ui: &mut egui::Ui,
    id: &str,
    chosen: &mut Option<String>,
    devices: &[String],
    default_label: &str,
) {
    let shown = chosen.clone().unwrap_or_else(|| default_label.to_string());
    egui::ComboBox::from_id_salt(id)
        .selected_text(shown)
        .width(260.0)
        .show_ui(ui, |ui| {
            ui.selectable_value(chosen, None, default_label);
            for d in devices {
                ui.selectable_value(chosen, Some(d.clone()), d);
            }
        });
}
