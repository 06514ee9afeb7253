//! `LOGIN` ([draft-murchison-sasl-login-00](https://datatracker.ietf.org/doc/html/draft-murchison-sasl-login-00)):
//! the username and the password, each base64 on its own line after a prompt.

use crate::error::{ClientError, DecodeError};
use crate::line::{check_payload_len, utf8};
use crate::{Mechanism, Password};

const M: Mechanism = Mechanism::Login;

/// The server's first prompt, base64 of `Username:` (what Exchange and most devices expect;
/// some printers give up on other spellings such as `User Name\0`).
pub const USERNAME_PROMPT: &str = "VXNlcm5hbWU6";

/// The server's second prompt, base64 of `Password:`.
pub const PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Refuses an empty user or password (a server would reject them anyway).
pub(crate) fn check(user: &str, password: &str) -> Result<(), ClientError> {
    let invalid = |reason| ClientError::InvalidCredentials {
        mechanism: M,
        reason,
    };
    if user.is_empty() {
        return Err(invalid("empty user"));
    }
    if password.is_empty() {
        return Err(invalid("empty password"));
    }
    Ok(())
}

/// Decodes the username message (already base64-decoded): non-empty UTF-8.
///
/// ```
/// assert_eq!(postern_sasl::login::decode_username(b"scanner").unwrap(), "scanner");
/// assert!(postern_sasl::login::decode_username(b"").is_err());
/// ```
pub fn decode_username(message: &[u8]) -> Result<String, DecodeError> {
    check_payload_len(message)?;
    if message.is_empty() {
        return Err(DecodeError::malformed(M, "empty username"));
    }
    utf8(message, "username")
}

/// Decodes the password message (already base64-decoded): non-empty UTF-8.
pub fn decode_password(message: &[u8]) -> Result<Password, DecodeError> {
    check_payload_len(message)?;
    if message.is_empty() {
        return Err(DecodeError::malformed(M, "empty password"));
    }
    utf8(message, "password").map(Password::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_decode_to_the_words() {
        assert_eq!(
            crate::line::decode(USERNAME_PROMPT.as_bytes()).unwrap(),
            b"Username:"
        );
        assert_eq!(
            crate::line::decode(PASSWORD_PROMPT.as_bytes()).unwrap(),
            b"Password:"
        );
    }

    #[test]
    fn decodes() {
        assert_eq!(decode_password(b"pw").unwrap().expose_secret(), "pw");
        assert!(decode_password(b"").is_err());
        assert_eq!(
            decode_username(b"\xff"),
            Err(DecodeError::NotUtf8 { field: "username" })
        );
        assert!(check("", "pw").is_err());
        assert!(check("u", "").is_err());
        assert!(check("u", "pw").is_ok());
    }
}
