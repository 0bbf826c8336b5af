//! The hostile-input catalogue, in headless Chrome and Firefox against the emulator: a portal
//! that redirects, handlers that answer wrongly or never, rows the portal sends broken, journal
//! stores that throw, hang or hold garbage, reservation calls naming events of no reservation,
//! absurd timer values, a run of expired tokens under a polling consumer. Each test states the
//! input and the outcome it must have.
#![cfg(target_arch = "wasm32")]

mod support;

use b24_offline::js::{Bitrix24, OfflineQueue, Reservation};
use js_sys::{Array, Function, Map, Promise};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use support::*;
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const EVENT: &str = "ONCRMDEALUPDATE";
/// Short request timeouts, so that a short `strandedAfterMs` is allowed.
const FAST: &str = r#","timeoutMs":2000"#;

async fn queued(client_id: &str, n: u32, extra: &str) -> (Bitrix24, JsValue) {
    let (b24, t) = client(client_id, extra).await;
    wait(queue(&b24, None).bind(JsValue::from_str(EVENT), U))
        .await
        .unwrap();
    if n > 0 {
        trigger(EVENT, 1, n).await;
    }
    (b24, t)
}

fn memory_queue(b24: &Bitrix24, key: &str) -> OfflineQueue {
    b24.offline(some(&format!(r#"{{"store":"memory","storeKey":"{key}"}}"#)))
        .unwrap()
}

/// Rows of this app in the emulator's queue: (all, reserved, in the error queue).
async fn left(client_id: &str) -> (u32, u32, u32) {
    let rows: Array = get("queue").await.dyn_into().unwrap();
    let mine: Vec<JsValue> = rows
        .iter()
        .filter(|r| text(r, &["APP_ID"]) == client_id)
        .collect();
    let count = |f: &dyn Fn(&JsValue) -> bool| mine.iter().filter(|r| f(r)).count() as u32;
    (
        mine.len() as u32,
        count(&|r| !text(r, &["PROCESS_ID"]).is_empty()),
        count(&|r| text(r, &["ERROR"]) == "1"),
    )
}

/// A handler answering `answer(events, call number)` (JS values), counting events seen.
fn answering(seen: Rc<Cell<u32>>, answer: impl Fn(&Array, u32) -> JsValue + 'static) -> Function {
    let calls = Cell::new(0);
    let f =
        Closure::<dyn Fn(JsValue, JsValue) -> JsValue>::new(move |events: JsValue, _: JsValue| {
            let events: Array = events.dyn_into().unwrap();
            seen.set(seen.get() + events.length());
            let n = calls.get();
            calls.set(n + 1);
            answer(&events, n)
        });
    f.into_js_value().unchecked_into()
}

fn eval(js: &str) -> JsValue {
    js_sys::eval(js).expect("test JS")
}

/// A portal answering 307 or 302 to another host: never followed, `PORTAL_MOVED`, and the
/// other host receives nothing (before: the body, token included, went there, and its answer
/// came back as the portal's).
#[wasm_bindgen_test]
async fn redirects_are_never_followed() {
    fresh().await;
    let (b24, _) = queued("web.hostile.redirect", 3, "").await;
    let trap = format!("{}/trap/stolen", base().replace("127.0.0.1", "localhost"));
    for status in [307, 302, 301, 308] {
        control(
            "faults",
            &format!(r#"{{"rules": [{{"kind": {{"redirect": "{trap}", "status": {status}}}}}]}}"#),
        )
        .await;
        let e = failure(b24.call("crm.deal.get".into(), some(r#"{"id": 1}"#), U)).await;
        assert_eq!(text(&e, &["code"]), "PORTAL_MOVED", "{status}");
        assert!(!at(&e, &["retryable"]).as_bool().unwrap());
        let e = failure(queue(&b24, None).consume(
            answering(Rc::default(), |_, _| JsValue::UNDEFINED),
            some(r#"{"exclusive": false}"#),
        ))
        .await;
        assert_eq!(text(&e, &["code"]), "PORTAL_MOVED");
    }
    send("DELETE", "/_emulator/faults", None).await;
    let trapped = get("trap").await;
    assert_eq!(
        length(&at(&trapped, &["requests"])),
        0,
        "nothing reached the other host"
    );
    assert_eq!(
        left("web.hostile.redirect").await,
        (3, 0, 0),
        "nothing taken"
    );
}

/// Handler answers that do not name events of the batch: the whole batch fails to the error
/// queue (and comes back from it); nothing is acknowledged by mistake. Row ids and event
/// objects are understood.
#[wasm_bindgen_test]
async fn handler_answers_never_acknowledge_by_mistake() {
    // (what the handler returns for the first batch of three, events failed)
    type Answer = fn(&Array) -> JsValue;
    let cases: [(&str, Answer, f64); 9] = [
        (
            "a row id",
            |e| eval(&format!("({{failed: [{}]}})", num(&e.get(0), &["id"]))),
            1.0,
        ),
        (
            "the event object",
            |e| {
                let o = new_object();
                set(&o, "failed", &Array::of1(&e.get(0)));
                o
            },
            1.0,
        ),
        (
            "a message id",
            |e| {
                let o = new_object();
                set(&o, "failed", &Array::of1(&at(&e.get(0), &["messageId"])));
                o
            },
            1.0,
        ),
        (
            "a mistyped message id",
            |_| eval(r#"({failed: ["0123456789abcdef0123456789abcdef"]})"#),
            3.0,
        ),
        (
            "a row id of no event here",
            |_| eval("({failed: [987654321]})"),
            3.0,
        ),
        (
            "a typo in the key",
            |e| eval(&format!("({{faild: [{}]}})", num(&e.get(0), &["id"]))),
            3.0,
        ),
        (
            "a bare list",
            |e| eval(&format!("[{}]", num(&e.get(0), &["id"]))),
            3.0,
        ),
        ("true", |_| JsValue::TRUE, 3.0),
        (
            "failed that is no list",
            |_| eval(r#"({failed: "all"})"#),
            3.0,
        ),
    ];
    fresh().await;
    for (i, (name, answer, failed)) in cases.into_iter().enumerate() {
        let app = format!("web.hostile.answer{i}");
        let (b24, _) = queued(&app, 3, "").await;
        let seen = Rc::new(Cell::new(0));
        let h = answering(seen.clone(), move |events, n| {
            if n == 0 {
                answer(events)
            } else {
                JsValue::UNDEFINED
            }
        });
        let s = wait(memory_queue(&b24, &app).consume(h, some(r#"{"exclusive": false}"#)))
            .await
            .unwrap();
        assert_eq!(num(&s, &["failed"]), failed, "{name}");
        assert_eq!(
            num(&s, &["acked"]),
            3.0,
            "{name}: all acknowledged in the end"
        );
        assert_eq!(
            seen.get() as f64,
            3.0 + failed,
            "{name}: the failed came back"
        );
        assert_eq!(left(&app).await, (0, 0, 0), "{name}");
    }
}

/// `ack`/`fail` naming events outside the reservation are refused before any request.
#[wasm_bindgen_test]
async fn reservation_calls_with_foreign_ids_are_refused_before_any_request() {
    fresh().await;
    let (b24, _) = queued("web.hostile.ids", 4, "").await;
    let q = memory_queue(&b24, "hostile-ids");
    let r = Reservation::try_from_js_value(wait(q.reserve(some(r#"{"limit": 2}"#))).await.unwrap())
        .unwrap();
    let other = Reservation::try_from_js_value(wait(q.reserve(U)).await.unwrap()).unwrap();
    let foreign = at(&other.events(), &["0"]);
    let before = (
        requests("event.offline.clear").await,
        requests("event.offline.error").await,
    );
    for bad in [
        Array::of1(&at(&foreign, &["messageId"])),
        Array::of1(&at(&foreign, &["id"])),
        Array::of1(&foreign),
        Array::of1(&JsValue::from_str("short")),
        Array::of1(&JsValue::from_f64(-1.0)),
        Array::of1(&JsValue::NULL),
    ] {
        let e = failure(r.ack(Some(bad.clone().into()))).await;
        assert_eq!(text(&e, &["code"]), "INVALID_ARGUMENT");
        let e = failure(r.fail(bad.into())).await;
        assert_eq!(text(&e, &["code"]), "INVALID_ARGUMENT");
    }
    let e = failure(r.fail(JsValue::UNDEFINED)).await;
    assert_eq!(
        text(&e, &["code"]),
        "INVALID_ARGUMENT",
        "fail() needs a list"
    );
    let after = (
        requests("event.offline.clear").await,
        requests("event.offline.error").await,
    );
    assert_eq!(before, after, "no request was sent");
    // Row ids and event objects of its own are fine.
    let mine = at(&r.events(), &["0"]);
    wait(r.fail(Array::of1(&at(&mine, &["id"])).into()))
        .await
        .unwrap();
    wait(r.ack(Some(Array::of1(&at(&r.events(), &["1"])).into())))
        .await
        .unwrap();
    wait(other.ack(None)).await.unwrap();
    assert_eq!(left("web.hostile.ids").await, (1, 0, 1));
}

/// A row the portal sends broken costs only itself: reported to onMalformed, the rest handled;
/// list() reports it, listAll() skips it.
#[wasm_bindgen_test]
async fn a_malformed_row_costs_only_itself() {
    fresh().await;
    let (b24, _) = queued("web.hostile.rows", 5, "").await;
    control(
        "faults",
        r#"{"rules": [{"method": "batch", "params": {"cmd[g0]": "*"}, "kind": {"corrupt_rows": {"MESSAGE_ID": null}}, "times": 1},
                      {"method": "event.offline.list", "kind": {"corrupt_rows": {"ID": "x"}}, "times": 2}]}"#,
    )
    .await;
    let q = memory_queue(&b24, "hostile-rows");
    let page = wait(q.list(U)).await.unwrap();
    assert_eq!(
        (
            length(&at(&page, &["events"])),
            length(&at(&page, &["malformed"]))
        ),
        (4, 1)
    );
    let it = q.list_all(U).unwrap();
    let next: Function = at(&it, &["next"]).dyn_into().unwrap();
    let mut n = 0;
    loop {
        let step = wait(next.call0(&it).unwrap().dyn_into().unwrap())
            .await
            .unwrap();
        if at(&step, &["done"]).as_bool() == Some(true) {
            break;
        }
        n += 1;
    }
    assert_eq!(n, 4, "listAll skips the broken row");
    let reported: Rc<RefCell<Vec<JsValue>>> = Rc::default();
    let r = reported.clone();
    let on_malformed =
        Closure::<dyn Fn(JsValue)>::new(move |rows: JsValue| r.borrow_mut().push(rows));
    let opts = obj(r#"{"exclusive": false}"#);
    set(&opts, "onMalformed", &on_malformed.into_js_value());
    let seen = Rc::new(Cell::new(0));
    let s = wait(q.consume(
        answering(seen.clone(), |_, _| JsValue::UNDEFINED),
        Some(opts),
    ))
    .await
    .unwrap();
    assert_eq!((num(&s, &["acked"]), num(&s, &["malformed"])), (4.0, 1.0));
    assert_eq!(reported.borrow().len(), 1);
    assert!(at(&reported.borrow()[0], &["0", "MESSAGE_ID"]).is_null());
    // Parked: still reserved (the portal's copy is intact, only the answer was broken).
    assert_eq!(left("web.hostile.rows").await, (1, 1, 0));
}

/// A JournalStore over a Map, with a behaviour for each call.
fn store_with(map: &Map, get: &str) -> JsValue {
    let store = eval(&format!(
        "(m) => ({{ get: {get}, set: (k, v) => {{ m.set(k, v) }}, delete: (k) => {{ m.delete(k) }} }})"
    ));
    let make: Function = store.dyn_into().unwrap();
    make.call1(&JsValue::NULL, map).unwrap()
}

/// Stores that throw, never answer, or hold something that is not a journal: `STORE_FAILED`,
/// and nothing is reserved.
#[wasm_bindgen_test]
async fn broken_journal_stores_fail_clearly() {
    fresh().await;
    let (b24, _) = queued("web.hostile.store", 3, FAST).await;
    let garbage = Map::new();
    garbage.set(&"k".into(), &"not a journal".into());
    for (name, get, map) in [
        (
            "throws",
            "() => { throw new Error('disk on fire') }",
            Map::new(),
        ),
        ("rejects", "() => Promise.reject('nope')", Map::new()),
        ("never answers", "() => new Promise(() => {})", Map::new()),
        ("returns a number", "() => 42", Map::new()),
        ("holds garbage", "(k) => m.get(k)", garbage),
    ] {
        let opts = new_object();
        set(&opts, "store", &store_with(&map, get));
        set(&opts, "storeKey", &JsValue::from_str("k"));
        let q = b24.offline(Some(opts)).unwrap();
        let started = js_sys::Date::now();
        let e = failure(q.consume(
            answering(Rc::default(), |_, _| JsValue::UNDEFINED),
            some(r#"{"exclusive": false}"#),
        ))
        .await;
        assert_eq!(text(&e, &["code"]), "STORE_FAILED", "{name}");
        assert!(
            js_sys::Date::now() - started < 10_000.0,
            "{name}: within the timeout"
        );
        assert_eq!(
            left("web.hostile.store").await,
            (3, 0, 0),
            "{name}: nothing reserved"
        );
    }
    // Two store objects over one storage (two tabs): each keeps the other's reservations.
    let shared = Map::new();
    let queues: Vec<OfflineQueue> = (0..2)
        .map(|_| {
            let o = new_object();
            set(&o, "store", &store_with(&shared, "(k) => m.get(k)"));
            set(&o, "storeKey", &JsValue::from_str("two"));
            b24.offline(Some(o)).unwrap()
        })
        .collect();
    let mut held = Vec::new();
    for q in &queues {
        let r =
            Reservation::try_from_js_value(wait(q.reserve(some(r#"{"limit": 1}"#))).await.unwrap())
                .unwrap();
        held.push(r);
    }
    let entries = js_sys::Array::from(&shared.keys())
        .iter()
        .filter(|k| k.as_string().unwrap_or_default().starts_with("two/"))
        .count();
    assert_eq!(entries, 2, "both reservations journaled");
    for r in held {
        wait(r.ack(None)).await.unwrap();
    }
    assert_eq!(shared.size(), 0);
}

/// A handler that never settles: with abort the run ends at once (the batch stays journaled);
/// without, the handler timeout fails the batch and the error pass gets it.
#[wasm_bindgen_test]
async fn a_hanging_handler_neither_hangs_the_consumer_nor_loses_the_batch() {
    fresh().await;
    let (b24, _) = queued("web.hostile.hang", 4, FAST).await;
    let q = memory_queue(&b24, "hostile-hang");
    let stop = web_sys::AbortController::new().unwrap();
    let opts = obj(r#"{"limit": 4}"#);
    set(&opts, "signal", &stop.signal());
    let hang = answering(Rc::default(), |_, _| Promise::new(&mut |_, _| {}).into());
    let run = q.consume(hang, Some(opts));
    sleep_ms(300).await;
    let started = js_sys::Date::now();
    stop.abort();
    let s = wait(run).await.unwrap();
    assert!(js_sys::Date::now() - started < 1000.0, "settled promptly");
    assert_eq!(text(&s, &["stopped"]), "aborted");
    assert_eq!(
        left("web.hostile.hang").await,
        (4, 4, 0),
        "reserved and journaled"
    );
    // The lock is free again, and the same queue takes the batch back.
    let seen = Rc::new(Cell::new(0));
    let s = wait(q.consume(answering(seen.clone(), |_, _| JsValue::UNDEFINED), U))
        .await
        .unwrap();
    assert_eq!((num(&s, &["recovered"]), num(&s, &["acked"])), (4.0, 4.0));
    // Timeout: the first call hangs, the batch fails to the error queue and comes back.
    trigger(EVENT, 10, 2).await;
    let seen = Rc::new(Cell::new(0));
    let h = answering(seen.clone(), |_, n| {
        if n == 0 {
            Promise::new(&mut |_, _| {}).into()
        } else {
            JsValue::UNDEFINED
        }
    });
    let s = wait(q.consume(h, some(r#"{"handlerTimeoutMs": 300}"#)))
        .await
        .unwrap();
    assert_eq!(
        (
            num(&s, &["timedOut"]),
            num(&s, &["failed"]),
            num(&s, &["acked"])
        ),
        (1.0, 2.0, 2.0)
    );
    assert_eq!(left("web.hostile.hang").await, (0, 0, 0));
}

/// Timer values past what setTimeout takes (2^31 ms wraps to 0): calls do not all time out at
/// once, a huge idle delay still lets abort stop a poll at once.
#[wasm_bindgen_test]
async fn absurd_timer_values_behave() {
    fresh().await;
    let (b24, _) = queued(
        "web.hostile.timers",
        2,
        r#","timeoutMs":2147483648,"expiresIn":1e300"#,
    )
    .await;
    wait(b24.call("profile".into(), U, U)).await.unwrap();
    let q = memory_queue(&b24, "hostile-timers");
    let stop = web_sys::AbortController::new().unwrap();
    let opts = obj(
        r#"{"poll": true, "idleDelay": 8e15, "maxIdleDelay": 8e15, "handlerTimeoutMs": 8e15, "strandedAfterMs": 8e15}"#,
    );
    set(&opts, "signal", &stop.signal());
    let run = q.consume(
        answering(Rc::default(), |_, _| JsValue::UNDEFINED),
        Some(opts),
    );
    sleep_ms(500).await;
    assert_eq!(
        left("web.hostile.timers").await,
        (0, 0, 0),
        "consumed, now idle"
    );
    stop.abort();
    let s = wait(run).await.unwrap();
    assert_eq!(text(&s, &["stopped"]), "aborted");
    // Below its safe minimum strandedAfterMs is refused with a clear error.
    let e = failure(q.consume(
        answering(Rc::default(), |_, _| JsValue::UNDEFINED),
        some(r#"{"strandedAfterMs": 0}"#),
    ))
    .await;
    assert_eq!(text(&e, &["code"]), "INVALID_ARGUMENT");
    assert!(text(&e, &["description"]).contains("strandedAfterMs"));
}

/// `retries: 0` still refreshes an expired token; a polling consumer outlives a run of expired
/// tokens (more than one call's refreshes), reports them to onError and consumes what follows.
#[wasm_bindgen_test]
async fn expired_tokens_in_a_row_do_not_stop_a_polling_consumer() {
    fresh().await;
    let refreshes = Rc::new(Cell::new(0));
    let t = token("web.hostile.auth", true).await;
    let opts = options(&text(&t, &["access_token"]), r#","retries":0"#);
    let r = refreshes.clone();
    let refresh = Closure::<dyn FnMut(JsValue) -> Promise>::new(move |_: JsValue| {
        r.set(r.get() + 1);
        wasm_bindgen_futures::future_to_promise(async move {
            let t = token("web.hostile.auth", true).await;
            let out = new_object();
            set(&out, "accessToken", &at(&t, &["access_token"]));
            Ok(out)
        })
    });
    set(&opts, "refresh", &refresh.into_js_value());
    let b24 = Bitrix24::with_token(opts).unwrap();
    wait(queue(&b24, None).bind(JsValue::from_str(EVENT), U))
        .await
        .unwrap();
    control(
        "faults",
        r#"{"rules": [{"method": "profile", "kind": "expired_token", "times": 1}]}"#,
    )
    .await;
    wait(b24.call("profile".into(), U, U)).await.unwrap();
    assert_eq!(refreshes.get(), 1, "retries 0 still refreshed");
    trigger(EVENT, 1, 5).await;
    control(
        "faults",
        r#"{"rules": [{"method": "batch", "params": {"cmd[g0]": "*"}, "kind": "expired_token", "times": 7}]}"#,
    )
    .await;
    let errors: Rc<RefCell<Vec<String>>> = Rc::default();
    let e = errors.clone();
    let on_error = Closure::<dyn Fn(JsValue)>::new(move |err: JsValue| {
        e.borrow_mut().push(text(&err, &["code"]))
    });
    let stop = web_sys::AbortController::new().unwrap();
    let opts = obj(r#"{"poll": true, "idleDelay": 50, "maxIdleDelay": 200, "exclusive": false}"#);
    set(&opts, "signal", &stop.signal());
    set(&opts, "onError", &on_error.into_js_value());
    let seen = Rc::new(Cell::new(0));
    let run = memory_queue(&b24, "hostile-auth").consume(
        answering(seen.clone(), |_, _| JsValue::UNDEFINED),
        Some(opts),
    );
    for _ in 0..100 {
        if seen.get() >= 5 {
            break;
        }
        sleep_ms(50).await;
    }
    stop.abort();
    let s = wait(run).await.unwrap();
    assert_eq!(num(&s, &["acked"]), 5.0);
    assert!(num(&s, &["errors"]) >= 1.0);
    assert!(!errors.borrow().is_empty() && errors.borrow().iter().all(|c| c == "expired_token"));
    assert_eq!(left("web.hostile.auth").await, (0, 0, 0));
}

/// Browsers send a request again, silently, when a reused connection drops before the answer
/// starts (Chrome and Firefox both do, a POST too): the portal reserves twice and only the
/// second process id arrives, with no error. The run still handles every event before it ends
/// (the first reservation is released after its hold), and nothing is left.
#[wasm_bindgen_test]
async fn a_reservation_the_browser_sent_twice_is_not_left_behind() {
    fresh().await;
    let (b24, _) = queued("web.hostile.twice", 120, FAST).await;
    // The first reservation's answer (a drain's step, a `batch`) is lost after the portal
    // made it.
    control(
        "faults",
        r#"{"rules": [{"method": "batch", "params": {"cmd[g0]": "*"}, "kind": "drop", "phase": "after", "times": 1}]}"#,
    )
    .await;
    let seen = Rc::new(Cell::new(0));
    let q = memory_queue(&b24, "twice");
    let p = wait(q.consume(
        answering(seen.clone(), |_, _| JsValue::UNDEFINED),
        some(r#"{"limit": 50, "handlerTimeoutMs": 1000, "strandedAfterMs": 10000}"#),
    ))
    .await
    .unwrap();
    send("DELETE", "/_emulator/faults", None).await;
    assert_eq!(num(&get("stats").await, &["answers_lost_with_events"]), 1.0);
    assert_eq!(seen.get(), 120, "every event handled in this run");
    assert_eq!(num(&p, &["released"]), 50.0);
    assert_eq!(left("web.hostile.twice").await, (0, 0, 0));
}
