//! Bus TLS on vs off: the single-shard one-way (64 B msg/s, 1 KiB MB/s) and
//! 1-in-flight round-trip (p50, p99) workloads with mutual TLS on both nodes,
//! alternating with a plaintext pair, reported as ratios to it.
//! Certificates are made at run time (rcgen) in a temporary directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::bus::{Client, ServerProcess};
use crate::report::Report;
use crate::{server_args, Plan};

/// Progress steps per repetition.
pub const STEPS: usize = 2;

/// A CA and two node certificates (`server`, `client`) for `127.0.0.1`,
/// as PEM files in a temporary directory removed on drop.
pub struct BenchPki {
    /// The directory.
    pub dir: PathBuf,
}

impl BenchPki {
    /// Makes the CA and the certificates.
    pub fn new() -> Result<BenchPki> {
        let dir = std::env::temp_dir().join(format!("domi-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "domi bench CA");
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        for name in ["server", "client"] {
            let key = KeyPair::generate()?;
            let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])?
                .signed_by(&key, &ca, &ca_key)?;
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())?;
        }
        Ok(BenchPki { dir })
    }

    /// The TLS settings of node `name` (`server` or `client`) from `dir`.
    pub fn config(dir: &Path, name: &str) -> Result<domi::TlsConfig> {
        domi::TlsConfig::from_pem_files(
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
            dir.join("ca.pem"),
        )
        .with_context(|| format!("bus TLS from {}", dir.display()))
    }
}

impl Drop for BenchPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One node pair's figures: one-way 64 B msg/s, 1 KiB MB/s, RTT p50/p99 µs.
#[derive(Default)]
struct Figures {
    m64: Vec<f64>,
    mb1k: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Figures {
    fn measure(
        &mut self,
        client: &Client,
        plan: &Plan,
        what: &str,
        bar: &ProgressBar,
    ) -> Result<()> {
        let (n, warm) = plan.round_trips();
        bar.set_message(format!("{what}: one-way 64 B"));
        self.m64
            .push(client.one_way(64, plan.one_way_count(64))?.msgs_per_sec);
        bar.set_message(format!("{what}: one-way 1 KiB"));
        self.mb1k
            .push(client.one_way(1024, plan.one_way_count(1024))?.mb_per_sec);
        bar.set_message(format!("{what}: request, 1 in flight"));
        let (h, _) = client.request_reply(64, n, warm, 1)?;
        self.p50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        self.p99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        Ok(())
    }
}

/// Measures the TLS rows (see the module docs). A plaintext pair runs next
/// to the TLS pair and the two alternate, workload by workload, so each
/// ratio compares figures taken minutes apart at most on this noisy machine.
pub fn run(plan: &Plan, report: &mut Report, bar: &ProgressBar) -> Result<()> {
    let pki = BenchPki::new()?;
    let plain_server = ServerProcess::start(&server_args(1, vec![plan.sc], plan.spin_us))?;
    let plain = Client::start(plain_server.addr, 1, &[plan.cc], plan.spin())?;
    let mut args = server_args(1, vec![plan.sc], plan.spin_us);
    args.tls_dir = Some(pki.dir.clone());
    let tls_server = ServerProcess::start(&args)?;
    let tls = Client::start_with(
        tls_server.addr,
        1,
        &[plan.cc],
        plan.spin(),
        Some(BenchPki::config(&pki.dir, "client")?),
    )?;
    let (mut off, mut on) = (Figures::default(), Figures::default());
    for _ in 0..plan.reps {
        off.measure(&plain, plan, "plaintext (next to TLS)", bar)?;
        bar.inc(1);
        on.measure(&tls, plan, "TLS", bar)?;
        bar.inc(1);
    }
    let closed = tls.node.stats().closed_tls;
    anyhow::ensure!(closed == 0, "{closed} TLS connections refused in the bench");
    tls.node.stop();
    plain.node.stop();
    drop((tls_server, plain_server));
    let rows = [
        ("64_msgs", "notify 64 B", "msg/s", true, off.m64, on.m64),
        ("1024_mbs", "notify 1 KiB", "MB/s", true, off.mb1k, on.mb1k),
        (
            "rr1_p50",
            "request 1 in flight p50",
            "µs",
            false,
            off.p50,
            on.p50,
        ),
        (
            "rr1_p99",
            "request 1 in flight p99",
            "µs",
            false,
            off.p99,
            on.p99,
        ),
    ];
    for (key, label, unit, higher, plain, tls) in rows {
        let base = format!("tls_off_{key}");
        report.add(
            &base,
            &format!("plaintext bus {label} (alternating with TLS)"),
            unit,
            higher,
            plain,
            None,
        );
        report.add(
            &format!("tls_{key}"),
            &format!("TLS bus {label}"),
            unit,
            higher,
            tls,
            Some(&base),
        );
    }
    Ok(())
}

/// The targets for TLS, against plaintext in the same run.
pub fn targets(report: &mut Report) {
    report.target_ratio(
        "TLS request 1 in flight p50 ≤ 1.3× plaintext",
        "tls_rr1_p50",
        "tls_off_rr1_p50",
        1.3,
        false,
    );
    report.target_ratio(
        "TLS one-way 1 KiB ≥ 0.5× plaintext MB/s",
        "tls_1024_mbs",
        "tls_off_1024_mbs",
        0.5,
        true,
    );
}
