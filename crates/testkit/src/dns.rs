//! An authoritative DNS server on loopback, for tests that must never reach the public internet.
//!
//! Built on `hickory-server`: one UDP socket and one TCP listener on the same ephemeral port of
//! `127.0.0.1`, answering from an in-memory record set that a builder fills in. Names the server
//! knows nothing about get `NXDOMAIN`; names that exist (or have descendants, RFC 8020 empty
//! non-terminals) but lack the asked type get `NOERROR` with no answer ("no data"). Both negative
//! answers carry an SOA in the authority section so resolvers can cache them. Per-name faults
//! make a name answer `SERVFAIL` or `REFUSED`, or drop its queries so the client times out.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use postern_testkit::dns::{DnsServer, Fault};
//! let server = DnsServer::builder()
//!     .mx("contoso.test", 0, "contoso-test.mail.protection.outlook.com")
//!     .a("contoso-test.mail.protection.outlook.com", [192, 0, 2, 25].into())
//!     .txt("contoso.test", "v=spf1 include:spf.protection.outlook.com -all")
//!     .fault("broken.test", Fault::ServFail)
//!     .start()
//!     .await
//!     .expect("bind loopback");
//! let addr = server.addr(); // point a resolver at this, UDP or TCP
//! assert!(addr.ip().is_loopback());
//! # }
//! ```
//!
//! What it does not do: wildcards, delegations, DNSSEC, zone transfers, or updates. CNAMEs are
//! followed inside the server's own data (up to 8 links) for non-CNAME queries, as a recursive
//! resolver would present them.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// The TTL given to records when the builder is not told otherwise, in seconds.
pub const DEFAULT_TTL: u32 = 300;

/// How a name misbehaves instead of answering from its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer `SERVFAIL` (RCODE 2), as a broken or DNSSEC-bogus upstream does.
    ServFail,
    /// Answer `REFUSED` (RCODE 5), as a server that is not authoritative and will not recurse.
    Refused,
    /// Read the query and never answer, so the client times out.
    Drop,
}

/// One resource record held by the server.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    ttl: u32,
    data: RData,
}

/// Builds a [`DnsServer`]: add records and faults, then [`start`](Self::start) it.
///
/// Names are case-insensitive and may be written with or without the trailing dot.
#[derive(Debug, Default)]
#[must_use]
pub struct DnsServerBuilder {
    entries: Vec<Entry>,
    faults: Vec<(String, Option<RecordType>, Fault)>,
    ttl: Option<u32>,
}

impl DnsServerBuilder {
    /// Sets the TTL of records added after this call (default [`DEFAULT_TTL`]); it is also the
    /// SOA minimum, so negative answers are cached for that long.
    pub fn ttl(mut self, seconds: u32) -> Self {
        self.ttl = Some(seconds);
        self
    }

    fn push(mut self, name: &str, data: RData) -> Self {
        self.entries.push(Entry {
            name: normalise(name),
            ttl: self.ttl.unwrap_or(DEFAULT_TTL),
            data,
        });
        self
    }

    /// Adds `name MX preference exchange`. Use exchange `"."` for a null MX (RFC 7505).
    ///
    /// # Panics
    /// If `exchange` is not a valid domain name (a test bug, not a runtime condition).
    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Self {
        let exchange = name_of(exchange);
        self.push(name, RData::MX(MX::new(preference, exchange)))
    }

    /// Adds `name A addr`.
    pub fn a(self, name: &str, addr: Ipv4Addr) -> Self {
        self.push(name, RData::A(A(addr)))
    }

    /// Adds `name AAAA addr`.
    pub fn aaaa(self, name: &str, addr: Ipv6Addr) -> Self {
        self.push(name, RData::AAAA(AAAA(addr)))
    }

    /// Adds `name TXT text`, split into 255-byte character-strings as a zone file would.
    pub fn txt(self, name: &str, text: &str) -> Self {
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&b""[..]]
        } else {
            bytes.chunks(255).collect()
        };
        self.push(name, RData::TXT(TXT::from_bytes(chunks)))
    }

    /// Adds `name CNAME target`.
    ///
    /// # Panics
    /// If `target` is not a valid domain name.
    pub fn cname(self, name: &str, target: &str) -> Self {
        self.push(name, RData::CNAME(CNAME(name_of(target))))
    }

    /// Makes every query for `name` (any type) misbehave as `fault`.
    pub fn fault(mut self, name: &str, fault: Fault) -> Self {
        self.faults.push((normalise(name), None, fault));
        self
    }

    /// Makes queries for `name` of type `record_type` only misbehave as `fault`.
    pub fn fault_for(mut self, name: &str, record_type: RecordType, fault: Fault) -> Self {
        self.faults
            .push((normalise(name), Some(record_type), fault));
        self
    }

    /// Binds UDP and TCP on the same ephemeral port of `127.0.0.1` and starts serving on the
    /// current tokio runtime. The server stops when the returned [`DnsServer`] is dropped.
    ///
    /// # Errors
    /// When no port could be bound for both protocols.
    pub async fn start(self) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            entries: self.entries,
            faults: self.faults,
            queries: Vec::new(),
            tcp_queries: 0,
        }));
        let handler = Handler {
            state: Arc::clone(&state),
            soa_ttl: self.ttl.unwrap_or(DEFAULT_TTL),
        };
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        Ok(DnsServer {
            addr,
            state,
            _server: server,
        })
    }
}

/// Tries a few ephemeral ports until UDP and TCP can share one.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// A running authoritative DNS server on loopback. Dropping it stops the server.
pub struct DnsServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: Server<Handler>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Starts describing a server.
    pub fn builder() -> DnsServerBuilder {
        DnsServerBuilder::default()
    }

    /// The address (`127.0.0.1:port`) that serves both UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every query received so far, in order, as `(name, type)` with the name lower-cased and
    /// without its trailing dot. Lets tests prove that a cache answered instead of the server.
    pub fn queries(&self) -> Vec<(String, RecordType)> {
        lock(&self.state).queries.clone()
    }

    /// How many queries for `name` (any type) the server has received.
    pub fn query_count(&self, name: &str) -> usize {
        let name = normalise(name);
        lock(&self.state)
            .queries
            .iter()
            .filter(|(n, _)| *n == name)
            .count()
    }

    /// How many queries arrived over TCP (the rest came over UDP).
    pub fn tcp_query_count(&self) -> usize {
        lock(&self.state).tcp_queries
    }

    /// Sets or replaces a fault on `name` while the server runs.
    pub fn set_fault(&self, name: &str, fault: Option<Fault>) {
        let name = normalise(name);
        let mut state = lock(&self.state);
        state.faults.retain(|(n, _, _)| *n != name);
        if let Some(fault) = fault {
            state.faults.push((name, None, fault));
        }
    }
}

#[derive(Debug)]
struct State {
    entries: Vec<Entry>,
    faults: Vec<(String, Option<RecordType>, Fault)>,
    queries: Vec<(String, RecordType)>,
    tcp_queries: usize,
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name_of(name: &str) -> Name {
    let fqdn = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(&fqdn).unwrap_or_else(|e| panic!("invalid DNS name {name:?}: {e}"))
}

/// What the handler decided for one query.
enum Outcome {
    Drop,
    Code(ResponseCode),
    Answer {
        answers: Vec<Record>,
        soa: Option<Box<Record>>,
        code: ResponseCode,
    },
}

#[derive(Debug)]
struct Handler {
    state: Arc<Mutex<State>>,
    soa_ttl: u32,
}

impl Handler {
    fn decide(&self, qname: &str, qtype: RecordType) -> Outcome {
        let mut state = lock(&self.state);
        state.queries.push((qname.to_owned(), qtype));
        if let Some((_, _, fault)) = state
            .faults
            .iter()
            .find(|(n, t, _)| n == qname && t.is_none_or(|t| t == qtype))
        {
            return match fault {
                Fault::Drop => Outcome::Drop,
                Fault::ServFail => Outcome::Code(ResponseCode::ServFail),
                Fault::Refused => Outcome::Code(ResponseCode::Refused),
            };
        }
        let mut answers = Vec::new();
        let mut current = qname.to_owned();
        // Follow CNAMEs inside our own data, as a recursive resolver presents them.
        for _ in 0..8 {
            let at_name: Vec<&Entry> = state.entries.iter().filter(|e| e.name == current).collect();
            let matching: Vec<&Entry> = at_name
                .iter()
                .copied()
                .filter(|e| e.data.record_type() == qtype)
                .collect();
            if !matching.is_empty() {
                answers.extend(matching.iter().map(|e| record(e)));
                break;
            }
            let cname = at_name.iter().find_map(|e| match &e.data {
                RData::CNAME(c) => Some((e, c.0.to_ascii())),
                _ => None,
            });
            match cname {
                Some((entry, target)) if qtype != RecordType::CNAME => {
                    answers.push(record(entry));
                    current = normalise(&target);
                }
                _ => break,
            }
        }
        if !answers.is_empty() {
            return Outcome::Answer {
                answers,
                soa: None,
                code: ResponseCode::NoError,
            };
        }
        let exists = state
            .entries
            .iter()
            .any(|e| e.name == current || e.name.ends_with(&format!(".{current}")));
        let code = if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        Outcome::Answer {
            answers,
            soa: Some(Box::new(self.soa_for(&current))),
            code,
        }
    }

    /// A synthetic SOA for the "zone" of `name` (its last two labels), so negative answers can
    /// be cached for `soa_ttl` seconds (RFC 2308).
    fn soa_for(&self, name: &str) -> Record {
        let labels: Vec<&str> = name.split('.').filter(|l| !l.is_empty()).collect();
        let apex = labels[labels.len().saturating_sub(2)..].join(".");
        let apex = if apex.is_empty() {
            ".".to_owned()
        } else {
            apex
        };
        let soa = SOA::new(
            name_of(&format!("ns.{apex}").replace("ns..", "ns.")),
            name_of(&format!("hostmaster.{apex}").replace("hostmaster..", "hostmaster.")),
            1,
            3600,
            600,
            86400,
            self.soa_ttl,
        );
        Record::from_rdata(name_of(&apex), self.soa_ttl, RData::SOA(soa))
    }
}

fn record(entry: &Entry) -> Record {
    Record::from_rdata(name_of(&entry.name), entry.ttl, entry.data.clone())
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;
        let Some(query) = request.queries.queries().first() else {
            metadata.response_code = ResponseCode::FormErr;
            return send(request, &mut response_handle, metadata, &[], None).await;
        };
        let qname = normalise(&query.name().to_string());
        if request.protocol() == Protocol::Tcp {
            lock(&self.state).tcp_queries += 1;
        }
        match self.decide(&qname, query.query_type()) {
            Outcome::Drop => ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            }),
            Outcome::Code(code) => {
                metadata.response_code = code;
                send(request, &mut response_handle, metadata, &[], None).await
            }
            Outcome::Answer { answers, soa, code } => {
                metadata.response_code = code;
                send(
                    request,
                    &mut response_handle,
                    metadata,
                    &answers,
                    soa.as_deref(),
                )
                .await
            }
        }
    }
}

async fn send<R: ResponseHandler>(
    request: &Request,
    response_handle: &mut R,
    metadata: Metadata,
    answers: &[Record],
    soa: Option<&Record>,
) -> ResponseInfo {
    let builder = MessageResponseBuilder::from_message_request(request);
    let response = builder.build(metadata, answers.iter(), [].iter(), soa, [].iter());
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(_) => {
            let mut failed = metadata;
            failed.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata: failed,
                counts: HeaderCounts::default(),
            })
        }
    }
}
