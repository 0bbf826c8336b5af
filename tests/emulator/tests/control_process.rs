//! The control API (reset, config, token, clock, stats, queue) and the process itself:
//! the first line, `--tls`, SIGTERM, bad arguments.

mod common;

use common::{command, native_only, Emu};
use serde_json::{json, Value};

#[tokio::test]
async fn reset_empties_everything_but_the_config() {
    let emu = Emu::start();
    let config = emu
        .config(json!({ "extended_mode": false, "rate_limit": null, "token_ttl_s": 77, "operating_cost_s": { "profile": 1.5 } }))
        .await;
    let a = emu.admin().await;
    emu.bind_offline(&a, "ONCRMDEALADD", None).await;
    let other = emu
        .token_with(json!({ "client_id": "other.app" }))
        .await
        .access;
    emu.call("crm.deal.add", &other, json!({})).await.ok();
    emu.call("profile", &a, json!({})).await.ok();
    assert_eq!(emu.queue().await.len(), 1);

    assert_eq!(emu.post("reset", json!({})).await, json!({ "ok": true }));
    assert_eq!(emu.get("config").await, config, "config is kept");
    assert_eq!(emu.queue().await, Vec::<Value>::new());
    let s = emu.stats().await;
    assert_eq!(s["requests"], json!({}));
    assert_eq!(s["rejections"], json!({}));
    assert_eq!(s["operating"], json!({}));
    assert_eq!(s["queue_rows"], json!(0));
    emu.call("profile", &a, json!({}))
        .await
        .err(401, "invalid_token");

    let a = emu.token_with(json!({})).await;
    assert_eq!(a.raw["expires_in"], json!(77));
    assert_eq!(
        emu.call("event.get", &a.access, json!({})).await.ok(),
        &json!([])
    );
    emu.call("crm.deal.get", &a.access, json!({ "id": 1 }))
        .await
        .err(400, "NOT_FOUND");
    let id = emu.call("crm.deal.add", &a.access, json!({})).await;
    assert_eq!(id.ok(), &json!(1), "CRM ids start again");
    assert_eq!(emu.queue().await.len(), 0, "bindings are gone");
}

#[tokio::test]
async fn config_defaults_patches_and_refusals() {
    let emu = Emu::start();
    let c = emu.get("config").await;
    assert_eq!(
        c,
        json!({
            "extended_mode": true,
            "auth_connector": true,
            "rate_limit": { "burst": 50.0, "drain_per_sec": 2.0 },
            "operating_limit_s": 480.0,
            "operating_cost_s": {},
            "token_ttl_s": 3600,
            "require_https": false,
            "oauth": "cloud",
        })
    );
    let patched = emu
        .config(json!({ "auth_connector": false, "rate_limit": { "burst": 10, "drain_per_sec": 1 }, "operating_limit_s": null }))
        .await;
    assert_eq!(patched["auth_connector"], json!(false));
    assert_eq!(
        patched["rate_limit"],
        json!({ "burst": 10.0, "drain_per_sec": 1.0 })
    );
    assert_eq!(patched["operating_limit_s"], Value::Null);
    assert_eq!(
        patched["extended_mode"],
        json!(true),
        "untouched fields stay"
    );
    for bad in [
        json!({ "no_such_field": 1 }),
        json!({ "extended_mode": "yes" }),
        json!({ "rate_limit": { "burst": 0, "drain_per_sec": 1 } }),
        json!({ "token_ttl_s": 0 }),
        json!({ "extended_mode": false, "token_ttl_s": -5 }),
    ] {
        let r = emu
            .ctl_raw(reqwest::Method::POST, "config", Some(bad.clone()))
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.body["error"], json!("BAD_CONFIG"));
    }
    assert_eq!(
        emu.get("config").await,
        patched,
        "refused patches change nothing"
    );
    // Unknown control endpoints and non-JSON bodies.
    let r = emu.ctl_raw(reqwest::Method::POST, "nothing", None).await;
    assert_eq!(r.status, 404);
    let r = emu
        .send(
            emu.http
                .post(format!("{}/_emulator/config", emu.base))
                .body("extended_mode=false"),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn tokens_for_several_applications() {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let a1 = emu.token_with(json!({})).await;
    let a2 = emu
        .token_with(json!({ "user_id": 2, "admin": false }))
        .await;
    let b = emu.token_with(json!({ "client_id": "other.app" })).await;
    let port = emu.base.rsplit(':').next().unwrap();
    assert_eq!(a1.raw["domain"], json!(format!("127.0.0.1:{port}")));
    assert_eq!(a1.raw["client_id"], json!("local.app"));
    assert_eq!(a1.raw["expires_in"], json!(3600));
    let member = a1.raw["member_id"].as_str().unwrap();
    assert_eq!(member.len(), 32);
    assert!(member.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a1.application_token, a2.application_token, "same app");
    assert_ne!(a1.application_token, b.application_token);
    assert_ne!(a1.access, a2.access);
    assert_eq!(b.raw["member_id"], a1.raw["member_id"], "one portal");
    let info = emu.call("app.info", &b.access, json!({})).await;
    assert_eq!(info.ok()["CODE"], json!("other.app"));
    let info = emu.call("app.info", &a2.access, json!({})).await;
    assert_eq!(info.ok()["CODE"], json!("local.app"));
    let p = emu.call("profile", &a2.access, json!({})).await;
    assert_eq!(p.ok()["ID"], json!("2"));
    assert_eq!(p.ok()["ADMIN"], json!(false));
    let bad = emu
        .ctl_raw(
            reqwest::Method::POST,
            "token",
            Some(json!({ "client_id": "" })),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn clock_and_stats() {
    let emu = Emu::start();
    let before = emu.get("clock").await;
    assert_eq!(before["offset_s"], json!(0.0));
    let after = emu.post("clock", json!({ "advance_s": 90 })).await;
    assert_eq!(after["offset_s"], json!(90.0));
    let moved = after["now"].as_f64().unwrap() - before["now"].as_f64().unwrap();
    assert!((90.0..95.0).contains(&moved), "{moved}");
    let r = emu
        .ctl_raw(
            reqwest::Method::POST,
            "clock",
            Some(json!({ "advance_s": -1 })),
        )
        .await;
    assert_eq!(r.status, 400, "the clock never goes back");

    let a = emu.admin().await;
    emu.bind_offline(&a, "ONCRMDEALADD", None).await;
    emu.trigger(json!({ "event": "ONCRMDEALADD", "data": { "FIELDS": { "ID": "1" } } }))
        .await;
    emu.trigger(json!({ "event": "ONCRMDEALADD", "data": { "FIELDS": { "ID": "2" } } }))
        .await;
    emu.call("event.offline.get", &a, json!({ "clear": 0, "limit": 1 }))
        .await
        .ok();
    emu.call("event.offline.list.json", &a, json!({}))
        .await
        .ok();
    emu.call("event.offline.list", &a, json!({})).await.ok();
    emu.call("event.offline.get", &a, json!({ "limit": 0 }))
        .await
        .err(400, "ERROR_ARGUMENT");
    emu.call("profile", "bogus", json!({}))
        .await
        .err(401, "invalid_token");
    let s = emu.stats().await;
    assert_eq!(
        s["requests"],
        json!({ "event.bind": 1, "event.offline.get": 2, "event.offline.list": 2, "profile": 1 })
    );
    assert_eq!(
        s["rejections"],
        json!({ "ERROR_ARGUMENT": 1, "invalid_token": 1 })
    );
    assert_eq!(s["queue_rows"], json!(2));
    assert_eq!(s["reserved_rows"], json!(1));
    assert_eq!(s["notifications_sent"], json!(0));
    assert_eq!(s["faults_injected"], json!(0));
    let level = s["bucket_level"].as_f64().unwrap();
    assert!(level > 5.0 && level <= 6.0, "six REST requests: {level}");
    assert!(s["operating"]["event.offline.list"].as_f64().unwrap() >= 0.0);
}

#[test]
fn sigterm_and_sigint_exit_cleanly() {
    // Right after the first line, several times: the handlers must already be in place.
    for signal in ["TERM", "INT", "TERM", "INT", "TERM", "TERM"] {
        let emu = Emu::start();
        let status = emu.signal(signal);
        assert_eq!(status.code(), Some(0), "SIG{signal}: {status:?}");
    }
    // And after some work.
    let emu = Emu::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = emu.admin().await;
        emu.call("profile", &a, json!({})).await.ok();
    });
    assert_eq!(emu.signal("TERM").code(), Some(0));
}

#[test]
fn bad_arguments_exit_with_usage() {
    let out = command().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
    assert!(out.stdout.is_empty());
    let out = command().arg("--listen").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn tls_serves_https_with_a_self_signed_certificate() {
    if native_only("--tls") {
        return;
    }
    let emu = Emu::start_with(&["--tls"]);
    assert!(emu.base.starts_with("https://127.0.0.1:"), "{}", emu.base);
    let t = emu.token_with(json!({})).await;
    assert!(t.raw["client_endpoint"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    emu.config(json!({ "require_https": true })).await;
    let p = emu.call("profile", &t.access, json!({})).await;
    assert_eq!(p.ok()["ID"], json!("1"));

    // The certificate is for 127.0.0.1: a client that trusts it verifies the connection.
    let pem = emu.get("cert").await["pem"].as_str().unwrap().to_string();
    assert!(pem.contains("BEGIN CERTIFICATE"));
    let strict = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = strict
        .get(format!("{}/rest/profile?auth={}", emu.base, t.access))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A client that does not trust it refuses; plain http to the port fails.
    let plain_trust = common::client(false);
    assert!(plain_trust
        .get(format!("{}/rest/profile", emu.base))
        .send()
        .await
        .is_err());
    let http_url = emu.base.replacen("https://", "http://", 1);
    let r = common::client(false)
        .get(format!("{http_url}/rest/profile?auth={}", t.access))
        .send()
        .await;
    assert!(
        r.map(|r| r.status() != 200).unwrap_or(true),
        "plain http must not be served on a TLS port"
    );
}
