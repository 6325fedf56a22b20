//! The file that keeps a client's identity key: made on first run, then read on every start.
//!
//! Losing it loses every name bound to it (until the server's reclaim period passes), so a
//! damaged file is reported, never silently replaced. It is the owner's only (0600 in a 0700
//! folder). Several clients on one machine each keep their own (`--identity FILE`, or separate
//! `FALA_CONFIG_DIR`s).

use std::path::{Path, PathBuf};

use fala_proto::hex;
use fala_proto::identity::Identity;
use thiserror::Error;

const HEADER: &str = "fala identity v1";

#[derive(Debug, Error)]
pub enum IdentityFileError {
    #[error("cannot read the identity file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the identity file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the identity file {0} is damaged; move it away to make a new identity (the names it \
         registered stay bound to the old one)"
    )]
    Damaged(PathBuf),
    #[error("no randomness available to make an identity")]
    Random,
}

/// `identity.key` in the client's config folder.
pub fn default_path(config_dir: Option<&Path>) -> Option<PathBuf> {
    config_dir.map(|d| d.join("identity.key"))
}

/// The identity kept at `path`, made and saved there if there is none yet.
pub fn load_or_create(path: &Path) -> Result<Identity, IdentityFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).ok_or_else(|| IdentityFileError::Damaged(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity::generate().map_err(|_| IdentityFileError::Random)?;
            save(path, &identity).map_err(|source| IdentityFileError::Write {
                path: path.to_owned(),
                source,
            })?;
            tracing::info!(path = %path.display(), "made a new identity {identity:?}");
            Ok(identity)
        }
        Err(source) => Err(IdentityFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn save(path: &Path, identity: &Identity) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_files::create_dir(dir)?;
    }
    let mut file = crate::private_files::create(path)?;
    writeln!(file, "{HEADER}\n{}", hex::encode(&identity.seed()))?;
    file.sync_all()
}

fn parse(text: &str) -> Option<Identity> {
    let mut lines = text.lines();
    if lines.next()?.trim() != HEADER {
        return None;
    }
    hex::decode::<32>(lines.next()?.trim()).map(Identity::from_seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_kept_private_and_a_damaged_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("fala-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("identity.key");
        let made = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(made.public(), again.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "fala identity v1\nnot hex\n").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityFileError::Damaged(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
