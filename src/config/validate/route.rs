//! `[[route]]`: which requests go to which upstream, through which room.

use std::collections::HashMap;

use super::checks::{Problems, known, rules};
use crate::config::file::RouteFile;
use crate::config::{RESERVED_PREFIX, Room, RoomMode, Route};

/// What routes refer to by name, each name's index.
pub(super) struct Names<'a> {
    pub(super) upstreams: &'a HashMap<String, usize>,
    pub(super) rooms: &'a HashMap<String, usize>,
    pub(super) jwts: &'a HashMap<String, usize>,
}

/// Every `[[route]]`: at least one, none shadowed by one before it, and
/// `retry_429` only where a requests room bounds the retries.
pub(super) fn routes(
    p: &mut Problems,
    files: &[RouteFile],
    names: &Names<'_>,
    rooms: &[Room],
) -> Vec<Route> {
    if files.is_empty() {
        p.add(
            "route",
            "at least one [[route]] is needed, or nothing is proxied",
        );
    }
    let routes: Vec<Route> = files
        .iter()
        .enumerate()
        .filter_map(|(i, r)| route(p, i, r, names.upstreams, names.rooms, names.jwts))
        .collect();
    check_shadowed_routes(p, &routes);
    for (i, route) in routes.iter().enumerate() {
        let room = route.room.and_then(|r| rooms.get(r));
        if route.retry_429 && room.is_some_and(|r| r.mode() != RoomMode::Requests) {
            p.add(
                format!("route[{i}].retry_429"),
                "only applies to a route with a requests room (its max_wait bounds the retries)",
            );
        }
    }
    routes
}

/// `path_prefix`: `/` unless given; never under anteroom's own paths.
fn path_prefix(p: &mut Problems, key: &str, r: &RouteFile) -> String {
    let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_owned());
    if !path_prefix.starts_with('/') {
        p.add(
            format!("{key}.path_prefix"),
            format!("{path_prefix:?} must start with '/'"),
        );
    }
    if path_prefix.starts_with(RESERVED_PREFIX) {
        p.add(
            format!("{key}.path_prefix"),
            format!("{path_prefix:?} is under {RESERVED_PREFIX}, which anteroom answers itself and never proxies"),
        );
    }
    path_prefix
}

/// `host`: a name or a `*.` wildcard, compared in lower case.
fn host(p: &mut Problems, key: &str, r: &RouteFile) -> Option<String> {
    let host = r.host.as_ref()?.to_ascii_lowercase();
    let bare = host.strip_prefix("*.").unwrap_or(&host);
    let ok = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if !ok {
        p.add(
            format!("{key}.host"),
            format!("{host:?} is not a host name: give e.g. \"api.example.com\" or \"*.example.com\", without scheme or port"),
        );
    }
    Some(host)
}

fn route(
    p: &mut Problems,
    i: usize,
    r: &RouteFile,
    upstreams: &HashMap<String, usize>,
    rooms: &HashMap<String, usize>,
    jwts: &HashMap<String, usize>,
) -> Option<Route> {
    let key = format!("route[{i}]");
    let path_prefix = path_prefix(p, &key, r);
    let host = host(p, &key, r);
    let upstream = upstreams.get(&r.upstream).copied();
    if upstream.is_none() {
        p.add(
            format!("{key}.upstream"),
            format!(
                "unknown upstream {:?} (known: {})",
                r.upstream,
                known(upstreams)
            ),
        );
    }
    let room = match &r.room {
        None => Some(None),
        Some(name) => match rooms.get(name) {
            Some(&idx) => Some(Some(idx)),
            None => {
                p.add(
                    format!("{key}.room"),
                    format!("unknown room {name:?} (known: {})", known(rooms)),
                );
                None
            }
        },
    };
    let name = r
        .name
        .clone()
        .unwrap_or_else(|| format!("{}{}", host.as_deref().unwrap_or(""), path_prefix));
    if ["anteroom", "unrouted"].contains(&name.as_str()) {
        p.add(
            format!("{key}.name"),
            format!("{name:?} is the route label of requests no route takes; choose another"),
        );
    }
    let bypass = rules(p, &format!("{key}.bypass"), r.bypass.as_ref(), jwts);
    if !bypass.is_empty() && r.room.is_none() {
        p.add(
            format!("{key}.bypass"),
            "a route without a room lets everyone through already",
        );
    }
    if r.retry_429.is_some() && r.room.is_none() {
        p.add(
            format!("{key}.retry_429"),
            "only applies to a route with a requests room (its max_wait bounds the retries)",
        );
    }
    Some(Route {
        name,
        host,
        path_prefix,
        upstream: upstream?,
        room: room?,
        retry_429: r.retry_429.unwrap_or(false),
        case_insensitive: r.case_insensitive.unwrap_or(false),
        bypass,
    })
}

/// A route that can never match because an earlier one catches all its requests
/// is almost certainly a mistake in the order of the file.
fn check_shadowed_routes(p: &mut Problems, routes: &[Route]) {
    for (j, later) in routes.iter().enumerate() {
        if let Some((i, _)) = routes[..j].iter().enumerate().find(|(_, earlier)| {
            (earlier.host.is_none() || earlier.host == later.host)
                && later.path_prefix.starts_with(&earlier.path_prefix)
        }) {
            p.add(
                format!("route[{j}]"),
                format!(
                    "never matches: route[{i}] comes first and catches every request it would ({:?}); put the more specific route first",
                    routes[i].name
                ),
            );
        }
    }
}
