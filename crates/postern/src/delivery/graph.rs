//! The Graph route (`type = "graph"`): Microsoft Graph `sendMail` with the MIME body (spec F),
//! for tenants that turned SMTP AUTH off.
//!
//! ```text
//!  deliver(msg, rcpts) ─▶ size check (~4 MB request) ─▶ read the message, rewrite From: if
//!     asked, add Bcc: for recipients the headers do not name ─▶ base64 ─▶ token of the
//!     route's identity (scope https://graph.microsoft.com/.default) ─▶ POST
//!     {graph_url}/v1.0/users/{mailbox}/sendMail, Content-Type: text/plain ─▶ 202: delivered
//! ```
//!
//! **Recipients.** Graph has no envelope: it sends to the addresses in the message's `To`,
//! `Cc` and `Bcc` headers, and answers one `202` for all of them. So:
//!
//! - a recipient of the delivery that the headers do not name (a device that puts people in
//!   the envelope only, as Bcc) is added in a `Bcc:` header (Graph does not show Bcc to the
//!   recipients), so it is reached;
//! - a header address that is *not* a recipient of this delivery (an envelope that names
//!   fewer people than the headers, a co-recipient already delivered or routed elsewhere)
//!   would get the message too; the route refuses such a delivery as a transient
//!   `graph_recipient_mismatch` and logs the remedy, so failover moves those recipients to
//!   the next route of their list (put an SMTP route after `graph`); with no other route they
//!   are bounced when their lifetime runs out;
//! - a `202` is reported as delivered for every recipient of the delivery: Graph gives no
//!   per-recipient result (a later non-delivery comes back as an NDR to the mailbox).
//!
//! **Outcomes.** `202` delivered; `400 ErrorMimeContentInvalidBase64String`, `413`,
//! `ErrorMessageSizeExceeded`, other `400`s: permanent; `403 ErrorSendAsDenied`: permanent,
//! with the remedy logged (grant Send As, or `sender_rewrite = true`); `401`: the cached
//! token is dropped and the request tried once more, then transient; `403 ErrorAccessDenied`,
//! `404 ErrorInvalidUser`: transient (the route is misconfigured, the mail waits for the
//! fix) with the remedy logged; `429` and `5xx`: transient with `Retry-After` as the
//! outcome's `retry_after` (which pauses the identity), `throttle_pause` when a `429` has
//! none. A message whose request would exceed `max_request_bytes` (default 4 MiB, Graph's
//! limit; base64 makes that about 3 MB of message) fails permanently as
//! `message_too_large` before anything is sent, with a remedy suggesting an SMTP route.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use postern_entra::{HttpClient, ReqwestClient};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use super::rewrite::{header_block_len, rewrite_headers};
use super::smtp::BuildError;
use super::{DeliveryFuture, DeliveryReport, RcptOutcome, Transport};
use crate::identity::{Identities, IdentityConfig, TokenSource};
use crate::ratelimit::{
    DEFAULT_MESSAGE_WINDOW, DEFAULT_RECIPIENT_WINDOW, DEFAULT_THROTTLE_PAUSE,
    EXO_RECIPIENTS_PER_DAY, IdentityLimits,
};
use crate::spool::SpooledMessage;

/// Graph's base URL in the global cloud.
pub const GRAPH_URL: &str = "https://graph.microsoft.com";
/// The app-only scope of Graph.
pub const GRAPH_APP_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The delegated scope of Graph `sendMail`.
pub const GRAPH_DELEGATED_SCOPE: &str = "https://graph.microsoft.com/Mail.Send offline_access";
/// Graph's request size limit (spec F): 4 MiB.
pub const DEFAULT_MAX_REQUEST: usize = 4 * 1024 * 1024;

/// One `[routes.<name>]` table with `type = "graph"`. Durations are strings (`"30s"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GraphRouteConfig {
    /// The `[identities.<name>]` whose tokens are presented (app-only with the `Mail.Send`
    /// application permission, or delegated). REQUIRED.
    pub identity: String,
    /// The mailbox that sends (`/users/{mailbox}/sendMail`). REQUIRED.
    pub mailbox: String,
    /// Graph's base URL. Default `https://graph.microsoft.com` (`graph.microsoft.us` for a
    /// `usgov` identity, `microsoftgraph.chinacloudapi.cn` for `china`).
    #[serde(default)]
    pub graph_url: Option<String>,
    /// Extra CA certificates (PEM) trusted for Graph besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The token scope. Default `https://graph.microsoft.com/.default` (app-only) or
    /// `https://graph.microsoft.com/Mail.Send offline_access` (delegated).
    #[serde(default)]
    pub scope: Option<String>,
    /// Rewrite the `From:` header to `mailbox` (the original kept in `Reply-To:` and
    /// `X-Original-From:`). Default `false`.
    #[serde(default)]
    pub sender_rewrite: bool,
    /// The whole-request timeout. Default `"2m"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub timeout: Option<Duration>,
    /// The largest request sent (base64 body). Default 4194304 (Graph's 4 MB limit).
    #[serde(default)]
    pub max_request_bytes: Option<usize>,
    /// Requests in flight at once. Default 4 (Graph's limit per app and mailbox).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Messages per `message_window` for this app and mailbox. Default: no limit.
    #[serde(default)]
    pub max_messages_per_minute: Option<u32>,
    /// Recipients per `recipient_window` for this app and mailbox. Default 10,000 (the
    /// mailbox's limit applies to Graph too); `0`: no limit.
    #[serde(default)]
    pub max_recipients_per_day: Option<u32>,
    /// The window of `max_messages_per_minute`. Default `"1m"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub message_window: Option<Duration>,
    /// The window of `max_recipients_per_day`. Default `"24h"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub recipient_window: Option<Duration>,
    /// The pause after a `429` without `Retry-After`. Default `"1m"`.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub throttle_pause: Option<Duration>,
}

impl GraphRouteConfig {
    /// Checks the route against the identities; `Err((key suffix, message))`.
    pub(crate) fn validate(
        &self,
        identities: &BTreeMap<String, IdentityConfig>,
    ) -> Result<(), (&'static str, String)> {
        if !identities.contains_key(&self.identity) {
            return Err((
                "identity",
                format!(
                    "no identity named {:?} (define [identities.{}])",
                    self.identity, self.identity
                ),
            ));
        }
        if !self.mailbox.contains('@') {
            return Err((
                "mailbox",
                "the sending mailbox's address (user@domain) is required".into(),
            ));
        }
        if let Some(u) = &self.graph_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(("graph_url", "must be an https:// URL".into()));
        }
        if self.max_request_bytes == Some(0) || self.max_connections == Some(0) {
            return Err((
                "max_request_bytes",
                "max_request_bytes and max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The route's sending identity (`graph:<identity>:<mailbox>`) and its limits.
    pub fn identity_limits(&self) -> IdentityLimits {
        IdentityLimits::new(format!(
            "graph:{}:{}",
            self.identity,
            self.mailbox.to_ascii_lowercase()
        ))
        .messages(
            self.max_messages_per_minute.unwrap_or(0),
            self.message_window.unwrap_or(DEFAULT_MESSAGE_WINDOW),
        )
        .recipients(
            self.max_recipients_per_day
                .unwrap_or(EXO_RECIPIENTS_PER_DAY),
            self.recipient_window.unwrap_or(DEFAULT_RECIPIENT_WINDOW),
        )
    }
}

/// The Graph `sendMail` transport.
pub struct GraphTransport {
    name: String,
    url: String,
    mailbox: String,
    rewrite: bool,
    max_request: usize,
    throttle_pause: Duration,
    tokens: TokenSource,
    http: Arc<dyn HttpClient>,
    requests: Semaphore,
}

impl std::fmt::Debug for GraphTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphTransport")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The percent-encoding of a path segment (RFC 3986 unreserved characters and `@` kept).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl GraphTransport {
    /// Builds route `name`: its HTTPS client (with `ca_file`) and token source.
    pub fn build(
        name: &str,
        cfg: &GraphRouteConfig,
        identities: &Identities,
        identity_configs: &BTreeMap<String, IdentityConfig>,
    ) -> Result<Self, BuildError> {
        let err = |message: String| BuildError {
            route: name.to_owned(),
            message,
        };
        cfg.validate(identity_configs)
            .map_err(|(k, m)| err(format!("{k}: {m}")))?;
        let id_cfg = identity_configs.get(&cfg.identity);
        let delegated = id_cfg.is_some_and(IdentityConfig::is_delegated);
        let scope = cfg.scope.clone().unwrap_or_else(|| {
            if delegated {
                GRAPH_DELEGATED_SCOPE
            } else {
                GRAPH_APP_SCOPE
            }
            .to_owned()
        });
        let tokens = identities
            .source(&cfg.identity, Some(&cfg.mailbox), Some(&scope))
            .ok_or_else(|| err(format!("identity: no identity named {:?}", cfg.identity)))?;
        let mut http = ReqwestClient::builder()
            .timeout(cfg.timeout.unwrap_or(Duration::from_secs(120)))
            .connect_timeout(Duration::from_secs(30));
        if let Some(ca) = &cfg.ca_file {
            http = http.extra_ca_file(ca).map_err(|e| err(e.to_string()))?;
        }
        let http = http.build().map_err(|e| err(e.to_string()))?;
        let base = cfg.graph_url.clone().unwrap_or_else(|| {
            match id_cfg.and_then(|i| i.authority.as_deref()) {
                Some("usgov") => "https://graph.microsoft.us",
                Some("china") => "https://microsoftgraph.chinacloudapi.cn",
                _ => GRAPH_URL,
            }
            .to_owned()
        });
        let url = format!(
            "{}/v1.0/users/{}/sendMail",
            base.trim_end_matches('/'),
            encode_segment(&cfg.mailbox)
        );
        Ok(Self::with_http(name, cfg, url, tokens, Arc::new(http)))
    }

    fn with_http(
        name: &str,
        cfg: &GraphRouteConfig,
        url: String,
        tokens: TokenSource,
        http: Arc<dyn HttpClient>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            url,
            mailbox: cfg.mailbox.clone(),
            rewrite: cfg.sender_rewrite,
            max_request: cfg.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST),
            throttle_pause: cfg.throttle_pause.unwrap_or(DEFAULT_THROTTLE_PAUSE),
            tokens,
            http,
            requests: Semaphore::new(cfg.max_connections.unwrap_or(4).max(1)),
        }
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `sendMail` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn too_large(&self, request: usize) -> RcptOutcome {
        RcptOutcome::Permanent {
            reason: format!(
                "552 5.3.4 message too large for Graph sendMail: the request would be {request} \
                 bytes (base64) and Graph takes at most {} bytes",
                self.max_request
            ),
            category: "message_too_large".into(),
            remedy: Some(format!(
                "Graph sendMail takes about 3 MB of message (4 MB once base64-encoded); route \
                 larger messages through an SMTP route (client_submission takes up to 35 MB by \
                 default), e.g. a rule with routes = [\"<smtp route>\", \"{}\"]",
                self.name
            )),
        }
    }

    async fn deliver_inner(&self, msg: &SpooledMessage, rcpts: &[usize]) -> DeliveryReport {
        let all = |o: RcptOutcome| DeliveryReport::all(rcpts, &o);
        // The size check first, from the spooled length (headers grow by a few lines).
        let estimate = base64_len(usize::try_from(msg.body_len()).unwrap_or(usize::MAX));
        if estimate > self.max_request {
            tracing::warn!(route = %self.name, queue_id = %msg.id(), request = estimate, "message too large for Graph");
            return all(self.too_large(estimate));
        }
        let Ok(_permit) = self.requests.acquire().await else {
            return all(RcptOutcome::transient("route closed", "internal"));
        };
        let mime = match self.prepare(msg, rcpts).await {
            Ok(Ok(m)) => m,
            Ok(Err(outcome)) => return all(outcome),
            Err(e) => {
                tracing::error!(route = %self.name, queue_id = %msg.id(), error = %e, "cannot read the spooled message");
                return all(RcptOutcome::transient(
                    format!("cannot read the spooled message: {e}"),
                    "internal",
                ));
            }
        };
        let body = base64::engine::general_purpose::STANDARD
            .encode(&mime)
            .into_bytes();
        if body.len() > self.max_request {
            return all(self.too_large(body.len()));
        }
        let mut refreshed = false;
        loop {
            let token = match self.tokens.token().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(route = %self.name, identity = self.tokens.identity(), error = %e, aadsts = e.aadsts(), remedy = %e.remedy(), "no access token; mail is deferred");
                    return all(RcptOutcome::transient(
                        format!("no access token for Graph: {e} (remedy: {})", e.remedy()),
                        "token",
                    ));
                }
            };
            let request = http::Request::post(&self.url)
                .header(http::header::CONTENT_TYPE, "text/plain")
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", token.expose()),
                )
                .body(body.clone());
            let request = match request {
                Ok(r) => r,
                Err(e) => {
                    return all(RcptOutcome::transient(
                        format!("cannot build the Graph request: {e}"),
                        "internal",
                    ));
                }
            };
            let resp = match self.http.execute(request).await {
                Ok(r) => r,
                Err(e) => {
                    let tls = matches!(e, postern_entra::TransportError::Tls(_));
                    if tls {
                        tracing::error!(route = %self.name, error = %e, remedy = "check graph_url and ca_file of the route (the certificate must chain to a trusted CA and name the host)", "TLS to Graph failed; mail is deferred");
                    } else {
                        tracing::warn!(route = %self.name, error = %e, "Graph request failed; mail is deferred");
                    }
                    return all(RcptOutcome::transient(
                        format!("Graph sendMail: {e}"),
                        if tls { "tls_failed" } else { "network" },
                    ));
                }
            };
            if resp.status() == http::StatusCode::UNAUTHORIZED && !refreshed {
                tracing::info!(route = %self.name, identity = self.tokens.identity(), "Graph refused the token: fetching a new one and trying again");
                self.tokens.invalidate();
                refreshed = true;
                continue;
            }
            let outcome = self.outcome(&resp, msg);
            return all(outcome);
        }
    }

    /// The message as sent: `From:` rewritten if asked, `Bcc:` added for recipients the
    /// headers do not name. `Ok(Err(_))`: this delivery cannot go through Graph.
    async fn prepare(
        &self,
        msg: &SpooledMessage,
        rcpts: &[usize],
    ) -> std::io::Result<Result<Vec<u8>, RcptOutcome>> {
        let mut data = Vec::with_capacity(usize::try_from(msg.body_len()).unwrap_or(0));
        msg.open_body().await?.read_to_end(&mut data).await?;
        let env = msg.envelope();
        let Some(end) = header_block_len(&data) else {
            // No blank line (the spool's Received: header is there, so this is a malformed
            // message): send it as it is, with the recipients in front.
            let mut out = bcc_line(rcpts.iter().map(|&i| env.recipients[i].address.as_str()));
            out.extend_from_slice(&data);
            return Ok(Ok(out));
        };
        let head = &data[..end];
        let named: Vec<String> = ["to", "cc", "bcc"]
            .iter()
            .flat_map(|h| header_addresses(head, h))
            .collect();
        let batch: Vec<String> = rcpts
            .iter()
            .map(|&i| env.recipients[i].address.to_ascii_lowercase())
            .collect();
        let outside: Vec<&String> = named.iter().filter(|a| !batch.contains(a)).collect();
        if !outside.is_empty() {
            let list = outside
                .iter()
                .map(|a| format!("<{a}>"))
                .collect::<Vec<_>>()
                .join(", ");
            let remedy = "Graph sends to every To/Cc/Bcc address of a message: route messages whose headers name more people than their envelope (Bcc-style sends, recipients split over several routes, partly delivered messages) through an SMTP route, e.g. list one after the graph route in the rule";
            tracing::error!(route = %self.name, queue_id = %msg.id(), outside = %list, remedy, "Graph cannot deliver exactly these recipients; mail is deferred (failover)");
            return Ok(Err(RcptOutcome::transient(
                format!(
                    "not sent by Graph sendMail: the message's headers also name {list}, who \
                     are not recipients of this delivery and would receive it too"
                ),
                "graph_recipient_mismatch",
            )));
        }
        let missing: Vec<&str> = rcpts
            .iter()
            .map(|&i| env.recipients[i].address.as_str())
            .filter(|a| !named.contains(&a.to_ascii_lowercase()))
            .collect();
        let mut header = if self.rewrite {
            rewrite_headers(head, &self.mailbox)
        } else {
            head.to_vec()
        };
        if !missing.is_empty() {
            // Before the blank line that ends the header block.
            let blank = if header.ends_with(b"\r\n\r\n") { 2 } else { 1 };
            let at = header.len() - blank;
            let line = bcc_line(missing.iter().copied());
            header.splice(at..at, line);
        }
        header.extend_from_slice(&data[end..]);
        Ok(Ok(header))
    }

    /// Classifies Graph's answer.
    fn outcome(&self, resp: &http::Response<Vec<u8>>, msg: &SpooledMessage) -> RcptOutcome {
        let status = resp.status();
        let request_id = resp
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" request-id {v}"))
            .unwrap_or_default();
        if status.is_success() {
            return RcptOutcome::delivered(format!(
                "{} {} by Graph sendMail for {}{request_id}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Accepted"),
                self.mailbox
            ));
        }
        let (code, message) = graph_error(resp.body());
        let reason = format!(
            "{} {code}: {message} (Graph sendMail as {}){request_id}",
            status.as_u16(),
            self.mailbox
        );
        let retry_after = retry_after(resp);
        let s = status.as_u16();
        let permanent = |category: &str, remedy: Option<String>| RcptOutcome::Permanent {
            reason: reason.clone(),
            category: category.into(),
            remedy,
        };
        let transient = |category: &str, retry_after: Option<Duration>| RcptOutcome::Transient {
            reason: reason.clone(),
            category: category.into(),
            retry_after,
        };
        let operator = |category: &str, remedy: &str| {
            tracing::error!(route = %self.name, queue_id = %msg.id(), status = s, code, category, remedy, "Graph refusal needs the operator");
        };
        if code == "ErrorMessageSizeExceeded" || s == 413 {
            let body = base64_len(usize::try_from(msg.body_len()).unwrap_or(usize::MAX));
            return match self.too_large(body) {
                RcptOutcome::Permanent { remedy, .. } => permanent("message_too_large", remedy),
                other => other,
            };
        }
        match (s, code.as_str()) {
            (403, "ErrorSendAsDenied") => {
                let remedy = format!(
                    "Grant {} Send As on the From address (Add-RecipientPermission -AccessRights \
                     SendAs), or set sender_rewrite = true on route {:?}",
                    self.mailbox, self.name
                );
                operator("send_as_denied", &remedy);
                permanent("send_as_denied", Some(remedy))
            }
            (401 | 403, _) => {
                let remedy = "Give the identity's app the Microsoft Graph Mail.Send permission (application permission with admin consent for app-only; check application access policies / RBAC for Applications that may exclude this mailbox), or sign the delegated user in again";
                operator("auth_failed", remedy);
                transient("auth_failed", None)
            }
            (404, _) => {
                let remedy = "The route's mailbox is not a mailbox of the tenant: fix routes.<name>.mailbox (or graph_url)";
                operator("bad_sender", remedy);
                transient("bad_sender", None)
            }
            (429, _) => {
                tracing::warn!(route = %self.name, retry_after_s = retry_after.map(|d| d.as_secs()), "Graph is throttling; pausing the sending identity");
                transient(
                    "throttled",
                    Some(retry_after.unwrap_or(self.throttle_pause)),
                )
            }
            (400, "ErrorInvalidRecipients") => permanent("recipient_unknown", None),
            (400, _) => permanent("content_rejected", None),
            (500..=599, _) => transient("temporary", retry_after),
            _ => {
                let remedy = "Unexpected answer from Graph: check graph_url";
                operator("unknown", remedy);
                transient("unknown", retry_after)
            }
        }
    }
}

/// The length of the standard base64 of `n` bytes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

fn bcc_line<'a>(addrs: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let list: Vec<String> = addrs.map(|a| format!("<{a}>")).collect();
    format!("Bcc: {}\r\n", list.join(",\r\n ")).into_bytes()
}

/// The `(code, message)` of a Graph error body (`{"error":{"code":..,"message":..}}`).
fn graph_error(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Outer>(body) {
        Ok(o) => (o.error.code, o.error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            ("UnknownError".into(), text)
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Graph and is ignored).
fn retry_after(resp: &http::Response<Vec<u8>>) -> Option<Duration> {
    resp.headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The addresses (lower-case) in every `name:` header of a header block: `<...>` when
/// present, else the comma-separated words with an `@`. Group names, display names and
/// comments are skipped.
pub(crate) fn header_addresses(block: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(block);
    let mut values: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
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
    values.extend(current);
    let mut out = Vec::new();
    for v in values {
        // Comments and quoted display names hold no address we want.
        let mut clean = String::with_capacity(v.len());
        let (mut depth, mut quoted) = (0u32, false);
        for c in v.chars() {
            match c {
                '"' if depth == 0 => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted && depth > 0 => depth -= 1,
                _ if quoted || depth > 0 => {}
                _ => clean.push(c),
            }
        }
        for part in clean.split([',', ';']) {
            let part = part.rsplit_once(':').map_or(part, |(_, p)| p);
            let addr = match (part.find('<'), part.rfind('>')) {
                (Some(a), Some(b)) if a < b => &part[a + 1..b],
                _ => part,
            };
            let addr = addr.trim();
            if addr.contains('@') && !addr.contains(char::is_whitespace) {
                out.push(addr.to_ascii_lowercase());
            }
        }
    }
    out
}

impl Transport for GraphTransport {
    fn deliver<'a>(&'a self, msg: &'a SpooledMessage, rcpts: &'a [usize]) -> DeliveryFuture<'a> {
        Box::pin(self.deliver_inner(msg, rcpts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_headers() {
        let h = b"From: Scanner <scan@contoso.com>\r\nTo: \"Doe, Jane\" <Jane@Contoso.com>, bob@fabrikam.com\r\n\
                  Cc: team: a@x.org, (comment) b@y.org;\r\n\tc@z.org\r\nSubject: to: nobody@nowhere\r\n\r\n";
        assert_eq!(
            header_addresses(h, "to"),
            ["jane@contoso.com", "bob@fabrikam.com"]
        );
        assert_eq!(header_addresses(h, "cc"), ["a@x.org", "b@y.org", "c@z.org"]);
        assert!(header_addresses(h, "bcc").is_empty());
        assert!(header_addresses(b"To: undisclosed-recipients:;\r\n\r\n", "to").is_empty());
    }

    #[test]
    fn sizes_and_errors() {
        assert_eq!(base64_len(0), 0);
        assert_eq!(base64_len(3), 4);
        assert_eq!(base64_len(4), 8);
        let (c, m) = graph_error(br#"{"error":{"code":"ErrorSendAsDenied","message":"no right"}}"#);
        assert_eq!((c.as_str(), m.as_str()), ("ErrorSendAsDenied", "no right"));
        assert_eq!(graph_error(b"<html>").0, "UnknownError");
        assert_eq!(encode_segment("a b@c.com"), "a%20b@c.com");
        let resp = http::Response::builder()
            .status(429)
            .header("Retry-After", "7")
            .body(Vec::new())
            .unwrap();
        assert_eq!(retry_after(&resp), Some(Duration::from_secs(7)));
    }

    #[test]
    fn bcc_lines_fold() {
        let l = bcc_line(["a@x", "b@y"].into_iter());
        assert_eq!(l, b"Bcc: <a@x>,\r\n <b@y>\r\n");
    }
}
