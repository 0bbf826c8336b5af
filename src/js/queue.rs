//! `OfflineQueue`: the offline-event calls of one application and connector, and the entry
//! points of its reservation flow (carried out in `flow.rs`).

use super::calls::{promise, run_batch, run_call, Want, WebClient};
use super::convert::{
    async_iterable, field, opt_f64, opt_numbers, opt_signal, opt_str, opt_strings, opt_tree,
    options, req_str, strings,
};
use super::platform::{key, put, to_js, JsData, WebPlatform};
use crate::core::digits::decimal;
use crate::core::error::{B24Error, Result};
use crate::core::joint::LocalBoxFuture;
use crate::core::offline::{GetArgs, ListArgs, Pager, Queue, Selection};
use crate::core::text::concat;
use crate::core::validate;
use js_sys::{Function, Object, Promise};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::AbortSignal;

/// A queue method's body: its calls, its options object and their `signal`.
type QueueFn = dyn for<'q> FnOnce(
    &'q Queue<'q, WebPlatform>,
    JsValue,
    Option<AbortSignal>,
) -> LocalBoxFuture<'q, Result<JsValue>>;

#[wasm_bindgen]
pub struct OfflineQueue {
    shared: super::flow::Parts,
}

impl OfflineQueue {
    pub fn new(
        client: Rc<WebClient>,
        connector: Option<String>,
        owner: String,
        store: Option<JsValue>,
        store_key: Option<String>,
    ) -> OfflineQueue {
        OfflineQueue {
            shared: super::flow::Parts(Rc::new(super::flow::Shared {
                client,
                connector,
                alive: super::flow::Alive::hold(&owner),
                owner,
                store,
                store_key,
                prepared: Default::default(),
                alarm: Default::default(),
            })),
        }
    }

    /// What the reservation flow's methods (`flow.rs`) need, owned.
    fn flow_parts(&self) -> super::flow::Parts {
        self.shared.clone()
    }

    fn parts(&self) -> (Rc<WebClient>, Option<String>) {
        (self.shared.client.clone(), self.shared.connector.clone())
    }

    /// A queue method as a Promise: reads the options object and its `signal`, and hands both
    /// to `f` with this queue's calls.
    fn run<F>(&self, opts: Option<JsValue>, f: F) -> Promise
    where
        F: for<'q> FnOnce(
                &'q Queue<'q, WebPlatform>,
                JsValue,
                Option<AbortSignal>,
            ) -> LocalBoxFuture<'q, Result<JsValue>>
            + 'static,
    {
        self.run_boxed(opts, Box::new(f))
    }

    /// `run` without a copy per method: the methods differ only in their boxed closures.
    fn run_boxed(&self, opts: Option<JsValue>, f: Box<QueueFn>) -> Promise {
        let (client, connector) = self.parts();
        promise(async move {
            let opts = options(opts.as_ref(), "options")?;
            let signal = opt_signal(&opts)?;
            let q = Queue {
                client: &client,
                connector: connector.as_deref(),
            };
            f(&q, opts, signal).await
        })
    }
}

fn list_args(opts: &JsValue) -> Result<ListArgs> {
    Ok(ListArgs {
        filter: opt_tree(opts, "filter")?,
        order: opt_tree(opts, "order")?,
        start: opt_f64(opts, "start")?,
    })
}

fn step(value: JsValue, done: bool) -> JsValue {
    let r = Object::new();
    put(&r, &key("value"), &value);
    put(&r, &key("done"), &JsValue::from_bool(done));
    r.into()
}

#[wasm_bindgen]
impl OfflineQueue {
    /// Ends the idle wait of this queue's polling `consume()` at once (or its next one): call it
    /// when an onOfflineEvent signal arrives. Signals are not retried by the portal, so the
    /// consumer keeps polling slowly on its own as well.
    pub fn wake(&self) {
        self.shared.alarm.ring();
    }

    /// The `auth_connector` every call of this queue carries.
    #[wasm_bindgen(getter)]
    pub fn connector(&self) -> Option<String> {
        self.shared.connector.clone()
    }

    /// What the portal's plan offers: `{ extended, connector }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Features>")]
    pub fn features(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "SignalOptions")] opts: Option<JsValue>,
    ) -> Promise {
        self.run(opts, move |q, _, signal| {
            Box::pin(async move { Ok(to_js(&q.context(signal.as_ref()).await?.0)) })
        })
    }

    /// Binds events to this queue (`event_type=offline`). Resolves with which were new.
    #[wasm_bindgen(unchecked_return_type = "Promise<BindResult[]>")]
    pub fn bind(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string | string[]")] events: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "SignalOptions")] opts: Option<JsValue>,
    ) -> Promise {
        self.run(opts, move |q, _, signal| {
            Box::pin(async move {
                let bound = q
                    .bind(&strings(&events, "events")?, signal.as_ref())
                    .await?;
                Ok(to_js(&bound))
            })
        })
    }

    /// Removes this queue's offline binding of `event`; resolves with how many went.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn unbind(
        &self,
        event: String,
        #[wasm_bindgen(unchecked_optional_param_type = "SignalOptions")] opts: Option<JsValue>,
    ) -> Promise {
        self.run(opts, move |q, _, signal| {
            Box::pin(async move {
                Ok(JsValue::from_f64(
                    q.unbind(&event, signal.as_ref()).await? as f64,
                ))
            })
        })
    }

    /// The application's bindings, online and offline (`event.get`).
    #[wasm_bindgen(unchecked_return_type = "Promise<Binding[]>")]
    pub fn bindings(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "SignalOptions")] opts: Option<JsValue>,
    ) -> Promise {
        self.run(opts, |q, _, signal| {
            Box::pin(async move { Ok(to_js(&q.bindings(signal.as_ref()).await?)) })
        })
    }

    /// Asks the portal to POST `ONOFFLINEEVENT` to `handler` when the queue grows.
    #[wasm_bindgen(js_name = notifyAt, unchecked_return_type = "Promise<boolean>")]
    pub fn notify_at(
        &self,
        handler: String,
        #[wasm_bindgen(unchecked_optional_param_type = "NotifyOptions")] opts: Option<JsValue>,
    ) -> Promise {
        self.run(opts, move |q, opts, signal| {
            Box::pin(async move {
                Ok(JsValue::from_bool(
                    q.notify_at(&handler, opt_f64(&opts, "minTimeout")?, signal.as_ref())
                        .await?,
                ))
            })
        })
    }

    /// Removes the `ONOFFLINEEVENT` handler; resolves with how many bindings went.
    #[wasm_bindgen(js_name = stopNotify, unchecked_return_type = "Promise<number>")]
    pub fn stop_notify(
        &self,
        handler: String,
        #[wasm_bindgen(unchecked_optional_param_type = "SignalOptions")] opts: Option<JsValue>,
    ) -> Promise {
        self.run(opts, move |q, _, signal| {
            Box::pin(async move {
                Ok(JsValue::from_f64(
                    q.stop_notify(&handler, signal.as_ref()).await? as f64,
                ))
            })
        })
    }

    /// One page (50) of the queue, read-only: `{ events, total, next }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<ListPage>")]
    pub fn list(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "ListOptions")] opts: Option<JsValue>,
    ) -> Promise {
        self.run(opts, |q, opts, signal| {
            Box::pin(async move { Ok(to_js(&q.list(&list_args(&opts)?, signal.as_ref()).await?)) })
        })
    }

    /// Every event of the queue, page by page, read-only. Without an `order` it pages by ID
    /// (`>ID` of the last one seen), which stays correct while consumers delete rows; with an
    /// `order` it pages by offset, which can skip rows deleted meanwhile.
    #[wasm_bindgen(js_name = listAll, unchecked_return_type = "AsyncIterableIterator<OfflineEvent>")]
    pub fn list_all(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "ListAllOptions")] opts: Option<JsValue>,
    ) -> std::result::Result<JsValue, JsValue> {
        let (client, connector) = self.parts();
        let prepare = || -> Result<(ListArgs, Option<web_sys::AbortSignal>)> {
            let opts = options(opts.as_ref(), "options")?;
            if field(&opts, "start").is_some() {
                return Err(B24Error::invalid(
                    "start",
                    "listAll() pages by itself; use list() for one page",
                ));
            }
            let args = list_args(&opts)?;
            // Check the arguments now rather than at the first next().
            validate::filter::<JsData>(
                args.filter.as_ref(),
                validate::LIST_FIELDS,
                "event.offline.list",
            )?;
            validate::order::<JsData>(
                args.order.as_ref(),
                validate::LIST_FIELDS,
                "event.offline.list",
            )?;
            Ok((args, opt_signal(&opts)?))
        };
        let (args, signal) = prepare().map_err(|e| super::convert::js_error(&e))?;
        let pager = Rc::new(RefCell::new(Pager::new(args.filter, args.order)));
        let buffer = Rc::new(RefCell::new(VecDeque::new()));
        let next = Closure::<dyn FnMut() -> Promise>::new(move || {
            let (client, connector, pager, buffer, signal) = (
                client.clone(),
                connector.clone(),
                pager.clone(),
                buffer.clone(),
                signal.clone(),
            );
            promise(async move {
                loop {
                    if let Some(v) = buffer.borrow_mut().pop_front() {
                        return Ok(step(v, false));
                    }
                    let q = Queue {
                        client: &client,
                        connector: connector.as_deref(),
                    };
                    // The pager is only ever driven by one next() at a time: take it out.
                    let mut p = pager.borrow().clone();
                    let page = p.next(&q, signal.as_ref()).await?;
                    *pager.borrow_mut() = p;
                    let Some(page) = page else {
                        return Ok(step(JsValue::UNDEFINED, true));
                    };
                    if !page.malformed.is_empty() {
                        client.log(
                            crate::core::platform::Level::Warn,
                            &concat(&[
                                "listAll() skipped ",
                                &decimal(page.malformed.len() as u64),
                                " rows that are not readable events",
                            ]),
                            None,
                            None,
                        );
                    }
                    buffer.borrow_mut().extend(page.events.iter().map(to_js));
                }
            })
        });
        Ok(async_iterable(&next.into_js_value()))
    }

    /// `event.offline.get` as is. Unlike the portal, `clear` defaults to false (reserve): a
    /// destructive read has to be asked for.
    #[wasm_bindgen(unchecked_return_type = "Promise<Taken>")]
    pub fn get(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "GetOptions")] opts: Option<JsValue>,
    ) -> Promise {
        self.run(opts, |q, opts, signal| {
            Box::pin(async move {
                let args = GetArgs {
                    filter: opt_tree(&opts, "filter")?,
                    order: opt_tree(&opts, "order")?,
                    limit: opt_f64(&opts, "limit")?,
                    clear: super::convert::opt_bool(&opts, "clear")?.unwrap_or(false),
                    process_id: opt_str(&opts, "processId")?,
                    error: super::convert::opt_bool(&opts, "error")?.unwrap_or(false),
                };
                let taken = q.get(&args, signal.as_ref()).await?;
                let out = Object::new();
                let pid = taken
                    .process_id
                    .map(|p| JsValue::from_str(&p))
                    .unwrap_or(JsValue::NULL);
                put(&out, &key("processId"), &pid);
                put(&out, &key("events"), &to_js(&taken.events));
                if !taken.malformed.is_empty() {
                    let rows: js_sys::Array = taken.malformed.iter().map(|d| d.0.clone()).collect();
                    put(&out, &key("malformed"), &rows);
                }
                Ok(out.into())
            })
        })
    }

    /// `event.offline.clear`: all rows of `processId`, or only `messageIds` / `ids`.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn clear(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ClearOptions")] opts: JsValue,
    ) -> Promise {
        self.run(Some(opts), |q, opts, signal| {
            Box::pin(async move {
                let pid = req_str(&opts, "processId")?;
                let selection = match (
                    opt_strings(&opts, "messageIds")?,
                    opt_numbers(&opts, "ids")?,
                ) {
                    (Some(_), Some(_)) => {
                        return Err(B24Error::invalid(
                            "messageIds",
                            "give messageIds or ids, not both",
                        ))
                    }
                    (Some(m), None) => Selection::MessageIds(m),
                    (None, Some(i)) => Selection::Ids(i),
                    (None, None) => Selection::All,
                };
                q.clear(&pid, &selection, signal.as_ref()).await?;
                Ok(JsValue::UNDEFINED)
            })
        })
    }

    /// `event.offline.error`: moves these reserved messages to the error queue.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn error(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ErrorOptions")] opts: JsValue,
    ) -> Promise {
        self.run(Some(opts), |q, opts, signal| {
            Box::pin(async move {
                let pid = req_str(&opts, "processId")?;
                let ids = opt_strings(&opts, "messageIds")?
                    .ok_or_else(|| B24Error::invalid("messageIds", "is required"))?;
                q.error(&pid, &ids, signal.as_ref()).await?;
                Ok(JsValue::UNDEFINED)
            })
        })
    }

    /// Any REST method with this queue's connector (so the app's own writes skip its queue).
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
            self.shared.client.clone(),
            method,
            params,
            options,
            self.shared.connector.clone(),
            Want::Result,
        )
    }

    /// `batch` with this queue's connector.
    #[wasm_bindgen(unchecked_return_type = "Promise<BatchResult>")]
    pub fn batch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "BatchCommands")] commands: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "BatchOptions")] options: Option<JsValue>,
    ) -> Promise {
        run_batch(
            self.shared.client.clone(),
            commands,
            options,
            self.shared.connector.clone(),
        )
    }

    /// Reserves a batch (`clear=0`): it stays in the queue, hidden from others, until
    /// acknowledged or failed. `{ errors: true }` reserves from the error queue.
    #[wasm_bindgen(unchecked_return_type = "Promise<Reservation>")]
    pub fn reserve(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "ReserveOptions")] opts: Option<JsValue>,
    ) -> Promise {
        super::flow::reserve(self.flow_parts(), opts)
    }

    /// Reads and deletes a batch at once (`clear=1`). Lossy: events the app fails to process
    /// after this are gone. The fallback where reservations are not available.
    #[wasm_bindgen(unchecked_return_type = "Promise<OfflineEvent[]>")]
    pub fn take(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "TakeOptions")] opts: Option<JsValue>,
    ) -> Promise {
        super::flow::take(self.flow_parts(), opts)
    }

    /// Reservations left unfinished: this consumer's (journal) while their hold lasts, and
    /// stranded error-queue ones, re-selected and owned by this queue object from now on.
    /// Stranded main-queue reservations are released into the error queue instead (take them
    /// with `reserve({ errors: true })`). Reservations another live consumer holds are left
    /// alone.
    #[wasm_bindgen(unchecked_return_type = "Promise<Reservation[]>")]
    pub fn recover(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "RecoverOptions")] opts: Option<JsValue>,
    ) -> Promise {
        super::flow::recover(self.flow_parts(), opts)
    }

    /// Processes the queue: recovers unfinished reservations, reserves batches, hands each to
    /// `handler`, acknowledges what succeeded and fails what it reports as failed (everything,
    /// if it throws, answers something else, or does not settle within `handlerTimeoutMs`),
    /// then drains the error queue and sweeps for stranded reservations. Resolves with the
    /// counts when the queue is empty (or, with `poll`, when aborted).
    #[wasm_bindgen(unchecked_return_type = "Promise<ConsumeSummary>")]
    pub fn consume(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ConsumeHandler")] handler: Function,
        #[wasm_bindgen(unchecked_optional_param_type = "ConsumeOptions")] opts: Option<JsValue>,
    ) -> Promise {
        super::flow::consume(self.flow_parts(), handler, opts)
    }
}
