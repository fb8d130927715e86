//! A real HTTP/1 origin server for tests, on an ephemeral loopback port,
//! optionally over TLS. It counts what it sees so tests can assert on the
//! upstream's own view (in flight, peak, arrival order).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use anteroom::demo::llm::{FakeLlm, Quota};

type Body = BoxBody<Bytes, std::io::Error>;

/// What the upstream has seen.
#[derive(Default)]
pub struct Seen {
    pub in_flight: AtomicUsize,
    pub peak: AtomicUsize,
    pub requests: AtomicUsize,
    /// `id` query values of /slow requests, in the order they arrived.
    pub arrivals: Mutex<Vec<String>>,
    /// Opened once per /stream request to let the rest of the stream go.
    pub gate: Notify,
    /// The fake LLM API behind `/llm`, with its own limits.
    pub llm: Mutex<Option<Arc<FakeLlm>>>,
}

/// A running test upstream; it stops when dropped.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self._task.abort();
    }
}

impl TestUpstream {
    /// Plain HTTP.
    pub async fn start() -> TestUpstream {
        Self::serve(None).await
    }

    /// Plain HTTP, with a fake LLM API under `/llm` that enforces `quota`.
    pub async fn start_llm(quota: Quota) -> TestUpstream {
        let upstream = Self::serve(None).await;
        *upstream.seen.llm.lock() = Some(FakeLlm::new(quota));
        upstream
    }

    /// The fake LLM API, for its counts and limits.
    pub fn llm(&self) -> Arc<FakeLlm> {
        self.seen
            .llm
            .lock()
            .clone()
            .expect("started with start_llm")
    }

    /// HTTPS with the given server config.
    pub async fn start_tls(tls: Arc<tokio_rustls::rustls::ServerConfig>) -> TestUpstream {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let seen = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(seen.clone(), req));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        TestUpstream {
            addr,
            seen,
            _task: task,
        }
    }
}

struct InFlight(Arc<Seen>);

impl InFlight {
    fn enter(seen: &Arc<Seen>) -> InFlight {
        let now = seen.in_flight.fetch_add(1, SeqCst) + 1;
        seen.peak.fetch_max(now, SeqCst);
        InFlight(seen.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-upstream", "test")
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

async fn handle(seen: Arc<Seen>, req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    seen.requests.fetch_add(1, SeqCst);
    let q = query(&req);
    let path = req.uri().path().to_owned();
    match path.as_str() {
        p if p.ends_with("/echo") => {
            let method = req.method().to_string();
            let uri_query = req.uri().query().unwrap_or_default().to_owned();
            let headers: HashMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            let json = serde_json::json!({
                "method": method,
                "path": path,
                "query": uri_query,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            let mut resp = full(200, "application/json", serde_json::to_vec(&json).unwrap());
            resp.headers_mut()
                .insert("x-echo-reply", "yes".parse().unwrap());
            Ok(resp)
        }
        // An LLM answer reporting its token usage: JSON, or SSE events whose
        // count grows to `tokens` (Gemini's usageMetadata).
        p if p.ends_with("/usage") || p.ends_with("/usage-sse") => {
            let tokens: u64 = q.get("tokens").and_then(|v| v.parse().ok()).unwrap_or(0);
            if p.ends_with("/usage") {
                let body = format!(
                    r#"{{"candidates":[{{"text":"hi"}}],"usageMetadata":{{"promptTokenCount":1,"totalTokenCount":{tokens}}}}}"#
                );
                return Ok(full(200, "application/json", body));
            }
            let events: Vec<Result<Frame<Bytes>, std::io::Error>> =
                [tokens / 3, tokens / 2, tokens]
                    .into_iter()
                    .map(|n| {
                        Ok(Frame::data(Bytes::from(format!(
                            "data: {{\"usageMetadata\":{{\"totalTokenCount\": {n}}}}}\n\n"
                        ))))
                    })
                    .collect();
            Ok(Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BoxBody::new(StreamBody::new(stream::iter(events))))
                .unwrap())
        }
        // The fake LLM: SSE answers with usage, 429s past its limits with
        // Gemini's body and (unless `hint=body`) a `retry-after-ms` header.
        p if p.ends_with("/llm") => {
            let Some(llm) = seen.llm.lock().clone() else {
                return Ok(full(404, "text/plain", "no llm"));
            };
            let call = match llm.call() {
                Ok(call) => call,
                Err(refusal) => {
                    let mut resp = full(429, "application/json", refusal.body());
                    if let Some(ms) = refusal
                        .retry_ms()
                        .filter(|_| q.get("hint").map(String::as_str) != Some("body"))
                    {
                        resp.headers_mut().insert("retry-after-ms", ms.into());
                    }
                    return Ok(resp);
                }
            };
            let tokens: u64 = q.get("tokens").and_then(|v| v.parse().ok()).unwrap_or(100);
            let gap =
                Duration::from_millis(q.get("gap").and_then(|v| v.parse().ok()).unwrap_or(20));
            let client = req
                .headers()
                .get("x-client")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let events = anteroom::demo::llm::events(tokens, 5);
            let last = events.len() - 1;
            let mut call = Some(call);
            let chunks = stream::unfold(0usize, move |i| {
                let events = events.clone();
                let finished = (i == last).then(|| (call.take(), client.clone()));
                async move {
                    let event = events.get(i)?.clone();
                    if i > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    if let Some((Some(call), client)) = finished {
                        call.done(tokens, &client);
                    }
                    Some((
                        Ok::<_, std::io::Error>(Frame::data(Bytes::from(event))),
                        i + 1,
                    ))
                }
            });
            Ok(Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BoxBody::new(StreamBody::new(chunks)))
                .unwrap())
        }
        p if p.ends_with("/slow") => {
            let _guard = InFlight::enter(&seen);
            if let Some(id) = q.get("id") {
                seen.arrivals.lock().push(id.clone());
            }
            let ms: u64 = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(300);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(full(200, "text/plain", "slow done"))
        }
        p if p.ends_with("/stream") => {
            // First chunk at once, the rest only after the test opens the gate:
            // a buffering proxy would deliver nothing until the end.
            let guard = InFlight::enter(&seen);
            let seen2 = seen.clone();
            let chunks = stream::unfold(0u8, move |i| {
                let seen = seen2.clone();
                async move {
                    match i {
                        0 => Some((
                            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(
                                b"data: first\n\n",
                            ))),
                            1,
                        )),
                        1 => {
                            seen.gate.notified().await;
                            Some((Ok(Frame::data(Bytes::from_static(b"data: second\n\n"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            let body = StreamBody::new(stream::StreamExt::map(chunks, move |frame| {
                let _keep = &guard;
                frame
            }));
            Ok(Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BoxBody::new(body))
                .unwrap())
        }
        p if p.ends_with("/hang") => {
            let _guard = InFlight::enter(&seen);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(full(200, "text/plain", "never"))
        }
        p if p.ends_with("/reset") => {
            // An error from the service makes hyper drop the connection unanswered.
            Err(std::io::Error::other("reset on purpose"))
        }
        p if p.ends_with("/release") => {
            let mut resp = full(200, "text/plain", "released");
            resp.headers_mut()
                .insert("anteroom-command", "release".parse().unwrap());
            Ok(resp)
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            Ok(full(code, "text/plain", format!("status {code}")))
        }
        _ => Ok(full(200, "text/plain", format!("upstream saw {path}"))),
    }
}
