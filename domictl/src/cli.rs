//! The command line, as clap derive types, and what the process environment
//! adds to it ([`Environment`]): nothing here touches the network.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use domi_cluster::etcd::{EtcdConfig, EtcdSecurityFlags, PASSWORD_ENV};

use crate::CtlError;

/// The environment variable holding the admin token (sent as
/// `Authorization: Bearer <token>` to the node's pause, resume and stop
/// endpoints).
pub const ADMIN_TOKEN_ENV: &str = "DOMI_ADMIN_TOKEN";

/// `domictl`'s arguments.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "domictl",
    version,
    about = "Operate a domi cluster: list its nodes, show, pause, resume or drain one, \
             watch membership, send one request",
    after_help = "Secrets come from the environment, never from flags: DOMI_ADMIN_TOKEN \
                  (the nodes' admin token), DOMI_ETCD_PASSWORD (with --etcd-user)."
)]
pub struct Cli {
    /// Where the cluster is.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Time allowed for one admin call (connect, send, answer).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, global = true)]
    pub admin_timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the cluster's etcd.
#[derive(Args, Debug, Clone)]
pub struct EtcdArgs {
    /// etcd client URLs (comma-separated).
    #[arg(
        long,
        value_name = "URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        global = true
    )]
    pub etcd: Vec<String>,
    /// Cluster name (the nodes' `--cluster`).
    #[arg(long, value_name = "NAME", default_value = "default", global = true)]
    pub cluster: String,
    /// CA certificate (PEM) that signed etcd's server certificate; needed
    /// for `https://` etcd endpoints.
    #[arg(long, value_name = "FILE", global = true)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for an etcd started with
    /// `--client-cert-auth`; needs `--etcd-key` and `--etcd-ca`.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_key", "etcd_ca"], global = true)]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of `--etcd-cert`.
    #[arg(long, value_name = "FILE", requires = "etcd_cert", global = true)]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, for an etcd with authentication enabled. The password is
    /// read from the environment variable DOMI_ETCD_PASSWORD.
    #[arg(long, value_name = "NAME", global = true)]
    pub etcd_user: Option<String>,
    /// Time allowed to connect to etcd, and again for each etcd request:
    /// an etcd that does not answer fails the command within about twice
    /// this.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration, global = true)]
    pub etcd_timeout: Duration,
}

/// A command.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// List the cluster's nodes: id, name, bus and admin addresses, state,
    /// channels, uptime (from the records in etcd).
    Nodes {
        /// A JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a node's status: its admin endpoint's `/status` answer (JSON).
    Status {
        /// The node: its id, or its name when that is unique.
        #[arg(value_name = "ID|NAME")]
        node: String,
    },
    /// Take a node out of rotation (`POST /pause`; needs DOMI_ADMIN_TOKEN
    /// when the node has a token).
    Pause {
        /// The node: its id, or its name when that is unique.
        #[arg(value_name = "ID|NAME")]
        node: String,
    },
    /// Put a paused node back in rotation (`POST /resume`).
    Resume {
        /// The node: its id, or its name when that is unique.
        #[arg(value_name = "ID|NAME")]
        node: String,
    },
    /// Stop a node with its drain (`POST /stop`): out of rotation,
    /// in-flight work finishes, it leaves the cluster and exits.
    Drain {
        /// The node: its id, or its name when that is unique.
        #[arg(value_name = "ID|NAME")]
        node: String,
    },
    /// Print membership changes as they happen, one line each (joined,
    /// changed, left), until interrupted, `--count` changes or `--for`.
    Watch {
        /// Stop after this many changes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after this long (e.g. `30s`, `5m`).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Send one request through a temporary node and print the reply and
    /// the latency. The temporary node joins the cluster through etcd and
    /// takes a node id while it runs (a node that only calls, without an id,
    /// does not exist yet), then leaves.
    Request {
        /// The channel (0..=65535; a provider must serve it).
        channel: u16,
        /// The payload, sent as its UTF-8 bytes.
        payload: String,
        /// Time allowed to join, find a provider and get the reply.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Print the reply as hex instead of text (lossy UTF-8).
        #[arg(long)]
        hex: bool,
        /// The temporary node's bus address (port 0: a free one).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        tcp: SocketAddr,
    },
}

/// What `domictl` takes from the process environment: the secrets that
/// never go on a command line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// The admin token ([`ADMIN_TOKEN_ENV`]).
    pub admin_token: Option<String>,
    /// The etcd user's password ([`PASSWORD_ENV`]).
    pub etcd_password: Option<String>,
}

impl Environment {
    /// Reads [`ADMIN_TOKEN_ENV`] and [`PASSWORD_ENV`] (unset or empty: none).
    pub fn from_process() -> Environment {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Environment {
            admin_token: var(ADMIN_TOKEN_ENV),
            etcd_password: var(PASSWORD_ENV),
        }
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Environment")
            .field("admin_token", &shown(&self.admin_token))
            .field("etcd_password", &shown(&self.etcd_password))
            .finish()
    }
}

impl EtcdArgs {
    /// The etcd settings these arguments describe: endpoints, cluster,
    /// timeouts, TLS and user (the password from `env`).
    pub fn config(&self, env: &Environment) -> Result<EtcdConfig, CtlError> {
        let mut config = EtcdConfig::new(self.etcd.iter().map(|e| e.trim().to_owned()));
        config.cluster = self.cluster.clone();
        config.connect_timeout = self.etcd_timeout;
        config.request_timeout = self.etcd_timeout;
        config.join_timeout = self.etcd_timeout;
        let flags = EtcdSecurityFlags {
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user: self.etcd_user.clone(),
        };
        flags
            .apply_with_password(&mut config, env.etcd_password.clone())
            .map_err(|e| CtlError::from_membership(e, &config.endpoints))?;
        Ok(config)
    }
}

/// Parses a duration: a number with a unit (`250ms`, `3s`, `2m`, `1h`), or
/// a bare number of seconds; fractions allowed (`1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 3s, 2m, 1h)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn arguments_parse_with_global_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "domictl",
            "--etcd",
            "http://a:1,http://b:2",
            "--cluster",
            "c",
            "nodes",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.etcd.etcd, ["http://a:1", "http://b:2"]);
        assert!(matches!(cli.command, Command::Nodes { json: true }));
        let cli = Cli::try_parse_from(["domictl", "pause", "3", "--cluster", "x"]).unwrap();
        assert_eq!(cli.etcd.cluster, "x");
        assert!(matches!(cli.command, Command::Pause { node } if node == "3"));
        let cli = Cli::try_parse_from(["domictl", "request", "50", "ping", "--hex"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Request {
                channel: 50,
                hex: true,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["domictl", "watch", "--count", "2", "--for", "1s"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Watch { count: Some(2), duration: Some(d) } if d == Duration::from_secs(1)
        ));
        // A client certificate needs its key and the CA.
        assert!(Cli::try_parse_from(["domictl", "--etcd-cert", "c.crt", "nodes"]).is_err());
        assert!(Cli::try_parse_from(["domictl", "status"]).is_err());
    }

    #[test]
    fn the_config_carries_timeouts_security_and_the_password() {
        let cli = Cli::try_parse_from([
            "domictl",
            "--etcd",
            "https://127.0.0.1:2379",
            "--etcd-ca",
            "ca.crt",
            "--etcd-user",
            "domi",
            "--etcd-timeout",
            "1s",
            "nodes",
        ])
        .unwrap();
        let env = Environment {
            etcd_password: Some("pw".into()),
            ..Environment::default()
        };
        let config = cli.etcd.config(&env).unwrap();
        assert_eq!(config.request_timeout, Duration::from_secs(1));
        assert_eq!(config.auth.as_ref().map(|a| a.user()), Some("domi"));
        assert!(config.tls.is_some());
        assert!(matches!(
            cli.etcd.config(&Environment::default()),
            Err(CtlError::Config { .. })
        ));
        assert!(!format!("{env:?}").contains("pw"));
    }
}
