//! Settings and history as JSON files in the user's config folder (or a folder a test or
//! script chooses), written atomically so a crash never leaves half a file.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

use super::history::History;
use super::settings::Settings;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Where the window keeps its files. `None` keeps nothing (tests that must not touch disk).
#[derive(Debug, Clone)]
pub struct Store {
    dir: Option<PathBuf>,
}

impl Store {
    /// `FALA_CONFIG_DIR` if set (scripts run several windows with separate files), else the
    /// platform config folder + `fala`.
    pub fn default_location() -> Self {
        let dir = std::env::var_os("FALA_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::config_dir().map(|d| d.join("fala")));
        Store { dir }
    }

    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Store {
            dir: Some(dir.into()),
        }
    }

    /// A store that remembers nothing.
    pub fn none() -> Self {
        Store { dir: None }
    }

    pub fn load_settings(&self) -> Settings {
        self.load("settings.json").unwrap_or_default()
    }

    pub fn save_settings(&self, s: &Settings) -> Result<(), StoreError> {
        self.save("settings.json", s)
    }

    pub fn load_history(&self) -> History {
        self.load("history.json").unwrap_or_default()
    }

    pub fn save_history(&self, h: &History) -> Result<(), StoreError> {
        self.save("history.json", h)
    }

    /// A missing or unreadable file is the same as a fresh install: the defaults.
    fn load<T: DeserializeOwned>(&self, file: &str) -> Option<T> {
        let path = self.dir.as_ref()?.join(file);
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                None
            }
        }
    }

    fn save<T: Serialize>(&self, file: &str, value: &T) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(file);
        let json = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode {
            path: path.clone(),
            source,
        })?;
        write_atomic(dir, &path, &json).map_err(|source| StoreError::Write { path, source })
    }
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_a_folder() {
        let dir = std::env::temp_dir().join(format!("fala-store-{}", std::process::id()));
        let store = Store::at(&dir);
        assert_eq!(store.load_settings(), Settings::default());
        let s = Settings {
            name: "ana".into(),
            frame_ms: 10,
            ..Settings::default()
        };
        store.save_settings(&s).unwrap();
        assert_eq!(store.load_settings(), s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
