//! onOfflineEvent: when an application's queue grows, POST the form-encoded signal to the
//! handler of its online `ONOFFLINEEVENT` binding, at most once per `minTimeout` seconds. A
//! signal held back by `minTimeout` is sent when the interval ends, so no growth goes unannounced.
//! Only loopback handlers are called: the emulator never reaches out to the network.

use crate::state::{Shared, State};
use std::collections::BTreeSet;
use std::sync::Arc;

const EVENT: &str = "ONOFFLINEEVENT";

/// A form the portal posts to an application's handler; the shell that serves the portal sends
/// it (a 10 s timeout, no redirects followed) and reports whether the app took it with
/// [`Delivery::done`].
pub struct Delivery {
    pub url: String,
    pub form: String,
    portal: Arc<Shared>,
}

impl Delivery {
    /// Counts the outcome in the portal's stats: sent (a 2xx answer) or failed.
    pub fn done(self, accepted: bool) {
        let mut st = self.portal.lock();
        if accepted {
            st.stats.notifications_sent += 1;
        } else {
            st.stats.notifications_failed += 1;
        }
    }
}

/// Whether a handler URL points at this machine: `http(s)://` to `localhost`, `::1` or an IPv4
/// loopback address.
pub fn is_loopback(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        },
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Called after every request that queued rows: signals now, or marks the signal due when
/// `minTimeout` ends ([`tick`] sends it then).
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
            send(shared, &mut st, app);
        } else {
            state.pending = true;
            state.due_ms = due;
        }
    }
}

/// Sends the held-back signals whose time has come on the emulator clock (so
/// `POST /_emulator/clock` releases them too). The shells call it every 25 ms.
pub fn tick(shared: &Arc<Shared>) {
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    let due: Vec<u32> = st
        .notify
        .iter()
        .filter(|(_, n)| n.pending && n.due_ms <= now)
        .map(|(app, _)| *app)
        .collect();
    for app in due {
        let state = st.notify.entry(app).or_default();
        state.pending = false;
        state.last_sent_ms = Some(now);
        send(shared, &mut st, app);
    }
}

/// Builds the payload under the lock and leaves it in the outbox for the shell.
fn send(shared: &Arc<Shared>, st: &mut State, app: u32) {
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
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("event", EVENT)
        .append_pair("ts", &now.div_euclid(1000).to_string())
        .append_pair("auth[access_token]", &access)
        .append_pair("auth[expires_in]", &st.config.token_ttl_s.to_string())
        .append_pair("auth[scope]", "crm,event")
        .append_pair("auth[domain]", &shared.domain)
        .append_pair(
            "auth[server_endpoint]",
            &crate::portals::server_endpoint(shared, st.config.oauth),
        )
        .append_pair("auth[status]", "L")
        .append_pair("auth[client_endpoint]", &format!("{base}/rest/"))
        .append_pair("auth[member_id]", &shared.member_id)
        .append_pair("auth[refresh_token]", &refresh)
        .append_pair(
            "auth[application_token]",
            &st.apps[app as usize].application_token,
        )
        .finish();
    shared.registry.post(Delivery {
        url: binding.handler,
        form,
        portal: shared.clone(),
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
        assert!(is_loopback("http://user@127.0.0.2:1/x?y#z"));
        assert!(!is_loopback("http://[::2]/"));
        assert!(!is_loopback("http://127.0.0.1.example.com/"));
    }
}
