//! The main screen: your contacts (with presence, even offline), "Find people" (the server's
//! directory search), a name look-up and the sound test.

use fala_proto::name::name_key;
use fala_proto::Availability;

use super::widgets;
use crate::app::i18n::{fill, Strings};
use crate::app::App;
use crate::client::model::{Lookup, ECHO_USER};

pub fn draw(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    let ctx = ui.ctx().clone();
    let can_call = app.model().is_online() && !app.model().calls.is_busy();
    let mut to_call: Option<String> = None;
    let mut to_add: Option<String> = None;

    ui.columns(2, |cols| {
        // Left: contacts, then online users.
        let ui = &mut cols[0];
        if let Some(name) = contact_list(app, ui, can_call) {
            to_call = Some(name);
        }
        ui.add_space(10.0);
        if let Some(name) = find_people(app, ui, can_call, &ctx, &mut to_add) {
            to_call = Some(name);
        }

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
                ui.horizontal(|ui| {
                    presence(
                        ui,
                        tr,
                        egui::RichText::new(fill(tr.lookup_found, &user.name)),
                        user.status,
                    );
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

    if let Some(name) = to_add {
        app.add_contact(&name);
    }
    if let Some(peer) = to_call {
        app.call(&peer, &ctx);
    }
}

/// "Find people": a search box, the online people whose name starts with what is typed (with
/// live status, Add and Call), and more pages on request. Returns the person to call, if one
/// was clicked; a person to add goes to `to_add`.
fn find_people(
    app: &mut App,
    ui: &mut egui::Ui,
    can_call: bool,
    ctx: &egui::Context,
    to_add: &mut Option<String>,
) -> Option<String> {
    let tr = app.tr();
    let mut to_call = None;
    let heading = ui.heading(tr.find_people);
    let changed = ui
        .horizontal(|ui| {
            ui.label(tr.search_label);
            ui.add(
                egui::TextEdit::singleline(&mut app.ui.search_text)
                    .hint_text(tr.search_hint)
                    .id_salt("search")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(heading.id)
            .changed()
        })
        .inner;
    if changed {
        app.search(ctx);
    }
    ui.add_space(6.0);
    let people: Vec<_> = app.model().found_people().into_iter().cloned().collect();
    let directory = &app.model().directory;
    if people.is_empty() {
        match directory.shown_for() {
            None => {
                ui.spinner();
            }
            Some("") => {
                ui.weak(tr.nobody_online);
            }
            Some(_) => {
                ui.weak(tr.nobody_matches);
            }
        }
    }
    let more = directory.has_more();
    egui::ScrollArea::vertical()
        .id_salt("people")
        .show(ui, |ui| {
            for user in people {
                ui.horizontal(|ui| {
                    presence(
                        ui,
                        tr,
                        egui::RichText::new(&user.name).strong(),
                        user.status,
                    );
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        let call = ui.add_enabled(can_call, egui::Button::new(tr.call));
                        if call.clicked() {
                            to_call = Some(user.name.clone());
                        }
                        let listed = app
                            .model()
                            .contacts
                            .get(&user.name)
                            .is_some_and(|c| c.listed);
                        if !listed && ui.small_button(tr.add_contact).clicked() {
                            *to_add = Some(user.name.clone());
                        }
                    });
                });
                ui.separator();
            }
            if more && ui.button(tr.more_results).clicked() {
                app.search_more(ctx);
            }
        });
    to_call
}

/// The saved contacts: each with presence (online from the live list, else offline), a call
/// button, its verification mark or key-change warning, and removal; a field to add one.
/// Returns the contact to call, if one was clicked.
fn contact_list(app: &mut App, ui: &mut egui::Ui, can_call: bool) -> Option<String> {
    let tr = app.tr();
    let mut to_call = None;
    let heading = ui.heading(tr.contacts_heading);
    let mut add = false;
    ui.horizontal(|ui| {
        let r = ui
            .add(
                egui::TextEdit::singleline(&mut app.ui.contact_text)
                    .hint_text(tr.add_contact_hint)
                    .id_salt("add_contact")
                    .desired_width(160.0),
            )
            .labelled_by(heading.id);
        add |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        add |= ui.button(tr.add_contact).clicked();
    });
    if add && !app.ui.contact_text.trim().is_empty() {
        let name = std::mem::take(&mut app.ui.contact_text);
        app.add_contact(&name);
    }
    let contacts: Vec<_> = app.model().contacts.listed().into_iter().cloned().collect();
    if contacts.is_empty() {
        ui.weak(tr.no_contacts);
    }
    let mut remove = None;
    let mut block = None;
    let mut unblock = None;
    let mut accept_key = None;
    for contact in contacts {
        let online = app.model().users.get(&name_key(&contact.name)).cloned();
        ui.horizontal(|ui| {
            match &online {
                Some(user) => {
                    presence(
                        ui,
                        tr,
                        egui::RichText::new(&contact.name).strong(),
                        user.status,
                    );
                }
                None => {
                    widgets::offline_dot(ui);
                    ui.label(&contact.name);
                    ui.weak(tr.offline);
                }
            }
            if contact.changed_to.is_some() {
                ui.colored_label(ui.visuals().error_fg_color, tr.key_changed_mark);
            } else if contact.verified {
                ui.label(tr.verified_mark);
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.small_button(tr.remove_contact).clicked() {
                    remove = Some(contact.name.clone());
                }
                if ui.small_button(tr.block).clicked() {
                    block = Some(contact.name.clone());
                }
                if contact.changed_to.is_some() {
                    if ui.small_button(tr.accept_new_key).clicked() {
                        accept_key = Some(contact.name.clone());
                    }
                } else if ui
                    .add_enabled(can_call && online.is_some(), egui::Button::new(tr.call))
                    .clicked()
                {
                    to_call = Some(contact.name.clone());
                }
            });
        });
    }
    let blocked: Vec<String> = app
        .model()
        .contacts
        .blocked()
        .into_iter()
        .map(|c| c.name.clone())
        .collect();
    if !blocked.is_empty() {
        ui.add_space(4.0);
        ui.collapsing(tr.blocked_heading, |ui| {
            for name in blocked {
                ui.horizontal(|ui| {
                    ui.label(&name);
                    if ui.small_button(tr.unblock).clicked() {
                        unblock = Some(name.clone());
                    }
                });
            }
        });
    }
    let ctx = ui.ctx().clone();
    if let Some(name) = remove {
        app.remove_contact(&name);
    }
    if let Some(name) = block {
        app.block(&name, &ctx);
    }
    if let Some(name) = unblock {
        app.unblock(&name, &ctx);
    }
    if let Some(name) = accept_key {
        app.accept_changed_key(&name);
    }
    to_call
}

/// A person online: the status dot, their name (as `name` is styled) and the status in words.
fn presence(ui: &mut egui::Ui, tr: &Strings, name: egui::RichText, status: Availability) {
    let available = status == Availability::Available;
    widgets::status_dot(ui, available);
    ui.label(name);
    ui.weak(if available {
        tr.available
    } else {
        tr.in_a_call
    });
}
