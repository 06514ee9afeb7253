//! EHLO capabilities (RFC 5321 §4.1.1.1 and the extension RFCs).

use std::borrow::Cow;

use crate::reply::Reply;
use crate::status::ReplyCode;

/// The service extensions a server advertises in its EHLO reply.
///
/// Build one from a server's reply with [`Capabilities::from_ehlo`], or describe your own and
/// turn it into the reply with [`Capabilities::encode_ehlo`].
///
/// ```
/// use postern_smtp::{Capabilities, Reply};
///
/// let wire = b"250-smtp.office365.com Hello [192.0.2.1]\r\n250-SIZE 157286400\r\n\
///     250-PIPELINING\r\n250-AUTH LOGIN XOAUTH2\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n";
/// let (reply, _) = Reply::decode(wire).unwrap();
/// let caps = Capabilities::from_ehlo(&reply);
/// assert_eq!(caps.size, Some(157286400));
/// assert!(caps.pipelining && caps.starttls && caps.smtputf8);
/// assert!(caps.supports_auth("xoauth2"));
/// assert_eq!(caps.domain, "smtp.office365.com");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// The server's name: the first word of the first line.
    pub domain: String,
    /// The rest of the first line (the greeting).
    pub greeting: String,
    /// `SIZE [n]` (RFC 1870). `None`: not advertised; `Some(0)`: advertised without a fixed
    /// limit.
    pub size: Option<u64>,
    /// `AUTH` mechanisms (RFC 4954), upper-cased and deduplicated; the legacy `AUTH=` form is
    /// merged in.
    pub auth: Vec<String>,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `8BITMIME` (RFC 6152).
    pub eightbitmime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `CHUNKING` (RFC 3030).
    pub chunking: bool,
    /// `BINARYMIME` (RFC 3030).
    pub binarymime: bool,
    /// `DSN` (RFC 3461).
    pub dsn: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhancedstatuscodes: bool,
    /// Every other extension: keyword (upper-cased) and its parameters, as advertised.
    pub other: Vec<(String, Vec<String>)>,
}

impl Capabilities {
    /// Reads the capabilities from an EHLO reply. A single-line reply (or a HELO reply)
    /// gives an empty set with just the domain and greeting. Unparseable `SIZE` values are
    /// kept in [`Capabilities::other`].
    pub fn from_ehlo(reply: &Reply<'_>) -> Self {
        let mut caps = Self::default();
        let mut lines = reply.lines().iter();
        if let Some(first) = lines.next() {
            let first = first.trim();
            match first.split_once(' ') {
                Some((d, g)) => {
                    caps.domain = d.to_owned();
                    caps.greeting = g.trim_start().to_owned();
                }
                None => caps.domain = first.to_owned(),
            }
        }
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let mut keyword = keyword.to_ascii_uppercase();
            let mut args: Vec<String> = words.map(str::to_owned).collect();
            if let Some(rest) = keyword.strip_prefix("AUTH=") {
                // Legacy form: `AUTH=LOGIN PLAIN`.
                let first = rest.to_owned();
                args.insert(0, first);
                keyword = "AUTH".to_owned();
            }
            match keyword.as_str() {
                "SIZE" => match args.first().map(|a| a.parse::<u64>()) {
                    None => caps.size = Some(0),
                    Some(Ok(n)) => caps.size = Some(n),
                    Some(Err(_)) => caps.other.push((keyword, args)),
                },
                "AUTH" => {
                    for mech in args {
                        let mech = mech.to_ascii_uppercase();
                        if !mech.is_empty() && !caps.auth.contains(&mech) {
                            caps.auth.push(mech);
                        }
                    }
                }
                "STARTTLS" => caps.starttls = true,
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "CHUNKING" => caps.chunking = true,
                "BINARYMIME" => caps.binarymime = true,
                "DSN" => caps.dsn = true,
                "ENHANCEDSTATUSCODES" => caps.enhancedstatuscodes = true,
                _ => caps.other.push((keyword, args)),
            }
        }
        caps
    }

    /// Builds the `250` EHLO reply advertising these capabilities: `domain greet` on the
    /// first line, then one extension per line. [`Capabilities::domain`] and
    /// [`Capabilities::greeting`] are not used.
    pub fn encode_ehlo(&self, domain: &str, greet: &str) -> Reply<'static> {
        let first = if greet.is_empty() {
            domain.to_owned()
        } else {
            format!("{domain} {greet}")
        };
        let mut lines: Vec<Cow<'static, str>> = vec![Cow::Owned(first)];
        let mut flag = |on: bool, name: &'static str| {
            if on {
                lines.push(Cow::Borrowed(name));
            }
        };
        flag(self.pipelining, "PIPELINING");
        flag(self.eightbitmime, "8BITMIME");
        flag(self.enhancedstatuscodes, "ENHANCEDSTATUSCODES");
        flag(self.dsn, "DSN");
        flag(self.smtputf8, "SMTPUTF8");
        flag(self.chunking, "CHUNKING");
        flag(self.binarymime, "BINARYMIME");
        flag(self.starttls, "STARTTLS");
        match self.size {
            None => {}
            Some(0) => lines.push(Cow::Borrowed("SIZE")),
            Some(n) => lines.push(Cow::Owned(format!("SIZE {n}"))),
        }
        if !self.auth.is_empty() {
            lines.push(Cow::Owned(format!("AUTH {}", self.auth.join(" "))));
        }
        for (k, args) in &self.other {
            if args.is_empty() {
                lines.push(Cow::Owned(k.clone()));
            } else {
                lines.push(Cow::Owned(format!("{k} {}", args.join(" "))));
            }
        }
        Reply::with_lines(ReplyCode::OK, None, lines)
    }

    /// Whether `mechanism` (any case) is advertised.
    pub fn supports_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// Whether `keyword` (any case) is advertised, known or not.
    pub fn has(&self, keyword: &str) -> bool {
        let k = keyword.to_ascii_uppercase();
        match k.as_str() {
            "SIZE" => self.size.is_some(),
            "AUTH" => !self.auth.is_empty(),
            "STARTTLS" => self.starttls,
            "PIPELINING" => self.pipelining,
            "8BITMIME" => self.eightbitmime,
            "SMTPUTF8" => self.smtputf8,
            "CHUNKING" => self.chunking,
            "BINARYMIME" => self.binarymime,
            "DSN" => self.dsn,
            "ENHANCEDSTATUSCODES" => self.enhancedstatuscodes,
            _ => self.other.iter().any(|(o, _)| *o == k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(wire: &[u8]) -> Capabilities {
        Capabilities::from_ehlo(&Reply::decode(wire).unwrap().0)
    }

    #[test]
    fn exchange_online_submission() {
        // smtp.office365.com:587 before STARTTLS.
        let c = caps(
            b"250-MN2PR00CA0001.outlook.office365.com Hello [203.0.113.7]\r\n\
              250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n\
              250-STARTTLS\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
        );
        assert!(c.starttls && c.pipelining && c.dsn && c.enhancedstatuscodes);
        assert!(c.eightbitmime && c.binarymime && c.chunking && c.smtputf8);
        assert!(c.auth.is_empty());
        assert_eq!(c.greeting, "Hello [203.0.113.7]");
    }

    #[test]
    fn legacy_auth_and_unknown() {
        let c = caps(
            b"250-mx.example.com\r\n250-AUTH=LOGIN PLAIN\r\n250-AUTH login CRAM-MD5\r\n\
              250-SIZE\r\n250-X-EXPS GSSAPI NTLM\r\n250 XCLIENT NAME ADDR\r\n",
        );
        assert_eq!(c.auth, ["LOGIN", "PLAIN", "CRAM-MD5"]);
        assert_eq!(c.size, Some(0));
        assert_eq!(
            c.other[0],
            ("X-EXPS".into(), vec!["GSSAPI".into(), "NTLM".into()])
        );
        assert!(c.has("xclient"));
        assert!(!c.has("starttls"));
    }

    #[test]
    fn helo_reply_is_empty() {
        let c = caps(b"250 mx.example.com\r\n");
        assert_eq!(c.domain, "mx.example.com");
        assert!(!c.pipelining && c.size.is_none());
    }

    proptest::proptest! {
        #[test]
        fn encode_then_from_ehlo_is_identity(
            flags in proptest::collection::vec(proptest::bool::ANY, 9),
            size in proptest::option::of(0u64..u64::MAX),
            auth in proptest::collection::vec("[A-Z][A-Z0-9_-]{0,10}", 0..4),
            other in proptest::collection::vec(("X-[A-Z0-9]{1,8}", proptest::collection::vec("[!-~]{1,8}", 0..3)), 0..3),
        ) {
            let mut auth_dedup: Vec<String> = Vec::new();
            for a in auth {
                if !auth_dedup.contains(&a) {
                    auth_dedup.push(a);
                }
            }
            let c = Capabilities {
                domain: "relay.example".into(),
                greeting: "hi there".into(),
                size,
                auth: auth_dedup,
                starttls: flags[0],
                pipelining: flags[1],
                eightbitmime: flags[2],
                smtputf8: flags[3],
                chunking: flags[4],
                binarymime: flags[5],
                dsn: flags[6],
                enhancedstatuscodes: flags[7],
                other,
            };
            let wire = c.encode_ehlo("relay.example", "hi there").to_bytes();
            let back = caps(&wire);
            proptest::prop_assert_eq!(back, c);
        }
    }

    #[test]
    fn round_trip() {
        let c = Capabilities {
            size: Some(35_882_577),
            auth: vec!["PLAIN".into(), "LOGIN".into()],
            starttls: true,
            pipelining: true,
            chunking: true,
            other: vec![("X-FOO".into(), vec!["a".into()])],
            ..Capabilities::default()
        };
        let reply = c.encode_ehlo("relay.contoso.com", "at your service");
        let wire = reply.to_bytes();
        let back = caps(&wire);
        let mut expected = c.clone();
        expected.domain = "relay.contoso.com".into();
        expected.greeting = "at your service".into();
        assert_eq!(back, expected);
    }
}
