//! Reloading the config while running, on the real binary: SIGHUP and
//! `POST /admin/reload` put a new file in force for new requests while the
//! line, the sessions and the passes already handed out stay; a broken file
//! changes nothing and every problem is logged.

use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::StatusCode;

use crate::common::metric;
use crate::common::process::Process;
use crate::common::{
    Store, TestUpstream, client, eventually, get_json, get_text, keys, waiting_room_config,
};

/// The generation of the config in force.
async fn generation(p: &Process) -> u64 {
    get_json(p.admin_url("/admin/config")).await["generation"]
        .as_u64()
        .unwrap()
}

/// Sends SIGHUP and waits for the reload to be done (`generation` reached,
/// or the failure counted).
async fn hangup(p: &Process) -> serde_json::Value {
    let before = get_json(p.admin_url("/admin/config")).await;
    let at = before["lastReload"]["at"].as_u64();
    let failed = before["lastReload"]["result"] == "failed";
    p.signal(Signal::SIGHUP);
    eventually(Duration::from_secs(10), || async {
        let now = get_json(p.admin_url("/admin/config")).await;
        let last = &now["lastReload"];
        // The attempt's own fields: the new config is in force a moment
        // before its attempt is recorded.
        let changed = !last.is_null()
            && (last["at"].as_u64() != at
                || last["generation"] != before["lastReload"]["generation"]
                || (last["result"] == "failed") != failed);
        changed.then_some(now)
    })
    .await
}

#[tokio::test]
async fn sighup_changes_capacity_routes_and_keys_while_the_line_keeps_its_order() {
    let upstream = TestUpstream::start().await;
    let old_key = &keys().private;
    let dir = tempfile::tempdir().unwrap();
    let (new_key, _, new_kid) = anteroom::token::keygen(dir.path(), 2048, true).unwrap();
    let first = waiting_room_config(&upstream, Store::Memory, "capacity = 1", "");
    let p = Process::start("1s", &first).await;

    let mut admitted = p.visitor();
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    let mut second = p.visitor();
    let mut third = p.visitor();
    assert_eq!(second.get("/x").await.1["position"], 1);
    assert_eq!(third.get("/x").await.1["position"], 2);
    let unguarded = client().get(p.url("/extra/y")).send().await.unwrap();
    assert_eq!(
        unguarded.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no route of its own yet: the room guards it"
    );

    // Capacity 2, a new route around the room, and a new signing key with
    // the old one still accepted.
    let second_config = reorder_catch_all_last(&waiting_room_config(
        &upstream,
        Store::Memory,
        "capacity = 2",
        "[[route]]\nname = \"extra\"\npath_prefix = \"/extra/\"\nupstream = \"app\"\n",
    ))
    .replace(
        &format!("signing_key = \"{}\"", old_key.display()),
        &format!(
            "signing_key = \"{}\"\nverify_keys = [\"{}\"]",
            new_key.display(),
            old_key.display()
        ),
    );
    p.rewrite(&second_config);
    let config = hangup(&p).await;
    assert_eq!(config["lastReload"]["result"], "ok", "{config}");
    assert_eq!(config["generation"], 2);
    assert_eq!(config["rooms"][0]["capacity"], 2);

    // The pass signed with the old key still lets its holder in.
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    // The head of the line takes the new place, the next one moves up.
    second.poll_until(|s| s["state"] == "admitted").await;
    assert_eq!(third.poll().await["position"], 1);
    assert_eq!(second.get("/x").await.0, StatusCode::OK);
    // New passes are signed with the new key; the JWKS has both.
    let jwks = get_json(p.url("/.well-known/jwks.json")).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(kids.contains(&new_kid.as_str()), "{jwks}");
    assert_eq!(kids.len(), 2, "{jwks}");
    // The new route is in force.
    let extra = client().get(p.url("/extra/y")).send().await.unwrap();
    assert_eq!(extra.status(), StatusCode::OK);

    let metrics = get_text(p.admin_url("/metrics")).await;
    assert_eq!(
        metric("anteroom_config_reloads_total")
            .label("result", "ok")
            .value(&metrics),
        Some(1.0)
    );
    assert_eq!(
        metric("anteroom_config_generation").value(&metrics),
        Some(2.0)
    );
    eventually(Duration::from_secs(5), || async {
        p.log().contains("config reloaded").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_broken_file_keeps_the_running_config_and_every_problem_is_logged() {
    let upstream = TestUpstream::start().await;
    let config = waiting_room_config(&upstream, Store::Memory, "capacity = 1", "");
    let p = Process::start("1s", &config).await;
    let mut admitted = p.visitor();
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    let mut queued = p.visitor();
    assert_eq!(queued.get("/x").await.1["position"], 1);

    // Two problems at once: both are reported.
    let broken = config
        .replace("capacity = 1", "capacity = 0")
        .replace("path_prefix = \"/\"", "path_prefix = \"no-slash\"");
    p.rewrite(&broken);
    let after = hangup(&p).await;
    assert_eq!(after["lastReload"]["result"], "failed", "{after}");
    assert_eq!(after["generation"], 1);
    let problems = after["lastReload"]["problems"].as_array().unwrap();
    assert!(problems.len() >= 2, "{after}");
    // Lines are written by a background thread: wait for them.
    let log = eventually(Duration::from_secs(5), || async {
        let log = p.log();
        (log.contains("room[0].capacity") && log.contains("route[0].path_prefix")).then_some(log)
    })
    .await;
    assert!(log.contains("config reload refused"), "{log}");
    assert_eq!(generation(&p).await, 1);

    // Still serving, as before.
    assert_eq!(admitted.get("/x").await.0, StatusCode::OK);
    assert_eq!(queued.poll().await["position"], 1);

    // Not TOML at all: refused over the admin API too, with 422.
    p.rewrite("[[room]\nname = ");
    let resp = client()
        .post(p.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["result"], "failed");

    // Fixed: the reload goes through.
    p.rewrite(&config.replace("capacity = 1", "capacity = 3"));
    let resp = client()
        .post(p.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(generation(&p).await, 2);
    let metrics = get_text(p.admin_url("/metrics")).await;
    assert_eq!(
        metric("anteroom_config_reloads_total")
            .label("result", "failed")
            .value(&metrics),
        Some(2.0)
    );
    assert_eq!(
        metric("anteroom_config_reloads_total")
            .label("result", "ok")
            .value(&metrics),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_removed_room_forgets_its_line_and_an_admin_change_survives_an_unrelated_reload() {
    let upstream = TestUpstream::start().await;
    let config = format!(
        "{}\n[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = 1\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"app\"\nroom = \"llm\"\n",
        waiting_room_config(&upstream, Store::Memory, "capacity = 1", "")
    );
    // The catch-all route must come last.
    let config = reorder_catch_all_last(&config);
    let p = Process::start("1s", &config).await;
    let patched = client()
        .patch(p.admin_url("/admin/rooms/web"))
        .json(&serde_json::json!({"capacity": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);

    // Only the llm room changes: web keeps the capacity the admin set.
    p.rewrite(&config.replace(
        "mode = \"requests\"\ncapacity = 1",
        "mode = \"requests\"\ncapacity = 4",
    ));
    assert_eq!(hangup(&p).await["lastReload"]["result"], "ok");
    let web = get_json(p.admin_url("/admin/rooms/web")).await;
    assert_eq!(web["capacity"], 5, "{web}");
    let llm = get_json(p.admin_url("/admin/rooms/llm")).await;
    assert_eq!(llm["capacity"], 4, "{llm}");

    // The llm room and its route go: /api/ falls to the catch-all and its
    // room; the llm room is gone from the admin API and the metrics.
    let without = waiting_room_config(&upstream, Store::Memory, "capacity = 1", "");
    p.rewrite(&without);
    assert_eq!(hangup(&p).await["lastReload"]["result"], "ok");
    let gone = client()
        .get(p.admin_url("/admin/rooms/llm"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let metrics = get_text(p.admin_url("/metrics")).await;
    assert!(
        metric("anteroom_room_capacity")
            .label("mode", "requests")
            .label("room", "llm")
            .value(&metrics)
            .is_none()
    );
    // web's room table never changed: the admin's capacity is still in force.
    let web = get_json(p.admin_url("/admin/rooms/web")).await;
    assert_eq!(web["capacity"], 5, "{web}");
}

/// Moves the `path_prefix = "/"` route of `waiting_room_config` to the end.
fn reorder_catch_all_last(config: &str) -> String {
    let catch_all = "[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\nroom = \"web\"\n";
    assert!(config.contains(catch_all));
    format!("{}\n{catch_all}", config.replacen(catch_all, "", 1))
}

/// Whether a TLS handshake with the listener succeeds when only `root` is trusted.
async fn handshake_trusting(port: u16, root: &rcgen::Certificate) -> bool {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn a_reload_serves_new_certificates_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |c: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    };
    let first = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let second = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    write(&first);
    let upstream = TestUpstream::start().await;
    let tls_port = crate::common::free_port();
    let rest = format!(
        "[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nupstream = \"app\"\n",
        cert.display(),
        key.display(),
        upstream.addr
    );
    let p = Process::start("1s", &rest).await;
    assert!(handshake_trusting(tls_port, &first.cert).await);
    assert!(!handshake_trusting(tls_port, &second.cert).await);

    // A broken key file: refused, the first certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    assert_eq!(hangup(&p).await["lastReload"]["result"], "failed");
    assert!(handshake_trusting(tls_port, &first.cert).await);

    write(&second);
    let reloaded = hangup(&p).await;
    assert_eq!(
        reloaded["lastReload"]["result"],
        "ok",
        "{reloaded}\n{}",
        p.log()
    );
    assert!(handshake_trusting(tls_port, &second.cert).await);
    assert!(!handshake_trusting(tls_port, &first.cert).await);
}

/// Waits for the access line of `path`.
async fn logged(p: &Process, path: &str) {
    let needle = format!("\"path\":\"{path}\"");
    eventually(Duration::from_secs(5), || async {
        p.log().contains(&needle).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reload_changes_the_log_level() {
    let upstream = TestUpstream::start().await;
    let rest = format!(
        "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[route]]\nupstream = \"app\"\n",
        upstream.addr
    );
    let p = Process::start("1s", &rest).await;
    let get = |path: &'static str| {
        let url = p.url(path);
        async move { client().get(url).send().await.unwrap().status() }
    };
    assert_eq!(get("/first").await, StatusCode::OK);
    logged(&p, "/first").await;
    // `[log]` is in the head the harness writes: edit the whole file.
    let text = std::fs::read_to_string(p.dir().join("anteroom.toml")).unwrap();
    p.rewrite_all(&text.replace("level = \"info\"", "level = \"warn\""));
    assert_eq!(hangup(&p).await["lastReload"]["result"], "ok");
    assert_eq!(get("/second").await, StatusCode::OK);
    p.rewrite_all(&text);
    assert_eq!(hangup(&p).await["lastReload"]["result"], "ok");
    assert_eq!(get("/third").await, StatusCode::OK);
    // Lines are written in order: once /third is there, /second would be too.
    logged(&p, "/third").await;
    let log = p.log();
    assert!(!log.contains("\"path\":\"/second\""), "{log}");
}

#[tokio::test]
async fn a_request_in_flight_finishes_and_keeps_its_slot_across_a_reload() {
    let upstream = TestUpstream::start().await;
    let config = |capacity: u32| {
        format!(
            "[[upstream]]\nname = \"app\"\naddress = \"{}\"\n[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = {capacity}\nmax_wait = \"0s\"\n[[route]]\nupstream = \"app\"\nroom = \"llm\"\n",
            upstream.addr
        )
    };
    let p = Process::start("1s", &config(1)).await;
    let http = client();
    let slow = tokio::spawn(http.get(p.url("/slow?ms=1500")).send());
    let seen = upstream.seen.clone();
    eventually(Duration::from_secs(5), || async {
        (seen.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    p.rewrite(&format!("{}\n# reloaded\n", config(1)));
    assert_eq!(hangup(&p).await["lastReload"]["result"], "ok");
    // The slow request still holds the room's only slot.
    let room = get_json(p.admin_url("/admin/rooms/llm")).await;
    assert_eq!(room["inUse"], 1, "{room}");
    let refused = http.get(p.url("/x")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    // It finishes normally, and its slot goes back to the new config's room.
    let done = slow.await.unwrap().unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.text().await.unwrap(), "slow done");
    assert_eq!(
        http.get(p.url("/x")).send().await.unwrap().status(),
        StatusCode::OK
    );
}
