//! `GET /__anteroom/events`: a waiting visitor's place and turn, pushed as
//! server-sent events instead of waiting for their next poll.
//!
//! The stream is the visitor's presence: each `poll_interval` (jittered) it
//! sends the store a heartbeat that keeps the place, and it tells a changed
//! place. The moment the store reserves a slot for the ticket it wakes the
//! stream ([`crate::wakeups`]), which says `turn` and ends; the visitor's next
//! status poll claims the slot and sets the pass cookie, which a stream
//! cannot. Every event is the JSON a status poll answers, so polling stays
//! the fallback with nothing else to learn. A stream ends after
//! [`STREAM_LIFE`] (the client reconnects, under the config then in force)
//! and when the process starts draining.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::ALLOW;
use ipnet::IpNet;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rand::Rng;
use tokio::sync::Notify;

use crate::clients::{self, Limit, Limited};
use crate::config::Limits;
use crate::gate::Beat;
use crate::lifecycle::Lifecycle;
use crate::proxy::answers::{self, Told};
use crate::proxy::api::Api;
use crate::proxy::site::Site;
use crate::request::facts::Facts;
use crate::response::{self, Reply};
use crate::store::Store;

/// Where the stream is served.
pub const PATH: &str = "/__anteroom/events";

/// How long one stream lasts before the client reconnects.
pub const STREAM_LIFE: Duration = Duration::from_secs(300);

/// How long a client refused a stream (`streams_per_client`) is asked to
/// wait; its status polls go on meanwhile.
const STREAM_RETRY: Duration = Duration::from_secs(30);

/// Silence after which a comment goes out, so proxies keep the stream and a
/// client that is gone is found.
const KEEP_ALIVE_AFTER: Duration = Duration::from_secs(15);

/// The event streams of this instance: their metric families and the
/// streams open now, by ticket and by client network.
#[derive(Clone)]
pub struct Streams {
    open: IntGauge,
    turns: IntCounter,
    /// Streams ended by a limit: `streams_per_ticket` (the oldest of a
    /// ticket's closed by a newer one), `streams_per_client` (refused).
    ended: IntCounterVec,
    held: Arc<Mutex<Held>>,
}

impl Streams {
    /// Registers the families.
    pub fn register(registry: &Registry) -> Result<Streams, prometheus::Error> {
        let open = IntGauge::new("event_streams", "Open event streams of waiting visitors.")?;
        let turns = IntCounter::new(
            "event_stream_turns_total",
            "Wakeups told through an event stream the moment a slot was held.",
        )?;
        let ended = IntCounterVec::new(
            Opts::new(
                "event_streams_limited_total",
                "Event streams closed (streams_per_ticket: the oldest of a ticket's, for a newer one) or refused (streams_per_client) by a limit.",
            ),
            &["limit"],
        )?;
        for limit in ["streams_per_ticket", "streams_per_client"] {
            ended.with_label_values(&[limit]);
        }
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(turns.clone()))?;
        registry.register(Box::new(ended.clone()))?;
        Ok(Streams {
            open,
            turns,
            ended,
            held: Arc::default(),
        })
    }

    /// Takes a place for a stream of `ticket` from `network` in `room`
    /// under `limits`: `None` when the network already holds
    /// `streams_per_client`. A ticket's oldest stream past
    /// `streams_per_ticket` is told to close.
    fn hold(
        &self,
        room: &str,
        ticket: &str,
        network: Option<IpNet>,
        limits: &Limits,
    ) -> Option<HeldStream> {
        let (stream, closed) = {
            let mut held = self.held.lock();
            held.take(room, ticket, network, limits)?
        };
        for close in closed {
            self.ended.with_label_values(&["streams_per_ticket"]).inc();
            close.notify_one();
        }
        Some(HeldStream {
            held: Arc::clone(&self.held),
            stream,
        })
    }
}

/// The streams open on this instance: per (room, ticket) in the order they
/// opened, each with what closes it, and per (room, client network) how many.
#[derive(Default)]
struct Held {
    next: u64,
    tickets: HashMap<(String, String), VecDeque<Opened>>,
    networks: HashMap<(String, IpNet), u32>,
}

/// A stream of a ticket: its id, and what closes it.
type Opened = (u64, Arc<Notify>);

/// One stream's entry in [`Held`].
struct StreamKey {
    id: u64,
    ticket: (String, String),
    network: Option<(String, IpNet)>,
    close: Arc<Notify>,
}

impl Held {
    /// A place for one more stream, and what closes the streams it puts
    /// over their ticket's limit (oldest first).
    fn take(
        &mut self,
        room: &str,
        ticket: &str,
        network: Option<IpNet>,
        limits: &Limits,
    ) -> Option<(StreamKey, Vec<Arc<Notify>>)> {
        let network = network.map(|net| (room.to_owned(), net));
        if let Some(key) = &network {
            let open = self.networks.get(key).copied().unwrap_or(0);
            if limits.streams_per_client > 0 && open >= limits.streams_per_client {
                return None;
            }
            *self.networks.entry(key.clone()).or_default() += 1;
        }
        self.next += 1;
        let id = self.next;
        let close = Arc::new(Notify::new());
        let ticket = (room.to_owned(), ticket.to_owned());
        let open = self.tickets.entry(ticket.clone()).or_default();
        open.push_back((id, Arc::clone(&close)));
        let mut closed = Vec::new();
        while limits.streams_per_ticket > 0 && open.len() > limits.streams_per_ticket as usize {
            if let Some((_, oldest)) = open.pop_front() {
                closed.push(oldest);
            }
        }
        Some((
            StreamKey {
                id,
                ticket,
                network,
                close,
            },
            closed,
        ))
    }

    /// A stream ended: its entries go.
    fn give_back(&mut self, key: &StreamKey) {
        if let Some(open) = self.tickets.get_mut(&key.ticket) {
            open.retain(|(id, _)| *id != key.id);
            if open.is_empty() {
                self.tickets.remove(&key.ticket);
            }
        }
        if let Some(net) = &key.network {
            if let Some(n) = self.networks.get_mut(net) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.networks.remove(net);
                }
            }
        }
    }
}

/// A stream's place in [`Held`], given back when it ends however it ends.
struct HeldStream {
    held: Arc<Mutex<Held>>,
    stream: StreamKey,
}

impl HeldStream {
    /// Resolves when a newer stream of the same ticket closed this one.
    async fn closed(&self) {
        self.stream.close.notified().await;
    }
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        self.held.lock().give_back(&self.stream);
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
    streams: &Streams,
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
    let limits = &w.config.limits;
    let held = match &ticket {
        Some(ticket) => {
            let network = clients::network_of(facts.ip, facts.peer, limits);
            let Some(held) = streams.hold(room.name(), ticket, network, limits) else {
                room.counters().limited(Limit::Streams).inc();
                streams
                    .ended
                    .with_label_values(&["streams_per_client"])
                    .inc();
                let limited = Limited {
                    limit: Limit::Streams,
                    retry_after: STREAM_RETRY,
                };
                return answers::limited(room, w, &limited, &facts)
                    .send(session)
                    .await;
            };
            Some(held)
        }
        None => None,
    };
    response::start_stream(session, "text/event-stream; charset=utf-8").await?;
    // Reconnect soon when the connection drops.
    session
        .write_response_body(Some(Bytes::from_static(b"retry: 1000\n\n")), false)
        .await?;
    let mut told = Told::default();
    let (Some(ticket), Some(held)) = (ticket, held) else {
        // No place to watch: said once, as a poll would.
        if let Some(event) = told.event(room, w, &Beat::Expired) {
            session
                .write_response_body(Some(event.frame), false)
                .await?;
        }
        return session.write_response_body(None, true).await;
    };
    let watch = gate.store().wakeups().watch(room.name(), &ticket);
    let _open = Open::new(&streams.open);
    let (start, mut last_write) = (Instant::now(), Instant::now());
    // A beat the visitor's own clock asks for counts as a poll of the
    // ticket (`polls_per_minute`); one the store's turn wakes does not.
    let mut counted = true;
    loop {
        // Registered before the store is asked: a turn given meanwhile wakes it.
        let woken = watch.woken();
        let beat = gate.heartbeat(room, w, &facts, counted).await;
        if let Some(event) = told.event(room, w, &beat) {
            session
                .write_response_body(Some(event.frame), false)
                .await?;
            last_write = Instant::now();
            if event.last {
                if matches!(beat, Beat::Turn) {
                    streams.turns.inc();
                }
                break;
            }
        } else if last_write.elapsed() >= KEEP_ALIVE_AFTER {
            session
                .write_response_body(Some(Bytes::from_static(answers::KEEP_ALIVE)), false)
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
            () = woken => counted = false,
            () = tokio::time::sleep(beat_in) => counted = true,
            () = lifecycle.draining() => break,
            // A newer stream of the same ticket took this one's place.
            () = held.closed() => break,
            // The client went away: its place in the limits is given back
            // now, not at the next write that fails.
            _ = session.read_body_or_idle(true) => return Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ticket: u32, per_client: u32) -> Limits {
        Limits {
            streams_per_ticket: per_ticket,
            streams_per_client: per_client,
            prefix_v4: 32,
            prefix_v6: 64,
            ..Limits::default()
        }
    }

    #[test]
    fn a_newer_stream_of_a_ticket_closes_the_oldest() {
        let mut held = Held::default();
        let l = limits(2, 0);
        let (a, closed) = held.take("web", "t1", None, &l).unwrap();
        assert!(closed.is_empty());
        let (b, closed) = held.take("web", "t1", None, &l).unwrap();
        assert!(closed.is_empty());
        // Another ticket, or the same ticket in another room, is apart.
        assert!(held.take("web", "t2", None, &l).unwrap().1.is_empty());
        assert!(held.take("api", "t1", None, &l).unwrap().1.is_empty());
        let (c, closed) = held.take("web", "t1", None, &l).unwrap();
        assert_eq!(closed.len(), 1);
        assert!(Arc::ptr_eq(&closed[0], &a.close), "the oldest is closed");
        // Closed streams give back what they held, once.
        held.give_back(&a);
        held.give_back(&b);
        held.give_back(&c);
        assert!(!held.tickets.contains_key(&("web".into(), "t1".into())));
    }

    #[test]
    fn a_network_holds_at_most_its_streams_and_gets_them_back() {
        let mut held = Held::default();
        let l = limits(0, 3);
        let net: IpNet = "192.0.2.7/32".parse().unwrap();
        let other: IpNet = "192.0.2.8/32".parse().unwrap();
        let taken: Vec<StreamKey> = (0..3)
            .map(|i| held.take("web", &format!("t{i}"), Some(net), &l).unwrap().0)
            .collect();
        assert!(held.take("web", "t9", Some(net), &l).is_none());
        assert!(held.take("web", "t9", Some(other), &l).is_some());
        assert!(held.take("api", "t9", Some(net), &l).is_some(), "per room");
        held.give_back(&taken[0]);
        assert!(held.take("web", "t9", Some(net), &l).is_some());
        assert!(held.take("web", "t10", Some(net), &l).is_none());
        // 0 is no limit.
        let free = limits(0, 0);
        assert!((0..50).all(|i| {
            held.take("web", &format!("u{i}"), Some(net), &free)
                .is_some()
        }));
    }
}
