//! A portal's tokens in the fleet, renewed on the server side: through the OAuth server the app
//! trusts for that portal, with the app's client id and secret, once per refresh token across
//! every worker that shares the store. The same exchange proves an install: only the OAuth
//! server can say which portal (`member_id`, `client_endpoint`) a refresh token belongs to.
//!
//! A refresh token is good for one exchange, so:
//! - the exchange is made only under the portal's refresh lease, which outlives the exchange
//!   (sized from the request timeout), and only if the stored pair is still the one this
//!   worker last saw (otherwise another worker already renewed it: that pair is used);
//! - the new pair is used at once and written to the store with a compare-and-swap over the
//!   refresh token it replaced; a write that fails is retried (at every scan and before any
//!   further exchange) while the pair is used from memory and the refresh lease is kept, so
//!   nobody sends the spent token meanwhile;
//! - `invalid_grant` stops the portal only while this worker still holds the refresh lease it
//!   exchanged under (no other exchange can be in flight) and the store still holds the
//!   refused token; a pair saved later (a racing exchange that did succeed) clears that stop.

use super::super::args::{url_encode, Tree};
use super::super::auth::{Refresher, Token};
use super::super::error::{code, B24Error, Result};
use super::super::joint::LocalBoxFuture;
use super::super::origin::Origin;
use super::super::platform::{HttpRequest, Platform, TransportError};
use super::super::read::tree;
use super::install::{endpoint, member_id, Trust, MAX_EXPIRES_IN_S};
use super::record::Record;
use super::store::FleetStore;
use crate::core::text::concat;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The app's OAuth credentials (from its partner or local-app form).
#[derive(Clone)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for OAuthApp {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The shortest refresh lease; it is longer when requests may take longer ([`refresh_lease_ms`]).
pub const MIN_REFRESH_LEASE_MS: f64 = 30_000.0;
/// How often a worker waiting for another's refresh looks at the store again.
const REFRESH_POLL_MS: f64 = 200.0;
/// Tries of one compare-and-swap over a record that other writers keep changing.
pub const SWAP_TRIES: usize = 8;

/// A refresh lease outlives the exchange made under it: the exchange's own timeout twice over
/// (the request, and the store writes around it), plus a margin.
pub fn refresh_lease_ms(timeout_ms: f64) -> f64 {
    (2.0 * timeout_ms + 10_000.0).max(MIN_REFRESH_LEASE_MS)
}

/// The store key of a portal's record.
pub fn record_key(prefix: &str, member_id: &str) -> String {
    concat(&[prefix, "portal/", member_id])
}

/// The store key that lists a portal as live (installed and not stopped): the scan reads these,
/// so stopped portals cost nothing.
pub fn live_key(prefix: &str, member_id: &str) -> String {
    concat(&[prefix, "live/", member_id])
}

fn refresh_lease(prefix: &str, member_id: &str) -> String {
    concat(&[prefix, "refresh/", member_id])
}

fn failed(why: &str) -> B24Error {
    B24Error::new(code::REFRESH_FAILED, why)
}

/// Reads a portal's record from the store: its text (for a compare-and-swap) and the record.
pub async fn read_record(store: &dyn FleetStore, key: &str) -> Result<Option<(String, Record)>> {
    match store.get(key).await? {
        Some(text) if !text.is_empty() => {
            let record = Record::from_text(&text)?;
            Ok(Some((text, record)))
        }
        _ => Ok(None),
    }
}

/// The error a stopped portal answers with.
pub fn stopped_error(record: &Record) -> Option<B24Error> {
    let code = record.stopped.as_deref()?;
    let mut e = B24Error::new(
        code::PORTAL_STOPPED,
        concat(&[
            "the portal is stopped (",
            code,
            "); a new install of the app brings it back",
        ]),
    );
    e.moved_to = record.moved_to.clone();
    Some(e)
}

/// Rewrites a record with `change` applied, over whatever the store holds now (a few tries
/// when another writer changes it meanwhile). `change` may decline (`false`): nothing is
/// written and the record as read is returned. `None` when the record is gone (uninstalled).
pub async fn change_record(
    store: &dyn FleetStore,
    key: &str,
    change: impl Fn(&mut Record) -> bool,
) -> Result<Option<Record>> {
    for _ in 0..SWAP_TRIES {
        let Some((text, mut record)) = read_record(store, key).await? else {
            return Ok(None);
        };
        if !change(&mut record) {
            return Ok(Some(record));
        }
        if store.swap(key, Some(&text), Some(record.to_text())).await? {
            return Ok(Some(record));
        }
    }
    Err(B24Error::new(
        code::STORE_FAILED,
        "the portal record kept changing under a write",
    ))
}

/// What an OAuth server's answer to a refresh grant carries, read and bounded.
#[derive(Clone, PartialEq)]
pub struct Grant {
    pub access: String,
    pub refresh: String,
    pub expires_in_s: f64,
    /// The portal the grant is for, as the OAuth server says (32 hex digits, lower-case).
    pub member_id: Option<String>,
    /// The portal's REST origin, as the OAuth server says (`client_endpoint`).
    pub portal: Option<Origin>,
}

impl std::fmt::Debug for Grant {
    /// Never prints a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("expires_in_s", &self.expires_in_s)
            .field("member_id", &self.member_id)
            .field("portal", &self.portal)
            .finish_non_exhaustive()
    }
}

/// Reads an OAuth server's answer (its status and its body as parsed JSON, `None` when the body
/// was not JSON). Anything unusable is `REFRESH_FAILED`; a refused refresh token is
/// `invalid_grant`. Nothing of the body reaches an error's text.
pub fn read_grant(status: u16, body: Option<&Tree>, allow_http: bool) -> Result<Grant> {
    let body = body.ok_or_else(|| failed("the OAuth server's answer is not JSON"))?;
    let text = |k: &str| body.get(k).and_then(Tree::as_str);
    if let Some(error) = body.get("error") {
        return Err(if error.as_str() == Some(code::INVALID_GRANT) {
            B24Error::new(
                code::INVALID_GRANT,
                "the OAuth server refused the refresh token (spent, expired or revoked)",
            )
            .with_status(status)
        } else {
            failed("the OAuth server refused the refresh").with_status(status)
        });
    }
    if status != 200 {
        return Err(failed("the OAuth server failed").with_status(status));
    }
    let token = |k: &str| {
        text(k)
            .filter(|t| !t.is_empty() && t.len() <= 512 && t.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .ok_or_else(|| failed("the OAuth server's answer lacks a usable token"))
    };
    let (access, refresh) = (token("access_token")?, token("refresh_token")?);
    let member_id = match body.get("member_id") {
        None | Some(Tree::Null) => None,
        Some(m) => Some(
            member_id(m.as_str())
                .map_err(|_| failed("the OAuth server's answer names no usable member_id"))?,
        ),
    };
    let portal = match body.get("client_endpoint") {
        None | Some(Tree::Null) => None,
        Some(c) => Some(
            c.as_str()
                .and_then(|c| portal_of(c, allow_http))
                .ok_or_else(|| {
                    failed("the OAuth server's answer names no usable client_endpoint")
                })?,
        ),
    };
    let expires_in_s = body
        .get("expires_in")
        .and_then(Tree::as_int)
        .map(|e| e as f64)
        .filter(|e| *e >= 1.0 && *e <= MAX_EXPIRES_IN_S)
        .unwrap_or(3600.0);
    Ok(Grant {
        access,
        refresh,
        expires_in_s,
        member_id,
        portal,
    })
}

/// The origin of a portal's REST endpoint (`https://HOST/rest/`), read as an install's is.
fn portal_of(url: &str, allow_http: bool) -> Option<Origin> {
    let (origin, path) = endpoint(url, allow_http, "client_endpoint").ok()?;
    (path == "/rest/" || path == "/rest").then_some(origin)
}

/// The longest answer read from an OAuth server (its answers are a few hundred bytes).
const MAX_OAUTH_ANSWER_BYTES: u32 = 64 * 1024;

/// One exchange of `refresh` at the OAuth server `oauth` (already checked against the trust),
/// as documented: `GET /oauth/token/?grant_type=refresh_token&client_id&client_secret
/// &refresh_token`, no redirect followed.
pub async fn exchange<P: Platform>(
    platform: &P,
    app: &OAuthApp,
    oauth: &Origin,
    refresh: &str,
    allow_http: bool,
    timeout_ms: f64,
) -> Result<Grant> {
    let mut url = concat(&[
        &oauth.origin(),
        "/oauth/token/?grant_type=refresh_token&client_id=",
    ]);
    url_encode(&mut url, &app.client_id);
    url.push_str("&client_secret=");
    url_encode(&mut url, &app.client_secret);
    url.push_str("&refresh_token=");
    url_encode(&mut url, refresh);
    let answer = platform
        .send_limited(
            HttpRequest {
                url: &url,
                body: None,
                timeout_ms,
            },
            MAX_OAUTH_ANSWER_BYTES,
            None,
        )
        .await
        .map_err(|e| match e {
            TransportError::Timeout => failed("the OAuth server did not answer in time"),
            TransportError::TooLarge => failed("the OAuth server's answer is over 64 KiB"),
            TransportError::Redirect { .. } => {
                failed("the OAuth server answered with a redirect (not followed)")
            }
            _ => failed("the OAuth server could not be reached"),
        })?;
    let body = platform.parse(&answer.body).map(|v| tree::<P>(&v));
    read_grant(answer.status, body.as_ref(), allow_http)
}

/// A portal's token source in the fleet (the `Refresher` of its client).
#[derive(Clone)]
pub struct PortalTokens<P: Platform + Clone> {
    inner: Rc<Inner<P>>,
}

struct Inner<P: Platform + Clone> {
    platform: P,
    store: Rc<dyn FleetStore>,
    prefix: String,
    member_id: String,
    /// This worker: the owner of the refresh leases it takes.
    worker: String,
    app: OAuthApp,
    trust: Trust,
    timeout_ms: f64,
    /// The generation of the pair this worker last handed out.
    seen: Cell<u64>,
    /// Exchanges made by this worker (each spends one refresh token).
    exchanges: Cell<u64>,
    /// A pair the OAuth server gave that is not in the store yet.
    pending: RefCell<Option<Pending>>,
}

/// A pair not yet written: used from memory, its write retried.
#[derive(Clone)]
struct Pending {
    access: String,
    refresh: String,
    expires_at_ms: f64,
    moved_to: Option<String>,
    /// The stored refresh token this chain of exchanges replaced: the write lands only over it.
    replaces: String,
}

impl<P: Platform + Clone> PortalTokens<P> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        platform: P,
        store: Rc<dyn FleetStore>,
        prefix: &str,
        member_id: &str,
        worker: &str,
        app: OAuthApp,
        trust: Trust,
        timeout_ms: f64,
        seen: u64,
    ) -> PortalTokens<P> {
        PortalTokens {
            inner: Rc::new(Inner {
                platform,
                store,
                prefix: prefix.to_string(),
                member_id: member_id.to_string(),
                worker: worker.to_string(),
                app,
                trust,
                timeout_ms,
                seen: Cell::new(seen),
                exchanges: Cell::new(0),
                pending: RefCell::new(None),
            }),
        }
    }

    /// Refresh tokens this worker spent.
    pub fn exchanges(&self) -> u64 {
        self.inner.exchanges.get()
    }

    /// Whether a pair from the OAuth server is waiting for its write.
    pub fn unsaved(&self) -> bool {
        self.inner.pending.borrow().is_some()
    }

    /// Writes a pair that could not be written before (the scan calls it). Whether nothing is
    /// left unsaved.
    pub async fn flush(&self) -> Result<bool> {
        let me = &self.inner;
        let Some(p) = me.pending.borrow().clone() else {
            return Ok(true);
        };
        me.save(&p).await
    }

    /// A token newer than the one handed out last: from memory when a pair is waiting for its
    /// write, from the store when another worker renewed it, otherwise by an exchange under
    /// the refresh lease.
    pub async fn renew(&self) -> Result<Token> {
        let me = &self.inner;
        let pending = me.pending.borrow().clone();
        if let Some(p) = pending {
            if !me.save(&p).await.unwrap_or(false) {
                // Still unsaved, and its access token used up: exchange its refresh token
                // (never the stored one, which the OAuth server already took), under the
                // refresh lease this worker kept for it.
                let record = me.current().await?;
                return me.exchange_pending(&record, &p).await;
            }
        }
        let key = record_key(&me.prefix, &me.member_id);
        let lease = refresh_lease(&me.prefix, &me.member_id);
        let give_up = me.platform.now_ms() + refresh_lease_ms(me.timeout_ms) + me.timeout_ms;
        loop {
            let record = me.current().await?;
            if record.generation > me.seen.get() {
                return Ok(me.hand_out(&record));
            }
            let Some(fence) = me.hold_refresh().await? else {
                if me.platform.now_ms() > give_up {
                    return Err(failed(
                        "another worker held the portal's refresh for too long",
                    ));
                }
                me.platform.sleep(REFRESH_POLL_MS, None).await?;
                continue;
            };
            let outcome = me.exchange_under_lease(&key, fence).await;
            if me.pending.borrow().is_none() {
                me.store.release(&lease, &me.worker).await?;
            }
            return outcome;
        }
    }
}

impl<P: Platform + Clone> Inner<P> {
    /// The stored record; gone or stopped are errors.
    async fn current(&self) -> Result<Record> {
        let key = record_key(&self.prefix, &self.member_id);
        let (_, record) = read_record(&*self.store, &key).await?.ok_or_else(|| {
            B24Error::new(
                code::PORTAL_STOPPED,
                "the portal is no longer in the store (uninstalled)",
            )
        })?;
        match stopped_error(&record) {
            Some(e) => Err(e),
            None => Ok(record),
        }
    }

    fn hand_out(&self, record: &Record) -> Token {
        self.seen.set(record.generation);
        Token {
            access: record.access_token.clone(),
            expires_at_ms: Some(record.expires_at_ms),
        }
    }

    /// Takes or renews this worker's lease on the portal's refresh: its fence, `None` while
    /// another worker holds it.
    async fn hold_refresh(&self) -> Result<Option<u64>> {
        let lease = refresh_lease(&self.prefix, &self.member_id);
        let now = self.platform.now_ms();
        self.store
            .lease(&lease, &self.worker, refresh_lease_ms(self.timeout_ms), now)
            .await
    }

    /// One exchange of `refresh` at the record's OAuth server (checked against the trust again:
    /// the record came from a store). A pair for another portal is refused; a good one is kept
    /// (used from memory, its write tried now and retried later) and handed out.
    async fn spend(&self, record: &Record, refresh: &str, replaces: String) -> Result<Token> {
        let oauth = self.oauth(record)?;
        self.exchanges.set(self.exchanges.get() + 1);
        let grant = exchange(
            &self.platform,
            &self.app,
            &oauth,
            refresh,
            self.trust.allow_http,
            self.timeout_ms,
        )
        .await?;
        if grant
            .member_id
            .as_ref()
            .is_some_and(|m| *m != record.member_id)
        {
            return Err(failed("the OAuth server answered for another portal"));
        }
        let token = self.keep(record, grant, replaces);
        let p = self.pending.borrow().clone();
        if let Some(p) = p {
            // A failed write is retried later; the pair is used meanwhile.
            let _ = self.save(&p).await;
        }
        Ok(token)
    }

    fn oauth(&self, record: &Record) -> Result<Origin> {
        self.trust
            .oauth_server(Some(&record.server_endpoint), &record.origin)
            .map_err(|_| {
                failed(
                    "the stored OAuth server is not one the app trusts (oauthServers, portalOAuth)",
                )
            })
    }

    async fn exchange_under_lease(&self, key: &str, fence: u64) -> Result<Token> {
        // Read again under the lease: a renewal that finished just before counts.
        let record = self.current().await?;
        if record.generation > self.seen.get() {
            return Ok(self.hand_out(&record));
        }
        let spent = record.refresh_token.clone();
        match self.spend(&record, &spent, spent.clone()).await {
            Err(e) if e.code == code::INVALID_GRANT => {
                // Dead, unless another exchange may still be in flight (this worker's lease on
                // the refresh ran out and someone took it) or the stored pair moved on.
                if self.hold_refresh().await? != Some(fence) {
                    return Err(failed(
                        "the refresh token was refused after this worker's refresh lease ran out; not stopping the portal",
                    ));
                }
                let stopped = change_record(&*self.store, key, |r| {
                    if r.refresh_token == spent && r.stopped.is_none() {
                        r.stopped = Some(code::INVALID_GRANT.into());
                        return true;
                    }
                    false
                })
                .await?;
                match stopped {
                    Some(r) if r.stopped.is_none() && r.generation > self.seen.get() => {
                        Ok(self.hand_out(&r))
                    }
                    _ => {
                        let _ = self
                            .store
                            .delete(&live_key(&self.prefix, &self.member_id))
                            .await;
                        Err(e)
                    }
                }
            }
            outcome => outcome,
        }
    }

    /// A new pair: kept in memory and written; handed out either way (it is the only valid one).
    fn keep(&self, record: &Record, grant: Grant, replaces: String) -> Token {
        let now = self.platform.now_ms();
        let moved_to = grant
            .portal
            .as_ref()
            .filter(|o| o.host != record.origin.host)
            .map(|o| o.host.clone());
        let p = Pending {
            access: grant.access,
            refresh: grant.refresh,
            expires_at_ms: now + grant.expires_in_s * 1000.0,
            moved_to,
            replaces,
        };
        let token = Token {
            access: p.access.clone(),
            expires_at_ms: Some(p.expires_at_ms),
        };
        *self.pending.borrow_mut() = Some(p);
        token
    }

    /// An unsaved pair whose access token was used up: its refresh token is exchanged (this
    /// worker kept the refresh lease for it).
    async fn exchange_pending(&self, record: &Record, p: &Pending) -> Result<Token> {
        if self.hold_refresh().await?.is_none() {
            return Err(failed(
                "the portal's refresh lease passed to another worker while a pair was unsaved",
            ));
        }
        self.spend(record, &p.refresh, p.replaces.clone()).await
    }

    /// Writes a pending pair over the refresh token it replaces; a stop that a racing exchange
    /// caused is cleared. Whether nothing is left pending (written, or made moot by a newer
    /// install's pair). The refresh lease is kept while the pair is unsaved.
    async fn save(&self, p: &Pending) -> Result<bool> {
        let key = record_key(&self.prefix, &self.member_id);
        let lease = refresh_lease(&self.prefix, &self.member_id);
        let written = change_record(&*self.store, &key, |r| {
            if r.refresh_token != p.replaces {
                return false;
            }
            r.access_token = p.access.clone();
            r.refresh_token = p.refresh.clone();
            r.expires_at_ms = p.expires_at_ms;
            r.generation += 1;
            if r.stopped.as_deref() == Some(code::INVALID_GRANT) {
                r.stopped = None;
            }
            if p.moved_to.is_some() {
                r.moved_to = p.moved_to.clone();
            }
            true
        })
        .await;
        let outcome = match written {
            Err(e) => {
                // Kept: the lease keeps others from spending the stored (already spent) token.
                let _ = self.hold_refresh().await;
                return Err(e);
            }
            Ok(None) => Err(B24Error::new(
                code::PORTAL_STOPPED,
                "the portal was uninstalled during a refresh",
            )),
            Ok(Some(r)) => {
                // Otherwise a newer install replaced the chain: its pair is used from now on.
                if r.refresh_token == p.refresh {
                    // Ours now: the next renewal compares generations from here.
                    self.seen.set(r.generation);
                    if r.stopped.is_none() {
                        self.store
                            .set(&live_key(&self.prefix, &self.member_id), "1".into())
                            .await?;
                    }
                }
                Ok(true)
            }
        };
        *self.pending.borrow_mut() = None;
        let _ = self.store.release(&lease, &self.worker).await;
        outcome
    }
}

impl<P: Platform + Clone> Refresher for PortalTokens<P> {
    fn refresh(&self) -> LocalBoxFuture<'static, Result<Token>> {
        let me = self.clone();
        Box::pin(async move { me.renew().await })
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::core::fleet::store::{Hooked, MemoryFleetStore};
    use crate::core::journal::Store;
    use crate::core::origin::Origin;
    use crate::core::platform::HttpResponse;
    use crate::core::testkit::{block_on, Fake};
    use serde_json::json;
    use std::cell::Cell;

    const MEMBER: &str = "a223c6b3710f85df22e9377d6c4f7553";

    fn record(server: &str) -> Record {
        Record {
            member_id: MEMBER.into(),
            origin: Origin::parse("acme.bitrix24.com", false).unwrap(),
            server_endpoint: server.into(),
            application_token: Some("t".into()),
            access_token: "old-access".into(),
            refresh_token: "old-refresh".into(),
            expires_at_ms: 0.0,
            generation: 0,
            stopped: None,
            moved_to: None,
            plan: None,
        }
    }

    /// One renewal against an OAuth server that answers `answer`; the error and the requests.
    fn renew_with(
        server: &str,
        answer: crate::core::testkit::Reply,
    ) -> (Result<Token>, usize, Record) {
        let store = Rc::new(MemoryFleetStore::default());
        block_on(store.set(&record_key("t/", MEMBER), record(server).to_text())).unwrap();
        let fake = Fake::routed(move |_, _, _, _| answer.clone());
        let tokens = PortalTokens::new(
            fake.clone(),
            store.clone(),
            "t/",
            MEMBER,
            "w1",
            OAuthApp {
                client_id: "app".into(),
                client_secret: "the-secret".into(),
            },
            Trust::default(),
            5000.0,
            0,
        );
        let out = block_on(tokens.renew());
        let sent = fake.seen.borrow().requests.len();
        let (_, stored) = block_on(read_record(&*store, &record_key("t/", MEMBER)))
            .unwrap()
            .unwrap();
        (out, sent, stored)
    }

    fn ok(v: serde_json::Value) -> crate::core::testkit::Reply {
        Ok(HttpResponse {
            status: 200,
            body: v.to_string(),
        })
    }

    fn no_secret(e: &B24Error) {
        let m = e.message();
        assert!(
            !m.contains("the-secret") && !m.contains("old-refresh"),
            "{m}"
        );
    }

    #[test]
    fn a_good_answer_is_stored_before_it_is_used() {
        let (out, sent, stored) = renew_with(
            "https://oauth.bitrix.info/rest/",
            ok(
                json!({"access_token": "new-a", "refresh_token": "new-r", "expires_in": 3600, "member_id": MEMBER, "client_endpoint": "https://acme.bitrix24.com/rest/"}),
            ),
        );
        assert_eq!(out.unwrap().access, "new-a");
        assert_eq!(sent, 1);
        assert_eq!(
            (stored.refresh_token.as_str(), stored.generation),
            ("new-r", 1)
        );
        assert_eq!(stored.moved_to, None);
    }

    #[test]
    fn bad_oauth_answers_store_nothing() {
        for (answer, why) in [
            (
                ok(
                    json!({"access_token": "a", "refresh_token": "r", "member_id": "b223c6b3710f85df22e9377d6c4f7553"}),
                ),
                "another portal",
            ),
            (ok(json!({"access_token": "a"})), "no refresh token"),
            (
                ok(json!({"access_token": "a b", "refresh_token": "r"})),
                "a token with a space",
            ),
            (ok(json!([1, 2])), "not an object"),
            (
                Ok(HttpResponse {
                    status: 200,
                    body: "<html>".into(),
                }),
                "not JSON",
            ),
            (
                Ok(HttpResponse {
                    status: 502,
                    body: "{}".into(),
                }),
                "a server error",
            ),
            (
                Ok(HttpResponse {
                    status: 400,
                    body: json!({"error": "invalid_client"}).to_string(),
                }),
                "the app refused",
            ),
            (
                Err(crate::core::platform::TransportError::Redirect {
                    status: 302,
                    location: Some("https://evil.example/".into()),
                }),
                "a redirect",
            ),
            (
                Err(crate::core::platform::TransportError::Timeout),
                "no answer",
            ),
            (
                Ok(HttpResponse {
                    status: 200,
                    body: format!("{{\"access_token\":\"{}\"}}", "a".repeat(70_000)),
                }),
                "an answer over 64 KiB",
            ),
        ] {
            let (out, sent, stored) = renew_with("https://oauth.bitrix.info/rest/", answer);
            let e = out.expect_err(why);
            assert_eq!(e.code, code::REFRESH_FAILED, "{why}: {e:?}");
            no_secret(&e);
            assert_eq!(sent, 1, "{why}");
            assert_eq!(
                (
                    stored.refresh_token.as_str(),
                    stored.generation,
                    stored.stopped.as_deref()
                ),
                ("old-refresh", 0, None),
                "{why}"
            );
        }
    }

    #[test]
    fn a_refused_refresh_token_stops_the_portal() {
        let (out, _, stored) = renew_with(
            "https://oauth.bitrix.info/rest/",
            Ok(HttpResponse {
                status: 400,
                body: json!({"error": "invalid_grant"}).to_string(),
            }),
        );
        assert_eq!(out.unwrap_err().code, code::INVALID_GRANT);
        assert_eq!(stored.stopped.as_deref(), Some(code::INVALID_GRANT));
    }

    #[test]
    fn an_untrusted_stored_server_gets_nothing() {
        for server in [
            "https://evil.example/rest/",
            "http://oauth.bitrix.info/rest/",
            "oauth.bitrix.info",
            "https://oauth.bitrix.info.evil.example/",
        ] {
            let (out, sent, _) = renew_with(server, ok(json!({})));
            let e = out.expect_err(server);
            assert_eq!(e.code, code::REFRESH_FAILED, "{server}");
            assert_eq!(sent, 0, "{server}: nothing may be sent");
        }
    }

    #[test]
    fn a_renamed_portal_is_kept_as_moved() {
        let (out, _, stored) = renew_with(
            "https://oauth.bitrix.info/rest/",
            ok(
                json!({"access_token": "a", "refresh_token": "r", "client_endpoint": "https://new-name.bitrix24.com/rest/"}),
            ),
        );
        out.unwrap();
        assert_eq!(stored.moved_to.as_deref(), Some("new-name.bitrix24.com"));
    }

    /// A store whose swaps fail while `fail_swaps` is above zero (a store write that fails),
    /// and whose lease calls answer "held by another" while `steal_leases` is set.
    struct Flaky {
        store: Rc<Hooked>,
        fail_swaps: Rc<Cell<u32>>,
        steal_leases: Rc<Cell<bool>>,
    }

    impl Flaky {
        fn new() -> Flaky {
            let store = Rc::new(Hooked::default());
            let (fail_swaps, steal_leases) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
            let f = fail_swaps.clone();
            *store.on_swap.borrow_mut() = Some(Box::new(move |_, _, _| {
                (f.get() > 0).then(|| {
                    f.set(f.get() - 1);
                    Err(B24Error::new(code::STORE_FAILED, "the store failed once"))
                })
            }));
            let s = steal_leases.clone();
            *store.on_lease.borrow_mut() = Some(Box::new(move |_| s.get().then_some(None)));
            Flaky {
                store,
                fail_swaps,
                steal_leases,
            }
        }
    }

    /// An OAuth server with one chain of refresh tokens r0 -> r1 -> ...: each good once.
    fn chain(latest: Rc<Cell<u32>>) -> Fake {
        Fake::routed(move |_, _, body, _| {
            let given = body["refresh_token"].as_str().unwrap_or("");
            let n = latest.get();
            if given != format!("r{n}") {
                return Ok(HttpResponse {
                    status: 400,
                    body: json!({"error": "invalid_grant"}).to_string(),
                });
            }
            latest.set(n + 1);
            ok(json!({
                "access_token": format!("a{}", n + 1),
                "refresh_token": format!("r{}", n + 1),
                "expires_in": 3600,
                "member_id": MEMBER,
            }))
        })
    }

    fn tokens(
        fake: &Fake,
        store: Rc<dyn FleetStore>,
        worker: &str,
        timeout_ms: f64,
    ) -> PortalTokens<Fake> {
        PortalTokens::new(
            fake.clone(),
            store,
            "t/",
            MEMBER,
            worker,
            OAuthApp {
                client_id: "app".into(),
                client_secret: "the-secret".into(),
            },
            Trust::default(),
            timeout_ms,
            0,
        )
    }

    fn stored(store: &dyn FleetStore) -> Record {
        block_on(read_record(store, &record_key("t/", MEMBER)))
            .unwrap()
            .unwrap()
            .1
    }

    fn seeded(store: &dyn FleetStore) {
        let r = Record {
            refresh_token: "r0".into(),
            ..record("https://oauth.bitrix.info/rest/")
        };
        block_on(store.set(&record_key("t/", MEMBER), r.to_text())).unwrap();
        block_on(store.set(&live_key("t/", MEMBER), "1".into())).unwrap();
    }

    /// Issue 18, case 4: the exchange succeeds, the write of the new pair fails; the pair is
    /// used from memory, the spent token is never sent again, and the pair lands later.
    #[test]
    fn a_pair_whose_write_failed_is_used_and_written_later_never_lost() {
        let latest = Rc::new(Cell::new(0));
        let fake = chain(latest.clone());
        let flaky = Flaky::new();
        let store = flaky.store.clone();
        seeded(&*store);
        let t = tokens(&fake, store.clone(), "w1", 5000.0);
        // Every swap fails for a while.
        flaky.fail_swaps.set(10_000);
        assert_eq!(block_on(t.renew()).unwrap().access, "a1");
        assert!(t.unsaved());
        assert_eq!(stored(&*store).refresh_token, "r0", "not written yet");
        // Another worker cannot spend r0 meanwhile: the refresh lease is kept (renewed at every
        // scan's flush, which fails as long as the store does).
        let other = tokens(&fake, store.clone(), "w2", 5000.0);
        let done = Cell::new(false);
        let scans = async {
            while !done.get() {
                assert!(t.flush().await.is_err());
                let _ = fake.sleep(5000.0, None).await;
            }
        };
        let attempt = async {
            let out = other.renew().await;
            done.set(true);
            out
        };
        let (e, ()) = block_on(futures_util::future::join(attempt, scans));
        let e = e.unwrap_err();
        assert_eq!(e.code, code::REFRESH_FAILED, "{e:?}");
        assert_eq!(latest.get(), 1, "r0 was not sent again");
        // a1 used up while the store still fails: r1 (from memory) is exchanged, not r0.
        assert_eq!(block_on(t.renew()).unwrap().access, "a2");
        assert_eq!(latest.get(), 2);
        // The store is back: the scan's flush writes the newest pair.
        flaky.fail_swaps.set(0);
        assert!(block_on(t.flush()).unwrap());
        assert!(!t.unsaved());
        let r = stored(&*store);
        assert_eq!(
            (r.refresh_token.as_str(), r.access_token.as_str()),
            ("r2", "a2")
        );
        assert_eq!(r.stopped, None);
        // And the other worker now takes that pair without an exchange.
        assert_eq!(block_on(other.renew()).unwrap().access, "a2");
        assert_eq!(latest.get(), 2);
        let r0 = fake
            .seen
            .borrow()
            .requests
            .iter()
            .filter(|(_, b)| b["refresh_token"] == json!("r0"))
            .count();
        assert_eq!(r0, 1, "the spent token was sent once, never again");
    }

    /// Issue 18, case 5: an exchange answered after 35 s (timeout 60 s) is not raced by a
    /// second worker: the refresh lease outlives it.
    #[test]
    fn a_slow_oauth_answer_is_not_raced_by_another_worker() {
        let latest = Rc::new(Cell::new(0));
        let fake = chain(latest.clone());
        *fake.latency.borrow_mut() = Box::new(|_| 35_000.0);
        let store = Rc::new(MemoryFleetStore::default());
        seeded(&*store);
        let w1 = tokens(&fake, store.clone(), "w1", 60_000.0);
        let w2 = tokens(&fake, store.clone(), "w2", 60_000.0);
        let f = fake.clone();
        let second = async {
            let _ = f.sleep(31_000.0, None).await;
            w2.renew().await
        };
        let (a, b) = block_on(futures_util::future::join(w1.renew(), second));
        assert_eq!(a.unwrap().access, "a1");
        assert_eq!(b.unwrap().access, "a1", "the second took the first's pair");
        assert_eq!(latest.get(), 1, "one exchange");
        assert_eq!(fake.seen.borrow().requests.len(), 1);
        let r = stored(&*store);
        assert_eq!(
            (r.refresh_token.as_str(), r.stopped.as_deref()),
            ("r1", None)
        );
    }

    /// Issue 18, case 5 (the other half): `invalid_grant` answered after this worker's refresh
    /// lease passed to another (a paused process) does not stop the portal; and a pair saved
    /// after a racing stop clears the stop.
    #[test]
    fn invalid_grant_stops_only_while_no_other_exchange_can_be_in_flight() {
        let latest = Rc::new(Cell::new(5));
        let fake = chain(latest.clone());
        let flaky = Flaky::new();
        let store = flaky.store.clone();
        seeded(&*store);
        let t = tokens(&fake, store.clone(), "w1", 5000.0);
        // The lease is taken, then "another holds it" when re-checked after invalid_grant.
        let steal = flaky.steal_leases.clone();
        *fake.latency.borrow_mut() = Box::new(move |_| {
            steal.set(true);
            0.0
        });
        let e = block_on(t.renew()).unwrap_err();
        assert_eq!(e.code, code::REFRESH_FAILED, "{e:?}");
        assert_eq!(stored(&*store).stopped, None, "not stopped");
        // Now a stop that a racing exchange caused is cleared by the pair that exchange saves.
        flaky.steal_leases.set(false);
        *fake.latency.borrow_mut() = Box::new(|_| 0.0);
        latest.set(0);
        let key = record_key("t/", MEMBER);
        let stopped = Record {
            stopped: Some(code::INVALID_GRANT.into()),
            refresh_token: "r0".into(),
            ..record("https://oauth.bitrix.info/rest/")
        };
        let fresh = tokens(&fake, store.clone(), "w3", 5000.0);
        // Its exchange succeeds, its write fails; meanwhile a racing worker's stop lands over r0
        // (and takes the portal out of the live list).
        flaky.fail_swaps.set(10_000);
        assert_eq!(block_on(fresh.renew()).unwrap().access, "a1");
        flaky.fail_swaps.set(0);
        block_on(store.set(&key, stopped.to_text())).unwrap();
        block_on(store.delete(&live_key("t/", MEMBER))).unwrap();
        // The write, retried, lands over r0 and clears that stop: the portal is live again.
        assert!(block_on(fresh.flush()).unwrap());
        let r = stored(&*store);
        assert_eq!(
            (r.refresh_token.as_str(), r.stopped.as_deref()),
            ("r1", None)
        );
        assert!(block_on(store.get(&live_key("t/", MEMBER)))
            .unwrap()
            .is_some());
    }
}
