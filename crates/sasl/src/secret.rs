//! Newtypes for secrets whose `Debug` and `Display` never show the value.

use core::fmt;

use subtle::ConstantTimeEq as _;

/// What `Debug` and `Display` print instead of a secret.
pub const REDACTED: &str = "[redacted]";

/// Compares two byte strings in constant time with respect to their contents.
///
/// The comparison leaks only whether the lengths differ (as [`subtle`] does for slices), never
/// where the first differing byte is. Use it on the server side whenever a received password or
/// token is compared with a stored plaintext value; stored *hashes* (argon2) should be verified
/// with their own verifier instead.
///
/// ```
/// assert!(postern_sasl::constant_time_eq(b"hunter2", b"hunter2"));
/// assert!(!postern_sasl::constant_time_eq(b"hunter2", b"hunter3"));
/// assert!(!postern_sasl::constant_time_eq(b"hunter2", b"hunter"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// `Debug` and `Display` print `[redacted]`; the value is reachable only through
        /// [`expose_secret`](Self::expose_secret). Equality is constant-time (see
        /// [`constant_time_eq`]).
        #[derive(Clone, Default)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret itself. Every call site is a place where the secret leaves its box:
            /// keep them few and never log the result.
            pub fn expose_secret(&self) -> &str {
                &self.0
            }

            /// Length of the secret in bytes (safe to log).
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Whether the secret is empty.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// Compares the secret with `candidate` in constant time (see [`constant_time_eq`]).
            pub fn ct_eq(&self, candidate: &[u8]) -> bool {
                constant_time_eq(self.0.as_bytes(), candidate)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.ct_eq(other.0.as_bytes())
            }
        }

        impl Eq for $name {}

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

secret_type!(
    /// Any secret text, such as a base64 SASL line that carries a password or a token.
    Secret
);
secret_type!(
    /// A password (PLAIN, LOGIN).
    Password
);
secret_type!(
    /// An OAuth 2.0 bearer access token (XOAUTH2, OAUTHBEARER).
    Token
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        for shown in [
            format!("{:?}", Secret::new("s3cr3t")),
            format!("{}", Secret::new("s3cr3t")),
            format!("{:?}", Password::new("s3cr3t")),
            format!("{}", Password::new("s3cr3t")),
            format!("{:#?}", Token::new("s3cr3t")),
            format!("{}", Token::new("s3cr3t")),
        ] {
            assert_eq!(shown, REDACTED);
        }
    }

    #[test]
    fn expose_and_compare() {
        let p = Password::new("hunter2");
        assert_eq!(p.expose_secret(), "hunter2");
        assert_eq!(p.len(), 7);
        assert!(p.ct_eq(b"hunter2"));
        assert!(!p.ct_eq(b"hunter2 "));
        assert_eq!(p, Password::from("hunter2"));
        assert_ne!(p, Password::from("hunter3"));
        assert!(Token::default().is_empty());
    }
}
