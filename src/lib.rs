//! anteroom: a virtual waiting room in front of a web app or an LLM API,
//! built on Pingora.
//!
//! The request path is `proxy` (Pingora glue) carrying out plain decisions
//! made on a request's `facts`: `route` picks the route, `requests` admits
//! requests to `requests` rooms through their `slots`, and `gate` decides
//! for `sessions` rooms over a `store`; `replies` is what a waiting visitor
//! is told. `server` assembles the Pingora services from a validated
//! `config` and the `assets` it names. docs/architecture.md draws the layers.

pub mod assets;
pub mod attribution;
pub mod bypass;
pub mod challenge;
pub mod clients;
pub mod codes;
pub mod config;
pub mod demo;
pub mod draw;
pub mod events;
pub mod gate;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod page;
pub mod proxy;
pub mod queue;
pub mod request;
pub mod requests;
pub mod response;
pub mod room;
pub mod server;
pub mod simulate;
pub mod store;
#[cfg(test)]
mod testing;
pub mod token;
pub mod wakeups;
