//! Group commit of directory fsyncs.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::SpoolError;

/// Makes renames and unlinks in one directory durable, sharing one `fsync(dir)` among every
/// caller whose change happened before that fsync started.
///
/// A caller takes a ticket *after* its rename returned, then waits its turn; when its turn
/// comes, if a sync that started after its ticket has completed, it is already durable and
/// returns at once. Otherwise it syncs everything renamed so far and publishes that.
///
/// The commit paths call [`DirSync::sync_grouped`] on the blocking thread that just did the
/// rename, so a message costs one hop to the blocking pool, not two; waiting callers park on
/// the turn mutex while the leader's fsync covers them.
#[derive(Debug)]
pub(crate) struct DirSync {
    dir: Arc<File>,
    path: PathBuf,
    issued: AtomicU64,
    synced: AtomicU64,
    turn: Mutex<()>,
}

impl DirSync {
    pub(crate) fn new(path: PathBuf) -> Result<Self, SpoolError> {
        let dir = File::open(&path).map_err(|e| SpoolError::io("open", &path, e))?;
        Ok(Self {
            dir: Arc::new(dir),
            path,
            issued: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            turn: Mutex::new(()),
        })
    }

    /// Returns once every directory change made before the call is durable.
    pub(crate) async fn sync(self: &Arc<Self>) -> Result<(), SpoolError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.sync_grouped()).await?
    }

    /// [`DirSync::sync`] for a caller on a blocking thread: returns once every directory
    /// change made before the call is durable, sharing the fsync with concurrent callers.
    pub(crate) fn sync_grouped(&self) -> Result<(), SpoolError> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Everything with a ticket up to `covered` was renamed before this point.
        let covered = self.issued.load(Ordering::SeqCst);
        self.sync_blocking()?;
        self.synced.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    /// One fsync of the directory, ungrouped (recovery).
    pub(crate) fn sync_blocking(&self) -> Result<(), SpoolError> {
        self.dir
            .sync_all()
            .map_err(|e| SpoolError::io("fsync", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_callers_share_fsyncs_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Arc::new(DirSync::new(dir.path().to_owned()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let ds = Arc::clone(&ds);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        ds.sync_grouped().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ds.issued.load(Ordering::SeqCst), 160);
        // Every ticket is covered by a completed sync.
        assert_eq!(ds.synced.load(Ordering::SeqCst), 160);
    }
}
