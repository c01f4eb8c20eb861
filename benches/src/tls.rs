//! Bus TLS on vs off: the single-shard one-way (64 B msg/s, 1 KiB MB/s) and
//! 1-in-flight round-trip (p50, p99) workloads again with mutual TLS on both
//! nodes, reported as ratios to the plaintext figures of the same run.
//! Certificates are made at run time (rcgen) in a temporary directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::bus::{Client, ServerProcess};
use crate::report::Report;
use crate::{server_args, Plan};

/// Progress steps per repetition.
pub const STEPS: usize = 3;

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

/// Measures the TLS rows (see the module docs).
pub fn run(plan: &Plan, report: &mut Report, bar: &ProgressBar) -> Result<()> {
    let pki = BenchPki::new()?;
    let mut args = server_args(1, vec![plan.sc], plan.spin_us);
    args.tls_dir = Some(pki.dir.clone());
    let server = ServerProcess::start(&args)?;
    let client = Client::start_with(
        server.addr,
        1,
        &[plan.cc],
        plan.spin(),
        Some(BenchPki::config(&pki.dir, "client")?),
    )?;
    let (n, warm) = plan.round_trips();
    let (mut m64, mut mb1k, mut p50, mut p99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plan.reps {
        bar.set_message("TLS: one-way 64 B");
        m64.push(client.one_way(64, plan.one_way_count(64))?.msgs_per_sec);
        bar.inc(1);
        bar.set_message("TLS: one-way 1 KiB");
        mb1k.push(client.one_way(1024, plan.one_way_count(1024))?.mb_per_sec);
        bar.inc(1);
        bar.set_message("TLS: request, 1 in flight");
        let (h, _) = client.request_reply(64, n, warm, 1)?;
        p50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        p99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        bar.inc(1);
    }
    let closed = client.node.stats().closed_tls;
    anyhow::ensure!(closed == 0, "{closed} TLS connections refused in the bench");
    client.node.stop();
    drop(server);
    let rows = [
        (
            "tls_64_msgs",
            "TLS bus notify 64 B",
            "msg/s",
            true,
            m64,
            "sweep_bus_64_msgs",
        ),
        (
            "tls_1024_mbs",
            "TLS bus notify 1 KiB",
            "MB/s",
            true,
            mb1k,
            "sweep_bus_1024_mbs",
        ),
        (
            "tls_rr1_p50",
            "TLS bus request 1 in flight p50",
            "µs",
            false,
            p50,
            "rr1_p50",
        ),
        (
            "tls_rr1_p99",
            "TLS bus request 1 in flight p99",
            "µs",
            false,
            p99,
            "rr1_p99",
        ),
    ];
    for (key, label, unit, higher, samples, base) in rows {
        report.add(key, label, unit, higher, samples, Some(base));
    }
    Ok(())
}

/// The targets for TLS, against plaintext in the same run.
pub fn targets(report: &mut Report) {
    report.target_ratio(
        "TLS request 1 in flight p50 ≤ 1.3× plaintext",
        "tls_rr1_p50",
        "rr1_p50",
        1.3,
        false,
    );
    report.target_ratio(
        "TLS one-way 1 KiB ≥ 0.5× plaintext MB/s",
        "tls_1024_mbs",
        "sweep_bus_1024_mbs",
        0.5,
        true,
    );
}
