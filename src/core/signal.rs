//! The receiving end of onOfflineEvent: an app server gets a small POST from the portal when its
//! queue grows, and should wake its consumer instead of polling. The POST is only believed when
//! it carries the application token the app received at install time, compared in constant time.

use super::args::Tree;
use super::error::{code, B24Error, Result};
use super::text::{split, split_once};
use crate::core::text::concat;

/// What a verified signal tells: the portal, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub event: String,
    pub ts: Option<u64>,
    pub domain: Option<String>,
    pub member_id: Option<String>,
}

fn invalid(why: &str) -> B24Error {
    B24Error::new(code::INVALID_SIGNAL, why)
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    // Bytes that are not UTF-8 once decoded stay as they came, still encoded (no lossy
    // decoder in the wasm for a case that only garbage reaches).
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// `a=1&auth[application_token]=x` as (key, value) pairs, keys kept flat.
pub fn parse_form(body: &str) -> Vec<(String, String)> {
    split(body, b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = split_once(p, b'=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

/// A field of the payload, found flat (`auth[application_token]`, form bodies and frameworks
/// that do not nest) or nested (`{auth: {application_token}}`, JSON bodies and nesting parsers).
pub(crate) fn value<'a>(payload: &'a Tree, outer: &str, inner: Option<&str>) -> Option<&'a Tree> {
    match inner {
        None => payload.get(outer),
        Some(inner) => payload
            .get(outer)
            .and_then(|o| o.get(inner))
            .or_else(|| payload.get(&concat(&[outer, "[", inner, "]"]))),
    }
}

/// [`value`] when it is text.
pub(crate) fn field<'a>(payload: &'a Tree, outer: &str, inner: Option<&str>) -> Option<&'a str> {
    value(payload, outer, inner).and_then(Tree::as_str)
}

/// A body as the receiver got it: form text, JSON already parsed, or form pairs.
pub fn form_tree(body: &str) -> Tree {
    Tree::Map(
        parse_form(body)
            .into_iter()
            .map(|(k, v)| (k, Tree::Str(v)))
            .collect(),
    )
}

/// Accepts the payload only if it is an `ONOFFLINEEVENT` carrying `application_token`.
pub fn verify(payload: &Tree, application_token: &str) -> Result<Signal> {
    if application_token.is_empty() {
        return Err(B24Error::invalid(
            "applicationToken",
            "the application token from install time is required",
        ));
    }
    let event = field(payload, "event", None).ok_or_else(|| invalid("no event in the request"))?;
    if !event.eq_ignore_ascii_case("ONOFFLINEEVENT") {
        return Err(invalid("not an ONOFFLINEEVENT request"));
    }
    let given = field(payload, "auth", Some("application_token"))
        .ok_or_else(|| invalid("no auth[application_token] in the request"))?;
    if !constant_time_eq(given.as_bytes(), application_token.as_bytes()) {
        return Err(invalid(
            "auth[application_token] does not match this application's token",
        ));
    }
    let ts = payload
        .get("ts")
        .and_then(Tree::as_int)
        .and_then(|n| u64::try_from(n).ok());
    Ok(Signal {
        event: event.to_ascii_uppercase(),
        ts,
        domain: field(payload, "auth", Some("domain")).map(str::to_string),
        member_id: field(payload, "auth", Some("member_id")).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_form_and_json_payloads() {
        let body = "event=ONOFFLINEEVENT&ts=1466439714&auth%5Bdomain%5D=acme.bitrix24.com&auth%5Bapplication_token%5D=51856fefc120afa4b628cc82d3935cce";
        let s = verify(&form_tree(body), "51856fefc120afa4b628cc82d3935cce").unwrap();
        assert_eq!(s.ts, Some(1466439714));
        assert_eq!(s.domain.as_deref(), Some("acme.bitrix24.com"));
        let json = crate::core::testkit::tree(
            r#"{"event":"onofflineevent","data":[],"auth":{"application_token":"tok"}}"#,
        );
        assert_eq!(verify(&json, "tok").unwrap().event, "ONOFFLINEEVENT");
        assert_eq!(
            verify(&json, "tok2").unwrap_err().code,
            code::INVALID_SIGNAL
        );
        assert!(verify(
            &form_tree("event=ONCRMDEALADD&auth[application_token]=tok"),
            "tok"
        )
        .is_err());
        assert!(verify(&form_tree("event=ONOFFLINEEVENT"), "tok").is_err());
        assert!(verify(&json, "").is_err());
        let e = verify(&json, "secret-token").unwrap_err();
        assert!(!e.message().contains("secret-token") && !e.message().contains("\"tok\""));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
        assert_eq!(url_decode("a%20b+c%zz%"), "a b c%zz%");
        // Not UTF-8 once decoded: kept as it came.
        assert_eq!(url_decode("x%ff%fe"), "x%ff%fe");
        assert_eq!(url_decode("%C3%A9"), "é");
    }
}
