//! SPF (RFC 7208): a sans-IO record parser and a `check_host()` evaluator over a DNS seam.
//!
//! ```text
//!  TXT bytes ──▶ SpfRecord::decode ──▶ SpfRecord { directives, redirect, exp }
//!  (ip, domain, sender) + impl SpfDns ──▶ check_host ──▶ SpfOutcome { result, lookups, ... }
//! ```
//!
//! The parser reads untrusted bytes (anyone's DNS) and never panics on them; it is fuzzed
//! (`fuzz/fuzz_targets/spf_record.rs`). The evaluator enforces the RFC 7208 section 4.6.4
//! limits: at most [`MAX_DNS_LOOKUPS`] terms that cause DNS lookups (`include`, `a`, `mx`,
//! `ptr`, `exists`, `redirect`), at most [`MAX_VOID_LOOKUPS`] lookups that return nothing, and
//! at most [`MAX_MX_NAMES`] exchanges per `mx` term; past any of them the result is
//! `permerror`.
//!
//! Not implemented: `ptr` never matches (RFC 7208 section 5.5 says it SHOULD NOT be published;
//! it still counts against the lookup limit), and the `exp` explanation is parsed but not
//! fetched.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;

use serde::Serialize;

use crate::Error;

/// The longest record [`SpfRecord::decode`] accepts. RFC 7208 sets no limit, but a record over
/// 512 bytes already risks UDP truncation (section 3.4); 4 KiB leaves room for odd ones.
pub const MAX_RECORD_LENGTH: usize = 4096;
/// Terms that cause DNS lookups allowed per evaluation (RFC 7208 section 4.6.4).
pub const MAX_DNS_LOOKUPS: u32 = 10;
/// Lookups returning no answer (NXDOMAIN or no data) allowed per evaluation.
pub const MAX_VOID_LOOKUPS: u32 = 2;
/// Exchanges looked at per `mx` term.
pub const MAX_MX_NAMES: usize = 10;

/// Why a TXT string is not a valid SPF record. Every variant makes `check_host()` return
/// `permerror` (RFC 7208 section 4.6).
///
/// There is no "incomplete" variant: a TXT record always arrives whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record is longer than [`MAX_RECORD_LENGTH`].
    #[error("record is {len} bytes, more than the {MAX_RECORD_LENGTH} accepted")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The record does not start with `v=spf1` followed by a space or its end.
    #[error("not an SPF record (no v=spf1)")]
    NotSpf,
    /// The record holds bytes outside printable ASCII and space.
    #[error("record holds characters outside printable ASCII")]
    NotAscii,
    /// A mechanism name not defined by RFC 7208.
    #[error("unknown mechanism {0:?}")]
    UnknownMechanism(String),
    /// A term that does not follow the grammar.
    #[error("invalid term {term:?}: {reason}")]
    InvalidTerm {
        /// The term as written.
        term: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `redirect=` or `exp=` given twice.
    #[error("modifier {0:?} appears more than once")]
    DuplicateModifier(String),
}

/// The qualifier in front of a mechanism: the result when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(clippy::exhaustive_enums)] // RFC 7208 section 4.6.2 defines exactly these four.
pub enum Qualifier {
    /// `+` (the default).
    Pass,
    /// `-`.
    Fail,
    /// `~`.
    SoftFail,
    /// `?`.
    Neutral,
}

/// A mechanism (RFC 7208 section 5). Domain specs are kept as written (they may hold macros).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "mechanism", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mechanism {
    /// `all`.
    All,
    /// `include:<domain-spec>`.
    Include {
        /// The domain whose record is evaluated.
        domain: String,
    },
    /// `a[:<domain-spec>][/<cidr4>][//<cidr6>]`.
    A {
        /// The domain, or `None` for the current one.
        domain: Option<String>,
        /// IPv4 prefix length (32 when absent).
        cidr4: u8,
        /// IPv6 prefix length (128 when absent).
        cidr6: u8,
    },
    /// `mx[:<domain-spec>][/<cidr4>][//<cidr6>]`.
    Mx {
        /// The domain, or `None` for the current one.
        domain: Option<String>,
        /// IPv4 prefix length (32 when absent).
        cidr4: u8,
        /// IPv6 prefix length (128 when absent).
        cidr6: u8,
    },
    /// `ptr[:<domain-spec>]` (deprecated; never matches here).
    Ptr {
        /// The domain, or `None` for the current one.
        domain: Option<String>,
    },
    /// `ip4:<address>[/<prefix>]`.
    Ip4 {
        /// The network address.
        addr: Ipv4Addr,
        /// Prefix length, 0 to 32.
        prefix: u8,
    },
    /// `ip6:<address>[/<prefix>]`.
    Ip6 {
        /// The network address.
        addr: Ipv6Addr,
        /// Prefix length, 0 to 128.
        prefix: u8,
    },
    /// `exists:<domain-spec>`.
    Exists {
        /// The name whose A record is tested.
        domain: String,
    },
}

impl Mechanism {
    /// True for the mechanisms that count against [`MAX_DNS_LOOKUPS`].
    pub fn causes_lookup(&self) -> bool {
        matches!(
            self,
            Self::Include { .. }
                | Self::A { .. }
                | Self::Mx { .. }
                | Self::Ptr { .. }
                | Self::Exists { .. }
        )
    }
}

/// A qualifier and a mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Directive {
    /// The result if the mechanism matches.
    pub qualifier: Qualifier,
    /// What is tested.
    #[serde(flatten)]
    pub mechanism: Mechanism,
}

/// A parsed SPF record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SpfRecord {
    /// The directives, in evaluation order.
    pub directives: Vec<Directive>,
    /// `redirect=` target, if any.
    pub redirect: Option<String>,
    /// `exp=` target, if any.
    pub explanation: Option<String>,
    /// Modifiers this crate does not know, as `(name, value)`; ignored per RFC 7208 6.
    pub unknown_modifiers: Vec<(String, String)>,
}

/// True when a TXT string is an SPF record: `v=spf1` alone or followed by a space
/// (case-insensitive). Other TXT records at the same name are not SPF and are skipped.
pub fn is_spf_record(txt: &[u8]) -> bool {
    txt.len() >= 6 && txt[..6].eq_ignore_ascii_case(b"v=spf1") && (txt.len() == 6 || txt[6] == b' ')
}

impl SpfRecord {
    /// Parses a whole SPF record (the concatenated TXT strings). Returns the record and the
    /// number of bytes used (always the whole input: the record is one unit).
    ///
    /// ```
    /// use postern_mx::spf::{SpfRecord, Mechanism};
    /// let (rec, used) = SpfRecord::decode(b"v=spf1 ip4:192.0.2.0/24 include:spf.protection.outlook.com -all").unwrap();
    /// assert_eq!(used, 63);
    /// assert!(matches!(rec.directives[1].mechanism, Mechanism::Include { .. }));
    /// ```
    ///
    /// # Errors
    /// A [`DecodeError`] for anything RFC 7208 calls a syntax error.
    pub fn decode(input: &[u8]) -> Result<(Self, usize), DecodeError> {
        if input.len() > MAX_RECORD_LENGTH {
            return Err(DecodeError::TooLong { len: input.len() });
        }
        if !is_spf_record(input) {
            return Err(DecodeError::NotSpf);
        }
        if !input.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err(DecodeError::NotAscii);
        }
        // Checked above: printable ASCII is UTF-8.
        let text = std::str::from_utf8(input).map_err(|_| DecodeError::NotAscii)?;
        let mut record = Self::default();
        for term in text[6..].split(' ').filter(|t| !t.is_empty()) {
            record.push_term(term)?;
        }
        Ok((record, input.len()))
    }

    /// [`decode`](Self::decode) for a string.
    ///
    /// # Errors
    /// As for `decode`.
    pub fn parse(text: &str) -> Result<Self, DecodeError> {
        Self::decode(text.as_bytes()).map(|(r, _)| r)
    }

    /// True when an `all` mechanism is present (then `redirect=` is ignored).
    pub fn has_all(&self) -> bool {
        self.directives
            .iter()
            .any(|d| d.mechanism == Mechanism::All)
    }

    /// The `include:` targets, in order.
    pub fn includes(&self) -> impl Iterator<Item = &str> {
        self.directives.iter().filter_map(|d| match &d.mechanism {
            Mechanism::Include { domain } => Some(domain.as_str()),
            _ => None,
        })
    }

    fn push_term(&mut self, term: &str) -> Result<(), DecodeError> {
        let invalid = |reason| DecodeError::InvalidTerm {
            term: term.to_owned(),
            reason,
        };
        // Modifier: name "=" macro-string, where name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ).
        if let Some((name, value)) = term.split_once('=') {
            let is_name = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if is_name {
                validate_macro_string(value).map_err(invalid)?;
                let lower = name.to_ascii_lowercase();
                let slot = match lower.as_str() {
                    "redirect" => &mut self.redirect,
                    "exp" => &mut self.explanation,
                    _ => {
                        self.unknown_modifiers.push((lower, value.to_owned()));
                        return Ok(());
                    }
                };
                if slot.is_some() {
                    return Err(DecodeError::DuplicateModifier(lower));
                }
                if value.is_empty() {
                    return Err(invalid("empty domain"));
                }
                *slot = Some(value.to_owned());
                return Ok(());
            }
        }
        let (qualifier, rest) = match term.as_bytes()[0] {
            b'+' => (Qualifier::Pass, &term[1..]),
            b'-' => (Qualifier::Fail, &term[1..]),
            b'~' => (Qualifier::SoftFail, &term[1..]),
            b'?' => (Qualifier::Neutral, &term[1..]),
            _ => (Qualifier::Pass, term),
        };
        let name_end = rest.find([':', '/']).unwrap_or(rest.len());
        let (name, args) = rest.split_at(name_end);
        let mechanism = match name.to_ascii_lowercase().as_str() {
            "all" => {
                if !args.is_empty() {
                    return Err(invalid("all takes no argument"));
                }
                Mechanism::All
            }
            "include" => Mechanism::Include {
                domain: required_domain(args).map_err(invalid)?,
            },
            "exists" => Mechanism::Exists {
                domain: required_domain(args).map_err(invalid)?,
            },
            "a" | "mx" => {
                let (domain, cidr4, cidr6) = domain_and_cidr(args).map_err(invalid)?;
                if name.eq_ignore_ascii_case("a") {
                    Mechanism::A {
                        domain,
                        cidr4,
                        cidr6,
                    }
                } else {
                    Mechanism::Mx {
                        domain,
                        cidr4,
                        cidr6,
                    }
                }
            }
            "ptr" => {
                let domain = match args.strip_prefix(':') {
                    Some(d) => {
                        validate_domain_spec(d).map_err(invalid)?;
                        Some(d.to_owned())
                    }
                    None if args.is_empty() => None,
                    None => return Err(invalid("ptr takes only a domain")),
                };
                Mechanism::Ptr { domain }
            }
            "ip4" => {
                let value = args
                    .strip_prefix(':')
                    .ok_or_else(|| invalid("ip4 needs an address"))?;
                let (addr, prefix) = split_prefix(value, 32).map_err(invalid)?;
                let addr = addr
                    .parse::<Ipv4Addr>()
                    .map_err(|_| invalid("bad IPv4 address"))?;
                Mechanism::Ip4 { addr, prefix }
            }
            "ip6" => {
                let value = args
                    .strip_prefix(':')
                    .ok_or_else(|| invalid("ip6 needs an address"))?;
                let (addr, prefix) = split_prefix(value, 128).map_err(invalid)?;
                let addr = addr
                    .parse::<Ipv6Addr>()
                    .map_err(|_| invalid("bad IPv6 address"))?;
                Mechanism::Ip6 { addr, prefix }
            }
            _ => return Err(DecodeError::UnknownMechanism(name.to_owned())),
        };
        self.directives.push(Directive {
            qualifier,
            mechanism,
        });
        Ok(())
    }
}

fn required_domain(args: &str) -> Result<String, &'static str> {
    let domain = args.strip_prefix(':').ok_or("needs :domain")?;
    validate_domain_spec(domain)?;
    Ok(domain.to_owned())
}

/// `value` is `addr` or `addr/prefix`, prefix at most `max`.
fn split_prefix(value: &str, max: u8) -> Result<(&str, u8), &'static str> {
    match value.split_once('/') {
        None => Ok((value, max)),
        Some((addr, len)) => Ok((addr, parse_len(len, max)?)),
    }
}

fn parse_len(len: &str, max: u8) -> Result<u8, &'static str> {
    // RFC 7208: no leading zeros ("0" alone is fine), at most `max`.
    if len.is_empty() || len.len() > 3 || (len.len() > 1 && len.starts_with('0')) {
        return Err("bad prefix length");
    }
    let n: u8 = len.parse().map_err(|_| "bad prefix length")?;
    if n > max {
        Err("prefix length too large")
    } else {
        Ok(n)
    }
}

/// `[:domain-spec][/cidr4][//cidr6]`; the first `/` outside a macro brace starts the cidr.
fn domain_and_cidr(args: &str) -> Result<(Option<String>, u8, u8), &'static str> {
    let mut depth = 0u32;
    let mut split = args.len();
    for (i, c) in args.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => {
                split = i;
                break;
            }
            _ => {}
        }
    }
    let (domain_part, cidr_part) = args.split_at(split);
    let domain = match domain_part.strip_prefix(':') {
        Some(d) => {
            validate_domain_spec(d)?;
            Some(d.to_owned())
        }
        None if domain_part.is_empty() => None,
        None => return Err("unexpected characters after the mechanism name"),
    };
    let (mut cidr4, mut cidr6) = (32, 128);
    if let Some(rest) = cidr_part.strip_prefix("//") {
        cidr6 = parse_len(rest, 128)?;
    } else if let Some(rest) = cidr_part.strip_prefix('/') {
        match rest.split_once("//") {
            Some((v4, v6)) => {
                cidr4 = parse_len(v4, 32)?;
                cidr6 = parse_len(v6, 128)?;
            }
            None => cidr4 = parse_len(rest, 32)?,
        }
    }
    Ok((domain, cidr4, cidr6))
}

fn validate_domain_spec(spec: &str) -> Result<(), &'static str> {
    if spec.is_empty() {
        return Err("empty domain");
    }
    validate_macro_string(spec)
}

/// Checks macro syntax: `%{letter[digits][r][delimiters]}`, `%%`, `%_`, `%-`.
fn validate_macro_string(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'%' | b'_' | b'-') => i += 2,
            Some(b'{') => {
                let close = s[i..].find('}').ok_or("unclosed macro")? + i;
                let body = &b[i + 2..close];
                let (&letter, rest) = body.split_first().ok_or("empty macro")?;
                if !b"slodiphcrtvSLODIPHCRTV".contains(&letter) {
                    return Err("unknown macro letter");
                }
                let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                let mut rest = &rest[digits..];
                if let [b'r' | b'R', tail @ ..] = rest {
                    rest = tail;
                }
                if !rest.iter().all(|c| b".-+,/_=".contains(c)) {
                    return Err("bad macro transformer or delimiter");
                }
                i = close + 1;
            }
            _ => return Err("stray '%'"),
        }
    }
    Ok(())
}

/// The result of `check_host()` (RFC 7208 section 2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(clippy::exhaustive_enums)] // RFC 7208 section 2.6 defines exactly these seven.
pub enum SpfResult {
    /// No SPF record (or the domain does not exist).
    None,
    /// The record makes no assertion (`?` matched, or nothing matched).
    Neutral,
    /// The IP is authorised.
    Pass,
    /// The IP is not authorised (`-`).
    Fail,
    /// Probably not authorised (`~`).
    SoftFail,
    /// A transient DNS error; try again later.
    TempError,
    /// The record is broken or exceeds the limits; needs an admin.
    PermError,
}

impl From<Qualifier> for SpfResult {
    fn from(q: Qualifier) -> Self {
        match q {
            Qualifier::Pass => Self::Pass,
            Qualifier::Fail => Self::Fail,
            Qualifier::SoftFail => Self::SoftFail,
            Qualifier::Neutral => Self::Neutral,
        }
    }
}

/// What an evaluation found, with enough detail for a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SpfOutcome {
    /// The result.
    pub result: SpfResult,
    /// The term that decided it (`include:spf.protection.outlook.com`), if a term did.
    pub matched: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// Terms that caused DNS lookups (the limit is [`MAX_DNS_LOOKUPS`]).
    pub dns_lookups: u32,
    /// Lookups that returned nothing (the limit is [`MAX_VOID_LOOKUPS`]).
    pub void_lookups: u32,
}

/// The DNS queries SPF evaluation needs. [`crate::MxResolver`] implements it; tests may use a
/// map. Negative answers are [`Error::NxDomain`] / [`Error::NoData`]; anything transient
/// becomes `temperror`.
pub trait SpfDns: Sync {
    /// TXT strings at `name`, each record's character-strings concatenated.
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<String>, Error>> + Send;
    /// IPv4 addresses of `name`.
    fn a(&self, name: &str) -> impl Future<Output = Result<Vec<Ipv4Addr>, Error>> + Send;
    /// IPv6 addresses of `name`.
    fn aaaa(&self, name: &str) -> impl Future<Output = Result<Vec<Ipv6Addr>, Error>> + Send;
    /// MX exchanges of `name` (order irrelevant).
    fn mx(&self, name: &str) -> impl Future<Output = Result<Vec<String>, Error>> + Send;
}

/// Evaluates SPF for a client `ip` sending as `sender` (`local@domain`, or empty for the null
/// sender, then `postmaster@<domain>` is used) on behalf of `domain` (RFC 7208 section 4).
pub async fn check_host<D: SpfDns>(dns: &D, ip: IpAddr, domain: &str, sender: &str) -> SpfOutcome {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let sender = if sender.contains('@') {
        sender.to_owned()
    } else {
        format!("postmaster@{domain}")
    };
    let mut eval = Evaluator {
        dns,
        ip,
        sender,
        helo: domain.clone(),
        lookups: 0,
        voids: 0,
    };
    let (result, matched, reason) = match eval.check(domain, 0).await {
        Ok((result, matched, reason)) => (result, matched, reason),
        Err(Abort::Temp(reason)) => (SpfResult::TempError, None, reason),
        Err(Abort::Perm(reason)) => (SpfResult::PermError, None, reason),
    };
    SpfOutcome {
        result,
        matched,
        reason,
        dns_lookups: eval.lookups,
        void_lookups: eval.voids,
    }
}

enum Abort {
    Temp(String),
    Perm(String),
}

type Checked = (SpfResult, Option<String>, String);
type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

struct Evaluator<'d, D> {
    dns: &'d D,
    ip: IpAddr,
    sender: String,
    helo: String,
    lookups: u32,
    voids: u32,
}

impl<D: SpfDns> Evaluator<'_, D> {
    fn count_lookup(&mut self) -> Result<(), Abort> {
        self.lookups += 1;
        if self.lookups > MAX_DNS_LOOKUPS {
            return Err(Abort::Perm(format!(
                "more than {MAX_DNS_LOOKUPS} DNS lookups"
            )));
        }
        Ok(())
    }

    fn void(&mut self) -> Result<(), Abort> {
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS {
            return Err(Abort::Perm(format!(
                "more than {MAX_VOID_LOOKUPS} void lookups"
            )));
        }
        Ok(())
    }

    /// Maps a lookup result: negative answers become an empty list (plus a void count when
    /// `counts_void`), transient errors abort with temperror.
    fn settle<T>(&mut self, r: Result<Vec<T>, Error>, counts_void: bool) -> Result<Vec<T>, Abort> {
        match r {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(v) => {
                if counts_void {
                    self.void()?;
                }
                Ok(v)
            }
            Err(e) if e.is_negative_answer() => {
                if counts_void {
                    self.void()?;
                }
                Ok(Vec::new())
            }
            Err(Error::InvalidName { name, .. }) => {
                Err(Abort::Perm(format!("invalid name {name:?}")))
            }
            Err(e) => Err(Abort::Temp(e.to_string())),
        }
    }

    fn check(&mut self, domain: String, depth: u32) -> BoxFut<'_, Result<Checked, Abort>> {
        Box::pin(async move {
            if depth > MAX_DNS_LOOKUPS {
                return Err(Abort::Perm("include/redirect loop".into()));
            }
            let txts = match self.dns.txt(&domain).await {
                Ok(t) => t,
                Err(e) if e.is_negative_answer() => Vec::new(),
                Err(Error::InvalidName { .. }) => {
                    return Ok((
                        SpfResult::None,
                        None,
                        format!("{domain:?} is not a valid domain"),
                    ));
                }
                Err(e) => return Err(Abort::Temp(e.to_string())),
            };
            let spf: Vec<&String> = txts
                .iter()
                .filter(|t| is_spf_record(t.as_bytes()))
                .collect();
            let text = match spf.as_slice() {
                [] => return Ok((SpfResult::None, None, format!("{domain} has no SPF record"))),
                [one] => *one,
                _ => {
                    return Err(Abort::Perm(format!(
                        "{domain} has more than one SPF record"
                    )));
                }
            };
            let record =
                SpfRecord::parse(text).map_err(|e| Abort::Perm(format!("{domain}: {e}")))?;
            for directive in &record.directives {
                if self.matches(&directive.mechanism, &domain, depth).await? {
                    let term = format!("{}", DisplayDirective(directive));
                    let reason = format!("{domain}: {term} matched");
                    return Ok((directive.qualifier.into(), Some(term), reason));
                }
            }
            if let (Some(target), false) = (&record.redirect, record.has_all()) {
                self.count_lookup()?;
                let target = self.expand(target, &domain)?;
                let (result, matched, reason) = self.check(target.clone(), depth + 1).await?;
                if result == SpfResult::None {
                    return Err(Abort::Perm(format!("redirect={target} has no SPF record")));
                }
                return Ok((result, matched, reason));
            }
            Ok((
                SpfResult::Neutral,
                None,
                format!("{domain}: no term matched"),
            ))
        })
    }

    async fn matches(&mut self, mech: &Mechanism, domain: &str, depth: u32) -> Result<bool, Abort> {
        if mech.causes_lookup() {
            self.count_lookup()?;
        }
        match mech {
            Mechanism::All => Ok(true),
            Mechanism::Ip4 { addr, prefix } => Ok(match self.ip {
                IpAddr::V4(ip) => in_v4(ip, *addr, *prefix),
                IpAddr::V6(_) => false,
            }),
            Mechanism::Ip6 { addr, prefix } => Ok(match self.ip {
                IpAddr::V6(ip) => in_v6(ip, *addr, *prefix),
                IpAddr::V4(_) => false,
            }),
            Mechanism::Include { domain: spec } => {
                let target = self.expand(spec, domain)?;
                let (result, _, reason) = self.check(target.clone(), depth + 1).await?;
                match result {
                    SpfResult::Pass => Ok(true),
                    SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => Ok(false),
                    SpfResult::TempError => Err(Abort::Temp(reason)),
                    SpfResult::PermError => Err(Abort::Perm(reason)),
                    SpfResult::None => {
                        Err(Abort::Perm(format!("include:{target} has no SPF record")))
                    }
                }
            }
            Mechanism::A {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                let target = match spec {
                    Some(s) => self.expand(s, domain)?,
                    None => domain.to_owned(),
                };
                self.host_matches(&target, *cidr4, *cidr6, true).await
            }
            Mechanism::Mx {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                let target = match spec {
                    Some(s) => self.expand(s, domain)?,
                    None => domain.to_owned(),
                };
                let r = self.dns.mx(&target).await;
                let exchanges = self.settle(r, true)?;
                if exchanges.len() > MAX_MX_NAMES {
                    return Err(Abort::Perm(format!(
                        "{target} has more than {MAX_MX_NAMES} MX records"
                    )));
                }
                for exchange in exchanges.iter().filter(|e| e.as_str() != ".") {
                    if self.host_matches(exchange, *cidr4, *cidr6, false).await? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Mechanism::Ptr { .. } => Ok(false),
            Mechanism::Exists { domain: spec } => {
                let target = self.expand(spec, domain)?;
                let r = self.dns.a(&target).await;
                Ok(!self.settle(r, true)?.is_empty())
            }
        }
    }

    async fn host_matches(
        &mut self,
        host: &str,
        cidr4: u8,
        cidr6: u8,
        counts_void: bool,
    ) -> Result<bool, Abort> {
        match self.ip {
            IpAddr::V4(ip) => {
                let r = self.dns.a(host).await;
                Ok(self
                    .settle(r, counts_void)?
                    .into_iter()
                    .any(|a| in_v4(ip, a, cidr4)))
            }
            IpAddr::V6(ip) => {
                let r = self.dns.aaaa(host).await;
                Ok(self
                    .settle(r, counts_void)?
                    .into_iter()
                    .any(|a| in_v6(ip, a, cidr6)))
            }
        }
    }

    fn expand(&self, spec: &str, domain: &str) -> Result<String, Abort> {
        expand_macros(
            spec,
            &MacroContext {
                sender: &self.sender,
                domain,
                ip: self.ip,
                helo: &self.helo,
            },
        )
        .map_err(|e| Abort::Perm(format!("{spec:?}: {e}")))
    }
}

/// The values macros expand to (RFC 7208 section 7.2).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct MacroContext<'a> {
    /// `%{s}`: the sender `local@domain`.
    pub sender: &'a str,
    /// `%{d}`: the domain being evaluated.
    pub domain: &'a str,
    /// `%{i}` / `%{v}`: the client address.
    pub ip: IpAddr,
    /// `%{h}`: the HELO/EHLO domain.
    pub helo: &'a str,
}

impl<'a> MacroContext<'a> {
    /// Builds a context.
    pub fn new(sender: &'a str, domain: &'a str, ip: IpAddr, helo: &'a str) -> Self {
        Self {
            sender,
            domain,
            ip,
            helo,
        }
    }
}

/// Expands the macros of a domain spec (RFC 7208 section 7), then shortens the result from the
/// left to at most 253 characters as section 7.3 asks.
///
/// ```
/// use postern_mx::spf::{expand_macros, MacroContext};
/// let ctx = MacroContext::new("strong-bad@email.example.com", "email.example.com", "192.0.2.3".parse().unwrap(), "mx.example.org");
/// assert_eq!(expand_macros("%{ir}.%{v}._spf.%{d2}", &ctx).unwrap(), "3.2.0.192.in-addr._spf.example.com");
/// assert_eq!(expand_macros("%{l1r-}.lp._spf.%{d2}", &ctx).unwrap(), "strong.lp._spf.example.com");
/// ```
///
/// # Errors
/// A reason string for a malformed macro or one only allowed in `exp` (`c`, `r`, `t`).
pub fn expand_macros(spec: &str, ctx: &MacroContext<'_>) -> Result<String, &'static str> {
    let mut out = String::with_capacity(spec.len() + 16);
    let mut rest = spec;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.as_bytes().first() {
            Some(b'%') => {
                out.push('%');
                rest = &after[1..];
            }
            Some(b'_') => {
                out.push(' ');
                rest = &after[1..];
            }
            Some(b'-') => {
                out.push_str("%20");
                rest = &after[1..];
            }
            Some(b'{') => {
                let close = after.find('}').ok_or("unclosed macro")?;
                out.push_str(&expand_one(&after[1..close], ctx)?);
                rest = &after[close + 1..];
            }
            _ => return Err("stray '%'"),
        }
    }
    out.push_str(rest);
    while out.len() > 253 {
        match out.find('.') {
            Some(dot) => {
                out.drain(..=dot);
            }
            None => return Err("expansion longer than 253 characters"),
        }
    }
    Ok(out)
}

fn expand_one(body: &str, ctx: &MacroContext<'_>) -> Result<String, &'static str> {
    let (&letter, rest) = body.as_bytes().split_first().ok_or("empty macro")?;
    let (local, sender_domain) = ctx
        .sender
        .rsplit_once('@')
        .unwrap_or(("postmaster", ctx.sender));
    let value = match letter.to_ascii_lowercase() {
        b's' => ctx.sender.to_owned(),
        b'l' => local.to_owned(),
        b'o' => sender_domain.to_owned(),
        b'd' => ctx.domain.to_owned(),
        b'h' => ctx.helo.to_owned(),
        b'p' => "unknown".to_owned(),
        b'v' => if ctx.ip.is_ipv4() { "in-addr" } else { "ip6" }.to_owned(),
        b'i' => match ctx.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
                hex.chars().map(String::from).collect::<Vec<_>>().join(".")
            }
        },
        _ => return Err("macro letter not allowed in a domain spec"),
    };
    let rest = std::str::from_utf8(rest).map_err(|_| "bad macro")?;
    let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let keep: Option<usize> = if digits_len > 0 {
        let n: usize = rest[..digits_len].parse().map_err(|_| "bad macro digits")?;
        if n == 0 {
            return Err("macro digit transformer of zero");
        }
        Some(n)
    } else {
        None
    };
    let mut rest = &rest[digits_len..];
    let reverse = rest.starts_with(['r', 'R']);
    if reverse {
        rest = &rest[1..];
    }
    let delimiters: Vec<char> = if rest.is_empty() {
        vec!['.']
    } else {
        rest.chars().collect()
    };
    let mut parts: Vec<&str> = value.split(|c| delimiters.contains(&c)).collect();
    if reverse {
        parts.reverse();
    }
    if let Some(n) = keep {
        let skip = parts.len().saturating_sub(n);
        parts.drain(..skip);
    }
    let joined = parts.join(".");
    Ok(if letter.is_ascii_uppercase() {
        url_escape(&joined)
    } else {
        joined
    })
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

struct DisplayDirective<'a>(&'a Directive);

impl std::fmt::Display for DisplayDirective<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = match self.0.qualifier {
            Qualifier::Pass => "",
            Qualifier::Fail => "-",
            Qualifier::SoftFail => "~",
            Qualifier::Neutral => "?",
        };
        let dc =
            |f: &mut std::fmt::Formatter<'_>, name: &str, d: &Option<String>, c4: u8, c6: u8| {
                write!(f, "{q}{name}")?;
                if let Some(d) = d {
                    write!(f, ":{d}")?;
                }
                if c4 != 32 {
                    write!(f, "/{c4}")?;
                }
                if c6 != 128 {
                    write!(f, "//{c6}")?;
                }
                Ok(())
            };
        match &self.0.mechanism {
            Mechanism::All => write!(f, "{q}all"),
            Mechanism::Include { domain } => write!(f, "{q}include:{domain}"),
            Mechanism::Exists { domain } => write!(f, "{q}exists:{domain}"),
            Mechanism::A {
                domain,
                cidr4,
                cidr6,
            } => dc(f, "a", domain, *cidr4, *cidr6),
            Mechanism::Mx {
                domain,
                cidr4,
                cidr6,
            } => dc(f, "mx", domain, *cidr4, *cidr6),
            Mechanism::Ptr { domain: Some(d) } => write!(f, "{q}ptr:{d}"),
            Mechanism::Ptr { domain: None } => write!(f, "{q}ptr"),
            Mechanism::Ip4 { addr, prefix } => write!(f, "{q}ip4:{addr}/{prefix}"),
            Mechanism::Ip6 { addr, prefix } => write!(f, "{q}ip6:{addr}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests;
