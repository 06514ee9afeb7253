//! A simulated Microsoft Entra ID token service (spec section C).
//!
//! [`EntraSim`] serves `/{tenant}/oauth2/v2.0/token`, `/devicecode` and `/authorize` over
//! HTTPS on `127.0.0.1` (certificate from a [`TestCa`]), with Entra's field names, error
//! bodies (`error`, `error_description` with the `\r\nTrace ID: ...` block, `error_codes`,
//! `timestamp`, `trace_id`, `correlation_id`, `error_uri`, `suberror`) and AADSTS numbers:
//!
//! - client credentials with a client secret (in the body or HTTP Basic) or a certificate
//!   assertion (RS256/PS256, `x5t#S256` or `x5t`; `aud`, `iss`, `sub`, `nbf`, `exp` and the
//!   RSA signature checked against the certificates registered on the app);
//! - refresh tokens with rotation: every use returns a new one and, as on Entra, the old one
//!   stays valid, unless the test revokes it ([`EntraSim::revoke_refresh_token`],
//!   [`EntraSim::set_revoke_on_rotation`]);
//! - the device-code flow: `authorization_pending` until the test approves
//!   ([`EntraSim::approve_device_code`]) or declines, `slow_down` when polled faster than the
//!   interval, `expired_token`;
//! - the authorization-code flow with PKCE: `/authorize` redirects at once to the
//!   `redirect_uri` with `code` and `state` as the user chosen by
//!   [`EntraSim::set_authorize_user`] (or with `error=access_denied`), and the token endpoint
//!   checks the verifier.
//!
//! Issued access tokens are opaque random strings; the simulator records what each means
//! ([`AccessToken`]: tenant, client, user, audience, scopes, roles, expiry) so the Exchange
//! simulators can check them: [`EntraSim`] is a [`TokenValidator`], and
//! [`EntraSim::validate_access_token`] returns only unexpired tokens.
//!
//! Time is the real clock; [`EntraSim::advance`] ages everything the simulator holds (tokens,
//! codes, polls) as if that much time had passed, so expiry stays consistent for every
//! simulator that reads it. Faults ([`EntraFault`]) are injected per [`Endpoint`], and
//! requests are counted per endpoint and grant type.
//!
//! Where the spec is silent the simulator picks a plausible answer and says so in the
//! variant's documentation ("approximation").
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use postern_testkit::entra::{App, EntraSim, Tenant};
//! let sim = EntraSim::builder()
//!     .tenant(Tenant::new("9188040d-6c67-4c5b-b112-36a304b66dad").domain("contoso.onmicrosoft.com"))
//!     .app(App::new("11111111-2222-3333-4444-555555555555", "9188040d-6c67-4c5b-b112-36a304b66dad")
//!         .secret("s3cret")
//!         .app_role("https://outlook.office365.com", "SMTP.SendAsApp"))
//!     .start()
//!     .await?;
//! println!("authority {} (trust {})", sim.authority(), sim.ca_pem());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::RngCore as _;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tls::TestCa;
use crate::token::{AccessToken, TokenValidator};

/// The `verification_uri` of work and school accounts.
pub const VERIFICATION_URI: &str = "https://microsoft.com/devicelogin";
/// The client assertion type of certificate credentials.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The device-code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Resources the simulator knows besides those named by app roles.
pub const KNOWN_RESOURCES: [&str; 6] = [
    "https://outlook.office365.com",
    "https://outlook.office.com",
    "https://graph.microsoft.com",
    "https://communication.azure.com",
    "https://ps.outlook.com",
    "00000002-0000-0ff1-ce00-000000000000",
];
/// The largest request body the simulator reads.
const MAX_BODY: usize = 64 * 1024;
/// Clock skew the simulator tolerates on client assertions' `nbf`.
const ASSERTION_SKEW: Duration = Duration::from_secs(300);
/// OpenID Connect scopes (no resource).
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A directory (tenant): its GUID and verified domains (either can name it in URLs).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Tenant {
    /// The tenant ID (GUID).
    pub id: String,
    /// Verified domains (`contoso.onmicrosoft.com`, `contoso.com`).
    pub domains: Vec<String>,
}

impl Tenant {
    /// A tenant with this ID.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            domains: Vec::new(),
        }
    }

    /// Adds a verified domain.
    #[must_use]
    pub fn domain(mut self, domain: &str) -> Self {
        self.domains.push(domain.to_owned());
        self
    }

    fn is_named(&self, name: &str) -> bool {
        self.id.eq_ignore_ascii_case(name)
            || self.domains.iter().any(|d| d.eq_ignore_ascii_case(name))
    }
}

/// An app registration.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct App {
    /// Application (client) ID.
    pub client_id: String,
    /// Display name (in consent errors).
    pub name: String,
    /// Home tenant ID.
    pub tenant_id: String,
    /// Client secrets: value and whether it has expired.
    pub secrets: Vec<(String, bool)>,
    /// Registered certificates, DER.
    pub certificates: Vec<Vec<u8>>,
    /// "Allow public client flows": no credential expected (device code, desktop auth code).
    pub public_client: bool,
    /// Registered redirect URIs (for `http://localhost` and `http://127.0.0.1` the port is
    /// ignored, as on Entra).
    pub redirect_uris: Vec<String>,
    /// Application permissions as (resource, role), e.g.
    /// (`https://outlook.office365.com`, `SMTP.SendAsApp`).
    pub app_roles: Vec<(String, String)>,
    /// Delegated permissions as (resource, scope), granted for `{resource}/.default`.
    pub delegated: Vec<(String, String)>,
    /// Whether an administrator consented for the whole tenant (default true).
    pub admin_consent: bool,
}

impl App {
    /// A confidential app with no credential yet, admin consent granted, and `http://localhost`
    /// as redirect URI.
    pub fn new(client_id: &str, tenant_id: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            name: format!("app {client_id}"),
            tenant_id: tenant_id.to_owned(),
            secrets: Vec::new(),
            certificates: Vec::new(),
            public_client: false,
            redirect_uris: vec!["http://localhost".to_owned()],
            app_roles: Vec::new(),
            delegated: Vec::new(),
            admin_consent: true,
        }
    }

    /// A public client ("Allow public client flows": device code, desktop auth code).
    pub fn public(client_id: &str, tenant_id: &str) -> Self {
        Self {
            public_client: true,
            ..Self::new(client_id, tenant_id)
        }
    }

    /// Adds a valid client secret.
    #[must_use]
    pub fn secret(mut self, value: &str) -> Self {
        self.secrets.push((value.to_owned(), false));
        self
    }

    /// Adds an expired client secret (AADSTS7000222 when used).
    #[must_use]
    pub fn expired_secret(mut self, value: &str) -> Self {
        self.secrets.push((value.to_owned(), true));
        self
    }

    /// Registers a certificate (PEM). Panics on a PEM without a CERTIFICATE block (a test bug).
    #[must_use]
    pub fn certificate_pem(mut self, pem: &str) -> Self {
        self.certificates
            .push(pem_certificate(pem).expect("a PEM CERTIFICATE block"));
        self
    }

    /// Adds a redirect URI.
    #[must_use]
    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.to_owned());
        self
    }

    /// Adds an application permission (a role in app-only tokens).
    #[must_use]
    pub fn app_role(mut self, resource: &str, role: &str) -> Self {
        self.app_roles.push((resource.to_owned(), role.to_owned()));
        self
    }

    /// Adds a delegated permission (granted by `{resource}/.default`).
    #[must_use]
    pub fn delegated(mut self, resource: &str, scope: &str) -> Self {
        self.delegated.push((resource.to_owned(), scope.to_owned()));
        self
    }

    /// Sets whether admin consent was granted.
    #[must_use]
    pub fn admin_consent(mut self, granted: bool) -> Self {
        self.admin_consent = granted;
        self
    }
}

/// A user account.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct User {
    /// User principal name.
    pub upn: String,
    /// Tenant ID.
    pub tenant_id: String,
    /// Apps this user consented to (besides apps with admin consent).
    pub consented: Vec<String>,
}

impl User {
    /// A user of `tenant_id`.
    pub fn new(upn: &str, tenant_id: &str) -> Self {
        Self {
            upn: upn.to_owned(),
            tenant_id: tenant_id.to_owned(),
            consented: Vec::new(),
        }
    }

    /// Records the user's consent to `client_id`.
    #[must_use]
    pub fn consent(mut self, client_id: &str) -> Self {
        self.consented.push(client_id.to_owned());
        self
    }
}

/// An endpoint of the simulator, for faults and request counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /{tenant}/oauth2/v2.0/token`
    Token,
    /// `POST /{tenant}/oauth2/v2.0/devicecode`
    DeviceCode,
    /// `GET /{tenant}/oauth2/v2.0/authorize`
    Authorize,
}

/// A way for the simulator to misbehave on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntraFault {
    /// Answer this HTTP status with an Entra JSON error: 429 gives `temporarily_unavailable`
    /// AADSTS90055 (tenant throttled), anything else `temporarily_unavailable` AADSTS90033 (a
    /// transient error); `Retry-After` if given.
    Status {
        /// The HTTP status (429, 500, 502, 503, 504, ...).
        status: u16,
        /// The `Retry-After` header, in seconds.
        retry_after: Option<u64>,
    },
    /// Answer 502 with an HTML page, as a proxy or load balancer would.
    HtmlPage,
    /// Accept the request and never answer.
    Hang,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// `invalid_client` AADSTS7000215 (wrong secret), HTTP 401.
    InvalidClient,
    /// `invalid_grant` AADSTS70008 (refresh token or code expired), HTTP 400.
    InvalidGrant,
    /// `invalid_grant` AADSTS65001 with `suberror` `consent_required`, HTTP 400.
    ConsentRequired,
    /// `temporarily_unavailable` AADSTS50033 ("retry"), HTTP 400.
    TemporarilyUnavailable,
}

/// A running simulator. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct EntraSim {
    shared: Arc<Shared>,
    _guard: Arc<ServerGuard>,
}

impl std::fmt::Debug for EntraSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraSim")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

struct ServerGuard {
    shutdown: watch::Sender<bool>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

struct Shared {
    addr: SocketAddr,
    ca: TestCa,
    state: Mutex<State>,
}

/// Builder of [`EntraSim`].
#[derive(Debug, Default)]
#[must_use]
pub struct EntraSimBuilder {
    tenants: Vec<Tenant>,
    apps: Vec<App>,
    users: Vec<User>,
    token_lifetime: Option<Duration>,
    device_interval: Option<u64>,
    device_lifetime: Option<Duration>,
    ca: Option<TestCa>,
}

impl EntraSimBuilder {
    /// Adds a tenant.
    pub fn tenant(mut self, tenant: Tenant) -> Self {
        self.tenants.push(tenant);
        self
    }

    /// Adds an app registration.
    pub fn app(mut self, app: App) -> Self {
        self.apps.push(app);
        self
    }

    /// Adds a user.
    pub fn user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }

    /// Access-token lifetime (`expires_in`, default 3599 s).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = Some(lifetime);
        self
    }

    /// Device-code polling interval in seconds (default 5).
    pub fn device_code_interval(mut self, seconds: u64) -> Self {
        self.device_interval = Some(seconds);
        self
    }

    /// Device-code lifetime (default 900 s).
    pub fn device_code_lifetime(mut self, lifetime: Duration) -> Self {
        self.device_lifetime = Some(lifetime);
        self
    }

    /// Issues the server certificate from this CA (share one CA across simulators).
    pub fn ca(mut self, ca: TestCa) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Binds `127.0.0.1:0` and starts serving (on the current tokio runtime).
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn start(self) -> std::io::Result<EntraSim> {
        let ca = self.ca.unwrap_or_default();
        let cert = ca.server_cert(&["login.microsoftonline.com"]);
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&cert, &[b"http/1.1"]));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = State {
            tenants: self.tenants,
            apps: self
                .apps
                .into_iter()
                .map(|a| (a.client_id.clone(), a))
                .collect(),
            users: self
                .users
                .into_iter()
                .map(|u| (u.upn.to_ascii_lowercase(), u))
                .collect(),
            token_lifetime: self.token_lifetime.unwrap_or(Duration::from_secs(3599)),
            device_interval: self.device_interval.unwrap_or(5),
            device_lifetime: self.device_lifetime.unwrap_or(Duration::from_secs(900)),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            addr,
            ca,
            state: Mutex::new(state),
        });
        let (tx, rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&shared), rx));
        Ok(EntraSim {
            shared,
            _guard: Arc::new(ServerGuard { shutdown: tx }),
        })
    }
}

#[derive(Default)]
struct State {
    tenants: Vec<Tenant>,
    apps: HashMap<String, App>,
    users: HashMap<String, User>,
    token_lifetime: Duration,
    device_interval: u64,
    device_lifetime: Duration,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshRecord>,
    codes: HashMap<String, CodeRecord>,
    devices: HashMap<String, DeviceRecord>,
    faults: HashMap<Endpoint, VecDeque<EntraFault>>,
    sticky: HashMap<Endpoint, EntraFault>,
    counts: HashMap<Endpoint, usize>,
    grant_counts: HashMap<String, usize>,
    revoke_on_rotation: bool,
    authorize_user: Option<String>,
    last_user_code: Option<String>,
}

struct RefreshRecord {
    tenant_id: String,
    client_id: String,
    user: String,
    issued_at: SystemTime,
    expires_at: SystemTime,
    revoked: bool,
}

struct CodeRecord {
    tenant_id: String,
    client_id: String,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    scope: String,
    user: String,
    expires_at: SystemTime,
    redeemed: bool,
}

#[derive(Clone, PartialEq, Eq)]
enum DeviceStatus {
    Pending,
    Approved(String),
    Declined,
}

struct DeviceRecord {
    user_code: String,
    tenant_id: String,
    client_id: String,
    scope: String,
    expires_at: SystemTime,
    interval: u64,
    last_poll: SystemTime,
    status: DeviceStatus,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EntraSim {
    /// Starts a builder.
    pub fn builder() -> EntraSimBuilder {
        EntraSimBuilder::default()
    }

    /// The authority base URL, `https://127.0.0.1:{port}` (tenant and path follow).
    pub fn authority(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// The token endpoint of `tenant`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.authority())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The CA that issued the server certificate: what clients must trust.
    pub fn ca(&self) -> &TestCa {
        &self.shared.ca
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.shared.ca.cert_pem().to_owned()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// What an access token means, if the simulator issued it and it has not expired.
    pub fn validate_access_token(&self, token: &str) -> Option<AccessToken> {
        self.state()
            .access
            .get(token)
            .filter(|t| !t.is_expired(SystemTime::now()))
            .cloned()
    }

    /// Every access token issued so far (expired ones included).
    pub fn issued_access_tokens(&self) -> Vec<AccessToken> {
        self.state().access.values().cloned().collect()
    }

    /// Ages everything the simulator holds by `by`: token, code and device-code expiries and
    /// the time of the last device-code poll, as if `by` had passed.
    pub fn advance(&self, by: Duration) {
        let mut st = self.state();
        let back = |t: &mut SystemTime| *t = t.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH);
        for t in st.access.values_mut() {
            if let Some(e) = t.expires_at.as_mut() {
                back(e);
            }
        }
        for r in st.refresh.values_mut() {
            back(&mut r.expires_at);
            back(&mut r.issued_at);
        }
        for c in st.codes.values_mut() {
            back(&mut c.expires_at);
        }
        for d in st.devices.values_mut() {
            back(&mut d.expires_at);
            back(&mut d.last_poll);
        }
    }

    /// Makes every access token issued so far expired.
    pub fn expire_access_tokens(&self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for t in self.state().access.values_mut() {
            t.expires_at = Some(past);
        }
    }

    /// Makes every refresh token issued so far expired (AADSTS70008 when used).
    pub fn expire_refresh_tokens(&self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for r in self.state().refresh.values_mut() {
            r.expires_at = past;
        }
    }

    /// Revokes one refresh token (AADSTS50173 when used). Returns whether it was known.
    pub fn revoke_refresh_token(&self, token: &str) -> bool {
        self.state()
            .refresh
            .get_mut(token)
            .map(|r| r.revoked = true)
            .is_some()
    }

    /// Revokes every refresh token of a user (password reset, "revoke sessions").
    pub fn revoke_user_refresh_tokens(&self, upn: &str) {
        for r in self.state().refresh.values_mut() {
            if r.user.eq_ignore_ascii_case(upn) {
                r.revoked = true;
            }
        }
    }

    /// When on, a refresh token is revoked as soon as it is used (stricter than Entra, which
    /// leaves it valid): a client that loses the rotated token is then locked out.
    pub fn set_revoke_on_rotation(&self, on: bool) {
        self.state().revoke_on_rotation = on;
    }

    /// The number of refresh tokens of `upn` that still work.
    pub fn live_refresh_tokens(&self, upn: &str) -> usize {
        let now = SystemTime::now();
        self.state()
            .refresh
            .values()
            .filter(|r| r.user.eq_ignore_ascii_case(upn) && !r.revoked && r.expires_at > now)
            .count()
    }

    /// The user as whom `/authorize` signs in (redirecting with a code); `None` makes it
    /// redirect with `error=access_denied`, as when the user cancels. Default `None`.
    pub fn set_authorize_user(&self, upn: Option<&str>) {
        self.state().authorize_user = upn.map(str::to_owned);
    }

    /// What `/authorize` answers for `url`, without HTTP (for tests that play the browser):
    /// `Ok(location)` for a redirect, `Err(page text)` for an error page.
    ///
    /// # Errors
    /// The error page's text when Entra would not redirect (unknown app, unregistered
    /// redirect URI, malformed request).
    pub fn authorize(&self, url: &str) -> Result<String, String> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let path = url.split_once("://").map_or(url, |(_, rest)| rest);
        let tenant = path.split('/').nth(1).unwrap_or("");
        let params = parse_form(query.as_bytes());
        authorize(&mut self.state(), tenant, &params)
    }

    /// Approves a pending device code as `upn`. Returns whether the user code was pending.
    pub fn approve_device_code(&self, user_code: &str, upn: &str) -> bool {
        self.set_device_status(user_code, DeviceStatus::Approved(upn.to_owned()))
    }

    /// Declines a pending device code (`authorization_declined`).
    pub fn decline_device_code(&self, user_code: &str) -> bool {
        self.set_device_status(user_code, DeviceStatus::Declined)
    }

    fn set_device_status(&self, user_code: &str, status: DeviceStatus) -> bool {
        let mut st = self.state();
        match st
            .devices
            .values_mut()
            .find(|d| d.user_code == user_code && d.status == DeviceStatus::Pending)
        {
            Some(d) => {
                d.status = status;
                true
            }
            None => false,
        }
    }

    /// The user code of the most recent device-code request.
    pub fn last_user_code(&self) -> Option<String> {
        self.state().last_user_code.clone()
    }

    /// Sets whether `upn` consented to `client_id` (taking consent away gives AADSTS65001).
    pub fn set_user_consent(&self, upn: &str, client_id: &str, consented: bool) {
        let mut st = self.state();
        if let Some(u) = st.users.get_mut(&upn.to_ascii_lowercase()) {
            u.consented.retain(|c| c != client_id);
            if consented {
                u.consented.push(client_id.to_owned());
            }
        }
    }

    /// Sets whether admin consent is granted for `client_id`.
    pub fn set_admin_consent(&self, client_id: &str, granted: bool) {
        if let Some(a) = self.state().apps.get_mut(client_id) {
            a.admin_consent = granted;
        }
    }

    /// Makes the next request to `endpoint` misbehave (faults queue up in order).
    pub fn inject(&self, endpoint: Endpoint, fault: EntraFault) {
        self.state()
            .faults
            .entry(endpoint)
            .or_default()
            .push_back(fault);
    }

    /// Makes every request to `endpoint` misbehave until cleared (`None`). Queued faults go
    /// first.
    pub fn set_sticky(&self, endpoint: Endpoint, fault: Option<EntraFault>) {
        let mut st = self.state();
        match fault {
            Some(f) => st.sticky.insert(endpoint, f),
            None => st.sticky.remove(&endpoint),
        };
    }

    /// Removes every queued and sticky fault.
    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.faults.clear();
        st.sticky.clear();
    }

    /// Requests received by `endpoint` so far (faulty ones included).
    pub fn request_count(&self, endpoint: Endpoint) -> usize {
        self.state().counts.get(&endpoint).copied().unwrap_or(0)
    }

    /// Token requests received with this `grant_type` (`client_credentials`,
    /// `refresh_token`, `authorization_code`, or [`DEVICE_CODE_GRANT`]).
    pub fn grant_count(&self, grant_type: &str) -> usize {
        self.state()
            .grant_counts
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }
}

impl TokenValidator for EntraSim {
    fn validate(&self, token: &str) -> Option<AccessToken> {
        self.state().access.get(token).cloned()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

type Resp = hyper::Response<Full<Bytes>>;

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let (acceptor, shared, mut shutdown) = (acceptor.clone(), Arc::clone(&shared), shutdown.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = shutdown.changed() => {}
                    }
                });
            }
        }
    }
}

/// The request facts handlers need.
struct Req {
    tenant: String,
    params: HashMap<String, String>,
    basic: Option<(String, String)>,
    correlation_id: Option<String>,
    origin: String,
}

async fn handle(shared: &Shared, req: hyper::Request<hyper::body::Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (tenant, endpoint) = match segments.as_slice() {
        [t, "oauth2", "v2.0", "token"] => (*t, Endpoint::Token),
        [t, "oauth2", "v2.0", "devicecode"] => (*t, Endpoint::DeviceCode),
        [t, "oauth2", "v2.0", "authorize"] => (*t, Endpoint::Authorize),
        _ => return plain(404, "Not Found"),
    };
    let tenant = tenant.to_owned();
    let correlation_id = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64)
        .map(str::to_owned);
    let basic = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic);
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_owned();

    let fault = {
        let mut st = lock(&shared.state);
        *st.counts.entry(endpoint).or_default() += 1;
        let queued = st.faults.get_mut(&endpoint).and_then(VecDeque::pop_front);
        queued.or_else(|| st.sticky.get(&endpoint).cloned())
    };
    let corr = correlation_id.as_deref();
    match fault {
        None => {}
        Some(EntraFault::Hang) => std::future::pending::<()>().await,
        Some(EntraFault::Delay(d)) => tokio::time::sleep(d).await,
        Some(EntraFault::HtmlPage) => {
            return html(
                502,
                "<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>",
            );
        }
        Some(EntraFault::Status {
            status,
            retry_after,
        }) => {
            let (code, msg) = if status == 429 {
                (
                    90055,
                    "TenantThrottlingError - There are too many incoming requests. This indicates that the tenant is throttled.",
                )
            } else {
                (90033, "A transient error has occurred. Please try again.")
            };
            let mut resp = oauth_error(
                status,
                "temporarily_unavailable",
                Some(code),
                msg,
                None,
                corr,
            );
            if let Some(s) = retry_after {
                resp.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, s.into());
            }
            return resp;
        }
        Some(EntraFault::InvalidClient) => {
            return oauth_error(
                401,
                "invalid_client",
                Some(7000215),
                &invalid_secret_text("the application"),
                None,
                corr,
            );
        }
        Some(EntraFault::InvalidGrant) => {
            return oauth_error(
                400,
                "invalid_grant",
                Some(70008),
                TEXT_70008,
                Some("bad_token"),
                corr,
            );
        }
        Some(EntraFault::ConsentRequired) => {
            return oauth_error(
                400,
                "invalid_grant",
                Some(65001),
                &consent_text("the application", "the application"),
                Some("consent_required"),
                corr,
            );
        }
        Some(EntraFault::TemporarilyUnavailable) => {
            return oauth_error(
                400,
                "temporarily_unavailable",
                Some(50033),
                "A transient error has occurred. Please try again.",
                None,
                corr,
            );
        }
    }

    if endpoint == Endpoint::Authorize {
        if method != hyper::Method::GET {
            return plain(405, "Method Not Allowed");
        }
        let params = parse_form(query.as_bytes());
        return match authorize(&mut lock(&shared.state), &tenant, &params) {
            Ok(location) => hyper::Response::builder()
                .status(302)
                .header(hyper::header::LOCATION, location)
                .header(hyper::header::CACHE_CONTROL, "no-store, no-cache")
                .body(Full::new(Bytes::new()))
                .unwrap_or_else(|_| plain(500, "response")),
            Err(page) => html(
                400,
                &format!("<html><body><h1>Sign in</h1><p>{page}</p></body></html>"),
            ),
        };
    }
    if method != hyper::Method::POST {
        return oauth_error(
            400,
            "invalid_request",
            Some(900561),
            &format!("The endpoint only accepts POST requests. Received a {method} request."),
            None,
            corr,
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(413, "Request body too large"),
    };
    let request = Req {
        tenant,
        params: parse_form(&body),
        basic,
        correlation_id,
        origin: format!("https://{}", shared.addr),
    };
    let mut st = lock(&shared.state);
    let result = match endpoint {
        Endpoint::Token => token_endpoint(&mut st, &request),
        _ => devicecode_endpoint(&mut st, &request),
    };
    match result {
        Ok(body) => json_response(200, &body),
        Err(e) => oauth_error(
            e.status,
            e.error,
            e.code,
            &e.message,
            e.suberror,
            request.correlation_id.as_deref(),
        ),
    }
}

fn plain(status: u16, text: &str) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text.to_owned())))
        .unwrap_or_default()
}

fn html(status: u16, page: &str) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(page.to_owned())))
        .unwrap_or_default()
}

/// A JSON response with the headers Entra sends (spec C.3).
fn json_response(status: u16, body: &Value) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header(
            hyper::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .header(hyper::header::CACHE_CONTROL, "no-store, no-cache")
        .header(hyper::header::PRAGMA, "no-cache")
        .header(hyper::header::EXPIRES, "-1")
        .header(
            "Strict-Transport-Security",
            "max-age=31536000; includeSubDomains",
        )
        .header("X-Content-Type-Options", "nosniff")
        .header("P3P", "CP=\"DSP CUR OTPi IND OTRi ONL FIN\"")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

/// An Entra error body (spec C.8): the description ends with the trace block.
fn oauth_error(
    status: u16,
    error: &str,
    code: Option<u32>,
    message: &str,
    suberror: Option<&str>,
    correlation_id: Option<&str>,
) -> Resp {
    let trace_id = uuid();
    let correlation_id = correlation_id.map_or_else(uuid, str::to_owned);
    let timestamp = entra_timestamp(SystemTime::now());
    let head = code.map_or_else(|| message.to_owned(), |c| format!("AADSTS{c}: {message}"));
    let mut body = json!({
        "error": error,
        "error_description": format!("{head}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"),
        "error_codes": code.map_or_else(Vec::new, |c| vec![c]),
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    });
    if let Some(c) = code {
        body["error_uri"] = json!(format!("https://login.microsoftonline.com/error?code={c}"));
    }
    if let Some(s) = suberror {
        body["suberror"] = json!(s);
    }
    let mut resp = json_response(status, &body);
    resp.headers_mut().insert(
        "x-ms-request-id",
        trace_id
            .parse()
            .unwrap_or_else(|_| "0".parse().unwrap_or_else(|_| unreachable!())),
    );
    resp
}

// ---------------------------------------------------------------------------------------------
// Protocol

/// A refusal: status, `error`, AADSTS number, message (without the number), `suberror`.
struct Refusal {
    status: u16,
    error: &'static str,
    code: Option<u32>,
    message: String,
    suberror: Option<&'static str>,
}

fn refuse(status: u16, error: &'static str, code: u32, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        code: Some(code),
        message: message.into(),
        suberror: None,
    }
}

fn missing(param: &str) -> Refusal {
    refuse(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

const TEXT_70008: &str = "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.";

fn invalid_secret_text(app: &str) -> String {
    format!(
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{app}'."
    )
}

fn consent_text(client_id: &str, name: &str) -> String {
    format!(
        "The user or administrator has not consented to use the application with ID '{client_id}' named '{name}'. Send an interactive authorization request for this user and resource."
    )
}

impl State {
    fn tenant(&self, name: &str) -> Result<&Tenant, Refusal> {
        self.tenants.iter().find(|t| t.is_named(name)).ok_or_else(|| {
            refuse(400, "invalid_request", 90002, format!("Tenant '{name}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."))
        })
    }

    /// Resolves the path's tenant and the app: tenant-independent names (`common`,
    /// `organizations`) resolve to the app's home tenant.
    fn tenant_and_app(&self, tenant: &str, client_id: &str) -> Result<(String, App), Refusal> {
        let app = self.apps.get(client_id);
        let generic = matches!(
            tenant.to_ascii_lowercase().as_str(),
            "common" | "organizations" | "consumers"
        );
        let tenant_id = match (generic, app) {
            (true, Some(a)) => a.tenant_id.clone(),
            _ => self.tenant(tenant)?.id.clone(),
        };
        match app {
            Some(a) if a.tenant_id == tenant_id => Ok((tenant_id, a.clone())),
            _ => Err(refuse(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            )),
        }
    }

    fn consented(&self, app: &App, upn: &str) -> bool {
        app.admin_consent
            || self
                .users
                .get(&upn.to_ascii_lowercase())
                .is_some_and(|u| u.consented.contains(&app.client_id))
    }

    fn issue(&mut self, token: AccessToken) -> (String, u64) {
        let lifetime = self.token_lifetime;
        let secret = random_b64(48);
        self.access.insert(
            secret.clone(),
            token.expiring_at(SystemTime::now() + lifetime),
        );
        (secret, lifetime.as_secs())
    }

    fn issue_refresh(&mut self, tenant_id: &str, client_id: &str, user: &str) -> String {
        let rt = format!("0.A{}", random_b64(96));
        let now = SystemTime::now();
        self.refresh.insert(
            rt.clone(),
            RefreshRecord {
                tenant_id: tenant_id.to_owned(),
                client_id: client_id.to_owned(),
                user: user.to_owned(),
                issued_at: now,
                expires_at: now + Duration::from_secs(90 * 24 * 3600),
                revoked: false,
            },
        );
        rt
    }

    /// Issues the delegated token response (spec C.5): access token, plus a refresh token
    /// with `offline_access` and an ID token with `openid`.
    fn delegated_response(
        &mut self,
        tenant_id: &str,
        app: &App,
        user: &str,
        scope: &str,
        origin: &str,
    ) -> Result<Value, Refusal> {
        if !self.consented(app, user) {
            let mut r = refuse(
                400,
                "invalid_grant",
                65001,
                consent_text(&app.client_id, &app.name),
            );
            r.suberror = Some("consent_required");
            return Err(r);
        }
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        let (audience, granted) = delegated_scopes(&scopes, app)?;
        let token = AccessToken::delegated(
            tenant_id,
            &app.client_id,
            user,
            &audience,
            granted.iter().map(String::as_str),
        );
        let (access_token, expires_in) = self.issue(token);
        let full: Vec<String> = granted.iter().map(|s| format!("{audience}/{s}")).collect();
        let mut body = json!({
            "token_type": "Bearer",
            "scope": full.join(" "),
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        });
        if scopes.contains(&"offline_access") {
            body["refresh_token"] = json!(self.issue_refresh(tenant_id, &app.client_id, user));
        }
        if scopes.contains(&"openid") {
            body["id_token"] = json!(id_token(
                origin,
                tenant_id,
                &app.client_id,
                user,
                expires_in
            ));
        }
        Ok(body)
    }
}

/// The audience and the short scope names of a delegated request; one resource only.
fn delegated_scopes(scopes: &[&str], app: &App) -> Result<(String, Vec<String>), Refusal> {
    let mut audience: Option<String> = None;
    let mut granted = Vec::new();
    for s in scopes.iter().filter(|s| !OIDC_SCOPES.contains(s)) {
        let (resource, name) = match s.rsplit_once('/') {
            Some((r, n)) if r.contains("://") || r.len() == 36 => (r.to_owned(), n.to_owned()),
            _ => ("https://graph.microsoft.com".to_owned(), (*s).to_owned()),
        };
        if audience.as_ref().is_some_and(|a| *a != resource) {
            return Err(refuse(
                400,
                "invalid_scope",
                70011,
                format!(
                    "The provided value for the input parameter 'scope' isn't valid. The scope {} isn't valid: scopes for more than one resource were requested.",
                    scopes.join(" ")
                ),
            ));
        }
        if name == ".default" {
            granted.extend(
                app.delegated
                    .iter()
                    .filter(|(r, _)| *r == resource)
                    .map(|(_, n)| n.clone()),
            );
        } else {
            granted.push(name);
        }
        audience = Some(resource);
    }
    Ok((
        audience.unwrap_or_else(|| "https://graph.microsoft.com".to_owned()),
        granted,
    ))
}

fn token_endpoint(st: &mut State, req: &Req) -> Result<Value, Refusal> {
    let p = &req.params;
    let grant = p
        .get("grant_type")
        .ok_or_else(|| missing("grant_type"))?
        .clone();
    *st.grant_counts.entry(grant.clone()).or_default() += 1;
    let client_id = p
        .get("client_id")
        .cloned()
        .or_else(|| req.basic.as_ref().map(|(id, _)| id.clone()))
        .ok_or_else(|| missing("client_id"))?;
    let generic = matches!(
        req.tenant.to_ascii_lowercase().as_str(),
        "common" | "consumers" | "organizations"
    );
    if grant == "client_credentials" && generic {
        return Err(refuse(
            400,
            "invalid_request",
            9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        ));
    }
    let (tenant_id, app) = st.tenant_and_app(&req.tenant, &client_id)?;
    authenticate_client(&app, req, &grant)?;
    match grant.as_str() {
        "client_credentials" => client_credentials(st, &tenant_id, &app, p),
        "refresh_token" => refresh_grant(st, &tenant_id, &app, req),
        "authorization_code" => code_grant(st, &tenant_id, &app, req),
        DEVICE_CODE_GRANT => device_grant(st, &app, req),
        other => Err(refuse(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{other}'."),
        )),
    }
}

fn authenticate_client(app: &App, req: &Req, grant: &str) -> Result<(), Refusal> {
    let p = &req.params;
    let secret = p
        .get("client_secret")
        .cloned()
        .or_else(|| req.basic.as_ref().map(|(_, s)| s.clone()));
    let assertion = p.get("client_assertion");
    if app.public_client {
        if secret.is_some() || assertion.is_some() {
            return Err(refuse(
                401,
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
            ));
        }
        if grant == "client_credentials" {
            return Err(refuse(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
        return Ok(());
    }
    if let Some(secret) = secret {
        return match app.secrets.iter().find(|(v, _)| *v == secret) {
            Some((_, false)) => Ok(()),
            Some((_, true)) => Err(refuse(
                401,
                "invalid_client",
                7000222,
                format!(
                    "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                    app.client_id
                ),
            )),
            None => Err(refuse(
                401,
                "invalid_client",
                7000215,
                invalid_secret_text(&app.client_id),
            )),
        };
    }
    if let Some(jwt) = assertion {
        if p.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(refuse(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            ));
        }
        let audiences = token_audiences(req, &app.tenant_id);
        return verify_assertion(app, jwt, &audiences, SystemTime::now());
    }
    Err(refuse(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ))
}

/// The token endpoint URLs a client assertion's `aud` may name.
fn token_audiences(req: &Req, tenant_id: &str) -> Vec<String> {
    [req.tenant.as_str(), tenant_id]
        .iter()
        .map(|t| format!("{}/{t}/oauth2/v2.0/token", req.origin))
        .collect()
}

fn client_credentials(
    st: &mut State,
    tenant_id: &str,
    app: &App,
    p: &HashMap<String, String>,
) -> Result<Value, Refusal> {
    let scope = p.get("scope").ok_or_else(|| missing("scope"))?;
    let resource = match scope.strip_suffix("/.default") {
        Some(r) if !r.contains(' ') => r.to_owned(),
        _ => {
            return Err(refuse(
                400,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        }
    };
    let known = KNOWN_RESOURCES.contains(&resource.as_str())
        || app.app_roles.iter().any(|(r, _)| *r == resource);
    if !known {
        return Err(refuse(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant_id}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    // Without admin consent Entra still issues a token, with no roles (Exchange then refuses it).
    let roles: Vec<&str> = if app.admin_consent {
        app.app_roles
            .iter()
            .filter(|(r, _)| *r == resource)
            .map(|(_, n)| n.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let (access_token, expires_in) = st.issue(AccessToken::app_only(
        tenant_id,
        &app.client_id,
        &resource,
        roles,
    ));
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access_token,
    }))
}

fn refresh_grant(st: &mut State, tenant_id: &str, app: &App, req: &Req) -> Result<Value, Refusal> {
    let p = &req.params;
    let rt = p
        .get("refresh_token")
        .ok_or_else(|| missing("refresh_token"))?;
    let now = SystemTime::now();
    let revoke = st.revoke_on_rotation;
    let Some(record) = st.refresh.get_mut(rt) else {
        return Err(refuse(
            400,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        ));
    };
    if record.client_id != app.client_id || record.tenant_id != tenant_id {
        return Err(refuse(
            400,
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed.",
        ));
    }
    if record.revoked {
        let mut r = refuse(
            400,
            "invalid_grant",
            50173,
            format!(
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
                iso(record.issued_at),
                iso(now)
            ),
        );
        r.suberror = Some("bad_token");
        return Err(r);
    }
    if record.expires_at <= now {
        let mut r = refuse(400, "invalid_grant", 70008, TEXT_70008);
        r.suberror = Some("bad_token");
        return Err(r);
    }
    let user = record.user.clone();
    if revoke {
        record.revoked = true;
    }
    let scope = p
        .get("scope")
        .cloned()
        .unwrap_or_else(|| "https://graph.microsoft.com/.default".to_owned());
    // A refresh always returns a new refresh token (rotation), offline_access or not.
    let mut body = st.delegated_response(tenant_id, app, &user, &scope, &req.origin)?;
    if body.get("refresh_token").is_none() {
        body["refresh_token"] = json!(st.issue_refresh(tenant_id, &app.client_id, &user));
    }
    Ok(body)
}

fn code_grant(st: &mut State, tenant_id: &str, app: &App, req: &Req) -> Result<Value, Refusal> {
    let p = &req.params;
    let code = p.get("code").ok_or_else(|| missing("code"))?;
    let now = SystemTime::now();
    let Some(record) = st.codes.get_mut(code) else {
        return Err(refuse(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'code' parameter is not valid.",
        ));
    };
    if record.redeemed {
        return Err(refuse(
            400,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        ));
    }
    if record.client_id != app.client_id || record.tenant_id != tenant_id {
        return Err(refuse(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'code' parameter is not valid.",
        ));
    }
    if record.expires_at <= now {
        return Err(refuse(400, "invalid_grant", 70008, TEXT_70008));
    }
    if p.get("redirect_uri") != Some(&record.redirect_uri) {
        // Approximation: the spec gives no text for this case.
        return Err(refuse(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'redirect_uri' is not valid. The value must exactly match the redirect URI used to obtain the authorization code.",
        ));
    }
    if let Some((challenge, method)) = &record.challenge {
        let verifier = p
            .get("code_verifier")
            .ok_or_else(|| missing("code_verifier"))?;
        let computed = if method == "plain" {
            verifier.clone()
        } else {
            URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
        };
        if computed != *challenge {
            return Err(refuse(
                400,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            ));
        }
    }
    record.redeemed = true;
    let (user, granted_scope) = (record.user.clone(), record.scope.clone());
    let scope = p.get("scope").cloned().unwrap_or(granted_scope);
    st.delegated_response(tenant_id, app, &user, &scope, &req.origin)
}

fn device_grant(st: &mut State, app: &App, req: &Req) -> Result<Value, Refusal> {
    let p = &req.params;
    let device_code = p.get("device_code").ok_or_else(|| missing("device_code"))?;
    let now = SystemTime::now();
    let bad = || {
        refuse(
            400,
            "bad_verification_code",
            70018,
            "The provided value for the input parameter 'device_code' is not valid: the device code is not recognised.",
        )
    };
    let Some(d) = st.devices.get_mut(device_code) else {
        return Err(bad());
    };
    if d.client_id != app.client_id {
        return Err(bad());
    }
    if d.expires_at <= now {
        return Err(refuse(
            400,
            "expired_token",
            70019,
            "Verification code expired. Have the user retry the sign-in.",
        ));
    }
    let elapsed = now.duration_since(d.last_poll).unwrap_or_default();
    d.last_poll = now;
    if elapsed < Duration::from_secs(d.interval) {
        d.interval += 5;
        // Approximation: whether Entra sends slow_down is unverified (spec H); RFC 8628 §3.5.
        return Err(Refusal { status: 400, error: "slow_down", code: None, message: "The client is polling too quickly; wait at least the interval, plus 5 seconds, between polls.".to_owned(), suberror: None });
    }
    match d.status.clone() {
        DeviceStatus::Pending => Err(refuse(
            400,
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        )),
        DeviceStatus::Declined => {
            st.devices.remove(device_code);
            // Approximation: the spec gives no AADSTS number for a declined sign-in.
            Err(Refusal {
                status: 400,
                error: "authorization_declined",
                code: None,
                message: "The end user denied the authorization request.".to_owned(),
                suberror: None,
            })
        }
        DeviceStatus::Approved(user) => {
            let (tenant_id, scope) = (d.tenant_id.clone(), d.scope.clone());
            st.devices.remove(device_code);
            st.delegated_response(&tenant_id, app, &user, &scope, &req.origin)
        }
    }
}

fn devicecode_endpoint(st: &mut State, req: &Req) -> Result<Value, Refusal> {
    let client_id = req
        .params
        .get("client_id")
        .ok_or_else(|| missing("client_id"))?;
    let scope = req
        .params
        .get("scope")
        .ok_or_else(|| missing("scope"))?
        .clone();
    let (tenant_id, _app) = st.tenant_and_app(&req.tenant, client_id)?;
    let device_code = random_b64(48);
    let user_code = user_code();
    let now = SystemTime::now();
    st.devices.insert(
        device_code.clone(),
        DeviceRecord {
            user_code: user_code.clone(),
            tenant_id,
            client_id: client_id.clone(),
            scope,
            expires_at: now + st.device_lifetime,
            interval: st.device_interval,
            last_poll: now,
            status: DeviceStatus::Pending,
        },
    );
    st.last_user_code = Some(user_code.clone());
    Ok(json!({
        "user_code": user_code,
        "device_code": device_code,
        "verification_uri": VERIFICATION_URI,
        "expires_in": st.device_lifetime.as_secs(),
        "interval": st.device_interval,
        "message": format!("To sign in, use a web browser to open the page {VERIFICATION_URI} and enter the code {user_code} to authenticate."),
    }))
}

fn authorize(st: &mut State, tenant: &str, p: &HashMap<String, String>) -> Result<String, String> {
    let client_id = p.get("client_id").ok_or(
        "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
    )?;
    let (tenant_id, app) = st
        .tenant_and_app(tenant, client_id)
        .map_err(|r| format!("AADSTS{}: {}", r.code.unwrap_or(0), r.message))?;
    let redirect_uri = p.get("redirect_uri").ok_or(
        "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'.",
    )?;
    if !app
        .redirect_uris
        .iter()
        .any(|r| redirect_matches(r, redirect_uri))
    {
        return Err(format!(
            "AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this."
        ));
    }
    let mut target =
        url::Url::parse(redirect_uri).map_err(|e| format!("invalid redirect_uri: {e}"))?;
    let state = p.get("state").cloned();
    let mut pairs: Vec<(&str, String)> = Vec::new();
    match (
        p.get("response_type").map(String::as_str),
        st.authorize_user.clone(),
    ) {
        (Some("code"), Some(user)) => {
            let challenge = p.get("code_challenge").map(|c| {
                (
                    c.clone(),
                    p.get("code_challenge_method")
                        .cloned()
                        .unwrap_or_else(|| "plain".to_owned()),
                )
            });
            let code = format!("1.A{}", random_b64(64));
            st.codes.insert(
                code.clone(),
                CodeRecord {
                    tenant_id,
                    client_id: client_id.clone(),
                    redirect_uri: redirect_uri.clone(),
                    challenge,
                    scope: p.get("scope").cloned().unwrap_or_default(),
                    user,
                    expires_at: SystemTime::now() + Duration::from_secs(600),
                    redeemed: false,
                },
            );
            pairs.push(("code", code));
        }
        (Some("code"), None) => {
            pairs.push(("error", "access_denied".to_owned()));
            pairs.push((
                "error_description",
                "the user canceled the authentication".to_owned(),
            ));
        }
        _ => {
            pairs.push(("error", "unsupported_response_type".to_owned()));
            pairs.push((
                "error_description",
                "AADSTS700054: response_type 'id_token' is not enabled for the application."
                    .to_owned(),
            ));
        }
    }
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    {
        let mut q = target.query_pairs_mut();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
    }
    Ok(target.to_string())
}

/// Entra's redirect URI matching: exact, except that for `localhost`/`127.0.0.1` over `http`
/// the port is ignored, and a URI without a path matches `/`.
fn redirect_matches(registered: &str, sent: &str) -> bool {
    let (Ok(r), Ok(s)) = (url::Url::parse(registered), url::Url::parse(sent)) else {
        return false;
    };
    let loopback = r.scheme() == "http" && matches!(r.host_str(), Some("localhost" | "127.0.0.1"));
    r.scheme() == s.scheme()
        && r.host_str() == s.host_str()
        && (loopback || r.port_or_known_default() == s.port_or_known_default())
        && r.path() == s.path()
}

// ---------------------------------------------------------------------------------------------
// Client assertions

fn invalid_client(code: u32, message: impl Into<String>) -> Refusal {
    refuse(401, "invalid_client", code, message)
}

fn verify_assertion(
    app: &App,
    jwt: &str,
    audiences: &[String],
    now: SystemTime,
) -> Result<(), Refusal> {
    let malformed = |why: &str| {
        invalid_client(
            50027,
            format!("JWT token is invalid or malformed. [Reason - {why}]"),
        )
    };
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("the assertion is not a JWS in compact form."));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    let (Some(header), Some(claims), Ok(signature)) =
        (decode(h), decode(c), URL_SAFE_NO_PAD.decode(s))
    else {
        return Err(malformed(
            "the header, claims or signature is not base64url JSON.",
        ));
    };
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let s256 = header.get("x5t#S256").and_then(Value::as_str);
    let sha1 = header.get("x5t").and_then(Value::as_str);
    let cert = app.certificates.iter().find(|der| {
        s256.is_some_and(|t| t == URL_SAFE_NO_PAD.encode(Sha256::digest(der)))
            || sha1.is_some_and(|t| t == URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(der)))
    });
    let Some(cert) = cert else {
        let thumb = s256.or(sha1).unwrap_or("");
        return Err(invalid_client(
            700027,
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumb}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments if you intend to use national clouds.]",
                app.client_id
            ),
        ));
    };
    let key = spki(cert)
        .and_then(|k| RsaPublicKey::from_public_key_der(k).ok())
        .ok_or_else(|| malformed("the registered certificate has no RSA key."))?;
    let input = format!("{h}.{c}");
    let valid = match alg {
        "RS256" => rsa::pkcs1v15::Signature::try_from(signature.as_slice()).is_ok_and(|sig| {
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        }),
        "PS256" => rsa::pss::Signature::try_from(signature.as_slice()).is_ok_and(|sig| {
            rsa::pss::VerifyingKey::<Sha256>::new(key)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        }),
        _ => return Err(malformed(&format!("unsupported alg '{alg}'."))),
    };
    if !valid {
        return Err(invalid_client(
            700027,
            "Client assertion failed signature validation.",
        ));
    }
    let claim = |k: &str| claims.get(k).and_then(Value::as_str);
    if claim("iss") != Some(app.client_id.as_str()) || claim("sub") != Some(app.client_id.as_str())
    {
        return Err(invalid_client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
        ));
    }
    if !claim("aud").is_some_and(|a| audiences.iter().any(|x| x == a)) {
        // Approximation: the spec gives no text for a wrong audience.
        return Err(malformed("the audience claim is not this token endpoint."));
    }
    if claim("jti").is_none_or(str::is_empty) {
        return Err(malformed("the jti claim is missing."));
    }
    let secs = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_u64)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    };
    let (Some(nbf), Some(exp)) = (secs("nbf"), secs("exp")) else {
        return Err(malformed("the nbf and exp claims are required."));
    };
    if now + ASSERTION_SKEW < nbf || now >= exp {
        return Err(invalid_client(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
                iso(now),
                iso(nbf),
                iso(exp)
            ),
        ));
    }
    Ok(())
}

/// The SubjectPublicKeyInfo (whole TLV) of a DER certificate.
fn spki(cert: &[u8]) -> Option<&[u8]> {
    fn tlv(input: &[u8]) -> Option<(usize, usize)> {
        // (header length, total length)
        let first = *input.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let len = input
                .get(2..2 + n)?
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        };
        Some((header, header.checked_add(len)?))
    }
    let (h, _) = tlv(cert)?; // Certificate SEQUENCE
    let tbs = cert.get(h..)?;
    let (h, total) = tlv(tbs)?; // TBSCertificate SEQUENCE
    let mut rest = tbs.get(h..total)?;
    if rest.first() == Some(&0xa0) {
        rest = rest.get(tlv(rest)?.1..)?; // [0] version
    }
    for _ in 0..5 {
        rest = rest.get(tlv(rest)?.1..)?; // serial, signature, issuer, validity, subject
    }
    rest.get(..tlv(rest)?.1)
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn parse_form(bytes: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

/// `Authorization: Basic base64(urlencoded id ":" urlencoded secret)` (RFC 6749 §2.3.1).
fn parse_basic(value: &str) -> Option<(String, String)> {
    let raw = STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn uuid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Nine upper-case letters and digits, as Entra's user codes.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 9];
    rand::rng().fill_bytes(&mut b);
    b.iter()
        .map(|x| char::from(ALPHABET[usize::from(*x) % ALPHABET.len()]))
        .collect()
}

/// `2016-01-09 02:02:12Z`, Entra's `timestamp` format.
fn entra_timestamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// `2023-08-01T11:08:01.5274809Z`, the format of AADSTS700024's times.
fn iso(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let base = t
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    format!("{base}.{:07}Z", t.nanosecond() / 100)
}

/// An ID token for the client (unsigned: our client does not validate it).
fn id_token(origin: &str, tenant_id: &str, client_id: &str, upn: &str, lifetime: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = json!({"typ": "JWT", "alg": "none"});
    let claims = json!({
        "aud": client_id, "iss": format!("{origin}/{tenant_id}/v2.0"), "tid": tenant_id,
        "preferred_username": upn, "oid": uuid(), "iat": now, "nbf": now, "exp": now + lifetime,
    });
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_matching() {
        assert!(redirect_matches(
            "http://localhost",
            "http://localhost:53123/"
        ));
        assert!(redirect_matches("http://127.0.0.1", "http://127.0.0.1:1/"));
        assert!(!redirect_matches("http://localhost", "http://127.0.0.1:1/"));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
        assert!(!redirect_matches(
            "http://localhost/cb",
            "http://localhost:5/"
        ));
    }

    #[test]
    fn formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_452_304_932_527);
        assert_eq!(entra_timestamp(t), "2016-01-09 02:02:12Z");
        assert_eq!(iso(t), "2016-01-09T02:02:12.5270000Z");
        let code = user_code();
        assert_eq!(code.len(), 9);
        assert!(
            code.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_eq!(
            parse_basic("Basic YXBwOnMlM0FjcmV0"),
            Some(("app".into(), "s:cret".into()))
        );
    }

    #[test]
    fn delegated_scope_resolution() {
        let app = App::new("a", "t").delegated("https://outlook.office.com", "SMTP.Send");
        let (aud, granted) = delegated_scopes(
            &["https://outlook.office.com/SMTP.Send", "offline_access"],
            &app,
        )
        .ok()
        .unwrap();
        assert_eq!(
            (aud.as_str(), granted),
            ("https://outlook.office.com", vec!["SMTP.Send".to_owned()])
        );
        let (_, granted) = delegated_scopes(&["https://outlook.office.com/.default"], &app)
            .ok()
            .unwrap();
        assert_eq!(granted, ["SMTP.Send"]);
        assert!(
            delegated_scopes(
                &[
                    "https://outlook.office.com/SMTP.Send",
                    "https://graph.microsoft.com/Mail.Send"
                ],
                &app
            )
            .is_err()
        );
    }
}
