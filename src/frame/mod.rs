//! The placement frame's I/O: one `message` listener that only ever looks at messages the
//! parent window posted from the portal's exact origin (another frame of the same origin, a
//! popup or the app itself cannot answer for the portal), and requests to the parent window
//! with a callback id and a timeout.

use crate::core::digits::decimal;
use crate::core::error::{code, B24Error, Result};
use crate::core::frame::{callback_id, command_text, split_answer};
use crate::core::text::concat;
use js_sys::{Function, Promise};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::MessageEvent;

/// Requests waiting for their answer: (callback id, resolve).
type Pending = Rc<RefCell<Vec<(String, Function)>>>;

pub struct Channel {
    /// `https://DOMAIN`: the only origin messages are sent to and accepted from.
    pub origin: String,
    pub app_sid: String,
    pending: Pending,
    counter: Cell<u32>,
    listener: Closure<dyn FnMut(MessageEvent)>,
}

/// What the listener resolves a request with.
enum Answer {
    Json(String),
    TooLarge,
}

fn unavailable(why: String) -> B24Error {
    B24Error::new(code::FRAME_UNAVAILABLE, why)
}

impl Channel {
    /// Starts listening for the portal's answers.
    pub fn open(origin: String, app_sid: String) -> Result<Rc<Channel>> {
        let window = web_sys::window()
            .ok_or_else(|| unavailable("there is no window here (a worker?)".into()))?;
        let pending: Pending = Rc::default();
        let (p, o) = (pending.clone(), origin.clone());
        let parent: JsValue = window
            .parent()
            .ok()
            .flatten()
            .map(JsValue::from)
            .unwrap_or(JsValue::NULL);
        let listener = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            // Anything not posted by the parent from the portal's origin is dropped before its
            // data is even looked at.
            if event.origin() != o || event.source().map(JsValue::from) != Some(parent.clone()) {
                return;
            }
            let Some(data) = event.data().as_string() else {
                return;
            };
            let (callback, answer) = match split_answer(&data) {
                Some(Ok((cb, json))) => (cb, Answer::Json(json.to_string())),
                Some(Err(cb)) => (cb, Answer::TooLarge),
                None => return,
            };
            let resolve = {
                let mut list = p.borrow_mut();
                let Some(i) = list.iter().position(|(id, _)| id == callback) else {
                    return;
                };
                list.swap_remove(i).1
            };
            let value = match answer {
                Answer::Json(json) => JsValue::from_str(&json),
                Answer::TooLarge => JsValue::NULL,
            };
            let _ = resolve.call1(&JsValue::NULL, &value);
        });
        window
            .add_event_listener_with_callback("message", listener.as_ref().unchecked_ref())
            .map_err(|_| unavailable("cannot listen for the portal's messages".into()))?;
        Ok(Rc::new(Channel {
            origin,
            app_sid,
            pending,
            counter: Cell::new(0),
            listener,
        }))
    }

    /// Callback ids of the requests still waiting (for tests of the listener).
    pub fn pending_ids(&self) -> Vec<String> {
        self.pending
            .borrow()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Sends `command` to the parent window and waits for its answer (parsed JSON).
    pub async fn request(
        &self,
        command: &str,
        params: Option<&JsValue>,
        timeout_ms: f64,
    ) -> Result<JsValue> {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let callback = callback_id(js_sys::Math::random(), n);
        let message: JsValue = if crate::core::text::contains(command, b':') {
            let o = js_sys::Object::new();
            let set = |k: &str, v: &JsValue| crate::transport::put(&o, &JsValue::from_str(k), v);
            set("method", &JsValue::from_str(command));
            set("params", params.unwrap_or(&JsValue::from_str("")));
            set("callback", &JsValue::from_str(&callback));
            set("appSid", &JsValue::from_str(&self.app_sid));
            o.into()
        } else {
            let json = match params {
                Some(p) => Some(
                    crate::transport::to_json(p)
                        .ok_or_else(|| B24Error::invalid("params", "cannot be sent as JSON"))?,
                ),
                None => None,
            };
            JsValue::from_str(&command_text(
                command,
                json.as_deref(),
                &callback,
                &self.app_sid,
            ))
        };
        let pending = self.pending.clone();
        let id = callback.clone();
        let answer =
            Promise::new(&mut |resolve, _| pending.borrow_mut().push((id.clone(), resolve)));
        let window =
            web_sys::window().ok_or_else(|| unavailable("there is no window here".into()))?;
        let parent = window
            .parent()
            .ok()
            .flatten()
            .ok_or_else(|| unavailable("there is no parent window".into()))?;
        if parent.post_message(&message, &self.origin).is_err() {
            self.forget(&callback);
            return Err(unavailable(concat(&[
                "cannot post ",
                command,
                " to the portal",
            ])));
        }
        let timeout = crate::transport::Timer::new(timeout_ms, None);
        let winner = JsFuture::from(Promise::race(&js_sys::Array::of2(&answer, &timeout.0)))
            .await
            .unwrap_or(JsValue::UNDEFINED);
        if winner.is_undefined() || winner.as_bool().is_some() {
            self.forget(&callback);
            return Err(unavailable(concat(&[
                "the portal did not answer ",
                command,
                " within ",
                &decimal(timeout_ms as u64),
                " ms",
            ])));
        }
        let text = winner.as_string().ok_or_else(|| {
            unavailable(concat(&[
                "the portal's answer to ",
                command,
                " is larger than 1 MiB",
            ]))
        })?;
        if text.is_empty() {
            return Ok(JsValue::NULL);
        }
        crate::transport::parse_json(&text).ok_or_else(|| {
            unavailable(concat(&[
                "the portal's answer to ",
                command,
                " is not valid JSON",
            ]))
        })
    }

    fn forget(&self, callback: &str) {
        self.pending.borrow_mut().retain(|(id, _)| id != callback);
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Some(w) = web_sys::window() {
            let _ = w.remove_event_listener_with_callback(
                "message",
                self.listener.as_ref().unchecked_ref(),
            );
        }
    }
}
