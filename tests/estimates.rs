//! How honest the wait a visitor is told is: a burst replayed against a real
//! room on each store (forty arrive at once at a room of four whose visitors
//! stay about a second each), every estimate told (on arrival and on each
//! poll) compared with the wait that followed. Asserted at the median and
//! the 90th percentile of the relative error, at arrival and over all polls;
//! reported by place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::redis::RedisServer;
use crate::common::{Store, TestProxy, TestUpstream, Visitor, waiting_room_config};

/// One estimate: when it was told, what it said, the visitor's place then.
#[derive(Clone, Copy)]
struct Told {
    at: Instant,
    ms: u64,
    position: u64,
}

/// Relative error of each estimate against the wait that followed it.
fn errors(told: &[Told], admitted: Instant) -> Vec<(u64, f64)> {
    told.iter()
        .filter_map(|t| {
            let real = admitted.duration_since(t.at).as_secs_f64() * 1000.0;
            // Estimates told less than a visit (2 s) before the turn.
            (real >= 2000.0).then(|| (t.position, (t.ms as f64 - real).abs() / real))
        })
        .collect()
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or(f64::NAN)
}

/// A visitor of the burst: arrives, polls every 200 ms while in line,
/// stays `stay` once in, then leaves. Returns what it was told and when it
/// got in (`None` for those let in at once).
async fn visit(proxy: Arc<TestProxy>, stay: Duration) -> Option<(Vec<Told>, Instant)> {
    let mut v: Visitor = proxy.visitor();
    let (status, body) = v.get("/echo").await;
    if status == 200 {
        tokio::time::sleep(stay).await;
        v.leave().await;
        return None;
    }
    let told_now = |body: &serde_json::Value| {
        Some(Told {
            at: Instant::now(),
            ms: body["waitMs"].as_u64()?,
            position: body["position"].as_u64()?,
        })
    };
    let mut told: Vec<Told> = told_now(&body).into_iter().collect();
    let admitted = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = v.poll().await;
        match status["state"].as_str() {
            Some("admitted") => break Instant::now(),
            Some("queued") => told.extend(told_now(&status)),
            other => panic!("a waiting visitor was {other:?}: {status}"),
        }
    };
    tokio::time::sleep(stay).await;
    v.leave().await;
    Some((told, admitted))
}

/// The relative errors' median and 90th percentile, as a line of the report.
fn summary(name: &str, errors: &[f64]) -> (f64, f64, String) {
    let (median, p90) = (
        percentile(errors.to_vec(), 0.5),
        percentile(errors.to_vec(), 0.9),
    );
    let line = format!(
        "{name}: median {:.0}%, p90 {:.0}% ({} estimates)",
        100.0 * median,
        100.0 * p90,
        errors.len()
    );
    (median, p90, line)
}

/// Forty visitors arrive at once at a room of four whose visits last 1.2 to
/// 2.8 s, twice; each waiting one polls every 200 ms. Every estimate told (at
/// arrival and at each poll, at least one visit before the turn: closer to
/// it an estimate is about when one visit ends, not about the line) is
/// compared with the wait that followed, by place.
async fn a_burst_is_told_honest_waits(backend: Store) {
    // One burst at a time: the two stores' bursts (eighty visitors polling
    // every 200 ms) would otherwise slow each other's answers on two cores.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _alone = ONE_AT_A_TIME.lock().await;
    let upstream = TestUpstream::start().await;
    let proxy = Arc::new(
        TestProxy::start(&waiting_room_config(
            &upstream,
            backend,
            "capacity = 4\navg_session = \"2s\"\npoll_interval = \"200ms\"\nclaim_window = \"4s\"\nheartbeat_timeout = \"6s\"",
            "",
        ))
        .await,
    );
    // The stays (1.2 to 2.8 s) are drawn from a fixed seed: every run
    // replays the same bursts, so only the proxy's answers vary.
    let mut stays = StdRng::seed_from_u64(7);
    // Two bursts, the second once the first has gone in: a room that has
    // seen visits, and one that has not.
    let results = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..2 {
        let burst = Arc::new(Mutex::new(Vec::new()));
        join_all((0..40).map(|_| {
            let (proxy, burst) = (Arc::clone(&proxy), Arc::clone(&burst));
            let stay = Duration::from_millis(stays.gen_range(1200..2800));
            async move {
                if let Some(r) = visit(proxy, stay).await {
                    burst.lock().push(r);
                }
            }
        }))
        .await;
        let mut burst = burst.lock().clone();
        // Each visitor's place in the burst: the order they got in.
        burst.sort_by_key(|(_, admitted)| *admitted);
        for (place, (told, _)) in burst.iter_mut().enumerate() {
            for t in told.iter_mut() {
                t.position = place as u64 + 1;
            }
        }
        results.lock().extend(burst);
    }
    let results = results.lock().clone();
    let at_arrival: Vec<(u64, f64)> = results
        .iter()
        .flat_map(|(told, admitted)| errors(&told[..1.min(told.len())], *admitted))
        .collect();
    let all: Vec<(u64, f64)> = results
        .iter()
        .flat_map(|(told, admitted)| errors(told, *admitted))
        .collect();
    let only = |v: &[(u64, f64)], places: std::ops::RangeInclusive<u64>| {
        v.iter()
            .filter(|(p, _)| places.contains(p))
            .map(|(_, e)| *e)
            .collect::<Vec<_>>()
    };
    let (arrival_median, arrival_p90, arrival) = summary("at arrival", &only(&at_arrival, 1..=40));
    let (all_median, all_p90, polls) = summary("all", &only(&all, 1..=40));
    let report = [
        arrival,
        summary("at arrival, places 1-4 in line", &only(&at_arrival, 1..=4)).2,
        summary("at arrival, places 5-16", &only(&at_arrival, 5..=16)).2,
        summary("at arrival, places 17-36", &only(&at_arrival, 17..=36)).2,
        polls,
        summary("all, places 1-4", &only(&all, 1..=4)).2,
        summary("all, places 5-16", &only(&all, 5..=16)).2,
        summary("all, places 17-36", &only(&all, 17..=36)).2,
    ]
    .join("; ");
    eprintln!("{report}");
    assert!(at_arrival.len() >= 50, "{report}");
    // Every estimate told, at arrival and at each poll: within 15% at the
    // median, 30% at the 90th percentile. Those told at arrival alone (the
    // fewest, and the second burst's first places depend on visits of a
    // burst that has just ended) are held within 20% and 35%.
    assert!(all_median <= 0.15 && all_p90 <= 0.30, "{report}");
    assert!(arrival_median <= 0.20 && arrival_p90 <= 0.35, "{report}");
}

#[tokio::test]
async fn a_burst_is_told_honest_waits_on_the_memory_store() {
    a_burst_is_told_honest_waits(Store::Memory).await;
}

#[tokio::test]
async fn a_burst_is_told_honest_waits_on_redis() {
    let redis = RedisServer::start();
    a_burst_is_told_honest_waits(Store::Redis(redis.port)).await;
}
