//! The line of a waiting room: two lanes (priority and normal), each first
//! come first served, with exact positions in O(log n).
//!
//! Tickets of a lane get consecutive sequence numbers and live in a dense
//! array indexed by them. Two Fenwick trees over that array count the tickets
//! that are *live* (waiting or holding a reservation: they are ahead of
//! others) and *eligible* (waiting, could be offered a slot). A ticket's place
//! is the number of live tickets before it; the next ticket to offer a slot is
//! the first eligible one. Both are O(log n), so a status poll costs the same
//! with a thousand or a million people in line.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::attribution::Utm;

/// Milliseconds since the UNIX epoch.
pub type Millis = u64;

/// Which line a visitor waits in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Lane {
    /// Served first, `weight` admissions per normal one while both wait.
    Priority = 0,
    /// Everyone else.
    #[default]
    Normal = 1,
}

impl Lane {
    /// Both lanes, priority first.
    pub const ALL: [Lane; 2] = [Lane::Priority, Lane::Normal];

    /// The name used in tokens, metrics and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Priority => "priority",
            Lane::Normal => "normal",
        }
    }

    /// Parses `as_str`'s output.
    pub fn parse(text: &str) -> Option<Lane> {
        match text {
            "priority" => Some(Lane::Priority),
            "normal" => Some(Lane::Normal),
            _ => None,
        }
    }
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TicketState {
    /// Handed out, but its holder has not come back with it yet: ahead of
    /// nobody and offered nothing, so that clients that keep no tokens (bots)
    /// take no place. Its first poll makes it `Waiting`, at its arrival's place.
    Unconfirmed,
    /// In line and heard from recently.
    Waiting,
    /// Not heard from for a while: keeps its place for a comeback, but is
    /// ahead of nobody and offered nothing.
    Stale,
    /// At the front with a slot held for it.
    Reserved,
    /// Admitted, left or forgotten.
    Gone,
}

impl TicketState {
    fn live(self) -> bool {
        matches!(self, TicketState::Waiting | TicketState::Reserved)
    }
    fn eligible(self) -> bool {
        self == TicketState::Waiting
    }
}

/// One ticket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ticket {
    /// When it joined.
    pub joined: Millis,
    /// When its holder was last heard from.
    pub last_seen: Millis,
    /// How many were ahead when it joined (for the progress bar).
    pub ahead_at_join: u32,
    /// Where it stands.
    pub state: TicketState,
    /// The campaign its holder came from.
    pub utm: Option<Arc<Utm>>,
    /// Its holder's client network, hashed.
    pub network: Option<Arc<str>>,
}

/// Counts over positions `[0, n)` with O(log n) prefix sums and search.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Fenwick {
    tree: Vec<u32>,
}

impl Fenwick {
    fn with_len(n: usize) -> Fenwick {
        Fenwick { tree: vec![0; n] }
    }

    fn len(&self) -> usize {
        self.tree.len()
    }

    fn add(&mut self, index: usize, delta: i32) {
        let mut i = index + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] = self.tree[i - 1].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Sum over `[0, index)`.
    fn prefix(&self, index: usize) -> u32 {
        let mut i = index.min(self.tree.len());
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i - 1];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// The smallest index whose inclusive prefix sum reaches `k` (k ≥ 1).
    fn find(&self, k: u32) -> Option<usize> {
        let n = self.tree.len();
        let mut pos = 0;
        let mut rest = k;
        let mut step = n.checked_next_power_of_two()?;
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next - 1] < rest {
                pos = next;
                rest -= self.tree[next - 1];
            }
            step >>= 1;
        }
        (pos < n).then_some(pos)
    }
}

/// One lane of tickets.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct LaneQueue {
    /// Sequence number of `tickets[0]`.
    base: u64,
    tickets: VecDeque<Ticket>,
    /// Sequence number of index 0 of the Fenwick trees.
    tree_base: u64,
    live: Fenwick,
    eligible: Fenwick,
    live_count: u32,
    eligible_count: u32,
    /// Tickets not confirmed yet (counted only for the estimate of a burst;
    /// last, so older state files decode, and rebuilt when restored).
    #[serde(default)]
    unconfirmed: Fenwick,
}

impl LaneQueue {
    /// Live tickets (waiting or reserved).
    pub fn live(&self) -> u32 {
        self.live_count
    }

    /// Tickets that could be offered a slot.
    pub fn eligible(&self) -> u32 {
        self.eligible_count
    }

    /// Tickets held, including stale ones kept for a comeback.
    pub fn held(&self) -> usize {
        self.tickets.len()
    }

    /// Sequence number the next ticket will get.
    pub fn next_seq(&self) -> u64 {
        self.base + self.tickets.len() as u64
    }

    /// Adds a ticket at the back, waiting (`Waiting`) or not yet confirmed
    /// (`Unconfirmed`); returns its sequence number.
    pub fn push(
        &mut self,
        now: Millis,
        utm: Option<Arc<Utm>>,
        network: Option<Arc<str>>,
        state: TicketState,
    ) -> u64 {
        let seq = self.next_seq();
        self.tickets.push_back(Ticket {
            joined: now,
            last_seen: now,
            ahead_at_join: 0,
            state: TicketState::Gone,
            utm,
            network,
        });
        self.set_state(seq, state);
        seq
    }

    /// The ticket with this sequence number, if still held.
    pub fn get(&self, seq: u64) -> Option<&Ticket> {
        self.tickets
            .get(usize::try_from(seq.checked_sub(self.base)?).ok()?)
    }

    /// Mutable access for fields other than `state` (use `set_state`).
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Ticket> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.tickets.get_mut(i)
    }

    /// Live tickets before `seq`.
    pub fn live_before(&self, seq: u64) -> u32 {
        match seq.checked_sub(self.tree_base) {
            Some(i) => self.live.prefix(usize::try_from(i).unwrap_or(usize::MAX)),
            None => 0,
        }
    }

    /// Tickets before `seq` that joined at `since` or later and have not
    /// been confirmed yet: in a burst, the visitors just ahead whose first
    /// poll has not come yet.
    pub fn fresh_before(&self, seq: u64, since: Millis) -> u32 {
        let first = self.base + self.tickets.partition_point(|t| t.joined < since) as u64;
        let prefix = |s: u64| match s.checked_sub(self.tree_base) {
            Some(i) => self
                .unconfirmed
                .prefix(usize::try_from(i).unwrap_or(usize::MAX)),
            None => 0,
        };
        prefix(seq).saturating_sub(prefix(first.min(seq)))
    }

    /// The first ticket that could be offered a slot.
    pub fn first_eligible(&self) -> Option<u64> {
        if self.eligible_count == 0 {
            return None;
        }
        self.eligible.find(1).map(|i| self.tree_base + i as u64)
    }

    /// Moves a ticket to a new state, keeping the counts right. Gone tickets
    /// at the front are dropped.
    pub fn set_state(&mut self, seq: u64, state: TicketState) {
        let Some(old) = self.get(seq).map(|t| t.state) else {
            return;
        };
        if old == state {
            return;
        }
        // Grow the trees first: a rebuild counts tickets by their current state.
        self.ensure_tree(seq);
        if let Some(ticket) = self.get_mut(seq) {
            ticket.state = state;
        }
        let i = (seq - self.tree_base) as usize;
        if old.live() != state.live() {
            let d = if state.live() { 1 } else { -1 };
            self.live.add(i, d);
            self.live_count = self.live_count.wrapping_add_signed(d);
        }
        if old.eligible() != state.eligible() {
            let d = if state.eligible() { 1 } else { -1 };
            self.eligible.add(i, d);
            self.eligible_count = self.eligible_count.wrapping_add_signed(d);
        }
        let unconfirmed = |s: TicketState| s == TicketState::Unconfirmed;
        if unconfirmed(old) != unconfirmed(state) {
            self.unconfirmed
                .add(i, if unconfirmed(state) { 1 } else { -1 });
        }
        if state == TicketState::Gone {
            self.drop_gone_front();
        }
    }

    /// Sequence numbers of held tickets in `[from, from + max)`, for the sweeper.
    pub fn scan(&self, from: u64, max: usize) -> impl Iterator<Item = (u64, &Ticket)> {
        let start = from.max(self.base);
        let skip = usize::try_from(start - self.base).unwrap_or(usize::MAX);
        self.tickets
            .iter()
            .skip(skip)
            .take(max)
            .enumerate()
            .map(move |(k, t)| (start + k as u64, t))
    }

    fn drop_gone_front(&mut self) {
        while self
            .tickets
            .front()
            .is_some_and(|t| t.state == TicketState::Gone)
        {
            self.tickets.pop_front();
            self.base += 1;
        }
        // Rebuild the trees once their dead front is as large as the rest.
        let dead = (self.base - self.tree_base) as usize;
        if dead > 1024 && dead * 2 > self.live.len() {
            self.rebuild(self.live.len());
        }
    }

    fn ensure_tree(&mut self, seq: u64) {
        let needed = (seq - self.tree_base) as usize + 1;
        if needed > self.live.len() {
            let len = (self.tickets.len() + 1).next_power_of_two().max(64);
            self.rebuild(len.max((seq - self.base) as usize + 1));
        }
    }

    /// New trees starting at `base`, of at least `len` positions.
    fn rebuild(&mut self, len: usize) {
        let len = len.max(self.tickets.len()).max(64);
        self.tree_base = self.base;
        self.live = Fenwick::with_len(len);
        self.eligible = Fenwick::with_len(len);
        self.unconfirmed = Fenwick::with_len(len);
        for (i, t) in self.tickets.iter().enumerate() {
            if t.state.live() {
                self.live.add(i, 1);
            }
            if t.state.eligible() {
                self.eligible.add(i, 1);
            }
            if t.state == TicketState::Unconfirmed {
                self.unconfirmed.add(i, 1);
            }
        }
    }
}

/// Both lanes and the rule that shares admissions between them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Queue {
    lanes: [LaneQueue; 2],
    weight: u32,
    /// Priority admissions since the last normal one.
    streak: u32,
}

impl Queue {
    /// Recounts every lane's trees (after a restore from an older file).
    pub fn reindex(&mut self) {
        for lane in &mut self.lanes {
            let len = lane.live.len();
            lane.rebuild(len);
        }
    }

    /// Changes the weighting for the admissions to come.
    pub fn set_weight(&mut self, weight: u32) {
        self.weight = weight.max(1);
    }

    /// An empty line; `weight` priority admissions per normal one while both wait.
    pub fn new(weight: u32) -> Queue {
        Queue {
            lanes: [LaneQueue::default(), LaneQueue::default()],
            weight: weight.max(1),
            streak: 0,
        }
    }

    /// One lane.
    pub fn lane(&self, lane: Lane) -> &LaneQueue {
        &self.lanes[lane as usize]
    }

    /// One lane, mutable.
    pub fn lane_mut(&mut self, lane: Lane) -> &mut LaneQueue {
        &mut self.lanes[lane as usize]
    }

    /// Live tickets in both lanes.
    pub fn live(&self) -> u32 {
        self.lanes[0].live() + self.lanes[1].live()
    }

    /// Tickets that could be offered a slot, in both lanes.
    pub fn eligible(&self) -> u32 {
        self.lanes[0].eligible() + self.lanes[1].eligible()
    }

    /// The lane whose head is offered the next free slot.
    pub fn next_lane(&self) -> Option<Lane> {
        let p = self.lanes[0].eligible() > 0;
        let n = self.lanes[1].eligible() > 0;
        match (p, n) {
            (true, true) if self.streak < self.weight => Some(Lane::Priority),
            (_, true) => Some(Lane::Normal),
            (true, false) => Some(Lane::Priority),
            (false, false) => None,
        }
    }

    /// Records that a lane's head was offered a slot.
    pub fn served(&mut self, lane: Lane) {
        match lane {
            Lane::Priority => self.streak = self.streak.saturating_add(1),
            Lane::Normal => self.streak = 0,
        }
    }

    /// How many admissions come before this ticket's, if nobody new arrives:
    /// the live tickets ahead in its lane plus those of the other lane that
    /// the weighting serves first.
    pub fn ahead(&self, lane: Lane, seq: u64) -> u32 {
        let same = self.lane(lane).live_before(seq);
        match lane {
            Lane::Normal => {
                let priority = self.lanes[0].live();
                same + priority.min(self.weight.saturating_mul(same + 1))
            }
            Lane::Priority => same + self.lanes[1].live().min(same / self.weight),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenwick_prefix_and_find() {
        let mut f = Fenwick::with_len(10);
        for i in [1, 3, 4, 8] {
            f.add(i, 1);
        }
        assert_eq!(f.prefix(0), 0);
        assert_eq!(f.prefix(4), 2);
        assert_eq!(f.prefix(10), 4);
        assert_eq!(f.find(1), Some(1));
        assert_eq!(f.find(3), Some(4));
        assert_eq!(f.find(4), Some(8));
        assert_eq!(f.find(5), None);
    }

    #[test]
    fn fresh_counts_recent_unconfirmed_tickets_ahead() {
        let mut lane = LaneQueue::default();
        let old = lane.push(1_000, None, None, TicketState::Unconfirmed);
        let a = lane.push(5_000, None, None, TicketState::Unconfirmed);
        let b = lane.push(5_000, None, None, TicketState::Waiting);
        let c = lane.push(5_001, None, None, TicketState::Unconfirmed);
        let me = lane.push(5_002, None, None, TicketState::Unconfirmed);
        // Since 4,000: a and c (old is too old, b is confirmed).
        assert_eq!(lane.fresh_before(me, 4_000), 2);
        assert_eq!(lane.fresh_before(c, 4_000), 1);
        assert_eq!(lane.fresh_before(me, 0), 3);
        lane.set_state(a, TicketState::Waiting);
        assert_eq!(lane.fresh_before(me, 4_000), 1);
        let _ = (old, b);
    }

    #[test]
    fn positions_count_live_tickets_only() {
        let mut q = LaneQueue::default();
        let seqs: Vec<u64> = (0..5)
            .map(|i| q.push(i, None, None, TicketState::Waiting))
            .collect();
        assert_eq!(q.live_before(seqs[4]), 4);
        q.set_state(seqs[1], TicketState::Stale);
        assert_eq!(q.live_before(seqs[4]), 3);
        assert_eq!(q.first_eligible(), Some(seqs[0]));
        q.set_state(seqs[0], TicketState::Reserved);
        assert_eq!(q.first_eligible(), Some(seqs[2]));
        assert_eq!(
            q.live_before(seqs[4]),
            3,
            "a reservation still counts as ahead"
        );
        q.set_state(seqs[0], TicketState::Gone);
        assert_eq!(q.live_before(seqs[4]), 2);
        // A comeback takes its old place, ahead of later tickets.
        q.set_state(seqs[1], TicketState::Waiting);
        assert_eq!(q.first_eligible(), Some(seqs[1]));
        assert_eq!(q.live_before(seqs[1]), 0);
    }

    #[test]
    fn survives_growth_and_compaction() {
        let mut q = LaneQueue::default();
        let mut next_gone = 0;
        for round in 0..20_000u64 {
            q.push(round, None, None, TicketState::Waiting);
            if round % 3 == 0 {
                q.set_state(next_gone, TicketState::Gone);
                next_gone += 1;
            }
        }
        let live = q.live();
        assert_eq!(live as u64, 20_000 - next_gone);
        let last = q.next_seq() - 1;
        assert_eq!(q.live_before(last), live - 1);
        assert_eq!(q.first_eligible(), Some(next_gone));
    }

    #[test]
    fn weighting_never_starves_the_normal_lane() {
        let mut q = Queue::new(2);
        for i in 0..10 {
            q.lane_mut(Lane::Priority)
                .push(i, None, None, TicketState::Waiting);
            q.lane_mut(Lane::Normal)
                .push(i, None, None, TicketState::Waiting);
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            let lane = q.next_lane().unwrap();
            let seq = q.lane(lane).first_eligible().unwrap();
            q.lane_mut(lane).set_state(seq, TicketState::Gone);
            q.served(lane);
            order.push(lane);
        }
        use Lane::*;
        assert_eq!(
            order,
            [Priority, Priority, Normal, Priority, Priority, Normal]
        );
    }

    #[test]
    fn ahead_includes_the_other_lane_by_weight() {
        let mut q = Queue::new(3);
        for i in 0..10 {
            q.lane_mut(Lane::Priority)
                .push(i, None, None, TicketState::Waiting);
        }
        let n0 = q
            .lane_mut(Lane::Normal)
            .push(0, None, None, TicketState::Waiting);
        let n1 = q
            .lane_mut(Lane::Normal)
            .push(1, None, None, TicketState::Waiting);
        // First normal: served after 3 priority; second after 6.
        assert_eq!(q.ahead(Lane::Normal, n0), 3);
        assert_eq!(q.ahead(Lane::Normal, n1), 1 + 6);
        // 7th priority ticket: 6 priority ahead, 2 normals served in between.
        assert_eq!(q.ahead(Lane::Priority, 6), 6 + 2);
    }
}
