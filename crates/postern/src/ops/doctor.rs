//! `relay doctor`: one line per check, `PASS` / `WARN` / `FAIL`, each problem with a remedy.
//!
//! ```text
//! PASS config: relay.toml is valid (2 routes, 1 identity)
//! PASS identity app: token obtained (scope https://outlook.office365.com/.default, roles SMTP.SendAsApp), valid until 2026-05-04 10:12:00 UTC
//! PASS route m365: resolve: smtp.office365.com -> 52.96.0.1:587
//! PASS route m365: connect: smtp.office365.com (52.96.0.1:587) answered the greeting and EHLO
//! PASS route m365: tls: STARTTLS established, server certificate verified
//! PASS route m365: auth: the server offers XOAUTH2 (offered: LOGIN XOAUTH2)
//! FAIL route m365: login: AUTH refused: 535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox -- fix: enable SMTP AUTH ...
//! PASS spool: ./postern-data/spool is writable, 41.2 GiB free
//! 6 passed, 0 warnings, 1 failed
//! ```
//!
//! Every network check goes through the delivery code itself (the route's transport, its
//! TLS verification and its token source), so what passes here is what delivery does. The
//! report's [`DoctorReport::passed`] is `true` when nothing failed (warnings allowed).

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use postern_mx::{MxResolver, ResolverSettings};

use super::OpsError;
use super::send::{self, RouteTransport, SendOptions};
use crate::config::{Config, ConfigError};
use crate::delivery::smtp::{AuthMode, ProbeError, ProbeStage, SmtpKind};
use crate::identity::{ACS_SCOPE, Identities};
use crate::router::RouteConfig;

/// Below this much free space the spool check fails (the relay would soon refuse mail).
pub const MIN_FREE_FAIL: u64 = 64 * 1024 * 1024;
/// Below this much free space the spool check warns.
pub const MIN_FREE_WARN: u64 = 1024 * 1024 * 1024;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[allow(clippy::exhaustive_enums)] // three levels by design, like postern_mx::checks::Status
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but worth a look.
    Warn,
    /// Broken: mail will not flow until it is fixed.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        })
    }
}

impl From<postern_mx::checks::Status> for Status {
    fn from(s: postern_mx::checks::Status) -> Self {
        match s {
            postern_mx::checks::Status::Pass => Self::Pass,
            postern_mx::checks::Status::Warn => Self::Warn,
            postern_mx::checks::Status::Fail => Self::Fail,
        }
    }
}

/// One check's result (one line of the report).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// Pass, warn or fail.
    pub status: Status,
    /// What was checked: `config`, `identity app`, `route m365: tls`, `spool`, ...
    pub subject: String,
    /// What was found.
    pub message: String,
    /// What to do, for warnings and failures.
    pub remedy: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.subject, self.message)?;
        if let Some(r) = &self.remedy {
            write!(f, " -- fix: {r}")?;
        }
        Ok(())
    }
}

/// Every check of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DoctorReport {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Whether nothing failed (the exit status of `relay doctor`).
    pub fn passed(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    /// How many checks came out `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// What `relay doctor` does besides the checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DoctorOptions {
    /// Send a real test message to this address through the first route.
    pub send_test: Option<String>,
}

impl DoctorOptions {
    /// Sends a test message to `address` at the end.
    #[must_use]
    pub fn send_test(mut self, address: impl Into<String>) -> Self {
        self.send_test = Some(address.into());
        self
    }
}

/// Writes each check as it completes and keeps it for the report.
struct Reporter<'a> {
    out: &'a mut (dyn Write + Send),
    report: DoctorReport,
}

impl Reporter<'_> {
    fn check(
        &mut self,
        status: Status,
        subject: impl Into<String>,
        message: impl Into<String>,
        remedy: Option<String>,
    ) -> Result<(), OpsError> {
        let c = Check {
            status,
            subject: subject.into(),
            message: message.into(),
            remedy: if status == Status::Pass { None } else { remedy },
        };
        writeln!(self.out, "{c}")?;
        self.out.flush()?;
        self.report.checks.push(c);
        Ok(())
    }
}

/// `relay doctor --config FILE`: loads `path` (the built-in configuration when `None`) and
/// runs [`doctor`]; an invalid configuration is one `FAIL` line.
///
/// # Errors
/// Only when the report cannot be written.
pub async fn doctor_file(
    path: Option<&Path>,
    opts: &DoctorOptions,
    out: &mut (dyn Write + Send),
) -> Result<DoctorReport, OpsError> {
    let loaded = match path {
        Some(p) => Config::load(p).map(|c| (c, p.display().to_string())),
        None => Ok((Config::builtin(), "the built-in configuration".to_owned())),
    };
    doctor(loaded, opts, out).await
}

/// Runs every check on a loaded configuration (`Ok((config, where it came from))`) or
/// reports why it did not load.
///
/// # Errors
/// Only when the report cannot be written.
pub async fn doctor(
    loaded: Result<(Config, String), ConfigError>,
    opts: &DoctorOptions,
    out: &mut (dyn Write + Send),
) -> Result<DoctorReport, OpsError> {
    let mut r = Reporter {
        out,
        report: DoctorReport::default(),
    };
    match loaded {
        Err(e) => {
            r.check(
                Status::Fail,
                "config",
                e.to_string(),
                Some(
                    "correct the key named above (see docs/configuration.md); `relay check-config` re-checks"
                        .into(),
                ),
            )?;
        }
        Ok((cfg, origin)) => {
            let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
            r.check(
                Status::Pass,
                "config",
                format!(
                    "{origin} is valid ({}, {})",
                    plural(cfg.routes.len(), "route"),
                    plural(cfg.identities.len(), "identity")
                ),
                None,
            )?;
            run_checks(&cfg, opts, &mut r).await?;
        }
    }
    let (p, w, f) = (
        r.report.count(Status::Pass),
        r.report.count(Status::Warn),
        r.report.count(Status::Fail),
    );
    writeln!(r.out, "{p} passed, {w} warnings, {f} failed")?;
    Ok(r.report)
}

async fn run_checks(
    cfg: &Config,
    opts: &DoctorOptions,
    r: &mut Reporter<'_>,
) -> Result<(), OpsError> {
    let identities = match Identities::from_config(&cfg.identities) {
        Ok(i) => i,
        Err(e) => {
            r.check(
                Status::Fail,
                format!("identity {}", e.name),
                e.message,
                Some("fix the identity's files or environment variables; routes using it cannot authenticate".into()),
            )?;
            Identities::empty()
        }
    };
    check_identities(cfg, &identities, r).await?;
    for (name, route) in &cfg.routes {
        match route {
            RouteConfig::Local { dir, .. } => check_local(name, dir, r)?,
            other => match other.smtp() {
                Some((kind, _)) => check_smtp_route(cfg, &identities, name, kind, r).await?,
                None => r.check(
                    Status::Warn,
                    format!("route {name}"),
                    "this route type is not checked by the doctor yet",
                    Some("use `relay send --route` to try it".into()),
                )?,
            },
        }
    }
    check_spool(&cfg.spool.path, r)?;
    if let Some(to) = &opts.send_test {
        send_test(cfg, &identities, to, r).await?;
    }
    Ok(())
}

/// The tokens the routes will ask for: `(identity, mailbox, scope override, route kinds)`.
fn token_uses(cfg: &Config) -> Vec<(String, Option<String>, Option<&'static str>)> {
    let mut seen = BTreeSet::new();
    let mut uses = Vec::new();
    for route in cfg.routes.values() {
        let Some((kind, smtp)) = route.smtp() else {
            continue;
        };
        let Some(id) = &smtp.identity else { continue };
        if smtp.auth_mode(kind) != AuthMode::Xoauth2 {
            continue;
        }
        let scope = (kind == SmtpKind::Acs).then_some(ACS_SCOPE);
        let key = (id.clone(), smtp.mailbox.clone(), scope);
        if seen.insert(key.clone()) {
            uses.push(key);
        }
    }
    uses
}

async fn check_identities(
    cfg: &Config,
    identities: &Identities,
    r: &mut Reporter<'_>,
) -> Result<(), OpsError> {
    let uses = token_uses(cfg);
    for (name, ident) in &cfg.identities {
        if !identities.contains(name) {
            continue; // reported when building
        }
        let mine: Vec<_> = uses.iter().filter(|(n, _, _)| n == name).collect();
        let used_at_all = cfg.routes.values().any(|rt| {
            rt.smtp()
                .is_some_and(|(_, s)| s.identity.as_deref() == Some(name.as_str()))
        });
        if !used_at_all {
            r.check(
                Status::Warn,
                format!("identity {name}"),
                "no route uses this identity",
                Some(format!(
                    "set identity = \"{name}\" on a route, or remove [identities.{name}]"
                )),
            )?;
        }
        let checks: Vec<(Option<String>, Option<&'static str>)> = if mine.is_empty() {
            if ident.is_delegated() && ident.user.is_none() {
                continue;
            }
            vec![(None, None)]
        } else {
            mine.iter().map(|(_, m, s)| (m.clone(), *s)).collect()
        };
        for (mailbox, scope) in checks {
            let Some(source) = identities.source(name, mailbox.as_deref(), scope) else {
                continue;
            };
            let subject = format!("identity {name}");
            match source.access_token().await {
                Ok(token) => {
                    let (status, what, remedy) =
                        judge_token(token.secret.expose(), source.scope(), ident.is_delegated());
                    r.check(
                        status,
                        subject,
                        format!(
                            "token obtained (scope {}{what}), valid until {}",
                            source.scope(),
                            super::format_time(token.expires_at)
                        ),
                        remedy,
                    )?;
                }
                Err(e) => {
                    r.check(
                        Status::Fail,
                        subject,
                        format!("no token for scope {}: {e}", source.scope()),
                        Some(e.remedy()),
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// What an access token grants, when it is a JWT (Entra's are; a simulator's may be
/// opaque): `roles` for app-only tokens, `scp` for delegated ones.
fn judge_token(token: &str, scope: &str, delegated: bool) -> (Status, String, Option<String>) {
    let claims = token
        .split('.')
        .nth(1)
        .filter(|_| token.split('.').count() == 3)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let Some(claims) = claims else {
        return (
            Status::Pass,
            "; opaque token, its permissions are checked by the routes' login".into(),
            None,
        );
    };
    let exchange = scope.contains("outlook");
    if delegated {
        let scp = claims["scp"].as_str().unwrap_or_default();
        if exchange && !scp.split(' ').any(|s| s.eq_ignore_ascii_case("SMTP.Send")) {
            return (
                Status::Fail,
                format!("; scp \"{scp}\" lacks SMTP.Send"),
                Some("add the delegated permission SMTP.Send (Office 365 Exchange Online) to the app registration, grant consent, and run `relay login` again".into()),
            );
        }
        (Status::Pass, format!(", scp {scp}"), None)
    } else {
        let roles: Vec<&str> = claims["roles"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if exchange
            && !roles
                .iter()
                .any(|r| r.eq_ignore_ascii_case("SMTP.SendAsApp"))
        {
            return (
                Status::Fail,
                format!("; roles [{}] lack SMTP.SendAsApp", roles.join(", ")),
                Some("add the application permission SMTP.SendAsApp (Office 365 Exchange Online) to the app registration and grant admin consent".into()),
            );
        }
        (Status::Pass, format!(", roles {}", roles.join(" ")), None)
    }
}

/// The remedy for a failed session step.
fn stage_remedy(e: &ProbeError, port: u16) -> String {
    if let Some(r) = &e.remedy {
        return r.clone();
    }
    match e.stage {
        ProbeStage::Resolve => "check the host name, this machine's DNS, or the route's name_servers".into(),
        ProbeStage::Connect => format!(
            "check that outbound TCP port {port} is allowed by firewalls and proxies (many networks block 25) and that the host is right"
        ),
        ProbeStage::Greeting => "the server refused the session: check the host and port".into(),
        ProbeStage::Tls => "check the route's tls, tls_name and ca_file: the server certificate must chain to a trusted CA and name the host (a TLS-inspecting firewall needs its CA in ca_file)".into(),
        ProbeStage::Token => "see the identity check above".into(),
        ProbeStage::Auth => "check the route's auth setting against what the server offers (AUTH is usually offered only after STARTTLS)".into(),
        _ => "try again; if it persists, look at `relay send --transcript`".into(),
    }
}

async fn check_smtp_route(
    cfg: &Config,
    identities: &Identities,
    name: &str,
    kind: SmtpKind,
    r: &mut Reporter<'_>,
) -> Result<(), OpsError> {
    let subject = |what: &str| format!("route {name}: {what}");
    let Some(smtp) = cfg
        .routes
        .get(name)
        .and_then(|rt| rt.smtp().map(|(_, s)| s))
    else {
        return Ok(());
    };
    let port = smtp.port(kind);
    let t = match send::transport(cfg, identities, name, None) {
        Ok(RouteTransport::Smtp(t)) => t,
        Ok(RouteTransport::Local(_)) => return Ok(()),
        Err(e) => {
            return r.check(
                Status::Fail,
                format!("route {name}"),
                e.to_string(),
                Some("fix the route's files and keys (see docs/configuration.md)".into()),
            );
        }
    };
    match t.resolve().await {
        Ok(addrs) => {
            let list: Vec<String> = addrs
                .iter()
                .take(4)
                .map(|(h, a)| format!("{h} -> {a}"))
                .collect();
            r.check(Status::Pass, subject("resolve"), list.join(", "), None)?;
        }
        Err(e) => {
            let remedy = stage_remedy(&e, port);
            r.check(Status::Fail, subject("resolve"), e.message, Some(remedy))?;
            return Ok(());
        }
    }
    let report = match t.probe(false).await {
        Ok(p) => p,
        Err(e) => {
            // Name the step that failed; the steps before it passed.
            let steps = [
                (ProbeStage::Connect, "connect"),
                (ProbeStage::Greeting, "greeting"),
                (ProbeStage::Tls, "tls"),
            ];
            for (stage, what) in steps {
                if stage == e.stage {
                    break;
                }
                r.check(Status::Pass, subject(what), "ok", None)?;
            }
            let what = match e.stage {
                ProbeStage::Connect => "connect",
                ProbeStage::Greeting => "greeting",
                ProbeStage::Tls => "tls",
                other => other.as_str(),
            };
            let remedy = stage_remedy(&e, port);
            r.check(Status::Fail, subject(what), e.message, Some(remedy))?;
            return Ok(());
        }
    };
    r.check(
        Status::Pass,
        subject("connect"),
        format!(
            "{} ({}) answered the greeting and EHLO",
            report.host, report.addr
        ),
        None,
    )?;
    let tls_mode = smtp.tls_mode(kind);
    if report.tls {
        r.check(
            Status::Pass,
            subject("tls"),
            "TLS established, server certificate verified",
            None,
        )?;
    } else {
        r.check(
            Status::Warn,
            subject("tls"),
            format!("no TLS (tls = {tls_mode:?}); mail and credentials cross the network in clear"),
            Some("use tls = \"required\" when the server offers STARTTLS".into()),
        )?;
    }
    if let Some(mech) = t.auth_mechanism() {
        let offered = report.auth_offered.join(" ");
        if report
            .auth_offered
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mech))
        {
            r.check(
                Status::Pass,
                subject("auth"),
                format!("the server offers {mech} (offered: {offered})"),
                None,
            )?;
        } else {
            let remedy = if mech == "XOAUTH2" {
                "point the route at Exchange Online's submission endpoint (smtp.office365.com:587), or choose the auth the server offers"
            } else {
                "choose an auth the server offers, or check that the route points at the right server"
            };
            r.check(
                Status::Fail,
                subject("auth"),
                format!(
                    "the route needs AUTH {mech}; the server offers {}",
                    if offered.is_empty() {
                        "no AUTH"
                    } else {
                        &offered
                    }
                ),
                Some(remedy.into()),
            )?;
            return Ok(());
        }
        match t.probe(true).await {
            Ok(_) => r.check(
                Status::Pass,
                subject("login"),
                format!(
                    "AUTH {mech}{} accepted",
                    smtp.mailbox
                        .as_deref()
                        .map(|m| format!(" as {m}"))
                        .unwrap_or_default()
                ),
                None,
            )?,
            Err(e) => {
                let remedy = stage_remedy(&e, port);
                r.check(Status::Fail, subject("login"), e.message, Some(remedy))?;
            }
        }
    }
    if matches!(kind, SmtpKind::DirectSend | SmtpKind::Connector) {
        check_domains(name, smtp, r).await?;
    }
    Ok(())
}

async fn check_domains(
    name: &str,
    smtp: &crate::delivery::smtp::SmtpRouteConfig,
    r: &mut Reporter<'_>,
) -> Result<(), OpsError> {
    let resolver = if smtp.name_servers.is_empty() {
        MxResolver::system()
    } else {
        let servers: Result<Vec<_>, _> = smtp
            .name_servers
            .iter()
            .map(|s| crate::delivery::smtp::parse_name_server(s))
            .collect();
        match servers {
            Ok(s) => MxResolver::with_name_servers(&s, &ResolverSettings::default()),
            Err(e) => {
                return r.check(Status::Fail, format!("route {name}: dns"), e, None);
            }
        }
    };
    let resolver = match resolver {
        Ok(res) => res,
        Err(e) => {
            return r.check(
                Status::Fail,
                format!("route {name}: dns"),
                format!("no resolver: {e}"),
                Some("check /etc/resolv.conf or the route's name_servers".into()),
            );
        }
    };
    let mut domains: Vec<String> = smtp.accepted_domains();
    if let Some(d) = &smtp.tenant_domain {
        let d = d.to_ascii_lowercase();
        if !domains.contains(&d) {
            domains.insert(0, d);
        }
    }
    for d in domains {
        match postern_mx::checks::check_domain(&resolver, &d, None).await {
            Ok(rep) => {
                for v in [&rep.mx, &rep.spf, &rep.dmarc, &rep.dkim] {
                    r.check(
                        v.status.into(),
                        format!("route {name}: {d} {}", v.check),
                        v.summary.clone(),
                        v.remedy.clone(),
                    )?;
                }
            }
            Err(e) => r.check(
                Status::Fail,
                format!("route {name}: {d}"),
                e.to_string(),
                Some("give a valid domain name".into()),
            )?,
        }
    }
    Ok(())
}

fn check_local(name: &str, dir: &Path, r: &mut Reporter<'_>) -> Result<(), OpsError> {
    let subject = format!("route {name}");
    match writable_dir(dir) {
        Ok(msg) => r.check(Status::Pass, subject, format!("local sink: {msg}"), None),
        Err(e) => r.check(
            Status::Fail,
            subject,
            format!("local sink: {e}"),
            Some(format!(
                "create {} writable by the relay's user, or change dir",
                dir.display()
            )),
        ),
    }
}

/// `Ok(description)` when `dir` is (or can be created as) a writable directory.
fn writable_dir(dir: &Path) -> Result<String, String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => probe_writable(dir)
            .map(|()| format!("{} is writable", dir.display()))
            .map_err(|e| format!("{} is not writable: {e}", dir.display())),
        Ok(_) => Err(format!("{} exists but is not a directory", dir.display())),
        Err(_) => {
            let parent = nearest_existing(dir);
            match parent {
                Some(p) if p.is_dir() => probe_writable(&p)
                    .map(|()| {
                        format!(
                            "{} does not exist yet; the relay creates it in {} (writable)",
                            dir.display(),
                            p.display()
                        )
                    })
                    .map_err(|e| {
                        format!(
                            "{} does not exist and {} is not writable: {e}",
                            dir.display(),
                            p.display()
                        )
                    }),
                Some(p) => Err(format!(
                    "{} cannot be created: {} is not a directory",
                    dir.display(),
                    p.display()
                )),
                None => Err(format!("{} cannot be created", dir.display())),
            }
        }
    }
}

fn nearest_existing(path: &Path) -> Option<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    abs.ancestors()
        .skip(1)
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .map(Path::to_path_buf)
}

fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // a display value
    let f = n as f64;
    if n >= 1 << 30 {
        format!("{:.1} GiB", f / f64::from(1u32 << 30))
    } else {
        format!("{:.0} MiB", f / f64::from(1u32 << 20))
    }
}

fn check_spool(path: &Path, r: &mut Reporter<'_>) -> Result<(), OpsError> {
    let what = match writable_dir(path) {
        Ok(w) => w,
        Err(e) => {
            return r.check(
                Status::Fail,
                "spool",
                e,
                Some(format!(
                    "make {} a directory writable by the relay's user (systemd: StateDirectory=postern), or change [spool] path",
                    path.display()
                )),
            );
        }
    };
    let at = if path.exists() {
        path.to_path_buf()
    } else {
        nearest_existing(path).unwrap_or_else(|| path.to_path_buf())
    };
    match rustix::fs::statvfs(&at) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let msg = format!("{what}, {} free", human_bytes(free));
            let remedy = Some(format!(
                "free space on the file system of {} or move the spool; the relay answers 452 4.3.1 when it runs out",
                at.display()
            ));
            if free < MIN_FREE_FAIL {
                r.check(Status::Fail, "spool", msg, remedy)
            } else if free < MIN_FREE_WARN {
                r.check(Status::Warn, "spool", msg, remedy)
            } else {
                r.check(Status::Pass, "spool", msg, None)
            }
        }
        Err(e) => r.check(
            Status::Warn,
            "spool",
            format!("{what}; free space unknown: {e}"),
            Some("check the file system by hand (df)".into()),
        ),
    }
}

async fn send_test(
    cfg: &Config,
    identities: &Identities,
    to: &str,
    r: &mut Reporter<'_>,
) -> Result<(), OpsError> {
    let route = cfg
        .default_routes
        .iter()
        .find(|n| cfg.routes.contains_key(*n))
        .or_else(|| cfg.routes.keys().next())
        .cloned();
    let Some(route) = route else {
        return r.check(
            Status::Fail,
            "send-test",
            "no route to send through",
            Some("add a route".into()),
        );
    };
    let from = cfg
        .routes
        .get(&route)
        .and_then(RouteConfig::smtp)
        .and_then(|(_, s)| s.mailbox.clone())
        .unwrap_or_else(|| format!("postern-doctor@{}", cfg.hostname));
    let opts = SendOptions::new(route.clone(), from, vec![to.to_owned()])
        .subject("Postern doctor test message");
    let subject = format!("send-test via route {route}");
    let t = match send::transport(cfg, identities, &route, None) {
        Ok(t) => t,
        Err(e) => return r.check(Status::Fail, subject, e.to_string(), None),
    };
    let message = send::build_message(&opts, &cfg.hostname, SystemTime::now());
    let result = send::deliver(t.as_dyn(), &opts, &message).await;
    t.close().await;
    match result {
        Ok(res) => {
            let (_, o) = &res.outcomes[0];
            let line = format!("{to}: {}", send::describe(o));
            if res.all_delivered() {
                r.check(Status::Pass, subject, line, None)
            } else {
                r.check(
                    Status::Fail,
                    subject,
                    line,
                    Some("see the route checks above, and `relay send --transcript`".into()),
                )
            }
        }
        Err(e) => r.check(Status::Fail, subject, e.to_string(), None),
    }
}

/// Creates, fsyncs and removes a probe file in `root` (the spool is writable).
pub fn probe_writable(root: &Path) -> std::io::Result<()> {
    let probe = root.join(format!(".probe-{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"postern")?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &serde_json::Value) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(br#"{"alg":"RS256"}"#),
            e.encode(claims.to_string())
        )
    }

    #[test]
    fn token_claims_are_judged() {
        let scope = "https://outlook.office365.com/.default";
        let ok = jwt(&serde_json::json!({"roles": ["SMTP.SendAsApp"]}));
        assert_eq!(judge_token(&ok, scope, false).0, Status::Pass);
        let none = jwt(&serde_json::json!({"roles": []}));
        let (s, what, fix) = judge_token(&none, scope, false);
        assert_eq!(s, Status::Fail);
        assert!(what.contains("lack SMTP.SendAsApp"));
        assert!(fix.unwrap().contains("admin consent"));
        let d = jwt(&serde_json::json!({"scp": "Mail.Read"}));
        assert_eq!(
            judge_token(&d, "https://outlook.office.com/SMTP.Send", true).0,
            Status::Fail
        );
        assert_eq!(judge_token("opaque-abc", scope, false).0, Status::Pass);
    }

    #[test]
    fn check_lines() {
        let c = Check {
            status: Status::Fail,
            subject: "spool".into(),
            message: "x is not a directory".into(),
            remedy: Some("make it one".into()),
        };
        assert_eq!(
            c.to_string(),
            "FAIL spool: x is not a directory -- fix: make it one"
        );
    }
}
