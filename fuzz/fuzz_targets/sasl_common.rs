//! Helpers shared by the `sasl_*` targets (included with `#[path]`, not a target itself).

use postern_sasl::{Client, Credentials, Mechanism, ServerExchange, ServerStep};

/// Whatever a raw decoder accepted must survive our client's encoding and the server exchange
/// unchanged (when the client can encode it at all).
pub fn round_trip(mechanism: Mechanism, creds: Credentials) {
    let Ok(mut client) = Client::new(mechanism, &creds) else {
        return;
    };
    let mut server = ServerExchange::new(mechanism);
    let mut step = match client.initial_response() {
        Some(ir) => server.start(Some(ir.expose_secret().as_bytes())),
        None => server.start(None),
    }
    .expect("server rejected what the client encoded");
    for _ in 0..4 {
        match step {
            ServerStep::Challenge(challenge) => {
                let answer = client.step(&challenge).expect("client refused a challenge");
                step = server
                    .step(answer.line().as_bytes())
                    .expect("server rejected what the client encoded");
            }
            ServerStep::Done(got) => {
                assert_eq!(got, creds, "round trip changed the credentials");
                return;
            }
            _ => unreachable!(),
        }
    }
    panic!("exchange did not finish");
}

/// Drives a server exchange with `data` split into lines at `\n`; the first byte decides whether
/// the first line is an initial response on the `AUTH` line. Errors are fine, panics are not;
/// every error must map to a 5xx reply.
pub fn drive_server(mechanism: Mechanism, data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut lines = data.split(|&b| b == b'\n');
    let mut server = ServerExchange::new(mechanism);
    let first = if mode & 1 == 1 { lines.next() } else { None };
    let mut result = server.start(first);
    for line in lines {
        match result {
            Ok(ServerStep::Done(_)) | Err(_) => break,
            Ok(_) => result = server.step(line),
        }
    }
    if let Err(e) = result {
        assert!((500..600).contains(&e.reply().code));
    }
}
