//! `anteroom simulate` against the real thing: the same config, the same
//! visitors (50 at once at a room of 5, visits of a second, polls every
//! 250 ms, leaving when done), once through the real proxy in real time and
//! once simulated. The simulation must let them in in the same order and
//! tell waits within the stated tolerance (docs/scaling.md).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anteroom::config::Config;
use anteroom::simulate::{Curve, Model, run};
use futures_util::future::join_all;
use parking_lot::Mutex;

use crate::common::{Backend, TestProxy, TestUpstream, waiting_room_config};

const VISITORS: usize = 50;
const VISIT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(250);

#[tokio::test]
async fn simulated_waits_match_a_real_run() {
    let upstream = TestUpstream::start().await;
    let toml = waiting_room_config(
        &upstream,
        Backend::Memory,
        "capacity = 5\npoll_interval = \"250ms\"\nclaim_window = \"5s\"\nheartbeat_timeout = \"10s\"\nsession_ttl = \"30s\"",
        "",
    );
    let proxy = Arc::new(TestProxy::start(&toml).await);

    // The real run: everyone arrives (one after another, in order), then
    // each waits by polling, visits for a second, and leaves.
    let start = Instant::now();
    let mut arrivals = Vec::new();
    for i in 0..VISITORS {
        let mut v = proxy.visitor();
        let (status, _) = v.get("/echo").await;
        arrivals.push((i, v, start.elapsed(), status.as_u16()));
    }
    let waits = Arc::new(Mutex::new(vec![Duration::ZERO; VISITORS]));
    join_all(arrivals.into_iter().map(|(i, mut v, arrived, status)| {
        let waits = Arc::clone(&waits);
        async move {
            if status != 200 {
                loop {
                    tokio::time::sleep(POLL).await;
                    if v.poll().await["state"] == "admitted" {
                        break;
                    }
                }
            }
            waits.lock()[i] = start.elapsed() - arrived;
            tokio::time::sleep(VISIT).await;
            v.leave().await;
        }
    }))
    .await;
    let real: Vec<Duration> = waits.lock().clone();

    // The simulation of the same.
    let config = Config::from_toml(&toml, Path::new("simulate.toml")).unwrap();
    let model = Model {
        visit: (VISIT, VISIT),
        patience: None,
        leave: true,
        seed: 1,
    };
    let report = run(&config, None, &Curve(vec![VISITORS as u32]), &model).unwrap();
    let simulated: Vec<Duration> = report
        .visits
        .iter()
        .map(|v| Duration::from_millis(v.waited.expect("everyone gets in")))
        .collect();

    // The same order: the k-th five let in are the k-th five to arrive.
    let rounds = |waits: &[Duration]| {
        let mut order: Vec<usize> = (0..waits.len()).collect();
        order.sort_by_key(|&i| waits[i]);
        let mut round = vec![0; waits.len()];
        for (rank, i) in order.into_iter().enumerate() {
            round[i] = rank / 5;
        }
        round
    };
    let arrival_rounds: Vec<usize> = (0..VISITORS).map(|i| i / 5).collect();
    assert_eq!(
        rounds(&real),
        arrival_rounds,
        "the real run's order: {real:?}"
    );
    assert_eq!(
        rounds(&simulated),
        arrival_rounds,
        "the simulated order: {simulated:?}"
    );
    let worst = (0..VISITORS)
        .map(|i| (real[i].as_secs_f64() - simulated[i].as_secs_f64()).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "last in: real {:.2} s, simulated {:.2} s; largest difference {worst:.2} s",
        real[VISITORS - 1].as_secs_f64(),
        simulated[VISITORS - 1].as_secs_f64()
    );
    // Within a second or 15%, whichever is more, for everyone.
    for i in 0..VISITORS {
        let (r, s) = (real[i].as_secs_f64(), simulated[i].as_secs_f64());
        assert!(
            (r - s).abs() <= (0.15 * r).max(1.0),
            "visitor {i}: real {r:.2} s, simulated {s:.2} s\nreal {real:?}\nsimulated {simulated:?}"
        );
    }
}

/// The command line: a report for a shipped config, and a clear refusal of
/// an arrival curve it cannot read.
#[test]
fn the_command_reports_and_refuses_what_it_cannot_read() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args(["simulate", "--config", "conf/waiting-room.toml"])
        .args([
            "--arrivals",
            "campaign:50:20",
            "--visit",
            "30s..1m",
            "--patience",
            "5m",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "room \"web\"",
        "waits",
        "gave up waiting",
        "line drained",
        "busiest second",
    ] {
        assert!(report.contains(part), "{part} missing from\n{report}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args([
            "simulate",
            "--config",
            "conf/waiting-room.toml",
            "--arrivals",
            "/nonexistent.csv",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--arrivals \"/nonexistent.csv\""), "{err}");
}
