//! A small in-memory CRM (`crm.deal|lead|contact|company.add|update|get|delete|list`). Its only
//! purpose is to be a realistic producer: every change fires `ONCRM<ENTITY><ADD|UPDATE|DELETE>`
//! with `{"FIELDS":{"ID":"<id>"}}` through the offline-event producer rules.

use crate::clock::iso;
use crate::error::{ApiError, ApiResult};
use crate::events::fire;
use crate::filter::{split_op, Op};
use crate::params::{list_values, scalar_text, strict_int, Params};
use crate::rest::{Ctx, Outcome};
use serde_json::{json, Map, Value};
use std::cmp::Ordering;

const ENTITIES: &[&str] = &["deal", "lead", "contact", "company"];
const PAGE: usize = 50;

pub fn call(ctx: &mut Ctx, method: &str, params: &Params) -> ApiResult<Outcome> {
    let mut parts = method.split('.').skip(1);
    let (Some(entity), Some(op), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ApiError::method_not_found(method));
    };
    if !ENTITIES.contains(&entity) {
        return Err(ApiError::method_not_found(method));
    }
    match op {
        "add" => add(ctx, entity, params),
        "update" => update(ctx, entity, params),
        "get" => get(ctx, entity, params),
        "delete" => delete(ctx, entity, params),
        "list" => list(ctx, entity, params),
        _ => Err(ApiError::method_not_found(method)),
    }
}

fn not_found() -> ApiError {
    ApiError::new(400, "NOT_FOUND", "Not found")
}

fn record_id(params: &Params) -> ApiResult<u64> {
    params
        .get("id")
        .and_then(strict_int)
        .filter(|n| *n > 0)
        .map(|n| n as u64)
        .ok_or_else(|| ApiError::argument("id", "must be a positive integer"))
}

fn fields(params: &Params) -> ApiResult<Map<String, Value>> {
    match params.get("fields") {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
            .collect()),
        Some(Value::Array(a)) if a.is_empty() => Ok(Map::new()),
        Some(_) => Err(ApiError::argument("fields", "must be an object")),
    }
}

/// Fires the entity's event on behalf of the caller (an app with its connector skips its own binding).
fn emit(ctx: &mut Ctx, entity: &str, action: &str, id: u64, connector: u32) {
    let event = format!("ONCRM{}{}", entity.to_ascii_uppercase(), action);
    let source = ctx.caller.app.map(|app| (app, connector));
    let data = json!({ "FIELDS": { "ID": id.to_string() } });
    fire(
        ctx.st,
        ctx.now_ms,
        &event,
        &data,
        ctx.caller.user_id,
        source,
        None,
        ctx.touched,
    );
}

fn add(ctx: &mut Ctx, entity: &str, params: &Params) -> ApiResult<Outcome> {
    let mut record = fields(params)?;
    let (_, connector) = ctx.connector(params);
    let next = ctx.st.crm.next_id.entry(entity.to_string()).or_insert(1);
    let id = *next;
    *next += 1;
    let now = iso(ctx.now_ms.div_euclid(1000));
    record.insert("ID".into(), json!(id.to_string()));
    record
        .entry("TITLE")
        .or_insert_with(|| json!(format!("{entity} #{id}")));
    record.insert("DATE_CREATE".into(), json!(now));
    record.insert("DATE_MODIFY".into(), json!(now));
    record.insert(
        "CREATED_BY_ID".into(),
        json!(ctx.caller.user_id.to_string()),
    );
    record.insert("MODIFY_BY_ID".into(), json!(ctx.caller.user_id.to_string()));
    ctx.st
        .crm
        .entities
        .entry(entity.to_string())
        .or_default()
        .insert(id, record);
    emit(ctx, entity, "ADD", id, connector);
    Ok(Outcome::of(json!(id)))
}

fn update(ctx: &mut Ctx, entity: &str, params: &Params) -> ApiResult<Outcome> {
    let id = record_id(params)?;
    let changes = fields(params)?;
    let (_, connector) = ctx.connector(params);
    let now = iso(ctx.now_ms.div_euclid(1000));
    let user = ctx.caller.user_id.to_string();
    let record = ctx
        .st
        .crm
        .entities
        .get_mut(entity)
        .and_then(|t| t.get_mut(&id))
        .ok_or_else(not_found)?;
    for (k, v) in changes {
        if k != "ID" {
            record.insert(k, v);
        }
    }
    record.insert("DATE_MODIFY".into(), json!(now));
    record.insert("MODIFY_BY_ID".into(), json!(user));
    emit(ctx, entity, "UPDATE", id, connector);
    Ok(Outcome::of(json!(true)))
}

fn get(ctx: &mut Ctx, entity: &str, params: &Params) -> ApiResult<Outcome> {
    let id = record_id(params)?;
    let record = ctx
        .st
        .crm
        .entities
        .get(entity)
        .and_then(|t| t.get(&id))
        .ok_or_else(not_found)?;
    Ok(Outcome::of(Value::Object(record.clone())))
}

fn delete(ctx: &mut Ctx, entity: &str, params: &Params) -> ApiResult<Outcome> {
    let id = record_id(params)?;
    let (_, connector) = ctx.connector(params);
    ctx.st
        .crm
        .entities
        .get_mut(entity)
        .and_then(|t| t.remove(&id))
        .ok_or_else(not_found)?;
    emit(ctx, entity, "DELETE", id, connector);
    Ok(Outcome::of(json!(true)))
}

/// Numbers compare as numbers, everything else as text.
fn compare(a: &Value, b: &Value) -> Ordering {
    let (ta, tb) = (
        scalar_text(a).unwrap_or_default(),
        scalar_text(b).unwrap_or_default(),
    );
    match (ta.parse::<f64>(), tb.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => ta.cmp(&tb),
    }
}

fn list(ctx: &mut Ctx, entity: &str, params: &Params) -> ApiResult<Outcome> {
    let mut conds: Vec<(Op, String, Vec<Value>)> = Vec::new();
    if let Some(Value::Object(f)) = params.get("filter") {
        for (key, v) in f {
            let (op, field) = split_op(key);
            let values = list_values(v)
                .map(|l| l.into_iter().cloned().collect())
                .unwrap_or_else(|| vec![v.clone()]);
            conds.push((op, field.to_ascii_uppercase(), values));
        }
    }
    let mut order: Vec<(String, bool)> = Vec::new();
    if let Some(Value::Object(o)) = params.get("order") {
        for (k, d) in o {
            let desc = scalar_text(d)
                .map(|d| d.eq_ignore_ascii_case("desc"))
                .unwrap_or(false);
            order.push((k.to_ascii_uppercase(), desc));
        }
    }
    // `start=-1`: the first page without counting (no `total`, no `next`): how large lists
    // are read, paging by `>ID` of the last row instead.
    let start = match params.get("start") {
        None => Some(0),
        Some(v) => match strict_int(v) {
            Some(-1) => None,
            Some(n) if n >= 0 => Some(n as usize),
            _ => {
                return Err(ApiError::argument(
                    "start",
                    "must be a non-negative integer or -1",
                ))
            }
        },
    };
    let empty = Default::default();
    let table = ctx.st.crm.entities.get(entity).unwrap_or(&empty);
    let null = Value::Null;
    let mut hits: Vec<&Map<String, Value>> = table
        .values()
        .filter(|r| {
            conds.iter().all(|(op, field, values)| {
                let have = r.get(field).unwrap_or(&null);
                let hit = |v: &Value| op.holds(compare(have, v));
                if *op == Op::Ne {
                    values.iter().all(hit)
                } else {
                    values.iter().any(hit)
                }
            })
        })
        .collect();
    hits.sort_by(|a, b| {
        for (field, desc) in &order {
            let o = compare(a.get(field).unwrap_or(&null), b.get(field).unwrap_or(&null));
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    let total = hits.len();
    let items = hits
        .into_iter()
        .skip(start.unwrap_or(0))
        .take(PAGE)
        .map(|r| Value::Object(r.clone()))
        .collect();
    Ok(match start {
        Some(start) => Outcome::page(items, start, PAGE, total),
        None => Outcome::of(Value::Array(items)),
    })
}
