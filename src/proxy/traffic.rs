//! What is recorded of each request once it is over, in the proxy's
//! `logging` phase: the per-route metrics (responses by status, upstream
//! responses and latency, whole-request duration) and the access line.

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};

use crate::gate::Visit;
use crate::metrics;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// HTTP status codes have three digits.
const STATUSES: usize = 1000;

/// The traffic families, registered once.
pub struct TrafficMetrics {
    requests: IntCounterVec,
    upstream_responses: IntCounterVec,
    upstream_latency: HistogramVec,
    request_duration: HistogramVec,
}

impl TrafficMetrics {
    /// Registers the traffic families.
    pub fn register(registry: &Registry) -> Result<TrafficMetrics, prometheus::Error> {
        Ok(TrafficMetrics {
            requests: metrics::counter(
                registry,
                "requests_total",
                "Responses sent, by route and status, including anteroom's own.",
                &["route", "status"],
            )?,
            upstream_responses: metrics::counter(
                registry,
                "upstream_responses_total",
                "Responses received from upstreams, by route, upstream and status.",
                &["route", "upstream", "status"],
            )?,
            upstream_latency: metrics::histogram(
                registry,
                "upstream_response_seconds",
                "Time from sending a request upstream to receiving its response header.",
                &["route", "upstream"],
                LATENCY_BUCKETS,
            )?,
            request_duration: metrics::histogram(
                registry,
                "request_duration_seconds",
                "Whole request time as seen by anteroom, by route.",
                &["route"],
                LATENCY_BUCKETS,
            )?,
        })
    }

    /// The handles of one route; the statuses dashboards ask about exist
    /// from the start.
    pub fn route(&self, route: &str, upstream: &str) -> RouteMetrics {
        let cells = || (0..STATUSES).map(|_| OnceLock::new()).collect::<Box<[_]>>();
        let metrics = RouteMetrics {
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            requests: self.requests.clone(),
            upstream_responses: self.upstream_responses.clone(),
            requests_by_status: cells(),
            upstream_by_status: cells(),
            duration: self.request_duration.with_label_values(&[route]),
            latency: self.upstream_latency.with_label_values(&[route, upstream]),
        };
        for status in [200, 400, 404, 429, 502, 503, 504] {
            metrics.request(status);
        }
        if upstream != NO_UPSTREAM {
            for status in [200, 500, 502, 503] {
                metrics.upstream_response(status);
            }
        }
        metrics
    }
}

/// The `route` label of requests anteroom answers itself (its `/__anteroom/`
/// paths and the JWKS), which no route takes.
pub const OWN_ROUTE: &str = "anteroom";
/// The `route` label of requests that no route matched (404 NO_ROUTE) or
/// that were refused before routing (400).
pub const UNROUTED: &str = "unrouted";
/// The `upstream` label of both.
pub const NO_UPSTREAM: &str = "none";

/// One route's metrics, looked up once: recording a request is then an
/// index and an atomic add rather than hashing label values.
pub struct RouteMetrics {
    route: String,
    upstream: String,
    requests: IntCounterVec,
    upstream_responses: IntCounterVec,
    requests_by_status: Box<[OnceLock<IntCounter>]>,
    upstream_by_status: Box<[OnceLock<IntCounter>]>,
    /// Whole request time.
    pub duration: Histogram,
    /// Time to the upstream's response header.
    pub latency: Histogram,
}

fn by_status(
    cells: &[OnceLock<IntCounter>],
    status: u16,
    make: impl FnOnce(&str) -> IntCounter,
) -> &IntCounter {
    let i = usize::from(status).min(STATUSES - 1);
    cells[i].get_or_init(|| make(&i.to_string()))
}

impl RouteMetrics {
    /// The counter of responses with this status.
    pub fn request(&self, status: u16) -> &IntCounter {
        by_status(&self.requests_by_status, status, |s| {
            self.requests.with_label_values(&[&self.route, s])
        })
    }

    /// The counter of upstream responses with this status.
    pub fn upstream_response(&self, status: u16) -> &IntCounter {
        by_status(&self.upstream_by_status, status, |s| {
            self.upstream_responses
                .with_label_values(&[&self.route, &self.upstream, s])
        })
    }
}

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Forwarded upstream.
    #[default]
    Proxied,
    /// Answered by anteroom's own paths.
    Api,
    /// Refused as malformed or not allowed.
    Refused,
    /// No route took it.
    NoRoute,
    /// Told to wait (`503 QUEUE_REQUIRED` or the waiting page).
    QueueRequired,
    /// The room is full or closed.
    Closed,
    /// Over a per-client limit.
    Limited,
}

impl Outcome {
    /// Its name in the access line.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::Api => "api",
            Outcome::Refused => "refused",
            Outcome::NoRoute => "no_route",
            Outcome::QueueRequired => "queue_required",
            Outcome::Closed => "closed",
            Outcome::Limited => "limited",
        }
    }
}

/// One request's access line (target `anteroom::access`).
pub struct Access<'a> {
    /// The request as the client sent it.
    pub req: &'a pingora::http::RequestHeader,
    /// The path decided on (the canonical one when it was rewritten).
    pub path: &'a str,
    /// The request's id.
    pub request_id: Option<&'a str>,
    /// Body bytes read and sent.
    pub bytes: (usize, usize),
    /// The route's name (`-` for none).
    pub route: &'a str,
    /// The route's room (`-` for none).
    pub room: &'a str,
    /// The route's upstream (`-` for none).
    pub upstream: &'a str,
    /// The status sent (0: none).
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// It passed its room without taking a place.
    pub bypassed: bool,
    /// From the header's arrival to the end.
    pub duration: std::time::Duration,
    /// How long a `requests` room's request waited for its slot.
    pub slot_wait: Option<std::time::Duration>,
    /// A `sessions` room's visitor.
    pub visit: Option<&'a Visit>,
    /// The client anteroom decided on.
    pub client: Option<std::net::IpAddr>,
    /// What went wrong, if anything.
    pub error: Option<&'a pingora::Error>,
}

impl Access<'_> {
    /// Writes the line.
    pub fn log(&self) {
        let req = self.req;
        let utm = self.visit.and_then(|v| v.session.utm.as_deref());
        let user_agent = req
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        tracing::info!(
            target: "anteroom::access",
            method = %req.method,
            path = self.path,
            version = ?req.version,
            host = crate::request::facts::host_header(req).unwrap_or("-"),
            request_id = self.request_id,
            user_agent = user_agent.as_deref(),
            bytes_in = self.bytes.0,
            bytes_out = self.bytes.1,
            route = self.route,
            room = self.room,
            upstream = self.upstream,
            status = self.status,
            outcome = self.outcome.as_str(),
            bypassed = self.bypassed,
            duration_ms = self.duration.as_secs_f64() * 1000.0,
            slot_wait_ms = self.slot_wait.map(|w| w.as_secs_f64() * 1000.0),
            wait_ms = self.visit.map(|v| v.session.wait_ms),
            session = self.visit.map(|v| v.session.id.to_string()),
            utm_source = utm.and_then(|u| u.source.as_deref()),
            utm_medium = utm.and_then(|u| u.medium.as_deref()),
            utm_campaign = utm.and_then(|u| u.campaign.as_deref()),
            client = self.client.map(|ip| ip.to_string()),
            error = self.error.map(|e| e.to_string()),
            "request"
        );
    }
}
