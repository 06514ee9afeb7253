//! The token cache and the refresh-token store, against the Entra ID simulator.
// The tests start their manual clocks at the real time and bound real elapsed time.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use postern_entra::{
    CachePolicy, Credential, Error, FileStore, MemoryStore, RefreshTokenStore, Secret, TokenCache,
};
use postern_testkit::entra::{Endpoint, EntraFault};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_under_100_concurrent_callers() {
    let sim = sim().await;
    let clock = TestClock::new(Some(&sim));
    let c = secret_client(&sim, clock.arc());
    let cache = cache(Arc::new(MemoryStore::new()), clock.arc());
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, c) = (cache.clone(), c.clone());
            tokio::spawn(async move { cache.get(&c, APP_SCOPE, None).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    assert_eq!(
        sim.request_count(Endpoint::Token),
        1,
        "exactly one HTTP request"
    );
    assert!(tokens.iter().all(|t| t.secret == tokens[0].secret));
    assert!(
        sim.validate_access_token(tokens[0].secret.expose())
            .is_some()
    );
    // Hits cost nothing.
    cache.get(&c, APP_SCOPE, None).await.unwrap();
    assert_eq!(sim.request_count(Endpoint::Token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_error_is_shared_not_repeated() {
    let sim = sim().await;
    sim.set_sticky(Endpoint::Token, Some(EntraFault::InvalidClient));
    let clock = TestClock::new(Some(&sim));
    let c = secret_client(&sim, clock.arc());
    let cache = cache(Arc::new(MemoryStore::new()), clock.arc());
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, c) = (cache.clone(), c.clone());
            tokio::spawn(async move { cache.get(&c, APP_SCOPE, None).await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.aadsts(), Some(7000215));
        let o = e.oauth().unwrap();
        assert!(o.trace_id.is_some() && o.correlation_id.is_some());
        assert!(e.remedy().contains("Value, not its Secret ID"));
    }
    assert_eq!(sim.request_count(Endpoint::Token), 1);
    // Held for a minute (no hammering), then tried again.
    sim.set_sticky(Endpoint::Token, None);
    clock.advance(Duration::from_secs(30));
    assert!(cache.get(&c, APP_SCOPE, None).await.is_err());
    assert_eq!(sim.request_count(Endpoint::Token), 1);
    clock.advance(Duration::from_secs(31));
    cache.get(&c, APP_SCOPE, None).await.unwrap();
    assert_eq!(sim.request_count(Endpoint::Token), 2);
}

#[tokio::test]
async fn expiry_refresh_ahead_and_transient_failures() {
    let sim = sim().await;
    let clock = TestClock::new(Some(&sim));
    let c = secret_client(&sim, clock.arc());
    let cache = cache(Arc::new(MemoryStore::new()), clock.arc());
    let handle = cache.handle(&c, APP_SCOPE, None);
    let t1 = handle.get().await.unwrap();
    assert_eq!(handle.peek().unwrap().secret, t1.secret);

    // 49 minutes in: still fresh.
    clock.advance(Duration::from_secs(49 * 60));
    assert_eq!(handle.get().await.unwrap().secret, t1.secret);
    assert_eq!(sim.request_count(Endpoint::Token), 1);

    // 51 minutes in (refresh-ahead window, 10 min before expiry): the refresh fails
    // transiently, the current token keeps serving, and no retry happens during the backoff.
    clock.advance(Duration::from_secs(2 * 60));
    sim.inject(
        Endpoint::Token,
        EntraFault::Status {
            status: 503,
            retry_after: None,
        },
    );
    assert_eq!(handle.get().await.unwrap().secret, t1.secret);
    assert_eq!(sim.request_count(Endpoint::Token), 2);
    assert_eq!(handle.get().await.unwrap().secret, t1.secret);
    assert_eq!(sim.request_count(Endpoint::Token), 2, "backing off");
    // After the backoff the refresh succeeds.
    clock.advance(Duration::from_secs(2));
    let t2 = handle.get().await.unwrap();
    assert_ne!(t2.secret, t1.secret);
    assert_eq!(sim.request_count(Endpoint::Token), 3);

    // Past the usable window (expiry - 5 min) with no usable token, callers wait for the
    // refresh, which retries transient failures (503, then 429 with Retry-After: 7).
    clock.advance(Duration::from_secs(56 * 60));
    sim.inject(
        Endpoint::Token,
        EntraFault::Status {
            status: 503,
            retry_after: None,
        },
    );
    sim.inject(
        Endpoint::Token,
        EntraFault::Status {
            status: 429,
            retry_after: Some(7),
        },
    );
    let before = clock.slept().len();
    let t3 = handle.get().await.unwrap();
    assert_ne!(t3.secret, t2.secret);
    assert_eq!(sim.request_count(Endpoint::Token), 6);
    assert_eq!(
        clock.slept()[before..],
        [Duration::from_secs(1), Duration::from_secs(7)]
    );

    // Entra's token expired (say Exchange refused it): invalidate, and a new one comes.
    handle.invalidate();
    let t4 = handle.get().await.unwrap();
    assert_ne!(t4.secret, t3.secret);

    // Transient failures past the last attempt come back as errors, marked transient.
    handle.invalidate();
    sim.set_sticky(Endpoint::Token, Some(EntraFault::TemporarilyUnavailable));
    let e = handle.get().await.unwrap_err();
    assert!(e.is_transient() && e.aadsts() == Some(50033), "{e}");
    sim.set_sticky(Endpoint::Token, None);
}

#[tokio::test]
async fn hung_endpoint_under_the_cache() {
    let sim = sim().await;
    sim.set_sticky(Endpoint::Token, Some(EntraFault::Hang));
    let clock = TestClock::new(Some(&sim));
    let c = postern_entra::OAuthClient::builder(
        postern_entra::Authority::microsoft(&sim.authority()).unwrap(),
        TENANT,
        APP,
    )
    .client_secret(Secret::new(SECRET))
    .http_client(transport(&sim))
    .clock(clock.arc())
    .timeout(Duration::from_millis(200))
    .build()
    .unwrap();
    let mut policy = CachePolicy::default();
    policy.max_attempts = 2;
    let cache = TokenCache::with(Arc::new(MemoryStore::new()), clock.arc(), policy);
    let started = std::time::Instant::now();
    let e = cache.get(&c, APP_SCOPE, None).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert_eq!(sim.request_count(Endpoint::Token), 2);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Without retries of timeouts: one request per call, and the failure is shared by
    // every caller until the backoff ends (no new request meanwhile).
    let mut policy = CachePolicy::default();
    policy.retry_timeouts = false;
    policy.initial_backoff = Duration::from_secs(30);
    let cache = TokenCache::with(Arc::new(MemoryStore::new()), clock.arc(), policy);
    let before = sim.request_count(Endpoint::Token);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (cache, c) = (cache.clone(), c.clone());
            tokio::spawn(async move { cache.get(&c, APP_SCOPE, None).await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Timeout(_)) && e.is_transient(), "{e:?}");
    }
    assert_eq!(sim.request_count(Endpoint::Token), before + 1);
    let e = cache.get(&c, APP_SCOPE, None).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert_eq!(sim.request_count(Endpoint::Token), before + 1);
    // Other transient failures are still retried within the call.
    sim.set_sticky(Endpoint::Token, None);
    sim.inject(Endpoint::Token, EntraFault::TemporarilyUnavailable);
    let mut policy = CachePolicy::default();
    policy.retry_timeouts = false;
    policy.initial_backoff = Duration::from_millis(10);
    let cache = TokenCache::with(Arc::new(MemoryStore::new()), clock.arc(), policy);
    assert!(cache.get(&c, APP_SCOPE, None).await.is_ok());
}

/// Signs the user in with the device-code flow and seeds the cache (the admin's one-off step).
async fn sign_in(
    sim: &postern_testkit::entra::EntraSim,
    clock: &TestClock,
    cache: &TokenCache,
) -> postern_entra::OAuthClient {
    let c = client(sim, PUBLIC_APP, Credential::None, clock.arc());
    let device = c.request_device_code(USER_SCOPE).await.unwrap();
    sim.approve_device_code(&device.user_code, USER);
    let resp = c.poll_device_code(&device).await.unwrap();
    cache
        .seed(
            &c,
            USER_SCOPE,
            Some(USER),
            &resp,
            postern_entra::Clock::now(clock),
        )
        .unwrap();
    c
}

#[tokio::test]
async fn rotation_persisted_across_a_restart() {
    let sim = sim().await;
    // Stricter than Entra: a used refresh token dies at once, so losing the rotated one
    // would lock us out.
    sim.set_revoke_on_rotation(true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let clock = TestClock::new(Some(&sim));

    let cache1 = cache(Arc::new(FileStore::new(&path)), clock.arc());
    let c = sign_in(&sim, &clock, &cache1).await;
    let key = cache1.handle(&c, USER_SCOPE, Some(USER)).key().store_key();
    let rt_seeded = FileStore::new(&path).load(&key).unwrap().unwrap();

    // An hour later the cache refreshes; the rotated token is on disk when the token is handed out.
    clock.advance(Duration::from_secs(3600));
    let t = cache1.get(&c, USER_SCOPE, Some(USER)).await.unwrap();
    let rt_rotated = FileStore::new(&path).load(&key).unwrap().unwrap();
    assert_ne!(rt_rotated, rt_seeded);
    let facts = sim.validate_access_token(t.secret.expose()).unwrap();
    assert_eq!(facts.user.as_deref(), Some(USER));
    drop(cache1);

    // "Restart": a new store on the same file, a new cache.
    clock.advance(Duration::from_secs(3600));
    let cache2 = cache(Arc::new(FileStore::new(&path)), clock.arc());
    let t2 = cache2.get(&c, USER_SCOPE, Some(USER)).await.unwrap();
    assert_ne!(t2.secret, t.secret);
    assert_eq!(sim.live_refresh_tokens(USER), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(rt_seeded.expose()),
        "the old refresh token is discarded"
    );

    // The user's sessions are revoked: a permanent error with a remedy, nothing retried.
    sim.revoke_user_refresh_tokens(USER);
    clock.advance(Duration::from_secs(3600));
    let before = sim.request_count(Endpoint::Token);
    let e = cache2.get(&c, USER_SCOPE, Some(USER)).await.unwrap_err();
    assert_eq!(e.aadsts(), Some(50173));
    assert!(!e.is_transient());
    assert!(e.remedy().contains("sign the user in again"));
    assert_eq!(sim.request_count(Endpoint::Token) - before, 1);
}

#[tokio::test]
async fn user_without_refresh_token() {
    let sim = sim().await;
    let clock = TestClock::new(Some(&sim));
    let c = client(&sim, PUBLIC_APP, Credential::None, clock.arc());
    let cache = cache(Arc::new(MemoryStore::new()), clock.arc());
    let e = cache
        .get(&c, USER_SCOPE, Some("nobody@contoso.com"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoRefreshToken { .. }), "{e:?}");
    assert!(e.remedy().contains("device-code"));
    assert_eq!(sim.request_count(Endpoint::Token), 0);
}
