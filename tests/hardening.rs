//! What an attacker, a scanner or a slow client sends, and what anteroom
//! makes of it: redirects only to its own site, the client address behind
//! trusted proxies, headers reserved to anteroom, limits the admin API
//! shares with the file, slow and idle connections, and config input that
//! must neither panic nor hang.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::metric;
use crate::common::process::Process;
use crate::common::{Store, TestProxy, TestUpstream, client, eventually, waiting_room_config};

/// Whether the peer has closed the connection: a read gets end-of-file (or
/// an error) within `wait`.
async fn closed(tcp: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn the_return_address_stays_on_the_site() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::one_place(&upstream).await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let evil = [
        "/%09/evil.example/x",
        "/\t/evil.example/x",
        "/\n/evil.example/x",
        "/\r\n/evil.example",
        "//evil.example/x",
        "/\\evil.example/x",
        "\\\\evil.example/x",
        "/%5Cevil.example/x",
        "/%2F/evil.example/x",
        "https://evil.example/x",
        "http:evil.example",
        "javascript:alert(1)",
        " //evil.example",
        "/ /evil.example",
        "/\u{0}/evil.example",
        "/.//evil.example",
        "/..//evil.example",
        "/%2e%2e//evil.example",
    ];
    let mut locations = Vec::new();
    for back in evil.iter().chain(&["/shop/cart?step=2"]) {
        let url = format!(
            "{}?return={}",
            proxy.url("/__anteroom/leave"),
            form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
        );
        let resp = no_redirects.post(url).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{back:?}");
        locations.push(resp.headers()["location"].to_str().unwrap().to_owned());
    }
    assert_eq!(
        locations.last().map(String::as_str),
        Some("/shop/cart?step=2")
    );
    // The judge is a WHATWG URL parser, as browsers use: every Location stays on the site.
    let script = format!(
        "const ls = {}; for (const l of ls) {{ const u = new URL(l, 'http://shop.test/'); \
         if (u.origin !== 'http://shop.test') {{ console.log('LEAVES ' + JSON.stringify(l) + ' -> ' + u.href); process.exit(1); }} }}",
        serde_json::to_string(&locations).unwrap()
    );
    let out = Command::new("node").args(["-e", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_client_address_is_what_trusted_proxies_say_and_no_more() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start_with(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        &waiting_room_config(
            &upstream,
            Store::Memory,
            "capacity = 1\n[room.bypass]\ncidrs = [\"1.2.3.4/32\"]",
            "",
        ),
    )
    .await;
    let mut inside = proxy.visitor();
    assert_eq!(inside.get("/").await.0, 200);
    let get = |lines: &'static [&'static str]| {
        let url = proxy.url("/echo");
        async move {
            let mut req = client().get(url).header("accept", "application/json");
            for line in lines {
                req = req.header("x-forwarded-for", *line);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    // The address the nearest trusted proxy saw passes the network rule.
    let (status, echo) = get(&["9.9.9.9, 1.2.3.4"]).await;
    assert_eq!(status, 200);
    assert_eq!(
        echo["headers"]["x-forwarded-for"], "1.2.3.4, 127.0.0.1",
        "what anteroom decided on"
    );
    // What is not an address ends the walk: an attacker's entry further left never counts.
    for lines in [
        &["1.2.3.4, 9.9.9.9:5555"][..],
        &["1.2.3.4, unknown"],
        &["1.2.3.4, [::1]:80"],
        &["1.2.3.4, garbage"],
        &["1.2.3.4", "9.9.9.9"],
        &["1.2.3.4,"],
    ] {
        let (status, _) = get(lines).await;
        assert_eq!(status, 503, "{lines:?} was taken for 1.2.3.4");
    }
}

#[tokio::test]
async fn headers_reserved_to_anteroom_never_reach_the_upstream() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&format!(
        "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nupstream = \"app\"\n",
        upstream.addr
    ))
    .await;
    let echo: serde_json::Value = client()
        .get(proxy.url("/echo"))
        .header("X_Anteroom_Pass", "forged")
        .header("X-Anteroom_Wait_Ms", "0")
        .header("x-anteroom-utm-source", "forged")
        .header("X_Forwarded_For", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = echo["headers"].as_object().unwrap();
    for (name, value) in headers {
        let folded = name.replace('_', "-");
        assert!(
            !folded.starts_with("x-anteroom-")
                && !["x-real-ip", "forwarded", "x-forwarded-host"].contains(&folded.as_str()),
            "{name}: {value} reached the upstream"
        );
    }
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-kept"], "yes");
}

#[tokio::test]
async fn the_admin_api_keeps_the_limits_of_the_file() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&format!(
        "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\n[[route]]\nupstream = \"app\"\nroom = \"r\"\n",
        upstream.addr
    ))
    .await;
    let patch = |body: serde_json::Value| {
        client()
            .patch(proxy.admin_url("/admin/rooms/r"))
            .json(&body)
            .send()
    };
    for bad in [
        serde_json::json!({"capacity": 4_294_967_295u64}),
        serde_json::json!({"capacity": 10_000_001}),
        serde_json::json!({"capacity": 0}),
    ] {
        assert_eq!(patch(bad.clone()).await.unwrap().status(), 400, "{bad}");
    }
    assert_eq!(
        patch(serde_json::json!({"capacity": 10_000_000}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(proxy.capacity("r").await["capacity"], 10_000_000);
}

#[tokio::test]
async fn a_slow_header_and_an_idle_connection_are_closed() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start_with(
        "header_timeout = \"1s\"\nkeepalive_timeout = \"1s\"",
        &format!(
            "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nupstream = \"app\"\n",
            upstream.addr
        ),
    )
    .await;
    // Slowloris: a byte every 200 ms never completes the header. The
    // connection is closed, long before the byte budget of 5 s runs out.
    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0;
    for byte in header {
        if slow.write_all(&[*byte]).await.is_err()
            || closed(&mut slow, Duration::from_millis(200)).await
        {
            break;
        }
        sent += 1;
    }
    assert!(sent < header.len(), "the slow header was never cut off");
    assert!(
        sent <= 10,
        "cut off after {sent} bytes at 5 a second, with a 1 s header timeout"
    );
    // A kept-alive connection with nothing to say is closed too.
    let mut idle = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    crate::common::read_until(&mut idle, "upstream saw /x").await;
    assert!(
        closed(&mut idle, Duration::from_secs(5)).await,
        "an idle keep-alive connection stayed open"
    );
    // A header that arrives in time is served.
    let mut fine = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    fine.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fine.write_all(b"Host: x\r\n\r\n").await.unwrap();
    crate::common::read_until(&mut fine, "upstream saw /ok").await;
    let metrics = proxy.metrics().await;
    assert!(
        metric("anteroom_connections_header_timeouts_total").of(&metrics) > 0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stalled_body_gives_its_slot_back() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start_with(
        "body_timeout = \"1s\"",
        &format!(
            "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\n[[route]]\nupstream = \"app\"\nroom = \"r\"\n",
            upstream.addr
        ),
    )
    .await;
    let mut stalled = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stalled
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        (proxy.capacity("r").await["inUse"] == 1).then_some(())
    })
    .await;
    // Nothing more comes: within the body timeout the slot is back.
    proxy.wait_room_idle("r").await;
    assert!(closed(&mut stalled, Duration::from_secs(5)).await);
    let resp = client().get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_counted() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start_with(
        "max_connections = 2",
        &format!(
            "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nupstream = \"app\"\n",
            upstream.addr
        ),
    )
    .await;
    // The harness's own readiness probes are gone first.
    eventually(Duration::from_secs(10), || async {
        (metric("anteroom_connections_open").value(&proxy.metrics().await) == Some(0.0))
            .then_some(())
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        crate::common::read_until(&mut tcp, "upstream saw /a").await;
        held.push(tcp);
    }
    let mut third = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let _ = third.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        closed(&mut third, Duration::from_secs(5)).await,
        "a third connection was served"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric("anteroom_connections_open").value(&metrics),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric("anteroom_connections_refused_total").value(&metrics),
        Some(1.0),
        "{metrics}"
    );
    drop(held);
    eventually(Duration::from_secs(10), || async {
        (metric("anteroom_connections_open").value(&proxy.metrics().await) == Some(0.0))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn scanners_and_hang_ups_are_counted_not_logged_as_errors() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let upstream = TestUpstream::start().await;
    let tls_port = crate::common::free_port();
    let process = Process::start_server(
        "grace_period = \"1s\"\nheader_timeout = \"1s\"\nh2c = true",
        &format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nupstream = \"app\"\n",
            cert.display(),
            key.display(),
            upstream.addr
        ),
    )
    .await;
    // Not TLS at all, a TLS handshake cut off, a header cut off, a request abandoned.
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"\x16\x03\x01\x00\x05hello"] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
            .await
            .unwrap();
        tcp.write_all(garbage).await.unwrap();
        drop(tcp);
    }
    // HTTP/2 agreed by ALPN, then closed before the preface (TLS health
    // checks, testssl, browsers' unused pre-connects).
    let h2 = crate::common::transport::connector(&certified.cert);
    for _ in 0..5 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
            .await
            .unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = h2.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        drop(tls);
    }
    let mut partial = tokio::net::TcpStream::connect(("127.0.0.1", process.public))
        .await
        .unwrap();
    partial.write_all(b"GET /x HTTP/1.1\r\nHo").await.unwrap();
    drop(partial);
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", process.public))
        .await
        .unwrap();
    // Fewer bytes than the h2c preface, then nothing: closed at the header
    // deadline too (Pingora's peek for the preface was out of its reach).
    slow.write_all(b"GET /x HTTP/1.1\r\n").await.unwrap();
    assert!(closed(&mut slow, Duration::from_secs(5)).await);
    let hang = client()
        .get(process.url("/hang"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hang.is_err());
    let metrics = eventually(Duration::from_secs(10), || async {
        let m = crate::common::get_text(process.admin_url("/metrics")).await;
        let count = |name: &str| {
            m.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (count("anteroom_tls_handshake_failures_total") >= 2
            && count("anteroom_http2_handshake_failures_total") >= 5
            && count("anteroom_client_disconnects_total") >= 1)
            .then_some(m)
    })
    .await;
    let log = process.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "error lines: {errors:#?}\n{metrics}");
}

#[tokio::test]
async fn check_refuses_impossible_durations_and_endless_files_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[[upstream]]\nname = \"app\"\naddress = \"127.0.0.1:3000\"\n[[route]]\nupstream = \"app\"\n";
    let key = crate::common::keys().private.display().to_string();
    for (text, key_named) in [
        (
            format!(
                "[tokens]\nsigning_key = \"{key}\"\n{base}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\npoll_interval = \"18446744073709551615s\"\n"
            ),
            "room[0].poll_interval",
        ),
        (
            format!("[admin]\ntoken_file = \"/dev/zero\"\n{base}"),
            "admin.token_file",
        ),
        (
            format!("[server]\nheader_timeout = \"9999999999d\"\n{base}"),
            "server.header_timeout",
        ),
        (
            format!("[server]\nmax_connections = 99999999999\n{base}"),
            "server.max_connections",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_anteroom"))
            .args(["check", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("check hung on {key_named}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(1), "{key_named}: {stderr}");
        assert!(stderr.contains(key_named), "{key_named}: {stderr}");
    }
    // The config file itself must be a file.
    let out = Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args(["check", "--config", "/dev/zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}
