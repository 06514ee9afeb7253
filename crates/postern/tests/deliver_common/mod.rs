//! Shared setup for the delivery tests: a relay from TOML text, a raw device client, and
//! the simulated tenant (Entra ID + Exchange Online).
#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use postern::config::Config;
use postern::spool::{InspectedMessage, inspect};
use postern::{Relay, RelayHandle};
use postern_testkit::entra::{App, EntraSim, Tenant, User};
use postern_testkit::exo::{Profile, SubmissionServer, SubmissionServerBuilder};
use postern_testkit::org::{Mailbox, Organization, ServicePrincipal};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
pub const APP: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
pub const PUBLIC_APP: &str = "22222222-3333-4444-5555-666666666666";
pub const SECRET: &str = "Kx8Q~s3cr3t.value";
pub const MAILBOX: &str = "scanner@contoso.com";

/// A temp dir with helpers to write files into it.
pub struct Dir(pub tempfile::TempDir);

impl Dir {
    pub fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `[[listeners]]`, `[policy]`, `[spool]`, `[queue]` and a local `bounces` route for
    /// the null sender; `extra` adds routes, rules and identities.
    pub fn config(&self, default_route: &str, extra: &str) -> Config {
        let d = self.path().display();
        let text = format!(
            "hostname = \"relay.test\"\ndefault_routes = [\"{default_route}\"]\n\
             [[listeners]]\nname = \"lan\"\nbind = \"127.0.0.1:0\"\n\
             [policy]\nallowed_networks = [\"127.0.0.1/32\"]\n\
             [spool]\npath = \"{d}/spool\"\n\
             [queue]\nretry_initial = \"200ms\"\nretry_max = \"400ms\"\nlifetime = \"1h\"\n\
             [routes.bounces]\ntype = \"local\"\ndir = \"{d}/bounces\"\n\
             [[rules]]\nsender = [\"<>\"]\nroutes = [\"bounces\"]\n\
             {extra}"
        );
        match Config::from_toml(&text, "test.toml") {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    /// The `.eml` files in the local `bounces` route, waiting up to `wait` for `n`.
    pub async fn bounces(&self, n: usize, wait: Duration) -> Vec<String> {
        let dir = self.path().join("bounces");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let found: Vec<String> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            if found.len() >= n || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn start(cfg: Config) -> RelayHandle {
    Relay::start(cfg).await.expect("relay starts")
}

/// Polls the spool until `pred` holds for its messages, or `wait` runs out.
pub async fn spool_until(
    dir: &Dir,
    wait: Duration,
    pred: impl Fn(&[InspectedMessage]) -> bool,
) -> Vec<InspectedMessage> {
    let root = dir.path().join("spool");
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msgs = inspect(&root).unwrap();
        if pred(&msgs) || tokio::time::Instant::now() >= deadline {
            return msgs;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What the device saw: the reply to each RCPT, and to the end of data (if sent).
#[derive(Debug)]
pub struct Sent {
    pub rcpt: Vec<(u16, String)>,
    pub data: Option<(u16, String)>,
}

async fn reply(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert!(line.len() >= 4, "short reply {line:?}");
        let code = line[..3].parse().unwrap();
        text.push_str(line[4..].trim_end());
        if line.as_bytes()[3] == b' ' {
            return (code, text);
        }
        text.push('\n');
    }
}

async fn cmd(r: &mut BufReader<TcpStream>, line: &str) -> (u16, String) {
    r.get_mut().write_all(line.as_bytes()).await.unwrap();
    r.get_mut().write_all(b"\r\n").await.unwrap();
    reply(r).await
}

/// A device sending `subject` from [`MAILBOX`] to `bob@fabrikam.com`; asserts that the
/// relay took it (`250` after the data).
pub async fn send_accepted(relay: &RelayHandle, subject: &str) {
    let sent = send(
        relay,
        MAILBOX,
        &["bob@fabrikam.com"],
        &message(MAILBOX, subject),
    )
    .await;
    assert_eq!(sent.data.as_ref().map(|d| d.0), Some(250), "{sent:?}");
}

/// A device submitting one message to the relay (plain SMTP, no pipelining).
pub async fn send(relay: &RelayHandle, from: &str, to: &[&str], message: &str) -> Sent {
    send_params(relay, from, "", to, message).await
}

/// Like [`send`], with MAIL parameters (`" SMTPUTF8"`, `" BODY=8BITMIME"`).
pub async fn send_params(
    relay: &RelayHandle,
    from: &str,
    params: &str,
    to: &[&str],
    message: &str,
) -> Sent {
    let stream = TcpStream::connect(relay.local_addrs()[0]).await.unwrap();
    let mut r = BufReader::new(stream);
    assert_eq!(reply(&mut r).await.0, 220);
    assert_eq!(cmd(&mut r, "EHLO printer.lan").await.0, 250);
    assert_eq!(
        cmd(&mut r, &format!("MAIL FROM:<{from}>{params}")).await.0,
        250
    );
    let mut rcpt = Vec::new();
    for t in to {
        rcpt.push(cmd(&mut r, &format!("RCPT TO:<{t}>")).await);
    }
    let mut data = None;
    if rcpt.iter().any(|(c, _)| *c == 250) {
        assert_eq!(cmd(&mut r, "DATA").await.0, 354);
        let mut body = message.replace("\r\n", "\n").replace('\n', "\r\n");
        if !body.ends_with("\r\n") {
            body.push_str("\r\n");
        }
        // Dot-stuffing, as every SMTP client must.
        let mut body = body.replace("\r\n.", "\r\n..");
        if body.starts_with('.') {
            body.insert(0, '.');
        }
        r.get_mut().write_all(body.as_bytes()).await.unwrap();
        data = Some(cmd(&mut r, ".").await);
    }
    let _ = cmd(&mut r, "QUIT").await;
    Sent { rcpt, data }
}

pub fn message(from: &str, subject: &str) -> String {
    format!(
        "From: Scanner 3F <{from}>\r\nTo: someone\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@printer.lan>\r\n\r\nPage 1\r\n.dot line\r\n"
    )
}

/// The Entra ID simulator with the confidential app (secret, SMTP.SendAsApp) and a public
/// app for delegated sign-in.
pub async fn entra() -> EntraSim {
    EntraSim::builder()
        .tenant(Tenant::new(TENANT).domain("contoso.onmicrosoft.com"))
        .app(
            App::new(APP, TENANT)
                .secret(SECRET)
                .app_role("https://outlook.office365.com", "SMTP.SendAsApp")
                .app_role("https://communication.azure.com", "Email.Send"),
        )
        .app(App::public(PUBLIC_APP, TENANT))
        .user(User::new(MAILBOX, TENANT).consent(PUBLIC_APP))
        .start()
        .await
        .unwrap()
}

/// The tenant: scanner@contoso.com (password `Scan-2026!`, Send As noreply@), the app's
/// service principal with FullAccess on it.
pub fn org() -> Organization {
    Organization::builder(TENANT, "contoso.com")
        .mailbox(
            Mailbox::new(MAILBOX)
                .password("Scan-2026!")
                .send_as("noreply@contoso.com"),
        )
        .mailbox(Mailbox::new("alice@contoso.com"))
        .service_principal(ServicePrincipal::new(APP).full_access(MAILBOX))
        .build()
}

/// An `[identities.app]` table for the simulator (client secret in a file).
pub fn app_identity(dir: &Dir, sim: &EntraSim) -> String {
    let secret = dir.write("client-secret", SECRET);
    let ca = dir.write("entra-ca.pem", &sim.ca_pem());
    format!(
        "[identities.app]\nauthority = \"{}\"\ntenant = \"{TENANT}\"\nclient_id = \"{APP}\"\n\
         client_secret_file = \"{}\"\nca_file = \"{}\"\n",
        sim.authority(),
        secret.display(),
        ca.display()
    )
}

/// The client-submission simulator for [`org`], taking the tokens `sim` issues.
pub fn exo_builder(sim: &EntraSim) -> SubmissionServerBuilder {
    SubmissionServer::builder(Profile::ClientSubmission)
        .organization(org())
        .tokens(sim.clone())
}

/// [`exo_builder`], started.
pub async fn exo(sim: &EntraSim) -> SubmissionServer {
    exo_builder(sim).start().await.unwrap()
}

/// `[routes.<name>]`: client submission to `127.0.0.1:<port>` trusting `ca_pem` (written to
/// `<name>-ca.pem`), as the `app` identity for [`MAILBOX`], 5 s command and greeting
/// timeouts; `extra` adds keys.
pub fn submission_route(dir: &Dir, name: &str, port: u16, ca_pem: &str, extra: &str) -> String {
    let ca = dir.write(&format!("{name}-ca.pem"), ca_pem);
    format!(
        "[routes.{name}]\ntype = \"client_submission\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         tls_name = \"smtp.office365.com\"\nca_file = \"{}\"\nidentity = \"app\"\n\
         mailbox = \"{MAILBOX}\"\ncommand_timeout = \"5s\"\ngreeting_timeout = \"5s\"\n{extra}",
        ca.display()
    )
}

/// `[routes.m365]`: [`submission_route`] to `exo`.
pub fn m365_route(dir: &Dir, exo: &SubmissionServer, extra: &str) -> String {
    submission_route(dir, "m365", exo.addr().port(), exo.ca_cert_pem(), extra)
}

/// A relay configuration whose default route `m365` ([`m365_route`] with `route_extra`)
/// delivers through `exo` with the app identity of `sim`.
pub fn m365_config(dir: &Dir, sim: &EntraSim, exo: &SubmissionServer, route_extra: &str) -> Config {
    let extra = format!(
        "{}{}",
        m365_route(dir, exo, route_extra),
        app_identity(dir, sim)
    );
    dir.config("m365", &extra)
}
