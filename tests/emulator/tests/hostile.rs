//! Hostile requests: whatever a request or a control call carries, the emulator answers with an
//! error and keeps serving. Each case names the input and the expected outcome; every test
//! ends by checking that the same process still answers.

mod common;

use common::Emu;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The emulator still answers a plain call after whatever happened before.
async fn still_serving(emu: &Emu, auth: &str) {
    let r = emu
        .call(
            "feature.get",
            auth,
            json!({"CODE": "rest_offline_extended"}),
        )
        .await;
    assert_eq!(r.ok()["value"], json!("Y"), "the emulator stopped serving");
}

async fn form(emu: &Emu, method: &str, body: String) -> common::Resp {
    emu.send(
        emu.http
            .post(format!("{}/rest/{method}", emu.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await
}

#[tokio::test]
async fn php_key_nesting_and_volume_are_bounded_like_php() {
    let emu = Emu::start();
    let auth = emu.admin().await;
    // 200,000 levels of `[x]`: PHP drops a variable nested past 64 levels; so does the emulator
    // (before: a stack overflow that killed the process).
    let deep = format!(
        "auth={auth}&CODE=rest_offline_extended&a{}=1",
        "[x]".repeat(200_000)
    );
    let r = form(&emu, "feature.get", deep).await;
    assert_eq!(r.ok()["value"], json!("Y"));
    // The same in the query string of a GET.
    let url = format!(
        "{}/rest/feature.get?auth={auth}&CODE=rest_offline_extended&q{}=1",
        emu.base,
        "%5Bx%5D".repeat(2_000)
    );
    let r = emu.send(emu.http.get(url)).await;
    assert_eq!(r.ok()["value"], json!("Y"));
    // 300,000 `x[]` appends: PHP keeps max_input_vars (1000); the answer comes at once.
    let started = Instant::now();
    let many = format!(
        "auth={auth}&CODE=rest_offline_extended&{}",
        "x[]=1&".repeat(300_000)
    );
    let r = form(&emu, "feature.get", many).await;
    assert!(r.status == 200 || r.status == 400, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // JSON nested deeper than the parser's limit: an argument error, not a crash.
    let nested = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = emu
        .send(
            emu.http
                .post(format!("{}/rest/feature.get", emu.base))
                .header("content-type", "application/json")
                .body(format!("{{\"auth\":\"{auth}\",\"x\":{nested}}}")),
        )
        .await;
    r.err(400, "INVALID_REQUEST");
    still_serving(&emu, &auth).await;
}

#[tokio::test]
async fn control_numbers_out_of_range_are_refused() {
    let emu = Emu::start();
    let refused = |body: Value, path: &'static str| {
        let emu = &emu;
        async move {
            let r = emu
                .ctl_raw(reqwest::Method::POST, path, Some(body.clone()))
                .await;
            assert_eq!(r.status, 400, "{path} {body}: {r:?}");
            assert!(r.body["error"].is_string(), "{r:?}");
        }
    };
    // The clock: a number too large for a millisecond count, negative, not a number.
    refused(json!({"advance_s": 1e300}), "clock").await;
    refused(json!({"advance_s": -1}), "clock").await;
    refused(json!({"advance_s": "soon"}), "clock").await;
    // Forward by 99 years works; one more century in all does not.
    emu.advance(99.0 * 365.0 * 86400.0).await;
    refused(json!({"advance_s": 5.0 * 365.0 * 86400.0}), "clock").await;
    // A century later every old token has expired; a fresh one works.
    let auth = emu.admin().await;
    still_serving(&emu, &auth).await;
    // Token lives, fault delays and rates out of range.
    refused(json!({"token_ttl_s": 9_000_000_000_000_000i64}), "config").await;
    refused(json!({"token_ttl_s": 0}), "config").await;
    refused(
        json!({"rate_limit": {"burst": -1, "drain_per_sec": 2}}),
        "config",
    )
    .await;
    refused(json!({"operating_limit_s": -5}), "config").await;
    refused(json!({"no_such_field": 1}), "config").await;
    refused(
        json!({"rules": [{"kind": {"delay_ms": u64::MAX}}]}),
        "faults",
    )
    .await;
    refused(json!({"rules": [{"kind": {"redirect": ""}}]}), "faults").await;
    refused(
        json!({"rules": [{"kind": {"redirect": "http://x", "status": 200}}]}),
        "faults",
    )
    .await;
    refused(json!({"rules": [{"kind": {"corrupt_rows": {}}}]}), "faults").await;
    refused(
        json!({"rules": [{"kind": "http_500", "probability": 2}]}),
        "faults",
    )
    .await;
    refused(json!({"items": "x"}), "trigger").await;
    refused(json!({"user_id": -1}), "token").await;
    // A body that is not JSON at all.
    let r = emu
        .send(
            emu.http
                .post(format!("{}/_emulator/config", emu.base))
                .body("{not json"),
        )
        .await;
    assert_eq!(r.status, 400);
    still_serving(&emu, &auth).await;
}

#[tokio::test]
async fn extreme_but_valid_values_do_not_overflow() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let t = emu.token_with(json!({})).await;
    // The longest token life, then the clock as far ahead as it goes.
    emu.config(json!({"token_ttl_s": 10 * 366 * 24 * 3600}))
        .await;
    let long = emu.token_with(json!({})).await;
    // An onOfflineEvent binding with the largest integer the portal reads.
    let r = emu
        .call(
            "event.bind",
            &long.access,
            json!({"event": "ONOFFLINEEVENT", "handler": "http://127.0.0.1:9/h", "options": {"minTimeout": 9_000_000_000_000_000i64}}),
        )
        .await;
    r.ok();
    emu.bind_offline(&long.access, "ONCRMDEALUPDATE", None)
        .await;
    emu.deal_updates(1..=3).await;
    emu.deal_updates(1..=3).await;
    // `limit` far beyond any queue, huge ids and starts.
    let r = emu
        .offline_get(
            &long.access,
            json!({"limit": 9_000_000_000_000_000i64, "clear": 0}),
        )
        .await;
    assert_eq!(r.events().len(), 3);
    let r = emu
        .offline_list(&long.access, json!({"start": 9_000_000_000_000_000i64}))
        .await;
    assert_eq!(r.ok(), &json!([]));
    let r = emu
        .call(
            "event.offline.clear",
            &long.access,
            json!({"process_id": "x", "id": [9_000_000_000_000_000i64]}),
        )
        .await;
    r.ok();
    emu.advance(99.0 * 365.0 * 86400.0).await;
    // The old token has expired by now; the long one has not... ten years is less than 99.
    let r = emu.call("event.get", &t.access, json!({})).await;
    r.err(401, "expired_token");
    let r = emu.call("event.get", &long.access, json!({})).await;
    r.err(401, "expired_token");
    let fresh = emu.admin().await;
    still_serving(&emu, &fresh).await;
}

#[tokio::test]
async fn redirect_faults_answer_3xx_and_the_trap_records_what_follows() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let auth = emu.admin().await;
    let trap = emu.base.replace("127.0.0.1", "localhost") + "/trap/stolen";
    emu.post(
        "faults",
        json!({"rules": [{"method": "feature.get", "kind": {"redirect": trap, "status": 307}, "times": 1}]}),
    )
    .await;
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow
        .post(format!("{}/rest/feature.get", emu.base))
        .header("content-type", "application/json")
        .body(json!({"auth": auth, "CODE": "rest_offline_extended"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 307);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(trap.as_str())
    );
    assert_eq!(
        emu.get("trap").await["requests"],
        json!([]),
        "nothing followed yet"
    );
    // A client that follows (reqwest does by default) re-sends the body, token included.
    emu.post(
        "faults",
        json!({"rules": [{"method": "feature.get", "kind": {"redirect": trap}, "times": 1}]}),
    )
    .await;
    let r = emu
        .call(
            "feature.get",
            &auth,
            json!({"CODE": "rest_offline_extended"}),
        )
        .await;
    assert_eq!(r.ok(), &json!("trapped"));
    let trapped = emu.get("trap").await;
    assert!(trapped["requests"][0]["body"]
        .as_str()
        .unwrap()
        .contains(&auth));
    still_serving(&emu, &auth).await;
}

#[tokio::test]
async fn corrupt_rows_fault_changes_the_answer_not_the_queue() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let auth = emu.admin().await;
    emu.bind_offline(&auth, "ONCRMDEALUPDATE", None).await;
    emu.deal_updates(1..=3).await;
    emu.post(
        "faults",
        json!({"rules": [{"method": "event.offline.get", "kind": {"corrupt_rows": {"MESSAGE_ID": null, "ID": "x"}, "count": 2}, "times": 1}]}),
    )
    .await;
    let r = emu.offline_get(&auth, json!({"clear": 0})).await;
    let events = r.events();
    assert_eq!(events.len(), 3);
    assert_eq!(
        (&events[0]["MESSAGE_ID"], &events[0]["ID"]),
        (&Value::Null, &json!("x"))
    );
    assert_eq!(events[1]["MESSAGE_ID"], Value::Null);
    assert!(events[2]["MESSAGE_ID"].is_string());
    // The queue itself is intact: the rows are reserved under the answer's process id.
    let rows = emu.queue().await;
    let pid = r.process_id().unwrap();
    assert!(rows
        .iter()
        .all(|r| r["PROCESS_ID"] == json!(pid) && r["MESSAGE_ID"].is_string()));
    // On list answers the rows are the result itself.
    emu.post(
        "faults",
        json!({"rules": [{"method": "event.offline.list", "kind": {"corrupt_rows": {"EVENT_NAME": 5}}}]}),
    )
    .await;
    let r = emu.offline_list(&auth, json!({})).await;
    assert_eq!(r.ok()[0]["EVENT_NAME"], json!(5));
    still_serving(&emu, &auth).await;
}
