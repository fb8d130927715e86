//! The deployment kit (deploy/): checked with the real tools, and held to
//! what a running anteroom exposes.

use std::collections::BTreeSet;
use std::process::Command;

use nix::sys::signal::Signal;

use crate::common::process::Process;
use crate::common::{TestUpstream, get_text, keys};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_deployment_kit_checks_out() {
    let out = Command::new("python3")
        .arg(root().join("scripts/check-deploy"))
        .args(["--anteroom", env!("CARGO_BIN_EXE_anteroom")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `anteroom_*` and `process_*` metric name in a file.
fn metric_names(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts = (rest.starts_with("anteroom_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(rest[..len].to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_ask_for_exists_from_the_start() {
    let upstream = TestUpstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "[tokens]\nsigning_key = \"{key}\"\n[store]\nbackend = \"memory\"\nstate_dir = \"{state}\"\n\
         [[upstream]]\nname = \"app\"\naddress = \"{up}\"\n\
         [[room]]\nname = \"web\"\nmode = \"sessions\"\ncapacity = 5\n\
         [[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = 2\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"app\"\nroom = \"llm\"\n\
         [[route]]\nname = \"site\"\npath_prefix = \"/\"\nupstream = \"app\"\nroom = \"web\"\n",
        key = keys().private.display(),
        state = state.path().display(),
        up = upstream.addr,
    );
    let p = Process::start("1s", &config).await;
    // Not one request yet: everything a dashboard draws must be there.
    let exposed = get_text(p.admin_url("/metrics")).await;
    let samples: BTreeSet<&str> = exposed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut asked = metric_names("deploy/grafana/anteroom.json");
    asked.extend(metric_names("deploy/prometheus/alerts.yml"));
    assert!(asked.len() > 20, "{asked:?}");
    let missing: Vec<&String> = asked
        .iter()
        .filter(|name| {
            !samples.contains(name.as_str())
                && !["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| samples.contains(format!("{name}{s}").as_str()))
        })
        .collect();
    assert!(missing.is_empty(), "not exposed: {missing:?}\n{exposed}");
    // Both room modes count requests, and no series is a placeholder.
    for line in [
        r#"anteroom_room_admitted_total{room="web"} 0"#,
        r#"anteroom_room_rejected_total{reason="queue_full",room="web"} 0"#,
        r#"anteroom_requests_total{route="site",status="200"} 0"#,
        r#"anteroom_requests_total{route="unrouted",status="404"} 0"#,
        r#"anteroom_visitors_admitted_total{how="queue",room="web"} 0"#,
        r#"anteroom_store_errors_total{op="arrive"} 0"#,
    ] {
        assert!(exposed.contains(line), "{line} missing:\n{exposed}");
    }
    assert!(!exposed.contains("route=\"-\""), "{exposed}");

    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), exposed.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn anteroom_health_tells_whether_the_admin_listener_answers() {
    let upstream = TestUpstream::start().await;
    let rest = format!(
        "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nupstream = \"app\"\n",
        upstream.addr
    );
    let mut p = Process::start("1s", &rest).await;
    let config = p.dir().join("anteroom.toml");
    let health = || {
        Command::new(env!("CARGO_BIN_EXE_anteroom"))
            .args(["health", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let up = health();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    p.signal(Signal::SIGTERM);
    assert!(p.wait_exit().await.success());
    let down = health();
    assert!(!down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("admin listener"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}
