//! End to end: `Relay` on 127.0.0.1:0, Python's smtplib as the device, the local sink checked.

use std::time::Duration;

use postern::Relay;
use postern::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_to_local_sink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let text = format!(
        "hostname = \"relay.test\"\ndefault_routes = [\"outbox\"]\n\
         [[listeners]]\nname = \"lan\"\nbind = \"127.0.0.1:0\"\n\
         [policy]\nallowed_networks = [\"127.0.0.1/32\"]\n\
         [spool]\npath = \"{d}/spool\"\n\
         [routes.outbox]\ntype = \"local\"\ndir = \"{d}/outbox\"\n"
    );
    let cfg = Config::from_toml(&text, "test.toml").unwrap();
    let relay = Relay::start(cfg).await.unwrap();
    let port = relay.local_addrs()[0].port();
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\n\
         s.ehlo('printer')\n\
         r = s.sendmail('scanner@contoso.com', ['reception@contoso.com'], \
         'Subject: scan\\r\\nFrom: scanner@contoso.com\\r\\n\\r\\nhello\\r\\n')\n\
         assert r == {{}}, r\n\
         s.quit()\n"
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outbox = dir.path().join("outbox");
    let mut eml = None;
    for _ in 0..1000 {
        eml = std::fs::read_dir(&outbox).ok().and_then(|d| {
            d.map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        if eml.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let eml = std::fs::read_to_string(eml.expect("message in the local sink")).unwrap();
    assert!(eml.contains("Subject: scan\r\n"), "{eml}");
    assert!(eml.ends_with("\r\nhello\r\n"), "{eml}");
    let json = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(v["envelope"]["mail_from"], "scanner@contoso.com");
    assert_eq!(v["delivered_to"][0], "reception@contoso.com");
    relay.shutdown().await;
}
