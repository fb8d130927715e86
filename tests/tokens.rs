//! Forged, expired and malformed tokens are no tokens at all: never
//! admitted, never a panic. And a real pass verifies with an independent
//! JWT library against the published JWKS, which (like the client script)
//! browsers and apps may cache.

use std::sync::atomic::Ordering::SeqCst;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::{Store, TestProxy, TestUpstream, client, get_json, keys, waiting_room_config};

fn private_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(&keys().private).unwrap()).unwrap()
}

fn kid(jwks: &Value) -> String {
    jwks["keys"][0]["kid"].as_str().unwrap().to_owned()
}

fn rs256(claims: &Value, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn pass_claims(aud: &str, sub: &str, iat: u64, nbf: u64, exp: u64) -> Value {
    json!({"iss": "anteroom", "aud": aud, "sub": sub, "kind": "pass", "iat": iat, "nbf": nbf, "exp": exp})
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_are_never_admitted() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::one_place(&upstream).await;
    let mut inside = proxy.visitor();
    assert_eq!(inside.get("/echo").await.0, 200);
    let real = inside.pass.clone().unwrap();
    let jwks: Value = get_json(proxy.url("/.well-known/jwks.json")).await;
    let kid = kid(&jwks);
    let (header_b64, payload_b64, _) = {
        let mut parts = real.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let claims: Value = serde_json::from_slice(&B64.decode(&payload_b64).unwrap()).unwrap();
    let sub = claims["sub"].as_str().unwrap().to_owned();
    let now = anteroom::token::now_secs();
    let key = private_key();

    let other_dir = tempfile::tempdir().unwrap();
    let (other_private, _, other_kid) =
        anteroom::token::keygen(other_dir.path(), 2048, false).unwrap();
    let other_key = EncodingKey::from_rsa_pem(&std::fs::read(other_private).unwrap()).unwrap();

    let public_pem = std::fs::read(&keys().public).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let none_header = B64.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let tampered_payload = {
        let mut c = claims.clone();
        c["sub"] = json!("00000000000000000000000000000001");
        B64.encode(c.to_string())
    };
    let ticket_as_pass = {
        let mut t = proxy.visitor();
        t.get("/echo").await;
        t.ticket.clone().unwrap()
    };

    let attacks: Vec<(&str, String)> = vec![
        ("alg none", format!("{none_header}.{payload_b64}.")),
        (
            "alg none, no signature part",
            format!("{none_header}.{payload_b64}"),
        ),
        (
            "HS256 keyed with the public key",
            jsonwebtoken::encode(&hs_header, &claims, &EncodingKey::from_secret(&public_pem))
                .unwrap(),
        ),
        ("unknown kid", rs256(&claims, &other_kid, &other_key)),
        ("right kid, other key", rs256(&claims, &kid, &other_key)),
        (
            "expired",
            rs256(
                &pass_claims("web", &sub, now - 7200, now - 7200, now - 3600),
                &kid,
                &key,
            ),
        ),
        (
            "not yet valid",
            rs256(
                &pass_claims("web", &sub, now, now + 3600, now + 7200),
                &kid,
                &key,
            ),
        ),
        (
            "other room",
            rs256(&pass_claims("other", &sub, now, now, now + 600), &kid, &key),
        ),
        (
            "wrong issuer",
            rs256(
                &json!({"iss": "evil", "aud": "web", "sub": sub, "kind": "pass", "iat": now, "nbf": now, "exp": now + 600}),
                &kid,
                &key,
            ),
        ),
        (
            "missing exp",
            rs256(
                &json!({"iss": "anteroom", "aud": "web", "sub": sub, "kind": "pass", "iat": now, "nbf": now}),
                &kid,
                &key,
            ),
        ),
        (
            "tampered payload",
            format!(
                "{header_b64}.{tampered_payload}.{}",
                real.rsplit('.').next().unwrap()
            ),
        ),
        ("truncated", real[..real.len() / 2].to_owned()),
        ("signature cut", real[..real.len() - 5].to_owned()),
        ("ticket as pass", ticket_as_pass),
        ("garbage", "garbage".to_owned()),
        ("three dots", "a.b.c".to_owned()),
        ("empty parts", "..".to_owned()),
        ("not base64", "!!!.@@@.###".to_owned()),
        ("unicode", "ümlaut.☃.💥".to_owned()),
        ("json but not jwt", B64.encode("{}")),
        ("huge", "A".repeat(100 * 1024)),
    ];
    let c = client();
    for (name, token) in &attacks {
        for how in ["x-anteroom-pass", "authorization", "cookie"] {
            let req = c
                .get(proxy.url("/echo"))
                .header("accept", "application/json");
            let req = match how {
                "authorization" => req.header("authorization", format!("Bearer {token}")),
                "cookie" => req.header("cookie", format!("anteroom_pass={token}")),
                _ => req.header(how, token.as_str()),
            };
            let Ok(resp) = req.send().await else {
                continue; // a header too large for the connection is not an admission either
            };
            let status = resp.status().as_u16();
            assert!(
                status == 503 || status == 431 || status == 400,
                "{name} via {how}: admitted with {status}"
            );
            if status == 503 {
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["code"], "QUEUE_REQUIRED", "{name} via {how}");
            }
        }
        // As a ticket, a forged token is no place in line either: a new one at the back.
        let resp = c
            .get(proxy.url("/__anteroom/status"))
            .header("x-anteroom-ticket", token.as_str())
            .send()
            .await;
        if let Ok(resp) = resp {
            if resp.status() == 200 {
                let body: Value = resp.json().await.unwrap();
                assert_ne!(body["state"], "admitted", "{name} as ticket");
            }
        }
    }
    assert_eq!(
        upstream.seen.requests.load(SeqCst),
        1,
        "only the real visitor reached the app"
    );
    // Still healthy, and the real pass still works.
    assert_eq!(
        c.get(proxy.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(inside.get("/echo").await.0, 200);
}

#[tokio::test]
async fn pass_verifies_with_pyjwt_against_the_jwks() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&waiting_room_config(
        &upstream,
        Store::Memory,
        "capacity = 5",
        "",
    ))
    .await;
    let mut v = proxy.visitor();
    let (status, echo) = v.get("/echo").await;
    assert_eq!(status, 200);
    // The app received the pass and can verify it itself.
    let pass = echo["headers"]["x-anteroom-pass"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = std::process::Command::new("python3")
        .arg("tests/verify_pass.py")
        .arg(proxy.url("/.well-known/jwks.json"))
        .arg(&pass)
        .arg("web")
        .output()
        .expect("python3 is needed (./scripts/setup installs PyJWT)");
    assert!(
        out.status.success(),
        "PyJWT refused the pass (run ./scripts/setup to install PyJWT):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Value =
        serde_json::from_slice(&B64.decode(pass.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), claims["sub"]);
}

/// The JWKS is cacheable for a while (one `Cache-Control`), tagged, and
/// revalidated with `304` while the keys are the same.
#[tokio::test]
async fn the_jwks_is_cached_tagged_and_revalidated() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::one_place(&upstream).await;
    let http = client();
    let url = proxy.url("/.well-known/jwks.json");
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let cache: Vec<_> = first.headers().get_all("cache-control").iter().collect();
    assert_eq!(cache, ["public, max-age=300"]);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    assert!(first.json::<Value>().await.unwrap()["keys"].is_array());

    let again = http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert_eq!(again.headers()["cache-control"], "public, max-age=300");
    assert!(again.bytes().await.unwrap().is_empty());

    let other = http
        .get(&url)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

/// The client script is served to every page, cacheable and tagged, and
/// stays small.
#[tokio::test]
async fn the_client_script_is_small_cached_and_tagged() {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::one_place(&upstream).await;
    let http = client();
    let resp = http
        .get(proxy.url("/__anteroom/client.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(resp.headers()["cache-control"], "public, max-age=3600");
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let script = resp.text().await.unwrap();
    assert!(script.contains("global.Anteroom"), "{script}");
    assert!(script.len() < 8 * 1024, "{} bytes", script.len());
    let again = http
        .get(proxy.url("/__anteroom/client.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let post = http
        .post(proxy.url("/__anteroom/client.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}
