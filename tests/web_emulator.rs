//! The emulator as a browser sees it: cross-origin calls (CORS preflight included), JSON and
//! PHP-style form bodies, readable error statuses. The library's own browser suites stand on
//! exactly this, so it is checked in Chrome and Firefox on its own.
//!
//! The emulator's address comes in at compile time (`B24_EMULATOR_URL`), the way gloo-net's
//! tests find their servers; `.ci/browser-tests` starts the emulator and sets it.
#![cfg(target_arch = "wasm32")]

mod support;

use js_sys::Array;
use support::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn json(path: &str, body: &str) -> (u16, wasm_bindgen::JsValue) {
    send("POST", path, Some(body)).await
}

async fn form(path: &str, body: &str) -> (u16, wasm_bindgen::JsValue) {
    send_as(
        "POST",
        path,
        Some(("application/x-www-form-urlencoded", body)),
    )
    .await
}

/// A token of an application of its own, so tests sharing one emulator never share a queue.
async fn auth(client_id: &str) -> String {
    text(&token(client_id, true).await, &["access_token"])
}

#[wasm_bindgen_test]
async fn json_call_crosses_origin_with_preflight() {
    let auth = auth("web.profile").await;
    let (status, body) = json("/rest/profile.json", &format!(r#"{{"auth":"{auth}"}}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(text(&body, &["result", "ID"]), "1");
    assert!(at(&body, &["time", "start"]).as_f64().is_some());
}

#[wasm_bindgen_test]
async fn form_bodies_with_php_keys_reserve_and_clear() {
    fresh().await;
    let auth = auth("web.form").await;
    let (status, _) = form(
        "/rest/event.bind",
        &format!("auth={auth}&event=ONCRMDEALUPDATE&event_type=offline"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(trigger("ONCRMDEALUPDATE", 1, 2).await, 2.0);
    let (status, got) = form(
        "/rest/event.offline.get",
        &format!("auth={auth}&clear=0&filter%5B%3E%3DID%5D=1&order%5BID%5D=ASC"),
    )
    .await;
    assert_eq!(status, 200);
    let events: Array = at(&got, &["result", "events"]).dyn_into().unwrap();
    assert_eq!(events.length(), 2);
    assert_eq!(text(&got, &["result", "process_id"]).len(), 32);
    assert_eq!(text(&events.get(0), &["EVENT_DATA", "FIELDS", "ID"]), "1");
    let pid = text(&got, &["result", "process_id"]);
    let first = text(&events.get(0), &["MESSAGE_ID"]);
    let (status, _) = form(
        "/rest/event.offline.clear",
        &format!("auth={auth}&process_id={pid}&message_id[]={first}"),
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = send(
        "GET",
        &format!("/rest/event.offline.list?auth={auth}"),
        None,
    )
    .await;
    assert_eq!(
        num(&list, &["total"]),
        1.0,
        "one row acked, one still reserved"
    );
    assert_eq!(text(&list, &["result", "0", "PROCESS_ID"]), pid);
}

#[wasm_bindgen_test]
async fn errors_keep_their_status_and_body_across_origin() {
    let (status, body) = json("/rest/event.offline.get", "{}").await;
    assert_eq!(status, 401);
    assert_eq!(text(&body, &["error"]), "NO_AUTH_FOUND");
    let auth = auth("web.errors").await;
    let (status, body) = json(
        "/rest/event.offline.get",
        &format!(r#"{{"auth":"{auth}","limit":0}}"#),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(text(&body, &["error"]), "ERROR_ARGUMENT");
    assert!(text(&body, &["error_description"]).contains("limit"));
}
