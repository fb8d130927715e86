//! Reading the `Cookie` header and writing `Set-Cookie`.

use pingora::http::RequestHeader;

/// Every value of the cookie `name` (a browser may send several with
/// different paths), most specific path first as browsers order them.
pub fn values<'a>(req: &'a RequestHeader, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(header_text)
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// A header's value as text. Tokens are ASCII and about 600 bytes, sent on
/// every request: UTF-8 validation is vectorised where `to_str`'s
/// visible-ASCII check goes byte by byte, and another cookie's non-ASCII
/// value does not hide ours.
pub fn header_text(value: &http::HeaderValue) -> Option<&str> {
    std::str::from_utf8(value.as_bytes()).ok()
}

/// A `Set-Cookie` value for a token: not readable by scripts, sent on
/// top-level navigations from other sites (so a campaign link works), and
/// only over TLS when the visitor came over TLS.
pub fn set(name: &str, value: &str, path: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear(name: &str, path: &str, secure: bool) -> String {
    set(name, "", path, 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_values_of_a_name() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("cookie", "a=1; anteroom_pass=x.y.z; b=2")
            .unwrap();
        r.append_header("cookie", "anteroom_pass=\"q\"").unwrap();
        assert_eq!(
            values(&r, "anteroom_pass").collect::<Vec<_>>(),
            ["x.y.z", "q"]
        );
        assert_eq!(values(&r, "missing").count(), 0);
    }

    #[test]
    fn set_cookie_attributes() {
        assert_eq!(
            set("t", "v", "/", 60, true),
            "t=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(clear("t", "/", false).contains("Max-Age=0"));
    }
}
