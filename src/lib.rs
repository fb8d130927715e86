//! anteroom: a virtual waiting room in front of a web app or an LLM API,
//! built on Pingora.
//!
//! The request path is `proxy` (Pingora glue) calling into plain modules:
//! `route` picks the route, `slots` admits requests to `requests` rooms, and
//! `gate` decides for `sessions` rooms over a `store` (the line itself is
//! `queue`, tokens are `token`). `server` assembles the Pingora services from
//! a validated `config`.

pub mod admin;
pub mod api;
pub mod assets;
pub mod attribution;
pub mod bypass;
pub mod config;
pub mod cookies;
pub mod demo;
pub mod events;
pub mod facts;
pub mod forward;
pub mod gate;
pub mod keeper;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod page;
pub mod proxy;
pub mod queue;
pub mod replies;
pub mod requests;
pub mod respond;
pub mod room;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod slots;
pub mod store;
#[cfg(test)]
mod testing;
pub mod token;
pub mod traffic;
pub mod upstream;
