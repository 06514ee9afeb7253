//! Pure request builders (spec C.3 to C.7): no I/O, one `http::Request<Vec<u8>>` each.

use http::header::{ACCEPT, CONTENT_TYPE};
use url::Url;

use crate::{PkceVerifier, Secret};

/// The grant type of a device-code poll (RFC 8628).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The client assertion type of a certificate credential (RFC 7523).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What is being exchanged for a token.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Grant<'a> {
    /// The app's own identity (`grant_type=client_credentials`).
    ClientCredentials,
    /// A refresh token (`grant_type=refresh_token`).
    RefreshToken(&'a Secret),
    /// An authorization code from the browser redirect, with its PKCE verifier.
    AuthorizationCode {
        /// The `code` of the redirect.
        code: &'a Secret,
        /// The exact `redirect_uri` sent to the authorize endpoint.
        redirect_uri: &'a str,
        /// The verifier whose challenge went to the authorize endpoint.
        verifier: &'a PkceVerifier,
    },
    /// A device code being polled.
    DeviceCode(&'a Secret),
}

/// How the client proves its identity.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ClientAuth<'a> {
    /// A public client: only `client_id`.
    None,
    /// `client_secret` in the body.
    Secret(&'a Secret),
    /// A signed JWT (`client_assertion`), see [`CertificateCredential`](crate::CertificateCredential).
    Assertion(&'a Secret),
}

/// Builds a token-endpoint request.
///
/// `request_id` goes in `client-request-id`; Entra echoes it as the `correlation_id` of errors.
///
/// ```
/// use postern_entra::{request::{token_request, ClientAuth, Grant}, Secret};
/// let url = url::Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
/// let secret = Secret::new("s3cr+t");
/// let req = token_request(&url, "app", Some("https://outlook.office365.com/.default"),
///     Grant::ClientCredentials, ClientAuth::Secret(&secret), "rid");
/// assert_eq!(req.method(), "POST");
/// assert_eq!(std::str::from_utf8(req.body()).unwrap(),
///     "grant_type=client_credentials&client_id=app&scope=https%3A%2F%2Foutlook.office365.com%2F.default&client_secret=s3cr%2Bt");
/// ```
pub fn token_request(
    url: &Url,
    client_id: &str,
    scope: Option<&str>,
    grant: Grant<'_>,
    auth: ClientAuth<'_>,
    request_id: &str,
) -> http::Request<Vec<u8>> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match grant {
        Grant::ClientCredentials => form.append_pair("grant_type", "client_credentials"),
        Grant::RefreshToken(_) => form.append_pair("grant_type", "refresh_token"),
        Grant::AuthorizationCode { .. } => form.append_pair("grant_type", "authorization_code"),
        Grant::DeviceCode(_) => form.append_pair("grant_type", DEVICE_CODE_GRANT),
    };
    form.append_pair("client_id", client_id);
    if let Some(scope) = scope {
        form.append_pair("scope", scope);
    }
    match grant {
        Grant::ClientCredentials => {}
        Grant::RefreshToken(rt) => {
            form.append_pair("refresh_token", rt.expose());
        }
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            verifier,
        } => {
            form.append_pair("code", code.expose());
            form.append_pair("redirect_uri", redirect_uri);
            form.append_pair("code_verifier", verifier.secret().expose());
        }
        Grant::DeviceCode(dc) => {
            form.append_pair("device_code", dc.expose());
        }
    }
    match auth {
        ClientAuth::None => {}
        ClientAuth::Secret(s) => {
            form.append_pair("client_secret", s.expose());
        }
        ClientAuth::Assertion(jwt) => {
            form.append_pair("client_assertion_type", JWT_BEARER_ASSERTION);
            form.append_pair("client_assertion", jwt.expose());
        }
    }
    post(url, form.finish(), request_id)
}

/// Builds a device authorization request (`client_id` and `scope`, spec C.7).
pub fn device_code_request(
    url: &Url,
    client_id: &str,
    scope: &str,
    request_id: &str,
) -> http::Request<Vec<u8>> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("scope", scope)
        .finish();
    post(url, body, request_id)
}

/// Builds the URL the user's browser opens for the authorization-code flow with PKCE (S256).
pub fn authorize_url(
    endpoint: &Url,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
    state: &str,
    verifier: &PkceVerifier,
) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_mode", "query")
        .append_pair("scope", scope)
        .append_pair("state", state)
        .append_pair("code_challenge", &verifier.challenge())
        .append_pair("code_challenge_method", "S256");
    url
}

fn post(url: &Url, body: String, request_id: &str) -> http::Request<Vec<u8>> {
    let mut req = http::Request::new(body.into_bytes());
    *req.method_mut() = http::Method::POST;
    // A `Url` is always a valid URI; fall back to the default ("/") rather than panic.
    *req.uri_mut() = url.as_str().parse().unwrap_or_default();
    let h = req.headers_mut();
    h.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    h.insert(ACCEPT, http::HeaderValue::from_static("application/json"));
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        h.insert("client-request-id", v);
        h.insert(
            "return-client-request-id",
            http::HeaderValue::from_static("true"),
        );
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(req: &http::Request<Vec<u8>>) -> Vec<(String, String)> {
        url::form_urlencoded::parse(req.body())
            .into_owned()
            .collect()
    }

    #[test]
    fn refresh_and_assertion() {
        let url = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
        let rt = Secret::new("rt&1");
        let jwt = Secret::new("a.b.c");
        let req = token_request(
            &url,
            "app",
            Some("s"),
            Grant::RefreshToken(&rt),
            ClientAuth::Assertion(&jwt),
            "id",
        );
        let b = body(&req);
        assert!(b.contains(&("refresh_token".into(), "rt&1".into())));
        assert!(b.contains(&("client_assertion_type".into(), JWT_BEARER_ASSERTION.into())));
        assert!(b.contains(&("client_assertion".into(), "a.b.c".into())));
        assert_eq!(
            req.headers()["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(req.headers()["client-request-id"], "id");
        assert_eq!(
            req.uri(),
            "https://login.microsoftonline.com/t/oauth2/v2.0/token"
        );
    }

    #[test]
    fn device_poll_and_code() {
        let url = Url::parse("https://x.test/t/oauth2/v2.0/token").unwrap();
        let dc = Secret::new("DC");
        let b = body(&token_request(
            &url,
            "app",
            None,
            Grant::DeviceCode(&dc),
            ClientAuth::None,
            "i",
        ));
        assert_eq!(b[0], ("grant_type".into(), DEVICE_CODE_GRANT.into()));
        assert!(b.contains(&("device_code".into(), "DC".into())));
        assert!(!b.iter().any(|(k, _)| k == "scope" || k == "client_secret"));
        let v = PkceVerifier::new();
        let code = Secret::new("C");
        let b = body(&token_request(
            &url,
            "app",
            Some("s offline_access"),
            Grant::AuthorizationCode {
                code: &code,
                redirect_uri: "http://localhost:1/",
                verifier: &v,
            },
            ClientAuth::None,
            "i",
        ));
        assert!(b.contains(&("code_verifier".into(), v.secret().expose().into())));
        assert!(b.contains(&("redirect_uri".into(), "http://localhost:1/".into())));
    }

    #[test]
    fn authorize() {
        let ep = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/authorize").unwrap();
        let v = PkceVerifier::new();
        let u = authorize_url(&ep, "app", "http://localhost:5/", "a b", "st", &v);
        let q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        assert!(q.contains(&("code_challenge_method".into(), "S256".into())));
        assert!(q.contains(&("code_challenge".into(), v.challenge())));
        assert!(q.contains(&("scope".into(), "a b".into())));
        assert!(u.as_str().contains("scope=a+b"));
    }
}
