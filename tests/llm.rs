//! LLM rooms in front of an API that enforces its own limits (the fake LLM of
//! `anteroom demo`: requests in flight, requests and tokens per window, 429
//! `RESOURCE_EXHAUSTED` with a retry hint past them, answers streamed as
//! SSE with usage). Behind anteroom, clients see no 429 while they can wait,
//! the API runs near its limits, a limit that changes is followed, and two
//! clients with 10:1 demand share the API evenly; on the memory store and on
//! three instances sharing Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anteroom::demo::llm::Quota;
use parking_lot::Mutex;

use crate::common::metric;
use crate::common::process::Process;
use crate::common::{Store, TestUpstream, client, get_json};

/// Starts the instances in front of `upstream` with `rooms_and_routes`.
async fn instances(store: Store, upstream: &TestUpstream, rooms_and_routes: &str) -> Vec<Process> {
    let shared = store.shared_toml("llm", "lease = \"2s\"\ntimeout = \"300ms\"");
    let config = format!(
        "{}\n[[upstream]]\nname = \"llm\"\naddress = \"{}\"\nread_timeout = \"30s\"\n{rooms_and_routes}",
        shared.as_deref().unwrap_or_default(),
        upstream.addr
    );
    let n = if shared.is_some() { 3 } else { 1 };
    let mut started = Vec::new();
    for _ in 0..n {
        started.push(Process::start("1s", &config).await);
    }
    started
}

/// What the clients saw, by client and status.
#[derive(Default)]
struct Seen(Mutex<HashMap<(String, u16), u64>>);

impl Seen {
    fn count(&self, status: u16) -> u64 {
        let seen = self.0.lock();
        seen.iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    fn all(&self) -> HashMap<(String, u16), u64> {
        self.0.lock().clone()
    }
}

/// `loops` concurrent callers per client and per instance, each calling
/// `path` again as soon as its answer (read to the end) is in, until
/// `stop`. Clients are named by `x-client`.
fn callers(
    instances: &[Process],
    clients: &[(&str, usize)],
    path: &str,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Seen>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (name, loops) in clients {
        for instance in instances {
            for _ in 0..*loops {
                let (url, name) = (instance.url(path), name.to_string());
                let (stop, seen) = (Arc::clone(stop), Arc::clone(seen));
                tasks.push(tokio::spawn(async move {
                    let http = client();
                    while !stop.load(SeqCst) {
                        let Ok(resp) = http.get(&url).header("x-client", &name).send().await else {
                            continue;
                        };
                        let status = resp.status().as_u16();
                        let _ = resp.bytes().await;
                        *seen.0.lock().entry((name.clone(), status)).or_default() += 1;
                        if status != 200 {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }));
            }
        }
    }
    tasks
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<()>>, stop: &AtomicBool) {
    stop.store(true, SeqCst);
    for t in tasks {
        let _ = t.await;
    }
}

/// A requests room "gemini" with `keys`, guarding every path of the API,
/// its route with `route_keys`.
fn room(keys: &str, route_keys: &str) -> String {
    format!(
        "[[room]]\nname = \"gemini\"\nmode = \"requests\"\n{keys}\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"llm\"\nroom = \"gemini\"\n{route_keys}\n"
    )
}

// Each scenario on the memory store (one instance) and on three instances
// sharing a redis-server.
crate::each_store!(
    overload_is_waiting_at_the_apis_rate_in_fair_shares,
    an_adaptive_limit_follows_the_api_down,
    over_budget_calls_get_queue_required,
    a_fast_rate_lets_in_everything_below_it,
);

/// A fast `rate` is kept on every store: at 100,000 a second with no wait
/// (`max_wait = "0s"`), clients far below the rate are all let in. On Redis
/// the rate's clock once counted whole milliseconds, which cut every rate
/// to 1,000 a second and turned away most of such a load; and a rate with a
/// moment every 10 µs turned away concurrent requests 10 µs apart.
async fn a_fast_rate_lets_in_everything_below_it(store: Store) {
    const CALLERS: usize = 16;
    const CALLS: usize = 40;
    let upstream = TestUpstream::start().await;
    let keys = "capacity = 64\nmax_wait = \"0s\"\nrate = \"100000/s\"";
    let instances = instances(store, &upstream, &room(keys, "")).await;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let url = instances[i % instances.len()].url("/x");
            tokio::spawn(async move {
                let http = client();
                let mut statuses = Vec::with_capacity(CALLS);
                for _ in 0..CALLS {
                    let resp = http.get(&url).send().await.unwrap();
                    statuses.push(resp.status().as_u16());
                    let _ = resp.bytes().await;
                }
                statuses
            })
        })
        .collect();
    let mut seen: HashMap<u16, usize> = HashMap::new();
    for task in tasks {
        for status in task.await.unwrap() {
            *seen.entry(status).or_default() += 1;
        }
    }
    assert_eq!(
        seen.get(&200).copied().unwrap_or(0),
        CALLERS * CALLS,
        "every call below the rate is let in: {seen:?}"
    );
}

fn rate_room() -> String {
    room(
        "capacity = 4\nmax_wait = \"20s\"\nrate = \"20/s\"\nadaptive = true\nmin_capacity = 1\nfair_by = \"header:x-client\"",
        "retry_429 = true",
    )
}

/// Overload of a rate-limited API (20 a second, 4 in flight) by a heavy
/// client with ten times the callers of a light one: no 429 reaches anyone,
/// the API serves at least 90% of its rate, and the two get even shares.
async fn overload_is_waiting_at_the_apis_rate_in_fair_shares(store: Store) {
    let upstream = TestUpstream::start_llm(Quota {
        concurrency: 4,
        requests: 20,
        tokens: u64::MAX,
        window: Duration::from_secs(1),
    })
    .await;
    let llm = upstream.llm();
    let instances = instances(store, &upstream, &rate_room()).await;
    // Ten times the callers, and enough of both that each always has
    // someone in line.
    let per_instance = if instances.len() == 1 {
        (80, 8)
    } else {
        (30, 3)
    };
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Seen::default()));
    let tasks = callers(
        &instances,
        &[("heavy", per_instance.0), ("light", per_instance.1)],
        "/llm?gap=20",
        &stop,
        &seen,
    );
    // Counted from a second in, once every caller is in line.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (from, before) = (Instant::now(), llm.completed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (to, after) = (Instant::now(), llm.completed());
    finish(tasks, &stop).await;

    assert_eq!(
        seen.count(429),
        0,
        "an upstream 429 reached a client: {:?}",
        seen.all()
    );
    assert_eq!(
        seen.count(200),
        seen.all().values().sum::<u64>(),
        "{:?}",
        seen.all()
    );
    let started = llm.started_between(from, to) as f64;
    let allowed = 20.0 * (to - from).as_secs_f64();
    assert!(
        started >= 0.9 * allowed,
        "the API served {started} calls of the {allowed} its rate allows"
    );
    let share = |name: &str| {
        let done = |m: &HashMap<String, u64>| m.get(name).copied().unwrap_or(0);
        done(&after) - done(&before)
    };
    let (heavy, light) = (share("heavy") as f64, share("light") as f64);
    let light_share = light / (heavy + light);
    eprintln!(
        "{} instance(s): {started} calls started of {allowed:.0} allowed, heavy {heavy}, light {light}, API refusals {}",
        instances.len(),
        llm.refused()
    );
    assert!(
        (0.4..=0.6).contains(&light_share),
        "light got {light} and heavy {heavy} of the calls while both waited"
    );
}

fn adaptive_room() -> String {
    room(
        "capacity = 4\nmax_wait = \"20s\"\nadaptive = true\nmin_capacity = 1",
        "retry_429 = true",
    )
}

/// The API's concurrency falls from 4 to 2 mid-run (someone else took half
/// of a shared quota): its 429s shrink the room's limit to 2 in two steps,
/// no client sees one, and the API stays at least 90% busy.
async fn an_adaptive_limit_follows_the_api_down(store: Store) {
    let quota = Quota {
        concurrency: 4,
        requests: u32::MAX,
        tokens: u64::MAX,
        window: Duration::from_secs(60),
    };
    let upstream = TestUpstream::start_llm(quota).await;
    let llm = upstream.llm();
    let instances = instances(store, &upstream, &adaptive_room()).await;
    let per_instance = if instances.len() == 1 { 8 } else { 3 };
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Seen::default()));
    let tasks = callers(
        &instances,
        &[("c", per_instance)],
        "/llm?gap=100",
        &stop,
        &seen,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        llm.refused(),
        0,
        "4 in flight is the API's limit and the room's"
    );

    llm.set_quota(Quota {
        concurrency: 2,
        ..quota
    });
    let limits = || async {
        let mut limits = Vec::new();
        for instance in &instances {
            let room = get_json(instance.admin_url("/admin/rooms/gemini")).await;
            limits.push(room["limit"].as_u64().unwrap_or(0));
        }
        limits
    };
    // Two 429s after the change are enough: 4 → 3 → 2.
    let steps = crate::common::eventually(Duration::from_secs(10), || async {
        (llm.refused() >= 2).then_some(())
    });
    steps.await;
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to = Instant::now();
    let now = limits().await;
    finish(tasks, &stop).await;

    assert_eq!(
        seen.count(429),
        0,
        "an upstream 429 reached a client: {:?}",
        seen.all()
    );
    assert_eq!(
        seen.count(200),
        seen.all().values().sum::<u64>(),
        "{:?}",
        seen.all()
    );
    // Probing for more: at most one over the API's new limit. On Redis the
    // three share one limit, which their lag may take one lower.
    let lowest = if instances.len() == 1 { 2 } else { 1 };
    assert!(
        now.iter().all(|l| (lowest..=3).contains(l)),
        "limits {now:?}"
    );
    let used = llm.utilisation(from, to, 2);
    eprintln!(
        "{} instance(s): limits {now:?}, API places {:.0}% used, API refusals {} for {} answers",
        instances.len(),
        used * 100.0,
        llm.refused(),
        llm.completed_total()
    );
    // On a shared store each place handed on is a round trip to Redis,
    // during which it stands empty; on a loaded two-core machine those
    // take longer. A limit that fell too far would leave half unused.
    let least = if instances.len() == 1 { 0.9 } else { 0.75 };
    assert!(
        used >= least,
        "the API's 2 places were {:.0}% used",
        used * 100.0
    );
}

fn token_room() -> String {
    room(
        "capacity = 10\nmax_wait = \"1s\"\ntokens_per_minute = 600\ntoken_estimate = 100",
        "retry_429 = true",
    )
}

/// A minute's token budget (600, each answer 100): six calls go through,
/// the rest get `503 QUEUE_REQUIRED` with an honest Retry-After, and the
/// API never has to refuse one.
async fn over_budget_calls_get_queue_required(store: Store) {
    let upstream = TestUpstream::start_llm(Quota {
        concurrency: 10,
        requests: 1000,
        tokens: 600,
        window: Duration::from_secs(60),
    })
    .await;
    let llm = upstream.llm();
    let instances = instances(store, &upstream, &token_room()).await;
    let http = client();
    let mut statuses = Vec::new();
    for i in 0..10 {
        let resp = http
            .get(instances[i % instances.len()].url("/llm?tokens=100&gap=1"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if status == 503 {
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((5..=60).contains(&retry), "retry after {retry} s");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["code"], "QUEUE_REQUIRED");
        } else {
            let _ = resp.bytes().await;
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [[200; 6].as_slice(), &[503; 4]].concat());
    assert_eq!(llm.completed_total(), 6);
    assert_eq!(llm.refused(), 0, "anteroom kept to the budget itself");
}

/// An upstream 429 whose hint is longer than what is left of `max_wait`
/// is not held: the client gets the room's `503 QUEUE_REQUIRED`, never the
/// bare 429; without `retry_429` the upstream's 429 passes as it is.
#[tokio::test]
async fn a_429_that_cannot_wait_becomes_queue_required_and_retries_are_opt_in() {
    let upstream = TestUpstream::start_llm(Quota {
        concurrency: 10,
        requests: 1,
        tokens: u64::MAX,
        window: Duration::from_secs(60),
    })
    .await;
    let keys = "capacity = 10\nmax_wait = \"2s\"";
    let proxy = &instances(Store::Memory, &upstream, &room(keys, "retry_429 = true")).await[0];
    let http = client();
    let first = http.get(proxy.url("/llm")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let _ = first.bytes().await;
    // The API's minute is used up: its hint (about a minute) cannot be waited.
    let second = http.get(proxy.url("/llm")).send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["code"], "QUEUE_REQUIRED");

    let proxy = &instances(Store::Memory, &upstream, &room(keys, "")).await[0];
    let passed = http.get(proxy.url("/llm")).send().await.unwrap();
    assert_eq!(
        passed.status(),
        429,
        "without retry_429 the answer is the upstream's"
    );
    let body: serde_json::Value = passed.json().await.unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
}

/// A 429 the upstream hints at in its header is held and sent again once
/// the hint allows, whatever the method, and the client gets the answer.
#[tokio::test]
async fn a_held_429_is_sent_again_with_its_body() {
    let upstream = TestUpstream::start_llm(Quota {
        concurrency: 10,
        requests: 2,
        tokens: u64::MAX,
        window: Duration::from_millis(1500),
    })
    .await;
    let keys = "capacity = 10\nmax_wait = \"5s\"";
    let proxy = &instances(Store::Memory, &upstream, &room(keys, "retry_429 = true")).await[0];
    let http = client();
    let body = "{\"contents\":[{\"parts\":[{\"text\":\"hello\"}]}]}";
    let answers = futures_util::future::join_all((0..4).map(|_| {
        http.post(proxy.url("/llm"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    }))
    .await;
    for resp in answers {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.contains("totalTokenCount\":100"), "{text}");
    }
    assert!(
        upstream.llm().refused() >= 2,
        "the API refused the two over its window"
    );
    let metrics = crate::common::get_text(proxy.admin_url("/metrics")).await;
    assert_ne!(
        metric("anteroom_room_upstream_retries_total")
            .label("room", "gemini")
            .value(&metrics),
        Some(0.0),
        "{metrics}"
    );
}
