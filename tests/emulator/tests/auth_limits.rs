//! Auth (application tokens, webhooks, administrators, expiry, https) and the two limits
//! (leaky bucket, operating time).

mod common;

use common::Emu;
use serde_json::{json, Value};
use std::time::Instant;

#[tokio::test]
async fn offline_methods_need_an_administrator() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let admin = emu.admin().await;
    emu.bind_offline(&admin, "ONCRMDEALUPDATE", None).await;
    emu.deal_updates([1]).await;
    let user = emu
        .token_with(json!({ "user_id": 7, "admin": false }))
        .await
        .access;
    for (method, params) in [
        ("event.offline.get", json!({})),
        ("event.offline.get", json!({ "clear": 0 })),
        ("event.offline.list", json!({})),
        (
            "event.offline.clear",
            json!({ "process_id": "p".repeat(32) }),
        ),
        (
            "event.offline.error",
            json!({ "process_id": "p".repeat(32), "message_id": [] }),
        ),
    ] {
        emu.call(method, &user, params)
            .await
            .err(403, "ACCESS_DENIED");
    }
    assert_eq!(emu.queue().await.len(), 1, "nothing was taken");
    // The same user can do ordinary work.
    let p = emu.call("profile", &user, json!({})).await;
    assert_eq!(p.ok()["ID"], json!("7"));
    assert_eq!(p.ok()["ADMIN"], json!(false));
    let d = emu
        .call("crm.deal.add", &user, json!({ "fields": { "TITLE": "x" } }))
        .await;
    assert_eq!(d.ok(), &json!(1));
}

#[tokio::test]
async fn webhooks_are_refused_on_app_only_methods_but_work_on_crm() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let admin = emu.admin().await;
    emu.bind_offline(&admin, "ONCRMDEALADD", None).await;
    let hook = emu.post("webhook", json!({})).await;
    let url = hook["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/rest/1/", emu.base)) && url.ends_with('/'),
        "{url}"
    );
    let call = |method: &str, params: Value| {
        let req = emu
            .http
            .post(format!("{url}{method}"))
            .header("content-type", "application/json")
            .body(params.to_string());
        emu.send(req)
    };
    for (method, params) in [
        ("event.offline.get", json!({})),
        ("event.offline.list", json!({})),
        (
            "event.offline.clear",
            json!({ "process_id": "p".repeat(32) }),
        ),
        (
            "event.offline.error",
            json!({ "process_id": "p".repeat(32), "message_id": [] }),
        ),
        (
            "event.bind",
            json!({ "event": "ONCRMDEALADD", "event_type": "offline" }),
        ),
        ("event.get", json!({})),
        ("app.info", json!({})),
    ] {
        // 403 as on the portal: a client that refreshes on any 401 must not loop on it.
        call(method, params).await.err(403, "WRONG_AUTH_TYPE");
    }
    let add = call("crm.deal.add", json!({ "fields": { "TITLE": "hooked" } })).await;
    assert_eq!(add.ok(), &json!(1));
    let got = call("crm.deal.get.json", json!({ "id": 1 })).await;
    assert_eq!(got.ok()["TITLE"], json!("hooked"));
    let p = call("profile", json!({})).await;
    assert_eq!(p.ok()["ID"], json!("1"));
    // A webhook change reaches the application's offline queue.
    let rows = emu.queue().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["EVENT_NAME"], json!("ONCRMDEALADD"));
    assert_eq!(rows[0]["EVENT_DATA"], json!({ "FIELDS": { "ID": "1" } }));

    // A wrong code or a wrong user id in the path is not a webhook.
    let code = url.trim_end_matches('/').rsplit('/').next().unwrap();
    for bad in [
        format!("{}/rest/1/{}x/profile", emu.base, code),
        format!("{}/rest/2/{}/profile", emu.base, code),
    ] {
        emu.send(emu.http.get(bad)).await.err(401, "NO_AUTH_FOUND");
    }
}

#[tokio::test]
async fn missing_wrong_and_expired_tokens() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let t = emu.admin().await;
    let other = emu.admin().await;
    emu.call("profile", "", json!({}))
        .await
        .err(401, "NO_AUTH_FOUND");
    emu.call("profile", "", json!({ "auth": "" }))
        .await
        .err(401, "NO_AUTH_FOUND");
    emu.call("event.offline.get", "not-a-token", json!({}))
        .await
        .err(401, "invalid_token");
    emu.call("profile", &t, json!({})).await.ok();
    let r = emu.post("expire", json!({ "access_token": t })).await;
    assert_eq!(r, json!({ "ok": true }));
    emu.call("profile", &t, json!({}))
        .await
        .err(401, "expired_token");
    emu.call("event.offline.list", &t, json!({}))
        .await
        .err(401, "expired_token");
    // Other tokens are not affected.
    emu.call("profile", &other, json!({})).await.ok();
    // Unknown token for /_emulator/expire.
    let r = emu
        .ctl_raw(
            reqwest::Method::POST,
            "expire",
            Some(json!({ "access_token": "nope" })),
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn tokens_expire_with_the_emulator_clock() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let c = emu.config(json!({ "token_ttl_s": 60 })).await;
    assert_eq!(c["token_ttl_s"], json!(60));
    let t = emu.token_with(json!({})).await;
    assert_eq!(t.raw["expires_in"], json!(60));
    emu.call("profile", &t.access, json!({})).await.ok();
    emu.advance(58.0).await;
    emu.call("profile", &t.access, json!({})).await.ok();
    emu.advance(3.0).await;
    emu.call("profile", &t.access, json!({}))
        .await
        .err(401, "expired_token");
}

#[tokio::test]
async fn https_required_refuses_plain_http() {
    let emu = Emu::start();
    let t = emu.admin().await;
    emu.config(json!({ "require_https": true })).await;
    let r = emu.call("profile", &t, json!({})).await;
    r.err(400, "INVALID_REQUEST");
    assert!(r.body["error_description"]
        .as_str()
        .unwrap()
        .contains("Https required"));
    emu.config(json!({ "require_https": false })).await;
    emu.call("profile", &t, json!({})).await.ok();
}

#[tokio::test]
async fn leaky_bucket_standard_plan() {
    let emu = Emu::start();
    let c = emu.get("config").await;
    assert_eq!(
        c["rate_limit"],
        json!({ "burst": 50.0, "drain_per_sec": 2.0 })
    );
    let t = emu.admin().await;
    // Requests until the first refusal. The bucket drains 2 per second of real time, so the
    // burst admits exactly 50 when it takes under half a second, and one more per half second.
    let started = Instant::now();
    let mut passed = 0usize;
    let refused = loop {
        let r = emu.call("profile", &t, json!({})).await;
        if r.status != 200 {
            break r;
        }
        passed += 1;
        assert!(passed <= 200, "the bucket never filled");
    };
    let drained = (2.0 * started.elapsed().as_secs_f64()).floor() as usize;
    refused.err(503, "QUERY_LIMIT_EXCEEDED");
    assert!(
        (50..=50 + drained).contains(&passed),
        "{passed} requests passed, at most {drained} could have drained"
    );
    for _ in 0..10 {
        emu.call("profile", &t, json!({}))
            .await
            .err(503, "QUERY_LIMIT_EXCEEDED");
    }
    let s = emu.stats().await;
    assert_eq!(s["rejections"]["QUERY_LIMIT_EXCEEDED"], json!(11));
    let level = s["bucket_level"].as_f64().unwrap();
    assert!(
        level <= 50.0 && level > 45.0,
        "refused requests are not counted: {level}"
    );
    // One second later two requests fit again (refused ones did not add to the counter).
    emu.advance(1.0).await;
    emu.call("profile", &t, json!({})).await.ok();
    emu.call("profile", &t, json!({})).await.ok();
    // Control calls never count.
    for _ in 0..5 {
        emu.stats().await;
    }
    let level = emu.stats().await["bucket_level"].as_f64().unwrap();
    assert!(level <= 50.0, "{level}");
}

#[tokio::test]
async fn leaky_bucket_exact_counting_and_batch_counts_once() {
    let emu = Emu::start();
    emu.config(json!({ "rate_limit": { "burst": 5, "drain_per_sec": 0.01 } }))
        .await;
    let t = emu.admin().await;
    for _ in 0..5 {
        assert_eq!(status(&emu, &t).await, 200);
    }
    for _ in 0..4 {
        assert_eq!(status(&emu, &t).await, 503);
    }
    // 100 s drain one request: exactly one passes.
    emu.advance(100.0).await;
    assert_eq!(status(&emu, &t).await, 200);
    assert_eq!(status(&emu, &t).await, 503);
    // 250 s drain 2.5: two pass.
    emu.advance(250.0).await;
    assert_eq!(status(&emu, &t).await, 200);
    assert_eq!(status(&emu, &t).await, 200);
    assert_eq!(status(&emu, &t).await, 503);
    // Empty the bucket; a batch of 10 commands is one request.
    emu.advance(1000.0).await;
    let cmd: Vec<&str> = vec!["profile"; 10];
    let b = emu.call("batch", &t, json!({ "cmd": cmd })).await;
    assert_eq!(b.ok()["result"].as_array().unwrap().len(), 10);
    let level = emu.stats().await["bucket_level"].as_f64().unwrap();
    assert!((level - 1.0).abs() < 0.01, "batch counted as {level}");
    for _ in 0..4 {
        assert_eq!(status(&emu, &t).await, 200);
    }
    let r = emu.call("batch", &t, json!({ "cmd": ["profile"] })).await;
    r.err(503, "QUERY_LIMIT_EXCEEDED");
    // Enterprise preset.
    let c = emu.config(json!({ "rate_limit": "enterprise" })).await;
    assert_eq!(
        c["rate_limit"],
        json!({ "burst": 250.0, "drain_per_sec": 5.0 })
    );
}

async fn status(emu: &Emu, t: &str) -> u16 {
    emu.call("profile", t, json!({})).await.status
}

fn time_of(r: &common::Resp) -> (f64, f64, i64) {
    let t = &r.body["time"];
    (
        t["start"].as_f64().expect("time.start"),
        t["operating"].as_f64().expect("time.operating"),
        t["operating_reset_at"]
            .as_i64()
            .expect("time.operating_reset_at"),
    )
}

#[tokio::test]
async fn operating_time_limit_blocks_a_method_until_buckets_drop() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let c = emu
        .config(json!({ "operating_cost_s": { "profile": 200 } }))
        .await;
    assert_eq!(c["operating_limit_s"], json!(480.0));
    assert_eq!(c["operating_cost_s"], json!({ "profile": 200.0 }));
    let t = emu.admin().await;
    let other_app = emu
        .token_with(json!({ "client_id": "other.app" }))
        .await
        .access;

    let r1 = emu.call("profile", &t, json!({})).await;
    r1.ok();
    let (start1, op1, reset1) = time_of(&r1);
    assert_eq!(op1, 200.0);
    // The oldest bucket drops ten minutes after its first call.
    let d = reset1 as f64 - start1;
    assert!(d > 599.0 && d <= 601.0, "operating_reset_at - start = {d}");
    let r2 = emu.call("profile", &t, json!({})).await;
    assert_eq!(time_of(&r2).1, 400.0);
    assert_eq!(time_of(&r2).2, reset1);
    // 400 <= 480: the third call runs and takes the sum over the limit.
    let r3 = emu.call("profile", &t, json!({})).await;
    assert_eq!(time_of(&r3).1, 600.0);
    // The next call is blocked.
    emu.call("profile", &t, json!({}))
        .await
        .err(429, "OPERATION_TIME_LIMIT");
    // Other methods and other applications carry on.
    let info = emu.call("app.info", &t, json!({})).await;
    info.ok();
    assert!(time_of(&info).1 < 1.0);
    let o = emu.call("profile", &other_app, json!({})).await;
    assert_eq!(time_of(&o).1, 200.0);
    let s = emu.stats().await;
    assert_eq!(s["operating"]["profile"], json!(800.0));
    assert_eq!(s["rejections"]["OPERATION_TIME_LIMIT"], json!(1));

    // Still blocked 5 minutes later.
    emu.advance(300.0).await;
    emu.call("profile", &t, json!({}))
        .await
        .err(429, "OPERATION_TIME_LIMIT");
    // After the bucket's ten minutes the method is available again.
    emu.advance(302.0).await;
    let again = emu.call("profile", &t, json!({})).await;
    again.ok();
    assert_eq!(time_of(&again).1, 200.0);
}

#[tokio::test]
async fn operating_reset_at_follows_the_oldest_bucket() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    emu.config(
        json!({ "operating_cost_s": { "event.offline.list": 200 }, "operating_limit_s": 300 }),
    )
    .await;
    let t = emu.admin().await;
    let r1 = emu.call("event.offline.list", &t, json!({})).await;
    let (s1, op, reset1) = time_of(&r1);
    assert_eq!(op, 200.0);
    emu.advance(120.0).await;
    let r2 = emu.call("event.offline.list.json", &t, json!({})).await;
    let (s2, op, reset2) = time_of(&r2);
    assert_eq!(op, 400.0, "two buckets summed");
    assert_eq!(reset2, reset1, "the oldest bucket decides");
    assert!(s2 - s1 >= 120.0);
    emu.call("event.offline.list", &t, json!({}))
        .await
        .err(429, "OPERATION_TIME_LIMIT");
    // When the first bucket drops, 200 remain (<= 300): the call runs.
    emu.advance(481.0).await;
    let r3 = emu.call("event.offline.list", &t, json!({})).await;
    let (_, op, reset3) = time_of(&r3);
    assert_eq!(op, 400.0);
    let d = reset3 as f64 - s2;
    assert!(
        d > 599.0 && d <= 601.0,
        "reset now follows the second bucket: {d}"
    );
    // Without a limit nothing is ever blocked.
    emu.config(json!({ "operating_limit_s": null })).await;
    for _ in 0..3 {
        emu.call("event.offline.list", &t, json!({})).await.ok();
    }
}
