//! Reading the portal's JSON through the platform's accessors, leniently where the portal is
//! loose (`"2"` or `2`, `"0"`/`"1"`/`"Y"`/`"N"` or booleans). Hand-written rather than derived:
//! in the wasm build this is a handful of `Reflect.get`s instead of a serde deserializer per type.

use super::args::Tree;
use super::digits::decimal;
use super::platform::Platform;

/// Whether `needle` occurs in `text`: a plain scan, where std's two-way substring search
/// would cost kilobytes in the wasm for a handful of short, rare searches.
pub fn has(text: &str, needle: &str) -> bool {
    text.as_bytes()
        .windows(needle.len().max(1))
        .any(|w| w == needle.as_bytes())
}

/// A non-negative integer sent as a number or as decimal text.
pub fn uint<P: Platform>(v: &P::Data) -> Option<u64> {
    if let Some(n) = P::number(v) {
        return (n >= 0.0 && n.fract() == 0.0 && n < 9.0e15).then_some(n as u64);
    }
    let t = P::text(v)?;
    let t = super::text::trim(&t);
    if t.is_empty() || t.len() > 15 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    super::digits::parse(t)
}

/// A flag: `0`/`1`, `"0"`/`"1"`, `"Y"`/`"N"`, booleans; anything else is false.
pub fn flag<P: Platform>(v: &P::Data) -> bool {
    if let Some(b) = P::boolean(v) {
        return b;
    }
    if let Some(n) = P::number(v) {
        return n != 0.0;
    }
    match P::text(v) {
        Some(s) => {
            !(s.is_empty()
                || s == "0"
                || s.eq_ignore_ascii_case("n")
                || s.eq_ignore_ascii_case("false"))
        }
        None => false,
    }
}

pub fn field_text<P: Platform>(v: &P::Data, key: &str) -> Option<String> {
    P::field(v, key).and_then(|f| P::text(&f))
}

pub fn field_uint<P: Platform>(v: &P::Data, key: &str) -> Option<u64> {
    P::field(v, key).and_then(|f| uint::<P>(&f))
}

pub fn field_number<P: Platform>(v: &P::Data, key: &str) -> Option<f64> {
    P::field(v, key).and_then(|f| P::number(&f))
}

/// Any JSON value as a [`Tree`] (for values the core must look into). Numbers that are not
/// integers become their JSON text, so the core never formats a float.
pub fn tree<P: Platform>(v: &P::Data) -> Tree {
    if let Some(s) = P::text(v) {
        Tree::Str(s)
    } else if let Some(n) = P::number(v) {
        if n.fract() == 0.0 && n.abs() < 9.0e15 {
            Tree::Num(n)
        } else {
            Tree::Str(P::number_text(n))
        }
    } else if let Some(b) = P::boolean(v) {
        Tree::Bool(b)
    } else if let Some(items) = P::items(v) {
        Tree::List(items.iter().map(tree::<P>).collect())
    } else if let Some(entries) = P::entries(v) {
        Tree::Map(
            entries
                .into_iter()
                .map(|(k, x)| (k, tree::<P>(&x)))
                .collect(),
        )
    } else {
        Tree::Null
    }
}

/// The values of a `result_*` map of `batch`: an object keyed by name, a list, or `[]`.
pub fn keyed<P: Platform>(v: Option<P::Data>) -> Vec<(String, P::Data)> {
    let Some(v) = v else { return Vec::new() };
    if let Some(items) = P::items(&v) {
        return items
            .into_iter()
            .enumerate()
            .map(|(i, x)| (decimal(i as u64), x))
            .collect();
    }
    P::entries(&v).unwrap_or_default()
}
