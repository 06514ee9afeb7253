//! The DNS seam: [`MxResolver`] wraps a hickory `Resolver` and turns its answers into this
//! crate's types and errors.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use serde::Serialize;

use crate::Error;
use crate::exo::{self, ExoMx};
use crate::policy::{MxPlan, MxRecord, plan_mx};

/// One exchange to try, with its addresses (IPv4 first, then IPv6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MxHost {
    /// The MX preference (0 for an implicit MX).
    pub preference: u16,
    /// The exchange host name (the domain itself for an implicit MX).
    pub exchange: String,
    /// Its addresses; empty when the exchange did not resolve (see `error`).
    pub addresses: Vec<IpAddr>,
    /// Why the exchange has no addresses, if it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where mail for a domain goes, in delivery order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MxLookup {
    /// The domain, normalised (lower case, no trailing dot).
    pub domain: String,
    /// The domain publishes a null MX (RFC 7505): it takes no mail. `hosts` is empty.
    pub null_mx: bool,
    /// There was no MX record and the domain's own address is used (RFC 5321 section 5.1).
    pub implicit: bool,
    /// Hosts in the order to try them. Hosts that did not resolve stay in the list with
    /// empty `addresses`, so the caller can log them; skip them when connecting.
    pub hosts: Vec<MxHost>,
}

impl MxLookup {
    /// The first host that points at Exchange Online, if any.
    pub fn exchange_online(&self) -> Option<ExoMx> {
        self.hosts
            .iter()
            .find_map(|h| exo::classify_exchange(&h.exchange))
    }
}

/// Options for [`MxResolver`]; every field has a default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ResolverSettings {
    /// Time to wait for one answer. Default 5 s (resolv.conf's default).
    pub timeout: Duration,
    /// Attempts per name server. Default 2.
    pub attempts: usize,
    /// Cached answers (positive and negative, each for its TTL). Default 1024; 0 disables the
    /// cache.
    pub cache_size: u64,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_size: 1024,
        }
    }
}

/// An async DNS resolver for mail routing and DNS checks, with a TTL cache.
///
/// Build it from the system configuration ([`MxResolver::system`], reading
/// `/etc/resolv.conf`) or from explicit name servers ([`MxResolver::with_name_servers`], for
/// split DNS and tests; each server is asked over UDP, and over TCP when the answer is
/// truncated). Cloning is cheap and clones share the cache.
///
/// ```no_run
/// # async fn run() -> Result<(), postern_mx::Error> {
/// let resolver = postern_mx::MxResolver::system()?;
/// let route = resolver.lookup_mx("contoso.com").await?;
/// for host in &route.hosts {
///     println!("{} {} {:?}", host.preference, host.exchange, host.addresses);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MxResolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for MxResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MxResolver").finish_non_exhaustive()
    }
}

impl MxResolver {
    /// A resolver using the system configuration (`/etc/resolv.conf`) and default settings.
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration cannot be read.
    pub fn system() -> Result<Self, Error> {
        Self::system_with(&ResolverSettings::default())
    }

    /// A resolver using the system configuration with `settings` applied on top.
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration cannot be read.
    pub fn system_with(settings: &ResolverSettings) -> Result<Self, Error> {
        let mut builder = Resolver::builder_tokio().map_err(|e| Error::Config {
            detail: e.to_string(),
        })?;
        apply(builder.options_mut(), settings);
        let inner = builder.build().map_err(|e| Error::Config {
            detail: e.to_string(),
        })?;
        Ok(Self { inner })
    }

    /// A resolver asking exactly `servers` (address and port, UDP then TCP), skipping the hosts
    /// file and search domains.
    ///
    /// # Errors
    /// [`Error::Config`] when `servers` is empty or the resolver cannot be built.
    pub fn with_name_servers(
        servers: &[SocketAddr],
        settings: &ResolverSettings,
    ) -> Result<Self, Error> {
        if servers.is_empty() {
            return Err(Error::Config {
                detail: "no name servers given".into(),
            });
        }
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        let opts = builder.options_mut();
        apply(opts, settings);
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder.build().map_err(|e| Error::Config {
            detail: e.to_string(),
        })?;
        Ok(Self { inner })
    }

    /// Drops every cached answer.
    pub fn clear_cache(&self) {
        self.inner.clear_cache();
    }

    /// Finds where mail for `domain` goes (RFC 5321 section 5.1, RFC 7505) and resolves each
    /// exchange, in delivery order: preference ascending, equal preferences shuffled.
    ///
    /// Outcomes: `null_mx` for `0 .`; `implicit` when there is no MX but the domain has an
    /// address; otherwise the hosts. Errors: [`Error::NxDomain`] (the domain does not exist),
    /// [`Error::NoData`] (no MX and no address), transient errors when the MX query fails, or
    /// when no exchange resolved and at least one failure was transient.
    ///
    /// # Errors
    /// As above; [`Error::is_transient`] says whether to retry.
    pub async fn lookup_mx(&self, domain: &str) -> Result<MxLookup, Error> {
        let domain = exo::normalise_domain(domain)?;
        let records = match self.mx_records(&domain).await {
            Ok(r) => r,
            Err(Error::NoData { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let plan = plan_mx(&records, &mut rand::rng());
        let mut lookup = MxLookup {
            domain: domain.clone(),
            null_mx: false,
            implicit: false,
            hosts: Vec::new(),
        };
        match plan {
            MxPlan::NullMx => lookup.null_mx = true,
            MxPlan::Implicit => {
                let addresses = self.addresses(&domain).await.map_err(|e| match e {
                    Error::NoData { name, .. } => Error::NoData {
                        name,
                        record_type: "MX, A or AAAA".into(),
                    },
                    other => other,
                })?;
                lookup.implicit = true;
                lookup.hosts.push(MxHost {
                    preference: 0,
                    exchange: domain,
                    addresses,
                    error: None,
                });
            }
            MxPlan::Exchanges(list) => {
                let mut failures = Vec::new();
                for rec in list {
                    let (addresses, error) = match self.addresses(&rec.exchange).await {
                        Ok(a) => (a, None),
                        Err(e) => {
                            let text = e.to_string();
                            failures.push(e);
                            (Vec::new(), Some(text))
                        }
                    };
                    lookup.hosts.push(MxHost {
                        preference: rec.preference,
                        exchange: rec.exchange,
                        addresses,
                        error,
                    });
                }
                if lookup.hosts.iter().all(|h| h.addresses.is_empty()) {
                    let worst = failures.iter().position(Error::is_transient).unwrap_or(0);
                    if !failures.is_empty() {
                        return Err(failures.swap_remove(worst));
                    }
                }
            }
        }
        Ok(lookup)
    }

    /// The raw MX records of `domain`, unordered.
    ///
    /// # Errors
    /// [`Error::NoData`] when there are none; other DNS errors as they come.
    pub async fn mx_records(&self, domain: &str) -> Result<Vec<MxRecord>, Error> {
        let lookup = self.query(domain, RecordType::MX).await?;
        let records: Vec<MxRecord> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some(MxRecord::new(mx.preference, &mx.exchange.to_ascii())),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Err(no_data(domain, "MX"));
        }
        Ok(records)
    }

    /// IPv4 then IPv6 addresses of `host`. Succeeds when either family has addresses.
    ///
    /// # Errors
    /// When neither has: the transient error if there was one, else NXDOMAIN or no data.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Error> {
        let v4 = self.a(host).await;
        let v6 = self.aaaa(host).await;
        match (v4, v6) {
            (Ok(a), Ok(b)) => Ok(a
                .into_iter()
                .map(IpAddr::V4)
                .chain(b.into_iter().map(IpAddr::V6))
                .collect()),
            (Ok(a), Err(e)) if e.is_permanent() => Ok(a.into_iter().map(IpAddr::V4).collect()),
            (Err(e), Ok(b)) if e.is_permanent() => Ok(b.into_iter().map(IpAddr::V6).collect()),
            (Err(e), _) | (_, Err(e)) if e.is_transient() => Err(e),
            (Err(Error::NoData { name, .. }), Err(Error::NoData { .. })) => {
                Err(no_data(&name, "A or AAAA"))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// IPv4 addresses of `host`.
    ///
    /// # Errors
    /// DNS errors, [`Error::NoData`] when there are none.
    pub async fn a(&self, host: &str) -> Result<Vec<Ipv4Addr>, Error> {
        let lookup = self.query(host, RecordType::A).await?;
        let v: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        if v.is_empty() {
            Err(no_data(host, "A"))
        } else {
            Ok(v)
        }
    }

    /// IPv6 addresses of `host`.
    ///
    /// # Errors
    /// DNS errors, [`Error::NoData`] when there are none.
    pub async fn aaaa(&self, host: &str) -> Result<Vec<Ipv6Addr>, Error> {
        let lookup = self.query(host, RecordType::AAAA).await?;
        let v: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect();
        if v.is_empty() {
            Err(no_data(host, "AAAA"))
        } else {
            Ok(v)
        }
    }

    /// TXT records at `name`, each record's strings concatenated (RFC 7208 section 3.3);
    /// bytes that are not UTF-8 are replaced.
    ///
    /// # Errors
    /// DNS errors, [`Error::NoData`] when there are none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, Error> {
        let lookup = self.query(name, RecordType::TXT).await?;
        let v: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        if v.is_empty() {
            Err(no_data(name, "TXT"))
        } else {
            Ok(v)
        }
    }

    /// The CNAME target of `name` (lower case, no trailing dot).
    ///
    /// # Errors
    /// DNS errors, [`Error::NoData`] when `name` is not an alias.
    pub async fn cname(&self, name: &str) -> Result<String, Error> {
        let lookup = self.query(name, RecordType::CNAME).await?;
        let wanted = fqdn(name);
        lookup
            .answers()
            .iter()
            .find_map(|r| match &r.data {
                RData::CNAME(c) if r.name.to_ascii().eq_ignore_ascii_case(&wanted) => {
                    Some(c.0.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                }
                _ => None,
            })
            .ok_or_else(|| no_data(name, "CNAME"))
    }

    async fn query(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> Result<hickory_resolver::lookup::Lookup, Error> {
        let display = name.trim_end_matches('.').to_ascii_lowercase();
        if !name.is_ascii() || name.trim_end_matches('.').is_empty() {
            return Err(Error::InvalidName {
                name: name.to_owned(),
                reason: "not an ASCII domain name",
            });
        }
        self.inner
            .lookup(fqdn(name), rtype)
            .await
            .map_err(|e| map_error(&display, rtype, &e))
    }
}

fn apply(opts: &mut ResolverOpts, settings: &ResolverSettings) {
    opts.timeout = settings.timeout;
    opts.attempts = settings.attempts;
    opts.cache_size = settings.cache_size;
    // Answers are used as they are; the resolver's own search list must not rewrite names.
    opts.ndots = 0;
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn no_data(name: &str, record_type: &str) -> Error {
    Error::NoData {
        name: name.trim_end_matches('.').to_owned(),
        record_type: record_type.to_owned(),
    }
}

fn map_error(name: &str, rtype: RecordType, e: &NetError) -> Error {
    let name = name.to_owned();
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr))
            if nr.response_code == ResponseCode::NXDomain =>
        {
            Error::NxDomain { name }
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => Error::NoData {
            name,
            record_type: rtype.to_string(),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => Error::ServFail { name },
        NetError::Timeout => Error::Timeout { name },
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Error::Timeout { name },
        other => Error::Dns {
            name,
            detail: other.to_string(),
        },
    }
}

impl crate::spf::SpfDns for MxResolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, Error> {
        Self::txt(self, name).await
    }
    async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, Error> {
        Self::a(self, name).await
    }
    async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, Error> {
        Self::aaaa(self, name).await
    }
    async fn mx(&self, name: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .mx_records(name)
            .await?
            .into_iter()
            .map(|r| r.exchange)
            .collect())
    }
}
