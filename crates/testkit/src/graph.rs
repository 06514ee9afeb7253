//! Microsoft Graph `sendMail` with a MIME body (spec section F), over HTTPS on loopback.
//!
//! `POST /v1.0/users/{id | userPrincipalName}/sendMail` or `POST /v1.0/me/sendMail` with
//! `Authorization: Bearer <token>` and `Content-Type: text/plain`, the body being the base64
//! of the whole RFC 5322 message (line-wrapped base64 is accepted). Answers:
//!
//! | case | status and body |
//! |---|---|
//! | accepted | `202`, empty body; recorded with endpoint [`Endpoint::Graph`] |
//! | body not base64 | `400` `ErrorMimeContentInvalidBase64String` "Invalid base64 string for MIME content." |
//! | body over the limit (4 MB default) | `413` `ErrorRequestEntityTooLarge` |
//! | throttled (knob) | `429` with `Retry-After`, `TooManyRequests` "Please retry again later." |
//! | From/Sender not the mailbox and no Send As | `403` `ErrorSendAsDenied` |
//! | no, unknown, expired or wrong-audience token | `401` `InvalidAuthenticationToken` |
//! | token without `Mail.Send` (scope or role), or delegated for another user | `403` `ErrorAccessDenied` |
//! | unknown mailbox | `404` `ErrorInvalidUser` |
//! | no recipient in To/Cc/Bcc | `400` `ErrorInvalidRecipients` |
//! | JSON body (`application/json`) | `400` `RequestBodyRead`: the JSON form is not simulated |
//!
//! Recipients are read from the `To`, `Cc` and `Bcc` headers (Graph has no envelope), and the
//! recorded `mail_from` is the mailbox of the URL.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! use postern_testkit::graph::GraphServer;
//! let graph = GraphServer::builder().start().await?;
//! println!("POST {}/v1.0/users/alice@contoso.com/sendMail", graph.base_url());
//! graph.throttle_next(1, 7); // the next request gets 429 with Retry-After: 7
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::listener::{ServerTask, default_organization};
use crate::org::Organization;
use crate::record::{AcceptedMessage, AuthMethod, Endpoint, Identity, Recorder, Refusal};
use crate::tls::TestCa;
use crate::token::{self, GRAPH_AUDIENCE, TokenValidator};
use crate::wire;

/// The default request body limit: 4 MB.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// Builds a [`GraphServer`].
#[must_use]
pub struct GraphServerBuilder {
    org: Option<Organization>,
    tokens: Arc<dyn TokenValidator>,
    recorder: Option<Recorder>,
    ca: Option<TestCa>,
    bind: SocketAddr,
    max_body: usize,
}

impl std::fmt::Debug for GraphServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphServerBuilder")
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl GraphServerBuilder {
    /// The organization (default: tenant `00000000-...` with accepted domain `contoso.com`).
    pub fn organization(mut self, org: Organization) -> Self {
        self.org = Some(org);
        self
    }

    /// Where bearer tokens are looked up (default: none is known).
    pub fn tokens(mut self, tokens: impl TokenValidator) -> Self {
        self.tokens = Arc::new(tokens);
        self
    }

    /// Same as [`tokens`](Self::tokens) for an already shared validator.
    pub fn tokens_arc(mut self, tokens: Arc<dyn TokenValidator>) -> Self {
        self.tokens = tokens;
        self
    }

    /// Records into `recorder` (default: a new one).
    pub fn recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Issues the server certificate from `ca` (default: a new CA).
    pub fn ca(mut self, ca: TestCa) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Binds `addr` instead of `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The request body limit (default [`DEFAULT_MAX_BODY`]).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(self) -> io::Result<GraphServer> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let ca = self.ca.unwrap_or_default();
        let cert = ca.server_cert(&["graph.microsoft.com"]);
        let acceptor = TlsAcceptor::from(ca.server_config(&cert, &[b"http/1.1"]));
        let org = self.org.unwrap_or_else(default_organization);
        let recorder = self.recorder.unwrap_or_default();
        let shared = Arc::new(Shared {
            org: org.clone(),
            tokens: self.tokens,
            recorder: recorder.clone(),
            max_body: self.max_body,
            throttle: Mutex::default(),
        });
        let connections = Arc::clone(&shared);
        let task = ServerTask::spawn(listener, move |stream, peer| {
            serve_connection(acceptor.clone(), Arc::clone(&connections), stream, peer)
        });
        Ok(GraphServer {
            addr,
            ca,
            org,
            recorder,
            shared,
            task,
        })
    }
}

#[derive(Default)]
struct Throttle {
    remaining: usize,
    retry_after: u64,
    sticky: Option<u64>,
}

struct Shared {
    org: Organization,
    tokens: Arc<dyn TokenValidator>,
    recorder: Recorder,
    max_body: usize,
    throttle: Mutex<Throttle>,
}

impl Shared {
    fn throttle(&self) -> MutexGuard<'_, Throttle> {
        self.throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running Graph simulator. Dropping it (or [`shutdown`](Self::shutdown)) stops it.
pub struct GraphServer {
    addr: SocketAddr,
    ca: TestCa,
    org: Organization,
    recorder: Recorder,
    shared: Arc<Shared>,
    task: ServerTask,
}

impl std::fmt::Debug for GraphServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl GraphServer {
    /// Starts building a Graph simulator.
    pub fn builder() -> GraphServerBuilder {
        GraphServerBuilder {
            org: None,
            tokens: token::none(),
            recorder: None,
            ca: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:<port>`: the base URL clients use instead of
    /// `https://graph.microsoft.com` (the certificate also holds `graph.microsoft.com`).
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The TLS server name on the certificate.
    pub fn tls_server_name(&self) -> &'static str {
        "graph.microsoft.com"
    }

    /// The CA of the server certificate.
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

    /// Answers the next `requests` requests with `429` and `Retry-After: <retry_after>`.
    pub fn throttle_next(&self, requests: usize, retry_after: u64) {
        let mut t = self.shared.throttle();
        t.remaining = requests;
        t.retry_after = retry_after;
    }

    /// Answers every request with `429` and `Retry-After: <seconds>` until `None`.
    pub fn set_throttled(&self, retry_after: Option<u64>) {
        self.shared.throttle().sticky = retry_after;
    }

    /// Stops accepting, closes every connection and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.task.shutdown().await;
    }
}

/// Serves HTTP/1.1 over TLS on one accepted connection.
async fn serve_connection(
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, req, peer).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

type Resp = Response<Full<Bytes>>;

fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

async fn handle(shared: &Shared, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let command = format!("{} {}", req.method(), req.uri().path());
    let (resp, identity, mailbox) = respond(shared, req, peer).await;
    if resp.status().as_u16() >= 400 {
        let text = String::from_utf8_lossy(
            &resp
                .body()
                .clone()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default(),
        )
        .into_owned();
        shared.recorder.push_refusal(Refusal {
            endpoint: Endpoint::Graph,
            command,
            code: resp.status().as_u16(),
            text,
            identity,
            mail_from: mailbox,
            client_addr: peer,
        });
    }
    resp
}

/// The response, plus who was authenticated and which mailbox was targeted (for refusals).
async fn respond(
    shared: &Shared,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Resp, Option<Identity>, Option<String>) {
    // Throttling comes first, as Graph's gateway does.
    let throttled = {
        let mut t = shared.throttle();
        if let Some(s) = t.sticky {
            Some(s)
        } else if t.remaining > 0 {
            t.remaining -= 1;
            Some(t.retry_after)
        } else {
            None
        }
    };
    if let Some(seconds) = throttled {
        let body = serde_json::json!({ "error": {
            "code": "TooManyRequests",
            "innerError": { "code": "429", "date": wire::iso_now(), "request-id": uuidish(), "client-request-id": uuidish() },
            "message": "Please retry again later."
        }});
        let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return (resp, None, None);
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let target = match segments.as_slice() {
        ["v1.0", "me", op] if op.eq_ignore_ascii_case("sendMail") => None,
        ["v1.0", "users", id, op] if op.eq_ignore_ascii_case("sendMail") => {
            Some(percent_decode(id))
        }
        _ => {
            let msg = format!(
                "Resource not found for the segment '{}'.",
                segments.last().copied().unwrap_or("")
            );
            return (error(StatusCode::NOT_FOUND, "BadRequest", &msg), None, None);
        }
    };
    if req.method() != http::Method::POST {
        return (
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            ),
            None,
            target,
        );
    }
    // Token.
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let invalid = |m: &str| error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", m);
    if bearer.is_empty() {
        return (invalid("Access token is empty."), None, target);
    }
    let Some(facts) = shared.tokens.validate(&bearer) else {
        return (
            invalid("IDX14100: JWT is not well formed, there are no dots (.)."),
            None,
            target,
        );
    };
    if facts.is_expired(SystemTime::now()) {
        return (
            invalid("Lifetime validation failed, the token is expired."),
            None,
            target,
        );
    }
    if facts.audience.trim_end_matches('/') != GRAPH_AUDIENCE
        || !facts
            .tenant_id
            .eq_ignore_ascii_case(&shared.org.tenant_id())
    {
        return (
            invalid("Access token validation failure. Invalid audience."),
            None,
            target,
        );
    }
    let denied = || {
        error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )
    };
    if !facts.grants(&[GRAPH_AUDIENCE], &["Mail.Send"], &["Mail.Send"]) {
        return (denied(), None, target);
    }
    let app_only = facts.is_app_only();
    let mailbox_id = match (&target, &facts.user) {
        (Some(id), _) => id.clone(),
        (None, Some(upn)) => upn.clone(),
        (None, None) => {
            return (
                error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "/me request is only valid with delegated authentication flow.",
                ),
                None,
                None,
            );
        }
    };
    let Some(mailbox) = shared.org.mailbox(&mailbox_id) else {
        let msg = format!("The requested user '{mailbox_id}' is invalid.");
        return (
            error(StatusCode::NOT_FOUND, "ErrorInvalidUser", &msg),
            None,
            Some(mailbox_id),
        );
    };
    if let Some(upn) = &facts.user
        && !upn.eq_ignore_ascii_case(&mailbox.address)
    {
        return (denied(), None, Some(mailbox.address));
    }
    let identity = Identity {
        mailbox: mailbox.address.clone(),
        method: AuthMethod::GraphBearer {
            client_id: facts.client_id.clone(),
            app_only,
        },
    };
    let who = Some(identity.clone());
    let target = Some(mailbox.address.clone());
    // Body.
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = match Limited::new(req.into_body(), shared.max_body)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return (
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "ErrorRequestEntityTooLarge",
                    "The request entity is too large.",
                ),
                who,
                target,
            );
        }
    };
    if !content_type.starts_with("text/plain") {
        return (
            error(
                StatusCode::BAD_REQUEST,
                "RequestBodyRead",
                "Only the MIME form (Content-Type: text/plain, base64 body) is simulated.",
            ),
            who,
            target,
        );
    }
    let Some(mime) = decode_base64_lenient(&body).filter(|m| !m.is_empty()) else {
        return (
            error(
                StatusCode::BAD_REQUEST,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            ),
            who,
            target,
        );
    };
    let mut senders = Vec::new();
    for h in ["From", "Sender"] {
        for v in wire::header_values(&mime, h) {
            senders.extend(wire::addresses_in(&v));
        }
    }
    if senders
        .iter()
        .any(|s| !shared.org.may_send_as(&mailbox.address, s))
    {
        return (
            error(
                StatusCode::FORBIDDEN,
                "ErrorSendAsDenied",
                "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
            ),
            who,
            target,
        );
    }
    let mut rcpts = Vec::new();
    for h in ["To", "Cc", "Bcc"] {
        for v in wire::header_values(&mime, h) {
            rcpts.extend(wire::addresses_in(&v));
        }
    }
    if rcpts.is_empty() {
        return (
            error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
            ),
            who,
            target,
        );
    }
    let message_id = wire::header_values(&mime, "Message-ID")
        .into_iter()
        .next()
        .unwrap_or_else(|| format!("<{}@graph.microsoft.com>", wire::hex16()));
    shared.recorder.push_accepted(AcceptedMessage {
        seq: 0,
        endpoint: Endpoint::Graph,
        mail_from: mailbox.address.clone(),
        rcpt_to: rcpts,
        identity: Some(identity),
        data: mime,
        message_id,
        tls: true,
        client_cert_subject: None,
        client_addr: peer,
        helo: None,
        accepted_at: SystemTime::now(),
        throttled_for: Duration::ZERO,
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    (resp, who, target)
}

/// Decodes standard base64, ignoring whitespace (line-wrapped bodies).
fn decode_base64_lenient(input: &[u8]) -> Option<Vec<u8>> {
    let cleaned: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .ok()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn uuidish() -> String {
    let h = format!("{}{}", wire::hex16(), wire::hex16()).to_ascii_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(percent_decode("alice%40contoso.com"), "alice@contoso.com");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(
            decode_base64_lenient(b"RnJv\r\nbTog\n").as_deref(),
            Some(&b"From: "[..])
        );
        assert!(decode_base64_lenient(b"not base64!").is_none());
        assert_eq!(uuidish().len(), 36);
    }
}
