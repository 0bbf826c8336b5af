//! `Bitrix24.fromFrame()`: auth from the portal page that hosts the app's iframe, the placement
//! context, and the frame commands apps use daily.

use super::calls::{promise, WebClient};
use super::convert::{field, opt_bool, opt_f64, strings};
use super::platform::{key, put, to_js, JsData, WebPlatform};
use crate::auth::{expiry, FrameRefresher};
use crate::core::auth::Token;
use crate::core::error::{code, B24Error, Result};
use crate::core::frame::{init_data, parse_window_name, same_portal, InitData};
use crate::core::origin::host_allowed;
use crate::core::time::MAX_DELAY_MS;
use crate::core::validate;
use crate::frame::Channel;
use js_sys::{Object, Promise};
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;

/// How long commands such as `setTitle` wait for an answer the portal may never send.
const COMMAND_WAIT_MS: f64 = 1000.0;

fn unavailable(why: &str) -> B24Error {
    B24Error::new(code::FRAME_UNAVAILABLE, why)
}

/// The placement the app was opened in, and its line to the portal page.
pub struct FrameState {
    pub channel: Rc<Channel>,
    pub init: InitData<JsData>,
}

/// The portal page hosting this app: placement context and frame commands.
#[wasm_bindgen]
pub struct PortalFrame {
    state: Rc<FrameState>,
}

impl PortalFrame {
    pub fn new(state: Rc<FrameState>) -> PortalFrame {
        PortalFrame { state }
    }

    fn command(&self, name: &'static str, params: Option<JsValue>) -> Promise {
        let state = self.state.clone();
        promise(async move {
            match state
                .channel
                .request(name, params.as_ref(), COMMAND_WAIT_MS)
                .await
            {
                Ok(v) => Ok(v),
                // The portal does not answer every command; not hearing back is not a failure.
                Err(e) if crate::core::read::has(&e.description, "did not answer") => {
                    Ok(JsValue::UNDEFINED)
                }
                Err(e) => Err(e),
            }
        })
    }
}

#[wasm_bindgen]
impl PortalFrame {
    /// `PLACEMENT`, e.g. `CRM_DEAL_DETAIL_TAB` (`DEFAULT` for the app's own page).
    #[wasm_bindgen(getter)]
    pub fn placement(&self) -> String {
        self.state.init.placement.clone()
    }

    /// `PLACEMENT_OPTIONS`, e.g. `{ ID: '42' }` for a deal tab.
    #[wasm_bindgen(getter, js_name = placementOptions, unchecked_return_type = "Record<string, unknown>")]
    pub fn placement_options(&self) -> JsValue {
        self.state.init.placement_options.0.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn lang(&self) -> String {
        self.state.init.lang.clone()
    }

    #[wasm_bindgen(getter, js_name = isAdmin)]
    pub fn is_admin(&self) -> bool {
        self.state.init.is_admin
    }

    #[wasm_bindgen(getter, js_name = memberId)]
    pub fn member_id(&self) -> String {
        self.state.init.member_id.clone()
    }

    /// The portal's host, as the frame protocol names it.
    #[wasm_bindgen(getter)]
    pub fn domain(&self) -> String {
        self.state
            .channel
            .origin
            .strip_prefix("https://")
            .or_else(|| self.state.channel.origin.strip_prefix("http://"))
            .unwrap_or("")
            .to_string()
    }

    /// Whether the app is being installed (`INSTALL`).
    #[wasm_bindgen(getter)]
    pub fn installing(&self) -> bool {
        self.state.init.install
    }

    /// The whole context as a plain object.
    #[wasm_bindgen(js_name = toJSON, unchecked_return_type = "FrameContext")]
    pub fn to_json(&self) -> JsValue {
        to_js(&self.state.init)
    }

    #[wasm_bindgen(js_name = setTitle, unchecked_return_type = "Promise<void>")]
    pub fn set_title(&self, title: String) -> Promise {
        let p = Object::new();
        put(&p, &key("title"), &JsValue::from_str(&title));
        self.command("setTitle", Some(p.into()))
    }

    #[wasm_bindgen(js_name = resizeWindow, unchecked_return_type = "Promise<void>")]
    pub fn resize_window(&self, width: f64, height: f64) -> Promise {
        let p = Object::new();
        put(&p, &key("width"), &JsValue::from_f64(width));
        put(&p, &key("height"), &JsValue::from_f64(height));
        self.command("resizeWindow", Some(p.into()))
    }

    /// Tells the portal the installation is finished.
    #[wasm_bindgen(js_name = setInstallFinish, unchecked_return_type = "Promise<void>")]
    pub fn set_install_finish(&self) -> Promise {
        self.command("setInstallFinish", None)
    }
}

/// Refreshes the token shortly before it runs out even when no call is made, so a token the
/// app hands to its own backend stays valid. Stops when the client is gone.
/// Keeps the token fresh for as long as the client exists, on `Auth::keep_alive_wait`'s
/// schedule.
pub fn keep_alive(client: Weak<WebClient>) {
    wasm_bindgen_futures::spawn_local(async move {
        let mut failed = false;
        loop {
            let wait = {
                let Some(c) = client.upgrade() else { return };
                let Some(wait) = c.auth.keep_alive_wait(js_sys::Date::now(), failed) else {
                    return;
                };
                wait
            };
            crate::transport::sleep(wait, None).await;
            let Some(c) = client.upgrade() else { return };
            let (_, generation) = c.auth.current();
            failed = c.auth.due(js_sys::Date::now()) && c.auth.refresh(generation).await.is_err();
        }
    });
}

/// What the handshake with the portal page gives a client: the portal, its token, how to
/// renew it, and the frame's state.
pub struct Connected {
    pub origin: crate::core::origin::Origin,
    pub token: Token,
    pub refresher: Rc<FrameRefresher>,
    pub state: Rc<FrameState>,
}

/// The handshake (see `Bitrix24.fromFrame`).
pub async fn connect(opts: &JsValue) -> Result<Connected> {
    let timeout = match opt_f64(opts, "handshakeTimeoutMs")? {
        Some(t) => (validate::positive("handshakeTimeoutMs", t)? as f64).min(MAX_DELAY_MS),
        None => 5_000.0,
    };
    let portals = match field(opts, "portals") {
        None => None,
        Some(v) => Some(strings(&v, "portals")?),
    };
    let window = web_sys::window().ok_or_else(|| {
        unavailable("there is no window here (a worker?): use Bitrix24.withToken")
    })?;
    let parent = window.parent().ok().flatten();
    let inside = parent
        .map(|p| JsValue::from(p) != JsValue::from(window.clone()))
        .unwrap_or(false);
    if !inside {
        return Err(unavailable("the page is not inside an iframe: open it from a Bitrix24 placement, or use Bitrix24.withToken"));
    }
    let name = window.name().unwrap_or_default();
    let frame = parse_window_name(&name, opt_bool(opts, "allowHttp")?.unwrap_or(false))?;
    if let Some(list) = &portals {
        if !host_allowed(&frame.origin.host, list) {
            return Err(unavailable(
                "the portal hosting this page is not one of the portals option: refusing to talk to it",
            ));
        }
    }
    let channel = Channel::open(frame.origin.origin(), frame.app_sid.clone())?;
    let data = channel.request("getInitData", None, timeout).await?;
    let init = init_data(&WebPlatform { logger: None }, &JsData(data))?;
    if !same_portal(&frame.origin, &init.domain) {
        return Err(unavailable(
            "the portal's init data names another domain than window.name",
        ));
    }
    let token = Token {
        access: init.access_token.clone(),
        expires_at_ms: expiry(init.expires_in),
    };
    let refresher = Rc::new(FrameRefresher {
        channel: channel.clone(),
        timeout_ms: timeout,
    });
    Ok(Connected {
        origin: frame.origin,
        token,
        refresher,
        state: Rc::new(FrameState { channel, init }),
    })
}
