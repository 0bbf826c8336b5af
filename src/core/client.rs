//! The call pipeline: wait for the limits, make sure the token is fresh, send, decode, and on
//! failure refresh, back off or give up, as `retry.rs` decides. Everything here is generic over
//! the [`Platform`], so native tests drive it with a fake portal and a fake clock.

use super::args::Body;
use super::auth::Auth;
use super::digits::decimal;
use super::envelope::{decode, Reply};
use super::error::{code, B24Error, Kind, Result};
use super::limiter::{Bucket, MethodOperating, Operating, RateLimit};
use super::model::Features;
use super::origin::Origin;
use super::platform::{Context, HttpRequest, Level, Platform, TransportError, MAX_RESPONSE_BYTES};
use super::retry::{decide, Decision, Idempotency, RetryPolicy};
use crate::core::text::concat;
use std::cell::RefCell;

/// Operating-time limit of cloud portals, seconds per method over ten minutes.
pub const CLOUD_OPERATING_LIMIT_S: f64 = 480.0;

#[derive(Debug, Clone)]
pub struct Config {
    pub origin: Origin,
    pub timeout_ms: f64,
    pub retry: RetryPolicy,
    /// `None` turns the rate limiter off.
    pub rate: Option<RateLimit>,
    pub operating_limit_s: f64,
    /// Sent as `auth_connector` with every call that does not set its own.
    pub connector: Option<String>,
    /// The longest answer read (`maxResponseBytes`); a longer one is `BAD_RESPONSE`.
    pub max_response_bytes: u32,
}

impl Config {
    pub fn new(origin: Origin) -> Config {
        Config {
            origin,
            timeout_ms: 30_000.0,
            retry: RetryPolicy::default(),
            rate: Some(super::limiter::STANDARD),
            operating_limit_s: CLOUD_OPERATING_LIMIT_S,
            connector: None,
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }
}

/// The error for a redirect: the token is not sent after it. Only the new host is told (from
/// an absolute `Location`), never its path or query, which may carry anything.
fn moved(origin: &Origin, status: u16, location: Option<&str>) -> B24Error {
    let host = location.and_then(|l| {
        let rest = l
            .strip_prefix("https://")
            .or_else(|| l.strip_prefix("http://"))?;
        let end = rest.bytes().position(|b| matches!(b, b'/' | b'?' | b'#'));
        let authority = rest.split_at_checked(end.unwrap_or(rest.len()))?.0;
        let host = super::text::rsplit_once(authority, b'@')
            .map_or(authority, |(_, h)| h)
            .to_ascii_lowercase();
        Origin::parse(&host, false).ok().map(|o| o.host)
    });
    let mut description = String::from("the portal answered with a redirect");
    match &host {
        Some(h) if *h != origin.host => {
            description.push_str(" to ");
            description.push_str(h);
        }
        Some(_) => description.push_str(" to another address on the same host"),
        None => {}
    }
    description.push_str("; it was not followed (the token would have gone along). If the portal was renamed, use its new domain.");
    let mut e = B24Error::new(code::PORTAL_MOVED, description).with_status(status);
    e.moved_to = host;
    e
}

/// Counters for `stats()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// HTTP requests sent (retries included).
    pub requests: u64,
    pub retries: u64,
    pub refreshes: u64,
    /// `QUERY_LIMIT_EXCEEDED` answers received.
    pub rate_limited: u64,
    /// `OPERATION_TIME_LIMIT` answers received.
    pub operating_limited: u64,
    /// Milliseconds calls spent waiting for the rate limiter or an operating-time pause.
    pub waited_ms: f64,
    /// Requests per method.
    pub by_method: Vec<(String, u64)>,
    /// Failed attempts per error code.
    pub errors: Vec<(String, u64)>,
    pub operating: Vec<MethodOperating>,
    /// Current level of the client-side rate bucket.
    pub bucket_level: f64,
}

fn bump(list: &mut Vec<(String, u64)>, key: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some((_, n)) => *n += 1,
        None => list.push((key.to_string(), 1)),
    }
}

struct State {
    bucket: Option<Bucket>,
    operating: Operating,
    stats: Stats,
    /// The portal's clock minus ours, from `time.start`.
    skew_ms: f64,
}

/// How one call may be treated.
pub struct CallOptions<'a, S> {
    pub idempotency: Idempotency,
    pub signal: Option<&'a S>,
    /// `auth_connector` for this call; falls back to the client's.
    pub connector: Option<&'a str>,
}

impl<S> CallOptions<'_, S> {
    pub fn new(idempotency: Idempotency) -> CallOptions<'static, S> {
        CallOptions {
            idempotency,
            signal: None,
            connector: None,
        }
    }
}

pub struct Client<P: Platform> {
    pub platform: P,
    pub config: Config,
    pub auth: Auth,
    state: RefCell<State>,
    /// What `Queue::context` found (the plan's features, the app's code): the same for every
    /// queue of this portal and app, so asked once per client.
    pub(crate) context: RefCell<Option<(Features, Option<String>)>>,
}

impl<P: Platform> Client<P> {
    pub fn new(platform: P, config: Config, auth: Auth) -> Client<P> {
        let state = State {
            bucket: config.rate.map(Bucket::new),
            operating: Operating::new(config.operating_limit_s),
            stats: Stats::default(),
            skew_ms: 0.0,
        };
        Client {
            platform,
            config,
            auth,
            state: RefCell::new(state),
            context: RefCell::new(None),
        }
    }

    /// The counters, brought up to date, borrowed: the caller converts them (or clones them)
    /// rather than every caller paying for a copy.
    pub fn stats(&self) -> std::cell::Ref<'_, Stats> {
        let now = self.platform.now_ms();
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            st.stats.refreshes = self.auth.refreshes();
            st.stats.operating = st.operating.methods().to_vec();
            st.stats.bucket_level = st.bucket.as_mut().map(|b| b.level(now)).unwrap_or(0.0);
        }
        std::cell::Ref::map(self.state.borrow(), |st| &st.stats)
    }

    /// The portal's clock now, as far as its last `time.start` tells (ms).
    pub fn portal_now_ms(&self) -> f64 {
        self.platform.now_ms() + self.state.borrow().skew_ms
    }

    fn check_abort(&self, signal: Option<&P::Signal>) -> Result<()> {
        match signal {
            Some(s) if self.platform.aborted(s) => {
                Err(B24Error::new(code::ABORTED, "the operation was aborted"))
            }
            _ => Ok(()),
        }
    }

    /// Waits until the method's operating time and the request rate allow one more request.
    async fn admit(&self, method: &str, signal: Option<&P::Signal>) -> Result<()> {
        loop {
            self.check_abort(signal)?;
            let now = self.platform.now_ms();
            let wait = {
                let mut st = self.state.borrow_mut();
                let paused = st.operating.wait_ms(method, now);
                if paused > 0.0 {
                    paused
                } else {
                    match st.bucket.as_mut().map(|b| b.try_take(now)) {
                        None | Some(Ok(())) => 0.0,
                        Some(Err(w)) => w,
                    }
                }
            };
            if wait <= 0.0 {
                return Ok(());
            }
            self.state.borrow_mut().stats.waited_ms += wait;
            self.platform.sleep(wait, signal).await?;
        }
    }

    /// Logs through the platform, with this client's portal in the context.
    pub fn log(&self, level: Level, message: &str, method: Option<&str>, process_id: Option<&str>) {
        let context = Context {
            portal: Some(&self.config.origin.host),
            method,
            process_id,
        };
        self.platform.log(level, message, &context);
    }

    /// The token to send, refreshed first when it is due.
    pub async fn fresh_token(&self) -> Result<(String, u64)> {
        let now = self.platform.now_ms();
        if self.auth.due(now) {
            let (_, gen) = self.auth.current();
            if let Err(e) = self.auth.refresh(gen).await {
                if self.auth.expired(self.platform.now_ms()) {
                    return Err(e);
                }
                // Not expired yet: go on with the current token, a 401 will try again.
                self.log(
                    Level::Warn,
                    &concat(&["token refresh ahead of expiry failed: ", &e.message()]),
                    None,
                    None,
                );
            }
        }
        Ok(self.auth.current())
    }

    /// Calls `method` and returns the envelope; the result stays platform data, read by the
    /// caller (so this loop exists once, not once per result type). The future is boxed: every
    /// caller holds a pointer rather than embedding (and moving, and dropping) the whole loop.
    pub fn call<'a>(
        &'a self,
        method: &'a str,
        body: &'a Body<P::Data>,
        opts: &'a CallOptions<'a, P::Signal>,
    ) -> super::joint::LocalBoxFuture<'a, Result<Reply<P::Data>>> {
        Box::pin(self.call_inner(method, body, opts))
    }

    async fn call_inner(
        &self,
        method: &str,
        body: &Body<P::Data>,
        opts: &CallOptions<'_, P::Signal>,
    ) -> Result<Reply<P::Data>> {
        let url = self.config.origin.rest_url(method);
        // Filled in as the body is encoded, not in a copy of it.
        let connector = opts.connector.or(self.config.connector.as_deref());
        let mut attempt = 0;
        let mut refreshes = 0;
        loop {
            self.admit(method, opts.signal).await?;
            let (token, generation) = self.fresh_token().await?;
            let text = self.platform.encode(body, connector, &token)?;
            let sent_at = self.platform.now_ms();
            {
                let mut st = self.state.borrow_mut();
                st.stats.requests += 1;
                bump(&mut st.stats.by_method, method);
            }
            let request = HttpRequest {
                url: &url,
                body: Some(text),
                timeout_ms: self.config.timeout_ms,
            };
            let sent =
                self.platform
                    .send_limited(request, self.config.max_response_bytes, opts.signal);
            let outcome = match sent.await {
                Ok(resp) => decode(&self.platform, resp.status, &resp.body),
                Err(TransportError::Aborted) => {
                    return Err(B24Error::new(code::ABORTED, "the operation was aborted")
                        .with_method(method))
                }
                // Not retried: the next answer would be as long, and cost the limit again.
                Err(TransportError::TooLarge) => {
                    return Err(B24Error::new(
                        code::BAD_RESPONSE,
                        "the answer was longer than maxResponseBytes allows; it was not read",
                    )
                    .with_method(method))
                }
                Err(TransportError::Timeout) => {
                    Err(B24Error::new(code::TIMEOUT, "no answer in time"))
                }
                Err(TransportError::Network(why)) => Err(B24Error::new(code::NETWORK, why)),
                Err(TransportError::Redirect { status, location }) => {
                    Err(moved(&self.config.origin, status, location.as_deref()))
                }
            };
            let now = self.platform.now_ms();
            let err = match outcome {
                Ok(reply) => {
                    let mut st = self.state.borrow_mut();
                    if let Some(start) = reply.time.start {
                        st.skew_ms = start * 1000.0 - sent_at;
                    }
                    let skew = st.skew_ms;
                    st.operating.observe(
                        method,
                        reply.time.operating,
                        reply.time.operating_reset_at,
                        skew,
                        now,
                    );
                    return Ok(reply);
                }
                Err(e) => e.with_method(method),
            };
            let kind = err.kind();
            {
                let mut st = self.state.borrow_mut();
                bump(&mut st.stats.errors, &err.code);
                match kind {
                    Kind::RateLimited => {
                        st.stats.rate_limited += 1;
                        if let Some(b) = st.bucket.as_mut() {
                            b.saturate(now);
                        }
                    }
                    Kind::OperatingLimited => {
                        st.stats.operating_limited += 1;
                        st.operating.blocked(method, now);
                    }
                    _ => {}
                }
            }
            match decide(
                kind,
                opts.idempotency,
                attempt,
                refreshes,
                &self.config.retry,
                self.platform.random(),
            ) {
                Decision::Refresh if self.auth.can_refresh() => {
                    self.log(
                        Level::Info,
                        &concat(&[
                            "refreshing the access token after ",
                            &err.code,
                            " from ",
                            method,
                        ]),
                        Some(method),
                        None,
                    );
                    self.auth
                        .refresh(generation)
                        .await
                        .map_err(|e| e.with_method(method))?;
                    refreshes += 1;
                }
                Decision::Retry(ms) => {
                    attempt += 1;
                    self.state.borrow_mut().stats.retries += 1;
                    self.log(
                        Level::Warn,
                        &concat(&[
                            "retrying ",
                            method,
                            " after ",
                            &err.message(),
                            " (retry ",
                            &decimal(attempt as u64),
                            ")",
                        ]),
                        Some(method),
                        None,
                    );
                    self.platform.sleep(ms, opts.signal).await?;
                }
                Decision::Refresh => {
                    let mut e = err;
                    e.description.push_str(" (no refresh callback was given)");
                    return Err(e);
                }
                Decision::GiveUp => return Err(err),
            }
        }
    }
}
