//! Every user-visible string of the window, one table per language, so a translator edits one
//! file and a missing string is a compile error rather than an English word in a Portuguese
//! screen. Templates use `{}` for their single argument (see [`fill`]).

use fala_proto::call::Outcome;
use fala_proto::{EndReason, ErrorCode};
use serde::{Deserialize, Serialize};

mod en;
mod pt_br;

/// Languages the window speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Lang {
    #[default]
    English,
    PortugueseBrazil,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::English, Lang::PortugueseBrazil];

    /// The language's own name, shown in the picker whatever the current language.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::English => "English",
            Lang::PortugueseBrazil => "Português (Brasil)",
        }
    }

    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::English => &en::EN,
            Lang::PortugueseBrazil => &pt_br::PT_BR,
        }
    }
}

/// Puts `arg` where the template says `{}`.
pub fn fill(template: &str, arg: impl std::fmt::Display) -> String {
    template.replacen("{}", &arg.to_string(), 1)
}

/// The strings of one language.
pub struct Strings {
    pub window_title: &'static str,
    // Connect screen
    pub connect_heading: &'static str,
    pub your_name: &'static str,
    pub server_address: &'static str,
    pub advertised_ip: &'static str,
    pub advertised_ip_hint: &'static str,
    pub advertised_ip_help: &'static str,
    pub advanced: &'static str,
    pub plain_connection: &'static str,
    pub contacts_heading: &'static str,
    pub add_contact: &'static str,
    pub add_contact_hint: &'static str,
    pub no_contacts: &'static str,
    pub block: &'static str,
    pub unblock: &'static str,
    pub blocked_heading: &'static str,
    pub offline: &'static str,
    pub remove_contact: &'static str,
    pub verified_mark: &'static str,
    pub key_changed_mark: &'static str,
    pub accept_new_key: &'static str,
    pub identity_changed_incoming: &'static str,
    pub identity_changed_in_call: &'static str,
    pub identity_verified: &'static str,
    pub safety_number_with: &'static str,
    pub safety_number_help: &'static str,
    pub mark_verified: &'static str,
    pub allow_unencrypted_calls: &'static str,
    pub always_relay: &'static str,
    pub server_untrusted: &'static str,
    pub register: &'static str,
    pub back: &'static str,
    pub connecting: &'static str,
    pub name_taken: &'static str,
    /// A name bound to another identity; `{}` is the server's explanation.
    pub name_owned: &'static str,
    pub name_invalid: &'static str,
    pub advertised_ip_invalid: &'static str,
    pub server_unreachable: &'static str,
    pub offer_local_server: &'static str,
    pub start_local_server: &'static str,
    pub local_server_running: &'static str,
    pub local_server_failed: &'static str,
    pub media_port_failed: &'static str,
    // Top bar
    pub online_as: &'static str,
    pub tab_contacts: &'static str,
    pub tab_history: &'static str,
    pub tab_settings: &'static str,
    pub disconnect: &'static str,
    pub disconnecting: &'static str,
    pub hang_up_first: &'static str,
    pub connection_lost: &'static str,
    // Main screen
    pub find_people: &'static str,
    pub search_label: &'static str,
    pub search_hint: &'static str,
    pub nobody_online: &'static str,
    pub nobody_matches: &'static str,
    pub more_results: &'static str,
    pub available: &'static str,
    pub in_a_call: &'static str,
    pub call: &'static str,
    pub lookup_heading: &'static str,
    pub lookup_hint: &'static str,
    pub lookup_button: &'static str,
    pub lookup_searching: &'static str,
    pub lookup_not_found: &'static str,
    pub lookup_found: &'static str,
    pub sound_test_heading: &'static str,
    pub sound_test_button: &'static str,
    pub sound_test_hint: &'static str,
    // Calls
    pub calling: &'static str,
    pub ringing: &'static str,
    pub cancel: &'static str,
    pub incoming_title: &'static str,
    pub incoming_from: &'static str,
    pub accept: &'static str,
    pub decline: &'static str,
    pub answer_keys: &'static str,
    pub in_call_with: &'static str,
    pub mute: &'static str,
    pub unmute: &'static str,
    pub muted: &'static str,
    pub level_input: &'static str,
    pub level_output: &'static str,
    pub stat_rtt: &'static str,
    pub stat_loss: &'static str,
    pub stat_jitter: &'static str,
    pub stat_buffer: &'static str,
    pub stat_bitrate: &'static str,
    pub stat_protection: &'static str,
    /// "{n} restored" after the protection in force, e.g. "2 copies · 92 % restored".
    pub stat_restored: &'static str,
    pub protection_none: &'static str,
    pub protection_copy: &'static str,
    pub protection_copies: &'static str,
    pub stat_quality: &'static str,
    pub stat_path: &'static str,
    pub path_direct: &'static str,
    /// Nothing from the peer for {} seconds.
    pub no_audio_for: &'static str,
    pub path_relay: &'static str,
    /// Through the server over the TCP connection (UDP is blocked).
    pub path_tcp: &'static str,
    pub quality_good: &'static str,
    pub quality_fair: &'static str,
    pub quality_poor: &'static str,
    pub no_value: &'static str,
    pub engine_missing: &'static str,
    pub audio_opening: &'static str,
    pub audio_failed: &'static str,
    pub no_microphone: &'static str,
    pub no_speaker: &'static str,
    pub no_sound_devices: &'static str,
    /// Shown in a call with encrypted media; `{}` is the six-digit code both sides compare.
    pub encrypted_code: &'static str,
    pub not_encrypted: &'static str,
    pub hang_up: &'static str,
    pub hang_up_hotkey: &'static str,
    pub record: &'static str,
    pub stop_recording: &'static str,
    pub recording_to: &'static str,
    pub record_failed: &'static str,
    pub call_ended: &'static str,
    pub call_lasted: &'static str,
    pub ok: &'static str,
    pub notify_title: &'static str,
    pub notify_body: &'static str,
    // Why calls end
    pub reason_declined: &'static str,
    pub reason_busy: &'static str,
    pub reason_no_answer: &'static str,
    pub reason_cancelled: &'static str,
    pub reason_you_hung_up: &'static str,
    pub reason_peer_hung_up: &'static str,
    pub reason_peer_lost: &'static str,
    pub reason_server_shutdown: &'static str,
    pub reason_not_found: &'static str,
    pub reason_server_lost: &'static str,
    // Settings
    pub settings_heading: &'static str,
    pub audio: &'static str,
    pub input_device: &'static str,
    pub output_device: &'static str,
    pub system_default: &'static str,
    pub devices_placeholder: &'static str,
    pub mic_level: &'static str,
    pub test_tone: &'static str,
    pub hotkey: &'static str,
    pub frame_size: &'static str,
    pub bitrate: &'static str,
    pub loss_protection: &'static str,
    /// Choices of [`crate::app::settings::MAX_COPIES`]: 2, 1, 0.
    pub loss_protection_choices: [&'static str; 3],
    pub language: &'static str,
    pub theme: &'static str,
    pub theme_light: &'static str,
    pub theme_dark: &'static str,
    pub settings_apply_next_call: &'static str,
    pub settings_save_failed: &'static str,
    // History
    pub history_heading: &'static str,
    pub history_empty: &'static str,
    pub history_who: &'static str,
    pub history_when: &'static str,
    pub history_direction: &'static str,
    pub history_duration: &'static str,
    pub history_outcome: &'static str,
    pub outgoing: &'static str,
    pub incoming: &'static str,
    pub outcome_talked: &'static str,
    pub outcome_missed: &'static str,
    pub outcome_failed: &'static str,
    pub clear_history: &'static str,
}

impl Strings {
    /// Why a call ended, in words. Refusals carry the server's own (English) message.
    pub fn outcome(&self, outcome: &Outcome) -> String {
        match outcome {
            Outcome::Ended(reason) => self.reason(*reason).to_string(),
            Outcome::NotFound => self.reason_not_found.to_string(),
            Outcome::Refused { message, .. } => message.clone(),
            Outcome::ServerLost => self.reason_server_lost.to_string(),
            Outcome::NotPrivate(why) => why.clone(),
        }
    }

    pub fn reason(&self, reason: EndReason) -> &'static str {
        match reason {
            EndReason::Declined => self.reason_declined,
            EndReason::Busy => self.reason_busy,
            EndReason::NoAnswer => self.reason_no_answer,
            EndReason::Cancelled => self.reason_cancelled,
            EndReason::HungUp => self.reason_you_hung_up,
            EndReason::PeerHungUp => self.reason_peer_hung_up,
            EndReason::PeerLost => self.reason_peer_lost,
            EndReason::ServerShutdown => self.reason_server_shutdown,
        }
    }

    /// A registration refusal, in place on the connect screen.
    pub fn refusal(&self, code: ErrorCode, name: &str, message: &str) -> String {
        match code {
            ErrorCode::NameTaken => fill(self.name_taken, name),
            ErrorCode::NameOwned => fill(self.name_owned, message),
            ErrorCode::InvalidName => fill(self.name_invalid, message),
            _ => message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::en::EN;
    use super::pt_br::PT_BR;
    use super::*;

    #[test]
    fn every_reason_is_translated_differently() {
        let reasons = [
            EndReason::Declined,
            EndReason::Busy,
            EndReason::NoAnswer,
            EndReason::Cancelled,
            EndReason::HungUp,
            EndReason::PeerHungUp,
            EndReason::PeerLost,
            EndReason::ServerShutdown,
        ];
        for r in reasons {
            assert_ne!(EN.reason(r), PT_BR.reason(r), "{r:?}");
        }
    }

    #[test]
    fn fill_replaces_the_placeholder() {
        assert_eq!(fill(EN.calling, "ana"), "Calling ana…");
        assert_eq!(
            fill(PT_BR.incoming_from, "Bia"),
            "Bia está ligando para você"
        );
    }
}
