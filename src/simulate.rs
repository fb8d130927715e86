//! `anteroom simulate`: an arrival curve replayed against a sessions room of
//! a config, in simulated time, on the waiting room's own rules (the memory
//! store's [`RoomState`], the code that serves one instance), with a model of
//! visit length and abandonment. It tells what visitors would experience
//! (the line over time, waits, who gave up, when the line drains) and what a
//! Redis store would see (steps, commands and CPU per second from the
//! measured per-step costs in docs/scaling.md, memory), so capacity,
//! `admit_rate` and Redis can be chosen before a campaign.
//!
//! Visitors behave as the waiting page makes them: a newcomer let in at once
//! visits; one given a ticket polls at once (which confirms it) and then every
//! `poll_interval`, is let in by the poll that finds a slot held for it, and
//! gives up (stops polling, as a closed tab does) after their patience. An
//! admitted visitor slides their session every `touch_interval` while
//! visiting; at the end they leave (`/__anteroom/leave`) or their session
//! lapses `session_ttl` after their last request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{Config, Room};
use crate::store::memory::RoomState;
use crate::store::{Arrival, Lane, Millis, Newcomer, Polled, RoomSpec, SessionId, Swept, Wait};

/// Redis's cost of one step, measured (docs/scaling.md, "Sizing Redis"):
/// commands run inside the script, and redis-server CPU in µs.
const POLL_COST: (f64, f64) = (5.6, 20.1);
const ARRIVAL_COST: (f64, f64) = (28.6, 38.4);
const TOUCH_COST: (f64, f64) = (7.5, 35.6);
/// Bytes in Redis per waiting or admitted visitor, measured.
const BYTES_PER_VISITOR: u64 = 420;
/// Simulated time starts here (any moment will do; the rules use differences).
const START: Millis = 1_700_000_000_000;

/// Why a simulation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The arrival curve could not be read.
    #[error("--arrivals {0}")]
    Curve(String),
    /// No such sessions room.
    #[error("{0}")]
    Room(String),
    /// A model value is unusable.
    #[error("{0}")]
    Model(String),
}

/// Arrivals per second, second by second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Curve(pub Vec<u32>);

impl Curve {
    /// `campaign:PEAK:SECONDS` (PEAK arrivals in the first second, halving
    /// every fifth of SECONDS), `steady:RATE:SECONDS`, `burst:COUNT` (all in
    /// the first second), or a CSV file of arrivals per second (one row per
    /// second, the last field of each row; `#` comments and a header are
    /// skipped).
    pub fn parse(spec: &str) -> Result<Curve, SimulateError> {
        let bad = |why: &str| SimulateError::Curve(format!("{spec:?}: {why}"));
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| bad("expected a whole number"))
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let curve = match parts.as_slice() {
            ["campaign", peak, seconds] => {
                let (peak, seconds) = (number(peak)?, number(seconds)?);
                let half = f64::from(seconds.max(5)) / 5.0;
                (0..seconds)
                    .map(|t| (f64::from(peak) * 0.5f64.powf(f64::from(t) / half)).round() as u32)
                    .collect()
            }
            ["steady", rate, seconds] => vec![number(rate)?; number(seconds)? as usize],
            ["burst", count] => vec![number(count)?],
            _ => {
                let text = std::fs::read_to_string(spec).map_err(|e| bad(&e.to_string()))?;
                let mut rows = Vec::new();
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let last = line.rsplit(',').next().unwrap_or(line).trim();
                    match last.parse::<u32>() {
                        Ok(n) => rows.push(n),
                        Err(_) if rows.is_empty() && i == 0 => {} // a header
                        Err(_) => {
                            return Err(bad(&format!("line {}: {last:?} is not a count", i + 1)));
                        }
                    }
                }
                rows
            }
        };
        if curve.iter().all(|&n| n == 0) {
            return Err(bad("no arrivals"));
        }
        Ok(Curve(curve))
    }
}

/// How visit lengths are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VisitShape {
    /// Uniformly between the two lengths of [`Model::visit`].
    #[default]
    Uniform,
    /// The first length, then an exponentially distributed remainder whose
    /// mean is the difference of the two (a long tail: most visits short,
    /// a few long), at most ten times that mean.
    LongTail,
}

/// How visitors behave.
#[derive(Debug, Clone)]
pub struct Model {
    /// A visit lasts between these (see `shape`).
    pub visit: (Duration, Duration),
    /// How visit lengths spread between them.
    pub shape: VisitShape,
    /// A waiting visitor gives up after this long (None: never).
    pub patience: Option<Duration>,
    /// Visitors leave explicitly at the end of a visit (else their session lapses).
    pub leave: bool,
    /// Seed of the visit lengths.
    pub seed: u64,
}

/// What happened to one visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit {
    /// When they arrived, ms from the start.
    pub arrived: Millis,
    /// How long they waited before being let in (None: never let in).
    pub waited: Option<Millis>,
    /// They gave up waiting.
    pub gave_up: bool,
    /// They were refused (a full line, maintenance).
    pub refused: bool,
    /// The wait they were told on arriving, when they had to wait.
    pub told: Option<Wait>,
}

/// What a simulation found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The room simulated, and the settings that shape the result.
    pub room: String,
    /// Capacity, admissions per second (0: unlimited), poll, touch and session lifetimes.
    pub settings: (u32, f64, Duration, Duration, Duration),
    /// Every visitor, in arrival order.
    pub visits: Vec<Visit>,
    /// (seconds from the start, visitors waiting, sessions), second by second.
    pub line: Vec<(u64, u32, u32)>,
    /// When the line was empty again after the last arrival (s from the start).
    pub drained: Option<f64>,
    /// Store steps: arrivals, polls, touches, releases.
    pub steps: [u64; 4],
    /// The busiest second's steps, weighted as on Redis.
    pub peak_redis: (f64, f64),
    /// Most visitors in the store at once (waiting and admitted).
    pub peak_visitors: u64,
    /// Simulated seconds.
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Sweep,
    Arrive(usize),
    Poll(usize),
    Touch(usize),
    End(usize),
}

struct Visitor {
    ticket: Option<String>,
    session: Option<SessionId>,
    visit: Millis,
    /// Admitted at (simulated ms).
    inside_since: Option<Millis>,
}

/// Replays `curve` against the sessions room `room` (the first one if None) of `config`.
pub fn run(
    config: &Config,
    room: Option<&str>,
    curve: &Curve,
    model: &Model,
) -> Result<Report, SimulateError> {
    let room = pick(config, room)?;
    let sessions = room.sessions().ok_or_else(|| {
        SimulateError::Room(format!("room {:?} is not a sessions room", room.name))
    })?;
    if model.visit.0 > model.visit.1 {
        return Err(SimulateError::Model(
            "--visit: the shortest visit is longer than the longest".into(),
        ));
    }
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let spec = RoomSpec::from_config(&room.name, room.capacity, sessions);
    let mut state = RoomState::new(spec, START);
    let mut rng = StdRng::seed_from_u64(model.seed);
    let poll = ms(sessions.poll_interval).max(1);
    let touch = ms(config.store.touch_interval).max(1);
    let sweep = ms(config.store.sweep_interval).max(1);
    let patience = model.patience.map(ms);

    let mut queue: BinaryHeap<Reverse<(Millis, Step)>> = BinaryHeap::new();
    let mut visitors: Vec<Visitor> = Vec::new();
    let mut visits: Vec<Visit> = Vec::new();
    for (second, &n) in curve.0.iter().enumerate() {
        for i in 0..n {
            let at = second as u64 * 1000 + u64::from(i) * 1000 / u64::from(n);
            let (shortest, longest) = (ms(model.visit.0), ms(model.visit.1));
            let visit = match model.shape {
                VisitShape::Uniform => rng.gen_range(shortest..=longest),
                VisitShape::LongTail => {
                    let mean = (longest - shortest) as f64;
                    let extra = -mean * (1.0 - rng.r#gen::<f64>()).ln();
                    shortest + extra.min(10.0 * mean) as u64
                }
            };
            queue.push(Reverse((at, Step::Arrive(visitors.len()))));
            visitors.push(Visitor {
                ticket: None,
                session: None,
                visit,
                inside_since: None,
            });
            visits.push(Visit {
                arrived: at,
                waited: None,
                gave_up: false,
                refused: false,
                told: None,
            });
        }
    }
    let last_arrival = visits.last().map_or(0, |v| v.arrived);
    queue.push(Reverse((0, Step::Sweep)));

    let mut steps = [0u64; 4];
    let mut per_second: Vec<[u64; 3]> = Vec::new();
    let mut line = Vec::new();
    let mut next_sample = 0;
    let mut drained = None;
    let mut peak_visitors = 0u64;
    let count = |per_second: &mut Vec<[u64; 3]>, at: Millis, kind: usize| {
        let s = (at / 1000) as usize;
        if per_second.len() <= s {
            per_second.resize(s + 1, [0; 3]);
        }
        per_second[s][kind] += 1;
    };
    let mut now = 0;
    while let Some(Reverse((at, step))) = queue.pop() {
        now = at;
        let t = START + at;
        while next_sample <= at {
            let s = state.snapshot(t);
            line.push((next_sample / 1000, s.queue_length(), s.in_use()));
            peak_visitors = peak_visitors.max(u64::from(s.queue_length() + s.in_use()));
            next_sample += 1000;
        }
        match step {
            Step::Sweep => {
                let mut out = Swept::default();
                state.sweep_sessions(t, &mut out);
                for lane in Lane::ALL {
                    while !state.sweep_tickets(t, lane, &mut out) {}
                }
                state.offer(t);
                let s = state.snapshot(t);
                if drained.is_none() && at > last_arrival && s.queue_length() == 0 {
                    drained = Some(at as f64 / 1000.0);
                }
                let busy = queue.iter().any(|Reverse((_, s))| *s != Step::Sweep);
                if busy || s.queue_length() + s.in_use() > 0 {
                    queue.push(Reverse((at + sweep, Step::Sweep)));
                }
            }
            Step::Arrive(v) => {
                steps[0] += 1;
                count(&mut per_second, at, 0);
                let newcomer = Newcomer {
                    lane: Lane::Normal,
                    ..Newcomer::default()
                };
                match state.arrive(t, &newcomer) {
                    Arrival::Admitted(s) | Arrival::AdmittedAgain(s) => {
                        visits[v].waited = Some(0);
                        enter(&mut visitors[v], s.id, at, touch, v, &mut queue);
                    }
                    Arrival::Queued(p) | Arrival::QueuedAgain(p) => {
                        visits[v].told = Some(p.wait);
                        visitors[v].ticket = Some(p.ticket);
                        queue.push(Reverse((at + 1, Step::Poll(v))));
                    }
                    Arrival::Full | Arrival::Limited | Arrival::Maintenance => {
                        visits[v].refused = true;
                    }
                }
            }
            Step::Poll(v) => {
                let arrived = visits[v].arrived;
                if patience.is_some_and(|p| at.saturating_sub(arrived) >= p) {
                    visits[v].gave_up = true;
                    continue;
                }
                let Some(ticket) = visitors[v].ticket.clone() else {
                    continue;
                };
                steps[1] += 1;
                count(&mut per_second, at, 1);
                match state.poll(t, &ticket, true, true) {
                    Polled::Admitted(s) => {
                        visits[v].waited = Some(at - arrived);
                        enter(&mut visitors[v], s.id, at, touch, v, &mut queue);
                    }
                    Polled::Queued(_) | Polled::Turn(_) => {
                        queue.push(Reverse((at + poll, Step::Poll(v))));
                    }
                    Polled::Expired => visits[v].gave_up = true,
                }
            }
            Step::Touch(v) => {
                let (Some(id), Some(since)) = (visitors[v].session, visitors[v].inside_since)
                else {
                    continue;
                };
                if at >= since + visitors[v].visit {
                    continue;
                }
                steps[2] += 1;
                count(&mut per_second, at, 2);
                state.touch(t, id, None);
                queue.push(Reverse((at + touch, Step::Touch(v))));
            }
            Step::End(v) => {
                if model.leave
                    && let Some(id) = visitors[v].session
                {
                    steps[3] += 1;
                    state.release(t, id);
                }
            }
        }
    }
    let weigh = |s: &[u64; 3]| {
        let n = |i: usize| s[i] as f64;
        (
            n(0) * ARRIVAL_COST.0 + n(1) * POLL_COST.0 + n(2) * TOUCH_COST.0,
            n(0) * ARRIVAL_COST.1 + n(1) * POLL_COST.1 + n(2) * TOUCH_COST.1,
        )
    };
    let peak_redis = per_second
        .iter()
        .map(weigh)
        .fold((0.0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    Ok(Report {
        room: room.name.clone(),
        settings: (
            room.capacity,
            sessions.admit_rate,
            sessions.poll_interval,
            config.store.touch_interval,
            sessions.session_ttl,
        ),
        visits,
        line,
        drained,
        steps,
        peak_redis,
        peak_visitors,
        seconds: now as f64 / 1000.0,
    })
}

fn enter(
    visitor: &mut Visitor,
    id: SessionId,
    at: Millis,
    touch: Millis,
    v: usize,
    queue: &mut BinaryHeap<Reverse<(Millis, Step)>>,
) {
    visitor.session = Some(id);
    visitor.inside_since = Some(at);
    queue.push(Reverse((at + touch, Step::Touch(v))));
    queue.push(Reverse((at + visitor.visit, Step::End(v))));
}

fn pick<'a>(config: &'a Config, room: Option<&str>) -> Result<&'a Room, SimulateError> {
    match room {
        Some(name) => config
            .rooms
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| SimulateError::Room(format!("no room {name:?} in the config"))),
        None => config
            .rooms
            .iter()
            .find(|r| r.sessions().is_some())
            .ok_or_else(|| SimulateError::Room("the config has no sessions room".into())),
    }
}

/// The `p`th percentile (0 to 1) of sorted values.
fn percentile(sorted: &[Millis], p: f64) -> Millis {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Report {
    /// Waits of the visitors let in from the line, sorted (ms).
    pub fn waits(&self) -> Vec<Millis> {
        let mut w: Vec<Millis> = self
            .visits
            .iter()
            .filter_map(|v| v.waited.filter(|&w| w > 0))
            .collect();
        w.sort_unstable();
        w
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |ms: Millis| humantime::format_duration(Duration::from_secs(ms.div_ceil(1000)));
        let n = self.visits.len();
        let direct = self.visits.iter().filter(|v| v.waited == Some(0)).count();
        let waits = self.waits();
        let gave_up = self.visits.iter().filter(|v| v.gave_up).count();
        let refused = self.visits.iter().filter(|v| v.refused).count();
        let (capacity, rate, poll, touch, ttl) = self.settings;
        let d = humantime::format_duration;
        writeln!(
            f,
            "room {:?}: {n} visitors over {:.0} s simulated",
            self.room, self.seconds
        )?;
        writeln!(
            f,
            "capacity {capacity}, admit_rate {rate}/s (0: unlimited), poll_interval {}, session_ttl {}, touch_interval {}",
            d(poll),
            d(ttl),
            d(touch)
        )?;
        writeln!(f)?;
        writeln!(f, "visitors")?;
        writeln!(f, "  let in at once      {direct}")?;
        writeln!(f, "  let in from the line {}", waits.len())?;
        writeln!(
            f,
            "  waits               p50 {}  p90 {}  p99 {}  longest {}",
            secs(percentile(&waits, 0.5)),
            secs(percentile(&waits, 0.9)),
            secs(percentile(&waits, 0.99)),
            secs(waits.last().copied().unwrap_or(0))
        )?;
        writeln!(
            f,
            "  gave up waiting     {gave_up} ({:.1}%)",
            gave_up as f64 * 100.0 / n.max(1) as f64
        )?;
        writeln!(f, "  refused             {refused}")?;
        match self.drained {
            Some(s) => writeln!(f, "  line drained        {s:.0} s after the start")?,
            None => writeln!(f, "  line drained        not within the simulation")?,
        }
        writeln!(f)?;
        writeln!(f, "the line over time")?;
        writeln!(f, "  {:>7}  {:>8}  {:>8}", "s", "waiting", "inside")?;
        // About 24 rows, evenly spaced.
        let every = self.line.len().div_ceil(24).max(1);
        for (s, waiting, inside) in self.line.iter().step_by(every) {
            writeln!(f, "  {s:>7}  {waiting:>8}  {inside:>8}")?;
        }
        writeln!(f)?;
        let [arrivals, polls, touches, releases] = self.steps;
        let per = |x: u64| x as f64 / self.seconds.max(1.0);
        writeln!(f, "what a Redis store would see")?;
        writeln!(
            f,
            "  steps               {arrivals} arrivals, {polls} polls, {touches} touches, {releases} releases ({:.0}/s on average)",
            per(arrivals + polls + touches + releases)
        )?;
        writeln!(
            f,
            "  busiest second      {:.0} commands, {:.0} ms of Redis CPU ({:.0}% of a core)",
            self.peak_redis.0,
            self.peak_redis.1 / 1000.0,
            self.peak_redis.1 / 10_000.0
        )?;
        writeln!(
            f,
            "  memory at the peak  {:.1} MB ({} visitors waiting or inside)",
            (self.peak_visitors * BYTES_PER_VISITOR) as f64 / 1e6,
            self.peak_visitors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_are_read_from_shapes_and_files() {
        assert_eq!(Curve::parse("burst:50").unwrap(), Curve(vec![50]));
        assert_eq!(Curve::parse("steady:3:2").unwrap(), Curve(vec![3, 3]));
        let campaign = Curve::parse("campaign:1000:10").unwrap().0;
        assert_eq!(campaign.len(), 10);
        assert_eq!(campaign[0], 1000);
        assert_eq!(campaign[2], 500, "halves every fifth of the span");
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("arrivals.csv");
        std::fs::write(&csv, "second,arrivals\n0,5\n# a comment\n1,7\n").unwrap();
        assert_eq!(
            Curve::parse(csv.to_str().unwrap()).unwrap(),
            Curve(vec![5, 7])
        );
        std::fs::write(&csv, "0,5\n1,x\n").unwrap();
        let err = Curve::parse(csv.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(Curve::parse("steady:0:5").is_err());
        assert!(Curve::parse("campaign:ten:5").is_err());
    }
}
