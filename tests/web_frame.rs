//! The frame channel's message handling in a real browser: messages from any other origin are
//! ignored unread, non-string data does not throw, unknown callback ids are ignored, and a
//! malformed, oversized or missing answer fails that request only.
#![cfg(target_arch = "wasm32")]

mod support;

use b24_offline::frame::Channel;
use b24_offline::js::Bitrix24;
use std::cell::RefCell;
use std::rc::Rc;
use support::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;
use web_sys::{MessageEvent, MessageEventInit};

wasm_bindgen_test_configure!(run_in_browser);

const PORTAL: &str = "https://portal.test";

/// Delivers a message to this window as if the parent window had posted it from `origin`.
fn deliver(origin: &str, data: &JsValue) {
    let window = web_sys::window().unwrap();
    let parent: js_sys::Object = window.parent().unwrap().unwrap().into();
    deliver_from(origin, Some(&parent), data);
}

/// The same from any window (or none).
fn deliver_from(origin: &str, source: Option<&js_sys::Object>, data: &JsValue) {
    let init = MessageEventInit::new();
    init.set_data(data);
    init.set_origin(origin);
    init.set_source(source);
    let event = MessageEvent::new_with_event_init_dict("message", &init).unwrap();
    web_sys::window().unwrap().dispatch_event(&event).unwrap();
}

type Slot = Rc<RefCell<Option<Result<JsValue, String>>>>;

/// Starts a request and returns where its outcome will land, and its callback id.
async fn start(channel: &Rc<Channel>, command: &'static str, timeout_ms: f64) -> (Slot, String) {
    let slot: Slot = Rc::default();
    let (c, s) = (channel.clone(), slot.clone());
    let before = channel.pending_ids();
    wasm_bindgen_futures::spawn_local(async move {
        let r = c.request(command, None, timeout_ms).await;
        *s.borrow_mut() = Some(r.map_err(|e| e.message()));
    });
    // Let the spawned request run up to its wait.
    wait(js_sys::Promise::resolve(&JsValue::NULL))
        .await
        .unwrap();
    let id = channel
        .pending_ids()
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("the request is pending");
    (slot, id)
}

async fn settle() {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 30)
            .unwrap();
    });
    wait(p).await.unwrap();
}

#[wasm_bindgen_test]
async fn only_the_portal_origin_is_heard() {
    let channel = Channel::open(PORTAL.into(), "sid1".into()).unwrap();
    let (slot, id) = start(&channel, "getInitData", 5_000.0).await;
    // A forged answer from another origin, with the right callback id.
    deliver(
        "https://evil.test",
        &JsValue::from_str(&format!(r#"{id}:{{"AUTH_ID":"forged"}}"#)),
    );
    deliver(
        "http://portal.test",
        &JsValue::from_str(&format!(r#"{id}:{{"AUTH_ID":"forged"}}"#)),
    );
    // The portal's origin, but not the parent window: a sibling frame, a popup, a message
    // posted by some other script of the page.
    let forged = JsValue::from_str(&format!(r#"{id}:{{"AUTH_ID":"forged"}}"#));
    deliver_from(PORTAL, None, &forged);
    let port: js_sys::Object = web_sys::MessageChannel::new().unwrap().port1().into();
    deliver_from(PORTAL, Some(&port), &forged);
    // Non-string data and unknown callback ids from the portal itself.
    deliver(PORTAL, &obj(r#"{"callback": "x"}"#));
    deliver(PORTAL, &JsValue::from_f64(42.0));
    deliver(PORTAL, &JsValue::NULL);
    deliver(PORTAL, &JsValue::from_str("no-colon-at-all"));
    deliver(PORTAL, &JsValue::from_str(r#"unknown-id:{"AUTH_ID":"x"}"#));
    settle().await;
    assert!(slot.borrow().is_none(), "still waiting for the portal");
    assert_eq!(channel.pending_ids(), vec![id.clone()]);
    // The real answer, with colons inside its JSON.
    deliver(
        PORTAL,
        &JsValue::from_str(&format!(r#"{id}:{{"AUTH_ID":"real","PATH":"a:b:c"}}"#)),
    );
    settle().await;
    let answer = slot.borrow_mut().take().unwrap().unwrap();
    assert_eq!(text(&answer, &["AUTH_ID"]), "real");
    assert_eq!(text(&answer, &["PATH"]), "a:b:c");
    assert!(channel.pending_ids().is_empty());
}

#[wasm_bindgen_test]
async fn bad_answers_fail_their_request_only() {
    let channel = Channel::open(PORTAL.into(), "sid2".into()).unwrap();
    let (broken, broken_id) = start(&channel, "getInitData", 5_000.0).await;
    let (huge, huge_id) = start(&channel, "refreshAuth", 5_000.0).await;
    let (fine, fine_id) = start(&channel, "setTitle", 5_000.0).await;
    deliver(
        PORTAL,
        &JsValue::from_str(&format!("{broken_id}:{{not json")),
    );
    deliver(
        PORTAL,
        &JsValue::from_str(&format!("{huge_id}:\"{}\"", "x".repeat(1 << 20))),
    );
    deliver(PORTAL, &JsValue::from_str(&format!("{fine_id}:{{}}")));
    settle().await;
    let e = broken.borrow_mut().take().unwrap().unwrap_err();
    assert!(
        e.starts_with("FRAME_UNAVAILABLE") && e.contains("not valid JSON"),
        "{e}"
    );
    let e = huge.borrow_mut().take().unwrap().unwrap_err();
    assert!(e.contains("larger than 1 MiB"), "{e}");
    assert!(fine.borrow_mut().take().unwrap().is_ok());
}

#[wasm_bindgen_test]
async fn an_unanswered_request_times_out() {
    let channel = Channel::open(PORTAL.into(), "sid3".into()).unwrap();
    let (slot, _) = start(&channel, "getInitData", 150.0).await;
    for _ in 0..20 {
        settle().await;
        if slot.borrow().is_some() {
            break;
        }
    }
    let e = slot.borrow_mut().take().unwrap().unwrap_err();
    assert!(
        e.contains("did not answer getInitData within 150 ms"),
        "{e}"
    );
    assert!(
        channel.pending_ids().is_empty(),
        "a timed-out request is forgotten"
    );
}

#[wasm_bindgen_test]
async fn outside_a_frame_from_frame_fails_fast() {
    let started = js_sys::Date::now();
    let e = failure(Bitrix24::from_frame(U)).await;
    assert_eq!(text(&e, &["code"]), "FRAME_UNAVAILABLE");
    assert!(text(&e, &["description"]).contains("not inside an iframe"));
    assert!(js_sys::Date::now() - started < 200.0);
}
