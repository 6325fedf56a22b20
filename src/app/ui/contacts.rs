//! The main screen: who is online (live), a filter, a name look-up and the sound test.

use fala_proto::Availability;

use super::widgets;
use crate::app::i18n::fill;
use crate::app::App;
use crate::client::model::{Lookup, ECHO_USER};

pub fn draw(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let ctx = ui.ctx().clone();
    let can_call = app.model().is_online() && !app.model().calls.is_busy();
    let mut to_call: Option<String> = None;

    ui.columns(2, |cols| {
        // Left: online users.
        let ui = &mut cols[0];
        ui.heading(tr.online_users);
        ui.horizontal(|ui| {
            let label = ui.label(tr.filter_label);
            ui.add(
                egui::TextEdit::singleline(&mut app.ui.filter)
                    .hint_text(tr.filter_hint)
                    .id_salt("filter")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        });
        ui.add_space(6.0);
        let filter = app.ui.filter.clone();
        let users: Vec<_> = app.model().visible_users(&filter).cloned().collect();
        if users.is_empty() {
            let empty = if filter.trim().is_empty() {
                tr.nobody_online
            } else {
                tr.nobody_matches
            };
            ui.weak(empty);
        }
        egui::ScrollArea::vertical()
            .id_salt("users")
            .show(ui, |ui| {
                for user in users {
                    ui.horizontal(|ui| {
                        let available = user.status == Availability::Available;
                        widgets::status_dot(ui, available);
                        ui.label(egui::RichText::new(&user.name).strong());
                        ui.weak(if available {
                            tr.available
                        } else {
                            tr.in_a_call
                        });
                        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                            let call = ui.add_enabled(can_call, egui::Button::new(tr.call));
                            if call.clicked() {
                                to_call = Some(user.name.clone());
                            }
                        });
                    });
                    ui.separator();
                }
            });

        // Right: look-up and sound test.
        let ui = &mut cols[1];
        let heading = ui.heading(tr.lookup_heading);
        let mut go = false;
        ui.horizontal(|ui| {
            let r = ui
                .add(
                    egui::TextEdit::singleline(&mut app.ui.lookup_text)
                        .hint_text(tr.lookup_hint)
                        .id_salt("lookup")
                        .desired_width(160.0),
                )
                .labelled_by(heading.id);
            go |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            go |= ui
                .add_enabled(app.model().is_online(), egui::Button::new(tr.lookup_button))
                .clicked();
        });
        if go {
            let name = app.ui.lookup_text.clone();
            app.lookup(&name, &ctx);
        }
        match &app.model().lookup {
            Lookup::Idle => {}
            Lookup::Pending(_) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(tr.lookup_searching);
                });
            }
            Lookup::NotFound(name) => {
                widgets::banner(ui, widgets::Tone::Warning, &fill(tr.lookup_not_found, name));
            }
            Lookup::Found(user) => {
                let available = user.status == Availability::Available;
                ui.horizontal(|ui| {
                    widgets::status_dot(ui, available);
                    ui.label(fill(tr.lookup_found, &user.name));
                    ui.weak(if available {
                        tr.available
                    } else {
                        tr.in_a_call
                    });
                    if ui
                        .add_enabled(can_call, egui::Button::new(tr.call))
                        .clicked()
                    {
                        to_call = Some(user.name.clone());
                    }
                });
            }
        }
        ui.add_space(20.0);
        ui.heading(tr.sound_test_heading);
        ui.label(tr.sound_test_hint);
        ui.horizontal(|ui| {
            if ui
                .add_enabled(can_call, egui::Button::new(tr.sound_test_button))
                .clicked()
            {
                to_call = Some(ECHO_USER.to_string());
            }
        });
    });

    if let Some(peer) = to_call {
        app.call(&peer, &ctx);
    }
}
