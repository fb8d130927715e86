//! Wakeups the file as written into a `Config`, collecting every problem:
//! `Config::load` and `Config::from_toml`. Each section of the file is
//! checked by its own module (`server`, `upstream`, `room`, `tokens`,
//! `store`, `attribution`, `route`, `events`), all adding to one list of
//! `checks::Problems`; this one runs them and checks what spans sections.

use std::path::Path;

use crate::config::file::File;
use crate::config::{Config, ConfigError, Jwt, Problem, Upstream};

mod attribution;
mod checks;
mod events;
mod room;
mod route;
mod server;
mod store;
mod tokens;
mod upstream;

use attribution::attribution;
use checks::{Problems, index_by_name, regular_file};
use events::events;
use room::rooms;
use route::{Names, routes};
use server::{admin, check_listeners_disjoint, log, server};
use store::store;
use tokens::{jwt, tokens};
use upstream::upstream;

/// Largest configuration file.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        regular_file(path, MAX_CONFIG_BYTES)
            .map_err(|message| read(std::io::Error::other(message)))?;
        let text = std::fs::read_to_string(path).map_err(read)?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `origin` names it in messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        };
        let mut unknown = Vec::new();
        let document = toml::Deserializer::parse(text).map_err(parse_error)?;
        let file: File = serde_ignored::deserialize(document, |path| {
            unknown.push(Problem {
                key: key_of(&path),
                message: "unknown key (a typo? docs/configuration.md lists every key)".into(),
            });
        })
        .map_err(parse_error)?;
        let checked = validate(file, origin);
        if unknown.is_empty() {
            return checked.map_err(|problems| ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            });
        }
        // An unknown key is never dropped silently: the file is refused
        // with it and every other problem.
        unknown.extend(checked.err().unwrap_or_default());
        Err(ConfigError::Invalid {
            path: origin.to_owned(),
            problems: unknown,
        })
    }
}

/// A key's path as problems name it: tables of arrays counted from 0
/// (`room[0].limits.capcity`).
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        Path::Map { parent, key } => {
            let parent = key_of(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_of(parent),
    }
}

fn validate(file: File, origin: &Path) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();

    let server = server(&mut p, &file);
    let admin = admin(&mut p, &file);
    let log = log(&mut p, &file);
    check_listeners_disjoint(&mut p, &server, &admin);

    let upstreams: Vec<Upstream> = file
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| upstream(&mut p, i, u))
        .collect();
    let upstream_index = index_by_name(&mut p, "upstream", upstreams.iter().map(|u| &u.name));

    let jwts: Vec<Jwt> = file
        .jwts
        .iter()
        .enumerate()
        .filter_map(|(i, j)| jwt(&mut p, i, j))
        .collect();
    let jwt_index = index_by_name(&mut p, "jwt", file.jwts.iter().map(|j| &j.name));

    let tokens = file.tokens.as_ref().map(|t| tokens(&mut p, t));
    let (rooms, room_index) = rooms(&mut p, &file.rooms, &jwt_index, tokens.as_ref());
    let attribution = attribution(&mut p, &file.attribution);
    let store = store(&mut p, &file.store);
    let events = events(
        &mut p,
        &file.events,
        store.state.as_ref().map(|s| s.dir.clone()),
    );

    let names = Names {
        upstreams: &upstream_index,
        rooms: &room_index,
        jwts: &jwt_index,
    };
    let routes = routes(&mut p, &file.routes, &names, &rooms);

    if p.0.is_empty() {
        Ok(Config {
            origin: origin.to_owned(),
            server,
            admin,
            log,
            upstreams,
            rooms,
            routes,
            tokens,
            jwts,
            attribution,
            events,
            store,
        })
    } else {
        Err(p.0)
    }
}
