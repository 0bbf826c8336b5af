//! Request parameters the way PHP and Bitrix24 read them.
//!
//! The portal accepts the same call as a query string, a form-urlencoded body with PHP-style
//! nested keys (`filter[>ID]=5&message_id[]=…`) or a JSON body, and reads top-level names
//! case-insensitively. Everything is folded into one JSON object whose top-level keys are lower
//! case, so the method code has a single shape to look at.

use serde_json::{Map, Value};

/// Parameters of one call: top-level names lower-cased, nested keys kept as sent.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Map<String, Value>);

impl Params {
    pub fn from_value(value: Value) -> Params {
        let mut out = Map::new();
        if let Value::Object(map) = value {
            for (k, v) in map {
                out.insert(k.to_ascii_lowercase(), v);
            }
        }
        Params(out)
    }

    /// Merges `other` over `self` (later sources win, as `$_REQUEST` lets POST win over GET).
    pub fn merge(&mut self, other: Params) {
        for (k, v) in other.0 {
            self.0.insert(k, v);
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A parameter as text; numbers and booleans are rendered the way PHP would cast them.
    pub fn str(&self, name: &str) -> Option<String> {
        self.get(name).and_then(scalar_text)
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }
}

/// Text of a scalar JSON value (`"5"`, `5`, `true` -> "5", "5", "1").
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1".into() } else { "".into() }),
        _ => None,
    }
}

/// An integer sent as a JSON number or as decimal text; anything else is `None`.
pub fn strict_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty()
                || !t
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
            {
                return None;
            }
            t.parse().ok()
        }
        _ => None,
    }
}

/// PHP's truthiness for flags such as `clear`, `error`, `halt`.
pub fn flag(v: Option<&Value>, default: bool) -> bool {
    match v {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().map(|f| f != 0.0).unwrap_or(default),
        Some(Value::String(s)) => {
            let s = s.trim();
            !(s.is_empty()
                || s == "0"
                || s.eq_ignore_ascii_case("n")
                || s.eq_ignore_ascii_case("false"))
        }
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// The values of a PHP array: a JSON array, or an object whose keys are its indices.
pub fn list_values(v: &Value) -> Option<Vec<&Value>> {
    match v {
        Value::Array(a) => Some(a.iter().collect()),
        Value::Object(o) => Some(o.values().collect()),
        _ => None,
    }
}

/// PHP's `max_input_nesting_level`: a variable nested deeper than this is dropped.
pub const MAX_NESTING: usize = 64;
/// PHP's `max_input_vars`: variables after this many are dropped.
pub const MAX_INPUT_VARS: usize = 1000;

/// Parses `a=1&b[c]=2&d[]=3&d[]=4` into nested JSON the way PHP builds `$_POST`, with PHP's
/// limits: at most [`MAX_INPUT_VARS`] variables, each nested at most [`MAX_NESTING`] deep
/// (deeper ones are dropped, as PHP drops them), so no body can exhaust the stack or the CPU.
pub fn parse_form(body: &[u8]) -> Params {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(body).take(MAX_INPUT_VARS) {
        let path = split_php_key(&key);
        if path.is_empty() || path.len() > MAX_NESTING + 1 {
            continue;
        }
        insert_path(&mut root, &path, Value::String(value.into_owned()));
    }
    let root = root
        .into_iter()
        .map(|(k, v)| (k, normalize_lists(v)))
        .collect();
    Params::from_value(Value::Object(root))
}

/// `filter[>ID]` -> ["filter", ">ID"]; `ids[]` -> ["ids", ""] (an empty segment appends).
fn split_php_key(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_string()];
    };
    let mut parts = vec![key[..open].to_string()];
    let mut rest = &key[open..];
    while let Some(stripped) = rest.strip_prefix('[') {
        if parts.len() > MAX_NESTING + 1 {
            break;
        }
        match stripped.find(']') {
            Some(close) => {
                parts.push(stripped[..close].to_string());
                rest = &stripped[close + 1..];
            }
            None => break,
        }
    }
    if parts[0].is_empty() {
        return Vec::new();
    }
    parts
}

fn insert_path(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let key = if path[0].is_empty() {
        // `x[]`: append one past the largest integer key, as PHP does. PHP's integer keys are
        // canonical decimal i64s ("007" and numbers past i64 are string keys); when the next
        // index would overflow, PHP refuses the element, and so do we.
        let largest = map.keys().filter_map(|k| php_int_key(k)).max();
        match largest.map_or(Some(0), |m| m.checked_add(1)) {
            Some(next) => next.to_string(),
            None => return,
        }
    } else {
        path[0].clone()
    };
    if path.len() == 1 {
        map.insert(key, value);
        return;
    }
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(inner) = slot {
        insert_path(inner, &path[1..], value);
    }
}

/// The integer a key stands for in a PHP array, if it is one.
fn php_int_key(k: &str) -> Option<i64> {
    k.parse::<i64>().ok().filter(|n| n.to_string() == k)
}

/// Turns objects whose keys are exactly 0..n into arrays, recursively, so that
/// `message_id[]=a&message_id[]=b` and `"message_id":["a","b"]` look the same.
pub fn normalize_lists(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let is_list = !map.is_empty()
                && map
                    .keys()
                    .enumerate()
                    .all(|(i, k)| k.parse::<usize>().ok() == Some(i));
            if is_list {
                Value::Array(map.into_iter().map(|(_, v)| normalize_lists(v)).collect())
            } else {
                Value::Object(
                    map.into_iter()
                        .map(|(k, v)| (k, normalize_lists(v)))
                        .collect(),
                )
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize_lists).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn php_nested_keys() {
        let p = parse_form(b"filter%5B%3EID%5D=5&message_id[]=a&message_id[]=b&ORDER[ID]=DESC&x=1");
        assert_eq!(p.get("filter"), Some(&json!({">ID": "5"})));
        assert_eq!(p.get("message_id"), Some(&json!(["a", "b"])));
        assert_eq!(p.get("order"), Some(&json!({"ID": "DESC"})));
        assert_eq!(p.str("x").as_deref(), Some("1"));
    }

    /// Found by the fuzzer: `x[]` after the largest u64 as a key overflowed the next index.
    #[test]
    fn appends_follow_php_integer_keys_without_overflow() {
        let p = parse_form(b"x[18446744073709551615]=a&x[]=b&y[9223372036854775807]=a&y[]=b");
        assert_eq!(
            p.get("x"),
            Some(&json!({"18446744073709551615": "a", "0": "b"}))
        );
        assert_eq!(p.get("y"), Some(&json!({"9223372036854775807": "a"})));
        let p = parse_form(b"z[007]=a&z[]=b&w[-5]=a&w[]=b");
        assert_eq!(p.get("z"), Some(&json!({"007": "a", "0": "b"})));
        assert_eq!(p.get("w"), Some(&json!({"-5": "a", "-4": "b"})));
    }

    #[test]
    fn hostile_nesting_and_volume_are_bounded() {
        // Nested far past PHP's limit: dropped, not a stack overflow.
        let deep = format!("a{}=1&b=2", "[x]".repeat(100_000));
        let p = parse_form(deep.as_bytes());
        assert_eq!(p.get("a"), None);
        assert_eq!(p.str("b").as_deref(), Some("2"));
        let ok = format!("a{}=1", "[x]".repeat(MAX_NESTING));
        assert!(parse_form(ok.as_bytes()).get("a").is_some());
        // Appends past max_input_vars are dropped, and the parse stays fast.
        let many = "x[]=1&".repeat(200_000);
        let started = std::time::Instant::now();
        let p = parse_form(many.as_bytes());
        assert_eq!(
            p.get("x").and_then(Value::as_array).map(Vec::len),
            Some(MAX_INPUT_VARS)
        );
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn ints_and_flags() {
        assert_eq!(strict_int(&json!("12")), Some(12));
        assert_eq!(strict_int(&json!(12)), Some(12));
        assert_eq!(strict_int(&json!("1.5")), None);
        assert_eq!(strict_int(&json!("abc")), None);
        assert!(!flag(Some(&json!("0")), true));
        assert!(flag(Some(&json!("1")), false));
        assert!(flag(None, true));
    }
}
