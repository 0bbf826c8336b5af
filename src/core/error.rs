//! One error type for everything that can go wrong, with a stable `code`.
//!
//! Portal errors keep the portal's code (`QUERY_LIMIT_EXCEEDED`, `expired_token`,
//! `ACCESS_DENIED`, ...); failures that happen on our side get one of the codes in [`code`].
//! Every code the library produces or reacts to is named in [`code`] (the package's
//! TypeScript `B24ErrorCode` union is generated from it), and whether an error is worth
//! another try follows from its code alone, through [`Kind`]: never stored, never recomputed
//! elsewhere.
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
    /// A batch command not run because an earlier one failed and the batch halts on errors.
    pub const BATCH_HALTED: &str = "BATCH_HALTED";
    /// The fleet stopped draining the portal: its refresh token was refused, it was deleted,
    /// uninstalled or moved (see the description; `movedTo` for a new address). A new install
    /// brings it back.
    pub const PORTAL_STOPPED: &str = "PORTAL_STOPPED";
    /// The fleet worker no longer holds the portal's lease (another worker took it over): the
    /// store refused its journal write, and its drain of the portal ended.
    pub const LEASE_LOST: &str = "LEASE_LOST";
    /// An install or uninstall request that is malformed, names an endpoint the app does not
    /// trust, or does not carry the portal's application token.
    pub const INVALID_INSTALL: &str = "INVALID_INSTALL";
    /// The fleet refused an install before trying to prove it: too many unproven installs
    /// came in a short time (`installRate`). Nothing was sent or stored.
    pub const INSTALL_LIMITED: &str = "INSTALL_LIMITED";
    /// The fleet already holds `maxPortals` live portals: a new one's install is refused before
    /// anything is sent or stored.
    pub const PORTAL_LIMIT: &str = "PORTAL_LIMIT";

    // The portal's own codes that the library reacts to or documents.
    /// The access token has expired: refreshed, then the call is repeated.
    pub const EXPIRED_TOKEN: &str = "expired_token";
    /// The token is not one the portal issued (never refreshed: a refresh would not help).
    pub const INVALID_TOKEN: &str = "invalid_token";
    /// The request rate went over the portal's leaky bucket.
    pub const QUERY_LIMIT_EXCEEDED: &str = "QUERY_LIMIT_EXCEEDED";
    /// The method used up its operating time for the window.
    pub const OPERATION_TIME_LIMIT: &str = "OPERATION_TIME_LIMIT";
    /// The portal blocked the app for overloading it.
    pub const OVERLOAD_LIMIT: &str = "OVERLOAD_LIMIT";
    pub const PORTAL_DELETED: &str = "PORTAL_DELETED";
    pub const NO_AUTH_FOUND: &str = "NO_AUTH_FOUND";
    pub const ACCESS_DENIED: &str = "ACCESS_DENIED";
    pub const WRONG_AUTH_TYPE: &str = "WRONG_AUTH_TYPE";
    pub const ERROR_ARGUMENT: &str = "ERROR_ARGUMENT";
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
    pub const ERROR_UNEXPECTED_ANSWER: &str = "ERROR_UNEXPECTED_ANSWER";
    /// The OAuth server refused the refresh token: spent, expired, revoked, or the app was
    /// removed. Only a new install brings the portal back.
    pub const INVALID_GRANT: &str = "invalid_grant";
}

/// What a failure means for trying again (how long to wait is the retry policy's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// After a token refresh.
    RefreshAuth,
    RateLimited,
    OperatingLimited,
    /// The request may or may not have been executed.
    Transient,
    Fatal,
}

impl Kind {
    /// The one place that decides: a code and an HTTP status (5xx answers of unknown codes are
    /// transient).
    pub fn of(code: &str, status: u16) -> Kind {
        match code {
            code::EXPIRED_TOKEN => Kind::RefreshAuth,
            code::QUERY_LIMIT_EXCEEDED => Kind::RateLimited,
            code::OPERATION_TIME_LIMIT => Kind::OperatingLimited,
            code::OVERLOAD_LIMIT | code::PORTAL_DELETED | code::PORTAL_MOVED => Kind::Fatal,
            code::NETWORK
            | code::TIMEOUT
            | code::BAD_RESPONSE
            | code::INTERNAL_SERVER_ERROR
            | code::ERROR_UNEXPECTED_ANSWER => Kind::Transient,
            _ if status >= 500 => Kind::Transient,
            _ => Kind::Fatal,
        }
    }
}

/// A failure, boxed: it travels in every `Result` of the library, and a pointer there instead
/// of its five fields makes every future and every `Result` that may hold one smaller (several
/// KB of the wasm). Its fields read through `Deref` (`e.code`).
#[derive(Debug, Clone, PartialEq)]
pub struct B24Error(Box<Details>);

#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    pub code: Cow<'static, str>,
    /// HTTP status of the response, 0 when there was none.
    pub status: u16,
    /// The REST method involved, empty when none.
    pub method: String,
    pub description: String,
    /// `PORTAL_MOVED` only: the host the portal redirected to, when the runtime shows it.
    pub moved_to: Option<String>,
}

impl std::ops::Deref for B24Error {
    type Target = Details;
    fn deref(&self) -> &Details {
        &self.0
    }
}

impl std::ops::DerefMut for B24Error {
    fn deref_mut(&mut self) -> &mut Details {
        &mut self.0
    }
}

impl B24Error {
    pub fn new(code: &'static str, description: impl Into<String>) -> B24Error {
        B24Error(Box::new(Details {
            code: Cow::Borrowed(code),
            status: 0,
            method: String::new(),
            description: description.into(),
            moved_to: None,
        }))
    }

    /// An error the portal answered with.
    pub fn portal(code: &str, status: u16, description: &str) -> B24Error {
        B24Error(Box::new(Details {
            code: Cow::Owned(code.to_string()),
            status,
            method: String::new(),
            description: description.to_string(),
            moved_to: None,
        }))
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

    pub fn kind(&self) -> Kind {
        Kind::of(&self.code, self.status)
    }

    /// Whether trying the same operation again later can succeed.
    pub fn retryable(&self) -> bool {
        self.kind() != Kind::Fatal
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

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &'static str, status: u16) -> B24Error {
        B24Error::new(code, "").with_status(status)
    }

    #[test]
    fn the_kind_follows_from_the_code() {
        assert_eq!(err(code::EXPIRED_TOKEN, 401).kind(), Kind::RefreshAuth);
        assert_eq!(
            err(code::QUERY_LIMIT_EXCEEDED, 503).kind(),
            Kind::RateLimited
        );
        assert_eq!(
            err(code::OPERATION_TIME_LIMIT, 429).kind(),
            Kind::OperatingLimited
        );
        assert_eq!(err(code::BAD_RESPONSE, 502).kind(), Kind::Transient);
        assert_eq!(err(code::NETWORK, 0).kind(), Kind::Transient);
        assert_eq!(err("SOMETHING", 504).kind(), Kind::Transient);
        assert_eq!(err(code::OVERLOAD_LIMIT, 503).kind(), Kind::Fatal);
        assert_eq!(err(code::ACCESS_DENIED, 403).kind(), Kind::Fatal);
        assert_eq!(err(code::INVALID_TOKEN, 401).kind(), Kind::Fatal);
        assert!(B24Error::portal("QUERY_LIMIT_EXCEEDED", 503, "").retryable());
        assert!(!B24Error::portal("ERROR_ARGUMENT", 400, "").retryable());
    }

    /// The same code means the same thing wherever the error was made (an `expired_token` of
    /// the portal's and ours, made when no refresh callback was given, used to disagree).
    #[test]
    fn retryable_does_not_depend_on_who_made_the_error() {
        for c in [
            code::EXPIRED_TOKEN,
            code::TIMEOUT,
            code::BAD_RESPONSE,
            code::ACCESS_DENIED,
        ] {
            assert_eq!(
                B24Error::portal(c, 401, "").retryable(),
                B24Error::new(c, "x").with_status(401).retryable(),
                "{c}"
            );
        }
    }
}
