//! Many portals in one emulator: each its own origin, member_id, queue, limits and tokens; the
//! install and uninstall events as the portal posts them; a deleted portal, revoked tokens, a
//! slow portal; single-use refresh tokens per portal.

mod common;

use common::{receiver, Emu, Resp};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

type Inbox = tokio::sync::mpsc::UnboundedReceiver<(String, HashMap<String, String>)>;

async fn next(rx: &mut Inbox) -> HashMap<String, String> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("receiver open")
        .1
}

async fn portals(emu: &Emu, body: Value) -> Vec<Value> {
    emu.post("portals", body).await["portals"]
        .as_array()
        .expect("portals")
        .clone()
}

fn origin(p: &Value) -> String {
    p["origin"].as_str().expect("origin").to_string()
}

async fn install(emu: &Emu, at: &str, handler: &str) -> Resp {
    emu.ctl_at(
        at,
        Method::POST,
        "install",
        Some(json!({ "client_id": "app.fleet", "handler": handler })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_are_separate_origins_with_their_own_state() {
    let emu = Emu::start();
    let made = portals(
        &emu,
        json!({ "count": 3, "config": { "rate_limit": "enterprise" } }),
    )
    .await;
    assert_eq!(made.len(), 3);
    let origins: HashSet<String> = made.iter().map(origin).collect();
    let members: HashSet<&str> = made
        .iter()
        .map(|p| p["member_id"].as_str().unwrap())
        .collect();
    assert_eq!(origins.len(), 3);
    assert_eq!(members.len(), 3);
    assert!(!origins.contains(&emu.base));
    // The list holds the first portal and the new ones, from any of them.
    let listed = emu
        .ctl_at(&origin(&made[1]), Method::GET, "portals", None)
        .await;
    assert_eq!(listed.body["portals"].as_array().unwrap().len(), 4);
    assert_eq!(listed.body["portals"][0]["origin"], json!(emu.base));
    // Config is per portal.
    let c = emu
        .ctl_at(&origin(&made[0]), Method::GET, "config", None)
        .await;
    assert_eq!(c.body["rate_limit"]["burst"], json!(250.0));
    assert_eq!(emu.get("config").await["rate_limit"]["burst"], json!(50.0));

    // A token is good on its own portal only; queues are separate.
    let (a, b) = (origin(&made[0]), origin(&made[1]));
    let ta = emu
        .ctl_at(&a, Method::POST, "token", Some(json!({})))
        .await
        .body;
    let ta = ta["access_token"].as_str().unwrap().to_string();
    emu.call_at(&a, "profile", &ta, json!({})).await.ok();
    emu.call_at(&b, "profile", &ta, json!({}))
        .await
        .err(401, "invalid_token");
    emu.call_at(
        &a,
        "event.bind",
        &ta,
        json!({ "event": "ONCRMDEALUPDATE", "event_type": "offline" }),
    )
    .await
    .ok();
    emu.ctl_at(
        &a,
        Method::POST,
        "trigger",
        Some(json!({ "event": "ONCRMDEALUPDATE", "data": { "FIELDS": { "ID": "7" } } })),
    )
    .await;
    let qa = emu.ctl_at(&a, Method::GET, "queue", None).await.body;
    let qb = emu.ctl_at(&b, Method::GET, "queue", None).await.body;
    assert_eq!(qa.as_array().unwrap().len(), 1);
    assert_eq!(qb.as_array().unwrap().len(), 0);

    // The clock is shared: moving it on one portal expires every portal's tokens.
    let tb = emu
        .ctl_at(&b, Method::POST, "token", Some(json!({})))
        .await
        .body;
    let tb = tb["access_token"].as_str().unwrap().to_string();
    emu.advance(3601.0).await;
    emu.call_at(&a, "profile", &ta, json!({}))
        .await
        .err(401, "expired_token");
    emu.call_at(&b, "profile", &tb, json!({}))
        .await
        .err(401, "expired_token");

    // Worst values: nothing is made from a bad request.
    for bad in [
        json!({ "count": 0 }),
        json!({ "count": 1001 }),
        json!({ "count": "3" }),
        json!({ "config": { "rate_limit": "gold" } }),
        json!({ "config": { "nonsense": 1 } }),
        json!({ "config": { "oauth": "box" } }),
    ] {
        let r = emu
            .ctl_raw(Method::POST, "portals", Some(bad.clone()))
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    assert_eq!(
        emu.get("portals").await["portals"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_uninstall_send_the_portals_events() {
    let emu = Emu::start();
    let made = portals(&emu, json!({ "count": 2 })).await;
    let (url, mut rx) = receiver().await;
    let at = origin(&made[0]);
    let r = install(&emu, &at, &url).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["delivered"], json!(true));
    let first_token = r.body["application_token"].as_str().unwrap().to_string();
    let form = next(&mut rx).await;
    assert_eq!(form["event"], "ONAPPINSTALL");
    assert_eq!(form["data[INSTALLED]"], "Y");
    assert_eq!(form["data[VERSION]"], "1");
    assert_eq!(
        form["auth[member_id]"],
        made[0]["member_id"].as_str().unwrap()
    );
    assert_eq!(form["auth[domain]"], made[0]["domain"].as_str().unwrap());
    assert_eq!(form["auth[client_endpoint]"], format!("{at}/rest/"));
    // A cloud portal names the process's central OAuth server (at the first portal's origin).
    assert_eq!(form["auth[server_endpoint]"], format!("{}/rest/", emu.base));
    assert_eq!(form["auth[expires_in]"], "3600");
    assert_eq!(form["auth[status]"], "F");
    assert_eq!(
        form["auth[application_token]"],
        r.body["application_token"].as_str().unwrap()
    );
    let access = form["auth[access_token]"].clone();
    let refresh = form["auth[refresh_token]"].clone();
    emu.call_at(&at, "profile", &access, json!({})).await.ok();
    emu.call_at(
        &at,
        "event.bind",
        &access,
        json!({ "event": "ONCRMDEALUPDATE", "event_type": "offline" }),
    )
    .await
    .ok();
    emu.ctl_at(
        &at,
        Method::POST,
        "trigger",
        Some(json!({ "event": "ONCRMDEALUPDATE", "data": { "FIELDS": { "ID": "7" } } })),
    )
    .await;

    // Uninstall: the event carries the application token and no access token; the app's
    // tokens, bindings and queued rows are gone.
    let r = emu
        .ctl_at(
            &at,
            Method::POST,
            "uninstall",
            Some(json!({ "client_id": "app.fleet", "handler": url })),
        )
        .await;
    assert_eq!(r.body["delivered"], json!(true), "{r:?}");
    let form = next(&mut rx).await;
    assert_eq!(form["event"], "ONAPPUNINSTALL");
    assert_eq!(form["data[CLEAN]"], "1");
    assert_eq!(
        form["auth[member_id]"],
        made[0]["member_id"].as_str().unwrap()
    );
    assert!(form.contains_key("auth[application_token]"));
    assert!(!form.contains_key("auth[access_token]"));
    assert!(!form.contains_key("auth[refresh_token]"));
    emu.call_at(&at, "profile", &access, json!({}))
        .await
        .err(401, "invalid_token");
    let q = emu.ctl_at(&at, Method::GET, "queue", None).await.body;
    assert_eq!(q.as_array().unwrap().len(), 0);
    let spent = emu
        .send(emu.http.get(format!(
            "{at}/oauth/token/?grant_type=refresh_token&refresh_token={refresh}"
        )))
        .await;
    assert_eq!(spent.body["error"], json!("invalid_grant"));
    // Installing again gives a new application token.
    let again = install(&emu, &at, &url).await;
    let form = next(&mut rx).await;
    let renewed = again.body["application_token"].as_str().unwrap();
    assert_ne!(renewed, first_token);
    assert_eq!(form["auth[application_token]"], renewed);

    // Handlers off this machine are refused; a handler that is down is reported, not retried.
    let r = install(&emu, &at, "https://example.com/hook").await;
    assert_eq!(r.status, 400);
    let r = install(&emu, &at, "http://127.0.0.1:1/hook").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["delivered"], json!(false));
    let r = emu
        .ctl_at(
            &origin(&made[1]),
            Method::POST,
            "uninstall",
            Some(json!({ "client_id": "never.installed", "handler": url })),
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_portal_revoked_tokens_and_a_slow_portal_affect_only_that_portal() {
    let emu = Emu::start();
    let made = portals(&emu, json!({ "count": 3 })).await;
    let (a, b, c) = (origin(&made[0]), origin(&made[1]), origin(&made[2]));
    let mut tokens = Vec::new();
    for at in [&a, &b, &c] {
        let t = emu
            .ctl_at(at, Method::POST, "token", Some(json!({})))
            .await
            .body;
        tokens.push((
            t["access_token"].as_str().unwrap().to_string(),
            t["refresh_token"].as_str().unwrap().to_string(),
        ));
    }
    // Deleted: every call and every refresh is refused; the others go on.
    let h = emu
        .ctl_at(&a, Method::POST, "portal", Some(json!({ "deleted": true })))
        .await;
    assert_eq!(h.body["deleted"], json!(true));
    emu.call_at(&a, "profile", &tokens[0].0, json!({}))
        .await
        .err(500, "PORTAL_DELETED");
    let r = emu
        .send(emu.http.get(format!(
            "{a}/oauth/token/?grant_type=refresh_token&refresh_token={}",
            tokens[0].1
        )))
        .await;
    assert_eq!(r.body["error"], json!("invalid_grant"));
    emu.call_at(&b, "profile", &tokens[1].0, json!({}))
        .await
        .ok();

    // Revoked: the portal's tokens stop working, access and refresh alike.
    emu.ctl_at(&b, Method::POST, "portal", Some(json!({ "revoke": true })))
        .await;
    emu.call_at(&b, "profile", &tokens[1].0, json!({}))
        .await
        .err(401, "invalid_token");
    let r = emu
        .send(emu.http.get(format!(
            "{b}/oauth/token/?grant_type=refresh_token&refresh_token={}",
            tokens[1].1
        )))
        .await;
    assert_eq!(r.body["error"], json!("invalid_grant"));
    emu.call_at(&c, "profile", &tokens[2].0, json!({}))
        .await
        .ok();

    // Slow: answers after the delay, correctly.
    emu.ctl_at(&c, Method::POST, "portal", Some(json!({ "slow_ms": 300 })))
        .await;
    let t0 = Instant::now();
    emu.call_at(&c, "profile", &tokens[2].0, json!({}))
        .await
        .ok();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let g = emu.ctl_at(&c, Method::GET, "portal", None).await.body;
    assert_eq!(g["slow_ms"], json!(300));
    assert_eq!(g["deleted"], json!(false));

    // Worst values are refused whole.
    for bad in [
        json!({ "deleted": "yes" }),
        json!({ "slow_ms": -1 }),
        json!({ "slow_ms": 60_001 }),
        json!({ "revoke": 1 }),
    ] {
        let r = emu
            .ctl_at(&c, Method::POST, "portal", Some(bad.clone()))
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    assert_eq!(
        emu.ctl_at(&c, Method::GET, "portal", None).await.body["slow_ms"],
        json!(300)
    );
    // Restored, a deleted portal answers again.
    emu.ctl_at(
        &a,
        Method::POST,
        "portal",
        Some(json!({ "deleted": false })),
    )
    .await;
    emu.call_at(&a, "profile", &tokens[0].0, json!({}))
        .await
        .ok();
}
