//! `XOAUTH2` ([Google](https://developers.google.com/gmail/imap/xoauth2-protocol),
//! [Microsoft](https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth)):
//! `user=<user>^Aauth=Bearer <token>^A^A`, and Gmail's JSON failure challenge.

use crate::bearer::{
    check_token, encode_challenge, json_object, json_text, pairs, parse_auth, set_once,
};
use crate::error::{ClientError, DecodeError};
use crate::line::{check_payload_len, utf8};
use crate::{Credentials, Mechanism};

const M: Mechanism = Mechanism::Xoauth2;

/// Builds the message; refuses an empty user, `^A` in the user and a non-b64token token.
pub(crate) fn encode(user: &str, token: &str) -> Result<Vec<u8>, ClientError> {
    if user.is_empty() {
        return Err(ClientError::InvalidCredentials {
            mechanism: M,
            reason: "empty user",
        });
    }
    if user.contains('\x01') {
        return Err(ClientError::InvalidCredentials {
            mechanism: M,
            reason: "user contains ^A",
        });
    }
    check_token(M, token)?;
    let mut out = Vec::with_capacity(user.len() + token.len() + 22);
    out.extend_from_slice(b"user=");
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(b"\x01auth=Bearer ");
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(b"\x01\x01");
    Ok(out)
}

/// Decodes an `XOAUTH2` message (already base64-decoded) into [`Credentials::Bearer`].
///
/// Rules: `^A`-separated `key=value` pairs ending in `^A^A`; `user` (non-empty UTF-8) and
/// `auth` (`Bearer <b64token>`, scheme in any case) each exactly once, in any order; other keys
/// are ignored. At most [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN) bytes.
///
/// ```
/// let c = postern_sasl::xoauth2::decode(b"user=a@contoso.com\x01auth=Bearer abc\x01\x01").unwrap();
/// assert_eq!(c, postern_sasl::Credentials::bearer("a@contoso.com", "abc"));
/// ```
pub fn decode(message: &[u8]) -> Result<Credentials, DecodeError> {
    check_payload_len(message)?;
    let body = message
        .strip_suffix(b"\x01\x01")
        .ok_or(DecodeError::malformed(M, "missing terminating ^A^A"))?;
    let (mut user, mut auth) = (None, None);
    for pair in pairs(M, body) {
        match pair? {
            (b"user", value) => set_once(M, &mut user, value)?,
            (b"auth", value) => set_once(M, &mut auth, value)?,
            _ => {}
        }
    }
    let user = user.ok_or(DecodeError::malformed(M, "missing user"))?;
    if user.is_empty() {
        return Err(DecodeError::malformed(M, "empty user"));
    }
    let auth = auth.ok_or(DecodeError::malformed(M, "missing auth"))?;
    Ok(Credentials::Bearer {
        user: utf8(user, "user")?,
        token: parse_auth(M, auth)?,
        host: None,
        port: None,
    })
}

/// Gmail's XOAUTH2 failure challenge: a `334` whose base64 text is JSON such as
/// `{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}`.
///
/// The client must answer it with an empty line ([`Xoauth2Failure::RESPONSE`]); the server then
/// sends its final failure reply (`535`). Exchange Online never sends this challenge: it answers
/// a bad token with `535 5.7.3` directly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Xoauth2Failure {
    /// `status`, an HTTP status code as text (`"400"`, `"401"`); numbers are accepted too.
    pub status: Option<String>,
    /// `schemes`, e.g. `"bearer mac"`.
    pub schemes: Option<String>,
    /// `scope`, the scope the token needs, e.g. `"https://mail.google.com/"`.
    pub scope: Option<String>,
}

impl Xoauth2Failure {
    /// The line the client sends in answer: empty.
    pub const RESPONSE: &'static str = "";

    /// A failure with `status` only.
    pub fn new(status: impl Into<String>) -> Self {
        Self {
            status: Some(status.into()),
            ..Self::default()
        }
    }

    /// Sets `schemes`.
    #[must_use]
    pub fn with_schemes(mut self, schemes: impl Into<String>) -> Self {
        self.schemes = Some(schemes.into());
        self
    }

    /// Sets `scope`.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Reads the decoded challenge. Never fails: a challenge that is not a JSON object gives a
    /// failure with every field `None`, since the client's next move is the same.
    pub fn decode(message: &[u8]) -> Self {
        let json = json_object(message);
        Self {
            status: json_text(&json, "status"),
            schemes: json_text(&json, "schemes"),
            scope: json_text(&json, "scope"),
        }
    }

    /// `status` as a number, if it is one (`401` means the token is invalid or expired).
    pub fn status_code(&self) -> Option<u16> {
        self.status.as_deref()?.parse().ok()
    }

    /// The base64 challenge text a server sends after `334 ` (keys in Gmail's order).
    pub fn to_challenge(&self) -> String {
        encode_challenge(&[
            ("status", self.status.as_deref()),
            ("schemes", self.schemes.as_deref()),
            ("scope", self.scope.as_deref()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(message: &[u8]) -> &'static str {
        match decode(message) {
            Err(DecodeError::Malformed { reason, .. }) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_in_any_order_and_ignores_unknown_keys() {
        let c = decode(b"auth=Bearer t0k\x01x=y\x01user=u@contoso.com\x01\x01").unwrap();
        assert_eq!(c, Credentials::bearer("u@contoso.com", "t0k"));
    }

    #[test]
    fn rejects() {
        assert_eq!(reason(b""), "missing terminating ^A^A");
        assert_eq!(
            reason(b"user=u\x01auth=Bearer t\x01"),
            "missing terminating ^A^A"
        );
        assert_eq!(reason(b"\x01\x01"), "key-value pair without '='");
        assert_eq!(
            reason(b"user=u\x01\x01auth=Bearer t\x01\x01"),
            "key-value pair without '='"
        );
        assert_eq!(reason(b"auth=Bearer t\x01\x01"), "missing user");
        assert_eq!(reason(b"user=\x01auth=Bearer t\x01\x01"), "empty user");
        assert_eq!(reason(b"user=u\x01\x01"), "missing auth");
        assert_eq!(
            reason(b"user=u\x01user=v\x01auth=Bearer t\x01\x01"),
            "duplicate key"
        );
        assert_eq!(
            reason(b"user=u\x01auth=Basic dTpw\x01\x01"),
            "auth scheme is not Bearer"
        );
        assert_eq!(
            decode(b"user=\xff\x01auth=Bearer t\x01\x01"),
            Err(DecodeError::NotUtf8 { field: "user" })
        );
        assert!(encode("", "t").is_err());
        assert!(encode("u\x01", "t").is_err());
        assert!(encode("u", "t\x01").is_err());
        assert!(encode("u", "").is_err());
    }

    #[test]
    fn failure_challenge() {
        // Gmail's documented challenge (developers.google.com/gmail/imap/xoauth2-protocol).
        let gmail = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0K";
        let f = Xoauth2Failure::decode(&crate::line::decode(gmail.as_bytes()).unwrap());
        assert_eq!(
            f,
            Xoauth2Failure::new("401")
                .with_schemes("bearer mac")
                .with_scope("https://mail.google.com/")
        );
        assert_eq!(f.status_code(), Some(401));
        // Without the trailing newline Gmail's encoder added, ours is byte-identical.
        assert_eq!(
            f.to_challenge(),
            "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0="
        );
        assert_eq!(
            Xoauth2Failure::decode(b"{\"status\":400}").status_code(),
            Some(400)
        );
        assert_eq!(
            Xoauth2Failure::decode(b"not json"),
            Xoauth2Failure::default()
        );
        assert_eq!(Xoauth2Failure::decode(b"[1]"), Xoauth2Failure::default());
    }
}
