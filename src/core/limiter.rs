//! Staying inside the portal's limits instead of bouncing off them.
//!
//! The request-rate bucket models the portal's leaky bucket on our side and makes a call wait
//! for room rather than earn `QUERY_LIMIT_EXCEEDED`. The operating-time tracker follows each
//! method's `time.operating` and pauses that method (only that one) before it would cross the
//! limit, until `operating_reset_at` drops the oldest minute. All times are injected.

/// Leaky-bucket parameters: `burst` requests at once, then `drain_per_sec` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub burst: f64,
    pub drain_per_sec: f64,
}

/// Every plan but Enterprise: 50 at once, 2 per second.
pub const STANDARD: RateLimit = RateLimit {
    burst: 50.0,
    drain_per_sec: 2.0,
};
/// Enterprise plans: 250 at once, 5 per second.
pub const ENTERPRISE: RateLimit = RateLimit {
    burst: 250.0,
    drain_per_sec: 5.0,
};

/// Our model of the portal's request counter.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    drain_per_ms: f64,
    level: f64,
    last_ms: f64,
}

impl Bucket {
    /// The portal drains its counter once a second, we drain continuously: keeping one
    /// second's worth of headroom means we are never ahead of it.
    pub fn new(limit: RateLimit) -> Bucket {
        Bucket {
            capacity: (limit.burst - limit.drain_per_sec).max(1.0),
            drain_per_ms: limit.drain_per_sec / 1000.0,
            level: 0.0,
            last_ms: f64::NEG_INFINITY,
        }
    }

    pub fn level(&mut self, now_ms: f64) -> f64 {
        if self.last_ms.is_finite() {
            let elapsed = (now_ms - self.last_ms).max(0.0);
            self.level = (self.level - elapsed * self.drain_per_ms).max(0.0);
        }
        self.last_ms = now_ms;
        self.level
    }

    /// Takes room for one request now, or tells how many milliseconds until there is room.
    pub fn try_take(&mut self, now_ms: f64) -> Result<(), f64> {
        let level = self.level(now_ms);
        if level + 1.0 <= self.capacity + 1e-9 {
            self.level = level + 1.0;
            Ok(())
        } else {
            Err(((level + 1.0 - self.capacity) / self.drain_per_ms).max(1.0))
        }
    }

    /// Gives one taken unit back (what it paid for turned out not to count).
    pub fn give_back(&mut self) {
        self.level = (self.level - 1.0).max(0.0);
    }

    /// The portal refused a request for rate: someone else (another tab, another app on this
    /// address) shares the counter, so assume it is full.
    pub fn saturate(&mut self, now_ms: f64) {
        self.level(now_ms);
        self.level = self.capacity;
    }
}

/// The portal's operating-time window: ten one-minute buckets.
const WINDOW_MS: f64 = 600_000.0;

/// How long a method blocked with `OPERATION_TIME_LIMIT` waits when the portal gave no reset
/// time: the next minute bucket.
const BLOCK_FALLBACK_MS: f64 = 60_000.0;

#[derive(Debug, Clone, PartialEq)]
pub struct MethodOperating {
    pub method: String,
    /// Seconds of execution the portal counts for this method over the last ten minutes.
    pub seconds: f64,
    /// Local time (ms) when the oldest minute bucket drops, if known.
    pub reset_at_ms: Option<f64>,
    /// Largest growth of `seconds` seen between two calls: how much one call may add.
    pub max_step: f64,
    /// Paused until this local time (ms) after an `OPERATION_TIME_LIMIT`.
    pub blocked_until_ms: f64,
}

#[derive(Debug, Clone)]
pub struct Operating {
    pub limit_s: f64,
    methods: Vec<MethodOperating>,
}

impl Operating {
    pub fn new(limit_s: f64) -> Operating {
        Operating {
            limit_s,
            methods: Vec::new(),
        }
    }

    fn entry(&mut self, method: &str) -> &mut MethodOperating {
        let i = match self.methods.iter().position(|m| m.method == method) {
            Some(i) => i,
            None => {
                self.methods.push(MethodOperating {
                    method: method.to_string(),
                    seconds: 0.0,
                    reset_at_ms: None,
                    max_step: 0.0,
                    blocked_until_ms: 0.0,
                });
                self.methods.len() - 1
            }
        };
        &mut self.methods[i]
    }

    /// Records a response's `time.operating` / `time.operating_reset_at` (either may be absent).
    /// `skew_ms` is the portal's clock minus ours. The window is ten minutes, so a reset time
    /// further ahead than that (a hostile or broken answer) is taken as ten minutes.
    pub fn observe(
        &mut self,
        method: &str,
        seconds: Option<f64>,
        reset_at_s: Option<f64>,
        skew_ms: f64,
        now_ms: f64,
    ) {
        let Some(seconds) = seconds else { return };
        let m = self.entry(method);
        let step = seconds - m.seconds;
        if step > 0.0 && m.reset_at_ms.is_some() {
            m.max_step = m.max_step.max(step);
        }
        m.seconds = seconds;
        m.reset_at_ms = reset_at_s
            .map(|s| s * 1000.0 - skew_ms)
            .filter(|t| t.is_finite())
            .map(|t| t.min(now_ms + WINDOW_MS));
    }

    /// The portal blocked the method: pause it until its oldest bucket drops.
    pub fn blocked(&mut self, method: &str, now_ms: f64) {
        let m = self.entry(method);
        m.blocked_until_ms = match m.reset_at_ms {
            Some(t) if t > now_ms => t,
            _ => now_ms + BLOCK_FALLBACK_MS,
        };
    }

    /// Milliseconds `method` should wait before its next call (0 = go).
    pub fn wait_ms(&self, method: &str, now_ms: f64) -> f64 {
        let Some(m) = self.methods.iter().find(|m| m.method == method) else {
            return 0.0;
        };
        if m.blocked_until_ms > now_ms {
            return m.blocked_until_ms - now_ms;
        }
        let headroom = (m.max_step * 2.0).max(1.0);
        match m.reset_at_ms {
            Some(reset) if m.seconds + headroom > self.limit_s && reset > now_ms => reset - now_ms,
            _ => 0.0,
        }
    }

    pub fn methods(&self) -> &[MethodOperating] {
        &self.methods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keeps_a_second_of_headroom() {
        let mut b = Bucket::new(STANDARD);
        for _ in 0..48 {
            assert_eq!(b.try_take(0.0), Ok(()));
        }
        let wait = b.try_take(0.0).unwrap_err();
        assert!((wait - 500.0).abs() < 1e-6, "{wait}");
        assert_eq!(b.try_take(500.0), Ok(()));
        b.saturate(500.0);
        assert!(b.try_take(500.0).is_err());
    }

    /// Against a model of the portal's counter (drained once per second), a steady client
    /// using the bucket is never refused.
    #[test]
    fn never_exceeds_a_discretely_draining_portal() {
        for limit in [STANDARD, ENTERPRISE] {
            let mut b = Bucket::new(limit);
            let mut portal = 0.0f64;
            let mut now = 0.0;
            let mut last_tick = 0.0;
            for _ in 0..2000 {
                loop {
                    match b.try_take(now) {
                        Ok(()) => break,
                        Err(w) => now += w,
                    }
                }
                while now - last_tick >= 1000.0 {
                    last_tick += 1000.0;
                    portal = (portal - limit.drain_per_sec).max(0.0);
                }
                assert!(portal < limit.burst, "refused at {now}");
                portal += 1.0;
                now += 3.0;
            }
        }
    }

    #[test]
    fn operating_pauses_before_the_limit_and_after_a_block() {
        let mut o = Operating::new(480.0);
        o.observe("crm.deal.list", Some(400.0), Some(1_000.0), 0.0, 900_000.0);
        o.observe("crm.deal.list", Some(420.0), Some(1_000.0), 0.0, 900_000.0);
        assert_eq!(o.wait_ms("crm.deal.list", 900_000.0), 0.0);
        o.observe("crm.deal.list", Some(445.0), Some(1_000.0), 0.0, 900_000.0);
        assert_eq!(
            o.wait_ms("crm.deal.list", 900_000.0),
            100_000.0,
            "445 + 2*25 > 480: wait for the reset"
        );
        assert_eq!(o.wait_ms("crm.deal.list", 1_000_001.0), 0.0);
        assert_eq!(o.wait_ms("other", 0.0), 0.0);
        o.blocked("other", 5_000.0);
        assert_eq!(o.wait_ms("other", 5_000.0), 60_000.0);
        // Absent fields never pause.
        o.observe("x", None, None, 0.0, 0.0);
        assert_eq!(o.wait_ms("x", 0.0), 0.0);
        // Skew: the portal's clock is 10 s ahead of ours.
        o.observe("y", Some(479.5), Some(100.0), 10_000.0, 80_000.0);
        assert_eq!(o.wait_ms("y", 80_000.0), 10_000.0);
        // A reset a century away is a broken answer: the method waits ten minutes at most.
        o.observe("z", Some(479.5), Some(4e9), 0.0, 1_000.0);
        assert_eq!(o.wait_ms("z", 1_000.0), 600_000.0);
    }
}
