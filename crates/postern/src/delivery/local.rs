//! The local sink route: delivered messages become files (dry runs, demos, tests).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::{DeliveryFuture, DeliveryReport, RcptOutcome, Transport};
use crate::spool::SpooledMessage;

/// How the local sink writes messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LocalFormat {
    /// `<dir>/<queue-id>.eml` plus `<dir>/<queue-id>.json` (envelope and outcome), the
    /// sidecar written first so that a watcher who sees the `.eml` finds both.
    #[default]
    Eml,
    /// A Maildir: `<dir>/tmp/` then renamed into `<dir>/new/`, with a `Return-Path` header.
    Maildir,
}

/// Writes each delivered message into a directory, atomically (temporary name, fsync,
/// rename, directory fsync).
#[derive(Clone, Debug)]
pub struct LocalSink {
    dir: PathBuf,
    format: LocalFormat,
}

impl LocalSink {
    /// A sink writing into `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>, format: LocalFormat) -> Self {
        Self {
            dir: dir.into(),
            format,
        }
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, msg: &SpooledMessage, rcpts: &[usize]) -> io::Result<PathBuf> {
        match self.format {
            LocalFormat::Eml => self.write_eml(msg, rcpts),
            LocalFormat::Maildir => self.write_maildir(msg),
        }
    }

    fn write_eml(&self, msg: &SpooledMessage, rcpts: &[usize]) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let id = msg.id();
        let eml = self.dir.join(format!("{id}.eml"));
        let eml_tmp = self.dir.join(format!(".{id}.eml.tmp"));
        copy_body(msg, &eml_tmp, None)?;
        let env = msg.envelope();
        let json_path = self.dir.join(format!("{id}.json"));
        // A later attempt for other recipients adds to the list.
        let mut delivered: Vec<String> = fs::read(&json_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| serde_json::from_value(v["delivered_to"].clone()).ok())
            .unwrap_or_default();
        delivered.extend(rcpts.iter().map(|&i| env.recipients[i].address.clone()));
        let sidecar = serde_json::json!({
            "queue_id": id.as_str(),
            "envelope": env,
            "delivered_to": delivered,
            "outcome": "delivered",
            "size": msg.body_len(),
        });
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        let mut f = create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&sidecar).map_err(io::Error::other)?)?;
        f.sync_data()?;
        fs::rename(&tmp, &json_path)?;
        // The `.eml` appears last: whoever sees it finds its sidecar already in place.
        fs::rename(&eml_tmp, &eml)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(eml)
    }

    fn write_maildir(&self, msg: &SpooledMessage) -> io::Result<PathBuf> {
        let (tmp_dir, new_dir) = (self.dir.join("tmp"), self.dir.join("new"));
        fs::create_dir_all(&tmp_dir)?;
        fs::create_dir_all(&new_dir)?;
        fs::create_dir_all(self.dir.join("cur"))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("{secs}.P{}Q{}.postern", std::process::id(), msg.id());
        let tmp = tmp_dir.join(&name);
        let return_path = format!(
            "Return-Path: <{}>\r\n",
            msg.envelope().mail_from.as_deref().unwrap_or("")
        );
        copy_body(msg, &tmp, Some(return_path.as_bytes()))?;
        let dst = new_dir.join(&name);
        fs::rename(&tmp, &dst)?;
        File::open(&new_dir)?.sync_all()?;
        Ok(dst)
    }
}

fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn copy_body(msg: &SpooledMessage, dst: &Path, prefix: Option<&[u8]>) -> io::Result<()> {
    let r = (|| {
        let mut f = create(dst)?;
        if let Some(p) = prefix {
            f.write_all(p)?;
        }
        io::copy(&mut msg.open_body_blocking()?, &mut f)?;
        f.sync_data()
    })();
    if r.is_err() {
        let _ = fs::remove_file(dst);
    }
    r
}

impl Transport for LocalSink {
    fn deliver<'a>(&'a self, msg: &'a SpooledMessage, rcpts: &'a [usize]) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let this = self.clone();
            let m = msg.clone();
            let r: Vec<usize> = rcpts.to_vec();
            let res = tokio::task::spawn_blocking(move || this.write(&m, &r))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
            let outcome = match res {
                Ok(path) => {
                    RcptOutcome::delivered(format!("250 2.0.0 written to {}", path.display()))
                }
                Err(e) => RcptOutcome::transient(
                    format!("local sink {}: {e}", self.dir.display()),
                    "local_io",
                ),
            };
            DeliveryReport::all(rcpts, &outcome)
        })
    }
}
