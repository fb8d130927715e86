//! The decision path without sockets: what one request costs anteroom.
//!
//! - an admitted visitor's request with a cached pass (gate),
//! - a queued visitor's status poll with 1k, 100k and 1M in line (gate and
//!   the bare room state): the cost must stay flat,
//! - issuing a ticket (one RSA signature), next to a bare RSA signature,
//! - verifying a token, cached and not,
//! - a request slot taken and returned.
//!
//! Run: `cargo bench --bench decision`. Results: docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anteroom::config::Config;
use anteroom::gate::{Decision, Gate, Visitor};
use anteroom::metrics::Metrics;
use anteroom::room::{Kind, Rooms};
use anteroom::slots::Slots;
use anteroom::store::memory::{MemoryStore, RoomState};
use anteroom::store::{Arrival, Lane, Store};
use anteroom::token::{Kind as TokenKind, SigningKey, Tokens};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pingora::http::RequestHeader;

struct Setup {
    gate: Gate,
    rooms: Arc<Rooms>,
    store: Arc<MemoryStore>,
    _dir: tempfile::TempDir,
}

fn setup(capacity: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, _, _) = anteroom::token::keygen(dir.path(), 2048, false).unwrap();
    let text = format!(
        r#"
[tokens]
signing_key = "{}"
[store]
touch_interval = "1h"
[[upstream]]
name = "app"
address = "127.0.0.1:3000"
[[room]]
name = "web"
mode = "sessions"
capacity = {capacity}
[[route]]
upstream = "app"
room = "web"
"#,
        key.display()
    );
    let config = Config::from_toml(&text, Path::new("bench.toml")).unwrap();
    let rooms = Arc::new(Rooms::new(&config.rooms, None).unwrap());
    let metrics = Metrics::register().unwrap();
    let specs: Vec<_> = rooms.iter().filter_map(|r| r.spec()).collect();
    let store = Arc::new(MemoryStore::new(&specs));
    let tokens = Arc::new(Tokens::new(
        "anteroom",
        SigningKey::load(&key).unwrap(),
        Vec::new(),
        1_000_000,
    ));
    let gate = Gate::new(
        tokens,
        store.clone(),
        Arc::new(Vec::new()),
        &config,
        metrics,
        Duration::from_secs(3600),
    );
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
        .build()
        .unwrap()
}

fn admitted_with_cached_pass(c: &mut Criterion) {
    let rt = runtime();
    let s = setup(10);
    let room = s.rooms.by_name("web").unwrap();
    let Kind::Sessions(w) = room.kind() else {
        unreachable!()
    };
    let empty = RequestHeader::build("GET", b"/", None).unwrap();
    let visitor = Visitor {
        req: &empty,
        ip: None,
    };
    let Decision::Admit(visit) = rt.block_on(s.gate.decide(room, w, &visitor)) else {
        panic!("not admitted")
    };
    let req = request("x-anteroom-pass", &visit.pass);
    c.bench_function("gate/admitted_cached_pass", |b| {
        b.to_async(&rt).iter(|| async {
            let visitor = Visitor {
                req: &req,
                ip: None,
            };
            black_box(s.gate.decide(room, w, &visitor).await)
        })
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
                    s.store.arrive("web", Lane::Normal, None).await.unwrap()
                {
                    if i == queued / 2 {
                        middle = Some(place);
                    }
                }
            }
        });
        let place = middle.unwrap();
        let claims = s.gate.tokens.claims(
            TokenKind::Ticket,
            "web",
            place.ticket.clone(),
            Some("normal"),
            Duration::from_secs(1800),
        );
        let req = request("x-anteroom-ticket", &s.gate.tokens.sign(&claims));
        group.bench_with_input(BenchmarkId::new("gate", queued), &queued, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(s.gate.status(room, w, &req).await) })
        });
        group.bench_with_input(BenchmarkId::new("store", queued), &queued, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(s.store.poll("web", &place.ticket).await.unwrap()) })
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
            if let Arrival::Queued(place) = room.arrive(i, Lane::Normal, None) {
                if i == queued / 2 {
                    ticket = place.ticket;
                }
            }
        }
        group.bench_with_input(BenchmarkId::from_parameter(queued), &queued, |b, _| {
            b.iter(|| black_box(room.poll(queued + 1, &ticket)))
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

    let key = ring::signature::RsaKeyPair::from_pkcs8(
        &rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(
            &rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap(),
        )
        .unwrap()
        .to_bytes(),
    )
    .unwrap();
    let rng = ring::rand::SystemRandom::new();
    let message = tokens.sign(&claims);
    let mut signature = vec![0; key.public().modulus_len()];
    c.bench_function("token/raw_rsa2048_sign", |b| {
        b.iter(|| {
            key.sign(
                &ring::signature::RSA_PKCS1_SHA256,
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

fn slots(c: &mut Criterion) {
    let slots = Slots::new(100);
    c.bench_function("slots/acquire_release", |b| {
        b.iter(|| black_box(slots.try_acquire()))
    });
}

criterion_group!(
    benches,
    admitted_with_cached_pass,
    status_poll,
    room_state_poll,
    tokens,
    slots
);
criterion_main!(benches);
