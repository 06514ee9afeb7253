//! Bad configuration and bad credentials (invariant 6): every configuration error names its
//! file, line and key (or the cause); the relay refuses to start as an open relay on a
//! non-loopback address unless `policy.i_know_this_is_an_open_relay = true`; bad credentials
//! found at start name the account or file without printing the secret.

mod support;

use postern::config::Config;
use support::*;

fn err(text: &str) -> String {
    match Config::from_toml(text, "relay.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_config_error_names_file_line_and_key() {
    let dir = Dir::new();
    let good = dir.toml("outbox", "", "");
    Config::from_toml(&good, "relay.toml").unwrap();
    let line_of = |text: &str, needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    // (mutation of the good text, key expected, what the line contains)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:99999\"",
            "listeners[0].bind",
            "99999",
        ),
        (
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:0\"\ncolour = \"blue\"",
            "listeners[0].colour",
            "colour",
        ),
        (
            "allowed_networks = [\"127.0.0.1/32\"]",
            "allowed_networks = [\"127.0.0.1/33\"]",
            "policy.allowed_networks",
            "127.0.0.1/33",
        ),
        (
            "retry_initial = \"200ms\"",
            "retry_initial = \"soon\"",
            "queue.retry_initial",
            "soon",
        ),
        (
            "lifetime = \"1h\"",
            "lifetime = \"1h\"\nconcurrency = 0",
            "queue.concurrency",
            "concurrency",
        ),
        (
            "routes = [\"bounces\"]",
            "routes = [\"nowhere\"]",
            "rules[0].routes[0]",
            "nowhere",
        ),
        (
            "type = \"local\"\ndir = \"",
            "type = \"pigeon\"\ndir = \"",
            "routes.outbox.type",
            "pigeon",
        ),
        (
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:0\"\nbare_line_endings = \"maybe\"",
            "listeners[0].bare_line_endings",
            "maybe",
        ),
    ];
    for (from, to, key, line_has) in cases {
        assert!(good.contains(from), "{from}");
        let text = good.replacen(from, to, 1);
        let e = err(&text);
        let line = line_of(&text, line_has);
        assert!(
            e.starts_with(&format!("relay.toml:{line}: {key}")),
            "expected relay.toml:{line}: {key}..., got: {e}"
        );
    }
    // An identity's token_timeout: unparsable, zero, or past the 10 minute maximum.
    let with_identity = dir.toml(
        "m365",
        "",
        "[routes.m365]\ntype = \"client_submission\"\nhost = \"127.0.0.1\"\nport = 1\n\
         identity = \"app\"\nmailbox = \"scanner@contoso.com\"\n\
         [identities.app]\ntenant = \"contoso.onmicrosoft.com\"\n\
         client_id = \"6731de76-14a6-49ae-97bc-6eba6914391e\"\n\
         client_secret_env = \"POSTERN_TEST_UNUSED\"\ntoken_timeout = \"5s\"\n",
    );
    Config::from_toml(&with_identity, "relay.toml").unwrap();
    for (bad, says) in [
        ("soon", "invalid duration"),
        ("0s", "more than 0"),
        ("11m", "10 minute maximum"),
    ] {
        let text = with_identity.replace(
            "token_timeout = \"5s\"",
            &format!("token_timeout = \"{bad}\""),
        );
        let e = err(&text);
        let line = line_of(&text, "token_timeout");
        assert!(
            e.starts_with(&format!(
                "relay.toml:{line}: identities.app.token_timeout: "
            )) && e.contains(says),
            "{bad}: {e}"
        );
    }
    // A syntax error names its line.
    let e = err("[[listeners]\nname = 1\n");
    assert!(e.starts_with("relay.toml:1: syntax error"), "{e}");
    // A missing file names the file and the cause.
    let missing = dir.path().join("nope.toml");
    let e = Config::load(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.toml") && e.contains("cannot read"), "{e}");
}

#[test]
fn an_open_relay_on_a_public_address_is_refused_unless_acknowledged() {
    let dir = Dir::new();
    let base = dir.toml("outbox", "", "");
    for (bind, net) in [
        ("0.0.0.0:0", "0.0.0.0/0"),
        ("[::]:0", "::/0"),
        ("0.0.0.0:0", "198.51.100.0/24"),
        ("192.0.2.10:25", "10.0.0.0/7"),
    ] {
        let text = base
            .replace("bind = \"127.0.0.1:0\"", &format!("bind = \"{bind}\""))
            .replace(
                "allowed_networks = [\"127.0.0.1/32\"]",
                &format!("allowed_networks = [\"127.0.0.1/32\", \"{net}\"]"),
            );
        let e = err(&text);
        let line = text
            .lines()
            .position(|l| l.starts_with("allowed_networks"))
            .unwrap()
            + 1;
        assert!(
            e.starts_with(&format!("relay.toml:{line}: policy.allowed_networks[1]: ")),
            "{e}"
        );
        assert!(
            e.contains("open relay") && e.contains("i_know_this_is_an_open_relay"),
            "{e}"
        );
        // Explicitly told: accepted.
        let told = text.replace(
            "[policy]\n",
            "[policy]\ni_know_this_is_an_open_relay = true\n",
        );
        assert!(
            Config::from_toml(&told, "relay.toml").is_ok(),
            "{bind} {net}"
        );
    }
    // LAN networks on a public bind are fine; so is anything on loopback.
    let lan = base
        .replace("bind = \"127.0.0.1:0\"", "bind = \"0.0.0.0:0\"")
        .replace(
            "allowed_networks = [\"127.0.0.1/32\"]",
            "allowed_networks = [\"192.168.10.0/24\", \"10.20.0.0/16\", \"fd12::/16\"]",
        );
    assert!(Config::from_toml(&lan, "relay.toml").is_ok());
    let loopback = base.replace(
        "allowed_networks = [\"127.0.0.1/32\"]",
        "allowed_networks = [\"0.0.0.0/0\"]",
    );
    assert!(Config::from_toml(&loopback, "relay.toml").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_at_start_name_the_cause_not_the_secret() {
    let dir = Dir::new();
    // A device account whose hash is a plain password by mistake.
    let leaked = "printer-plaintext-pw";
    let text = dir.toml(
        "outbox",
        "",
        &format!("[[accounts]]\nusername = \"printer\"\npassword_hash = \"{leaked}\"\n"),
    );
    let e = match postern::Relay::start(dir.config(&text)).await {
        Ok(_) => panic!("started with a plaintext password hash"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("printer") && e.contains("password_hash"), "{e}");
    assert!(!e.contains(leaked), "{e}");

    // An identity whose client secret file does not exist.
    let dir = Dir::new();
    let text = dir.toml(
        "m365",
        "",
        "[routes.m365]\ntype = \"client_submission\"\nhost = \"127.0.0.1\"\nport = 1\n\
         identity = \"app\"\nmailbox = \"scanner@contoso.com\"\n\
         [identities.app]\ntenant = \"contoso.onmicrosoft.com\"\n\
         client_id = \"6731de76-14a6-49ae-97bc-6eba6914391e\"\n\
         client_secret_file = \"/nonexistent/postern/client-secret\"\n",
    );
    match Config::from_toml(&text, "relay.toml") {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("client_secret_file")
                    || e.contains("/nonexistent/postern/client-secret"),
                "{e}"
            );
        }
        Ok(cfg) => {
            let e = match postern::Relay::start(cfg).await {
                Ok(_) => panic!("started without its client secret"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains("/nonexistent/postern/client-secret") && e.contains("identities.app"),
                "{e}"
            );
        }
    }
}
