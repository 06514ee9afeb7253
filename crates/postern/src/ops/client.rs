//! A minimal HTTP/1.1 client for the relay's admin API (loopback, plain text).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// How long one admin request may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `method path` to the admin listener at `addr`; returns the status and body.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> std::io::Result<(StatusCode, Vec<u8>)> {
    let io_err = |e: String| std::io::Error::other(e);
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| io_err(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| io_err(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| io_err(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "admin API timed out"))?
}
