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

/// What [`Conn::read_line`] got.
pub(crate) enum Line {
    /// A line without its CRLF (or LF).
    Text(String),
    /// The peer closed the connection.
    Eof,
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

    async fn read_some(&mut self) -> io::Result<usize> {
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

    /// Reads one command line (terminated by CRLF or a bare LF).
    pub(crate) async fn read_line(&mut self) -> io::Result<Line> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Line::Text(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.buf.len() > MAX_COMMAND_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "command line too long",
                ));
            }
            if self.read_some().await? == 0 {
                return Ok(Line::Eof);
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
            if self.read_some().await? == 0 {
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
            if self.read_some().await? == 0 {
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

/// Splits `VERB rest` (verb upper-cased).
pub(crate) fn split_command(line: &str) -> (String, &str) {
    let line = line.trim_end();
    match line.split_once(' ') {
        Some((verb, rest)) => (verb.to_ascii_uppercase(), rest.trim_start()),
        None => (line.to_ascii_uppercase(), ""),
    }
}

/// A parsed `MAIL FROM:` / `RCPT TO:` argument.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PathArg {
    /// The address without brackets (empty for `<>`).
    pub(crate) address: String,
    /// `KEY=value` or `KEY` parameters, keys upper-cased.
    pub(crate) params: Vec<(String, Option<String>)>,
}

/// Parses `FROM:<a@b> SIZE=10` after the verb, given the keyword (`FROM` or `TO`).
pub(crate) fn parse_path(rest: &str, keyword: &str) -> Option<PathArg> {
    let (kw, after) = rest.split_once(':')?;
    if !kw.trim().eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = after.trim_start();
    let (address, params) = if let Some(inner) = after.strip_prefix('<') {
        let close = inner.find('>')?;
        (&inner[..close], &inner[close + 1..])
    } else {
        match after.split_once(' ') {
            Some((a, p)) => (a, p),
            None => (after, ""),
        }
    };
    // Source routes (`@a,@b:user@host`) are ignored per RFC 5321 §4.1.1.3.
    let address = match address.rsplit_once(':') {
        Some((route, addr)) if route.starts_with('@') => addr,
        _ => address,
    };
    if address
        .chars()
        .any(|c| c.is_whitespace() || c == '<' || c == '>')
    {
        return None;
    }
    let params = params
        .split_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v.to_owned())),
            None => (p.to_ascii_uppercase(), None),
        })
        .collect();
    Some(PathArg {
        address: address.to_owned(),
        params,
    })
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
    fn paths_and_headers() {
        let p = parse_path("FROM:<a@b.com> SIZE=100 BODY=8BITMIME", "FROM").expect("path");
        assert_eq!(p.address, "a@b.com");
        assert_eq!(p.params[0], ("SIZE".into(), Some("100".into())));
        assert_eq!(parse_path("from: <>", "FROM").expect("null").address, "");
        assert_eq!(
            parse_path("TO:<@relay:x@y.com>", "TO")
                .expect("route")
                .address,
            "x@y.com"
        );
        assert!(parse_path("TO:<a b@c>", "TO").is_none());
        assert!(parse_path("FROM:<a@b>", "TO").is_none());
        let msg = b"From: \"Doe, J\" <j@contoso.com>\r\nTo: a@x.com,\r\n b@y.com\r\n\r\nFrom: no@body.com\r\n";
        let from = header_values(msg, "from");
        assert_eq!(from.len(), 1);
        assert_eq!(addresses_in(&from[0]), ["j@contoso.com"]);
        assert_eq!(
            addresses_in(&header_values(msg, "To")[0]),
            ["a@x.com", "b@y.com"]
        );
        assert_eq!(split_command("mail FROM:<a>"), ("MAIL".into(), "FROM:<a>"));
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
