//! Drawing, one file per screen. Screens read the [`App`] and call its action methods; they
//! hold no state of their own beyond widget text.

mod call;
mod connect;
mod contacts;
mod history;
mod settings;
mod widgets;

use fala_proto::call::CallState;

use super::{i18n::fill, App, Tab};
use crate::client::model::{Notice, Registration};

/// Draws the whole window for this frame.
pub fn draw(app: &mut App, ui: &mut egui::Ui) {
    app.ui.settings_drawn = false;
    draw_screens(app, ui);
    if !app.ui.settings_drawn {
        // Leaving the settings screen closes the microphone its level meter opened.
        app.sounds.monitor_input(None);
    }
}

fn draw_screens(app: &mut App, ui: &mut egui::Ui) {
    if app.model().on_connect_screen() {
        if app.ui.settings_from_connect {
            egui::CentralPanel::default_margins().show(ui, |ui| {
                if ui.button(app.tr().back).clicked() {
                    app.ui.settings_from_connect = false;
                }
                settings::draw(app, ui);
            });
        } else {
            egui::CentralPanel::default_margins().show(ui, |ui| connect::draw(app, ui));
        }
        return;
    }
    top_bar(app, ui);
    egui::CentralPanel::default_margins().show(ui, |ui| {
        banners(app, ui);
        match app.model().calls.state() {
            CallState::Dialing { .. } | CallState::RingingOut { .. } => call::outgoing(app, ui),
            CallState::InCall { .. } => call::in_call(app, ui),
            _ => match app.ui.tab {
                Tab::Contacts => contacts::draw(app, ui),
                Tab::History => history::draw(app, ui),
                Tab::Settings => settings::draw(app, ui),
            },
        }
    });
    if matches!(app.model().calls.state(), CallState::RingingIn { .. }) {
        call::incoming_dialog(app, ui);
    }
}

/// Who we are, the pages, and Disconnect.
fn top_bar(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    egui::Panel::top("top_bar").show(ui, |ui| {
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            ui.heading("Fala");
            ui.separator();
            for (tab, label) in [
                (Tab::Contacts, tr.tab_contacts),
                (Tab::History, tr.tab_history),
                (Tab::Settings, tr.tab_settings),
            ] {
                ui.selectable_value(&mut app.ui.tab, tab, label);
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let disconnecting = matches!(app.model().registration, Registration::Disconnecting);
                if ui
                    .add_enabled(!disconnecting, egui::Button::new(tr.disconnect))
                    .clicked()
                {
                    let ctx = ui.ctx().clone();
                    app.disconnect(&ctx);
                }
                match &app.model().registration {
                    Registration::Online { name, .. } => {
                        ui.label(fill(tr.online_as, name));
                        widgets::status_dot(ui, true);
                    }
                    Registration::Reconnecting { name, .. } => {
                        ui.label(name.as_str());
                        widgets::status_dot(ui, false);
                    }
                    Registration::Disconnecting => {
                        ui.label(tr.disconnecting);
                    }
                    _ => {}
                }
            });
        });
        ui.add_space(4.0);
    });
}

/// Connection trouble, notices and the last call's outcome, above the page.
fn banners(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    if let Registration::Reconnecting { message, .. } = &app.model().registration {
        widgets::banner(
            ui,
            widgets::Tone::Warning,
            &fill(tr.connection_lost, message),
        );
    }
    if let Some(addr) = app.local_server_addr() {
        ui.small(fill(tr.local_server_running, addr));
    }
    match &app.model().notice {
        Some(Notice::HangUpFirst) => widgets::banner(ui, widgets::Tone::Warning, tr.hang_up_first),
        Some(Notice::Server(message)) => widgets::banner(ui, widgets::Tone::Warning, message),
        Some(Notice::Security(message)) => widgets::banner(ui, widgets::Tone::Error, message),
        None => {}
    }
    if !app.model().ended_dismissed {
        call::ended_banner(app, ui);
    }
}
