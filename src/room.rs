//! Rooms: a named capacity shared by the routes that refer to it.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, RoomMode};
use crate::slots::{Slots, Usage};

/// One room and its live state.
#[derive(Debug)]
pub struct Room {
    config: config::Room,
    slots: Arc<Slots>,
}

impl Room {
    /// A room with all its slots free.
    pub fn new(config: config::Room) -> Room {
        let slots = Slots::new(config.capacity);
        Room { config, slots }
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

    /// The room's slots.
    pub fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }

    /// Capacity, use and line length now.
    pub fn usage(&self) -> Usage {
        self.slots.usage()
    }
}

/// All rooms, in config order (routes refer to them by index).
#[derive(Debug)]
pub struct Rooms(Vec<Room>);

impl Rooms {
    /// Rooms from validated config.
    pub fn new(rooms: &[config::Room]) -> Rooms {
        Rooms(rooms.iter().cloned().map(Room::new).collect())
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
}
