//! `/oauth/token/`: the refresh grant as the Bitrix24 OAuth server answers it. A refresh token
//! is good for one exchange; the new pair keeps the application, user and rights.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::Shared;
use serde_json::{json, Value};

pub fn token(shared: &Shared, params: &Params) -> Result<Value, ApiError> {
    let oauth = |code: &str, why: &str| ApiError::new(400, code, why);
    match params.str("grant_type").as_deref() {
        Some("refresh_token") => {}
        _ => {
            return Err(oauth(
                "unsupported_grant_type",
                "Only grant_type=refresh_token is supported",
            ))
        }
    }
    let refresh = params
        .str("refresh_token")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| oauth("invalid_request", "refresh_token is required"))?;
    let now = shared.clock.now_ms();
    let mut st = shared.lock();
    if st.health.deleted {
        st.stats.refreshes_refused += 1;
        return Err(oauth("invalid_grant", "The portal was deleted"));
    }
    let Some(grant) = st.grants.get(&refresh).cloned() else {
        st.stats.refreshes_refused += 1;
        return Err(oauth("invalid_grant", "Invalid refresh token"));
    };
    let client_id = st.apps[grant.app as usize].client_id.clone();
    if let Some(given) = params.str("client_id").filter(|c| !c.is_empty()) {
        if given != client_id {
            return Err(oauth(
                "invalid_client",
                "The refresh token belongs to another application",
            ));
        }
    }
    st.grants.remove(&refresh);
    st.stats.refreshes += 1;
    let (access, refresh) = st.issue_token(grant.app, grant.user_id, grant.admin, now);
    let base = shared.base_url();
    Ok(json!({
        "access_token": access,
        "expires": now.div_euclid(1000) + st.config.token_ttl_s,
        "expires_in": st.config.token_ttl_s,
        "scope": "crm,event",
        "domain": shared.domain,
        "server_endpoint": format!("{base}/oauth/"),
        "status": "L",
        "client_endpoint": format!("{base}/rest/"),
        "member_id": shared.member_id,
        "user_id": grant.user_id,
        "refresh_token": refresh,
        "application_token": st.apps[grant.app as usize].application_token,
    }))
}
