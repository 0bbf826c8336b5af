//! Time values from outside: the portal's ISO 8601 timestamps, and delays that must fit what
//! timers accept. Integer arithmetic only (no float parsing or formatting in the wasm).

/// The longest delay `setTimeout` honours (2^31 - 1 ms, about 24.8 days); longer ones fire at
/// once. Waits that could be longer are cut to this and re-checked when they end.
pub const MAX_DELAY_MS: f64 = 2_147_483_647.0;

/// A delay as a timer accepts it: NaN and negatives are 0, the rest at most [`MAX_DELAY_MS`].
pub fn clamp_delay(ms: f64) -> f64 {
    if ms > 0.0 {
        ms.min(MAX_DELAY_MS)
    } else {
        0.0
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + (d - b'0') as i64))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2024-07-18T12:32:31+02:00` (or `Z`, or no offset: then UTC) as Unix milliseconds;
/// `None` for anything else. Fractions of a second are ignored.
pub fn parse_iso_ms(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, se) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        rest = &rest[1 + n..];
    }
    let offset_min = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let v = digits(&[*h1, *h2])? * 60 + digits(&[*m1, *m2])?;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset_min * 60;
    Some(secs as f64 * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_timestamps() {
        assert_eq!(
            parse_iso_ms("2024-07-18T12:32:31+02:00"),
            Some(1_721_298_751_000.0)
        );
        assert_eq!(
            parse_iso_ms("2024-07-18T10:32:31Z"),
            Some(1_721_298_751_000.0)
        );
        assert_eq!(
            parse_iso_ms("2024-07-18 10:32:31.999"),
            Some(1_721_298_751_000.0)
        );
        assert_eq!(parse_iso_ms("1970-01-01T00:00:00-01:30"), Some(5_400_000.0));
        assert_eq!(
            parse_iso_ms("2000-03-01T00:00:00Z"),
            Some(951_868_800_000.0)
        );
        for bad in [
            "",
            "2024-07-18",
            "2024-13-18T12:32:31Z",
            "2024-07-18T12:32:31+0200",
            "2024-07-18T12:32:3x",
            "９９９９-07-18T12:32:31Z",
        ] {
            assert_eq!(parse_iso_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn delays_fit_timers() {
        assert_eq!(clamp_delay(f64::NAN), 0.0);
        assert_eq!(clamp_delay(-5.0), 0.0);
        assert_eq!(clamp_delay(2f64.powi(31)), MAX_DELAY_MS);
        assert_eq!(clamp_delay(f64::INFINITY), MAX_DELAY_MS);
        assert_eq!(clamp_delay(1500.0), 1500.0);
    }
}
