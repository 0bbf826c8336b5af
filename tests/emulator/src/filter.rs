//! `filter` and `order` arguments: the operator rides in front of the field name (`>=ID`), and
//! each method accepts only its own whitelist of fields. Anything else is refused with a clear
//! argument error rather than silently ignored, so an app tested here never relies on a filter
//! the real portal would drop.

use crate::clock::parse_time;
use crate::error::{ApiError, ApiResult};
use crate::params::{flag, list_values, scalar_text, strict_int};
use serde_json::Value;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id,
    TimestampX,
    EventName,
    MessageId,
    ProcessId,
    Error,
}

/// Fields `event.offline.get` filters and sorts on.
pub const GET_FIELDS: &[Field] = &[
    Field::Id,
    Field::TimestampX,
    Field::EventName,
    Field::MessageId,
];
/// Fields `event.offline.list` filters and sorts on.
pub const LIST_FIELDS: &[Field] = &[
    Field::Id,
    Field::TimestampX,
    Field::EventName,
    Field::MessageId,
    Field::ProcessId,
    Field::Error,
];

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name.to_ascii_uppercase().as_str() {
            "ID" => Field::Id,
            "TIMESTAMP_X" => Field::TimestampX,
            "EVENT_NAME" => Field::EventName,
            "MESSAGE_ID" => Field::MessageId,
            "PROCESS_ID" => Field::ProcessId,
            "ERROR" => Field::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    /// Whether `ordering` (row value compared with the filter value) satisfies the operator.
    pub fn holds(self, ordering: Ordering) -> bool {
        match self {
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
            Op::Gt => ordering == Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
        }
    }
}

/// Splits `>=ID` into (`Ge`, `ID`). Unknown operator characters are left on the name, so they
/// fail the field check and are reported.
pub fn split_op(key: &str) -> (Op, &str) {
    for (prefix, op) in [
        ("!=", Op::Ne),
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("=", Op::Eq),
        ("!", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
    ] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return (op, rest);
        }
    }
    (Op::Eq, key)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    Str(String),
}

#[derive(Debug, Clone)]
pub struct Cond {
    pub field: Field,
    pub op: Op,
    /// One value, or several for `=`/`!` with an array (IN / NOT IN).
    pub values: Vec<Scalar>,
}

fn typed(field: Field, v: &Value, key: &str) -> ApiResult<Scalar> {
    let text = scalar_text(v)
        .ok_or_else(|| ApiError::argument("filter", &format!("{key} needs a scalar value")))?;
    Ok(match field {
        Field::Id => Scalar::Int(
            strict_int(v)
                .ok_or_else(|| ApiError::argument("filter", &format!("{key} needs an integer")))?,
        ),
        Field::TimestampX => Scalar::Int(parse_time(&text).ok_or_else(|| {
            ApiError::argument("filter", &format!("{key} needs an ISO 8601 date-time"))
        })?),
        Field::Error => Scalar::Int(flag(Some(v), false) as i64),
        Field::EventName => Scalar::Str(text.to_ascii_uppercase()),
        Field::MessageId | Field::ProcessId => Scalar::Str(text),
    })
}

/// Parses a `filter` object against `allowed`.
pub fn parse_filter(v: Option<&Value>, allowed: &[Field]) -> ApiResult<Vec<Cond>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let map = match v {
        Value::Object(m) => m,
        Value::Array(a) if a.is_empty() => return Ok(Vec::new()),
        Value::String(s) if s.is_empty() => return Ok(Vec::new()),
        _ => {
            return Err(ApiError::argument(
                "filter",
                "must be an object of field conditions",
            ))
        }
    };
    let mut conds = Vec::with_capacity(map.len());
    for (key, value) in map {
        let (op, name) = split_op(key.trim());
        let field = Field::parse(name)
            .filter(|f| allowed.contains(f))
            .ok_or_else(|| {
                ApiError::argument(
                    "filter",
                    &format!("field '{key}' is not supported by this method"),
                )
            })?;
        let values = match value {
            Value::Array(_) | Value::Object(_) => {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(ApiError::argument(
                        "filter",
                        &format!("{key} takes a single value"),
                    ));
                }
                let items = list_values(value).unwrap_or_default();
                items
                    .into_iter()
                    .map(|i| typed(field, i, key))
                    .collect::<ApiResult<Vec<_>>>()?
            }
            single => vec![typed(field, single, key)?],
        };
        conds.push(Cond { field, op, values });
    }
    Ok(conds)
}

/// Parses an `order` object (`{FIELD: "ASC"|"DESC"}`) against `allowed`; `None` when absent.
pub fn parse_order(v: Option<&Value>, allowed: &[Field]) -> ApiResult<Option<Vec<(Field, bool)>>> {
    let Some(v) = v else { return Ok(None) };
    let map = match v {
        Value::Object(m) if !m.is_empty() => m,
        Value::Object(_) => return Ok(None),
        Value::Array(a) if a.is_empty() => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        _ => {
            return Err(ApiError::argument(
                "order",
                "must be an object {FIELD: ASC|DESC}",
            ))
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, dir) in map {
        let field = Field::parse(key.trim())
            .filter(|f| allowed.contains(f))
            .ok_or_else(|| {
                ApiError::argument(
                    "order",
                    &format!("field '{key}' is not supported by this method"),
                )
            })?;
        let desc = match scalar_text(dir).map(|d| d.to_ascii_uppercase()).as_deref() {
            Some("ASC") => false,
            Some("DESC") => true,
            _ => {
                return Err(ApiError::argument(
                    "order",
                    &format!("direction of '{key}' must be ASC or DESC"),
                ))
            }
        };
        out.push((field, desc));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operators_and_whitelist() {
        let f = parse_filter(
            Some(&json!({">=ID": "5", "!EVENT_NAME": "onx", "=ID": [1, "2"]})),
            GET_FIELDS,
        )
        .unwrap();
        assert_eq!(f[0].op, Op::Ge);
        assert_eq!(f[0].values, vec![Scalar::Int(5)]);
        assert_eq!(f[1].op, Op::Ne);
        assert_eq!(f[1].values, vec![Scalar::Str("ONX".into())]);
        assert_eq!(f[2].values.len(), 2);
        assert!(parse_filter(Some(&json!({"PROCESS_ID": "x"})), GET_FIELDS).is_err());
        assert!(parse_filter(Some(&json!({"%EVENT_NAME": "x"})), GET_FIELDS).is_err());
        assert!(parse_filter(Some(&json!({"ID": "abc"})), GET_FIELDS).is_err());
        assert!(parse_filter(Some(&json!({"ERROR": 1})), LIST_FIELDS).is_ok());
        assert!(parse_order(Some(&json!({"ID": "UP"})), GET_FIELDS).is_err());
        assert_eq!(
            parse_order(Some(&json!({"id": "desc"})), GET_FIELDS).unwrap(),
            Some(vec![(Field::Id, true)])
        );
    }
}
