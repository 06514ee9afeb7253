//! The outbound TLS configuration: TLS 1.2 and 1.3 only, the system roots plus a route's
//! extra CA file, and an optional client certificate (certificate connectors).

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the client configuration of one route.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("ca_file {} holds no certificate", path.display()));
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates: the system has none and no ca_file is set".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let pem = std::fs::read(cert)
                .map_err(|e| format!("cannot read client_cert {}: {e}", cert.display()))?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client_cert {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "client_cert {} holds no certificate",
                    cert.display()
                ));
            }
            let key_pem = std::fs::read(key)
                .map_err(|e| format!("cannot read client_key {}: {e}", key.display()))?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("client_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    Ok(Arc::new(config))
}
