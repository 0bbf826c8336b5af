//! The one place that does I/O: a JSON POST through `fetch` (gloo-net), with a timeout and the
//! caller's `AbortSignal`, and a sleep that an abort cuts short. Works in windows, workers and
//! Node (global `fetch` and `setTimeout`).

use crate::core::platform::{HttpResponse, TransportError};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::AbortSignal;

#[wasm_bindgen(module = "/src/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = sleep)]
    fn sleep_promise_js(ms: f64, signal: Option<&AbortSignal>) -> js_sys::Promise;

    type Deadline;
    fn deadline(ms: f64, outer: Option<&AbortSignal>) -> Deadline;
    #[wasm_bindgen(method, getter)]
    fn signal(this: &Deadline) -> AbortSignal;
    #[wasm_bindgen(method, js_name = timedOut)]
    fn timed_out(this: &Deadline) -> bool;
    #[wasm_bindgen(method)]
    fn done(this: &Deadline);
}

/// A promise that resolves with `true` after `ms`.
pub fn sleep_promise(ms: f64) -> js_sys::Promise {
    sleep_promise_js(ms, None)
}

/// Waits `ms`; `false` when the signal aborted first.
pub async fn sleep(ms: f64, signal: Option<&AbortSignal>) -> bool {
    JsFuture::from(sleep_promise_js(ms, signal))
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// POSTs `body` (JSON text) to `url` and reads the whole answer as text.
pub async fn post_json(
    url: &str,
    body: String,
    timeout_ms: f64,
    signal: Option<&AbortSignal>,
) -> Result<HttpResponse, TransportError> {
    let deadline = deadline(timeout_ms, signal);
    let outcome = exchange(url, body, &deadline.signal()).await;
    let timed_out = deadline.timed_out();
    deadline.done();
    match outcome {
        Ok(resp) => Ok(resp),
        Err(_) if timed_out => Err(TransportError::Timeout),
        Err(_) if signal.map(AbortSignal::aborted).unwrap_or(false) => Err(TransportError::Aborted),
        Err(e) => Err(TransportError::Network(e)),
    }
}

async fn exchange(url: &str, body: String, signal: &AbortSignal) -> Result<HttpResponse, String> {
    let request = gloo_net::http::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .abort_signal(Some(signal))
        .body(body)
        .map_err(|e| e.to_string())?;
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok(HttpResponse { status, body })
}
