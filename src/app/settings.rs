//! What the user chooses once and expects to find again: identity, server, audio and look.
//! Kept as plain serde data so the store, the logic and the tests share one type.

use serde::{Deserialize, Serialize};

use super::i18n::Lang;
use crate::client::MediaOptions;
use crate::media::{CodecSettings, FrameMs, InputSpec, OutputSpec};

/// The server a fresh install tries first: one on this machine.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7400";

/// Keys offered for hanging up: ones that never type into a text field by accident.
pub const HANGUP_KEYS: [&str; 4] = ["Escape", "H", "End", "F12"];

/// Opus bitrates offered, in kbit/s. The default is the engine's (64, why in
/// [`CodecSettings::default`]); lower ones save data.
pub const BITRATES_KBPS: [u32; 6] = [16, 24, 32, 48, 64, 96];

/// Redundant copies offered as loss protection (each multiplies the bitrate while the other side
/// reports loss; 0 leaves only Opus in-band FEC). The default is the engine's (2).
pub const MAX_COPIES: [u8; 3] = [2, 1, 0];

/// Light or dark look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Theme {
    Light,
    #[default]
    Dark,
}

/// Everything persisted between runs. Unknown or missing fields fall back to defaults so an
/// older or newer settings file never stops the window from opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub name: String,
    pub server: String,
    /// IPv4 to advertise for media instead of letting the server see it; empty = none.
    pub advertised_ip: String,
    /// Plain TCP to the server instead of TLS (for a server started with `--plain`).
    pub plain: bool,
    /// Take calls without media encryption (off: such calls are refused).
    pub allow_unencrypted: bool,
    /// Call audio through the server's relay, never directly.
    pub always_relay: bool,
    /// `None` is the system default device.
    pub input_device: Option<String>,
    pub output_device: Option<String>,
    /// An `egui::Key` name from [`HANGUP_KEYS`].
    pub hangup_key: String,
    /// Audio frame length in milliseconds: 10 or 20.
    pub frame_ms: u32,
    pub bitrate_kbps: u32,
    /// Most redundant copies per packet under loss, from [`MAX_COPIES`].
    pub max_copies: u8,
    pub language: Lang,
    pub theme: Theme,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name: String::new(),
            server: DEFAULT_SERVER.into(),
            advertised_ip: String::new(),
            plain: false,
            allow_unencrypted: false,
            always_relay: false,
            input_device: None,
            output_device: None,
            hangup_key: "Escape".into(),
            frame_ms: 20,
            bitrate_kbps: CodecSettings::default().bitrate / 1000,
            max_copies: CodecSettings::default().max_copies,
            language: Lang::English,
            theme: Theme::Dark,
        }
    }
}

impl Settings {
    /// How calls sound with these settings: the chosen devices, frame, bitrate and loss
    /// protection; encrypted; the engine's playout.
    pub fn media_options(&self) -> MediaOptions {
        MediaOptions {
            input: InputSpec::Device(self.input_device.clone()),
            output: OutputSpec::Device(self.output_device.clone()),
            codec: CodecSettings {
                bitrate: self.bitrate_kbps.clamp(6, 510) * 1000,
                max_copies: self.max_copies.min(2),
                frame: FrameMs::from_ms(self.frame_ms),
                ..CodecSettings::default()
            },
            allow_unencrypted: self.allow_unencrypted,
            always_relay: self.always_relay,
            ..MediaOptions::default()
        }
    }

    /// The hang-up key as egui knows it (Escape if the stored name is unknown).
    pub fn hangup_key(&self) -> egui::Key {
        egui::Key::from_name(&self.hangup_key).unwrap_or(egui::Key::Escape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_hotkey_is_an_egui_key() {
        for k in HANGUP_KEYS {
            assert!(egui::Key::from_name(k).is_some(), "{k}");
        }
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let s: Settings = serde_json::from_str(r#"{"name":"ana"}"#).unwrap();
        assert_eq!(s.name, "ana");
        assert_eq!(s.server, DEFAULT_SERVER);
        assert_eq!(s.hangup_key(), egui::Key::Escape);
    }
}
