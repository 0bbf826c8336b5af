//! `Bitrix24`: a client of one portal with one token source.

use super::calls::{promise, run_batch, run_call, Want, WebClient};
use super::convert::{
    field, js_error, opt_bool, opt_f64, opt_fn, opt_logger, opt_str, options, req_str,
};
use super::platform::{to_js, WebPlatform};
use super::queue::OfflineQueue;
use crate::auth::{expiry, CallbackRefresher};
use crate::core::auth::{Auth, Refresher, Token};
use crate::core::client::{Client, Config};
use crate::core::error::{B24Error, Result};
use crate::core::limiter::{RateLimit, ENTERPRISE, STANDARD};
use crate::core::options::max_response_bytes;
use crate::core::origin::Origin;
use crate::core::time::MAX_DELAY_MS;
use crate::core::validate;
use js_sys::Promise;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

fn limits(opts: &JsValue) -> Result<Option<RateLimit>> {
    let Some(v) = field(opts, "limits") else {
        return Ok(Some(STANDARD));
    };
    if let Some(on) = v.as_bool() {
        return Ok(on.then_some(STANDARD));
    }
    if let Some(name) = v.as_string() {
        return match name.as_str() {
            "standard" => Ok(Some(STANDARD)),
            "enterprise" => Ok(Some(ENTERPRISE)),
            _ => Err(B24Error::invalid(
                "limits",
                "must be 'standard', 'enterprise', false or { burst, drainPerSec }",
            )),
        };
    }
    let burst = opt_f64(&v, "burst")?.filter(|b| *b >= 1.0);
    let drain = opt_f64(&v, "drainPerSec")?.filter(|d| *d > 0.0);
    match (burst, drain) {
        (Some(burst), Some(drain_per_sec)) => Ok(Some(RateLimit {
            burst,
            drain_per_sec,
        })),
        _ => Err(B24Error::invalid(
            "limits",
            "a custom limit needs burst >= 1 and drainPerSec > 0",
        )),
    }
}

/// Builds the client configuration shared by every way of getting a token.
pub fn config(opts: &JsValue, origin: Origin) -> Result<Config> {
    let mut cfg = Config::new(origin);
    cfg.rate = limits(opts)?;
    if let Some(t) = opt_f64(opts, "timeoutMs")? {
        cfg.timeout_ms = (validate::positive("timeoutMs", t)? as f64).min(MAX_DELAY_MS);
    }
    if let Some(r) = opt_f64(opts, "retries")? {
        cfg.retry.max_retries = validate::non_negative("retries", r)?.min(100) as u32;
    }
    if let Some(s) = opt_f64(opts, "operatingLimit")? {
        cfg.operating_limit_s = validate::positive("operatingLimit", s)? as f64;
    }
    if let Some(c) = opt_str(opts, "connector")? {
        validate::connector(&c)?;
        cfg.connector = Some(c);
    }
    cfg.max_response_bytes = max_response_bytes(opts)?;
    Ok(cfg)
}

/// A client of one Bitrix24 portal.
#[wasm_bindgen]
pub struct Bitrix24 {
    client: Rc<WebClient>,
    frame: Option<Rc<super::frame::FrameState>>,
}

impl Bitrix24 {
    pub fn with_frame(mut self, frame: Rc<super::frame::FrameState>) -> Bitrix24 {
        self.frame = Some(frame);
        self
    }

    pub fn client_weak(&self) -> std::rc::Weak<WebClient> {
        Rc::downgrade(&self.client)
    }

    pub fn from_parts(
        opts: &JsValue,
        origin: Origin,
        token: Token,
        refresher: Option<Rc<dyn Refresher>>,
    ) -> Result<Bitrix24> {
        let cfg = config(opts, origin)?;
        let platform = WebPlatform {
            logger: opt_logger(opts)?,
        };
        Ok(Bitrix24 {
            client: Rc::new(Client::new(platform, cfg, Auth::new(token, refresher))),
            frame: None,
        })
    }
}

#[wasm_bindgen]
impl Bitrix24 {
    /// A client for a token the app already has.
    #[wasm_bindgen(js_name = withToken)]
    pub fn with_token(
        #[wasm_bindgen(js_name = options, unchecked_param_type = "TokenOptions")] options_: JsValue,
    ) -> std::result::Result<Bitrix24, JsValue> {
        let build = || -> Result<Bitrix24> {
            let opts = options(Some(&options_), "options")?;
            let origin = Origin::parse(
                &req_str(&opts, "domain")?,
                opt_bool(&opts, "allowHttp")?.unwrap_or(false),
            )?;
            let access = req_str(&opts, "accessToken")?;
            let expires = opt_f64(&opts, "expiresIn")?;
            let refresher: Option<Rc<dyn Refresher>> = match opt_fn(&opts, "refresh")? {
                Some(callback) => {
                    let refresh_token = Rc::new(RefCell::new(opt_str(&opts, "refreshToken")?));
                    Some(Rc::new(CallbackRefresher {
                        callback,
                        refresh_token,
                    }))
                }
                None => None,
            };
            Bitrix24::from_parts(
                &opts,
                origin,
                Token {
                    access,
                    expires_at_ms: expiry(expires),
                },
                refresher,
            )
        };
        build().map_err(|e| js_error(&e))
    }

    /// The portal page hosting this app, for clients made by `fromFrame()`.
    #[wasm_bindgen(getter)]
    pub fn frame(&self) -> Option<super::frame::PortalFrame> {
        self.frame.clone().map(super::frame::PortalFrame::new)
    }

    /// The current access token, refreshed first when it is about to run out: for handing to
    /// the app's own backend. (It never appears in errors or logs; here the app asks for it.)
    #[wasm_bindgen(js_name = accessToken, unchecked_return_type = "Promise<string>")]
    pub fn access_token(&self) -> Promise {
        let client = self.client.clone();
        promise(async move { Ok(JsValue::from_str(&client.fresh_token().await?.0)) })
    }

    /// The portal's host (with a port when not the default).
    #[wasm_bindgen(getter)]
    pub fn domain(&self) -> String {
        self.client.config.origin.host.clone()
    }

    /// Calls any REST method and resolves with its `result`.
    #[wasm_bindgen(unchecked_return_type = "Promise<unknown>")]
    pub fn call(
        &self,
        method: String,
        #[wasm_bindgen(unchecked_optional_param_type = "Record<string, unknown>")] params: Option<
            JsValue,
        >,
        #[wasm_bindgen(unchecked_optional_param_type = "CallOptions")] options: Option<JsValue>,
    ) -> Promise {
        run_call(
            self.client.clone(),
            method,
            params,
            options,
            None,
            Want::Result,
        )
    }

    /// Calls a list method and resolves with `{ result, total, next }`.
    #[wasm_bindgen(js_name = callPage, unchecked_return_type = "Promise<Page<unknown>>")]
    pub fn call_page(
        &self,
        method: String,
        #[wasm_bindgen(unchecked_optional_param_type = "Record<string, unknown>")] params: Option<
            JsValue,
        >,
        #[wasm_bindgen(unchecked_optional_param_type = "CallOptions")] options: Option<JsValue>,
    ) -> Promise {
        run_call(
            self.client.clone(),
            method,
            params,
            options,
            None,
            Want::Page,
        )
    }

    /// One page of a list method from a position (the package's `fetchList` iterator calls it;
    /// not for apps).
    #[wasm_bindgen(js_name = listPage, unchecked_return_type = "Promise<{ rows: unknown[]; next?: number }>")]
    pub fn list_page(
        &self,
        method: String,
        params: Option<JsValue>,
        options: Option<JsValue>,
        at: JsValue,
    ) -> Promise {
        run_call(
            self.client.clone(),
            method,
            params,
            options,
            None,
            Want::List(at),
        )
    }

    /// Many calls in as few requests as possible (50 per request).
    #[wasm_bindgen(unchecked_return_type = "Promise<BatchResult>")]
    pub fn batch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "BatchCommands")] commands: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "BatchOptions")] options: Option<JsValue>,
    ) -> Promise {
        run_batch(self.client.clone(), commands, options, None)
    }

    /// Requests, retries, refreshes, limiter waits and operating time per method.
    #[wasm_bindgen(unchecked_return_type = "ClientStats")]
    pub fn stats(&self) -> JsValue {
        to_js(&*self.client.stats())
    }

    /// The offline event queue of this app (for one connector, if given).
    pub fn offline(
        &self,
        #[wasm_bindgen(js_name = options, unchecked_optional_param_type = "QueueOptions")] options_: Option<JsValue>,
    ) -> std::result::Result<OfflineQueue, JsValue> {
        let build = || -> Result<OfflineQueue> {
            let opts = options(options_.as_ref(), "options")?;
            let connector = match opt_str(&opts, "connector")? {
                Some(c) => {
                    validate::connector(&c)?;
                    Some(c)
                }
                None => self.client.config.connector.clone(),
            };
            let store_key = match opt_str(&opts, "storeKey")? {
                Some(k) if !k.is_empty() => Some(k),
                Some(_) => return Err(B24Error::invalid("storeKey", "must not be empty")),
                None => None,
            };
            let owner = match opt_str(&opts, "consumerId")? {
                Some(id) => validate::consumer_id(&id).map(|_| id)?,
                None => super::platform::owner_id(&crate::core::frame::callback_id(
                    js_sys::Math::random(),
                    0,
                )),
            };
            let store = field(&opts, "store");
            // Check the store now rather than at the first reservation.
            super::store::check(store.as_ref())?;
            Ok(OfflineQueue::new(
                self.client.clone(),
                connector,
                owner,
                store,
                store_key,
            ))
        };
        build().map_err(|e| js_error(&e))
    }
}

#[wasm_bindgen]
impl Bitrix24 {
    /// A client whose token comes from the portal page hosting this iframe (`getInitData`),
    /// refreshed through it (`refreshAuth`). Rejects quickly with `FRAME_UNAVAILABLE` outside
    /// a portal (no parent, no app sid, an origin it may not talk to, a portal not in
    /// `portals`, no answer within `handshakeTimeoutMs`).
    #[wasm_bindgen(js_name = fromFrame, unchecked_return_type = "Promise<Bitrix24>")]
    pub fn from_frame(
        #[wasm_bindgen(js_name = options, unchecked_optional_param_type = "FrameOptions")] options_: Option<JsValue>,
    ) -> Promise {
        promise(async move {
            let opts = options(options_.as_ref(), "options")?;
            let c = super::frame::connect(&opts).await?;
            let b24 = Bitrix24::from_parts(&opts, c.origin, c.token, Some(c.refresher))?
                .with_frame(c.state);
            super::frame::keep_alive(b24.client_weak());
            Ok(b24.into())
        })
    }
}
