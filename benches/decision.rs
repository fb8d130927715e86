//! The decision path without sockets: what one request costs anteroom.
//!
//! - an admitted visitor's request with a cached pass (gate),
//! - a queued visitor's status poll with 1k, 100k and 1M in line (gate and
//!   the bare room state): the cost must stay flat,
//! - issuing a ticket (one RSA signature), next to a bare RSA signature,
//! - verifying a token, cached and not,
//! - a request slot taken and returned,
//! - a launch's draw of 10,000 to 1,000,000 entrants, and one rank,
//! - the same admitted request and status poll on the Redis store (a
//!   `redis-server` the bench starts on loopback), and how many Redis
//!   commands one status poll costs.
//!
//! Run: `cargo bench --bench decision`. Results: docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anteroom::assets::Assets;
use anteroom::challenge;
use anteroom::clients::ClientLimits;
use anteroom::config::{Config, Deployment, RedisConfig};
use anteroom::gate::{Decision, Gate};
use anteroom::limits::slots::Slots;
use anteroom::metrics::Metrics;
use anteroom::proxy::site::{self, Shared};
use anteroom::request::facts::Facts;
use anteroom::room::{Kind, Rooms};
use anteroom::store::memory::{MemoryStore, RoomState};
use anteroom::store::redis::RedisStore;
use anteroom::store::{Arrival, Lane, Newcomer, RoomSpec, Store};
use anteroom::token::{Kind as TokenKind, SigningKey, Tokens};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pingora::http::RequestHeader;

struct Setup {
    gate: Arc<Gate>,
    rooms: Arc<Rooms>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn setup(capacity: u32) -> Setup {
    setup_on(capacity, None)
}

/// A gate over the memory store, or over Redis at this port.
fn setup_on(capacity: u32, redis: Option<u16>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, _, _) = anteroom::token::keygen(dir.path(), 2048, false).unwrap();
    let text = format!(
        r#"
[tokens]
signing_key = "{}"
cache_size = 1000000
[store]
touch_interval = "1h"
[[upstream]]
name = "app"
address = "127.0.0.1:3000"
[[room]]
name = "web"
mode = "sessions"
capacity = {capacity}
# One ticket polled a million times: the limiter is measured on its own (clients/*).
[room.limits]
polls_per_minute = 0
[[route]]
upstream = "app"
room = "web"
"#,
        key.display()
    );
    let config = Config::from_toml(&text, Path::new("bench.toml")).unwrap();
    let assets = Assets::load(&config).unwrap();
    let metrics = Metrics::new().unwrap();
    let specs = RoomSpec::of_config(&config);
    let store: Arc<dyn Store> = match redis {
        None => Arc::new(MemoryStore::new(&specs)),
        Some(port) => Arc::new(
            RedisStore::new(
                &RedisConfig {
                    deployment: Deployment::Server(format!("redis://127.0.0.1:{port}/0")),
                    username: None,
                    password: None,
                    key_prefix: format!("bench{}", rand::random::<u32>()),
                    connections: 2,
                    timeout: Duration::from_secs(5),
                    connect_timeout: Duration::from_secs(1),
                    lease: Duration::from_secs(10),
                    ca_file: None,
                },
                &specs,
                &[],
                Duration::from_secs(1),
            )
            .unwrap(),
        ),
    };
    // The server's own assembly, without its sockets.
    let registry = metrics.registry();
    let bus = Arc::new(anteroom::events::bus::Bus::default());
    let shared = Shared::register(registry, &config, store.clone(), None, bus).unwrap();
    let site = site::assemble(Arc::new(config), assets, &shared, registry)
        .unwrap()
        .load();
    let rooms = Arc::clone(&site.rooms);
    let gate = site.gate.clone().unwrap();
    Setup {
        gate,
        rooms,
        store,
        _dir: dir,
    }
}

fn request(header: &str, token: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/app/page", None).unwrap();
    req.insert_header("accept", "application/json").unwrap();
    req.insert_header(header.to_owned(), token).unwrap();
    req
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A status poll carrying a ticket with this id in the room "web".
fn ticket_request(s: &Setup, ticket: String) -> RequestHeader {
    let claims = s.gate.tokens.claims(
        TokenKind::Ticket,
        "web",
        ticket,
        Some("normal"),
        Duration::from_secs(1800),
    );
    request("x-anteroom-ticket", &s.gate.tokens.sign(&claims))
}

/// Admits a first visitor to the room "web"; the request carrying their pass.
fn pass_request(rt: &tokio::runtime::Runtime, s: &Setup) -> RequestHeader {
    let empty = RequestHeader::build("GET", b"/", None).unwrap();
    let Decision::Admit(visit) = rt.block_on(decide(s, &facts(&empty))) else {
        panic!("not admitted")
    };
    request("x-anteroom-pass", visit.pass.to_str().unwrap())
}

/// The gate's decision on a request to the room "web".
async fn decide(s: &Setup, facts: &Facts<'_>) -> Decision {
    let room = s.rooms.by_name("web").unwrap();
    let Kind::Sessions(w) = room.kind() else {
        unreachable!()
    };
    s.gate.decide(room, w, facts).await
}

/// The facts of a request, read once as the proxy does before deciding.
fn facts(req: &RequestHeader) -> Facts<'_> {
    Facts::new(&Default::default(), req, None, false).unwrap()
}

fn admitted_with_cached_pass(c: &mut Criterion) {
    let rt = runtime();
    let s = setup(10);
    let req = pass_request(&rt, &s);
    let facts = facts(&req);
    c.bench_function("gate/admitted_cached_pass", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(decide(&s, &facts).await) })
    });
}

fn status_poll(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("status_poll");
    for queued in [1_000u64, 100_000, 1_000_000] {
        let s = setup(1);
        let room = s.rooms.by_name("web").unwrap();
        let Kind::Sessions(w) = room.kind() else {
            unreachable!()
        };
        let mut middle = None;
        rt.block_on(async {
            for i in 0..=queued {
                if let Arrival::Queued(place) =
                    s.store.arrive("web", &Newcomer::default()).await.unwrap()
                {
                    if i == queued / 2 {
                        middle = Some(place);
                    }
                }
            }
        });
        let place = middle.unwrap();
        let req = ticket_request(&s, place.ticket.clone());
        group.bench_with_input(BenchmarkId::new("gate", queued), &queued, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(s.gate.status(room, w, &facts(&req)).await) })
        });
        group.bench_with_input(BenchmarkId::new("store", queued), &queued, |b, _| {
            b.to_async(&rt).iter(|| async {
                black_box(s.store.poll("web", &place.ticket, true).await.unwrap())
            })
        });
    }
    group.finish();
}

fn room_state_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("room_state_poll");
    for queued in [1_000u64, 1_000_000] {
        let s = setup(1);
        let spec = s.rooms.by_name("web").unwrap().spec().unwrap();
        let mut room = RoomState::new(spec, 0);
        let mut ticket = String::new();
        for i in 0..=queued {
            if let Arrival::Queued(place) = room.arrive(i, &Newcomer::default()) {
                if i == queued / 2 {
                    ticket = place.ticket;
                }
            }
        }
        group.bench_with_input(BenchmarkId::from_parameter(queued), &queued, |b, _| {
            b.iter(|| black_box(room.poll(queued + 1, &ticket, true, true)))
        });
    }
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let s = setup(1);
    let tokens = &s.gate.tokens;
    let claims = tokens.claims(
        TokenKind::Ticket,
        "web",
        "ab12cd.1.1f".into(),
        Some("normal"),
        Duration::from_secs(1800),
    );
    c.bench_function("token/issue_ticket", |b| {
        b.iter(|| black_box(tokens.sign(&claims)))
    });

    let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(
        &rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(
            &rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap(),
        )
        .unwrap()
        .to_bytes(),
    )
    .unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let message = tokens.sign(&claims);
    let mut signature = vec![0; key.public_modulus_len()];
    c.bench_function("token/raw_rsa2048_sign", |b| {
        b.iter(|| {
            key.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &rng,
                message.as_bytes(),
                &mut signature,
            )
            .unwrap();
            black_box(&signature);
        })
    });

    let token = tokens.sign(&claims);
    tokens.verify(&token, TokenKind::Ticket, "web");
    c.bench_function("token/verify_cached", |b| {
        b.iter(|| black_box(tokens.verify(&token, TokenKind::Ticket, "web")))
    });
    // A cache of 16 cycled through 256 tokens: (nearly) every verify is an RSA verify.
    let small = Tokens::new(
        "anteroom",
        SigningKey::generate(2048).unwrap().0,
        Vec::new(),
        16,
    );
    let many: Vec<String> = (0..256)
        .map(|i| {
            let c = small.claims(
                TokenKind::Ticket,
                "web",
                format!("ab12cd.1.{i:x}"),
                Some("normal"),
                Duration::from_secs(1800),
            );
            small.sign(&c)
        })
        .collect();
    let mut next = 0;
    c.bench_function("token/verify_uncached", |b| {
        b.iter(|| {
            next = (next + 1) % many.len();
            black_box(small.verify(&many[next], TokenKind::Ticket, "web"))
        })
    });
}

/// Reading a request's facts: its canonical path and host, the client.
fn request_facts(c: &mut Criterion) {
    let server = Default::default();
    for (name, target) in [
        ("plain", &b"/app/page/42?utm_source=meta"[..]),
        ("rewritten", b"/app//./x/../page/%34%32?utm_source=meta"),
    ] {
        let mut req = RequestHeader::build("GET", target, None).unwrap();
        req.insert_header("host", "shop.example.com").unwrap();
        req.insert_header("accept", "text/html").unwrap();
        c.bench_function(&format!("facts/{name}"), |b| {
            b.iter(|| black_box(Facts::new(&server, &req, None, false).unwrap().rewritten))
        });
    }
}

fn slots(c: &mut Criterion) {
    let slots = Slots::new(100);
    c.bench_function("slots/acquire_release", |b| {
        b.iter(|| black_box(slots.try_acquire()))
    });
    // A `rate` room's reservation (a lock and a comparison); far enough
    // apart in time that every one goes at once.
    let pace = <anteroom::limits::pace::Pace as anteroom::limits::pace::Local>::new(
        anteroom::config::Rate::parse("1000000/s").unwrap(),
    );
    let mut t = tokio::time::Instant::now();
    c.bench_function("slots/rate_reserve", |b| {
        b.iter(|| {
            t += Duration::from_millis(1);
            black_box(pace.reserve(t, Duration::ZERO))
        })
    });
    // A waiter through the line: in one line (`fair_by = "none"`), and in
    // turn among 100 clients with someone waiting (`fair_by = "client"`).
    let mut fifo = anteroom::limits::fair::FairLine::default();
    for _ in 0..100 {
        fifo.push(anteroom::limits::fair::Turn::ANYONE, ());
    }
    c.bench_function("slots/line_fifo_push_pop", |b| {
        b.iter(|| {
            fifo.push(anteroom::limits::fair::Turn::ANYONE, ());
            black_box(fifo.pop())
        })
    });
    let mut fair = anteroom::limits::fair::FairLine::default();
    for key in 0..100 {
        fair.push(anteroom::limits::fair::Turn { key, weight: 1 }, ());
    }
    let mut key = 0;
    c.bench_function("slots/line_fair_push_pop_100_clients", |b| {
        b.iter(|| {
            key = (key + 1) % 100;
            fair.push(anteroom::limits::fair::Turn { key, weight: 1 }, ());
            black_box(fair.pop())
        })
    });
    // An upstream's healthy answer to an adaptive room.
    let adaptive = anteroom::limits::adaptive::Adaptive::new(1, 100);
    c.bench_function("slots/adaptive_healthy", |b| {
        b.iter(|| black_box(adaptive.healthy(black_box(60))))
    });
}

/// A redis-server of the bench's own, killed at the end.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Redis(child, port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn command(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.1.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_redis(c: &mut Criterion) {
    let Some(redis) = Redis::start() else {
        eprintln!(
            "redis-server not found: skipping the Redis benchmarks (./scripts/setup installs it)"
        );
        return;
    };
    let rt = runtime();
    let mut group = c.benchmark_group("redis");
    let s = setup_on(10, Some(redis.1));
    rt.block_on(s.store.prepare()).unwrap();
    let req = pass_request(&rt, &s);
    let pass = facts(&req);
    group.bench_function("gate/admitted_cached_pass", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(decide(&s, &pass).await) })
    });
    for queued in [1_000u64, 100_000] {
        let s = setup_on(1, Some(redis.1));
        let room = s.rooms.by_name("web").unwrap();
        let Kind::Sessions(w) = room.kind() else {
            unreachable!()
        };
        let mut middle = None;
        let used = |redis: &Redis| -> u64 {
            redis
                .command(&["INFO", "memory"])
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
                .unwrap_or(0)
        };
        let before = used(&redis);
        rt.block_on(async {
            s.store.prepare().await.unwrap();
            for i in 0..=queued {
                if let Arrival::Queued(place) =
                    s.store.arrive("web", &Newcomer::default()).await.unwrap()
                {
                    if i == queued / 2 {
                        middle = Some(place);
                    }
                }
            }
        });
        eprintln!(
            "redis/memory: {} bytes per queued visitor ({queued} queued)",
            used(&redis).saturating_sub(before) / queued
        );
        let req = ticket_request(&s, middle.unwrap().ticket);
        group.bench_with_input(
            BenchmarkId::new("status_poll/gate", queued),
            &queued,
            |b, _| {
                b.to_async(&rt)
                    .iter(|| async { black_box(s.gate.status(room, w, &facts(&req)).await) })
            },
        );
        if queued == 1_000 {
            redis.command(&["CONFIG", "RESETSTAT"]);
            rt.block_on(async {
                for _ in 0..1000 {
                    s.gate.status(room, w, &facts(&req)).await;
                }
            });
            let stats = redis.command(&["INFO", "commandstats"]);
            let calls = |filter: &dyn Fn(&str) -> bool| -> u64 {
                stats
                    .lines()
                    .filter(|l| l.starts_with("cmdstat_") && filter(l))
                    .filter_map(|l| {
                        l.split("calls=")
                            .nth(1)?
                            .split(',')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .sum()
            };
            // Round trips are the commands a client sends (EVALSHA); the rest run inside the scripts.
            let round_trips =
                calls(&|l| l.starts_with("cmdstat_evalsha") || l.starts_with("cmdstat_eval:"));
            let inside = calls(&|l| {
                !l.starts_with("cmdstat_eval")
                    && !l.starts_with("cmdstat_config")
                    && !l.starts_with("cmdstat_info")
            });
            eprintln!(
                "redis/status_poll: {} round trips and {} Redis commands per poll (1000 polls)",
                round_trips as f64 / 1000.0,
                inside as f64 / 1000.0
            );
        }
    }
    group.finish();
}

/// What the flood defences cost per request: a new visitor at a full room
/// (a fresh ticket), the per-client limiters, a proof-of-work check.
fn floods(c: &mut Criterion) {
    let rt = runtime();
    let s = setup(1);
    let empty = RequestHeader::build("GET", b"/", None).unwrap();
    let first = facts(&empty);
    rt.block_on(decide(&s, &first));
    c.bench_function("gate/arrival_at_full_room", |b| {
        b.to_async(&rt).iter(|| async {
            let Decision::Wait(w) = decide(&s, &first).await else {
                unreachable!()
            };
            black_box(w)
        })
    });
    let limits = anteroom::config::Limits {
        tickets_per_client: 0,
        arrivals_per_minute: 10_000_000,
        polls_per_minute: 10_000_000,
        streams_per_ticket: 2,
        streams_per_client: 100,
        unknown_clients: anteroom::config::UnknownClients::Share,
        prefix_v4: 32,
        prefix_v6: 64,
    };
    let clients = ClientLimits::new(limits);
    let tickets: Vec<String> = (0..100_000).map(|i| format!("ab12cd.1.{i:x}")).collect();
    let mut i = 0;
    c.bench_function("clients/poll_limit", |b| {
        b.iter(|| {
            i = (i + 1) % tickets.len();
            black_box(clients.poll(&tickets[i]).is_ok())
        })
    });
    let networks: Vec<_> = (0..100_000u32)
        .map(|i| anteroom::clients::network(std::net::Ipv4Addr::from(i).into(), &limits))
        .collect();
    c.bench_function("clients/arrival_limit", |b| {
        b.iter(|| {
            i = (i + 1) % networks.len();
            black_box(clients.arrival(Some(&networks[i])).is_ok())
        })
    });
    let seed = challenge::seed(&s.gate.tokens, "web", "ab12cd.1.1f");
    let nonce = challenge::solve(&seed, 16);
    c.bench_function("challenge/verify", |b| {
        b.iter(|| {
            let seed = challenge::seed(&s.gate.tokens, "web", black_box("ab12cd.1.1f"));
            black_box(challenge::solves(&seed, &nonce, 16))
        })
    });
}

/// What a state snapshot (`[store] state_dir`) costs with a million in line:
/// the copy made under the room's lock (what requests to the room may wait
/// for), and the encoding done after it, off the lock.
fn state_snapshot(c: &mut Criterion) {
    let rt = runtime();
    let s = setup(1);
    let spec = s.rooms.by_name("web").unwrap().spec().unwrap();
    let store = MemoryStore::new(std::slice::from_ref(&spec));
    rt.block_on(store.fill("web", Lane::Normal, 1_000_000))
        .unwrap();
    let mut group = c.benchmark_group("state_snapshot/1000000");
    group.sample_size(10);
    group.bench_function("copy_under_lock", |b| {
        b.iter(|| black_box(store.copy_rooms()))
    });
    group.bench_function("encode", |b| b.iter(|| black_box(store.export(&[]))));
    group.finish();
}

/// A launch's draw, computed whole: every entrant's rank, then the sort
/// (`draw::order`), for 10,000, 100,000 and 1,000,000 entrants; and one
/// rank alone, what a store computes per entrant when it ranks in batches.
fn draw(c: &mut Criterion) {
    use anteroom::draw;
    let key = draw::key(&[9; 32], b"public");
    let mut group = c.benchmark_group("draw");
    group.sample_size(10);
    for n in [10_000usize, 100_000, 1_000_000] {
        let entrants: Vec<draw::Digest> = (0..n)
            .map(|i| draw::entrant("spring-drop", &format!("ticket-{i}")))
            .collect();
        group.bench_with_input(BenchmarkId::new("order", n), &entrants, |b, e| {
            b.iter(|| black_box(draw::order(&key, e)))
        });
    }
    let one = draw::entrant("spring-drop", "ticket-1");
    group.bench_function("rank", |b| b.iter(|| black_box(draw::rank(&key, &one))));
    group.finish();
}

criterion_group!(
    benches,
    draw,
    floods,
    state_snapshot,
    admitted_with_cached_pass,
    status_poll,
    room_state_poll,
    tokens,
    request_facts,
    slots,
    on_redis
);
criterion_main!(benches);
