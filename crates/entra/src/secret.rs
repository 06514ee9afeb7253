//! Values that must never be printed.

use std::fmt;

/// A secret string: an access token, a refresh token, a client secret, an authorization code.
///
/// `Debug` and `Display` print `<redacted>`; the only way to read the value is
/// [`Secret::expose`], so a stray `{:?}` in a log line cannot leak it.
///
/// ```
/// use postern_entra::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_boxed_str())
    }

    /// Returns the secret value. Call it only where the value goes on the wire or to disk.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file, trimming one trailing line break (as `echo` writes).
    ///
    /// The error names the path, never the content.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let mut text = std::fs::read_to_string(path)?;
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        Ok(Self::new(text))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}
