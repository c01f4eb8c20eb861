//! Multi-host: every node is a process on a "host" of its own (a network
//! namespace with its own address, routed to the others through the root
//! namespace, see tests/common/hosts.rs), bound to `0.0.0.0`; etcd has three
//! members, each on its own host. Nodes advertise their host's address,
//! whether told with `--advertise` or picking it themselves, the etcd
//! records never hold an unspecified address, and nodes on other hosts
//! reach each other at the advertised addresses — over mutual TLS, each
//! host's certificate naming its own address (`IP:` subject alternative
//! name), checked by the peers that dial it. Where namespaces cannot be
//! created (no root, no `ip`), the test says so and skips.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::certs::{CertFiles, Pki};
use common::hosts::{run_within, Hosts, NsEtcd};
use common::procs::{example_path, http, read, Server};

/// Served by every server here with `--nested`: the handler requests
/// channel 50 (which every `server` example serves with `pong`) from the
/// cluster, round-robin, so from the other hosts too, before it answers.
const NESTED: u16 = 51;

/// Host 3 runs no etcd member; the client and `etcdctl` run there.
const ETCD_HOSTS: [usize; 3] = [0, 1, 2];
const CLIENT_HOST: usize = 3;

/// Requests the client sends (spread round-robin over the four servers).
const REQUESTS: u64 = 400;

/// How long a node gets to register, or a peer table to settle.
const SETTLE: Duration = Duration::from_secs(20);

/// A server process and the addresses peers must see for it.
struct Placed {
    server: Server,
    host: usize,
    /// Its host's address and bound bus port.
    tcp: SocketAddr,
    /// Its host's address and bound admin port.
    http: SocketAddr,
}

/// Polls `check` until it returns `Ok` or `within` passes; panics with its
/// last complaint and `logs()` on timeout.
fn eventually<T>(
    what: &str,
    within: Duration,
    logs: impl Fn() -> String,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out ({within:?}) waiting for {what}: {e}\n{}", logs())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn unspecified(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .map(|a| a.ip().is_unspecified())
        .unwrap_or(false)
}

/// `GET /status` of `s`, from the root namespace over its host's link.
fn status(s: &Placed) -> serde_json::Value {
    let (code, _, body) = http(s.http, "GET", "/status", None);
    assert_eq!(code, 200, "/status of {}: {body}", s.tcp);
    serde_json::from_str(&body).expect("a JSON status")
}

#[test]
fn nodes_bound_to_every_interface_advertise_their_host_and_reach_each_other() {
    let hosts = match Hosts::create(4) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("SKIPPED: cannot create network namespaces here: {e}");
            return;
        }
    };
    let started = Instant::now();
    // Cargo builds the examples on first use.
    example_path("server");
    eprintln!("examples built: {:?}", started.elapsed());
    let etcd = NsEtcd::start(&hosts, &ETCD_HOSTS);
    eprintln!("etcd with 3 members on 3 hosts: {:?}", started.elapsed());
    let endpoints = etcd.endpoints().join(",");
    let cluster = format!("multihost{}", std::process::id());
    let ip = |i: usize| hosts.ip(i).to_string();

    // Every server binds 0.0.0.0 (bus and admin) and joins through all three
    // members; they differ in what they are told to advertise.
    let nested = NESTED.to_string();
    let common_args = [
        "--tcp",
        "0.0.0.0:0",
        "--http",
        "0.0.0.0:0",
        "--etcd",
        &endpoints,
        "--cluster",
        &cluster,
        "--nested",
        &nested,
    ];
    // Bus TLS: one CA; each host's certificate names its address.
    let pki = Pki::new("multihost");
    let ca = pki.ca.cert.to_string_lossy().into_owned();
    let certs: Vec<CertFiles> = (0..4)
        .map(|i| pki.node(&format!("host{i}"), &ip(i)))
        .collect();
    let tls_args = |i: usize| -> Vec<String> {
        vec![
            "--tls-cert".into(),
            certs[i].cert.to_string_lossy().into_owned(),
            "--tls-key".into(),
            certs[i].key.to_string_lossy().into_owned(),
            "--tls-ca".into(),
            ca.clone(),
        ]
    };
    let told = |i: usize| format!("{}:0", ip(i));
    let extra: [Vec<String>; 4] = [
        // Host 0: both addresses given.
        vec![
            "--advertise".into(),
            told(0),
            "--advertise-http".into(),
            told(0),
        ],
        // Host 1: nothing given; it picks its host's address.
        vec![],
        // Host 2: only the admin address given.
        vec!["--advertise-http".into(), told(2)],
        // Host 3 (no etcd member): nothing given.
        vec![],
    ];
    let servers: Vec<Placed> = extra
        .iter()
        .enumerate()
        .map(|(host, extra)| {
            let tls = tls_args(host);
            let mut args: Vec<&str> = common_args.to_vec();
            args.extend(extra.iter().map(String::as_str));
            args.extend(tls.iter().map(String::as_str));
            let server = Server::start_cmd(
                &format!("host{host}"),
                hosts.exec(host, example_path("server")),
                &args,
            );
            assert!(
                server.addr.ip().is_unspecified(),
                "bound to {}",
                server.addr
            );
            let http = server.http.expect("an admin address");
            Placed {
                tcp: SocketAddr::new(hosts.ip(host), server.addr.port()),
                http: SocketAddr::new(hosts.ip(host), http.port()),
                server,
                host,
            }
        })
        .collect();
    eprintln!("4 servers started: {:?}", started.elapsed());
    let logs = || {
        let mut text = etcd.logs();
        for s in &servers {
            text += &format!(
                "--- server on host {} ({}):\n{}",
                s.host,
                s.tcp,
                read(&s.server.stderr)
            );
        }
        text
    };

    // The records, read with etcdctl on the host without a member: each
    // holds its host's address and the bound ports, never 0.0.0.0 or ::.
    let nodes_prefix = format!("/domi/{cluster}/nodes/");
    let records: BTreeMap<u16, serde_json::Value> =
        eventually("four node records in etcd", SETTLE, logs, || {
            let kvs = etcd.get_prefix(&hosts, CLIENT_HOST, &nodes_prefix);
            let records: BTreeMap<u16, serde_json::Value> = kvs
                .iter()
                .map(|(k, v)| {
                    let id = k.strip_prefix(&nodes_prefix).unwrap().parse().unwrap();
                    (id, serde_json::from_str(v).expect("a JSON record"))
                })
                .collect();
            if records.len() == 4 {
                Ok(records)
            } else {
                Err(format!("{kvs:?}"))
            }
        });
    for s in &servers {
        let r = records
            .get(&s.server.id)
            .unwrap_or_else(|| panic!("no record for node {} in {records:?}", s.server.id));
        assert_eq!(r["name"], format!("host{}", s.host), "{r}");
        assert_eq!(r["tcp"], s.tcp.to_string(), "host {}: {r}", s.host);
        assert_eq!(r["http"], s.http.to_string(), "host {}: {r}", s.host);
    }
    // Nothing under the cluster's prefix (ids included) holds an
    // unspecified address.
    for (k, v) in etcd.get_prefix(&hosts, CLIENT_HOST, &format!("/domi/{cluster}/")) {
        for bad in ["0.0.0.0", "[::]"] {
            assert!(!v.contains(bad), "{k} holds {bad}: {v}");
        }
    }
    eprintln!("records checked: {:?}", started.elapsed());

    // Every server learns every other one at its host's address.
    for s in &servers {
        eventually(
            &format!("host {}'s peer table", s.host),
            SETTLE,
            logs,
            || {
                let st = status(s);
                let peers = st["peers"].as_array().cloned().unwrap_or_default();
                for p in &peers {
                    let addr = p["address"].as_str().unwrap_or_default();
                    assert!(!unspecified(addr), "host {} lists {p}", s.host);
                }
                for o in servers.iter().filter(|o| o.host != s.host) {
                    let entry = peers
                        .iter()
                        .find(|p| p["id"] == o.server.id)
                        .ok_or_else(|| format!("node {} missing in {st}", o.server.id))?;
                    assert_eq!(entry["address"], o.tcp.to_string(), "host {}", s.host);
                }
                Ok(())
            },
        );
    }

    // A client bound to 0.0.0.0 on host 3 finds the four servers through
    // etcd and sends to each; each server's nested handler asks the others
    // for `pong`, so every host talks to every other one.
    let client_args = [
        "--tcp",
        "0.0.0.0:0",
        "--etcd",
        &endpoints,
        "--cluster",
        &cluster,
        "--providers",
        "4",
        "--channel",
        &nested,
        "--count",
        &REQUESTS.to_string(),
        "--concurrency",
        "4",
        "--timeout-ms",
        "5000",
        "--json",
    ];
    let mut client = hosts.exec(CLIENT_HOST, example_path("client"));
    client.args(client_args).args(tls_args(CLIENT_HOST));
    let ran = run_within(client, Duration::from_secs(30));
    assert_eq!(
        ran.code,
        Some(0),
        "the client failed: {}\n{}\n{}",
        ran.stdout,
        ran.stderr,
        logs()
    );
    let summary: serde_json::Value =
        serde_json::from_str(ran.stdout.trim()).expect("the client's JSON summary");
    assert_eq!(summary["replies"], REQUESTS, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    eprintln!("client done: {:?}", started.elapsed());

    // Each server answered the client and sent nested requests; each holds
    // a connection to every other server (over the routed addresses).
    for s in &servers {
        eventually(
            &format!("host {}'s connections", s.host),
            SETTLE,
            logs,
            || {
                let st = status(s);
                let counters = &st["counters"];
                if counters["replies"].as_u64().unwrap_or(0) == 0 {
                    return Err(format!("no replies: {st}"));
                }
                if counters["sent"].as_u64().unwrap_or(0) == 0 {
                    return Err(format!("no nested requests sent: {st}"));
                }
                assert_eq!(counters["closed_tls"], 0, "host {}: {st}", s.host);
                let peers = st["peers"].as_array().cloned().unwrap_or_default();
                for o in servers.iter().filter(|o| o.host != s.host) {
                    let connected = peers
                        .iter()
                        .any(|p| p["id"] == o.server.id && p["connected"] == true);
                    if !connected {
                        return Err(format!("not connected to host {}: {st}", o.host));
                    }
                }
                Ok(())
            },
        );
    }

    // TLS is really on: a plaintext HELLO to a server's routed address is
    // refused and counted.
    let refused_before = status(&servers[0]).get("counters").cloned();
    {
        use std::io::Write;
        let mut plain = std::net::TcpStream::connect(servers[0].tcp).expect("routed connect");
        plain
            .write_all(&common::raw::hello(&cluster))
            .expect("a plaintext HELLO");
        common::raw::assert_closed_within(plain, Duration::from_secs(5));
    }
    eventually(
        "the plaintext HELLO counted as refused",
        SETTLE,
        logs,
        || {
            let now = status(&servers[0])["counters"]["closed_tls"]
                .as_u64()
                .unwrap_or(0);
            if now > 0 {
                Ok(())
            } else {
                Err(format!("closed_tls 0; before: {refused_before:?}"))
            }
        },
    );

    // The client has left (its lease revoked): the four servers' records
    // again, none with an unspecified address.
    eventually("only the servers' records", SETTLE, logs, || {
        let kvs = etcd.get_prefix(&hosts, CLIENT_HOST, &format!("/domi/{cluster}/"));
        for (k, v) in &kvs {
            assert!(
                !v.contains("0.0.0.0") && !v.contains("[::]"),
                "{k} holds an unspecified address: {v}"
            );
        }
        let nodes = kvs.iter().filter(|(k, _)| k.starts_with(&nodes_prefix));
        if nodes.count() == 4 {
            Ok(())
        } else {
            Err(format!("{kvs:?}"))
        }
    });

    // On a host whose only addresses of a family are loopback or link-local
    // (IPv6 here), or told to advertise 0.0.0.0, a node refuses to start
    // before it joins: it writes nothing to etcd (the store's revision does
    // not move; lease keep-alives do not move it).
    let revision = || {
        let out = etcd.etcdctl(&hosts, CLIENT_HOST, &["get", "/", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl JSON");
        v["header"]["revision"].as_i64().expect("a revision")
    };
    let before = revision();
    for (name, args, says) in [
        (
            "v6-any",
            vec!["--tcp", "[::]:0"],
            "no up, non-loopback interface has an address of that family",
        ),
        (
            "advertise-any",
            vec!["--tcp", "0.0.0.0:0", "--advertise", "0.0.0.0:0"],
            "cannot advertise the unspecified address",
        ),
    ] {
        let mut cmd = hosts.exec(CLIENT_HOST, example_path("server"));
        cmd.args(["--name", name])
            .args(args)
            .args(["--etcd", &endpoints, "--cluster", &cluster]);
        let ran = run_within(cmd, Duration::from_secs(30));
        assert!(
            ran.code.is_some_and(|c| c != 0) && !ran.stdout.contains("listening"),
            "{name}: {ran:?}"
        );
        assert!(ran.stderr.contains(says), "{name}: {}", ran.stderr);
    }
    assert_eq!(revision(), before, "a refused node wrote to etcd");
    eprintln!("done: {:?}", started.elapsed());
}
