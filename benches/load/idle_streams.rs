//! The client of `benches/load/events.py`: lines up `count` visitors at a
//! full room (each an API client that keeps its ticket), then opens one event
//! stream per ticket over `connections` HTTP/2 (h2c) connections and keeps
//! them all open and idle for `hold` seconds. Prints `arrived N` (then
//! waits for a line on stdin), `open N`
//! once every stream has told its first place, and `still open N` at the end.
//!
//!   idle-streams BASE COUNT CONNECTIONS HOLD_SECS
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;

fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .tls_certs_only([])
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args[1].clone();
    let count: usize = args[2].parse().unwrap();
    let connections: usize = args[3].parse().unwrap();
    let hold: u64 = args[4].parse().unwrap();

    // Arrivals, 256 at a time over 16 connections.
    let arrivals: Vec<reqwest::Client> = (0..16).map(|_| h2c()).collect();
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let client = arrivals[i % arrivals.len()].clone();
        let url = format!("{base}/");
        let permit = Arc::clone(&gate).acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let body: serde_json::Value = client
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            drop(permit);
            body["ticket"].as_str().map(str::to_owned)
        }));
    }
    let mut tickets = Vec::with_capacity(count);
    for task in tasks {
        if let Some(ticket) = task.await.unwrap() {
            tickets.push(ticket);
        }
    }
    drop(arrivals);
    println!("arrived {}", tickets.len());
    // The caller measures the line alone, then says go (a line on stdin).
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);

    // One stream per ticket, `count / connections` per connection.
    let clients: Vec<reqwest::Client> = (0..connections).map(|_| h2c()).collect();
    let (open, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let opening = Arc::new(Semaphore::new(512));
    for (i, ticket) in tickets.into_iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        let url = format!("{base}/__anteroom/events?room=web");
        let (open, ended) = (Arc::clone(&open), Arc::clone(&ended));
        let permit = Arc::clone(&opening).acquire_owned().await.unwrap();
        tokio::spawn(async move {
            let Ok(resp) = client
                .get(url)
                .header("x-anteroom-ticket", ticket)
                .send()
                .await
            else {
                ended.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut body = resp.bytes_stream();
            let mut seen = String::new();
            // Open once the first place is told.
            while !seen.contains("\"state\":\"queued\"") {
                match body.next().await {
                    Some(Ok(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => {
                        ended.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            drop(permit);
            open.fetch_add(1, Ordering::Relaxed);
            while let Some(Ok(_)) = body.next().await {}
            ended.fetch_add(1, Ordering::Relaxed);
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while open.load(Ordering::Relaxed) + ended.load(Ordering::Relaxed) < count
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("open {}", open.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(hold)).await;
    println!(
        "still open {}",
        open.load(Ordering::Relaxed)
            - ended
                .load(Ordering::Relaxed)
                .min(open.load(Ordering::Relaxed))
    );
}
