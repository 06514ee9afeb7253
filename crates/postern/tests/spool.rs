//! Spool: commit, recovery, crash consistency, state persistence.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use postern::spool::{
    ClientInfo, Envelope, FinalOutcome, MessageState, QueueId, Recipient, Spool, SpoolConfig,
    inspect, inspect_one,
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

/// Commits a message with `body` to `rcpts`.
async fn put(spool: &Spool, rcpts: &[&str], body: &[u8]) -> QueueId {
    let mut inc = spool.receive(envelope(rcpts)).await.unwrap();
    inc.write(body).await.unwrap();
    inc.commit().await.unwrap()
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

    let root = dir.path().join("spool");
    let slots = root.join("slots");
    assert!(files(&root.join("queue")).is_empty());
    assert_eq!(files(&slots), vec!["1".to_owned()]);
    assert_eq!(handed.path(), slots.join("1"));
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("queue")), 0o700);
    assert_eq!(mode(&slots), 0o700);
    assert_eq!(mode(&slots.join("1")), 0o600);
    drop(spool);

    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!(rec.discarded_tmp, 0);
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
    // Past the threshold the bytes are on disk in the message's slot, which is not a
    // committed message yet.
    let slot = dir.path().join("slots/1");
    assert!(std::fs::metadata(&slot).unwrap().len() > 64 * 1024);
    assert!(inspect(dir.path()).unwrap().is_empty());
    let id = inc.commit().await.unwrap();
    assert_eq!(inspect(dir.path()).unwrap().len(), 1);
    drop(spool);
    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!(rec.messages[0].message.id(), &id);
    assert_eq!(rec.messages[0].message.body_len(), expected.len() as u64);
    assert_eq!(rec.messages[0].message.read_body().await.unwrap(), expected);
    // A slot that grew past four spill thresholds is not kept once its message is finished.
    spool.remove(&id).await.unwrap();
    drop(spool);
    assert!(files(&dir.path().join("slots")).is_empty());
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
    // Spilled into a reused slot, aborted: the slot goes back to the pool, marked free.
    let done = put(&spool, &["a@fabrikam.com"], b"done\r\n").await;
    spool.remove(&done).await.unwrap();
    let mut c = spool.receive(envelope(&["a@fabrikam.com"])).await.unwrap();
    c.write(&[b'y'; 2000]).await.unwrap();
    c.abort().await;
    assert!(files(&dir.path().join("queue")).is_empty());
    assert!(inspect(dir.path()).unwrap().is_empty());
    drop(spool);
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
    assert_eq!(rec.discarded_tmp, 0);
}

/// Flips one byte of a file in place.
fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], offset).unwrap();
}

#[tokio::test]
async fn crash_leftovers_are_discarded_or_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let good = put(&spool, &["a@fabrikam.com"], b"whole message\r\n").await;
    let truncated = put(&spool, &["a@fabrikam.com"], b"this one gets truncated\r\n").await;
    let torn = put(&spool, &["a@fabrikam.com"], b"this one gets torn\r\n").await;
    drop(spool);

    let queue = dir.path().join("queue");
    let slots = dir.path().join("slots");
    // A crash while a state was being replaced leaves a .state.tmp; a version 1 relay left a
    // .tmp.
    std::fs::write(queue.join(format!("{good}.state.tmp")), b"{").unwrap();
    let stray = QueueId::generate();
    std::fs::write(queue.join(format!("{stray}.tmp")), b"POSTERN-SPOOL/1 half").unwrap();
    // A slot shorter than its header says, one whose body does not match its checksum (a
    // write torn by a crash: never acknowledged), and one that never got a header.
    let slot_of = |id: &QueueId| {
        files(&slots)
            .into_iter()
            .map(|n| slots.join(n))
            .find(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).contains(id.as_str()))
            .unwrap()
    };
    let tpath = slot_of(&truncated);
    let len = std::fs::metadata(&tpath).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tpath)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let torn_path = slot_of(&torn);
    let len = std::fs::metadata(&torn_path).unwrap().len();
    flip(&torn_path, len - 3);
    std::fs::write(slots.join("77"), b"not a spool slot at all").unwrap();
    // Garbage under a version 1 name.
    let garbage = QueueId::generate();
    std::fs::write(
        queue.join(format!("{garbage}.msg")),
        b"not a spool file at all",
    )
    .unwrap();
    // A state whose message is gone.
    let orphan = QueueId::generate();
    std::fs::write(queue.join(format!("{orphan}.state")), b"{}").unwrap();

    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!(rec.messages[0].message.id(), &good);
    // 2 temporary files, 3 slots without a committed message.
    assert_eq!(rec.discarded_tmp, 5);
    assert_eq!(rec.quarantined.len(), 1);
    assert!(files(&queue).is_empty());
    assert_eq!(
        files(&dir.path().join("corrupt")),
        vec![format!("{garbage}.msg")]
    );
    assert!(!spool.contains(&torn).await);
    // The torn slots are free: the next messages take them, no new slot is created.
    for _ in 0..3 {
        put(&spool, &["a@fabrikam.com"], b"next\r\n").await;
    }
    assert_eq!(files(&slots).len(), 4);
}

#[tokio::test]
async fn state_persists_and_in_flight_means_possible_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let id = put(
        &spool,
        &["a@fabrikam.com", "b@fabrikam.com", "c@fabrikam.com"],
        b"body\r\n",
    )
    .await;

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
    assert!(inspect_one(dir.path(), &id).unwrap().unwrap().state == state);

    // Once every recipient is final the message is gone at once, its state once the free
    // mark is durable (at the latest when the spool is dropped).
    spool.remove(&id).await.unwrap();
    assert!(!spool.contains(&id).await);
    assert!(inspect_one(dir.path(), &id).unwrap().is_none());
    drop(spool);
    assert!(files(&dir.path().join("queue")).is_empty());
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
}

#[tokio::test]
async fn finished_state_left_behind_is_cleaned_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let id = put(&spool, &["a@fabrikam.com"], b"body\r\n").await;
    let mut state = MessageState::new(1);
    state.recipients[0].outcome = Some(FinalOutcome::Delivered {
        reply: "250 OK".into(),
        at: std::time::SystemTime::now(),
    });
    spool.save_state(&id, &state).await.unwrap();
    drop(spool);
    // The crash came before the slot was freed: it must not be delivered again.
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
    assert!(files(&dir.path().join("queue")).is_empty());
    assert!(inspect(dir.path()).unwrap().is_empty());
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
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
async fn slots_are_reused_in_place_by_smaller_and_larger_messages() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let mut rx = spool.subscribe();
    let long = b"long body line\r\n".repeat(500);
    let first = put(&spool, &["a@fabrikam.com"], &long).await;
    let first_msg = rx.recv().await.unwrap();
    spool.mark_in_flight(&first, &[0]).await;
    spool.remove(&first).await.unwrap();

    // The next message overwrites the same slot: shorter, and the old message's in-flight
    // note must not follow it; the finished message cannot be read through its old handle.
    let second = put(&spool, &["b@fabrikam.com"], b"short\r\n").await;
    let msg = rx.recv().await.unwrap();
    assert_eq!(msg.path(), first_msg.path());
    assert_eq!(msg.read_body().await.unwrap(), b"short\r\n");
    assert!(first_msg.read_body().await.is_err());
    assert_eq!(files(&dir.path().join("slots")), vec!["1".to_owned()]);
    assert_eq!(mode(msg.path()), 0o600);
    drop(spool);
    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!(rec.messages[0].message.id(), &second);
    assert!(rec.messages[0].possible_duplicates.is_empty());
    assert_eq!(
        rec.messages[0].message.read_body().await.unwrap(),
        b"short\r\n"
    );

    // A larger one after it, in the same slot again (the free pool survives a restart).
    spool.remove(&second).await.unwrap();
    let longer = b"a longer body line\r\n".repeat(800);
    let third = put(&spool, &["c@fabrikam.com"], &longer).await;
    assert_eq!(files(&dir.path().join("slots")), vec!["1".to_owned()]);
    drop(spool);
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert_eq!(rec.messages.len(), 1);
    assert_eq!(rec.messages[0].message.id(), &third);
    assert_eq!(rec.messages[0].message.read_body().await.unwrap(), longer);
}

#[tokio::test]
async fn free_marker_is_respected_and_a_new_header_over_an_old_body_is_not_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let body = b"delivered already\r\n".repeat(100);
    let done = put(&spool, &["a@fabrikam.com"], &body).await;
    let slot = dir.path().join("slots/1");
    // The slot as it was before the message finished (a valid header).
    let finished = std::fs::read(&slot).unwrap();
    spool.remove(&done).await.unwrap();
    drop(spool);
    // The free marker keeps the finished message from coming back.
    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
    assert_eq!(rec.discarded_tmp, 0);
    let next = put(&spool, &["b@fabrikam.com"], &b"x".repeat(body.len())).await;
    drop(spool);

    // A crash that got the new header (and envelope) to disk but not the new body: the
    // payload checksum rejects the mix, as it does the old header over a new body.
    let committed = std::fs::read(&slot).unwrap();
    let mut mix = committed.clone();
    let tail = body.len();
    let start = mix.len() - tail;
    mix[start..].copy_from_slice(&finished[finished.len() - tail..]);
    std::fs::write(&slot, &mix).unwrap();
    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
    assert_eq!(rec.discarded_tmp, 1);
    assert!(!spool.contains(&next).await);
    drop(spool);
    let mut mix = committed;
    mix[..64].copy_from_slice(&finished[..64]);
    std::fs::write(&slot, &mix).unwrap();
    let (_spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(rec.messages.is_empty());
}

/// A message file as a version 1 relay wrote it.
fn v1_file(env: &Envelope, body: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(env).unwrap();
    let mut out = format!("POSTERN-SPOOL/1 {:020} {:010}\n", body.len(), json.len()).into_bytes();
    out.extend_from_slice(&json);
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn version_1_messages_are_recovered_and_delivered_from_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let free = dir.path().join("free");
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::create_dir_all(&free).unwrap();
    std::fs::write(free.join("3"), b"a delivered file kept for reuse").unwrap();
    let old = QueueId::generate();
    let done = QueueId::generate();
    let body = b"Subject: from version 1\r\n\r\nhello\r\n";
    std::fs::write(
        queue.join(format!("{old}.msg")),
        v1_file(&envelope(&["a@fabrikam.com", "b@fabrikam.com"]), body),
    )
    .unwrap();
    // One with a recorded outcome for a, and one already finished.
    let mut state = MessageState::new(2);
    state.recipients[0].outcome = Some(FinalOutcome::Delivered {
        reply: "250 OK".into(),
        at: std::time::SystemTime::now(),
    });
    std::fs::write(
        queue.join(format!("{old}.state")),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    std::fs::write(
        queue.join(format!("{done}.msg")),
        v1_file(&envelope(&["a@fabrikam.com"]), b"done\r\n"),
    )
    .unwrap();
    let mut fin = MessageState::new(1);
    fin.recipients[0].outcome = state.recipients[0].outcome.clone();
    std::fs::write(
        queue.join(format!("{done}.state")),
        serde_json::to_vec(&fin).unwrap(),
    )
    .unwrap();
    assert_eq!(inspect(dir.path()).unwrap().len(), 2);

    let cfg = SpoolConfig::new(dir.path());
    let (spool, rec) = Spool::open(&cfg).await.unwrap();
    assert!(!free.exists());
    assert_eq!(rec.messages.len(), 1);
    let m = &rec.messages[0];
    assert_eq!(m.message.id(), &old);
    assert_eq!(m.state, state);
    assert_eq!(m.message.read_body().await.unwrap(), body);
    assert!(spool.contains(&old).await);
    assert_eq!(
        inspect_one(dir.path(), &old)
            .unwrap()
            .unwrap()
            .message
            .body_len(),
        body.len() as u64
    );
    // New mail goes to slots beside it; finishing the old one deletes its file.
    let new = put(&spool, &["c@fabrikam.com"], b"new\r\n").await;
    spool.remove(&old).await.unwrap();
    assert!(files(&queue).is_empty());
    let ids: Vec<QueueId> = inspect(dir.path())
        .unwrap()
        .iter()
        .map(|m| m.message.id().clone())
        .collect();
    assert_eq!(ids, vec![new]);
}

#[tokio::test]
async fn inspect_finds_messages_by_id_among_slots() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            put(
                &spool,
                &["a@fabrikam.com"],
                format!("message {i}\r\n").as_bytes(),
            )
            .await,
        );
    }
    spool.remove(&ids[1]).await.unwrap();
    spool.mark_in_flight(&ids[3], &[0]).await;
    for (i, id) in ids.iter().enumerate() {
        let found = inspect_one(dir.path(), id).unwrap();
        if i == 1 {
            assert!(found.is_none());
            continue;
        }
        let found = found.unwrap();
        assert_eq!(found.message.id(), id);
        assert_eq!(found.in_flight, i == 3);
        assert_eq!(
            found.message.read_body().await.unwrap(),
            format!("message {i}\r\n").as_bytes()
        );
    }
    assert!(
        inspect_one(dir.path(), &QueueId::generate())
            .unwrap()
            .is_none()
    );
    let listed: Vec<QueueId> = inspect(dir.path())
        .unwrap()
        .iter()
        .map(|m| m.message.id().clone())
        .collect();
    assert_eq!(
        listed,
        vec![
            ids[0].clone(),
            ids[2].clone(),
            ids[3].clone(),
            ids[4].clone()
        ]
    );
}

#[tokio::test]
async fn open_body_serves_a_small_message_from_memory_and_refuses_a_finished_or_cut_slot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig::new(dir.path());
    let (spool, _) = Spool::open(&cfg).await.unwrap();
    let mut rx = spool.subscribe();
    let body = b"line of a small message\r\n".repeat(4000);
    let id = put(&spool, &["a@fabrikam.com"], &body).await;
    let msg = rx.recv().await.unwrap();
    let reader = msg.open_body().await.unwrap();
    assert_eq!(reader.remaining_in_memory(), Some(&body[..]));

    // Cut short behind the spool's back: an error, never a short body.
    let slot = std::fs::OpenOptions::new()
        .write(true)
        .open(msg.path())
        .unwrap();
    slot.set_len(std::fs::metadata(msg.path()).unwrap().len() - 10)
        .unwrap();
    let err = msg.open_body().await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);

    // Finished: the slot says free, and the old handle cannot read it.
    spool.remove(&id).await.unwrap();
    assert_eq!(
        msg.open_body().await.unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}
