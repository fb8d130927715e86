//! The one form of a request's target and host that anteroom decides on and
//! forwards, so that anteroom and the upstream can never disagree about
//! which path or site was asked for.
//!
//! The path is normalised the way the servers behind anteroom read it
//! (nginx, app servers, frameworks) and the way Envoy's `normalize_path` and
//! `merge_slashes` do: percent-escapes of unreserved characters decoded
//! (`%61` is `a`), the remaining escapes in upper case, characters outside
//! RFC 3986's path set escaped, dot segments removed (RFC 3986 §5.2.4, after
//! decoding, so `%2e%2e` is `..`), runs of slashes merged. What servers read
//! differently from each other is refused, or, with `path_policy =
//! "decode"`, decoded: an encoded slash or backslash (`%2F`, `%5C`), a
//! backslash, a `;` (Tomcat and Spring cut path parameters off, nginx does
//! not), an encoded `%` (a server that decodes twice sees another path), and
//! escapes that are not UTF-8 (`%C0%AE`, an overlong `.`). Control
//! characters and NUL are always refused. docs/security.md lists it all.

use std::borrow::Cow;

pub use crate::config::PathPolicy;

/// Why a request target or host is refused with `400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a path (`*`, an authority, an opaque URI).
    #[error("the request target is not a path")]
    NotAPath,
    /// `%2F` in the path.
    #[error("the path holds an encoded slash")]
    EncodedSlash,
    /// `\` or `%5C` in the path.
    #[error("the path holds a backslash")]
    Backslash,
    /// `;` in the path.
    #[error("the path holds a ';'")]
    Semicolon,
    /// `%25` in the path.
    #[error("the path holds an encoded '%'")]
    EncodedPercent,
    /// A control character or NUL, raw or encoded.
    #[error("the path holds a control character")]
    ControlCharacter,
    /// A `%` not followed by two hexadecimal digits.
    #[error("the path holds a malformed percent-escape")]
    BadEscape,
    /// Escapes that do not decode to UTF-8.
    #[error("the path's escapes are not UTF-8")]
    NotUtf8,
    /// A `Host` that is not a host name or address with an optional port.
    #[error("the Host is not a host name")]
    BadHost,
    /// Two `Host` headers, or a `Host` that disagrees with the target's authority.
    #[error("the Host is ambiguous")]
    AmbiguousHost,
}

/// A request target in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The path (without the query).
    pub path: Cow<'a, str>,
    /// The query, as received (without `?`).
    pub query: Option<&'a str>,
    /// The authority of an absolute-form target (`GET http://host/path`).
    pub authority: Option<&'a str>,
}

impl Target<'_> {
    /// Whether this is what the client sent, byte for byte, in origin-form.
    pub fn unchanged(&self) -> bool {
        self.authority.is_none() && matches!(self.path, Cow::Borrowed(_))
    }

    /// The target to forward: path and query, in origin-form.
    pub fn origin_form(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone().into_owned(),
        }
    }
}

/// The canonical form of a raw request target (`raw_path` of the request
/// line): origin-form or absolute-form.
pub fn target(raw: &[u8], policy: PathPolicy) -> Result<Target<'_>, Refusal> {
    let (authority, rest) = match raw.first() {
        Some(b'/') => (None, raw),
        _ => split_absolute(raw)?,
    };
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let query = match query {
        Some(q) => Some(std::str::from_utf8(q).map_err(|_| Refusal::NotUtf8)?),
        None => None,
    };
    if query.is_some_and(|q| q.bytes().any(|b| b.is_ascii_control())) {
        return Err(Refusal::ControlCharacter);
    }
    let path = if path.is_empty() {
        Cow::Borrowed("/")
    } else {
        self::path(path, policy)?
    };
    Ok(Target {
        path,
        query,
        authority,
    })
}

/// `scheme://authority/path?query` → the authority and `/path?query`.
fn split_absolute(raw: &[u8]) -> Result<(Option<&str>, &[u8]), Refusal> {
    let text = std::str::from_utf8(raw).map_err(|_| Refusal::NotAPath)?;
    let (scheme, rest) = text.split_once("://").ok_or(Refusal::NotAPath)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(Refusal::NotAPath);
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(Refusal::BadHost);
    }
    Ok((Some(authority), path.as_bytes()))
}

const UNRESERVED: u8 = 1;
const PLAIN: u8 = 2;

/// Byte classes: `UNRESERVED` (RFC 3986: letters, digits, `-._~`) and
/// `PLAIN` (what a path may hold as it is: `pchar` and `/`, `;` aside, which
/// is the policy's).
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            class[b] = UNRESERVED | PLAIN;
        } else if matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
                | b'/'
        ) {
            class[b] = PLAIN;
        }
        b += 1;
    }
    class
};

fn is_unreserved(b: u8) -> bool {
    CLASS[usize::from(b)] & UNRESERVED != 0
}

fn is_plain(b: u8) -> bool {
    CLASS[usize::from(b)] & PLAIN != 0
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A path that is canonical as it stands: plain characters only, no empty
/// segment, no dot segment. Most requests are, and cost this scan only.
fn already_canonical(raw: &[u8]) -> bool {
    let mut previous = b'/';
    let mut segment_start = 1;
    for (i, &b) in raw.iter().enumerate().skip(1) {
        if !is_plain(b) || (b == b'/' && previous == b'/') {
            return false;
        }
        if b == b'/' {
            if matches!(&raw[segment_start..i], b"." | b"..") {
                return false;
            }
            segment_start = i + 1;
        }
        previous = b;
    }
    !matches!(&raw[segment_start..], b"." | b"..")
}

/// The canonical form of a path that starts with `/`.
pub fn path(raw: &[u8], policy: PathPolicy) -> Result<Cow<'_, str>, Refusal> {
    if raw.first() != Some(&b'/') {
        return Err(Refusal::NotAPath);
    }
    if already_canonical(raw) {
        // Plain ASCII, checked above.
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| Refusal::NotUtf8);
    }
    let decode = policy == PathPolicy::Decode;
    // The path as segments of canonical text; `decoded` holds every byte
    // decoded, to check the escapes spell UTF-8.
    let mut segments: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut decoded = Vec::with_capacity(raw.len());
    let slash = |current: &mut String, segments: &mut Vec<String>| {
        let segment = std::mem::take(current);
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    };
    let mut i = 1;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        let (byte, escaped) = if b == b'%' {
            let (Some(hi), Some(lo)) = (
                raw.get(i).copied().and_then(hex),
                raw.get(i + 1).copied().and_then(hex),
            ) else {
                return Err(Refusal::BadEscape);
            };
            i += 2;
            (hi << 4 | lo, true)
        } else {
            (b, false)
        };
        decoded.push(byte);
        match byte {
            0x00..=0x1f | 0x7f => return Err(Refusal::ControlCharacter),
            b'/' if escaped && !decode => return Err(Refusal::EncodedSlash),
            b'\\' if !decode => return Err(Refusal::Backslash),
            b'/' | b'\\' => slash(&mut current, &mut segments),
            b';' if !escaped && !decode => return Err(Refusal::Semicolon),
            b'%' if !decode => return Err(Refusal::EncodedPercent),
            b if is_unreserved(b) || (!escaped && is_plain(b)) || (!escaped && b == b';') => {
                current.push(char::from(b))
            }
            b => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                current.push('%');
                current.push(char::from(HEX[usize::from(b >> 4)]));
                current.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    // What ended the last segment decides whether the path ends in `/`.
    let trailing = current.is_empty() || current == "." || current == "..";
    slash(&mut current, &mut segments);
    if !decode && std::str::from_utf8(&decoded).is_err() {
        return Err(Refusal::NotUtf8);
    }
    let mut out = String::with_capacity(raw.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// A request's host, as routes compare it: the name without port, in lower
/// case, without one trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host<'a> {
    /// The name (or address) alone.
    pub name: Cow<'a, str>,
    /// The port, when one was given.
    pub port: Option<u16>,
    /// The value was written in canonical form already.
    pub unchanged: bool,
}

impl Host<'_> {
    /// `Host` as it is forwarded: name and port.
    pub fn header(&self) -> Cow<'_, str> {
        match self.port {
            Some(port) => Cow::Owned(format!("{}:{port}", self.name)),
            None => Cow::Borrowed(&self.name),
        }
    }

    /// Whether another spelling names the same host and port.
    pub fn same(&self, other: &Host<'_>) -> bool {
        self.name == other.name && self.port == other.port
    }
}

/// The canonical form of a `Host` value or an authority, read in one pass.
pub fn host(raw: &str) -> Result<Host<'_>, Refusal> {
    if raw.starts_with('[') {
        return bracketed(raw);
    }
    let (name, port) = match raw.rfind(':') {
        Some(i) => (&raw[..i], Some(port(&raw[i + 1..])?)),
        None => (raw, None),
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(Refusal::BadHost);
    }
    let (mut label, mut upper) = (0usize, false);
    for &b in trimmed.as_bytes() {
        match b {
            b'.' if label == 0 => return Err(Refusal::BadHost),
            b'.' => label = 0,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
            b'A'..=b'Z' => {
                upper = true;
                label += 1;
            }
            _ => return Err(Refusal::BadHost),
        }
        if label > 63 {
            return Err(Refusal::BadHost);
        }
    }
    if label == 0 {
        return Err(Refusal::BadHost);
    }
    Ok(Host {
        name: lowercase(trimmed, upper),
        port,
        unchanged: !upper && trimmed.len() == name.len(),
    })
}

fn port(text: &str) -> Result<u16, Refusal> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::BadHost);
    }
    text.parse().map_err(|_| Refusal::BadHost)
}

/// `[v6]` or `[v6]:port`.
fn bracketed(raw: &str) -> Result<Host<'_>, Refusal> {
    let end = raw.find(']').ok_or(Refusal::BadHost)?;
    raw[1..end]
        .parse::<std::net::Ipv6Addr>()
        .map_err(|_| Refusal::BadHost)?;
    let port = match &raw[end + 1..] {
        "" => None,
        p => Some(port(p.strip_prefix(':').ok_or(Refusal::BadHost)?)?),
    };
    let name = &raw[..=end];
    let upper = name.bytes().any(|b| b.is_ascii_uppercase());
    Ok(Host {
        name: lowercase(name, upper),
        port,
        unchanged: !upper,
    })
}

fn lowercase(name: &str, upper: bool) -> Cow<'_, str> {
    if upper {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(raw: &str) -> Result<String, Refusal> {
        path(raw.as_bytes(), PathPolicy::Reject).map(Cow::into_owned)
    }

    fn decoded(raw: &str) -> Result<String, Refusal> {
        path(raw.as_bytes(), PathPolicy::Decode).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/api/gemini/x",
            "/a-b_c.d~e/f!$&'()*+,=:@",
            "/.well-known/x",
            "/a/.b/..c",
        ] {
            assert!(
                matches!(path(p.as_bytes(), PathPolicy::Reject), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn the_forms_servers_resolve_become_the_path_they_resolve_to() {
        for (raw, want) in [
            ("/api//gemini/x", "/api/gemini/x"),
            ("//api/gemini/x", "/api/gemini/x"),
            ("/api/./gemini/x", "/api/gemini/x"),
            ("/api/x/../gemini/x", "/api/gemini/x"),
            ("/api/%67emini/x", "/api/gemini/x"),
            ("/%61pi/gemini/x", "/api/gemini/x"),
            ("/api/%2e/gemini/x", "/api/gemini/x"),
            ("/api/x/%2E%2e/gemini/x", "/api/gemini/x"),
            ("/static/../checkout", "/checkout"),
            ("/static/%2e%2e/checkout", "/checkout"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/", "/a/"),
            ("/..", "/"),
            ("/%7Euser", "/~user"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/a\"b", "/a%22b"),
            ("/%3b", "/%3B"),
            ("/%3F", "/%3F"),
        ] {
            assert_eq!(canonical(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn ambiguous_forms_are_refused_or_decoded_by_policy() {
        for (raw, refusal, decoded_to) in [
            (
                "/api%2Fgemini/x",
                Refusal::EncodedSlash,
                Some("/api/gemini/x"),
            ),
            (
                "/static/..%2fcheckout",
                Refusal::EncodedSlash,
                Some("/checkout"),
            ),
            ("/api\\gemini", Refusal::Backslash, Some("/api/gemini")),
            (
                "/static/..%5Ccheckout",
                Refusal::Backslash,
                Some("/checkout"),
            ),
            ("/api;x/gemini", Refusal::Semicolon, Some("/api;x/gemini")),
            (
                "/api/%2567emini",
                Refusal::EncodedPercent,
                Some("/api/%2567emini"),
            ),
            ("/%c0%ae%c0%ae/x", Refusal::NotUtf8, Some("/%C0%AE%C0%AE/x")),
            ("/a%00b", Refusal::ControlCharacter, None),
            ("/a%0d%0ab", Refusal::ControlCharacter, None),
            ("/a%7f", Refusal::ControlCharacter, None),
            ("/a%zz", Refusal::BadEscape, None),
            ("/a%4", Refusal::BadEscape, None),
        ] {
            assert_eq!(canonical(raw), Err(refusal), "{raw}");
            match decoded_to {
                Some(want) => assert_eq!(decoded(raw).as_deref(), Ok(want), "{raw}"),
                None => assert!(decoded(raw).is_err(), "{raw}"),
            }
        }
    }

    #[test]
    fn canonical_paths_are_fixed_points() {
        for raw in [
            "/a//b/./c/../d%7e",
            "/%2e%2e/x/",
            "/A%2fB",
            "/x\\..\\y",
            "/é",
            "/a/%3b;b",
        ] {
            for policy in [PathPolicy::Reject, PathPolicy::Decode] {
                if let Ok(once) = path(raw.as_bytes(), policy) {
                    assert_eq!(
                        path(once.as_bytes(), policy).as_deref(),
                        Ok(once.as_ref()),
                        "{raw}"
                    );
                }
            }
        }
    }

    #[test]
    fn targets_in_absolute_form_give_their_authority() {
        let t = target(
            b"http://Sess.Test:8080/api//gemini/x?q=1",
            PathPolicy::Reject,
        )
        .unwrap();
        assert_eq!(t.authority, Some("Sess.Test:8080"));
        assert_eq!(t.path, "/api/gemini/x");
        assert_eq!(t.query, Some("q=1"));
        assert_eq!(t.origin_form(), "/api/gemini/x?q=1");
        assert!(!t.unchanged());
        assert_eq!(
            target(b"http://a.test", PathPolicy::Reject).unwrap().path,
            "/"
        );
        for bad in [
            &b"*"[..],
            b"a.test:443",
            b"ftp://a/b",
            b"http://u@a/b",
            b"http:///x",
        ] {
            assert!(
                target(bad, PathPolicy::Reject).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(target(b"/x?a\x01b", PathPolicy::Reject).is_err());
        assert!(target(b"/x?q=1", PathPolicy::Reject).unwrap().unchanged());
    }

    #[test]
    fn hosts_compare_without_case_port_and_one_trailing_dot() {
        let h = |raw| host(raw).unwrap();
        assert_eq!(h("Sess.Test.").name, "sess.test");
        assert_eq!(h("sess.test:8080").port, Some(8080));
        assert_eq!(h("sess.test:8080").header(), "sess.test:8080");
        assert_eq!(h("[::1]:443").name, "[::1]");
        assert_eq!(h("10.0.0.1").name, "10.0.0.1");
        assert!(h("A.test.:80").same(&h("a.test:80")));
        assert!(h("a.test:80").unchanged && !h("A.test").unchanged && !h("a.test.").unchanged);
        assert!(!h("a.test:80").same(&h("a.test:81")));
        for bad in [
            "",
            ".",
            "a..b",
            "sess.test..",
            "a b",
            "a/b",
            "a.test:",
            "a.test:99999",
            "a.test:x",
            "[::1",
            "[zz]",
            "a@b",
        ] {
            assert!(host(bad).is_err(), "{bad:?}");
        }
    }
}
