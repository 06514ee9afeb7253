//! The HTTP seam: [`HttpClient`], and the default [`ReqwestClient`] (feature `reqwest`).

use std::future::Future;
use std::pin::Pin;

use crate::TransportError;

/// The future returned by [`HttpClient::execute`].
pub type HttpFuture<'a> =
    Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, TransportError>> + Send + 'a>>;

/// Performs one HTTPS exchange. Implementations must not follow redirects.
///
/// Object safe: the crate holds it as `Arc<dyn HttpClient>`. Any
/// `Fn(http::Request<Vec<u8>>) -> impl Future<Output = Result<http::Response<Vec<u8>>, TransportError>>`
/// closure is an `HttpClient`, which is how unit tests inject canned answers:
///
/// ```
/// use postern_entra::{HttpClient, TransportError};
/// let fake = |req: http::Request<Vec<u8>>| async move {
///     assert_eq!(req.method(), "POST");
///     Ok::<_, TransportError>(http::Response::new(br#"{"access_token":"t","expires_in":60}"#.to_vec()))
/// };
/// let client: std::sync::Arc<dyn HttpClient> = std::sync::Arc::new(fake);
/// # let _ = client;
/// ```
pub trait HttpClient: Send + Sync + 'static {
    /// Sends `request` and returns the whole response.
    fn execute(&self, request: http::Request<Vec<u8>>) -> HttpFuture<'_>;
}

impl<F, Fut> HttpClient for F
where
    F: Fn(http::Request<Vec<u8>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<Vec<u8>>, TransportError>> + Send + 'static,
{
    fn execute(&self, request: http::Request<Vec<u8>>) -> HttpFuture<'_> {
        Box::pin(self(request))
    }
}

#[cfg(feature = "reqwest")]
pub use self::reqwest_impl::{ReqwestClient, ReqwestClientBuilder};

#[cfg(feature = "reqwest")]
mod reqwest_impl {
    use std::path::Path;
    use std::time::Duration;

    use super::{HttpClient, HttpFuture};
    use crate::{Error, MAX_RESPONSE_LEN, TransportError};

    /// The default transport: reqwest on rustls (ring), redirects off.
    ///
    /// - trusts the system's root certificates, plus any extra CA files given (a
    ///   TLS-inspecting proxy's CA, a test CA);
    /// - honours `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY` from the environment
    ///   (reqwest's default system proxy); note that loopback is proxied too unless `NO_PROXY`
    ///   names it, or [`ReqwestClientBuilder::no_proxy`] is used;
    /// - connect timeout 10 s and whole-exchange timeout 30 s by default;
    /// - reads at most [`MAX_RESPONSE_LEN`] bytes of body.
    #[derive(Debug, Clone)]
    pub struct ReqwestClient {
        client: reqwest::Client,
    }

    /// Builder of [`ReqwestClient`].
    #[derive(Debug, Default)]
    pub struct ReqwestClientBuilder {
        extra_cas: Vec<Vec<u8>>,
        timeout: Option<Duration>,
        connect_timeout: Option<Duration>,
        no_proxy: bool,
    }

    impl ReqwestClient {
        /// A client with the defaults above.
        pub fn new() -> Result<Self, Error> {
            Self::builder().build()
        }

        /// Starts a builder.
        pub fn builder() -> ReqwestClientBuilder {
            ReqwestClientBuilder::default()
        }
    }

    impl ReqwestClientBuilder {
        /// Trusts the CA certificates of a PEM file as well as the system roots.
        pub fn extra_ca_file(mut self, path: &Path) -> Result<Self, Error> {
            let pem = std::fs::read(path)
                .map_err(|e| Error::io(format!("reading CA file {}", path.display()), e))?;
            self.extra_cas.push(pem);
            Ok(self)
        }

        /// Trusts the CA certificates of PEM text as well as the system roots.
        pub fn extra_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.extra_cas.push(pem.into());
            self
        }

        /// Timeout for the whole exchange (default 30 s).
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = Some(timeout);
            self
        }

        /// Timeout for connecting (default 10 s).
        pub fn connect_timeout(mut self, timeout: Duration) -> Self {
            self.connect_timeout = Some(timeout);
            self
        }

        /// Ignores proxy environment variables.
        pub fn no_proxy(mut self) -> Self {
            self.no_proxy = true;
            self
        }

        /// Builds the client.
        pub fn build(self) -> Result<ReqwestClient, Error> {
            let mut b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(self.timeout.unwrap_or(Duration::from_secs(30)))
                .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(10)))
                .user_agent(concat!("postern-entra/", env!("CARGO_PKG_VERSION")))
                .https_only(false);
            if self.no_proxy {
                b = b.no_proxy();
            }
            for pem in &self.extra_cas {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| Error::Config(format!("extra CA is not PEM: {e}")))?;
                if certs.is_empty() {
                    return Err(Error::Config(
                        "extra CA file holds no certificate".to_owned(),
                    ));
                }
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            let client = b
                .build()
                .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
            Ok(ReqwestClient { client })
        }
    }

    impl HttpClient for ReqwestClient {
        fn execute(&self, request: http::Request<Vec<u8>>) -> HttpFuture<'_> {
            Box::pin(async move {
                let req = reqwest::Request::try_from(request)
                    .map_err(|e| TransportError::Other(e.to_string()))?;
                let mut resp = self.client.execute(req).await.map_err(classify)?;
                let mut out = http::Response::builder()
                    .status(resp.status())
                    .version(resp.version());
                if let Some(h) = out.headers_mut() {
                    *h = std::mem::take(resp.headers_mut());
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(classify)? {
                    if body.len() + chunk.len() > MAX_RESPONSE_LEN {
                        return Err(TransportError::TooLong(MAX_RESPONSE_LEN));
                    }
                    body.extend_from_slice(&chunk);
                }
                out.body(body)
                    .map_err(|e| TransportError::Other(e.to_string()))
            })
        }
    }

    fn classify(e: reqwest::Error) -> TransportError {
        // Walk the source chain: reqwest's own Display is terse ("error sending request").
        let mut text = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            text.push_str(": ");
            text.push_str(&s.to_string());
            src = s.source();
        }
        if e.is_timeout() {
            TransportError::Timeout
        } else if text.contains("certificate") || text.contains("tls") || text.contains("TLS") {
            TransportError::Tls(text)
        } else if e.is_connect() {
            TransportError::Connect(text)
        } else {
            TransportError::Other(text)
        }
    }
}
