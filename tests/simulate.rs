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

use crate::common::{Store, TestProxy, TestUpstream, waiting_room_config};

const VISITORS: usize = 50;
const VISIT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(250);

#[tokio::test]
async fn simulated_waits_match_a_real_run() {
    let upstream = TestUpstream::start().await;
    let toml = waiting_room_config(
        &upstream,
        Store::Memory,
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
        shape: anteroom::simulate::VisitShape::Uniform,
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

/// One scenario of the estimate family, drawn from its seed.
#[derive(Debug, Clone)]
struct Scenario {
    capacity: u32,
    avg_session: Duration,
    session_ttl: Duration,
    poll: Duration,
    curve: Vec<u32>,
    model: Model,
}

/// Draws a scenario: a room of 2 to 40; visits of 1 to 10 s on average,
/// spread uniformly (narrow or wide) or with a long tail; polls every 0.5 to
/// 5 s; arrivals from half to four times what the room serves, as one burst,
/// a steady stream, a campaign that decays or a ramp that grows; most
/// visitors leave when done, the others' sessions lapse `session_ttl` after
/// their last request; some lines lose the impatient. `avg_session` is the
/// operator's guess of how long a visitor holds a place (a visit, plus the
/// lapse for those who do not leave), from half to twice the truth.
fn scenario(seed: u64, guessed: bool) -> Scenario {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let capacity = rng.gen_range(2..=40u32);
    let real_mean = rng.gen_range(1_000.0..10_000.0f64);
    let (shape, visit) = if rng.gen_bool(0.3) {
        // LongTail's mean is shortest + (longest - shortest) = longest.
        let shortest = real_mean * rng.gen_range(0.2..0.6);
        (
            anteroom::simulate::VisitShape::LongTail,
            (shortest, real_mean),
        )
    } else {
        let half_spread = real_mean * rng.gen_range(0.0..0.8);
        (
            anteroom::simulate::VisitShape::Uniform,
            (real_mean - half_spread, real_mean + half_spread),
        )
    };
    let leave = rng.gen_bool(0.8);
    let session_ttl = rng.gen_range(10_000.0..60_000.0f64);
    let held = if leave {
        real_mean
    } else {
        real_mean + session_ttl
    };
    let guess = rng.gen_range(0.5..2.0);
    let avg_ms = held * if guessed { guess } else { 1.0 };
    let served_per_s = f64::from(capacity) * 1000.0 / held;
    let rate = served_per_s * rng.gen_range(0.5..4.0);
    let seconds = rng.gen_range(5..=60usize);
    let curve: Vec<u32> = match rng.gen_range(0..4) {
        0 => vec![(rate * seconds as f64 / 4.0).round().max(1.0) as u32],
        1 => vec![rate.round().max(1.0) as u32; seconds],
        2 => (0..seconds)
            .map(|t| (2.0 * rate * 0.5f64.powf(t as f64 / (seconds as f64 / 4.0))).round() as u32)
            .collect(),
        _ => (0..seconds)
            .map(|t| (2.0 * rate * (t + 1) as f64 / seconds as f64).round() as u32)
            .collect(),
    };
    let patience = rng
        .gen_bool(0.3)
        .then(|| Duration::from_millis(rng.gen_range(20_000..120_000)));
    Scenario {
        capacity,
        avg_session: Duration::from_millis(avg_ms as u64),
        session_ttl: Duration::from_millis(session_ttl as u64),
        poll: Duration::from_millis(rng.gen_range(500..=5_000)),
        curve,
        model: Model {
            visit: (
                Duration::from_millis(visit.0 as u64),
                Duration::from_millis(visit.1 as u64),
            ),
            shape,
            patience,
            leave,
            seed,
        },
    }
}

/// Each wait told at arrival, as (signed relative error against the wait
/// that followed, whether it was told as known), for those who waited at
/// least a visit and two polls (closer to the turn an estimate is about one
/// visit's end, not about the line).
fn arrival_errors(s: &Scenario) -> Vec<(f64, bool)> {
    let toml = format!(
        "[tokens]\nsigning_key = \"{}\"\n[[upstream]]\nname = \"app\"\naddress = \"127.0.0.1:3000\"\n\
         [[room]]\nname = \"web\"\nmode = \"sessions\"\ncapacity = {}\navg_session = \"{}ms\"\n\
         poll_interval = \"{}ms\"\nconfirm_window = \"{}ms\"\nsession_ttl = \"{}ms\"\n\
         [[route]]\nupstream = \"app\"\nroom = \"web\"\n",
        crate::common::keys().private.display(),
        s.capacity,
        s.avg_session.as_millis(),
        s.poll.as_millis(),
        (s.poll.as_millis() * 2)
            .max(30_000)
            .min(s.session_ttl.as_millis()),
        s.session_ttl.as_millis(),
    );
    let config = Config::from_toml(&toml, Path::new("family.toml")).unwrap();
    let report = run(&config, None, &Curve(s.curve.clone()), &s.model).unwrap();
    let mean_visit = match s.model.shape {
        anteroom::simulate::VisitShape::Uniform => (s.model.visit.0 + s.model.visit.1) / 2,
        anteroom::simulate::VisitShape::LongTail => s.model.visit.1,
    }
    .as_millis() as u64;
    let floor = mean_visit.max(2 * s.poll.as_millis() as u64);
    report
        .visits
        .iter()
        .filter(|v| !v.gave_up)
        .filter_map(|v| {
            let (told, waited) = (v.told?, v.waited?);
            let real = waited as f64;
            (waited >= floor).then(|| ((told.ms as f64 - real) / real, told.known))
        })
        .collect()
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or(f64::NAN)
}

/// What a family of scenarios was told at arrival.
struct Family {
    /// |error| of the estimates told as known, and of every estimate.
    known: Vec<f64>,
    every: Vec<f64>,
    /// Seeds whose known estimates' median signed error is past ±10%.
    biased: Vec<u64>,
    /// (estimates, of which not known), and a line per scenario.
    told: (usize, usize),
    report: Vec<String>,
}

fn family(guessed: bool) -> Family {
    let mut f = Family {
        known: Vec::new(),
        every: Vec::new(),
        biased: Vec::new(),
        told: (0, 0),
        report: Vec::new(),
    };
    for seed in 0..80 {
        let s = scenario(seed, guessed);
        let errors = arrival_errors(&s);
        let known: Vec<f64> = errors.iter().filter(|(_, k)| *k).map(|(e, _)| *e).collect();
        let abs = |v: &[f64]| v.iter().map(|e| e.abs()).collect::<Vec<f64>>();
        f.told.0 += errors.len();
        f.told.1 += errors.len() - known.len();
        f.report.push(format!(
            "seed {seed}: room {} avg {:?} ttl {:?} visits {:?} {:?} poll {:?} {} arrivals over {} s leave {} patience {:?}: {} estimates, {} known; known bias {:+.0}% median {:.0}% p90 {:.0}%; all bias {:+.0}%",
            s.capacity,
            s.avg_session,
            s.session_ttl,
            s.model.visit,
            s.model.shape,
            s.poll,
            s.curve.iter().sum::<u32>(),
            s.curve.len(),
            s.model.leave,
            s.model.patience,
            errors.len(),
            known.len(),
            100.0 * percentile(known.clone(), 0.5),
            100.0 * percentile(abs(&known), 0.5),
            100.0 * percentile(abs(&known), 0.9),
            100.0 * percentile(errors.iter().map(|(e, _)| *e).collect(), 0.5),
        ));
        if known.len() >= 10 && percentile(known.clone(), 0.5).abs() > 0.10 {
            f.biased.push(seed);
        }
        f.known.extend(abs(&known));
        f.every.extend(errors.iter().map(|(e, _)| e.abs()));
    }
    f
}

/// Estimates hold for any burst shape, not the one they were tuned on: a
/// family of 80 scenarios drawn from fixed seeds, replayed on the waiting
/// room's own rules in simulated time.
/// - With `avg_session` guessed from half to twice the truth, the waits
///   told at arrival as known are within 15% at the median and 30% at the
///   90th percentile, and no scenario's are biased (their median signed
///   error) past 10% either way. A wait resting on the guess is told as not
///   known.
/// - With `avg_session` right, every wait told at arrival, known or not, is
///   within 15% at the median and 30% at the 90th percentile.
#[test]
fn estimates_hold_for_a_family_of_bursts() {
    let guessed = family(true);
    let right = family(false);
    let p = |v: &[f64], q: f64| 100.0 * percentile(v.to_vec(), q);
    let summary = format!(
        "avg_session guessed: {} estimates at arrival, {} not known; known: median {:.1}%, p90 {:.1}%; biased past 10%: {:?}\n\
         avg_session right: every estimate: median {:.1}%, p90 {:.1}%\n{}",
        guessed.told.0,
        guessed.told.1,
        p(&guessed.known, 0.5),
        p(&guessed.known, 0.9),
        guessed.biased,
        p(&right.every, 0.5),
        p(&right.every, 0.9),
        guessed.report.join("\n")
    );
    eprintln!("{summary}");
    assert!(guessed.known.len() >= 1000, "{summary}");
    assert!(
        p(&guessed.known, 0.5) <= 15.0 && p(&guessed.known, 0.9) <= 30.0,
        "{summary}"
    );
    assert!(guessed.biased.is_empty(), "{summary}");
    assert!(
        p(&right.every, 0.5) <= 15.0 && p(&right.every, 0.9) <= 30.0,
        "{summary}"
    );
}
