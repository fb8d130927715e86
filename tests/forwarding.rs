//! Requests and responses pass through whole: method, path, query, headers,
//! body, streaming, TLS upstreams.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_rustls::rustls;

use crate::common::{TestProxy, TestUpstream, client, read_until};

fn app_config(upstream: &TestUpstream) -> String {
    format!(
        r#"
[[upstream]]
name = "app"
address = "{}"

[[route]]
host = "only.example"
path_prefix = "/"
upstream = "app"

[[route]]
path_prefix = "/"
upstream = "app"
"#,
        upstream.addr
    )
}

#[tokio::test]
async fn forwards_method_path_query_headers_and_body_both_ways() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&app_config(&upstream)).await;

    let resp = client()
        .post(proxy.url("/echo?x=1&y=two%20words"))
        .header("x-custom", "abc")
        .header("x-anteroom-utm-source", "forged")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-reply"], "yes");
    assert_eq!(resp.headers()["x-upstream"], "test");
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "x=1&y=two%20words");
    assert_eq!(echo["body"], "hello upstream");
    let headers = &echo["headers"];
    assert_eq!(headers["x-custom"], "abc");
    assert_eq!(headers["host"], proxy.addr.to_string());
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(
        headers.get("x-anteroom-utm-source").is_none(),
        "a client must not set anteroom's headers: {headers}"
    );

    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let echo: serde_json::Value = client()
            .request(method.clone(), proxy.url("/echo"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(echo["method"], method.as_str());
    }
}

#[tokio::test]
async fn upstream_statuses_pass_through_and_host_routes_match() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&app_config(&upstream)).await;
    for code in [201u16, 404, 500, 503] {
        let resp = client()
            .get(proxy.url(&format!("/status/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code);
        assert_eq!(resp.text().await.unwrap(), format!("status {code}"));
    }
    let resp = client()
        .get(proxy.url("/echo"))
        .header("host", "only.example")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["host"], "only.example");
    // The Host is passed on unchanged, so there is nothing to add.
    assert!(echo["headers"].get("x-forwarded-host").is_none());
}

#[tokio::test]
async fn unmatched_requests_get_404_json() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&format!(
        "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nhost = \"app.example\"\nupstream = \"app\"\n",
        upstream.addr
    ))
    .await;
    let resp = client().get(proxy.url("/anything")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "NO_ROUTE");
    assert_eq!(
        upstream
            .seen
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn streaming_responses_pass_through_incrementally() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&app_config(&upstream)).await;
    let mut resp = client().get(proxy.url("/stream")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The upstream holds the second event back until we have the first:
    // a buffering proxy would deliver nothing and time out here.
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .expect("first event did not arrive while the stream was still open")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    upstream.seen.gate.notify_one();
    let rest = resp.bytes().await.unwrap();
    assert_eq!(&rest[..], b"data: second\n\n");
}

#[tokio::test]
async fn keepalive_clients_get_complete_anteroom_responses() {
    // anteroom's own responses carry Content-Length, so a keep-alive client
    // can send a second request on the same connection.
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&app_config(&upstream)).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..2 {
        tcp.write_all(b"GET /__anteroom/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let reply = read_until(&mut tcp, "}").await;
        assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
        assert!(
            reply.to_ascii_lowercase().contains("content-length:"),
            "{reply}"
        );
    }
}

struct Tls {
    server: Arc<rustls::ServerConfig>,
    ca_file: tempfile::NamedTempFile,
}

fn self_signed_localhost() -> Tls {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), certified.cert.pem()).unwrap();
    Tls {
        server: Arc::new(server),
        ca_file,
    }
}

#[tokio::test]
async fn tls_upstream_with_its_own_ca() {
    let tls = self_signed_localhost();
    let upstream = TestUpstream::start_tls(tls.server.clone()).await;
    // A second server: Pingora would otherwise reuse the verified connection.
    let other = TestUpstream::start_tls(tls.server.clone()).await;
    let proxy = TestProxy::start(&format!(
        r#"
[[upstream]]
name = "secure"
address = "{addr}"
tls = true
sni = "localhost"
ca_file = "{ca}"

[[upstream]]
name = "untrusted"
address = "{other}"
tls = true
sni = "localhost"

[[route]]
path_prefix = "/untrusted/"
upstream = "untrusted"

[[route]]
path_prefix = "/"
upstream = "secure"
"#,
        addr = upstream.addr,
        other = other.addr,
        ca = tls.ca_file.path().display()
    ))
    .await;
    let resp = client()
        .post(proxy.url("/echo"))
        .body("over tls")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["body"], "over tls");
    // A TLS upstream gets the name on its certificate as Host; the client's is kept aside.
    assert_eq!(echo["headers"]["host"], "localhost");
    assert_eq!(echo["headers"]["x-forwarded-host"], proxy.addr.to_string());

    // Without the CA the certificate is not trusted: the handshake fails.
    let resp = client()
        .get(proxy.url("/untrusted/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "UPSTREAM_ERROR");
}
