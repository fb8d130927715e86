//! The steady client of `benches/load/events_cost.py --rate`: `RATE`
//! requests a second, for `SECS` seconds, spread over `CONNECTIONS` HTTP/1.1
//! keep-alive connections, each on its own schedule. Unlike wrk, which sends
//! the next request as soon as the last is answered, the load does not
//! follow the server: two servers under the same schedule see the same
//! requests at the same times, so their CPU per request compares the work
//! they do, not how often a slower one leaves its client asleep.
//! Late requests go out at once (the schedule is kept on average). Prints
//! `requests N seconds S`: S well past `SECS` means the server did not keep
//! up and the rate was not held.
//!
//!   paced URL RATE SECS CONNECTIONS [HEADER: VALUE ...]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args[1].clone();
    let rate: f64 = args[2].parse().unwrap();
    let secs: u64 = args[3].parse().unwrap();
    let connections: usize = args[4].parse().unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args[5..] {
        let (name, value) = h.split_once(':').unwrap();
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    let done = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..connections {
        // One client each: one connection each, kept alive.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .default_headers(headers.clone())
            .build()
            .unwrap();
        let (url, done) = (url.clone(), Arc::clone(&done));
        // The connections' schedules are spread across one period.
        let first = start + period.mul_f64(i as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            loop {
                let due = tick.tick().await;
                if due >= end {
                    break;
                }
                if let Ok(response) = client.get(&url).send().await
                    && response.bytes().await.is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "requests {} seconds {:.2}",
        done.load(Ordering::Relaxed),
        (Instant::now() - start).as_secs_f64()
    );
}
