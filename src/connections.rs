//! Client connections: how many are open (a gauge, and an optional cap),
//! and how long a request's header may take to arrive.
//!
//! Pingora times each read of a request header, not the whole header, so a
//! client sending one byte every few seconds (slowloris) would hold its
//! connection for ever. [`Guard`] wraps the proxy app: every connection's
//! stream is read through a [`Clock`] that refuses reads once the header has
//! taken longer than `header_timeout`, counted from the connection's start
//! or from the first byte of the next request on a kept-alive connection.
//! The proxy tells the clock when a header is complete (`request_read`) and
//! when a response is done (`response_done`), through a task-local: an
//! HTTP/1 connection's requests all run in its own task. HTTP/2 connections
//! (which start with the preface) are left to their protocol's own limits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;

use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

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

/// The proxy app behind the connection limits.
pub struct Guard<A> {
    app: Arc<A>,
    header_timeout: Duration,
    max: usize,
    open: AtomicUsize,
    metrics: ConnectionMetrics,
}

impl<A> Guard<A> {
    /// `app` with at most `max` open connections (0: no cap) and
    /// `header_timeout` for every request header.
    pub fn new(app: A, header_timeout: Duration, max: usize, metrics: ConnectionMetrics) -> Self {
        Guard {
            app: Arc::new(app),
            header_timeout,
            max,
            open: AtomicUsize::new(0),
            metrics,
        }
    }
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
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guard<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.open.inc();
        let _open = Open(&self.open, &self.metrics.open);
        if self.max > 0 && open > self.max {
            self.metrics.refused.inc();
            return None;
        }
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let clock = Arc::new(Clock::new(self.header_timeout, !h2));
        let timed: Stream = Box::new(Timed {
            inner: stream,
            clock: Arc::clone(&clock),
            sleep: None,
            first: true,
        });
        let reused = CONNECTION
            .scope(Arc::clone(&clock), self.app.process_new(timed, shutdown))
            .await;
        if clock.timed_out() {
            self.metrics.header_timeouts.inc();
        }
        reused
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// The request on this task's connection has its whole header.
pub fn request_read() {
    let _ = CONNECTION.try_with(|c| c.set(Phase::Busy));
}

/// The response on this task's connection is done: the connection waits for
/// the next request (for at most `server.keepalive_timeout`, which Pingora
/// keeps), whose header is timed from its first byte.
pub fn response_done() {
    let _ = CONNECTION.try_with(|c| c.set(Phase::Idle));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// A header is being received, against the deadline.
    Header = 0,
    /// A request is being handled (its body read, its response written).
    Busy = 1,
    /// Between requests.
    Idle = 2,
    /// Not timed (HTTP/2).
    Off = 3,
    /// The deadline passed.
    TimedOut = 4,
}

/// The header deadline of one connection.
#[derive(Debug)]
pub struct Clock {
    origin: Instant,
    header_timeout: Duration,
    phase: AtomicU8,
    /// When the current header must be complete, in nanoseconds after `origin`.
    deadline: AtomicU64,
}

impl Clock {
    fn new(header_timeout: Duration, timed: bool) -> Clock {
        let clock = Clock {
            origin: Instant::now(),
            header_timeout,
            phase: AtomicU8::new(Phase::Off as u8),
            deadline: AtomicU64::new(0),
        };
        if timed {
            clock.start_header();
        }
        clock
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Header,
            1 => Phase::Busy,
            2 => Phase::Idle,
            4 => Phase::TimedOut,
            _ => Phase::Off,
        }
    }

    fn set(&self, phase: Phase) {
        // Once off or timed out, a connection stays so.
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != Phase::Off as u8 && p != Phase::TimedOut as u8).then_some(phase as u8)
            });
    }

    fn start_header(&self) {
        let deadline = self.origin.elapsed() + self.header_timeout;
        self.deadline.store(
            u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        self.phase.store(Phase::Header as u8, Ordering::Release);
    }

    fn deadline(&self) -> Instant {
        self.origin + Duration::from_nanos(self.deadline.load(Ordering::Acquire))
    }

    fn timed_out(&self) -> bool {
        self.phase() == Phase::TimedOut
    }
}

/// A client stream read against its connection's header deadline.
struct Timed {
    inner: Stream,
    clock: Arc<Clock>,
    sleep: Option<Pin<Box<Sleep>>>,
    first: bool,
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed").field("inner", &self.inner).finish()
    }
}

fn late() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request header took too long")
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.clock.phase();
        if phase == Phase::TimedOut {
            return Poll::Ready(Err(late()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = &buf.filled()[before..];
        match read {
            Poll::Ready(Ok(())) if !got.is_empty() => {
                if std::mem::take(&mut this.first)
                    && got.starts_with(&H2_PREFACE[..got.len().min(H2_PREFACE.len())])
                {
                    this.clock.set(Phase::Off);
                } else if phase == Phase::Idle {
                    this.clock.start_header();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if phase == Phase::Header => {
                let deadline = tokio::time::Instant::from_std(this.clock.deadline());
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.clock.set(Phase::TimedOut);
                        Poll::Ready(Err(late()))
                    }
                    Poll::Pending => Poll::Pending,
                }
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
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
