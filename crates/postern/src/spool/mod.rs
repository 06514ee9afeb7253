//! The durable spool: where an accepted message lives until every recipient has an outcome.
//!
//! Invariant 1 of the architecture: the `250` after `DATA` is sent only after the message and
//! its envelope are on disk and fsync'ed, file and directory. [`Incoming::commit`] returns only
//! then.
//!
//! # Layout
//!
//! ```text
//! <spool>/                  0700, owned by the relay
//!   queue/<id>.tmp          a message being received or written (discarded at recovery)
//!   queue/<id>.msg          a committed message (0600)
//!   queue/<id>.state        its per-recipient delivery state, once there was an attempt
//!   queue/<id>.state.tmp    a state being replaced (discarded at recovery)
//!   queue/<id>.inflight     recipients handed to a route whose outcome is not yet recorded,
//!                           where the file system has no user extended attributes
//!   corrupt/                unreadable or truncated files, moved aside at recovery
//!   free/<n>                files of delivered messages kept for reuse (emptied at start)
//! ```
//!
//! # Message file format, version 1
//!
//! ```text
//! POSTERN-SPOOL/1 <body length: 20 digits> <envelope length: 10 digits>\n   (48 bytes)
//! <envelope: JSON, `envelope length` bytes>\n
//! <message: the unstuffed, CRLF-normalised bytes of DATA/BDAT, `body length` bytes>
//! ```
//!
//! The fixed-width header lets a large message be streamed to disk before its length is known
//! (the length is written in place at commit), and lets recovery detect truncation: a file
//! whose size is not `48 + envelope length + 1 + body length` is moved to `corrupt/`.
//!
//! # Writing a message
//!
//! A message smaller than [`SpoolConfig::spill_threshold`] (default 256 KiB) stays in memory
//! until [`Incoming::commit`], which writes it with one blocking task: create `<id>.tmp`
//! (0600), write, `fdatasync`, rename to `<id>.msg`. When a delivered message's file is waiting
//! in `free/`, that file is overwritten (and cut to length) instead of creating one, and renamed
//! from there: a relay under load then allocates and frees no inode per message, which is most
//! of what file creation costs the kernel (ext4 scans past every inode freed in the last 30
//! seconds when it allocates one without a journal). `free/` is emptied at start, so a file is
//! only reused by the process that freed it. A larger one is streamed into `<id>.tmp`
//! in threshold-sized chunks, so memory does not grow with message size. The rename is made
//! durable by an fsync of `queue/` that is shared by every commit renamed before it started
//! (group commit), so concurrent sessions pay for one directory fsync between them.
//!
//! A crash at any instant leaves either no `<id>.msg` (the `.tmp` is discarded at recovery) or
//! a whole one. On `ENOSPC`/`EDQUOT` the temporary file is removed and the error says
//! [`SpoolError::is_storage_full`], so the session answers `452 4.3.1`.
//!
//! # Delivery state
//!
//! After each attempt that changes it, the [`MessageState`] of a message is replaced
//! atomically (`<id>.state.tmp`, fsync, rename, directory fsync). Before an attempt the
//! recipients handed to the route are noted in the `user.postern.inflight` extended attribute
//! of `<id>.msg` (or in `<id>.inflight` where the file system has no user extended attributes;
//! neither is fsync'ed: the note only serves to log a *possible duplicate* when the process dies
//! between the upstream's `250` and the state update). When every recipient has a final
//! outcome the files are deleted (the message file is moved to `free/` for reuse, up to
//! [`FREE_FILES`] of them), and the directory is fsync'ed (group commit).

mod dirsync;
mod envelope;
mod error;
mod id;
mod inspect;
mod lock;
mod state;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc;

use self::dirsync::DirSync;
pub use self::envelope::{BodyType, ClientInfo, Envelope, Notify, Recipient, Ret};
pub use self::error::SpoolError;
pub use self::id::QueueId;
pub use self::inspect::{InspectedMessage, inspect, inspect_one};
pub use self::lock::SpoolLock;
pub use self::state::{FinalOutcome, MessageState, RecipientState};

const MAGIC: &[u8; 16] = b"POSTERN-SPOOL/1 ";
const HEADER_LEN: usize = 48;
/// How long after running out of space [`Spool::receive`] refuses new messages outright.
const FULL_BACKOFF: Duration = Duration::from_secs(2);
/// Files of delivered messages kept in `free/` for reuse by the next messages.
pub const FREE_FILES: usize = 256;
/// The extended attribute holding a message's in-flight note.
const INFLIGHT_XATTR: &str = "user.postern.inflight";

/// Spool settings (the `[spool]` table of the configuration).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SpoolConfig {
    /// The spool directory; created 0700 if missing. Default `./postern-data/spool`.
    #[serde(default = "default_spool_path")]
    pub path: PathBuf,
    /// Messages larger than this many bytes are streamed to disk while they are received;
    /// smaller ones are written in one go at commit. Default 262144 (256 KiB).
    #[serde(default = "default_spill_threshold")]
    pub spill_threshold: usize,
}

fn default_spool_path() -> PathBuf {
    PathBuf::from("./postern-data/spool")
}

fn default_spill_threshold() -> usize {
    256 * 1024
}

impl SpoolConfig {
    /// A spool in `path` with the default settings.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            spill_threshold: default_spill_threshold(),
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self::new(default_spool_path())
    }
}

/// The durable spool. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    queue_dir: PathBuf,
    spill_threshold: usize,
    dirsync: Arc<DirSync>,
    sink: Mutex<Option<mpsc::UnboundedSender<SpooledMessage>>>,
    full_at: Mutex<Option<Instant>>,
    metrics: Arc<crate::metrics::Metrics>,
    free_dir: PathBuf,
    /// Files in `free/` ready for reuse, and the next free file number.
    free: Mutex<(Vec<PathBuf>, u64)>,
    /// The file system refused user extended attributes: in-flight notes are files.
    no_xattr: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn file(&self, id: &QueueId, ext: &str) -> PathBuf {
        self.queue_dir.join(format!("{id}.{ext}"))
    }

    /// A freed message file to overwrite, if one is waiting.
    fn take_free(&self) -> Option<PathBuf> {
        lock(&self.free).0.pop()
    }

    /// Retires a finished message's file: moved to `free/` for reuse while fewer than
    /// [`FREE_FILES`] wait there, else deleted. Blocking.
    fn retire(&self, msg: &Path) -> io::Result<()> {
        let slot = {
            let mut free = lock(&self.free);
            (free.0.len() < FREE_FILES).then(|| {
                free.1 += 1;
                self.free_dir.join(free.1.to_string())
            })
        };
        let Some(slot) = slot else {
            return fs::remove_file(msg);
        };
        fs::rename(msg, &slot)?;
        lock(&self.free).0.push(slot);
        Ok(())
    }

    fn use_xattr(&self) -> bool {
        !self.no_xattr.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the in-flight note of `id`. Blocking.
    fn note_in_flight(&self, id: &QueueId, body: &[u8]) -> io::Result<()> {
        if self.use_xattr() {
            let msg = self.file(id, "msg");
            match rustix::fs::setxattr(&msg, INFLIGHT_XATTR, body, rustix::fs::XattrFlags::empty())
            {
                Ok(()) => return Ok(()),
                Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::PERM => {
                    tracing::info!(error = %e, "no user extended attributes in the spool: in-flight notes are files");
                    self.no_xattr
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        create_0600_truncate(&self.file(id, "inflight")).and_then(|mut f| f.write_all(body))
    }

    /// Clears the in-flight note of `id` (the message file stays). Blocking.
    fn clear_in_flight(&self, id: &QueueId) {
        if self.use_xattr() {
            let _ = rustix::fs::removexattr(self.file(id, "msg"), INFLIGHT_XATTR);
        } else {
            remove_if_exists(&self.file(id, "inflight"));
        }
    }

    fn note_error(&self, e: &SpoolError) {
        if e.is_storage_full() {
            *lock(&self.full_at) = Some(Instant::now());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovered {
    /// Messages to deliver, oldest first, with their delivery state.
    pub messages: Vec<RecoveredMessage>,
    /// Temporary files (messages never committed, states never renamed) that were deleted.
    pub discarded_tmp: usize,
    /// Unreadable or truncated files moved to `corrupt/`.
    pub quarantined: Vec<PathBuf>,
}

/// One message found at recovery.
#[derive(Debug)]
#[non_exhaustive]
pub struct RecoveredMessage {
    /// The message.
    pub message: SpooledMessage,
    /// Its delivery state (fresh if it had none).
    pub state: MessageState,
    /// Recipients that were handed to a route when the process stopped and have no recorded
    /// outcome: they will be attempted again, and may be delivered twice.
    pub possible_duplicates: Vec<usize>,
}

impl Spool {
    /// Opens (creating if needed) the spool directory and recovers its messages.
    ///
    /// Temporary files are deleted, truncated or unreadable messages are moved to `corrupt/`
    /// (and logged), states without a message are deleted, and finished messages whose files
    /// were not yet removed are removed.
    pub async fn open(cfg: &SpoolConfig) -> Result<(Self, Recovered), SpoolError> {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || open_blocking(&cfg)).await?
    }

    /// The spool directory.
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    /// The relay's metrics (one set per spool, so per relay).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// Starts receiving a message. Cheap: nothing touches the disk until the message outgrows
    /// the spill threshold or is committed. Fails with a storage-full error for a short while
    /// after the file system ran out of space.
    pub async fn receive(&self, envelope: Envelope) -> Result<Incoming, SpoolError> {
        if let Some(at) = *lock(&self.inner.full_at)
            && at.elapsed() < FULL_BACKOFF
        {
            return Err(SpoolError::StorageFull);
        }
        Ok(self.receive_with_id(QueueId::generate(), envelope))
    }

    pub(crate) fn receive_with_id(&self, id: QueueId, envelope: Envelope) -> Incoming {
        Incoming {
            spool: Arc::clone(&self.inner),
            id,
            envelope,
            buf: Vec::new(),
            file: None,
            tmp_created: false,
            body_len: 0,
            finished: false,
        }
    }

    /// Registers the queue: every message committed from now on is sent to the returned
    /// receiver (replacing any previous one). Without a receiver, committed messages just stay
    /// on disk until the next [`Spool::open`].
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<SpooledMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.inner.sink) = Some(tx);
        rx
    }

    /// Whether a message file exists for `id` (committed and not yet removed).
    pub async fn contains(&self, id: &QueueId) -> bool {
        let path = self.inner.file(id, "msg");
        tokio::task::spawn_blocking(move || path.exists())
            .await
            .unwrap_or(false)
    }

    /// Replaces the delivery state of `id` atomically and durably, and clears its in-flight
    /// note.
    pub async fn save_state(&self, id: &QueueId, state: &MessageState) -> Result<(), SpoolError> {
        let json = serde_json::to_vec(state).map_err(|e| SpoolError::Corrupt {
            path: self.inner.file(id, "state"),
            reason: e.to_string(),
        })?;
        let tmp = self.inner.file(id, "state.tmp");
        let dst = self.inner.file(id, "state");
        let inner = Arc::clone(&self.inner);
        let id2 = id.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
            let r = (|| {
                let mut f = create_0600(&tmp).map_err(|e| SpoolError::io("create", &tmp, e))?;
                f.write_all(&json)
                    .map_err(|e| SpoolError::io("write", &tmp, e))?;
                f.sync_data()
                    .map_err(|e| SpoolError::io("fsync", &tmp, e))?;
                fs::rename(&tmp, &dst).map_err(|e| SpoolError::io("rename", &dst, e))
            })();
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            r?;
            inner.clear_in_flight(&id2);
            Ok(())
        })
        .await?;
        if let Err(e) = &res {
            self.inner.note_error(e);
        }
        res?;
        self.inner.dirsync.sync().await
    }

    /// Notes (best effort, not fsync'ed) that `rcpts` of `id` are being handed to a route, so
    /// that a crash before [`Spool::save_state`] is logged as a possible duplicate.
    pub async fn mark_in_flight(&self, id: &QueueId, rcpts: &[usize]) {
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        let body = serde_json::to_vec(rcpts).unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = inner.note_in_flight(&id, &body) {
                tracing::warn!(queue_id = %id, error = %e, "cannot note in-flight recipients");
            }
        })
        .await;
    }

    /// Deletes a finished message (message file first, then its state), durably.
    pub async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let msg = self.inner.file(id, "msg");
        let state = self.inner.file(id, "state");
        let inflight = self.inner.file(id, "inflight");
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
            match inner.retire(&msg) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("remove", &msg, e)),
            }
            remove_if_exists(&state);
            if !inner.use_xattr() {
                remove_if_exists(&inflight);
            }
            // On this thread: one hop to the blocking pool per message, not two.
            inner.dirsync.sync_grouped()
        })
        .await??;
        self.inner.metrics.unspooled(id);
        Ok(())
    }

    /// Stores a whole message in one call (used for bounces): the same path as
    /// [`Spool::receive`], [`Incoming::write`], [`Incoming::commit`].
    pub(crate) async fn store(
        &self,
        id: QueueId,
        envelope: Envelope,
        body: Vec<u8>,
    ) -> Result<SpooledMessage, SpoolError> {
        let mut incoming = self.receive_with_id(id, envelope);
        incoming.buf = body;
        incoming.body_len = incoming.buf.len() as u64;
        incoming.commit_inner().await
    }
}

fn remove_if_exists(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove spool file");
    }
}

/// Writes a whole message over a freed message file and renames it to `dst`: no inode is
/// allocated. The file is cut to length and fdatasync'ed before the rename.
fn overwrite(inner: &Inner, free: &Path, prefix: &[u8], body: &[u8], dst: &Path) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(free)?;
    if inner.use_xattr() {
        // The note of the message this file held.
        let _ = rustix::fs::fremovexattr(&f, INFLIGHT_XATTR);
    }
    f.write_all(prefix)?;
    f.write_all(body)?;
    f.set_len((prefix.len() + body.len()) as u64)?;
    f.sync_data()?;
    drop(f);
    fs::rename(free, dst)
}

fn create_0600(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn create_0600_truncate(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn make_dir_0700(path: &Path) -> Result<(), SpoolError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| SpoolError::io("create directory", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| SpoolError::io("chmod", path, e))
}

fn header(body_len: u64, json_len: usize) -> Vec<u8> {
    let h = format!("POSTERN-SPOOL/1 {body_len:020} {json_len:010}\n");
    debug_assert_eq!(h.len(), HEADER_LEN);
    h.into_bytes()
}

fn open_blocking(cfg: &SpoolConfig) -> Result<(Spool, Recovered), SpoolError> {
    let root = cfg.path.clone();
    make_dir_0700(&root)?;
    let queue_dir = root.join("queue");
    let corrupt_dir = root.join("corrupt");
    let free_dir = root.join("free");
    make_dir_0700(&queue_dir)?;
    make_dir_0700(&corrupt_dir)?;
    make_dir_0700(&free_dir)?;
    // Files freed by a previous process are never reused: after a crash one could still be
    // linked in queue/ too.
    if let Ok(entries) = fs::read_dir(&free_dir) {
        for e in entries.flatten() {
            remove_if_exists(&e.path());
        }
    }

    let mut recovered = Recovered::default();
    let mut msgs: Vec<(QueueId, PathBuf)> = Vec::new();
    let mut states: HashMap<QueueId, PathBuf> = HashMap::new();
    let mut inflight: HashMap<QueueId, PathBuf> = HashMap::new();
    let mut changed = false;
    let entries =
        fs::read_dir(&queue_dir).map_err(|e| SpoolError::io("read directory", &queue_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("read directory", &queue_dir, e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.ends_with(".tmp") {
            remove_if_exists(&path);
            recovered.discarded_tmp += 1;
            changed = true;
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Some(id) = QueueId::parse(stem) else {
            tracing::warn!(path = %path.display(), "ignoring unknown file in the spool");
            continue;
        };
        match ext {
            "msg" => msgs.push((id, path)),
            "state" => {
                states.insert(id, path);
            }
            "inflight" => {
                inflight.insert(id, path);
            }
            _ => tracing::warn!(path = %path.display(), "ignoring unknown file in the spool"),
        }
    }
    msgs.sort();

    for (id, path) in msgs {
        let quarantine = |path: &Path, reason: &str, recovered: &mut Recovered| {
            let dst = corrupt_dir.join(path.file_name().unwrap_or_default());
            tracing::error!(queue_id = %id, path = %path.display(), reason, "corrupt spool file moved to {}", dst.display());
            if fs::rename(path, &dst).is_ok() {
                recovered.quarantined.push(dst);
            }
        };
        let message = match read_message(&id, &path) {
            Ok(m) => m,
            Err(e) => {
                quarantine(&path, &e.to_string(), &mut recovered);
                changed = true;
                continue;
            }
        };
        let n = message.envelope().recipients.len();
        let mut state = match states.remove(&id) {
            None => MessageState::new(n),
            Some(sp) => match fs::read(&sp)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<MessageState>(&b).map_err(|e| e.to_string()))
            {
                Ok(s) if s.recipients.len() == n => s,
                Ok(_) => {
                    quarantine(
                        &sp,
                        "recipient count differs from the envelope",
                        &mut recovered,
                    );
                    MessageState::new(n)
                }
                Err(e) => {
                    quarantine(&sp, &e, &mut recovered);
                    MessageState::new(n)
                }
            },
        };
        let mut possible_duplicates = Vec::new();
        let note_file = inflight.remove(&id);
        let note = match &note_file {
            Some(ip) => Some(fs::read(ip).unwrap_or_default()),
            None => read_xattr_note(&path),
        };
        if let Some(note) = note {
            let rcpts: Vec<usize> =
                serde_json::from_slice(&note).unwrap_or_else(|_| (0..n).collect());
            for i in rcpts {
                if i < n && state.recipients[i].outcome.is_none() {
                    tracing::warn!(
                        queue_id = %id,
                        rcpt = %message.envelope().recipients[i].address,
                        "possible duplicate: the relay stopped while this recipient was being delivered; it will be attempted again"
                    );
                    possible_duplicates.push(i);
                }
            }
            match &note_file {
                Some(ip) => remove_if_exists(ip),
                None => {
                    let _ = rustix::fs::removexattr(&path, INFLIGHT_XATTR);
                }
            }
        }
        if state.is_finished() {
            // Finished but not yet removed when the process stopped.
            remove_if_exists(&path);
            if let Some(sp) = states.remove(&id) {
                remove_if_exists(&sp);
            }
            remove_if_exists(&queue_dir.join(format!("{id}.state")));
            changed = true;
            continue;
        }
        // Normalise: a recovered state always has a version we understand.
        state.version = state::STATE_VERSION;
        recovered.messages.push(RecoveredMessage {
            message,
            state,
            possible_duplicates,
        });
    }
    for (_, orphan) in states.into_iter().chain(inflight) {
        remove_if_exists(&orphan);
        changed = true;
    }

    let dirsync = Arc::new(DirSync::new(queue_dir.clone())?);
    if changed {
        dirsync.sync_blocking()?;
    }
    let spool = Spool {
        inner: Arc::new(Inner {
            root,
            queue_dir,
            spill_threshold: cfg.spill_threshold.max(1),
            dirsync,
            sink: Mutex::new(None),
            full_at: Mutex::new(None),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            free_dir,
            free: Mutex::new((Vec::new(), 0)),
            no_xattr: std::sync::atomic::AtomicBool::new(false),
        }),
    };
    for m in &recovered.messages {
        let msg = &m.message;
        spool
            .metrics()
            .recovered(msg.id(), msg.envelope().received_at);
    }
    Ok((spool, recovered))
}

/// The in-flight note kept in a message file's extended attribute, if any.
pub(crate) fn read_xattr_note(path: &Path) -> Option<Vec<u8>> {
    // A note lists recipient indexes: a few bytes each; 64 KiB is far more than any.
    let mut buf = vec![0u8; 64 * 1024];
    let n = rustix::fs::getxattr(path, INFLIGHT_XATTR, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn read_message(id: &QueueId, path: &Path) -> Result<SpooledMessage, SpoolError> {
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut f = File::open(path).map_err(|e| SpoolError::io("open", path, e))?;
    let size = f
        .metadata()
        .map_err(|e| SpoolError::io("stat", path, e))?
        .len();
    let mut h = [0u8; HEADER_LEN];
    f.read_exact(&mut h)
        .map_err(|_| corrupt("shorter than its header".into()))?;
    if &h[..16] != MAGIC || h[36] != b' ' || h[47] != b'\n' {
        return Err(corrupt("not a version 1 spool file".into()));
    }
    let num = |b: &[u8]| -> Option<u64> { std::str::from_utf8(b).ok()?.parse().ok() };
    let (Some(body_len), Some(json_len)) = (num(&h[16..36]), num(&h[37..47])) else {
        return Err(corrupt("bad lengths in header".into()));
    };
    let body_offset = HEADER_LEN as u64 + json_len + 1;
    if size != body_offset + body_len {
        return Err(corrupt(format!(
            "truncated: {size} bytes, header says {}",
            body_offset + body_len
        )));
    }
    let mut json = vec![0u8; usize::try_from(json_len).map_err(|e| corrupt(e.to_string()))?];
    f.read_exact(&mut json)
        .map_err(|e| SpoolError::io("read", path, e))?;
    let envelope: Envelope =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("envelope: {e}")))?;
    Ok(SpooledMessage(Arc::new(MsgInner {
        id: id.clone(),
        envelope,
        path: path.to_owned(),
        body_offset,
        body_len,
    })))
}

/// One message being received. Dropping it without [`Incoming::commit`] is the same as
/// [`Incoming::abort`]: nothing is left behind.
#[derive(Debug)]
pub struct Incoming {
    spool: Arc<Inner>,
    id: QueueId,
    envelope: Envelope,
    buf: Vec<u8>,
    file: Option<File>,
    tmp_created: bool,
    body_len: u64,
    finished: bool,
}

impl Incoming {
    /// The queue id this message will have.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Bytes of message written so far.
    pub fn len(&self) -> u64 {
        self.body_len
    }

    /// Whether no message byte was written yet.
    pub fn is_empty(&self) -> bool {
        self.body_len == 0
    }

    /// Appends message bytes (unstuffed, CRLF-normalised). Memory stays bounded: past the
    /// spill threshold the bytes go to a temporary file.
    pub async fn write(&mut self, body: &[u8]) -> Result<(), SpoolError> {
        self.body_len += body.len() as u64;
        self.buf.extend_from_slice(body);
        if self.file.is_some() || self.buf.len() >= self.spool.spill_threshold {
            self.flush().await?;
        }
        Ok(())
    }

    fn prefix(&self, body_len: u64) -> Result<Vec<u8>, SpoolError> {
        let json = serde_json::to_vec(&self.envelope).map_err(|e| SpoolError::Corrupt {
            path: self.spool.file(&self.id, "tmp"),
            reason: e.to_string(),
        })?;
        let mut p = header(body_len, json.len());
        p.extend_from_slice(&json);
        p.push(b'\n');
        Ok(p)
    }

    async fn flush(&mut self) -> Result<(), SpoolError> {
        if self.buf.len() < self.spool.spill_threshold && self.file.is_some() {
            return Ok(());
        }
        let prefix = if self.file.is_none() {
            Some(self.prefix(0)?)
        } else {
            None
        };
        let file = self.file.take();
        let mut buf = std::mem::take(&mut self.buf);
        let tmp = self.spool.file(&self.id, "tmp");
        self.tmp_created = true;
        let res = tokio::task::spawn_blocking(move || -> Result<(File, Vec<u8>), SpoolError> {
            let mut f = match file {
                Some(f) => f,
                None => {
                    let mut f = create_0600(&tmp).map_err(|e| SpoolError::io("create", &tmp, e))?;
                    f.write_all(prefix.as_deref().unwrap_or_default())
                        .map_err(|e| SpoolError::io("write", &tmp, e))?;
                    f
                }
            };
            f.write_all(&buf)
                .map_err(|e| SpoolError::io("write", &tmp, e))?;
            buf.clear();
            Ok((f, buf))
        })
        .await;
        match res {
            Ok(Ok((f, buf))) => {
                self.file = Some(f);
                self.buf = buf;
                Ok(())
            }
            Ok(Err(e)) => {
                self.spool.note_error(&e);
                self.discard();
                Err(e)
            }
            Err(e) => {
                self.discard();
                Err(e.into())
            }
        }
    }

    /// Makes the message durable (file fsync'ed, renamed into the queue, directory fsync'ed)
    /// and hands it to the queue. Only after `Ok` may the session answer `250`.
    pub async fn commit(self) -> Result<QueueId, SpoolError> {
        let msg = self.commit_inner().await?;
        Ok(msg.id().clone())
    }

    async fn commit_inner(mut self) -> Result<SpooledMessage, SpoolError> {
        let body_len = self.body_len;
        let prefix = self.prefix(body_len)?;
        let body_offset = prefix.len() as u64;
        let file = self.file.take();
        let buf = std::mem::take(&mut self.buf);
        let tmp = self.spool.file(&self.id, "tmp");
        let dst = self.spool.file(&self.id, "msg");
        self.tmp_created = true;
        let (tmp2, dst2) = (tmp.clone(), dst.clone());
        let inner = Arc::clone(&self.spool);
        // `Err`: nothing was renamed; `Ok(Err)`: renamed, but the directory fsync failed.
        let res = tokio::task::spawn_blocking(move || -> Result<Result<(), SpoolError>, SpoolError> {
            let (tmp, dst) = (tmp2, dst2);
            if file.is_none()
                && let Some(free) = inner.take_free()
            {
                match overwrite(&inner, &free, &prefix, &buf, &dst) {
                    // On this thread: one hop to the blocking pool per message, not two.
                    Ok(()) => return Ok(inner.dirsync.sync_grouped()),
                    // A damaged free file is not worth an error: drop it, create a new one.
                    Err(e) => {
                        tracing::debug!(path = %free.display(), error = %e, "cannot reuse a free spool file");
                        remove_if_exists(&free);
                    }
                }
            }
            let f = match file {
                None => {
                    let mut f = create_0600(&tmp).map_err(|e| SpoolError::io("create", &tmp, e))?;
                    f.write_all(&prefix)
                        .and_then(|()| f.write_all(&buf))
                        .map_err(|e| SpoolError::io("write", &tmp, e))?;
                    f
                }
                Some(mut f) => {
                    f.write_all(&buf)
                        .map_err(|e| SpoolError::io("write", &tmp, e))?;
                    // The real body length, in place of the placeholder.
                    f.write_all_at(&prefix[..HEADER_LEN], 0)
                        .map_err(|e| SpoolError::io("write", &tmp, e))?;
                    f
                }
            };
            f.sync_data()
                .map_err(|e| SpoolError::io("fsync", &tmp, e))?;
            drop(f);
            fs::rename(&tmp, &dst).map_err(|e| SpoolError::io("rename", &dst, e))?;
            Ok(inner.dirsync.sync_grouped())
        })
        .await;
        match res {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                // The .tmp is now the .msg; the directory is not synced, so it is not
                // acknowledged.
                self.tmp_created = false;
                let _ = fs::remove_file(&dst);
                self.finished = true;
                return Err(e);
            }
            Ok(Err(e)) => {
                self.spool.note_error(&e);
                self.discard();
                return Err(e);
            }
            Err(e) => {
                self.discard();
                return Err(e.into());
            }
        }
        self.tmp_created = false;
        self.finished = true;
        self.spool
            .metrics
            .spooled(&self.id, self.envelope.received_at);
        let msg = SpooledMessage(Arc::new(MsgInner {
            id: self.id.clone(),
            envelope: self.envelope.clone(),
            path: dst,
            body_offset,
            body_len,
        }));
        if let Some(sink) = lock(&self.spool.sink).as_ref() {
            let _ = sink.send(msg.clone());
        }
        Ok(msg)
    }

    /// Discards the message: nothing is left behind.
    pub async fn abort(mut self) {
        if self.tmp_created {
            let tmp = self.spool.file(&self.id, "tmp");
            self.tmp_created = false;
            self.file = None;
            let _ = tokio::task::spawn_blocking(move || remove_if_exists(&tmp)).await;
        }
        self.finished = true;
    }

    fn discard(&mut self) {
        self.file = None;
        if self.tmp_created {
            remove_if_exists(&self.spool.file(&self.id, "tmp"));
            self.tmp_created = false;
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.finished {
            self.discard();
        }
    }
}

/// Messages up to this size are read whole by [`SpooledMessage::open_body`] (256 KiB).
pub const SMALL_BODY: u64 = 256 * 1024;

/// The bytes of a spooled message ([`SpooledMessage::open_body`]): from memory for a small
/// message, streamed from its file for a large one.
#[derive(Debug)]
pub struct BodyReader(BodyInner);

#[derive(Debug)]
enum BodyInner {
    Memory(io::Cursor<Vec<u8>>),
    File(tokio::io::Take<tokio::fs::File>),
}

impl tokio::io::AsyncRead for BodyReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match &mut self.0 {
            BodyInner::Memory(c) => std::pin::Pin::new(c).poll_read(cx, buf),
            BodyInner::File(f) => std::pin::Pin::new(f).poll_read(cx, buf),
        }
    }
}

/// A committed message: its envelope and where its bytes are. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpooledMessage(Arc<MsgInner>);

#[derive(Debug)]
struct MsgInner {
    id: QueueId,
    envelope: Envelope,
    path: PathBuf,
    body_offset: u64,
    body_len: u64,
}

impl SpooledMessage {
    /// The queue id.
    pub fn id(&self) -> &QueueId {
        &self.0.id
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.0.envelope
    }

    /// The message file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The size of the message (without the spool header), in bytes.
    pub fn body_len(&self) -> u64 {
        self.0.body_len
    }

    /// Opens the message bytes for streaming, on a blocking thread's terms.
    pub fn open_body_blocking(&self) -> io::Result<io::Take<File>> {
        let mut f = File::open(&self.0.path)?;
        f.seek(SeekFrom::Start(self.0.body_offset))?;
        Ok(f.take(self.0.body_len))
    }

    /// Opens the message bytes for streaming (positioned at the first byte, limited to the
    /// message length). A message of at most [`SMALL_BODY`] bytes is read whole in the same
    /// trip to the blocking pool and served from memory, so delivering it costs one hop, not
    /// one per read; a larger one is streamed from the file.
    pub async fn open_body(&self) -> io::Result<BodyReader> {
        let this = self.clone();
        let small = self.0.body_len <= SMALL_BODY;
        tokio::task::spawn_blocking(move || {
            let mut f = File::open(&this.0.path)?;
            if small {
                let len = usize::try_from(this.0.body_len).map_err(io::Error::other)?;
                let mut body = vec![0u8; len];
                f.read_exact_at(&mut body, this.0.body_offset)?;
                return Ok(BodyReader(BodyInner::Memory(io::Cursor::new(body))));
            }
            f.seek(SeekFrom::Start(this.0.body_offset))?;
            use tokio::io::AsyncReadExt;
            Ok(BodyReader(BodyInner::File(
                tokio::fs::File::from_std(f).take(this.0.body_len),
            )))
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Reads the whole message into memory (for small messages and tests).
    pub async fn read_body(&self) -> io::Result<Vec<u8>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            this.open_body_blocking()?.read_to_end(&mut out)?;
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }
}
