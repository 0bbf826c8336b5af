//! Integers as decimal text, written by hand: `to_string()` on an integer links `core::fmt`'s
//! integer formatting into the wasm, and the library prints integers in a dozen places
//! (counts in messages, journal lines, batch command names).

/// `n` in decimal.
pub fn decimal(n: u64) -> String {
    write(false, n)
}

/// `n` in decimal, with a `-` when negative.
pub fn signed(n: i64) -> String {
    write(n < 0, n.unsigned_abs())
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
    use super::{decimal, signed};

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
