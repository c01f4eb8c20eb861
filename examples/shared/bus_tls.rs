//! The bus TLS flags shared by the `server` and `client` examples: mutual
//! TLS on every bus connection, with this node's certificate and key and the
//! CA every peer's certificate must chain to.

use std::path::PathBuf;

use anyhow::Context;
use domi::{NodeBuilder, TlsConfig};

/// Mutual TLS on the bus.
#[derive(clap::Args)]
pub struct BusTls {
    /// This node's certificate (PEM) for bus TLS; needs `--tls-key` and
    /// `--tls-ca`. Peers dial this node by its advertised address, so the
    /// certificate names that IP (`subjectAltName=IP:…`), unless every node
    /// uses `--tls-server-name`.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM) every peer's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Check peers' certificates against this DNS name (one name in every
    /// node's certificate) instead of the IP address dialled.
    #[arg(long, value_name = "NAME", requires = "tls_cert")]
    tls_server_name: Option<String>,
}

impl BusTls {
    /// Turns bus TLS on in `builder` when `--tls-cert` was given.
    pub fn apply(self, builder: NodeBuilder) -> anyhow::Result<NodeBuilder> {
        let (Some(cert), Some(key), Some(ca)) = (self.tls_cert, self.tls_key, self.tls_ca) else {
            return Ok(builder);
        };
        let mut tls = TlsConfig::from_pem_files(cert, key, ca).context("bus TLS")?;
        if let Some(name) = self.tls_server_name {
            tls = tls.server_name(&name).context("--tls-server-name")?;
        }
        Ok(builder.tls(tls))
    }
}
