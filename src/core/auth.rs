//! The access token and its refresh: one refresh at a time, shared by every call waiting for
//! it, and started shortly before the token runs out rather than only after a 401.
//!
//! Each successful refresh bumps a generation. A call that failed with the token of an older
//! generation does not refresh again: it simply retries with the newer token, so a burst of
//! parallel 401s costs exactly one refresh.

use super::error::{code, B24Error, Result};
use super::joint::{Joint, LocalBoxFuture};
use std::cell::RefCell;
use std::rc::Rc;

/// An access token and when it stops working (local ms), if known.
#[derive(Clone, PartialEq)]
pub struct Token {
    pub access: String,
    pub expires_at_ms: Option<f64>,
}

impl std::fmt::Debug for Token {
    /// Never prints the token itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Where fresh tokens come from: the app's callback, the placement frame, ...
pub trait Refresher: 'static {
    fn refresh(&self) -> LocalBoxFuture<'static, Result<Token>>;
}

type Pending = Joint<Result<u64>>;

struct State {
    token: Token,
    generation: u64,
    pending: Option<Pending>,
    refreshes: u64,
}

#[derive(Clone)]
pub struct Auth {
    state: Rc<RefCell<State>>,
    refresher: Option<Rc<dyn Refresher>>,
    /// Refresh this long before the known expiry.
    pub margin_ms: f64,
}

/// Default head start of a proactive refresh.
pub const REFRESH_MARGIN_MS: f64 = 60_000.0;
/// The shortest wait between two looks at a token that is about to expire.
const KEEP_ALIVE_MIN_MS: f64 = 5_000.0;
/// After a failed proactive refresh, the next try waits this long.
const KEEP_ALIVE_RETRY_MS: f64 = 30_000.0;

impl Auth {
    pub fn new(token: Token, refresher: Option<Rc<dyn Refresher>>) -> Auth {
        Auth {
            state: Rc::new(RefCell::new(State {
                token,
                generation: 0,
                pending: None,
                refreshes: 0,
            })),
            refresher,
            margin_ms: REFRESH_MARGIN_MS,
        }
    }

    /// The token to send and its generation.
    pub fn current(&self) -> (String, u64) {
        let st = self.state.borrow();
        (st.token.access.clone(), st.generation)
    }

    pub fn expires_at_ms(&self) -> Option<f64> {
        self.state.borrow().token.expires_at_ms
    }

    pub fn can_refresh(&self) -> bool {
        self.refresher.is_some()
    }

    pub fn refreshes(&self) -> u64 {
        self.state.borrow().refreshes
    }

    /// Whether the token is (about to be) expired and a refresher could replace it.
    pub fn due(&self, now_ms: f64) -> bool {
        self.refresher.is_some()
            && self
                .expires_at_ms()
                .map(|t| now_ms + self.margin_ms >= t)
                .unwrap_or(false)
    }

    pub fn expired(&self, now_ms: f64) -> bool {
        self.expires_at_ms().map(|t| now_ms >= t).unwrap_or(false)
    }

    /// The keep-alive's schedule: how long to wait before the next proactive refresh, given
    /// whether the last one failed. `margin_ms` before the expiry (at least 5 s from now), 30 s
    /// after a failure, `None` (stop) for a token with no known expiry. A page in a placement
    /// frame keeps its token fresh this way, so that no call has to wait for the portal page
    /// to hand over a new one.
    pub fn keep_alive_wait(&self, now_ms: f64, failed: bool) -> Option<f64> {
        let expires = self.expires_at_ms()?;
        Some(if failed {
            KEEP_ALIVE_RETRY_MS
        } else {
            (expires - self.margin_ms - now_ms).max(KEEP_ALIVE_MIN_MS)
        })
    }

    /// Makes sure a token newer than generation `seen` exists: joins the refresh under way, or
    /// starts one, or returns at once when another call already refreshed.
    pub async fn refresh(&self, seen: u64) -> Result<()> {
        let pending = {
            let mut st = self.state.borrow_mut();
            if st.generation > seen {
                return Ok(());
            }
            match &st.pending {
                Some(p) => p.clone(),
                None => {
                    let refresher = self.refresher.clone().ok_or_else(|| {
                        B24Error::new(
                            code::EXPIRED_TOKEN,
                            "the access token has expired and no refresh callback was given",
                        )
                        .with_status(401)
                    })?;
                    let state = self.state.clone();
                    let fut = Joint::new(Box::pin(async move {
                        let outcome = refresher.refresh().await;
                        let mut st = state.borrow_mut();
                        st.pending = None;
                        let token = outcome?;
                        if token.access.is_empty() {
                            return Err(B24Error::new(
                                code::REFRESH_FAILED,
                                "the refresh returned an empty access token",
                            ));
                        }
                        st.token = token;
                        st.generation += 1;
                        st.refreshes += 1;
                        Ok(st.generation)
                    }));
                    st.pending = Some(fut.clone());
                    fut
                }
            }
        };
        pending.wait().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::join_all;
    use std::cell::Cell;

    struct Counting {
        calls: Rc<Cell<u32>>,
        fail: bool,
    }

    impl Refresher for Counting {
        fn refresh(&self) -> LocalBoxFuture<'static, Result<Token>> {
            let calls = self.calls.clone();
            let fail = self.fail;
            Box::pin(async move {
                calls.set(calls.get() + 1);
                // Every waiter joins while the refresh is in flight.
                crate::core::testkit::yield_now().await;
                if fail {
                    Err(B24Error::new(code::REFRESH_FAILED, "callback threw"))
                } else {
                    Ok(Token {
                        access: format!("t{}", calls.get()),
                        expires_at_ms: Some(10_000.0),
                    })
                }
            })
        }
    }

    #[test]
    fn one_refresh_for_many_waiters() {
        let calls = Rc::new(Cell::new(0));
        let auth = Auth::new(
            Token {
                access: "t0".into(),
                expires_at_ms: Some(0.0),
            },
            Some(Rc::new(Counting {
                calls: calls.clone(),
                fail: false,
            })),
        );
        let (_, gen) = auth.current();
        let all = join_all((0..20).map(|_| auth.refresh(gen)));
        let results = futures_executor::block_on(all);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(calls.get(), 1);
        assert_eq!(auth.current(), ("t1".to_string(), 1));
        // A late waiter that saw generation 0 does not refresh again.
        futures_executor::block_on(auth.refresh(gen)).unwrap();
        assert_eq!(calls.get(), 1);
        assert!(format!(
            "{:?}",
            Token {
                access: "secret".into(),
                expires_at_ms: None
            }
        )
        .contains("redacted"));
    }

    /// The keep-alive waits until a minute before the expiry (at least 5 s), 30 s after a
    /// failed refresh, and stops for a token that never expires.
    #[test]
    fn keep_alive_schedule() {
        let auth = Auth::new(
            Token {
                access: "t".into(),
                expires_at_ms: Some(600_000.0),
            },
            None,
        );
        assert_eq!(auth.keep_alive_wait(0.0, false), Some(540_000.0));
        assert_eq!(auth.keep_alive_wait(0.0, true), Some(30_000.0));
        assert_eq!(auth.keep_alive_wait(590_000.0, false), Some(5_000.0));
        assert_eq!(auth.keep_alive_wait(900_000.0, false), Some(5_000.0));
        let forever = Auth::new(
            Token {
                access: "t".into(),
                expires_at_ms: None,
            },
            None,
        );
        assert_eq!(forever.keep_alive_wait(0.0, false), None);
    }

    #[test]
    fn failures_and_missing_refresher() {
        let calls = Rc::new(Cell::new(0));
        let auth = Auth::new(
            Token {
                access: "t0".into(),
                expires_at_ms: None,
            },
            Some(Rc::new(Counting { calls, fail: true })),
        );
        let e = futures_executor::block_on(auth.refresh(0)).unwrap_err();
        assert_eq!(e.code, code::REFRESH_FAILED);
        let none = Auth::new(
            Token {
                access: "t0".into(),
                expires_at_ms: Some(5.0),
            },
            None,
        );
        assert!(!none.due(10.0) && none.expired(10.0));
        assert_eq!(
            futures_executor::block_on(none.refresh(0))
                .unwrap_err()
                .code,
            "expired_token"
        );
    }
}
