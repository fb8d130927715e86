//! `anteroom demo`: anteroom in front of an embedded toy app, on loopback,
//! so a newcomer can watch a room fill up without writing any config.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde_json::json;

use crate::config::{Config, ConfigError};
use crate::respond::Reply;

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

/// The demo's configuration: a `requests` room of capacity 2 in front of the
/// toy app's slow endpoint; everything else unguarded.
pub fn config(ports: Ports) -> Result<Config, ConfigError> {
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:{public}"]
threads = 2
grace_period = "2s"

[admin]
listen = "127.0.0.1:{admin}"

[[upstream]]
name = "toy"
address = "127.0.0.1:{upstream}"

[[room]]
name = "slow"
mode = "requests"
capacity = 2
max_wait = "1s"

[[route]]
path_prefix = "/api/slow"
upstream = "toy"
room = "slow"

[[route]]
path_prefix = "/"
upstream = "toy"
"#,
        public = ports.public,
        admin = ports.admin,
        upstream = ports.upstream,
    );
    Config::from_toml(&text, Path::new("<demo>"))
}

/// What to print once the demo runs.
pub fn banner(ports: Ports) -> String {
    let p = ports.public;
    let a = ports.admin;
    format!(
        "anteroom demo is running (Ctrl-C to stop).

  app through anteroom:  http://127.0.0.1:{p}/
  room capacity:         http://127.0.0.1:{p}/__anteroom/capacity?room=slow
  metrics:               http://127.0.0.1:{a}/metrics

The room \"slow\" lets 2 requests at a time reach /api/slow (each takes 3 s);
others wait up to 1 s for a slot, then get 503 QUEUE_REQUIRED.

Try:
  curl -i http://127.0.0.1:{p}/api/fast
  for i in 1 2 3 4 5 6; do curl -s -w ' -> %{{http_code}}\\n' http://127.0.0.1:{p}/api/slow & done; wait
  curl -s http://127.0.0.1:{p}/__anteroom/capacity?room=slow
  curl -s http://127.0.0.1:{a}/metrics | grep anteroom_room
"
    )
}

/// The toy app as a Pingora service; fails if its port is taken.
pub fn toy_upstream(port: u16) -> std::io::Result<Service<ToyApp>> {
    let addr = format!("127.0.0.1:{port}");
    std::net::TcpListener::bind(&addr)?;
    let mut service = Service::new("demo toy app".to_owned(), ToyApp);
    service.threads = Some(1);
    service.add_tcp(&addr);
    Ok(service)
}

/// A tiny app with one slow and one fast endpoint.
pub struct ToyApp;

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anteroom demo app</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}</style>
</head><body>
<h1>The demo app</h1>
<p>This page came through anteroom. <a href="/api/fast">/api/fast</a> answers at once;
<a href="/api/slow">/api/slow</a> takes 3 seconds and only 2 may run at a time.</p>
</body></html>
"#;

#[async_trait]
impl ServeHttp for ToyApp {
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
            "/" => Reply::new(200, "text/html; charset=utf-8", PAGE),
            _ => Reply::error(
                404,
                "NOT_FOUND",
                "The toy app has /, /api/fast and /api/slow.",
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
        let config = config(ports).expect("demo config");
        assert_eq!(config.rooms[0].capacity, 2);
    }
}
