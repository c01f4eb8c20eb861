//! Certificates made in memory for unit tests (rcgen): a CA and node
//! certificates it signed. Nothing is written to disk.

use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A node's certificate and key, PEM.
pub(crate) struct NodePem {
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// A CA able to sign node certificates.
pub(crate) struct TestPki {
    /// The CA certificate, PEM.
    pub(crate) ca: String,
    params: CertificateParams,
    key: KeyPair,
}

impl TestPki {
    pub(crate) fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Each CA its own name, as unrelated deployments' CAs would have.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test CA {n}"));
        let key = KeyPair::generate().expect("CA key");
        let ca = params.clone().self_signed(&key).expect("CA certificate");
        TestPki {
            ca: ca.pem(),
            params,
            key,
        }
    }

    /// A node certificate for `san` (an IP address or a DNS name).
    pub(crate) fn node(&self, san: &str) -> NodePem {
        let params = CertificateParams::new(vec![san.to_string()]).expect("node params");
        let key = KeyPair::generate().expect("node key");
        let issuer = self.params.clone().self_signed(&self.key).expect("issuer");
        let cert = params
            .signed_by(&key, &issuer, &self.key)
            .expect("node certificate");
        NodePem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A [`super::TlsConfig`] for a node certificate for `san`.
    pub(crate) fn config(&self, san: &str) -> super::TlsConfig {
        let n = self.node(san);
        super::TlsConfig::from_pem(n.cert.as_bytes(), n.key.as_bytes(), self.ca.as_bytes())
            .expect("a TLS config")
    }
}
