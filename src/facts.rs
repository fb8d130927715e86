//! The facts of one request, read once when it arrives and used by every
//! decision on it: routing, bypass rules, the gate, attribution, and what is
//! forwarded. Who the client is (its address, trusting `X-Forwarded-For`
//! only from configured proxies), whether it came over TLS, what it asked
//! for and in which form it wants the answer.

use std::net::IpAddr;

use http::header::{ACCEPT, ACCEPT_LANGUAGE, HOST};
use pingora::http::RequestHeader;

use crate::config;

/// What anteroom knows about a request before deciding on it.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The request as received.
    pub req: &'a RequestHeader,
    /// The path it asks for.
    pub path: &'a str,
    /// Its host: the `Host` header, or the authority of an absolute URI.
    pub host: Option<&'a str>,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// Whether the client came over TLS (here or at a trusted proxy in front).
    pub secure: bool,
}

impl<'a> Facts<'a> {
    /// The facts of `req`, which came from `peer`, over TLS or not.
    pub fn new(
        server: &config::Server,
        req: &'a RequestHeader,
        peer: Option<IpAddr>,
        tls: bool,
    ) -> Facts<'a> {
        Facts {
            req,
            path: req.uri.path(),
            host: request_host(req),
            ip: client_ip(server, peer, req),
            secure: is_secure(server, peer, tls, req),
        }
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.req.uri.query()
    }

    /// A browser navigating to a page (as opposed to an API call or a
    /// script): a GET or HEAD that accepts HTML.
    pub fn wants_html(&self) -> bool {
        let req = self.req;
        (req.method == http::Method::GET || req.method == http::Method::HEAD)
            && req
                .headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("text/html"))
    }

    /// The browser's `Accept-Language`.
    pub fn accept_language(&self) -> Option<&'a str> {
        self.req
            .headers
            .get(ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
    }
}

/// The request's host: the `Host` header, or the authority of an absolute URI.
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// The client's address: the connecting peer, or, when that peer is a
/// trusted proxy, the last address in `X-Forwarded-For` that is not.
fn client_ip(server: &config::Server, peer: Option<IpAddr>, req: &RequestHeader) -> Option<IpAddr> {
    let peer = peer?;
    if !server.trusts(peer) {
        return Some(peer);
    }
    let forwarded = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|a| !server.trusts(*a))
            .unwrap_or(peer),
    )
}

/// Whether the client reached anteroom over TLS, directly or (as a trusted
/// proxy says in `X-Forwarded-Proto`) through a proxy in front.
fn is_secure(
    server: &config::Server,
    peer: Option<IpAddr>,
    tls: bool,
    req: &RequestHeader,
) -> bool {
    tls || peer.is_some_and(|p| server.trusts(p))
        && req
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn server(trusted: &[&str]) -> config::Server {
        config::Server {
            listen: vec![],
            tls: vec![],
            threads: 1,
            grace_period: std::time::Duration::ZERO,
            upstream_keepalive_pool: 0,
            work_stealing: true,
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let r = req(&[("x-forwarded-for", "1.2.3.4, 10.0.0.7")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(&server(&[]), Some(peer), &r), Some(peer));
        assert_eq!(
            client_ip(&server(&["10.0.0.0/8"]), Some(peer), &r),
            Some("1.2.3.4".parse().unwrap())
        );
        let spoofed = req(&[("x-forwarded-for", "garbage, 5.6.7.8")]);
        assert_eq!(
            client_ip(&server(&["10.0.0.0/8"]), Some(peer), &spoofed),
            Some("5.6.7.8".parse().unwrap())
        );
    }

    #[test]
    fn tls_from_a_trusted_proxy_only() {
        let r = req(&[("x-forwarded-proto", "https")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!Facts::new(&server(&[]), &r, Some(peer), false).secure);
        assert!(Facts::new(&server(&["10.0.0.0/8"]), &r, Some(peer), false).secure);
        assert!(Facts::new(&server(&[]), &req(&[]), Some(peer), true).secure);
    }

    #[test]
    fn browser_navigation() {
        let facts = |r: &RequestHeader| Facts::new(&server(&[]), r, None, false).wants_html();
        assert!(facts(&req(&[(
            "accept",
            "text/html,application/xhtml+xml"
        )])));
        assert!(!facts(&req(&[("accept", "application/json")])));
        assert!(!facts(&req(&[])));
    }
}
