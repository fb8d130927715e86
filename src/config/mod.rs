//! Configuration: the TOML file operators write (`file`), checked and turned
//! into the typed `Config` the proxy runs on (`validate`).
//!
//! The file is the product's user interface, so a bad one is answered with
//! every problem at once, each naming its key, and the process refuses to start.

mod file;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Paths anteroom reserves for itself on the public listener: answered by
/// anteroom, never proxied, so no route may use them.
pub const RESERVED_PREFIX: &str = "/__anteroom/";

/// Largest capacity of a room, in the file and over the admin API.
pub const MAX_CAPACITY: u32 = 10_000_000;

/// Fastest admission rate, per second, in the file and over the admin API.
pub const MAX_ADMIT_RATE: f64 = 1_000_000.0;

/// A configuration that has passed validation: every reference resolves,
/// every number is in range, every duration parsed, every file it names is
/// readable. What is in those files is loaded once, by `assets`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for messages about what it refers to.
    pub origin: PathBuf,
    /// Public listeners and process settings.
    pub server: Server,
    /// The operator's listener.
    pub admin: Admin,
    /// Log output.
    pub log: Log,
    /// Where requests go, by name; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Capacity-limited rooms; routes refer to them by index.
    pub rooms: Vec<Room>,
    /// Tried in order; the first match wins.
    pub routes: Vec<Route>,
    /// Signing and verification keys for passes and tickets; needed by sessions rooms.
    pub tokens: Option<Tokens>,
    /// Recognisers for the app's own tokens (logged-in users); rules refer to them by index.
    pub jwts: Vec<Jwt>,
    /// Campaign values counted by name in metrics.
    pub attribution: Attribution,
    /// Where waiting-room state lives.
    pub store: StoreConfig,
    /// Where visitor and room events are delivered.
    pub events: Events,
}

/// `[events]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    /// Events each sink may hold undelivered.
    pub buffer: usize,
    /// What happens to an event for a sink whose buffer is full.
    pub on_full: OnFull,
    /// Where events that could not be delivered are kept, one file per sink.
    pub dead_letter_dir: Option<PathBuf>,
    /// Most events per delivery.
    pub batch: usize,
    /// Longest an event waits for its batch to fill.
    pub flush_interval: Duration,
    /// Deliveries of a batch before it goes to the dead letters.
    pub max_attempts: u32,
    /// First pause between attempts (doubled each time, with jitter).
    pub retry_base: Duration,
    /// Longest pause between attempts.
    pub retry_max: Duration,
    /// Longest one delivery may take.
    pub timeout: Duration,
    /// Whether `/readyz` fails while a sink is failing.
    pub ready_requires_sinks: bool,
    /// This instance's name in every event.
    pub instance: String,
    /// Where events go.
    pub sinks: Vec<Sink>,
}

/// What a full buffer does with one more event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Straight to the sink's dead-letter file, for a later `replay`.
    Spill,
    /// Dropped, and counted.
    Drop,
}

/// `[[events.sink]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    /// Its name in metrics and dead-letter files.
    pub name: String,
    /// What it is.
    pub kind: SinkKind,
}

/// Where one sink delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// A Redis stream (`XADD ... MAXLEN ~`).
    Redis {
        /// The server.
        url: String,
        /// The stream's key.
        stream: String,
        /// About how many entries the stream keeps.
        maxlen: u64,
    },
    /// NATS JetStream: each event published to `<subject>.<room>.<type>`
    /// with a publish acknowledgement, `Nats-Msg-Id` its id.
    Nats {
        /// The server(s).
        url: String,
        /// The subject prefix.
        subject: String,
        /// The JetStream stream made to capture `<subject>.>` when no
        /// stream does yet (one that does is used, whatever its name).
        stream: String,
        /// Whether anteroom may make that stream (`false`: the operator
        /// makes it; until then the sink is down).
        create_stream: bool,
    },
    /// Batches as HTTPS POSTs of a JSON array, signed with HMAC-SHA256.
    Webhook {
        /// Where.
        url: String,
        /// The signing key (from `secret_file`).
        secret: Secret,
    },
    /// A JSON lines file.
    File {
        /// The file.
        path: PathBuf,
        /// Size at which it is rotated to `<path>.<unix ms>` (0: never; for logrotate).
        max_bytes: u64,
    },
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Which store.
    pub backend: Backend,
    /// How often lapsed sessions and silent tickets are swept.
    pub sweep_interval: Duration,
    /// Longest time between store touches of an admitted visitor's session.
    pub touch_interval: Duration,
    /// After the store lost a room's state, how long newcomers wait while
    /// the visitors holding passes come back and take their slots again.
    pub rebuild_grace: Duration,
    /// Where the memory store keeps its state across restarts (`None`: it does not).
    pub state: Option<StateDir>,
}

/// `tokens_per_minute` and `token_estimate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    /// Tokens the upstream allows per minute.
    pub per_minute: u32,
    /// Charged when a request is let in, corrected by its response's usage.
    pub estimate: u32,
}

/// `adaptive = true` and `min_capacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveLimit {
    /// The limit never goes below this.
    pub min: u32,
}

/// `fair_by`: whose turn a waiter of a `requests` room takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FairBy {
    /// One line, first come, first served.
    None,
    /// The client's network (the address, IPv6 by /64).
    Client,
    /// The visitor's pass session (else the client's network).
    Session,
    /// A request header's value, hashed (e.g. an API key).
    Header(http::HeaderName),
}

/// `fair_by`, and the weight of the requests that `priority` picks out.
#[derive(Debug, Clone)]
pub struct Fairness {
    /// Whose turn.
    pub by: FairBy,
    /// Requests served per round for a client whose request matches.
    pub priority: Rules,
    /// Their weight (others: 1).
    pub weight: u32,
}

impl Default for Fairness {
    fn default() -> Self {
        Fairness {
            by: FairBy::None,
            priority: Rules::default(),
            weight: 1,
        }
    }
}

/// `rate = "60/m"`: at most `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period.
    pub count: u32,
    /// The period: a second, a minute or an hour.
    pub per: Duration,
}

impl Rate {
    /// `"N/s"`, `"N/m"` or `"N/h"`, N from 1 to 1,000,000.
    pub fn parse(text: &str) -> Option<Rate> {
        let (count, unit) = text.trim().split_once('/')?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(Rate { count, per })
    }

    /// The time between two requests at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

/// `[store] state_dir`: the memory store's state on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    /// The directory (created at start if missing).
    pub dir: PathBuf,
    /// How often the state is written (a crash loses at most this much).
    pub interval: Duration,
}

/// A store implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// This process's memory (one instance).
    Memory,
    /// A Redis (or Redis-compatible) server shared by every instance.
    Redis(Box<RedisConfig>),
}

/// `[store] backend = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where the data is: one server, a primary watched by Sentinel, or a Cluster.
    pub deployment: Deployment,
    /// ACL user name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Prepended to every key, so several deployments can share a server.
    pub key_prefix: String,
    /// Multiplexed connections to spread commands over.
    pub connections: usize,
    /// Limit on one store operation (a round trip); past it the room's
    /// `on_store_error` policy decides.
    pub timeout: Duration,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// An instance's allowance of a `requests` room's slots lasts this long unless renewed.
    pub lease: Duration,
    /// For `rediss://`: trust these CA certificates (PEM) instead of the public roots.
    pub ca_file: Option<PathBuf>,
}

/// How a Redis deployment is reached. Every URL is `redis://host:port` or
/// `rediss://` for TLS, with no credentials in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployment {
    /// `url`: one server (`redis://host:port/db`).
    Server(String),
    /// `sentinels` and `sentinel_master`: the primary the sentinels name,
    /// followed through failovers.
    Sentinel {
        /// The sentinels to ask (any one that answers will do).
        sentinels: Vec<String>,
        /// The name they monitor the primary under.
        master: String,
        /// ACL user of the sentinels themselves, if they need one.
        username: Option<String>,
        /// The sentinels' own password, if they need one.
        password: Option<Secret>,
    },
    /// `cluster_nodes`: seed nodes of a Redis Cluster (the rest are discovered).
    Cluster(Vec<String>),
}

impl Deployment {
    /// Every URL given, for logs and the reload comparison (never credentials).
    pub fn describe(&self) -> String {
        match self {
            Deployment::Server(url) => url.clone(),
            Deployment::Sentinel {
                sentinels, master, ..
            } => format!("sentinel {master} at {}", sentinels.join(",")),
            Deployment::Cluster(nodes) => format!("cluster at {}", nodes.join(",")),
        }
    }

    /// Whether the connections use TLS.
    pub fn tls(&self) -> bool {
        let tls = |u: &String| u.starts_with("rediss://");
        match self {
            Deployment::Server(url) => tls(url),
            Deployment::Sentinel { sentinels, .. } => sentinels.iter().any(tls),
            Deployment::Cluster(nodes) => nodes.iter().any(tls),
        }
    }
}

/// What happens to path forms that servers read differently (`%2F`, `\\`,
/// `;`, `%25`, escapes that are not UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathPolicy {
    /// Refused with `400` (the default).
    #[default]
    Reject,
    /// `%2F`, `%5C` and `\\` are slashes; `;` and `%25` stay as they are;
    /// escapes need not be UTF-8.
    Decode,
}

/// `[server]`.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// Plain-HTTP public listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS-terminating public listeners.
    pub tls: Vec<TlsListener>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub grace_period: Duration,
    /// Idle upstream connections kept for reuse, across all upstreams.
    pub upstream_keepalive_pool: usize,
    /// Let idle worker threads take work from busy ones.
    pub work_stealing: bool,
    /// The Unix socket through which a process started with `--upgrade`
    /// receives the listening sockets of the running one.
    pub upgrade_sock: PathBuf,
    /// Peers whose `X-Forwarded-For` is believed (load balancers in front of anteroom).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Ambiguous path forms: refused or decoded.
    pub path_policy: PathPolicy,
    /// Longest time from a request's first byte (or a new connection) to its
    /// last header byte.
    pub header_timeout: Duration,
    /// Longest silence of an idle keep-alive connection between requests.
    pub keepalive_timeout: Duration,
    /// Longest silence while a request body is being received.
    pub body_timeout: Duration,
    /// Most open client connections (0: no limit).
    pub max_connections: usize,
    /// Plain listeners also speak HTTP/2 without TLS (prior knowledge).
    pub h2c: bool,
    /// Plain listeners answer every request with a redirect to HTTPS on
    /// this port (the first TLS listener's).
    pub redirect_https: Option<u16>,
    /// The header that carries each request's id upstream (`None`: not sent).
    pub request_id: Option<http::HeaderName>,
}

impl Server {
    /// Whether a peer may tell us the client's address.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// `[[server.tls]]`: certificate and key are PEM files.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// The `Strict-Transport-Security` sent on its responses.
    pub hsts: Option<Hsts>,
}

/// A `Strict-Transport-Security` policy (RFC 6797).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsts {
    /// `max-age`.
    pub max_age: Duration,
    /// `includeSubDomains`: every subdomain is HTTPS-only too.
    pub include_subdomains: bool,
    /// `preload`: the site asks to be in browsers' built-in HSTS lists.
    pub preload: bool,
}

impl Hsts {
    /// The header's value.
    pub fn value(&self) -> String {
        let mut value = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.preload {
            value.push_str("; preload");
        }
        value
    }
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Address of the admin listener, loopback by default.
    pub listen: SocketAddr,
    /// Bearer token required on every admin path but `/healthz`.
    pub token: Option<Secret>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct Log {
    /// Human-readable lines or one JSON object per line.
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people reading a terminal.
    Text,
    /// For log shippers.
    Json,
}

/// `[[upstream]]`: one origin server.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Referenced by routes and shown in logs and metrics.
    pub name: String,
    /// Host name or IP literal, resolved at startup and refreshed in the background.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Speak TLS to the upstream.
    pub tls: bool,
    /// Name sent in the TLS handshake and checked against the certificate.
    pub sni: String,
    /// What the `Host` header sent upstream is.
    pub host_header: HostHeader,
    /// Trust these CA certificates (PEM) instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Check the upstream's certificate; off only for testing.
    pub verify_cert: bool,
    /// Limit on establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit on each read from the upstream (time between bytes, not total).
    pub read_timeout: Duration,
    /// Limit on each write to the upstream.
    pub write_timeout: Duration,
    /// How long an idle upstream connection is kept for reuse.
    pub idle_timeout: Duration,
    /// Speak HTTP/2 to it: offered by ALPN over TLS (HTTP/1.1 if refused),
    /// by prior knowledge without TLS.
    pub h2: bool,
}

/// The `Host` header anteroom sends upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostHeader {
    /// Forward the client's `Host` unchanged.
    Keep,
    /// Replace it with this value.
    Set(String),
}

/// `[[room]]`: a capacity shared by the routes that name it.
#[derive(Debug, Clone)]
pub struct Room {
    /// Referenced by routes; appears in responses, logs and metrics.
    pub name: String,
    /// Most requests (or visitors) inside at once.
    pub capacity: u32,
    /// Visitors who pass without taking a slot.
    pub bypass: Rules,
    /// What happens to newcomers while the store is down.
    pub on_store_error: OnStoreError,
    /// What the capacity counts, with the settings of that kind of room.
    pub kind: RoomKind,
}

impl Room {
    /// What the capacity counts (`mode` in the file).
    pub fn mode(&self) -> RoomMode {
        match self.kind {
            RoomKind::Requests(_) => RoomMode::Requests,
            RoomKind::Sessions(_) => RoomMode::Sessions,
        }
    }

    /// A `sessions` room's settings.
    pub fn sessions(&self) -> Option<&Sessions> {
        match &self.kind {
            RoomKind::Sessions(s) => Some(s),
            RoomKind::Requests(_) => None,
        }
    }

    /// A `requests` room's settings.
    pub fn requests(&self) -> Option<&Requests> {
        match &self.kind {
            RoomKind::Requests(r) => Some(r),
            RoomKind::Sessions(_) => None,
        }
    }
}

/// A room by what its capacity counts: the file's `mode`, with the keys
/// only that mode takes (a key of the other mode is refused).
#[derive(Debug, Clone)]
pub enum RoomKind {
    /// Requests in flight to the upstream (the Gemini case).
    Requests(Requests),
    /// Visitors admitted at once, with a waiting room.
    Sessions(Box<Sessions>),
}

/// Settings of a `requests` room: how requests wait for a slot and what
/// else limits them.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    /// How long a request may wait in line for a free slot before the 503.
    pub max_wait: Duration,
    /// Requests let in per period, evenly spaced.
    pub rate: Option<Rate>,
    /// LLM tokens per minute, from the responses' usage.
    pub tokens: Option<TokenBudget>,
    /// The key whose number is a response's usage (`usage_path`'s last name);
    /// `None`: Gemini's and OpenAI's.
    pub usage_key: Option<String>,
    /// `adaptive = true`: the limit follows the upstream.
    pub adaptive: Option<AdaptiveLimit>,
    /// How waiters take turns.
    pub fair: Fairness,
}

/// Settings of a `sessions` room: how visitors queue, are admitted and leave.
#[derive(Debug, Clone)]
pub struct Sessions {
    /// A pass lapses this long after the visitor's last request.
    pub session_ttl: Duration,
    /// A ticket's lifetime (`[tokens] ticket_ttl`): how long an
    /// `Idempotency-Key` keeps giving the same place.
    pub ticket_ttl: Duration,
    /// Limits per client.
    pub limits: Limits,
    /// A hash puzzle new visitors solve before their ticket counts.
    pub challenge: Option<ProofOfWork>,
    /// What passes and tickets are bound to.
    pub bind: Bind,
    /// A pass lapses this long after admission, however active the visitor.
    pub session_max: Option<Duration>,
    /// New admissions per second (0: unlimited).
    pub admit_rate: f64,
    /// Most visitors waiting (0: unlimited).
    pub max_queue: u32,
    /// How often the waiting page asks for news.
    pub poll_interval: Duration,
    /// A ticket not seen for this long stops counting as ahead of anyone.
    pub heartbeat_timeout: Duration,
    /// A ticket not seen for this long is forgotten.
    pub rejoin_grace: Duration,
    /// How long a slot stays reserved for the visitor at the head of the line.
    pub claim_window: Duration,
    /// How long a new visitor's place waits for them to come back with
    /// their ticket, or their pass (at most `session_ttl`): clients that keep
    /// no tokens take no place.
    pub confirm_window: Duration,
    /// Status of the waiting page.
    pub queue_status: u16,
    /// Initial admission state.
    pub state: State,
    /// Expected visit length, for the wait estimate before there is data.
    pub avg_session: Duration,
    /// Operator's waiting-page template.
    pub page_template: Option<PathBuf>,
    /// A fixed waiting-page language (a code such as `en`); `None` picks one
    /// from the browser's `Accept-Language`.
    pub language: Option<String>,
    /// Path of the pass and ticket cookies.
    pub cookie_path: String,
    /// Visitors in the priority lane.
    pub priority: Rules,
    /// Priority admissions per normal one while both lanes wait.
    pub priority_weight: u32,
    /// Which request counts as a conversion.
    pub conversion: Option<Conversion>,
    /// Only holders of a code (`codes`) may join.
    pub invite_only: bool,
    /// Launches at set times (`[[room.event]]`), in time order, none
    /// overlapping another.
    pub launches: Vec<Launch>,
    /// Invite and priority codes (`[[room.codes]]`).
    pub codes: Vec<Codes>,
}

/// `[[room.event]]`: a launch at a set time. From `prequeue_opens` every
/// visitor is held in a pre-queue; at `starts` the pre-queued are put in
/// line (in a random order with `shuffle`) ahead of later arrivals; at
/// `ends`, if given, the room closes.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// Its name: in the room's events, pages and the published draw.
    pub name: String,
    /// When the pre-queue opens.
    pub prequeue_opens: SystemTime,
    /// When the room opens and the pre-queued are drawn.
    pub starts: SystemTime,
    /// When the room closes by itself (`None`: it stays open).
    pub ends: Option<SystemTime>,
    /// The pre-queued are put in line in a random order (else in arrival order).
    pub shuffle: bool,
    /// The room's capacity while the event runs.
    pub capacity: Option<u32>,
    /// The room's admission rate while the event runs.
    pub admit_rate: Option<f64>,
    /// The waiting page while the event runs.
    pub page_template: Option<PathBuf>,
    /// What the line is told while the event runs.
    pub message: Option<String>,
}

/// `[[room.codes]]`: codes given as a file of their SHA-256 digests (one
/// per line), so that the file leaks no code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes {
    /// The file of digests (read by `assets`).
    pub file: PathBuf,
    /// What a code does for its holder.
    pub lane: CodeLane,
    /// How many times each code may be used (1: single use).
    pub uses: u32,
}

/// What a code does for its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeLane {
    /// A place in the priority lane.
    Priority,
    /// Let in at once.
    Admit,
}

/// `[room.limits]`: what one client may do. 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Tickets one client network may hold at once.
    pub tickets_per_client: u32,
    /// New arrivals from one client network per minute.
    pub arrivals_per_minute: u32,
    /// Status polls per ticket per minute (an event stream's heartbeats
    /// count as polls).
    pub polls_per_minute: u32,
    /// Event streams open at once per ticket, per instance: a newer one
    /// closes the oldest.
    pub streams_per_ticket: u32,
    /// Event streams open at once per client network, per instance: past
    /// it a new one is refused with 429.
    pub streams_per_client: u32,
    /// What the per-client limits do with a client whose address is not
    /// known (a trusted proxy passed on `unknown` or `ip:port`).
    pub unknown_clients: UnknownClients,
    /// Prefix length that makes an IPv4 address a client network.
    pub prefix_v4: u8,
    /// Prefix length that makes an IPv6 address a client network.
    pub prefix_v6: u8,
}

/// `[room.limits] unknown_clients`: the per-client limits of a client whose
/// address a trusted proxy did not pass on as a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownClients {
    /// All unknown clients are one client: they share one allowance.
    #[default]
    Share,
    /// Each is limited by the address that connected (the proxy's).
    Peer,
    /// New arrivals from them are refused (`403 UNKNOWN_CLIENT`).
    Refuse,
}

/// `challenge = "pow"`: a ticket counts once its holder found a nonce
/// whose SHA-256 with the ticket's seed starts with `difficulty` zero bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofOfWork {
    /// Leading zero bits asked for: each one doubles the expected work.
    pub difficulty: u8,
}

/// `bind`: what a pass or ticket is only valid with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bind {
    /// Valid from anywhere (the default).
    #[default]
    None,
    /// Only with the `User-Agent` it was issued to.
    UserAgent,
    /// Only with that `User-Agent`, from that client network.
    UserAgentAndNetwork,
}

/// What a room does when its store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Pass holders keep going; newcomers wait ("temporarily unavailable").
    Closed,
    /// Newcomers are let through unguarded (and counted).
    Open,
}

/// Whether a room admits visitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// Normal operation.
    Active,
    /// No admissions; the line keeps its order.
    Paused,
    /// Everyone gets the maintenance page; nothing is proxied.
    Maintenance,
}

impl State {
    /// The name used in the config file, the admin API and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Paused => "paused",
            State::Maintenance => "maintenance",
        }
    }

    /// Parses the config / admin API spelling.
    pub fn parse(text: &str) -> Option<State> {
        match text {
            "active" => Some(State::Active),
            "paused" => Some(State::Paused),
            "maintenance" => Some(State::Maintenance),
            _ => None,
        }
    }
}

/// Picks visitors out by path, client network or a verified app token.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Path prefixes.
    pub paths: Vec<String>,
    /// Client networks.
    pub cidrs: Vec<ipnet::IpNet>,
    /// Index into `Config::jwts`: a valid app token matches.
    pub jwt: Option<usize>,
}

impl Rules {
    /// Whether the rule can ever match.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.cidrs.is_empty() && self.jwt.is_none()
    }
}

/// A request that completes a visit (e.g. `POST /api/register` answered 2xx).
#[derive(Debug, Clone)]
pub struct Conversion {
    /// Request method.
    pub method: http::Method,
    /// Path prefix.
    pub path_prefix: String,
}

/// `[tokens]`.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// `iss` of every token anteroom signs, and required on every one it accepts.
    pub issuer: String,
    /// RS256 private key (PEM) that signs new tokens.
    pub signing_key: PathBuf,
    /// Its key id; by default the RFC 7638 thumbprint of the public key.
    pub signing_kid: Option<String>,
    /// Older public keys still accepted, so keys can rotate without logging
    /// anyone out: the file and its kid (the thumbprint when not given).
    pub verify_keys: Vec<(PathBuf, Option<String>)>,
    /// Lifetime of a ticket (renewed at half-life while the visitor polls).
    pub ticket_ttl: Duration,
    /// Verified tokens remembered, so a known token costs a lookup, not an RSA verify.
    pub cache_size: usize,
}

/// `[[jwt]]`: the app's own token, verified to recognise logged-in users.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// Referenced by rules.
    pub name: String,
    /// Where the token is.
    pub source: JwtSource,
    /// The only algorithm accepted.
    pub algorithm: jsonwebtoken::Algorithm,
    /// The key that verifies it.
    pub key: JwtKey,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
}

/// Where an app token is carried.
#[derive(Debug, Clone)]
pub enum JwtSource {
    /// In this cookie.
    Cookie(String),
    /// In this header (`Bearer ` is stripped).
    Header(http::HeaderName),
}

/// What verifies an app token.
#[derive(Debug, Clone)]
pub enum JwtKey {
    /// A shared secret (HS256/384/512).
    Secret(Secret),
    /// A public key, PEM (RS*, PS*, ES*, EdDSA).
    PublicKey(PathBuf),
}

/// `[attribution]`: values of `utm_source` and `utm_campaign` counted by
/// name in metrics; all others count as `other`, which bounds cardinality.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    /// Known sources.
    pub sources: Vec<String>,
    /// Known campaigns.
    pub campaigns: Vec<String>,
    /// The site's consent cookie: without it (or with a value not listed)
    /// campaigns are neither recorded nor passed on. `None`: always.
    pub consent: Option<Consent>,
}

/// `consent_cookie` and `consent_values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// The cookie's name.
    pub cookie: String,
    /// The values that mean consent; empty: any value.
    pub values: Vec<String>,
}

/// What a room's capacity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    /// Requests in flight to the upstream (the Gemini case).
    Requests,
    /// Visitors admitted at once.
    Sessions,
}

impl RoomMode {
    /// The name used in the config file and in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Requests => "requests",
            RoomMode::Sessions => "sessions",
        }
    }
}

/// `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Shown in logs and metrics; defaults to host + path prefix.
    pub name: String,
    /// Exact host (`api.example.com`) or suffix wildcard (`*.example.com`), lowercase.
    pub host: Option<String>,
    /// Matches paths that start with it.
    pub path_prefix: String,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Index into `Config::rooms`.
    pub room: Option<usize>,
    /// Visitors who pass this route's room without taking a slot.
    pub bypass: Rules,
    /// `retry_429 = true`: an upstream `429` is held and retried within the
    /// room's `max_wait` (the upstream did not process it).
    pub retry_429: bool,
    /// `path_prefix` matches without regard to ASCII case, for upstreams
    /// that read paths so (IIS, ASP.NET, some Java servers): `/API/x` is
    /// then the route's as `/api/x` is.
    pub case_insensitive: bool,
}

/// A value that must never reach a log line, not even through `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but its values are wrong.
    #[error("{}: {} problem{}:\n{}", path.display(), problems.len(), if problems.len() == 1 { "" } else { "s" }, Problems(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One wrong value: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `room[0].capacity`.
    pub key: String,
    /// What, e.g. `must be at least 1, got 0`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Whether `name` is a valid name of an upstream, room, sink or instance:
/// 1 to 64 letters, digits, '-', '_' or '.' (nothing a subject, a label or
/// JSON would need to escape).
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
