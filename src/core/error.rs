//! One error type for everything that can go wrong, with a stable `code`.
//!
//! Portal errors keep the portal's code (`QUERY_LIMIT_EXCEEDED`, `expired_token`,
//! `ACCESS_DENIED`, ...); failures that happen on our side get one of the codes in [`code`].
//! Descriptions are written from what we know about the call, never from credentials: no code
//! path puts a token, a refresh token or an `auth` parameter into an error.

use std::borrow::Cow;

/// Codes this library produces itself (the portal's own codes pass through unchanged).
pub mod code {
    /// A bad argument, found before any request was sent.
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    /// The request did not complete (connection refused, reset, DNS, CORS).
    pub const NETWORK: &str = "NETWORK";
    /// No response within the configured time.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// A body that is not the portal's JSON envelope (an HTML error page, truncated JSON).
    pub const BAD_RESPONSE: &str = "BAD_RESPONSE";
    /// The operation was cancelled through its `AbortSignal`.
    pub const ABORTED: &str = "ABORTED";
    /// The portal's plan lacks a feature the operation needs.
    pub const FEATURE_UNAVAILABLE: &str = "FEATURE_UNAVAILABLE";
    /// The app's `refresh` callback failed or returned no usable token.
    pub const REFRESH_FAILED: &str = "REFRESH_FAILED";
    /// Not inside a Bitrix24 placement frame, or the portal did not answer.
    pub const FRAME_UNAVAILABLE: &str = "FRAME_UNAVAILABLE";
    /// An onOfflineEvent request that is malformed or not signed with the app's token.
    pub const INVALID_SIGNAL: &str = "INVALID_SIGNAL";
    /// A journal store failed to read or write.
    pub const STORE_FAILED: &str = "STORE_FAILED";
    /// The portal answered with a redirect (renamed, moved, or something in between): it is
    /// not followed, since that would send the token to another address.
    pub const PORTAL_MOVED: &str = "PORTAL_MOVED";
}

#[derive(Debug, Clone, PartialEq)]
pub struct B24Error {
    pub code: Cow<'static, str>,
    /// HTTP status of the response, 0 when there was none.
    pub status: u16,
    /// The REST method involved, empty when none.
    pub method: String,
    pub description: String,
    /// Whether trying the same operation again later can succeed.
    pub retryable: bool,
    /// `PORTAL_MOVED` only: the host the portal redirected to, when the runtime shows it.
    pub moved_to: Option<String>,
}

impl B24Error {
    pub fn new(code: &'static str, description: impl Into<String>) -> B24Error {
        B24Error {
            code: Cow::Borrowed(code),
            status: 0,
            method: String::new(),
            description: description.into(),
            retryable: false,
            moved_to: None,
        }
    }

    /// An error the portal answered with.
    pub fn portal(code: &str, status: u16, description: &str) -> B24Error {
        let mut e = B24Error {
            code: Cow::Owned(code.to_string()),
            status,
            method: String::new(),
            description: description.to_string(),
            retryable: false,
            moved_to: None,
        };
        e.retryable = crate::core::retry::classify(&e).retryable();
        e
    }

    pub fn invalid(param: &str, why: &str) -> B24Error {
        let mut d = String::with_capacity(param.len() + why.len() + 2);
        d.push_str(param);
        d.push_str(": ");
        d.push_str(why);
        B24Error::new(code::INVALID_ARGUMENT, d)
    }

    pub fn with_method(mut self, method: &str) -> B24Error {
        if self.method.is_empty() {
            self.method = method.to_string();
        }
        self
    }

    pub fn with_status(mut self, status: u16) -> B24Error {
        self.status = status;
        self
    }

    pub fn retryable(mut self, yes: bool) -> B24Error {
        self.retryable = yes;
        self
    }

    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }

    /// `CODE: description (method)`, the `message` of the JS error.
    pub fn message(&self) -> String {
        let mut m =
            String::with_capacity(self.code.len() + self.description.len() + self.method.len() + 6);
        m.push_str(&self.code);
        if !self.description.is_empty() {
            m.push_str(": ");
            m.push_str(&self.description);
        }
        if !self.method.is_empty() {
            m.push_str(" (");
            m.push_str(&self.method);
            m.push(')');
        }
        m
    }
}

impl std::fmt::Display for B24Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for B24Error {}

pub type Result<T> = std::result::Result<T, B24Error>;
