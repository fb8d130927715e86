//! Tests whose measure is time itself (how honest a told wait is): a binary
//! of their own, so that the other tests' load on two cores does not stretch
//! the waits they compare. They share the integration tests' harness.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

mod common;

mod estimates;
