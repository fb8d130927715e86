//! The real binary: structured access logs, and graceful shutdown (in-flight
//! requests finish, the process exits once drained, bounded by the grace period).

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::metric;
use crate::common::process::Process;
use crate::common::{TestUpstream, client, eventually, get_text};

/// A requests room "r" of capacity 1 over every path.
fn request_room(upstream: &TestUpstream) -> String {
    format!(
        r#"
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
    )
}

async fn start(upstream: &TestUpstream, grace: &str) -> Process {
    Process::start(grace, &request_room(upstream)).await
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

    binary.signal(signal);

    assert_eq!(request.await.unwrap().unwrap(), 200);
    let status = binary.wait_exit().await;
    assert!(status.success(), "{status}");
    // Every line reaches the log, including those written while exiting.
    let log = binary.log();
    assert!(log.contains("all in-flight requests finished"), "{log}");
    assert!(!log.contains("Unable to write"), "{log}");
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

/// A connection accepted just before the listener closed, whose request
/// arrives after it: the request is answered, not cut.
#[tokio::test]
async fn a_request_sent_as_the_listener_closes_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = TestUpstream::start().await;
    let mut binary = start(&upstream, "10s").await;
    let addr = ("127.0.0.1", binary.public);
    let mut early = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Accepted (not only in the kernel's backlog, which a closing listener
    // resets).
    eventually(Duration::from_secs(5), || async {
        (metric("anteroom_connections_open").value(&get_text(binary.admin_url("/metrics")).await)
            == Some(1.0))
        .then_some(())
    })
    .await;
    binary.signal(Signal::SIGTERM);
    eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    early
        .write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    early.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(binary.wait_exit().await.success());
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
    binary.signal(Signal::SIGTERM);
    // The hung request cannot finish; the process still ends after the grace period.
    binary.wait_exit().await;
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

#[tokio::test]
async fn text_log_into_a_file_has_no_colour_codes() {
    let upstream = TestUpstream::start().await;
    let binary = Process::start_logging("1s", "text", &request_room(&upstream)).await;
    let resp = client()
        .get(format!("http://127.0.0.1:{}/echo", binary.public))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log = eventually(Duration::from_secs(5), || {
        let log = binary.log();
        async move { log.contains("anteroom::access").then_some(log) }
    })
    .await;
    assert!(log.contains("status=200"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file: {log:?}"
    );
}

#[tokio::test]
async fn visitor_lifecycle_is_logged_with_its_campaign() {
    let upstream = TestUpstream::start().await;
    let config = crate::common::waiting_room_config(
        &upstream,
        crate::common::Store::Memory,
        "capacity = 1\n[room.conversion]\npath_prefix = \"/signup\"",
        "[attribution]\nsources = [\"meta\"]\ncampaigns = [\"launch1\"]",
    );
    let binary = Process::start("1s", &config).await;
    let base = format!("http://127.0.0.1:{}", binary.public);
    let mut inside = crate::common::Visitor::new(base.clone());
    assert_eq!(
        inside
            .get("/echo?utm_source=meta&utm_campaign=launch1")
            .await
            .0,
        200
    );
    let mut waiting = crate::common::Visitor::new(base.clone());
    assert_eq!(waiting.get("/echo?utm_source=newsletter").await.0, 503);
    let resp = client()
        .post(format!("{base}/signup"))
        .header("x-anteroom-pass", inside.pass.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    inside.leave().await;
    waiting.poll_until(|s| s["state"] == "admitted").await;

    let events = eventually(Duration::from_secs(5), || {
        let log = binary.log();
        async move {
            let events: Vec<serde_json::Value> = log
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["target"] == "anteroom::visitor")
                .collect();
            // Some lines are written after the response that caused them.
            let expected = [
                ("arrived", "meta"),
                ("admitted", "meta"),
                ("converted", "meta"),
                ("released", "meta"),
                ("queued", "newsletter"),
                ("admitted", "newsletter"),
            ];
            let complete = expected.iter().all(|(event, source)| {
                events
                    .iter()
                    .any(|e| e["event"] == *event && e["utm_source"] == *source)
            });
            complete.then_some(events)
        }
    })
    .await;
    let find = |event: &str, source: &str| {
        events
            .iter()
            .find(|e| e["event"] == event && e["utm_source"] == source)
            .unwrap_or_else(|| panic!("no {event} event for {source}: {events:?}"))
    };
    find("arrived", "meta");
    find("admitted", "meta");
    find("converted", "meta");
    find("released", "meta");
    let queued = find("queued", "newsletter");
    assert_eq!(queued["position"], 1);
    let admitted = find("admitted", "newsletter");
    assert!(admitted["wait_ms"].as_u64().is_some());
    // The access line carries the campaign too, and never a token.
    let log = binary.log();
    assert!(log.contains(r#""utm_campaign":"launch1""#));
    assert!(
        !log.contains("eyJhbGciOiJSUzI1NiIs"),
        "a token reached the log"
    );
}

#[tokio::test]
async fn every_request_has_an_id_the_app_and_the_access_line_share() {
    let upstream = TestUpstream::start().await;
    let rest = format!(
        "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nupstream = \"app\"\n",
        upstream.addr
    );
    let p = Process::start("1s", &rest).await;
    let http = client();
    // anteroom makes one and sends it upstream.
    let echo: serde_json::Value = http
        .get(p.url("/echo"))
        .header("user-agent", "campaign-bot/1.0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let made = echo["headers"]["x-request-id"].as_str().unwrap().to_owned();
    assert_eq!(made.len(), 32, "{made}");
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
    // A load balancer's id goes through as it came; a malformed one is replaced.
    let sent_upstream = |id: &'static str| {
        let req = http.get(p.url("/echo")).header("x-request-id", id).send();
        async move {
            let echo: serde_json::Value = req.await.unwrap().json().await.unwrap();
            echo["headers"]["x-request-id"].clone()
        }
    };
    assert_eq!(sent_upstream("lb-7f3a").await, "lb-7f3a");
    assert_ne!(sent_upstream("two words").await, "two words");

    let line = eventually(Duration::from_secs(5), || async {
        p.log()
            .lines()
            .find(|l| l.contains(&made))
            .map(str::to_owned)
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["request_id"], made.as_str());
    assert_eq!(line["user_agent"], "campaign-bot/1.0");
    assert_eq!(line["version"], "HTTP/1.1");
    assert!(line["bytes_out"].as_u64().unwrap() > 0, "{line}");
    assert_eq!(line["bytes_in"], 0);
}
