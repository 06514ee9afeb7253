//! Every flow and every documented error, against the Entra ID simulator over HTTPS.
// The tests start their manual clocks at the real time and bound real elapsed time.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use postern_entra::{
    CertificateCredential, Credential, Error, LoopbackListener, OAuthError, Secret,
    SigningAlgorithm, SystemClock,
};
use postern_testkit::entra::{Endpoint, EntraFault};

fn oauth(e: &Error) -> &OAuthError {
    e.oauth()
        .unwrap_or_else(|| panic!("expected an OAuth error, got {e:?}"))
}

#[tokio::test]
async fn client_credentials_with_secret() {
    let sim = sim().await;
    let c = secret_client(&sim, Arc::new(SystemClock::new()));
    let t = c.client_credentials(APP_SCOPE).await.unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_in, Some(3599));
    assert_eq!(t.ext_expires_in, Some(3599));
    assert!(t.refresh_token.is_none());
    let facts = sim
        .validate_access_token(t.access_token.expose())
        .expect("issued by the simulator");
    assert_eq!(facts.tenant_id, TENANT);
    assert_eq!(facts.client_id, APP);
    assert_eq!(facts.user, None);
    assert_eq!(facts.audience, "https://outlook.office365.com");
    assert_eq!(facts.roles, ["SMTP.SendAsApp"]);
    assert_eq!(sim.grant_count("client_credentials"), 1);
}

#[tokio::test]
async fn client_credentials_with_certificate_ps256_rs256_pkcs1() {
    let sim = sim().await;
    for (key, alg) in [
        ("app.key.pem", SigningAlgorithm::Ps256),
        ("app.key.pem", SigningAlgorithm::Rs256),
        ("app.key.pkcs1.pem", SigningAlgorithm::Ps256),
    ] {
        let cred = CertificateCredential::from_pem_files(&data("app.cert.pem"), &data(key))
            .unwrap()
            .with_algorithm(alg);
        assert!(!format!("{cred:?}").contains("BEGIN"));
        let c = client(
            &sim,
            APP,
            Credential::Certificate(Arc::new(cred)),
            Arc::new(SystemClock::new()),
        );
        let t = c
            .client_credentials(APP_SCOPE)
            .await
            .unwrap_or_else(|e| panic!("{key} {alg:?}: {e}"));
        assert!(sim.validate_access_token(t.access_token.expose()).is_some());
    }
}

#[tokio::test]
async fn certificate_errors() {
    let sim = sim().await;
    // A certificate the app does not know: 700027.
    let other =
        CertificateCredential::from_pem_files(&data("other.cert.pem"), &data("other.key.pem"))
            .unwrap();
    let c = client(
        &sim,
        APP,
        Credential::Certificate(Arc::new(other)),
        Arc::new(SystemClock::new()),
    );
    let e = c.client_credentials(APP_SCOPE).await.unwrap_err();
    assert_eq!(
        (oauth(&e).error.as_str(), e.aadsts(), oauth(&e).status),
        ("invalid_client", Some(700027), 401)
    );
    assert!(!e.is_transient());
    assert!(e.remedy().contains("upload this certificate"));

    // The right certificate, signed with another key: signature validation fails (700027).
    let cert = std::fs::read_to_string(data("app.cert.pem")).unwrap();
    let wrong_key = std::fs::read_to_string(data("other.key.pem")).unwrap();
    let forged = CertificateCredential::from_pem(&cert, &wrong_key).unwrap();
    let c = client(
        &sim,
        APP,
        Credential::Certificate(Arc::new(forged)),
        Arc::new(SystemClock::new()),
    );
    let e = c.client_credentials(APP_SCOPE).await.unwrap_err();
    assert_eq!(e.aadsts(), Some(700027));
    assert!(
        oauth(&e)
            .description
            .as_deref()
            .unwrap()
            .contains("failed signature validation")
    );

    // A clock an hour behind: 700024, retried once with a fresh assertion, then reported.
    let late = TestClock::new(None);
    late.manual
        .set(std::time::SystemTime::now() - Duration::from_secs(3600));
    let good =
        CertificateCredential::from_pem_files(&data("app.cert.pem"), &data("app.key.pem")).unwrap();
    let c = client(
        &sim,
        APP,
        Credential::Certificate(Arc::new(good)),
        late.arc(),
    );
    let before = sim.request_count(Endpoint::Token);
    let e = c.client_credentials(APP_SCOPE).await.unwrap_err();
    assert_eq!(e.aadsts(), Some(700024));
    assert!(
        oauth(&e)
            .description
            .as_deref()
            .unwrap()
            .contains("Client assertion is not within its valid time range. Current time: ")
    );
    assert!(e.remedy().contains("clock"));
    assert_eq!(
        sim.request_count(Endpoint::Token) - before,
        2,
        "one retry with a new assertion"
    );
}

#[tokio::test]
async fn secret_errors_carry_aadsts_trace_and_remedy() {
    let sim = sim().await;
    let clock = Arc::new(SystemClock::new());
    let wrong = client(
        &sim,
        APP,
        Credential::Secret(Secret::new("the-secret-ID-not-value")),
        clock.clone(),
    );
    let e = wrong.client_credentials(APP_SCOPE).await.unwrap_err();
    let o = oauth(&e);
    assert_eq!(
        (o.error.as_str(), o.aadsts, o.status),
        ("invalid_client", Some(7000215), 401)
    );
    assert!(o.trace_id.is_some() && o.correlation_id.is_some() && o.timestamp.is_some());
    assert_eq!(
        o.error_uri.as_deref(),
        Some("https://login.microsoftonline.com/error?code=7000215")
    );
    let d = o.description.as_deref().unwrap();
    assert!(
        d.starts_with("AADSTS7000215: Invalid client secret provided.") && !d.contains("Trace ID"),
        "{d}"
    );
    assert!(e.remedy().contains("Value, not its Secret ID"));
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("the-secret-ID-not-value"),
        "a secret leaked: {shown}"
    );
    assert!(shown.contains("AADSTS7000215") && shown.contains("trace "));

    let expired = client(
        &sim,
        APP,
        Credential::Secret(Secret::new(EXPIRED_SECRET)),
        clock.clone(),
    );
    assert_eq!(
        expired
            .client_credentials(APP_SCOPE)
            .await
            .unwrap_err()
            .aadsts(),
        Some(7000222)
    );

    let none = client(&sim, APP, Credential::None, clock.clone());
    assert_eq!(
        none.client_credentials(APP_SCOPE)
            .await
            .unwrap_err()
            .aadsts(),
        Some(7000218)
    );

    let public_with_secret = client(
        &sim,
        PUBLIC_APP,
        Credential::Secret(Secret::new("x")),
        clock.clone(),
    );
    assert_eq!(
        public_with_secret
            .client_credentials(APP_SCOPE)
            .await
            .unwrap_err()
            .aadsts(),
        Some(700025)
    );

    let unknown_app = client(
        &sim,
        "99999999-0000-0000-0000-000000000000",
        Credential::Secret(Secret::new("x")),
        clock.clone(),
    );
    let e = unknown_app.client_credentials(APP_SCOPE).await.unwrap_err();
    assert_eq!(
        (oauth(&e).error.as_str(), e.aadsts()),
        ("unauthorized_client", Some(700016))
    );

    let c = secret_client(&sim, clock.clone());
    let e = c
        .client_credentials("https://outlook.office365.com/SMTP.SendAsApp")
        .await
        .unwrap_err();
    assert_eq!(
        (oauth(&e).error.as_str(), e.aadsts()),
        ("invalid_scope", Some(1002012))
    );
    let e = c
        .client_credentials("https://nowhere.example/.default")
        .await
        .unwrap_err();
    assert_eq!(
        (oauth(&e).error.as_str(), e.aadsts()),
        ("invalid_resource", Some(500011))
    );

    for (tenant, code) in [("fabrikam.onmicrosoft.com", 90002), ("common", 9001023)] {
        let c = postern_entra::OAuthClient::builder(
            postern_entra::Authority::microsoft(&sim.authority()).unwrap(),
            tenant,
            APP,
        )
        .client_secret(Secret::new(SECRET))
        .http_client(transport(&sim))
        .build()
        .unwrap();
        let e = c.client_credentials(APP_SCOPE).await.unwrap_err();
        assert_eq!(e.aadsts(), Some(code), "{tenant}: {e}");
        assert!(!e.is_transient());
    }
}

#[tokio::test]
async fn injected_faults_are_classified() {
    let sim = sim().await;
    let c = secret_client(&sim, Arc::new(SystemClock::new()));
    let cases = [
        (
            EntraFault::Status {
                status: 503,
                retry_after: Some(3),
            },
            true,
            Some(90033),
        ),
        (
            EntraFault::Status {
                status: 429,
                retry_after: None,
            },
            true,
            Some(90055),
        ),
        (EntraFault::TemporarilyUnavailable, true, Some(50033)),
        (EntraFault::HtmlPage, true, None),
        (EntraFault::InvalidClient, false, Some(7000215)),
        (EntraFault::InvalidGrant, false, Some(70008)),
        (EntraFault::ConsentRequired, false, Some(65001)),
    ];
    for (fault, transient, code) in cases {
        sim.inject(Endpoint::Token, fault.clone());
        let e = c.client_credentials(APP_SCOPE).await.unwrap_err();
        assert_eq!(
            (e.is_transient(), e.aadsts()),
            (transient, code),
            "{fault:?}: {e}"
        );
        if let EntraFault::Status {
            retry_after: Some(s),
            ..
        } = fault
        {
            assert_eq!(oauth(&e).retry_after, Some(Duration::from_secs(s)));
        }
        if fault == EntraFault::ConsentRequired {
            assert_eq!(oauth(&e).suberror.as_deref(), Some("consent_required"));
            assert!(e.remedy().contains("consent"));
        }
        if fault == EntraFault::HtmlPage {
            assert!(
                matches!(e, Error::InvalidResponse { status: 502, .. }),
                "{e:?}"
            );
        }
    }
    // A slow answer within the timeout is fine.
    sim.inject(
        Endpoint::Token,
        EntraFault::Delay(Duration::from_millis(200)),
    );
    c.client_credentials(APP_SCOPE).await.unwrap();
}

#[tokio::test]
async fn hung_token_endpoint_times_out_cleanly() {
    let sim = sim().await;
    sim.set_sticky(Endpoint::Token, Some(EntraFault::Hang));
    // The client's own timeout, whatever the transport.
    let c = postern_entra::OAuthClient::builder(
        postern_entra::Authority::microsoft(&sim.authority()).unwrap(),
        TENANT,
        APP,
    )
    .client_secret(Secret::new(SECRET))
    .http_client(transport(&sim))
    .timeout(Duration::from_millis(300))
    .build()
    .unwrap();
    let started = std::time::Instant::now();
    let e = c.client_credentials(APP_SCOPE).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)) && e.is_transient(), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The transport's own timeout.
    let http = postern_entra::ReqwestClient::builder()
        .extra_ca_pem(sim.ca_pem())
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let c = postern_entra::OAuthClient::builder(
        postern_entra::Authority::microsoft(&sim.authority()).unwrap(),
        TENANT,
        APP,
    )
    .client_secret(Secret::new(SECRET))
    .http_client(Arc::new(http))
    .build()
    .unwrap();
    let e = c.client_credentials(APP_SCOPE).await.unwrap_err();
    assert!(
        matches!(e, Error::Transport(postern_entra::TransportError::Timeout)),
        "{e:?}"
    );
}

#[tokio::test]
async fn untrusted_server_certificate_is_refused() {
    let sim = sim().await;
    let http = postern_entra::ReqwestClient::builder()
        .no_proxy()
        .build()
        .unwrap();
    let c = postern_entra::OAuthClient::builder(
        postern_entra::Authority::microsoft(&sim.authority()).unwrap(),
        TENANT,
        APP,
    )
    .client_secret(Secret::new(SECRET))
    .http_client(Arc::new(http))
    .build()
    .unwrap();
    let e = c.client_credentials(APP_SCOPE).await.unwrap_err();
    assert!(
        matches!(e, Error::Transport(postern_entra::TransportError::Tls(_))),
        "{e:?}"
    );
}

#[tokio::test]
async fn device_code_flow_with_slow_down() {
    let sim = sim().await;
    let clock = TestClock::new(Some(&sim));
    // The first sleep moves the simulator only 1 s: the first poll is too fast (slow_down).
    clock
        .sim_steps
        .lock()
        .unwrap()
        .push_back(Duration::from_secs(1));
    let c = client(&sim, PUBLIC_APP, Credential::None, clock.arc());
    let device = c.request_device_code(USER_SCOPE).await.unwrap();
    assert_eq!(device.verification_uri, "https://microsoft.com/devicelogin");
    assert_eq!((device.expires_in, device.interval), (900, 5));
    assert!(device.display_message().contains(&device.user_code));
    assert_eq!(
        sim.last_user_code().as_deref(),
        Some(device.user_code.as_str())
    );
    let approver = {
        let sim = sim.clone();
        let code = device.user_code.clone();
        tokio::spawn(async move {
            // Approve after two polls (slow_down, authorization_pending).
            while sim.grant_count(postern_testkit::entra::DEVICE_CODE_GRANT) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(sim.approve_device_code(&code, USER));
        })
    };
    let t = c.poll_device_code(&device).await.unwrap();
    approver.await.unwrap();
    let slept = clock.slept();
    assert_eq!(slept[0], Duration::from_secs(5));
    assert_eq!(
        slept[1],
        Duration::from_secs(10),
        "slow_down adds 5 s: {slept:?}"
    );
    assert!(
        t.refresh_token.is_some(),
        "offline_access gives a refresh token"
    );
    assert_eq!(
        t.scope.as_deref(),
        Some("https://outlook.office.com/SMTP.Send")
    );
    let facts = sim.validate_access_token(t.access_token.expose()).unwrap();
    assert_eq!(
        (facts.user.as_deref(), facts.scopes.as_slice()),
        (Some(USER), &["SMTP.Send".to_owned()][..])
    );
}

#[tokio::test]
async fn device_code_declined_then_unknown() {
    let sim = sim().await;
    let clock = TestClock::new(Some(&sim));
    let c = client(&sim, PUBLIC_APP, Credential::None, clock.arc());
    let device = c.request_device_code(USER_SCOPE).await.unwrap();
    assert!(sim.decline_device_code(&device.user_code));
    let e = c.poll_device_code(&device).await.unwrap_err();
    assert_eq!(oauth(&e).error, "authorization_declined");
    assert!(e.remedy().contains("declined"));
    let e = c.poll_device_code(&device).await.unwrap_err();
    assert_eq!(
        (oauth(&e).error.as_str(), e.aadsts()),
        ("bad_verification_code", Some(70018))
    );
    assert!(e.remedy().contains("not recognised"));
}

#[tokio::test]
async fn device_code_expiry() {
    let sim = sim().await;
    // The server says expired_token (the simulator jumps past the code's lifetime).
    let clock = TestClock::new(Some(&sim));
    clock
        .sim_steps
        .lock()
        .unwrap()
        .extend([Duration::from_secs(5), Duration::from_secs(1000)]);
    let c = client(&sim, PUBLIC_APP, Credential::None, clock.arc());
    let device = c.request_device_code(USER_SCOPE).await.unwrap();
    let e = c.poll_device_code(&device).await.unwrap_err();
    assert_eq!(
        (oauth(&e).error.as_str(), e.aadsts()),
        ("expired_token", Some(70019))
    );
    assert!(e.remedy().contains("expired"));
    // Our own clock runs out first: no endless polling.
    let clock = TestClock::new(Some(&sim));
    let c = client(&sim, PUBLIC_APP, Credential::None, clock.arc());
    let device = c.request_device_code(USER_SCOPE).await.unwrap();
    let e = c.poll_device_code(&device).await.unwrap_err();
    assert!(matches!(e, Error::DeviceCodeExpired), "{e:?}");
    assert_eq!(clock.slept().len(), 180, "900 s at 5 s intervals");
}

#[tokio::test]
async fn auth_code_with_pkce_through_the_loopback_listener() {
    let sim = sim().await;
    sim.set_authorize_user(Some(USER));
    let c = client(
        &sim,
        PUBLIC_APP,
        Credential::None,
        Arc::new(SystemClock::new()),
    );
    let listener = LoopbackListener::bind().await.unwrap();
    assert!(listener.redirect_uri().starts_with("http://localhost:"));
    let browser = Arc::new(std::sync::Mutex::new(None));
    let t = c
        .auth_code_interactive(USER_SCOPE, &listener, Duration::from_secs(20), |url| {
            let (sim, url) = (sim.clone(), url.to_string());
            *browser.lock().unwrap() = Some(tokio::spawn(async move {
                browse(&sim, &url, |loc| {
                    loc.replace("http://localhost:", "http://127.0.0.1:")
                })
                .await
            }));
        })
        .await
        .unwrap();
    let browser_task = browser.lock().unwrap().take().unwrap();
    let status = browser_task.await.unwrap();
    assert_eq!(status, 200);
    assert!(t.refresh_token.is_some());
    assert_eq!(
        sim.validate_access_token(t.access_token.expose())
            .unwrap()
            .user
            .as_deref(),
        Some(USER)
    );
    assert_eq!(sim.request_count(Endpoint::Authorize), 1);
}

#[tokio::test]
async fn auth_code_errors() {
    let sim = sim().await;
    let c = client(
        &sim,
        PUBLIC_APP,
        Credential::None,
        Arc::new(SystemClock::new()),
    );
    let to_loopback = |loc: String| loc.replace("http://localhost:", "http://127.0.0.1:");

    // The user cancels: an error redirect.
    let listener = LoopbackListener::bind().await.unwrap();
    let req = c
        .authorization_request(&listener.redirect_uri(), USER_SCOPE)
        .unwrap();
    let (sim2, url) = (sim.clone(), req.url.to_string());
    let b = tokio::spawn(async move { browse(&sim2, &url, to_loopback).await });
    let e = listener
        .wait_for_code(&req.state, Duration::from_secs(20))
        .await
        .unwrap_err();
    b.await.unwrap();
    match e {
        Error::Authorization { error, description } => {
            assert_eq!(error, "access_denied");
            assert_eq!(description, "the user canceled the authentication");
        }
        other => panic!("{other:?}"),
    }

    // A forged redirect with another state.
    sim.set_authorize_user(Some(USER));
    let req = c
        .authorization_request(&listener.redirect_uri(), USER_SCOPE)
        .unwrap();
    let (sim2, url) = (sim.clone(), req.url.to_string());
    let b = tokio::spawn(async move {
        browse(&sim2, &url, |l| to_loopback(l).replace("state=", "state=x")).await
    });
    let e = listener
        .wait_for_code(&req.state, Duration::from_secs(20))
        .await
        .unwrap_err();
    assert_eq!(b.await.unwrap(), 400);
    assert!(matches!(e, Error::StateMismatch), "{e:?}");

    // A code redeemed with the wrong verifier (501481), then reused (54005).
    let req = c
        .authorization_request(&listener.redirect_uri(), USER_SCOPE)
        .unwrap();
    let location = sim.authorize(req.url.as_str()).unwrap();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let code = Secret::new(code);
    let other = c
        .authorization_request(&listener.redirect_uri(), USER_SCOPE)
        .unwrap();
    let e = c
        .exchange_code(&code, &other, USER_SCOPE)
        .await
        .unwrap_err();
    assert_eq!(e.aadsts(), Some(501481));
    c.exchange_code(&code, &req, USER_SCOPE).await.unwrap();
    let e = c.exchange_code(&code, &req, USER_SCOPE).await.unwrap_err();
    assert_eq!(
        (oauth(&e).error.as_str(), e.aadsts()),
        ("invalid_grant", Some(54005))
    );

    // No redirect at all.
    let e = listener
        .wait_for_code("s", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RedirectTimeout(_)));

    // An unregistered redirect URI: Entra shows an error page (AADSTS50011), no redirect.
    let req = c
        .authorization_request("https://evil.example/cb", USER_SCOPE)
        .unwrap();
    assert!(
        sim.authorize(req.url.as_str())
            .unwrap_err()
            .starts_with("AADSTS50011")
    );
}

#[tokio::test]
async fn refresh_grant_rotation_and_failures() {
    let sim = sim().await;
    let clock = TestClock::new(Some(&sim));
    let c = client(&sim, PUBLIC_APP, Credential::None, clock.arc());
    let device = c.request_device_code(USER_SCOPE).await.unwrap();
    sim.approve_device_code(&device.user_code, USER);
    let first = c.poll_device_code(&device).await.unwrap();
    let rt1 = first.refresh_token.unwrap();

    let second = c.refresh(&rt1, USER_SCOPE).await.unwrap();
    let rt2 = second.refresh_token.unwrap();
    assert_ne!(rt1, rt2, "a new refresh token on every use");
    // As on Entra, the old one still works.
    c.refresh(&rt1, USER_SCOPE).await.unwrap();

    assert!(sim.revoke_refresh_token(rt1.expose()));
    let e = c.refresh(&rt1, USER_SCOPE).await.unwrap_err();
    assert_eq!(
        (oauth(&e).error.as_str(), e.aadsts()),
        ("invalid_grant", Some(50173))
    );
    assert!(e.remedy().contains("sign the user in again"));

    sim.set_user_consent(USER, PUBLIC_APP, false);
    sim.set_admin_consent(PUBLIC_APP, false);
    let e = c.refresh(&rt2, USER_SCOPE).await.unwrap_err();
    assert_eq!(
        (e.aadsts(), oauth(&e).suberror.as_deref()),
        (Some(65001), Some("consent_required"))
    );
    sim.set_admin_consent(PUBLIC_APP, true);

    sim.expire_refresh_tokens();
    let e = c.refresh(&rt2, USER_SCOPE).await.unwrap_err();
    assert_eq!(e.aadsts(), Some(70008));
    let e = c
        .refresh(&Secret::new("garbage"), USER_SCOPE)
        .await
        .unwrap_err();
    assert_eq!(oauth(&e).error, "invalid_grant");
}
