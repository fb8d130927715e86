//! `anteroom demo` as a newcomer starts it (the real binary): it says where
//! to go, its room of 2 queues the third visitor, and lets them in by itself
//! when one of the first two leaves.

use crate::common::demo::Demo;
use crate::common::{Visitor, client};

#[tokio::test]
async fn demo_queues_the_third_visitor_and_lets_them_in() {
    let demo = Demo::start().await;
    let (public, upstream, banner) = (demo.public, demo.upstream, &demo.banner);
    assert!(
        banner.contains(&format!("http://127.0.0.1:{public}/")),
        "{banner}"
    );
    assert!(banner.contains("ephemeral key"), "{banner}");

    let base = format!("http://127.0.0.1:{public}");
    let mut visitors: Vec<Visitor> = (0..3).map(|_| Visitor::new(base.clone())).collect();
    for v in &mut visitors[..2] {
        let (status, _) = v.get("/?utm_source=demo").await;
        assert_eq!(status, 200);
        assert!(v.admitted());
    }
    let (status, body) = visitors[2].get("/").await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "QUEUE_REQUIRED");
    assert_eq!(body["position"], 1);

    visitors[0].leave().await;
    let status = visitors[2].poll_until(|s| s["state"] == "admitted").await;
    assert_eq!(status["room"], "web");
    let (status, _) = visitors[2].get("/").await;
    assert_eq!(status, 200);
    // Still two in the room: a newcomer waits.
    let (status, _) = Visitor::new(base.clone()).get("/").await;
    assert_eq!(status, 503);

    // The fake LLM on its own refuses what is over its 2 in flight; behind
    // anteroom the same burst waits its turn and is answered, streamed.
    let burst = |url: String| {
        let http = client();
        futures_util::future::join_all((0..4).map(move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let resp = http.get(url).send().await.unwrap();
                (
                    resp.status().as_u16(),
                    resp.text().await.unwrap_or_default(),
                )
            }
        }))
    };
    let direct = burst(format!("http://127.0.0.1:{upstream}/api/llm")).await;
    assert!(
        direct
            .iter()
            .any(|(status, body)| *status == 429 && body.contains("RESOURCE_EXHAUSTED")),
        "{direct:?}"
    );
    let behind = burst(format!("{base}/api/llm")).await;
    for (status, body) in &behind {
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains("\"totalTokenCount\":100"), "{body}");
    }
}

/// README's "Try it" terminal commands, exactly as written there, against a
/// running demo (only its ports are this test's): the third arrival gets a
/// ticket, `$TICKET` is set from it, its status tells its place, and the
/// room is paused.
#[tokio::test]
async fn the_readme_try_it_commands_run_as_written() {
    let demo = Demo::start().await;
    let readme = std::fs::read_to_string("README.md").unwrap();
    let section = &readme[readme.find("## Try it").unwrap()..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let start = section.find("From a terminal").unwrap();
    let block = &section[start..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let script: String = block
        .lines()
        .map(|l| l.trim_start())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", demo.public))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", demo.admin))
        .replace(
            "/tmp/third.json",
            &dir.path().join("third.json").display().to_string(),
        );
    assert!(
        script.contains("$TICKET") && script.contains("TICKET="),
        "{script}"
    );
    let out = tokio::process::Command::new("sh")
        .args(["-euc", &script])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The answers follow one another without newlines: read them as a stream.
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    // tee prints the third arrival's answer; then its status; then the room.
    assert!(answers.len() >= 3, "{stdout}");
    assert_eq!(answers[0]["code"], "QUEUE_REQUIRED", "{stdout}");
    assert_eq!(answers[1]["state"], "queued", "{stdout}");
    assert_eq!(answers[1]["position"], 1, "{stdout}");
    assert_eq!(answers.last().unwrap()["state"], "paused", "{stdout}");
}
