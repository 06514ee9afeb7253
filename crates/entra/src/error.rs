//! The crate's error type.

use std::sync::Arc;
use std::time::Duration;

use crate::OAuthError;

/// Everything that can go wrong while getting or keeping a token.
///
/// It is `Clone` (I/O errors are behind an `Arc`) so that every task waiting on one
/// single-flight refresh receives the same outcome. No variant carries a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The authority answered with an OAuth error (`invalid_client`, `invalid_grant`, ...).
    #[error("{0}")]
    OAuth(Box<OAuthError>),
    /// The HTTPS exchange failed before an answer arrived (connect, TLS, reset).
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// No answer within the configured timeout.
    #[error("the token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer was not an OAuth response (a proxy's HTML page, truncated JSON, ...).
    #[error("unexpected response (HTTP {status}): {reason}")]
    InvalidResponse {
        /// HTTP status of the answer.
        status: u16,
        /// What was wrong with it.
        reason: String,
        /// The `Retry-After` the answer carried, if any.
        retry_after: Option<Duration>,
    },
    /// The user's browser came back with an error instead of a code.
    #[error("sign-in failed: {error}: {description}")]
    Authorization {
        /// The `error` parameter of the redirect (`access_denied`, ...).
        error: String,
        /// The `error_description` parameter.
        description: String,
    },
    /// The redirect carried a `state` other than the one we sent (a forged or stale redirect).
    #[error("the sign-in redirect carried the wrong state; start again")]
    StateMismatch,
    /// The device code expired (by our clock) before the user finished signing in.
    #[error(
        "the device code expired before the user finished signing in; start the device-code flow again"
    )]
    DeviceCodeExpired,
    /// Nobody completed the browser sign-in in time.
    #[error("no sign-in redirect arrived within {0:?}")]
    RedirectTimeout(Duration),
    /// A user token was asked for but no refresh token is stored for that user.
    #[error("no refresh token stored for {key}; sign in first (device-code or auth-code)")]
    NoRefreshToken {
        /// The store key (authority, tenant, client and user; not secret).
        key: String,
    },
    /// The certificate or private key could not be loaded or used.
    #[error("client certificate: {0}")]
    Credential(String),
    /// A file or socket operation failed (refresh-token store, loopback listener).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The configuration is unusable (bad URL, bad tenant, missing transport, ...).
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying again later may succeed (network, timeout, 429, 5xx,
    /// `temporarily_unavailable`); see spec C.8 and C.9.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::OAuth(e) => e.is_transient(),
            Self::Transport(_) | Self::Timeout(_) => true,
            Self::InvalidResponse { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The OAuth error, when the authority answered with one.
    pub fn oauth(&self) -> Option<&OAuthError> {
        match self {
            Self::OAuth(e) => Some(e),
            _ => None,
        }
    }

    /// The AADSTS number, when the authority gave one.
    pub fn aadsts(&self) -> Option<u32> {
        self.oauth().and_then(|e| e.aadsts)
    }

    /// A sentence an administrator can act on.
    pub fn remedy(&self) -> String {
        match self {
            Self::OAuth(e) => e.remedy().to_owned(),
            Self::Transport(_) | Self::Timeout(_) => {
                "check network access to the authority (DNS, firewall, HTTPS_PROXY/NO_PROXY, extra CA for a TLS-inspecting proxy); retrying".to_owned()
            }
            Self::InvalidResponse { .. } => {
                "the answer was not from an OAuth server: check the authority URL and any proxy in between".to_owned()
            }
            Self::Authorization { .. } | Self::StateMismatch | Self::RedirectTimeout(_) => {
                "start the browser sign-in again and complete it in the same browser".to_owned()
            }
            Self::DeviceCodeExpired => "start the device-code flow again and finish signing in sooner".to_owned(),
            Self::NoRefreshToken { .. } => {
                "sign the user in once with the device-code or auth-code flow to store a refresh token".to_owned()
            }
            Self::Credential(_) => {
                "check the certificate (PEM) and the unencrypted RSA private key (PKCS#8 or PKCS#1 PEM) files".to_owned()
            }
            Self::Io { .. } => "check the path, its permissions and free disk space".to_owned(),
            Self::Config(_) => "fix the configuration value named above".to_owned(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

impl From<OAuthError> for Error {
    fn from(e: OAuthError) -> Self {
        Self::OAuth(Box::new(e))
    }
}

/// Why an HTTPS exchange failed (always transient from the token cache's point of view).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Could not connect (DNS, refused, unreachable, proxy).
    #[error("connect: {0}")]
    Connect(String),
    /// The TLS handshake failed (unknown CA, name mismatch, ...).
    #[error("tls: {0}")]
    Tls(String),
    /// The transport's own timeout fired.
    #[error("timed out")]
    Timeout,
    /// The body exceeded [`MAX_RESPONSE_LEN`](crate::MAX_RESPONSE_LEN).
    #[error("response body longer than {0} bytes")]
    TooLong(usize),
    /// Anything else (connection reset mid-body, protocol error).
    #[error("{0}")]
    Other(String),
}
