//! `[[upstream]]`: where requests go.

use std::time::Duration;

use super::checks::Problems;
use crate::config::file::UpstreamFile;
use crate::config::{HostHeader, Upstream};

pub(super) fn upstream(p: &mut Problems, i: usize, u: &UpstreamFile) -> Upstream {
    let key = format!("upstream[{i}]");
    p.name(&format!("{key}.name"), &u.name);
    let (host, port) = match split_host_port(&u.address) {
        Some(hp) => hp,
        None => {
            p.add(
                format!("{key}.address"),
                format!(
                    "{:?} is not host:port (e.g. \"127.0.0.1:3000\" or \"api.example.com:443\")",
                    u.address
                ),
            );
            (String::new(), 0)
        }
    };
    if u.sni.is_some() && !u.tls {
        p.add(format!("{key}.sni"), "sni is only used with tls = true");
    }
    if u.ca_file.is_some() && !u.tls {
        p.add(
            format!("{key}.ca_file"),
            "ca_file is only used with tls = true",
        );
    }
    let ca_file = u
        .ca_file
        .as_deref()
        .map(|f| p.readable_file(&format!("{key}.ca_file"), f));
    let sni = u.sni.clone().unwrap_or_else(|| host.clone());
    if u.tls && sni.parse::<std::net::IpAddr>().is_ok() && u.verify_cert.unwrap_or(true) {
        p.add(
            format!("{key}.sni"),
            "a TLS upstream given by IP address needs sni = \"<name on its certificate>\"",
        );
    }
    let host_header = host_header(p, &key, u, &sni);
    let timeout = |p: &mut Problems, field: &str, v: &Option<String>, default: u64| {
        p.positive(&format!("{key}.{field}"), v, Duration::from_secs(default))
    };
    let connect_timeout = timeout(p, "connect_timeout", &u.connect_timeout, 5);
    let read_timeout = timeout(p, "read_timeout", &u.read_timeout, 60);
    let write_timeout = timeout(p, "write_timeout", &u.write_timeout, 60);
    let idle_timeout = p.duration(
        &format!("{key}.idle_timeout"),
        u.idle_timeout.as_deref(),
        Duration::from_secs(60),
    );
    Upstream {
        name: u.name.clone(),
        host,
        port,
        tls: u.tls,
        sni,
        host_header,
        ca_file,
        verify_cert: u.verify_cert.unwrap_or(true),
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        h2: u.h2.unwrap_or(false),
    }
}

/// `host_header`: a TLS origin serves the name on its certificate, so that
/// is the `Host` it expects unless the file says.
fn host_header(p: &mut Problems, key: &str, u: &UpstreamFile, sni: &str) -> HostHeader {
    match &u.host_header {
        Some(h) if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            p.add(
                format!("{key}.host_header"),
                format!("{h:?} is not a valid Host header value"),
            );
            HostHeader::Keep
        }
        Some(h) => HostHeader::Set(h.clone()),
        None if u.tls => HostHeader::Set(sni.to_owned()),
        None => HostHeader::Keep,
    }
}

/// Splits `host:port` and `[v6]:port`; the port is required and not 0.
fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        (host, port)
    } else {
        address.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'));
    host_ok.then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a.b:80"), Some(("a.b".into(), 80)));
        assert_eq!(split_host_port("[::1]:443"), Some(("::1".into(), 443)));
        assert_eq!(split_host_port("a.b"), None);
        assert_eq!(split_host_port("a.b:0"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("http://a:80"), None);
    }
}
