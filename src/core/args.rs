//! Request arguments and the plain value tree used to read what the app hands us.
//!
//! The core never owns the JSON engine: bodies are described as [`Arg`] trees and encoded by the
//! platform (the browser's `JSON.stringify` in wasm), and app-supplied values are read either
//! as opaque `D` (passed through untouched) or as a [`Tree`] when the core must look inside
//! (filters to validate, batch parameters to turn into query strings).

use super::digits::{decimal, signed};
use crate::core::text::concat;

/// One argument of a request body. `Data` is a value the app gave us, passed through as is.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg<D> {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Arg<D>>),
    Map(Vec<(String, Arg<D>)>),
    Data(D),
}

/// A request body: the app's own parameter object (if any) with our arguments set over it. (The
/// client's `auth_connector` is filled in when it is encoded, where neither has the key.)
#[derive(Debug, Clone, PartialEq)]
pub struct Body<D> {
    pub base: Option<D>,
    pub args: Vec<(String, Arg<D>)>,
}

impl<D> Body<D> {
    pub fn new() -> Body<D> {
        Body {
            base: None,
            args: Vec::new(),
        }
    }

    pub fn of(base: Option<D>) -> Body<D> {
        Body {
            base,
            args: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: Arg<D>) -> &mut Body<D> {
        self.args.retain(|(k, _)| k != key);
        self.args.push((key.to_string(), value));
        self
    }

    pub fn with(mut self, key: &str, value: Arg<D>) -> Body<D> {
        self.set(key, value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&Arg<D>> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<D> Arg<D> {
    /// The argument as a plain tree (for a `batch` command's query string); app data, which a
    /// command never carries, is left out as null.
    pub fn to_tree(&self) -> Tree {
        match self {
            Arg::Str(s) => Tree::Str(s.clone()),
            Arg::Int(i) => Tree::Num(*i as f64),
            Arg::Bool(b) => Tree::Bool(*b),
            Arg::List(l) => Tree::List(l.iter().map(Arg::to_tree).collect()),
            Arg::Map(m) => Tree::Map(m.iter().map(|(k, v)| (k.clone(), v.to_tree())).collect()),
            Arg::Data(_) => Tree::Null,
        }
    }
}

impl<D> Default for Body<D> {
    fn default() -> Body<D> {
        Body::new()
    }
}

/// A JSON-like value read from the app's input, key order preserved.
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    List(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

impl Tree {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Tree> {
        match self {
            Tree::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// An integer given as a number or as decimal text.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Tree::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(*n as i64),
            Tree::Str(s)
                if !s.is_empty()
                    && s.len() < 19
                    && s.bytes().enumerate().all(|(i, b)| {
                        b.is_ascii_digit() || (i == 0 && b == b'-' && s.len() > 1)
                    }) =>
            {
                // Digits with an optional '-', fewer than 19: within i64.
                match s.strip_prefix('-') {
                    Some(d) => super::digits::parse(d).map(|n| -(n as i64)),
                    None => super::digits::parse(s).map(|n| n as i64),
                }
            }
            _ => None,
        }
    }

    /// Turns the tree into an argument (numbers become integers when they are integral).
    pub fn to_arg<D>(&self) -> Arg<D> {
        match self {
            Tree::Null => Arg::Str(String::new()),
            Tree::Bool(b) => Arg::Bool(*b),
            Tree::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Arg::Int(*n as i64),
            Tree::Num(n) => Arg::Str(num_text(*n)),
            Tree::Str(s) => Arg::Str(s.clone()),
            Tree::List(l) => Arg::List(l.iter().map(Tree::to_arg).collect()),
            Tree::Map(m) => Arg::Map(m.iter().map(|(k, v)| (k.clone(), v.to_arg())).collect()),
        }
    }
}

/// Integers print exactly. Other numbers reach the core as text (see `read::tree`); one built
/// by hand is printed with up to 9 decimals here, without pulling float formatting into wasm.
fn num_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        return signed(n as i64);
    }
    if !n.is_finite() {
        return "0".to_string();
    }
    let scaled = (n.abs() * 1e9).round() as u64;
    let (int, mut frac) = (scaled / 1_000_000_000, scaled % 1_000_000_000);
    let mut digits = 9;
    while frac % 10 == 0 && digits > 0 {
        frac /= 10;
        digits -= 1;
    }
    let mut out = String::new();
    if n < 0.0 {
        out.push('-');
    }
    out.push_str(&decimal(int));
    if digits > 0 {
        out.push('.');
        let f = decimal(frac);
        out.extend(std::iter::repeat_n('0', digits - f.len()));
        out.push_str(&f);
    }
    out
}

/// Percent-encodes for a query string (RFC 3986 unreserved characters stay as they are).
pub fn url_encode(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// PHP's `http_build_query`: nested keys as `a[b][0]=x`, `true`/`false` as 1/0, nulls left out.
pub fn build_query(tree: &Tree) -> String {
    let mut out = String::new();
    if let Tree::Map(entries) = tree {
        for (k, v) in entries {
            let mut key = String::new();
            url_encode(&mut key, k);
            push_pair(&mut out, &key, v);
        }
    }
    out
}

fn push_pair(out: &mut String, key: &str, v: &Tree) {
    let scalar = |out: &mut String, text: &str| {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        url_encode(out, text);
    };
    match v {
        Tree::Null => {}
        Tree::Bool(b) => scalar(out, if *b { "1" } else { "0" }),
        Tree::Num(n) => scalar(out, &num_text(*n)),
        Tree::Str(s) => scalar(out, s),
        Tree::List(items) => {
            for (i, item) in items.iter().enumerate() {
                let sub = concat(&[key, "%5B", &decimal(i as u64), "%5D"]);
                push_pair(out, &sub, item);
            }
        }
        Tree::Map(entries) => {
            for (k, item) in entries {
                let mut sub = String::with_capacity(key.len() + k.len() + 6);
                sub.push_str(key);
                sub.push_str("%5B");
                url_encode(&mut sub, k);
                sub.push_str("%5D");
                push_pair(out, &sub, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::testkit::tree;

    #[test]
    fn query_strings_match_php() {
        let t = tree(
            r#"{"id": 5, "filter": {">ID": 10, "=NAME": "a b"}, "select": ["ID", "TITLE"], "x": null, "on": true}"#,
        );
        assert_eq!(build_query(&t), "id=5&filter%5B%3EID%5D=10&filter%5B%3DNAME%5D=a%20b&select%5B0%5D=ID&select%5B1%5D=TITLE&on=1");
    }

    #[test]
    fn tree_keeps_key_order_and_reads_ints() {
        let t = tree(r#"{"b": "12", "a": 1.5, "c": -3}"#);
        let Tree::Map(m) = &t else { panic!("map") };
        assert_eq!(m[0].0, "b");
        assert_eq!(t.get("b").unwrap().as_int(), Some(12));
        assert_eq!(t.get("a").unwrap().as_int(), None);
        assert_eq!(t.get("c").unwrap().as_int(), Some(-3));
        assert_eq!(Tree::Str("1e3".into()).as_int(), None);
        for s in [
            "-7",
            "-0",
            "0",
            "-",
            "--1",
            "+1",
            "123456789012345678",
            "-12345678901234567",
        ] {
            assert_eq!(
                Tree::Str(s.into()).as_int(),
                s.parse::<i64>().ok().filter(|_| s != "+1"),
                "{s}"
            );
        }
        assert_eq!(
            tree(r#"{"x": 0.25}"#).get("x"),
            Some(&Tree::Str("0.25".into()))
        );
        assert_eq!(num_text(-2.5), "-2.5");
        assert_eq!(num_text(0.1), "0.1");
        assert_eq!(num_text(3.000001), "3.000001");
    }
}
