//! Who owns which name: each name (by its key, see `fala_proto::name::name_key`) is bound to
//! the first identity key that registers it, kept on disk, and refused to every other key —
//! also while its owner is offline — until it has gone unused for the reclaim period.
//!
//! The bindings live in redb, a pure-Rust embedded database (one file, crash-safe
//! transactions, no C toolchain or server to run). Decisions are taken against an in-memory
//! copy loaded at start (the hub's lock is never held across disk I/O); writes go to one
//! database thread through a bounded queue and are committed in batches, durably.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fala_proto::identity::IDENTITY_LEN;
use redb::{Database, ReadableTable, TableDefinition};
use thiserror::Error;

/// name key → identity (32 bytes) + last seen (unix seconds, 8 bytes big-endian) + display name.
const NAMES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("names_v1");
/// Writes waiting for the database thread; past this the disk is far behind and new names are
/// refused for a moment rather than held in memory without bound.
const WRITE_QUEUE: usize = 8192;
/// Writes committed in one transaction at most.
const WRITE_BATCH: usize = 1024;
/// Addresses remembered for the new-name budget before the oldest windows are swept.
const CLAIM_TABLE_MAX: usize = 100_000;
const CLAIM_WINDOW: Duration = Duration::from_secs(3600);

/// Rules for binding names.
#[derive(Debug, Clone)]
pub struct NamesConfig {
    /// A name nobody registered for this long may be claimed by another identity.
    pub reclaim_after: Duration,
    /// Names bound at most; past this, new names are refused (existing owners still register).
    pub max_names: usize,
    /// New names one IP address may bind per hour (0: no limit). Stops one host from filling
    /// the database with throw-away identities.
    pub new_names_per_ip_hour: u32,
}

impl Default for NamesConfig {
    fn default() -> Self {
        NamesConfig {
            reclaim_after: Duration::from_secs(180 * 24 * 3600),
            max_names: 1_000_000,
            new_names_per_ip_hour: 20,
        }
    }
}

#[derive(Debug, Error)]
pub enum NamesError {
    #[error("name database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("name database: {0}")]
    Db(#[from] Box<redb::Error>),
    #[error("could not start the name database thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One name's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub identity: [u8; IDENTITY_LEN],
    /// When its owner last registered it or left (unix seconds).
    pub last_seen: u64,
    /// As its owner last wrote it.
    pub name: String,
}

impl Binding {
    fn encode(&self) -> Vec<u8> {
        [
            self.identity.as_slice(),
            &self.last_seen.to_be_bytes(),
            self.name.as_bytes(),
        ]
        .concat()
    }

    fn decode(bytes: &[u8]) -> Option<Binding> {
        let identity = bytes.get(..IDENTITY_LEN)?.try_into().ok()?;
        let last_seen =
            u64::from_be_bytes(bytes.get(IDENTITY_LEN..IDENTITY_LEN + 8)?.try_into().ok()?);
        let name = std::str::from_utf8(bytes.get(IDENTITY_LEN + 8..)?)
            .ok()?
            .to_string();
        Some(Binding {
            identity,
            last_seen,
            name,
        })
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The name is this identity's (`new`: bound just now).
    Granted { new: bool },
    /// Another identity owns it; `name` is how its owner writes it.
    Owned { name: String },
    /// A new name, but this address has bound its share for now.
    TooManyNew,
    /// A new name, but the server cannot take more names now (full, or the disk is behind).
    NoRoom,
}

enum Write {
    Put(String, Vec<u8>),
}

/// The name bindings of one server.
pub(crate) struct NameBook {
    bindings: HashMap<String, Binding>,
    config: NamesConfig,
    writes: Option<SyncSender<Write>>,
    writer: Option<JoinHandle<()>>,
    /// New names bound per address in the current hour.
    claims: HashMap<IpAddr, (u32, SystemTime)>,
}

/// Seconds since the epoch, the clock names are aged by (it survives restarts).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NameBook {
    /// Opens (or creates) the database at `path`; `None` keeps it in memory (tests, and servers
    /// started without a data folder): the same database code, nothing on disk.
    pub fn open(path: Option<&Path>, config: NamesConfig) -> Result<NameBook, NamesError> {
        let db = match path {
            Some(path) => Database::create(path).map_err(|e| NamesError::Open {
                path: path.display().to_string(),
                source: db_error(e),
            })?,
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(db_error)?,
        };
        let bindings = load(&db)?;
        match path {
            Some(path) => tracing::info!("{} names bound in {}", bindings.len(), path.display()),
            None => tracing::info!("names bound in memory only (no data folder)"),
        }
        let (tx, rx) = mpsc::sync_channel(WRITE_QUEUE);
        let writer = std::thread::Builder::new()
            .name("fala-names-db".into())
            .spawn(move || write_loop(db, rx))?;
        Ok(NameBook {
            bindings,
            config,
            writes: Some(tx),
            writer: Some(writer),
            claims: HashMap::new(),
        })
    }

    /// How many names are bound.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// The owner of `key`, if any.
    #[cfg(test)]
    pub fn owner(&self, key: &str) -> Option<&Binding> {
        self.bindings.get(key)
    }

    /// `identity` (connecting from `ip`) wants `name` (key `key`) at `now` (unix seconds).
    /// `owner_online`: the current owner holds the name right now (then it can never be
    /// reclaimed).
    pub fn claim(
        &mut self,
        key: &str,
        name: &str,
        identity: &[u8; IDENTITY_LEN],
        ip: IpAddr,
        owner_online: bool,
        now: u64,
    ) -> Claim {
        if let Some(owner) = self.bindings.get(key) {
            let idle = now.saturating_sub(owner.last_seen);
            let reclaimable = !owner_online && idle >= self.config.reclaim_after.as_secs();
            if owner.identity == *identity || reclaimable {
                let new = owner.identity != *identity;
                if new {
                    tracing::info!(name, old = %owner.name, "name reclaimed after {idle} s unused");
                }
                self.bind(key, name, identity, now);
                return Claim::Granted { new };
            }
            return Claim::Owned {
                name: owner.name.clone(),
            };
        }
        if self.bindings.len() >= self.config.max_names {
            return Claim::NoRoom;
        }
        if !self.take_new_name_budget(ip) {
            return Claim::TooManyNew;
        }
        if !self.bind(key, name, identity, now) {
            return Claim::NoRoom;
        }
        Claim::Granted { new: true }
    }

    /// The owner of `key` was seen at `now` (it left, or registered): restarts the reclaim clock.
    pub fn seen(&mut self, key: &str, now: u64) {
        let Some(binding) = self.bindings.get_mut(key) else {
            return;
        };
        binding.last_seen = now;
        let record = binding.encode();
        // Losing this write only makes the clock a little older; never worth waiting for.
        if let Some(tx) = &self.writes {
            let _ = tx.try_send(Write::Put(key.to_string(), record));
        }
    }

    /// Binds and queues the write; false (and nothing bound) if the queue is full.
    fn bind(&mut self, key: &str, name: &str, identity: &[u8; IDENTITY_LEN], now: u64) -> bool {
        let binding = Binding {
            identity: *identity,
            last_seen: now,
            name: name.to_string(),
        };
        let queued = match &self.writes {
            Some(tx) => match tx.try_send(Write::Put(key.to_string(), binding.encode())) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => false,
                // The database thread died (its error is logged); keep serving from memory.
                Err(TrySendError::Disconnected(_)) => true,
            },
            None => true,
        };
        if queued {
            self.bindings.insert(key.to_string(), binding);
        }
        queued
    }

    fn take_new_name_budget(&mut self, ip: IpAddr) -> bool {
        let per_hour = self.config.new_names_per_ip_hour;
        if per_hour == 0 {
            return true;
        }
        let now = SystemTime::now();
        let fresh = |start: &SystemTime| now.duration_since(*start).is_ok_and(|d| d < CLAIM_WINDOW);
        if self.claims.len() >= CLAIM_TABLE_MAX {
            self.claims.retain(|_, (_, start)| fresh(start));
        }
        if self.claims.len() >= CLAIM_TABLE_MAX {
            // Still full of live windows: a flood from very many addresses; refuse new names
            // until the windows pass rather than grow.
            return false;
        }
        let entry = self.claims.entry(ip).or_insert((0, now));
        if !fresh(&entry.1) {
            *entry = (0, now);
        }
        if entry.0 >= per_hour {
            return false;
        }
        entry.0 += 1;
        true
    }

    /// Writes everything queued and waits for the database thread (at shutdown).
    pub fn close(&mut self) {
        self.writes = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for NameBook {
    fn drop(&mut self) {
        self.close();
    }
}

/// redb's errors are large; boxed, the results that carry them stay small.
fn db_error(e: impl Into<redb::Error>) -> Box<redb::Error> {
    Box::new(e.into())
}

fn load(db: &Database) -> Result<HashMap<String, Binding>, Box<redb::Error>> {
    let txn = db.begin_write().map_err(db_error)?;
    // Creates the table on first start.
    txn.open_table(NAMES).map_err(db_error)?;
    txn.commit().map_err(db_error)?;
    let txn = db.begin_read().map_err(db_error)?;
    let table = txn.open_table(NAMES).map_err(db_error)?;
    let mut bindings = HashMap::new();
    for row in table.iter().map_err(db_error)? {
        let (key, value) = row.map_err(db_error)?;
        match Binding::decode(value.value()) {
            Some(binding) => {
                bindings.insert(key.value().to_string(), binding);
            }
            None => tracing::warn!(key = key.value(), "unreadable name record skipped"),
        }
    }
    Ok(bindings)
}

fn write_loop(db: Database, rx: Receiver<Write>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        if let Err(e) = commit(&db, &mut batch) {
            tracing::error!("name database write failed: {e}");
        }
        batch.clear();
    }
}

fn commit(db: &Database, batch: &mut Vec<Write>) -> Result<(), Box<redb::Error>> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut table = txn.open_table(NAMES).map_err(db_error)?;
        for Write::Put(key, record) in batch.drain(..) {
            table
                .insert(key.as_str(), record.as_slice())
                .map_err(db_error)?;
        }
    }
    txn.commit().map_err(db_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn book(path: Option<&Path>) -> NameBook {
        NameBook::open(path, NamesConfig::default()).unwrap()
    }

    #[test]
    fn a_name_is_its_first_owners_until_unused_for_the_reclaim_period() {
        let mut names = book(None);
        let (ana, eve) = ([1u8; 32], [2u8; 32]);
        let t0 = 1_000_000;
        assert_eq!(
            names.claim("ana", "Ana", &ana, ip(1), false, t0),
            Claim::Granted { new: true }
        );
        assert_eq!(
            names.claim("ana", "ana", &eve, ip(2), false, t0 + 1),
            Claim::Owned { name: "Ana".into() }
        );
        assert_eq!(
            names.claim("ana", "ANA", &ana, ip(3), false, t0 + 2),
            Claim::Granted { new: false }
        );
        // 179 days unused: still Ana's. 180 days: free, unless Ana is online.
        let later = t0 + 2 + 180 * DAY;
        assert!(matches!(
            names.claim("ana", "ana", &eve, ip(2), false, later - DAY),
            Claim::Owned { .. }
        ));
        assert!(matches!(
            names.claim("ana", "ana", &eve, ip(2), true, later),
            Claim::Owned { .. }
        ));
        assert_eq!(
            names.claim("ana", "ana", &eve, ip(2), false, later),
            Claim::Granted { new: true }
        );
        assert_eq!(names.owner("ana").unwrap().identity, eve);
    }

    #[test]
    fn being_seen_restarts_the_reclaim_clock() {
        let mut names = book(None);
        let t0 = 1_000_000;
        names.claim("bo", "Bo", &[1; 32], ip(1), false, t0);
        names.seen("bo", t0 + 100 * DAY);
        assert!(matches!(
            names.claim("bo", "bo", &[2; 32], ip(2), false, t0 + 200 * DAY),
            Claim::Owned { .. }
        ));
    }

    #[test]
    fn one_address_binds_a_bounded_number_of_new_names() {
        let mut names = NameBook::open(
            None,
            NamesConfig {
                new_names_per_ip_hour: 3,
                max_names: 5,
                ..NamesConfig::default()
            },
        )
        .unwrap();
        for n in 0..3u8 {
            let key = format!("n{n}");
            assert_eq!(
                names.claim(&key, &key, &[n; 32], ip(1), false, 1),
                Claim::Granted { new: true }
            );
        }
        assert_eq!(
            names.claim("n3", "n3", &[3; 32], ip(1), false, 1),
            Claim::TooManyNew
        );
        // Owners coming back are not new names.
        assert_eq!(
            names.claim("n0", "n0", &[0; 32], ip(1), false, 2),
            Claim::Granted { new: false }
        );
        names.claim("m0", "m0", &[9; 32], ip(2), false, 1);
        names.claim("m1", "m1", &[9; 32], ip(2), false, 1);
        assert_eq!(names.len(), 5);
        assert_eq!(
            names.claim("m2", "m2", &[9; 32], ip(3), false, 1),
            Claim::NoRoom
        );
    }

    #[test]
    fn bindings_survive_a_restart_on_disk() {
        let dir = std::env::temp_dir().join(format!("fala-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("names.redb");
        {
            let mut names = book(Some(&path));
            names.claim("ana", "Ana", &[1; 32], ip(1), false, 77);
            names.seen("ana", 99);
        }
        let names = book(Some(&path));
        assert_eq!(
            names.owner("ana"),
            Some(&Binding {
                identity: [1; 32],
                last_seen: 99,
                name: "Ana".into()
            })
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
