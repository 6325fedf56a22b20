//! Files only their owner may read. Settings, the call history and call recordings say who
//! talked to whom (and, for recordings, what was said), so they are created with mode 0600 in
//! folders of mode 0700, whatever the umask.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates (or truncates) `path` for writing, readable and writable by its owner only.
pub fn create(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    // A file that existed before keeps its old mode through `open`: set it.
    restrict(path, 0o600)?;
    Ok(file)
}

/// Creates `dir` (and its parents) and makes it the owner's only.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    restrict(dir, 0o700)
}

fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_and_folders_are_the_owners_only_whatever_the_umask_or_old_mode() {
        let dir = std::env::temp_dir().join(format!("fala-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let inner = dir.join("fala");
        create_dir(&inner).unwrap();
        let path = inner.join("history.json");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        create(&path).unwrap().write_all(b"new").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&inner), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let _ = std::fs::remove_dir_all(dir);
    }
}
