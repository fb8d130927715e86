//! Log output: `tracing` for anteroom's own lines, with Pingora's `log`
//! records bridged in (the routine ones that clients cause counted and
//! demoted to debug), as text or one JSON object per line.
//!
//! Lines are written by a background thread, so a request never waits for a
//! write to standard error; nothing is dropped (a full buffer makes the
//! logger wait instead), and `flush` writes what is left before exiting.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use prometheus::IntCounter;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_log::{AsLog, LogTracer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::EitherWriter;

use crate::config::{Log, LogFormat};

/// Keeps the background writer alive; dropping it writes what is buffered.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Set by `flush`: from then on lines go straight to standard error, so
/// what other threads log while the process exits is written, not refused.
static FLUSHED: AtomicBool = AtomicBool::new(false);

/// The background writer until `flush`, standard error after it.
struct Output(NonBlocking);

impl<'a> MakeWriter<'a> for Output {
    type Writer = EitherWriter<NonBlocking, std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        if FLUSHED.load(Ordering::Acquire) {
            EitherWriter::B(std::io::stderr())
        } else {
            EitherWriter::A(self.0.clone())
        }
    }
}

/// Changes the level of the installed subscriber (a reload's `[log] level`).
type SetLevel = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the
/// configured level. Calling it again (tests) is harmless.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("anteroom-log")
        .finish(std::io::stderr());
    // Colours only for a person at a terminal, never into files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(Output(writer));
    let installed = match log.format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let set: SetLevel = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
            let _ = SET_LEVEL.set(set);
            tracing::subscriber::set_global_default(builder.finish())
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            let set: SetLevel = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
            let _ = SET_LEVEL.set(set);
            tracing::subscriber::set_global_default(builder.finish())
        }
    };
    if installed.is_ok() {
        *WRITER.lock() = Some(guard);
        // Pingora logs through the `log` crate: its records come into tracing here.
        if log::set_boxed_logger(Box::new(Bridge(LogTracer::new()))).is_ok() {
            log::set_max_level(tracing::level_filters::LevelFilter::current().as_log());
        }
    }
}

/// Applies a reloaded `[log] level` (unless `RUST_LOG` decides the level).
pub fn set_level(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    if let Some(set) = SET_LEVEL.get() {
        set(filter)?;
        log::set_max_level(tracing::level_filters::LevelFilter::current().as_log());
    }
    Ok(())
}

/// What clients cause all the time, and Pingora logs as errors: counted,
/// and logged at debug, so that a scanner cannot flood the error log.
pub struct Routine {
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// Clients that hung up (or were cut off) before their request was done.
    pub client_disconnects: IntCounter,
    /// HTTP/2 connections that ended before their preface and settings
    /// (TLS health checks, scanners, browsers' unused pre-connects).
    pub http2_handshake_failures: IntCounter,
}

/// The routine counters of this process (registered by `connections`).
pub fn routine() -> &'static Routine {
    static ROUTINE: OnceLock<Routine> = OnceLock::new();
    ROUTINE.get_or_init(|| {
        #[expect(clippy::expect_used, reason = "the names below are valid metric names")]
        fn counter(name: &str, help: &str) -> IntCounter {
            IntCounter::new(name, help).expect("a valid metric name")
        }
        Routine {
            tls_handshake_failures: counter(
                "tls_handshake_failures_total",
                "TLS handshakes with clients that failed or timed out.",
            ),
            client_disconnects: counter(
                "client_disconnects_total",
                "Requests whose client hung up, or was cut off, before the request was done.",
            ),
            http2_handshake_failures: counter(
                "http2_handshake_failures_total",
                "HTTP/2 connections (ALPN h2 or h2c) that ended before their preface and settings: health checks, scanners, unused pre-connects.",
            ),
        }
    })
}

/// The `log` records Pingora writes for what clients cause every day:
/// (where, how the message starts, what counts it).
fn routine_kind(record: &log::Record<'_>) -> Option<&'static IntCounter> {
    let r = routine();
    let routine: [(&str, &str, &'static IntCounter); 4] = [
        (
            "pingora_core::services::listening",
            "Downstream handshake",
            &r.tls_handshake_failures,
        ),
        (
            "pingora_core::apps",
            "H2 handshake error",
            &r.http2_handshake_failures,
        ),
        (
            "pingora_proxy",
            "Fail to proxy: Downstream",
            &r.client_disconnects,
        ),
        (
            "pingora_proxy",
            "failed to send error response to downstream",
            &r.client_disconnects,
        ),
    ];
    let target = record.target();
    let mut message = None;
    for (module, prefix, counter) in routine {
        if target.starts_with(module) {
            let text = message.get_or_insert_with(|| record.args().to_string());
            if text.starts_with(prefix) {
                return Some(counter);
            }
        }
    }
    None
}

/// Routes Pingora's `log` records into tracing, routine ones demoted to debug.
struct Bridge(LogTracer);

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() > log::Level::Warn {
            return self.0.log(record);
        }
        match routine_kind(record) {
            None => self.0.log(record),
            Some(counter) => {
                counter.inc();
                self.0.log(
                    &log::Record::builder()
                        .args(*record.args())
                        .level(log::Level::Debug)
                        .target(record.target())
                        .module_path(record.module_path())
                        .file(record.file())
                        .line(record.line())
                        .build(),
                );
            }
        }
    }

    fn flush(&self) {}
}

/// Writes every buffered line out; call before the process exits.
pub fn flush() {
    FLUSHED.store(true, Ordering::Release);
    drop(WRITER.lock().take());
}
