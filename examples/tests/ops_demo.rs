//! The demo end to end: the printer's message reaches the simulated Exchange Online through
//! the relay, every hop is printed, and no secret appears in the output.

use postern_examples::demo;

#[test]
fn demo_delivers_and_prints_every_hop() {
    let mut out = Vec::new();
    let outcome = demo::run(&mut out).expect("the demo completes");
    let text = String::from_utf8(out).unwrap();

    // Device -> relay.
    assert!(
        text.contains(&format!(
            "    S: 250 2.0.0 Ok: queued as {}\n",
            outcome.queue_id
        )),
        "{text}"
    );
    // Relay -> Entra ID: one client-credentials grant, for Exchange, with the role.
    assert_eq!(outcome.token_grants, 1);
    assert!(
        text.contains("[4] relay -> Entra ID: client credentials grant (1 request): token for https://outlook.office365.com with roles [SMTP.SendAsApp]"),
        "{text}"
    );
    // Relay -> Exchange Online: the real session, in order, redacted.
    let upstream = outcome.upstream.join("\n");
    let order = [
        "S: 220 ",
        "C: EHLO relay.contoso.lan",
        "C: STARTTLS",
        "* TLS established: ",
        "C: AUTH XOAUTH2 [redacted]",
        "S: 235 2.7.0 Authentication successful",
        "C: MAIL FROM:<scanner@contoso.com>",
        "C: RCPT TO:<bob@fabrikam.com>",
        "S: 250 2.0.0 OK",
    ];
    let mut at = 0;
    for want in order {
        let i = upstream[at..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} missing after {at} in:\n{upstream}"));
        at += i + want.len();
    }
    for l in &outcome.upstream {
        assert!(
            text.contains(&format!("    {l}\n")),
            "{l:?} not printed:\n{text}"
        );
    }
    assert!(
        outcome.upstream_reply.starts_with("250 2.0.0 OK"),
        "{}",
        outcome.upstream_reply
    );
    // Exchange recorded it, authenticated with the app-only token for the mailbox.
    assert_eq!(outcome.accepted.mail_from, "scanner@contoso.com");
    assert_eq!(outcome.accepted.rcpt_to, ["bob@fabrikam.com"]);
    assert!(outcome.accepted.tls);
    assert!(
        text.contains("[6] simulated Exchange Online recorded message #"),
        "{text}"
    );
    assert!(text.contains("AUTH XOAUTH2 with an app-only token of 6731de76-14a6-49ae-97bc-6eba6914391e for mailbox scanner@contoso.com"), "{text}");
    assert!(text.contains("Subject: Scanned document (3F)"), "{text}");
    assert_eq!(outcome.tokens_presented.len(), 1);
    // The metrics counted the delivery and the token.
    assert!(
        text.contains("postern_recipients_delivered_total{route=\"m365\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("postern_token_refreshes_total{identity=\"scanner-app\"} 1"),
        "{text}"
    );
    // No secret in the output: the client secret, nor an XOAUTH2 payload.
    assert!(!text.contains("demo-client-secret"), "{text}");
    assert!(
        !text.contains("auth=Bearer") && !text.contains("dXNlcj1"),
        "{text}"
    );
}
