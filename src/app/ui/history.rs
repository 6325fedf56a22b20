//! The call history table: who, when, which way, how long, how it ended.

use crate::app::i18n::{fill, Strings};
use crate::app::App;
use crate::client::history::{clock, format_utc, CallDirection, HistoryOutcome};

pub fn draw(app: &mut App, ui: &mut egui::Ui) {
    let tr = app.tr();
    ui.horizontal(|ui| {
        ui.heading(tr.history_heading);
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if !app.history.entries.is_empty() && ui.button(tr.clear_history).clicked() {
                app.history.entries.clear();
                app.saver.save_history(app.history.clone());
            }
        });
    });
    ui.add_space(8.0);
    if app.history.entries.is_empty() {
        ui.weak(tr.history_empty);
        return;
    }
    egui::ScrollArea::vertical()
        .id_salt("history")
        .show(ui, |ui| {
            egui::Grid::new("history_table")
                .num_columns(5)
                .striped(true)
                .spacing([18.0, 6.0])
                .show(ui, |ui| {
                    for h in [
                        tr.history_who,
                        tr.history_when,
                        tr.history_direction,
                        tr.history_duration,
                        tr.history_outcome,
                    ] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for e in &app.history.entries {
                        ui.label(&e.peer);
                        ui.label(format_utc(e.started_unix));
                        ui.label(match e.direction {
                            CallDirection::Outgoing => tr.outgoing,
                            CallDirection::Incoming => tr.incoming,
                        });
                        ui.monospace(
                            e.talked_secs
                                .map(clock)
                                .unwrap_or_else(|| tr.no_value.into()),
                        );
                        ui.label(outcome_text(tr, &e.outcome));
                        ui.end_row();
                    }
                });
        });
}

fn outcome_text(tr: &Strings, outcome: &HistoryOutcome) -> String {
    match outcome {
        HistoryOutcome::Talked => tr.outcome_talked.into(),
        HistoryOutcome::Missed => tr.outcome_missed.into(),
        HistoryOutcome::Ended(reason) => tr.reason(*reason).into(),
        HistoryOutcome::NotFound => tr.reason_not_found.into(),
        HistoryOutcome::ServerLost => tr.reason_server_lost.into(),
        HistoryOutcome::Refused(message) => fill(tr.outcome_failed, message),
    }
}
