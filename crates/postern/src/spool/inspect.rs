//! A read-only view of a spool directory, for `relay queue` and the admin API.
//!
//! Safe while a relay runs: message files appear by rename and state files are replaced by
//! rename, so a reader sees either the old or the new version of each, never half of one.
//! Nothing is cleaned up or moved here (that is [`Spool::open`](super::Spool::open)'s job).

use std::fs;
use std::io;
use std::path::Path;

use super::{MessageState, QueueId, SpoolError, SpooledMessage, read_message};

/// One spooled message as found on disk.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InspectedMessage {
    /// The message (envelope, size, body on disk).
    pub message: SpooledMessage,
    /// Its delivery state (fresh if no attempt was recorded yet).
    pub state: MessageState,
    /// Whether some recipients are being handed to a route right now (or were, when a relay
    /// stopped).
    pub in_flight: bool,
}

/// Every committed message in the spool at `root`, oldest first. Unreadable files are
/// skipped (recovery moves them aside at the next start).
pub fn inspect(root: &Path) -> Result<Vec<InspectedMessage>, SpoolError> {
    let dir = root.join("queue");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SpoolError::io("read directory", &dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("read directory", &dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".msg")) else {
            continue;
        };
        if let Some(id) = QueueId::parse(stem) {
            ids.push(id);
        }
    }
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match inspect_one(root, &id) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => {}
            Err(e) => tracing::debug!(queue_id = %id, error = %e, "skipping unreadable spool file"),
        }
    }
    out.sort_by_key(|m| m.message.envelope().received_at);
    Ok(out)
}

/// The message `id` in the spool at `root`, if it is there.
pub fn inspect_one(root: &Path, id: &QueueId) -> Result<Option<InspectedMessage>, SpoolError> {
    let dir = root.join("queue");
    let path = dir.join(format!("{id}.msg"));
    if !path.exists() {
        return Ok(None);
    }
    let message = match read_message(id, &path) {
        Ok(m) => m,
        // Finished and removed between the listing and now.
        Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let n = message.envelope().recipients.len();
    let state_path = dir.join(format!("{id}.state"));
    let state = match fs::read(&state_path) {
        Ok(b) => serde_json::from_slice::<MessageState>(&b)
            .ok()
            .filter(|s| s.recipients.len() == n)
            .ok_or_else(|| SpoolError::Corrupt {
                path: state_path.clone(),
                reason: "unreadable delivery state".into(),
            })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => MessageState::new(n),
        Err(e) => return Err(SpoolError::io("read", &state_path, e)),
    };
    let in_flight = dir.join(format!("{id}.inflight")).exists()
        || super::read_xattr_note(&dir.join(format!("{id}.msg"))).is_some();
    Ok(Some(InspectedMessage {
        message,
        state,
        in_flight,
    }))
}
