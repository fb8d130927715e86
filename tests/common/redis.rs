//! A `redis-server` the test starts itself: loopback, a free port, no
//! persistence, killed when dropped. Tests never touch another Redis.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running server.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Arguments in place of `--port` (TLS, password).
    args: Vec<String>,
    /// Arguments added to the usual ones (cluster mode, replication).
    extra: Vec<String>,
    /// Killed when the test process ends, even if never dropped (a server
    /// shared by the tests, in a static).
    watched: bool,
    /// The password it requires (`--requirepass` among `extra`).
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server started with `extra` arguments (e.g. `--cluster-enabled yes`).
    pub fn start_with(extra: &[String]) -> RedisServer {
        RedisServer::start_full(extra, false)
    }

    /// A server that outlives no test process: for one shared by the tests.
    pub fn start_watched(extra: &[String]) -> RedisServer {
        RedisServer::start_full(extra, true)
    }

    fn start_full(extra: &[String], watched: bool) -> RedisServer {
        let port = super::free_port();
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            args: Vec::new(),
            password: extra
                .iter()
                .position(|a| a == "--requirepass")
                .and_then(|i| extra.get(i + 1).cloned()),
            extra: extra.to_vec(),
            watched,
        };
        server.spawn();
        server
    }

    /// A server that speaks only TLS (a certificate for "localhost" made here)
    /// and requires a password. Returns it and the CA file to trust.
    pub fn start_tls(password: &str) -> (RedisServer, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        // A CA of the test's own, and a certificate for "localhost" it signs.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let ca_file = dir.path().join("ca.crt");
        let cert = dir.path().join("redis.crt");
        let key = dir.path().join("redis.key");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
        let port = super::free_port();
        let path = |p: &std::path::Path| p.display().to_string();
        let mut server = RedisServer {
            port,
            child: None,
            args: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(&cert),
                "--tls-key-file".into(),
                path(&key),
                "--tls-ca-cert-file".into(),
                path(&ca_file),
                "--tls-auth-clients".into(),
                "no".into(),
                "--requirepass".into(),
                password.into(),
            ],
            extra: Vec::new(),
            watched: false,
            password: Some(password.to_owned()),
            dir,
        };
        server.spawn();
        (server, ca_file)
    }

    fn spawn(&mut self) {
        // Plain on the port, or (TLS) the arguments given, which name it.
        let port_args = if self.args.is_empty() {
            vec!["--port".to_owned(), self.port.to_string()]
        } else {
            self.args.clone()
        };
        // Watched: a shell runs the server and kills it once this process is gone.
        let mut command = if self.watched {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!(
                    "redis-server \"$@\" & r=$!; while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill -9 $r",
                    std::process::id()
                ))
                .arg("sh");
            sh
        } else {
            Command::new("redis-server")
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(port_args)
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(std::fs::File::create(self.dir.path().join("redis.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed: run ./scripts/setup");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.listening() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server accepts connections (and, without TLS, answers PING).
    fn listening(&self) -> bool {
        if self.args.is_empty() && self.password.is_none() {
            self.answers()
        } else {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        }
    }

    /// Whether the server answers PING.
    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 16];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp
                .read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    /// A connection of the test's own, for commands it sends itself.
    pub fn connection(&self) -> redis::Connection {
        let auth = self
            .password
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        redis::Client::open(format!("redis://{auth}127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    /// How many scripts the server has run (`EVALSHA` and `EVAL`) since it started.
    pub fn scripts_run(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .unwrap();
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// How many clients of this server are subscribed to `channel`.
    pub fn subscribers(&self, channel: &str) -> u64 {
        let counts: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut self.connection())
            .unwrap();
        match counts.get(1) {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        }
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The URL anteroom connects to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The config every instance sharing this server needs: `[tokens]` with
    /// the tests' signing key, and `[store]` here under `prefix`, with
    /// `extra` store keys.
    pub fn shared_store(&self, prefix: &str, extra: &str) -> String {
        super::Store::Redis(self.port)
            .shared_toml(prefix, extra)
            .unwrap_or_default()
    }

    /// Freezes the server (it accepts connections but answers nothing).
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Lets a frozen server go on.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        }
    }

    /// Kills the server (its data is lost) and starts a new one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
