//! TLS for listeners: rustls server configurations loaded from PEM files and
//! swapped atomically on reload (SIGHUP).

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::config::TlsFiles;
use super::error::Error;

/// A listener's TLS configuration, replaceable while connections run.
///
/// New handshakes use the latest configuration; running sessions keep theirs.
#[derive(Debug)]
pub(crate) struct ReloadableTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadableTls {
    pub(crate) fn load(files: &TlsFiles) -> Result<Self, Error> {
        Ok(Self {
            files: files.clone(),
            current: RwLock::new(server_config(files)?),
        })
    }

    /// Reads the files again; on error the old configuration stays.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let fresh = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        tokio_rustls::TlsAcceptor::from(config)
    }
}

/// Builds a rustls server configuration (TLS 1.2 and 1.3, ring provider) from
/// PEM files.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
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
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
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
