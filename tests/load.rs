//! The load benchmark harness still works: a 1-second smoke run of
//! benches/load/harness.py against the debug binaries. Its figures are not
//! asserted (timing belongs to the benchmark); its table must be complete.

use std::path::Path;
use std::process::Command;

#[test]
fn load_harness_smoke_run() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_anteroom")).parent().unwrap();
    assert!(
        bin_dir.join("examples/plain-pingora").exists(),
        "cargo test builds the plain-pingora example next to the binary"
    );
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("python3")
        .arg("benches/load/harness.py")
        .args(["--smoke", "--bin-dir"])
        .arg(bin_dir)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("python3 runs the harness");
    assert!(
        run.status.success(),
        "the harness failed (./scripts/setup installs nginx, wrk and redis-server):\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    for row in [
        "| forward, no room | nginx |",
        "| forward, no room | plain pingora |",
        "| forward, no room | anteroom |",
        "| admitted: sessions room, valid pass | anteroom (memory) |",
        "| admitted: sessions room, valid pass | anteroom (redis) |",
        "| queued: 503 QUEUE_REQUIRED JSON | anteroom (memory) |",
        "| queued: waiting page | anteroom (memory) |",
        "| status poll, 1000 queued | anteroom (redis) |",
        "| arrival flood: new visitor, signed ticket | anteroom (memory) |",
        "| anteroom, sessions room with pass |",
        "| forward, the pass scenario's request | plain pingora |",
    ] {
        assert!(
            summary.contains(row),
            "{row:?} missing from the summary:\n{summary}"
        );
    }
    // One round trip per poll; background sweeps add a little in a short run.
    let trips: f64 = summary
        .split("Redis round trips per status poll: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|n| n.parse().ok())
        .expect("round trips reported");
    assert!(
        (1.0..1.1).contains(&trips),
        "{trips} round trips per status poll"
    );
    let raw = std::fs::read_to_string(out.path().join("raw.txt")).unwrap();
    assert!(raw.contains("Requests/sec"), "wrk output missing:\n{raw}");
}
