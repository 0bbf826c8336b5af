//! Injected failures: what a real portal, its proxy and the network do to a client on a bad day.
//! A rule matches a REST method (or every method), fires with a probability, a limited number
//! of times, before the method runs or after it (the method's effect stays, its answer is lost).

use crate::error::ApiError;
use crate::params::{scalar_text, Params};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// The longest injected delay: ten minutes outlasts any client timeout worth testing.
const MAX_DELAY_MS: u64 = 600_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Http500,
    Html502,
    Drop,
    Delay(u64),
    QueryLimit,
    ExpiredToken,
    MalformedJson,
    /// Answers with a redirect (a renamed portal, a hijacked proxy): `status` to `location`.
    Redirect {
        status: u16,
        location: String,
    },
    /// The method runs, then its answer's first `count` event rows get these fields (a portal
    /// or proxy bug: `MESSAGE_ID: null`, `ID: "x"`, ...). Always applied to the answer.
    CorruptRows {
        fields: Map<String, Value>,
        count: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Before,
    After,
}

#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    /// Parameters the call must carry (names lower case; nested ones as `cmd[g1]`): their
    /// text, `*` for any value, `None` for absent.
    params: Vec<(String, Option<String>)>,
    kind: Kind,
    times: Option<u64>,
    probability: f64,
    phase: Phase,
}

#[derive(Debug)]
pub struct Faults {
    rules: Vec<Rule>,
    rng: StdRng,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            rules: Vec::new(),
            rng: StdRng::from_entropy(),
        }
    }
}

fn bad(why: &str) -> ApiError {
    ApiError::new(400, "BAD_FAULT_RULE", why)
}

fn parse_kind(rule: &Value) -> Result<Kind, ApiError> {
    let delay = |v: Option<&Value>| {
        v.and_then(Value::as_u64)
            .filter(|ms| *ms <= MAX_DELAY_MS)
            .ok_or_else(|| bad("delay_ms needs a number of milliseconds, at most 600000"))
    };
    match rule.get("kind") {
        Some(Value::Object(o)) if o.contains_key("delay_ms") => {
            Ok(Kind::Delay(delay(o.get("delay_ms"))?))
        }
        Some(Value::Object(o)) if o.contains_key("redirect") => {
            let location = o
                .get("redirect")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty() && !l.contains(['\r', '\n']))
                .ok_or_else(|| bad("redirect needs a location URL"))?;
            let status = match o.get("status") {
                None | Some(Value::Null) => 307,
                Some(v) => v
                    .as_u64()
                    .filter(|s| [301, 302, 303, 307, 308].contains(s))
                    .ok_or_else(|| bad("a redirect status is 301, 302, 303, 307 or 308"))?
                    as u16,
            };
            Ok(Kind::Redirect {
                status,
                location: location.to_string(),
            })
        }
        Some(Value::Object(o)) if o.contains_key("corrupt_rows") => {
            let fields = o
                .get("corrupt_rows")
                .and_then(Value::as_object)
                .filter(|f| !f.is_empty())
                .ok_or_else(|| bad("corrupt_rows needs an object of fields to set"))?;
            let count = match o.get("count") {
                None | Some(Value::Null) => 1,
                Some(v) => {
                    v.as_u64()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| bad("count must be 1..1000"))? as usize
                }
            };
            Ok(Kind::CorruptRows {
                fields: fields.clone(),
                count,
            })
        }
        Some(Value::String(k)) => Ok(match k.as_str() {
            "http_500" => Kind::Http500,
            "html_502" => Kind::Html502,
            "drop" => Kind::Drop,
            "delay_ms" => Kind::Delay(delay(rule.get("delay_ms").or_else(|| rule.get("ms")))?),
            "query_limit" => Kind::QueryLimit,
            "expired_token" => Kind::ExpiredToken,
            "malformed_json" => Kind::MalformedJson,
            other => return Err(bad(&format!("unknown fault kind '{other}'"))),
        }),
        _ => Err(bad("each rule needs a kind")),
    }
}

impl Kind {
    fn name(&self) -> Value {
        match self {
            Kind::Http500 => json!("http_500"),
            Kind::Html502 => json!("html_502"),
            Kind::Drop => json!("drop"),
            Kind::Delay(ms) => json!({ "delay_ms": ms }),
            Kind::QueryLimit => json!("query_limit"),
            Kind::ExpiredToken => json!("expired_token"),
            Kind::MalformedJson => json!("malformed_json"),
            Kind::Redirect { status, location } => {
                json!({ "redirect": location, "status": status })
            }
            Kind::CorruptRows { fields, count } => {
                json!({ "corrupt_rows": fields, "count": count })
            }
        }
    }
}

/// A parameter by name, nested names written PHP's way (`cmd[g1]`).
fn param<'a>(params: &'a Params, name: &str) -> Option<&'a Value> {
    let mut parts = name.split('[').map(|p| p.trim_end_matches(']'));
    let first = params.get(parts.next()?)?;
    parts.try_fold(first, |v, key| v.get(key).filter(|x| !x.is_null()))
}

/// Sets `fields` on the first `count` rows of an answer: `result.events` of
/// `event.offline.get`, `result` itself when it is a list (`event.offline.list`), or those of
/// the commands of a `batch`.
pub fn corrupt_rows(body: &mut Value, fields: &Map<String, Value>, count: usize) {
    let result = &mut body["result"];
    let mut left = count;
    let mut corrupt = |rows: &mut Vec<Value>| {
        for row in rows.iter_mut() {
            if left == 0 {
                return;
            }
            if let Value::Object(r) = row {
                for (k, v) in fields {
                    r.insert(k.clone(), v.clone());
                }
                left -= 1;
            }
        }
    };
    match result {
        Value::Array(rows) => corrupt(rows),
        Value::Object(o) => match o.get_mut("events") {
            Some(Value::Array(rows)) => corrupt(rows),
            _ => {
                if let Some(Value::Object(commands)) = o.get_mut("result") {
                    for c in commands.values_mut() {
                        if let Some(Value::Array(rows)) = c.get_mut("events") {
                            corrupt(rows);
                        }
                    }
                }
            }
        },
        _ => {}
    }
}

impl Faults {
    /// Replaces the rules with `{rules: [...], seed?}`.
    pub fn set(&mut self, body: &Value) -> Result<(), ApiError> {
        let rules = body
            .get("rules")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("body must be {rules: [...]}"))?;
        let mut parsed = Vec::with_capacity(rules.len());
        for r in rules {
            let phase = match r.get("phase").and_then(Value::as_str) {
                None | Some("before") => Phase::Before,
                Some("after") => Phase::After,
                Some(other) => {
                    return Err(bad(&format!(
                        "phase must be before or after, not '{other}'"
                    )))
                }
            };
            let probability = match r.get("probability") {
                None | Some(Value::Null) => 1.0,
                Some(p) => p
                    .as_f64()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| bad("probability must be within 0..1"))?,
            };
            let times = match r.get("times") {
                None | Some(Value::Null) => None,
                Some(t) => Some(
                    t.as_u64()
                        .ok_or_else(|| bad("times must be a non-negative integer"))?,
                ),
            };
            let method = r
                .get("method")
                .and_then(Value::as_str)
                .map(|m| m.to_ascii_lowercase())
                .filter(|m| m != "*");
            let params = match r.get("params") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| match v {
                        Value::Null => Ok((k.to_ascii_lowercase(), None)),
                        v => crate::params::scalar_text(v)
                            .map(|t| (k.to_ascii_lowercase(), Some(t)))
                            .ok_or_else(|| bad("params values must be scalars or null")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(bad("params must be an object {name: value}")),
            };
            let kind = parse_kind(r)?;
            // Corrupting rows needs the answer: such a rule always acts after the method ran.
            let phase = if matches!(kind, Kind::CorruptRows { .. }) {
                Phase::After
            } else {
                phase
            };
            parsed.push(Rule {
                method,
                params,
                kind,
                times,
                probability,
                phase,
            });
        }
        if let Some(seed) = body.get("seed").and_then(Value::as_u64) {
            self.rng = StdRng::seed_from_u64(seed);
        }
        self.rules = parsed;
        Ok(())
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The fault to apply to this call in this phase, if a rule fires.
    pub fn pick(&mut self, method: &str, params: &Params, phase: Phase) -> Option<Kind> {
        for rule in self.rules.iter_mut() {
            if rule.phase != phase || rule.times == Some(0) {
                continue;
            }
            if rule.method.as_deref().map(|m| m != method).unwrap_or(false) {
                continue;
            }
            if !rule.params.iter().all(|(name, want)| {
                let have = param(params, name);
                match want.as_deref() {
                    None => have.is_none(),
                    Some("*") => have.is_some(),
                    Some(text) => have.and_then(scalar_text).as_deref() == Some(text),
                }
            }) {
                continue;
            }
            if rule.probability < 1.0 && !self.rng.gen_bool(rule.probability) {
                continue;
            }
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            return Some(rule.kind.clone());
        }
        None
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rules
                .iter()
                .map(|r| {
                    json!({
                        "method": r.method,
                        "params": r.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
                        "kind": r.kind.name(),
                        "times": r.times,
                        "probability": r.probability,
                        "phase": if r.phase == Phase::After { "after" } else { "before" },
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_method_match() {
        let mut f = Faults::default();
        f.set(&json!({"rules": [{"method": "event.offline.get", "kind": "http_500", "times": 1}, {"kind": {"delay_ms": 5}, "phase": "after"}]}))
            .unwrap();
        let none = Params::default();
        assert_eq!(f.pick("event.offline.list", &none, Phase::Before), None);
        assert_eq!(
            f.pick("event.offline.get", &none, Phase::Before),
            Some(Kind::Http500)
        );
        assert_eq!(f.pick("event.offline.get", &none, Phase::Before), None);
        assert_eq!(
            f.pick("anything", &none, Phase::After),
            Some(Kind::Delay(5))
        );
        assert!(f.set(&json!({"rules": [{"kind": "nope"}]})).is_err());
        // Matching parameters: a fresh reservation of the main queue only.
        f.set(&json!({"rules": [{"method": "event.offline.get", "kind": "drop", "params": {"error": 0, "process_id": null}}]}))
            .unwrap();
        let p = |v: Value| Params::from_value(v);
        assert_eq!(
            f.pick("event.offline.get", &p(json!({"error": 1})), Phase::Before),
            None
        );
        assert_eq!(
            f.pick(
                "event.offline.get",
                &p(json!({"error": 0, "process_id": "x"})),
                Phase::Before
            ),
            None
        );
        assert_eq!(
            f.pick(
                "event.offline.get",
                &p(json!({"ERROR": "0"})),
                Phase::Before
            ),
            Some(Kind::Drop)
        );
        assert!(f
            .set(&json!({"rules": [{"kind": "drop", "params": {"a": [1]}}]}))
            .is_err());
        // Nested names and "*": a batch with a g0 command and no g1.
        f.set(&json!({"rules": [{"method": "batch", "kind": "drop", "params": {"cmd[g0]": "*", "cmd[g1]": null}}]}))
            .unwrap();
        let step = |cmd: Value| p(json!({ "cmd": cmd }));
        assert_eq!(
            f.pick("batch", &step(json!({"g0": "x", "g1": "y"})), Phase::Before),
            None
        );
        assert_eq!(
            f.pick("batch", &step(json!({"e0": "x"})), Phase::Before),
            None
        );
        assert_eq!(
            f.pick("batch", &step(json!({"g0": "x"})), Phase::Before),
            Some(Kind::Drop)
        );
    }
}
