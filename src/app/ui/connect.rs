//! The connect screen: name, server, optional advertised IPv4, Register; problems in place.

use super::widgets::{self, Tone};
use crate::app::i18n::fill;
use crate::app::logic::{ConnectProblem, Session};
use crate::app::App;

pub fn draw(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let ctx = ui.ctx().clone();
    let connecting = matches!(app.model.session, Session::Connecting { .. });
    ui.vertical_centered(|ui| {
        ui.add_space(24.0);
        ui.heading(egui::RichText::new("Fala").size(32.0));
        ui.label(tr.connect_heading);
        ui.add_space(16.0);
    });
    let mut submit = false;
    egui::Grid::new("connect_form")
        .num_columns(2)
        .spacing([12.0, 10.0])
        .show(ui, |ui| {
            ui.label(tr.your_name);
            let r = ui.add(
                egui::TextEdit::singleline(&mut app.settings.name)
                    .desired_width(260.0)
                    .id_salt("name"),
            );
            submit |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            ui.end_row();
            ui.label(tr.server_address);
            ui.add(
                egui::TextEdit::singleline(&mut app.settings.server)
                    .desired_width(260.0)
                    .id_salt("server"),
            );
            ui.end_row();
            ui.label(tr.advertised_ip);
            ui.add(
                egui::TextEdit::singleline(&mut app.settings.advertised_ip)
                    .desired_width(260.0)
                    .hint_text(tr.advertised_ip_hint)
                    .id_salt("advertise"),
            );
            ui.end_row();
        });
    ui.add_space(12.0);
    ui.horizontal(|ui| {
        let register = ui.add_enabled(!connecting, egui::Button::new(tr.register));
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
    ui.add_space(12.0);
    let Some(problem) = app.model.problem.clone() else {
        return;
    };
    let text = match &problem {
        ConnectProblem::NameTaken(name) => fill(tr.name_taken, name),
        ConnectProblem::NameInvalid(why) => fill(tr.name_invalid, why),
        ConnectProblem::AdvertisedIpInvalid => tr.advertised_ip_invalid.to_string(),
        ConnectProblem::Unreachable { server, detail, .. } => {
            format!("{} ({detail})", fill(tr.server_unreachable, server))
        }
        ConnectProblem::MediaPort(e) => fill(tr.media_port_failed, e),
        ConnectProblem::LocalServer(e) => fill(tr.local_server_failed, e),
        ConnectProblem::Other(message) => message.clone(),
    };
    widgets::banner(ui, Tone::Error, &text);
    if let ConnectProblem::Unreachable {
        offer_local_server: true,
        ..
    } = problem
    {
        ui.add_space(8.0);
        widgets::banner(ui, Tone::Info, tr.offer_local_server);
        if ui.button(tr.start_local_server).clicked() {
            app.start_local_server(&ctx);
        }
    }
}
