//! Work directories that say whether their owner is alive, so that one left
//! by a killed process is reclaimed by the next one to start beside it.
//!
//! An executor keeps its spilled shuffle output and DataFusion's spill files
//! under `<work-dir>/<executor-id>/`, and removes it when it stops. A
//! SIGKILLed executor cannot: at TPC-H SF 100 such directories held 7.8 and
//! 14 GB. Each directory `NAME` therefore has a lock file `NAME.volley-lock`
//! beside it, created and locked (an exclusive `flock`, which the kernel
//! releases when the process dies, however it dies) before the directory,
//! and held while it lives. [`OwnedDir::claim`] first takes the lock of
//! every sibling lock file that nobody holds and removes that directory.
//!
//! Only entries this module made are ever removed: a lock file must have
//! the `.volley-lock` suffix, the name's prefix and [`MARKER`] as its
//! content; a directory without a lock file is left alone.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The suffix of a lock file beside the directory it guards.
const LOCK_SUFFIX: &str = ".volley-lock";

/// What a lock file holds, checked before its directory is removed.
const MARKER: &[u8] = b"volley work directory lock\n";

/// A directory this process owns while the value lives. Dropping it removes
/// the directory, then its lock file.
#[derive(Debug)]
pub struct OwnedDir {
    path: PathBuf,
    lock_path: PathBuf,
    /// Held locked for the owner's life.
    _lock: File,
}

impl OwnedDir {
    /// Creates `parent/name` with its lock, after removing each sibling
    /// whose name starts with `prefix` and whose owner is gone. Returns the
    /// directory and the siblings it removed.
    pub fn claim(parent: &Path, prefix: &str, name: &str) -> io::Result<(Self, Vec<PathBuf>)> {
        std::fs::create_dir_all(parent)?;
        let removed = sweep(parent, prefix)?;
        let path = parent.join(name);
        let lock_path = lock_path_of(&path);
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)?;
        // The marker goes in only once the lock is held, and a sweeper
        // removes nothing without it: a sweeper that opens this file first
        // finds it empty and leaves it. It holds the lock only that long.
        lock.lock()?;
        (&lock).write_all(MARKER)?;
        std::fs::create_dir_all(&path)?;
        Ok((
            Self {
                path,
                lock_path,
                _lock: lock,
            },
            removed,
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        // While still locked: no sweeper can take it meanwhile.
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

fn lock_path_of(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(LOCK_SUFFIX);
    dir.with_file_name(name)
}

/// Removes every directory of `parent` named `prefix…` whose lock file
/// nobody holds, and that lock file; returns the directories removed.
fn sweep(parent: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(LOCK_SUFFIX)) else {
            continue;
        };
        if !name.starts_with(prefix) || name.is_empty() {
            continue;
        }
        let lock_path = entry.path();
        let Ok(mut lock) = OpenOptions::new().read(true).write(true).open(&lock_path) else {
            continue; // removed by another sweeper meanwhile
        };
        if lock.try_lock().is_err() {
            continue; // its owner lives (or another sweeper has it)
        }
        let mut content = Vec::new();
        if lock.read_to_end(&mut content).is_err() || content != MARKER {
            // Not one this module wrote whole: leave it, and its directory.
            continue;
        }
        let dir = parent.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a dead executor's work directory");
                continue;
            }
        }
        let _ = std::fs::remove_file(&lock_path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory and lock file as a killed owner leaves them: the marker
    /// written, the lock released.
    fn abandoned(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(name);
        std::fs::create_dir_all(dir.join("shuffle")).unwrap();
        std::fs::write(dir.join("shuffle").join("map0.arrow"), b"spilled").unwrap();
        std::fs::write(lock_path_of(&dir), MARKER).unwrap();
        dir
    }

    #[test]
    fn a_directory_whose_owner_is_gone_is_removed_and_a_living_ones_is_kept() {
        let parent = tempfile::tempdir().unwrap();
        let (living, removed) = OwnedDir::claim(parent.path(), "exec-", "exec-a").unwrap();
        assert!(removed.is_empty());
        let dead = abandoned(parent.path(), "exec-dead");
        let (second, removed) = OwnedDir::claim(parent.path(), "exec-", "exec-b").unwrap();
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(!lock_path_of(&dead).exists());
        assert!(
            living.path().is_dir(),
            "a living owner's directory was removed"
        );
        assert!(second.path().is_dir());
    }

    #[test]
    fn only_what_this_module_made_is_ever_removed() {
        let parent = tempfile::tempdir().unwrap();
        // No lock file; another prefix; a lock file of foreign content.
        let unlocked = parent.path().join("exec-nolock");
        std::fs::create_dir_all(&unlocked).unwrap();
        let other_prefix = abandoned(parent.path(), "other-dead");
        let foreign = parent.path().join("exec-foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(lock_path_of(&foreign), b"someone else's\n").unwrap();
        let plain_lock = parent.path().join("exec-x.lock");
        std::fs::write(&plain_lock, MARKER).unwrap();
        let (_owned, removed) = OwnedDir::claim(parent.path(), "exec-", "exec-a").unwrap();
        assert!(removed.is_empty(), "removed {removed:?}");
        for kept in [&unlocked, &other_prefix, &foreign, &plain_lock] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
    }

    #[test]
    fn dropping_the_owner_removes_its_directory_and_lock() {
        let parent = tempfile::tempdir().unwrap();
        let (owned, _) = OwnedDir::claim(parent.path(), "exec-", "exec-a").unwrap();
        let path = owned.path().to_path_buf();
        std::fs::write(path.join("spill"), b"x").unwrap();
        drop(owned);
        assert!(!path.exists());
        assert!(!lock_path_of(&path).exists());
    }
}
