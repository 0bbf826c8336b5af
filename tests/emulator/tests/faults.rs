//! Injected faults: every kind, `times`, `probability` with `seed`, `phase: after`, DELETE.

mod common;

use common::{ids, Emu};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn setup(rows: u64) -> (Emu, String) {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let auth = emu.admin().await;
    emu.bind_offline(&auth, "ONCRMDEALUPDATE", None).await;
    if rows > 0 {
        emu.deal_updates(1..=rows).await;
    }
    (emu, auth)
}

async fn faults(emu: &Emu, body: Value) -> Value {
    emu.post("faults", body).await
}

/// Sends a REST call and returns (status, content-type, raw body), or the transport error.
async fn raw(
    emu: &Emu,
    method: &str,
    auth: &str,
    params: Value,
) -> reqwest::Result<(u16, String, String)> {
    let mut body = params;
    body["auth"] = json!(auth);
    let resp = emu
        .http
        .post(format!("{}/rest/{method}", emu.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.text().await?;
    Ok((status, ctype, text))
}

fn all_free(rows: &[Value]) -> bool {
    rows.iter().all(|r| r["PROCESS_ID"] == json!(""))
}

#[tokio::test]
async fn http_500_only_for_its_method_and_times() {
    let (emu, auth) = setup(2).await;
    let set = faults(
        &emu,
        json!({ "rules": [{ "method": "event.offline.get", "kind": "http_500", "times": 1 }] }),
    )
    .await;
    assert_eq!(set["rules"][0]["kind"], json!("http_500"));
    assert_eq!(set["rules"][0]["times"], json!(1));
    // Another method is not affected.
    emu.offline_list(&auth, json!({})).await.ok();
    let r = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    r.err(500, "INTERNAL_SERVER_ERROR");
    assert!(
        all_free(&emu.queue().await),
        "a before-fault leaves no effect"
    );
    assert_eq!(emu.get("faults").await[0]["times"], json!(0));
    // Used up: the next call goes through.
    let r = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert_eq!(ids(&r.events()), vec![1, 2]);
    assert_eq!(emu.stats().await["faults_injected"], json!(1));
}

#[tokio::test]
async fn html_502_answers_an_html_page() {
    let (emu, auth) = setup(1).await;
    faults(
        &emu,
        json!({ "rules": [{ "kind": "html_502", "times": 1 }] }),
    )
    .await;
    let (status, ctype, body) = raw(&emu, "event.offline.get", &auth, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 502);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(
        body.contains("<html>") && body.contains("502 Bad Gateway"),
        "{body}"
    );
    assert!(serde_json::from_str::<Value>(&body).is_err());
    assert_eq!(emu.queue().await.len(), 1, "nothing was cleared");
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let (emu, auth) = setup(1).await;
    faults(
        &emu,
        json!({ "rules": [{ "method": "event.offline.get", "kind": "drop", "times": 1 }] }),
    )
    .await;
    let started = Instant::now();
    let r = raw(&emu, "event.offline.get", &auth, json!({ "clear": 0 })).await;
    let e = r.expect_err("a dropped connection gives no response");
    assert!(!e.is_timeout(), "closed, not timed out: {e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(all_free(&emu.queue().await));
    // The next call works (on a new connection).
    let r = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert_eq!(ids(&r.events()), vec![1]);
}

#[tokio::test]
async fn delay_ms_delays_the_answer() {
    let (emu, auth) = setup(1).await;
    faults(
        &emu,
        json!({ "rules": [{ "method": "event.offline.list", "kind": { "delay_ms": 400 }, "times": 1 }] }),
    )
    .await;
    let started = Instant::now();
    let r = emu.offline_list(&auth, json!({})).await;
    let took = started.elapsed();
    assert_eq!(ids(r.ok().as_array().unwrap()), vec![1]);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The string form with a sibling field.
    let set = faults(
        &emu,
        json!({ "rules": [{ "kind": "delay_ms", "delay_ms": 250, "times": 1 }] }),
    )
    .await;
    assert_eq!(set["rules"][0]["kind"], json!({ "delay_ms": 250 }));
    let started = Instant::now();
    emu.call("profile", &auth, json!({})).await.ok();
    assert!(started.elapsed() >= Duration::from_millis(250));
    let started = Instant::now();
    emu.call("profile", &auth, json!({})).await.ok();
    assert!(started.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn query_limit_expired_token_and_malformed_json() {
    let (emu, auth) = setup(1).await;
    faults(
        &emu,
        json!({ "rules": [{ "kind": "query_limit", "times": 1 }] }),
    )
    .await;
    emu.offline_get(&auth, json!({}))
        .await
        .err(503, "QUERY_LIMIT_EXCEEDED");
    faults(
        &emu,
        json!({ "rules": [{ "kind": "expired_token", "times": 1 }] }),
    )
    .await;
    emu.offline_get(&auth, json!({}))
        .await
        .err(401, "expired_token");
    // The token itself is fine.
    emu.call("profile", &auth, json!({})).await.ok();

    faults(
        &emu,
        json!({ "rules": [{ "kind": "malformed_json", "times": 1 }] }),
    )
    .await;
    let (status, ctype, body) = raw(&emu, "event.offline.get", &auth, json!({ "clear": 0 }))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
    assert!(body.starts_with('{'), "{body}");
    assert_eq!(emu.queue().await.len(), 1);
    assert!(all_free(&emu.queue().await));
    assert_eq!(emu.stats().await["faults_injected"], json!(3));
}

#[tokio::test]
async fn times_counts_down_then_the_rule_stops() {
    let (emu, auth) = setup(0).await;
    faults(
        &emu,
        json!({ "rules": [{ "method": "profile", "kind": "http_500", "times": 2 }] }),
    )
    .await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(emu.call("profile", &auth, json!({})).await.status);
        }
        v
    };
    assert_eq!(statuses, vec![500, 500, 200, 200]);
    // Method names match case-insensitively and with `.json`.
    faults(
        &emu,
        json!({ "rules": [{ "method": "PROFILE", "kind": "http_500" }] }),
    )
    .await;
    for m in ["profile", "profile.json", "Profile"] {
        assert_eq!(emu.call(m, &auth, json!({})).await.status, 500, "{m}");
    }
    // Without times the rule fires forever; "*" matches every method.
    faults(
        &emu,
        json!({ "rules": [{ "method": "*", "kind": "query_limit" }] }),
    )
    .await;
    for m in ["profile", "event.offline.list", "crm.deal.list"] {
        emu.call(m, &auth, json!({}))
            .await
            .err(503, "QUERY_LIMIT_EXCEEDED");
    }
}

#[tokio::test]
async fn probability_is_reproducible_with_a_seed() {
    let (emu, auth) = setup(0).await;
    let rules = json!({ "seed": 42, "rules": [{ "method": "profile", "kind": "http_500", "probability": 0.5 }] });
    let run = || {
        let emu = &emu;
        let auth = &auth;
        let rules = rules.clone();
        async move {
            faults(emu, rules).await;
            let mut pattern = Vec::new();
            for _ in 0..40 {
                pattern.push(emu.call("profile", auth, json!({})).await.status);
            }
            pattern
        }
    };
    let a = run().await;
    let b = run().await;
    assert_eq!(a, b, "same seed, same faults");
    let failed = a.iter().filter(|s| **s == 500).count();
    let passed = a.iter().filter(|s| **s == 200).count();
    assert_eq!(failed + passed, 40);
    assert!((5..=35).contains(&failed), "p=0.5 failed {failed} of 40");
    // Probability 0 never fires, 1 always.
    faults(
        &emu,
        json!({ "rules": [{ "method": "profile", "kind": "http_500", "probability": 0 }] }),
    )
    .await;
    for _ in 0..10 {
        emu.call("profile", &auth, json!({})).await.ok();
    }
    let bad = emu
        .ctl_raw(
            reqwest::Method::POST,
            "faults",
            Some(json!({ "rules": [{ "kind": "http_500", "probability": 1.5 }] })),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"], json!("BAD_FAULT_RULE"));
}

#[tokio::test]
async fn phase_after_keeps_the_effect_and_loses_the_answer() {
    let (emu, auth) = setup(3).await;
    // A reservation whose answer is lost: the rows stay reserved, invisible to the client.
    faults(
        &emu,
        json!({ "rules": [{ "method": "event.offline.get", "kind": "drop", "phase": "after", "times": 1 }] }),
    )
    .await;
    let r = raw(
        &emu,
        "event.offline.get",
        &auth,
        json!({ "clear": 0, "limit": 2 }),
    )
    .await;
    assert!(r.is_err(), "the answer is lost: {r:?}");
    let rows = emu.queue().await;
    assert_eq!(ids(&rows), vec![1, 2, 3]);
    let pid = rows[0]["PROCESS_ID"].as_str().unwrap().to_string();
    assert_eq!(pid.len(), 32, "row 1 is reserved: {rows:?}");
    assert_eq!(rows[1]["PROCESS_ID"], json!(pid));
    assert_eq!(rows[2]["PROCESS_ID"], json!(""));
    // The stranded rows are hidden from the next get.
    let next = emu.offline_get(&auth, json!({ "clear": 0 })).await;
    assert_eq!(ids(&next.events()), vec![3]);

    // A destructive read whose answer is a 500: the rows are gone anyway.
    emu.deal_updates([10, 11]).await; // rows 4, 5
    faults(
        &emu,
        json!({ "rules": [{ "method": "event.offline.get", "kind": "http_500", "phase": "after", "times": 1 }] }),
    )
    .await;
    emu.offline_get(&auth, json!({}))
        .await
        .err(500, "INTERNAL_SERVER_ERROR");
    assert_eq!(ids(&emu.queue().await), vec![1, 2, 3]);

    // A clear whose answer is malformed still cleared.
    faults(
        &emu,
        json!({ "rules": [{ "method": "event.offline.clear", "kind": "malformed_json", "phase": "after" }] }),
    )
    .await;
    let (status, _, body) = raw(
        &emu,
        "event.offline.clear",
        &auth,
        json!({ "process_id": pid }),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err());
    assert_eq!(ids(&emu.queue().await), vec![3]);

    // phase "after" with a delay answers, late.
    faults(
        &emu,
        json!({ "rules": [{ "method": "profile", "kind": { "delay_ms": 200 }, "phase": "after" }] }),
    )
    .await;
    let started = Instant::now();
    emu.call("profile", &auth, json!({})).await.ok();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn delete_clears_every_rule() {
    let (emu, auth) = setup(1).await;
    faults(
        &emu,
        json!({ "rules": [{ "kind": "http_500" }, { "kind": "drop", "phase": "after" }] }),
    )
    .await;
    assert_eq!(emu.get("faults").await.as_array().unwrap().len(), 2);
    assert_eq!(emu.call("profile", &auth, json!({})).await.status, 500);
    let r = emu.ctl_raw(reqwest::Method::DELETE, "faults", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({ "rules": [] }));
    assert_eq!(emu.get("faults").await, json!([]));
    emu.call("profile", &auth, json!({})).await.ok();
    let r = emu.offline_get(&auth, json!({})).await;
    assert_eq!(ids(&r.events()), vec![1]);
    // Unknown kinds and phases are refused whole.
    for bad in [
        json!({ "rules": [{ "kind": "explode" }] }),
        json!({ "rules": [{ "kind": "drop", "phase": "during" }] }),
        json!({ "rules": [{ "kind": { "delay_ms": "soon" } }] }),
        json!({ "rules": "none" }),
    ] {
        let r = emu
            .ctl_raw(reqwest::Method::POST, "faults", Some(bad.clone()))
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.body["error"], json!("BAD_FAULT_RULE"));
    }
    assert_eq!(emu.get("faults").await, json!([]));
}
