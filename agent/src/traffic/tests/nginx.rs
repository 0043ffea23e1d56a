//! The nginx adapter: the upstream file, reloads, restore on failure, and a real nginx.

use super::*;

// ---------------------------------------------------------------------------------------------
// nginx.

fn nginx(dir: &Path, reload: &[&str]) -> Nginx {
    Nginx::new(
        "web",
        dir.join("web.upstream.conf"),
        reload.iter().map(|s| (*s).to_owned()).collect(),
    )
}

#[test]
fn the_nginx_upstream_lists_out_of_rotation_backends_as_down() {
    let n = nginx(Path::new("/tmp"), &["true"]);
    let text = n
        .render(&table(
            9,
            &[
                ("v2-0", lo(18000), 90, false),
                ("v2-1", "[::1]:18001".parse().unwrap(), 10, false),
                ("v1-0", lo(18002), 100, true),
                ("v1-1", lo(18003), 0, false),
            ],
        ))
        .unwrap();
    let body: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(
        body,
        [
            "upstream web {",
            "    server 127.0.0.1:18000 weight=90;  # v2-0",
            "    server [::1]:18001 weight=10;  # v2-1",
            "    server 127.0.0.1:18002 down;  # v1-0 (draining)",
            "    server 127.0.0.1:18003 down;  # v1-1 (weight 0)",
            "}",
        ]
    );
    assert!(matches!(
        n.render(&table(1, &[])).unwrap_err(),
        TrafficError::Unsupported {
            router: "nginx",
            ..
        }
    ));
    // nginx cannot hold connections: a holding table is refused, naming why.
    let mut holding = table(1, &[("a", lo(1), 1, true)]);
    holding.hold_timeout_ms = 5000;
    holding.holding = true;
    match n.render(&holding).unwrap_err() {
        TrafficError::Unsupported { router, what } => {
            assert_eq!(router, "nginx");
            assert!(what.contains("cannot hold new connections"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    let bad = Nginx::new("web; evil", PathBuf::from("/tmp/x"), vec!["true".into()]);
    assert!(matches!(
        bad.render(&table(1, &[("a", lo(1), 1, false)]))
            .unwrap_err(),
        TrafficError::Unsupported { .. }
    ));
}

#[tokio::test]
async fn the_nginx_adapter_writes_reloads_and_restores_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ok = nginx(dir.path(), &["true"]);
    assert_eq!(ok.name(), "nginx");
    assert!(matches!(
        ok.stats().unwrap_err(),
        TrafficError::StatsUnsupported { router: "nginx" }
    ));
    let first = table(1, &[("a", lo(18000), 1, false)]);
    assert_eq!(ok.apply(first.clone()).await.unwrap().generation, 1);
    assert_eq!(ok.current().unwrap(), Some(first));
    let before = std::fs::read(&ok.upstream_file).unwrap();

    let failing = nginx(
        dir.path(),
        &["sh", "-c", "echo 'emerg: bad upstream' >&2; exit 1"],
    );
    let err = failing
        .apply(table(2, &[("b", lo(18001), 1, false)]))
        .await
        .unwrap_err();
    assert!(matches!(err, TrafficError::CommandFailed { .. }));
    assert!(
        err.to_string()
            .contains("exited with code 1: emerg: bad upstream"),
        "{err}"
    );
    assert_eq!(std::fs::read(&ok.upstream_file).unwrap(), before);

    let mut checked = nginx(dir.path(), &["true"]);
    checked.check_command = Some(vec!["false".into()]);
    assert!(
        checked
            .apply(table(2, &[("b", lo(18001), 1, false)]))
            .await
            .is_err()
    );
    assert_eq!(std::fs::read(&ok.upstream_file).unwrap(), before);

    let mut slow = nginx(dir.path(), &["sleep", "5"]);
    slow.command_timeout = Duration::from_millis(100);
    assert!(matches!(
        slow.apply(table(2, &[("b", lo(18001), 1, false)]))
            .await
            .unwrap_err(),
        TrafficError::CommandTimeout { .. }
    ));
    assert!(matches!(
        ok.apply(table(0, &[("b", lo(18001), 1, false)]))
            .await
            .unwrap_err(),
        TrafficError::StaleGeneration { .. }
    ));
}

#[tokio::test]
async fn an_nginx_reload_that_starts_no_worker_is_not_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    // A "master" that starts no worker when told to reload.
    let mut master = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = master.id().unwrap();
    let pid_file = dir.path().join("nginx.pid");
    fs::write(&pid_file, format!("{pid}\n")).unwrap();
    let mut router = nginx(dir.path(), &["true"]);
    let first = table(1, &[("a", lo(18000), 1, false)]);
    router.apply(first).await.unwrap();
    let applied = fs::read_to_string(&router.upstream_file).unwrap();

    router.pid_file = Some(pid_file.clone());
    router.command_timeout = Duration::from_millis(200);
    let err = router
        .apply(table(2, &[("b", lo(18001), 1, false)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TrafficError::NginxNotReloaded { pid: p, .. } if p == i32::try_from(pid).unwrap()),
        "{err:?}"
    );
    assert!(err.to_string().contains("not in effect"), "{err}");
    assert_eq!(
        fs::read_to_string(&router.upstream_file).unwrap(),
        applied,
        "the upstream file nginx runs is put back"
    );

    router.pid_file = Some(dir.path().join("missing.pid"));
    let err = router
        .apply(table(3, &[("b", lo(18001), 1, false)]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("missing.pid"),
        "the error names the pid file: {err}"
    );
    master.kill().await.unwrap();
}

fn nginx_binary() -> Option<PathBuf> {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    let path = path.trim();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// A minimal nginx config in `dir` that includes the upstream file and proxies HTTP to it
/// (the `http` context: the `stream` module is optional in Debian's packages).
fn nginx_conf(dir: &Path, upstream_file: &Path, listen: u16) -> PathBuf {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    let text = format!(
        "daemon on;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {upstream};\n\
         server {{ listen 127.0.0.1:{listen}; location / {{ proxy_pass http://web; }} }}\n}}\n",
        upstream = upstream_file.display(),
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

/// An HTTP backend that answers every request with its name.
async fn http_backend(name: &'static str) -> TestBackend {
    spawn_backend(move |stream: TcpStream| async move {
        let mut stream = BufReader::new(stream);
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
            name.len()
        );
        let _ = stream.get_mut().write_all(reply.as_bytes()).await;
    })
    .await
}

/// GET / through `addr`; the body (the backend's name) when the status is 200.
async fn http_get(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.ok()?;
    if !reply.starts_with("HTTP/1.1 200") {
        return None;
    }
    reply.split("\r\n\r\n").nth(1).map(str::to_owned)
}

#[tokio::test]
async fn nginx_accepts_the_upstream_file_and_follows_reloads() {
    let Some(bin) = nginx_binary() else {
        eprintln!("SKIPPED: nginx is not installed (the CI installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let listen = dead_addr().await.port();
    let upstream_file = dir.path().join("web.upstream.conf");
    let conf = nginx_conf(dir.path(), &upstream_file, listen);
    let bin_s = bin.display().to_string();
    let conf_s = conf.display().to_string();
    let prefix = dir.path().display().to_string();
    let mut router = Nginx::new(
        "web",
        upstream_file.clone(),
        vec![
            bin_s.clone(),
            "-p".into(),
            prefix.clone(),
            "-c".into(),
            conf_s.clone(),
            "-s".into(),
            "reload".into(),
        ],
    );
    router.check_command = Some(vec![
        bin_s.clone(),
        "-q".into(),
        "-t".into(),
        "-p".into(),
        prefix.clone(),
        "-c".into(),
        conf_s.clone(),
    ]);
    // Before nginx runs, only the check matters: write and check without reloading.
    let mut check_only = router.clone();
    check_only.reload_command = vec!["true".into()];
    check_only
        .apply(table(1, &[("a", a.addr, 1, false), ("b", b.addr, 1, true)]))
        .await
        .unwrap();
    let started = std::process::Command::new(&bin)
        .args(["-p", &prefix, "-c", &conf_s])
        .status()
        .unwrap();
    if !started.success() {
        // e.g. a non-root run where nginx cannot open its default paths.
        eprintln!("SKIPPED the live part: nginx did not start ({started}); the -t check passed");
        return;
    }
    let front = lo(listen);
    let stop = scopeguard(bin_s.clone(), prefix.clone(), conf_s.clone());
    wait_until_async(|| async { http_get(front).await.is_some() }).await;
    for _ in 0..4 {
        assert_eq!(http_get(front).await.as_deref(), Some("a"));
    }
    // With the pid file, the apply returns only once nginx runs new workers.
    router.pid_file = Some(dir.path().join("nginx.pid"));
    let master = crate::traffic::nginx::master_pid(&dir.path().join("nginx.pid")).unwrap();
    let before = crate::traffic::nginx::children_of(master);
    assert!(!before.is_empty(), "nginx runs workers");
    router
        .apply(table(2, &[("a", a.addr, 1, true), ("b", b.addr, 1, false)]))
        .await
        .unwrap();
    assert!(
        crate::traffic::nginx::children_of(master)
            .difference(&before)
            .next()
            .is_some(),
        "the apply returned before nginx started new workers"
    );
    // Old workers finish gracefully; new connections reach the new workers soon after.
    // nginx's switch is not instant: the old worker accepts until it has processed its QUIT.
    wait_until_async(|| async {
        for _ in 0..10 {
            if http_get(front).await.as_deref() != Some("b") {
                return false;
            }
        }
        true
    })
    .await;
    drop(stop);
}

async fn wait_until_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < end, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the test's nginx when dropped.
struct NginxGuard(String, String, String);

impl Drop for NginxGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.0)
            .args(["-p", &self.1, "-c", &self.2, "-s", "stop"])
            .status();
    }
}

fn scopeguard(bin: String, prefix: String, conf: String) -> NginxGuard {
    NginxGuard(bin, prefix, conf)
}
