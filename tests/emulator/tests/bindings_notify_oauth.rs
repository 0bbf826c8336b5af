//! `event.bind` / `event.unbind` / `event.get` / `events`, the onOfflineEvent signal and the
//! OAuth refresh grant.

mod common;

use common::{receiver, Emu};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

async fn bind(emu: &Emu, token: &str, p: Value) -> common::Resp {
    emu.call("event.bind", token, p).await
}

#[tokio::test]
async fn bind_rules_and_errors() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let a = emu.admin().await;
    let user = emu
        .token_with(json!({ "user_id": 5, "admin": false }))
        .await
        .access;

    assert_eq!(
        bind(
            &emu,
            &a,
            json!({ "event": "onCrmDealAdd", "event_type": "offline" })
        )
        .await
        .ok(),
        &json!(true)
    );
    let dup = bind(
        &emu,
        &a,
        json!({ "event": "ONCRMDEALADD", "event_type": "offline" }),
    )
    .await;
    dup.err(400, "ERROR_CORE");
    assert!(dup.body["error_description"]
        .as_str()
        .unwrap()
        .contains("Unable to set event handler"));
    // Another connector is another binding; a handler is ignored for offline.
    bind(
        &emu,
        &a,
        json!({ "event": "ONCRMDEALADD", "event_type": "offline", "auth_connector": "c", "handler": "http://ignored/" }),
    )
    .await
    .ok();
    bind(
        &emu,
        &a,
        json!({ "event": "ONNOSUCHEVENT", "event_type": "offline" }),
    )
    .await
    .err(400, "ERROR_EVENT_NOT_FOUND");
    bind(&emu, &a, json!({ "event_type": "offline" }))
        .await
        .err(400, "ERROR_ARGUMENT");
    bind(
        &emu,
        &a,
        json!({ "event": "ONCRMDEALUPDATE", "event_type": "sometimes" }),
    )
    .await
    .err(400, "ERROR_ARGUMENT");
    // Offline binding needs an administrator.
    let r = bind(
        &emu,
        &user,
        json!({ "event": "ONCRMDEALUPDATE", "event_type": "offline" }),
    )
    .await;
    r.err(403, "ACCESS_DENIED");
    assert!(r.body["error_description"]
        .as_str()
        .unwrap()
        .contains("Offline events binding requires administrator"));
    // ONOFFLINEEVENT itself cannot be bound offline.
    bind(
        &emu,
        &a,
        json!({ "event": "ONOFFLINEEVENT", "event_type": "offline" }),
    )
    .await
    .err(400, "ERROR_ARGUMENT");
    // Online: a handler is required; the same handler twice is an error.
    bind(&emu, &a, json!({ "event": "ONCRMDEALUPDATE" }))
        .await
        .err(400, "ERROR_ARGUMENT");
    bind(
        &emu,
        &a,
        json!({ "event": "ONCRMDEALUPDATE", "handler": "https://app.example/h" }),
    )
    .await
    .ok();
    bind(
        &emu,
        &a,
        json!({ "event": "ONCRMDEALUPDATE", "event_type": "online", "handler": "https://app.example/h" }),
    )
    .await
    .err(400, "ERROR_CORE");
    // A non-admin may bind online for himself, not with another user's auth_type.
    bind(
        &emu,
        &user,
        json!({ "event": "ONCRMLEADADD", "handler": "https://app.example/u" }),
    )
    .await
    .ok();
    bind(
        &emu,
        &user,
        json!({ "event": "ONCRMLEADADD", "handler": "https://app.example/u2", "auth_type": 1 }),
    )
    .await
    .err(403, "ACCESS_DENIED");

    let got = emu.call("event.get", &a, json!({})).await;
    assert_eq!(
        got.ok(),
        &json!([
            { "event": "ONCRMDEALADD", "connector_id": "", "offline": 1 },
            { "event": "ONCRMDEALADD", "connector_id": "c", "offline": 1 },
            { "event": "ONCRMDEALUPDATE", "handler": "https://app.example/h", "auth_type": "0", "offline": 0 },
            { "event": "ONCRMLEADADD", "handler": "https://app.example/u", "auth_type": "0", "offline": 0 },
        ])
    );
    // Another application sees only its own bindings.
    let other = emu
        .token_with(json!({ "client_id": "other.app" }))
        .await
        .access;
    assert_eq!(
        emu.call("event.get", &other, json!({})).await.ok(),
        &json!([])
    );

    let events = emu.call("events", &a, json!({})).await;
    let names = events.ok().as_array().unwrap();
    for n in ["ONOFFLINEEVENT", "ONCRMDEALADD", "ONCRMCOMPANYDELETE"] {
        assert!(names.contains(&json!(n)), "{n} in {names:?}");
    }
}

#[tokio::test]
async fn unbind_removes_the_binding_of_the_connector() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let a = emu.admin().await;
    emu.bind_offline(&a, "ONCRMDEALADD", None).await;
    emu.bind_offline(&a, "ONCRMDEALADD", Some("c")).await;
    let unbind = |p: Value| emu.call("event.unbind", &a, p);
    let r = unbind(json!({ "event": "ONCRMDEALADD", "event_type": "offline" })).await;
    assert_eq!(r.ok(), &json!({ "count": 1 }));
    let r = unbind(json!({ "event": "ONCRMDEALADD", "event_type": "offline" })).await;
    assert_eq!(r.ok(), &json!({ "count": 0 }));
    unbind(json!({ "event_type": "offline" }))
        .await
        .err(400, "ERROR_ARGUMENT");
    let user = emu
        .token_with(json!({ "user_id": 5, "admin": false }))
        .await
        .access;
    emu.call(
        "event.unbind",
        &user,
        json!({ "event": "ONCRMDEALADD", "event_type": "offline", "auth_connector": "c" }),
    )
    .await
    .err(403, "ACCESS_DENIED");
    // Only the c binding is left: a change queues one row, for c.
    assert_eq!(
        emu.trigger(json!({ "event": "ONCRMDEALADD", "data": { "FIELDS": { "ID": "1" } } }))
            .await,
        1
    );
    assert_eq!(emu.queue().await[0]["CONNECTOR_ID"], json!("c"));
    let r =
        unbind(json!({ "event": "ONCRMDEALADD", "event_type": "offline", "auth_connector": "c" }))
            .await;
    assert_eq!(r.ok(), &json!({ "count": 1 }));
    assert_eq!(
        emu.trigger(json!({ "event": "ONCRMDEALADD", "data": { "FIELDS": { "ID": "2" } } }))
            .await,
        0
    );
    // Online unbinding by handler.
    for h in ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"] {
        emu.call(
            "event.bind",
            &a,
            json!({ "event": "ONCRMLEADADD", "handler": h }),
        )
        .await
        .ok();
    }
    let r = unbind(json!({ "event": "ONCRMLEADADD", "handler": "http://127.0.0.1:1/a" })).await;
    assert_eq!(r.ok(), &json!({ "count": 1 }));
    let r = unbind(json!({ "event": "ONCRMLEADADD" })).await;
    assert_eq!(r.ok(), &json!({ "count": 1 }));
    assert_eq!(emu.call("event.get", &a, json!({})).await.ok(), &json!([]));
}

async fn next_signal(
    rx: &mut mpsc::UnboundedReceiver<(String, HashMap<String, String>)>,
) -> (String, HashMap<String, String>) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an onOfflineEvent signal within 5 s")
        .expect("receiver open")
}

async fn assert_quiet(rx: &mut mpsc::UnboundedReceiver<(String, HashMap<String, String>)>) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await {
        panic!("unexpected onOfflineEvent signal: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onofflineevent_is_signalled_at_most_once_per_min_timeout() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let (url, mut rx) = receiver().await;
    let t = emu.token_with(json!({})).await;
    let a = t.access.clone();
    emu.bind_offline(&a, "ONCRMDEALADD", None).await;
    let r = emu
        .call(
            "event.bind",
            &a,
            json!({ "event": "ONOFFLINEEVENT", "handler": url, "options": { "minTimeout": 60 } }),
        )
        .await;
    assert_eq!(r.ok(), &json!(true));

    // A change that queues nothing sends nothing.
    assert_eq!(
        emu.trigger(json!({ "event": "ONCRMLEADADD", "data": {} }))
            .await,
        0
    );
    assert_quiet(&mut rx).await;

    assert_eq!(
        emu.trigger(json!({ "event": "ONCRMDEALADD", "data": { "FIELDS": { "ID": "1" } } }))
            .await,
        1
    );
    let (ctype, form) = next_signal(&mut rx).await;
    assert!(
        ctype.starts_with("application/x-www-form-urlencoded"),
        "{ctype}"
    );
    assert_eq!(form["event"], "ONOFFLINEEVENT");
    assert_eq!(form["auth[application_token]"], t.application_token);
    assert_eq!(form["auth[domain]"], emu.base.trim_start_matches("http://"));
    assert_eq!(
        form["auth[member_id]"],
        t.raw["member_id"].as_str().unwrap()
    );
    let clock = emu.get("clock").await["now"].as_f64().unwrap();
    let ts: f64 = form["ts"].parse().expect("ts is unix seconds");
    assert!((clock - ts).abs() < 5.0);
    assert!(
        !form.keys().any(|k| k.starts_with("data[")),
        "the signal carries no events: {form:?}"
    );
    // The access token in the signal works.
    let p = emu
        .call("profile", &form["auth[access_token]"], json!({}))
        .await;
    assert_eq!(p.ok()["ID"], json!("1"));

    // More changes within minTimeout: no signal now...
    emu.trigger(json!({ "event": "ONCRMDEALADD", "data": { "FIELDS": { "ID": "2" } } }))
        .await;
    emu.trigger(json!({ "event": "ONCRMDEALADD", "data": { "FIELDS": { "ID": "3" } } }))
        .await;
    assert_quiet(&mut rx).await;
    // ...and one when the interval ends on the emulator's clock.
    emu.advance(61.0).await;
    let (_, form) = next_signal(&mut rx).await;
    assert_eq!(form["auth[application_token]"], t.application_token);
    assert_quiet(&mut rx).await;
    let s = emu.stats().await;
    assert_eq!(s["notifications_sent"], json!(2));
    assert_eq!(s["notifications_failed"], json!(0));

    // Other applications' rows do not signal this one.
    let b = emu.token_with(json!({ "client_id": "other.app" })).await;
    assert_ne!(b.application_token, t.application_token);
    emu.bind_offline(&b.access, "ONCRMLEADADD", None).await;
    emu.advance(61.0).await;
    assert_eq!(
        emu.trigger(json!({ "event": "ONCRMLEADADD", "data": { "FIELDS": { "ID": "1" } } }))
            .await,
        1
    );
    assert_quiet(&mut rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onofflineevent_with_zero_timeout_signals_once_per_request() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let (url, mut rx) = receiver().await;
    let t = emu.token_with(json!({})).await;
    emu.bind_offline(&t.access, "ONCRMDEALADD", None).await;
    emu.call(
        "event.bind",
        &t.access,
        json!({ "event": "ONOFFLINEEVENT", "handler": url, "options": { "minTimeout": 0 } }),
    )
    .await
    .ok();
    let other = emu
        .token_with(json!({ "client_id": "other.app" }))
        .await
        .access;
    for _ in 0..2 {
        emu.call("crm.deal.add", &other, json!({})).await.ok();
        let (_, form) = next_signal(&mut rx).await;
        assert_eq!(form["auth[application_token]"], t.application_token);
    }
    // One batch is one portal request: one signal for three rows.
    let r = emu
        .call(
            "batch",
            &other,
            json!({ "cmd": ["crm.deal.add", "crm.deal.add", "crm.deal.add"] }),
        )
        .await;
    assert_eq!(r.ok()["result"], json!([3, 4, 5]));
    next_signal(&mut rx).await;
    assert_quiet(&mut rx).await;
    assert_eq!(emu.queue().await.len(), 5);

    // A handler off this machine is never called.
    let c = emu
        .token_with(json!({ "client_id": "remote.app" }))
        .await
        .access;
    emu.bind_offline(&c, "ONCRMDEALADD", None).await;
    emu.call(
        "event.bind",
        &c,
        json!({ "event": "ONOFFLINEEVENT", "handler": "http://example.com/hook" }),
    )
    .await
    .ok();
    emu.call("crm.deal.add", &other, json!({})).await.ok();
    next_signal(&mut rx).await; // local.app's signal
    assert_quiet(&mut rx).await;
    let s = emu.stats().await;
    assert_eq!(s["notifications_skipped"], json!(1));
    assert_eq!(s["notifications_sent"], json!(4));
}

#[tokio::test]
async fn oauth_refresh_issues_a_new_pair_once() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let t = emu.token_with(json!({ "user_id": 3 })).await;
    let refresh = |r: &str, extra: &str| {
        emu.send(emu.http.get(format!(
            "{}/oauth/token/?grant_type=refresh_token&refresh_token={r}{extra}",
            emu.base
        )))
    };
    let n = refresh(&t.refresh, "&client_id=local.app").await;
    assert_eq!(n.status, 200, "{n:?}");
    let new_access = n.body["access_token"].as_str().unwrap().to_string();
    let new_refresh = n.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(new_access, t.access);
    assert_ne!(new_refresh, t.refresh);
    assert_eq!(n.body["expires_in"], json!(3600));
    assert_eq!(n.body["application_token"], json!(t.application_token));
    assert_eq!(n.body["member_id"], t.raw["member_id"]);
    assert_eq!(n.body["domain"], t.raw["domain"]);
    assert_eq!(n.body["user_id"], json!(3));
    assert!(n.body["client_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/rest/"));
    // The new access token works for the same user and rights.
    let p = emu.call("profile", &new_access, json!({})).await;
    assert_eq!(p.ok()["ID"], json!("3"));
    assert_eq!(p.ok()["ADMIN"], json!(true));
    // The old refresh token is spent.
    let again = refresh(&t.refresh, "").await;
    assert_eq!(again.status, 400);
    assert_eq!(again.body["error"], json!("invalid_grant"));
    // The new one works once, also after the access token expired, without the trailing slash.
    emu.post("expire", json!({ "access_token": new_access }))
        .await;
    emu.call("profile", &new_access, json!({}))
        .await
        .err(401, "expired_token");
    let n2 = emu
        .send(
            emu.http
                .post(format!("{}/oauth/token", emu.base))
                .body(format!(
                    "grant_type=refresh_token&refresh_token={new_refresh}"
                ))
                .header("content-type", "application/x-www-form-urlencoded"),
        )
        .await;
    assert_eq!(n2.status, 200, "{n2:?}");
    let a3 = n2.body["access_token"].as_str().unwrap();
    emu.call("profile", a3, json!({})).await.ok();
    // Errors.
    let r3 = n2.body["refresh_token"].as_str().unwrap();
    let wrong_client = refresh(r3, "&client_id=other.app").await;
    assert_eq!(wrong_client.status, 400);
    assert_eq!(wrong_client.body["error"], json!("invalid_client"));
    let no_grant = emu
        .send(
            emu.http
                .get(format!("{}/oauth/token/?refresh_token={r3}", emu.base)),
        )
        .await;
    assert_eq!(no_grant.status, 400);
    assert_eq!(no_grant.body["error"], json!("unsupported_grant_type"));
    // A refused exchange does not spend the token.
    refresh(r3, "").await;
    assert_eq!(refresh(r3, "").await.body["error"], json!("invalid_grant"));
}
