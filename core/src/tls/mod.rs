//! Mutual TLS on bus connections (optional): the configuration a node is
//! given ([`TlsConfig`]: its certificate and key, and the CA its peers'
//! certificates must chain to), why a TLS connection was refused
//! ([`TlsClose`]), and the per-connection record engine ([`link::TlsLink`]).
//!
//! Every connection of a node with TLS runs a TLS 1.3 handshake (rustls)
//! before the bus handshake ([`crate::session`]), which then runs unchanged
//! inside it, cluster secret included. Both sides present a certificate: the
//! accepting node requires one chaining to the CA; the dialling node checks
//! the accepting one's against the CA and, by default, against the address
//! it dialled (an `IP:` subject alternative name), or against a name shared
//! by the cluster ([`TlsConfig::server_name`]).
//!
//! Past the handshake, records are protected by the link itself
//! ([`record`]: standard TLS 1.3 records and key updates, with the traffic
//! secrets rustls derived), which saves two copies per record received and
//! an allocation per record sent.
//!
//! rustls is sans-I/O, and so is [`link::TlsLink`]: the connection's reader
//! feeds it the ciphertext it read and takes the plaintext into its receive
//! buffer, where frames are parsed in place as without TLS; the writer hands
//! it the write queue's bytes and writes the records it returns. It never
//! touches a socket, so it is unit-tested in memory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub mod link;
pub mod record;

/// Where a PEM item came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PemOrigin {
    /// A file.
    File(PathBuf),
    /// Bytes given directly ([`TlsConfig::from_pem`]).
    Memory,
}

impl std::fmt::Display for PemOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemOrigin::File(p) => write!(f, "{}", p.display()),
            PemOrigin::Memory => f.write_str("PEM given in memory"),
        }
    }
}

/// Why a [`TlsConfig`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file could not be read.
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        /// Which item (`certificate`, `private key`, `CA`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM item is missing or malformed.
    #[error("no usable {what} in {origin}: {detail}")]
    Pem {
        /// Which item (`certificate`, `private key`, `CA`).
        what: &'static str,
        /// Where it was looked for.
        origin: PemOrigin,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the certificate, key or CA (e.g. a key that does not
    /// match the certificate, a CA that is not a valid certificate).
    #[error("TLS configuration refused ({what}): {source}")]
    Rejected {
        /// What was being set up.
        what: &'static str,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// [`TlsConfig::server_name`] was given something that is not a DNS name
    /// or an IP address.
    #[error("invalid TLS server name {name:?}")]
    ServerName {
        /// The name given.
        name: String,
    },
}

/// A node's TLS identity and trust: its certificate chain and private key,
/// and the CA every peer's certificate must chain to (see the module docs).
/// Cheap to clone; give it to `domi::NodeBuilder::tls` (or set
/// [`crate::NodeConfig::tls`]).
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(
    what: &'static str,
    pem: &[u8],
    origin: &PemOrigin,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem_error = |detail: String| TlsConfigError::Pem {
        what,
        origin: origin.clone(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Reads the node's certificate chain, its private key and the CA
    /// (all PEM; the key PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsConfigError> {
        let (cert, key, ca) = (cert.as_ref(), key.as_ref(), ca.as_ref());
        Self::build(
            (&read("certificate", cert)?, PemOrigin::File(cert.into())),
            (&read("private key", key)?, PemOrigin::File(key.into())),
            (&read("CA", ca)?, PemOrigin::File(ca.into())),
        )
    }

    /// The same from PEM bytes held in memory.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<TlsConfig, TlsConfigError> {
        Self::build(
            (cert, PemOrigin::Memory),
            (key, PemOrigin::Memory),
            (ca, PemOrigin::Memory),
        )
    }

    fn build(
        cert: (&[u8], PemOrigin),
        key: (&[u8], PemOrigin),
        ca: (&[u8], PemOrigin),
    ) -> Result<TlsConfig, TlsConfigError> {
        let chain = certs("certificate", cert.0, &cert.1)?;
        let key = PrivateKeyDer::from_pem_slice(key.0).map_err(|e| TlsConfigError::Pem {
            what: "private key",
            origin: key.1.clone(),
            detail: e.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for ca_cert in certs("CA", ca.0, &ca.1)? {
            roots
                .add(ca_cert)
                .map_err(|source| TlsConfigError::Rejected { what: "CA", source })?;
        }
        let roots = Arc::new(roots);
        let mut provider = rustls::crypto::ring::default_provider();
        // AES-128-GCM first (ring's default order starts with AES-256): as
        // strong as the bus needs, and the cheapest per message with AES-NI.
        provider.cipher_suites.sort_by_key(|s| {
            use rustls::CipherSuite::*;
            !matches!(
                s.suite(),
                TLS13_AES_128_GCM_SHA256
                    | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            )
        });
        let provider = Arc::new(provider);
        let rejected = |what| move |source| TlsConfigError::Rejected { what, source };

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsConfigError::Rejected {
                what: "client verifier",
                source: rustls::Error::General(e.to_string()),
            })?;
        // TLS 1.3 only: past the handshake the link protects records itself
        // (`record`), as TLS 1.3 does; every domi node speaks it.
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rejected("protocol versions"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(rejected("certificate and key"))?;
        // Bus connections are long-lived and never resumed. (A ticket would
        // also be a record rustls protects after the handshake; the link
        // takes the sequence numbers from rustls either way.)
        server.send_tls13_tickets = 0;
        // The link takes over record protection after the handshake (see
        // `link`), with rustls's sequence numbers and as a check on its keys.
        server.enable_secret_extraction = true;

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rejected("protocol versions"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(rejected("certificate and key"))?;
        client.enable_secret_extraction = true;
        Ok(TlsConfig {
            server: Arc::new(server),
            client: Arc::new(client),
            server_name: None,
        })
    }

    /// Checks every accepting peer's certificate against `name` (a DNS name
    /// or an IP address every node's certificate carries) instead of the IP
    /// address dialled: one certificate name for the whole cluster.
    pub fn server_name(mut self, name: &str) -> Result<TlsConfig, TlsConfigError> {
        let parsed =
            ServerName::try_from(name.to_string()).map_err(|_| TlsConfigError::ServerName {
                name: name.to_string(),
            })?;
        self.server_name = Some(parsed);
        Ok(self)
    }

    /// The name a certificate of the peer at `ip` must carry.
    fn name_for(&self, ip: IpAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }

    /// A blocking client connection to the peer at `ip`, for threads that
    /// talk to peers with `std` sockets (the static prober).
    pub fn client_connection(&self, ip: IpAddr) -> Result<rustls::ClientConnection, TlsClose> {
        rustls::ClientConnection::new(self.client.clone(), self.name_for(ip))
            .map_err(|source| TlsClose::Refused { source })
    }
}

/// Why a connection was closed by TLS, or for speaking (or not speaking) it.
#[derive(Debug, thiserror::Error)]
pub enum TlsClose {
    /// The TLS layer ended the connection: a certificate refused (by this
    /// node, or by the peer: its alert), a corrupted or malformed record.
    #[error("TLS: {source}")]
    Refused {
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The peer sent a TLS message larger than rustls accepts (it could
    /// never complete).
    #[error("TLS: the peer's message cannot be taken ({detail})")]
    Stuck {
        /// What rustls said.
        detail: String,
    },
    /// The peer started a TLS handshake, but this node has TLS off.
    #[error("the peer speaks TLS, but this node has TLS off")]
    PeerUsesTls,
    /// The peer sent plaintext bus frames to this node, which requires TLS.
    #[error("the peer sent plaintext, but this node requires TLS")]
    PeerWithoutTls,
    /// The node this one dialled closed the connection before the TLS
    /// handshake finished, having sent nothing: a node without TLS (an
    /// accepting node that refuses a certificate sends an alert instead).
    #[error("the peer closed the connection during the TLS handshake without a word (a node without TLS?)")]
    HandshakeEof,
}

/// The same classification for an error of a blocking rustls stream
/// (threads with `std` sockets, e.g. the static prober), which wraps
/// rustls's error in an `io::Error`.
pub fn classify_io(e: &std::io::Error) -> Option<TlsClose> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(link::classify(inner.clone(), true))
}

/// Whether a frame's first two bytes, read as its magic (little-endian),
/// are a TLS record's start instead: a content type (change cipher spec,
/// alert, handshake, application data) then major version 3.
pub(crate) fn looks_like_tls(magic: u16) -> bool {
    let [content_type, major] = magic.to_le_bytes();
    (20..=23).contains(&content_type) && major == 3
}

#[cfg(test)]
pub(crate) mod test_pki;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_frames() {
        assert!(looks_like_tls(u16::from_le_bytes([22, 3])));
        assert!(looks_like_tls(u16::from_le_bytes([21, 3])));
        assert!(!looks_like_tls(crate::frame::MAGIC));
        assert!(!looks_like_tls(u16::from_le_bytes([22, 4])));
    }

    #[test]
    fn bad_pem_is_a_typed_error() {
        let pki = test_pki::TestPki::new();
        let node = pki.node("127.0.0.1");
        let err = TlsConfig::from_pem(b"nothing", node.key.as_bytes(), pki.ca.as_bytes());
        assert!(matches!(
            err,
            Err(TlsConfigError::Pem {
                what: "certificate",
                ..
            })
        ));
        let err = TlsConfig::from_pem(node.cert.as_bytes(), b"", pki.ca.as_bytes());
        assert!(matches!(
            err,
            Err(TlsConfigError::Pem {
                what: "private key",
                ..
            })
        ));
        let other = pki.node("127.0.0.2");
        let err = TlsConfig::from_pem(
            node.cert.as_bytes(),
            other.key.as_bytes(),
            pki.ca.as_bytes(),
        );
        assert!(
            matches!(err, Err(TlsConfigError::Rejected { .. })),
            "{err:?}"
        );
        let err = TlsConfig::from_pem_files("/nonexistent/cert", "/k", "/ca");
        assert!(matches!(
            err,
            Err(TlsConfigError::Read {
                what: "certificate",
                ..
            })
        ));
        let ok = TlsConfig::from_pem(node.cert.as_bytes(), node.key.as_bytes(), pki.ca.as_bytes());
        assert!(ok.unwrap().server_name("not a name!").is_err());
    }
}
