//! `GET /__anteroom/events`: a waiting visitor's place and turn, pushed as
//! server-sent events instead of waiting for their next poll.
//!
//! The stream is the visitor's presence: each `poll_interval` (jittered) it
//! sends the store a heartbeat that keeps the place, and it tells a changed
//! place. The moment the store reserves a slot for the ticket it wakes the
//! stream ([`crate::turns`]), which says `turn` and ends; the visitor's next
//! status poll claims the slot and sets the pass cookie, which a stream
//! cannot. Every event is the JSON a status poll answers, so polling stays
//! the fallback with nothing else to learn. A stream ends after
//! [`STREAM_LIFE`] (the client reconnects, under the config then in force)
//! and when the process starts draining.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::ALLOW;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounter, IntGauge, Registry};
use rand::Rng;

use crate::api::Api;
use crate::facts::Facts;
use crate::gate::Beat;
use crate::lifecycle::Lifecycle;
use crate::replies::{self, Told};
use crate::respond::{self, Reply};
use crate::site::Site;
use crate::store::Store;

/// Where the stream is served.
pub const PATH: &str = "/__anteroom/events";

/// How long one stream lasts before the client reconnects.
pub const STREAM_LIFE: Duration = Duration::from_secs(300);

/// Silence after which a comment goes out, so proxies keep the stream and a
/// client that is gone is found.
const KEEP_ALIVE_AFTER: Duration = Duration::from_secs(15);

/// The streams' metric families.
#[derive(Clone)]
pub struct StreamMetrics {
    open: IntGauge,
    turns: IntCounter,
}

impl StreamMetrics {
    /// Registers the families.
    pub fn register(registry: &Registry) -> Result<StreamMetrics, prometheus::Error> {
        let open = IntGauge::new("event_streams", "Open event streams of waiting visitors.")?;
        let turns = IntCounter::new(
            "event_stream_turns_total",
            "Turns told through an event stream the moment a slot was held.",
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(turns.clone()))?;
        Ok(StreamMetrics { open, turns })
    }
}

/// Whether this request asks for the event stream.
pub fn asks(path: &str) -> bool {
    path == PATH
}

/// Answers `GET /__anteroom/events` on `session` until the visitor's turn,
/// the end of their place, [`STREAM_LIFE`] or shutdown.
pub async fn serve(
    session: &mut pingora::proxy::Session,
    site: &Site,
    lifecycle: &Lifecycle,
    metrics: &StreamMetrics,
    peer: Option<IpAddr>,
    tls: bool,
) -> pingora::Result<()> {
    // The stream reads the request while it writes the response.
    let req = session.req_header().clone();
    let facts = match Facts::new(&site.config.server, &req, peer, tls) {
        Ok(facts) => facts,
        Err(refusal) => {
            return Reply::error(400, "BAD_REQUEST", refusal.to_string())
                .send(session)
                .await;
        }
    };
    if facts.req.method != http::Method::GET {
        return Reply::error(405, "METHOD_NOT_ALLOWED", "Use GET.")
            .header(ALLOW, "GET")
            .send(session)
            .await;
    }
    let api = Api {
        rooms: &site.rooms,
        gate: site.gate.as_deref(),
    };
    let query = facts.query.unwrap_or_default();
    let name = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "room")
        .map(|(_, v)| v.into_owned());
    let (gate, room, w) = match api.waiting_room(&facts, name.as_deref()) {
        Ok(found) => found,
        Err(reply) => return reply.send(session).await,
    };
    let ticket = gate
        .find_ticket(room.name(), w, &facts)
        .map(|(_, c)| c.sub.clone());
    respond::start_stream(session, "text/event-stream; charset=utf-8").await?;
    // Reconnect soon when the connection drops.
    session
        .write_response_body(Some(Bytes::from_static(b"retry: 1000\n\n")), false)
        .await?;
    let mut told = Told::default();
    let Some(ticket) = ticket else {
        // No place to watch: said once, as a poll would.
        if let Some(event) = told.event(room, w, &Beat::Expired) {
            session
                .write_response_body(Some(event.frame), false)
                .await?;
        }
        return session.write_response_body(None, true).await;
    };
    let watch = gate.store().turns().watch(room.name(), &ticket);
    let _open = Open::new(&metrics.open);
    let (start, mut last_write) = (Instant::now(), Instant::now());
    loop {
        // Registered before the store is asked: a turn given meanwhile wakes it.
        let woken = watch.woken();
        let beat = gate.heartbeat(room, w, &facts).await;
        if let Some(event) = told.event(room, w, &beat) {
            session
                .write_response_body(Some(event.frame), false)
                .await?;
            last_write = Instant::now();
            if event.last {
                if matches!(beat, Beat::Turn) {
                    metrics.turns.inc();
                }
                break;
            }
        } else if last_write.elapsed() >= KEEP_ALIVE_AFTER {
            session
                .write_response_body(Some(Bytes::from_static(replies::KEEP_ALIVE)), false)
                .await?;
            last_write = Instant::now();
        }
        let left = STREAM_LIFE.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        // Jitter spreads a crowd's heartbeats apart, as it does their polls.
        let beat_in = w
            .config
            .poll_interval
            .mul_f64(rand::thread_rng().gen_range(0.8..1.0))
            .min(left);
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(beat_in) => {}
            () = lifecycle.draining() => break,
        }
    }
    session.write_response_body(None, true).await
}

/// One open stream in the gauge, however it ends (an error included).
struct Open<'a>(&'a IntGauge);

impl<'a> Open<'a> {
    fn new(gauge: &'a IntGauge) -> Open<'a> {
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Off the request path: hears the slots other instances reserve (a
/// shared store publishes them) and wakes the streams open here. While the
/// store cannot be heard, streams learn of their turn at their next
/// heartbeat instead; it connects again after a second.
pub struct Listener {
    pub(crate) store: Arc<dyn Store>,
}

#[async_trait]
impl BackgroundService for Listener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                result = self.store.listen() => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "not hearing reservations; event streams wait for their heartbeat");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
