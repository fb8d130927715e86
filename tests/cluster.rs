//! Many instances, one line: anteroom processes sharing one redis-server the
//! test started. One capacity, one queue, one order; instances and Redis can
//! fail without anyone being over-admitted or losing their place.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use futures_util::future::join_all;
use nix::sys::signal::Signal;

use crate::common::metric;
use crate::common::process::Process;
use crate::common::redis::RedisServer;
use crate::common::{TestUpstream, Visitor, client, eventually, get_json, get_text, keys};

/// The same file for every instance: a shared store, the shared signing key.
fn shared(upstream: &TestUpstream, redis: &RedisServer, rooms_and_routes: &str) -> String {
    let store = redis.shared_store(
        "cluster",
        "sweep_interval = \"100ms\"\ntouch_interval = \"500ms\"\nrebuild_grace = \"1s\"\nlease = \"1s\"\ntimeout = \"300ms\"",
    );
    format!(
        "{store}\n[[upstream]]\nname = \"app\"\naddress = \"{}\"\nread_timeout = \"60s\"\n\n{rooms_and_routes}\n",
        upstream.addr
    )
}

const WEB: &str = r#"
[[room]]
name = "web"
mode = "sessions"
capacity = CAPACITY
claim_window = "30s"
poll_interval = "5s"

[[route]]
path_prefix = "/"
upstream = "app"
room = "web"
"#;

fn web(capacity: u32) -> String {
    WEB.replace("CAPACITY", &capacity.to_string())
}

async fn three(config: &str) -> Vec<Process> {
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Process::start("1s", config).await);
    }
    instances
}

#[tokio::test]
async fn three_instances_never_admit_more_than_capacity() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let instances = three(&shared(&upstream, &redis, &web(10))).await;
    let arrivals = (0..200).map(|i| {
        let mut v = instances[i % 3].visitor();
        async move {
            let (status, _) = v.get("/echo").await;
            (status.as_u16(), v)
        }
    });
    let mut results = join_all(arrivals).await;
    let admitted = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(admitted, 10);
    assert_eq!(
        upstream.seen.requests.load(SeqCst),
        10,
        "the app saw exactly the admitted visitors"
    );
    // Every visitor comes back with their token, all at once (one by one,
    // on a busy machine, the last came back after `confirm_window` and
    // the places of those who had not yet were rightly freed).
    let (admitted, waiting): (Vec<_>, Vec<_>) = results.iter_mut().partition(|(s, _)| *s == 200);
    let confirmed = join_all(admitted.into_iter().map(|(_, v)| v.get("/echo"))).await;
    assert!(confirmed.iter().all(|(status, _)| *status == 200));
    // The places by arrival, once every ticket counts.
    let polls = join_all(waiting.into_iter().map(|(_, v)| v.poll())).await;
    let mut positions: Vec<u64> = polls
        .iter()
        .map(|p| p["position"].as_u64().unwrap())
        .collect();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (1..=190).collect::<Vec<_>>(),
        "one line: every place given once"
    );
    for instance in &instances {
        let c = get_json(instance.url("/__anteroom/capacity?room=web")).await;
        assert_eq!(c["inUse"], 10);
        assert_eq!(c["waiting"], 190);
    }
}

#[tokio::test]
async fn admissions_follow_the_global_arrival_order() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let instances = three(&shared(&upstream, &redis, &web(2))).await;
    let mut inside = Vec::new();
    for instance in &instances[..2] {
        let mut v = instance.visitor();
        assert_eq!(v.get("/echo").await.0, 200);
        inside.push(v);
    }
    // Twelve arrivals, each through another instance than the one before.
    let mut waiting: Vec<(usize, Visitor)> = Vec::new();
    for i in 0..12 {
        let mut v = instances[i % 3].visitor();
        let (status, body) = v.get("/echo").await;
        assert_eq!(status, 503);
        assert_eq!(body["position"], i + 1);
        waiting.push((i, v));
    }
    let mut order = Vec::new();
    while !waiting.is_empty() {
        inside.remove(0).leave().await;
        let mut admitted = Vec::new();
        for (k, (i, v)) in waiting.iter_mut().enumerate() {
            // Each poll through a different instance than its arrival.
            let mut other = Visitor::new(instances[(*i + k + 1) % 3].base());
            other.ticket = v.ticket.clone();
            if other.poll().await["state"] == "admitted" {
                admitted.push(k);
                v.pass = other.pass.clone();
            }
        }
        assert_eq!(admitted.len(), 1, "one slot, one admission");
        let (i, v) = waiting.remove(admitted[0]);
        order.push(i);
        let mut now_inside = Visitor::new(instances[i % 3].base());
        now_inside.pass = v.pass;
        inside.push(now_inside);
    }
    assert_eq!(order, (0..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_same_idempotency_key_gets_the_same_ticket_from_every_instance() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let instances = three(&shared(&upstream, &redis, &web(1))).await;
    let mut inside = instances[0].visitor();
    assert_eq!(inside.get("/echo").await.0, 200);
    let mut tickets = Vec::new();
    for instance in instances.iter().chain(&instances[..1]) {
        let resp = client()
            .get(instance.url("/echo"))
            .header("accept", "application/json")
            .header("idempotency-key", "9f0c1e52-order-77")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value = resp.json().await.unwrap();
        tickets.push(body["ticket"].as_str().unwrap().to_owned());
    }
    assert!(
        tickets.iter().all(|t| *t == tickets[0]),
        "one key, one ticket: {tickets:?}"
    );
    let mut holder = Visitor::new(instances[2].base());
    holder.ticket = Some(tickets[0].clone());
    assert_eq!(holder.poll().await["position"], 1);
    assert_eq!(
        get_json(instances[1].url("/__anteroom/capacity?room=web")).await["waiting"],
        1
    );
}

#[tokio::test]
async fn a_killed_instance_gives_its_request_slots_back_within_the_lease() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let config = shared(
        &upstream,
        &redis,
        r#"
[[room]]
name = "llm"
mode = "requests"
capacity = 3

[[route]]
path_prefix = "/"
upstream = "app"
room = "llm"
"#,
    );
    let mut instances = three(&config).await;
    let usage = |i: &Process| {
        let url = i.url("/__anteroom/capacity?room=llm");
        async move {
            let c = get_json(url).await;
            c["inUse"].as_u64().unwrap()
        }
    };
    // Three requests hang upstream through the first instance: the shared room is full.
    let hung: Vec<_> = (0..3)
        .map(|_| {
            let url = instances[0].url("/hang");
            tokio::spawn(async move { client().get(url).send().await })
        })
        .collect();
    eventually(Duration::from_secs(5), || async {
        (upstream.seen.in_flight.load(SeqCst) == 3).then_some(())
    })
    .await;
    // Held longer than a lease: renewal keeps them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(usage(&instances[1]).await, 3);
    let refused = client()
        .get(instances[2].url("/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);

    instances[0].signal(Signal::SIGKILL);
    instances[0].wait_exit().await;
    for h in hung {
        assert!(
            h.await.unwrap().is_err(),
            "the killed instance's clients lose their connection"
        );
    }
    // The dead instance no longer renews: its leases lapse within one lease period.
    eventually(Duration::from_secs(3), || async {
        (usage(&instances[1]).await == 0).then_some(())
    })
    .await;
    let through = client()
        .get(instances[2].url("/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), 200);
    let _ = instances.remove(0);
}

#[tokio::test]
async fn restarting_an_instance_loses_no_place_and_no_session() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let config = shared(&upstream, &redis, &web(1));
    let mut a = Process::start("1s", &config).await;
    let b = Process::start("1s", &config).await;
    let mut inside = a.visitor();
    assert_eq!(inside.get("/echo").await.0, 200);
    let mut first = a.visitor();
    assert_eq!(first.get("/echo").await.1["position"], 1);
    let mut second = a.visitor();
    assert_eq!(second.get("/echo").await.1["position"], 2);

    a.signal(Signal::SIGKILL);
    a.wait_exit().await;
    let a2 = Process::start("1s", &config).await;

    // The admitted visitor carries on through either instance.
    for base in [a2.base(), b.base()] {
        let mut v = Visitor::new(base);
        v.pass = inside.pass.clone();
        assert_eq!(v.get("/echo").await.0, 200);
    }
    // The waiting ones keep their places.
    let mut v = Visitor::new(a2.base());
    v.ticket = second.ticket.clone();
    assert_eq!(v.poll().await["position"], 2);
    let mut v = Visitor::new(b.base());
    v.ticket = first.ticket.clone();
    assert_eq!(v.poll().await["position"], 1);
    first.ticket = v.ticket.clone();
    let mut leaving = Visitor::new(a2.base());
    leaving.pass = inside.pass.clone();
    leaving.leave().await;
    assert_eq!(
        Visitor::new(b.base()).poll().await["state"],
        "expired",
        "no token, no place"
    );
    let mut v = Visitor::new(b.base());
    v.ticket = first.ticket.clone();
    assert_eq!(v.poll().await["state"], "admitted");
}

#[tokio::test]
async fn redis_outage_keeps_pass_holders_going_and_service_resumes() {
    let mut redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let config = shared(&upstream, &redis, &web(2));
    let instances = three(&config).await;
    let mut inside = instances[0].visitor();
    assert_eq!(inside.get("/echo").await.0, 200);

    redis.pause();
    // Past the touch interval: the pass is checked locally, the store call times out.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for instance in &instances {
        let mut v = instance.visitor();
        v.pass = inside.pass.clone();
        assert_eq!(
            v.get("/echo").await.0,
            200,
            "a pass holder keeps going while Redis is down"
        );
    }
    let (status, body) = instances[1].visitor().get("/echo").await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "QUEUE_REQUIRED");
    assert_eq!(body["state"], "unavailable");
    let page = client()
        .get(instances[2].url("/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(r#"data-state="unavailable""#)
    );
    let ready = get_json(instances[0].admin_url("/readyz")).await;
    assert_eq!(
        ready["ready"], true,
        "a store outage does not take the instance out of rotation"
    );
    assert_eq!(ready["store"]["up"], false);
    let metrics = get_text(instances[1].admin_url("/metrics")).await;
    assert!(
        metric("anteroom_store_errors_total")
            .label("op", "arrive")
            .value(&metrics)
            .is_some(),
        "{metrics}"
    );
    assert_eq!(metric("anteroom_store_up").value(&metrics), Some(0.0));

    // Back: new arrivals are admitted again, without restarting anteroom.
    redis.resume();
    let mut later = instances[1].visitor();
    eventually(Duration::from_secs(5), || async {
        let (status, _) = Visitor::new(instances[1].base())
            .get("/__anteroom/capacity?room=web")
            .await;
        (status == 200).then_some(())
    })
    .await;
    assert_eq!(later.get("/echo").await.0, 200);
    // Three in line behind the two inside, through the three instances.
    let mut waiting = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let mut v = instance.visitor();
        let (status, body) = v.get("/echo").await;
        assert_eq!(
            (status.as_u16(), body["position"].as_u64()),
            (503, Some(i as u64 + 1))
        );
        waiting.push(v);
    }

    // Redis restarted empty: connections come back and rooms are set up
    // again on first use, and the passes are taken back: both holders keep
    // going on every instance (never queued as newcomers) and hold their
    // slots, so a newcomer waits.
    redis.restart();
    let mut answers = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        for (i, holder) in [&inside, &later].into_iter().enumerate() {
            let mut v = instances[i + 1].visitor();
            v.pass = holder.pass.clone();
            answers.push(v.get("/echo").await.0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answers.iter().all(|&s| s == 200),
        "pass holders after Redis restarted: {answers:?}"
    );
    let mut newcomer = instances[2].visitor();
    let (status, body) = newcomer.get("/echo").await;
    assert_eq!(
        (status.as_u16(), body["state"].as_str()),
        (503, Some("queued"))
    );
    // Those in line come back, the last first and each through another
    // instance: they keep their order, ahead of the newcomer.
    for (i, v) in waiting.iter_mut().enumerate().rev() {
        let mut back = Visitor::new(instances[(i + 1) % 3].base());
        back.ticket = v.ticket.clone();
        assert_eq!(back.poll().await["state"], "queued");
        v.ticket = back.ticket.clone();
    }
    for (i, v) in waiting.iter_mut().enumerate() {
        assert_eq!(
            v.poll().await["position"],
            i + 1,
            "the line's order after the loss"
        );
    }
    assert_eq!(
        newcomer.poll().await["position"],
        4,
        "behind everyone who was in line"
    );
    let (_, capacity) = instances[0]
        .visitor()
        .get("/__anteroom/capacity?room=web")
        .await;
    assert_eq!(capacity["inUse"], 2, "{capacity}");
    let ready = get_json(instances[0].admin_url("/readyz")).await;
    assert_eq!(ready["store"]["up"], true);
}

#[tokio::test]
async fn open_policy_lets_newcomers_through_while_redis_is_down() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let config = shared(
        &upstream,
        &redis,
        &web(1).replace("capacity = 1", "capacity = 1\non_store_error = \"open\""),
    );
    let instance = Process::start("1s", &config).await;
    let mut inside = instance.visitor();
    assert_eq!(inside.get("/echo").await.0, 200);
    assert_eq!(
        instance.visitor().get("/echo").await.0,
        503,
        "full while Redis is up"
    );
    redis.pause();
    let resp = client().get(instance.url("/echo")).send().await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "open: let through while the store is down"
    );
    let metrics = get_text(instance.admin_url("/metrics")).await;
    assert_eq!(
        metric("anteroom_store_open_admissions_total")
            .label("room", "web")
            .value(&metrics),
        Some(1.0),
        "{metrics}"
    );
    redis.resume();
}

#[tokio::test]
async fn redis_over_tls_with_a_password() {
    let (redis, ca) = RedisServer::start_tls("s3cret-for-anteroom-tests");
    let upstream = TestUpstream::start().await;
    let config = format!(
        r#"
[tokens]
signing_key = "{key}"

[store]
backend = "redis"
url = "rediss://localhost:{port}/0"
password = "s3cret-for-anteroom-tests"
ca_file = "{ca}"
sweep_interval = "100ms"

[[upstream]]
name = "app"
address = "{addr}"
{web}
"#,
        key = keys().private.display(),
        port = redis.port,
        ca = ca.display(),
        addr = upstream.addr,
        web = web(1),
    );
    let instance = Process::start("1s", &config).await;
    let mut inside = instance.visitor();
    let (status, body) = inside.get("/echo").await;
    assert_eq!(status, 200, "{body}\n{}", redis.log());
    let (status, body) = instance.visitor().get("/echo").await;
    assert_eq!(status, 503);
    assert_eq!(body["position"], 1, "queued through Redis over TLS");
    let ready = get_json(instance.admin_url("/readyz")).await;
    assert_eq!(ready["store"]["up"], true);
    assert!(
        !instance.log().contains("s3cret-for-anteroom-tests"),
        "the password reached the log"
    );
}

#[tokio::test]
async fn three_instances_share_one_rate() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let config = shared(
        &upstream,
        &redis,
        r#"
[[room]]
name = "llm"
mode = "requests"
capacity = 100
rate = "10/s"

[[route]]
path_prefix = "/"
upstream = "app"
room = "llm"
"#,
    );
    let instances = three(&config).await;
    let http = crate::common::client();
    let start = std::time::Instant::now();
    let answers = join_all((0..60).map(|i| http.get(instances[i % 3].url("/echo")).send())).await;
    let elapsed = start.elapsed();
    let mut refused = 0;
    for resp in answers {
        let resp = resp.unwrap();
        if resp.status() == 503 {
            refused += 1;
            assert!(resp.headers().contains_key("retry-after"));
        } else {
            assert_eq!(resp.status(), 200);
        }
    }
    // One line of moments for all three: at most one per 100 ms in all,
    // where three instances counting alone would let three through.
    let served = upstream.seen.requests.load(SeqCst);
    let allowed = 1 + (elapsed.as_millis() / 100) as usize;
    assert!(served <= allowed, "{served} served in {elapsed:?}");
    assert_eq!(served + refused, 60);

    // Waiting within max_wait, the three serve a burst at the shared pace.
    let waiting = config.replace("rate = \"10/s\"", "rate = \"10/s\"\nmax_wait = \"5s\"");
    let instances = three(&waiting).await;
    let before = upstream.seen.requests.load(SeqCst);
    let start = std::time::Instant::now();
    let answers = join_all((0..12).map(|i| http.get(instances[i % 3].url("/echo")).send())).await;
    assert!(answers.into_iter().all(|r| r.unwrap().status() == 200));
    assert_eq!(upstream.seen.requests.load(SeqCst) - before, 12);
    // Twelve moments 100 ms apart: the last cannot have gone before 1.1 s.
    assert!(start.elapsed() >= std::time::Duration::from_millis(1100));
}

#[tokio::test]
async fn three_instances_share_one_token_budget() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let config = shared(
        &upstream,
        &redis,
        r#"
[[room]]
name = "llm"
mode = "requests"
capacity = 100
tokens_per_minute = 3000
token_estimate = 500

[[route]]
path_prefix = "/"
upstream = "app"
room = "llm"
"#,
    );
    let instances = three(&config).await;
    let http = crate::common::client();
    // Each answer reports 1,000 tokens: three fill the minute, whichever
    // instances they went through; the fourth finds no room on any.
    for (i, instance) in instances.iter().enumerate() {
        let resp = http
            .get(instance.url("/usage?tokens=1000"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
    }
    // Each correction is made once its answer has gone out: wait until all
    // three are in (each instance counts its own once corrected).
    eventually(Duration::from_secs(5), || async {
        let mut used = 0.0;
        for instance in &instances {
            let text = get_text(instance.admin_url("/metrics")).await;
            used += metric("anteroom_room_tokens_total").sum(&text);
        }
        (used == 3000.0).then_some(())
    })
    .await;
    for instance in &instances {
        let resp = http
            .get(instance.url("/usage?tokens=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "QUEUE_REQUIRED");
    }
    assert_eq!(upstream.seen.requests.load(SeqCst), 3);
}

/// A `requests` room of `capacity` for `/slow` and `/echo`, with `extra` keys.
fn requests_room(capacity: u32, extra: &str) -> String {
    format!(
        "[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = {capacity}\n{extra}\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\nroom = \"llm\"\n"
    )
}

/// The common case is local: an instance serves a `requests` room from the
/// allowance it leased, not with two Redis round trips per request.
#[tokio::test]
async fn a_shared_requests_room_needs_no_round_trip_per_request() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let instance = Process::start("1s", &shared(&upstream, &redis, &requests_room(8, ""))).await;
    let http = client();
    // Warm: the first request leases the allowance.
    assert_eq!(
        http.get(instance.url("/echo"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = redis.scripts_run();
    for _ in 0..50 {
        let answers = join_all((0..4).map(|_| http.get(instance.url("/echo")).send())).await;
        assert!(answers.into_iter().all(|r| r.unwrap().status() == 200));
    }
    let scripts = redis.scripts_run() - before;
    // 200 requests; the instance's background steps (sweeps, renewals,
    // reports) run a few scripts a second whatever the traffic.
    assert!(
        scripts < 100,
        "{scripts} scripts for 200 requests (two per request without allowances)"
    );
    assert_eq!(upstream.seen.requests.load(SeqCst), 201);
}

/// Demand moving from one instance to another takes the whole capacity
/// with it, and two instances that both want more than their share are
/// both served, never more than the capacity at once.
#[tokio::test]
async fn request_allowances_follow_demand_between_instances() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let instances = three(&shared(&upstream, &redis, &requests_room(4, ""))).await;
    let http = client();
    let slow = |i: usize, n: usize, ms: u64| {
        let url = instances[i].url(&format!("/slow?ms={ms}"));
        let http = http.clone();
        join_all((0..n).map(move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(url).send().await.unwrap().status().as_u16() }
        }))
    };
    // All four slots through the first instance; the second finds none.
    let first = tokio::spawn(slow(0, 4, 800));
    eventually(Duration::from_secs(5), || async {
        (upstream.seen.in_flight.load(SeqCst) == 4).then_some(())
    })
    .await;
    assert_eq!(slow(1, 1, 10).await, vec![503], "the room is full");
    assert_eq!(first.await.unwrap(), vec![200; 4]);
    // Then all four through the second: the first gave its allowance back.
    let second = eventually(Duration::from_secs(5), || async {
        let answers = slow(1, 4, 300).await;
        answers.iter().all(|s| *s == 200).then_some(answers)
    })
    .await;
    assert_eq!(second.len(), 4);
    assert!(upstream.seen.peak.load(SeqCst) <= 4, "over capacity");

    // Both want six, waiting for slots: all twelve served, four at a time at most.
    let waiting = three(&shared(
        &upstream,
        &redis,
        &requests_room(4, "max_wait = \"10s\""),
    ))
    .await;
    upstream.seen.peak.store(0, SeqCst);
    let wave = |i: usize| {
        let url = waiting[i].url("/slow?ms=200");
        let http = http.clone();
        join_all((0..6).map(move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(url).send().await.unwrap().status().as_u16() }
        }))
    };
    let (a, b) = tokio::join!(wave(0), wave(1));
    assert_eq!(a, vec![200; 6], "the first instance's requests");
    assert_eq!(b, vec![200; 6], "the second instance's requests");
    let peak = upstream.seen.peak.load(SeqCst);
    assert!((2..=4).contains(&peak), "peak {peak}");
}
