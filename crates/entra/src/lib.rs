//! OAuth 2.0 tokens from Microsoft Entra ID, and from any other OAuth authority.
//!
//! Exchange Online takes mail from Postern only with a fresh access token (XOAUTH2). This
//! crate gets one every way an administrator can, and keeps one ready without ever losing
//! the refresh token.
//!
//! ```text
//!             pure                                   I/O (one seam each)
//!  request::token_request ──▶ http::Request ──▶ HttpClient (ReqwestClient) ──▶ authority
//!  response::parse_*      ◀── http::Response ◀──┘
//!  TokenCache ── Clock (time is an input) ── RefreshTokenStore (FileStore: 0600, atomic)
//! ```
//!
//! - Building requests ([`request`]) and parsing answers ([`response`]) is pure: no
//!   sockets, files or clocks. Errors become a typed [`OAuthError`] with the AADSTS number,
//!   trace and correlation ids, [`is_transient`](OAuthError::is_transient) and a
//!   [`remedy`](OAuthError::remedy).
//! - [`OAuthClient`] runs the flows over an [`HttpClient`]: client credentials with a secret
//!   or a certificate ([`CertificateCredential`], RS256/PS256 with `x5t#S256`), refresh
//!   token, device code, and authorization code with PKCE through a [`LoopbackListener`].
//! - [`TokenCache`] hands out cached tokens, refreshes ahead of expiry with one request
//!   however many tasks ask, retries transient failures while a valid token keeps serving,
//!   and writes rotated refresh tokens to a [`RefreshTokenStore`] before using the new access
//!   token. See [`cache`] for the timing.
//! - [`Authority`] covers the global, US Government and China clouds, any Entra-shaped base
//!   URL (a local simulator), and generic OAuth servers such as Google.
//! - Secrets live in [`Secret`], whose `Debug` and `Display` print `<redacted>`.
//!
//! # Example
//!
//! ```no_run
//! # async fn f() -> Result<(), postern_entra::Error> {
//! use postern_entra::{Authority, FileStore, OAuthClient, Secret, TokenCache};
//! use std::sync::Arc;
//!
//! let client = OAuthClient::builder(Authority::global(), "contoso.onmicrosoft.com", "00000000-0000-0000-0000-000000000001")
//!     .client_secret(Secret::from_file("/etc/postern/client-secret".as_ref()).map_err(|e| postern_entra::Error::Config(e.to_string()))?)
//!     .build()?;
//! let cache = TokenCache::new(Arc::new(FileStore::new("/var/lib/postern/tokens.json")));
//! let token = cache.get(&client, "https://outlook.office365.com/.default", None).await?;
//! println!("expires at {:?}", token.expires_at);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `reqwest` (default): [`ReqwestClient`], the default transport (reqwest on rustls with
//!   ring; system roots plus extra CA files; `HTTPS_PROXY`/`NO_PROXY`; redirects off).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authority;
pub mod cache;
mod client;
mod clock;
mod error;
mod http;
mod jwt;
mod loopback;
mod pkce;
pub mod request;
pub mod response;
mod secret;
mod store;

pub use crate::authority::Authority;
pub use crate::cache::{AccessToken, CacheKey, CachePolicy, TokenCache, TokenHandle};
pub use crate::client::{AuthorizationRequest, Credential, OAuthClient, OAuthClientBuilder};
pub use crate::clock::{Clock, ManualClock, SleepFuture, SystemClock};
pub use crate::error::{Error, TransportError};
pub use crate::http::{HttpClient, HttpFuture};
#[cfg(feature = "reqwest")]
pub use crate::http::{ReqwestClient, ReqwestClientBuilder};
pub use crate::jwt::{CertificateCredential, SigningAlgorithm};
pub use crate::loopback::{LoopbackListener, MAX_REDIRECT_REQUEST};
pub use crate::pkce::PkceVerifier;
pub use crate::response::{DeviceCodeResponse, MAX_RESPONSE_LEN, OAuthError, TokenResponse};
pub use crate::secret::Secret;
pub use crate::store::{FileStore, MemoryStore, RefreshTokenStore};
