//! The real `anteroom` binary as a child process: for logs, signals, and
//! several instances sharing one store (killed for real with SIGKILL).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Visitor, client, eventually, free_port};

/// A running anteroom process; killed when dropped.
pub struct Process {
    pub child: Child,
    pub public: u16,
    pub admin: u16,
    /// The `[server]`, `[admin]` and `[log]` tables of its config file.
    head: String,
    /// Shared with the process that upgrades this one.
    dir: std::sync::Arc<tempfile::TempDir>,
    log_name: &'static str,
}

impl Process {
    /// Runs the binary with JSON logs: the `[server]`, `[admin]` and `[log]`
    /// tables are made here, `rest` follows them.
    pub async fn start(grace: &str, rest: &str) -> Process {
        Process::start_logging(grace, "json", rest).await
    }

    /// Runs the binary with logs in `format` ("text" or "json").
    pub async fn start_logging(grace: &str, format: &str, rest: &str) -> Process {
        Process::start_full(&format!("grace_period = \"{grace}\""), format, rest).await
    }

    /// Runs the binary with these keys in `[server]`, JSON logs.
    pub async fn start_server(server_keys: &str, rest: &str) -> Process {
        Process::start_full(server_keys, "json", rest).await
    }

    async fn start_full(server_keys: &str, format: &str, rest: &str) -> Process {
        let (public, admin) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anteroom.toml");
        let head = format!(
            "[server]\nlisten = [\"127.0.0.1:{public}\"]\nthreads = 1\n{server_keys}\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[log]\nformat = \"{format}\"\nlevel = \"info\"\n"
        );
        std::fs::write(&path, format!("{head}{rest}\n")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_anteroom"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let process = Process {
            child,
            public,
            admin,
            head,
            dir: std::sync::Arc::new(dir),
            log_name: "stderr.log",
        };
        process.serving().await;
        process
    }

    /// Replaces what follows the `[server]`, `[admin]` and `[log]` tables
    /// in its config file (for a reload).
    pub fn rewrite(&self, rest: &str) {
        let path = self.dir.path().join("anteroom.toml");
        std::fs::write(path, format!("{}{rest}\n", self.head)).unwrap();
    }

    /// Replaces the whole config file with `text`.
    pub fn rewrite_all(&self, text: &str) {
        std::fs::write(self.dir.path().join("anteroom.toml"), text).unwrap();
    }

    /// A directory that lives as long as the process (for keys, state).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log_name)).unwrap_or_default()
    }

    /// Starts the same binary with the same config file and `--upgrade`: it
    /// waits for this process's sockets, which it gets once this one is sent
    /// SIGQUIT. Not waited for.
    pub fn spawn_upgrade(&self) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_anteroom"))
            .args(["run", "--upgrade", "--config"])
            .arg(self.dir.path().join("anteroom.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stderr-upgrade.log")).unwrap())
            .spawn()
            .unwrap();
        Process {
            child,
            public: self.public,
            admin: self.admin,
            head: self.head.clone(),
            dir: std::sync::Arc::clone(&self.dir),
            log_name: "stderr-upgrade.log",
        }
    }

    /// Starts the binary again on the same config file (after this one
    /// stopped), waiting until it serves.
    pub async fn restart(&self) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_anteroom"))
            .args(["run", "--config"])
            .arg(self.dir.path().join("anteroom.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stderr-restart.log")).unwrap())
            .spawn()
            .unwrap();
        let process = Process {
            child,
            public: self.public,
            admin: self.admin,
            head: self.head.clone(),
            dir: std::sync::Arc::clone(&self.dir),
            log_name: "stderr-restart.log",
        };
        process.serving().await;
        process
    }

    /// Waits until the admin and public listeners answer (10 s at most);
    /// otherwise fails with what the process logged.
    pub async fn serving(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let up = client()
                .get(self.admin_url("/healthz"))
                .send()
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.public))
                    .await
                    .is_ok();
            if up {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "anteroom did not start serving within 10 s; it logged:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The public base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.public)
    }

    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// A new visitor talking to this instance.
    pub fn visitor(&self) -> Visitor {
        Visitor::new(self.base())
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to end (15 s at most).
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        eventually(Duration::from_secs(15), || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
