//! Spool errors.

use std::io;
use std::path::PathBuf;

/// An error from the spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file-system operation failed.
    #[error("spool {op} {path}: {source}")]
    Io {
        /// What the spool was doing (`"write"`, `"fsync"`, `"rename"`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A spool file is not in a format this version understands, or is truncated.
    #[error("corrupt spool file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The spool recently ran out of space and refuses new messages for a moment.
    #[error("spool storage is full")]
    StorageFull,
    /// A blocking spool task panicked or was cancelled.
    #[error("spool task failed: {0}")]
    Task(String),
}

impl SpoolError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether the file system is out of space or quota (`ENOSPC`, `EDQUOT`): the session
    /// answers `452 4.3.1` and the client retries later.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Self::StorageFull => true,
            Self::Io { source, .. } => is_storage_full(source),
            _ => false,
        }
    }
}

/// `ENOSPC` or `EDQUOT`.
pub(crate) fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(
        e.raw_os_error(),
        Some(28 /* ENOSPC */ | 122 /* EDQUOT (Linux) */)
    )
}

impl From<tokio::task::JoinError> for SpoolError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Task(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_full_is_recognised() {
        let full = SpoolError::io("write", "/x", io::Error::from_raw_os_error(28));
        assert!(full.is_storage_full());
        let quota = SpoolError::io("write", "/x", io::Error::from_raw_os_error(122));
        assert!(quota.is_storage_full());
        let other = SpoolError::io("write", "/x", io::Error::from_raw_os_error(13));
        assert!(!other.is_storage_full());
        assert!(SpoolError::StorageFull.is_storage_full());
    }
}
