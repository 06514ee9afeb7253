//! The loopback redirect listener of the authorization-code flow (spec C.5).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::{Error, Secret};

/// The longest request head the listener reads (the redirect's `GET` line and headers).
pub const MAX_REDIRECT_REQUEST: usize = 16 * 1024;

/// Listens on `127.0.0.1` for the browser's redirect (`GET /?code=..&state=..`).
///
/// The redirect URI is `http://localhost:{port}/` by default (register `http://localhost`
/// under "Mobile and desktop applications"; Entra ignores the port of loopback redirect URIs),
/// or `http://127.0.0.1:{port}/` with [`with_host`](Self::with_host).
#[derive(Debug)]
pub struct LoopbackListener {
    listener: TcpListener,
    port: u16,
    host: String,
}

/// What one request to the listener turned out to be.
enum Outcome {
    Code(Secret),
    Failed(Error),
    Ignore,
}

impl LoopbackListener {
    /// Binds `127.0.0.1` on an ephemeral port.
    pub async fn bind() -> Result<Self, Error> {
        Self::bind_port(0).await
    }

    /// Binds `127.0.0.1` on `port` (0 for any).
    pub async fn bind_port(port: u16) -> Result<Self, Error> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
            Error::io(
                format!("binding 127.0.0.1:{port} for the sign-in redirect"),
                e,
            )
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("loopback listener address", e))?
            .port();
        Ok(Self {
            listener,
            port,
            host: "localhost".to_owned(),
        })
    }

    /// Uses another host name in the redirect URI (`127.0.0.1`, as registered on the app).
    pub fn with_host(mut self, host: &str) -> Self {
        host.clone_into(&mut self.host);
        self
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The redirect URI to send to the authorize endpoint.
    pub fn redirect_uri(&self) -> String {
        format!("http://{}:{}/", self.host, self.port)
    }

    /// Waits for the redirect; returns its code when `state` matches. Requests without `code`
    /// or `error` (a browser's `/favicon.ico`) get a 404 and are ignored; an error redirect
    /// or a wrong `state` ends the wait with an error.
    pub async fn wait_for_code(&self, state: &str, wait: Duration) -> Result<Secret, Error> {
        let accept_loop = async {
            loop {
                let (stream, _) = self
                    .listener
                    .accept()
                    .await
                    .map_err(|e| Error::io("accepting the sign-in redirect", e))?;
                match serve_one(stream, state).await {
                    Outcome::Code(c) => return Ok(c),
                    Outcome::Failed(e) => return Err(e),
                    Outcome::Ignore => {}
                }
            }
        };
        tokio::time::timeout(wait, accept_loop)
            .await
            .unwrap_or(Err(Error::RedirectTimeout(wait)))
    }
}

async fn serve_one(mut stream: TcpStream, expected_state: &str) -> Outcome {
    let Ok(Some(head)) =
        tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream)).await
    else {
        return Outcome::Ignore;
    };
    let (outcome, status, page) = interpret(&head, expected_state);
    let body = format!(
        "<!doctype html><html><head><title>Postern sign-in</title></head><body><p>{page}</p></body></html>"
    );
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    // The browser may have gone; the outcome stands regardless.
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
    outcome
}

/// Parses a request head and decides; pure, for tests.
fn interpret(head: &str, expected_state: &str) -> (Outcome, &'static str, &'static str) {
    let target = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "code" => code = Some(v.into_owned()),
            "state" => state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    if code.is_none() && error.is_none() {
        return (Outcome::Ignore, "404 Not Found", "Not found.");
    }
    if state.as_deref() != Some(expected_state) {
        return (
            Outcome::Failed(Error::StateMismatch),
            "400 Bad Request",
            "Sign-in failed: the state did not match. Start again.",
        );
    }
    match (code, error) {
        (_, Some(error)) => (
            Outcome::Failed(Error::Authorization {
                error,
                description: description.unwrap_or_default(),
            }),
            "200 OK",
            "Sign-in failed. See the terminal for details; you can close this window.",
        ),
        (Some(code), None) => (
            Outcome::Code(Secret::new(code)),
            "200 OK",
            "Sign-in complete. You can close this window.",
        ),
        (None, None) => (Outcome::Ignore, "404 Not Found", "Not found."),
    }
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return String::from_utf8(buf).ok();
        }
        if buf.len() > MAX_REDIRECT_REQUEST {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interprets_redirects() {
        let ok = interpret(
            "GET /?code=abc%2B&state=s1 HTTP/1.1\r\nHost: x\r\n\r\n",
            "s1",
        );
        assert!(matches!(ok.0, Outcome::Code(ref c) if c.expose() == "abc+"));
        let bad_state = interpret("GET /?code=abc&state=zz HTTP/1.1\r\n\r\n", "s1");
        assert!(matches!(bad_state.0, Outcome::Failed(Error::StateMismatch)));
        let err = interpret(
            "GET /?error=access_denied&error_description=the+user+canceled+the+authentication&state=s1 HTTP/1.1\r\n\r\n",
            "s1",
        );
        match err.0 {
            Outcome::Failed(Error::Authorization { error, description }) => {
                assert_eq!(error, "access_denied");
                assert_eq!(description, "the user canceled the authentication");
            }
            _ => panic!("expected an authorization error"),
        }
        assert!(matches!(
            interpret("GET /favicon.ico HTTP/1.1\r\n\r\n", "s1").0,
            Outcome::Ignore
        ));
        assert!(matches!(interpret("garbage", "s1").0, Outcome::Ignore));
    }
}
