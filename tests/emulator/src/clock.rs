//! The emulator's clock: wall time plus an offset that tests move forward with
//! `POST /_emulator/clock`, so token expiry, rate limits, operating buckets and the 30-day
//! expiry job can be exercised without waiting.

use chrono::{DateTime, FixedOffset, TimeZone};
use std::sync::atomic::{AtomicI64, Ordering};

/// The portal's time zone offset in seconds (+03:00): clients must honour the offset in
/// `TIMESTAMP_X` rather than assume UTC.
pub const PORTAL_UTC_OFFSET_S: i32 = 3 * 3600;

/// How far the clock may be moved forward: a century, far more than any test needs (the
/// 30-day expiry job), far less than what would overflow a millisecond count.
pub const MAX_OFFSET_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Milliseconds since the Unix epoch, as the emulator sees them.
    pub fn now_ms(&self) -> i64 {
        (wall_ms() as i64).saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `ms`; refused (false) when that would take it past
    /// [`MAX_OFFSET_MS`], so every time computed from the clock stays far from overflowing.
    pub fn advance_ms(&self, ms: i64) -> bool {
        self.offset_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                o.checked_add(ms)
                    .filter(|n| (0..=MAX_OFFSET_MS).contains(n))
            })
            .is_ok()
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

/// Wall time in milliseconds since the Unix epoch (fractions kept where the platform has them).
/// Natively the system clock; in wasm JavaScript's `Date.now()`, as `std::time` panics there.
#[cfg(not(target_arch = "wasm32"))]
pub fn wall_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[cfg(all(target_arch = "wasm32", feature = "wasm"))]
pub fn wall_ms() -> f64 {
    js_sys::Date::now()
}

#[cfg(all(target_arch = "wasm32", not(feature = "wasm")))]
compile_error!(
    "on wasm32 the emulator reads the time from JavaScript: build it with feature `wasm`"
);

/// Measures how long a method ran (the `processing` of an answer, the operating time it
/// costs): a monotonic clock natively, the wall clock in wasm.
pub struct Stopwatch {
    #[cfg(not(target_arch = "wasm32"))]
    started: std::time::Instant,
    #[cfg(target_arch = "wasm32")]
    started_ms: f64,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            #[cfg(not(target_arch = "wasm32"))]
            started: std::time::Instant::now(),
            #[cfg(target_arch = "wasm32")]
            started_ms: wall_ms(),
        }
    }

    pub fn elapsed_s(&self) -> f64 {
        #[cfg(not(target_arch = "wasm32"))]
        return self.started.elapsed().as_secs_f64();
        #[cfg(target_arch = "wasm32")]
        return ((wall_ms() - self.started_ms) / 1000.0).max(0.0);
    }
}

fn zone() -> FixedOffset {
    FixedOffset::east_opt(PORTAL_UTC_OFFSET_S).expect("constant offset is valid")
}

/// `2024-07-18T12:32:31+03:00` for a Unix time in seconds.
pub fn iso(unix_s: i64) -> String {
    match zone().timestamp_opt(unix_s, 0).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        None => String::new(),
    }
}

/// Reads an ISO 8601 date-time (with offset, or without one: then portal time) into Unix seconds.
/// Plain integers are accepted as Unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp());
    }
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%z") {
        return Some(dt.timestamp());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            return zone()
                .from_local_datetime(&naive)
                .single()
                .map(|d| d.timestamp());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let naive = d.and_hms_opt(0, 0, 0)?;
        return zone()
            .from_local_datetime(&naive)
            .single()
            .map(|d| d.timestamp());
    }
    t.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let s = iso(1_721_298_751);
        assert_eq!(s, "2024-07-18T13:32:31+03:00");
        assert_eq!(parse_time(&s), Some(1_721_298_751));
        assert_eq!(parse_time("2024-07-18T12:32:31+02:00"), Some(1_721_298_751));
        assert_eq!(parse_time("2024-07-18T10:32:31Z"), Some(1_721_298_751));
        assert_eq!(parse_time("nonsense"), None);
    }
}
