//! Every example config loads; every bad config is refused with its key named.

use std::path::Path;
use std::process::Command;

use anteroom::assets::Assets;
use anteroom::config::{Config, ConfigError};

#[test]
fn every_example_config_loads() {
    // The examples sign with certs/anteroom.key.pem, which is never committed:
    // create it as an operator would, unless it exists.
    if !Path::new("certs/anteroom.key.pem").exists() {
        anteroom::token::keygen(Path::new("certs"), 2048, false).unwrap();
    }
    let mut seen = 0;
    for entry in std::fs::read_dir("conf").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 1, "no example configs found under conf/");
}

const BASE: &str = r#"
[[upstream]]
name = "app"
address = "127.0.0.1:3000"

[[route]]
path_prefix = "/"
upstream = "app"
"#;

/// What `anteroom check` says of a config: its values, then the files it names.
fn problems(text: &str) -> String {
    let checked = Config::from_toml(text, Path::new("bad.toml")).and_then(|c| Assets::load(&c));
    match checked {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("bad.toml"),
                "message does not name the file: {msg}"
            );
            msg
        }
    }
}

/// Each case: a config and the key its message must name.
#[test]
fn bad_configs_name_their_key() {
    let cases: &[(&str, String)] = &[
        ("route[0].upstream", r#"
[[upstream]]
name = "app"
address = "127.0.0.1:3000"
[[route]]
upstream = "ap"
"#.into()),
        ("room[0].capacity", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 0\n")),
        ("room[0].max_wait", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\nmax_wait = \"2 parsecs\"\n")),
        ("upstream[1].name", format!("{BASE}[[upstream]]\nname = \"app\"\naddress = \"127.0.0.1:3001\"\n")),
        ("room[1].name", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\n[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 2\n")),
        ("admin.listen", format!("[server]\nlisten = [\"127.0.0.1:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n{BASE}")),
        ("server.listen[1]", format!("[server]\nlisten = [\"0.0.0.0:8080\", \"127.0.0.1:8080\"]\n{BASE}")),
        ("room[0].capcity: unknown key", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapcity = 1\ncapacity = 1\n")),
        ("room[0].mode", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"request\"\ncapacity = 1\n")),
        ("route[0].path_prefix", BASE.replace("path_prefix = \"/\"", "path_prefix = \"api\"")),
        ("route[0].path_prefix", BASE.replace("path_prefix = \"/\"", "path_prefix = \"/__anteroom/x\"")),
        ("route", "[[upstream]]\nname = \"app\"\naddress = \"127.0.0.1:3000\"\n".into()),
        ("route[0].room", BASE.replace("upstream = \"app\"\n", "upstream = \"app\"\nroom = \"nope\"\n")),
        ("server.listen[0]", format!("[server]\nlisten = [\"localhost\"]\n{BASE}")),
        ("admin.token", format!("[admin]\ntoken = \"short\"\n{BASE}")),
        ("route[1]", format!("{BASE}[[route]]\npath_prefix = \"/api/\"\nupstream = \"app\"\n")),
        ("upstream[0].sni", BASE.replace("address = \"127.0.0.1:3000\"", "address = \"127.0.0.1:3000\"\nsni = \"x\"")),
        ("log.format", format!("[log]\nformat = \"yaml\"\n{BASE}")),
        ("events.sink[0].kind", format!("{BASE}[events]\ndead_letter_dir = \"/tmp\"\n[[events.sink]]\nkind = \"kafka\"\n")),
        ("events.sink[0].path", format!("{BASE}[events]\ndead_letter_dir = \"/tmp\"\n[[events.sink]]\nkind = \"file\"\n")),
        ("events.sink[0].url", format!("{BASE}[events]\ndead_letter_dir = \"/tmp\"\n[[events.sink]]\nkind = \"redis\"\nurl = \"http://x\"\n")),
        ("events.sink[0].subject", format!("{BASE}[events]\ndead_letter_dir = \"/tmp\"\n[[events.sink]]\nkind = \"file\"\npath = \"/tmp/e.jsonl\"\nsubject = \"x\"\n")),
        ("events.sink[1].name", format!("{BASE}[events]\ndead_letter_dir = \"/tmp\"\n[[events.sink]]\nkind = \"file\"\nname = \"a\"\npath = \"/tmp/e.jsonl\"\n[[events.sink]]\nkind = \"file\"\nname = \"a\"\npath = \"/tmp/f.jsonl\"\n")),
        ("events.dead_letter_dir", format!("{BASE}[[events.sink]]\nkind = \"file\"\npath = \"/tmp/e.jsonl\"\n")),
        ("events.sink[0].url", format!("{BASE}[events]\ndead_letter_dir = \"/tmp\"\n[[events.sink]]\nkind = \"nats\"\nurl = \"nats://u:p@127.0.0.1:4222\"\n")),
        ("events.sink[0].secret_file", format!("{BASE}[events]\ndead_letter_dir = \"/tmp\"\n[[events.sink]]\nkind = \"webhook\"\nurl = \"https://h.example/\"\n")),
        ("events.flush_interval", format!("{BASE}[events]\ndead_letter_dir = \"/tmp\"\nflush_interval = \"0s\"\n[[events.sink]]\nkind = \"file\"\npath = \"/tmp/e.jsonl\"\n")),
        ("events.on_full", format!("{BASE}[events]\non_full = \"block\"\n")),
        ("events.buffer", format!("{BASE}[events]\nbuffer = 0\n")),
        ("log.level", format!("[log]\nlevel = \"loud[\"\n{BASE}")),
        ("log.level", format!("[log]\nlevel = \"info,{{f=a.*b.*c.*d}}\"\n{BASE}")),
        ("store.state_dir", format!("[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nstate_dir = \"state\"\n{BASE}")),
        ("store.state_dir", format!("[store]\nstate_dir = \"Cargo.toml\"\n{BASE}")),
        ("store.snapshot_interval", format!("[store]\nsnapshot_interval = \"1s\"\n{BASE}")),
        ("store.snapshot_interval", format!("[store]\nstate_dir = \"state\"\nsnapshot_interval = \"0s\"\n{BASE}")),
        ("server.upgrade_sock", format!("[server]\nupgrade_sock = \"\"\n{BASE}")),
        ("room[0].rate", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\nrate = \"60 per minute\"\n")),
        ("room[0].rate", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nrate = \"60/m\"\n")),
        ("room[0].tokens_per_minute", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\ntokens_per_minute = 1000\n")),
        ("room[0].token_estimate", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\ntokens_per_minute = 1000\ntoken_estimate = 5000\n")),
        ("room[0].token_estimate", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\ntoken_estimate = 5\n")),
        ("server.threads", format!("[server]\nthreads = -1\n{BASE}")),
        ("upstream[0].address", BASE.replace("127.0.0.1:3000", "127.0.0.1")),
        ("upstream[0].read_timeout", BASE.replace("address = \"127.0.0.1:3000\"", "address = \"127.0.0.1:3000\"\nread_timeout = \"0s\"")),
        ("room[0].max_wait", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nmax_wait = \"1s\"\n")),
        ("capacity", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = \"ten\"\n")),
        ("upstream", "[[route]]\npath_prefix = \"/\"\n".into()),
        ("upstream[0].ca_file", BASE.replace("address = \"127.0.0.1:3000\"", "address = \"127.0.0.1:443\"\ntls = true\nsni = \"a\"\nca_file = \"/nonexistent/ca.pem\"")),
        ("room[0].name", format!("{BASE}[[room]]\nname = \"has space\"\nmode = \"requests\"\ncapacity = 1\n")),
        ("server.tls[0].cert", format!("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n{BASE}")),
        ("line", "this is = not [toml".into()),
        ("store.backend", format!("[store]\nbackend = \"etcd\"\n{BASE}")),
        ("store.url", format!("[store]\nbackend = \"redis\"\nurl = \"redis://user:secret@127.0.0.1:6379\"\n{BASE}")),
        ("store.url", format!("[store]\nbackend = \"redis\"\nurl = \"http://127.0.0.1:6379\"\n{BASE}")),
        ("store.url", format!("[store]\nurl = \"redis://127.0.0.1:6379\"\n{BASE}")),
        ("store.timeout", format!("[store]\nbackend = \"redis\"\ntimeout = \"0s\"\n{BASE}")),
        ("store.sentinels", format!("[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nsentinels = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"m\"\n{BASE}")),
        ("store.cluster_nodes", format!("[store]\nbackend = \"redis\"\nsentinels = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"m\"\ncluster_nodes = [\"redis://127.0.0.1:7000\"]\n{BASE}")),
        ("store.sentinel_master", format!("[store]\nbackend = \"redis\"\nsentinels = [\"redis://127.0.0.1:26379\"]\n{BASE}")),
        ("store.sentinel_master", format!("[store]\nbackend = \"redis\"\nsentinel_master = \"m\"\n{BASE}")),
        ("store.sentinel_password", format!("[store]\nbackend = \"redis\"\ncluster_nodes = [\"redis://127.0.0.1:7000\"]\nsentinel_password = \"pw\"\n{BASE}")),
        ("store.sentinels", format!("[store]\nbackend = \"redis\"\nsentinels = []\nsentinel_master = \"m\"\n{BASE}")),
        ("store.sentinels[1]", format!("[store]\nbackend = \"redis\"\nsentinels = [\"redis://127.0.0.1:26379\", \"http://127.0.0.1:26380\"]\nsentinel_master = \"m\"\n{BASE}")),
        ("store.cluster_nodes[0]", format!("[store]\nbackend = \"redis\"\ncluster_nodes = [\"redis://u:p@127.0.0.1:7000\"]\n{BASE}")),
        ("store.cluster_nodes[0]", format!("[store]\nbackend = \"redis\"\ncluster_nodes = [\"redis://127.0.0.1:7000/3\"]\n{BASE}")),
        ("store.cluster_nodes", format!("[store]\nbackend = \"redis\"\ncluster_nodes = [\"redis://127.0.0.1:7000\", \"rediss://127.0.0.1:7001\"]\n{BASE}")),
        ("store.cluster_nodes", format!("[store]\ncluster_nodes = [\"redis://127.0.0.1:7000\"]\n{BASE}")),
        ("store.ca_file", format!("[store]\nbackend = \"redis\"\ncluster_nodes = [\"redis://127.0.0.1:7000\"]\nca_file = \"Cargo.toml\"\n{BASE}")),
        ("store.rebuild_grace", format!("[store]\nbackend = \"redis\"\ntouch_interval = \"10s\"\nrebuild_grace = \"5s\"\n{BASE}")),
        ("store.rebuild_grace", format!("[store]\nrebuild_grace = \"soon\"\n{BASE}")),
        ("room[0].on_store_error", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\non_store_error = \"maybe\"\n")),
        ("room[0].challenge", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nchallenge = \"captcha\"\n")),
        ("room[0].challenge_difficulty", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nchallenge = \"pow\"\nchallenge_difficulty = 40\n")),
        ("room[0].challenge_difficulty", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nchallenge_difficulty = 16\n")),
        ("room[0].bind", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nbind = \"ip\"\n")),
        ("room[0].limits.client_prefix_v4", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\n[room.limits]\nclient_prefix_v4 = 33\n")),
        ("room[0].limits.polls_per_minute", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\n[room.limits]\npolls_per_minute = -1\n")),
        ("room[0].limits", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\n[room.limits]\npolls_per_minute = 5\n")),
        ("room[0].fair_by", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\nfair_by = \"ip\"\n")),
        ("room[0].fair_by", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 1\nfair_by = \"header:bad header\"\n")),
        ("room[0].fair_by", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nfair_by = \"client\"\n")),
        ("room[0].adaptive", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nadaptive = true\n")),
        ("room[0].min_capacity", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 2\nadaptive = true\nmin_capacity = 3\n")),
        ("room[0].min_capacity", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 2\nmin_capacity = 1\n")),
        ("room[0].priority", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 2\n[room.priority]\ncidrs = [\"10.0.0.0/8\"]\n")),
        ("room[0].usage_path", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 2\ntokens_per_minute = 10\nusage_path = \"usage..total\"\n")),
        ("room[0].usage_path", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 2\nusage_path = \"usage.total_tokens\"\n")),
        ("route[0].retry_429", BASE.replace("upstream = \"app\"\n", "upstream = \"app\"\nretry_429 = true\n")),
        ("route[0].retry_429", "[[upstream]]\nname = \"app\"\naddress = \"127.0.0.1:3000\"\n[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\nroom = \"r\"\nretry_429 = true\n".into()),
        ("attribution.consent_values", format!("[attribution]\nconsent_values = [\"all\"]\n{BASE}")),
        ("attribution.consent_cookie", format!("[attribution]\nconsent_cookie = \"my cookie\"\n{BASE}")),
        ("server.redirect_https", format!("[server]\nredirect_https = true\n{BASE}")),
        ("server.tls[0].hsts", format!("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"Cargo.toml\"\nkey = \"Cargo.toml\"\nhsts = \"forever\"\n{BASE}")),
        ("server.tls[0].hsts_preload", format!("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"Cargo.toml\"\nkey = \"Cargo.toml\"\nhsts = \"365d\"\nhsts_preload = true\n{BASE}")),
        ("server.tls[0].hsts_preload", format!("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"Cargo.toml\"\nkey = \"Cargo.toml\"\nhsts = \"30d\"\nhsts_include_subdomains = true\nhsts_preload = true\n{BASE}")),
        ("server.tls[0].hsts_include_subdomains", format!("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"Cargo.toml\"\nkey = \"Cargo.toml\"\nhsts_include_subdomains = true\n{BASE}")),
        ("room[0].limits.arrivals_per_hour: unknown key", format!("{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\n[room.limits]\narrivals_per_hour = 5\n")),
    ];
    assert!(cases.len() >= 10);
    for (key, text) in cases {
        let msg = problems(text);
        assert!(
            msg.contains(key),
            "expected the message to name {key:?}, got:\n{msg}"
        );
    }
}

/// A sessions room for launch settings: `[tokens]`, and `extra` keys and
/// tables after the room's own.
fn launch_room(extra: &str) -> String {
    if !Path::new("certs/anteroom.key.pem").exists() {
        anteroom::token::keygen(Path::new("certs"), 2048, false).unwrap();
    }
    format!(
        r#"
[tokens]
signing_key = "certs/anteroom.key.pem"
{BASE}
[[room]]
name = "web"
mode = "sessions"
capacity = 500
{extra}
"#
    )
}

/// A file of code digests for the tests, written once.
fn codes_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("anteroom-codes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The launch of issue 28's example, exactly as written there (the codes
/// file made for the test): every value read as written.
#[test]
fn the_launch_loads_as_documented() {
    let digest = anteroom::codes::digest("VIP-1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let file = codes_file("vip.sha256", &format!("{digest}\n"));
    let text = launch_room(&format!(
        r#"invite_only = false                   # true: only code holders may join

[[room.event]]
name = "spring-drop"
prequeue_opens = "2027-03-01T09:45:00Z"
starts = "2027-03-01T10:00:00Z"
ends = "2027-03-01T12:00:00Z"         # optional; the room closes by itself
shuffle = true                        # the draw at `starts`
capacity = 800                        # optional overrides while the event runs
message = "Doors open at 10:00 CET."

[[room.codes]]
file = "{file}"             # one SHA-256 hex digest per line, single use
lane = "priority"                     # or "admit"
"#
    ));
    let config =
        Config::from_toml(&text, Path::new("launch.toml")).unwrap_or_else(|e| panic!("{e}"));
    let room = config.rooms[0].sessions().expect("a sessions room");
    let launch = &room.launches[0];
    assert_eq!(launch.name, "spring-drop");
    assert_eq!(
        launch.starts.duration_since(launch.prequeue_opens).unwrap(),
        std::time::Duration::from_secs(15 * 60)
    );
    assert_eq!(launch.capacity, Some(800));
    assert!(launch.shuffle);
    assert_eq!(room.codes[0].uses, 1);
    // Checked in full, but refused until this version runs launches: with
    // exactly these keys, nothing else.
    let refused = match Assets::load(&config) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("not refused: {:?}", other.err()),
    };
    let keys: Vec<&str> = refused.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["room[0].event", "room[0].codes"], "{refused:?}");
}

/// Bad launch settings, each refused with its key named.
#[test]
fn bad_launches_name_their_key() {
    let event = |name: &str, opens: &str, starts: &str, ends: &str| {
        format!(
            "[[room.event]]\nname = \"{name}\"\nprequeue_opens = \"{opens}\"\nstarts = \"{starts}\"\n{ends}\n"
        )
    };
    let a = event(
        "a",
        "2027-03-01T09:45:00Z",
        "2027-03-01T10:00:00Z",
        "ends = \"2027-03-01T12:00:00Z\"",
    );
    // An event whose pre-queue opens while `a` runs.
    let inside_a = event("b", "2027-03-01T11:30:00Z", "2027-03-01T11:45:00Z", "");
    let good_file = codes_file("good.sha256", &format!("{}\n", "ab".repeat(32)));
    let bad_file = codes_file("bad.sha256", &format!("{}\nVIP-1\n", "ab".repeat(32)));
    let cases = [
        (
            "room[0].event[0].starts",
            event("a", "2027-03-01T09:45:00Z", "tomorrow", ""),
        ),
        (
            "room[0].event[0].prequeue_opens",
            event("a", "2027-03-01T10:15:00Z", "2027-03-01T10:00:00Z", ""),
        ),
        (
            "room[0].event[0].ends",
            event(
                "a",
                "2027-03-01T09:45:00Z",
                "2027-03-01T10:00:00Z",
                "ends = \"2027-03-01T09:59:00Z\"",
            ),
        ),
        // Overlapping the one before (written after or before it in the file).
        ("room[0].event[1].prequeue_opens", format!("{a}{inside_a}")),
        ("room[0].event[0].prequeue_opens", format!("{inside_a}{a}")),
        // Open-ended: nothing may come after it.
        (
            "room[0].event[1].prequeue_opens",
            format!(
                "{}{}",
                event("a", "2027-03-01T09:45:00Z", "2027-03-01T10:00:00Z", ""),
                event("b", "2027-04-01T09:45:00Z", "2027-04-01T10:00:00Z", "")
            ),
        ),
        (
            "room[0].event[1].name",
            format!(
                "{a}{}",
                event("a", "2027-04-01T09:45:00Z", "2027-04-01T10:00:00Z", "")
            ),
        ),
        (
            "room[0].event[0].capacity",
            a.replace("[[room.event]]\n", "[[room.event]]\ncapacity = 0\n"),
        ),
        (
            "room[0].event[0].message",
            a.replace(
                "[[room.event]]\n",
                "[[room.event]]\nmessage = \"one\\ntwo\"\n",
            ),
        ),
        ("room[0].invite_only", "invite_only = true\n".to_owned()),
        (
            "room[0].codes[0].lane",
            format!("[[room.codes]]\nfile = \"{good_file}\"\nlane = \"vip\"\n"),
        ),
        (
            "room[0].codes[0].uses",
            format!("[[room.codes]]\nfile = \"{good_file}\"\nuses = 0\n"),
        ),
        (
            "room[0].codes[0].file",
            "[[room.codes]]\nfile = \"/nonexistent/codes\"\n".to_owned(),
        ),
        (
            "room[0].codes[0].file",
            format!("[[room.codes]]\nfile = \"{bad_file}\"\n"),
        ),
    ];
    for (key, extra) in cases {
        let msg = problems(&launch_room(&extra));
        assert!(
            msg.contains(key),
            "expected the message to name {key:?}, got:\n{msg}"
        );
    }
    // The bad line of a codes file is named by its number.
    let msg = problems(&launch_room(&format!(
        "[[room.codes]]\nfile = \"{bad_file}\"\n"
    )));
    assert!(msg.contains("line 2"), "{msg}");
    assert!(
        !msg.contains("VIP-1"),
        "a codes file's content is never repeated: {msg}"
    );
}

/// The LLM room of issue 13's example, exactly as written there.
#[test]
fn the_llm_room_loads_as_documented() {
    let text = r#"
[[upstream]]
name = "gemini"
address = "127.0.0.1:3000"

[[room]]
name = "gemini"
mode = "requests"
capacity = 10                 # in flight, as today
max_wait = "30s"
rate = "60/m"                 # requests per minute (also "/s", "/h")
tokens_per_minute = 100000    # budget of LLM tokens, from the responses' usage
token_estimate = 1000         # charged up front, corrected when the response ends
adaptive = true               # follow the upstream's 429/503 and retry hints
min_capacity = 1              # adaptive never goes below this
fair_by = "client"            # waiters served in turn per "client" (network), "session" (pass), "header:NAME", or "none"

[[route]]
path_prefix = "/api/gemini/"
upstream = "gemini"
room = "gemini"
retry_429 = true              # hold and retry an upstream 429 within max_wait (opt-in: the upstream did not process it)
"#;
    let config = Config::from_toml(text, Path::new("gemini.toml")).unwrap();
    let room = config.rooms[0].requests().expect("a requests room");
    assert_eq!(room.adaptive.map(|a| a.min), Some(1));
    assert_eq!(room.fair.by, anteroom::config::FairBy::Client);
    assert!(config.routes[0].retry_429);
}

/// The three ways to reach Redis, as `[store]` gives them.
#[test]
fn redis_deployments_load_as_given() {
    use anteroom::config::{Backend, Deployment};
    let load = |keys: &str| {
        let text = format!("[store]\nbackend = \"redis\"\n{keys}\n{BASE}");
        match Config::from_toml(&text, Path::new("store.toml"))
            .unwrap()
            .store
            .backend
        {
            Backend::Redis(r) => *r,
            Backend::Memory => panic!("not redis"),
        }
    };
    assert_eq!(
        load("").deployment,
        Deployment::Server("redis://127.0.0.1:6379/0".into())
    );
    let sentinel = load(
        "sentinels = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\nsentinel_master = \"primary\"\nsentinel_password = \"sentinel secret\"\nusername = \"anteroom\"\npassword = \"data secret\"",
    );
    let Deployment::Sentinel {
        sentinels,
        master,
        username,
        password,
    } = &sentinel.deployment
    else {
        panic!("{:?}", sentinel.deployment);
    };
    assert_eq!(sentinels.len(), 2);
    assert_eq!(master, "primary");
    assert_eq!(username, &None);
    assert_eq!(
        password.as_ref().map(|p| p.expose()),
        Some("sentinel secret")
    );
    assert_eq!(sentinel.username.as_deref(), Some("anteroom"));
    let described = sentinel.deployment.describe();
    assert!(!described.contains("secret"), "{described}");
    let cluster = load("cluster_nodes = [\"rediss://10.0.0.1:7000\"]");
    assert_eq!(
        cluster.deployment,
        Deployment::Cluster(vec!["rediss://10.0.0.1:7000".into()])
    );
    assert!(cluster.deployment.tls());
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[server]
threads = 0
grace_period = "soon"
[[upstream]]
name = "app"
address = "nowhere"
[[room]]
name = "r"
mode = "requests"
capacity = 0
[[route]]
upstream = "ghost"
room = "r"
"#;
    let err = Config::from_toml(text, Path::new("bad.toml")).unwrap_err();
    let ConfigError::Invalid { problems, .. } = err else {
        panic!("expected validation problems, got {err}");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "server.threads",
        "server.grace_period",
        "upstream[0].address",
        "room[0].capacity",
        "route[0].upstream",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
}

#[test]
fn check_command_exits_non_zero_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapacity = 0\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("room[0].capacity: must be at least 1, got 0"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args(["check", "--config", "conf/anteroom.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_anteroom"))
        .args(["check", "--config", "/nonexistent/anteroom.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/anteroom.toml: cannot read")
    );
}

#[test]
fn a_broken_page_template_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("waiting.html");
    std::fs::write(&template, "<p>{{positon}}</p>").unwrap();
    let key = crate::common::keys().private.display().to_string();
    let text = format!(
        "[tokens]\nsigning_key = \"{key}\"\n{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\npage_template = \"{}\"\n",
        template.display()
    );
    let msg = problems(&text);
    assert!(
        msg.contains("room[0].page_template") && msg.contains("positon"),
        "{msg}"
    );
}

#[test]
fn an_unknown_page_language_is_refused_with_its_key() {
    let key = crate::common::keys().private.display().to_string();
    let text = format!(
        "[tokens]\nsigning_key = \"{key}\"\n{BASE}[[room]]\nname = \"r\"\nmode = \"sessions\"\ncapacity = 1\nlanguage = \"xx\"\n"
    );
    let msg = problems(&text);
    assert!(
        msg.contains("room[0].language") && msg.contains("\"xx\" is not a page language"),
        "{msg}"
    );
}

/// An unknown key is one problem among the others, with its key: it used
/// to stop the parse and hide them (and a reload logged it with key "-").
#[test]
fn an_unknown_key_does_not_hide_the_other_problems() {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\nthreds = 2\n{BASE}[[room]]\nname = \"r\"\nmode = \"requests\"\ncapcity = 1\ncapacity = 0\n[room.limits]\npolls = 3\n[[events.sink]]\nkind = \"file\"\npaht = \"/tmp/e.jsonl\"\n"
    );
    let Err(anteroom::config::ConfigError::Invalid { problems, .. }) =
        Config::from_toml(&text, Path::new("bad.toml"))
    else {
        panic!("accepted, or refused without its problems");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "server.threds",
        "room[0].capcity",
        "room[0].limits.polls",
        "events.sink[0].paht",
        "room[0].capacity",
        "events.sink[0].path",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    // The keys it knows are read as usual: the unknown ones add to the list.
    assert!(!keys.contains(&"server.listen"), "{keys:?}");
}

/// docs/configuration.md's example of a bad file, run as written: its
/// `bad.toml` gives exactly the problems the page shows.
#[test]
fn the_documented_bad_file_gives_the_documented_problems() {
    let doc = std::fs::read_to_string("docs/configuration.md").unwrap();
    let block = |fence: &str| {
        let start = doc
            .find(fence)
            .unwrap_or_else(|| panic!("no {fence} block"))
            + fence.len();
        let end = start + doc[start..].find("\n```").unwrap();
        doc[start..end].trim_start_matches('\n').to_owned()
    };
    let file = block("`bad.toml`:\n\n```toml");
    let shown = block("```console\n$ anteroom check --config bad.toml");
    let mut lines = shown.lines();
    let head = lines.next().unwrap();
    let expected: Vec<&str> = lines.map(|l| l.trim_start_matches("  - ")).collect();
    let Err(e) = Config::from_toml(&file, Path::new("bad.toml")) else {
        panic!("the documented bad file was accepted")
    };
    let said = format!("anteroom: {e}");
    let mut said_lines = said.lines();
    assert_eq!(said_lines.next().unwrap(), head);
    let actual: Vec<&str> = said_lines.map(|l| l.trim_start_matches("  - ")).collect();
    assert_eq!(actual.len(), expected.len(), "{said}");
    for (actual, expected) in actual.iter().zip(&expected) {
        // "(...)" in the docs stands for the parser's own words.
        match expected.split_once("(...)") {
            Some((before, after)) => assert!(
                actual.starts_with(before) && actual.ends_with(after),
                "{actual}\n  is not\n{expected}"
            ),
            None => assert_eq!(actual, expected),
        }
    }
}

/// Every TOML example in README.md and docs/ is read as anteroom reads a
/// config: no unknown key, no value of the wrong type. Examples are parts
/// of a file, so what they leave to the rest of it (an upstream named
/// elsewhere, a key file on the reader's machine) is not asked of them.
/// The deliberately bad example has a test of its own.
#[test]
fn every_toml_example_in_the_docs_has_only_known_keys() {
    let mut files = vec![std::path::PathBuf::from("README.md")];
    for entry in std::fs::read_dir("docs").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```toml\n") {
            let block = &rest[start + 8..];
            let end = block.find("\n```").unwrap();
            let example = &block[..end];
            rest = &block[end..];
            if example.contains("capcity") {
                continue;
            }
            checked += 1;
            // A sub-table of a room (`[room.limits]`) belongs to the room
            // above it in the reader's file: one is put before it.
            let starts = |header: &str| example.lines().any(|l| l.starts_with(header));
            let example = if starts("[room.") && !starts("[[room]]") {
                format!(
                    "[[room]]\nname = \"example\"\nmode = \"sessions\"\ncapacity = 1\n{example}"
                )
            } else {
                example.to_owned()
            };
            let example = example.as_str();
            match Config::from_toml(example, &file) {
                Ok(_) => {}
                Err(ConfigError::Invalid { problems, .. }) => {
                    let unknown: Vec<_> = problems
                        .iter()
                        .filter(|p| p.message.starts_with("unknown key"))
                        .collect();
                    assert!(
                        unknown.is_empty(),
                        "{}: {unknown:?} in\n{example}",
                        file.display()
                    );
                }
                Err(e) => panic!("{}: {e}\n{example}", file.display()),
            }
        }
    }
    assert!(checked >= 10, "{checked} examples");
}
