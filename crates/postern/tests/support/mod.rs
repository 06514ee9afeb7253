//! Test support for the reliability and security suites (`tests/reliability_*.rs`,
//! `tests/security_*.rs`): relays from TOML text in a temp dir, a raw SMTP client, the
//! simulated tenant (Entra ID + Exchange Online client submission), a relay run as a child
//! process that can be SIGKILLed, a tmpfs mount guard, and a log capture.
//!
//! # The relay as a child process
//!
//! Crash tests need a process to kill. Rather than building the `relay` example (another
//! package, so not buildable from here without running cargo inside a test), the test binary
//! runs *itself*: [`ChildRelay::spawn`] starts `current_exe() --exact <entry> --nocapture`
//! with `POSTERN_TEST_CHILD_CONFIG` set, and the entry test (a `#[test]` in the same file
//! that calls [`child_entry`]) runs `Relay::start` on that configuration and prints the
//! listener address. Without the variable the entry test returns at once, so it is a no-op
//! in normal runs. Nothing extra is built and no feature is needed.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern::config::Config;
use postern::{Relay, RelayHandle};
use postern_testkit::entra::{App, EntraSim, Tenant, User};
use postern_testkit::exo::{Profile, SubmissionServer};
use postern_testkit::org::{Mailbox, Organization, ServicePrincipal};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
pub const APP: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
/// The app's client secret, as the operator stores it in `client-secret`.
pub const CLIENT_SECRET: &str = "Kx8Q~reliability.s3cr3t.value";
pub const MAILBOX: &str = "scanner@contoso.com";
/// A public client (device code sign-in) for delegated tokens.
pub const PUBLIC_APP: &str = "22222222-3333-4444-5555-666666666666";

/// The environment variable that turns the entry test into the child relay.
pub const CHILD_ENV: &str = "POSTERN_TEST_CHILD_CONFIG";
/// What the child prints once listening: the prefix, then the address.
const CHILD_READY: &str = "POSTERN-CHILD-LISTENING ";

/// A temp dir with helpers.
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

    /// A relay configuration: one listener `lan` on 127.0.0.1:0 (plus `listener_extra`
    /// keys), 127.0.0.1 allowed (unless `extra` gives its own `[policy]`... it cannot: use
    /// [`Dir::toml_with_policy`]), spool in `<dir>/spool`, quick retries, the default route
    /// `default_route`, a local `bounces` route for `<>` and `extra` appended.
    pub fn toml(&self, default_route: &str, listener_extra: &str, extra: &str) -> String {
        self.toml_with_policy(
            default_route,
            listener_extra,
            "allowed_networks = [\"127.0.0.1/32\"]\n",
            extra,
        )
    }

    pub fn toml_with_policy(
        &self,
        default_route: &str,
        listener_extra: &str,
        policy: &str,
        extra: &str,
    ) -> String {
        let d = self.path().display();
        format!(
            "hostname = \"relay.test\"\ndefault_routes = [\"{default_route}\"]\n\
             [[listeners]]\nname = \"lan\"\nbind = \"127.0.0.1:0\"\n{listener_extra}\n\
             [policy]\n{policy}\n\
             [spool]\npath = \"{d}/spool\"\n\
             [queue]\nretry_initial = \"200ms\"\nretry_max = \"500ms\"\nlifetime = \"1h\"\n\
             [routes.outbox]\ntype = \"local\"\ndir = \"{d}/outbox\"\n\
             [routes.bounces]\ntype = \"local\"\ndir = \"{d}/bounces\"\n\
             [[rules]]\nsender = [\"<>\"]\nroutes = [\"bounces\"]\n\
             {extra}"
        )
    }

    pub fn config(&self, text: &str) -> Config {
        match Config::from_toml(text, "test.toml") {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    /// `.eml` files of a local route directory (`outbox`, `bounces`), as text.
    pub fn eml(&self, route_dir: &str) -> Vec<String> {
        eml_in(&self.path().join(route_dir))
    }

    /// Waits up to `wait` for at least `n` `.eml` files in `route_dir`.
    pub async fn wait_eml(&self, route_dir: &str, n: usize, wait: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let found = self.eml(route_dir);
            if found.len() >= n || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every file under the spool's `queue/` directory.
    pub fn spool_files(&self) -> Vec<PathBuf> {
        files_in(&self.path().join("spool").join("queue"))
    }

    /// The ids of the messages in the spool (committed, not yet finished).
    pub fn spooled(&self) -> Vec<String> {
        postern::spool::inspect(&self.path().join("spool"))
            .unwrap()
            .iter()
            .map(|m| m.message.id().to_string())
            .collect()
    }
}

pub fn eml_in(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Every regular file under `root`, recursively.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in files_in(&d) {
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub async fn start(cfg: Config) -> RelayHandle {
    Relay::start(cfg).await.expect("relay starts")
}

/// A raw SMTP client: exact bytes out, replies in.
pub struct Smtp {
    r: BufReader<TcpStream>,
}

impl Smtp {
    /// Connects and reads the greeting, which must be `220`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut c = Self::connect_raw(addr).await.expect("connect");
        let (code, text) = c.reply().await.expect("greeting");
        assert_eq!(code, 220, "greeting {text}");
        c
    }

    pub async fn connect_raw(addr: SocketAddr) -> std::io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Self {
            r: BufReader::new(s),
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.r.get_mut()
    }

    /// One (possibly multi-line) reply: the code and the text lines joined with `\n`.
    pub async fn reply(&mut self) -> std::io::Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.len() < 4 {
                return Err(std::io::Error::other(format!("short reply {line:?}")));
            }
            let code = line[..3]
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad reply {line:?}")))?;
            text.push_str(line[4..].trim_end());
            if line.as_bytes()[3] == b' ' {
                return Ok((code, text));
            }
            text.push('\n');
        }
    }

    /// A reply within `wait`, or `None`.
    pub async fn reply_within(&mut self, wait: Duration) -> Option<std::io::Result<(u16, String)>> {
        tokio::time::timeout(wait, self.reply()).await.ok()
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.r.get_mut().write_all(bytes).await
    }

    /// Sends `line` + CRLF and reads the reply.
    pub async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.try_cmd(line).await.expect("reply")
    }

    pub async fn try_cmd(&mut self, line: &str) -> std::io::Result<(u16, String)> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// Whether the server closed the connection (EOF within `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut buf = String::new();
        loop {
            buf.clear();
            match tokio::time::timeout(wait, self.r.read_line(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Dot-stuffs `body` (CRLF line endings expected) and appends the terminator.
pub fn stuffed(body: &str) -> Vec<u8> {
    let mut b = body.replace("\r\n.", "\r\n..");
    if b.starts_with('.') {
        b.insert(0, '.');
    }
    if !b.ends_with("\r\n") {
        b.push_str("\r\n");
    }
    b.push_str(".\r\n");
    b.into_bytes()
}

/// A message whose `Subject` and body carry `token` (to find it upstream).
pub fn message(from: &str, token: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <reception@contoso.com>\r\nSubject: {token}\r\n\
         Message-ID: <{token}@printer.lan>\r\n\r\nscan {token}\r\n.dot line\r\n"
    )
}

/// One whole transaction on a fresh connection; the reply to the end of data (or the first
/// refusal).
pub async fn submit(
    addr: SocketAddr,
    from: &str,
    to: &[&str],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut c = Smtp::connect_raw(addr).await?;
    let (code, text) = c.reply().await?;
    if code != 220 {
        return Ok((code, text));
    }
    let r = c.try_cmd("EHLO printer.lan").await?;
    if r.0 != 250 {
        return Ok(r);
    }
    let r = transaction(&mut c, from, to, body).await?;
    let _ = c.try_cmd("QUIT").await;
    Ok(r)
}

/// MAIL, RCPTs, DATA on an open session.
pub async fn transaction(
    c: &mut Smtp,
    from: &str,
    to: &[&str],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let r = c.try_cmd(&format!("MAIL FROM:<{from}>")).await?;
    if r.0 != 250 {
        return Ok(r);
    }
    for t in to {
        let r = c.try_cmd(&format!("RCPT TO:<{t}>")).await?;
        if r.0 != 250 {
            let _ = c.try_cmd("RSET").await;
            return Ok(r);
        }
    }
    let r = c.try_cmd("DATA").await?;
    if r.0 != 354 {
        return Ok(r);
    }
    c.send(&stuffed(body)).await?;
    c.reply().await
}

/// The simulated tenant: Entra ID (one confidential app with a client secret) and Exchange
/// Online client submission; the tokens the submission server saw are kept.
pub struct Cloud {
    pub entra: EntraSim,
    pub exo: SubmissionServer,
    pub seen_tokens: Arc<Mutex<Vec<String>>>,
}

impl Cloud {
    pub async fn start() -> Self {
        let entra = EntraSim::builder()
            .tenant(Tenant::new(TENANT).domain("contoso.onmicrosoft.com"))
            .app(
                App::new(APP, TENANT)
                    .secret(CLIENT_SECRET)
                    .app_role("https://outlook.office365.com", "SMTP.SendAsApp"),
            )
            .app(App::public(PUBLIC_APP, TENANT))
            .user(User::new(MAILBOX, TENANT).consent(PUBLIC_APP))
            .start()
            .await
            .unwrap();
        let org = Organization::builder(TENANT, "contoso.com")
            .mailbox(Mailbox::new(MAILBOX).password("Scan-2026!"))
            .mailbox(Mailbox::new("reception@contoso.com"))
            .service_principal(ServicePrincipal::new(APP).full_access(MAILBOX))
            .build();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (sim, seen2) = (entra.clone(), Arc::clone(&seen));
        let validator = move |token: &str| {
            seen2.lock().unwrap().push(token.to_owned());
            postern_testkit::token::TokenValidator::validate(&sim, token)
        };
        let exo = SubmissionServer::builder(Profile::ClientSubmission)
            .organization(org)
            .tokens(validator)
            // No throttling: the tests count messages, not rates.
            .rate_window(Duration::from_millis(1))
            .budget_window(Duration::from_millis(1))
            .start()
            .await
            .unwrap();
        Self {
            entra,
            exo,
            seen_tokens: seen,
        }
    }

    /// `[routes.m365]` (client submission to the simulator, short timeouts, no rate limit:
    /// the tests count messages, not rates) and
    /// `[identities.app]`, with files written into `dir`. `extra` adds route keys.
    pub fn toml(&self, dir: &Dir, extra: &str) -> String {
        let secret = dir.write("client-secret", CLIENT_SECRET);
        let entra_ca = dir.write("entra-ca.pem", &self.entra.ca_pem());
        let exo_ca = dir.write("exo-ca.pem", self.exo.ca_cert_pem());
        format!(
            "[routes.m365]\ntype = \"client_submission\"\nhost = \"127.0.0.1\"\nport = {}\n\
             tls_name = \"smtp.office365.com\"\nca_file = \"{}\"\nidentity = \"app\"\n\
             mailbox = \"{MAILBOX}\"\nconnect_timeout = \"2s\"\ngreeting_timeout = \"2s\"\n\
             command_timeout = \"2s\"\ndata_timeout = \"2s\"\ndata_end_timeout = \"2s\"\n\
             max_messages_per_minute = 0\nmax_recipients_per_day = 0\nthrottle_pause = \"200ms\"\n{extra}\n\
             [identities.app]\nauthority = \"{}\"\ntenant = \"{TENANT}\"\nclient_id = \"{APP}\"\n\
             client_secret_file = \"{}\"\nca_file = \"{}\"\n",
            self.exo.addr().port(),
            exo_ca.display(),
            self.entra.authority(),
            secret.display(),
            entra_ca.display()
        )
    }
}

/// The child relay process (see the module docs).
pub struct ChildRelay {
    child: Child,
    pub addr: SocketAddr,
}

impl ChildRelay {
    /// Starts the test binary's `entry` test as a relay on `config` (a TOML file), logging
    /// to `log` (appended), and waits until it listens.
    pub fn spawn(entry: &str, config: &Path, log: &Path) -> Self {
        let exe = std::env::current_exe().unwrap();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(exe)
            .args([entry, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    // The harness prints `test <name> ... ` before the test's own output.
                    if let Some(at) = line.find(CHILD_READY) {
                        break line[at + CHILD_READY.len()..].trim().parse().unwrap();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let status = child.wait();
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    panic!("child relay did not start ({status:?}); log:\n{log}");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of the child entry test: runs the relay on the configuration named by
/// [`CHILD_ENV`] until killed; returns at once when the variable is not set.
pub fn child_entry() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let cfg = Config::load(Path::new(&path)).expect("child configuration");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let relay = Relay::start(cfg).await.expect("child relay starts");
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{CHILD_READY}{}", relay.local_addrs()[0]);
        let _ = out.flush();
        std::future::pending::<()>().await;
    });
}

/// A tmpfs mounted on a directory for the life of the guard.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"2m"`) on `path`; `None` (with a printed notice) if
    /// that is not possible here, unless `POSTERN_REQUIRE_EXTERNAL_TOOLS` is set.
    pub fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self {
                path: path.to_path_buf(),
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("POSTERN_REQUIRE_EXTERNAL_TOOLS").is_none(),
                    "cannot mount a tmpfs: {why}"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs here ({why})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything this test binary logs at `level` and above, from every thread: the first
    /// call installs the global subscriber, later calls return the same buffer.
    pub fn global(level: tracing::Level) -> &'static Self {
        static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let buf = Self::default();
            tracing_subscriber::fmt()
                .with_writer(buf.clone())
                .with_max_level(level)
                .with_ansi(false)
                .init();
            buf
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = Self;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The peak resident set of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
