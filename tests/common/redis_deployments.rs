//! The Redis deployments operators run, started by the test on loopback: a
//! Redis Cluster of three primaries, and a primary with a replica watched by
//! three sentinels. Every process is killed when its value is dropped.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::RedisServer;

/// How long a deployment may take to form.
const FORMING: Duration = Duration::from_secs(30);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + FORMING;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Redis Cluster: every node a primary, the slots spread by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// One cluster of three for every test of this process that needs no
    /// cluster of its own (each under its own key prefix); its servers end
    /// with the process.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: std::sync::OnceLock<RedisCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| RedisCluster::form(3, None, RedisServer::start_watched))
    }

    /// Starts `primaries` nodes and forms the cluster; returns once every node sees it healthy.
    pub fn start(primaries: usize) -> RedisCluster {
        RedisCluster::form(primaries, None, RedisServer::start_with)
    }

    /// A cluster whose every node requires `password`.
    pub fn start_with_password(primaries: usize, password: &str) -> RedisCluster {
        RedisCluster::form(primaries, Some(password), RedisServer::start_with)
    }

    fn form(
        primaries: usize,
        password: Option<&str>,
        start: fn(&[String]) -> RedisServer,
    ) -> RedisCluster {
        let mut args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ]
        .map(String::from)
        .to_vec();
        if let Some(p) = password {
            args.extend(["--requirepass", p, "--masterauth", p].map(String::from));
        }
        // The cluster bus port is chosen too: by default it is the port plus
        // 10,000, which may be taken, or past 65,535.
        let nodes: Vec<RedisServer> = (0..primaries)
            .map(|_| {
                let mut args = args.clone();
                args.extend(["--cluster-port".to_owned(), super::free_port().to_string()]);
                start(&args)
            })
            .collect();
        let mut cli = Command::new("redis-cli");
        if let Some(p) = password {
            cli.args(["--no-auth-warning", "-a", p]);
        }
        let status = cli
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is needed: run ./scripts/setup");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        wait_for("the cluster forming", || {
            cluster.nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.connection())
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            })
        });
        cluster
    }

    /// The seed URLs for `cluster_nodes`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The port of the node that holds `key`'s slot.
    pub fn owner(&self, key: &str) -> u16 {
        let mut c = self.nodes[0].connection();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .unwrap();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let port = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap();
            for range in &fields[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>())
                    && (a..=b).contains(&slot)
                {
                    return port;
                }
            }
        }
        panic!("no node holds slot {slot}")
    }

    /// How many keys each node holds, by port.
    pub fn keys_per_node(&self) -> HashMap<u16, u64> {
        self.nodes
            .iter()
            .map(|n| {
                let size: u64 = redis::cmd("DBSIZE").query(&mut n.connection()).unwrap();
                (n.port, size)
            })
            .collect()
    }
}

/// A primary, its replica, and three sentinels watching them as "mymaster",
/// quick to fail over (a primary silent for 1 s is down).
pub struct Sentinels {
    pub primary: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child, tempfile::TempDir)>,
}

impl Sentinels {
    pub const MASTER: &'static str = "mymaster";

    pub fn start() -> Sentinels {
        let primary = RedisServer::start();
        let replica = RedisServer::start_with(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ]);
        let sentinels = (0..3)
            .map(|_| {
                let port = super::free_port();
                let dir = tempfile::tempdir().unwrap();
                let conf = dir.path().join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {m} 127.0.0.1 {p} 2\nsentinel down-after-milliseconds {m} 1000\nsentinel failover-timeout {m} 5000\nsentinel parallel-syncs {m} 1\n",
                        dir = dir.path().display(),
                        m = Self::MASTER,
                        p = primary.port
                    ),
                )
                .unwrap();
                let child = Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(std::fs::File::create(dir.path().join("sentinel.log")).unwrap())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server is needed: run ./scripts/setup");
                (port, child, dir)
            })
            .collect();
        let set = Sentinels {
            primary,
            replica,
            sentinels,
        };
        wait_for("the sentinels finding each other and the replica", || {
            set.sentinels.iter().all(|(port, _, _)| {
                set.master_info(*port).is_some_and(|m| {
                    m.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && m.get("num-slaves").map(String::as_str) == Some("1")
                })
            })
        });
        set
    }

    /// What one sentinel knows of the primary.
    fn master_info(&self, port: u16) -> Option<HashMap<String, String>> {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(Self::MASTER)
            .query(&mut c)
            .ok()
    }

    /// The port of the primary the sentinels name now.
    pub fn named_primary(&self) -> Option<u16> {
        self.sentinels
            .iter()
            .find_map(|(port, _, _)| self.master_info(*port))
            .and_then(|m| m.get("port").and_then(|p| p.parse().ok()))
    }

    /// The URLs for `sentinels`.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, _, _)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The `[store]` keys that reach this set.
    pub fn store_keys(&self) -> String {
        format!(
            "sentinels = [{}]\nsentinel_master = \"{}\"\n",
            self.urls()
                .iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(", "),
            Self::MASTER
        )
    }

    /// Waits until the replica has every write the primary acknowledged so
    /// far (replication is asynchronous: a failover loses what it had not).
    pub fn replicated(&self) {
        let copies: u32 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query(&mut self.primary.connection())
            .unwrap();
        assert_eq!(copies, 1, "the replica did not catch up");
    }

    /// Kills the primary and waits until the sentinels name the replica instead.
    pub fn fail_over(&mut self) {
        self.primary.stop();
        let replica = self.replica.port;
        wait_for("the failover", || self.named_primary() == Some(replica));
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
