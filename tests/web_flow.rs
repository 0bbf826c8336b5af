//! The reservation flow in headless Chrome and Firefox against the emulator, with counts
//! asserted: thousands of events through parallel consumers, the same under injected faults,
//! a "reload" in the middle, the error queue, the Web Lock, and the Reservation API.
#![cfg(target_arch = "wasm32")]

mod support;

use b24_offline::js::{Bitrix24, OfflineQueue, Reservation};
use js_sys::{Array, Function, Map, Promise};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use support::*;
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const EVENT: &str = "ONCRMDEALUPDATE";

/// Short request timeouts, so that a short `strandedAfterMs` is allowed (its minimum is the
/// handler timeout plus four request timeouts plus a second).
const FAST: &str = r#","timeoutMs":2000"#;

/// Every row id handed to any handler, with how often.
type Seen = Rc<RefCell<HashMap<u64, u32>>>;

/// A handler that records the events and answers with `decide(events, context, call number)`.
fn handler(seen: Seen, decide: impl Fn(&Array, &JsValue, u32) -> JsValue + 'static) -> Function {
    let calls = Cell::new(0);
    let f = Closure::<dyn Fn(JsValue, JsValue) -> JsValue>::new(
        move |events: JsValue, ctx: JsValue| {
            let events: Array = events.dyn_into().unwrap();
            for e in events.iter() {
                *seen
                    .borrow_mut()
                    .entry(num(&e, &["id"]) as u64)
                    .or_default() += 1;
            }
            let n = calls.get();
            calls.set(n + 1);
            decide(&events, &ctx, n)
        },
    );
    f.into_js_value().unchecked_into()
}

fn ok_handler(seen: Seen) -> Function {
    handler(seen, |_, _, _| JsValue::UNDEFINED)
}

/// A fresh app with ONCRMDEALUPDATE bound offline and `n` queued changes.
async fn queued(client_id: &str, n: u32, extra: &str) -> (Bitrix24, JsValue) {
    let (b24, t) = client(client_id, extra).await;
    wait(queue(&b24, None).bind(JsValue::from_str(EVENT), U))
        .await
        .unwrap();
    for chunk in 0..n.div_ceil(1000) {
        let first = chunk * 1000 + 1;
        trigger(EVENT, first, 1000.min(n - chunk * 1000)).await;
    }
    (b24, t)
}

/// Rows of this app left in the emulator's queue: (all, reserved).
async fn left(client_id: &str) -> (u32, u32) {
    let rows: Array = get("queue").await.dyn_into().unwrap();
    let mine: Vec<JsValue> = rows
        .iter()
        .filter(|r| text(r, &["APP_ID"]) == client_id)
        .collect();
    (
        mine.len() as u32,
        mine.iter()
            .filter(|r| !text(r, &["PROCESS_ID"]).is_empty())
            .count() as u32,
    )
}

fn memory_queue(b24: &Bitrix24, key: &str) -> OfflineQueue {
    b24.offline(some(&format!(r#"{{"store":"memory","storeKey":"{key}"}}"#)))
        .unwrap()
}

fn refresh_from(client_id: &'static str, count: Rc<Cell<u32>>) -> Function {
    let f = Closure::<dyn FnMut(JsValue) -> Promise>::new(move |_: JsValue| {
        count.set(count.get() + 1);
        future_to_promise(async move {
            let t = token(client_id, true).await;
            let out = new_object();
            set(&out, "accessToken", &at(&t, &["access_token"]));
            Ok(out)
        })
    });
    f.into_js_value().unchecked_into()
}

/// (a) 5,000 events, three consumers side by side: each event handled exactly once.
#[wasm_bindgen_test]
async fn three_consumers_take_five_thousand_events() {
    fresh().await;
    let (b24, _) = queued("web.flow.a", 5000, FAST).await;
    let seen: Seen = Rc::default();
    let consumers: Vec<OfflineQueue> = (0..3)
        .map(|i| memory_queue(&b24, &format!("flow-a-{i}")))
        .collect();
    let runs: Vec<Promise> = consumers
        .iter()
        .map(|q| q.consume(ok_handler(seen.clone()), some(r#"{"limit": 50, "concurrency": 2, "exclusive": false, "handlerTimeoutMs": 1000, "strandedAfterMs": 10000}"#)))
        .collect();
    let summaries: Array = wait(Promise::all(&runs.iter().collect::<Array>()))
        .await
        .unwrap()
        .dyn_into()
        .unwrap();
    let acked: f64 = summaries.iter().map(|s| num(&s, &["acked"])).sum();
    assert_eq!(acked, 5000.0);
    assert!(
        summaries.iter().all(|s| num(&s, &["acked"]) > 0.0),
        "all three took part"
    );
    assert_eq!(seen.borrow().len(), 5000, "every event handled");
    assert!(
        seen.borrow().values().all(|n| *n == 1),
        "no event handed to two consumers"
    );
    assert_eq!(
        left("web.flow.a").await,
        (0, 0),
        "nothing left, nothing reserved"
    );
}

/// (b) The same with the emulator failing about one call in ten: server errors, dropped
/// connections, rate limits, expired tokens, and answers lost after the portal acted.
#[wasm_bindgen_test]
async fn five_thousand_events_survive_injected_faults() {
    fresh().await;
    let refreshes = Rc::new(Cell::new(0));
    let (b24, t) = queued("web.flow.b", 5000, FAST).await;
    drop(b24);
    let opts = options(&text(&t, &["access_token"]), FAST);
    set(
        &opts,
        "refresh",
        &refresh_from("web.flow.b", refreshes.clone()).into(),
    );
    let b24 = Bitrix24::with_token(opts).unwrap();
    control(
        "faults",
        // A drain's step (acknowledge and reserve in one request) is a `batch`; lone gets and
        // clears are re-reads, sweeps and repeated acknowledgements.
        r#"{"seed": 7, "rules": [
            {"method": "batch", "kind": "http_500", "probability": 0.03},
            {"method": "batch", "kind": "drop", "phase": "after", "probability": 0.03},
            {"method": "event.offline.get", "kind": "drop", "phase": "after", "probability": 0.03},
            {"method": "event.offline.clear", "kind": "drop", "phase": "after", "probability": 0.03},
            {"method": "event.offline.clear", "kind": "http_500", "probability": 0.02},
            {"kind": "query_limit", "probability": 0.02},
            {"kind": "expired_token", "probability": 0.02}
        ]}"#,
    )
    .await;
    let seen: Seen = Rc::default();
    let consumers: Vec<OfflineQueue> = (0..3)
        .map(|i| memory_queue(&b24, &format!("flow-b-{i}")))
        .collect();
    let runs: Vec<Promise> = consumers
        .iter()
        .map(|q| {
            q.consume(
                ok_handler(seen.clone()),
                some(r#"{"limit": 50, "exclusive": false, "handlerTimeoutMs": 1000, "strandedAfterMs": 10000}"#),
            )
        })
        .collect();
    let summaries: Array = wait(Promise::all(&runs.iter().collect::<Array>()))
        .await
        .unwrap()
        .dyn_into()
        .unwrap();
    let stats = get("stats").await;
    let faults = num(&stats, &["faults_injected"]);
    let requests: f64 =
        js_sys::Object::values(at(&stats, &["requests"]).unchecked_ref::<js_sys::Object>())
            .iter()
            .filter_map(|v| v.as_f64())
            .sum();
    send("DELETE", "/_emulator/faults", None).await;
    let rate = faults / requests;
    assert!(
        faults >= 15.0 && (0.07..0.2).contains(&rate),
        "about one call in ten failed: {faults} of {requests}"
    );
    assert_eq!(
        seen.borrow().len(),
        5000,
        "every event handled at least once"
    );
    let handed: u32 = seen.borrow().values().sum();
    let duplicates = handed - 5000;
    let reported: f64 = summaries.iter().map(|s| num(&s, &["duplicates"])).sum();
    let recovered: f64 = summaries.iter().map(|s| num(&s, &["recovered"])).sum();
    let released: f64 = summaries.iter().map(|s| num(&s, &["released"])).sum();
    web_sys::console::log_1(&format!("faults {faults} of {requests} requests, handed {handed}, duplicates {duplicates} (reported within consumers {reported}), recovered {recovered}, released {released}, refreshes {}", refreshes.get()).into());
    assert!(refreshes.get() > 0, "expired tokens were refreshed");
    assert!(
        released > 0.0,
        "reservations whose answer was lost were released through the error queue"
    );
    assert!(reported <= duplicates as f64);
    assert_eq!(left("web.flow.b").await, (0, 0), "none lost, none stranded");
}

/// A JournalStore over a Map, as an app might write one (async methods).
fn map_store(map: &Map) -> JsValue {
    let store = new_object();
    let m = map.clone();
    let get =
        Closure::<dyn Fn(JsValue) -> Promise>::new(move |k: JsValue| Promise::resolve(&m.get(&k)));
    let m = map.clone();
    let put = Closure::<dyn Fn(JsValue, JsValue) -> Promise>::new(move |k: JsValue, v: JsValue| {
        m.set(&k, &v);
        Promise::resolve(&JsValue::UNDEFINED)
    });
    let m = map.clone();
    let del = Closure::<dyn Fn(JsValue)>::new(move |k: JsValue| {
        m.delete(&k);
    });
    set(&store, "get", &get.into_js_value());
    set(&store, "set", &put.into_js_value());
    set(&store, "delete", &del.into_js_value());
    store
}

/// (c) A "reload" in the middle: the first consumer dies in its third batch; a new one on the
/// same store recovers that batch and finishes.
#[wasm_bindgen_test]
async fn a_reload_in_the_middle_loses_nothing() {
    fresh().await;
    let (b24, t) = queued("web.flow.c", 300, "").await;
    let backing = Map::new();
    // The same consumer before and after the reload: a worker or page with a stable id takes
    // its own reservations back at once (a fresh id would wait for their hold, unless the
    // browser tells that the first page is gone, see the end-to-end suite).
    let store_opts = |map: &Map| {
        let o = new_object();
        set(&o, "store", &map_store(map));
        set(&o, "storeKey", &JsValue::from_str("flow-c"));
        set(&o, "consumerId", &JsValue::from_str("page-c"));
        o
    };
    let seen: Seen = Rc::default();
    let first = b24.offline(Some(store_opts(&backing))).unwrap();
    // The third batch never finishes: the page is "closed" while it runs.
    let dying = handler(seen.clone(), |_, _, n| {
        if n == 2 {
            Promise::new(&mut |_, _| {}).into()
        } else {
            JsValue::UNDEFINED
        }
    });
    let stop = web_sys::AbortController::new().unwrap();
    let opts = obj(r#"{"limit": 50, "exclusive": false}"#);
    set(&opts, "signal", &stop.signal());
    let orphan = first.consume(dying, Some(opts));
    for _ in 0..200 {
        if seen.borrow().len() >= 150 {
            break;
        }
        sleep_ms(20).await;
    }
    assert_eq!(
        seen.borrow().len(),
        150,
        "two batches done, the third in the handler"
    );
    // The page goes: its run stops at once although the handler never settles, and leaves the
    // batch reserved and journaled.
    stop.abort();
    let summary = wait(orphan).await.unwrap();
    assert_eq!(text(&summary, &["stopped"]), "aborted");
    drop(first);
    assert_eq!(left("web.flow.c").await, (200, 50));

    // The new page: a new client, a new journal over the same storage.
    let b24 = Bitrix24::with_token(options(&text(&t, &["access_token"]), "")).unwrap();
    let q = b24.offline(Some(store_opts(&backing))).unwrap();
    let found: Array = wait(q.recover(U)).await.unwrap().dyn_into().unwrap();
    assert_eq!(found.length(), 1);
    let r: Reservation = Reservation::try_from_js_value(found.get(0)).expect("a Reservation");
    assert!(r.recovered());
    assert_eq!(length(&r.events()), 50);
    wait(r.ack(None)).await.unwrap();
    let seen2: Seen = Rc::default();
    let summary = wait(q.consume(
        ok_handler(seen2.clone()),
        some(r#"{"limit": 50, "exclusive": false}"#),
    ))
    .await
    .unwrap();
    assert_eq!(
        (num(&summary, &["reserved"]), num(&summary, &["recovered"])),
        (150.0, 0.0)
    );
    assert_eq!(
        seen.borrow().len() + seen2.borrow().len(),
        300,
        "every event handled"
    );
    assert_eq!(left("web.flow.c").await, (0, 0));
    assert_eq!(backing.size(), 0, "the journal is empty");
}

/// (d) What the handler fails goes to the error queue and is handled again by the error pass;
/// with { retries } a record that keeps failing is given up and reported.
#[wasm_bindgen_test]
async fn handler_failures_go_through_the_error_queue() {
    fresh().await;
    let (b24, _) = queued("web.flow.d", 200, "").await;
    let q = memory_queue(&b24, "flow-d");
    let seen: Seen = Rc::default();
    let from_errors = Rc::new(Cell::new(0u32));
    let fe = from_errors.clone();
    // Odd rows fail the first time; the error pass succeeds, except for row id 7 (poison).
    let h = handler(seen.clone(), move |events, ctx, _| {
        let error_pass = at(ctx, &["fromErrorQueue"]).as_bool() == Some(true);
        if error_pass {
            fe.set(fe.get() + events.length());
        }
        let failed: Array = events
            .iter()
            .filter(|e| {
                let id = num(e, &["id"]) as u64;
                if error_pass {
                    text(e, &["data", "FIELDS", "ID"]) == "7"
                } else {
                    id % 2 == 1
                }
            })
            .map(|e| at(&e, &["messageId"]))
            .collect();
        let out = new_object();
        set(&out, "failed", &failed);
        out
    });
    let dead: Rc<RefCell<Vec<JsValue>>> = Rc::default();
    let d = dead.clone();
    let on_dead =
        Closure::<dyn Fn(JsValue)>::new(move |events: JsValue| d.borrow_mut().push(events));
    let progress = Rc::new(Cell::new(0u32));
    let p = progress.clone();
    let on_progress = Closure::<dyn Fn(JsValue)>::new(move |_: JsValue| p.set(p.get() + 1));
    let opts = obj(r#"{"limit": 40, "errors": {"retries": 1}}"#);
    set(&opts, "onDeadLetter", &on_dead.into_js_value());
    set(&opts, "onProgress", &on_progress.into_js_value());
    let s = wait(q.consume(h, Some(opts))).await.unwrap();
    assert_eq!(
        (
            num(&s, &["failed"]),
            num(&s, &["dead"]),
            num(&s, &["acked"])
        ),
        (100.0, 1.0, 199.0)
    );
    assert_eq!(
        from_errors.get(),
        100,
        "the error pass saw every failed event"
    );
    assert_eq!(dead.borrow().len(), 1);
    assert_eq!(length(&dead.borrow()[0]), 1);
    assert!(progress.get() >= 8, "progress after every batch");
    assert_eq!(left("web.flow.d").await, (0, 0));
}

#[wasm_bindgen_test]
async fn reservations_by_hand_and_the_destructive_take() {
    fresh().await;
    let (b24, _) = queued("web.flow.r", 30, "").await;
    let q = memory_queue(&b24, "flow-r");
    let r: Reservation =
        Reservation::try_from_js_value(wait(q.reserve(some(r#"{"limit": 10}"#))).await.unwrap())
            .unwrap();
    assert_eq!(r.process_id().len(), 32);
    let ids: Vec<String> = r
        .events()
        .dyn_into::<Array>()
        .unwrap()
        .iter()
        .map(|e| text(&e, &["messageId"]))
        .collect();
    wait(r.ack(Some(
        Array::of2(&ids[0].clone().into(), &ids[1].clone().into()).into(),
    )))
    .await
    .unwrap();
    wait(r.fail(Array::of1(&ids[2].clone().into()).into()))
        .await
        .unwrap();
    let again: Reservation =
        Reservation::try_from_js_value(wait(r.reload()).await.unwrap()).unwrap();
    assert_eq!(length(&again.events()), 7, "10 - 2 acked - 1 failed");
    wait(again.ack(None)).await.unwrap();
    let e: Reservation =
        Reservation::try_from_js_value(wait(q.reserve(some(r#"{"errors": true}"#))).await.unwrap())
            .unwrap();
    assert!(e.from_error_queue());
    assert_eq!(length(&e.events()), 1);
    wait(e.ack(None)).await.unwrap();
    let taken = wait(q.take(some(r#"{"limit": 15}"#))).await.unwrap();
    assert_eq!(length(&taken), 15);
    assert_eq!(left("web.flow.r").await, (5, 0));
    // Without the plan feature, reservations are refused with a clear error; take() still works.
    control("config", r#"{"extended_mode": false}"#).await;
    let (b24, _) = client("web.flow.r2", "").await;
    let q = memory_queue(&b24, "flow-r2");
    let e = failure(q.reserve(U)).await;
    assert_eq!(text(&e, &["code"]), "FEATURE_UNAVAILABLE");
    assert!(text(&e, &["description"]).contains("take()"));
    assert_eq!(
        text(
            &failure(q.consume(ok_handler(Rc::default()), U)).await,
            &["code"]
        ),
        "FEATURE_UNAVAILABLE"
    );
    wait(q.take(U)).await.unwrap();
}

/// Two consumers of one queue in one page: with the Web Lock the second starts only when the
/// first is done, so the request rate does not double.
#[wasm_bindgen_test]
async fn one_consumer_per_queue_at_a_time() {
    fresh().await;
    let (b24, _) = queued("web.flow.lock", 100, "").await;
    let order: Rc<RefCell<Vec<(u8, &'static str)>>> = Rc::default();
    let make = |who: u8| {
        let o = order.clone();
        let f = Closure::<dyn Fn(JsValue) -> Promise>::new(move |_: JsValue| {
            o.borrow_mut().push((who, "start"));
            let o = o.clone();
            future_to_promise(async move {
                sleep_ms(30).await;
                o.borrow_mut().push((who, "end"));
                Ok(JsValue::UNDEFINED)
            })
        });
        f.into_js_value().unchecked_into::<Function>()
    };
    let (q1, q2) = (queue(&b24, None), queue(&b24, None));
    let a = q1.consume(make(1), some(r#"{"limit": 20}"#));
    let b = q2.consume(make(2), some(r#"{"limit": 20}"#));
    let (sa, sb) = (wait(a).await.unwrap(), wait(b).await.unwrap());
    assert_eq!(num(&sa, &["acked"]) + num(&sb, &["acked"]), 100.0);
    let order = order.borrow().clone();
    let last_of_first = order.iter().rposition(|(w, _)| *w == order[0].0).unwrap();
    let first_of_second = order
        .iter()
        .position(|(w, _)| *w != order[0].0)
        .unwrap_or(order.len());
    assert!(
        first_of_second > last_of_first,
        "the consumers never overlapped: {order:?}"
    );
    assert_eq!(left("web.flow.lock").await, (0, 0));
}

/// Step 3, the list pager and the logger's context, in the browser: each event with its deal as
/// it is now (one gone), fetched without a single `crm.deal.get`; the deals page by ID; every
/// log line of the run names the portal.
#[wasm_bindgen_test]
async fn objects_pages_and_log_context_in_the_browser() {
    fresh().await;
    let lines = Rc::new(RefCell::new(Vec::<(String, JsValue)>::new()));
    let l = lines.clone();
    let logger = Closure::<dyn Fn(JsValue, JsValue, JsValue)>::new(
        move |_level: JsValue, message: JsValue, context: JsValue| {
            l.borrow_mut()
                .push((message.as_string().unwrap_or_default(), context));
        },
    );
    let logger: Function = logger.into_js_value().unchecked_into();
    let t = token("web.flow.objects", true).await;
    let opts = options(&text(&t, &["access_token"]), "");
    set(&opts, "logger", &logger);
    let b24 = Bitrix24::with_token(opts).expect("valid options");
    // The app's own deals (its own changes queue nothing for it).
    let cmds: Vec<String> = (1..=60)
        .map(|i| format!(r#"["crm.deal.add", {{"fields": {{"TITLE": "d{i}"}}}}]"#))
        .collect();
    wait(b24.batch(obj(&format!("[{}]", cmds.join(","))), U))
        .await
        .unwrap();
    let q = queue(&b24, None);
    wait(q.bind(JsValue::from_str(EVENT), U)).await.unwrap();
    // Changed by someone else: deals 1..=60, and 61, which does not exist.
    trigger(EVENT, 1, 61).await;
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let s = seen.clone();
    let h = Closure::<dyn Fn(JsValue) -> JsValue>::new(move |events: JsValue| {
        let events: Array = events.dyn_into().unwrap();
        for e in events.iter() {
            let state = text(&e, &["objectState"]);
            let what = if state == "found" {
                assert_eq!(
                    text(&e, &["object", "ID"]),
                    text(&e, &["data", "FIELDS", "ID"])
                );
                text(&e, &["object", "TITLE"])
            } else {
                state
            };
            s.borrow_mut().push(what);
        }
        JsValue::UNDEFINED
    });
    let gets = requests("crm.deal.get").await;
    let summary = wait(q.consume(
        h.into_js_value().unchecked_into(),
        some(r#"{"objects": true, "limit": 50, "exclusive": false}"#),
    ))
    .await
    .unwrap();
    assert_eq!(num(&summary, &["acked"]), 61.0);
    let mut seen = seen.borrow().clone();
    seen.sort();
    let mut want: Vec<String> = (1..=60).map(|i| format!("d{i}")).collect();
    want.push("gone".into());
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(requests("crm.deal.get").await, gets, "no single get");
    // The pager's page function, as fetchList drives it: by ID, no empty last page.
    let lists = requests("crm.deal.list").await;
    let first = wait(b24.list_page(
        "crm.deal.list".into(),
        some(r#"{"select": ["ID"]}"#),
        U,
        JsValue::from_f64(0.0),
    ))
    .await
    .unwrap();
    assert_eq!(
        (length(&at(&first, &["rows"])), num(&first, &["next"])),
        (50, 50.0)
    );
    let last = wait(b24.list_page("crm.deal.list".into(), U, U, JsValue::from_f64(50.0)))
        .await
        .unwrap();
    assert_eq!(length(&at(&last, &["rows"])), 10);
    assert!(at(&last, &["next"]).is_undefined());
    assert_eq!(requests("crm.deal.list").await - lists, 2.0);
    let e = failure(b24.list_page("crm.deal.list".into(), U, U, JsValue::from_f64(-1.0))).await;
    assert_eq!(text(&e, &["code"]), "INVALID_ARGUMENT");
    // A failure the client retries is logged with its context.
    control(
        "faults",
        r#"{"rules": [{"method": "crm.deal.get", "kind": "http_500", "times": 1}]}"#,
    )
    .await;
    wait(b24.call("crm.deal.get".into(), some(r#"{"id": 1}"#), U))
        .await
        .unwrap();
    let lines = lines.borrow();
    let retry = lines
        .iter()
        .find(|(m, _)| m.starts_with("retrying crm.deal.get"))
        .expect("the retry was logged");
    assert_eq!(text(&retry.1, &["method"]), "crm.deal.get");
    assert!(!text(&retry.1, &["portal"]).is_empty());
}
