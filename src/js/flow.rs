//! The reservation flow in JavaScript: what `OfflineQueue`'s `reserve`, `take`, `consume` and
//! `recover` do (the class and its exported methods live in `queue.rs`), and the `Reservation`
//! they hand out. The decisions are the core's (`core::consume`); this file reads the app's
//! handler answers, callbacks and options.

use super::calls::{promise, WebClient};
use super::convert::{field, js_error, opt_bool, opt_fn, opt_signal, options};
use super::platform::{key, put, to_js, JsData, WebPlatform};
use super::store::call_async;
use crate::core::consume::{
    ensure_extended, resolve, Batch, DeadReason, EventRef, Flow, Handler, Liveness, Outcome,
    Progress, Reporter,
};
use crate::core::digits::decimal;
use crate::core::error::{B24Error, Result};
use crate::core::joint::LocalBoxFuture;
use crate::core::journal::Journal;
use crate::core::model::OfflineEvent;
use crate::core::offline::{GetArgs, Queue};
use crate::core::options::{get_args, reserve_args, Holds, Options};
use crate::core::text::concat;
use crate::core::validate;
use js_sys::{Array, Function, Object, Promise, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::AbortSignal;

#[wasm_bindgen(module = "/src/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = withLock)]
    fn with_lock(
        name: &str,
        signal: Option<&AbortSignal>,
        exclusive: bool,
        run: &JsValue,
        if_available: bool,
    ) -> Promise;
    #[wasm_bindgen(js_name = holdAlive)]
    fn hold_alive(name: &str) -> JsValue;
    #[wasm_bindgen(js_name = liveOwners)]
    fn live_owners(prefix: &str) -> Promise;
    #[wasm_bindgen(js_name = ownerGone)]
    fn owner_gone(owner: &str) -> bool;
}

/// Names of the Web Locks that are consumers' signs of life.
const ALIVE: &str = "b24-offline/alive/";

/// A queue object's sign of life (a Web Lock named after its id), released when the object
/// and every operation it started are gone.
pub(crate) struct Alive(JsValue);

impl Alive {
    pub(crate) fn hold(owner: &str) -> Alive {
        Alive(hold_alive(&concat(&[ALIVE, owner])))
    }

    fn held(&self) -> bool {
        field(&self.0, "held")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        if let Some(f) = field(&self.0, "release").and_then(|f| f.dyn_into::<Function>().ok()) {
            let _ = f.call0(&JsValue::NULL);
        }
    }
}

/// Who is alive in this browser, from the held signs of life.
struct JsLiveness;

impl Liveness for JsLiveness {
    fn gone(&self, owner: &str) -> bool {
        owner_gone(owner)
    }

    fn alive(&self) -> LocalBoxFuture<'static, Option<Vec<String>>> {
        let p = live_owners(ALIVE);
        Box::pin(async move {
            let list = JsFuture::from(p).await.ok()?;
            list.dyn_ref::<Array>()
                .map(|a| a.iter().filter_map(|v| v.as_string()).collect())
        })
    }
}

static LIVENESS: JsLiveness = JsLiveness;

/// What the flow needs once per queue: the journal and lock named after the app (the client
/// asks the portal for it once, with the plan's features: `Queue::context`).
pub(crate) struct Prepared {
    journal: Rc<Journal>,
    lock: String,
}

/// A queue object's state: what its methods need to run the flow. Shared, one pointer
/// (promises outlive `&self`): a copy is one count, not eight.
#[derive(Clone)]
pub(super) struct Parts(pub(super) Rc<Shared>);

pub(super) struct Shared {
    pub(super) client: Rc<WebClient>,
    pub(super) connector: Option<String>,
    /// This consumer's id in journal entries (`consumerId`, or random per queue object).
    pub(super) owner: String,
    pub(super) alive: Alive,
    /// The `store` option as given (`None`: the default).
    pub(super) store: Option<JsValue>,
    pub(super) store_key: Option<String>,
    /// Features, journal and lock, asked once.
    pub(super) prepared: RefCell<Option<Rc<Prepared>>>,
    /// Rung by `wake()`: a polling consumer of this queue stops waiting.
    pub(super) alarm: crate::core::joint::Alarm,
}

impl std::ops::Deref for Parts {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Parts {
    fn queue(&self) -> Queue<'_, WebPlatform> {
        Queue {
            client: &self.client,
            connector: self.connector.as_deref(),
        }
    }

    /// The flow; `locked`: holding the queue's exclusive lock, `flag`: for as long as it works
    /// on what it reserves.
    fn flow<'a>(
        &'a self,
        p: &'a Prepared,
        locked: bool,
        flag: bool,
        holds: Holds,
    ) -> Flow<'a, WebPlatform> {
        Flow {
            queue: self.queue(),
            journal: &p.journal,
            owner: &self.owner,
            locked,
            flag,
            signed: self.alive.held(),
            liveness: Some(&LIVENESS),
            hold_ms: holds.hold_ms,
            unknown_ms: holds.hold_ms,
            handle_ms: holds.handle_ms(self.client.config.timeout_ms),
        }
    }

    /// Journal and lock, made once per queue; reservations need `rest_offline_extended`.
    async fn prepare(&self, signal: Option<&AbortSignal>) -> Result<Rc<Prepared>> {
        let (features, app) = self.queue().context(signal).await?;
        ensure_extended(&features)?;
        if let Some(p) = self.prepared.borrow().clone() {
            return Ok(p);
        }
        let name = concat(&[
            "b24-offline/",
            &self.client.config.origin.host,
            "/",
            app.as_deref().unwrap_or(""),
            "/",
            self.connector.as_deref().unwrap_or(""),
        ]);
        let key = self.store_key.clone().unwrap_or_else(|| name.clone());
        let p = Rc::new(Prepared {
            journal: super::store::journal(
                self.store.clone(),
                &key,
                self.client.config.timeout_ms,
            )?,
            lock: name,
        });
        *self.prepared.borrow_mut() = Some(p.clone());
        Ok(p)
    }

    /// The hold settings of `opts` (`core::options`); one copy for the three runs that read them
    /// (inlined, it was copied into each: 0.3 KB).
    #[inline(never)]
    fn holds(&self, opts: &JsValue) -> Result<Holds> {
        Holds::resolve(opts, self.client.config.timeout_ms)
    }
}

/// One entry of `failed` (or of `ack`/`fail`): a message id, a row id, or an event object.
fn event_ref(x: &JsValue) -> EventRef {
    if let Some(s) = x.as_string() {
        return EventRef::Message(s);
    }
    if let Some(n) = x.as_f64() {
        return match validate::positive("id", n) {
            Ok(id) => EventRef::Row(id as u64),
            Err(_) => EventRef::Invalid("is a number that is not a row id".into()),
        };
    }
    if x.is_object() && !Array::is_array(x) {
        let id = field(x, "id")
            .and_then(|v| v.as_f64())
            .and_then(|n| validate::positive("id", n).ok());
        let message = field(x, "messageId").and_then(|v| v.as_string());
        return match (id, message) {
            (Some(id), Some(m)) => EventRef::Both(id as u64, m),
            (Some(id), None) => EventRef::Row(id as u64),
            (None, Some(m)) => EventRef::Message(m),
            (None, None) => EventRef::Invalid("is an object that is not an event".into()),
        };
    }
    EventRef::Invalid("is neither a message id, a row id nor an event".into())
}

fn event_refs(list: &JsValue) -> Option<Vec<EventRef>> {
    list.dyn_ref::<Array>()
        .map(|a| a.iter().map(|x| event_ref(&x)).collect())
}

/// Reads what a handler returned: nothing (all succeeded) or `{ failed: [...] }`. Anything else
/// (a typo in the key, `failed` that is not a list, a bare list, `true`) fails the batch rather
/// than acknowledge it by accident.
fn outcome(v: &JsValue) -> Outcome {
    if v.is_undefined() || v.is_null() {
        return Outcome::Done;
    }
    if !v.is_object() || Array::is_array(v) || v.is_function() {
        return Outcome::Invalid(
            "the handler returned a value that is neither undefined nor { failed: [...] }".into(),
        );
    }
    for key in Object::keys(v.unchecked_ref::<Object>()).iter() {
        if key.as_string().as_deref() != Some("failed") {
            return Outcome::Invalid(concat(&[
                "the handler's answer has the key '",
                &key.as_string().unwrap_or_default(),
                "'; only { failed: [...] } is understood",
            ]));
        }
    }
    match Reflect::get(v, &"failed".into()) {
        Ok(f) if f.is_undefined() => Outcome::Done,
        Ok(f) => match event_refs(&f) {
            Some(refs) => Outcome::Failed(refs),
            None => Outcome::Invalid(
                "the handler's failed is not an array of message ids, row ids or events".into(),
            ),
        },
        Err(_) => Outcome::Invalid("the handler's answer could not be read".into()),
    }
}

/// A reserved batch: acknowledge it, fail some of it, or read it again.
#[wasm_bindgen]
pub struct Reservation {
    parts: Parts,
    prepared: Rc<Prepared>,
    holds: Holds,
    batch: Batch<JsData>,
    events: JsValue,
}

impl Reservation {
    fn new(
        parts: Parts,
        prepared: Rc<Prepared>,
        holds: Holds,
        batch: Batch<JsData>,
    ) -> Reservation {
        let events = to_js(&batch.events);
        Reservation {
            parts,
            prepared,
            holds,
            batch,
            events,
        }
    }

    /// The message ids `refs` name in this reservation, or `INVALID_ARGUMENT` naming the
    /// first entry that is not one of its events; all of them when `refs` is absent.
    fn named(&self, refs: Option<JsValue>) -> Result<Vec<String>> {
        let Some(v) = refs.filter(|v| !v.is_undefined() && !v.is_null()) else {
            return Ok(self.batch.message_ids());
        };
        let list = if v.as_string().is_some() {
            vec![event_ref(&v)]
        } else {
            event_refs(&v).ok_or_else(|| {
                B24Error::invalid(
                    "messageIds",
                    "must be an array of message ids, row ids or events of this reservation",
                )
            })?
        };
        resolve(&self.batch.events, &list).map_err(|why| B24Error::invalid("messageIds", &why))
    }

    /// `f` on the flow with this reservation's process id and error flag (not a copy of the
    /// whole batch: nothing else is needed).
    fn run(
        &self,
        f: impl for<'a> FnOnce(
                Flow<'a, WebPlatform>,
                &'a str,
                bool,
            ) -> LocalBoxFuture<'a, Result<JsValue>>
            + 'static,
    ) -> Promise {
        let (parts, prepared, holds) = (self.parts.clone(), self.prepared.clone(), self.holds);
        let (pid, error) = (self.batch.process_id.clone(), self.batch.error);
        promise(async move {
            let flow = parts.flow(&prepared, false, false, holds);
            f(flow, &pid, error).await
        })
    }
}

#[wasm_bindgen]
impl Reservation {
    #[wasm_bindgen(getter, js_name = processId)]
    pub fn process_id(&self) -> String {
        self.batch.process_id.clone()
    }

    #[wasm_bindgen(getter, unchecked_return_type = "OfflineEvent[]")]
    pub fn events(&self) -> JsValue {
        self.events.clone()
    }

    /// Rows of the reservation that are not readable events, as the portal sent them.
    #[wasm_bindgen(getter, unchecked_return_type = "unknown[]")]
    pub fn malformed(&self) -> JsValue {
        self.batch
            .malformed
            .iter()
            .map(|d| d.0.clone())
            .collect::<Array>()
            .into()
    }

    /// Taken from the error queue.
    #[wasm_bindgen(getter, js_name = fromErrorQueue)]
    pub fn from_error_queue(&self) -> bool {
        self.batch.error
    }

    /// Re-selected after a crash, a reload or a lost answer, rather than freshly reserved.
    #[wasm_bindgen(getter)]
    pub fn recovered(&self) -> bool {
        self.batch.recovered
    }

    /// Acknowledges the events (all of them, or these: message ids, row ids or the event
    /// objects): they leave the queue. Anything that is not an event of this reservation is
    /// refused with `INVALID_ARGUMENT` before any request.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn ack(
        &self,
        #[wasm_bindgen(js_name = messageIds, unchecked_optional_param_type = "EventRef[]")]
        message_ids: Option<JsValue>,
    ) -> Promise {
        let ids = self.named(message_ids);
        self.run(move |flow, pid, _| {
            Box::pin(async move {
                flow.ack(pid, &ids?).await?;
                Ok(JsValue::UNDEFINED)
            })
        })
    }

    /// Sends these events to the error queue (those still reserved under this process id).
    /// Events that came from the error queue cannot be marked again on the portal: they stay
    /// reserved and journaled, and come back later.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn fail(
        &self,
        #[wasm_bindgen(js_name = messageIds, unchecked_param_type = "EventRef[]")]
        message_ids: JsValue,
    ) -> Promise {
        let ids = if message_ids.is_undefined() || message_ids.is_null() {
            Err(B24Error::invalid("messageIds", "is required"))
        } else {
            self.named(Some(message_ids))
        };
        self.run(move |flow, pid, error| {
            Box::pin(async move {
                flow.fail(pid, &ids?, error).await?;
                Ok(JsValue::UNDEFINED)
            })
        })
    }

    /// The events still reserved under this process id, read again.
    #[wasm_bindgen(unchecked_return_type = "Promise<Reservation>")]
    pub fn reload(&self) -> Promise {
        let (parts, prepared, holds) = (self.parts.clone(), self.prepared.clone(), self.holds);
        let (pid, error) = (self.batch.process_id.clone(), self.batch.error);
        promise(async move {
            let batch = {
                let flow = parts.flow(&prepared, false, false, holds);
                let previous = flow.journal.entry(&pid).await?;
                flow.claim(&pid, error, previous.as_ref(), None).await?
            };
            Ok(Reservation::new(parts, prepared, holds, batch).into())
        })
    }
}

/// The app's handler: `(events, context) => void | { failed }` (or a promise of it).
struct JsHandler {
    func: Function,
    signal: Option<AbortSignal>,
}

impl Handler<JsData> for JsHandler {
    fn handle(&self, batch: &Batch<JsData>) -> LocalBoxFuture<'static, Outcome> {
        let ctx = batch_context(batch);
        if let Some(s) = &self.signal {
            put(&ctx, &key("signal"), s);
        }
        call_handler(&self.func, batch, &ctx)
    }
}

/// The handler's second argument: which reservation (`processId`, `fromErrorQueue`,
/// `recovered`).
#[inline(always)]
pub(super) fn batch_context(batch: &Batch<JsData>) -> Object {
    let ctx = Object::new();
    put(
        &ctx,
        &key("processId"),
        &JsValue::from_str(&batch.process_id),
    );
    put(
        &ctx,
        &key("fromErrorQueue"),
        &JsValue::from_bool(batch.error),
    );
    put(
        &ctx,
        &key("recovered"),
        &JsValue::from_bool(batch.recovered),
    );
    ctx
}

/// Calls the app's handler with the batch's events and `ctx`, and reads what it answered.
/// (Inlined: one caller per build, as before the fleet shared it.)
#[inline(always)]
pub(super) fn call_handler(
    func: &Function,
    batch: &Batch<JsData>,
    ctx: &Object,
) -> LocalBoxFuture<'static, Outcome> {
    let p = call_async(func, &to_js(batch), ctx);
    Box::pin(async move {
        match JsFuture::from(p).await {
            Err(e) => Outcome::Threw(
                e.dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
                    .or_else(|| e.as_string())
                    .unwrap_or_default(),
            ),
            Ok(v) => outcome(&v),
        }
    })
}

struct JsReporter {
    on_progress: Option<Function>,
    on_dead_letter: Option<Function>,
    on_malformed: Option<Function>,
    on_error: Option<Function>,
}

/// Calls an app callback; what it throws is its own business (logged nowhere, never ours).
fn notify(f: &Option<Function>, a: &JsValue, b: &JsValue) {
    if let Some(f) = f {
        let _ = f.call2(&JsValue::NULL, a, b);
    }
}

impl Reporter<JsData> for JsReporter {
    fn progress(&self, p: &Progress) {
        notify(&self.on_progress, &to_js(p), &JsValue::UNDEFINED);
    }

    fn dead_letters(&self, events: &[OfflineEvent<JsData>], reason: DeadReason) {
        let info = Object::new();
        put(&info, &key("reason"), &reason.name().into());
        notify(&self.on_dead_letter, &to_js(events), &info.into());
    }

    fn malformed(&self, rows: &[JsData]) {
        let list: Array = rows.iter().map(|d| d.0.clone()).collect();
        notify(&self.on_malformed, &list.into(), &JsValue::UNDEFINED);
    }

    fn error(&self, error: &B24Error) {
        notify(&self.on_error, &js_error(error), &JsValue::UNDEFINED);
    }
}

/// `OfflineQueue.reserve()` (docs there).
pub(super) fn reserve(parts: Parts, opts: Option<JsValue>) -> Promise {
    promise(async move {
        let opts = options(opts.as_ref(), "options")?;
        let args = reserve_args(&opts)?;
        let holds = parts.holds(&opts)?;
        let signal = opt_signal(&opts)?;
        let prepared = parts.prepare(signal.as_ref()).await?;
        let batch = parts
            .flow(&prepared, false, false, holds)
            .reserve(&args, signal.as_ref())
            .await?;
        Ok(Reservation::new(parts, prepared, holds, batch).into())
    })
}

/// `OfflineQueue.take()` (docs there).
pub(super) fn take(parts: Parts, opts: Option<JsValue>) -> Promise {
    promise(async move {
        let opts = options(opts.as_ref(), "options")?;
        let args = GetArgs {
            clear: true,
            ..get_args(&opts)?
        };
        let signal = opt_signal(&opts)?;
        let taken = parts.queue().get(&args, signal.as_ref()).await?;
        if !taken.malformed.is_empty() {
            parts.client.log(
                crate::core::platform::Level::Warn,
                &concat(&[
                    "take() read ",
                    &decimal(taken.malformed.len() as u64),
                    " rows that are not readable events; the portal deleted them with the rest",
                ]),
                None,
                taken.process_id.as_deref(),
            );
        }
        Ok(to_js(&taken.events))
    })
}

/// `OfflineQueue.recover()` (docs there).
pub(super) fn recover(parts: Parts, opts: Option<JsValue>) -> Promise {
    promise(async move {
        let opts = options(opts.as_ref(), "options")?;
        let holds = parts.holds(&opts)?;
        let signal = opt_signal(&opts)?;
        let prepared = parts.prepare(signal.as_ref()).await?;
        // Under the queue's lock if no consumer holds it now: then what a dead or finished
        // consumer left can be taken back at once (and is this object's from then on).
        let (p, h) = (parts.clone(), prepared.clone());
        let run = Closure::once_into_js(move |locked: bool| -> Promise {
            promise(async move {
                let found = p
                    .flow(&h, locked, false, holds)
                    .recoverable(&[], signal.as_ref())
                    .await?;
                Ok(found
                    .batches
                    .into_iter()
                    .map(|b| JsValue::from(Reservation::new(p.clone(), h.clone(), holds, b)))
                    .collect::<Array>()
                    .into())
            })
        });
        // The promise resolves with the lock's promise, and so settles as it does.
        Ok(with_lock(&prepared.lock, None, true, &run, true).into())
    })
}

/// `OfflineQueue.consume()` (docs there).
pub(super) fn consume(parts: Parts, handler: Function, opts: Option<JsValue>) -> Promise {
    promise(async move {
        let opts = options(opts.as_ref(), "options")?;
        let holds = parts.holds(&opts)?;
        let options = Options::resolve(&opts, holds)?;
        let signal = opt_signal(&opts)?;
        let exclusive = opt_bool(&opts, "exclusive")?.unwrap_or(true);
        let reporter = JsReporter {
            on_progress: opt_fn(&opts, "onProgress")?,
            on_dead_letter: opt_fn(&opts, "onDeadLetter")?,
            on_malformed: opt_fn(&opts, "onMalformed")?,
            on_error: opt_fn(&opts, "onError")?,
        };
        let prepared = parts.prepare(signal.as_ref()).await?;
        let lock = prepared.lock.clone();
        let handler = JsHandler {
            func: handler,
            signal: signal.clone(),
        };
        let run_signal = signal.clone();
        let run = Closure::once_into_js(move |locked: bool| -> Promise {
            promise(async move {
                let flow = parts.flow(&prepared, locked, locked, holds);
                let progress = crate::core::consume::consume(
                    &flow,
                    &handler,
                    &reporter,
                    &options,
                    run_signal.as_ref(),
                    Some(&parts.alarm),
                )
                .await?;
                Ok(to_js(&progress))
            })
        });
        // The promise resolves with the lock's promise, and so settles as it does.
        Ok(with_lock(&lock, signal.as_ref(), exclusive, &run, false).into())
    })
}
