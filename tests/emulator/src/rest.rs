//! One REST request, start to finish, under the state lock: rate limit, https rule, auth,
//! operating-time check, the method itself, and the `{result, time}` envelope.

use crate::clock::iso;
use crate::error::{ApiError, ApiResult};
use crate::limits::OperatingNow;
use crate::params::Params;
use crate::state::{Shared, State};
use crate::{batch, crm, events};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// Who is calling: an application user (OAuth token) or an inbound webhook.
#[derive(Debug, Clone)]
pub struct Caller {
    pub app: Option<u32>,
    pub webhook: Option<String>,
    pub user_id: u64,
    pub admin: bool,
}

impl Caller {
    /// Operating time is accounted per application or per webhook.
    fn operating_key(&self) -> String {
        match (&self.app, &self.webhook) {
            (Some(app), _) => format!("app:{app}"),
            (None, Some(code)) => format!("hook:{code}"),
            _ => String::new(),
        }
    }
}

/// A method's answer before it is wrapped: `total`/`next` ride beside `result`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Value,
    pub total: Option<u64>,
    pub next: Option<u64>,
}

impl Outcome {
    pub fn of(result: Value) -> Outcome {
        Outcome {
            result,
            total: None,
            next: None,
        }
    }

    /// A page of a list method: `next` only when more rows follow.
    pub fn page(items: Vec<Value>, start: usize, page: usize, total: usize) -> Outcome {
        let next = (start + page < total).then_some((start + page) as u64);
        Outcome {
            result: Value::Array(items),
            total: Some(total as u64),
            next,
        }
    }
}

/// What a method may touch while it runs.
pub struct Ctx<'a> {
    pub st: &'a mut State,
    pub shared: &'a Shared,
    pub caller: &'a Caller,
    pub now_ms: i64,
    /// Applications whose queue received rows during this request (for onOfflineEvent).
    pub touched: &'a mut BTreeSet<u32>,
}

impl Ctx<'_> {
    /// The application, or `WRONG_AUTH_TYPE` for a webhook.
    pub fn app_only(&self) -> ApiResult<u32> {
        self.caller.app.ok_or_else(ApiError::wrong_auth_type)
    }

    pub fn admin_only(&self, why: &str) -> ApiResult<()> {
        if self.caller.admin {
            Ok(())
        } else {
            Err(ApiError::access_denied(why))
        }
    }

    /// The request's `auth_connector` (empty when absent or when the plan lacks the feature).
    pub fn connector(&mut self, params: &Params) -> (String, u32) {
        let name = if self.st.config.auth_connector {
            params.str("auth_connector").unwrap_or_default()
        } else {
            String::new()
        };
        let id = self.st.queue.connectors.intern(&name);
        (name, id)
    }
}

/// Methods are case-insensitive and may carry a `.json` suffix.
pub fn normalize_method(raw: &str) -> String {
    let m = raw.trim().trim_matches('/').to_ascii_lowercase();
    m.strip_suffix(".json").map(str::to_string).unwrap_or(m)
}

/// Runs one method for a caller, with its operating-time check and accounting.
pub fn call_method(
    ctx: &mut Ctx,
    method: &str,
    params: &Params,
) -> (ApiResult<Outcome>, Option<OperatingNow>) {
    let key = ctx.caller.operating_key();
    let before = ctx.st.operating.current(&key, method, ctx.now_ms);
    if let Some(limit) = ctx.st.config.operating_limit_s {
        if before.seconds > limit {
            return (Err(ApiError::operation_time_limit(method)), Some(before));
        }
    }
    let started = crate::clock::Stopwatch::start();
    let result = dispatch(ctx, method, params);
    if matches!(&result, Err(e) if e.code == "ERROR_METHOD_NOT_FOUND") {
        return (result, None);
    }
    let cost = ctx
        .st
        .config
        .operating_cost_s
        .get(method)
        .copied()
        .unwrap_or_else(|| started.elapsed_s());
    let after = ctx.st.operating.add(&key, method, ctx.now_ms, cost);
    (result, Some(after))
}

fn dispatch(ctx: &mut Ctx, method: &str, params: &Params) -> ApiResult<Outcome> {
    match method {
        "event.bind" => events::bind(ctx, params),
        "event.unbind" => events::unbind(ctx, params),
        "event.get" => events::bindings(ctx),
        "events" => Ok(events::names()),
        "event.offline.get" => events::offline_get(ctx, params),
        "event.offline.list" => events::offline_list(ctx, params),
        "event.offline.clear" => events::offline_clear(ctx, params),
        "event.offline.error" => events::offline_error(ctx, params),
        "feature.get" => feature_get(ctx, params),
        "app.info" => app_info(ctx),
        "profile" => Ok(profile(ctx)),
        "batch" => Err(ApiError::new(
            405,
            "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "Method is not allowed for batch usage",
        )),
        m if m.starts_with("crm.") => crm::call(ctx, m, params),
        m => Err(ApiError::method_not_found(m)),
    }
}

fn feature_get(ctx: &mut Ctx, params: &Params) -> ApiResult<Outcome> {
    let code = params
        .str("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::new(400, "CODE_EMPTY", "CODE can't be empty"))?;
    let on = match code.as_str() {
        "rest_offline_extended" => ctx.st.config.extended_mode,
        "rest_auth_connector" => ctx.st.config.auth_connector,
        _ => false,
    };
    Ok(Outcome::of(json!({ "value": if on { "Y" } else { "N" } })))
}

fn app_info(ctx: &mut Ctx) -> ApiResult<Outcome> {
    let app = ctx.app_only()?;
    let client_id = ctx.st.apps[app as usize].client_id.clone();
    Ok(Outcome::of(json!({
        "ID": (app + 1).to_string(),
        "CODE": client_id,
        "VERSION": "1",
        "STATUS": "L",
        "INSTALLED": true,
        "PAYMENT_EXPIRED": "N",
        "DAYS": null,
        "LANGUAGE_ID": "en",
        "LICENSE": "en_project",
        "LICENSE_TYPE": "project",
        "LICENSE_FAMILY": "project",
    })))
}

fn profile(ctx: &Ctx) -> Outcome {
    Outcome::of(json!({
        "ID": ctx.caller.user_id.to_string(),
        "ADMIN": ctx.caller.admin,
        "NAME": if ctx.caller.admin { "Admin" } else { "User" },
        "LAST_NAME": format!("#{}", ctx.caller.user_id),
        "PERSONAL_GENDER": "",
        "TIME_ZONE": "",
        "TIME_ZONE_OFFSET": crate::clock::PORTAL_UTC_OFFSET_S,
    }))
}

/// The `time` object of a response.
pub fn time_json(start_ms: i64, processing_s: f64, operating: Option<OperatingNow>) -> Value {
    let start = start_ms as f64 / 1000.0;
    let finish = start + processing_s;
    let mut t = Map::new();
    t.insert("start".into(), json!(start));
    t.insert("finish".into(), json!(finish));
    t.insert("duration".into(), json!(processing_s));
    t.insert("processing".into(), json!(processing_s));
    t.insert("date_start".into(), json!(iso(start_ms.div_euclid(1000))));
    t.insert("date_finish".into(), json!(iso(finish.floor() as i64)));
    if let Some(op) = operating {
        if let Some(reset) = op.reset_at_s {
            t.insert("operating_reset_at".into(), json!(reset));
        }
        t.insert("operating".into(), json!(op.seconds));
    }
    Value::Object(t)
}

/// How the request reached us.
pub struct Incoming<'a> {
    pub method: &'a str,
    /// `(user_id, code)` for `/rest/<user_id>/<code>/METHOD`.
    pub webhook: Option<(&'a str, &'a str)>,
    pub params: Params,
    pub https: bool,
}

fn authenticate(st: &State, now_ms: i64, req: &Incoming) -> ApiResult<Caller> {
    if let Some((user, code)) = req.webhook {
        let hook = st
            .webhooks
            .get(code)
            .filter(|h| h.user_id.to_string() == user)
            .ok_or_else(ApiError::no_auth)?;
        return Ok(Caller {
            app: None,
            webhook: Some(code.to_string()),
            user_id: hook.user_id,
            admin: hook.admin,
        });
    }
    let token = req
        .params
        .str("auth")
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::no_auth)?;
    let t = st.tokens.get(&token).ok_or_else(ApiError::invalid_token)?;
    if now_ms >= t.expires_ms {
        return Err(ApiError::expired_token());
    }
    Ok(Caller {
        app: Some(t.app),
        webhook: None,
        user_id: t.user_id,
        admin: t.admin,
    })
}

/// Runs the daily expiry job when a day has passed on the emulator's clock.
pub fn daily_jobs(st: &mut State, now_ms: i64) {
    if now_ms - st.last_expiry_ms >= 86_400_000 {
        st.last_expiry_ms = now_ms;
        let n = st.queue.expire(now_ms.div_euclid(1000));
        st.stats.expired_rows += n as u64;
    }
}

/// Executes a REST request; returns the HTTP status, the JSON body and the applications whose
/// queue grew.
pub fn execute(shared: &Shared, st: &mut State, req: Incoming) -> (u16, Value, BTreeSet<u32>) {
    let started = crate::clock::Stopwatch::start();
    let now_ms = shared.clock.now_ms();
    let mut touched = BTreeSet::new();
    daily_jobs(st, now_ms);
    let answer = run(shared, st, &req, now_ms, &mut touched);
    match answer {
        Ok((outcome, operating)) => {
            let mut body = Map::new();
            body.insert("result".into(), outcome.result);
            if let Some(next) = outcome.next {
                body.insert("next".into(), json!(next));
            }
            if let Some(total) = outcome.total {
                body.insert("total".into(), json!(total));
            }
            body.insert(
                "time".into(),
                time_json(now_ms, started.elapsed_s(), operating),
            );
            (200, Value::Object(body), touched)
        }
        Err(e) => {
            *st.stats.rejections.entry(e.code.clone()).or_default() += 1;
            (e.status, e.body(), touched)
        }
    }
}

fn run(
    shared: &Shared,
    st: &mut State,
    req: &Incoming,
    now_ms: i64,
    touched: &mut BTreeSet<u32>,
) -> ApiResult<(Outcome, Option<OperatingNow>)> {
    if let Some(rate) = st.config.rate_limit {
        if !st.bucket.admit(now_ms, rate) {
            return Err(ApiError::query_limit());
        }
    }
    if st.config.require_https && !req.https {
        return Err(ApiError::new(400, "INVALID_REQUEST", "Https required."));
    }
    let caller = authenticate(st, now_ms, req)?;
    let mut ctx = Ctx {
        st,
        shared,
        caller: &caller,
        now_ms,
        touched,
    };
    if req.method == "batch" {
        // The outer batch call is not accounted in `operating` (its commands are), yet its
        // `time` carries the key, as the portal's does: the batch's own, never growing.
        let key = ctx.caller.operating_key();
        let operating = ctx.st.operating.current(&key, "batch", now_ms);
        return batch::run(&mut ctx, &req.params).map(|o| (o, Some(operating)));
    }
    let (result, operating) = call_method(&mut ctx, req.method, &req.params);
    result.map(|o| (o, operating))
}
