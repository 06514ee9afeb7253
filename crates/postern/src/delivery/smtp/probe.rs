//! Opening a session on a route without sending mail, for `relay doctor` and `relay send`:
//! the same resolution, connection, TLS verification and AUTH as delivery, with each failure
//! named by the step that failed.

use std::net::SocketAddr;

use postern_ndr::classify;

use super::SmtpTransport;
use super::conn::{AuthPlan, Conn, ConnError, SessionSettings, reply_text};
use super::transcript::Transcript;
use crate::identity::TokenSource;

/// The step of a session that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeStage {
    /// Finding the server's addresses (DNS, MX).
    Resolve,
    /// The TCP connection.
    Connect,
    /// The greeting and EHLO.
    Greeting,
    /// STARTTLS or implicit TLS, including certificate verification.
    Tls,
    /// Getting an access token for XOAUTH2.
    Token,
    /// AUTH: no fitting mechanism, or the server refused the credential.
    Auth,
    /// Anything later (a broken reply, a lost connection).
    Session,
}

impl ProbeStage {
    /// A short lower-case name (`resolve`, `connect`, `tls`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::Connect => "connect",
            Self::Greeting => "greeting",
            Self::Tls => "tls",
            Self::Token => "token",
            Self::Auth => "auth",
            Self::Session => "session",
        }
    }
}

/// Why a probe failed: the step, what happened, and (for a server reply or a token error)
/// what to do about it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{stage:?}: {message}")]
#[non_exhaustive]
pub struct ProbeError {
    /// The step that failed.
    pub stage: ProbeStage,
    /// What happened (a server reply is quoted on one line).
    pub message: String,
    /// The classifier's (or the token service's) remedy, when there is one.
    pub remedy: Option<String>,
    /// The NDR category of a refusing reply, or `token`.
    pub category: Option<String>,
}

/// What a successful probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The host name connected to.
    pub host: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Whether the session ended up under TLS.
    pub tls: bool,
    /// The AUTH mechanisms the server offered (after TLS).
    pub auth_offered: Vec<String>,
    /// Whether the probe authenticated.
    pub authenticated: bool,
}

impl ProbeError {
    fn from_conn(e: &ConnError) -> Self {
        let stage_of = |s: &str| {
            let s = s.to_ascii_lowercase();
            if s.contains("tls") {
                ProbeStage::Tls
            } else if s.contains("greeting") || s.contains("ehlo") || s.contains("helo") {
                ProbeStage::Greeting
            } else if s.contains("auth") {
                ProbeStage::Auth
            } else {
                ProbeStage::Session
            }
        };
        let (stage, remedy, category) = match e {
            ConnError::Resolve(_) => (ProbeStage::Resolve, None, None),
            ConnError::Connect(_) => (ProbeStage::Connect, None, None),
            ConnError::Tls(_) | ConnError::NoStartTls(_) => (ProbeStage::Tls, None, None),
            ConnError::Token(t) => (
                ProbeStage::Token,
                Some(t.remedy()),
                Some("token".to_owned()),
            ),
            ConnError::Auth(_) => (ProbeStage::Auth, None, None),
            ConnError::Reply(stage, r) => {
                let c = classify(r.code(), r.enhanced(), &r.text());
                (
                    stage_of(stage),
                    Some(c.remedy.to_owned()),
                    Some(c.category.as_str().to_owned()),
                )
            }
            ConnError::Timeout(stage, _) | ConnError::Io(stage, _) => (stage_of(stage), None, None),
            ConnError::Protocol(_) => (ProbeStage::Session, None, None),
        };
        let message = match e {
            ConnError::Reply(stage, r) => format!("{stage} refused: {}", reply_text(r)),
            other => other.to_string(),
        };
        Self {
            stage,
            message,
            remedy,
            category,
        }
    }
}

impl SmtpTransport {
    /// Shows every line of this route's sessions to `transcript` (secrets redacted).
    #[must_use]
    pub fn with_transcript(mut self, transcript: Transcript) -> Self {
        self.session.transcript = Some(transcript);
        self
    }

    /// The AUTH mechanism the route uses (`XOAUTH2`, `LOGIN`, `PLAIN`), if any.
    pub fn auth_mechanism(&self) -> Option<&'static str> {
        match &self.session.auth {
            AuthPlan::None => None,
            AuthPlan::Token { .. } => Some("XOAUTH2"),
            AuthPlan::Password { allowed, .. } => allowed.first().map(|m| m.name()),
        }
    }

    /// Where the route's XOAUTH2 tokens come from, if it uses them.
    pub fn token_source(&self) -> Option<&TokenSource> {
        match &self.session.auth {
            AuthPlan::Token { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The addresses the route would connect to now (`host (addr)` each).
    ///
    /// # Errors
    /// A [`ProbeStage::Resolve`] error when nothing resolves.
    pub async fn resolve(&self) -> Result<Vec<(String, SocketAddr)>, ProbeError> {
        let targets = self
            .targets()
            .await
            .map_err(|e| ProbeError::from_conn(&e))?;
        if targets.is_empty() {
            return Err(ProbeError {
                stage: ProbeStage::Resolve,
                message: "no address found".into(),
                remedy: None,
                category: None,
            });
        }
        Ok(targets.into_iter().map(|t| (t.host, t.addr)).collect())
    }

    /// Opens one session as delivery does (connect, greeting, EHLO, STARTTLS with the
    /// route's certificate checks, EHLO) and, when `authenticate`, AUTH with the route's
    /// credential; then QUIT. No mail is sent.
    ///
    /// # Errors
    /// The first step that failed, with the server's reply and a remedy when there is one.
    pub async fn probe(&self, authenticate: bool) -> Result<ProbeReport, ProbeError> {
        let targets = self
            .targets()
            .await
            .map_err(|e| ProbeError::from_conn(&e))?;
        let settings = SessionSettings {
            tls: self.session.tls,
            tls_config: std::sync::Arc::clone(&self.session.tls_config),
            helo: self.session.helo.clone(),
            timeouts: self.session.timeouts,
            auth: if authenticate {
                self.session.auth.clone()
            } else {
                AuthPlan::None
            },
            transcript: self.session.transcript.clone(),
        };
        let conn = Conn::open(&targets, &settings)
            .await
            .map_err(|e| ProbeError::from_conn(&e))?;
        let report = ProbeReport {
            host: conn.host.clone(),
            addr: conn.addr,
            tls: conn.session.is_tls(),
            auth_offered: conn.caps().auth,
            authenticated: authenticate && !matches!(settings.auth, AuthPlan::None),
        };
        conn.quit().await;
        Ok(report)
    }

    /// Closes the idle pooled connections (QUIT), e.g. at the end of `relay send`.
    pub async fn close_idle(&self) {
        let idle: Vec<Conn> = std::mem::take(
            &mut *self
                .pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for c in idle {
            c.quit().await;
        }
    }
}
