//! Slot files, format version 2: the fixed header, the free marker, and reading a slot back.
//!
//! ```text
//! offset  size  field
//!      0     8  magic: "PSTNSLOT" (a message) or "PSTNFREE" (the free marker)
//!      8     2  format version, little endian (2)
//!     10     2  zero
//!     12     4  envelope length (bytes of JSON), little endian
//!     16     8  body length, little endian
//!     24     4  CRC-32 of the envelope and the body, in that order
//!     28     1  length of the queue id
//!     29    24  the queue id, zero padded
//!     53     7  zero
//!     60     4  CRC-32 of bytes 0..60 (so of the payload CRC too)
//!     64        envelope (JSON), then body
//! ```
//!
//! The two CRCs chain: the header CRC covers the header fields and the payload CRC, which covers
//! the envelope and the body. The payload CRC is computed while the bytes are written, so a
//! message streamed to disk before its length is known is never read back to be checksummed;
//! the header, written last, is checksummed once everything else is known.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::QueueId;

/// Bytes of the slot header; the envelope starts here.
pub(crate) const HEADER_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"PSTNSLOT";
const FREE_MAGIC: &[u8; 8] = b"PSTNFREE";
/// The slot format version.
pub(crate) const VERSION: u16 = 2;
const ID_MAX: usize = 24;

/// The header of a slot that holds a committed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) id: QueueId,
    pub(crate) envelope_len: u32,
    pub(crate) body_len: u64,
    pub(crate) payload_crc: u32,
}

/// What a slot's first [`HEADER_LEN`] bytes say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A message header whose own checksum holds (the payload is not checked yet).
    Message(Header),
    /// The free marker: the message it held is finished.
    Free,
    /// Neither: a slot created but never committed, or torn by a crash. Free as well.
    Invalid(&'static str),
}

impl Header {
    /// Offset of the first body byte.
    pub(crate) fn body_offset(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.envelope_len)
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.envelope_len.to_le_bytes());
        h[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        h[24..28].copy_from_slice(&self.payload_crc.to_le_bytes());
        let id = self.id.as_str().as_bytes();
        debug_assert!(id.len() <= ID_MAX);
        let n = id.len().min(ID_MAX);
        h[28] = n as u8;
        h[29..29 + n].copy_from_slice(&id[..n]);
        let crc = crc32fast::hash(&h[..60]);
        h[60..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub(crate) fn decode(h: &[u8; HEADER_LEN]) -> Decoded {
        if &h[..8] == FREE_MAGIC {
            return Decoded::Free;
        }
        if &h[..8] != MAGIC {
            return Decoded::Invalid("no slot magic");
        }
        let le32 = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&h[r]);
            u32::from_le_bytes(b)
        };
        if le32(60..64) != crc32fast::hash(&h[..60]) {
            return Decoded::Invalid("header checksum mismatch");
        }
        if u16::from_le_bytes([h[8], h[9]]) != VERSION {
            return Decoded::Invalid("unknown slot format version");
        }
        let n = usize::from(h[28]);
        let id = (n <= ID_MAX)
            .then(|| std::str::from_utf8(&h[29..29 + n]).ok())
            .flatten()
            .and_then(QueueId::parse);
        let Some(id) = id else {
            return Decoded::Invalid("bad queue id");
        };
        let mut body_len = [0u8; 8];
        body_len.copy_from_slice(&h[16..24]);
        Decoded::Message(Self {
            id,
            envelope_len: le32(12..16),
            body_len: u64::from_le_bytes(body_len),
            payload_crc: le32(24..28),
        })
    }
}

/// The header that marks a slot free.
pub(crate) fn free_marker() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(FREE_MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Reads and decodes the header of the open slot `f`. A file shorter than a header is
/// [`Decoded::Invalid`].
pub(crate) fn read_header(f: &File) -> io::Result<Decoded> {
    let mut h = [0u8; HEADER_LEN];
    match f.read_exact_at(&mut h, 0) {
        Ok(()) => Ok(Header::decode(&h)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Ok(Decoded::Invalid("shorter than a header"))
        }
        Err(e) => Err(e),
    }
}

/// Reads the envelope bytes of the message `h` in `f`; with `verify`, also reads the body and
/// checks the payload checksum. `Ok(Err(reason))`: the slot does not hold that message whole.
pub(crate) fn read_payload(
    f: &File,
    h: &Header,
    verify: bool,
) -> io::Result<Result<Vec<u8>, &'static str>> {
    let size = f.metadata()?.len();
    if size < h.body_offset() + h.body_len {
        return Ok(Err("shorter than its header says"));
    }
    let mut json = vec![0u8; h.envelope_len as usize];
    f.read_exact_at(&mut json, HEADER_LEN as u64)?;
    if verify {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&json);
        let mut rest = h.body_len;
        let mut off = h.body_offset();
        let mut buf = vec![0u8; 256 * 1024];
        while rest > 0 {
            let n = usize::try_from(rest).map_or(buf.len(), |r| r.min(buf.len()));
            f.read_exact_at(&mut buf[..n], off)?;
            hasher.update(&buf[..n]);
            off += n as u64;
            rest -= n as u64;
        }
        if hasher.finalize() != h.payload_crc {
            return Ok(Err("payload checksum mismatch"));
        }
    }
    Ok(Ok(json))
}

/// Slot numbers are file names in `slots/`.
pub(crate) fn parse_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            id: QueueId::generate(),
            envelope_len: 123,
            body_len: 456_789,
            payload_crc: 0xdead_beef,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        assert_eq!(Header::decode(&h.encode()), Decoded::Message(h.clone()));
        let b = Header {
            id: h.id.bounce(12),
            ..h
        };
        assert_eq!(Header::decode(&b.encode()), Decoded::Message(b));
        assert_eq!(Header::decode(&free_marker()), Decoded::Free);
        assert!(matches!(
            Header::decode(&[0u8; HEADER_LEN]),
            Decoded::Invalid(_)
        ));
    }

    #[test]
    fn any_flipped_header_bit_is_rejected() {
        let enc = header().encode();
        for i in 8..HEADER_LEN {
            for bit in 0..8 {
                let mut h = enc;
                h[i] ^= 1 << bit;
                assert!(
                    matches!(Header::decode(&h), Decoded::Invalid(_)),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn slot_names() {
        assert_eq!(parse_name(Path::new("/x/slots/17")), Some(17));
        assert_eq!(parse_name(Path::new("/x/slots/17.tmp")), None);
        assert_eq!(parse_name(Path::new("/x/slots/")), None);
    }
}
