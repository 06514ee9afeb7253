//! Spool: commit, recovery, crash consistency, state persistence.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use postern::spool::{
    ClientInfo, Envelope, FinalOutcome, MessageState, QueueId, Recipient, Spool, SpoolConfig,
};

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope::new(
        Some("scanner@contoso.com".into()),
        rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        ClientInfo::new("127.0.0.1:40000".parse().unwrap(), "scanner", "default"),
    )
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn commit_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path().join("spool"));
    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
    let mut rx = spool.subscribe();
    let mut inc = spool
        .receive(envelope(&["a@fabrikam.com", "b@fabrikam.com"]))
        .await
        .unwrap();
    inc.write(b"Subject: hi\r\n\r\n").await.unwrap();
    inc.write(b"hello\r\n").await.unwrap();
    let id = inc.commit().await.unwrap();
    let handed = rx.recv().await.unwrap();
    assert_eq!(handed.id(), &id);
    assert_eq!(
        handed.read_body().await.unwrap(),
        b"Subject: hi\r\n\r\nhello\r\n"
    );

    let queue = dir.path().join("spool/queue");
    assert_eq!(files(&queue), vec![format!("{id}.msg")]);
    assert_eq!(mode(&dir.path().join("spool")), 0o700);
    assert_eq!(mode(&queue), 0o700);
    assert_eq!(mode(&queue.join(format!("{id}.msg"))), 0o600);
    drop(spool);

    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    let m = &rec.messages[0];
    assert_eq!(m.message.id(), &id);
    assert_eq!(m.message.envelope().recipients.len(), 2);
    assert_eq!(m.message.envelope().recipients[1].address, "b@fabrikam.com");
    assert_eq!(
        m.message.envelope().mail_from.as_deref(),
        Some("scanner@contoso.com")
    );
    assert_eq!(m.state, MessageState::new(2));
    assert!(m.possible_duplicates.is_empty());
    assert_eq!(
        m.message.read_body().await.unwrap(),
        b"Subject: hi\r\n\r\nhello\r\n"
    );
}

#[tokio::test]
async fn large_message_spills_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SpoolConfig::new(dir.path());
    cfg.spill_threshold = 64 * 1024;
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let mut inc = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..300u32 {
        let chunk = format!("line {i:06} {}\r\n", "x".repeat(3000));
        expected.extend_from_slice(chunk.as_bytes());
        inc.write(chunk.as_bytes()).await.unwrap();
    }
    // Past the threshold the bytes are on disk in a temporary file.
    assert!(
        files(&dir.path().join("queue"))
            .iter()
            .any(|f| f.ends_with(".tmp"))
    );
    let id = inc.commit().await.unwrap();
    drop(spool);
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!(rec.messages[0].message.id(), &id);
    assert_eq!(rec.messages[0].message.body_len(), expected.len() as u64);
    assert_eq!(rec.messages[0].message.read_body().await.unwrap(), expected);
}

#[tokio::test]
async fn dropped_or_aborted_messages_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SpoolConfig::new(dir.path());
    cfg.spill_threshold = 1024;
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    // Small, dropped before commit (a connection lost mid-DATA).
    let mut a = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    a.write(b"partial").await.unwrap();
    drop(a);
    // Spilled, dropped.
    let mut b = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    b.write(&[b'x'; 5000]).await.unwrap();
    drop(b);
    // Spilled, aborted.
    let mut c = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    c.write(&[b'y'; 5000]).await.unwrap();
    c.abort().await;
    assert!(files(&dir.path().join("queue")).is_empty());
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
    assert_eq!(rec.discarded_tmp, 0);
}

#[tokio::test]
async fn crash_leftovers_are_discarded_or_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let mut good = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    good.write(b"whole message\r\n").await.unwrap();
    let good = good.commit().await.unwrap();
    let mut victim = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    victim.write(b"this one gets truncated\r\n").await.unwrap();
    let victim = victim.commit().await.unwrap();
    drop(spool);

    let queue = dir.path().join("queue");
    // A crash during a write leaves a .tmp (message) and a .state.tmp.
    let stray = QueueId::generate();
    std::fs::write(queue.join(format!("{stray}.tmp")), b"POSTERN-SPOOL/1 half").unwrap();
    std::fs::write(queue.join(format!("{good}.state.tmp")), b"{").unwrap();
    // A truncated message file (e.g. a disk that lied) and garbage under a valid name.
    let vpath = queue.join(format!("{victim}.msg"));
    let len = std::fs::metadata(&vpath).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vpath)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let garbage = QueueId::generate();
    std::fs::write(
        queue.join(format!("{garbage}.msg")),
        b"not a spool file at all",
    )
    .unwrap();
    // A state whose message is gone.
    let orphan = QueueId::generate();
    std::fs::write(queue.join(format!("{orphan}.state")), b"{}").unwrap();

    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!(rec.messages[0].message.id(), &good);
    assert_eq!(rec.discarded_tmp, 2);
    assert_eq!(rec.quarantined.len(), 2);
    assert_eq!(files(&queue), vec![format!("{good}.msg")]);
    let corrupt = files(&dir.path().join("corrupt"));
    assert!(corrupt.contains(&format!("{victim}.msg")));
    assert!(corrupt.contains(&format!("{garbage}.msg")));
}

#[tokio::test]
async fn state_persists_and_in_flight_means_possible_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let mut inc = spool
        .receive(envelope(&[
            "a@fabrikam.com",
            "b@fabrikam.com",
            "c@fabrikam.com",
        ]))
        .await
        .unwrap();
    inc.write(b"body\r\n").await.unwrap();
    let id = inc.commit().await.unwrap();

    let (_, rec) = Spool::open(&cfg).await.unwrap();
    let mut state = rec.messages[0].state.clone();
    state.recipients[0].attempts = 1;
    state.recipients[0].outcome = Some(FinalOutcome::Delivered {
        reply: "250 2.0.0 OK".into(),
        at: std::time::SystemTime::now(),
    });
    state.recipients[1].attempts = 1;
    state.recipients[1].last_reply = Some("451 4.7.500 try later".into());
    spool.mark_in_flight(&id, &[1]).await;
    spool.save_state(&id, &state).await.unwrap();
    // Then a crash while b and c are being delivered.
    spool.mark_in_flight(&id, &[1, 2]).await;
    drop(spool);

    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    let m = &rec.messages[0];
    assert_eq!(m.state, state);
    assert_eq!(m.state.pending(), vec![1, 2]);
    assert_eq!(m.possible_duplicates, vec![1, 2]);

    // Once every recipient is final the files go away.
    spool.remove(&id).await.unwrap();
    assert!(!spool.contains(&id).await);
    assert!(files(&dir.path().join("queue")).is_empty());
}

#[tokio::test]
async fn finished_state_left_behind_is_cleaned_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let mut inc = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    inc.write(b"body\r\n").await.unwrap();
    let id = inc.commit().await.unwrap();
    let mut state = MessageState::new(1);
    state.recipients[0].outcome = Some(FinalOutcome::Delivered {
        reply: "250 OK".into(),
        at: std::time::SystemTime::now(),
    });
    spool.save_state(&id, &state).await.unwrap();
    drop(spool);
    // The crash came before the message file was deleted: it must not be delivered again.
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
    assert!(files(&dir.path().join("queue")).is_empty());
}

#[tokio::test]
async fn concurrent_commits_share_directory_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let spool = std::sync::Arc::new(spool);
    let mut tasks = Vec::new();
    for t in 0..20 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..10 {
                let mut inc = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
                inc.write(format!("msg {t} {i}\r\n").as_bytes())
                    .await
                    .unwrap();
                ids.push(inc.commit().await.unwrap());
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200);
    let (_spool2, rec) = Spool::open(&cfg).await.unwrap();
    let mut got: Vec<QueueId> = rec
        .messages
        .iter()
        .map(|m| m.message.id().clone())
        .collect();
    got.sort();
    assert_eq!(got, all);
}

#[tokio::test]
async fn delivered_files_are_reused_cut_to_length_and_dropped_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let mut inc = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    inc.write(&b"long body line\r\n".repeat(500)).await.unwrap();
    let first = inc.commit().await.unwrap();
    spool.mark_in_flight(&first, &[0]).await;
    spool.remove(&first).await.unwrap();
    let free = dir.path().join("free");
    assert_eq!(files(&free).len(), 1, "the delivered file waits for reuse");

    // The next message overwrites it: shorter, so the file must be cut to length, and the
    // old message's in-flight note must not follow it.
    let mut rx = spool.subscribe();
    let mut inc = spool.receive(envelope(&["b@fabrikam.com"])).await.unwrap();
    inc.write(b"short\r\n").await.unwrap();
    let second = inc.commit().await.unwrap();
    assert!(files(&free).is_empty());
    let msg = rx.recv().await.unwrap();
    assert_eq!(msg.read_body().await.unwrap(), b"short\r\n");
    let path = dir.path().join("queue").join(format!("{second}.msg"));
    assert_eq!(mode(&path), 0o600);
    drop(spool);
    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!(rec.messages[0].message.id(), &second);
    assert!(rec.messages[0].possible_duplicates.is_empty());
    assert_eq!(
        rec.messages[0].message.read_body().await.unwrap(),
        b"short\r\n"
    );

    // Files freed by an earlier process are deleted, never reused.
    spool.remove(&second).await.unwrap();
    assert_eq!(files(&free).len(), 1);
    drop(spool);
    let _ = Spool::open(&cfg).await.unwrap();
    assert!(files(&free).is_empty());
}
