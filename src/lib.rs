//! anteroom: a virtual waiting room in front of a web app or an LLM API,
//! built on Pingora.
//!
//! The request path is `proxy` (Pingora glue) carrying out plain decisions
//! made on a request's `facts`: `route` picks the route, `requests` admits
//! requests to `requests` rooms through their `slots`, and `gate` decides
//! for `sessions` rooms over a `store`; `replies` is what a waiting visitor
//! is told. `server` assembles the Pingora services from a validated
//! `config` and the `assets` it names. docs/architecture.md draws the layers.

pub mod adaptive;
pub mod admin;
pub mod api;
pub mod assets;
pub mod attribution;
pub mod bus;
pub mod bypass;
pub mod canonical;
pub mod challenge;
pub mod clients;
pub mod config;
pub mod connections;
pub mod cookies;
pub mod demo;
pub mod event;
pub mod event_stream;
pub mod events;
pub mod facts;
pub mod fair;
pub mod forward;
pub mod gate;
pub mod keeper;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod pace;
pub mod page;
pub mod proxy;
pub mod queue;
pub mod reload;
pub mod replies;
pub mod requests;
pub mod respond;
pub mod room;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod simulate;
pub mod sinks;
pub mod site;
pub mod slots;
pub mod snapshots;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod token;
pub mod traffic;
pub mod turns;
pub mod upstream;
pub mod usage;
