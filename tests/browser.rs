//! The waiting page in headless Chromium, driven by Playwright
//! (`tests/browser/waiting_page.mjs`; `./scripts/setup` installs both).

use std::process::Command;

use crate::common::{Store, TestProxy, TestUpstream, waiting_room_config};

#[tokio::test]
async fn waiting_page_lets_visitors_in_by_itself() {
    browse(
        "capacity = 1\npoll_interval = \"500ms\"\nclaim_window = \"3s\"\nheartbeat_timeout = \"3s\"",
        "tests/browser/waiting_page.mjs",
    )
    .await;
}

#[tokio::test]
async fn the_waiting_page_solves_the_proof_of_work() {
    browse(
        "capacity = 1\npoll_interval = \"500ms\"\nclaim_window = \"3s\"\nchallenge = \"pow\"\nchallenge_difficulty = 14",
        "tests/browser/proof_of_work.mjs",
    )
    .await;
}

/// Polls only every 10 s: the page goes on within seconds because its event
/// stream tells it its turn.
#[tokio::test]
async fn the_waiting_page_hears_its_turn_through_the_event_stream() {
    browse(
        "capacity = 1\npoll_interval = \"10s\"\nclaim_window = \"20s\"\nheartbeat_timeout = \"40s\"\nrejoin_grace = \"60s\"\nconfirm_window = \"30s\"",
        "tests/browser/event_stream.mjs",
    )
    .await;
}

/// On a phone and a desktop, in two languages and both colour schemes: no
/// sideways scrolling, a card set off from the page, no axe-core violation.
/// The screenshots are kept in `target/browser/`.
#[tokio::test]
async fn the_waiting_page_fits_phones_and_passes_axe_in_two_languages() {
    browse_with(
        "capacity = 1\npoll_interval = \"5s\"",
        "tests/browser/layout.mjs",
        &["target/browser"],
    )
    .await;
}

/// The app's own page waits inside itself with `/__anteroom/client.js`,
/// against `anteroom demo` (the demo shows it).
#[tokio::test]
async fn an_app_page_waits_inside_itself_with_the_client_script() {
    let demo = crate::common::demo::Demo::start().await;
    run("tests/browser/in_app.mjs", demo.base(), Vec::new()).await;
}

/// Runs a Playwright script against a room "web" with these keys.
async fn browse(room: &str, script: &'static str) {
    browse_with(room, script, &[]).await;
}

/// The same, with more arguments for the script.
async fn browse_with(room: &str, script: &'static str, args: &[&'static str]) {
    let upstream = TestUpstream::start().await;
    let proxy = TestProxy::start(&waiting_room_config(&upstream, Store::Memory, room, "")).await;
    run(script, format!("http://{}", proxy.addr), args.to_vec()).await;
}

/// Runs a Playwright script against `base`, one browser at a time: on two
/// cores, Chromiums started together starve each other past the scripts'
/// own timeouts.
async fn run(script: &'static str, base: String, args: Vec<&'static str>) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(base)
            .args(args)
            .output()
            .expect("node is needed: run ./scripts/setup")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "browser test failed (./scripts/setup installs chromium and playwright-core):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
