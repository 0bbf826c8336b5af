//! `Fleet` (the Node build only, feature `fleet`): one worker draining every portal the app is
//! installed on. The decisions are the core's (`core::fleet`); this file reads the options,
//! adapts the app's store object, and calls the handler and callbacks.

use super::calls::promise;
use super::convert::{field, js_error, opt_fn, opt_logger, options};
use super::flow::{batch_context, call_handler};
use super::platform::{key, put, to_js, JsData, WebPlatform};
use super::signal::payload;
use crate::core::consume::{Batch, DeadReason, Outcome, Progress};
use crate::core::error::{code, B24Error, Result};
use crate::core::fleet::settings::Settings;
use crate::core::fleet::store::FleetStore;
use crate::core::fleet::worker::{self, FleetReporter, PortalHandler, PortalInfo};
use crate::core::joint::LocalBoxFuture;
use crate::core::journal::Store;
use crate::core::model::OfflineEvent;
use crate::core::text::concat;
use js_sys::{Array, Function, Object, Promise};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/src/js/fleet_glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = callMethod)]
    fn call_method(obj: &JsValue, name: &str, args: &Array, timeout_ms: f64) -> Promise;
    #[wasm_bindgen(js_name = workerId)]
    fn worker_id() -> String;
}

#[wasm_bindgen(typescript_custom_section)]
const FLEET_TYPES: &'static str = r#"
/** Where a fleet keeps tokens, journals and leases: `FileStore`, `RedisStore`, or your own.
 *  Every method may return a promise. */
export interface FleetStore {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, value: string): unknown;
  delete(key: string): unknown;
  /** Writes `value` (deletes, for null) only if the key holds `expected` now (null: absent). */
  swap(key: string, expected: string | null, value: string | null): boolean | Promise<boolean>;
  /** Takes or renews a lease: its fence (a number that grows with every new holder) while
   *  `owner` holds it, null while someone else does. */
  lease(name: string, owner: string, ttlMs: number, nowMs: number): number | null | Promise<number | null>;
  /** Writes `value` at `key` (deletes, for null) only if the lease `name`'s fence is still
   *  `fence` (nobody took the lease since): the portal's journal writes. Whether it did. */
  fenced(name: string, fence: number, key: string, value: string | null): boolean | Promise<boolean>;
  release(name: string, owner: string): unknown;
  /** Keys that start with `prefix`. */
  keys(prefix: string): string[] | Promise<string[]>;
}

export interface FleetOptions extends Omit<ConsumeOptions, 'poll' | 'signal' | 'exclusive' | 'onProgress' | 'onDeadLetter' | 'onMalformed' | 'onError'> {
  /** The app's OAuth credentials: refreshes go to each portal's OAuth server with them. */
  oauth: { clientId: string; clientSecret: string };
  store: FleetStore;
  /** Events every portal queues for the app (bound offline at install). */
  events?: string | string[];
  connector?: string;
  /** The app's onOfflineEvent receiver, bound at install so that a change wakes its portal. */
  signalUrl?: string;
  /** Handlers running at once, over every portal (default 8). */
  concurrency?: number;
  /** Batches of one portal in flight at once (default 1, at most 16): more only pays when
   *  handlers are slower than the portal's request rate. */
  portalConcurrency?: number;
  /** A portal's lease (default 30000 ms, at least 3000): one worker drains it meanwhile. */
  leaseMs?: number;
  /** How often leases are renewed and free portals looked for (default a third of leaseMs). */
  scanMs?: number;
  /** REST and OAuth request timeout (default 30000 ms). */
  timeoutMs?: number;
  /** The longest answer read from a portal (default 8 MiB): longer is BAD_RESPONSE. */
  maxResponseBytes?: number;
  /** Every portal's request-rate limiter (default 'standard'). */
  plan?: 'standard' | 'enterprise' | { burst: number; drainPerSec: number };
  /** Hosts (or '*.' suffixes) of the portals the app serves; default: any. */
  portals?: string | string[];
  /** Hosts of the OAuth servers the client secret and refresh tokens may go to, and that prove
   *  installs (default 'oauth.bitrix.info'). Nothing else ever receives the secret. */
  oauthServers?: string | string[];
  /** Portals (hosts or '*.' suffixes) whose own origin is their OAuth server: box editions
   *  that do not use the cloud's. An explicit opt-in per portal (default: none). */
  portalOAuth?: string | string[];
  /** Installs not yet proven, per time (default { burst: 20, drainPerSec: 1 }): each costs one
   *  request to the OAuth server; beyond it an install is refused with INSTALL_LIMITED. */
  installRate?: { burst: number; drainPerSec: number };
  /** The most live portals (default 100000); a new one beyond is refused with PORTAL_LIMIT. */
  maxPortals?: number;
  /** Plain http to loopback portals (the local emulator). */
  allowHttp?: boolean;
  /** Prefix of every store key (default 'b24-offline/'). */
  prefix?: string;
  /** A label for this worker in leases and journals; a random nonce of this process is always
   *  added (`workerId` reads the whole id), so two processes never share an id. */
  workerId?: string;
  logger?: Logger;
}

export interface FleetPortal { memberId: string; domain: string }

export interface Installed extends FleetPortal {
  /** The portal was known (a repeated install event, a reinstall). */
  known: boolean;
  bound: BindResult[];
  signalBound: boolean;
}

export interface FleetPortalStats extends FleetPortal {
  progress: ConsumeProgress;
  requests?: ClientStats;
  lastError?: { code: B24ErrorCode; description: string };
}

export interface FleetCallbacks {
  onProgress?: (progress: ConsumeProgress, portal: FleetPortal) => void;
  onError?: (error: B24Error, portal: FleetPortal) => void;
  /** A portal is no longer drained here: with an error when it stopped for good (a dead
   *  refresh token, deleted, moved: `PORTAL_STOPPED`), without one when it was uninstalled,
   *  handed to another worker, or the fleet stopped. */
  onStopped?: (portal: FleetPortal, error?: B24Error) => void;
  onDeadLetter?: (events: OfflineEvent[], info: { reason: 'retries' | 'expiring' }, portal: FleetPortal) => void;
  onMalformed?: (rows: unknown[], portal: FleetPortal) => void;
}

/** As `ConsumeHandler`, with the portal the batch came from. */
export type FleetHandler = (events: OfflineEvent[], context: Omit<ConsumeContext, 'signal'> & { portal: FleetPortal }) =>
  void | { failed?: EventRef[] } | Promise<void | { failed?: EventRef[] }>;
"#;

fn store_failed(what: &str) -> B24Error {
    B24Error::new(
        code::STORE_FAILED,
        concat(&["the fleet store failed to ", what]),
    )
}

/// The app's store object.
struct JsFleetStore {
    obj: JsValue,
    timeout_ms: f64,
}

impl JsFleetStore {
    fn call(
        &self,
        name: &str,
        args: &[JsValue],
        what: &'static str,
    ) -> LocalBoxFuture<'static, Result<JsValue>> {
        let list: Array = args.iter().collect();
        let p = call_method(&self.obj, name, &list, self.timeout_ms);
        Box::pin(async move { JsFuture::from(p).await.map_err(|_| store_failed(what)) })
    }
}

fn opt_text(v: Option<&str>) -> JsValue {
    v.map(JsValue::from_str).unwrap_or(JsValue::NULL)
}

impl Store for JsFleetStore {
    fn get(&self, key: &str) -> LocalBoxFuture<'static, Result<Option<String>>> {
        let f = self.call("get", &[key.into()], "read");
        Box::pin(async move {
            let v = f.await?;
            if v.is_undefined() || v.is_null() {
                return Ok(None);
            }
            v.as_string()
                .map(Some)
                .ok_or_else(|| store_failed("return a string from get()"))
        })
    }

    fn set(&self, key: &str, value: String) -> LocalBoxFuture<'static, Result<()>> {
        let f = self.call("set", &[key.into(), value.into()], "write");
        Box::pin(async move { f.await.map(|_| ()) })
    }

    fn delete(&self, key: &str) -> LocalBoxFuture<'static, Result<()>> {
        let f = self.call("delete", &[key.into()], "delete");
        Box::pin(async move { f.await.map(|_| ()) })
    }
}

impl FleetStore for JsFleetStore {
    fn swap(
        &self,
        key: &str,
        expected: Option<&str>,
        value: Option<String>,
    ) -> LocalBoxFuture<'static, Result<bool>> {
        let f = self.call(
            "swap",
            &[key.into(), opt_text(expected), opt_text(value.as_deref())],
            "swap",
        );
        Box::pin(async move {
            f.await?
                .as_bool()
                .ok_or_else(|| store_failed("return a boolean from swap()"))
        })
    }

    fn lease(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: f64,
        now_ms: f64,
    ) -> LocalBoxFuture<'static, Result<Option<u64>>> {
        let f = self.call(
            "lease",
            &[name.into(), owner.into(), ttl_ms.into(), now_ms.into()],
            "lease",
        );
        Box::pin(async move {
            let v = f.await?;
            if v.is_null() || v.is_undefined() {
                return Ok(None);
            }
            v.as_f64()
                .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n < 9.0e15)
                .map(|n| Some(n as u64))
                .ok_or_else(|| store_failed("return a positive integer or null from lease()"))
        })
    }

    fn fenced(
        &self,
        name: &str,
        fence: u64,
        key: &str,
        value: Option<String>,
    ) -> LocalBoxFuture<'static, Result<bool>> {
        let f = self.call(
            "fenced",
            &[
                name.into(),
                (fence as f64).into(),
                key.into(),
                opt_text(value.as_deref()),
            ],
            "write",
        );
        Box::pin(async move {
            f.await?
                .as_bool()
                .ok_or_else(|| store_failed("return a boolean from fenced()"))
        })
    }

    fn release(&self, name: &str, owner: &str) -> LocalBoxFuture<'static, Result<()>> {
        let f = self.call("release", &[name.into(), owner.into()], "release");
        Box::pin(async move { f.await.map(|_| ()) })
    }

    fn keys(&self, prefix: &str) -> LocalBoxFuture<'static, Result<Vec<String>>> {
        let f = self.call("keys", &[prefix.into()], "list keys");
        let prefix = prefix.to_string();
        Box::pin(async move {
            let v = f.await?;
            let list = v
                .dyn_ref::<Array>()
                .ok_or_else(|| store_failed("return an array from keys()"))?;
            let mut keys = list
                .iter()
                .map(|k| k.as_string().filter(|k| k.starts_with(&prefix)))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| store_failed("return keys with the prefix asked for"))?;
            keys.sort();
            keys.dedup();
            Ok(keys)
        })
    }
}

fn portal_js(p: &PortalInfo) -> JsValue {
    to_js(p)
}

/// The app's handler, with the portal in its context.
struct JsPortalHandler(Function);

impl PortalHandler<JsData> for JsPortalHandler {
    fn handle(
        &self,
        portal: &PortalInfo,
        batch: &Batch<JsData>,
    ) -> LocalBoxFuture<'static, Outcome> {
        let ctx = batch_context(batch);
        put(&ctx, &key("portal"), &portal_js(portal));
        call_handler(&self.0, batch, &ctx)
    }
}

struct JsFleetReporter {
    on_progress: Option<Function>,
    on_error: Option<Function>,
    on_stopped: Option<Function>,
    on_dead_letter: Option<Function>,
    on_malformed: Option<Function>,
}

/// Calls an app callback; what it throws is its own business.
fn tell(f: &Option<Function>, args: &[JsValue]) {
    if let Some(f) = f {
        let list: Array = args.iter().collect();
        let _ = f.apply(&JsValue::NULL, &list);
    }
}

impl FleetReporter<JsData> for JsFleetReporter {
    fn progress(&self, portal: &PortalInfo, progress: &Progress) {
        tell(&self.on_progress, &[to_js(progress), portal_js(portal)]);
    }
    fn error(&self, portal: &PortalInfo, error: &B24Error) {
        tell(&self.on_error, &[js_error(error), portal_js(portal)]);
    }
    fn stopped(&self, portal: &PortalInfo, error: Option<&B24Error>) {
        let e = error.map(js_error).unwrap_or(JsValue::UNDEFINED);
        tell(&self.on_stopped, &[portal_js(portal), e]);
    }
    fn dead_letters(
        &self,
        portal: &PortalInfo,
        events: &[OfflineEvent<JsData>],
        reason: DeadReason,
    ) {
        let info = Object::new();
        put(&info, &key("reason"), &reason.name().into());
        tell(
            &self.on_dead_letter,
            &[to_js(events), info.into(), portal_js(portal)],
        );
    }
    fn malformed(&self, portal: &PortalInfo, rows: &[JsData]) {
        let list: Array = rows.iter().map(|d| d.0.clone()).collect();
        tell(&self.on_malformed, &[list.into(), portal_js(portal)]);
    }
}

/// One worker of a fleet: install, uninstall and signal endpoints, and `run()`, which drains
/// every portal this worker holds until `stop()`.
#[wasm_bindgen]
pub struct Fleet {
    fleet: worker::Fleet<WebPlatform>,
    worker: String,
}

#[wasm_bindgen]
impl Fleet {
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "FleetOptions")] opts: JsValue,
    ) -> std::result::Result<Fleet, JsValue> {
        let make = || -> Result<Fleet> {
            let opts = options(Some(&opts), "options")?;
            let settings = Settings::resolve(&opts, worker_id())?;
            let store = field(&opts, "store")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    B24Error::invalid("store", "is required (FileStore, RedisStore or your own)")
                })?;
            for m in ["get", "set", "delete", "swap", "lease", "release", "keys"] {
                if !field(&store, m).is_some_and(|f| f.is_function()) {
                    return Err(B24Error::invalid(
                        "store",
                        &concat(&["has no ", m, "() method"]),
                    ));
                }
            }
            let platform = WebPlatform {
                logger: opt_logger(&opts)?,
            };
            let worker = settings.worker.clone();
            let store = Rc::new(JsFleetStore {
                obj: store,
                timeout_ms: settings.timeout_ms,
            });
            Ok(Fleet {
                fleet: worker::Fleet::new(platform, store, settings),
                worker,
            })
        };
        make().map_err(|e| js_error(&e))
    }

    /// This worker's id in leases and journals.
    #[wasm_bindgen(getter, js_name = workerId)]
    pub fn worker_id(&self) -> String {
        self.worker.clone()
    }

    /// Takes an install: the `ONAPPINSTALL` event or the install page's POST (form text,
    /// `URLSearchParams` or a parsed object). Checked, proven at the portal, stored; the app's
    /// events and the signal receiver are bound.
    #[wasm_bindgen(unchecked_return_type = "Promise<Installed>")]
    pub fn install(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "string | URLSearchParams | Record<string, unknown>"
        )]
        body: JsValue,
    ) -> Promise {
        let fleet = self.fleet.clone();
        promise(async move {
            let p = payload(&body, code::INVALID_INSTALL)?;
            Ok(to_js(&fleet.install(&p).await?))
        })
    }

    /// Takes an `ONAPPUNINSTALL` (proven by the application token): the portal stops and its
    /// tokens, journal and lease are deleted. Resolves with its member id.
    #[wasm_bindgen(unchecked_return_type = "Promise<string>")]
    pub fn uninstall(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "string | URLSearchParams | Record<string, unknown>"
        )]
        body: JsValue,
    ) -> Promise {
        let fleet = self.fleet.clone();
        promise(async move {
            let p = payload(&body, code::INVALID_INSTALL)?;
            Ok(fleet.uninstall(&p).await?.into())
        })
    }

    /// Takes an onOfflineEvent POST: wakes that portal's drain (here or, through the store, on
    /// the worker that holds it). Resolves with the member id; rejects `INVALID_SIGNAL`.
    #[wasm_bindgen(unchecked_return_type = "Promise<string>")]
    pub fn signal(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "string | URLSearchParams | Record<string, unknown>"
        )]
        body: JsValue,
    ) -> Promise {
        let fleet = self.fleet.clone();
        promise(async move {
            let p = payload(&body, code::INVALID_SIGNAL)?;
            Ok(fleet.signal(&p).await?.into())
        })
    }

    /// Drains every portal this worker holds until `stop()`; resolves then, once every
    /// portal's batch in hand is acknowledged and the leases are given back.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn run(
        &self,
        #[wasm_bindgen(unchecked_param_type = "FleetHandler")] handler: Function,
        #[wasm_bindgen(unchecked_optional_param_type = "FleetCallbacks")] callbacks: Option<
            JsValue,
        >,
    ) -> Promise {
        let fleet = self.fleet.clone();
        promise(async move {
            let cb = options(callbacks.as_ref(), "callbacks")?;
            let reporter = Rc::new(JsFleetReporter {
                on_progress: opt_fn(&cb, "onProgress")?,
                on_error: opt_fn(&cb, "onError")?,
                on_stopped: opt_fn(&cb, "onStopped")?,
                on_dead_letter: opt_fn(&cb, "onDeadLetter")?,
                on_malformed: opt_fn(&cb, "onMalformed")?,
            });
            fleet.run(Rc::new(JsPortalHandler(handler)), reporter).await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Sets a portal's request rate, for every worker ('standard': 50 at once, 2 a second;
    /// 'enterprise': 250, 5; or `{ burst, drainPerSec }`); its drain restarts with it.
    #[wasm_bindgen(js_name = setPlan, unchecked_return_type = "Promise<void>")]
    pub fn set_plan(
        &self,
        #[wasm_bindgen(js_name = memberId)] member_id: String,
        #[wasm_bindgen(
            unchecked_param_type = "'standard' | 'enterprise' | { burst: number; drainPerSec: number }"
        )]
        plan: JsValue,
    ) -> Promise {
        let fleet = self.fleet.clone();
        promise(async move {
            let holder = Object::new();
            put(&holder, &key("plan"), &plan);
            let plan = crate::core::fleet::settings::plan(&JsValue::from(holder))?
                .ok_or_else(|| B24Error::invalid("plan", "is required"))?;
            fleet.set_plan(&member_id, plan).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Ends `run()` gracefully: no new batch is taken, the ones in hand are finished.
    pub fn stop(&self) {
        self.fleet.stop();
    }

    /// The portals this worker drains now, with their counters.
    #[wasm_bindgen(unchecked_return_type = "FleetPortalStats[]")]
    pub fn stats(&self) -> JsValue {
        to_js(&self.fleet.stats())
    }

    /// Token refreshes this worker made.
    #[wasm_bindgen(getter)]
    pub fn refreshes(&self) -> f64 {
        self.fleet.refreshes() as f64
    }
}
