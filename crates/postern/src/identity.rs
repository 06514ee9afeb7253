//! Sending identities: the OAuth applications (and signed-in users) whose tokens the SMTP
//! routes present with XOAUTH2, built from the `[identities.<name>]` tables on one shared
//! [`TokenCache`].
//!
//! ```toml
//! [identities.scanner-app]            # app-only (client credentials)
//! tenant = "contoso.onmicrosoft.com"
//! client_id = "6731de76-14a6-49ae-97bc-6eba6914391e"
//! client_secret_file = "/etc/postern/client-secret"
//!
//! [identities.scanner-user]           # delegated (refresh token stored by `relay token`)
//! tenant = "contoso.onmicrosoft.com"
//! client_id = "6731de76-14a6-49ae-97bc-6eba6914391e"
//! refresh_token_store = "/var/lib/postern/tokens.json"
//! user = "scanner@contoso.com"
//! ```
//!
//! A token failure never bounces mail: the route reports it as transient and logs the
//! remedy (the AADSTS explanation) for the administrator.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use postern_entra::{
    AccessToken, Authority, CachePolicy, CertificateCredential, MemoryStore, OAuthClient,
    RefreshTokenStore, ReqwestClient, Secret, SystemClock, TokenCache, TokenHandle,
};
use serde::Deserialize;

use crate::metrics::Metrics;

/// The app-only scope of Exchange Online SMTP in the global cloud.
pub const APP_ONLY_SCOPE: &str = "https://outlook.office365.com/.default";
/// The delegated scope of Exchange Online SMTP in the global cloud.
pub const DELEGATED_SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";
/// The scope of Azure Communication Services SMTP tokens.
pub const ACS_SCOPE: &str = "https://communication.azure.com/.default";

/// One `[identities.<name>]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IdentityConfig {
    /// `"global"` (default), `"usgov"`, `"china"`, or an Entra-shaped base URL (a
    /// simulator, `https://127.0.0.1:8443`).
    #[serde(default)]
    pub authority: Option<String>,
    /// The tenant: a GUID or a verified domain. REQUIRED.
    pub tenant: String,
    /// The application (client) id. REQUIRED.
    pub client_id: String,
    /// A file holding the client secret (app-only, or a confidential client's refresh).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// A PEM certificate registered on the app (certificate credential); with `key`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// The certificate's unencrypted RSA private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Delegated: the refresh-token store (JSON, 0600) written by the sign-in tool.
    #[serde(default)]
    pub refresh_token_store: Option<PathBuf>,
    /// Delegated: the signed-in user whose refresh token is stored. Default: the route's
    /// `mailbox`.
    #[serde(default)]
    pub user: Option<String>,
    /// Overrides the token scope (default: app-only
    /// `https://outlook.office365.com/.default`, delegated
    /// `https://outlook.office.com/SMTP.Send offline_access`, per cloud).
    #[serde(default)]
    pub scope: Option<String>,
    /// Extra CA certificates (PEM) trusted for the token endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The longest one token request may take, connecting included (`"30s"` when absent;
    /// at most 10 minutes). A delivery waits for a token at most this long: when the token
    /// endpoint hangs, the delivery is deferred (never bounced) and its worker freed.
    #[serde(default, deserialize_with = "crate::config::de_opt_duration")]
    pub token_timeout: Option<Duration>,
}

/// The token request timeout when `token_timeout` is absent.
pub const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `token_timeout` accepted.
pub const MAX_TOKEN_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest wait for the TCP and TLS connection to the token endpoint (within the
/// token timeout).
const TOKEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl IdentityConfig {
    /// Whether the identity acts for a signed-in user (it has a refresh-token store).
    pub fn is_delegated(&self) -> bool {
        self.refresh_token_store.is_some()
    }

    /// The token request timeout (see [`IdentityConfig::token_timeout`]).
    pub fn token_timeout(&self) -> Duration {
        self.token_timeout.unwrap_or(DEFAULT_TOKEN_TIMEOUT)
    }

    /// Checks what serde cannot; `Err((key suffix, message))`.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(t) = self.token_timeout {
            if t.is_zero() {
                return Err(("token_timeout", "must be more than 0 (e.g. \"30s\")".into()));
            }
            if t > MAX_TOKEN_TIMEOUT {
                return Err((
                    "token_timeout",
                    format!(
                        "{t:?} is longer than the 10 minute maximum: a hung token endpoint \
                         would hold deliveries that long (the default is \"30s\")"
                    ),
                ));
            }
        }
        if self.tenant.trim().is_empty() {
            return Err(("tenant", "must not be empty".into()));
        }
        if self.client_id.trim().is_empty() {
            return Err(("client_id", "must not be empty".into()));
        }
        if let Some(a) = &self.authority {
            parse_authority(a).map_err(|e| ("authority", e))?;
        }
        let secrets = [
            self.client_secret_file.is_some(),
            self.client_secret_env.is_some(),
            self.certificate.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if secrets > 1 {
            return Err((
                "client_secret_file",
                "give only one of client_secret_file, client_secret_env, certificate".into(),
            ));
        }
        if self.certificate.is_some() != self.key.is_some() {
            return Err(("key", "certificate and key go together".into()));
        }
        if secrets == 0 && !self.is_delegated() {
            return Err((
                "client_secret_file",
                "an app-only identity needs client_secret_file, client_secret_env or \
                 certificate + key (or set refresh_token_store for a delegated identity)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The scope asked for (see [`IdentityConfig::scope`]).
    pub fn default_scope(&self) -> String {
        if let Some(s) = &self.scope {
            return s.clone();
        }
        let cloud = self.authority.as_deref().unwrap_or("global");
        let (app, delegated) = match cloud {
            "usgov" => (
                "https://outlook.office365.us/.default",
                "https://outlook.office365.us/SMTP.Send offline_access",
            ),
            "china" => (
                "https://partner.outlook.cn/.default",
                "https://partner.outlook.cn/SMTP.Send offline_access",
            ),
            _ => (APP_ONLY_SCOPE, DELEGATED_SCOPE),
        };
        if self.is_delegated() { delegated } else { app }.to_owned()
    }
}

fn parse_authority(s: &str) -> Result<Authority, String> {
    match s {
        "global" => Ok(Authority::global()),
        "usgov" => Ok(Authority::us_gov()),
        "china" => Ok(Authority::china()),
        url => Authority::microsoft(url).map_err(|e| {
            format!("{e} (expected \"global\", \"usgov\", \"china\" or an https URL)")
        }),
    }
}

/// Why an identity could not be set up (read at start, so a bad file fails early).
#[derive(Debug, thiserror::Error)]
#[error("identity {name:?}: {message}")]
#[non_exhaustive]
pub struct IdentityError {
    /// The identity's name.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// One built identity: its OAuth client and who it acts for.
#[derive(Clone)]
struct Built {
    client: OAuthClient,
    config: IdentityConfig,
}

/// Every configured identity over one shared [`TokenCache`].
#[derive(Clone)]
pub struct Identities {
    cache: TokenCache,
    built: BTreeMap<String, Built>,
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("names", &self.built.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// No identity at all.
    pub fn empty() -> Self {
        Self {
            cache: TokenCache::new(Arc::new(MemoryStore::new())),
            built: BTreeMap::new(),
            metrics: None,
        }
    }

    /// Builds every identity: reads secrets and certificates, sets up the HTTPS transport
    /// (with the identity's `ca_file`) and the refresh-token stores.
    pub fn from_config(configs: &BTreeMap<String, IdentityConfig>) -> Result<Self, IdentityError> {
        let store = Arc::new(StoreRouter::default());
        let mut built = BTreeMap::new();
        for (name, cfg) in configs {
            let err = |message: String| IdentityError {
                name: name.clone(),
                message,
            };
            cfg.validate().map_err(|(k, m)| err(format!("{k}: {m}")))?;
            let authority =
                parse_authority(cfg.authority.as_deref().unwrap_or("global")).map_err(err)?;
            let timeout = cfg.token_timeout();
            // The OAuth client's timeout bounds the whole request (and names the duration
            // in its error); the transport's own is a backstop just past it.
            let mut http = ReqwestClient::builder()
                .timeout(timeout + Duration::from_secs(1))
                .connect_timeout(timeout.min(TOKEN_CONNECT_TIMEOUT));
            if let Some(ca) = &cfg.ca_file {
                http = http.extra_ca_file(ca).map_err(|e| err(e.to_string()))?;
            }
            let http = http.build().map_err(|e| err(e.to_string()))?;
            let mut b = OAuthClient::builder(authority, cfg.tenant.clone(), cfg.client_id.clone())
                .http_client(Arc::new(http))
                .timeout(timeout);
            if let Some(path) = &cfg.client_secret_file {
                let s = Secret::from_file(path).map_err(|e| {
                    err(format!(
                        "cannot read client_secret_file {}: {e}",
                        path.display()
                    ))
                })?;
                b = b.client_secret(s);
            } else if let Some(var) = &cfg.client_secret_env {
                let v = std::env::var(var)
                    .map_err(|_| err(format!("environment variable {var} is not set")))?;
                b = b.client_secret(Secret::new(v.trim().to_owned()));
            } else if let (Some(c), Some(k)) = (&cfg.certificate, &cfg.key) {
                let cred =
                    CertificateCredential::from_pem_files(c, k).map_err(|e| err(e.to_string()))?;
                b = b.certificate(cred);
            }
            let client = b.build().map_err(|e| err(e.to_string()))?;
            if let Some(path) = &cfg.refresh_token_store {
                store.add(
                    &client,
                    Arc::new(postern_entra::FileStore::new(path.clone())),
                );
            }
            built.insert(
                name.clone(),
                Built {
                    client,
                    config: cfg.clone(),
                },
            );
        }
        Ok(Self {
            cache: TokenCache::with(store, Arc::new(SystemClock::new()), cache_policy()),
            built,
            metrics: None,
        })
    }

    /// Counts every token obtained and every failed token request in `metrics`
    /// (`postern_token_refreshes_total`, `postern_token_failures_total`).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether an identity of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.built.contains_key(name)
    }

    /// A token source for identity `name`, `mailbox` being the route's sending mailbox
    /// (the delegated user when the identity names none) and `scope` overriding the
    /// identity's default scope (ACS).
    pub fn source(
        &self,
        name: &str,
        mailbox: Option<&str>,
        scope: Option<&str>,
    ) -> Option<TokenSource> {
        let b = self.built.get(name)?;
        let scope = scope.map_or_else(|| b.config.default_scope(), str::to_owned);
        let user = if b.config.is_delegated() {
            b.config.user.clone().or_else(|| mailbox.map(str::to_owned))
        } else {
            None
        };
        let handle = self.cache.handle(&b.client, &scope, user.as_deref());
        Some(TokenSource {
            identity: name.to_owned(),
            handle,
            metrics: self.metrics.clone(),
        })
    }

    /// The OAuth client of identity `name` (for ACS's `<resource>|<app id>|<tenant id>`).
    pub fn client(&self, name: &str) -> Option<&OAuthClient> {
        self.built.get(name).map(|b| &b.client)
    }

    /// The client secret file of identity `name`, if it has one (ACS LOGIN's password).
    pub fn secret_file(&self, name: &str) -> Option<&std::path::Path> {
        self.built
            .get(name)
            .and_then(|b| b.config.client_secret_file.as_deref())
    }
}

/// The token cache policy of the engine: the defaults, except that a timed-out token
/// request is not retried within one delivery attempt (the queue retries the delivery
/// later), so a hung token endpoint holds a delivery for one `token_timeout`, not four.
fn cache_policy() -> CachePolicy {
    let mut policy = CachePolicy::default();
    policy.retry_timeouts = false;
    policy
}

/// Where one route's access tokens come from: a handle on the shared cache.
#[derive(Clone, Debug)]
pub struct TokenSource {
    identity: String,
    handle: TokenHandle,
    metrics: Option<Arc<Metrics>>,
}

impl TokenSource {
    /// The identity's name (for logs).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// A usable access token.
    pub async fn token(&self) -> Result<Secret, postern_entra::Error> {
        Ok(self.access_token().await?.secret.clone())
    }

    /// A usable access token with its expiry and granted scopes (for `relay doctor`).
    /// A token that was not in the cache before counts as a refresh in the metrics; a
    /// failure counts by category (`transient`, or the OAuth error code).
    pub async fn access_token(&self) -> Result<Arc<AccessToken>, postern_entra::Error> {
        let before = self.handle.peek();
        let got = self.handle.get().await;
        if let Some(m) = &self.metrics {
            match &got {
                Ok(t) if !before.as_ref().is_some_and(|b| Arc::ptr_eq(b, t)) => {
                    m.token_refreshed(&self.identity);
                }
                Ok(_) => {}
                Err(e) => m.token_failed(&self.identity, &failure_category(e)),
            }
        }
        got
    }

    /// The scope the tokens are asked for.
    pub fn scope(&self) -> &str {
        self.handle.key().scope()
    }

    /// Forgets the cached token (after `535 5.7.3`), so the next call fetches a new one.
    pub fn invalidate(&self) {
        self.handle.invalidate();
    }
}

/// The metrics label of a token failure: `transient` (network, 5xx, throttling), the OAuth
/// error code (`invalid_client`, `invalid_grant`, ...), or what else went wrong.
fn failure_category(e: &postern_entra::Error) -> String {
    use postern_entra::Error as E;
    if e.is_transient() {
        return "transient".into();
    }
    match e {
        E::OAuth(o) => o.error.clone(),
        E::NoRefreshToken { .. } => "no_refresh_token".into(),
        E::Credential(_) => "credential".into(),
        E::Io { .. } => "io".into(),
        E::Config(_) => "config".into(),
        E::InvalidResponse { .. } => "invalid_response".into(),
        _ => "other".into(),
    }
}

/// Sends each refresh-token key to the store of the identity it belongs to (keys start
/// with `authority tenant client_id `); keys of no configured store stay in memory.
#[derive(Debug, Default)]
struct StoreRouter {
    stores: Mutex<Vec<(String, Arc<dyn RefreshTokenStore>)>>,
    memory: MemoryStore,
}

impl StoreRouter {
    fn add(&self, client: &OAuthClient, store: Arc<dyn RefreshTokenStore>) {
        let prefix = format!(
            "{} {} {} ",
            client.authority().id(),
            client.tenant(),
            client.client_id()
        );
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((prefix, store));
    }

    fn pick(&self, key: &str) -> Option<Arc<dyn RefreshTokenStore>> {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(p, _)| key.starts_with(p.as_str()))
            .map(|(_, s)| Arc::clone(s))
    }
}

impl RefreshTokenStore for StoreRouter {
    fn load(&self, key: &str) -> Result<Option<Secret>, postern_entra::Error> {
        match self.pick(key) {
            Some(s) => s.load(key),
            None => self.memory.load(key),
        }
    }

    fn save(&self, key: &str, token: &Secret) -> Result<(), postern_entra::Error> {
        match self.pick(key) {
            Some(s) => s.save(key, token),
            None => self.memory.save(key, token),
        }
    }

    fn remove(&self, key: &str) -> Result<(), postern_entra::Error> {
        match self.pick(key) {
            Some(s) => s.remove(key),
            None => self.memory.remove(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> IdentityConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn validation_and_scopes() {
        let app = cfg("tenant = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n");
        assert!(app.validate().is_ok());
        assert_eq!(app.default_scope(), APP_ONLY_SCOPE);
        let user = cfg("tenant = \"t\"\nclient_id = \"c\"\nrefresh_token_store = \"/x\"\n");
        assert!(user.validate().is_ok());
        assert_eq!(user.default_scope(), DELEGATED_SCOPE);
        let gov = cfg(
            "authority = \"usgov\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n",
        );
        assert_eq!(gov.default_scope(), "https://outlook.office365.us/.default");
        let none = cfg("tenant = \"t\"\nclient_id = \"c\"\n");
        assert_eq!(none.validate().unwrap_err().0, "client_secret_file");
        let half = cfg("tenant = \"t\"\nclient_id = \"c\"\ncertificate = \"/c\"\n");
        assert_eq!(half.validate().unwrap_err().0, "key");
        let bad = cfg(
            "authority = \"mars\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n",
        );
        assert_eq!(bad.validate().unwrap_err().0, "authority");
    }

    #[test]
    fn token_timeout_defaults_and_bounds() {
        let base = "tenant = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n";
        assert_eq!(cfg(base).token_timeout(), DEFAULT_TOKEN_TIMEOUT);
        let short = cfg(&format!("{base}token_timeout = \"750ms\"\n"));
        assert!(short.validate().is_ok());
        assert_eq!(short.token_timeout(), Duration::from_millis(750));
        for bad in ["\"0s\"", "\"11m\""] {
            let c = cfg(&format!("{base}token_timeout = {bad}\n"));
            let (key, msg) = c.validate().unwrap_err();
            assert_eq!(key, "token_timeout", "{bad}: {msg}");
        }
        assert!(
            toml::from_str::<IdentityConfig>(&format!("{base}token_timeout = \"soon\"\n")).is_err()
        );
    }

    #[test]
    fn store_router_separates_identities() {
        let r = StoreRouter::default();
        let a = Arc::new(MemoryStore::new());
        let client = OAuthClient::builder(Authority::global(), "t", "c")
            .build()
            .unwrap();
        r.add(&client, a.clone());
        let key = format!("{} t c scanner@contoso.com", Authority::GLOBAL);
        r.save(&key, &Secret::new("rt")).unwrap();
        assert!(a.load(&key).unwrap().is_some());
        r.save("other key", &Secret::new("x")).unwrap();
        assert!(a.load("other key").unwrap().is_none());
        assert!(r.load("other key").unwrap().is_some());
    }
}
