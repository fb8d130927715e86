//! The facts of one request, read once when it arrives and used by every
//! decision on it and by what is forwarded: its canonical path and host
//! (`canonical`), who the client is (its address, trusting
//! `X-Forwarded-For` only from configured proxies), whether it came over
//! TLS, and in which form it wants an answer. A request whose target or
//! host is ambiguous has no facts: it is refused with `400`.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{ACCEPT, ACCEPT_LANGUAGE, HOST};
use pingora::http::RequestHeader;

use crate::config;
use crate::request::canonical::{self, Host, Refusal, Target};

/// What anteroom knows about a request before deciding on it.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The request as received.
    pub req: &'a RequestHeader,
    /// The canonical path: what is decided on and what is forwarded.
    pub path: Cow<'a, str>,
    /// The query, without `?`.
    pub query: Option<&'a str>,
    /// The host the request is for, canonical.
    pub host: Option<Host<'a>>,
    /// The client's address: the peer, or what trusted proxies say; `None`
    /// when a trusted proxy passed on something that is not an address.
    pub ip: Option<IpAddr>,
    /// The connecting peer.
    pub peer: Option<IpAddr>,
    /// Whether the client came over TLS (here or at a trusted proxy in front).
    pub secure: bool,
    /// The `X-Forwarded-For` hops anteroom believed, from the client on
    /// (empty unless the peer is a trusted proxy).
    pub forwarded_for: Vec<IpAddr>,
    /// The target is not what the client sent: it is forwarded rewritten.
    pub rewritten: bool,
    /// The `Host` header is not the canonical host (or is missing): it is
    /// forwarded rewritten.
    pub host_rewritten: bool,
    /// The visitor's campaign may be recorded and passed on (the site's
    /// consent cookie says so, or the site asks for no consent); set by the
    /// proxy from `[attribution]`.
    pub attribution_consent: bool,
}

impl<'a> Facts<'a> {
    /// The facts of `req`, which came from `peer`, over TLS or not.
    pub fn new(
        server: &config::Server,
        req: &'a RequestHeader,
        peer: Option<IpAddr>,
        tls: bool,
    ) -> Result<Facts<'a>, Refusal> {
        let Target {
            path,
            query,
            authority,
        } = canonical::target(req.raw_path(), server.path_policy)?;
        let rewritten = authority.is_some() || matches!(path, Cow::Owned(_));
        // HTTP/2 carries the host in `:authority`, which Pingora puts in the
        // URI (an HTTP/1.1 absolute-form target is there too, the same text
        // as `authority`): it is read, and must agree with `Host`, exactly
        // as an absolute-form target's authority is.
        let authority = authority.or_else(|| req.uri.authority().map(|a| a.as_str()));
        let (host, host_rewritten) = request_host(req, authority)?;
        let (ip, forwarded_for) = client(server, peer, req);
        Ok(Facts {
            req,
            path,
            query,
            host,
            ip,
            peer,
            secure: is_secure(server, peer, tls, req),
            forwarded_for,
            rewritten,
            host_rewritten,
            attribution_consent: true,
        })
    }

    /// The host name routes compare with.
    pub fn host_name(&self) -> Option<&str> {
        self.host.as_ref().map(|h| h.name.as_ref())
    }

    /// The target as it is forwarded (origin-form).
    pub fn target(&self) -> Cow<'_, str> {
        match self.query {
            Some(q) => Cow::Owned(format!("{}?{q}", self.path)),
            None => Cow::Borrowed(&self.path),
        }
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

/// The request's host: its one `Host` header, or the authority of an
/// absolute-form target or of an HTTP/2 request (`:authority`); both must
/// name the same host. True when the forwarded `Host` must be written (not
/// canonical as sent, or missing).
fn request_host<'a>(
    req: &'a RequestHeader,
    authority: Option<&'a str>,
) -> Result<(Option<Host<'a>>, bool), Refusal> {
    let mut hosts = req.headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::AmbiguousHost);
    }
    let header = match header {
        Some(value) => {
            let text = value.to_str().map_err(|_| Refusal::BadHost)?;
            Some(canonical::host(text)?)
        }
        None => None,
    };
    let authority = authority.map(canonical::host).transpose()?;
    match (header, authority) {
        (Some(h), Some(a)) if !h.same(&a) => Err(Refusal::AmbiguousHost),
        (Some(h), _) => {
            let rewrite = !h.unchanged;
            Ok((Some(h), rewrite))
        }
        (None, a) => {
            let rewrite = a.is_some();
            Ok((a, rewrite))
        }
    }
}

/// The request's host as the client sent it, for logs: its `Host` header,
/// or the authority of its target (HTTP/2's `:authority`).
pub fn host_header(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// The client's address, and the hops believed on the way, walking
/// `X-Forwarded-For` (every line, right to left) from a trusted peer: trusted
/// proxies are passed over, the first other entry is the client. An entry
/// that is not a bare address (`ip:port`, `unknown`) ends the walk: the
/// client is unknown, never whoever an attacker wrote further left.
fn client(
    server: &config::Server,
    peer: Option<IpAddr>,
    req: &RequestHeader,
) -> (Option<IpAddr>, Vec<IpAddr>) {
    let Some(peer) = peer else {
        return (None, Vec::new());
    };
    if !server.trusts(peer) {
        return (Some(peer), Vec::new());
    }
    let lines: Vec<&[u8]> = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let mut hops = Vec::new();
    for line in lines.iter().rev() {
        let Ok(text) = std::str::from_utf8(line) else {
            return (None, reversed(hops));
        };
        for entry in text.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    hops.push(ip);
                    if !server.trusts(ip) {
                        return (Some(ip), reversed(hops));
                    }
                }
                Err(_) => return (None, reversed(hops)),
            }
        }
    }
    // Every hop is trusted: the farthest one is the client.
    let client = hops.last().copied().unwrap_or(peer);
    (Some(client), reversed(hops))
}

fn reversed(mut hops: Vec<IpAddr>) -> Vec<IpAddr> {
    hops.reverse();
    hops
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

    fn req(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn server(trusted: &[&str]) -> config::Server {
        config::Server {
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..config::Server::default()
        }
    }

    fn client_of(trusted: &[&str], peer: &str, xff: &[&str]) -> Option<IpAddr> {
        let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let r = req("/", &headers);
        client(&server(trusted), Some(peer.parse().unwrap()), &r).0
    }

    #[test]
    fn forwarded_for_is_walked_right_to_left_from_trusted_proxies_only() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let lb = ["10.0.0.0/8"];
        assert_eq!(client_of(&[], "10.0.0.1", &["1.2.3.4"]), ip("10.0.0.1"));
        assert_eq!(
            client_of(&lb, "10.0.0.1", &["1.2.3.4, 10.0.0.7"]),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_of(&lb, "10.0.0.1", &["6.6.6.6, 1.2.3.4"]),
            ip("1.2.3.4")
        );
        // Every line counts, the last one nearest.
        assert_eq!(
            client_of(&lb, "10.0.0.1", &["6.6.6.6", "1.2.3.4"]),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_of(&lb, "10.0.0.1", &["1.2.3.4", "10.0.0.9"]),
            ip("1.2.3.4")
        );
        // What is not a bare address ends the walk: never a reason to look further left.
        for bad in [
            "1.2.3.4, 9.9.9.9:5555",
            "1.2.3.4, unknown",
            "1.2.3.4, [::1]:80",
            "1.2.3.4, ",
            "1.2.3.4,garbage",
        ] {
            assert_eq!(client_of(&lb, "10.0.0.1", &[bad]), None, "{bad}");
        }
        // No header: the trusted peer itself.
        assert_eq!(client_of(&lb, "10.0.0.1", &[]), ip("10.0.0.1"));
    }

    #[test]
    fn the_hops_believed_are_kept_in_order() {
        let r = req("/", &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        let (ip, hops) = client(
            &server(&["10.0.0.0/8"]),
            Some("10.0.0.1".parse().unwrap()),
            &r,
        );
        assert_eq!(ip, Some("1.2.3.4".parse().unwrap()));
        let shown: Vec<String> = hops.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["1.2.3.4", "10.0.0.7"]);
    }

    #[test]
    fn tls_from_a_trusted_proxy_only() {
        let r = req("/", &[("x-forwarded-proto", "https")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let secure = |s: &config::Server, r, tls| Facts::new(s, r, Some(peer), tls).unwrap().secure;
        assert!(!secure(&server(&[]), &r, false));
        assert!(secure(&server(&["10.0.0.0/8"]), &r, false));
        assert!(secure(&server(&[]), &req("/", &[]), true));
    }

    #[test]
    fn hosts_and_targets_must_agree() {
        let s = server(&[]);
        let facts = |r: &RequestHeader| {
            Facts::new(&s, r, None, false).map(|f| f.host_name().map(str::to_owned))
        };
        assert_eq!(
            facts(&req("/", &[("host", "Sess.Test.")])),
            Ok(Some("sess.test".into()))
        );
        assert_eq!(
            facts(&req("/", &[("host", "a.test"), ("host", "b.test")])),
            Err(Refusal::AmbiguousHost)
        );
        assert_eq!(
            facts(&req("http://b.test/x", &[("host", "a.test")])),
            Err(Refusal::AmbiguousHost)
        );
        assert_eq!(
            facts(&req("http://A.test/x", &[("host", "a.test.")])),
            Ok(Some("a.test".into()))
        );
        assert_eq!(facts(&req("/", &[("host", "a b")])), Err(Refusal::BadHost));
        let rewritten = req("http://a.test/api//x?q", &[]);
        let f = Facts::new(&s, &rewritten, None, false).unwrap();
        assert!(f.rewritten);
        assert_eq!(f.target(), "/api/x?q");
    }

    /// A request as Pingora hands over an HTTP/2 stream: the target is the
    /// URI, `:authority` its authority, and `Host` only if the client sent one.
    fn h2(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut b = http::Request::builder()
            .method("GET")
            .uri(uri)
            .version(http::Version::HTTP_2);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        RequestHeader::from(parts)
    }

    #[test]
    fn an_http2_authority_is_the_host_as_host_is_in_http1() {
        let s = server(&[]);
        let facts = |r: &RequestHeader| {
            Facts::new(&s, r, None, true).map(|f| {
                (
                    f.host_name().map(str::to_owned),
                    f.host_rewritten,
                    f.rewritten,
                )
            })
        };
        for authority in [
            "sess.test",
            "SESS.TEST:443",
            "sess.test.",
            "Sess.Test.:8443",
        ] {
            let r = h2(&format!("https://{authority}/x"), &[]);
            // The host is named in `:authority` only: `Host` is written for the upstream.
            assert_eq!(
                facts(&r),
                Ok((Some("sess.test".into()), true, false)),
                "{authority}"
            );
        }
        assert_eq!(
            host_header(&h2("https://SESS.TEST:443/x", &[])),
            Some("SESS.TEST:443")
        );
        // `Host` beside `:authority` must name the same host.
        assert_eq!(
            facts(&h2("https://sess.test/x", &[("host", "Sess.Test")])),
            Ok((Some("sess.test".into()), true, false))
        );
        assert_eq!(
            facts(&h2("https://sess.test/x", &[("host", "other.test")])),
            Err(Refusal::AmbiguousHost)
        );
        assert_eq!(
            facts(&h2("https://sess.test/x", &[("host", "sess.test:8080")])),
            Err(Refusal::AmbiguousHost)
        );
        // The path is canonical as over HTTP/1.1.
        let r = h2("https://sess.test/api//x", &[]);
        let f = Facts::new(&s, &r, None, true).unwrap();
        assert!(f.rewritten);
        assert_eq!(f.target(), "/api/x");
    }

    #[test]
    fn browser_navigation() {
        let s = server(&[]);
        let html = |r: &RequestHeader| Facts::new(&s, r, None, false).unwrap().wants_html();
        assert!(html(&req(
            "/",
            &[("accept", "text/html,application/xhtml+xml")]
        )));
        assert!(!html(&req("/", &[("accept", "application/json")])));
        assert!(!html(&req("/", &[])));
    }
}
