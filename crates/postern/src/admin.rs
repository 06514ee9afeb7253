//! The optional admin HTTP listener: metrics, health, and the queue API used by `relay queue`.
//!
//! ```toml
//! [admin]
//! bind = "127.0.0.1:9025"   # loopback by default; the queue actions are not authenticated
//! ```
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` | [`Metrics::render`](crate::metrics::Metrics::render), OpenMetrics text |
//! | `GET /healthz` | `200 ok` while the process serves requests (liveness) |
//! | `GET /readyz` | `200 ready` when the spool is writable and the listeners are up, else `503` with the reasons |
//! | `GET /queue` | JSON array of [`QueueEntry`] |
//! | `GET /queue/{id}` | one [`QueueEntry`], or `404` |
//! | `POST /queue/{id}/retry`, `POST /queue/retry` | make one or every message due now: `{"messages": n}` |
//! | `DELETE /queue/{id}` | remove a message without notice |
//! | `POST /queue/{id}/bounce` | fail its pending recipients and notify the sender |
//!
//! Only HTTP/1.1, plain text: bind it to loopback or a management network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops::queue::QueueEntry;
use crate::queue::QueueControl;
use crate::spool::{QueueId, Spool, inspect, inspect_one};

/// The `[admin]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Where the admin listener binds. Default `127.0.0.1:9025`.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
}

/// The admin port used when `[admin]` gives none.
pub const DEFAULT_BIND: &str = "127.0.0.1:9025";

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9025))
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: default_bind(),
        }
    }
}

impl AdminConfig {
    /// An admin listener on `bind`.
    pub fn new(bind: SocketAddr) -> Self {
        Self { bind }
    }
}

/// What the admin listener serves from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdminContext {
    /// The relay's spool (and through it, its metrics).
    pub spool: Arc<Spool>,
    /// The running queue, for retry, delete and bounce (`None`: those answer `503`).
    pub queue: Option<QueueControl>,
    /// Whether the SMTP listeners are up (set false when shutting down).
    pub listeners_up: Arc<AtomicBool>,
}

impl AdminContext {
    /// A context over `spool` and `queue`, with the listeners marked up.
    pub fn new(spool: Arc<Spool>, queue: Option<QueueControl>) -> Self {
        Self {
            spool,
            queue,
            listeners_up: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and serves `ctx` until [`shutdown`](Self::shutdown).
    pub async fn bind(addr: SocketAddr, ctx: AdminContext) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the admin listener is not on loopback: anyone who reaches it can delete and bounce queued mail");
        }
        let stop = CancellationToken::new();
        let ctx = Arc::new(ctx);
        let task = tokio::spawn(accept_loop(listener, ctx, stop.clone()));
        tracing::info!(%addr, "admin listener up (/metrics, /healthz, /readyz, /queue)");
        Ok(Self { addr, stop, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<AdminContext>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ctx = Arc::clone(&ctx);
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = Arc::clone(&ctx);
                async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(error = %e, "admin connection ended");
                },
                () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut s = body.into();
    s.push('\n');
    reply(status, "text/plain; charset=utf-8", s)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut b) => {
            b.push(b'\n');
            reply(status, "application/json", b)
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Answers one admin request.
async fn handle(ctx: &AdminContext, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            ctx.spool.metrics().render(),
        ),
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok"),
        (&Method::GET, ["readyz"]) => readyz(ctx).await,
        (&Method::GET, ["queue"]) => {
            let root = ctx.spool.path().to_owned();
            match tokio::task::spawn_blocking(move || inspect(&root)).await {
                Ok(Ok(list)) => json(
                    StatusCode::OK,
                    &list
                        .iter()
                        .map(QueueEntry::from_inspected)
                        .collect::<Vec<_>>(),
                ),
                Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (&Method::GET, ["queue", id]) => {
            let Some(id) = QueueId::parse(id) else {
                return error(StatusCode::BAD_REQUEST, "not a queue id");
            };
            let root = ctx.spool.path().to_owned();
            match tokio::task::spawn_blocking(move || inspect_one(&root, &id)).await {
                Ok(Ok(Some(m))) => json(StatusCode::OK, &QueueEntry::from_inspected(&m)),
                Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such message in the queue"),
                Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (&Method::POST, ["queue", "retry"]) => act(ctx, None, Action::Retry).await,
        (&Method::POST, ["queue", id, "retry"]) => act(ctx, Some(id), Action::Retry).await,
        (&Method::POST, ["queue", id, "bounce"]) => act(ctx, Some(id), Action::Bounce).await,
        (&Method::DELETE, ["queue", id]) => act(ctx, Some(id), Action::Delete).await,
        (_, ["metrics" | "healthz" | "readyz" | "queue", ..]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

#[derive(Clone, Copy)]
enum Action {
    Retry,
    Delete,
    Bounce,
}

async fn act(ctx: &AdminContext, id: Option<&str>, action: Action) -> Response<Full<Bytes>> {
    let Some(queue) = &ctx.queue else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the queue is not running");
    };
    let id = match id.map(QueueId::parse) {
        Some(None) => return error(StatusCode::BAD_REQUEST, "not a queue id"),
        Some(Some(id)) => Some(id),
        None => None,
    };
    let r = match (action, &id) {
        (Action::Retry, id) => queue.retry(id.as_ref()).await,
        (Action::Delete, Some(id)) => queue.delete(id).await.map(usize::from),
        (Action::Bounce, Some(id)) => queue.bounce(id).await.map(usize::from),
        (_, None) => return error(StatusCode::BAD_REQUEST, "a queue id is required"),
    };
    match r {
        Ok(0) if id.is_some() => error(StatusCode::NOT_FOUND, "no such message in the queue"),
        Ok(n) => json(StatusCode::OK, &serde_json::json!({ "messages": n })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn readyz(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let mut problems = Vec::new();
    if !ctx.listeners_up.load(Ordering::Relaxed) {
        problems.push("listeners are down".to_owned());
    }
    let root = ctx.spool.path().to_owned();
    match tokio::task::spawn_blocking(move || crate::ops::doctor::probe_writable(&root)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("spool not writable: {e}")),
        Err(e) => problems.push(format!("spool check failed: {e}")),
    }
    if problems.is_empty() {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, problems.join("; "))
    }
}
