//! How the Exchange and Graph simulators check bearer tokens.
//!
//! The simulators do not issue tokens; they ask a [`TokenValidator`] what a presented access
//! token means. The Entra ID simulator is the usual validator (it knows every token it
//! issued); [`StaticTokens`] is a fixed table for tests that need no OAuth flow, and any
//! closure `Fn(&str) -> Option<AccessToken>` works too.
//!
//! The simulators then apply Exchange's rules themselves: the token must not be expired, its
//! tenant must be the organization's, its audience and scope (`scp`, delegated) or role
//! (`roles`, app-only) must fit the endpoint (see [`AccessToken::grants`]). Each failure is
//! the same `535 5.7.3 Authentication unsuccessful`, as on the real service.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use postern_testkit::token::{AccessToken, StaticTokens, TokenValidator, SMTP_AUDIENCE};
//! let tokens = StaticTokens::new();
//! tokens.insert(
//!     "tok-1",
//!     AccessToken::delegated("tenant-guid", "app-id", "alice@contoso.com", SMTP_AUDIENCE, ["SMTP.Send"])
//!         .expiring_at(SystemTime::now() + Duration::from_secs(3600)),
//! );
//! let t = tokens.validate("tok-1").expect("known");
//! assert!(t.grants(&[SMTP_AUDIENCE], &["SMTP.Send"], &[]));
//! assert!(tokens.validate("tok-2").is_none());
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The audience of Exchange Online tokens (SMTP, IMAP, POP; delegated `outlook.office.com`
/// tokens are also accepted, see [`SMTP_AUDIENCES`]).
pub const SMTP_AUDIENCE: &str = "https://outlook.office365.com";
/// Every audience Exchange Online SMTP accepts: `outlook.office.com` (delegated scope
/// `https://outlook.office.com/SMTP.Send`), `outlook.office365.com` (app-only `.default`) and
/// the Exchange Online application id.
pub const SMTP_AUDIENCES: [&str; 3] = [
    "https://outlook.office.com",
    "https://outlook.office365.com",
    "00000002-0000-0ff1-ce00-000000000000",
];
/// The audience of Microsoft Graph tokens.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// The audience of Azure Communication Services tokens (scope
/// `https://communication.azure.com/.default`).
pub const ACS_AUDIENCE: &str = "https://communication.azure.com";

/// What a validator knows about an access token it issued.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The tenant (directory) id the token was issued in (`tid`).
    pub tenant_id: String,
    /// The application that obtained it (`appid`/`azp`).
    pub client_id: String,
    /// The signed-in user's UPN for delegated tokens (`upn`); `None` for app-only tokens.
    pub user: Option<String>,
    /// The resource it is for (`aud`), e.g. [`SMTP_AUDIENCE`].
    pub audience: String,
    /// Delegated scopes (`scp`), short names such as `SMTP.Send` (full URIs are accepted too).
    pub scopes: Vec<String>,
    /// Application roles (`roles`), such as `SMTP.SendAsApp` or `Mail.Send`.
    pub roles: Vec<String>,
    /// When it expires (`exp`); `None` means never (for hand-made tokens).
    pub expires_at: Option<SystemTime>,
}

impl AccessToken {
    /// A delegated token for `user`.
    pub fn delegated<S: Into<String>>(
        tenant_id: &str,
        client_id: &str,
        user: &str,
        audience: &str,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            user: Some(user.to_owned()),
            audience: audience.to_owned(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            roles: Vec::new(),
            expires_at: None,
        }
    }

    /// An app-only (client credentials) token.
    pub fn app_only<S: Into<String>>(
        tenant_id: &str,
        client_id: &str,
        audience: &str,
        roles: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            user: None,
            audience: audience.to_owned(),
            scopes: Vec::new(),
            roles: roles.into_iter().map(Into::into).collect(),
            expires_at: None,
        }
    }

    /// Sets the expiry.
    #[must_use]
    pub fn expiring_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Whether the token is app-only (no user).
    pub fn is_app_only(&self) -> bool {
        self.user.is_none()
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|exp| exp <= now)
    }

    /// Whether the audience is one of `audiences` (a trailing `/` is ignored) and the token
    /// carries one of `scopes` (delegated) or one of `roles` (app-only). A scope matches by
    /// short name or as `<audience>/<name>`.
    pub fn grants(&self, audiences: &[&str], scopes: &[&str], roles: &[&str]) -> bool {
        let aud = self.audience.trim_end_matches('/');
        if !audiences.iter().any(|a| a.trim_end_matches('/') == aud) {
            return false;
        }
        if self.is_app_only() {
            self.roles.iter().any(|r| roles.contains(&r.as_str()))
        } else {
            self.scopes.iter().any(|s| {
                let short = s.rsplit('/').next().unwrap_or(s);
                scopes.contains(&short)
            })
        }
    }
}

/// Looks up what an access token means. Implemented by the Entra ID simulator, by
/// [`StaticTokens`] and by closures.
pub trait TokenValidator: Send + Sync + 'static {
    /// The token's facts if this validator issued it (expired tokens included: the caller
    /// checks expiry), `None` for a token it never saw.
    fn validate(&self, token: &str) -> Option<AccessToken>;
}

impl<F> TokenValidator for F
where
    F: Fn(&str) -> Option<AccessToken> + Send + Sync + 'static,
{
    fn validate(&self, token: &str) -> Option<AccessToken> {
        self(token)
    }
}

/// A fixed table of tokens. Clones share the table, so tests can add tokens while a
/// simulator runs.
#[derive(Clone, Default)]
pub struct StaticTokens {
    table: Arc<Mutex<HashMap<String, AccessToken>>>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens").finish_non_exhaustive()
    }
}

impl StaticTokens {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `token` mean `facts`.
    pub fn insert(&self, token: &str, facts: AccessToken) {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.to_owned(), facts);
    }

    /// Forgets `token` (it becomes unknown, as a token from another authority).
    pub fn remove(&self, token: &str) {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(token);
    }
}

impl TokenValidator for StaticTokens {
    fn validate(&self, token: &str) -> Option<AccessToken> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
    }
}

/// A validator that knows no token (the default until one is configured).
pub(crate) fn none() -> Arc<dyn TokenValidator> {
    Arc::new(|_: &str| None)
}
