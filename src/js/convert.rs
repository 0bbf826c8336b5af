//! Reading the app's option objects and writing results and errors back to JavaScript. Option
//! fields are read one by one with our own messages, so an error can never echo a value the app
//! passed (a token in the wrong field, say).

use super::platform::prop;
use crate::core::args::Tree;
use crate::core::error::{B24Error, Result};
use crate::core::options::Given;
use crate::core::text::concat;
use js_sys::Function;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::AbortSignal;

#[wasm_bindgen(module = "/src/js/glue.js")]
extern "C" {
    /// The one error class (defined in glue.js).
    #[wasm_bindgen(js_name = B24Error, extends = js_sys::Error)]
    type JsB24Error;
    #[wasm_bindgen(constructor, js_class = B24Error)]
    fn new(
        message: &str,
        code: &str,
        status: u16,
        method: &str,
        description: &str,
        retryable: bool,
        moved_to: Option<String>,
    ) -> JsB24Error;
    #[wasm_bindgen(js_name = asyncIterable)]
    pub fn async_iterable(next: &JsValue) -> JsValue;
}

/// The `B24Error` instance for an error.
pub fn js_error(e: &B24Error) -> JsValue {
    JsB24Error::new(
        &e.message(),
        &e.code,
        e.status,
        &e.method,
        &e.description,
        e.retryable(),
        e.moved_to.clone(),
    )
    .into()
}

/// A field that is neither `undefined` nor `null`.
pub fn field(v: &JsValue, key: &str) -> Option<JsValue> {
    if !v.is_object() {
        return None;
    }
    Some(prop(v, &super::platform::key(key))).filter(|f| !f.is_undefined() && !f.is_null())
}

pub fn field_str(v: &JsValue, key: &str) -> Option<String> {
    field(v, key).and_then(|f| f.as_string())
}

pub fn field_f64(v: &JsValue, key: &str) -> Option<f64> {
    field(v, key).and_then(|f| f.as_f64())
}

fn wrong(key: &str, want: &str) -> B24Error {
    B24Error::invalid(key, &concat(&["must be ", want]))
}

/// The options object itself: absent is an empty one, anything else must be an object.
pub fn options(v: Option<&JsValue>, name: &str) -> Result<JsValue> {
    let Some(v) = v else {
        return Ok(js_sys::Object::new().into());
    };
    if v.is_undefined() || v.is_null() {
        Ok(js_sys::Object::new().into())
    } else if v.is_object() && !js_sys::Array::is_array(v) {
        Ok(v.clone())
    } else {
        Err(wrong(name, "an object"))
    }
}

pub fn opt_str(v: &JsValue, key: &str) -> Result<Option<String>> {
    match field(v, key) {
        None => Ok(None),
        Some(f) => f
            .as_string()
            .map(Some)
            .ok_or_else(|| wrong(key, "a string")),
    }
}

pub fn req_str(v: &JsValue, key: &str) -> Result<String> {
    opt_str(v, key)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| B24Error::invalid(key, "is required"))
}

pub fn opt_f64(v: &JsValue, key: &str) -> Result<Option<f64>> {
    match field(v, key) {
        None => Ok(None),
        Some(f) => f
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| wrong(key, "a finite number")),
    }
}

pub fn opt_bool(v: &JsValue, key: &str) -> Result<Option<bool>> {
    match field(v, key) {
        None => Ok(None),
        Some(f) => f.as_bool().map(Some).ok_or_else(|| wrong(key, "a boolean")),
    }
}

pub fn opt_fn(v: &JsValue, key: &str) -> Result<Option<Function>> {
    match field(v, key) {
        None => Ok(None),
        Some(f) => f
            .dyn_into::<Function>()
            .map(Some)
            .map_err(|_| wrong(key, "a function")),
    }
}

/// `logger`: a function `(level, message, context)`, or an object with the official SDK's
/// `LoggerInterface` methods (at least debug, info, warning and error).
pub fn opt_logger(v: &JsValue) -> Result<Option<JsValue>> {
    let Some(f) = field(v, "logger") else {
        return Ok(None);
    };
    let methods = ["debug", "info", "warning", "error"];
    if f.is_function()
        || (f.is_object()
            && methods
                .iter()
                .all(|m| field(&f, m).is_some_and(|x| x.is_function())))
    {
        return Ok(Some(f));
    }
    Err(wrong(
        "logger",
        "a function (level, message, context) or an object with debug, info, warning and error methods (the official SDK's LoggerInterface)",
    ))
}

pub fn opt_signal(v: &JsValue) -> Result<Option<AbortSignal>> {
    match field(v, "signal") {
        None => Ok(None),
        Some(f) => f
            .dyn_into::<AbortSignal>()
            .map(Some)
            .map_err(|_| wrong("signal", "an AbortSignal")),
    }
}

/// A JSON-like value the core must look into (filters, batch parameters). Functions, symbols,
/// BigInts and structures nested deeper than 32 levels (cycles) are refused.
pub fn tree(v: &JsValue, name: &str) -> Result<Tree> {
    fn plain(v: &JsValue, depth: u8) -> bool {
        if v.is_function() || v.is_symbol() || v.is_bigint() || depth > 32 {
            return false;
        }
        if let Some(a) = v.dyn_ref::<js_sys::Array>() {
            return a.iter().all(|x| plain(&x, depth + 1));
        }
        if v.is_object() {
            return js_sys::Object::values(v.unchecked_ref())
                .iter()
                .all(|x| plain(&x, depth + 1));
        }
        true
    }
    if !plain(v, 0) {
        return Err(wrong(
            name,
            "plain JSON data (objects, arrays, strings, numbers, booleans)",
        ));
    }
    Ok(crate::core::read::tree::<super::platform::WebPlatform>(
        &super::platform::JsData(v.clone()),
    ))
}

pub fn opt_tree(v: &JsValue, key: &str) -> Result<Option<Tree>> {
    field(v, key).map(|f| tree(&f, key)).transpose()
}

/// An options object, read field by field for the core's resolution (`core::options`).
impl Given for JsValue {
    fn number(&self, key: &str) -> Result<Option<f64>> {
        opt_f64(self, key)
    }
    fn text(&self, key: &str) -> Result<Option<String>> {
        opt_str(self, key)
    }
    fn flag(&self, key: &str) -> Result<Option<bool>> {
        opt_bool(self, key)
    }
    fn tree(&self, key: &str) -> Result<Option<Tree>> {
        opt_tree(self, key)
    }
    fn nested(&self, key: &str) -> Option<JsValue> {
        field(self, key).filter(|f| f.is_object())
    }
}

/// A list of strings, or one string.
pub fn strings(v: &JsValue, name: &str) -> Result<Vec<String>> {
    if let Some(s) = v.as_string() {
        return Ok(vec![s]);
    }
    let arr = v
        .dyn_ref::<js_sys::Array>()
        .ok_or_else(|| wrong(name, "a string or an array of strings"))?;
    arr.iter()
        .map(|x| {
            x.as_string()
                .ok_or_else(|| wrong(name, "an array of strings"))
        })
        .collect()
}

pub fn opt_strings(v: &JsValue, key: &str) -> Result<Option<Vec<String>>> {
    field(v, key).map(|f| strings(&f, key)).transpose()
}

pub fn opt_numbers(v: &JsValue, key: &str) -> Result<Option<Vec<f64>>> {
    let Some(f) = field(v, key) else {
        return Ok(None);
    };
    let arr = f
        .dyn_ref::<js_sys::Array>()
        .ok_or_else(|| wrong(key, "an array of numbers"))?;
    arr.iter()
        .map(|x| x.as_f64().ok_or_else(|| wrong(key, "an array of numbers")))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
