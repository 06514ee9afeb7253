//! Group commit of directory fsyncs.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::SpoolError;

/// Makes renames and unlinks in one directory durable, sharing one `fsync(dir)` among every
/// caller whose change happened before that fsync started.
///
/// A caller takes a ticket *after* its rename returned, then waits its turn; when its turn
/// comes, if a sync that started after its ticket has completed, it is already durable and
/// returns at once. Otherwise it syncs everything renamed so far and publishes that.
#[derive(Debug)]
pub(crate) struct DirSync {
    dir: Arc<File>,
    path: PathBuf,
    issued: AtomicU64,
    synced: AtomicU64,
    turn: tokio::sync::Mutex<()>,
}

impl DirSync {
    pub(crate) fn new(path: PathBuf) -> Result<Self, SpoolError> {
        let dir = File::open(&path).map_err(|e| SpoolError::io("open", &path, e))?;
        Ok(Self {
            dir: Arc::new(dir),
            path,
            issued: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Returns once every directory change made before the call is durable.
    pub(crate) async fn sync(&self) -> Result<(), SpoolError> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.turn.lock().await;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Everything with a ticket up to `covered` was renamed before this point.
        let covered = self.issued.load(Ordering::SeqCst);
        let dir = Arc::clone(&self.dir);
        tokio::task::spawn_blocking(move || dir.sync_all())
            .await?
            .map_err(|e| SpoolError::io("fsync", &self.path, e))?;
        self.synced.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    /// The blocking variant, for callers already on a blocking thread.
    pub(crate) fn sync_blocking(&self) -> Result<(), SpoolError> {
        self.dir
            .sync_all()
            .map_err(|e| SpoolError::io("fsync", &self.path, e))
    }
}
