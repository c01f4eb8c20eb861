//! Securing the connection to etcd: TLS (the CA that signed etcd's server
//! certificate, and the client certificate etcd's `--client-cert-auth`
//! requires) and user/password authentication.
//!
//! The public settings are [`EtcdTls`], [`PemSource`] and [`EtcdAuth`]; the
//! crate loads and checks them once ([`TlsMaterial::load`]: every file read,
//! every PEM block parsed, the key matched to its certificate) so that a
//! mistake fails [`EtcdConfig::validate`](super::EtcdConfig::validate) at once
//! with an error naming the file, not the first connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use domi_core::MembershipError;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The environment variable the examples (and [`EtcdAuth::from_env`]) read
/// the etcd password from: a password never goes on a command line, where
/// `ps` shows it to every user of the host.
pub const PASSWORD_ENV: &str = "DOMI_ETCD_PASSWORD";

/// Where PEM data comes from.
///
/// Paths (`PathBuf`, `&Path`, `String`, `&str`) convert into
/// [`PemSource::File`]; PEM text itself goes in [`PemSource::Pem`]. Its
/// `Debug` never shows PEM text (it may hold a private key).
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A PEM file, read when the node starts (and checked by
    /// [`EtcdConfig::validate`](super::EtcdConfig::validate)).
    File(PathBuf),
    /// PEM text, e.g. from a secret store.
    Pem(String),
}

impl PemSource {
    /// The bytes, or a configuration error naming the file and what `what`
    /// (e.g. "etcd CA certificate") it was meant to be.
    fn read(&self, what: &str) -> Result<Vec<u8>, MembershipError> {
        match self {
            PemSource::File(path) => std::fs::read(path).map_err(|e| MembershipError::Config {
                reason: format!("cannot read the {what} file {}: {e}", path.display()),
            }),
            PemSource::Pem(text) => Ok(text.as_bytes().to_vec()),
        }
    }

    /// How errors name it: `file <path>` or `inline PEM`.
    fn describe(&self) -> String {
        match self {
            PemSource::File(path) => format!("file {}", path.display()),
            PemSource::Pem(_) => "inline PEM".into(),
        }
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            PemSource::Pem(text) => write!(f, "Pem(<{} bytes>)", text.len()),
        }
    }
}

impl From<PathBuf> for PemSource {
    fn from(path: PathBuf) -> PemSource {
        PemSource::File(path)
    }
}

impl From<&Path> for PemSource {
    fn from(path: &Path) -> PemSource {
        PemSource::File(path.to_owned())
    }
}

impl From<String> for PemSource {
    /// A path (use [`PemSource::Pem`] for PEM text).
    fn from(path: String) -> PemSource {
        PemSource::File(path.into())
    }
}

impl From<&str> for PemSource {
    /// A path (use [`PemSource::Pem`] for PEM text).
    fn from(path: &str) -> PemSource {
        PemSource::File(path.into())
    }
}

/// TLS towards etcd, for `https://` endpoints.
///
/// ```
/// use domi_cluster::etcd::EtcdTls;
/// let tls = EtcdTls::new("/etc/domi/etcd-ca.crt")
///     .with_client_cert("/etc/domi/node.crt", "/etc/domi/node.key");
/// assert!(tls.client_cert.is_some());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate(s) that signed etcd's server certificate (PEM, one
    /// or more `CERTIFICATE` blocks): the only roots trusted for etcd. etcd's
    /// certificate must name the endpoint's host (for an IP endpoint, an
    /// `IP:` subject alternative name), unless [`EtcdTls::server_name`] says
    /// which name to check instead.
    pub ca: PemSource,
    /// The client certificate (chain, PEM) and its private key (PEM: PKCS#8,
    /// PKCS#1 or SEC1), presented to an etcd started with
    /// `--client-cert-auth`; they must be signed by a CA of etcd's
    /// `--trusted-ca-file`. `None`: no client certificate (such an etcd
    /// refuses the node with [`MembershipError::Authentication`]).
    pub client_cert: Option<(PemSource, PemSource)>,
    /// The name etcd's certificate is checked against, when it differs from
    /// the endpoints' host (e.g. endpoints given by IP, a certificate for
    /// `etcd.internal`). `None`: each endpoint's host.
    pub server_name: Option<String>,
}

impl EtcdTls {
    /// TLS trusting the CA `ca` (a path, or a [`PemSource`]), without a
    /// client certificate.
    pub fn new(ca: impl Into<PemSource>) -> EtcdTls {
        EtcdTls {
            ca: ca.into(),
            client_cert: None,
            server_name: None,
        }
    }

    /// Presents the client certificate `cert` with its private key `key`
    /// (mutual TLS, for etcd's `--client-cert-auth`).
    pub fn with_client_cert(
        mut self,
        cert: impl Into<PemSource>,
        key: impl Into<PemSource>,
    ) -> EtcdTls {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Checks etcd's certificate against `name` instead of the endpoints'
    /// host.
    pub fn with_server_name(mut self, name: impl Into<String>) -> EtcdTls {
        self.server_name = Some(name.into());
        self
    }
}

/// A user and password for an etcd with authentication enabled
/// (`etcdctl auth enable`). The node authenticates when it connects and
/// again whenever etcd says its token expired (e.g. after an etcd restart).
///
/// The password is never shown: `Debug` prints `<redacted>`, and no log
/// line or error holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    user: String,
    password: String,
}

impl EtcdAuth {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> EtcdAuth {
        EtcdAuth {
            user: user.into(),
            password: password.into(),
        }
    }

    /// `user` with the password in the environment variable
    /// [`PASSWORD_ENV`] (`DOMI_ETCD_PASSWORD`); a configuration error when
    /// it is not set or not UTF-8.
    pub fn from_env(user: impl Into<String>) -> Result<EtcdAuth, MembershipError> {
        let user = user.into();
        match std::env::var(PASSWORD_ENV) {
            Ok(password) => Ok(EtcdAuth { user, password }),
            Err(e) => Err(MembershipError::Config {
                reason: format!(
                    "the etcd user {user:?} needs a password in the environment variable \
                     {PASSWORD_ENV}: {e}"
                ),
            }),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// Checks that neither the user nor the password is empty.
    pub(crate) fn validate(&self) -> Result<(), MembershipError> {
        if self.user.is_empty() {
            return Err(MembershipError::Config {
                reason: "the etcd user name is empty".into(),
            });
        }
        if self.password.is_empty() {
            return Err(MembershipError::Config {
                reason: format!(
                    "the password of the etcd user {:?} is empty (is {PASSWORD_ENV} set?)",
                    self.user
                ),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// [`EtcdTls`] loaded and checked: the PEM bytes for etcd-client, and a
/// rustls configuration built from the same material (for the handshake
/// probe that tells a refused certificate from an unreachable etcd).
#[derive(Clone)]
pub(crate) struct TlsMaterial {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
    /// The same trust and identity as rustls settings.
    pub(crate) rustls: Arc<ClientConfig>,
}

fn config_error(reason: String) -> MembershipError {
    MembershipError::Config { reason }
}

impl TlsMaterial {
    /// Reads and checks `tls`: the CA holds at least one usable certificate,
    /// the client certificate file at least one certificate, the key file a
    /// private key matching it, and the server name (if any) is a valid DNS
    /// name or IP address. Errors name the file.
    pub(crate) fn load(tls: &EtcdTls) -> Result<TlsMaterial, MembershipError> {
        let ca = tls.ca.read("etcd CA certificate")?;
        let ca_certs = certificates(&ca, &tls.ca, "etcd CA certificate")?;
        let mut roots = RootCertStore::empty();
        for cert in ca_certs {
            roots.add(cert).map_err(|e| {
                config_error(format!(
                    "the etcd CA certificate ({}) is not a usable CA certificate: {e}",
                    tls.ca.describe()
                ))
            })?;
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS protocol versions: {e}")))?
            .with_root_certificates(roots);
        let (mut rustls, identity) = match &tls.client_cert {
            None => (builder.with_no_client_auth(), None),
            Some((cert_src, key_src)) => {
                let cert = cert_src.read("etcd client certificate")?;
                let key = key_src.read("etcd client key")?;
                let chain = certificates(&cert, cert_src, "etcd client certificate")?;
                let key_der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                    config_error(format!(
                        "the etcd client key ({}) holds no usable private key: {e}",
                        key_src.describe()
                    ))
                })?;
                let config = builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    config_error(format!(
                        "the etcd client certificate ({}) and key ({}) cannot be used \
                         together: {e}",
                        cert_src.describe(),
                        key_src.describe()
                    ))
                })?;
                (config, Some((cert, key)))
            }
        };
        rustls.alpn_protocols.push(b"h2".to_vec());
        if let Some(name) = &tls.server_name {
            ServerName::try_from(name.as_str()).map_err(|e| {
                config_error(format!(
                    "the etcd TLS server name {name:?} is not a DNS name or an IP address: {e}"
                ))
            })?;
        }
        Ok(TlsMaterial {
            ca,
            identity,
            server_name: tls.server_name.clone(),
            rustls: Arc::new(rustls),
        })
    }

    /// Whether a client certificate is configured.
    pub(crate) fn has_client_cert(&self) -> bool {
        self.identity.is_some()
    }

    /// The name etcd's certificate is checked against, if not the host.
    pub(crate) fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// etcd-client's TLS options for the same material.
    pub(crate) fn options(&self) -> etcd_client::TlsOptions {
        let mut o = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            o = o.identity(etcd_client::Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            o = o.domain_name(name.clone());
        }
        o
    }
}

/// Every `CERTIFICATE` block of `pem`; an error naming `src` when there is
/// none or one does not decode.
fn certificates(
    pem: &[u8],
    src: &PemSource,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, MembershipError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            config_error(format!(
                "the {what} ({}) is not valid PEM: {e}",
                src.describe()
            ))
        })?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "the {what} ({}) holds no PEM CERTIFICATE block",
            src.describe()
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let a = EtcdAuth::new("root", "hunter2");
        let shown = format!("{a:?}");
        assert!(
            shown.contains("root") && !shown.contains("hunter2"),
            "{shown}"
        );
        let pem = PemSource::Pem("-----BEGIN PRIVATE KEY-----\nsecret".into());
        assert!(!format!("{pem:?}").contains("secret"));
    }

    #[test]
    fn empty_credentials_are_config_errors() {
        assert!(EtcdAuth::new("", "pw").validate().is_err());
        assert!(EtcdAuth::new("root", "").validate().is_err());
        assert_eq!(EtcdAuth::new("root", "pw").validate(), Ok(()));
    }

    #[test]
    fn unreadable_or_invalid_pem_names_the_file() {
        let missing = EtcdTls::new("/nonexistent/domi-ca.crt");
        match TlsMaterial::load(&missing) {
            Err(MembershipError::Config { reason }) => {
                assert!(reason.contains("/nonexistent/domi-ca.crt"), "{reason}")
            }
            _ => panic!("a missing CA file is a configuration error"),
        }
        let not_pem = EtcdTls::new(PemSource::Pem("hello".into()));
        match TlsMaterial::load(&not_pem) {
            Err(MembershipError::Config { reason }) => {
                assert!(reason.contains("no PEM CERTIFICATE"), "{reason}")
            }
            _ => panic!("a CA without a certificate is a configuration error"),
        }
    }
}
