//! The durable spool: where an accepted message lives until every recipient has an outcome.
//!
//! Invariant 1 of the architecture: the `250` after `DATA` is sent only after the message and
//! its envelope are on disk and fsync'ed. [`Incoming::commit`] returns only then.
//!
//! # Layout
//!
//! ```text
//! <spool>/                  0700, owned by the relay
//!   slots/<n>               slot files (0600): each holds one message, or is free for reuse
//!   queue/<id>.state        a message's per-recipient delivery state, once there was an attempt
//!   queue/<id>.state.tmp    a state being replaced (discarded at recovery)
//!   queue/<id>.inflight     recipients handed to a route whose outcome is not yet recorded,
//!                           where the file system has no user extended attributes
//!   queue/<id>.msg          a message of a version 1 spool (read at recovery, see below)
//!   corrupt/                unreadable files, moved aside at recovery
//! ```
//!
//! # Why slots
//!
//! Committing a message must cost as little as possible beyond the one flush that makes it
//! durable. A file created per message and renamed into place costs a data flush plus a
//! directory fsync (two device cache flushes, and the directory's metadata writes), and its
//! removal costs another directory fsync that competes with the next commit. A slot is a file
//! whose name never changes on the hot path: it is created once (file create and a directory
//! fsync, shared by concurrent commits), then overwritten in place by message after message.
//! Committing a message into a slot that exists is therefore `pwrite` + one `fdatasync`: no
//! rename, no directory fsync, and, while the message fits in the blocks the slot already has,
//! no metadata to write either. The queue id lives in the slot's header, not in its name; the
//! spool keeps an in-memory index (queue id to slot), rebuilt at [`Spool::open`] by reading
//! every slot's header, and [`inspect`] finds a message the same way.
//!
//! # Slot format, version 2
//!
//! A fixed 64-byte header (magic, version, envelope and body lengths, the queue id, a CRC-32 of
//! envelope + body and a CRC-32 of the header itself), then the envelope (JSON), then the
//! message (the unstuffed, CRLF-normalised bytes of DATA/BDAT). The byte layout is in the
//! `slot` module. A slot whose header and payload checksums both hold is a committed message;
//! a slot whose header is the *free marker* (magic `PSTNFREE`) holds a finished message; any
//! other slot (no magic, a checksum that fails, shorter than its header says) holds a write
//! that never completed, so was never acknowledged, and is free.
//!
//! # Writing a message
//!
//! A message smaller than [`SpoolConfig::spill_threshold`] (default 256 KiB) stays in memory
//! until [`Incoming::commit`], which, on one blocking thread, takes a free slot (the most
//! recently freed one, whose pages are likely cached) or creates one, writes body, then
//! envelope, then header, and `fdatasync`s it. A larger message takes its slot as soon as it
//! outgrows the threshold: the free marker goes into the header, the envelope after it, and
//! the body is streamed in threshold-sized chunks while its CRC is computed; commit writes the
//! last chunk and the real header and `fdatasync`s. Memory does not grow with message size.
//! A slot created for this message (the pool was empty) is also made durable in its directory
//! by an fsync of `slots/` shared by every commit that created a slot before it started
//! (group commit). On `ENOSPC`/`EDQUOT` the slot is given back (a slot created for it is
//! deleted) and the error says [`SpoolError::is_storage_full`], so the session answers
//! `452 4.3.1`.
//!
//! The receive buffer of a committed (or spilled) message goes back to a small pool, at most
//! 8 MiB of capacity in all, and the next [`Spool::receive`] starts from it: a message is not
//! received into fresh memory, whose first touch of every page is a page fault, grown by
//! reallocation. A buffer that grew past twice the spill threshold is freed instead.
//!
//! # Threads
//!
//! Whatever waits for the device runs on tokio's blocking pool: a commit and its
//! `fdatasync`, a state file's flush, a directory fsync, the streaming of a large message.
//! Calls that only touch the page cache of a hot slot run on the calling task's thread instead:
//! the free marker of a finished message (one 64-byte `pwrite`), the in-flight note (an
//! extended attribute), and the reading of a small message for delivery (one read of a slot
//! written moments ago). Each is a few microseconds of kernel work, less than the two thread
//! wake-ups of a trip to the blocking pool; with 100 KB messages the four trips per message
//! were a sixth of the relay's CPU time (`perf`, BENCHMARKS.md).
//!
//! # Finishing a message
//!
//! When every recipient has a final outcome, [`Spool::remove`] writes the free marker over the
//! slot's header (one `pwrite`, no flush) and puts the slot back in the pool, from which the
//! next message may take it at once. The marker is made durable in the background: every
//! [`FLUSH_INTERVAL`] (100 ms) a thread `fdatasync`s the slots freed since, *except* those
//! already overwritten by a committed message (that commit's own `fdatasync` made the old
//! message unrecoverable), then deletes their state files. Under load the slots are reused
//! within milliseconds, so the background thread flushes almost nothing and a message costs one
//! flush; when the load stops, each idle slot is flushed once. The pool keeps at most
//! [`FREE_FILES`] free slots; a slot beyond that, or one that grew past four times the spill
//! threshold (a large message), is deleted instead of flushed, so the disk is not hoarded: the
//! batch's deletions are made durable by one fsync of `slots/`, not one flush per slot (while
//! a backlog drains, most freed slots are beyond the pool).
//!
//! # Crash analysis
//!
//! A crash (process or machine) at any instant:
//!
//! - *during a commit*, before its `fdatasync` returned: the slot holds a mix of the new
//!   message's bytes and the old content. The new header is written last, so a torn slot
//!   either has the old header (a free marker: free; an old message's valid header over a
//!   body now partly overwritten: the payload CRC fails, free) or the new header over an
//!   incomplete payload (the payload CRC fails: free). Either way nothing unacknowledged is
//!   delivered unless the new message reached the disk whole, which only repeats what an
//!   acknowledgement lost on the wire would (the client retries, a possible duplicate as in
//!   version 1). A slot created for the message may not exist at all: nothing was acknowledged.
//! - *after the `fdatasync`* (and the directory fsync for a new slot): the message is
//!   durable; it is acknowledged only from here.
//! - *after the upstream's `250`, before the state update*: the in-flight note (below) makes
//!   recovery log the recipients as possible duplicates, and they are attempted again
//!   (invariant 2 allows exactly this duplicate).
//! - *after [`Spool::remove`] wrote the free marker, before the background flush*: a process
//!   crash loses nothing (the marker is in the page cache, which outlives the process); a
//!   power loss or kernel crash within [`FLUSH_INTERVAL`] of the removal may lose the marker,
//!   and the message, already delivered, is delivered again after restart: a duplicate
//!   confined to a crash right after the upstream's `250`, which invariant 2 allows. The state
//!   file is deleted only after the marker is durable, so such a message comes back with the
//!   outcomes it had recorded, not as new. The same holds for a slot being deleted: until the
//!   fsync of `slots/` after its unlink, it may come back, and its state file is deleted only
//!   after that fsync.
//! - *while recovering*: recovery only reads, writes free markers (flushed) and deletes files
//!   whose content is finished, so running it again gives the same result.
//!
//! # Delivery state
//!
//! After each attempt that changes it, the [`MessageState`] of a message is replaced
//! atomically (`<id>.state.tmp`, fsync, rename, directory fsync). Before an attempt the
//! recipients handed to the route are noted in the `user.postern.inflight` extended attribute
//! of the message's slot (or in `<id>.inflight` where the file system has no user extended
//! attributes); the note is not fsync'ed: it only serves to log a *possible duplicate* when
//! the process dies between the upstream's `250` and the state update. A slot's note is
//! removed when the slot is reused.
//!
//! # Version 1 spools
//!
//! A spool written by an earlier version holds `queue/<id>.msg` files
//! (`POSTERN-SPOOL/1 <body length: 20 digits> <envelope length: 10 digits>\n`, the envelope, a
//! newline, the body). [`Spool::open`] recovers them in place: they are delivered from their
//! files like any other message and deleted (with a directory fsync) when finished; new
//! messages go to slots. A truncated one is moved to `corrupt/`. The `free/` directory of
//! version 1 is emptied and removed.

mod dirsync;
mod envelope;
mod error;
mod id;
mod inspect;
mod lock;
mod slot;
mod state;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc;

use self::dirsync::DirSync;
pub use self::envelope::{BodyType, ClientInfo, Envelope, Notify, Recipient, Ret};
pub use self::error::SpoolError;
pub use self::id::QueueId;
pub use self::inspect::{InspectedMessage, inspect, inspect_one};
pub use self::lock::SpoolLock;
use self::slot::{Decoded, HEADER_LEN, Header};
pub use self::state::{FinalOutcome, MessageState, RecipientState};

const V1_MAGIC: &[u8; 16] = b"POSTERN-SPOOL/1 ";
const V1_HEADER_LEN: usize = 48;
/// How long after running out of space [`Spool::receive`] refuses new messages outright.
const FULL_BACKOFF: Duration = Duration::from_secs(2);
/// Free slots kept for reuse by the next messages; a slot freed beyond that is deleted.
pub const FREE_FILES: usize = 256;
/// How often the free markers written by [`Spool::remove`] are made durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A freed slot larger than this many spill thresholds is deleted, not kept.
const KEEP_SLOT_THRESHOLDS: u64 = 4;
/// The extended attribute holding a message's in-flight note.
const INFLIGHT_XATTR: &str = "user.postern.inflight";
/// Receive buffers kept for the next messages, at most this many bytes of capacity in all
/// (see "Writing a message" in the module documentation).
const POOLED_BUFFER_BYTES: usize = 8 * 1024 * 1024;

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
    slots_dir: PathBuf,
    spill_threshold: usize,
    /// Group commit of `queue/` (state files, version 1 removals).
    dirsync: Arc<DirSync>,
    /// Group commit of `slots/` (new slots).
    slot_dirsync: DirSync,
    sink: Mutex<Option<mpsc::UnboundedSender<SpooledMessage>>>,
    full_at: Mutex<Option<Instant>>,
    metrics: Arc<crate::metrics::Metrics>,
    slots: Arc<Mutex<Slots>>,
    /// Where each committed message is.
    index: Mutex<HashMap<QueueId, Loc>>,
    flusher: Flusher,
    /// The file system refused user extended attributes: in-flight notes are files.
    no_xattr: std::sync::atomic::AtomicBool,
    /// Receive buffers of finished messages, for the next ones.
    buffers: Mutex<BufferPool>,
}

/// Emptied receive buffers, reused so that a message is not received into fresh memory
/// (whose first touch of each page is a page fault) grown by reallocation.
#[derive(Debug, Default)]
struct BufferPool {
    free: Vec<Vec<u8>>,
    /// Capacity of the buffers in `free`, in bytes.
    bytes: usize,
}

/// The slot pool.
#[derive(Debug, Default)]
struct Slots {
    /// Free slots, the most recently freed last.
    free: Vec<FreeSlot>,
    /// The highest slot number in use or ever created by this process.
    next: u64,
    /// Commits per slot, so the background flush can skip a slot overwritten since it was
    /// freed.
    commits: HashMap<u64, u64>,
}

#[derive(Clone, Copy, Debug)]
struct FreeSlot {
    n: u64,
    /// Whether the slot's directory entry is known durable.
    linked: bool,
}

/// Where a committed message is.
#[derive(Clone, Debug)]
enum Loc {
    Slot(u64),
    /// A version 1 `<id>.msg` file.
    Legacy(PathBuf),
}

/// A slot taken for one message.
#[derive(Debug)]
struct Taken {
    n: u64,
    file: File,
    linked: bool,
    created: bool,
}

impl Inner {
    fn file(&self, id: &QueueId, ext: &str) -> PathBuf {
        self.queue_dir.join(format!("{id}.{ext}"))
    }

    fn slot_path(&self, n: u64) -> PathBuf {
        self.slots_dir.join(n.to_string())
    }

    /// The file holding the message `id`, if it is in the spool.
    fn msg_path(&self, id: &QueueId) -> Option<PathBuf> {
        match lock(&self.index).get(id)? {
            Loc::Slot(n) => Some(self.slot_path(*n)),
            Loc::Legacy(p) => Some(p.clone()),
        }
    }

    /// An empty receive buffer: a pooled one if there is one.
    fn take_buffer(&self) -> Vec<u8> {
        let mut pool = lock(&self.buffers);
        let buf = pool.free.pop().unwrap_or_default();
        pool.bytes -= buf.capacity();
        buf
    }

    /// Keeps an emptied receive buffer for the next message, within [`POOLED_BUFFER_BYTES`].
    /// A buffer that grew past twice the spill threshold (a large message) is freed.
    fn give_buffer(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap == 0 || cap > self.spill_threshold.saturating_mul(2) {
            return;
        }
        buf.clear();
        let mut pool = lock(&self.buffers);
        if pool.bytes + cap <= POOLED_BUFFER_BYTES {
            pool.bytes += cap;
            pool.free.push(buf);
        }
    }

    /// A slot to write a message into: the most recently freed one, else a new one. Blocking.
    fn take_slot(&self) -> Result<Taken, SpoolError> {
        loop {
            let Some(FreeSlot { n, linked }) = lock(&self.slots).free.pop() else {
                break;
            };
            let path = self.slot_path(n);
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => {
                    if self.use_xattr() {
                        // The note of the message the slot held.
                        let _ = rustix::fs::fremovexattr(&file, INFLIGHT_XATTR);
                    }
                    return Ok(Taken {
                        n,
                        file,
                        linked,
                        created: false,
                    });
                }
                // A damaged free slot is not worth an error: forget it, take another.
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot reuse a free spool slot");
                    lock(&self.slots).commits.remove(&n);
                }
            }
        }
        let n = {
            let mut s = lock(&self.slots);
            s.next += 1;
            s.next
        };
        let path = self.slot_path(n);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SpoolError::io("create", &path, e))?;
        Ok(Taken {
            n,
            file,
            linked: false,
            created: true,
        })
    }

    /// Gives back a slot whose write did not become a committed message. Blocking.
    fn abandon(&self, t: Taken) {
        if t.created {
            // Never a committed message, and its name was never made durable.
            drop(t.file);
            remove_if_exists(&self.slot_path(t.n));
            return;
        }
        // The header may be the new one over a partial payload: make it say free.
        if let Err(e) = t.file.write_all_at(&slot::free_marker(), 0) {
            tracing::warn!(path = %self.slot_path(t.n).display(), error = %e, "cannot mark a spool slot free");
        }
        self.release(t.n, &t.file, t.linked, None);
    }

    /// Puts a slot whose header is the free marker back in the pool (or, when it is large or
    /// the pool is full, has it deleted), and has the marker made durable in the background,
    /// then `state` deleted. Blocking.
    fn release(&self, n: u64, file: &File, linked: bool, state: Option<PathBuf>) {
        let limit = (self.spill_threshold as u64).saturating_mul(KEEP_SLOT_THRESHOLDS);
        let big = file.metadata().map_or(true, |m| m.len() > limit);
        let (generation, keep) = {
            let mut s = lock(&self.slots);
            let generation = s.commits.get(&n).copied().unwrap_or(0);
            let keep = !big && s.free.len() < FREE_FILES;
            if keep {
                s.free.push(FreeSlot { n, linked });
            }
            (generation, keep)
        };
        self.flusher.push(Pending {
            path: self.slot_path(n),
            n,
            generation,
            delete: !keep,
            state,
        });
    }

    /// Marks the slot of a finished message free. Blocking.
    fn retire_slot(&self, n: u64, state: PathBuf) -> Result<(), SpoolError> {
        let path = self.slot_path(n);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| SpoolError::io("open", &path, e))?;
        file.write_all_at(&slot::free_marker(), 0)
            .map_err(|e| SpoolError::io("write", &path, e))?;
        self.release(n, &file, true, Some(state));
        Ok(())
    }

    fn use_xattr(&self) -> bool {
        !self.no_xattr.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the in-flight note of `id`. Blocking.
    fn note_in_flight(&self, id: &QueueId, body: &[u8]) -> io::Result<()> {
        if self.use_xattr()
            && let Some(msg) = self.msg_path(id)
        {
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

    /// Clears the in-flight note of `id` (the message stays). Blocking.
    fn clear_in_flight(&self, id: &QueueId) {
        if self.use_xattr() {
            if let Some(msg) = self.msg_path(id) {
                let _ = rustix::fs::removexattr(msg, INFLIGHT_XATTR);
            }
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

/// A freed slot whose free marker is to be made durable.
#[derive(Debug)]
struct Pending {
    path: PathBuf,
    n: u64,
    /// The slot's commit count when it was freed.
    generation: u64,
    /// Delete the slot once the marker is durable.
    delete: bool,
    /// The message's state file, deleted once the marker is durable.
    state: Option<PathBuf>,
}

/// The background thread that makes free markers durable (see the module doc).
#[derive(Debug)]
struct Flusher {
    shared: Arc<FlushShared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct FlushShared {
    queue: Mutex<FlushQueue>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct FlushQueue {
    pending: Vec<Pending>,
    stop: bool,
}

impl Flusher {
    fn start(slots: Arc<Mutex<Slots>>) -> Result<Self, SpoolError> {
        let shared = Arc::new(FlushShared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("spool-flush".into())
            .spawn(move || flush_loop(&s, &slots))
            .map_err(|e| SpoolError::io("spawn", "spool-flush", e))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn push(&self, p: Pending) {
        let mut q = lock(&self.shared.queue);
        q.pending.push(p);
        if q.pending.len() == 1 {
            self.shared.wake.notify_all();
        }
    }
}

impl Drop for Flusher {
    /// Flushes what is pending and stops the thread.
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn flush_loop(shared: &FlushShared, slots: &Mutex<Slots>) {
    loop {
        let (batch, stop) = {
            let mut q = lock(&shared.queue);
            while q.pending.is_empty() && !q.stop {
                q = shared
                    .wake
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            // Gather what else is freed for one interval, so one pass covers a batch.
            let deadline = Instant::now() + FLUSH_INTERVAL;
            while !q.stop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                q = shared
                    .wake
                    .wait_timeout(q, left)
                    .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            }
            (std::mem::take(&mut q.pending), q.stop)
        };
        flush_batch(batch, slots);
        if stop {
            return;
        }
    }
}

/// Makes a batch of freed slots durable, then deletes what waited for that (state files). A
/// kept slot's free marker is flushed with `fdatasync`, unless a commit has overwritten the
/// slot since; a slot to delete is unlinked instead, and one fsync of its directory makes all
/// the batch's unlinks durable at once (while a backlog drains, that is most of the batch).
fn flush_batch(batch: Vec<Pending>, slots: &Mutex<Slots>) {
    // Per slot: whether it is done (flushed, reused, deleted or gone), and whether this pass
    // unlinked it (so it waits for the directory fsync).
    let mut done = Vec::with_capacity(batch.len());
    // Every slot is in `slots/`: the directory of the first unlink is the one to flush.
    let mut unlinked_in: Option<PathBuf> = None;
    for p in &batch {
        let state = if p.delete {
            match fs::remove_file(&p.path) {
                Ok(()) => {
                    if unlinked_in.is_none() {
                        unlinked_in = p.path.parent().map(Path::to_owned);
                    }
                    (true, true)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => (true, false),
                Err(e) => {
                    tracing::warn!(path = %p.path.display(), error = %e, "cannot delete a free spool slot");
                    (false, false)
                }
            }
        } else {
            // A slot overwritten by a committed message since: that commit's fdatasync
            // covered it.
            let ok = lock(slots).commits.get(&p.n).copied().unwrap_or(0) != p.generation
                || match File::open(&p.path).and_then(|f| f.sync_data()) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                    Err(e) => {
                        tracing::warn!(path = %p.path.display(), error = %e, "cannot flush a free spool slot; it may be delivered again after a power loss");
                        false
                    }
                };
            (ok, false)
        };
        done.push(state);
    }
    let unlinks_durable = unlinked_in.is_none_or(|dir| {
        File::open(&dir)
            .and_then(|f| f.sync_all())
            .inspect_err(|e| {
                tracing::warn!(path = %dir.display(), error = %e, "cannot flush the deletion of free spool slots; they may be delivered again after a power loss");
            })
            .is_ok()
    });
    for (p, (ok, unlinked)) in batch.into_iter().zip(done) {
        if !ok {
            if p.delete {
                // Not deleted: keep the file (free in memory, a duplicate at worst on disk).
                lock(slots).free.push(FreeSlot {
                    n: p.n,
                    linked: true,
                });
            }
            continue;
        }
        if unlinked && !unlinks_durable {
            // Gone, but not durably: the message may come back, so its state file stays.
            continue;
        }
        if p.delete {
            lock(slots).commits.remove(&p.n);
        }
        if let Some(s) = &p.state {
            remove_if_exists(s);
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
    /// Writes that never became a committed message: temporary state files deleted, and slots
    /// torn by a crash (or never finished) that are free again.
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
    /// Torn slots become free, temporary files are deleted, unreadable messages are moved to
    /// `corrupt/` (and logged), states without a message are deleted, and finished messages
    /// whose slots were not yet freed are freed.
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
            buf: self.inner.take_buffer(),
            spill: None,
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

    /// Whether the message `id` is in the spool (committed and not yet removed).
    pub async fn contains(&self, id: &QueueId) -> bool {
        lock(&self.inner.index).contains_key(id)
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
        let body = serde_json::to_vec(rcpts).unwrap_or_default();
        // An extended attribute or a small unflushed file: page cache only, so on this thread
        // (see "Threads" in the module documentation).
        if let Err(e) = self.inner.note_in_flight(id, &body) {
            tracing::warn!(queue_id = %id, error = %e, "cannot note in-flight recipients");
        }
    }

    /// Removes a finished message: its slot is marked free at once (and reused), the mark made
    /// durable within [`FLUSH_INTERVAL`], its state file deleted after that.
    pub async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let loc = lock(&self.inner.index).remove(id);
        let res = if let Some(Loc::Slot(_)) = loc {
            // The free marker is a 64-byte write without a flush: on this thread (see
            // "Threads" in the module documentation).
            remove_blocking(&self.inner, id, loc)
        } else {
            // A version 1 file's removal waits for a directory fsync.
            let inner = Arc::clone(&self.inner);
            let id2 = id.clone();
            tokio::task::spawn_blocking(move || remove_blocking(&inner, &id2, loc)).await?
        };
        res?;
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
        let pooled = std::mem::replace(&mut incoming.buf, body);
        self.inner.give_buffer(pooled);
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

/// What one slot file holds.
#[derive(Debug)]
pub(crate) enum SlotScan {
    /// A committed message.
    Message(SpooledMessage),
    /// The free marker.
    Free,
    /// A write that never completed (or was torn): free as well.
    Invalid(&'static str),
    /// Whole and checksummed, but its envelope does not parse.
    Corrupt(String),
}

/// Reads slot `path`; with `verify`, checks the payload checksum too (reading the whole
/// message).
pub(crate) fn scan_slot(path: &Path, verify: bool) -> io::Result<SlotScan> {
    let f = File::open(path)?;
    let h = match slot::read_header(&f)? {
        Decoded::Free => return Ok(SlotScan::Free),
        Decoded::Invalid(r) => return Ok(SlotScan::Invalid(r)),
        Decoded::Message(h) => h,
    };
    let json = match slot::read_payload(&f, &h, verify)? {
        Ok(j) => j,
        Err(r) => return Ok(SlotScan::Invalid(r)),
    };
    Ok(match serde_json::from_slice::<Envelope>(&json) {
        Ok(envelope) => SlotScan::Message(SpooledMessage(Arc::new(MsgInner {
            body_offset: h.body_offset(),
            body_len: h.body_len,
            id: h.id,
            envelope,
            path: path.to_owned(),
            in_slot: true,
        }))),
        Err(e) => SlotScan::Corrupt(format!("envelope: {e}")),
    })
}

fn open_blocking(cfg: &SpoolConfig) -> Result<(Spool, Recovered), SpoolError> {
    let root = cfg.path.clone();
    make_dir_0700(&root)?;
    let queue_dir = root.join("queue");
    let slots_dir = root.join("slots");
    let corrupt_dir = root.join("corrupt");
    make_dir_0700(&queue_dir)?;
    make_dir_0700(&slots_dir)?;
    make_dir_0700(&corrupt_dir)?;
    // Version 1 kept delivered files in free/ for reuse within one process only.
    let v1_free = root.join("free");
    if let Ok(entries) = fs::read_dir(&v1_free) {
        for e in entries.flatten() {
            remove_if_exists(&e.path());
        }
        let _ = fs::remove_dir(&v1_free);
    }

    let mut recovered = Recovered::default();
    let quarantine = |path: &Path, name: String, reason: &str, recovered: &mut Recovered| {
        let dst = corrupt_dir.join(name);
        tracing::error!(path = %path.display(), reason, "corrupt spool file moved to {}", dst.display());
        if fs::rename(path, &dst).is_ok() {
            recovered.quarantined.push(dst);
        }
    };
    let mut changed = false;

    // Slots: committed messages, and the free pool.
    let mut pool = Slots::default();
    let mut msgs: Vec<(SpooledMessage, Loc)> = Vec::new();
    let mut slot_of: HashMap<QueueId, u64> = HashMap::new();
    let entries =
        fs::read_dir(&slots_dir).map_err(|e| SpoolError::io("read directory", &slots_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("read directory", &slots_dir, e))?;
        let path = entry.path();
        let Some(n) = slot::parse_name(&path) else {
            tracing::warn!(path = %path.display(), "ignoring unknown file in the spool");
            continue;
        };
        pool.next = pool.next.max(n);
        let free = FreeSlot { n, linked: true };
        match scan_slot(&path, true) {
            Ok(SlotScan::Free) => pool.free.push(free),
            Ok(SlotScan::Invalid(reason)) => {
                tracing::info!(path = %path.display(), reason, "spool slot without a committed message (a write cut short, never acknowledged): free");
                recovered.discarded_tmp += 1;
                pool.free.push(free);
            }
            Ok(SlotScan::Message(m)) => {
                if let Some(other) = slot_of.get(m.id()) {
                    // Cannot happen short of a bug; keep one copy.
                    tracing::warn!(queue_id = %m.id(), slot = n, other, "message found in two slots; keeping one");
                    mark_free_durably(&path);
                    pool.free.push(free);
                    continue;
                }
                slot_of.insert(m.id().clone(), n);
                msgs.push((m, Loc::Slot(n)));
            }
            Ok(SlotScan::Corrupt(reason)) => {
                quarantine(&path, format!("slot-{n}"), &reason, &mut recovered);
                changed = true;
            }
            Err(e) => {
                quarantine(&path, format!("slot-{n}"), &e.to_string(), &mut recovered);
                changed = true;
            }
        }
    }

    // queue/: states, notes, version 1 messages, temporary files.
    let mut states: HashMap<QueueId, PathBuf> = HashMap::new();
    let mut inflight: HashMap<QueueId, PathBuf> = HashMap::new();
    let mut v1: Vec<(QueueId, PathBuf)> = Vec::new();
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
            "msg" => v1.push((id, path)),
            "state" => {
                states.insert(id, path);
            }
            "inflight" => {
                inflight.insert(id, path);
            }
            _ => tracing::warn!(path = %path.display(), "ignoring unknown file in the spool"),
        }
    }
    for (id, path) in v1 {
        if slot_of.contains_key(&id) {
            remove_if_exists(&path);
            changed = true;
            continue;
        }
        match read_message_v1(&id, &path) {
            Ok(m) => {
                tracing::info!(queue_id = %id, "recovering a version 1 spool file");
                msgs.push((m, Loc::Legacy(path)));
            }
            Err(e) => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                quarantine(&path, name.into_owned(), &e.to_string(), &mut recovered);
                changed = true;
            }
        }
    }
    msgs.sort_by(|a, b| a.0.id().cmp(b.0.id()));

    let mut index = HashMap::new();
    for (message, loc) in msgs {
        let id = message.id().clone();
        let path = message.path().to_owned();
        let n = message.envelope().recipients.len();
        let mut state = match states.remove(&id) {
            None => MessageState::new(n),
            Some(sp) => match fs::read(&sp)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<MessageState>(&b).map_err(|e| e.to_string()))
            {
                Ok(s) if s.recipients.len() == n => s,
                Ok(_) => {
                    let name = sp.file_name().unwrap_or_default().to_string_lossy();
                    quarantine(
                        &sp,
                        name.into_owned(),
                        "recipient count differs from the envelope",
                        &mut recovered,
                    );
                    MessageState::new(n)
                }
                Err(e) => {
                    let name = sp.file_name().unwrap_or_default().to_string_lossy();
                    quarantine(&sp, name.into_owned(), &e, &mut recovered);
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
            match &loc {
                Loc::Slot(n) => {
                    mark_free_durably(&path);
                    pool.free.push(FreeSlot {
                        n: *n,
                        linked: true,
                    });
                }
                Loc::Legacy(p) => remove_if_exists(p),
            }
            remove_if_exists(&queue_dir.join(format!("{id}.state")));
            changed = true;
            continue;
        }
        // Normalise: a recovered state always has a version we understand.
        state.version = state::STATE_VERSION;
        index.insert(id, loc);
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
    // Keep the lowest-numbered FREE_FILES free slots (the pool hands out its last entry
    // first) and delete the rest: they hold no committed message.
    pool.free.sort_by_key(|f| f.n);
    if pool.free.len() > FREE_FILES {
        let surplus = pool.free.split_off(FREE_FILES);
        for f in surplus {
            remove_if_exists(&slots_dir.join(f.n.to_string()));
        }
    }

    let dirsync = Arc::new(DirSync::new(queue_dir.clone())?);
    if changed {
        dirsync.sync_blocking()?;
    }
    // Slots found here may have been created by a process that died before their directory
    // fsync: from now on they count as linked, so make it so.
    let slot_dirsync = DirSync::new(slots_dir.clone())?;
    slot_dirsync.sync_blocking()?;
    let slots = Arc::new(Mutex::new(pool));
    let flusher = Flusher::start(Arc::clone(&slots))?;
    let spool = Spool {
        inner: Arc::new(Inner {
            root,
            queue_dir,
            slots_dir,
            spill_threshold: cfg.spill_threshold.max(1),
            dirsync,
            slot_dirsync,
            sink: Mutex::new(None),
            full_at: Mutex::new(None),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            slots,
            index: Mutex::new(index),
            flusher,
            no_xattr: std::sync::atomic::AtomicBool::new(false),
            buffers: Mutex::new(BufferPool::default()),
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

/// Writes the free marker over a slot's header and flushes it (recovery only).
fn mark_free_durably(path: &Path) {
    let r = OpenOptions::new().write(true).open(path).and_then(|f| {
        f.write_all_at(&slot::free_marker(), 0)?;
        f.sync_data()
    });
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "cannot mark a spool slot free");
    }
}

/// The in-flight note kept in a message file's extended attribute, if any.
pub(crate) fn read_xattr_note(path: &Path) -> Option<Vec<u8>> {
    // A note lists recipient indexes: a few bytes each; 64 KiB is far more than any.
    let mut buf = vec![0u8; 64 * 1024];
    let n = rustix::fs::getxattr(path, INFLIGHT_XATTR, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Reads a version 1 `<id>.msg` file.
pub(crate) fn read_message_v1(id: &QueueId, path: &Path) -> Result<SpooledMessage, SpoolError> {
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut f = File::open(path).map_err(|e| SpoolError::io("open", path, e))?;
    let size = f
        .metadata()
        .map_err(|e| SpoolError::io("stat", path, e))?
        .len();
    let mut h = [0u8; V1_HEADER_LEN];
    f.read_exact(&mut h)
        .map_err(|_| corrupt("shorter than its header".into()))?;
    if &h[..16] != V1_MAGIC || h[36] != b' ' || h[47] != b'\n' {
        return Err(corrupt("not a version 1 spool file".into()));
    }
    let num = |b: &[u8]| -> Option<u64> { std::str::from_utf8(b).ok()?.parse().ok() };
    let (Some(body_len), Some(json_len)) = (num(&h[16..36]), num(&h[37..47])) else {
        return Err(corrupt("bad lengths in header".into()));
    };
    let body_offset = V1_HEADER_LEN as u64 + json_len + 1;
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
        in_slot: false,
    })))
}

/// A message that outgrew the spill threshold: its slot and how far it is written.
#[derive(Debug)]
struct Spill {
    slot: Taken,
    envelope_len: u32,
    /// CRC of what is written after the header so far.
    crc: crc32fast::Hasher,
    /// Where the next byte goes.
    end: u64,
}

impl Spill {
    fn append(&mut self, inner: &Inner, bytes: &[u8]) -> Result<(), SpoolError> {
        self.slot
            .file
            .write_all_at(bytes, self.end)
            .map_err(|e| SpoolError::io("write", inner.slot_path(self.slot.n), e))?;
        self.crc.update(bytes);
        self.end += bytes.len() as u64;
        Ok(())
    }
}

/// One message being received. Dropping it without [`Incoming::commit`] is the same as
/// [`Incoming::abort`]: nothing is left behind.
#[derive(Debug)]
pub struct Incoming {
    spool: Arc<Inner>,
    id: QueueId,
    envelope: Envelope,
    buf: Vec<u8>,
    spill: Option<Spill>,
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
    /// spill threshold the bytes go to the message's slot.
    pub async fn write(&mut self, body: &[u8]) -> Result<(), SpoolError> {
        self.write_with(|buf| buf.extend_from_slice(body)).await.1
    }

    /// Like [`Incoming::write`], but `fill` appends the message bytes to the buffer itself,
    /// so a decoder can write into it directly, saving a copy. `fill` must only append. Its
    /// result comes back even when storing the bytes failed.
    pub async fn write_with<R>(
        &mut self,
        fill: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> (R, Result<(), SpoolError>) {
        let before = self.buf.len();
        let r = fill(&mut self.buf);
        let added = self.buf.len().saturating_sub(before);
        self.body_len += added as u64;
        if added > 0 && (self.spill.is_some() || self.buf.len() >= self.spool.spill_threshold) {
            return (r, self.flush().await);
        }
        (r, Ok(()))
    }

    fn envelope_json(&self) -> Result<Vec<u8>, SpoolError> {
        let corrupt = |reason: String| SpoolError::Corrupt {
            path: self.spool.slots_dir.clone(),
            reason,
        };
        let json = serde_json::to_vec(&self.envelope).map_err(|e| corrupt(e.to_string()))?;
        u32::try_from(json.len()).map_err(|_| corrupt("envelope too large".into()))?;
        Ok(json)
    }

    async fn flush(&mut self) -> Result<(), SpoolError> {
        if self.buf.len() < self.spool.spill_threshold && self.spill.is_some() {
            return Ok(());
        }
        let json = if self.spill.is_none() {
            Some(self.envelope_json()?)
        } else {
            None
        };
        let spill = self.spill.take();
        let mut buf = std::mem::take(&mut self.buf);
        let inner = Arc::clone(&self.spool);
        let res = tokio::task::spawn_blocking(move || -> Result<(Spill, Vec<u8>), SpoolError> {
            let mut sp = match spill {
                Some(s) => s,
                None => {
                    let json = json.unwrap_or_default();
                    let slot = inner.take_slot()?;
                    let mut sp = Spill {
                        slot,
                        envelope_len: json.len() as u32,
                        crc: crc32fast::Hasher::new(),
                        end: HEADER_LEN as u64,
                    };
                    // Until commit writes the real header, the slot says free.
                    let r = sp
                        .slot
                        .file
                        .write_all_at(&slot::free_marker(), 0)
                        .map_err(|e| SpoolError::io("write", inner.slot_path(sp.slot.n), e))
                        .and_then(|()| sp.append(&inner, &json));
                    if let Err(e) = r {
                        inner.abandon(sp.slot);
                        return Err(e);
                    }
                    sp
                }
            };
            if let Err(e) = sp.append(&inner, &buf) {
                inner.abandon(sp.slot);
                return Err(e);
            }
            buf.clear();
            Ok((sp, buf))
        })
        .await;
        match res {
            Ok(Ok((sp, buf))) => {
                self.spill = Some(sp);
                self.buf = buf;
                Ok(())
            }
            Ok(Err(e)) => {
                self.spool.note_error(&e);
                Err(e)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the message durable (written to its slot and fdatasync'ed) and hands it to the
    /// queue. Only after `Ok` may the session answer `250`.
    pub async fn commit(self) -> Result<QueueId, SpoolError> {
        let msg = self.commit_inner().await?;
        Ok(msg.id().clone())
    }

    async fn commit_inner(mut self) -> Result<SpooledMessage, SpoolError> {
        let body_len = self.body_len;
        let json = self.envelope_json()?;
        let spill = self.spill.take();
        let buf = std::mem::take(&mut self.buf);
        let inner = Arc::clone(&self.spool);
        let id = self.id.clone();
        // From here the blocking task owns the slot, and gives it back on failure.
        self.finished = true;
        let res = tokio::task::spawn_blocking(move || {
            let r = commit_blocking(&inner, id, spill, &json, &buf, body_len);
            inner.give_buffer(buf);
            r
        })
        .await;
        let (n, body_offset) = match res {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.spool.note_error(&e);
                return Err(e);
            }
            Err(e) => return Err(e.into()),
        };
        lock(&self.spool.index).insert(self.id.clone(), Loc::Slot(n));
        self.spool
            .metrics
            .spooled(&self.id, self.envelope.received_at);
        let msg = SpooledMessage(Arc::new(MsgInner {
            id: self.id.clone(),
            envelope: self.envelope.clone(),
            path: self.spool.slot_path(n),
            body_offset,
            body_len,
            in_slot: true,
        }));
        if let Some(sink) = lock(&self.spool.sink).as_ref() {
            let _ = sink.send(msg.clone());
        }
        Ok(msg)
    }

    /// Discards the message: nothing is left behind.
    pub async fn abort(mut self) {
        if let Some(sp) = self.spill.take() {
            let inner = Arc::clone(&self.spool);
            let _ = tokio::task::spawn_blocking(move || inner.abandon(sp.slot)).await;
        }
        self.finished = true;
    }

    fn discard(&mut self) {
        if let Some(sp) = self.spill.take() {
            self.spool.abandon(sp.slot);
        }
    }
}

/// Writes a message into a slot and makes it durable: the body, then the envelope, then the
/// header (so the header is valid only over a whole payload), one `fdatasync`, and for a new
/// slot the grouped fsync of `slots/`. Returns the slot and the body offset. Blocking.
fn commit_blocking(
    inner: &Inner,
    id: QueueId,
    spill: Option<Spill>,
    json: &[u8],
    buf: &[u8],
    body_len: u64,
) -> Result<(u64, u64), SpoolError> {
    let (slot, envelope_len, payload_crc) = match spill {
        None => {
            let slot = inner.take_slot()?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(json);
            crc.update(buf);
            let r = slot
                .file
                .write_all_at(buf, (HEADER_LEN + json.len()) as u64)
                .and_then(|()| slot.file.write_all_at(json, HEADER_LEN as u64));
            if let Err(e) = r {
                let path = inner.slot_path(slot.n);
                inner.abandon(slot);
                return Err(SpoolError::io("write", path, e));
            }
            (slot, json.len() as u32, crc.finalize())
        }
        Some(mut sp) => {
            if let Err(e) = sp.append(inner, buf) {
                inner.abandon(sp.slot);
                return Err(e);
            }
            (sp.slot, sp.envelope_len, sp.crc.finalize())
        }
    };
    let header = Header {
        id,
        envelope_len,
        body_len,
        payload_crc,
    };
    let body_offset = header.body_offset();
    let path = inner.slot_path(slot.n);
    if let Err(e) = slot.file.write_all_at(&header.encode(), 0) {
        inner.abandon(slot);
        return Err(SpoolError::io("write", path, e));
    }
    if let Err(e) = slot.file.sync_data() {
        inner.abandon(slot);
        return Err(SpoolError::io("fsync", path, e));
    }
    if !slot.linked
        && let Err(e) = inner.slot_dirsync.sync_grouped()
    {
        inner.abandon(slot);
        return Err(e);
    }
    *lock(&inner.slots).commits.entry(slot.n).or_default() += 1;
    Ok((slot.n, body_offset))
}

/// [`Spool::remove`] of the message `id` at `loc` (already taken out of the index, and put back
/// if this fails). Blocking.
fn remove_blocking(inner: &Inner, id: &QueueId, loc: Option<Loc>) -> Result<(), SpoolError> {
    let state = inner.file(id, "state");
    if !inner.use_xattr() {
        remove_if_exists(&inner.file(id, "inflight"));
    }
    match &loc {
        Some(Loc::Slot(n)) => inner.retire_slot(*n, state),
        Some(Loc::Legacy(path)) => {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("remove", path, e)),
            }
            remove_if_exists(&state);
            // On this thread: one hop to the blocking pool per message, not two.
            inner.dirsync.sync_grouped()
        }
        None => {
            remove_if_exists(&state);
            Ok(())
        }
    }
    .inspect_err(|_| {
        if let Some(loc) = loc {
            lock(&inner.index).insert(id.clone(), loc);
        }
    })
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

impl BodyReader {
    /// The bytes not read yet, when the whole message is in memory (a message of at most
    /// [`SMALL_BODY`] bytes): a caller can then use them in place instead of copying them
    /// out through [`tokio::io::AsyncRead`].
    pub fn remaining_in_memory(&self) -> Option<&[u8]> {
        match &self.0 {
            BodyInner::Memory(c) => {
                let start = usize::try_from(c.position()).unwrap_or(usize::MAX);
                Some(c.get_ref().get(start..).unwrap_or_default())
            }
            BodyInner::File(_) => None,
        }
    }
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
    /// In a slot (checked still to hold this message when opened), not a version 1 file.
    in_slot: bool,
}

impl MsgInner {
    /// Opens the message's file, checking that a slot still holds this message (a removed
    /// message's slot may hold the next one).
    fn open(&self) -> io::Result<File> {
        let f = File::open(&self.path)?;
        if self.in_slot {
            match slot::read_header(&f)? {
                Decoded::Message(h) if h.id == self.id && h.body_len == self.body_len => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("message {} is no longer in the spool", self.id),
                    ));
                }
            }
        }
        Ok(f)
    }
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

    /// The file holding the message: its slot (or a version 1 `<id>.msg` file).
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The size of the message (without the spool header), in bytes.
    pub fn body_len(&self) -> u64 {
        self.0.body_len
    }

    /// Opens the message bytes for streaming, on a blocking thread's terms.
    pub fn open_body_blocking(&self) -> io::Result<io::Take<File>> {
        let mut f = self.0.open()?;
        f.seek(SeekFrom::Start(self.0.body_offset))?;
        Ok(f.take(self.0.body_len))
    }

    /// Opens the message bytes for streaming (positioned at the first byte, limited to the
    /// message length). A message of at most [`SMALL_BODY`] bytes is read whole, on the
    /// calling thread, and served from memory; a larger one is streamed from the file through
    /// the blocking pool.
    pub async fn open_body(&self) -> io::Result<BodyReader> {
        if self.0.body_len <= SMALL_BODY {
            // A slot just written or recently read is in the page cache: read on this thread
            // (see "Threads" in the module documentation).
            let len = usize::try_from(self.0.body_len).map_err(io::Error::other)?;
            let mut body = Vec::with_capacity(len);
            self.open_body_blocking()?.read_to_end(&mut body)?;
            if body.len() != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("message {} is shorter than its header says", self.0.id),
                ));
            }
            return Ok(BodyReader(BodyInner::Memory(io::Cursor::new(body))));
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = this.0.open()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a slot whose header and payload checksums hold over `json` and `body`.
    fn write_slot(path: &Path, id: &QueueId, json: &[u8], body: &[u8]) {
        let mut crc = crc32fast::Hasher::new();
        crc.update(json);
        crc.update(body);
        let h = Header {
            id: id.clone(),
            envelope_len: json.len() as u32,
            body_len: body.len() as u64,
            payload_crc: crc.finalize(),
        };
        let mut out = h.encode().to_vec();
        out.extend_from_slice(json);
        out.extend_from_slice(body);
        fs::write(path, out).unwrap();
    }

    #[test]
    fn a_checksummed_slot_with_an_unreadable_envelope_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig::new(dir.path());
        fs::create_dir_all(dir.path().join("slots")).unwrap();
        let id = QueueId::generate();
        write_slot(&dir.path().join("slots/5"), &id, b"{not json", b"body\r\n");
        let (spool, rec) = open_blocking(&cfg).unwrap();
        assert!(rec.messages.is_empty());
        assert_eq!(rec.quarantined, vec![dir.path().join("corrupt/slot-5")]);
        // Numbering goes on above it.
        assert_eq!(spool.inner.take_slot().unwrap().n, 6);
    }

    fn test_envelope() -> Envelope {
        Envelope::new(
            Some("scanner@contoso.com".into()),
            vec![Recipient::new("user@contoso.com")],
            ClientInfo::new("127.0.0.1:40000".parse().unwrap(), "scanner", "default"),
        )
    }

    #[tokio::test]
    async fn receive_buffers_are_reused_empty_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SpoolConfig::new(dir.path());
        cfg.spill_threshold = 64 * 1024;
        let (spool, _) = Spool::open(&cfg).await.unwrap();
        let pooled = |spool: &Spool| {
            let p = lock(&spool.inner.buffers);
            (p.free.len(), p.bytes)
        };
        // A committed message gives its buffer back, and the next message starts from it
        // empty: its body is its own bytes only.
        let mut a = spool.receive(test_envelope()).await.unwrap();
        let (n, r) = a
            .write_with(|buf| {
                buf.extend_from_slice(&[b'a'; 40_000]);
                7
            })
            .await;
        assert_eq!((n, r.is_ok(), a.len()), (7, true, 40_000));
        let a = a.commit_inner().await.unwrap();
        let (count, bytes) = pooled(&spool);
        assert_eq!(count, 1);
        assert!(bytes >= 40_000);
        let mut b = spool.receive(test_envelope()).await.unwrap();
        assert_eq!(pooled(&spool), (0, 0));
        assert!(b.buf.capacity() >= 40_000 && b.buf.is_empty());
        b.write(b"short\r\n").await.unwrap();
        let b = b.commit_inner().await.unwrap();
        assert_eq!(b.read_body().await.unwrap(), b"short\r\n");
        assert_eq!(a.read_body().await.unwrap(), vec![b'a'; 40_000]);
        // A buffer that grew past twice the spill threshold is freed, not kept.
        spool.inner.give_buffer(Vec::with_capacity(3 * 64 * 1024));
        assert_eq!(pooled(&spool).0, 1);
        // And the pool holds at most POOLED_BUFFER_BYTES.
        for _ in 0..(POOLED_BUFFER_BYTES / (100 * 1024) + 10) {
            spool.inner.give_buffer(Vec::with_capacity(100 * 1024));
        }
        assert!(pooled(&spool).1 <= POOLED_BUFFER_BYTES);
    }

    #[test]
    fn background_flush_skips_reused_slots_and_deletes_after_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Mutex::new(Slots::default());
        lock(&slots).commits.insert(1, 2);
        let state = dir.path().join("X.state");
        fs::write(&state, b"{}").unwrap();
        let big = dir.path().join("2");
        fs::write(&big, slot::free_marker()).unwrap();
        flush_batch(
            vec![
                // Freed at commit 1, overwritten since (commit 2): nothing to flush; a path
                // that does not exist shows it is not even opened.
                Pending {
                    path: dir.path().join("missing/1"),
                    n: 1,
                    generation: 1,
                    delete: false,
                    state: Some(state.clone()),
                },
                Pending {
                    path: big.clone(),
                    n: 2,
                    generation: 0,
                    delete: true,
                    state: None,
                },
            ],
            &slots,
        );
        assert!(!state.exists());
        assert!(!big.exists());
        // A slot that cannot be flushed (here: its path goes through a regular file) keeps
        // its state file, and a slot to delete is kept (in the pool) instead.
        fs::write(&state, b"{}").unwrap();
        let broken = state.join("3");
        flush_batch(
            vec![Pending {
                path: broken,
                n: 3,
                generation: 0,
                delete: true,
                state: Some(state.clone()),
            }],
            &slots,
        );
        assert!(state.exists());
        assert_eq!(
            lock(&slots).free.iter().map(|f| f.n).collect::<Vec<_>>(),
            vec![3]
        );
    }
}
