//! The folder where a server keeps what must survive a restart: its TLS certificate, the name
//! database and the identity of the users it hosts. Private files are the owner's only.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `fala-server` in the user's data folder (`~/.local/share/fala-server`), or the working
/// folder without one.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("fala-server"))
        .unwrap_or_else(|| PathBuf::from("fala-server-data"))
}

/// Creates `dir` (and its parents) readable by its owner only.
pub fn create(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to a new (or truncated) file created with `mode`.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)?.write_all(bytes)
}

/// The 32-byte secret kept in `path`, made (and written 0600) on first use.
pub fn load_or_make_seed(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a 32-byte key", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(dir) = path.parent() {
                create(dir)?;
            }
            write_file(path, &seed, 0o600)?;
            Ok(seed)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_made_once_kept_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("fala-seed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("service.key");
        let first = load_or_make_seed(&path).unwrap();
        assert_eq!(load_or_make_seed(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(load_or_make_seed(&path).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
