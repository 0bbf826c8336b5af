//! What the core needs from the world, so that it stays pure: time, randomness, sleeping, one
//! HTTP exchange, and a JSON engine. The wasm build implements it with `fetch`, `setTimeout`,
//! `Math.random` and the browser's own `JSON`; native tests implement it with a fake portal or
//! a real HTTP client, and a clock they control.

use super::args::Body;
use super::error::Result;
use std::future::Future;

pub struct HttpRequest<'a> {
    pub url: &'a str,
    /// A POST of this JSON text (the `auth` parameter included), or a GET with everything in
    /// the URL's query (the OAuth server's refresh, as documented).
    pub body: Option<String>,
    pub timeout_ms: f64,
}

/// The longest answer read when the caller sets no limit (`maxResponseBytes`' default).
pub const MAX_RESPONSE_BYTES: u32 = 8 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransportError {
    /// The exchange failed; the text says how (never with the request body).
    Network(String),
    Timeout,
    Aborted,
    /// The answer was a redirect, which is never followed (it would carry the token
    /// elsewhere). `status` is 0 and `location` `None` where the runtime hides them (browsers).
    Redirect {
        status: u16,
        location: Option<String>,
    },
    /// The answer was longer than the limit (its `content-length` said so, or reading it went
    /// past the limit and stopped there): nothing of it is handed over.
    TooLarge,
}

/// Where a log message comes from, for structured loggers (the official SDK's
/// `LoggerInterface` takes a context object): the portal's host, the REST method, the
/// reservation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub portal: Option<&'a str>,
    pub method: Option<&'a str>,
    pub process_id: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

pub trait Platform: 'static {
    /// An opaque JSON value: event data and call results pass through the core untouched; the
    /// core reads the few fields it needs through the accessors below.
    type Data: Clone + 'static;
    /// A cancellation signal (`AbortSignal` in wasm).
    type Signal: Clone + 'static;

    /// Milliseconds on a monotonic-enough wall clock.
    fn now_ms(&self) -> f64;
    /// Uniform in [0, 1).
    fn random(&self) -> f64;
    /// Waits (at most [`super::time::MAX_DELAY_MS`]: longer waits end early and the caller
    /// checks again); ends early with `ABORTED` when the signal fires.
    fn sleep(&self, ms: f64, signal: Option<&Self::Signal>) -> impl Future<Output = Result<()>>;
    fn aborted(&self, signal: &Self::Signal) -> bool;
    /// One exchange: a POST of a JSON body, or a GET; an answer longer than
    /// [`MAX_RESPONSE_BYTES`] is [`TransportError::TooLarge`].
    fn send(
        &self,
        request: HttpRequest<'_>,
        signal: Option<&Self::Signal>,
    ) -> impl Future<Output = std::result::Result<HttpResponse, TransportError>>;
    /// [`Platform::send`] with the answer limited to `max_bytes`: a longer one fails with
    /// [`TransportError::TooLarge`], and the wasm build stops reading it at the limit. This
    /// default, for platforms that hold whole answers anyway (the native tests'), checks the
    /// length afterwards.
    fn send_limited(
        &self,
        request: HttpRequest<'_>,
        max_bytes: u32,
        signal: Option<&Self::Signal>,
    ) -> impl Future<Output = std::result::Result<HttpResponse, TransportError>> {
        async move {
            let answer = self.send(request, signal).await?;
            if answer.body.len() > max_bytes as usize {
                return Err(TransportError::TooLarge);
            }
            Ok(answer)
        }
    }
    /// The body as JSON text: a copy of `base`, then `args` set over it, then `auth_connector`
    /// (`connector`, when given) where that key is still absent, then `auth`.
    fn encode(
        &self,
        body: &Body<Self::Data>,
        connector: Option<&str>,
        auth: &str,
    ) -> Result<String>;
    /// `None` when the text is not JSON.
    fn parse(&self, text: &str) -> Option<Self::Data>;
    /// JSON `null`.
    fn null() -> Self::Data;
    /// A number as JSON would print it (the engine formats floats, so the core need not).
    fn number_text(n: f64) -> String;
    /// A field of an object; `None` when absent or null (or not an object).
    fn field(value: &Self::Data, key: &str) -> Option<Self::Data>;
    fn text(value: &Self::Data) -> Option<String>;
    fn number(value: &Self::Data) -> Option<f64>;
    fn boolean(value: &Self::Data) -> Option<bool>;
    /// The elements of an array.
    fn items(value: &Self::Data) -> Option<Vec<Self::Data>>;
    /// The entries of an object, in order.
    fn entries(value: &Self::Data) -> Option<Vec<(String, Self::Data)>>;
    /// The app's logger, if any. Messages never contain credentials.
    fn log(&self, level: Level, message: &str, context: &Context<'_>);
}
