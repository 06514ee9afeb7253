//! The tenant MX endpoint (`<domain-with-dashes>.mail.protection.outlook.com:25`), for Direct
//! Send and connector relay.
//!
//! - TLS is optional (`STARTTLS` is offered); the server asks for a client certificate during
//!   the handshake but also accepts clients that present none. There is no `AUTH` (`504 5.7.4`).
//! - A session is *attributed* to the tenant when an [`InboundConnector`] matches: a
//!   certificate connector needs TLS and a client certificate (chained to the test CA or an
//!   extra root) whose subject CN or a DNS SAN is its `TlsSenderCertificateName` or a
//!   subdomain; an IP connector needs the client's address in its list (and TLS if it says
//!   `RequireTls`, else `451 5.7.3 STARTTLS is required to send mail` at `MAIL`).
//! - Per recipient (`RCPT`), in this order: a blocked client IP gets the Spamhaus-style
//!   `550 5.7.1 Service unavailable, Client host [<ip>] blocked using Spamhaus. ...`; a
//!   recipient domain configured as served from another region gets `451 4.4.62 Mail sent to
//!   the wrong Office 365 region. ATTR35.`; an internal recipient (accepted domain) is taken,
//!   unless the session is anonymous, Reject Direct Send is on and the `MAIL FROM` domain is an
//!   accepted domain (`550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this
//!   organization from unauthorized sources`); an external recipient is relayed only for an
//!   attributed session, else `550 5.7.64 TenantAttribution; Relay Access Denied`.
//! - Accepted messages are recorded with endpoint [`Endpoint::DirectSend`] or
//!   [`Endpoint::Connector`], the TLS flag and the client certificate subject.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! use postern_testkit::org::{InboundConnector, Organization};
//! use postern_testkit::tenant_mx::TenantMx;
//! let org = Organization::builder("tenant-guid", "contoso.com")
//!     .connector(InboundConnector::certificate("relay", "relay.contoso.com"))
//!     .build();
//! let mx = TenantMx::builder().organization(org).start().await?;
//! assert_eq!(mx.tls_server_name(), "contoso-com.mail.protection.outlook.com");
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

use crate::fault::Faults;
use crate::listener::{ServerTask, default_organization};
use crate::org::{InboundConnector, Organization};
use crate::record::{Endpoint, Recorder};
use crate::smtp_server::{self, Core, Cx, Policy};
use crate::tls::TestCa;
use crate::wire::{self, HostNames};

/// Builds a [`TenantMx`].
#[derive(Debug)]
#[must_use]
pub struct TenantMxBuilder {
    org: Option<Organization>,
    recorder: Option<Recorder>,
    ca: Option<TestCa>,
    bind: SocketAddr,
    blocked: Vec<IpAddr>,
    wrong_region: Vec<String>,
    extra_roots: Vec<CertificateDer<'static>>,
}

impl TenantMxBuilder {
    /// The organization (default: tenant `00000000-...` with accepted domain `contoso.com`).
    pub fn organization(mut self, org: Organization) -> Self {
        self.org = Some(org);
        self
    }

    /// Records into `recorder` (default: a new one).
    pub fn recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Issues the server certificate from `ca`, which client certificates must also chain to
    /// (default: a new CA).
    pub fn ca(mut self, ca: TestCa) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Binds `addr` instead of `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Refuses every recipient from `ip` as listed on Spamhaus.
    pub fn blocked_ip(mut self, ip: IpAddr) -> Self {
        self.blocked.push(ip);
        self
    }

    /// Answers recipients in `domain` with the wrong-region deferral (`451 4.4.62`).
    pub fn wrong_region_domain(mut self, domain: &str) -> Self {
        self.wrong_region.push(domain.to_ascii_lowercase());
        self
    }

    /// Also trusts client certificates issued under `root`.
    pub fn client_root(mut self, root: CertificateDer<'static>) -> Self {
        self.extra_roots.push(root);
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(self) -> io::Result<TenantMx> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let ca = self.ca.unwrap_or_default();
        let org = self.org.unwrap_or_else(default_organization);
        let host = mx_host(&org.accepted_domains()[0]);
        let cert = ca.server_cert(&[
            &host,
            "mail.protection.outlook.com",
            "*.mail.protection.outlook.com",
        ]);
        let recorder = self.recorder.unwrap_or_default();
        let faults = Arc::new(Faults::default());
        let core = Arc::new(Core {
            names: HostNames::random("mail.protection.outlook.com"),
            faults: Arc::clone(&faults),
            recorder: recorder.clone(),
            tls: ca.server_config_optional_client_auth(&cert, &self.extra_roots),
        });
        let shared = Arc::new(Shared {
            org: org.clone(),
            knobs: Mutex::new(Knobs {
                blocked: self.blocked,
                wrong_region: self.wrong_region,
            }),
        });
        let sessions = Arc::clone(&shared);
        let task = ServerTask::spawn(listener, move |stream, peer| {
            let policy = Mx {
                shared: Arc::clone(&sessions),
                connector: None,
            };
            smtp_server::serve(Arc::clone(&core), policy, stream, peer)
        });
        Ok(TenantMx {
            addr,
            host,
            ca,
            org,
            recorder,
            faults,
            shared,
            task,
        })
    }
}

/// `contoso.com` → `contoso-com.mail.protection.outlook.com`.
pub fn mx_host(domain: &str) -> String {
    format!(
        "{}.mail.protection.outlook.com",
        domain.to_ascii_lowercase().replace('.', "-")
    )
}

struct Knobs {
    blocked: Vec<IpAddr>,
    wrong_region: Vec<String>,
}

struct Shared {
    org: Organization,
    knobs: Mutex<Knobs>,
}

impl Shared {
    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running tenant MX simulator. Dropping it (or [`shutdown`](Self::shutdown)) stops it.
pub struct TenantMx {
    addr: SocketAddr,
    host: String,
    ca: TestCa,
    org: Organization,
    recorder: Recorder,
    faults: Arc<Faults>,
    shared: Arc<Shared>,
    task: ServerTask,
}

impl std::fmt::Debug for TenantMx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantMx")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl TenantMx {
    /// Starts building a tenant MX.
    pub fn builder() -> TenantMxBuilder {
        TenantMxBuilder {
            org: None,
            recorder: None,
            ca: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            blocked: Vec::new(),
            wrong_region: Vec::new(),
            extra_roots: Vec::new(),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MX host name of the first accepted domain, on the server certificate (with
    /// `*.mail.protection.outlook.com`, `localhost` and `127.0.0.1`).
    pub fn tls_server_name(&self) -> &str {
        &self.host
    }

    /// The CA of the server certificate (and of acceptable client certificates).
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The organization.
    pub fn organization(&self) -> &Organization {
        &self.org
    }

    /// What was accepted and refused.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Fault-injection knobs.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Blocks or unblocks a client IP at runtime.
    pub fn set_blocked_ip(&self, ip: IpAddr, blocked: bool) {
        let mut k = self.shared.knobs();
        k.blocked.retain(|b| *b != ip);
        if blocked {
            k.blocked.push(ip);
        }
    }

    /// Marks or unmarks a recipient domain as served from another region at runtime.
    pub fn set_wrong_region_domain(&self, domain: &str, wrong: bool) {
        let d = domain.to_ascii_lowercase();
        let mut k = self.shared.knobs();
        k.wrong_region.retain(|w| *w != d);
        if wrong {
            k.wrong_region.push(d);
        }
    }

    /// Stops accepting, closes every session and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.task.shutdown().await;
    }
}

/// What the tenant MX does differently: no `AUTH`, attribution to an inbound connector, and
/// the per-recipient checks of Direct Send and relay.
struct Mx {
    shared: Arc<Shared>,
    /// The connector the current transaction is attributed to.
    connector: Option<InboundConnector>,
}

impl Mx {
    /// The connector this session is attributed to, or `Err(reply)` for an IP connector that
    /// requires TLS on a plain session.
    fn attribute(&self, cx: &Cx<'_>) -> Result<Option<InboundConnector>, String> {
        let tls = cx.conn.is_tls();
        let ip = cx.conn.peer.ip();
        let mut needs_tls = false;
        for c in self.shared.org.connectors() {
            if let Some(name) = &c.tls_sender_certificate_name {
                if tls
                    && cx
                        .conn
                        .client_cert
                        .as_ref()
                        .is_some_and(|n| n.matches_domain(name))
                {
                    return Ok(Some(c));
                }
            } else if c.sender_ips.contains(&ip) {
                if c.require_tls && !tls {
                    needs_tls = true;
                } else {
                    return Ok(Some(c));
                }
            }
        }
        if needs_tls {
            return Err(format!(
                "451 5.7.3 STARTTLS is required to send mail {}",
                cx.trailer()
            ));
        }
        Ok(None)
    }
}

impl Policy for Mx {
    fn endpoint(&self) -> Endpoint {
        if self.connector.is_some() {
            Endpoint::Connector
        } else {
            Endpoint::DirectSend
        }
    }

    fn ehlo_keyword(&self, tls: bool) -> Option<&'static str> {
        (!tls).then_some("STARTTLS")
    }

    fn mail(&mut self, cx: &Cx<'_>) -> Result<(), String> {
        self.connector = self.attribute(cx)?;
        Ok(())
    }

    fn rcpt(
        &self,
        cx: &Cx<'_>,
        mail_from: &str,
        _rcpts: &[String],
        rcpt: &str,
    ) -> Result<(), String> {
        let ip = cx.conn.peer.ip();
        let (blocked, wrong_region) = {
            let k = self.shared.knobs();
            (
                k.blocked.contains(&ip),
                k.wrong_region.contains(&wire::domain_of(rcpt)),
            )
        };
        let org = &self.shared.org;
        if blocked {
            return Err(format!(
                "550 5.7.1 Service unavailable, Client host [{ip}] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/{ip} AS(1450) {}",
                cx.trailer()
            ));
        }
        if wrong_region {
            return Err(format!(
                "451 4.4.62 Mail sent to the wrong Office 365 region. ATTR35. {}",
                cx.trailer()
            ));
        }
        if org.is_internal(rcpt) {
            if self.connector.is_none() && org.reject_direct_send() && org.is_internal(mail_from) {
                return Err(format!(
                    "550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization from unauthorized sources {}",
                    cx.trailer()
                ));
            }
            return Ok(());
        }
        if self.connector.is_none() {
            return Err(format!(
                "550 5.7.64 TenantAttribution; Relay Access Denied {}",
                cx.trailer()
            ));
        }
        Ok(())
    }

    fn accepted_reply(&self, cx: &Cx<'_>, message_id: &str, size: usize) -> String {
        format!(
            "250 2.6.0 {message_id} [InternalId={}, Hostname={}.{}.PROD.OUTLOOK.COM] {size} bytes in 0.012, Queued mail for delivery",
            u64::from_str_radix(&wire::hex16()[..10], 16).unwrap_or(0),
            cx.names.mailbox_server,
            cx.names.region
        )
    }

    fn reset_transaction(&mut self) {
        self.connector = None;
    }
}
