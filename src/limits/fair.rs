//! A line served in turn per client: deficit round robin (Shreedhar and
//! Varghese, 1995) with every request costing one unit, so each client with
//! someone waiting is served up to its weight in requests per round, and a
//! client alone is served every time. A client with ten times the demand
//! gets no more than its share while others wait, and the order within one
//! client stays first come, first served.
//!
//! With every waiter under one key (`fair_by = "none"`) it is a plain FIFO.

use std::collections::{HashMap, VecDeque};

/// Whose turn a waiter takes, and how many requests per round that client
/// is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// The client: a hash of its network, pass session or header value.
    pub key: u64,
    /// Requests served per round (at least 1).
    pub weight: u32,
}

impl Turn {
    /// Everyone in one line, first come, first served.
    pub const ANYONE: Turn = Turn { key: 0, weight: 1 };
}

/// One client's waiters.
#[derive(Debug)]
struct Flow<T> {
    waiters: VecDeque<(u64, T)>,
    weight: u32,
    /// Requests still to serve in its current turn.
    left: u32,
}

/// Waiters, served in turn per client.
#[derive(Debug)]
pub struct FairLine<T> {
    next_id: u64,
    flows: HashMap<u64, Flow<T>>,
    /// Clients with someone waiting, the one being served first.
    round: VecDeque<u64>,
    len: usize,
}

impl<T> Default for FairLine<T> {
    fn default() -> Self {
        FairLine {
            next_id: 0,
            flows: HashMap::new(),
            round: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairLine<T> {
    /// Adds a waiter at the back of its client's line; the id takes it out.
    pub fn push(&mut self, turn: Turn, waiter: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let weight = turn.weight.max(1);
        let flow = self.flows.entry(turn.key).or_insert_with(|| {
            self.round.push_back(turn.key);
            Flow {
                waiters: VecDeque::new(),
                weight,
                left: weight,
            }
        });
        flow.weight = weight;
        flow.waiters.push_back((id, waiter));
        self.len += 1;
        id
    }

    /// The next waiter in turn.
    pub fn pop(&mut self) -> Option<T> {
        let key = *self.round.front()?;
        let flow = self.flows.get_mut(&key)?;
        let (_, waiter) = flow.waiters.pop_front()?;
        self.len -= 1;
        flow.left = flow.left.saturating_sub(1);
        if flow.waiters.is_empty() {
            self.flows.remove(&key);
            self.round.pop_front();
        } else if flow.left == 0 {
            flow.left = flow.weight;
            self.round.rotate_left(1);
        }
        Some(waiter)
    }

    /// Takes a waiter out (it stopped waiting); false if it was not there.
    pub fn remove(&mut self, key: u64, id: u64) -> bool {
        let Some(flow) = self.flows.get_mut(&key) else {
            return false;
        };
        let Some(i) = flow.waiters.iter().position(|(w, _)| *w == id) else {
            return false;
        };
        flow.waiters.remove(i);
        self.len -= 1;
        if flow.waiters.is_empty() {
            self.flows.remove(&key);
            self.round.retain(|k| *k != key);
        }
        true
    }

    /// Waiters in line.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(key: u64) -> Turn {
        Turn { key, weight: 1 }
    }

    #[test]
    fn one_client_is_first_come_first_served() {
        let mut line = FairLine::default();
        for i in 0..5 {
            line.push(Turn::ANYONE, i);
        }
        let order: Vec<_> = std::iter::from_fn(|| line.pop()).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        assert!(line.is_empty());
    }

    #[test]
    fn a_heavy_client_gets_its_share_not_its_demand() {
        let mut line = FairLine::default();
        // Heavy arrives first with ten waiters, light then with two.
        for i in 0..10 {
            line.push(turn(1), ("heavy", i));
        }
        line.push(turn(2), ("light", 0));
        line.push(turn(2), ("light", 1));
        let first: Vec<_> = (0..4).filter_map(|_| line.pop()).collect();
        assert_eq!(
            first,
            vec![("heavy", 0), ("light", 0), ("heavy", 1), ("light", 1)]
        );
        // Alone, the heavy client gets everything left, in its own order.
        let rest: Vec<_> = std::iter::from_fn(|| line.pop()).map(|(_, i)| i).collect();
        assert_eq!(rest, (2..10).collect::<Vec<_>>());
    }

    #[test]
    fn weights_serve_that_many_per_round() {
        let mut line = FairLine::default();
        for i in 0..6 {
            line.push(Turn { key: 1, weight: 2 }, (1, i));
            line.push(turn(2), (2, i));
        }
        let keys: Vec<_> = (0..9).filter_map(|_| line.pop()).map(|(k, _)| k).collect();
        assert_eq!(keys, vec![1, 1, 2, 1, 1, 2, 1, 1, 2]);
    }

    #[test]
    fn a_waiter_that_leaves_is_skipped_and_an_emptied_client_leaves_the_round() {
        let mut line = FairLine::default();
        let a = line.push(turn(1), "a");
        line.push(turn(2), "b");
        line.push(turn(1), "c");
        assert!(line.remove(1, a));
        assert!(!line.remove(1, a), "already gone");
        assert_eq!(line.len(), 2);
        assert_eq!(line.pop(), Some("c"));
        assert_eq!(line.pop(), Some("b"));
        assert_eq!(line.pop(), None);
        let only = line.push(turn(3), "d");
        assert!(line.remove(3, only));
        assert!(line.is_empty());
        assert_eq!(line.pop(), None);
    }
}
