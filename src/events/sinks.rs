//! The event sinks and their delivery, off the request path: each sink has
//! a task that takes batches from its buffer (`bus`), delivers them with
//! retries (exponential backoff with jitter, up to `max_attempts`), and
//! writes what it could not deliver to the sink's dead-letter file, which
//! `anteroom events replay` sends again later. At shutdown the buffer is
//! delivered once more, and what is left goes to the dead letters.

use async_nats::jetstream::context::GetStreamByNameErrorKind;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;
use tokio::sync::Mutex;

use crate::config::{Events, SinkKind};
use crate::events::bus::{Outbox, Sink, SinkError};
use crate::events::event::Batch;
use crate::store::now_millis;

/// The sink a config names.
pub fn open(kind: &SinkKind, timeout: Duration) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match kind {
        // Its directory is made here, at start (or replay), like state_dir.
        SinkKind::File { path, max_bytes } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| SinkError(format!("{}: {e}", dir.display())))?;
            }
            Box::new(FileSink {
                path: path.clone(),
                max_bytes: *max_bytes,
                file: parking_lot::Mutex::new(None),
            })
        }
        SinkKind::Redis {
            url,
            stream,
            maxlen,
        } => Box::new(RedisSink {
            client: redis::Client::open(url.as_str()).map_err(|e| SinkError(e.to_string()))?,
            connection: Mutex::new(None),
            script: redis::Script::new(XADD_BATCH),
            stream: stream.clone(),
            maxlen: *maxlen,
            timeout,
        }),
        SinkKind::Nats {
            url,
            subject,
            stream,
            create_stream,
        } => Box::new(NatsSink {
            url: url.clone(),
            subject: subject.clone(),
            stream: stream.clone(),
            create_stream: *create_stream,
            jetstream: Mutex::new(None),
            timeout,
        }),
        SinkKind::Webhook { url, secret } => Box::new(WebhookSink {
            url: url.clone(),
            key: aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                secret.expose().as_bytes(),
            ),
            http: reqwest::Client::builder()
                .timeout(timeout)
                .user_agent(concat!("anteroom/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| SinkError(e.to_string()))?,
        }),
    })
}

/// NATS JetStream: one message per event on `<subject>.<room>.<type>`,
/// each acknowledged by the stream; `Nats-Msg-Id` is the event's id, so
/// JetStream drops a repeat within its duplicate window.
struct NatsSink {
    url: String,
    subject: String,
    stream: String,
    create_stream: bool,
    jetstream: Mutex<Option<async_nats::jetstream::Context>>,
    timeout: Duration,
}

impl NatsSink {
    /// Connected, with a stream that captures the events' subjects: one
    /// that already does, whatever its name (operators often make streams
    /// themselves), or, if none does and `create_stream` allows, `stream`
    /// made for them.
    async fn context(&self) -> Result<async_nats::jetstream::Context, SinkError> {
        let mut slot = self.jetstream.lock().await;
        if let Some(js) = slot.as_ref() {
            return Ok(js.clone());
        }
        let connect = async_nats::ConnectOptions::new()
            .connection_timeout(self.timeout)
            .connect(self.url.as_str());
        let client = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| SinkError("connecting timed out".into()))?
            .map_err(|e| SinkError(e.to_string()))?;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(self.timeout);
        let wanted = format!("{}.>", self.subject);
        match js.stream_by_subject(wanted.as_str()).await {
            Ok(name) => {
                let info = js
                    .get_stream(&name)
                    .await
                    .map_err(|e| SinkError(format!("stream {name}: {e}")))?;
                let subjects = &info.cached_info().config.subjects;
                if subjects.iter().any(|s| subject_covers(s, &wanted)) {
                    tracing::info!(stream = %name, subjects = ?subjects, "events go to an existing JetStream stream");
                } else {
                    tracing::warn!(stream = %name, subjects = ?subjects, wanted = %wanted, "the JetStream stream on these subjects captures only some of the events: the others are dead-lettered");
                }
            }
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                if !self.create_stream {
                    return Err(SinkError(format!(
                        "no JetStream stream captures {wanted} (create_stream = false: make one)"
                    )));
                }
                js.get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: self.stream.clone(),
                    subjects: vec![wanted],
                    ..Default::default()
                })
                .await
                .map_err(|e| SinkError(format!("stream {}: {e}", self.stream)))?;
            }
            Err(e) => return Err(SinkError(format!("looking for a stream: {e}"))),
        }
        *slot = Some(js.clone());
        Ok(js)
    }
}

/// Whether the NATS subject pattern `pattern` matches every subject that
/// `wanted` does (`*` one token, `>` the rest).
fn subject_covers(pattern: &str, wanted: &str) -> bool {
    let mut p = pattern.split('.');
    let mut w = wanted.split('.');
    loop {
        match (p.next(), w.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn deliver(&self, batch: &Batch) -> Result<(), SinkError> {
        let js = self.context().await?;
        let err = |e: &dyn std::fmt::Display| SinkError(e.to_string());
        let mut acks = Vec::with_capacity(batch.len());
        for event in batch.iter() {
            // A subject token has no dots: a room "a.b" publishes as "a_b".
            let subject = format!(
                "{}.{}.{}",
                self.subject,
                event.room().replace('.', "_"),
                event.kind().as_str()
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id().as_str());
            let payload = bytes::Bytes::copy_from_slice(event.json());
            let ack = js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| err(&e))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| err(&e))?;
        }
        Ok(())
    }
}

/// Batches POSTed as a JSON array to an HTTPS endpoint. Each delivery is
/// signed: `Anteroom-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`, so a receiver can check it came from anteroom and refuse
/// an old one replayed.
struct WebhookSink {
    url: String,
    key: aws_lc_rs::hmac::Key,
    http: reqwest::Client,
}

/// The `Anteroom-Signature` header of `body` sent at `t` (unix seconds).
pub fn signature(key: &aws_lc_rs::hmac::Key, t: u64, body: &[u8]) -> String {
    let mut ctx = aws_lc_rs::hmac::Context::with_key(key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag: String = ctx
        .sign()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={tag}")
}

#[async_trait]
impl Sink for WebhookSink {
    async fn deliver(&self, batch: &Batch) -> Result<(), SinkError> {
        let mut body = Vec::with_capacity(batch.lines().len() + 2);
        body.push(b'[');
        for (i, event) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(event.json());
        }
        body.push(b']');
        let t = now_millis() / 1000;
        let resp = self
            .http
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("anteroom-signature", signature(&self.key, t, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| SinkError(format!("{}: {e}", self.url)))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SinkError(format!("{} answered {status}", self.url)))
        }
    }
}

/// A JSON lines file, rotated to `<path>.<unix ms>` past `max_bytes`.
/// Written with plain blocking calls: a batch is one `write` to the page
/// cache, of its lines as they are, and the task runs on the sink's own
/// thread, so nothing else waits for it (tokio's file calls would hop to a
/// blocking pool and back, twice per call).
struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    /// The file, while it is open.
    file: parking_lot::Mutex<Option<std::fs::File>>,
}

fn append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&self, batch: &Batch) -> Result<(), SinkError> {
        let io = |e: std::io::Error| SinkError(format!("{}: {e}", self.path.display()));
        let mut file = self.file.lock();
        // One stat tells the size and whether logrotate moved the file away.
        match std::fs::metadata(&self.path) {
            Ok(meta) if self.max_bytes > 0 && meta.len() >= self.max_bytes => {
                // Named by the time, so no rotation overwrites another.
                let mut rotated = self.path.clone().into_os_string();
                rotated.push(format!(".{}", now_millis()));
                std::fs::rename(&self.path, rotated).map_err(io)?;
                *file = None;
            }
            Ok(_) => {}
            Err(_) => *file = None,
        }
        if file.is_none() {
            *file = Some(append(&self.path).map_err(io)?);
        }
        let Some(f) = file.as_mut() else {
            return Err(SinkError("file not open".into()));
        };
        if let Err(e) = f.write_all(batch.lines()) {
            *file = None;
            return Err(io(e));
        }
        Ok(())
    }
}

/// A Redis stream: one `XADD ... MAXLEN ~` per event (field `event`, the
/// JSON), a batch in one script call, so one reply comes back for the
/// batch rather than an entry id per event.
struct RedisSink {
    client: redis::Client,
    connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
    stream: String,
    maxlen: u64,
    timeout: Duration,
}

/// `XADD`s every event of a batch (`ARGV[2..]`) to the stream `KEYS[1]`,
/// trimmed to about `ARGV[1]` entries; answers how many.
const XADD_BATCH: &str = r"
local maxlen = ARGV[1]
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'event', ARGV[i])
end
return #ARGV - 1
";

#[async_trait]
impl Sink for RedisSink {
    async fn deliver(&self, batch: &Batch) -> Result<(), SinkError> {
        let err = |e: redis::RedisError| SinkError(e.to_string());
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            let connect = self.client.get_multiplexed_async_connection();
            let conn = tokio::time::timeout(self.timeout, connect)
                .await
                .map_err(|_| SinkError("connecting timed out".into()))?
                .map_err(err)?;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(SinkError("not connected".into()));
        };
        // EVALSHA by hand: each event's JSON is copied once into the
        // command, not first into an argument list of its own.
        let size = batch.lines().len() + 128;
        let mut call = redis::Cmd::with_capacity(batch.len() + 5, size);
        call.arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(1)
            .arg(&self.stream)
            .arg(self.maxlen);
        for event in batch.iter() {
            call.arg(event.json());
        }
        let sent = tokio::time::timeout(self.timeout, async {
            match call.query_async::<u64>(conn).await {
                // A restarted server has forgotten the script.
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.script.load_async(conn).await?;
                    call.query_async::<u64>(conn).await
                }
                other => other,
            }
        })
        .await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *slot = None;
                Err(err(e))
            }
            Err(_) => {
                *slot = None;
                Err(SinkError("timed out".into()))
            }
        }
    }
}

/// A sink's dead-letter file: JSON lines, appended.
pub struct DeadLetters {
    path: PathBuf,
}

impl DeadLetters {
    /// The dead-letter file of `sink` in `dir`.
    pub fn new(dir: &Path, sink: &str) -> DeadLetters {
        DeadLetters {
            path: dir.join(format!("{sink}.jsonl")),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn keep(&self, events: &Batch) -> std::io::Result<()> {
        append(&self.path)?.write_all(events.lines())
    }
}

/// How a delivery task retries.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts per batch.
    pub max_attempts: u32,
    /// First pause.
    pub base: Duration,
    /// Longest pause.
    pub max: Duration,
    /// Longest one attempt may take.
    pub timeout: Duration,
}

impl Retry {
    /// The config's retry settings.
    pub fn of(events: &Events) -> Retry {
        Retry {
            max_attempts: events.max_attempts,
            base: events.retry_base,
            max: events.retry_max,
            timeout: events.timeout,
        }
    }

    /// The pause after `attempt` failed attempts: doubling, capped, with
    /// full jitter in its upper half (so a crowd of instances spreads out).
    fn pause(&self, attempt: u32) -> Duration {
        let doubled = self.base.saturating_mul(1 << attempt.min(16)).min(self.max);
        doubled.mul_f64(rand::thread_rng().gen_range(0.5..1.0))
    }
}

/// Delivers `batch` with retries; `Err` with the last error once every
/// attempt failed, or once `shutdown` came (no more waiting to try again:
/// the caller keeps the batch).
pub async fn deliver(
    sink: &dyn Sink,
    batch: &Batch,
    retry: Retry,
    mut shutdown: Option<ShutdownWatch>,
    mut failed: impl FnMut(u32),
) -> Result<(), SinkError> {
    let mut last = SinkError("no attempt".into());
    for attempt in 0..retry.max_attempts {
        let result = tokio::time::timeout(retry.timeout, sink.deliver(batch)).await;
        match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = SinkError("timed out".into()),
        }
        failed(attempt + 1);
        if attempt + 1 == retry.max_attempts {
            break;
        }
        let pause = tokio::time::sleep(retry.pause(attempt));
        match shutdown.as_mut() {
            Some(watch) if *watch.borrow() => break,
            Some(watch) => tokio::select! {
                () = pause => {}
                _ = watch.changed() => break,
            },
            None => pause.await,
        }
    }
    Err(last)
}

/// One sink's delivery task.
pub struct Delivery {
    outbox: Arc<Outbox>,
    sink: Box<dyn Sink>,
    dead: DeadLetters,
    retry: Retry,
    /// How often the buffer goes out (`flush_interval`).
    interval: Duration,
    /// How long the buffer may take to go out at shutdown.
    grace: Duration,
}

impl Delivery {
    /// The task for one sink of `events`.
    pub fn new(
        outbox: Arc<Outbox>,
        sink: Box<dyn Sink>,
        dead_letter_dir: &Path,
        events: &Events,
        grace: Duration,
    ) -> Delivery {
        let dead = DeadLetters::new(dead_letter_dir, &outbox.name);
        Delivery {
            outbox,
            sink,
            dead,
            retry: Retry::of(events),
            interval: events.flush_interval,
            grace,
        }
    }

    /// Delivers `batch` with the configured retries, which a `shutdown`
    /// cuts short; without one (the last pass at shutdown), in one attempt.
    /// What fails goes to the dead letters.
    async fn send(&self, batch: &Batch, shutdown: Option<&ShutdownWatch>) {
        let m = &self.outbox.metrics;
        let n = batch.len() as u64;
        let retry = match shutdown {
            Some(_) => self.retry,
            None => Retry {
                max_attempts: 1,
                ..self.retry
            },
        };
        let result = deliver(&*self.sink, batch, retry, shutdown.cloned(), |attempt| {
            m.failed.inc();
            m.up.set(0);
            if attempt < retry.max_attempts {
                m.retried.inc_by(n);
            }
            // A sink that fails fills its buffer: what spills meanwhile
            // goes to the dead letters now, not after the last attempt.
            self.bury_spilled();
        })
        .await;
        match result {
            Ok(()) => {
                m.up.set(1);
                m.delivered.inc_by(n);
                let now = now_millis();
                // Counted here, then added to the shared histogram at once
                // (one set of atomic steps per batch, not per event).
                let lag = m.lag.local();
                for e in batch.iter() {
                    lag.observe(now.saturating_sub(e.millis()) as f64 / 1000.0);
                }
                lag.flush();
            }
            Err(e) => {
                tracing::warn!(sink = self.outbox.name, events = n, error = %e, file = %self.dead.path().display(), "events not delivered; kept in the dead-letter file");
                self.bury(batch);
            }
        }
    }

    /// Delivers what the buffer holds now (not what comes meanwhile: a
    /// sink slower than the requests must still hear the shutdown), in
    /// batches: all of it, or, woken for a full batch, only full batches,
    /// the rest waiting for more. `batch` is the task's own buffer, empty
    /// between deliveries. Then what spilled goes to the dead letters.
    async fn drain(&self, all: bool, batch: &mut Batch, shutdown: &ShutdownWatch) {
        let outbox = &self.outbox;
        let mut left = outbox.buffered();
        let least = if all { 1 } else { outbox.full() };
        // At a shutdown the rest waits for the last pass, within the grace.
        while left >= least && !*shutdown.borrow() {
            outbox.take(outbox.batch.min(left), batch);
            if batch.is_empty() {
                break;
            }
            left -= batch.len();
            self.send(batch, Some(shutdown)).await;
            batch.clear();
        }
        self.bury_spilled();
    }

    /// Writes what spilled from the full buffer to the dead letters.
    fn bury_spilled(&self) {
        let mut spilled = Batch::default();
        self.outbox.take_spilled(&mut spilled);
        self.bury(&spilled);
    }

    fn bury(&self, events: &Batch) {
        if events.is_empty() {
            return;
        }
        let name = &self.outbox.name;
        match self.dead.keep(events) {
            Ok(()) => self
                .outbox
                .metrics
                .dead_lettered
                .inc_by(events.len() as u64),
            Err(e) => {
                tracing::error!(sink = name, events = events.len(), error = %e, file = %self.dead.path().display(), "events lost: the dead-letter file cannot be written");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Delivery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let outbox = &self.outbox;
        let mut batch = Batch::default();
        // Every `flush_interval`, or at once when a batch is full, what is
        // buffered goes out.
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.drain(true, &mut batch, &shutdown).await,
                () = outbox.full_batch() => self.drain(false, &mut batch, &shutdown).await,
                _ = shutdown.changed() => break,
            }
        }
        // The buffer goes out once more within the grace period; the rest is kept.
        let until = tokio::time::Instant::now() + self.grace;
        loop {
            outbox.take(outbox.batch, &mut batch);
            if batch.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= until {
                self.bury(&batch);
            } else {
                self.send(&batch, None).await;
            }
            batch.clear();
        }
        self.bury_spilled();
    }
}

/// Reads a dead-letter (or any JSON lines) file of events; lines that are
/// not events are counted, not fatal.
pub fn read_events(path: &Path) -> std::io::Result<(Batch, usize)> {
    let text = std::fs::read_to_string(path)?;
    let mut events = Batch::default();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if events.push_line(line).is_err() {
            bad += 1;
        }
    }
    Ok((events, bad))
}

/// `anteroom events replay`: delivers the events of `file` to every sink of
/// `events` (or the one named), with the configured retries, then renames
/// the file `<file>.replayed`. Returns the events delivered and the lines
/// that were not events.
pub async fn replay(
    events: &Events,
    file: &Path,
    only: Option<&str>,
) -> Result<(usize, usize), String> {
    let (all, skipped) =
        read_events(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let chosen: Vec<_> = events
        .sinks
        .iter()
        .filter(|s| only.is_none_or(|name| s.name == name))
        .collect();
    if chosen.is_empty() {
        return Err(match only {
            Some(name) => format!("no [[events.sink]] is named {name:?}"),
            None => "no [[events.sink]] is configured".to_owned(),
        });
    }
    for sink in chosen {
        let open =
            open(&sink.kind, events.timeout).map_err(|e| format!("sink {:?}: {e}", sink.name))?;
        let (mut left, mut batch) = (all.clone(), Batch::default());
        while !left.is_empty() {
            batch.clear();
            left.move_front(events.batch, &mut batch);
            deliver(&*open, &batch, Retry::of(events), None, |_| {})
                .await
                .map_err(|e| format!("sink {:?}: {e} (nothing renamed; run again)", sink.name))?;
        }
    }
    let mut done = file.as_os_str().to_owned();
    done.push(".replayed");
    std::fs::rename(file, &done)
        .map_err(|e| format!("delivered, but cannot rename {}: {e}", file.display()))?;
    Ok((all.len(), skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_covers_the_events_when_its_subjects_match_them_all() {
        let wanted = "anteroom.events.>";
        for pattern in [
            "anteroom.events.>",
            "anteroom.>",
            ">",
            "anteroom.*.>",
            "*.events.>",
        ] {
            assert!(subject_covers(pattern, wanted), "{pattern}");
        }
        for pattern in [
            "anteroom.events.web.>",
            "anteroom.events.*",
            "anteroom.events",
            "other.events.>",
            "anteroom.events.*.arrived",
        ] {
            assert!(!subject_covers(pattern, wanted), "{pattern}");
        }
    }
}
