//! Shared machinery of the SMTP simulators: the connection (plain or TLS), line and DATA
//! reading, Exchange-style host names, dates and reply trailers, and small parsers.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use postern_smtp::{DecodeError, ParseOptions, decode_line};

use crate::fault::Faults;
use crate::tls::CertNames;

/// Longest command line accepted (RFC 5321 says 512; Exchange tolerates more, e.g. long
/// XOAUTH2 initial responses).
pub(crate) const MAX_COMMAND_LINE: usize = 64 * 1024;

/// Exchange-style server names that stay the same for one simulator instance.
#[derive(Clone, Debug)]
pub(crate) struct HostNames {
    /// e.g. `SY5P282CA0097`.
    pub(crate) frontend: String,
    /// e.g. `SY5P282`.
    pub(crate) region: String,
    /// e.g. `SYBP282MB2635`.
    pub(crate) mailbox_server: String,
    /// The domain after the frontend name in greetings, e.g. `outlook.office365.com`.
    pub(crate) domain: String,
}

impl HostNames {
    pub(crate) fn random(domain: &str) -> Self {
        let mut rng = rand::rng();
        const SITES: [&str; 6] = ["SY", "PA", "AM", "BY", "MN", "CP"];
        let site = SITES[rng.random_range(0..SITES.len())];
        let n: u8 = rng.random_range(1..9);
        let p: u16 = rng.random_range(100..999);
        let region = format!("{site}{n}P{p}");
        Self {
            frontend: format!("{region}CA{:04}", rng.random_range(0..10_000)),
            mailbox_server: format!("{site}BP{p}MB{:04}", rng.random_range(0..10_000)),
            region,
            domain: domain.to_owned(),
        }
    }

    /// `SY5P282CA0097.outlook.office365.com`.
    pub(crate) fn greeting_host(&self) -> String {
        format!("{}.{}", self.frontend, self.domain)
    }

    /// `[SY5P282CA0097.SY5P282.PROD.OUTLOOK.COM 2026-03-05T11:41:09.483Z 08DE7A509B86EADD]`.
    pub(crate) fn trailer(&self) -> String {
        format!(
            "[{}.{}.PROD.OUTLOOK.COM {} {}]",
            self.frontend,
            self.region,
            iso_now(),
            hex16()
        )
    }

    /// `[Hostname=SYBP282MB2635.AUSP282.PROD.OUTLOOK.COM]`.
    pub(crate) fn hostname_tag(&self) -> String {
        format!(
            "[Hostname={}.{}.PROD.OUTLOOK.COM]",
            self.mailbox_server, self.region
        )
    }
}

/// `Sun, 23 Nov 2025 11:12:20 +0000`.
pub(crate) fn rfc5322_now() -> String {
    let fmt = format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    OffsetDateTime::now_utc()
        .format(fmt)
        .unwrap_or_else(|_| String::from("Thu, 1 Jan 1970 00:00:00 +0000"))
}

/// `2026-03-05T11:41:09.483Z`.
pub(crate) fn iso_now() -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::now_utc()
        .format(fmt)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

/// 16 upper-case hex digits.
pub(crate) fn hex16() -> String {
    format!("{:016X}", rand::rng().random::<u64>())
}

/// The bracketed client address of `Hello [<ip>]`.
pub(crate) fn bracket_ip(addr: SocketAddr) -> String {
    format!("[{}]", addr.ip())
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What [`Conn::read_data`] got.
pub(crate) struct Data {
    /// The un-dot-stuffed content, up to the keep limit.
    pub(crate) bytes: Vec<u8>,
    /// The total content size, including what was not kept.
    pub(crate) size: usize,
}

/// One SMTP connection, plain or after STARTTLS.
pub(crate) struct Conn {
    io: Option<Io>,
    buf: Vec<u8>,
    pub(crate) peer: SocketAddr,
    pub(crate) client_cert: Option<CertNames>,
    faults: Arc<Faults>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, faults: Arc<Faults>) -> Self {
        Self {
            io: Some(Io::Plain(stream)),
            buf: Vec::new(),
            peer,
            client_cert: None,
            faults,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.io, Some(Io::Tls(_)))
    }

    /// The bytes received and not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` buffered bytes (a decoded command line).
    pub(crate) fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// Reads more bytes into the buffer; `Ok(0)` when the peer closed.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = match self.io.as_mut() {
            Some(Io::Plain(s)) => s.read(&mut chunk).await?,
            Some(Io::Tls(s)) => s.read(&mut chunk).await?,
            None => 0,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Writes `text` (one or more lines joined by CRLF) plus a final CRLF, after the
    /// configured reply delay.
    pub(crate) async fn send(&mut self, text: &str) -> io::Result<()> {
        let delay = self.faults.reply_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut out = Vec::with_capacity(text.len() + 2);
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
        match self.io.as_mut() {
            Some(Io::Plain(s)) => {
                s.write_all(&out).await?;
                s.flush().await
            }
            Some(Io::Tls(s)) => {
                s.write_all(&out).await?;
                s.flush().await
            }
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Reads one line that is not a command (a SASL response), without its line ending;
    /// `Ok(None)` when the peer closed first. A line the codec refuses (a bare CR inside) is
    /// passed on as it is, for the SASL decoder to refuse.
    pub(crate) async fn read_line(&mut self, opts: &ParseOptions) -> io::Result<Option<Vec<u8>>> {
        loop {
            match decode_line(&self.buf, opts) {
                Ok((line, used)) => {
                    let line = line.to_vec();
                    self.consume(used);
                    return Ok(Some(line));
                }
                Err(DecodeError::Invalid { consumed, .. }) => {
                    let line: Vec<u8> = self.buf.drain(..consumed).collect();
                    let end = line.len() - usize::from(line.ends_with(b"\r\n")) - 1;
                    return Ok(Some(line[..end].to_vec()));
                }
                Err(DecodeError::TooLong { .. }) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "command line too long",
                    ));
                }
                Err(_) => {
                    if self.fill().await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Reads DATA content up to `CRLF.CRLF` (only that sequence ends it: bare LF or CR never
    /// does), un-dot-stuffs it, and keeps at most `keep` bytes. `drop_after_first_chunk`
    /// closes the connection once some content has arrived (fault injection). `Ok(None)` when
    /// the peer closed first.
    pub(crate) async fn read_data(
        &mut self,
        keep: usize,
        drop_after_first_chunk: bool,
    ) -> io::Result<Option<Data>> {
        let mut bytes = Vec::new();
        let mut size = 0usize;
        let mut start = 0usize; // scan position in buf for the next CRLF
        let mut at_line_start = true;
        let keep_content = |content: &[u8], bytes: &mut Vec<u8>, size: &mut usize| {
            *size += content.len();
            if bytes.len() < keep {
                let room = keep - bytes.len();
                bytes.extend_from_slice(&content[..content.len().min(room)]);
            }
        };
        loop {
            while let Some(rel) = find_crlf(&self.buf[start..]) {
                let end = start + rel + 2;
                let line = &self.buf[..end];
                if at_line_start && line == b".\r\n" {
                    self.buf.drain(..end);
                    return Ok(Some(Data { bytes, size }));
                }
                let content = if at_line_start && line.first() == Some(&b'.') {
                    &line[1..]
                } else {
                    line
                };
                keep_content(content, &mut bytes, &mut size);
                self.buf.drain(..end);
                start = 0;
                at_line_start = true;
            }
            start = self.buf.len().saturating_sub(1);
            if self.buf.len() > 1024 * 1024 {
                // A very long line: take all but its last byte (which may be the CR of the
                // CRLF) and keep scanning.
                let take = self.buf.len() - 1;
                let part: Vec<u8> = self.buf.drain(..take).collect();
                let content = if at_line_start && part.first() == Some(&b'.') {
                    &part[1..]
                } else {
                    &part[..]
                };
                keep_content(content, &mut bytes, &mut size);
                at_line_start = false;
                start = 0;
            }
            if drop_after_first_chunk && (size > 0 || !self.buf.is_empty()) {
                self.close().await;
                return Ok(None);
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads exactly `n` bytes (a BDAT chunk), keeping at most `keep` of them.
    pub(crate) async fn read_chunk(
        &mut self,
        n: usize,
        keep: usize,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut remaining = n;
        loop {
            let take = remaining.min(self.buf.len());
            let part: Vec<u8> = self.buf.drain(..take).collect();
            if out.len() < keep {
                let room = keep - out.len();
                out.extend_from_slice(&part[..part.len().min(room)]);
            }
            remaining -= take;
            if remaining == 0 {
                return Ok(Some(out));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Upgrades to TLS. Bytes the client pipelined after `STARTTLS` are discarded, as a
    /// careful server must (no plaintext injection into the TLS session).
    pub(crate) async fn starttls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        self.buf.clear();
        let Some(Io::Plain(stream)) = self.io.take() else {
            return Err(io::Error::other("not a plain connection"));
        };
        let tls = TlsAcceptor::from(config).accept(stream).await?;
        self.client_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|c| CertNames::parse(c));
        self.io = Some(Io::Tls(Box::new(tls)));
        Ok(())
    }

    /// Closes the connection (best effort).
    pub(crate) async fn close(&mut self) {
        match self.io.take() {
            Some(Io::Plain(mut s)) => {
                let _ = s.shutdown().await;
            }
            Some(Io::Tls(mut s)) => {
                let _ = s.shutdown().await;
            }
            None => {}
        }
    }

    /// Holds the connection open without answering, for `d` (hang faults).
    pub(crate) async fn hang(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

fn find_crlf(haystack: &[u8]) -> Option<usize> {
    haystack.windows(2).position(|w| w == b"\r\n")
}

/// The domain of an address, lower-cased.
pub(crate) fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The unfolded values of every header named `name` in the header block of `message`.
pub(crate) fn header_values(message: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let mut values = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some(v) = current.take() {
            values.push(v);
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            current = Some(v.trim().to_owned());
        }
    }
    if let Some(v) = current {
        values.push(v);
    }
    values
}

/// The addresses in an address-list header value: `<...>` parts, or bare `x@y` words.
pub(crate) fn addresses_in(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Drop quoted display names, which may hold '@' or ','.
    let mut cleaned = String::new();
    let mut in_quote = false;
    for c in value.chars() {
        match c {
            '"' => in_quote = !in_quote,
            _ if in_quote => {}
            _ => cleaned.push(c),
        }
    }
    for part in cleaned.split(',') {
        if let (Some(open), Some(close)) = (part.find('<'), part.rfind('>'))
            && open < close
        {
            out.push(part[open + 1..close].trim().to_owned());
            continue;
        }
        for word in part.split_whitespace() {
            if word.contains('@') {
                out.push(word.trim_matches(|c| c == '(' || c == ')').to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let msg = b"From: \"Doe, J\" <j@contoso.com>\r\nTo: a@x.com,\r\n b@y.com\r\n\r\nFrom: no@body.com\r\n";
        let from = header_values(msg, "from");
        assert_eq!(from.len(), 1);
        assert_eq!(addresses_in(&from[0]), ["j@contoso.com"]);
        assert_eq!(
            addresses_in(&header_values(msg, "To")[0]),
            ["a@x.com", "b@y.com"]
        );
    }

    #[test]
    fn names_have_exchange_shape() {
        let h = HostNames::random("outlook.office365.com");
        assert!(h.greeting_host().ends_with(".outlook.office365.com"));
        let t = h.trailer();
        assert!(t.starts_with('[') && t.ends_with(']'));
        let id = t.trim_end_matches(']').rsplit(' ').next().expect("id");
        assert_eq!(id.len(), 16);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        let date = rfc5322_now();
        assert!(date.ends_with(" +0000"), "{date}");
    }
}
