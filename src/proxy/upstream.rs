//! Upstreams as Pingora peers: built once from the config, with their names
//! resolved at startup and refreshed in the background, so that the request
//! path never waits for DNS (Pingora's `HttpPeer::new` would resolve, and
//! panic on failure, on every call).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

use crate::config::{self, HostHeader};

/// How often host names are looked up again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// Why an upstream could not be set up at startup.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The host name did not resolve.
    #[error("upstream {name:?}: cannot resolve {host}:{port}: {reason}")]
    Resolve {
        /// Upstream name.
        name: String,
        /// Host that failed.
        host: String,
        /// Port.
        port: u16,
        /// Resolver's answer.
        reason: String,
    },
    /// The CA file is not a usable PEM bundle.
    #[error("upstream {name:?}: ca_file {}: {reason}", path.display())]
    CaFile {
        /// Upstream name.
        name: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// One upstream, ready to hand Pingora a peer per request.
#[derive(Debug)]
pub struct Upstream {
    /// As configured.
    pub config: config::Upstream,
    template: HttpPeer,
    addrs: RwLock<Arc<[SocketAddr]>>,
    next: AtomicUsize,
    /// The host is a name, re-resolved in the background.
    dns: bool,
}

impl Upstream {
    /// Resolves the address and loads the CA file; blocking, for startup.
    pub fn build(cfg: &config::Upstream) -> Result<Upstream, UpstreamError> {
        let addrs = resolve_blocking(cfg)?;
        let mut template = HttpPeer::new(addrs[0], cfg.tls, cfg.sni.clone());
        let o = &mut template.options;
        o.connection_timeout = Some(cfg.connect_timeout);
        o.total_connection_timeout = Some(cfg.connect_timeout);
        o.read_timeout = Some(cfg.read_timeout);
        o.write_timeout = Some(cfg.write_timeout);
        o.idle_timeout = Some(cfg.idle_timeout);
        o.verify_cert = cfg.verify_cert;
        o.verify_hostname = cfg.verify_cert;
        if cfg.h2 {
            // Over TLS, h2 offered by ALPN with HTTP/1.1 as the fallback;
            // without TLS there is nothing to negotiate with: h2 only.
            o.set_http_version(2, if cfg.tls { 1 } else { 2 });
        }
        if let Some(path) = &cfg.ca_file {
            o.ca = Some(load_ca(path).map_err(|reason| UpstreamError::CaFile {
                name: cfg.name.clone(),
                path: path.clone(),
                reason,
            })?);
        }
        Ok(Upstream {
            config: cfg.clone(),
            template,
            addrs: RwLock::new(addrs.into()),
            next: AtomicUsize::new(0),
            dns: cfg.host.parse::<std::net::IpAddr>().is_err(),
        })
    }

    /// The peer for one request; several addresses are used in turn.
    pub fn peer(&self) -> Box<HttpPeer> {
        let mut peer = self.template.clone();
        if !self.needs_dns() {
            return Box::new(peer);
        }
        let addrs = Arc::clone(&self.addrs.read());
        if addrs.len() > 1 {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
            peer._address = PeerAddr::Inet(addrs[i]);
        } else if let Some(addr) = addrs.first() {
            peer._address = PeerAddr::Inet(*addr);
        }
        Box::new(peer)
    }

    /// The `Host` header to send upstream, if it replaces the client's.
    pub fn host_header(&self) -> Option<&str> {
        match &self.config.host_header {
            HostHeader::Keep => None,
            HostHeader::Set(h) => Some(h),
        }
    }

    fn needs_dns(&self) -> bool {
        self.dns
    }

    async fn refresh(&self) {
        let cfg = &self.config;
        match tokio::net::lookup_host((cfg.host.as_str(), cfg.port)).await {
            Ok(found) => {
                let found: Vec<SocketAddr> = found.collect();
                if !found.is_empty() && found[..] != self.addrs.read()[..] {
                    tracing::info!(upstream = %cfg.name, addrs = ?found, "upstream address changed");
                    *self.addrs.write() = found.into();
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %cfg.name, host = %cfg.host, error = %e, "upstream did not resolve; keeping the last known addresses");
            }
        }
    }
}

fn resolve_blocking(cfg: &config::Upstream) -> Result<Vec<SocketAddr>, UpstreamError> {
    let error = |reason: String| UpstreamError::Resolve {
        name: cfg.name.clone(),
        host: cfg.host.clone(),
        port: cfg.port,
        reason,
    };
    let addrs: Vec<SocketAddr> = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| error(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(error("no addresses".to_owned()));
    }
    Ok(addrs)
}

fn load_ca(path: &Path) -> Result<Arc<[WrappedX509]>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = item.map_err(|e| format!("not PEM: {e}"))?.to_vec();
        let cert = WrappedX509::try_new(der, |der| {
            x509_parser::parse_x509_certificate(der).map(|(_, cert)| cert)
        })
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".to_owned());
    }
    Ok(certs.into())
}

/// Looks host names up again every [`RESOLVE_INTERVAL`], keeping the last
/// good answer when the resolver fails.
pub struct Resolver {
    /// The upstreams of the config in force.
    upstreams: Box<dyn Fn() -> Vec<Arc<Upstream>> + Send + Sync>,
}

impl Resolver {
    /// A resolver of the upstreams `upstreams` gives at each round (those
    /// given by IP address are skipped).
    pub fn new(upstreams: impl Fn() -> Vec<Arc<Upstream>> + Send + Sync + 'static) -> Resolver {
        Resolver {
            upstreams: Box::new(upstreams),
        }
    }
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(RESOLVE_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for u in (self.upstreams)().iter().filter(|u| u.needs_dns()) {
                        u.refresh().await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
