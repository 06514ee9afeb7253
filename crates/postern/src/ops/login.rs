//! `relay login ACCOUNT`: signs a mailbox in for a delegated identity and stores its refresh
//! token where the relay reads it.
//!
//! `ACCOUNT` is an identity name (`[identities.<name>]`) or a mailbox address (the `user` of
//! an identity, or the `mailbox` of a route that uses one). The device-code flow is the
//! default (works over SSH, on a headless server): the code and the address are printed on
//! their own lines, and a progress line on the second writer (stderr) ticks while Entra waits
//! for the user. `--browser` uses the authorization code with PKCE and a loopback redirect
//! instead. On success the refresh token is written to the identity's
//! `refresh_token_store` (0600, atomically) under the key the relay's token cache uses.

use std::io::Write;
use std::time::{Duration, SystemTime};

use postern_entra::{CacheKey, FileStore, LoopbackListener, RefreshTokenStore, TokenResponse};

use super::OpsError;
use crate::config::Config;
use crate::identity::{Identities, IdentityConfig};

/// How `relay login` signs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginFlow {
    /// Device code: any browser, on any machine.
    DeviceCode,
    /// Authorization code + PKCE through a browser on this machine (loopback redirect).
    Browser,
}

/// The identity `account` names, with the user it signs in.
fn resolve<'a>(
    cfg: &'a Config,
    account: &str,
) -> Result<(&'a str, &'a IdentityConfig, String), OpsError> {
    let by_name = cfg.identities.get_key_value(account);
    let by_user = || {
        cfg.identities.iter().find(|(_, i)| {
            i.user
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(account))
        })
    };
    let by_route = || {
        cfg.routes.values().find_map(|r| {
            let (_, smtp) = r.smtp()?;
            let mailbox = smtp.mailbox.as_deref()?;
            if !mailbox.eq_ignore_ascii_case(account) {
                return None;
            }
            cfg.identities.get_key_value(smtp.identity.as_deref()?)
        })
    };
    let Some((name, ident)) = by_name.or_else(by_user).or_else(by_route) else {
        let names: Vec<&str> = cfg.identities.keys().map(String::as_str).collect();
        return Err(OpsError::Refused(format!(
            "no identity or mailbox {account:?} in the configuration (identities: {})",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    if !ident.is_delegated() {
        return Err(OpsError::Refused(format!(
            "identity {name:?} is app-only (client credentials): it needs no sign-in; \
             `relay doctor` checks that it gets a token"
        )));
    }
    let user = ident
        .user
        .clone()
        .or_else(|| account.contains('@').then(|| account.to_owned()))
        .or_else(|| {
            cfg.routes.values().find_map(|r| {
                let (_, smtp) = r.smtp()?;
                (smtp.identity.as_deref() == Some(name.as_str()))
                    .then(|| smtp.mailbox.clone())
                    .flatten()
            })
        })
        .ok_or_else(|| {
            OpsError::Refused(format!(
                "identity {name:?} names no user: set `user = \"scanner@contoso.com\"` in \
                 [identities.{name}] or give the mailbox as ACCOUNT"
            ))
        })?;
    Ok((name.as_str(), ident, user))
}

/// Waits for `fut`, ticking a progress line on `progress` every `tick`.
async fn with_progress<T>(
    fut: impl Future<Output = T>,
    progress: &mut (dyn Write + Send),
    tick: Duration,
) -> T {
    const SPIN: [char; 4] = ['|', '/', '-', '\\'];
    tokio::pin!(fut);
    let started = tokio::time::Instant::now();
    let mut n = 0usize;
    let mut timer = tokio::time::interval(tick);
    loop {
        tokio::select! {
            r = &mut fut => {
                let _ = writeln!(progress);
                return r;
            }
            _ = timer.tick() => {
                let _ = write!(
                    progress,
                    "\r{} waiting for you to sign in... {}s ",
                    SPIN[n % SPIN.len()],
                    started.elapsed().as_secs()
                );
                let _ = progress.flush();
                n += 1;
            }
        }
    }
}

/// `relay login ACCOUNT`: signs in, stores the refresh token, and confirms on `out`.
/// Instructions and the result go to `out`; the progress indicator to `progress`.
pub async fn login(
    cfg: &Config,
    account: &str,
    flow: LoginFlow,
    out: &mut (dyn Write + Send),
    progress: &mut (dyn Write + Send),
) -> Result<(), OpsError> {
    let (name, ident, user) = resolve(cfg, account)?;
    let Some(store_path) = ident.refresh_token_store.clone() else {
        return Err(OpsError::Refused(format!(
            "identity {name:?} has no refresh_token_store"
        )));
    };
    let identities =
        Identities::from_config(&cfg.identities).map_err(|e| OpsError::Refused(e.to_string()))?;
    let Some(client) = identities.client(name) else {
        return Err(OpsError::Refused(format!(
            "identity {name:?} could not be built"
        )));
    };
    let scope = ident.default_scope();
    writeln!(
        out,
        "Signing in {user} for identity {name} (scope: {scope})"
    )?;
    let token: TokenResponse = match flow {
        LoginFlow::DeviceCode => {
            let device = client
                .request_device_code(&scope)
                .await
                .map_err(|e| OpsError::Token(format!("{e}; {}", e.remedy())))?;
            writeln!(out)?;
            writeln!(out, "  1. Open:       {}", device.verification_uri)?;
            writeln!(out, "  2. Enter code: {}", device.user_code)?;
            writeln!(out, "  3. Sign in as: {user}")?;
            writeln!(out)?;
            writeln!(
                out,
                "The code expires in {} minutes.",
                device.expires_in.div_ceil(60)
            )?;
            out.flush()?;
            with_progress(
                client.poll_device_code(&device),
                progress,
                Duration::from_secs(1),
            )
            .await
            .map_err(|e| OpsError::Token(format!("sign-in failed: {e}; {}", e.remedy())))?
        }
        LoginFlow::Browser => {
            let listener = LoopbackListener::bind()
                .await
                .map_err(|e| OpsError::Token(e.to_string()))?;
            let url_line = std::sync::Mutex::new(String::new());
            let fut =
                client.auth_code_interactive(&scope, &listener, Duration::from_secs(600), |url| {
                    *url_line
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = url.to_string()
                });
            tokio::pin!(fut);
            // The URL is known once the future first runs; print it, then wait.
            let first = futures_poll_once(fut.as_mut()).await;
            let r = match first {
                Some(r) => r,
                None => {
                    writeln!(out)?;
                    writeln!(
                        out,
                        "  Open this address in a browser on this machine and sign in as {user}:"
                    )?;
                    let url = url_line
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    writeln!(out, "  {url}")?;
                    writeln!(out)?;
                    out.flush()?;
                    with_progress(fut, progress, Duration::from_secs(1)).await
                }
            };
            r.map_err(|e| OpsError::Token(format!("sign-in failed: {e}; {}", e.remedy())))?
        }
    };
    let Some(refresh) = &token.refresh_token else {
        return Err(OpsError::Token(
            "Entra answered without a refresh token: the scope must include offline_access".into(),
        ));
    };
    let key = CacheKey::new(client, &scope, Some(&user)).store_key();
    let store = FileStore::new(store_path.clone());
    store
        .save(&key, refresh)
        .map_err(|e| OpsError::Token(format!("cannot store the refresh token: {e}")))?;
    let expires = token.expires_at(SystemTime::now());
    writeln!(out, "Signed in: mailbox {user}")?;
    writeln!(
        out,
        "  access token valid until {} (renewed automatically)",
        super::format_time(expires)
    )?;
    if let Some(s) = &token.scope {
        writeln!(out, "  granted scopes: {s}")?;
    }
    writeln!(out, "  refresh token stored in {}", store_path.display())?;
    Ok(())
}

/// Polls `fut` once: `Some` if it finished at once.
async fn futures_poll_once<F: Future + Unpin>(mut fut: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut fut).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
