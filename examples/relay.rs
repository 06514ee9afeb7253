//! `relay`: the Postern daemon.
//!
//! ```text
//! cargo run -p postern-examples --example relay -- serve                      # built-in local default
//! cargo run -p postern-examples --example relay -- serve --config relay.toml  # see relay.sample.toml
//! cargo run -p postern-examples --example relay -- check-config --config relay.toml
//! cargo run -p postern-examples --example relay -- queue list --config relay.toml    # or show ID, retry [ID], delete ID, bounce ID
//! cargo run -p postern-examples --example relay -- login scanner@contoso.com --config relay.toml  # [--browser]
//! cargo run -p postern-examples --example relay -- doctor --config relay.toml [--send-test you@contoso.com]
//! cargo run -p postern-examples --example relay -- send --config relay.toml --route m365 \
//!     --from scanner@contoso.com --to you@contoso.com [--subject S] [--body-file F] [--transcript]
//! ```
//!
//! `doctor` prints one PASS / WARN / FAIL line per check and exits 0 only when nothing
//! failed; `send` exits 0 only when every recipient was accepted.
//!
//! SIGTERM / SIGINT shut down cleanly (stop accepting, finish sessions, keep the spool);
//! SIGHUP reloads the listeners' TLS certificates. `--log-format json` for JSON log lines.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use postern::Relay;
use postern::config::Config;

#[derive(Parser)]
#[command(
    name = "relay",
    about = "Postern: an SMTP relay for devices sending through Microsoft 365"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// The configuration file (default: the built-in local dry run).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit (status 0 if valid).
    CheckConfig {
        /// The configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Inspect and act on the queue (through the running relay's admin API, or on the spool
    /// directly when no relay runs).
    Queue {
        /// The configuration file (default: the built-in configuration).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Sign a mailbox in (delegated identity) and store its refresh token.
    Login {
        /// An identity name or a mailbox address.
        account: String,
        /// The configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Sign in with a browser on this machine (authorization code + PKCE) instead of a
        /// device code.
        #[arg(long)]
        browser: bool,
    },
    /// Check the configuration, each route's server, TLS and AUTH, each identity's token,
    /// the sending domains' DNS and the spool; exit 0 only if nothing failed.
    Doctor {
        /// The configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also send a real test message to this address through the first route.
        #[arg(long, value_name = "ADDRESS")]
        send_test: Option<String>,
    },
    /// Send a test message through a configured route (directly, not via the listener).
    Send {
        /// The configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The route (`[routes.<name>]`).
        #[arg(long)]
        route: String,
        /// The sender (envelope and From:).
        #[arg(long)]
        from: String,
        /// A recipient (repeat for more).
        #[arg(long, required = true)]
        to: Vec<String>,
        /// The subject.
        #[arg(long)]
        subject: Option<String>,
        /// A file holding the body text.
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// Print the SMTP conversation (AUTH payloads and tokens redacted).
        #[arg(long)]
        transcript: bool,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// A table of queued messages.
    List,
    /// One message in detail.
    Show {
        /// The queue id.
        id: String,
    },
    /// Retry one message (or all) now, ignoring the backoff.
    Retry {
        /// The queue id (all messages when absent).
        id: Option<String>,
    },
    /// Delete a message without notifying the sender.
    Delete {
        /// The queue id.
        id: String,
    },
    /// Fail a message's pending recipients and send the sender a failure notice.
    Bounce {
        /// The queue id.
        id: String,
    },
}

fn queue_cmd(config: Option<&PathBuf>, action: QueueAction) -> ExitCode {
    use postern::ops::queue;
    let cfg = match load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = queue::QueueTarget::from_config(&cfg);
    let mut out = std::io::stdout();
    let now = std::time::SystemTime::now();
    let r = rt.block_on(async {
        match &action {
            QueueAction::List => queue::list(&target, now, &mut out).await,
            QueueAction::Show { id } => queue::show(&target, id, now, &mut out).await,
            QueueAction::Retry { id } => queue::retry(&target, id.as_deref(), &mut out).await,
            QueueAction::Delete { id } => queue::delete(&target, id, &mut out).await,
            QueueAction::Bounce { id } => queue::bounce(&target, id, &mut out).await,
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn login_cmd(config: Option<&PathBuf>, account: &str, browser: bool) -> ExitCode {
    use postern::ops::login::{LoginFlow, login};
    let cfg = match load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let flow = if browser {
        LoginFlow::Browser
    } else {
        LoginFlow::DeviceCode
    };
    let (mut out, mut progress) = (std::io::stdout(), std::io::stderr());
    match rt.block_on(login(&cfg, account, flow, &mut out, &mut progress)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doctor_cmd(config: Option<&PathBuf>, send_test: Option<String>) -> ExitCode {
    use postern::ops::doctor::{DoctorOptions, doctor_file};
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut opts = DoctorOptions::default();
    if let Some(a) = send_test {
        opts = opts.send_test(a);
    }
    let mut out = std::io::stdout();
    match rt.block_on(doctor_file(config.map(PathBuf::as_path), &opts, &mut out)) {
        Ok(report) if report.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct SendArgs {
    route: String,
    from: String,
    to: Vec<String>,
    subject: Option<String>,
    body_file: Option<PathBuf>,
    transcript: bool,
}

fn send_cmd(config: Option<&PathBuf>, a: SendArgs) -> ExitCode {
    use postern::ops::send::{SendOptions, send};
    let cfg = match load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut opts = SendOptions::new(a.route, a.from, a.to).transcript(a.transcript);
    if let Some(s) = a.subject {
        opts = opts.subject(s);
    }
    if let Some(f) = a.body_file {
        match std::fs::read_to_string(&f) {
            Ok(b) => opts = opts.body(b),
            Err(e) => {
                eprintln!("cannot read {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout();
    match rt.block_on(send(&cfg, &opts, &mut out)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A runtime for the one-shot commands (the error is printed).
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, postern::config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::builtin()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match cli.command {
        Command::Queue { config, action } => queue_cmd(config.as_ref(), action),
        Command::Login {
            account,
            config,
            browser,
        } => login_cmd(config.as_ref(), &account, browser),
        Command::Doctor { config, send_test } => doctor_cmd(config.as_ref(), send_test),
        Command::Send {
            config,
            route,
            from,
            to,
            subject,
            body_file,
            transcript,
        } => send_cmd(
            config.as_ref(),
            SendArgs {
                route,
                from,
                to,
                subject,
                body_file,
                transcript,
            },
        ),
        Command::CheckConfig { config } => match load(config.as_ref()) {
            Ok(_) => {
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(serve(cfg, config.is_none()))
        }
    }
}

async fn serve(cfg: Config, builtin: bool) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    if builtin {
        tracing::info!(
            "no --config given: running on the BUILT-IN LOCAL DEFAULT (a dry run; nothing leaves this machine)"
        );
        tracing::info!(
            outbox = ?cfg.local_dirs(),
            spool = %cfg.spool.path.display(),
            "mail sent to this relay is written to the local outbox as .eml + .json files"
        );
        tracing::info!(
            "to relay to your Microsoft 365 tenant, copy examples/relay.sample.toml, add a route for your tenant, and run: relay serve --config relay.toml (see docs/configuration.md)"
        );
    }
    let relay = match Relay::start(cfg).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addrs = ?relay.local_addrs(), "relay listening");
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        relay.shutdown().await;
        return ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match relay.reload_tls() {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the previous certificates"),
            },
        }
    }
    tracing::info!("shutting down: no new connections; sessions finish; the spool is kept");
    relay.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
