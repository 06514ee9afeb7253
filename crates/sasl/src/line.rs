//! base64 lines: the bounds, the lenient decoder and the canonical encoder.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{ClientError, DecodeError};
use crate::{Mechanism, Secret};

/// The longest base64 line (without CRLF) this crate decodes or produces: 12288 bytes.
///
/// [RFC 4954 §4](https://www.rfc-editor.org/rfc/rfc4954#section-4) requires servers to accept
/// `AUTH` lines of at least 12288 octets, so a client that stays within it is interoperable.
/// Exchange Online access tokens are typically 1.5 to 3 KB (about 4 KB of base64 once wrapped
/// in XOAUTH2), tokens carrying many group claims grow past that, and 12288 leaves room for
/// them while bounding what an unauthenticated peer can make a server buffer and decode.
pub const MAX_LINE_LEN: usize = 12288;

/// The longest decoded SASL message: what [`MAX_LINE_LEN`] bytes of base64 decode to (9216).
pub const MAX_PAYLOAD_LEN: usize = MAX_LINE_LEN / 4 * 3;

/// Standard alphabet; encodes with padding; decodes with or without padding and ignores
/// non-zero trailing bits, because devices are sloppy and neither changes the meaning.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Strips one trailing CRLF or LF and surrounding spaces and tabs.
pub(crate) fn trim(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.trim_ascii()
}

/// Decodes a trimmed line; `=` (RFC 4954's empty initial response) and the empty line decode to
/// an empty message.
pub(crate) fn decode(line: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if line.len() > MAX_LINE_LEN {
        return Err(DecodeError::TooLong {
            len: line.len(),
            max: MAX_LINE_LEN,
        });
    }
    if line == b"=" {
        return Ok(Vec::new());
    }
    ENGINE.decode(line).map_err(|_| DecodeError::BadBase64)
}

/// Encodes a message as a canonical (padded) base64 line, refusing to exceed [`MAX_LINE_LEN`].
pub(crate) fn encode(mechanism: Mechanism, message: &[u8]) -> Result<Secret, ClientError> {
    let len = message.len().div_ceil(3).saturating_mul(4);
    if len > MAX_LINE_LEN {
        return Err(ClientError::TooLong {
            mechanism,
            len,
            max: MAX_LINE_LEN,
        });
    }
    Ok(Secret::new(ENGINE.encode(message)))
}

/// Encodes non-secret text (challenges).
pub(crate) fn encode_public(message: &[u8]) -> String {
    ENGINE.encode(message)
}

/// Checks a decoded message against [`MAX_PAYLOAD_LEN`] (for the public raw decoders).
pub(crate) fn check_payload_len(message: &[u8]) -> Result<(), DecodeError> {
    if message.len() > MAX_PAYLOAD_LEN {
        return Err(DecodeError::TooLong {
            len: message.len(),
            max: MAX_PAYLOAD_LEN,
        });
    }
    Ok(())
}

/// Converts a field to UTF-8, naming it on failure.
pub(crate) fn utf8(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
    core::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| DecodeError::NotUtf8 { field })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_decodes() {
        assert_eq!(trim(b" AGE= \r\n"), b"AGE=");
        assert_eq!(trim(b"AGE=\n"), b"AGE=");
        assert_eq!(decode(b"AGE=").unwrap(), b"\0a");
        assert_eq!(decode(b"AGE").unwrap(), b"\0a", "padding is optional");
        assert_eq!(decode(b"=").unwrap(), b"");
        assert_eq!(decode(b"").unwrap(), b"");
        assert_eq!(decode(b"A"), Err(DecodeError::BadBase64));
        assert_eq!(decode(b"AG E="), Err(DecodeError::BadBase64));
        assert_eq!(decode("é".as_bytes()), Err(DecodeError::BadBase64));
        assert!(matches!(
            decode(&[b'A'; MAX_LINE_LEN + 4]),
            Err(DecodeError::TooLong { .. })
        ));
        assert_eq!(
            decode(&[b'A'; MAX_LINE_LEN]).unwrap().len(),
            MAX_PAYLOAD_LEN
        );
    }

    #[test]
    fn encode_limit() {
        assert_eq!(
            encode(Mechanism::Plain, &[0; MAX_PAYLOAD_LEN])
                .unwrap()
                .len(),
            MAX_LINE_LEN
        );
        assert!(matches!(
            encode(Mechanism::Plain, &[0; MAX_PAYLOAD_LEN + 1]),
            Err(ClientError::TooLong { len: 12292, .. })
        ));
    }
}
