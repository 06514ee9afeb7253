//! `OAUTHBEARER` ([RFC 7628](https://www.rfc-editor.org/rfc/rfc7628)): a GS2 header
//! `n,a=<authzid>,` then `^A`-separated `host`, `port` and `auth` pairs, and the JSON failure
//! challenge of §3.2.2.

use crate::bearer::{
    check_token, encode_challenge, json_object, json_text, pairs, parse_auth, set_once,
};
use crate::error::{ClientError, DecodeError};
use crate::line::{check_payload_len, utf8};
use crate::{Credentials, Mechanism};

const M: Mechanism = Mechanism::OAuthBearer;

/// Builds the message. An empty `user` sends no authzid (`n,,`). Refuses NUL in the user, a
/// host that is empty or not printable ASCII, and a non-b64token token.
pub(crate) fn encode(
    user: &str,
    token: &str,
    host: Option<&str>,
    port: Option<u16>,
) -> Result<Vec<u8>, ClientError> {
    let invalid = |reason| ClientError::InvalidCredentials {
        mechanism: M,
        reason,
    };
    if user.contains('\0') {
        return Err(invalid("user contains NUL"));
    }
    if host.is_some_and(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic())) {
        return Err(invalid("host is empty or not printable ASCII"));
    }
    check_token(M, token)?;
    let mut out = Vec::with_capacity(user.len() + token.len() + 64);
    out.extend_from_slice(b"n,");
    if !user.is_empty() {
        out.extend_from_slice(b"a=");
        for b in user.bytes() {
            match b {
                b',' => out.extend_from_slice(b"=2C"),
                b'=' => out.extend_from_slice(b"=3D"),
                _ => out.push(b),
            }
        }
    }
    out.extend_from_slice(b",\x01");
    if let Some(host) = host {
        out.extend_from_slice(b"host=");
        out.extend_from_slice(host.as_bytes());
        out.push(0x01);
    }
    if let Some(port) = port {
        out.extend_from_slice(format!("port={port}\x01").as_bytes());
    }
    out.extend_from_slice(b"auth=Bearer ");
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(b"\x01\x01");
    Ok(out)
}

/// Decodes an `OAUTHBEARER` client response (already base64-decoded) into
/// [`Credentials::Bearer`].
///
/// Rules (RFC 7628 §3.1, RFC 5801 GS2 header): the header is `n,` or `y,` (channel binding
/// `p=` is refused), an optional `a=<saslname>` with `=2C`/`=3D` escapes (absent gives an empty
/// `user`), then `,^A`; then `key=value^A` pairs with `key = 1*ALPHA` and printable-ASCII
/// values, then a final `^A`. `auth` is required, `host` and `port` (decimal, `u16`) optional,
/// each at most once; other keys are ignored. At most
/// [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN) bytes.
///
/// ```
/// let c = postern_sasl::oauthbearer::decode(b"n,a=user@example.com,\x01auth=Bearer abc\x01\x01").unwrap();
/// assert_eq!(c, postern_sasl::Credentials::bearer("user@example.com", "abc"));
/// ```
pub fn decode(message: &[u8]) -> Result<Credentials, DecodeError> {
    let malformed = |reason| DecodeError::malformed(M, reason);
    check_payload_len(message)?;
    let rest = match message {
        [b'n' | b'y', b',', rest @ ..] => rest,
        [b'p', b'=', ..] => return Err(malformed("channel binding is not supported")),
        _ => return Err(malformed("missing GS2 header")),
    };
    let (user, rest) = match rest.strip_prefix(b"a=") {
        Some(name) => {
            let end = name
                .iter()
                .position(|&b| b == b',')
                .ok_or_else(|| malformed("unterminated authzid"))?;
            (unescape_saslname(&name[..end])?, &name[end + 1..])
        }
        None => (
            String::new(),
            rest.strip_prefix(b",")
                .ok_or_else(|| malformed("malformed GS2 header"))?,
        ),
    };
    let body = rest
        .strip_prefix(b"\x01")
        .ok_or_else(|| malformed("missing ^A after the GS2 header"))?;
    let body = body
        .strip_suffix(b"\x01\x01")
        .ok_or_else(|| malformed("missing terminating ^A^A"))?;
    let (mut host, mut port, mut auth) = (None, None, None);
    for pair in pairs(M, body) {
        let (key, value) = pair?;
        if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
            return Err(malformed("key is not 1*ALPHA"));
        }
        if !value
            .iter()
            .all(|&b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            return Err(malformed(
                "value has a character outside VCHAR / SP / HTAB / CR / LF",
            ));
        }
        match key {
            b"host" => set_once(M, &mut host, value)?,
            b"port" => set_once(M, &mut port, value)?,
            b"auth" => set_once(M, &mut auth, value)?,
            _ => {}
        }
    }
    let port = port
        .map(|p| {
            p.iter()
                .all(u8::is_ascii_digit)
                .then(|| core::str::from_utf8(p).ok()?.parse::<u16>().ok())
                .flatten()
                .ok_or_else(|| malformed("port is not a number from 0 to 65535"))
        })
        .transpose()?;
    Ok(Credentials::Bearer {
        user,
        token: parse_auth(M, auth.ok_or_else(|| malformed("missing auth"))?)?,
        host: host.map(|h| utf8(h, "host")).transpose()?,
        port,
    })
}

/// RFC 5801 `saslname`: non-empty UTF-8 where `,` and `=` appear only as `=2C` and `=3D`.
fn unescape_saslname(name: &[u8]) -> Result<String, DecodeError> {
    let malformed = |reason| DecodeError::malformed(M, reason);
    if name.is_empty() {
        return Err(malformed("empty authzid"));
    }
    let mut out = Vec::with_capacity(name.len());
    let mut rest = name;
    while let Some((&b, tail)) = rest.split_first() {
        let (byte, tail) = match (b, tail) {
            (b'=', [b'2', b'C', tail @ ..]) => (b',', tail),
            (b'=', [b'3', b'D', tail @ ..]) => (b'=', tail),
            (b'=', _) => return Err(malformed("bad '=' escape in authzid")),
            _ => (b, tail),
        };
        out.push(byte);
        rest = tail;
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8 { field: "authzid" })
}

/// The RFC 7628 §3.2.2 failure challenge: JSON with `status` (e.g. `"invalid_token"`), and
/// optionally `scope` and `openid-configuration`.
///
/// The client must answer it with a single `^A` (base64 `AQ==`, [`OAuthBearerFailure::RESPONSE`]);
/// the server then sends its final failure reply (`535 5.7.8`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OAuthBearerFailure {
    /// `status`: an OAuth error code such as `invalid_token` (or an HTTP status).
    pub status: Option<String>,
    /// `scope`: the scope the token needs.
    pub scope: Option<String>,
    /// `openid-configuration`: URL of the authorization server's discovery document.
    pub openid_configuration: Option<String>,
}

impl OAuthBearerFailure {
    /// The line the client sends in answer: base64 of one `^A` byte.
    pub const RESPONSE: &'static str = "AQ==";

    /// A failure with `status` only.
    pub fn new(status: impl Into<String>) -> Self {
        Self {
            status: Some(status.into()),
            ..Self::default()
        }
    }

    /// Sets `scope`.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sets `openid-configuration`.
    #[must_use]
    pub fn with_openid_configuration(mut self, url: impl Into<String>) -> Self {
        self.openid_configuration = Some(url.into());
        self
    }

    /// Reads the decoded challenge. Never fails: a challenge that is not a JSON object gives a
    /// failure with every field `None`, since the client's next move is the same.
    pub fn decode(message: &[u8]) -> Self {
        let json = json_object(message);
        Self {
            status: json_text(&json, "status"),
            scope: json_text(&json, "scope"),
            openid_configuration: json_text(&json, "openid-configuration"),
        }
    }

    /// The base64 challenge text a server sends after `334 ` (keys in RFC 7628's order).
    pub fn to_challenge(&self) -> String {
        encode_challenge(&[
            ("status", self.status.as_deref()),
            ("scope", self.scope.as_deref()),
            ("openid-configuration", self.openid_configuration.as_deref()),
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
    fn decodes_header_variants() {
        let c = decode(b"y,,\x01auth=Bearer t\x01\x01").unwrap();
        assert_eq!(c, Credentials::bearer("", "t"));
        let c =
            decode(b"n,a=a=2Cb=3Dc,\x01port=587\x01host=smtp.example.com\x01auth=Bearer t\x01\x01")
                .unwrap();
        assert_eq!(
            c,
            Credentials::bearer("a,b=c", "t").with_host_port("smtp.example.com", 587)
        );
        assert_eq!(
            encode("a,b=c", "t", None, None).unwrap(),
            b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01"
        );
    }

    #[test]
    fn rejects() {
        assert_eq!(reason(b""), "missing GS2 header");
        assert_eq!(
            reason(b"p=tls-unique,,\x01auth=Bearer t\x01\x01"),
            "channel binding is not supported"
        );
        assert_eq!(
            reason(b"n,a=u\x01auth=Bearer t\x01\x01"),
            "unterminated authzid"
        );
        assert_eq!(reason(b"n,a=,\x01auth=Bearer t\x01\x01"), "empty authzid");
        assert_eq!(
            reason(b"n,a=u=2c,\x01auth=Bearer t\x01\x01"),
            "bad '=' escape in authzid"
        );
        assert_eq!(
            reason(b"n,x\x01auth=Bearer t\x01\x01"),
            "malformed GS2 header"
        );
        assert_eq!(
            reason(b"n,,auth=Bearer t\x01\x01"),
            "missing ^A after the GS2 header"
        );
        assert_eq!(
            reason(b"n,,\x01auth=Bearer t\x01"),
            "missing terminating ^A^A"
        );
        assert_eq!(reason(b"n,,\x01\x01"), "missing terminating ^A^A");
        assert_eq!(reason(b"n,,\x01\x01\x01"), "key-value pair without '='");
        assert_eq!(reason(b"n,,\x01host=h\x01\x01"), "missing auth");
        assert_eq!(
            reason(b"n,,\x01h0st=h\x01auth=Bearer t\x01\x01"),
            "key is not 1*ALPHA"
        );
        assert_eq!(
            reason(b"n,,\x01host=\xc3\xa9\x01auth=Bearer t\x01\x01"),
            "value has a character outside VCHAR / SP / HTAB / CR / LF"
        );
        for port in ["", "+1", "65536", "x", "99999999999999999999"] {
            let m = format!("n,,\x01port={port}\x01auth=Bearer t\x01\x01");
            assert_eq!(
                reason(m.as_bytes()),
                "port is not a number from 0 to 65535",
                "{port}"
            );
        }
        assert_eq!(
            reason(b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01"),
            "duplicate key"
        );
        assert_eq!(
            decode(b"n,a=\xff,\x01auth=Bearer t\x01\x01"),
            Err(DecodeError::NotUtf8 { field: "authzid" })
        );
        assert!(encode("u\0", "t", None, None).is_err());
        assert!(encode("u", "t", Some(""), None).is_err());
        assert!(encode("u", "t", Some("a b"), None).is_err());
        assert!(encode("u", "", None, None).is_err());
    }

    #[test]
    fn failure_challenge_rfc7628() {
        // RFC 7628 §4.3 (SMTP failed exchange), the server's challenge verbatim.
        let rfc = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0=";
        let f = OAuthBearerFailure::decode(&crate::line::decode(rfc.as_bytes()).unwrap());
        let expected = OAuthBearerFailure::new("invalid_token")
            .with_scope("example_scope")
            .with_openid_configuration("https://example.com/.well-known/openid-configuration");
        assert_eq!(f, expected);
        assert_eq!(expected.to_challenge(), rfc);
    }
}
