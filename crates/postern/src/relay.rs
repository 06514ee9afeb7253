//! The relay: spool + queue + router + delivery + inbound listeners, started and stopped as
//! one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), postern::Error> {
//! let handle = postern::relay::Relay::start(postern::config::Config::builtin()).await?;
//! println!("listening on {:?}", handle.local_addrs());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::delivery::smtp::SmtpKind;
use crate::delivery::{GraphTransport, LocalSink, SmtpTransport, Transport};
use crate::identity::Identities;
use crate::inbound::{self, InboundContext, RelayPolicy, Server, TlsReloader};
use crate::queue::{self, QueueHandle, Transports};
use crate::ratelimit::RateLimits;
use crate::router::{RouteConfig, Router};
use crate::spool::{Spool, SpoolError};

/// The engine's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spool could not be opened or written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A listener could not be set up (bind, TLS files, accounts).
    #[error(transparent)]
    Inbound(#[from] inbound::Error),
    /// The admin HTTP listener could not be bound.
    #[error("admin listener: {0}")]
    Admin(#[source] std::io::Error),
}

/// Starts relays.
#[derive(Debug)]
#[non_exhaustive]
pub struct Relay;

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    addrs: Vec<SocketAddr>,
    spool: Arc<Spool>,
    tls: TlsReloader,
    stop_inbound: CancellationToken,
    inbound: tokio::task::JoinHandle<()>,
    queue: QueueHandle,
    admin: Option<crate::admin::AdminServer>,
    listeners_up: Arc<std::sync::atomic::AtomicBool>,
    _lock: crate::spool::SpoolLock,
}

impl Relay {
    /// Opens the spool and recovers it, starts the queue and the listeners, and returns once
    /// every listener is bound.
    pub async fn start(config: Config) -> Result<RelayHandle, Error> {
        // One process per spool; `relay queue` takes the same lock when no relay runs.
        let lock = crate::spool::SpoolLock::acquire(&config.spool.path)?;
        let (spool, recovered) = Spool::open(&config.spool).await?;
        if recovered.discarded_tmp > 0 || !recovered.quarantined.is_empty() {
            tracing::warn!(
                discarded_tmp = recovered.discarded_tmp,
                quarantined = recovered.quarantined.len(),
                "spool recovery cleaned up after an unclean stop"
            );
        }
        tracing::info!(path = %spool.path().display(), recovered = recovered.messages.len(), "spool open");
        let spool = Arc::new(spool);
        let mut router =
            Router::new(&config.rules, &config.default_routes).map_err(|(i, m)| ConfigError {
                origin: "configuration".into(),
                line: None,
                key: Some(format!("rules[{i}].client_network")),
                message: m,
            })?;
        let identities = Identities::from_config(&config.identities)
            .map_err(|e| ConfigError {
                origin: "configuration".into(),
                line: None,
                key: Some(format!("identities.{}", e.name)),
                message: e.message,
            })?
            .with_metrics(Arc::clone(spool.metrics()));
        let mut transports: Transports = BTreeMap::new();
        let mut limits = Vec::new();
        let route_error = |name: &str, message: String| ConfigError {
            origin: "configuration".into(),
            line: None,
            key: Some(format!("routes.{name}")),
            message,
        };
        for (name, route) in &config.routes {
            let t: Arc<dyn Transport> = match route {
                RouteConfig::Local { dir, format } => {
                    Arc::new(LocalSink::new(dir.clone(), *format))
                }
                RouteConfig::Graph(g) => {
                    limits.push((name.clone(), g.identity_limits()));
                    let t = GraphTransport::build(name, g, &identities, &config.identities)
                        .map_err(|e| route_error(name, e.message))?;
                    Arc::new(t)
                }
                other => {
                    let Some((kind, smtp)) = other.smtp() else {
                        continue;
                    };
                    if kind == SmtpKind::DirectSend {
                        router.restrict_route(name, smtp.accepted_domains());
                    }
                    let id_cfg = smtp
                        .identity
                        .as_ref()
                        .and_then(|i| config.identities.get(i));
                    limits.push((name.clone(), smtp.identity_limits(kind, name, id_cfg)));
                    let t = SmtpTransport::build(
                        name,
                        kind,
                        smtp,
                        &identities,
                        &config.identities,
                        &config.hostname,
                    )
                    .map_err(|e| route_error(name, e.message))?;
                    Arc::new(t)
                }
            };
            transports.insert(Arc::from(name.as_str()), t);
        }
        let router = Arc::new(router);
        let mut qcfg = config.queue.clone();
        qcfg.hostname.clone_from(&config.hostname);
        // Per-identity limits; the recipient budgets and pauses live in the spool directory.
        let limits = RateLimits::open(
            Some(spool.path().join(crate::ratelimit::STATE_FILE)),
            limits,
            std::time::SystemTime::now(),
        );
        // The queue subscribes to the spool before the first session can commit.
        let queue = queue::start_with_limits(
            Arc::clone(&spool),
            recovered.messages,
            Arc::clone(&router),
            transports,
            qcfg,
            limits,
        );

        let policy = RelayPolicy::from_config(&config.policy, &config.accounts)?;
        let ctx = InboundContext::new(Arc::clone(&spool), policy)
            .with_limits(config.limits.clone())
            .with_hostname(config.hostname.clone())
            .with_router(router);
        let server = match Server::bind(&config.listeners, ctx) {
            Ok(s) => s,
            Err(e) => {
                queue.shutdown().await;
                return Err(e.into());
            }
        };
        let addrs = server.local_addrs();
        let tls = server.tls_reloader();
        let stop_inbound = CancellationToken::new();
        let inbound = server.run(stop_inbound.clone());
        let admin_ctx = crate::admin::AdminContext::new(Arc::clone(&spool), Some(queue.control()));
        let listeners_up = Arc::clone(&admin_ctx.listeners_up);
        let admin = match &config.admin {
            None => None,
            Some(a) => match crate::admin::AdminServer::bind(a.bind, admin_ctx).await {
                Ok(s) => Some(s),
                Err(e) => {
                    stop_inbound.cancel();
                    let _ = inbound.await;
                    queue.shutdown().await;
                    return Err(Error::Admin(e));
                }
            },
        };
        Ok(RelayHandle {
            addrs,
            spool,
            tls,
            stop_inbound,
            inbound,
            queue,
            admin,
            listeners_up,
            _lock: lock,
        })
    }
}

impl RelayHandle {
    /// The bound listener addresses, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The spool.
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(crate::admin::AdminServer::local_addr)
    }

    /// Administrator actions on the running queue (retry now, delete, bounce).
    pub fn queue_control(&self) -> queue::QueueControl {
        self.queue.control()
    }

    /// Re-reads every listener's certificate and key (SIGHUP).
    pub fn reload_tls(&self) -> Result<(), Error> {
        Ok(self.tls.reload()?)
    }

    /// Graceful shutdown: stop accepting, let sessions finish or defer, then stop the queue
    /// after the attempts in progress. The spool keeps everything not yet delivered.
    pub async fn shutdown(self) {
        self.listeners_up
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.stop_inbound.cancel();
        let _ = self.inbound.await;
        tracing::info!("listeners stopped");
        self.queue.shutdown().await;
        if let Some(admin) = self.admin {
            admin.shutdown().await;
        }
    }
}
