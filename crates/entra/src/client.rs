//! [`OAuthClient`]: one application at one authority and tenant, and every way to get a token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::pkce::{random_token, random_uuid};
use crate::request::{self, ClientAuth, Grant};
use crate::response::{parse_device_code_response, parse_token_response};
use crate::{
    Authority, CertificateCredential, Clock, DeviceCodeResponse, Error, HttpClient,
    LoopbackListener, PkceVerifier, Secret, SystemClock, TokenResponse,
};

/// How the application authenticates itself to the token endpoint.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credential {
    /// A public client (device code, auth code on a desktop): no secret.
    None,
    /// A client secret (its Value, not its ID).
    Secret(Secret),
    /// A certificate: a signed client assertion on every request.
    Certificate(Arc<CertificateCredential>),
}

/// An OAuth client: authority, tenant, client ID and credential, plus the transport and
/// clock it uses. Cheap to clone.
///
/// Its futures run on tokio with the time driver enabled: every request is bounded by
/// [`OAuthClientBuilder::timeout`].
///
/// ```no_run
/// # async fn f() -> Result<(), postern_entra::Error> {
/// use postern_entra::{Authority, OAuthClient, Secret};
/// let client = OAuthClient::builder(Authority::global(), "contoso.onmicrosoft.com", "00000000-0000-0000-0000-000000000001")
///     .client_secret(Secret::new("the secret's Value"))
///     .build()?;
/// let token = client.client_credentials("https://outlook.office365.com/.default").await?;
/// # let _ = token; Ok(()) }
/// ```
#[derive(Clone)]
pub struct OAuthClient {
    inner: Arc<Inner>,
}

struct Inner {
    authority: Authority,
    tenant: String,
    client_id: String,
    credential: Credential,
    http: Arc<dyn HttpClient>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("authority", &self.inner.authority.id())
            .field("tenant", &self.inner.tenant)
            .field("client_id", &self.inner.client_id)
            .field("credential", &self.inner.credential)
            .finish_non_exhaustive()
    }
}

/// Builder of [`OAuthClient`].
#[must_use]
pub struct OAuthClientBuilder {
    authority: Authority,
    tenant: String,
    client_id: String,
    credential: Credential,
    http: Option<Arc<dyn HttpClient>>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

impl fmt::Debug for OAuthClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClientBuilder")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OAuthClientBuilder {
    /// Authenticates with a client secret.
    pub fn client_secret(mut self, secret: Secret) -> Self {
        self.credential = Credential::Secret(secret);
        self
    }

    /// Authenticates with a certificate (client assertion).
    pub fn certificate(mut self, certificate: CertificateCredential) -> Self {
        self.credential = Credential::Certificate(Arc::new(certificate));
        self
    }

    /// Sets the credential.
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credential = credential;
        self
    }

    /// The transport (default: [`ReqwestClient`](crate::ReqwestClient) with its defaults, when
    /// the `reqwest` feature is on).
    pub fn http_client(mut self, http: Arc<dyn HttpClient>) -> Self {
        self.http = Some(http);
        self
    }

    /// The clock (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The longest wait for one answer of the authority (default 30 s), applied around the
    /// transport whatever it is.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the client; checks the tenant and that a transport is available.
    pub fn build(self) -> Result<OAuthClient, Error> {
        self.authority.token_url(&self.tenant)?;
        if self.client_id.is_empty() {
            return Err(Error::Config("the client ID is empty".to_owned()));
        }
        let http = match self.http {
            Some(h) => h,
            #[cfg(feature = "reqwest")]
            None => Arc::new(crate::ReqwestClient::new()?),
            #[cfg(not(feature = "reqwest"))]
            None => {
                return Err(Error::Config(
                    "no HTTP client: enable feature `reqwest` or pass one".to_owned(),
                ));
            }
        };
        Ok(OAuthClient {
            inner: Arc::new(Inner {
                authority: self.authority,
                tenant: self.tenant,
                client_id: self.client_id,
                credential: self.credential,
                http,
                clock: self.clock,
                timeout: self.timeout,
            }),
        })
    }
}

impl OAuthClient {
    /// Starts a builder for `client_id` at `authority` / `tenant` (a tenant ID, a verified
    /// domain, or `organizations` / `common` / `consumers` for delegated flows).
    pub fn builder(
        authority: Authority,
        tenant: impl Into<String>,
        client_id: impl Into<String>,
    ) -> OAuthClientBuilder {
        OAuthClientBuilder {
            authority,
            tenant: tenant.into(),
            client_id: client_id.into(),
            credential: Credential::None,
            http: None,
            clock: Arc::new(SystemClock::new()),
            timeout: Duration::from_secs(30),
        }
    }

    /// The authority.
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// The client (application) ID.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The clock this client uses.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Client credentials grant (spec C.3): the app's own token, e.g. for
    /// `https://outlook.office365.com/.default`. With a certificate, an assertion refused as
    /// outside its time range (AADSTS700024) is rebuilt and sent once more.
    pub async fn client_credentials(&self, scope: &str) -> Result<TokenResponse, Error> {
        match self.token(Grant::ClientCredentials, Some(scope)).await {
            Err(e)
                if e.aadsts() == Some(700024)
                    && matches!(self.inner.credential, Credential::Certificate(_)) =>
            {
                tracing::warn!(
                    "client assertion outside its valid time range; retrying once with a new one"
                );
                self.token(Grant::ClientCredentials, Some(scope)).await
            }
            other => other,
        }
    }

    /// Refresh token grant (spec C.6). The answer usually holds a new refresh token: store it
    /// before using the access token (the [`TokenCache`](crate::TokenCache) does).
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        scope: &str,
    ) -> Result<TokenResponse, Error> {
        self.token(Grant::RefreshToken(refresh_token), Some(scope))
            .await
    }

    /// Starts the device-code flow (spec C.7): show the answer's message to the user, then
    /// call [`poll_device_code`](Self::poll_device_code).
    pub async fn request_device_code(&self, scope: &str) -> Result<DeviceCodeResponse, Error> {
        let url = self.inner.authority.device_code_url(&self.inner.tenant)?;
        let req = request::device_code_request(&url, &self.inner.client_id, scope, &random_uuid());
        let resp = self.send(req).await?;
        parse_device_code_response(&resp)
    }

    /// Polls the token endpoint until the user signs in: waits `interval` between polls,
    /// adds 5 s on `slow_down` (RFC 8628 §3.5), and stops on `expired_token`,
    /// `authorization_declined`, `bad_verification_code` or any other error, each with its
    /// remedy. Transient errors (network, 5xx) are waited out like `authorization_pending`
    /// until the code expires.
    pub async fn poll_device_code(
        &self,
        device: &DeviceCodeResponse,
    ) -> Result<TokenResponse, Error> {
        let clock = &self.inner.clock;
        let deadline = clock.now() + Duration::from_secs(device.expires_in);
        let mut interval = Duration::from_secs(device.interval.max(1));
        loop {
            clock.sleep(interval).await;
            if clock.now() >= deadline {
                return Err(Error::DeviceCodeExpired);
            }
            match self
                .token(Grant::DeviceCode(&device.device_code), None)
                .await
            {
                Ok(t) => return Ok(t),
                Err(e) => match e.oauth().map(|o| o.error.as_str()) {
                    Some("authorization_pending") => {}
                    Some("slow_down") => {
                        interval += Duration::from_secs(5);
                        tracing::debug!(?interval, "device code: slow_down");
                    }
                    _ if e.is_transient() => {
                        tracing::warn!(error = %e, "device code poll failed; polling on")
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// The whole device-code flow: asks for a code, hands it to `show` (print
    /// [`DeviceCodeResponse::display_message`]), and polls until the user signs in.
    pub async fn device_code(
        &self,
        scope: &str,
        show: impl FnOnce(&DeviceCodeResponse),
    ) -> Result<TokenResponse, Error> {
        let device = self.request_device_code(scope).await?;
        show(&device);
        self.poll_device_code(&device).await
    }

    /// Prepares the browser step of the authorization-code flow with PKCE (spec C.5).
    pub fn authorization_request(
        &self,
        redirect_uri: &str,
        scope: &str,
    ) -> Result<AuthorizationRequest, Error> {
        let endpoint = self.inner.authority.authorize_url(&self.inner.tenant)?;
        let verifier = PkceVerifier::new();
        let state = random_token(16);
        let url = request::authorize_url(
            &endpoint,
            &self.inner.client_id,
            redirect_uri,
            scope,
            &state,
            &verifier,
        );
        Ok(AuthorizationRequest {
            url,
            state,
            verifier,
            redirect_uri: redirect_uri.to_owned(),
        })
    }

    /// Redeems an authorization code (spec C.5).
    pub async fn exchange_code(
        &self,
        code: &Secret,
        request: &AuthorizationRequest,
        scope: &str,
    ) -> Result<TokenResponse, Error> {
        let grant = Grant::AuthorizationCode {
            code,
            redirect_uri: &request.redirect_uri,
            verifier: &request.verifier,
        };
        self.token(grant, Some(scope)).await
    }

    /// The whole authorization-code flow on this machine: builds the authorize URL for the
    /// listener's redirect URI, hands it to `open` (print it or start a browser), waits up to
    /// `wait` for the redirect, checks `state`, and redeems the code.
    pub async fn auth_code_interactive(
        &self,
        scope: &str,
        listener: &LoopbackListener,
        wait: Duration,
        open: impl FnOnce(&Url),
    ) -> Result<TokenResponse, Error> {
        let request = self.authorization_request(&listener.redirect_uri(), scope)?;
        open(&request.url);
        let code = listener.wait_for_code(&request.state, wait).await?;
        self.exchange_code(&code, &request, scope).await
    }

    async fn token(&self, grant: Grant<'_>, scope: Option<&str>) -> Result<TokenResponse, Error> {
        let url = self.inner.authority.token_url(&self.inner.tenant)?;
        let request_id = random_uuid();
        let assertion;
        let auth = match &self.inner.credential {
            Credential::None => ClientAuth::None,
            Credential::Secret(s) => ClientAuth::Secret(s),
            Credential::Certificate(c) => {
                assertion = c.assertion(
                    &self.inner.client_id,
                    url.as_str(),
                    self.inner.clock.now(),
                    &random_uuid(),
                )?;
                ClientAuth::Assertion(&assertion)
            }
        };
        let req =
            request::token_request(&url, &self.inner.client_id, scope, grant, auth, &request_id);
        let resp = self.send(req).await?;
        parse_token_response(&resp)
    }

    async fn send(&self, req: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, Error> {
        match tokio::time::timeout(self.inner.timeout, self.inner.http.execute(req)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Timeout(self.inner.timeout)),
        }
    }
}

/// The browser step of the authorization-code flow: the URL to open, and what the redirect
/// must be checked against.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// The URL to open in the user's browser.
    pub url: Url,
    /// The `state` the redirect must carry back.
    pub state: String,
    /// The PKCE verifier (secret until the code is redeemed).
    pub verifier: PkceVerifier,
    /// The redirect URI sent (the token request must repeat it).
    pub redirect_uri: String,
}
