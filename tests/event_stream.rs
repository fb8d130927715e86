//! The event stream at `/__anteroom/events`: a waiting visitor hears their
//! turn the moment a slot frees, not at their next poll; on the memory store,
//! and across two instances sharing Redis (the slot freed on one, the
//! stream open on the other).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::common::process::Process;
use crate::common::{Store, TestUpstream, Visitor, client, keys};

/// A room of one where polls and heartbeats come only every 10 s, so that a
/// turn heard within a second was pushed.
const ROOM: &str = "capacity = 1\npoll_interval = \"10s\"\nclaim_window = \"20s\"\nheartbeat_timeout = \"40s\"\nrejoin_grace = \"60s\"\nconfirm_window = \"30s\"";

/// The instances the visitors use: `(where slots free, where streams are open)`,
/// the same process on the memory store.
async fn instances(store: Store<'_>, upstream: &TestUpstream) -> Vec<Process> {
    let (head, n) = match store {
        Store::Memory => (
            format!(
                "[tokens]\nsigning_key = \"{}\"\n[store]\nbackend = \"memory\"\nsweep_interval = \"50ms\"\n",
                keys().private.display()
            ),
            1,
        ),
        Store::Redis(redis) => (redis.shared_store("push", "timeout = \"300ms\""), 2),
    };
    let config = format!(
        "{head}\n[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[room]]\nname = \"web\"\nmode = \"sessions\"\n{ROOM}\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\nroom = \"web\"\n",
        upstream.addr
    );
    let mut started = Vec::new();
    for _ in 0..n {
        started.push(Process::start("1s", &config).await);
    }
    started
}

/// The `status` events of a stream, as they arrive.
struct Events {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    async fn open(base: &str, ticket: Option<&str>) -> (reqwest::StatusCode, String, Events) {
        let mut req = client().get(format!("{base}/__anteroom/events?room=web"));
        if let Some(ticket) = ticket {
            req = req.header("x-anteroom-ticket", ticket);
        }
        let resp = req.send().await.unwrap();
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        (
            resp.status(),
            content_type,
            Events {
                body: resp.bytes_stream().boxed(),
                buffer: String::new(),
            },
        )
    }

    /// The next `status` event's JSON, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .map(|d| serde_json::from_str(d).unwrap());
                if frame.lines().any(|l| l == "event: status") {
                    return data;
                }
                continue;
            }
            let chunk = self.body.next().await?.ok()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// Five visitors wait, each with an open stream; the one inside leaves
/// (on the other instance, with Redis), five times. Each time the head of the line hears its turn within a second
/// (counted, not asserted per event), the others hear nothing but their
/// place, and the order is the order of arrival.
async fn a_turn_is_heard_at_once(store: Store<'_>) {
    let upstream = TestUpstream::start().await;
    let instances = instances(store, &upstream).await;
    let (frees, streams) = (&instances[0], instances.last().unwrap());
    let mut inside = frees.visitor();
    assert_eq!(inside.get("/").await.0, 200);
    let mut waiting = Vec::new();
    for i in 0..5 {
        let mut v = streams.visitor();
        let (status, body) = v.get("/").await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (503, Some("QUEUE_REQUIRED"))
        );
        let (status, content_type, mut events) =
            Events::open(&streams.base(), v.ticket.as_deref()).await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        // The first event tells the place at once.
        let first = events.next().await.unwrap();
        assert_eq!(
            (first["state"].as_str(), first["position"].as_u64()),
            (Some("queued"), Some(i + 1))
        );
        waiting.push((i, v, events));
    }
    let mut late = 0;
    let mut order = Vec::new();
    while !waiting.is_empty() {
        let freed = Instant::now();
        assert_eq!(inside.leave().await["state"], "released");
        let (i, mut head, mut events) = waiting.remove(0);
        let turn = loop {
            let event = tokio::time::timeout(Duration::from_secs(15), events.next())
                .await
                .expect("no turn within 15 s")
                .expect("the stream ended without a turn");
            if event["state"] != "queued" {
                break event;
            }
        };
        if freed.elapsed() > Duration::from_secs(1) {
            late += 1;
        }
        assert_eq!(turn["state"], "turn", "{turn}");
        // The stream ends with the turn; the poll claims it.
        assert!(events.next().await.is_none());
        let admitted = head.poll().await;
        assert_eq!(admitted["state"], "admitted", "{admitted}");
        order.push(i);
        // The next slot frees on the other instance again.
        inside = Visitor::new(frees.base());
        inside.pass = head.pass.take();
    }
    assert_eq!(
        late, 0,
        "turns heard more than a second after the slot freed"
    );
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    let metrics = client()
        .get(streams.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("anteroom_event_stream_turns_total 5"),
        "{metrics}"
    );
    assert!(metrics.contains("anteroom_event_streams 0"));
}

/// Without a place the stream says `expired` once and ends; only GET.
async fn a_stream_without_a_ticket_says_expired(store: Store<'_>) {
    let upstream = TestUpstream::start().await;
    let instances = instances(store, &upstream).await;
    let base = instances[0].base();
    let (status, _, mut events) = Events::open(&base, None).await;
    assert_eq!(status, 200);
    assert_eq!(events.next().await.unwrap()["state"], "expired");
    assert!(events.next().await.is_none());
    let (status, _, mut events) = Events::open(&base, Some("forged.token.here")).await;
    assert_eq!(status, 200);
    assert_eq!(events.next().await.unwrap()["state"], "expired");
    let post = client()
        .post(format!("{base}/__anteroom/events?room=web"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}

crate::on_both_stores!(
    a_turn_is_heard_at_once,
    a_stream_without_a_ticket_says_expired
);
