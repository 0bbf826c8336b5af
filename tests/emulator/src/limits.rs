//! The two limits of `limits.md`: a leaky bucket over HTTP requests, and per-method operating
//! time summed over ten one-minute buckets.

use crate::state::RateLimit;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Request counter that drains continuously at `drain_per_sec`.
#[derive(Debug, Default, Clone)]
pub struct Bucket {
    level: f64,
    last_ms: i64,
}

impl Bucket {
    pub fn level(&mut self, now_ms: i64, rate: RateLimit) -> f64 {
        let elapsed_s = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.level = (self.level - elapsed_s * rate.drain_per_sec).max(0.0);
        self.last_ms = now_ms;
        self.level
    }

    /// Counts a request if the counter has room for it; a refused request is not counted, so
    /// `burst` requests pass at once and then `drain_per_sec` per second.
    pub fn admit(&mut self, now_ms: i64, rate: RateLimit) -> bool {
        let level = self.level(now_ms, rate);
        if level + 1.0 > rate.burst + 1e-9 {
            return false;
        }
        self.level = level + 1.0;
        true
    }
}

const MINUTE_MS: i64 = 60_000;
const WINDOW_MS: i64 = 10 * MINUTE_MS;

/// Execution seconds per (caller, method), in one-minute buckets that each count for ten
/// minutes from their first call.
#[derive(Debug, Default)]
pub struct Operating {
    buckets: HashMap<(String, String), VecDeque<(i64, f64)>>,
}

/// The `operating` and `operating_reset_at` fields of a response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingNow {
    pub seconds: f64,
    pub reset_at_s: Option<i64>,
}

impl Operating {
    fn window(&mut self, caller: &str, method: &str, now_ms: i64) -> &mut VecDeque<(i64, f64)> {
        let q = self
            .buckets
            .entry((caller.to_string(), method.to_string()))
            .or_default();
        while q
            .front()
            .map(|(start, _)| start + WINDOW_MS <= now_ms)
            .unwrap_or(false)
        {
            q.pop_front();
        }
        q
    }

    pub fn current(&mut self, caller: &str, method: &str, now_ms: i64) -> OperatingNow {
        let q = self.window(caller, method, now_ms);
        OperatingNow {
            seconds: q.iter().map(|(_, s)| s).sum(),
            reset_at_s: q.front().map(|(start, _)| (start + WINDOW_MS + 999) / 1000),
        }
    }

    pub fn add(&mut self, caller: &str, method: &str, now_ms: i64, seconds: f64) -> OperatingNow {
        let q = self.window(caller, method, now_ms);
        match q.back_mut() {
            Some((start, sum)) if now_ms < *start + MINUTE_MS => *sum += seconds,
            _ => q.push_back((now_ms, seconds)),
        }
        self.current(caller, method, now_ms)
    }

    /// Seconds currently counted per method, over every caller, for `/_emulator/stats`.
    pub fn per_method(&mut self, now_ms: i64) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let keys: Vec<(String, String)> = self.buckets.keys().cloned().collect();
        for (caller, method) in keys {
            let s = self.current(&caller, &method, now_ms).seconds;
            *out.entry(method).or_insert(0.0) += s;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_burst_then_drain() {
        let rate = RateLimit {
            burst: 50.0,
            drain_per_sec: 2.0,
        };
        let mut b = Bucket::default();
        assert!((0..50).all(|_| b.admit(0, rate)));
        assert!(!b.admit(0, rate));
        assert!(
            b.admit(500, rate),
            "one request drained after half a second"
        );
        assert!(!b.admit(500, rate));
    }

    #[test]
    fn operating_buckets_drop_after_ten_minutes() {
        let mut o = Operating::default();
        o.add("a", "m", 0, 100.0);
        o.add("a", "m", 30_000, 50.0);
        let later = o.add("a", "m", 61_000, 10.0);
        assert_eq!(later.seconds, 160.0);
        assert_eq!(later.reset_at_s, Some(600));
        assert_eq!(o.current("a", "m", 600_000).seconds, 10.0);
        assert_eq!(o.current("b", "m", 0).seconds, 0.0);
    }
}
