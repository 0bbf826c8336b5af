//! `/_emulator/*`: the control API tests and users drive the portal with (JSON in and out).

use crate::error::{ApiError, ApiResult};
use crate::events::fire;
use crate::rest::daily_jobs;
use crate::state::{random_token, Shared, Webhook};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

fn bad(why: &str) -> ApiError {
    ApiError::new(400, "BAD_REQUEST", why)
}

fn opt_u64(body: &Value, key: &str, default: u64) -> ApiResult<u64> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad(&format!("'{key}' must be a non-negative integer"))),
    }
}

fn opt_bool(body: &Value, key: &str, default: bool) -> ApiResult<bool> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad(&format!("'{key}' must be a boolean"))),
    }
}

/// Routes one control call; `None` when the path is not a control endpoint.
pub fn handle(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    body: &Value,
) -> Option<ApiResult<Value>> {
    let post = method == "POST";
    Some(match (path, method) {
        ("reset", _) if post => reset(shared),
        ("config", "GET") => Ok(shared.lock().config.to_json()),
        ("config", _) if post => config(shared, body),
        ("token", _) if post => token(shared, body),
        ("webhook", _) if post => webhook(shared, body),
        ("expire", _) if post => expire(shared, body),
        ("trigger", _) if post => trigger(shared, body),
        ("queue", "GET") => Ok(queue(shared)),
        ("clock", "GET") => Ok(clock(shared)),
        ("clock", _) if post => advance(shared, body),
        ("cleanup", _) if post => Ok(cleanup(shared)),
        ("faults", "GET") => Ok(shared.lock().faults.to_json()),
        ("faults", _) if post => faults(shared, body),
        ("faults", "DELETE") => {
            shared.lock().faults.clear();
            Ok(json!({ "rules": [] }))
        }
        ("stats", "GET") => Ok(stats(shared)),
        ("trap", "GET") => Ok(json!({ "requests": shared.lock().trapped.clone() })),
        ("cert", "GET") => Ok(json!({ "pem": crate::state::certificate_pem() })),
        ("portals", "GET") => Ok(crate::portals::list(shared)),
        ("portal", "GET") => {
            let mut p = crate::portals::describe(shared);
            let h = shared.lock().health.clone();
            p["deleted"] = json!(h.deleted);
            p["slow_ms"] = json!(h.slow_ms);
            Ok(p)
        }
        ("portal", _) if post => crate::portals::health(shared, body),
        _ => return None,
    })
}

fn reset(shared: &Arc<Shared>) -> ApiResult<Value> {
    let now = shared.clock.now_ms();
    shared.lock().reset(now);
    Ok(json!({ "ok": true }))
}

fn config(shared: &Arc<Shared>, body: &Value) -> ApiResult<Value> {
    let mut st = shared.lock();
    st.config.patch(body)?;
    Ok(st.config.to_json())
}

fn token(shared: &Arc<Shared>, body: &Value) -> ApiResult<Value> {
    let user_id = opt_u64(body, "user_id", 1)?;
    let admin = opt_bool(body, "admin", true)?;
    let client_id = match body.get("client_id") {
        None | Some(Value::Null) => "local.app".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(bad("'client_id' must be a non-empty string")),
    };
    let secret = crate::portals::client_secret(body)?;
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    let app = st.app(&client_id);
    if secret.is_some() {
        st.apps[app as usize].client_secret = secret;
    }
    let (access, refresh) = st.issue_token(app, user_id, admin, now);
    let base = shared.base_url();
    Ok(json!({
        "access_token": access,
        "refresh_token": refresh,
        "expires_in": st.config.token_ttl_s,
        "domain": shared.domain,
        "member_id": shared.member_id,
        "client_id": client_id,
        "application_token": st.apps[app as usize].application_token,
        "user_id": user_id,
        "client_endpoint": format!("{base}/rest/"),
        "server_endpoint": crate::portals::server_endpoint(shared, st.config.oauth),
    }))
}

fn webhook(shared: &Arc<Shared>, body: &Value) -> ApiResult<Value> {
    let user_id = opt_u64(body, "user_id", 1)?;
    let admin = opt_bool(body, "admin", true)?;
    let code = random_token(16);
    shared
        .lock()
        .webhooks
        .insert(code.clone(), Webhook { user_id, admin });
    Ok(json!({ "url": format!("{}/rest/{user_id}/{code}/", shared.base_url()) }))
}

fn expire(shared: &Arc<Shared>, body: &Value) -> ApiResult<Value> {
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("'access_token' is required"))?;
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    let t = st
        .tokens
        .get_mut(token)
        .ok_or_else(|| ApiError::new(404, "NOT_FOUND", "no such access token"))?;
    t.expires_ms = now;
    Ok(json!({ "ok": true }))
}

/// `{event, data, user_id?, source?, message_id?}` or `{items: [...]}` of those.
fn trigger(shared: &Arc<Shared>, body: &Value) -> ApiResult<Value> {
    let items: Vec<&Value> = match body.get("items") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => return Err(bad("'items' must be an array")),
        None => vec![body],
    };
    let now = shared.clock.now_ms();
    let mut touched = BTreeSet::new();
    let mut queued = 0;
    {
        let mut st = shared.lock();
        daily_jobs(&mut st, now);
        for item in items {
            let event = item
                .get("event")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
                .ok_or_else(|| bad("'event' is required"))?;
            let data = item.get("data").cloned().unwrap_or(Value::Bool(false));
            let user_id = opt_u64(item, "user_id", 1)?;
            let source = match item.get("source") {
                None | Some(Value::Null) => None,
                Some(s) => {
                    let client = s
                        .get("client_id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("'source.client_id' is required"))?;
                    let connector = s
                        .get("auth_connector")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let app = st.app(client);
                    let connector = if st.config.auth_connector {
                        st.queue.connectors.intern(connector)
                    } else {
                        0
                    };
                    Some((app, connector))
                }
            };
            let msg = item.get("message_id").and_then(Value::as_str);
            queued += fire(
                &mut st,
                now,
                event,
                &data,
                user_id,
                source,
                msg,
                &mut touched,
            );
        }
    }
    crate::notify::schedule(shared, touched);
    Ok(json!({ "queued": queued }))
}

fn queue(shared: &Arc<Shared>) -> Value {
    let st = shared.lock();
    let rows: Vec<Value> = st
        .queue
        .rows()
        .map(|r| {
            let mut v = st.queue.row_json(r, true);
            v["APP_ID"] = json!(st
                .apps
                .get(r.app as usize)
                .map(|a| a.client_id.as_str())
                .unwrap_or(""));
            v["CONNECTOR_ID"] = json!(st.queue.connectors.name(r.connector));
            v
        })
        .collect();
    Value::Array(rows)
}

fn clock(shared: &Arc<Shared>) -> Value {
    let now = shared.clock.now_ms();
    json!({ "now": now as f64 / 1000.0, "offset_s": shared.clock.offset_ms() as f64 / 1000.0 })
}

fn advance(shared: &Arc<Shared>, body: &Value) -> ApiResult<Value> {
    let limit = crate::clock::MAX_OFFSET_MS as f64 / 1000.0;
    let s = body
        .get("advance_s")
        .and_then(Value::as_f64)
        .filter(|s| (0.0..=limit).contains(s))
        .ok_or_else(|| bad("'advance_s' must be a number of seconds from 0 to a century"))?;
    if !shared.clock.advance_ms((s * 1000.0).round() as i64) {
        return Err(bad(
            "the clock cannot be moved more than a century ahead in all",
        ));
    }
    let now = shared.clock.now_ms();
    daily_jobs(&mut shared.lock(), now);
    Ok(clock(shared))
}

fn cleanup(shared: &Arc<Shared>) -> Value {
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    let n = st.queue.expire(now.div_euclid(1000));
    st.stats.expired_rows += n as u64;
    st.last_expiry_ms = now;
    json!({ "deleted": n })
}

fn faults(shared: &Arc<Shared>, body: &Value) -> ApiResult<Value> {
    let mut st = shared.lock();
    st.faults.set(body)?;
    Ok(json!({ "rules": st.faults.to_json() }))
}

fn stats(shared: &Arc<Shared>) -> Value {
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    let bucket_level = match st.config.rate_limit {
        Some(rate) => st.bucket.level(now, rate),
        None => 0.0,
    };
    let operating = st.operating.per_method(now);
    json!({
        "requests": st.stats.requests,
        "rejections": st.stats.rejections,
        "bucket_level": bucket_level,
        "operating": operating,
        "notifications_sent": st.stats.notifications_sent,
        "notifications_failed": st.stats.notifications_failed,
        "notifications_skipped": st.stats.notifications_skipped,
        "faults_injected": st.stats.faults_injected,
        "answers_lost_with_events": st.stats.answers_lost_with_events,
        "queue_rows": st.queue.len(),
        "reserved_rows": st.queue.reserved_len(),
        "expired_rows": st.stats.expired_rows,
        "refreshes": st.stats.refreshes,
        "refreshes_refused": st.stats.refreshes_refused,
    })
}
