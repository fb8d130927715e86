// What must hold for any input to anteroom's parsers: the fuzz targets
// (fuzz/fuzz_targets/) run these under libFuzzer, and the test suite replays
// the committed corpus (fuzz/corpus/) through them (tests/fuzz.rs). A broken
// property panics, which is how both report it.

#[allow(dead_code)]
mod properties {
    use std::net::IpAddr;
    use std::path::Path;
    use std::sync::OnceLock;

    use anteroom::request::canonical::{self, PathPolicy};
    use anteroom::config::{Config, Server};
    use anteroom::request::facts::Facts;
    use anteroom::token::{Kind, SigningKey, Tokens};
    use pingora::http::RequestHeader;

    fn unreserved(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
    }

    /// What every canonical path is, whatever it came from.
    fn is_canonical(path: &str, policy: PathPolicy) {
        assert!(path.starts_with('/'), "{path:?}");
        for bad in ["//", "/./", "/../"] {
            assert!(!path.contains(bad), "{path:?} holds {bad}");
        }
        assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{path:?}");
        assert!(path.bytes().all(|b| b.is_ascii_graphic()), "{path:?}");
        let bytes = path.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'%' {
                let hex = &bytes[i + 1..i + 3];
                assert!(hex.iter().all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)), "{path:?}");
                let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
                assert!(!unreserved(value), "{path:?} encodes an unreserved character");
                assert!(value >= 0x20 && value != 0x7f, "{path:?} encodes a control character");
            }
        }
        if policy == PathPolicy::Reject {
            for bad in ["\\", ";", "%2F", "%5C", "%25"] {
                assert!(!path.contains(bad), "{path:?} holds {bad}");
            }
        }
        // Canonicalizing twice changes nothing.
        let again = canonical::path(bytes, policy).expect("a canonical path is accepted");
        assert_eq!(again, path);
    }

    pub fn canonical_path(data: &[u8]) {
        let mut raw = Vec::with_capacity(data.len() + 1);
        raw.push(b'/');
        raw.extend_from_slice(data);
        for policy in [PathPolicy::Reject, PathPolicy::Decode] {
            if let Ok(path) = canonical::path(&raw, policy) {
                is_canonical(&path, policy);
            }
        }
    }

    pub fn request_target(data: &[u8]) {
        for policy in [PathPolicy::Reject, PathPolicy::Decode] {
            if let Ok(target) = canonical::target(data, policy) {
                is_canonical(&target.path, policy);
                let form = target.origin_form();
                assert!(form.starts_with('/'));
                let again = canonical::target(form.as_bytes(), policy).expect("origin-form is accepted");
                assert_eq!(again.path, target.path);
                assert_eq!(again.query, target.query);
            }
        }
    }

    pub fn host(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(host) = canonical::host(text) {
            assert!(!host.name.bytes().any(|b| b.is_ascii_uppercase()), "{host:?}");
            assert!(!host.name.ends_with('.'), "{host:?}");
            let header = host.header();
            let again = canonical::host(&header).expect("a canonical host is accepted");
            assert!(again.same(&host), "{host:?} / {again:?}");
        }
    }

    /// Lines of `X-Forwarded-For` from a trusted proxy: the client is the
    /// peer, an address that stands in the header, or unknown.
    pub fn forwarded_for(data: &[u8]) {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for line in data.split(|&b| b == b'\n') {
            if let Ok(value) = http::HeaderValue::from_bytes(line) {
                req.append_header("x-forwarded-for", value).unwrap();
            }
        }
        let server = Server {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..Server::default()
        };
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let Ok(facts) = Facts::new(&server, &req, Some(peer), false) else {
            return;
        };
        let text = String::from_utf8_lossy(data);
        if let Some(ip) = facts.ip {
            // IPv6 addresses are written shorter than they may have been sent.
            assert!(ip == peer || ip.is_ipv6() || text.contains(&ip.to_string()), "{ip} from {text:?}");
        }
        for hop in facts.forwarded_for.iter().skip(1) {
            assert!(server.trusts(*hop), "untrusted hop {hop} after the client");
        }
    }

    pub fn cookies(data: &[u8]) {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        if let Ok(value) = http::HeaderValue::from_bytes(data) {
            req.append_header("cookie", value).unwrap();
        }
        let text = String::from_utf8_lossy(data);
        for value in anteroom::request::cookies::values(&req, "anteroom_pass") {
            assert!(text.contains(value));
        }
    }

    fn tokens_under_test() -> &'static Tokens {
        static TOKENS: OnceLock<Tokens> = OnceLock::new();
        TOKENS.get_or_init(|| {
            let (signer, _) = SigningKey::generate(2048).unwrap();
            Tokens::new("anteroom", signer, Vec::new(), 1024)
        })
    }

    /// Nobody makes a valid token without the key.
    pub fn tokens(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let tokens = tokens_under_test();
        let _ = anteroom::token::understood(text);
        for kind in [Kind::Pass, Kind::Ticket] {
            assert!(tokens.verify(text, kind, "web").is_none(), "forged: {text:?}");
        }
    }

    pub fn config(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = Config::from_toml(text, Path::new("fuzz.toml"));
        }
    }
}

#[allow(unused_imports)]
use properties::*;
