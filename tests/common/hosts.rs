//! Several "hosts" on one machine, for multi-host tests: each host is a
//! network namespace with an address of its own (`10.231.N.2`, N from
//! 208..=254) on its own veth pair, and the root namespace routes between
//! them (IPv4 forwarding on the host sides of those pairs only; the global
//! `net.ipv4.ip_forward` is left alone). So two hosts talk through routed
//! addresses, never over loopback: a node bound to `0.0.0.0` inside a host
//! has exactly one non-loopback address, the host's.
//!
//! On top of them, [`NsEtcd`]: a multi-member etcd with one member inside
//! each of some hosts, listening on that host's address only.
//!
//! Everything is removed on drop, also after a panic: processes killed,
//! data directories deleted, links and namespaces deleted. Where namespaces
//! cannot be created (no root, no `ip`), [`Hosts::create`] says why and the
//! caller skips.

#![allow(dead_code)]

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::procs::{drain, read};

/// Proxy variables a child must not see: etcdctl (Go gRPC) would send
/// requests for the hosts' addresses through a proxy.
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Namespaces routed to each other through the root namespace; removed on drop.
pub struct Hosts {
    hosts: Vec<Netns>,
}

impl Hosts {
    /// `k` hosts on subnets no interface uses now, each with a route to
    /// every other host's subnet through the root namespace.
    pub fn create(k: usize) -> Result<Hosts, String> {
        let subnets = Netns::free_subnets(k, 208..=254)?;
        // Filled one by one: a failure half-way drops (and removes) what
        // was created.
        let mut hosts = Hosts { hosts: Vec::new() };
        for n in subnets {
            hosts.hosts.push(Netns::create(n)?);
        }
        for h in &hosts.hosts {
            h.forward()?;
        }
        for a in &hosts.hosts {
            for b in hosts.hosts.iter().filter(|b| b.n != a.n) {
                a.route_to(b)?;
            }
        }
        Ok(hosts)
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> &Netns {
        &self.hosts[i]
    }

    /// Host `i`'s address, the only non-loopback one inside it.
    pub fn ip(&self, i: usize) -> IpAddr {
        self.hosts[i].inner_ip()
    }

    /// A command running `program` on host `i` (no proxy variables).
    pub fn exec(&self, i: usize, program: impl AsRef<Path>) -> Command {
        let mut cmd = self.hosts[i].exec(program);
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        cmd
    }
}

/// What a finished (or killed) command left.
#[derive(Debug)]
pub struct Ran {
    /// Its exit code; `None` if it was killed (e.g. at the deadline).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `cmd` (stdin closed) until it exits, killing it after `within`.
pub fn run_within(mut cmd: Command, within: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let err = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + within;
    let code = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ran {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// etcd's client port inside a host (each host has its own ports).
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port inside a host.
pub const ETCD_PEER_PORT: u16 = 2380;

/// How long the members get to answer and elect a leader.
const ETCD_READY: Duration = Duration::from_secs(20);

/// One member of an [`NsEtcd`].
struct NsMember {
    name: String,
    /// The host it runs on.
    host: usize,
    ip: IpAddr,
    dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl NsMember {
    fn endpoint(&self) -> String {
        format!("http://{}:{ETCD_CLIENT_PORT}", self.ip)
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{ETCD_PEER_PORT}", self.ip)
    }
}

/// An etcd cluster with member `m<k>` inside host `on[k-1]`, listening
/// (client and peer ports) on that host's address only; plain `http://`,
/// no auth. Stopped and its data removed on drop.
pub struct NsEtcd {
    members: Vec<NsMember>,
}

impl NsEtcd {
    /// Starts one member on each host of `on` (`--initial-cluster-state new`
    /// naming the hosts' addresses, heartbeat 50 ms, election timeout 500 ms)
    /// and waits (with a deadline) until every member answers `endpoint
    /// health` (which needs an elected leader), asked from host `on[0]`.
    pub fn start(hosts: &Hosts, on: &[usize]) -> NsEtcd {
        assert!(!on.is_empty(), "a cluster needs a member");
        let pid = std::process::id();
        let mut etcd = NsEtcd {
            members: on
                .iter()
                .enumerate()
                .map(|(k, &host)| NsMember {
                    name: format!("m{}", k + 1),
                    host,
                    ip: hosts.ip(host),
                    dir: std::env::temp_dir().join(format!(
                        "domi-mh-etcd-{pid}-{}-m{}",
                        hosts.ns(host).n,
                        k + 1
                    )),
                    child: None,
                    log: Arc::default(),
                })
                .collect(),
        };
        let initial_cluster = etcd
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("domi-mh-{pid}-{}", hosts.ns(on[0]).n);
        // All at once: a member waits for a quorum before it answers.
        for m in &mut etcd.members {
            let _ = std::fs::remove_dir_all(&m.dir);
            let mut cmd = hosts.exec(m.host, "etcd");
            cmd.args(["--name", &m.name, "--data-dir"])
                .arg(&m.dir)
                .args(["--listen-client-urls", &m.endpoint()])
                .args(["--advertise-client-urls", &m.endpoint()])
                .args(["--listen-peer-urls", &m.peer_url()])
                .args(["--initial-advertise-peer-urls", &m.peer_url()])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-token", &token])
                .args([
                    "--initial-cluster-state=new",
                    "--heartbeat-interval=50",
                    "--election-timeout=500",
                    "--logger=zap",
                    "--log-level=warn",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot run `etcd` ({e}): run `make setup` to install etcd-server")
            });
            m.log = drain(child.stderr.take().expect("piped stderr"));
            m.child = Some(child);
        }
        let deadline = Instant::now() + ETCD_READY;
        loop {
            if super::etcd::healthy(etcd.ctl(hosts, on[0])) {
                return etcd;
            }
            for m in &mut etcd.members {
                let exited = m
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                assert!(
                    !exited,
                    "etcd member {} on {} exited; its log:\n{}",
                    m.name,
                    m.ip,
                    read(&m.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the etcd members did not all become healthy within {ETCD_READY:?}; logs:\n{}",
                etcd.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every member's client URL (`http://<host address>:2379`), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(NsMember::endpoint).collect()
    }

    /// An `etcdctl` command (API 3) run on host `from`, over every member.
    pub fn ctl(&self, hosts: &Hosts, from: usize) -> Command {
        let mut cmd = hosts.exec(from, "etcdctl");
        cmd.args(["--endpoints", &self.endpoints().join(",")])
            .env("ETCDCTL_API", "3");
        cmd
    }

    /// Runs `etcdctl <args>` on host `from`; asserts success and returns its
    /// standard output.
    pub fn etcdctl(&self, hosts: &Hosts, from: usize, args: &[&str]) -> String {
        let out = self
            .ctl(hosts, from)
            .args(["--dial-timeout=1s", "--command-timeout=5s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?} on host {from} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `etcdctl get --prefix <prefix>` on host `from`: (key, value) pairs.
    pub fn get_prefix(&self, hosts: &Hosts, from: usize, prefix: &str) -> Vec<(String, String)> {
        let out = self.etcdctl(hosts, from, &["get", "--prefix", prefix]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_owned(), c[1].to_owned()))
            .collect()
    }

    /// What the members logged (warnings and up), for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} on {}:\n{}", m.name, m.ip, read(&m.log)))
            .collect()
    }
}

impl Drop for NsEtcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for m in &self.members {
            let _ = std::fs::remove_dir_all(&m.dir);
        }
    }
}
