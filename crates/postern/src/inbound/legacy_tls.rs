//! OpenSSL acceptors for legacy-TLS listeners (`tls_min_version = "1.0"` or
//! `"1.1"`, feature `legacy-tls`), for printers and scanners that never
//! learnt TLS 1.2. rustls cannot speak TLS below 1.2, so these listeners use
//! the system OpenSSL.
//!
//! The settings are Mozilla's "intermediate" (v5) lowered just enough: TLS
//! 1.0 or 1.1 as the floor (1.2 and 1.3 still preferred), the AES-CBC-SHA
//! suites those devices have, and OpenSSL security level 0, without which
//! OpenSSL 3 refuses TLS 1.0/1.1 (their handshakes sign with SHA-1/MD5).

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslOptions, SslRef, SslVersion};

use super::config::{TlsFiles, TlsVersion};
use super::error::Error;

/// Mozilla intermediate v5 first (forward secret AEAD suites, for TLS 1.2
/// clients), then the CBC-SHA suites of the TLS 1.0/1.1 era, forward secret
/// ones before plain RSA key exchange (`AES128-SHA` is what many old devices
/// have). No RC4, 3DES, export or anonymous suites.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:\
DHE-RSA-AES128-SHA:DHE-RSA-AES256-SHA:AES128-SHA:AES256-SHA:@SECLEVEL=0";

/// Builds an OpenSSL acceptor that accepts `min_version` (1.0 or 1.1) up to
/// TLS 1.3, with the certificate chain and key from `files`.
pub(crate) fn acceptor(files: &TlsFiles, min_version: TlsVersion) -> Result<SslAcceptor, Error> {
    let openssl_err = |what: &str, e: openssl::error::ErrorStack| {
        Error::Tls(format!("legacy tls (openssl): {what}: {e}"))
    };
    let floor = if min_version <= TlsVersion::Tls10 {
        SslVersion::TLS1
    } else {
        SslVersion::TLS1_1
    };
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| openssl_err("settings", e))?;
    builder.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
    // No client-initiated renegotiation (a cheap CPU DoS, and no device needs it).
    builder.set_options(SslOptions::NO_RENEGOTIATION);
    builder
        .set_min_proto_version(Some(floor))
        .map_err(|e| openssl_err("minimum version", e))?;
    builder
        .set_cipher_list(CIPHERS)
        .map_err(|e| openssl_err("cipher list", e))?;
    builder
        .set_certificate_chain_file(&files.cert)
        .map_err(|e| {
            Error::Tls(format!(
                "cannot load certificate chain {}: {e}",
                files.cert.display()
            ))
        })?;
    // OpenSSL's errors are codes and reasons, never key material.
    builder
        .set_private_key_file(&files.key, SslFiletype::PEM)
        .map_err(|e| {
            Error::Tls(format!(
                "no usable private key in {}: {e}",
                files.key.display()
            ))
        })?;
    builder.check_private_key().map_err(|e| {
        Error::Tls(format!(
            "certificate {} and key {} do not work together: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    Ok(builder.build())
}

/// The negotiated version and cipher suite, in the same shape as the rustls
/// side: `TLSv1.0 TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA`.
pub(crate) fn describe(ssl: &SslRef) -> String {
    let version = match ssl.version_str() {
        "TLSv1" => "TLSv1.0",
        other => other,
    };
    match ssl.current_cipher() {
        Some(cipher) => format!(
            "{version} {}",
            cipher.standard_name().unwrap_or_else(|| cipher.name())
        ),
        None => version.to_owned(),
    }
}
