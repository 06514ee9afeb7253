//! A spool on a small file system that fills: new mail gets `452 4.3.1`, nothing
//! half-written is acknowledged or left behind, and the relay recovers when space returns.
//!
//! The test mounts a 2 MiB tmpfs itself (we run as root in CI). Where mounting is not
//! possible it prints a notice and passes, unless `POSTERN_REQUIRE_EXTERNAL_TOOLS` is set.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use postern_testkit::org::Organization;
use postern_testkit::tenant_mx::TenantMx;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_refuses_with_452_and_recovers() {
    let dir = Dir::new();
    let fs = dir.path().join("fs");
    let Some(tmpfs) = Tmpfs::mount(&fs, "2m") else {
        return;
    };
    // The upstream is down (nothing listens on its port yet), so mail stays in the spool.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = dir
        .toml(
            "up",
            "",
            &format!(
                "[routes.up]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
                 connect_timeout = \"1s\"\n"
            ),
        )
        .replace(
            &format!("path = \"{}/spool\"", dir.path().display()),
            &format!("path = \"{}/spool\"", fs.display()),
        );
    let relay = start(dir.config(&text)).await;
    let addr = relay.local_addrs()[0];

    // 90 KiB messages (written at commit) and 400 KiB ones (streamed while received).
    let mut acked = HashSet::new();
    let mut full = None;
    for i in 0..60 {
        let token = format!("fill{i}");
        let pad = if i % 3 == 2 { 400 } else { 90 };
        let body = format!(
            "Subject: {token}\r\n\r\n{}",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"
                .repeat(pad * 1024 / 66)
        );
        let r = submit(
            addr,
            "scanner@contoso.com",
            &["reception@contoso.com"],
            &body,
        )
        .await
        .unwrap();
        match r.0 {
            250 => {
                acked.insert(token);
            }
            _ => {
                full = Some(r);
                break;
            }
        }
    }
    let (code, text) = full.expect("the 2 MiB spool filled up");
    assert_eq!(code, 452, "{text}");
    assert!(text.starts_with("4.3.1"), "{text}");
    assert!(!acked.is_empty(), "some mail fitted before the disk filled");

    // While full, more mail is refused the same way (small and large).
    for size in [1usize, 300] {
        let body = format!("Subject: refused\r\n\r\n{}", "z".repeat(size * 1024));
        let r = submit(
            addr,
            "scanner@contoso.com",
            &["reception@contoso.com"],
            &body,
        )
        .await
        .unwrap();
        assert_eq!(r.0, 452, "{r:?}");
    }

    // Nothing half-written is left, and every committed message is whole and acknowledged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let files = walk(&fs.join("spool").join("queue"));
    let tmp: Vec<_> = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "half-written files left: {tmp:?}");
    let msgs = postern::spool::inspect(&fs.join("spool")).unwrap();
    assert_eq!(msgs.len(), acked.len(), "spooled = acknowledged");
    for m in &msgs {
        let bytes = m.message.read_body().await.unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let token = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("subject")
            .to_owned();
        assert!(
            acked.contains(&token),
            "{token} spooled but not acknowledged"
        );
    }
    assert!(walk(&fs.join("spool").join("corrupt")).is_empty());

    // Space returns: the relay takes mail again.
    let out = std::process::Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&fs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut accepted_again = false;
    for _ in 0..50 {
        let r = submit(
            addr,
            "scanner@contoso.com",
            &["reception@contoso.com"],
            "Subject: after\r\n\r\nspace is back\r\n",
        )
        .await
        .unwrap();
        if r.0 == 250 {
            accepted_again = true;
            acked.insert("after".into());
            break;
        }
        assert_eq!(r.0, 452, "{r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        accepted_again,
        "the relay did not recover when space returned"
    );

    // And the upstream comes up: everything acknowledged is delivered once.
    let org = Organization::builder("tenant-guid", "contoso.com").build();
    let mx = TenantMx::builder()
        .organization(org)
        .bind(format!("127.0.0.1:{port}").parse().unwrap())
        .start()
        .await
        .unwrap();
    let got = mx
        .recorder()
        .wait_for(acked.len(), Duration::from_secs(40))
        .await
        .unwrap();
    let subjects: Vec<String> = got
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(&m.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect();
    let distinct: HashSet<&String> = subjects.iter().collect();
    assert_eq!(subjects.len(), acked.len(), "{subjects:?}");
    assert_eq!(distinct.len(), acked.len());
    assert!(!subjects.iter().any(|s| s == "refused"));
    println!(
        "disk full: {} acknowledged before 452 4.3.1, all delivered after recovery",
        acked.len() - 1
    );
    relay.shutdown().await;
    drop(mx);
    drop(tmpfs);
}
