//! `token`: get an OAuth 2.0 access token from Microsoft Entra ID (or any OAuth authority),
//! every way an administrator can, with `postern-entra`.
//!
//! ```text
//! cargo run -p postern-examples --example token -- \
//!     --tenant contoso.onmicrosoft.com --client-id <app id> --client-secret-file secret.txt \
//!     client-credentials
//! cargo run -p postern-examples --example token -- \
//!     --tenant contoso.onmicrosoft.com --client-id <app id> --cache tokens.json --user scanner@contoso.com \
//!     device-code            # then later: ... refresh
//! ```
//!
//! `--authority` takes a base URL (`https://login.microsoftonline.us`, a local simulator such
//! as `https://127.0.0.1:8443` with `--ca-file` for its CA) or one of `global`, `usgov`,
//! `china`, `google`. On success it prints `{token_type, expires_in, scope, access_token}`;
//! on failure it exits 1 and prints `{error, aadsts, description, transient, remedy}`.
//! Prompts (the device code, the browser URL) go to standard error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use postern_entra::{
    Authority, CertificateCredential, Clock as _, Credential, Error, FileStore, LoopbackListener,
    MemoryStore, OAuthClient, RefreshTokenStore, ReqwestClient, Secret, SystemClock, TokenCache,
};
use serde_json::{Value, json};

/// Get an OAuth 2.0 access token (client credentials, device code, auth code + PKCE, refresh).
#[derive(Parser, Debug)]
#[command(name = "token", version)]
struct Args {
    /// Authority base URL, or global | usgov | china | google.
    #[arg(long, default_value = "global")]
    authority: String,
    /// Tenant ID or verified domain (organizations/common for delegated flows).
    #[arg(long, default_value = "organizations")]
    tenant: String,
    /// Application (client) ID.
    #[arg(long)]
    client_id: String,
    /// File holding the client secret's Value.
    #[arg(long, conflicts_with = "certificate")]
    client_secret_file: Option<PathBuf>,
    /// PEM certificate registered on the app (with --key).
    #[arg(long, requires = "key")]
    certificate: Option<PathBuf>,
    /// Unencrypted RSA private key, PKCS#8 or PKCS#1 PEM (with --certificate).
    #[arg(long, requires = "certificate")]
    key: Option<PathBuf>,
    /// Scope(s), space-separated [default: https://outlook.office365.com/.default for
    /// client-credentials, "https://outlook.office.com/SMTP.Send offline_access" otherwise].
    #[arg(long)]
    scope: Option<String>,
    /// Extra CA certificate (PEM) to trust besides the system roots; repeatable.
    #[arg(long)]
    ca_file: Vec<PathBuf>,
    /// Refresh-token store (JSON, created 0600): written by device-code and auth-code, read
    /// and rotated by refresh.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The user the refresh token belongs to (its key in --cache).
    #[arg(long, default_value = "default")]
    user: String,
    /// Seconds to wait for any answer of the authority.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The app's own token (client secret or certificate).
    ClientCredentials,
    /// Sign a user in on another device: shows a code to enter at the verification URL.
    DeviceCode,
    /// Sign a user in with this machine's browser (PKCE, loopback redirect).
    AuthCode {
        /// Loopback port to listen on (0: any; Entra ignores the port of http://localhost).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Seconds to wait for the browser.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
    /// A new access token from the refresh token in --cache (rotated and stored first).
    Refresh,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&Error::Config(format!("tokio runtime: {e}"))),
    };
    match runtime.block_on(run(args)) {
        Ok(v) => postern_examples::emit(&v, true),
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    let (error, description) = match e.oauth() {
        Some(o) => (o.error.clone(), o.description.clone().unwrap_or_default()),
        None => (kind(e).to_owned(), e.to_string()),
    };
    let out = json!({
        "error": error,
        "aadsts": e.aadsts(),
        "description": description,
        "transient": e.is_transient(),
        "remedy": e.remedy(),
    });
    postern_examples::emit(&out, false)
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Transport(_) => "transport",
        Error::Timeout(_) => "timeout",
        Error::InvalidResponse { .. } => "invalid_response",
        Error::Authorization { .. } => "authorization",
        Error::StateMismatch => "state_mismatch",
        Error::DeviceCodeExpired => "device_code_expired",
        Error::RedirectTimeout(_) => "redirect_timeout",
        Error::NoRefreshToken { .. } => "no_refresh_token",
        Error::Credential(_) => "credential",
        Error::Io { .. } => "io",
        _ => "config",
    }
}

async fn run(args: Args) -> Result<Value, Error> {
    let authority = match args.authority.as_str() {
        "global" => Authority::global(),
        "usgov" => Authority::us_gov(),
        "china" => Authority::china(),
        "google" => Authority::google(),
        url => Authority::microsoft(url)?,
    };
    let mut http = ReqwestClient::builder().timeout(Duration::from_secs(args.timeout));
    for ca in &args.ca_file {
        http = http.extra_ca_file(ca)?;
    }
    let credential = match (&args.client_secret_file, &args.certificate, &args.key) {
        (Some(path), _, _) => Credential::Secret(
            Secret::from_file(path)
                .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?,
        ),
        (None, Some(cert), Some(key)) => {
            Credential::Certificate(Arc::new(CertificateCredential::from_pem_files(cert, key)?))
        }
        _ => Credential::None,
    };
    let client = OAuthClient::builder(authority, &args.tenant, &args.client_id)
        .credential(credential)
        .http_client(Arc::new(http.build()?))
        .timeout(Duration::from_secs(args.timeout))
        .build()?;
    let store: Arc<dyn RefreshTokenStore> = match &args.cache {
        Some(path) => Arc::new(FileStore::new(path)),
        None => Arc::new(MemoryStore::new()),
    };
    let cache = TokenCache::new(store);
    let delegated = "https://outlook.office.com/SMTP.Send offline_access";
    let scope = args.scope.clone().unwrap_or_else(|| {
        let app_only = matches!(args.command, Command::ClientCredentials);
        (if app_only {
            "https://outlook.office365.com/.default"
        } else {
            delegated
        })
        .to_owned()
    });
    let started = SystemClock::new().now();
    let response = match args.command {
        Command::ClientCredentials => client.client_credentials(&scope).await?,
        Command::DeviceCode => {
            client
                .device_code(&scope, |d| eprintln!("{}", d.display_message()))
                .await?
        }
        Command::AuthCode { port, wait } => {
            let listener = LoopbackListener::bind_port(port).await?;
            client
                .auth_code_interactive(&scope, &listener, Duration::from_secs(wait), |url| {
                    eprintln!("Open this URL in a browser on this machine and sign in:\n\n{url}\n");
                })
                .await?
        }
        Command::Refresh => {
            if args.cache.is_none() {
                return Err(Error::Config(
                    "refresh needs --cache FILE (written by device-code or auth-code)".into(),
                ));
            }
            let token = cache.get(&client, &scope, Some(&args.user)).await?;
            let left = token
                .expires_at
                .duration_since(SystemClock::new().now())
                .unwrap_or_default();
            return Ok(json!({
                "token_type": token.token_type,
                "expires_in": left.as_secs(),
                "scope": token.scope,
                "access_token": token.secret.expose(),
            }));
        }
    };
    if args.cache.is_some() && response.refresh_token.is_some() {
        cache.seed(&client, &scope, Some(&args.user), &response, started)?;
        eprintln!("refresh token stored for {}", args.user);
    }
    Ok(json!({
        "token_type": response.token_type,
        "expires_in": response.expires_in,
        "scope": response.scope,
        "access_token": response.access_token.expose(),
    }))
}
