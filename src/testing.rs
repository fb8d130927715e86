//! What the unit tests of the decisions share: a config with a signing key
//! made once per test run, and rooms and a gate over a memory store,
//! assembled by the server's own assembly, without sockets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pingora::http::RequestHeader;

use crate::assets::Assets;
use crate::config::Config;
use crate::events::bus::Bus;
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::proxy::site::{self, Shared};
use crate::request::facts::Facts;
use crate::room::{Room, Rooms, WaitingRoom};
use crate::store::memory::MemoryStore;
use crate::store::{RoomSpec, Store};

/// A signing key written once for the whole test run.
fn key_file() -> &'static PathBuf {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("anteroom-unit-{}", std::process::id()));
        let (private, _, _) = crate::token::keygen(&dir, 2048, true).unwrap();
        private
    })
}

/// Rooms, their gate and their memory store, from `[[room]]` tables,
/// assembled as the server assembles them (`site::assemble`).
pub(crate) struct Fixture {
    pub config: Arc<Config>,
    pub rooms: Arc<Rooms>,
    pub gate: Arc<Gate>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
}

impl Fixture {
    /// A config with these rooms (and `extra` tables), every room routed.
    pub fn new(rooms: &str, extra: &str) -> Fixture {
        let text = format!(
            "[tokens]\nsigning_key = \"{}\"\n[[upstream]]\nname = \"app\"\naddress = \"127.0.0.1:9\"\n{rooms}\n[[route]]\nupstream = \"app\"\n{extra}",
            key_file().display()
        );
        let config =
            Config::from_toml(&text, Path::new("<unit>")).unwrap_or_else(|e| panic!("{e}"));
        let assets = Assets::load(&config).unwrap_or_else(|e| panic!("{e}"));
        let metrics = Metrics::new().unwrap();
        let registry = metrics.registry();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(&RoomSpec::of_config(&config)));
        let bus = Arc::new(Bus::default());
        let shared = Shared::register(registry, &config, Arc::clone(&store), None, bus).unwrap();
        let config = Arc::new(config);
        let site = site::assemble(Arc::clone(&config), assets, &shared, registry)
            .unwrap()
            .load();
        Fixture {
            config,
            rooms: Arc::clone(&site.rooms),
            gate: site.gate.clone().expect("a gate: the config has [tokens]"),
            store,
            metrics,
        }
    }

    /// The sessions room of this name.
    pub fn waiting_room(&self, name: &str) -> (&Room, &WaitingRoom) {
        self.rooms
            .waiting_rooms()
            .find(|(r, _)| r.name() == name)
            .unwrap()
    }

    /// The facts of a request as a client on 192.0.2.1 sends it.
    pub fn facts<'a>(&self, req: &'a RequestHeader) -> Facts<'a> {
        Facts::new(
            &self.config.server,
            req,
            Some("192.0.2.1".parse().unwrap()),
            false,
        )
        .unwrap()
    }
}

/// A request with these headers.
pub(crate) fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
    for (name, value) in headers {
        req.append_header(name.to_string(), *value).unwrap();
    }
    req
}
