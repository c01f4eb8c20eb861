//! `domictl` against a real, private etcd: three `server` processes listed
//! as a table and as JSON, `status` by name, `pause`/`resume` seen in the
//! records, `watch` seeing a join, one `request` through a temporary node,
//! `drain` making a server exit; typed errors for an unknown node, an
//! unreachable etcd, a node without admin address, a shared name; and a
//! secured etcd (TLS with client certificates and a user).
//!
//! The commands run through the library entry point (`domictl::run`), which
//! `main.rs` only wraps; `domictl/tests/cli.rs` runs the binary itself.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use common::certs::Pki;
use common::etcd::Etcd;
use common::procs::Server;
use common::wait_until;
use domi::{Channel, EtcdAuth, EtcdTls, Handler, Node};
use domictl::{run, Cli, CtlError, Environment};

const TOKEN: &str = "ctl-token";
/// Generous: the machine may be busy with other tests.
const T: Duration = Duration::from_secs(30);

/// Runs `domictl --etcd <endpoint> --cluster <cluster> <args>` with the
/// admin token set; what it printed.
fn ctl(endpoint: &str, cluster: &str, args: &[&str]) -> Result<String, CtlError> {
    ctl_env(endpoint, cluster, args, &env_with(Some(TOKEN), None))
}

fn env_with(token: Option<&str>, password: Option<&str>) -> Environment {
    Environment {
        admin_token: token.map(Into::into),
        etcd_password: password.map(Into::into),
    }
}

fn ctl_env(
    endpoint: &str,
    cluster: &str,
    args: &[&str],
    env: &Environment,
) -> Result<String, CtlError> {
    let mut out = Vec::new();
    ctl_to(endpoint, cluster, args, env, &mut out)?;
    Ok(String::from_utf8(out).expect("UTF-8 output"))
}

fn ctl_to(
    endpoint: &str,
    cluster: &str,
    args: &[&str],
    env: &Environment,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let mut argv = vec!["domictl", "--etcd", endpoint, "--cluster", cluster];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).expect("valid arguments");
    run(&cli, env, out)
}

/// A `server` example in `cluster`, with admin endpoints (and the token)
/// when `admin`.
fn server(etcd: &Etcd, name: &str, cluster: &str, admin: bool) -> Server {
    let endpoint = etcd.endpoint();
    let mut args = vec!["--etcd", &endpoint, "--cluster", cluster, "--spin-us", "0"];
    if admin {
        args.extend(["--http", "127.0.0.1:0", "--admin-token", TOKEN]);
    }
    Server::start_with(name, &args)
}

/// `domictl nodes --json`, parsed.
fn nodes_json(endpoint: &str, cluster: &str) -> Vec<serde_json::Value> {
    let out = ctl(endpoint, cluster, &["nodes", "--json"]).expect("nodes --json");
    serde_json::from_str(&out).expect("a JSON array")
}

/// The state in node `id`'s record in etcd, if it has one.
fn record_state(etcd: &Etcd, cluster: &str, id: u16) -> Option<String> {
    let value = etcd.get(&format!("/domi/{cluster}/nodes/{id}"))?;
    let v: serde_json::Value = serde_json::from_str(&value).expect("records are JSON");
    v["state"].as_str().map(str::to_owned)
}

/// A writer shared with the thread running `watch`.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn three_servers_listed_shown_paused_resumed_watched_asked_and_drained() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let c = "ctl";
    let servers: Vec<Server> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|name| server(&etcd, name, c, true))
        .collect();
    wait_until("three records", T, || nodes_json(&ep, c).len() == 3);

    // The table: a header and one aligned row per server.
    let table = ctl(&ep, c, &["nodes"]).expect("nodes");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let header = lines[0];
    assert!(
        header.starts_with("ID  NAME ") && header.ends_with("CHANNELS  UPTIME"),
        "{table}"
    );
    let admin_col = header.find("ADMIN").expect("an ADMIN column");
    for (s, name) in servers.iter().zip(["alpha", "beta", "gamma"]) {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("a row for {name}:\n{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let admin = s.http.expect("an admin address").to_string();
        let want = [
            &s.id.to_string(),
            name,
            &s.addr.to_string(),
            &admin,
            "serving",
            "50",
        ];
        assert_eq!(cells[..6], want, "{table}");
        assert_eq!(row.find(&admin), Some(admin_col), "aligned:\n{table}");
    }

    // JSON: the same nodes, for scripts.
    let json = nodes_json(&ep, c);
    for s in &servers {
        let n = json
            .iter()
            .find(|n| n["id"] == s.id)
            .unwrap_or_else(|| panic!("node {} in {json:?}", s.id));
        assert_eq!(n["bus"], s.addr.to_string());
        assert_eq!(n["admin"], s.http.unwrap().to_string());
        assert_eq!(n["state"], "serving");
        assert_eq!(n["channels"], serde_json::json!([50]));
        assert!(n["uptime_s"].as_u64().is_some(), "{n}");
    }

    // status by name: the node's own answer.
    let status: serde_json::Value =
        serde_json::from_str(&ctl(&ep, c, &["status", "beta"]).expect("status")).expect("JSON");
    assert_eq!(status["name"], "beta");
    assert_eq!(status["id"], servers[1].id);
    assert_eq!(status["cluster"], c);

    // pause by id: the record says paused; resume: serving again.
    let alpha = servers[0].id;
    let out = ctl(&ep, c, &["pause", &alpha.to_string()]).expect("pause");
    assert!(out.contains("paused"), "{out}");
    wait_until("alpha's record paused", T, || {
        record_state(&etcd, c, alpha).as_deref() == Some("paused")
    });
    let paused = nodes_json(&ep, c);
    assert!(paused
        .iter()
        .any(|n| n["id"] == alpha && n["state"] == "paused"));
    // Without the token the node refuses.
    let refused = ctl_env(&ep, c, &["resume", "alpha"], &env_with(None, None));
    assert!(
        matches!(refused, Err(CtlError::Admin { status: 401, id, .. }) if id == alpha),
        "{refused:?}"
    );
    ctl(&ep, c, &["resume", "alpha"]).expect("resume");
    wait_until("alpha's record serving", T, || {
        record_state(&etcd, c, alpha).as_deref() == Some("serving")
    });

    // watch, bounded: started before a fourth server, it sees that join.
    let buf = Shared::default();
    let watcher = {
        let (ep, mut out) = (ep.clone(), buf.clone());
        std::thread::spawn(move || {
            let env = env_with(None, None);
            ctl_to(
                &ep,
                "ctl",
                &["watch", "--count", "1", "--for", "60s"],
                &env,
                &mut out,
            )
        })
    };
    wait_until("watch's header", T, || {
        buf.text().starts_with("# cluster ctl: 3 node(s)")
    });
    let mut delta = server(&etcd, "delta", c, true);
    watcher.join().expect("the watch thread").expect("watch");
    let seen = buf.text();
    let change = seen.lines().nth(1).unwrap_or_default();
    assert!(
        change.starts_with(&format!("joined  {} delta serving", delta.id)),
        "{seen}"
    );

    // One request through a temporary node.
    let out = ctl(&ep, c, &["request", "50", "ping", "--timeout", "20s"]).expect("request");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pong"), "{out}");
    assert!(
        lines.next().is_some_and(|l| l.starts_with("latency ")),
        "{out}"
    );

    // drain by name: the process exits 0 and its record goes.
    let out = ctl(&ep, c, &["drain", "delta"]).expect("drain");
    assert!(out.contains("draining"), "{out}");
    assert_eq!(delta.exit_code(T), Some(0), "delta exits after its drain");
    wait_until("delta's record gone", T, || {
        record_state(&etcd, c, delta.id).is_none()
    });
    // The temporary node left too: the three servers remain.
    wait_until("three nodes again", T, || nodes_json(&ep, c).len() == 3);

    match ctl(&ep, c, &["pause", "epsilon"]) {
        Err(CtlError::UnknownNode {
            node,
            cluster,
            known,
        }) => {
            assert_eq!((node.as_str(), cluster.as_str()), ("epsilon", c));
            assert_eq!(known.len(), 3, "{known:?}");
        }
        other => panic!("expected UnknownNode, got {other:?}"),
    }
}

#[test]
fn unreachable_etcd_missing_admin_address_and_shared_names_are_typed_errors() {
    // Nobody listens on a reserved etcd's port: a quick, typed failure.
    let down = Etcd::reserve();
    let started = Instant::now();
    let r = ctl(&down.endpoint(), "x", &["nodes"]);
    assert!(
        matches!(&r, Err(CtlError::EtcdUnreachable { endpoints, .. }) if endpoints == &[down.endpoint()]),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let c = "plain";
    let one = server(&etcd, "plain", c, false);
    let two = server(&etcd, "plain", c, false);
    wait_until("two records", T, || nodes_json(&ep, c).len() == 2);
    let r = ctl(&ep, c, &["status", &one.id.to_string()]);
    assert!(
        matches!(&r, Err(CtlError::NoAdminAddress { id, name }) if *id == one.id && name == "plain"),
        "{r:?}"
    );
    let table = ctl(&ep, c, &["nodes"]).expect("nodes");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.split_whitespace().nth(3) == Some("-")),
        "no admin column value:\n{table}"
    );
    match ctl(&ep, c, &["drain", "plain"]) {
        Err(CtlError::AmbiguousName { name, mut ids }) => {
            ids.sort_unstable();
            let mut want = vec![one.id, two.id];
            want.sort_unstable();
            assert_eq!((name.as_str(), ids), ("plain", want));
        }
        other => panic!("expected AmbiguousName, got {other:?}"),
    }
    assert!(matches!(
        ctl(&ep, "empty", &["status", "0"]),
        Err(CtlError::UnknownNode { known, .. }) if known.is_empty()
    ));
}

#[test]
fn a_secured_etcd_is_read_with_the_same_flags_as_the_examples() {
    const PASSWORD: &str = "ctl-secret";
    let pki = Pki::new("domictl");
    let mut etcd = Etcd::start_tls(&pki.server, &pki.ca.cert, &pki.client);
    etcd.enable_auth(PASSWORD);
    let ep = etcd.endpoint();
    let c = "sec";
    let (ca, cert, key) = (
        pki.ca.cert.display().to_string(),
        pki.client.cert.display().to_string(),
        pki.client.key.display().to_string(),
    );
    let tls = EtcdTls::new(ca.as_str()).with_client_cert(cert.as_str(), key.as_str());
    let node = Node::builder("secured")
        .shards(1)
        .small()
        .spin_before_park(Duration::ZERO)
        .cluster(c)
        .etcd([ep.clone()])
        .etcd_config(|e| {
            e.tls = Some(tls);
            e.auth = Some(EtcdAuth::new("root", PASSWORD));
        })
        .subscribe(
            Channel(50),
            Handler::sync(|req| {
                let _ = req.reply(b"pong");
            }),
        )
        .start()
        .expect("the node joins the secured etcd");
    let flags = [
        "--etcd-ca",
        &ca,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
        "--etcd-user",
        "root",
    ];
    let with = |extra: &[&str], password: Option<&str>| {
        let args: Vec<&str> = flags.iter().copied().chain(extra.iter().copied()).collect();
        ctl_env(&ep, c, &args, &env_with(None, password))
    };
    wait_until("the node's record", T, || {
        with(&["nodes"], Some(PASSWORD)).is_ok_and(|t| t.contains("secured"))
    });
    let out = with(&["request", "50", "ping"], Some(PASSWORD)).expect("request");
    assert!(out.starts_with("pong\n"), "{out}");

    // A wrong password, or no client certificate: refused at once, typed.
    let started = Instant::now();
    let r = with(&["nodes"], Some("wrong"));
    assert!(matches!(r, Err(CtlError::Auth { .. })), "{r:?}");
    let r = ctl_env(
        &ep,
        c,
        &["--etcd-ca", &ca, "--etcd-user", "root", "nodes"],
        &env_with(None, Some(PASSWORD)),
    );
    assert!(matches!(r, Err(CtlError::Auth { .. })), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The password only from the environment: without it, a settings error.
    let r = with(&["nodes"], None);
    assert!(
        matches!(&r, Err(CtlError::Config { reason }) if reason.contains("DOMI_ETCD_PASSWORD")),
        "{r:?}"
    );
    node.stop();
}
