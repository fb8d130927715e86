//! Test harness: a real anteroom on ephemeral loopback ports in front of a
//! real upstream, stopped deterministically on drop.

pub mod demo;
pub mod nats;
pub mod nginx;
pub mod process;
pub mod redis;
pub mod redis_deployments;
pub mod transport;
pub mod upstream;
pub mod visitor;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

use anteroom::config::{Config, LogFormat};
use anteroom::server::{App, Exit};
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::oneshot;

pub use upstream::TestUpstream;
pub use visitor::Visitor;

/// A signing key pair for this test run, made once by `anteroom keygen`'s code.
pub struct Keys {
    pub private: std::path::PathBuf,
    pub public: std::path::PathBuf,
}

pub fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("keys-{}", std::process::id()));
        let (private, public, _) = anteroom::token::keygen(&dir, 2048, true).unwrap();
        Keys { private, public }
    })
}

/// Where a test's state lives: the memory store, a redis-server the test
/// started (on this port), or the Redis Cluster the whole run shares. Each
/// scenario is run on the stores `each_store!` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Memory,
    Redis(u16),
    Cluster,
}

impl Store {
    /// For a store instances share: the `[tokens]` and `[store]` every
    /// instance needs, under `prefix`, with `extra` store keys (`None` for
    /// the memory store, which no two instances share).
    pub fn shared_toml(&self, prefix: &str, extra: &str) -> Option<String> {
        let store = match self {
            Store::Memory => return None,
            Store::Redis(port) => format!("url = \"redis://127.0.0.1:{port}/0\""),
            Store::Cluster => format!(
                "cluster_nodes = {:?}",
                redis_deployments::RedisCluster::shared().urls()
            ),
        };
        Some(format!(
            "[tokens]\nsigning_key = \"{}\"\n\n[store]\nbackend = \"redis\"\n{store}\nkey_prefix = \"{prefix}\"\n{extra}\n",
            keys().private.display(),
        ))
    }

    /// The `[store]` table for a proxy on this store, with a fast sweeper
    /// for tests.
    pub fn store_toml(&self) -> String {
        match self {
            Store::Memory => {
                "[store]\nbackend = \"memory\"\nsweep_interval = \"50ms\"\n".to_owned()
            }
            Store::Cluster => format!(
                "[store]\nbackend = \"redis\"\ncluster_nodes = {:?}\nkey_prefix = \"t{:x}\"\nsweep_interval = \"50ms\"\ntouch_interval = \"1s\"\nlease = \"1s\"\ntimeout = \"300ms\"\n",
                redis_deployments::RedisCluster::shared().urls(),
                rand::random::<u32>()
            ),
            Store::Redis(port) => format!(
                "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = \"t{:x}\"\nsweep_interval = \"50ms\"\ntouch_interval = \"1s\"\nlease = \"1s\"\ntimeout = \"300ms\"\n",
                rand::random::<u32>()
            ),
        }
    }
}

/// A config with one sessions room "web" guarding every path of `upstream`.
/// `room` adds keys to the `[[room]]` table (capacity is required);
/// `after` is appended at the end (e.g. `[route.bypass]`, more tables).
pub fn waiting_room_config(
    upstream: &TestUpstream,
    store: Store,
    room: &str,
    after: &str,
) -> String {
    waiting_room_config_for(&upstream.addr.to_string(), store, room, after)
}

/// `waiting_room_config` in front of the upstream at `address`.
pub fn waiting_room_config_for(address: &str, store: Store, room: &str, after: &str) -> String {
    format!(
        r#"
[tokens]
signing_key = "{key}"

{store}
[[upstream]]
name = "app"
address = "{addr}"

[[room]]
name = "web"
mode = "sessions"
{room}

[[route]]
path_prefix = "/"
upstream = "app"
room = "web"
{after}
"#,
        key = keys().private.display(),
        store = store.store_toml(),
        addr = address,
    )
}

/// A port that was free a moment ago and that no other test of this run
/// was given (the kernel readily hands a just-released port out again).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads from a raw connection until `needle` has arrived (5 s at most).
pub async fn read_until(tcp: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{needle:?} did not arrive; got {:?}",
                    String::from_utf8_lossy(&seen)
                )
            })
            .unwrap();
        assert!(n > 0, "connection closed before {needle:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// An HTTP client that never goes through a system proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        // No system roots to load: tests speak TLS only with their own certificates.
        .tls_certs_only([])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A client that speaks HTTP/2 without TLS from its first byte (h2c, prior
/// knowledge), as `client` otherwise.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([])
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// `GET url` as JSON.
pub async fn get_json(url: String) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET url` as text.
pub async fn get_text(url: String) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

struct TestSignal(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for TestSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// One series of anteroom's `/metrics`, picked as linkerd's tests pick
/// them: `metric("anteroom_room_admitted_total").label("room", "web")`,
/// then `.value(&scrape)` or `.of(&scrape)`. The scrape is parsed
/// (`prometheus-parse`), so a check can neither match a prefix of another
/// series nor depend on the order labels are written in.
#[derive(Debug, Clone)]
pub struct Metric {
    name: String,
    labels: Vec<(String, String)>,
}

/// The series named `name` (add its labels with [`Metric::label`]).
pub fn metric(name: &str) -> Metric {
    Metric {
        name: name.to_owned(),
        labels: Vec::new(),
    }
}

impl Metric {
    /// Only the samples with this label value.
    pub fn label(mut self, key: &str, value: impl ToString) -> Metric {
        self.labels.push((key.to_owned(), value.to_string()));
        self
    }

    /// Its value in a scrape: `None` when no sample has these labels. More
    /// than one matching sample is a mistake in the test (labels missing).
    pub fn value(&self, scrape: &str) -> Option<f64> {
        let lines = scrape.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("a Prometheus scrape");
        let mut found = parsed.samples.iter().filter(|s| self.matches(s));
        let sample = found.next()?;
        assert!(found.next().is_none(), "{self:?} matches several series");
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => panic!("{self:?} is not a counter or gauge"),
        }
    }

    /// The sum over every sample with these labels (the others free).
    pub fn sum(&self, scrape: &str) -> f64 {
        let lines = scrape.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("a Prometheus scrape");
        parsed
            .samples
            .iter()
            .filter(|s| self.matches(s))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("{self:?} is not a counter or gauge"),
            })
            .sum()
    }

    fn matches(&self, s: &prometheus_parse::Sample) -> bool {
        s.metric == self.name
            && self
                .labels
                .iter()
                .all(|(k, v)| s.labels.get(k) == Some(v.as_str()))
    }

    /// Its value in a scrape, 0 when absent (a series not yet written).
    pub fn of(&self, scrape: &str) -> f64 {
        self.value(scrape).unwrap_or(0.0)
    }
}

/// A running anteroom.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestProxy {
    /// Starts anteroom in front of `upstream` with one waiting room "web" of
    /// capacity 1 on the memory store.
    pub async fn one_place(upstream: &TestUpstream) -> TestProxy {
        Self::start(&waiting_room_config(
            upstream,
            Store::Memory,
            "capacity = 1",
            "",
        ))
        .await
    }

    /// Starts anteroom with this config. Unless the text has its own
    /// `[server]` and `[admin]` tables, they are added with free ports.
    pub async fn start(toml: &str) -> TestProxy {
        Self::start_with("", toml).await
    }

    /// Like `start`, with extra keys in the generated `[server]` table.
    pub async fn start_with(server_keys: &str, toml: &str) -> TestProxy {
        let (public, admin) = (free_port(), free_port());
        let mut text = String::new();
        if !toml.contains("[server]") {
            text += &format!(
                "[server]\nlisten = [\"127.0.0.1:{public}\"]\nthreads = 2\ngrace_period = \"1s\"\n{server_keys}\n"
            );
        }
        if !toml.contains("[admin]") {
            text += &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
        }
        text += toml;
        let config =
            Config::from_toml(&text, Path::new("<test>")).unwrap_or_else(|e| panic!("{e}"));
        Self::start_config(config).await
    }

    /// Starts anteroom with a config built by the test.
    pub async fn start_config(config: Config) -> TestProxy {
        static LOG: Once = Once::new();
        LOG.call_once(|| {
            anteroom::logging::init(&anteroom::config::Log {
                format: LogFormat::Text,
                level: "warn".into(),
            })
        });
        let addr = config.server.listen[0];
        let admin = config.admin.listen;
        let (stop, rx) = oneshot::channel();
        let app =
            tokio::task::spawn_blocking(move || App::build(&config, Exit::AfterGracePeriod, false))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}"));
        let thread =
            std::thread::spawn(move || app.run_until(Box::new(TestSignal(Mutex::new(Some(rx))))));
        let proxy = TestProxy {
            addr,
            admin,
            stop: Some(stop),
            thread: Some(thread),
        };
        eventually(Duration::from_secs(10), || async {
            let public = tokio::net::TcpStream::connect(addr).await.is_ok();
            let admin = tokio::net::TcpStream::connect(admin).await.is_ok();
            (public && admin).then_some(())
        })
        .await;
        proxy
    }

    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `/__anteroom/capacity` of a room.
    pub async fn capacity(&self, room: &str) -> serde_json::Value {
        get_json(self.url(&format!("/__anteroom/capacity?room={room}"))).await
    }

    /// A new visitor with no tokens.
    pub fn visitor(&self) -> Visitor {
        Visitor::new(format!("http://{}", self.addr))
    }

    /// `GET /admin/rooms/{name}` (no admin token in tests).
    pub async fn admin_room(&self, room: &str) -> serde_json::Value {
        get_json(self.admin_url(&format!("/admin/rooms/{room}"))).await
    }

    /// `PATCH /admin/rooms/{name}`.
    pub async fn patch_room(&self, room: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = client()
            .patch(self.admin_url(&format!("/admin/rooms/{room}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        get_text(self.admin_url("/metrics")).await
    }

    /// Waits until a room has no slot in use and nobody waiting.
    pub async fn wait_room_idle(&self, room: &str) {
        eventually(Duration::from_secs(10), || async {
            let c = self.capacity(room).await;
            (c["inUse"] == 0 && c["waiting"] == 0).then_some(())
        })
        .await;
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs each named scenario `async fn name(store: Store)` on the memory
/// store (`memory::name`) and on a redis-server of its own (`redis::name`);
/// after `with_cluster:`, on the shared Redis Cluster too
/// (`redis_cluster::name`).
#[macro_export]
macro_rules! each_store {
    (with_cluster: $($name:ident),* $(,)?) => {
        $crate::each_store!($($name),*);
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Store::Cluster).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Store::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = $crate::common::redis::RedisServer::start();
                    super::$name($crate::common::Store::Redis(server.port)).await;
                }
            )*
        }
    };
}
