//! An nginx the test starts itself as the upstream, because what matters is
//! how a real path-normalising server reads a request (it merges slashes,
//! resolves dot segments and decodes percent-escapes before choosing a
//! location, as most app servers and frameworks do). Each location logs what
//! it served to a file of its own: the upstream's own log is the judge.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx, stopped when dropped.
pub struct Nginx {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// nginx's binary: on the PATH or where Debian puts it.
fn binary() -> String {
    for candidate in ["nginx", "/usr/sbin/nginx"] {
        if Command::new(candidate)
            .arg("-v")
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return candidate.to_owned();
        }
    }
    panic!("nginx not found: ./scripts/setup installs it")
}

impl Nginx {
    /// Serves one location per prefix: `return 200 "<name> $uri"`, logged
    /// to `<name>.log` (`/` is named `root`).
    pub fn start(locations: &[(&str, &str)]) -> Nginx {
        Nginx::serve(locations, "", "")
    }

    /// The same, speaking only HTTP/2 without TLS (prior knowledge), each
    /// answer ending with the protocol it was served over.
    pub fn start_h2c(locations: &[(&str, &str)]) -> Nginx {
        Nginx::serve(locations, " http2", " $server_protocol")
    }

    fn serve(locations: &[(&str, &str)], listen: &str, answer: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let d = dir.path().display();
        let mut servers = String::new();
        for (prefix, name) in locations {
            servers += &format!(
                "    location {prefix} {{ access_log {d}/{name}.log served; return 200 \"{name} $uri{answer}\\n\"; }}\n"
            );
        }
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  log_format served '$request_uri $uri';
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port}{listen};
{servers}  }}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { port, child, dir }
    }

    /// What the location `name` served, one line per request: `request_uri uri`.
    pub fn served(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
