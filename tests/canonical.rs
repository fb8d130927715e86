//! No way around the gate: with nginx as the upstream (it merges slashes,
//! resolves `..` and decodes escapes before choosing a location), every
//! spelling of a guarded path or host either meets the room exactly like the
//! plain one, or is refused with 400, over HTTP/1.1, HTTP/2 over TLS (ALPN)
//! and h2c alike. nginx's own logs are the judge of what it served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::nginx::Nginx;
use crate::common::transport::{Answer, Listeners, Request, Tls, Transport};
use crate::common::{Store, TestProxy, TestUpstream, client, eventually};

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
    let (proxy, tls, port) = on_every_protocol(&crate::common::waiting_room_config_for(
        &format!("127.0.0.1:{}", nginx.port),
        Store::Memory,
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
    let to = listeners(&proxy, &tls, port);
    for transport in Transport::ALL {
        for form in forms {
            let req = Request {
                method: "GET",
                path: form,
                host: "shop.test",
                headers: &[("accept", "application/json")],
            };
            match to.send(transport, &req).await {
                Ok((503, body)) => assert!(body.contains("QUEUE_REQUIRED"), "{form}: {body}"),
                // Refused, or a form HTTP/2 cannot carry.
                Ok((400, _)) | Err(_) => {}
                Ok((200, body)) => assert!(
                    body.starts_with("static ") || body.starts_with("root "),
                    "{transport:?} {form}: {body}"
                ),
                Ok((other, body)) => panic!("{transport:?} {form}: {other} {body}"),
            }
        }
    }
    let served = nginx.served("checkout");
    assert!(
        served.is_empty(),
        "walked out of the bypass prefix: {served:?}"
    );
    // The bypass itself still works, on every protocol.
    for transport in Transport::ALL {
        let req = Request {
            method: "GET",
            path: "/static/app.css",
            host: "shop.test",
            headers: &[],
        };
        assert_eq!(
            to.send(transport, &req).await,
            Ok((200, "static /static/app.css\n".to_owned())),
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn a_host_route_is_found_however_its_host_is_spelled() {
    let nginx = Nginx::start(&[("/", "root")]);
    let proxy = TestProxy::start(&HOST_ROUTE.replace("{port}", &nginx.port.to_string())).await;
    let holder = hold_slot(&proxy, "sess", "/x", "sess.test").await;
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
    let (proxy, tls, port) = on_every_protocol(&crate::common::waiting_room_config_for(
        &format!("127.0.0.1:{}", nginx.port),
        Store::Memory,
        "capacity = 5",
        "",
    ))
    .await;
    let to = listeners(&proxy, &tls, port);
    let answers = [
        ("/__anteroom/capacity?room=web", "\"capacity\":5"),
        ("//__anteroom/capacity?room=web", "\"capacity\":5"),
        ("/./__anteroom/capacity?room=web", "\"capacity\":5"),
        ("/x/../__anteroom/capacity?room=web", "\"capacity\":5"),
        ("/%5F%5Fanteroom/capacity?room=web", "\"capacity\":5"),
        ("/__anteroom//capacity?room=web", "\"capacity\":5"),
        ("/__%61nteroom/capacity?room=web", "\"capacity\":5"),
        ("/.well-known/./jwks.json", "\"keys\""),
        ("/.well-known//jwks.json", "\"keys\""),
        ("/%2Ewell-known/jwks.json", "\"keys\""),
        ("/x/../.well-known/jwks.json", "\"keys\""),
    ];
    for transport in Transport::ALL {
        for (form, says) in answers {
            let req = Request {
                method: "GET",
                path: form,
                host: "shop.test",
                headers: &[],
            };
            let (status, body) = to
                .send(transport, &req)
                .await
                .unwrap_or_else(|e| panic!("{transport:?} {form}: {e}"));
            assert_eq!(status, 200, "{transport:?} {form}");
            assert!(body.contains(says), "{transport:?} {form}: {body}");
        }
    }
    assert!(
        nginx.served("root").is_empty(),
        "{:?}",
        nginx.served("root")
    );
}

/// A proxy with a plain listener (HTTP/1.1 and h2c) and a TLS one (ALPN h2):
/// every protocol a client may use, with the certificate the TLS client trusts.
async fn on_every_protocol(toml: &str) -> (TestProxy, Tls, u16) {
    let tls = Tls::new();
    let port = crate::common::free_port();
    let proxy =
        TestProxy::start_with("h2c = true", &format!("{toml}\n{}", tls.listener(port, ""))).await;
    Tls::accepting(port).await;
    (proxy, tls, port)
}

fn listeners<'a>(proxy: &TestProxy, tls: &'a Tls, port: u16) -> Listeners<'a> {
    Listeners {
        plain: proxy.addr,
        tls: ([127, 0, 0, 1], port).into(),
        cert: &tls.cert,
    }
}

/// What an answer says about the room: met it (`503 QUEUE_REQUIRED`),
/// refused as ambiguous (400, a reset stream, or a form the protocol cannot
/// carry), or served by nginx's other location. Anything else fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Met {
    Room,
    Refused,
    Elsewhere,
}

fn met(what: &str, answer: &Answer) -> Met {
    match answer {
        Ok((503, body)) => {
            assert!(body.contains("QUEUE_REQUIRED"), "{what}: {body}");
            Met::Room
        }
        Ok((400, _)) | Err(_) => Met::Refused,
        Ok((200, body)) => {
            assert!(body.starts_with("root "), "{what}: served {body}");
            Met::Elsewhere
        }
        Ok((other, body)) => panic!("{what}: {other} {body}"),
    }
}

const HOST_ROUTE: &str = r#"
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
"#;

/// Holds a requests room's one slot with a POST to `path` on `host` whose
/// body never comes.
async fn hold_slot(proxy: &TestProxy, room: &str, path: &str, host: &str) -> tokio::net::TcpStream {
    let mut holder = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10\r\n\r\n");
    holder.write_all(request.as_bytes()).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        (proxy.capacity(room).await["inUse"] == 1).then_some(())
    })
    .await;
    holder
}

/// A GET as a test writes it: path, host (or `:authority`), other headers.
type Get<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Sends GET `path` to `host` over each of `transports`: each must be
/// decided as `expected`.
async fn each_is(
    to: &Listeners<'_>,
    transports: &[Transport],
    requests: &[Get<'_>],
    expected: Met,
) {
    for &transport in transports {
        for &(path, host, headers) in requests {
            let req = Request {
                method: "GET",
                path,
                host,
                headers,
            };
            let answer = to.send(transport, &req).await;
            let what = format!("{transport:?} {host} {path} {headers:?}");
            assert_eq!(met(&what, &answer), expected, "{what}: {answer:?}");
        }
    }
}

/// The high finding of the attack run: HTTP/2 carries the host in
/// `:authority`, and a host-routed room must be met there exactly as over
/// HTTP/1.1 (it was walked past to the catch-all).
#[tokio::test]
async fn a_host_route_is_met_over_every_protocol() {
    let nginx = Nginx::start(&[("/", "root")]);
    let (proxy, tls, port) =
        on_every_protocol(&HOST_ROUTE.replace("{port}", &nginx.port.to_string())).await;
    let _holder = hold_slot(&proxy, "sess", "/x", "sess.test").await;
    let to = listeners(&proxy, &tls, port);
    let spellings: Vec<Get<'_>> = [
        "sess.test",
        "SESS.test",
        "sess.test.",
        "Sess.Test.:80",
        "SESS.TEST:443",
        "sess.test:8080",
    ]
    .into_iter()
    .map(|host| ("/x", host, &[][..]))
    .collect();
    each_is(&to, &Transport::ALL, &spellings, Met::Room).await;
    // A `Host` beside `:authority` (or a second one) must name the same host.
    let ambiguous: [Get<'_>; 3] = [
        ("/x", "sess.test", &[("host", "other.test")]),
        ("/x", "other.test", &[("host", "sess.test")]),
        ("/x", "sess.test..", &[]),
    ];
    each_is(&to, &Transport::ALL, &ambiguous, Met::Refused).await;
    // curl, as the attack run reproduced it: `:authority` from the URL
    // over TLS, and h2c with the host given as a Host header.
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(&args)
            .output()
            .await
            .expect("curl (scripts/setup installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tls_url = format!("https://sess.test:{port}/x");
    for authority in ["sess.test", "SESS.TEST"] {
        let said = curl(vec![
            "-k".into(),
            "--http2".into(),
            "--resolve".into(),
            format!("{authority}:{port}:127.0.0.1"),
            tls_url.replace("sess.test", authority),
        ])
        .await;
        assert_eq!(said, "503 2", "curl --http2 to {authority}");
    }
    let said = curl(vec![
        "--http2-prior-knowledge".into(),
        "-H".into(),
        "Host: sess.test".into(),
        format!("http://{}/x", proxy.addr),
    ])
    .await;
    assert_eq!(said, "503 2", "curl --http2-prior-knowledge");
    let served = nginx.served("root");
    assert!(served.is_empty(), "walked past the room: {served:?}");
}

/// Every spelling of a guarded path meets its room on HTTP/2 over TLS and
/// h2c exactly as on HTTP/1.1 (the HTTP/1.1 suite above, again).
#[tokio::test]
async fn every_spelling_of_a_guarded_path_meets_its_room_over_http2() {
    let nginx = Nginx::start(&[("/api/gemini/", "gemini"), ("/", "root")]);
    let (proxy, tls, port) = on_every_protocol(&format!(
        "[[upstream]]\nname = \"nginx\"\naddress = \"127.0.0.1:{}\"\n[[room]]\nname = \"gemini\"\nmode = \"requests\"\ncapacity = 1\n[[route]]\npath_prefix = \"/api/gemini/\"\nupstream = \"nginx\"\nroom = \"gemini\"\n[[route]]\npath_prefix = \"/\"\nupstream = \"nginx\"\n",
        nginx.port
    ))
    .await;
    let _holder = hold_slot(&proxy, "gemini", "/api/gemini/hold", "shop.test").await;
    let to = listeners(&proxy, &tls, port);
    let mut carried = 0;
    for transport in [Transport::H2Tls, Transport::H2c] {
        for path in GEMINI_FORMS {
            let req = Request {
                method: "GET",
                path,
                host: "shop.test",
                headers: &[],
            };
            let answer = to.send(transport, &req).await;
            if answer.is_ok() {
                carried += 1;
            }
            met(&format!("{transport:?} {path}"), &answer);
        }
    }
    assert!(carried >= 60, "only {carried} forms went over HTTP/2");
    let served = nginx.served("gemini");
    assert!(
        served.is_empty(),
        "reached the guarded location without a slot: {served:?}"
    );
}

/// A family of targets drawn from a fixed seed (segments, dot segments,
/// escapes, slashes, case, queries): each gets the same decision over
/// HTTP/1.1, HTTP/2 over TLS and h2c, and none reaches the guarded location
/// while its room is full.
#[tokio::test]
async fn http1_and_http2_decide_every_target_alike() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let nginx = Nginx::start(&[("/api/gemini/", "gemini"), ("/", "root")]);
    let (proxy, tls, port) = on_every_protocol(&format!(
        "[[upstream]]\nname = \"nginx\"\naddress = \"127.0.0.1:{n}\"\n[[room]]\nname = \"gemini\"\nmode = \"requests\"\ncapacity = 1\n[[room]]\nname = \"sess\"\nmode = \"requests\"\ncapacity = 1\n[[route]]\nhost = \"sess.test\"\nupstream = \"nginx\"\nroom = \"sess\"\n[[route]]\npath_prefix = \"/api/gemini/\"\nupstream = \"nginx\"\nroom = \"gemini\"\n[[route]]\npath_prefix = \"/\"\nupstream = \"nginx\"\n",
        n = nginx.port
    ))
    .await;
    let _gemini = hold_slot(&proxy, "gemini", "/api/gemini/hold", "shop.test").await;
    let _sess = hold_slot(&proxy, "sess", "/x", "sess.test").await;
    let to = listeners(&proxy, &tls, port);
    const SEGMENTS: &[&str] = &[
        "api", "gemini", "x", "API", "Gemini", ".", "..", "%2e", "%2E%2e", "%2f", "%61pi",
        "gem%69ni", "%5c", "a;b", "%25", "", "%00", "%c0%ae", "%20", "~user", "a+b",
    ];
    const HOSTS: &[&str] = &[
        "shop.test",
        "SHOP.test.",
        "sess.test",
        "Sess.Test:443",
        "sess.test.:8080",
        "other.test",
    ];
    let mut rng = StdRng::seed_from_u64(26);
    let mut decided = [0usize; 3];
    for _ in 0..120 {
        let mut path = String::new();
        // Often the guarded prefix, so that most draws test the room.
        if rng.gen_bool(0.5) {
            path.push_str("/api/gemini");
        }
        for _ in 0..rng.gen_range(1..5) {
            path.push('/');
            path.push_str(SEGMENTS[rng.gen_range(0..SEGMENTS.len())]);
        }
        if rng.gen_bool(0.2) {
            path.push_str("?q=%2e%2e/x");
        }
        let host = HOSTS[rng.gen_range(0..HOSTS.len())];
        let req = Request {
            method: "GET",
            path: &path,
            host,
            headers: &[],
        };
        let mut seen = Vec::new();
        for transport in Transport::ALL {
            let answer = to.send(transport, &req).await;
            seen.push(met(&format!("{transport:?} {host} {path}"), &answer));
        }
        assert!(
            seen.iter().all(|m| *m == seen[0]),
            "{host} {path}: HTTP/1.1, h2 over TLS, h2c decided {seen:?}"
        );
        decided[seen[0] as usize] += 1;
    }
    // The family reaches every decision.
    assert!(decided.iter().all(|n| *n > 0), "{decided:?}");
    assert!(nginx.served("gemini").is_empty());
}

/// For an upstream that reads paths without regard to case (IIS, ASP.NET),
/// `case_insensitive = true` makes `/API/gemini/x` meet the room of
/// `/api/gemini/`, on every protocol; without it the prefix is compared as
/// written, as nginx does.
#[tokio::test]
async fn a_case_insensitive_route_meets_its_room_in_any_case() {
    let nginx = Nginx::start(&[("/", "root")]);
    let (proxy, tls, port) = on_every_protocol(&format!(
        "[[upstream]]\nname = \"app\"\naddress = \"127.0.0.1:{}\"\n[[room]]\nname = \"gemini\"\nmode = \"requests\"\ncapacity = 1\n[[route]]\npath_prefix = \"/api/gemini/\"\ncase_insensitive = true\nupstream = \"app\"\nroom = \"gemini\"\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        nginx.port
    ))
    .await;
    let _holder = hold_slot(&proxy, "gemini", "/api/gemini/hold", "shop.test").await;
    let to = listeners(&proxy, &tls, port);
    let cases: Vec<Get<'_>> = [
        "/API/gemini/x",
        "/Api/Gemini/x",
        "/api/GEMINI/x",
        "//API/./gemini/x",
    ]
    .into_iter()
    .map(|path| (path, "shop.test", &[][..]))
    .collect();
    each_is(&to, &Transport::ALL, &cases, Met::Room).await;
    assert!(
        nginx.served("root").is_empty(),
        "{:?}",
        nginx.served("root")
    );
}
