//! Floods and bots over real HTTP: clients that keep no cookies take no
//! place for long, per-client limits answer 429 without costing a waiting
//! person their place, idempotent arrivals, proof of work, bound tokens.
//! Every scenario runs on every store backend.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{
    Store, TestProxy, TestUpstream, Visitor, eventually, metric, waiting_room_config,
};

crate::each_store!(
    cookie_less_requests_hold_places_only_for_the_confirm_window,
    a_flood_leaves_the_early_visitor_first_and_the_estimate_alone,
    arrivals_over_the_limit_are_told_to_retry_and_the_waiting_keep_their_place,
    polls_over_the_limit_keep_the_place,
    a_network_holds_at_most_its_tickets,
    the_same_idempotency_key_gets_the_same_ticket,
    proof_of_work_counts_a_solved_ticket_only,
    bound_tokens_count_only_for_their_client,
    an_idempotency_key_is_bound_where_tokens_are,
);

/// How long a rule may take to show.
const DEADLINE: Duration = Duration::from_secs(15);

async fn start(upstream: &TestUpstream, backend: Store, room: &str) -> TestProxy {
    TestProxy::start(&waiting_room_config(upstream, backend, room, "")).await
}

/// A client that keeps nothing: no cookie jar, no headers it was given.
fn bot() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([])
        .build()
        .unwrap()
}

/// `n` requests to `path` from one address, 50 at a time, as a client that
/// keeps no cookies: the status of each.
async fn flood(proxy: &TestProxy, n: usize, path: &str) -> Vec<StatusCode> {
    let client = bot();
    let url = proxy.url(path);
    stream::iter(0..n)
        .map(|_| {
            let req = client.get(&url).header("accept", "application/json").send();
            async move { req.await.unwrap().status() }
        })
        .buffer_unordered(50)
        .collect()
        .await
}

fn count(statuses: &[StatusCode], code: u16) -> usize {
    statuses.iter().filter(|s| s.as_u16() == code).count()
}

/// A visitor let in who came back with their pass: the place is theirs.
async fn inside(proxy: &TestProxy) -> Visitor {
    let mut v = proxy.visitor();
    assert_eq!(v.get("/echo").await.0, 200);
    assert_eq!(v.get("/echo").await.0, 200);
    v
}

async fn cookie_less_requests_hold_places_only_for_the_confirm_window(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 50\nsession_ttl = \"5m\"\npoll_interval = \"1s\"\nconfirm_window = \"2s\"",
    )
    .await;
    let statuses = flood(&proxy, 5000, "/echo").await;
    let done = Instant::now();
    assert!(count(&statuses, 200) >= 50, "the first fifty were let in");
    assert_eq!(count(&statuses, 200) + count(&statuses, 503), 5000);
    assert!(proxy.capacity("web").await["inUse"].as_u64().unwrap() <= 50);
    // Nobody came back with a pass or a ticket: their places lapse with the
    // confirm window, not with session_ttl.
    eventually(DEADLINE, || async {
        let c = proxy.capacity("web").await;
        (c["inUse"] == 0 && c["waiting"] == 0).then_some(())
    })
    .await;
    assert!(
        done.elapsed() < Duration::from_secs(2 + 3),
        "places lapsed after {:?}, not within the confirm window",
        done.elapsed()
    );
    // Ten people who keep their tokens: all in at once.
    for _ in 0..10 {
        let mut v = proxy.visitor();
        let (status, _) = v.get("/echo").await;
        assert_eq!(status, 200);
        assert!(v.admitted());
    }
    let metrics = proxy.metrics().await;
    let lapsed = metric("anteroom_visitors_expired_total")
        .label("kind", "unconfirmed_session")
        .label("room", "web")
        .of(&metrics);
    assert!(lapsed >= 50.0, "{lapsed} unconfirmed sessions lapsed");
}

async fn a_flood_leaves_the_early_visitor_first_and_the_estimate_alone(backend: Store) {
    let upstream = TestUpstream::start().await;
    // The estimate before admissions can be measured: place × visit / capacity.
    // (A measured one, 1 / admission rate, falls while nobody is let in,
    // flood or no flood: that is news, not noise.)
    let proxy = start(
        &upstream,
        backend,
        "capacity = 2\nsession_ttl = \"5m\"\navg_session = \"1m\"\npoll_interval = \"1s\"\nconfirm_window = \"2s\"",
    )
    .await;
    let mut inside_ = vec![inside(&proxy).await, inside(&proxy).await];
    let mut early = proxy.visitor();
    early.get("/echo").await;
    let before = early.poll().await;
    assert_eq!(before["position"], 1);
    let statuses = flood(&proxy, 5000, "/echo").await;
    assert_eq!(count(&statuses, 503), 5000, "a full room lets no bot in");
    let after = early.poll().await;
    assert_eq!(after["position"], 1);
    assert_eq!(after["queueLength"], 1, "bots are not in the line");
    let (w0, w1) = (
        before["waitMs"].as_f64().unwrap(),
        after["waitMs"].as_f64().unwrap(),
    );
    assert!(w0 > 0.0);
    assert!(
        (w1 - w0).abs() <= 0.2 * w0,
        "the estimate moved from {w0} to {w1} ms"
    );
    assert_eq!(proxy.capacity("web").await["waiting"], 1);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric("anteroom_room_queue_length")
            .label("lane", "normal")
            .label("room", "web")
            .of(&metrics),
        1.0
    );
    // The next slot is the early visitor's, not a bot's.
    inside_.pop().unwrap().leave().await;
    early.poll_until(|s| s["state"] == "admitted").await;
}

async fn arrivals_over_the_limit_are_told_to_retry_and_the_waiting_keep_their_place(
    backend: Store,
) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\n[room.limits]\narrivals_per_minute = 5",
    )
    .await;
    let _inside = inside(&proxy).await;
    let mut person = proxy.visitor();
    person.get("/echo").await;
    assert_eq!(person.poll().await["position"], 1);
    // Everyone here comes from 127.0.0.1: the person shares the bots' address.
    let statuses = flood(&proxy, 20, "/echo").await;
    assert_eq!(count(&statuses, 503), 3, "five arrivals a minute");
    assert_eq!(count(&statuses, 429), 17);
    let limited = bot()
        .get(proxy.url("/echo"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["limit"], "arrivals_per_minute");
    // A browser gets a page that tries again by itself.
    let page = bot()
        .get(proxy.url("/echo"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 429);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"data-state="limited""#), "{html}");
    assert!(html.contains(r#"http-equiv="refresh""#));
    // The person already in line is not an arrival: they keep their place.
    let status = person.poll().await;
    assert_eq!(
        (status["state"].as_str(), status["position"].as_u64()),
        (Some("queued"), Some(1))
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric("anteroom_room_limited_total")
            .label("limit", "arrivals_per_minute")
            .label("room", "web")
            .of(&metrics),
        19.0
    );
}

async fn polls_over_the_limit_keep_the_place(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\n[room.limits]\npolls_per_minute = 30",
    )
    .await;
    let _inside = inside(&proxy).await;
    let mut person = proxy.visitor();
    person.get("/echo").await;
    let mut other = proxy.visitor();
    other.get("/echo").await;
    let ticket = person.ticket.clone().unwrap();
    let poll = || {
        bot()
            .get(proxy.url("/__anteroom/status"))
            .header("accept", "application/json")
            .header("x-anteroom-ticket", &ticket)
            .send()
    };
    // 30 a minute, and the arrival's own first poll was one of them.
    let mut answered = 1;
    let limited = loop {
        let resp = poll().await.unwrap();
        if resp.status() == 429 {
            break resp;
        }
        assert_eq!(resp.status(), 200);
        answered += 1;
        assert!(answered <= 30, "never limited");
    };
    assert_eq!(answered, 30);
    assert_eq!(limited.headers()["retry-after"], "2");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(
        (body["code"].as_str(), body["limit"].as_str()),
        (Some("RATE_LIMITED"), Some("polls_per_minute"))
    );
    // Another ticket has its own allowance.
    assert_eq!(other.poll().await["position"], 2);
    // Limited polls cost nothing: once the allowance is back, the same place.
    let again: Value = eventually(DEADLINE, || async {
        let resp = poll().await.unwrap();
        if resp.status() == 429 {
            return None;
        }
        resp.json().await.ok()
    })
    .await;
    assert_eq!(
        (again["state"].as_str(), again["position"].as_u64()),
        (Some("queued"), Some(1))
    );
}

async fn a_network_holds_at_most_its_tickets(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\n[room.limits]\ntickets_per_client = 3",
    )
    .await;
    let _inside = inside(&proxy).await;
    let statuses = flood(&proxy, 10, "/echo").await;
    assert_eq!(count(&statuses, 503), 3);
    assert_eq!(count(&statuses, 429), 7);
    let resp = bot()
        .get(proxy.url("/echo"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["limit"], "tickets_per_client");
}

async fn the_same_idempotency_key_gets_the_same_ticket(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(&upstream, backend, "capacity = 1").await;
    let arrive = |key: &str| {
        bot()
            .get(proxy.url("/echo"))
            .header("accept", "application/json")
            .header("idempotency-key", key)
            .send()
    };
    // Let in at once: the same key is the same session.
    assert_eq!(arrive("order-1").await.unwrap().status(), 200);
    assert_eq!(arrive("order-1").await.unwrap().status(), 200);
    assert_eq!(proxy.capacity("web").await["inUse"], 1);
    let ticket = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), 503);
        let body: Value = resp.json().await.unwrap();
        body["ticket"].as_str().unwrap().to_owned()
    };
    let first = ticket(arrive("order-2").await.unwrap()).await;
    let again = ticket(arrive("order-2").await.unwrap()).await;
    let other = ticket(arrive("order-3").await.unwrap()).await;
    assert_eq!(first, again, "the same key, the same ticket");
    assert_ne!(first, other);
    let bad = arrive(&"k".repeat(256)).await.unwrap();
    assert_eq!(bad.status(), 400);

    // Another client (another address) sending the same keys is a new
    // arrival: never the first client's session, never its ticket.
    let elsewhere = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([])
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let arrive_elsewhere = |key: &str| {
        elsewhere
            .get(proxy.url("/echo"))
            .header("accept", "application/json")
            .header("user-agent", "someone-else")
            .header("idempotency-key", key)
            .send()
    };
    let stolen = arrive_elsewhere("order-1").await.unwrap();
    assert!(
        crate::common::visitor::set_cookie(&stolen, "anteroom_pass").is_none(),
        "another client got a pass with the first one's key"
    );
    let theirs = ticket(stolen).await;
    assert_ne!(theirs, first);
    assert_eq!(proxy.capacity("web").await["inUse"], 1);
    let copied = ticket(arrive_elsewhere("order-2").await.unwrap()).await;
    assert_ne!(copied, first, "another client got the first one's ticket");
    // Their own key is theirs to repeat.
    assert_eq!(
        ticket(arrive_elsewhere("order-2").await.unwrap()).await,
        copied
    );
}

/// A room of one that binds tokens to the browser and network, behind a
/// trusted proxy on 127.0.0.1 (so that a test can name any client address).
async fn bound_room(upstream: &TestUpstream, backend: Store) -> TestProxy {
    let config = waiting_room_config(
        upstream,
        backend,
        "capacity = 1\nbind = \"user_agent_and_network\"",
        "",
    );
    TestProxy::start_with("trusted_proxies = [\"127.0.0.1/32\"]", &config).await
}

async fn an_idempotency_key_is_bound_where_tokens_are(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = bound_room(&upstream, backend).await;
    let from = |ua: &str, ip: &str| {
        bot()
            .get(proxy.url("/echo"))
            .header("accept", "application/json")
            .header("user-agent", ua)
            .header("x-forwarded-for", ip)
            .header("idempotency-key", "order-12345")
            .send()
    };
    let owner = from("phone", "198.51.100.7").await.unwrap();
    assert_eq!(owner.status(), 200);
    let pass = crate::common::visitor::set_cookie(&owner, "anteroom_pass").unwrap();
    // The owner again: the same session.
    let again = from("phone", "198.51.100.7").await.unwrap();
    assert_eq!(again.status(), 200);
    // Another browser in the same network, with the same key: a newcomer
    // who waits (the room is full), with no pass of the owner's.
    let thief = from("laptop", "198.51.100.7").await.unwrap();
    assert_eq!(thief.status(), 503);
    assert!(crate::common::visitor::set_cookie(&thief, "anteroom_pass").is_none());
    let body: Value = thief.json().await.unwrap();
    assert_eq!(body["code"], "QUEUE_REQUIRED");
    assert_eq!(proxy.capacity("web").await["inUse"], 1);
    assert!(!pass.is_empty());
}

async fn proof_of_work_counts_a_solved_ticket_only(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = start(
        &upstream,
        backend,
        "capacity = 1\npoll_interval = \"1s\"\nconfirm_window = \"2s\"\nchallenge = \"pow\"\nchallenge_difficulty = 8",
    )
    .await;
    let mut inside_ = inside(&proxy).await;
    let arrive = || async {
        let resp = bot()
            .get(proxy.url("/echo"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        resp.json::<Value>().await.unwrap()
    };
    let poll = |ticket: String, nonce: Option<String>| {
        let mut req = bot()
            .get(proxy.url("/__anteroom/status"))
            .header("accept", "application/json")
            .header("x-anteroom-ticket", ticket);
        if let Some(nonce) = nonce {
            req = req.header("x-anteroom-pow", nonce);
        }
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let a = arrive().await;
    let puzzle = &a["challenge"];
    assert_eq!(puzzle["algorithm"], "sha256-leading-zero-bits");
    assert_eq!(puzzle["difficulty"], 8);
    assert_eq!(puzzle["header"], "x-anteroom-pow");
    let seed = puzzle["seed"].as_str().unwrap().to_owned();
    let ticket_a = a["ticket"].as_str().unwrap().to_owned();
    // Unsolved, or solved wrong: told the place, not counted.
    let unsolved = poll(ticket_a.clone(), None).await;
    assert_eq!(unsolved["queueLength"], 0);
    assert!(unsolved["challenge"].is_object());
    let wrong = (0u32..)
        .map(|n| n.to_string())
        .find(|n| !anteroom::challenge::solves(&seed, n, 8))
        .unwrap();
    assert!(poll(ticket_a.clone(), Some(wrong)).await["challenge"].is_object());
    assert_eq!(proxy.capacity("web").await["waiting"], 0);
    // Solved: in line.
    let nonce = anteroom::challenge::solve(&seed, 8);
    let solved = poll(ticket_a.clone(), Some(nonce.clone())).await;
    assert!(solved["challenge"].is_null(), "{solved}");
    assert_eq!(
        (solved["position"].as_u64(), solved["queueLength"].as_u64()),
        (Some(1), Some(1))
    );
    // A's solution replayed for another ticket does not count.
    let b = arrive().await;
    let ticket_b = b["ticket"].as_str().unwrap().to_owned();
    assert_ne!(b["challenge"]["seed"], a["challenge"]["seed"]);
    let replayed = poll(ticket_b, Some(nonce)).await;
    assert!(replayed["challenge"].is_object());
    assert_eq!(replayed["queueLength"], 1);
    // A solution that comes after the confirm window finds its ticket gone.
    let c = arrive().await;
    let ticket_c = c["ticket"].as_str().unwrap().to_owned();
    let late = anteroom::challenge::solve(c["challenge"]["seed"].as_str().unwrap(), 8);
    // Time must pass the window here: polling sooner would confirm it.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(poll(ticket_c, Some(late)).await["state"], "expired");
    // The solved ticket is next.
    inside_.leave().await;
    eventually(DEADLINE, || async {
        (poll(ticket_a.clone(), None).await["state"] == "admitted").then_some(())
    })
    .await;
}

async fn bound_tokens_count_only_for_their_client(backend: Store) {
    let upstream = TestUpstream::start().await;
    let proxy = bound_room(&upstream, backend).await;
    let from = |ua: &str, ip: &str, header: (&str, &str)| {
        bot()
            .get(proxy.url("/echo"))
            .header("accept", "application/json")
            .header("user-agent", ua)
            .header("x-forwarded-for", ip)
            .header(header.0, header.1)
            .send()
    };
    let first = from("phone", "198.51.100.7", ("x-none", "")).await.unwrap();
    assert_eq!(first.status(), 200);
    let pass = crate::common::visitor::set_cookie(&first, "anteroom_pass").unwrap();
    let cookie = format!("anteroom_pass={pass}");
    let with_pass = |ua: &'static str, ip: &'static str| from(ua, ip, ("cookie", &cookie));
    assert_eq!(
        with_pass("phone", "198.51.100.7").await.unwrap().status(),
        200
    );
    // The same pass from another browser or another network: no pass at all
    // (the room is full, so a newcomer waits).
    assert_eq!(
        with_pass("laptop", "198.51.100.7").await.unwrap().status(),
        503
    );
    assert_eq!(
        with_pass("phone", "203.0.113.9").await.unwrap().status(),
        503
    );
    assert_eq!(
        with_pass("phone", "198.51.100.7").await.unwrap().status(),
        200
    );
    // Tickets too.
    let queued: Value = from("tablet", "198.51.100.8", ("x-none", ""))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = queued["ticket"].as_str().unwrap().to_owned();
    let poll = |ua: &'static str| {
        bot()
            .get(proxy.url("/__anteroom/status"))
            .header("accept", "application/json")
            .header("user-agent", ua)
            .header("x-forwarded-for", "198.51.100.8")
            .header("x-anteroom-ticket", &ticket)
            .send()
    };
    let mine: Value = poll("tablet").await.unwrap().json().await.unwrap();
    assert_eq!(mine["state"], "queued");
    let theirs: Value = poll("scraper").await.unwrap().json().await.unwrap();
    assert_eq!(theirs["state"], "expired");
}

/// Behind a trusted proxy that passes `ip:port` or `unknown`, no client is
/// known: they share one allowance (the default), are limited by the
/// proxy's address, or are refused, as `unknown_clients` says; they are
/// counted, and `/readyz?details` says most clients are unknown.
#[tokio::test]
async fn unknown_clients_are_limited_as_the_room_says() {
    let upstream = TestUpstream::start().await;
    for (policy, limited_status) in [
        ("", 429),
        ("\nunknown_clients = \"peer\"", 429),
        ("\nunknown_clients = \"refuse\"", 403),
    ] {
        let config = waiting_room_config(
            &upstream,
            Store::Memory,
            &format!("capacity = 1\n[room.limits]\narrivals_per_minute = 5{policy}"),
            "",
        );
        let proxy = TestProxy::start_with("trusted_proxies = [\"127.0.0.1/32\"]", &config).await;
        let mut passed = 0;
        let mut refused = 0;
        for i in 0..20 {
            let xff = if i % 2 == 0 {
                format!("198.51.100.{i}:5555")
            } else {
                "unknown".to_owned()
            };
            let resp = bot()
                .get(proxy.url("/echo"))
                .header("accept", "application/json")
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap();
            match resp.status().as_u16() {
                200 | 503 => passed += 1,
                s if s == limited_status => refused += 1,
                other => panic!("{policy}: {other}"),
            }
        }
        if limited_status == 403 {
            assert_eq!((passed, refused), (0, 20), "{policy}");
        } else {
            assert_eq!((passed, refused), (5, 15), "{policy}");
        }
        let metrics = proxy.metrics().await;
        assert_eq!(
            metric("anteroom_unknown_clients_total").value(&metrics),
            Some(20.0),
            "{metrics}"
        );
        assert_eq!(
            metric("anteroom_forwarded_clients_total").value(&metrics),
            Some(20.0)
        );
        let ready = crate::common::get_json(proxy.admin_url("/readyz?details")).await;
        assert_eq!(ready["clients"]["unknown"], 20);
        assert_eq!(ready["clients"]["mostlyUnknown"], true);
    }
    // A known client through the same proxy is counted as forwarded, not unknown.
    let config = waiting_room_config(&upstream, Store::Memory, "capacity = 1", "");
    let proxy = TestProxy::start_with("trusted_proxies = [\"127.0.0.1/32\"]", &config).await;
    let resp = bot()
        .get(proxy.url("/echo"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ready = crate::common::get_json(proxy.admin_url("/readyz?details")).await;
    assert_eq!(ready["clients"]["forwarded"], 1);
    assert_eq!(ready["clients"]["unknown"], 0);
    assert_eq!(ready["clients"]["mostlyUnknown"], false);
}
