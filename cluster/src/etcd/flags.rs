//! The secured-etcd settings as command-line programs take them (the
//! `server` and `client` examples, `domictl`): `--etcd-ca FILE --etcd-cert
//! FILE --etcd-key FILE --etcd-user NAME`, with the password only from the
//! environment ([`PASSWORD_ENV`]), never from a flag. One function turns them
//! into [`EtcdConfig::tls`] and [`EtcdConfig::auth`], so every program checks
//! them the same way.

use std::path::PathBuf;

use domi_core::MembershipError;

use super::security::{EtcdAuth, EtcdTls, PASSWORD_ENV};
use super::EtcdConfig;

/// The values of the secured-etcd flags (each `None` when not given).
///
/// ```
/// use domi_cluster::etcd::{EtcdConfig, EtcdSecurityFlags};
/// let mut config = EtcdConfig::new(["https://10.0.0.9:2379"]);
/// let flags = EtcdSecurityFlags { ca: Some("ca.crt".into()), ..EtcdSecurityFlags::default() };
/// flags.apply_with_password(&mut config, None)?;
/// assert!(config.tls.is_some() && config.auth.is_none());
/// # Ok::<(), domi_core::MembershipError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdSecurityFlags {
    /// `--etcd-ca`: the CA certificate (PEM) that signed etcd's server
    /// certificate; needed by `https://` endpoints.
    pub ca: Option<PathBuf>,
    /// `--etcd-cert`: a client certificate (PEM), for an etcd started with
    /// `--client-cert-auth`; goes with `key` and `ca`.
    pub cert: Option<PathBuf>,
    /// `--etcd-key`: the private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// `--etcd-user`: the etcd user; its password comes from
    /// [`PASSWORD_ENV`].
    pub user: Option<String>,
}

impl EtcdSecurityFlags {
    /// Sets `config.tls` and `config.auth` from the flags, the password read
    /// from the environment variable [`PASSWORD_ENV`].
    pub fn apply(&self, config: &mut EtcdConfig) -> Result<(), MembershipError> {
        self.apply_with_password(config, std::env::var(PASSWORD_ENV).ok())
    }

    /// Like [`EtcdSecurityFlags::apply`], with the password given (as read from
    /// [`PASSWORD_ENV`] by the caller). Errors: `https://` endpoints without
    /// a CA, a certificate without its key (or the other way round), a user
    /// without a password. The files themselves are checked by
    /// [`EtcdConfig::validate`].
    pub fn apply_with_password(
        &self,
        config: &mut EtcdConfig,
        password: Option<String>,
    ) -> Result<(), MembershipError> {
        let invalid = |reason: String| Err(MembershipError::Config { reason });
        if self.ca.is_none() && config.endpoints.iter().any(|e| e.starts_with("https://")) {
            return invalid(
                "https:// etcd endpoints need --etcd-ca FILE (the CA that signed etcd's \
                 certificate)"
                    .into(),
            );
        }
        let tls = match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => None,
            (Some(ca), None, None) => Some(EtcdTls::new(ca.clone())),
            (Some(ca), Some(cert), Some(key)) => {
                Some(EtcdTls::new(ca.clone()).with_client_cert(cert.clone(), key.clone()))
            }
            (None, _, _) => {
                return invalid("an etcd client certificate needs --etcd-ca FILE as well".into())
            }
            (Some(_), _, _) => {
                return invalid("--etcd-cert and --etcd-key go together".into());
            }
        };
        let auth = match (&self.user, password) {
            (None, _) => None,
            (Some(user), Some(password)) => Some(EtcdAuth::new(user.clone(), password)),
            (Some(user), None) => {
                return invalid(format!(
                    "the etcd user {user:?} needs a password in the environment variable \
                     {PASSWORD_ENV}"
                ));
            }
        };
        config.tls = tls;
        config.auth = auth;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> EtcdConfig {
        EtcdConfig::new([endpoint])
    }

    #[test]
    fn flags_become_tls_and_auth() {
        let flags = EtcdSecurityFlags {
            ca: Some("ca.crt".into()),
            cert: Some("n.crt".into()),
            key: Some("n.key".into()),
            user: Some("domi".into()),
        };
        let mut c = config("https://127.0.0.1:2379");
        flags
            .apply_with_password(&mut c, Some("pw".into()))
            .unwrap();
        assert_eq!(
            c.tls,
            Some(EtcdTls::new("ca.crt").with_client_cert("n.crt", "n.key"))
        );
        assert_eq!(c.auth, Some(EtcdAuth::new("domi", "pw")));
        let mut plain = config("http://127.0.0.1:2379");
        EtcdSecurityFlags::default()
            .apply_with_password(&mut plain, Some("ignored".into()))
            .unwrap();
        assert_eq!((plain.tls, plain.auth), (None, None));
    }

    #[test]
    fn incomplete_flags_are_config_errors() {
        let is_config = |flags: EtcdSecurityFlags, endpoint: &str, pw: Option<&str>| {
            let mut c = config(endpoint);
            match flags.apply_with_password(&mut c, pw.map(Into::into)) {
                Err(MembershipError::Config { reason }) => reason,
                other => panic!("{flags:?}: {other:?}"),
            }
        };
        let reason = is_config(EtcdSecurityFlags::default(), "https://e:2379", None);
        assert!(reason.contains("--etcd-ca"), "{reason}");
        let user = EtcdSecurityFlags {
            user: Some("domi".into()),
            ..EtcdSecurityFlags::default()
        };
        let reason = is_config(user, "http://e:2379", None);
        assert!(reason.contains(PASSWORD_ENV), "{reason}");
        let half = EtcdSecurityFlags {
            ca: Some("ca".into()),
            cert: Some("c".into()),
            ..EtcdSecurityFlags::default()
        };
        is_config(half, "https://e:2379", None);
        let no_ca = EtcdSecurityFlags {
            cert: Some("c".into()),
            key: Some("k".into()),
            ..EtcdSecurityFlags::default()
        };
        is_config(no_ca, "https://e:2379", None);
    }
}
