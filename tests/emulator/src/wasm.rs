//! The binding the npm package's Node shell (`pkg-template/emulator/index.cjs`) drives: one
//! [`Emulator`] per started emulator, its portals told apart by the address they listen on.
//! Everything the portal decides is [`crate::engine`]'s; the shell only moves bytes, sleeps,
//! posts and listens when a [`Step`] asks.

use crate::engine::{self, Resumed};
use crate::notify;
use crate::state::Shared;
use std::sync::Arc;
use wasm_bindgen::prelude::*;

/// One emulator process's worth of portals (they share the clock).
#[wasm_bindgen]
pub struct Emulator {
    main: Arc<Shared>,
}

#[wasm_bindgen]
impl Emulator {
    /// The main portal, serving at `domain` (`127.0.0.1:PORT`).
    #[wasm_bindgen(constructor)]
    pub fn new(domain: String) -> Emulator {
        let main = Arc::new(Shared::new(domain, false));
        main.registry.add(main.clone());
        Emulator { main }
    }

    /// `http://127.0.0.1:PORT`.
    #[wasm_bindgen(getter)]
    pub fn url(&self) -> String {
        self.main.base_url()
    }

    /// The largest body [`Emulator::handle`] takes; past it, the shell passes `oversized`.
    #[wasm_bindgen(js_name = maxBody)]
    pub fn max_body() -> usize {
        engine::MAX_BODY
    }

    /// How long the shell waits for an app's answer to a posted form.
    #[wasm_bindgen(js_name = postTimeoutMs)]
    pub fn post_timeout_ms() -> u32 {
        engine::POST_TIMEOUT_MS as u32
    }

    /// How often the shell calls [`Emulator::tick`].
    #[wasm_bindgen(js_name = tickMs)]
    pub fn tick_ms() -> u32 {
        engine::TICK_MS as u32
    }

    /// A request to the portal at `portal` (its `127.0.0.1:PORT`); `headers` as Node's
    /// `rawHeaders` (name, value, name, value, ...).
    pub fn handle(
        &self,
        portal: &str,
        method: String,
        target: String,
        headers: Vec<String>,
        body: Vec<u8>,
        oversized: bool,
    ) -> Result<Step, JsError> {
        let shared = self.main.registry.find(portal).ok_or_else(|| {
            JsError::new(&format!("no portal of this emulator serves at {portal}"))
        })?;
        let headers = headers
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect();
        let request = engine::Request {
            method,
            target,
            headers,
            body,
            oversized,
        };
        Ok(Step::of(engine::handle(&shared, request)))
    }

    /// Releases the held-back onOfflineEvent signals that are due (then take the deliveries).
    pub fn tick(&self) {
        self.main.registry.tick();
    }

    /// The forms the portals want posted now.
    #[wasm_bindgen(js_name = takeDeliveries)]
    pub fn take_deliveries(&self) -> Vec<Delivery> {
        self.main
            .registry
            .take_deliveries()
            .into_iter()
            .map(|d| Delivery { inner: Some(d) })
            .collect()
    }
}

/// A form to post to an app; report the outcome with `done`.
#[wasm_bindgen]
pub struct Delivery {
    inner: Option<notify::Delivery>,
}

#[wasm_bindgen]
impl Delivery {
    #[wasm_bindgen(getter)]
    pub fn url(&self) -> String {
        self.inner
            .as_ref()
            .map(|d| d.url.clone())
            .unwrap_or_default()
    }

    #[wasm_bindgen(getter)]
    pub fn form(&self) -> String {
        self.inner
            .as_ref()
            .map(|d| d.form.clone())
            .unwrap_or_default()
    }

    /// Whether the app answered 2xx; counted in the portal's stats.
    pub fn done(mut self, accepted: bool) {
        if let Some(d) = self.inner.take() {
            d.done(accepted);
        }
    }
}

/// What the shell does next with a request: see `kind`.
#[wasm_bindgen]
pub struct Step {
    inner: engine::Step,
}

fn wrong(kind: &str, asked: &str) -> JsError {
    JsError::new(&format!("a '{kind}' step has no {asked}"))
}

impl Step {
    fn of(inner: engine::Step) -> Step {
        Step { inner }
    }

    fn resume(self, done: Resumed) -> Result<Step, JsError> {
        let kind = self.kind();
        match self.inner {
            engine::Step::Wait { next, .. }
            | engine::Step::Post { next, .. }
            | engine::Step::Listen { next, .. } => Ok(Step::of(engine::resume(next, done))),
            _ => Err(wrong(&kind, "request to resume")),
        }
    }

    fn answer(&self, asked: &str) -> Result<&engine::Response, JsError> {
        match &self.inner {
            engine::Step::Respond(r) => Ok(r),
            _ => Err(wrong(&self.kind(), asked)),
        }
    }
}

#[wasm_bindgen]
impl Step {
    /// `respond` (status, headers, body), `drop` (close the connection), `wait` (ms, then
    /// `waited`), `post` (url, form, then `posted`), `listen` (count, then `listening` or
    /// `listenFailed`).
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> String {
        match &self.inner {
            engine::Step::Respond(_) => "respond",
            engine::Step::Drop => "drop",
            engine::Step::Wait { .. } => "wait",
            engine::Step::Post { .. } => "post",
            engine::Step::Listen { .. } => "listen",
        }
        .to_string()
    }

    #[wasm_bindgen(getter)]
    pub fn status(&self) -> Result<u16, JsError> {
        Ok(self.answer("status")?.status)
    }

    /// Name, value, name, value, ...
    #[wasm_bindgen(getter)]
    pub fn headers(&self) -> Result<Vec<String>, JsError> {
        Ok(self
            .answer("headers")?
            .headers
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect())
    }

    #[wasm_bindgen(getter)]
    pub fn body(&self) -> Result<Vec<u8>, JsError> {
        Ok(self.answer("body")?.body.clone())
    }

    #[wasm_bindgen(getter)]
    pub fn ms(&self) -> Result<f64, JsError> {
        match &self.inner {
            engine::Step::Wait { ms, .. } => Ok(*ms as f64),
            _ => Err(wrong(&self.kind(), "ms")),
        }
    }

    #[wasm_bindgen(getter)]
    pub fn url(&self) -> Result<String, JsError> {
        match &self.inner {
            engine::Step::Post { url, .. } => Ok(url.clone()),
            _ => Err(wrong(&self.kind(), "url")),
        }
    }

    #[wasm_bindgen(getter)]
    pub fn form(&self) -> Result<String, JsError> {
        match &self.inner {
            engine::Step::Post { form, .. } => Ok(form.clone()),
            _ => Err(wrong(&self.kind(), "form")),
        }
    }

    #[wasm_bindgen(getter)]
    pub fn count(&self) -> Result<usize, JsError> {
        match &self.inner {
            engine::Step::Listen { count, .. } => Ok(*count),
            _ => Err(wrong(&self.kind(), "count")),
        }
    }

    /// After a `wait`.
    pub fn waited(self) -> Result<Step, JsError> {
        self.resume(Resumed::Waited)
    }

    /// After a `post`: the app's status, 0 for no answer.
    pub fn posted(self, status: u16) -> Result<Step, JsError> {
        self.resume(Resumed::Posted(status))
    }

    /// After a `listen`: the `127.0.0.1:PORT` of each new listener.
    pub fn listening(self, addresses: Vec<String>) -> Result<Step, JsError> {
        self.resume(Resumed::Listening(Ok(addresses)))
    }

    /// After a `listen` that could not open its listeners.
    #[wasm_bindgen(js_name = listenFailed)]
    pub fn listen_failed(self, why: String) -> Result<Step, JsError> {
        self.resume(Resumed::Listening(Err(why)))
    }
}
