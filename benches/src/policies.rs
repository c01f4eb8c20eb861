//! The cost of the resilience policies at 64 requests in flight: the
//! default (circuit breakers on, no rate limit), a rate limit on the
//! server's channel that is never reached (every request takes a token), and
//! the breakers off, the three pairs alternating repetition by repetition.

use anyhow::Result;
use indicatif::ProgressBar;

use crate::bus::{Client, ServerProcess};
use crate::report::Report;
use crate::{server_args, Plan};

/// Progress steps per repetition.
pub const STEPS: usize = 3;

/// Measures the three rows (see the module docs).
pub fn run(plan: &Plan, report: &mut Report, bar: &ProgressBar) -> Result<()> {
    let start = |rate: Option<u32>, breaker: bool| -> Result<(ServerProcess, Client)> {
        let mut args = server_args(1, vec![plan.sc], plan.spin_us);
        args.rate_limit = rate;
        let server = ServerProcess::start(&args)?;
        let client = Client::start_configured(server.addr, 1, &[plan.cc], plan.spin(), |b| {
            if breaker {
                b
            } else {
                b.no_breaker()
            }
        })?;
        Ok((server, client))
    };
    let pairs = [
        (
            "policies_default_rr64",
            "request 64 in flight: default (breakers on)",
            start(None, true)?,
        ),
        (
            "policies_limited_rr64",
            "request 64 in flight: + rate limit never reached",
            start(Some(1_000_000_000), true)?,
        ),
        (
            "policies_nobreaker_rr64",
            "request 64 in flight: breakers off",
            start(None, false)?,
        ),
    ];
    let mut rates = vec![Vec::new(); pairs.len()];
    let count = plan.inflight_count() / 2;
    for _ in 0..plan.reps {
        for (i, (_, label, (_, client))) in pairs.iter().enumerate() {
            bar.set_message(label.to_string());
            rates[i].push(client.request_reply(64, count, count / 10, 64)?.1);
            bar.inc(1);
        }
    }
    for ((key, label, (server, client)), rates) in pairs.into_iter().zip(rates) {
        let base = (key != "policies_default_rr64").then_some("policies_default_rr64");
        report.add(key, label, "replies/s", true, rates, base);
        client.node.stop();
        drop(server);
    }
    Ok(())
}
