//! The one place that does I/O: a JSON POST through `fetch` that never follows a redirect,
//! with a timeout and the caller's `AbortSignal`, a sleep that an abort cuts short, and the
//! engine's JSON and property access. Works in
//! windows, workers and Node (global `fetch` and `setTimeout`). Both live in `glue.js`, where
//! they are a few lines each.

use crate::core::platform::{HttpResponse, TransportError};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::AbortSignal;

#[wasm_bindgen(module = "/src/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = sleep)]
    fn sleep_promise_js(ms: f64, signal: Option<&AbortSignal>) -> js_sys::Promise;
    fn post(
        url: &str,
        body: String,
        timeout_ms: f64,
        max_bytes: u32,
        signal: Option<&AbortSignal>,
    ) -> js_sys::Promise;
    #[wasm_bindgen(js_name = parseJson)]
    fn parse_json_js(text: &str) -> JsValue;
    /// `o[k]`, `undefined` where a getter throws (cheaper than `Reflect.get` through
    /// wasm-bindgen's catching wrapper, and called for every field of every row).
    pub fn prop(o: &JsValue, k: &JsValue) -> JsValue;
    /// `o[k] = v` on an object made here.
    pub fn put(o: &JsValue, k: &JsValue, v: &JsValue);
    #[wasm_bindgen(js_name = toJson)]
    fn to_json_js(value: &JsValue) -> Option<String>;
}

/// The engine's `JSON.parse`; `None` when the text is not JSON.
pub fn parse_json(text: &str) -> Option<JsValue> {
    Some(parse_json_js(text)).filter(|v| !v.is_undefined())
}

/// The engine's `JSON.stringify`; `None` for what JSON cannot carry (a BigInt, a cycle, a
/// function).
pub fn to_json(value: &JsValue) -> Option<String> {
    to_json_js(value)
}

/// A promise that resolves with `true` after `ms`; its timer ends when this is dropped.
pub struct Timer(pub js_sys::Promise);

impl Timer {
    pub fn new(ms: f64, signal: Option<&AbortSignal>) -> Timer {
        Timer(sleep_promise_js(ms, signal))
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(f) = prop(&self.0, &"cancel".into()).dyn_ref::<js_sys::Function>() {
            let _ = f.call0(&self.0);
        }
    }
}

/// Waits `ms` (cut to what timers accept); `false` when the signal aborted first. Dropped
/// before it ends, it ends its timer.
pub async fn sleep(ms: f64, signal: Option<&AbortSignal>) -> bool {
    let timer = Timer::new(ms, signal);
    JsFuture::from(timer.0.clone())
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// POSTs `body` (JSON text) to `url`, or GETs it without a body (`None`, sent as an empty
/// string: a JSON body never is), and reads the answer as text: at most `max_bytes` of it,
/// a longer one is not read further (and nothing of it crosses into the wasm).
pub async fn post_json(
    url: &str,
    body: Option<String>,
    timeout_ms: f64,
    max_bytes: u32,
    signal: Option<&AbortSignal>,
) -> Result<HttpResponse, TransportError> {
    let sent = post(url, body.unwrap_or_default(), timeout_ms, max_bytes, signal);
    let answer = JsFuture::from(sent)
        .await
        .map_err(|e| match e.as_string().as_deref() {
            Some("timeout") => TransportError::Timeout,
            Some("aborted") => TransportError::Aborted,
            Some("too large") => TransportError::TooLarge,
            // strip_prefix, not trim_start_matches: that one brought std's substring searcher
            // and its panic formatting into the wasm (5 KB gzip).
            Some(why) => {
                TransportError::Network(why.strip_prefix("network: ").unwrap_or(why).into())
            }
            None => TransportError::Network("fetch failed".into()),
        })?;
    let part = |i: u32| prop(&answer, &JsValue::from(i));
    let status = part(0).as_f64().unwrap_or(0.0) as u16;
    match part(1).as_string() {
        Some(body) => Ok(HttpResponse { status, body }),
        None => Err(TransportError::Redirect {
            status,
            location: part(2).as_string(),
        }),
    }
}
