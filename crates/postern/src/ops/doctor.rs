//! `relay doctor`: one line per check, `pass` / `warn` / `fail`, each failure with a remedy.

use std::io::Write as _;
use std::path::Path;

/// Creates, fsyncs and removes a probe file in `root` (the spool is writable).
pub fn probe_writable(root: &Path) -> std::io::Result<()> {
    let probe = root.join(format!(".probe-{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"postern")?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    r
}
