//! Where tokens come from: Microsoft clouds, any Entra-shaped base URL, or any OAuth server.

use url::Url;

use crate::Error;

/// An OAuth authority: the server that issues tokens.
///
/// Microsoft authorities build their endpoints from a base URL and a tenant
/// (`{base}/{tenant}/oauth2/v2.0/token`, spec C.1); a [generic](Authority::generic) authority
/// takes its endpoint URLs as given and ignores the tenant (Google, Okta, a test server).
///
/// ```
/// use postern_entra::Authority;
/// let a = Authority::global();
/// assert_eq!(
///     a.token_url("contoso.onmicrosoft.com").unwrap().as_str(),
///     "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
/// );
/// let sim = Authority::microsoft("https://127.0.0.1:8443").unwrap();
/// assert!(sim.device_code_url("t").unwrap().as_str().ends_with("/t/oauth2/v2.0/devicecode"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Authority {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Microsoft {
        base: String,
    },
    Generic {
        token: Box<Url>,
        device: Option<Box<Url>>,
        authorize: Option<Box<Url>>,
    },
}

impl Authority {
    /// Base URL of the global Azure cloud.
    pub const GLOBAL: &'static str = "https://login.microsoftonline.com";
    /// Base URL of Azure US Government (GCC High, DoD).
    pub const US_GOV: &'static str = "https://login.microsoftonline.us";
    /// Base URL of Azure China (operated by 21Vianet).
    pub const CHINA: &'static str = "https://login.partner.microsoftonline.cn";

    /// The global Azure cloud (`login.microsoftonline.com`).
    pub fn global() -> Self {
        Self::microsoft_unchecked(Self::GLOBAL)
    }

    /// Azure US Government (`login.microsoftonline.us`).
    pub fn us_gov() -> Self {
        Self::microsoft_unchecked(Self::US_GOV)
    }

    /// Azure China, 21Vianet (`login.partner.microsoftonline.cn`).
    pub fn china() -> Self {
        Self::microsoft_unchecked(Self::CHINA)
    }

    fn microsoft_unchecked(base: &str) -> Self {
        Self {
            kind: Kind::Microsoft {
                base: base.to_owned(),
            },
        }
    }

    /// An Entra-shaped authority at any base URL, e.g. a local simulator
    /// (`https://127.0.0.1:8443`). `http` is accepted only for loopback hosts.
    pub fn microsoft(base_url: &str) -> Result<Self, Error> {
        let url = parse_endpoint(base_url)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Config(format!(
                "authority URL {url} must not have a query"
            )));
        }
        Ok(Self::microsoft_unchecked(
            url.as_str().trim_end_matches('/'),
        ))
    }

    /// A non-Microsoft OAuth server whose endpoints are given directly; the tenant is ignored.
    pub fn generic(
        token_url: &str,
        device_code_url: Option<&str>,
        authorize_url: Option<&str>,
    ) -> Result<Self, Error> {
        Ok(Self {
            kind: Kind::Generic {
                token: Box::new(parse_endpoint(token_url)?),
                device: device_code_url
                    .map(parse_endpoint)
                    .transpose()?
                    .map(Box::new),
                authorize: authorize_url.map(parse_endpoint).transpose()?.map(Box::new),
            },
        })
    }

    /// Google's OAuth 2.0 endpoints (Gmail also takes XOAUTH2).
    pub fn google() -> Self {
        // The URLs are constants, so parsing cannot fail.
        Self::generic(
            "https://oauth2.googleapis.com/token",
            Some("https://oauth2.googleapis.com/device/code"),
            Some("https://accounts.google.com/o/oauth2/v2/auth"),
        )
        .unwrap_or_else(|_| Self::global())
    }

    /// Whether this authority has Entra's URL layout and error format.
    pub fn is_microsoft(&self) -> bool {
        matches!(self.kind, Kind::Microsoft { .. })
    }

    /// A stable identifier used in cache and store keys: the base URL, or the token URL.
    pub fn id(&self) -> &str {
        match &self.kind {
            Kind::Microsoft { base } => base,
            Kind::Generic { token, .. } => token.as_str(),
        }
    }

    /// The token endpoint (`POST`).
    pub fn token_url(&self, tenant: &str) -> Result<Url, Error> {
        self.endpoint(tenant, "token", |k| match k {
            Kind::Generic { token, .. } => Some(token),
            Kind::Microsoft { .. } => None,
        })
    }

    /// The device authorization endpoint (`POST`).
    pub fn device_code_url(&self, tenant: &str) -> Result<Url, Error> {
        self.endpoint(tenant, "devicecode", |k| match k {
            Kind::Generic { device, .. } => device.as_ref(),
            Kind::Microsoft { .. } => None,
        })
    }

    /// The authorization endpoint (`GET`, in the user's browser).
    pub fn authorize_url(&self, tenant: &str) -> Result<Url, Error> {
        self.endpoint(tenant, "authorize", |k| match k {
            Kind::Generic { authorize, .. } => authorize.as_ref(),
            Kind::Microsoft { .. } => None,
        })
    }

    fn endpoint(
        &self,
        tenant: &str,
        leaf: &str,
        generic: impl Fn(&Kind) -> Option<&Box<Url>>,
    ) -> Result<Url, Error> {
        match &self.kind {
            Kind::Microsoft { base } => {
                check_tenant(tenant)?;
                Url::parse(&format!("{base}/{tenant}/oauth2/v2.0/{leaf}"))
                    .map_err(|e| Error::Config(format!("bad endpoint URL: {e}")))
            }
            Kind::Generic { .. } => generic(&self.kind).map(|u| (**u).clone()).ok_or_else(|| {
                Error::Config(format!("this authority has no {leaf} endpoint configured"))
            }),
        }
    }
}

/// Tenants go into a URL path: allow only what tenant IDs and domain names use.
fn check_tenant(tenant: &str) -> Result<(), Error> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid tenant {tenant:?}: use the tenant ID or a domain name"
        )))
    }
}

/// Parses an endpoint URL: `https`, or `http` to a loopback host.
fn parse_endpoint(s: &str) -> Result<Url, Error> {
    let url = Url::parse(s).map_err(|e| Error::Config(format!("invalid URL {s:?}: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(Error::Config(format!(
            "{s:?}: only https URLs (or http to loopback) are allowed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_clouds() {
        assert_eq!(
            Authority::us_gov().token_url("t").unwrap().as_str(),
            "https://login.microsoftonline.us/t/oauth2/v2.0/token"
        );
        assert_eq!(
            Authority::china().authorize_url("t").unwrap().as_str(),
            "https://login.partner.microsoftonline.cn/t/oauth2/v2.0/authorize"
        );
    }

    #[test]
    fn tenant_cannot_escape_the_path() {
        assert!(Authority::global().token_url("../x").is_err());
        assert!(Authority::global().token_url("a/b").is_err());
        assert!(Authority::global().token_url("").is_err());
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(Authority::microsoft("http://login.example.com").is_err());
        assert!(Authority::microsoft("http://127.0.0.1:1234/").is_ok());
        assert_eq!(
            Authority::microsoft("https://x.test/").unwrap().id(),
            "https://x.test"
        );
    }

    #[test]
    fn generic_ignores_tenant() {
        let g = Authority::google();
        assert_eq!(
            g.token_url("whatever").unwrap().as_str(),
            "https://oauth2.googleapis.com/token"
        );
        let only_token = Authority::generic("https://idp.test/token", None, None).unwrap();
        assert!(only_token.device_code_url("t").is_err());
    }
}
