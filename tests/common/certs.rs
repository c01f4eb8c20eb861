//! Test certificates made at test time with the `openssl` CLI (`make setup`
//! installs it when missing) in a temporary directory removed on drop: no key
//! is ever committed.
//!
//! [`Pki::new`] makes a CA with a server certificate for `127.0.0.1`
//! (`subjectAltName=IP:127.0.0.1`, `extendedKeyUsage=serverAuth,clientAuth`,
//! what etcd needs for `--client-cert-auth`) and a client certificate;
//! [`Pki::client`] makes more client certificates, [`Pki::node`] bus node
//! certificates, and [`Pki::other_ca`] a second, unrelated CA with
//! certificates of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A CA and certificates it signed, in a temporary directory.
pub struct Pki {
    dir: PathBuf,
    /// The CA: `ca.cert` is what etcd (`--trusted-ca-file`) and clients trust.
    pub ca: CertFiles,
    /// etcd's server certificate, valid for `IP:127.0.0.1`.
    pub server: CertFiles,
    /// A client certificate (CN `domi-node`) signed by the CA.
    pub client: CertFiles,
}

/// Runs `openssl <args>` in `dir`, panicking with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `openssl` ({e}): run `make setup` to install it"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "domi-certs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

impl Pki {
    /// A new CA (`CN=<name> CA`) with a server and a client certificate.
    pub fn new(name: &str) -> Pki {
        let dir = temp_dir();
        let ca = CertFiles {
            cert: dir.join(format!("{name}-ca.crt")),
            key: dir.join(format!("{name}-ca.key")),
        };
        let subject = format!("/CN={name} CA");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                path_str(&ca.key),
                "-out",
                path_str(&ca.cert),
            ],
        );
        let mut pki = Pki {
            server: ca.clone(),
            client: ca.clone(),
            ca,
            dir,
        };
        pki.server = pki.sign(
            &format!("{name}-server"),
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        pki.client = pki.client(&format!("{name}-client"), "domi-node");
        pki
    }

    /// A client certificate with common name `cn` signed by this CA (`file`
    /// names its files).
    pub fn client(&self, file: &str, cn: &str) -> CertFiles {
        self.sign(file, cn, "extendedKeyUsage=clientAuth\n")
    }

    /// A bus node's certificate for the IP address `ip` (`subjectAltName=IP:…`,
    /// for both TLS roles: a node accepts and dials).
    pub fn node(&self, file: &str, ip: &str) -> CertFiles {
        self.sign(
            file,
            &format!("domi node {ip}"),
            &format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
    }

    /// A bus node's certificate naming every address of `ips`.
    pub fn node_ips(&self, file: &str, ips: &[std::net::IpAddr]) -> CertFiles {
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        self.sign(
            file,
            "domi node",
            &format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
                sans.join(",")
            ),
        )
    }

    /// The [`domi::TlsConfig`] of a bus node at `ip` with a certificate of
    /// this CA.
    pub fn node_tls(&self, file: &str, ip: &str) -> domi::TlsConfig {
        let n = self.node(file, ip);
        domi::TlsConfig::from_pem_files(&n.cert, &n.key, &self.ca.cert).expect("a bus TLS config")
    }

    /// A second CA, unrelated to this one (and to any other), with its own
    /// server and client certificates: what a node of another deployment
    /// would hold.
    pub fn other_ca(&self, name: &str) -> Pki {
        Pki::new(name)
    }

    /// Makes a key and a certificate for `cn` signed by this CA, with the
    /// extensions `ext` (openssl extension-file syntax).
    fn sign(&self, file: &str, cn: &str, ext: &str) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        let csr = self.dir.join(format!("{file}.csr"));
        let ext_file = self.dir.join(format!("{file}.ext"));
        std::fs::write(
            &ext_file,
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .expect("writing an extension file");
        let subject = format!("/CN={cn}");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &subject,
                "-keyout",
                path_str(&files.key),
                "-out",
                path_str(&csr),
            ],
        );
        let serial = format!("0x{:016x}", serial());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                path_str(&csr),
                "-CA",
                path_str(&self.ca.cert),
                "-CAkey",
                path_str(&self.ca.key),
                "-set_serial",
                &serial,
                "-extfile",
                path_str(&ext_file),
                "-out",
                path_str(&files.cert),
            ],
        );
        files
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A serial number unique enough for certificates of one test run.
fn serial() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos << 8) ^ u64::from(NEXT.fetch_add(1, Ordering::Relaxed)) ^ u64::from(std::process::id())
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
