//! Pure parsers for token, device-code and error responses (spec C.3 to C.9).
//!
//! Every parser takes the HTTP status, the headers and the body, never performs I/O, and
//! accepts at most [`MAX_RESPONSE_LEN`] bytes. Bodies are untrusted: the parsers never
//! panic on them (a fuzz target checks this).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::{Error, Secret};

/// The longest response body the parsers accept (and the default transport reads): 1 MiB.
/// Real token responses are a few kilobytes.
pub const MAX_RESPONSE_LEN: usize = 1024 * 1024;

/// A successful token response (spec C.3, C.5, C.7).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The access token (opaque to us; a JWT at Microsoft).
    pub access_token: Secret,
    /// `Bearer` in practice.
    pub token_type: String,
    /// Lifetime in seconds, from `expires_in` (a number, or a string as some servers send).
    pub expires_in: Option<u64>,
    /// `ext_expires_in`, the extended lifetime during outages (Microsoft only).
    pub ext_expires_in: Option<u64>,
    /// The granted scopes, space-separated, when the server says.
    pub scope: Option<String>,
    /// A new refresh token (delegated flows with `offline_access`); store it, discard the old.
    pub refresh_token: Option<Secret>,
    /// An OpenID Connect ID token (when `openid` was asked for).
    pub id_token: Option<Secret>,
}

impl TokenResponse {
    /// The lifetime assumed when a server omits `expires_in` (RFC 6749 makes it optional).
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

    /// When the access token expires, counted from `received_at`.
    pub fn expires_at(&self, received_at: SystemTime) -> SystemTime {
        received_at
            + self
                .expires_in
                .map_or(Self::DEFAULT_LIFETIME, Duration::from_secs)
    }
}

/// The answer of the device authorization endpoint (spec C.7).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceCodeResponse {
    /// The code the client polls with (secret: whoever holds it gets the tokens).
    pub device_code: Secret,
    /// The code the user types at `verification_uri`.
    pub user_code: String,
    /// Where the user signs in (`verification_url` at Google).
    pub verification_uri: String,
    /// Seconds until the codes expire (default 900).
    pub expires_in: u64,
    /// Seconds to wait between polls (default 5).
    pub interval: u64,
    /// The sentence to show the user, if the server sent one.
    pub message: Option<String>,
}

impl DeviceCodeResponse {
    /// The message to show the user: the server's, or one built from the code and URI.
    pub fn display_message(&self) -> String {
        self.message.clone().unwrap_or_else(|| {
            format!(
                "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
                self.verification_uri, self.user_code
            )
        })
    }
}

/// An OAuth error response, with Entra's extra fields (spec C.8).
///
/// Contains no secret: Entra's descriptions name the app ID, never the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OAuthError {
    /// The OAuth `error` code (`invalid_client`, `invalid_grant`, ...). Decide on this and
    /// on [`aadsts`](Self::aadsts), never on the description text.
    pub error: String,
    /// The AADSTS number, from `error_codes[0]` or else from the description.
    pub aadsts: Option<u32>,
    /// The description, without Entra's trailing `Trace ID / Correlation ID / Timestamp` block.
    pub description: Option<String>,
    /// Entra's `trace_id` (quote it to Microsoft support).
    pub trace_id: Option<String>,
    /// Entra's `correlation_id` (the `client-request-id` we sent, when honoured).
    pub correlation_id: Option<String>,
    /// Entra's `suberror` (`consent_required`, `bad_token`, ...).
    pub suberror: Option<String>,
    /// A page describing the error.
    pub error_uri: Option<String>,
    /// Entra's `timestamp`.
    pub timestamp: Option<String>,
    /// A Conditional Access `claims` challenge, if any.
    pub claims: Option<String>,
    /// The HTTP status of the answer (400, 401, 429, 5xx, ...).
    pub status: u16,
    /// The `Retry-After` header, in seconds form.
    pub retry_after: Option<Duration>,
}

/// AADSTS codes of retryable service conditions (spec C.9).
const TRANSIENT_AADSTS: &[u32] = &[50033, 50087, 90006, 90024, 90033, 90090, 90055, 50196];

impl OAuthError {
    /// Builds an error with only an `error` code and status (for tests and synthetic errors).
    pub fn new(error: impl Into<String>, status: u16) -> Self {
        Self {
            error: error.into(),
            aadsts: None,
            description: None,
            trace_id: None,
            correlation_id: None,
            suberror: None,
            error_uri: None,
            timestamp: None,
            claims: None,
            status,
            retry_after: None,
        }
    }

    /// Whether retrying later may succeed: HTTP 429 or 5xx, `temporarily_unavailable`,
    /// `server_error`, or a service-side AADSTS code (50033, 50087, 90006, 90024, 90033,
    /// 90090, 90055, 50196). Everything else (`invalid_client`, `invalid_grant`, consent,
    /// scope, tenant errors) is permanent until an administrator acts.
    pub fn is_transient(&self) -> bool {
        self.status == 429
            || self.status >= 500
            || matches!(
                self.error.as_str(),
                "temporarily_unavailable" | "server_error"
            )
            || self.aadsts.is_some_and(|c| TRANSIENT_AADSTS.contains(&c))
    }

    /// A sentence an administrator can act on, chosen by AADSTS number, then by `error`.
    pub fn remedy(&self) -> &'static str {
        if let Some(r) = self.aadsts.and_then(remedy_for_code) {
            return r;
        }
        if self.suberror.as_deref() == Some("consent_required") {
            return remedy_for_code(65001).unwrap_or_default();
        }
        remedy_for_error(&self.error, self.is_transient())
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP {}", self.error, self.status)?;
        if let Some(code) = self.aadsts {
            write!(f, ", AADSTS{code}")?;
        }
        f.write_str(")")?;
        if let Some(d) = &self.description {
            // The description usually starts with "AADSTSnnnn: "; do not repeat the number.
            let d = match (self.aadsts, d.split_once(": ")) {
                (Some(code), Some((head, rest))) if head == format!("AADSTS{code}") => rest,
                _ => d,
            };
            write!(f, ": {d}")?;
        }
        if let Some(t) = &self.trace_id {
            write!(f, " [trace {t}")?;
            if let Some(c) = &self.correlation_id {
                write!(f, ", correlation {c}")?;
            }
            f.write_str("]")?;
        }
        write!(f, "; remedy: {}", self.remedy())
    }
}

fn remedy_for_code(code: u32) -> Option<&'static str> {
    Some(match code {
        7000215 => {
            "the client secret is wrong: use the secret's Value, not its Secret ID, from Certificates & secrets of this app registration"
        }
        7000222 => {
            "the client secret has expired: create a new client secret in the app registration (Certificates & secrets) and update the configuration"
        }
        7000218 => {
            "no client credential was sent: configure a client secret or a certificate for this app"
        }
        700016 => {
            "the application was not found in this tenant: check the client (application) ID, the tenant ID and the cloud, and that the app is consented in the tenant"
        }
        700024 => {
            "the client assertion is outside its valid time range: check this machine's clock (NTP)"
        }
        700027 => {
            "the certificate was not accepted: upload this certificate to the app registration (Certificates & secrets) and check the private key belongs to it"
        }
        700021 => {
            "the client assertion names another application: its iss and sub must be the client ID"
        }
        700025 => {
            "this app is a public client: remove the client secret or certificate from the configuration"
        }
        90002 => {
            "the tenant was not found: check the tenant ID or domain and the cloud (global, US Gov, China)"
        }
        9001023 => {
            "client credentials need a specific tenant: use the tenant ID or a verified domain, not common, organizations or consumers"
        }
        70011 | 700022 | 1002012 => {
            "the scope is not valid: app-only SMTP needs https://outlook.office365.com/.default, delegated SMTP https://outlook.office.com/SMTP.Send, and all scopes must belong to one resource"
        }
        500011 => {
            "the resource is not known in this tenant: check the scope's resource URI and the cloud"
        }
        65001 => {
            "consent is missing: an administrator must grant consent for the app's permissions (API permissions > Grant admin consent), or the user must consent"
        }
        50076 | 50079 => {
            "multi-factor authentication is required: sign the user in again interactively (device-code or auth-code)"
        }
        53003 => {
            "Conditional Access blocked this sign-in: ask the administrator to adjust the policy or use an app-only credential"
        }
        530035 => {
            "security defaults blocked this sign-in: use an app-only credential or adjust the tenant's security defaults"
        }
        50173 | 70008 | 700082 | 70043 | 700084 => {
            "the refresh token is no longer valid: sign the user in again (device-code or auth-code) to store a new one"
        }
        50126 => "the user name or password is wrong",
        50034 => "the user account does not exist in this tenant: check the user name and tenant",
        50057 => "the user account is disabled: enable it in Entra ID",
        50053 => "the user account is locked: wait or have an administrator unlock it",
        50055 => "the user's password has expired: change it, then sign in again",
        54005 => "the authorization code was already used: start the sign-in again",
        501481 => {
            "the PKCE code verifier did not match: start the sign-in again (if it persists, report a bug)"
        }
        50011 => {
            "the redirect URI is not registered: add http://localhost under Mobile and desktop applications in the app registration"
        }
        70016 => "the user has not finished signing in yet; keep waiting",
        70018 => "the device code was not recognised: start the device-code flow again",
        70019 => {
            "the device code expired before the user signed in: start the device-code flow again and sign in within the time shown"
        }
        50196 | 90055 => "Entra ID is throttling these requests: back off and retry later",
        50033 | 50087 | 90006 | 90024 | 90033 | 90090 => {
            "Entra ID is temporarily unavailable: retrying later"
        }
        _ => return None,
    })
}

fn remedy_for_error(error: &str, transient: bool) -> &'static str {
    match error {
        "invalid_client" => {
            "the client credentials were refused: check the client ID and the client secret or certificate"
        }
        "unauthorized_client" => {
            "the app may not use this grant: check the client ID and tenant; for device-code and auth-code enable 'Allow public client flows'"
        }
        "invalid_grant" => {
            "the grant was refused: sign the user in again (device-code or auth-code)"
        }
        "invalid_scope" => {
            "the scope is not valid for this app: check the scope string and the app's API permissions"
        }
        "invalid_resource" => {
            "the resource is not known: check the scope's resource URI and the cloud"
        }
        "consent_required" => {
            "consent is missing: an administrator must grant consent for the app's permissions"
        }
        "interaction_required" | "login_required" => {
            "the user must sign in interactively again (device-code or auth-code)"
        }
        "authorization_declined" | "access_denied" => {
            "the user declined the sign-in: start again and accept the permissions asked for"
        }
        "expired_token" => {
            "the device code expired before the user signed in: start the device-code flow again and sign in within the time shown"
        }
        "bad_verification_code" => {
            "the device code was not recognised: start the device-code flow again"
        }
        "authorization_pending" => "the user has not finished signing in yet; keep waiting",
        "slow_down" => "polling too fast: the interval was increased",
        "unsupported_grant_type" => "this authority does not support this grant type",
        "invalid_request" => {
            "the request was refused as malformed: check the tenant, client ID and scope"
        }
        _ if transient => "the authority is unavailable or throttling: retrying with backoff",
        _ => "see the description; react to the error code, not the text",
    }
}

/// Parses the answer of a token endpoint: a [`TokenResponse`] on HTTP 2xx with an
/// `access_token`, otherwise [`Error::OAuth`] or [`Error::InvalidResponse`].
pub fn parse_token_response(response: &http::Response<Vec<u8>>) -> Result<TokenResponse, Error> {
    let (status, retry_after, obj) = prepare(response)?;
    let access_token = match (status.is_success(), string(&obj, "access_token")) {
        (true, Some(t)) if !t.is_empty() => t,
        _ => {
            return Err(error_or_invalid(
                status,
                retry_after,
                obj,
                "no access_token",
            ));
        }
    };
    Ok(TokenResponse {
        access_token: Secret::new(access_token),
        token_type: string(&obj, "token_type").unwrap_or_else(|| "Bearer".to_owned()),
        expires_in: number(&obj, "expires_in"),
        ext_expires_in: number(&obj, "ext_expires_in"),
        scope: string(&obj, "scope"),
        refresh_token: string(&obj, "refresh_token")
            .filter(|s| !s.is_empty())
            .map(Secret::new),
        id_token: string(&obj, "id_token").map(Secret::new),
    })
}

/// Parses the answer of a device authorization endpoint.
pub fn parse_device_code_response(
    response: &http::Response<Vec<u8>>,
) -> Result<DeviceCodeResponse, Error> {
    let (status, retry_after, obj) = prepare(response)?;
    let fields = (
        string(&obj, "device_code"),
        string(&obj, "user_code"),
        string(&obj, "verification_uri").or_else(|| string(&obj, "verification_url")),
    );
    let (Some(device_code), Some(user_code), Some(verification_uri)) = fields else {
        return Err(error_or_invalid(
            status,
            retry_after,
            obj,
            "no device_code/user_code/verification_uri",
        ));
    };
    if !status.is_success() {
        return Err(error_or_invalid(status, retry_after, obj, "error status"));
    }
    Ok(DeviceCodeResponse {
        device_code: Secret::new(device_code),
        user_code,
        verification_uri,
        expires_in: number(&obj, "expires_in").unwrap_or(900),
        interval: number(&obj, "interval").unwrap_or(5).clamp(1, 300),
        message: string(&obj, "message"),
    })
}

/// Parses an OAuth error body (any status). Returns `None` when the body has no `error`.
pub fn parse_error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Option<OAuthError> {
    if body.len() > MAX_RESPONSE_LEN {
        return None;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => oauth_error(status, retry_after, &obj),
        _ => None,
    }
}

/// Reads the `Retry-After` header in its delta-seconds form (Entra's and MSAL's form).
/// HTTP-date values are ignored.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

type Prepared = (http::StatusCode, Option<Duration>, Map<String, Value>);

fn prepare(response: &http::Response<Vec<u8>>) -> Result<Prepared, Error> {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response.body();
    let invalid = |reason: String| Error::InvalidResponse {
        status: status.as_u16(),
        reason,
        retry_after,
    };
    if body.len() > MAX_RESPONSE_LEN {
        return Err(invalid(format!(
            "body longer than {MAX_RESPONSE_LEN} bytes"
        )));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => Ok((status, retry_after, obj)),
        Ok(_) => Err(invalid("body is JSON but not an object".to_owned())),
        Err(_) => Err(invalid(format!(
            "body is not JSON ({} bytes{})",
            body.len(),
            content_type(response)
        ))),
    }
}

fn content_type(response: &http::Response<Vec<u8>>) -> String {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(", {}", v.chars().take(64).collect::<String>()))
        .unwrap_or_default()
}

fn error_or_invalid(
    status: http::StatusCode,
    retry_after: Option<Duration>,
    obj: Map<String, Value>,
    reason: &str,
) -> Error {
    match oauth_error(status.as_u16(), retry_after, &obj) {
        Some(e) => e.into(),
        None => Error::InvalidResponse {
            status: status.as_u16(),
            reason: reason.to_owned(),
            retry_after,
        },
    }
}

fn oauth_error(
    status: u16,
    retry_after: Option<Duration>,
    obj: &Map<String, Value>,
) -> Option<OAuthError> {
    let error = string(obj, "error").filter(|e| !e.is_empty())?;
    let full = string(obj, "error_description");
    let aadsts = obj
        .get("error_codes")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .or_else(|| full.as_deref().and_then(aadsts_in));
    let description =
        full.map(
            |d| match d.find("\r\nTrace ID:").or_else(|| d.find("\nTrace ID:")) {
                Some(i) => d[..i].trim_end().to_owned(),
                None => d.trim_end().to_owned(),
            },
        );
    Some(OAuthError {
        error,
        aadsts,
        description,
        trace_id: string(obj, "trace_id"),
        correlation_id: string(obj, "correlation_id"),
        suberror: string(obj, "suberror"),
        error_uri: string(obj, "error_uri"),
        timestamp: string(obj, "timestamp"),
        claims: string(obj, "claims"),
        status,
        retry_after,
    })
}

/// Finds `AADSTS<digits>` in a description.
fn aadsts_in(text: &str) -> Option<u32> {
    let start = text.find("AADSTS")? + "AADSTS".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    digits.parse().ok()
}

fn string(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A non-negative integer, sent as a number or as a string (Azure AD v1 sent strings).
fn number(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    #[test]
    fn client_credentials_success() {
        let r = resp(
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi..."}"#,
        );
        let t = parse_token_response(&r).unwrap();
        assert_eq!(t.access_token.expose(), "eyJ0eXAi...");
        assert_eq!(t.expires_in, Some(3599));
        assert_eq!(t.ext_expires_in, Some(3599));
        assert!(t.refresh_token.is_none());
        assert!(!format!("{t:?}").contains("eyJ0"));
    }

    #[test]
    fn string_expires_in() {
        let t = parse_token_response(&resp(200, r#"{"access_token":"a","expires_in":"3600"}"#))
            .unwrap();
        assert_eq!(t.expires_in, Some(3600));
        assert_eq!(t.token_type, "Bearer");
    }

    #[test]
    fn entra_error_with_trace_block() {
        let body = r#"{"error":"invalid_grant","error_description":"AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.\r\nTrace ID: 1b4e0a10-0000-4000-8000-000000000001\r\nCorrelation ID: 2c4e0a10-0000-4000-8000-000000000002\r\nTimestamp: 2022-12-26 15:40:06Z","error_codes":[70008],"timestamp":"2022-12-26 15:40:06Z","trace_id":"1b4e0a10-0000-4000-8000-000000000001","correlation_id":"2c4e0a10-0000-4000-8000-000000000002","error_uri":"https://login.microsoftonline.com/error?code=70008","suberror":"bad_token"}"#;
        let err = parse_token_response(&resp(400, body)).unwrap_err();
        let e = err.oauth().unwrap();
        assert_eq!(e.error, "invalid_grant");
        assert_eq!(e.aadsts, Some(70008));
        assert_eq!(e.suberror.as_deref(), Some("bad_token"));
        assert!(
            e.description
                .as_deref()
                .unwrap()
                .ends_with("for this user and resource.")
        );
        assert_eq!(
            e.trace_id.as_deref(),
            Some("1b4e0a10-0000-4000-8000-000000000001")
        );
        assert!(!err.is_transient());
        assert!(e.remedy().contains("sign the user in again"));
        let shown = err.to_string();
        assert!(
            shown.starts_with("invalid_grant (HTTP 400, AADSTS70008): The provided"),
            "{shown}"
        );
        assert!(shown.contains("trace 1b4e0a10"), "{shown}");
    }

    #[test]
    fn invalid_client_secret_id() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '00000000-0000-0000-0000-000000000001'.","error_codes":[7000215]}"#;
        let e = parse_token_response(&resp(401, body)).unwrap_err();
        assert_eq!(e.aadsts(), Some(7000215));
        assert!(e.remedy().contains("Value, not its Secret ID"));
        assert!(!e.is_transient());
    }

    #[test]
    fn aadsts_from_description_only() {
        let e = parse_error(400, None, br#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value..."}"#).unwrap();
        assert_eq!(e.aadsts, Some(70011));
    }

    #[test]
    fn transient_classification() {
        let mut e = OAuthError::new("temporarily_unavailable", 400);
        assert!(e.is_transient());
        e = OAuthError::new("invalid_request", 503);
        assert!(e.is_transient());
        e = OAuthError::new("invalid_request", 400);
        e.aadsts = Some(90033);
        assert!(e.is_transient());
        assert!(!OAuthError::new("invalid_client", 401).is_transient());
        let mut consent = OAuthError::new("invalid_grant", 400);
        consent.suberror = Some("consent_required".into());
        assert!(consent.remedy().contains("consent"));
    }

    #[test]
    fn retry_after_and_non_json() {
        let r = http::Response::builder()
            .status(503)
            .header("retry-after", "7")
            .header("content-type", "text/html")
            .body(b"<html>Service Unavailable</html>".to_vec())
            .unwrap();
        match parse_token_response(&r).unwrap_err() {
            e @ Error::InvalidResponse {
                status: 503,
                retry_after: Some(d),
                ..
            } => {
                assert_eq!(d, Duration::from_secs(7));
                assert!(e.is_transient());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn device_code() {
        let body = r#"{"user_code":"FRWQDE7YL","device_code":"DAQABAAEAAAD","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code FRWQDE7YL to authenticate."}"#;
        let d = parse_device_code_response(&resp(200, body)).unwrap();
        assert_eq!(d.user_code, "FRWQDE7YL");
        assert_eq!(d.interval, 5);
        assert!(d.display_message().contains("FRWQDE7YL"));
        let google = r#"{"device_code":"x","user_code":"ABC-DEF","verification_url":"https://www.google.com/device","expires_in":1800,"interval":5}"#;
        assert_eq!(
            parse_device_code_response(&resp(200, google))
                .unwrap()
                .verification_uri,
            "https://www.google.com/device"
        );
        let e =
            parse_device_code_response(&resp(400, r#"{"error":"invalid_client"}"#)).unwrap_err();
        assert_eq!(e.oauth().unwrap().error, "invalid_client");
    }
}
