//! anteroom: a virtual waiting room in front of a web app or an LLM API,
//! built on Pingora.
//!
//! The request path is `proxy` (Pingora glue) calling into plain, synchronous
//! modules: `route` picks the route, `room` and `slots` decide admission.
//! `server` assembles the Pingora services from a validated `config`.

pub mod admin;
pub mod api;
pub mod config;
pub mod demo;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod respond;
pub mod room;
pub mod route;
pub mod server;
pub mod slots;
pub mod upstream;
