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
