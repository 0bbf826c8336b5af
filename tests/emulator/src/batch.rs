//! `batch`: up to 50 `method?query` commands in one HTTP request (one tick of the rate limit),
//! each accounted as its own method, with `$result[cmd][field]` references and `halt`.

use crate::error::{ApiError, ApiResult};
use crate::params::{flag, parse_form, scalar_text, Params};
use crate::rest::{call_method, normalize_method, time_json, Ctx, Outcome};
use serde_json::{json, Map, Value};

pub const MAX_COMMANDS: usize = 50;

pub fn run(ctx: &mut Ctx, params: &Params) -> ApiResult<Outcome> {
    let cmd = params
        .get("cmd")
        .ok_or_else(|| ApiError::argument("cmd", "required"))?;
    // The portal reads `cmd` into a PHP array: keys "0", "1", ... are integers there, whether
    // they came as a list or as an object, and the answers' shapes follow the keys alone.
    let entries: Vec<(String, String)> = match cmd {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), scalar_text(v).unwrap_or_default()))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), scalar_text(v).unwrap_or_default()))
            .collect(),
        _ => {
            return Err(ApiError::argument(
                "cmd",
                "must be an object or array of 'method?query' strings",
            ))
        }
    };
    if entries.len() > MAX_COMMANDS {
        return Err(ApiError::new(
            400,
            "ERROR_BATCH_LENGTH_EXCEEDED",
            "Max batch length exceeded",
        ));
    }
    let halt = flag(params.get("halt"), false);
    let (mut results, mut errors, mut totals, mut nexts, mut times) =
        (Map::new(), Map::new(), Map::new(), Map::new(), Map::new());
    for (key, text) in entries {
        let text = substitute(&text, &results);
        let (method, query) = text.split_once('?').unwrap_or((text.as_str(), ""));
        let method = normalize_method(method);
        let mut sub = parse_form(query.as_bytes());
        if sub.get("auth_connector").is_none() {
            if let Some(c) = params.get("auth_connector") {
                sub.0.insert("auth_connector".into(), c.clone());
            }
        }
        let started = crate::clock::Stopwatch::start();
        let (result, operating) = if method == "batch" {
            (
                Err(ApiError::new(
                    405,
                    "ERROR_BATCH_METHOD_NOT_ALLOWED",
                    "Method is not allowed for batch usage",
                )),
                None,
            )
        } else {
            call_method(ctx, &method, &sub)
        };
        match result {
            Ok(o) => {
                results.insert(key.clone(), o.result);
                if let Some(t) = o.total {
                    totals.insert(key.clone(), json!(t));
                }
                if let Some(n) = o.next {
                    nexts.insert(key.clone(), json!(n));
                }
                times.insert(key, time_json(ctx.now_ms, started.elapsed_s(), operating));
            }
            Err(e) => {
                errors.insert(key, e.body());
                if halt {
                    break;
                }
            }
        }
    }
    Ok(Outcome::of(json!({
        "result": php_array(results),
        "result_error": php_array(errors),
        "result_total": php_array(totals),
        "result_next": php_array(nexts),
        "result_time": php_array(times),
    })))
}

/// PHP's `json_encode` of an array: `[]` when empty, a list when the keys are 0..n in order
/// (written as PHP writes integers: "00" or "+1" stay string keys), else an object.
fn php_array(m: Map<String, Value>) -> Value {
    let sequential = m
        .keys()
        .enumerate()
        .all(|(i, k)| k.parse::<usize>().ok() == Some(i) && *k == i.to_string());
    if sequential {
        Value::Array(m.into_iter().map(|(_, v)| v).collect())
    } else {
        Value::Object(m)
    }
}

/// Replaces `$result[cmd][field]...` with the scalar found there (URL-encoded, since it lands in
/// a query string); an unresolved reference becomes empty.
fn substitute(text: &str, results: &Map<String, Value>) -> String {
    const MARK: &str = "$result[";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let mut tail = &rest[at + MARK.len() - 1..];
        let mut path = Vec::new();
        while let Some(inner) = tail.strip_prefix('[') {
            let Some(close) = inner.find(']') else { break };
            path.push(&inner[..close]);
            tail = &inner[close + 1..];
        }
        let mut cur = path.first().and_then(|k| results.get(*k));
        for seg in path.iter().skip(1) {
            cur = cur.and_then(|v| match v {
                Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                Value::Object(o) => o.get(*seg),
                _ => None,
            });
        }
        let value = cur.and_then(scalar_text).unwrap_or_default();
        out.extend(form_urlencoded::byte_serialize(value.as_bytes()));
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve() {
        let mut r = Map::new();
        r.insert("add".into(), json!(7));
        r.insert("list".into(), json!([{"ID": "3 4"}]));
        assert_eq!(
            substitute("crm.deal.get?id=$result[add]", &r),
            "crm.deal.get?id=7"
        );
        assert_eq!(
            substitute("x?id=$result[list][0][ID]&y=1", &r),
            "x?id=3+4&y=1"
        );
        assert_eq!(substitute("x?id=$result[missing]", &r), "x?id=");
    }

    #[test]
    fn php_shapes() {
        assert_eq!(php_array(Map::new()), json!([]));
        let mut m = Map::new();
        m.insert("1".into(), json!(1));
        assert_eq!(php_array(m), json!({"1": 1}));
        let mut m = Map::new();
        m.insert("0".into(), json!("a"));
        m.insert("1".into(), json!("b"));
        assert_eq!(php_array(m), json!(["a", "b"]));
        let mut m = Map::new();
        m.insert("00".into(), json!("a"));
        assert_eq!(php_array(m), json!({"00": "a"}));
        let mut m = Map::new();
        m.insert("1".into(), json!("b"));
        m.insert("0".into(), json!("a"));
        assert_eq!(php_array(m), json!({"1": "b", "0": "a"}));
    }
}
