//! One client as a room's per-client rules see it: the network it comes
//! from, what its tokens are bound to, and the rate limits on what it may
//! do. Plain and synchronous: the limits live in this instance's memory
//! (`governor`), except `tickets_per_client`, which the store counts for
//! every instance.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use prometheus::{IntCounter, Registry};

use crate::config::{Bind, Limits, UnknownClients};
use crate::token::Tokens;

/// A per-client limit, as named in `[room.limits]` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Tickets one network holds at once (counted by the store).
    Tickets,
    /// New arrivals from one network per minute.
    Arrivals,
    /// Status polls per ticket per minute.
    Polls,
    /// Event streams open at once from one network.
    Streams,
}

impl Limit {
    /// Every limit, for metrics present from startup.
    pub const ALL: [Limit; 4] = [
        Limit::Tickets,
        Limit::Arrivals,
        Limit::Polls,
        Limit::Streams,
    ];

    /// The key in `[room.limits]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Tickets => "tickets_per_client",
            Limit::Arrivals => "arrivals_per_minute",
            Limit::Polls => "polls_per_minute",
            Limit::Streams => "streams_per_client",
        }
    }
}

/// A request over a limit, and when the client may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Which limit.
    pub limit: Limit,
    /// How long to wait.
    pub retry_after: Duration,
}

/// How long a client over `tickets_per_client` is asked to wait: one of its
/// tickets has to be admitted or lapse first.
const RETRY_TICKETS: Duration = Duration::from_secs(30);

impl Limited {
    /// Over `tickets_per_client`.
    pub fn tickets() -> Limited {
        Limited {
            limit: Limit::Tickets,
            retry_after: RETRY_TICKETS,
        }
    }
}

/// The client network of an address: the address cut to the room's prefix
/// (an IPv4-mapped IPv6 address counts as IPv4).
pub fn network(ip: IpAddr, limits: &Limits) -> IpNet {
    let ip = ip.to_canonical();
    let prefix = match ip {
        IpAddr::V4(_) => limits.prefix_v4,
        IpAddr::V6(_) => limits.prefix_v6,
    };
    IpNet::new(ip, prefix).map_or_else(|_| IpNet::from(ip), |n| n.trunc())
}

/// The network a client's per-client limits count under: its own
/// (`ip`), or for a client whose address is unknown what `unknown_clients`
/// says: one network shared by all of them (`0.0.0.0/0`, which no known
/// client's network is), the peer's, or none (`refuse`: the caller refuses).
pub fn network_of(ip: Option<IpAddr>, peer: Option<IpAddr>, limits: &Limits) -> Option<IpNet> {
    match (ip, limits.unknown_clients) {
        (Some(ip), _) => Some(network(ip, limits)),
        (None, UnknownClients::Share) => Some(UNKNOWN),
        (None, UnknownClients::Peer) => peer.map(|p| network(p, limits)),
        (None, UnknownClients::Refuse) => None,
    }
}

/// The one network all unknown clients share under `unknown_clients = "share"`.
pub const UNKNOWN: IpNet = IpNet::V4(ipnet::Ipv4Net::new_assert(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// A network as bytes: its address then its prefix length.
fn network_bytes(net: &IpNet) -> Vec<u8> {
    let mut bytes = match net.addr() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    bytes.push(net.prefix_len());
    bytes
}

/// What a client's tokens are bound to under `bind`: a keyed digest of its
/// `User-Agent` (and network); `None` when the room binds nothing. Every
/// instance computes the same one; nobody without the signing key can.
pub fn binding(
    tokens: &Tokens,
    bind: Bind,
    user_agent: &[u8],
    network: Option<&IpNet>,
) -> Option<String> {
    match bind {
        Bind::None => None,
        Bind::UserAgent => Some(tokens.digest(&[b"bind", user_agent])),
        Bind::UserAgentAndNetwork => {
            let net = network.map(network_bytes).unwrap_or_default();
            Some(tokens.digest(&[b"bind", user_agent, &net]))
        }
    }
}

/// The digest of a client network that the store counts tickets under.
pub fn network_digest(tokens: &Tokens, room: &str, network: &IpNet) -> String {
    tokens.digest(&[b"net", room.as_bytes(), &network_bytes(network)])
}

/// The digest an arrival's `Idempotency-Key` is kept under: the key scoped
/// to the client that sent it (its network under the room's prefixes and,
/// where the room binds tokens, its binding), so that another client sending
/// the same key is a new arrival and never gets the first one's place.
pub fn idempotency_digest(
    tokens: &Tokens,
    room: &str,
    key: &[u8],
    network: Option<&IpNet>,
    binding: Option<&str>,
) -> String {
    let net = network.map(network_bytes).unwrap_or_default();
    let binding = binding.map_or(&b""[..], str::as_bytes);
    tokens.digest(&[b"idem", room.as_bytes(), key, &net, binding])
}

/// Requests that came through trusted proxies, and those of them whose
/// client anteroom could not read (`unknown`, `ip:port`): behind a proxy that
/// always passes such values every client is unknown, and the per-client
/// limits act as `unknown_clients` says. Told once in the log, and in
/// `/readyz?details`, when most are unknown.
#[derive(Clone)]
pub struct Sightings {
    forwarded: IntCounter,
    unknown: IntCounter,
    warned: Arc<AtomicBool>,
}

/// Requests through trusted proxies seen before "most are unknown" is said.
const SIGHTINGS_BEFORE_WARNING: u64 = 20;

impl Sightings {
    /// Registers the counters.
    pub fn register(registry: &Registry) -> Result<Sightings, prometheus::Error> {
        let forwarded = IntCounter::new(
            "forwarded_clients_total",
            "Requests that came through a trusted proxy.",
        )?;
        let unknown = IntCounter::new(
            "unknown_clients_total",
            "Requests through a trusted proxy that named no client address anteroom could read (unknown, ip:port): the per-client limits treat them as [room.limits] unknown_clients says.",
        )?;
        registry.register(Box::new(forwarded.clone()))?;
        registry.register(Box::new(unknown.clone()))?;
        Ok(Sightings {
            forwarded,
            unknown,
            warned: Arc::default(),
        })
    }

    /// A request came through a trusted proxy; `known`: its client's
    /// address was read.
    pub fn forwarded(&self, known: bool) {
        self.forwarded.inc();
        if known {
            return;
        }
        self.unknown.inc();
        if self.mostly_unknown() && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                forwarded = self.forwarded.get(),
                unknown = self.unknown.get(),
                "most clients behind trusted_proxies are unknown (the proxy passes no bare address in X-Forwarded-For): per-client limits apply as [room.limits] unknown_clients says"
            );
        }
    }

    /// Requests through trusted proxies, and how many named no client.
    pub fn counts(&self) -> (u64, u64) {
        (self.forwarded.get(), self.unknown.get())
    }

    /// More than half of the requests through trusted proxies (at least a
    /// few of them) named no client.
    pub fn mostly_unknown(&self) -> bool {
        let (forwarded, unknown) = self.counts();
        forwarded >= SIGHTINGS_BEFORE_WARNING && unknown * 2 > forwarded
    }
}

/// The in-memory limits of one room.
pub struct ClientLimits {
    limits: Limits,
    arrivals: Option<DefaultKeyedRateLimiter<IpNet>>,
    polls: Option<DefaultKeyedRateLimiter<u64>>,
    hasher: RandomState,
    clock: DefaultClock,
}

impl ClientLimits {
    /// The limits `[room.limits]` sets (none kept for a 0).
    pub fn new(limits: Limits) -> ClientLimits {
        let per_minute = |n: u32| NonZeroU32::new(n).map(Quota::per_minute);
        ClientLimits {
            limits,
            arrivals: per_minute(limits.arrivals_per_minute).map(RateLimiter::keyed),
            polls: per_minute(limits.polls_per_minute).map(RateLimiter::keyed),
            hasher: RandomState::new(),
            clock: DefaultClock::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Limits {
        &self.limits
    }

    fn wait(
        &self,
        limit: Limit,
        earliest: governor::NotUntil<governor::clock::QuantaInstant>,
    ) -> Limited {
        Limited {
            limit,
            retry_after: earliest.wait_time_from(self.clock.now()),
        }
    }

    /// A new arrival from `network`.
    pub fn arrival(&self, network: Option<&IpNet>) -> Result<(), Limited> {
        match (&self.arrivals, network) {
            (Some(limiter), Some(net)) => limiter
                .check_key(net)
                .map_err(|e| self.wait(Limit::Arrivals, e)),
            _ => Ok(()),
        }
    }

    /// A status poll with the ticket `ticket` (its id).
    pub fn poll(&self, ticket: &str) -> Result<(), Limited> {
        match &self.polls {
            Some(limiter) => limiter
                .check_key(&self.hasher.hash_one(ticket))
                .map_err(|e| self.wait(Limit::Polls, e)),
            None => Ok(()),
        }
    }

    /// Forgets clients whose allowance is whole again (the sweeper's job),
    /// so that a flood of addresses or tickets leaves no memory behind.
    pub fn tidy(&self) {
        for limiter in self.arrivals.iter() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in self.polls.iter() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(arrivals: u32, polls: u32) -> Limits {
        Limits {
            tickets_per_client: 0,
            arrivals_per_minute: arrivals,
            polls_per_minute: polls,
            streams_per_ticket: 2,
            streams_per_client: 100,
            unknown_clients: crate::config::UnknownClients::Share,
            prefix_v4: 24,
            prefix_v6: 64,
        }
    }

    #[test]
    fn unknown_clients_count_as_unknown_clients_says() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let with = |u| Limits {
            unknown_clients: u,
            ..limits(0, 0)
        };
        for u in [
            UnknownClients::Share,
            UnknownClients::Peer,
            UnknownClients::Refuse,
        ] {
            assert_eq!(
                network_of(Some(client), Some(peer), &with(u)),
                Some("192.0.2.0/24".parse().unwrap())
            );
        }
        assert_eq!(
            network_of(None, Some(peer), &with(UnknownClients::Share)),
            Some(UNKNOWN)
        );
        assert_eq!(
            network_of(None, Some(peer), &with(UnknownClients::Peer)),
            Some("10.0.0.0/24".parse().unwrap())
        );
        assert_eq!(
            network_of(None, Some(peer), &with(UnknownClients::Refuse)),
            None
        );
        // The shared bucket is no known client's network.
        let everyone = Limits {
            prefix_v4: 1,
            ..limits(0, 0)
        };
        assert_ne!(network("0.0.0.1".parse().unwrap(), &everyone), UNKNOWN);
        // Unknown clients share one arrival allowance.
        let c = ClientLimits::new(limits(3, 0));
        let passed = (0..10)
            .filter(|_| c.arrival(Some(&UNKNOWN)).is_ok())
            .count();
        assert_eq!(passed, 3);
    }

    #[test]
    fn networks_are_cut_to_the_prefix() {
        let l = limits(0, 0);
        let v4 = |s: &str| network(s.parse().unwrap(), &l).to_string();
        assert_eq!(v4("192.0.2.77"), "192.0.2.0/24");
        assert_eq!(v4("::ffff:192.0.2.77"), "192.0.2.0/24");
        assert_eq!(v4("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    }

    #[test]
    fn arrivals_are_limited_per_network_and_polls_per_ticket() {
        let c = ClientLimits::new(limits(3, 2));
        let a = network("192.0.2.1".parse().unwrap(), c.settings());
        let b = network("198.51.100.1".parse().unwrap(), c.settings());
        let passed = (0..10).filter(|_| c.arrival(Some(&a)).is_ok()).count();
        assert_eq!(passed, 3);
        let over = c.arrival(Some(&a)).unwrap_err();
        assert_eq!(over.limit, Limit::Arrivals);
        // 3 a minute: the next one in about 20 s.
        assert!(over.retry_after > Duration::from_secs(15), "{over:?}");
        assert!(over.retry_after <= Duration::from_secs(20), "{over:?}");
        assert!(c.arrival(Some(&b)).is_ok(), "another network has its own");
        assert!(c.arrival(None).is_ok(), "no address, no limit");
        assert_eq!((0..5).filter(|_| c.poll("t1").is_ok()).count(), 2);
        assert!(c.poll("t2").is_ok());
        assert_eq!(c.poll("t1").unwrap_err().limit, Limit::Polls);
    }

    #[test]
    fn zero_means_no_limit() {
        let c = ClientLimits::new(limits(0, 0));
        let a = network("192.0.2.1".parse().unwrap(), c.settings());
        assert!((0..1000).all(|_| c.arrival(Some(&a)).is_ok() && c.poll("t").is_ok()));
        c.tidy();
    }
}
