//! `relay login` against the Entra simulator's device-code flow (approved and declined from
//! the test), and the refresh token it stores.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern::config::Config;
use postern::ops::OpsError;
use postern::ops::login::{LoginFlow, login};
use postern_testkit::entra::{App, EntraSim, Tenant, User};

const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const PUBLIC_APP: &str = "22222222-3333-4444-5555-666666666666";
const MAILBOX: &str = "scanner@contoso.com";

/// A `Write` the test can read while `login` runs.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

async fn setup(dir: &std::path::Path) -> (EntraSim, Config) {
    let sim = EntraSim::builder()
        .tenant(Tenant::new(TENANT).domain("contoso.onmicrosoft.com"))
        .app(App::public(PUBLIC_APP, TENANT).delegated("https://outlook.office.com", "SMTP.Send"))
        .user(User::new(MAILBOX, TENANT))
        .device_code_interval(1)
        .start()
        .await
        .unwrap();
    let ca = dir.join("entra-ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    let d = dir.display();
    let text = format!(
        "default_routes = [\"out\"]\n[[listeners]]\nname = \"lan\"\nbind = \"127.0.0.1:0\"\n\
         [spool]\npath = \"{d}/spool\"\n[routes.out]\ntype = \"local\"\ndir = \"{d}/out\"\n\
         [identities.scanner]\nauthority = \"{}\"\ntenant = \"{TENANT}\"\nclient_id = \"{PUBLIC_APP}\"\n\
         refresh_token_store = \"{d}/tokens.json\"\nuser = \"{MAILBOX}\"\nca_file = \"{}\"\n",
        sim.authority(),
        ca.display()
    );
    (sim, Config::from_toml(&text, "test.toml").unwrap())
}

async fn user_code(sim: &EntraSim) -> String {
    for _ in 0..1000 {
        if let Some(c) = sim.last_user_code() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no device code was requested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_approved_stores_the_refresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cfg) = setup(dir.path()).await;
    let (out, progress) = (Shared::default(), Shared::default());
    let (mut o, mut p) = (out.clone(), progress.clone());
    // By mailbox address: resolves to the identity whose user it is.
    let task =
        tokio::spawn(
            async move { login(&cfg, MAILBOX, LoginFlow::DeviceCode, &mut o, &mut p).await },
        );
    let code = user_code(&sim).await;
    assert!(sim.approve_device_code(&code, MAILBOX));
    task.await.unwrap().unwrap();
    let text = out.text();
    assert!(
        text.contains(&format!("  2. Enter code: {code}\n")),
        "{text}"
    );
    assert!(text.contains("  1. Open:       https://"), "{text}");
    assert!(
        text.contains(&format!("Signed in: mailbox {MAILBOX}\n")),
        "{text}"
    );
    assert!(text.contains("access token valid until 20"), "{text}");
    assert!(
        progress.text().contains("waiting for you to sign in"),
        "{}",
        progress.text()
    );

    let store = dir.path().join("tokens.json");
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored = std::fs::read_to_string(&store).unwrap();
    assert!(stored.contains(MAILBOX), "{stored}");
    assert_eq!(sim.live_refresh_tokens(MAILBOX), 1);
    // The stored refresh token is never printed.
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let token = v
        .as_object()
        .unwrap()
        .values()
        .find_map(|t| t.as_str().or_else(|| t["refresh_token"].as_str()))
        .map(str::to_owned);
    if let Some(token) = token {
        assert!(!text.contains(&token) && !progress.text().contains(&token));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_sign_in_fails_with_a_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cfg) = setup(dir.path()).await;
    let (mut o, mut p) = (Shared::default(), Shared::default());
    let task =
        tokio::spawn(
            async move { login(&cfg, "scanner", LoginFlow::DeviceCode, &mut o, &mut p).await },
        );
    let code = user_code(&sim).await;
    assert!(sim.decline_device_code(&code));
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, OpsError::Token(_)), "{err}");
    assert!(err.to_string().starts_with("sign-in failed: "), "{err}");
    assert!(!dir.path().join("tokens.json").exists());
}

#[tokio::test]
async fn unknown_or_app_only_accounts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, cfg) = setup(dir.path()).await;
    let err = login(
        &cfg,
        "nobody@contoso.com",
        LoginFlow::DeviceCode,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("identities: scanner"), "{err}");
}
