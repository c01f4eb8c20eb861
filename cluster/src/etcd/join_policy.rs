//! How the first registration retries: pure decisions, with the elapsed time,
//! the attempt count and the jitter draw passed in.
//!
//! A node joining through etcd makes attempts (take a lease, claim a free
//! id). An attempt that fails with an error retrying can fix (etcd
//! unreachable, overloaded, too slow) is retried with jittered exponential
//! backoff until the join timeout; an error retrying cannot fix (invalid
//! configuration, authentication refused) ends the join at once. A full
//! cluster is retried for one lease TTL and a request timeout, within the
//! join timeout: the ids of nodes that are leaving, or that died, free up
//! within that time (a rolling restart starts the new node before the old
//! one has left); a cluster still full after it is full.
//!
//! Time limits: an attempt may use what is left of the join timeout and at
//! least one request timeout; the last retry starts no later than the join
//! timeout. So a join gives up within `join_timeout + request_timeout`.

use std::time::Duration;

use domi_core::backoff::Backoff;
use domi_core::timeouts::MAX_WAIT;

use super::EtcdConfig;

/// Whether retrying can fix a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Unreachable, overloaded, timed out, lost a lease while slow: try again.
    Transient,
    /// Invalid configuration, authentication or permission refused, a
    /// request etcd rejects as invalid: give up at once.
    Permanent,
    /// Every id is taken, and has been for this long: try again until
    /// [`JoinPolicy::full_wait`] has passed.
    Full(Duration),
}

/// Why the join gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// The failure cannot be fixed by retrying.
    Permanent,
    /// The join timeout has passed.
    TimedOut,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait this long, then attempt again.
    Retry(Duration),
    /// Stop and report the failure.
    GiveUp(GiveUp),
}

/// The join's time limits and backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JoinPolicy {
    /// Retries start no later than this after the first attempt began.
    pub(crate) timeout: Duration,
    /// The bound of one etcd request; an attempt always gets at least this.
    pub(crate) request_timeout: Duration,
    /// Delay between attempts.
    pub(crate) backoff: Backoff,
    /// How long a full cluster is waited for: one lease TTL (the cluster's,
    /// taken to be this node's), within which the id of a node that left or
    /// died frees up, and one request timeout for etcd to expire it late.
    pub(crate) full_wait: Duration,
}

/// Extra time the node waits for its discovery thread's answer beyond the
/// join's own limit (starting the thread and its runtime, a last revoke).
const ANSWER_SLACK: Duration = Duration::from_secs(5);

impl JoinPolicy {
    /// The policy of `config`: its join timeout, request timeout and backoff.
    pub(crate) fn of(config: &EtcdConfig) -> JoinPolicy {
        JoinPolicy {
            timeout: config.join_timeout,
            request_timeout: config.request_timeout,
            backoff: config.backoff,
            full_wait: config.ttl().saturating_add(config.request_timeout),
        }
    }

    /// How long the node waits for the discovery thread to report the join's
    /// outcome before declaring the thread stuck: the join's own limit plus
    /// a slack. Only a thread that hangs ever reaches it.
    pub(crate) fn answer_wait(&self) -> Duration {
        self.grace_left(Duration::ZERO)
            .saturating_add(ANSWER_SLACK)
            .min(MAX_WAIT)
    }

    fn timeout(&self) -> Duration {
        self.timeout.min(MAX_WAIT)
    }

    /// The time the attempt starting `elapsed` after the first one may take:
    /// what is left of the join timeout, and at least one request timeout.
    pub(crate) fn attempt_budget(&self, elapsed: Duration) -> Duration {
        self.timeout()
            .saturating_sub(elapsed)
            .max(self.request_timeout.min(MAX_WAIT))
    }

    /// The time left, `elapsed` after the first attempt began, before the
    /// join overruns its promise of `join timeout + request timeout` (for
    /// best-effort clean-up on the way out).
    pub(crate) fn grace_left(&self, elapsed: Duration) -> Duration {
        self.timeout()
            .saturating_add(self.request_timeout.min(MAX_WAIT))
            .saturating_sub(elapsed)
    }

    /// How long revoking a failed attempt's lease may take, `elapsed` after
    /// the first attempt began, before `next`: a retry must still start
    /// within the join timeout, giving up within the join's promise; never
    /// more than one request timeout.
    pub(crate) fn revoke_budget(&self, next: Next, elapsed: Duration) -> Duration {
        let left = match next {
            Next::Retry(_) => self.timeout().saturating_sub(elapsed),
            Next::GiveUp(_) => self.grace_left(elapsed),
        };
        left.min(self.request_timeout)
    }

    /// What to do after attempt number `attempts` (1-based) failed with an
    /// error of `kind`, `elapsed` after the first attempt began; `unit` in
    /// `[0, 1)` is the jitter draw. A retry never starts after the join
    /// timeout: the last delay is cut short to start at it.
    pub(crate) fn after_failure(
        &self,
        elapsed: Duration,
        attempts: u32,
        kind: ErrorKind,
        unit: f64,
    ) -> Next {
        let mut left = self.timeout().saturating_sub(elapsed);
        match kind {
            ErrorKind::Permanent => return Next::GiveUp(GiveUp::Permanent),
            ErrorKind::Full(waited) if waited >= self.full_wait => {
                return Next::GiveUp(GiveUp::Permanent)
            }
            // The last look at the ids comes when the wait is up.
            ErrorKind::Full(waited) => left = left.min(self.full_wait - waited),
            ErrorKind::Transient => {}
        }
        if left.is_zero() {
            return Next::GiveUp(GiveUp::TimedOut);
        }
        let delay = self.backoff.delay(attempts.saturating_sub(1), unit);
        Next::Retry(delay.min(left))
    }
}

// gRPC status codes (the numbers are fixed by the gRPC specification).
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const NOT_FOUND: i32 = 5;
const ALREADY_EXISTS: i32 = 6;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const FAILED_PRECONDITION: i32 = 9;
const ABORTED: i32 = 10;
const OUT_OF_RANGE: i32 = 11;
const UNIMPLEMENTED: i32 = 12;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;
const DATA_LOSS: i32 = 15;
const UNAUTHENTICATED: i32 = 16;

/// Whether retrying can fix a gRPC error with status `code` and `message`
/// from etcd or its client.
///
/// Transient: unavailable (no leader, connection refused or lost, etcd's
/// `request timed out`), deadline exceeded, cancelled (the client's request
/// timeout), too many requests, aborted, internal and unknown errors (h2
/// errors surface as these), and a lease not found (it expired while an
/// attempt was slow; the next attempt takes a new one).
///
/// Permanent: invalid argument (etcd's `authentication failed`, `user name is
/// empty`), permission denied, unauthenticated (`invalid auth token`), failed
/// precondition, out of range (e.g. a lease TTL too large), unimplemented,
/// data loss, and resource exhausted when the database is out of space (an
/// operator must act; `too many requests` is transient).
pub(crate) fn status_kind(code: i32, message: &str) -> ErrorKind {
    match code {
        CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | NOT_FOUND | ABORTED | INTERNAL | UNAVAILABLE => {
            ErrorKind::Transient
        }
        RESOURCE_EXHAUSTED if message.contains("space exceeded") => ErrorKind::Permanent,
        RESOURCE_EXHAUSTED => ErrorKind::Transient,
        INVALID_ARGUMENT | ALREADY_EXISTS | PERMISSION_DENIED | FAILED_PRECONDITION
        | OUT_OF_RANGE | UNIMPLEMENTED | DATA_LOSS | UNAUTHENTICATED => ErrorKind::Permanent,
        // OK (0) is never an error; an unknown code is treated as a hiccup.
        _ => ErrorKind::Transient,
    }
}

/// What a permanent refusal from etcd is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The user name or password is wrong (or the user unknown), or the
    /// token is refused even after authenticating again.
    Credentials,
    /// etcd has authentication enabled and the node sent no user.
    NoCredentials,
    /// Anything else (permission denied, an invalid request, …).
    Other,
}

/// What a permanent gRPC error with `code` and `message` refuses.
///
/// etcd answers a wrong password or an unknown user with invalid argument
/// `authentication failed, invalid user ID or password`, a request without a
/// user (authentication enabled) with invalid argument `user name is empty`,
/// and a token it does not know with unauthenticated `invalid auth token`
/// (the client authenticates again once before passing that on).
pub(crate) fn refusal(code: i32, message: &str) -> Refusal {
    match code {
        INVALID_ARGUMENT
            if message.contains("authentication failed")
                || message.contains("invalid user ID or password") =>
        {
            Refusal::Credentials
        }
        INVALID_ARGUMENT if message.contains("user name is empty") => Refusal::NoCredentials,
        UNAUTHENTICATED => Refusal::Credentials,
        _ => Refusal::Other,
    }
}

/// Whether a gRPC status `code` is what a connection closed, refused or
/// lost gives (cancelled, unavailable, unknown). Over TLS it may hide a
/// certificate etcd refuses, which a handshake probe tells apart.
pub(crate) fn is_connection_loss(code: i32) -> bool {
    matches!(code, CANCELLED | UNAVAILABLE | UNKNOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn policy(timeout_ms: u64) -> JoinPolicy {
        JoinPolicy {
            timeout: ms(timeout_ms),
            request_timeout: ms(2_000),
            backoff: Backoff {
                base: ms(100),
                max: ms(2_000),
            },
            full_wait: ms(3_000),
        }
    }

    #[test]
    fn the_default_config_retries_for_30_s() {
        let p = JoinPolicy::of(&EtcdConfig::new(["http://127.0.0.1:2379"]));
        assert_eq!(p.timeout, ms(30_000));
        assert_eq!(p.request_timeout, ms(2_000));
        assert!(matches!(
            p.after_failure(ms(29_000), 20, ErrorKind::Transient, 0.5),
            Next::Retry(_)
        ));
    }

    #[test]
    fn transient_failures_back_off_exponentially_with_jitter() {
        let p = policy(30_000);
        let t = ErrorKind::Transient;
        assert_eq!(p.after_failure(ms(0), 1, t, 1.0), Next::Retry(ms(100)));
        assert_eq!(p.after_failure(ms(0), 1, t, 0.0), Next::Retry(ms(50)));
        assert_eq!(p.after_failure(ms(500), 2, t, 1.0), Next::Retry(ms(200)));
        assert_eq!(p.after_failure(ms(900), 4, t, 1.0), Next::Retry(ms(800)));
        assert_eq!(
            p.after_failure(ms(9_000), 12, t, 1.0),
            Next::Retry(ms(2_000))
        );
        for i in 0..10 {
            let Next::Retry(d) = p.after_failure(ms(1_000), 3, t, i as f64 / 10.0) else {
                panic!("a transient failure inside the timeout is retried");
            };
            assert!(d >= ms(200) && d <= ms(400), "{d:?}");
        }
    }

    #[test]
    fn the_last_retry_starts_at_the_timeout_and_none_after() {
        let p = policy(2_000);
        let t = ErrorKind::Transient;
        assert_eq!(p.after_failure(ms(1_900), 6, t, 1.0), Next::Retry(ms(100)));
        assert_eq!(p.after_failure(ms(1_999), 1, t, 1.0), Next::Retry(ms(1)));
        assert_eq!(
            p.after_failure(ms(2_000), 7, t, 1.0),
            Next::GiveUp(GiveUp::TimedOut)
        );
        assert_eq!(
            p.after_failure(ms(5_000), 1, t, 0.0),
            Next::GiveUp(GiveUp::TimedOut)
        );
    }

    #[test]
    fn permanent_failures_give_up_at_once() {
        let p = policy(30_000);
        assert_eq!(
            p.after_failure(ms(0), 1, ErrorKind::Permanent, 0.5),
            Next::GiveUp(GiveUp::Permanent)
        );
        assert_eq!(
            p.after_failure(ms(40_000), 9, ErrorKind::Permanent, 0.5),
            Next::GiveUp(GiveUp::Permanent)
        );
    }

    #[test]
    fn a_full_cluster_is_waited_for_one_lease_ttl_within_the_timeout() {
        let p = policy(10_000);
        let full = |waited| ErrorKind::Full(ms(waited));
        // (elapsed, attempts, waited while full) and what follows.
        let cases = [
            (0, 1, 0, Next::Retry(ms(100))),
            // The last look at the ids comes when the wait is up, not later.
            (2_500, 6, 2_500, Next::Retry(ms(500))),
            (3_000, 7, 3_000, Next::GiveUp(GiveUp::Permanent)),
            // Full only after other failures: the wait counts from the first
            // time every id was taken.
            (8_000, 9, 1_000, Next::Retry(ms(2_000))),
            // The join timeout still bounds it.
            (10_000, 9, 1_000, Next::GiveUp(GiveUp::TimedOut)),
        ];
        for (elapsed, attempts, waited, want) in cases {
            assert_eq!(
                p.after_failure(ms(elapsed), attempts, full(waited), 1.0),
                want,
                "{elapsed} ms, attempt {attempts}, full for {waited} ms"
            );
        }
        let p = JoinPolicy::of(&EtcdConfig::new(["http://127.0.0.1:2379"]));
        assert_eq!(
            p.full_wait,
            ms(5_000),
            "one default lease TTL and request timeout"
        );
    }

    #[test]
    fn a_failed_attempts_lease_is_revoked_within_the_joins_limits() {
        let p = policy(10_000);
        let retry = Next::Retry(ms(100));
        let give_up = Next::GiveUp(GiveUp::TimedOut);
        assert_eq!(p.revoke_budget(retry, ms(1_000)), ms(2_000));
        assert_eq!(p.revoke_budget(retry, ms(9_500)), ms(500));
        assert_eq!(p.revoke_budget(give_up, ms(10_000)), ms(2_000));
        assert_eq!(p.revoke_budget(give_up, ms(11_500)), ms(500));
        assert_eq!(p.revoke_budget(give_up, ms(13_000)), ms(0));
    }

    #[test]
    fn a_zero_timeout_means_one_attempt() {
        let p = policy(0);
        assert_eq!(p.attempt_budget(ms(0)), ms(2_000));
        assert_eq!(
            p.after_failure(ms(0), 1, ErrorKind::Transient, 0.5),
            Next::GiveUp(GiveUp::TimedOut)
        );
    }

    #[test]
    fn attempts_get_what_is_left_and_at_least_one_request_timeout() {
        let p = policy(30_000);
        assert_eq!(p.attempt_budget(ms(0)), ms(30_000));
        assert_eq!(p.attempt_budget(ms(25_000)), ms(5_000));
        assert_eq!(p.attempt_budget(ms(29_000)), ms(2_000));
        assert_eq!(p.attempt_budget(ms(30_000)), ms(2_000));
        // So a join ends by timeout + request timeout:
        for start in [0, 1_000, 27_999, 29_500, 30_000] {
            assert!(ms(start) + p.attempt_budget(ms(start)) <= ms(32_000));
        }
        assert_eq!(p.grace_left(ms(31_000)), ms(1_000));
        assert_eq!(p.grace_left(ms(33_000)), ms(0));
        assert_eq!(p.answer_wait(), ms(37_000));
    }

    #[test]
    fn huge_timeouts_do_not_overflow() {
        let p = JoinPolicy {
            timeout: Duration::MAX,
            request_timeout: Duration::MAX,
            ..policy(0)
        };
        assert_eq!(p.attempt_budget(ms(0)), MAX_WAIT);
        assert!(p.grace_left(ms(0)) >= MAX_WAIT);
        assert_eq!(p.answer_wait(), MAX_WAIT);
        assert!(matches!(
            p.after_failure(ms(0), u32::MAX, ErrorKind::Transient, 1.0),
            Next::Retry(_)
        ));
    }

    #[test]
    fn grpc_errors_are_classified() {
        use ErrorKind::*;
        let cases = [
            (
                UNAVAILABLE,
                "error trying to connect: Connection refused",
                Transient,
            ),
            (UNAVAILABLE, "etcdserver: request timed out", Transient),
            (UNAVAILABLE, "etcdserver: no leader", Transient),
            (CANCELLED, "Timeout expired", Transient),
            (DEADLINE_EXCEEDED, "context deadline exceeded", Transient),
            (
                RESOURCE_EXHAUSTED,
                "etcdserver: too many requests",
                Transient,
            ),
            (
                NOT_FOUND,
                "etcdserver: requested lease not found",
                Transient,
            ),
            (UNKNOWN, "h2 protocol error", Transient),
            (
                RESOURCE_EXHAUSTED,
                "etcdserver: mvcc: database space exceeded",
                Permanent,
            ),
            (
                INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password",
                Permanent,
            ),
            (
                INVALID_ARGUMENT,
                "etcdserver: user name is empty",
                Permanent,
            ),
            (UNAUTHENTICATED, "etcdserver: invalid auth token", Permanent),
            (
                PERMISSION_DENIED,
                "etcdserver: permission denied",
                Permanent,
            ),
            (OUT_OF_RANGE, "etcdserver: too large lease TTL", Permanent),
            (99, "from the future", Transient),
        ];
        for (code, message, kind) in cases {
            assert_eq!(status_kind(code, message), kind, "{code} {message}");
        }
    }

    #[test]
    fn authentication_refusals_are_told_apart() {
        use Refusal::*;
        let cases = [
            (
                INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password",
                Credentials,
            ),
            (
                UNAUTHENTICATED,
                "etcdserver: invalid auth token",
                Credentials,
            ),
            (
                INVALID_ARGUMENT,
                "etcdserver: user name is empty",
                NoCredentials,
            ),
            (PERMISSION_DENIED, "etcdserver: permission denied", Other),
            (OUT_OF_RANGE, "etcdserver: too large lease TTL", Other),
        ];
        for (code, message, refusal_is) in cases {
            assert_eq!(refusal(code, message), refusal_is, "{code} {message}");
            assert_eq!(status_kind(code, message), ErrorKind::Permanent);
        }
        assert!(is_connection_loss(CANCELLED));
        assert!(is_connection_loss(UNAVAILABLE));
        assert!(!is_connection_loss(INVALID_ARGUMENT));
    }
}
