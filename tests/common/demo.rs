//! `anteroom demo` as a newcomer starts it: the real binary on free ports,
//! stopped when the test ends however it ends.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{client, eventually, free_port};

/// A running demo.
pub struct Demo {
    child: Child,
    /// anteroom's public port.
    pub public: u16,
    /// anteroom's admin port.
    pub admin: u16,
    /// The toy app's own port.
    pub upstream: u16,
    /// What it printed when it started.
    pub banner: String,
}

impl Demo {
    /// Starts it and waits until it says where to go and is ready.
    pub async fn start() -> Demo {
        let (public, admin, upstream) = (free_port(), free_port(), free_port());
        let stdout = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_anteroom"))
            .args(["demo", "--port", &public.to_string()])
            .args(["--admin-port", &admin.to_string()])
            .args(["--upstream-port", &upstream.to_string()])
            .stdout(stdout.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let banner = eventually(Duration::from_secs(15), || {
            let printed = std::fs::read_to_string(stdout.path()).unwrap_or_default();
            async move { printed.contains("Try:").then_some(printed) }
        })
        .await;
        eventually(Duration::from_secs(10), || async {
            client()
                .get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
        Demo {
            child,
            public,
            admin,
            upstream,
            banner,
        }
    }

    /// anteroom's public base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.public)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
