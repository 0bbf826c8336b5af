//! `verifyOfflineSignal`: the check an app server runs on the portal's onOfflineEvent POST.

use super::convert::{js_error, tree};
use super::platform::to_js;
use crate::core::error::{B24Error, Result};
use crate::core::signal::{form_tree, verify};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Accepts the body of an onOfflineEvent request (form text, JSON text, `URLSearchParams` or
/// an object your framework parsed) only if it carries this application's token. Returns
/// `{ event, ts, domain, memberId }`; throws `B24Error` with code `INVALID_SIGNAL` otherwise.
#[wasm_bindgen(js_name = verifyOfflineSignal, unchecked_return_type = "OfflineSignal")]
pub fn verify_offline_signal(
    #[wasm_bindgen(unchecked_param_type = "string | URLSearchParams | Record<string, unknown>")]
    body: JsValue,
    #[wasm_bindgen(js_name = applicationToken)] application_token: String,
) -> std::result::Result<JsValue, JsValue> {
    let run = || -> Result<JsValue> {
        let payload = if let Some(text) = body.as_string() {
            let t = text.trim_start();
            if t.starts_with('{') {
                let parsed = crate::transport::parse_json(t).ok_or_else(|| {
                    B24Error::new(
                        crate::core::error::code::INVALID_SIGNAL,
                        "the body is not valid JSON",
                    )
                })?;
                tree(&parsed, "body")?
            } else {
                form_tree(&text)
            }
        } else if let Some(params) = body.dyn_ref::<web_sys::UrlSearchParams>() {
            form_tree(&String::from(params.to_string()))
        } else if body.is_object() {
            tree(&body, "body")?
        } else {
            return Err(B24Error::invalid(
                "body",
                "must be the request body: a string, URLSearchParams or an object",
            ));
        };
        Ok(to_js(&verify(&payload, &application_token)?))
    };
    run().map_err(|e| js_error(&e))
}
