//! Visitor journeys delivered to event sinks by the real binary: a JSON
//! lines file and a Redis stream on a real redis-server (complete and in
//! order per visitor, consent deciding the attribution), a sink that is down
//! ending in the dead-letter file and `anteroom events replay` delivering it
//! later, a graceful stop that flushes the buffer, a webhook receiver that
//! fails and then takes the batch once with a valid signature, and NATS
//! JetStream (a real `nats-server -js`) through a 10-second outage.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::Value;

use crate::common::metric;
use crate::common::nats::NatsServer;
use crate::common::process::Process;
use crate::common::redis::RedisServer;
use crate::common::{TestUpstream, eventually, get_json, keys};

/// A sessions room of one in front of `upstream`, with these `[events]`
/// settings and sinks.
fn config(upstream: &TestUpstream, events: &str, consent: bool) -> String {
    let attribution = if consent {
        "[attribution]\nconsent_cookie = \"cmp\"\nconsent_values = [\"yes\"]\n"
    } else {
        ""
    };
    format!(
        "[tokens]\nsigning_key = \"{}\"\n[store]\nbackend = \"memory\"\nsweep_interval = \"50ms\"\n\
         {attribution}[events]\ninstance = \"test-1\"\nflush_interval = \"20ms\"\n{events}\n\
         [[upstream]]\nname = \"app\"\naddress = \"{}\"\n\
         [[room]]\nname = \"web\"\nmode = \"sessions\"\ncapacity = 1\n\
         [[route]]\npath_prefix = \"/\"\nupstream = \"app\"\nroom = \"web\"\n",
        keys().private.display(),
        upstream.addr
    )
}

/// `[events]` with one Redis stream sink named `stream` on `redis`, dead
/// letters in `dir`, and `extra` `[events]` keys.
fn redis_sink(dir: &Path, redis: &RedisServer, extra: &str) -> String {
    format!(
        "dead_letter_dir = \"{}\"\n{extra}[[events.sink]]\nkind = \"redis\"\nname = \"stream\"\nurl = \"{}\"\n",
        dir.display(),
        redis.url()
    )
}

/// `[events]` with one file sink writing `file`, dead letters in `dir`,
/// and `extra` `[events]` keys.
fn file_sink(dir: &Path, file: &Path, extra: &str) -> String {
    format!(
        "dead_letter_dir = \"{}\"\n{extra}[[events.sink]]\nkind = \"file\"\npath = \"{}\"\n",
        dir.display(),
        file.display()
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One visitor let in at once, one who waits, is let in when the first
/// leaves, and leaves too: their journeys, as the sink received them.
async fn two_journeys(p: &Process) {
    let mut first = p.visitor();
    assert_eq!(
        first.get("/?utm_source=meta&utm_campaign=launch").await.0,
        200
    );
    let mut second = p.visitor();
    let (status, _) = second.get("/?utm_source=tiktok").await;
    assert_eq!(status, 503);
    assert_eq!(first.leave().await["state"], "released");
    second.poll_until(|s| s["state"] == "admitted").await;
    assert_eq!(second.leave().await["state"], "released");
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The journeys of `two_journeys` are complete, in order, linked, unique.
fn check_journeys(events: &[Value]) {
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "arrived", "admitted", "arrived", "queued", "released", "admitted", "released"
        ],
        "{events:#?}"
    );
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    for e in events {
        assert_eq!(
            (e["v"].as_u64(), e["room"].as_str(), e["instance"].as_str()),
            (Some(1), Some("web"), Some("test-1"))
        );
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
    // The waiting visitor: one journey from arrival to admission, then its session.
    let (arrived, queued, admitted) = (&events[2], &events[3], &events[5]);
    assert_eq!(arrived["journey"], queued["journey"]);
    assert_eq!(queued["journey"], admitted["journey"]);
    assert_eq!(admitted["how"], "queue");
    assert_eq!(admitted["session"], events[6]["session"]);
    assert_eq!(events[6]["how"], "leave");
    // The first: let in at once, its session released by leaving.
    assert_eq!(events[0]["journey"], events[1]["journey"]);
    assert_eq!(events[1]["how"], "direct");
    assert_eq!(events[1]["session"], events[4]["session"]);
    assert_ne!(events[1]["session"], events[6]["session"]);
}

#[tokio::test]
async fn a_journey_arrives_in_the_file_complete_in_order_and_with_its_campaign() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let sinks = file_sink(dir.path(), &file, "");
    let p = Process::start("1s", &config(&upstream, &sinks, false)).await;
    two_journeys(&p).await;
    let events = eventually(Duration::from_secs(10), || async {
        let events = lines(&file);
        (events.len() >= 7).then_some(events)
    })
    .await;
    check_journeys(&events);
    assert_eq!(events[0]["attribution"]["source"], "meta");
    assert_eq!(events[0]["attribution"]["campaign"], "launch");
    assert_eq!(events[2]["attribution"]["source"], "tiktok");
    assert_eq!(events[3]["position"], 1);
    let metrics = metrics(&p).await;
    assert_eq!(
        metric("anteroom_events_delivered_total")
            .label("sink", "file-0")
            .value(&metrics),
        Some(7.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_journey_arrives_in_a_redis_stream() {
    let upstream = TestUpstream::start().await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sinks = redis_sink(dir.path(), &redis, "") + "stream = \"anteroom:events\"\n";
    let p = Process::start("1s", &config(&upstream, &sinks, false)).await;
    two_journeys(&p).await;
    let events = eventually(Duration::from_secs(10), || async {
        let events = stream(&redis, "anteroom:events");
        (events.len() >= 7).then_some(events)
    })
    .await;
    check_journeys(&events);
}

async fn metrics(p: &Process) -> String {
    crate::common::client()
        .get(p.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The events of a Redis stream, in order.
fn stream(redis: &RedisServer, key: &str) -> Vec<Value> {
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--raw",
            "XRANGE",
            key,
            "-",
            "+",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn consent_decides_whether_the_campaign_is_recorded() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let sinks = file_sink(dir.path(), &file, "");
    let p = Process::start("1s", &config(&upstream, &sinks, true)).await;
    let url = p.url("/?utm_source=meta&gclid=abc");
    let http = crate::common::client();
    for cookie in ["cmp=no", "cmp=yes"] {
        let resp = http
            .get(&url)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success() || resp.status() == 503);
    }
    let events = eventually(Duration::from_secs(10), || async {
        let events = lines(&file);
        (of_type(&events, "arrived").len() >= 2).then_some(events)
    })
    .await;
    let arrived = of_type(&events, "arrived");
    assert!(
        arrived[0].get("attribution").is_none(),
        "without consent: {}",
        arrived[0]
    );
    assert!(
        arrived[0]["journey"].is_string(),
        "the journey is still counted"
    );
    assert_eq!(arrived[1]["attribution"]["source"], "meta");
    assert_eq!(arrived[1]["attribution"]["gclid"], "abc");
}

#[tokio::test]
async fn a_sink_that_is_down_ends_in_the_dead_letters_and_replay_delivers_them() {
    let upstream = TestUpstream::start().await;
    let mut redis = RedisServer::start();
    redis.stop();
    let dir = tempfile::tempdir().unwrap();
    let sinks = redis_sink(
        dir.path(),
        &redis,
        "max_attempts = 2\nretry_base = \"20ms\"\ntimeout = \"500ms\"\n",
    );
    let conf = config(&upstream, &sinks, false);
    let p = Process::start("1s", &conf).await;
    two_journeys(&p).await;
    let dead = dir.path().join("stream.jsonl");
    let kept = eventually(Duration::from_secs(15), || async {
        let kept = lines(&dead);
        (kept.len() >= 7).then_some(kept)
    })
    .await;
    check_journeys(&kept);
    let metrics = metrics(&p).await;
    assert_eq!(
        metric("anteroom_events_dead_lettered_total")
            .label("sink", "stream")
            .value(&metrics),
        Some(7.0),
        "{metrics}"
    );
    assert_eq!(
        metric("anteroom_event_sink_up")
            .label("sink", "stream")
            .value(&metrics),
        Some(0.0)
    );
    // The instance stays ready: a sink does not take it out of the load balancer.
    let ready = crate::common::client()
        .get(p.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // The server is back: replay delivers what was kept, once, in order.
    redis.restart();
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args(["events", "replay"])
        .arg(&dead)
        .arg("--config")
        .arg(p.dir().join("anteroom.toml"))
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(String::from_utf8_lossy(&replay.stdout).contains("7 events delivered"));
    check_journeys(&stream(&redis, "anteroom:events"));
    assert!(!dead.exists(), "the replayed file is renamed");
    assert!(dir.path().join("stream.jsonl.replayed").exists());
}

/// `on_full = "spill"`: a sink that fails keeps retrying what it took,
/// its buffer (2 events) fills, and the events past it go to the dead
/// letters meanwhile, whole and in order; none is dropped.
#[tokio::test]
async fn a_full_buffer_spills_to_the_dead_letters_while_the_sink_retries() {
    let upstream = TestUpstream::start().await;
    let mut redis = RedisServer::start();
    redis.stop();
    let dir = tempfile::tempdir().unwrap();
    let sinks = redis_sink(
        dir.path(),
        &redis,
        "buffer = 2\non_full = \"spill\"\nmax_attempts = 100\n\
         retry_base = \"200ms\"\nretry_max = \"200ms\"\ntimeout = \"500ms\"\n",
    );
    let conf = config(&upstream, &sinks, false);
    let p = Process::start("1s", &conf).await;
    two_journeys(&p).await;
    let dead = dir.path().join("stream.jsonl");
    // 7 events: at most 2 buffered and 2 in the retried batch; the rest
    // spill, and are counted as they are written.
    let kept = eventually(Duration::from_secs(15), || async {
        let kept = lines(&dead);
        let counted = format!(
            "anteroom_events_dead_lettered_total{{sink=\"stream\"}} {}",
            kept.len()
        );
        (kept.len() >= 3 && metrics(&p).await.contains(&counted)).then_some(kept)
    })
    .await;
    let kinds = [
        "arrived", "admitted", "arrived", "queued", "released", "admitted", "released",
    ];
    let got: Vec<&str> = kept.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.ends_with(&got), "the last events, in order: {got:?}");
    let metrics = metrics(&p).await;
    assert_eq!(
        metric("anteroom_events_dropped_total")
            .label("sink", "stream")
            .value(&metrics),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric("anteroom_event_sink_up")
            .label("sink", "stream")
            .value(&metrics),
        Some(0.0)
    );
}

/// A stop while a sink is down and its task waits to try again: the task
/// stops waiting, and every event is in the dead letters, in order, before
/// the process exits.
#[tokio::test]
async fn a_stop_while_a_sink_retries_keeps_every_event_in_the_dead_letters() {
    let upstream = TestUpstream::start().await;
    let mut redis = RedisServer::start();
    redis.stop();
    let dir = tempfile::tempdir().unwrap();
    // A hundred attempts half a second apart: far longer than the grace.
    let sinks = redis_sink(
        dir.path(),
        &redis,
        "max_attempts = 100\nretry_base = \"500ms\"\nretry_max = \"500ms\"\ntimeout = \"300ms\"\n",
    );
    let conf = config(&upstream, &sinks, false);
    let mut p = Process::start("2s", &conf).await;
    two_journeys(&p).await;
    eventually(Duration::from_secs(10), || async {
        let m = metrics(&p).await;
        (metric("anteroom_events_failed_deliveries_total")
            .label("sink", "stream")
            .value(&m)
            != Some(0.0))
        .then_some(())
    })
    .await;
    let dead = dir.path().join("stream.jsonl");
    assert!(
        lines(&dead).is_empty(),
        "still retrying: nothing buried yet"
    );
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(p.wait_exit().await.success());
    check_journeys(&lines(&dead));
}

#[tokio::test]
async fn a_graceful_stop_delivers_what_is_buffered() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    // Events wait up to a minute for their batch: only the stop sends them.
    let sinks = file_sink(dir.path(), &file, "batch = 1000\n");
    let conf = config(&upstream, &sinks, false)
        .replace("flush_interval = \"20ms\"", "flush_interval = \"60s\"");
    let mut p = Process::start("2s", &conf).await;
    two_journeys(&p).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lines(&file).is_empty(), "nothing delivered before the stop");
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(p.wait_exit().await.success());
    check_journeys(&lines(&file));
}

/// `scripts/funnel --json` over an events file: its rows.
fn funnel(file: &Path) -> Vec<Value> {
    let out = std::process::Command::new("scripts/funnel")
        .arg("--json")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A sum of a metric's series whose line starts with `prefix`.
fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cookie-less requests (bots, link prefetchers) arrive, are let in or
/// queued, and never come back: once their places lapse, each journey gets
/// an `unconfirmed` event, and the funnel counts them apart, never as
/// visitors; `/metrics` agrees (arrivals less unconfirmed lapses).
#[tokio::test]
async fn the_funnel_leaves_out_arrivals_that_never_confirmed() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let sinks = file_sink(dir.path(), &file, "");
    let conf = config(&upstream, &sinks, false).replace(
        "capacity = 1\n",
        "capacity = 2\npoll_interval = \"500ms\"\nconfirm_window = \"1s\"\n[room.conversion]\npath_prefix = \"/buy\"\n",
    );
    let p = Process::start("1s", &conf).await;
    let mut person = p.visitor();
    assert_eq!(
        person.get("/?utm_source=meta&utm_campaign=launch").await.0,
        200
    );
    assert_eq!(person.post("/buy").await.0, 200);
    let bot = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let resp = bot
            .get(p.url("/?utm_source=meta&utm_campaign=launch"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 503, 503], "one let in at once, two queued");
    let events = eventually(Duration::from_secs(15), || async {
        let events = lines(&file);
        (of_type(&events, "unconfirmed").len() >= 3).then_some(events)
    })
    .await;
    let lapsed: Vec<&str> = of_type(&events, "unconfirmed")
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(lapsed.iter().filter(|w| **w == "session").count(), 1);
    assert_eq!(lapsed.iter().filter(|w| **w == "ticket").count(), 2);
    // Each names a journey that arrived.
    for e in of_type(&events, "unconfirmed") {
        assert!(
            of_type(&events, "arrived")
                .iter()
                .any(|a| a["journey"] == e["journey"]),
            "{e}"
        );
    }
    person.leave().await;
    let rows = funnel(&file);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let meta = &rows[0];
    assert_eq!(
        (
            meta["arrivals"].as_u64(),
            meta["admitted"].as_u64(),
            meta["conversions"].as_u64(),
            meta["unconfirmed"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(3)),
        "{rows:?}"
    );
    assert_eq!(meta["conversion_rate"], 1.0);
    // The metrics say the same: arrivals less the places that lapsed unconfirmed.
    let metrics = crate::common::get_text(p.admin_url("/metrics")).await;
    let arrived = metric_sum(&metrics, "anteroom_visitors_arrived_total{");
    let unconfirmed = metric_sum(
        &metrics,
        "anteroom_visitors_expired_total{kind=\"unconfirmed_session\"",
    ) + metric_sum(
        &metrics,
        "anteroom_visitors_expired_total{kind=\"unconfirmed_ticket\"",
    );
    assert_eq!((arrived, unconfirmed), (4.0, 3.0), "{metrics}");
    assert_eq!(arrived - unconfirmed, meta["arrivals"].as_f64().unwrap());
}

/// Per campaign: arrivals, waits, admissions and conversions, from the
/// events file by `scripts/funnel` (the funnel docs/events.md shows).
#[tokio::test]
async fn the_funnel_counts_each_campaign_from_the_events() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let sinks = file_sink(dir.path(), &file, "");
    let conf = config(&upstream, &sinks, false).replace(
        "capacity = 1\n",
        "capacity = 1\n[room.conversion]\npath_prefix = \"/buy\"\n",
    );
    let p = Process::start("1s", &conf).await;
    // meta: two visitors, the first let in at once, the second after a wait; both buy.
    // tiktok: one visitor who waits, gets in and does not buy.
    let mut a = p.visitor();
    assert_eq!(a.get("/?utm_source=meta&utm_campaign=launch").await.0, 200);
    let mut b = p.visitor();
    assert_eq!(b.get("/?utm_source=meta&utm_campaign=launch").await.0, 503);
    let mut c = p.visitor();
    assert_eq!(
        c.get("/?utm_source=tiktok&utm_campaign=teaser").await.0,
        503
    );
    assert_eq!(a.post("/buy").await.0, 200);
    a.leave().await;
    b.poll_until(|s| s["state"] == "admitted").await;
    assert_eq!(b.post("/buy").await.0, 200);
    b.leave().await;
    c.poll_until(|s| s["state"] == "admitted").await;
    c.leave().await;
    eventually(Duration::from_secs(10), || async {
        (of_type(&lines(&file), "released").len() >= 3).then_some(())
    })
    .await;
    let rows = funnel(&file);
    let row = |source: &str| rows.iter().find(|r| r["source"] == source).unwrap().clone();
    let meta = row("meta");
    assert_eq!(
        (
            meta["campaign"].as_str(),
            meta["arrivals"].as_u64(),
            meta["queued"].as_u64(),
            meta["admitted"].as_u64(),
            meta["conversions"].as_u64()
        ),
        (Some("launch"), Some(2), Some(1), Some(2), Some(2)),
        "{rows:?}"
    );
    assert_eq!(meta["conversion_rate"], 1.0);
    assert!(meta["median_wait_ms"].as_f64().unwrap() > 0.0);
    let tiktok = row("tiktok");
    assert_eq!(
        (
            tiktok["arrivals"].as_u64(),
            tiktok["admitted"].as_u64(),
            tiktok["conversions"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(tiktok["conversion_rate"], 0.0);
}

/// Deliveries a receiver took: (signature header, body).
type Taken = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver: refuses the first `fail` deliveries (and every one
/// while `down`), keeps the bodies and signatures of those it takes.
struct Receiver {
    url: String,
    fail: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    taken: Taken,
}

impl Receiver {
    async fn start(fail: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let fail = Arc::new(AtomicUsize::new(fail));
        let down = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let taken: Taken = Arc::new(Mutex::new(Vec::new()));
        let (f, d, a, t) = (fail.clone(), down.clone(), attempts.clone(), taken.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (f, d, a, t) = (f.clone(), d.clone(), a.clone(), t.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (f, d, a, t) = (f.clone(), d.clone(), a.clone(), t.clone());
                            async move {
                                a.fetch_add(1, SeqCst);
                                let signature = req
                                    .headers()
                                    .get("anteroom-signature")
                                    .map(|v| v.to_str().unwrap().to_owned())
                                    .unwrap_or_default();
                                let body =
                                    req.into_body().collect().await.unwrap().to_bytes().to_vec();
                                let refuse = d.load(SeqCst)
                                    || f.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
                                let status = if refuse {
                                    500
                                } else {
                                    t.lock().push((signature, body));
                                    200
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Receiver {
            url,
            fail,
            down,
            attempts,
            taken,
        }
    }

    /// Every event taken, in order, each delivery's signature checked.
    fn events(&self, secret: &str) -> Vec<Value> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let mut all = Vec::new();
        for (signature, body) in self.taken.lock().iter() {
            let (t, v1) = signature
                .strip_prefix("t=")
                .and_then(|s| s.split_once(",v1="))
                .unwrap_or_else(|| panic!("no signature: {signature:?}"));
            let age = crate::common::unix_now().abs_diff(t.parse::<u64>().unwrap());
            assert!(age < 120, "the signature's time is now");
            let mut signed = format!("{t}.").into_bytes();
            signed.extend(body);
            let tag: Vec<u8> = (0..v1.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).unwrap())
                .collect();
            aws_lc_rs::hmac::verify(&key, &signed, &tag).expect("a valid signature");
            let batch: Vec<Value> = serde_json::from_slice(body).unwrap();
            all.extend(batch);
        }
        all
    }
}

const SECRET: &str = "webhook-secret-for-the-tests";

fn webhook_sink(dir: &Path, url: &str) -> String {
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    format!(
        "dead_letter_dir = \"{}\"\nmax_attempts = 4\nretry_base = \"20ms\"\nretry_max = \"100ms\"\n\
         [[events.sink]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
        dir.display(),
        secret.display()
    )
}

#[tokio::test]
async fn a_webhook_that_fails_three_times_gets_the_batch_once_signed() {
    let upstream = TestUpstream::start().await;
    let receiver = Receiver::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(
        "1s",
        &config(&upstream, &webhook_sink(dir.path(), &receiver.url), false),
    )
    .await;
    two_journeys(&p).await;
    let events = eventually(Duration::from_secs(10), || async {
        let events = receiver.events(SECRET);
        (events.len() >= 7).then_some(events)
    })
    .await;
    check_journeys(&events);
    assert!(
        receiver.attempts.load(SeqCst) >= 4,
        "three refusals, then taken"
    );
    assert_eq!(receiver.fail.load(SeqCst), 0);
    let metrics = metrics(&p).await;
    assert_eq!(
        metric("anteroom_events_failed_deliveries_total")
            .label("sink", "hook")
            .value(&metrics),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric("anteroom_events_dead_lettered_total")
            .label("sink", "hook")
            .value(&metrics),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_webhook_that_always_fails_ends_in_the_dead_letters_and_replay_delivers_later() {
    let upstream = TestUpstream::start().await;
    let receiver = Receiver::start(0).await;
    receiver.down.store(true, SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(
        "1s",
        &config(&upstream, &webhook_sink(dir.path(), &receiver.url), false),
    )
    .await;
    two_journeys(&p).await;
    let dead = dir.path().join("hook.jsonl");
    eventually(Duration::from_secs(15), || async {
        (lines(&dead).len() >= 7).then_some(())
    })
    .await;
    assert!(receiver.events(SECRET).is_empty());
    receiver.down.store(false, SeqCst);
    // The receiver runs on this test's runtime: the command is awaited, not blocked on.
    let replay = tokio::process::Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args(["events", "replay", "--sink", "hook"])
        .arg(&dead)
        .arg("--config")
        .arg(p.dir().join("anteroom.toml"))
        .output()
        .await
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    check_journeys(&receiver.events(SECRET));
}

/// Every message of a JetStream stream, in order: (subject, event).
async fn jetstream(nats: &NatsServer, stream: &str) -> Vec<(String, Value)> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push((
                m.subject.to_string(),
                serde_json::from_slice(&m.payload).unwrap(),
            ));
        }
    }
    out
}

fn nats_sink(dir: &Path, nats: &NatsServer) -> String {
    format!(
        "dead_letter_dir = \"{}\"\nmax_attempts = 40\nretry_base = \"100ms\"\nretry_max = \"1s\"\ntimeout = \"1s\"\n\
         [[events.sink]]\nkind = \"nats\"\nname = \"js\"\nurl = \"{}\"\nsubject = \"anteroom.events\"\n",
        dir.display(),
        nats.url()
    )
}

#[tokio::test]
async fn a_journey_arrives_in_jetstream_on_a_subject_per_room_and_type() {
    let upstream = TestUpstream::start().await;
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(
        "1s",
        &config(&upstream, &nats_sink(dir.path(), &nats), false),
    )
    .await;
    two_journeys(&p).await;
    let messages = eventually(Duration::from_secs(10), || async {
        let m = jetstream(&nats, "ANTEROOM_EVENTS").await;
        (m.len() >= 7).then_some(m)
    })
    .await;
    let events: Vec<Value> = messages.iter().map(|(_, e)| e.clone()).collect();
    check_journeys(&events);
    for (subject, event) in &messages {
        assert_eq!(
            subject,
            &format!("anteroom.events.web.{}", event["type"].as_str().unwrap())
        );
    }
}

/// A JetStream stream made by the operator with a real NATS client, as
/// infrastructure as code does.
async fn operator_stream(
    nats: &NatsServer,
    name: &str,
    subjects: &str,
) -> async_nats::jetstream::Context {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

/// anteroom with a NATS sink that never makes a stream, dead letters in `dir`.
async fn never_making_streams(upstream: &TestUpstream, dir: &Path, nats: &NatsServer) -> Process {
    let sink = format!("{}create_stream = false\n", nats_sink(dir, nats));
    Process::start("1s", &config(upstream, &sink, false)).await
}

/// The journeys of `two_journeys`, as the stream `name` holds them.
async fn journeys_in(nats: &NatsServer, name: &str) -> Vec<Value> {
    let messages = eventually(Duration::from_secs(15), || async {
        let m = jetstream(nats, name).await;
        (m.len() >= 7).then_some(m)
    })
    .await;
    messages.into_iter().map(|(_, e)| e).collect()
}

/// NATS operators make their streams themselves: a stream `ANTEROOM` on
/// `anteroom.events.>`, made beforehand by a real NATS client, receives the
/// journeys, and anteroom makes no stream of its own (before, it tried, got
/// "subjects overlap", and dead-lettered every event).
#[tokio::test]
async fn a_stream_the_operator_made_receives_the_events() {
    let upstream = TestUpstream::start().await;
    let nats = NatsServer::start();
    let js = operator_stream(&nats, "ANTEROOM", "anteroom.events.>").await;
    let dir = tempfile::tempdir().unwrap();
    let p = never_making_streams(&upstream, dir.path(), &nats).await;
    two_journeys(&p).await;
    check_journeys(&journeys_in(&nats, "ANTEROOM").await);
    assert!(
        js.get_stream("ANTEROOM_EVENTS").await.is_err(),
        "a second stream was made"
    );
    let dead = lines(&dir.path().join("js.jsonl"));
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    let ready = get_json(p.admin_url("/readyz?details")).await;
    assert_eq!(ready["sinks"][0]["up"], true, "{ready}");
}

/// With `create_stream = false` and no stream on its subjects, the sink is
/// down (said in `/readyz?details`) and the events wait; once the operator
/// makes a stream, they arrive.
#[tokio::test]
async fn without_a_stream_and_leave_to_make_one_the_sink_waits_for_it() {
    let upstream = TestUpstream::start().await;
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let p = never_making_streams(&upstream, dir.path(), &nats).await;
    two_journeys(&p).await;
    eventually(Duration::from_secs(10), || async {
        let ready = get_json(p.admin_url("/readyz?details")).await;
        (ready["sinks"][0]["up"] == false).then_some(())
    })
    .await;
    operator_stream(&nats, "EVENTS", "anteroom.*.>").await;
    check_journeys(&journeys_in(&nats, "EVENTS").await);
}

/// NATS stopped for 10 s under steady traffic, then started again: every
/// event of the outage arrives once it is back, and admitted requests were
/// no slower meanwhile (counted over a threshold, not timed one by one).
#[tokio::test]
async fn a_nats_outage_loses_nothing_and_slows_no_request() {
    let upstream = TestUpstream::start().await;
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = config(&upstream, &nats_sink(dir.path(), &nats), false)
        .replace("capacity = 1\n", "capacity = 1000\n");
    let p = Process::start("1s", &conf).await;
    let mut inside = p.visitor();
    assert_eq!(inside.get("/").await.0, 200);
    // Steady traffic for `secs`: the one inside, and a newcomer every 100 ms
    // (two events each). Returns (requests, slower than 250 ms, newcomers).
    async fn traffic(
        p: &Process,
        inside: &mut crate::common::Visitor,
        secs: u64,
    ) -> (u32, u32, u32) {
        let until = Instant::now() + Duration::from_secs(secs);
        let (mut n, mut slow, mut newcomers) = (0, 0, 0);
        while Instant::now() < until {
            let t = Instant::now();
            assert_eq!(inside.get("/").await.0, 200);
            n += 1;
            if t.elapsed() > Duration::from_millis(250) {
                slow += 1;
            }
            if n % 5 == 0 {
                assert_eq!(p.visitor().get("/").await.0, 200);
                newcomers += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (n, slow, newcomers)
    }
    let before = traffic(&p, &mut inside, 2).await;
    nats.stop();
    let during = traffic(&p, &mut inside, 10).await;
    nats.restart();
    let after = traffic(&p, &mut inside, 1).await;
    let expected = 2 + 2 * (before.2 + during.2 + after.2) as usize;
    let messages = eventually(Duration::from_secs(30), || async {
        let m = jetstream(&nats, "ANTEROOM_EVENTS").await;
        (m.len() >= expected).then_some(m)
    })
    .await;
    let mut ids: Vec<String> = messages
        .iter()
        .map(|(_, e)| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        expected,
        "every event once (JetStream drops repeats by Nats-Msg-Id)"
    );
    assert!(during.0 > 100, "traffic went on: {during:?}");
    assert!(
        during.1 <= before.1 + 2,
        "requests slowed during the outage: {before:?} then {during:?}"
    );
    assert!(
        lines(&dir.path().join("js.jsonl")).is_empty(),
        "nothing needed the dead letters"
    );
}

/// Past `max_bytes` the file is rotated to `<path>.<unix ms>`; nothing is
/// lost, and the files in name order hold the events in order.
#[tokio::test]
async fn the_file_is_rotated_past_its_size() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let sinks = file_sink(dir.path(), &file, "batch = 1\n") + "max_bytes = 600\n";
    let p = Process::start("1s", &config(&upstream, &sinks, false)).await;
    two_journeys(&p).await;
    let (all, rotations) = eventually(Duration::from_secs(10), || async {
        let mut rotated: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("events.jsonl.")
            })
            .collect();
        rotated.sort();
        let mut all: Vec<Value> = rotated.iter().flat_map(|r| lines(r)).collect();
        all.extend(lines(&file));
        (all.len() >= 7).then_some((all, rotated.len()))
    })
    .await;
    assert!(rotations >= 2, "rotated {rotations} times");
    check_journeys(&all);
}

/// An operator's change to a room is an event too, with what changed.
#[tokio::test]
async fn an_operators_change_to_a_room_is_an_event() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let sinks = file_sink(dir.path(), &file, "");
    let p = Process::start("1s", &config(&upstream, &sinks, false)).await;
    let resp = crate::common::client()
        .patch(p.admin_url("/admin/rooms/web"))
        .json(&serde_json::json!({"state": "paused", "capacity": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = eventually(Duration::from_secs(10), || async {
        let events = lines(&file);
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events[0]["type"], "room_changed");
    assert_eq!(events[0]["room"], "web");
    assert_eq!(events[0]["change"]["state"], "paused");
    assert_eq!(events[0]["change"]["capacity"], 7);
    assert!(events[0]["change"].get("admit_rate").is_none());
}
