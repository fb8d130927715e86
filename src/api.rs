//! anteroom's own endpoints on the public listener, under [`PREFIX`].
//! Requests there are answered here and never proxied.

use pingora::http::RequestHeader;
use serde::Serialize;

use crate::proxy::Proxy;
use crate::respond::Reply;
use crate::room::Room;

/// Paths anteroom reserves for itself on the public listener.
pub const PREFIX: &str = "/__anteroom/";

/// `GET /__anteroom/capacity?room=NAME`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Capacity<'a> {
    /// Room name.
    pub room: &'a str,
    /// Configured capacity.
    pub capacity: u32,
    /// Slots held now.
    pub in_use: u32,
    /// Slots free now.
    pub available: u32,
    /// Requests waiting in line.
    pub waiting: u32,
}

impl<'a> Capacity<'a> {
    /// The room's capacity right now.
    pub fn of(room: &'a Room) -> Capacity<'a> {
        let usage = room.usage();
        Capacity {
            room: room.name(),
            capacity: usage.capacity,
            in_use: usage.in_use,
            available: usage.available(),
            waiting: usage.waiting,
        }
    }
}

/// Answers a request under [`PREFIX`].
pub(crate) fn handle(proxy: &Proxy, req: &RequestHeader) -> Reply {
    let endpoint = req.uri.path().strip_prefix(PREFIX).unwrap_or_default();
    match endpoint {
        "capacity" => {
            if req.method != http::Method::GET && req.method != http::Method::HEAD {
                return Reply::error(405, "METHOD_NOT_ALLOWED", "Use GET.")
                    .header(http::header::ALLOW, "GET, HEAD");
            }
            capacity(proxy, req.uri.query().unwrap_or_default())
        }
        _ => Reply::error(
            404,
            "NOT_FOUND",
            format!("No anteroom endpoint {PREFIX}{endpoint}."),
        ),
    }
}

fn capacity(proxy: &Proxy, query: &str) -> Reply {
    let name = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "room")
        .map(|(_, v)| v);
    let Some(name) = name else {
        let names: Vec<&str> = proxy.rooms.iter().map(Room::name).collect();
        return Reply::error(
            400,
            "ROOM_REQUIRED",
            format!("Give ?room=NAME (rooms: {}).", names.join(", ")),
        );
    };
    match proxy.rooms.by_name(&name) {
        Some(room) => Reply::json(200, &Capacity::of(room)),
        None => Reply::error(404, "UNKNOWN_ROOM", format!("No room named {name:?}.")),
    }
}
