//! Reloading the config while running (SIGHUP, `POST /admin/reload`). The
//! file is read and checked exactly as at startup; if anything is wrong,
//! every problem is logged and the running config stays. Otherwise a new
//! [`Site`] is built beside the running one and swapped in for the requests
//! that start from then on, the store adopts the new rooms (keeping their
//! lines and sessions), and the TLS certificates and log level follow.
//! Listeners, worker threads, connection limits and the store backend are
//! fixed for the life of the process: a change to them is reported and takes
//! effect at the next restart or upgrade.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounterVec, IntGauge, Registry};
use serde::Serialize;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use tokio::sync::Notify;

use crate::assets::Assets;
use crate::config::{Backend, Config, ConfigError, Problem};
use crate::logging;
use crate::metrics;
use crate::proxy::site::{Current, Shared, Site};
use crate::server::setup::SetupError;
use crate::server::tls::Certificate;

/// The outcome of the last reload, for `/admin/config`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// Unix time of the attempt, in seconds.
    pub at: u64,
    /// What asked for it: `SIGHUP` or `admin`.
    pub trigger: &'static str,
    /// `ok` or `failed`.
    pub result: &'static str,
    /// The generation in force afterwards.
    pub generation: u64,
    /// What was wrong (a failed reload).
    pub problems: Vec<String>,
    /// Changed keys that take effect only at the next restart or upgrade.
    pub restart_needed: Vec<String>,
}

/// Counts reloads and shows which config is loaded.
struct ReloadMetrics {
    reloads: IntCounterVec,
    loaded_at: IntGauge,
    generation: IntGauge,
}

impl ReloadMetrics {
    fn register(registry: &Registry) -> Result<ReloadMetrics, prometheus::Error> {
        let reloads = metrics::counter(
            registry,
            "config_reloads_total",
            "Config reloads, by result (ok, failed: the running config stayed).",
            &["result"],
        )?;
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        let gauge = |name, help| metrics::gauge(registry, name, help);
        Ok(ReloadMetrics {
            reloads,
            loaded_at: gauge(
                "config_loaded_timestamp_seconds",
                "Unix time at which the config in force was loaded.",
            )?,
            generation: gauge(
                "config_generation",
                "Generation of the config in force: 1 at start, one more per reload.",
            )?,
        })
    }

    fn show(&self, site: &Site) {
        self.generation
            .set(i64::try_from(site.generation).unwrap_or(i64::MAX));
        self.loaded_at.set(unix_secs(site.loaded_at) as i64);
    }
}

/// Reloads the config file the process was started with.
pub struct Reloader {
    path: PathBuf,
    current: Arc<Current>,
    shared: Arc<Shared>,
    certificates: Vec<(SocketAddr, Arc<Certificate>)>,
    metrics: ReloadMetrics,
    last: Mutex<Option<Attempt>>,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader of `path` (the file `current` was loaded from); the TLS
    /// listeners' certificates are replaced at each reload.
    pub fn new(
        path: PathBuf,
        current: Arc<Current>,
        shared: Arc<Shared>,
        certificates: Vec<(SocketAddr, Arc<Certificate>)>,
        registry: &Registry,
    ) -> Result<Reloader, prometheus::Error> {
        let metrics = ReloadMetrics::register(registry)?;
        metrics.show(&current.load());
        Ok(Reloader {
            path,
            current,
            shared,
            certificates,
            metrics,
            last: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The site in force.
    pub fn current(&self) -> &Arc<Current> {
        &self.current
    }

    /// The outcome of the last reload, if there was one.
    pub fn last(&self) -> Option<Attempt> {
        self.last.lock().clone()
    }

    /// Reads, checks and applies the file; on any problem the running
    /// config stays and every problem is logged.
    pub async fn reload(&self, trigger: &'static str) -> Attempt {
        let _one = self.running.lock().await;
        let attempt = match self.apply().await {
            Ok((generation, restart_needed)) => {
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                for key in &restart_needed {
                    tracing::warn!(key = %key, "changed, but takes effect only at the next restart or upgrade");
                }
                tracing::info!(
                    trigger,
                    generation,
                    file = %self.path.display(),
                    "config reloaded"
                );
                Attempt {
                    at: unix_secs(SystemTime::now()),
                    trigger,
                    result: "ok",
                    generation,
                    problems: Vec::new(),
                    restart_needed,
                }
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["failed"]).inc();
                let problems = e.problems();
                for p in &problems {
                    tracing::error!(
                        trigger,
                        file = %self.path.display(),
                        key = %p.key,
                        problem = %p.message,
                        "config reload refused; the running config stays"
                    );
                }
                Attempt {
                    at: unix_secs(SystemTime::now()),
                    trigger,
                    result: "failed",
                    generation: self.current.generation(),
                    problems: problems.iter().map(ToString::to_string).collect(),
                    restart_needed: Vec::new(),
                }
            }
        };
        *self.last.lock() = Some(attempt.clone());
        attempt
    }

    async fn apply(&self) -> Result<(u64, Vec<String>), SetupError> {
        let previous = self.current.load();
        let (path, shared, before) = (
            self.path.clone(),
            Arc::clone(&self.shared),
            Arc::clone(&previous),
        );
        // Reading files and resolving upstream names block: off the runtime.
        let site = tokio::task::spawn_blocking(move || -> Result<Site, SetupError> {
            let config = Arc::new(Config::load(&path)?);
            let assets = Assets::load(&config)?;
            Ok(Site::build(config, assets, &shared, Some(&before))?)
        })
        .await
        .map_err(|e| SetupError::Internal(e.to_string()))??;
        let config = Arc::clone(&site.config);
        // Every certificate is read before any is replaced.
        let mut fresh = Vec::new();
        for tls in &config.server.tls {
            if let Some((_, certificate)) = self.certificates.iter().find(|(a, _)| *a == tls.listen)
            {
                let key = crate::server::tls::read(&tls.cert, &tls.key).map_err(|reason| {
                    SetupError::Tls {
                        addr: tls.listen,
                        reason,
                    }
                })?;
                fresh.push((Arc::clone(certificate), key));
            }
        }
        logging::set_level(&config.log.level).map_err(|reason| {
            SetupError::Config(ConfigError::Invalid {
                path: self.path.clone(),
                problems: vec![Problem {
                    key: "log.level".to_owned(),
                    message: reason,
                }],
            })
        })?;
        for (certificate, key) in fresh {
            certificate.replace(key);
        }
        let restart_needed = restart_needed(&previous.config, &config);
        let (sessions, requests) = site.rooms.layout();
        self.shared.store.configure(&sessions, &requests);
        let generation = site.generation;
        self.metrics.show(&site);
        self.current.replace(site);
        // A shared store learns the new rooms now; if it does not answer,
        // the keeper writes them when it does.
        if let Err(e) = self.shared.store.prepare().await {
            tracing::warn!(error = %e, "store not reachable; the reloaded rooms are written when it is");
        }
        Ok((generation, restart_needed))
    }
}

/// Reloads on every SIGHUP (what `systemctl reload` and a closed terminal
/// send): the process never dies of one.
pub struct Hangups {
    reloader: Arc<Reloader>,
    received: Arc<Notify>,
}

impl Hangups {
    /// Installs the SIGHUP handler now, before anything listens, so that a
    /// reload sent as soon as the process answers cannot end it (the default
    /// action of SIGHUP). A thread of its own turns each signal into a reload.
    pub fn install(reloader: Arc<Reloader>) -> std::io::Result<Hangups> {
        let received = Arc::new(Notify::new());
        let mut signals = Signals::new([SIGHUP])?;
        let notify = Arc::clone(&received);
        std::thread::Builder::new()
            .name("anteroom-sighup".to_owned())
            .spawn(move || {
                for _ in signals.forever() {
                    // A permit is kept if no reload is waiting: none is lost.
                    notify.notify_one();
                }
            })?;
        Ok(Hangups { reloader, received })
    }
}

#[async_trait]
impl BackgroundService for Hangups {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = self.received.notified() => {
                    self.reloader.reload("SIGHUP").await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The keys whose change needs a restart (or an upgrade), if they changed.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.server, &new.server);
    let tls = |s: &crate::config::Server| s.tls.iter().map(|t| t.listen).collect::<Vec<_>>();
    let backend = |c: &Config| match &c.store.backend {
        Backend::Memory => "memory".to_owned(),
        Backend::Redis(r) => format!("redis {} {}", r.deployment.describe(), r.key_prefix),
    };
    [
        ("server.listen", o.listen != n.listen),
        ("server.tls[].listen", tls(o) != tls(n)),
        ("server.threads", o.threads != n.threads),
        ("server.work_stealing", o.work_stealing != n.work_stealing),
        ("server.upgrade_sock", o.upgrade_sock != n.upgrade_sock),
        ("server.grace_period", o.grace_period != n.grace_period),
        (
            "server.upstream_keepalive_pool",
            o.upstream_keepalive_pool != n.upstream_keepalive_pool,
        ),
        (
            "server.header_timeout",
            o.header_timeout != n.header_timeout,
        ),
        (
            "server.keepalive_timeout",
            o.keepalive_timeout != n.keepalive_timeout,
        ),
        (
            "server.max_connections",
            o.max_connections != n.max_connections,
        ),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("log.format", old.log.format != new.log.format),
        ("store", backend(old) != backend(new)),
        (
            "store.sweep_interval",
            old.store.sweep_interval != new.store.sweep_interval,
        ),
        ("events", old.events != new.events),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key.to_owned())
    .collect()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
