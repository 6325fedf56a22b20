//! The connect screen: name, server, Register; the advertised IPv4 folded under Advanced;
//! problems in place.

use super::widgets::{self, Tone};
use crate::app::i18n::fill;
use crate::app::App;
use crate::client::model::{ConnectProblem, Registration};

/// Width of the centred form.
const FORM_WIDTH: f32 = 460.0;

pub fn draw(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    ui.vertical_centered(|ui| {
        ui.add_space(28.0);
        ui.heading(egui::RichText::new("Fala").size(34.0).strong());
        ui.label(tr.connect_heading);
        ui.add_space(18.0);
        ui.allocate_ui(egui::vec2(FORM_WIDTH, 0.0), |ui| {
            ui.set_width(FORM_WIDTH);
            egui::Frame::group(ui.style())
                .inner_margin(16.0)
                .show(ui, |ui| {
                    ui.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                        form(app, ui);
                        problem(app, ui);
                    });
                });
        });
    });
}

fn form(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let ctx = ui.ctx().clone();
    let connecting = matches!(app.model().registration, Registration::Connecting { .. });
    let mut submit = false;
    egui::Grid::new("connect_form")
        .num_columns(2)
        .spacing([12.0, 10.0])
        .show(ui, |ui| {
            let label = ui.label(tr.your_name);
            let r = ui
                .add(
                    egui::TextEdit::singleline(&mut app.settings.name)
                        .desired_width(240.0)
                        .id_salt("name"),
                )
                .labelled_by(label.id);
            submit |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            ui.end_row();
            let label = ui.label(tr.server_address);
            ui.add(
                egui::TextEdit::singleline(&mut app.settings.server)
                    .desired_width(240.0)
                    .id_salt("server"),
            )
            .labelled_by(label.id);
            ui.end_row();
        });
    advanced(app, ui);
    ui.add_space(12.0);
    ui.horizontal(|ui| {
        let register = ui.add_enabled(
            !connecting,
            egui::Button::new(egui::RichText::new(tr.register).strong())
                .min_size(egui::vec2(110.0, 30.0)),
        );
        if (register.clicked() || submit) && !connecting {
            app.connect(&ctx);
        }
        if connecting {
            ui.spinner();
            ui.label(tr.connecting);
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button(tr.tab_settings).clicked() {
                app.ui.settings_from_connect = true;
            }
        });
    });
}

/// What only someone debugging a network needs: folded away, open when it holds a value (or
/// the value was refused).
fn advanced(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let needed = app.settings.plain
        || app.settings.allow_unencrypted
        || app.settings.always_relay
        || !app.settings.advertised_ip.trim().is_empty()
        || matches!(
            app.model().problem,
            Some(ConnectProblem::AdvertisedIpInvalid)
        );
    ui.add_space(6.0);
    egui::CollapsingHeader::new(tr.advanced)
        .id_salt("connect_advanced")
        .default_open(needed)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                let label = ui.label(tr.advertised_ip);
                ui.add(
                    egui::TextEdit::singleline(&mut app.settings.advertised_ip)
                        .desired_width(200.0)
                        .hint_text(tr.advertised_ip_hint)
                        .id_salt("advertise"),
                )
                .labelled_by(label.id);
            });
            ui.weak(tr.advertised_ip_help);
            ui.checkbox(&mut app.settings.plain, tr.plain_connection);
            ui.checkbox(
                &mut app.settings.allow_unencrypted,
                tr.allow_unencrypted_calls,
            );
            ui.checkbox(&mut app.settings.always_relay, tr.always_relay);
        });
}

/// Why the last attempt failed, and the local-server offer when it applies.
fn problem(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let ctx = ui.ctx().clone();
    let Some(problem) = app.model().problem.clone() else {
        return;
    };
    ui.add_space(12.0);
    let text = match &problem {
        ConnectProblem::NameTaken(name) => fill(tr.name_taken, name),
        ConnectProblem::NameOwned(why) => fill(tr.name_owned, why),
        ConnectProblem::NameInvalid(why) => fill(tr.name_invalid, why),
        ConnectProblem::AdvertisedIpInvalid => tr.advertised_ip_invalid.to_string(),
        ConnectProblem::Unreachable { server, .. } => fill(tr.server_unreachable, server),
        ConnectProblem::MediaPort(e) => fill(tr.media_port_failed, e),
        ConnectProblem::LocalServer(e) => fill(tr.local_server_failed, e),
        ConnectProblem::Untrusted(why) => fill(tr.server_untrusted, why),
        ConnectProblem::Other(message) => message.clone(),
    };
    widgets::banner(ui, Tone::Error, &text);
    if let ConnectProblem::Unreachable {
        detail,
        offer_local_server,
        ..
    } = problem
    {
        ui.weak(detail);
        if offer_local_server {
            ui.add_space(8.0);
            widgets::banner(ui, Tone::Info, tr.offer_local_server);
            ui.add_space(4.0);
            if ui
                .add(egui::Button::new(tr.start_local_server).min_size(egui::vec2(0.0, 30.0)))
                .clicked()
            {
                app.start_local_server(&ctx);
            }
        }
    }
}
