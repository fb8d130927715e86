//! anteroom on the Redis deployments operators run: a Redis Cluster (rooms
//! spread over its shards) and a primary with a replica watched by
//! Sentinel (a failover followed without losing a session or admitting past
//! capacity). Real servers on loopback, started by the test.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use crate::common::process::Process;
use crate::common::redis_deployments::{RedisCluster, Sentinels};
use crate::common::{TestUpstream, Visitor, client, eventually, get_json, keys};

/// Every instance's file: the tests' signing key, `store` keys, the upstream, `rest`.
fn config(store: &str, upstream: &TestUpstream, rest: &str) -> String {
    format!(
        "[tokens]\nsigning_key = \"{}\"\n\n[store]\nbackend = \"redis\"\n{store}\nsweep_interval = \"100ms\"\ntouch_interval = \"500ms\"\nlease = \"1s\"\ntimeout = \"300ms\"\n\n[[upstream]]\nname = \"app\"\naddress = \"{}\"\n\n{rest}\n",
        keys().private.display(),
        upstream.addr
    )
}

/// A sessions room `name` of `capacity` guarding `prefix` (its cookies too).
fn room(name: &str, capacity: u32, prefix: &str) -> String {
    format!(
        "[[room]]\nname = \"{name}\"\nmode = \"sessions\"\ncapacity = {capacity}\ncookie_path = \"{prefix}\"\nclaim_window = \"30s\"\npoll_interval = \"5s\"\n\n[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"app\"\nroom = \"{name}\"\n"
    )
}

async fn three(config: &str) -> Vec<Process> {
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Process::start("1s", config).await);
    }
    instances
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_the_shards_of_a_cluster() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3));
    // One room whose keys (hash tag `{prefix:room}`) live on each shard.
    let mut rooms: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let name = format!("r{i}");
        let owner = cluster.owner(&format!("{{shards:{name}}}"));
        if rooms.iter().all(|(_, o)| *o != owner) {
            rooms.push((name, owner));
        }
        if rooms.len() == 3 {
            break;
        }
    }
    let upstream = TestUpstream::start().await;
    let nodes = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let rest: String = rooms
        .iter()
        .map(|(name, _)| room(name, 2, &format!("/{name}/")))
        .collect();
    let instances = three(&config(
        &format!("cluster_nodes = [{nodes}]\nkey_prefix = \"shards\""),
        &upstream,
        &rest,
    ))
    .await;
    for (name, owner) in &rooms {
        let path = format!("/{name}/echo");
        // Two in, four in line in arrival order, through every instance.
        for i in 0..2 {
            let (status, _) = instances[i % 3].visitor().get(&path).await;
            assert_eq!(status, 200, "room {name}");
        }
        let mut waiting = Vec::new();
        for i in 0..4 {
            let mut v = instances[(i + 2) % 3].visitor();
            let (status, body) = v.get(&path).await;
            assert_eq!(status, 503, "room {name}");
            assert_eq!(body["position"], i + 1, "room {name}");
            waiting.push(v);
        }
        for instance in &instances {
            let c = get_json(instance.url(&format!("/__anteroom/capacity?room={name}"))).await;
            assert_eq!(c["inUse"], 2, "room {name}");
        }
        // The room's keys are on the shard its hash tag names; the others send there.
        for node in &cluster.nodes {
            let exists: redis::RedisResult<u32> = redis::cmd("EXISTS")
                .arg(format!("{{shards:{name}}}:s"))
                .query(&mut node.connection());
            if node.port == *owner {
                assert_eq!(exists.unwrap(), 1, "room {name}");
            } else {
                let moved = exists.unwrap_err();
                assert_eq!(moved.code(), Some("MOVED"), "room {name}: {moved}");
                assert!(moved.to_string().ends_with(&format!(":{owner}")), "{moved}");
            }
        }
    }
    let per_node = cluster.keys_per_node();
    assert!(per_node.values().all(|&keys| keys > 0), "{per_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_no_session_and_never_over_admits() {
    let mut set = tokio::task::block_in_place(Sentinels::start);
    let upstream = TestUpstream::start().await;
    let config = config(
        &format!("{}key_prefix = \"failover\"", set.store_keys()),
        &upstream,
        &room("web", 3, "/"),
    );
    let instances = Arc::new(three(&config).await);
    let mut inside = Vec::new();
    for instance in instances.iter() {
        let mut v = instance.visitor();
        assert_eq!(v.get("/echo").await.0, 200);
        inside.push(v);
    }
    let mut waiting = Vec::new();
    for i in 0..6 {
        let mut v = instances[i % 3].visitor();
        let (status, body) = v.get("/echo").await;
        assert_eq!(status, 503);
        assert_eq!(body["position"], i + 1);
        waiting.push(v);
    }

    // Through the failover: the pass holders go on through every instance,
    // and every answer about the room is watched for more than 3 in use.
    let stop = Arc::new(AtomicBool::new(false));
    let (answers, refused, most_in_use) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let passes: Vec<String> = inside.iter().map(|v| v.pass.clone().unwrap()).collect();
    let holders = tokio::spawn({
        let (instances, stop, answers, refused) = (
            instances.clone(),
            stop.clone(),
            answers.clone(),
            refused.clone(),
        );
        async move {
            let mut i = 0;
            while !stop.load(SeqCst) {
                let mut v = Visitor::new(instances[i % 3].base());
                v.pass = Some(passes[i % passes.len()].clone());
                let (status, _) = v.get("/echo").await;
                answers.fetch_add(1, SeqCst);
                if status != 200 {
                    refused.fetch_add(1, SeqCst);
                }
                i += 1;
                // Steady, not flat out: the other tests share the cores.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let watcher = tokio::spawn({
        let (instances, stop, most) = (instances.clone(), stop.clone(), most_in_use.clone());
        async move {
            while !stop.load(SeqCst) {
                for instance in instances.iter() {
                    let c = get_json(instance.url("/__anteroom/capacity?room=web")).await;
                    if let Some(n) = c["inUse"].as_u64() {
                        most.fetch_max(n, SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let asked = |at_least: u64| {
        let answers = answers.clone();
        eventually(Duration::from_secs(10), move || {
            let answers = answers.clone();
            async move { (answers.load(SeqCst) >= at_least).then_some(()) }
        })
    };
    asked(10).await;
    let before = answers.load(SeqCst);
    tokio::task::block_in_place(|| {
        set.replicated();
        set.fail_over();
    });
    // Every instance reaches the new primary by itself.
    for instance in instances.iter() {
        eventually(Duration::from_secs(20), || async {
            let ready = get_json(instance.admin_url("/readyz")).await;
            (ready["store"]["up"] == true).then_some(())
        })
        .await;
    }
    // And on for a while on the new primary.
    asked(answers.load(SeqCst) + 10).await;
    stop.store(true, SeqCst);
    holders.await.unwrap();
    watcher.await.unwrap();
    assert!(
        answers.load(SeqCst) > before + 10,
        "the pass holders kept asking during the failover"
    );
    assert_eq!(
        refused.load(SeqCst),
        0,
        "a pass holder was refused during the failover"
    );
    assert!(most_in_use.load(SeqCst) <= 3, "more than capacity in use");

    for instance in instances.iter() {
        let c = get_json(instance.url("/__anteroom/capacity?room=web")).await;
        assert_eq!(c["inUse"], 3, "every session kept, none added");
        assert_eq!(c["waiting"], 6);
    }
    // The line kept its order; a freed slot goes to its head.
    for (i, v) in waiting.iter_mut().enumerate() {
        assert_eq!(v.poll().await["position"], i + 1);
    }
    inside.remove(0).leave().await;
    let mut states = Vec::new();
    for v in waiting.iter_mut() {
        states.push(v.poll().await["state"].as_str().unwrap().to_owned());
    }
    assert_eq!(states[0], "admitted", "{states:?}");
    assert!(states[1..].iter().all(|s| s == "queued"), "{states:?}");
    let (status, _) = client()
        .get(instances[2].url("/echo"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, 503, "a newcomer still waits");
}
