//! The floor anteroom is measured against: a minimal Pingora 0.9 passthrough
//! proxy (one `HttpPeer` per request), built from the same Pingora version as
//! anteroom, with the same upstream timeouts as anteroom's defaults (a timer
//! per read and write is part of any proxy one would deploy).
//!
//! usage: plain-pingora LISTEN UPSTREAM THREADS
#![allow(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;

/// The same allocator as anteroom, so the comparison is about the proxy logic.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Passthrough {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(Duration::from_secs(5));
        o.total_connection_timeout = Some(Duration::from_secs(5));
        o.read_timeout = Some(Duration::from_secs(60));
        o.write_timeout = Some(Duration::from_secs(60));
        o.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, threads] = args.as_slice() else {
        eprintln!("usage: plain-pingora LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    };
    let (Ok(upstream), Ok(threads)) = (upstream.parse(), threads.parse()) else {
        eprintln!("UPSTREAM must be IP:port and THREADS a number");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, Passthrough { upstream });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
