//! Joining through a secured etcd: TLS with client certificates
//! (`--client-cert-auth`) and user/password authentication. Real etcd
//! processes; certificates made at test time by the `openssl` CLI (no key is
//! committed). Bad credentials must fail `start()` at once with
//! [`MembershipError::Authentication`], not after the join timeout.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::{CertFiles, Pki};
use common::etcd::Etcd;
use common::procs::{self, Server};
use common::wait_until;
use domi::{Channel, Handler, MembershipError, Node, NodeBuilder, StartError};
use domi_cluster::etcd::{EtcdAuth, EtcdTls, PemSource, PASSWORD_ENV};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(5);
/// Generous: the machine may be busy with other tests.
const SETTLE: Duration = Duration::from_secs(20);
/// A refused TLS handshake must fail within this (the default join timeout
/// is 30 s).
const TLS_FAILS_WITHIN: Duration = Duration::from_secs(5);
/// A wrong password must fail within this.
const AUTH_FAILS_WITHIN: Duration = Duration::from_secs(2);

fn node(etcd: &Etcd, name: &str, cluster: &str) -> NodeBuilder {
    common::test_logs();
    Node::builder(name)
        .shards(1)
        .small()
        .cluster(cluster)
        .etcd([etcd.endpoint()])
}

/// TLS trusting `ca`, presenting `client` if given.
fn tls(ca: &CertFiles, client: Option<&CertFiles>) -> EtcdTls {
    let tls = EtcdTls::new(ca.cert.as_path());
    match client {
        Some(c) => tls.with_client_cert(c.cert.as_path(), c.key.as_path()),
        None => tls,
    }
}

/// Starts `builder` serving `CH` with `pong`; counts what it handled.
fn serve(builder: NodeBuilder) -> (Node, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let node = builder
        .subscribe(
            CH,
            Handler::sync(move |req| {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = req.reply(b"pong");
            }),
        )
        .start()
        .expect("the server joins through the secured etcd");
    (node, handled)
}

/// The membership error of a failed start.
fn membership_error(r: Result<Node, StartError>) -> MembershipError {
    match r {
        Err(StartError::Core(domi_core::StartError::Membership(e))) => e,
        Err(other) => panic!("expected a membership error, got {other:?}"),
        Ok(n) => panic!("expected a membership error, but node {} started", n.id()),
    }
}

/// Starts `builder`, expecting an authentication error within `within`;
/// its reason and how long it took.
fn expect_authentication_error(builder: NodeBuilder, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let r = builder.start();
    let took = started.elapsed();
    let reason = match membership_error(r) {
        MembershipError::Authentication { store, reason } => {
            assert!(store.contains("etcd at"), "{store}");
            reason
        }
        other => panic!("expected Authentication, got {other:?}"),
    };
    assert!(
        took < within,
        "failed in {took:?}, not within {within:?}: {reason}"
    );
    eprintln!("failed as expected in {took:?}: {reason}");
    (reason, took)
}

fn records(etcd: &Etcd, cluster: &str) -> usize {
    etcd.get_prefix(&format!("/domi/{cluster}/nodes/")).len()
}

// ---- TLS with client certificates -------------------------------------

#[test]
fn nodes_register_and_serve_over_mutual_tls() {
    let pki = Pki::new("domi");
    let etcd = Etcd::start_tls(&pki.server, &pki.ca.cert, &pki.client);
    assert!(etcd.endpoint().starts_with("https://"));
    let second = pki.client("second-client", "domi-client");
    let (server, handled) = serve(
        node(&etcd, "server", "mtls")
            .etcd_config(|c| c.tls = Some(tls(&pki.ca, Some(&pki.client)))),
    );
    let client = node(&etcd, "client", "mtls")
        .etcd_config(|c| c.tls = Some(tls(&pki.ca, Some(&second))))
        .start()
        .expect("the client joins through the secured etcd");
    assert_ne!(server.id(), client.id());
    wait_until("both records", SETTLE, || records(&etcd, "mtls") == 2);
    client
        .wait_for_provider(CH, SETTLE)
        .expect("the client learns the server from the watch over TLS");
    assert_eq!(client.request(CH, b"ping", T), Ok(b"pong".to_vec()));
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    client.stop();
    wait_until("the client's record removed", SETTLE, || {
        records(&etcd, "mtls") == 1
    });
    server.stop();
}

#[test]
fn a_node_without_a_client_certificate_fails_fast() {
    let pki = Pki::new("domi");
    let etcd = Etcd::start_tls(&pki.server, &pki.ca.cert, &pki.client);
    let (reason, _) = expect_authentication_error(
        node(&etcd, "anonymous", "nocert").etcd_config(|c| c.tls = Some(tls(&pki.ca, None))),
        TLS_FAILS_WITHIN,
    );
    assert!(reason.contains("client certificate"), "{reason}");
    assert!(reason.contains("none is configured"), "{reason}");
    assert_eq!(records(&etcd, "nocert"), 0);
}

#[test]
fn a_client_certificate_from_another_ca_fails_fast() {
    let pki = Pki::new("domi");
    let other = pki.other_ca("other");
    let etcd = Etcd::start_tls(&pki.server, &pki.ca.cert, &pki.client);
    let (reason, _) = expect_authentication_error(
        node(&etcd, "impostor", "otherca")
            .etcd_config(|c| c.tls = Some(tls(&pki.ca, Some(&other.client)))),
        TLS_FAILS_WITHIN,
    );
    assert!(
        reason.contains("refused the TLS client certificate"),
        "{reason}"
    );
    assert_eq!(records(&etcd, "otherca"), 0);
}

#[test]
fn an_etcd_certificate_from_an_untrusted_ca_fails_fast() {
    let pki = Pki::new("domi");
    let other = pki.other_ca("other");
    let etcd = Etcd::start_tls(&pki.server, &pki.ca.cert, &pki.client);
    // The node trusts another CA than the one that signed etcd's certificate.
    let (reason, _) = expect_authentication_error(
        node(&etcd, "suspicious", "untrusted")
            .etcd_config(|c| c.tls = Some(tls(&other.ca, Some(&pki.client)))),
        TLS_FAILS_WITHIN,
    );
    assert!(reason.contains("server certificate"), "{reason}");
    assert!(reason.contains("UnknownIssuer"), "{reason}");
}

#[test]
fn unusable_tls_settings_fail_at_once_naming_the_file() {
    let pki = Pki::new("domi");
    let etcd = Etcd::start_tls(&pki.server, &pki.ca.cert, &pki.client);
    let config_error = |builder: NodeBuilder| -> String {
        let started = Instant::now();
        let e = membership_error(builder.start());
        assert!(started.elapsed() < Duration::from_secs(2), "{e}");
        match e {
            MembershipError::Config { reason } => reason,
            other => panic!("expected Config, got {other:?}"),
        }
    };
    let missing = pki.dir().join("missing.crt");
    let reason = config_error(
        node(&etcd, "a", "cfg").etcd_config(|c| c.tls = Some(EtcdTls::new(missing.as_path()))),
    );
    assert!(reason.contains(&missing.display().to_string()), "{reason}");

    // A key file without a key (the certificate twice).
    let reason = config_error(node(&etcd, "b", "cfg").etcd_config(|c| {
        c.tls = Some(
            EtcdTls::new(pki.ca.cert.as_path())
                .with_client_cert(pki.client.cert.as_path(), pki.client.cert.as_path()),
        )
    }));
    assert!(reason.contains("no usable private key"), "{reason}");
    assert!(
        reason.contains(&pki.client.cert.display().to_string()),
        "{reason}"
    );

    // A key that is not the certificate's.
    let reason = config_error(node(&etcd, "c", "cfg").etcd_config(|c| {
        c.tls = Some(
            EtcdTls::new(pki.ca.cert.as_path())
                .with_client_cert(pki.client.cert.as_path(), pki.server.key.as_path()),
        )
    }));
    assert!(reason.contains("cannot be used together"), "{reason}");

    // Not PEM at all.
    let reason =
        config_error(node(&etcd, "d", "cfg").etcd_config(|c| {
            c.tls = Some(EtcdTls::new(PemSource::Pem("not a certificate".into())))
        }));
    assert!(reason.contains("no PEM CERTIFICATE"), "{reason}");

    // https:// without TLS settings, TLS settings with http://.
    let reason = config_error(node(&etcd, "e", "cfg"));
    assert!(reason.contains("https://"), "{reason}");
    let reason = config_error(
        node(&etcd, "f", "cfg")
            .etcd(["http://127.0.0.1:2379"])
            .etcd_config(|c| c.tls = Some(tls(&pki.ca, Some(&pki.client)))),
    );
    assert!(reason.contains("http://"), "{reason}");
    assert_eq!(records(&etcd, "cfg"), 0);
}

// ---- user and password ----------------------------------------------------

const PASSWORD: &str = "s3cret-Pa55";

#[test]
fn nodes_register_with_the_right_password_including_the_server_example() {
    let mut etcd = Etcd::start();
    etcd.enable_auth(PASSWORD);
    let client = node(&etcd, "client", "auth")
        .etcd_config(|c| c.auth = Some(EtcdAuth::new("root", PASSWORD)))
        .start()
        .expect("a node with the right password joins");
    wait_until("the client's record", SETTLE, || {
        records(&etcd, "auth") == 1
    });

    // The server example takes the password from the environment only.
    let endpoint = etcd.endpoint();
    let mut cmd = procs::example("server");
    cmd.env(PASSWORD_ENV, PASSWORD);
    let server = Server::start_cmd(
        "example",
        cmd,
        &[
            "--tcp",
            "127.0.0.1:0",
            "--cluster",
            "auth",
            "--etcd",
            &endpoint,
            "--etcd-user",
            "root",
        ],
    );
    assert_ne!(client.id().get(), server.id);
    wait_until("both records", SETTLE, || records(&etcd, "auth") == 2);
    client
        .wait_for_provider(CH, SETTLE)
        .expect("the client learns the example server from the watch");
    assert_eq!(client.request(CH, b"ping", T), Ok(b"pong".to_vec()));
    let logged = procs::read(&server.stderr);
    assert!(!logged.contains(PASSWORD), "the password was logged");
}

#[test]
fn a_wrong_password_fails_at_once_with_an_authentication_error() {
    let mut etcd = Etcd::start();
    etcd.enable_auth(PASSWORD);
    let (reason, _) = expect_authentication_error(
        node(&etcd, "guesser", "wrongpw")
            .etcd_config(|c| c.auth = Some(EtcdAuth::new("root", "not-the-password"))),
        AUTH_FAILS_WITHIN,
    );
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(reason.contains("root"), "names the user: {reason}");
    assert!(!reason.contains("not-the-password"), "{reason}");

    let (reason, _) = expect_authentication_error(
        node(&etcd, "nobody", "wrongpw")
            .etcd_config(|c| c.auth = Some(EtcdAuth::new("nobody", PASSWORD))),
        AUTH_FAILS_WITHIN,
    );
    assert!(reason.contains("nobody"), "{reason}");
    assert_eq!(records(&etcd, "wrongpw"), 0);
}

/// Runs the server example with `args` and, if given, `DOMI_ETCD_PASSWORD`
/// set to `password`, expecting it to exit within `within`: its exit code,
/// what it logged, how long it ran.
fn run_server_example(
    args: &[&str],
    password: Option<&str>,
    within: Duration,
) -> (Option<i32>, String, Duration) {
    let mut cmd = procs::example("server");
    cmd.args(args)
        .env_remove(PASSWORD_ENV)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env(PASSWORD_ENV, p);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("the server example runs");
    let stderr = procs::drain(child.stderr.take().expect("piped stderr"));
    let deadline = started + within;
    let code = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server example did not exit within {within:?}; stderr:\n{}",
                procs::read(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    // The pipe closes with the process; give the reader a moment to finish.
    wait_until("the example's stderr", T, || {
        !procs::read(&stderr).is_empty()
    });
    (code, procs::read(&stderr), took)
}

#[test]
fn the_server_example_refuses_a_wrong_or_missing_password_at_once() {
    let mut etcd = Etcd::start();
    etcd.enable_auth(PASSWORD);
    let endpoint = etcd.endpoint();
    let args = [
        "--tcp",
        "127.0.0.1:0",
        "--cluster",
        "exwrong",
        "--etcd",
        &endpoint,
        "--etcd-user",
        "root",
    ];
    // Well within the 30 s join timeout; a process also builds a runtime.
    let within = Duration::from_secs(10);
    let (code, stderr, took) = run_server_example(&args, Some("wrong"), within);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("authentication with etcd"),
        "names authentication: {stderr}"
    );
    eprintln!("the example refused a wrong password in {took:?}");

    let (code, stderr, _) = run_server_example(&args, None, within);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(PASSWORD_ENV),
        "names the variable: {stderr}"
    );
    assert_eq!(records(&etcd, "exwrong"), 0);
}

#[test]
fn a_node_rejoins_a_restarted_etcd_with_its_password() {
    // etcd's simple auth tokens live in memory: after a restart every token
    // is invalid and the node must authenticate again by itself.
    let mut etcd = Etcd::start();
    etcd.enable_auth(PASSWORD);
    let auth = || EtcdAuth::new("root", PASSWORD);
    let (server, _) =
        serve(node(&etcd, "server", "restart").etcd_config(|c| c.auth = Some(auth())));
    etcd.restart();
    // A node joining after the restart is seen by the old one: its watch
    // was reopened, which needs a fresh token.
    let late = node(&etcd, "late", "restart")
        .etcd_config(|c| c.auth = Some(auth()))
        .start()
        .expect("a node joins the restarted etcd");
    late.wait_for_provider(CH, SETTLE)
        .expect("the late node sees the server");
    assert_eq!(late.request(CH, b"ping", T), Ok(b"pong".to_vec()));
    wait_until("both records after the restart", SETTLE, || {
        records(&etcd, "restart") == 2
    });
    server.stop();
    wait_until(
        "the server's record removed (its lease revoked)",
        SETTLE,
        || records(&etcd, "restart") == 1,
    );
}

// ---- both: TLS with client certificates and a password --------------------

#[test]
fn the_server_example_joins_an_etcd_with_tls_and_a_password() {
    let pki = Pki::new("domi");
    let mut etcd = Etcd::start_tls(&pki.server, &pki.ca.cert, &pki.client);
    etcd.enable_auth(PASSWORD);
    let endpoint = etcd.endpoint();
    let node_cert = pki.client("example", "domi-example");
    let path = |p: &std::path::Path| p.display().to_string();
    let (ca, cert, key) = (
        path(&pki.ca.cert),
        path(&node_cert.cert),
        path(&node_cert.key),
    );
    let mut cmd = procs::example("server");
    cmd.env(PASSWORD_ENV, PASSWORD);
    let server = Server::start_cmd(
        "example",
        cmd,
        &[
            "--tcp",
            "127.0.0.1:0",
            "--cluster",
            "both",
            "--etcd",
            &endpoint,
            "--etcd-ca",
            &ca,
            "--etcd-cert",
            &cert,
            "--etcd-key",
            &key,
            "--etcd-user",
            "root",
        ],
    );
    let client = node(&etcd, "client", "both")
        .etcd_config(|c| {
            c.tls = Some(tls(&pki.ca, Some(&pki.client)));
            c.auth = Some(EtcdAuth::new("root", PASSWORD));
        })
        .start()
        .expect("a node with TLS and a password joins");
    assert_ne!(client.id().get(), server.id);
    client
        .wait_for_provider(CH, SETTLE)
        .expect("the client learns the example server");
    assert_eq!(client.request(CH, b"ping", T), Ok(b"pong".to_vec()));

    // The right certificate with a wrong password is still refused at once.
    let (reason, _) = expect_authentication_error(
        node(&etcd, "guesser", "both").etcd_config(|c| {
            c.tls = Some(tls(&pki.ca, Some(&pki.client)));
            c.auth = Some(EtcdAuth::new("root", "wrong"));
        }),
        AUTH_FAILS_WITHIN,
    );
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(!procs::read(&server.stderr).contains(PASSWORD));
}
