//! What arrives while the window waits: signaling and media events from the phone, answers from
//! the save dialog, and the effects the phone hands back for the window to show.

use std::time::{Instant, SystemTime};

use tokio::sync::mpsc::error::TryRecvError;

use super::i18n::{self, Strings};
use super::App;
use crate::client::model::Effect;
use crate::client::LinkEvent;
use crate::net::Event;

/// One event from either of the phone's channels.
enum Incoming {
    Signal(Event),
    Media(LinkEvent),
}

/// Longest caller name put in a notification.
const NOTIFY_NAME_MAX: usize = 64;

/// A name from the network as plain text in a notification body: notification servers read
/// the body as markup (`<a href=…>`, `<img …>`), and a hostile server or caller must not be
/// able to put links, images or control characters there.
fn markup_safe(name: &str) -> String {
    let mut out = String::new();
    for c in name
        .chars()
        .filter(|c| !c.is_control())
        .take(NOTIFY_NAME_MAX)
    {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl App {
    /// Applies queued events until none is left or [`super::DRAIN_BUDGET`] is spent (then the
    /// next frame is requested at once).
    pub(super) fn drain_events(&mut self, ctx: &egui::Context) {
        let deadline = Instant::now() + super::DRAIN_BUDGET;
        while let Some(incoming) = self.next_event() {
            match incoming {
                Incoming::Signal(ev) => {
                    let stopped = ev == Event::Stopped;
                    let fx = self.phone.on_signal(ev, Instant::now(), SystemTime::now());
                    self.show_effects(fx, ctx);
                    if stopped {
                        self.events = None;
                        return;
                    }
                }
                Incoming::Media(ev) => self.on_media(ev),
            }
            if Instant::now() >= deadline {
                ctx.request_repaint();
                return;
            }
        }
    }

    /// The next queued event; a closed signaling channel reads as the task having stopped.
    fn next_event(&mut self) -> Option<Incoming> {
        let events = self.events.as_mut()?;
        if let Ok(ev) = events.media.try_recv() {
            return Some(Incoming::Media(ev));
        }
        match events.signal.try_recv() {
            Ok(ev) => Some(Incoming::Signal(ev)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Incoming::Signal(Event::Stopped)),
        }
    }

    fn on_media(&mut self, ev: LinkEvent) {
        self.phone.on_media(&ev);
        if let LinkEvent::RecordingFailed(message) = ev {
            self.ui.recording = None;
            self.ui.record_error = Some(i18n::fill(self.tr().record_failed, message));
        }
    }

    pub(super) fn drain_dialogs(&mut self) {
        let Some(rx) = &self.dialog_rx else { return };
        if let Ok(answer) = rx.try_recv() {
            self.dialog_rx = None;
            if let Some(path) = answer {
                self.record_to(path);
            }
        }
    }

    /// Shows what the phone did: ringing, notifications, the call log. (Sending and audio
    /// were carried out by the phone itself.)
    pub(super) fn show_effects(&mut self, effects: Vec<Effect>, ctx: &egui::Context) {
        for effect in effects {
            match effect {
                Effect::StopMedia => {
                    self.ui.recording = None;
                    self.ui.record_error = None;
                }
                Effect::StartRinging => {
                    // Without audio the ringtone cannot play; the dialog still shows.
                    let _ = self.sounds.start_ringing();
                }
                Effect::StopRinging => self.sounds.stop_ringing(),
                Effect::NotifyIncoming(caller) => {
                    let focused = ctx.input(|i| i.viewport().focused);
                    if focused == Some(false) {
                        notify_desktop(self.tr(), &caller);
                    }
                }
                Effect::Log(entry) => {
                    self.history.push(entry);
                    self.saver.save_history(self.history.clone());
                }
                Effect::StartMedia(_) => {
                    // A meter or test tone would hold the devices the call needs.
                    self.sounds.release_devices();
                }
                Effect::ContactsChanged => self.save_contacts(),
                Effect::Send(_)
                | Effect::Disconnect
                | Effect::Call(_)
                | Effect::LookupAnswered
                | Effect::ServerError(_) => {}
            }
        }
    }
}

/// A desktop notification on a thread of its own (D-Bus may be slow or absent); failure is
/// ignored: the dialog in the window is the real signal.
fn notify_desktop(tr: &'static Strings, caller: &str) {
    let body = i18n::fill(tr.notify_body, markup_safe(caller));
    let _ = std::thread::Builder::new()
        .name("fala-notify".into())
        .spawn(move || {
            if let Err(e) = notify_rust::Notification::new()
                .summary(tr.notify_title)
                .body(&body)
                .appname("Fala")
                .show()
            {
                tracing::debug!("no desktop notification: {e}");
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reach_notifications_as_plain_text() {
        assert_eq!(markup_safe("Ana"), "Ana");
        assert_eq!(
            markup_safe("<a href=\"http://x\">Ana</a>\u{7}&"),
            "&lt;a href=&quot;http://x&quot;&gt;Ana&lt;/a&gt;&amp;"
        );
        assert_eq!(markup_safe(&"x".repeat(500)).len(), NOTIFY_NAME_MAX);
    }
}
