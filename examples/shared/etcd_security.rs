//! The etcd security flags shared by the `server` and `client` examples:
//! TLS with a client certificate, and a user whose password comes from the
//! environment (`DOMI_ETCD_PASSWORD`), never from the command line.

use std::path::PathBuf;

use anyhow::Context;
use domi::{EtcdAuth, EtcdTls, NodeBuilder};

/// How to reach a secured etcd: TLS with a client certificate, and a user.
#[derive(clap::Args)]
pub struct EtcdSecurity {
    /// CA certificate (PEM) that signed etcd's server certificate; needed
    /// for `https://` etcd endpoints.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for an etcd started with
    /// `--client-cert-auth`; needs `--etcd-key` and `--etcd-ca`.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_key", "etcd_ca"])]
    etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of `--etcd-cert`.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd user, for an etcd with authentication enabled. The password is
    /// read from the environment variable DOMI_ETCD_PASSWORD (never from the
    /// command line, where other users of the host can see it).
    #[arg(long, value_name = "NAME", requires = "etcd")]
    etcd_user: Option<String>,
}

impl EtcdSecurity {
    /// Sets the TLS and user settings of the etcd membership of `builder`.
    pub fn apply(self, endpoints: &[String], builder: NodeBuilder) -> anyhow::Result<NodeBuilder> {
        if self.etcd_ca.is_none() && endpoints.iter().any(|e| e.starts_with("https://")) {
            anyhow::bail!(
                "https:// etcd endpoints need --etcd-ca FILE (the CA that signed etcd's certificate)"
            );
        }
        let tls = self.etcd_ca.map(|ca| {
            let tls = EtcdTls::new(ca);
            match (self.etcd_cert, self.etcd_key) {
                (Some(cert), Some(key)) => tls.with_client_cert(cert, key),
                _ => tls,
            }
        });
        let auth = match self.etcd_user {
            Some(user) => Some(EtcdAuth::from_env(user).context("--etcd-user")?),
            None => None,
        };
        Ok(builder.etcd_config(move |c| {
            c.tls = tls;
            c.auth = auth;
        }))
    }
}
