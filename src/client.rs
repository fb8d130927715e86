//! Facts about the client that sent a request: its address (trusting
//! `X-Forwarded-For` only from configured proxies), whether it connected
//! securely, and whether it is a browser navigating.

use std::net::IpAddr;

use http::header::ACCEPT;
use pingora::http::RequestHeader;

use crate::config;

/// The client's address: the connecting peer, or, when that peer is a
/// trusted proxy, the last address in `X-Forwarded-For` that is not.
pub fn ip(server: &config::Server, peer: Option<IpAddr>, req: &RequestHeader) -> Option<IpAddr> {
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
pub fn is_secure(
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

/// A browser navigating to a page (as opposed to an API call or a script):
/// a GET or HEAD that accepts HTML.
pub fn wants_html(req: &RequestHeader) -> bool {
    (req.method == http::Method::GET || req.method == http::Method::HEAD)
        && req
            .headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
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
        assert_eq!(ip(&server(&[]), Some(peer), &r), Some(peer));
        assert_eq!(
            ip(&server(&["10.0.0.0/8"]), Some(peer), &r),
            Some("1.2.3.4".parse().unwrap())
        );
        let spoofed = req(&[("x-forwarded-for", "garbage, 5.6.7.8")]);
        assert_eq!(
            ip(&server(&["10.0.0.0/8"]), Some(peer), &spoofed),
            Some("5.6.7.8".parse().unwrap())
        );
    }

    #[test]
    fn browser_navigation() {
        assert!(wants_html(&req(&[(
            "accept",
            "text/html,application/xhtml+xml"
        )])));
        assert!(!wants_html(&req(&[("accept", "application/json")])));
        assert!(!wants_html(&req(&[])));
    }
}
