//! Pieces shared by XOAUTH2 and OAUTHBEARER: tokens, `auth=` values, key-value pairs and the
//! JSON failure challenges.

use crate::error::{ClientError, DecodeError};
use crate::{Mechanism, Token};

/// RFC 6750 §2.1 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub(crate) fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body_len > 0
        && token[..body_len].iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Refuses a token a server would not parse (also keeps `^A` out of the message).
pub(crate) fn check_token(mechanism: Mechanism, token: &str) -> Result<(), ClientError> {
    if is_b64token(token.as_bytes()) {
        Ok(())
    } else {
        Err(ClientError::InvalidCredentials {
            mechanism,
            reason: "token is empty or not an RFC 6750 b64token",
        })
    }
}

/// Parses an `auth=` value: `Bearer` (any case), one or more spaces, a b64token.
pub(crate) fn parse_auth(mechanism: Mechanism, value: &[u8]) -> Result<Token, DecodeError> {
    let malformed = |reason| DecodeError::malformed(mechanism, reason);
    let space = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or_else(|| malformed("auth value is not \"Bearer <token>\""))?;
    if !value[..space].eq_ignore_ascii_case(b"Bearer") {
        return Err(malformed("auth scheme is not Bearer"));
    }
    let token = value[space..].trim_ascii_start();
    if !is_b64token(token) {
        return Err(malformed("token is empty or not an RFC 6750 b64token"));
    }
    // A b64token is ASCII, so this cannot fail; keep the typed error anyway.
    crate::line::utf8(token, "token").map(Token::new)
}

/// Splits `key=value^Akey=value` (no trailing `^A`) into pairs; empty pairs and pairs without
/// `=` are malformed.
pub(crate) fn pairs(
    mechanism: Mechanism,
    body: &[u8],
) -> impl Iterator<Item = Result<(&[u8], &[u8]), DecodeError>> {
    body.split(|&b| b == 0x01).map(move |pair| {
        let eq = pair
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| DecodeError::malformed(mechanism, "key-value pair without '='"))?;
        Ok((&pair[..eq], &pair[eq + 1..]))
    })
}

/// Stores `value` in `slot`, refusing a second occurrence of the key.
pub(crate) fn set_once<'a>(
    mechanism: Mechanism,
    slot: &mut Option<&'a [u8]>,
    value: &'a [u8],
) -> Result<(), DecodeError> {
    if slot.replace(value).is_some() {
        return Err(DecodeError::malformed(mechanism, "duplicate key"));
    }
    Ok(())
}

/// Reads a JSON object's member as text (strings as they are, numbers and booleans printed);
/// anything else, or a missing member, is `None`.
pub(crate) fn json_text(object: &serde_json::Value, key: &str) -> Option<String> {
    match object.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses a JSON challenge leniently: anything that is not a JSON object is an empty object.
pub(crate) fn json_object(message: &[u8]) -> serde_json::Value {
    match serde_json::from_slice::<serde_json::Value>(message) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::Value::Null,
    }
}

/// A JSON failure challenge as the server sends it after `334 `: the base64 of an object
/// holding the members that are present, in the order given (clients and tests compare the
/// bytes, so the order is the mechanism's documented one).
pub(crate) fn encode_challenge(members: &[(&str, Option<&str>)]) -> String {
    let json_string = |s: &str| serde_json::Value::from(s).to_string();
    let members: Vec<String> = members
        .iter()
        .filter_map(|&(key, value)| Some(format!("{}:{}", json_string(key), json_string(value?))))
        .collect();
    crate::line::encode_public(format!("{{{}}}", members.join(",")).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token() {
        for ok in [
            "a",
            "ya29.vF9-_~+/x",
            "abc==",
            "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
        ] {
            assert!(is_b64token(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "=", "a=b", "a b", "a\x01", "é"] {
            assert!(!is_b64token(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn auth_values() {
        let m = Mechanism::Xoauth2;
        assert_eq!(parse_auth(m, b"Bearer abc").unwrap().expose_secret(), "abc");
        assert_eq!(
            parse_auth(m, b"bearer   abc").unwrap().expose_secret(),
            "abc"
        );
        assert!(parse_auth(m, b"Bearer").is_err());
        assert!(parse_auth(m, b"Bearer ").is_err());
        assert!(parse_auth(m, b"Basic abc").is_err());
        assert!(parse_auth(m, b"Bearer a b").is_err());
    }
}
