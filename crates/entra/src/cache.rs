//! The token cache: early, single-flight refresh, backoff, durable refresh-token rotation.
//!
//! # Timing
//!
//! For a token of lifetime `L` (from `expires_in`, measured from when the request was sent):
//!
//! - it is handed out until `expires_at - skew`, `skew` = min(5 min, L/4): a token that has
//!   left the cache still has at least that long to reach Exchange, and clock drift between
//!   this machine and Microsoft's of up to a few minutes does no harm;
//! - from `expires_at - refresh_ahead`, `refresh_ahead` = max(skew, min(10 min, L/2)), the
//!   first caller refreshes it while every other caller keeps getting the cached token. If that
//!   refresh fails transiently, the cached token keeps serving and the next attempt waits a
//!   backoff (1 s doubling to 60 s, or the server's `Retry-After` up to 60 s);
//! - once no usable token is left, callers wait for one refresh (single flight: one HTTP
//!   request whatever the number of callers), retried on transient failures up to 4 attempts
//!   with the same backoff (a timed-out request only when [`CachePolicy::retry_timeouts`] is
//!   on, so that a caller that retries later anyway waits one timeout at most). A failure is
//!   shared by every caller that waited for it, and
//!   remembered for the backoff (60 s after a permanent error, as MSAL does) so that a broken
//!   configuration does not hammer Entra (AADSTS50196 loop detection).
//!
//! For Entra's usual 60 to 90 minute tokens this means: refresh from 10 minutes before
//! expiry, never hand out a token with less than 5 minutes left.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::{Clock, Error, OAuthClient, RefreshTokenStore, Secret, SystemClock, TokenResponse};

/// A cached access token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The token (what XOAUTH2's `auth=Bearer ` carries).
    pub secret: Secret,
    /// `Bearer` in practice.
    pub token_type: String,
    /// When the authority says it expires.
    pub expires_at: SystemTime,
    /// The granted scopes, when the authority said.
    pub scope: Option<String>,
}

/// What a cached token is for: authority, tenant, client, scope and user (`None` for
/// app-only tokens).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    authority: String,
    tenant: String,
    client_id: String,
    scope: String,
    user: Option<String>,
}

impl CacheKey {
    /// The key of `client`'s token for `scope` and `user`.
    pub fn new(client: &OAuthClient, scope: &str, user: Option<&str>) -> Self {
        Self {
            authority: client.authority().id().to_owned(),
            tenant: client.tenant().to_owned(),
            client_id: client.client_id().to_owned(),
            scope: scope.to_owned(),
            user: user.map(str::to_owned),
        }
    }

    /// The scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The user (`None` for app-only tokens).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The refresh-token store key: `authority tenant client_id user`, space-separated (one
    /// refresh token per user and app serves every scope, as Entra's are multi-resource).
    pub fn store_key(&self) -> String {
        format!(
            "{} {} {} {}",
            self.authority,
            self.tenant,
            self.client_id,
            self.user.as_deref().unwrap_or("-")
        )
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.store_key(), self.scope)
    }
}

/// The cache's timing policy; see the [module documentation](self).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CachePolicy {
    /// Never hand out a token with less than this left (capped at a quarter of the
    /// lifetime). Default 5 minutes.
    pub skew: Duration,
    /// Start refreshing this long before expiry (capped at half the lifetime, at least
    /// `skew`). Default 10 minutes.
    pub refresh_ahead: Duration,
    /// First backoff after a transient failure. Default 1 s.
    pub initial_backoff: Duration,
    /// Longest backoff, and longest `Retry-After` honoured. Default 60 s.
    pub max_backoff: Duration,
    /// Attempts of one refresh when no usable token is left. Default 4.
    pub max_attempts: u32,
    /// How long a permanent error is returned without asking the authority again. Default 60 s.
    pub permanent_error_hold: Duration,
    /// Whether a request that timed out (a hung token endpoint) is retried within the same
    /// call, up to `max_attempts`. Default `true`. Off, a call waits at most one request
    /// timeout: for callers that retry later anyway (a mail queue), so that a hung endpoint
    /// holds them for one timeout rather than `max_attempts` of them plus the backoffs. The
    /// failure is remembered for the backoff either way, so callers meanwhile fail at once.
    pub retry_timeouts: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(300),
            refresh_ahead: Duration::from_secs(600),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_attempts: 4,
            permanent_error_hold: Duration::from_secs(60),
            retry_timeouts: true,
        }
    }
}

/// Keeps access tokens ready; see the [module documentation](self) for the timing.
///
/// App-only tokens (`user` = `None`) come from the client-credentials grant; user tokens from
/// the refresh-token grant, with the refresh token read from, and its rotation written to, the
/// [`RefreshTokenStore`] before the new access token is handed out. Cheap to clone.
///
/// ```no_run
/// # async fn f(client: postern_entra::OAuthClient) -> Result<(), postern_entra::Error> {
/// use postern_entra::{FileStore, TokenCache};
/// use std::sync::Arc;
/// let cache = TokenCache::new(Arc::new(FileStore::new("/var/lib/postern/tokens.json")));
/// let smtp = cache.handle(&client, "https://outlook.office365.com/.default", None);
/// let token = smtp.get().await?; // an Arc<AccessToken>
/// # let _ = token; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TokenCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    clock: Arc<dyn Clock>,
    store: Arc<dyn RefreshTokenStore>,
    policy: CachePolicy,
    slots: Mutex<HashMap<CacheKey, Arc<Slot>>>,
}

#[derive(Debug)]
struct Slot {
    key: CacheKey,
    state: Mutex<State>,
    /// Held by the one task talking to the authority for this key.
    flight: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    token: Option<Arc<AccessToken>>,
    usable_until: Option<SystemTime>,
    refresh_at: Option<SystemTime>,
    /// Bumped at every completed refresh, successful or not.
    generation: u64,
    last_error: Option<Error>,
    /// No refresh before this (backoff); with no usable token, `last_error` is returned.
    next_attempt: Option<SystemTime>,
    backoff: Duration,
}

enum Decision {
    Hit(Arc<AccessToken>),
    RefreshAhead(Arc<AccessToken>),
    Fail(Error),
    Fetch(u64),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TokenCache {
    /// A cache with the real clock and the default policy.
    pub fn new(store: Arc<dyn RefreshTokenStore>) -> Self {
        Self::with(store, Arc::new(SystemClock::new()), CachePolicy::default())
    }

    /// A cache with a given clock and policy.
    pub fn with(
        store: Arc<dyn RefreshTokenStore>,
        clock: Arc<dyn Clock>,
        policy: CachePolicy,
    ) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                clock,
                store,
                policy,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The refresh-token store.
    pub fn store(&self) -> &Arc<dyn RefreshTokenStore> {
        &self.inner.store
    }

    /// A handle on one key; keep it to skip the key lookup on every call.
    pub fn handle(&self, client: &OAuthClient, scope: &str, user: Option<&str>) -> TokenHandle {
        let key = CacheKey::new(client, scope, user);
        let slot = Arc::clone(
            lock(&self.inner.slots)
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Slot {
                        key,
                        state: Mutex::new(State::default()),
                        flight: tokio::sync::Mutex::new(()),
                    })
                }),
        );
        TokenHandle {
            cache: Arc::clone(&self.inner),
            slot,
            client: client.clone(),
        }
    }

    /// A usable token for `client`, `scope` and `user`, refreshing if needed.
    pub async fn get(
        &self,
        client: &OAuthClient,
        scope: &str,
        user: Option<&str>,
    ) -> Result<Arc<AccessToken>, Error> {
        self.handle(client, scope, user).get().await
    }

    /// Puts the result of an interactive sign-in (device code, auth code) in the cache: the
    /// refresh token is saved first, then the access token cached.
    pub fn seed(
        &self,
        client: &OAuthClient,
        scope: &str,
        user: Option<&str>,
        response: &TokenResponse,
        received_at: SystemTime,
    ) -> Result<Arc<AccessToken>, Error> {
        let handle = self.handle(client, scope, user);
        if let Some(rt) = &response.refresh_token {
            self.inner.store.save(&handle.slot.key.store_key(), rt)?;
        }
        Ok(handle.install(response, received_at))
    }
}

/// One key of a [`TokenCache`]: what the engine keeps per sending identity. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TokenHandle {
    cache: Arc<CacheInner>,
    slot: Arc<Slot>,
    client: OAuthClient,
}

impl TokenHandle {
    /// The key.
    pub fn key(&self) -> &CacheKey {
        &self.slot.key
    }

    /// The cached token if it is usable now, without any I/O.
    pub fn peek(&self) -> Option<Arc<AccessToken>> {
        let now = self.cache.clock.now();
        let st = lock(&self.slot.state);
        match (&st.token, st.usable_until) {
            (Some(t), Some(until)) if now < until => Some(Arc::clone(t)),
            _ => None,
        }
    }

    /// Forgets the cached access token (say, after Exchange refused it with 535 5.7.3), so
    /// the next [`get`](Self::get) fetches a new one. Also clears any remembered error.
    pub fn invalidate(&self) {
        let mut st = lock(&self.slot.state);
        st.token = None;
        st.usable_until = None;
        st.refresh_at = None;
        st.last_error = None;
        st.next_attempt = None;
        st.generation += 1;
    }

    /// A usable token, refreshing if needed; see the [module documentation](crate::cache).
    pub async fn get(&self) -> Result<Arc<AccessToken>, Error> {
        match self.decide() {
            Decision::Hit(t) => Ok(t),
            Decision::Fail(e) => Err(e),
            Decision::RefreshAhead(current) => Ok(self.refresh_ahead(current).await),
            Decision::Fetch(generation) => self.fetch_blocking(generation).await,
        }
    }

    fn decide(&self) -> Decision {
        let now = self.cache.clock.now();
        let st = lock(&self.slot.state);
        if let (Some(t), Some(refresh_at), Some(until)) =
            (&st.token, st.refresh_at, st.usable_until)
        {
            if now < refresh_at {
                return Decision::Hit(Arc::clone(t));
            }
            if now < until {
                return if st.next_attempt.is_some_and(|n| now < n) {
                    Decision::Hit(Arc::clone(t))
                } else {
                    Decision::RefreshAhead(Arc::clone(t))
                };
            }
        }
        match (&st.last_error, st.next_attempt) {
            (Some(e), Some(n)) if now < n => Decision::Fail(e.clone()),
            _ => Decision::Fetch(st.generation),
        }
    }

    /// The token is still usable but due: one caller tries once; everyone keeps the old one.
    async fn refresh_ahead(&self, current: Arc<AccessToken>) -> Arc<AccessToken> {
        let Ok(_flight) = self.slot.flight.try_lock() else {
            return current;
        };
        if let Decision::Hit(t) = self.decide() {
            return t; // refreshed while we were getting here
        }
        let started = self.cache.clock.now();
        match self.fetch().await {
            Ok(resp) => self.install(&resp, started),
            Err(e) => {
                tracing::warn!(key = %self.slot.key, error = %e, "early token refresh failed; the current token keeps serving");
                self.record_failure(e, started);
                current
            }
        }
    }

    /// No usable token: wait for the one refresh in flight, or be it.
    async fn fetch_blocking(&self, seen_generation: u64) -> Result<Arc<AccessToken>, Error> {
        let _flight = self.slot.flight.lock().await;
        {
            let st = lock(&self.slot.state);
            if st.generation != seen_generation {
                // Someone finished a refresh while we waited: share its outcome.
                drop(st);
                match self.decide() {
                    Decision::Hit(t) | Decision::RefreshAhead(t) => return Ok(t),
                    Decision::Fail(e) => return Err(e),
                    Decision::Fetch(_) => {}
                }
            }
        }
        let policy = &self.cache.policy;
        let mut backoff = policy.initial_backoff;
        let mut attempt = 1;
        loop {
            let started = self.cache.clock.now();
            match self.fetch().await {
                Ok(resp) => return Ok(self.install(&resp, started)),
                Err(e)
                    if e.is_transient()
                        && attempt < policy.max_attempts
                        && (policy.retry_timeouts || !timed_out(&e)) =>
                {
                    let wait = retry_after(&e)
                        .map_or(backoff, |r| r.max(backoff))
                        .min(policy.max_backoff);
                    tracing::warn!(key = %self.slot.key, error = %e, attempt, ?wait, "token request failed; retrying");
                    self.cache.clock.sleep(wait).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(key = %self.slot.key, error = %e, remedy = %e.remedy(), "token request failed");
                    self.record_failure(e.clone(), self.cache.clock.now());
                    return Err(e);
                }
            }
        }
    }

    /// One request to the authority; for user tokens, the rotated refresh token is saved
    /// before this returns.
    async fn fetch(&self) -> Result<TokenResponse, Error> {
        let key = &self.slot.key;
        let Some(user) = key.user() else {
            return self.client.client_credentials(key.scope()).await;
        };
        let store_key = key.store_key();
        let rt = self
            .cache
            .store
            .load(&store_key)?
            .ok_or_else(|| Error::NoRefreshToken {
                key: store_key.clone(),
            })?;
        let resp = self.client.refresh(&rt, key.scope()).await?;
        if let Some(new_rt) = resp.refresh_token.as_ref().filter(|new| **new != rt) {
            self.cache.store.save(&store_key, new_rt)?;
            tracing::debug!(key = %key, user, "rotated refresh token stored");
        }
        Ok(resp)
    }

    fn install(&self, resp: &TokenResponse, received_at: SystemTime) -> Arc<AccessToken> {
        let expires_at = resp.expires_at(received_at);
        let lifetime = expires_at.duration_since(received_at).unwrap_or_default();
        let policy = &self.cache.policy;
        let skew = policy.skew.min(lifetime / 4);
        let ahead = policy.refresh_ahead.min(lifetime / 2).max(skew);
        let token = Arc::new(AccessToken {
            secret: resp.access_token.clone(),
            token_type: resp.token_type.clone(),
            expires_at,
            scope: resp.scope.clone(),
        });
        let mut st = lock(&self.slot.state);
        st.token = Some(Arc::clone(&token));
        st.usable_until = Some(expires_at - skew);
        st.refresh_at = Some(expires_at - ahead);
        st.generation += 1;
        st.last_error = None;
        st.next_attempt = None;
        st.backoff = Duration::ZERO;
        token
    }

    fn record_failure(&self, error: Error, now: SystemTime) {
        let policy = &self.cache.policy;
        let mut st = lock(&self.slot.state);
        let wait = if error.is_transient() {
            st.backoff = if st.backoff.is_zero() {
                policy.initial_backoff
            } else {
                (st.backoff * 2).min(policy.max_backoff)
            };
            retry_after(&error)
                .map_or(st.backoff, |r| r.max(st.backoff))
                .min(policy.max_backoff)
        } else {
            policy.permanent_error_hold
        };
        st.next_attempt = Some(now + wait);
        st.last_error = Some(error);
        st.generation += 1;
    }
}

/// Whether the request got no answer in time (the client's timeout or the transport's).
fn timed_out(e: &Error) -> bool {
    matches!(
        e,
        Error::Timeout(_) | Error::Transport(crate::TransportError::Timeout)
    )
}

fn retry_after(e: &Error) -> Option<Duration> {
    match e {
        Error::OAuth(o) => o.retry_after,
        Error::InvalidResponse { retry_after, .. } => *retry_after,
        _ => None,
    }
}
