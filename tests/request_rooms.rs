//! `requests` rooms: never more in flight than the capacity, a clear 503 for
//! the rest, every slot back whatever way a request ends, and a fair line.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;

use crate::common::metric;
use crate::common::{TestProxy, TestUpstream, client, eventually, read_until};

fn room_config(upstream: &TestUpstream, capacity: u32, max_wait: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "llm"
address = "{addr}"
read_timeout = "500ms"

[[room]]
name = "llm"
mode = "requests"
capacity = {capacity}
max_wait = "{max_wait}"

[[route]]
path_prefix = "/api/"
upstream = "llm"
room = "llm"

[[route]]
path_prefix = "/"
upstream = "llm"
"#,
        addr = upstream.addr
    )
}

#[tokio::test]
async fn capacity_is_never_exceeded_and_the_rest_get_queue_required() {
    const N: u32 = 4;
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&room_config(&upstream, N, "0s")).await;
    let c = client();
    let requests = (0..10 * N).map(|_| {
        let c = c.clone();
        let url = proxy.url("/api/slow?ms=400");
        async move { c.get(url).send().await.unwrap() }
    });
    let responses = join_all(requests).await;

    let mut ok = 0;
    let mut queued = 0;
    for resp in responses {
        match resp.status().as_u16() {
            200 => ok += 1,
            503 => {
                queued += 1;
                assert_eq!(resp.headers()["cache-control"], "no-store");
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["code"], "QUEUE_REQUIRED");
                assert_eq!(body["room"], "llm");
                assert!(body["retryAfterMs"].as_u64().unwrap() > 0);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        upstream.seen.peak.load(SeqCst) <= N as usize,
        "upstream saw {} at once",
        upstream.seen.peak.load(SeqCst)
    );
    assert!(ok >= N as usize, "only {ok} admitted");
    assert_eq!(ok + queued, 10 * N as usize);
    assert_eq!(upstream.seen.requests.load(SeqCst), ok);
    proxy.wait_room_idle("llm").await;

    // Unguarded routes are not limited.
    let resp = c.get(proxy.url("/status/200")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn slots_come_back_after_aborts_errors_and_timeouts() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&room_config(&upstream, 2, "0s")).await;

    // A client that goes away mid-response.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut tcp, "data: first").await;
    assert_eq!(proxy.capacity("llm").await["inUse"], 1);
    drop(tcp);
    upstream.seen.gate.notify_one();
    proxy.wait_room_idle("llm").await;

    // An upstream that drops the connection.
    let resp = client().get(proxy.url("/api/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    proxy.wait_room_idle("llm").await;

    // An upstream that never answers (read_timeout = 500ms).
    let resp = client().get(proxy.url("/api/hang")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "UPSTREAM_TIMEOUT");
    proxy.wait_room_idle("llm").await;

    // A client that gives up while its request hangs upstream.
    let c = client();
    let url = proxy.url("/api/hang");
    let hung = tokio::spawn(async move { c.get(url).send().await });
    eventually(Duration::from_secs(5), || async {
        (proxy.capacity("llm").await["inUse"] == 1).then_some(())
    })
    .await;
    hung.abort();
    proxy.wait_room_idle("llm").await;

    // And the room still admits up to its capacity afterwards.
    let both = join_all((0..2).map(|_| client().get(proxy.url("/api/slow?ms=50")).send())).await;
    assert!(both.iter().all(|r| r.as_ref().unwrap().status() == 200));
    proxy.wait_room_idle("llm").await;
}

#[tokio::test]
async fn max_wait_admits_waiters_in_arrival_order() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&room_config(&upstream, 1, "10s").replace("500ms", "5s")).await;
    let mut tasks = Vec::new();
    for id in 0..6 {
        let c = client();
        // The first holds the slot while the others line up behind it.
        let ms = if id == 0 { 1500 } else { 50 };
        let url = proxy.url(&format!("/api/slow?ms={ms}&id={id}"));
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status()
        }));
        // The next one arrives only once this one holds the slot or waits in line.
        eventually(Duration::from_secs(5), || async {
            let c = proxy.capacity("llm").await;
            (c["inUse"].as_u64().unwrap() + c["waiting"].as_u64().unwrap() == id + 1).then_some(())
        })
        .await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let arrivals = upstream.seen.arrivals.lock().clone();
    assert_eq!(arrivals, ["0", "1", "2", "3", "4", "5"]);
    assert_eq!(upstream.seen.peak.load(SeqCst), 1);
    proxy.wait_room_idle("llm").await;
}

#[tokio::test]
async fn waiting_past_max_wait_gets_503() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&room_config(&upstream, 1, "100ms")).await;
    let c = client();
    let url = proxy.url("/api/slow?ms=400");
    let holder = tokio::spawn(async move { c.get(url).send().await.unwrap().status() });
    eventually(Duration::from_secs(5), || async {
        (proxy.capacity("llm").await["inUse"] == 1).then_some(())
    })
    .await;
    let resp = client()
        .get(proxy.url("/api/slow?ms=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(holder.await.unwrap(), 200);
}

#[tokio::test]
async fn capacity_endpoint_reports_the_room() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&room_config(&upstream, 3, "0s")).await;
    let c = proxy.capacity("llm").await;
    assert_eq!(
        c,
        serde_json::json!({"room": "llm", "capacity": 3, "inUse": 0, "available": 3, "waiting": 0})
    );

    let resp = client()
        .get(proxy.url("/__anteroom/capacity?room=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client()
        .get(proxy.url("/__anteroom/capacity"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client()
        .post(proxy.url("/__anteroom/capacity?room=llm"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    // The reserved prefix is never proxied.
    let resp = client()
        .get(proxy.url("/__anteroom/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(upstream.seen.requests.load(SeqCst), 0);
}

#[tokio::test]
async fn a_rate_lets_no_more_through_than_it_allows_and_tells_the_rest_when() {
    let upstream = TestUpstream::start().await;
    let config = room_config(&upstream, 100, "0s")
        .replace("max_wait = \"0s\"", "max_wait = \"0s\"\nrate = \"10/s\"");
    let proxy = TestProxy::start(&config).await;
    let http = client();
    let start = std::time::Instant::now();
    let answers = join_all((0..30).map(|_| http.get(proxy.url("/api/x")).send())).await;
    let elapsed = start.elapsed();
    let mut refused = 0;
    for resp in answers {
        let resp = resp.unwrap();
        if resp.status() == 503 {
            refused += 1;
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry >= 1, "Retry-After in whole seconds, rounded up");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["code"], "QUEUE_REQUIRED");
            assert!(body["retryAfterMs"].as_u64().unwrap() > 0, "{body}");
        } else {
            assert_eq!(resp.status(), 200);
        }
    }
    // At 10/s evenly spaced, at most one per 100 ms went through.
    let served = upstream.seen.requests.load(SeqCst);
    let allowed = 1 + (elapsed.as_millis() / 100) as usize;
    assert!(served <= allowed, "{served} served in {elapsed:?}");
    assert_eq!(served + refused, 30);
    assert!(refused > 0);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(&format!(
            "anteroom_room_rejected_total{{reason=\"rate\",room=\"llm\"}} {refused}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn within_max_wait_a_burst_waits_for_its_moments_and_is_served() {
    let upstream = TestUpstream::start().await;
    let config = room_config(&upstream, 100, "3s")
        .replace("max_wait = \"3s\"", "max_wait = \"3s\"\nrate = \"5/s\"");
    let proxy = TestProxy::start(&config).await;
    let http = client();
    let answers = join_all((0..8).map(|_| http.get(proxy.url("/api/x")).send())).await;
    assert!(answers.into_iter().all(|r| r.unwrap().status() == 200));
    assert_eq!(upstream.seen.requests.load(SeqCst), 8);
    let room = proxy.capacity("llm").await;
    assert_eq!(room["inUse"], 0, "{room}");
}

#[tokio::test]
async fn a_token_budget_is_charged_what_responses_report_and_refuses_past_it() {
    let upstream = TestUpstream::start().await;
    let config = room_config(&upstream, 100, "0s").replace(
        "max_wait = \"0s\"",
        "max_wait = \"0s\"\ntokens_per_minute = 6000\ntoken_estimate = 1000",
    );
    let proxy = TestProxy::start(&config).await;
    let http = client();
    let get = |path: &str| http.get(proxy.url(path)).send();
    // 4,500 used by a JSON answer and 1,000 by a streamed one: 5,500 of 6,000.
    assert_eq!(get("/api/usage?tokens=4500").await.unwrap().status(), 200);
    let sse = get("/api/usage-sse?tokens=1000").await.unwrap();
    assert_eq!(sse.status(), 200);
    let body = sse.text().await.unwrap();
    assert!(
        body.contains("\"totalTokenCount\": 1000"),
        "streamed through: {body}"
    );
    // 500 left: an estimate of 1,000 does not fit. Told when it will.
    let refused = get("/api/usage?tokens=10").await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "QUEUE_REQUIRED");
    let retry = body["retryAfterMs"].as_u64().unwrap();
    assert!(
        (4_000..=5_000).contains(&retry),
        "500 tokens at 100/s: {retry} ms"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric("anteroom_room_tokens_total")
            .label("class", "standard")
            .label("room", "llm")
            .value(&metrics),
        Some(5500.0),
        "{metrics}"
    );
    assert_eq!(
        metric("anteroom_room_rejected_total")
            .label("reason", "tokens")
            .label("room", "llm")
            .value(&metrics),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(upstream.seen.requests.load(SeqCst), 2);
}

/// Tokens are counted by client class: requests the room's `priority`
/// picks out (weighted in the room's turns) are `priority`, the others
/// `standard`; and a `usage_path` reads its own key.
#[tokio::test]
async fn tokens_are_counted_by_client_class_under_the_usage_path() {
    let upstream = TestUpstream::start().await;
    let config = room_config(&upstream, 100, "0s").replace(
        "max_wait = \"0s\"",
        "max_wait = \"0s\"\ntokens_per_minute = 100000\nusage_path = \"usageMetadata.totalTokenCount\"\nfair_by = \"header:x-api-key\"\npriority_weight = 4\n[room.priority]\npaths = [\"/api/partner/\"]",
    );
    let proxy = TestProxy::start(&config).await;
    let http = client();
    for (path, key) in [
        ("/api/usage?tokens=30", "k1"),
        ("/api/partner/usage?tokens=12", "k2"),
    ] {
        let resp = http
            .get(proxy.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
    }
    // A response's tokens are counted as its request ends, which may be
    // just after the client has read the body.
    eventually(Duration::from_secs(5), || async {
        let metrics = proxy.metrics().await;
        [
            "anteroom_room_tokens_total{class=\"standard\",room=\"llm\"} 30",
            "anteroom_room_tokens_total{class=\"priority\",room=\"llm\"} 12",
        ]
        .iter()
        .all(|line| metrics.contains(line))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_response_without_usage_is_charged_the_estimate_once_even_when_the_client_leaves() {
    let upstream = TestUpstream::start().await;
    let config = room_config(&upstream, 100, "0s").replace(
        "max_wait = \"0s\"",
        "max_wait = \"0s\"\ntokens_per_minute = 3000\ntoken_estimate = 1000",
    );
    let proxy = TestProxy::start(&config).await;
    // A client that hangs up in the middle of a response that never ends.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /api/hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(5), || async {
        (upstream.seen.in_flight.load(SeqCst) == 1).then_some(())
    })
    .await;
    drop(tcp);
    eventually(Duration::from_secs(10), || async {
        let m = proxy.metrics().await;
        (metric("anteroom_room_tokens_total")
            .label("class", "standard")
            .label("room", "llm")
            .value(&m)
            == Some(1000.0))
        .then_some(())
    })
    .await;
    // Charged once: 2,000 remain, two more estimates fit, the third does not.
    let http = client();
    for _ in 0..2 {
        assert_eq!(
            http.get(proxy.url("/api/x")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(
        http.get(proxy.url("/api/x")).send().await.unwrap().status(),
        503
    );
}

#[tokio::test]
async fn reading_usage_holds_back_no_chunk_of_a_stream() {
    let upstream = TestUpstream::start().await;
    let config = room_config(&upstream, 2, "0s").replace(
        "max_wait = \"0s\"",
        "max_wait = \"0s\"\ntokens_per_minute = 100000",
    );
    let proxy = TestProxy::start(&config).await;
    // The upstream sends its first event and then waits: the client must
    // have it before the rest exists.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut tcp, "data: first").await;
    upstream.seen.gate.notify_one();
    read_until(&mut tcp, "data: second").await;
}
