//! The promise against hostile input, lost answers and several consumers, natively (the
//! browser and Node suites repeat the parts that cross JavaScript): handler answers that name
//! events wrongly, two consumers on one reservation, stranded reservations with racing
//! sweepers, repeated expired tokens, a hanging handler, malformed rows, parked events near the
//! portal's expiry, sweeps during long drains, redirects. Each case states its outcome.

use super::consume::{consume, resolve, Batch, DeadReason, EventRef, Flow, Handler, Outcome};
use super::error::code;
use super::journal::{Journal, MemoryStore, Store};
use super::offline::GetArgs;
use super::options::{
    check_stranded_after, min_stranded_after_ms, ErrorPolicy, MalformedPolicy, Options,
};
use super::platform::TransportError;
use super::testkit::{block_on, client, Fake, SECRET};
use super::testworld::*;
use crate::core::joint::LocalBoxFuture;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

fn flow_on<'a>(
    c: &'a super::client::Client<Fake>,
    journal: &'a Journal,
    owner: &'a str,
    locked: bool,
) -> Flow<'a, Fake> {
    Flow {
        locked,
        flag: locked,
        ..flow(c, journal, owner)
    }
}

fn events(world: &World, n: u32) -> Batch<Value> {
    world.trigger(1, n);
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let j = Journal::new(Rc::new(MemoryStore::default()), "peek".into());
    let f = flow(&c, &j, "peek");
    let b = block_on(f.reserve(&GetArgs::default(), None)).unwrap();
    block_on(f.ack(&b.process_id, &b.message_ids())).unwrap();
    b
}

#[test]
fn event_refs_resolve_against_the_batch_or_refuse_the_whole_answer() {
    let world = World::passing();
    let b = events(&world, 3);
    let (e0, e1) = (&b.events[0], &b.events[1]);
    let ok = resolve(
        &b.events,
        &[
            EventRef::Row(e1.id),
            EventRef::Message(e0.message_id.clone()),
            EventRef::Both(e1.id, e1.message_id.clone()),
        ],
    )
    .unwrap();
    assert_eq!(ok, vec![e0.message_id.clone(), e1.message_id.clone()]);
    for bad in [
        vec![EventRef::Row(999_999)],
        vec![EventRef::Message("a".repeat(32))],
        vec![EventRef::Both(e0.id, e1.message_id.clone())],
        vec![EventRef::Row(e0.id), EventRef::Invalid("is true".into())],
    ] {
        assert!(resolve(&b.events, &bad).is_err(), "{bad:?}");
    }
    assert_eq!(resolve(&b.events, &[]).unwrap(), Vec::<String>::new());
}

/// The handler names its failure by row id, by event object, wrongly, or answers something
/// that is not an outcome: a named event goes to the error queue, the rest is acknowledged;
/// anything unusable fails the whole batch. Nothing is ever acknowledged by mistake.
#[test]
fn handler_answers_that_name_events_wrongly_never_acknowledge() {
    type Make = fn(&Batch<Value>) -> Outcome;
    let cases: [(&str, Make, u64); 6] = [
        (
            "row id",
            |b| Outcome::Failed(vec![EventRef::Row(b.events[0].id)]),
            1,
        ),
        (
            "event object",
            |b| {
                Outcome::Failed(vec![EventRef::Both(
                    b.events[0].id,
                    b.events[0].message_id.clone(),
                )])
            },
            1,
        ),
        (
            "a row id of no event here",
            |_| Outcome::Failed(vec![EventRef::Row(424_242)]),
            3,
        ),
        (
            "a mistyped message id",
            |b| {
                Outcome::Failed(vec![EventRef::Message(
                    b.events[0].message_id[1..].to_string(),
                )])
            },
            3,
        ),
        (
            "an entry of no known kind",
            |_| Outcome::Failed(vec![EventRef::Invalid("is true".into())]),
            3,
        ),
        (
            "not an outcome",
            |_| Outcome::Invalid("the handler returned 1".into()),
            3,
        ),
    ];
    for (name, make, failed) in cases {
        let world = World::passing();
        world.trigger(1, 3);
        let rec = Recorder::new(move |b, n| if n == 0 { make(b) } else { Outcome::Done });
        let (p, _) = run(&world, memory(), &rec, &opts(10.0), None);
        assert_eq!(p.failed, failed, "{name}: events sent to the error queue");
        assert_eq!(
            p.acked, 3,
            "{name}: all acknowledged in the end, after the error pass"
        );
        assert_eq!(
            rec.handled.borrow().iter().filter(|(_, e)| *e).count() as u64,
            failed,
            "{name}: the failed ones came back from the error queue"
        );
        assert_eq!(world.queue(), (0, 0, 0), "{name}");
    }
}

/// The loss, step by step: consumer A acknowledges a change, the object changes again
/// (a new free row), and then B fails the same message under A's process id. Before, the
/// portal deleted the new row; now B re-reads the reservation first and sends nothing.
#[test]
fn failing_a_reservation_someone_acknowledged_cannot_delete_a_newer_change() {
    let world = World::passing();
    world.trigger(1, 1);
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let (ja, jb) = (
        Journal::new(Rc::new(MemoryStore::default()), "j".into()),
        Journal::new(Rc::new(MemoryStore::default()), "j".into()),
    );
    let (a, b) = (flow(&c, &ja, "a"), flow(&c, &jb, "b"));
    let batch = block_on(a.reserve(&GetArgs::default(), None)).unwrap();
    let m = batch.message_ids();
    block_on(a.ack(&batch.process_id, &m)).unwrap();
    world.trigger(1, 1);
    let errors_before = world.count("event.offline.error");
    block_on(b.fail(&batch.process_id, &m, false)).unwrap();
    assert_eq!(
        world.count("event.offline.error"),
        errors_before,
        "nothing sent"
    );
    let rows = world.rows();
    assert_eq!(rows.len(), 1, "the newer change is still queued");
    assert_eq!(
        (rows[0].1.clone(), rows[0].2.clone(), rows[0].3),
        (m[0].clone(), None, false)
    );
}

/// A sweep never takes a reservation a live consumer may still hold: another journal's (unknown
/// to it) until it has been seen reserved for the whole hold, its own journal's other owners'
/// until their hold ends. Then it releases it into the error queue, once, however many
/// sweepers race: the portal reserves error records atomically, for one consumer.
#[test]
fn stranded_reservations_are_released_once_and_live_ones_left_alone() {
    let world = World::passing();
    world.trigger(1, 5);
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let shared: Rc<dyn Store> = Rc::new(MemoryStore::default());
    let (ja, jb, jc) = (
        Journal::new(shared.clone(), "j".into()),
        Journal::new(shared.clone(), "j".into()),
        Journal::new(Rc::new(MemoryStore::default()), "j".into()),
    );
    let a = flow(&c, &ja, "a");
    // B shares A's journal; C has its own store.
    let (b, cc) = (flow(&c, &jb, "b"), flow(&c, &jc, "c"));
    let held = block_on(a.reserve(&GetArgs::default(), None)).unwrap();
    for _ in 0..3 {
        for sweeper in [&b, &cc] {
            let found = block_on(sweeper.recoverable(&[], None)).unwrap();
            assert!(
                found.batches.is_empty() && found.released == 0,
                "A is alive"
            );
        }
        world.fake.clock.set(world.fake.clock.get() + HOLD_MS / 4.0);
    }
    assert_eq!(world.queue(), (5, 5, 0), "still A's");
    // Past the hold: both sweepers act, one releases, the other finds nothing left.
    world.fake.clock.set(world.fake.clock.get() + HOLD_MS);
    let first = block_on(cc.recoverable(&[], None)).unwrap();
    let second = block_on(b.recoverable(&[], None)).unwrap();
    assert_eq!((first.released, second.released), (5, 0));
    assert_eq!(world.count("event.offline.error"), 1);
    assert_eq!(
        world.queue(),
        (5, 0, 5),
        "free error records, for whoever reserves them"
    );
    // A, late, acknowledges: a no-op on rows no longer under its process id.
    block_on(a.ack(&held.process_id, &held.message_ids())).unwrap();
    assert_eq!(world.queue(), (5, 0, 5));
    assert!(block_on(shared.get(&["j/", &held.process_id].concat()))
        .unwrap()
        .is_none());
}

/// Under the exclusive lock, a consumer takes its predecessor's reservations back at once (the
/// predecessor held the lock, so it is gone); without the lock it waits for their hold.
#[test]
fn the_lock_holder_takes_its_predecessors_reservations_back_at_once() {
    let world = World::passing();
    world.trigger(1, 4);
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let store: Rc<dyn Store> = Rc::new(MemoryStore::default());
    let (j1, j2) = (
        Journal::new(store.clone(), "j".into()),
        Journal::new(store.clone(), "j".into()),
    );
    let before = flow_on(&c, &j1, "tab-before-reload", true);
    block_on(before.reserve(&GetArgs::default(), None)).unwrap();
    let unlocked = flow_on(&c, &j2, "tab-after-reload", false);
    assert!(block_on(unlocked.recoverable(&[], None))
        .unwrap()
        .batches
        .is_empty());
    let locked = flow_on(&c, &j2, "tab-after-reload", true);
    let found = block_on(locked.recoverable(&[], None)).unwrap();
    assert_eq!(found.batches.len(), 1);
    assert!(found.batches[0].recovered && found.batches[0].events.len() == 4);
}

/// `retries: 0` still refreshes (a refresh is not a retry), a second `expired_token` right
/// after a refresh gets another refresh, and a polling consumer outlives a run of them.
#[test]
fn repeated_expired_tokens_refresh_again_and_a_polling_consumer_goes_on() {
    let expired = Rc::new(Cell::new(0u32));
    let e = expired.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        if (m == "event.offline.get" || reserves(m, body)) && e.get() > 0 {
            e.set(e.get() - 1);
            Net::Answer(401, "expired_token")
        } else {
            Net::Pass
        }
    })));
    world.trigger(1, 10);
    let (c, refreshes) = client(&world.fake, |cfg| {
        cfg.rate = None;
        cfg.retry.max_retries = 0;
    });
    let j = Journal::new(memory(), "j".into());
    let f = flow(&c, &j, "a");
    expired.set(2);
    let b = block_on(f.reserve(&GetArgs::default(), None)).unwrap();
    assert_eq!(
        (b.events.len(), refreshes.get()),
        (10, 2),
        "two refreshes with retries 0"
    );
    block_on(f.ack(&b.process_id, &b.message_ids())).unwrap();
    // Nine expired tokens in a row: three refreshes per call, then the call fails; the polling
    // consumer reports it, waits and goes on, and consumes what comes after.
    world.trigger(20, 5);
    expired.set(9);
    let signal = Rc::new(Cell::new(false));
    let s = signal.clone();
    let rec = Recorder::new(move |b, _| {
        if b.events
            .iter()
            .any(|e| e.data["FIELDS"]["ID"] == json!("24"))
        {
            s.set(true);
        }
        Outcome::Done
    });
    let o = Options {
        poll: Some((1_000.0, 4_000.0)),
        ..opts(50.0)
    };
    let log = Rc::new(Log::default());
    let p = block_on(consume(
        &f,
        &Shared2(rec.clone()),
        &LogRef(log.clone()),
        &o,
        Some(&signal),
        None,
    ))
    .unwrap();
    assert_eq!((p.acked, p.stopped), (5, "aborted"));
    assert!(p.errors >= 1, "{p:?}");
    assert!(log.errors.borrow().iter().all(|e| e.is("expired_token")));
    assert_eq!(world.queue(), (0, 0, 0));
}

/// A handler that never settles: its batch fails when the handler timeout comes (and comes back
/// from the error queue); and an abort while it hangs ends the run at once, leaving the batch
/// journaled for the next run.
#[test]
fn a_hanging_handler_times_out_and_an_abort_does_not_wait_for_it() {
    struct HangFirst(Cell<usize>, Option<Rc<Cell<bool>>>);
    impl Handler<Value> for HangFirst {
        fn handle(&self, _: &Batch<Value>) -> LocalBoxFuture<'static, Outcome> {
            self.0.set(self.0.get() + 1);
            if self.0.get() > 1 {
                return Box::pin(async { Outcome::Done });
            }
            if let Some(s) = &self.1 {
                s.set(true);
            }
            Box::pin(futures_util::future::pending())
        }
    }
    let world = World::passing();
    world.trigger(1, 3);
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let j = Journal::new(memory(), "j".into());
    let f = flow(&c, &j, "a");
    let started = world.fake.clock.get();
    let p = block_on(consume(
        &f,
        &HangFirst(Cell::new(0), None),
        &LogRef(Rc::default()),
        &opts(10.0),
        None,
        None,
    ))
    .unwrap();
    assert_eq!((p.timed_out, p.failed, p.acked), (1, 3, 3));
    assert!(world.fake.clock.get() - started >= 1_000.0);
    assert_eq!(world.queue(), (0, 0, 0));

    world.trigger(10, 3);
    let signal = Rc::new(Cell::new(false));
    let p = block_on(consume(
        &f,
        &HangFirst(Cell::new(0), Some(signal.clone())),
        &LogRef(Rc::default()),
        &Options {
            handler_timeout_ms: 3_600_000.0,
            ..opts(10.0)
        },
        Some(&signal),
        None,
    ))
    .unwrap();
    assert_eq!((p.stopped, p.acked, p.failed), ("aborted", 0, 0));
    assert_eq!(world.queue(), (3, 3, 0), "reserved and journaled");
    let rec = Recorder::new(|_, _| Outcome::Done);
    let p = block_on(consume(
        &f,
        &Shared2(rec),
        &LogRef(Rc::default()),
        &opts(10.0),
        None,
        None,
    ))
    .unwrap();
    assert_eq!((p.recovered, p.acked), (3, 3), "the next run takes it back");
    assert_eq!(world.queue(), (0, 0, 0));
}

fn null_first_message_id(v: &mut Value) {
    if let Some(first) = v["result"]["events"].get_mut(0) {
        first["MESSAGE_ID"] = Value::Null;
    }
}

/// The same in a drain's step: the first event of its main-queue reservation.
fn null_first_message_id_in_step(v: &mut Value) {
    if let Some(first) = v["result"]["result"]["g0"]["events"].get_mut(0) {
        first["MESSAGE_ID"] = Value::Null;
    }
}

/// One row the portal sends broken costs only itself: the rest is handled; the row is
/// reported once, and parked (left reserved) or cleared by policy.
#[test]
fn one_malformed_row_costs_only_itself() {
    for policy in [MalformedPolicy::Park, MalformedPolicy::Clear] {
        let world = World::new(Rc::new(RefCell::new(|m: &str, body: &Value| {
            if m == "event.offline.get" && body.get("error") == Some(&json!(0)) {
                Net::Alter(null_first_message_id)
            } else if reserves(m, body) {
                Net::Alter(null_first_message_id_in_step)
            } else {
                Net::Pass
            }
        })));
        world.trigger(1, 4);
        let rec = Recorder::new(|_, _| Outcome::Done);
        let o = Options {
            malformed: policy,
            ..opts(10.0)
        };
        let store = memory();
        let (p, log) = run(&world, store.clone(), &rec, &o, None);
        assert_eq!((p.acked, p.malformed), (3, 1), "{policy:?}");
        assert_eq!(log.malformed.borrow().len(), 1);
        assert_eq!(rec.ids().len(), 3);
        match policy {
            MalformedPolicy::Park => {
                assert_eq!(world.queue(), (1, 1, 0), "left reserved");
                // Later runs see it broken again: not reported again, still parked.
                let (p, log) = run(&world, store, &rec, &o, None);
                assert_eq!((p.malformed, log.malformed.borrow().len()), (0, 0));
                assert_eq!(world.queue(), (1, 1, 0));
            }
            MalformedPolicy::Clear => assert_eq!(world.queue(), (0, 0, 0), "deleted by its id"),
        }
    }
}

/// Error-queue events that keep failing are parked; once they near the portal's 30-day expiry
/// of reserved rows they are given up as dead letters, whatever the retry policy.
#[test]
fn parked_events_are_dead_lettered_before_the_portal_expires_them() {
    let world = World::passing();
    world.trigger(1, 2);
    let rec = Recorder::new(|b, _| {
        if b.error {
            failed(b.message_ids())
        } else {
            failed([b.events[0].message_id.clone()])
        }
    });
    let store = memory();
    let (p, log) = run(&world, store.clone(), &rec, &opts(10.0), None);
    assert_eq!((p.parked, p.dead), (1, 0));
    assert!(log.dead.borrow().is_empty());
    world.advance_portal(26 * 86_400_000);
    let (p, log) = run(&world, store.clone(), &rec, &opts(10.0), None);
    assert_eq!((p.recovered, p.dead), (1, 1));
    assert!(matches!(log.dead.borrow()[..], [(_, DeadReason::Expiring)]));
    assert_eq!(world.queue(), (0, 0, 0));
    let retries = Options {
        errors: ErrorPolicy::Retry(100),
        ..opts(10.0)
    };
    world.trigger(5, 1);
    let (p, _) = run(&world, store, &rec, &retries, None);
    assert_eq!(
        (p.parked, p.dead),
        (1, 0),
        "a fresh one is parked, not expiring"
    );
}

/// Under a constant inflow the queue is never empty; a reservation whose answer was lost is
/// still found and released while the drain goes on.
#[test]
fn lost_reservations_are_swept_during_a_long_drain() {
    let lost = Rc::new(Cell::new(false));
    let l = lost.clone();
    let world = Rc::new(World::new(Rc::new(RefCell::new(
        move |m: &str, body: &Value| {
            if reserves(m, body) && !l.get() {
                l.set(true);
                Net::Lose
            } else {
                Net::Pass
            }
        },
    ))));
    world.trigger(1, 10);
    let next = Rc::new(Cell::new(100u32));
    let released_while_busy = Rc::new(Cell::new(false));
    let (w, n) = (Rc::downgrade(&world), next.clone());
    // Every batch brings new changes for a while, and takes its time.
    let rec = Recorder::new(move |_, calls| {
        if let Some(w) = w.upgrade() {
            if calls < 60 {
                w.trigger(n.get(), 5);
                n.set(n.get() + 5);
            }
            w.fake.clock.set(w.fake.clock.get() + 2_000.0);
        }
        Outcome::Done
    });
    struct Watch(Rc<Cell<bool>>, std::rc::Weak<World>);
    impl super::consume::Reporter<Value> for Watch {
        fn progress(&self, p: &super::consume::Progress) {
            if p.released > 0 && !self.0.get() {
                let free = self.1.upgrade().map(|w| w.queue().0).unwrap_or(0);
                self.0.set(free > 0 && p.reserved < 300);
            }
        }
        fn dead_letters(&self, _: &[super::model::OfflineEvent<Value>], _: DeadReason) {}
        fn malformed(&self, _: &[Value]) {}
        fn error(&self, _: &super::error::B24Error) {}
    }
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let j = Journal::new(memory(), "j".into());
    let f = flow(&c, &j, "a");
    let p = block_on(consume(
        &f,
        &Shared2(rec.clone()),
        &Watch(released_while_busy.clone(), Rc::downgrade(&world)),
        &opts(5.0),
        None,
        None,
    ))
    .unwrap();
    assert!(lost.get());
    assert!(
        released_while_busy.get(),
        "released before the drain was over: {p:?}"
    );
    assert_eq!(p.released, 5);
    assert_eq!(rec.ids().len() as u32, 10 + (next.get() - 100));
    assert_eq!(world.queue(), (0, 0, 0));
}

/// A browser sends a request again, silently, when a reused connection drops before the
/// answer starts: the portal reserves twice and only the second process id arrives, with no
/// error at all. A run that does not poll still does not end before the first reservation is
/// found, released after its hold and handled from the error queue.
#[test]
fn a_reservation_made_twice_without_an_error_is_handled_before_the_run_ends() {
    let twice = Rc::new(Cell::new(false));
    let t = twice.clone();
    let world = World::new(Rc::new(RefCell::new(move |m: &str, body: &Value| {
        // A drain reserves inside `batch` requests.
        let reserves = if m == "batch" {
            body.to_string().contains("event.offline.get")
        } else {
            m == "event.offline.get" && body.get("process_id").is_none()
        };
        if reserves && !t.get() {
            t.set(true);
            Net::Twice
        } else {
            Net::Pass
        }
    })));
    world.trigger(1, 10);
    let rec = Recorder::new(|_, _| Outcome::Done);
    let (p, log) = run(&world, memory(), &rec, &opts(5.0), None);
    assert!(twice.get());
    assert!(log.errors.borrow().is_empty(), "nothing failed visibly");
    assert_eq!(p.released, 5, "{p:?}");
    assert_eq!(rec.ids().len(), 10, "every event handled in this run");
    assert_eq!(world.queue(), (0, 0, 0), "nothing left, nothing reserved");
}

/// A redirect is never followed: one request, no retry, `PORTAL_MOVED` naming only the new
/// host, never its path or query, never the token.
#[test]
fn redirects_are_never_followed() {
    for (status, location, moved) in [
        (
            307,
            Some("https://evil.example:8443/rest/x?auth=SECRET-TOKEN-0123456789"),
            Some("evil.example:8443"),
        ),
        (
            302,
            Some("https://u:p@Renamed.Bitrix24.com/"),
            Some("renamed.bitrix24.com"),
        ),
        (301, Some("/rest/elsewhere"), None),
        (0, None, None),
    ] {
        let redirect = TransportError::Redirect {
            status,
            location: location.map(str::to_string),
        };
        let fake = Fake::new(move |_, _, _| Err(redirect.clone()));
        let (c, refreshes) = client(&fake, |cfg| cfg.rate = None);
        let body = super::args::Body::new();
        let e = block_on(c.call(
            "crm.deal.get",
            &body,
            &super::client::CallOptions::new(super::retry::Idempotency::Safe),
        ))
        .unwrap_err();
        assert_eq!((e.code.as_ref(), e.status), (code::PORTAL_MOVED, status));
        assert_eq!(e.moved_to.as_deref(), moved);
        assert!(
            !e.message().contains(SECRET) && !e.message().contains("/rest/"),
            "{}",
            e.message()
        );
        assert_eq!((fake.seen.borrow().requests.len(), refreshes.get()), (1, 0));
        assert_eq!(c.stats().retries, 0);
    }
}

/// An answer over `maxResponseBytes` is BAD_RESPONSE (its content never in the message), is not
/// retried (the next one would be as long), and one within the limit is read as usual. The
/// wasm transport stops reading at the limit: `www/consumers/limits.test.mjs`.
#[test]
fn answers_over_the_size_limit_are_bad_responses() {
    let padding = "x".repeat(4000);
    let fake = Fake::new(move |_, _, _| super::testkit::ok(json!({ "pad": padding })));
    for (limit, over) in [(1000, true), (4100, false), (8 << 20, false)] {
        let (c, _) = client(&fake, |cfg| {
            cfg.rate = None;
            cfg.max_response_bytes = limit;
        });
        let body = super::args::Body::new();
        let sent = fake.seen.borrow().requests.len();
        let got = block_on(c.call(
            "crm.deal.list",
            &body,
            &super::client::CallOptions::new(super::retry::Idempotency::Safe),
        ));
        assert_eq!(fake.seen.borrow().requests.len(), sent + 1, "one request");
        match got {
            Err(e) if over => {
                assert_eq!(
                    (e.code.as_ref(), e.method.as_str()),
                    (code::BAD_RESPONSE, "crm.deal.list")
                );
                assert!(
                    e.description.contains("maxResponseBytes"),
                    "{}",
                    e.description
                );
                assert!(!e.message().contains("xxxx"), "{}", e.message());
                assert_eq!(c.stats().retries, 0);
            }
            Ok(_) if !over => {}
            other => panic!("limit {limit}: {:?}", other.err()),
        }
    }
}

#[test]
fn stranded_after_has_a_safe_minimum() {
    assert_eq!(min_stranded_after_ms(300_000.0, 30_000.0), 421_000.0);
    assert!(check_stranded_after(0.0, 1_000.0, 1_000.0).is_err());
    let e = check_stranded_after(5_999.0, 1_000.0, 1_000.0).unwrap_err();
    assert_eq!(e.code, code::INVALID_ARGUMENT);
    assert!(e.description.contains("6000"), "{}", e.description);
    assert!(check_stranded_after(6_000.0, 1_000.0, 1_000.0).is_ok());
}

struct Alive(Option<Vec<String>>);

impl super::consume::Liveness for Alive {
    fn alive(&self) -> LocalBoxFuture<'static, Option<Vec<String>>> {
        let v = self.0.clone();
        Box::pin(async move { v })
    }
}

/// Where the runtime tells who is alive (Web Locks in browsers), a dead consumer's
/// reservations need not wait for their hold: the lock holder takes them back at once, anyone
/// else releases them; a live consumer's stay its own.
#[test]
fn a_dead_consumers_reservations_are_taken_at_once_where_liveness_is_known() {
    let world = World::passing();
    world.trigger(1, 6);
    let (c, _) = client(&world.fake, |cfg| cfg.rate = None);
    let store: Rc<dyn Store> = Rc::new(MemoryStore::default());
    let j: Vec<Journal> = (0..3)
        .map(|_| Journal::new(store.clone(), "j".into()))
        .collect();
    let args = GetArgs {
        limit: Some(3.0),
        ..GetArgs::default()
    };
    for owner in ["a", "b"] {
        block_on(flow(&c, &j[0], owner).reserve(&args, None)).unwrap();
    }
    let (only_b, nobody) = (Alive(Some(vec!["b".into()])), Alive(Some(vec![])));
    // "a" is dead, "b" alive: a consumer without the lock releases a's, leaves b's.
    let plain = Flow {
        liveness: Some(&only_b),
        ..flow(&c, &j[1], "c")
    };
    let found = block_on(plain.recoverable(&[], None)).unwrap();
    assert_eq!((found.batches.len(), found.released), (0, 3));
    assert_eq!(world.queue(), (6, 3, 3));
    // Now b is gone too: the lock holder takes its reservation back at once, unreleased.
    let holder = Flow {
        liveness: Some(&nobody),
        ..flow_on(&c, &j[2], "d", true)
    };
    let found = block_on(holder.recoverable(&[], None)).unwrap();
    assert_eq!((found.batches.len(), found.released), (1, 0));
    assert!(found.batches[0].recovered && found.batches[0].events.len() == 3);
    let entry = block_on(j[0].entry(&found.batches[0].process_id))
        .unwrap()
        .unwrap();
    assert_eq!((entry.owner.as_str(), entry.locked), ("d", true));
    // An owner without a sign of life is never judged dead by its absence.
    world.trigger(10, 2);
    let unsigned = Flow {
        signed: false,
        ..flow(&c, &j[0], "u")
    };
    block_on(unsigned.reserve(&args, None)).unwrap();
    let only_d = Alive(Some(vec!["d".into()]));
    let plain = Flow {
        liveness: Some(&only_d),
        ..flow(&c, &j[1], "c")
    };
    let found = block_on(plain.recoverable(&[], None)).unwrap();
    assert_eq!((found.batches.len(), found.released), (0, 0));
    // Where liveness cannot be known, nothing changes hands before the hold ends.
    let blind = Flow {
        liveness: Some(&Alive(None)),
        ..flow(&c, &j[1], "e")
    };
    let found = block_on(blind.recoverable(&[], None)).unwrap();
    assert_eq!((found.batches.len(), found.released), (0, 0));
}
