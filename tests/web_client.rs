//! The client, through the same entry points JavaScript uses, against the emulator over real
//! HTTP: every offline-event method, token refresh, retries, limits, bad bodies, scoping and
//! the onOfflineEvent check, in headless Chrome and Firefox.
#![cfg(target_arch = "wasm32")]

mod support;

use b24_offline::js::signal::verify_offline_signal;
use b24_offline::js::Bitrix24;
use js_sys::{Array, Function, Promise, Reflect};
use std::cell::Cell;
use std::rc::Rc;
use support::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn every_offline_method_round_trips() {
    fresh().await;
    let (b24, _) = client("web.client.all", "").await;
    let q = queue(&b24, None);
    let f = wait(q.features(U)).await.unwrap();
    assert_eq!(
        (
            at(&f, &["extended"]).as_bool(),
            at(&f, &["connector"]).as_bool()
        ),
        (Some(true), Some(true))
    );

    let bound = wait(q.bind(obj(r#"["onCrmDealUpdate", "ONCRMDEALADD"]"#), U))
        .await
        .unwrap();
    assert_eq!(
        at(&bound, &["0", "event"]).as_string().as_deref(),
        Some("ONCRMDEALUPDATE")
    );
    assert_eq!(at(&bound, &["0", "created"]).as_bool(), Some(true));
    let again = wait(q.bind(JsValue::from_str("ONCRMDEALUPDATE"), U))
        .await
        .unwrap();
    assert_eq!(
        at(&again, &["0", "created"]).as_bool(),
        Some(false),
        "binding twice is not an error"
    );
    let bindings = wait(q.bindings(U)).await.unwrap();
    assert_eq!(length(&bindings), 2);
    assert_eq!(at(&bindings, &["0", "offline"]).as_bool(), Some(true));

    assert_eq!(trigger("ONCRMDEALUPDATE", 1, 120).await, 120.0);
    let page = wait(q.list(some(r#"{"filter": {">ID": 0}, "order": {"ID": "ASC"}}"#)))
        .await
        .unwrap();
    assert_eq!(num(&page, &["total"]), 120.0);
    assert_eq!(num(&page, &["next"]), 50.0);
    assert_eq!(length(&at(&page, &["events"])), 50);
    let first = at(&page, &["events", "0"]);
    assert!(num(&first, &["id"]) > 0.0, "ids are numbers");
    assert_eq!(text(&first, &["messageId"]).len(), 32);
    assert_eq!(text(&first, &["name"]), "ONCRMDEALUPDATE");
    assert_eq!(text(&first, &["data", "FIELDS", "ID"]), "1");
    assert_eq!(at(&first, &["error"]).as_bool(), Some(false));
    assert!(
        at(&first, &["processId"]).is_undefined(),
        "free rows have no process id"
    );

    // listAll pages by itself (3 pages of 50).
    let iter = q.list_all(U).unwrap();
    let next: Function = Reflect::get(&iter, &"next".into())
        .unwrap()
        .dyn_into()
        .unwrap();
    let mut seen = 0;
    loop {
        let step = wait(next.call0(&iter).unwrap().dyn_into().unwrap())
            .await
            .unwrap();
        if at(&step, &["done"]).as_bool() == Some(true) {
            break;
        }
        seen += 1;
    }
    assert_eq!(seen, 120);

    // Reserve, re-select, ack some, fail one, ack the rest.
    let taken = wait(q.get(some(r#"{"limit": 10}"#))).await.unwrap();
    let pid = text(&taken, &["processId"]);
    assert_eq!(pid.len(), 32);
    assert_eq!(length(&at(&taken, &["events"])), 10);
    let again = wait(q.get(some(&format!(r#"{{"processId": "{pid}", "limit": 50}}"#))))
        .await
        .unwrap();
    assert_eq!(
        length(&at(&again, &["events"])),
        10,
        "re-selected by process id"
    );
    let ids: Vec<String> = (0..3)
        .map(|i| text(&taken, &["events", &i.to_string(), "messageId"]))
        .collect();
    let clear = obj(&format!(
        r#"{{"processId": "{pid}", "messageIds": ["{}", "{}"]}}"#,
        ids[0], ids[1]
    ));
    wait(q.clear(clear)).await.unwrap();
    wait(q.error(obj(&format!(
        r#"{{"processId": "{pid}", "messageIds": ["{}"]}}"#,
        ids[2]
    ))))
    .await
    .unwrap();
    let errors = wait(q.list(some(r#"{"filter": {"ERROR": 1}}"#)))
        .await
        .unwrap();
    assert_eq!(num(&errors, &["total"]), 1.0);
    assert_eq!(text(&errors, &["events", "0", "messageId"]), ids[2]);
    let record_ids = format!("[{}]", num(&taken, &["events", "3", "id"]));
    wait(q.clear(obj(&format!(
        r#"{{"processId": "{pid}", "ids": {record_ids}}}"#
    ))))
    .await
    .unwrap();
    wait(q.clear(obj(&format!(r#"{{"processId": "{pid}"}}"#))))
        .await
        .unwrap();
    let left = wait(q.list(U)).await.unwrap();
    assert_eq!(
        num(&left, &["total"]),
        111.0,
        "120 - 10 reserved + 1 in the error queue"
    );
    let from_errors = wait(q.get(some(r#"{"error": true}"#))).await.unwrap();
    assert_eq!(length(&at(&from_errors, &["events"])), 1);

    // Destructive read.
    let gone = wait(q.get(some(r#"{"clear": true, "limit": 5}"#)))
        .await
        .unwrap();
    assert!(at(&gone, &["processId"]).is_null());
    assert_eq!(length(&at(&gone, &["events"])), 5);

    assert!(wait(q.notify_at(
        "http://127.0.0.1:9/hook".into(),
        some(r#"{"minTimeout": 5}"#)
    ))
    .await
    .unwrap()
    .as_bool()
    .unwrap());
    assert_eq!(
        wait(q.stop_notify("http://127.0.0.1:9/hook".into(), U))
            .await
            .unwrap()
            .as_f64(),
        Some(1.0)
    );
    assert_eq!(
        wait(q.unbind("ONCRMDEALADD".into(), U))
            .await
            .unwrap()
            .as_f64(),
        Some(1.0)
    );

    let stats = b24.stats();
    assert!(num(&stats, &["requests"]) >= 15.0);
    assert_eq!(num(&stats, &["byMethod", "event.offline.clear"]), 3.0);
    assert!(
        length(&at(&stats, &["operating"])) > 0,
        "operating time tracked per method"
    );
}

#[wasm_bindgen_test]
async fn generic_calls_pages_and_batches() {
    fresh().await;
    let (b24, _) = client("web.client.generic", "").await;
    let id = wait(b24.call(
        "crm.deal.add".into(),
        some(r#"{"fields": {"TITLE": "A"}}"#),
        U,
    ))
    .await
    .unwrap();
    assert_eq!(id.as_f64(), Some(1.0));
    let deal = wait(b24.call("crm.deal.get".into(), some(r#"{"id": 1}"#), U))
        .await
        .unwrap();
    assert_eq!(text(&deal, &["TITLE"]), "A");
    // 120 commands go out as 3 batch requests.
    let before = requests("batch").await;
    let cmds: Vec<String> = (0..120)
        .map(|i| format!(r#"["crm.deal.add", {{"fields": {{"TITLE": "d{i}"}}}}]"#))
        .collect();
    let r = wait(b24.batch(obj(&format!("[{}]", cmds.join(","))), U))
        .await
        .unwrap();
    assert_eq!(requests("batch").await - before, 3.0);
    assert_eq!(at(&r, &["ok"]).as_bool(), Some(true));
    assert_eq!(num(&r, &["results", "119"]), 121.0);
    let page = wait(b24.call_page(
        "crm.deal.list".into(),
        some(r#"{"order": {"ID": "ASC"}, "start": 50}"#),
        U,
    ))
    .await
    .unwrap();
    assert_eq!(num(&page, &["total"]), 121.0);
    assert_eq!(num(&page, &["next"]), 100.0);
    assert_eq!(length(&at(&page, &["result"])), 50);
    // Per-command errors come back as B24Error objects; halt stops the rest.
    let r = wait(b24.batch(
        obj(r#"{"a": ["crm.deal.get", {"id": 999}], "b": ["crm.deal.get", {"id": 1}]}"#),
        some(r#"{"halt": true}"#),
    ))
    .await
    .unwrap();
    assert_eq!(at(&r, &["ok"]).as_bool(), Some(false));
    assert_eq!(text(&r, &["errors", "a", "code"]), "NOT_FOUND");
    assert_eq!(text(&r, &["errors", "b", "code"]), "BATCH_HALTED");
}

fn counting_refresh(client_id: &'static str, count: Rc<Cell<u32>>) -> Function {
    let f = Closure::<dyn FnMut(JsValue) -> Promise>::new(move |_current: JsValue| {
        count.set(count.get() + 1);
        future_to_promise(async move {
            let t = token(client_id, true).await;
            let out = new_object();
            set(&out, "accessToken", &at(&t, &["access_token"]));
            set(&out, "expiresIn", &JsValue::from_f64(3600.0));
            Ok(out)
        })
    });
    f.into_js_value().unchecked_into()
}

#[wasm_bindgen_test]
async fn one_refresh_for_many_parallel_expired_calls() {
    fresh().await;
    let count = Rc::new(Cell::new(0));
    let t = token("web.client.refresh", true).await;
    let access = text(&t, &["access_token"]);
    let opts = options(&access, "");
    set(
        &opts,
        "refresh",
        &counting_refresh("web.client.refresh", count.clone()),
    );
    let b24 = Bitrix24::with_token(opts).unwrap();
    control("expire", &format!(r#"{{"access_token":"{access}"}}"#)).await;
    let calls: Vec<Promise> = (0..12).map(|_| b24.call("profile".into(), U, U)).collect();
    let all = wait(Promise::all(&calls.iter().collect::<Array>()))
        .await
        .unwrap();
    assert_eq!(length(&all), 12);
    assert_eq!(count.get(), 1, "twelve 401s, one refresh");
    assert_eq!(num(&b24.stats(), &["refreshes"]), 1.0);

    // A token close to its end is refreshed before it is sent.
    let count2 = Rc::new(Cell::new(0));
    let t = token("web.client.refresh", true).await;
    let opts = options(&text(&t, &["access_token"]), r#","expiresIn":20"#);
    set(
        &opts,
        "refresh",
        &counting_refresh("web.client.refresh", count2.clone()),
    );
    let b24 = Bitrix24::with_token(opts).unwrap();
    let before = rejections("expired_token").await;
    wait(b24.call("profile".into(), U, U)).await.unwrap();
    assert_eq!(count2.get(), 1);
    assert_eq!(
        rejections("expired_token").await,
        before,
        "no 401 was needed"
    );

    // Without a refresh callback the error says so, and never shows the token.
    let (b24, t) = client("web.client.norefresh", "").await;
    let access = text(&t, &["access_token"]);
    control("expire", &format!(r#"{{"access_token":"{access}"}}"#)).await;
    let e = failure(b24.call("profile".into(), U, U)).await;
    assert_eq!(
        (text(&e, &["code"]), num(&e, &["status"])),
        ("expired_token".to_string(), 401.0)
    );
    assert!(text(&e, &["description"]).contains("no refresh callback"));
    assert!(!text(&e, &["message"]).contains(&access) && !text(&e, &["stack"]).contains(&access));
}

#[wasm_bindgen_test]
async fn rate_limits_and_server_errors_are_retried() {
    fresh().await;
    let (b24, _) = client("web.client.retry", "").await;
    control(
        "faults",
        r#"{"rules": [{"method": "profile", "kind": "query_limit", "times": 2}]}"#,
    )
    .await;
    wait(b24.call("profile".into(), U, U)).await.unwrap();
    assert_eq!(num(&b24.stats(), &["rateLimited"]), 2.0);
    control("faults", r#"{"rules": [{"method": "crm.deal.list", "kind": "http_500", "times": 2}, {"method": "event.offline.list", "kind": "malformed_json", "times": 1}]}"#).await;
    wait(b24.call("crm.deal.list".into(), U, U)).await.unwrap();
    wait(queue(&b24, None).list(U)).await.unwrap();
    let stats = b24.stats();
    assert_eq!(num(&stats, &["retries"]), 5.0);
    assert_eq!(num(&stats, &["errors", "INTERNAL_SERVER_ERROR"]), 2.0);
    assert_eq!(num(&stats, &["errors", "BAD_RESPONSE"]), 1.0);
}

#[wasm_bindgen_test]
async fn ambiguous_failures_of_writes_are_not_repeated() {
    fresh().await;
    let (b24, _) = client("web.client.writes", "").await;
    control(
        "faults",
        r#"{"rules": [{"method": "crm.deal.add", "kind": "http_500", "times": 1}]}"#,
    )
    .await;
    let before = requests("crm.deal.add").await;
    let e = failure(b24.call("crm.deal.add".into(), some(r#"{"fields": {}}"#), U)).await;
    assert_eq!(
        (text(&e, &["code"]), num(&e, &["status"])),
        ("INTERNAL_SERVER_ERROR".to_string(), 500.0)
    );
    assert_eq!(at(&e, &["retryable"]).as_bool(), Some(true));
    assert_eq!(text(&e, &["method"]), "crm.deal.add");
    assert_eq!(
        requests("crm.deal.add").await - before,
        1.0,
        "a write is not repeated blindly"
    );
    // An HTML page from a proxy is a BAD_RESPONSE with its status.
    control(
        "faults",
        r#"{"rules": [{"method": "crm.deal.add", "kind": "html_502", "times": 1}]}"#,
    )
    .await;
    let e = failure(b24.call("crm.deal.add".into(), some(r#"{"fields": {}}"#), U)).await;
    assert_eq!(
        (text(&e, &["code"]), num(&e, &["status"])),
        ("BAD_RESPONSE".to_string(), 502.0)
    );
    // The caller may declare a write idempotent.
    wait(b24.call("crm.deal.add".into(), some(r#"{"fields": {}}"#), U))
        .await
        .unwrap();
    control(
        "faults",
        r#"{"rules": [{"method": "crm.deal.update", "kind": "drop", "times": 1}]}"#,
    )
    .await;
    wait(b24.call(
        "crm.deal.update".into(),
        some(r#"{"id": 1, "fields": {"TITLE": "x"}}"#),
        some(r#"{"idempotent": true}"#),
    ))
    .await
    .unwrap();
}

#[wasm_bindgen_test]
async fn operation_time_limit_pauses_only_that_method() {
    fresh().await;
    control(
        "config",
        r#"{"operating_limit_s": 300, "operating_cost_s": {"crm.deal.list": 100}}"#,
    )
    .await;
    // The client knows the limit: it stops before the portal would refuse.
    let (b24, _) = client("web.client.operating", r#","operatingLimit":300"#).await;
    for _ in 0..2 {
        wait(b24.call("crm.deal.list".into(), U, U)).await.unwrap();
    }
    let controller = web_sys::AbortController::new().unwrap();
    let signal = controller.signal();
    let opts = new_object();
    set(&opts, "signal", &signal);
    let paused = b24.call("crm.deal.list".into(), U, Some(opts));
    let before = requests("crm.deal.list").await;
    gloo_sleep(300).await;
    controller.abort();
    let e = failure(paused).await;
    assert_eq!(text(&e, &["code"]), "ABORTED");
    assert_eq!(
        requests("crm.deal.list").await,
        before,
        "the paused call was never sent"
    );
    assert!(num(&b24.stats(), &["waitedMs"]) > 0.0);
    // Other methods go on.
    wait(b24.call("profile".into(), U, U)).await.unwrap();

    // A client that does not know the limit learns it from the 429 and pauses the method.
    let (b24, _) = client("web.client.operating2", r#","operatingLimit":100000"#).await;
    for _ in 0..4 {
        wait(b24.call("crm.deal.list".into(), U, U)).await.unwrap();
    }
    let controller = web_sys::AbortController::new().unwrap();
    let opts = new_object();
    set(&opts, "signal", &controller.signal());
    let blocked = b24.call("crm.deal.list".into(), U, Some(opts));
    gloo_sleep(500).await;
    controller.abort();
    assert_eq!(text(&failure(blocked).await, &["code"]), "ABORTED");
    assert_eq!(
        num(&b24.stats(), &["operatingLimited"]),
        1.0,
        "one 429, then a pause instead of more"
    );
}

async fn gloo_sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    wait(p).await.unwrap();
}

#[wasm_bindgen_test]
async fn non_admins_are_refused_by_the_portal() {
    fresh().await;
    let t = token("web.client.user", false).await;
    let b24 = Bitrix24::with_token(options(&text(&t, &["access_token"]), "")).unwrap();
    let e = failure(queue(&b24, None).list(U)).await;
    assert_eq!(
        (
            text(&e, &["code"]),
            num(&e, &["status"]),
            at(&e, &["retryable"]).as_bool()
        ),
        ("ACCESS_DENIED".to_string(), 403.0, Some(false))
    );
    assert_eq!(text(&e, &["method"]), "event.offline.list");
}

#[wasm_bindgen_test]
async fn connectors_scope_queues_and_own_writes() {
    fresh().await;
    let (b24, _) = client("web.client.connector", "").await;
    let plain = queue(&b24, None);
    let sync = queue(&b24, Some("crm_sync"));
    assert_eq!(sync.connector().as_deref(), Some("crm_sync"));
    wait(plain.bind(JsValue::from_str("ONCRMDEALADD"), U))
        .await
        .unwrap();
    wait(sync.bind(JsValue::from_str("ONCRMDEALADD"), U))
        .await
        .unwrap();
    // A change by a user reaches both queues (object 1000: the CRM's own deals start at 1).
    trigger("ONCRMDEALADD", 1000, 1).await;
    // The app's own write through the connector queue skips that queue only.
    wait(sync.call("crm.deal.add".into(), some(r#"{"fields": {}}"#), U))
        .await
        .unwrap();
    let (p, s) = (
        wait(plain.list(U)).await.unwrap(),
        wait(sync.list(U)).await.unwrap(),
    );
    assert_eq!((num(&p, &["total"]), num(&s, &["total"])), (2.0, 1.0));
    // And its own write without a connector skips the plain queue.
    wait(b24.call("crm.deal.add".into(), some(r#"{"fields": {}}"#), U))
        .await
        .unwrap();
    let (p, s) = (
        wait(plain.list(U)).await.unwrap(),
        wait(sync.list(U)).await.unwrap(),
    );
    assert_eq!((num(&p, &["total"]), num(&s, &["total"])), (2.0, 2.0));
    let rows = get("queue").await;
    let connectors: Vec<String> = rows
        .dyn_ref::<Array>()
        .unwrap()
        .iter()
        .filter(|r| text(r, &["APP_ID"]) == "web.client.connector")
        .map(|r| text(&r, &["CONNECTOR_ID"]))
        .collect();
    assert_eq!(connectors.iter().filter(|c| *c == "crm_sync").count(), 2);
}

#[wasm_bindgen_test]
async fn offline_signals_need_the_application_token() {
    fresh().await;
    let t = token("web.client.signal", true).await;
    let app_token = text(&t, &["application_token"]);
    let form = format!("event=ONOFFLINEEVENT&ts=1700000000&auth%5Bdomain%5D={}&auth%5Bmember_id%5D=m1&auth%5Bapplication_token%5D={app_token}", host());
    let s = verify_offline_signal(JsValue::from_str(&form), app_token.clone()).unwrap();
    assert_eq!(
        (
            text(&s, &["event"]),
            num(&s, &["ts"]),
            text(&s, &["memberId"])
        ),
        ("ONOFFLINEEVENT".to_string(), 1700000000.0, "m1".to_string())
    );
    let params = web_sys::UrlSearchParams::new_with_str(&form).unwrap();
    assert!(verify_offline_signal(params.into(), app_token.clone()).is_ok());
    let parsed = obj(&format!(
        r#"{{"event":"ONOFFLINEEVENT","data":[],"auth":{{"application_token":"{app_token}"}}}}"#
    ));
    assert!(verify_offline_signal(parsed, app_token.clone()).is_ok());
    let forged = form.replace(&app_token, "0123456789abcdef0123456789abcdef");
    let e = verify_offline_signal(JsValue::from_str(&forged), app_token.clone()).unwrap_err();
    assert_eq!(text(&e, &["code"]), "INVALID_SIGNAL");
    assert!(!text(&e, &["message"]).contains(&app_token));
    assert!(verify_offline_signal(JsValue::from_str("event=ONCRMDEALADD"), app_token).is_err());
}

#[wasm_bindgen_test]
async fn bad_arguments_fail_before_any_request() {
    fresh().await;
    let (b24, _) = client("web.client.args", "").await;
    let q = queue(&b24, None);
    let before = get("stats").await;
    let cases: Vec<(Promise, &str)> = vec![
        (
            q.list(some(
                r#"{"filter": {"APP_ID": "x"}, "order": {"ID": "ASC"}}"#,
            )),
            "filter",
        ),
        (q.get(some(r#"{"filter": {"ERROR": 1}}"#)), "filter"),
        (q.get(some(r#"{"limit": 0}"#)), "limit"),
        (q.get(some(r#"{"order": {"ID": "UP"}}"#)), "order"),
        (
            q.clear(obj(r#"{"processId": "p", "messageIds": ["short"]}"#)),
            "messageIds",
        ),
        (q.clear(obj(r#"{"processId": "p", "ids": [0]}"#)), "ids"),
        (q.clear(obj(r#"{"messageIds": []}"#)), "processId"),
        (q.error(obj(r#"{"processId": "p"}"#)), "messageIds"),
        (q.bind(obj(r#"["ON CRM"]"#), U), "event"),
        (q.notify_at("ftp://x".into(), U), "handler"),
        (b24.call("../secret".into(), U, U), "method"),
        (
            b24.call("crm.deal.get".into(), Some(JsValue::from_str("id=1")), U),
            "params",
        ),
    ];
    for (p, param) in cases {
        let e = failure(p).await;
        assert_eq!(text(&e, &["code"]), "INVALID_ARGUMENT");
        assert!(
            text(&e, &["description"]).starts_with(param),
            "{param}: {}",
            text(&e, &["description"])
        );
    }
    let after = get("stats").await;
    assert_eq!(
        js_sys::JSON::stringify(&at(&before, &["requests"])).unwrap(),
        js_sys::JSON::stringify(&at(&after, &["requests"])).unwrap()
    );
}

#[wasm_bindgen_test]
async fn tokens_go_only_to_the_portal_over_https() {
    let bad = [
        r#"{"domain":"http://127.0.0.1:1","accessToken":"t"}"#,
        r#"{"domain":"http://example.com","accessToken":"t","allowHttp":true}"#,
        r#"{"domain":"acme.bitrix24.com/rest","accessToken":"t"}"#,
        r#"{"domain":"user:pw@acme.bitrix24.com","accessToken":"t"}"#,
        r#"{"domain":"acme.bitrix24.com"}"#,
        r#"{"domain":"acme.bitrix24.com","accessToken":12345}"#,
        r#"{"domain":"acme.bitrix24.com","accessToken":"t","limits":"fast"}"#,
    ];
    for json in bad {
        let e = Bitrix24::with_token(obj(json)).err().expect(json);
        assert_eq!(text(&e, &["code"]), "INVALID_ARGUMENT", "{json}");
        assert!(!text(&e, &["message"]).contains("12345"));
    }
    let ok = Bitrix24::with_token(obj(
        r#"{"domain":"https://Acme.Bitrix24.com:443/","accessToken":"t","limits":"enterprise"}"#,
    ))
    .unwrap();
    assert_eq!(ok.domain(), "acme.bitrix24.com");
}

/// 200 calls against the emulator's bucket (scaled tenfold: 50 burst, 20 per second, so that
/// the run takes seconds) with the client's bucket at the same scale: not one refusal.
#[wasm_bindgen_test]
async fn a_steady_client_never_hits_query_limit_exceeded() {
    fresh().await;
    control(
        "config",
        r#"{"rate_limit": {"burst": 50, "drain_per_sec": 20}}"#,
    )
    .await;
    control("clock", r#"{"advance_s": 10}"#).await;
    let t = token("web.client.rate", true).await;
    let opts = obj(&format!(
        r#"{{"domain":"{}","accessToken":"{}","allowHttp":true,"limits":{{"burst":50,"drainPerSec":20}}}}"#,
        base(),
        text(&t, &["access_token"])
    ));
    let b24 = Bitrix24::with_token(opts).unwrap();
    let before = rejections("QUERY_LIMIT_EXCEEDED").await;
    let calls: Vec<Promise> = (0..200).map(|_| b24.call("profile".into(), U, U)).collect();
    wait(Promise::all(&calls.iter().collect::<Array>()))
        .await
        .unwrap();
    let stats = b24.stats();
    assert_eq!(num(&stats, &["rateLimited"]), 0.0);
    assert_eq!(num(&stats, &["requests"]), 200.0);
    assert!(
        num(&stats, &["waitedMs"]) > 5_000.0,
        "the client waited instead of being refused"
    );
    assert_eq!(rejections("QUERY_LIMIT_EXCEEDED").await, before);
    fresh().await;
}
