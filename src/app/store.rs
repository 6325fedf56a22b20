//! Settings and history as JSON files in the user's config folder (or a folder a test or
//! script chooses), written atomically so a crash never leaves half a file, by a [`Saver`] on
//! a thread of its own.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

use super::settings::Settings;
use crate::client::contacts::ContactBook;
use crate::client::history::History;

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
    /// [`crate::client::paths::config_dir`].
    pub fn default_location() -> Self {
        Store {
            dir: crate::client::paths::config_dir(),
        }
    }

    /// The folder, if this store keeps files.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
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

    pub fn load_contacts(&self) -> ContactBook {
        self.load("contacts.json").unwrap_or_default()
    }

    pub fn save_contacts(&self, c: &ContactBook) -> Result<(), StoreError> {
        self.save("contacts.json", c)
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

/// How long the saver waits after a change for more before it writes: typing a name is one
/// write, not one per keystroke.
const SETTLE: Duration = Duration::from_millis(300);

/// The newest settings and history not written yet.
#[derive(Default)]
struct Unsaved {
    settings: Option<Settings>,
    history: Option<History>,
    contacts: Option<ContactBook>,
}

/// Writes settings and history on a thread of its own ("fala-store"), a moment after the last
/// change, so the window never waits for a disk. The window leaves the newest value in a shared
/// slot (the thread holds its lock only to take it) and rings a bell of one place; dropping the
/// saver writes what is left and waits for the thread (the window is closing then).
pub struct Saver {
    unsaved: Arc<Mutex<Unsaved>>,
    bell: Option<SyncSender<()>>,
    errors: Option<Receiver<String>>,
    thread: Option<JoinHandle<()>>,
}

impl Saver {
    /// A saver for `store`; one that keeps nothing starts no thread.
    pub fn start(store: Store) -> Saver {
        let mut saver = Saver {
            unsaved: Arc::default(),
            bell: None,
            errors: None,
            thread: None,
        };
        if store.dir.is_none() {
            return saver;
        }
        let (bell, rings) = sync_channel(1);
        let (error_tx, errors) = sync_channel(8);
        let unsaved = saver.unsaved.clone();
        let spawned = std::thread::Builder::new()
            .name("fala-store".into())
            .spawn(move || save_loop(&store, &unsaved, &rings, &error_tx));
        match spawned {
            Ok(thread) => {
                saver.bell = Some(bell);
                saver.errors = Some(errors);
                saver.thread = Some(thread);
            }
            Err(e) => tracing::warn!("settings and history will not be saved: {e}"),
        }
        saver
    }

    pub fn save_settings(&self, settings: Settings) {
        self.leave(|u| u.settings = Some(settings));
    }

    pub fn save_history(&self, history: History) {
        self.leave(|u| u.history = Some(history));
    }

    pub fn save_contacts(&self, contacts: ContactBook) {
        self.leave(|u| u.contacts = Some(contacts));
    }

    fn leave(&self, put: impl FnOnce(&mut Unsaved)) {
        let Some(bell) = &self.bell else { return };
        put(&mut self.unsaved.lock().unwrap_or_else(|p| p.into_inner()));
        // A bell already ringing is enough: the thread takes the newest value.
        let _ = bell.try_send(());
    }

    /// The last write error, once.
    pub fn take_error(&mut self) -> Option<String> {
        self.errors.as_ref()?.try_iter().last()
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        // The thread writes what is left when the bell goes away.
        self.bell = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The saver thread: waits for a change, lets more come until [`SETTLE`] passes quietly,
/// writes the newest of each, and goes on until the window lets go of it.
fn save_loop(
    store: &Store,
    unsaved: &Mutex<Unsaved>,
    rings: &Receiver<()>,
    errors: &SyncSender<String>,
) {
    let mut open = rings.recv().is_ok();
    loop {
        while open {
            match rings.recv_timeout(SETTLE) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        let Unsaved {
            settings,
            history,
            contacts,
        } = std::mem::take(&mut *unsaved.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(s) = settings {
            if let Err(e) = store.save_settings(&s) {
                let _ = errors.try_send(e.to_string());
            }
        }
        if let Some(h) = history {
            if let Err(e) = store.save_history(&h) {
                tracing::warn!("{e}");
            }
        }
        if let Some(c) = contacts {
            if let Err(e) = store.save_contacts(&c) {
                let _ = errors.try_send(e.to_string());
            }
        }
        if !open || rings.recv().is_err() {
            return;
        }
    }
}

/// Writes a whole file or nothing (a crash leaves the old one), readable by its owner only.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    crate::private_files::create_dir(dir)?;
    let tmp = path.with_extension("json.tmp");
    crate::private_files::create(&tmp)?.write_all(bytes)?;
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

    #[test]
    fn saver_writes_the_newest_settings_off_the_caller_and_finishes_on_drop() {
        let dir = std::env::temp_dir().join(format!("fala-saver-{}", std::process::id()));
        let store = Store::at(&dir);
        let saver = Saver::start(store.clone());
        // Typing a name: one change per keystroke, and the caller never waits.
        for n in 1..=40 {
            saver.save_settings(Settings {
                name: "a".repeat(n),
                ..Settings::default()
            });
        }
        // It settles, then writes the newest.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while store.load_settings().name.len() != 40 {
            assert!(std::time::Instant::now() < until, "never written");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A change just before the window closes is written by the drop.
        saver.save_settings(Settings {
            name: "last".into(),
            ..Settings::default()
        });
        drop(saver);
        assert_eq!(store.load_settings().name, "last");
        let _ = std::fs::remove_dir_all(dir);
    }
}
