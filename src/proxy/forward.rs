//! What the upstream receives: the request in the canonical form anteroom
//! decided on, its headers reserved to anteroom, the `Host` the upstream
//! expects, the `X-Forwarded-*` facts anteroom believed, and for an admitted
//! visitor their pass, wait and campaign.

use std::net::IpAddr;

use http::header::{AUTHORIZATION, HOST};
use http::{HeaderName, HeaderValue, Uri};
use pingora::http::RequestHeader;

use crate::gate::{PASS_HEADER, PassSource, Visit};
use crate::request::facts::Facts;

/// Headers under this prefix are anteroom's to set; a client cannot pass its own upstream.
const RESERVED_HEADER_PREFIX: &str = "x-anteroom-";
/// Headers that say who the client is: a client's own are never passed on.
/// anteroom sets `X-Forwarded-For` and `-Proto` (and `-Host` when it replaces
/// `Host`) from what it decided on.
const FORWARDING_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// Longest request id taken from a client; a longer or odd one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// The request's id: the client's (or its load balancer's) when it sent one
/// well-formed `header` line, else a new random one (`generated`).
pub fn request_id(header: Option<&HeaderName>, req: &RequestHeader) -> (String, bool) {
    let given = header.and_then(|h| {
        let mut values = req.headers.get_all(h).iter();
        let value = values.next()?;
        let ok = values.next().is_none()
            && (1..=MAX_REQUEST_ID).contains(&value.len())
            && value.as_bytes().iter().all(|b| b.is_ascii_graphic());
        ok.then(|| String::from_utf8_lossy(value.as_bytes()).into_owned())
    });
    match given {
        Some(id) => (id, false),
        None => (format!("{:032x}", rand::random::<u128>()), true),
    }
}

/// What a request's facts decide about forwarding it, kept from
/// `request_filter` until the request goes upstream. Owned and small: the
/// common request rewrites nothing and allocates nothing here.
#[derive(Debug, Default)]
pub struct Forwarding {
    /// The canonical target, when it is not what the client sent.
    target: Option<Uri>,
    /// The canonical `Host`, when it is not what the client sent.
    host: Option<HeaderValue>,
    /// `X-Forwarded-For` hops believed, from the client on.
    hops: Vec<IpAddr>,
    /// The connecting peer.
    peer: Option<IpAddr>,
    /// Whether the client came over TLS.
    secure: bool,
}

impl Forwarding {
    /// What forwarding a request with these facts takes.
    pub fn of(facts: &Facts<'_>) -> Forwarding {
        let target = facts
            .rewritten
            .then(|| facts.target().parse::<Uri>().ok())
            .flatten();
        let host = facts
            .host
            .as_ref()
            .filter(|_| facts.host_rewritten)
            .and_then(|h| HeaderValue::from_str(&h.header()).ok());
        Forwarding {
            target,
            host,
            hops: facts.forwarded_for.clone(),
            peer: facts.peer,
            secure: facts.secure,
        }
    }

    /// Whether the client came over TLS.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Rewrites the request about to go upstream. `host` replaces the
    /// client's `Host` (the upstream's `host_header`); `visit` is the
    /// admitted visitor whose request it is.
    /// `request_id` is the header and the id to send, when anteroom made it
    /// (a client's own well-formed id goes through as it came).
    pub fn apply(
        &self,
        upstream: &mut RequestHeader,
        host: Option<&str>,
        visit: Option<&Visit>,
        request_id: Option<(&HeaderName, &str)>,
    ) -> pingora::Result<()> {
        if let Some(target) = &self.target {
            upstream.set_uri(target.clone());
        }
        let spoofable: Vec<HeaderName> = upstream
            .headers
            .keys()
            .filter(|k| reserved(k.as_str()))
            .cloned()
            .collect();
        for name in spoofable {
            upstream.remove_header(&name);
        }
        if let Some(canonical) = &self.host {
            upstream.insert_header(HOST, canonical.clone())?;
        }
        if let Some(host) = host {
            // The client's Host is replaced: keep it where the app can see it.
            if let Some(original) = upstream.headers.get(HOST).cloned() {
                upstream.insert_header("x-forwarded-host", original)?;
            }
            upstream.insert_header(HOST, host)?;
        }
        if let Some(value) = self.forwarded_for() {
            upstream.insert_header("x-forwarded-for", value)?;
        }
        let proto = if self.secure { "https" } else { "http" };
        upstream.insert_header("x-forwarded-proto", proto)?;
        if let Some((name, id)) = request_id {
            upstream.insert_header(name.clone(), id)?;
        }
        if let Some(visit) = visit {
            if let Some(utm) = &visit.session.utm {
                for (name, value) in utm.headers() {
                    upstream.insert_header(name, value)?;
                }
            }
            upstream.insert_header(
                "x-anteroom-wait-ms",
                HeaderValue::from(visit.session.wait_ms),
            )?;
            upstream.insert_header(PASS_HEADER, visit.pass.clone())?;
            if visit.source == Some(PassSource::Authorization) {
                upstream.remove_header(&AUTHORIZATION);
            }
        }
        Ok(())
    }

    /// The hops anteroom believed and the peer: what the upstream's own
    /// right-to-left walk (or a read of the leftmost entry) finds is the
    /// client anteroom decided on.
    fn forwarded_for(&self) -> Option<HeaderValue> {
        let peer = self.peer?;
        if self.hops.is_empty() {
            return Some(ip_header(peer));
        }
        let mut text = String::new();
        for hop in self.hops.iter().chain(std::iter::once(&peer)) {
            if !text.is_empty() {
                text.push_str(", ");
            }
            text.push_str(&hop.to_string());
        }
        HeaderValue::try_from(text).ok()
    }
}

/// Whether a client header must not reach the upstream: anteroom's own, or
/// one that says who the client is. Names are compared as CGI, WSGI and Rack
/// read them, with `_` and `-` the same (`X_Anteroom_Pass` is `X-Anteroom-Pass`).
fn reserved(name: &str) -> bool {
    let folds = |a: &[u8], b: &[u8]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x == y || (*x == b'_' && *y == b'-'))
    };
    let n = name.as_bytes();
    let prefix = RESERVED_HEADER_PREFIX.as_bytes();
    (n.len() > prefix.len() && folds(&n[..prefix.len()], prefix))
        || FORWARDING_HEADERS.iter().any(|h| folds(n, h.as_bytes()))
}

/// A client address as a header value; IPv4 is written without the
/// formatting machinery, as it is on every forwarded request.
fn ip_header(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("-"));
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&buf[..n]).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn client_addresses_as_header_values() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.0.100",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(ip_header(ip.parse().unwrap()), ip);
        }
    }

    #[test]
    fn client_headers_that_fold_to_reserved_names_are_dropped() {
        for name in [
            "x-anteroom-pass",
            "x_anteroom_pass",
            "x-anteroom_wait_ms",
            "x_forwarded_for",
            "x-real-ip",
            "forwarded",
            "x-forwarded-host",
        ] {
            assert!(reserved(name), "{name}");
        }
        for name in [
            "x-anteroom",
            "x-anteroomx",
            "x-request-id",
            "x_forwarded",
            "accept",
        ] {
            assert!(!reserved(name), "{name}");
        }
    }

    fn forward(target: &str, headers: &[(&str, &str)], trusted: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        let server = config::Server {
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..config::Server::default()
        };
        let facts = Facts::new(&server, &req, Some("10.0.0.1".parse().unwrap()), true).unwrap();
        let plan = Forwarding::of(&facts);
        let mut upstream = req.clone();
        plan.apply(&mut upstream, None, None, None).unwrap();
        upstream
    }

    fn header(req: &RequestHeader, name: &str) -> Option<String> {
        let values: Vec<&str> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        (!values.is_empty()).then(|| values.join(" | "))
    }

    #[test]
    fn the_upstream_gets_the_canonical_request() {
        let up = forward(
            "http://Shop.Example.:8080/api//x/../y?q=1",
            &[("host", "shop.example:8080")],
            &[],
        );
        assert_eq!(up.raw_path(), b"/api/y?q=1");
        assert_eq!(header(&up, "host").as_deref(), Some("shop.example:8080"));
        let up = forward("/a", &[("host", "Shop.Example.")], &[]);
        assert_eq!(up.raw_path(), b"/a");
        assert_eq!(header(&up, "host").as_deref(), Some("shop.example"));
    }

    #[test]
    fn forwarding_headers_say_what_anteroom_decided() {
        // An untrusted peer's own claims are dropped.
        let up = forward(
            "/",
            &[
                ("host", "a.test"),
                ("x-forwarded-for", "1.2.3.4"),
                ("x_real_ip", "1.2.3.4"),
                ("forwarded", "for=1.2.3.4"),
                ("x-anteroom-pass", "forged"),
            ],
            &[],
        );
        assert_eq!(header(&up, "x-forwarded-for").as_deref(), Some("10.0.0.1"));
        assert_eq!(header(&up, "x-forwarded-proto").as_deref(), Some("https"));
        for gone in ["x_real_ip", "forwarded", "x-anteroom-pass"] {
            assert_eq!(header(&up, gone), None, "{gone}");
        }
        // Behind a trusted proxy: one line, from the client anteroom believed.
        let up = forward(
            "/",
            &[
                ("host", "a.test"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "1.2.3.4, 10.0.0.9"),
            ],
            &["10.0.0.0/8"],
        );
        assert_eq!(
            header(&up, "x-forwarded-for").as_deref(),
            Some("1.2.3.4, 10.0.0.9, 10.0.0.1")
        );
        // An entry that is not an address: the client is unknown, not whoever is further left.
        let up = forward(
            "/",
            &[
                ("host", "a.test"),
                ("x-forwarded-for", "1.2.3.4, 9.9.9.9:5555"),
            ],
            &["10.0.0.0/8"],
        );
        assert_eq!(header(&up, "x-forwarded-for").as_deref(), Some("10.0.0.1"));
    }
}
