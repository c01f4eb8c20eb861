//! The etcd security flags shared by the `server` and `client` examples:
//! TLS with a client certificate, and a user whose password comes from the
//! environment (`DOMI_ETCD_PASSWORD`), never from the command line.

use std::path::PathBuf;

use domi::{EtcdConfig, EtcdSecurityFlags, NodeBuilder};

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
    /// Sets the TLS and user settings of the etcd membership of `builder`
    /// (checked by `domi::EtcdSecurityFlags`, as `domictl` does).
    pub fn apply(self, endpoints: &[String], builder: NodeBuilder) -> anyhow::Result<NodeBuilder> {
        let flags = EtcdSecurityFlags {
            ca: self.etcd_ca,
            cert: self.etcd_cert,
            key: self.etcd_key,
            user: self.etcd_user,
        };
        let mut security = EtcdConfig::new(endpoints.to_vec());
        flags.apply(&mut security)?;
        Ok(builder.etcd_config(move |c| {
            c.tls = security.tls;
            c.auth = security.auth;
        }))
    }
}
