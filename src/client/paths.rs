//! Where a client keeps its files (settings, history, the servers it knows), for every face.

use std::path::PathBuf;
use std::sync::Arc;

use crate::net::tls::KnownServers;
use crate::net::Security;

/// `FALA_CONFIG_DIR` if set (scripts and tests run several clients with separate files), else
/// the platform's config folder + `fala`.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("FALA_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::config_dir().map(|d| d.join("fala")))
}

/// TLS with the servers remembered in `dir` (in memory only without a folder), or plain TCP.
pub fn security(plain: bool, dir: Option<PathBuf>) -> Security {
    if plain {
        return Security::Plain;
    }
    let file = dir.map(|d| d.join("known_servers.json"));
    Security::Tls(Arc::new(KnownServers::at(file)))
}
