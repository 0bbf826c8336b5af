//! Splitting text at an ASCII separator, trimming whitespace and joining, written by hand:
//! `str::split(char)`, `split_once`, `rsplit_once` and `contains(char)` bring core's char
//! searcher, `memchr` and their iterators into the wasm (about 2 KB raw) for a handful of short
//! strings. An ASCII byte never
//! occurs inside a multi-byte UTF-8 sequence, so splitting at the byte is splitting at the char:
//! these give exactly what the std methods give for `sep as char`. `trim` likewise replaces
//! std's char predicate searcher (1 KB raw) for the same whitespace.

/// The pieces of `s` between occurrences of `sep` (ASCII), like `s.split(sep as char)`.
pub fn split(s: &str, sep: u8) -> Split<'_> {
    Split { rest: Some(s), sep }
}

pub struct Split<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match split_once(rest, self.sep) {
            Some((piece, tail)) => {
                self.rest = Some(tail);
                Some(piece)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// `s` before and after the first `sep` (ASCII), like `s.split_once(sep as char)`.
pub fn split_once(s: &str, sep: u8) -> Option<(&str, &str)> {
    around(s, s.bytes().position(|b| b == sep)?)
}

/// `s` before and after the last `sep` (ASCII), like `s.rsplit_once(sep as char)`.
pub fn rsplit_once(s: &str, sep: u8) -> Option<(&str, &str)> {
    around(s, s.bytes().rposition(|b| b == sep)?)
}

/// Whether `s` has the byte `sep` (ASCII), like `s.contains(sep as char)`.
pub fn contains(s: &str, sep: u8) -> bool {
    s.bytes().any(|b| b == sep)
}

/// `s` without leading and trailing whitespace, like `s.trim()`: the same chars
/// (`char::is_whitespace`), looked at one at a time instead of through std's char predicate
/// searcher.
pub fn trim(s: &str) -> &str {
    trim_end(trim_start(s))
}

/// `s` without leading whitespace, like `s.trim_start()`.
pub fn trim_start(s: &str) -> &str {
    let mut chars = s.chars();
    loop {
        let rest = chars.as_str();
        if !chars.next().is_some_and(char::is_whitespace) {
            return rest;
        }
    }
}

/// `s` without trailing whitespace, like `s.trim_end()`.
pub fn trim_end(s: &str) -> &str {
    let mut chars = s.chars();
    loop {
        let rest = chars.as_str();
        if !chars.next_back().is_some_and(char::is_whitespace) {
            return rest;
        }
    }
}

/// The parts one after another, as `parts.concat()` gives them, without std's generic join
/// (1 KB in the wasm) for the library's messages and names.
pub fn concat(parts: &[&str]) -> String {
    join(parts, "")
}

/// The parts with `sep` between them, as `parts.join(sep)` gives them.
pub fn join(parts: &[&str], sep: &str) -> String {
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(p);
    }
    out
}

/// `s` before and after the ASCII byte at `at` (no panic path: `at` is a char boundary).
fn around(s: &str, at: usize) -> Option<(&str, &str)> {
    let (before, after) = s.split_at_checked(at)?;
    Some((before, after.get(1..)?))
}

#[cfg(test)]
mod tests {
    use super::{
        concat, contains, join, rsplit_once, split, split_once, trim, trim_end, trim_start,
    };

    #[test]
    fn joins_as_std() {
        for parts in [&[][..], &[""], &["a"], &["a", ""], &["", "b", "", "日本"]] {
            assert_eq!(concat(parts), parts.concat());
            assert_eq!(join(parts, ", "), parts.join(", "));
        }
    }

    const CASES: [&str; 12] = [
        "",
        ":",
        "::",
        "a",
        "a:b",
        ":a:",
        "a::b:c",
        "é:ü",
        "ü",
        "日本:語:",
        "x:y:z:",
        "no separator here",
    ];

    #[test]
    fn as_the_std_methods() {
        for s in CASES {
            assert_eq!(
                split(s, b':').collect::<Vec<_>>(),
                s.split(':').collect::<Vec<_>>(),
                "{s:?}"
            );
            assert_eq!(split_once(s, b':'), s.split_once(':'), "{s:?}");
            assert_eq!(rsplit_once(s, b':'), s.rsplit_once(':'), "{s:?}");
            assert_eq!(contains(s, b':'), s.contains(':'), "{s:?}");
        }
    }

    #[test]
    fn trims_as_std_for_every_char() {
        let mut s = String::new();
        // Every char up to U+3100 (all the whitespace is below), a sample above.
        for c in (0..0x3100)
            .chain((0x3100..=0x10FFFF).step_by(97))
            .filter_map(char::from_u32)
        {
            for text in [
                [c, c, 'x', c, c],
                ['x', c, 'x', c, ' '],
                [' ', c, c, c, '\u{3000}'],
            ] {
                s.clear();
                s.extend(text);
                assert_eq!(trim(&s), s.trim(), "{s:?}");
                assert_eq!(trim_start(&s), s.trim_start(), "{s:?}");
                assert_eq!(trim_end(&s), s.trim_end(), "{s:?}");
            }
        }
        for s in ["", " ", "\u{a0}", "\u{85}x\u{2000}", "\u{205f}\t\u{3000}"] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }
}
