//! Helpers shared by the example binaries.
//!
//! The small tools (`ndr`, `mx`, `token`, ...) print one JSON document on standard output and
//! say through their exit status whether they succeeded. These helpers keep that contract the
//! same everywhere.
//!
//! ```
//! use std::process::ExitCode;
//! let code: ExitCode = postern_examples::emit(&serde_json::json!({"ok": true}), true);
//! # let _ = code;
//! ```
#![forbid(unsafe_code)]

pub mod demo;

use std::io::Write as _;
use std::process::ExitCode;

/// Pretty-prints `value` as JSON on standard output, and returns `ExitCode::SUCCESS` when `ok`,
/// or exit status 1 otherwise.
///
/// Failed tools still print JSON (an object naming the error) so scripts can read it.
pub fn emit(value: &serde_json::Value, ok: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    // A closed pipe is not worth a panic: the exit status still tells the story.
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
