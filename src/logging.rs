//! Log output: `tracing` for anteroom's own lines, with Pingora's `log`
//! records bridged in, as text or one JSON object per line.

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the
/// configured level. Calling it again (tests, demo after run) is harmless.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` also routes the `log` crate (Pingora) into tracing.
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
