//! Which etcd members stay in etcd-client's balance.
//!
//! etcd-client balances every call over all its endpoints, and its channel
//! keeps sending a share of the calls (streams included) to a member that is
//! down, each failing at once with a transport error. With one member of
//! three down, most attempts to join or to set up a session (several calls)
//! would fail, and a lease (TTL 3 s by default) could expire before one
//! succeeds. So before each such attempt every member is probed with a TCP
//! connect, and those that refuse are taken out of the balance until they
//! answer again ([`rebalance`]); the decision itself is [`plan`], pure.

use std::time::Duration;

use etcd_client::Client;
use tracing::{info, warn};

use super::tls_probe;

/// The changes to the balance, given which `endpoints` accepted a
/// connection now (`up`, in the same order) and which are left out already:
/// `(put back, take out)`. When none is up, every one is put back (let
/// etcd-client keep trying them all rather than none).
pub(super) fn plan<'a>(
    endpoints: &'a [String],
    up: &[bool],
    left_out: &[String],
) -> (Vec<&'a String>, Vec<&'a String>) {
    let none_up = !up.contains(&true);
    let (mut back, mut out) = (Vec::new(), Vec::new());
    for (ep, &up) in endpoints.iter().zip(up) {
        let was_out = left_out.contains(ep);
        if (up || none_up) && was_out {
            back.push(ep);
        } else if !up && !none_up && !was_out {
            out.push(ep);
        }
    }
    (back, out)
}

/// Probes every member (concurrently, each for at most `within`) and applies
/// [`plan`] to `client`'s balance, keeping `left_out` current. Nothing to do
/// with fewer than two endpoints.
pub(super) async fn rebalance(
    client: &Client,
    endpoints: &[String],
    left_out: &mut Vec<String>,
    within: Duration,
) {
    if endpoints.len() < 2 {
        return;
    }
    let probes: Vec<_> = endpoints
        .iter()
        .map(|ep| {
            let target = tls_probe::host_port(ep);
            tokio::spawn(async move {
                let Some((host, port)) = target else {
                    return true; // not ours to judge: leave it to etcd-client
                };
                let connect = tokio::net::TcpStream::connect((host, port));
                matches!(tokio::time::timeout(within, connect).await, Ok(Ok(_)))
            })
        })
        .collect();
    let mut up = Vec::with_capacity(probes.len());
    for p in probes {
        up.push(p.await.unwrap_or(true));
    }
    let (back, out) = plan(endpoints, &up, left_out);
    for ep in back {
        match client.add_endpoint(ep).await {
            Ok(()) => {
                left_out.retain(|e| e != ep);
                info!(endpoint = %ep, "etcd member reachable again; back in the balance");
            }
            Err(e) => {
                warn!(endpoint = %ep, error = %e, "cannot put an etcd member back in the balance")
            }
        }
    }
    for ep in out {
        match client.remove_endpoint(ep).await {
            Ok(()) => {
                left_out.push(ep.clone());
                warn!(endpoint = %ep, "etcd member unreachable; left out of the balance until it answers again");
            }
            Err(e) => {
                warn!(endpoint = %ep, error = %e, "cannot take an etcd member out of the balance")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    #[test]
    fn members_that_refuse_leave_and_come_back() {
        let e = eps();
        let (back, out) = plan(&e, &[true, false, true], &[]);
        assert!(back.is_empty());
        assert_eq!(out, [&e[1]]);
        // Still down: nothing changes.
        let left = vec![e[1].clone()];
        assert_eq!(plan(&e, &[true, false, true], &left), (vec![], vec![]));
        // Up again: back in.
        assert_eq!(plan(&e, &[true, true, true], &left), (vec![&e[1]], vec![]));
    }

    #[test]
    fn with_none_up_every_member_stays_in() {
        let e = eps();
        assert_eq!(plan(&e, &[false, false, false], &[]), (vec![], vec![]));
        let left = vec![e[0].clone()];
        assert_eq!(
            plan(&e, &[false, false, false], &left),
            (vec![&e[0]], vec![])
        );
    }
}
