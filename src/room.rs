//! Rooms: a named capacity shared by the routes that refer to it. A
//! `requests` room counts requests in flight with local slots; a `sessions`
//! room is a waiting room whose state lives in the store.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::config::{self, OnStoreError, RoomMode, Rules, State};
use crate::leases::SharedSlots;
use crate::page::Page;
use crate::slots::{Slots, Usage};
use crate::store::{Leases, RoomSpec, Snapshot, Wait};

/// One room and its live state.
pub struct Room {
    config: config::Room,
    kind: Kind,
}

/// What a room limits.
pub enum Kind {
    /// Requests in flight, counted by this instance.
    Requests(Arc<Slots>),
    /// Requests in flight, counted across instances by the store.
    SharedRequests(Arc<SharedSlots>),
    /// Admitted visitors, with a waiting room.
    Sessions(Box<WaitingRoom>),
}

/// A `sessions` room's local side: its settings, page, and the latest
/// numbers from the store (refreshed by the sweeper and admin changes).
pub struct WaitingRoom {
    /// Settings from the file.
    pub config: config::Sessions,
    /// The waiting page.
    pub page: Page,
    snapshot: RwLock<Snapshot>,
}

impl WaitingRoom {
    /// The latest numbers known to this instance.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.read().clone()
    }

    /// Records fresh numbers from the store.
    pub fn observe(&self, snapshot: Snapshot) {
        *self.snapshot.write() = snapshot;
    }

    /// The admission state as last seen (on the hot path: no store call).
    pub fn state(&self) -> State {
        self.snapshot.read().settings.state
    }
}

impl Room {
    /// A room with all its slots free; `requests` rooms count in the store
    /// when one is shared. A sessions room shows `page` (the built-in one if none).
    pub fn new(config: config::Room, page: Option<Page>, leases: Option<&Arc<dyn Leases>>) -> Room {
        let kind = match &config.sessions {
            None => match leases {
                Some(store) => Kind::SharedRequests(SharedSlots::new(
                    &config.name,
                    config.capacity,
                    Arc::clone(store),
                )),
                None => Kind::Requests(Slots::new(config.capacity)),
            },
            Some(s) => {
                let page = page.unwrap_or_else(|| Page {
                    template: crate::page::Template::built_in(),
                    language: None,
                });
                let spec = RoomSpec::from_config(&config.name, config.capacity, s);
                Kind::Sessions(Box::new(WaitingRoom {
                    config: s.clone(),
                    page,
                    snapshot: RwLock::new(Snapshot {
                        settings: spec.settings,
                        sessions: 0,
                        reserved: 0,
                        waiting: [0, 0],
                        wait: Wait {
                            ms: 0,
                            known: false,
                        },
                    }),
                }))
            }
        };
        Room { config, kind }
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What its capacity counts.
    pub fn mode(&self) -> RoomMode {
        self.config.mode
    }

    /// How long a request may wait for a slot.
    pub fn max_wait(&self) -> Duration {
        self.config.max_wait
    }

    /// Who passes without a slot.
    pub fn bypass(&self) -> &Rules {
        &self.config.bypass
    }

    /// What newcomers get while the store is down.
    pub fn on_store_error(&self) -> OnStoreError {
        self.config.on_store_error
    }

    /// Requests or sessions.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The store's view of a sessions room.
    pub fn spec(&self) -> Option<RoomSpec> {
        let s = self.config.sessions.as_ref()?;
        Some(RoomSpec::from_config(
            &self.config.name,
            self.config.capacity,
            s,
        ))
    }

    /// Capacity, use and line length now (for sessions rooms: as last seen).
    pub fn usage(&self) -> Usage {
        match &self.kind {
            Kind::Requests(slots) => slots.usage(),
            Kind::SharedRequests(slots) => slots.usage(),
            Kind::Sessions(w) => {
                let s = w.snapshot();
                Usage {
                    capacity: s.settings.capacity,
                    in_use: s.in_use(),
                    waiting: s.queue_length(),
                }
            }
        }
    }
}

/// All rooms, in config order (routes refer to them by index).
pub struct Rooms(Vec<Room>);

impl Rooms {
    /// Rooms from validated config and their pages (by index, as `Assets`
    /// loads them); `leases` is the shared store, if any.
    pub fn new(
        rooms: &[config::Room],
        pages: &[Option<Page>],
        leases: Option<&Arc<dyn Leases>>,
    ) -> Rooms {
        Rooms(
            rooms
                .iter()
                .enumerate()
                .map(|(i, r)| Room::new(r.clone(), pages.get(i).cloned().flatten(), leases))
                .collect(),
        )
    }

    /// The room at a config index.
    pub fn get(&self, index: usize) -> Option<&Room> {
        self.0.get(index)
    }

    /// The room with this name.
    pub fn by_name(&self, name: &str) -> Option<&Room> {
        self.0.iter().find(|r| r.name() == name)
    }

    /// Every room.
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.0.iter()
    }

    /// Every sessions room with its waiting room.
    pub fn waiting_rooms(&self) -> impl Iterator<Item = (&Room, &WaitingRoom)> {
        self.0.iter().filter_map(|r| match &r.kind {
            Kind::Sessions(w) => Some((r, &**w)),
            Kind::Requests(_) | Kind::SharedRequests(_) => None,
        })
    }

    /// Every room whose request slots are shared through the store.
    pub fn shared_slots(&self) -> impl Iterator<Item = &Arc<SharedSlots>> {
        self.0.iter().filter_map(|r| match &r.kind {
            Kind::SharedRequests(s) => Some(s),
            _ => None,
        })
    }
}
