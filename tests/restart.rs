//! Restarting without losing anyone, on the real binary with the memory
//! store and `[store] state_dir`: a graceful stop keeps everything, a crash
//! at most the last snapshot interval, a damaged state file is reported and
//! set aside, and `run --upgrade` takes over sockets and state under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::StatusCode;

use crate::common::process::Process;
use crate::common::{
    Store, TestUpstream, client, eventually, get_json, metric, waiting_room_config,
};

/// A sessions room "web" of `capacity` on `/`, a requests room "llm" of 2 on
/// `/api/`, the state kept in `dir`.
fn config(upstream: &TestUpstream, dir: &std::path::Path, interval: &str) -> String {
    let catch_all = "[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\nroom = \"web\"\n";
    let base = waiting_room_config(upstream, Store::Memory, "capacity = 1", "").replace(
        "backend = \"memory\"\n",
        &format!(
            "backend = \"memory\"\nstate_dir = \"{}\"\nsnapshot_interval = \"{interval}\"\n",
            dir.display()
        ),
    );
    assert!(base.contains(catch_all) && base.contains("state_dir"));
    format!(
        "{}\n[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = 2\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"app\"\nroom = \"llm\"\n{catch_all}",
        base.replacen(catch_all, "", 1)
    )
}

/// Snapshots the instance wrote.
async fn snapshots_written(p: &Process) -> f64 {
    metric("anteroom_state_snapshots_total")
        .label("result", "ok")
        .of(&scrape(p).await)
}

/// The instance's `/metrics`.
async fn scrape(p: &Process) -> String {
    crate::common::get_text(p.admin_url("/metrics")).await
}

async fn patch(p: &Process, room: &str, body: serde_json::Value) {
    let resp = client()
        .patch(p.admin_url(&format!("/admin/rooms/{room}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_graceful_restart_keeps_the_line_the_sessions_and_the_admin_changes() {
    let upstream = TestUpstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut first = Process::start("1s", &config(&upstream, state.path(), "1h")).await;
    let mut admitted = first.visitor();
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    let mut second = first.visitor();
    let mut third = first.visitor();
    assert_eq!(second.get("/x").await.1["position"], 1);
    assert_eq!(third.get("/x").await.1["position"], 2);
    patch(&first, "web", serde_json::json!({"admit_rate": 7})).await;
    patch(&first, "llm", serde_json::json!({"capacity": 5})).await;

    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit().await.success());
    assert!(first.log().contains("state written"), "{}", first.log());
    let again = first.restart().await;
    assert!(again.log().contains("state restored"), "{}", again.log());

    // The same line, the same session, the admin's settings.
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    assert_eq!(second.poll().await["position"], 1);
    assert_eq!(third.poll().await["position"], 2);
    let web = get_json(again.admin_url("/admin/rooms/web")).await;
    assert_eq!(web["admitRate"], 7.0, "{web}");
    assert_eq!(web["sessions"], 1, "{web}");
    let llm = get_json(again.admin_url("/admin/rooms/llm")).await;
    assert_eq!(llm["capacity"], 5, "{llm}");
    // A newcomer goes behind them.
    let mut fourth = again.visitor();
    assert_eq!(fourth.get("/x").await.1["position"], 3);
}

#[tokio::test]
async fn a_crash_loses_at_most_the_last_snapshot_interval() {
    let upstream = TestUpstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let first = Process::start("1s", &config(&upstream, state.path(), "100ms")).await;
    let mut admitted = first.visitor();
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    let mut queued = first.visitor();
    assert_eq!(queued.get("/x").await.1["position"], 1);
    // Two snapshots after the last change: it is on disk.
    let written = snapshots_written(&first).await;
    eventually(Duration::from_secs(5), || async {
        (snapshots_written(&first).await >= written + 2.0).then_some(())
    })
    .await;

    first.signal(Signal::SIGKILL);
    let _again = first.restart().await;
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    assert_eq!(queued.poll().await["position"], 1);
}

#[tokio::test]
async fn a_damaged_state_file_is_reported_set_aside_and_the_room_starts_empty() {
    let upstream = TestUpstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut first = Process::start("1s", &config(&upstream, state.path(), "1h")).await;
    let mut admitted = first.visitor();
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit().await.success());

    let file = state.path().join("state.bin");
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let again = first.restart().await;
    let log = again.log();
    assert!(log.contains("state file cannot be used"), "{log}");
    assert!(log.contains("truncated"), "{log}");
    let aside: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.bin.bad-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept for inspection");
    // Empty: the old pass names a session nobody knows, and is taken back
    // (its slot counted again); a newcomer then waits for the room of one.
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    let mut newcomer = again.visitor();
    assert_eq!(newcomer.get("/x").await.0, StatusCode::SERVICE_UNAVAILABLE);
}

/// A FIFO where the state file goes blocked the start for ever, with
/// nothing logged: now it is refused at once like any unusable file, set
/// aside, and the process serves.
#[tokio::test]
async fn a_state_file_that_is_not_a_regular_file_does_not_hold_the_start() {
    let upstream = TestUpstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(state.path().join("state.bin"))
        .status()
        .unwrap();
    assert!(made.success());
    // Process::start waits (with a deadline) until both listeners accept.
    let p = Process::start("1s", &config(&upstream, state.path(), "1h")).await;
    let log = p.log();
    assert!(log.contains("state file cannot be used"), "{log}");
    assert!(log.contains("is not a regular file"), "{log}");
    let mut visitor = p.visitor();
    assert_eq!(visitor.get("/x").await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_upgrade_under_load_fails_no_request_and_keeps_the_line() {
    let upstream = TestUpstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("upgrade.sock");
    let first = Process::start_server(
        &format!(
            "grace_period = \"5s\"\nupgrade_sock = \"{}\"",
            sock.display()
        ),
        &config(&upstream, state.path(), "1h"),
    )
    .await;
    let mut admitted = first.visitor();
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    let mut queued = first.visitor();
    assert_eq!(queued.get("/x").await.1["position"], 1);

    // A steady load: the admitted visitor's requests and `requests`-room
    // requests, each on a new connection, until told to stop.
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for path in ["/x", "/api/x"] {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        let url = first.url(path);
        let pass = if path == "/x" {
            admitted.pass_header()
        } else {
            None
        };
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .tls_certs_only([])
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                let mut req = http.get(&url);
                if let Some(p) = &pass {
                    req = req.header("x-anteroom-pass", p);
                }
                match req.send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("{url}: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    eventually(Duration::from_secs(5), || async {
        (ok.load(Ordering::SeqCst) > 50).then_some(())
    })
    .await;

    let mut second = first.spawn_upgrade();
    eventually(Duration::from_secs(10), || async {
        sock.exists().then_some(())
    })
    .await;
    first.signal(Signal::SIGQUIT);
    second.serving().await;
    let mut first = first;
    assert!(first.wait_exit().await.success(), "{}", first.log());
    let after = ok.load(Ordering::SeqCst);
    eventually(Duration::from_secs(5), || async {
        (ok.load(Ordering::SeqCst) > after + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        let _ = task.await;
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "ok: {}",
        ok.load(Ordering::SeqCst)
    );

    // The new process serves the same line and the same session.
    assert!(second.log().contains("state restored"), "{}", second.log());
    assert_eq!(queued.poll().await["position"], 1);
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    second.signal(Signal::SIGTERM);
    assert!(second.wait_exit().await.success());
}
