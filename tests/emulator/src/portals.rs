//! Many portals in one emulator, for apps that serve every portal they are installed on. Each
//! portal made through `POST /_emulator/portals` listens on its own loopback port (its own
//! origin), with its own `member_id`, queue, limits, tokens, installs and faults; all share the
//! clock, so moving it expires every portal's tokens at once. Installing and uninstalling an
//! app sends the portal's `ONAPPINSTALL` / `ONAPPUNINSTALL` to the app's handler (loopback
//! only), form-encoded as the portal sends them. A portal can be deleted, have its tokens
//! revoked, or answer slowly.
//!
//! The first portal's origin is also the process's central OAuth server (`crate::oauth`), the
//! `oauth.bitrix.info` of these portals: the install events of every cloud portal (config
//! `oauth: "cloud"`, the default) name its `/rest/` in `auth[server_endpoint]`, and it refreshes
//! every portal's tokens. A box portal (`oauth: "portal"`) names its own `/oauth/`.

use crate::error::{ApiError, ApiResult};
use crate::notify::{is_loopback, Delivery};
use crate::state::{random_token, Config, OAuthMode, Shared};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard};

/// The most portals one call creates (a benchmark of 200 fits many times over).
pub const MAX_PER_CALL: u64 = 1000;
/// The longest a slow portal waits before answering.
pub const MAX_SLOW_MS: u64 = 60_000;

/// Every portal of one emulator process, in the order they were made, and the forms they
/// want posted to applications (the outbox the shell empties after every call into the portal).
#[derive(Default)]
pub struct Registry {
    portals: Mutex<Vec<Arc<Shared>>>,
    outbox: Mutex<Vec<Delivery>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn add(&self, portal: Arc<Shared>) {
        lock(&self.portals).push(portal);
    }

    pub fn all(&self) -> Vec<Arc<Shared>> {
        lock(&self.portals).clone()
    }

    /// The first portal: the one the process started with, whose origin is the central OAuth
    /// server's.
    pub fn root(&self) -> Option<Arc<Shared>> {
        lock(&self.portals).first().cloned()
    }

    /// The portal serving at `domain` (`127.0.0.1:PORT`).
    pub fn find(&self, domain: &str) -> Option<Arc<Shared>> {
        lock(&self.portals)
            .iter()
            .find(|p| p.domain == domain)
            .cloned()
    }

    /// Leaves a form for the shell to post.
    pub fn post(&self, delivery: Delivery) {
        lock(&self.outbox).push(delivery);
    }

    /// The forms to post now, oldest first.
    pub fn take_deliveries(&self) -> Vec<Delivery> {
        std::mem::take(&mut *lock(&self.outbox))
    }

    /// Releases every portal's held-back onOfflineEvent signals that are due.
    pub fn tick(&self) {
        for portal in self.all() {
            crate::notify::tick(&portal);
        }
    }
}

/// How a portal is doing, set through `POST /_emulator/portal`.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Every REST call answers `PORTAL_DELETED`, every refresh `invalid_grant`.
    pub deleted: bool,
    /// Every REST call waits this long first.
    pub slow_ms: u64,
}

fn bad(why: &str) -> ApiError {
    ApiError::new(400, "BAD_REQUEST", why)
}

/// The origin of the process's central OAuth server (`http://127.0.0.1:PORT` of the first
/// portal; the portal's own when it belongs to no registry).
pub fn oauth_server(p: &Shared) -> String {
    p.registry
        .root()
        .map(|root| root.base_url())
        .unwrap_or_else(|| p.base_url())
}

/// `auth[server_endpoint]` of the portal's events: the central server's `/rest/` in the cloud,
/// the portal's own `/oauth/` in a box edition.
pub fn server_endpoint(p: &Shared, mode: OAuthMode) -> String {
    match mode {
        OAuthMode::Cloud => format!("{}/rest/", oauth_server(p)),
        OAuthMode::Portal => format!("{}/oauth/", p.base_url()),
    }
}

/// What an app needs to know of a portal.
pub fn describe(p: &Shared) -> Value {
    let base = p.base_url();
    let mode = p.lock().config.oauth;
    json!({
        "origin": base,
        "domain": p.domain,
        "member_id": p.member_id,
        "client_endpoint": format!("{base}/rest/"),
        "server_endpoint": server_endpoint(p, mode),
        "oauth": mode.name(),
        "oauth_server": oauth_server(p),
    })
}

/// `GET /_emulator/portals`.
pub fn list(shared: &Arc<Shared>) -> Value {
    let portals: Vec<Value> = shared.registry.all().iter().map(|p| describe(p)).collect();
    json!({ "oauth_server": oauth_server(shared), "portals": portals })
}

/// `POST /_emulator/portals {count?, config?}`: new portals, each on a free loopback port,
/// configured with `config` (the fields of `POST /_emulator/config`; `rate_limit:
/// "enterprise"` for the larger plan). Checks the body and answers how many listeners the
/// shell must open; [`open`] makes the portals once they listen.
pub fn create(body: &Value) -> ApiResult<(usize, Config)> {
    let count = match body.get("count") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_PER_CALL).contains(n))
            .ok_or_else(|| bad("'count' must be an integer from 1 to 1000"))?,
    };
    // Checked before anything is made, so a bad config creates nothing.
    let mut config = Config::default();
    if let Some(c) = body.get("config").filter(|c| !c.is_null()) {
        config.patch(c)?;
    }
    Ok((count as usize, config))
}

/// The portals of [`create`] on the addresses (`127.0.0.1:PORT`) the shell listens on.
pub fn open(shared: &Arc<Shared>, config: &Config, addresses: &[String]) -> Value {
    let made: Vec<Value> = addresses
        .iter()
        .map(|addr| {
            let portal = Arc::new(Shared::sibling(shared, addr.clone()));
            portal.lock().config = config.clone();
            shared.registry.add(portal.clone());
            describe(&portal)
        })
        .collect();
    json!({ "oauth_server": oauth_server(shared), "portals": made })
}

/// `POST /_emulator/portal {deleted?, slow_ms?, revoke?}`: this portal's health. `revoke`
/// invalidates every access and refresh token it issued (as when an administrator removes
/// the app's access); `deleted` makes it answer as a deleted portal until set back.
pub fn health(shared: &Arc<Shared>, body: &Value) -> ApiResult<Value> {
    let mut st = shared.lock();
    let mut next = st.health.clone();
    if let Some(v) = body.get("deleted").filter(|v| !v.is_null()) {
        next.deleted = v
            .as_bool()
            .ok_or_else(|| bad("'deleted' must be a boolean"))?;
    }
    if let Some(v) = body.get("slow_ms").filter(|v| !v.is_null()) {
        next.slow_ms = v
            .as_u64()
            .filter(|ms| *ms <= MAX_SLOW_MS)
            .ok_or_else(|| bad("'slow_ms' must be an integer from 0 to 60000"))?;
    }
    let revoke = match body.get("revoke") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad("'revoke' must be a boolean"))?,
    };
    if revoke {
        st.tokens.clear();
        st.grants.clear();
    }
    st.health = next;
    Ok(json!({ "deleted": st.health.deleted, "slow_ms": st.health.slow_ms }))
}

/// The app's handler URL from a control body: loopback only, the emulator never reaches out.
fn handler(body: &Value) -> ApiResult<String> {
    let url = body
        .get("handler")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("'handler' (the app's event URL) is required"))?;
    if !is_loopback(url) {
        return Err(bad(
            "'handler' must be a loopback URL (127.0.0.1, ::1, localhost)",
        ));
    }
    Ok(url.to_string())
}

fn client_id(body: &Value) -> ApiResult<String> {
    body.get("client_id")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad("'client_id' is required"))
}

/// `client_secret`: a non-empty string, or absent (`None`: whatever the app has stays).
pub fn client_secret(body: &Value) -> ApiResult<Option<String>> {
    match body.get("client_secret") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(bad("'client_secret' must be a non-empty string")),
    }
}

fn text<'a>(body: &'a Value, key: &str, default: &'a str) -> ApiResult<&'a str> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad(&format!("'{key}' must be a string"))),
    }
}

/// A form for the app's handler whose answer goes into the control call's answer.
pub struct Post {
    pub url: String,
    pub form: String,
    /// The rest of the answer, beside `delivered` and `status`.
    pub answer: Value,
}

/// The control call's answer once the shell has posted: `status` 0 when no answer came.
pub fn delivered(post_answer: Value, status: u16) -> Value {
    let mut out = json!({ "delivered": (200..300).contains(&status), "status": status });
    if let (Value::Object(out), Value::Object(rest)) = (&mut out, post_answer) {
        out.extend(rest);
    }
    out
}

/// `POST /_emulator/install {client_id, handler, client_secret?, user_id?, admin?, status?,
/// version?, language?}`: installs the app on this portal (a fresh `application_token` after an
/// uninstall; `client_secret`, when given, is the one its refreshes must present from now on)
/// and sends `ONAPPINSTALL` with a new token pair to `handler`. Answers with the portal, the
/// app's `application_token` and whether the app accepted the event.
pub fn install(shared: &Arc<Shared>, body: &Value) -> ApiResult<Post> {
    let client_id = client_id(body)?;
    let url = handler(body)?;
    let secret = client_secret(body)?;
    let user_id = match body.get("user_id") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("'user_id' must be a non-negative integer"))?,
    };
    let admin = match body.get("admin") {
        None | Some(Value::Null) => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad("'admin' must be a boolean"))?,
    };
    let status = text(body, "status", "F")?.to_string();
    let version = text(body, "version", "1")?.to_string();
    let language = text(body, "language", "en")?.to_string();
    let now = shared.clock.now_ms();
    let base = shared.base_url();
    let (form, application_token) = {
        let mut st = shared.lock();
        let app = st.app(&client_id);
        if st.apps[app as usize].uninstalled {
            st.apps[app as usize].uninstalled = false;
            st.apps[app as usize].application_token = random_token(32);
        }
        if secret.is_some() {
            st.apps[app as usize].client_secret = secret;
        }
        let server = server_endpoint(shared, st.config.oauth);
        let (access, refresh) = st.issue_token(app, user_id, admin, now);
        let application_token = st.apps[app as usize].application_token.clone();
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("event", "ONAPPINSTALL")
            .append_pair("data[VERSION]", &version)
            .append_pair("data[ACTIVE]", "Y")
            .append_pair("data[INSTALLED]", "Y")
            .append_pair("data[LANGUAGE_ID]", &language)
            .append_pair("ts", &now.div_euclid(1000).to_string())
            .append_pair("auth[domain]", &shared.domain)
            .append_pair("auth[scope]", "crm,event")
            .append_pair("auth[access_token]", &access)
            .append_pair("auth[refresh_token]", &refresh)
            .append_pair("auth[expires_in]", &st.config.token_ttl_s.to_string())
            .append_pair("auth[server_endpoint]", &server)
            .append_pair("auth[status]", &status)
            .append_pair("auth[client_endpoint]", &format!("{base}/rest/"))
            .append_pair("auth[member_id]", &shared.member_id)
            .append_pair("auth[application_token]", &application_token)
            .finish();
        (form, application_token)
    };
    Ok(Post {
        url,
        form,
        answer: json!({ "portal": describe(shared), "application_token": application_token }),
    })
}

/// `POST /_emulator/uninstall {client_id, handler, clean?}`: removes the app from this portal
/// (its tokens stop working, its bindings and queued rows go) and sends `ONAPPUNINSTALL` to
/// `handler` with the application token and no access token, as the portal does.
pub fn uninstall(shared: &Arc<Shared>, body: &Value) -> ApiResult<Post> {
    let client_id = client_id(body)?;
    let url = handler(body)?;
    let clean = match body.get("clean") {
        None | Some(Value::Null) => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad("'clean' must be a boolean"))?,
    };
    let now = shared.clock.now_ms();
    let base = shared.base_url();
    let form = {
        let mut st = shared.lock();
        let Some(&app) = st.app_by_client.get(&client_id) else {
            return Err(ApiError::new(
                404,
                "NOT_FOUND",
                "the app is not installed here",
            ));
        };
        st.apps[app as usize].uninstalled = true;
        st.tokens.retain(|_, t| t.app != app);
        st.grants.retain(|_, g| g.app != app);
        st.bindings.retain(|b| b.app != app);
        st.queue.remove_app(app);
        st.notify.remove(&app);
        let server = server_endpoint(shared, st.config.oauth);
        form_urlencoded::Serializer::new(String::new())
            .append_pair("event", "ONAPPUNINSTALL")
            .append_pair("data[LANGUAGE_ID]", "en")
            .append_pair("data[CLEAN]", if clean { "1" } else { "0" })
            .append_pair("ts", &now.div_euclid(1000).to_string())
            .append_pair("auth[domain]", &shared.domain)
            .append_pair("auth[server_endpoint]", &server)
            .append_pair("auth[client_endpoint]", &format!("{base}/rest/"))
            .append_pair("auth[member_id]", &shared.member_id)
            .append_pair(
                "auth[application_token]",
                &st.apps[app as usize].application_token,
            )
            .finish()
    };
    Ok(Post {
        url,
        form,
        answer: json!({ "portal": describe(shared) }),
    })
}
