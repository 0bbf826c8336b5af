//! `/oauth/token/`: the refresh grant as the Bitrix24 OAuth server answers it. A refresh token
//! is good for one exchange; the new pair keeps the application, user and rights.
//!
//! Two kinds of OAuth server answer it, as in Bitrix24:
//! - the process's **central** server ([`central`]), at the first portal's origin: the
//!   `oauth.bitrix.info` of these portals. It finds the refresh token in whichever portal
//!   issued it and answers for that portal (its `member_id`, its `client_endpoint`), naming
//!   itself in `domain` and `server_endpoint` (`http://ROOT/rest/`). A cloud portal's own
//!   `/oauth/token/` passes the exchange on to it, as the cloud proxies `portal/oauth/token/`.
//! - a **box** portal's own server ([`token`]), config `oauth: "portal"`, at its own origin,
//!   for its own grants only, naming itself (`http://PORTAL/oauth/`).
//!
//! Errors, all HTTP 400 (the documentation gives no status; RFC 6749's default):
//! `unsupported_grant_type`, `invalid_request` (no refresh token), `invalid_grant` (unknown,
//! spent or revoked refresh token, a deleted portal), `invalid_client` (another app's client
//! id; once the app has a `client_secret` registered, a missing or wrong client id or secret).
//! A refused exchange does not spend the token.

use crate::error::ApiError;
use crate::params::Params;
use crate::portals::oauth_server;
use crate::state::{OAuthMode, Shared};
use serde_json::{json, Value};
use std::sync::Arc;

fn oauth(code: &str, why: &str) -> ApiError {
    ApiError::new(400, code, why)
}

/// The request's refresh token, once the grant type is checked.
fn refresh_token(params: &Params) -> Result<String, ApiError> {
    match params.str("grant_type").as_deref() {
        Some("refresh_token") => {}
        _ => {
            return Err(oauth(
                "unsupported_grant_type",
                "Only grant_type=refresh_token is supported",
            ))
        }
    }
    params
        .str("refresh_token")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| oauth("invalid_request", "refresh_token is required"))
}

/// The OAuth server that answers: what it calls itself.
struct Server {
    domain: String,
    endpoint: String,
}

impl Server {
    fn central(at: &Shared) -> Server {
        let origin = oauth_server(at);
        Server {
            domain: origin
                .split_once("://")
                .map_or(origin.as_str(), |(_, host)| host)
                .to_string(),
            endpoint: format!("{origin}/rest/"),
        }
    }

    fn portal(p: &Shared) -> Server {
        Server {
            domain: p.domain.clone(),
            endpoint: format!("{}/oauth/", p.base_url()),
        }
    }
}

/// The exchange at `portal`, when it issued `refresh`; `None` when the token is not its.
fn exchange(
    portal: &Shared,
    params: &Params,
    refresh: &str,
    server: &Server,
) -> Option<Result<Value, ApiError>> {
    let now = portal.clock.now_ms();
    let mut st = portal.lock();
    let grant = st.grants.get(refresh).cloned()?;
    let app = &st.apps[grant.app as usize];
    let given_id = params.str("client_id").filter(|c| !c.is_empty());
    let refused = if st.health.deleted {
        Some(oauth("invalid_grant", "The portal was deleted"))
    } else if given_id.as_ref().is_some_and(|c| *c != app.client_id) {
        Some(oauth(
            "invalid_client",
            "The refresh token belongs to another application",
        ))
    } else if let Some(secret) = &app.client_secret {
        let given = params.str("client_secret").unwrap_or_default();
        (given_id.is_none() || given != *secret)
            .then(|| oauth("invalid_client", "Wrong client_id or client_secret"))
    } else {
        None
    };
    if let Some(e) = refused {
        st.stats.refreshes_refused += 1;
        return Some(Err(e));
    }
    st.grants.remove(refresh);
    st.stats.refreshes += 1;
    let (access, refresh) = st.issue_token(grant.app, grant.user_id, grant.admin, now);
    Some(Ok(json!({
        "access_token": access,
        "expires": now.div_euclid(1000) + st.config.token_ttl_s,
        "expires_in": st.config.token_ttl_s,
        "scope": "crm,event",
        "domain": server.domain,
        "server_endpoint": server.endpoint,
        "status": "L",
        "client_endpoint": format!("{}/rest/", portal.base_url()),
        "member_id": portal.member_id,
        "user_id": grant.user_id,
        "refresh_token": refresh,
        "application_token": st.apps[grant.app as usize].application_token,
    })))
}

/// A refresh token no portal knows (never issued, spent, revoked, uninstalled), counted as
/// refused at the portal whose origin received it.
fn unknown(at: &Shared) -> ApiError {
    let mut st = at.lock();
    st.stats.refreshes_refused += 1;
    if st.health.deleted {
        return oauth("invalid_grant", "The portal was deleted");
    }
    oauth("invalid_grant", "Invalid refresh token")
}

/// The exchange at `shared`'s own OAuth server (a box portal's), for the refresh tokens it
/// issued, whatever its `oauth` config: the answer names the portal's `/oauth/`.
pub fn token(shared: &Shared, params: &Params) -> Result<Value, ApiError> {
    let refresh = refresh_token(params)?;
    exchange(shared, params, &refresh, &Server::portal(shared))
        .unwrap_or_else(|| Err(unknown(shared)))
}

/// The exchange at the process's central OAuth server, reached through `at` (the first portal,
/// or a cloud portal passing it on): the refresh token of any portal of the process.
pub fn central(at: &Shared, params: &Params) -> Result<Value, ApiError> {
    let refresh = refresh_token(params)?;
    let server = Server::central(at);
    let portals = at.registry.all();
    let found = if portals.is_empty() {
        // A portal outside any registry (a test's own): its own grants.
        exchange(at, params, &refresh, &server)
    } else {
        portals
            .iter()
            .find_map(|p| exchange(p, params, &refresh, &server))
    };
    found.unwrap_or_else(|| Err(unknown(at)))
}

/// `/oauth/token/` at `at`'s origin: the central server at the first portal's origin and
/// through every cloud portal; a box portal's own server elsewhere. The first portal as a box
/// serves both: its own grants as itself, every other as the central server.
pub fn serve(at: &Arc<Shared>, params: &Params) -> Result<Value, ApiError> {
    let root = at.registry.root().is_none_or(|r| Arc::ptr_eq(&r, at));
    if at.lock().config.oauth == OAuthMode::Cloud {
        return central(at, params);
    }
    if !root {
        return token(at, params);
    }
    let refresh = refresh_token(params)?;
    match exchange(at, params, &refresh, &Server::portal(at)) {
        Some(answer) => answer,
        None => central(at, params),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh_params(token: &str, extra: &[(&str, &str)]) -> Params {
        let mut v = json!({ "grant_type": "refresh_token", "refresh_token": token });
        for (k, x) in extra {
            v[*k] = json!(x);
        }
        Params::from_value(v)
    }

    #[test]
    fn a_portal_outside_any_registry_refreshes_its_own_grants() {
        // As the library's own tests use it: portals made with `Shared::new`/`sibling`, never
        // added to the registry.
        let p = Shared::new("p0.bitrix24.com".into(), true);
        let q = Shared::sibling(&p, "p1.bitrix24.com".into());
        let now = p.clock.now_ms();
        let (_, r1) = {
            let mut st = p.lock();
            let app = st.app("app.x");
            st.apps[app as usize].client_secret = Some("s".into());
            st.issue_token(app, 2, false, now)
        };
        let wrong = token(&p, &refresh_params(&r1, &[("client_id", "app.x")])).unwrap_err();
        assert_eq!(wrong.body()["error"], json!("invalid_client"));
        assert_eq!(
            token(&q, &refresh_params(&r1, &[])).unwrap_err().body()["error"],
            json!("invalid_grant")
        );
        let ok = token(
            &p,
            &refresh_params(&r1, &[("client_id", "app.x"), ("client_secret", "s")]),
        )
        .unwrap();
        assert_eq!(ok["member_id"], json!(p.member_id));
        assert_eq!(
            ok["server_endpoint"],
            json!("https://p0.bitrix24.com/oauth/")
        );
        assert_eq!(ok["user_id"], json!(2));
        let r2 = ok["refresh_token"].as_str().unwrap();
        let again = central(
            &p,
            &refresh_params(r2, &[("client_id", "app.x"), ("client_secret", "s")]),
        )
        .unwrap();
        assert_eq!(
            again["server_endpoint"],
            json!("https://p0.bitrix24.com/rest/")
        );
        assert_eq!(
            token(&p, &refresh_params(r2, &[])).unwrap_err().body()["error"],
            json!("invalid_grant")
        );
        let st = p.lock();
        assert_eq!((st.stats.refreshes, st.stats.refreshes_refused), (2, 2));
    }
}
