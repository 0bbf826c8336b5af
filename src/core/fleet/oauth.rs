//! A portal's tokens in the fleet, renewed on the server side: through the portal's OAuth
//! server (`server_endpoint`) with the app's client id and secret, once per refresh token across
//! every worker that shares the store. A refresh token is good for one exchange, so the
//! exchange is made only under the portal's refresh lease, only if the stored pair is still the
//! one this worker last saw (otherwise another worker already renewed it: that pair is used),
//! and the new pair is written to the store before anyone uses it. A refused refresh token
//! (`invalid_grant`) stops the portal, unless the store shows another worker renewed meanwhile.

use super::super::auth::{Refresher, Token};
use super::super::error::{code, B24Error, Result};
use super::super::joint::LocalBoxFuture;
use super::super::origin::host_allowed;
use super::super::platform::{HttpRequest, Platform, TransportError};
use super::install::{member_id, Trust};
use super::record::Record;
use super::store::FleetStore;
use crate::core::text::concat;
use std::cell::Cell;
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

/// How long a worker may hold a portal's refresh lease (one exchange, with its timeout).
pub const REFRESH_LEASE_MS: f64 = 30_000.0;
/// How often a worker waiting for another's refresh looks at the store again.
const REFRESH_POLL_MS: f64 = 200.0;

/// The store key of a portal's record, and of its refresh lease.
pub fn record_key(prefix: &str, member_id: &str) -> String {
    concat(&[prefix, "portal/", member_id])
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
/// when another writer changes it meanwhile). `None` when the record is gone (uninstalled).
pub async fn change_record(
    store: &dyn FleetStore,
    key: &str,
    change: impl Fn(&mut Record),
) -> Result<Option<Record>> {
    for _ in 0..8 {
        let Some((text, mut record)) = read_record(store, key).await? else {
            return Ok(None);
        };
        change(&mut record);
        if store.swap(key, Some(&text), Some(record.to_text())).await? {
            return Ok(Some(record));
        }
    }
    Err(B24Error::new(
        code::STORE_FAILED,
        "the portal record kept changing under a write",
    ))
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
}

/// The pair an exchange brought.
struct Pair {
    access: String,
    refresh: String,
    expires_in_s: f64,
    moved_to: Option<String>,
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
            }),
        }
    }

    /// Refresh tokens this worker spent.
    pub fn exchanges(&self) -> u64 {
        self.inner.exchanges.get()
    }

    /// A token newer than the one handed out last: from the store when another worker renewed
    /// it, otherwise by an exchange under the refresh lease.
    pub async fn renew(&self) -> Result<Token> {
        let me = &self.inner;
        let key = record_key(&me.prefix, &me.member_id);
        let lease = refresh_lease(&me.prefix, &me.member_id);
        let give_up = me.platform.now_ms() + REFRESH_LEASE_MS + me.timeout_ms;
        loop {
            let record = me.current(&key).await?;
            if record.generation > me.seen.get() {
                return Ok(me.hand_out(&record));
            }
            let now = me.platform.now_ms();
            if me
                .store
                .lease(&lease, &me.worker, REFRESH_LEASE_MS, now)
                .await?
                .is_none()
            {
                if now > give_up {
                    return Err(failed(
                        "another worker held the portal's refresh for too long",
                    ));
                }
                me.platform.sleep(REFRESH_POLL_MS, None).await?;
                continue;
            }
            let outcome = me.exchange_under_lease(&key).await;
            me.store.release(&lease, &me.worker).await?;
            return outcome;
        }
    }
}

impl<P: Platform + Clone> Inner<P> {
    /// The stored record; gone or stopped are errors.
    async fn current(&self, key: &str) -> Result<Record> {
        let (_, record) = read_record(&*self.store, key).await?.ok_or_else(|| {
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

    async fn exchange_under_lease(&self, key: &str) -> Result<Token> {
        // Read again under the lease: a renewal that finished just before counts.
        let record = self.current(key).await?;
        if record.generation > self.seen.get() {
            return Ok(self.hand_out(&record));
        }
        let spent = record.refresh_token.clone();
        match self.exchange(&record).await {
            Ok(pair) => {
                let now = self.platform.now_ms();
                let saved = change_record(&*self.store, key, |r| {
                    r.access_token = pair.access.clone();
                    r.refresh_token = pair.refresh.clone();
                    r.expires_at_ms = now + pair.expires_in_s * 1000.0;
                    r.generation += 1;
                    if pair.moved_to.is_some() {
                        r.moved_to = pair.moved_to.clone();
                    }
                })
                .await?
                .ok_or_else(|| {
                    B24Error::new(
                        code::PORTAL_STOPPED,
                        "the portal was uninstalled during a refresh",
                    )
                })?;
                Ok(self.hand_out(&saved))
            }
            Err(e) if e.code == code::INVALID_GRANT => {
                // Dead, unless the stored pair moved on (another worker, a new install).
                let stopped = change_record(&*self.store, key, |r| {
                    if r.refresh_token == spent {
                        r.stopped = Some(code::INVALID_GRANT.into());
                    }
                })
                .await?;
                match stopped {
                    Some(r) if r.stopped.is_none() && r.generation > self.seen.get() => {
                        Ok(self.hand_out(&r))
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// One exchange at the OAuth server, which must be the portal itself or one the app trusts
    /// (the record came from a store, and the refresh token and secret go where it says).
    async fn exchange(&self, record: &Record) -> Result<Pair> {
        let server = &record.server_endpoint;
        let after = server
            .strip_prefix("https://")
            .or_else(|| server.strip_prefix("http://"))
            .ok_or_else(|| failed("the stored server_endpoint is not a URL"))?;
        let host = after.split('/').next().unwrap_or("");
        let scheme = server.get(..server.len() - after.len()).unwrap_or("");
        let base = concat(&[scheme, host]);
        let same = base == record.origin.origin();
        let https = server.starts_with("https://");
        if !(same || (https && host_allowed(host, &self.trust.oauth_servers))) {
            return Err(failed(
                "the stored server_endpoint is neither the portal nor a trusted OAuth server",
            ));
        }
        let mut url = concat(&[&base, "/oauth/token/?grant_type=refresh_token&client_id="]);
        super::super::args::url_encode(&mut url, &self.app.client_id);
        url.push_str("&client_secret=");
        super::super::args::url_encode(&mut url, &self.app.client_secret);
        url.push_str("&refresh_token=");
        super::super::args::url_encode(&mut url, &record.refresh_token);
        self.exchanges.set(self.exchanges.get() + 1);
        let answer = self
            .platform
            .send(
                HttpRequest {
                    url: &url,
                    body: None,
                    timeout_ms: self.timeout_ms,
                },
                None,
            )
            .await
            .map_err(|e| match e {
                TransportError::Timeout => failed("the OAuth server did not answer in time"),
                TransportError::Redirect { .. } => {
                    failed("the OAuth server answered with a redirect (not followed)")
                }
                _ => failed("the OAuth server could not be reached"),
            })?;
        let body = self
            .platform
            .parse(&answer.body)
            .ok_or_else(|| failed("the OAuth server's answer is not JSON"))?;
        let text = |k: &str| P::field(&body, k).and_then(|v| P::text(&v));
        if let Some(error) = text("error") {
            return Err(if error == code::INVALID_GRANT {
                B24Error::new(
                    code::INVALID_GRANT,
                    "the OAuth server refused the refresh token (spent, expired or revoked)",
                )
                .with_status(answer.status)
            } else {
                failed("the OAuth server refused the refresh").with_status(answer.status)
            });
        }
        if answer.status != 200 {
            return Err(failed("the OAuth server failed").with_status(answer.status));
        }
        let token = |k: &str| {
            text(k)
                .filter(|t| {
                    !t.is_empty() && t.len() <= 512 && t.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| failed("the OAuth server's answer lacks a usable token"))
        };
        let (access, refresh) = (token("access_token")?, token("refresh_token")?);
        if let Some(m) = text("member_id") {
            if member_id(Some(&m))? != record.member_id {
                return Err(failed("the OAuth server answered for another portal"));
            }
        }
        let expires_in_s = P::field(&body, "expires_in")
            .and_then(|v| {
                P::number(&v)
                    .or_else(|| P::text(&v).and_then(|t| t.parse::<u32>().ok().map(f64::from)))
            })
            .filter(|e| *e >= 1.0 && *e <= super::install::MAX_EXPIRES_IN_S)
            .unwrap_or(3600.0);
        // A portal renamed: the OAuth server names its new REST address.
        let moved_to = text("client_endpoint").and_then(|c| {
            let host = c
                .strip_prefix("https://")?
                .split('/')
                .next()?
                .to_ascii_lowercase();
            (host != record.origin.host).then_some(host)
        });
        Ok(Pair {
            access,
            refresh,
            expires_in_s,
            moved_to,
        })
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
    use crate::core::fleet::store::MemoryFleetStore;
    use crate::core::journal::Store;
    use crate::core::origin::Origin;
    use crate::core::platform::HttpResponse;
    use crate::core::testkit::{block_on, Fake};
    use serde_json::json;

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
}
