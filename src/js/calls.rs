//! A portal's calls as Promises, shared by `Bitrix24` and `OfflineQueue`: the one promise
//! bridge (rejecting with a `B24Error`), `call`/`callPage`, `batch` and the list pagers
//! (`fetchList`/`callList`).

use super::convert::{field, js_error, opt_bool, opt_signal, opt_str, options, tree};
use super::platform::{key, put, JsData, WebPlatform};
use crate::core::args::{Body, Tree};
use crate::core::batch::{self, Command};
use crate::core::client::{CallOptions, Client};
use crate::core::digits::decimal;
use crate::core::error::{B24Error, Result};
use crate::core::pages::{ListPager, ListParams};
use crate::core::retry::{is_read_method, Idempotency};
use crate::core::text::concat;
use crate::core::validate;
use js_sys::{Object, Promise};
use std::future::Future;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

pub type WebClient = Client<WebPlatform>;

/// Runs a fallible future as a Promise that rejects with a `B24Error`. The future is boxed so
/// that the promise machinery exists once in the wasm, not once per exported method.
pub fn promise(f: impl Future<Output = Result<JsValue>> + 'static) -> Promise {
    boxed_promise(Box::pin(f))
}

fn boxed_promise(f: crate::core::joint::LocalBoxFuture<'static, Result<JsValue>>) -> Promise {
    future_to_promise(async move { f.await.map_err(|e| js_error(&e)) })
}

/// The method and parameters of one `call`, checked.
fn call_args(method: &str, params: Option<&JsValue>) -> Result<Body<JsData>> {
    validate::method_name(method)?;
    let Some(params) = params.filter(|p| !p.is_undefined() && !p.is_null()) else {
        return Ok(Body::new());
    };
    if !params.is_object() || js_sys::Array::is_array(params) {
        return Err(B24Error::invalid("params", "must be an object"));
    }
    Ok(Body::of(Some(JsData(params.clone()))))
}

/// What a call resolves with: the result (`call`), the page (`callPage`), or the rows of a
/// list page at a position (`listPage`, under `fetchList`).
pub enum Want {
    Result,
    Page,
    List(JsValue),
}

/// `call()`, `callPage()` and `listPage()` share everything but the request's body and what
/// they return: one call path.
pub fn run_call(
    client: Rc<WebClient>,
    method: String,
    params: Option<JsValue>,
    opts: Option<JsValue>,
    connector: Option<String>,
    want: Want,
) -> Promise {
    promise(async move {
        let opts = options(opts.as_ref(), "options")?;
        let list = match &want {
            Want::List(at) => Some((list_pager(&method, params.as_ref(), &opts)?, position(at)?)),
            _ => None,
        };
        let body = match &list {
            Some((pager, at)) => pager.request::<WebPlatform>(*at),
            None => call_args(&method, params.as_ref())?,
        };
        let signal = opt_signal(&opts)?;
        let idempotent = opt_bool(&opts, "idempotent")?.unwrap_or_else(|| is_read_method(&method));
        let connector = opt_str(&opts, "connector")?.or(connector);
        let call_opts = CallOptions {
            idempotency: if idempotent {
                Idempotency::Safe
            } else {
                Idempotency::Unsafe
            },
            signal: signal.as_ref(),
            connector: connector.as_deref(),
        };
        let reply = client.call(&method, &body, &call_opts).await?;
        let out = Object::new();
        if let Some((pager, at)) = list {
            let (rows, next) = pager.read::<WebPlatform>(at, reply)?;
            let rows: js_sys::Array = rows.into_iter().map(|r| r.0).collect();
            put(&out, &key("rows"), &rows);
            if let Some(n) = next {
                put(&out, &key("next"), &JsValue::from_f64(n as f64));
            }
            return Ok(out.into());
        }
        let result = reply.result.map(|d| d.0).unwrap_or(JsValue::NULL);
        if matches!(want, Want::Result) {
            return Ok(result);
        }
        let number = |n: Option<u64>| {
            n.map(|t| JsValue::from_f64(t as f64))
                .unwrap_or(JsValue::UNDEFINED)
        };
        put(&out, &key("result"), &result);
        put(&out, &key("total"), &number(reply.total));
        put(&out, &key("next"), &number(reply.next));
        Ok(out.into())
    })
}

/// `batch()`: `{ name: [method, params?] }` or `[[method, params?], ...]`.
pub fn run_batch(
    client: Rc<WebClient>,
    commands: JsValue,
    opts: Option<JsValue>,
    connector: Option<String>,
) -> Promise {
    promise(async move {
        let opts = options(opts.as_ref(), "options")?;
        let halt = opt_bool(&opts, "halt")?.unwrap_or(false);
        let signal = opt_signal(&opts)?;
        let list = match tree(&commands, "commands")? {
            Tree::Map(entries) => entries,
            Tree::List(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (decimal(i as u64), v))
                .collect(),
            _ => {
                return Err(B24Error::invalid(
                    "commands",
                    "must be an object or an array of [method, params]",
                ))
            }
        };
        let commands = list
            .into_iter()
            .map(|(name, spec)| {
                let bad = || {
                    B24Error::invalid(
                        "commands",
                        &concat(&["'", &name, "' must be [method, params?]"]),
                    )
                };
                let Tree::List(mut parts) = spec else {
                    return Err(bad());
                };
                if parts.is_empty() || parts.len() > 2 {
                    return Err(bad());
                }
                let params = (parts.len() == 2).then(|| parts.pop()).flatten();
                let method = parts
                    .pop()
                    .and_then(|m| m.as_str().map(str::to_string))
                    .ok_or_else(bad)?;
                Ok(Command {
                    name,
                    method,
                    params,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let items = batch::run(
            &client,
            commands,
            halt,
            signal.as_ref(),
            connector.as_deref(),
        )
        .await?;
        let (results, errors, totals, nexts) =
            (Object::new(), Object::new(), Object::new(), Object::new());
        let mut ok = true;
        for item in items {
            let key = JsValue::from_str(&item.name);
            match item.result {
                Ok(v) => {
                    put(&results, &key, &v.map(|d| d.0).unwrap_or(JsValue::NULL));
                }
                Err(e) => {
                    ok = false;
                    put(&errors, &key, &js_error(&e));
                }
            }
            if let Some(t) = item.total {
                put(&totals, &key, &JsValue::from_f64(t as f64));
            }
            if let Some(n) = item.next {
                put(&nexts, &key, &JsValue::from_f64(n as f64));
            }
        }
        let out = Object::new();
        put(&out, &key("ok"), &JsValue::from_bool(ok));
        put(&out, &key("results"), &results);
        put(&out, &key("errors"), &errors);
        put(&out, &key("total"), &totals);
        put(&out, &key("next"), &nexts);
        Ok(out.into())
    })
}

/// The pager of `fetchList`, from the app's arguments (`opts` already an object).
fn list_pager(method: &str, params: Option<&JsValue>, opts: &JsValue) -> Result<ListPager<JsData>> {
    let params = params.filter(|p| !p.is_undefined() && !p.is_null());
    let given = match params {
        None => ListParams {
            params: None,
            filter: None,
            order: None,
            start: false,
        },
        Some(p) if !p.is_object() || js_sys::Array::is_array(p) => {
            return Err(B24Error::invalid("params", "must be an object"))
        }
        Some(p) => ListParams {
            filter: field(p, "filter").map(JsData),
            order: field(p, "order").map(JsData),
            start: field(p, "start").is_some(),
            params: Some(JsData(p.clone())),
        },
    };
    ListPager::new::<WebPlatform>(
        method,
        given,
        opt_str(opts, "idKey")?,
        opt_str(opts, "resultKey")?,
    )
}

/// A page position as `fetchList` holds it: a non-negative integer.
fn position(at: &JsValue) -> Result<u64> {
    Ok(validate::non_negative("at", at.as_f64().unwrap_or(f64::NAN))? as u64)
}
