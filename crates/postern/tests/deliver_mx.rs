//! End to end through the tenant MX simulator: connector relay (with and without a client
//! certificate) and Direct Send.

mod deliver_common;

use std::time::Duration;

use deliver_common::*;
use postern_testkit::org::{InboundConnector, Organization};
use postern_testkit::record::Endpoint;
use postern_testkit::tenant_mx::TenantMx;
use postern_testkit::tls::TestCa;

const WAIT: Duration = Duration::from_secs(20);

async fn mx(org: Organization, ca: TestCa) -> TenantMx {
    TenantMx::builder()
        .organization(org)
        .ca(ca)
        .start()
        .await
        .unwrap()
}

fn route(dir: &Dir, mx: &TenantMx, kind: &str, extra: &str) -> String {
    let ca = dir.write("mx-ca.pem", mx.ca_cert_pem());
    format!(
        "[routes.tenant]\ntype = \"{kind}\"\ntenant_domain = \"contoso.com\"\nhost = \"127.0.0.1\"\n\
         port = {}\ntls_name = \"{}\"\nca_file = \"{}\"\ncommand_timeout = \"5s\"\n{extra}",
        mx.addr().port(),
        mx.tls_server_name(),
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_connector_relays_to_external_recipients() {
    let ca = TestCa::new();
    let client = ca.client_cert("relay.contoso.com", &["relay.contoso.com"]);
    let org = Organization::builder(TENANT, "contoso.com")
        .connector(InboundConnector::certificate("relay", "relay.contoso.com"))
        .build();
    let mx = mx(org, ca).await;
    let dir = Dir::new();
    let cert = dir.write("client.pem", client.cert_pem());
    let key = dir.write("client.key", client.key_pem());
    let extra = route(
        &dir,
        &mx,
        "connector",
        &format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let relay = start(dir.config("tenant", &extra)).await;
    let sent = send(
        &relay,
        "scanner@contoso.com",
        &["bob@fabrikam.com"],
        &message("scanner@contoso.com", "c1"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = mx.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs[0].endpoint, Endpoint::Connector);
    assert!(msgs[0].tls);
    assert!(
        msgs[0]
            .client_cert_subject
            .as_deref()
            .is_some_and(|s| s.contains("relay.contoso.com"))
    );
    assert!(dir.bounces(1, Duration::ZERO).await.is_empty());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_recipients_get_their_own_outcomes_and_one_notice() {
    let org = Organization::builder(TENANT, "contoso.com").build();
    let mx = mx(org, TestCa::new()).await;
    let dir = Dir::new();
    // A connector route without a certificate: the tenant MX takes internal recipients and
    // refuses external ones (550 5.7.64 TenantAttribution).
    let relay = start(dir.config("tenant", &route(&dir, &mx, "connector", ""))).await;
    let sent = send(
        &relay,
        "scanner@contoso.com",
        &["alice@contoso.com", "bob@fabrikam.com", "carol@contoso.com"],
        &message("scanner@contoso.com", "mixed"),
    )
    .await;
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = mx.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpt_to, ["alice@contoso.com", "carol@contoso.com"]);
    let bounces = dir.bounces(1, WAIT).await;
    assert_eq!(bounces.len(), 1);
    let b = &bounces[0];
    assert!(b.contains("bob@fabrikam.com"), "{b}");
    assert!(b.contains("5.7.64"), "{b}");
    assert!(
        !b.contains("Final-Recipient: rfc822;alice@contoso.com"),
        "{b}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        mx.recorder().len(),
        1,
        "no retry of the delivered recipients"
    );
    assert_eq!(
        dir.bounces(2, Duration::ZERO).await.len(),
        1,
        "exactly one notice"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_send_refuses_external_recipients_at_rcpt_time() {
    let org = Organization::builder(TENANT, "contoso.com").build();
    let mx = mx(org, TestCa::new()).await;
    let dir = Dir::new();
    let relay = start(dir.config(
        "tenant",
        &route(
            &dir,
            &mx,
            "direct_send",
            "accepted_domains = [\"contoso.com\"]\n",
        ),
    ))
    .await;
    let sent = send(
        &relay,
        "scanner@contoso.com",
        &["bob@fabrikam.com", "alice@contoso.com"],
        &message("scanner@contoso.com", "ds"),
    )
    .await;
    assert_eq!(sent.rcpt[0].0, 550);
    assert!(
        sent.rcpt[0]
            .1
            .starts_with("5.7.1 Direct Send only reaches the tenant's own domains"),
        "{:?}",
        sent.rcpt[0]
    );
    assert_eq!(sent.rcpt[1].0, 250);
    assert_eq!(sent.data.unwrap().0, 250);
    let msgs = mx.recorder().wait_for(1, WAIT).await.unwrap();
    assert_eq!(msgs[0].endpoint, Endpoint::DirectSend);
    assert_eq!(msgs[0].rcpt_to, ["alice@contoso.com"]);
    assert!(msgs[0].tls, "opportunistic STARTTLS was used");
    relay.shutdown().await;
}
