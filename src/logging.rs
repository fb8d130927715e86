//! Log output: `tracing` for anteroom's own lines, with Pingora's `log`
//! records bridged in, as text or one JSON object per line.
//!
//! Lines are written by a background thread, so a request never waits for a
//! write to standard error; nothing is dropped (a full buffer makes the
//! logger wait instead), and `flush` writes what is left before exiting.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
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
    // `try_init` also routes the `log` crate (Pingora) into tracing.
    let installed = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        *WRITER.lock() = Some(guard);
    }
}

/// Writes every buffered line out; call before the process exits.
pub fn flush() {
    FLUSHED.store(true, Ordering::Release);
    drop(WRITER.lock().take());
}
