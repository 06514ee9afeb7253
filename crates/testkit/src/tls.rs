//! A generated certificate authority and the TLS configurations the simulators serve with.
//!
//! Every simulator presents a certificate issued by one [`TestCa`], made fresh for each test
//! run with `rcgen`. Clients trust [`TestCa::cert_pem`] (write it with
//! [`TestCa::write_cert_pem`] for external tools such as curl's `--cacert` or swaks'
//! `--tls-ca-path`) and connect with the real service's host name as the TLS server name,
//! because the server certificates carry it as a SAN, next to `localhost` and `127.0.0.1`.
//!
//! The same CA issues client certificates ([`TestCa::client_cert`]) for the tenant MX
//! connector mode, which asks for a client certificate but also accepts anonymous clients.
//!
//! ```
//! use postern_testkit::tls::TestCa;
//! let ca = TestCa::new();
//! let server = ca.server_cert(&["smtp.office365.com"]);
//! assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! assert!(server.cert_pem().contains("BEGIN CERTIFICATE"));
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority generated for one test run; it signs every simulator's certificate.
///
/// Cloning is cheap and shares the same key.
#[derive(Clone)]
pub struct TestCa {
    inner: Arc<CaInner>,
}

struct CaInner {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A certificate and its private key, issued by a [`TestCa`].
#[derive(Clone)]
pub struct IssuedCert {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The certificate, DER-encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate, PEM-encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS #8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The private key as rustls wants it.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The certificate followed by the private key, PEM (what `curl --cert`/Python's
    /// `load_cert_chain` accept as one file).
    pub fn chain_and_key_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

impl TestCa {
    /// Generates a fresh CA (ECDSA P-256, `CN=Postern Testkit CA`).
    ///
    /// # Panics
    /// If the crypto provider cannot generate a key (not a runtime condition on supported
    /// platforms).
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params
            .distinguished_name
            .push(DnType::CommonName, "Postern Testkit CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Postern testkit");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let cert_der = cert.der().clone();
        let cert_pem = cert.pem();
        Self {
            inner: Arc::new(CaInner {
                issuer: Issuer::new(params, key),
                cert_der,
                cert_pem,
            }),
        }
    }

    /// The CA certificate, PEM: what clients must trust.
    pub fn cert_pem(&self) -> &str {
        &self.inner.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.inner.cert_der
    }

    /// Writes the CA certificate as PEM to `path` (for curl `--cacert`, swaks
    /// `--tls-ca-path`, Python `cafile=`).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_cert_pem(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.cert_pem())
    }

    /// A root store holding only this CA, for rustls clients.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der().clone())
            .expect("the generated CA is a valid trust anchor");
        roots
    }

    /// Issues a server certificate for `names` plus `localhost` and `127.0.0.1`.
    ///
    /// # Panics
    /// If a name is not a valid DNS name (a test bug).
    pub fn server_cert(&self, names: &[&str]) -> IssuedCert {
        let mut sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        for extra in ["localhost", "127.0.0.1"] {
            if !sans.iter().any(|s| s == extra) {
                sans.push(extra.to_owned());
            }
        }
        let cn = names.first().copied().unwrap_or("localhost");
        self.issue(sans, cn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Issues a client certificate with subject `CN=<common_name>` and the DNS `sans`, as a
    /// partner connector's sending server would present (`TlsSenderCertificateName`).
    ///
    /// # Panics
    /// If a SAN is not a valid DNS name (a test bug).
    pub fn client_cert(&self, common_name: &str, sans: &[&str]) -> IssuedCert {
        let sans = sans.iter().map(|s| (*s).to_owned()).collect();
        self.issue(sans, common_name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, sans: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose) -> IssuedCert {
        let key = KeyPair::generate().expect("generate key");
        let mut params = CertificateParams::new(sans).expect("valid SAN names");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        let cert = params
            .signed_by(&key, &self.inner.issuer)
            .expect("sign certificate");
        IssuedCert {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls server configuration presenting `cert` (chained to this CA), TLS 1.2 and 1.3,
    /// with the given ALPN protocols, and no client authentication.
    ///
    /// # Panics
    /// If rustls rejects the generated key (not expected).
    pub fn server_config(&self, cert: &IssuedCert, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_single_cert(self.chain(cert), cert.key_der())
            .expect("generated key matches certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A rustls server configuration that asks for a client certificate but accepts clients
    /// that present none (the tenant MX: Direct Send is anonymous, connectors present one).
    /// Presented certificates must chain to this CA or to one of `extra_roots`.
    ///
    /// # Panics
    /// If rustls rejects the generated key or roots (not expected).
    pub fn server_config_optional_client_auth(
        &self,
        cert: &IssuedCert,
        extra_roots: &[CertificateDer<'static>],
    ) -> Arc<rustls::ServerConfig> {
        let mut roots = self.root_store();
        for root in extra_roots {
            roots.add(root.clone()).expect("valid extra trust anchor");
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .expect("client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain(cert), cert.key_der())
            .expect("generated key matches certificate");
        Arc::new(config)
    }

    /// A rustls client configuration that trusts only this CA (for Rust-side tests).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(self.root_store())
                .with_no_client_auth(),
        )
    }

    /// A rustls client configuration that trusts only this CA and presents `cert`.
    ///
    /// # Panics
    /// If rustls rejects the generated key (not expected).
    pub fn client_config_with_cert(&self, cert: &IssuedCert) -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(self.root_store())
                .with_client_auth_cert(self.chain(cert), cert.key_der())
                .expect("generated key matches certificate"),
        )
    }

    fn chain(&self, cert: &IssuedCert) -> Vec<CertificateDer<'static>> {
        vec![cert.cert_der.clone(), self.inner.cert_der.clone()]
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The subject common name and DNS subject alternative names of a DER certificate, read with
/// a minimal DER walker (enough for certificates that rustls already verified).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertNames {
    /// The subject's CN, if any.
    pub common_name: Option<String>,
    /// The subject as `CN=<cn>` (only the CN is rendered), for records.
    pub subject: String,
    /// The DNS names in the subjectAltName extension.
    pub dns_names: Vec<String>,
}

impl CertNames {
    /// Parses `der`; `None` when it is not a certificate this walker understands.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (cert, _) = der::read(der, der::SEQUENCE)?;
        let (tbs, _) = der::read(cert, der::SEQUENCE)?;
        let mut rest = tbs;
        // Optional [0] version.
        if rest.first() == Some(&0xa0) {
            rest = der::skip(rest)?;
        }
        rest = der::skip(rest)?; // serial
        rest = der::skip(rest)?; // signature algorithm
        rest = der::skip(rest)?; // issuer
        rest = der::skip(rest)?; // validity
        let (subject, after) = der::read(rest, der::SEQUENCE)?;
        let common_name = der::find_cn(subject);
        let mut dns_names = Vec::new();
        rest = der::skip(after)?; // subjectPublicKeyInfo
        while let Some(&tag) = rest.first() {
            if tag == 0xa3 {
                let (exts_wrapper, _) = der::read(rest, 0xa3)?;
                let (mut exts, _) = der::read(exts_wrapper, der::SEQUENCE)?;
                while !exts.is_empty() {
                    let (ext, next) = der::read(exts, der::SEQUENCE)?;
                    exts = next;
                    let (oid, mut body) = der::read(ext, 0x06)?;
                    if oid == [0x55, 0x1d, 0x11] {
                        if body.first() == Some(&0x01) {
                            body = der::skip(body)?; // critical flag
                        }
                        let (octets, _) = der::read(body, 0x04)?;
                        let (mut names, _) = der::read(octets, der::SEQUENCE)?;
                        while !names.is_empty() {
                            let tag = *names.first()?;
                            let (value, next) = der::read(names, tag)?;
                            names = next;
                            if tag == 0x82 {
                                dns_names.push(String::from_utf8_lossy(value).into_owned());
                            }
                        }
                    }
                }
            }
            rest = der::skip(rest)?;
        }
        let subject = common_name
            .as_ref()
            .map(|cn| format!("CN={cn}"))
            .unwrap_or_default();
        Some(Self {
            common_name,
            subject,
            dns_names,
        })
    }

    /// Whether the CN or a DNS SAN equals `domain` or is a subdomain of it (case-insensitive),
    /// as Exchange matches a connector's `TlsSenderCertificateName`. A `*.` prefix on `domain`
    /// means subdomains only.
    pub fn matches_domain(&self, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        let (suffix, exact_ok) = match domain.strip_prefix("*.") {
            Some(rest) => (rest.to_owned(), false),
            None => (domain.clone(), true),
        };
        self.common_name
            .iter()
            .chain(self.dns_names.iter())
            .map(|n| n.to_ascii_lowercase())
            .any(|n| {
                let n = n.strip_prefix("*.").unwrap_or(&n).to_owned();
                (exact_ok && n == suffix) || n.ends_with(&format!(".{suffix}"))
            })
    }
}

mod der {
    pub(super) const SEQUENCE: u8 = 0x30;

    /// Reads one TLV with `tag`; returns (value, rest).
    pub(super) fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        if *input.first()? != tag {
            return None;
        }
        let (len, header) = length(input.get(1..)?)?;
        let start = 1 + header;
        let end = start.checked_add(len)?;
        Some((input.get(start..end)?, input.get(end..)?))
    }

    /// Skips one TLV of any tag.
    pub(super) fn skip(input: &[u8]) -> Option<&[u8]> {
        let tag = *input.first()?;
        read(input, tag).map(|(_, rest)| rest)
    }

    fn length(input: &[u8]) -> Option<(usize, usize)> {
        let first = *input.first()?;
        if first < 0x80 {
            return Some((usize::from(first), 1));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in input.get(1..=n)? {
            len = (len << 8) | usize::from(*b);
        }
        Some((len, 1 + n))
    }

    /// The first commonName (2.5.4.3) in a Name.
    pub(super) fn find_cn(mut name: &[u8]) -> Option<String> {
        while !name.is_empty() {
            let (set, next) = read(name, 0x31)?;
            name = next;
            let (atv, _) = read(set, SEQUENCE)?;
            let (oid, value) = read(atv, 0x06)?;
            if oid == [0x55, 0x04, 0x03] {
                let tag = *value.first()?;
                let (text, _) = read(value, tag)?;
                return Some(String::from_utf8_lossy(text).into_owned());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_names_are_read_back() {
        let ca = TestCa::new();
        let cert = ca.client_cert("mail.fabrikam.com", &["relay.contoso.com", "contoso.net"]);
        let names = CertNames::parse(cert.cert_der()).expect("parse");
        assert_eq!(names.common_name.as_deref(), Some("mail.fabrikam.com"));
        assert_eq!(names.subject, "CN=mail.fabrikam.com");
        assert_eq!(names.dns_names, ["relay.contoso.com", "contoso.net"]);
        assert!(names.matches_domain("contoso.com"));
        assert!(names.matches_domain("*.contoso.com"));
        assert!(names.matches_domain("contoso.net"));
        assert!(!names.matches_domain("*.contoso.net"));
        assert!(names.matches_domain("fabrikam.com"));
        assert!(!names.matches_domain("example.com"));
        assert!(!names.matches_domain("ntoso.com"));
    }

    #[test]
    fn server_cert_has_loopback_names() {
        let ca = TestCa::new();
        let cert = ca.server_cert(&["smtp.office365.com"]);
        let names = CertNames::parse(cert.cert_der()).expect("parse");
        assert_eq!(names.dns_names, ["smtp.office365.com", "localhost"]);
        assert!(CertNames::parse(b"\x30\x03\x02\x01").is_none());
    }
}
