//! Durable refresh-token storage: [`RefreshTokenStore`], [`FileStore`], [`MemoryStore`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::{Error, Secret};

/// Where refresh tokens live between runs.
///
/// Keys are [`CacheKey::store_key`](crate::CacheKey::store_key) strings (authority, tenant,
/// client and user; no secret). `save` must be durable when it returns: the cache hands out a
/// new access token only after the rotated refresh token is saved.
///
/// The methods are synchronous (small files, rare calls: about once an hour per user).
pub trait RefreshTokenStore: Send + Sync + fmt::Debug + 'static {
    /// The refresh token stored under `key`, if any.
    fn load(&self, key: &str) -> Result<Option<Secret>, Error>;
    /// Stores `token` under `key`, replacing any previous one, durably.
    fn save(&self, key: &str, token: &Secret) -> Result<(), Error>;
    /// Forgets `key`.
    fn remove(&self, key: &str) -> Result<(), Error>;
}

/// Refresh tokens in memory only (tests; deployments that re-run device code on restart).
#[derive(Debug, Default)]
pub struct MemoryStore {
    tokens: Mutex<BTreeMap<String, Secret>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RefreshTokenStore for MemoryStore {
    fn load(&self, key: &str) -> Result<Option<Secret>, Error> {
        Ok(self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned())
    }

    fn save(&self, key: &str, token: &Secret) -> Result<(), Error> {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), token.clone());
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), Error> {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        Ok(())
    }
}

/// Refresh tokens in one JSON file, `{"version":1,"refresh_tokens":{key: token}}`.
///
/// The file is created with mode 0600 and every change replaces it atomically: write a
/// temporary file (0600) in the same directory, fsync it, rename it over the old one, fsync
/// the directory. A crash leaves either the old or the new file, never a mix. One process
/// should own a file; within a process the store serialises its own writes.
pub struct FileStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const FORMAT_VERSION: u64 = 1;

impl FileStore {
    /// A store at `path` (the file is created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_all(&self) -> Result<BTreeMap<String, String>, Error> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::io(format!("reading {}", self.path.display()), e)),
        };
        #[cfg(unix)]
        warn_if_readable_by_others(&self.path);
        let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            Error::Config(format!("{} is not a token store: {e}", self.path.display()))
        })?;
        let map = value
            .get("refresh_tokens")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{} has no refresh_tokens object",
                    self.path.display()
                ))
            })?;
        Ok(map
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect())
    }

    fn write_all(&self, tokens: &BTreeMap<String, String>) -> Result<(), Error> {
        let body = serde_json::json!({ "version": FORMAT_VERSION, "refresh_tokens": tokens });
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            crate::pkce::random_token(6)
        ));
        let ctx = |what: &str| format!("{what} {}", tmp.display());
        let result = (|| {
            let mut file = create_private(&tmp).map_err(|e| Error::io(ctx("creating"), e))?;
            file.write_all(body.to_string().as_bytes())
                .map_err(|e| Error::io(ctx("writing"), e))?;
            file.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
            drop(file);
            fs::rename(&tmp, &self.path).map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", tmp.display(), self.path.display()),
                    e,
                )
            })?;
            sync_dir(&dir).map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn update(&self, f: impl FnOnce(&mut BTreeMap<String, String>)) -> Result<(), Error> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tokens = self.read_all()?;
        f(&mut tokens);
        self.write_all(&tokens)
    }
}

impl RefreshTokenStore for FileStore {
    fn load(&self, key: &str) -> Result<Option<Secret>, Error> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(self.read_all()?.remove(key).map(Secret::new))
    }

    fn save(&self, key: &str, token: &Secret) -> Result<(), Error> {
        self.update(|m| {
            m.insert(key.to_owned(), token.expose().to_owned());
        })
    }

    fn remove(&self, key: &str) -> Result<(), Error> {
        self.update(|m| {
            m.remove(key);
        })
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        tracing::warn!(path = %path.display(), "token store is readable by others; it is rewritten 0600 on the next save");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let store = FileStore::new(&path);
        assert!(store.load("k").unwrap().is_none());
        store.save("k", &Secret::new("rt1")).unwrap();
        store.save("j", &Secret::new("other")).unwrap();
        store.save("k", &Secret::new("rt2")).unwrap();
        assert_eq!(
            FileStore::new(&path).load("k").unwrap().unwrap().expose(),
            "rt2"
        );
        store.remove("j").unwrap();
        assert!(store.load("j").unwrap().is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(!format!("{store:?}").contains("rt2"));
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        fs::write(&path, b"not json").unwrap();
        let store = FileStore::new(&path);
        assert!(store.load("k").is_err());
        assert!(store.save("k", &Secret::new("x")).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"not json");
    }
}
