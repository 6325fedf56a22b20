//! Small drawing helpers shared by the screens.

use egui::{Color32, RichText};

#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Info,
    Warning,
    Error,
}

impl Tone {
    fn color(self, ui: &egui::Ui) -> Color32 {
        match self {
            Tone::Info => ui.visuals().hyperlink_color,
            Tone::Warning => ui.visuals().warn_fg_color,
            Tone::Error => ui.visuals().error_fg_color,
        }
    }
}

/// A framed message in the tone's colour.
pub fn banner(ui: &mut egui::Ui, tone: Tone, text: &str) {
    let color = tone.color(ui);
    egui::Frame::group(ui.style())
        .stroke(egui::Stroke::new(1.0, color))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(RichText::new(text).color(color));
        });
}

/// A green (available) or amber (busy / offline) dot.
pub fn status_dot(ui: &mut egui::Ui, good: bool) {
    let color = if good {
        Color32::from_rgb(60, 180, 90)
    } else {
        Color32::from_rgb(220, 150, 40)
    };
    let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 4.5, color);
}

/// A hollow grey dot: someone not online.
pub fn offline_dot(ui: &mut egui::Ui) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
    let stroke = egui::Stroke::new(1.5, Color32::from_gray(140));
    ui.painter().circle_stroke(rect.center(), 3.5, stroke);
}

/// A horizontal level meter, 0.0 to 1.0: green, amber near the top, red at full scale.
/// Painted by hand so silence is an empty bar (a progress bar always shows a knob).
pub fn level_meter(ui: &mut egui::Ui, label: &str, level: f32) {
    ui.horizontal(|ui| {
        ui.add_sized([120.0, 18.0], egui::Label::new(label));
        let (rect, response) =
            ui.allocate_exact_size(egui::vec2(220.0, 12.0), egui::Sense::hover());
        let level = level.clamp(0.0, 1.0);
        let color = if level > 0.9 {
            Color32::from_rgb(220, 60, 60)
        } else if level > 0.7 {
            Color32::from_rgb(220, 170, 40)
        } else {
            Color32::from_rgb(60, 180, 90)
        };
        let painter = ui.painter();
        painter.rect_filled(rect, 3.0, ui.visuals().extreme_bg_color);
        if level > 0.0 {
            let mut filled = rect;
            filled.set_width(rect.width() * level);
            painter.rect_filled(filled, 3.0, color);
        }
        response
            .widget_info(|| egui::WidgetInfo::labeled(egui::Role::ProgressIndicator, true, label));
    });
}
