//! The commands: each reads etcd (through [`ClusterView`]), a node's admin
//! endpoint or the bus, and hands what it got to the pure parts
//! ([`crate::render`], [`crate::resolve`]) before writing to `out`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use domi::{Channel, EtcdConfig, Node};
use domi_cluster::etcd::record::NodeRecord;
use domi_cluster::etcd::ClusterView;
use tracing::warn;

use crate::admin::{self, Call};
use crate::cli::{Cli, Command, Environment};
use crate::render::{self, Row};
use crate::resolve::resolve;
use crate::CtlError;

/// Runs `cli` with the secrets of `env`, writing what it prints to `out`
/// (flushed after each line `watch` prints).
///
/// ```no_run
/// use clap::Parser;
/// use domictl::{run, Cli, Environment};
/// let cli = Cli::parse_from(["domictl", "--etcd", "http://127.0.0.1:2379", "--cluster", "demo", "nodes"]);
/// let mut out = Vec::new();
/// run(&cli, &Environment::from_process(), &mut out)?;
/// print!("{}", String::from_utf8_lossy(&out));
/// # Ok::<(), domictl::CtlError>(())
/// ```
pub fn run(cli: &Cli, env: &Environment, out: &mut dyn Write) -> Result<(), CtlError> {
    let config = cli.etcd.config(env)?;
    let token = env.admin_token.as_deref();
    let admin_call = |node: &str, call: Call| -> Result<(NodeRecord, String), CtlError> {
        let record = find(&config, node)?;
        let body = admin::call(&record, call, token, cli.admin_timeout)?;
        Ok((record, body))
    };
    match &cli.command {
        Command::Nodes { json } => nodes(&config, *json, out),
        Command::Status { node } => {
            let (_, body) = admin_call(node, Call::Status)?;
            let shown = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            writeln!(out, "{}", shown.trim_end())?;
            Ok(())
        }
        Command::Pause { node } => acted(out, admin_call(node, Call::Pause)?),
        Command::Resume { node } => acted(out, admin_call(node, Call::Resume)?),
        Command::Drain { node } => acted(out, admin_call(node, Call::Stop)?),
        Command::Watch { count, duration } => watch(&config, *count, *duration, out),
        Command::Request {
            channel,
            payload,
            timeout,
            hex,
            tcp,
        } => {
            let (reply, latency) = request(&config, *tcp, *channel, payload.as_bytes(), *timeout)?;
            writeln!(out, "{}", render::reply(&reply, *hex))?;
            writeln!(out, "latency {}", render::latency(latency))?;
            Ok(())
        }
    }
}

/// Prints a node's answer to a pause, resume or stop.
fn acted(out: &mut dyn Write, (record, body): (NodeRecord, String)) -> Result<(), CtlError> {
    writeln!(out, "node {} ({}): {}", record.id, record.name, body.trim())?;
    Ok(())
}

/// The current Unix time in seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn connect(config: &EtcdConfig) -> Result<ClusterView, CtlError> {
    ClusterView::connect(config.clone())
        .map_err(|e| CtlError::from_membership(e, &config.endpoints))
}

/// The usable records of the cluster and the listing's revision; unusable
/// ones are logged and skipped.
fn records(view: &ClusterView) -> Result<(Vec<NodeRecord>, i64), CtlError> {
    let listing = view
        .list()
        .map_err(|e| CtlError::from_membership(e, &view.config().endpoints))?;
    let records = listing
        .records
        .into_iter()
        .filter_map(|(id, r)| match r {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(id, error = %e, "skipping an unusable node record");
                None
            }
        })
        .collect();
    Ok((records, listing.revision))
}

/// The record of the node `wanted` (`ID|NAME`) names.
fn find(config: &EtcdConfig, wanted: &str) -> Result<NodeRecord, CtlError> {
    let (records, _) = records(&connect(config)?)?;
    resolve(&records, wanted, &config.cluster).cloned()
}

fn nodes(config: &EtcdConfig, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let (records, _) = records(&connect(config)?)?;
    let now = unix_now();
    let rows: Vec<Row> = records.iter().map(|r| Row::of(r, now)).collect();
    if json {
        writeln!(out, "{}", render::json(&rows))?;
    } else {
        write!(out, "{}", render::table(&rows))?;
    }
    Ok(())
}

/// How long one wait for a change may last when nothing bounds the watch.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

fn watch(
    config: &EtcdConfig,
    count: Option<u64>,
    duration: Option<Duration>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let deadline = duration.map(|d| Instant::now() + d);
    let view = connect(config)?;
    let (records, revision) = records(&view)?;
    writeln!(
        out,
        "# cluster {}: {} node(s) at revision {revision}; watching for changes",
        config.cluster,
        records.len()
    )?;
    out.flush()?;
    let unreachable = |e| CtlError::from_membership(e, &config.endpoints);
    let mut changes = view.watch(revision + 1).map_err(unreachable)?;
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => IDLE_WAIT,
        };
        if wait.is_zero() {
            break;
        }
        if let Some(change) = changes.next_within(wait).map_err(unreachable)? {
            writeln!(out, "{}", render::change_line(&change))?;
            out.flush()?;
            seen += 1;
        }
    }
    Ok(())
}

/// One request on `channel` through a temporary node joined to the
/// cluster, everything within `timeout`; the reply and the request's own
/// latency (joining and waiting for a provider not included).
fn request(
    config: &EtcdConfig,
    tcp: SocketAddr,
    channel: u16,
    payload: &[u8],
    timeout: Duration,
) -> Result<(Vec<u8>, Duration), CtlError> {
    let started = Instant::now();
    let mut etcd = config.clone();
    etcd.join_timeout = timeout;
    let node = Node::builder("domictl")
        .cluster(config.cluster.clone())
        .tcp(tcp)
        .shards(1)
        .small()
        .spin_before_park(Duration::ZERO)
        .etcd_config(move |c| *c = etcd)
        .start()
        .map_err(|e| CtlError::from_start(e, &config.endpoints))?;
    let left = || timeout.saturating_sub(started.elapsed());
    let outcome = node
        .wait_for_provider(Channel(channel), left())
        .map_err(|_| CtlError::NoProvider {
            channel,
            waited: started.elapsed(),
        })
        .and_then(|()| {
            let sent = Instant::now();
            node.request(
                Channel(channel),
                payload,
                left().max(Duration::from_millis(1)),
            )
            .map(|reply| (reply, sent.elapsed()))
            .map_err(|source| CtlError::Request { channel, source })
        });
    node.stop();
    outcome
}
