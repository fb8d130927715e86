//! The store conformance suite: the rules of a waiting room, checked against
//! `dyn Store` on every backend (the memory store, and the Redis store on a
//! redis-server and on a three-shard Redis Cluster this suite starts, one
//! cluster for every scenario, each under its own key prefix). A new backend
//! is added to `common::Store` and `each_store!` and must pass every scenario
//! unchanged.
//!
//! The stores keep real time (Redis its own clock), so rooms here have short
//! windows and the scenarios wait for the rule to take effect, with a
//! deadline, rather than for a fixed time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anteroom::config::{Deployment, RedisConfig, State};
use anteroom::store::memory::MemoryStore;
use anteroom::store::redis::RedisStore;
use anteroom::store::{
    Adopt, Arrival, Lane, Newcomer, Place, Polled, RoomSpec, SessionId, SessionInfo, Settings,
    SettingsPatch, Store, now_millis,
};

// The backends every scenario runs on (`each_store!` with the cluster).
use crate::common::Store as Backend;
use crate::common::eventually;
use crate::common::redis::RedisServer;
use crate::common::redis_deployments::{RedisCluster, Sentinels};

/// How long a rule may take to show.
const DEADLINE: Duration = Duration::from_secs(10);

/// A store under test, and what it needs to stay up.
struct Subject {
    store: Arc<dyn Store>,
    _server: Option<RedisServer>,
}

impl Backend {
    async fn open(self, specs: &[RoomSpec]) -> Subject {
        match self {
            Backend::Memory => Subject {
                store: Arc::new(MemoryStore::new(specs)),
                _server: None,
            },
            Backend::Redis(port) => {
                let config = RedisConfig {
                    deployment: Deployment::Server(format!("redis://127.0.0.1:{port}/0")),
                    ..redis_config_at("", "conformance")
                };
                let store =
                    RedisStore::new(&config, specs, &[], Duration::from_millis(50)).unwrap();
                store.prepare().await.unwrap();
                Subject {
                    store: Arc::new(store),
                    _server: None,
                }
            }
            Backend::Cluster => {
                let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
                    .await
                    .unwrap();
                let config = RedisConfig {
                    deployment: Deployment::Cluster(cluster.urls()),
                    ..redis_config(&cluster.nodes[0], &format!("c{:x}", rand::random::<u64>()))
                };
                let store =
                    RedisStore::new(&config, specs, &[], Duration::from_millis(50)).unwrap();
                store.prepare().await.unwrap();
                Subject {
                    store: Arc::new(store),
                    _server: None,
                }
            }
        }
    }
}

crate::each_store!(with_cluster:
    admits_up_to_capacity_then_queues_in_order,
    a_freed_slot_is_reserved_for_the_head,
    no_show_loses_the_reservation_then_comes_back_first,
    silent_tickets_stop_counting_and_are_forgotten,
    sessions_slide_and_lapse,
    session_max_caps_an_active_session,
    a_lapsed_session_frees_its_slot_for_the_line,
    wait_is_estimated_then_measured,
    admission_rate_queues_even_with_free_slots,
    priority_lane_is_served_by_its_weight,
    paused_keeps_order_and_maintenance_refuses,
    a_full_line_refuses_newcomers,
    leaving_the_line_moves_everyone_up,
    synthetic_visitors_join_the_back,
    unknown_tickets_are_expired,
    a_ticket_counts_from_its_first_poll_at_its_arrival_place,
    unconfirmed_tickets_are_offered_nothing_and_forgotten,
    a_place_let_in_at_once_waits_for_the_visitor_to_come_back,
    a_flood_of_unconfirmed_tickets_leaves_the_estimate_alone,
    a_poll_that_does_not_confirm_leaves_the_ticket_uncounted,
    the_same_idempotency_key_gets_the_same_place,
    a_network_holds_at_most_its_tickets,
    a_reload_keeps_the_line_and_what_the_admin_set,
    the_backend_names_itself,
    a_heartbeat_keeps_the_place_and_never_claims,
    a_reserved_slot_wakes_its_tickets_stream,
    a_pass_the_store_does_not_know_is_taken_back,
    session_max_ends_a_session_taken_back,
);

/// A store config for the test's own redis-server, its keys under `prefix`.
fn redis_config(server: &RedisServer, prefix: &str) -> RedisConfig {
    redis_config_at(&server.url(), prefix)
}

/// A Redis store's settings for one server at `url`, under `prefix`.
fn redis_config_at(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig {
        deployment: Deployment::Server(url.to_owned()),
        username: None,
        password: None,
        key_prefix: prefix.to_owned(),
        connections: 1,
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        lease: Duration::from_secs(10),
        ca_file: None,
    }
}

/// A room "web" with generous windows; scenarios shorten the ones they test.
fn spec(capacity: u32) -> RoomSpec {
    RoomSpec {
        name: "web".into(),
        settings: Settings {
            capacity,
            state: State::Active,
            admit_rate: 0.0,
        },
        session_ttl: Duration::from_secs(60),
        session_max: None,
        claim_window: Duration::from_secs(30),
        confirm_window: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(30),
        rejoin_grace: Duration::from_secs(300),
        avg_session: Duration::from_secs(60),
        max_queue: 0,
        priority_weight: 3,
        tickets_per_client: 0,
        idempotency_ttl: Duration::from_secs(600),
        poll_interval: Duration::from_secs(2),
    }
}

fn newcomer(lane: Lane) -> Newcomer {
    Newcomer {
        lane,
        ..Newcomer::default()
    }
}

async fn arrive(store: &dyn Store, newcomer: Newcomer) -> Arrival {
    store.arrive("web", &newcomer).await.unwrap()
}

async fn open(backend: Backend, spec: RoomSpec) -> Subject {
    backend.open(&[spec]).await
}

async fn admitted(store: &dyn Store, lane: Lane) -> SessionInfo {
    match arrive(store, newcomer(lane)).await {
        Arrival::Admitted(s) => s,
        other => panic!("expected admission, got {other:?}"),
    }
}

/// A new visitor with a ticket that they have not come back with yet.
async fn arrives_queued(store: &dyn Store, lane: Lane) -> Place {
    match arrive(store, newcomer(lane)).await {
        Arrival::Queued(p) => p,
        other => panic!("expected a place in line, got {other:?}"),
    }
}

/// A new visitor in line who keeps their ticket: it counts from their first poll.
async fn queued(store: &dyn Store, lane: Lane) -> Place {
    let place = arrives_queued(store, lane).await;
    match poll(store, &place.ticket).await {
        Polled::Queued(p) => p,
        other => panic!("expected a place in line, got {other:?}"),
    }
}

async fn poll(store: &dyn Store, ticket: &str) -> Polled {
    store.poll("web", ticket, true).await.unwrap()
}

async fn position(store: &dyn Store, ticket: &str) -> u32 {
    match poll(store, ticket).await {
        Polled::Queued(p) => p.position(),
        other => panic!("expected a place in line, got {other:?}"),
    }
}

/// Polls `ticket` until its turn comes.
async fn until_admitted(store: &dyn Store, ticket: &str) -> SessionInfo {
    eventually(DEADLINE, || async {
        match poll(store, ticket).await {
            Polled::Admitted(s) => Some(s),
            _ => None,
        }
    })
    .await
}

async fn admits_up_to_capacity_then_queues_in_order(backend: Backend) {
    let s = open(backend, spec(2)).await;
    let store = &*s.store;
    admitted(store, Lane::Normal).await;
    admitted(store, Lane::Normal).await;
    let t1 = queued(store, Lane::Normal).await;
    let t2 = queued(store, Lane::Normal).await;
    assert_eq!((t1.position(), t2.position()), (1, 2));
    assert_eq!(t2.queue_length, 2);
    assert_eq!(t2.available, 0);
    let snapshot = store.snapshot("web").await.unwrap();
    assert_eq!((snapshot.sessions, snapshot.queue_length()), (2, 2));
}

async fn a_freed_slot_is_reserved_for_the_head(backend: Backend) {
    let s = open(backend, spec(2)).await;
    let store = &*s.store;
    let a = admitted(store, Lane::Normal).await;
    admitted(store, Lane::Normal).await;
    let joined = Instant::now();
    let t1 = queued(store, Lane::Normal).await;
    let t2 = queued(store, Lane::Normal).await;
    assert!(store.release("web", a.id).await.unwrap().is_some());
    assert!(
        store.release("web", a.id).await.unwrap().is_none(),
        "released once"
    );
    // The slot waits for the head: the second in line polls in vain.
    let Polled::Queued(p2) = poll(store, &t2.ticket).await else {
        panic!("the second in line took the head's slot")
    };
    assert_eq!((p2.position(), p2.available), (2, 0));
    let Polled::Admitted(s1) = poll(store, &t1.ticket).await else {
        panic!("the head was not admitted")
    };
    // Whole milliseconds of the store's clock: at most one more than measured here.
    assert!(u128::from(s1.wait_ms) <= joined.elapsed().as_millis() + 1);
    assert_eq!(store.snapshot("web").await.unwrap().in_use(), 2);
    assert_eq!(position(store, &t2.ticket).await, 1);
    // An admitted ticket is spent.
    assert_eq!(poll(store, &t1.ticket).await, Polled::Expired);
}

async fn a_heartbeat_keeps_the_place_and_never_claims(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    let a = admitted(store, Lane::Normal).await;
    let t1 = queued(store, Lane::Normal).await;
    let Polled::Queued(place) = store.heartbeat("web", &t1.ticket, true).await.unwrap() else {
        panic!("a heartbeat should tell the place")
    };
    assert_eq!(place.position(), 1);
    store.release("web", a.id).await.unwrap();
    // The slot is held for the head; heartbeats say so and leave it held.
    for _ in 0..2 {
        let beat = store.heartbeat("web", &t1.ticket, true).await.unwrap();
        assert!(matches!(beat, Polled::Turn(_)), "{beat:?}");
    }
    assert_eq!(store.snapshot("web").await.unwrap().reserved, 1);
    // The poll claims it.
    assert!(matches!(poll(store, &t1.ticket).await, Polled::Admitted(_)));
    assert_eq!(
        store.heartbeat("web", &t1.ticket, true).await.unwrap(),
        Polled::Expired
    );
}

/// A stream registered for a ticket is woken when a slot is reserved for
/// it, by whichever step reserves (a shared store: through its listener).
async fn a_reserved_slot_wakes_its_tickets_stream(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = Arc::clone(&s.store);
    let listening = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.listen().await }
    });
    let a = admitted(&*store, Lane::Normal).await;
    let t1 = queued(&*store, Lane::Normal).await;
    let t2 = queued(&*store, Lane::Normal).await;
    let (w1, w2) = (
        store.wakeups().watch("web", &t1.ticket),
        store.wakeups().watch("web", &t2.ticket),
    );
    let (mut woken1, mut woken2) = (w1.woken(), w2.woken());
    // Subscribed before the slot frees (a shared store's listener connects).
    if backend != Backend::Memory {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    store.release("web", a.id).await.unwrap();
    tokio::time::timeout(DEADLINE, &mut woken1)
        .await
        .expect("the head's stream was not woken");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut woken2)
            .await
            .is_err(),
        "only the head is woken"
    );
    listening.abort();
}

async fn no_show_loses_the_reservation_then_comes_back_first(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            claim_window: Duration::from_millis(300),
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    let a = admitted(store, Lane::Normal).await;
    let t1 = queued(store, Lane::Normal).await;
    let t2 = queued(store, Lane::Normal).await;
    store.release("web", a.id).await.unwrap();
    // t1 does not come within the claim window: the slot passes to t2.
    let s2 = until_admitted(store, &t2.ticket).await;
    // t1 comes back: first in line again, and in at the next free slot.
    assert_eq!(position(store, &t1.ticket).await, 1);
    store.release("web", s2.id).await.unwrap();
    until_admitted(store, &t1.ticket).await;
}

async fn silent_tickets_stop_counting_and_are_forgotten(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            heartbeat_timeout: Duration::from_millis(300),
            rejoin_grace: Duration::from_millis(1500),
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    admitted(store, Lane::Normal).await;
    let t1 = queued(store, Lane::Normal).await;
    let t2 = queued(store, Lane::Normal).await;
    // t2 keeps polling; t1 is silent: once stale it is ahead of nobody.
    eventually(DEADLINE, || async {
        store.sweep("web").await.unwrap();
        (position(store, &t2.ticket).await == 1).then_some(())
    })
    .await;
    // Back within the grace: its old place, ahead of t2 again.
    assert_eq!(position(store, &t1.ticket).await, 1);
    assert_eq!(position(store, &t2.ticket).await, 2);
    // Silent past the grace: forgotten.
    let forgotten = eventually(DEADLINE, || async {
        poll(store, &t2.ticket).await;
        let swept = store.sweep("web").await.unwrap();
        (!swept.tickets_expired.is_empty()).then_some(swept.tickets_expired.len())
    })
    .await;
    assert_eq!(forgotten, 1);
    assert_eq!(poll(store, &t1.ticket).await, Polled::Expired);
    assert_eq!(position(store, &t2.ticket).await, 1);
}

async fn sessions_slide_and_lapse(backend: Backend) {
    let ttl = Duration::from_secs(1);
    let s = open(
        backend,
        RoomSpec {
            session_ttl: ttl,
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    let a = admitted(store, Lane::Normal).await;
    // Requests keep the session alive well past one ttl.
    let start = Instant::now();
    while start.elapsed() < ttl * 2 {
        assert!(
            store.touch("web", a.id, None).await.unwrap().is_some(),
            "lapsed while active"
        );
        tokio::time::sleep(ttl / 5).await;
    }
    // Silent: the sweeper ends it.
    let expired = eventually(DEADLINE, || async {
        let swept = store.sweep("web").await.unwrap();
        (!swept.sessions_expired.is_empty()).then_some(swept.sessions_expired)
    })
    .await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, a.id);
    assert!(store.touch("web", a.id, None).await.unwrap().is_none());
    assert_eq!(store.snapshot("web").await.unwrap().in_use(), 0);
}

async fn session_max_caps_an_active_session(backend: Backend) {
    let ttl = Duration::from_millis(600);
    let s = open(
        backend,
        RoomSpec {
            session_ttl: ttl,
            session_max: Some(ttl * 3),
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    let a = admitted(store, Lane::Normal).await;
    let start = Instant::now();
    // Touched all along, yet it ends: past session_max (so past several ttls).
    eventually(DEADLINE, || async {
        tokio::time::sleep(ttl / 6).await;
        store
            .touch("web", a.id, None)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        start.elapsed() > ttl,
        "ended by session_max, not by silence"
    );
    assert_eq!(store.snapshot("web").await.unwrap().in_use(), 0);
}

async fn a_lapsed_session_frees_its_slot_for_the_line(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            session_ttl: Duration::from_millis(300),
            confirm_window: Duration::from_millis(300),
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    let inside = admitted(store, Lane::Normal).await;
    store.touch("web", inside.id, None).await.unwrap();
    let t1 = queued(store, Lane::Normal).await;
    eventually(DEADLINE, || async {
        store.sweep("web").await.unwrap();
        matches!(poll(store, &t1.ticket).await, Polled::Admitted(_)).then_some(())
    })
    .await;
}

async fn wait_is_estimated_then_measured(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    let mut inside = admitted(store, Lane::Normal).await;
    let mut tickets = Vec::new();
    for _ in 0..10 {
        tickets.push(queued(store, Lane::Normal).await.ticket);
    }
    // Before any visit ended: the session inside ends avg_session after it
    // began, and each of the nine ahead takes another, each turn claimed
    // about half a poll after its slot frees (nothing measured yet).
    let Polled::Queued(before) = poll(store, &tickets[9]).await else {
        panic!()
    };
    assert!(!before.wait.known);
    assert!(
        (600_000..=610_000).contains(&before.wait.ms),
        "{:?}",
        before.wait
    );
    // Seven admissions from the line, one every ~300 ms: the pace is
    // measured over more than three turnovers of the room's slot.
    for t in tickets.iter().take(7) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.release("web", inside.id).await.unwrap();
        inside = until_admitted(store, t).await;
    }
    let Polled::Queued(after) = poll(store, &tickets[9]).await else {
        panic!()
    };
    assert!(after.wait.known, "{after:?}");
    assert_eq!(after.ahead, 2);
    // Three turns at about three admissions a second.
    assert!((300..=15_000).contains(&after.wait.ms), "{:?}", after.wait);
}

async fn admission_rate_queues_even_with_free_slots(backend: Backend) {
    let s = open(backend, spec(100)).await;
    let store = &*s.store;
    let patch = SettingsPatch {
        admit_rate: Some(1.0),
        ..SettingsPatch::default()
    };
    store.update("web", patch).await.unwrap();
    let mut admitted_now = 0;
    let mut tickets = Vec::new();
    for _ in 0..5 {
        match arrive(store, newcomer(Lane::Normal)).await {
            Arrival::Admitted(_) => admitted_now += 1,
            Arrival::Queued(p) => {
                assert!(p.available > 0, "queued by the rate, not for want of room");
                tickets.push(p.ticket);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(admitted_now, 1, "a second of burst at one a second");
    // The next token goes to the head of the line, not to whoever asks.
    until_admitted(store, &tickets[0]).await;
    assert!(matches!(poll(store, &tickets[1]).await, Polled::Queued(_)));
}

async fn priority_lane_is_served_by_its_weight(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            priority_weight: 2,
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    let mut inside = admitted(store, Lane::Normal).await;
    let n1 = queued(store, Lane::Normal).await;
    let n2 = queued(store, Lane::Normal).await;
    let p1 = queued(store, Lane::Priority).await;
    let p2 = queued(store, Lane::Priority).await;
    let p3 = queued(store, Lane::Priority).await;
    assert_eq!(p1.position(), 1, "priority goes ahead");
    // Two priority admissions per normal one while both lanes wait.
    for next in [&p1, &p2, &n1, &p3, &n2] {
        store.release("web", inside.id).await.unwrap();
        for other in [&p1, &p2, &n1, &p3, &n2] {
            if other.ticket != next.ticket {
                assert!(
                    !matches!(poll(store, &other.ticket).await, Polled::Admitted(_)),
                    "{} admitted before {}",
                    other.ticket,
                    next.ticket
                );
            }
        }
        inside = until_admitted(store, &next.ticket).await;
    }
}

async fn paused_keeps_order_and_maintenance_refuses(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    let state = |state| SettingsPatch {
        state: Some(state),
        ..SettingsPatch::default()
    };
    let paused = store.update("web", state(State::Paused)).await.unwrap();
    assert_eq!(paused.settings.state, State::Paused);
    let t1 = queued(store, Lane::Normal).await;
    let t2 = queued(store, Lane::Normal).await;
    assert!(matches!(poll(store, &t1.ticket).await, Polled::Queued(_)));
    store.update("web", state(State::Active)).await.unwrap();
    assert!(matches!(poll(store, &t1.ticket).await, Polled::Admitted(_)));
    assert_eq!(position(store, &t2.ticket).await, 1);
    store
        .update("web", state(State::Maintenance))
        .await
        .unwrap();
    assert_eq!(
        arrive(store, newcomer(Lane::Normal)).await,
        Arrival::Maintenance
    );
}

async fn a_full_line_refuses_newcomers(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            max_queue: 2,
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    admitted(store, Lane::Normal).await;
    queued(store, Lane::Normal).await;
    queued(store, Lane::Normal).await;
    assert_eq!(arrive(store, newcomer(Lane::Normal)).await, Arrival::Full);
}

async fn leaving_the_line_moves_everyone_up(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    admitted(store, Lane::Normal).await;
    let t1 = queued(store, Lane::Normal).await;
    let t2 = queued(store, Lane::Normal).await;
    assert!(store.leave("web", &t1.ticket).await.unwrap());
    assert!(!store.leave("web", &t1.ticket).await.unwrap(), "left once");
    assert_eq!(poll(store, &t1.ticket).await, Polled::Expired);
    assert_eq!(position(store, &t2.ticket).await, 1);
}

async fn synthetic_visitors_join_the_back(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    admitted(store, Lane::Normal).await;
    let t1 = queued(store, Lane::Normal).await;
    assert_eq!(store.fill("web", Lane::Normal, 5000).await.unwrap(), 5000);
    assert_eq!(position(store, &t1.ticket).await, 1);
    let last = queued(store, Lane::Normal).await;
    assert_eq!(last.position(), 5002);
    assert_eq!(store.snapshot("web").await.unwrap().queue_length(), 5002);
}

async fn unknown_tickets_are_expired(backend: Backend) {
    let mut other = spec(1);
    other.name = "other".into();
    let s = backend.open(&[spec(1), other]).await;
    let store = &*s.store;
    admitted(store, Lane::Normal).await;
    let t = queued(store, Lane::Normal).await;
    // Another room's ticket (another epoch): the memory store never gave it
    // out; a Redis room takes a ticket of an earlier epoch back (its state
    // may have been lost), which is why the gate verifies a ticket's room
    // (`aud`) before the store sees it.
    let foreign = store.poll("other", &t.ticket, true).await.unwrap();
    match backend {
        Backend::Memory => assert_eq!(foreign, Polled::Expired),
        Backend::Redis(_) | Backend::Cluster => {
            assert!(matches!(foreign, Polled::Admitted(_)), "{foreign:?}");
        }
    }
    for garbage in ["", "x", "1.2", "zz.1.0", "0.9.0", "0.1.0.0", "0:0", "\u{0}"] {
        assert_eq!(poll(store, garbage).await, Polled::Expired, "{garbage:?}");
    }
    assert!(
        store.poll("nope", &t.ticket, true).await.is_err(),
        "unknown room"
    );
}

async fn a_ticket_counts_from_its_first_poll_at_its_arrival_place(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    admitted(store, Lane::Normal).await;
    let bot = arrives_queued(store, Lane::Normal).await;
    let slow = arrives_queued(store, Lane::Normal).await;
    let quick = queued(store, Lane::Normal).await;
    // Tickets nobody came back with are ahead of nobody and not in the
    // line's length; while fresh they are told as ahead (in the position as
    // in the wait), being a burst's places whose first poll is to come.
    assert_eq!(quick.ahead, 0);
    assert_eq!((quick.unconfirmed_ahead, quick.position()), (2, 3));
    assert_eq!(quick.queue_length, 1);
    assert_eq!(store.snapshot("web").await.unwrap().queue_length(), 1);
    // Coming back confirms a ticket at the place its arrival gave it (the
    // bot, still fresh, is told ahead of both until it lapses).
    let confirmed = |ticket: String| async move {
        match poll(store, &ticket).await {
            Polled::Queued(p) => (p.ahead, p.position()),
            other => panic!("expected a place in line, got {other:?}"),
        }
    };
    assert_eq!(confirmed(slow.ticket.clone()).await, (0, 2));
    assert_eq!(confirmed(quick.ticket.clone()).await, (1, 3));
    assert_eq!(store.snapshot("web").await.unwrap().queue_length(), 2);
    let _ = bot;
}

async fn unconfirmed_tickets_are_offered_nothing_and_forgotten(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            confirm_window: Duration::from_millis(400),
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    let inside = admitted(store, Lane::Normal).await;
    store.touch("web", inside.id, None).await.unwrap();
    let bots: Vec<Place> =
        futures_util::future::join_all((0..50).map(|_| arrives_queued(store, Lane::Normal))).await;
    let person = queued(store, Lane::Normal).await;
    assert_eq!(person.ahead, 0, "fifty bots ahead of nobody");
    // Told while they are fresh: the wait and the position count them alike.
    assert_eq!(person.position(), 51);
    // The freed slot goes to the person, not to the bots who came first.
    store.release("web", inside.id).await.unwrap();
    until_admitted(store, &person.ticket).await;
    // Never confirmed: forgotten after the confirm window (without a poll,
    // which would confirm them).
    let forgotten = parking_lot::Mutex::new(Vec::new());
    eventually(DEADLINE, || async {
        let swept = store.sweep("web").await.unwrap();
        let mut all = forgotten.lock();
        all.extend(swept.unconfirmed_tickets);
        (all.len() >= 50).then_some(())
    })
    .await;
    // Each named once, by the ticket it was given: the events of its
    // journey can say it was never a visitor.
    let mut named = forgotten.into_inner();
    named.sort();
    let mut given: Vec<String> = bots.iter().map(|b| b.ticket.clone()).collect();
    given.sort();
    assert_eq!(named, given);
    for bot in &bots {
        assert_eq!(poll(store, &bot.ticket).await, Polled::Expired);
    }
}

async fn a_place_let_in_at_once_waits_for_the_visitor_to_come_back(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            confirm_window: Duration::from_millis(400),
            ..spec(2)
        },
    )
    .await;
    let store = &*s.store;
    let keeps = admitted(store, Lane::Normal).await;
    let bot = admitted(store, Lane::Normal).await;
    // The visitor who keeps the pass comes back with it: the place is theirs.
    assert!(store.touch("web", keeps.id, None).await.unwrap().is_some());
    let lapsed = eventually(DEADLINE, || async {
        let swept = store.sweep("web").await.unwrap();
        (!swept.unconfirmed_sessions.is_empty()).then_some(swept)
    })
    .await;
    assert_eq!(lapsed.unconfirmed_sessions, [bot.id]);
    assert!(
        lapsed.sessions_expired.is_empty(),
        "a bot's place is no visit"
    );
    assert!(store.touch("web", bot.id, None).await.unwrap().is_none());
    assert!(store.touch("web", keeps.id, None).await.unwrap().is_some());
    assert_eq!(store.snapshot("web").await.unwrap().sessions, 1);
}

async fn a_flood_of_unconfirmed_tickets_leaves_the_estimate_alone(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    admitted(store, Lane::Normal).await;
    let early = queued(store, Lane::Normal).await;
    for _ in 0..500 {
        arrives_queued(store, Lane::Normal).await;
    }
    let Polled::Queued(after) = poll(store, &early.ticket).await else {
        panic!()
    };
    assert_eq!(after.position(), 1);
    assert_eq!(after.queue_length, 1);
    // Only time has passed for the early one's estimate.
    assert_eq!(after.wait.known, early.wait.known);
    assert!(
        after.wait.ms <= early.wait.ms,
        "{:?} then {:?}",
        early.wait,
        after.wait
    );
    let snapshot = store.snapshot("web").await.unwrap();
    assert_eq!(snapshot.queue_length(), 1);
}

async fn a_poll_that_does_not_confirm_leaves_the_ticket_uncounted(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            confirm_window: Duration::from_millis(400),
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    // Inside for good: it came back with its pass.
    let inside = admitted(store, Lane::Normal).await;
    store.touch("web", inside.id, None).await.unwrap();
    let solver = arrives_queued(store, Lane::Normal).await;
    let idler = arrives_queued(store, Lane::Normal).await;
    assert!(!solver.confirmed && !idler.confirmed);
    // Asked about without confirming (a challenge not solved): told, not counted.
    let Polled::Queued(told) = store.poll("web", &idler.ticket, false).await.unwrap() else {
        panic!("not told its place")
    };
    assert!(!told.confirmed);
    assert_eq!(told.queue_length, 0);
    let Polled::Queued(solved) = store.poll("web", &solver.ticket, true).await.unwrap() else {
        panic!("not confirmed")
    };
    assert!(solved.confirmed);
    assert_eq!((solved.position(), solved.queue_length), (1, 1));
    // The one that never confirmed lapses with the confirm window, polls or not.
    eventually(DEADLINE, || async {
        store.sweep("web").await.unwrap();
        let polled = store.poll("web", &idler.ticket, false).await.unwrap();
        (polled == Polled::Expired).then_some(())
    })
    .await;
    assert_eq!(position(store, &solver.ticket).await, 1);
}

async fn the_same_idempotency_key_gets_the_same_place(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    let keyed = |key: &str| Newcomer {
        key: Some(key.to_owned()),
        ..newcomer(Lane::Normal)
    };
    // Admitted at once: the same key is the same session.
    let Arrival::Admitted(first) = arrive(store, keyed("a")).await else {
        panic!("not admitted")
    };
    let Arrival::AdmittedAgain(again) = arrive(store, keyed("a")).await else {
        panic!("the key made a second session")
    };
    assert_eq!(again.id, first.id);
    assert_eq!(store.snapshot("web").await.unwrap().sessions, 1);
    // In line: the same key is the same ticket, with the same arrival time.
    let Arrival::Queued(place) = arrive(store, keyed("b")).await else {
        panic!("not queued")
    };
    let Arrival::QueuedAgain(same) = arrive(store, keyed("b")).await else {
        panic!("the key made a second ticket")
    };
    assert_eq!((&same.ticket, same.joined), (&place.ticket, place.joined));
    let Arrival::Queued(other) = arrive(store, keyed("c")).await else {
        panic!("not queued")
    };
    assert_ne!(other.ticket, place.ticket);
    // Once the ticket has left the line, the key gets a new place.
    assert!(store.leave("web", &place.ticket).await.unwrap());
    let Arrival::Queued(fresh) = arrive(store, keyed("b")).await else {
        panic!("a spent key was not given a new place")
    };
    assert_ne!(fresh.ticket, place.ticket);
}

async fn a_network_holds_at_most_its_tickets(backend: Backend) {
    let s = open(
        backend,
        RoomSpec {
            tickets_per_client: 2,
            confirm_window: Duration::from_millis(400),
            ..spec(1)
        },
    )
    .await;
    let store = &*s.store;
    // Inside for good: it came back with its pass.
    let inside = admitted(store, Lane::Normal).await;
    store.touch("web", inside.id, None).await.unwrap();
    let from = |net: &str| Newcomer {
        network: Some(net.to_owned()),
        ..newcomer(Lane::Normal)
    };
    let Arrival::Queued(kept) = arrive(store, from("a")).await else {
        panic!("first ticket refused")
    };
    poll(store, &kept.ticket).await;
    let Arrival::Queued(left) = arrive(store, from("a")).await else {
        panic!("second ticket refused")
    };
    assert_eq!(arrive(store, from("a")).await, Arrival::Limited);
    assert!(matches!(arrive(store, from("b")).await, Arrival::Queued(_)));
    // A ticket that leaves gives the network its turn back.
    assert!(store.leave("web", &left.ticket).await.unwrap());
    let Arrival::Queued(_lapses) = arrive(store, from("a")).await else {
        panic!("a freed turn was refused")
    };
    assert_eq!(arrive(store, from("a")).await, Arrival::Limited);
    // So does one that lapses unconfirmed.
    eventually(DEADLINE, || async {
        store.sweep("web").await.unwrap();
        matches!(arrive(store, from("a")).await, Arrival::Queued(_)).then_some(())
    })
    .await;
    assert_eq!(position(store, &kept.ticket).await, 1);
}

/// `configure` (a config reload) followed by `prepare`, as the keeper does.
async fn reload(store: &dyn Store, specs: &[RoomSpec]) {
    store.configure(specs, &[]);
    store.prepare().await.unwrap();
}

async fn a_reload_keeps_the_line_and_what_the_admin_set(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    let session = admitted(store, Lane::Normal).await;
    let t1 = queued(store, Lane::Normal).await;
    let t2 = queued(store, Lane::Normal).await;
    let paused = SettingsPatch {
        state: Some(State::Paused),
        ..SettingsPatch::default()
    };
    store.update("web", paused).await.unwrap();

    // The same room, and a new one: the line, the session and the pause stay.
    let api = RoomSpec {
        name: "api".into(),
        ..spec(1)
    };
    reload(store, &[spec(1), api.clone()]).await;
    assert_eq!(position(store, &t1.ticket).await, 1);
    assert_eq!(position(store, &t2.ticket).await, 2);
    let web = store.snapshot("web").await.unwrap();
    assert_eq!((web.settings.state, web.sessions), (State::Paused, 1));
    assert!(
        store
            .touch("web", session.id, None)
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        store.arrive("api", &newcomer(Lane::Normal)).await.unwrap(),
        Arrival::Admitted(_)
    ));

    // The room's configuration changed: it takes the file's settings, and
    // the line moves into the new capacity in order.
    reload(store, &[spec(3), api]).await;
    let web = store.snapshot("web").await.unwrap();
    assert_eq!(web.settings.state, State::Active);
    assert_eq!(web.settings.capacity, 3);
    until_admitted(store, &t1.ticket).await;
    until_admitted(store, &t2.ticket).await;

    // A room no longer configured is unknown.
    reload(store, &[spec(3)]).await;
    assert!(store.arrive("api", &newcomer(Lane::Normal)).await.is_err());
    assert_eq!(store.snapshot("web").await.unwrap().sessions, 3);
}

async fn the_backend_names_itself(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let expected = match backend {
        Backend::Memory => "memory",
        Backend::Redis(_) | Backend::Cluster => "redis",
    };
    assert_eq!(s.store.backend(), expected);
    s.store.ping().await.unwrap();
}

/// The shared adaptive limit of a requests room: one atomic step per move,
/// once per round trip down, never below the floor nor above the capacity,
/// and a lease is taken only under it when the room asks for it.
#[tokio::test]
async fn a_shared_adaptive_limit_moves_once_per_round_trip_and_caps_leases() {
    use anteroom::store::{Leases, Step};
    let server = RedisServer::start();
    let config = redis_config(&server, "adapt");
    let store = RedisStore::new(
        &config,
        &[],
        &[("llm".to_owned(), 4)],
        Duration::from_millis(50),
    )
    .unwrap();
    store.prepare().await.unwrap();
    let down = |age_ms| Step::Down {
        age: Duration::from_millis(age_ms),
        min: 2,
    };
    assert_eq!(store.adapt("llm", Step::Keep).await.unwrap(), 4);
    assert_eq!(store.adapt("llm", down(0)).await.unwrap(), 3);
    // Sent before that decrease: the same overload, not counted twice.
    assert_eq!(store.adapt("llm", down(60_000)).await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.adapt("llm", down(0)).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.adapt("llm", down(0)).await.unwrap(), 2, "the floor");
    // Allowances under the limit of 2; the capacity of 4 alone allows more.
    let granted = |instance, need, limited| {
        let store = &store;
        async move {
            let ask = ask(instance, need, need, limited);
            store.allow("llm", &ask).await.unwrap().granted
        }
    };
    assert_eq!(granted("a", 2, true).await, 2);
    assert_eq!(granted("c", 1, true).await, 0);
    assert_eq!(granted("c", 1, false).await, 1);
    for _ in 0..5 {
        store.adapt("llm", Step::Up).await.unwrap();
    }
    assert_eq!(
        store.adapt("llm", Step::Keep).await.unwrap(),
        4,
        "the capacity"
    );
}

/// An instance's ask for `need` slots of a requests room, `want` with headroom.
fn ask(instance: &str, need: u32, want: u32, limited: bool) -> anteroom::store::AllowanceAsk<'_> {
    anteroom::store::AllowanceAsk {
        instance,
        need,
        want,
        in_flight: need.saturating_sub(1),
        taking: 0,
        limited,
    }
}

/// Allowances of a requests room: together never past the capacity; an
/// instance short of what it needs makes the others give back; the share of
/// an instance that stops renewing it comes back after one lease.
#[tokio::test]
async fn allowances_share_the_capacity_follow_demand_and_lapse() {
    use anteroom::store::{Allowance, Leases};
    let server = RedisServer::start();
    let config = RedisConfig {
        lease: Duration::from_millis(300),
        ..redis_config(&server, "allow")
    };
    let store = RedisStore::new(
        &config,
        &[],
        &[("llm".to_owned(), 4)],
        Duration::from_millis(50),
    )
    .unwrap();
    store.prepare().await.unwrap();
    let allow = |i, need, want| {
        let store = &store;
        async move {
            store
                .allow("llm", &ask(i, need, want, false))
                .await
                .unwrap()
        }
    };
    let grant = |granted, contended| Allowance { granted, contended };
    assert_eq!(allow("a", 2, 3).await, grant(3, false), "need and headroom");
    assert_eq!(
        allow("b", 2, 3).await,
        grant(1, false),
        "what is left; b is short"
    );
    assert_eq!(
        allow("a", 2, 3).await,
        grant(3, true),
        "a hears that b is short"
    );
    assert_eq!(allow("a", 1, 1).await, grant(1, true), "a gives back");
    assert_eq!(allow("b", 3, 3).await, grant(3, false), "b has its share");
    assert_eq!(
        allow("a", 2, 2).await,
        grant(1, false),
        "never past the capacity"
    );
    assert_eq!(
        store.usage("llm").await.unwrap(),
        (4, 3),
        "in flight, as each told"
    );
    // Only b renews: a's share comes back within a lease.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let granted = allow("b", 4, 4).await.granted;
        if granted == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "a's allowance never lapsed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(allow("b", 0, 0).await, grant(0, false), "all given back");
    assert_eq!(store.usage("llm").await.unwrap(), (4, 0));
}

/// What a verified pass says of its session, valid for a minute more.
fn pass_of(session: &SessionInfo) -> Adopt {
    Adopt {
        admitted_at: session.admitted_at,
        until: now_millis() + 60_000,
    }
}

async fn a_pass_the_store_does_not_know_is_taken_back(backend: Backend) {
    let s = open(backend, spec(1)).await;
    let store = &*s.store;
    let stranger = SessionId::random();
    let admitted_at = now_millis() - 5_000;
    let pass = Adopt {
        admitted_at,
        until: now_millis() + 60_000,
    };
    assert!(
        store.touch("web", stranger, None).await.unwrap().is_none(),
        "nothing to take it back from"
    );
    let expired = Adopt {
        until: now_millis() - 1,
        ..pass
    };
    assert!(
        store
            .touch("web", stranger, Some(expired))
            .await
            .unwrap()
            .is_none()
    );
    let back = store
        .touch("web", stranger, Some(pass))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((back.id, back.admitted_at), (stranger, admitted_at));
    // Its slot is counted: the next newcomer waits.
    assert_eq!(store.snapshot("web").await.unwrap().sessions, 1);
    let waiting = queued(store, Lane::Normal).await;
    assert_eq!(waiting.position(), 1);
    // Touched again, it is the same session, not another one.
    assert!(
        store
            .touch("web", stranger, Some(pass))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.snapshot("web").await.unwrap().sessions, 1);
    // Released, its pass does not bring it back.
    store.release("web", stranger).await.unwrap();
    assert!(
        store
            .touch("web", stranger, Some(pass))
            .await
            .unwrap()
            .is_none()
    );
    let inside = until_admitted(store, &waiting.ticket).await;
    store.release("web", inside.id).await.unwrap();
    assert!(
        store
            .touch("web", inside.id, Some(pass_of(&inside)))
            .await
            .unwrap()
            .is_none()
    );
}

async fn session_max_ends_a_session_taken_back(backend: Backend) {
    let mut room = spec(2);
    room.session_max = Some(Duration::from_secs(10));
    let s = open(backend, room).await;
    let store = &*s.store;
    let old = Adopt {
        admitted_at: now_millis() - 11_000,
        until: now_millis() + 60_000,
    };
    assert!(
        store
            .touch("web", SessionId::random(), Some(old))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.snapshot("web").await.unwrap().sessions, 0);
}

/// The memory store restored from a state file written before some
/// visitors came: their passes are taken back, their tickets rejoin at the
/// place their numbers give, behind the earlier ones and ahead of new ones.
#[tokio::test]
async fn a_restored_memory_store_takes_back_what_came_after_its_state_file() {
    let specs = [spec(1)];
    let before = MemoryStore::new(&specs);
    let early = admitted(&before, Lane::Normal).await;
    let t1 = queued(&before, Lane::Normal).await;
    let saved = before.export(&[]).unwrap();
    let t2 = queued(&before, Lane::Normal).await;
    let t3 = queued(&before, Lane::Normal).await;
    assert_eq!(position(&before, &t3.ticket).await, 3);

    let (after, _) = MemoryStore::restore(&specs, &saved).unwrap();
    assert!(
        after
            .touch("web", early.id, Some(pass_of(&early)))
            .await
            .unwrap()
            .is_some()
    );
    // A pass given after the state file (by the crashed process).
    let late = SessionId::random();
    let pass = Adopt {
        admitted_at: now_millis(),
        until: now_millis() + 60_000,
    };
    assert!(
        after
            .touch("web", late, Some(pass))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(after.snapshot("web").await.unwrap().sessions, 2);
    // t3 comes back before t2 does (behind t1; t2 not back yet counts for
    // nobody, like a silent ticket), and still waits behind t2.
    assert_eq!(position(&after, &t3.ticket).await, 2);
    assert_eq!(position(&after, &t2.ticket).await, 2);
    assert_eq!(position(&after, &t3.ticket).await, 3);
    assert_eq!(position(&after, &t1.ticket).await, 1);
    let newcomer = queued(&after, Lane::Normal).await;
    assert_eq!(newcomer.position(), 4);
    // The places are kept: t1 is let in first once a slot frees.
    after.release("web", early.id).await.unwrap();
    after.release("web", late).await.unwrap();
    until_admitted(&after, &t1.ticket).await;
    assert_eq!(position(&after, &t2.ticket).await, 1);
}

/// Redis killed and restarted empty (as a server without persistence, or
/// a failover to a replica that had not caught up, leaves it): passes are taken back and hold
/// their slots while newcomers wait `rebuild_grace`; tickets rejoin in the
/// order they arrived, ahead of every new one.
#[tokio::test]
async fn redis_that_lost_everything_is_rebuilt_from_the_tokens() {
    let mut server = RedisServer::start();
    let config = redis_config(&server, "rebuild");
    let specs = [spec(2)];
    let store = RedisStore::new(&config, &specs, &[], Duration::from_millis(50))
        .unwrap()
        .with_rebuild_grace(Duration::from_secs(2));
    store.prepare().await.unwrap();
    let a = admitted(&store, Lane::Normal).await;
    let b = admitted(&store, Lane::Normal).await;
    let tickets = [
        queued(&store, Lane::Normal).await,
        queued(&store, Lane::Normal).await,
        queued(&store, Lane::Normal).await,
    ];
    server.restart();
    eventually(DEADLINE, || async { store.ping().await.ok() }).await;

    // The newest ticket is the first back, and still the last of the three.
    let mut ids: Vec<String> = tickets.iter().map(|t| t.ticket.clone()).collect();
    for i in [2, 0, 1] {
        match poll(&store, &ids[i]).await {
            Polled::Queued(p) => ids[i] = p.ticket,
            other => panic!("ticket {i} should rejoin, got {other:?}"),
        }
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(position(&store, id).await as usize, i + 1, "ticket {i}");
    }
    // Nobody is let in while the passes come back, though both slots are free.
    let newcomer = arrives_queued(&store, Lane::Normal).await;
    assert_eq!(store.snapshot("web").await.unwrap().reserved, 0);
    assert!(
        store
            .touch("web", a.id, Some(pass_of(&a)))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .touch("web", b.id, Some(pass_of(&b)))
            .await
            .unwrap()
            .is_some()
    );
    let snap = store.snapshot("web").await.unwrap();
    assert_eq!(
        (snap.sessions, snap.reserved),
        (2, 0),
        "both passes hold their slots"
    );
    assert_eq!(position(&store, &newcomer.ticket).await, 4);
    // A freed slot goes to the first ticket in line once the hold ends
    // (its polls go on until then).
    store.release("web", a.id).await.unwrap();
    until_admitted(&store, &ids[0]).await;
    assert_eq!(position(&store, &ids[1]).await, 1);
}

/// The Redis store on Sentinel follows a failover by itself: steps go to the
/// new primary (where the replica had the line), and a turn published there
/// still wakes a stream here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_and_turns_are_still_heard() {
    let mut set = tokio::task::block_in_place(Sentinels::start);
    let config = RedisConfig {
        deployment: Deployment::Sentinel {
            sentinels: set.urls(),
            master: Sentinels::MASTER.to_owned(),
            username: None,
            password: None,
        },
        ..redis_config(&set.primary, "follow")
    };
    let store: Arc<dyn Store> =
        Arc::new(RedisStore::new(&config, &[spec(1)], &[], Duration::from_millis(50)).unwrap());
    store.prepare().await.unwrap();
    let inside = admitted(&*store, Lane::Normal).await;
    let t = queued(&*store, Lane::Normal).await;
    tokio::task::block_in_place(|| {
        set.replicated();
        set.fail_over();
    });
    let listening = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            loop {
                let _ = store.listen().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let polled = eventually(DEADLINE * 2, || async {
        store.poll("web", &t.ticket, true).await.ok()
    })
    .await;
    assert!(
        matches!(&polled, Polled::Queued(p) if p.position() == 1),
        "{polled:?}"
    );
    let watch = store.wakeups().watch("web", &t.ticket);
    let mut woken = watch.woken();
    // Until the listener has subscribed on the new primary, a turn goes unheard.
    eventually(DEADLINE, || async {
        (set.replica.subscribers("follow:turns") > 0).then_some(())
    })
    .await;
    store.release("web", inside.id).await.unwrap();
    tokio::time::timeout(DEADLINE, &mut woken)
        .await
        .expect("a turn published on the new primary was not heard");
    listening.abort();
}

/// What a failover to a replica that had not caught up does to an arrival
/// (Redis only): the store forgets it, but never gives its number to
/// someone else, so two visitors never hold the same ticket.
#[tokio::test]
async fn an_arrival_the_store_lost_is_never_numbered_again() {
    let server = RedisServer::start();
    let store = RedisStore::new(
        &redis_config(&server, "lost"),
        &[spec(1)],
        &[],
        Duration::from_millis(50),
    )
    .unwrap();
    store.prepare().await.unwrap();
    admitted(&store, Lane::Normal).await;
    let first = queued(&store, Lane::Normal).await;
    // What a lagging replica holds: every key of the room as it is now.
    let mut c = server.connection();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("{lost:web}*")
        .query(&mut c)
        .unwrap();
    let saved: Vec<(String, Vec<u8>)> = keys
        .into_iter()
        .map(|k| {
            let dump: Vec<u8> = ::redis::cmd("DUMP").arg(&k).query(&mut c).unwrap();
            (k, dump)
        })
        .collect();
    let lost = arrives_queued(&store, Lane::Normal).await;
    // The failover: the arrival acknowledged since is gone.
    let _: () = ::redis::cmd("FLUSHALL").query(&mut c).unwrap();
    for (k, dump) in &saved {
        let _: () = ::redis::cmd("RESTORE")
            .arg(k)
            .arg(0)
            .arg(dump)
            .query(&mut c)
            .unwrap();
    }
    // A failover takes seconds (the sentinels' down-after-milliseconds at least).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let next = arrives_queued(&store, Lane::Normal).await;
    assert_ne!(
        next.ticket, lost.ticket,
        "a lost ticket's number given out again"
    );
    assert_eq!(position(&store, &first.ticket).await, 1);
    assert_eq!(position(&store, &next.ticket).await, 2);
    assert_eq!(
        poll(&store, &lost.ticket).await,
        Polled::Expired,
        "a lost ticket numbered before a later arrival is not taken back"
    );
}

/// A cluster that requires a password: the store authenticates to every
/// node it discovers, and to the node it hears reservations on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_password_is_reached_with_it() {
    use anteroom::config::Secret;
    let cluster = tokio::task::block_in_place(|| {
        RedisCluster::start_with_password(3, "cluster-s3cret-for-tests")
    });
    let store_with = |password: Option<&str>| {
        let config = RedisConfig {
            deployment: Deployment::Cluster(cluster.urls()),
            password: password.map(|p| Secret::new(p.to_owned())),
            ..redis_config(&cluster.nodes[0], "acl")
        };
        RedisStore::new(&config, &[spec(1)], &[], Duration::from_millis(50)).unwrap()
    };
    assert!(
        store_with(None).prepare().await.is_err(),
        "a cluster that requires a password let the store in without one"
    );
    let store: Arc<dyn Store> = Arc::new(store_with(Some("cluster-s3cret-for-tests")));
    store.prepare().await.unwrap();
    let listening = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.listen().await }
    });
    let inside = admitted(&*store, Lane::Normal).await;
    let t = queued(&*store, Lane::Normal).await;
    let watch = store.wakeups().watch("web", &t.ticket);
    let mut woken = watch.woken();
    eventually(DEADLINE, || async {
        let subscribed: u64 = cluster
            .nodes
            .iter()
            .map(|n| n.subscribers("acl:turns"))
            .sum();
        (subscribed > 0).then_some(())
    })
    .await;
    store.release("web", inside.id).await.unwrap();
    tokio::time::timeout(DEADLINE, &mut woken)
        .await
        .expect("the turn was not heard on the cluster");
    assert!(matches!(
        poll(&*store, &t.ticket).await,
        Polled::Admitted(_)
    ));
    listening.abort();
}
