//! Client connections: how many are open (a gauge, and an optional cap),
//! how long a request's header may take to arrive, and how long a
//! kept-alive connection may sit idle.
//!
//! Pingora times each read of a request header, not the whole header, so a
//! client sending one byte every few seconds (slowloris) would hold its
//! connection for ever; and timing each read costs a timer per read.
//! Instead, [`Bounded`] reads every connection's stream through a [`Clock`]:
//! a phase and a deadline in coarse milliseconds, set with a few atomic
//! stores per request. One background task, [`Sweeper`], looks at every
//! clock twice a second and wakes the connections whose header (counted
//! from the connection's start, or from the first byte of the next request)
//! or whose idle time ran past its limit; their next read fails, and Pingora
//! closes them. The proxy tells the clock when a header is complete
//! (`request_read`) and a response done (`response_done`) through a
//! task-local: an HTTP/1 connection's requests all run in its own task.
//! HTTP/2 connections (which start with the preface) are left to their
//! protocol's own limits.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// How often the deadlines are looked at: their precision.
const TICK: Duration = Duration::from_millis(500);
/// How long the shutdown waits for headers on their way before it closes
/// the connections that are waiting for one.
const SETTLE: Duration = Duration::from_secs(2);

tokio::task_local! {
    static CONNECTION: Arc<Clock>;
}

/// The connection metrics.
pub struct ConnectionMetrics {
    open: IntGauge,
    refused: IntCounter,
    header_timeouts: IntCounter,
}

impl ConnectionMetrics {
    /// Registers the connection metrics.
    pub fn register(registry: &Registry) -> Result<ConnectionMetrics, prometheus::Error> {
        let open = IntGauge::new("connections_open", "Client connections open now.")?;
        registry.register(Box::new(open.clone()))?;
        let refused = IntCounter::new(
            "connections_refused_total",
            "Client connections closed at once because server.max_connections were open.",
        )?;
        registry.register(Box::new(refused.clone()))?;
        let header_timeouts = IntCounter::new(
            "connections_header_timeouts_total",
            "Client connections closed because a request header took longer than server.header_timeout.",
        )?;
        registry.register(Box::new(header_timeouts.clone()))?;
        Ok(ConnectionMetrics {
            open,
            refused,
            header_timeouts,
        })
    }
}

/// What the guard, every clock and the sweeper share.
struct Shared {
    origin: Instant,
    /// Milliseconds since `origin`, as of the sweeper's last tick.
    now: AtomicU64,
    header_ms: u64,
    idle_ms: u64,
    clocks: Mutex<Vec<Weak<Clock>>>,
    metrics: ConnectionMetrics,
    /// The listeners stopped accepting (the guard's cleanup began): every
    /// connection there will be has been handed to its task.
    closed: AtomicBool,
}

impl Shared {
    fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    /// Connections with a request header on its way, or none yet.
    fn receiving(&self) -> usize {
        self.count(|phase| phase == Phase::Header)
    }

    fn count(&self, counted: impl Fn(Phase) -> bool) -> usize {
        self.clocks
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| counted(c.phase()))
            .count()
    }
}

/// Limits on client connections.
pub struct Limits {
    /// The whole header of a request.
    pub header_timeout: Duration,
    /// A kept-alive connection between requests.
    pub idle_timeout: Duration,
    /// Open connections (0: no cap).
    pub max: usize,
}

/// Counts the connections with a request under way, for the drain.
#[derive(Clone)]
pub struct Active(Arc<Shared>);

impl Active {
    /// HTTP/1 connections receiving a request header or handling a request:
    /// a process that exits now would cut them. Idle keep-alive connections
    /// do not count (they are closed at shutdown without loss); HTTP/2
    /// requests are counted as requests in flight.
    pub fn count(&self) -> usize {
        self.0
            .count(|phase| matches!(phase, Phase::Header | Phase::Busy))
    }

    /// The listeners stopped accepting. Until then a connection just
    /// accepted may not be counted yet (its task has not run).
    pub fn closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }
}

/// Makes the guard of the public app and the sweeper of its deadlines.
pub fn guard<A>(app: A, limits: Limits, metrics: ConnectionMetrics) -> (Bounded<A>, Sweeper) {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        now: AtomicU64::new(0),
        header_ms: ms(limits.header_timeout),
        idle_ms: ms(limits.idle_timeout),
        clocks: Mutex::new(Vec::new()),
        metrics,
        closed: AtomicBool::new(false),
    });
    let guard = Bounded {
        app: Arc::new(app),
        max: limits.max,
        open: AtomicUsize::new(0),
        shared: Arc::clone(&shared),
    };
    (guard, Sweeper(shared))
}

/// The proxy app behind the connection limits.
pub struct Bounded<A> {
    app: Arc<A>,
    max: usize,
    open: AtomicUsize,
    shared: Arc<Shared>,
}

/// Counts a connection as open until dropped.
struct Open<'a>(&'a AtomicUsize, &'a IntGauge);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Bounded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let metrics = &self.shared.metrics;
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics.open.inc();
        let _open = Open(&self.open, &metrics.open);
        if self.max > 0 && open > self.max {
            metrics.refused.inc();
            return None;
        }
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let clock = Arc::new(Clock::new(Arc::clone(&self.shared), !h2));
        self.shared.clocks.lock().push(Arc::downgrade(&clock));
        let timed: Stream = Box::new(Timed {
            inner: stream,
            clock: Arc::clone(&clock),
            first: true,
        });
        CONNECTION
            .scope(clock, self.app.process_new(timed, shutdown))
            .await
    }

    /// Pingora's cleanup drops every connection still waiting for a request
    /// header. A connection accepted just before the listener closed has
    /// usually been sent its first request already, but the bytes may not
    /// have been read yet: those are given up to [`SETTLE`] to arrive, so an
    /// upgrade or a drain does not cut a request the client has sent.
    async fn cleanup(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let until = Instant::now() + SETTLE;
        while Instant::now() < until && self.shared.receiving() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.app.cleanup().await;
    }
}

/// Expires the connections whose header or idle time ran out.
pub struct Sweeper(Arc<Shared>);

impl Sweeper {
    /// What the drain waits for.
    pub fn active(&self) -> Active {
        Active(Arc::clone(&self.0))
    }

    fn sweep(&self) {
        let shared = &self.0;
        let now = u64::try_from(shared.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        shared.now.store(now, Ordering::Relaxed);
        shared.clocks.lock().retain(|weak| {
            let Some(clock) = weak.upgrade() else {
                return false;
            };
            let phase = clock.phase();
            if matches!(phase, Phase::Header | Phase::Idle)
                && now >= clock.deadline.load(Ordering::Relaxed)
            {
                if phase == Phase::Header {
                    shared.metrics.header_timeouts.inc();
                }
                clock.phase.store(Phase::Expired as u8, Ordering::Release);
                clock.waker.wake();
            }
            true
        });
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The request on this task's connection has its whole header.
pub fn request_read() {
    let _ = CONNECTION.try_with(|c| c.set(Phase::Busy));
}

/// The response on this task's connection is done: the connection may wait
/// for the next request for the idle timeout, whose header is timed from its
/// first byte.
pub fn response_done() {
    let _ = CONNECTION.try_with(|c| c.idle());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// A header is being received, against the deadline.
    Header = 0,
    /// A request is being handled (its body read, its response written).
    Busy = 1,
    /// Between requests, against the deadline.
    Idle = 2,
    /// Not timed (HTTP/2).
    Off = 3,
    /// A deadline passed: the connection is closed at its next read.
    Expired = 4,
}

/// The deadlines of one connection.
pub struct Clock {
    shared: Arc<Shared>,
    phase: AtomicU8,
    /// When the current phase ends, in the shared coarse milliseconds.
    deadline: AtomicU64,
    waker: AtomicWaker,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("phase", &self.phase())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Clock {
    fn new(shared: Arc<Shared>, timed: bool) -> Clock {
        let (phase, deadline) = if timed {
            (Phase::Header, shared.now().saturating_add(shared.header_ms))
        } else {
            (Phase::Off, u64::MAX)
        };
        Clock {
            shared,
            phase: AtomicU8::new(phase as u8),
            deadline: AtomicU64::new(deadline),
            waker: AtomicWaker::new(),
        }
    }

    /// Resolves once the sweeper expired this connection.
    async fn expired(&self) {
        std::future::poll_fn(|cx| {
            if self.phase() == Phase::Expired {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.phase() == Phase::Expired {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Header,
            1 => Phase::Busy,
            2 => Phase::Idle,
            4 => Phase::Expired,
            _ => Phase::Off,
        }
    }

    /// Moves to `phase`, unless the connection is untimed or already expired.
    fn set(&self, phase: Phase) {
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != Phase::Off as u8 && p != Phase::Expired as u8).then_some(phase as u8)
            });
    }

    /// Starts a timed phase now.
    fn start(&self, phase: Phase) {
        let limit = match phase {
            Phase::Header => self.shared.header_ms,
            _ => self.shared.idle_ms,
        };
        self.deadline
            .store(self.shared.now().saturating_add(limit), Ordering::Relaxed);
        self.set(phase);
    }

    fn idle(&self) {
        self.start(Phase::Idle);
    }
}

/// A client stream read against its connection's clock.
struct Timed {
    inner: Stream,
    clock: Arc<Clock>,
    first: bool,
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed").field("inner", &self.inner).finish()
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.clock.phase();
        if phase == Phase::Expired {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection ran out of time",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let got = &buf.filled()[before..];
                if std::mem::take(&mut this.first)
                    && got.starts_with(&H2_PREFACE[..got.len().min(H2_PREFACE.len())])
                {
                    this.clock.phase.store(Phase::Off as u8, Ordering::Release);
                } else if phase == Phase::Idle {
                    this.clock.start(Phase::Header);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if matches!(phase, Phase::Header | Phase::Idle) => {
                this.clock.waker.register(cx.waker());
                // Expired between the check above and the registration.
                if this.clock.phase() == Phase::Expired {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Timed {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Timed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Timed {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Timed {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Timed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Timed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Timed {
    /// Pingora peeks for the h2c preface with a `read_exact` of its length
    /// on the inner stream, out of this wrapper's reads: a client that sends
    /// fewer bytes and stalls would hold the connection for ever. The peek
    /// ends with the header deadline as a read does.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let clock = Arc::clone(&self.clock);
        tokio::select! {
            peeked = self.inner.try_peek(buf) => peeked,
            () = clock.expired() => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection ran out of time",
            )),
        }
    }
}
