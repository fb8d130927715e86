//! Integration tests: one binary, topic modules (links once).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

mod admin;
mod binary;
mod browser;
mod canonical;
mod cluster;
mod config;
mod demo;
mod deploy;
mod draw;
mod event_sinks;
mod event_stream;
mod floods;
mod forwarding;
mod fuzz;
mod hardening;
mod http2;
mod llm;
mod load;
mod redis_deployments;
mod reload;
mod request_rooms;
mod restart;
mod simulate;
mod store;
mod tokens;
mod waiting_room;
