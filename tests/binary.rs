//! The real binary: structured access logs, and graceful shutdown (in-flight
//! requests finish, the process exits once drained, bounded by the grace period).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{TestUpstream, client, eventually, free_port};

struct Binary {
    child: Child,
    public: u16,
    dir: tempfile::TempDir,
}

impl Binary {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(upstream: &TestUpstream, grace: &str) -> Binary {
    let (public, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anteroom.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = ["127.0.0.1:{public}"]
threads = 1
grace_period = "{grace}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
format = "json"
level = "info"
[[upstream]]
name = "app"
address = "{addr}"
read_timeout = "60s"
[[room]]
name = "r"
mode = "requests"
capacity = 1
[[route]]
path_prefix = "/"
upstream = "app"
room = "r"
"#,
            addr = upstream.addr
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        client()
            .get(format!("http://127.0.0.1:{admin}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    Binary { child, public, dir }
}

async fn wait_exit(binary: &mut Binary) -> std::process::ExitStatus {
    eventually(Duration::from_secs(15), || {
        let status = binary.child.try_wait().unwrap();
        async move { status }
    })
    .await
}

async fn in_flight_request_finishes(signal: Signal) {
    let upstream = TestUpstream::start().await;
    let mut binary = start(&upstream, "10s").await;
    let url = format!("http://127.0.0.1:{}/slow?ms=700", binary.public);
    let request = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    eventually(Duration::from_secs(5), || async {
        (upstream.seen.in_flight.load(SeqCst) == 1).then_some(())
    })
    .await;

    kill(Pid::from_raw(binary.child.id() as i32), signal).unwrap();

    assert_eq!(request.await.unwrap().unwrap(), 200);
    let status = wait_exit(&mut binary).await;
    assert!(status.success(), "{status}");
    // Gone: nothing listens any more.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", binary.public))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    in_flight_request_finishes(Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigint_lets_in_flight_requests_finish() {
    in_flight_request_finishes(Signal::SIGINT).await;
}

#[tokio::test]
async fn grace_period_bounds_the_wait() {
    let upstream = TestUpstream::start().await;
    let mut binary = start(&upstream, "1s").await;
    let url = format!("http://127.0.0.1:{}/hang", binary.public);
    let request = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    eventually(Duration::from_secs(5), || async {
        (upstream.seen.in_flight.load(SeqCst) == 1).then_some(())
    })
    .await;
    kill(Pid::from_raw(binary.child.id() as i32), Signal::SIGTERM).unwrap();
    // The hung request cannot finish; the process still ends after the grace period.
    wait_exit(&mut binary).await;
    assert!(request.await.unwrap().is_err());
}

#[tokio::test]
async fn access_log_is_one_json_line_per_request() {
    let upstream = TestUpstream::start().await;
    let binary = start(&upstream, "1s").await;
    let resp = client()
        .get(format!(
            "http://127.0.0.1:{}/echo?key=SECRET-API-KEY",
            binary.public
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = eventually(Duration::from_secs(5), || {
        let log = binary.log();
        async move {
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["target"] == "anteroom::access")
        }
    })
    .await;
    assert_eq!(line["path"], "/echo");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "/");
    assert_eq!(line["room"], "r");
    assert_eq!(line["upstream"], "app");
    assert_eq!(line["outcome"], "proxied");
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(line["slot_wait_ms"].as_f64().is_some());
    // Query strings can carry API keys: they never reach the log.
    assert!(!binary.log().contains("SECRET-API-KEY"));
}
