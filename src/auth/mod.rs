//! Where tokens come from in JavaScript: a token the app already has, renewed through the app's
//! own `refresh` callback (its server holds the client secret; we never see it).

use crate::core::auth::{Refresher, Token};
use crate::core::error::{code, B24Error, Result};
use crate::core::joint::LocalBoxFuture;
use crate::core::text::concat;
use crate::js::convert::{field_f64, field_str};
use js_sys::{Function, Object, Promise};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Calls `refresh({ refreshToken })` and expects `{ accessToken, expiresIn?, refreshToken? }`.
pub struct CallbackRefresher {
    pub callback: Function,
    pub refresh_token: Rc<RefCell<Option<String>>>,
}

fn failed(why: &str) -> B24Error {
    B24Error::new(code::REFRESH_FAILED, why)
}

/// Local expiry time of a token valid for `expires_in` seconds from now.
pub fn expiry(expires_in: Option<f64>) -> Option<f64> {
    expires_in
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| js_sys::Date::now() + s * 1000.0)
}

impl Refresher for CallbackRefresher {
    fn refresh(&self) -> LocalBoxFuture<'static, Result<Token>> {
        let callback = self.callback.clone();
        let refresh_token = self.refresh_token.clone();
        Box::pin(async move {
            let arg = Object::new();
            if let Some(rt) = refresh_token.borrow().as_deref() {
                crate::transport::put(&arg, &"refreshToken".into(), &JsValue::from_str(rt));
            }
            let returned = callback
                .call1(&JsValue::NULL, &arg)
                .map_err(|_| failed("the refresh callback threw"))?;
            let value = match returned.dyn_into::<Promise>() {
                Ok(p) => JsFuture::from(p)
                    .await
                    .map_err(|_| failed("the refresh callback's promise rejected"))?,
                Err(v) => v,
            };
            let access = field_str(&value, "accessToken")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| failed("the refresh callback returned no accessToken"))?;
            if let Some(rt) = field_str(&value, "refreshToken") {
                *refresh_token.borrow_mut() = Some(rt);
            }
            Ok(Token {
                access,
                expires_at_ms: expiry(field_f64(&value, "expiresIn")),
            })
        })
    }
}

/// Asks the portal page for a fresh token (`refreshAuth`) over the frame channel.
pub struct FrameRefresher {
    pub channel: Rc<crate::frame::Channel>,
    pub timeout_ms: f64,
}

impl Refresher for FrameRefresher {
    fn refresh(&self) -> LocalBoxFuture<'static, Result<Token>> {
        let (channel, timeout) = (self.channel.clone(), self.timeout_ms);
        Box::pin(async move {
            let v = channel
                .request("refreshAuth", None, timeout)
                .await
                .map_err(|e| {
                    failed(&concat(&[
                        "the portal did not refresh the token: ",
                        &e.description,
                    ]))
                })?;
            let access = field_str(&v, "AUTH_ID")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| failed("the portal's refreshAuth answer has no AUTH_ID"))?;
            let data = crate::js::platform::JsData(v);
            let expires = crate::core::frame::expires_in::<crate::js::platform::WebPlatform>(&data);
            Ok(Token {
                access,
                expires_at_ms: expiry(expires),
            })
        })
    }
}
