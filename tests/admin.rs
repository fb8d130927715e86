//! The admin listener: metrics in Prometheus format, health, readiness,
//! bearer token, live room changes; and none of it on the public listener.

use crate::common::{TestProxy, TestUpstream, client, get_text};

const TOKEN: &str = "test-admin-token-0123456789";

async fn proxy_with_token(upstream: &TestUpstream) -> TestProxy {
    TestProxy::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:{admin}"
token = "{TOKEN}"

[[upstream]]
name = "app"
address = "{addr}"

[[room]]
name = "llm"
mode = "requests"
capacity = 2

[[route]]
path_prefix = "/api/"
upstream = "app"
room = "llm"

[[route]]
path_prefix = "/"
upstream = "app"
"#,
        admin = crate::common::free_port(),
        addr = upstream.addr
    ))
    .await
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with_token(&upstream).await;
    for path in ["/api/slow?ms=1", "/status/404", "/echo"] {
        client().get(proxy.url(path)).send().await.unwrap();
    }
    // Requests are counted in the logging phase, after the client has its response.
    let text = crate::common::eventually(std::time::Duration::from_secs(5), || async {
        let text = client()
            .get(proxy.admin_url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains(r#"status="404""#).then_some(text)
    })
    .await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let names: std::collections::HashSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "anteroom_room_capacity",
        "anteroom_room_in_use",
        "anteroom_room_waiting",
        "anteroom_room_admitted_total",
        "anteroom_room_slot_wait_seconds",
        "anteroom_requests_total",
        "anteroom_upstream_responses_total",
        "anteroom_upstream_response_seconds",
        "anteroom_request_duration_seconds",
        "anteroom_build_info",
    ] {
        assert!(
            names.contains(name),
            "{name} missing from /metrics:\n{text}"
        );
    }
    let not_found = scrape.samples.iter().find(|s| {
        s.metric == "anteroom_upstream_responses_total" && s.labels.get("status") == Some("404")
    });
    assert!(
        not_found.is_some(),
        "404 from the upstream not counted:\n{text}"
    );
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        let mut child = out;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "promtool rejected the metrics"
        );
    }
}

#[tokio::test]
async fn token_guards_everything_but_the_probes() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with_token(&upstream).await;
    let c = client();
    assert_eq!(
        c.get(proxy.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A probe without the token learns whether to send traffic, nothing more.
    let brief: serde_json::Value = c
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(brief, serde_json::json!({"ready": true, "draining": false}));
    for path in [
        "/metrics",
        "/admin/rooms",
        "/admin/rooms/llm",
        "/admin/config",
    ] {
        let resp = c.get(proxy.admin_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert!(resp.headers().contains_key("www-authenticate"));
        let resp = c
            .get(proxy.admin_url(path))
            .bearer_auth("wrong-token-0123456789abc")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let resp = c
            .get(proxy.admin_url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let ready: serde_json::Value = c
        .get(proxy.admin_url("/readyz"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["listeners"][0]["up"], true);
}

#[tokio::test]
async fn admin_paths_are_not_served_on_the_public_listener() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with_token(&upstream).await;
    for path in ["/metrics", "/admin/rooms"] {
        let body = get_text(proxy.url(path)).await;
        assert_eq!(body, format!("upstream saw {path}"));
    }
}

#[tokio::test]
async fn room_capacity_changes_live() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with_token(&upstream).await;
    let c = client();
    let resp = c
        .patch(proxy.admin_url("/admin/rooms/llm"))
        .bearer_auth(TOKEN)
        .body(r#"{"capacity": 7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(proxy.capacity("llm").await["capacity"], 7);
    for bad in [
        r#"{"capacity": 0}"#,
        r#"{"capacity": -1}"#,
        r#"{"capacty": 3}"#,
        "not json",
    ] {
        let resp = c
            .patch(proxy.admin_url("/admin/rooms/llm"))
            .bearer_auth(TOKEN)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert_eq!(proxy.capacity("llm").await["capacity"], 7);
    let resp = c
        .get(proxy.admin_url("/admin/rooms/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
