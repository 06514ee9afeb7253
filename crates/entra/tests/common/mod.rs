//! Shared setup for the integration tests: a simulated tenant, clients, a test clock.
#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use postern_entra::{
    Authority, CachePolicy, Clock, Credential, HttpClient, ManualClock, OAuthClient,
    RefreshTokenStore, ReqwestClient, Secret, SleepFuture, TokenCache,
};
use postern_testkit::entra::{App, EntraSim, Tenant, User};

pub const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
pub const DOMAIN: &str = "contoso.onmicrosoft.com";
pub const APP: &str = "11111111-2222-3333-4444-555555555555";
pub const PUBLIC_APP: &str = "22222222-3333-4444-5555-666666666666";
pub const SECRET: &str = "Kx8Q~s3cr3t.value";
pub const EXPIRED_SECRET: &str = "old~expired.value";
pub const USER: &str = "scanner@contoso.com";
pub const APP_SCOPE: &str = "https://outlook.office365.com/.default";
pub const USER_SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub async fn sim() -> EntraSim {
    let cert = std::fs::read_to_string(data("app.cert.pem")).unwrap();
    EntraSim::builder()
        .tenant(Tenant::new(TENANT).domain(DOMAIN))
        .app(
            App::new(APP, TENANT)
                .secret(SECRET)
                .expired_secret(EXPIRED_SECRET)
                .certificate_pem(&cert)
                .app_role("https://outlook.office365.com", "SMTP.SendAsApp"),
        )
        .app(App::public(PUBLIC_APP, TENANT))
        .user(User::new(USER, TENANT))
        .start()
        .await
        .unwrap()
}

pub fn transport(sim: &EntraSim) -> Arc<dyn HttpClient> {
    Arc::new(
        ReqwestClient::builder()
            .extra_ca_pem(sim.ca_pem())
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    )
}

pub fn client(
    sim: &EntraSim,
    client_id: &str,
    credential: Credential,
    clock: Arc<dyn Clock>,
) -> OAuthClient {
    OAuthClient::builder(
        Authority::microsoft(&sim.authority()).unwrap(),
        DOMAIN,
        client_id,
    )
    .credential(credential)
    .http_client(transport(sim))
    .clock(clock)
    .timeout(Duration::from_secs(20))
    .build()
    .unwrap()
}

pub fn secret_client(sim: &EntraSim, clock: Arc<dyn Clock>) -> OAuthClient {
    client(sim, APP, Credential::Secret(Secret::new(SECRET)), clock)
}

pub fn cache(store: Arc<dyn RefreshTokenStore>, clock: Arc<dyn Clock>) -> TokenCache {
    TokenCache::with(store, clock, CachePolicy::default())
}

/// A manual clock whose sleeps also age the simulator, so device-code polling and backoff run
/// in no real time. `sim_steps` overrides how far the simulator moves on the next sleeps.
#[derive(Debug, Clone)]
pub struct TestClock {
    pub manual: ManualClock,
    pub sim: Option<EntraSim>,
    pub sim_steps: Arc<Mutex<VecDeque<Duration>>>,
    pub slept: Arc<Mutex<Vec<Duration>>>,
}

impl TestClock {
    pub fn new(sim: Option<&EntraSim>) -> Self {
        Self {
            manual: ManualClock::new(SystemTime::now()),
            sim: sim.cloned(),
            sim_steps: Arc::default(),
            slept: Arc::default(),
        }
    }

    pub fn arc(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }

    /// Moves both clocks.
    pub fn advance(&self, by: Duration) {
        self.manual.advance(by);
        if let Some(s) = &self.sim {
            s.advance(by);
        }
    }

    pub fn slept(&self) -> Vec<Duration> {
        self.slept.lock().unwrap().clone()
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.manual.now()
    }

    fn sleep(&self, d: Duration) -> SleepFuture {
        self.slept.lock().unwrap().push(d);
        let step = self.sim_steps.lock().unwrap().pop_front().unwrap_or(d);
        if let Some(s) = &self.sim {
            s.advance(step);
        }
        self.manual.sleep(d)
    }
}

/// Plays the user's browser: follows `/authorize` over HTTPS to its redirect, then delivers
/// the redirect to the loopback listener. `tamper` may rewrite the redirect URL.
pub async fn browse(sim: &EntraSim, url: &str, tamper: impl FnOnce(String) -> String) -> u16 {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 302, "authorize answered {}", resp.status());
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    http.get(tamper(location))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
