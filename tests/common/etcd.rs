//! A private etcd for tests: Debian's `etcd` binary on free loopback ports in
//! a temporary directory, stopped (and its data removed) on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    /// Client port.
    pub port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd and waits (with a deadline) until it answers.
    pub fn start() -> Etcd {
        let dir =
            std::env::temp_dir().join(format!("domi-etcd-{}-{}", std::process::id(), free_port()));
        let mut e = Etcd {
            child: None,
            dir,
            port: free_port(),
            peer_port: free_port(),
        };
        e.spawn();
        e
    }

    /// The client endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let (c, p) = (self.port, self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{p}"),
            ])
            .args(["--initial-cluster", &format!("t=http://127.0.0.1:{p}")])
            .args([
                "--heartbeat-interval=10",
                "--election-timeout=100",
                "--logger=zap",
                "--log-level=error",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `etcd` ({e}): run `make setup` to install etcd-server")
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new("etcdctl")
                .args([
                    "--endpoints",
                    &self.endpoint(),
                    "--dial-timeout=1s",
                    "endpoint",
                    "health",
                ])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or_else(|e| {
                    panic!("cannot run `etcdctl` ({e}): run `make setup` to install etcd-client")
                });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd (SIGKILL); its data stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `etcdctl get --prefix <prefix>`: (key, value) pairs.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = Command::new("etcdctl")
            .args(["--endpoints", &self.endpoint(), "get", "--prefix", prefix])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl get failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_owned(), c[1].to_owned()))
            .collect()
    }

    /// Writes many keys (no lease) in transactions of 100 puts.
    pub fn put_many(&self, kvs: &[(String, String)]) {
        use std::io::Write;
        for chunk in kvs.chunks(100) {
            let mut script = String::from("\n");
            for (k, v) in chunk {
                script.push_str(&format!("put {k} {v:?}\n"));
            }
            script.push_str("\n\n");
            let mut child = Command::new("etcdctl")
                .args(["--endpoints", &self.endpoint(), "txn"])
                .env("ETCDCTL_API", "3")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("etcdctl runs");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "etcdctl txn failed");
        }
    }

    /// `etcdctl put key value` (no lease).
    pub fn put(&self, key: &str, value: &str) {
        let st = Command::new("etcdctl")
            .args(["--endpoints", &self.endpoint(), "put", key, value])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .status()
            .expect("etcdctl runs");
        assert!(st.success());
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
