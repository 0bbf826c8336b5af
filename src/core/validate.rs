//! Client-side checks that mirror the portal's, so a bad argument fails before any request is
//! sent, as `INVALID_ARGUMENT` naming the parameter.

use super::args::{Arg, Tree};
use super::error::{B24Error, Result};
use super::text::trim;
use crate::core::text::concat;

/// Fields `event.offline.get` filters and sorts on.
pub const GET_FIELDS: &[&str] = &["ID", "TIMESTAMP_X", "EVENT_NAME", "MESSAGE_ID"];
/// Fields `event.offline.list` filters and sorts on.
pub const LIST_FIELDS: &[&str] = &[
    "ID",
    "TIMESTAMP_X",
    "EVENT_NAME",
    "MESSAGE_ID",
    "PROCESS_ID",
    "ERROR",
];

/// Splits `>=ID` into (`>=`, `ID`).
fn split_op(key: &str) -> (&str, &str) {
    for op in ["!=", ">=", "<=", "=", "!", ">", "<"] {
        if let Some(rest) = key.strip_prefix(op) {
            return (op, rest);
        }
    }
    ("", key)
}

fn fields_list(fields: &[&str]) -> String {
    super::text::join(fields, ", ")
}

/// `2024-07-18`, `2024-07-18T12:32:31`, with an optional `Z` or `±HH:MM` offset.
pub fn is_iso_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r)
            .map(|x| x.iter().all(u8::is_ascii_digit))
            .unwrap_or(false)
    };
    if b.len() < 10
        || !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10))
    {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    if !(b.len() >= 19
        && (b[10] == b'T' || b[10] == b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest {
        [] | [b'Z'] => true,
        [s, h1, h2, b':', m1, m2] => {
            (*s == b'+' || *s == b'-') && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

fn filter_value<D>(field: &str, key: &str, v: &Tree) -> Result<Arg<D>> {
    let bad = |why: &str| B24Error::invalid("filter", &concat(&[key, ": ", why]));
    match field {
        "ID" => v
            .as_int()
            .filter(|n| *n >= 0)
            .map(Arg::Int)
            .ok_or_else(|| bad("must be a non-negative integer")),
        "TIMESTAMP_X" => match v {
            Tree::Str(s) if is_iso_datetime(s) => Ok(Arg::Str(s.clone())),
            _ => Err(bad(
                "must be an ISO 8601 date-time such as 2024-07-18T12:32:31+02:00",
            )),
        },
        "ERROR" => match v {
            Tree::Bool(b) => Ok(Arg::Int(*b as i64)),
            _ => match v.as_int() {
                Some(n @ (0 | 1)) => Ok(Arg::Int(n)),
                _ => Err(bad("must be 0, 1 or a boolean")),
            },
        },
        "EVENT_NAME" => match v {
            Tree::Str(s) if !s.is_empty() => Ok(Arg::Str(s.to_ascii_uppercase())),
            _ => Err(bad("must be a non-empty event name")),
        },
        _ => match v {
            Tree::Str(s) => Ok(Arg::Str(s.clone())),
            _ => Err(bad("must be a string")),
        },
    }
}

/// Checks a `filter` object against the fields `method` accepts; returns it ready to send.
pub fn filter<D>(t: Option<&Tree>, fields: &[&str], method: &str) -> Result<Option<Arg<D>>> {
    let entries = match t {
        None | Some(Tree::Null) => return Ok(None),
        Some(Tree::Map(m)) => m,
        Some(_) => {
            return Err(B24Error::invalid(
                "filter",
                "must be an object such as { '>ID': 10 }",
            ))
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let (op, name) = split_op(trim(key));
        let field = name.to_ascii_uppercase();
        if !fields.contains(&field.as_str()) {
            let why = concat(&[
                "field '",
                key,
                "' is not accepted by ",
                method,
                " (operators =, !, !=, >, >=, <, <= before one of: ",
                &fields_list(fields),
                ")",
            ]);
            return Err(B24Error::invalid("filter", &why));
        }
        let sent = match value {
            Tree::List(items) => {
                if !matches!(op, "" | "=" | "!" | "!=") {
                    return Err(B24Error::invalid(
                        "filter",
                        &concat(&[key.as_str(), ": a list of values needs =, ! or no operator"]),
                    ));
                }
                Arg::List(
                    items
                        .iter()
                        .map(|i| filter_value(&field, key, i))
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            single => filter_value(&field, key, single)?,
        };
        out.push((concat(&[op, field.as_str()]), sent));
    }
    Ok(Some(Arg::Map(out)))
}

/// Checks an `order` object (`{ FIELD: 'ASC' | 'DESC' }`, key order kept).
pub fn order<D>(t: Option<&Tree>, fields: &[&str], method: &str) -> Result<Option<Arg<D>>> {
    let entries = match t {
        None | Some(Tree::Null) => return Ok(None),
        Some(Tree::Map(m)) => m,
        Some(_) => {
            return Err(B24Error::invalid(
                "order",
                "must be an object such as { ID: 'ASC' }",
            ))
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (key, dir) in entries {
        let field = trim(key).to_ascii_uppercase();
        if !fields.contains(&field.as_str()) {
            let why = concat(&[
                "field '",
                key,
                "' is not accepted by ",
                method,
                " (one of: ",
                &fields_list(fields),
                ")",
            ]);
            return Err(B24Error::invalid("order", &why));
        }
        let dir = match dir.as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("ASC") => "ASC",
            Some("DESC") => "DESC",
            _ => {
                return Err(B24Error::invalid(
                    "order",
                    &concat(&[key.as_str(), " must be 'ASC' or 'DESC'"]),
                ))
            }
        };
        out.push((field, Arg::Str(dir.to_string())));
    }
    Ok(Some(Arg::Map(out)))
}

/// A positive integer (`limit`).
pub fn positive(name: &str, v: f64) -> Result<i64> {
    if v.fract() == 0.0 && (1.0..9.0e15).contains(&v) {
        Ok(v as i64)
    } else {
        Err(B24Error::invalid(name, "must be a positive integer"))
    }
}

/// A non-negative integer (`start`, `minTimeout`).
pub fn non_negative(name: &str, v: f64) -> Result<i64> {
    if v.fract() == 0.0 && (0.0..9.0e15).contains(&v) {
        Ok(v as i64)
    } else {
        Err(B24Error::invalid(name, "must be a non-negative integer"))
    }
}

/// Message ids are the portal's 32-character keys.
pub fn message_ids(name: &str, ids: &[String]) -> Result<()> {
    if ids.iter().all(|m| m.len() == 32 && m.is_ascii()) {
        Ok(())
    } else {
        Err(B24Error::invalid(
            name,
            "every message id must be a 32-character string",
        ))
    }
}

/// Record ids are positive integers.
pub fn record_ids(name: &str, ids: &[f64]) -> Result<Vec<i64>> {
    ids.iter()
        .map(|n| {
            positive(name, *n)
                .map_err(|_| B24Error::invalid(name, "every id must be a positive integer"))
        })
        .collect()
}

/// Checks an id of 1 to `max` printable ASCII characters without spaces.
fn printable(name: &str, id: &str, max: usize, why: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= max && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(B24Error::invalid(name, why))
    }
}

pub fn process_id(id: &str) -> Result<()> {
    printable(
        "processId",
        id,
        255,
        "must be the non-empty process id a reservation returned",
    )
}

/// Event names: letters, digits and `_`, sent upper case.
pub fn event_name(name: &str) -> Result<String> {
    if !name.is_empty()
        && name.len() <= 100
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(name.to_ascii_uppercase())
    } else {
        Err(B24Error::invalid(
            "event",
            "must be an event name such as ONCRMDEALUPDATE",
        ))
    }
}

/// REST method names: they become part of the URL path, so nothing but `[a-z0-9._]`.
pub fn method_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        && !name.starts_with('.')
        && !super::read::has(name, "..");
    if ok {
        Ok(())
    } else {
        Err(B24Error::invalid(
            "method",
            "must be a REST method name such as crm.deal.get",
        ))
    }
}

/// A consumer's id in journal entries: short, printable, no spaces.
pub fn consumer_id(id: &str) -> Result<()> {
    printable(
        "consumerId",
        id,
        128,
        "must be 1 to 128 printable ASCII characters without spaces",
    )
}

pub fn connector(id: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= 255 && !id.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(B24Error::invalid(
            "connector",
            "must be a non-empty string of at most 255 characters",
        ))
    }
}

/// An onOfflineEvent handler must be an absolute http(s) URL.
pub fn handler_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r)
            if !r.is_empty()
                && !r.starts_with('/')
                && !url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(())
        }
        _ => Err(B24Error::invalid(
            "handler",
            "must be an absolute http(s) URL",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::tree;
    use serde_json::Value;

    #[test]
    fn filters_follow_the_whitelist() {
        let f = filter::<Value>(
            Some(&tree(
                r#"{">ID": "10", "event_name": "onx", "=ID": [1, 2]}"#,
            )),
            GET_FIELDS,
            "event.offline.get",
        )
        .unwrap()
        .unwrap();
        let Arg::Map(m) = f else { panic!() };
        assert_eq!(m[0], (">ID".to_string(), Arg::Int(10)));
        assert_eq!(m[1], ("EVENT_NAME".to_string(), Arg::Str("ONX".into())));
        assert_eq!(m[2].1, Arg::List(vec![Arg::Int(1), Arg::Int(2)]));
        let e = filter::<Value>(
            Some(&tree(r#"{"PROCESS_ID": "x"}"#)),
            GET_FIELDS,
            "event.offline.get",
        )
        .unwrap_err();
        assert_eq!(e.code, "INVALID_ARGUMENT");
        assert!(e.description.starts_with("filter: field 'PROCESS_ID'"));
        assert!(filter::<Value>(
            Some(&tree(r#"{"PROCESS_ID": "x", "ERROR": true}"#)),
            LIST_FIELDS,
            "event.offline.list"
        )
        .is_ok());
        assert!(filter::<Value>(Some(&tree(r#"{"%EVENT_NAME": "x"}"#)), LIST_FIELDS, "l").is_err());
        assert!(filter::<Value>(Some(&tree(r#"{"ID": "abc"}"#)), LIST_FIELDS, "l").is_err());
        assert!(filter::<Value>(Some(&tree(r#"{">ID": [1]}"#)), LIST_FIELDS, "l").is_err());
        assert!(filter::<Value>(Some(&tree(r#"{"ERROR": 2}"#)), LIST_FIELDS, "l").is_err());
        assert!(filter::<Value>(
            Some(&tree(r#"{">=TIMESTAMP_X": "yesterday"}"#)),
            LIST_FIELDS,
            "l"
        )
        .is_err());
        assert!(filter::<Value>(
            Some(&tree(r#"{">=TIMESTAMP_X": "2024-07-18T12:32:31+02:00"}"#)),
            LIST_FIELDS,
            "l"
        )
        .is_ok());
        assert!(filter::<Value>(Some(&tree(r#"[1]"#)), LIST_FIELDS, "l").is_err());
    }

    #[test]
    fn orders_and_scalars() {
        let o = order::<Value>(
            Some(&tree(r#"{"id": "desc", "TIMESTAMP_X": "ASC"}"#)),
            GET_FIELDS,
            "g",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            o,
            Arg::Map(vec![
                ("ID".into(), Arg::Str("DESC".into())),
                ("TIMESTAMP_X".into(), Arg::Str("ASC".into()))
            ])
        );
        assert!(order::<Value>(Some(&tree(r#"{"ID": "UP"}"#)), GET_FIELDS, "g").is_err());
        assert!(order::<Value>(Some(&tree(r#"{"ERROR": "ASC"}"#)), GET_FIELDS, "g").is_err());
        assert_eq!(positive("limit", 50.0).unwrap(), 50);
        assert!(
            positive("limit", 0.0).is_err()
                && positive("limit", 1.5).is_err()
                && positive("limit", -3.0).is_err()
        );
        assert!(message_ids("messageIds", &["a".repeat(32)]).is_ok());
        assert!(message_ids("messageIds", &["short".into()]).is_err());
        assert!(record_ids("ids", &[1.0, 2.0]).is_ok() && record_ids("ids", &[0.0]).is_err());
        assert_eq!(event_name("onCrmDealAdd").unwrap(), "ONCRMDEALADD");
        assert!(event_name("ON CRM").is_err());
        assert!(method_name("crm.deal.get").is_ok());
        for bad in [
            "",
            "../x",
            "crm/deal",
            "a?b=1",
            ".x",
            "a..b",
            "crm.deal.get#",
        ] {
            assert!(method_name(bad).is_err(), "{bad}");
        }
        assert!(handler_url("https://app.example/hook").is_ok());
        assert!(handler_url("ftp://x").is_err() && handler_url("https:///x").is_err());
    }

    #[test]
    fn iso_dates() {
        for ok in [
            "2024-07-18",
            "2024-07-18T12:32:31",
            "2024-07-18T12:32:31Z",
            "2024-07-18T12:32:31+02:00",
            "2024-07-18 12:32:31.123-05:00",
        ] {
            assert!(is_iso_datetime(ok), "{ok}");
        }
        for bad in [
            "2024-7-18",
            "2024-07-18T12:32",
            "2024-07-18T12:32:31+0200",
            "now",
            "2024-07-18T12:32:31.",
        ] {
            assert!(!is_iso_datetime(bad), "{bad}");
        }
    }
}
