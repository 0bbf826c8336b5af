//! The options of the queue's runs (`reserve`, `take`, `recover`, `consume`), resolved from what
//! the app passed into typed settings: every default and every bound is here, once, so each
//! binding only reads fields and the native tests hold the rules.

use super::args::Tree;
use super::digits::decimal;
use super::error::{B24Error, Result};
use super::objects::Objects;
use super::offline::GetArgs;
use super::platform::MAX_RESPONSE_BYTES;
use super::time::MAX_DELAY_MS;
use super::validate;
use crate::core::text::concat;

/// The app's options object as a binding reads it: a field by name, checked to be of the kind
/// asked for (a finite number, a string, a boolean, a filter tree), `None` when absent (`undefined`
/// or `null`). A field of the wrong kind is an `invalid_argument` error naming the field, never
/// echoing its value.
pub trait Given: Sized {
    fn number(&self, key: &str) -> Result<Option<f64>>;
    fn text(&self, key: &str) -> Result<Option<String>>;
    fn flag(&self, key: &str) -> Result<Option<bool>>;
    fn tree(&self, key: &str) -> Result<Option<Tree>>;
    /// The field as options of its own, when it is an object (`errors: { retries: 3 }`).
    fn nested(&self, key: &str) -> Option<Self>;
}

/// What happens to events that fail again after coming from the error queue. The portal cannot
/// mark such a record again: `event.offline.error` leaves it reserved (and would delete newer
/// changes of the same object), so the library never calls it for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorPolicy {
    /// Leave the error queue alone.
    Skip,
    /// Drain it after the main queue; what fails again stays reserved and journaled ("parked")
    /// and is handed over again at the next run.
    Include,
    /// Like `Include`, but after this many failed attempts the events are given up: cleared,
    /// and reported as dead letters.
    Retry(u32),
}

/// What happens to rows of a reservation that are not readable events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedPolicy {
    /// Reported, then left reserved (the portal deletes them after 30 days).
    Park,
    /// Reported, then deleted (`event.offline.clear`).
    Clear,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub limit: Option<f64>,
    pub concurrency: usize,
    pub errors: ErrorPolicy,
    pub malformed: MalformedPolicy,
    /// Keep polling when the queue is empty: (first delay, longest delay) in ms.
    pub poll: Option<(f64, f64)>,
    /// A handler that has not settled after this long fails its batch.
    pub handler_timeout_ms: f64,
    pub filter: Option<Tree>,
    pub order: Option<Tree>,
    /// Fetch the objects the events name before the handler sees them (`objects`).
    pub objects: Option<Objects>,
}

/// A reservation older than this, found by a sweep and journaled by nobody, is stranded.
pub const STRANDED_AFTER_MS: f64 = 10.0 * 60_000.0;
/// How long a handler may take with one batch by default.
pub const HANDLER_TIMEOUT_MS: f64 = 5.0 * 60_000.0;

/// The shortest `strandedAfterMs` that is safe: a consumer reserves (one request), runs the
/// handler, then settles (up to three requests: clear, re-select, error) before anyone may
/// take its reservation over.
pub fn min_stranded_after_ms(handler_timeout_ms: f64, request_timeout_ms: f64) -> f64 {
    handler_timeout_ms + 4.0 * request_timeout_ms + 1000.0
}

/// Checks `strandedAfterMs` against its safe minimum.
pub fn check_stranded_after(
    ms: f64,
    handler_timeout_ms: f64,
    request_timeout_ms: f64,
) -> Result<()> {
    let min = min_stranded_after_ms(handler_timeout_ms, request_timeout_ms);
    if ms >= min {
        return Ok(());
    }
    Err(B24Error::invalid(
        "strandedAfterMs",
        &concat(&[
            "must be at least ",
            &decimal(min as u64),
            " ms: the handler timeout plus four request timeouts plus a second, the longest a live consumer may hold a reservation (lower handlerTimeoutMs or timeoutMs to go lower)",
        ]),
    ))
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limit: None,
            concurrency: 1,
            errors: ErrorPolicy::Include,
            malformed: MalformedPolicy::Park,
            poll: None,
            handler_timeout_ms: HANDLER_TIMEOUT_MS,
            filter: None,
            order: None,
            objects: None,
        }
    }
}

/// A delay option: a positive whole number of ms, at most what `setTimeout` takes.
pub(crate) fn delay(given: &impl Given, key: &str, default: f64) -> Result<f64> {
    Ok(match given.number(key)? {
        Some(d) => (validate::positive(key, d)? as f64).min(MAX_DELAY_MS),
        None => default,
    })
}

/// The largest `maxResponseBytes` (256 MiB: well within what a JavaScript string holds).
pub const MAX_RESPONSE_BYTES_BOUND: f64 = (256 << 20) as f64;

/// `maxResponseBytes`, the longest answer read (REST calls, batches, the OAuth server's): a
/// whole number of bytes from 1 to 256 MiB, [`MAX_RESPONSE_BYTES`] (8 MiB) when not given.
pub fn max_response_bytes(given: &impl Given) -> Result<u32> {
    const KEY: &str = "maxResponseBytes";
    match given.number(KEY)? {
        None => Ok(MAX_RESPONSE_BYTES),
        Some(n) if n.fract() == 0.0 && (1.0..=MAX_RESPONSE_BYTES_BOUND).contains(&n) => {
            Ok(n as u32)
        }
        Some(_) => Err(B24Error::invalid(
            KEY,
            "must be a whole number of bytes from 1 to 268435456 (256 MiB)",
        )),
    }
}

/// How long reservations are held and handled (`handlerTimeoutMs`, `strandedAfterMs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holds {
    /// A reservation older than this, journaled by nobody, may be taken over.
    pub hold_ms: f64,
    pub handler_timeout_ms: f64,
}

impl Holds {
    /// `strandedAfterMs` is at least its safe minimum for these timeouts, and by default at
    /// least ten minutes.
    pub fn resolve(given: &impl Given, request_timeout_ms: f64) -> Result<Holds> {
        let handler_timeout_ms = delay(given, "handlerTimeoutMs", HANDLER_TIMEOUT_MS)?;
        let hold_ms = match given.number("strandedAfterMs")? {
            Some(ms) => {
                let ms = validate::positive("strandedAfterMs", ms)? as f64;
                check_stranded_after(ms, handler_timeout_ms, request_timeout_ms)?;
                ms
            }
            None => STRANDED_AFTER_MS.max(min_stranded_after_ms(
                handler_timeout_ms,
                request_timeout_ms,
            )),
        };
        Ok(Holds {
            hold_ms,
            handler_timeout_ms,
        })
    }

    /// How long a consumer that reserved may take before its reservation counts as given up
    /// by it: the handler, and a request on either side.
    pub fn handle_ms(&self, request_timeout_ms: f64) -> f64 {
        self.handler_timeout_ms + 2.0 * request_timeout_ms
    }
}

/// What to read: `limit`, `filter`, `order` (the portal bounds `limit` itself; the queue checks
/// it when it builds the request).
pub fn get_args(given: &impl Given) -> Result<GetArgs> {
    Ok(GetArgs {
        filter: given.tree("filter")?,
        order: given.tree("order")?,
        limit: given.number("limit")?,
        ..GetArgs::default()
    })
}

/// `reserve()`'s: what to read, and from which queue (`errors: true`: the error queue).
pub fn reserve_args(given: &impl Given) -> Result<GetArgs> {
    let mut args = get_args(given)?;
    args.error = given.flag("errors")?.unwrap_or(false);
    Ok(args)
}

fn error_policy(given: &impl Given) -> Result<ErrorPolicy> {
    let bad = || B24Error::invalid("errors", "must be 'include', 'skip' or { retries: n }");
    if let Some(inner) = given.nested("errors") {
        let n = inner
            .number("retries")
            .map_err(|_| bad())?
            .ok_or_else(bad)?;
        return Ok(ErrorPolicy::Retry(
            validate::positive("errors.retries", n)?.min(1000) as u32,
        ));
    }
    match given.text("errors").map_err(|_| bad())?.as_deref() {
        None | Some("include") => Ok(ErrorPolicy::Include),
        Some("skip") => Ok(ErrorPolicy::Skip),
        Some(_) => Err(bad()),
    }
}

impl Options {
    /// `consume()`'s options: at most 16 handlers at once, retries at most 1,000, idle delays
    /// within what a timer takes (the longest never below the first).
    pub fn resolve(given: &impl Given, holds: Holds) -> Result<Options> {
        let args = get_args(given)?;
        let concurrency = match given.number("concurrency")? {
            Some(c) => validate::positive("concurrency", c)?.min(16) as usize,
            None => 1,
        };
        let poll = match given.flag("poll")? {
            Some(true) => {
                let first = delay(given, "idleDelay", 1000.0)?;
                let longest = delay(given, "maxIdleDelay", 30_000.0)?;
                Some((first, longest.max(first)))
            }
            _ => None,
        };
        let malformed = match given.text("malformed")?.as_deref() {
            None | Some("park") => MalformedPolicy::Park,
            Some("clear") => MalformedPolicy::Clear,
            Some(_) => return Err(B24Error::invalid("malformed", "must be 'park' or 'clear'")),
        };
        Ok(Options {
            limit: args.limit,
            concurrency,
            errors: error_policy(given)?,
            malformed,
            poll,
            handler_timeout_ms: holds.handler_timeout_ms,
            filter: args.filter,
            order: args.order,
            objects: Objects::resolve(given.tree("objects")?.as_ref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::code;
    use serde_json::{json, Value};

    /// The options as JSON: what a binding reads from a JavaScript object, with the same kinds.
    impl Given for Value {
        fn number(&self, key: &str) -> Result<Option<f64>> {
            match self.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| B24Error::invalid(key, "must be a finite number")),
            }
        }
        fn text(&self, key: &str) -> Result<Option<String>> {
            match self.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| B24Error::invalid(key, "must be a string")),
            }
        }
        fn flag(&self, key: &str) -> Result<Option<bool>> {
            match self.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| B24Error::invalid(key, "must be a boolean")),
            }
        }
        fn tree(&self, key: &str) -> Result<Option<Tree>> {
            Ok(self
                .get(key)
                .filter(|v| !v.is_null())
                .map(|v| crate::core::testkit::tree(&v.to_string())))
        }
        fn nested(&self, key: &str) -> Option<Value> {
            self.get(key)
                .filter(|v| v.is_object() || v.is_array())
                .cloned()
        }
    }

    const TIMEOUT: f64 = 30_000.0;

    fn holds(v: Value) -> Result<Holds> {
        Holds::resolve(&v, TIMEOUT)
    }

    fn consume(v: Value) -> Result<Options> {
        Options::resolve(&v, holds(v.clone())?)
    }

    fn refused(r: Result<impl std::fmt::Debug>, field: &str) {
        let e = r.expect_err("refused");
        assert_eq!(e.code, code::INVALID_ARGUMENT);
        assert!(e.description.starts_with(field), "{}", e.description);
    }

    #[test]
    fn nothing_given_is_the_documented_defaults() {
        let h = holds(json!({})).unwrap();
        assert_eq!(h.handler_timeout_ms, HANDLER_TIMEOUT_MS);
        assert_eq!(h.hold_ms, STRANDED_AFTER_MS);
        assert_eq!(h.handle_ms(TIMEOUT), HANDLER_TIMEOUT_MS + 2.0 * TIMEOUT);
        let o = consume(json!({ "poll": null, "errors": null })).unwrap();
        assert_eq!(o.concurrency, 1);
        assert_eq!(o.errors, ErrorPolicy::Include);
        assert_eq!(o.malformed, MalformedPolicy::Park);
        assert_eq!(o.poll, None);
        assert_eq!(o.limit, None);
        assert!(o.filter.is_none() && o.order.is_none());
        let r = reserve_args(&json!({})).unwrap();
        assert!(!r.error && !r.clear);
        assert_eq!(max_response_bytes(&json!({})).unwrap(), 8 << 20);
    }

    #[test]
    fn bounds_are_applied_not_trusted() {
        let o = consume(json!({
            "concurrency": 1e6,
            "errors": { "retries": 1e9 },
            "poll": true,
            "idleDelay": 5000,
            "maxIdleDelay": 10,
            "handlerTimeoutMs": 5e12,
            "malformed": "clear",
        }))
        .unwrap();
        assert_eq!(o.concurrency, 16);
        assert_eq!(o.errors, ErrorPolicy::Retry(1000));
        assert_eq!(o.malformed, MalformedPolicy::Clear);
        // The longest idle delay is never below the first; both within what a timer takes.
        assert_eq!(o.poll, Some((5000.0, 5000.0)));
        assert_eq!(o.handler_timeout_ms, MAX_DELAY_MS);
        let o = consume(json!({ "poll": true, "idleDelay": 5e12 })).unwrap();
        assert_eq!(o.poll, Some((MAX_DELAY_MS, MAX_DELAY_MS)));
        assert_eq!(
            consume(json!({ "errors": "skip" })).unwrap().errors,
            ErrorPolicy::Skip
        );
    }

    #[test]
    fn the_hold_is_never_shorter_than_a_live_consumer_may_take() {
        // A long handler timeout lifts the default hold above ten minutes.
        let h = holds(json!({ "handlerTimeoutMs": 3_600_000 })).unwrap();
        assert_eq!(h.hold_ms, min_stranded_after_ms(3_600_000.0, TIMEOUT));
        assert!(h.hold_ms > STRANDED_AFTER_MS);
        // An explicit one below the minimum is refused, not raised quietly.
        refused(
            holds(json!({ "strandedAfterMs": 60_000 })),
            "strandedAfterMs",
        );
        let min = min_stranded_after_ms(1000.0, TIMEOUT);
        let h = holds(json!({ "handlerTimeoutMs": 1000, "strandedAfterMs": min })).unwrap();
        assert_eq!(h.hold_ms, min);
    }

    #[test]
    fn the_worst_values_are_refused_with_the_field_named() {
        for (given, field) in [
            (json!({ "concurrency": 0 }), "concurrency"),
            (json!({ "concurrency": 1.5 }), "concurrency"),
            (json!({ "concurrency": -3 }), "concurrency"),
            (json!({ "concurrency": "8" }), "concurrency"),
            (json!({ "errors": "everything" }), "errors"),
            (json!({ "errors": true }), "errors"),
            (json!({ "errors": 3 }), "errors"),
            (json!({ "errors": {} }), "errors"),
            (json!({ "errors": { "retries": "3" } }), "errors"),
            (json!({ "errors": [3] }), "errors"),
            (json!({ "errors": { "retries": 0 } }), "errors.retries"),
            (json!({ "malformed": "drop" }), "malformed"),
            (json!({ "malformed": 1 }), "malformed"),
            (json!({ "poll": "yes" }), "poll"),
            (json!({ "poll": true, "idleDelay": 0 }), "idleDelay"),
            (json!({ "poll": true, "maxIdleDelay": -1 }), "maxIdleDelay"),
            (json!({ "handlerTimeoutMs": 0 }), "handlerTimeoutMs"),
            (json!({ "strandedAfterMs": 1e20 }), "strandedAfterMs"),
            (json!({ "limit": "50" }), "limit"),
        ] {
            refused(consume(given.clone()), field);
        }
        refused(reserve_args(&json!({ "errors": "yes" })), "errors");
        for n in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!(268435457),
            json!("8000"),
        ] {
            refused(
                max_response_bytes(&json!({ "maxResponseBytes": n })),
                "maxResponseBytes",
            );
        }
        for n in [1, 1000, 268435456] {
            assert_eq!(
                max_response_bytes(&json!({ "maxResponseBytes": n })).unwrap(),
                n
            );
        }
        // A token passed in the wrong field is never echoed back.
        let e = consume(json!({ "malformed": "secret-token-value" })).unwrap_err();
        assert!(!e.message().contains("secret-token-value"));
    }

    #[test]
    fn reserve_reads_errors_as_the_queue_to_use() {
        let r =
            reserve_args(&json!({ "errors": true, "limit": 10, "filter": { ">ID": 5 } })).unwrap();
        assert!(r.error);
        assert_eq!(r.limit, Some(10.0));
        assert!(r.filter.is_some());
    }
}
