//! A private etcd for tests: Debian's `etcd` binary on free loopback ports in
//! a temporary directory, stopped (and its data removed) on drop.
//!
//! It serves plain `http://` without authentication, unless started with
//! [`Etcd::start_tls`] (`https://`, client certificates required) or given a
//! root user with [`Etcd::enable_auth`]; the helpers below pass the matching
//! `etcdctl` flags either way.

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::certs::CertFiles;

/// A running private etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    /// Client port.
    pub port: u16,
    peer_port: u16,
    /// Another address the client port also listens on (e.g. the host side
    /// of a veth pair, for a node in a network namespace).
    also_on: Option<IpAddr>,
    /// Serving over TLS with client-certificate authentication.
    tls: Option<Tls>,
    /// The root user's password once authentication is enabled.
    root_password: Option<String>,
}

/// The files of an etcd serving `https://` with `--client-cert-auth`.
#[derive(Clone, Debug)]
struct Tls {
    /// etcd's server certificate and key.
    server: CertFiles,
    /// The CA etcd trusts for client certificates (and that signed `server`).
    ca: PathBuf,
    /// The certificate `etcdctl` presents.
    client: CertFiles,
}

/// A loopback port free now, for an etcd started later. It is taken below
/// the kernel's ephemeral range (32768 and up here), where nodes binding
/// port 0 never land: a port the kernel hands out freely could go to a node
/// meanwhile (a node's socket does not stop etcd's bind, but etcd's listener
/// then stops the node's shards from listening).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = std::process::id().wrapping_mul(7919);
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + base.wrapping_add(k.wrapping_mul(131)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether `etcdctl` (`ctl`, with its endpoints) finds etcd healthy now
/// (`endpoint health`, a second to connect, two to answer).
pub fn healthy(mut ctl: Command) -> bool {
    ctl.args(["--dial-timeout=1s", "--command-timeout=2s"])
        .args(["endpoint", "health"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or_else(|e| {
            panic!("cannot run `etcdctl` ({e}): run `make setup` to install etcd-client")
        })
}

impl Etcd {
    /// Starts etcd and waits (with a deadline) until it answers.
    pub fn start() -> Etcd {
        Etcd::start_on(None)
    }

    /// Like [`Etcd::start`], with the client port also listening on `also`
    /// (kept across [`Etcd::restart`]); reach it there with [`Etcd::endpoint_on`].
    pub fn start_also_on(also: IpAddr) -> Etcd {
        Etcd::start_on(Some(also))
    }

    fn start_on(also_on: Option<IpAddr>) -> Etcd {
        let mut e = Etcd::reserved(also_on);
        e.spawn();
        e
    }

    /// Starts etcd serving `https://127.0.0.1:<port>` with the certificate
    /// `server`, requiring client certificates signed by `ca`
    /// (`--client-cert-auth --trusted-ca-file <ca>`); the helpers' `etcdctl`
    /// calls present `client`. Waits (with a deadline) until it answers.
    pub fn start_tls(server: &CertFiles, ca: &Path, client: &CertFiles) -> Etcd {
        let mut e = Etcd::reserved(None);
        e.tls = Some(Tls {
            server: server.clone(),
            ca: ca.to_owned(),
            client: client.clone(),
        });
        e.spawn();
        e
    }

    /// Adds the user `root` with `password` and enables authentication:
    /// from then on every request needs a user (the helpers pass
    /// `--user root:<password>`). Kept across [`Etcd::restart`] (it lives
    /// in etcd's data).
    pub fn enable_auth(&mut self, password: &str) {
        let add = format!("--new-user-password={password}");
        self.etcdctl(&["user", "add", "root", &add], None);
        self.etcdctl(&["auth", "enable"], None);
        self.root_password = Some(password.to_owned());
    }

    /// The `etcdctl` flags this etcd needs besides `--endpoints`: the CA
    /// and client certificate when it serves TLS, the root user once
    /// authentication is enabled. Empty for a plain etcd.
    pub fn ctl_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(tls) = &self.tls {
            flags.push(format!("--cacert={}", tls.ca.display()));
            flags.push(format!("--cert={}", tls.client.cert.display()));
            flags.push(format!("--key={}", tls.client.key.display()));
        }
        if let Some(pw) = &self.root_password {
            flags.push(format!("--user=root:{pw}"));
        }
        flags
    }

    /// An `etcdctl` command for this etcd: API 3, `--endpoints` and
    /// [`Etcd::ctl_flags`] set.
    fn ctl(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.args(["--endpoints", &self.endpoint()])
            .args(self.ctl_flags())
            .env("ETCDCTL_API", "3");
        cmd
    }

    /// Picks free ports and a data directory without starting etcd: until
    /// [`Etcd::launch`], its [`Etcd::endpoint`] refuses connections.
    pub fn reserve() -> Etcd {
        Etcd::reserved(None)
    }

    fn reserved(also_on: Option<IpAddr>) -> Etcd {
        let dir =
            std::env::temp_dir().join(format!("domi-etcd-{}-{}", std::process::id(), free_port()));
        Etcd {
            child: None,
            dir,
            port: free_port(),
            peer_port: free_port(),
            also_on,
            tls: None,
            root_password: None,
        }
    }

    /// Starts a [reserved](Etcd::reserve) etcd on its ports and waits (with
    /// a deadline) until it answers.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        self.spawn();
    }

    /// The client endpoint URL (`https://` when started with
    /// [`Etcd::start_tls`]).
    pub fn endpoint(&self) -> String {
        self.endpoint_on(IpAddr::from([127, 0, 0, 1]))
    }

    /// The client endpoint URL on `ip` (the address given to
    /// [`Etcd::start_also_on`]).
    pub fn endpoint_on(&self, ip: IpAddr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{ip}:{}", self.port)
    }

    fn spawn(&mut self) {
        let p = self.peer_port;
        let mut listen = self.endpoint();
        if let Some(ip) = self.also_on {
            listen += &format!(",{}", self.endpoint_on(ip));
        }
        let mut cmd = Command::new("etcd");
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server.cert)
                .arg("--key-file")
                .arg(&tls.server.key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca);
        }
        cmd.args(["--name", "t", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &self.endpoint()])
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
            ]);
        let child = run_etcd(&mut cmd);
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if healthy(self.ctl()) {
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
        let out = self
            .ctl()
            .args(["get", "--prefix", prefix])
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
            let mut child = self
                .ctl()
                .arg("txn")
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
        let st = self
            .ctl()
            .args(["put", key, value])
            .stdout(Stdio::null())
            .status()
            .expect("etcdctl runs");
        assert!(st.success());
    }
}

impl Etcd {
    /// Runs `etcdctl <args>` against this etcd, optionally feeding `stdin`;
    /// asserts success and returns its standard output.
    pub fn etcdctl(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = self
            .ctl()
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().expect("etcdctl finishes");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<String> {
        self.etcdctl(&["get", key, "--print-value-only"], None)
            .lines()
            .next()
            .map(str::to_owned)
    }

    /// The lease `key` hangs on (`Some(0)` for none), if the key exists.
    pub fn lease_of(&self, key: &str) -> Option<i64> {
        let out = self.etcdctl(&["get", key, "-w", "json"], None);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl JSON");
        let kv = v["kvs"].as_array()?.first()?;
        Some(kv["lease"].as_i64().unwrap_or(0))
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(&["get", "/", "-w", "json"], None);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl JSON");
        v["header"]["revision"].as_i64().expect("a revision")
    }

    /// Grants a lease of `ttl_secs`; its id.
    pub fn grant(&self, ttl_secs: u32) -> i64 {
        // "lease 694d7a1b2c3d4e5f granted with TTL(30s)"
        let out = self.etcdctl(&["lease", "grant", &ttl_secs.to_string()], None);
        let hex = out.split_whitespace().nth(1).expect("a lease id");
        i64::from_str_radix(hex, 16).expect("a hex lease id")
    }

    /// Revokes `lease` (its keys vanish at once).
    pub fn revoke(&self, lease: i64) {
        self.etcdctl(&["lease", "revoke", &format!("{lease:x}")], None);
    }

    /// Puts every (key, value) under `lease` in one transaction.
    pub fn put_all_with_lease(&self, kvs: &[(&str, &str)], lease: i64) {
        let mut script = String::from("\n");
        for (k, v) in kvs {
            script.push_str(&format!("put --lease={lease:x} {k} {v:?}\n"));
        }
        script.push_str("\n\n");
        let out = self.etcdctl(&["txn"], Some(&script));
        assert!(out.starts_with("SUCCESS"), "txn output: {out}");
    }

    /// Compacts the store's history up to `revision`.
    pub fn compact(&self, revision: i64) {
        self.etcdctl(&["compact", &revision.to_string()], None);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One member of an [`EtcdCluster`].
struct Member {
    name: String,
    dir: PathBuf,
    port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A private multi-member etcd on loopback (plain `http://`, no auth):
/// members `m1..mN` on free ports, each with its own data directory, all
/// stopped and removed on drop. A killed member restarts on the same ports
/// and data, so it rejoins the cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    /// Another address every member's client port also listens on (e.g.
    /// the host side of a veth pair), kept across restarts.
    also_on: Option<IpAddr>,
}

/// How long a member (or the cluster) gets to become healthy or elect a leader.
const CLUSTER_READY: Duration = Duration::from_secs(20);

impl EtcdCluster {
    /// Starts `n` members (`--initial-cluster-state new`, heartbeat 50 ms,
    /// election timeout 500 ms) and waits (with a deadline) until every
    /// member answers and a leader is elected.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_on(n, None)
    }

    /// Like [`EtcdCluster::start`], with every member's client port also
    /// listening on `also`; reach them there with [`EtcdCluster::endpoints_on`].
    pub fn start_also_on(n: usize, also: IpAddr) -> EtcdCluster {
        EtcdCluster::start_on(n, Some(also))
    }

    fn start_on(n: usize, also_on: Option<IpAddr>) -> EtcdCluster {
        assert!(n >= 1, "a cluster needs a member");
        let base = free_port();
        let members: Vec<Member> = (1..=n)
            .map(|i| Member {
                name: format!("m{i}"),
                dir: std::env::temp_dir()
                    .join(format!("domi-etcd-{}-{base}-m{i}", std::process::id())),
                port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            members,
            initial_cluster,
            also_on,
        };
        // All at once: a member waits for a quorum before it answers.
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_healthy(i);
        }
        c.wait_leader(CLUSTER_READY);
        c
    }

    /// Every member's client URL (live or not), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Every member's client URL on `ip` (the address given to
    /// [`EtcdCluster::start_also_on`]).
    pub fn endpoints_on(&self, ip: IpAddr) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{ip}:{}", m.port))
            .collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// How many members are running.
    pub fn live(&self) -> usize {
        self.members.iter().filter(|m| m.child.is_some()).count()
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster.clone();
        let also_on = self.also_on;
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} is already running", m.name);
        let mut listen = m.endpoint();
        if let Some(ip) = also_on {
            listen += &format!(",http://{ip}:{}", m.port);
        }
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &m.name, "--data-dir"])
            .arg(&m.dir)
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &m.endpoint()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args([
                "--initial-cluster-state=new",
                "--initial-cluster-token=domi-test",
                "--heartbeat-interval=50",
                "--election-timeout=500",
                "--logger=zap",
                "--log-level=error",
            ]);
        let child = run_etcd(&mut cmd);
        m.child = Some(child);
    }

    /// An `etcdctl` command (API 3) over `endpoints`.
    fn ctl_on(endpoints: &[String]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.args(["--endpoints", &endpoints.join(",")])
            .env("ETCDCTL_API", "3");
        cmd
    }

    /// An `etcdctl` command over the running members.
    fn ctl(&self) -> Command {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::endpoint)
            .collect();
        assert!(!live.is_empty(), "no etcd member is running");
        EtcdCluster::ctl_on(&live)
    }

    /// Waits until member `i` answers `endpoint health` (which needs a quorum).
    fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + CLUSTER_READY;
        let ep = [self.members[i].endpoint()];
        loop {
            if healthy(EtcdCluster::ctl_on(&ep)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {} did not become healthy within {CLUSTER_READY:?}",
                self.members[i].name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the current leader among the running members, if one of
    /// them is leader (from `etcdctl endpoint status -w json`: the entry whose
    /// `Status.leader` equals its own `Status.header.member_id`).
    pub fn try_leader(&self) -> Option<usize> {
        let out = self
            .ctl()
            .args(["--dial-timeout=1s", "--command-timeout=2s"])
            .args(["endpoint", "status", "-w", "json"])
            .stderr(Stdio::null())
            .output()
            .expect("etcdctl runs");
        // A member that cannot answer makes etcdctl fail but the others'
        // entries are still printed.
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.iter().find_map(|entry| {
            let status = &entry["Status"];
            let me = status["header"]["member_id"].as_u64()?;
            if status["leader"].as_u64()? != me {
                return None;
            }
            let ep = entry["Endpoint"].as_str()?;
            self.members.iter().position(|m| m.endpoint() == ep)
        })
    }

    /// Waits (at most `within`) for a running member to be leader; its index.
    pub fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.try_leader() {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no etcd leader within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The index of the current leader (waiting for one, with a deadline).
    pub fn leader(&self) -> usize {
        self.wait_leader(CLUSTER_READY)
    }

    /// Kills member `i` (SIGKILL); its data stays for [`EtcdCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its ports and data (it rejoins the
    /// cluster) and waits (with a deadline) until it answers.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Kills every member, then starts them all again on their ports and
    /// data (members wait for a quorum, so they start together) and waits
    /// (with a deadline) until each answers and a leader is elected.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i);
        }
        self.wait_leader(CLUSTER_READY);
    }

    /// `etcdctl get --prefix <prefix>` through any running member:
    /// (key, value) pairs.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self.etcdctl(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_owned(), c[1].to_owned()))
            .collect()
    }

    /// The lease `key` hangs on (`Some(0)` for none), if the key exists.
    pub fn lease_of(&self, key: &str) -> Option<i64> {
        let out = self.etcdctl(&["get", key, "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl JSON");
        let kv = v["kvs"].as_array()?.first()?;
        Some(kv["lease"].as_i64().unwrap_or(0))
    }

    /// Runs `etcdctl <args>` through the running members; asserts success
    /// and returns its standard output.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = self
            .ctl()
            .args(["--dial-timeout=1s", "--command-timeout=5s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &self.members {
            let _ = std::fs::remove_dir_all(&m.dir);
        }
    }
}

/// Runs an `etcd` command line quietly; a missing binary says how to get it.
fn run_etcd(cmd: &mut Command) -> std::process::Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `etcd` ({e}): run `make setup` to install etcd-server")
        })
}
