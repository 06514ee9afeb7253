//! TLS for listeners: acceptors loaded from PEM files and swapped atomically
//! on reload (SIGHUP).
//!
//! Two TLS stacks sit behind one [`Acceptor`]: rustls for TLS 1.2 and 1.3
//! (every listener by default) and, with the `legacy-tls` feature, OpenSSL for
//! listeners whose `tls_min_version` is below 1.2 (rustls has no TLS 1.0/1.1).
//! Both hand the session a [`TlsStream`], so the session code is the same
//! over either.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::config::{TlsFiles, TlsVersion};
use super::error::Error;

/// A listener's TLS configuration, replaceable while connections run.
///
/// New handshakes use the latest configuration; running sessions keep theirs.
#[derive(Debug)]
pub(crate) struct ReloadableTls {
    files: TlsFiles,
    min_version: TlsVersion,
    current: RwLock<Acceptor>,
}

impl ReloadableTls {
    pub(crate) fn load(files: &TlsFiles, min_version: TlsVersion) -> Result<Self, Error> {
        Ok(Self {
            files: files.clone(),
            min_version,
            current: RwLock::new(Acceptor::load(files, min_version)?),
        })
    }

    /// Reads the files again; on error the old configuration stays.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let fresh = Acceptor::load(&self.files, self.min_version)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The current acceptor (cheap: a reference count).
    pub(crate) fn acceptor(&self) -> Acceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Upgrades a stream to TLS with one of the two stacks.
#[derive(Clone)]
pub(crate) enum Acceptor {
    /// rustls: TLS 1.2 and 1.3.
    Rustls(Arc<ServerConfig>),
    /// OpenSSL with TLS 1.0/1.1 allowed (feature `legacy-tls`).
    #[cfg(feature = "legacy-tls")]
    OpenSsl(Arc<openssl::ssl::SslAcceptor>),
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rustls(_) => f.write_str("Acceptor::Rustls"),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(_) => f.write_str("Acceptor::OpenSsl"),
        }
    }
}

impl Acceptor {
    /// Loads `files` for the stack that `min_version` needs.
    fn load(files: &TlsFiles, min_version: TlsVersion) -> Result<Self, Error> {
        if min_version.is_legacy() {
            #[cfg(feature = "legacy-tls")]
            return Ok(Self::OpenSsl(Arc::new(super::legacy_tls::acceptor(
                files,
                min_version,
            )?)));
            #[cfg(not(feature = "legacy-tls"))]
            return Err(Error::Config(super::config::legacy_tls_not_built(
                min_version,
            )));
        }
        Ok(Self::Rustls(server_config(files, min_version)?))
    }

    /// Runs the server side of the handshake on `stream`.
    pub(crate) async fn accept<S>(self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self {
            Self::Rustls(config) => tokio_rustls::TlsAcceptor::from(config)
                .accept(stream)
                .await
                .map(|s| TlsStream::Rustls(Box::new(s))),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(acceptor) => {
                let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(io::Error::other)?;
                let mut s = tokio_openssl::SslStream::new(ssl, stream).map_err(io::Error::other)?;
                Pin::new(&mut s).accept().await.map_err(|e| {
                    e.into_io_error()
                        .unwrap_or_else(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                })?;
                Ok(TlsStream::OpenSsl(s))
            }
        }
    }
}

/// A server-side TLS stream over either stack.
pub(crate) enum TlsStream<S> {
    /// rustls (boxed: its connection state is large).
    Rustls(Box<tokio_rustls::server::TlsStream<S>>),
    /// OpenSSL (feature `legacy-tls`).
    #[cfg(feature = "legacy-tls")]
    OpenSsl(tokio_openssl::SslStream<S>),
}

impl<S> TlsStream<S> {
    /// The negotiated version and cipher suite for logs and `Received:`,
    /// e.g. `TLSv1.3 TLS13_AES_256_GCM_SHA384`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Rustls(s) => describe(s.get_ref().1),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(s) => super::legacy_tls::describe(s.ssl()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Rustls(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Rustls(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Rustls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Rustls(s) => s.is_write_vectored(),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Rustls(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Rustls(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "legacy-tls")]
            Self::OpenSsl(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Builds a rustls server configuration (TLS 1.2 and 1.3, or 1.3 only, ring
/// provider) from PEM files.
pub(crate) fn server_config(
    files: &TlsFiles,
    min_version: TlsVersion,
) -> Result<Arc<ServerConfig>, Error> {
    let tls_err = |what: String| Error::Tls(what);
    let cert_pem = std::fs::read(&files.cert).map_err(|e| {
        tls_err(format!(
            "cannot read certificate {}: {e}",
            files.cert.display()
        ))
    })?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("bad PEM in {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!(
            "no CERTIFICATE in {}",
            files.cert.display()
        )));
    }
    let key_pem = std::fs::read(&files.key).map_err(|e| {
        tls_err(format!(
            "cannot read private key {}: {e}",
            files.key.display()
        ))
    })?;
    // The error of a key parse never contains key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        tls_err(format!(
            "no usable private key in {}: {e}",
            files.key.display()
        ))
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = if min_version >= TlsVersion::Tls13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| tls_err(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            tls_err(format!(
                "certificate {} and key {} do not work together: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    Ok(Arc::new(config))
}

/// A short description of the negotiated TLS session for logs and `Received:`.
pub(crate) fn describe(conn: &rustls::ServerConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_owned(),
    };
    match conn.negotiated_cipher_suite() {
        Some(suite) => format!("{version} {:?}", suite.suite()),
        None => version,
    }
}
