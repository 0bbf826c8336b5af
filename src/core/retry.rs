//! Which failures are worth another try, and when.
//!
//! | failure | portal executed it? | retried |
//! |---|---|---|
//! | `expired_token` (401) | no | after one shared token refresh, up to three refreshes a call |
//! | `QUERY_LIMIT_EXCEEDED` (503) | no | yes, after the rate limiter has drained |
//! | `OPERATION_TIME_LIMIT` (429) | no | yes, once the method's operating time has reset |
//! | `NETWORK`, `TIMEOUT`, 5xx, `BAD_RESPONSE` | maybe | only calls that are safe to repeat |
//! | anything else (`ACCESS_DENIED`, `ERROR_ARGUMENT`, ...) | – | never |
//!
//! "Safe to repeat" means idempotent: reads, `event.offline.clear`, re-selecting a reservation by
//! `process_id`. A destructive read (`clear=1`) or a fresh reservation is never repeated after an
//! ambiguous failure: the first attempt may have taken the events, and the caller must find out
//! (the reservation flow does, through its journal and `list` sweep) instead of guessing.

use super::error::Kind;

/// Whether repeating a call cannot do harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Safe,
    Unsafe,
}

/// Methods that only read (a name heuristic for `call()`; `event.offline.get` is not one).
pub fn is_read_method(method: &str) -> bool {
    const READS: &[&str] = &[
        "event.get",
        "events",
        "feature.get",
        "app.info",
        "profile",
        "user.current",
        "scope",
        "methods",
        "method.get",
        "server.time",
        "event.offline.list",
    ];
    if READS.contains(&method) {
        return true;
    }
    method != "event.offline.get"
        && (method.ends_with(".get") || method.ends_with(".list") || method.ends_with(".fields"))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    pub base_ms: f64,
    pub cap_ms: f64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 6,
            base_ms: 300.0,
            cap_ms: 30_000.0,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with jitter: a delay in [d/2, d], d = base * 2^attempt, capped.
    pub fn backoff_ms(&self, attempt: u32, random: f64) -> f64 {
        let d = (self.base_ms * 2f64.powi(attempt.min(30) as i32)).min(self.cap_ms);
        d * (0.5 + 0.5 * random.clamp(0.0, 1.0))
    }
}

/// Token refreshes one call may go through: a second `expired_token` right after a refresh
/// (a token the portal had not taken up yet, a refresh racing another) gets a fresh refresh,
/// a bounded number of times. Refreshes are not retries: `retries: 0` still refreshes.
pub const MAX_REFRESHES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Refresh the token (once), then send again.
    Refresh,
    /// Send again after at least this many milliseconds (the limiter may add more).
    Retry(f64),
    GiveUp,
}

/// What to do after a failed attempt: `attempt` retries and `refreshes` refreshes so far.
pub fn decide(
    kind: Kind,
    idempotency: Idempotency,
    attempt: u32,
    refreshes: u32,
    policy: &RetryPolicy,
    random: f64,
) -> Decision {
    if kind == Kind::RefreshAuth {
        return if refreshes < MAX_REFRESHES {
            Decision::Refresh
        } else {
            Decision::GiveUp
        };
    }
    if attempt >= policy.max_retries {
        return Decision::GiveUp;
    }
    match kind {
        Kind::RefreshAuth | Kind::Fatal => Decision::GiveUp,
        // Nothing was executed: waiting is enough, the limiter knows how long.
        Kind::RateLimited | Kind::OperatingLimited => Decision::Retry(policy.backoff_ms(0, random)),
        Kind::Transient if idempotency == Idempotency::Safe => {
            Decision::Retry(policy.backoff_ms(attempt, random))
        }
        Kind::Transient => Decision::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let p = RetryPolicy::default();
        assert_eq!(
            decide(Kind::RefreshAuth, Idempotency::Unsafe, 0, 0, &p, 0.5),
            Decision::Refresh
        );
        assert_eq!(
            decide(Kind::RefreshAuth, Idempotency::Unsafe, 1, 1, &p, 0.5),
            Decision::Refresh,
            "a second expired_token after a refresh gets another"
        );
        assert_eq!(
            decide(
                Kind::RefreshAuth,
                Idempotency::Unsafe,
                0,
                MAX_REFRESHES,
                &p,
                0.5
            ),
            Decision::GiveUp
        );
        let none = RetryPolicy {
            max_retries: 0,
            ..p
        };
        assert_eq!(
            decide(Kind::RefreshAuth, Idempotency::Unsafe, 0, 0, &none, 0.5),
            Decision::Refresh,
            "a refresh is not a retry: retries 0 still refreshes"
        );
        assert_eq!(
            decide(Kind::RateLimited, Idempotency::Unsafe, 0, 0, &none, 0.5),
            Decision::GiveUp
        );
        assert!(matches!(
            decide(Kind::RateLimited, Idempotency::Unsafe, 2, 0, &p, 0.5),
            Decision::Retry(_)
        ));
        assert!(matches!(
            decide(Kind::Transient, Idempotency::Safe, 2, 0, &p, 0.5),
            Decision::Retry(_)
        ));
        assert_eq!(
            decide(Kind::Transient, Idempotency::Unsafe, 0, 0, &p, 0.5),
            Decision::GiveUp
        );
        assert_eq!(
            decide(
                Kind::Transient,
                Idempotency::Safe,
                p.max_retries,
                0,
                &p,
                0.5
            ),
            Decision::GiveUp
        );
        assert_eq!(
            decide(Kind::Fatal, Idempotency::Safe, 0, 0, &p, 0.5),
            Decision::GiveUp
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let p = RetryPolicy {
            max_retries: 5,
            base_ms: 100.0,
            cap_ms: 1000.0,
        };
        assert_eq!(p.backoff_ms(0, 1.0), 100.0);
        assert_eq!(p.backoff_ms(0, 0.0), 50.0);
        assert_eq!(p.backoff_ms(3, 1.0), 800.0);
        assert_eq!(p.backoff_ms(10, 1.0), 1000.0);
    }

    #[test]
    fn read_methods() {
        assert!(
            is_read_method("crm.deal.get")
                && is_read_method("crm.deal.list")
                && is_read_method("event.offline.list")
        );
        assert!(
            !is_read_method("event.offline.get")
                && !is_read_method("crm.deal.add")
                && !is_read_method("event.offline.clear")
        );
    }
}
