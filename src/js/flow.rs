//! The reservation flow in JavaScript: `reserve`, `take`, `consume`, `recover` on a queue, and
//! the `Reservation` they hand out. The decisions are the core's (`core::consume`); this file
//! adapts the app's handler, callbacks and options.

use super::client::{promise, WebClient};
use super::convert::{field, js_error, opt_bool, opt_f64, opt_fn, opt_signal, opt_tree, options};
use super::platform::{to_js, JsData};
use super::queue::OfflineQueue;
use super::store::call_async;
use crate::core::consume::{
    consume, ensure_extended, Batch, ErrorPolicy, Flow, Handler, Options, Outcome, Progress,
    Reporter, STRANDED_AFTER_MS,
};
use crate::core::error::{code, B24Error, Result};
use crate::core::journal::Journal;
use crate::core::model::{Features, OfflineEvent};
use crate::core::offline::{GetArgs, Queue};
use crate::core::validate;
use futures_util::future::LocalBoxFuture;
use js_sys::{Array, Function, Object, Promise, Reflect};
use std::cell::Cell;
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
    ) -> Promise;
}

/// What a queue method needs to run the flow, owned (promises outlive `&self`).
#[derive(Clone)]
struct Parts {
    client: Rc<WebClient>,
    connector: Option<String>,
    journal: Rc<Journal>,
    features: Rc<Cell<Option<Features>>>,
}

impl Parts {
    fn of(q: &OfflineQueue) -> Parts {
        Parts {
            client: q.client.clone(),
            connector: q.connector.clone(),
            journal: q.journal.clone(),
            features: q.features.clone(),
        }
    }

    fn flow(&self) -> Flow<'_, super::platform::WebPlatform> {
        Flow {
            queue: Queue {
                client: &self.client,
                connector: self.connector.as_deref(),
            },
            journal: &self.journal,
        }
    }

    /// Reservations need `rest_offline_extended`; asked once per queue.
    async fn extended(&self, signal: Option<&AbortSignal>) -> Result<()> {
        let features = match self.features.get() {
            Some(f) => f,
            None => {
                let f = self.flow().queue.features(signal).await?;
                self.features.set(Some(f));
                f
            }
        };
        ensure_extended(&features)
    }
}

fn get_args(opts: &JsValue) -> Result<GetArgs> {
    Ok(GetArgs {
        filter: opt_tree(opts, "filter")?,
        order: opt_tree(opts, "order")?,
        limit: opt_f64(opts, "limit")?,
        ..GetArgs::default()
    })
}

/// A reserved batch: acknowledge it, fail some of it, or read it again.
#[wasm_bindgen]
pub struct Reservation {
    parts: Parts,
    batch: Batch<JsData>,
    events: JsValue,
}

impl Reservation {
    fn new(parts: Parts, batch: Batch<JsData>) -> Reservation {
        let events = to_js(&batch.events);
        Reservation {
            parts,
            batch,
            events,
        }
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

    /// Acknowledges the events (all of them, or these message ids): they leave the queue.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn ack(
        &self,
        #[wasm_bindgen(js_name = messageIds, unchecked_optional_param_type = "string[]")]
        message_ids: Option<JsValue>,
    ) -> Promise {
        let (parts, pid, all) = (
            self.parts.clone(),
            self.batch.process_id.clone(),
            self.batch.message_ids(),
        );
        promise(async move {
            let ids = match message_ids.filter(|v| !v.is_undefined() && !v.is_null()) {
                Some(v) => super::convert::strings(&v, "messageIds")?,
                None => all,
            };
            parts.flow().ack(&pid, &ids).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Sends these events to the error queue. Events that came from the error queue cannot be
    /// marked again on the portal: they stay reserved and journaled, and come back later.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn fail(
        &self,
        #[wasm_bindgen(js_name = messageIds, unchecked_param_type = "string[]")]
        message_ids: JsValue,
    ) -> Promise {
        let (parts, pid, error) = (
            self.parts.clone(),
            self.batch.process_id.clone(),
            self.batch.error,
        );
        promise(async move {
            let ids = super::convert::strings(&message_ids, "messageIds")?;
            parts.flow().fail(&pid, &ids, error).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The events still reserved under this process id, read again.
    #[wasm_bindgen(unchecked_return_type = "Promise<Reservation>")]
    pub fn reload(&self) -> Promise {
        let (parts, pid, error) = (
            self.parts.clone(),
            self.batch.process_id.clone(),
            self.batch.error,
        );
        promise(async move {
            let batch = parts.flow().reselect(&pid, error, None).await?;
            Ok(Reservation::new(parts, batch).into())
        })
    }
}

/// The app's handler: `(events, context) => void | { failed: string[] }` (or a promise of it).
struct JsHandler {
    func: Function,
    signal: Option<AbortSignal>,
}

impl Handler<JsData> for JsHandler {
    fn handle(&self, batch: &Batch<JsData>) -> LocalBoxFuture<'static, Outcome> {
        let ctx = Object::new();
        let _ = Reflect::set(
            &ctx,
            &"processId".into(),
            &JsValue::from_str(&batch.process_id),
        );
        let _ = Reflect::set(
            &ctx,
            &"fromErrorQueue".into(),
            &JsValue::from_bool(batch.error),
        );
        let _ = Reflect::set(
            &ctx,
            &"recovered".into(),
            &JsValue::from_bool(batch.recovered),
        );
        if let Some(s) = &self.signal {
            let _ = Reflect::set(&ctx, &"signal".into(), s);
        }
        let p = call_async(&self.func, &to_js(&batch.events), &ctx.into());
        Box::pin(async move {
            match JsFuture::from(p).await {
                Err(e) => {
                    let why = e
                        .dyn_ref::<js_sys::Error>()
                        .map(|e| String::from(e.message()))
                        .or_else(|| e.as_string())
                        .unwrap_or_default();
                    Outcome::Threw(why)
                }
                Ok(v) => match field(&v, "failed") {
                    Some(f) if Array::is_array(&f) => Outcome::Failed(
                        Array::from(&f)
                            .iter()
                            .filter_map(|x| x.as_string())
                            .collect(),
                    ),
                    Some(_) => Outcome::Threw(
                        "the handler returned { failed } that is not an array of message ids"
                            .into(),
                    ),
                    None => Outcome::Done,
                },
            }
        })
    }
}

struct JsReporter {
    on_progress: Option<Function>,
    on_dead_letter: Option<Function>,
}

impl Reporter<JsData> for JsReporter {
    fn progress(&self, p: &Progress) {
        if let Some(f) = &self.on_progress {
            let _ = f.call1(&JsValue::NULL, &to_js(p));
        }
    }

    fn dead_letters(&self, events: &[OfflineEvent<JsData>]) {
        if let Some(f) = &self.on_dead_letter {
            let _ = f.call1(&JsValue::NULL, &to_js(&events));
        }
    }
}

fn error_policy(opts: &JsValue) -> Result<ErrorPolicy> {
    let Some(v) = field(opts, "errors") else {
        return Ok(ErrorPolicy::Include);
    };
    if let Some(name) = v.as_string() {
        return match name.as_str() {
            "include" => Ok(ErrorPolicy::Include),
            "skip" => Ok(ErrorPolicy::Skip),
            _ => Err(B24Error::invalid(
                "errors",
                "must be 'include', 'skip' or { retries: n }",
            )),
        };
    }
    match opt_f64(&v, "retries")? {
        Some(n) => Ok(ErrorPolicy::Retry(
            validate::positive("errors.retries", n)?.min(1000) as u32,
        )),
        None => Err(B24Error::invalid(
            "errors",
            "must be 'include', 'skip' or { retries: n }",
        )),
    }
}

fn consume_options(opts: &JsValue) -> Result<Options> {
    let args = get_args(opts)?;
    let concurrency = match opt_f64(opts, "concurrency")? {
        Some(c) => validate::positive("concurrency", c)?.min(16) as usize,
        None => 1,
    };
    let poll = match opt_bool(opts, "poll")? {
        Some(true) => {
            let first = opt_f64(opts, "idleDelay")?
                .map(|d| validate::positive("idleDelay", d))
                .transpose()?
                .unwrap_or(1000) as f64;
            let longest = opt_f64(opts, "maxIdleDelay")?
                .map(|d| validate::positive("maxIdleDelay", d))
                .transpose()?
                .unwrap_or(30_000) as f64;
            Some((first, longest.max(first)))
        }
        _ => None,
    };
    let stranded_after_ms = match opt_f64(opts, "strandedAfterMs")? {
        Some(ms) => validate::non_negative("strandedAfterMs", ms)? as f64,
        None => STRANDED_AFTER_MS,
    };
    Ok(Options {
        limit: args.limit,
        concurrency,
        errors: error_policy(opts)?,
        poll,
        stranded_after_ms,
        filter: args.filter,
        order: args.order,
    })
}

#[wasm_bindgen]
impl OfflineQueue {
    /// Reserves a batch (`clear=0`): it stays in the queue, hidden from others, until
    /// acknowledged or failed. `{ errors: true }` reserves from the error queue.
    #[wasm_bindgen(unchecked_return_type = "Promise<Reservation>")]
    pub fn reserve(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "ReserveOptions")] opts: Option<JsValue>,
    ) -> Promise {
        let parts = Parts::of(self);
        promise(async move {
            let opts = options(opts.as_ref(), "options")?;
            let mut args = get_args(&opts)?;
            args.error = opt_bool(&opts, "errors")?.unwrap_or(false);
            let signal = opt_signal(&opts)?;
            parts.extended(signal.as_ref()).await?;
            let batch = parts.flow().reserve(&args, signal.as_ref()).await?;
            Ok(Reservation::new(parts, batch).into())
        })
    }

    /// Reads and deletes a batch at once (`clear=1`). Lossy: events the app fails to process
    /// after this are gone. The fallback where reservations are not available.
    #[wasm_bindgen(unchecked_return_type = "Promise<OfflineEvent[]>")]
    pub fn take(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "TakeOptions")] opts: Option<JsValue>,
    ) -> Promise {
        let parts = Parts::of(self);
        promise(async move {
            let opts = options(opts.as_ref(), "options")?;
            let args = GetArgs {
                clear: true,
                ..get_args(&opts)?
            };
            let signal = opt_signal(&opts)?;
            Ok(to_js(
                &parts.flow().queue.get(&args, signal.as_ref()).await?.events,
            ))
        })
    }

    /// Reservations left unfinished by an earlier run (journal), and stranded ones (reserved
    /// longer than `strandedAfterMs` by nobody that journaled them), re-selected by process id.
    #[wasm_bindgen(unchecked_return_type = "Promise<Reservation[]>")]
    pub fn recover(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "RecoverOptions")] opts: Option<JsValue>,
    ) -> Promise {
        let parts = Parts::of(self);
        promise(async move {
            let opts = options(opts.as_ref(), "options")?;
            let age = opt_f64(&opts, "strandedAfterMs")?
                .map(|ms| validate::non_negative("strandedAfterMs", ms))
                .transpose()?
                .map(|ms| ms as f64)
                .unwrap_or(STRANDED_AFTER_MS);
            let signal = opt_signal(&opts)?;
            parts.extended(signal.as_ref()).await?;
            let (batches, _) = parts.flow().recoverable(age, &[], signal.as_ref()).await?;
            Ok(batches
                .into_iter()
                .map(|b| JsValue::from(Reservation::new(parts.clone(), b)))
                .collect::<Array>()
                .into())
        })
    }

    /// Processes the queue: recovers unfinished reservations, reserves batches, hands each to
    /// `handler`, acknowledges what succeeded and fails what it reports as failed (everything,
    /// if it throws), then drains the error queue and sweeps for stranded reservations. Resolves
    /// with the counts when the queue is empty (or, with `poll`, when aborted).
    #[wasm_bindgen(unchecked_return_type = "Promise<ConsumeSummary>")]
    pub fn consume(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ConsumeHandler")] handler: Function,
        #[wasm_bindgen(unchecked_optional_param_type = "ConsumeOptions")] opts: Option<JsValue>,
    ) -> Promise {
        let parts = Parts::of(self);
        let lock = self.lock.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let prepared = async {
                let opts = options(opts.as_ref(), "options")?;
                let options = consume_options(&opts)?;
                let signal = opt_signal(&opts)?;
                let exclusive = opt_bool(&opts, "exclusive")?.unwrap_or(true);
                let reporter = JsReporter {
                    on_progress: opt_fn(&opts, "onProgress")?,
                    on_dead_letter: opt_fn(&opts, "onDeadLetter")?,
                };
                parts.extended(signal.as_ref()).await?;
                Ok::<_, B24Error>((options, signal, exclusive, reporter))
            };
            let (options, signal, exclusive, reporter) =
                prepared.await.map_err(|e| js_error(&e))?;
            let handler = JsHandler {
                func: handler,
                signal: signal.clone(),
            };
            let run_signal = signal.clone();
            let run = Closure::once_into_js(move || -> Promise {
                promise(async move {
                    let progress = consume(
                        &parts.flow(),
                        &handler,
                        &reporter,
                        &options,
                        run_signal.as_ref(),
                    )
                    .await?;
                    Ok(to_js(&progress))
                })
            });
            // The run's own rejection is already a B24Error; only waiting for the lock can fail
            // otherwise (aborted while another tab holds it).
            JsFuture::from(with_lock(&lock, signal.as_ref(), exclusive, &run))
                .await
                .map_err(|e| {
                    if signal.as_ref().map(AbortSignal::aborted).unwrap_or(false)
                        && field(&e, "code").is_none()
                    {
                        js_error(&B24Error::new(
                            code::ABORTED,
                            "aborted while waiting for another tab's consumer of this queue",
                        ))
                    } else {
                        e
                    }
                })
        })
    }
}
