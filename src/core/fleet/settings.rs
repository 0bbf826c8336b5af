//! A worker's settings, resolved from the app's options: every default and bound here, so the
//! binding only reads fields (as `core::options` does for a single queue).

use super::super::args::Tree;
use super::super::error::{B24Error, Result};
use super::super::limiter::{RateLimit, ENTERPRISE, STANDARD};
use super::super::options::{delay, Given, Holds, Options};
use super::super::validate;
use super::install::{Trust, BITRIX_OAUTH};
use super::oauth::OAuthApp;
use crate::core::text::concat;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of every key this fleet writes (several apps can share one store).
    pub prefix: String,
    /// This worker's id: the owner of its leases and journal entries. Unique per process: the
    /// configured `workerId` is a label, a nonce of this process follows it.
    pub worker: String,
    pub app: OAuthApp,
    pub trust: Trust,
    /// The events each portal queues for the app (`event.bind`, offline).
    pub events: Vec<String>,
    pub connector: Option<String>,
    /// The app's onOfflineEvent receiver, bound at install so that a change wakes its portal.
    pub signal_url: Option<String>,
    /// Handlers running at once, over every portal.
    pub concurrency: usize,
    /// A portal's lease: one worker drains it while it holds it.
    pub lease_ms: f64,
    /// How often the worker renews its leases and looks for portals to take.
    pub scan_ms: f64,
    /// Request timeout.
    pub timeout_ms: f64,
    /// Each portal's rate limit unless its record says otherwise (`plan`).
    pub plan: RateLimit,
    /// The consumer options of every portal (`poll` is always on).
    pub options: Options,
    pub holds: Holds,
    /// Installs whose proof is still outstanding, per time: each costs one request to the
    /// OAuth server, so a flood of forged installs is refused before it costs any.
    pub install_rate: RateLimit,
    /// The most live portals the fleet takes; an install beyond is refused.
    pub max_portals: usize,
    /// The longest answer read from a portal (`maxResponseBytes`).
    pub max_response_bytes: u32,
}

/// The default `installRate`: 20 unproven installs at once, then one a second.
pub const INSTALL_RATE: RateLimit = RateLimit {
    burst: 20.0,
    drain_per_sec: 1.0,
};
/// The default `maxPortals`.
pub const MAX_PORTALS: usize = 100_000;

/// `installRate`: `{ burst, drainPerSec }`, as a custom `plan`.
fn install_rate(given: &impl Given) -> Result<RateLimit> {
    let bad = || {
        B24Error::invalid(
            "installRate",
            "must be { burst: 1..10000, drainPerSec: > 0 up to 1000 }",
        )
    };
    match given.tree("installRate").map_err(|_| bad())? {
        None | Some(Tree::Null) => Ok(INSTALL_RATE),
        Some(Tree::Map(_)) => rate(&given.nested("installRate").ok_or_else(bad)?, bad),
        Some(_) => Err(bad()),
    }
}

/// `{ burst, drainPerSec }` (a custom `plan`, `installRate`), `bad()` for anything else.
fn rate(r: &impl Given, bad: impl Fn() -> B24Error) -> Result<RateLimit> {
    let burst = r
        .number("burst")
        .map_err(|_| bad())?
        .filter(|b| *b >= 1.0 && *b <= 10_000.0)
        .ok_or_else(&bad)?;
    let drain = r
        .number("drainPerSec")
        .map_err(|_| bad())?
        .filter(|d| *d > 0.0 && *d <= 1_000.0)
        .ok_or_else(&bad)?;
    Ok(RateLimit {
        burst,
        drain_per_sec: drain,
    })
}

/// A list of strings (`events`, `portals`), or one string.
fn strings(given: &impl Given, key: &str) -> Result<Option<Vec<String>>> {
    let bad = || B24Error::invalid(key, "must be a string or a list of strings");
    Ok(match given.tree(key).map_err(|_| bad())? {
        None => None,
        Some(Tree::Str(s)) => Some(vec![s]),
        Some(Tree::List(items)) => Some(
            items
                .into_iter()
                .map(|t| match t {
                    Tree::Str(s) if !s.is_empty() => Ok(s),
                    _ => Err(bad()),
                })
                .collect::<Result<_>>()?,
        ),
        Some(_) => return Err(bad()),
    })
}

/// `plan`: 'standard', 'enterprise' or `{ burst, drainPerSec }` (a portal's request rate).
pub fn plan(given: &impl Given) -> Result<Option<RateLimit>> {
    let bad = || {
        B24Error::invalid(
            "plan",
            "must be 'standard', 'enterprise' or { burst, drainPerSec }",
        )
    };
    if let Some(p) = given.nested("plan") {
        return rate(&p, bad).map(Some);
    }
    match given.text("plan").map_err(|_| bad())?.as_deref() {
        None => Ok(None),
        Some("standard") => Ok(Some(STANDARD)),
        Some("enterprise") => Ok(Some(ENTERPRISE)),
        Some(_) => Err(bad()),
    }
}

fn required(given: &impl Given, key: &str) -> Result<String> {
    given
        .text(key)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| B24Error::invalid(key, "is required"))
}

/// The fewest ms a lease may last: a scan, a renewal and a request must fit in a third of it.
pub const MIN_LEASE_MS: f64 = 3_000.0;
pub const DEFAULT_LEASE_MS: f64 = 30_000.0;

impl Settings {
    /// Reads a worker's options. `nonce` is this process's own (random): the worker's id is
    /// it, after the configured `workerId` label when there is one, so that two processes given
    /// the same label never share a lease.
    pub fn resolve(given: &impl Given, nonce: String) -> Result<Settings> {
        let oauth = given
            .nested("oauth")
            .ok_or_else(|| B24Error::invalid("oauth", "is required: { clientId, clientSecret }"))?;
        let app = OAuthApp {
            client_id: required(&oauth, "clientId")
                .map_err(|_| B24Error::invalid("oauth.clientId", "is required"))?,
            client_secret: required(&oauth, "clientSecret")
                .map_err(|_| B24Error::invalid("oauth.clientSecret", "is required"))?,
        };
        let events = strings(given, "events")?
            .unwrap_or_default()
            .iter()
            .map(|e| validate::event_name(e))
            .collect::<Result<Vec<_>>>()?;
        let signal_url = given.text("signalUrl")?;
        if let Some(u) = &signal_url {
            validate::handler_url(u)
                .map_err(|_| B24Error::invalid("signalUrl", "must be an absolute http(s) URL"))?;
        }
        let concurrency = match given.number("concurrency")? {
            Some(c) => validate::positive("concurrency", c)?.min(256) as usize,
            None => 8,
        };
        let lease_ms = delay(given, "leaseMs", DEFAULT_LEASE_MS)?;
        if lease_ms < MIN_LEASE_MS {
            return Err(B24Error::invalid("leaseMs", "must be at least 3000"));
        }
        let scan_ms = delay(given, "scanMs", lease_ms / 3.0)?;
        if scan_ms * 3.0 > lease_ms {
            return Err(B24Error::invalid(
                "scanMs",
                "must be at most a third of leaseMs (a lease is renewed at every scan)",
            ));
        }
        let timeout_ms = delay(given, "timeoutMs", 30_000.0)?;
        let plan = plan(given)?.unwrap_or(STANDARD);
        let mut oauth_servers =
            strings(given, "oauthServers")?.unwrap_or_else(|| vec![BITRIX_OAUTH.to_string()]);
        oauth_servers.retain(|s| !s.trim().is_empty());
        for s in &oauth_servers {
            if super::super::origin::Origin::parse(s, false).is_err() {
                return Err(B24Error::invalid(
                    "oauthServers",
                    "must list host names (with a port when not 443)",
                ));
            }
        }
        let trust = Trust {
            portals: strings(given, "portals")?.unwrap_or_default(),
            oauth_servers,
            portal_oauth: strings(given, "portalOAuth")?.unwrap_or_default(),
            allow_http: given.flag("allowHttp")?.unwrap_or(false),
        };
        let holds = Holds::resolve(given, timeout_ms)?;
        let mut options = Options::resolve(given, holds)?;
        // `concurrency` is the fleet's (handlers at once over every portal); a portal's own
        // batches in flight are `portalConcurrency` (default 1: its plan's rate is the bound
        // unless the handlers are slow).
        options.concurrency = match given.number("portalConcurrency")? {
            Some(c) => validate::positive("portalConcurrency", c)?.min(16) as usize,
            None => 1,
        };
        // A fleet always polls (signals end its waits early).
        let first = delay(given, "idleDelay", 1000.0)?;
        let longest = delay(given, "maxIdleDelay", 60_000.0)?;
        options.poll = Some((first, longest.max(first)));
        let prefix = given
            .text("prefix")?
            .unwrap_or_else(|| "b24-offline/".into());
        let label = given.text("workerId")?.filter(|w| !w.is_empty());
        if let Some(l) = &label {
            if l.len() > 128 || !l.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(B24Error::invalid(
                    "workerId",
                    "must be printable ASCII without spaces, at most 128 characters",
                ));
            }
        }
        let worker = match label {
            Some(l) => concat(&[&l, "#", &nonce]),
            None => nonce,
        };
        let max_portals = match given.number("maxPortals")? {
            Some(n) => validate::positive("maxPortals", n)?.min(10_000_000) as usize,
            None => MAX_PORTALS,
        };
        Ok(Settings {
            prefix,
            worker,
            app,
            trust,
            events,
            connector: given.text("connector")?.filter(|c| !c.is_empty()),
            signal_url,
            concurrency,
            lease_ms,
            scan_ms,
            timeout_ms,
            plan,
            options,
            holds,
            install_rate: install_rate(given)?,
            max_portals,
            max_response_bytes: super::super::options::max_response_bytes(given)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(v: serde_json::Value) -> Result<Settings> {
        Settings::resolve(&v, "w-1".into())
    }

    #[test]
    fn defaults_and_bounds() {
        let s = resolve(json!({
            "oauth": { "clientId": "app.1", "clientSecret": "s" },
            "events": ["onCrmDealUpdate", "ONCRMLEADADD"],
        }))
        .unwrap();
        assert_eq!(s.events, vec!["ONCRMDEALUPDATE", "ONCRMLEADADD"]);
        assert_eq!(
            (s.concurrency, s.lease_ms, s.scan_ms),
            (8, 30_000.0, 10_000.0)
        );
        assert_eq!(s.plan, STANDARD);
        assert_eq!(s.trust.oauth_servers, vec![BITRIX_OAUTH]);
        assert_eq!(s.options.poll, Some((1000.0, 60_000.0)));
        assert_eq!(s.options.concurrency, 1);
        assert_eq!(s.worker, "w-1");
        assert!(!format!("{:?}", s.app).contains("\"s\""));
        let s = resolve(json!({
            "oauth": { "clientId": "app.1", "clientSecret": "s" },
            "events": "ONCRMDEALUPDATE",
            "plan": "enterprise",
            "concurrency": 1e6,
            "portalConcurrency": 1e6,
            "leaseMs": 9000,
            "workerId": "worker-7",
        }))
        .unwrap();
        assert_eq!(
            (s.plan, s.concurrency, s.scan_ms),
            (ENTERPRISE, 256, 3000.0)
        );
        assert_eq!(
            s.worker, "worker-7#w-1",
            "a label, then the process's nonce"
        );
        assert_eq!(s.options.concurrency, 16);
        let s = resolve(json!({
            "oauth": { "clientId": "a", "clientSecret": "s" },
            "plan": { "burst": 100, "drainPerSec": 3 },
        }))
        .unwrap();
        assert_eq!(
            s.plan,
            RateLimit {
                burst: 100.0,
                drain_per_sec: 3.0
            }
        );
    }

    #[test]
    fn the_worst_values_are_refused_with_the_field_named() {
        for (v, field) in [
            (json!({}), "oauth"),
            (json!({ "oauth": "id:secret" }), "oauth"),
            (
                json!({ "oauth": { "clientId": "a" } }),
                "oauth.clientSecret",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "events": [1] }),
                "events",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "events": ["ONOFFLINEEVENT x"] }),
                "event",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "signalUrl": "/signal" }),
                "signalUrl",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "leaseMs": 1000 }),
                "leaseMs",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "leaseMs": 6000, "scanMs": 5000 }),
                "scanMs",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "plan": "gold" }),
                "plan",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "plan": { "burst": 0, "drainPerSec": 1 } }),
                "plan",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "concurrency": 0 }),
                "concurrency",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "portalConcurrency": -1 }),
                "portalConcurrency",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "portalConcurrency": "4" }),
                "portalConcurrency",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "workerId": "a b" }),
                "workerId",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "strandedAfterMs": 10 }),
                "strandedAfterMs",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "oauthServers": ["https://evil.example/x"] }),
                "oauthServers",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "installRate": { "burst": 0, "drainPerSec": 1 } }),
                "installRate",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "installRate": 5 }),
                "installRate",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "maxPortals": 0 }),
                "maxPortals",
            ),
            (
                json!({ "oauth": { "clientId": "a", "clientSecret": "s" }, "portalOAuth": [7] }),
                "portalOAuth",
            ),
        ] {
            let e = resolve(v.clone()).expect_err(&v.to_string());
            assert!(e.description.starts_with(field), "{v}: {}", e.description);
        }
        let e = resolve(json!({ "oauth": { "clientId": "a", "clientSecret": "" } })).unwrap_err();
        assert!(!e.message().contains("secret-value"));
    }
}
