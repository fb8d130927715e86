//! The Redis store: one waiting room, one line, one capacity for every
//! anteroom instance that shares the server (Redis 7, Valkey, or another
//! server with Lua scripting; no modules).
//!
//! Every step is one Lua script (loaded once, called by SHA) over the room's
//! keys, so concurrent instances can never over-admit or reorder the line.
//! A room's keys share the hash tag `{prefix:room}` (one Redis Cluster slot)
//! and expire when no instance has swept them for a long while. A script that
//! finds its room uninitialised (a new server, or one restarted without its
//! data) answers `NOINIT`; the room is then set up again and the step retried,
//! so service resumes without restarting anteroom.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{Script, ScriptInvocation, Value};

use super::redis_deployment::Link;
use super::{
    Adopt, Allowance, AllowanceAsk, Arrival, Lane, Leases, Line, LineAsk, Newcomer, Place, Polled,
    Presence, Reservation, RoomSpec, SessionId, SessionInfo, Settings, SettingsPatch, Snapshot,
    Step, Store, StoreError, Swept, Wait, now_millis,
};
use crate::attribution::Utm;
use crate::config::{RedisConfig, State};
use crate::wakeups::Wakeups;

/// The first lines of every script: the server's clock and the step's deadline.
const CLOCK: &str = include_str!("lua/clock.lua");
/// A waiting room's keys, settings and rules, shared by its scripts.
const ROOM: &str = include_str!("lua/room.lua");
/// Items per kind a sweep script handles before yielding to other commands.
const SWEEP_LIMIT: usize = 5_000;
/// Slack for the error of the clock comparison.
const CLOCK_MARGIN: Duration = Duration::from_millis(20);
/// How often the clocks are compared again.
const CLOCK_RESYNC_MS: u64 = 10_000;

/// A waiting-room step.
fn room_script(body: &str) -> Script {
    Script::new(&format!("{CLOCK}\n{ROOM}\n{body}"))
}

struct Scripts {
    init: Script,
    arrive: Script,
    poll: Script,
    touch: Script,
    release: Script,
    leave: Script,
    sweep: Script,
    snapshot: Script,
    update: Script,
    fill: Script,
    lease: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            init: room_script(include_str!("lua/init.lua")),
            arrive: room_script(include_str!("lua/arrive.lua")),
            poll: room_script(include_str!("lua/poll.lua")),
            touch: room_script(include_str!("lua/touch.lua")),
            release: room_script(include_str!("lua/release.lua")),
            leave: room_script(include_str!("lua/leave.lua")),
            sweep: room_script(include_str!("lua/sweep.lua")),
            snapshot: room_script(include_str!("lua/snapshot.lua")),
            update: room_script(include_str!("lua/update.lua")),
            fill: room_script(include_str!("lua/fill.lua")),
            lease: Script::new(&format!("{CLOCK}\n{}", include_str!("lua/lease.lua"))),
        }
    }
}

/// A sessions room's keys and how to set it up.
struct RoomKeys {
    keys: [String; 17],
    spec: RoomSpec,
    /// When this instance last got an answer for the room (ms): a room
    /// found gone soon after was lost, not idle for long.
    used: AtomicU64,
}

/// A requests room's keys and capacity.
struct LeaseKeys {
    keys: [String; 5],
    capacity: u32,
}

/// Every room's keys, replaced whole at a reload.
struct Layout {
    rooms: HashMap<String, RoomKeys>,
    lease_rooms: HashMap<String, LeaseKeys>,
}

impl Layout {
    fn new(prefix: &str, rooms: &[RoomSpec], request_rooms: &[(String, u32)]) -> Layout {
        let rooms = rooms
            .iter()
            .map(|spec| {
                let b = base(prefix, &spec.name);
                let keys = [
                    "s", "ss", "sd", "l0", "l1", "e0", "e1", "seen", "t", "rv", "rq", "u", "net",
                    "idem", "idemx", "sa", "end",
                ]
                .map(|k| format!("{b}:{k}"));
                (
                    spec.name.clone(),
                    RoomKeys {
                        keys,
                        spec: spec.clone(),
                        used: AtomicU64::new(0),
                    },
                )
            })
            .collect();
        let lease_rooms = request_rooms
            .iter()
            .map(|(name, capacity)| {
                let b = base(prefix, name);
                let keys = ["s", "lease", "alw", "alwn", "short"].map(|k| format!("{b}:{k}"));
                (
                    name.clone(),
                    LeaseKeys {
                        keys,
                        capacity: *capacity,
                    },
                )
            })
            .collect();
        Layout { rooms, lease_rooms }
    }
}

fn base(prefix: &str, room: &str) -> String {
    format!("{{{prefix}:{room}}}")
}

/// The shared store.
pub struct RedisStore {
    link: Link,
    timeout: Duration,
    lease: Duration,
    prefix: String,
    layout: ArcSwap<Layout>,
    scripts: Scripts,
    /// This instance's name, for the sweep lock.
    owner: String,
    sweep_lock: Duration,
    /// Redis's clock minus this instance's, in ms, once measured.
    clock_offset: AtomicI64,
    clock_synced: AtomicU64,
    connect_timeout: Duration,
    /// Until the first answer, a step may also wait for the connection to be made.
    answered: AtomicBool,
    /// Where every instance's scripts publish the slots they reserve.
    channel: String,
    turns: Arc<Wakeups>,
    /// How long a room set up anew after this instance used it holds
    /// newcomers back (`[store] rebuild_grace`).
    rebuild_grace: Duration,
}

impl RedisStore {
    /// After the store lost a room this instance was using, newcomers wait
    /// this long while visitors with passes come back and take their slots
    /// (0: no hold).
    pub fn with_rebuild_grace(mut self, grace: Duration) -> RedisStore {
        self.rebuild_grace = grace;
        self
    }

    /// Sets up the connections (established lazily, reconnected
    /// automatically) and the rooms' keys. Nothing is sent yet, so anteroom
    /// starts even while Redis is down.
    pub fn new(
        config: &RedisConfig,
        rooms: &[RoomSpec],
        request_rooms: &[(String, u32)],
        sweep_interval: Duration,
    ) -> Result<RedisStore, StoreError> {
        Ok(RedisStore {
            link: Link::new(config)?,
            timeout: config.timeout,
            lease: config.lease,
            prefix: config.key_prefix.clone(),
            layout: ArcSwap::from_pointee(Layout::new(&config.key_prefix, rooms, request_rooms)),
            scripts: Scripts::new(),
            owner: format!("{:016x}", rand::random::<u64>()),
            sweep_lock: sweep_interval * 3,
            clock_offset: AtomicI64::new(0),
            clock_synced: AtomicU64::new(0),
            connect_timeout: config.connect_timeout,
            answered: AtomicBool::new(false),
            channel: format!("{}:turns", config.key_prefix),
            turns: Wakeups::new(),
            rebuild_grace: Duration::ZERO,
        })
    }

    /// How long to wait for one step: its timeout, plus the time to connect
    /// until the store has answered once.
    fn budget(&self) -> Duration {
        if self.answered.load(Ordering::Relaxed) {
            self.timeout
        } else {
            self.timeout + self.connect_timeout
        }
    }

    /// Waits at most `budget()` for a store call; the inner result is Redis's answer.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>, StoreError> {
        let budget = self.budget();
        let answer = tokio::time::timeout(budget, call).await.map_err(|_| {
            self.link.failed(None);
            StoreError::Unavailable(format!(
                "no answer within {}",
                humantime::format_duration(budget)
            ))
        })?;
        match &answer {
            Ok(_) => self.answered.store(true, Ordering::Relaxed),
            Err(e) => self.link.failed(Some(e)),
        }
        Ok(answer)
    }

    /// When, in Redis's clock, this instance stops waiting for a step it
    /// sends now; 0 (no limit) until the clocks have been compared.
    fn deadline(&self) -> String {
        if self.clock_synced.load(Ordering::Relaxed) == 0 {
            return "0".to_owned();
        }
        let local = i64::try_from(now_millis()).unwrap_or(i64::MAX);
        let budget = i64::try_from((self.timeout + CLOCK_MARGIN).as_millis()).unwrap_or(i64::MAX);
        (local + self.clock_offset.load(Ordering::Relaxed) + budget).to_string()
    }

    /// Measures Redis's clock against this instance's (half a round trip of error).
    async fn sync_clock(&self) -> Result<(), StoreError> {
        let mut conn = self.link.connection().await?;
        let before = now_millis();
        let command = redis::cmd("TIME");
        let (secs, micros) = self
            .bounded(command.query_async::<(i64, i64)>(&mut conn))
            .await?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let after = now_millis();
        let local = i64::try_from(before / 2 + after / 2).unwrap_or(i64::MAX);
        self.clock_offset
            .store(secs * 1000 + micros / 1000 - local, Ordering::Relaxed);
        self.clock_synced.store(after.max(1), Ordering::Relaxed);
        Ok(())
    }

    /// Runs a script with a bounded wait; a room found uninitialised is set
    /// up and the script retried once.
    async fn invoke(
        &self,
        keys: &[String],
        script: &Script,
        args: &[String],
        room: &str,
    ) -> Result<Value, StoreError> {
        for attempt in 0..2 {
            match self.run(keys, script, args).await? {
                Err(e) if e.code() == Some("NOINIT") && attempt == 0 => {
                    self.init(room, true).await?;
                }
                Err(e) => return Err(StoreError::Unavailable(e.to_string())),
                Ok(value) => return Ok(value),
            }
        }
        Err(StoreError::Unavailable(format!(
            "room {room:?} could not be set up"
        )))
    }

    /// Runs a script once with a bounded wait: the store's own error is
    /// the inner one, for the caller to read its code.
    async fn run(
        &self,
        keys: &[String],
        script: &Script,
        args: &[String],
    ) -> Result<Result<Value, redis::RedisError>, StoreError> {
        let mut invocation: ScriptInvocation<'_> = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(self.deadline());
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.link.connection().await?;
        self.bounded(invocation.invoke_async::<Value>(&mut conn))
            .await
    }

    async fn room_call(
        &self,
        room: &str,
        script: &Script,
        args: &[String],
    ) -> Result<Value, StoreError> {
        let layout = self.layout.load_full();
        let r = layout
            .rooms
            .get(room)
            .ok_or_else(|| StoreError::UnknownRoom(room.to_owned()))?;
        let value = self.invoke(&r.keys, script, args, room).await?;
        r.used.store(now_millis(), Ordering::Relaxed);
        Ok(value)
    }

    /// A step on one session (touch, release, with what to take it back
    /// from): its data, if it is there.
    async fn session_call(
        &self,
        room: &str,
        script: &Script,
        session: SessionId,
        adopt: Option<Adopt>,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let (a, until) = adopt.map_or((String::new(), String::new()), |a| {
            (a.admitted_at.to_string(), a.until.to_string())
        });
        let v = self
            .room_call(room, script, &[session.to_string(), a, until])
            .await?;
        touched(session, &v)
    }

    async fn lease_call(&self, room: &str, args: &[String]) -> Result<Value, StoreError> {
        let layout = self.layout.load_full();
        let keys = &layout
            .lease_rooms
            .get(room)
            .ok_or_else(|| StoreError::UnknownRoom(room.to_owned()))?
            .keys;
        self.invoke(keys, &self.scripts.lease, args, room).await
    }

    /// Writes a room's configured settings (unless admin changes of the same
    /// configuration are in place) and gives it an epoch if it has none.
    /// `lost`: the room was found gone; if this instance used it within a
    /// session's lifetime, its state was lost (not idle past its keys'
    /// expiry), and newcomers are held back for `rebuild_grace`.
    async fn init(&self, room: &str, lost: bool) -> Result<(), StoreError> {
        let layout = self.layout.load_full();
        if let Some(r) = layout.rooms.get(room) {
            let s = &r.spec;
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let keep = [
                s.session_ttl,
                s.session_max.unwrap_or_default(),
                s.rejoin_grace,
                s.claim_window,
            ]
            .into_iter()
            .max()
            .unwrap_or_default()
                * 2
                + Duration::from_secs(3600);
            let fields = [
                s.settings.capacity.to_string(),
                s.settings.state.as_str().to_owned(),
                s.settings.admit_rate.to_string(),
                ms(s.session_ttl).to_string(),
                s.session_max.map_or(0, ms).to_string(),
                ms(s.claim_window).to_string(),
                ms(s.heartbeat_timeout).to_string(),
                ms(s.rejoin_grace).to_string(),
                ms(s.avg_session).to_string(),
                s.max_queue.to_string(),
                s.priority_weight.to_string(),
                ms(keep).to_string(),
                ms(s.confirm_window).to_string(),
                s.tickets_per_client.to_string(),
                ms(s.idempotency_ttl).to_string(),
                ms(s.poll_interval).to_string(),
            ];
            let mut args = vec![fields.join("|")];
            args.extend(fields);
            args.push(rand::random::<u32>().to_string());
            args.push(self.channel.clone());
            args.push(room.to_owned());
            let used = r.used.load(Ordering::Relaxed);
            let recent = used > 0 && now_millis().saturating_sub(used) < ms(s.session_ttl);
            let hold = if lost && recent {
                ms(self.rebuild_grace)
            } else {
                0
            };
            args.push(hold.to_string());
            let value = self
                .invoke_plain(&r.keys, &self.scripts.init, &args)
                .await?;
            tracing::debug!(room, epoch = ?text(&value), "room set up in the store");
            return Ok(());
        }
        if let Some(l) = layout.lease_rooms.get(room) {
            let args = [
                "init".to_owned(),
                format!("capacity={}", l.capacity),
                l.capacity.to_string(),
                (self.lease.as_millis() * 100).to_string(),
            ];
            self.invoke_plain(&l.keys, &self.scripts.lease, &args)
                .await?;
            return Ok(());
        }
        Err(StoreError::UnknownRoom(room.to_owned()))
    }

    /// A waiting visitor's poll or, not claiming, heartbeat.
    async fn poll_step(
        &self,
        room: &str,
        ticket: &str,
        confirm: bool,
        claim: bool,
    ) -> Result<Polled, StoreError> {
        let args = [
            ticket.to_owned(),
            SessionId::random().to_string(),
            u8::from(confirm).to_string(),
            u8::from(claim).to_string(),
        ];
        let v = self.room_call(room, &self.scripts.poll, &args).await?;
        let items = items(&v)?;
        match kind(items).as_str() {
            "admitted" => Ok(Polled::Admitted(session(items)?)),
            "queued" => Ok(Polled::Queued(place(items)?)),
            "turn" => Ok(Polled::Turn(place(items)?)),
            "expired" => Ok(Polled::Expired),
            _ => Err(bad("a poll")),
        }
    }

    /// Reserves `units` of a line of moments kept in the room's `field`
    /// (the lease script's `line`).
    async fn invoke_plain(
        &self,
        keys: &[String],
        script: &Script,
        args: &[String],
    ) -> Result<Value, StoreError> {
        self.run(keys, script, args)
            .await?
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

/// A duration in fractional milliseconds, for the lease script's lines.
fn millis(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64() * 1000.0)
}

/// `{1, wait_us}` reserved, `{0, retry_us}` too far.
fn reservation(v: &Value) -> Result<Reservation, StoreError> {
    let items = items(v)?;
    let wait = Duration::from_micros(uint(items.get(1))?);
    Ok(if uint(items.first())? == 1 {
        Reservation::Wait(wait)
    } else {
        Reservation::TooFar(wait)
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

fn uint(v: Option<&Value>) -> Result<u64, StoreError> {
    v.and_then(int)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| bad("a number"))
}

fn u32_of(v: Option<&Value>) -> Result<u32, StoreError> {
    u32::try_from(uint(v)?).map_err(|_| bad("a small number"))
}

fn bad(what: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "unexpected answer from the store (expected {what})"
    ))
}

fn items(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(bad("a list")),
    }
}

fn utm_of(v: Option<&Value>) -> Option<Arc<Utm>> {
    let json = text(v?)?;
    if json.is_empty() {
        return None;
    }
    serde_json::from_str::<Utm>(&json).ok().map(Arc::new)
}

fn utm_arg(utm: Option<&Utm>) -> String {
    utm.and_then(|u| serde_json::to_string(u).ok())
        .unwrap_or_default()
}

fn state_of(v: Option<&Value>) -> Result<State, StoreError> {
    v.and_then(text)
        .and_then(|s| State::parse(&s))
        .ok_or_else(|| bad("a room state"))
}

/// `{'admitted', id, admitted_at, wait_ms, utm}`.
fn session(items: &[Value]) -> Result<SessionInfo, StoreError> {
    let id = items
        .get(1)
        .and_then(text)
        .and_then(|t| SessionId::parse(&t))
        .ok_or_else(|| bad("a session id"))?;
    Ok(SessionInfo {
        id,
        admitted_at: uint(items.get(2))?,
        wait_ms: uint(items.get(3))?,
        utm: utm_of(items.get(4)),
    })
}

/// `{'queued', ticket, lane, ahead, ahead_at_join, queue_length, free, wait,
/// known, state, joined, confirmed, unconfirmed_ahead}`.
fn place(items: &[Value]) -> Result<Place, StoreError> {
    Ok(Place {
        ticket: items.get(1).and_then(text).ok_or_else(|| bad("a ticket"))?,
        joined: uint(items.get(10))?,
        lane: if uint(items.get(2))? == 0 {
            Lane::Priority
        } else {
            Lane::Normal
        },
        ahead: u32_of(items.get(3))?,
        unconfirmed_ahead: u32_of(items.get(12))?,
        ahead_at_join: u32_of(items.get(4))?,
        queue_length: u32_of(items.get(5))?,
        available: u32_of(items.get(6))?,
        wait: Wait {
            ms: uint(items.get(7))?,
            known: uint(items.get(8))? == 1,
        },
        state: state_of(items.get(9))?,
        confirmed: uint(items.get(11))? == 1,
    })
}

/// `{capacity, state, admit_rate, sessions, reserved, waiting0, waiting1, wait, known}`.
fn snapshot(v: &Value) -> Result<Snapshot, StoreError> {
    let items = items(v)?;
    Ok(Snapshot {
        settings: Settings {
            capacity: u32_of(items.first())?,
            state: state_of(items.get(1))?,
            admit_rate: items
                .get(2)
                .and_then(text)
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| bad("a rate"))?,
        },
        sessions: u32_of(items.get(3))?,
        reserved: u32_of(items.get(4))?,
        waiting: [u32_of(items.get(5))?, u32_of(items.get(6))?],
        wait: Wait {
            ms: uint(items.get(7))?,
            known: uint(items.get(8))? == 1,
        },
    })
}

fn kind(items: &[Value]) -> String {
    items.first().and_then(text).unwrap_or_default()
}

fn touched(id: SessionId, v: &Value) -> Result<Option<SessionInfo>, StoreError> {
    if matches!(v, Value::Nil) {
        return Ok(None);
    }
    let items = items(v)?;
    Ok(Some(SessionInfo {
        id,
        admitted_at: uint(items.first())?,
        wait_ms: uint(items.get(1))?,
        utm: utm_of(items.get(2)),
    }))
}

#[async_trait]
impl Store for RedisStore {
    async fn arrive(&self, room: &str, newcomer: &Newcomer) -> Result<Arrival, StoreError> {
        let args = [
            (newcomer.lane as u8).to_string(),
            utm_arg(newcomer.utm.as_deref()),
            SessionId::random().to_string(),
            newcomer.key.clone().unwrap_or_default(),
            newcomer.network.clone().unwrap_or_default(),
        ];
        let v = self.room_call(room, &self.scripts.arrive, &args).await?;
        let items = items(&v)?;
        match kind(items).as_str() {
            "admitted" => Ok(Arrival::Admitted(session(items)?)),
            "queued" => Ok(Arrival::Queued(place(items)?)),
            "admitted_again" => Ok(Arrival::AdmittedAgain(session(items)?)),
            "queued_again" => Ok(Arrival::QueuedAgain(place(items)?)),
            "full" => Ok(Arrival::Full),
            "limited" => Ok(Arrival::Limited),
            "maintenance" => Ok(Arrival::Maintenance),
            _ => Err(bad("an arrival")),
        }
    }

    async fn present(&self, room: &str, presence: Presence<'_>) -> Result<Polled, StoreError> {
        self.poll_step(room, presence.ticket, presence.confirm, presence.claim)
            .await
    }

    fn wakeups(&self) -> &Arc<Wakeups> {
        &self.turns
    }

    async fn listen(&self) -> Result<(), StoreError> {
        let unavailable = |e: redis::RedisError| StoreError::Unavailable(e.to_string());
        let mut pubsub = self.link.pubsub().await?;
        pubsub.subscribe(&self.channel).await.map_err(unavailable)?;
        tracing::debug!(channel = self.channel, "listening for reservations");
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
                continue;
            };
            if let Some((room, ticket)) = payload.split_once('\n') {
                self.turns.wake(room, ticket);
            }
        }
        Err(StoreError::Unavailable(
            "the connection for reservations closed".to_owned(),
        ))
    }

    async fn touch(
        &self,
        room: &str,
        session: SessionId,
        adopt: Option<Adopt>,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.session_call(room, &self.scripts.touch, session, adopt)
            .await
    }

    async fn release(
        &self,
        room: &str,
        session: SessionId,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.session_call(room, &self.scripts.release, session, None)
            .await
    }

    async fn leave(&self, room: &str, ticket: &str) -> Result<bool, StoreError> {
        let v = self
            .room_call(room, &self.scripts.leave, &[ticket.to_owned()])
            .await?;
        Ok(int(&v) == Some(1))
    }

    async fn sweep(&self, room: &str) -> Result<Swept, StoreError> {
        let synced = self.clock_synced.load(Ordering::Relaxed);
        if now_millis().saturating_sub(synced) > CLOCK_RESYNC_MS {
            self.sync_clock().await?;
        }
        let mut out = Swept::default();
        let args = [
            SWEEP_LIMIT.to_string(),
            self.owner.clone(),
            self.sweep_lock.as_millis().to_string(),
        ];
        // Big backlogs are swept in several scripts so Redis serves others in between.
        for _ in 0..100 {
            let v = self.room_call(room, &self.scripts.sweep, &args).await?;
            let items = items(&v)?;
            if kind(items) == "skipped" {
                break;
            }
            out.reservations_lapsed += u32_of(items.first())?;
            let more = uint(items.get(1))? == 1;
            let sessions = items
                .get(2)
                .map(self::items)
                .transpose()?
                .unwrap_or_default();
            for pair in sessions.chunks(2) {
                if let Some(id) = pair
                    .first()
                    .and_then(text)
                    .and_then(|t| SessionId::parse(&t))
                {
                    out.sessions_expired.push(SessionInfo {
                        id,
                        admitted_at: 0,
                        wait_ms: 0,
                        utm: utm_of(pair.get(1)),
                    });
                }
            }
            let tickets = items
                .get(3)
                .map(self::items)
                .transpose()?
                .unwrap_or_default();
            out.tickets_expired
                .extend(tickets.iter().map(|u| utm_of(Some(u))));
            let ids = |at: usize| -> Result<Vec<String>, StoreError> {
                let listed = items.get(at).map(self::items).transpose()?;
                Ok(listed.unwrap_or_default().iter().filter_map(text).collect())
            };
            out.unconfirmed_sessions
                .extend(ids(4)?.iter().filter_map(|t| SessionId::parse(t)));
            out.unconfirmed_tickets.extend(ids(5)?);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    async fn snapshot(&self, room: &str) -> Result<Snapshot, StoreError> {
        let v = self.room_call(room, &self.scripts.snapshot, &[]).await?;
        snapshot(&v)
    }

    async fn update(&self, room: &str, patch: SettingsPatch) -> Result<Snapshot, StoreError> {
        let args = [
            patch.capacity.map(|c| c.to_string()).unwrap_or_default(),
            patch
                .state
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            patch.admit_rate.map(|r| r.to_string()).unwrap_or_default(),
        ];
        let v = self.room_call(room, &self.scripts.update, &args).await?;
        snapshot(&v)
    }

    async fn fill(&self, room: &str, lane: Lane, count: u32) -> Result<u32, StoreError> {
        let mut added = 0;
        // In scripts of a few thousand, so Redis serves others in between.
        while added < count {
            let chunk = (count - added).min(2_000);
            let args = [(lane as u8).to_string(), chunk.to_string()];
            let v = self.room_call(room, &self.scripts.fill, &args).await?;
            added += u32::try_from(int(&v).unwrap_or(0)).unwrap_or(0);
        }
        Ok(added)
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        self.sync_clock().await?;
        let layout = self.layout.load_full();
        let names: Vec<String> = layout
            .rooms
            .keys()
            .chain(layout.lease_rooms.keys())
            .cloned()
            .collect();
        for room in names {
            self.init(&room, false).await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.link.connection().await?;
        let command = redis::cmd("PING");
        self.bounded(command.query_async::<String>(&mut conn))
            .await?
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn configure(&self, sessions: &[RoomSpec], requests: &[(String, u32)]) {
        self.layout
            .store(Arc::new(Layout::new(&self.prefix, sessions, requests)));
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

#[async_trait]
impl Leases for RedisStore {
    async fn allow(&self, room: &str, ask: &AllowanceAsk<'_>) -> Result<Allowance, StoreError> {
        let args = [
            "allow".to_owned(),
            ask.instance.to_owned(),
            ask.need.to_string(),
            ask.want.to_string(),
            ask.in_flight.to_string(),
            self.lease.as_millis().to_string(),
            u8::from(ask.limited).to_string(),
            ask.taking.to_string(),
        ];
        let v = self.lease_call(room, &args).await?;
        let items = items(&v)?;
        Ok(Allowance {
            granted: u32_of(items.first())?,
            contended: uint(items.get(1))? == 1,
        })
    }

    async fn usage(&self, room: &str) -> Result<(u32, u32), StoreError> {
        let v = self.lease_call(room, &["usage".to_owned()]).await?;
        let items = items(&v)?;
        Ok((u32_of(items.first())?, u32_of(items.get(1))?))
    }

    async fn set_capacity(&self, room: &str, capacity: u32) -> Result<(), StoreError> {
        self.lease_call(room, &["capacity".to_owned(), capacity.to_string()])
            .await?;
        Ok(())
    }

    async fn reserve(&self, room: &str, ask: &LineAsk) -> Result<Reservation, StoreError> {
        let field = match ask.line {
            Line::Pace => "next",
            Line::Budget => "tnext",
        };
        let args = [
            "line".to_owned(),
            field.to_owned(),
            millis(ask.per),
            ask.units.to_string(),
            u64::try_from(ask.max_wait.as_millis())
                .unwrap_or(u64::MAX)
                .to_string(),
            millis(ask.ahead),
        ];
        reservation(&self.lease_call(room, &args).await?)
    }

    async fn settle(&self, room: &str, per_token: Duration, delta: i64) -> Result<(), StoreError> {
        let args = [
            "settle".to_owned(),
            "tnext".to_owned(),
            millis(per_token),
            delta.to_string(),
        ];
        self.lease_call(room, &args).await?;
        Ok(())
    }

    async fn adapt(&self, room: &str, step: Step) -> Result<u32, StoreError> {
        let args = match step {
            Step::Down { age, min } => vec![
                "adapt".to_owned(),
                "down".to_owned(),
                millis(age),
                min.to_string(),
            ],
            Step::Up => vec!["adapt".to_owned(), "up".to_owned()],
            Step::Keep => vec!["adapt".to_owned(), "keep".to_owned()],
        };
        let v = self.lease_call(room, &args).await?;
        u32_of(Some(&v))
    }

    fn lease(&self) -> Duration {
        self.lease
    }
}
