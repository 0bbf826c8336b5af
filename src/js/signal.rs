//! `verifyOfflineSignal`: the check an app server runs on the portal's onOfflineEvent POST.

use super::convert::{js_error, tree};
use super::platform::to_js;
use crate::core::args::Tree;
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
        Ok(to_js(&verify(
            &payload(&body, crate::core::error::code::INVALID_SIGNAL)?,
            &application_token,
        )?))
    };
    run().map_err(|e| js_error(&e))
}

/// A request body as the core reads it: form text, JSON text, `URLSearchParams` or an object a
/// framework parsed. `bad_json` is the code for JSON text that does not parse. (Inlined: the
/// browser build has one caller.)
#[inline(always)]
pub(super) fn payload(body: &JsValue, bad_json: &'static str) -> Result<Tree> {
    if let Some(text) = body.as_string() {
        let t = crate::core::text::trim_start(&text);
        if t.starts_with('{') {
            let parsed = crate::transport::parse_json(t)
                .ok_or_else(|| B24Error::new(bad_json, "the body is not valid JSON"))?;
            return tree(&parsed, "body");
        }
        return Ok(form_tree(&text));
    }
    if let Some(params) = body.dyn_ref::<web_sys::UrlSearchParams>() {
        return Ok(form_tree(&String::from(params.to_string())));
    }
    if body.is_object() {
        return tree(body, "body");
    }
    Err(B24Error::invalid(
        "body",
        "must be the request body: a string, URLSearchParams or an object",
    ))
}
