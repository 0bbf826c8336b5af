//! The REST transport: JSON / form (PHP keys) / query-string bodies, `.json`, GET and POST,
//! case-insensitive parameters, the `{result, time}` envelope, numbers as strings, errors, CORS.

mod common;

use common::{ids, msg_id, Emu, Resp};
use serde_json::{json, Value};

async fn setup() -> (Emu, String) {
    let emu = Emu::start();
    emu.no_rate_limit().await;
    let auth = emu.admin().await;
    emu.bind_offline(&auth, "ONCRMDEALUPDATE", None).await;
    emu.deal_updates(1..=6).await;
    (emu, auth)
}

fn form(emu: &Emu, method: &str, body: String) -> reqwest::RequestBuilder {
    emu.http
        .post(format!("{}/rest/{method}", emu.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn envelope_time_fields_and_numbers_as_strings() {
    let (emu, auth) = setup().await;
    let r = emu
        .offline_get(&auth, json!({ "clear": 0, "limit": 1 }))
        .await;
    let keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, vec!["result", "time"]);
    let t = &r.body["time"];
    for f in ["start", "finish", "duration", "processing", "operating"] {
        assert!(t[f].is_number(), "time.{f} in {t}");
    }
    assert!(t["operating_reset_at"].is_i64(), "{t}");
    let start = t["start"].as_f64().unwrap();
    let finish = t["finish"].as_f64().unwrap();
    assert!(finish >= start);
    assert!(t["duration"].as_f64().unwrap() >= 0.0);
    for f in ["date_start", "date_finish"] {
        let d = t[f].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(d).expect("ISO 8601 with offset");
        assert!((parsed.timestamp() as f64 - start).abs() < 2.0, "{f} = {d}");
    }
    let clock = emu.get("clock").await;
    assert!((clock["now"].as_f64().unwrap() - start).abs() < 5.0);

    let e = &r.events()[0];
    assert_eq!(e["ID"], json!("1"));
    assert_eq!(e["EVENT_NAME"], json!("ONCRMDEALUPDATE"));
    assert_eq!(e["EVENT_DATA"], json!({ "FIELDS": { "ID": "1" } }));
    assert_eq!(e["EVENT_ADDITIONAL"], json!({ "user_id": "1" }));
    assert_eq!(
        e["MESSAGE_ID"],
        json!(msg_id(
            "ONCRMDEALUPDATE",
            &json!({ "FIELDS": { "ID": "1" } })
        ))
    );
    let ts = e["TIMESTAMP_X"].as_str().unwrap();
    // `2024-07-18T12:32:31+02:00`: seconds precision and a numeric offset.
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    assert_eq!(ts.len(), 25, "{ts}");
    assert!(
        matches!(&ts[19..20], "+" | "-"),
        "TIMESTAMP_X with offset: {ts}"
    );

    let l = emu.offline_list(&auth, json!({})).await;
    let keys: Vec<&str> = l
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, vec!["result", "total", "time"]);
    assert_eq!(l.body["total"], json!(6));
    let item = &l.ok()[0];
    assert_eq!(item["ERROR"], json!("0"));
    assert_eq!(item["ID"], json!("1"));
    assert_eq!(item["PROCESS_ID"], json!(r.process_id().unwrap()));
}

#[tokio::test]
async fn form_bodies_with_php_keys_query_strings_and_json_agree() {
    let (emu, auth) = setup().await;
    let want = vec![3, 4];
    // JSON.
    let j = emu
        .offline_list(&auth, json!({ "filter": { ">ID": 2, "<=ID": 4 } }))
        .await;
    assert_eq!(ids(j.ok().as_array().unwrap()), want);
    // Form with PHP-style nested keys.
    let body = format!(
        "auth={auth}&{}=2&{}=4",
        enc("filter[>ID]"),
        enc("filter[<=ID]")
    );
    let f = emu.send(form(&emu, "event.offline.list", body)).await;
    assert_eq!(ids(f.ok().as_array().unwrap()), want);
    // Query string on a GET.
    let q = emu
        .send(emu.http.get(format!(
            "{}/rest/event.offline.list?auth={auth}&filter[%3EID]=2&filter[%3C%3DID]=4",
            emu.base
        )))
        .await;
    assert_eq!(ids(q.ok().as_array().unwrap()), want);
    // auth in the query, parameters in a JSON body.
    let mixed = emu
        .send(
            emu.http
                .post(format!("{}/rest/event.offline.list?auth={auth}", emu.base))
                .header("content-type", "application/json")
                .body(json!({ "filter": { ">ID": 2, "<=ID": 4 } }).to_string()),
        )
        .await;
    assert_eq!(ids(mixed.ok().as_array().unwrap()), want);
    // `.json` suffix, GET.
    let suffixed = emu
        .send(emu.http.get(format!(
            "{}/rest/event.offline.list.json?auth={auth}&order[ID]=DESC",
            emu.base
        )))
        .await;
    assert_eq!(
        ids(suffixed.ok().as_array().unwrap()),
        vec![6, 5, 4, 3, 2, 1]
    );

    // Form arrays: reserve then clear by message_id[] and id[].
    let body = format!("auth={auth}&clear=0&limit=4");
    let g = emu.send(form(&emu, "event.offline.get.json", body)).await;
    let pid = g.process_id().unwrap();
    assert_eq!(ids(&g.events()), vec![1, 2, 3, 4]);
    let m1 = msg_id("ONCRMDEALUPDATE", &json!({ "FIELDS": { "ID": "1" } }));
    let m2 = msg_id("ONCRMDEALUPDATE", &json!({ "FIELDS": { "ID": "2" } }));
    let body = format!(
        "auth={auth}&process_id={pid}&{k}={m1}&{k}={m2}",
        k = enc("message_id[]")
    );
    let c = emu.send(form(&emu, "event.offline.clear", body)).await;
    assert_eq!(c.ok(), &json!(true));
    assert_eq!(ids(&emu.queue().await), vec![3, 4, 5, 6]);
    let body = format!("auth={auth}&process_id={pid}&{}=3", enc("id[0]"));
    emu.send(form(&emu, "event.offline.clear", body)).await.ok();
    assert_eq!(ids(&emu.queue().await), vec![4, 5, 6]);
    // Form: a bad id is an argument error, as in JSON.
    let body = format!("auth={auth}&process_id={pid}&{}=x", enc("id[]"));
    emu.send(form(&emu, "event.offline.clear", body))
        .await
        .err(400, "ERROR_ARGUMENT");
    // Form flags: clear=0 as a string, error as a string.
    let body = format!("auth={auth}&clear=0&error=0&limit=1");
    let g = emu.send(form(&emu, "event.offline.get", body)).await;
    assert_eq!(ids(&g.events()), vec![5]);
}

#[tokio::test]
async fn parameter_names_are_case_insensitive() {
    let (emu, auth) = setup().await;
    let r = emu
        .offline_get(
            &auth,
            json!({ "CLEAR": 0, "LIMIT": 2, "Filter": { ">ID": 1 }, "ORDER": { "ID": "DESC" } }),
        )
        .await;
    assert!(r.process_id().is_some());
    assert_eq!(ids(&r.events()), vec![6, 5]);
    let body = format!("AUTH={auth}&LIMIT=1&CLEAR=0");
    let r = emu.send(form(&emu, "EVENT.OFFLINE.GET", body)).await;
    assert_eq!(ids(&r.events()), vec![1]);
}

#[tokio::test]
async fn errors_have_the_documented_shape() {
    let (emu, auth) = setup().await;
    let r = emu.call("no.such.method", &auth, json!({})).await;
    r.err(404, "ERROR_METHOD_NOT_FOUND");
    let r = emu
        .send(
            emu.http
                .post(format!("{}/rest/profile?auth={auth}", emu.base))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    r.err(400, "INVALID_REQUEST");
    let r = emu
        .call("event.offline.get", &auth, json!({ "limit": 0 }))
        .await;
    r.err(400, "ERROR_ARGUMENT");
    assert_eq!(r.body.as_object().unwrap().len(), 2, "{:?}", r.body);
    let r: Resp = emu
        .send(emu.http.get(format!("{}/nowhere", emu.base)))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn cors_preflight_and_simple_requests() {
    let (emu, auth) = setup().await;
    let resp = emu
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/rest/event.offline.get", emu.base),
        )
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        "http://app.example"
    );
    let methods = h
        .get("access-control-allow-methods")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = h
        .get("access-control-allow-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("content-type"), "{allowed}");
    // The preflight is not a REST call.
    assert!(emu.stats().await["requests"]
        .get("event.offline.get")
        .is_none());

    let resp = emu
        .http
        .post(format!("{}/rest/event.offline.list", emu.base))
        .header("Origin", "http://app.example")
        .header("content-type", "application/json")
        .body(json!({ "auth": auth }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("access-control-allow-origin").unwrap(),
        "http://app.example"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["total"], json!(6));
}

#[tokio::test]
async fn the_portal_page_is_served() {
    let emu = Emu::start();
    let resp = emu
        .http
        .get(format!(
            "{}/portal/?app=http://localhost:9/app.html",
            emu.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let html = resp.text().await.unwrap();
    // The page answers the frame protocol's commands and names the frame the portal's way.
    for needle in [
        "getInitData",
        "refreshAuth",
        "setTitle",
        "resizeWindow",
        "setInstallFinish",
        "${domain}|${protocol}|${appSid}",
        "/_emulator/token",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
}
