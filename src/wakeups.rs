//! Who is waiting for their turn on an event stream of this instance.
//!
//! A store wakes a ticket the moment it reserves a slot for it (the memory
//! store in the step that reserves; a shared store through the message its
//! script publishes, which every instance hears). Only tickets with an open
//! stream here are registered, so a wake-up costs one map lookup and reaches
//! exactly the one visitor whose turn it is: nobody else is woken.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// One ticket's open streams (two tabs share one wake-up).
struct Entry {
    notify: Arc<Notify>,
    streams: usize,
}

/// The tickets with an open event stream, by room.
#[derive(Default)]
pub struct Wakeups {
    rooms: Mutex<HashMap<String, HashMap<String, Entry>>>,
    streams: AtomicUsize,
}

impl Wakeups {
    /// A registry with nobody in it.
    pub fn new() -> Arc<Wakeups> {
        Arc::new(Wakeups::default())
    }

    /// Registers an open stream for `ticket` in `room` until the returned
    /// watch drops.
    pub fn watch(self: &Arc<Self>, room: &str, ticket: &str) -> Watch {
        let mut rooms = self.rooms.lock();
        let entry = rooms
            .entry(room.to_owned())
            .or_default()
            .entry(ticket.to_owned())
            .or_insert_with(|| Entry {
                notify: Arc::new(Notify::new()),
                streams: 0,
            });
        entry.streams += 1;
        self.streams.fetch_add(1, Ordering::Relaxed);
        Watch {
            notify: Arc::clone(&entry.notify),
            turns: Arc::clone(self),
            room: room.to_owned(),
            ticket: ticket.to_owned(),
        }
    }

    /// A slot was reserved for `ticket`: wakes its streams, if it has any
    /// here. Returns whether it had.
    pub fn wake(&self, room: &str, ticket: &str) -> bool {
        let rooms = self.rooms.lock();
        match rooms.get(room).and_then(|r| r.get(ticket)) {
            Some(entry) => {
                entry.notify.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// Open streams on this instance.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    fn unwatch(&self, room: &str, ticket: &str) {
        let mut rooms = self.rooms.lock();
        let Some(tickets) = rooms.get_mut(room) else {
            return;
        };
        if let Some(entry) = tickets.get_mut(ticket) {
            entry.streams -= 1;
            if entry.streams == 0 {
                tickets.remove(ticket);
            }
        }
        if tickets.is_empty() {
            rooms.remove(room);
        }
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open stream's registration.
pub struct Watch {
    notify: Arc<Notify>,
    turns: Arc<Wakeups>,
    room: String,
    ticket: String,
}

impl Watch {
    /// Resolves at the ticket's next wake-up after this call. Create it
    /// before looking at the store, and a reservation made in between is
    /// not missed: `notify_waiters` reaches every future that exists.
    pub fn woken(&self) -> Pin<Box<Notified<'_>>> {
        let mut notified = Box::pin(self.notify.notified());
        // Registered now, not at its first poll.
        notified.as_mut().enable();
        notified
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.turns.unwatch(&self.room, &self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_only_its_ticket() {
        let turns = Wakeups::new();
        let a = turns.watch("web", "a");
        let b = turns.watch("web", "b");
        let (woken_a, woken_b) = (a.woken(), b.woken());
        assert!(turns.wake("web", "a"));
        woken_a.await;
        // b was not woken: its future is still pending.
        let mut woken_b = woken_b;
        assert!(futures_util::poll!(&mut woken_b).is_pending());
        assert!(!turns.wake("shop", "a"), "another room's ticket");
        assert_eq!(turns.streams(), 2);
    }

    #[tokio::test]
    async fn a_wake_between_check_and_wait_is_kept() {
        let turns = Wakeups::new();
        let watch = turns.watch("web", "a");
        let woken = watch.woken();
        turns.wake("web", "a");
        // Awaited only after the wake-up: still resolves.
        woken.await;
    }

    #[test]
    fn two_streams_of_one_ticket_unregister_separately() {
        let turns = Wakeups::new();
        let first = turns.watch("web", "a");
        let second = turns.watch("web", "a");
        drop(first);
        assert!(turns.wake("web", "a"));
        drop(second);
        assert!(!turns.wake("web", "a"));
        assert_eq!(turns.streams(), 0);
        assert!(turns.rooms.lock().is_empty());
    }
}
