//! What the upstream receives: the client's request with anteroom's own
//! headers reserved to anteroom, the `Host` the upstream expects, the
//! `X-Forwarded-*` facts, and for an admitted visitor their pass, wait and
//! campaign.

use std::net::IpAddr;

use http::HeaderValue;
use http::header::{AUTHORIZATION, HOST};
use pingora::http::RequestHeader;

use crate::gate::{PASS_HEADER, PassSource, Visit};

/// Headers under this prefix are anteroom's to set; a client cannot pass its own upstream.
const RESERVED_HEADER_PREFIX: &str = "x-anteroom-";

/// How one request is to be forwarded.
pub struct Forward<'a> {
    /// The `Host` to send instead of the client's (the upstream's `host_header`).
    pub host: Option<&'a str>,
    /// The connecting peer, appended to `X-Forwarded-For`.
    pub peer: Option<IpAddr>,
    /// Whether the client came over TLS.
    pub secure: bool,
    /// The admitted visitor whose request this is.
    pub visit: Option<&'a Visit>,
}

impl Forward<'_> {
    /// Rewrites the headers of the request about to go upstream.
    pub fn apply(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        let reserved: Vec<_> = upstream
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with(RESERVED_HEADER_PREFIX))
            .cloned()
            .collect();
        for name in reserved {
            upstream.remove_header(&name);
        }
        if let Some(host) = self.host {
            // The client's Host is replaced: keep it where the app can see it.
            if let Some(original) = upstream.headers.get(HOST).cloned() {
                upstream.insert_header("x-forwarded-host", original)?;
            }
            upstream.insert_header(HOST, host)?;
        }
        if let Some(ip) = self.peer {
            let forwarded_for = match upstream.headers.get("x-forwarded-for") {
                Some(prior) => HeaderValue::try_from(format!(
                    "{}, {ip}",
                    String::from_utf8_lossy(prior.as_bytes())
                )),
                None => Ok(ip_header(ip)),
            };
            if let Ok(value) = forwarded_for {
                upstream.insert_header("x-forwarded-for", value)?;
            }
        }
        let proto = if self.secure { "https" } else { "http" };
        upstream.insert_header("x-forwarded-proto", proto)?;
        if let Some(visit) = self.visit {
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
    fn reserved_headers_are_replaced_and_forwarding_facts_added() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.insert_header("host", "app.example").unwrap();
        req.insert_header("x-anteroom-pass", "forged").unwrap();
        req.insert_header("x-forwarded-for", "1.2.3.4").unwrap();
        Forward {
            host: Some("origin.internal"),
            peer: Some("10.0.0.1".parse().unwrap()),
            secure: true,
            visit: None,
        }
        .apply(&mut req)
        .unwrap();
        let h = |name: &str| {
            req.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(h("x-anteroom-pass"), None);
        assert_eq!(h("host").as_deref(), Some("origin.internal"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("app.example"));
        assert_eq!(h("x-forwarded-for").as_deref(), Some("1.2.3.4, 10.0.0.1"));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
    }
}
