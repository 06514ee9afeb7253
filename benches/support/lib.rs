//! Sample data shared by Postern's benchmarks.
//!
//! Benchmarks need realistic input: a message of a given size with the headers and line
//! lengths that scanners and monitoring tools produce.
//!
//! ```
//! let msg = postern_benches::message(10 * 1024);
//! assert!(msg.len() >= 10 * 1024);
//! assert!(msg.ends_with(b"\r\n"));
//! ```
#![forbid(unsafe_code)]

/// Builds an RFC 5322 message of at least `size` bytes: a short header block and a body of
/// 76-character base64-like lines, every line ending in CRLF, some lines starting with a dot
/// (so dot-stuffing is exercised).
pub fn message(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(
        b"From: Scanner <scanner@contoso.com>\r\n\
          To: Reception <reception@contoso.com>\r\n\
          Subject: Scanned document\r\n\
          Message-ID: <bench.1@scanner.contoso.com>\r\n\
          Date: Sun, 22 Nov 2026 14:00:00 +0000\r\n\
          MIME-Version: 1.0\r\n\
          Content-Type: application/pdf\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n",
    );
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut line = 0usize;
    while out.len() < size {
        if line.is_multiple_of(97) {
            out.push(b'.');
        }
        for i in 0..76 {
            out.push(ALPHABET[(line * 31 + i * 7) % ALPHABET.len()]);
        }
        out.extend_from_slice(b"\r\n");
        line += 1;
    }
    out
}
