//! The in-memory store: one instance's rooms, each behind its own lock.
//!
//! `RoomState` is the waiting room's logic as plain synchronous code with the
//! time passed in, so it is tested and benchmarked without sockets or clocks.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{
    Adopt, Arrival, FRESH, FRESH_MAX, Lane, Millis, Newcomer, Place, Polled, Presence, RoomSpec,
    SessionId, SessionInfo, Settings, SettingsPatch, Snapshot, Store, StoreError, Swept, Wait,
    now_millis,
};
use crate::attribution::Utm;
use crate::config::State;
use crate::queue::{Queue, TicketState};
use crate::wakeups::Wakeups;

/// Most tickets a rejoining ticket may be ahead of the last one given out
/// (those issued between the last state file and a crash).
const REJOIN_GAP: u64 = 100_000;
/// Tickets examined per lock hold by the sweeper, so requests never wait long.
const SWEEP_CHUNK: usize = 16_384;
/// Synthetic visitors added per lock hold.
const FILL_CHUNK: u32 = 16_384;
/// Time constant of the admission-rate average.
const RATE_TAU_MS: f64 = 60_000.0;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Session {
    admitted_at: Millis,
    last_seen: Millis,
    wait_ms: u64,
    utm: Option<Arc<Utm>>,
    /// The visitor came back with their pass (or came in from the line):
    /// until then the place lapses after `confirm_window`.
    confirmed: bool,
}

/// Admissions from the line: an exponentially weighted count (time constant
/// one minute) and when the last one was, which says whether the line moves.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Rate {
    /// Decayed sum of admissions, divided by the time constant.
    sum: f64,
    at: Millis,
    /// Start of the current run of admissions.
    since: Millis,
    samples: u32,
}

impl Rate {
    /// One admission from the line. A silence longer than `gap` (a visit:
    /// a full room lets someone in far more often) ends the run, so that the
    /// pace is measured while the line moves, not across the pause between
    /// two bursts.
    fn record(&mut self, now: Millis, gap: f64) {
        let decayed = self.decayed(now);
        let silence = now.saturating_sub(self.at) as f64;
        if self.samples == 0 || silence > gap.min(5.0 * RATE_TAU_MS) {
            *self = Rate {
                since: now,
                ..Rate::default()
            };
        } else {
            self.sum = decayed;
        }
        self.sum += 1.0 / RATE_TAU_MS;
        self.at = now;
        self.samples = self.samples.saturating_add(1);
    }

    fn decayed(&self, now: Millis) -> f64 {
        self.sum * (-(now.saturating_sub(self.at) as f64) / RATE_TAU_MS).exp()
    }

    /// Admissions per ms since this run of them began, once there are `min`.
    fn per_ms(&self, now: Millis, min: u32) -> Option<f64> {
        let span = now.saturating_sub(self.since) as f64;
        if self.samples < min || span <= 0.0 {
            return None;
        }
        let weight = 1.0 - (-span / RATE_TAU_MS).exp();
        // n admissions span n - 1 gaps.
        let gaps = f64::from(self.samples - 1) / f64::from(self.samples);
        Some(self.decayed(now) / weight * gaps).filter(|r| *r > 0.0)
    }
}

/// Token bucket for `admit_rate`, one second of burst, full to start with.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Bucket {
    tokens: f64,
    at: Millis,
}

impl Bucket {
    fn take(&mut self, now: Millis, rate: f64) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let burst = rate.max(1.0);
        self.tokens = (self.tokens + now.saturating_sub(self.at) as f64 * rate / 1000.0).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How much longer a session of this `age` is expected to last, for visits
/// of mean `visit` that end within `spread` of it (taken as evenly spread):
/// the rest of the visit while younger than the earliest end, then half the
/// time to the latest, and a sliver once past even that.
fn remaining(age: f64, visit: f64, spread: f64) -> f64 {
    let (earliest, latest) = (visit - spread, visit + spread);
    if age < earliest {
        visit - age
    } else if age < latest {
        (latest - age) / 2.0
    } else {
        spread.max(visit * 0.05) / 4.0
    }
}

/// How long a turn is expected to wait for its visitor's claim before any
/// was measured: half a poll (a polling client claims at its next poll; a
/// page that hears its turn pushed claims at once, so this errs long).
fn claim_prior(spec: &RoomSpec) -> f64 {
    spec.poll_interval.as_millis() as f64 / 2.0
}

/// What an `Idempotency-Key` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Given {
    Ticket(Lane, u64),
    Session(u128),
}

/// One room's state and the waiting room's rules.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RoomState {
    spec: RoomSpec,
    settings: Settings,
    /// Changes whenever the state is created: tickets of an earlier life are unknown.
    epoch: u64,
    sessions: HashMap<u128, Session>,
    queue: Queue,
    /// Reserved ticket → claim deadline.
    reserved: HashMap<(Lane, u64), Millis>,
    /// Claim deadlines in order (entries whose ticket moved on are skipped).
    deadlines: VecDeque<(Millis, Lane, u64)>,
    bucket: Bucket,
    admissions: Rate,
    /// Average visit length in ms, once visits have ended.
    avg_visit_ms: Option<f64>,
    /// Where the sweeper continues, per lane.
    sweep_from: [u64; 2],
    /// Tickets held per client network (with `tickets_per_client`).
    per_network: HashMap<Arc<str>, u32>,
    /// `Idempotency-Key` → what it was given, until when.
    idempotent: HashMap<String, (Given, Millis)>,
    /// Average time from a slot held to its visitor claiming it, in ms
    /// (added last: older state files decode with the default).
    #[serde(default)]
    avg_claim_ms: f64,
    /// Visits measured so far (added last, as above).
    #[serde(default)]
    visits_measured: u32,
    /// Mean absolute deviation of the visits from their average, in ms.
    #[serde(default)]
    visit_spread_ms: f64,
    /// Sessions that ended → until when their passes could still come
    /// back: those are not taken back (added last, as above).
    #[serde(default)]
    ended: HashMap<u128, Millis>,
    /// Tickets given a slot in the current step, to wake after it.
    #[serde(skip)]
    turned: Vec<String>,
    /// Sessions by admission, oldest first: when the slots free, for the
    /// estimate (rebuilt from `sessions` when restored).
    #[serde(skip)]
    ages: Vec<(Millis, u128)>,
}

impl RoomState {
    /// A room with nobody in it.
    pub fn new(spec: RoomSpec, now: Millis) -> RoomState {
        let prior_claim = claim_prior(&spec);
        RoomState {
            settings: spec.settings,
            queue: Queue::new(spec.priority_weight),
            spec,
            epoch: rand::random::<u64>() >> 16,
            sessions: HashMap::new(),
            reserved: HashMap::new(),
            deadlines: VecDeque::new(),
            bucket: Bucket {
                // Capped at one second's burst by the first take.
                tokens: f64::MAX,
                at: now,
            },
            admissions: Rate::default(),
            avg_visit_ms: None,
            avg_claim_ms: prior_claim,
            visits_measured: 0,
            visit_spread_ms: 0.0,
            ended: HashMap::new(),
            sweep_from: [0, 0],
            per_network: HashMap::new(),
            idempotent: HashMap::new(),
            turned: Vec::new(),
            ages: Vec::new(),
        }
    }

    /// What a state file does not hold, from what it does (after a restore).
    fn reindex(&mut self) {
        self.queue.reindex();
        self.ages = self
            .sessions
            .iter()
            .map(|(id, s)| (s.admitted_at, *id))
            .collect();
        self.ages.sort_unstable();
    }

    fn free(&self) -> u32 {
        let used = self.sessions.len() + self.reserved.len();
        self.settings
            .capacity
            .saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
    }

    fn ticket_id(&self, lane: Lane, seq: u64) -> String {
        format!("{:x}.{}.{seq:x}", self.epoch, lane as u8)
    }

    fn parse_ticket(&self, ticket: &str) -> Option<(Lane, u64)> {
        let mut parts = ticket.split('.');
        let epoch = u64::from_str_radix(parts.next()?, 16).ok()?;
        let lane = match parts.next()? {
            "0" => Lane::Priority,
            "1" => Lane::Normal,
            _ => return None,
        };
        let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
        (epoch == self.epoch && parts.next().is_none()).then_some((lane, seq))
    }

    /// The expected visit length. Visits end shortest first, so the first
    /// ones measured understate it: until three times as many have ended as
    /// the room has slots, `avg_session` stands in for those not seen yet.
    fn visit_ms(&self) -> f64 {
        let prior = self.spec.avg_session.as_millis() as f64;
        let Some(measured) = self.avg_visit_ms else {
            return prior;
        };
        let slots = 3.0 * f64::from(self.settings.capacity.max(1));
        let unseen = (slots - f64::from(self.visits_measured)).max(0.0) / slots;
        prior * unseen + measured * (1.0 - unseen)
    }

    /// Estimated wait of a visitor with `ahead` admissions before theirs:
    /// when the slot they need frees. The reserved ones ahead have theirs;
    /// each of the others needs the next session to end, oldest first, each
    /// session expected to last the visit length (measured once visits have
    /// ended, else `avg_session`) given how long it has lasted already
    /// ([`remaining`]), every slot freeing again one turnover later (the
    /// measured pace of admissions, once each slot has turned over twice;
    /// before, a visit and the claim of the next);
    /// never sooner than `admit_rate` allows. Known once visits were measured
    /// and the line moved within the last ten visits (or minute).
    fn wait(&self, ahead: u32, now: Millis) -> Wait {
        let visit = self.visit_ms();
        // A slot is busy for a visit and for the wait of its next visitor to claim it.
        let reserved = u32::try_from(self.reserved.len()).unwrap_or(u32::MAX);
        let turns = ahead.saturating_sub(reserved) as usize + 1;
        // Slots held for the line become sessions once claimed: the youngest.
        let slots = self.ages.len() + reserved as usize;
        // How often a slot turns over: measured once each slot has turned
        // over twice, else a visit and the claim of the next.
        let min = u32::try_from(2 * slots).unwrap_or(u32::MAX).max(4);
        let pace = self.admissions.per_ms(now, min);
        let cycle = pace.map_or(visit + self.avg_claim_ms, |rate| slots as f64 / rate);
        // Known once the pace was measured over three turnovers of each slot:
        // the first turnovers end shortest first, and overstate it.
        let settled = pace.is_some() && self.admissions.samples >= min.saturating_mul(3) / 2;
        let mut ms = match slots {
            0 => 0.0,
            slots => {
                let (k, cycles) = ((turns - 1) % slots, (turns - 1) / slots);
                let began = self
                    .ages
                    .get(k)
                    .map_or(now as f64 + self.avg_claim_ms, |&(t, _)| t as f64);
                let left = remaining(now as f64 - began, visit, 2.0 * self.visit_spread_ms);
                left + cycles as f64 * cycle + self.avg_claim_ms
            }
        };
        if self.settings.admit_rate > 0.0 {
            ms = ms.max(turns as f64 * 1000.0 / self.settings.admit_rate);
        }
        let moving = self.admissions.samples > 0
            && (now.saturating_sub(self.admissions.at) as f64) <= (10.0 * visit).max(60_000.0);
        Wait {
            ms: ms.min(1e12) as u64,
            known: self.avg_visit_ms.is_some() && settled && moving,
        }
    }

    fn place(&self, lane: Lane, seq: u64, now: Millis) -> Place {
        let ahead = self.queue.ahead(lane, seq);
        // A burst's places not confirmed yet will be ahead; a bot's never
        // are, and count only while fresh: told in the position and the
        // wait alike.
        let since = now.saturating_sub(FRESH.as_millis() as u64);
        let fresh = self
            .queue
            .lane(lane)
            .fresh_before(seq, since)
            .min(FRESH_MAX);
        let ticket = self.queue.lane(lane).get(seq);
        let joined = ticket.map_or(now, |t| t.joined);
        let confirmed = ticket.is_some_and(|t| t.state != TicketState::Unconfirmed);
        Place {
            ticket: self.ticket_id(lane, seq),
            joined,
            lane,
            ahead,
            unconfirmed_ahead: fresh,
            ahead_at_join: ticket.map_or(ahead, |t| t.ahead_at_join),
            queue_length: self.queue.live(),
            available: self.free(),
            wait: self.wait(ahead + fresh, now),
            state: self.settings.state,
            confirmed,
        }
    }

    /// A new session: confirmed when the visitor came from the line (they
    /// kept their ticket), unconfirmed when they were let in at once.
    fn admit(
        &mut self,
        now: Millis,
        wait_ms: u64,
        utm: Option<Arc<Utm>>,
        confirmed: bool,
    ) -> SessionInfo {
        let id = SessionId::random();
        let at = self.ages.partition_point(|&(t, _)| t <= now);
        self.ages.insert(at, (now, id.0));
        self.sessions.insert(
            id.0,
            Session {
                admitted_at: now,
                last_seen: now,
                wait_ms,
                utm: utm.clone(),
                confirmed,
            },
        );
        // The line's pace counts visitors who are really there.
        if confirmed {
            let gap = self.visit_ms().max(1000.0);
            self.admissions.record(now, gap);
        }
        SessionInfo {
            id,
            admitted_at: now,
            wait_ms,
            utm,
        }
    }

    /// Ends a session. One `released`, or never confirmed, is remembered
    /// until its pass lapses (at most a session_ttl past its last renewal),
    /// so that it is not taken back; one that lapsed unused has a pass that
    /// lapses with it.
    fn end_session(&mut self, id: u128, now: Millis, released: bool) -> Option<SessionInfo> {
        let s = self.sessions.remove(&id)?;
        if released || !s.confirmed {
            self.ended
                .insert(id, now + self.spec.session_ttl.as_millis() as u64);
        }
        // Sessions admitted in the same millisecond lie together, in any order.
        let from = self.ages.partition_point(|&(t, _)| t < s.admitted_at);
        if let Some(i) = self.ages[from..].iter().position(|&(_, x)| x == id) {
            self.ages.remove(from + i);
        }
        if s.confirmed {
            let visit = now.saturating_sub(s.admitted_at) as f64;
            self.visits_measured = self.visits_measured.saturating_add(1);
            if let Some(avg) = self.avg_visit_ms {
                self.visit_spread_ms += ((visit - avg).abs() - self.visit_spread_ms) / 8.0;
            }
            self.avg_visit_ms = Some(match self.avg_visit_ms {
                None => visit,
                Some(avg) => avg + (visit - avg) / 32.0,
            });
        }
        Some(SessionInfo {
            id: SessionId(id),
            admitted_at: s.admitted_at,
            wait_ms: s.wait_ms,
            utm: s.utm,
        })
    }

    fn session_lapsed(&self, s: &Session, now: Millis) -> bool {
        let ttl = if s.confirmed {
            self.spec.session_ttl
        } else {
            self.spec.confirm_window.min(self.spec.session_ttl)
        }
        .as_millis() as u64;
        let max = self.spec.session_max.map(|d| d.as_millis() as u64);
        now >= s.last_seen + ttl || max.is_some_and(|m| now >= s.admitted_at + m)
    }

    /// Unclaimed reservations past their window go to the next in line; their
    /// holder stops counting as ahead of anyone until heard from again.
    fn lapse_reservations(&mut self, now: Millis) -> u32 {
        let mut lapsed = 0;
        while let Some(&(until, lane, seq)) = self.deadlines.front() {
            if until > now {
                break;
            }
            self.deadlines.pop_front();
            if self.reserved.get(&(lane, seq)) == Some(&until) {
                self.reserved.remove(&(lane, seq));
                self.queue.lane_mut(lane).set_state(seq, TicketState::Stale);
                lapsed += 1;
            }
        }
        lapsed
    }

    /// Offers every free slot to the head of the line, as the lane weighting
    /// and the admission rate allow.
    fn promote(&mut self, now: Millis) {
        if self.settings.state != State::Active {
            return;
        }
        let until = now + self.spec.claim_window.as_millis() as u64;
        while self.free() > 0 {
            let Some(lane) = self.queue.next_lane() else {
                break;
            };
            let Some(seq) = self.queue.lane(lane).first_eligible() else {
                break;
            };
            if !self.bucket.take(now, self.settings.admit_rate) {
                break;
            }
            self.queue
                .lane_mut(lane)
                .set_state(seq, TicketState::Reserved);
            self.queue.served(lane);
            self.reserved.insert((lane, seq), until);
            self.deadlines.push_back((until, lane, seq));
            self.turned.push(self.ticket_id(lane, seq));
        }
    }

    /// Wakeups a reservation into a session.
    fn claim(&mut self, lane: Lane, seq: u64, now: Millis) -> Option<SessionInfo> {
        let until = self.reserved.remove(&(lane, seq))?;
        // How long a held slot waits for its visitor: part of each turn.
        let held_since = until.saturating_sub(self.spec.claim_window.as_millis() as u64);
        let delay = now.saturating_sub(held_since) as f64;
        self.avg_claim_ms += (delay - self.avg_claim_ms) / 8.0;
        let ticket = self.queue.lane(lane).get(seq)?.clone();
        self.forget_ticket(lane, seq);
        Some(self.admit(now, now.saturating_sub(ticket.joined), ticket.utm, true))
    }

    /// A ticket leaves the line for good (admitted, left or forgotten).
    fn forget_ticket(&mut self, lane: Lane, seq: u64) {
        let network = self
            .queue
            .lane(lane)
            .get(seq)
            .and_then(|t| t.network.clone());
        if let Some(network) = network {
            if let Some(held) = self.per_network.get_mut(&network) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    self.per_network.remove(&network);
                }
            }
        }
        self.queue.lane_mut(lane).set_state(seq, TicketState::Gone);
    }

    /// What an `Idempotency-Key` was given, if it still holds.
    fn given(&self, key: &str, now: Millis) -> Option<Arrival> {
        let (given, until) = *self.idempotent.get(key)?;
        if until <= now {
            return None;
        }
        match given {
            Given::Ticket(lane, seq) => {
                let held = self
                    .queue
                    .lane(lane)
                    .get(seq)
                    .is_some_and(|t| t.state != TicketState::Gone);
                held.then(|| Arrival::QueuedAgain(self.place(lane, seq, now)))
            }
            Given::Session(id) => self.sessions.get(&id).map(|s| {
                Arrival::AdmittedAgain(SessionInfo {
                    id: SessionId(id),
                    admitted_at: s.admitted_at,
                    wait_ms: s.wait_ms,
                    utm: s.utm.clone(),
                })
            }),
        }
    }

    /// See [`Store::arrive`].
    pub fn arrive(&mut self, now: Millis, newcomer: &Newcomer) -> Arrival {
        self.lapse_reservations(now);
        if self.settings.state == State::Maintenance {
            return Arrival::Maintenance;
        }
        if let Some(again) = newcomer.key.as_deref().and_then(|k| self.given(k, now)) {
            return again;
        }
        let arrival = self.arrive_new(now, newcomer);
        let given = match &arrival {
            Arrival::Admitted(s) => Some(Given::Session(s.id.0)),
            Arrival::Queued(p) => self
                .parse_ticket(&p.ticket)
                .map(|(l, s)| Given::Ticket(l, s)),
            _ => None,
        };
        if let (Some(key), Some(given)) = (&newcomer.key, given) {
            let until = now + self.spec.idempotency_ttl.as_millis() as u64;
            self.idempotent.insert(key.clone(), (given, until));
        }
        arrival
    }

    fn arrive_new(&mut self, now: Millis, newcomer: &Newcomer) -> Arrival {
        let (lane, utm) = (newcomer.lane, newcomer.utm.clone());
        if self.settings.state == State::Active
            && self.queue.eligible() == 0
            && self.reserved.is_empty()
            && self.free() > 0
            && self.bucket.take(now, self.settings.admit_rate)
        {
            return Arrival::Admitted(self.admit(now, 0, utm, false));
        }
        if self.spec.max_queue > 0 && self.queue.live() >= self.spec.max_queue {
            return Arrival::Full;
        }
        let network: Option<Arc<str>> = newcomer.network.as_deref().map(Arc::from);
        if let Some(network) = &network {
            let limit = self.spec.tickets_per_client;
            let held = self.per_network.entry(Arc::clone(network)).or_default();
            if limit > 0 && *held >= limit {
                return Arrival::Limited;
            }
            *held += 1;
        }
        let seq = self
            .queue
            .lane_mut(lane)
            .push(now, utm, network, TicketState::Unconfirmed);
        let ahead = self.queue.ahead(lane, seq);
        if let Some(t) = self.queue.lane_mut(lane).get_mut(seq) {
            t.ahead_at_join = ahead;
        }
        self.promote(now);
        match self.claim(lane, seq, now) {
            Some(session) => Arrival::Admitted(session),
            None => Arrival::Queued(self.place(lane, seq, now)),
        }
    }

    /// See [`Store::poll`] and, not `claim`ing, [`Store::heartbeat`].
    pub fn poll(&mut self, now: Millis, ticket: &str, confirm: bool, claim: bool) -> Polled {
        self.lapse_reservations(now);
        let Some((lane, seq)) = self.parse_ticket(ticket) else {
            return Polled::Expired;
        };
        self.rejoin(now, lane, seq);
        let Some((state, seen)) = self
            .queue
            .lane(lane)
            .get(seq)
            .map(|t| (t.state, t.last_seen))
        else {
            return Polled::Expired;
        };
        let confirm_by = seen + self.spec.confirm_window.as_millis() as u64;
        match state {
            TicketState::Gone => return Polled::Expired,
            // Too late to confirm, swept or not: a stale solution finds nothing.
            TicketState::Unconfirmed if now >= confirm_by => {
                self.forget_ticket(lane, seq);
                return Polled::Expired;
            }
            // Not seen: it lapses at its deadline unless the challenge is solved.
            TicketState::Unconfirmed if !confirm => {
                return Polled::Queued(self.place(lane, seq, now));
            }
            // Back with the ticket: confirmed, or back from a silence, at its place.
            TicketState::Unconfirmed | TicketState::Stale => self
                .queue
                .lane_mut(lane)
                .set_state(seq, TicketState::Waiting),
            TicketState::Waiting | TicketState::Reserved => {}
        }
        if let Some(t) = self.queue.lane_mut(lane).get_mut(seq) {
            t.last_seen = now;
        }
        self.promote(now);
        if !claim {
            let place = self.place(lane, seq, now);
            return match self.reserved.contains_key(&(lane, seq)) {
                true => Polled::Turn(place),
                false => Polled::Queued(place),
            };
        }
        match self.claim(lane, seq, now) {
            Some(session) => Polled::Admitted(session),
            None => Polled::Queued(self.place(lane, seq, now)),
        }
    }

    /// A verified ticket this state never gave out (issued after the state
    /// file it was restored from was written) takes the place its number
    /// gives: behind every ticket given out before it, ahead of every later
    /// one. A number far past the last one given is refused.
    fn rejoin(&mut self, now: Millis, lane: Lane, seq: u64) {
        let q = self.queue.lane_mut(lane);
        let next = q.next_seq();
        if seq < next || seq - next > REJOIN_GAP {
            return;
        }
        // The tickets between, not back yet, keep their places as silent
        // ones do (and are forgotten like them if they never come).
        for _ in next..seq {
            q.push(now, None, None, TicketState::Stale);
        }
        q.push(now, None, None, TicketState::Waiting);
    }

    /// The tickets given a slot since the last call.
    pub fn take_turned(&mut self) -> Vec<String> {
        std::mem::take(&mut self.turned)
    }

    /// See [`Store::touch`].
    pub fn touch(
        &mut self,
        now: Millis,
        id: SessionId,
        adopt: Option<Adopt>,
    ) -> Option<SessionInfo> {
        if !self.sessions.contains_key(&id.0) {
            return self.adopt(now, id, adopt?);
        }
        let lapsed = self
            .sessions
            .get(&id.0)
            .map(|s| self.session_lapsed(s, now))?;
        if lapsed {
            self.end_session(id.0, now, false);
            self.promote(now);
            return None;
        }
        let s = self.sessions.get_mut(&id.0)?;
        s.last_seen = now;
        // A visitor let in at once came back with the pass: the place is
        // theirs. Not a step of the line's pace, which only admissions
        // from the line measure (a room filling up is no turnover).
        s.confirmed = true;
        Some(SessionInfo {
            id,
            admitted_at: s.admitted_at,
            wait_ms: s.wait_ms,
            utm: s.utm.clone(),
        })
    }

    /// A session this state does not know, from its verified pass: taken
    /// back unless it ended here or its pass (or `session_max`) ran out.
    fn adopt(&mut self, now: Millis, id: SessionId, adopt: Adopt) -> Option<SessionInfo> {
        let max = self.spec.session_max.map(|d| d.as_millis() as u64);
        if adopt.until <= now
            || self.ended.contains_key(&id.0)
            || max.is_some_and(|m| now >= adopt.admitted_at + m)
        {
            return None;
        }
        let admitted_at = adopt.admitted_at.min(now);
        let at = self.ages.partition_point(|&(t, _)| t <= admitted_at);
        self.ages.insert(at, (admitted_at, id.0));
        self.sessions.insert(
            id.0,
            Session {
                admitted_at,
                last_seen: now,
                wait_ms: 0,
                utm: None,
                confirmed: true,
            },
        );
        Some(SessionInfo {
            id,
            admitted_at,
            wait_ms: 0,
            utm: None,
        })
    }

    /// See [`Store::release`].
    pub fn release(&mut self, now: Millis, id: SessionId) -> Option<SessionInfo> {
        let info = self.end_session(id.0, now, true);
        self.promote(now);
        info
    }

    /// See [`Store::leave`].
    pub fn leave(&mut self, now: Millis, ticket: &str) -> bool {
        let Some((lane, seq)) = self.parse_ticket(ticket) else {
            return false;
        };
        let held = self
            .queue
            .lane(lane)
            .get(seq)
            .is_some_and(|t| t.state != TicketState::Gone);
        if held {
            self.reserved.remove(&(lane, seq));
            self.forget_ticket(lane, seq);
            self.promote(now);
        }
        held
    }

    /// Expires lapsed sessions and reservations; returns whether ticket
    /// sweeping has more to do (call `sweep_tickets` until it is done).
    pub fn sweep_sessions(&mut self, now: Millis, out: &mut Swept) {
        out.reservations_lapsed += self.lapse_reservations(now);
        self.idempotent.retain(|_, (_, until)| *until > now);
        self.ended.retain(|_, until| *until > now);
        let lapsed: Vec<u128> = self
            .sessions
            .iter()
            .filter(|(_, s)| self.session_lapsed(s, now))
            .map(|(id, _)| *id)
            .collect();
        for id in lapsed {
            let confirmed = self.sessions.get(&id).is_some_and(|s| s.confirmed);
            if let Some(info) = self.end_session(id, now, false) {
                if confirmed {
                    out.sessions_expired.push(info);
                } else {
                    out.unconfirmed_sessions.push(info.id);
                }
            }
        }
    }

    /// Examines up to `SWEEP_CHUNK` tickets of a lane: silent ones stop
    /// counting, long-silent ones are forgotten. Returns true when the lane
    /// has been swept to its end (and the next call starts over).
    pub fn sweep_tickets(&mut self, now: Millis, lane: Lane, out: &mut Swept) -> bool {
        let stale_after = self.spec.heartbeat_timeout.as_millis() as u64;
        let forget_after = self.spec.rejoin_grace.as_millis() as u64;
        let unconfirmed_after = self.spec.confirm_window.as_millis() as u64;
        let from = self.sweep_from[lane as usize];
        let mut changes = Vec::new();
        let mut last = None;
        for (seq, t) in self.queue.lane(lane).scan(from, SWEEP_CHUNK) {
            last = Some(seq);
            let silent = now.saturating_sub(t.last_seen);
            match t.state {
                TicketState::Unconfirmed if silent >= unconfirmed_after => {
                    changes.push((seq, TicketState::Gone));
                    out.unconfirmed_tickets.push(self.ticket_id(lane, seq));
                }
                TicketState::Waiting | TicketState::Stale if silent >= forget_after => {
                    changes.push((seq, TicketState::Gone));
                    out.tickets_expired.push(t.utm.clone());
                }
                TicketState::Waiting if silent >= stale_after => {
                    changes.push((seq, TicketState::Stale))
                }
                _ => {}
            }
        }
        for (seq, state) in changes {
            if state == TicketState::Gone {
                self.forget_ticket(lane, seq);
            } else {
                self.queue.lane_mut(lane).set_state(seq, state);
            }
        }
        match last {
            Some(seq) if seq + 1 < self.queue.lane(lane).next_seq() => {
                self.sweep_from[lane as usize] = seq + 1;
                false
            }
            _ => {
                self.sweep_from[lane as usize] = 0;
                true
            }
        }
    }

    /// Offers free slots to the line (after a sweep freed some).
    pub fn offer(&mut self, now: Millis) {
        self.lapse_reservations(now);
        self.promote(now);
    }

    /// See [`Store::fill`].
    pub fn fill(&mut self, now: Millis, lane: Lane, count: u32) -> u32 {
        for _ in 0..count {
            self.queue
                .lane_mut(lane)
                .push(now, None, None, TicketState::Waiting);
        }
        self.promote(now);
        count
    }

    /// See [`Store::snapshot`].
    pub fn snapshot(&self, now: Millis) -> Snapshot {
        let waiting = [
            self.queue.lane(Lane::Priority).live(),
            self.queue.lane(Lane::Normal).live(),
        ];
        Snapshot {
            settings: self.settings,
            sessions: u32::try_from(self.sessions.len()).unwrap_or(u32::MAX),
            reserved: u32::try_from(self.reserved.len()).unwrap_or(u32::MAX),
            waiting,
            wait: self.wait(waiting[0] + waiting[1], now),
        }
    }

    /// Takes a reloaded configuration: the settings too if it changed, so
    /// that admin changes survive a reload that did not touch the room.
    pub fn respec(&mut self, now: Millis, spec: RoomSpec) {
        if spec == self.spec {
            return;
        }
        self.settings = spec.settings;
        self.queue.set_weight(spec.priority_weight);
        self.spec = spec;
        self.promote(now);
    }

    /// See [`Store::update`].
    pub fn update(&mut self, now: Millis, patch: SettingsPatch) -> Snapshot {
        if let Some(c) = patch.capacity {
            self.settings.capacity = c;
        }
        if let Some(s) = patch.state {
            self.settings.state = s;
        }
        if let Some(r) = patch.admit_rate {
            self.settings.admit_rate = r;
        }
        self.promote(now);
        self.snapshot(now)
    }
}

/// A `requests` room's capacity as saved: the file's, and the one in force
/// (an admin change), which a restart keeps while the file's is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSlots {
    /// The room.
    pub room: String,
    /// Its capacity in the file at the time.
    pub configured: u32,
    /// Its capacity in force.
    pub capacity: u32,
}

/// What the state file holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    rooms: Vec<RoomState>,
    #[serde(default)]
    requests: Vec<SavedSlots>,
}

/// All rooms of one instance.
pub struct MemoryStore {
    /// Replaced whole at a reload; each room's state is carried over.
    rooms: ArcSwap<HashMap<String, Arc<Mutex<RoomState>>>>,
    turns: Arc<Wakeups>,
}

impl MemoryStore {
    /// A store holding these rooms.
    pub fn new(specs: &[RoomSpec]) -> MemoryStore {
        let now = now_millis();
        MemoryStore {
            rooms: ArcSwap::from_pointee(
                specs
                    .iter()
                    .map(|s| {
                        let state = RoomState::new(s.clone(), now);
                        (s.name.clone(), Arc::new(Mutex::new(state)))
                    })
                    .collect(),
            ),
            turns: Wakeups::new(),
        }
    }

    /// A copy of every room's state. Each room is locked only while it is
    /// copied (a memory copy: tens of ms for a million in line), not while
    /// it is encoded or written.
    pub fn copy_rooms(&self) -> Vec<RoomState> {
        self.rooms
            .load()
            .values()
            .map(|r| r.lock().clone())
            .collect()
    }

    /// Every room's state, as the state file keeps it, with the `requests`
    /// rooms' capacities.
    pub fn export(&self, requests: &[SavedSlots]) -> Result<Vec<u8>, String> {
        let saved = Saved {
            rooms: self.copy_rooms(),
            requests: requests.to_vec(),
        };
        // Fields by position (about a third of the size and time of named
        // fields); a field added later goes last, with a default.
        rmp_serde::to_vec(&saved).map_err(|e| e.to_string())
    }

    /// A store holding these rooms, each with the state `export` saved for a
    /// room of the same name (the settings as for a reload: kept if the
    /// room's configuration is unchanged). Also returns the saved capacities
    /// of `requests` rooms.
    pub fn restore(
        specs: &[RoomSpec],
        saved: &[u8],
    ) -> Result<(MemoryStore, Vec<SavedSlots>), String> {
        let saved: Saved = rmp_serde::from_slice(saved).map_err(|e| e.to_string())?;
        let now = now_millis();
        let mut by_name: HashMap<String, RoomState> = saved
            .rooms
            .into_iter()
            .map(|r| (r.spec.name.clone(), r))
            .collect();
        let rooms = specs
            .iter()
            .map(|spec| {
                let state = match by_name.remove(&spec.name) {
                    Some(mut kept) => {
                        kept.reindex();
                        kept.respec(now, spec.clone());
                        kept
                    }
                    None => RoomState::new(spec.clone(), now),
                };
                (spec.name.clone(), Arc::new(Mutex::new(state)))
            })
            .collect();
        Ok((
            MemoryStore {
                rooms: ArcSwap::from_pointee(rooms),
                turns: Wakeups::new(),
            },
            saved.requests,
        ))
    }

    /// How many visitors are in line and admitted, over all rooms.
    pub fn counts(&self) -> (usize, usize) {
        self.rooms.load().values().fold((0, 0), |(q, s), r| {
            let r = r.lock();
            (q + r.queue.live() as usize, s + r.sessions.len())
        })
    }

    fn room(&self, name: &str) -> Result<Arc<Mutex<RoomState>>, StoreError> {
        self.rooms
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::UnknownRoom(name.to_owned()))
    }

    /// One atomic step on a room, then the wake-ups of the slots it
    /// reserved (outside the room's lock).
    fn step<T>(&self, name: &str, f: impl FnOnce(&mut RoomState) -> T) -> Result<T, StoreError> {
        let room = self.room(name)?;
        let (out, turned) = {
            let mut state = room.lock();
            let out = f(&mut state);
            (out, state.take_turned())
        };
        for ticket in turned {
            self.turns.wake(name, &ticket);
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn arrive(&self, room: &str, newcomer: &Newcomer) -> Result<Arrival, StoreError> {
        self.step(room, |r| r.arrive(now_millis(), newcomer))
    }

    async fn present(&self, room: &str, presence: Presence<'_>) -> Result<Polled, StoreError> {
        self.step(room, |r| {
            r.poll(
                now_millis(),
                presence.ticket,
                presence.confirm,
                presence.claim,
            )
        })
    }

    fn wakeups(&self) -> &Arc<Wakeups> {
        &self.turns
    }

    async fn touch(
        &self,
        room: &str,
        session: SessionId,
        adopt: Option<Adopt>,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.step(room, |r| r.touch(now_millis(), session, adopt))
    }

    async fn release(
        &self,
        room: &str,
        session: SessionId,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.step(room, |r| r.release(now_millis(), session))
    }

    async fn leave(&self, room: &str, ticket: &str) -> Result<bool, StoreError> {
        self.step(room, |r| r.leave(now_millis(), ticket))
    }

    async fn sweep(&self, room: &str) -> Result<Swept, StoreError> {
        let mut out = Swept::default();
        self.step(room, |r| r.sweep_sessions(now_millis(), &mut out))?;
        for lane in Lane::ALL {
            // The lock is taken per chunk, so requests interleave with a long sweep.
            while !self.step(room, |r| r.sweep_tickets(now_millis(), lane, &mut out))? {}
        }
        self.step(room, |r| r.offer(now_millis()))?;
        Ok(out)
    }

    async fn snapshot(&self, room: &str) -> Result<Snapshot, StoreError> {
        Ok(self.room(room)?.lock().snapshot(now_millis()))
    }

    async fn fill(&self, room: &str, lane: Lane, count: u32) -> Result<u32, StoreError> {
        let mut added = 0;
        // In chunks, so requests interleave with a big fill.
        while added < count {
            let chunk = (count - added).min(FILL_CHUNK);
            added += self.step(room, |r| r.fill(now_millis(), lane, chunk))?;
        }
        Ok(added)
    }

    async fn update(&self, room: &str, patch: SettingsPatch) -> Result<Snapshot, StoreError> {
        self.step(room, |r| r.update(now_millis(), patch))
    }

    fn configure(&self, sessions: &[RoomSpec], _requests: &[(String, u32)]) {
        let now = now_millis();
        let old = self.rooms.load();
        let rooms = sessions
            .iter()
            .map(|spec| {
                let state = match old.get(&spec.name) {
                    Some(kept) => {
                        kept.lock().respec(now, spec.clone());
                        Arc::clone(kept)
                    }
                    None => Arc::new(Mutex::new(RoomState::new(spec.clone(), now))),
                };
                (spec.name.clone(), state)
            })
            .collect();
        self.rooms.store(Arc::new(rooms));
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::remaining;

    #[test]
    fn a_session_is_expected_to_last_its_visit_given_its_age() {
        // Visits of 1 s, ending between 0.6 and 1.4 s.
        assert_eq!(remaining(200.0, 1_000.0, 400.0), 800.0);
        // Past the earliest end: half the way to the latest.
        assert_eq!(remaining(1_000.0, 1_000.0, 400.0), 200.0);
        // Past even the latest: a sliver, never nothing or less.
        assert_eq!(remaining(2_000.0, 1_000.0, 400.0), 100.0);
        // No spread measured yet: the rest of the visit, then a sliver.
        assert_eq!(remaining(400.0, 1_000.0, 0.0), 600.0);
        assert_eq!(remaining(1_200.0, 1_000.0, 0.0), 12.5);
    }
}
