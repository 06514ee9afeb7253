//! Exchange Online endpoint names: deriving the tenant MX host and recognising Microsoft's MX
//! and DKIM targets. Pure string functions.
//!
//! Naming rules (project spec `microsoft.md` E.6, and Microsoft's DKIM configuration page):
//!
//! - classic MX: `<domain with dots replaced by dashes>.mail.protection.outlook.com`
//!   (`contoso.com` becomes `contoso-com.mail.protection.outlook.com`);
//! - DNSSEC/DANE MX: `<domain-with-dashes>.<x>-v1.mx.microsoft`, `<x>` a letter shard chosen by
//!   Microsoft (`contoso-com.o-v1.mx.microsoft`). The shard cannot be derived: new accepted
//!   domains get these names from July 2026, so read the real value from the admin centre or
//!   Graph `serviceConfigurationRecords` rather than trusting [`tenant_mx_host`];
//! - DKIM CNAME targets: `selector1-<domain-with-dashes>._domainkey.<initial>.onmicrosoft.com`
//!   (domains set up before May 2025) or
//!   `selector1-<domain-with-dashes>._domainkey.<initial>.<x>-v1.dkim.mail.microsoft` (newer).
//!
//! Hyphens already in the domain are kept as they are (`my-company.co.uk` becomes
//! `my-company-co-uk`): that is what published MX records show. The mapping is therefore not
//! injective (`a-b.com` and `a.b.com` collide); Microsoft resolves collisions by appending a
//! suffix (seen as `contoso-com01b`), which [`classify_exchange`] accepts. IDNs must be given as
//! A-labels (`xn--...`); non-ASCII input is refused rather than guessed at.

use serde::Serialize;

use crate::Error;

/// The suffix of the classic tenant MX hosts.
pub const CLASSIC_MX_SUFFIX: &str = "mail.protection.outlook.com";
/// The suffix of the DNSSEC-capable tenant MX hosts (`<x>-v1.mx.microsoft`).
pub const DNSSEC_MX_SUFFIX: &str = "mx.microsoft";
/// The SPF include that authorises Exchange Online's outbound servers.
pub const SPF_INCLUDE: &str = "spf.protection.outlook.com";

/// Lower-cases, strips the trailing dot and checks that `domain` is an ASCII host name.
///
/// # Errors
/// [`Error::InvalidName`] for empty, non-ASCII, over-long or malformed names.
pub fn normalise_domain(domain: &str) -> Result<String, Error> {
    let invalid = |reason| Error::InvalidName {
        name: domain.to_owned(),
        reason,
    };
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_empty() {
        return Err(invalid("empty name"));
    }
    if !d.is_ascii() {
        return Err(invalid("not ASCII; give IDNs as A-labels (xn--...)"));
    }
    if d.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    for label in d.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("empty label or label over 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "label holds characters other than letters, digits, '-', '_'",
            ));
        }
    }
    Ok(d.to_ascii_lowercase())
}

/// `contoso.com` -> `contoso-com`: the domain with dots replaced by dashes, lower case.
///
/// # Errors
/// [`Error::InvalidName`] when `domain` is not a valid ASCII host name.
pub fn dashed(domain: &str) -> Result<String, Error> {
    Ok(normalise_domain(domain)?.replace('.', "-"))
}

/// The classic tenant MX host for an accepted domain:
/// `contoso.com` -> `contoso-com.mail.protection.outlook.com`.
///
/// This is the name Microsoft assigned to domains added before the `mx.microsoft` roll-out; for
/// a domain provisioned later, or after a name collision, the real value differs. Prefer the
/// domain's real MX ([`classify_exchange`] on it) when there is one.
///
/// ```
/// assert_eq!(
///     postern_mx::exo::tenant_mx_host("Contoso.com.").unwrap(),
///     "contoso-com.mail.protection.outlook.com"
/// );
/// ```
///
/// # Errors
/// [`Error::InvalidName`] when `domain` is not a valid ASCII host name.
pub fn tenant_mx_host(domain: &str) -> Result<String, Error> {
    let host = format!("{}.{CLASSIC_MX_SUFFIX}", dashed(domain)?);
    if host.len() > 253 || dashed(domain)?.len() > 63 {
        return Err(Error::InvalidName {
            name: domain.to_owned(),
            reason: "too long to form a tenant MX label (63 characters)",
        });
    }
    Ok(host)
}

/// Which Exchange Online MX family a host name belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExoMx {
    /// `<label>.mail.protection.outlook.com`.
    Classic {
        /// The tenant label (`contoso-com`, possibly with a collision suffix).
        label: String,
    },
    /// `<label>.<shard>-v1.mx.microsoft` (DNSSEC and DANE capable).
    Dnssec {
        /// The tenant label.
        label: String,
        /// The shard label (`o-v1`).
        shard: String,
    },
}

impl ExoMx {
    /// The tenant label part of the host name.
    pub fn label(&self) -> &str {
        match self {
            Self::Classic { label } | Self::Dnssec { label, .. } => label,
        }
    }

    /// True when the label was derived from `domain` (exactly, or with a collision suffix
    /// such as `01b` appended).
    pub fn matches_domain(&self, domain: &str) -> bool {
        let Ok(expected) = dashed(domain) else {
            return false;
        };
        let label = self.label();
        label == expected
            || label
                .strip_prefix(expected.as_str())
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphanumeric()))
    }
}

/// Recognises an Exchange Online tenant MX host (classic or `mx.microsoft`).
///
/// ```
/// use postern_mx::exo::{classify_exchange, ExoMx};
/// assert!(matches!(classify_exchange("contoso-com.mail.protection.outlook.com."), Some(ExoMx::Classic { .. })));
/// assert!(matches!(classify_exchange("contoso-com.o-v1.mx.microsoft"), Some(ExoMx::Dnssec { .. })));
/// assert_eq!(classify_exchange("mx1.contoso.com"), None);
/// ```
pub fn classify_exchange(host: &str) -> Option<ExoMx> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if let Some(label) = host.strip_suffix(&format!(".{CLASSIC_MX_SUFFIX}")) {
        return (!label.is_empty() && !label.contains('.')).then(|| ExoMx::Classic {
            label: label.to_owned(),
        });
    }
    let rest = host.strip_suffix(&format!(".{DNSSEC_MX_SUFFIX}"))?;
    let (label, shard) = rest.split_once('.')?;
    let valid_shard = shard
        .strip_suffix("-v1")
        .is_some_and(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric()));
    (valid_shard && !label.is_empty()).then(|| ExoMx::Dnssec {
        label: label.to_owned(),
        shard: shard.to_owned(),
    })
}

/// Where a DKIM selector CNAME points, as far as Exchange Online is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DkimTarget {
    /// `selectorN-<domain-dashes>._domainkey.<initial>.onmicrosoft.com` (before May 2025).
    OnMicrosoft,
    /// `selectorN-<domain-dashes>._domainkey.<initial>.<x>-vN.dkim.mail.microsoft` (newer).
    DkimMailMicrosoft,
}

/// Checks that `target` is the Exchange Online DKIM key for `selector` (`selector1` or
/// `selector2`) of `domain`.
///
/// The `<initial>` part (the tenant's `*.onmicrosoft.com` prefix) and the partition letter
/// cannot be derived from the domain, so any single label is accepted there.
pub fn classify_dkim_target(selector: &str, domain: &str, target: &str) -> Option<DkimTarget> {
    let dashes = dashed(domain).ok()?;
    let target = target
        .strip_suffix('.')
        .unwrap_or(target)
        .to_ascii_lowercase();
    let prefix = format!("{}-{dashes}._domainkey.", selector.to_ascii_lowercase());
    let rest = target.strip_prefix(&prefix)?;
    let (initial, suffix) = rest.split_once('.')?;
    if initial.is_empty() {
        return None;
    }
    if suffix == "onmicrosoft.com" {
        return Some(DkimTarget::OnMicrosoft);
    }
    let (partition, tail) = suffix.split_once('.')?;
    let partition_ok = partition.split_once("-v").is_some_and(|(x, n)| {
        !x.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    });
    (partition_ok && tail == "dkim.mail.microsoft").then_some(DkimTarget::DkimMailMicrosoft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_classic_host() {
        let cases = [
            ("contoso.com", "contoso-com.mail.protection.outlook.com"),
            ("contoso.net.", "contoso-net.mail.protection.outlook.com"),
            (
                "Marketing.Contoso.co.uk",
                "marketing-contoso-co-uk.mail.protection.outlook.com",
            ),
            (
                "my-company.co.uk",
                "my-company-co-uk.mail.protection.outlook.com",
            ),
            (
                "xn--bcher-kva.example",
                "xn--bcher-kva-example.mail.protection.outlook.com",
            ),
        ];
        for (domain, host) in cases {
            assert_eq!(tenant_mx_host(domain).unwrap(), host, "{domain}");
        }
        assert!(tenant_mx_host("bücher.example").is_err());
        assert!(tenant_mx_host("").is_err());
        assert!(tenant_mx_host("a..b").is_err());
        assert!(tenant_mx_host(&format!("{}.com", "a".repeat(62))).is_err());
    }

    #[test]
    fn classifies_mx_hosts() {
        let c = classify_exchange("contoso-com.mail.protection.outlook.com").unwrap();
        assert!(c.matches_domain("contoso.com"));
        assert!(!c.matches_domain("fabrikam.com"));
        let s = classify_exchange("sdu-dk.i-v1.mx.microsoft.").unwrap();
        assert_eq!(
            s,
            ExoMx::Dnssec {
                label: "sdu-dk".into(),
                shard: "i-v1".into()
            }
        );
        assert!(s.matches_domain("sdu.dk"));
        let suffixed = classify_exchange("contoso-com01b.mail.protection.outlook.com").unwrap();
        assert!(suffixed.matches_domain("contoso.com"));
        assert_eq!(classify_exchange("mail.protection.outlook.com"), None);
        assert_eq!(classify_exchange("a.b.mail.protection.outlook.com"), None);
        assert_eq!(classify_exchange("x.mx.microsoft"), None);
        assert_eq!(classify_exchange("x.o-v2.mx.microsoft"), None);
    }

    #[test]
    fn classifies_dkim_targets() {
        assert_eq!(
            classify_dkim_target(
                "selector1",
                "contoso.com",
                "selector1-contoso-com._domainkey.contoso.onmicrosoft.com."
            ),
            Some(DkimTarget::OnMicrosoft)
        );
        assert_eq!(
            classify_dkim_target(
                "selector2",
                "contoso.com",
                "selector2-contoso-com._domainkey.contoso.r-v1.dkim.mail.microsoft"
            ),
            Some(DkimTarget::DkimMailMicrosoft)
        );
        assert_eq!(
            classify_dkim_target(
                "selector1",
                "contoso.com",
                "selector1-fabrikam-com._domainkey.contoso.onmicrosoft.com"
            ),
            None
        );
        assert_eq!(
            classify_dkim_target("selector1", "contoso.com", "dkim.example.net"),
            None
        );
    }
}
