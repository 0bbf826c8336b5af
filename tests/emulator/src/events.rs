//! `event.*` methods and the producer rules that put portal changes into offline queues.

use crate::error::{ApiError, ApiResult};
use crate::filter::{parse_filter, parse_order, Field, GET_FIELDS, LIST_FIELDS};
use crate::params::{flag, list_values, scalar_text, strict_int, Params};
use crate::queue::{message_id, Target};
use crate::rest::{Ctx, Outcome};
use crate::state::{random_token, Binding, State};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Events this portal knows. Binding anything else is `ERROR_EVENT_NOT_FOUND`.
pub const KNOWN_EVENTS: &[&str] = &[
    "ONAPPINSTALL",
    "ONAPPUNINSTALL",
    "ONAPPUPDATE",
    "ONOFFLINEEVENT",
    "ONCRMDEALADD",
    "ONCRMDEALUPDATE",
    "ONCRMDEALDELETE",
    "ONCRMLEADADD",
    "ONCRMLEADUPDATE",
    "ONCRMLEADDELETE",
    "ONCRMCONTACTADD",
    "ONCRMCONTACTUPDATE",
    "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD",
    "ONCRMCOMPANYUPDATE",
    "ONCRMCOMPANYDELETE",
    "ONUSERADD",
    "ONTASKADD",
    "ONTASKUPDATE",
    "ONTASKDELETE",
];

const OFFLINE_EVENT: &str = "ONOFFLINEEVENT";
const PAGE: usize = 50;

/// Who made a change: `None` is a user in the UI (or a webhook): always queued.
pub type Source = Option<(u32, u32)>;

/// A change in the portal: queued for every offline binding of the event, except the binding
/// of the very application and connector that made it. Returns how many rows were queued.
#[allow(clippy::too_many_arguments)]
pub fn fire(
    st: &mut State,
    now_ms: i64,
    event: &str,
    data: &Value,
    user_id: u64,
    source: Source,
    given_message_id: Option<&str>,
    touched: &mut BTreeSet<u32>,
) -> usize {
    let name = event.to_ascii_uppercase();
    let data_json = serde_json::to_string(data).unwrap_or_else(|_| "false".into());
    let additional = json!({ "user_id": user_id.to_string() }).to_string();
    let msg = match given_message_id.map(|m| <[u8; 32]>::try_from(m.as_bytes())) {
        Some(Ok(m)) => m,
        _ => message_id(&name, &data_json),
    };
    let targets: Vec<Target> = st
        .bindings
        .iter()
        .filter(|b| b.offline && b.event == name && source != Some((b.app, b.connector)))
        .map(|b| Target {
            app: b.app,
            connector: b.connector,
        })
        .collect();
    let now_s = now_ms.div_euclid(1000);
    for t in &targets {
        st.queue
            .produce(now_s, *t, &name, msg, &data_json, &additional);
        touched.insert(t.app);
    }
    targets.len()
}

pub fn names() -> Outcome {
    Outcome::of(json!(KNOWN_EVENTS))
}

fn event_name(params: &Params) -> ApiResult<String> {
    let name = params
        .str("event")
        .map(|e| e.trim().to_ascii_uppercase())
        .filter(|e| !e.is_empty());
    let name = name.ok_or_else(|| ApiError::argument("event", "required"))?;
    if !KNOWN_EVENTS.contains(&name.as_str()) {
        return Err(ApiError::new(
            400,
            "ERROR_EVENT_NOT_FOUND",
            "Event not found",
        ));
    }
    Ok(name)
}

fn is_offline(params: &Params) -> ApiResult<bool> {
    match params
        .str("event_type")
        .map(|t| t.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("online") => Ok(false),
        Some("offline") => Ok(true),
        Some(_) => Err(ApiError::argument(
            "event_type",
            "must be online or offline",
        )),
    }
}

/// `auth_type` other than the caller needs an administrator.
fn auth_type(ctx: &Ctx, params: &Params, verb: &str) -> ApiResult<u64> {
    let Some(v) = params.get("auth_type") else {
        return Ok(0);
    };
    let t = strict_int(v)
        .filter(|t| *t >= 0)
        .ok_or_else(|| ApiError::argument("auth_type", "must be a user id"))? as u64;
    if t != 0 && t != ctx.caller.user_id && !ctx.caller.admin {
        return Err(ApiError::access_denied(&format!(
            "Access denied! Event {verb} with AUTH_TYPE requires administrator access rights"
        )));
    }
    Ok(t)
}

pub fn bind(ctx: &mut Ctx, params: &Params) -> ApiResult<Outcome> {
    let app = ctx.app_only()?;
    let event = event_name(params)?;
    let offline = is_offline(params)?;
    let auth_type = auth_type(ctx, params, "binding")?;
    let (_, connector) = ctx.connector(params);
    let user_id = ctx.caller.user_id;
    let duplicate = || {
        ApiError::new(
            400,
            "ERROR_CORE",
            "Unable to set event handler: Handler already binded",
        )
    };
    let binding = if offline {
        ctx.admin_only(
            "Access denied! Offline events binding requires administrator access rights",
        )?;
        if event == OFFLINE_EVENT {
            return Err(ApiError::argument(
                "event",
                "ONOFFLINEEVENT cannot be bound as an offline event",
            ));
        }
        if ctx
            .st
            .bindings
            .iter()
            .any(|b| b.app == app && b.offline && b.event == event && b.connector == connector)
        {
            return Err(duplicate());
        }
        Binding {
            app,
            event,
            offline,
            connector,
            handler: String::new(),
            auth_type,
            user_id,
            admin: ctx.caller.admin,
            min_timeout_s: 0,
        }
    } else {
        let handler = params
            .str("handler")
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| ApiError::argument("handler", "required"))?;
        if !(handler.starts_with("http://") || handler.starts_with("https://")) {
            return Err(ApiError::argument("handler", "must be an http(s) URL"));
        }
        let min_timeout_s = match params
            .get("options")
            .and_then(|o| o.get("minTimeout").or_else(|| o.get("mintimeout")))
        {
            None | Some(Value::Null) => 0,
            Some(v) => strict_int(v).filter(|t| *t >= 0).ok_or_else(|| {
                ApiError::argument("options", "minTimeout must be an integer of seconds")
            })?,
        };
        if ctx.st.bindings.iter().any(|b| {
            b.app == app
                && !b.offline
                && b.event == event
                && b.handler == handler
                && b.auth_type == auth_type
        }) {
            return Err(duplicate());
        }
        Binding {
            app,
            event,
            offline,
            connector: 0,
            handler,
            auth_type,
            user_id,
            admin: ctx.caller.admin,
            min_timeout_s,
        }
    };
    ctx.st.bindings.push(binding);
    Ok(Outcome::of(json!(true)))
}

pub fn unbind(ctx: &mut Ctx, params: &Params) -> ApiResult<Outcome> {
    let app = ctx.app_only()?;
    let event = event_name(params)?;
    let offline = is_offline(params)?;
    let auth_type = params
        .get("auth_type")
        .map(|_| auth_type(ctx, params, "unbinding"))
        .transpose()?;
    let (_, connector) = ctx.connector(params);
    let before = ctx.st.bindings.len();
    if offline {
        ctx.admin_only(
            "Access denied! Offline events unbinding requires administrator access rights",
        )?;
        ctx.st.bindings.retain(|b| {
            !(b.app == app && b.offline && b.event == event && b.connector == connector)
        });
    } else {
        let handler = params.str("handler").unwrap_or_default();
        ctx.st.bindings.retain(|b| {
            let hit = b.app == app
                && !b.offline
                && b.event == event
                && (handler.is_empty() || b.handler == handler)
                && auth_type.map(|t| t == b.auth_type).unwrap_or(true);
            !hit
        });
    }
    Ok(Outcome::of(
        json!({ "count": before - ctx.st.bindings.len() }),
    ))
}

pub fn bindings(ctx: &mut Ctx) -> ApiResult<Outcome> {
    let app = ctx.app_only()?;
    let st = &ctx.st;
    let list: Vec<Value> = st
        .bindings
        .iter()
        .filter(|b| b.app == app)
        .map(|b| {
            if b.offline {
                json!({ "event": b.event, "connector_id": st.queue.connectors.name(b.connector), "offline": 1 })
            } else {
                json!({ "event": b.event, "handler": b.handler, "auth_type": b.auth_type.to_string(), "offline": 0 })
            }
        })
        .collect();
    Ok(Outcome::of(Value::Array(list)))
}

/// Every `event.offline.*` method: application auth, administrator.
fn offline_target(ctx: &mut Ctx, params: &Params) -> ApiResult<Target> {
    let app = ctx.app_only()?;
    ctx.admin_only("Access denied!")?;
    let (_, connector) = ctx.connector(params);
    Ok(Target { app, connector })
}

fn positive(params: &Params, name: &str, default: usize, min: i64) -> ApiResult<usize> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => strict_int(v)
            .filter(|n| *n >= min)
            .map(|n| n as usize)
            .ok_or_else(|| {
                ApiError::argument(
                    name,
                    if min > 0 {
                        "must be a positive integer"
                    } else {
                        "must be a non-negative integer"
                    },
                )
            }),
    }
}

fn process_id(params: &Params, required: bool) -> ApiResult<Option<String>> {
    let pid = params
        .get("process_id")
        .and_then(scalar_text)
        .filter(|p| !p.is_empty());
    if required && pid.is_none() {
        return Err(ApiError::argument("process_id", "required"));
    }
    Ok(pid)
}

/// PHP's `empty()`: a missing parameter, `""`, `0`, `[]` all count as not given.
fn given(params: &Params, name: &str) -> Option<Value> {
    params.get(name).filter(|v| flag(Some(v), false)).cloned()
}

fn message_ids(v: &Value, name: &str, exact_len: bool) -> ApiResult<Vec<String>> {
    let items = list_values(v).ok_or_else(|| ApiError::argument(name, "must be an array"))?;
    items
        .into_iter()
        .map(|i| match i {
            Value::String(s) if !exact_len || s.len() == 32 => Ok(s.clone()),
            _ => Err(ApiError::argument(
                name,
                "must be an array of 32-character message ids",
            )),
        })
        .collect()
}

pub fn offline_get(ctx: &mut Ctx, params: &Params) -> ApiResult<Outcome> {
    let target = offline_target(ctx, params)?;
    let conds = parse_filter(params.get("filter"), GET_FIELDS)?;
    let order = parse_order(params.get("order"), GET_FIELDS)?
        .unwrap_or_else(|| vec![(Field::TimestampX, false)]);
    let limit = positive(params, "limit", PAGE, 1)?;
    let clear = flag(params.get("clear"), true);
    let error = flag(params.get("error"), false);
    let pid = process_id(params, false)?;
    if !clear && !ctx.st.config.extended_mode {
        return Err(ApiError::license(
            "rest_offline_extended (event.offline.get with clear=0)",
        ));
    }
    let taken = ctx.st.queue.take(
        target,
        error,
        &conds,
        &order,
        limit,
        clear,
        pid.as_deref(),
        || random_token(32),
    );
    let events: Vec<Value> = taken
        .rows
        .iter()
        .map(|r| ctx.st.queue.row_json(r, false))
        .collect();
    Ok(Outcome::of(
        json!({ "process_id": taken.process_id, "events": events }),
    ))
}

pub fn offline_list(ctx: &mut Ctx, params: &Params) -> ApiResult<Outcome> {
    let target = offline_target(ctx, params)?;
    let conds = parse_filter(params.get("filter"), LIST_FIELDS)?;
    let order =
        parse_order(params.get("order"), LIST_FIELDS)?.unwrap_or_else(|| vec![(Field::Id, false)]);
    let start = positive(params, "start", 0, 0)?;
    let (rows, total) = ctx.st.queue.list(target, &conds, &order, start, PAGE);
    let items = rows
        .iter()
        .map(|r| ctx.st.queue.row_json(r, true))
        .collect();
    Ok(Outcome::page(items, start, PAGE, total))
}

pub fn offline_clear(ctx: &mut Ctx, params: &Params) -> ApiResult<Outcome> {
    let target = offline_target(ctx, params)?;
    // Only a missing `process_id` is refused: an empty one is taken as given, and selects the
    // rows whose process id is empty, the free ones (docs/emulator.md).
    let pid = match params.get("process_id") {
        None | Some(Value::Null) => return Err(ApiError::argument("process_id", "required")),
        Some(v) => scalar_text(v).ok_or_else(|| ApiError::argument("process_id", "required"))?,
    };
    let msgs = given(params, "message_id")
        .map(|v| message_ids(&v, "message_id", true))
        .transpose()?;
    let ids = match (&msgs, given(params, "id")) {
        (None, Some(v)) => {
            let items =
                list_values(&v).ok_or_else(|| ApiError::argument("id", "must be an array"))?;
            let ids = items
                .into_iter()
                .map(|i| strict_int(i).filter(|n| *n > 0).map(|n| n as u64))
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| ApiError::argument("id", "must be an array of positive integers"))?;
            Some(ids)
        }
        _ => None,
    };
    ctx.st
        .queue
        .clear(target, &pid, msgs.as_deref(), ids.as_deref());
    Ok(Outcome::of(json!(true)))
}

pub fn offline_error(ctx: &mut Ctx, params: &Params) -> ApiResult<Outcome> {
    let target = offline_target(ctx, params)?;
    let pid = process_id(params, true)?.unwrap_or_default();
    let v = params
        .get("message_id")
        .ok_or_else(|| ApiError::argument("message_id", "required"))?;
    let msgs = match v {
        Value::String(s) if s.is_empty() => Vec::new(),
        v => message_ids(v, "message_id", false)?,
    };
    ctx.st.queue.fail(target, &pid, &msgs);
    Ok(Outcome::of(json!(true)))
}
