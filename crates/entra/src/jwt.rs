//! Certificate credentials: the client-assertion JWT of spec C.4 (RS256 or PS256, `x5t#S256`).

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
use sha2::{Digest as _, Sha256};

use crate::clock::unix_seconds;
use crate::{Error, Secret};

/// The JWS algorithm of a client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// RSASSA-PSS with SHA-256, what Microsoft's documentation asks for now (default).
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, the older form, still accepted.
    Rs256,
}

impl SigningAlgorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Ps256 => "PS256",
            Self::Rs256 => "RS256",
        }
    }
}

/// A certificate registered on the app and its RSA private key, used to sign client
/// assertions. `Debug` shows the thumbprint only.
#[derive(Clone)]
pub struct CertificateCredential {
    x5t_s256: String,
    key: RsaPrivateKey,
    algorithm: SigningAlgorithm,
    lifetime: Duration,
}

impl fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t#S256", &self.x5t_s256)
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CertificateCredential {
    /// Default assertion lifetime (`exp - nbf`), as MSAL uses: 10 minutes.
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

    /// Loads a PEM certificate and an unencrypted RSA private key (PKCS#8 `PRIVATE KEY` or
    /// PKCS#1 `RSA PRIVATE KEY`) from files. The key file may also hold the certificate.
    pub fn from_pem_files(certificate: &Path, key: &Path) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::Credential(format!("cannot read {}: {e}", p.display())))
        };
        Self::from_pem(&read(certificate)?, &read(key)?)
    }

    /// Builds a credential from PEM text (see [`from_pem_files`](Self::from_pem_files)).
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let der = pem_block(certificate_pem, "CERTIFICATE")
            .ok_or_else(|| Error::Credential("no PEM CERTIFICATE block found".to_owned()))?;
        let key = if let Some(block) = pem_text(key_pem, "PRIVATE KEY") {
            RsaPrivateKey::from_pkcs8_pem(&block)
                .map_err(|e| Error::Credential(format!("PKCS#8 key is not an RSA key: {e}")))?
        } else if let Some(block) = pem_text(key_pem, "RSA PRIVATE KEY") {
            RsaPrivateKey::from_pkcs1_pem(&block)
                .map_err(|e| Error::Credential(format!("PKCS#1 RSA key unreadable: {e}")))?
        } else if pem_text(key_pem, "ENCRYPTED PRIVATE KEY").is_some() {
            return Err(Error::Credential(
                "the private key is encrypted; decrypt it first (openssl pkey)".to_owned(),
            ));
        } else {
            return Err(Error::Credential(
                "no PEM PRIVATE KEY or RSA PRIVATE KEY block found".to_owned(),
            ));
        };
        Ok(Self {
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
            key,
            algorithm: SigningAlgorithm::default(),
            lifetime: Self::DEFAULT_LIFETIME,
        })
    }

    /// Chooses the signing algorithm (default PS256).
    pub fn with_algorithm(mut self, algorithm: SigningAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Sets the assertion lifetime (default 10 minutes).
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The certificate's SHA-256 thumbprint, base64url (the `x5t#S256` header).
    pub fn thumbprint_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// Signs a client assertion for `client_id` whose audience is the token endpoint URL.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
        jti: &str,
    ) -> Result<Secret, Error> {
        let header = serde_json::json!({
            "alg": self.algorithm.name(),
            "typ": "JWT",
            "x5t#S256": self.x5t_s256,
        });
        let nbf = unix_seconds(now);
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": jti,
            "nbf": nbf,
            "iat": nbf,
            "exp": nbf + self.lifetime.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match self.algorithm {
            SigningAlgorithm::Rs256 => rsa::pkcs1v15::SigningKey::<Sha256>::new(self.key.clone())
                .try_sign(signing_input.as_bytes())
                .map(|s| s.to_vec()),
            SigningAlgorithm::Ps256 => rsa::pss::SigningKey::<Sha256>::new(self.key.clone())
                .try_sign_with_rng(&mut CompatRng, signing_input.as_bytes())
                .map(|s| s.to_vec()),
        }
        .map_err(|e| Error::Credential(format!("signing failed: {e}")))?;
        Ok(Secret::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// Adapts `rand` 0.9's thread RNG to the `rand_core` 0.6 traits that `rsa` 0.9 takes (PSS salt).
struct CompatRng;

impl rsa::rand_core::RngCore for CompatRng {
    fn next_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut rand::rng())
    }
    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut rand::rng())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut rand::rng(), dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for CompatRng {}

/// The text of the first PEM block with this label, BEGIN and END lines included.
fn pem_text(pem: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)?;
    let stop = pem[start..].find(&end)? + start + end.len();
    Some(pem[start..stop].to_owned())
}

/// The decoded body of the first PEM block with this label.
fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let text = pem_text(pem, label)?;
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_parsing() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_block(pem, "CERTIFICATE").unwrap(), vec![0, 1, 2, 3]);
        assert!(pem_block(pem, "PRIVATE KEY").is_none());
        let e = CertificateCredential::from_pem(pem, "nothing").unwrap_err();
        assert!(e.to_string().contains("no PEM PRIVATE KEY"));
    }
}
