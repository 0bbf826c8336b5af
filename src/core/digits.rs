//! Integers as decimal text, written by hand: `to_string()` on an integer links `core::fmt`'s
//! integer formatting into the wasm, and the library prints integers in a dozen places
//! (counts in messages, journal lines, batch command names). Read back by hand too: `parse`
//! is smaller than std's generic integer parsing.

/// `n` in decimal.
pub fn decimal(n: u64) -> String {
    write(false, n)
}

/// `n` in decimal, with a `-` when negative.
pub fn signed(n: i64) -> String {
    write(n < 0, n.unsigned_abs())
}

/// `s` as a decimal `u64`, exactly as `s.parse::<u64>().ok()`: an optional `+`, then at least
/// one ASCII digit and nothing else; `None` beyond `u64::MAX`.
pub fn parse(s: &str) -> Option<u64> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    let mut n = 0u64;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

fn write(negative: bool, mut n: u64) -> String {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut out = String::with_capacity(buf.len() - i + 1);
    if negative {
        out.push('-');
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{decimal, parse, signed};

    #[test]
    fn parses_as_std_does() {
        for s in [
            "",
            "+",
            "-",
            "0",
            "+0",
            "-0",
            "007",
            "42",
            "+42",
            "++1",
            "+-1",
            " 1",
            "1 ",
            "1_000",
            "12a",
            "\u{663}",
            "1.5",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "+18446744073709551615",
            "000000000000000000000000001",
        ] {
            assert_eq!(parse(s), s.parse::<u64>().ok(), "{s:?}");
        }
    }

    #[test]
    fn prints_as_to_string_does() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX,
        ] {
            assert_eq!(decimal(n), n.to_string());
        }
        for n in [0, 1, -1, -10, 987654321, -987654321, i64::MAX, i64::MIN] {
            assert_eq!(signed(n), n.to_string());
        }
    }
}
