//! Telling a refused TLS handshake apart from an unreachable etcd.
//!
//! With TLS 1.3 a client finishes its handshake before the server has
//! checked the client's certificate. An etcd started with
//! `--client-cert-auth` that does not accept the certificate (none, or one
//! from a CA it does not trust) then sends a TLS alert and closes, and
//! etcd-client (through tonic and hyper) reports only `Cancelled: operation
//! was canceled` with `connection closed`: what an etcd going away mid-request
//! looks like too. (`etcdctl` just retries until its deadline.)
//!
//! So when a join attempt fails like that and TLS is configured, the join
//! makes one handshake of its own with the same settings ([`probe`]), sends
//! HTTP/2's client preface and reads: a TLS alert about certificates means
//! etcd refuses the node's certificate; bytes back mean TLS is fine and the
//! failure was something else. A server certificate the node does not trust
//! is reported by etcd-client itself (rustls' error is in its error chain,
//! found by [`rustls_error_in`]). The classification ([`verdict_of`]) and the
//! explanations are pure.

use std::error::Error as StdError;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{AlertDescription, Error as TlsError};
use tokio_rustls::TlsConnector;

use super::security::TlsMaterial;

/// What a TLS handshake with etcd says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TlsVerdict {
    /// etcd refused the node's client certificate, or its absence, with
    /// this alert.
    ClientCertRefused {
        /// The alert etcd sent.
        alert: AlertDescription,
    },
    /// The node does not trust etcd's server certificate.
    ServerCertRejected {
        /// rustls' reason.
        error: String,
    },
    /// The handshake worked and etcd answered over HTTP/2.
    Accepted,
    /// Nothing to tell: unreachable, timed out, closed without an alert,
    /// another TLS error.
    Unknown {
        /// What happened.
        why: String,
    },
}

impl TlsVerdict {
    /// Whether retrying cannot fix it (a certificate was refused).
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            TlsVerdict::ClientCertRefused { .. } | TlsVerdict::ServerCertRejected { .. }
        )
    }

    /// The explanation of a refusal for the node's error (`None` when it is
    /// not one); `has_client_cert` says whether one is configured.
    pub(crate) fn explain(&self, has_client_cert: bool) -> Option<String> {
        match self {
            TlsVerdict::ClientCertRefused { alert } if !has_client_cert => Some(format!(
                "etcd refused the TLS handshake (alert {alert:?}): it requires a client \
                 certificate (--client-cert-auth) and none is configured; set the client \
                 certificate and key (EtcdTls::with_client_cert)"
            )),
            TlsVerdict::ClientCertRefused { alert } => Some(format!(
                "etcd refused the TLS client certificate (alert {alert:?}): it must be signed \
                 by a CA in etcd's --trusted-ca-file, unexpired, and allow clientAuth"
            )),
            TlsVerdict::ServerCertRejected { error } => Some(format!(
                "etcd's TLS server certificate is not trusted ({error}): it must be signed by \
                 the configured CA (EtcdTls::ca) and name the endpoint's host (for an IP, a \
                 subjectAltName IP entry), or set EtcdTls::server_name"
            )),
            TlsVerdict::Accepted | TlsVerdict::Unknown { .. } => None,
        }
    }
}

/// The verdict a rustls error gives, if it is about certificates.
pub(crate) fn verdict_of(e: &TlsError) -> Option<TlsVerdict> {
    use AlertDescription as A;
    match e {
        TlsError::AlertReceived(
            alert @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied),
        ) => Some(TlsVerdict::ClientCertRefused { alert: *alert }),
        TlsError::InvalidCertificate(c) => Some(TlsVerdict::ServerCertRejected {
            error: format!("invalid peer certificate: {c}"),
        }),
        TlsError::NoCertificatesPresented => Some(TlsVerdict::ServerCertRejected {
            error: "etcd presented no certificate".into(),
        }),
        _ => None,
    }
}

/// The rustls error somewhere in `e`'s chain of sources (looking inside
/// `std::io::Error`s too, whose `source` skips their own payload).
pub(crate) fn rustls_error_in<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a TlsError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<TlsError>() {
            return Some(t);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(t) = rustls_error_in(inner) {
                return Some(t);
            }
        }
        cur = err.source();
    }
    None
}

/// The verdict of an I/O error of the probe.
fn verdict_of_io(step: &str, e: &std::io::Error) -> TlsVerdict {
    rustls_error_in(e)
        .and_then(verdict_of)
        .unwrap_or_else(|| TlsVerdict::Unknown {
            why: format!("{step}: {e}"),
        })
}

/// Host and port of an etcd endpoint URL (`https://host:port/…`,
/// `[v6]:port`, or without a scheme); the port defaults to 443, as for
/// etcd-client.
pub(crate) fn host_port(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    Some((host.to_owned(), port))
}

/// HTTP/2's client connection preface followed by an empty SETTINGS frame:
/// what etcd expects first on a connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// One TLS handshake with `endpoint` using `material`, within `within`.
pub(crate) async fn probe(material: &TlsMaterial, endpoint: &str, within: Duration) -> TlsVerdict {
    match tokio::time::timeout(within, probe_unbounded(material, endpoint)).await {
        Ok(v) => v,
        Err(_) => TlsVerdict::Unknown {
            why: format!("no TLS verdict within {within:?}"),
        },
    }
}

async fn probe_unbounded(material: &TlsMaterial, endpoint: &str) -> TlsVerdict {
    let Some((host, port)) = host_port(endpoint) else {
        return TlsVerdict::Unknown {
            why: format!("cannot tell host and port of {endpoint:?}"),
        };
    };
    let name = material.server_name().unwrap_or(&host).to_owned();
    let server_name = match ServerName::try_from(name) {
        Ok(n) => n,
        Err(e) => {
            return TlsVerdict::Unknown {
                why: format!("server name: {e}"),
            }
        }
    };
    let tcp = match TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => {
            return TlsVerdict::Unknown {
                why: format!("connect: {e}"),
            }
        }
    };
    let connector = TlsConnector::from(material.rustls.clone());
    let mut tls = match connector.connect(server_name, tcp).await {
        Ok(s) => s,
        Err(e) => return verdict_of_io("handshake", &e),
    };
    if let Err(e) = tls.write_all(H2_PREFACE).await {
        return verdict_of_io("write", &e);
    }
    if let Err(e) = tls.flush().await {
        return verdict_of_io("write", &e);
    }
    let mut buf = [0u8; 64];
    match tls.read(&mut buf).await {
        Ok(0) => TlsVerdict::Unknown {
            why: "etcd closed the connection without a TLS alert".into(),
        },
        Ok(_) => TlsVerdict::Accepted,
        Err(e) => verdict_of_io("read", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls::CertificateError;

    #[test]
    fn endpoints_are_split_into_host_and_port() {
        let hp = |h: &str, p| Some((h.to_owned(), p));
        assert_eq!(host_port("https://127.0.0.1:2379"), hp("127.0.0.1", 2379));
        assert_eq!(
            host_port("https://etcd.internal:2379/"),
            hp("etcd.internal", 2379)
        );
        assert_eq!(host_port("https://[::1]:2379"), hp("::1", 2379));
        assert_eq!(host_port("10.0.0.7:2379"), hp("10.0.0.7", 2379));
        assert_eq!(host_port("https://etcd"), hp("etcd", 443));
        assert_eq!(host_port("https://:2379"), None);
        assert_eq!(host_port("https://etcd:port"), None);
    }

    #[test]
    fn certificate_errors_are_refusals_and_others_are_not() {
        let refused = verdict_of(&TlsError::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert_eq!(
            refused,
            Some(TlsVerdict::ClientCertRefused {
                alert: AlertDescription::CertificateRequired
            })
        );
        assert!(refused.unwrap().is_refusal());
        let untrusted = verdict_of(&TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))
        .expect("a verdict");
        assert!(untrusted.is_refusal());
        assert!(untrusted.explain(true).unwrap().contains("UnknownIssuer"));
        assert_eq!(
            verdict_of(&TlsError::AlertReceived(AlertDescription::ProtocolVersion)),
            None
        );
        assert!(!TlsVerdict::Accepted.is_refusal());
        assert_eq!(TlsVerdict::Accepted.explain(false), None);
    }

    #[test]
    fn explanations_say_what_to_configure() {
        let v = TlsVerdict::ClientCertRefused {
            alert: AlertDescription::CertificateRequired,
        };
        assert!(v.explain(false).unwrap().contains("none is configured"));
        assert!(v.explain(true).unwrap().contains("trusted-ca-file"));
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::AlertReceived(AlertDescription::BadCertificate),
        );
        assert_eq!(
            rustls_error_in(&io),
            Some(&TlsError::AlertReceived(AlertDescription::BadCertificate))
        );
        let plain = std::io::Error::other("nothing to see");
        assert_eq!(rustls_error_in(&plain), None);
    }
}
