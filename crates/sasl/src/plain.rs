//! `PLAIN` ([RFC 4616](https://www.rfc-editor.org/rfc/rfc4616)): `[authzid] NUL authcid NUL passwd`.

use crate::error::{ClientError, DecodeError};
use crate::line::{check_payload_len, utf8};
use crate::{Credentials, Mechanism, Password};

const M: Mechanism = Mechanism::Plain;

/// Builds the message; refuses empty user or password and NUL in any field.
pub(crate) fn encode(
    authzid: Option<&str>,
    user: &str,
    password: &str,
) -> Result<Vec<u8>, ClientError> {
    let invalid = |reason| ClientError::InvalidCredentials {
        mechanism: M,
        reason,
    };
    let authzid = authzid.unwrap_or("");
    if user.is_empty() {
        return Err(invalid("empty user"));
    }
    if password.is_empty() {
        return Err(invalid("empty password"));
    }
    if [authzid, user, password].iter().any(|f| f.contains('\0')) {
        return Err(invalid("a field contains NUL"));
    }
    let mut out = Vec::with_capacity(authzid.len() + user.len() + password.len() + 2);
    out.extend_from_slice(authzid.as_bytes());
    out.push(0);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    Ok(out)
}

/// Decodes a `PLAIN` message (already base64-decoded) into [`Credentials::Password`].
///
/// RFC 4616 rules: exactly two NUL separators; `authcid` and `passwd` non-empty; every field
/// UTF-8; an empty `authzid` means none. RFC 4616 asks servers to accept fields of at least 255
/// octets; this decoder accepts anything up to [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN) in
/// total. It does not apply SASLprep: compare what it returns byte for byte.
///
/// ```
/// use postern_sasl::{Credentials, plain};
///
/// // RFC 4616 §4: "\0tim\0tanstaaftanstaaf"
/// let c = plain::decode(b"\0tim\0tanstaaftanstaaf").unwrap();
/// assert_eq!(c, Credentials::password("tim", "tanstaaftanstaaf"));
/// assert!(plain::decode(b"tim\0tanstaaf").is_err());
/// ```
pub fn decode(message: &[u8]) -> Result<Credentials, DecodeError> {
    check_payload_len(message)?;
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(DecodeError::malformed(
            M,
            "expected exactly two NUL separators",
        ));
    };
    if authcid.is_empty() {
        return Err(DecodeError::malformed(M, "empty authcid"));
    }
    if passwd.is_empty() {
        return Err(DecodeError::malformed(M, "empty password"));
    }
    let authzid = utf8(authzid, "authzid")?;
    Ok(Credentials::Password {
        authzid: (!authzid.is_empty()).then_some(authzid),
        user: utf8(authcid, "authcid")?,
        password: Password::new(utf8(passwd, "password")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4616_examples() {
        // RFC 4616 §4, both examples.
        assert_eq!(
            decode(b"\0tim\0tanstaaftanstaaf").unwrap(),
            Credentials::password("tim", "tanstaaftanstaaf")
        );
        assert_eq!(
            decode(b"Ursel\0Kurt\0xipj3plmq").unwrap(),
            Credentials::password("Kurt", "xipj3plmq").with_authzid("Ursel")
        );
        assert_eq!(
            encode(Some("Ursel"), "Kurt", "xipj3plmq").unwrap(),
            b"Ursel\0Kurt\0xipj3plmq"
        );
        assert_eq!(
            encode(None, "tim", "tanstaaftanstaaf").unwrap(),
            b"\0tim\0tanstaaftanstaaf"
        );
    }

    #[test]
    fn rejects() {
        let reason = |m: &[u8]| match decode(m) {
            Err(DecodeError::Malformed { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(b""), "expected exactly two NUL separators");
        assert_eq!(reason(b"\0tim"), "expected exactly two NUL separators");
        assert_eq!(
            reason(b"\0tim\0pw\0"),
            "expected exactly two NUL separators"
        );
        assert_eq!(reason(b"\0\0pw"), "empty authcid");
        assert_eq!(reason(b"\0tim\0"), "empty password");
        assert_eq!(
            decode(b"\0tim\0\xff"),
            Err(DecodeError::NotUtf8 { field: "password" })
        );
        assert_eq!(
            decode(b"\xc3\0tim\0pw"),
            Err(DecodeError::NotUtf8 { field: "authzid" })
        );
        assert!(matches!(
            decode(&[b'a'; crate::MAX_PAYLOAD_LEN + 1]),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(encode(None, "", "pw").is_err());
        assert!(encode(None, "u", "").is_err());
        assert!(encode(None, "u\0", "pw").is_err());
        assert!(encode(Some("a\0"), "u", "pw").is_err());
    }
}
