//! A stand-in for an LLM API with the limits real ones have: requests in
//! flight, requests and tokens per window (a minute for Gemini), each
//! answered `429 RESOURCE_EXHAUSTED` with a retry hint when exceeded, and
//! answers streamed as server-sent events that report their usage.
//!
//! The demo serves it at `/api/llm`, so a newcomer sees anteroom turn its
//! 429s into orderly waiting; the tests put anteroom in front of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// An LLM API's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests in flight.
    pub concurrency: u32,
    /// Requests per window.
    pub requests: u32,
    /// Tokens per window (charged when an answer ends).
    pub tokens: u64,
    /// The window: a minute for Gemini; shorter in tests.
    pub window: Duration,
}

/// The fake API: its limits and what it served.
#[derive(Debug)]
pub struct FakeLlm {
    quota: Mutex<Quota>,
    window: Mutex<Window>,
    in_flight: AtomicU32,
    refused: AtomicU64,
    /// Answers completed, by the `x-client` header of their request.
    completed: Mutex<HashMap<String, u64>>,
    /// When each call started and ended (`None`: still under way).
    calls: Mutex<Vec<(Instant, Option<Instant>)>>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    requests: u32,
    tokens: u64,
}

/// A refused call: the `429` and its hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When the call may be made again: the next window for a quota; no
    /// hint for too many in flight (nobody knows when one ends).
    pub retry: Option<Duration>,
    /// Which limit it hit: `"concurrency"`, `"requests"` or `"tokens"`.
    pub limit: &'static str,
}

impl Refusal {
    /// Gemini's error body, with the hint in its `RetryInfo` detail.
    pub fn body(&self) -> String {
        let details = self.retry.map_or_else(String::new, |retry| {
            format!(
                r#","details":[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{:.3}s"}}]"#,
                retry.as_secs_f64()
            )
        });
        format!(
            r#"{{"error":{{"code":429,"message":"Resource has been exhausted ({} limit).","status":"RESOURCE_EXHAUSTED"{details}}}}}"#,
            self.limit
        )
    }

    /// The hint in milliseconds, for `retry-after-ms`.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry
            .map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX))
    }
}

impl FakeLlm {
    /// An API with these limits, its first window starting now.
    pub fn new(quota: Quota) -> Arc<FakeLlm> {
        Arc::new(FakeLlm {
            quota: Mutex::new(quota),
            window: Mutex::new(Window {
                start: Instant::now(),
                requests: 0,
                tokens: 0,
            }),
            in_flight: AtomicU32::new(0),
            refused: AtomicU64::new(0),
            completed: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// Changes the limits (a shared quota taken by someone else).
    pub fn set_quota(&self, quota: Quota) {
        *self.quota.lock() = quota;
    }

    /// A call starting now, or why not.
    pub fn call(self: &Arc<Self>) -> Result<Call, Refusal> {
        let quota = *self.quota.lock();
        let now = Instant::now();
        let mut w = self.window.lock();
        if now >= w.start + quota.window {
            // Fixed windows, as providers count them.
            let elapsed = now.duration_since(w.start).as_nanos();
            let window = quota.window.as_nanos().max(1);
            let skipped = u32::try_from(elapsed / window).unwrap_or(u32::MAX);
            w.start += quota.window * skipped;
            w.requests = 0;
            w.tokens = 0;
        }
        let next_window = (w.start + quota.window).saturating_duration_since(now);
        let refusal = if w.requests >= quota.requests {
            Some(Refusal {
                retry: Some(next_window),
                limit: "requests",
            })
        } else if w.tokens >= quota.tokens {
            Some(Refusal {
                retry: Some(next_window),
                limit: "tokens",
            })
        } else if self.in_flight.load(Ordering::SeqCst) >= quota.concurrency {
            Some(Refusal {
                retry: None,
                limit: "concurrency",
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(refusal);
        }
        w.requests += 1;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut calls = self.calls.lock();
        calls.push((now, None));
        Ok(Call {
            llm: Arc::clone(self),
            index: calls.len() - 1,
        })
    }

    /// Calls started between `from` and `to`.
    pub fn started_between(&self, from: Instant, to: Instant) -> usize {
        let calls = self.calls.lock();
        calls
            .iter()
            .filter(|(start, _)| (from..to).contains(start))
            .count()
    }

    /// Share of `concurrency` places that calls used between `from` and
    /// `to` (1.0: always that many in flight).
    pub fn utilisation(&self, from: Instant, to: Instant, concurrency: u32) -> f64 {
        let calls = self.calls.lock();
        let used: Duration = calls
            .iter()
            .map(|(start, end)| {
                let (start, end) = ((*start).max(from), end.unwrap_or(to).min(to));
                end.saturating_duration_since(start)
            })
            .sum();
        used.as_secs_f64() / (to - from).as_secs_f64() / f64::from(concurrency.max(1))
    }

    /// Calls refused with a `429` so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Answers completed, by client.
    pub fn completed(&self) -> HashMap<String, u64> {
        self.completed.lock().clone()
    }

    /// Answers completed in all.
    pub fn completed_total(&self) -> u64 {
        self.completed.lock().values().sum()
    }
}

/// A call under way; it stops counting as in flight when dropped.
#[derive(Debug)]
pub struct Call {
    llm: Arc<FakeLlm>,
    index: usize,
}

impl Call {
    /// The answer ended, having used `tokens`, for `client`.
    pub fn done(self, tokens: u64, client: &str) {
        self.llm.window.lock().tokens += tokens;
        *self
            .llm
            .completed
            .lock()
            .entry(client.to_owned())
            .or_default() += 1;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.llm.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(call) = self.llm.calls.lock().get_mut(self.index) {
            call.1 = Some(Instant::now());
        }
    }
}

/// The server-sent events of an answer of `tokens` tokens in `chunks`
/// events, Gemini's streaming format: each event's `usageMetadata` grows to
/// the total.
pub fn events(tokens: u64, chunks: u64) -> Vec<String> {
    let chunks = chunks.max(1);
    (1..=chunks)
        .map(|i| {
            format!(
                "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"word {i} \"}}],\"role\":\"model\"}}}}],\"usageMetadata\":{{\"promptTokenCount\":1,\"totalTokenCount\":{}}}}}\n\n",
                tokens * i / chunks
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(concurrency: u32, requests: u32, tokens: u64) -> Quota {
        Quota {
            concurrency,
            requests,
            tokens,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn each_limit_refuses_with_its_hint() {
        let llm = FakeLlm::new(quota(1, 2, 1000));
        let first = llm.call().unwrap();
        let busy = llm.call().unwrap_err();
        assert_eq!((busy.limit, busy.retry), ("concurrency", None));
        assert!(!busy.body().contains("retryDelay"));
        first.done(600, "a");
        llm.call().unwrap().done(600, "a");
        let over = llm.call().unwrap_err();
        assert_eq!(over.limit, "requests");
        assert!(over.retry > Some(Duration::from_secs(59)));
        // The hint anteroom reads from a Gemini body.
        let mut hint = crate::limits::adaptive::BodyHint::default();
        hint.feed(over.body().as_bytes());
        assert!(
            hint.delay() > Some(Duration::from_secs(59)),
            "{}",
            over.body()
        );
        assert_eq!(llm.refused(), 2);
        assert_eq!(llm.completed()["a"], 2);

        let tokens = FakeLlm::new(quota(5, 10, 100));
        tokens.call().unwrap().done(150, "b");
        assert_eq!(tokens.call().unwrap_err().limit, "tokens");
    }

    #[test]
    fn events_report_growing_usage() {
        let e = events(90, 3);
        assert_eq!(e.len(), 3);
        assert!(e[0].contains("\"totalTokenCount\":30"));
        assert!(e[2].contains("\"totalTokenCount\":90"));
    }
}
