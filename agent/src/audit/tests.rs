//! Tests of the audit log against real files in temp dirs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_proto::audit_chain::{ChainErrorKind, GENESIS_PREV, check_witness, line_hash};
use gantry_proto::keys::SigningKey;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::reader::tail_until;
use super::writer::Fault;
use super::*;

const ENOSPC: i32 = 28;
const EIO: i32 = 5;
/// The writer's retry interval after a failure (`writer::RETRY_AFTER`).
const RETRY_AFTER_TEST: Duration = Duration::from_millis(100);

fn opts(dir: &Path) -> AuditOptions {
    AuditOptions {
        dir: dir.to_owned(),
        checkpoint_every: 0,
        checkpoint_interval: Duration::ZERO,
        max_file_bytes: 64 << 20,
        min_free_bytes: 0,
    }
}

fn key() -> Arc<SigningKey> {
    Arc::new(SigningKey::generate().unwrap())
}

fn open(o: AuditOptions, key: &Arc<SigningKey>) -> (AuditLog, Option<Recovery>) {
    AuditLog::open(o, Arc::clone(key)).unwrap()
}

fn entry(n: u64) -> Entry {
    Entry::new("job.step")
        .with("job_id", format!("job-{n}"))
        .with("n", n)
}

/// Every complete line of every log file, in order.
fn all_lines(dir: &Path) -> Vec<String> {
    read_lines(dir, 1)
        .unwrap()
        .into_iter()
        .map(|(_, l)| l)
        .collect()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    recover::list_files(dir)
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn lines_start_with_the_header_and_chain_from_genesis() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let key = key();
    let (log, recovery) = open(opts(&dir), &key);
    assert!(recovery.is_none());
    let a = log
        .append(
            Entry::new("job.accepted")
                .with("job", "deploy-1")
                .with("app", "web")
                .with("version", json!("1.1.0")),
        )
        .await
        .unwrap();
    let b = log.append(entry(2)).await.unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));

    let lines = all_lines(&dir);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(r#"{"seq":1,"ts":""#), "{}", lines[0]);
    let want_tail = format!(
        r#","prev":"{GENESIS_PREV}","event":"job.accepted","job":"deploy-1","app":"web","version":"1.1.0"}}"#
    );
    assert!(lines[0].ends_with(&want_tail), "{}", lines[0]);
    let ts = parse(&lines[0])["ts"].as_str().unwrap().to_owned();
    assert!(
        humantime::parse_rfc3339(&ts).is_ok() && ts.ends_with('Z') && ts.len() == 24,
        "{ts}"
    );
    assert_eq!(a.hash, line_hash(lines[0].as_bytes()));
    assert_eq!(parse(&lines[1])["prev"], json!(a.hash));

    // The directory and the file are private.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let file = &log_files(&dir)[0];
    assert_eq!(
        file.file_name().unwrap(),
        "audit-00000000000000000001.jsonl"
    );
    assert_eq!(
        fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    log.close().await.unwrap();
    let summary = verify_dir(&dir, Some(&key.public_key())).unwrap();
    assert_eq!(
        (
            summary.entries,
            summary.checkpoints,
            summary.last_checkpoint_seq
        ),
        (3, 1, Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    let (writers, each) = (64u64, 8u64);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..each {
                seqs.push(log.append(entry(w * 100 + i)).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    let total = writers * each;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    let syncs = log.syncs();
    assert!(
        syncs * 4 <= total,
        "{syncs} syncs for {total} entries: appends were not batched"
    );
    assert_eq!(verify_dir(tmp.path(), None).unwrap().entries, total);
}

#[tokio::test]
async fn reopening_continues_seq_and_prev() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    log.append(entry(1)).await.unwrap();
    log.append(entry(2)).await.unwrap();
    log.close().await.unwrap(); // seq 3: the shutdown checkpoint

    let (log, recovery) = open(opts(tmp.path()), &key);
    assert!(recovery.is_none());
    assert_eq!(
        log.latest_checkpoint().unwrap().seq,
        3,
        "the checkpoint found at open"
    );
    let next = log.append(entry(4)).await.unwrap();
    assert_eq!(next.seq, 4);
    let lines = all_lines(tmp.path());
    assert_eq!(
        parse(&lines[3])["prev"],
        json!(line_hash(lines[2].as_bytes()))
    );
    drop(log);
    // Dropping every handle seals too.
    wait_until("the drop checkpoint is written", || {
        all_lines(tmp.path()).len() == 5
    });
    assert_eq!(
        verify_dir(tmp.path(), Some(&key.public_key()))
            .unwrap()
            .checkpoints,
        2
    );
}

#[tokio::test]
async fn rotation_names_files_by_first_seq_and_the_chain_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let o = AuditOptions {
        max_file_bytes: 400,
        ..opts(tmp.path())
    };
    let (log, _) = open(o.clone(), &key);
    for n in 1..=12 {
        assert_eq!(log.append(entry(n)).await.unwrap().seq, n);
    }
    log.close().await.unwrap();
    let files = recover::list_files(tmp.path()).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let first = read_lines(tmp.path(), f.first_seq).unwrap()[0].0;
        assert_eq!(first, f.first_seq, "{}", f.path.display());
        assert_eq!(
            f.path.file_name().unwrap().to_str().unwrap(),
            recover::file_name(f.first_seq)
        );
    }
    // Reading from a seq skips earlier files and starts exactly there.
    let from7: Vec<u64> = read_lines(tmp.path(), 7)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(from7, (7..=13).collect::<Vec<_>>());

    let (log, _) = open(o, &key);
    assert_eq!(log.append(entry(14)).await.unwrap().seq, 14);
    log.close().await.unwrap();
    let summary = verify_dir(tmp.path(), Some(&key.public_key())).unwrap();
    assert_eq!(summary.last_seq, 15);
}

#[tokio::test]
async fn torn_tail_is_set_aside_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    log.append(entry(1)).await.unwrap();
    log.append(entry(2)).await.unwrap();
    drop(log);
    wait_until("the drop checkpoint is written", || {
        all_lines(tmp.path()).len() == 3
    });
    let file = log_files(tmp.path()).pop().unwrap();
    let torn = br#"{"seq":4,"ts":"2026-11-26T12:00:01.123Z","prev":"ab"#;
    fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(torn)
        .unwrap();

    let (log, recovery) = open(opts(tmp.path()), &key);
    let recovery = recovery.expect("a torn tail is reported");
    assert_eq!(recovery.bytes, torn.len() as u64);
    assert_eq!(fs::read(&recovery.moved_to).unwrap(), torn);
    let name = recovery
        .moved_to
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        name.starts_with("torn-") && name.ends_with(".partial"),
        "{name}"
    );

    let lines = all_lines(tmp.path());
    let rec = parse(&lines[3]);
    assert_eq!(rec["seq"], 4);
    assert_eq!(rec["event"], "audit.recovered");
    assert_eq!(
        rec["moved_to"],
        json!(recovery.moved_to.display().to_string())
    );
    assert_eq!(rec["bytes"], json!(torn.len()));
    assert_eq!(rec["after_seq"], 3);
    assert_eq!(log.append(entry(5)).await.unwrap().seq, 5);
    log.close().await.unwrap();
    verify_dir(tmp.path(), Some(&key.public_key())).unwrap();
}

#[tokio::test]
async fn a_new_file_holding_only_a_torn_line_continues_from_the_file_before() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    log.append(entry(1)).await.unwrap();
    log.close().await.unwrap(); // seq 2 is the checkpoint
    // A crash right after rotation, mid-way through the new file's first line.
    let next = tmp.path().join(recover::file_name(3));
    fs::write(&next, br#"{"seq":3,"#).unwrap();

    let (log, recovery) = open(opts(tmp.path()), &key);
    assert_eq!(recovery.unwrap().bytes, 9);
    let lines = read_lines(tmp.path(), 3).unwrap();
    assert_eq!(lines.len(), 1);
    let rec = parse(&lines[0].1);
    assert_eq!(
        (rec["seq"].as_u64(), rec["after_seq"].as_u64()),
        (Some(3), Some(2))
    );
    log.close().await.unwrap();
    assert_eq!(
        verify_dir(tmp.path(), Some(&key.public_key()))
            .unwrap()
            .last_seq,
        4
    );
}

#[tokio::test]
async fn an_invalid_last_line_is_set_aside_but_a_bad_middle_line_stops_open() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    log.append(entry(1)).await.unwrap();
    log.close().await.unwrap();
    let file = log_files(tmp.path()).pop().unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(b"\0\0garbage\n")
        .unwrap();

    let (log, recovery) = open(opts(tmp.path()), &key);
    assert_eq!(recovery.unwrap().bytes, 10);
    let rec = parse(&all_lines(tmp.path())[2]);
    assert_eq!(
        (rec["event"].as_str(), rec["after_seq"].as_u64()),
        (Some("audit.recovered"), Some(2))
    );
    log.close().await.unwrap();
    verify_dir(tmp.path(), None).unwrap();

    // Damage in the middle is not a torn write: refuse to start, naming file and line.
    let text = fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "not json";
    fs::write(&file, lines.join("\n") + "\n").unwrap();
    match AuditLog::open(opts(tmp.path()), Arc::clone(&key)) {
        Err(AuditError::Corrupt { path, line, .. }) => assert_eq!((path, line), (file, 2)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn checkpoints_every_n_entries_verify_with_the_agents_key() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let o = AuditOptions {
        checkpoint_every: 3,
        ..opts(tmp.path())
    };
    let (log, _) = open(o, &key);
    for n in 1..=6 {
        log.append(entry(n)).await.unwrap();
    }
    let lines = all_lines(tmp.path());
    let events: Vec<String> = lines
        .iter()
        .map(|l| parse(l)["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events[3], "checkpoint");
    assert_eq!(events[7], "checkpoint");
    let cp = parse(&lines[7]);
    assert_eq!(cp["key_id"], json!(key.key_id().as_str()));
    let keys: Vec<&str> = cp.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6);
    assert!(
        lines[7].contains(r#""event":"checkpoint","key_id":""#),
        "{}",
        lines[7]
    );
    assert_eq!(
        log.latest_checkpoint(),
        Some(CheckpointLine {
            seq: 8,
            line: lines[7].clone()
        })
    );

    // Nothing since the last one: checkpoint() returns it instead of writing another.
    assert_eq!(log.checkpoint().await.unwrap().seq, 8);
    log.append(entry(7)).await.unwrap();
    let cp = log.checkpoint().await.unwrap();
    assert_eq!(cp.seq, 10);
    check_witness(all_lines(tmp.path()), cp.seq, &cp.line).unwrap();
    log.close().await.unwrap();
    assert_eq!(
        all_lines(tmp.path()).len(),
        10,
        "close after a checkpoint adds nothing"
    );

    let summary = verify_dir(tmp.path(), Some(&key.public_key())).unwrap();
    assert_eq!(
        (summary.checkpoints, summary.unsealed_after_checkpoint),
        (3, 0)
    );
    let other = SigningKey::generate().unwrap().public_key();
    match verify_dir(tmp.path(), Some(&other)) {
        Err(AuditError::Chain { source, .. }) => {
            assert_eq!(source.seq, 4);
            assert!(matches!(
                source.kind,
                ChainErrorKind::UnknownCheckpointKey { .. }
            ));
        }
        other => panic!("expected a chain error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_timer_seals_only_when_something_was_appended() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let o = AuditOptions {
        checkpoint_interval: Duration::from_millis(30),
        ..opts(tmp.path())
    };
    let (log, _) = open(o, &key);
    log.append(entry(1)).await.unwrap();
    wait_until("the timer writes a checkpoint", || {
        log.latest_checkpoint().is_some_and(|c| c.seq == 2)
    });
    let syncs = log.syncs();
    // Several idle intervals: nothing to seal, nothing written.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(log.syncs(), syncs);
    assert_eq!(all_lines(tmp.path()).len(), 2);
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_write_fails_closed_leaves_no_torn_line_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    let first = log.append(entry(1)).await.unwrap();
    let file = log_files(tmp.path()).pop().unwrap();
    let durable = fs::metadata(&file).unwrap().len();

    log.inject(vec![Fault::ShortWrite(ENOSPC)]);
    let err = log.append(entry(2)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AuditError::Unavailable { .. }), "{err:?}");
    assert!(
        msg.starts_with("audit log unavailable: cannot write") && msg.contains("No space left"),
        "{msg}"
    );
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        durable,
        "the half-written batch was cut back"
    );
    assert_eq!(log.health().unwrap_err().to_string(), msg);

    // Within the retry interval, appends fail at once without touching the disk.
    let syncs = log.syncs();
    assert!(matches!(
        log.append(entry(3)).await,
        Err(AuditError::Unavailable { .. })
    ));
    assert_eq!(log.syncs(), syncs);

    // Then a retry succeeds and the chain continues where the durable log ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        match log.append(entry(4)).await {
            Ok(a) => break a,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("never recovered: {e}"),
        }
    };
    // The recovery is recorded first (audit.resumed), then the entry.
    assert_eq!(next.seq, first.seq + 2);
    let lines = all_lines(tmp.path());
    let resumed = parse(&lines[first.seq as usize]);
    assert_eq!(resumed["event"], "audit.resumed");
    assert!(
        resumed["cause"].as_str().unwrap().contains("No space left"),
        "{resumed}"
    );
    log.health().unwrap();
    log.close().await.unwrap();
    verify_dir(tmp.path(), Some(&key.public_key())).unwrap();
}

#[tokio::test]
async fn a_failed_sync_that_cannot_be_cut_back_stays_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    log.append(entry(1)).await.unwrap();
    log.inject(vec![Fault::Sync(EIO), Fault::Truncate(EIO)]);
    let msg = log.append(entry(2)).await.unwrap_err().to_string();
    assert!(
        msg.contains("cannot sync") && msg.contains("cannot cut it back"),
        "{msg}"
    );
    assert!(log.fatal().is_some_and(|c| msg.ends_with(&c)), "{msg}");
    std::thread::sleep(Duration::from_millis(250)); // past the retry interval
    assert!(matches!(
        log.append(entry(3)).await,
        Err(AuditError::Unavailable { .. })
    ));
    assert!(log.health().is_err());
    assert!(matches!(
        log.close().await,
        Err(AuditError::Unavailable { .. })
    ));
    // The next start sees a log that still verifies (the unsynced lines are whole here).
    let (log, _) = open(opts(tmp.path()), &key);
    log.append(entry(4)).await.unwrap();
    drop(log);
    wait_until("sealed", || {
        verify_dir(tmp.path(), None).is_ok_and(|s| s.checkpoints == 1)
    });
}

#[tokio::test]
async fn h4_a_failed_fdatasync_is_never_retried_and_the_log_fails_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    let first = log.append(entry(1)).await.unwrap();
    assert_eq!(log.fatal(), None);
    let file = log_files(tmp.path()).pop().unwrap();
    let durable = fs::metadata(&file).unwrap().len();

    log.inject(vec![Fault::Sync(EIO)]);
    let err = log.append(entry(2)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "audit log unavailable: cannot sync {}: EIO",
            file.display()
        )) && msg.contains("stops"),
        "{msg}"
    );
    assert!(!msg.contains("cannot cut it back"), "{msg}");
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        durable,
        "the batch whose sync failed was cut back"
    );
    let cause = tokio::time::timeout(Duration::from_secs(10), log.failed_for_good())
        .await
        .expect("failed_for_good resolves");
    assert!(msg.ends_with(&cause), "{cause}");
    assert_eq!(log.fatal(), Some(cause));

    // Past the retry and probe intervals: no write and no fdatasync is ever tried again.
    let syncs = log.syncs();
    std::thread::sleep(RETRY_AFTER_TEST + PROBE_EVERY);
    assert!(matches!(
        log.append(entry(3)).await,
        Err(AuditError::Unavailable { .. })
    ));
    // Not even held: nothing will ever write it.
    assert!(matches!(
        log.append_held(entry(3)).await,
        Err(AuditError::Unavailable { .. })
    ));
    assert_eq!(log.held(), 0);
    assert!(matches!(
        log.checkpoint().await,
        Err(AuditError::Unavailable { .. })
    ));
    assert_eq!(log.syncs(), syncs);
    assert_eq!(fs::metadata(&file).unwrap().len(), durable);
    assert_eq!(log.health().unwrap_err().to_string(), msg);
    assert!(matches!(
        log.close().await,
        Err(AuditError::Unavailable { .. })
    ));

    // The next start checks the tail again and continues from the last durable entry.
    let (log, recovery) = open(opts(tmp.path()), &key);
    assert_eq!(recovery, None);
    assert_eq!(log.fatal(), None);
    assert_eq!(log.append(entry(4)).await.unwrap().seq, first.seq + 1);
    log.close().await.unwrap();
    verify_dir(tmp.path(), Some(&key.public_key())).unwrap();
}

#[tokio::test]
async fn h4_at_start_a_line_that_does_not_chain_to_the_one_before_stops_open() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    for n in 1..=3 {
        log.append(entry(n)).await.unwrap();
    }
    drop(log);
    let file = log_files(tmp.path()).pop().unwrap();
    wait_until("sealed", || {
        verify_dir(tmp.path(), None).is_ok_and(|s| s.checkpoints == 1)
    });
    // Seq 2 is whole and well-formed but not what seq 3 chains to (a block the disk lost and
    // had from elsewhere, or an edit).
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, text.replacen("job-2", "job-X", 1)).unwrap();
    let err = AuditLog::open(opts(tmp.path()), Arc::clone(&key)).unwrap_err();
    match &err {
        AuditError::Corrupt { path, line, reason } => {
            assert_eq!(path, &file);
            assert_eq!(*line, 3);
            assert_eq!(reason, "seq 3: prev is not the hash of seq 2");
        }
        other => panic!("{other:?}"),
    }
    // Nothing was set aside or appended.
    assert_eq!(fs::read_to_string(&file).unwrap().lines().count(), 4);
    assert_eq!(log_files(tmp.path()).len(), 1);
}

#[tokio::test]
async fn a_failed_batch_is_neither_published_nor_counted_as_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    let mut rx = log.subscribe();
    log.append(entry(1)).await.unwrap();
    log.inject(vec![Fault::Write(EIO)]);
    assert!(matches!(
        log.checkpoint().await,
        Err(AuditError::Unavailable { .. })
    ));
    assert_eq!(log.latest_checkpoint(), None);
    assert_eq!(rx.recv().await.unwrap().0, 1);
    assert!(
        rx.try_recv().is_err(),
        "nothing of the failed batch reached subscribers"
    );
    assert_eq!(all_lines(tmp.path()).len(), 1);
}

/// A 64 KiB tmpfs, unmounted on drop; `None` when mounting is not allowed here.
struct SmallFs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl SmallFs {
    fn mount() -> Option<SmallFs> {
        let tmp = tempfile::tempdir().ok()?;
        let at = tmp.path().join("fs");
        fs::create_dir(&at).ok()?;
        let ok = Process::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(&at)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| SmallFs(at, tmp))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_closed_and_health_says_why() {
    let Some(fs_) = SmallFs::mount() else {
        eprintln!(
            "SKIPPED a_full_disk_fails_closed_and_health_says_why: cannot mount a tmpfs (needs root)"
        );
        return;
    };
    let dir = fs_.0.join("audit");
    let key = key();
    let o = AuditOptions {
        min_free_bytes: 16 << 10,
        ..opts(&dir)
    };
    let (log, _) = open(o, &key);
    log.health().unwrap();
    let filler = "x".repeat(1500);
    let mut last_ok = 0;
    let err = loop {
        match log
            .append(entry(last_ok + 1).with("filler", filler.as_str()))
            .await
        {
            Ok(a) => last_ok = a.seq,
            Err(e) => break e,
        }
        assert!(last_ok < 100, "a 64 KiB filesystem never filled up");
    };
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let health = log.health().unwrap_err().to_string();
    assert!(health.starts_with("audit log unavailable:"), "{health}");
    assert!(matches!(
        log.append(entry(0)).await,
        Err(AuditError::Unavailable { .. })
    ));
    drop(log);
    // Whatever is on disk ends with a whole line and verifies.
    let file = log_files(&dir).pop().unwrap();
    assert!(fs::read(&file).unwrap().ends_with(b"\n"));
    let summary = verify_dir(&dir, None).unwrap();
    assert!(summary.last_seq >= last_ok);

    // Below min_free_bytes, health fails before writes do.
    let (log, _) = AuditLog::open(
        AuditOptions {
            min_free_bytes: 1 << 20,
            ..opts(&dir)
        },
        key,
    )
    .unwrap();
    let low = log.health().unwrap_err();
    assert!(matches!(low, AuditError::LowSpace { .. }), "{low:?}");
    assert!(
        low.to_string().starts_with("audit log unavailable: only "),
        "{low}"
    );
}

#[tokio::test]
async fn subscribers_get_every_durable_line() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    let mut rx = log.subscribe();
    log.append(entry(1)).await.unwrap();
    let cp = log.checkpoint().await.unwrap();
    let lines = all_lines(tmp.path());
    let got = rx.recv().await.unwrap();
    assert_eq!(*got, (1, lines[0].clone()));
    let got = rx.recv().await.unwrap();
    assert_eq!(*got, (cp.seq, cp.line));
    log.close().await.unwrap();
}

#[tokio::test]
async fn reserved_names_are_refused_and_closed_logs_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = open(opts(tmp.path()), &key());
    for bad in [
        Entry::new("checkpoint"),
        Entry::new(""),
        Entry::new("job.step").with("prev", "x"),
    ] {
        assert!(matches!(
            log.append(bad).await,
            Err(AuditError::InvalidEntry { .. })
        ));
    }
    let other = log.clone();
    log.close().await.unwrap();
    assert!(matches!(
        other.append(entry(1)).await,
        Err(AuditError::Closed)
    ));
    assert!(all_lines(tmp.path()).is_empty());
}

#[tokio::test]
async fn verify_names_the_first_altered_entry_and_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    for n in 1..=4 {
        log.append(entry(n)).await.unwrap();
    }
    log.close().await.unwrap();
    let file = log_files(tmp.path()).pop().unwrap();
    let text = fs::read_to_string(&file)
        .unwrap()
        .replace(r#""job_id":"job-2""#, r#""job_id":"job-X""#);
    fs::write(&file, text).unwrap();
    match verify_dir(tmp.path(), Some(&key.public_key())) {
        Err(AuditError::Chain { file: f, source }) => {
            assert_eq!((f, source.seq), (file, 2));
        }
        other => panic!("expected a chain error, got {other:?}"),
    }
}

#[test]
fn human_format_is_one_readable_line() {
    let line = format!(
        r#"{{"seq":42,"ts":"2026-11-26T12:00:01.123Z","prev":"{GENESIS_PREV}","event":"job.accepted","job":"deploy-1","app":"web","action":"deploy","version":"1.1.0","strategy":"hot"}}"#
    );
    assert_eq!(
        format_human(&line),
        "2026-11-26T12:00:01.123Z  #42  job.accepted  job=deploy-1 app=web action=deploy version=1.1.0 strategy=hot"
    );
    let line = format!(
        r#"{{"seq":1,"ts":"T","prev":"{GENESIS_PREV}","event":"job.rejected","reason":"bad signature","keys":["a","b"],"n":3}}"#
    );
    assert_eq!(
        format_human(&line),
        r#"T  #1  job.rejected  reason="bad signature" keys=["a","b"] n=3"#
    );
    assert_eq!(format_human("garbage"), "(not an audit entry)  garbage");
}

proptest! {
    #[test]
    fn human_format_never_panics(line in any::<String>()) {
        let _ = format_human(&line);
    }
}

/// A `Write` the test can read while `tail` writes.
#[derive(Clone, Default)]
struct SharedOut(Arc<Mutex<Vec<u8>>>);

impl SharedOut {
    fn text(&self) -> String {
        String::from_utf8(lock(&self.0).clone()).unwrap()
    }
}

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_the_last_lines_and_follows_across_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let key = key();
    let o = AuditOptions {
        max_file_bytes: 300,
        ..opts(&dir)
    };
    let (log, _) = open(o, &key);
    for n in 1..=5 {
        log.append(entry(n)).await.unwrap();
    }
    assert!(log_files(&dir).len() >= 2);

    let mut out = Vec::new();
    tail(&dir, 3, false, true, &mut out).unwrap();
    let printed: Vec<u64> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| parse(l)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(printed, vec![3, 4, 5]);

    let out = SharedOut::default();
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let (out, done, dir) = (out.clone(), Arc::clone(&done), dir.clone());
        std::thread::spawn(move || {
            let mut w = out;
            tail_until(
                &dir,
                1,
                true,
                false,
                &mut w,
                Duration::from_millis(10),
                &|| done.load(Ordering::Relaxed),
            )
        })
    };
    wait_until("tail shows the last line", || out.text().contains("  #5  "));
    for n in 6..=12 {
        log.append(entry(n)).await.unwrap();
    }
    wait_until("tail follows to seq 12", || {
        out.text().contains("  #12  job.step  job_id=job-12 n=12")
    });
    done.store(true, Ordering::Relaxed);
    follower.join().unwrap().unwrap();
    let seqs: Vec<String> = out
        .text()
        .lines()
        .map(|l| l.split("  ").nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(
        seqs,
        (5..=12).map(|n| format!("#{n}")).collect::<Vec<_>>(),
        "each line once, in order"
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn held_entries_wait_for_the_disk_and_are_written_in_order_by_the_writer_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    let first = log.append(entry(1)).await.unwrap();
    assert!(matches!(
        log.append_held(entry(2)).await.unwrap(),
        HeldAppend::Written(Appended { seq: 2, .. })
    ));

    // Three failed attempts: the append that hits the fault, then two probes.
    log.inject(vec![
        Fault::Write(ENOSPC),
        Fault::Write(ENOSPC),
        Fault::Write(ENOSPC),
    ]);
    assert!(matches!(
        log.append(entry(3)).await,
        Err(AuditError::Unavailable { .. })
    ));
    for n in [4, 5] {
        match log.append_held(entry(n)).await.unwrap() {
            HeldAppend::Held { queued, cause } => {
                assert_eq!(queued as u64, n - 3);
                assert!(cause.contains("No space left"), "{cause}");
            }
            other => panic!("entry {n} was not held: {other:?}"),
        }
    }
    assert_eq!(log.held(), 2);
    assert!(log.health().is_err());

    // No new work arrives: the writer's own retries write them once the disk takes writes.
    wait_until("the held entries are written", || {
        log.held() == 0 && log.health().is_ok()
    });
    let lines: Vec<Value> = all_lines(tmp.path()).iter().map(|l| parse(l)).collect();
    let events: Vec<(&str, Option<u64>)> = lines
        .iter()
        .map(|l| (l["event"].as_str().unwrap(), l["n"].as_u64()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("job.step", Some(1)),
            ("job.step", Some(2)),
            ("audit.resumed", None),
            ("job.step", Some(4)),
            ("job.step", Some(5)),
        ],
        "entry 3 was refused (append), 4 and 5 held (append_held)"
    );
    assert_eq!(lines[2]["held"], 2);
    assert_eq!(lines[2]["dropped"], 0);
    assert!(lines[2]["failed_since"].is_string());
    assert!(lines[3]["held_at"].is_string() && lines[4]["held_at"].is_string());
    assert_eq!(lines[0]["seq"], first.seq);

    // And the log goes on normally.
    assert_eq!(log.append(entry(6)).await.unwrap().seq, 6);
    log.close().await.unwrap();
    verify_dir(tmp.path(), Some(&key.public_key())).unwrap();
}

#[tokio::test]
async fn a_full_held_queue_refuses_and_counts_what_it_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let (log, _) = open(opts(tmp.path()), &key);
    log.append(entry(0)).await.unwrap();
    // Enough failures to outlast the probes while the queue fills.
    log.inject(vec![Fault::Write(EIO); 400]);
    assert!(log.append(entry(0)).await.is_err());
    for n in 0..MAX_HELD as u64 {
        assert!(matches!(
            log.append_held(entry(n)).await.unwrap(),
            HeldAppend::Held { .. }
        ));
    }
    let full = log.append_held(entry(99_999)).await.unwrap_err();
    assert!(
        matches!(full, AuditError::HeldFull { held: MAX_HELD, .. }),
        "{full:?}"
    );
    let msg = full.to_string();
    assert!(
        msg.starts_with("audit log unavailable: ") && msg.contains("dropped"),
        "{msg}"
    );
    drop(log);
}

#[tokio::test]
async fn append_held_refuses_reserved_events() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = open(opts(tmp.path()), &key());
    for event in ["checkpoint", "audit.resumed"] {
        assert!(matches!(
            log.append_held(Entry::new(event)).await,
            Err(AuditError::InvalidEntry { .. })
        ));
    }
}

#[tokio::test]
async fn a_symlinked_audit_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    fs::create_dir(&dir).unwrap();
    let elsewhere = tmp.path().join("elsewhere.jsonl");
    fs::write(&elsewhere, "").unwrap();
    let link = dir.join(recover::file_name(1));
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let err = AuditLog::open(opts(&dir), key()).unwrap_err();
    let msg = strategy_reason(&err);
    assert!(
        msg.contains(&link.display().to_string()) && msg.contains("symbolic links"),
        "{msg}"
    );
    assert_eq!(
        fs::read(&elsewhere).unwrap(),
        b"",
        "nothing written through the link"
    );
}

fn strategy_reason(e: &AuditError) -> String {
    crate::error::reason(e)
}

#[tokio::test]
async fn h9_an_audit_file_removed_under_the_writer_fails_closed_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = open(opts(tmp.path()), &key());
    log.append(entry(1)).await.unwrap();
    let file = log_files(tmp.path()).remove(0);
    fs::remove_file(&file).unwrap();
    let err = log.append(entry(2)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AuditError::Unavailable { .. }), "{err:?}");
    assert!(
        text.contains(&format!("{} was removed", file.display())) && text.contains("restart"),
        "{text}"
    );
    // Permanent: later appends fail at once with the same cause, and nothing reappears.
    let again = log.append(entry(3)).await.unwrap_err();
    assert_eq!(again.to_string(), text);
    assert!(log.health().is_err());
    assert!(!file.exists());
}

#[tokio::test]
async fn h9_an_audit_file_replaced_under_the_writer_fails_closed_and_the_copy_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = open(opts(tmp.path()), &key());
    log.append(entry(1)).await.unwrap();
    let file = log_files(tmp.path()).remove(0);
    let forged = tmp.path().join("forged");
    fs::write(&forged, b"{\"forged\":true}\n").unwrap();
    fs::rename(&forged, &file).unwrap();
    let err = log.append(entry(2)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{} was replaced by another file", file.display())),
        "{err}"
    );
    assert_eq!(fs::read(&file).unwrap(), b"{\"forged\":true}\n");
}
