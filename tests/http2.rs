//! HTTP/2, as phones' browsers speak it: negotiated by ALPN on the TLS
//! listeners (HTTP/1.1 for the rest), h2c on plain listeners when asked,
//! to upstreams that speak it; the room rules hold per stream; HSTS and the
//! redirect of plain listeners to HTTPS.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Version;

use crate::common::nginx::Nginx;
use crate::common::process::Process;
use crate::common::transport::Tls;
use crate::common::{TestUpstream, eventually, free_port, get_json};

fn requests_room(upstream: &TestUpstream, capacity: u32) -> String {
    format!(
        "[[upstream]]\nname = \"app\"\naddress = \"{}\"\nread_timeout = \"60s\"\n[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = {capacity}\n[[route]]\nupstream = \"app\"\nroom = \"r\"\n",
        upstream.addr
    )
}

#[tokio::test]
async fn h2_is_negotiated_on_tls_and_every_stream_counts_against_the_room() {
    let tls = Tls::new();
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let p = Process::start(
        "1s",
        &format!("{}{}", tls.listener(port, ""), requests_room(&upstream, 2)),
    )
    .await;
    Tls::accepting(port).await;
    let http = tls.client();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let first = http.get(url("/echo")).send().await.unwrap();
    assert_eq!(first.version(), Version::HTTP_2);
    assert_eq!(first.status(), 200);

    // Ten streams at once on the one connection: two slots, two answered.
    let answers = join_all((0..10).map(|_| http.get(url("/slow?ms=400")).send())).await;
    let mut statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [[200; 2].as_slice(), &[503; 8]].concat());
    assert!(upstream.seen.peak.load(SeqCst) <= 2);

    // A stream reset by the client (its request dropped) gives its slot back.
    let hung = tokio::spawn({
        let (http, url) = (http.clone(), url("/hang"));
        async move { http.get(url).send().await }
    });
    eventually(Duration::from_secs(5), || async {
        (upstream.seen.in_flight.load(SeqCst) == 1).then_some(())
    })
    .await;
    hung.abort();
    eventually(Duration::from_secs(5), || async {
        let room = get_json(p.admin_url("/admin/rooms/r")).await;
        (room["inUse"] == 0).then_some(())
    })
    .await;
    // A connection lost with a stream on it gives that slot back too.
    let lost = tls.client();
    let on_it = tokio::spawn({
        let url = url("/hang");
        async move { lost.get(url).send().await }
    });
    eventually(Duration::from_secs(5), || async {
        (upstream.seen.in_flight.load(SeqCst) == 1).then_some(())
    })
    .await;
    on_it.abort(); // the client and its only connection go with the task
    eventually(Duration::from_secs(5), || async {
        let room = get_json(p.admin_url("/admin/rooms/r")).await;
        (room["inUse"] == 0).then_some(())
    })
    .await;
    // And the room is whole again: two at once.
    let again = join_all((0..2).map(|_| http.get(url("/slow?ms=100")).send())).await;
    assert!(again.into_iter().all(|r| r.unwrap().status() == 200));

    // A client that offers only HTTP/1.1 gets it.
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_certs_only([reqwest::Certificate::from_der(tls.cert.der()).unwrap()])
        .build()
        .unwrap();
    let resp = h1.get(url("/echo")).send().await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
}

#[tokio::test]
async fn h2c_is_spoken_on_plain_listeners_when_asked_and_to_upstreams_that_speak_it() {
    let nginx = Nginx::start_h2c(&[("/", "root")]);
    let p = Process::start_server(
        "h2c = true",
        &format!(
            "[[upstream]]\nname = \"app\"\naddress = \"127.0.0.1:{}\"\nh2 = true\n[[route]]\nupstream = \"app\"\n",
            nginx.port
        ),
    )
    .await;
    let h2c = crate::common::h2c_client();
    let resp = h2c.get(p.url("/x")).send().await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    // nginx listens for HTTP/2 only: it answered, over HTTP/2.
    assert_eq!(resp.text().await.unwrap(), "root /x HTTP/2.0\n");
    // HTTP/1.1 clients are still served on the same listener.
    let resp = crate::common::client()
        .get(p.url("/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn hsts_on_tls_answers_and_plain_listeners_redirect_to_https() {
    let tls = Tls::new();
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let p = Process::start_server(
        "redirect_https = true",
        &format!(
            "{}{}",
            tls.listener(port, "hsts = \"365d\""),
            requests_room(&upstream, 2)
        ),
    )
    .await;
    Tls::accepting(port).await;
    let http = tls.client();
    for path in ["/echo", "/__anteroom/capacity?room=r"] {
        let resp = http
            .get(format!("https://localhost:{port}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
    }
    let plain = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = plain
        .post(p.url("/shop/cart?item=2"))
        .header("host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://localhost:{port}/shop/cart?item=2").as_str()
    );
    assert!(!resp.headers().contains_key("strict-transport-security"));
    assert_eq!(
        upstream.seen.requests.load(SeqCst),
        1,
        "nothing plain reached the app"
    );
}

/// `hsts_include_subdomains` and `hsts_preload` add their directives, as
/// the preload lists ask for them.
#[tokio::test]
async fn hsts_can_cover_subdomains_and_ask_for_preloading() {
    let tls = Tls::new();
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let _p = Process::start(
        "1s",
        &format!(
            "{}{}",
            tls.listener(
                port,
                "hsts = \"365d\"\nhsts_include_subdomains = true\nhsts_preload = true"
            ),
            requests_room(&upstream, 2)
        ),
    )
    .await;
    Tls::accepting(port).await;
    let resp = tls
        .client()
        .get(format!("https://localhost:{port}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains; preload"
    );
}
