//! PROXY protocol v1 and v2 listeners: the client address comes from the
//! header, but only when the load balancer is trusted.

mod inbound_common;

use std::net::SocketAddr;

use inbound_common::*;
use postern::inbound::proxy;

fn proxied_listener(trusted: &str) -> postern::inbound::ListenerConfig {
    let mut l = listener("behind-lb");
    l.proxy_protocol = true;
    l.trusted_proxies = vec![postern::inbound::parse_network(trusted).unwrap()];
    l
}

#[tokio::test]
async fn v1_and_v2_headers_set_the_client_address() {
    // Only 10.1.2.3 (the device behind the LB) may relay; 127.0.0.1 (the LB) may not.
    let mut h = Harness::start(
        vec![proxied_listener("127.0.0.1")],
        policy(&["10.1.2.3"]),
        limits(),
    )
    .await;
    let device: SocketAddr = "10.1.2.3:40000".parse().unwrap();
    let front: SocketAddr = "192.0.2.10:25".parse().unwrap();
    for v2 in [false, true] {
        let mut c = Client::connect(h.addrs[0]).await;
        let mut header = Vec::new();
        if v2 {
            proxy::encode_v2(device, front, &mut header);
        } else {
            proxy::encode_v1(device, front, &mut header);
        }
        c.send(&header).await;
        assert_eq!(c.reply().await.0, 220);
        let ehlo = c.expect("EHLO x", 250).await;
        assert!(ehlo.contains("Hello [10.1.2.3]"), "{ehlo}");
        let (code, text) = send_mail(&mut c, "dev@example.com", "x@example.org", "proxied").await;
        assert_eq!(code, 250, "{text}");
    }
    // A device outside the allowed networks, via the same LB, is refused.
    let mut c = Client::connect(h.addrs[0]).await;
    let mut header = Vec::new();
    proxy::encode_v2("203.0.113.5:1234".parse().unwrap(), front, &mut header);
    c.send(&header).await;
    assert_eq!(c.reply().await.0, 220);
    c.expect("EHLO x", 250).await;
    c.expect("MAIL FROM:<a@example.com>", 250).await;
    let text = c.expect("RCPT TO:<b@example.org>", 550).await;
    assert!(text.contains("203.0.113.5"), "{text}");

    let msgs = h.messages();
    assert_eq!(msgs.len(), 2);
    for m in msgs {
        assert_eq!(m.envelope().client.addr, device);
        let body = String::from_utf8(m.read_body().await.unwrap()).unwrap();
        assert!(body.starts_with("Received: from x ([10.1.2.3])"), "{body}");
    }
    h.finish().await;
}

#[tokio::test]
async fn untrusted_peers_and_bad_headers_are_closed() {
    let h = Harness::start(
        vec![proxied_listener("192.0.2.99")],
        policy(&["0.0.0.0/0"]),
        limits(),
    )
    .await;
    // 127.0.0.1 is not the trusted LB: closed without a banner, header or not.
    let mut c = Client::connect(h.addrs[0]).await;
    let mut header = Vec::new();
    proxy::encode_v1(
        "10.0.0.1:1".parse().unwrap(),
        "10.0.0.2:25".parse().unwrap(),
        &mut header,
    );
    c.send(&header).await;
    assert!(c.closed().await);
    h.finish().await;

    let h = Harness::start(
        vec![proxied_listener("127.0.0.0/8")],
        policy(&["0.0.0.0/0"]),
        limits(),
    )
    .await;
    for garbage in [
        &b"EHLO x\r\n"[..],
        b"PROXY TCP4 1.2.3.4 nope 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
    ] {
        let mut c = Client::connect(h.addrs[0]).await;
        c.send(garbage).await;
        assert!(c.closed().await, "{garbage:?}");
    }
    h.finish().await;
}
