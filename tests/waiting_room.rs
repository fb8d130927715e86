//! The waiting room over real HTTP: fair order, priority lanes, heartbeats,
//! claims, releases, room states, attribution, bypass. Every scenario runs
//! against every store backend (one suite, several stores).

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::common::metric;
use crate::common::{
    Store, TestProxy, TestUpstream, Visitor, client, eventually, waiting_room_config,
};

crate::each_store!(
    fifty_visitors_are_admitted_in_arrival_order,
    priority_overtakes_but_normal_still_advances,
    silent_visitor_keeps_place_and_no_show_loses_reservation,
    refresh_keeps_the_position,
    release_command_and_leave_free_the_slot_at_once,
    paused_keeps_order_and_maintenance_closes,
    concurrent_arrivals_never_exceed_capacity,
    attribution_reaches_the_upstream_and_conversions_count,
    bypass_by_path_network_and_app_token,
    status_and_capacity_report_the_place,
    full_queue_is_refused,
    waiting_page_in_english_and_german,
    a_wait_longer_than_a_day_is_not_told,
    campaigns_are_recorded_and_passed_on_only_with_consent,
    a_burst_is_told_places_and_waits_that_agree,
);

async fn start(upstream: &TestUpstream, backend: Store, room: &str, after: &str) -> TestProxy {
    TestProxy::start(&waiting_room_config(upstream, backend, room, after)).await
}

/// Fills the room with `n` admitted visitors.
async fn admit(proxy: &TestProxy, n: usize) -> Vec<Visitor> {
    let mut inside = Vec::new();
    for _ in 0..n {
        let mut v = proxy.visitor();
        let (status, _) = v.get("/echo").await;
        assert_eq!(status, 200, "room should still have space");
        assert!(v.admitted());
        inside.push(v);
    }
    inside
}

/// Every waiting visitor polls once; returns the indices admitted.
async fn poll_all(waiting: &mut [Visitor], done: &[bool]) -> Vec<usize> {
    let mut admitted = Vec::new();
    for (i, v) in waiting.iter_mut().enumerate() {
        if done[i] {
            continue;
        }
        let status = v.poll().await;
        if status["state"] == "admitted" {
            admitted.push(i);
        }
    }
    admitted
}

async fn fifty_visitors_are_admitted_in_arrival_order(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 5\nclaim_window = \"30s\"\npoll_interval = \"5s\"",
        "",
    )
    .await;
    let mut inside = admit(&proxy, 5).await;
    let mut waiting = Vec::new();
    for i in 0..45u64 {
        let mut v = proxy.visitor();
        let (status, body) = v.get("/echo").await;
        assert_eq!(status, 503);
        assert_eq!(body["code"], "QUEUE_REQUIRED");
        assert_eq!(body["position"], i + 1, "arrival {i}");
        waiting.push(v);
    }
    let mut order = Vec::new();
    let mut done = vec![false; waiting.len()];
    while order.len() < waiting.len() {
        // One slot frees; the next poll round admits exactly the head.
        let mut leaving = inside.remove(0);
        assert_eq!(leaving.leave().await["state"], "released");
        let admitted = poll_all(&mut waiting, &done).await;
        assert_eq!(
            admitted.len(),
            1,
            "one free slot, one admission: {admitted:?}"
        );
        for i in admitted {
            done[i] = true;
            order.push(i);
            // Admitted visitors are let through and stay inside.
            let (status, _) = waiting[i].get("/echo").await;
            assert_eq!(status, 200);
        }
        let mut v = std::mem::replace(&mut waiting[*order.last().unwrap()], proxy.visitor());
        v.ticket = None;
        inside.push(v);
    }
    assert_eq!(order, (0..45).collect::<Vec<_>>());
    let room = proxy.admin_room("web").await;
    assert_eq!(room["inUse"], 5);
    assert_eq!(room["waiting"], 0);
}

async fn priority_overtakes_but_normal_still_advances(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\nclaim_window = \"30s\"\npriority_weight = 2\n[room.priority]\npaths = [\"/vip/\"]",
        "",
    )
    .await;
    let mut inside = admit(&proxy, 1).await;
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let mut v = proxy.visitor();
        assert_eq!(v.get("/echo").await.0, 503);
        waiting.push(("normal", v));
    }
    // Priority visitors go ahead of the four normal ones; with weight 2 the
    // third is told one normal visitor is served before it.
    for expected in [1, 2, 4] {
        let mut v = proxy.visitor();
        let (status, body) = v.get("/vip/echo").await;
        assert_eq!(status, 503);
        assert_eq!(body["position"], expected, "{body}");
        waiting.push(("priority", v));
    }
    let mut order = Vec::new();
    for _ in 0..7 {
        inside.remove(0).leave().await;
        let mut admitted = None;
        for (i, (_, v)) in waiting.iter_mut().enumerate() {
            if !v.admitted() && v.poll().await["state"] == "admitted" {
                assert!(admitted.is_none(), "two admitted for one slot");
                admitted = Some(i);
            }
        }
        let i = admitted.expect("nobody admitted for a free slot");
        order.push(waiting[i].0);
        let mut v = proxy.visitor();
        v.pass = waiting[i].1.pass.clone();
        inside.push(v);
    }
    // Weight 2: two priority, one normal, one priority, then the rest.
    assert_eq!(
        order,
        [
            "priority", "priority", "normal", "priority", "normal", "normal", "normal"
        ]
    );
}

async fn silent_visitor_keeps_place_and_no_show_loses_reservation(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\npoll_interval = \"200ms\"\nclaim_window = \"600ms\"\nheartbeat_timeout = \"600ms\"\nrejoin_grace = \"1m\"",
        "",
    )
    .await;
    let mut inside = admit(&proxy, 1).await;
    let mut silent = proxy.visitor();
    assert_eq!(silent.get("/echo").await.0, 503);
    let mut patient = proxy.visitor();
    assert_eq!(patient.get("/echo").await.1["position"], 2);

    // The silent one stops polling: past the heartbeat timeout it is ahead of nobody.
    patient.poll_until(|p| p["position"] == 1).await;
    // A slot frees while the silent one is away: the patient one gets it.
    inside.remove(0).leave().await;
    patient.poll_until(|p| p["state"] == "admitted").await;
    // The silent one comes back within the grace: first in line again.
    assert_eq!(silent.poll().await["position"], 1);
    let mut late = proxy.visitor();
    assert_eq!(late.get("/echo").await.1["position"], 2);

    // The head gets a reservation but does not claim it in the window: it passes on.
    patient.leave().await;
    late.poll_until(|p| p["state"] == "admitted").await;
    // The no-show keeps its place at the front for the next slot.
    assert_eq!(silent.poll().await["position"], 1);
    late.leave().await;
    silent.poll_until(|p| p["state"] == "admitted").await;
}

async fn refresh_keeps_the_position(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(&upstream, backend, "capacity = 1", "").await;
    let _inside = admit(&proxy, 1).await;
    let c = client();
    let page = |cookie: Option<String>| {
        let mut req = c
            .get(proxy.url("/shop/item?id=3"))
            .header("accept", "text/html")
            .header("accept-language", "en");
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send()
    };
    let first = page(None).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "no-store");
    let ticket = crate::common::visitor::set_cookie(&first, "anteroom_ticket").unwrap();
    let set_cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "not over TLS: {set_cookie}");
    let html = first.text().await.unwrap();
    assert!(html.contains(r#"id="position">1<"#), "{html}");
    // The browser comes back with its ticket (its page polls, or refreshes).
    page(Some(format!("anteroom_ticket={ticket}")))
        .await
        .unwrap();

    let other = page(None).await.unwrap().text().await.unwrap();
    assert!(other.contains(r#"id="position">2<"#));
    // Refreshes (and a second tab) with the same ticket keep place 1.
    for _ in 0..3 {
        let again = page(Some(format!("anteroom_ticket={ticket}")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(again.contains(r#"id="position">1<"#));
    }
    assert_eq!(
        upstream.seen.requests.load(SeqCst),
        1,
        "only the admitted visitor reached the app"
    );
}

async fn release_command_and_leave_free_the_slot_at_once(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 2\nsession_ttl = \"10m\"",
        "",
    )
    .await;
    let mut inside = admit(&proxy, 2).await;
    assert_eq!(proxy.capacity("web").await["available"], 0);

    // The app ends a session with a response header.
    let resp = client()
        .get(proxy.url("/release"))
        .header("x-anteroom-pass", inside[0].pass.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("anteroom-command").is_none(),
        "the command is not passed to the client"
    );
    assert_eq!(
        crate::common::visitor::set_cookie(&resp, "anteroom_pass").as_deref(),
        Some("")
    );
    assert_eq!(proxy.capacity("web").await["inUse"], 1);

    // The visitor leaves.
    assert_eq!(inside[1].leave().await["state"], "released");
    assert_eq!(proxy.capacity("web").await["inUse"], 0);

    // A released pass no longer admits: with the room full again, it is queued.
    let old_pass = inside[0].pass.clone().unwrap();
    let _full = admit(&proxy, 2).await;
    let mut ghost = proxy.visitor();
    ghost.pass = Some(old_pass);
    let (status, body) = ghost.get("/echo").await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "QUEUE_REQUIRED");
}

async fn paused_keeps_order_and_maintenance_closes(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 2\nclaim_window = \"30s\"",
        "",
    )
    .await;
    let mut inside = admit(&proxy, 1).await;
    proxy.patch_room("web", json!({"state": "paused"})).await;
    // A free slot, but paused: newcomers queue in order.
    let mut a = proxy.visitor();
    let mut b = proxy.visitor();
    assert_eq!(a.get("/echo").await.1["position"], 1);
    assert_eq!(b.get("/echo").await.1["position"], 2);
    assert_eq!(a.poll().await["roomState"], "paused");
    // Admitted visitors keep going.
    assert_eq!(inside[0].get("/echo").await.0, 200);

    proxy.patch_room("web", json!({"state": "active"})).await;
    assert_eq!(a.poll().await["state"], "admitted");
    assert_eq!(b.poll().await["state"], "queued");

    proxy
        .patch_room("web", json!({"state": "maintenance"}))
        .await;
    let before = upstream.seen.requests.load(SeqCst);
    let (status, body) = inside[0].get("/echo").await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "MAINTENANCE");
    let page = client()
        .get(proxy.url("/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    assert!(page.text().await.unwrap().contains("Down for maintenance"));
    assert_eq!(
        upstream.seen.requests.load(SeqCst),
        before,
        "nothing proxied in maintenance"
    );
    proxy.patch_room("web", json!({"state": "active"})).await;
    assert_eq!(inside[0].get("/echo").await.0, 200);
}

async fn concurrent_arrivals_never_exceed_capacity(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(&upstream, backend, "capacity = 10", "").await;
    let arrivals = (0..100).map(|_| {
        let mut v = proxy.visitor();
        async move {
            let (status, _) = v.get("/echo").await;
            (status.as_u16(), v)
        }
    });
    let mut results = join_all(arrivals).await;
    let admitted = results.iter().filter(|(s, _)| *s == 200).count();
    // Once every ticket counts (each came back with it), the places by arrival.
    let mut queued: Vec<u64> = Vec::new();
    for (_, v) in results.iter_mut().filter(|(s, _)| *s == 503) {
        queued.push(v.poll().await["position"].as_u64().unwrap());
    }
    assert_eq!(admitted, 10);
    assert_eq!(queued.len(), 90);
    let mut positions = queued.clone();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (1..=90).collect::<Vec<_>>(),
        "every place given once"
    );
    assert_eq!(upstream.seen.requests.load(SeqCst), 10);
    assert_eq!(proxy.capacity("web").await["inUse"], 10);
}

async fn attribution_reaches_the_upstream_and_conversions_count(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\nclaim_window = \"30s\"\n[room.conversion]\nmethod = \"POST\"\npath_prefix = \"/signup\"",
        "[attribution]\nsources = [\"meta\"]\ncampaigns = [\"launch1\"]",
    )
    .await;
    let mut first = proxy.visitor();
    let (status, echo) = first
        .get("/echo?utm_source=meta&utm_medium=cpc&utm_campaign=launch1&fbclid=abc")
        .await;
    assert_eq!(status, 200);
    let h = &echo["headers"];
    assert_eq!(h["x-anteroom-utm-source"], "meta");
    assert_eq!(h["x-anteroom-utm-medium"], "cpc");
    assert_eq!(h["x-anteroom-utm-campaign"], "launch1");
    assert_eq!(h["x-anteroom-fbclid"], "abc");
    assert_eq!(h["x-anteroom-wait-ms"], "0");
    assert_eq!(h["x-anteroom-pass"], first.pass.clone().unwrap().as_str());
    // Later requests carry the campaign though their URL does not.
    let (_, echo) = first.get("/echo").await;
    assert_eq!(echo["headers"]["x-anteroom-utm-campaign"], "launch1");

    // A visitor who waited: the campaign travels with the ticket, the wait is measured.
    let mut second = proxy.visitor();
    assert_eq!(
        second
            .get("/echo?utm_source=google&utm_campaign=brand")
            .await
            .0,
        503
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    first.leave().await;
    assert_eq!(second.poll().await["state"], "admitted");
    let (_, echo) = second.get("/echo").await;
    assert_eq!(echo["headers"]["x-anteroom-utm-source"], "google");
    assert!(
        echo["headers"]["x-anteroom-wait-ms"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 50
    );

    let resp = client()
        .post(proxy.url("/signup"))
        .header("x-anteroom-pass", second.pass.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Counted in the logging phase, which ends after the client has its response.
    let metrics = eventually(Duration::from_secs(5), || async {
        let m = proxy.metrics().await;
        (metric("anteroom_visitors_converted_total")
            .label("room", "web")
            .label("utm_campaign", "other")
            .label("utm_source", "other")
            .value(&m)
            == Some(1.0))
        .then_some(m)
    })
    .await;
    assert_eq!(
        metric("anteroom_visitors_admitted_total")
            .label("how", "queue")
            .label("room", "web")
            .value(&metrics),
        Some(1.0)
    );
    assert_eq!(
        metric("anteroom_visitors_arrived_total")
            .label("lane", "normal")
            .label("room", "web")
            .value(&metrics),
        Some(2.0)
    );
}

async fn bypass_by_path_network_and_app_token(backend: Store) {
    let upstream = TestUpstream::start().await;
    let secret = "an-app-secret-of-at-least-32-characters!";
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\n[room.bypass]\npaths = [\"/static/\"]\ncidrs = [\"10.9.0.0/16\"]\njwt = \"app\"",
        &format!("[[jwt]]\nname = \"app\"\ncookie = \"session\"\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\nissuer = \"https://app.example\"\naudience = \"app\""),
    )
    .await;
    let _inside = admit(&proxy, 1).await;
    let c = client();
    assert_eq!(
        c.get(proxy.url("/static/app.css"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let now = anteroom::token::now_secs();
    let token = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let good =
        token(json!({"sub": "u1", "iss": "https://app.example", "aud": "app", "exp": now + 600}));
    let with_cookie = |value: String| {
        c.get(proxy.url("/echo"))
            .header("cookie", format!("session={value}"))
            .send()
    };
    assert_eq!(
        with_cookie(good).await.unwrap().status(),
        200,
        "a logged-in user goes through"
    );
    for bad in [
        token(json!({"sub": "u1", "iss": "https://app.example", "aud": "app", "exp": now - 600})),
        token(json!({"sub": "u1", "iss": "https://evil.example", "aud": "app", "exp": now + 600})),
        token(json!({"sub": "u1", "iss": "https://app.example", "aud": "other", "exp": now + 600})),
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "u1", "iss": "https://app.example", "aud": "app", "exp": now + 600}),
            &jsonwebtoken::EncodingKey::from_secret(b"a-different-secret-of-32-characters!!"),
        )
        .unwrap(),
        "1".to_owned(),
        String::new(),
    ] {
        assert_eq!(
            with_cookie(bad).await.unwrap().status(),
            503,
            "a cookie alone never bypasses"
        );
    }
    // A trusted proxy in front says the client is in the allowed network.
    let spoofed = c
        .get(proxy.url("/echo"))
        .header("x-forwarded-for", "10.9.1.2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        spoofed.status(),
        503,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
}

async fn status_and_capacity_report_the_place(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 2\navg_session = \"60s\"\npoll_interval = \"3s\"",
        "",
    )
    .await;
    let _inside = admit(&proxy, 2).await;
    let mut a = proxy.visitor();
    a.get("/echo").await;
    let mut b = proxy.visitor();
    b.get("/echo").await;
    let status = b.poll().await;
    for key in [
        "state",
        "room",
        "position",
        "ahead",
        "waitMs",
        "waitKnown",
        "pollAfterMs",
        "queueLength",
        "available",
    ] {
        assert!(status.get(key).is_some(), "{key} missing from {status}");
    }
    assert_eq!(status["state"], "queued");
    assert_eq!(status["position"], 2);
    assert_eq!(status["ahead"], 1);
    assert_eq!(status["queueLength"], 2);
    assert_eq!(status["available"], 0);
    assert_eq!(status["pollAfterMs"], 3000);
    // Before there is data: the second session to end, avg_session after it
    // began, and half a poll for the turn to be claimed.
    assert_eq!(status["waitKnown"], false);
    let wait = status["waitMs"].as_u64().unwrap();
    assert!((56_500..=61_500).contains(&wait), "{status}");

    let resp = client()
        .get(proxy.url("/__anteroom/capacity?room=web"))
        .header("x-anteroom-ticket", b.ticket.clone().unwrap())
        .send()
        .await
        .unwrap();
    let cap: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(cap["position"], 2);
    let told = cap["waitMs"].as_u64().unwrap();
    assert!(told <= wait && told + 5_000 >= wait, "{cap}");
    assert_eq!(cap["waiting"], 2);
    let anonymous = proxy.capacity("web").await;
    assert!(anonymous.get("position").is_none());

    let mut nobody = proxy.visitor();
    assert_eq!(nobody.poll().await["state"], "expired");
}

async fn full_queue_is_refused(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(&upstream, backend, "capacity = 1\nmax_queue = 2", "").await;
    let _inside = admit(&proxy, 1).await;
    for _ in 0..2 {
        assert_eq!(proxy.visitor().get("/echo").await.0, 503);
    }
    let (status, body) = proxy.visitor().get("/echo").await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "QUEUE_FULL");
    let page = client()
        .get(proxy.url("/"))
        .header("accept", "text/html")
        .header("accept-language", "de")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Der Warteraum ist voll")
    );
}

/// A browser that keeps its ticket: the waiting page, then a refresh with the ticket.
async fn page_kept(
    proxy: &TestProxy,
    path: &str,
    lang: &str,
) -> reqwest::Result<reqwest::Response> {
    let request = |cookie: Option<String>| {
        let mut req = client()
            .get(proxy.url(path))
            .header("accept", "text/html,application/xhtml+xml")
            .header("accept-language", lang);
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send()
    };
    let first = request(None).await?;
    match crate::common::visitor::set_cookie(&first, "anteroom_ticket") {
        Some(ticket) => request(Some(format!("anteroom_ticket={ticket}"))).await,
        None => Ok(first),
    }
}

async fn waiting_page_in_english_and_german(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\nsession_ttl = \"5m\"\npoll_interval = \"5s\"",
        "",
    )
    .await;
    let _inside = admit(&proxy, 1).await;
    let _first = proxy.visitor().get("/echo").await;
    let page = |lang: &'static str| page_kept(&proxy, "/shop/?utm_source=meta", lang);
    let de = page("de-DE,de;q=0.9,en;q=0.5").await.unwrap();
    assert_eq!(de.status(), 200);
    assert_eq!(de.headers()["content-type"], "text/html; charset=utf-8");
    let de = de.text().await.unwrap();
    for needle in [
        r#"<html lang="de">"#,
        "Sie sind in der Warteschlange",
        "Ihr Platz in der Schlange",
        r#"id="position">2<"#,
        "Geschätzte Wartezeit",
        // 2 × session_ttl (5 min) / capacity 1, nothing measured yet
        r#"id="wait">etwa 10 Minuten (erste Schätzung)<"#,
        r#"aria-valuenow="0""#,
        // Without JavaScript it reloads at the status endpoint, which knows what to do.
        r#"<meta http-equiv="refresh" content="5;url=/__anteroom/status?room=web&amp;return=%2Fshop%2F%3Futm_source%3Dmeta">"#,
    ] {
        assert!(de.contains(needle), "German page lacks {needle:?}:\n{de}");
    }
    let en = page("en-GB,en;q=0.8").await.unwrap().text().await.unwrap();
    for needle in [
        r#"<html lang="en">"#,
        "You are in line",
        "Your place in line",
        r#"id="position">3<"#,
        "Estimated wait",
        r#"id="wait">about 15 minutes (a first estimate)<"#,
        "status?room=web&amp;return=%2Fshop%2F%3Futm_source%3Dmeta",
    ] {
        assert!(en.contains(needle), "English page lacks {needle:?}:\n{en}");
    }
    for page in [&de, &en] {
        assert!(
            !page.contains("src=\"http")
                && !page.contains("href=\"http")
                && !page.contains("<link"),
            "external asset"
        );
    }
}

#[tokio::test]
async fn trusted_proxies_give_the_client_address_and_tls() {
    let upstream = TestUpstream::start().await;
    let config = waiting_room_config(
        &upstream,
        Store::Memory,
        "capacity = 1\n[room.bypass]\ncidrs = [\"10.9.0.0/16\"]",
        "",
    );
    let proxy = TestProxy::start_with("trusted_proxies = [\"127.0.0.1/32\"]", &config).await;
    let c = client();
    let first = c
        .get(proxy.url("/echo"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("; Secure"),
        "behind a TLS-terminating proxy the pass is Secure: {cookie}"
    );
    let echo: serde_json::Value = first.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    // The room is full now; the trusted proxy says this client is in the bypass network.
    let office = c
        .get(proxy.url("/echo"))
        .header("x-forwarded-for", "10.9.1.2")
        .send()
        .await
        .unwrap();
    assert_eq!(office.status(), 200);
    let outsider = c
        .get(proxy.url("/echo"))
        .header("x-forwarded-for", "198.51.100.8")
        .send()
        .await
        .unwrap();
    assert_eq!(outsider.status(), 503);
}

/// A room of one with hour-long visits, a thousand ahead: 1,001 hours is
/// not an estimate anyone can use. The status says so (`waitMs: null`,
/// `waitKnown: false`), and so does the page, in words.
async fn a_wait_longer_than_a_day_is_not_told(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(&upstream, backend, "capacity = 1\navg_session = \"1h\"", "").await;
    let _inside = admit(&proxy, 1).await;
    let added = client()
        .post(proxy.admin_url("/admin/rooms/web/visitors"))
        .json(&serde_json::json!({"count": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let mut late = proxy.visitor();
    late.get("/echo").await;
    let status = late.poll().await;
    assert_eq!(status["position"], 1001, "{status}");
    assert_eq!(status["waitMs"], serde_json::Value::Null, "{status}");
    assert_eq!(status["waitKnown"], false);
    let page = client()
        .get(proxy.url("/echo"))
        .header("accept", "text/html")
        .header("x-anteroom-ticket", late.ticket.clone().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(">not known yet<"), "{page}");
}

/// With `consent_cookie`, a campaign is recorded and passed upstream only
/// for a visitor whose consent cookie says so; the others are still counted,
/// anonymously, and a consent withdrawn stops the campaign going upstream.
async fn campaigns_are_recorded_and_passed_on_only_with_consent(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 5\n[room.conversion]\nmethod = \"POST\"\npath_prefix = \"/signup\"",
        "[attribution]\nsources = [\"meta\"]\nconsent_cookie = \"cmp\"\nconsent_values = [\"all\", \"marketing\"]",
    )
    .await;
    let http = client();
    let echo = |path: &str, cookie: Option<&str>, pass: Option<&str>| {
        let mut req = http
            .get(proxy.url(path))
            .header("accept", "application/json");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(p) = pass {
            req = req.header("x-anteroom-pass", p);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<serde_json::Value>().await.unwrap()["headers"].clone()
        }
    };
    let campaign = "/echo?utm_source=meta&utm_campaign=launch1&fbclid=abc";
    // Consent given: recorded, passed on, and still passed on later.
    let h = echo(campaign, Some("cmp=marketing"), None).await;
    assert_eq!(h["x-anteroom-utm-source"], "meta");
    assert_eq!(h["x-anteroom-fbclid"], "abc");
    let pass = h["x-anteroom-pass"].as_str().unwrap().to_owned();
    let h = echo("/echo", Some("cmp=marketing"), Some(&pass)).await;
    assert_eq!(h["x-anteroom-utm-campaign"], "launch1");
    // Withdrawn (the consent cookie now says otherwise): no longer passed on.
    let h = echo("/echo", Some("cmp=necessary"), Some(&pass)).await;
    assert!(h.get("x-anteroom-utm-source").is_none(), "{h}");
    // Without consent: admitted and counted, but no campaign anywhere.
    let mut anonymous = Vec::new();
    for cookie in [None, Some("cmp=necessary")] {
        let h = echo(campaign, cookie, None).await;
        assert!(h.get("x-anteroom-utm-source").is_none(), "{h}");
        assert!(h.get("x-anteroom-fbclid").is_none(), "{h}");
        anonymous.push(h["x-anteroom-pass"].as_str().unwrap().to_owned());
    }
    // Their conversions count, with the campaign only where it is allowed.
    let consenting = (pass.as_str(), "cmp=all");
    let others = anonymous.iter().map(|p| (p.as_str(), "cmp=necessary"));
    for (pass, cookie) in std::iter::once(consenting).chain(others) {
        let resp = http
            .post(proxy.url("/signup"))
            .header("x-anteroom-pass", pass)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let metrics = eventually(Duration::from_secs(5), || async {
        let m = proxy.metrics().await;
        (metric("anteroom_visitors_converted_total")
            .label("room", "web")
            .label("utm_campaign", "none")
            .label("utm_source", "none")
            .value(&m)
            == Some(2.0))
        .then_some(m)
    })
    .await;
    assert_eq!(
        metric("anteroom_visitors_converted_total")
            .label("room", "web")
            .label("utm_campaign", "other")
            .label("utm_source", "meta")
            .value(&metrics),
        Some(1.0),
        "{metrics}"
    );
}

/// Twelve API clients arrive one after another at a full room and show
/// their first answer without polling: each is told its own place (1 to
/// 12, not "position 1" for all), and the waits told grow with the places,
/// because both count the same places (confirmed or fresh).
async fn a_burst_is_told_places_and_waits_that_agree(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\navg_session = \"10s\"\nconfirm_window = \"30s\"",
        "",
    )
    .await;
    admit(&proxy, 1).await;
    let http = client();
    let mut told = Vec::new();
    for _ in 0..12 {
        let resp = http
            .get(proxy.url("/echo"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "QUEUE_REQUIRED");
        told.push((
            body["position"].as_u64().unwrap(),
            body["ahead"].as_u64().unwrap(),
            body["waitMs"].as_u64().unwrap(),
        ));
    }
    let positions: Vec<u64> = told.iter().map(|t| t.0).collect();
    assert_eq!(positions, (1..=12).collect::<Vec<u64>>(), "{told:?}");
    assert!(told.iter().all(|(p, a, _)| *a == p - 1), "{told:?}");
    assert!(
        told.windows(2).all(|w| w[1].2 > w[0].2),
        "waits do not grow with the places: {told:?}"
    );
}
