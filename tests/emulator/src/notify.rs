//! onOfflineEvent: when an application's queue grows, POST the form-encoded signal to the
//! handler of its online `ONOFFLINEEVENT` binding, at most once per `minTimeout` seconds. A
//! signal held back by `minTimeout` is sent when the interval ends, so no growth goes unannounced.
//! Only loopback handlers are called: the emulator never reaches out to the network.

use crate::state::{Shared, State};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const EVENT: &str = "ONOFFLINEEVENT";

/// The one HTTP client that calls apps' handlers.
pub fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

/// Whether a handler URL points at this machine.
pub fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    match uri.host() {
        Some(h) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h == "::1"
                || h.parse::<std::net::Ipv4Addr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false)
        }
        None => false,
    }
}

/// Called after every request that queued rows.
pub fn schedule(shared: &Arc<Shared>, apps: BTreeSet<u32>) {
    if apps.is_empty() {
        return;
    }
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    for app in apps {
        let Some(min_timeout_ms) = st
            .bindings
            .iter()
            .find(|b| b.app == app && !b.offline && b.event == EVENT)
            .map(|b| b.min_timeout_s.saturating_mul(1000))
        else {
            continue;
        };
        let state = st.notify.entry(app).or_default();
        if state.pending {
            continue;
        }
        let due = state
            .last_sent_ms
            .map(|t| t.saturating_add(min_timeout_ms))
            .unwrap_or(now);
        if due <= now {
            state.last_sent_ms = Some(now);
            send(shared.clone(), &mut st, app);
        } else {
            state.pending = true;
            let shared = shared.clone();
            tokio::spawn(async move {
                // Polls the emulator clock, so `POST /_emulator/clock` also releases the signal.
                while shared.clock.now_ms() < due {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                let mut st = shared.lock();
                let now = shared.clock.now_ms();
                let state = st.notify.entry(app).or_default();
                state.pending = false;
                state.last_sent_ms = Some(now);
                send(shared.clone(), &mut st, app);
            });
        }
    }
}

/// Builds the payload under the lock and posts it from a task.
fn send(shared: Arc<Shared>, st: &mut State, app: u32) {
    let Some(binding) = st
        .bindings
        .iter()
        .find(|b| b.app == app && !b.offline && b.event == EVENT)
        .cloned()
    else {
        return;
    };
    if !is_loopback(&binding.handler) {
        st.stats.notifications_skipped += 1;
        return;
    }
    let now = shared.clock.now_ms();
    let (access, refresh) = st.issue_token(app, binding.user_id, binding.admin, now);
    let base = shared.base_url();
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("event", EVENT)
        .append_pair("ts", &now.div_euclid(1000).to_string())
        .append_pair("auth[access_token]", &access)
        .append_pair("auth[expires_in]", &st.config.token_ttl_s.to_string())
        .append_pair("auth[scope]", "crm,event")
        .append_pair("auth[domain]", &shared.domain)
        .append_pair("auth[server_endpoint]", &format!("{base}/oauth/"))
        .append_pair("auth[status]", "L")
        .append_pair("auth[client_endpoint]", &format!("{base}/rest/"))
        .append_pair("auth[member_id]", &shared.member_id)
        .append_pair("auth[refresh_token]", &refresh)
        .append_pair(
            "auth[application_token]",
            &st.apps[app as usize].application_token,
        )
        .finish();
    tokio::spawn(async move {
        let req = hyper::Request::post(&binding.handler)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)));
        let ok = match req {
            Ok(req) => matches!(
                tokio::time::timeout(Duration::from_secs(10), client().request(req)).await,
                Ok(Ok(resp)) if resp.status().is_success()
            ),
            Err(_) => false,
        };
        let mut st = shared.lock();
        if ok {
            st.stats.notifications_sent += 1;
        } else {
            st.stats.notifications_failed += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(is_loopback("http://127.0.0.1:9000/hook"));
        assert!(is_loopback("http://localhost/hook"));
        assert!(is_loopback("http://[::1]:80/"));
        assert!(!is_loopback("https://example.com/hook"));
        assert!(!is_loopback("not a url"));
    }
}
