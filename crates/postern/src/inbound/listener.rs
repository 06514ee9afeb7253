//! Listeners: bind, accept, connection limits, PROXY header, implicit TLS,
//! then hand the stream to the session.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{LimitsConfig, ListenerConfig, ListenerMode};
use super::error::Error;
use super::limits::ConnectionTable;
use super::policy::RelayPolicy;
use super::proxy::{self, ProxyError, ProxyHeader};
use super::session::{self, SessionParams};
use super::tls::ReloadableTls;
use crate::router::Router;
use crate::spool::Spool;

/// What listeners share: the spool, the relay policy, limits and the host name.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InboundContext {
    /// Where accepted messages go.
    pub spool: Arc<Spool>,
    /// Who may relay.
    pub policy: RelayPolicy,
    /// Sizes, counts and timeouts. Default [`LimitsConfig::default`].
    pub limits: LimitsConfig,
    /// Host name for banners and `Received:` when a listener sets none.
    /// Default: the machine's host name, else `"localhost"`.
    pub hostname: String,
    /// The router, asked at `RCPT` whether a recipient can be routed at all
    /// ([`Router::check_recipient`]: Direct Send refuses external recipients). Default none.
    pub router: Option<Arc<Router>>,
}

impl InboundContext {
    /// A context with default limits and the machine's host name.
    pub fn new(spool: Arc<Spool>, policy: RelayPolicy) -> Self {
        Self {
            spool,
            policy,
            limits: LimitsConfig::default(),
            hostname: system_hostname(),
            router: None,
        }
    }

    /// Checks recipients with `router` at `RCPT` time.
    #[must_use]
    pub fn with_router(mut self, router: Arc<Router>) -> Self {
        self.router = Some(router);
        self
    }

    /// Replaces the limits.
    #[must_use]
    pub fn with_limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the host name.
    #[must_use]
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// One configured listener at run time.
#[derive(Debug)]
pub(crate) struct ListenerRuntime {
    pub(crate) config: ListenerConfig,
    pub(crate) hostname: String,
    pub(crate) tls: Option<ReloadableTls>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) ctx: InboundContext,
    pub(crate) listeners: Vec<Arc<ListenerRuntime>>,
    pub(crate) connections: Arc<ConnectionTable>,
    pub(crate) tracker: TaskTracker,
}

/// Bound SMTP listeners, ready to [`run`](Self::run).
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    sockets: Vec<std::net::TcpListener>,
}

impl Server {
    /// Validates the listeners, loads their certificates and binds every
    /// socket. Nothing is accepted until [`run`](Self::run).
    ///
    /// Errors name the listener: a mode that needs TLS without `tls`, PROXY
    /// without `trusted_proxies`, a duplicate name, unreadable certificates,
    /// an address in use.
    pub fn bind(listeners: &[ListenerConfig], ctx: InboundContext) -> Result<Self, Error> {
        let mut names = HashSet::new();
        let mut runtimes = Vec::new();
        let mut sockets = Vec::new();
        for config in listeners {
            validate(config)?;
            if !names.insert(config.name.as_str()) {
                return Err(Error::Config(format!(
                    "two listeners are named {:?}",
                    config.name
                )));
            }
            let tls = config
                .tls
                .as_ref()
                .map(|files| ReloadableTls::load(files, config.tls_min_version))
                .transpose()?;
            let socket = bind_socket(config)?;
            if config.allow_plaintext_auth && config.mode == ListenerMode::Plain {
                warn!(listener = %config.name, "AUTH is allowed without TLS on this listener: passwords cross the network in clear");
            }
            if config.tls_min_version.is_legacy() {
                warn!(
                    listener = %config.name,
                    bind = %config.bind,
                    tls_min_version = %config.tls_min_version,
                    "legacy TLS (1.0/1.1, CBC ciphers, OpenSSL) is enabled on this listener: it is meant for a LAN port only; firewall it to the devices that need it"
                );
                if !super::config::is_lan_address(config.bind.ip()) {
                    warn!(listener = %config.name, bind = %config.bind, "legacy TLS listener bound to a public or wildcard address (allow_legacy_tls_on_public_address = true)");
                }
            }
            runtimes.push(Arc::new(ListenerRuntime {
                hostname: config
                    .hostname
                    .clone()
                    .unwrap_or_else(|| ctx.hostname.clone()),
                config: config.clone(),
                tls,
            }));
            sockets.push(socket);
        }
        Ok(Self {
            shared: Arc::new(Shared {
                ctx,
                listeners: runtimes,
                connections: Arc::new(ConnectionTable::default()),
                tracker: TaskTracker::new(),
            }),
            sockets,
        })
    }

    /// The bound addresses, in the order of the listeners given to [`bind`](Self::bind).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// A handle that reloads certificates while the server runs.
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Re-reads every listener's certificate and key (call on SIGHUP). New
    /// handshakes use the new files; on error the old ones stay in use and
    /// the error names the listener.
    pub fn reload_tls(&self) -> Result<(), Error> {
        self.tls_reloader().reload()
    }

    /// Accepts connections on every listener until `shutdown` is cancelled.
    ///
    /// Must be called within a Tokio runtime. On shutdown the listeners stop
    /// accepting, sessions waiting for a command get `421 4.3.2` and close,
    /// messages being received finish (within their timeouts); the returned
    /// task ends when every session has.
    pub fn run(self, shutdown: CancellationToken) -> JoinHandle<()> {
        let shared = self.shared;
        let mut accept_loops = Vec::new();
        for (index, socket) in self.sockets.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let shutdown = shutdown.clone();
            accept_loops.push(tokio::spawn(async move {
                let name = shared.listeners[index].config.name.clone();
                let socket = match socket
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(socket))
                {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(listener = %name, error = %e, "cannot register listener socket");
                        return;
                    }
                };
                accept_loop(shared, index, socket, shutdown).await;
            }));
        }
        tokio::spawn(async move {
            for task in accept_loops {
                let _ = task.await;
            }
            shared.tracker.close();
            shared.tracker.wait().await;
        })
    }

    /// Serves one already-accepted connection on listener `index` (as the
    /// accept loop would: limits, PROXY header, implicit TLS, session), e.g.
    /// over `tokio::io::duplex` in tests.
    ///
    /// # Panics
    /// If `index` is not a listener index.
    pub async fn serve_stream<S>(
        &self,
        index: usize,
        stream: S,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let (slot, total) = shared.connections.enter();
        connection(shared, index, stream, peer, total, shutdown).await;
        drop(slot);
    }
}

/// Reloads a running server's certificates (keep one for the SIGHUP handler).
#[derive(Debug, Clone)]
pub struct TlsReloader {
    shared: Arc<Shared>,
}

impl TlsReloader {
    /// See [`Server::reload_tls`].
    pub fn reload(&self) -> Result<(), Error> {
        for listener in &self.shared.listeners {
            if let Some(tls) = &listener.tls {
                tls.reload()
                    .map_err(|e| Error::Tls(format!("listener {:?}: {e}", listener.config.name)))?;
                info!(listener = %listener.config.name, "tls certificate reloaded");
            }
        }
        Ok(())
    }
}

fn validate(config: &ListenerConfig) -> Result<(), Error> {
    let name = &config.name;
    if name.is_empty() {
        return Err(Error::Config("a listener has an empty name".into()));
    }
    match config.mode {
        ListenerMode::StarttlsRequired | ListenerMode::ImplicitTls if config.tls.is_none() => {
            return Err(Error::Config(format!(
                "listener {name:?}: mode {:?} needs tls.cert and tls.key",
                config.mode
            )));
        }
        _ => {}
    }
    config
        .check_tls_version()
        .map_err(|(key, message)| Error::Config(format!("listener {name:?}: {key}: {message}")))?;
    if config.proxy_protocol && config.trusted_proxies.is_empty() {
        return Err(Error::Config(format!(
            "listener {name:?}: proxy_protocol needs trusted_proxies (the load balancer addresses)"
        )));
    }
    if let Some(host) = &config.hostname
        && (host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(Error::Config(format!(
            "listener {name:?}: hostname {host:?} is not a host name"
        )));
    }
    if let Some(banner) = &config.banner
        && banner.bytes().any(|b| b == b'\r' || b == b'\n')
    {
        return Err(Error::Config(format!(
            "listener {name:?}: banner must be one line"
        )));
    }
    Ok(())
}

fn bind_socket(config: &ListenerConfig) -> Result<std::net::TcpListener, Error> {
    std::net::TcpListener::bind(config.bind).map_err(|e| Error::Bind {
        name: config.name.clone(),
        addr: config.bind,
        source: Arc::new(e),
    })
}

async fn accept_loop(
    shared: Arc<Shared>,
    index: usize,
    socket: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    let name = shared.listeners[index].config.name.clone();
    info!(listener = %name, addr = ?socket.local_addr().ok(), mode = ?shared.listeners[index].config.mode, "listening");
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (slot, total) = shared.connections.enter();
        if total > shared.ctx.limits.max_connections.saturating_mul(2) {
            // Far over the limit: do not even spend a task on a reply.
            debug!(listener = %name, %peer, "connection dropped: far over max_connections");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared2 = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        shared.tracker.spawn(async move {
            connection(shared2, index, stream, peer, total, shutdown).await;
            drop(slot);
        });
    }
    info!(listener = %name, "stopped accepting");
}

/// One connection from accept to close.
async fn connection<S>(
    shared: Arc<Shared>,
    index: usize,
    mut stream: S,
    peer: SocketAddr,
    total: usize,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listener = Arc::clone(&shared.listeners[index]);
    let limits = shared.ctx.limits.clone();
    let span = info_span!("smtp", listener = %listener.config.name, session = %session::new_session_id(), client = %peer);
    async move {
        let mut client = peer;
        let mut early = Vec::new();
        if listener.config.proxy_protocol {
            if !listener
                .config
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&super::policy::canonical(peer.ip())))
            {
                warn!("connection closed: PROXY header expected from a trusted load balancer, peer is not one");
                return;
            }
            match read_proxy_header(&mut stream, &limits).await {
                Ok((ProxyHeader::Proxied { source, .. }, rest)) => {
                    info!(proxied_client = %source, "PROXY header accepted");
                    client = source;
                    early = rest;
                }
                Ok((_, rest)) => early = rest,
                Err(e) => {
                    warn!(error = %e, "connection closed: bad PROXY header");
                    return;
                }
            }
        }
        let (_ip_slot, per_ip) = shared.connections.enter_ip(client.ip());
        let refusal = if total > limits.max_connections {
            Some("Too many connections, try again later")
        } else if per_ip > limits.max_connections_per_ip {
            Some("Too many connections from your address, try again later")
        } else {
            None
        };
        if let Some(text) = refusal {
            info!(client = %client, total, per_ip, "connection refused: {text}");
        }
        let params = SessionParams {
            shared: Arc::clone(&shared),
            listener: Arc::clone(&listener),
            client,
            shutdown,
        };
        if listener.config.mode == ListenerMode::ImplicitTls {
            let Some(tls) = &listener.tls else { return };
            if !early.is_empty() {
                warn!("connection closed: data before the TLS handshake");
                return;
            }
            let handshake = tokio::time::timeout(
                limits.tls_handshake_timeout(),
                tls.acceptor().accept(stream),
            )
            .await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    info!(error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    info!("tls handshake timed out");
                    return;
                }
            };
            let description = stream.describe();
            info!(tls = %description, "implicit tls established");
            if let Some(text) = refusal {
                refuse(stream, text).await;
                return;
            }
            session::run(params, stream, Vec::new(), Some(description)).await;
        } else {
            if let Some(text) = refusal {
                refuse(stream, text).await;
                return;
            }
            session::run(params, stream, early, None).await;
        }
    }
    .instrument(span)
    .await;
}

async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, text: &str) {
    let line = format!("421 4.7.0 {text}\r\n");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let _ = stream.write_all(line.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[derive(Debug, thiserror::Error)]
enum ProxyReadError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("connection closed before the PROXY header ended")]
    Eof,
    #[error("timed out waiting for the PROXY header")]
    Timeout,
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads exactly one PROXY header, returning it and any bytes after it.
async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    limits: &LimitsConfig,
) -> Result<(ProxyHeader, Vec<u8>), ProxyReadError> {
    let mut buf = Vec::with_capacity(256);
    let deadline = tokio::time::Instant::now() + limits.command_timeout();
    loop {
        match proxy::decode(&buf) {
            Ok((header, used)) => {
                buf.drain(..used);
                return Ok((header, buf));
            }
            Err(ProxyError::Incomplete) => {}
            Err(e) => return Err(e.into()),
        }
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| ProxyReadError::Timeout)??;
        if n == 0 {
            return Err(ProxyReadError::Eof);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
