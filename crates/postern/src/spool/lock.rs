//! The spool lock: one process at a time changes a spool.
//!
//! The relay holds an exclusive `flock(2)` on `<spool>/lock` for as long as it runs; `relay
//! queue` takes the same lock before it changes the spool directly (when no relay runs), so a
//! command-line edit and a running queue never fight over a state file. The lock dies with
//! the process (no stale lock files after a crash).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use super::SpoolError;

/// An exclusive lock on a spool directory, released when dropped.
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
    path: PathBuf,
}

impl SpoolLock {
    /// The lock file of the spool at `root`.
    pub fn path_for(root: &Path) -> PathBuf {
        root.join("lock")
    }

    /// Takes the lock of the spool at `root` (creating the directory 0700 if needed), or
    /// answers `Ok(None)` when another process (or another [`SpoolLock`] in this one) holds
    /// it.
    pub fn try_acquire(root: &Path) -> Result<Option<Self>, SpoolError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| SpoolError::io("create directory", root, e))?;
        let path = Self::path_for(root);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SpoolError::io("open", &path, e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Self { _file: file, path })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(SpoolError::io("lock", &path, io::Error::from(e))),
        }
    }

    /// Takes the lock, or fails with an error that says another process uses the spool.
    pub fn acquire(root: &Path) -> Result<Self, SpoolError> {
        Self::try_acquire(root)?.ok_or_else(|| {
            SpoolError::io(
                "lock",
                Self::path_for(root),
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the spool is in use by another process (is a relay already running on it?)",
                ),
            )
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        let a = SpoolLock::try_acquire(&root).unwrap().unwrap();
        assert!(SpoolLock::try_acquire(&root).unwrap().is_none());
        let e = SpoolLock::acquire(&root).unwrap_err().to_string();
        assert!(e.contains("lock"), "{e}");
        drop(a);
        assert!(SpoolLock::try_acquire(&root).unwrap().is_some());
    }
}
