//! Durable audit appends per second: 64 concurrent writers through the group-committing
//! [`AuditLog`] against a naive loop that calls fdatasync once per entry, on the same disk.
//!
//! `cargo bench -p gantry-agent --bench audit`. The files go under `GANTRY_BENCH_DIR` if set,
//! else under cargo's target tmp dir (not /tmp, which may be a tmpfs where fdatasync is free).
//! After criterion's report, a plain timed run prints both rates and their ratio.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use gantry_agent::audit::{AuditLog, AuditOptions, Entry};
use gantry_proto::audit_chain::{GENESIS_PREV, line_hash};
use gantry_proto::keys::SigningKey;
use tokio::runtime::Runtime;

const WRITERS: u64 = 64;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("GANTRY_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&base).expect("create the bench directory");
    tempfile::tempdir_in(base).expect("create a temp dir for the bench")
}

fn entry(n: u64) -> Entry {
    Entry::new("job.step")
        .with("job_id", "deploy-20261126-1")
        .with("app", "web")
        .with("step", "instance.started")
        .with("n", n)
}

/// A log with neither checkpoints nor rotation getting in the way of the measurement.
fn open_log(rt: &Runtime) -> (AuditLog, tempfile::TempDir) {
    let dir = bench_dir();
    let key = Arc::new(SigningKey::generate().expect("generate a key"));
    let opts = AuditOptions {
        dir: dir.path().join("audit"),
        checkpoint_every: 0,
        checkpoint_interval: Duration::ZERO,
        max_file_bytes: u64::MAX,
        min_free_bytes: 0,
    };
    let _guard = rt.enter();
    let (log, _) = AuditLog::open(opts, key).expect("open the audit log");
    (log, dir)
}

/// `total` appends spread over [`WRITERS`] concurrent tasks.
fn group_commit(rt: &Runtime, log: &AuditLog, total: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(WRITERS as usize);
        for w in 0..WRITERS {
            let log = log.clone();
            let n = total / WRITERS + u64::from(w < total % WRITERS);
            tasks.push(tokio::spawn(async move {
                for i in 0..n {
                    log.append(entry(i)).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
        start.elapsed()
    })
}

/// The naive way: build the same kind of chained line, write it, fdatasync, one at a time.
struct Naive {
    file: File,
    seq: u64,
    prev: String,
    buf: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Naive {
    fn new() -> Self {
        let dir = bench_dir();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("naive.jsonl"))
            .expect("open the naive log");
        Naive {
            file,
            seq: 0,
            prev: GENESIS_PREV.to_owned(),
            buf: Vec::with_capacity(512),
            _dir: dir,
        }
    }

    fn append(&mut self, n: u64) {
        self.seq += 1;
        self.buf.clear();
        let line = serde_json::json!({
            "seq": self.seq,
            "ts": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "prev": self.prev,
            "event": "job.step",
            "job_id": "deploy-20261126-1",
            "app": "web",
            "step": "instance.started",
            "n": n,
        });
        serde_json::to_writer(&mut self.buf, &line).expect("serialise");
        self.prev = line_hash(&self.buf);
        self.buf.push(b'\n');
        self.file.write_all(&self.buf).expect("write");
        self.file.sync_data().expect("fdatasync");
    }

    fn run(&mut self, total: u64) -> Duration {
        let start = Instant::now();
        for n in 0..total {
            self.append(n);
        }
        start.elapsed()
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("audit_durable_append");
    group.sample_size(10).throughput(Throughput::Elements(1));

    let (log, _dir) = open_log(&rt);
    group.bench_function("group_commit_64_writers", |b| {
        b.iter_custom(|iters| group_commit(&rt, &log, iters));
    });
    let mut naive = Naive::new();
    group.bench_function("fdatasync_per_entry", |b| {
        b.iter_custom(|iters| naive.run(black_box(iters)));
    });
    group.finish();
}

/// A plain timed run of both, printing appends/second and the ratio.
fn print_ratio() {
    let total = std::env::var("GANTRY_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (log, _dir) = open_log(&rt);
    let grouped = group_commit(&rt, &log, total);
    let syncs = log.syncs();
    let naive = Naive::new().run(total);
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "durable appends/s: group commit ({WRITERS} writers) {:.0} ({total} entries, {syncs} fdatasyncs), \
         one fdatasync per entry {:.0}; ratio {:.1}x",
        rate(grouped),
        rate(naive),
        naive.as_secs_f64() / grouped.as_secs_f64(),
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` runs the benches once, quickly.
    if std::env::args().any(|a| a == "--bench") {
        print_ratio();
    }
}
