//! The core's [`Platform`] in a browser or Node: `fetch`, `setTimeout`, `Math.random`, and the
//! engine's own `JSON` (so no JSON library is compiled into the wasm).

use crate::core::args::{Arg, Body};
use crate::core::error::{B24Error, Result};
use crate::core::out::{Out, ToOut};
use crate::core::platform::{
    Context, HttpRequest, HttpResponse, Level, Platform, TransportError, MAX_RESPONSE_BYTES,
};
use crate::transport;
pub use crate::transport::{prop, put};
use js_sys::{Array, Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::AbortSignal;

/// A JavaScript value passed through the core untouched.
#[derive(Debug, Clone)]
pub struct JsData(pub JsValue);

#[wasm_bindgen(module = "/src/js/glue.js")]
extern "C" {
    /// Hands one message to the app's logger (glue.js; empty context parts are left out).
    #[wasm_bindgen(js_name = logTo)]
    fn log_to(
        logger: &JsValue,
        level: &str,
        message: &str,
        portal: &str,
        method: &str,
        process_id: &str,
    );
    /// A new consumer id from a random one: in Node it names the process and host, so that a
    /// restarted consumer knows its predecessor is gone (glue.js `ownerGone`).
    #[wasm_bindgen(js_name = ownerId)]
    pub fn owner_id(rand: &str) -> String;
}

#[derive(Clone)]
pub struct WebPlatform {
    /// The app's logger: `(level, message, context) => void`, or an object with the official
    /// SDK's `LoggerInterface` methods (checked by [`super::convert::opt_logger`]).
    pub logger: Option<JsValue>,
}

thread_local! {
    static KEYS: std::cell::RefCell<Vec<(Box<str>, JsValue)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A property name as a JavaScript string, decoded once. The same few dozen names (the portal's
/// fields, the keys of results and options) cross into JavaScript thousands of times a page of
/// events, and decoding each anew was most of what a `list()` cost in Node. Short names only,
/// and a bounded number of them: a name built from input is decoded as before.
pub fn key(name: &str) -> JsValue {
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some((_, v)) = keys.iter().find(|(k, _)| **k == *name) {
            return v.clone();
        }
        let v = JsValue::from_str(name);
        if name.len() <= 32 && keys.len() < 96 {
            keys.push((name.into(), v.clone()));
        }
        v
    })
}

pub fn arg_to_js(arg: &Arg<JsData>) -> JsValue {
    match arg {
        Arg::Str(s) => JsValue::from_str(s),
        Arg::Int(i) => JsValue::from_f64(*i as f64),
        Arg::Bool(b) => JsValue::from_bool(*b),
        Arg::List(items) => items.iter().map(arg_to_js).collect::<Array>().into(),
        Arg::Map(entries) => {
            let obj = Object::new();
            for (k, v) in entries {
                put(&obj, &key(k), &arg_to_js(v));
            }
            obj.into()
        }
        Arg::Data(d) => d.0.clone(),
    }
}

/// A result as JavaScript gets it: plain objects and arrays (see `core::out`).
pub fn to_js<T: ToOut<JsData> + ?Sized>(value: &T) -> JsValue {
    write(&value.out())
}

fn write(out: &Out<'_, JsData>) -> JsValue {
    match out {
        Out::Null => JsValue::NULL,
        Out::Bool(b) => JsValue::from_bool(*b),
        Out::Num(n) => JsValue::from_f64(*n),
        Out::Str(s) => JsValue::from_str(s),
        Out::Data(d) => d.0.clone(),
        Out::List(items) => items.iter().map(write).collect::<Array>().into(),
        Out::Obj(fields) => {
            let obj = Object::new();
            for (k, v) in fields {
                put(&obj, &key(k), &write(v));
            }
            obj.into()
        }
    }
}

impl Platform for WebPlatform {
    type Data = JsData;
    type Signal = AbortSignal;

    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    fn random(&self) -> f64 {
        js_sys::Math::random()
    }

    async fn sleep(&self, ms: f64, signal: Option<&AbortSignal>) -> Result<()> {
        if transport::sleep(ms, signal).await {
            Ok(())
        } else {
            Err(B24Error::new(
                crate::core::error::code::ABORTED,
                "the operation was aborted",
            ))
        }
    }

    fn aborted(&self, signal: &AbortSignal) -> bool {
        signal.aborted()
    }

    async fn send(
        &self,
        request: HttpRequest<'_>,
        signal: Option<&AbortSignal>,
    ) -> std::result::Result<HttpResponse, TransportError> {
        self.send_limited(request, MAX_RESPONSE_BYTES, signal).await
    }

    async fn send_limited(
        &self,
        request: HttpRequest<'_>,
        max_bytes: u32,
        signal: Option<&AbortSignal>,
    ) -> std::result::Result<HttpResponse, TransportError> {
        let HttpRequest {
            url,
            body,
            timeout_ms,
        } = request;
        transport::post_json(url, body, timeout_ms, max_bytes, signal).await
    }

    fn encode(&self, body: &Body<JsData>, connector: Option<&str>, auth: &str) -> Result<String> {
        let obj = Object::new();
        if let Some(base) = &body.base {
            Object::assign(&obj, &Object::from(base.0.clone()));
        }
        for (k, v) in &body.args {
            put(&obj, &key(k), &arg_to_js(v));
        }
        if let Some(c) = connector {
            let name = key("auth_connector");
            if !Reflect::has(&obj, &name).unwrap_or(false) {
                put(&obj, &name, &JsValue::from_str(c));
            }
        }
        put(&obj, &key("auth"), &JsValue::from_str(auth));
        transport::to_json(&obj).ok_or_else(|| {
            B24Error::invalid(
                "params",
                "cannot be sent as JSON (a BigInt, a cycle or a function?)",
            )
        })
    }

    fn parse(&self, text: &str) -> Option<JsData> {
        transport::parse_json(text).map(JsData)
    }

    fn null() -> JsData {
        JsData(JsValue::NULL)
    }

    fn number_text(n: f64) -> String {
        js_sys::Number::from(n)
            .to_string_with_radix(10)
            .map(String::from)
            .unwrap_or_default()
    }

    fn field(value: &JsData, key: &str) -> Option<JsData> {
        if !value.0.is_object() {
            return None;
        }
        Some(prop(&value.0, &self::key(key)))
            .filter(|v| !v.is_undefined() && !v.is_null())
            .map(JsData)
    }

    fn text(value: &JsData) -> Option<String> {
        value.0.as_string()
    }

    fn number(value: &JsData) -> Option<f64> {
        value.0.as_f64()
    }

    fn boolean(value: &JsData) -> Option<bool> {
        value.0.as_bool()
    }

    fn items(value: &JsData) -> Option<Vec<JsData>> {
        value
            .0
            .dyn_ref::<Array>()
            .map(|a| a.iter().map(JsData).collect())
    }

    fn entries(value: &JsData) -> Option<Vec<(String, JsData)>> {
        if !value.0.is_object() || Array::is_array(&value.0) || value.0.is_function() {
            return None;
        }
        let entries = Object::entries(value.0.unchecked_ref::<Object>());
        Some(
            entries
                .iter()
                .filter_map(|pair| {
                    let pair: Array = pair.unchecked_into();
                    Some((pair.get(0).as_string()?, JsData(pair.get(1))))
                })
                .collect(),
        )
    }

    fn log(&self, level: Level, message: &str, context: &Context<'_>) {
        if let Some(logger) = &self.logger {
            log_to(
                logger,
                level.name(),
                message,
                context.portal.unwrap_or_default(),
                context.method.unwrap_or_default(),
                context.process_id.unwrap_or_default(),
            );
        }
    }
}
