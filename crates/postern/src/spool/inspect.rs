//! A read-only view of a spool directory, for `relay queue` and the admin API.
//!
//! Safe while a relay runs: a slot's header is written last when a message is committed and
//! replaced by the free marker when it is finished, and state files are replaced by rename,
//! so a reader sees either a whole message or none, and the old or the new version of each
//! state. A message is found by its id by reading the slots' headers (64 bytes each). Payload
//! checksums are not verified here (that reads every message whole; recovery does it), and
//! nothing is cleaned up or moved (that is [`Spool::open`](super::Spool::open)'s job).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::slot::{self, Decoded};
use super::{
    MessageState, QueueId, SlotScan, SpoolError, SpooledMessage, read_message_v1, scan_slot,
};

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
    let mut out = Vec::new();
    for m in messages(root, None)? {
        let id = m.id().clone();
        match with_state(root, m) {
            Ok(m) => out.push(m),
            Err(e) => tracing::debug!(queue_id = %id, error = %e, "skipping unreadable spool file"),
        }
    }
    out.sort_by(|a, b| {
        let key = |m: &InspectedMessage| (m.message.envelope().received_at, m.message.id().clone());
        key(a).cmp(&key(b))
    });
    Ok(out)
}

/// The message `id` in the spool at `root`, if it is there.
pub fn inspect_one(root: &Path, id: &QueueId) -> Result<Option<InspectedMessage>, SpoolError> {
    match messages(root, Some(id))?.into_iter().next() {
        Some(m) => with_state(root, m).map(Some),
        None => Ok(None),
    }
}

fn files(dir: &Path) -> Result<Vec<PathBuf>, SpoolError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.map(|e| e.path())
                    .map_err(|e| SpoolError::io("read directory", dir, e))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(SpoolError::io("read directory", dir, e)),
    }
}

/// The committed messages in the slots (and version 1 files) of the spool at `root`; only
/// `want` if given.
fn messages(root: &Path, want: Option<&QueueId>) -> Result<Vec<SpooledMessage>, SpoolError> {
    let mut out: Vec<SpooledMessage> = Vec::new();
    for path in files(&root.join("slots"))? {
        if slot::parse_name(&path).is_none() {
            continue;
        }
        if let Some(want) = want {
            // The header alone says whose message this is.
            let Ok(f) = fs::File::open(&path) else {
                continue;
            };
            match slot::read_header(&f) {
                Ok(Decoded::Message(h)) if &h.id == want => {}
                _ => continue,
            }
        }
        match scan_slot(&path, false) {
            Ok(SlotScan::Message(m)) => {
                if !out.iter().any(|o| o.id() == m.id()) {
                    out.push(m);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "skipping unreadable spool slot")
            }
        }
        if want.is_some() && !out.is_empty() {
            return Ok(out);
        }
    }
    for path in files(&root.join("queue"))? {
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".msg"))
        else {
            continue;
        };
        let Some(id) = QueueId::parse(stem) else {
            continue;
        };
        if want.is_some_and(|w| w != &id) || out.iter().any(|o| o.id() == &id) {
            continue;
        }
        match read_message_v1(&id, &path) {
            Ok(m) => out.push(m),
            Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(queue_id = %id, error = %e, "skipping unreadable spool file"),
        }
    }
    Ok(out)
}

fn with_state(root: &Path, message: SpooledMessage) -> Result<InspectedMessage, SpoolError> {
    let dir = root.join("queue");
    let id = message.id();
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
        || super::read_xattr_note(message.path()).is_some();
    Ok(InspectedMessage {
        message,
        state,
        in_flight,
    })
}
