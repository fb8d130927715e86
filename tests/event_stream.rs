//! The event stream at `/__anteroom/events`: a waiting visitor hears their
//! turn the moment a slot frees, not at their next poll; on the memory store,
//! and across two instances sharing Redis (the slot freed on one, the
//! stream open on the other).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::common::process::Process;
use crate::common::{Store, TestUpstream, Visitor, client, keys, metric};

/// A room of one where polls and heartbeats come only every 10 s, so that a
/// turn heard within a second was pushed.
const ROOM: &str = "capacity = 1\npoll_interval = \"10s\"\nclaim_window = \"20s\"\nheartbeat_timeout = \"40s\"\nrejoin_grace = \"60s\"\nconfirm_window = \"30s\"";

/// The instances the visitors use: `(where slots free, where streams are open)`,
/// the same process on the memory store.
async fn instances(store: Store, upstream: &TestUpstream) -> Vec<Process> {
    let (head, n) = match store.shared_toml("push", "timeout = \"300ms\"") {
        None => (
            format!(
                "[tokens]\nsigning_key = \"{}\"\n[store]\nbackend = \"memory\"\nsweep_interval = \"50ms\"\n",
                keys().private.display()
            ),
            1,
        ),
        Some(shared) => (shared, 2),
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
        Events::open_with(&client(), base, ticket).await
    }

    /// The same through `http` (HTTP/2, say).
    async fn open_with(
        http: &reqwest::Client,
        base: &str,
        ticket: Option<&str>,
    ) -> (reqwest::StatusCode, String, Events) {
        let mut req = http.get(format!("{base}/__anteroom/events?room=web"));
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
async fn a_turn_is_heard_at_once(store: Store) {
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
    assert_eq!(
        metric("anteroom_event_stream_turns_total").value(&metrics),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(metric("anteroom_event_streams").value(&metrics), Some(0.0));
}

/// Without a place the stream says `expired` once and ends; only GET.
async fn a_stream_without_a_ticket_says_expired(store: Store) {
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

crate::each_store!(
    a_turn_is_heard_at_once,
    a_stream_without_a_ticket_says_expired
);

/// One ticket opens three streams: the oldest is closed, two stay. One
/// address opens streams for more tickets than `streams_per_client`: the
/// one past it is refused with 429, and taken again once one closes. Over
/// HTTP/1.1 (a connection per stream) and h2c (streams of one connection,
/// a closed one reset).
#[tokio::test]
async fn streams_are_limited_per_ticket_and_per_client_over_http1() {
    streams_are_limited_per_ticket_and_per_client(client()).await;
}

#[tokio::test]
async fn streams_are_limited_per_ticket_and_per_client_over_h2c() {
    let h2c = crate::common::h2c_client();
    streams_are_limited_per_ticket_and_per_client(h2c).await;
}

async fn streams_are_limited_per_ticket_and_per_client(http: reqwest::Client) {
    use crate::common::{Store, TestProxy, waiting_room_config};
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start_with("h2c = true", &waiting_room_config(
        &upstream,
        Store::Memory,
        "capacity = 1\npoll_interval = \"10s\"\nconfirm_window = \"30s\"\n[room.limits]\nstreams_per_ticket = 2\nstreams_per_client = 4",
        "",
    ))
    .await;
    let mut inside = proxy.visitor();
    assert_eq!(inside.get("/").await.0, 200);
    let mut tickets = Vec::new();
    for _ in 0..5 {
        let mut v = proxy.visitor();
        v.get("/").await;
        tickets.push(v.ticket().unwrap());
    }
    let base = format!("http://{}", proxy.addr);
    let (status, _, mut first) = Events::open_with(&http, &base, Some(&tickets[0])).await;
    assert_eq!(status, 200);
    assert!(first.next().await.is_some(), "the place is told");
    let (_, _, mut second) = Events::open_with(&http, &base, Some(&tickets[0])).await;
    assert!(second.next().await.is_some());
    let (_, _, mut third) = Events::open_with(&http, &base, Some(&tickets[0])).await;
    assert!(third.next().await.is_some());
    // The oldest ended; the newer two go on.
    let ended = tokio::time::timeout(Duration::from_secs(10), first.next()).await;
    assert_eq!(ended.ok(), Some(None), "the oldest stream was not closed");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric("anteroom_event_streams").of(&metrics),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric("anteroom_event_streams_limited_total")
            .label("limit", "streams_per_ticket")
            .of(&metrics),
        1.0
    );
    // Two streams from this address now; two more tickets take it to four.
    let (_, _, mut a) = Events::open_with(&http, &base, Some(&tickets[1])).await;
    let (_, _, mut b) = Events::open_with(&http, &base, Some(&tickets[2])).await;
    assert!(a.next().await.is_some() && b.next().await.is_some());
    let resp = http
        .get(format!("{base}/__anteroom/events?room=web"))
        .header("x-anteroom-ticket", &tickets[3])
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["limit"], "streams_per_client");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric("anteroom_event_streams_limited_total")
            .label("limit", "streams_per_client")
            .of(&metrics),
        1.0
    );
    assert_eq!(
        metric("anteroom_room_limited_total")
            .label("limit", "streams_per_client")
            .label("room", "web")
            .of(&metrics),
        1.0
    );
    // One closes: the place is free again.
    drop(a);
    crate::common::eventually(Duration::from_secs(10), || async {
        let resp = http
            .get(format!("{base}/__anteroom/events?room=web"))
            .header("x-anteroom-ticket", &tickets[3])
            .send()
            .await
            .unwrap();
        (resp.status() == 200).then_some(())
    })
    .await;
    drop((second, third, b));
}

/// An open stream's heartbeats count against the ticket's
/// `polls_per_minute` as its polls do: a stream alone uses the allowance up,
/// and the ticket's next poll is told to slow down.
#[tokio::test]
async fn a_streams_heartbeats_count_as_polls() {
    use crate::common::{Store, TestProxy, waiting_room_config};
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&waiting_room_config(
        &upstream,
        Store::Memory,
        "capacity = 1\npoll_interval = \"1s\"\nconfirm_window = \"30s\"\n[room.limits]\npolls_per_minute = 3",
        "",
    ))
    .await;
    let mut inside = proxy.visitor();
    assert_eq!(inside.get("/").await.0, 200);
    let mut waiting = proxy.visitor();
    waiting.get("/").await;
    let ticket = waiting.ticket().unwrap();
    let base = format!("http://{}", proxy.addr);
    let (status, _, mut stream) = Events::open(&base, Some(&ticket)).await;
    assert_eq!(status, 200);
    assert!(stream.next().await.is_some());
    let series = metric("anteroom_room_limited_total")
        .label("limit", "polls_per_minute")
        .label("room", "web");
    crate::common::eventually(Duration::from_secs(15), || async {
        (series.of(&proxy.metrics().await) >= 1.0).then_some(())
    })
    .await;
    let resp = client()
        .get(format!("{base}/__anteroom/status?room=web"))
        .header("x-anteroom-ticket", &ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429, "the heartbeats used the allowance");
    drop(stream);
}
