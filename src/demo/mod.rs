//! `anteroom demo`: anteroom in front of an embedded toy app, on loopback,
//! so a newcomer can watch a room fill up without writing any config.

pub mod llm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use serde_json::json;

use crate::config::{Config, ConfigError};
use crate::response::Reply;
use llm::{FakeLlm, Quota};

/// The fake LLM's limits: 2 in flight, 60 requests and 6,000 tokens a
/// minute (each answer uses 100 tokens over about a second).
pub const LLM_QUOTA: Quota = Quota {
    concurrency: 2,
    requests: 60,
    tokens: 6000,
    window: Duration::from_secs(60),
};
/// Tokens one answer of the fake LLM uses.
const LLM_TOKENS: u64 = 100;

/// Where the demo listens.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// anteroom's public listener.
    pub public: u16,
    /// anteroom's admin listener.
    pub admin: u16,
    /// The toy app.
    pub upstream: u16,
}

/// A fresh private directory holding a new signing key, for the demo only
/// (it has no `[tokens]` of its own); the caller deletes it once loaded.
pub fn ephemeral_key_dir() -> Result<PathBuf, crate::token::KeyError> {
    let dir = std::env::temp_dir().join(format!(
        "anteroom-demo-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    crate::token::keygen(&dir, 2048, false)?;
    Ok(dir)
}

/// The demo's configuration: a waiting room of 2 visitors in front of the
/// toy app, a `requests` room of 2 in front of its slow endpoint, and its
/// fast endpoint unguarded.
pub fn config(ports: Ports, key_dir: &Path) -> Result<Config, ConfigError> {
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:{public}"]
threads = 2
grace_period = "2s"

[admin]
listen = "127.0.0.1:{admin}"

[tokens]
signing_key = "{key}"

[store]
sweep_interval = "500ms"

[[upstream]]
name = "toy"
address = "127.0.0.1:{upstream}"

[[room]]
name = "slow"
mode = "requests"
capacity = 2
max_wait = "1s"

[[room]]
name = "llm"
mode = "requests"
capacity = 2
max_wait = "30s"
rate = "60/m"
tokens_per_minute = 6000
token_estimate = 100
adaptive = true
fair_by = "client"

[[room]]
name = "web"
mode = "sessions"
capacity = 2
session_ttl = "60s"
poll_interval = "2s"
heartbeat_timeout = "6s"
claim_window = "4s"
rejoin_grace = "2m"
avg_session = "30s"

[room.conversion]
method = "POST"
path_prefix = "/signup"

[room.bypass]
paths = ["/bye", "/app"]

[[route]]
path_prefix = "/api/slow"
upstream = "toy"
room = "slow"

[[route]]
path_prefix = "/api/llm"
upstream = "toy"
room = "llm"
retry_429 = true

[[route]]
path_prefix = "/api/"
upstream = "toy"

[[route]]
path_prefix = "/"
upstream = "toy"
room = "web"
"#,
        public = ports.public,
        admin = ports.admin,
        upstream = ports.upstream,
        key = key_dir.join("anteroom.key.pem").display(),
    );
    Config::from_toml(&text, Path::new("<demo>"))
}

/// What to print once the demo runs.
pub fn banner(ports: Ports) -> String {
    let p = ports.public;
    let a = ports.admin;
    let u = ports.upstream;
    format!(
        "anteroom demo is running (Ctrl-C to stop). It signs with an ephemeral key made for this run.

The waiting room \"web\" admits 2 visitors at a time to the toy app at /.
  Open http://127.0.0.1:{p}/?utm_source=demo&utm_campaign=launch in three private browser
  windows (each is a new visitor): two get in, the third sees the waiting page with its
  place. Click \"Leave\" in one of the first two: the third is let in by itself.
  Or wait inside the app: http://127.0.0.1:{p}/app is the app's own page, open to all; its
  \"Start the chat\" button waits its turn on that page (with /__anteroom/client.js) while the
  room is full, and the chat starts by itself when a place frees.

The room \"slow\" lets 2 requests at a time reach /api/slow (3 s each); others wait up to
1 s for a slot, then get 503 QUEUE_REQUIRED. /api/fast is unguarded.

/api/llm is a fake LLM API with Gemini's kind of limits (2 in flight, 60 requests and 6,000
tokens a minute; it answers 429 RESOURCE_EXHAUSTED past them) that streams its answer as
server-sent events with usage. The room \"llm\" keeps to those limits: callers wait their turn
(per client) instead of getting 429s. Compare the app on its own port with it behind anteroom:
  for i in $(seq 5); do curl -s -o /dev/null -w '%{{http_code}} ' http://127.0.0.1:{u}/api/llm & done; wait; echo
  for i in $(seq 5); do curl -s -o /dev/null -w '%{{http_code}} ' http://127.0.0.1:{p}/api/llm & done; wait; echo
  curl -sN http://127.0.0.1:{p}/api/llm

Try:
  curl -s -H 'Accept: application/json' http://127.0.0.1:{p}/      # run 3 times: the third is queued
  curl -s -H 'X-Anteroom-Ticket: <ticket>' http://127.0.0.1:{p}/__anteroom/status
  for i in 1 2 3 4 5 6; do curl -s -w ' -> %{{http_code}}\\n' http://127.0.0.1:{p}/api/slow & done; wait
  curl -s http://127.0.0.1:{p}/__anteroom/capacity?room=web
  curl -s http://127.0.0.1:{a}/admin/rooms
  curl -s -X PATCH -d '{{\"state\":\"paused\"}}' http://127.0.0.1:{a}/admin/rooms/web
  curl -s http://127.0.0.1:{a}/metrics | grep -E 'anteroom_(room|visitors)'
"
    )
}

/// The toy app as a Pingora service; fails if its port is taken.
pub fn toy_upstream(port: u16) -> std::io::Result<Service<ToyApp>> {
    let addr = format!("127.0.0.1:{port}");
    std::net::TcpListener::bind(&addr)?;
    let app = ToyApp {
        llm: FakeLlm::new(LLM_QUOTA),
    };
    let mut service = Service::new("demo toy app".to_owned(), app);
    service.threads = Some(1);
    service.add_tcp(&addr);
    Ok(service)
}

/// A tiny app with one slow and one fast endpoint, pages, and a fake LLM.
pub struct ToyApp {
    llm: Arc<FakeLlm>,
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anteroom demo app</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}
button{font:inherit;padding:.4rem 1rem}</style>
</head><body>
<h1>You are in</h1>
<p>This page came through anteroom: you hold one of the 2 places of the room "web".
Your campaign and wait time arrived here as <code>X-Anteroom-*</code> headers:</p>
<pre>{headers}</pre>
<form method="post" action="/__anteroom/leave?room=web&amp;return=/bye"><button>Leave (frees your place at once)</button></form>
<p>Or <a href="/done">finish</a>: the app answers with <code>Anteroom-Command: release</code>.</p>
<p><a href="/api/fast">/api/fast</a> answers at once; <a href="/api/slow">/api/slow</a> takes 3 seconds
and only 2 may run at a time.</p>
</body></html>
"#;

/// The app's own page as the waiting room: anyone may browse it; only the
/// chat (behind the room "web") waits its turn, shown inside the page by
/// /__anteroom/client.js.
const APP: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Choose your coach</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
button{font:inherit;padding:.4rem 1rem}#place{min-height:1.5em;color:#555}</style>
<script src="/__anteroom/client.js"></script>
</head><body>
<h1>Choose your coach</h1>
<p>Browse freely: this page is not behind the waiting room. Only the chat is, and it waits
its turn right here.</p>
<button id="chat">Start the chat</button>
<p id="place" role="status" aria-live="polite"></p>
<pre id="answer"></pre>
<script>
document.getElementById("chat").onclick = async function () {
  var place = document.getElementById("place");
  place.textContent = "Starting…";
  var resp = await Anteroom.fetch("/chat", { method: "POST" }, {
    onWait: function (s) {
      place.textContent = s.state === "queued"
        ? "You are number " + s.position + " in line" + (s.waitMs != null ? ", about " + Math.max(1, Math.round(s.waitMs / 60000)) + " min" : "") + ". Keep browsing: the chat starts by itself."
        : "Waiting for a place…";
    }
  });
  place.textContent = "";
  document.getElementById("answer").textContent = await resp.text();
};
</script>
</body></html>
"#;

const BYE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Goodbye</title></head>
<body style="font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto">
<h1>Your place was freed</h1><p>Someone waiting was let in. <a href="/">Come back</a> (you will be a new visitor).</p>
</body></html>
"#;

#[async_trait]
impl HttpServerApp for ToyApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        let written = if session.req_header().uri.path() == "/api/llm" {
            self.stream_llm(&mut session).await
        } else {
            let (parts, body) = self.response(&mut session).await.into_parts();
            write(
                &mut session,
                parts.into(),
                vec![Bytes::from(body)],
                Duration::ZERO,
            )
            .await
        };
        if written.is_err() {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        let stream = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(stream, settings))
    }
}

/// Writes a response, its body chunks `gap` apart.
async fn write(
    session: &mut ServerSession,
    header: ResponseHeader,
    chunks: Vec<Bytes>,
    gap: Duration,
) -> pingora::Result<()> {
    session.write_response_header(Box::new(header)).await?;
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        session.write_response_body(chunk, i == last).await?;
    }
    Ok(())
}

impl ToyApp {
    /// The fake LLM: a streamed answer, or its 429 with a retry hint.
    async fn stream_llm(&self, session: &mut ServerSession) -> pingora::Result<()> {
        let client = session
            .req_header()
            .headers
            .get("x-client")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        match self.llm.call() {
            Err(refusal) => {
                let mut header = ResponseHeader::build(429, None)?;
                header.insert_header("content-type", "application/json")?;
                let body = Bytes::from(refusal.body());
                header.insert_header("content-length", body.len().to_string())?;
                write(session, header, vec![body], Duration::ZERO).await
            }
            Ok(call) => {
                let mut header = ResponseHeader::build(200, None)?;
                header.insert_header("content-type", "text/event-stream")?;
                header.insert_header("cache-control", "no-cache")?;
                let chunks = llm::events(LLM_TOKENS, 5)
                    .into_iter()
                    .map(Bytes::from)
                    .collect();
                write(session, header, chunks, Duration::from_millis(200)).await?;
                call.done(LLM_TOKENS, &client);
                Ok(())
            }
        }
    }

    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let reply = match path.as_str() {
            "/api/slow" => {
                let ms = session
                    .req_header()
                    .uri
                    .query()
                    .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "ms"))
                    .and_then(|(_, v)| v.parse::<u64>().ok())
                    .unwrap_or(3000)
                    .min(30_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Reply::json(200, &json!({"endpoint": "slow", "tookMs": ms}))
            }
            "/api/fast" => Reply::json(200, &json!({"endpoint": "fast"})),
            "/" => {
                let headers: String = session
                    .req_header()
                    .headers
                    .iter()
                    .filter(|(k, _)| {
                        k.as_str().starts_with("x-anteroom-")
                            && k.as_str() != crate::gate::PASS_HEADER
                    })
                    .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
                    .collect();
                let escaped = headers.replace('&', "&amp;").replace('<', "&lt;");
                Reply::new(
                    200,
                    "text/html; charset=utf-8",
                    PAGE.replace("{headers}", &escaped),
                )
            }
            "/bye" => Reply::new(200, "text/html; charset=utf-8", BYE),
            "/app" => Reply::new(200, "text/html; charset=utf-8", APP),
            "/chat" => Reply::json(
                200,
                &json!({"coach": "Ada", "reply": "Hello! What shall we train today?"}),
            ),
            "/done" => Reply::new(200, "text/html; charset=utf-8", BYE)
                .header(http::HeaderName::from_static("anteroom-command"), "release"),
            "/signup" => Reply::json(201, &json!({"registered": true})),
            _ => Reply::error(
                404,
                "NOT_FOUND",
                "The toy app has /, /app, /chat, /done, /signup, /api/fast, /api/slow and /api/llm.",
            ),
        };
        reply.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid() {
        let ports = Ports {
            public: 8080,
            admin: 9090,
            upstream: 3000,
        };
        let dir = ephemeral_key_dir().expect("key");
        let config = config(ports, &dir).expect("demo config");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(config.rooms[2].capacity, 2);
        assert!(
            config.rooms[1]
                .requests()
                .is_some_and(|r| r.adaptive.is_some())
        );
    }
}
