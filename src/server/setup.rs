//! Why a config could not be put in force, at start or at a reload: one
//! error type for both, so that the same problem reads the same whether
//! the process refuses to start or keeps its running config.

use std::net::SocketAddr;

use crate::config::{ConfigError, Problem};
use crate::events::bus::SinkError;
use crate::proxy::site::AssemblyError;
use crate::proxy::upstream::UpstreamError;
use crate::store::StoreError;
use crate::store::state_file::StateError;

/// Why a config could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The file, or a file it names, has problems.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener address cannot be bound (in use, or not an address of this host).
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// Config key of the listener.
        key: String,
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The request path could not be assembled (an upstream, metrics).
    #[error(transparent)]
    Assembly(#[from] AssemblyError),
    /// An upstream could not be set up (its name does not resolve, its CA file is bad).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A TLS listener's certificate or key cannot be used.
    #[error("server.tls listener {addr}: {reason}")]
    Tls {
        /// The listener.
        addr: SocketAddr,
        /// What is wrong.
        reason: String,
    },
    /// Metrics could not be registered (a bug, not a config problem).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The store's state on disk could not be read back.
    #[error(transparent)]
    State(#[from] StateError),
    /// The store could not be set up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The SIGHUP handler could not be installed.
    #[error("cannot install the SIGHUP handler: {0}")]
    Signals(std::io::Error),
    /// An event sink's dead-letter directory could not be made.
    #[error("events: dead_letter_dir {}: {source}", dir.display())]
    DeadLetters {
        /// The directory.
        dir: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// An event sink could not be set up.
    #[error("events: sink {name:?}: {source}")]
    Sink {
        /// The sink's name.
        name: String,
        /// Why.
        source: SinkError,
    },
    /// The reload itself failed (a bug, not a config problem).
    #[error("reload failed: {0}")]
    Internal(String),
}

impl SetupError {
    /// Every problem, with its key where there is one.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            SetupError::Config(ConfigError::Invalid { problems, .. }) => problems.clone(),
            other => vec![Problem {
                key: match other {
                    SetupError::Tls { .. } => "server.tls".to_owned(),
                    SetupError::Upstream(_) => "upstream".to_owned(),
                    SetupError::Bind { key, .. } => key.clone(),
                    _ => "-".to_owned(),
                },
                message: other.to_string(),
            }],
        }
    }
}
