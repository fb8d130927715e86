//! No way around the gate: with nginx as the upstream (it merges slashes,
//! resolves `..` and decodes escapes before choosing a location), every
//! spelling of a guarded path either meets the room exactly like the plain
//! path, or is refused with 400. nginx's own logs are the judge of what it
//! served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::nginx::Nginx;
use crate::common::{Backend, TestProxy, TestUpstream, client, eventually};

/// Sends one raw request (the target exactly as written) and reads the whole answer.
async fn raw(proxy: &TestProxy, request_line: &str, headers: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!("{request_line}\r\n{headers}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Spellings of `/api/gemini/x` and of paths that reach it: what nginx
/// would serve from the `/api/gemini/` location, and what a framework might.
const GEMINI_FORMS: &[&str] = &[
    "/api/gemini/x",
    "/api//gemini/x",
    "//api/gemini/x",
    "///api///gemini///x",
    "/api/./gemini/x",
    "/./api/gemini/x",
    "/api/gemini/./x",
    "/api/x/../gemini/x",
    "/foo/../api/gemini/x",
    "/api/gemini/../gemini/x",
    "/api/%67emini/x",
    "/api/gem%69ni/x",
    "/%61pi/gemini/x",
    "/%61%70%69/%67%65%6d%69%6e%69/x",
    "/api%2Fgemini/x",
    "/api%2fgemini/x",
    "/%2Fapi/gemini/x",
    "/api/gemini%2F/x",
    "/api/%2e/gemini/x",
    "/api/%2E/gemini/x",
    "/api/x/%2e%2e/gemini/x",
    "/api/x/%2E%2e/gemini/x",
    "/api/x/.%2e/gemini/x",
    "/api/x/%2e./gemini/x",
    "/api/x/..%2fgemini/x",
    "/api/x/..%2Fgemini/x",
    "/api/x/%2e%2e%2fgemini/x",
    "/api\\gemini/x",
    "/api/x/..\\gemini/x",
    "/api%5Cgemini/x",
    "/api/x/..%5cgemini/x",
    "/api;x/gemini/x",
    "/api/gemini;x/y",
    "/api/x/..;/gemini/x",
    "/api/%2567emini/x",
    "/api/x/%252e%252e/gemini/x",
    "/api/%c0%ae%c0%ae/api/gemini/x",
    "/api/x/%c0%af../gemini/x",
    "/api/gemini%00/x",
    "/api/gemini%0d%0a/x",
    "/api/%20/../gemini/x",
    "/api/gemini/x?q=1",
    "/api/gemini/x?q=%2e%2e",
    "/api/gemini/x#frag",
    "/API/gemini/x",
];

#[tokio::test]
async fn every_spelling_of_a_guarded_path_meets_its_room() {
    let nginx = Nginx::start(&[("/api/gemini/", "gemini"), ("/", "root")]);
    let holder = TestUpstream::start().await;
    let proxy = TestProxy::start(&format!(
        r#"
[[upstream]]
name = "nginx"
address = "127.0.0.1:{nginx}"
[[upstream]]
name = "holder"
address = "{holder}"
[[room]]
name = "gemini"
mode = "requests"
capacity = 1
[[route]]
path_prefix = "/api/gemini/hang"
upstream = "holder"
room = "gemini"
[[route]]
path_prefix = "/api/gemini/"
upstream = "nginx"
room = "gemini"
[[route]]
path_prefix = "/"
upstream = "nginx"
"#,
        nginx = nginx.port,
        holder = holder.addr,
    ))
    .await;
    // The room's only slot is taken for the whole test.
    let hang = client().get(proxy.url("/api/gemini/hang")).send();
    let hold = tokio::spawn(hang);
    eventually(Duration::from_secs(10), || async {
        (proxy.capacity("gemini").await["inUse"] == 1).then_some(())
    })
    .await;

    let mut forms: Vec<(String, String)> = GEMINI_FORMS
        .iter()
        .map(|p| {
            (
                format!("GET {p} HTTP/1.1"),
                "Host: shop.test\r\n".to_owned(),
            )
        })
        .collect();
    // Absolute-form: its authority is the host; it must agree with Host.
    for target in [
        "http://shop.test/api//gemini/x",
        "http://SHOP.test./api/gemini/x",
        "http://shop.test:80/api/%67emini/x",
        "HTTP://shop.test/api/gemini/x",
    ] {
        forms.push((
            format!("GET {target} HTTP/1.1"),
            "Host: shop.test\r\n".into(),
        ));
    }
    forms.push((
        "GET http://elsewhere.test/api/gemini/x HTTP/1.1".into(),
        "Host: shop.test\r\n".into(),
    ));
    forms.push((
        "GET /api/gemini/x HTTP/1.1".into(),
        "Host: shop.test\r\nHost: other.test\r\n".into(),
    ));
    forms.push(("GET /api//gemini/x HTTP/1.0".into(), String::new()));
    forms.push((
        "POST /api/./gemini/x HTTP/1.1".into(),
        "Host: shop.test\r\nContent-Length: 0\r\n".into(),
    ));
    assert!(forms.len() >= 40, "{} forms", forms.len());

    let mut refused = 0;
    for (line, headers) in &forms {
        let (status, body) = raw(&proxy, line, headers).await;
        match status {
            503 => assert!(body.contains("QUEUE_REQUIRED"), "{line}: {body}"),
            400 => refused += 1,
            // What nginx serves from another location is no way around the room.
            200 => assert!(body.starts_with("root "), "{line}: served {body}"),
            other => panic!("{line}: {other} {body}"),
        }
    }
    let served = nginx.served("gemini");
    assert!(
        served.is_empty(),
        "reached the guarded location without a slot: {served:?}"
    );
    assert!(refused > 0);
    // The plain path, once the slot is free, is served by that location.
    hold.abort();
    proxy.wait_room_idle("gemini").await;
    let (status, body) = raw(&proxy, "GET /api//gemini/x HTTP/1.1", "Host: shop.test\r\n").await;
    assert_eq!((status, body.as_str()), (200, "gemini /api/gemini/x\n"));
    assert_eq!(
        nginx.served("gemini"),
        ["/api/gemini/x /api/gemini/x"],
        "forwarded in canonical form"
    );
}

#[tokio::test]
async fn a_bypass_prefix_cannot_be_walked_out_of() {
    let nginx = Nginx::start(&[
        ("/static/", "static"),
        ("/checkout", "checkout"),
        ("/", "root"),
    ]);
    let proxy = TestProxy::start(&crate::common::waiting_room_config_for(
        &format!("127.0.0.1:{}", nginx.port),
        Backend::Memory,
        "capacity = 1\n[room.bypass]\npaths = [\"/static/\"]",
        "",
    ))
    .await;
    // Someone is inside: everyone else waits.
    let mut inside = proxy.visitor();
    assert_eq!(inside.get("/").await.0, 200);
    let forms = [
        "/static/../checkout",
        "/static/%2e%2e/checkout",
        "/static/%2E%2E/checkout",
        "/static/.%2e/checkout",
        "/static/..%2fcheckout",
        "/static/..%2Fcheckout",
        "/static/..%5ccheckout",
        "/static/..\\checkout",
        "/static/..;/checkout",
        "/static//../checkout",
        "/static/x/../../checkout",
        "/static/%252e%252e/checkout",
        "/static/%c0%ae%c0%ae/checkout",
        "/static/..%00/checkout",
        "/./static/../checkout",
    ];
    for form in forms {
        let (status, body) = raw(
            &proxy,
            &format!("GET {form} HTTP/1.1"),
            "Host: shop.test\r\nAccept: application/json\r\n",
        )
        .await;
        match status {
            503 => assert!(body.contains("QUEUE_REQUIRED"), "{form}: {body}"),
            400 => {}
            200 => assert!(
                body.starts_with("static ") || body.starts_with("root "),
                "{form}: {body}"
            ),
            other => panic!("{form}: {other} {body}"),
        }
    }
    let served = nginx.served("checkout");
    assert!(
        served.is_empty(),
        "walked out of the bypass prefix: {served:?}"
    );
    // The bypass itself still works.
    let (status, body) = raw(
        &proxy,
        "GET /static/app.css HTTP/1.1",
        "Host: shop.test\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "static /static/app.css\n"));
}

#[tokio::test]
async fn a_host_route_is_found_however_its_host_is_spelled() {
    let nginx = Nginx::start(&[("/", "root")]);
    let proxy = TestProxy::start(&format!(
        r#"
[[upstream]]
name = "nginx"
address = "127.0.0.1:{port}"
[[room]]
name = "sess"
mode = "requests"
capacity = 1
[[route]]
host = "sess.test"
upstream = "nginx"
room = "sess"
[[route]]
upstream = "nginx"
"#,
        port = nginx.port
    ))
    .await;
    // Hold the room's slot with a request whose body never comes.
    let mut holder = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    holder
        .write_all(b"POST /x HTTP/1.1\r\nHost: sess.test\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        (proxy.capacity("sess").await["inUse"] == 1).then_some(())
    })
    .await;
    for host in [
        "sess.test",
        "SESS.test",
        "sess.test.",
        "Sess.Test.:80",
        "sess.test:8080",
    ] {
        let (status, body) = raw(&proxy, "GET /x HTTP/1.1", &format!("Host: {host}\r\n")).await;
        assert_eq!(status, 503, "Host: {host}: {body}");
    }
    for host in ["sess.test..", "sess test", "sess.test:x"] {
        let (status, _) = raw(&proxy, "GET /x HTTP/1.1", &format!("Host: {host}\r\n")).await;
        assert_eq!(status, 400, "Host: {host}");
    }
    assert!(nginx.served("root").is_empty());
    drop(holder);
}

#[tokio::test]
async fn anteroom_answers_every_spelling_of_its_own_paths() {
    let nginx = Nginx::start(&[("/", "root")]);
    let proxy = TestProxy::start(&crate::common::waiting_room_config_for(
        &format!("127.0.0.1:{}", nginx.port),
        Backend::Memory,
        "capacity = 5",
        "",
    ))
    .await;
    for form in [
        "/__anteroom/capacity?room=web",
        "//__anteroom/capacity?room=web",
        "/./__anteroom/capacity?room=web",
        "/x/../__anteroom/capacity?room=web",
        "/%5F%5Fanteroom/capacity?room=web",
        "/__anteroom//capacity?room=web",
        "/__%61nteroom/capacity?room=web",
    ] {
        let (status, body) = raw(
            &proxy,
            &format!("GET {form} HTTP/1.1"),
            "Host: shop.test\r\n",
        )
        .await;
        assert_eq!(status, 200, "{form}");
        assert!(body.contains("\"capacity\":5"), "{form}: {body}");
    }
    for form in [
        "/.well-known/./jwks.json",
        "/.well-known//jwks.json",
        "/%2Ewell-known/jwks.json",
        "/x/../.well-known/jwks.json",
    ] {
        let (status, body) = raw(
            &proxy,
            &format!("GET {form} HTTP/1.1"),
            "Host: shop.test\r\n",
        )
        .await;
        assert_eq!(status, 200, "{form}");
        assert!(body.contains("\"keys\""), "{form}: {body}");
    }
    assert!(
        nginx.served("root").is_empty(),
        "{:?}",
        nginx.served("root")
    );
}
