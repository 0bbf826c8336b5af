//! Shared by the browser suites: the emulator's address (compiled in, as gloo-net's tests do)
//! and its control API, reached with `fetch` like any other cross-origin server.
#![allow(dead_code)]

use b24_offline::js::{Bitrix24, OfflineQueue};
use js_sys::{Array, Object, Promise, Reflect, JSON};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

pub fn base() -> &'static str {
    let url = option_env!("B24_EMULATOR_URL").unwrap_or_default();
    assert!(
        !url.is_empty(),
        "B24_EMULATOR_URL must be set at compile time (run .ci/browser-tests)"
    );
    url
}

/// `127.0.0.1:PORT`, what the library takes as `domain` (with `allowHttp`).
pub fn host() -> &'static str {
    base()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
}

/// One HTTP exchange with the emulator: status and parsed JSON body.
pub async fn send(method: &str, path: &str, body: Option<&str>) -> (u16, JsValue) {
    send_as(method, path, body.map(|b| ("application/json", b))).await
}

/// The same with an explicit content type for the body.
pub async fn send_as(method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, JsValue) {
    let init = RequestInit::new();
    init.set_method(method);
    if let Some((_, b)) = body {
        init.set_body(&JsValue::from_str(b));
    }
    let req = Request::new_with_str_and_init(&format!("{}{path}", base()), &init).unwrap();
    if let Some((content_type, _)) = body {
        req.headers().set("content-type", content_type).unwrap();
    }
    let fetch = web_sys::window()
        .expect("a window")
        .fetch_with_request(&req);
    let resp: Response = JsFuture::from(fetch)
        .await
        .expect("the emulator answers")
        .dyn_into()
        .unwrap();
    let text = JsFuture::from(resp.text().unwrap())
        .await
        .unwrap()
        .as_string()
        .unwrap();
    (resp.status(), JSON::parse(&text).unwrap_or(JsValue::NULL))
}

/// A control call that must succeed.
pub async fn control(path: &str, body: &str) -> JsValue {
    let (status, v) = send("POST", &format!("/_emulator/{path}"), Some(body)).await;
    assert_eq!(
        status,
        200,
        "control call {path} failed: {}",
        JSON::stringify(&v).map(String::from).unwrap_or_default()
    );
    v
}

pub async fn get(path: &str) -> JsValue {
    send("GET", &format!("/_emulator/{path}"), None).await.1
}

/// Puts the shared emulator back to a known state: an empty portal (no apps, bindings, queue
/// or tokens), no faults, limits off, features on. Tests run one after another, so each test
/// starting with this sees only its own doing.
pub async fn fresh() {
    control("reset", "{}").await;
    send("DELETE", "/_emulator/faults", None).await;
    control(
        "config",
        r#"{"rate_limit": null, "operating_limit_s": null, "operating_cost_s": {}, "extended_mode": true, "auth_connector": true, "token_ttl_s": 3600}"#,
    )
    .await;
}

pub fn at(v: &JsValue, path: &[&str]) -> JsValue {
    path.iter().fold(v.clone(), |cur, key| {
        Reflect::get(&cur, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    })
}

pub fn text(v: &JsValue, path: &[&str]) -> String {
    at(v, path).as_string().unwrap_or_default()
}

pub fn num(v: &JsValue, path: &[&str]) -> f64 {
    at(v, path).as_f64().unwrap_or(f64::NAN)
}

/// A fresh token of application `client_id` (admin unless told otherwise).
pub async fn token(client_id: &str, admin: bool) -> JsValue {
    control(
        "token",
        &format!(r#"{{"client_id":"{client_id}","admin":{admin}}}"#),
    )
    .await
}

/// Queues `count` changes of `event` for objects `first..first+count`.
pub async fn trigger(event: &str, first: u32, count: u32) -> f64 {
    let items: Vec<String> = (first..first + count)
        .map(|i| format!(r#"{{"event":"{event}","data":{{"FIELDS":{{"ID":"{i}"}}}}}}"#))
        .collect();
    let r = control("trigger", &format!(r#"{{"items":[{}]}}"#, items.join(","))).await;
    num(&r, &["queued"])
}

/// Builds a JS object from JSON text.
pub fn obj(json: &str) -> JsValue {
    JSON::parse(json).expect("test JSON")
}

pub fn set(target: &JsValue, key: &str, value: &JsValue) {
    Reflect::set(target, &JsValue::from_str(key), value).unwrap();
}

pub fn new_object() -> JsValue {
    Object::new().into()
}

/// Awaits a promise the library returned: Ok(value) or Err(the rejection).
pub async fn wait(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

/// The requests the emulator counted for a method so far.
pub async fn requests(method: &str) -> f64 {
    let stats = get("stats").await;
    at(&stats, &["requests", method]).as_f64().unwrap_or(0.0)
}

pub async fn rejections(code: &str) -> f64 {
    let stats = get("stats").await;
    at(&stats, &["rejections", code]).as_f64().unwrap_or(0.0)
}

// The library, as JavaScript calls it.

pub const U: Option<JsValue> = None;

pub fn some(json: &str) -> Option<JsValue> {
    Some(obj(json))
}

pub fn options(access: &str, extra: &str) -> JsValue {
    obj(&format!(
        r#"{{"domain":"{}","accessToken":"{access}","allowHttp":true,"limits":false{extra}}}"#,
        base()
    ))
}

/// A client of a fresh application `client_id` (an admin), and its token response.
pub async fn client(client_id: &str, extra: &str) -> (Bitrix24, JsValue) {
    let t = token(client_id, true).await;
    (
        Bitrix24::with_token(options(&text(&t, &["access_token"]), extra)).expect("valid options"),
        t,
    )
}

pub fn queue(b24: &Bitrix24, connector: Option<&str>) -> OfflineQueue {
    let opts = connector.map(|c| obj(&format!(r#"{{"connector":"{c}"}}"#)));
    b24.offline(opts).expect("queue")
}

/// The rejection of a promise that must fail, checked to be a real `B24Error`.
pub async fn failure(p: Promise) -> JsValue {
    let e = wait(p).await.expect_err("the call must fail");
    assert!(e.is_instance_of::<js_sys::Error>(), "a real Error");
    assert_eq!(text(&e, &["name"]), "B24Error");
    assert!(!text(&e, &["stack"]).is_empty(), "with a stack");
    e
}

pub fn length(v: &JsValue) -> u32 {
    v.dyn_ref::<Array>().map(|a| a.length()).unwrap_or(u32::MAX)
}

/// Waits `ms` in the browser (a real timer).
pub async fn sleep_ms(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        let global: web_sys::Window = js_sys::global().unchecked_into();
        global
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    wait(p).await.unwrap();
}
